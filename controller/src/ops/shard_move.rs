//! Moving shards between sites, in steps the Raft log records one by one:
//!
//! - `drain`: the owner stops accepting new writes for the shards
//!   (`moving_to` is set); what it already acknowledged keeps replicating.
//! - `move`: the shards get their new owner and a new, higher epoch, so
//!   the old owner's writes and replication traffic are refused from then
//!   on. With `require_drained` (switchover) it is refused unless the
//!   shards were drained towards that very site.
//! - `cancel`: an unfinished drain is undone; the owner writes again.
//!
//! Every step is a compare-and-set on the owner (and the epoch, when the
//! operator gave `--expect-epoch`), so two operators racing, or a plan made
//! on a stale view, change nothing.

use serde::{Deserialize, Serialize};

use super::Applied;
use crate::state::{ClusterState, Drain, MoveKind, MoveRecord, MovedShard, SiteRole};

/// In the leader's refusal of a switchover move whose target it could not
/// show caught up (`service::prove_caught_up`): the switchover operation
/// looks for it and keeps waiting (its view of the reports may run ahead
/// of the leader's).
pub const NOT_CAUGHT_UP: &str = "not caught up:";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MoveStep {
    Drain,
    Move,
    Cancel,
}

impl MoveStep {
    pub fn as_str(self) -> &'static str {
        match self {
            MoveStep::Drain => "drain",
            MoveStep::Move => "move",
            MoveStep::Cancel => "cancel",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "drain" => Some(MoveStep::Drain),
            "move" => Some(MoveStep::Move),
            "cancel" => Some(MoveStep::Cancel),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMoveSpec {
    pub step: MoveStep,
    pub from: String,
    pub to: String,
    pub shards: Vec<u32>,
    /// Refuse unless every shard has this epoch (`--expect-epoch`).
    pub expect_epoch: Option<u64>,
    /// `move` only: refuse unless drained towards `to`.
    pub require_drained: bool,
    /// Set by the automatic failover: the move starts the cooldown.
    #[serde(default)]
    pub automatic: bool,
    /// `move` only: refuse unless the in-city pair of `from` and `to` is
    /// in sync mode now (a failover planned as lossless must not commit if
    /// the pair left sync meanwhile).
    #[serde(default)]
    pub require_sync: bool,
    /// `drain` only: which operation drains, and how long its driver may
    /// take before the leader finishes or undoes it (0: [`default_deadline_ms`]).
    #[serde(default)]
    pub kind: MoveKind,
    #[serde(default)]
    pub deadline_ms: u64,
    /// `drain` of a failover only: when the leader last heard `from`'s
    /// replicator. Filled in by the leader that proposes the step, from its
    /// own board (never taken from the caller): the move's write pause is
    /// measured from it.
    #[serde(default)]
    pub writer_last_heard_ms: u64,
}

/// How long a drain's driver gets before the leader takes it over, when the
/// driver does not say: a failover only waits out one write lease; a
/// switchover waits for the target to catch up (the CLI's default is 60 s).
pub fn default_deadline_ms(kind: MoveKind) -> u64 {
    match kind {
        MoveKind::Failover => 15_000,
        MoveKind::Switchover => 120_000,
    }
}

/// "3 shards (0-1, 7)" for the audit log.
pub fn describe_shards(shards: &[u32]) -> String {
    format!("{} shard{} ({})", shards.len(), if shards.len() == 1 { "" } else { "s" }, shard_ranges(shards).join(", "))
}

/// `[0, 1, 7]` as `["0-1", "7"]` (sorted input), the form `--shards` takes
/// joined with commas.
pub fn shard_ranges(shards: &[u32]) -> Vec<String> {
    let mut ranges: Vec<String> = Vec::new();
    let mut i = 0;
    while i < shards.len() {
        let start = shards[i];
        let mut end = start;
        while i + 1 < shards.len() && shards[i + 1] == end + 1 {
            i += 1;
            end = shards[i];
        }
        ranges.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    ranges
}

pub(super) fn apply(state: &mut ClusterState, spec: &ShardMoveSpec, at_unix_ms: u64, log_index: u64) -> Applied {
    let what = format!("{} {} from {} to {}", spec.step.as_str(), describe_shards(&spec.shards), spec.from, spec.to);
    let refuse = |why: String| Applied { what: what.clone(), result: format!("refused: {why}"), changed: false, refused: true };
    if spec.shards.is_empty() {
        return refuse("no shard given".into());
    }
    if spec.from == spec.to {
        return refuse("source and target are the same site".into());
    }
    for site in [&spec.from, &spec.to] {
        if !state.sites.contains_key(site) {
            return refuse(format!("unknown site {site:?}"));
        }
    }
    if spec.step != MoveStep::Cancel {
        let role = state.sites[&spec.to].role;
        if matches!(role, SiteRole::Fenced | SiteRole::Recovering) {
            return refuse(format!("target {} is {}; it cannot take shards", spec.to, role.as_str()));
        }
    }
    if spec.step == MoveStep::Move && spec.require_sync {
        // Lossless only while every write `from` acknowledged reached `to`:
        // the direction from -> to must still be sync (the other direction
        // says nothing about what `to` holds).
        match state.pairs.iter().find(|p| p.joins(&spec.from, &spec.to)) {
            Some(p) if p.outgoing(&spec.from) == crate::state::ReplicationMode::Sync => {}
            Some(p) => {
                return refuse(format!(
                    "replication {} -> {} left sync mode ({}, state id {}): {} may be missing writes",
                    spec.from,
                    spec.to,
                    p.describe(),
                    p.state_id,
                    spec.to
                ))
            }
            None => return refuse(format!("{} and {} are not an in-city pair", spec.from, spec.to)),
        }
    }
    // Check every shard before changing any: a step applies to all or none.
    for &n in &spec.shards {
        let Some(shard) = state.shards.get(n as usize) else {
            return refuse(format!("no shard {n} (the cluster has {})", state.shards.len()));
        };
        if shard.owner != spec.from {
            return refuse(format!("shard {n} is owned by {} (epoch {}), not {}", shard.owner, shard.epoch, spec.from));
        }
        if let Some(expected) = spec.expect_epoch {
            if shard.epoch != expected {
                return refuse(format!("shard {n} has epoch {}, not the expected {expected}", shard.epoch));
            }
        }
        match spec.step {
            MoveStep::Drain => {
                if let Some(other) = shard.moving_to.as_ref().filter(|t| **t != spec.to) {
                    return refuse(format!("shard {n} is already being moved to {other}"));
                }
            }
            MoveStep::Move => {
                if spec.require_drained && shard.moving_to.as_deref() != Some(spec.to.as_str()) {
                    return refuse(format!("shard {n} was not drained towards {}", spec.to));
                }
            }
            MoveStep::Cancel => {}
        }
    }
    // The drain this move completes (the oldest among its shards'), for the
    // move's record; a shard moved without a drain counts from the move.
    let drain = spec.shards.iter().filter_map(|&n| state.shards[n as usize].drain.clone()).min_by_key(|d| d.at_unix_ms);
    let mut epochs = Vec::new();
    let mut moved = Vec::new();
    for &n in &spec.shards {
        let shard = &mut state.shards[n as usize];
        match spec.step {
            MoveStep::Drain => {
                shard.moving_to = Some(spec.to.clone());
                let deadline_ms = if spec.deadline_ms > 0 { spec.deadline_ms } else { default_deadline_ms(spec.kind) };
                shard.drain = Some(Drain {
                    kind: spec.kind,
                    at_unix_ms,
                    deadline_unix_ms: at_unix_ms.saturating_add(deadline_ms),
                    log_index,
                    writer_last_heard_unix_ms: if spec.kind == MoveKind::Failover { spec.writer_last_heard_ms } else { 0 },
                });
            }
            MoveStep::Cancel => {
                shard.moving_to = None;
                shard.drain = None;
            }
            MoveStep::Move => {
                let before = shard.epoch;
                shard.hand_over(&spec.to, drain.as_ref().map_or(spec.kind, |d| d.kind));
                epochs.push(shard.epoch);
                moved.push(MovedShard { shard: n, from_epoch: before, to_epoch: shard.epoch });
            }
        }
    }
    if spec.step == MoveStep::Move {
        let record = move_record(spec, drain.as_ref(), at_unix_ms, state.audit_len + 1, moved);
        if spec.automatic {
            state.last_auto_failover_unix_ms = at_unix_ms;
        }
        state.last_moves.insert(record.kind, record);
    }
    let result = match spec.step {
        MoveStep::Drain => format!("ok: {} stops writing them", spec.from),
        MoveStep::Cancel => format!("ok: {} writes them again", spec.from),
        MoveStep::Move => {
            let (lo, hi) = (epochs.iter().min().copied().unwrap_or(0), epochs.iter().max().copied().unwrap_or(0));
            let epochs = if lo == hi { format!("epoch {lo}") } else { format!("epochs {lo}-{hi}") };
            format!("ok: {} owns them now ({epochs})", spec.to)
        }
    };
    Applied { what, result, changed: true, refused: false }
}

/// What the move committing at `moved_at` (audit entry `audit_seq`)
/// completes: its kind, how long it took from its drain and how long the
/// shards could not be written.
fn move_record(spec: &ShardMoveSpec, drain: Option<&Drain>, moved_at: u64, audit_seq: u64, moved: Vec<MovedShard>) -> MoveRecord {
    let kind = drain.map_or(spec.kind, |d| d.kind);
    let drained_at = drain.map_or(moved_at, |d| d.at_unix_ms).min(moved_at);
    // A failover's shards stopped being written when the old owner died,
    // which was after it was last heard and may be before the fence.
    let paused_since = match drain {
        Some(d) if d.kind == MoveKind::Failover && d.writer_last_heard_unix_ms > 0 => d.writer_last_heard_unix_ms.min(drained_at),
        _ => drained_at,
    };
    MoveRecord {
        kind,
        from: spec.from.clone(),
        to: spec.to.clone(),
        shards: spec.shards.len() as u64,
        automatic: spec.automatic,
        drained_at_unix_ms: drained_at,
        moved_at_unix_ms: moved_at,
        write_pause_ms: moved_at.saturating_sub(paused_since),
        audit_seq,
        moved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::SiteRole;

    fn state() -> ClusterState {
        crate::ops::test_state(8)
    }

    fn spec(step: MoveStep, shards: &[u32]) -> ShardMoveSpec {
        ShardMoveSpec {
            step,
            from: "a".into(),
            to: "b".into(),
            shards: shards.to_vec(),
            expect_epoch: None,
            require_drained: true,
            automatic: false,
            require_sync: false,
            kind: MoveKind::Switchover,
            deadline_ms: 0,
            writer_last_heard_ms: 0,
        }
    }

    #[test]
    fn a_move_records_its_duration_and_write_pause() {
        let mut s = state();
        apply(&mut s, &spec(MoveStep::Drain, &[0, 1]), 1_000, 5);
        assert!(apply(&mut s, &spec(MoveStep::Move, &[0, 1]), 4_500, 6).changed);
        let r = &s.last_moves[&MoveKind::Switchover];
        assert_eq!((r.from.as_str(), r.to.as_str(), r.shards, r.duration_ms(), r.write_pause_ms), ("a", "b", 2, 3_500, 3_500));
        assert_eq!(r.audit_seq, s.audit_len + 1, "the move's own audit entry");
        let moved = |n| MovedShard { shard: n, from_epoch: 1, to_epoch: 2 };
        assert_eq!(r.moved, vec![moved(0), moved(1)], "each shard with its epochs");
        // A failover's pause runs from when the dead owner was last heard.
        let fence = ShardMoveSpec { kind: MoveKind::Failover, writer_last_heard_ms: 9_000, automatic: true, ..spec(MoveStep::Drain, &[2]) };
        apply(&mut s, &fence, 10_000, 8);
        let mv = ShardMoveSpec { automatic: true, ..spec(MoveStep::Move, &[2]) };
        assert!(apply(&mut s, &mv, 10_400, 9).changed);
        let r = &s.last_moves[&MoveKind::Failover];
        assert_eq!((r.duration_ms(), r.write_pause_ms, r.automatic), (400, 1_400, true));
        assert_eq!(s.last_moves[&MoveKind::Switchover].moved_at_unix_ms, 4_500, "the switchover's record stays");
        // A switchover drain ignores a last-heard time.
        let drain = ShardMoveSpec { writer_last_heard_ms: 1, ..spec(MoveStep::Drain, &[3]) };
        apply(&mut s, &drain, 20_000, 10);
        assert_eq!(s.shards[3].drain.as_ref().unwrap().writer_last_heard_unix_ms, 0);
    }

    #[test]
    fn a_failed_over_shard_remembers_its_home_until_it_returns() {
        let mut s = state();
        let failover = |s: &mut ClusterState, from: &str, to: &str, shards: &[u32]| {
            let base = ShardMoveSpec { from: from.into(), to: to.into(), ..spec(MoveStep::Drain, shards) };
            assert!(apply_at(s, &ShardMoveSpec { kind: MoveKind::Failover, ..base.clone() }).changed);
            assert!(apply_at(s, &ShardMoveSpec { step: MoveStep::Move, ..base }).changed);
        };
        let switchover = |s: &mut ClusterState, from: &str, to: &str, shards: &[u32]| {
            let base = ShardMoveSpec { from: from.into(), to: to.into(), ..spec(MoveStep::Drain, shards) };
            assert!(apply_at(s, &base).changed);
            assert!(apply_at(s, &ShardMoveSpec { step: MoveStep::Move, ..base }).changed);
        };
        // test_state(8): a owns 0-3, b owns 4-7.
        switchover(&mut s, "a", "b", &[0]);
        assert_eq!(s.shards[0].displaced_from, None, "a planned switchover does not make a shard displaced");
        failover(&mut s, "a", "b", &[1, 2, 3]);
        assert_eq!(s.shards[1].displaced_from.as_deref(), Some("a"));
        // b fails over to a later: a's shards come home, b's own are now away.
        failover(&mut s, "b", "a", &[1, 4]);
        assert_eq!((s.shards[1].displaced_from.clone(), s.shards[4].displaced_from.as_deref()), (None, Some("b")));
        // A switchover elsewhere keeps the home; one back home clears it.
        switchover(&mut s, "b", "c", &[3]);
        assert_eq!(s.shards[3].displaced_from.as_deref(), Some("a"));
        switchover(&mut s, "b", "a", &[2]);
        assert_eq!(s.shards[2].displaced_from, None);
    }

    #[test]
    fn a_lossless_move_is_refused_once_the_pair_left_sync() {
        let mut s = state();
        apply_at(&mut s, &spec(MoveStep::Drain, &[0]));
        // b -> a async (b's own writes) says nothing about what b holds of a's.
        s.pairs[0].set_outgoing("b", crate::state::ReplicationMode::Async, 3);
        let mut m = spec(MoveStep::Move, &[0]);
        m.require_sync = true;
        let r = apply_at(&mut s, &m);
        assert!(r.changed, "{}", r.result);
        apply_at(&mut s, &spec(MoveStep::Drain, &[1]));
        s.pairs[0].set_outgoing("a", crate::state::ReplicationMode::Async, 9);
        let mut m = spec(MoveStep::Move, &[1]);
        m.require_sync = true;
        let r = apply_at(&mut s, &m);
        assert!(!r.changed && r.result.contains("left sync mode") && r.result.contains("a -> b async since a's entry 9"), "{}", r.result);
        assert_eq!((s.shards[0].owner.as_str(), s.shards[1].owner.as_str()), ("b", "a"));
    }

    fn apply_at(s: &mut ClusterState, spec: &ShardMoveSpec) -> Applied {
        apply(s, spec, 1_000, 7)
    }

    #[test]
    fn an_automatic_move_starts_the_cooldown() {
        let mut s = state();
        apply_at(&mut s, &spec(MoveStep::Drain, &[0]));
        let mut m = spec(MoveStep::Move, &[0]);
        m.automatic = true;
        assert!(apply_at(&mut s, &m).changed);
        assert_eq!(s.last_auto_failover_unix_ms, 1_000);
    }

    #[test]
    fn drain_then_move_gives_new_owner_and_higher_epoch() {
        let mut s = state();
        assert!(apply_at(&mut s, &spec(MoveStep::Drain, &[0, 1])).changed);
        assert_eq!(s.shards[0].moving_to.as_deref(), Some("b"));
        let done = apply_at(&mut s, &spec(MoveStep::Move, &[0, 1]));
        assert!(done.changed, "{}", done.result);
        assert_eq!((s.shards[0].owner.as_str(), s.shards[0].epoch, s.shards[0].moving_to.clone()), ("b", 2, None));
        assert_eq!(s.shards[2].owner, "a", "other shards stay");
    }

    #[test]
    fn switchover_move_without_drain_is_refused() {
        let mut s = state();
        let r = apply_at(&mut s, &spec(MoveStep::Move, &[0]));
        assert!(!r.changed && r.result.contains("not drained"), "{}", r.result);
        assert_eq!(s.shards[0].owner, "a");
    }

    #[test]
    fn stale_epoch_or_wrong_owner_changes_nothing() {
        let mut s = state();
        let mut stale = spec(MoveStep::Drain, &[0, 1]);
        stale.expect_epoch = Some(7);
        let r = apply_at(&mut s, &stale);
        assert!(!r.changed && r.result.contains("not the expected 7"), "{}", r.result);
        // Shard 5 belongs to b: the whole step is refused, shard 0 included.
        let r = apply_at(&mut s, &spec(MoveStep::Drain, &[0, 5]));
        assert!(!r.changed && r.result.contains("shard 5 is owned by b"), "{}", r.result);
        assert_eq!(s.shards[0].moving_to, None);
    }

    #[test]
    fn cancel_undoes_a_drain_and_fenced_targets_are_refused() {
        let mut s = state();
        apply_at(&mut s, &spec(MoveStep::Drain, &[0]));
        assert!(apply_at(&mut s, &spec(MoveStep::Cancel, &[0])).changed);
        assert_eq!(s.shards[0].moving_to, None);
        s.sites.get_mut("b").unwrap().role = SiteRole::Fenced;
        let r = apply_at(&mut s, &spec(MoveStep::Drain, &[0]));
        assert!(!r.changed && r.result.contains("fenced"), "{}", r.result);
    }

    #[test]
    fn shard_lists_read_as_ranges() {
        assert_eq!(describe_shards(&[0, 1, 2, 7, 9, 10]), "6 shards (0-2, 7, 9-10)");
        assert_eq!(describe_shards(&[4]), "1 shard (4)");
    }
}
