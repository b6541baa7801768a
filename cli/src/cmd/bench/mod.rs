//! `tandem bench`: replication throughput and write latency, measured
//! against baselines taken in the same run (this machine is shared and
//! noisy, so only ratios mean something). Run it from a release build:
//! `cargo run --release --bin tandem -- bench`.
//!
//! 1. A three-site cluster: the controllers in this process, each site's
//!    replicator a process of its own as deployed (`procs.rs`; real
//!    rocksdb, real HTTP/2 over loopback: gRPC and bulk streams), the DR
//!    site stopped so one stream runs at a time. CPU figures are the whole
//!    cluster's (this process and every replicator), and per site where
//!    they say so.
//! 2. Rounds (`--rounds`, five by default), each running the baselines and
//!    then tandem, so a slow minute of the machine hits both; every figure
//!    is the best of its runs, with wall and CPU time, and tandem's runs are
//!    also shown against the ceiling run of their own round (with the
//!    median), since the disk here is shared and its speed drifts:
//!    - the ceiling: the same bytes through read + crc32 + AES-256-GCM +
//!      loopback TCP + write + fsync, without tandem (two threads, blocking
//!      sockets); for reference, the same with the receiver writing with
//!      `O_DIRECT` as tandem does;
//!    - two disk floors: what the one disk of this machine allows for the
//!      disk work of a sync put (two files written at once: the owner's
//!      copy and its peer's) and of a DR catch-up or a read-back (one read
//!      and one write at once). All sites share that disk here;
//!    - one large file put at A with the pair in sync (acknowledged only
//!      once B has stored and synced it), then read back from B.
//! 3. Small contracts (200 KiB) by 1, 4, 16 and 64 concurrent clients
//!    (`--clients`), in sync mode, then with B's replicator stopped (single
//!    site): throughput, latency p50/p99 and CPU per put, of the whole
//!    cluster and of each site's replicator.
//! 4. The DR site restarts and catches up from its cursor, A to C: the
//!    large files (timed until the last one is there, against the best
//!    ceiling and a ceiling run right after), then the small contracts;
//!    then the same files copied by rsync over loopback TCP, plainly and
//!    with `--fsync`, when rsync is installed.
//!
//! It also prints each replicator's peak resident memory.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use tandem_controller::config::NodeConfig;
use tandem_controller::node::Node;
use tandem_crypto::{RandomSource, SystemRandomSource};
use tandem_net::Transport;
use tandem_replicator::client::ReplicatorClient;
use tandem_replicator::config::ReplicatorConfig;
use tandem_replicator::write::PutHeader;

mod procs;
mod stored;

use procs::{cpu_secs, ReplicatorProcess};

use super::controller::start_node;
use super::demo::{replicator_config, site_config, CONTROLLER_METRICS_OFFSET, KEY_FILE, REPLICATOR_METRICS_OFFSET, REPLICATOR_PORT_OFFSET};

const CHUNK: usize = 1024 * 1024;
/// Alignment of `O_DIRECT` buffers, offsets and lengths.
const ALIGN: usize = 4096;

#[derive(clap::Args)]
pub struct Args {
    /// Size of the large file, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub size_mib: u64,
    /// Number of small (200 KiB) contracts per mode and concurrency level
    /// (at least four per client).
    #[arg(long, default_value_t = 200)]
    pub small_count: usize,
    /// Concurrency levels of the small-contract puts: how many clients
    /// write at once, each over its own connection.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub clients: Vec<usize>,
    /// Rounds of the large-file measurements (each runs every baseline and
    /// then tandem); at least 2.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Instead of the figures above: for each of these store sizes (say
    /// 10000,100000,1000000), three sites holding that many contracts
    /// each, and what an idle replicator's CPU, a `verify` and a put cost
    /// there (see `stored.rs`).
    #[arg(long, value_delimiter = ',')]
    pub stored: Vec<u64>,
    /// Working directory (created, and removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Run the replicators from this `tandem` binary instead of this one:
    /// to measure another build (say the one before a change) with the same
    /// bench, in the same session.
    #[arg(long)]
    pub replicator_bin: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; figures are only meaningful from `cargo run --release`");
    }
    let dir = args.dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("tandem-bench-{}", std::process::id())));
    if let Some(bin) = &args.replicator_bin {
        procs::use_binary(bin)?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = if args.stored.is_empty() { bench(&args, &dir).await } else { stored::run(&args.stored, &dir).await };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn bench(args: &Args, dir: &Path) -> anyhow::Result<()> {
    if args.size_mib == 0 || args.small_count == 0 {
        bail!("--size-mib and --small-count must be at least 1");
    }
    if args.clients.is_empty() || args.clients.contains(&0) {
        bail!("--clients takes concurrency levels of at least 1, such as 1,4,16,64");
    }
    if args.rounds < 2 {
        bail!("--rounds must be at least 2 (the put and the read-back are compared with the ceiling round by round)");
    }
    let rounds = args.rounds;
    // Kept to the end: the input and every large file at three sites;
    // meanwhile up to two scratch copies.
    let copies = 1 + 3 * rounds as u64 + 2;
    let (size, needed) = match args.size_mib.checked_mul(1 << 20).and_then(|s| Some((s, s.checked_mul(copies)?))) {
        Some(sizes) => sizes,
        None => bail!("--size-mib {} is too large", args.size_mib),
    };
    let stat = rustix::fs::statvfs(dir).with_context(|| format!("cannot read the free space of {}", dir.display()))?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    if free < needed {
        bail!("the bench needs about {} MiB free in {} ({} MiB are): use a smaller --size-mib or another --dir", needed >> 20, dir.display(), free >> 20);
    }
    let input = dir.join("large.bin");
    random_file(&input, size)?;
    println!("tandem bench: large file {} MiB, {rounds} rounds, {} small contracts of 200 KiB per mode", args.size_mib, args.small_count);

    let mut cluster = Cluster::start(dir).await?;
    let client = ReplicatorClient::new(Transport::Tokio, Duration::from_secs(30));
    let tenant = cluster.tenant_owned_by("a")?;
    let (a, b, c) = (cluster.replicator_addr(0), cluster.replicator_addr(1), cluster.replicator_addr(2));
    // One stream at a time: the DR site is stopped while A and B are
    // measured (it catches up at the end), so it does not share the cores.
    cluster.stop_replicator(2).await;

    // Rounds interleave the baselines with tandem's runs, so a slow minute
    // on this shared machine hits both; each figure is the best of its runs.
    let [mut ceiling, mut direct, mut floor_rw, mut floor_ww, mut put, mut read] = std::array::from_fn(|_| Runs::default());
    for round in 0..rounds {
        baseline_run(&mut ceiling, dir, &input, ceiling_buffered).await?;
        baseline_run(&mut direct, dir, &input, ceiling_direct).await?;
        baseline_run(&mut floor_rw, dir, &input, floor_read_write).await?;
        baseline_run(&mut floor_ww, dir, &input, floor_two_writes).await?;
        let header = PutHeader { tenant: tenant.clone(), contract_id: format!("large-{round}"), ..Default::default() };
        let reply = put.time(client.put(&a, &header, &[("large.bin".into(), input.clone())])).await?;
        if !reply.replication.starts_with("sync") {
            bail!("the large put was not acknowledged in sync mode ({}); the figures would not mean anything", reply.replication);
        }
        let out = dir.join("read-back");
        std::fs::create_dir_all(&out)?;
        read.time(client.get(&b, &tenant, &header.contract_id, 0, Some(&out))).await?;
        if !same_file(&input, &out.join("large.bin"))? {
            bail!("the file read back from B differs from the input");
        }
        std::fs::remove_dir_all(&out)?;
    }
    let mib_s = |secs: f64| size as f64 / secs / (1024.0 * 1024.0);
    let line = |what: &str, runs: &Runs, note: &str| {
        println!("  {what:<46} {:7.1} MiB/s  {:4.2} s CPU/GiB  {note}", mib_s(runs.best()), runs.cpu_per_gib(size));
        println!("  {:<46} (runs: {} MiB/s)", "", runs.shown(mib_s));
    };
    // Ratios of `secs`, the time of one large file, to the baselines' best.
    let vs = |secs: f64, floor: &Runs| {
        format!("{:.2} x ceiling, {:.2} x its disk floor ({:.2} x O_DIRECT ceiling)", ceiling.best() / secs, floor.best() / secs, direct.best() / secs)
    };
    // Each run against the ceiling run of its own round (the same minute
    // of this shared machine's disk and cores).
    let per_round = |runs: &Runs| {
        let ratios = paired(&ceiling, runs);
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!("  {:<46} per round, x that round's ceiling: {} (median {:.2})", "", shown.join(", "), median(&ratios));
    };
    println!();
    println!("large file, single stream (best of {rounds}; CPU of the whole cluster: this process and the replicators, 2 cores)");
    line("ceiling: read+crc32+AES-GCM+TCP+write+fsync", &ceiling, "baseline");
    line("same, receiver writing with O_DIRECT", &direct, "reference");
    line("disk floor, put: two O_DIRECT writes at once", &floor_ww, "reference: what this disk allows");
    line("disk floor, DR/read: O_DIRECT read + write", &floor_rw, "reference: what this disk allows");
    line("put at A, acknowledged after B stored+synced", &put, &vs(put.best(), &floor_ww));
    per_round(&put);
    line("read back from B (decrypt, stream to disk)", &read, &vs(read.best(), &floor_rw));
    per_round(&read);

    let small = dir.join("small.bin");
    random_file(&small, 200 * 1024)?;
    println!();
    println!("small contracts (200 KiB) at A, by concurrent clients (each over its own connection)");
    let levels = |n: usize| args.small_count.max(4 * n);
    let mut sync = Vec::new();
    for &n in &args.clients {
        sync.push(small_puts(&a, &tenant, &format!("sync-c{n}"), &small, levels(n), n).await?);
    }
    cluster.stop_replicator(1).await;
    // The first write after B stops waits out the sync timeout and records
    // the pair async; it is not part of the measurement. On this shared
    // disk the mode change's commit can outlast A's write lease, and then
    // that write is refused as not acknowledged (as it must be): write
    // again, a few times, until the pair is async.
    let header = PutHeader { tenant: tenant.clone(), contract_id: "switch".into(), ..Default::default() };
    let mut attempt = 0;
    let reply = loop {
        attempt += 1;
        match client.put(&a, &header, &[("small.bin".into(), small.clone())]).await {
            Ok(reply) => break reply,
            Err(e) if attempt < 5 => println!("  (the write after stopping B was refused, writing again: {e})"),
            Err(e) => return Err(e.into()),
        }
    };
    if !reply.replication.starts_with("async") {
        bail!("stopping B did not put the pair in async mode ({})", reply.replication);
    }
    let mut single = Vec::new();
    for &n in &args.clients {
        single.push(small_puts(&a, &tenant, &format!("single-c{n}"), &small, levels(n), n).await?);
    }
    println!("  {:>7}   {:<42}   {:<42}   sync / single", "", "sync pair (A+B, acknowledged once B synced)", "single site (B down)");
    println!(
        "  {:>7}   {:>8} {:>8} {:>8} {:>10}    {:>8} {:>8} {:>8} {:>10}    {:>6} {:>6}",
        "clients", "puts/s", "p50 ms", "p99 ms", "CPU ms/put", "puts/s", "p50 ms", "p99 ms", "CPU ms/put", "puts/s", "p99"
    );
    for ((n, s), o) in args.clients.iter().zip(&sync).zip(&single) {
        println!(
            "  {n:>7}   {:>8.1} {:>8.2} {:>8.2} {:>10.2}    {:>8.1} {:>8.2} {:>8.2} {:>10.2}    {:>5.2}x {:>5.2}x",
            s.per_s,
            s.p50_ms,
            s.p99_ms,
            s.cpu_ms,
            o.per_s,
            o.p50_ms,
            o.p99_ms,
            o.cpu_ms,
            s.per_s / o.per_s,
            s.p99_ms / o.p99_ms
        );
    }
    println!("  (CPU: the whole cluster, both replicators running and this process's controllers and clients, per acknowledged put)");
    let shown = |l: &Latencies| l.by_process.iter().map(|(p, ms)| format!("{p} {ms:.2}")).collect::<Vec<_>>().join(", ");
    println!("  CPU ms per put by process (replicators by site; bench: the controllers and the clients):");
    for ((n, s), o) in args.clients.iter().zip(&sync).zip(&single) {
        println!("  {n:>7}   sync pair: {:<40}   single site: {}", shown(s), shown(o));
    }
    // Last in A's log: the DR site has every small contract once it has this one.
    let header = PutHeader { tenant: tenant.clone(), contract_id: "last-small".into(), ..Default::default() };
    client.put(&a, &header, &[("small.bin".into(), small.clone())]).await?;

    // The DR site restarts and catches up from its durable cursor. Its
    // log comes in order: the probe, the large files, then the small
    // contracts; the large files' figure ends when the last one is there,
    // and their steady rate is timed from the first one's arrival (start-up
    // and the first file excluded).
    // Both sweeps, the write that switched the pair to async, the last one.
    let small_total: usize = 2 * args.clients.iter().map(|n| levels(*n)).sum::<usize>() + 2;
    let small_bytes = small_total as u64 * 200 * 1024;
    let large_bytes = rounds as u64 * size;
    let started = Instant::now();
    cluster.start_replicator(dir, 2)?;
    let arrived = |id: String| {
        let (client, c, tenant) = (&client, &c, &tenant);
        async move {
            while client.head(c, tenant, &id).await.is_err() {
                if started.elapsed() > Duration::from_secs(3600) {
                    bail!("the DR site did not catch up within an hour");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(started.elapsed().as_secs_f64())
        }
    };
    let first_secs = arrived("large-0".to_string()).await?;
    let large_secs = arrived(format!("large-{}", rounds - 1)).await?;
    let all_secs = arrived("last-small".to_string()).await?;
    // The ceiling once more, in the same minute as the catch-up.
    let mut after = Runs::default();
    baseline_run(&mut after, dir, &input, ceiling_buffered).await?;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!();
    println!("DR site C restarted and caught up from its cursor");
    println!(
        "  {rounds} large files, {:.0} MiB in {large_secs:.2} s incl. start-up: {:7.1} MiB/s   {}; {:.2} x a ceiling run right after ({:.0} MiB/s)",
        mib(large_bytes),
        mib(large_bytes) / large_secs,
        vs(large_secs / rounds as f64, &floor_rw),
        after.best() * rounds as f64 / large_secs,
        mib_s(after.best())
    );
    println!("  (the first one arrived after {first_secs:.2} s; the others are staged at C in parallel, so they arrive together)");
    println!(
        "  then {} small contracts, {:.0} MiB in {:.2} s: {:.0} contracts/s",
        small_total,
        mib(small_bytes),
        all_secs - large_secs,
        small_total as f64 / (all_secs - large_secs)
    );
    // The same files (A's ciphertext, as C received them) by rsync over
    // loopback TCP, right after: the tool a DR site would otherwise be
    // filled with.
    let blobs = dir.join("a").join("replicator").join("blobs");
    let rsync_dir = dir.to_path_buf();
    match tokio::task::spawn_blocking(move || rsync_runs(&rsync_dir, &blobs)).await? {
        Ok(Some((plain, fsync))) => {
            println!(
                "  rsync -a --fsync of the same files over loopback TCP (rsync daemon): {fsync:.2} s: tandem's catch-up {:.2} x its speed",
                fsync / all_secs
            );
            println!("  rsync -a (no fsync), same: {plain:.2} s: tandem's catch-up {:.2} x its speed", plain / all_secs);
        }
        Ok(None) => println!("  rsync is not installed: no side-by-side with it"),
        Err(e) => println!("  rsync failed ({e}): no side-by-side with it"),
    }
    let peaks: Vec<String> = procs::peak_rss_mib_by_site().iter().map(|(site, mib)| format!("{site} {mib} MiB")).collect();
    println!("peak resident memory of each replicator: {}", peaks.join(", "));
    cluster.stop().await;
    Ok(())
}

/// Copies `from` (without the staging area) with rsync to a daemon on
/// loopback, once plainly and once with `--fsync`, each into a fresh
/// directory; their wall times. `None` when rsync is not installed.
fn rsync_runs(dir: &Path, from: &Path) -> anyhow::Result<Option<(f64, f64)>> {
    if std::process::Command::new("rsync").arg("--version").output().is_err() {
        return Ok(None);
    }
    let dst = dir.join("rsync-dst");
    std::fs::create_dir_all(&dst)?;
    let conf = dir.join("rsyncd.conf");
    let (uid, gid) = (rustix::process::getuid().as_raw(), rustix::process::getgid().as_raw());
    std::fs::write(&conf, format!("use chroot = no\nuid = {uid}\ngid = {gid}\n[dst]\npath = {}\nread only = no\n", dst.display()))?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut daemon = std::process::Command::new("rsync")
        .args(["--daemon", "--no-detach", "--address", "127.0.0.1", "--port", &port.to_string(), "--config"])
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let result = (|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("the rsync daemon did not listen within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let run = |name: &str, extra: &[&str]| -> anyhow::Result<f64> {
            let started = Instant::now();
            let out = std::process::Command::new("rsync")
                .args(["-a", "--exclude", tandem_replicator::blob::STAGING])
                .args(extra)
                .arg(format!("{}/", from.display()))
                .arg(format!("rsync://127.0.0.1:{port}/dst/{name}/"))
                .output()?;
            if !out.status.success() {
                bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
            }
            Ok(started.elapsed().as_secs_f64())
        };
        Ok(Some((run("plain", &[])?, run("fsync", &["--fsync"])?)))
    })();
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = std::fs::remove_dir_all(&dst);
    result
}

/// Wall and CPU seconds of each run of one measurement.
#[derive(Default)]
struct Runs {
    secs: Vec<f64>,
    cpu: Vec<f64>,
}

impl Runs {
    async fn time<T, E>(&mut self, run: impl std::future::Future<Output = Result<T, E>>) -> Result<T, E> {
        let (started, cpu) = (Instant::now(), cpu_secs());
        let out = run.await?;
        self.secs.push(started.elapsed().as_secs_f64());
        self.cpu.push(cpu_secs() - cpu);
        Ok(out)
    }

    fn best(&self) -> f64 {
        self.secs.iter().copied().fold(f64::INFINITY, f64::min)
    }

    /// CPU seconds per GiB of the best run.
    fn cpu_per_gib(&self, size: u64) -> f64 {
        let best = self.secs.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
        best.and_then(|i| self.cpu.get(i)).map_or(0.0, |c| c * (1u64 << 30) as f64 / size as f64)
    }

    fn shown(&self, rate: impl Fn(f64) -> f64) -> String {
        self.secs.iter().map(|s| format!("{:.0}", rate(*s))).collect::<Vec<_>>().join(", ")
    }
}

/// `baseline`'s time over `runs`' time, round by round: how each run did
/// against the baseline run of its own round.
fn paired(baseline: &Runs, runs: &Runs) -> Vec<f64> {
    baseline.secs.iter().zip(&runs.secs).map(|(b, r)| b / r).collect()
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

struct Latencies {
    p50_ms: f64,
    p99_ms: f64,
    per_s: f64,
    /// CPU of the whole cluster per put.
    cpu_ms: f64,
    /// CPU per put of each running replicator, by site, and of this
    /// process (controllers and clients) last, as "bench".
    by_process: Vec<(String, f64)>,
}

/// `n` puts of `file` at `addr` by `clients` clients at once, each over its
/// own connection, contract ids `{prefix}-{i}`.
async fn small_puts(addr: &str, tenant: &str, prefix: &str, file: &Path, n: usize, clients: usize) -> anyhow::Result<Latencies> {
    let (started, sites, own) = (Instant::now(), procs::by_site(), procs::own_cpu_secs());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (addr, tenant, prefix, file, next) = (addr.to_string(), tenant.to_string(), prefix.to_string(), file.to_path_buf(), next.clone());
        tasks.push(tokio::spawn(async move {
            let client = ReplicatorClient::new(Transport::Tokio, Duration::from_secs(30));
            let mut ms = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(ms);
                }
                let header = PutHeader { tenant: tenant.clone(), contract_id: format!("{prefix}-{i}"), ..Default::default() };
                let t = Instant::now();
                client.put(&addr, &header, &[("small.bin".into(), file.clone())]).await?;
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    let mut ms = Vec::with_capacity(n);
    for t in tasks {
        ms.extend(t.await??);
    }
    let total = started.elapsed().as_secs_f64();
    let per_put = |secs: f64| secs * 1000.0 / n as f64;
    let mut by_process: Vec<(String, f64)> = procs::by_site()
        .into_iter()
        .filter_map(|(site, now)| sites.iter().find(|(s, _)| *s == site).map(|(_, before)| (site, per_put(now - before))))
        .collect();
    by_process.push(("bench".into(), per_put(procs::own_cpu_secs() - own)));
    // The whole cluster: every replicator and this process.
    let cpu_ms = by_process.iter().map(|(_, ms)| ms).sum();
    ms.sort_by(f64::total_cmp);
    let pick = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    Ok(Latencies { p50_ms: pick(0.50), p99_ms: pick(0.99), per_s: n as f64 / total, cpu_ms, by_process })
}

/// One run of a baseline into a fresh directory under `dir`, recorded in
/// `runs`: the baseline times itself (from its first read to its fsync),
/// the CPU is counted around it, the copy is removed afterwards.
async fn baseline_run(runs: &mut Runs, dir: &Path, input: &Path, baseline: fn(&Path, &Path) -> anyhow::Result<f64>) -> anyhow::Result<()> {
    let scratch = dir.join("baseline");
    std::fs::create_dir_all(&scratch)?;
    let (input, out) = (input.to_path_buf(), scratch.join("copy.bin"));
    let cpu = cpu_secs();
    let secs = tokio::task::spawn_blocking(move || baseline(&input, &out)).await??;
    runs.secs.push(secs);
    runs.cpu.push(cpu_secs() - cpu);
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}

/// The ceiling, the receiver writing through the page cache.
fn ceiling_buffered(input: &Path, output: &Path) -> anyhow::Result<f64> {
    ceiling(input, output, false)
}

/// The ceiling, the receiver writing with `O_DIRECT` (reference only).
fn ceiling_direct(input: &Path, output: &Path) -> anyhow::Result<f64> {
    ceiling(input, output, true)
}

/// Disk floor of a DR catch-up or a read-back: `input` read from the disk
/// (`O_DIRECT`: not from the page cache) while as many bytes are written to
/// `output` with `O_DIRECT` and synced, both at once, 1 MiB at a time (the
/// owner reads its stored copy while the DR site writes its own).
fn floor_read_write(input: &Path, output: &Path) -> anyhow::Result<f64> {
    let len = std::fs::metadata(input)?.len();
    let mut block = AlignedChunk::random()?;
    let started = Instant::now();
    let input = input.to_path_buf();
    let reader = std::thread::spawn(move || direct_read(&input));
    direct_write(output, len, &mut block)?;
    reader.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
    Ok(started.elapsed().as_secs_f64())
}

/// Disk floor of a sync put: two files of `input`'s size written with
/// `O_DIRECT` and synced at once (the owner and its in-city peer each
/// store the file; here they share one disk).
fn floor_two_writes(input: &Path, output: &Path) -> anyhow::Result<f64> {
    let len = std::fs::metadata(input)?.len();
    let second = output.with_extension("second");
    let (mut block, mut other_block) = (AlignedChunk::random()?, AlignedChunk::random()?);
    let started = Instant::now();
    let other = {
        let second = second.clone();
        std::thread::spawn(move || direct_write(&second, len, &mut other_block))
    };
    direct_write(output, len, &mut block)?;
    other.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    let secs = started.elapsed().as_secs_f64();
    std::fs::remove_file(&second)?;
    Ok(secs)
}

/// `path` opened with `O_DIRECT`, to read or to be written afresh.
fn open_direct(path: &Path, write: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(!write).write(write).create(write).truncate(write).custom_flags(libc::O_DIRECT).open(path)
}

fn direct_read(path: &Path) -> anyhow::Result<()> {
    let mut file = open_direct(path, false)?;
    let mut mem = AlignedChunk::new();
    while read_full(&mut file, mem.buf())? > 0 {}
    Ok(())
}

/// `len` bytes (rounded up to 4 KiB) written with `O_DIRECT`, then synced:
/// `block` over and over (random bytes, as ciphertext is: a virtual disk
/// may write zeros faster).
fn direct_write(path: &Path, len: u64, block: &mut AlignedChunk) -> anyhow::Result<()> {
    let mut file = open_direct(path, true)?;
    let mut left = len.div_ceil(ALIGN as u64) * ALIGN as u64;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        file.write_all(&block.buf()[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(())
}

/// A 1 MiB buffer at a 4 KiB boundary, for `O_DIRECT` (safe code: the
/// allocation is larger, and the buffer starts at its first boundary).
struct AlignedChunk(Vec<u8>, usize);

impl AlignedChunk {
    fn new() -> Self {
        let mem = vec![0u8; CHUNK + ALIGN];
        let start = (ALIGN - mem.as_ptr() as usize % ALIGN) % ALIGN;
        Self(mem, start)
    }

    /// Filled with random bytes.
    fn random() -> anyhow::Result<Self> {
        let mut chunk = Self::new();
        SystemRandomSource.fill(chunk.buf())?;
        Ok(chunk)
    }

    fn buf(&mut self) -> &mut [u8] {
        &mut self.0[self.1..self.1 + CHUNK]
    }
}

/// The baseline: each 1 MiB chunk is read, crc32'd, sealed with AES-256-GCM
/// and sent over loopback TCP; the receiver writes it and fsyncs at the
/// end. Returns the seconds from the first read to the receiver's fsync.
/// `direct`: the receiver writes with `O_DIRECT` from 1 MiB aligned
/// buffers (the last block padded, the file then cut to length).
fn ceiling(input: &Path, output: &Path, direct: bool) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let output = output.to_path_buf();
    let receiver = std::thread::spawn(move || -> anyhow::Result<()> {
        let (mut sock, _) = listener.accept()?;
        sock.set_nodelay(true)?;
        if direct {
            receive_direct(&mut sock, &output)?;
        } else {
            let mut file = std::fs::File::create(&output)?;
            let mut buf = vec![0u8; CHUNK + 64];
            loop {
                let n = sock.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                file.write_all(&buf[..n])?;
            }
            file.sync_all()?;
        }
        sock.write_all(&[1])?;
        Ok(())
    });
    let started = Instant::now();
    let mut key_bytes = [0u8; 32];
    SystemRandomSource.fill(&mut key_bytes)?;
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key_bytes).map_err(|_| anyhow::anyhow!("bad key"))?);
    let mut sock = TcpStream::connect(addr)?;
    sock.set_nodelay(true)?;
    let mut file = std::fs::File::open(input)?;
    let mut buf = vec![0u8; CHUNK];
    let mut counter: u64 = 0;
    loop {
        let n = read_full(&mut file, &mut buf)?;
        if n == 0 {
            break;
        }
        let mut chunk = buf[..n].to_vec();
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&counter.to_be_bytes());
        counter += 1;
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut chunk).map_err(|_| anyhow::anyhow!("seal failed"))?;
        let crc = crc32fast::hash(&chunk);
        sock.write_all(&(chunk.len() as u32).to_be_bytes())?;
        sock.write_all(&crc.to_be_bytes())?;
        sock.write_all(&chunk)?;
    }
    sock.shutdown(std::net::Shutdown::Write)?;
    let mut ack = [0u8; 1];
    sock.read_exact(&mut ack)?;
    let secs = started.elapsed().as_secs_f64();
    receiver.join().map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    Ok(secs)
}

/// The ceiling's receiver, writing whole aligned 1 MiB blocks with
/// `O_DIRECT` (safe code: the buffer starts at its first 4 KiB boundary).
fn receive_direct(sock: &mut TcpStream, output: &Path) -> anyhow::Result<()> {
    let mut file = open_direct(output, true)?;
    let mut mem = AlignedChunk::new();
    let buf = mem.buf();
    let (mut filled, mut total) = (0usize, 0u64);
    loop {
        let n = sock.read(&mut buf[filled..])?;
        filled += n;
        total += n as u64;
        if filled == CHUNK {
            file.write_all(buf)?;
            filled = 0;
        }
        if n == 0 {
            break;
        }
    }
    if filled > 0 {
        let padded = filled.div_ceil(ALIGN) * ALIGN;
        buf[filled..padded].fill(0);
        file.write_all(&buf[..padded])?;
        file.set_len(total)?;
    }
    file.sync_all()?;
    Ok(())
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            m => n += m,
        }
    }
    Ok(n)
}

fn random_file(path: &Path, size: u64) -> anyhow::Result<()> {
    let mut file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut buf = vec![0u8; CHUNK];
    let mut left = size;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        SystemRandomSource.fill(&mut buf[..n])?;
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    loop {
        let (na, nb) = (read_full(&mut fa, &mut ba)?, read_full(&mut fb, &mut bb)?);
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

/// Three sites laid out like `tandem demo`: the controllers in this
/// process, the replicators as processes.
struct Cluster {
    nodes: Vec<Node>,
    replicators: Vec<Option<ReplicatorProcess>>,
    base_port: u16,
}

impl Cluster {
    async fn start(dir: &Path) -> anyhow::Result<Cluster> {
        Self::start_filled(dir, |_, _| Ok(())).await
    }

    /// [`Cluster::start`], `fill` given each site's replicator data
    /// directory (and the shard count) before its replicator starts.
    async fn start_filled(dir: &Path, fill: impl Fn(&Path, u32) -> anyhow::Result<()>) -> anyhow::Result<Cluster> {
        let base_port = free_base_port()?;
        tandem_crypto::LocalKeyFile::create(&dir.join(KEY_FILE), "bench-kek", &SystemRandomSource)?;
        let mut cluster = Cluster { nodes: Vec::new(), replicators: Vec::new(), base_port };
        for site in ["a", "b", "c"] {
            let text = site_config(dir, site, base_port, tandem_controller::config::DEFAULT_SHARD_COUNT);
            cluster.nodes.push(start_node(NodeConfig::parse(&text, site)?).await?);
        }
        for site in ["a", "b", "c"] {
            let text = replicator_config(dir, site, base_port);
            let config = ReplicatorConfig::parse(&text, site)?;
            fill(&config.data_dir, tandem_controller::config::DEFAULT_SHARD_COUNT)?;
            cluster.replicators.push(Some(ReplicatorProcess::start(dir, site, base_port)?));
        }
        // Ready when a tiny contract is acknowledged in sync mode and every
        // replicator serves it (holds a view: B's read-back needs one).
        let client = ReplicatorClient::new(Transport::Tokio, Duration::from_secs(10));
        let probe = dir.join("probe.txt");
        std::fs::write(&probe, b"probe")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(exited) = cluster.replicators.iter_mut().flatten().find_map(|r| r.exited()) {
                cluster.stop().await;
                bail!("{exited}");
            }
            if let Ok(tenant) = cluster.tenant_owned_by("a") {
                let header = PutHeader { tenant: tenant.clone(), contract_id: "probe".into(), ..Default::default() };
                if let Ok(r) = client.put(&cluster.replicator_addr(0), &header, &[("probe.txt".into(), probe.clone())]).await {
                    let mut serving = true;
                    for i in 1..3 {
                        serving = serving && client.head(&cluster.replicator_addr(i), &tenant, "probe").await.is_ok();
                    }
                    if r.replication.starts_with("sync") && serving {
                        return Ok(cluster);
                    }
                }
            }
            if Instant::now() > deadline {
                cluster.stop().await;
                bail!("the benchmark cluster did not become ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn replicator_addr(&self, i: u16) -> String {
        format!("127.0.0.1:{}", self.base_port + REPLICATOR_PORT_OFFSET + i)
    }

    fn tenant_owned_by(&self, site: &str) -> anyhow::Result<String> {
        let state = self.nodes.iter().map(|n| n.status().cluster).find(|c| c.bootstrapped).context("no shard map yet")?;
        (0..10_000).map(|i| format!("bench-{i}")).find(|t| state.shard_for(t).is_some_and(|(_, s)| s.owner == site)).context("no tenant found for the site")
    }

    fn start_replicator(&mut self, dir: &Path, i: usize) -> anyhow::Result<()> {
        self.replicators[i] = Some(ReplicatorProcess::start(dir, ["a", "b", "c"][i], self.base_port)?);
        Ok(())
    }

    async fn stop_replicator(&mut self, i: usize) {
        if let Some(r) = self.replicators[i].take() {
            r.stop().await;
        }
    }

    async fn stop(mut self) {
        for i in 0..self.replicators.len() {
            self.stop_replicator(i).await;
        }
        for n in self.nodes {
            n.shutdown().await;
        }
    }
}

/// A base port with every port of the demo layout free: controllers,
/// replicators and their `/metrics`.
fn free_base_port() -> anyhow::Result<u16> {
    let offsets: Vec<u16> =
        [0, REPLICATOR_PORT_OFFSET, CONTROLLER_METRICS_OFFSET, REPLICATOR_METRICS_OFFSET].into_iter().flat_map(|o| [o, o + 1, o + 2]).collect();
    for _ in 0..100 {
        let base = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if base < u16::MAX - REPLICATOR_METRICS_OFFSET - 2 && offsets.iter().all(|o| TcpListener::bind(("127.0.0.1", base + o)).is_ok()) {
            return Ok(base);
        }
    }
    bail!("no free ports for the benchmark cluster")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(secs: &[f64]) -> Runs {
        Runs { secs: secs.to_vec(), cpu: vec![0.0; secs.len()] }
    }

    #[test]
    fn paired_ratios_compare_each_run_with_its_own_round() {
        let ceiling = runs(&[1.0, 2.0, 4.0]);
        let tandem = runs(&[2.0, 2.0, 5.0]);
        assert_eq!(paired(&ceiling, &tandem), vec![0.5, 1.0, 0.8]);
        // Best against best would say 0.5 here; the median of the rounds says 0.8.
        assert_eq!(ceiling.best() / tandem.best(), 0.5);
        assert_eq!(median(&paired(&ceiling, &tandem)), 0.8);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
