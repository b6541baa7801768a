//! Pause and resume of automatic actions (`tandem pause`/`resume`, the
//! drill). A request that changes nothing is still recorded, so the audit
//! log shows that someone asked.

use super::{present, Hooks, OpError, Plan};
use crate::client::{Change, ChangeOutcome, ControlClient};

/// `pause`: true to pause, false to resume. `Ok(None)`: the hooks stopped
/// it (a dry run).
pub async fn pause(client: &ControlClient, pause: bool, who: &str, why: &str, hooks: &mut impl Hooks) -> Result<Option<ChangeOutcome>, OpError> {
    let (_, status) = client.status().await?;
    let paused = status.cluster.policy.paused;
    let (verb, would_change) = if pause { ("pause automatic actions", !paused) } else { ("resume automatic actions", paused) };
    let now = if paused { "paused" } else { "not paused" };
    let plan = if would_change {
        format!("plan: {verb} (now: {now})")
    } else {
        format!("plan: {verb}: no change, automatic actions are already {now} (it is still recorded in the audit log)")
    };
    if !present(hooks, &Plan::text(plan)).await? {
        return Ok(None);
    }
    let change = if pause { Change::Pause } else { Change::Resume };
    Ok(Some(client.change(change, who, why).await?))
}
