//! Failure detection and the automatic failover, run by the Raft leader.
//!
//! A site is declared down when the leader has not received its
//! replicator's heartbeat for the policy's `down_after_ms`, no controller
//! that answered still hears it, and a second vantage point (a controller
//! other than the leader and the site's own) confirms it, or none is left
//! to ask (see [`down_sites`]): losing only the link to the leader is not a
//! site failure. For a down site that owns shards, the planner decides
//! (policy, pause, sync direction, cooldown); the judgement is made again
//! right before the fence, and a decision to act runs
//! [`crate::operations::failover`], the same code as `tandem failover`. Declined
//! actions are recorded in the audit log once per change of reason, not on
//! every tick. The leader also finishes or undoes moves whose driver died
//! ([`crate::orphans`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::client::ControlClient;
use crate::clock::Clock;
use crate::health::HealthBoard;
use crate::operations::{failover, Hooks, OpError};
use crate::plan::{plan, Action, Observations};
use crate::raft::state_machine::StateReader;
use crate::raft::Raft;
use crate::state::{ClusterState, SiteRole};
use crate::status::NodeStatus;

/// How often the leader judges. Heartbeats come every 250 ms and a site is
/// down after 1.5 s without one: a judgement is at most a tick late.
const TICK: Duration = Duration::from_millis(200);

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

/// Why a site is judged down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// The leader and these other controllers (not the site's own) lost it.
    Confirmed(Vec<String>),
    /// Only the leader could judge: no controller other than the leader and
    /// the site's own answered, and the site's own does not hear it either.
    LeaderOnly,
    /// The site reports, to the leader, that its key provider has failed
    /// every call for `down_after_ms` (this error): it is up, but cannot
    /// wrap a new file's key, so it takes no writes.
    KeyProvider(String),
}

impl Evidence {
    pub fn describe(&self, leader: &str) -> String {
        match self {
            Evidence::Confirmed(others) => format!("the leader ({leader}) and {}", others.join(", ")),
            Evidence::LeaderOnly => format!("the leader ({leader}) alone: no other controller answered or had heard it"),
            Evidence::KeyProvider(e) => format!("its own reports to the leader ({leader}): its key provider fails ({e})"),
        }
    }
}

/// Sites lost for `down_after_ms` by the leader, with the evidence.
///
/// A second vantage point (a controller that is neither the leader nor the
/// site's own) confirms when one answered; any controller that answered and
/// still hears the site vetoes (only the leader's link to it is broken).
/// With no second vantage point left (the DR controller down, say), the
/// leader's judgement alone suffices: detection never decides who may write
/// (the fence, the lease wait and the epochs do), so a wrong judgement
/// costs a needless failover, never two writers; and a replicator the
/// leader cannot hear cannot renew its lease through the leader either
/// (through its own controller's forwarding it could, and then that
/// controller hears it and vetoes).
///
/// A controller that never heard a site has no opinion of it (it may just
/// have started, or the site's replicator not yet), except the leader once
/// it has been up for [`NEVER_HEARD_GRACE`] (`leader_heard_long_enough`): a
/// replicator that never reported in that long is as good as down.
pub fn down_sites(leader: &str, vantage: &BTreeMap<String, Vantage>, down_after_ms: u64, leader_heard_long_enough: bool) -> Vec<(String, Evidence)> {
    let mut out = Vec::new();
    for (site, seen) in vantage {
        let by_leader = match seen.get(leader) {
            Some(Some(age)) => *age >= down_after_ms,
            Some(None) => leader_heard_long_enough,
            None => false,
        };
        if !by_leader {
            continue;
        }
        // Observers other than the leader that have an opinion: lost or not.
        let opinions: Vec<(&String, u64)> = seen.iter().filter(|(o, _)| *o != leader).filter_map(|(o, age)| age.map(|a| (o, a))).collect();
        if opinions.iter().any(|(_, age)| *age < down_after_ms) {
            continue;
        }
        let others: Vec<String> = opinions.iter().filter(|(o, _)| *o != site).map(|(o, _)| (*o).clone()).collect();
        out.push((site.clone(), if others.is_empty() { Evidence::LeaderOnly } else { Evidence::Confirmed(others) }));
    }
    out
}

/// Sites whose fresh reports on `board` say their key provider has failed
/// for `down_after_ms` and that are not down already (`down`): they cannot
/// take writes, so their shards fail over like a lost site's (lossless only
/// while the pair is in sync: the planner decides as for a lost site).
/// `since` keeps when each started failing (on the leader's clock; a report
/// without the error, or none fresh, forgets it).
pub fn key_provider_down(
    board: &[crate::health::ReplicatorHealth],
    now_unix_ms: u64,
    down_after_ms: u64,
    since: &mut BTreeMap<String, u64>,
    down: &[(String, Evidence)],
) -> Vec<(String, Evidence)> {
    let failing: BTreeMap<&str, &str> = board
        .iter()
        .filter(|h| !h.keys_error.is_empty() && now_unix_ms.saturating_sub(h.received_at_unix_ms) <= down_after_ms)
        .map(|h| (h.site.as_str(), h.keys_error.as_str()))
        .collect();
    since.retain(|site, _| failing.contains_key(site.as_str()));
    let mut out = Vec::new();
    for (site, error) in failing {
        let from = *since.entry(site.to_string()).or_insert(now_unix_ms);
        if now_unix_ms.saturating_sub(from) >= down_after_ms && !down.iter().any(|(d, _)| d == site) {
            out.push((site.to_string(), Evidence::KeyProvider(error.to_string())));
        }
    }
    out
}

/// How long a leader must have been up before a site it never heard from
/// counts as down (at a cluster's start the replicators come up after the
/// controllers).
pub const NEVER_HEARD_GRACE: Duration = Duration::from_secs(10);

/// Per active site that owns shards and has an in-city peer: "" if its
/// automatic failover would go ahead were it lost now, else the planner's
/// reason (policy, pause, its direction out of sync, the peer not
/// reporting, the cooldown). Shown by `tandem status` and exported as
/// `tandem_auto_failover_available`, so "automatic failover would not
/// happen" is visible before the site is lost, not after.
pub fn readiness(cluster: &ClusterState, obs: &Observations) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, site) in &cluster.sites {
        if site.role != SiteRole::Active || !cluster.shards.iter().any(|s| &s.owner == name) {
            continue;
        }
        let Some(peer) = cluster.peer_of(name).map(str::to_string) else { continue };
        let d = plan(cluster, obs, &Action::Failover { from: name.clone(), to: peer, accept_data_loss: false, automatic: true });
        out.insert(name.clone(), d.refused.unwrap_or_default());
    }
    out
}

/// How often each other controller is asked what it hears.
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// Bound on one probe: a controller behind a slow link (the DR site over a
/// degraded one) still answers within it.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// "No other controller answered" means something only once each has been
/// asked for a full probe timeout by this leader: a new leader has no
/// answers yet, and must not judge alone on its own board meanwhile (a DR
/// leader whose lossy link to a lost a's heartbeats would fail a over
/// while b, which still hears a, had not yet been asked).
const ALONE_AFTER: Duration = Duration::from_millis(PROBE_TIMEOUT.as_millis() as u64 + PROBE_EVERY.as_millis() as u64);
/// An answer older than this gives no opinion (the controller may have
/// heard the site since).
const ANSWER_MAX_AGE: Duration = Duration::from_millis(1000);

/// The other controllers' latest answers, kept by one probe loop per
/// controller: a dead or slow one (the DR site over a degraded link) does
/// not delay the others', nor the leader's judgement.
#[derive(Clone, Default)]
struct Answers(Arc<std::sync::Mutex<BTreeMap<String, (tokio::time::Instant, NodeStatus)>>>);

impl Answers {
    fn put(&self, site: &str, status: NodeStatus) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(site.to_string(), (tokio::time::Instant::now(), status));
    }

    /// Answers younger than [`ANSWER_MAX_AGE`], each aged to now: the
    /// answering node's clock is advanced by the answer's age, so "heard
    /// 100 ms before an answer 600 ms old" reads as heard 700 ms ago.
    fn current(&self) -> BTreeMap<String, NodeStatus> {
        let answers = self.0.lock().unwrap_or_else(|p| p.into_inner());
        answers
            .iter()
            .filter(|(_, (at, _))| at.elapsed() <= ANSWER_MAX_AGE)
            .map(|(site, (at, s))| {
                let mut s = s.clone();
                s.now_unix_ms += at.elapsed().as_millis() as u64;
                (site.clone(), s)
            })
            .collect()
    }
}

/// Asks one controller for its view every [`PROBE_EVERY`] while this node
/// (`node_id`) leads, until the node stops (each call bounded by the probe
/// client's timeout). Only the leader judges, so a follower asks nobody.
async fn probe_loop(answers: Answers, probe: ControlClient, raft: Raft, node_id: u64, site: String, addr: String) {
    loop {
        let leading = raft.metrics().borrow().current_leader == Some(node_id);
        if leading {
            if let Ok(s) = probe.status_at(&addr).await {
                answers.put(&site, s);
            }
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
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
    /// For reading the other controllers' views: each probe loop takes a
    /// client of one controller from it ([`ControlClient::clone_for`]).
    pub probe: ControlClient,
    /// Told when this node leads, so lease waits start at the election.
    pub leases: crate::lease::LeaseBook,
    /// When this node started (its board is empty before).
    pub started: tokio::time::Instant,
}

impl Detector {
    pub async fn run(self) {
        // Last reason recorded per site, so the audit log gets one line per change.
        let mut recorded: BTreeMap<String, String> = BTreeMap::new();
        // Replicators report to every controller, followers included, so a
        // new leader's board is already current: it may judge at once,
        // unless this node itself only just started (it has heard nobody).
        let answers_cache = Answers::default();
        let mut probing = std::collections::BTreeSet::new();
        // Per site: since when (this node's clock) its reports say its key
        // provider fails.
        let mut keys_failing: BTreeMap<String, u64> = BTreeMap::new();
        let mut leading_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::time::sleep(TICK).await;
            let (leader, term) = {
                let m = self.raft.metrics();
                let m = m.borrow();
                (m.current_leader, m.current_term)
            };
            if leader != Some(self.node_id) {
                leading_since = None;
                recorded.clear();
                self.leases.not_leading();
                self.health.set_auto_failover(BTreeMap::new());
                continue;
            }
            self.leases.leading(term);
            let asked_long_enough = leading_since.get_or_insert_with(tokio::time::Instant::now).elapsed() >= ALONE_AFTER;
            let cluster = self.state.cluster();
            self.health.set_auto_failover(readiness(&cluster, &self.observations()));
            if !cluster.bootstrapped || self.started.elapsed() < Duration::from_millis(cluster.policy.down_after_ms) {
                continue;
            }
            for site in cluster.sites.values().filter(|s| s.name != self.site) {
                if probing.insert(site.name.clone()) {
                    let probe = self.probe.clone_for(&site.addr);
                    tokio::spawn(probe_loop(answers_cache.clone(), probe, self.raft.clone(), self.node_id, site.name.clone(), site.addr.clone()));
                }
            }
            self.finish_orphans(&cluster).await;
            let (mut down, answers) = self.judge(&cluster, &answers_cache);
            down.retain(|(_, evidence)| asked_long_enough || *evidence != Evidence::LeaderOnly);
            for site in cluster.sites.keys() {
                if !down.iter().any(|(d, _)| d == site) {
                    recorded.remove(site);
                }
            }
            let keyless = self.keys_failing(&cluster, &mut keys_failing, &down);
            for (site, evidence) in down.into_iter().chain(keyless) {
                self.fail_over(&cluster, &site, &evidence, &answers, &mut recorded).await;
            }
        }
    }

    /// [`key_provider_down`] on this leader's board as of now.
    fn keys_failing(&self, cluster: &ClusterState, since: &mut BTreeMap<String, u64>, down: &[(String, Evidence)]) -> Vec<(String, Evidence)> {
        key_provider_down(&self.health.snapshot(), self.clock.now_unix_ms(), cluster.policy.down_after_ms, since, down)
    }

    /// The sites down now, on this leader's board and the other
    /// controllers' latest answers (which are returned, for the re-check).
    fn judge(&self, cluster: &ClusterState, answers: &Answers) -> (Vec<(String, Evidence)>, BTreeMap<String, NodeStatus>) {
        let statuses = answers.current();
        (self.down_with(cluster, &statuses), statuses)
    }

    /// [`down_sites`] on this leader's board as of now and `others`' answers.
    fn down_with(&self, cluster: &ClusterState, others: &BTreeMap<String, NodeStatus>) -> Vec<(String, Evidence)> {
        let mut statuses = others.clone();
        let mine = NodeStatus {
            replicators: self.health.snapshot(),
            now_unix_ms: self.clock.now_unix_ms(),
            cluster: cluster.clone(),
            raft: Default::default(),
            auto_failover: Default::default(),
        };
        statuses.insert(self.site.clone(), mine);
        down_sites(&self.site, &vantage_points(&statuses, cluster), cluster.policy.down_after_ms, self.started.elapsed() >= NEVER_HEARD_GRACE)
    }

    fn observations(&self) -> Observations {
        Observations { replicators: self.health.snapshot(), now_unix_ms: self.clock.now_unix_ms() }
    }

    /// The automatic failover of one down site, or its recorded decline.
    async fn fail_over(
        &self,
        cluster: &ClusterState,
        site: &str,
        evidence: &Evidence,
        answers: &BTreeMap<String, NodeStatus>,
        recorded: &mut BTreeMap<String, String>,
    ) {
        // Shards a dead driver left fenced are included: failing them over
        // again (fence, lease wait, move) is the quickest way to finish it.
        let owns = cluster.shards.iter().any(|s| s.owner == site);
        let Some(peer) = cluster.peer_of(site).map(str::to_string) else {
            return;
        };
        if !owns || cluster.sites.get(site).is_some_and(|s| s.role != SiteRole::Active) {
            return;
        }
        let who = format!("controller@{}", self.site);
        let why = match evidence {
            Evidence::KeyProvider(e) => format!("site {site}'s key provider has failed for {} ms ({e}): it takes no writes", cluster.policy.down_after_ms),
            _ => format!("site {site} lost for {} ms by {}", cluster.policy.down_after_ms, evidence.describe(&self.site)),
        };
        let req = failover::Request {
            from: Some(site.into()),
            to: peer.clone(),
            accept_data_loss: false,
            automatic: true,
            expect_epoch: None,
            expect_owner: None,
            who: who.clone(),
            why: why.clone(),
        };
        let keys = matches!(evidence, Evidence::KeyProvider(_));
        let mut hooks = Recheck { detector: self, answers, site, peer: &peer, who: &who, why: &why, keys };
        match failover::failover_on(&self.client, cluster, &self.observations(), &req, &mut hooks).await {
            Ok(Some(done)) => tracing::warn!(from = %done.report.from, to = %done.report.to, shards = done.report.shards, "automatic failover done"),
            Ok(None) => {}
            Err(OpError::Refused { reason, .. }) => {
                if recorded.get(site) != Some(&reason) {
                    tracing::warn!(site = %site, reason = %reason, "site down; automatic failover declined");
                    let what = format!("site {site} down; automatic failover to {peer} declined");
                    if self.client.record_automatic(&what, &format!("declined: {reason}"), &who, &why).await.is_ok() {
                        recorded.insert(site.to_string(), reason);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "automatic failover failed"),
        }
    }

    /// Records `peer -> down` async for the survivor: its writes would
    /// otherwise each wait out the sync timeout for a site that is gone
    /// (the first one after an idle spell included). Saying "down may lack
    /// peer's writes" early is always safe; it only stops a lossless
    /// failover back to the dead site, which needs it to catch up anyway.
    async fn stop_waiting_for(&self, cluster: &ClusterState, peer: &str, down: &str, who: &str, why: &str) {
        let Some(pair) = cluster.pairs.iter().find(|p| p.joins(peer, down)) else { return };
        if pair.outgoing(peer) == crate::state::ReplicationMode::Async {
            return;
        }
        let spec = crate::ops::PairModeSpec {
            site: peer.to_string(),
            peer: down.to_string(),
            expect_state_id: pair.state_id,
            mode: crate::state::ReplicationMode::Async,
            since_seq: 0,
        };
        if let Err(e) = self.client.set_pair_mode(&spec, who, why).await {
            tracing::debug!(error = %e, "could not record the survivor's direction async");
        }
    }

    /// Finishes or undoes the moves whose drivers left them half-done.
    async fn finish_orphans(&self, cluster: &ClusterState) {
        let obs = self.observations();
        for orphan in crate::orphans::find(cluster, obs.now_unix_ms) {
            let who = format!("controller@{}", self.site);
            match crate::operations::orphan::finish(&self.client, cluster, &obs, &orphan, &who).await {
                Ok(done) => tracing::warn!(from = %orphan.from, to = %orphan.to, "{done}"),
                Err(e) => tracing::error!(from = %orphan.from, to = %orphan.to, error = %e, "could not resolve an unfinished move"),
            }
        }
    }
}

/// The detector's side of an automatic failover: right before the fence it
/// judges again on a fresh board, and stops the survivor waiting for the
/// lost site's acknowledgements.
struct Recheck<'a> {
    detector: &'a Detector,
    answers: &'a BTreeMap<String, NodeStatus>,
    site: &'a str,
    peer: &'a str,
    who: &'a str,
    why: &'a str,
    /// Failed over for its key provider (up, but taking no writes).
    keys: bool,
}

impl Hooks for Recheck<'_> {
    async fn confirm(&mut self) -> Result<bool, String> {
        // Judged on heartbeats up to a tick old: look again at this node's
        // board (heartbeats arrive every 250 ms) right before fencing, so a
        // site that just came back is not failed over on a stale judgement.
        let d = self.detector;
        let fresh = d.state.cluster();
        if self.keys {
            if !d.health.snapshot().iter().any(|h| h.site == self.site && !h.keys_error.is_empty()) {
                tracing::info!(site = %self.site, "the site's key provider answers again before the fence; no failover");
                return Ok(false);
            }
            // It still applies its peer's entries (that needs no key): the
            // peer's writes keep waiting for it, as they should.
            tracing::warn!(site = %self.site, to = %self.peer, "site's key provider fails; automatic failover");
            return Ok(true);
        }
        if !d.down_with(&fresh, self.answers).iter().any(|(s, _)| s == self.site) {
            tracing::info!(site = %self.site, "site reported again before the fence; no failover");
            return Ok(false);
        }
        tracing::warn!(site = %self.site, to = %self.peer, "site down; automatic failover");
        d.stop_waiting_for(&fresh, self.peer, self.site, self.who, self.why).await;
        Ok(true)
    }

    fn progress(&mut self, line: &str) {
        tracing::info!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per site, what each observer last heard of it (ms ago, or never).
    type Ages<'a> = [(&'a str, &'a [(&'a str, Option<u64>)])];

    fn vantage(ages: &Ages) -> BTreeMap<String, Vantage> {
        ages.iter().map(|(site, seen)| (site.to_string(), seen.iter().map(|(o, a)| (o.to_string(), *a)).collect())).collect()
    }

    fn down(leader: &str, v: &BTreeMap<String, Vantage>) -> Vec<(String, Evidence)> {
        down_sites(leader, v, 5_000, true)
    }

    #[test]
    fn down_needs_the_leader_and_another_vantage_point_when_one_answers() {
        // a lost by leader b and by c: down, confirmed.
        let v = vantage(&[("a", &[("a", Some(0)), ("b", Some(9_000)), ("c", Some(9_000))])]);
        assert!(down("b", &v).is_empty(), "a's own controller still hears it: not down");
        let v = vantage(&[("a", &[("b", Some(9_000)), ("c", Some(9_000))])]);
        assert_eq!(down("b", &v), vec![("a".to_string(), Evidence::Confirmed(vec!["c".into()]))]);
        // Lost only by the leader (its link to a is cut): c vetoes.
        let v = vantage(&[("a", &[("b", Some(9_000)), ("c", Some(100))])]);
        assert!(down("b", &v).is_empty());
        // Never heard of at all: lost for a leader up long enough; c, which
        // never heard it either, has no opinion.
        let v = vantage(&[("a", &[("b", None), ("c", None)])]);
        assert_eq!(down("b", &v), vec![("a".to_string(), Evidence::LeaderOnly)]);
        assert!(down_sites("b", &v, 5_000, false).is_empty(), "a leader that just started has heard nobody yet");
        let v = vantage(&[("a", &[("b", Some(9_000)), ("c", None)])]);
        assert_eq!(down("b", &v), vec![("a".to_string(), Evidence::LeaderOnly)]);
        // Heard by the leader: not down, whatever the others say.
        let v = vantage(&[("a", &[("b", Some(100)), ("c", Some(9_000))])]);
        assert!(down("b", &v).is_empty());
    }

    // The DR controller is down: only the leader and the lost site's own
    // controller are left. Before, detection was silently off here.
    #[test]
    fn without_a_second_vantage_point_the_leader_judges_alone() {
        let v = vantage(&[("a", &[("a", None), ("b", Some(9_000))])]);
        assert_eq!(down("b", &v), vec![("a".to_string(), Evidence::LeaderOnly)]);
        assert!(Evidence::LeaderOnly.describe("b").contains("no other controller answered"));
        // ... unless the site's own controller still hears its replicator.
        let v = vantage(&[("a", &[("a", Some(200)), ("b", Some(9_000))])]);
        assert!(down("b", &v).is_empty());
    }

    #[test]
    fn readiness_says_why_a_failover_would_not_happen() {
        let mut s = crate::ops::test_state(8);
        let now = 100_000;
        let fresh = |site: &str| crate::health::ReplicatorHealth { site: site.into(), received_at_unix_ms: now - 100, ..Default::default() };
        let obs = Observations { replicators: vec![fresh("a"), fresh("b"), fresh("c")], now_unix_ms: now };
        let r = readiness(&s, &obs);
        assert_eq!(r, [("a".to_string(), String::new()), ("b".to_string(), String::new())].into(), "c owns nothing");
        s.pairs[0].set_outgoing("a", crate::state::ReplicationMode::Async, 4);
        s.policy.paused = false;
        let r = readiness(&s, &obs);
        assert!(r["a"].contains("a -> b async"), "{r:?}");
        assert_eq!(r["b"], "", "b's direction is still sync");
        s.policy.paused = true;
        assert!(readiness(&s, &obs)["b"].contains("paused"));
    }

    // A site whose reports say its key provider fails is failed over once
    // they have said so for down_after_ms; a report without the error, or
    // no fresh one (then it is a lost site's case), forgets it.
    #[test]
    fn a_site_whose_key_provider_fails_is_judged_unwritable_after_down_after_ms() {
        let beat = |site: &str, at: u64, err: &str| crate::health::ReplicatorHealth {
            site: site.into(),
            received_at_unix_ms: at,
            keys_error: err.into(),
            ..Default::default()
        };
        let mut since = BTreeMap::new();
        let board = |at: u64, err: &str| vec![beat("a", at, err), beat("b", at, "")];
        assert!(key_provider_down(&board(10_000, "HSM: token gone"), 10_000, 1_500, &mut since, &[]).is_empty(), "just started failing");
        assert!(key_provider_down(&board(11_400, "HSM: token gone"), 11_400, 1_500, &mut since, &[]).is_empty());
        let out = key_provider_down(&board(11_500, "HSM: token gone"), 11_500, 1_500, &mut since, &[]);
        assert_eq!(out, vec![("a".to_string(), Evidence::KeyProvider("HSM: token gone".into()))]);
        assert!(
            key_provider_down(&board(11_600, "HSM: token gone"), 11_600, 1_500, &mut since, &[("a".into(), Evidence::LeaderOnly)]).is_empty(),
            "down already"
        );
        assert!(key_provider_down(&board(11_700, ""), 11_700, 1_500, &mut since, &[]).is_empty());
        assert!(since.is_empty(), "an answering provider is forgotten");
        key_provider_down(&board(20_000, "HSM: token gone"), 20_000, 1_500, &mut since, &[]);
        assert!(key_provider_down(&board(20_000, "HSM: token gone"), 30_000, 1_500, &mut since, &[]).is_empty(), "a stale report is not evidence");
    }

    // The leader's own site lost its replicator: the leader may judge it
    // (its controller is alive, but nothing writes a's shards).
    #[test]
    fn the_leaders_own_site_can_be_down() {
        let v = vantage(&[("a", &[("a", Some(9_000)), ("b", Some(9_000))])]);
        assert_eq!(down("a", &v), vec![("a".to_string(), Evidence::Confirmed(vec!["b".into()]))]);
        let v = vantage(&[("a", &[("a", Some(9_000)), ("b", Some(10))])]);
        assert!(down("a", &v).is_empty());
    }
}
