//! End-to-end tests of planned switchover with real processes (harness in
//! `common/`): a writer keeps putting contracts while the shards move.

mod common;

use common::*;
use serde_json::Value;

// A writer puts contracts at A without pause while `tandem switchover`
// moves all of A's shards to B: every acknowledged contract is at B, the
// writes resume at B, the epochs grew, A refuses writes for the moved
// shards, and the write pause is reported.
#[test]
fn switchover_under_load_loses_no_acknowledged_write() {
    let mut c = Cluster::new();
    let status = c.start_all();
    let tenant = tenant_owned_by(&status, "a", "sw");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deed.pdf");
    std::fs::write(&file, vec![42u8; 50 * 1024]).unwrap();

    let writer = Writer::start(&c.replicator_addrs["a"], &tenant, &file);
    writer.wait_acks(&c, 5);

    let out = c.tandem(&SITES, &["switchover", "--from", "a", "--to", "b", "--reason", "planned maintenance of a", "--yes", "--json"]);
    assert!(out.status.success(), "switchover failed: {}\n{}", stderr(&out), stdout(&out));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = &result["report"];
    assert_eq!(report["shards"], SHARDS / 2);
    let pause = report["write_pause_ms"].as_u64().unwrap();
    eprintln!("switchover write pause: {pause} ms");

    let after = writer.acked().len();
    writer.wait_acks(&c, after + 5);
    let (acked, _refused_while_draining) = writer.stop();
    assert_eq!(acked.last().unwrap().origin, "b", "writes did not resume at b: {acked:?}");

    let status = c.status(&SITES).unwrap();
    assert_eq!(status["shard_counts"]["a"], 0);
    assert_eq!(status["shard_counts"]["b"], SHARDS);
    let moved = tandem_controller::state::shard_of(&tenant, SHARDS) as usize;
    assert_eq!(status["cluster"]["shards"][moved]["epoch"], 2, "a moved shard gets a new epoch");

    let at_b = list_ids(&c, "b", &tenant);
    let missing: Vec<&String> = acked.iter().map(|a| &a.id).filter(|id| !at_b.contains(*id)).collect();
    assert!(missing.is_empty(), "acknowledged contracts missing at the new owner: {missing:?}");

    // The old owner refuses writes for the moved shard, naming the new one.
    let out = c.contract("a", &["put", "--here", "--tenant", &tenant, "--id", "late", "--file", &file.display().to_string()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("owned by site b (epoch 2)"), "{}", stderr(&out));

    let audit = c.tandem(&SITES, &["audit", "--json"]);
    let entries: Value = serde_json::from_slice(&audit.stdout).unwrap();
    let whats: Vec<&str> = entries.as_array().unwrap().iter().map(|e| e["what"].as_str().unwrap()).collect();
    assert!(whats.iter().any(|w| w.starts_with("drain 32 shards")), "{whats:?}");
    assert!(whats.iter().any(|w| w.starts_with("move 32 shards")), "{whats:?}");
}

// Refusals change nothing: a stale --expect-epoch, a target whose
// replicator is not reporting, shards the source does not own; --dry-run
// shows the plan and changes nothing.
#[test]
fn switchover_refusals_change_nothing() {
    let mut c = Cluster::new();
    c.start_all();
    let base = ["switchover", "--from", "a", "--to", "b", "--reason", "test", "--yes"];
    let run = |c: &Cluster, extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend(extra);
        c.tandem(&SITES, &args)
    };
    let out = run(&c, &["--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("plan: switchover from a to b, 32 shards (0-31)") && stdout(&out).contains("dry run"), "{}", stdout(&out));

    let out = run(&c, &["--expect-epoch", "7"]);
    assert!(!out.status.success() && stderr(&out).contains("--expect-epoch 7 is stale"), "{}", stderr(&out));

    let out = run(&c, &["--shards", "30-33"]);
    assert!(!out.status.success() && stderr(&out).contains("shard 32 is owned by b, not a"), "{}", stderr(&out));

    // Without b's replicator, b counts as down: keep the automatic
    // failover out of this test.
    let out = c.tandem(&SITES, &["pause", "--reason", "test", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    c.kill_replicator("b");
    c.wait_for("b's heartbeat to go stale", || {
        let out = run(&c, &["--dry-run"]);
        (!out.status.success() && stderr(&out).contains("has not reported")).then_some(())
    });

    let status = c.status(&SITES).unwrap();
    assert_eq!(status["shard_counts"]["a"], SHARDS / 2, "a refusal moved shards");
    assert!(status["cluster"]["shards"].as_array().unwrap().iter().all(|s| s["moving_to"].is_null()));
}

// The leader checks a switchover's move itself: sent by hand while the
// target still lacks the source's last write, it is refused and nothing
// moves; once the target has it, the same move goes through.
#[test]
fn the_leader_refuses_a_switchover_move_before_the_target_caught_up() {
    use tandem_controller::client::ControlClient;
    use tandem_controller::ops::{MoveStep, ShardMoveSpec};
    use tandem_controller::state::MoveKind;

    let mut c = Cluster::new();
    let status = c.start_all();
    let tenant = tenant_owned_by(&status, "a", "hand");
    let shard = tandem_controller::state::shard_of(&tenant, SHARDS);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deed.pdf");
    std::fs::write(&file, vec![9u8; 20 * 1024]).unwrap();
    c.kill_replicator("c");
    let out = c.contract("a", &["put", "--tenant", &tenant, "--id", "last", "--file", &file.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let addrs: Vec<String> = SITES.iter().map(|s| c.addrs[*s].clone()).collect();
    let client = ControlClient::new(addrs, tandem_net::Transport::Tokio, std::time::Duration::from_secs(10));
    let spec = |step, require_drained| ShardMoveSpec {
        step,
        from: "a".into(),
        to: "c".into(),
        shards: vec![shard],
        expect_epoch: None,
        require_drained,
        automatic: false,
        require_sync: false,
        kind: MoveKind::Switchover,
        deadline_ms: 120_000,
        writer_last_heard_ms: 0,
    };
    let drained = rt.block_on(client.shard_move(&spec(MoveStep::Drain, false), "sre", "by hand")).unwrap();
    assert!(drained.accepted, "{}", drained.result);
    let refused = rt.block_on(client.shard_move(&spec(MoveStep::Move, true), "sre", "by hand, too early")).unwrap_err().to_string();
    assert!(refused.contains("c has not confirmed 1 entries") && refused.contains("nothing moved"), "{refused}");
    assert_eq!(c.status(&SITES).unwrap()["cluster"]["shards"][shard as usize]["owner"], "a", "a refused move moves nothing");

    c.start_replicator("c");
    c.wait_status("c holding all of a's log", &SITES, |s| {
        s["replicators"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["site"] == "a" && h["links"].as_array().unwrap().iter().any(|l| l["peer"] == "c" && l["entries"] == 0))
    });
    let moved = rt.block_on(client.shard_move(&spec(MoveStep::Move, true), "sre", "by hand, caught up")).unwrap();
    assert!(moved.accepted, "{}", moved.result);
    assert_eq!(c.status(&SITES).unwrap()["cluster"]["shards"][shard as usize]["owner"], "c");
    let got = wait_readable(&c, "c", &tenant, "last", &dir.path().join("out"));
    assert_eq!(got["origin"], "a", "{got}");
}
