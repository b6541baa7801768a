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
//! - `i/{shard:05}/{tenant}/{contract}` → the contract's item hash (32 raw
//!   bytes, `crate::shard_sums`), written with every change of its head or
//!   latest version; what keeps each shard's digest without rereading it
//! - `r/digest-items` → (empty): every contract has its `i/` record (set
//!   once the items of a store from before them were computed)
//!
//! A write's metadata, its log entry and the cursor move together in one
//! batch, so a crash leaves either all of them or none.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tandem_storage::{Durability, KvStore, StorageError, WriteBatch};

use crate::model::{ContractHead, LogEntry, Quarantined, Restoring, Skipped, VersionRecord};
use crate::shard_sums::{item_hash, ItemHash, ItemState, Sum};

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
    /// Each shard's digest (`crate::shard_sums`), summed from the `i/`
    /// records when first asked for and kept up to date by every commit
    /// from then on. Commits hold it shared while they write, so the
    /// first summing (exclusive) never sees half of a commit.
    sums: Arc<RwLock<Option<Mutex<Sums>>>>,
    /// Commits touching the same contract take its stripe, so each reads
    /// the item hash the previous one wrote (and subtracts the right one).
    stripes: Arc<Vec<Mutex<()>>>,
    /// Commits raising a shard's epoch take its stripe (after the
    /// contracts'), so each reads the epoch the previous one wrote.
    epoch_stripes: Arc<Vec<Mutex<()>>>,
}

/// Each shard's digest, by shard.
type Sums = BTreeMap<u32, Sum>;

/// What [`MetaStore::each_in`] calls with each record's key and value.
type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), MetaError> + 'a;

/// How many stripes contracts are spread over: commits of different
/// contracts rarely wait for each other's sync.
const STRIPES: usize = 64;

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
/// Set once every contract of the store has its `i/` record.
pub const DIGEST_ITEMS_KEY: &str = "r/digest-items";

fn item_key(shard: u32, tenant: &str, contract_id: &str) -> String {
    format!("i/{shard:05}/{tenant}/{contract_id}")
}

fn keyed_entry_key(tenant: &str, contract_id: &str, seq: u64) -> String {
    format!("x/{tenant}/{contract_id}/{seq:020}")
}

fn gc_key(blob: &str) -> String {
    format!("g/{blob}")
}

/// Which of the commit stripes a contract takes.
fn stripe(tenant: &str, contract_id: &str) -> usize {
    let mut h = crc32fast::Hasher::new();
    h.update(tenant.as_bytes());
    h.update(&[0]);
    h.update(contract_id.as_bytes());
    h.finalize() as usize % STRIPES
}

/// Locks the stripes `of` names, each once and in order (so two commits
/// never wait for each other's stripes).
fn lock_stripes(stripes: &[Mutex<()>], of: impl Iterator<Item = usize>) -> Vec<std::sync::MutexGuard<'_, ()>> {
    let mut at: Vec<usize> = of.collect();
    at.sort_unstable();
    at.dedup();
    at.iter().map(|i| stripes[*i].lock().unwrap_or_else(|p| p.into_inner())).collect()
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
    /// The contracts this batch changes, with their shard: their item
    /// hashes are recomputed at commit.
    touched: BTreeMap<(String, String), u32>,
    /// The heads it writes (`None`: deleted), the last write of each.
    heads: BTreeMap<(String, String), Option<ContractHead>>,
    /// The version records it writes, serialised (`None`: deleted).
    versions: BTreeMap<(String, String, u64), Option<Vec<u8>>>,
    /// The owner epoch each shard is to be raised to: written at commit,
    /// and only where it is higher than the stored one (a batch staged
    /// before another commit raised it must not lower it).
    epochs: BTreeMap<u32, u64>,
    /// Records written as a backup holds them: the kept digests are summed
    /// again afterwards.
    raw: bool,
}

impl MetaBatch {
    fn touch(&mut self, shard: u32, tenant: &str, contract_id: &str) -> (String, String) {
        let key = (tenant.to_string(), contract_id.to_string());
        self.touched.insert(key.clone(), shard);
        key
    }

    pub fn put_head(&mut self, head: &ContractHead) {
        let key = self.touch(head.shard, &head.tenant, &head.contract_id);
        self.heads.insert(key, Some(head.clone()));
        self.batch.put(head_key(head.shard, &head.tenant, &head.contract_id), encode(head));
    }

    pub fn put_version(&mut self, v: &VersionRecord) {
        let (tenant, contract_id) = self.touch(v.shard, &v.tenant, &v.contract_id);
        let bytes = encode(v);
        self.versions.insert((tenant, contract_id, v.version), Some(bytes.clone()));
        self.batch.put(version_key(&v.tenant, &v.contract_id, v.version), bytes);
    }

    pub fn delete_head(&mut self, head: &ContractHead) {
        let key = self.touch(head.shard, &head.tenant, &head.contract_id);
        self.heads.insert(key, None);
        self.batch.delete(head_key(head.shard, &head.tenant, &head.contract_id));
    }

    pub fn delete_version(&mut self, v: &VersionRecord) {
        let (tenant, contract_id) = self.touch(v.shard, &v.tenant, &v.contract_id);
        self.versions.insert((tenant, contract_id, v.version), None);
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

    /// Raises the shard's stored epoch to `epoch` at commit (never lowers
    /// it).
    pub fn set_epoch(&mut self, shard: u32, epoch: u64) {
        let e = self.epochs.entry(shard).or_default();
        *e = (*e).max(epoch);
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
        self.raw = true;
        self.batch.put(key.to_vec(), value.to_vec());
    }

    /// Forgets that every contract has its item hash: a restore starts
    /// with this, and a backup that has them brings the mark back with
    /// them (one from before them does not, and its items are computed).
    pub fn forget_digest_items(&mut self) {
        self.raw = true;
        self.batch.delete(DIGEST_ITEMS_KEY);
    }

    /// Adds `other`'s writes after this batch's (the last write of a key
    /// wins, as in the store).
    pub fn absorb(&mut self, other: MetaBatch) {
        let MetaBatch { batch, touched, heads, versions, epochs, raw } = other;
        self.batch.extend(batch);
        self.touched.extend(touched);
        self.heads.extend(heads);
        self.versions.extend(versions);
        for (shard, epoch) in epochs {
            self.set_epoch(shard, epoch);
        }
        self.raw |= raw;
    }

    pub fn len(&self) -> usize {
        self.batch.ops().len() + self.epochs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty() && self.epochs.is_empty()
    }
}

impl MetaStore {
    pub fn new(kv: Arc<dyn KvStore>) -> Self {
        let stripes = || Arc::new((0..STRIPES).map(|_| Mutex::default()).collect());
        Self { kv, sums: Arc::default(), stripes: stripes(), epoch_stripes: stripes() }
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
    /// crash or power loss. The item hash of every contract it touches is
    /// written with it, and the shard digests move by the difference.
    pub fn commit(&self, batch: MetaBatch) -> Result<(), MetaError> {
        let MetaBatch { mut batch, touched, heads, versions, epochs, raw } = batch;
        // Held from before the item hashes are read: the first summing
        // waits for this commit to be written and counted (or starts
        // before it, and this commit then reads what that summing wrote).
        let sums = self.sums.read().unwrap_or_else(|p| p.into_inner());
        let held = lock_stripes(&self.stripes, touched.keys().map(|(t, c)| stripe(t, c)));
        // Then the shards' epoch stripes (always after the contracts'),
        // held until the write: the epoch read here is the one this write
        // raises.
        let held_epochs = lock_stripes(&self.epoch_stripes, epochs.keys().map(|shard| *shard as usize % STRIPES));
        for (shard, epoch) in &epochs {
            if *epoch > self.epoch(*shard)? {
                batch.put(epoch_key(*shard), epoch.to_string());
            }
        }
        let mut moves: Vec<(u32, Option<ItemHash>, Option<ItemHash>)> = Vec::new();
        for ((tenant, contract_id), shard) in &touched {
            let key = item_key(*shard, tenant, contract_id);
            let before = self.kv.get(key.as_bytes())?.and_then(|b| <ItemHash>::try_from(b.as_slice()).ok());
            let after = self.item_after(*shard, tenant, contract_id, &heads, &versions)?;
            if before != after {
                match after {
                    Some(h) => batch.put(key, h.to_vec()),
                    None => batch.delete(key),
                }
                moves.push((*shard, before, after));
            }
        }
        let written = self.kv.write(batch, Durability::Sync);
        // Let go of the stripes before the digests may be taken
        // exclusively: another commit holding them shared may be waiting
        // for one of these stripes.
        drop(held_epochs);
        drop(held);
        if let Err(e) = written {
            // A write that failed may still show (a failed fsync leaves it
            // in the page cache): sum the records again when next asked.
            drop(sums);
            *self.sums.write().unwrap_or_else(|p| p.into_inner()) = None;
            return Err(e.into());
        }
        if raw {
            drop(sums);
            *self.sums.write().unwrap_or_else(|p| p.into_inner()) = None;
        } else if let Some(sums) = sums.as_ref() {
            let mut sums = sums.lock().unwrap_or_else(|p| p.into_inner());
            for (shard, before, after) in moves {
                let sum = sums.entry(shard).or_default();
                if let Some(h) = before {
                    sum.sub(&h);
                }
                if let Some(h) = after {
                    sum.add(&h);
                }
            }
        }
        Ok(())
    }

    /// A contract's item hash once a batch with these heads and versions
    /// is written (`None`: no head).
    fn item_after(
        &self,
        shard: u32,
        tenant: &str,
        contract_id: &str,
        heads: &BTreeMap<(String, String), Option<ContractHead>>,
        versions: &BTreeMap<(String, String, u64), Option<Vec<u8>>>,
    ) -> Result<Option<ItemHash>, MetaError> {
        let head = match heads.get(&(tenant.to_string(), contract_id.to_string())) {
            Some(h) => h.clone(),
            None => self.head(shard, tenant, contract_id)?,
        };
        let Some(head) = head else { return Ok(None) };
        if head.destroyed.is_some() {
            return Ok(Some(item_hash(tenant, contract_id, ItemState::Destroyed)));
        }
        let record = match versions.get(&(tenant.to_string(), contract_id.to_string(), head.latest)) {
            Some(bytes) => bytes.clone(),
            None => self.version(tenant, contract_id, head.latest)?.map(|v| encode(&v)),
        };
        Ok(Some(item_hash(tenant, contract_id, record.as_deref().map_or(ItemState::Missing, ItemState::Record))))
    }

    /// Each shard's digest for shards `0..count` (`crate::shard_sums`):
    /// summed from the `i/` records the first time, kept since.
    pub fn shard_digests(&self, count: u32) -> Result<Vec<String>, MetaError> {
        loop {
            {
                let sums = self.sums.read().unwrap_or_else(|p| p.into_inner());
                if let Some(sums) = sums.as_ref() {
                    let sums = sums.lock().unwrap_or_else(|p| p.into_inner());
                    return Ok((0..count).map(|s| sums.get(&s).copied().unwrap_or_default().hex()).collect());
                }
            }
            let mut sums = self.sums.write().unwrap_or_else(|p| p.into_inner());
            if sums.is_none() {
                *sums = Some(Mutex::new(self.sum_items()?));
            }
        }
    }

    /// Sums every `i/` record per shard, after computing the records of a
    /// store from before them. Called with every commit excluded.
    fn sum_items(&self) -> Result<Sums, MetaError> {
        if self.kv.get(DIGEST_ITEMS_KEY.as_bytes())?.is_none() {
            self.compute_items()?;
        }
        let mut sums = Sums::new();
        self.each_in("i/", &mut |key, value| {
            let shard = std::str::from_utf8(&key[2..7]).ok().and_then(|s| s.parse::<u32>().ok());
            if let (Some(shard), Ok(h)) = (shard, <ItemHash>::try_from(value)) {
                sums.entry(shard).or_default().add(&h);
            }
            Ok(())
        })?;
        Ok(sums)
    }

    /// Writes every contract's `i/` record from its head and latest
    /// version, then the mark that they are all there.
    fn compute_items(&self) -> Result<(), MetaError> {
        let mut batch = WriteBatch::new();
        self.each_in("h/", &mut |key, value| {
            let head: ContractHead = decode(key, value)?;
            let state = match &head.destroyed {
                Some(_) => None,
                None => self.version(&head.tenant, &head.contract_id, head.latest)?.map(|v| encode(&v)),
            };
            let item = match (&head.destroyed, &state) {
                (Some(_), _) => ItemState::Destroyed,
                (None, Some(bytes)) => ItemState::Record(bytes),
                (None, None) => ItemState::Missing,
            };
            batch.put(item_key(head.shard, &head.tenant, &head.contract_id), item_hash(&head.tenant, &head.contract_id, item).to_vec());
            if batch.ops().len() >= 1000 {
                self.kv.write(std::mem::take(&mut batch), Durability::Buffered)?;
            }
            Ok(())
        })?;
        batch.put(DIGEST_ITEMS_KEY, Vec::new());
        Ok(self.kv.write(batch, Durability::Sync)?)
    }

    /// Every record under `prefix`, in key order, a page at a time (a
    /// store can hold millions).
    fn each_in(&self, prefix: &str, visit: &mut Visitor<'_>) -> Result<(), MetaError> {
        let end = prefix_end(prefix);
        let mut from = prefix.as_bytes().to_vec();
        loop {
            let page = self.kv.range(&from, &end, 1000)?;
            let Some((last, _)) = page.last() else { return Ok(()) };
            from = last.clone();
            from.push(0);
            for (k, v) in &page {
                visit(k, v)?;
            }
            if page.len() < 1000 {
                return Ok(());
            }
        }
    }

    /// Each contract of `shard` in key order, with its item hash.
    pub fn shard_items(&self, shard: u32) -> Result<Vec<(ContractHead, ItemHash)>, MetaError> {
        let heads = self.shard_heads(shard)?;
        let prefix = format!("i/{shard:05}/");
        let items: BTreeMap<Vec<u8>, Vec<u8>> =
            self.kv.range(prefix.as_bytes(), &prefix_end(&prefix), usize::MAX)?.into_iter().map(|(k, v)| (k[2..].to_vec(), v)).collect();
        heads
            .into_iter()
            .map(|head| {
                let key = head_key(head.shard, &head.tenant, &head.contract_id);
                let kept = items.get(&key.as_bytes()[2..]).and_then(|v| <ItemHash>::try_from(v.as_slice()).ok());
                let h = match kept {
                    Some(h) => h,
                    // A store whose items are being computed: the same hash from the records.
                    None => self.item_after(head.shard, &head.tenant, &head.contract_id, &BTreeMap::new(), &BTreeMap::new())?.expect("the head is there"),
                };
                Ok((head, h))
            })
            .collect()
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

    /// Whether the store holds no record at all (what a restore goes
    /// into). The mark that every contract has its item hash does not
    /// count: an empty store that was opened once has it.
    pub fn is_empty(&self) -> Result<bool, MetaError> {
        Ok(self.kv.range(b"", &[0xff], 2)?.iter().all(|(k, _)| k == DIGEST_ITEMS_KEY.as_bytes()))
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

    // A batch staged before another commit raised a shard's epoch must
    // not lower it when it commits after.
    #[test]
    fn a_commit_never_lowers_a_shards_epoch() {
        let meta = MetaStore::new(Arc::new(MemKv::new()));
        let mut newer = MetaBatch::default();
        newer.set_epoch(3, 5);
        meta.commit(newer).unwrap();
        let mut older = MetaBatch::default();
        older.set_epoch(3, 4);
        older.set_epoch(70, 2);
        meta.commit(older).unwrap();
        assert_eq!(meta.epoch(3).unwrap(), 5);
        assert_eq!(meta.epoch(70).unwrap(), 2, "a shard the batch raises is still raised");
        let mut merged = MetaBatch::default();
        merged.set_epoch(3, 9);
        let mut lower = MetaBatch::default();
        lower.set_epoch(3, 6);
        merged.absorb(lower);
        meta.commit(merged).unwrap();
        assert_eq!(meta.epoch(3).unwrap(), 9, "absorbing a batch keeps the higher epoch");
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

    fn digests_from_records(meta: &MetaStore) -> Vec<String> {
        crate::digest::store_digests(meta, 8).unwrap()
    }

    // The kept shard digests equal digests recomputed from every record
    // after each of a few hundred random commits (new versions, versions
    // rewritten in place, destroys, contracts deleted, several contracts
    // in one batch), whether they were first summed before the commits or
    // after, and in a store opened again.
    #[test]
    fn kept_digests_equal_digests_from_the_records() {
        let kv = Arc::new(MemKv::new());
        let meta = MetaStore::new(kv.clone());
        let late = MetaStore::new(kv.clone());
        assert_eq!(meta.shard_digests(8).unwrap(), digests_from_records(&meta), "empty");
        let mut rng = 7u64;
        let mut next = |n: u64| {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (rng >> 33) % n
        };
        let mut latest: BTreeMap<String, u64> = BTreeMap::new();
        for round in 0..300 {
            let mut b = MetaBatch::default();
            for _ in 0..=next(3) {
                let id = format!("c{}", next(12));
                let shard = (id.len() as u32 + id.as_bytes()[1] as u32) % 8;
                let v = latest.get(&id).copied().unwrap_or(0);
                let mut rec = version(v.max(1));
                rec.contract_id = id.clone();
                rec.shard = shard;
                let head = |latest, destroyed: bool| ContractHead {
                    tenant: "t1".into(),
                    contract_id: id.clone(),
                    shard,
                    latest,
                    destroyed: destroyed.then(|| crate::model::Tombstone { at_unix_ms: 1, origin: "a".into(), who: "w".into(), why: "y".into() }),
                };
                match next(5) {
                    0 | 1 => {
                        rec.version = v + 1;
                        b.put_version(&rec);
                        b.put_head(&head(v + 1, false));
                        latest.insert(id.clone(), v + 1);
                    }
                    2 if v > 0 => {
                        rec.fields.insert("rewrapped".into(), round.to_string());
                        b.put_version(&rec);
                    }
                    3 if v > 0 => b.put_head(&head(v, true)),
                    4 if v > 0 => {
                        b.delete_version(&rec);
                        b.delete_head(&head(v, false));
                        latest.remove(&id);
                    }
                    _ => {}
                }
            }
            meta.commit(b).unwrap();
            assert_eq!(meta.shard_digests(8).unwrap(), digests_from_records(&meta), "after commit {round}");
        }
        // A commit whose fsync fails still shows (the page cache has it):
        // the kept digests follow what the store shows.
        kv.set_fault(tandem_storage::DiskFault::FsyncError);
        let mut b = MetaBatch::default();
        let mut rec = version(99);
        rec.contract_id = "c-fsync".into();
        b.put_version(&rec);
        b.put_head(&ContractHead { tenant: "t1".into(), contract_id: "c-fsync".into(), shard: 3, latest: 99, destroyed: None });
        assert!(meta.commit(b).is_err());
        kv.set_fault(tandem_storage::DiskFault::None);
        assert!(meta.head(3, "t1", "c-fsync").unwrap().is_some(), "the failed write shows");
        assert_eq!(meta.shard_digests(8).unwrap(), digests_from_records(&meta), "after a failed fsync");
        assert_eq!(late.shard_digests(8).unwrap(), digests_from_records(&meta), "summed only after the commits");
        assert_eq!(MetaStore::new(kv).shard_digests(8).unwrap(), digests_from_records(&meta), "opened again");
        assert!(meta.shard_digests(8).unwrap().iter().any(|d| *d != "0".repeat(64)), "the test stored something");
    }

    // A store written before item hashes were kept gets them computed
    // once, when its digests are first asked for; then they are kept.
    #[test]
    fn a_store_from_before_kept_digests_gets_its_items_computed_once() {
        let kv = Arc::new(MemKv::new());
        let meta = MetaStore::new(kv.clone());
        let mut b = MetaBatch::default();
        b.put_version(&version(1));
        b.put_head(&ContractHead { tenant: "t1".into(), contract_id: "c1".into(), shard: 3, latest: 1, destroyed: None });
        meta.commit(b).unwrap();
        let expected = digests_from_records(&meta);
        // As an older build left it: no `i/` records, no mark.
        let mut old = WriteBatch::new();
        old.delete_range(b"i/".to_vec(), prefix_end("i/"));
        old.delete(DIGEST_ITEMS_KEY);
        kv.write(old, Durability::Sync).unwrap();
        let reopened = MetaStore::new(kv.clone());
        assert_eq!(reopened.shard_items(3).unwrap().len(), 1, "the inventory works before the items are computed");
        assert_eq!(reopened.shard_digests(8).unwrap(), expected);
        assert!(kv.get(DIGEST_ITEMS_KEY.as_bytes()).unwrap().is_some(), "marked once computed");
        assert_eq!(kv.range(b"i/", &prefix_end("i/"), 10).unwrap().len(), 1);
        assert!(reopened.is_empty().is_ok_and(|e| !e));
        let empty = MetaStore::new(Arc::new(MemKv::new()));
        empty.shard_digests(8).unwrap();
        assert!(empty.is_empty().unwrap(), "the mark alone leaves a store empty (a restore may go into it)");
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
