//! This site's view of the controller's agreed state (shard map, pair
//! modes), refreshed by polling, and the write lease that comes with it.
//!
//! A replicator accepts a write only while its view is fresh: if it cannot
//! reach any controller for [`LEASE`], it stops accepting writes, so a site
//! cut off from the controllers cannot keep writing shards that may have
//! been given to another site. (Issue 4 replaces this with explicit,
//! Raft-granted leases; the rule "no fresh view, no write" stays.)

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tandem_controller::client::ControlClient;
use tandem_controller::state::{ClusterState, ReplicationMode, ReplicationPair};
use tokio::time::Instant;

/// How often the view is refreshed.
pub const REFRESH: Duration = Duration::from_millis(300);
/// How long a view stays good for writes without a refresh.
pub const LEASE: Duration = Duration::from_secs(3);

/// A state as of a Raft log index, and when it was fetched.
struct Seen {
    state: ClusterState,
    applied_index: u64,
    at: Instant,
}

#[derive(Clone)]
pub struct ControllerView {
    inner: Arc<RwLock<Option<Seen>>>,
    changed: Arc<tokio::sync::Notify>,
}

impl Default for ControllerView {
    fn default() -> Self {
        Self { inner: Arc::new(RwLock::new(None)), changed: Arc::new(tokio::sync::Notify::new()) }
    }
}

impl ControllerView {
    /// The latest state, however old (for reads and replication checks).
    pub fn latest(&self) -> Option<ClusterState> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).as_ref().map(|s| s.state.clone())
    }

    /// The state if it was refreshed within the lease, else `None`.
    pub fn leased(&self) -> Option<ClusterState> {
        let guard = self.inner.read().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().filter(|s| s.at.elapsed() < LEASE).map(|s| s.state.clone())
    }

    /// Takes a state read from a controller node, unless it is older (by
    /// Raft log index) than the one held: the view never goes back in time,
    /// even when a lagging follower answers. Write-path decisions rely on
    /// that (see `sync`).
    pub fn offer(&self, state: ClusterState, applied_index: u64) -> bool {
        let mut guard = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_some_and(|s| s.applied_index > applied_index) {
            return false;
        }
        *guard = Some(Seen { state, applied_index, at: Instant::now() });
        drop(guard);
        self.changed.notify_waiters();
        true
    }

    /// Raft log index of the state held (0: none yet).
    pub fn applied_index(&self) -> u64 {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).as_ref().map_or(0, |s| s.applied_index)
    }

    /// Waits for the next refresh (bounded by `max`).
    pub async fn wait_refresh(&self, max: Duration) {
        let _ = tokio::time::timeout(max, self.changed.notified()).await;
    }

    /// Refreshes the view from the controllers until the task is dropped.
    pub async fn run(self, client: ControlClient) {
        loop {
            match client.status().await {
                Ok((_, status)) if status.cluster.bootstrapped => {
                    self.offer(status.cluster, status.raft.last_applied_index);
                }
                Ok(_) => tracing::debug!("controller not bootstrapped yet"),
                Err(e) => tracing::debug!(error = %e, "cannot refresh controller view"),
            }
            tokio::time::sleep(REFRESH).await;
        }
    }
}

/// The in-city pair `site` belongs to, if any.
pub fn pair_of<'a>(state: &'a ClusterState, site: &str) -> Option<&'a ReplicationPair> {
    state.pairs.iter().find(|p| p.site_a == site || p.site_b == site)
}

/// The other site of a pair.
pub fn partner<'a>(pair: &'a ReplicationPair, site: &str) -> &'a str {
    if pair.site_a == site {
        &pair.site_b
    } else {
        &pair.site_a
    }
}

/// Whether writes must wait for the in-city peer in this mode.
pub fn waits_for_peer(mode: ReplicationMode) -> bool {
    matches!(mode, ReplicationMode::Sync | ReplicationMode::SyncRecover)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(generation: u64) -> ClusterState {
        ClusterState { bootstrapped: true, generation, ..Default::default() }
    }

    #[tokio::test]
    async fn never_goes_back_in_time() {
        let view = ControllerView::default();
        assert!(view.leased().is_none());
        assert!(view.offer(state(1), 10));
        assert!(!view.offer(state(0), 9), "an older state must be ignored");
        assert_eq!(view.latest().unwrap().generation, 1);
        assert!(view.offer(state(2), 10));
        assert_eq!(view.leased().unwrap().generation, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn lease_runs_out_without_refresh() {
        let view = ControllerView::default();
        view.offer(state(1), 1);
        assert!(view.leased().is_some());
        tokio::time::advance(LEASE + Duration::from_millis(1)).await;
        assert!(view.leased().is_none());
        assert!(view.latest().is_some());
    }
}
