//! In-memory [`KvStore`] with crash semantics, for the simulation.
//!
//! Two maps model the disk: `visible` is what reads see (the page cache),
//! `durable` is what survives a crash. Buffered batches wait in `unsynced`
//! until the next sync applies them to `durable` in order.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use crate::{Durability, KeyValue, KvStore, StorageError, WriteBatch, WriteOp};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Default)]
struct Disk {
    visible: Map,
    durable: Map,
    unsynced: Vec<WriteBatch>,
    fault: DiskFault,
    /// Extra time each synced write takes (a slow disk).
    slow: std::time::Duration,
    /// Synced writes so far (what group commit saves).
    synced_writes: usize,
}

/// What the drill has made wrong with a simulated disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiskFault {
    #[default]
    None,
    /// Syncs fail with EIO, and (as Linux does after a failed fsync) the
    /// buffered writes they were to make durable are dropped from the
    /// page cache's dirty list: readable until a crash, never on disk.
    FsyncError,
    /// Every write fails: no space left on the device.
    Full,
    /// Every read fails its block checksum.
    CorruptRead,
}

/// A handle onto one simulated disk. Clones share the disk, so the
/// simulation keeps a handle across a host's crash and restart.
#[derive(Clone, Default)]
pub struct MemKv {
    disk: Arc<Mutex<Disk>>,
}

impl MemKv {
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates power loss: every write not yet synced is gone.
    pub fn crash(&self) {
        self.crash_keeping(0);
    }

    /// Simulates power loss that tore the write-ahead log: the first `keep`
    /// unsynced batches reached the disk (in order, as a log is written),
    /// the rest, and a torn one after them, are gone (recovery drops a
    /// record whose checksum fails).
    pub fn crash_keeping(&self, keep: usize) {
        let mut disk = self.lock();
        let mut unsynced = std::mem::take(&mut disk.unsynced);
        unsynced.truncate(keep);
        for batch in &unsynced {
            apply(&mut disk.durable, batch);
        }
        disk.visible = disk.durable.clone();
    }

    pub fn set_fault(&self, fault: DiskFault) {
        self.lock().fault = fault;
    }

    /// From now on each synced write takes `extra` longer (zero: normal
    /// again); see [`KvStore::slow_sync`].
    pub fn set_slow(&self, extra: std::time::Duration) {
        self.lock().slow = extra;
    }

    fn refuse(&self, disk: &Disk, reading: bool) -> Result<(), StorageError> {
        let why = match (disk.fault, reading) {
            (DiskFault::Full, false) => "IO error: No space left on device (drill fault)",
            (DiskFault::CorruptRead, true) => "Corruption: block checksum mismatch (drill fault)",
            _ => return Ok(()),
        };
        Err(StorageError::Backend(why.into()))
    }

    /// Number of synced writes made so far (tests of group commit).
    pub fn synced_writes(&self) -> usize {
        self.lock().synced_writes
    }

    /// Number of buffered batches a crash would lose (for tests and reports).
    pub fn unsynced_batches(&self) -> usize {
        self.lock().unsynced.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Disk> {
        // A poisoned lock means a panic mid-write in a test; the data is
        // still a consistent map, so keep going rather than cascade panics.
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn apply(map: &mut Map, batch: &WriteBatch) {
    for op in batch.ops() {
        match op {
            WriteOp::Put { key, value } => {
                map.insert(key.clone(), value.clone());
            }
            WriteOp::Delete { key } => {
                map.remove(key);
            }
            WriteOp::DeleteRange { start, end } => {
                if start >= end {
                    continue;
                }
                let doomed: Vec<Vec<u8>> = map.range::<[u8], _>((Bound::Included(&start[..]), Bound::Excluded(&end[..]))).map(|(k, _)| k.clone()).collect();
                for k in doomed {
                    map.remove(&k);
                }
            }
        }
    }
}

fn flush(disk: &mut Disk) {
    let pending = std::mem::take(&mut disk.unsynced);
    for batch in &pending {
        apply(&mut disk.durable, batch);
    }
}

impl KvStore for MemKv {
    fn visit_snapshot(&self, visit: &mut crate::Visit<'_>) -> Result<(), StorageError> {
        // A copy taken under the lock is the snapshot.
        let copy = {
            let disk = self.lock();
            self.refuse(&disk, true)?;
            disk.visible.clone()
        };
        for (k, v) in &copy {
            visit(k, v).map_err(StorageError::Backend)?;
        }
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let disk = self.lock();
        self.refuse(&disk, true)?;
        Ok(disk.visible.get(key).cloned())
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), StorageError> {
        let mut disk = self.lock();
        self.refuse(&disk, false)?;
        if durability == Durability::Sync {
            disk.synced_writes += 1;
        }
        if durability == Durability::Sync && disk.fault == DiskFault::FsyncError {
            // The batch is in the page cache, its sync failed: readable now,
            // lost at the next crash, and the caller told so.
            apply(&mut disk.visible, &batch);
            disk.unsynced.clear();
            return Err(StorageError::Backend("IO error: fsync failed: Input/output error (drill fault)".into()));
        }
        apply(&mut disk.visible, &batch);
        disk.unsynced.push(batch);
        if durability == Durability::Sync {
            flush(&mut disk);
        }
        Ok(())
    }

    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KeyValue>, StorageError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let disk = self.lock();
        self.refuse(&disk, true)?;
        Ok(disk.visible.range::<[u8], _>((Bound::Included(start), Bound::Excluded(end))).take(limit).map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn last_in_range(&self, start: &[u8], end: &[u8]) -> Result<Option<KeyValue>, StorageError> {
        if start >= end {
            return Ok(None);
        }
        let disk = self.lock();
        self.refuse(&disk, true)?;
        Ok(disk.visible.range::<[u8], _>((Bound::Included(start), Bound::Excluded(end))).next_back().map(|(k, v)| (k.clone(), v.clone())))
    }

    fn slow_sync(&self) -> std::time::Duration {
        self.lock().slow
    }

    fn sync(&self) -> Result<(), StorageError> {
        let mut disk = self.lock();
        if disk.fault == DiskFault::FsyncError {
            disk.unsynced.clear();
            return Err(StorageError::Backend("IO error: fsync failed: Input/output error (drill fault)".into()));
        }
        flush(&mut disk);
        Ok(())
    }
}

#[cfg(test)]
mod fault_tests {
    use super::*;

    fn put(kv: &MemKv, k: &str, d: Durability) -> Result<(), StorageError> {
        let mut b = WriteBatch::default();
        b.put(k.as_bytes().to_vec(), b"v".to_vec());
        kv.write(b, d)
    }

    #[test]
    fn a_failed_fsync_loses_what_it_was_to_make_durable() {
        let kv = MemKv::new();
        put(&kv, "a", Durability::Buffered).unwrap();
        kv.set_fault(DiskFault::FsyncError);
        assert!(put(&kv, "b", Durability::Sync).unwrap_err().to_string().contains("fsync failed"));
        assert!(kv.get(b"b").unwrap().is_some(), "in the page cache");
        kv.set_fault(DiskFault::None);
        kv.sync().unwrap();
        kv.crash();
        assert!(kv.get(b"a").unwrap().is_none() && kv.get(b"b").unwrap().is_none(), "the failed sync's writes never reached the disk");
    }

    #[test]
    fn full_disks_refuse_writes_and_corrupt_ones_refuse_reads() {
        let kv = MemKv::new();
        put(&kv, "a", Durability::Sync).unwrap();
        kv.set_fault(DiskFault::Full);
        assert!(put(&kv, "b", Durability::Buffered).unwrap_err().to_string().contains("No space left"));
        assert!(kv.get(b"a").unwrap().is_some());
        kv.set_fault(DiskFault::CorruptRead);
        assert!(kv.get(b"a").unwrap_err().to_string().contains("checksum"));
        assert!(kv.range(b"", b"z", 10).is_err());
    }

    #[test]
    fn a_torn_log_keeps_a_prefix_of_the_unsynced_writes() {
        let kv = MemKv::new();
        for k in ["a", "b", "c"] {
            put(&kv, k, Durability::Buffered).unwrap();
        }
        kv.crash_keeping(2);
        assert!(kv.get(b"a").unwrap().is_some() && kv.get(b"b").unwrap().is_some());
        assert!(kv.get(b"c").unwrap().is_none());
    }
}
