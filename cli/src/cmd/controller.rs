//! `tandem controller --config FILE`: one site's controller daemon.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tandem_controller::clock::SystemClock;
use tandem_controller::config::NodeConfig;
use tandem_controller::node::{Node, NodeDeps};
use tandem_net::Transport;
use tandem_storage::RocksKv;

#[derive(clap::Args)]
pub struct Args {
    /// The site's TOML config (see deploy/ for examples).
    #[arg(long)]
    pub config: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = NodeConfig::load(&args.config)?;
    let node = start_node(config).await?;
    tracing::info!(addr = %node.local_addr(), "serving; Ctrl-C or SIGTERM stops");
    // systemd (Type=notify) counts the unit started once it serves.
    let notify = tokio::spawn(tandem_net::endpoints::notify_systemd_when_ready(node.readiness()));
    wait_for_stop_signal().await;
    tracing::info!("stopping");
    notify.abort();
    node.shutdown().await;
    Ok(())
}

/// Opens the site's rocksdb store and starts its node.
pub async fn start_node(config: NodeConfig) -> anyhow::Result<Node> {
    let db_dir = config.data_dir.join("controller");
    std::fs::create_dir_all(&db_dir).with_context(|| format!("cannot create data directory {}", db_dir.display()))?;
    let kv = RocksKv::open(&db_dir)?;
    let transport = daemon_transport(config.tls.as_ref())?;
    let deps = NodeDeps { kv: Arc::new(kv), transport, clock: Arc::new(SystemClock), hold_moves: true };
    Ok(Node::start(config, deps).await?)
}

/// The daemon's transport from its `[tls]` section: mutual TLS, or
/// plaintext (no role checks) when the section is absent.
pub fn daemon_transport(tls: Option<&tandem_net::TlsFiles>) -> anyhow::Result<Transport> {
    let transport = Transport::over_tokio(tls).map_err(|e| anyhow::anyhow!("[tls]: {e}"))?;
    match &transport {
        Transport::Tls(t) => tracing::info!(identity = %t.me, "mutual TLS"),
        _ => tracing::warn!("no [tls] section: plaintext, callers are not authenticated and every call is allowed"),
    }
    Ok(transport)
}

/// Ctrl-C or SIGTERM (what systemd and `kill` send).
pub async fn wait_for_stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
