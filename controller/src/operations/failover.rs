//! Failover (`tandem failover`, the automatic detector, the drill): the
//! unplanned move of every shard of a site that is down (or must be
//! abandoned).
//!
//! 1. plan: refused when the target may be missing acknowledged writes
//!    (pair not in sync) unless `accept_data_loss`, and then the expected
//!    loss is stated; for the detector also policy, pause and cooldown;
//! 2. fence (Raft): the shards are marked as moving, so the old owner stops
//!    writing them the moment it sees the change (if it still can);
//! 3. move (Raft): the target owns the shards under new epochs. The leader
//!    holds the move until no lease the old owner took before the fence can
//!    still be valid (`crate::lease`: measured from the last lease it
//!    granted that site, so a site that died seconds ago has none left and
//!    the move goes through at once).
//!
//! So at no moment can two sites hold a valid lease for one shard.

use serde::Serialize;
use tokio::time::Instant;

use super::switchover::{endpoints, move_spec, step};
use super::{present, Done, Hooks, OpError, Plan};
use crate::client::ControlClient;
use crate::lease::LEASE_WAIT;
use crate::ops::{MoveStep, ShardMoveSpec};
use crate::orphans::ORPHAN_GRACE;
use crate::plan::{plan, Action, Decision, Observations};
use crate::state::{ClusterState, MoveKind};

/// What the caller asks for.
#[derive(Clone, Debug)]
pub struct Request {
    /// The site whose shards move (the failed one); `None`: the in-city
    /// peer of `to`.
    pub from: Option<String>,
    pub to: String,
    /// Fail over even though the target may be missing acknowledged writes.
    pub accept_data_loss: bool,
    /// Asked by tandem's own detector (policy, pause and cooldown apply).
    pub automatic: bool,
    /// Refuse unless every shard of `from` still has this epoch.
    pub expect_epoch: Option<u64>,
    /// Refuse unless the site whose shards move is this one.
    pub expect_owner: Option<String>,
    pub who: String,
    pub why: String,
}

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

/// Observes, plans, shows the plan to `hooks`, and runs it. `Ok(None)`:
/// the hooks stopped it (a dry run); nothing changed.
pub async fn failover(client: &ControlClient, req: &Request, hooks: &mut impl Hooks) -> Result<Option<Done<Report>>, OpError> {
    let (status, obs) = client.observe().await?;
    failover_on(client, &status.cluster, &obs, req, hooks).await
}

/// [`failover`] on a view the caller already holds (the detector judges on
/// the leader's own state and board).
pub async fn failover_on(
    client: &ControlClient,
    cluster: &ClusterState,
    obs: &Observations,
    req: &Request,
    hooks: &mut impl Hooks,
) -> Result<Option<Done<Report>>, OpError> {
    let decision = decide(cluster, obs, req)?;
    if !present(hooks, &Plan::of(&decision)).await? {
        return Ok(None);
    }
    // The rule the state machine applies (`crate::ops::approval::needed`):
    // an operator's failover that does not require the pair in sync.
    if cluster.policy.four_eyes && !req.automatic && !decision.requires_sync && client.approval().is_none() {
        let args = crate::ops::approval::failover_args(&decision.from, decision.target.as_deref().unwrap_or_default());
        return Err(super::approval::ask(client, crate::ops::approval::FAILOVER, args, &decision.explain(), &req.who, &req.why).await);
    }
    let report = run(client, &decision, req.automatic, &req.who, &req.why, hooks).await?;
    Ok(Some(Done { plan: decision, report }))
}

/// The plan, every refusal included.
fn decide(cluster: &ClusterState, obs: &Observations, req: &Request) -> Result<Decision, OpError> {
    let refused = |reason: String| OpError::Refused { action: "failover".into(), reason };
    let from = match &req.from {
        Some(f) => f.clone(),
        None => {
            cluster.peer_of(&req.to).map(str::to_string).ok_or_else(|| refused(format!("{} has no in-city peer: name the failed site with --from", req.to)))?
        }
    };
    if let Some(owner) = &req.expect_owner {
        if owner != &from {
            return Err(refused(format!("--expect-owner {owner}: the shards would move from {from}")));
        }
    }
    let action = Action::Failover { from, to: req.to.clone(), accept_data_loss: req.accept_data_loss, automatic: req.automatic };
    let mut decision = plan(cluster, obs, &action);
    if let (None, Some(expected)) = (&decision.refused, req.expect_epoch) {
        if let Some(n) = decision.shards.iter().find(|n| cluster.shards.get(**n as usize).is_some_and(|s| s.epoch != expected)) {
            decision.refused = Some(format!("--expect-epoch {expected} is stale: shard {n} has epoch {}", cluster.shards[*n as usize].epoch));
        }
    }
    Ok(decision)
}

/// The steps of a decided failover: fence, then move.
async fn run(client: &ControlClient, decision: &Decision, automatic: bool, who: &str, why: &str, hooks: &mut impl Hooks) -> Result<Report, OpError> {
    let (from, to) = endpoints(decision)?;
    let spec = |step| move_spec(decision, step, None, automatic);
    // If this driver dies before the move, the leader finishes the move (or
    // undoes the fence) soon after this one would have moved.
    let fence_spec = ShardMoveSpec { kind: MoveKind::Failover, deadline_ms: (LEASE_WAIT + ORPHAN_GRACE).as_millis() as u64, ..spec(MoveStep::Drain) };
    let fence = step(client, &fence_spec, "fence", who, why).await?;
    let started = Instant::now();
    hooks.progress(&format!(
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
/// leader finishing one its driver left, see [`super::orphan`]): the move,
/// made by tandem itself (so it counts as an automatic failover).
pub(super) async fn finish(client: &ControlClient, decision: &Decision, who: &str, why: &str) -> Result<String, OpError> {
    endpoints(decision)?;
    let moved = step(client, &move_spec(decision, MoveStep::Move, None, true), "move", who, why).await?;
    Ok(format!("{} (audit #{})", moved.result, moved.audit_seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_state;

    fn obs() -> Observations {
        let now = 100_000;
        let fresh = |s: &str| crate::health::ReplicatorHealth { site: s.into(), received_at_unix_ms: now - 100, ..Default::default() };
        Observations { replicators: vec![fresh("b"), fresh("c")], now_unix_ms: now }
    }

    fn req(from: Option<&str>, to: &str) -> Request {
        Request {
            from: from.map(str::to_string),
            to: to.into(),
            accept_data_loss: false,
            automatic: false,
            expect_epoch: None,
            expect_owner: None,
            who: "t".into(),
            why: "t".into(),
        }
    }

    #[test]
    fn the_failed_site_defaults_to_the_targets_in_city_peer() {
        let d = decide(&test_state(8), &obs(), &req(None, "b")).unwrap();
        assert_eq!((d.from.as_str(), d.target.as_deref(), d.refused.clone()), ("a", Some("b"), None));
        // The DR site has no in-city peer: the failed site must be named.
        let e = decide(&test_state(8), &obs(), &req(None, "c")).unwrap_err();
        assert!(e.refusal().is_some_and(|r| r.contains("no in-city peer")), "{e}");
    }

    #[test]
    fn expect_owner_and_expect_epoch_refuse_a_changed_layout() {
        let e = decide(&test_state(8), &obs(), &Request { expect_owner: Some("b".into()), ..req(Some("a"), "b") }).unwrap_err();
        assert!(e.refusal().is_some_and(|r| r.contains("--expect-owner b")), "{e}");
        let d = decide(&test_state(8), &obs(), &Request { expect_epoch: Some(7), ..req(Some("a"), "b") }).unwrap();
        assert!(d.refused.as_deref().is_some_and(|r| r.contains("--expect-epoch 7 is stale")), "{:?}", d.refused);
        let d = decide(&test_state(8), &obs(), &Request { expect_epoch: Some(1), ..req(Some("a"), "b") }).unwrap();
        assert_eq!(d.refused, None);
    }
}
