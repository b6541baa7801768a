//! `tandem bench --stored N,...`: what a replicator costs as its store
//! grows. For each size, three sites start with N contracts already in
//! each metadata store (the same ones everywhere, as after replication;
//! written straight into the stores, without files, since only the
//! metadata is compared), then the bench measures the whole cluster's CPU (this process and the replicators)
//! while the cluster is idle (anti-entropy compares the sites every few
//! seconds), the time of a `verify` of every shard, and the latency of
//! sync puts.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tandem_net::Transport;
use tandem_replicator::client::ReplicatorClient;
use tandem_replicator::meta::{MetaBatch, MetaStore};
use tandem_replicator::model::{ContractHead, VersionRecord};
use tandem_replicator::write::PutHeader;

use super::{cpu_secs, median, random_file, Cluster};

/// How long the idle cluster's CPU is counted.
const IDLE: Duration = Duration::from_secs(15);
const PUTS: usize = 30;

pub async fn run(sizes: &[u64], dir: &Path) -> anyhow::Result<()> {
    println!("tandem bench --stored: three sites, each holding N contracts; the whole cluster (3 controllers here, 3 replicator processes)");
    println!("  {:>9}  {:>8}  {:>22}  {:>10}  {:>16}", "contracts", "fill s", "idle CPU, % of a core", "verify ms", "sync put p50 ms");
    let file = dir.join("put.bin");
    random_file(&file, 200 * 1024)?;
    for &n in sizes {
        let at = dir.join(format!("stored-{n}"));
        std::fs::create_dir_all(&at)?;
        let started = Instant::now();
        let cluster = Cluster::start_filled(&at, |data_dir, shards| fill(data_dir, shards, n)).await?;
        let fill_secs = started.elapsed().as_secs_f64();
        let figures = measure(&cluster, &file).await;
        cluster.stop().await;
        let _ = std::fs::remove_dir_all(&at);
        let (idle, verify_ms, put_ms) = figures?;
        println!("  {n:>9}  {fill_secs:>8.1}  {:>22.1}  {verify_ms:>10.1}  {put_ms:>16.2}", idle * 100.0);
    }
    println!("  (fill: writing the stores and starting the cluster; idle: CPU over {} s with no writes)", IDLE.as_secs());
    Ok(())
}

/// Writes `n` contracts (one version each, no files) into the metadata
/// store under `data_dir`, in batches, as a replicator would hold them.
fn fill(data_dir: &Path, shards: u32, n: u64) -> anyhow::Result<()> {
    let meta_dir = data_dir.join("meta");
    std::fs::create_dir_all(&meta_dir)?;
    let kv = tandem_storage::RocksKv::open(&meta_dir).with_context(|| format!("cannot open {}", meta_dir.display()))?;
    let meta = MetaStore::new(Arc::new(kv));
    let mut batch = MetaBatch::default();
    for k in 0..n {
        let tenant = format!("stored-{}", k % 1000);
        let shard = tandem_controller::state::shard_of(&tenant, shards);
        let contract_id = format!("c{k}");
        let v = VersionRecord {
            tenant: tenant.clone(),
            contract_id: contract_id.clone(),
            version: 1,
            shard,
            epoch: 1,
            origin: "a".into(),
            created_unix_ms: 1_764_000_000_000,
            fields: [("title".to_string(), format!("contract {k}"))].into(),
            pii: Default::default(),
            pii_key: None,
            files: Vec::new(),
        };
        batch.put_version(&v);
        batch.put_head(&ContractHead { tenant, contract_id, shard, latest: 1, destroyed: None });
        if batch.len() >= 2000 {
            meta.commit(std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        meta.commit(batch)?;
    }
    // Marks every contract as having its item hash (a store that grew
    // under this build has the mark since its first digests).
    meta.shard_digests(shards)?;
    Ok(())
}

/// Idle CPU (cores), a verify's milliseconds, the median sync put's.
async fn measure(cluster: &Cluster, file: &Path) -> anyhow::Result<(f64, f64, f64)> {
    // Let the first anti-entropy rounds and the start-up pass.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let cpu = cpu_secs();
    let idle_from = Instant::now();
    tokio::time::sleep(IDLE).await;
    let idle = (cpu_secs() - cpu) / idle_from.elapsed().as_secs_f64();

    let state = cluster.nodes.iter().map(|n| n.status().cluster).find(|c| c.bootstrapped).context("no shard map")?;
    let sites = (0..3u16).map(|i| (["a", "b", "c"][i as usize].to_string(), cluster.replicator_addr(i))).collect();
    let started = Instant::now();
    let report = tandem_controller::operations::verify::verify(&Transport::Tokio, &sites, &state, false).await.map_err(|e| anyhow::anyhow!("verify: {e:?}"))?;
    let verify_ms = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(report.unresolved() == 0, "verify found differences between the filled sites");

    let client = ReplicatorClient::new(Transport::Tokio, Duration::from_secs(30));
    let tenant = cluster.tenant_owned_by("a")?;
    let mut ms = Vec::with_capacity(PUTS);
    for i in 0..PUTS {
        let header = PutHeader { tenant: tenant.clone(), contract_id: format!("put-{i}"), ..Default::default() };
        let t = Instant::now();
        client.put(&cluster.replicator_addr(0), &header, &[("put.bin".into(), file.to_path_buf())]).await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((idle, verify_ms, median(&ms)))
}
