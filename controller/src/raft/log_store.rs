//! The Raft log and vote, stored through the [`KvStore`] seam.
//!
//! Layout: `log/<index: u64 BE>` → JSON entry; `meta/vote`,
//! `meta/committed`, `meta/purged` → JSON. Every write is synced before
//! openraft is told it is durable: a vote or an acknowledged entry lost in a
//! crash would let two leaders be elected for one term.

// openraft's storage traits return its `StorageError`, which is large;
// the helpers here return it as those traits do.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tandem_storage::{Durability, KvStore, WriteBatch};

use super::{io_err, NodeId, StorageError, TypeConfig};

pub(crate) const LOG_PREFIX: &[u8] = b"log/";
pub(crate) const LOG_END: &[u8] = b"log0"; // '0' follows '/': the end of the log/ keyspace
pub(crate) const VOTE_KEY: &[u8] = b"meta/vote";
pub(crate) const COMMITTED_KEY: &[u8] = b"meta/committed";
pub(crate) const PURGED_KEY: &[u8] = b"meta/purged";

fn log_key(index: u64) -> Vec<u8> {
    let mut k = LOG_PREFIX.to_vec();
    k.extend_from_slice(&index.to_be_bytes());
    k
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Codec(String);

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, Codec> {
    serde_json::to_vec(v).map_err(|e| Codec(e.to_string()))
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, Codec> {
    serde_json::from_slice(b).map_err(|e| Codec(e.to_string()))
}

/// The log store. Clones share the same store, as openraft's log reader
/// must see what the writer appended.
#[derive(Clone)]
pub struct LogStore {
    kv: Arc<dyn KvStore>,
}

impl LogStore {
    pub fn new(kv: Arc<dyn KvStore>) -> Self {
        Self { kv }
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &[u8], subject: ErrorSubject<NodeId>) -> Result<Option<T>, StorageError> {
        match self.kv.get(key).map_err(|e| io_err(subject.clone(), ErrorVerb::Read, e))? {
            Some(b) => Ok(Some(decode(&b).map_err(|e| io_err(subject, ErrorVerb::Read, e))?)),
            None => Ok(None),
        }
    }

    /// Waits out what a slow disk adds to a synced write, before it is
    /// made (the simulation's fault; zero on a real disk, whose fsync is
    /// slow by itself). The Raft core waits with it, as it does on a
    /// blocking fsync.
    async fn slow_sync(&self) {
        let extra = self.kv.slow_sync();
        if !extra.is_zero() {
            tokio::time::sleep(extra).await;
        }
    }

    fn write_meta<T: Serialize>(&self, key: &[u8], v: &T, subject: ErrorSubject<NodeId>) -> Result<(), StorageError> {
        let mut b = WriteBatch::new();
        b.put(key, encode(v).map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?);
        self.kv.write(b, Durability::Sync).map_err(|e| io_err(subject, ErrorVerb::Write, e))
    }

    fn last_log_id(&self) -> Result<Option<LogId<NodeId>>, StorageError> {
        let last = self.kv.last_in_range(LOG_PREFIX, LOG_END).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        match last {
            Some((_, v)) => {
                let entry: Entry<TypeConfig> = decode(&v).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Ok(Some(*entry.get_log_id()))
            }
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(&mut self, range: RB) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => log_key(i.saturating_add(1)),
            Bound::Excluded(i) => log_key(*i),
            Bound::Unbounded => LOG_END.to_vec(),
        };
        let rows = self.kv.range(&log_key(start), &end, usize::MAX).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        rows.iter().map(|(_, v)| decode(v).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))).collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId<NodeId>> = self.read_meta(PURGED_KEY, ErrorSubject::Store)?;
        let last_log_id = self.last_log_id()?.or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.slow_sync().await;
        self.write_meta(VOTE_KEY, vote, ErrorSubject::Vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(VOTE_KEY, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError> {
        self.write_meta(COMMITTED_KEY, &committed, ErrorSubject::Store)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError> {
        Ok(self.read_meta::<Option<LogId<NodeId>>>(COMMITTED_KEY, ErrorSubject::Store)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::new();
        for entry in entries {
            let v = encode(&entry).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            batch.put(log_key(entry.get_log_id().index), v);
        }
        self.slow_sync().await;
        let result = self.kv.write(batch, Durability::Sync);
        // openraft learns durability only through the callback; report the
        // failure there too so it never waits on an entry that is not safe.
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(io_err(ErrorSubject::Logs, ErrorVerb::Write, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::new();
        batch.delete_range(log_key(log_id.index), LOG_END.to_vec());
        self.kv.write(batch, Durability::Sync).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::new();
        batch.put(PURGED_KEY, encode(&log_id).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?);
        batch.delete_range(log_key(0), log_key(log_id.index + 1));
        self.kv.write(batch, Durability::Sync).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}
