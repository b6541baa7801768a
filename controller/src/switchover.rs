//! Carrying out a planned switchover decided by [`crate::plan`]:
//!
//! 1. drain (Raft): the source stops accepting writes for the shards;
//! 2. wait until the source reports a controller view that includes the
//!    drain *and* the target has confirmed its whole log: from then on the
//!    source cannot append for those shards, and the target has everything
//!    the source acknowledged;
//! 3. move (Raft, only if still drained towards the target): new owner,
//!    new epoch.
//!
//! If the target does not catch up in time, the drain is cancelled and the
//! source writes again: a switchover never leaves shards without a writer
//! on purpose. The write pause is measured from the drain to the move.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::client::{ClientError, ControlClient};
use crate::ops::{MoveStep, ShardMoveSpec};
use crate::plan::Decision;
use crate::state::MoveKind;

/// How often the reports are polled while draining.
const POLL: Duration = Duration::from_millis(100);

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub from: String,
    pub to: String,
    pub shards: usize,
    /// From the drain's commit to the move's commit: how long writes to
    /// these shards were refused (plus up to one view refresh, 300 ms,
    /// until the target sees it owns them).
    pub write_pause_ms: u64,
    /// Entries the target still had to confirm when the drain committed.
    pub drained_entries: u64,
    pub drain_audit_seq: u64,
    pub move_audit_seq: u64,
    pub result: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SwitchoverError {
    #[error("the plan was refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Control(#[from] ClientError),
    #[error("{step} refused by the controller: {result}")]
    StepRefused { step: &'static str, result: String },
    #[error("{to} did not confirm {from}'s log within {secs} s; {cancel}")]
    Timeout { from: String, to: String, secs: u64, cancel: String },
}

/// Runs the switchover `decision` describes. `progress` hears each step.
pub async fn run(
    client: &ControlClient,
    decision: &Decision,
    expect_epoch: Option<u64>,
    who: &str,
    why: &str,
    catch_up_timeout: Duration,
    mut progress: impl FnMut(&str),
) -> Result<Report, SwitchoverError> {
    let (from, to) = endpoints(decision)?;
    let spec = |step| move_spec(decision, step, expect_epoch, false);
    // If this driver dies while waiting, the leader cancels the drain a
    // little after the driver itself would have given up.
    let drain_spec = ShardMoveSpec {
        kind: MoveKind::Switchover,
        deadline_ms: (catch_up_timeout + crate::orphans::ORPHAN_GRACE).as_millis() as u64,
        ..spec(MoveStep::Drain)
    };
    let drain = step(client, &drain_spec, "drain", who, why).await?;
    let started = Instant::now();
    progress(&format!("drained at {from} (audit #{}); waiting for {to} to confirm {from}'s log", drain.audit_seq));

    let deadline = started + catch_up_timeout;
    let mut drained_entries = None;
    loop {
        if let Ok((_, status)) = client.status().await {
            let source = status.replicators.iter().find(|h| h.site == from);
            let lag = source.and_then(|h| h.links.iter().find(|l| l.peer == to)).map(|l| l.entries);
            let sees_drain = source.is_some_and(|h| h.view_index >= drain.log_index);
            if sees_drain {
                drained_entries.get_or_insert(lag.unwrap_or(0));
                if lag == Some(0) {
                    break;
                }
            }
        }
        if Instant::now() >= deadline {
            let cancel = match client.shard_move(&spec(MoveStep::Cancel), who, &format!("{why} (switchover timed out)")).await {
                Ok(o) if o.result.starts_with("ok") => format!("drain cancelled (audit #{}), {from} writes again", o.audit_seq),
                Ok(o) => format!("cancelling the drain was refused: {}", o.result),
                Err(e) => format!("cancelling the drain FAILED ({e}): run `tandem switchover --cancel` to let {from} write again"),
            };
            return Err(SwitchoverError::Timeout { from, to, secs: catch_up_timeout.as_secs(), cancel });
        }
        tokio::time::sleep(POLL).await;
    }
    progress(&format!("{to} has every entry of {from}'s log; moving ownership"));

    let moved = step(client, &spec(MoveStep::Move), "move", who, why).await?;
    let write_pause_ms = started.elapsed().as_millis() as u64;
    Ok(Report {
        from,
        to,
        shards: decision.shards.len(),
        write_pause_ms,
        drained_entries: drained_entries.unwrap_or(0),
        drain_audit_seq: drain.audit_seq,
        move_audit_seq: moved.audit_seq,
        result: moved.result,
    })
}

/// Commits one shard-move step; a refusal by the controller is an error
/// naming the step.
pub(crate) async fn step(
    client: &ControlClient,
    spec: &ShardMoveSpec,
    name: &'static str,
    who: &str,
    why: &str,
) -> Result<crate::client::ChangeOutcome, SwitchoverError> {
    let o = client.shard_move(spec, who, why).await?;
    if !o.result.starts_with("ok") {
        return Err(SwitchoverError::StepRefused { step: name, result: o.result });
    }
    Ok(o)
}

/// Source and target of a decision that may go ahead.
pub(crate) fn endpoints(decision: &Decision) -> Result<(String, String), SwitchoverError> {
    if let Some(r) = &decision.refused {
        return Err(SwitchoverError::Refused(r.clone()));
    }
    let to = decision.target.clone().ok_or_else(|| SwitchoverError::Refused("no target".into()))?;
    Ok((decision.from.clone(), to))
}

/// One step of moving a decision's shards (drained towards the target).
pub(crate) fn move_spec(decision: &Decision, step: MoveStep, expect_epoch: Option<u64>, automatic: bool) -> ShardMoveSpec {
    ShardMoveSpec {
        step,
        from: decision.from.clone(),
        to: decision.target.clone().unwrap_or_default(),
        shards: decision.shards.clone(),
        expect_epoch,
        require_drained: true,
        automatic,
        require_sync: decision.requires_sync,
        kind: MoveKind::Switchover,
        deadline_ms: 0,
        writer_last_heard_ms: 0,
    }
}

/// Undoes an unfinished drain (the source writes again). `automatic`: the
/// leader undoing a drain whose driver died, not an operator.
pub async fn cancel(client: &ControlClient, from: &str, to: &str, shards: Vec<u32>, automatic: bool, who: &str, why: &str) -> Result<String, SwitchoverError> {
    let spec = ShardMoveSpec {
        step: MoveStep::Cancel,
        from: from.into(),
        to: to.into(),
        shards,
        expect_epoch: None,
        require_drained: false,
        automatic,
        require_sync: false,
        kind: MoveKind::Switchover,
        deadline_ms: 0,
        writer_last_heard_ms: 0,
    };
    let o = step(client, &spec, "cancel", who, why).await?;
    Ok(format!("{} (audit #{})", o.result, o.audit_seq))
}
