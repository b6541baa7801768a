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
        let mut disk = self.lock();
        disk.unsynced.clear();
        disk.visible = disk.durable.clone();
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
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock().visible.get(key).cloned())
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), StorageError> {
        let mut disk = self.lock();
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
        Ok(disk.visible.range::<[u8], _>((Bound::Included(start), Bound::Excluded(end))).take(limit).map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn last_in_range(&self, start: &[u8], end: &[u8]) -> Result<Option<KeyValue>, StorageError> {
        if start >= end {
            return Ok(None);
        }
        let disk = self.lock();
        Ok(disk.visible.range::<[u8], _>((Bound::Included(start), Bound::Excluded(end))).next_back().map(|(k, v)| (k.clone(), v.clone())))
    }

    fn sync(&self) -> Result<(), StorageError> {
        flush(&mut self.lock());
        Ok(())
    }
}
