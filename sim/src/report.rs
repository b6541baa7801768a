//! The drill report, written for each run into a directory:
//! `report.md` for people, `report.json` for machines, `timeline.svg`
//! (faults, commands, write outcomes per tenant over time) and `trace.txt`
//! (the event trace whose hash proves the run).

use std::fmt::Write as _;
use std::path::Path;

use crate::drill::Outcome;
use crate::workload::OpKind;

/// What identifies a run besides its outcome (read outside the simulation).
pub struct RunInfo {
    pub commit: String,
    /// Wall-clock seconds the run took (for the simulated-to-wall ratio).
    pub wall_s: f64,
    /// The command that reproduces the run.
    pub reproduce: String,
}

pub fn write(dir: &Path, o: &Outcome, info: &RunInfo) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.md"), markdown(o, info))?;
    std::fs::write(dir.join("report.json"), json(o, info))?;
    std::fs::write(dir.join("timeline.svg"), svg(o))?;
    std::fs::write(dir.join("trace.txt"), o.trace.join("\n") + "\n")?;
    Ok(())
}

fn verdict(o: &Outcome) -> &'static str {
    if o.passed() {
        "PASS"
    } else {
        "FAIL"
    }
}

/// The report's sections, in order: a test checks every library
/// scenario's report has each.
pub const SECTIONS: [&str; 11] = [
    "## 1. Scope",
    "## 2. Participants and roles",
    "## 3. Objectives and pass criteria",
    "## 4. Timeline",
    "## 5. Observations per objective",
    "## 6. Findings and corrective actions",
    "## 7. Disaster-recovery level reached",
    "## 8. ISO 22301 clause 8.5 mapping",
    "## 9. Data at each site",
    "## 10. Invariants",
    "## 11. Writes",
];

fn secs(ms: u64) -> String {
    format!("{:.3} s", ms as f64 / 1000.0)
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// The participants the scenario names, or the automated roles.
fn participants(o: &Outcome) -> Vec<(String, String)> {
    if o.scenario.participants.is_empty() {
        vec![
            ("tandem drill (this program)".into(), "drill conductor: injects the faults, runs the workload, checks the invariants".into()),
            ("simulated SRE (the drill's sre hosts)".into(), "on-call SRE: runs the scenario's commands through the CLI's operations library".into()),
            ("tandem controllers".into(), "automatic detection, fencing and failover".into()),
            ("(not named in the scenario)".into(), "auditor, business owner: add `[[participants]]` to the scenario".into()),
        ]
    } else {
        o.scenario.participants.iter().map(|p| (p.name.clone(), p.role.clone())).collect()
    }
}

/// The measured figures the objectives and the grading use.
pub struct Measured {
    pub rto_s: f64,
    pub rpo_entries: usize,
    pub rpo_s: f64,
}

pub fn measured(o: &Outcome) -> Measured {
    Measured { rto_s: o.checks.rto_ms as f64 / 1000.0, rpo_entries: o.checks.lost.len(), rpo_s: o.checks.rpo_ms as f64 / 1000.0 }
}

/// Per fault: the first audit entry after it, before the next fault,
/// that looks like each step.
fn steps_after(o: &Outcome, at_ms: u64) -> [Option<String>; 4] {
    let until = o.checks.faults.iter().map(|f| f.at_ms).filter(|t| *t > at_ms).min().unwrap_or(u64::MAX);
    let after = |pred: &dyn Fn(&str, &str) -> bool| {
        o.audit
            .iter()
            .find(|(t, e)| *t >= at_ms && *t < until && pred(&e.what, &e.result))
            .map(|(t, e)| format!("{}: {} ({})", crate::checks::t(*t), e.what, e.who))
    };
    [
        after(&|w, _| w.contains(" down") || w.contains("detected") || w.contains("unreachable")),
        after(&|w, r| r.contains("declined") || w.contains("declined") || w.starts_with("drain") || w.starts_with("DR activation")),
        after(&|w, _| w.starts_with("drain") || w.contains("fenced") || w.starts_with("DR activation")),
        after(&|w, _| w.starts_with("move") || w.starts_with("DR activation")),
    ]
}

pub fn markdown(o: &Outcome, info: &RunInfo) -> String {
    let s = &o.scenario;
    let c = &o.checks;
    let goals = s.goals();
    let m_ = measured(o);
    let mut m = String::new();
    let _ = writeln!(m, "# Drill report: {}\n", s.name);
    let _ = writeln!(m, "**Verdict: {}**\n", verdict(o));
    if !s.description.is_empty() {
        let _ = writeln!(m, "{}\n", s.description);
    }
    let _ = writeln!(m, "| | |\n|---|---|");
    let _ = writeln!(m, "| Seed | {} |", o.seed);
    let _ = writeln!(m, "| Commit | {} |", info.commit);
    let _ = writeln!(m, "| Scenario digest | `{}` |", o.scenario_digest);
    let _ = writeln!(m, "| Trace hash | `{}` |", o.trace_hash);
    let _ = writeln!(m, "| Safety rules | {:?} |", o.safety);
    let sim_s = o.simulated_ms as f64 / 1000.0;
    let _ = writeln!(m, "| Simulated time | {sim_s:.1} s ({:.1} x wall time) |", sim_s / info.wall_s.max(0.001));
    let _ = writeln!(m, "| Reproduce | `{}` |\n", info.reproduce);
    let _ = writeln!(m, "All times are simulated seconds since the simulation began (T+), one time base for faults, commands, the controllers' audit log and the client's writes.\n");

    let _ = writeln!(m, "{}\n", SECTIONS[0]);
    let _ = writeln!(
        m,
        "- **System**: tandem's controllers and replicators (the real code of commit {}) at three sites: a and b, the active in-city pair (sync replication), and c, the DR site in another city (async).",
        info.commit
    );
    let _ = writeln!(m, "- **Exercise**: {}", if s.description.is_empty() { s.name.as_str() } else { s.description.as_str() });
    let faults: Vec<String> =
        s.ordered_timeline().iter().filter(|st| st.event.stops_writes()).map(|st| format!("{} at {:.1} s", st.event.describe(), st.at_s)).collect();
    let _ = writeln!(m, "- **Faults and commands** ({}): {}", faults.len(), if faults.is_empty() { "none (steady state)".into() } else { faults.join("; ") });
    let _ = writeln!(
        m,
        "- **Workload**: {} client loop(s), {} tenants, a request every {} ms per loop, file sizes {:?} bytes, every put with one SM4-sealed ID-card field{}; {} s, then every link healed and up to {} s to settle (settling stops once every running site holds the same data, after at least {} s{}).",
        s.workload.clients,
        s.workload.tenants,
        s.workload.interval_ms,
        s.workload.sizes,
        if s.workload.destroy_every > 0 { format!(", every {}th request a destroy", s.workload.destroy_every) } else { String::new() },
        s.duration_s,
        s.settle_s,
        crate::drill::SETTLE_MIN.as_secs(),
        o.happened.iter().find(|h| h.what.starts_with("settled: ")).map(|h| format!("; {}", h.what)).unwrap_or_else(|| "; this run used all of it".into())
    );
    let _ = writeln!(
        m,
        "- **Out of scope**: real hardware, networks and disks (simulated here: links, process crashes, disks that lose unsynced writes, the key provider), the platform's own services, people's reaction times beyond those the timeline states.\n"
    );

    let _ = writeln!(m, "{}\n", SECTIONS[1]);
    let _ = writeln!(m, "| Participant | Role |\n|---|---|");
    for (name, role) in participants(o) {
        let _ = writeln!(m, "| {name} | {role} |");
    }
    m.push('\n');

    let _ = writeln!(m, "{}\n", SECTIONS[2]);
    if let Some(t) = &goals.target {
        let _ = writeln!(m, "Held to the product target **{}** ({}).\n", t.id, t.applies_to);
    }
    let _ = writeln!(m, "| Objective | Target | Source | Pass when | Measured | |\n|---|---|---|---|---|---|");
    let rto_ok = c.rto_ms <= goals.rto_s.value * 1000 && c.faults.iter().all(|f| f.rto_ms.is_some());
    let _ = writeln!(
        m,
        "| RTO | {} s | {} | every shard a fault or command stopped takes an acknowledged write again within it (a shard that never does counts to the end of the run) | {:.3} s ({}) | {} |",
        goals.rto_s.value,
        goals.rto_s.source,
        m_.rto_s,
        if c.rto_fault.is_empty() { "no fault" } else { c.rto_fault.as_str() },
        met(rto_ok)
    );
    let rpo_ok = m_.rpo_entries as u64 <= goals.rpo_entries.value;
    let _ = writeln!(
        m,
        "| RPO, entries | {} | {} | no more acknowledged writes lost | {} | {} |",
        goals.rpo_entries.value,
        goals.rpo_entries.source,
        m_.rpo_entries,
        met(rpo_ok)
    );
    let rpo_s_ok = m_.rpo_s <= goals.rpo_s.value;
    let _ = writeln!(
        m,
        "| RPO, time | {} s | {} | no lost write acknowledged longer than this before the fault that lost it | {:.3} s | {} |",
        goals.rpo_s.value,
        goals.rpo_s.source,
        m_.rpo_s,
        met(rpo_s_ok)
    );
    if let Some(objective) = &goals.failover_ms {
        let slowest = o.recovery.iter().map(|r| r.failover_ms).try_fold(0, |m, t| t.map(|t| m.max(t)));
        let (shown, ok) = match slowest {
            Some(ms) => (secs(ms), ms <= objective.value),
            None => ("never (a shard was not written elsewhere)".to_string(), false),
        };
        let _ = writeln!(
            m,
            "| Failover | {:.1} s | {} | each crashed site's shards written at another site within it | {shown} | {} |",
            objective.value as f64 / 1000.0,
            objective.source,
            met(ok)
        );
    }
    let _ = writeln!(
        m,
        "| Safety | no violation | DESIGN.md section 4 | every invariant in section 10 holds | {} | {} |\n",
        if c.passed() { "none" } else { "violations" },
        met(c.passed())
    );

    let _ = writeln!(m, "{}\n", SECTIONS[3]);
    if !c.faults.is_empty() {
        let _ = writeln!(m, "Each fault or command, and the steps that answered it (from the controllers' audit log and the client's writes):\n");
        let _ = writeln!(m, "| Fault | Detection | Decision | Fencing | Promotion | First acknowledged write of every stopped shard | Verification |\n|---|---|---|---|---|---|---|");
        for f in &c.faults {
            let [det, dec, fence, promo] = steps_after(o, f.at_ms);
            let show = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            let first = match (f.stopped.is_empty(), f.rto_ms) {
                (true, _) => "no shard stopped".to_string(),
                (false, Some(ms)) => format!("{} ({} shards, slowest {} after)", crate::checks::t(f.at_ms + ms), f.stopped.len(), secs(ms)),
                (false, None) => format!("NEVER ({} shards stopped)", f.stopped.len()),
            };
            let _ = writeln!(
                m,
                "| {} {} | {} | {} | {} | {} | {first} | {}: end-of-run checks (section 10) |",
                crate::checks::t(f.at_ms),
                f.what,
                show(det),
                show(dec),
                show(fence),
                show(promo),
                crate::checks::t(o.window.run_end_ms)
            );
        }
        m.push('\n');
    }
    let _ = writeln!(
        m,
        "Everything in time order: the scenario's faults and commands, the controllers' decisions (audit log), leadership changes and restarts. The workload ran from {} to {}; the checks began at {}.\n",
        crate::checks::t(o.window.workload_start_ms),
        crate::checks::t(o.window.workload_end_ms),
        crate::checks::t(o.window.run_end_ms)
    );
    let _ = writeln!(m, "| Time | Source | Event | Outcome |\n|---|---|---|---|");
    let mut rows: Vec<(u64, String, String, String)> = Vec::new();
    for h in &o.happened {
        rows.push((h.at_ms, "scenario".into(), h.what.clone(), h.outcome.clone().unwrap_or_default()));
    }
    for (at, e) in &o.audit {
        rows.push((*at, format!("audit #{} ({})", e.seq, e.who), e.what.clone(), e.result.clone()));
    }
    for l in o.trace.iter().filter(|l| l.contains(" leader ") || l.contains(" started") || l.contains("restart ") || l.contains("stopped")) {
        let (at, what) = l.trim_start().split_once("s ").unwrap_or(("0", l));
        let at_ms = (at.parse::<f64>().unwrap_or(0.0) * 1000.0).round() as u64;
        rows.push((at_ms, "trace".into(), what.to_string(), String::new()));
    }
    rows.sort_by_key(|r| r.0);
    for (at, src, what, result) in rows {
        let _ = writeln!(m, "| {} | {src} | {} | {} |", crate::checks::t(at), what.replace('|', "/"), result.replace('|', "/"));
    }
    let _ = writeln!(m, "\nThe timeline picture is `timeline.svg`; the full trace is `trace.txt`.\n");

    let _ = writeln!(m, "{}\n", SECTIONS[4]);
    let margin = |measured: f64, target: f64| if target > 0.0 { format!("{:.0} % of the target", 100.0 * measured / target) } else { "target 0".into() };
    let _ = writeln!(
        m,
        "- **RTO** ({}): the slowest fault was {} ({:.3} s, {}). {} faults or commands; {} stopped at least one shard.",
        met(rto_ok),
        if c.rto_fault.is_empty() { "none" } else { c.rto_fault.as_str() },
        m_.rto_s,
        margin(m_.rto_s, goals.rto_s.value as f64),
        c.faults.len(),
        c.faults.iter().filter(|f| !f.stopped.is_empty()).count()
    );
    let _ = writeln!(
        m,
        "  The longest a tenant went without an acknowledged write was {:.3} s ({}), counted to the end of the run when its last request failed; it includes the client's own pacing and its waits on sites that did not answer.",
        c.longest_gap_ms as f64 / 1000.0,
        if c.longest_gap_tenant.is_empty() { "-" } else { c.longest_gap_tenant.as_str() }
    );
    let _ = writeln!(
        m,
        "- **RPO** ({}): {} acknowledged writes lost of {}, reaching {:.3} s before the fault that lost them; {} reads found a replica without a write the RPO lost.",
        met(rpo_ok && rpo_s_ok),
        m_.rpo_entries,
        c.acked_puts,
        m_.rpo_s,
        c.missing_within_rpo.len()
    );
    for r in &o.recovery {
        let show = |v: Option<u64>| v.map_or("never".to_string(), secs);
        let _ = writeln!(
            m,
            "- **Failover after the crash of {}** at {}: its {} shards written elsewhere after {}; the other sites' own writes after {}.",
            r.site,
            crate::checks::t(r.at_ms),
            r.shards,
            show(r.failover_ms),
            show(r.survivor_ms)
        );
    }
    let _ = writeln!(
        m,
        "- **Safety** ({}): {} invariants checked, {} not checked for want of data.\n",
        met(c.passed()),
        c.invariants.iter().filter(|i| i.checked).count(),
        c.invariants.iter().filter(|i| !i.checked).count()
    );

    let _ = writeln!(m, "{}\n", SECTIONS[5]);
    let findings = crate::findings::of(o);
    if findings.is_empty() {
        let _ = writeln!(m, "None: every objective met and every invariant checked and held.\n");
    } else {
        let _ = writeln!(m, "| # | Severity | Finding | Corrective action |\n|---|---|---|---|");
        for (i, f) in findings.iter().enumerate() {
            let _ = writeln!(m, "| F-{} | {} | {} | {} |", i + 1, f.severity.as_str(), f.what.replace('|', "/"), f.corrective_action);
        }
        m.push('\n');
    }

    let _ = writeln!(m, "{}\n", SECTIONS[6]);
    let level = crate::grading::grade(m_.rto_s, m_.rpo_s);
    let _ = writeln!(
        m,
        "The measured RTO ({:.3} s) and RPO ({:.3} s) reach **level {}** ({}: RTO {}, RPO {}). Table used: {}. A level also requires backup, staffing, planning and operations elements a drill does not measure: this is the level the measured figures alone reach.\n",
        m_.rto_s,
        m_.rpo_s,
        level.level,
        level.name,
        level.rto,
        level.rpo,
        crate::grading::EDITION
    );

    let _ = writeln!(m, "{}\n", SECTIONS[7]);
    let _ = writeln!(m, "| ISO 22301 clause 8.5 asks | Where this report answers |\n|---|---|");
    let _ =
        writeln!(m, "| exercises consistent with the business-continuity objectives | section 3: objectives from the product's targets, with their sources |");
    let _ = writeln!(m, "| based on appropriate scenarios, well planned, with clear aims | sections 1 and 4: scope, the scenario's digest, its timeline |");
    let _ = writeln!(m, "| minimise the risk of disruption | the exercise runs in a deterministic simulation of the real code, never against production |");
    let _ = writeln!(
        m,
        "| formalised post-exercise reports with outcomes and recommendations | this report: sections 5 (observations) and 6 (findings, corrective actions) |"
    );
    let _ = writeln!(m, "| reviewed in the context of improvement; performed at planned intervals | `tandem drill campaign` (runbooks/yearly-drill.md) carries findings and their actions from one campaign to the next |\n");

    let _ = writeln!(m, "{}\n", SECTIONS[8]);
    let _ = writeln!(
        m,
        "Per site at the end: its metadata's contracts and files, the SHA-256 of the per-shard digests it reported (Merkle trees over contract id, version and ciphertext hash), and every acknowledged contract read back from it, decrypted by the site and compared with the client's bytes and its SM4-sealed ID-card field.\n"
    );
    let _ = writeln!(m, "| Site | Running | Contracts | Files | Ciphertext digest | Read back and compared | Equal | SM4 fields round-tripped | Missing | Corrupt |\n|---|---|---|---|---|---|---|---|---|---|");
    for i in &c.sites {
        let digest = if i.ciphertext_digest.is_empty() { "-".to_string() } else { format!("`{}`", &i.ciphertext_digest[..16.min(i.ciphertext_digest.len())]) };
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {digest} | {} | {} | {} | {} | {} |",
            i.site,
            if i.running { "yes" } else { "no" },
            i.contracts,
            i.files,
            i.decrypted,
            i.matched,
            i.pii_round_tripped,
            i.missing,
            i.corrupt
        );
    }
    m.push('\n');

    let _ = writeln!(m, "{}\n", SECTIONS[9]);
    for i in &c.invariants {
        let _ = writeln!(m, "- **{}** {}", i.verdict(), i.name);
        let _ = writeln!(m, "  - checked on: {}", i.on);
        for d in &i.details {
            let _ = writeln!(m, "  - {d}");
        }
    }
    m.push('\n');

    let _ = writeln!(m, "{}\n", SECTIONS[10]);
    let _ = writeln!(m, "- acknowledged puts: {}", c.acked_puts);
    let _ = writeln!(m, "- failed requests (refused or unanswered, none acknowledged): {}", c.failed_requests);
    let _ = writeln!(m, "- lost (acknowledged, not where it belongs): {}", c.lost.len());
    for l in &c.lost {
        let _ = writeln!(m, "  - {l}");
    }
    let _ = writeln!(m, "- missing at a replica within the RPO: {}", c.missing_within_rpo.len());
    for l in c.missing_within_rpo.iter().take(20) {
        let _ = writeln!(m, "  - {l}");
    }
    let _ = writeln!(m, "- duplicated (one request stored twice): {}", c.duplicated.len());
    for d in &c.duplicated {
        let _ = writeln!(m, "  - {d}");
    }
    let _ = writeln!(m, "- quarantined (divergent, kept for reconciliation): {}", c.quarantined.len());
    for q in &c.quarantined {
        let _ = writeln!(m, "  - {q}");
    }
    let _ = writeln!(m, "- end-state writes (one per shard, to its owner in generation {}):", c.final_state.generation);
    for p in &c.probes {
        let _ = writeln!(
            m,
            "  - shard {}: {}",
            p.shard,
            match &p.result {
                Ok(site) => format!("acknowledged by {site}"),
                Err(e) => format!("REFUSED: {e}"),
            }
        );
    }
    m
}

pub fn json(o: &Outcome, info: &RunInfo) -> String {
    let v = serde_json::json!({
        "verdict": verdict(o),
        "seed": o.seed,
        "commit": info.commit,
        "scenario_digest": o.scenario_digest,
        "trace_hash": o.trace_hash,
        "simulated_ms": o.simulated_ms,
        "wall_s": info.wall_s,
        "reproduce": info.reproduce,
        "objectives": o.scenario.goals(),
        "grading": {
            "edition": crate::grading::EDITION,
            "level": crate::grading::grade(measured(o).rto_s, measured(o).rpo_s),
        },
        "findings": crate::findings::of(o),
        "participants": participants(o).into_iter().map(|(name, role)| serde_json::json!({"name": name, "role": role})).collect::<Vec<_>>(),
        "outcome": o,
    });
    serde_json::to_string_pretty(&v).expect("reports serialise")
}

/// Time runs left to right; one row per tenant (each write a dot: green
/// acknowledged with its origin's letter, red failed), then, as the leader
/// saw them: shards owned per site, the in-city pair's mode, and the lag of
/// each link; faults and commands as vertical lines.
pub fn svg(o: &Outcome) -> String {
    let (w, left, top, row) = (1200.0, 110.0, 40.0, 22.0);
    let mut tenants: Vec<&str> = o.ops.iter().map(|op| op.tenant.as_str()).collect();
    tenants.sort();
    tenants.dedup();
    let sites: Vec<&String> = o.samples.iter().flat_map(|s| s.owned.keys()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let links: Vec<&String> = o.samples.iter().flat_map(|s| s.lag.keys()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let lanes = sites.len() + 1 + links.len();
    let h = top + row * (tenants.len() as f64 + 1.0) + row * lanes as f64 + 130.0;
    let t0 = o.workload_ms.0.saturating_sub(2_000) as f64;
    let t1 = (o.workload_ms.1 + 2_000) as f64;
    let x = |ms: u64| left + (ms as f64 - t0).max(0.0) / (t1 - t0) * (w - left - 20.0);
    let mut s = String::new();
    let _ = writeln!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#);
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="10" y="20" font-size="14">{} (seed {}): {}</text>"#, esc(&o.scenario.name), o.seed, verdict(o));
    for (i, t) in tenants.iter().enumerate() {
        let y = top + row * (i as f64 + 1.0);
        let _ = writeln!(s, r#"<text x="10" y="{:.0}">{}</text>"#, y + 4.0, esc(t));
        let _ = writeln!(s, r##"<line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/>"##, w - 20.0);
        for op in o.ops.iter().filter(|op| op.tenant == *t) {
            let cx = x(op.done_ms);
            match (&op.result, &op.kind) {
                (Ok(a), OpKind::Put) => {
                    let _ = writeln!(s, r##"<text x="{cx:.1}" y="{:.0}" fill="#1a7f37" text-anchor="middle">{}</text>"##, y + 4.0, esc(&a.origin));
                }
                (Ok(_), OpKind::Destroy) => {
                    let _ = writeln!(s, r##"<text x="{cx:.1}" y="{:.0}" fill="#555" text-anchor="middle">x</text>"##, y + 4.0);
                }
                (Err(_), _) => {
                    let _ = writeln!(s, r##"<circle cx="{cx:.1}" cy="{y}" r="3" fill="#cf222e"/>"##);
                }
            }
        }
    }
    let mut lane_y = top + row * (tenants.len() as f64 + 1.0) + 6.0;
    let shards_total = o.samples.first().map_or(0, |s| s.owned.values().sum::<usize>()).max(1);
    let spans = |value: &dyn Fn(&crate::cluster::Sample) -> String| {
        // Consecutive samples with the same value, as (from, to, value).
        let mut out: Vec<(u64, u64, String)> = Vec::new();
        for s in &o.samples {
            let v = value(s);
            match out.last_mut() {
                Some(last) if last.2 == v => last.1 = s.at_ms,
                _ => out.push((s.at_ms, s.at_ms, v)),
            }
        }
        out
    };
    for site in &sites {
        let _ = writeln!(s, r#"<text x="10" y="{:.0}">shards at {}</text>"#, lane_y + 4.0, esc(site));
        for (from, to, n) in spans(&|smp| smp.owned.get(*site).copied().unwrap_or(0).to_string()) {
            let n: usize = n.parse().unwrap_or(0);
            let opacity = 0.15 + 0.85 * n as f64 / shards_total as f64;
            let (x0, x1) = (x(from), x(to + crate::cluster::SAMPLE_EVERY.as_millis() as u64));
            if n > 0 {
                let _ = writeln!(
                    s,
                    r##"<rect x="{x0:.1}" y="{:.0}" width="{:.1}" height="12" fill="#0969da" fill-opacity="{opacity:.2}"/>"##,
                    lane_y - 6.0,
                    (x1 - x0).max(1.0)
                );
            }
            if x1 - x0 > 24.0 {
                let _ = writeln!(s, r##"<text x="{:.1}" y="{:.0}" fill="#0b3d91" font-size="9">{n}</text>"##, x0 + 2.0, lane_y + 4.0);
            }
        }
        lane_y += row;
    }
    let _ = writeln!(s, r#"<text x="10" y="{:.0}">pair mode</text>"#, lane_y + 4.0);
    for (from, to, mode) in spans(&|smp| smp.pair_mode.clone().unwrap_or_else(|| "no pair".into())) {
        let colour = match mode.as_str() {
            "sync" => "#1a7f37",
            "sync-recover" => "#bf8700",
            "async" => "#cf222e",
            _ => "#999",
        };
        let (x0, x1) = (x(from), x(to + crate::cluster::SAMPLE_EVERY.as_millis() as u64));
        let _ = writeln!(
            s,
            r##"<rect x="{x0:.1}" y="{:.0}" width="{:.1}" height="12" fill="{colour}" fill-opacity="0.6"><title>{}</title></rect>"##,
            lane_y - 6.0,
            (x1 - x0).max(1.0),
            esc(&mode)
        );
        if x1 - x0 > 60.0 {
            let _ = writeln!(s, r##"<text x="{:.1}" y="{:.0}" fill="#222" font-size="9">{}</text>"##, x0 + 2.0, lane_y + 4.0, esc(&mode));
        }
    }
    lane_y += row;
    for link in &links {
        let max = o.samples.iter().filter_map(|smp| smp.lag.get(*link)).copied().max().unwrap_or(0);
        let _ = writeln!(s, r#"<text x="10" y="{:.0}">lag {} (max {max})</text>"#, lane_y + 4.0, esc(link));
        // One line per stretch where the link's lag is known (its site up).
        let mut stretches: Vec<Vec<String>> = vec![Vec::new()];
        for smp in &o.samples {
            match smp.lag.get(*link) {
                Some(v) => stretches.last_mut().expect("one stretch at least").push(format!(
                    "{:.1},{:.1}",
                    x(smp.at_ms),
                    lane_y + 6.0 - 14.0 * *v as f64 / max.max(1) as f64
                )),
                None if stretches.last().is_some_and(|p| !p.is_empty()) => stretches.push(Vec::new()),
                None => {}
            }
        }
        for points in stretches.iter().filter(|p| !p.is_empty()) {
            let _ = writeln!(s, r##"<polyline points="{}" fill="none" stroke="#8250df" stroke-width="1.2"/>"##, points.join(" "));
        }
        lane_y += row;
    }
    let bottom = lane_y;
    let mut events = o.happened.clone();
    events.sort_by_key(|h| h.at_ms);
    for (i, e) in events.iter().enumerate() {
        let ex = x(e.at_ms);
        let colour = if e.what.starts_with("fault") {
            "#cf222e"
        } else if e.what.starts_with("sre") {
            "#0969da"
        } else {
            "#1a7f37"
        };
        let _ = writeln!(s, r##"<line x1="{ex:.1}" y1="{top}" x2="{ex:.1}" y2="{bottom}" stroke="{colour}" stroke-dasharray="4 3"/>"##);
        let _ = writeln!(s, r#"<text x="{ex:.1}" y="{:.0}" fill="{colour}">{}</text>"#, bottom + 14.0 + 12.0 * (i % 8) as f64, esc(&e.what));
    }
    for sec in (0..=((t1 - t0) / 1000.0) as u64).step_by(10) {
        let ms = t0 as u64 + sec * 1000;
        let _ = writeln!(s, r##"<text x="{:.1}" y="{}" fill="#888">{}s</text>"##, x(ms), top - 6.0, ms / 1000);
    }
    let _ = writeln!(s, "</svg>");
    s
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
