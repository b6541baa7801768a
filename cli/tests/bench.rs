//! `tandem bench` runs end to end (a small file, few contracts): every
//! figure the README quotes is printed, with its ratio to a baseline of the
//! same run. Timing is never asserted here; the figures come from release
//! runs of the bench itself.

mod common;

use common::TANDEM;

#[test]
fn bench_prints_every_figure_against_its_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(TANDEM)
        .args(["bench", "--size-mib", "4", "--small-count", "3", "--rounds", "2", "--clients", "1,4", "--dir"])
        .arg(dir.path().join("work"))
        // The binary the replicator processes run (here the same one).
        .arg("--replicator-bin")
        .arg(TANDEM)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "replicators run from ",
        "ceiling: read+crc32+AES-GCM+TCP+write+fsync",
        "disk floor, put: two O_DIRECT writes at once",
        "disk floor, DR/read: O_DIRECT read + write",
        "put at A, acknowledged after B stored+synced",
        "read back from B (decrypt, stream to disk)",
        "by concurrent clients",
        "sync / single",
        "DR site C restarted and caught up from its cursor",
        "large files, ",
        "x a ceiling run right after",
        "small contracts, ",
        // ./dev installs rsync: the side-by-side runs.
        "rsync -a --fsync of the same files over loopback TCP",
        "rsync -a (no fsync), same:",
        "peak resident memory",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    // Three tandem figures (put, read-back, DR catch-up), each as a ratio
    // to the ceiling and to its floor; the put and the read-back also
    // round by round (two rounds: two ratios and a median).
    assert_eq!(stdout.matches("x ceiling, ").count(), 3, "{stdout}");
    assert_eq!(stdout.matches("x its disk floor").count(), 3, "{stdout}");
    let per_round: Vec<&str> = stdout.lines().filter(|l| l.contains("per round, x that round's ceiling: ")).collect();
    assert_eq!(per_round.len(), 2, "{stdout}");
    for l in per_round {
        let ratios = l.split("ceiling: ").nth(1).and_then(|r| r.split(" (median").next()).unwrap();
        assert_eq!(ratios.split(", ").filter(|r| r.parse::<f64>().is_ok_and(|x| x > 0.0)).count(), 2, "{l}");
    }
    // One row per concurrency level: puts/s, p50, p99 and CPU per put in
    // each mode, then the two ratios.
    for clients in ["1", "4"] {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(clients) && l.ends_with('x'))
            .unwrap_or_else(|| panic!("no row for {clients} clients in:\n{stdout}"));
        let figures: Vec<f64> = row.split_whitespace().skip(1).filter_map(|w| w.trim_end_matches('x').parse().ok()).collect();
        assert_eq!(figures.len(), 10, "{row}");
        assert!(figures.iter().all(|f| *f > 0.0), "{row}");
    }
    // And CPU per put of each replicator process: A and B in sync, A
    // alone with B stopped (counted in 10 ms ticks: a few puts may show 0).
    for clients in ["1", "4"] {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(clients) && l.contains("sync pair: "))
            .unwrap_or_else(|| panic!("no CPU by process for {clients} clients in:\n{stdout}"));
        let (sync, single) = row.split_once("single site: ").unwrap();
        let names =
            |part: &str| -> Vec<String> { part.split(", ").map(|p| p.split_whitespace().rev().nth(1).unwrap_or_default().to_string()).collect::<Vec<_>>() };
        assert_eq!(names(sync.split("sync pair: ").nth(1).unwrap().trim()), ["a", "b", "bench"], "{row}");
        assert_eq!(names(single.trim()), ["a", "bench"], "{row}");
        let figures: Vec<f64> = row.split(|c: char| c == ',' || c.is_whitespace()).filter_map(|w| w.parse().ok()).collect();
        assert_eq!(figures.len(), 1 + 5, "{row}");
        assert!(figures.iter().all(|f| *f >= 0.0), "{row}");
    }
    // Every site's replicator, the stopped ones too.
    let peaks = stdout.lines().find_map(|l| l.strip_prefix("peak resident memory of each replicator: ")).unwrap();
    let sites: Vec<&str> = peaks.split(", ").filter_map(|p| p.split_whitespace().next()).collect();
    assert_eq!(sites, ["a", "b", "c"], "{peaks}");
    // Its working directory is removed.
    assert!(!dir.path().join("work").exists());
}

// `--stored` starts three sites already holding that many contracts each
// and prints, per size, the fill time, the idle CPU, a verify's time (the
// filled sites compare equal, or the bench fails) and a put's latency.
#[test]
fn bench_measures_what_a_stored_contract_costs() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(TANDEM).args(["bench", "--stored", "300", "--dir"]).arg(dir.path().join("work")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let row = stdout.lines().find(|l| l.split_whitespace().next() == Some("300")).unwrap_or_else(|| panic!("no row for 300 in:\n{stdout}"));
    let figures: Vec<f64> = row.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert_eq!(figures.len(), 5, "{row}");
    assert!(figures[1..].iter().all(|f| *f > 0.0), "{row}");
    assert!(!dir.path().join("work").exists());
}

#[test]
fn bench_refuses_empty_sizes_clearly() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in
        [(["--size-mib", "0"], "must be at least 1"), (["--small-count", "0"], "must be at least 1"), (["--rounds", "1"], "--rounds must be at least 2")]
    {
        let out = std::process::Command::new(TANDEM).arg("bench").args(args).arg("--dir").arg(dir.path().join("work")).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(says), "{stderr}");
    }
}

#[test]
fn bench_says_how_much_space_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let bench = |size_mib: &str| {
        let out = std::process::Command::new(TANDEM).args(["bench", "--size-mib", size_mib, "--dir"]).arg(dir.path().join("work")).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // 2^30 MiB: more than any disk here.
    let stderr = bench("1073741824");
    assert!(stderr.contains("the bench needs about") && stderr.contains("use a smaller --size-mib"), "{stderr}");
    // 2^40 MiB: the space it needs does not even fit in 64 bits.
    let stderr = bench("1099511627776");
    assert!(stderr.contains("--size-mib 1099511627776 is too large"), "{stderr}");
}

// Another build's binary for the replicators must exist and be tandem.
#[test]
fn bench_refuses_a_replicator_binary_it_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-tandem");
    let out = std::process::Command::new(TANDEM).args(["bench", "--dir"]).arg(dir.path().join("work")).arg("--replicator-bin").arg(&missing).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no replicator binary at") && stderr.contains("no-such-tandem"), "{stderr}");
}
