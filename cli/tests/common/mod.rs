//! Shared harness of the end-to-end tests: real `tandem controller` and
//! `tandem replicator` processes per site on loopback, driven by the
//! `tandem` CLI exactly as an SRE would.
//!
//! Waits poll the cluster's own answers until a condition holds, bounded by
//! a deadline; nothing sleeps to paper over a race.
#![allow(dead_code)] // each test file uses its own part of the harness

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod data;
pub mod s3;

#[allow(unused_imports)] // not every test file stores contracts
pub use data::*;

pub const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");
/// Bound on any one wait for the cluster to reach a state.
pub const WAIT: Duration = Duration::from_secs(60);
pub const SITES: [&str; 3] = ["a", "b", "c"];
pub const SHARDS: u32 = 64;

/// A port for a daemon to listen on. Taken below the kernel's ephemeral
/// range (32768..), so no outgoing connection can grab it between this
/// check and the daemon's bind; spread by process id and a counter so the
/// tests of one binary (threads) and consecutive binaries do not collide.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let pid = std::process::id();
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let port = 20_000 + ((pid.wrapping_mul(97) + n * 13) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// Controller address per site.
    pub addrs: BTreeMap<&'static str, String>,
    /// Replicator address per site.
    pub replicator_addrs: BTreeMap<&'static str, String>,
    /// Prometheus `/metrics` address per process: "a" or "a-replicator".
    pub metrics_addrs: BTreeMap<String, String>,
    /// Environment given to every daemon started from now on.
    pub env: Vec<(String, String)>,
    /// And to the daemons of one site ("a": its controller and replicator).
    pub site_env: BTreeMap<String, Vec<(String, String)>>,
    /// Running processes: "a" (controller) or "a-replicator".
    children: BTreeMap<String, Child>,
    /// A site isolated in its own network namespace, when asked for.
    pub netns: Option<Netns>,
    /// The PKI (`tandem certs init`) when the cluster runs mutual TLS.
    pub tls: Option<PathBuf>,
}

/// Operators `Cluster::with_tls` issues certificates for, by role.
pub const ADMIN: &str = "ada";
/// A second admin (four-eyes approval).
pub const ADMIN2: &str = "bea";
pub const OPERATOR: &str = "olga";
pub const VIEWER: &str = "vera";

/// One site in a network namespace joined to the host by a veth pair, so
/// a test can cut it off (`ip link set ... down`) like a broken link.
///
/// A cut must never let packets leave the machine: with the host side
/// down, its connected route goes and packets for the namespace's address
/// would follow the default route out. So a blackhole route for the pair's
/// subnet (metric above the connected route's) is added before the link
/// exists and removed with the namespace; every cut checks with `ip route
/// get` that the address has no route out, and the namespace has no
/// default route of its own.
pub struct Netns {
    pub site: String,
    pub name: String,
    host_if: String,
    /// The pair's /30, blackholed on the host.
    subnet: String,
    /// The host side's address (where the other sites listen).
    pub host_ip: String,
    /// The namespace side's address (where the isolated site listens).
    pub ns_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Netns {
    /// Creates the namespace and its link; Err when this host does not
    /// allow it (no CAP_NET_ADMIN).
    fn create(site: &str) -> Result<Netns, String> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = std::process::id() % 60_000;
        let (x, y) = (20 + (id % 200), (id / 200 + n * 7) % 250);
        let name = format!("tnd{id}-{n}");
        let (host_if, ns_if) = (format!("tv{id}x{n}"), format!("tv{id}y{n}"));
        let (host_ip, ns_ip) = (format!("10.{x}.{y}.1"), format!("10.{x}.{y}.2"));
        let subnet = format!("10.{x}.{y}.0/30");
        ip(&["route", "add", "blackhole", &subnet, "metric", BLACKHOLE_METRIC])?;
        if let Err(e) = ip(&["netns", "add", &name]) {
            let _ = ip(&["route", "del", "blackhole", &subnet, "metric", BLACKHOLE_METRIC]);
            return Err(e);
        }
        let ns = Netns { site: site.into(), name: name.clone(), host_if: host_if.clone(), subnet, host_ip: host_ip.clone(), ns_ip: ns_ip.clone() };
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if])?;
        ip(&["link", "set", &ns_if, "netns", &name])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        ip(&["netns", "exec", &name, "ip", "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if])?;
        ip(&["netns", "exec", &name, "ip", "link", "set", &ns_if, "up"])?;
        ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Cuts (false) or restores (true) the site's link to the others. A
    /// cut is checked to keep every packet inside the machine.
    pub fn set_link(&self, up: bool) {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }]).unwrap();
        if !up {
            self.assert_contained();
        }
    }

    /// Panics if a packet for the namespace could leave the machine: the
    /// host must have no route to its address (the blackhole answers
    /// `ip route get` with an error), and the namespace no default route.
    fn assert_contained(&self) {
        let out = Command::new("ip").args(["route", "get", &self.ns_ip]).output().expect("ip route get");
        let route = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success() || !route.contains(" dev "), "the cut link lets packets for {} leave the machine: {route}", self.ns_ip);
        let out = Command::new("ip").args(["netns", "exec", &self.name, "ip", "route", "show", "default"]).output().expect("ip route show");
        assert!(out.stdout.is_empty(), "namespace {} has a default route: {}", self.name, String::from_utf8_lossy(&out.stdout));
    }
}

/// Above any connected route's metric (0), so the blackhole only answers
/// while the veth is down.
const BLACKHOLE_METRIC: &str = "4000";

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["route", "del", "blackhole", &self.subnet, "metric", BLACKHOLE_METRIC]);
    }
}

impl Cluster {
    /// Writes controller and replicator configs for three sites; starts nothing.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// Like [`Cluster::new`], with `site` in its own network namespace.
    /// `None` when this host does not allow network namespaces.
    pub fn with_site_in_netns(site: &str) -> Option<Self> {
        match Netns::create(site) {
            Ok(ns) => Some(Self::build(Some(ns))),
            Err(e) => {
                eprintln!("WARNING: cannot create a network namespace ({e}); this test needs root or CAP_NET_ADMIN");
                None
            }
        }
    }

    fn build(netns: Option<Netns>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let host = |s: &str| match &netns {
            Some(ns) if ns.site == s => ns.ns_ip.clone(),
            Some(ns) => ns.host_ip.clone(),
            None => "127.0.0.1".to_string(),
        };
        let addrs: BTreeMap<_, _> = SITES.iter().map(|s| (*s, format!("{}:{}", host(s), free_port()))).collect();
        let replicator_addrs: BTreeMap<_, _> = SITES.iter().map(|s| (*s, format!("{}:{}", host(s), free_port()))).collect();
        let metrics_addrs = SITES
            .iter()
            .flat_map(|s| [s.to_string(), format!("{s}-replicator")])
            .map(|name| {
                let site = name.split('-').next().unwrap_or_default().to_string();
                (name, format!("{}:{}", host(&site), free_port()))
            })
            .collect();
        let c =
            Cluster { dir, addrs, replicator_addrs, metrics_addrs, env: Vec::new(), site_env: BTreeMap::new(), children: BTreeMap::new(), netns, tls: None };
        let key = c.dir.path().join("kek.key");
        let out = run_bounded(Command::new(TANDEM).args(["keys", "create", "--kek-id", "test-kek-1", "--file"]).arg(&key));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        for site in SITES {
            std::fs::write(c.config_path(site), c.controller_config(site)).unwrap();
            std::fs::write(c.replicator_config_path(site), c.replicator_config(site, &key, "")).unwrap();
        }
        c
    }

    /// Like [`Cluster::new`], with mutual TLS: `tandem certs init` makes
    /// the PKI (operators [`ADMIN`], [`OPERATOR`], [`VIEWER`]), every
    /// daemon config gets a `[tls]` section, and [`Cluster::tandem`] runs
    /// the CLI with the admin's certificate.
    pub fn with_tls() -> Self {
        let mut c = Self::build(None);
        let tls = c.dir.path().join("tls");
        let operators = [format!("{ADMIN}:admin"), format!("{ADMIN2}:admin"), format!("{OPERATOR}:operator"), format!("{VIEWER}:viewer")];
        let mut cmd = Command::new(TANDEM);
        cmd.args(["certs", "init", "--dir"]).arg(&tls);
        for o in &operators {
            cmd.args(["--operator", o]);
        }
        let out = run_bounded(&mut cmd);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        for site in SITES {
            let section =
                format!("\n[tls]\nca = \"{0}/site-{site}/ca.pem\"\ncert = \"{0}/site-{site}/cert.pem\"\nkey = \"{0}/site-{site}/key.pem\"\n", tls.display());
            for path in [c.config_path(site), c.replicator_config_path(site)] {
                let text = std::fs::read_to_string(&path).unwrap() + &section;
                std::fs::write(&path, text).unwrap();
            }
        }
        c.tls = Some(tls);
        c
    }

    /// The CLI run as `operator` (its certificate from the cluster's PKI).
    pub fn tandem_as(&self, operator: &str, sites: &[&str], args: &[&str]) -> Output {
        let tls = self.tls.as_ref().expect("a cluster with TLS").join(format!("operator-{operator}"));
        run_bounded(Command::new(TANDEM).args(args).env("TANDEM_CONTROLLERS", self.controllers(sites)).env("TANDEM_TLS_DIR", tls))
    }

    /// `tandem contract ...` at `site`'s replicator, as `operator`.
    pub fn contract_as(&self, operator: &str, site: &str, args: &[&str]) -> Output {
        let tls = self.tls.as_ref().expect("a cluster with TLS").join(format!("operator-{operator}"));
        run_bounded(
            self.cli()
                .arg("contract")
                .args(args)
                .env("TANDEM_REPLICATOR", &self.replicator_addrs[site])
                .env("TANDEM_CONTROLLERS", self.controllers(&SITES))
                .env("TANDEM_TLS_DIR", tls),
        )
    }

    /// The CLI's environment: the admin's certificate when the cluster runs TLS.
    fn cli(&self) -> Command {
        let mut cmd = Command::new(TANDEM);
        match &self.tls {
            Some(tls) => cmd.env("TANDEM_TLS_DIR", tls.join(format!("operator-{ADMIN}"))),
            None => cmd.env_remove("TANDEM_TLS_DIR"),
        };
        cmd
    }

    pub fn config_path(&self, site: &str) -> PathBuf {
        self.dir.path().join(format!("{site}.toml"))
    }

    pub fn replicator_config_path(&self, site: &str) -> PathBuf {
        self.dir.path().join(format!("{site}-replicator.toml"))
    }

    /// Where a site keeps its data (controller and replicator).
    pub fn data_dir(&self, site: &str) -> PathBuf {
        self.dir.path().join(site)
    }

    fn controller_config(&self, site: &str) -> String {
        let mut text = format!(
            "site = \"{site}\"\ndata_dir = \"{}\"\nshard_count = {SHARDS}\nmetrics_listen = \"{}\"\n\n[raft]\nheartbeat_ms = 100\n\
             election_timeout_min_ms = 500\nelection_timeout_max_ms = 1000\ncommit_timeout_ms = 3000\n",
            self.data_dir(site).display(),
            self.metrics_addrs[site]
        );
        for (i, (name, city, role)) in [("a", "city-1", "active"), ("b", "city-1", "active"), ("c", "city-2", "dr-standby")].iter().enumerate() {
            text.push_str(&format!(
                "\n[[sites]]\nname = \"{name}\"\nnode_id = {}\ncity = \"{city}\"\nrole = \"{role}\"\naddr = \"{}\"\n",
                i + 1,
                self.addrs[name]
            ));
        }
        text
    }

    /// A replicator config; `extra` is appended to the top-level keys.
    pub fn replicator_config(&self, site: &str, key_file: &Path, extra: &str) -> String {
        self.replicator_config_keyed(site, &format!("key_file = \"{}\"", key_file.display()), extra)
    }

    /// A replicator config with `key_line` (`key_file = ...`, or empty) as
    /// its third line; `extra` is appended to the top-level keys and may end
    /// with tables, e.g. an `[hsm]` section.
    pub fn replicator_config_keyed(&self, site: &str, key_line: &str, extra: &str) -> String {
        let mut text = format!(
            "site = \"{site}\"\ndata_dir = \"{}\"\n{key_line}\ncontrollers = [{}]\nsync_timeout_ms = 1000\n\
             metrics_listen = \"{}\"\n{extra}\n",
            self.data_dir(site).join("replicator").display(),
            SITES.iter().map(|s| format!("\"{}\"", self.addrs[s])).collect::<Vec<_>>().join(", "),
            self.metrics_addrs[&format!("{site}-replicator")]
        );
        for name in SITES {
            text.push_str(&format!("\n[[sites]]\nname = \"{name}\"\naddr = \"{}\"\n", self.replicator_addrs[name]));
        }
        text
    }

    fn spawn(&mut self, name: String, args: &[&str], config: PathBuf) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(format!("{name}.log"))).unwrap();
        let site = name.split('-').next().unwrap_or_default();
        let mut cmd = self.command_at(site);
        let site_env = self.site_env.get(site).cloned().unwrap_or_default();
        let child = cmd.envs(self.env.iter().cloned()).envs(site_env).args(args).arg(config).stdout(Stdio::null()).stderr(log).spawn().unwrap();
        assert!(self.children.insert(name.clone(), child).is_none(), "{name} already running");
    }

    /// `tandem`, run where `site` runs (inside its namespace, if it has one;
    /// `ip netns exec` execs, so the child's pid is tandem's).
    pub fn command_at(&self, site: &str) -> Command {
        match &self.netns {
            Some(ns) if ns.site == site => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &ns.name, TANDEM]);
                cmd
            }
            _ => Command::new(TANDEM),
        }
    }

    /// Starts a site's controller.
    pub fn start(&mut self, site: &str) {
        self.spawn(site.to_string(), &["controller", "--config"], self.config_path(site));
    }

    /// Starts a site's replicator.
    pub fn start_replicator(&mut self, site: &str) {
        self.spawn(format!("{site}-replicator"), &["replicator", "--config"], self.replicator_config_path(site));
    }

    /// Starts every controller and replicator and waits until the cluster
    /// has a leader, its layout, and a heartbeat from every replicator
    /// showing it holds a controller view (so it serves requests).
    pub fn start_all(&mut self) -> Value {
        for s in SITES {
            self.start(s);
            self.start_replicator(s);
        }
        self.wait_ready()
    }

    /// Waits until the cluster has a leader, its layout, and a heartbeat
    /// from every replicator showing it holds a controller view.
    pub fn wait_ready(&self) -> Value {
        self.wait_status("a leader, the layout, and every replicator reporting", &SITES, |s| {
            leader_of(s).is_some()
                && s["cluster"]["bootstrapped"] == true
                && s["replicators"].as_array().is_some_and(|r| r.len() == 3 && r.iter().all(|h| h["view_index"].as_u64() > Some(0)))
                && heartbeats_fresh(s)
        })
    }

    /// SIGKILL: no clean shutdown, as in a power cut of the process.
    pub fn kill(&mut self, site: &str) {
        self.kill_process(site);
    }

    /// SIGKILL of every process of a site (a power cut of the data centre).
    pub fn kill_site(&mut self, site: &str) {
        self.kill_process(site);
        self.kill_process(&format!("{site}-replicator"));
    }

    pub fn kill_replicator(&mut self, site: &str) {
        self.kill_process(&format!("{site}-replicator"));
    }

    fn kill_process(&mut self, name: &str) {
        let mut child = self.children.remove(name).unwrap_or_else(|| panic!("{name} is not running"));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Peak resident memory (VmHWM) of a running process, in MiB.
    pub fn peak_rss_mib(&self, name: &str) -> u64 {
        let pid = self.children[name].id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap();
        kib / 1024
    }

    /// Waits (bounded) for a process to exit by itself; returns its status.
    pub fn wait_exit(&mut self, name: &str) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            let child = self.children.get_mut(name).unwrap_or_else(|| panic!("{name} is not running"));
            if let Some(status) = child.try_wait().unwrap() {
                self.children.remove(name);
                return status;
            }
            assert!(Instant::now() < deadline, "{name} did not exit");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn controllers(&self, sites: &[&str]) -> String {
        sites.iter().map(|s| self.addrs[s].clone()).collect::<Vec<_>>().join(",")
    }

    /// One scrape of a process's `/metrics` ("a" or "a-replicator"), as
    /// Prometheus does it (plain HTTP/1.1 GET); `None` if it does not answer.
    pub fn scrape(&self, name: &str) -> Option<String> {
        let (status, body) = http(&self.metrics_addrs[name], "GET", "/metrics", "")?;
        (status == 200).then_some(body)
    }

    /// Runs the CLI against `sites`' controllers.
    pub fn tandem(&self, sites: &[&str], args: &[&str]) -> Output {
        run_bounded(self.cli().args(args).env("TANDEM_CONTROLLERS", self.controllers(sites)))
    }

    /// Starts `tandem args...` against the controllers of `sites` without
    /// waiting for it, its stdout piped (to kill it half-way).
    pub fn spawn_tandem(&self, sites: &[&str], args: &[&str]) -> std::process::Child {
        self.cli()
            .args(args)
            .env("TANDEM_CONTROLLERS", self.controllers(sites))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Starts `tandem contract ...` against `site`'s replicator without
    /// waiting for it, its output piped.
    pub fn spawn_contract(&self, site: &str, args: &[&str]) -> std::process::Child {
        self.cli()
            .arg("contract")
            .args(args)
            .env("TANDEM_REPLICATOR", &self.replicator_addrs[site])
            .env("TANDEM_CONTROLLERS", self.controllers(&SITES))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs `tandem contract ...` against `site`'s replicator.
    pub fn contract(&self, site: &str, args: &[&str]) -> Output {
        run_bounded(
            self.cli().arg("contract").args(args).env("TANDEM_REPLICATOR", &self.replicator_addrs[site]).env("TANDEM_CONTROLLERS", self.controllers(&SITES)),
        )
    }

    /// `tandem status --json` asked of `sites`; a few tries, because on a
    /// loaded machine one call can miss its 2 s bound.
    pub fn status(&self, sites: &[&str]) -> Option<Value> {
        for _ in 0..3 {
            let out = self.tandem(sites, &["status", "--json", "--timeout-ms", "2000"]);
            if out.status.success() {
                return Some(serde_json::from_slice(&out.stdout).unwrap());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }

    /// Polls `status` (asked of `sites`) until `cond` holds.
    pub fn wait_status(&self, what: &str, sites: &[&str], cond: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(what, || self.status(sites).filter(|s| cond(s)))
    }

    /// Polls `probe` until it returns something, bounded by [`WAIT`].
    pub fn wait_for<T>(&self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = probe() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {what}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        let mut names: Vec<String> = SITES.iter().map(|s| s.to_string()).collect();
        names.extend(SITES.iter().map(|s| format!("{s}-replicator")));
        names
            .iter()
            .map(|name| {
                let log = self.log(name);
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!("--- {name}.log (last lines) ---\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.children) {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Then the namespace (its Drop), once nothing runs in it.
        self.netns.take();
    }
}

/// One plain HTTP/1.1 request to `addr` (no TLS, `Connection: close`):
/// (status, body), or `None` when nothing answers within 10 s.
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Every replicator heartbeat in `status` is under two seconds old.
pub fn heartbeats_fresh(status: &Value) -> bool {
    let now = status["now_unix_ms"].as_u64().unwrap_or(0);
    status["replicators"].as_array().is_some_and(|r| r.iter().all(|h| now.saturating_sub(h["received_at_unix_ms"].as_u64().unwrap_or(0)) < 2_000))
}

/// Runs a command, killing it if it outlives [`WAIT`]: a hung CLI fails
/// the test instead of hanging it.
pub fn run_bounded(cmd: &mut Command) -> Output {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    // Read the pipes while waiting, so a large output cannot block the child.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("command did not finish within {WAIT:?}: {cmd:?}");
        }
    }
}

pub fn leader_of(status: &Value) -> Option<String> {
    status["leader"].as_str().map(str::to_string)
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// One acknowledged put of a [`Writer`].
#[derive(Clone, Debug)]
pub struct Ack {
    pub id: String,
    /// Site that accepted it.
    pub origin: String,
    /// How it was made durable ("sync: ...", "async: ...").
    pub replication: String,
    /// When the acknowledgement arrived.
    pub at: Instant,
}

/// A client that keeps putting contracts `w1`, `w2`, ... (with `file`)
/// through `tandem contract put` until stopped, recording every outcome.
pub struct Writer {
    acked: std::sync::Arc<std::sync::Mutex<Vec<Ack>>>,
    failed: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub fn start(replicator: &str, tenant: &str, file: &Path) -> Writer {
        Self::start_with(|| Command::new(TANDEM), replicator, tenant, file, "w")
    }

    /// Like [`Writer::start`], running `tandem` as `command` makes it (e.g.
    /// inside a site's network namespace).
    /// Contract ids are `prefix1`, `prefix2`, ...
    pub fn start_with(command: impl Fn() -> Command + Send + 'static, replicator: &str, tenant: &str, file: &Path, prefix: &str) -> Writer {
        let w = Writer { acked: Default::default(), failed: Default::default(), stop: Default::default(), thread: None };
        let (acked, failed, stop) = (w.acked.clone(), w.failed.clone(), w.stop.clone());
        let (replicator, tenant, file, prefix) = (replicator.to_string(), tenant.to_string(), file.to_path_buf(), prefix.to_string());
        let thread = std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                i += 1;
                let id = format!("{prefix}{i}");
                let out = run_bounded(
                    command().args(["contract", "put", "--json", "--tenant", &tenant, "--id", &id, "--file"]).arg(&file).env("TANDEM_REPLICATOR", &replicator),
                );
                if out.status.success() {
                    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                    let origin = v["contract"]["origin"].as_str().unwrap().to_string();
                    let replication = v["replication"].as_str().unwrap().to_string();
                    acked.lock().unwrap().push(Ack { id, origin, replication, at: Instant::now() });
                } else {
                    failed.lock().unwrap().push(format!("{id}: {}", stderr(&out)));
                }
            }
        });
        Writer { thread: Some(thread), ..w }
    }

    pub fn acked(&self) -> Vec<Ack> {
        self.acked.lock().unwrap().clone()
    }

    /// Waits until at least `n` puts were acknowledged.
    pub fn wait_acks(&self, c: &Cluster, n: usize) {
        c.wait_for(&format!("{n} acknowledged writes"), || (self.acked.lock().unwrap().len() >= n).then_some(()));
    }

    /// Stops and returns (acknowledged, failed).
    pub fn stop(mut self) -> (Vec<Ack>, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        (self.acked(), self.failed.lock().unwrap().clone())
    }
}

/// A tenant whose shard `site` owns, per the controller's shard map.
pub fn tenant_owned_by(status: &Value, site: &str, salt: &str) -> String {
    let shards = status["cluster"]["shards"].as_array().unwrap();
    (0..)
        .map(|i| format!("{salt}-{i}"))
        .find(|t| {
            let shard = tandem_controller::state::shard_of(t, shards.len() as u32) as usize;
            shards[shard]["owner"] == site
        })
        .unwrap()
}

/// Contract ids of `tenant` at `site`'s replicator.
pub fn list_ids(c: &Cluster, site: &str, tenant: &str) -> std::collections::BTreeSet<String> {
    let out = c.contract(site, &["list", "--json", "--tenant", tenant]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().iter().map(|c| c["contract_id"].as_str().unwrap().to_string()).collect()
}
