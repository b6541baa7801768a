//! The drill library, run as CI runs it: every scenario in `sim/scenarios/`
//! meets its objectives and invariants for a fixed seed; the same seed gives
//! the same trace; a build with a safety rule removed is caught; generated
//! fault schedules hold every invariant.

use std::path::PathBuf;

use tandem_sim::drill::{run, Outcome, Safety};
use tandem_sim::scenario::Scenario;

fn scenario(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(format!("{name}.toml"));
    Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn explain(o: &Outcome) -> String {
    let mut s = format!("{} seed {} trace {}\n", o.scenario.name, o.seed, o.trace_hash);
    for i in &o.checks.invariants {
        s.push_str(&format!("  {} {}: {}\n", i.verdict(), i.name, i.details.join(" | ")));
    }
    for h in &o.happened {
        s.push_str(&format!("  {} ms {} {}\n", h.at_ms, h.what, h.outcome.as_deref().unwrap_or("")));
    }
    s
}

fn passes(name: &str) {
    let o = run(&scenario(name), 1, Safety::Intact).unwrap();
    eprintln!("{}", explain(&o));
    assert!(o.passed(), "{}", explain(&o));
    assert!(o.checks.acked_puts > 20, "the workload hardly wrote: {}", explain(&o));
    // The timeline shows who owned what, the pair's mode and each link's lag.
    assert!(o.samples.len() as u64 > o.scenario.duration_s, "too few timeline samples: {}", o.samples.len());
    after_action_report_is_complete(&o);
    let svg = tandem_sim::report::svg(&o);
    for lane in [">shards at a<", ">shards at b<", ">shards at c<", ">pair mode<", ">lag a-&gt;c (max "] {
        assert!(svg.contains(lane), "the timeline lacks the lane {lane}");
    }
}

/// The after-action report an auditor files: every section, objectives
/// with their sources, a line per fault, per-site data, and each invariant
/// saying what it was checked on.
fn after_action_report_is_complete(o: &Outcome) {
    let info = tandem_sim::report::RunInfo { commit: "test".into(), wall_s: 1.0, reproduce: "tandem drill run x --seed 1".into() };
    let md = tandem_sim::report::markdown(o, &info);
    let mut at = 0;
    for section in tandem_sim::report::SECTIONS {
        let found = md[at..].find(section).unwrap_or_else(|| panic!("{}: the report lacks (or misorders) {section:?}", o.scenario.name));
        at += found;
    }
    assert!(md.contains("| RTO |") && md.contains("| RPO, time |"), "{}: objectives missing", o.scenario.name);
    assert!(md.contains("product target") || md.contains("scenario: "), "{}: objectives without a source", o.scenario.name);
    assert!(md.contains("Table used: GB/T 20988-2007"), "{}: grading without its edition", o.scenario.name);
    for f in &o.checks.faults {
        assert!(md.contains(&format!("| {} {} |", tandem_sim::checks::t(f.at_ms), f.what)), "{}: no timeline row for {}", o.scenario.name, f.what);
    }
    for site in ["a", "b", "c"] {
        assert!(o.checks.sites.iter().any(|i| i.site == site), "{}: no data row for site {site}", o.scenario.name);
    }
    // The controllers' decisions sit on the run's one time base, whatever
    // the proposer's clock said (clock-steps skews them by minutes).
    for (at, e) in &o.audit {
        assert!(*at <= o.simulated_ms, "{}: audit #{} ({}, {}'s clock) placed at {at} ms, after the run's end", o.scenario.name, e.seq, e.what, e.clock);
    }
    assert!(o.audit.iter().skip(1).all(|(_, e)| !e.clock.is_empty()), "{}: an audit entry does not say whose clock it is from", o.scenario.name);
    let running: Vec<_> = o.checks.sites.iter().filter(|i| i.running).collect();
    assert!(running.iter().all(|i| !i.ciphertext_digest.is_empty()), "{}: a running site without its digest", o.scenario.name);
    assert!(running.iter().any(|i| i.matched > 0 && i.pii_round_tripped > 0), "{}: nothing read back and compared", o.scenario.name);
    for i in &o.checks.invariants {
        assert!(!i.on.is_empty(), "{}: invariant {:?} does not say what it was checked on", o.scenario.name, i.name);
    }
    let json: serde_json::Value = serde_json::from_str(&tandem_sim::report::json(o, &info)).unwrap();
    for key in ["objectives", "grading", "findings", "participants"] {
        assert!(json.get(key).is_some(), "{}: report.json lacks {key}", o.scenario.name);
    }
}

// The in-city cut shows in the timeline: the pair went async and came back.
#[test]
fn the_timeline_shows_the_pair_leaving_and_regaining_sync() {
    let o = run(&scenario("in-city-link-cut"), 1, Safety::Intact).unwrap();
    let modes: Vec<&str> = o.samples.iter().filter_map(|s| s.pair_mode.as_deref()).collect();
    let first_async = modes.iter().position(|m| *m == "async").expect("the pair never went async");
    assert!(modes[first_async..].contains(&"sync"), "the pair never came back to sync: {modes:?}");
}

// A pair-mode change across a fresh cut goes round through the third site
// after `PAIR_MODE_FIRST_ANSWER` (1.5 s) instead of waiting out its 8 s
// call bound on the leader it cannot reach: the flapping link's worst
// write gap stays well under what that wait cost (6.5 s before; simulated
// time, so the figure is exact for a seed, not a timing guess).
#[test]
fn a_pair_mode_change_across_a_fresh_cut_does_not_wait_out_its_call_bound() {
    let o = run(&scenario("flapping-in-city-link"), 1, Safety::Intact).unwrap();
    assert!(o.checks.rto_ms < 5_000, "RTO {} ms: a pair-mode change waited for the unreachable leader\n{}", o.checks.rto_ms, explain(&o));
}

macro_rules! library {
    ($($test:ident => $file:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                passes($file);
            }
        )*

        #[test]
        fn every_scenario_file_has_a_test() {
            let tested = [$($file),*];
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
            for entry in std::fs::read_dir(dir).unwrap() {
                let name = entry.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned();
                assert!(tested.contains(&name.as_str()), "scenario {name} is not run by this test file");
            }
        }
    };
}

library! {
    planned_switchover => "planned-switchover",
    site_a_power_loss => "site-a-power-loss",
    in_city_link_cut => "in-city-link-cut",
    city_wide_disaster => "city-wide-disaster",
    flapping_in_city_link => "flapping-in-city-link",
    divergent_writes_quarantined => "divergent-writes-quarantined",
    failback_after_dr_then_lost_again => "failback-after-dr-then-lost-again",
    dr_receives_writes_of_a_site_that_stays_lost => "dr-receives-writes-of-a-site-that-stays-lost",
    dr_activation_refused_while_the_city_may_live => "dr-activation-refused-while-the-city-may-live",
    switchover_to_divergent_target_refused => "switchover-to-divergent-target-refused",
    dr_lag_bounded_under_lossy_dr_link => "dr-lag-bounded-under-lossy-dr-link",
    dr_link_degraded => "dr-link-degraded",
    leader_loss_mid_failover => "leader-loss-mid-failover",
    corrupted_blob_repaired => "corrupted-blob-repaired",
    destroy_during_partition => "destroy-during-partition",
    partition_manual_failover => "partition-manual-failover",
    key_provider_outage => "key-provider-outage",
    key_provider_slow => "key-provider-slow",
    duplicate_requests => "duplicate-requests",
    failback_after_dr => "failback-after-dr",
    steady_ten_minutes => "steady-ten-minutes",
    busy_survivor_power_loss => "busy-survivor-power-loss",
    failover_target_lost => "failover-target-lost",
    leader_site_power_loss => "leader-site-power-loss",
    dr_controller_down_replicator_loss => "dr-controller-down-replicator-loss",
    stale_owner_paused => "stale-owner-paused",
    clock_drift_within_bound => "clock-drift-within-bound",
    clock_steps => "clock-steps",
    disk_faults => "disk-faults",
    power_cut_torn_logs => "power-cut-torn-logs",
}

// With c's controller stopped, a's lost replicator is judged by the leader
// alone (or by a's controller leading with b confirming); either way a's
// shards go to b automatically, and the fence says on what evidence.
#[test]
fn without_the_dr_controller_the_leader_still_fails_over() {
    let o = run(&scenario("dr-controller-down-replicator-loss"), 1, Safety::Intact).unwrap();
    assert!(o.trace.iter().any(|l| l.contains("c controller stopped")), "the DR controller never stopped:\n{}", explain(&o));
    let fence = o
        .audit
        .iter()
        .map(|(_, e)| e)
        .find(|e| e.what.starts_with("drain ") && e.what.ends_with("from a to b") && e.result.starts_with("ok"))
        .unwrap_or_else(|| panic!("a was never fenced:\n{}", explain(&o)));
    assert!(fence.who.starts_with("controller@"), "{fence:?}");
    assert!(fence.why.contains("alone: no other controller") || fence.why.contains("by the leader (a) and b"), "{fence:?}");
    let moved_at = o.samples.iter().find(|s| s.owned.get("a").copied().unwrap_or(0) == 0).map(|s| s.at_ms);
    assert!(moved_at.is_some(), "a's shards never moved:\n{}", explain(&o));
}

// The busy survivor: b recorded its own direction async, and a's shards
// still went to b automatically (the run's RTO objective alone could be
// met by a site that never came back only through the failover).
#[test]
fn a_busy_survivor_takes_the_lost_sites_shards() {
    let o = run(&scenario("busy-survivor-power-loss"), 1, Safety::Intact).unwrap();
    let last = o.samples.last().expect("no samples");
    assert_eq!(last.owned.get("a").copied().unwrap_or(0), 0, "a still owns shards at the end:\n{}", explain(&o));
    let b_async = o.samples.iter().any(|s| s.pair_mode.as_deref() == Some("async"));
    assert!(b_async, "b never recorded its direction async: the scenario no longer tests a busy survivor");
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let s = scenario("key-provider-outage");
    let first = run(&s, 5, Safety::Intact).unwrap();
    let again = run(&s, 5, Safety::Intact).unwrap();
    assert_eq!(first.trace_hash, again.trace_hash, "same seed, different traces");
    assert_eq!(first.trace, again.trace);
    let other = run(&s, 6, Safety::Intact).unwrap();
    assert_ne!(first.trace_hash, other.trace_hash, "another seed should give another run");
}

// The failover's lease wait removed: b starts writing while a, cut off
// but still holding its lease, keeps accepting writes. The checks must say so.
#[test]
fn a_build_without_the_lease_wait_is_caught() {
    let s = scenario("partition-manual-failover");
    let o = run(&s, 1, Safety::SkipLeaseWait).unwrap();
    let two = o.checks.invariants.iter().find(|i| i.name == "never two sites accepting writes for one shard").unwrap();
    assert!(!two.passed, "the broken build was not caught:\n{}", explain(&o));
    assert!(!o.passed());
}

// The rate bound the lease argument assumes (10 %), under a load heavy
// enough that a's clients keep reaching it through the whole window where
// its lease, measured on a slow clock, outlasts the leader's wait: within
// the bound b never writes while a may; at half speed a keeps writing a's
// shards after b was given them, and the drill says so (what a drill
// reports when a site's clock is that far off). Only the two-writers
// invariant is asserted: this load outruns the DR link (issue 21).
#[test]
fn clock_drift_is_safe_within_the_bound_and_caught_beyond_it() {
    let two_writers = |ppm: i64| {
        let mut s = scenario("clock-drift-within-bound");
        s.workload.clients = 8;
        s.workload.interval_ms = 50;
        s.workload.tenants = 8;
        for step in &mut s.timeline {
            if let tandem_sim::scenario::Event::ClockDrift { ppm: p, .. } = &mut step.event {
                *p = ppm;
            }
        }
        let o = run(&s, 1, Safety::Intact).unwrap();
        let inv = o.checks.invariants.iter().find(|i| i.name == "never two sites accepting writes for one shard").unwrap().clone();
        (inv, explain(&o))
    };
    let (within, why) = two_writers(-100_000);
    assert!(within.passed, "two writers with a clock inside the bound:\n{why}");
    let (beyond, why) = two_writers(-500_000);
    assert!(!beyond.passed, "a clock at half speed went unnoticed:\n{why}");
    assert!(beyond.details.iter().any(|d| d.contains("a accepted") && d.contains("under epoch 1")), "{:?}", beyond.details);
}

// Generated fault schedules (`./dev test` also runs `tandem drill fuzz`
// over 200 seeds).
#[test]
fn generated_fault_schedules_hold_every_invariant() {
    let mut failing = Vec::new();
    for seed in 0..5 {
        let o = run(&tandem_sim::fuzz::scenario(seed), seed, Safety::Intact).unwrap();
        if !o.passed() {
            failing.push(explain(&o));
        }
    }
    assert!(failing.is_empty(), "{}", failing.join("\n"));
}
