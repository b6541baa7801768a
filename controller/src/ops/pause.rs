//! Pause and resume of automatic actions.
//!
//! While paused, the controller takes no automatic failover; operator
//! commands still work, and replication mode changes are still recorded
//! (they keep the record of who can be promoted without loss true). Used
//! during maintenance and while SREs investigate an incident by hand.

use super::Applied;
use crate::state::ClusterState;

pub(super) fn apply(state: &mut ClusterState, pause: bool) -> Applied {
    let what = if pause { "pause automatic actions" } else { "resume automatic actions" };
    if !state.bootstrapped {
        return Applied { what: what.into(), result: "refused: cluster not bootstrapped yet".into(), changed: false, refused: true };
    }
    if state.policy.paused == pause {
        let already = if pause { "no change: already paused" } else { "no change: not paused" };
        return Applied { what: what.into(), result: already.into(), changed: false, refused: false };
    }
    state.policy.paused = pause;
    Applied { what: what.into(), result: "ok".into(), changed: true, refused: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bootstrapped() -> ClusterState {
        ClusterState { bootstrapped: true, ..Default::default() }
    }

    #[test]
    fn pause_then_resume_toggles_policy() {
        let mut state = bootstrapped();
        assert!(apply(&mut state, true).changed);
        assert!(state.policy.paused);
        let again = apply(&mut state, true);
        assert!(!again.changed);
        assert!(again.result.contains("already paused"));
        assert!(apply(&mut state, false).changed);
        assert!(!state.policy.paused);
    }

    #[test]
    fn refused_before_bootstrap() {
        let mut state = ClusterState::default();
        let applied = apply(&mut state, true);
        assert!(!applied.changed);
        assert!(!state.policy.paused);
    }
}
