//! rocksdb [`KvStore`], used by the daemons.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{Direction, IteratorMode, Options, WriteOptions, DB};

use crate::{Durability, KeyValue, KvStore, StorageError, WriteBatch, WriteOp};

/// A handle onto one rocksdb database; clones share it.
#[derive(Clone)]
pub struct RocksKv {
    db: Arc<DB>,
}

fn backend(e: rocksdb::Error) -> StorageError {
    StorageError::Backend(e.into_string())
}

impl RocksKv {
    /// Opens (creating if missing) the database in directory `path`.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // The controller's data is small; cap background work so three
        // demo nodes on a 2-core machine do not compete for threads.
        opts.increase_parallelism(2);
        opts.set_keep_log_file_num(4);
        let db = DB::open(&opts, path).map_err(|e| StorageError::Open { path: path.display().to_string(), reason: e.into_string() })?;
        Ok(Self { db: Arc::new(db) })
    }
}

impl KvStore for RocksKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get(key).map_err(backend)
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), StorageError> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in batch.ops() {
            match op {
                WriteOp::Put { key, value } => wb.put(key, value),
                WriteOp::Delete { key } => wb.delete(key),
                WriteOp::DeleteRange { start, end } => {
                    if start < end {
                        wb.delete_range(start, end)
                    }
                }
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(durability == Durability::Sync);
        self.db.write_opt(wb, &wo).map_err(backend)
    }

    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KeyValue>, StorageError> {
        let mut out = Vec::new();
        for item in self.db.iterator(IteratorMode::From(start, Direction::Forward)) {
            let (k, v) = item.map_err(backend)?;
            if &k[..] >= end || out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn last_in_range(&self, start: &[u8], end: &[u8]) -> Result<Option<KeyValue>, StorageError> {
        // Seek to the last key below `end`: reverse iteration from `end`
        // starts at the greatest key <= end, so skip `end` itself.
        for item in self.db.iterator(IteratorMode::From(end, Direction::Reverse)) {
            let (k, v) = item.map_err(backend)?;
            if &k[..] >= end {
                continue;
            }
            if &k[..] < start {
                return Ok(None);
            }
            return Ok(Some((k.to_vec(), v.to_vec())));
        }
        Ok(None)
    }

    fn sync(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true).map_err(backend)
    }

    fn visit_snapshot(&self, visit: &mut crate::Visit<'_>) -> Result<(), StorageError> {
        let snapshot = self.db.snapshot();
        for item in snapshot.iterator(IteratorMode::Start) {
            let (k, v) = item.map_err(backend)?;
            visit(&k, &v).map_err(StorageError::Backend)?;
        }
        Ok(())
    }
}
