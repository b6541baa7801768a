//! Replicator heartbeats: each replicator reports its lag per link to every
//! controller node, which keeps the latest report per site in memory and
//! shows it in Status. Not replicated through Raft: it is an observation,
//! refreshed every second, not a decision.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Outgoing replication lag from one site towards one peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkLag {
    pub peer: String,
    /// Change-log entries written here and not yet confirmed by the peer.
    pub entries: u64,
    /// Their size (metadata and ciphertext).
    pub bytes: u64,
    /// Age of the oldest of them.
    pub seconds: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicatorHealth {
    pub site: String,
    pub addr: String,
    pub log_head: u64,
    pub links: Vec<LinkLag>,
    /// When the controller node received it (its own clock).
    pub received_at_unix_ms: u64,
    /// Raft log index of the replicator's controller view when `log_head`
    /// was read: every later write there is checked against a view at
    /// least this new (what a switchover waits for after a drain).
    #[serde(default)]
    pub view_index: u64,
    /// The build the replicator runs ("0.1.0+<commit>"; "" from an older build).
    #[serde(default)]
    pub version: String,
    /// Why the site's blob store fails ("": it answers), from its newest
    /// request or the idle probe.
    #[serde(default)]
    pub blob_store_error: String,
    /// What the replicator, restored from a backup, waits for before it
    /// serves ("": it serves).
    #[serde(default)]
    pub restoring: String,
    /// Why the site's key provider fails ("": it answers): it cannot wrap
    /// a new file's key, so it takes no writes.
    #[serde(default)]
    pub keys_error: String,
}

const PERSISTED_KEY: &[u8] = b"health/board";

/// The latest heartbeat per site, shared by a node's services.
#[derive(Clone, Default)]
pub struct HealthBoard {
    board: Arc<Mutex<BTreeMap<String, ReplicatorHealth>>>,
    /// Where the board is kept on every report, so that after a disaster
    /// the surviving site can still tell how far behind it was (the DR
    /// activation's loss estimate). Buffered writes: they survive a crash
    /// of the process, not of the host.
    store: Option<Arc<dyn tandem_storage::KvStore>>,
    /// The leader's detector's verdict per site (see
    /// `NodeStatus::auto_failover`): what this node concludes from the board.
    auto: Arc<Mutex<BTreeMap<String, String>>>,
}

impl HealthBoard {
    /// A board kept in `store`, starting from what it last kept there: a
    /// restarted controller then knows when it last heard each site (a
    /// site it heard before it stopped and not since is judged on that, not
    /// as never heard).
    pub fn kept_in(store: Arc<dyn tandem_storage::KvStore>) -> Self {
        let kept: BTreeMap<String, ReplicatorHealth> = Self::load(store.as_ref()).into_iter().map(|h| (h.site.clone(), h)).collect();
        Self { board: Arc::new(Mutex::new(kept)), store: Some(store), auto: Arc::default() }
    }

    /// Per site: "" if an automatic failover would go ahead, else why not.
    pub fn set_auto_failover(&self, verdicts: BTreeMap<String, String>) {
        *self.auto.lock().unwrap_or_else(|p| p.into_inner()) = verdicts;
    }

    pub fn auto_failover(&self) -> BTreeMap<String, String> {
        self.auto.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn record(&self, health: ReplicatorHealth) {
        let mut board = self.board.lock().unwrap_or_else(|p| p.into_inner());
        board.insert(health.site.clone(), health);
        if let (Some(store), Ok(json)) = (&self.store, serde_json::to_vec(&*board)) {
            let mut batch = tandem_storage::WriteBatch::new();
            batch.put(PERSISTED_KEY, json);
            if let Err(e) = store.write(batch, tandem_storage::Durability::Buffered) {
                tracing::debug!(error = %e, "cannot keep the heartbeat board");
            }
        }
    }

    /// The board as last kept in `kv` by [`HealthBoard::persist`].
    pub fn load(kv: &dyn tandem_storage::KvStore) -> Vec<ReplicatorHealth> {
        kv.get(PERSISTED_KEY)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<BTreeMap<String, ReplicatorHealth>>(&b).ok())
            .map(|m| m.into_values().collect())
            .unwrap_or_default()
    }

    /// Every site's latest report, in site order.
    pub fn snapshot(&self) -> Vec<ReplicatorHealth> {
        let board = self.board.lock().unwrap_or_else(|p| p.into_inner());
        board.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_latest_report_per_site() {
        let board = HealthBoard::default();
        board.record(ReplicatorHealth { site: "b".into(), log_head: 1, ..Default::default() });
        board.record(ReplicatorHealth { site: "a".into(), log_head: 5, ..Default::default() });
        board.record(ReplicatorHealth { site: "b".into(), log_head: 9, ..Default::default() });
        let snap = board.snapshot();
        assert_eq!(snap.iter().map(|h| (h.site.as_str(), h.log_head)).collect::<Vec<_>>(), vec![("a", 5), ("b", 9)]);
    }
}
