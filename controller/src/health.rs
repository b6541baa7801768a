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
}

/// The latest heartbeat per site, shared by a node's services.
#[derive(Clone, Default)]
pub struct HealthBoard(Arc<Mutex<BTreeMap<String, ReplicatorHealth>>>);

impl HealthBoard {
    pub fn record(&self, health: ReplicatorHealth) {
        let mut board = self.0.lock().unwrap_or_else(|p| p.into_inner());
        board.insert(health.site.clone(), health);
    }

    /// Every site's latest report, in site order.
    pub fn snapshot(&self) -> Vec<ReplicatorHealth> {
        let board = self.0.lock().unwrap_or_else(|p| p.into_inner());
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
