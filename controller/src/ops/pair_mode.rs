//! Replication mode of an in-city pair, set by the pair's replicators, one
//! direction at a time: site `x` changes only the mode of its own writes
//! towards its peer (`x -> y`), because only `x` knows whether it still
//! waits for `y` before acknowledging.
//!
//! - `sync` → `async`: a replicator whose peer did not confirm a write in
//!   time records its direction async *before* acknowledging the write, so
//!   the controller always knows whether the peer can be promoted without
//!   loss. The other direction is untouched: the peer's writes still wait.
//! - `async` → `sync-recover`: this site's backlog towards the peer is
//!   nearly drained; from now on it waits for the peer again on every write.
//! - `sync-recover` → `sync`: this site declares its direction clean
//!   (backlog empty, observed while it already waited for its peer). Every
//!   write it logged before it saw `sync-recover` is in that backlog, and
//!   every later one waited, so the peer holds all it acknowledged.
//!
//! Every change is a compare-and-set on the state id the proposer saw: a
//! proposal made before the latest change of its direction changes nothing.
//! A change of the *other* direction does not make it stale.

use serde::{Deserialize, Serialize};

use super::Applied;
use crate::state::{ClusterState, ReplicationMode};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairModeSpec {
    /// The proposing site (one of the pair): its direction changes.
    pub site: String,
    /// The other site of the pair.
    pub peer: String,
    /// The pair's state id the proposer based its decision on.
    pub expect_state_id: u64,
    pub mode: ReplicationMode,
    /// Going async: the first entry of the proposer's log the peer may lack.
    #[serde(default)]
    pub since_seq: u64,
}

pub(super) fn apply(state: &mut ClusterState, spec: &PairModeSpec) -> Applied {
    let what = format!("replication {} -> {}: {} (asked by {})", spec.site, spec.peer, spec.mode.as_str(), spec.site);
    let refuse = |why: String| Applied { what: what.clone(), result: format!("refused: {why}"), changed: false, refused: true };
    let Some(pair) = state.pairs.iter_mut().find(|p| p.joins(&spec.site, &spec.peer)) else {
        return refuse(format!("no in-city pair {} <-> {}", spec.site, spec.peer));
    };
    // The direction's own last change (the pair's, for a state written
    // before directions were recorded).
    let changed_at = pair.direction(&spec.site).map_or(pair.state_id, |d| d.state_id);
    if spec.expect_state_id < changed_at || spec.expect_state_id > pair.state_id {
        return refuse(format!(
            "state id is {}, not {}: {} -> {} changed meanwhile (now {})",
            pair.state_id,
            spec.expect_state_id,
            spec.site,
            spec.peer,
            pair.outgoing(&spec.site).as_str()
        ));
    }
    let current = pair.outgoing(&spec.site);
    if current == spec.mode {
        return Applied { what, result: format!("no change: already {}", spec.mode.as_str()), changed: false, refused: false };
    }
    match (current, spec.mode) {
        (_, ReplicationMode::Async) | (ReplicationMode::Async, ReplicationMode::SyncRecover) | (ReplicationMode::SyncRecover, ReplicationMode::Sync) => {
            pair.set_outgoing(&spec.site, spec.mode, spec.since_seq);
            Applied { what, result: format!("ok: state id {}; {}", pair.state_id, pair.describe()), changed: true, refused: false }
        }
        (from, to) => refuse(format!("{} cannot go to {} directly", from.as_str(), to.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ReplicationPair;

    fn state() -> ClusterState {
        ClusterState { bootstrapped: true, pairs: vec![ReplicationPair::new_sync("a", "b")], ..Default::default() }
    }

    fn spec(site: &str, expect: u64, mode: ReplicationMode) -> PairModeSpec {
        let peer = if site == "a" { "b" } else { "a" };
        PairModeSpec { site: site.into(), peer: peer.into(), expect_state_id: expect, mode, since_seq: 7 }
    }

    #[test]
    fn async_changes_only_the_proposers_direction() {
        let mut s = state();
        let applied = apply(&mut s, &spec("b", 1, ReplicationMode::Async));
        assert!(applied.changed, "{}", applied.result);
        let p = &s.pairs[0];
        assert_eq!(p.outgoing("b"), ReplicationMode::Async);
        assert_eq!(p.outgoing("a"), ReplicationMode::Sync, "a's writes still wait for b");
        assert_eq!(p.mode, ReplicationMode::Async, "the pair as a whole is async");
        assert_eq!(p.state_id, 2);
        assert_eq!(p.direction("b").unwrap().since_seq, 7);
        assert!(applied.result.contains("b -> a async since b's entry 7"), "{}", applied.result);
    }

    #[test]
    fn a_stale_proposal_for_the_same_direction_is_refused() {
        let mut s = state();
        assert!(apply(&mut s, &spec("a", 1, ReplicationMode::Async)).changed);
        assert!(apply(&mut s, &spec("a", 2, ReplicationMode::SyncRecover)).changed);
        // Based on state id 1, before a's direction went async: stale.
        let second = apply(&mut s, &spec("a", 1, ReplicationMode::Async));
        assert!(!second.changed);
        assert!(second.result.contains("state id is 3"), "{}", second.result);
        assert_eq!(s.pairs[0].outgoing("a"), ReplicationMode::SyncRecover);
    }

    // Both sites lose each other at once: each records its own direction,
    // and the second is not refused for the first's change.
    #[test]
    fn both_directions_go_async_from_the_same_view() {
        let mut s = state();
        assert!(apply(&mut s, &spec("a", 1, ReplicationMode::Async)).changed);
        let b = apply(&mut s, &spec("b", 1, ReplicationMode::Async));
        assert!(b.changed, "{}", b.result);
        assert_eq!(s.pairs[0].state_id, 3);
        assert_eq!((s.pairs[0].outgoing("a"), s.pairs[0].outgoing("b")), (ReplicationMode::Async, ReplicationMode::Async));
    }

    #[test]
    fn each_direction_recovers_on_its_own() {
        let mut s = state();
        apply(&mut s, &spec("a", 1, ReplicationMode::Async));
        apply(&mut s, &spec("b", 2, ReplicationMode::Async));
        assert!(apply(&mut s, &spec("a", 3, ReplicationMode::SyncRecover)).changed);
        assert_eq!(s.pairs[0].mode, ReplicationMode::Async, "b -> a is still async");
        assert!(apply(&mut s, &spec("a", 4, ReplicationMode::Sync)).changed);
        assert_eq!(s.pairs[0].outgoing("a"), ReplicationMode::Sync);
        assert_eq!(s.pairs[0].direction("a").unwrap().since_seq, 0);
        assert_eq!(s.pairs[0].mode, ReplicationMode::Async);
        apply(&mut s, &spec("b", 5, ReplicationMode::SyncRecover));
        assert_eq!(s.pairs[0].mode, ReplicationMode::SyncRecover);
        apply(&mut s, &spec("b", 6, ReplicationMode::Sync));
        assert_eq!(s.pairs[0].mode, ReplicationMode::Sync);
        assert_eq!(s.pairs[0].state_id, 7);
    }

    #[test]
    fn async_to_sync_directly_is_refused() {
        let mut s = state();
        apply(&mut s, &spec("a", 1, ReplicationMode::Async));
        let r = apply(&mut s, &spec("a", 2, ReplicationMode::Sync));
        assert!(!r.changed);
        assert_eq!(s.pairs[0].outgoing("a"), ReplicationMode::Async);
    }

    #[test]
    fn unknown_pair_is_refused() {
        let mut s = state();
        let applied = apply(&mut s, &PairModeSpec { site: "a".into(), peer: "c".into(), expect_state_id: 1, mode: ReplicationMode::Async, since_seq: 0 });
        assert!(!applied.changed);
        assert_eq!(s.pairs[0].state_id, 1);
    }

    // A state written before directions were recorded: both directions
    // have the pair's mode, and the first change records them.
    #[test]
    fn a_pair_without_directions_loads_and_changes() {
        let old = r#"{"site_a":"a","site_b":"b","mode":"async","state_id":4,"clean":["a"]}"#;
        let pair: ReplicationPair = serde_json::from_str(old).unwrap();
        assert_eq!((pair.outgoing("a"), pair.outgoing("b")), (ReplicationMode::Async, ReplicationMode::Async));
        let mut s = ClusterState { pairs: vec![pair], ..Default::default() };
        assert!(!apply(&mut s, &spec("a", 3, ReplicationMode::SyncRecover)).changed, "older than the pair's last change");
        assert!(apply(&mut s, &spec("a", 4, ReplicationMode::SyncRecover)).changed);
        assert_eq!(s.pairs[0].outgoing("a"), ReplicationMode::SyncRecover);
        assert_eq!(s.pairs[0].outgoing("b"), ReplicationMode::Async);
        assert_eq!(s.pairs[0].directions.len(), 2);
    }
}
