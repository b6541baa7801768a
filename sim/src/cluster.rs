//! A simulated three-site controller cluster: sites a and b in one city
//! (~1 ms apart), c the DR site in another (~30 ms away).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_controller::config::{ConfigRole, NodeConfig, PolicyConfig, RaftTimings, SiteConfig};
use tandem_controller::node::{Node, NodeDeps};
use tandem_controller::raft::runtime::seed_thread_rng;
use tandem_net::Transport;
use tandem_storage::MemKv;

use crate::clock::SimClock;
use crate::trace::Trace;

/// Port every simulated controller listens on.
pub const CONTROLLER_PORT: u16 = 7100;
/// Simulated time after which a run is abandoned.
pub const SIM_DURATION_MAX: Duration = Duration::from_secs(3600);
/// Fixed simulated epoch (2026-01-01T00:00:00Z) for audit timestamps.
pub const SIM_EPOCH_UNIX_S: u64 = 1_767_225_600;

/// The sites: name, node id, city, role.
const SITES: [(&str, u64, &str, ConfigRole); 3] = [
    ("a", 1, "city-1", ConfigRole::Active),
    ("b", 2, "city-1", ConfigRole::Active),
    ("c", 3, "city-2", ConfigRole::DrStandby),
];

/// What a site's node last reported about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub role: String,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub bootstrapped: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("simulation failed: {0}")]
    Turmoil(String),
    #[error("timed out after {waited:?} of simulated time waiting for: {what}")]
    Timeout { what: String, waited: Duration },
}

type Views = Arc<Mutex<BTreeMap<String, NodeView>>>;

pub struct SimCluster<'a> {
    sim: turmoil::Sim<'a>,
    disks: BTreeMap<String, MemKv>,
    views: Views,
    trace: Trace,
    pub seed: u64,
}

pub fn site_names() -> Vec<&'static str> {
    SITES.iter().map(|s| s.0).collect()
}

pub fn node_id_of(site: &str) -> Option<u64> {
    SITES.iter().find(|s| s.0 == site).map(|s| s.1)
}

fn config_for(site: &str) -> NodeConfig {
    NodeConfig {
        site: site.to_string(),
        data_dir: PathBuf::from("/sim").join(site),
        listen: Some(format!("0.0.0.0:{CONTROLLER_PORT}")),
        shard_count: 256,
        sites: SITES
            .iter()
            .map(|(name, id, city, role)| SiteConfig {
                name: name.to_string(),
                node_id: *id,
                city: city.to_string(),
                role: *role,
                addr: format!("{name}:{CONTROLLER_PORT}"),
            })
            .collect(),
        raft: RaftTimings::default(),
        policy: PolicyConfig::default(),
    }
}

impl<'a> SimCluster<'a> {
    /// Builds the simulation; nothing runs until it is stepped.
    pub fn new(seed: u64) -> Self {
        // openraft's election timeouts come from this thread's RNG, and
        // turmoil runs every host on this thread.
        seed_thread_rng(seed);
        let sim = turmoil::Builder::new()
            .rng_seed(seed)
            .simulation_duration(SIM_DURATION_MAX)
            .epoch(std::time::UNIX_EPOCH + Duration::from_secs(SIM_EPOCH_UNIX_S))
            .min_message_latency(Duration::from_micros(500))
            .max_message_latency(Duration::from_millis(2))
            .build();
        let mut cluster = SimCluster { sim, disks: BTreeMap::new(), views: Views::default(), trace: Trace::default(), seed };
        for site in site_names() {
            cluster.add_site(site);
        }
        // The DR links are ~30 ms; the in-city link keeps the default ~1 ms.
        for near in ["a", "b"] {
            cluster.sim.set_link_latency(near, "c", Duration::from_millis(30));
        }
        cluster
    }

    fn add_site(&mut self, site: &'static str) {
        let disk = MemKv::new();
        self.disks.insert(site.to_string(), disk.clone());
        let views = self.views.clone();
        let trace = self.trace.clone();
        self.sim.host(site, move || {
            let disk = disk.clone();
            let views = views.clone();
            let trace = trace.clone();
            async move {
                let deps = NodeDeps { kv: Arc::new(disk), transport: Transport::Turmoil, clock: Arc::new(SimClock) };
                let node = Node::start(config_for(site), deps).await?;
                trace.record(turmoil::elapsed(), format!("{site} started"));
                watch_node(site, node, views, trace).await;
                Ok(())
            }
        });
    }

    /// Steps the simulation until `done` holds for the views, or `limit` of
    /// simulated time passes.
    pub fn run_until(
        &mut self,
        what: &str,
        limit: Duration,
        done: impl Fn(&BTreeMap<String, NodeView>) -> bool,
    ) -> Result<(), SimError> {
        let start = self.sim.elapsed();
        loop {
            if done(&self.views()) {
                self.trace.record(self.sim.elapsed(), format!("reached: {what}"));
                return Ok(());
            }
            if self.sim.elapsed() - start > limit {
                return Err(SimError::Timeout { what: what.to_string(), waited: limit });
            }
            self.sim.step().map_err(|e| SimError::Turmoil(e.to_string()))?;
        }
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) -> Result<(), SimError> {
        let end = self.sim.elapsed() + d;
        while self.sim.elapsed() < end {
            self.sim.step().map_err(|e| SimError::Turmoil(e.to_string()))?;
        }
        Ok(())
    }

    pub fn views(&self) -> BTreeMap<String, NodeView> {
        self.views.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Cuts every link between `site` and the other sites.
    pub fn isolate(&mut self, site: &str) {
        for other in site_names().into_iter().filter(|o| *o != site) {
            self.sim.partition(site, other);
        }
        self.trace.record(self.sim.elapsed(), format!("fault: isolate {site}"));
    }

    /// Restores every link of `site`.
    pub fn heal(&mut self, site: &str) {
        for other in site_names().into_iter().filter(|o| *o != site) {
            self.sim.repair(site, other);
        }
        self.trace.record(self.sim.elapsed(), format!("heal: {site}"));
    }

    /// Crashes `site`'s host: its tasks stop and its disk loses what was
    /// not synced.
    pub fn crash(&mut self, site: &str) {
        self.sim.crash(site);
        if let Some(disk) = self.disks.get(site) {
            disk.crash();
        }
        self.views.lock().unwrap_or_else(|e| e.into_inner()).remove(site);
        self.trace.record(self.sim.elapsed(), format!("fault: crash {site}"));
    }

    /// Restarts a crashed `site` from what its disk kept.
    pub fn restart(&mut self, site: &str) {
        self.sim.bounce(site);
        self.trace.record(self.sim.elapsed(), format!("restart {site}"));
    }

    pub fn trace(&self) -> &Trace {
        &self.trace
    }
}

/// The site that leads with the highest term among `views`, if one does.
pub fn leader(views: &BTreeMap<String, NodeView>) -> Option<(String, u64)> {
    views.iter().filter(|(_, v)| v.role == "leader").max_by_key(|(_, v)| v.term).map(|(s, v)| (s.clone(), v.term))
}

/// Publishes the node's Raft view and records every change in the trace.
async fn watch_node(site: &'static str, node: Node, views: Views, trace: Trace) {
    let mut metrics = node.raft().metrics();
    let mut last: Option<NodeView> = None;
    loop {
        let status = node.status();
        let view = NodeView {
            role: status.raft.role.clone(),
            term: status.raft.term,
            leader_id: status.raft.leader_id,
            bootstrapped: status.cluster.bootstrapped,
        };
        if last.as_ref() != Some(&view) {
            trace.record(
                turmoil::elapsed(),
                format!(
                    "{site} {} term={} leader={} bootstrapped={}",
                    view.role,
                    view.term,
                    view.leader_id.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
                    view.bootstrapped
                ),
            );
            views.lock().unwrap_or_else(|e| e.into_inner()).insert(site.to_string(), view.clone());
            last = Some(view);
        }
        // The applied state can change without a metrics change; re-check
        // on a short simulated tick as well.
        if let Ok(Err(_)) = tokio::time::timeout(Duration::from_millis(50), metrics.changed()).await {
            // Raft stopped; keep reporting its last view without spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
