//! Four-eyes approval (`tandem approve`, `tandem reject`, `tandem
//! approvals`; the rule itself is in [`crate::ops::approval`]). An
//! operation that needs a second admin records a request through [`ask`]
//! and stops with [`OpError::AwaitingApproval`]; the second admin's
//! [`decide`] approves it, and they then run the same operation with a
//! client carrying the approval (`ControlClient::with_approval`).

use std::collections::BTreeMap;

use super::{present, Hooks, OpError, Plan};
use crate::client::ControlClient;
use crate::ops::approval::{RequestSpec, TTL_MS};
use crate::state::{Approval, ApprovalState};

/// Records a request for `action` with `args` and the `plan` the requester
/// saw; returns the error that says what happens next.
pub async fn ask(client: &ControlClient, action: &str, args: BTreeMap<String, String>, plan: &str, who: &str, why: &str) -> OpError {
    let spec = RequestSpec { action: action.into(), args, plan: plan.into() };
    match client.request_approval(&spec, who, why).await {
        Ok(o) if o.accepted => OpError::AwaitingApproval { id: o.audit_seq, action: action.into() },
        Ok(o) => OpError::StepRefused { step: "approval request", result: o.result },
        Err(e) => e.into(),
    }
}

/// The requests the cluster holds (pending, approved, and the recent
/// finished ones), newest first.
pub async fn list(client: &ControlClient) -> Result<Vec<Approval>, OpError> {
    let status = client.leader_status().await?;
    Ok(status.cluster.approvals.into_values().rev().collect())
}

/// What `tandem approve` / `tandem reject` asks for.
#[derive(Clone, Debug)]
pub struct Decide {
    pub id: u64,
    pub approve: bool,
    pub who: String,
    pub why: String,
}

/// Shows request `req.id` as its requester saw it, then approves or
/// rejects it. `Ok(None)`: the hooks stopped it.
pub async fn decide(client: &ControlClient, req: &Decide, hooks: &mut impl Hooks) -> Result<Option<Approval>, OpError> {
    let status = client.leader_status().await?;
    let refused = |reason: String| OpError::Refused { action: format!("approval #{}", req.id), reason };
    let Some(a) = status.cluster.approvals.get(&req.id).cloned() else {
        return Err(refused("no such request (`tandem approvals` lists them)".into()));
    };
    match &a.state {
        ApprovalState::Pending => {}
        // Approved, not used yet: carrying it out failed half-way (a
        // timeout, a new leader). It is carried out again; the state machine
        // lets only its approver do so.
        ApprovalState::Approved { by, .. } if req.approve => {
            hooks.plan(&Plan::text(format!("request #{}: {} was approved by {by} and is not used yet; carrying it out again", a.id, a.action)));
            return Ok(Some(a));
        }
        other => return Err(refused(format!("the request is {} already", other.as_str()))),
    }
    let verb = if req.approve { "approve" } else { "reject" };
    let expires_in = a.expires_at_unix_ms.saturating_sub(status.now_unix_ms) / 60_000;
    let plan = format!(
        "request #{}: {} {}\n  asked by {} ({}), expires in {expires_in} min (requests live {} min)\n  the plan they were shown:\n{}\nplan: {verb} it{}",
        a.id,
        a.action,
        a.args.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
        a.requested_by,
        a.reason,
        TTL_MS / 60_000,
        a.plan.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n"),
        if req.approve { ", then carry it out as yourself" } else { "" },
    );
    if !present(hooks, &Plan::text(plan)).await? {
        return Ok(None);
    }
    let outcome = client.decide_approval(req.id, req.approve, &req.who, &req.why).await?;
    if !outcome.accepted {
        return Err(OpError::StepRefused { step: "approval", result: outcome.result });
    }
    Ok(Some(a))
}
