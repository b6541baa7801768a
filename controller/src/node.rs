//! A controller node: Raft, its stores, the peer and control services, and
//! the task that writes the initial layout. Everything external comes in
//! through [`NodeDeps`] (storage, transport, clock), so the daemon, the demo
//! and the simulation run this same code.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, ServerState, SnapshotPolicy};
use tandem_net::Transport;
use tandem_proto::control::control_server::ControlServer;
use tandem_proto::raft::raft_server::RaftServer;
use tandem_storage::KvStore;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::{ConfigRole, NodeConfig};
use crate::health::HealthBoard;
use crate::ops::{BootstrapSpec, Command, OpMeta, Request};
use crate::raft::log_store::LogStore;
use crate::raft::network::{PeerNetwork, MAX_RAFT_MESSAGE_BYTES};
use crate::raft::peer_service::PeerService;
use crate::raft::state_machine::{StateMachineStore, StateReader};
use crate::raft::Raft;
use crate::service::ControlService;
use crate::state::Site;
use crate::status::{node_status, NodeStatus};

/// Log entries kept after a snapshot, so a briefly lagging peer catches up
/// from the log rather than by a full snapshot.
const LOGS_KEPT_AFTER_SNAPSHOT: u64 = 1000;
/// Entries between snapshots.
const LOGS_PER_SNAPSHOT: u64 = 5000;
/// How often the bootstrap task re-checks when nothing changes.
const BOOTSTRAP_RECHECK: Duration = Duration::from_millis(500);

/// What a node needs from its environment.
pub struct NodeDeps {
    pub kv: Arc<dyn KvStore>,
    pub transport: Transport,
    pub clock: Arc<dyn Clock>,
    /// Shard moves wait out the old owner's write lease (`crate::lease`).
    /// Only the drill's deliberately broken build sets this false.
    pub hold_moves: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid raft settings: {0}")]
    RaftConfig(String),
    #[error("cannot open controller store: {0}")]
    Store(String),
    #[error("cannot start raft: {0}")]
    Raft(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("fenced: {0}")]
    Superseded(String),
}

/// A node of an old generation must not start once another site has been
/// activated by DR (a higher generation): it would let the old city form a
/// second cluster. Peers that do not answer cannot tell; that case relies
/// on the generation floor at the activated site and on operators keeping
/// the old sites down until failback.
async fn refuse_if_superseded(config: &NodeConfig, me: &crate::config::SiteConfig, generation: u64, transport: tandem_net::Transport) -> Result<(), NodeError> {
    let peers: Vec<String> = config.sites.iter().filter(|s| s.name != me.name).map(|s| s.addr.clone()).collect();
    let client = crate::client::ControlClient::new(peers.clone(), transport, std::time::Duration::from_secs(2));
    for addr in &peers {
        if let Ok(s) = client.status_at(addr).await {
            let fenced_there = s.cluster.sites.get(&me.name).is_some_and(|site| site.role == crate::state::SiteRole::Fenced);
            if s.cluster.generation > generation && fenced_there {
                return Err(NodeError::Superseded(format!(
                    "site {} (at {addr}) runs generation {} after a DR activation; this node holds generation {generation} and \
                     must not act. Bring this site back with the failback procedure after DR (runbooks/failback-after-dr.md)",
                    s.raft.site, s.cluster.generation
                )));
            }
        }
    }
    Ok(())
}

/// A running controller node.
pub struct Node {
    raft: Raft,
    state: StateReader,
    health: HealthBoard,
    clock: Arc<dyn Clock>,
    site: String,
    node_id: u64,
    local_addr: SocketAddr,
    server: tandem_net::Serving,
    bootstrapper: JoinHandle<()>,
    /// Failure detection and automatic failover (acts only while leader).
    detector: JoinHandle<()>,
    /// Serves `/metrics`, `/health` and `/ready` (config `metrics_listen`).
    metrics: Option<JoinHandle<()>>,
    /// What `/ready` and systemd's readiness report.
    ready: tandem_net::endpoints::Ready,
}

/// How many times longer the DR site's controller waits before it stands
/// for election (see [`Node::start`]).
const DR_ELECTION_SKEW: u64 = 2;

impl Node {
    pub async fn start(config: NodeConfig, deps: NodeDeps) -> Result<Node, NodeError> {
        let me = config.this_site().clone();
        let t = &config.raft;
        // The DR site's controller waits twice as long before it stands for
        // election, so a leader is elected in the city that writes: a DR
        // leader behind a slow or lossy link loses the in-city sites'
        // heartbeats and leases, and its elections there disrupt the
        // cluster (the drill `dr-link-degraded`). It still leads when
        // neither in-city controller can.
        let skew = if me.role == ConfigRole::DrStandby { DR_ELECTION_SKEW } else { 1 };
        let raft_config = openraft::Config {
            cluster_name: "tandem".into(),
            heartbeat_interval: t.heartbeat_ms,
            election_timeout_min: t.election_timeout_min_ms * skew,
            election_timeout_max: t.election_timeout_max_ms * skew,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(LOGS_PER_SNAPSHOT),
            max_in_snapshot_log_to_keep: LOGS_KEPT_AFTER_SNAPSHOT,
            ..Default::default()
        }
        .validate()
        .map_err(|e| NodeError::RaftConfig(e.to_string()))?;

        let log_store = LogStore::new(deps.kv.clone());
        let sm_store = StateMachineStore::open(deps.kv.clone()).map_err(|e| NodeError::Store(e.to_string()))?;
        let state = sm_store.reader();

        // Bind before Raft starts so a taken port fails the start at once.
        let listen = config.listen_addr();
        let listener = deps.transport.bind(&listen).await.map_err(|e| NodeError::Listen { addr: listen.clone(), reason: e.to_string() })?;
        let local_addr = listener.local_addr().map_err(|e| NodeError::Listen { addr: listen, reason: e.to_string() })?;

        // DR activation leaves a one-member membership and a generation floor.
        let dr_members: Option<Vec<u64>> =
            deps.kv.get(crate::raft::state_machine::DR_MEMBERS_KEY).map_err(|e| NodeError::Store(e.to_string()))?.and_then(|b| serde_json::from_slice(&b).ok());
        let floor = deps
            .kv
            .get(crate::raft::state_machine::DR_FLOOR_KEY)
            .map_err(|e| NodeError::Store(e.to_string()))?
            .and_then(|b| b.try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        // A returning old site prepared by `tandem dr rejoin`, or a
        // replacement prepared by `tandem members prepare`, waits, empty,
        // for the leader to add it. Once it holds the cluster's state it is
        // a member like any other: the marker no longer counts, so it is
        // checked against newer generations at every start like the rest.
        let marked = deps.kv.get(crate::raft::state_machine::DR_JOINING_KEY).map_err(|e| NodeError::Store(e.to_string()))?.is_some();
        let joining = marked && !state.cluster().bootstrapped;
        if !joining {
            refuse_if_superseded(&config, &me, state.cluster().generation, deps.transport.clone()).await?;
        }

        let network = PeerNetwork::new(deps.transport.clone(), state.clone());
        let contacts = network.contacts();
        let raft = Raft::new(me.node_id, Arc::new(raft_config), network, log_store, sm_store).await.map_err(|e| NodeError::Raft(e.to_string()))?;

        let health = HealthBoard::kept_in(deps.kv.clone());
        let leases = crate::lease::LeaseBook::default();
        let control = ControlService::new(
            raft.clone(),
            state.clone(),
            health.clone(),
            me.name.clone(),
            me.node_id,
            deps.clock.clone(),
            t.commit_timeout(),
            deps.transport.clone(),
            crate::service::refusals::Refusals::new(crate::client::ControlClient::new(
                config.sites.iter().map(|s| s.addr.clone()).collect(),
                deps.transport.clone(),
                t.commit_timeout() + std::time::Duration::from_secs(2),
            )),
        )
        .with_leases(leases.clone(), deps.hold_moves)
        .with_contacts(contacts);
        let router = tandem_net::server()
            .add_service(
                RaftServer::new(PeerService::new(raft.clone(), floor))
                    .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES),
            )
            .add_service(ControlServer::new(control));
        let server = deps.transport.clone().spawn(router, listener, "controller");

        // Every node may initialise: openraft accepts the same membership
        // from several nodes, and refuses (harmlessly) once a log exists.
        let members: BTreeMap<u64, BasicNode> = config
            .sites
            .iter()
            .filter(|s| dr_members.as_ref().is_none_or(|m| m.contains(&s.node_id)))
            .map(|s| (s.node_id, BasicNode { addr: s.addr.clone() }))
            .collect();
        let initialized = raft.is_initialized().await.map_err(|e| NodeError::Raft(e.to_string()))?;
        if !initialized && !joining {
            if let Err(e) = raft.initialize(members).await {
                tracing::info!(error = %e, "raft initialise skipped");
            }
        }

        let spec = BootstrapSpec {
            sites: config
                .sites
                .iter()
                .map(|s| Site { name: s.name.clone(), node_id: s.node_id, city: s.city.clone(), role: s.role.into(), addr: s.addr.clone() })
                .collect(),
            shard_count: config.shard_count,
            policy: config.policy.to_policy(config.tls.is_some()),
        };
        let bootstrapper = tokio::spawn(bootstrap_when_leader(raft.clone(), state.clone(), spec, deps.clock.clone()));
        let detector = tokio::spawn(
            crate::detect::Detector {
                raft: raft.clone(),
                state: state.clone(),
                health: health.clone(),
                clock: deps.clock.clone(),
                site: me.name.clone(),
                node_id: me.node_id,
                // It proposes only while this node leads: ask this node first,
                // not a controller that may be the one just lost.
                client: crate::client::ControlClient::new(
                    std::iter::once(me.addr.clone()).chain(config.sites.iter().filter(|s| s.name != me.name).map(|s| s.addr.clone())).collect(),
                    deps.transport.clone(),
                    t.commit_timeout() + std::time::Duration::from_secs(2),
                ),
                probe: crate::client::ControlClient::new(
                    config.sites.iter().map(|s| s.addr.clone()).collect(),
                    deps.transport.clone(),
                    // Each controller is probed on its own loop, so a slow
                    // answer (a degraded DR link) still counts.
                    crate::detect::PROBE_TIMEOUT,
                ),
                leases,
                started: tokio::time::Instant::now(),
            }
            .run(),
        );

        let ready: tandem_net::endpoints::Ready = {
            let (raft, state) = (raft.clone(), state.clone());
            Arc::new(move || crate::status::readiness(&raft, &state))
        };
        let metrics = match &config.metrics_listen {
            Some(addr) => {
                let listener = tandem_net::endpoints::bind(addr)
                    .await
                    .map_err(|e| NodeError::Listen { addr: format!("{addr} (metrics_listen)"), reason: e.to_string() })?;
                tracing::info!(addr = %addr, "serving /metrics, /health and /ready");
                let source = crate::metrics::MetricsSource::new(raft.clone(), state.clone(), health.clone(), deps.clock.clone(), me.name.clone(), me.node_id);
                let pages = tandem_net::endpoints::Pages {
                    daemon: "controller",
                    site: me.name.clone(),
                    metrics: Arc::new(move || source.render()),
                    ready: ready.clone(),
                };
                Some(tokio::spawn(tandem_net::endpoints::serve(listener, pages)))
            }
            None => None,
        };
        tracing::info!(site = %me.name, node_id = me.node_id, addr = %local_addr, "controller node started");
        Ok(Node { raft, state, health, clock: deps.clock, site: me.name, node_id: me.node_id, local_addr, server, bootstrapper, detector, metrics, ready })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn state(&self) -> &StateReader {
        &self.state
    }

    /// Whether this node serves, as `/ready` reports it.
    pub fn readiness(&self) -> tandem_net::endpoints::Ready {
        self.ready.clone()
    }

    pub fn status(&self) -> NodeStatus {
        node_status(&self.raft, &self.state, &self.health, self.clock.as_ref(), &self.site, self.node_id)
    }

    /// Stops serving, then stops Raft. Storage writes are synced as they
    /// happen, so there is nothing left to flush.
    pub async fn shutdown(mut self) {
        self.bootstrapper.abort();
        self.detector.abort();
        if let Some(m) = self.metrics.take() {
            m.abort();
            let _ = m.await;
        }
        self.server.stop().await;
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
    }
}

/// Writes the initial layout once, from whichever node first leads.
async fn bootstrap_when_leader(raft: Raft, state: StateReader, spec: BootstrapSpec, clock: Arc<dyn Clock>) {
    let mut metrics = raft.metrics();
    loop {
        if state.cluster().bootstrapped {
            break;
        }
        let leading = metrics.borrow().state == ServerState::Leader;
        if leading {
            let req = Request {
                command: Command::Bootstrap(spec.clone()),
                meta: OpMeta {
                    who: "tandem".into(),
                    why: "initial layout from configuration".into(),
                    at_unix_ms: clock.now_unix_ms(),
                    clock: String::new(),
                    approval: None,
                },
            };
            match tokio::time::timeout(BOOTSTRAP_RECHECK * 10, raft.client_write(req)).await {
                Ok(Ok(_)) => break,
                Ok(Err(e)) => tracing::info!(error = %e, "bootstrap proposal failed; will retry"),
                Err(_) => tracing::info!("bootstrap proposal not committed in time; will retry"),
            }
        }
        let _ = tokio::time::timeout(BOOTSTRAP_RECHECK, metrics.changed()).await;
    }
    // The TOML's [policy] seeded the cluster once; a later edit of it
    // changes nothing, so say so rather than let an SRE believe it did.
    for drift in crate::operations::policy::config_drift(&spec.policy, &state.cluster().policy) {
        tracing::warn!(
            "[policy] in this config differs from the cluster's agreed policy, which is what applies: {drift}. \
             Change the cluster's with `tandem policy set`, or align the config"
        );
    }
}
