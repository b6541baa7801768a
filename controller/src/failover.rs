//! Carrying out a failover decided by [`crate::plan`], for the CLI, the
//! automatic detector and the drill alike:
//!
//! 1. fence (Raft): the shards are marked as moving, so the old owner stops
//!    writing them the moment it sees the change (if it still can);
//! 2. move (Raft): the target owns the shards under new epochs. The leader
//!    holds the move until no lease the old owner took before the fence can
//!    still be valid (`crate::lease`: measured from the last lease it
//!    granted that site, so a site that died seconds ago has none left and
//!    the move goes through at once).
//!
//! So at no moment can two sites hold a valid lease for one shard.

use serde::Serialize;
use tokio::time::Instant;

use crate::client::ControlClient;
use crate::lease::LEASE_WAIT;
use crate::ops::{MoveStep, ShardMoveSpec};
use crate::orphans::ORPHAN_GRACE;
use crate::plan::Decision;
use crate::state::MoveKind;
use crate::switchover::{endpoints, move_spec, step, SwitchoverError};

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub from: String,
    pub to: String,
    pub shards: usize,
    /// From the fence's commit to the move's commit (the lease hold).
    pub fenced_ms: u64,
    pub fence_audit_seq: u64,
    pub move_audit_seq: u64,
    pub result: String,
}

pub async fn run(
    client: &ControlClient,
    decision: &Decision,
    automatic: bool,
    who: &str,
    why: &str,
    mut progress: impl FnMut(&str),
) -> Result<Report, SwitchoverError> {
    let (from, to) = endpoints(decision)?;
    let spec = |step| move_spec(decision, step, None, automatic);
    // If this driver dies before the move, the leader finishes the move (or
    // undoes the fence) soon after this one would have moved.
    let fence_spec = ShardMoveSpec { kind: MoveKind::Failover, deadline_ms: (LEASE_WAIT + ORPHAN_GRACE).as_millis() as u64, ..spec(MoveStep::Drain) };
    let fence = step(client, &fence_spec, "fence", who, why).await?;
    let started = Instant::now();
    progress(&format!(
        "fenced {from}'s shards (audit #{}); moving them once no lease of {from}'s can still be valid (at most {} ms)",
        fence.audit_seq,
        LEASE_WAIT.as_millis()
    ));
    let moved = step(client, &spec(MoveStep::Move), "move", who, why).await?;
    Ok(Report {
        from,
        to,
        shards: decision.shards.len(),
        fenced_ms: started.elapsed().as_millis() as u64,
        fence_audit_seq: fence.audit_seq,
        move_audit_seq: moved.audit_seq,
        result: moved.result,
    })
}

/// The last step of a failover whose fence is older than a write lease (the
/// leader finishing one its driver left, see `crate::orphans`): the move,
/// made by tandem itself (so it counts as an automatic failover).
pub async fn finish(client: &ControlClient, decision: &Decision, who: &str, why: &str) -> Result<String, SwitchoverError> {
    endpoints(decision)?;
    let moved = step(client, &move_spec(decision, MoveStep::Move, None, true), "move", who, why).await?;
    Ok(format!("{} (audit #{})", moved.result, moved.audit_seq))
}
