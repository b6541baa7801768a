//! The replicator's metadata in the key-value store (rocksdb in the daemon,
//! the in-memory store in the simulation).
//!
//! Key layout (all values JSON):
//! - `h/{shard:05}/{tenant}/{contract}` → [`ContractHead`]
//! - `v/{tenant}/{contract}/{version:020}` → [`VersionRecord`]
//! - `l/{seq:020}` → [`LogEntry`], this site's own change log
//! - `c/{origin}` → the last entry of `origin`'s log applied here
//! - `e/{shard:05}` → the highest owner epoch seen for the shard
//! - `g/{blob path}` → ciphertext waiting to be deleted (destroyed contracts),
//!   with the log position all peers must confirm first
//! - `q/{tenant}/{contract}/{version:020}/{origin}/{epoch:020}` →
//!   [`Quarantined`]: a divergent write moved aside (version 0: a destroy)
//! - `s/{origin}/{seq:020}` → [`Skipped`]: an entry of another site's log
//!   refused as stale and stepped over at the origin's request
//! - `x/{tenant}/{contract}/{seq:020}` → (empty): an entry of this site's
//!   own log that carries the contract's wrapped keys (a put, a re-wrap),
//!   so a destroy can scrub them from the log too
//! - `r/restore` → [`Restoring`]: this store was restored from a backup and
//!   has not caught up yet (`crate::restore`)
//! - `r/log-floor` → this site's log head after a restore: the entries
//!   between the backup's head and it were lost with the site's old store
//!
//! A write's metadata, its log entry and the cursor move together in one
//! batch, so a crash leaves either all of them or none.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tandem_storage::{Durability, KvStore, StorageError, WriteBatch};

use crate::model::{ContractHead, LogEntry, Quarantined, Restoring, Skipped, VersionRecord};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata store: {0}")]
    Storage(#[from] StorageError),
    #[error("metadata record {key} is unreadable: {reason}")]
    Decode { key: String, reason: String },
}

#[derive(Clone)]
pub struct MetaStore {
    kv: Arc<dyn KvStore>,
    /// Per shard, how many committed batches touched its contracts (heads
    /// or versions) since this store was opened: what lets the anti-entropy
    /// digests of an unchanged shard be reused instead of recomputed from
    /// every record every round (`digest.rs`).
    shard_changes: Arc<Mutex<BTreeMap<u32, u64>>>,
    /// The same per contract (tenant, id): an unchanged contract's digest
    /// item is reused too.
    contract_changes: Arc<Mutex<BTreeMap<(String, String), u64>>>,
}

fn head_key(shard: u32, tenant: &str, contract_id: &str) -> String {
    format!("h/{shard:05}/{tenant}/{contract_id}")
}

fn version_key(tenant: &str, contract_id: &str, version: u64) -> String {
    format!("v/{tenant}/{contract_id}/{version:020}")
}

fn log_key(seq: u64) -> String {
    format!("l/{seq:020}")
}

fn cursor_key(origin: &str) -> String {
    format!("c/{origin}")
}

fn epoch_key(shard: u32) -> String {
    format!("e/{shard:05}")
}

fn quarantine_key(tenant: &str, contract_id: &str, version: u64, origin: &str, epoch: u64) -> String {
    format!("q/{tenant}/{contract_id}/{version:020}/{origin}/{epoch:020}")
}

fn skipped_key(origin: &str, seq: u64) -> String {
    format!("s/{origin}/{seq:020}")
}

/// Where a store keeps its [`Restoring`] mark (never copied from a backup).
pub const RESTORE_KEY: &str = "r/restore";
const LOG_FLOOR_KEY: &str = "r/log-floor";

fn keyed_entry_key(tenant: &str, contract_id: &str, seq: u64) -> String {
    format!("x/{tenant}/{contract_id}/{seq:020}")
}

fn gc_key(blob: &str) -> String {
    format!("g/{blob}")
}

/// The smallest key greater than every key starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    end.push(0xff);
    end
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("metadata types always serialise")
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, MetaError> {
    serde_json::from_slice(bytes).map_err(|e| MetaError::Decode { key: String::from_utf8_lossy(key).into_owned(), reason: e.to_string() })
}

/// The fields of a [`LogEntry`] that say where and when it is in the log.
#[derive(Clone, Copy, Debug, serde::Deserialize)]
pub struct LogStamp {
    pub cum_bytes: u64,
    pub at_unix_ms: u64,
}

/// The writes of one change, built up and then committed at once.
#[derive(Default)]
pub struct MetaBatch {
    batch: WriteBatch,
    /// Shards, and contracts, this batch changes.
    shards: BTreeSet<u32>,
    contracts: BTreeSet<(String, String)>,
}

impl MetaBatch {
    pub fn put_head(&mut self, head: &ContractHead) {
        self.shards.insert(head.shard);
        self.contracts.insert((head.tenant.clone(), head.contract_id.clone()));
        self.batch.put(head_key(head.shard, &head.tenant, &head.contract_id), encode(head));
    }

    pub fn put_version(&mut self, v: &VersionRecord) {
        self.shards.insert(v.shard);
        self.contracts.insert((v.tenant.clone(), v.contract_id.clone()));
        self.batch.put(version_key(&v.tenant, &v.contract_id, v.version), encode(v));
    }

    pub fn delete_head(&mut self, head: &ContractHead) {
        self.shards.insert(head.shard);
        self.contracts.insert((head.tenant.clone(), head.contract_id.clone()));
        self.batch.delete(head_key(head.shard, &head.tenant, &head.contract_id));
    }

    pub fn delete_version(&mut self, v: &VersionRecord) {
        self.shards.insert(v.shard);
        self.contracts.insert((v.tenant.clone(), v.contract_id.clone()));
        self.batch.delete(version_key(&v.tenant, &v.contract_id, v.version));
    }

    pub fn put_quarantined(&mut self, q: &Quarantined) {
        self.batch.put(quarantine_key(&q.tenant, &q.contract_id, q.version, &q.origin, q.epoch), encode(q));
    }

    pub fn put_skipped(&mut self, origin: &str, seq: u64, skipped: &Skipped) {
        self.batch.put(skipped_key(origin, seq), encode(skipped));
    }

    pub fn append_log(&mut self, entry: &LogEntry) {
        self.batch.put(log_key(entry.seq), encode(entry));
    }

    /// Notes that own log entry `seq` carries the contract's wrapped keys.
    pub fn note_keyed_entry(&mut self, tenant: &str, contract_id: &str, seq: u64) {
        self.batch.put(keyed_entry_key(tenant, contract_id, seq), Vec::new());
    }

    pub fn forget_keyed_entry(&mut self, tenant: &str, contract_id: &str, seq: u64) {
        self.batch.delete(keyed_entry_key(tenant, contract_id, seq));
    }

    pub fn set_cursor(&mut self, origin: &str, seq: u64) {
        self.batch.put(cursor_key(origin), seq.to_string());
    }

    pub fn set_epoch(&mut self, shard: u32, epoch: u64) {
        self.batch.put(epoch_key(shard), epoch.to_string());
    }

    /// Queues `blob` for deletion once every peer has confirmed this
    /// site's log up to `after_seq` (0: no wait).
    pub fn queue_gc(&mut self, blob: &str, after_seq: u64) {
        self.batch.put(gc_key(blob), after_seq.to_string());
    }

    pub fn done_gc(&mut self, blob: &str) {
        self.batch.delete(gc_key(blob));
    }

    pub fn set_restoring(&mut self, r: &Restoring) {
        self.batch.put(RESTORE_KEY, encode(r));
    }

    pub fn done_restoring(&mut self) {
        self.batch.delete(RESTORE_KEY);
    }

    /// This site's log continues after `seq` (see [`MetaStore::log_head`]).
    pub fn set_log_floor(&mut self, seq: u64) {
        self.batch.put(LOG_FLOOR_KEY, seq.to_string());
    }

    /// A record exactly as a backup holds it (`crate::restore`).
    pub fn put_raw(&mut self, key: &[u8], value: &[u8]) {
        self.batch.put(key.to_vec(), value.to_vec());
    }

    pub fn len(&self) -> usize {
        self.batch.ops().len()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

impl MetaStore {
    pub fn new(kv: Arc<dyn KvStore>) -> Self {
        Self { kv, shard_changes: Arc::default(), contract_changes: Arc::default() }
    }

    /// How many committed batches have changed this contract since this
    /// store was opened.
    pub fn contract_changes(&self, tenant: &str, contract_id: &str) -> u64 {
        let changes = self.contract_changes.lock().unwrap_or_else(|p| p.into_inner());
        changes.get(&(tenant.to_string(), contract_id.to_string())).copied().unwrap_or(0)
    }

    /// How many committed batches have changed `shard`'s contracts since
    /// this store was opened (compare two readings: equal means unchanged).
    pub fn shard_changes(&self, shard: u32) -> u64 {
        self.shard_changes.lock().unwrap_or_else(|p| p.into_inner()).get(&shard).copied().unwrap_or(0)
    }

    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, MetaError> {
        match self.kv.get(key.as_bytes())? {
            Some(bytes) => Ok(Some(decode(key.as_bytes(), &bytes)?)),
            None => Ok(None),
        }
    }

    fn get_u64(&self, key: &str) -> Result<u64, MetaError> {
        match self.kv.get(key.as_bytes())? {
            None => Ok(0),
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| MetaError::Decode { key: key.to_string(), reason: "not a number".into() }),
        }
    }

    /// Commits a batch with a synced WAL: once this returns, it survives a
    /// crash or power loss.
    pub fn commit(&self, batch: MetaBatch) -> Result<(), MetaError> {
        let MetaBatch { batch, shards, contracts } = batch;
        // Counted before the write as well as after: a digest computed
        // while this batch lands reads a count that moves again, so it is
        // never reused for the state after the batch.
        self.count_changes(&shards, &contracts);
        let written = self.kv.write(batch, Durability::Sync);
        self.count_changes(&shards, &contracts);
        Ok(written?)
    }

    /// Waits out what a slow disk adds to a synced write (the simulation's
    /// fault; nothing on a real disk): called by the data path just before
    /// each synced commit, while it holds its locks.
    pub async fn slow_sync(&self) {
        let extra = self.kv.slow_sync();
        if !extra.is_zero() {
            tokio::time::sleep(extra).await;
        }
    }

    fn count_changes(&self, shards: &BTreeSet<u32>, contracts: &BTreeSet<(String, String)>) {
        if !shards.is_empty() {
            let mut changes = self.shard_changes.lock().unwrap_or_else(|p| p.into_inner());
            for s in shards {
                *changes.entry(*s).or_default() += 1;
            }
        }
        if !contracts.is_empty() {
            let mut changes = self.contract_changes.lock().unwrap_or_else(|p| p.into_inner());
            for c in contracts {
                *changes.entry(c.clone()).or_default() += 1;
            }
        }
    }

    pub fn head(&self, shard: u32, tenant: &str, contract_id: &str) -> Result<Option<ContractHead>, MetaError> {
        self.get(&head_key(shard, tenant, contract_id))
    }

    pub fn version(&self, tenant: &str, contract_id: &str, version: u64) -> Result<Option<VersionRecord>, MetaError> {
        self.get(&version_key(tenant, contract_id, version))
    }

    /// Every version of a contract, oldest first.
    pub fn versions(&self, tenant: &str, contract_id: &str) -> Result<Vec<VersionRecord>, MetaError> {
        let prefix = format!("v/{tenant}/{contract_id}/");
        self.kv.range(prefix.as_bytes(), &prefix_end(&prefix), usize::MAX)?.iter().map(|(k, v)| decode(k, v)).collect()
    }

    /// Every version record held here, in key order (the drill's checks).
    pub fn all_versions(&self) -> Result<Vec<VersionRecord>, MetaError> {
        self.kv.range(b"v/", &prefix_end("v/"), usize::MAX)?.iter().map(|(k, v)| decode(k, v)).collect()
    }

    /// Heads of every contract in `shard`, in key order.
    pub fn shard_heads(&self, shard: u32) -> Result<Vec<ContractHead>, MetaError> {
        let prefix = format!("h/{shard:05}/");
        self.kv.range(prefix.as_bytes(), &prefix_end(&prefix), usize::MAX)?.iter().map(|(k, v)| decode(k, v)).collect()
    }

    /// Heads of one tenant's contracts (they all live in one shard).
    pub fn tenant_heads(&self, shard: u32, tenant: &str) -> Result<Vec<ContractHead>, MetaError> {
        let prefix = format!("h/{shard:05}/{tenant}/");
        self.kv.range(prefix.as_bytes(), &prefix_end(&prefix), usize::MAX)?.iter().map(|(k, v)| decode(k, v)).collect()
    }

    /// Sequence number of the newest entry in this site's log (0: empty).
    /// Every record as of one moment (see `KvStore::visit_snapshot`): what
    /// a backup copies.
    pub fn visit_snapshot(&self, visit: &mut tandem_storage::Visit<'_>) -> Result<(), MetaError> {
        Ok(self.kv.visit_snapshot(visit)?)
    }

    /// At least the log floor: after a restore the newest entries are
    /// gone, and their numbers must never be given to new ones (peers
    /// already hold them).
    pub fn log_head(&self) -> Result<u64, MetaError> {
        // The number is in the key: decoding the entry (a version record,
        // keys and all) for it cost a drill a tenth of its time.
        let last = match self.kv.last_in_range(b"l/", &prefix_end("l/"))? {
            Some((k, v)) => match std::str::from_utf8(&k[2..]).ok().and_then(|s| s.parse().ok()) {
                Some(seq) => seq,
                None => decode::<LogEntry>(&k, &v)?.seq,
            },
            None => 0,
        };
        Ok(last.max(self.log_floor()?))
    }

    /// The log head a restore set (0: never restored): entries at or below
    /// it that this store lacks were lost with the old store.
    pub fn log_floor(&self) -> Result<u64, MetaError> {
        self.get_u64(LOG_FLOOR_KEY)
    }

    /// Set while this store, restored from a backup, has not caught up.
    pub fn restoring(&self) -> Result<Option<Restoring>, MetaError> {
        self.get(RESTORE_KEY)
    }

    /// Whether the store holds no record at all (what a restore goes into).
    pub fn is_empty(&self) -> Result<bool, MetaError> {
        Ok(self.kv.range(b"", &[0xff], 1)?.is_empty())
    }

    pub fn log_entry(&self, seq: u64) -> Result<Option<LogEntry>, MetaError> {
        self.get(&log_key(seq))
    }

    /// The entries of this site's own log that carry the contract's wrapped
    /// keys, oldest first (see [`MetaBatch::note_keyed_entry`]).
    pub fn keyed_entries(&self, tenant: &str, contract_id: &str) -> Result<Vec<u64>, MetaError> {
        let prefix = format!("x/{tenant}/{contract_id}/");
        Ok(self
            .kv
            .range(prefix.as_bytes(), &prefix_end(&prefix), usize::MAX)?
            .iter()
            .filter_map(|(k, _)| std::str::from_utf8(&k[prefix.len()..]).ok()?.parse().ok())
            .collect())
    }

    /// The position and time of entry `seq`, without decoding its change
    /// (what lag and the next entry's `cum_bytes` need, several times a
    /// second per link).
    pub fn log_stamp(&self, seq: u64) -> Result<Option<LogStamp>, MetaError> {
        self.get(&log_key(seq))
    }

    pub fn cursor(&self, origin: &str) -> Result<u64, MetaError> {
        self.get_u64(&cursor_key(origin))
    }

    pub fn epoch(&self, shard: u32) -> Result<u64, MetaError> {
        self.get_u64(&epoch_key(shard))
    }

    pub fn quarantined(&self, tenant: &str, contract_id: &str, version: u64, origin: &str, epoch: u64) -> Result<Option<Quarantined>, MetaError> {
        self.get(&quarantine_key(tenant, contract_id, version, origin, epoch))
    }

    /// Everything quarantined here, in key order.
    pub fn all_quarantined(&self) -> Result<Vec<Quarantined>, MetaError> {
        self.kv.range(b"q/", &prefix_end("q/"), usize::MAX)?.iter().map(|(k, v)| decode(k, v)).collect()
    }

    pub fn skipped(&self, origin: &str, seq: u64) -> Result<Option<Skipped>, MetaError> {
        self.get(&skipped_key(origin, seq))
    }

    /// Blob paths waiting to be deleted, with the log position every peer
    /// must have confirmed first.
    pub fn gc_queue(&self, limit: usize) -> Result<Vec<(String, u64)>, MetaError> {
        Ok(self
            .kv
            .range(b"g/", &prefix_end("g/"), limit)?
            .into_iter()
            .map(|(k, v)| {
                let after = std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
                (String::from_utf8_lossy(&k[2..]).into_owned(), after)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Change;
    use tandem_storage::MemKv;

    fn version(v: u64) -> VersionRecord {
        VersionRecord {
            tenant: "t1".into(),
            contract_id: "c1".into(),
            version: v,
            shard: 3,
            epoch: 1,
            origin: "a".into(),
            created_unix_ms: 5,
            fields: Default::default(),
            pii: Default::default(),
            pii_key: None,
            files: vec![],
        }
    }

    #[test]
    fn batch_commits_head_version_log_and_cursor_together() {
        let kv = Arc::new(MemKv::new());
        let meta = MetaStore::new(kv.clone());
        let mut b = MetaBatch::default();
        let head = ContractHead { tenant: "t1".into(), contract_id: "c1".into(), shard: 3, latest: 1, destroyed: None };
        b.put_head(&head);
        b.put_version(&version(1));
        b.append_log(&LogEntry { origin: "a".into(), seq: 1, cum_bytes: 512, at_unix_ms: 5, shard: 3, epoch: 1, change: Change::Put(version(1)) });
        b.set_cursor("b", 7);
        meta.commit(b).unwrap();
        // Synced: a crash keeps all of it.
        kv.crash();
        assert_eq!(meta.head(3, "t1", "c1").unwrap(), Some(head));
        assert_eq!(meta.version("t1", "c1", 1).unwrap(), Some(version(1)));
        assert_eq!(meta.log_head().unwrap(), 1);
        assert_eq!(meta.cursor("b").unwrap(), 7);
        assert_eq!(meta.cursor("c").unwrap(), 0);
    }

    #[test]
    fn tenant_listing_does_not_mix_prefixes() {
        let meta = MetaStore::new(Arc::new(MemKv::new()));
        let mut b = MetaBatch::default();
        for (t, c) in [("t1", "x"), ("t10", "y"), ("t1", "z")] {
            b.put_head(&ContractHead { tenant: t.into(), contract_id: c.into(), shard: 1, latest: 1, destroyed: None });
        }
        meta.commit(b).unwrap();
        let ids: Vec<String> = meta.tenant_heads(1, "t1").unwrap().into_iter().map(|h| h.contract_id).collect();
        assert_eq!(ids, vec!["x", "z"]);
        assert_eq!(meta.shard_heads(1).unwrap().len(), 3);
    }
}
