//! Runs one scenario with one seed: starts the simulated cluster, runs the
//! workload and the timeline, heals everything, lets it settle, reads what
//! every site holds and checks the invariants.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tandem_controller::operations::dr::{self, Activation};
use tandem_controller::operations::OpError;
use tandem_controller::raft::state_machine::StateMachineStore;

use crate::checks::{self, Checks, FinalReads, FinalState};
use crate::cluster::{leader, node_id_of, site_names, SimCluster, SimError};
use crate::scenario::{Event, Scenario};
use crate::workload::{self, History, Op};

/// How a run may be deliberately broken, to prove the checks can fail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Safety {
    #[default]
    Intact,
    /// The controllers move shards right after fencing them, without
    /// waiting out the old owner's write lease.
    SkipLeaseWait,
}

/// One thing that happened in the run, for the report's timeline.
#[derive(Clone, Debug, Serialize)]
pub struct Happened {
    pub at_ms: u64,
    pub what: String,
    /// For SRE commands: what the command answered.
    pub outcome: Option<String>,
    /// For SRE commands the rules refused: the refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Outcome {
    pub scenario: Scenario,
    pub scenario_digest: String,
    pub seed: u64,
    pub safety: Safety,
    pub trace_hash: String,
    #[serde(skip)]
    pub trace: Vec<String>,
    /// Simulated time from start to the end of the checks.
    pub simulated_ms: u64,
    /// When the workload started and stopped (simulated ms).
    pub workload_ms: (u64, u64),
    /// The same, and when the checks began.
    pub window: checks::Window,
    pub happened: Vec<Happened>,
    pub ops: Vec<Op>,
    pub checks: Checks,
    /// The controllers' own decisions (detections, fences, moves, declines,
    /// mode changes): the audit log of the most advanced controller store
    /// at the end, times in simulated ms since the run began.
    pub audit: Vec<(u64, tandem_controller::state::AuditEntry)>,
    /// Per site crash: how long until its shards were written elsewhere,
    /// and the other sites' own writes resumed.
    pub recovery: Vec<crate::recovery::CrashRecovery>,
    /// Owners, pair mode and lag over time, as the leader saw them.
    pub samples: Vec<crate::cluster::Sample>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.checks.passed()
    }
}

/// What a run's caller needs when the run happened in another process
/// (`tandem drill` runs every simulation in a process of its own; see
/// `sim/README.md`, Determinism): its verdict and figures, as JSON.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct RunDigest {
    pub scenario: String,
    pub seed: u64,
    pub passed: bool,
    pub target: Option<String>,
    pub scenario_digest: String,
    pub trace_hash: String,
    pub simulated_ms: u64,
    pub rto_ms: u64,
    pub longest_gap_ms: u64,
    pub lost: usize,
    pub rpo_ms: u64,
    /// The failing invariants' names.
    pub failed: Vec<String>,
    pub findings: Vec<crate::findings::Finding>,
    /// Per crash: (failover, survivor) times, `None` for never.
    pub recovery: Vec<(Option<u64>, Option<u64>)>,
}

impl RunDigest {
    pub fn of(o: &Outcome) -> Self {
        RunDigest {
            scenario: o.scenario.name.clone(),
            seed: o.seed,
            passed: o.passed(),
            target: o.scenario.objectives.target.clone(),
            scenario_digest: o.scenario_digest.clone(),
            trace_hash: o.trace_hash.clone(),
            simulated_ms: o.simulated_ms,
            rto_ms: o.checks.rto_ms,
            longest_gap_ms: o.checks.longest_gap_ms,
            lost: o.checks.lost.len(),
            rpo_ms: o.checks.rpo_ms,
            failed: o.checks.invariants.iter().filter(|i| i.checked && !i.passed).map(|i| i.name.clone()).collect(),
            findings: crate::findings::of(o),
            recovery: o.recovery.iter().map(|r| (r.failover_ms, r.survivor_ms)).collect(),
        }
    }
}

type Log = Arc<Mutex<Vec<Happened>>>;

fn note(log: &Log, at: Duration, what: String, outcome: Option<String>) {
    note_refused(log, at, what, outcome, None);
}

fn note_refused(log: &Log, at: Duration, what: String, outcome: Option<String>, refused: Option<String>) {
    log.lock().unwrap_or_else(|e| e.into_inner()).push(Happened { at_ms: at.as_millis() as u64, what, outcome, refused });
}

pub fn run(scenario: &Scenario, seed: u64, safety: Safety) -> Result<Outcome, SimError> {
    let links = (Duration::from_millis(scenario.links.in_city_ms), Duration::from_millis(scenario.links.dr_ms));
    let mut c = SimCluster::build(seed, links.0, links.1, safety == Safety::SkipLeaseWait);
    let log: Log = Log::default();
    c.run_until("a leader, the layout applied everywhere", Duration::from_secs(60), |v| {
        v.len() == 3 && leader(v).is_some() && v.values().all(|n| n.bootstrapped)
    })?;
    // Give the replicators a moment to read the shard map before writing.
    c.run_for(Duration::from_secs(3))?;

    let start = c.elapsed();
    let end = start + Duration::from_secs(scenario.duration_s);
    let history = History::default();
    let (w, h, t) = (scenario.workload.clone(), history.clone(), c.trace().clone());
    let client_faults = workload::ClientFaults::default();
    let faults = client_faults.clone();
    c.client("client", async move { workload::run(w, end, h, t, faults).await });
    c.set_latency("client", "c", Duration::from_millis(scenario.links.dr_ms));

    // Sites lost to a crash, and when (for the recovery figures); every
    // fault and command, for the RTO per fault.
    let mut crashes: Vec<(String, u64)> = Vec::new();
    let mut events: Vec<(String, u64)> = Vec::new();
    for (i, step) in scenario.ordered_timeline().into_iter().enumerate() {
        let at = start + Duration::from_secs_f64(step.at_s);
        while c.elapsed() < at {
            c.step()?;
        }
        let what = step.event.describe();
        c.trace().record(c.elapsed(), &what);
        let at_ms = c.elapsed().as_millis() as u64;
        if step.event.stops_writes() {
            events.push((what.clone(), at_ms));
        }
        if let Some(site) = apply(&mut c, &step.event, i, &log, &client_faults)? {
            crashes.push((site, at_ms));
        }
        note(&log, c.elapsed(), what, None);
    }
    while c.elapsed() < end {
        c.step()?;
    }

    // Heal every link and the key providers, then let the sites settle.
    for (i, a) in site_names().into_iter().enumerate() {
        c.resume(a);
        for b in site_names().into_iter().skip(i + 1).chain(["client"]) {
            c.repair(a, b);
            c.set_loss(a, b, 0.0);
        }
        c.disks(a).keys.set_down(false);
        c.disks(a).keys.set_latency(Duration::ZERO);
        c.disks(a).controller.set_fault(tandem_storage::DiskFault::None);
        c.disks(a).replicator.set_fault(tandem_storage::DiskFault::None);
        c.disks(a).faulty_blobs.set_fault(crate::disk::BlobFault::None);
        c.disks(a).faulty_blobs.set_slow(Duration::ZERO);
        c.disks(a).controller.set_slow(Duration::ZERO);
        c.disks(a).replicator.set_slow(Duration::ZERO);
        if c.disks(a).clock.rate_ppm_now(c.elapsed().as_millis() as u64) != 1_000_000 {
            c.disks(a).clock.set_rate(c.elapsed().as_millis() as u64, 1_000_000);
        }
        c.disks(a).stopped.set_controller(false);
        c.disks(a).stopped.set_replicator(false);
    }
    c.trace().record(c.elapsed(), "heal: every link, key provider and disk");
    note(&log, c.elapsed(), "heal: every link, key provider and disk".into(), None);
    // Settled once converged (every running site holds the same data, the
    // leader sees nothing in flight), and after `settle_s` at the latest.
    let healed = c.elapsed();
    let settle_end = healed + Duration::from_secs(scenario.settle_s);
    loop {
        c.run_for(SETTLE_CHECK_EVERY.min(settle_end.saturating_sub(c.elapsed())))?;
        if c.elapsed() >= settle_end {
            break;
        }
        if c.elapsed() >= healed + SETTLE_MIN && converged(&c) {
            let what = format!("settled: every running site holds the same data after {:.1} s", (c.elapsed() - healed).as_secs_f64());
            c.trace().record(c.elapsed(), &what);
            note(&log, c.elapsed(), what, None);
            break;
        }
    }

    let run_end_ms = c.elapsed().as_millis() as u64;
    let up: Vec<String> = site_names().into_iter().filter(|s| c.is_up(s)).map(String::from).collect();
    let state = final_state(&c);
    let reads: Arc<Mutex<Option<FinalReads>>> = Arc::default();
    let (ops, sink, owners) = (history.ops(), reads.clone(), state.owners.clone());
    c.client("checker", async move {
        let r = checks::read_final(ops, up, owners).await;
        *sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        Ok(())
    });
    c.run_until_flag("the checker read every site", Duration::from_secs(600), || reads.lock().unwrap_or_else(|e| e.into_inner()).is_some())?;
    let reads = reads.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
    let ops = history.ops();
    let workload_ms = (start.as_millis() as u64, end.as_millis() as u64);
    let window = checks::Window { workload_start_ms: workload_ms.0, workload_end_ms: workload_ms.1, run_end_ms };
    let goals = scenario.goals();
    let shards = state.owners.len() as u32;
    let faults = crate::recovery::after_faults(&events, &ops, |tenant| tandem_controller::state::shard_of(tenant, shards));
    let mut checks = checks::evaluate(&c, &ops, &reads, &state, window, &goals, faults);
    let recovery = crate::recovery::after_crashes(&crashes, &ops);
    if let Some(objective) = goals.failover_ms.as_ref().map(|f| f.value) {
        let late: Vec<String> = recovery
            .iter()
            .filter(|r| r.failover_ms.is_none_or(|ms| ms > objective))
            .map(|r| match r.failover_ms {
                Some(ms) => {
                    format!("crash of {} at {}: its {} shards written elsewhere after {ms} ms (objective {objective} ms)", r.site, checks::t(r.at_ms), r.shards)
                }
                None => format!("crash of {} at {}: some of its {} shards were never written elsewhere", r.site, checks::t(r.at_ms), r.shards),
            })
            .collect();
        let slowest = recovery.iter().filter_map(|r| r.failover_ms).max().unwrap_or(0);
        checks.invariants.push(crate::checks::Invariant {
            name: "each crashed site's shards are written elsewhere within the failover objective".into(),
            passed: late.is_empty(),
            checked: !recovery.is_empty(),
            on: format!("{} site crashes: from each to the first acknowledged write of each of its shards at another site", recovery.len()),
            details: if late.is_empty() { vec![format!("slowest {slowest} ms after its crash, objective {objective} ms")] } else { late },
        });
    }
    let happened = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(inv) = expected_refusals(scenario, &happened) {
        checks.invariants.push(inv);
    }
    for inv in &checks.invariants {
        c.trace().record(c.elapsed(), format!("invariant {}: {}", inv.verdict(), inv.name));
    }
    let audit = final_audit(&c);
    Ok(Outcome {
        scenario: scenario.clone(),
        scenario_digest: scenario.digest(),
        seed,
        safety,
        trace_hash: c.trace().hash(),
        window,
        trace: c.trace().lines(),
        simulated_ms: c.elapsed().as_millis() as u64,
        workload_ms,
        happened,
        ops,
        checks,
        recovery,
        audit,
        samples: c.samples().to_vec(),
    })
}

/// The commands the scenario expects refused, each matched in order with
/// the end of a command it describes the same way: refused, for a reason
/// containing the expected text. `None` when it expects no refusal.
fn expected_refusals(scenario: &Scenario, happened: &[Happened]) -> Option<crate::checks::Invariant> {
    let expected: Vec<(String, String)> = scenario
        .ordered_timeline()
        .into_iter()
        .filter_map(|s| match &s.event {
            Event::Switchover { expect_refused: Some(why), .. } | Event::DrActivate { expect_refused: Some(why), .. } => {
                Some((format!("{} finished", s.event.describe()), why.clone()))
            }
            _ => None,
        })
        .collect();
    if expected.is_empty() {
        return None;
    }
    let mut details = Vec::new();
    let mut passed = true;
    let mut used = vec![false; happened.len()];
    for (what, why) in &expected {
        let Some(i) = (0..happened.len()).find(|i| !used[*i] && happened[*i].what == *what) else {
            passed = false;
            details.push(format!("{what}: never finished"));
            continue;
        };
        used[i] = true;
        match &happened[i].refused {
            Some(r) if r.contains(why.as_str()) => details.push(format!("{what}: refused as expected: {r}")),
            Some(r) => {
                passed = false;
                details.push(format!("{what}: refused, but not because {why:?}: {r}"));
            }
            None => {
                passed = false;
                details.push(format!("{what}: NOT refused (expected: {why}): {}", happened[i].outcome.as_deref().unwrap_or("")));
            }
        }
    }
    Some(crate::checks::Invariant {
        name: "every command the scenario expects refused is refused, for that reason".into(),
        passed,
        checked: true,
        on: format!("the {} commands the scenario expects refused, and what each answered", expected.len()),
        details,
    })
}

/// The controller store that holds the newest state (generation, then
/// length of the audit log), read from the simulated disks, and its site.
fn newest_store(c: &SimCluster) -> Option<(String, StateMachineStore)> {
    site_names().into_iter().filter_map(|s| StateMachineStore::open(Arc::new(c.disks(s).controller.clone())).ok().map(|sm| (s.to_string(), sm))).max_by_key(
        |(_, sm)| {
            let cluster = sm.reader().cluster();
            (cluster.generation, cluster.audit_len)
        },
    )
}

/// The shard map the newest generation agreed on.
fn final_state(c: &SimCluster) -> FinalState {
    let Some((site, store)) = newest_store(c) else { return FinalState::default() };
    let cluster = store.reader().cluster();
    FinalState {
        from_site: site,
        generation: cluster.generation,
        owners: cluster.shards.iter().map(|s| s.owner.clone()).collect(),
        drained: cluster
            .shards
            .iter()
            .enumerate()
            .filter_map(|(n, s)| s.moving_to.as_ref().map(|to| format!("shard {n} of {} drained towards {to}", s.owner)))
            .collect(),
    }
}

/// A run settles for at least this long after the heal, then stops
/// settling as soon as [`converged`] holds (which already waits for every
/// owner's fresh heartbeat and every backlog).
pub const SETTLE_MIN: Duration = Duration::from_secs(2);
const SETTLE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Whether the sites have converged after the heal: a leader that sees no
/// shard moving, every shard's owner running with a fresh heartbeat (it
/// can take the checks' end-state write), no backlog on any link between
/// running sites, and every running site's store holding the same
/// per-shard digests (read from the stores themselves). Until then the
/// checks would find what settling is for: copies still on their way.
fn converged(c: &SimCluster) -> bool {
    let views = c.views();
    let Some((leader_site, _)) = leader(&views) else { return false };
    let Some(view) = views.get(&leader_site) else { return false };
    let up: Vec<&str> = site_names().into_iter().filter(|s| c.is_up(s)).collect();
    if view.moving > 0 || view.owners.iter().any(|o| !up.contains(&o.as_str()) || !view.fresh.contains(o)) {
        return false;
    }
    let backlog = view.lag.iter().any(|(link, n)| *n > 0 && link.split("->").all(|s| up.contains(&s)));
    if backlog {
        return false;
    }
    let shards = view.owners.len() as u32;
    let mut digests = up.iter().map(|s| {
        let meta = tandem_replicator::meta::MetaStore::new(Arc::new(c.disks(s).replicator.clone()));
        tandem_replicator::digest::store_digests(&meta, shards).ok()
    });
    let Some(Some(first)) = digests.next() else { return false };
    digests.all(|d| d.as_ref() == Some(&first))
}

/// The audit log of the newest controller store, times in simulated ms.
fn final_audit(c: &SimCluster) -> Vec<(u64, tandem_controller::state::AuditEntry)> {
    let Some((_, best)) = newest_store(c) else { return Vec::new() };
    let epoch_ms = crate::cluster::SIM_EPOCH_UNIX_S * 1000;
    let mut entries = best.reader().audit(100_000).unwrap_or_default();
    entries.sort_by_key(|e| e.seq);
    // Each time is read back through the clock it came from (the
    // proposing controller's site, which a scenario may have skewed), in
    // the log's order (a step back repeats readings).
    let mut at: Vec<u64> = entries.iter().map(|e| e.at_unix_ms.saturating_sub(epoch_ms)).collect();
    for site in site_names() {
        let of_site: Vec<usize> = (0..entries.len()).filter(|&i| entries[i].clock == site).collect();
        let stamps: Vec<u64> = of_site.iter().map(|&i| entries[i].at_unix_ms).collect();
        for (&i, real) in of_site.iter().zip(c.disks(site).clock.to_real_in_order(&stamps)) {
            at[i] = real;
        }
    }
    at.into_iter().zip(entries).collect()
}

/// Applies one timeline event; returns the site it crashed, if any (a
/// `crash` of a site already down crashes nothing). SRE commands run on their own client host
/// (as an SRE's CLI would) and report when they finish.
fn apply(c: &mut SimCluster, event: &Event, i: usize, log: &Log, client: &workload::ClientFaults) -> Result<Option<String>, SimError> {
    match event.clone() {
        Event::Partition { a, b } => c.partition(&a, &b),
        Event::PartitionOneway { from, to } => c.partition_oneway(&from, &to),
        Event::Heal { a, b } => {
            c.repair(&a, &b);
            c.set_loss(&a, &b, 0.0);
        }
        Event::Crash { site } => {
            if c.is_up(&site) {
                c.crash(&site);
                return Ok(Some(site));
            }
        }
        Event::Restart { site } => {
            if !c.is_up(&site) {
                c.restart(&site);
            }
        }
        Event::Loss { a, b, rate } => c.set_loss(&a, &b, rate),
        Event::Delay { a, b, ms } => c.set_latency(&a, &b, Duration::from_millis(ms)),
        Event::Reorder { a, b, ms } => c.set_max_latency(&a, &b, Duration::from_millis(ms)),
        Event::Corrupt { site } => corrupt(c, &site),
        Event::KeysDown { site } => c.disks(&site).keys.set_down(true),
        Event::KeysUp { site } => {
            let keys = &c.disks(&site).keys;
            keys.set_down(false);
            keys.set_latency(Duration::ZERO);
        }
        Event::StopController { site } => c.disks(&site).stopped.set_controller(true),
        Event::StartController { site } => c.disks(&site).stopped.set_controller(false),
        Event::StopReplicator { site } => {
            if c.is_up(&site) && !c.disks(&site).stopped.replicator() {
                c.disks(&site).stopped.set_replicator(true);
                // Its writes stop as with a crash: measured like one.
                return Ok(Some(site));
            }
        }
        Event::StartReplicator { site } => c.disks(&site).stopped.set_replicator(false),
        Event::PowerCut { site } => {
            if c.is_up(&site) {
                c.power_cut(&site);
                return Ok(Some(site));
            }
        }
        Event::DiskFault { site, store, fault } => {
            use crate::scenario::{DiskFaultKind as K, Store};
            use tandem_storage::DiskFault as D;
            let kv = |f: K| match f {
                K::None => D::None,
                K::FsyncError => D::FsyncError,
                K::Full => D::Full,
                K::CorruptRead => D::CorruptRead,
            };
            let blob = |f: K| match f {
                K::None => crate::disk::BlobFault::None,
                K::FsyncError => crate::disk::BlobFault::FsyncError,
                K::Full => crate::disk::BlobFault::Full,
                K::CorruptRead => crate::disk::BlobFault::CorruptRead,
            };
            match store {
                Store::Controller => c.disks(&site).controller.set_fault(kv(fault)),
                Store::Replicator => c.disks(&site).replicator.set_fault(kv(fault)),
                Store::Blobs => c.disks(&site).faulty_blobs.set_fault(blob(fault)),
            }
        }
        Event::SlowDisk { site, store, ms } => {
            let extra = Duration::from_millis(ms);
            match store {
                crate::scenario::Store::Controller => c.disks(&site).controller.set_slow(extra),
                crate::scenario::Store::Replicator => c.disks(&site).replicator.set_slow(extra),
                crate::scenario::Store::Blobs => c.disks(&site).faulty_blobs.set_slow(extra),
            }
        }
        Event::DuplicateRequests { rate } => client.set_duplicates(rate),
        Event::SlowKeys { site, ms } => c.disks(&site).keys.set_latency(Duration::from_millis(ms)),
        Event::PauseSite { site } => c.pause(&site),
        Event::ResumeSite { site } => c.resume(&site),
        Event::ClockDrift { site, ppm } => c.disks(&site).clock.set_rate(c.elapsed().as_millis() as u64, (1_000_000 + ppm).max(0) as u64),
        Event::ClockStep { site, ms } => c.disks(&site).clock.step(c.elapsed().as_millis() as u64, ms),
        Event::CrashLeader => {
            if let Some((site, _)) = leader(&c.views()) {
                c.crash(&site);
                c.trace().record(c.elapsed(), format!("the leader was {site}"));
                return Ok(Some(site));
            }
        }
        Event::DrActivate { site, city_fenced, .. } => {
            // As the runbook: stop the site's controller, reset its store
            // offline, start it again.
            if c.is_up(&site) {
                c.stop_site(&site, "dr activate: processes stopped for the offline reset at");
            }
            let req = Activation {
                site: site.clone(),
                node_id: node_id_of(&site).unwrap_or_default(),
                who: "drill".into(),
                why: "city-wide disaster in the drill".into(),
                city_fenced,
                approved_by: None,
            };
            let now_unix_ms = crate::cluster::SIM_EPOCH_UNIX_S * 1000 + c.elapsed().as_millis() as u64;
            let (result, refused) = match dr::activate_stopped(&c.disks(&site).controller, &req, now_unix_ms) {
                Ok(done) => (done.result, None),
                Err(e) => (format!("refused: {e}"), e.refusal().map(str::to_string)),
            };
            c.trace().record(c.elapsed(), format!("dr activate at {site}: {result}"));
            note_refused(log, c.elapsed(), format!("{} finished", event.describe()), Some(result), refused);
            c.restart(&site);
        }
        Event::DrRejoin { site } => {
            // As the runbook: stop it, keep the old store aside, prepare an
            // empty one that joins the activated generation, start it.
            if c.is_up(&site) {
                c.stop_site(&site, "dr rejoin: processes stopped to prepare the store at");
            }
            let generation = site_names()
                .into_iter()
                .filter(|s| *s != site)
                .filter_map(|s| StateMachineStore::open(Arc::new(c.disks(s).controller.clone())).ok())
                .map(|sm| sm.reader().cluster().generation)
                .max()
                .unwrap_or(0);
            let result = c.reset_controller_store(&site).and_then(|()| dr::prepare_rejoin(&c.disks(&site).controller, generation));
            c.trace().record(c.elapsed(), format!("dr rejoin of {site} (generation {generation}): {}", result.clone().err().unwrap_or_else(|| "ok".into())));
            c.restart(&site);
        }
        command => {
            let log = log.clone();
            let name = format!("sre-{i}");
            let what = command.describe();
            c.client(&name, async move {
                let result = match &command {
                    Event::Switchover { from, to, .. } => crate::sre::switchover(from, to).await,
                    Event::Failover { from, to, accept_data_loss } => crate::sre::failover(from, to, *accept_data_loss).await,
                    Event::Pause => crate::sre::pause(true).await,
                    Event::Resume => crate::sre::pause(false).await,
                    Event::VerifyRepair => crate::sre::verify_repair().await,
                    Event::Failback { site } => crate::sre::failback(site).await,
                    _ => Err(OpError::Failed("not a command".into())),
                };
                let refused = result.as_ref().err().and_then(|e| e.refusal()).map(str::to_string);
                let outcome = match result {
                    Ok(r) => format!("ok: {r}"),
                    Err(e) => format!("failed: {e}"),
                };
                note_refused(&log, crate::trace::now(), format!("{what} finished"), Some(outcome), refused);
                Ok(())
            });
        }
    }
    Ok(None)
}

/// Flips one byte in the middle of the newest stored file at `site`.
fn corrupt(c: &mut SimCluster, site: &str) {
    let meta = tandem_replicator::meta::MetaStore::new(Arc::new(c.disks(site).replicator.clone()));
    let newest = meta.all_versions().unwrap_or_default().into_iter().filter(|v| !v.files.is_empty()).max_by_key(|v| v.created_unix_ms);
    let Some(v) = newest else { return };
    let blob = v.files[0].blob.clone();
    let store = c.disks(site).blobs.clone();
    // The in-memory store needs a runtime but does no I/O: the same bytes
    // in every run.
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("a current-thread runtime");
    let done = rt.block_on(async move {
        use futures::StreamExt;
        let mut bytes = Vec::new();
        let mut s = store.read(&blob).await.ok()?;
        while let Some(chunk) = s.next().await {
            bytes.extend_from_slice(&chunk.ok()?);
        }
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x5a;
        let mut w = store.writer(&blob, tandem_replicator::blob::Hashing::None).await.ok()?;
        w.write(&bytes).await.ok()?;
        w.finish().await.ok()?;
        Some(blob)
    });
    if let Some(blob) = done {
        c.trace().record(c.elapsed(), format!("corrupted {blob} at {site}"));
    }
}
