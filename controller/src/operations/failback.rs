//! Failback of a returning site (`tandem failback`, the drill): (after a DR
//! activation: add its controller to the new generation's Raft
//! membership), mark it `recovering` (no shard can be moved to it), wait
//! until it has received everything and has shipped its own log to the
//! owners (so its divergent writes are quarantined), list the divergent
//! writes, and mark it `active`. Returning its shards is a switchover: the
//! report names them (`Shard::displaced_from` in the agreed state).

use std::collections::BTreeSet;
use std::time::Duration;

use tandem_net::Transport;
use tandem_proto::replicator as pb;

use super::{accepted, present, replication_client, replicator_call, Hooks, OpError, Plan};
use crate::client::ControlClient;
use crate::ops::{shard_ranges, SiteRoleSpec};
use crate::state::SiteRole;

/// How often the catch-up is polled.
const POLL: Duration = Duration::from_secs(2);
/// A replicator report older than this is not counted.
const FRESH_MS: u64 = 5_000;
/// Adding a learner waits for it to catch up: the join call allows for that.
const JOIN_CALL: Duration = Duration::from_secs(120);

/// What the caller asks for.
#[derive(Clone, Debug)]
pub struct Request {
    /// The returning site.
    pub site: String,
    pub who: String,
    pub why: String,
    /// How long to wait for the site to catch up.
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub site: String,
    /// The divergent writes the site holds (quarantined or not).
    pub divergent: Vec<pb::DivergentEntry>,
    pub active_audit_seq: u64,
    /// The shards a failover or DR activation took from the site that
    /// another site still owns: (owner, shard ranges as `--shards` takes
    /// them), to return with a switchover.
    pub return_shards: Vec<(String, String)>,
}

/// Plans and runs the failback of `req.site`. `Ok(None)`: the hooks
/// stopped it (a dry run); nothing changed.
pub async fn failback(client: &ControlClient, transport: &Transport, req: &Request, hooks: &mut impl Hooks) -> Result<Option<Report>, OpError> {
    let site = req.site.as_str();
    let (role, generation, return_shards) = check(client, site).await?;
    let mut plan = format!("plan: failback of {site}\n");
    if role == SiteRole::Fenced {
        plan.push_str(&format!("  0. add {site}'s controller (prepared by `tandem dr rejoin`) to generation {generation}'s Raft membership\n"));
    }
    plan.push_str(&format!("  1. mark {site} recovering (no shard can be moved to it meanwhile)\n"));
    plan.push_str(&format!("  2. wait until every other site has no backlog towards {site}, and it has none towards the owners\n"));
    plan.push_str(&format!("  3. list {site}'s divergent writes: quarantined there when the owners refuse them (kept, not served)\n"));
    plan.push_str(&format!("  4. mark {site} active; then return its shards with a switchover\n"));
    if !present(hooks, &Plan::text(plan)).await? {
        return Ok(None);
    }
    let (who, why) = (req.who.as_str(), req.why.as_str());
    if role == SiteRole::Fenced {
        let o = client
            .with_timeout(JOIN_CALL)
            .join(site, who, why)
            .await
            .map_err(|e| OpError::Failed(format!("{site}'s controller could not join (run `tandem dr rejoin` for it and start it first): {e}")))?;
        hooks.progress(&format!("{site}'s controller joined: {} (audit #{})", o.result, o.audit_seq));
    }
    if matches!(role, SiteRole::Fenced | SiteRole::Active) {
        let spec = SiteRoleSpec { site: site.into(), expect: role, role: SiteRole::Recovering };
        let o = accepted("marking the site recovering", client.set_site_role(&spec, who, why).await?)?;
        hooks.progress(&format!("{site} is recovering (audit #{})", o.audit_seq));
    }
    let replicator_addr = caught_up(client, site, req.timeout, hooks).await?;
    hooks.progress(&format!("{site} has caught up"));

    let channel = transport.channel(&replicator_addr).map_err(|e| OpError::Failed(e.to_string()))?;
    let divergent = replicator_call(site, replication_client(channel).divergent(pb::DivergentRequest {})).await.map_err(OpError::Failed)?.entries;
    let spec = SiteRoleSpec { site: site.into(), expect: SiteRole::Recovering, role: SiteRole::Active };
    let o = accepted("marking the site active", client.set_site_role(&spec, who, why).await?)?;
    Ok(Some(Report { site: site.into(), divergent, active_audit_seq: o.audit_seq, return_shards }))
}

/// Checks, on the leader's view (a controller that has just joined knows
/// nothing yet), that `site` can fail back; returns its role, the
/// generation, and where its shards went.
async fn check(client: &ControlClient, site: &str) -> Result<(SiteRole, u64, Vec<(String, String)>), OpError> {
    let status = client.leader_status().await?;
    let refused = |reason: String| OpError::Refused { action: "failback".into(), reason };
    let s = status.cluster.sites.get(site).ok_or_else(|| refused(format!("unknown site {site:?}")))?;
    let owned = status.cluster.shards.iter().filter(|sh| sh.owner == site).count();
    if owned > 0 {
        return Err(refused(format!("{site} owns {owned} shards: failback is for a site that lost its shards in a failover")));
    }
    if s.role == SiteRole::DrStandby {
        return Err(refused(format!("{site} is a DR standby; failback is for a site that lost its shards in a failover or a DR activation")));
    }
    let returns = status.cluster.displaced_from(site).into_iter().map(|(owner, shards)| (owner, shard_ranges(&shards).join(","))).collect();
    Ok((s.role, status.cluster.generation, returns))
}

/// Waits until nobody has a backlog towards `site` and it has none towards
/// the owners; returns its replicator's address.
async fn caught_up(client: &ControlClient, site: &str, timeout: Duration, hooks: &mut impl Hooks) -> Result<String, OpError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last: Option<(tokio::time::Instant, u64)> = None;
    loop {
        let (_, s) = client.observe().await?;
        let node = client.leader_status().await?;
        let fresh = |name: &str| s.replicators.iter().find(|h| h.site == name).filter(|h| s.now_unix_ms.saturating_sub(h.received_at_unix_ms) < FRESH_MS);
        let (mut entries, mut bytes) = (0u64, 0u64);
        for h in s.replicators.iter().filter(|h| h.site != site && fresh(&h.site).is_some()) {
            if let Some(l) = h.links.iter().find(|l| l.peer == site) {
                entries += l.entries;
                bytes += l.bytes;
            }
        }
        // Its own entries towards the owners: shipped, or refused and
        // quarantined there (so the divergent list below is complete).
        let owners: BTreeSet<&str> = node.cluster.shards.iter().map(|sh| sh.owner.as_str()).collect();
        let outgoing: u64 = fresh(site).map(|own| own.links.iter().filter(|l| owners.contains(l.peer.as_str())).map(|l| l.entries).sum()).unwrap_or(0);
        // Restored from a backup: it copies what its peers hold first.
        let restoring = fresh(site).map(|own| own.restoring.clone()).unwrap_or_default();
        if let Some(own) = fresh(site) {
            if entries == 0 && outgoing == 0 && restoring.is_empty() {
                return Ok(own.addr.clone());
            }
        }
        let now = tokio::time::Instant::now();
        let eta = match last {
            Some((t, b)) if b > bytes => {
                let rate = (b - bytes) as f64 / (now - t).as_secs_f64().max(0.001);
                format!("about {:.0} s left", bytes as f64 / rate)
            }
            _ => "estimating".into(),
        };
        let restoring = if restoring.is_empty() { String::new() } else { format!("; {site}: {restoring}") };
        hooks.progress(&format!(
            "catching up: {entries} entries, {bytes} bytes behind ({eta}); {outgoing} own entries not yet settled with the owners{restoring}"
        ));
        last = Some((now, bytes));
        if now >= deadline {
            return Err(OpError::Failed(format!(
                "{site} did not catch up within {} s; it stays recovering (run failback again to continue)",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}
