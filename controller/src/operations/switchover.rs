//! Planned switchover (`tandem switchover`, the drill): no data loss.
//!
//! 1. plan: the planner's rules, then the ones it cannot see from the
//!    controllers alone: `--expect-epoch`, and a target that still holds
//!    unquarantined divergent writes for these shards (it would serve them
//!    as current once it owns the shards again) is refused;
//! 2. drain (Raft): the source stops accepting writes for the shards;
//! 3. wait until the source reports a controller view that includes the
//!    drain *and* the target has confirmed its whole log: from then on the
//!    source cannot append for those shards, and the target has everything
//!    the source acknowledged;
//! 4. move (Raft, only if still drained towards the target): new owner,
//!    new epoch.
//!
//! If the target does not catch up in time, the drain is cancelled and the
//! source writes again: a switchover never leaves shards without a writer
//! on purpose. The write pause is measured from the drain to the move.

use std::time::Duration;

use serde::Serialize;
use tandem_net::Transport;
use tandem_proto::replicator as pb;
use tokio::time::Instant;

use super::{accepted, go_ahead, present, replication_client, replicator_call, Done, Hooks, OpError, Plan};
use crate::client::{ChangeOutcome, ClientError, ControlClient};
use crate::ops::{describe_shards, MoveStep, ShardMoveSpec};
use crate::plan::{plan, Action, Decision, Observations};
use crate::state::{ClusterState, MoveKind};

/// How often the reports are polled while draining.
const POLL: Duration = Duration::from_millis(100);

/// What the caller asks for.
#[derive(Clone, Debug)]
pub struct Request {
    pub from: String,
    pub to: String,
    /// `None`: every shard of `from`.
    pub shards: Option<Vec<u32>>,
    /// Refuse unless every shard still has this epoch.
    pub expect_epoch: Option<u64>,
    pub who: String,
    pub why: String,
    /// How long to wait for the target to confirm the source's log.
    pub catch_up_timeout: Duration,
}

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

/// Observes, plans, shows the plan to `hooks`, and runs it. `Ok(None)`:
/// the hooks stopped it (a dry run); nothing changed.
pub async fn switchover(client: &ControlClient, transport: &Transport, req: &Request, hooks: &mut impl Hooks) -> Result<Option<Done<Report>>, OpError> {
    let (status, obs) = client.observe().await?;
    let decision = decide(transport, &status.cluster, &obs, req).await;
    if !present(hooks, &Plan::of(&decision)).await? {
        return Ok(None);
    }
    let report = run(client, &decision, req, hooks).await?;
    Ok(Some(Done { plan: decision, report }))
}

/// The plan, every refusal included.
async fn decide(transport: &Transport, cluster: &ClusterState, obs: &Observations, req: &Request) -> Decision {
    let action = Action::Switchover { from: req.from.clone(), to: req.to.clone(), shards: req.shards.clone() };
    let mut decision = plan(cluster, obs, &action);
    if decision.refused.is_none() {
        decision.refused = stale_epoch(cluster, &decision, req.expect_epoch);
    }
    if decision.refused.is_none() {
        decision.refused = divergent_target(transport, obs, &req.to, &decision.shards).await;
    }
    decision
}

/// `--expect-epoch` that no longer holds for one of the shards.
fn stale_epoch(cluster: &ClusterState, decision: &Decision, expect_epoch: Option<u64>) -> Option<String> {
    let expected = expect_epoch?;
    let n = decision.shards.iter().find(|n| cluster.shards.get(**n as usize).is_some_and(|s| s.epoch != expected))?;
    Some(format!("--expect-epoch {expected} is stale: shard {n} has epoch {}", cluster.shards[*n as usize].epoch))
}

/// A target that still holds divergent writes for these shards (written
/// there under an older epoch, never received by the owner) would serve
/// them as current once it owns the shards again: refuse until they are
/// reconciled. A target whose replicator cannot be asked is refused too:
/// "no divergent writes" must be an answer, not a silence.
async fn divergent_target(transport: &Transport, obs: &Observations, to: &str, shards: &[u32]) -> Option<String> {
    let Some(addr) = obs.replicators.iter().find(|h| h.site == to).map(|h| h.addr.clone()) else {
        // The planner has already refused a target that does not report.
        return None;
    };
    let channel = match transport.channel(&addr) {
        Ok(c) => c,
        Err(e) => return Some(format!("cannot reach {to}'s replicator to ask whether it holds divergent writes: {e}")),
    };
    let mut rc = replication_client(channel);
    let reply = match replicator_call(to, rc.divergent(pb::DivergentRequest {})).await {
        Ok(r) => r,
        Err(e) => return Some(format!("{e} (asked whether it holds divergent writes)")),
    };
    let blocking: Vec<String> = reply
        .entries
        .iter()
        // Quarantined writes are no longer served; the others would be.
        .filter(|e| shards.contains(&e.shard) && !e.quarantined)
        .map(|e| format!("{}/{} (log entry {}, epoch {})", e.tenant, e.contract_id, e.seq, e.epoch))
        .collect();
    if blocking.is_empty() {
        return None;
    }
    Some(format!(
        "{to} holds divergent writes for these shards, which it would serve as current: {}. Reconcile them first (runbooks/verify-repair.md)",
        blocking.join(", ")
    ))
}

/// The steps of a decided switchover.
async fn run(client: &ControlClient, decision: &Decision, req: &Request, hooks: &mut impl Hooks) -> Result<Report, OpError> {
    let (from, to) = endpoints(decision)?;
    let (who, why) = (req.who.as_str(), req.why.as_str());
    let spec = |step| move_spec(decision, step, req.expect_epoch, false);
    // If this driver dies while waiting, the leader cancels the drain a
    // little after the driver itself would have given up.
    let drain_spec = ShardMoveSpec {
        kind: MoveKind::Switchover,
        deadline_ms: (req.catch_up_timeout + crate::orphans::ORPHAN_GRACE).as_millis() as u64,
        ..spec(MoveStep::Drain)
    };
    let drain = step(client, &drain_spec, "drain", who, why).await?;
    let started = Instant::now();
    hooks.progress(&format!("drained at {from} (audit #{}); waiting for {to} to confirm {from}'s log", drain.audit_seq));

    let deadline = started + req.catch_up_timeout;
    let mut drained_entries = None;
    let moved = loop {
        if let Ok((_, status)) = client.status().await {
            let source = status.replicators.iter().find(|h| h.site == from);
            let lag = source.and_then(|h| h.links.iter().find(|l| l.peer == to)).map(|l| l.entries);
            let sees_drain = source.is_some_and(|h| h.view_index >= drain.log_index);
            if sees_drain {
                drained_entries.get_or_insert(lag.unwrap_or(0));
                if lag == Some(0) {
                    hooks.progress(&format!("{to} has every entry of {from}'s log; moving ownership"));
                    // The leader checks it on its own reports, which may lag
                    // behind the ones seen here: then look again.
                    match client.shard_move(&spec(MoveStep::Move), who, why).await {
                        Ok(o) => break accepted("move", o)?,
                        Err(ClientError::Refused(m)) if m.contains(crate::ops::NOT_CAUGHT_UP) => hooks.progress(&m),
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            let cancel = match client.shard_move(&spec(MoveStep::Cancel), who, &format!("{why} (switchover timed out)")).await {
                Ok(o) if o.accepted => format!("drain cancelled (audit #{}), {from} writes again", o.audit_seq),
                Ok(o) => format!("cancelling the drain was refused: {}", o.result),
                Err(e) => format!("cancelling the drain FAILED ({e}): run `tandem switchover --cancel` to let {from} write again"),
            };
            return Err(OpError::Timeout { from, to, secs: req.catch_up_timeout.as_secs(), cancel });
        }
        tokio::time::sleep(POLL).await;
    };
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
pub(super) async fn step(client: &ControlClient, spec: &ShardMoveSpec, name: &'static str, who: &str, why: &str) -> Result<ChangeOutcome, OpError> {
    accepted(name, client.shard_move(spec, who, why).await?)
}

/// Source and target of a decision that may go ahead.
pub(super) fn endpoints(decision: &Decision) -> Result<(String, String), OpError> {
    go_ahead(decision)?;
    let to = decision.target.clone().ok_or_else(|| OpError::Refused { action: decision.action.clone(), reason: "no target".into() })?;
    Ok((decision.from.clone(), to))
}

/// One step of moving a decision's shards (drained towards the target).
pub(super) fn move_spec(decision: &Decision, step: MoveStep, expect_epoch: Option<u64>, automatic: bool) -> ShardMoveSpec {
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

/// What `tandem switchover --cancel` asks for.
#[derive(Clone, Debug)]
pub struct CancelRequest {
    pub from: String,
    pub to: String,
    /// `None`: every shard of `from` drained towards `to`.
    pub shards: Option<Vec<u32>>,
    pub who: String,
    pub why: String,
}

/// Undoes the drain an interrupted switchover left (the source writes
/// again). `Ok(None)`: nothing to cancel, or the hooks stopped it.
pub async fn cancel(client: &ControlClient, req: &CancelRequest, hooks: &mut impl Hooks) -> Result<Option<String>, OpError> {
    let (status, _) = client.observe().await?;
    let drained: Vec<u32> = req.shards.clone().unwrap_or_else(|| {
        (0..status.cluster.shards.len() as u32)
            .filter(|n| {
                let s = &status.cluster.shards[*n as usize];
                s.owner == req.from && s.moving_to.as_deref() == Some(req.to.as_str())
            })
            .collect()
    });
    if drained.is_empty() {
        hooks.plan(&Plan::text(format!("nothing to cancel: no shard of {} is being drained towards {}", req.from, req.to)));
        return Ok(None);
    }
    if !present(hooks, &Plan::text(format!("plan: cancel the drain of {} at {}", describe_shards(&drained), req.from))).await? {
        return Ok(None);
    }
    undo_drain(client, &req.from, &req.to, drained, false, &req.who, &req.why).await.map(Some)
}

/// The cancel step itself. `automatic`: the leader undoing a drain whose
/// driver died, not an operator.
pub(super) async fn undo_drain(
    client: &ControlClient,
    from: &str,
    to: &str,
    shards: Vec<u32>,
    automatic: bool,
    who: &str,
    why: &str,
) -> Result<String, OpError> {
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
