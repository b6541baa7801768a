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

pub fn markdown(o: &Outcome, info: &RunInfo) -> String {
    let s = &o.scenario;
    let c = &o.checks;
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

    let _ = writeln!(m, "## Objectives\n");
    let _ = writeln!(m, "| Objective | Target | Measured | |\n|---|---|---|---|");
    let rto_ok = c.rto_ms <= s.objectives.rto_s * 1000;
    let _ = writeln!(
        m,
        "| RTO (longest time a tenant could not write) | {} s | {:.1} s ({}) | {} |",
        s.objectives.rto_s,
        c.rto_ms as f64 / 1000.0,
        c.rto_tenant,
        if rto_ok { "met" } else { "MISSED" }
    );
    let rpo_ok = c.lost.len() as u64 <= s.objectives.rpo_entries;
    let _ = writeln!(m, "| RPO (acknowledged writes lost) | {} | {} | {} |", s.objectives.rpo_entries, c.lost.len(), if rpo_ok { "met" } else { "MISSED" });
    if let Some(objective) = s.objectives.failover_ms {
        let slowest = o.recovery.iter().map(|r| r.failover_ms).try_fold(0, |m, t| t.map(|t| m.max(t)));
        let (measured, ok) = match slowest {
            Some(ms) => (format!("{:.1} s", ms as f64 / 1000.0), ms <= objective),
            None => ("never (a shard was not written elsewhere)".to_string(), false),
        };
        let _ = writeln!(
            m,
            "| Failover (site crash to its shards written elsewhere) | {:.1} s | {measured} | {} |",
            objective as f64 / 1000.0,
            if ok { "met" } else { "MISSED" }
        );
    }
    m.push('\n');
    if !o.recovery.is_empty() {
        let _ = writeln!(m, "## Recovery after each crash\n");
        let _ = writeln!(
            m,
            "From the crash to the client seeing the first acknowledged write: of each of the crashed site's shards at another site \
             (failover), and of each of the other sites' own shards (their writes wait for the lost peer until their direction \
             is recorded async).\n"
        );
        let _ = writeln!(m, "| Crash | At | Its shards | Failover | Survivor's own writes |\n|---|---|---|---|---|");
        let show = |v: Option<u64>| v.map_or("never".to_string(), |ms| format!("{:.1} s", ms as f64 / 1000.0));
        for r in &o.recovery {
            let _ = writeln!(m, "| {} | {:.1} s | {} | {} | {} |", r.site, r.at_ms as f64 / 1000.0, r.shards, show(r.failover_ms), show(r.survivor_ms));
        }
        m.push('\n');
    }

    let _ = writeln!(m, "## Writes\n");
    let _ = writeln!(m, "- acknowledged puts: {}", c.acked_puts);
    let _ = writeln!(m, "- failed requests (refused or unanswered, none acknowledged): {}", c.failed_requests);
    let _ = writeln!(m, "- lost (acknowledged, not at the owner): {}", c.lost.len());
    for l in &c.lost {
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

    let _ = writeln!(m, "\n## Invariants\n");
    for i in &c.invariants {
        let _ = writeln!(m, "- **{}** {}", if i.passed { "PASS" } else { "FAIL" }, i.name);
        for d in &i.details {
            let _ = writeln!(m, "  - {d}");
        }
    }

    let _ = writeln!(m, "\n## Timeline\n");
    let _ = writeln!(
        m,
        "Simulated time from the start of the simulation; the workload ran from {:.1} s to {:.1} s.\n",
        o.workload_ms.0 as f64 / 1000.0,
        o.workload_ms.1 as f64 / 1000.0
    );
    let _ = writeln!(m, "| Time | Event | Outcome |\n|---|---|---|");
    let mut events = o.happened.clone();
    events.sort_by_key(|h| h.at_ms);
    for h in &events {
        let _ = writeln!(m, "| {:.1} s | {} | {} |", h.at_ms as f64 / 1000.0, h.what, h.outcome.as_deref().unwrap_or(""));
    }
    if !o.audit.is_empty() {
        let _ = writeln!(m, "\nThe controllers' own decisions (audit log, who and result):\n");
        let _ = writeln!(m, "| Time | Who | What | Result |\n|---|---|---|---|");
        for (at, e) in &o.audit {
            let _ = writeln!(m, "| {:.2} s | {} | {} | {} |", *at as f64 / 1000.0, e.who, e.what, e.result);
        }
    }
    let detections: Vec<&String> = o.trace.iter().filter(|l| l.contains(" leader ") || l.contains("fault:") || l.contains("restart")).collect();
    let _ = writeln!(m, "\nLeadership changes, faults and restarts from the trace:\n\n```");
    for l in detections {
        let _ = writeln!(m, "{l}");
    }
    let _ = writeln!(m, "```\n\nThe timeline picture is `timeline.svg`; the full trace is `trace.txt`.");
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
