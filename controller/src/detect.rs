//! Failure detection and the automatic failover, run by the Raft leader.
//!
//! A site is declared down only when the leader *and* at least one other
//! controller (not the site's own) have not received its replicator's
//! heartbeat for the policy's `down_after_s`: losing only the link to the
//! leader is not a site failure. For a down site that owns shards, the
//! planner decides (policy, pause, sync mode, cooldown); a decision to act
//! runs [`crate::failover::run`], the same code as `tandem failover`.
//! Detections and declined actions are recorded in the audit log once per
//! change of reason, not on every tick.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::client::ControlClient;
use crate::clock::Clock;
use crate::health::HealthBoard;
use crate::plan::{plan, Action, Observations};
use crate::raft::state_machine::StateReader;
use crate::raft::Raft;
use crate::state::{ClusterState, SiteRole};
use crate::status::NodeStatus;

const TICK: Duration = Duration::from_millis(500);

/// How each controller sees one site's replicator: milliseconds since its
/// last heartbeat, `None` when it never heard from it.
pub type Vantage = BTreeMap<String, Option<u64>>;

/// Per site: how long ago each controller (by site name) heard from it.
pub fn vantage_points(statuses: &BTreeMap<String, NodeStatus>, cluster: &ClusterState) -> BTreeMap<String, Vantage> {
    let mut out = BTreeMap::new();
    for site in cluster.sites.keys() {
        let mut seen = Vantage::new();
        for (observer, s) in statuses {
            let age = s.replicators.iter().find(|h| &h.site == site).map(|h| s.now_unix_ms.saturating_sub(h.received_at_unix_ms));
            seen.insert(observer.clone(), age);
        }
        out.insert(site.clone(), seen);
    }
    out
}

/// Sites the leader and at least one other controller (not their own)
/// have lost for `down_after_ms`.
pub fn down_sites(leader: &str, vantage: &BTreeMap<String, Vantage>, down_after_ms: u64) -> Vec<String> {
    let lost = |age: &Option<u64>| age.is_none_or(|a| a >= down_after_ms);
    vantage
        .iter()
        .filter(|(site, seen)| {
            let by_leader = seen.get(leader).is_some_and(lost);
            let by_another = seen.iter().any(|(observer, age)| observer != leader && observer != *site && lost(age));
            *site != leader && by_leader && by_another
        })
        .map(|(site, _)| site.clone())
        .collect()
}

pub struct Detector {
    pub raft: Raft,
    pub state: StateReader,
    pub health: HealthBoard,
    pub clock: Arc<dyn Clock>,
    pub site: String,
    pub node_id: u64,
    /// For proposals (bounded above the commit timeout).
    pub client: ControlClient,
    /// For reading the other controllers' views (short timeout).
    pub probe: ControlClient,
}

impl Detector {
    pub async fn run(self) {
        // Last reason recorded per site, so the audit log gets one line per change.
        let mut recorded: BTreeMap<String, String> = BTreeMap::new();
        let mut leader_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::time::sleep(TICK).await;
            if self.raft.metrics().borrow().current_leader != Some(self.node_id) {
                recorded.clear();
                leader_since = None;
                continue;
            }
            let since = *leader_since.get_or_insert_with(tokio::time::Instant::now);
            let cluster = self.state.cluster();
            // A new leader has heard nobody yet: it judges only after
            // listening for a full detection period.
            if !cluster.bootstrapped || since.elapsed() < Duration::from_secs(cluster.policy.down_after_s) {
                continue;
            }
            let now = self.clock.now_unix_ms();
            let mut statuses = BTreeMap::new();
            statuses.insert(
                self.site.clone(),
                NodeStatus { replicators: self.health.snapshot(), now_unix_ms: now, cluster: cluster.clone(), raft: Default::default() },
            );
            for site in cluster.sites.values().filter(|s| s.name != self.site) {
                if let Ok(s) = self.probe.status_at(&site.addr).await {
                    statuses.insert(site.name.clone(), s);
                }
            }
            let vantage = vantage_points(&statuses, &cluster);
            let down = down_sites(&self.site, &vantage, cluster.policy.down_after_s * 1000);
            for site in cluster.sites.keys() {
                if !down.contains(site) {
                    recorded.remove(site);
                }
            }
            for site in down {
                let owns = cluster.shards.iter().any(|s| s.owner == site);
                let Some(peer) = cluster.pairs.iter().find_map(|p| {
                    (p.site_a == site).then(|| p.site_b.clone()).or_else(|| (p.site_b == site).then(|| p.site_a.clone()))
                }) else {
                    continue;
                };
                if !owns || cluster.sites.get(&site).is_some_and(|s| s.role != SiteRole::Active) {
                    continue;
                }
                let obs = Observations { replicators: self.health.snapshot(), now_unix_ms: now };
                let decision = plan(&cluster, &obs, &Action::Failover { from: site.clone(), to: peer.clone(), accept_data_loss: false, automatic: true });
                let who = format!("controller@{}", self.site);
                let why = format!(
                    "site {site} lost for {} s by the leader ({}) and another controller",
                    cluster.policy.down_after_s, self.site
                );
                match &decision.refused {
                    Some(reason) => {
                        if recorded.get(&site) != Some(reason) {
                            tracing::warn!(site = %site, reason = %reason, "site down; automatic failover declined");
                            let what = format!("site {site} down; automatic failover to {peer} declined");
                            if self.client.record_event(&what, &format!("declined: {reason}"), &who, &why).await.is_ok() {
                                recorded.insert(site.clone(), reason.clone());
                            }
                        }
                    }
                    None => {
                        tracing::warn!(site = %site, to = %peer, "site down; automatic failover");
                        match crate::failover::run(&self.client, &decision, true, &who, &why, |line| tracing::info!("{line}")).await {
                            Ok(r) => tracing::warn!(from = %r.from, to = %r.to, shards = r.shards, "automatic failover done"),
                            Err(e) => tracing::error!(error = %e, "automatic failover failed"),
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vantage(ages: &[(&str, &[(&str, Option<u64>)])]) -> BTreeMap<String, Vantage> {
        ages.iter()
            .map(|(site, seen)| (site.to_string(), seen.iter().map(|(o, a)| (o.to_string(), *a)).collect()))
            .collect()
    }

    #[test]
    fn down_needs_the_leader_and_another_vantage_point() {
        // a lost by leader b and by c: down.
        let v = vantage(&[("a", &[("a", Some(0)), ("b", Some(9_000)), ("c", Some(9_000))])]);
        assert_eq!(down_sites("b", &v, 5_000), vec!["a".to_string()]);
        // Lost only by the leader (its link to a is cut): not down.
        let v = vantage(&[("a", &[("a", Some(0)), ("b", Some(9_000)), ("c", Some(100))])]);
        assert!(down_sites("b", &v, 5_000).is_empty());
        // a's own controller's opinion does not count.
        let v = vantage(&[("a", &[("a", None), ("b", Some(9_000))])]);
        assert!(down_sites("b", &v, 5_000).is_empty());
        // Never heard of at all by b and c counts as lost.
        let v = vantage(&[("a", &[("b", None), ("c", None)])]);
        assert_eq!(down_sites("b", &v, 5_000), vec!["a".to_string()]);
    }
}
