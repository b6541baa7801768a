//! Controller operations: the commands carried by the Raft log.
//!
//! One file per operation, each with the same shape: a spec, a pure
//! `apply(state, spec) -> Applied` that changes the state deterministically,
//! and the text that goes into the audit log. [`apply`] dispatches and
//! appends the audit entry, so no operation can skip the audit.

mod bootstrap;
mod pair_mode;
mod pause;
mod shard_move;
mod site_role;

use serde::{Deserialize, Serialize};

#[cfg(test)]
pub(crate) use bootstrap::test_state;
pub use bootstrap::BootstrapSpec;
pub use pair_mode::PairModeSpec;
pub use shard_move::{describe_shards, shard_ranges, MoveStep, ShardMoveSpec};
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
}

/// Who asked and why, stamped by the node that proposed the command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpMeta {
    pub who: String,
    pub why: String,
    /// Proposer's wall clock; apply never reads a clock.
    pub at_unix_ms: u64,
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
}

/// What one operation did, before it is audited.
struct Applied {
    what: String,
    result: String,
    changed: bool,
}

/// Applies `req` (carried at `log_index`) to `state` and returns the new
/// audit entry with the outcome. Deterministic: same inputs, same outputs.
pub fn apply(state: &mut ClusterState, req: &Request, log_index: u64) -> (Outcome, AuditEntry) {
    let applied = match &req.command {
        Command::Bootstrap(spec) => bootstrap::apply(state, spec),
        Command::Pause => pause::apply(state, true),
        Command::Resume => pause::apply(state, false),
        Command::SetPairMode(spec) => pair_mode::apply(state, spec),
        Command::ShardMove(spec) => shard_move::apply(state, spec, req.meta.at_unix_ms, log_index),
        Command::Event { what, result, .. } => Applied { what: what.clone(), result: result.clone(), changed: false },
        Command::SetSiteRole(spec) => site_role::apply(state, spec),
    };
    state.audit_len += 1;
    let mut entry = AuditEntry {
        seq: state.audit_len,
        at_unix_ms: req.meta.at_unix_ms,
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
    if automatic {
        state.last_automatic = Some(AutoAction { at_unix_ms: entry.at_unix_ms, audit_seq: entry.seq, what: entry.what.clone(), result: entry.result.clone() });
    }
    let outcome = Outcome { audit_seq: entry.seq, log_index, result: applied.result, changed: applied.changed };
    (outcome, entry)
}
