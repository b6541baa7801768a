//! The storage seam: an ordered key-value store with explicit durability.
//!
//! Everything tandem persists locally (the Raft log, vote and state machine
//! today; metadata, change logs and cursors later) goes through [`KvStore`].
//! Two backends sit beside the trait:
//!
//! - [`RocksKv`]: rocksdb, used by the daemons;
//! - [`MemKv`]: in memory, used by the simulation. It models a disk with a
//!   volatile write cache: a write made with [`Durability::Buffered`] is
//!   visible at once but is lost by [`MemKv::crash`] unless a later
//!   [`Durability::Sync`] write (or [`KvStore::sync`]) flushed it, exactly as
//!   rocksdb loses unsynced WAL writes on power loss.
//!
//! This crate never interprets keys or values; callers own their layout.

mod error;
mod mem;
mod rocks;

pub use error::StorageError;
pub use mem::{DiskFault, MemKv};
pub use rocks::RocksKv;

/// How durable a write must be before [`KvStore::write`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// On stable storage (WAL fsynced) before returning. Also makes every
    /// earlier buffered write durable, as an fsync of the WAL does.
    Sync,
    /// Visible at once, may be lost if the host crashes before the next sync.
    Buffered,
}

/// One operation of an atomic [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Deletes every key in `[start, end)`.
    DeleteRange {
        start: Vec<u8>,
        end: Vec<u8>,
    },
}

/// Writes applied all together or not at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(WriteOp::Put { key: key.into(), value: value.into() });
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push(WriteOp::Delete { key: key.into() });
    }

    pub fn delete_range(&mut self, start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) {
        self.ops.push(WriteOp::DeleteRange { start: start.into(), end: end.into() });
    }

    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// Appends `other`'s operations after these.
    pub fn extend(&mut self, other: WriteBatch) {
        self.ops.extend(other.ops);
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A key with its value, as returned by range reads.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// An ordered key-value store. Keys compare as byte strings.
///
/// Implementations are cheap to clone handles onto one store and are safe to
/// share between tasks. Calls are synchronous: they are short, and the
/// controller's write rate is low enough that a blocking fsync on a runtime
/// worker is cheaper than a hop to a blocking pool.
pub trait KvStore: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Applies `batch` atomically with the requested durability.
    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), StorageError>;

    /// Keys in `[start, end)` in ascending order, at most `limit` of them.
    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KeyValue>, StorageError>;

    /// The greatest key in `[start, end)`, if any.
    fn last_in_range(&self, start: &[u8], end: &[u8]) -> Result<Option<KeyValue>, StorageError>;

    /// Makes every earlier write durable.
    fn sync(&self) -> Result<(), StorageError>;

    /// How much longer than the call itself a synced write takes on this
    /// disk: a slow disk in the simulation, where the caller waits it out
    /// in simulated time after each synced write (holding whatever it
    /// holds, as a thread blocked in fsync does). Real stores return zero:
    /// their slowness is real.
    fn slow_sync(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Calls `visit` with every key and value as of one moment, in key
    /// order: a consistent snapshot (writes made meanwhile are not seen,
    /// and are not held up). Stops at `visit`'s first error.
    fn visit_snapshot(&self, visit: &mut Visit<'_>) -> Result<(), StorageError>;
}

/// What [`KvStore::visit_snapshot`] calls with each key and value.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), String> + 'a;

#[cfg(test)]
mod conformance;
