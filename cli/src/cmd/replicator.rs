//! `tandem replicator --config FILE`: one site's replicator daemon.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tandem_controller::clock::SystemClock;
use tandem_crypto::{KeyProvider, KeyRing, LocalKeyFile, Pkcs11Token, SystemRandomSource};
use tandem_replicator::blob::BlobStore;
use tandem_replicator::config::ReplicatorConfig;
use tandem_replicator::server::{Replicator, ReplicatorDeps};
use tandem_storage::RocksKv;

use super::controller::wait_for_stop_signal;

#[derive(clap::Args)]
pub struct Args {
    /// The site's replicator TOML config (see deploy/ for examples).
    #[arg(long)]
    pub config: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = ReplicatorConfig::load(&args.config)?;
    let replicator = start_replicator(config).await?;
    tracing::info!(addr = %replicator.local_addr(), "serving; Ctrl-C or SIGTERM stops");
    // systemd (Type=notify) counts the unit started once it serves.
    let notify = tokio::spawn(tandem_net::endpoints::notify_systemd_when_ready(replicator.readiness()));
    wait_for_stop_signal().await;
    tracing::info!("stopping");
    notify.abort();
    replicator.shutdown().await;
    Ok(())
}

/// The current KEK (`key_file`, or `[hsm] key_label`) and the retired ones
/// still configured (`retired_key_files`, `[hsm] retired_key_labels`).
pub fn key_ring(config: &ReplicatorConfig) -> anyhow::Result<KeyRing> {
    let load = |field: &str, path: &std::path::Path| -> anyhow::Result<Arc<dyn KeyProvider>> {
        let key = LocalKeyFile::load(path).with_context(|| format!("cannot use the key file named by {field} ({})", path.display()))?;
        Ok(Arc::new(key))
    };
    let mut retired = config.retired_key_files.iter().map(|p| load("retired_key_files", p)).collect::<anyhow::Result<Vec<_>>>()?;
    let current = match (&config.hsm, &config.key_file) {
        (Some(hsm), _) => {
            let token = Pkcs11Token::open(&hsm.module, &hsm.token_label, &hsm.pin_file).context("cannot use the HSM named by [hsm]")?;
            let key = |field: &str, label: &str| -> anyhow::Result<Arc<dyn KeyProvider>> {
                Ok(Arc::new(token.key(label).with_context(|| format!("cannot use the HSM key named by {field}"))?))
            };
            for label in &hsm.retired_key_labels {
                retired.push(key("hsm.retired_key_labels", label)?);
            }
            key("hsm.key_label", &hsm.key_label)?
        }
        (None, Some(path)) => load("key_file", path)?,
        // validate() requires one of them.
        (None, None) => anyhow::bail!("no key-encryption key configured: set key_file or [hsm]"),
    };
    Ok(KeyRing::new(current, retired)?)
}

/// Opens the site's metadata store (`<data_dir>/meta`; only one process
/// at a time can) and ciphertext store (`<data_dir>/blobs` unless
/// `blob_url` names another object store).
pub fn open_stores(config: &ReplicatorConfig) -> anyhow::Result<(RocksKv, BlobStore)> {
    let root = config.data_dir.clone();
    let meta_dir = root.join("meta");
    std::fs::create_dir_all(&meta_dir).with_context(|| format!("cannot create data directory {}", meta_dir.display()))?;
    let kv = RocksKv::open(&meta_dir).with_context(|| format!("cannot open the metadata store {} (is the replicator still running?)", meta_dir.display()))?;
    let blobs = match &config.blob_url {
        Some(url) => BlobStore::from_url(url, &config.blob_options)?,
        None => BlobStore::local(&root.join("blobs"))?,
    };
    Ok((kv, blobs))
}

/// Opens the site's metadata store, ciphertext store and key file, then
/// starts the replicator. Metadata lives in `<data_dir>/meta`; ciphertext
/// in `<data_dir>/blobs` unless `blob_url` names another object store.
pub async fn start_replicator(config: ReplicatorConfig) -> anyhow::Result<Replicator> {
    let (kv, blobs) = open_stores(&config)?;
    let keys = key_ring(&config)?;
    // KEK ids are public (stored with every wrapped key); never the keys.
    tracing::info!(current = keys.kek_id(), all = %keys.kek_ids().join(","), "key-encryption keys loaded");
    let deps = ReplicatorDeps {
        kv: Arc::new(kv),
        blobs,
        keys: Arc::new(keys),
        rng: Arc::new(SystemRandomSource),
        clock: Arc::new(SystemClock),
        transport: super::controller::daemon_transport(config.tls.as_ref())?,
    };
    Ok(Replicator::start(config, deps).await?)
}
