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
///
/// A contract no batch has changed since its item was last computed keeps
/// that item (reading and re-serialising every version record each round
/// was most of what a long drill spent its time on).
pub fn inventory(site: &Site, shard: u32) -> Result<Vec<Item>, ReplicaError> {
    let mut items = Vec::new();
    for head in site.meta.shard_heads(shard)? {
        // Read before the record: a batch that lands meanwhile moves it.
        let changes = site.meta.contract_changes(&head.tenant, &head.contract_id);
        let key = (head.tenant.clone(), head.contract_id.clone());
        let cached = site.item_cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key).filter(|(at, _)| *at == changes).map(|(_, d)| d.clone());
        let it = match cached {
            Some(digest) => Item { tenant: key.0, contract_id: key.1, version: head.latest, destroyed: head.destroyed.is_some(), digest },
            None => {
                let latest = site.meta.version(&head.tenant, &head.contract_id, head.latest)?;
                let i = item(&head, latest.as_ref());
                site.item_cache.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (changes, i.digest.clone()));
                i
            }
        };
        items.push(it);
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

/// One digest per shard of the store under `meta`, computed from every
/// record (no cache, no running replicator): what the drill compares to
/// see that the sites have converged.
pub fn store_digests(meta: &crate::meta::MetaStore, shard_count: u32) -> Result<Vec<String>, ReplicaError> {
    (0..shard_count)
        .map(|s| {
            let mut items = Vec::new();
            for head in meta.shard_heads(s)? {
                let latest = meta.version(&head.tenant, &head.contract_id, head.latest)?;
                items.push(item(&head, latest.as_ref()));
            }
            Ok(shard_digest(&items))
        })
        .collect()
}

/// One digest per shard, index = shard. A shard no batch has changed
/// since its digest was last computed keeps that digest: anti-entropy asks
/// every few seconds, and recomputing every record of every shard each
/// time grew with the store (the drill's ten-minute run spent most of its
/// time here).
pub fn shard_digests(site: &Site, shard_count: u32) -> Result<Vec<String>, ReplicaError> {
    (0..shard_count)
        .map(|s| {
            // Read before the records: a batch that lands meanwhile moves it.
            let changes = site.meta.shard_changes(s);
            if let Some((at, digest)) = site.digest_cache.lock().unwrap_or_else(|p| p.into_inner()).get(&s) {
                if *at == changes {
                    return Ok(digest.clone());
                }
            }
            let digest = shard_digest(&inventory(site, s)?);
            site.digest_cache.lock().unwrap_or_else(|p| p.into_inner()).insert(s, (changes, digest.clone()));
            Ok(digest)
        })
        .collect()
}
