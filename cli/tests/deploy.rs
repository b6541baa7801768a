//! The deployment files (deploy/): what a container build, compose and
//! systemd need from them, checked against the binary they run.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// The image builds from a small context (no target/, no .git), trusts the
// public CAs (S3 over HTTPS) and pins its base images.
#[test]
fn the_image_builds_from_a_small_context_and_trusts_public_cas() {
    let ignore = read(".dockerignore");
    for entry in ["target/", ".git/"] {
        assert!(ignore.lines().any(|l| l.trim() == entry), ".dockerignore must leave out {entry}");
    }
    let dockerfile = read("deploy/Dockerfile");
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(runtime.contains("ca-certificates"), "the runtime stage must install ca-certificates");
    for from in dockerfile.lines().filter(|l| l.starts_with("FROM ")) {
        let image = from.split_whitespace().nth(1).unwrap();
        let tag = image.split_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(!tag.is_empty() && tag != "latest" && !tag.starts_with("1-"), "unpinned base image: {from}");
    }
}

/// The port of `metrics_listen` in a config file.
fn metrics_port(config: &str) -> String {
    let line = config.lines().find(|l| l.starts_with("metrics_listen")).expect("metrics_listen");
    line.rsplit(':').next().unwrap().trim_matches(|c| c == '"' || c == ' ').to_string()
}

// Every daemon in compose has a healthcheck that asks its own /ready with
// `tandem probe` (a command the binary has), and no image floats.
#[test]
fn compose_checks_every_daemon_on_its_own_ready_port() {
    let compose = read("deploy/compose.yaml");
    let daemons = compose.matches("command: [\"controller\"").count() + compose.matches("command: [\"replicator\"").count();
    assert_eq!(daemons, 6, "three controllers and three replicators");
    assert_eq!(compose.matches("healthcheck: *").count(), daemons, "a healthcheck per daemon");
    for (kind, file) in [("controller", "deploy/compose/site-a.toml"), ("replicator", "deploy/compose/replicator-a.toml")] {
        let probe = format!("[\"CMD\", \"tandem\", \"probe\", \"ready\", \"--addr\", \"127.0.0.1:{}\"]", metrics_port(&read(file)));
        assert!(compose.contains(&probe), "no {kind} healthcheck on its metrics port: {probe}");
    }
    for site in ["a", "b", "c"] {
        assert_eq!(metrics_port(&read(&format!("deploy/compose/site-{site}.toml"))), metrics_port(&read("deploy/compose/site-a.toml")));
        assert_eq!(metrics_port(&read(&format!("deploy/compose/replicator-{site}.toml"))), metrics_port(&read("deploy/compose/replicator-a.toml")));
    }
    let out = run_bounded(Command::new(TANDEM).args(["probe", "ready", "--addr", "127.0.0.1:7130", "--help"]));
    assert!(out.status.success(), "the healthcheck's command does not parse: {}", stderr(&out));
    for image in compose.lines().filter_map(|l| l.trim().strip_prefix("image: ")) {
        if image == "tandem" {
            continue; // built from this repository
        }
        let tag = image.split_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(!tag.is_empty() && tag != "latest", "unpinned image in compose: {image}");
    }
}

// The units wait for the daemon's READY=1, run as the user sysusers.d
// creates, and pass `systemd-analyze verify` with the real binary.
#[test]
fn systemd_units_use_readiness_and_a_declared_user() {
    let sysusers = read("deploy/systemd/tandem.sysusers");
    assert!(sysusers.lines().any(|l| l.starts_with("u tandem ")), "sysusers.d must create the tandem user");
    let tmpfiles = read("deploy/systemd/tandem.tmpfiles");
    assert!(tmpfiles.lines().any(|l| l.starts_with("d /var/lib/tandem ")), "tmpfiles.d must create the data directory");
    let dir = tempfile::tempdir().unwrap();
    for unit in ["tandem-controller.service", "tandem-replicator.service"] {
        let text = read(&format!("deploy/systemd/{unit}"));
        for line in ["Type=notify", "NotifyAccess=main", "User=tandem"] {
            assert!(text.lines().any(|l| l.trim() == line), "{unit} lacks {line}");
        }
        assert!(text.contains("AF_UNIX"), "{unit}: sd_notify needs AF_UNIX sockets");
        // The unit as installed, with this build's binary in place.
        let local = text.replace("/usr/local/bin/tandem", TANDEM);
        let path = dir.path().join(unit);
        std::fs::write(&path, local).unwrap();
        match Command::new("systemd-analyze").arg("verify").arg(&path).output() {
            Ok(out) => assert!(out.status.success(), "{unit}: {}", String::from_utf8_lossy(&out.stderr)),
            Err(e) => eprintln!("WARNING: systemd-analyze not available ({e}); {unit} checked by text only"),
        }
    }
}

// What deploy/ and the runbooks tell an SRE to type exists: no flag the
// CLI does not have, and the split-brain runbook exports one controller
// at a time.
#[test]
fn deploy_files_and_runbooks_name_real_flags() {
    let help = stdout(&run_bounded(Command::new(TANDEM).args(["failover", "--help"])));
    for file in ["deploy/site-a.toml", "deploy/site-b.toml", "deploy/site-c.toml"] {
        let text = read(file);
        // The failover flags the configs' comments mention.
        for flag in text.split_whitespace().filter(|w| w.starts_with("--accept")) {
            let flag = flag.trim_end_matches(|c: char| !c.is_alphanumeric());
            assert!(help.contains(flag), "{file} names {flag}, which `tandem failover` does not have");
        }
    }
    let runbook = read("runbooks/suspected-split-brain.md");
    let exports: Vec<&str> = runbook.lines().filter(|l| l.contains("tandem audit --export")).filter(|l| l.trim_start().starts_with("tandem")).collect();
    assert!(exports.len() >= 3, "one export per controller: {exports:?}");
    for line in exports {
        let addr = line.split("--controllers").nth(1).unwrap_or_else(|| panic!("export without --controllers: {line}")).split_whitespace().next().unwrap();
        assert!(!addr.contains(','), "an export must name exactly one controller: {line}");
    }
}
