//! `tandem drill run <scenario.toml> --seed N`, `tandem drill fuzz --seeds
//! A..B` and `tandem drill campaign PLAN`: the deterministic DR drill (see
//! `sim/README.md`). A run prints its seed, the commit and the scenario
//! digest first, writes its report directory, and exits 3 when an
//! objective or invariant fails.
//!
//! Every simulation of a many-seed command runs in a process of its own
//! (`tandem drill one`, hidden): tokio numbers tasks with one counter per
//! process, and the order a crashed host's tasks are dropped in (which
//! closes their connections, in that order) follows those numbers, so two
//! simulations sharing a process, side by side or one after the other,
//! could change each other's traces. One process per run makes a seed
//! its own reproducer, alone or inside `drill fuzz`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use tandem_sim::drill::{self, Safety};
use tandem_sim::report::{self, RunInfo};
use tandem_sim::scenario::Scenario;

/// The commit this binary was built from (set by build.rs).
pub const COMMIT: &str = match option_env!("TANDEM_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Run one scenario file with one seed and write its report; with
    /// `--seeds A..B`, run it once per seed and print the distribution of
    /// its recovery times (failover, survivor, longest gap).
    Run {
        scenario: PathBuf,
        #[arg(long, default_value_t = 1, conflicts_with = "seeds")]
        seed: u64,
        /// A range like 1..21: one run per seed, reports only for failing ones.
        #[arg(long)]
        seeds: Option<String>,
        /// Seeds run at once with --seeds (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Report directory (default: drill-reports/<scenario>-seed-<N>).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run generated fault schedules, one per seed in A..B (B excluded),
    /// and print every failing seed with the command that reproduces it.
    Fuzz {
        /// A range like 0..200.
        #[arg(long)]
        seeds: String,
        /// Where failing runs write their reports.
        #[arg(long, default_value = "drill-reports/fuzz")]
        out: PathBuf,
        /// Seeds run at once, one per thread (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Run a campaign plan (scenarios x seeds, the year's objectives, the
    /// participants; see runbooks/yearly-drill.md): every drill's report
    /// plus one summary (summary.md, summary.json and its SHA-256).
    Campaign {
        plan: PathBuf,
        /// Report directory (default: drill-reports/campaign-<period>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Drills run at once (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Record the summary's SHA-256 in the cluster's audit log (an
        /// admin certificate is needed), so `tandem audit` shows when the
        /// campaign ran, by whom, with what result, and `tandem drill
        /// archived` detects a later change of the summary.
        #[arg(long)]
        archive: bool,
        /// Who ran it: recorded with --archive (defaults to $USER).
        #[arg(long, env = "USER", default_value = "unknown")]
        who: String,
        #[command(flatten)]
        target: super::Target,
    },
    /// One simulation in this process, for the many-seed commands: writes
    /// its report and prints its result as one JSON line.
    #[command(hide = true)]
    One {
        /// A scenario file; without it, the generated schedule of `--seed`
        /// (what `drill fuzz` runs).
        #[arg(long)]
        scenario: Option<PathBuf>,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
        /// Write the report only when the run fails.
        #[arg(long)]
        only_failing: bool,
        #[arg(long)]
        reproduce: String,
    },
    /// Check a campaign's summary.json against the digest --archive
    /// recorded in the audit log: exits 3 when no audit entry records this
    /// exact file (it was changed after archiving, or never archived).
    Archived {
        summary: PathBuf,
        #[command(flatten)]
        target: super::Target,
    },
}

/// Runs outside any async runtime: the simulation brings its own.
pub fn run(args: Args) -> anyhow::Result<bool> {
    match args.command {
        Command::Run { scenario, seeds: Some(seeds), out, jobs, .. } => {
            let s = Scenario::load(&scenario)?;
            let (from, to) = seed_range(&seeds)?;
            println!("seeds {from}..{to}   commit {COMMIT}   scenario {} ({})", scenario.display(), s.digest());
            let out = out.unwrap_or_else(|| PathBuf::from("drill-reports").join("seeds"));
            let seeds: Vec<u64> = (from..to).collect();
            let results = tandem_sim::parallel::each(&seeds, jobs.unwrap_or(0), |seed| {
                let reproduce = format!("tandem drill run {} --seed {seed}", scenario.display());
                (*seed, in_child(Some(&scenario), *seed, &out.join(format!("seed-{seed}")), true, &reproduce))
            });
            distribution(&scenario, &results)
        }
        Command::Run { scenario, seed, out, .. } => {
            let s = Scenario::load(&scenario)?;
            println!("seed {seed}   commit {COMMIT}   scenario {} ({})", scenario.display(), s.digest());
            let reproduce = format!("tandem drill run {} --seed {seed}", scenario.display());
            let stem = scenario.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "drill".into());
            let out = out.unwrap_or_else(|| PathBuf::from("drill-reports").join(format!("{stem}-seed-{seed}")));
            one(&s, seed, reproduce, &out)
        }
        Command::Campaign { plan, out, jobs, archive, who, target } => campaign(&plan, out, jobs, archive.then_some((who.as_str(), &target))),
        Command::Archived { summary, target } => archived(&summary, &target),
        Command::Fuzz { seeds, out, jobs } => {
            let (from, to) = seed_range(&seeds)?;
            println!("seeds {from}..{to}   commit {COMMIT}");
            let started = Instant::now();
            let seeds: Vec<u64> = (from..to).collect();
            let results = tandem_sim::parallel::each(&seeds, jobs.unwrap_or(0), |seed| {
                let reproduce = format!("tandem drill fuzz --seeds {seed}..{}", seed + 1);
                let r = in_child(None, *seed, &out.join(format!("seed-{seed}")), true, &reproduce);
                (*seed, reproduce, r)
            });
            let mut failing = Vec::new();
            for (seed, reproduce, r) in results {
                match r {
                    Ok(d) if d.passed => println!("ok   seed {seed}: trace {}", d.trace_hash),
                    Ok(d) => {
                        println!("FAIL seed {seed}: {} (report {}); reproduce: {reproduce}", d.failed.join("; "), out.join(format!("seed-{seed}")).display());
                        failing.push(seed);
                    }
                    Err(e) => {
                        println!("FAIL seed {seed}: {e:#}; reproduce: {reproduce}");
                        failing.push(seed);
                    }
                }
            }
            println!(
                "{} seeds in {:.0} s: {} failing{}",
                to - from,
                started.elapsed().as_secs_f64(),
                failing.len(),
                if failing.is_empty() { String::new() } else { format!(" ({failing:?})") }
            );
            Ok(failing.is_empty())
        }
        Command::One { scenario, seed, out, only_failing, reproduce } => {
            let s = match &scenario {
                Some(path) => Scenario::load(path)?,
                None => tandem_sim::fuzz::scenario(seed),
            };
            let started = Instant::now();
            let o = drill::run(&s, seed, Safety::Intact).map_err(|e| anyhow::anyhow!("the simulation stopped: {e}"))?;
            if !(only_failing && o.passed()) {
                let info = RunInfo { commit: COMMIT.into(), wall_s: started.elapsed().as_secs_f64(), reproduce };
                report::write(&out, &o, &info).with_context(|| format!("cannot write {}", out.display()))?;
            }
            println!("{RESULT}{}", serde_json::to_string(&drill::RunDigest::of(&o))?);
            Ok(true)
        }
    }
}

/// Runs the plan's drills, writes every report and the summary; with
/// `archive`, records the summary's digest in the audit log.
fn campaign(plan_path: &std::path::Path, out: Option<PathBuf>, jobs: Option<usize>, archive: Option<(&str, &super::Target)>) -> anyhow::Result<bool> {
    use tandem_sim::campaign;
    let (plan, scenarios) = campaign::Plan::load(plan_path)?;
    let previous = plan.previous_summary(plan_path).map_err(|e| anyhow::anyhow!(e))?;
    let plan_digest = campaign::digest(&std::fs::read_to_string(plan_path)?);
    let out = out.unwrap_or_else(|| PathBuf::from("drill-reports").join(format!("campaign-{}", plan.period)));
    let runs: Vec<(PathBuf, &tandem_sim::scenario::Scenario, u64)> =
        plan.drills.iter().zip(&scenarios).flat_map(|(d, (path, s))| d.seeds.iter().map(move |seed| (path.clone(), s, *seed))).collect();
    println!("campaign {} ({})   commit {COMMIT}   {} drills   plan {plan_digest}", plan.name, plan.period, runs.len());
    let started = Instant::now();
    let results = tandem_sim::parallel::each(&runs, jobs.unwrap_or(0), |(path, _, seed)| {
        let dir = out.join(campaign::report_dir(path, *seed));
        let reproduce = format!("tandem drill run {} --seed {seed}", path.display());
        (path.clone(), *seed, dir.clone(), in_child(Some(path), *seed, &dir, false, &reproduce))
    });
    let mut done = Vec::new();
    for (path, seed, dir, r) in results {
        let d = r.with_context(|| format!("{} seed {seed}", path.display()))?;
        println!(
            "{} {} seed {seed}: RTO {:.1} s, lost {} ({})",
            if d.passed { "PASS" } else { "FAIL" },
            d.scenario,
            d.rto_ms as f64 / 1000.0,
            d.lost,
            dir.display()
        );
        done.push((path, d));
    }
    let summary = campaign::summarise(&plan, &plan_digest, COMMIT, &done, previous.as_ref());
    let json = campaign::json(&summary);
    let digest = campaign::digest(&json);
    std::fs::write(out.join("summary.json"), &json)?;
    std::fs::write(out.join("summary.sha256"), format!("{digest}  summary.json\n"))?;
    std::fs::write(out.join("summary.md"), campaign::markdown(&summary, &digest))?;
    println!(
        "{}: {} drills in {:.0} s, DR level {}; summary {} (sha256 {digest})",
        summary.verdict,
        summary.drills.len(),
        started.elapsed().as_secs_f64(),
        summary.level,
        out.join("summary.md").display()
    );
    if let Some((who, target)) = archive {
        let (what, result) = campaign::archive_event(&summary, &digest);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let recorded = rt.block_on(target.client().record_event(&what, &result, who, "yearly drill campaign archived"))?;
        println!("archived: audit entry #{} records the summary's digest", recorded.audit_seq);
    }
    Ok(summary.verdict == "PASS")
}

/// Finds the audit entry that archived this summary; false when none
/// records its digest.
fn archived(summary: &std::path::Path, target: &super::Target) -> anyhow::Result<bool> {
    let json = std::fs::read_to_string(summary).with_context(|| format!("cannot read {}", summary.display()))?;
    let parsed: tandem_sim::campaign::Summary = serde_json::from_str(&json).with_context(|| format!("{} is not a campaign summary", summary.display()))?;
    let digest = tandem_sim::campaign::digest(&json);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let entries = rt.block_on(target.client().audit(100_000))?;
    let prefix = format!("drill campaign {} ({}): summary.json sha256 ", parsed.campaign, parsed.period);
    let archived: Vec<_> = entries.iter().filter(|e| e.what.starts_with(&prefix)).collect();
    if let Some(e) = archived.iter().find(|e| e.what.ends_with(&digest)) {
        println!("archived: audit entry #{} at {} by {}: {} ({})", e.seq, crate::output::utc(e.at_unix_ms), e.who, e.result, e.what);
        return Ok(true);
    }
    println!("NOT ARCHIVED: no audit entry records this file's SHA-256 {digest}");
    for e in archived {
        println!("  audit entry #{} at {} by {} archived another summary of this campaign: {}", e.seq, crate::output::utc(e.at_unix_ms), e.who, e.what);
    }
    Ok(false)
}

fn seed_range(seeds: &str) -> anyhow::Result<(u64, u64)> {
    seeds
        .split_once("..")
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        .filter(|(a, b)| a < b)
        .with_context(|| format!("--seeds {seeds:?}: expected a range like 0..200"))
}

/// What `drill one` prints before its result.
const RESULT: &str = "tandem-drill-result ";

/// Runs one simulation in a child process (`drill one`) and reads its
/// result; the child writes the report directory `out` (only when the run
/// fails, with `only_failing`).
fn in_child(scenario: Option<&std::path::Path>, seed: u64, out: &std::path::Path, only_failing: bool, reproduce: &str) -> anyhow::Result<drill::RunDigest> {
    let exe = std::env::current_exe().context("cannot find this program to run the drill in a child process")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["drill", "one", "--seed", &seed.to_string(), "--reproduce", reproduce]).arg("--out").arg(out);
    if let Some(path) = scenario {
        cmd.arg("--scenario").arg(path);
    }
    if only_failing {
        cmd.arg("--only-failing");
    }
    let child = cmd.stdin(std::process::Stdio::null()).output().context("cannot start the drill's child process")?;
    let stdout = String::from_utf8_lossy(&child.stdout);
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix(RESULT)) else {
        let stderr = String::from_utf8_lossy(&child.stderr);
        bail!("the drill's process ended without a result ({}): {}", child.status, stderr.lines().last().unwrap_or(""));
    };
    serde_json::from_str(line).context("the drill's process printed an unreadable result")
}

type SeedResult = (u64, anyhow::Result<drill::RunDigest>);

/// The value at quantile `q` (0..=1) of sorted `v` (nearest rank).
fn quantile(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Prints each seed's recovery times and their p50 / p99 / max (the
/// children wrote the reports of failing seeds). `Ok(true)` when every
/// seed passed.
fn distribution(scenario: &std::path::Path, results: &[SeedResult]) -> anyhow::Result<bool> {
    let (mut failover, mut survivor, mut gap, mut failing, mut never) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), 0);
    for (seed, r) in results {
        let reproduce = format!("tandem drill run {} --seed {seed}", scenario.display());
        let d = match r {
            Ok(d) => d,
            Err(e) => {
                println!("FAIL seed {seed}: {e:#}; reproduce: {reproduce}");
                failing.push(*seed);
                continue;
            }
        };
        // The slowest over the crashes; `None` when one never recovered.
        let worst = |times: Vec<Option<u64>>| times.into_iter().try_fold(0, |m, t| t.map(|t| m.max(t)));
        let (f, s) = (worst(d.recovery.iter().map(|r| r.0).collect()), worst(d.recovery.iter().map(|r| r.1).collect()));
        let show = |v: Option<u64>| v.map_or("never".into(), |ms| format!("{:.2} s", ms as f64 / 1000.0));
        println!(
            "{} seed {seed}: failover {}, survivor {}, RTO {:.2} s, longest gap {:.2} s",
            if d.passed { "ok  " } else { "FAIL" },
            show(f),
            show(s),
            d.rto_ms as f64 / 1000.0,
            d.longest_gap_ms as f64 / 1000.0
        );
        match f {
            Some(ms) => failover.push(ms),
            None if !d.recovery.is_empty() => never += 1,
            None => {}
        }
        survivor.extend(s);
        gap.push(d.rto_ms);
        if !d.passed {
            failing.push(*seed);
        }
    }
    for v in [&mut failover, &mut survivor, &mut gap] {
        v.sort_unstable();
    }
    let line = |name: &str, v: &[u64]| {
        println!(
            "{name:<12} p50 {:.2} s   p99 {:.2} s   max {:.2} s   ({} runs)",
            quantile(v, 0.5) as f64 / 1000.0,
            quantile(v, 0.99) as f64 / 1000.0,
            v.last().copied().unwrap_or(0) as f64 / 1000.0,
            v.len()
        )
    };
    line("failover", &failover);
    if never > 0 {
        println!("             + {never} runs where a crashed site's shard was never written elsewhere");
    }
    line("survivor", &survivor);
    line("RTO", &gap);
    println!("{} seeds: {} failing{}", results.len(), failing.len(), if failing.is_empty() { String::new() } else { format!(" ({failing:?})") });
    Ok(failing.is_empty())
}

fn one(s: &Scenario, seed: u64, reproduce: String, out: &std::path::Path) -> anyhow::Result<bool> {
    let started = Instant::now();
    let o = drill::run(s, seed, Safety::Intact).map_err(|e| anyhow::anyhow!("{e}"))?;
    let wall_s = started.elapsed().as_secs_f64();
    let info = RunInfo { commit: COMMIT.into(), wall_s, reproduce };
    report::write(out, &o, &info).with_context(|| format!("cannot write {}", out.display()))?;
    let sim_s = o.simulated_ms as f64 / 1000.0;
    println!("trace {}", o.trace_hash);
    println!("simulated {sim_s:.1} s in {wall_s:.1} s of wall time ({:.1} x)", sim_s / wall_s.max(0.001));
    for i in &o.checks.invariants {
        println!("  {} {}", i.verdict(), i.name);
        if !i.passed {
            for d in i.details.iter().take(5) {
                println!("       {d}");
            }
        }
    }
    let goals = s.goals();
    println!(
        "RTO {:.1} s (objective {} s), lost {} reaching {:.1} s back (objective {} entries, {} s)",
        o.checks.rto_ms as f64 / 1000.0,
        goals.rto_s.value,
        o.checks.lost.len(),
        o.checks.rpo_ms as f64 / 1000.0,
        goals.rpo_entries.value,
        goals.rpo_s.value
    );
    for r in &o.recovery {
        let show = |v: Option<u64>| v.map_or("never".into(), |ms| format!("{:.2} s", ms as f64 / 1000.0));
        println!(
            "crash of {} at {:.1} s: its {} shards written elsewhere after {}; the others' own writes after {}",
            r.site,
            r.at_ms as f64 / 1000.0,
            r.shards,
            show(r.failover_ms),
            show(r.survivor_ms)
        );
    }
    println!("{}: report in {}", if o.passed() { "PASS" } else { "FAIL" }, out.display());
    if !out.join("report.md").exists() {
        bail!("the report was not written");
    }
    Ok(o.passed())
}
