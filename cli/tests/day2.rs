//! End-to-end tests of day-2 operations with real processes: health and
//! readiness endpoints, systemd readiness, versions, the policy through
//! Raft, replacing a lost controller, completion, man pages and
//! `status --watch`.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::*;

/// `tandem probe <endpoint> --addr` of a process ("a", "a-replicator"):
/// whether it exited 0, and the JSON it printed.
fn probe(c: &Cluster, name: &str, endpoint: &str) -> (bool, Value) {
    let out = run_bounded(Command::new(TANDEM).args(["probe", endpoint, "--addr", &c.metrics_addrs[name]]));
    let body = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), body)
}

/// Starts the three controllers only and waits for a leader and the layout.
fn start_controllers(c: &mut Cluster) -> Value {
    for s in SITES {
        c.start(s);
    }
    c.wait_status("a leader and the layout", &SITES, |s| leader_of(s).is_some() && s["cluster"]["bootstrapped"] == true)
}

fn audit_json(c: &Cluster) -> Vec<Value> {
    let out = c.tandem(&SITES, &["audit", "--json", "--limit", "200"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

// `/health` answers while the process lives; `/ready` only while it serves:
// a controller that knows a leader and the layout, a replicator holding a
// current write lease. Cut two controllers away and the survivor and its
// replicator stop being ready, with the reason in the JSON body.
#[test]
fn health_and_ready_follow_what_each_daemon_can_serve() {
    let mut c = Cluster::new();
    c.start_all();
    for name in ["a", "b", "c", "a-replicator", "b-replicator", "c-replicator"] {
        let (alive, health) = probe(&c, name, "health");
        assert!(alive && health["status"] == "alive", "{name}: {health}");
        assert_eq!(health["site"], name.split('-').next().unwrap(), "{health}");
        let (ready, body) = c.wait_for(&format!("{name} ready"), || Some(probe(&c, name, "ready")).filter(|(ok, _)| *ok));
        assert!(ready && body["ready"] == true && body["reason"] == "", "{name}: {body}");
        // Metrics name the build and the process's own resource use.
        let metrics = c.scrape(name).expect("metrics");
        for family in ["tandem_build_info{", "process_resident_memory_bytes ", "process_cpu_seconds_total ", "process_open_fds "] {
            assert!(metrics.contains(family), "{name} lacks {family}");
        }
    }
    // Nothing listening is a failed probe, not a hang.
    let out = run_bounded(Command::new(TANDEM).args(["probe", "ready", "--addr", "127.0.0.1:1", "--timeout-ms", "500"]));
    assert!(!out.status.success(), "a probe of a closed port must fail");

    c.kill("b");
    c.kill("c");
    let (_, body) = c.wait_for("controller a not ready without a quorum", || Some(probe(&c, "a", "ready")).filter(|(ok, _)| !*ok));
    assert_eq!(body["ready"], false, "{body}");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("no Raft leader") || reason.contains("no quorum"), "{body}");
    let (_, body) = c.wait_for("replicator a not ready without a lease", || Some(probe(&c, "a-replicator", "ready")).filter(|(ok, _)| !*ok));
    assert!(body["reason"].as_str().unwrap_or_default().contains("lease"), "{body}");
    // Still alive, though.
    assert!(probe(&c, "a", "health").0 && probe(&c, "a-replicator", "health").0);

    c.start("b");
    c.wait_for("controller a ready again", || Some(probe(&c, "a", "ready")).filter(|(ok, _)| *ok));
    c.wait_for("replicator a ready again", || Some(probe(&c, "a-replicator", "ready")).filter(|(ok, _)| *ok));
}

// Under systemd (Type=notify) a controller says READY=1 only once it
// serves: alone it reports why it is not ready; with a second controller
// (a quorum) it becomes ready.
#[test]
fn systemd_hears_ready_once_a_controller_serves() {
    let mut c = Cluster::new();
    let socket_path = c.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.env.push(("NOTIFY_SOCKET".into(), socket_path.display().to_string()));
    let mut buf = [0u8; 512];
    let mut recv = || socket.recv(&mut buf).ok().map(|n| String::from_utf8_lossy(&buf[..n]).to_string());

    c.start("a");
    let deadline = Instant::now() + WAIT;
    let first = loop {
        if let Some(m) = recv() {
            break m;
        }
        assert!(Instant::now() < deadline, "controller a never notified systemd\n{}", c.logs());
    };
    assert!(first.contains("STATUS=not ready") && !first.contains("READY=1"), "alone, a is not ready: {first:?}");

    c.start("b");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(m) = recv() {
            if m.contains("READY=1") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no READY=1 after a quorum formed\n{}", c.logs());
    }
}

/// The commit `tandem --version` names ("0.1.0 (commit X, built D)").
fn version_commit() -> (String, String) {
    let out = run_bounded(Command::new(TANDEM).arg("--version"));
    let text = stdout(&out);
    let commit = text.split("(commit ").nth(1).and_then(|r| r.split(',').next()).unwrap_or_else(|| panic!("no commit in {text:?}")).to_string();
    let built = text.split(", built ").nth(1).and_then(|r| r.split(')').next()).unwrap_or_else(|| panic!("no build date in {text:?}")).to_string();
    (commit, built)
}

// Every daemon reports the build it runs: `tandem status` per controller
// and per replicator, `/health`, and no warning while they agree.
#[test]
fn each_daemon_reports_its_version() {
    let (commit, built) = version_commit();
    assert!(!commit.is_empty() && commit != "unknown", "a build from a checkout names its commit: {commit}");
    assert_eq!(built.len(), 10, "YYYY-MM-DD: {built}");
    let label = format!("{}+{commit}", env!("CARGO_PKG_VERSION"));
    let mut c = Cluster::new();
    c.start_all();
    let s = c.wait_status("versions from every daemon", &SITES, |s| {
        SITES.iter().all(|site| s["nodes"][site]["version"].is_string()) && s["replicators"].as_array().is_some_and(|r| r.len() == 3)
    });
    for site in SITES {
        assert_eq!(s["nodes"][site]["version"], label.as_str(), "controller {site}: {s}");
    }
    for r in s["replicators"].as_array().unwrap() {
        assert_eq!(r["version"], label.as_str(), "{r}");
    }
    assert!(s["version_warning"].is_null(), "{}", s["version_warning"]);
    let table = stdout(&c.tandem(&SITES, &["status"]));
    assert!(table.contains("VERSION") && table.contains(&label) && !table.contains("WARNING"), "{table}");
    let (_, health) = probe(&c, "b", "health");
    assert_eq!(health["commit"], commit.as_str(), "{health}");
}

// The policy changes through Raft: a dry run changes nothing; a set is
// audited and seen by every controller; a stale --expect, a misspelt key
// and a bad value are refused and change nothing; a controller whose TOML
// says otherwise warns at start.
#[test]
fn policy_changes_through_raft_from_the_value_shown() {
    let mut c = Cluster::new();
    start_controllers(&mut c);
    let show = |c: &Cluster| -> Value {
        let out = c.tandem(&SITES, &["policy", "show", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
        rows.as_array().unwrap().iter().map(|r| (r["key"].as_str().unwrap().to_string(), r["value"].clone())).collect::<serde_json::Map<_, _>>().into()
    };
    assert_eq!(show(&c)["cooldown_s"], "600");
    let before = audit_json(&c).len();

    let out = c.tandem(&SITES, &["policy", "set", "cooldown_s=30", "--reason", "drill", "--dry-run"]);
    assert!(out.status.success() && stdout(&out).contains("600 -> 30"), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(show(&c)["cooldown_s"], "600", "a dry run changed the policy");
    assert_eq!(audit_json(&c).len(), before);

    let out = c.tandem(&SITES, &["policy", "set", "cooldown_s=30", "--reason", "shorter after the drill", "--who", "alice", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for site in SITES {
        c.wait_status(&format!("controller {site} applies the new cooldown"), &[site], |s| s["cluster"]["policy"]["cooldown_s"] == 30);
    }
    let audit = audit_json(&c);
    assert!(
        audit
            .iter()
            .any(|e| e["what"] == "policy cooldown_s: 600 -> 30" && e["who"] == "alice" && e["why"] == "shorter after the drill" && e["result"] == "ok"),
        "{audit:?}"
    );

    for (args, why) in [
        (vec!["policy", "set", "cooldown_s=120", "--expect", "600"], "is 30 now"),
        (vec!["policy", "set", "cooldwn_s=120"], "unknown policy key"),
        (vec!["policy", "set", "down_after_ms=10"], "within 500..=600000"),
        (vec!["policy", "set", "auto_failover=maybe"], "true or false"),
        (vec!["policy", "set", "paused=true"], "tandem pause"),
        // Without TLS nobody could approve anything.
        (vec!["policy", "set", "four_eyes=true"], "needs mutual TLS"),
    ] {
        let mut args = args;
        args.extend(["--reason", "test", "--yes"]);
        let out = c.tandem(&SITES, &args);
        assert!(!out.status.success() && stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(show(&c)["cooldown_s"], "30");
    assert_eq!(audit_json(&c).len(), audit.len(), "a refused policy change was proposed");

    // The TOML still says 600 (the default): a restarted controller says
    // its config differs from what applies.
    c.kill("a");
    c.start("a");
    c.wait_for("a's warning about its [policy]", || {
        let log = c.log("a");
        (log.contains("differs from the cluster's agreed policy") && log.contains("cooldown_s: the cluster has 30, this config says 600")).then_some(())
    });
}

/// `tandem members --json` from the leader.
fn members(c: &Cluster, sites: &[&str]) -> Value {
    let out = c.tandem(sites, &["members", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn member<'a>(m: &'a Value, site: &str) -> Option<&'a Value> {
    m["members"].as_array().unwrap().iter().find(|x| x["site"] == site)
}

// The runbook's procedure for a controller whose disk is lost: refused
// while it lives, removed once lost, a replacement prepared on an empty
// store, started, added as learner then voter, and it holds the state.
#[test]
fn a_lost_controller_is_removed_and_replaced() {
    let mut c = Cluster::new();
    let s = start_controllers(&mut c);
    let leader = leader_of(&s).unwrap();
    let lost = SITES.iter().copied().find(|x| *x != leader).unwrap();
    let others: Vec<&str> = SITES.iter().copied().filter(|x| *x != lost).collect();
    let m = c.wait_for("every member heard by the leader", || {
        let m = members(&c, &SITES);
        SITES.iter().all(|s| member(&m, s).is_some_and(|x| x["last_contact_ms"].as_u64().is_some_and(|ms| ms < 2000))).then_some(m)
    });
    assert_eq!(m["members"].as_array().unwrap().iter().filter(|x| x["role"] == "voter").count(), 3, "{m}");
    assert!(member(&m, &leader).unwrap()["leader"] == true, "{m}");
    let table = stdout(&c.tandem(&SITES, &["members"]));
    assert!(table.contains("LAST CONTACT") && table.contains("voter (leader)"), "{table}");

    // Alive: neither removed nor replaced.
    let out = c.tandem(&SITES, &["members", "remove", "--site", lost, "--reason", "test", "--yes"]);
    assert!(!out.status.success() && stderr(&out).contains("not lost"), "{}", stderr(&out));
    let prepare = |c: &Cluster| {
        let config = c.config_path(lost).display().to_string();
        c.tandem(&others, &["members", "prepare", "--config", &config, "--reason", "replacement", "--yes"])
    };
    let out = prepare(&c);
    assert!(!out.status.success() && stderr(&out).contains("remove it first"), "{}", stderr(&out));

    // Its disk is gone.
    c.kill(lost);
    std::fs::remove_dir_all(c.data_dir(lost).join("controller")).unwrap();
    c.wait_for("the leader stops hearing the lost controller", || {
        member(&members(&c, &others), lost).and_then(|x| x["last_contact_ms"].as_u64()).filter(|ms| *ms > 10_000)
    });
    let out = c.tandem(&others, &["members", "remove", "--site", lost, "--reason", "disk lost", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m = members(&c, &others);
    assert!(member(&m, lost).is_none(), "{m}");
    assert_eq!(m["members"].as_array().unwrap().len(), 2, "{m}");

    let out = prepare(&c);
    assert!(out.status.success(), "{}", stderr(&out));
    c.start(lost);
    let out = c.tandem(&others, &["members", "add", "--site", lost, "--reason", "replacement", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m = c.wait_for("the replacement a voter with the leader's log", || {
        let m = members(&c, &others);
        let x = member(&m, lost)?;
        (x["role"] == "voter" && x["matched_index"].as_u64().is_some_and(|i| i + 5 >= m["last_log_index"].as_u64().unwrap_or(0))).then_some(m)
    });
    assert_eq!(m["members"].as_array().unwrap().iter().filter(|x| x["role"] == "voter").count(), 3, "{m}");

    // It holds the agreed state and takes new changes.
    let out = c.tandem(&others, &["pause", "--reason", "after the replacement", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    c.wait_status("the replacement applies a new change", &[lost], |s| s["cluster"]["policy"]["paused"] == true && s["cluster"]["bootstrapped"] == true);
    // Restarted, it is a member like the others (its join marker no longer
    // counts once it holds the state).
    c.kill(lost);
    c.start(lost);
    c.wait_status("the restarted replacement following the leader again", &[lost], |s| {
        s["nodes"][lost]["role"] == "follower" && s["cluster"]["policy"]["paused"] == true
    });
    let audit = audit_json(&c);
    for what in ["removed from the Raft membership", "prepared to join generation", "joined generation"] {
        assert!(audit.iter().any(|e| e["what"].as_str().is_some_and(|w| w.contains(what))), "no audit entry for {what:?}: {audit:?}");
    }
}

// Completion scripts and man pages come from the same definitions as the
// parser: they name real subcommands and flags.
#[test]
fn completion_and_man_pages_name_the_commands() {
    let run = |args: &[&str]| -> Output { run_bounded(Command::new(TANDEM).args(args)) };
    for (shell, marker) in [("bash", "_tandem()"), ("zsh", "#compdef tandem"), ("fish", "complete -c tandem")] {
        let out = run(&["completion", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains(marker) && text.contains("switchover") && text.contains("accept-data-loss"), "{shell} completion lacks commands");
    }
    let out = run(&["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "an unknown shell is a usage error");

    let out = run(&["man"]);
    let page = stdout(&out);
    assert!(out.status.success() && page.contains(".TH tandem"), "{}", &page[..page.len().min(200)]);
    assert!(page.contains("switchover") && page.contains("members"), "the man page lists the subcommands");
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["man", "--out-dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    for page in ["tandem.1", "tandem-policy.1", "tandem-members.1", "tandem-failover.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page} is not a man page");
    }
}

// `status --watch` refreshes until stopped, showing a failed refresh and
// going on rather than exiting.
#[test]
fn status_watch_refreshes_and_survives_a_lost_cluster() {
    let mut c = Cluster::new();
    start_controllers(&mut c);
    let out = c.tandem(&SITES, &["status", "--watch", "--interval", "0.2", "--count", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.matches("tandem status at ").count(), 3, "{text}");
    assert_eq!(text.matches("leader: ").count(), 3, "{text}");
    for s in SITES {
        c.kill(s);
    }
    let out = c.tandem(&SITES, &["status", "--watch", "--interval", "0.2", "--count", "2", "--timeout-ms", "500"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.matches("tandem status at ").count(), 2, "{text}");
    assert_eq!(text.matches("error: ").count(), 2, "{text}");
    let out = c.tandem(&SITES, &["status", "--count", "2"]);
    assert_eq!(out.status.code(), Some(2), "--count needs --watch");
}
