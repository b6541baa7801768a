//! Carrying out a failover decided by [`crate::plan`], for the CLI and the
//! automatic detector alike:
//!
//! 1. fence (Raft): the shards are marked as moving, so the old owner stops
//!    writing them the moment it sees the change (if it still can);
//! 2. wait one full write lease ([`WRITE_LEASE`] and a margin): any lease
//!    the old owner took before the fence has run out, because leases are
//!    only granted by a leader-confirmed read and counted from when it was
//!    sent;
//! 3. move (Raft): the target owns the shards under new epochs.
//!
//! So at no moment can two sites hold a valid lease for one shard.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::client::ControlClient;
use crate::ops::MoveStep;
use crate::plan::{Decision, WRITE_LEASE};
use crate::switchover::{endpoints, move_spec, step, SwitchoverError};

/// Added to the lease wait, for clock-rate differences between hosts.
const LEASE_MARGIN: Duration = Duration::from_millis(500);

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub from: String,
    pub to: String,
    pub shards: usize,
    /// From the fence's commit to the move's commit.
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
    progress: impl FnMut(&str),
) -> Result<Report, SwitchoverError> {
    run_with_lease_wait(client, decision, automatic, who, why, WRITE_LEASE + LEASE_MARGIN, progress).await
}

/// [`run`] with another wait between fence and move. Only the drill's
/// deliberately broken build passes anything shorter than a write lease,
/// to prove that its invariant checks catch two writers.
#[doc(hidden)]
pub async fn run_with_lease_wait(
    client: &ControlClient,
    decision: &Decision,
    automatic: bool,
    who: &str,
    why: &str,
    lease_wait: Duration,
    mut progress: impl FnMut(&str),
) -> Result<Report, SwitchoverError> {
    let (from, to) = endpoints(decision)?;
    let spec = |step| move_spec(decision, step, None, automatic);
    let fence = step(client, &spec(MoveStep::Drain), "fence", who, why).await?;
    let started = Instant::now();
    progress(&format!("fenced {from}'s shards (audit #{}); waiting out its write lease", fence.audit_seq));
    tokio::time::sleep(lease_wait).await;
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
