//! Anti-entropy digests: what `tandem verify` compares across sites.
//!
//! Two levels: one digest per shard (cheap to compare for all shards), and
//! for a shard that differs, its inventory (one digest per contract). A
//! contract's digest covers its latest version record exactly as replicated
//! (metadata, sealed PII, wrapped keys, each file's ciphertext length and
//! BLAKE3), so any difference in what a site would serve shows up. No key
//! is needed.

use crate::error::ReplicaError;
use crate::hash::Hasher;
use crate::model::{ContractHead, VersionRecord};
use crate::site::Site;

/// One contract as a site holds it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Item {
    pub tenant: String,
    pub contract_id: String,
    pub version: u64,
    pub destroyed: bool,
    pub digest: String,
}

fn item(head: &ContractHead, latest: Option<&VersionRecord>) -> Item {
    let mut hash = Hasher::new();
    hash.update(head.tenant.as_bytes()).update(&[0]).update(head.contract_id.as_bytes()).update(&[0]);
    match (&head.destroyed, latest) {
        (Some(_), _) => hash.update(b"destroyed"),
        (None, Some(v)) => hash.update(&serde_json::to_vec(v).expect("records serialise")),
        (None, None) => hash.update(b"missing-version"),
    };
    Item { tenant: head.tenant.clone(), contract_id: head.contract_id.clone(), version: head.latest, destroyed: head.destroyed.is_some(), digest: hash.hex() }
}

/// Every contract of `shard`, in key order.
pub fn inventory(site: &Site, shard: u32) -> Result<Vec<Item>, ReplicaError> {
    let mut items = Vec::new();
    for head in site.meta.shard_heads(shard)? {
        let latest = site.meta.version(&head.tenant, &head.contract_id, head.latest)?;
        items.push(item(&head, latest.as_ref()));
    }
    Ok(items)
}

/// Digest of one shard's inventory.
pub fn shard_digest(items: &[Item]) -> String {
    let mut hash = Hasher::new();
    for i in items {
        hash.update(i.digest.as_bytes());
    }
    hash.hex()
}

/// One digest per shard, index = shard.
pub fn shard_digests(site: &Site, shard_count: u32) -> Result<Vec<String>, ReplicaError> {
    (0..shard_count).map(|s| inventory(site, s).map(|items| shard_digest(&items))).collect()
}
