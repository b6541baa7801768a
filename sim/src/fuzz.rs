//! Random fault schedules for `tandem drill fuzz`: one seed gives one
//! scenario (and drives its run), so a failing seed is its own reproducer.
//! Every fault is healed before the run ends and every crashed site comes
//! back, so the convergence checks apply to all three sites (faults:
//! partitions, loss, delay, crashes, key provider outages, paused sites,
//! clock drift within the lease bound, clock steps, power cuts that tear
//! the write-ahead logs, disk faults, slow disks, reordered messages); the safety
//! invariants (no acknowledged write lost, never two writers, everything
//! readable) must hold whatever the schedule.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::scenario::{DiskFaultKind, Event, Links, Objectives, Scenario, Step, Store, Workload};

const SITES: [&str; 3] = ["a", "b", "c"];

/// The scenario fuzzing seed `seed` runs.
pub fn scenario(seed: u64) -> Scenario {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_f022);
    let duration_s = 40;
    let mut timeline = Vec::new();
    let faults = rng.gen_range(1..=3);
    for _ in 0..faults {
        let at = rng.gen_range(5..25) as f64 + rng.gen_range(0..10) as f64 / 10.0;
        let lasts = rng.gen_range(3..12) as f64;
        let site = SITES[rng.gen_range(0..3)].to_string();
        let other = SITES.iter().find(|s| **s != site).map(|s| s.to_string()).unwrap_or_default();
        let peer = if rng.gen_bool(0.5) { other } else { SITES.iter().rev().find(|s| **s != site).map(|s| s.to_string()).unwrap_or_default() };
        let (fault, heal) = match rng.gen_range(0..17) {
            0 => (Event::Partition { a: site.clone(), b: peer.clone() }, Event::Heal { a: site, b: peer }),
            1 => (Event::PartitionOneway { from: site.clone(), to: peer.clone() }, Event::Heal { a: site, b: peer }),
            2 => (Event::Crash { site: site.clone() }, Event::Restart { site }),
            3 => (Event::Loss { a: site.clone(), b: peer.clone(), rate: 0.05 }, Event::Heal { a: site, b: peer }),
            4 => (Event::Delay { a: site.clone(), b: peer.clone(), ms: rng.gen_range(50..400) }, Event::Delay { a: site, b: peer, ms: 1 }),
            5 => (Event::KeysDown { site: site.clone() }, Event::KeysUp { site }),
            7 => (Event::PauseSite { site: site.clone() }, Event::ResumeSite { site }),
            // Within the rate bound the lease argument covers (10 %).
            8 => {
                let ppm = rng.gen_range(-100_000..=100_000);
                (Event::ClockDrift { site: site.clone(), ppm }, Event::ClockDrift { site, ppm: 0 })
            }
            9 => {
                let ms = rng.gen_range(-60_000..=60_000);
                (Event::ClockStep { site: site.clone(), ms }, Event::ClockStep { site, ms: -ms })
            }
            10 => (Event::PowerCut { site: site.clone() }, Event::Restart { site }),
            11 | 12 => {
                let store = [Store::Controller, Store::Replicator, Store::Blobs][rng.gen_range(0..3)];
                let fault = [DiskFaultKind::FsyncError, DiskFaultKind::Full, DiskFaultKind::CorruptRead][rng.gen_range(0..3)];
                (Event::DiskFault { site: site.clone(), store, fault }, Event::DiskFault { site, store, fault: DiskFaultKind::None })
            }
            13 => {
                let store = [Store::Controller, Store::Replicator, Store::Blobs][rng.gen_range(0..3)];
                (Event::SlowDisk { site: site.clone(), store, ms: rng.gen_range(20..300) }, Event::SlowDisk { site, store, ms: 0 })
            }
            14 => (Event::Reorder { a: site.clone(), b: peer.clone(), ms: rng.gen_range(5..200) }, Event::Delay { a: site, b: peer, ms: 1 }),
            16 => (Event::DuplicateRequests { rate: 0.3 }, Event::DuplicateRequests { rate: 0.0 }),
            15 => (Event::SlowKeys { site: site.clone(), ms: rng.gen_range(50..1500) }, Event::SlowKeys { site, ms: 0 }),
            _ => (Event::CrashLeader, Event::Restart { site: "any".into() }),
        };
        timeline.push(Step { at_s: at, event: fault });
        timeline.push(Step { at_s: (at + lasts).min(duration_s as f64), event: heal });
    }
    // "Restart whichever site crashed" is written per site.
    let timeline = timeline
        .into_iter()
        .flat_map(|s| match &s.event {
            Event::Restart { site } if site == "any" => SITES.iter().map(|x| Step { at_s: s.at_s, event: Event::Restart { site: x.to_string() } }).collect(),
            _ => vec![s],
        })
        .collect();
    Scenario {
        name: format!("fuzz seed {seed}"),
        description: "random faults, each healed before the end".into(),
        duration_s,
        settle_s: 60,
        links: Links::default(),
        workload: Workload { interval_ms: 300, tenants: 4, sizes: vec![1024, 16 * 1024], destroy_every: 7, clients: 2, request_timeout_ms: 6000, sticky: true },
        // Safety is what fuzzing checks; any schedule may stall writes for a while.
        objectives: Objectives {
            source: Some("fuzzing checks safety: a random schedule may stall writes for its whole length, never lose one".into()),
            rto_s: Some(duration_s + 60),
            rpo_entries: Some(0),
            rpo_s: Some(0.0),
            ..Default::default()
        },
        participants: Vec::new(),
        timeline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_gives_the_same_valid_schedule() {
        for seed in 0..50 {
            let s = scenario(seed);
            assert_eq!(s.digest(), scenario(seed).digest());
            let text = toml_of(&s);
            Scenario::parse(&text, "fuzz").unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
        }
        assert_ne!(scenario(1).digest(), scenario(2).digest());
    }

    fn toml_of(s: &Scenario) -> String {
        // The generated scenario passes the same validation as a file.
        let mut out = format!(
            "name = {:?}\nduration_s = {}\n[objectives]\nrto_s = {}\nrpo_entries = 0\nrpo_s = 0\nsource = {:?}\n",
            s.name,
            s.duration_s,
            s.goals().rto_s.value,
            s.objectives.source.clone().unwrap_or_default()
        );
        for step in &s.timeline {
            let v = serde_json::to_value(&step.event).unwrap();
            out.push_str(&format!("[[timeline]]\nat_s = {}\n", step.at_s));
            for (k, v) in v.as_object().unwrap() {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        out
    }
}
