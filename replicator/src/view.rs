//! This site's view of the controller's agreed state (shard map, pair
//! modes), refreshed by polling, and the write lease that comes with it.
//!
//! The write lease: a replicator accepts a write only within [`LEASE`] of
//! sending a read that the Raft *leader* answered after confirming its
//! leadership with a quorum (a linearizable read, see
//! `ControlClient::leader_status`). A site cut off from the leader, or
//! talking only to a stale follower or a deposed leader, stops writing when
//! the lease runs out. The controller side relies on this: a failover
//! fences the shards, waits one full lease, and only then gives them to
//! another site, so no old lease can still be valid.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tandem_controller::client::ControlClient;
use tandem_controller::clock::{as_measured, Clock};
use tandem_controller::state::{ClusterState, ReplicationMode};
use tokio::time::Instant;

/// How often the view (and the lease) is refreshed: six times per lease,
/// so a slow answer or two do not let it lapse.
pub const REFRESH: Duration = Duration::from_millis(250);
/// How long a view stays good for writes without a refresh.
pub const LEASE: Duration = tandem_controller::plan::WRITE_LEASE;

/// A state as of a Raft log index, and when the lease it carries started.
struct Seen {
    state: ClusterState,
    applied_index: u64,
    /// When the last leader-confirmed read was *sent* (the lease runs from
    /// there, so time spent in flight counts against it); `None`: never.
    leased_at: Option<Instant>,
}

#[derive(Clone)]
pub struct ControllerView {
    inner: Arc<RwLock<Option<Seen>>>,
    /// This host's clock: the lease is measured at its rate.
    clock: Arc<dyn Clock>,
}

impl Default for ControllerView {
    fn default() -> Self {
        ControllerView::new(Arc::new(tandem_controller::clock::SystemClock))
    }
}

impl ControllerView {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        ControllerView { inner: Arc::default(), clock }
    }

    /// Time since `t` as this host's clock measures it (a slow clock lets
    /// a lease last longer in real time: the bound in `lease.rs`).
    fn since(&self, t: Instant) -> Duration {
        as_measured(t.elapsed(), self.clock.rate_ppm())
    }

    /// The latest state, however old (for reads and replication checks).
    pub fn latest(&self) -> Option<ClusterState> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).as_ref().map(|s| s.state.clone())
    }

    /// The state if the lease is valid, else `None`.
    pub fn leased(&self) -> Option<ClusterState> {
        let guard = self.inner.read().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().filter(|s| s.leased_at.is_some_and(|t| self.since(t) < LEASE)).map(|s| s.state.clone())
    }

    /// How much of the write lease is left (zero: none, writes refused).
    pub fn lease_remaining(&self) -> Duration {
        let guard = self.inner.read().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().and_then(|s| s.leased_at).map_or(Duration::ZERO, |t| LEASE.saturating_sub(self.since(t)))
    }

    /// Takes a state the leader answered after confirming its leadership,
    /// for a read sent at `sent_at`: it renews the lease.
    pub fn offer_leased(&self, state: ClusterState, applied_index: u64, sent_at: Instant) -> bool {
        let state_generation = state.generation;
        let taken = self.offer(state, applied_index);
        let mut guard = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(seen) = guard.as_mut() {
            // Even when an equal or newer state was already held (taken is
            // false), the leader vouched for it as of `sent_at`.
            if taken || (seen.state.generation, seen.applied_index) >= (state_generation, applied_index) {
                seen.leased_at = Some(seen.leased_at.map_or(sent_at, |t| t.max(sent_at)));
            }
        }
        taken
    }

    /// Takes a state read from a controller node, unless it is older (by
    /// Raft log index) than the one held: the view never goes back in time,
    /// even when a lagging follower answers. Write-path decisions rely on
    /// that (see `sync`).
    pub fn offer(&self, state: ClusterState, applied_index: u64) -> bool {
        let mut guard = self.inner.write().unwrap_or_else(|p| p.into_inner());
        // Ordered by (generation, log index): a DR activation restarts the
        // Raft log under a new generation, and that state is newer.
        if guard.as_ref().is_some_and(|s| (s.state.generation, s.applied_index) > (state.generation, applied_index)) {
            return false;
        }
        let leased_at = guard.as_ref().and_then(|s| s.leased_at);
        *guard = Some(Seen { state, applied_index, leased_at });
        true
    }

    /// Raft log index of the state held (0: none yet).
    pub fn applied_index(&self) -> u64 {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).as_ref().map_or(0, |s| s.applied_index)
    }

    /// Refreshes the view and the lease from the leader until the task is
    /// dropped. Without a leader, any controller's state still refreshes
    /// the view for reads and replication checks, but not the lease.
    ///
    /// A renewal is sent every [`REFRESH`] without waiting for the previous
    /// one: over a slow link to the leader (the DR site leading across a
    /// degraded link) an answer can take most of a lease, and waiting for it
    /// before asking again would let the lease lapse between answers. Each
    /// is bounded by the client's timeout (at most a lease: a later answer
    /// grants nothing), so only a few are ever in flight.
    pub async fn run(self, client: ControlClient, site: String) {
        let client = Arc::new(client);
        loop {
            let (view, client, site) = (self.clone(), client.clone(), site.clone());
            tokio::spawn(async move { view.renew(&client, &site).await });
            tokio::time::sleep(REFRESH).await;
        }
    }

    async fn renew(&self, client: &ControlClient, site: &str) {
        let sent_at = Instant::now();
        match client.lease_status(site).await {
            Ok(status) if status.cluster.bootstrapped => {
                self.offer_leased(status.cluster, status.raft.last_applied_index, sent_at);
            }
            Ok(_) => tracing::debug!("controller not bootstrapped yet"),
            Err(e) => {
                tracing::debug!(error = %e, "no leader-confirmed view; the write lease is not renewed");
                if let Ok((_, status)) = client.status().await {
                    if status.cluster.bootstrapped {
                        self.offer(status.cluster, status.raft.last_applied_index);
                    }
                }
            }
        }
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
        assert!(view.offer_leased(state(2), 10, Instant::now()));
        assert_eq!(view.leased().unwrap().generation, 2);
        assert!(!view.offer_leased(state(0), 9, Instant::now()), "nor under a lease");
        assert_eq!(view.leased().unwrap().generation, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn lease_runs_out_without_refresh() {
        let view = ControllerView::default();
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(500)).await;
        view.offer_leased(state(1), 1, sent);
        assert!(view.leased().is_some());
        // The lease counts from when the read was sent, not received.
        tokio::time::advance(LEASE - Duration::from_millis(499)).await;
        assert!(view.leased().is_none());
        assert!(view.latest().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn only_leader_confirmed_reads_grant_the_lease() {
        let view = ControllerView::default();
        view.offer(state(1), 5);
        assert!(view.leased().is_none(), "a plain read (maybe a stale follower) grants no lease");
        view.offer_leased(state(1), 5, Instant::now());
        assert!(view.leased().is_some());
        // A newer plain read updates the state but not the lease.
        tokio::time::advance(LEASE).await;
        view.offer(state(2), 6);
        assert!(view.leased().is_none());
        assert_eq!(view.latest().unwrap().generation, 2);
    }

    struct Slow;
    impl Clock for Slow {
        fn now_unix_ms(&self) -> u64 {
            0
        }
        fn rate_ppm(&self) -> u64 {
            900_000
        }
    }

    // A clock 10 % slow (the bound the leader's lease wait covers) makes
    // the lease last LEASE / 0.9 of real time, still inside LEASE_WAIT.
    #[tokio::test(start_paused = true)]
    async fn a_slow_clock_stretches_the_lease_within_the_leaders_wait() {
        let view = ControllerView::new(Arc::new(Slow));
        view.offer_leased(state(1), 1, Instant::now());
        tokio::time::advance(LEASE + Duration::from_millis(100)).await;
        assert!(view.leased().is_some(), "measured at 90 %, 1.6 s of real time is 1.44 s: still leased");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(view.leased().is_none(), "1.7 s real is 1.53 s measured: gone");
        assert!(LEASE.as_secs_f64() / 0.9 < tandem_controller::lease::LEASE_WAIT.as_secs_f64());
    }
}
