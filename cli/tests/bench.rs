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
        .args(["bench", "--size-mib", "4", "--small-count", "3", "--dir"])
        .arg(dir.path().join("work"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "ceiling: read+crc32+AES-GCM+TCP+write+fsync",
        "disk floor, put: two O_DIRECT writes at once",
        "disk floor, DR/read: O_DIRECT read + write",
        "put at A, acknowledged after B stored+synced",
        "read back from B (decrypt, stream to disk)",
        "sync / single site:",
        "DR site C restarted and caught up from its cursor",
        "large files, ",
        "small contracts, ",
        "peak resident memory",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    // Three tandem figures, each as a ratio to the ceiling and to its floor.
    assert_eq!(stdout.matches("x ceiling, ").count(), 3, "{stdout}");
    assert_eq!(stdout.matches("x its disk floor").count(), 3, "{stdout}");
    // Its working directory is removed.
    assert!(!dir.path().join("work").exists());
}

#[test]
fn bench_refuses_empty_sizes_clearly() {
    let dir = tempfile::tempdir().unwrap();
    for args in [["--size-mib", "0"], ["--small-count", "0"]] {
        let out = std::process::Command::new(TANDEM).arg("bench").args(args).arg("--dir").arg(dir.path().join("work")).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("must be at least 1"), "{stderr}");
    }
}

#[test]
fn bench_says_how_much_space_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    // 2^40 MiB: more than any disk here.
    let out = std::process::Command::new(TANDEM)
        .args(["bench", "--size-mib", "1099511627776", "--dir"])
        .arg(dir.path().join("work"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("the bench needs about") && stderr.contains("use a smaller --size-mib"), "{stderr}");
}
