//! Controller operations: the commands carried by the Raft log.
//!
//! One file per operation, each with the same shape: a spec, a pure
//! `apply(state, spec) -> Applied` that changes the state deterministically,
//! and the text that goes into the audit log. [`apply`] dispatches and
//! appends the audit entry, so no operation can skip the audit.

pub mod approval;
mod bootstrap;
mod pair_mode;
mod pause;
mod policy;
mod shard_move;
mod site_role;

use serde::{Deserialize, Serialize};

#[cfg(test)]
pub(crate) use bootstrap::test_state;
pub use bootstrap::BootstrapSpec;
pub use pair_mode::PairModeSpec;
pub use policy::PolicySpec;
pub use shard_move::{describe_shards, shard_ranges, MoveStep, ShardMoveSpec, NOT_CAUGHT_UP};
pub use site_role::SiteRoleSpec;

use crate::state::{AuditEntry, AutoAction, ClusterState};

/// A state change. Serialised into the Raft log: add variants at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Writes the initial layout. Proposed by the first leader; ignored once
    /// the cluster is bootstrapped.
    Bootstrap(BootstrapSpec),
    /// Stops automatic actions (automatic failover).
    Pause,
    /// Resumes automatic actions.
    Resume,
    /// Sets an in-city pair's replication mode (compare-and-set on its state id).
    SetPairMode(PairModeSpec),
    /// One step of moving shards between sites (drain, move, cancel).
    ShardMove(ShardMoveSpec),
    /// An event for the audit log only (detections, declined automatic
    /// actions): `what` happened, with `result`. `automatic`: recorded by
    /// tandem's own detector (it becomes the last automatic action).
    Event {
        what: String,
        result: String,
        #[serde(default)]
        automatic: bool,
    },
    /// Sets a site's role (failback: recovering, then active again).
    SetSiteRole(SiteRoleSpec),
    /// Sets one policy key (compare-and-set on its current value).
    SetPolicy(PolicySpec),
    /// Records a request for a second admin's approval ([`approval`]).
    RequestApproval(approval::RequestSpec),
    /// Approves or rejects a pending request.
    DecideApproval(approval::DecisionSpec),
    /// Uses an approval for a change made outside the state machine.
    UseApproval(approval::UseSpec),
}

/// Who asked and why, stamped by the node that proposed the command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpMeta {
    pub who: String,
    pub why: String,
    /// Proposer's wall clock; apply never reads a clock.
    pub at_unix_ms: u64,
    /// The site whose clock `at_unix_ms` was read from (the proposing
    /// controller's; "" from an older build): clocks of sites differ.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub clock: String,
    /// The approved request this change carries out ([`approval`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<u64>,
}

/// The application data of one Raft entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub command: Command,
    pub meta: OpMeta,
}

/// What applying a [`Request`] produced, returned to the proposer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub audit_seq: u64,
    /// Raft log index that carried the change.
    #[serde(default)]
    pub log_index: u64,
    pub result: String,
    pub changed: bool,
    /// False when the rules refused the command (nothing changed).
    #[serde(default)]
    pub accepted: bool,
}

/// What one operation did, before it is audited.
struct Applied {
    what: String,
    result: String,
    changed: bool,
    /// The rules refused it.
    refused: bool,
}

/// Applies `req` (carried at `log_index`) to `state` and returns the new
/// audit entry with the outcome. Deterministic: same inputs, same outputs.
pub fn apply(state: &mut ClusterState, req: &Request, log_index: u64) -> (Outcome, AuditEntry) {
    let needs = approval::needed(state, &req.command);
    let approved = match &needs {
        Some((action, args, _)) => approval::check(state, &req.meta, action, args).map(Some),
        None => Ok(None),
    };
    let applied = match approved {
        Ok(approved) => {
            let applied = dispatch(state, req, log_index);
            if let (Some(id), Some((_, _, true))) = (approved, &needs) {
                if applied.changed {
                    approval::mark_used(state, id, &req.meta, state.audit_len + 1);
                }
            }
            applied
        }
        Err(why) => Applied {
            what: needs.as_ref().map_or_else(String::new, |(a, _, _)| a.to_string()),
            result: format!("refused: {why}"),
            changed: false,
            refused: true,
        },
    };
    audit(state, req, log_index, applied)
}

fn dispatch(state: &mut ClusterState, req: &Request, log_index: u64) -> Applied {
    match &req.command {
        Command::Bootstrap(spec) => bootstrap::apply(state, spec),
        Command::Pause => pause::apply(state, true),
        Command::Resume => pause::apply(state, false),
        Command::SetPairMode(spec) => pair_mode::apply(state, spec),
        Command::ShardMove(spec) => shard_move::apply(state, spec, req.meta.at_unix_ms, log_index),
        Command::Event { what, result, .. } => Applied { what: what.clone(), result: result.clone(), changed: false, refused: false },
        Command::SetSiteRole(spec) => site_role::apply(state, spec),
        Command::SetPolicy(spec) => policy::apply(state, spec),
        Command::RequestApproval(spec) => approval::request(state, spec, &req.meta),
        Command::DecideApproval(spec) => approval::decide(state, spec, &req.meta),
        Command::UseApproval(spec) => approval::use_outside(state, spec, &req.meta),
    }
}

/// Appends the audit entry of `applied` and counts it.
fn audit(state: &mut ClusterState, req: &Request, log_index: u64, applied: Applied) -> (Outcome, AuditEntry) {
    state.audit_len += 1;
    let mut entry = AuditEntry {
        seq: state.audit_len,
        at_unix_ms: req.meta.at_unix_ms,
        clock: req.meta.clock.clone(),
        who: req.meta.who.clone(),
        why: req.meta.why.clone(),
        what: applied.what,
        result: applied.result.clone(),
        log_index,
        prev_hash: String::new(),
        hash: String::new(),
    };
    state.audit_head = crate::audit::seal(&mut entry, &state.audit_head);
    let automatic = match &req.command {
        Command::ShardMove(spec) => spec.automatic,
        Command::Event { automatic, .. } => *automatic,
        _ => false,
    };
    let tally = state.tally_mut();
    tally.refused += u64::from(applied.refused);
    match &req.command {
        Command::ShardMove(spec) if spec.step == MoveStep::Move && applied.changed => {
            tally.moves += 1;
            tally.automatic_moves += u64::from(spec.automatic);
        }
        // tandem records an automatic event only when it declines to act.
        Command::Event { automatic: true, .. } => tally.declined += 1,
        _ => {}
    }
    if automatic {
        state.last_automatic = Some(AutoAction { at_unix_ms: entry.at_unix_ms, audit_seq: entry.seq, what: entry.what.clone(), result: entry.result.clone() });
    }
    let outcome = Outcome { audit_seq: entry.seq, log_index, result: applied.result, changed: applied.changed, accepted: !applied.refused };
    (outcome, entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(command: Command) -> Request {
        Request { command, meta: OpMeta { who: "t".into(), why: "t".into(), at_unix_ms: 1, clock: String::new(), approval: None } }
    }

    fn step(step: MoveStep, automatic: bool) -> Command {
        Command::ShardMove(ShardMoveSpec {
            step,
            from: "a".into(),
            to: "b".into(),
            shards: vec![0],
            expect_epoch: None,
            require_drained: true,
            automatic,
            require_sync: false,
            kind: crate::state::MoveKind::Failover,
            deadline_ms: 0,
            writer_last_heard_ms: 0,
        })
    }

    // The outcome says whether the rules took the command, and the tally
    // counts what /metrics reports as each command applies.
    #[test]
    fn outcomes_say_accepted_and_the_tally_counts_moves_refusals_and_declines() {
        let mut s = test_state(8);
        let (o, _) = apply(&mut s, &req(step(MoveStep::Drain, true)), 1);
        assert!(o.accepted && o.changed);
        let (o, _) = apply(&mut s, &req(step(MoveStep::Move, true)), 2);
        assert!(o.accepted && o.changed);
        // The shard is b's now: moving it from a again is refused.
        let (o, _) = apply(&mut s, &req(step(MoveStep::Move, false)), 3);
        assert!(!o.accepted && !o.changed, "{o:?}");
        apply(&mut s, &req(Command::Event { what: "site a down".into(), result: "declined: paused".into(), automatic: true }), 4);
        apply(&mut s, &req(Command::Event { what: "note".into(), result: "ok".into(), automatic: false }), 5);
        // Accepted without a change.
        let (o, _) = apply(&mut s, &req(Command::Resume), 6);
        assert!(o.accepted && !o.changed, "{o:?}");
        assert_eq!(s.tally, Some(crate::state::Tally { moves: 1, automatic_moves: 1, refused: 1, declined: 1 }));
    }
}
