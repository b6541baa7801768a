//! Anti-entropy digests: what `tandem verify` compares across sites.
//!
//! Two levels: one digest per shard (cheap to compare for all shards), and
//! for a shard that differs, its inventory (one item hash per contract). A
//! contract's item covers its latest version record exactly as replicated
//! (metadata, sealed PII, wrapped keys, each file's ciphertext length and
//! BLAKE3), so any difference in what a site would serve shows up. No key
//! is needed. The metadata store keeps both up to date as writes land
//! (`crate::shard_sums`, `MetaStore::commit`): neither grows with the
//! number of stored contracts except the inventory of a differing shard.

use crate::error::ReplicaError;
use crate::meta::MetaStore;
use crate::model::ContractHead;
use crate::shard_sums::{item_hash, item_hex, ItemHash, ItemState, Sum};
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

fn item(head: ContractHead, hash: &ItemHash) -> Item {
    Item { version: head.latest, destroyed: head.destroyed.is_some(), digest: item_hex(hash), tenant: head.tenant, contract_id: head.contract_id }
}

/// Every contract of `shard`, in key order.
pub fn inventory(site: &Site, shard: u32) -> Result<Vec<Item>, ReplicaError> {
    Ok(site.meta.shard_items(shard)?.into_iter().map(|(head, hash)| item(head, &hash)).collect())
}

/// One digest per shard, index = shard, as the store keeps them.
pub fn shard_digests(site: &Site, shard_count: u32) -> Result<Vec<String>, ReplicaError> {
    Ok(site.meta.shard_digests(shard_count)?)
}

/// One digest per shard of the store under `meta`, computed from every
/// head and version record (nothing kept, no running replicator): what
/// the drill compares to see that the sites have converged, and checks
/// the kept digests against.
pub fn store_digests(meta: &MetaStore, shard_count: u32) -> Result<Vec<String>, ReplicaError> {
    (0..shard_count)
        .map(|s| {
            let mut sum = Sum::default();
            for head in meta.shard_heads(s)? {
                let record = match head.destroyed {
                    Some(_) => None,
                    None => meta.version(&head.tenant, &head.contract_id, head.latest)?,
                };
                let bytes = record.map(|v| serde_json::to_vec(&v).expect("records serialise"));
                let state = match (&head.destroyed, &bytes) {
                    (Some(_), _) => ItemState::Destroyed,
                    (None, Some(b)) => ItemState::Record(b),
                    (None, None) => ItemState::Missing,
                };
                sum.add(&item_hash(&head.tenant, &head.contract_id, state));
            }
            Ok(sum.hex())
        })
        .collect()
}
