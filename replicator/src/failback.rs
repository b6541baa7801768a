//! Failback of a returning site, as `tandem failback` and the drill run it:
//! (after a DR activation: add its controller to the new generation's Raft
//! membership), mark it `recovering` (no shard can be moved to it), wait
//! until it has received everything and has shipped its own log to the
//! owners (so its divergent writes are quarantined), list the divergent
//! writes, and mark it `active`. Returning its shards is a switchover.

use std::time::Duration;

use tandem_controller::client::ControlClient;
use tandem_controller::ops::{shard_ranges, SiteRoleSpec};
use tandem_controller::state::SiteRole;
use tandem_net::Transport;
use tandem_proto::replicator as pb;

/// How often the catch-up is polled.
const POLL: Duration = Duration::from_secs(2);
/// A replicator report older than this is not counted.
const FRESH_MS: u64 = 5_000;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FailbackError(pub String);

impl From<tandem_controller::client::ClientError> for FailbackError {
    fn from(e: tandem_controller::client::ClientError) -> Self {
        FailbackError(e.to_string())
    }
}

#[derive(Clone, Debug)]
pub struct Report {
    pub site: String,
    /// The divergent writes the site holds (quarantined or not).
    pub divergent: Vec<pb::DivergentEntry>,
    pub active_audit_seq: u64,
}

/// Checks that `site` can fail back; returns its role.
pub async fn check(client: &ControlClient, site: &str) -> Result<SiteRole, FailbackError> {
    // The leader's view: a controller that has just joined knows nothing yet.
    let status = client.leader_status().await?;
    let s = status.cluster.sites.get(site).ok_or_else(|| FailbackError(format!("unknown site {site:?}")))?;
    let owned = status.cluster.shards.iter().filter(|sh| sh.owner == site).count();
    if owned > 0 {
        return Err(FailbackError(format!("{site} owns {owned} shards: failback is for a site that lost its shards in a failover")));
    }
    if s.role == SiteRole::DrStandby {
        return Err(FailbackError(format!("{site} is a DR standby; failback is for a site that lost its shards in a failover or a DR activation")));
    }
    Ok(s.role)
}

/// Runs the failback of `site`. `join_client` is used for the Raft join
/// (give it a call timeout long enough for a learner to catch up).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: &ControlClient,
    join_client: &ControlClient,
    transport: Transport,
    site: &str,
    who: &str,
    why: &str,
    timeout: Duration,
    mut progress: impl FnMut(&str),
) -> Result<Report, FailbackError> {
    let role = check(client, site).await?;
    if role == SiteRole::Fenced {
        let o = join_client
            .join(site, who, why)
            .await
            .map_err(|e| FailbackError(format!("{site}'s controller could not join (run `tandem dr rejoin` for it and start it first): {e}")))?;
        progress(&format!("{site}'s controller joined: {} (audit #{})", o.result, o.audit_seq));
    }
    if matches!(role, SiteRole::Fenced | SiteRole::Active) {
        let spec = SiteRoleSpec { site: site.into(), expect: role, role: SiteRole::Recovering };
        let o = client.set_site_role(&spec, who, why).await?;
        if !o.result.starts_with("ok") {
            return Err(FailbackError(format!("marking {site} recovering was refused: {}", o.result)));
        }
        progress(&format!("{site} is recovering (audit #{})", o.audit_seq));
    }

    let deadline = tokio::time::Instant::now() + timeout;
    let mut last: Option<(tokio::time::Instant, u64)> = None;
    let replicator_addr = loop {
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
        let owners: std::collections::BTreeSet<&str> = node.cluster.shards.iter().map(|sh| sh.owner.as_str()).collect();
        let outgoing: u64 = fresh(site).map(|own| own.links.iter().filter(|l| owners.contains(l.peer.as_str())).map(|l| l.entries).sum()).unwrap_or(0);
        if let Some(own) = fresh(site) {
            if entries == 0 && outgoing == 0 {
                break own.addr.clone();
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
        progress(&format!("catching up: {entries} entries, {bytes} bytes behind ({eta}); {outgoing} own entries not yet settled with the owners"));
        last = Some((now, bytes));
        if now >= deadline {
            return Err(FailbackError(format!("{site} did not catch up within {} s; it stays recovering (run failback again to continue)", timeout.as_secs())));
        }
        tokio::time::sleep(POLL).await;
    };
    progress(&format!("{site} has caught up"));

    let channel = transport.channel(&replicator_addr).map_err(|e| FailbackError(e.to_string()))?;
    let mut rc = crate::ship::client(channel);
    let divergent = tokio::time::timeout(Duration::from_secs(30), rc.divergent(pb::DivergentRequest {}))
        .await
        .map_err(|_| FailbackError(format!("{site}'s replicator did not answer")))?
        .map_err(|s| FailbackError(format!("{site}'s replicator: {}", s.message())))?
        .into_inner()
        .entries;
    let spec = SiteRoleSpec { site: site.into(), expect: SiteRole::Recovering, role: SiteRole::Active };
    let o = client.set_site_role(&spec, who, why).await?;
    if !o.result.starts_with("ok") {
        return Err(FailbackError(format!("marking {site} active was refused: {}", o.result)));
    }
    Ok(Report { site: site.into(), divergent, active_audit_seq: o.audit_seq })
}

/// Where the site's shards went: those a failover or DR activation took
/// from it that another site still owns (`Shard::displaced_from` in the
/// agreed state), as (owner, shard ranges as `--shards` takes them).
pub async fn shards_to_return(client: &ControlClient, site: &str) -> Result<Vec<(String, String)>, FailbackError> {
    let status = client.leader_status().await?;
    Ok(status.cluster.displaced_from(site).into_iter().map(|(owner, shards)| (owner, shard_ranges(&shards).join(","))).collect())
}
