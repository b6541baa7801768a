//! Replication mode of an in-city pair, set by the pair's replicators.
//!
//! - `sync` → `async`: a replicator whose peer did not confirm a write in
//!   time records this *before* acknowledging the write, so the controller
//!   always knows whether the peer can be promoted without loss.
//! - `async` → `sync-recover`: the backlogs are nearly drained; from now on
//!   both sites wait for the peer again on every write.
//! - `sync-recover` → `sync`: each site declares its own outgoing direction
//!   clean (backlog empty, observed while it already waited for its peer) by
//!   asking for `sync` under the current state id. The mode becomes `sync`
//!   only when *both* have, so no write acknowledged by a site that had not
//!   yet seen `sync-recover` can be missing from its peer.
//!
//! Every change is a compare-and-set on the pair's state id: replicators
//! racing on the same observation produce one change, not two.

use serde::{Deserialize, Serialize};

use super::Applied;
use crate::state::{ClusterState, ReplicationMode};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairModeSpec {
    /// The proposing site (one of the pair).
    pub site: String,
    /// The other site of the pair.
    pub peer: String,
    /// The state id the proposer based its decision on.
    pub expect_state_id: u64,
    pub mode: ReplicationMode,
}

pub(super) fn apply(state: &mut ClusterState, spec: &PairModeSpec) -> Applied {
    let what = format!("replication {} <-> {}: {} (asked by {})", spec.site, spec.peer, spec.mode.as_str(), spec.site);
    let refuse = |why: String| Applied { what: what.clone(), result: format!("refused: {why}"), changed: false };
    let Some(pair) = state
        .pairs
        .iter_mut()
        .find(|p| (p.site_a == spec.site && p.site_b == spec.peer) || (p.site_a == spec.peer && p.site_b == spec.site))
    else {
        return refuse(format!("no in-city pair {} <-> {}", spec.site, spec.peer));
    };
    if pair.state_id != spec.expect_state_id {
        return refuse(format!(
            "state id is {}, not {}: the mode changed meanwhile (now {})",
            pair.state_id,
            spec.expect_state_id,
            pair.mode.as_str()
        ));
    }
    if pair.mode == spec.mode {
        return Applied { what, result: format!("no change: already {}", spec.mode.as_str()), changed: false };
    }
    match (pair.mode, spec.mode) {
        (_, ReplicationMode::Async) | (ReplicationMode::Async, ReplicationMode::SyncRecover) => {
            pair.mode = spec.mode;
            pair.state_id += 1;
            pair.clean.clear();
            Applied { what, result: format!("ok: state id {}", pair.state_id), changed: true }
        }
        (ReplicationMode::SyncRecover, ReplicationMode::Sync) => {
            if !pair.clean.contains(&spec.site) {
                pair.clean.push(spec.site.clone());
                pair.clean.sort();
            }
            let both = pair.clean.contains(&pair.site_a) && pair.clean.contains(&pair.site_b);
            if both {
                pair.mode = ReplicationMode::Sync;
                pair.state_id += 1;
                pair.clean.clear();
                Applied { what, result: format!("ok: both directions clean, sync (state id {})", pair.state_id), changed: true }
            } else {
                Applied { what, result: format!("ok: {} is clean; waiting for {}", spec.site, spec.peer), changed: true }
            }
        }
        (from, to) => refuse(format!("{} cannot go to {} directly", from.as_str(), to.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ReplicationPair;

    fn state() -> ClusterState {
        ClusterState {
            bootstrapped: true,
            pairs: vec![ReplicationPair {
                site_a: "a".into(),
                site_b: "b".into(),
                mode: ReplicationMode::Sync,
                state_id: 1,
                clean: vec![],
            }],
            ..Default::default()
        }
    }

    fn spec(site: &str, expect: u64, mode: ReplicationMode) -> PairModeSpec {
        let peer = if site == "a" { "b" } else { "a" };
        PairModeSpec { site: site.into(), peer: peer.into(), expect_state_id: expect, mode }
    }

    #[test]
    fn async_bumps_state_id_from_either_site() {
        let mut s = state();
        let applied = apply(&mut s, &spec("b", 1, ReplicationMode::Async));
        assert!(applied.changed, "{}", applied.result);
        assert_eq!(s.pairs[0].mode, ReplicationMode::Async);
        assert_eq!(s.pairs[0].state_id, 2);
    }

    #[test]
    fn stale_state_id_is_refused() {
        let mut s = state();
        assert!(apply(&mut s, &spec("a", 1, ReplicationMode::Async)).changed);
        // The other site saw state id 1 too: its change must not apply.
        let second = apply(&mut s, &spec("b", 1, ReplicationMode::Async));
        assert!(!second.changed);
        assert!(second.result.contains("state id is 2"), "{}", second.result);
        assert_eq!(s.pairs[0].state_id, 2);
    }

    // The full recovery: sync needs both sites to declare themselves clean.
    #[test]
    fn sync_needs_both_directions_clean() {
        let mut s = state();
        apply(&mut s, &spec("a", 1, ReplicationMode::Async));
        assert!(apply(&mut s, &spec("a", 2, ReplicationMode::SyncRecover)).changed);
        assert_eq!(s.pairs[0].mode, ReplicationMode::SyncRecover);
        let half = apply(&mut s, &spec("a", 3, ReplicationMode::Sync));
        assert_eq!(s.pairs[0].mode, ReplicationMode::SyncRecover, "{}", half.result);
        assert_eq!(s.pairs[0].state_id, 3);
        let again = apply(&mut s, &spec("a", 3, ReplicationMode::Sync));
        assert_eq!(s.pairs[0].mode, ReplicationMode::SyncRecover, "{}", again.result);
        apply(&mut s, &spec("b", 3, ReplicationMode::Sync));
        assert_eq!(s.pairs[0].mode, ReplicationMode::Sync);
        assert_eq!(s.pairs[0].state_id, 4);
        assert!(s.pairs[0].clean.is_empty());
    }

    // A fall back to async forgets who was clean.
    #[test]
    fn async_clears_clean_marks() {
        let mut s = state();
        apply(&mut s, &spec("a", 1, ReplicationMode::Async));
        apply(&mut s, &spec("a", 2, ReplicationMode::SyncRecover));
        apply(&mut s, &spec("a", 3, ReplicationMode::Sync));
        apply(&mut s, &spec("b", 3, ReplicationMode::Async));
        apply(&mut s, &spec("b", 4, ReplicationMode::SyncRecover));
        apply(&mut s, &spec("b", 5, ReplicationMode::Sync));
        assert_eq!(s.pairs[0].mode, ReplicationMode::SyncRecover);
    }

    #[test]
    fn async_to_sync_directly_is_refused() {
        let mut s = state();
        apply(&mut s, &spec("a", 1, ReplicationMode::Async));
        let r = apply(&mut s, &spec("a", 2, ReplicationMode::Sync));
        assert!(!r.changed);
        assert_eq!(s.pairs[0].mode, ReplicationMode::Async);
    }

    #[test]
    fn unknown_pair_is_refused() {
        let mut s = state();
        let applied = apply(
            &mut s,
            &PairModeSpec { site: "a".into(), peer: "c".into(), expect_state_id: 1, mode: ReplicationMode::Async },
        );
        assert!(!applied.changed);
        assert_eq!(s.pairs[0].state_id, 1);
    }
}
