//! Four-eyes approval, in the state machine: while the policy's
//! `four_eyes` is on, the riskiest changes are applied only when they
//! carry a request that a *second* admin approved, for exactly what they
//! do, before it expired; each approval is used once. The rule lives here,
//! not in the CLI, so a single admin certificate cannot get round it by
//! calling the API directly, and the drill can prove it.
//!
//! 1. `RequestApproval` records who asks for what (action and its
//!    arguments), the plan they were shown and why; its audit entry's
//!    number is the request's id.
//! 2. `DecideApproval` by another identity approves it (or anyone,
//!    the requester too, rejects it).
//! 3. The approver's own calls then carry the id ([`OpMeta::approval`]);
//!    the change they make must match the request's action and arguments.
//!
//! What needs it ([`needed`]): a failover that does not require the pair to
//! be in sync (`--accept-data-loss`), asked by an operator (tandem's own
//! automatic failovers are bounded by the lag limits, which are themselves
//! safety settings); a change of a safety setting ([`SAFETY_KEYS`]); a
//! contract's destruction (the replicator asks the controllers with
//! `UseApproval` before it destroys). DR activation runs offline, without
//! the controllers: its approval is a signed file, checked by
//! `crate::operations::dr`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Applied, Command, MoveStep, OpMeta};
use crate::state::{Approval, ApprovalState, ClusterState, MoveKind, SAFETY_KEYS};

/// How long a request may wait for its approval, and an approval for its use.
pub const TTL_MS: u64 = 60 * 60 * 1000;
/// Finished and expired requests kept in the state (the audit log keeps
/// every one): enough for `tandem approvals` to show recent history.
const KEEP_FINISHED: usize = 50;

pub const FAILOVER: &str = "failover --accept-data-loss";
pub const DESTROY: &str = "contract destroy";
pub const POLICY: &str = "policy set";
/// The actions a request may name (DR activation's approval is offline).
pub const ACTIONS: &[&str] = &[FAILOVER, DESTROY, POLICY];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSpec {
    pub action: String,
    pub args: BTreeMap<String, String>,
    pub plan: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionSpec {
    pub id: u64,
    pub approve: bool,
}

/// An approval used by a change made outside the state machine (a
/// contract destroyed at a replicator).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UseSpec {
    pub id: u64,
    pub action: String,
    pub args: BTreeMap<String, String>,
}

/// The identity part of an audit `who`: "ada (as root)" is ada (see
/// `service::attested`).
pub fn identity(who: &str) -> &str {
    who.split(" (as ").next().unwrap_or(who).trim()
}

pub fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The arguments of each action, built here only: the request and the
/// change that carries it out must name them alike to match.
pub fn failover_args(from: &str, to: &str) -> BTreeMap<String, String> {
    args(&[("from", from), ("to", to)])
}

pub fn policy_args(key: &str, value: &str) -> BTreeMap<String, String> {
    args(&[("key", key), ("value", value.trim())])
}

pub fn destroy_args(tenant: &str, contract: &str) -> BTreeMap<String, String> {
    args(&[("tenant", tenant), ("contract", contract)])
}

fn describe(action: &str, args: &BTreeMap<String, String>) -> String {
    let args: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{action} ({})", args.join(", "))
}

/// What `command` needs approved under `state`'s policy: the action, its
/// arguments, and whether applying it uses the approval up (a failover's
/// fence only checks it; its move uses it).
pub fn needed(state: &ClusterState, command: &Command) -> Option<(&'static str, BTreeMap<String, String>, bool)> {
    if !state.policy.four_eyes {
        return None;
    }
    match command {
        Command::ShardMove(s) if !s.automatic && !s.require_sync => {
            let by_failover = |state: &ClusterState| {
                s.shards.iter().any(|n| state.shards.get(*n as usize).and_then(|sh| sh.drain.as_ref()).is_some_and(|d| d.kind == MoveKind::Failover))
            };
            let lossy = match s.step {
                MoveStep::Drain => s.kind == MoveKind::Failover,
                MoveStep::Move => !s.require_drained || by_failover(state),
                MoveStep::Cancel => false,
            };
            lossy.then(|| (FAILOVER, failover_args(&s.from, &s.to), s.step == MoveStep::Move))
        }
        Command::SetPolicy(p) if SAFETY_KEYS.contains(&p.key.as_str()) => Some((POLICY, policy_args(&p.key, &p.value), true)),
        _ => None,
    }
}

/// The approval `meta` carries for `action` with `args`, if it may be used
/// now by `meta.who`; otherwise why not.
pub fn check(state: &ClusterState, meta: &OpMeta, action: &str, args: &BTreeMap<String, String>) -> Result<u64, String> {
    let Some(id) = meta.approval else {
        return Err(format!(
            "{} needs a second admin's approval (policy four_eyes): the CLI records a request; another admin carries it out with `tandem approve <id>`",
            describe(action, args)
        ));
    };
    let a = state.approvals.get(&id).ok_or_else(|| format!("approval request #{id} does not exist"))?;
    if a.action != action || &a.args != args {
        return Err(format!("approval #{id} is for {}, not for {}", describe(&a.action, &a.args), describe(action, args)));
    }
    if meta.at_unix_ms > a.expires_at_unix_ms {
        return Err(format!("approval request #{id} expired (requested by {}; ask again)", a.requested_by));
    }
    match &a.state {
        ApprovalState::Approved { by, .. } if identity(by) == identity(&meta.who) => Ok(id),
        ApprovalState::Approved { by, .. } => Err(format!("approval #{id} was given to {by}: only they carry it out")),
        ApprovalState::Pending => Err(format!("approval request #{id} is not approved yet")),
        ApprovalState::Rejected { by, .. } => Err(format!("approval request #{id} was rejected by {by}")),
        ApprovalState::Used { audit_seq, .. } => Err(format!("approval #{id} was already used (audit #{audit_seq})")),
    }
}

/// Marks approval `id` used by the change recorded as audit entry `audit_seq`.
pub fn mark_used(state: &mut ClusterState, id: u64, meta: &OpMeta, audit_seq: u64) {
    if let Some(a) = state.approvals.get_mut(&id) {
        a.state = ApprovalState::Used { by: meta.who.clone(), at_unix_ms: meta.at_unix_ms, audit_seq };
    }
}

pub(super) fn request(state: &mut ClusterState, spec: &RequestSpec, meta: &OpMeta) -> Applied {
    let what = format!("approval requested: {}", describe(&spec.action, &spec.args));
    let refuse = |why: String| Applied { what: what.clone(), result: format!("refused: {why}"), changed: false, refused: true };
    if !ACTIONS.contains(&spec.action.as_str()) {
        return refuse(format!("unknown action {:?}; the actions are {}", spec.action, ACTIONS.join(", ")));
    }
    prune(state, meta.at_unix_ms);
    // The id is this request's audit entry.
    let id = state.audit_len + 1;
    state.approvals.insert(
        id,
        Approval {
            id,
            action: spec.action.clone(),
            args: spec.args.clone(),
            plan: spec.plan.clone(),
            requested_by: meta.who.clone(),
            reason: meta.why.clone(),
            requested_at_unix_ms: meta.at_unix_ms,
            expires_at_unix_ms: meta.at_unix_ms + TTL_MS,
            state: ApprovalState::Pending,
        },
    );
    Applied { what, result: format!("ok: request #{id}, waiting for a second admin (expires in {} min)", TTL_MS / 60_000), changed: true, refused: false }
}

pub(super) fn decide(state: &mut ClusterState, spec: &DecisionSpec, meta: &OpMeta) -> Applied {
    let verb = if spec.approve { "approved" } else { "rejected" };
    let Some(a) = state.approvals.get_mut(&spec.id) else {
        return Applied { what: format!("approval #{}", spec.id), result: "refused: no such request".into(), changed: false, refused: true };
    };
    let what = format!("approval #{} {verb}: {}", a.id, describe(&a.action, &a.args));
    let refuse = |why: String| Applied { what: what.clone(), result: format!("refused: {why}"), changed: false, refused: true };
    if a.state != ApprovalState::Pending {
        return refuse(format!("the request is {} already", a.state.as_str()));
    }
    if meta.at_unix_ms > a.expires_at_unix_ms {
        return refuse("the request expired".into());
    }
    if spec.approve && identity(&a.requested_by) == identity(&meta.who) {
        return refuse(format!("{} asked for it; a second admin must approve it", a.requested_by));
    }
    a.state = if spec.approve {
        ApprovalState::Approved { by: meta.who.clone(), at_unix_ms: meta.at_unix_ms }
    } else {
        ApprovalState::Rejected { by: meta.who.clone(), at_unix_ms: meta.at_unix_ms }
    };
    Applied { what, result: "ok".into(), changed: true, refused: false }
}

pub(super) fn use_outside(state: &mut ClusterState, spec: &UseSpec, meta: &OpMeta) -> Applied {
    let what = format!("approval #{} used: {}", spec.id, describe(&spec.action, &spec.args));
    // Only a destroy is carried out outside the state machine; the others
    // are used by the change itself.
    if spec.action != DESTROY {
        return Applied { what, result: format!("refused: only a {DESTROY} is carried out outside the controllers"), changed: false, refused: true };
    }
    let checked = OpMeta { approval: Some(spec.id), ..meta.clone() };
    match check(state, &checked, &spec.action, &spec.args) {
        Ok(id) => {
            mark_used(state, id, meta, state.audit_len + 1);
            Applied { what, result: "ok".into(), changed: true, refused: false }
        }
        Err(why) => Applied { what, result: format!("refused: {why}"), changed: false, refused: true },
    }
}

/// Drops finished and long-expired requests beyond the newest
/// [`KEEP_FINISHED`] (the audit log keeps them all).
fn prune(state: &mut ClusterState, now: u64) {
    let finished: Vec<u64> = state
        .approvals
        .values()
        .filter(|a| !matches!(a.state, ApprovalState::Pending | ApprovalState::Approved { .. }) || now > a.expires_at_unix_ms)
        .map(|a| a.id)
        .collect();
    for id in finished.iter().take(finished.len().saturating_sub(KEEP_FINISHED)) {
        state.approvals.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{apply, PolicySpec, Request};

    fn meta(who: &str, at: u64, approval: Option<u64>) -> OpMeta {
        OpMeta { who: who.into(), why: "test".into(), at_unix_ms: at, clock: String::new(), approval }
    }

    fn four_eyes() -> ClusterState {
        let mut s = ClusterState { bootstrapped: true, ..Default::default() };
        s.policy.four_eyes = true;
        s
    }

    fn run(s: &mut ClusterState, command: Command, m: OpMeta) -> crate::ops::Outcome {
        apply(s, &Request { command, meta: m }, 1).0
    }

    fn set_lag(approval: Option<u64>, who: &str, at: u64, s: &mut ClusterState) -> crate::ops::Outcome {
        let spec = PolicySpec { key: "lag_s_max".into(), value: "30".into(), expect: "0".into() };
        run(s, Command::SetPolicy(spec), meta(who, at, approval))
    }

    #[test]
    fn a_safety_setting_changes_only_with_a_second_admins_approval() {
        let mut s = four_eyes();
        let o = set_lag(None, "ada", 10, &mut s);
        assert!(!o.accepted && o.result.contains("needs a second admin's approval"), "{o:?}");
        assert_eq!(s.policy.lag_s_max, 0);

        let ask = RequestSpec { action: POLICY.into(), args: args(&[("key", "lag_s_max"), ("value", "30")]), plan: "lag_s_max 0 -> 30".into() };
        let o = run(&mut s, Command::RequestApproval(ask), meta("ada", 20, None));
        assert!(o.accepted, "{o:?}");
        let id = o.audit_seq;
        // Not approved yet; then the requester cannot approve it herself.
        assert!(set_lag(Some(id), "ada", 30, &mut s).result.contains("not approved yet"));
        let o = run(&mut s, Command::DecideApproval(DecisionSpec { id, approve: true }), meta("ada (as root)", 40, None));
        assert!(!o.accepted && o.result.contains("a second admin must approve"), "{o:?}");
        let o = run(&mut s, Command::DecideApproval(DecisionSpec { id, approve: true }), meta("bob", 50, None));
        assert!(o.accepted, "{o:?}");
        // Only the approver carries it out, and only for what was asked.
        assert!(set_lag(Some(id), "ada", 60, &mut s).result.contains("given to bob"));
        let other = PolicySpec { key: "lag_s_max".into(), value: "3000".into(), expect: "0".into() };
        let o = run(&mut s, Command::SetPolicy(other), meta("bob", 60, Some(id)));
        assert!(o.result.contains("is for policy set (key=lag_s_max, value=30)"), "{o:?}");
        let o = set_lag(Some(id), "bob", 70, &mut s);
        assert!(o.accepted && o.changed, "{o:?}");
        assert_eq!(s.policy.lag_s_max, 30);
        assert!(matches!(s.approvals[&id].state, ApprovalState::Used { audit_seq, .. } if audit_seq == o.audit_seq));
        // Used once.
        let again = PolicySpec { key: "lag_s_max".into(), value: "30".into(), expect: "30".into() };
        assert!(run(&mut s, Command::SetPolicy(again), meta("bob", 80, Some(id))).result.contains("already used"));
        // Other keys need no approval.
        let o = run(&mut s, Command::SetPolicy(PolicySpec { key: "cooldown_s".into(), value: "60".into(), expect: "600".into() }), meta("ada", 90, None));
        assert!(o.accepted, "{o:?}");
    }

    #[test]
    fn requests_expire_and_rejections_stick() {
        let mut s = four_eyes();
        let ask = || RequestSpec { action: DESTROY.into(), args: args(&[("tenant", "t"), ("contract", "c")]), plan: String::new() };
        let id = run(&mut s, Command::RequestApproval(ask()), meta("ada", 0, None)).audit_seq;
        let late = run(&mut s, Command::DecideApproval(DecisionSpec { id, approve: true }), meta("bob", TTL_MS + 1, None));
        assert!(!late.accepted && late.result.contains("expired"), "{late:?}");
        let id = run(&mut s, Command::RequestApproval(ask()), meta("ada", 100, None)).audit_seq;
        assert!(run(&mut s, Command::DecideApproval(DecisionSpec { id, approve: false }), meta("ada", 110, None)).accepted, "a requester may withdraw");
        let use_it = UseSpec { id, action: DESTROY.into(), args: args(&[("tenant", "t"), ("contract", "c")]) };
        let o = run(&mut s, Command::UseApproval(use_it), meta("bob", 120, None));
        assert!(!o.accepted && o.result.contains("rejected by ada"), "{o:?}");
        let policy = RequestSpec { action: POLICY.into(), args: args(&[("key", "lag_s_max"), ("value", "9")]), plan: String::new() };
        let pid = run(&mut s, Command::RequestApproval(policy), meta("ada", 140, None)).audit_seq;
        assert!(run(&mut s, Command::DecideApproval(DecisionSpec { id: pid, approve: true }), meta("bob", 150, None)).accepted);
        let outside = UseSpec { id: pid, action: POLICY.into(), args: args(&[("key", "lag_s_max"), ("value", "9")]) };
        let o = run(&mut s, Command::UseApproval(outside), meta("bob", 160, None));
        assert!(!o.accepted && o.result.contains("only a contract destroy"), "{o:?}");
        assert!(matches!(s.approvals[&pid].state, ApprovalState::Approved { .. }), "not used up");
        let bad = RequestSpec { action: "rm -rf".into(), args: BTreeMap::new(), plan: String::new() };
        assert!(!run(&mut s, Command::RequestApproval(bad), meta("ada", 130, None)).accepted);
    }

    #[test]
    fn without_four_eyes_nothing_needs_approval() {
        let mut s = ClusterState { bootstrapped: true, ..Default::default() };
        assert!(set_lag(None, "ada", 10, &mut s).accepted);
    }
}
