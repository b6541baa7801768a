//! The leader's book of the write leases it granted, and the rule every
//! shard move obeys: **no move commits while the old owner may still hold a
//! lease that lets it write those shards.**
//!
//! A replicator may write a shard only within [`WRITE_LEASE`] (its own
//! clock) of *sending* a read that the Raft leader answered after
//! confirming its leadership with a quorum (`view.rs` in the replicator),
//! and only while the state that read returned names it owner and the
//! shard is not being drained. So once a drain (log index `D`) has
//! committed, the old owner `S` can only write the drained shards under a
//! lease granted with a state older than `D`. Such a lease was granted
//! either by this leader, which records every grant here with the state
//! index it answered, or by an earlier leader, before this one was elected
//! (once a quorum has voted in a newer term, an older leader can no longer
//! confirm its leadership). Hence every such lease ran out by
//!
//! ```text
//! max(leader_since, last grant to S with index < D) + LEASE_WAIT
//! ```
//!
//! on this node's clock, where `LEASE_WAIT = WRITE_LEASE * (1 + ρ) / (1 - ρ)`
//! covers clocks whose rates differ from real time by up to ρ = 10 % (NTP
//! keeps real servers within 0.01 %): the replicator's lease lasts at most
//! `WRITE_LEASE / (1 - ρ)` of real time, and this node's wait at least
//! `LEASE_WAIT / (1 + ρ)`. A lease read is sent before it is answered, so
//! counting from the answer only adds margin. The move may also commit as
//! soon as `S` itself reports a view at least as new as `D` (it then
//! checks every write against a state that has the drain): that is how a
//! planned switchover, whose source is alive, moves without a lease wait.
//!
//! Because the wait runs from the last grant, not from the fence, it
//! overlaps failure detection: a site that died 2 s ago has no lease left
//! by the time it is declared down.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// How long a replicator's write lease lasts after it sent a
/// leader-confirmed read (the replicator's `view::LEASE` is this).
pub const WRITE_LEASE: Duration = Duration::from_millis(1500);

/// The clock-rate bound ρ the lease argument assumes, in percent.
pub const CLOCK_RATE_BOUND_PCT: u32 = 10;

/// What the leader waits after a grant before the lease has surely run out:
/// `WRITE_LEASE * (1 + ρ) / (1 - ρ)`, rounded up to a millisecond.
pub const LEASE_WAIT: Duration =
    Duration::from_millis((WRITE_LEASE.as_millis() as u64 * (100 + CLOCK_RATE_BOUND_PCT as u64)).div_ceil(100 - CLOCK_RATE_BOUND_PCT as u64));

/// A grant recorded for an unknown caller (an older replicator that does
/// not say which site it is) counts for every site.
pub const ANY_SITE: &str = "*";

#[derive(Clone, Copy, Debug)]
struct Grant {
    at: Instant,
    /// Raft log index of the state the answer carried.
    index: u64,
}

#[derive(Default)]
struct Book {
    term: u64,
    /// When this node was first seen leading `term`; `None`: not leading.
    leader_since: Option<Instant>,
    /// Per site, the grants of the last [`LEASE_WAIT`], oldest first.
    grants: BTreeMap<String, VecDeque<Grant>>,
}

/// Shared by a node's control service (which grants and moves) and its
/// detector (which keeps `leading` up to date).
#[derive(Clone, Default)]
pub struct LeaseBook {
    book: Arc<Mutex<Book>>,
}

impl LeaseBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This node leads `term` (called whenever that is observed; the first
    /// call of a term starts it, so a late call only lengthens waits).
    pub fn leading(&self, term: u64) {
        let mut b = self.lock();
        if b.leader_since.is_none() || b.term != term {
            b.term = term;
            b.leader_since = Some(Instant::now());
            b.grants.clear();
        }
    }

    /// This node does not lead (any more).
    pub fn not_leading(&self) {
        let mut b = self.lock();
        b.leader_since = None;
        b.grants.clear();
    }

    /// Records a lease granted to `site` (or [`ANY_SITE`]) with the state
    /// at `index`, as this node (leading `term`) is about to answer.
    pub fn granted(&self, term: u64, site: &str, index: u64) {
        self.leading(term);
        let mut b = self.lock();
        let now = Instant::now();
        let q = b.grants.entry(site.to_string()).or_default();
        while q.front().is_some_and(|g| now.duration_since(g.at) > LEASE_WAIT) {
            q.pop_front();
        }
        q.push_back(Grant { at: now, index });
    }

    /// When every lease `site` may hold for a state older than `index` has
    /// surely run out, on this node's clock; `None` when not leading.
    pub fn expiry(&self, site: &str, index: u64) -> Option<Instant> {
        let b = self.lock();
        let since = b.leader_since?;
        let last = [site, ANY_SITE].iter().filter_map(|s| b.grants.get(*s)).flat_map(|q| q.iter().filter(|g| g.index < index).map(|g| g.at)).max();
        Some(last.map_or(since, |l| l.max(since)) + LEASE_WAIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_covers_the_clock_rate_bound() {
        // (1 + 0.1) / (1 - 0.1) = 1.222...
        assert_eq!(LEASE_WAIT, Duration::from_millis(1834));
        assert!(LEASE_WAIT.as_secs_f64() >= WRITE_LEASE.as_secs_f64() * 1.1 / 0.9);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_leader_waits_a_full_lease_from_its_election() {
        let book = LeaseBook::default();
        assert_eq!(book.expiry("a", 10), None, "not leading: no answer");
        book.leading(3);
        let t0 = Instant::now();
        assert_eq!(book.expiry("a", 10), Some(t0 + LEASE_WAIT));
        // Seen leading the same term again later: the start stays.
        tokio::time::advance(Duration::from_millis(700)).await;
        book.leading(3);
        assert_eq!(book.expiry("a", 10), Some(t0 + LEASE_WAIT));
        // A new term starts again.
        book.leading(4);
        assert_eq!(book.expiry("a", 10), Some(t0 + Duration::from_millis(700) + LEASE_WAIT));
    }

    #[tokio::test(start_paused = true)]
    async fn only_grants_of_states_older_than_the_drain_count() {
        let book = LeaseBook::default();
        book.leading(1);
        tokio::time::advance(Duration::from_secs(5)).await;
        book.granted(1, "a", 9);
        let before_drain = Instant::now();
        tokio::time::advance(Duration::from_millis(300)).await;
        // This grant carried the drain (index 10): a refuses those shards.
        book.granted(1, "a", 10);
        assert_eq!(book.expiry("a", 10), Some(before_drain + LEASE_WAIT));
        // Without a drain (a plain move), every grant counts.
        assert_eq!(book.expiry("a", u64::MAX), Some(before_drain + Duration::from_millis(300) + LEASE_WAIT));
        // b's grants are b's.
        book.granted(1, "b", 3);
        assert_eq!(book.expiry("a", 10), Some(before_drain + LEASE_WAIT));
    }

    #[tokio::test(start_paused = true)]
    async fn a_grant_to_an_unknown_caller_counts_for_every_site() {
        let book = LeaseBook::default();
        book.leading(1);
        tokio::time::advance(Duration::from_secs(5)).await;
        book.granted(1, ANY_SITE, 4);
        assert_eq!(book.expiry("a", 10), Some(Instant::now() + LEASE_WAIT));
        book.not_leading();
        assert_eq!(book.expiry("a", 10), None);
    }
}
