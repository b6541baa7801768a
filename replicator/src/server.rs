//! A running replicator: its site state, gRPC services and background
//! tasks (controller view, one shipper per peer, recovery to sync,
//! heartbeats, collection). Everything external comes in through
//! [`ReplicatorDeps`], so the daemon, the demo and the simulation run this
//! same code.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tandem_controller::client::ControlClient;
use tandem_controller::health::ReplicatorHealth;
use tandem_controller::service::refusals::Refusals;
use tandem_proto::replicator::contracts_server::ContractsServer;
use tandem_proto::replicator::replication_server::ReplicationServer;
use tokio::task::JoinHandle;

use crate::config::ReplicatorConfig;
use crate::permissions::CheckRoles;
use crate::service::{ContractsService, ReplicationService};
pub use crate::site::ReplicatorDeps;
use crate::site::{Site, CONTROL_CHANGE_TIMEOUT};
use crate::MAX_MESSAGE;
use tower::Layer;

/// Bound on each controller call of the view poller and heartbeats.
const CONTROL_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Heartbeats to each controller: a site is judged down after 1.5 s
/// without one (policy `down_after_ms`), so a live site sends six.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);
/// An idle blob store is asked this often whether it answers.
const PROBE_BLOBS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot read the metadata store: {0}")]
    Store(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
}

pub struct Replicator {
    site: Arc<Site>,
    local_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    server: tandem_net::Serving,
    /// What `/ready` and systemd's readiness report.
    ready: tandem_net::endpoints::Ready,
}

impl Replicator {
    pub async fn start(config: ReplicatorConfig, deps: ReplicatorDeps) -> Result<Replicator, StartError> {
        let transport = deps.transport.clone();
        let site = Arc::new(Site::new(&config, deps).map_err(|e| StartError::Store(e.to_string()))?);
        crate::restore::check_startable(&site.meta).map_err(|e| StartError::Store(e.to_string()))?;
        let head = site.meta.log_head().map_err(|e| StartError::Store(e.to_string()))?;
        // Nothing staged before a restart can be committed any more (the
        // registry was in memory, and senders resend what is not here).
        match site.blobs.clear_staging().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(site = %site.name, files = n, "deleted staged and unfinished files left by the last run"),
            Err(e) => tracing::warn!(site = %site.name, error = %e, "cannot empty the staging area"),
        }

        let listen = config.listen_addr();
        let listener = transport.bind(&listen).await.map_err(|e| StartError::Listen { addr: listen.clone(), reason: e.to_string() })?;
        let local_addr = listener.local_addr().map_err(|e| StartError::Listen { addr: listen, reason: e.to_string() })?;
        let refusals = Refusals::new(ControlClient::new(config.controllers.clone(), transport.clone(), CONTROL_CHANGE_TIMEOUT));
        let check = CheckRoles::new(refusals);
        let router =
            tandem_net::server()
                .add_service(check.layer(
                    ContractsServer::new(ContractsService::new(site.clone())).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE),
                ))
                .add_service(check.layer(
                    ReplicationServer::new(ReplicationService::new(site.clone())).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE),
                ))
                .add_service(check.layer(crate::bulk_service::BulkServer::new(site.clone())));
        let server = transport.clone().spawn(router, listener, "replicator");

        // Lease renewals: an answer later than a lease grants nothing.
        let reads = ControlClient::new(config.controllers.clone(), transport.clone(), crate::view::LEASE);
        let mut tasks = vec![tokio::spawn(site.view.clone().run(reads, site.name.clone()))];
        for peer in site.links.keys() {
            tasks.push(tokio::spawn(crate::ship::run(site.clone(), peer.clone())));
        }
        tasks.push(tokio::spawn(crate::gc::run(site.clone())));
        tasks.push(tokio::spawn(crate::stage::run(site.clone())));
        tasks.push(tokio::spawn(crate::anti_entropy::run(site.clone())));
        tasks.push(tokio::spawn(recover_loop(site.clone())));
        // Others reach this replicator at its configured address when it
        // listens on every interface.
        let advertised = match config.addr_of(&config.site) {
            Some(addr) if local_addr.ip().is_unspecified() => addr,
            _ => local_addr.to_string(),
        };
        // One loop per controller, so a dead one does not delay the others.
        for controller in &config.controllers {
            let beats = ControlClient::new(vec![controller.clone()], transport.clone(), CONTROL_READ_TIMEOUT);
            tasks.push(tokio::spawn(heartbeat_loop(site.clone(), beats, advertised.clone())));
        }
        let ready: tandem_net::endpoints::Ready = {
            let s = site.clone();
            Arc::new(move || readiness(&s))
        };
        if let Some(addr) = &config.metrics_listen {
            let listener =
                tandem_net::endpoints::bind(addr).await.map_err(|e| StartError::Listen { addr: format!("{addr} (metrics_listen)"), reason: e.to_string() })?;
            tracing::info!(addr = %addr, "serving /metrics, /health and /ready");
            let s = site.clone();
            let pages = tandem_net::endpoints::Pages {
                daemon: "replicator",
                site: site.name.clone(),
                metrics: Arc::new(move || crate::metrics::render(&s)),
                ready: ready.clone(),
            };
            tasks.push(tokio::spawn(tandem_net::endpoints::serve(listener, pages)));
        }

        tasks.push(tokio::spawn(probe_blobs_loop(site.clone())));
        // Last, and only after a restore: the other tasks keep their spawn
        // order (the drill's traces depend on it).
        if site.restoring().is_some() {
            tasks.push(tokio::spawn(crate::restore::catch_up(site.clone())));
        }

        tracing::info!(site = %site.name, addr = %local_addr, log_head = head, "replicator started");
        Ok(Replicator { site, local_addr, tasks, server, ready })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether this replicator serves, as `/ready` reports it.
    pub fn readiness(&self) -> tandem_net::endpoints::Ready {
        self.ready.clone()
    }

    pub fn site(&self) -> &Arc<Site> {
        &self.site
    }

    /// Stops serving and the background tasks. Every acknowledged write is
    /// already synced, so nothing is flushed here.
    /// Stops every task and the server, and returns once they are gone:
    /// nothing of this replicator holds its stores any more (a restart in
    /// the same process can open them again).
    pub async fn shutdown(mut self) {
        self.tasks.append(&mut self.site.late_tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in &self.tasks {
            t.abort();
        }
        self.server.stop().await;
        // An aborted task is dropped when the runtime next gets to it, not
        // by `abort()`: wait for that.
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

/// Whether this replicator serves (`/ready`, systemd readiness): it holds
/// a controller view under a current write lease, so it accepts writes for
/// the shards it owns and knows who owns the rest. Without one it still
/// answers reads, but refuses every write (NO_LEASE): not ready.
pub fn readiness(site: &Site) -> tandem_net::endpoints::Readiness {
    let latest = site.view.latest();
    let lease = site.view.lease_remaining();
    let restoring = site.restoring();
    let reason = match (&latest, lease.is_zero(), &restoring) {
        (_, _, Some(why)) => why.as_str(),
        (None, _, _) => "no controller view yet (no controller answered)",
        (Some(_), true, _) => "no current write lease (the controllers have not answered within the lease)",
        (Some(_), false, None) => "",
    };
    let owned = latest.as_ref().map(|c| c.shards.iter().filter(|s| s.owner == site.name).count());
    tandem_net::endpoints::Readiness {
        ready: reason.is_empty(),
        reason: reason.into(),
        detail: serde_json::json!({
            "view_index": site.view.applied_index(),
            "lease_remaining_ms": lease.as_millis() as u64,
            "shards_owned": owned,
        }),
    }
}

async fn recover_loop(site: Arc<Site>) {
    let mut stalled: Option<crate::sync::Stalled> = None;
    loop {
        tokio::time::sleep(crate::sync::RECOVER_EVERY).await;
        crate::sync::watchdog(&site, &mut stalled).await;
        crate::sync::recover(&site).await;
    }
}

/// Asks the blob store for something when nothing else has for a while,
/// so a store that fails while the site is idle shows in its heartbeat.
/// Logs when the store starts and stops failing (once each, not per
/// request).
async fn probe_blobs_loop(site: Arc<Site>) {
    let mut was_failing = false;
    loop {
        tokio::time::sleep(PROBE_BLOBS_EVERY).await;
        let stats = site.blobs.stats();
        if stats.idle_for().is_none_or(|idle| idle >= PROBE_BLOBS_EVERY) {
            site.blobs.probe().await;
        }
        // A key provider that failed is asked again, so an idle site does
        // not go on reporting an outage that is over.
        if site.keys.failing().is_some() {
            site.keys.probe(site.rng.as_ref()).await;
        }
        let failing = stats.failing();
        match (&failing, was_failing) {
            (Some(error), false) => tracing::error!(site = %site.name, %error, "the blob store fails"),
            (None, true) => tracing::info!(site = %site.name, "the blob store answers again"),
            _ => {}
        }
        was_failing = failing.is_some();
    }
}

/// This site's health report for the controllers. The view index and the
/// log head are read under the log lock (see `Site::view_and_log_head`),
/// and each link's lag is counted up to that head.
pub async fn health(site: &Site, addr: &str) -> ReplicatorHealth {
    let (view_index, log_head) = site.view_and_log_head().await;
    let links = site.links.values().filter_map(|l| crate::lag::of_link_at(site, l, log_head).ok()).collect();
    ReplicatorHealth {
        site: site.name.clone(),
        addr: addr.to_string(),
        log_head,
        links,
        received_at_unix_ms: 0,
        view_index,
        version: tandem_net::version::reported(),
        blob_store_error: site.blobs.stats().failing().map(|e| short(&e)).unwrap_or_default(),
        restoring: site.restoring().unwrap_or_default(),
        keys_error: site.keys.failing().map(|e| short(&e)).unwrap_or_default(),
    }
}

/// An error as `tandem status` shows it: its first line, at most 200
/// characters (a store's reply can carry a long response body; the full
/// text is in the replicator's log, which masks what it must).
fn short(error: &str) -> String {
    let line = error.lines().next().unwrap_or_default();
    match line.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_string(),
    }
}

async fn heartbeat_loop(site: Arc<Site>, client: ControlClient, addr: String) {
    loop {
        client.heartbeat(&health(&site, &addr).await).await;
        tokio::time::sleep(HEARTBEAT_EVERY).await;
    }
}

/// Replicator addresses by site name, from a config (for clients).
pub fn addresses(config: &ReplicatorConfig) -> BTreeMap<String, String> {
    config.sites.iter().map(|s| (s.name.clone(), s.addr.clone())).collect()
}
