//! End-to-end tests of the control plane with real processes: three
//! `tandem controller` daemons on loopback (harness in `common/`).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::*;

fn audit_has(out: &Output, what: &str, why: &str) -> bool {
    let entries: Value = serde_json::from_slice(&out.stdout).unwrap();
    entries.as_array().unwrap().iter().any(|e| e["what"] == what && e["why"] == why)
}

// Pause goes through Raft and is audited; killing the leader with SIGKILL
// elects another; the killed node restarts, rejoins, and still has the
// state and the audit entry.
#[test]
fn pause_survives_leader_kill_and_restart() {
    let mut c = Cluster::new();
    for s in SITES {
        c.start(s);
    }
    let status = c.wait_status("a leader and the initial layout", &SITES, |s| leader_of(s).is_some() && s["cluster"]["bootstrapped"] == true);
    assert_eq!(status["shard_counts"]["a"], 32);
    assert_eq!(status["shard_counts"]["b"], 32);
    assert_eq!(status["shard_counts"]["c"], 0);
    assert_eq!(status["cluster"]["pairs"][0]["mode"], "sync");

    let reason = "drill: pause before maintenance";
    // Ask a follower first, so the leader redirect is exercised.
    let leader = leader_of(&status).unwrap();
    let follower = SITES.iter().find(|s| **s != leader).unwrap();
    let mut order = vec![*follower];
    order.extend(SITES.iter().filter(|s| *s != follower));
    // Without --yes and with no terminal to ask, nothing is changed.
    let out = c.tandem(&order, &["pause", "--reason", reason, "--who", "tester"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --yes"));
    let out = c.tandem(&order, &["pause", "--reason", reason, "--who", "tester", "--dry-run"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("dry run: nothing changed"));
    assert_eq!(c.status(&SITES).unwrap()["cluster"]["audit_len"], 1, "only the bootstrap entry so far");

    let out = c.tandem(&order, &["pause", "--reason", reason, "--who", "tester", "--yes"]);
    assert!(out.status.success(), "pause failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = c.tandem(&SITES, &["audit", "--json"]);
    assert!(audit_has(&out, "pause automatic actions", reason), "{}", String::from_utf8_lossy(&out.stdout));

    let old_leader: &'static str = SITES.iter().find(|s| **s == leader).unwrap();
    c.kill(old_leader);
    let others: Vec<&str> = SITES.iter().copied().filter(|s| *s != old_leader).collect();
    // Leader-only reads asked at once ride out the election (the
    // survivors first name the dead leader, then know none) instead of
    // failing an SRE's command on it.
    for read in [&["approvals"][..], &["policy", "show"]] {
        let out = c.tandem(&others, read);
        assert!(out.status.success(), "`tandem {}` during the election: {}", read.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    c.wait_status("a new leader among the survivors", &others, |s| leader_of(s).is_some_and(|l| l != old_leader) && s["nodes"][old_leader].is_null());

    c.start(old_leader);
    let me = [old_leader];
    let rejoined = c.wait_status("the restarted node follows again", &me, |s| {
        let own = &s["nodes"][old_leader];
        own["role"] == "follower" && own["leader_id"].is_u64() && s["cluster"]["policy"]["paused"] == true
    });
    assert_eq!(rejoined["cluster"]["generation"], 1);
    let out = c.tandem(&me, &["audit", "--json"]);
    assert!(audit_has(&out, "pause automatic actions", reason), "restarted node lost the audit entry");

    // And a change still commits through the new leader.
    let out = c.tandem(&SITES, &["resume", "--reason", "maintenance done", "--who", "tester", "--yes"]);
    assert!(out.status.success(), "resume failed: {}", String::from_utf8_lossy(&out.stderr));
}

// Without a majority, a change fails with a clear message in bounded time
// and changes nothing.
#[test]
fn change_without_quorum_fails_clearly() {
    let mut c = Cluster::new();
    for s in SITES {
        c.start(s);
    }
    c.wait_status("a leader and the initial layout", &SITES, |s| leader_of(s).is_some() && s["cluster"]["bootstrapped"] == true);
    c.kill("a");
    c.kill("b");
    let out = c.tandem(&["c"], &["pause", "--reason", "should not apply", "--who", "tester", "--yes"]);
    assert!(!out.status.success(), "pause succeeded without quorum");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no quorum"), "unclear error: {err}");
    let status = c.status(&["c"]).expect("the survivor still answers status");
    assert_eq!(status["cluster"]["policy"]["paused"], false);
}

#[test]
fn no_controller_gives_clear_error() {
    let addr = format!("127.0.0.1:{}", free_port());
    let out = run_bounded(Command::new(TANDEM).args(["status", "--controllers", &addr]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no controller answered") && err.contains(&addr), "{err}");
}

// A bad config line is reported with file, line and field, and the daemon
// does not start.
#[test]
fn malformed_config_names_file_line_and_field() {
    let c = Cluster::new();
    let path: PathBuf = c.dir.path().join("a.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace("heartbeat_ms = 100", "heartbeat_ms = \"fast\"");
    let bad = c.dir.path().join("bad.toml");
    std::fs::write(&bad, text).unwrap();
    let out = run_bounded(Command::new(TANDEM).arg("controller").arg("--config").arg(&bad));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:7:") && err.contains("raft.heartbeat_ms"), "{err}");
}

fn consecutive_free_ports() -> u16 {
    loop {
        let base = free_port();
        // Three controller ports, three replicator ports 10 above, and
        // their metrics ports 20 and 30 above.
        let ports = [1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32];
        if base < u16::MAX - 32 && ports.iter().all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

/// Kills a process if the test panics before it stopped it, so a failed
/// test does not leave a demo cluster running.
struct KillOnPanic(u32);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = Command::new("kill").args(["-9", &self.0.to_string()]).status();
        }
    }
}

/// Starts `tandem demo` and waits for its ready line.
fn start_demo(dir: &Path, base: u16) -> (Child, Vec<String>) {
    let mut child = Command::new(TANDEM)
        .args(["demo", "--dir"])
        .arg(dir)
        .args(["--base-port", &base.to_string(), "--shards", "16"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "demo exited early: {lines:?}");
        lines.push(line.trim_end().to_string());
        if line.starts_with("Ctrl-C stops") {
            break;
        }
    }
    child.stdout = Some(reader.into_inner());
    (child, lines)
}

fn interrupt_and_wait(mut child: Child) -> String {
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "demo did not stop after Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "demo exited with {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The env file the demo tells the operator to `source`, as printed.
fn printed_env_file(lines: &[String]) -> PathBuf {
    let line = lines.iter().find(|l| l.trim_start().starts_with("source ")).expect("the demo prints the env file to source");
    PathBuf::from(line.trim_start().trim_start_matches("source ").trim())
}

/// The `TANDEM_TLS_DIR` of the demo's env file (the admin's certificate).
fn printed_tls_dir(lines: &[String]) -> String {
    let text = std::fs::read_to_string(printed_env_file(lines)).unwrap();
    let line = text.lines().find(|l| l.starts_with("export TANDEM_TLS_DIR=")).expect("the env file sets TANDEM_TLS_DIR");
    let value = line.trim_start_matches("export TANDEM_TLS_DIR=");
    shell_words::split(value).unwrap().remove(0)
}

// `tandem demo` needs no config, runs mutual TLS, prints where its data is
// and what to run (with the certificate to use), serves the CLI with that
// certificate and refuses it without, stops cleanly on Ctrl-C, and
// recovers its state when started again.
#[test]
fn demo_starts_stops_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let base = consecutive_free_ports();
    let controllers = (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect::<Vec<_>>().join(",");
    let (child, lines) = start_demo(dir.path(), base);
    let _reaper = KillOnPanic(child.id());
    let text = lines.join("\n");
    assert!(text.contains("three sites up, leader is site"), "{text}");
    assert!(text.contains(&dir.path().canonicalize().unwrap().display().to_string()), "demo must print its data dir: {text}");
    assert!(text.contains("tandem status"), "{text}");
    let tls = printed_tls_dir(&lines);
    assert!(std::path::Path::new(&tls).join("cert.pem").exists(), "{tls}");
    // Every printed command must work as printed: the demo's ports, its certificate.
    let cli = || {
        let mut cmd = Command::new(TANDEM);
        cmd.env("TANDEM_CONTROLLERS", &controllers).env("TANDEM_TLS_DIR", &tls);
        cmd
    };

    // "Up" means every site serves: `tandem verify`, which needs every
    // replicator's view, works as soon as the demo says so.
    let out = run_bounded(cli().args(["verify"]).env("TANDEM_REPLICATOR", format!("127.0.0.1:{}", base + 10)));
    assert!(out.status.success(), "verify right after the demo came up: {}", String::from_utf8_lossy(&out.stderr));

    // Without a certificate the demo refuses the CLI.
    let out = run_bounded(Command::new(TANDEM).args(["status", "--timeout-ms", "2000"]).env("TANDEM_CONTROLLERS", &controllers).env_remove("TANDEM_TLS_DIR"));
    assert!(!out.status.success(), "plaintext CLI accepted by the TLS demo");

    let out = run_bounded(cli().args(["pause", "--reason", "demo test", "--who", "t", "--yes"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The demo's replicators store and replicate a contract.
    let replicator = |i: u16| format!("127.0.0.1:{}", base + 10 + i);
    let file = dir.path().join("deed.txt");
    std::fs::write(&file, "signed by both parties").unwrap();
    let out = run_bounded(cli().args(["contract", "put", "--tenant", "demo", "--id", "d1", "--file"]).arg(&file).env("TANDEM_REPLICATOR", replicator(0)));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read_at_c = || run_bounded(cli().args(["contract", "get", "--tenant", "demo", "--id", "d1"]).env("TANDEM_REPLICATOR", replicator(2))).status.success();
    let deadline = Instant::now() + WAIT;
    while !read_at_c() {
        assert!(Instant::now() < deadline, "the demo's DR site never received the contract");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The printed `source` line and `tandem demo env` point a shell at the
    // demo: status works with nothing else set.
    let env_file = printed_env_file(&lines);
    let out = run_bounded(Command::new(TANDEM).args(["demo", "env", "--dir"]).arg(dir.path()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), std::fs::read_to_string(&env_file).unwrap());
    for how in [format!("source '{}'", env_file.display()), format!("eval \"$('{TANDEM}' demo env --dir '{}')\"", dir.path().display())] {
        let script = format!("{how} && '{TANDEM}' status --json");
        let out = run_bounded(
            Command::new("bash").args(["-c", &script]).env_remove("TANDEM_CONTROLLERS").env_remove("TANDEM_TLS_DIR").env_remove("TANDEM_REPLICATOR"),
        );
        assert!(out.status.success(), "{how}: {}", stderr(&out));
        assert!(stdout(&out).contains("\"leader\""), "{how}: {}", stdout(&out));
    }
    let out = run_bounded(Command::new(TANDEM).args(["demo", "env", "--dir"]).arg(dir.path().join("nowhere")));
    assert!(!out.status.success() && stderr(&out).contains("start the demo first"), "{}", stderr(&out));

    let rest = interrupt_and_wait(child);
    assert!(rest.contains("tandem demo: stopped"), "{rest}");

    let (child, _) = start_demo(dir.path(), base);
    let _reaper = KillOnPanic(child.id());
    let out = run_bounded(cli().args(["audit", "--json"]));
    assert!(audit_has(&out, "pause automatic actions", "demo test"), "state lost across demo restart");
    let out = run_bounded(cli().args(["status"]));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("automatic actions: PAUSED"), "{table}");
    let deadline = Instant::now() + WAIT;
    while !read_at_c() {
        assert!(Instant::now() < deadline, "the contract is gone after a demo restart");
        std::thread::sleep(Duration::from_millis(200));
    }
    interrupt_and_wait(child);
}

// The audit log is a hash chain: `audit --verify` passes on every
// controller, `audit --export` writes the whole log as JSON lines, and an
// entry edited on one controller's disk is named as the first broken one
// at that controller only.
#[test]
fn audit_chain_verifies_exports_and_names_a_tampered_entry() {
    let mut c = Cluster::new();
    for s in SITES {
        c.start(s);
    }
    c.wait_status("a leader and the initial layout", &SITES, |s| leader_of(s).is_some() && s["cluster"]["bootstrapped"] == true);
    for (cmd, why) in [("pause", "audit test one"), ("resume", "audit test two"), ("pause", "audit test three")] {
        let out = c.tandem(&SITES, &[cmd, "--reason", why, "--who", "tester", "--yes"]);
        assert!(out.status.success(), "{cmd} failed: {}", stderr(&out));
    }
    // Every controller has applied all four entries before we look.
    for s in SITES {
        c.wait_status("the entries applied here", &[s], |st| st["cluster"]["audit_len"] == 4);
    }
    let out = c.tandem(&SITES, &["audit", "--verify"]);
    assert!(out.status.success(), "verify failed: {}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out).matches("audit chain intact, 4 entries").count(), 3, "{}", stdout(&out));

    let export = c.data_dir("a").with_file_name("audit.jsonl");
    let out = c.tandem(&SITES, &["audit", "--export", export.to_str().unwrap()]);
    assert!(out.status.success(), "export failed: {}", stderr(&out));
    let lines: Vec<Value> = std::fs::read_to_string(&export).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!(lines[2]["why"], "audit test two");
    assert_eq!(lines[2]["prev_hash"], lines[1]["hash"], "each line links to the one before");

    // Someone with disk access at b rewrites why entry 3 was made.
    c.kill("b");
    {
        use tandem_storage::{Durability, KvStore, WriteBatch};
        let kv = tandem_storage::RocksKv::open(&c.data_dir("b").join("controller")).unwrap();
        let mut key = b"audit/".to_vec();
        key.extend_from_slice(&3u64.to_be_bytes());
        let mut entry: Value = serde_json::from_slice(&kv.get(&key).unwrap().expect("entry 3 on disk")).unwrap();
        assert_eq!(entry["why"], "audit test two");
        entry["why"] = "routine".into();
        let mut batch = WriteBatch::new();
        batch.put(key, serde_json::to_vec(&entry).unwrap());
        kv.write(batch, Durability::Sync).unwrap();
    }
    c.start("b");
    c.wait_status("b back with a leader and all four entries", &["b"], |s| leader_of(s).is_some() && s["cluster"]["audit_len"] == 4);
    let out = c.tandem(&SITES, &["audit", "--verify"]);
    assert!(!out.status.success(), "a tampered log verified: {}", stdout(&out));
    let text = stdout(&out);
    let b_line = text.lines().find(|l| l.starts_with(&c.controllers(&["b"]))).unwrap_or_default();
    assert!(b_line.contains("BROKEN at entry 3"), "{text}");
    assert_eq!(text.matches("audit chain intact, 4 entries").count(), 2, "a and c are untouched: {text}");
}

/// Every `tandem ...` command in a code block of the runbooks (indented or
/// fenced, `\` continuations joined, `# comments` dropped), with the file
/// and line it comes from, without duplicates.
fn runbook_commands() -> Vec<(String, Vec<String>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runbooks");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "md")).collect();
    files.sort();
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut fenced = false;
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i];
            i += 1;
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                continue;
            }
            let in_block = fenced || line.starts_with("    ");
            if !in_block || !line.trim_start().starts_with("tandem ") {
                continue;
            }
            let at = format!("{}:{i}", file.file_name().unwrap().to_string_lossy());
            let mut command = line.trim().to_string();
            while command.ends_with('\\') && i < lines.len() {
                command.pop();
                command.push(' ');
                command.push_str(lines[i].trim());
                i += 1;
            }
            let words = shell_words::split(&command).unwrap_or_else(|e| panic!("{at}: cannot split {command:?}: {e}"));
            let words: Vec<String> = words.into_iter().skip(1).take_while(|w| !w.starts_with('#')).collect();
            if seen.insert(words.clone()) {
                out.push((at, words));
            }
        }
    }
    out
}

/// Commands that only read (never `--repair` or `--export`, which write).
fn read_only(words: &[String]) -> bool {
    let first = words.first().map(String::as_str);
    let second = words.get(1).map(String::as_str);
    let reads = matches!(first, Some("status" | "audit" | "events" | "verify" | "approvals"))
        || (first == Some("members") && second.is_none_or(|w| w.starts_with("--")))
        || (first == Some("policy") && second == Some("show"));
    reads && !words.iter().any(|w| w == "--repair" || w == "--export")
}

// A runbook cannot name a command or flag that does not exist: every
// command in their code blocks parses (`--help` after its arguments makes
// the CLI check them without acting); against a demo cluster, the ones
// with --dry-run are run with it and the read-only ones are run as they
// are; none is a usage error, and the dry runs change nothing (the audit
// log does not grow).
#[test]
fn every_runbook_command_exists_and_dry_runs_change_nothing() {
    let commands = runbook_commands();
    assert!(commands.len() > 30, "found only {} runbook commands", commands.len());
    let mut helps = Vec::new();
    for (at, words) in &commands {
        let out = run_bounded(Command::new(TANDEM).args(words).arg("--help"));
        assert!(out.status.success(), "{at}: `tandem {}` does not parse: {}", words.join(" "), stderr(&out));
        helps.push(stdout(&out));
    }

    let dir = tempfile::tempdir().unwrap();
    let base = consecutive_free_ports();
    let (child, lines) = start_demo(dir.path(), base);
    let _reaper = KillOnPanic(child.id());
    let tls = printed_tls_dir(&lines);
    let controllers = (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect::<Vec<_>>().join(",");
    let replicator = format!("127.0.0.1:{}", base + 10);
    let run = |words: &[String]| {
        run_bounded(
            Command::new(TANDEM)
                .args(words)
                .env("TANDEM_CONTROLLERS", &controllers)
                .env("TANDEM_REPLICATOR", &replicator)
                .env("TANDEM_TLS_DIR", &tls)
                .current_dir(dir.path()),
        )
    };
    let audit_len = || {
        let out = run(&["status".into(), "--json".into()]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["cluster"]["audit_len"].as_u64().unwrap()
    };
    let before = audit_len();
    let mut ran = 0;
    for ((at, words), help) in commands.iter().zip(&helps) {
        let mut words = words.clone();
        let local = !words.iter().any(|w| w == "--controllers" || w == "--replicator" || w == "--replicators" || w == "--config");
        if help.contains("--dry-run") {
            if !words.iter().any(|w| w == "--dry-run") {
                words.push("--dry-run".into());
            }
        } else if !read_only(&words) {
            continue;
        }
        // `--watch` refreshes until interrupted: one refresh shows it works.
        if words.iter().any(|w| w == "--watch") && !words.iter().any(|w| w == "--count") {
            words.extend(["--count".into(), "1".into()]);
        }
        let out = run(&words);
        ran += 1;
        let code = out.status.code();
        assert_ne!(code, Some(2), "{at}: `tandem {}` is a usage error: {}", words.join(" "), stderr(&out));
        if local && read_only(&words) {
            assert!(matches!(code, Some(0 | 3)), "{at}: `tandem {}` failed against the demo: {}", words.join(" "), stderr(&out));
        }
    }
    assert!(ran > 20, "only {ran} runbook commands were run against the demo");
    assert_eq!(audit_len(), before, "a dry run or a read-only runbook command changed the cluster");
    interrupt_and_wait(child);
}
