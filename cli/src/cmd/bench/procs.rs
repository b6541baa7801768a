//! The bench's replicators as processes of their own (`tandem replicator
//! --config`), as they are deployed: each site's CPU can then be read on
//! its own (`/proc/<pid>/stat`), and the figures the bench prints for "the
//! whole cluster" add every replicator's CPU to this process's
//! ([`cpu_secs`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::super::demo::replicator_config;

/// The replicator processes running now, by site: every CPU count reads them.
static RUNNING: Mutex<Vec<(String, u32)>> = Mutex::new(Vec::new());
/// Peak resident memory (MiB) of each site's replicator processes so far,
/// read as each one stops.
static PEAKS: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());
/// The binary they run: this one unless [`use_binary`] said otherwise.
static BINARY: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Runs the replicators from `bin` (another build of tandem).
pub fn use_binary(bin: &Path) -> anyhow::Result<()> {
    let bin = bin.canonicalize().with_context(|| format!("no replicator binary at {}", bin.display()))?;
    let out = Command::new(&bin).arg("--version").output().with_context(|| format!("cannot run {}", bin.display()))?;
    anyhow::ensure!(out.status.success(), "{} --version failed: is it a tandem binary?", bin.display());
    println!("replicators run from {} ({})", bin.display(), String::from_utf8_lossy(&out.stdout).trim());
    *BINARY.lock().unwrap_or_else(|p| p.into_inner()) = Some(bin);
    Ok(())
}

/// One site's replicator process; stopped (SIGTERM, then SIGKILL after
/// 30 s) by [`ReplicatorProcess::stop`] or when dropped.
pub struct ReplicatorProcess {
    site: String,
    child: Child,
}

impl ReplicatorProcess {
    /// Starts `site`'s replicator with the demo's layout under `dir`; its
    /// log goes to `dir/<site>-replicator.log`.
    pub fn start(dir: &Path, site: &str, base_port: u16) -> anyhow::Result<Self> {
        let config = dir.join(format!("{site}-replicator.toml"));
        std::fs::write(&config, replicator_config(dir, site, base_port)).with_context(|| format!("cannot write {}", config.display()))?;
        let log_path = dir.join(format!("{site}-replicator.log"));
        let log = std::fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
        let chosen = BINARY.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let exe = match chosen {
            Some(bin) => bin,
            None => std::env::current_exe().context("cannot find this program to start the replicators")?,
        };
        let child = Command::new(exe)
            .arg("replicator")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start a replicator process")?;
        RUNNING.lock().unwrap_or_else(|p| p.into_inner()).push((site.to_string(), child.id()));
        Ok(Self { site: site.to_string(), child })
    }

    /// Whether the process has exited (it should not, while the bench runs).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("the replicator of site {} exited ({status}); see its log", self.site)),
            _ => None,
        }
    }

    /// Stops it as an operator would (SIGTERM), and waits.
    pub async fn stop(mut self) {
        self.terminate().await;
    }

    async fn terminate(&mut self) {
        note_peak(&self.site, self.child.id());
        RUNNING.lock().unwrap_or_else(|p| p.into_inner()).retain(|(_, pid)| *pid != self.child.id());
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ReplicatorProcess {
    fn drop(&mut self) {
        RUNNING.lock().unwrap_or_else(|p| p.into_inner()).retain(|(_, pid)| *pid != self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peak_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    Some(kib / 1024)
}

fn note_peak(site: &str, pid: u32) {
    let Some(mib) = peak_mib(pid) else { return };
    let mut peaks = PEAKS.lock().unwrap_or_else(|p| p.into_inner());
    match peaks.iter_mut().find(|(s, _)| s == site) {
        Some((_, peak)) => *peak = (*peak).max(mib),
        None => peaks.push((site.to_string(), mib)),
    }
}

/// Peak resident memory (VmHWM) of each site's replicator, in MiB, over
/// every process it ran as (a restarted site has had several), by site.
pub fn peak_rss_mib_by_site() -> Vec<(String, u64)> {
    let running = RUNNING.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for (site, pid) in running {
        note_peak(&site, pid);
    }
    let mut peaks = PEAKS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    peaks.sort();
    peaks
}

/// CPU seconds (user + system) used so far by this process (controllers
/// and clients) and every running replicator: the whole cluster's.
pub fn cpu_secs() -> f64 {
    own_cpu_secs() + by_site().iter().map(|(_, s)| s).sum::<f64>()
}

/// CPU seconds used so far by each running replicator, by site.
pub fn by_site() -> Vec<(String, f64)> {
    let running = RUNNING.lock().unwrap_or_else(|p| p.into_inner()).clone();
    running.into_iter().map(|(site, pid)| (site, process_cpu_secs(pid).unwrap_or(0.0))).collect()
}

/// This process's CPU, to the nanosecond (the tick counts in /proc are
/// 10 ms: too coarse for one small put; per site, the bench counts many).
pub fn own_cpu_secs() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// User + system CPU of process `pid` (all its threads, live and ended).
fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&stat, USER_HZ)
}

/// `/proc` counts CPU in USER_HZ ticks, which Linux fixes at 100 a second
/// for user space whatever the kernel's own tick rate.
const USER_HZ: f64 = 100.0;

/// utime + stime from a `/proc/<pid>/stat` line: fields 14 and 15, counted
/// after the command name (which may hold spaces and parentheses).
fn parse_stat_cpu(stat: &str, ticks_per_s: f64) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_is_fields_fourteen_and_fifteen_after_the_name() {
        let line = "4242 (tandem (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 100 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_cpu(line, 100.0), Some(3.0));
        assert_eq!(parse_stat_cpu("garbage", 100.0), None);
    }

    #[test]
    fn this_process_has_a_cpu_count_in_proc() {
        // Some work, so the count is above zero ticks.
        let mut x = 0u64;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(process_cpu_secs(std::process::id()).unwrap() > 0.0);
    }
}
