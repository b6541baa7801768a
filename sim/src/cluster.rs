//! A simulated three-site cluster: sites a and b in one city (~1 ms
//! apart), c the DR site in another (~30 ms away). Each site is one turmoil
//! host running the real controller node and the real replicator, with
//! in-memory disks that lose unsynced writes when the host crashes, an
//! in-memory blob store that keeps what was stored, and a key provider the
//! drill can switch off.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_controller::config::{ConfigRole, NodeConfig, PolicyConfig, RaftTimings, SiteConfig};
use tandem_controller::node::{Node, NodeDeps};
use tandem_controller::raft::runtime::seed_thread_rng;
use tandem_crypto::{LocalKeyFile, SeededRandomSource};
use tandem_net::Transport;
use tandem_replicator::blob::BlobStore;
use tandem_replicator::config::{ReplicaSiteConfig, ReplicatorConfig};
use tandem_replicator::server::{Replicator, ReplicatorDeps};
use tandem_storage::MemKv;

use crate::clock::SimClock;
use crate::keys::DrillKeys;
use crate::trace::Trace;

/// Port every simulated controller listens on.
pub const CONTROLLER_PORT: u16 = 7100;
/// Port every simulated replicator listens on.
pub const REPLICATOR_PORT: u16 = 7110;
/// Shards in the simulated cluster.
pub const SHARDS: u32 = 64;
/// Simulated time after which a run is abandoned.
pub const SIM_DURATION_MAX: Duration = Duration::from_secs(3600);
/// Fixed simulated epoch (2026-01-01T00:00:00Z) for audit timestamps.
pub const SIM_EPOCH_UNIX_S: u64 = 1_767_225_600;

/// The sites: name, node id, city, role.
const SITES: [(&str, u64, &str, ConfigRole); 3] =
    [("a", 1, "city-1", ConfigRole::Active), ("b", 2, "city-1", ConfigRole::Active), ("c", 3, "city-2", ConfigRole::DrStandby)];

/// What a site's node last reported about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub role: String,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub bootstrapped: bool,
    /// The rest is only sampled for the report's timeline (not traced):
    /// shards each site owns, the in-city pair's mode, and the lag of each
    /// link ("a->c") in entries, as this node knows them.
    pub owned: BTreeMap<String, usize>,
    pub pair_mode: Option<String>,
    pub lag: BTreeMap<String, u64>,
    /// Shards being moved (drained, not yet moved), and the owner of each.
    pub moving: usize,
    pub owners: Vec<String>,
    /// Replicators whose last heartbeat is at most a second old.
    pub fresh: std::collections::BTreeSet<String>,
}

impl NodeView {
    /// What the trace records when it changes.
    fn traced(&self) -> (&str, u64, Option<u64>, bool) {
        (&self.role, self.term, self.leader_id, self.bootstrapped)
    }
}

/// The cluster as the leader saw it at one moment of simulated time.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sample {
    pub at_ms: u64,
    pub owned: BTreeMap<String, usize>,
    pub pair_mode: Option<String>,
    pub lag: BTreeMap<String, u64>,
}

/// How often a node's view is looked at again when Raft's metrics did not
/// change (the timeline samples every [`SAMPLE_EVERY`]).
const VIEW_RECHECK: Duration = Duration::from_millis(200);

/// How often the timeline is sampled (simulated time).
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("simulation failed: {0}")]
    Turmoil(String),
    #[error("timed out after {waited:?} of simulated time waiting for: {what}")]
    Timeout { what: String, waited: Duration },
}

type Views = Arc<Mutex<BTreeMap<String, NodeView>>>;

/// What survives a crash of a site: its disks, its blob store, its keys.
#[derive(Clone)]
pub struct SiteDisks {
    pub controller: MemKv,
    pub replicator: MemKv,
    pub blobs: BlobStore,
    /// The same store, for the drill's disk faults.
    pub faulty_blobs: crate::disk::FaultyBlobs,
    pub keys: DrillKeys,
    /// Controller stores set aside by `dr rejoin`.
    pub superseded: Vec<MemKv>,
    /// Which of the site's processes the drill has stopped on their own
    /// (`stop_controller`, `stop_replicator`) while the host stays up.
    pub stopped: Stopped,
    /// The site's clock (both processes read it), which the drill can skew.
    pub clock: SimClock,
}

/// Set while one process of a site is stopped alone.
#[derive(Clone, Default)]
pub struct Stopped {
    pub controller: Arc<AtomicBool>,
    pub replicator: Arc<AtomicBool>,
}

impl Stopped {
    pub fn controller(&self) -> bool {
        self.controller.load(Ordering::SeqCst)
    }

    pub fn replicator(&self) -> bool {
        self.replicator.load(Ordering::SeqCst)
    }

    pub fn set_controller(&self, stopped: bool) {
        self.controller.store(stopped, Ordering::SeqCst);
    }

    pub fn set_replicator(&self, stopped: bool) {
        self.replicator.store(stopped, Ordering::SeqCst);
    }
}

pub struct SimCluster<'a> {
    pub(crate) sim: turmoil::Sim<'a>,
    disks: BTreeMap<String, SiteDisks>,
    views: Views,
    trace: Trace,
    crashed: std::collections::BTreeSet<String>,
    pub seed: u64,
    samples: Vec<Sample>,
    skip_lease_wait: bool,
    /// Each link's latency as last set (sorted pair), for `reorder`, whose
    /// spread starts there; unset links have the in-city default.
    latencies: BTreeMap<(String, String), Duration>,
    default_latency: Duration,
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
        metrics_listen: None,
        shard_count: SHARDS,
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
        // The simulation is plaintext: deterministic, hosts trusted by construction.
        tls: None,
    }
}

fn replicator_config(site: &str) -> ReplicatorConfig {
    ReplicatorConfig {
        site: site.to_string(),
        data_dir: PathBuf::from("/sim").join(site),
        key_file: Some(PathBuf::from("<memory>")),
        retired_key_files: Vec::new(),
        hsm: None,
        // Its own site's controller first, as deployed.
        controllers: std::iter::once(site).chain(site_names().into_iter().filter(|s| *s != site)).map(|s| format!("{s}:{CONTROLLER_PORT}")).collect(),
        listen: Some(format!("0.0.0.0:{REPLICATOR_PORT}")),
        metrics_listen: None,
        sync_timeout_ms: 700,
        staged_ttl_ms: 10 * 60 * 1000,
        blob_url: None,
        blob_options: Default::default(),
        sites: site_names().into_iter().map(|s| ReplicaSiteConfig { name: s.to_string(), addr: replicator_addr(s), send_limit_mib_s: 0 }).collect(),
        tls: None,
    }
}

/// host:port of a site's replicator inside the simulation.
pub fn replicator_addr(site: &str) -> String {
    format!("{site}:{REPLICATOR_PORT}")
}

fn link_key(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

/// host:port of a site's controller inside the simulation.
pub fn controller_addr(site: &str) -> String {
    format!("{site}:{CONTROLLER_PORT}")
}

impl<'a> SimCluster<'a> {
    /// Builds the simulation; nothing runs until it is stepped.
    pub fn new(seed: u64) -> Self {
        Self::with_links(seed, Duration::from_millis(1), Duration::from_millis(30))
    }

    /// Like [`SimCluster::new`] with the one-way latencies of the in-city
    /// links (and the client's) and of the links to the DR site.
    pub fn with_links(seed: u64, in_city: Duration, dr: Duration) -> Self {
        Self::build(seed, in_city, dr, false)
    }

    /// [`SimCluster::with_links`]; `skip_lease_wait` is the deliberately
    /// broken build: the controllers move shards without waiting out the
    /// old owner's write lease.
    pub fn build(seed: u64, in_city: Duration, dr: Duration, skip_lease_wait: bool) -> Self {
        // openraft's election timeouts come from this thread's RNG, and
        // turmoil runs every host on this thread.
        seed_thread_rng(seed);
        // The links' segment losses are drawn from the seed too.
        tandem_net::reset_tcp_loss(seed ^ 0x6c6f_7373);
        let sim = turmoil::Builder::new()
            .rng_seed(seed)
            .simulation_duration(SIM_DURATION_MAX)
            .epoch(std::time::UNIX_EPOCH + Duration::from_secs(SIM_EPOCH_UNIX_S))
            // A paused site's listen backlog fills with the connection
            // attempts it held (a kernel queues them for a stopped
            // process): room for them, as somaxconn gives a real host.
            .tcp_capacity(1024)
            .min_message_latency(in_city / 2)
            .max_message_latency(in_city * 2)
            .build();
        // One KEK for every site (as the deployment shares its key provider),
        // drawn from the seed.
        let kek = Arc::new(LocalKeyFile::in_memory("drill-kek", &SeededRandomSource::new(seed)).expect("a valid KEK id"));
        let mut cluster = SimCluster {
            sim,
            disks: BTreeMap::new(),
            views: Views::default(),
            trace: Trace::default(),
            crashed: Default::default(),
            seed,
            samples: Vec::new(),
            skip_lease_wait,
            latencies: BTreeMap::new(),
            default_latency: in_city * 2,
        };
        for site in site_names() {
            cluster.add_site(site, kek.clone());
        }
        for near in ["a", "b"] {
            cluster.set_latency(near, "c", dr);
        }
        cluster
    }

    fn add_site(&mut self, site: &'static str, kek: Arc<LocalKeyFile>) {
        let faulty_blobs = crate::disk::FaultyBlobs::default();
        let disks = SiteDisks {
            controller: MemKv::new(),
            replicator: MemKv::new(),
            blobs: BlobStore::over(Arc::new(faulty_blobs.clone())),
            faulty_blobs,
            keys: DrillKeys::new(kek),
            superseded: Vec::new(),
            stopped: Stopped::default(),
            clock: SimClock::default(),
        };
        self.disks.insert(site.to_string(), disks.clone());
        let views = self.views.clone();
        let trace = self.trace.clone();
        let seed = self.seed;
        let hold_moves = !self.skip_lease_wait;
        self.sim.host(site, move || {
            let disks = disks.clone();
            let views = views.clone();
            let trace = trace.clone();
            async move {
                let start_node = {
                    let (kv, clock) = (disks.controller.clone(), disks.clock.clone());
                    move || {
                        let deps = NodeDeps { kv: Arc::new(kv.clone()), transport: Transport::Turmoil, clock: Arc::new(clock.clone()), hold_moves };
                        Node::start(config_for(site), deps)
                    }
                };
                let node = start_node().await?;
                let start_replicator = {
                    let disks = disks.clone();
                    move || {
                        // Every start draws its randomness from the seed, the site and the time.
                        let salt = site.bytes().fold(seed, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)) ^ crate::trace::now().as_nanos() as u64;
                        let deps = ReplicatorDeps {
                            kv: Arc::new(disks.replicator.clone()),
                            blobs: disks.blobs.clone(),
                            keys: Arc::new(disks.keys.clone()),
                            rng: Arc::new(SeededRandomSource::new(salt)),
                            clock: Arc::new(disks.clock.clone()),
                            transport: Transport::Turmoil,
                        };
                        Replicator::start(replicator_config(site), deps)
                    }
                };
                let replicator = start_replicator().await?;
                trace.record(crate::trace::now(), format!("{site} started"));
                let processes = Processes { site, views, trace, stopped: disks.stopped.clone() };
                processes.supervise(node, replicator, start_node, start_replicator).await;
                Ok(())
            }
        });
    }

    /// Steps the simulation until `done` holds for the views, or `limit` of
    /// simulated time passes.
    pub fn run_until(&mut self, what: &str, limit: Duration, done: impl Fn(&BTreeMap<String, NodeView>) -> bool) -> Result<(), SimError> {
        let start = self.sim.elapsed();
        loop {
            if done(&self.views()) {
                self.trace.record(self.sim.elapsed(), format!("reached: {what}"));
                return Ok(());
            }
            if self.sim.elapsed() - start > limit {
                return Err(SimError::Timeout { what: what.to_string(), waited: limit });
            }
            self.step()?;
        }
    }

    /// Steps the simulation until `done` returns true, or `limit` passes.
    pub fn run_until_flag(&mut self, what: &str, limit: Duration, done: impl Fn() -> bool) -> Result<(), SimError> {
        let start = self.sim.elapsed();
        while !done() {
            if self.sim.elapsed() - start > limit {
                return Err(SimError::Timeout { what: what.to_string(), waited: limit });
            }
            self.step()?;
        }
        Ok(())
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) -> Result<(), SimError> {
        let end = self.sim.elapsed() + d;
        while self.sim.elapsed() < end {
            self.step()?;
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

    /// Crashes `site`'s host: its tasks stop and its disks lose what was
    /// not synced.
    pub fn crash(&mut self, site: &str) {
        self.stop_site(site, "fault: crash");
    }

    /// A power cut that tears each store's write-ahead log: a prefix of its
    /// unsynced batches (drawn from the seed) reaches the disk, the rest is
    /// lost.
    pub fn power_cut(&mut self, site: &str) {
        use rand::{Rng, SeedableRng};
        let salt = site.bytes().fold(self.seed ^ 0x7072_6566, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)) ^ self.sim.elapsed().as_millis() as u64;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(salt);
        let unsynced = |kv: &MemKv| kv.unsynced_batches();
        let keep = (rng.gen_range(0..=unsynced(&self.disks[site].controller)), rng.gen_range(0..=unsynced(&self.disks[site].replicator)));
        self.stop_keeping(site, keep, format!("fault: power cut {site} (unsynced batches kept: controller {}, replicator {})", keep.0, keep.1));
    }

    /// Stops every process of `site` as a power loss does, recorded in the
    /// trace as `why` (an SRE stopping a site for the DR runbook is not a
    /// fault).
    pub fn stop_site(&mut self, site: &str, why: &str) {
        self.stop_keeping(site, (0, 0), format!("{why} {site}"));
    }

    /// Stops `site`'s host; its controller and replicator stores keep the
    /// first `keep` of their unsynced batches (0: all lost); `trace` says so.
    fn stop_keeping(&mut self, site: &str, keep: (usize, usize), trace: String) {
        self.sim.crash(site);
        if let Some(disks) = self.disks.get(site) {
            disks.controller.crash_keeping(keep.0);
            disks.replicator.crash_keeping(keep.1);
        }
        self.crashed.insert(site.to_string());
        self.views.lock().unwrap_or_else(|e| e.into_inner()).remove(site);
        self.trace.record(self.sim.elapsed(), trace);
    }

    /// Restarts a crashed `site` from what its disks kept.
    pub fn restart(&mut self, site: &str) {
        self.sim.bounce(site);
        self.crashed.remove(site);
        self.trace.record(self.sim.elapsed(), format!("restart {site}"));
    }

    /// Empties a (crashed) site's controller store, keeping a copy of what
    /// it held in [`SiteDisks::superseded`] (`tandem dr rejoin` renames the
    /// old store and never deletes it).
    pub fn reset_controller_store(&mut self, site: &str) -> Result<(), String> {
        use tandem_storage::{Durability, KvStore, WriteBatch};
        let disks = self.disks.get_mut(site).ok_or_else(|| format!("unknown site {site}"))?;
        let all = disks.controller.range(b"", &[0xff; 16], usize::MAX).map_err(|e| e.to_string())?;
        let kept = MemKv::new();
        let mut copy = WriteBatch::new();
        let mut wipe = WriteBatch::new();
        for (k, v) in all {
            copy.put(k.clone(), v);
            wipe.delete(k);
        }
        kept.write(copy, Durability::Sync).map_err(|e| e.to_string())?;
        disks.controller.write(wipe, Durability::Sync).map_err(|e| e.to_string())?;
        disks.superseded.push(kept);
        Ok(())
    }

    /// Whether `site` is up (not crashed).
    pub fn is_up(&self, site: &str) -> bool {
        !self.crashed.contains(site)
    }

    /// A site's disks (the drill's checks read them after a run).
    pub fn disks(&self, site: &str) -> &SiteDisks {
        &self.disks[site]
    }

    pub fn elapsed(&self) -> Duration {
        self.sim.elapsed()
    }

    /// Steps the simulation once (and samples the timeline when due).
    pub fn step(&mut self) -> Result<(), SimError> {
        self.sim.step().map_err(|e| SimError::Turmoil(e.to_string()))?;
        let now = self.sim.elapsed().as_millis() as u64;
        if self.samples.last().is_none_or(|s| now >= s.at_ms + SAMPLE_EVERY.as_millis() as u64) {
            let views = self.views();
            // The leader's view if a running node knows one, else any
            // running node's.
            let running = views.iter().filter(|(site, _)| self.is_up(site));
            let pick = running.clone().find(|(_, v)| v.role == "leader").or_else(|| running.clone().next());
            if let Some((_, v)) = pick {
                // Each replicator reports to its own site's controller, so
                // a link's lag is best known there.
                let mut lag = BTreeMap::new();
                for (site, view) in running {
                    lag.extend(view.lag.iter().filter(|(link, _)| link.starts_with(&format!("{site}->"))).map(|(k, v)| (k.clone(), *v)));
                }
                self.samples.push(Sample { at_ms: now, owned: v.owned.clone(), pair_mode: v.pair_mode.clone(), lag });
            }
        }
        Ok(())
    }

    /// The timeline sampled so far.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Cuts the link between two hosts, both ways.
    pub fn partition(&mut self, a: &str, b: &str) {
        self.sim.partition(a, b);
    }

    /// Drops what `from` sends to `to`.
    pub fn partition_oneway(&mut self, from: &str, to: &str) {
        self.sim.partition_oneway(from, to);
    }

    /// Restores a link, both ways.
    pub fn repair(&mut self, a: &str, b: &str) {
        self.sim.repair(a, b);
    }

    /// Freezes what `site` sends and receives, both ways, with every other
    /// site and the client (a paused process, as the rest of the cluster
    /// sees it: silence, then everything at once); see `sim/README.md`.
    pub fn pause(&mut self, site: &str) {
        for other in site_names().into_iter().filter(|o| *o != site).chain(["client"]) {
            self.sim.hold(site, other);
        }
    }

    /// Delivers everything held since [`SimCluster::pause`] of `site`.
    pub fn resume(&mut self, site: &str) {
        for other in site_names().into_iter().filter(|o| *o != site).chain(["client"]) {
            self.sim.release(site, other);
        }
    }

    /// Loses `rate` of the segments between two hosts, both ways, the way
    /// TCP experiences it: each lost segment holds its stream for a
    /// retransmission timeout (see `tandem_net::set_tcp_loss`). turmoil's
    /// own fail rate would never resend a segment, which is a dead
    /// connection rather than a lossy link.
    pub fn set_loss(&mut self, a: &str, b: &str, rate: f64) {
        tandem_net::set_tcp_loss(self.sim.lookup(a), self.sim.lookup(b), rate);
    }

    pub fn set_latency(&mut self, a: &str, b: &str, latency: Duration) {
        self.sim.set_link_latency(a, b, latency);
        self.latencies.insert(link_key(a, b), latency);
    }

    /// Lets each message between two hosts take anything from the link's
    /// latency up to `max` (never less than that latency): messages of
    /// different connections overtake each other; one connection's stay in
    /// order, as TCP delivers them.
    pub fn set_max_latency(&mut self, a: &str, b: &str, max: Duration) {
        let base = self.latencies.get(&link_key(a, b)).copied().unwrap_or(self.default_latency);
        self.sim.set_link_latency(a, b, base);
        self.sim.set_link_max_message_latency(a, b, max.max(base));
    }

    /// Adds a client host (the workload, an SRE's CLI) that runs `client`.
    pub fn client<F>(&mut self, name: &str, client: F)
    where
        F: std::future::Future<Output = turmoil::Result> + 'static,
    {
        self.sim.client(name, client);
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
/// The two processes of one simulated site, each stopped and started again
/// on its own when the drill asks (a crash stops the whole host instead).
struct Processes {
    site: &'static str,
    views: Views,
    trace: Trace,
    stopped: Stopped,
}

impl Processes {
    /// Publishes the controller's view, and stops or starts each process to
    /// match [`Stopped`]. Never returns while the host runs.
    async fn supervise<N, NF, R, RF>(&self, node: Node, replicator: Replicator, start_node: N, start_replicator: R)
    where
        N: Fn() -> NF,
        NF: std::future::Future<Output = Result<Node, tandem_controller::node::NodeError>>,
        R: Fn() -> RF,
        RF: std::future::Future<Output = Result<Replicator, tandem_replicator::server::StartError>>,
    {
        let site = self.site;
        let (mut node, mut replicator) = (Some(node), Some(replicator));
        loop {
            let wanted = (!self.stopped.controller(), !self.stopped.replicator());
            let running = (node.is_some(), replicator.is_some());
            if wanted == running {
                match &node {
                    Some(n) => watch_until(site, n, &self.views, &self.trace, || (!self.stopped.controller(), !self.stopped.replicator()) != running).await,
                    None => tokio::time::sleep(Duration::from_millis(50)).await,
                }
                continue;
            }
            if !wanted.0 {
                if let Some(n) = node.take() {
                    n.shutdown().await;
                    self.views.lock().unwrap_or_else(|e| e.into_inner()).remove(site);
                    self.trace.record(crate::trace::now(), format!("{site} controller stopped"));
                }
            } else if node.is_none() {
                match start_node().await {
                    Ok(n) => {
                        node = Some(n);
                        self.trace.record(crate::trace::now(), format!("{site} controller started"));
                    }
                    Err(e) => {
                        self.trace.record(crate::trace::now(), format!("{site} controller could not start: {e}"));
                        // Try again later, not in a loop that stops simulated time.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            if !wanted.1 {
                if let Some(r) = replicator.take() {
                    r.shutdown().await;
                    self.trace.record(crate::trace::now(), format!("{site} replicator stopped"));
                }
            } else if replicator.is_none() {
                match start_replicator().await {
                    Ok(r) => {
                        replicator = Some(r);
                        self.trace.record(crate::trace::now(), format!("{site} replicator started"));
                    }
                    Err(e) => {
                        self.trace.record(crate::trace::now(), format!("{site} replicator could not start: {e}"));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }
}

/// Publishes the node's view until `stop()` holds.
async fn watch_until(site: &'static str, node: &Node, views: &Views, trace: &Trace, stop: impl Fn() -> bool) {
    let mut metrics = node.raft().metrics();
    let mut last: Option<NodeView> = None;
    loop {
        if stop() {
            return;
        }
        let status = node.status();
        let mut owned: BTreeMap<String, usize> = status.cluster.sites.keys().map(|s| (s.clone(), 0)).collect();
        for shard in &status.cluster.shards {
            *owned.entry(shard.owner.clone()).or_default() += 1;
        }
        let lag = status.replicators.iter().flat_map(|r| r.links.iter().map(move |l| (format!("{}->{}", r.site, l.peer), l.entries))).collect();
        let view = NodeView {
            role: status.raft.role.clone(),
            term: status.raft.term,
            leader_id: status.raft.leader_id,
            bootstrapped: status.cluster.bootstrapped,
            owned,
            pair_mode: status.cluster.pairs.first().map(|p| p.mode.as_str().to_string()),
            lag,
            moving: status.cluster.shards.iter().filter(|s| s.moving_to.is_some()).count(),
            owners: status.cluster.shards.iter().map(|s| s.owner.clone()).collect(),
            fresh: status.replicators.iter().filter(|r| status.now_unix_ms.saturating_sub(r.received_at_unix_ms) <= 1_000).map(|r| r.site.clone()).collect(),
        };
        views.lock().unwrap_or_else(|e| e.into_inner()).insert(site.to_string(), view.clone());
        if last.as_ref().map(NodeView::traced) != Some(view.traced()) {
            trace.record(
                crate::trace::now(),
                format!(
                    "{site} {} term={} leader={} bootstrapped={}",
                    view.role,
                    view.term,
                    view.leader_id.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
                    view.bootstrapped
                ),
            );
            last = Some(view);
        }
        // The applied state can change without a metrics change; re-check
        // on a simulated tick as well (each look builds the node's whole
        // status: at 50 ms this loop was a twelfth of a drill's time).
        if let Ok(Err(_)) = tokio::time::timeout(VIEW_RECHECK, metrics.changed()).await {
            // Raft stopped; keep reporting its last view without spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
