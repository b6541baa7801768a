//! Moves left half-done: shards drained by a switchover or fenced by a
//! failover whose driver (a CLI killed in the lease wait, the detector of a
//! leader that died) never finished. Nobody may write them until someone
//! does, so the leader does it once the drain's deadline has passed:
//!
//! - a **failover** is finished if the planner still allows it without
//!   loss (the deadline is past the write lease, so the old owner's lease
//!   has run out); otherwise the fence is undone;
//! - a **switchover** is cancelled: the source writes again (if it is
//!   down, the detector then fails it over as usual).
//!
//! Finding orphans and deciding what to do with them is pure ([`find`],
//! [`resolve`]); `operations::orphan::finish` carries it out with the same
//! steps the CLI and the detector use, and every step is audited with its
//! reason.

use std::collections::BTreeMap;

use crate::plan::{plan, Action, Decision, Observations};
use crate::state::{ClusterState, MoveKind};

/// How long after its driver would have finished a drain counts as
/// abandoned: the drain's deadline is the driver's own wait plus this.
pub const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Shards one unfinished move left drained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphan {
    pub from: String,
    pub to: String,
    pub kind: MoveKind,
    pub shards: Vec<u32>,
    /// When the drain committed (proposer's clock).
    pub drained_at_unix_ms: u64,
}

/// What the leader does with an orphan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Finish the failover: the move of this (lossless) decision.
    Move(Decision),
    /// Undo the drain, for this reason.
    Cancel(String),
}

/// Drains past their deadline at `now_unix_ms`, one per (from, to, kind).
/// Drains recorded by an older build (no deadline) are left to operators.
pub fn find(state: &ClusterState, now_unix_ms: u64) -> Vec<Orphan> {
    let mut out: BTreeMap<(String, String, MoveKind), Orphan> = BTreeMap::new();
    for (n, shard) in state.shards.iter().enumerate() {
        let (Some(to), Some(drain)) = (&shard.moving_to, &shard.drain) else { continue };
        if now_unix_ms < drain.deadline_unix_ms {
            continue;
        }
        let o = out.entry((shard.owner.clone(), to.clone(), drain.kind)).or_insert_with(|| Orphan {
            from: shard.owner.clone(),
            to: to.clone(),
            kind: drain.kind,
            shards: Vec::new(),
            drained_at_unix_ms: drain.at_unix_ms,
        });
        o.shards.push(n as u32);
        o.drained_at_unix_ms = o.drained_at_unix_ms.min(drain.at_unix_ms);
    }
    out.into_values().collect()
}

/// Finish or undo `orphan`, decided on the current state and observations.
pub fn resolve(state: &ClusterState, obs: &Observations, orphan: &Orphan) -> Resolution {
    match orphan.kind {
        MoveKind::Switchover => Resolution::Cancel(format!("the switchover from {} to {} was left unfinished", orphan.from, orphan.to)),
        MoveKind::Failover => {
            let action = Action::Failover { from: orphan.from.clone(), to: orphan.to.clone(), accept_data_loss: false, automatic: false };
            let mut d = plan(state, obs, &action);
            match &d.refused {
                Some(why) => {
                    Resolution::Cancel(format!("the failover from {} to {} was left unfinished and cannot finish without loss: {why}", orphan.from, orphan.to))
                }
                None => {
                    // Only the shards this failover fenced (the planner takes all of
                    // the source's; any others were never fenced by it).
                    d.shards.retain(|s| orphan.shards.contains(s));
                    Resolution::Move(d)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::ReplicatorHealth;
    use crate::ops::test_state;
    use crate::state::{Drain, ReplicationMode};

    fn drained(state: &mut ClusterState, shards: &[u32], to: &str, kind: MoveKind, deadline: u64) {
        for &n in shards {
            let s = &mut state.shards[n as usize];
            s.moving_to = Some(to.into());
            s.drain = Some(Drain { kind, at_unix_ms: 1_000, deadline_unix_ms: deadline, log_index: 5, writer_last_heard_unix_ms: 0 });
        }
    }

    fn obs(fresh: &[&str]) -> Observations {
        let now = 100_000;
        Observations {
            replicators: fresh.iter().map(|s| ReplicatorHealth { site: s.to_string(), received_at_unix_ms: now - 500, ..Default::default() }).collect(),
            now_unix_ms: now,
        }
    }

    #[test]
    fn only_drains_past_their_deadline_are_orphans() {
        let mut s = test_state(8);
        drained(&mut s, &[0, 1], "b", MoveKind::Failover, 16_000);
        drained(&mut s, &[2], "b", MoveKind::Switchover, 200_000);
        // A drain by an older build has no deadline: left alone.
        s.shards[3].moving_to = Some("b".into());
        assert!(find(&s, 15_999).is_empty());
        let found = find(&s, 16_000);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].kind, found[0].shards.clone()), (MoveKind::Failover, vec![0, 1]));
        assert_eq!(find(&s, 200_000).len(), 2);
    }

    #[test]
    fn a_lossless_failover_is_finished_with_only_its_shards() {
        let mut s = test_state(8);
        drained(&mut s, &[0, 1], "b", MoveKind::Failover, 16_000);
        let o = &find(&s, 100_000)[0];
        match resolve(&s, &obs(&["b", "c"]), o) {
            Resolution::Move(d) => {
                assert_eq!(d.target.as_deref(), Some("b"));
                assert_eq!(d.shards, vec![0, 1], "a's other shards were not fenced by it");
                assert!(d.requires_sync);
            }
            other => panic!("expected a move, got {other:?}"),
        }
    }

    #[test]
    fn a_failover_that_would_lose_writes_is_undone() {
        let mut s = test_state(8);
        drained(&mut s, &[0], "b", MoveKind::Failover, 16_000);
        s.pairs[0].set_outgoing("a", ReplicationMode::Async, 5);
        let o = &find(&s, 100_000)[0];
        match resolve(&s, &obs(&["b", "c"]), o) {
            Resolution::Cancel(why) => assert!(why.contains("cannot finish without loss") && why.contains("a -> b async"), "{why}"),
            other => panic!("expected a cancel, got {other:?}"),
        }
        // And a target that stopped reporting cannot take them either.
        s.pairs[0].set_outgoing("a", ReplicationMode::Sync, 0);
        assert!(matches!(resolve(&s, &obs(&["c"]), o), Resolution::Cancel(_)));
    }

    #[test]
    fn an_unfinished_switchover_is_cancelled() {
        let mut s = test_state(8);
        drained(&mut s, &[1], "b", MoveKind::Switchover, 5_000);
        let o = &find(&s, 100_000)[0];
        assert!(matches!(resolve(&s, &obs(&["a", "b", "c"]), o), Resolution::Cancel(w) if w.contains("switchover from a to b")));
    }
}
