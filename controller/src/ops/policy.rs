//! Changing one policy key (`tandem policy set`): compare-and-set on the
//! key's current value, so two operators editing at once cannot overwrite
//! each other unseen, and the value checked as the key requires.

use serde::{Deserialize, Serialize};

use super::Applied;
use crate::state::ClusterState;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySpec {
    pub key: String,
    pub value: String,
    /// The value the operator saw; refused when the key holds another.
    pub expect: String,
}

pub(super) fn apply(state: &mut ClusterState, spec: &PolicySpec) -> Applied {
    let what = format!("policy {}: {} -> {}", spec.key, spec.expect, spec.value);
    let refuse = |why: String| Applied { what: what.clone(), result: format!("refused: {why}"), changed: false, refused: true };
    if !state.bootstrapped {
        return refuse("cluster not bootstrapped yet".into());
    }
    let mut policy = state.policy.clone();
    if let Err(e) = policy.set(&spec.key, &spec.value) {
        return refuse(e);
    }
    let current = state.policy.get(&spec.key).unwrap_or_default();
    if current != spec.expect {
        return refuse(format!("{} is {current} now, not {} (changed meanwhile: look again)", spec.key, spec.expect));
    }
    if policy == state.policy {
        return Applied { what, result: format!("no change: {} is already {current}", spec.key), changed: false, refused: false };
    }
    state.policy = policy;
    Applied { what, result: "ok".into(), changed: true, refused: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(key: &str, value: &str, expect: &str) -> PolicySpec {
        PolicySpec { key: key.into(), value: value.into(), expect: expect.into() }
    }

    fn bootstrapped() -> ClusterState {
        ClusterState { bootstrapped: true, ..Default::default() }
    }

    #[test]
    fn a_key_changes_only_from_the_value_the_operator_saw() {
        let mut s = bootstrapped();
        let a = apply(&mut s, &spec("cooldown_s", "30", "600"));
        assert!(a.changed && !a.refused, "{}", a.result);
        assert_eq!(s.policy.cooldown_s, 30);
        // A second operator still looking at 600 is refused.
        let b = apply(&mut s, &spec("cooldown_s", "120", "600"));
        assert!(b.refused && b.result.contains("is 30 now"), "{}", b.result);
        assert_eq!(s.policy.cooldown_s, 30);
        let same = apply(&mut s, &spec("cooldown_s", "30", "30"));
        assert!(!same.changed && !same.refused, "{}", same.result);
        let off = apply(&mut s, &spec("auto_failover", "false", "true"));
        assert!(off.changed, "{}", off.result);
        assert!(!s.policy.auto_failover);
    }

    #[test]
    fn bad_keys_and_values_are_refused_and_change_nothing() {
        let mut s = bootstrapped();
        let before = s.policy.clone();
        for (key, value, why) in [
            ("cooldown", "30", "unknown policy key"),
            ("paused", "true", "tandem pause"),
            ("cooldown_s", "-1", "whole number"),
            ("down_after_ms", "100", "within 500..=600000"),
            ("auto_failover", "yes", "true or false"),
        ] {
            let current = s.policy.get(key).unwrap_or_default();
            let a = apply(&mut s, &spec(key, value, &current));
            assert!(a.refused && a.result.contains(why), "{key}={value}: {}", a.result);
        }
        assert_eq!(s.policy, before);
        let mut fresh = ClusterState::default();
        assert!(apply(&mut fresh, &spec("cooldown_s", "30", "600")).refused);
    }

    #[test]
    fn differences_name_each_key_with_both_values() {
        let a = crate::state::Policy::default();
        let mut b = a.clone();
        b.set("lag_s_max", "5").unwrap();
        b.paused = true;
        assert_eq!(a.differences(&b), vec![("lag_s_max", "0".to_string(), "5".to_string())]);
    }
}
