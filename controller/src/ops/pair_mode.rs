//! Replication mode of an in-city pair, set by the replicators.
//!
//! A replicator whose peer stops confirming sync writes records the pair as
//! `async` here *before* it acknowledges the write, so the controller always
//! knows whether the peer can be promoted without loss. When the peer has
//! nearly caught up the pair goes to `sync-recover` (writes wait for the peer
//! again), and to `sync` once nothing is outstanding in either direction.
//!
//! Every change is a compare-and-set on the pair's state id: two replicators
//! racing on the same observation produce one change, not two.

use serde::{Deserialize, Serialize};

use super::Applied;
use crate::state::{ClusterState, ReplicationMode};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairModeSpec {
    pub site_a: String,
    pub site_b: String,
    /// The state id the proposer based its decision on.
    pub expect_state_id: u64,
    pub mode: ReplicationMode,
}

pub(super) fn apply(state: &mut ClusterState, spec: &PairModeSpec) -> Applied {
    let what = format!("replication {} <-> {}: {}", spec.site_a, spec.site_b, spec.mode.as_str());
    let refuse = |why: String| Applied { what: what.clone(), result: format!("refused: {why}"), changed: false };
    let Some(pair) = state.pairs.iter_mut().find(|p| {
        (p.site_a == spec.site_a && p.site_b == spec.site_b) || (p.site_a == spec.site_b && p.site_b == spec.site_a)
    }) else {
        return refuse(format!("no in-city pair {} <-> {}", spec.site_a, spec.site_b));
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
    pair.mode = spec.mode;
    pair.state_id += 1;
    Applied { what, result: format!("ok: state id {}", pair.state_id), changed: true }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ReplicationPair;

    fn state() -> ClusterState {
        ClusterState {
            bootstrapped: true,
            pairs: vec![ReplicationPair { site_a: "a".into(), site_b: "b".into(), mode: ReplicationMode::Sync, state_id: 1 }],
            ..Default::default()
        }
    }

    fn spec(expect: u64, mode: ReplicationMode) -> PairModeSpec {
        PairModeSpec { site_a: "b".into(), site_b: "a".into(), expect_state_id: expect, mode }
    }

    #[test]
    fn change_bumps_state_id_in_either_site_order() {
        let mut s = state();
        let applied = apply(&mut s, &spec(1, ReplicationMode::Async));
        assert!(applied.changed, "{}", applied.result);
        assert_eq!(s.pairs[0].mode, ReplicationMode::Async);
        assert_eq!(s.pairs[0].state_id, 2);
    }

    #[test]
    fn stale_state_id_is_refused() {
        let mut s = state();
        assert!(apply(&mut s, &spec(1, ReplicationMode::Async)).changed);
        // A second replicator saw state id 1 too: its change must not apply.
        let second = apply(&mut s, &spec(1, ReplicationMode::SyncRecover));
        assert!(!second.changed);
        assert!(second.result.contains("state id is 2"), "{}", second.result);
        assert_eq!(s.pairs[0].mode, ReplicationMode::Async);
    }

    #[test]
    fn unknown_pair_is_refused() {
        let mut s = state();
        let applied = apply(&mut s, &PairModeSpec { site_a: "a".into(), site_b: "c".into(), expect_state_id: 1, mode: ReplicationMode::Async });
        assert!(!applied.changed);
        assert_eq!(s.pairs[0].state_id, 1);
    }
}
