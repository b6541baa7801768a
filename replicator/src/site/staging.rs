//! Staged copies: ciphertext an in-city peer streamed here while it stored
//! it (see [`crate::stage`]), kept until the log entry that names it
//! claims it, and this site's own copies staged at its peers.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The peer's id for a staged copy, once it confirmed it (`None`: it did not).
pub type StagedId = tokio::sync::oneshot::Receiver<Option<String>>;

/// A staged blob waiting for its log entry.
#[derive(Clone, Debug)]
pub struct Staged {
    /// Its name in the blob store (under `.staging/`).
    pub name: String,
    pub origin: String,
    /// The path it will have.
    pub blob: String,
    pub len: u64,
    pub plaintext_len: u64,
    pub key_id: [u8; tandem_crypto::KEY_ID_LEN],
    /// As computed by the sender.
    pub blake3: String,
    pub at: Instant,
}

/// The staged blobs of a receiver, by id.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<BTreeMap<String, Staged>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Staged>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes and returns the staged blob `id`.
    pub fn take(&self, id: &str) -> Option<Staged> {
        self.lock().remove(id)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn insert(&self, id: String, staged: Staged) {
        self.lock().insert(id, staged);
    }

    /// Removes the entries older than `ttl`.
    pub(crate) fn expired(&self, ttl: Duration) -> Vec<Staged> {
        let mut map = self.lock();
        let old: Vec<String> = map.iter().filter(|(_, s)| s.at.elapsed() >= ttl).map(|(k, _)| k.clone()).collect();
        old.iter().filter_map(|k| map.remove(k)).collect()
    }
}
