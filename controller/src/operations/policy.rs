//! Changing the automatic-failover policy (`tandem policy set`): one key at
//! a time, through Raft, from the value the operator saw (compare-and-set),
//! so an edit made meanwhile is refused rather than overwritten. The TOML's
//! `[policy]` only seeds the cluster at bootstrap; this is how it changes
//! afterwards.

use super::{present, Hooks, OpError, Plan};
use crate::client::{ChangeOutcome, ControlClient};
use crate::ops::PolicySpec;
use crate::state::Policy;

/// What `policy set` asks for.
#[derive(Clone, Debug)]
pub struct SetPolicy {
    pub key: String,
    pub value: String,
    /// The value the operator expects the key to hold now (`None`: the one
    /// the plan shows, read from the leader).
    pub expect: Option<String>,
    pub who: String,
    pub why: String,
}

/// Plans and applies one policy change. `Ok(None)`: the hooks stopped it
/// (a dry run, a "no").
pub async fn set(client: &ControlClient, req: &SetPolicy, hooks: &mut impl Hooks) -> Result<Option<ChangeOutcome>, OpError> {
    let status = client.leader_status().await?;
    let policy = &status.cluster.policy;
    let refused = |reason: String| OpError::Refused { action: format!("policy set {}", req.key), reason };
    // The same check the state machine applies, before asking anyone.
    policy.clone().set(&req.key, &req.value).map_err(refused)?;
    // A controller of a build older than the command cannot decode it: its
    // log would stall on the entry, and with it every later change. Older
    // builds report no version; a build that reports none itself (the
    // simulation) cannot tell them apart and does not check.
    if !status.raft.version.is_empty() {
        for site in status.cluster.sites.values() {
            if let Ok(s) = client.status_at(&site.addr).await {
                if s.raft.version.is_empty() {
                    return Err(refused(format!(
                        "{}'s controller runs a build older than policy changes; finish the rolling upgrade first (tandem status shows each build)",
                        site.name
                    )));
                }
            }
        }
    }
    let current = policy.get(&req.key).unwrap_or_default();
    let expect = req.expect.clone().unwrap_or_else(|| current.clone());
    if expect != current {
        return Err(refused(format!("{} is {current} now, not {expect}", req.key)));
    }
    let plan = if current == req.value.trim() {
        format!("plan: policy {}: no change, it is already {current} (the request is still recorded in the audit log)", req.key)
    } else {
        format!("plan: policy {}: {current} -> {} (through Raft, for every controller; audited)", req.key, req.value.trim())
    };
    if !present(hooks, &Plan::text(plan.clone())).await? {
        return Ok(None);
    }
    if policy.four_eyes && crate::state::SAFETY_KEYS.contains(&req.key.as_str()) && client.approval().is_none() {
        let args = crate::ops::approval::policy_args(&req.key, &req.value);
        return Err(super::approval::ask(client, crate::ops::approval::POLICY, args, &plan, &req.who, &req.why).await);
    }
    let spec = PolicySpec { key: req.key.clone(), value: req.value.trim().to_string(), expect };
    let outcome = client.set_policy(&spec, &req.who, &req.why).await?;
    if !outcome.accepted {
        return Err(OpError::StepRefused { step: "policy set", result: outcome.result });
    }
    Ok(Some(outcome))
}

/// The start-up check: what a daemon's `[policy]` says that the cluster's
/// agreed policy does not (the TOML only seeded the cluster at bootstrap).
pub fn config_drift(configured: &Policy, agreed: &Policy) -> Vec<String> {
    agreed.differences(configured).into_iter().map(|(key, cluster, toml)| format!("{key}: the cluster has {cluster}, this config says {toml}")).collect()
}
