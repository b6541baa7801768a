//! End-to-end tests of unplanned failover with real processes (harness in
//! `common/`).

mod common;

use std::time::Instant;

use common::*;
use serde_json::Value;

fn audit(c: &Cluster, sites: &[&str]) -> Vec<Value> {
    let out = c.tandem(sites, &["audit", "--json", "--limit", "200"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

// kill -9 of every process of site A while one client writes A's tenant
// (through B, which forwards to the owner) and another writes B's own
// tenant at B: B's writes stop waiting for the dead A (B records b -> a
// async), but a -> b is still sync, so the controllers declare A down from
// two vantage points and B becomes owner automatically; writes resume at
// B, and every contract A acknowledged is at B.
#[test]
fn site_power_loss_fails_over_automatically_without_losing_writes() {
    let mut c = Cluster::new();
    let status = c.start_all();
    let tenant = tenant_owned_by(&status, "a", "auto");
    let tenant_b = tenant_owned_by(&status, "b", "busy");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deed.pdf");
    std::fs::write(&file, vec![7u8; 30 * 1024]).unwrap();

    let writer = Writer::start(&c.replicator_addrs["b"], &tenant, &file);
    let busy = Writer::start_with(|| std::process::Command::new(TANDEM), &c.replicator_addrs["b"], &tenant_b, &file, "busy");
    writer.wait_acks(&c, 5);
    busy.wait_acks(&c, 5);
    c.kill_site("a");
    let killed = Instant::now();
    let before = writer.acked().len();
    let survivors = ["b", "c"];
    c.wait_for("a write acknowledged by b after the failover", || writer.acked().into_iter().skip(before).find(|a| a.origin == "b").map(|_| ()));
    let (acked, _) = writer.stop();
    let (busy_acked, _) = busy.stop();
    let first_at_b = acked.iter().find(|a| a.origin == "b" && a.at > killed).unwrap();
    eprintln!("RTO: time from kill -9 of site a to the first acknowledged write of a's tenant at b: {} ms", (first_at_b.at - killed).as_millis());
    assert!(busy_acked.iter().any(|a| a.at > killed), "b's own tenant got no write after the kill");

    let status = c.status(&survivors).unwrap();
    assert_eq!(status["shard_counts"]["a"], 0, "a still owns shards");
    // The failover's record: made by tandem, its write pause counted from
    // when a was last heard (before the fence), the same on /metrics.
    let last = &status["cluster"]["last_moves"]["failover"];
    assert_eq!((last["from"].as_str(), last["to"].as_str(), last["automatic"].as_bool()), (Some("a"), Some("b"), Some(true)), "{last}");
    let (pause_ms, fence_to_move_ms) =
        (last["write_pause_ms"].as_u64().unwrap(), last["moved_at_unix_ms"].as_u64().unwrap() - last["drained_at_unix_ms"].as_u64().unwrap());
    assert!(pause_ms > fence_to_move_ms, "the pause starts before the fence, when a was last heard: {last}");
    eprintln!("failover record: fence to move {fence_to_move_ms} ms, write pause {pause_ms} ms (from a's last heartbeat)");
    assert!(status["cluster"]["last_automatic"]["what"].as_str().unwrap().starts_with("move 32 shards"), "{status}");
    let text = stdout(&c.tandem(&survivors, &["status"]));
    assert!(text.contains("last failover: a -> b, 32 shards, by tandem"), "{text}");
    let leader = status["leader"].as_str().unwrap().to_string();
    let scraped = c.wait_for("the leader's /metrics", || c.scrape(&leader));
    let sample = |name: &str| scraped.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok());
    assert_eq!(sample("tandem_last_move_write_pause_seconds{kind=\"failover\"}"), Some(pause_ms as f64 / 1000.0), "{scraped}");
    assert!(sample("tandem_last_automatic_action_timestamp_seconds").unwrap() > 0.0, "{scraped}");
    // Status shows a lost from both surviving vantage points.
    // (An observer that did not answer this status call is left out.)
    c.wait_status("status showing a lost from the surviving vantage points", &survivors, |s| {
        let seen: Vec<Option<u64>> = survivors.iter().filter(|o| !s["nodes"][**o].is_null()).map(|o| s["health"]["a"][o].as_u64()).collect();
        !seen.is_empty() && seen.iter().all(|age| age.is_none_or(|a| a >= 5_000)) && seen.iter().any(|age| age.is_some())
    });
    let at_b = list_ids(&c, "b", &tenant);
    let lost: Vec<&String> = acked.iter().map(|a| &a.id).filter(|id| !at_b.contains(*id)).collect();
    assert!(lost.is_empty(), "contracts acknowledged before the failover are missing at b: {lost:?}");

    let entries = audit(&c, &survivors);
    let moved = entries.iter().find(|e| e["what"].as_str().unwrap() == "move 32 shards (0-31) from a to b").expect("the move is audited");
    assert!(moved["who"].as_str().unwrap().starts_with("controller@"), "{moved}");
    assert!(moved["why"].as_str().unwrap().contains("site a lost"), "{moved}");
    // b was busy: its own direction went async before the failover, and
    // that did not stop it (a pair-wide mode declined it here).
    let b_async =
        entries.iter().any(|e| e["what"].as_str().unwrap().starts_with("replication b -> a: async") && e["result"].as_str().unwrap().starts_with("ok"));
    assert!(b_async, "b never recorded b -> a async: the test no longer has a busy survivor");

    // Failback: a returns, catches up as recovering, becomes active, and a
    // switchover gives its shards back with everything b wrote meanwhile.
    c.start("a");
    c.start_replicator("a");
    let out = c.tandem(&SITES, &["failback", "--site", "a", "--reason", "a repaired", "--yes", "--json"]);
    assert!(out.status.success(), "failback failed: {}\n{}", stderr(&out), stdout(&out));
    let text = stdout(&out);
    let result: Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    let back = result["return_shards"].as_array().unwrap();
    assert_eq!(back.len(), 1, "only a's shards are handed back, once: {back:?}");
    assert!(back[0].as_str().unwrap().starts_with("tandem switchover --from b --to a --shards 0-31 "), "{back:?}");
    let whats: Vec<String> = audit(&c, &SITES).iter().map(|e| e["what"].as_str().unwrap().to_string()).collect();
    assert!(whats.contains(&"site a: active -> recovering".to_string()) && whats.contains(&"site a: recovering -> active".to_string()), "{whats:?}");
    let out = c.tandem(&SITES, &["switchover", "--from", "b", "--to", "a", "--shards", "0-31", "--reason", "failback of a", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(c.status(&SITES).unwrap()["shard_counts"]["a"], SHARDS / 2);
    let at_a = list_ids(&c, "a", &tenant);
    let missing: Vec<&String> = acked.iter().map(|a| &a.id).filter(|id| !at_a.contains(*id)).collect();
    assert!(missing.is_empty(), "a got its shards back without: {missing:?}");
}

// The DR site's controller is stopped, then a's replicator is killed: no
// second vantage point is left (a's own controller does not count), and
// detection used to be silently off. Now the leader judges alone, a's
// shards go to b, the audit log says on what evidence, and status and the
// leader's /metrics said beforehand that a's failover was available.
#[test]
fn without_the_dr_controller_the_leader_still_fails_over() {
    let mut c = Cluster::new();
    c.start_all();
    c.kill("c");
    let city = ["a", "b"];
    let status =
        c.wait_status("the leader reporting a's automatic failover available", &city, |s| s["auto_failover"]["a"] == "" && s["auto_failover"]["b"] == "");
    let leader = status["leader"].as_str().unwrap().to_string();
    let text = stdout(&c.tandem(&city, &["status"]));
    assert!(text.contains("automatic failover: a available; b available"), "{text}");
    let metrics = c.wait_for("the leader's /metrics", || c.scrape(&leader));
    let available = metrics.lines().find_map(|l| l.strip_prefix("tandem_auto_failover_available{site=\"a\"} ")?.parse::<f64>().ok());
    assert_eq!(available, Some(1.0), "{metrics}");

    c.kill_replicator("a");
    c.wait_status("a's shards at b", &city, |s| s["shard_counts"]["a"] == 0 && s["shard_counts"]["b"] == SHARDS);
    let moved = audit(&c, &city).into_iter().find(|e| e["what"].as_str().unwrap() == "move 32 shards (0-31) from a to b").expect("the move is audited");
    assert!(moved["who"].as_str().unwrap().starts_with("controller@"), "{moved}");
    let fence = audit(&c, &city).into_iter().find(|e| e["what"].as_str().unwrap() == "drain 32 shards (0-31) from a to b").unwrap();
    // Judged without the DR controller: by the leader alone (b leads), or by
    // a's own controller leading with b confirming.
    let why = fence["why"].as_str().unwrap();
    assert!(why.contains("alone: no other controller") || why.contains("by the leader (a) and b"), "{fence}");
}

/// Starts `tandem failover --from a --to b` and kills it (-9) right after
/// it reports the fence: a's shards are left drained, with no writer.
/// Returns the status seen then.
fn fence_then_kill_cli(c: &Cluster, reason: &str) -> Value {
    use std::io::BufRead;
    let mut cli = c.spawn_tandem(&SITES, &["failover", "--from", "a", "--to", "b", "--reason", reason, "--yes"]);
    let mut lines = std::io::BufReader::new(cli.stdout.take().unwrap()).lines();
    // The progress line comes right after the fence commits, before the move.
    let fenced = lines.by_ref().map_while(Result::ok).find(|l| l.contains("fenced a's shards"));
    cli.kill().unwrap();
    cli.wait().unwrap();
    assert!(fenced.is_some(), "the CLI never reported the fence");
    let status = c.status(&SITES).unwrap();
    assert_eq!(status["shard_counts"]["a"], SHARDS / 2, "the killed CLI moved the shards after all: {status}");
    status
}

/// Waits for a leader to finish the failover the killed CLI left, and
/// returns its audited move (by a controller, saying why).
fn finished_by_a_leader(c: &Cluster) -> Value {
    c.wait_status("a leader finishing the failover", &SITES, |s| {
        s["shard_counts"]["a"] == 0 && s["cluster"]["shards"].as_array().unwrap().iter().all(|sh| sh["moving_to"].is_null())
    });
    let entries = audit(c, &SITES);
    let moved = entries.into_iter().find(|e| e["what"].as_str().unwrap() == "move 32 shards (0-31) from a to b").expect("the move is audited");
    assert!(moved["who"].as_str().unwrap().starts_with("controller@"), "{moved}");
    assert!(moved["why"].as_str().unwrap().contains("never finished"), "{moved}");
    moved
}

// The CLI driving a failover is killed in its lease wait, right after the
// fence: a's shards are left drained, with no writer. Status shows the
// failover in progress with its age; the leader finishes it once the
// fence's deadline has passed, and the audit log says why.
#[test]
fn a_failover_whose_cli_died_is_finished_by_the_leader() {
    let mut c = Cluster::new();
    c.start_all();
    fence_then_kill_cli(&c, "cli killed mid-failover");
    let out = c.tandem(&SITES, &["status"]);
    assert!(stdout(&out).contains("FAILOVER IN PROGRESS for"), "{}", stdout(&out));
    finished_by_a_leader(&c);
}

// The same, and the Raft leader's controller is killed (-9) and restarted
// right after the fence too: the drain is in the agreed state, so whichever
// controller leads next finishes the failover, and it counts as tandem's
// own (the last automatic action).
#[test]
fn a_failover_left_by_its_cli_and_a_restarted_leader_is_finished() {
    let mut c = Cluster::new();
    c.start_all();
    let status = fence_then_kill_cli(&c, "cli and leader lost mid-failover");
    let leader = status["leader"].as_str().expect("a leader").to_string();
    c.kill(&leader);
    c.start(&leader);
    let moved = finished_by_a_leader(&c);
    let status = c.status(&SITES).unwrap();
    assert_eq!(status["cluster"]["last_automatic"]["audit_seq"], moved["seq"], "{status}");
    assert_eq!(status["cluster"]["last_moves"]["failover"]["automatic"], true, "{status}");
}

// While automatic actions are paused, a site loss is detected but the
// failover is declined, and the refusal is in the audit log with its
// reason; an operator's `tandem failover` then moves the shards.
#[test]
fn paused_cluster_declines_and_records_then_operator_fails_over() {
    let mut c = Cluster::new();
    c.start_all();
    let out = c.tandem(&SITES, &["pause", "--reason", "incident under investigation", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    c.kill_site("a");
    let survivors = ["b", "c"];
    let declined = c.wait_for("the declined automatic failover in the audit log", || {
        audit(&c, &survivors).into_iter().find(|e| e["what"].as_str().unwrap_or("").contains("automatic failover to b declined"))
    });
    assert!(declined["result"].as_str().unwrap().contains("paused"), "{declined}");
    assert_eq!(c.status(&survivors).unwrap()["shard_counts"]["a"], SHARDS / 2, "paused, yet shards moved");

    let out = c.tandem(&survivors, &["failover", "--to", "b", "--expect-owner", "c", "--reason", "wrong guess", "--yes"]);
    assert!(!out.status.success() && stderr(&out).contains("--expect-owner c"), "{}", stderr(&out));
    let out = c.tandem(&survivors, &["failover", "--to", "b", "--expect-epoch", "9", "--reason", "stale", "--yes"]);
    assert!(!out.status.success() && stderr(&out).contains("--expect-epoch 9 is stale"), "{}", stderr(&out));
    let out = c.tandem(&survivors, &["failover", "--to", "b", "--reason", "a lost power", "--yes", "--json"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), stdout(&out));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["plan"]["expected_loss"]["entries"], 0, "the pair was in sync");
    assert_eq!(c.status(&survivors).unwrap()["shard_counts"]["b"], SHARDS);
}

/// (origin, created_unix_ms) of every contract of `tenant` stored at `site`.
fn history(c: &Cluster, site: &str, tenant: &str) -> Vec<(String, u64)> {
    let out = c.contract(site, &["list", "--json", "--tenant", tenant]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().iter().map(|c| (c["origin"].as_str().unwrap().to_string(), c["created_unix_ms"].as_u64().unwrap())).collect()
}

// A cut namespace link keeps the namespace's packets on this machine
// (`set_link(false)` checks it with `ip route get`), and restoring it
// routes them through the veth again.
#[test]
fn a_cut_namespace_link_keeps_its_packets_on_this_machine() {
    let Some(c) = Cluster::with_site_in_netns("a") else {
        return;
    };
    let ns = c.netns.as_ref().unwrap();
    let route = |addr: &str| String::from_utf8_lossy(&std::process::Command::new("ip").args(["route", "get", addr]).output().unwrap().stdout).into_owned();
    ns.set_link(false);
    assert!(!route(&ns.ns_ip).contains(" dev "), "{}", route(&ns.ns_ip));
    ns.set_link(true);
    assert!(route(&ns.ns_ip).contains(" dev tv"), "restored, the namespace is reached through its veth: {}", route(&ns.ns_ip));
}

// Site A (in its own network namespace) loses its link to B and C, which
// hold the controller majority, while clients write A's tenant on both
// sides. A stops accepting writes (its lease runs out) before B, after the
// automatic failover, accepts its first: every write either site stored
// for the shard is ordered A-before-B by the stored timestamps (one host,
// one clock), and every acknowledged write is at B.
#[test]
fn partitioned_owner_stops_writing_before_the_new_owner_starts() {
    let Some(mut c) = Cluster::with_site_in_netns("a") else {
        return;
    };
    let status = c.start_all();
    let tenant = tenant_owned_by(&status, "a", "part");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deed.pdf");
    std::fs::write(&file, vec![3u8; 20 * 1024]).unwrap();

    let ns = c.netns.as_ref().unwrap().name.clone();
    let inside_a = move || {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &ns, TANDEM]);
        cmd
    };
    let writer_a = Writer::start_with(inside_a, &c.replicator_addrs["a"], &tenant, &file, "a");
    let writer_b = Writer::start_with(|| std::process::Command::new(TANDEM), &c.replicator_addrs["b"], &tenant, &file, "b");
    writer_a.wait_acks(&c, 3);
    writer_b.wait_acks(&c, 3);

    c.netns.as_ref().unwrap().set_link(false);
    let cut = Instant::now();
    let before = writer_b.acked().len();
    c.wait_for("b accepting writes after the failover", || writer_b.acked().into_iter().skip(before).find(|a| a.origin == "b").map(|_| ()));
    eprintln!("partition to first write accepted at b: {} ms", cut.elapsed().as_millis());
    let (acked_a, _) = writer_a.stop();
    let (acked_b, _) = writer_b.stop();
    c.netns.as_ref().unwrap().set_link(true);

    let at_b = list_ids(&c, "b", &tenant);
    let lost: Vec<&String> = acked_a.iter().chain(&acked_b).map(|a| &a.id).filter(|id| !at_b.contains(*id)).collect();
    assert!(lost.is_empty(), "acknowledged writes missing at the new owner: {lost:?}");

    // What A accepted, once reachable again: what it serves, plus the
    // divergent writes it holds (quarantined or about to be).
    let at_a = c.wait_for("a reachable again", || {
        let out = c.contract("a", &["list", "--json", "--tenant", &tenant]);
        out.status.success().then(|| history(&c, "a", &tenant))
    });
    let kept_a = divergent_at(&c, "a");
    let last_a = at_a.iter().filter(|(o, _)| o == "a").map(|(_, t)| *t).chain(kept_a.iter().map(|d| d.at_unix_ms)).max().unwrap();
    let first_b = history(&c, "b", &tenant).iter().filter(|(o, _)| o == "b").map(|(_, t)| *t).min().unwrap();
    eprintln!("last write accepted by a {last_a}, first by b {first_b}: gap {} ms", first_b as i64 - last_a as i64);
    assert!(last_a < first_b, "two writers: a accepted a write at {last_a} ms, after b's first at {first_b} ms");

    // Once A has shipped its log to B, B has refused what it never got
    // (stale epoch) and A has quarantined it: kept, listed, not served.
    c.wait_status("a's log settled with b", &SITES, |s| {
        s["replicators"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["site"] == "a" && h["links"].as_array().unwrap().iter().any(|l| l["peer"] == "b" && l["entries"] == 0))
    });
    let divergent = divergent_at(&c, "a");
    let ids: std::collections::BTreeSet<String> = divergent.iter().map(|d| d.contract_id.clone()).collect();
    eprintln!("divergent writes quarantined at a: {ids:?}");
    for d in &divergent {
        assert!(d.quarantined && d.origin == "a" && d.current_owner == "b", "{d:?}");
    }
    assert!(acked_a.iter().all(|a| !ids.contains(&a.id)), "an acknowledged write is divergent");
    let served_a = list_ids(&c, "a", &tenant);
    let served_b = list_ids(&c, "b", &tenant);
    assert!(ids.iter().all(|id| !served_a.contains(id) && !served_b.contains(id)), "a quarantined write is served");
    // verify lists exactly those, and nothing else differs once A caught up.
    let report = c.wait_for("verify to list a's quarantined writes", || {
        let out = c.tandem(&SITES, &["verify", "--json"]);
        let Ok(report) = serde_json::from_slice::<Value>(&out.stdout) else {
            eprintln!("verify: {}", stderr(&out));
            return None;
        };
        let Some(differences) = report["differences"].as_array() else {
            eprintln!("verify: {report}");
            return None;
        };
        let listed: std::collections::BTreeSet<String> =
            differences.iter().filter(|d| d["kind"] == "divergent" && d["site"] == "a").map(|d| d["contract_id"].as_str().unwrap().to_string()).collect();
        let only_divergent = differences.iter().all(|d| d["kind"] == "divergent");
        if !(listed == ids && only_divergent) {
            eprintln!("verify: {report}");
        }
        (listed == ids && only_divergent).then_some(report)
    });
    eprintln!("verify after the partition: {} differences, all divergent", report["differences"].as_array().unwrap().len());

    // Quarantined writes are not served, so they do not block giving the
    // shard back to A.
    let shard = tandem_controller::state::shard_of(&tenant, SHARDS).to_string();
    let out = c.tandem(&SITES, &["switchover", "--from", "b", "--to", "a", "--shards", &shard, "--reason", "give back", "--yes"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), stdout(&out));
    assert_eq!(list_ids(&c, "a", &tenant), served_b, "a serves exactly what b served");
}

/// The divergent writes a site's replicator holds.
fn divergent_at(c: &Cluster, site: &str) -> Vec<tandem_proto::replicator::DivergentEntry> {
    try_divergent_at(c, site).unwrap_or_else(|e| panic!("{site}'s replicator: {e}"))
}

fn try_divergent_at(c: &Cluster, site: &str) -> Result<Vec<tandem_proto::replicator::DivergentEntry>, tonic::Status> {
    let addr = c.replicator_addrs[site].clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client = tandem_replicator::peer::client(tandem_net::Transport::Tokio.channel(&addr).unwrap());
        Ok(client.divergent(tandem_proto::replicator::DivergentRequest {}).await?.into_inner().entries)
    })
}

// After an automatic failover, the next one is declined until the policy's
// cooldown has passed (no ping-pong): A fails, B takes over; A comes back;
// B fails inside the cooldown and the controllers decline, saying so.
#[test]
fn automatic_failover_inside_the_cooldown_is_declined() {
    let mut c = Cluster::new();
    c.start_all();
    c.kill_site("a");
    c.wait_status("b owning every shard", &["b", "c"], |s| s["shard_counts"]["b"] == SHARDS);
    c.start("a");
    c.start_replicator("a");
    // b -> a went async when a was lost; it recovers once a is back, and
    // only then is the cooldown the one reason left to decline (the
    // leader's readiness verdict for b says so).
    c.wait_status("the leader declining b's failover only for the cooldown", &SITES, |s| {
        heartbeats_fresh(s) && s["auto_failover"]["b"].as_str().is_some_and(|why| why.contains("cooldown"))
    });
    c.kill_site("b");
    let declined = c.wait_for("the declined failover back to a", || {
        audit(&c, &["a", "c"]).into_iter().find(|e| e["what"].as_str().unwrap_or("").contains("site b down; automatic failover to a declined"))
    });
    assert!(declined["result"].as_str().unwrap().contains("cooldown"), "{declined}");
    // `tandem events` lists what tandem did by itself: the failover and the refusal.
    let out = c.tandem(&["a", "c"], &["events", "--json"]);
    let events: Value = serde_json::from_slice(&out.stdout).unwrap();
    let events = events.as_array().unwrap();
    assert!(events.iter().all(|e| e["who"].as_str().unwrap().starts_with("controller@") || e["who"].as_str().unwrap().starts_with("replicator@")));
    assert!(events.iter().any(|e| e["what"] == "move 32 shards (0-31) from a to b"), "{events:?}");
    assert!(events.iter().any(|e| e["what"].as_str().unwrap().contains("site b down")), "{events:?}");
    assert_eq!(c.status(&["a", "c"]).unwrap()["shard_counts"]["b"], SHARDS, "the cooldown did not hold");
}

// A's acknowledged writes that only B received (the DR site was down) reach
// the DR site after A is lost: B, now their owner, copies what C lacks.
#[test]
fn writes_only_the_failed_sites_peer_had_reach_the_dr_site() {
    let mut c = Cluster::new();
    let status = c.start_all();
    let tenant = tenant_owned_by(&status, "a", "relay");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deed.pdf");
    std::fs::write(&file, vec![9u8; 10 * 1024]).unwrap();
    c.kill_replicator("c");
    let ids = ["r1", "r2", "r3"];
    for id in ids {
        let out = c.contract("a", &["put", "--tenant", &tenant, "--id", id, "--file", &file.display().to_string()]);
        assert!(out.status.success() && stdout(&out).contains("sync"), "{}", stderr(&out));
    }
    c.kill_site("a");
    c.wait_status("b owning a's shards", &["b", "c"], |s| s["shard_counts"]["b"] == SHARDS);
    c.start_replicator("c");
    c.wait_for("c holding every contract a acknowledged", || {
        let out = c.contract("c", &["list", "--json", "--tenant", &tenant]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let at_c: Vec<&str> = v.as_array()?.iter().filter_map(|c| c["contract_id"].as_str()).collect();
        ids.iter().all(|id| at_c.contains(id)).then_some(())
    });
    let out = dir.path().join("read");
    let got = c.contract("c", &["get", "--tenant", &tenant, "--id", "r2", "--out", &out.display().to_string()]);
    assert!(got.status.success(), "{}", stderr(&got));
    assert_eq!(std::fs::read(out.join("deed.pdf")).unwrap(), std::fs::read(&file).unwrap());
}

// Automatic actions paused, a writes in sync mode (b holds its writes)
// while c's replicator is down, then a is lost for good: nobody fails its
// shards over, and a can never ship its log to c. b, which holds a's
// writes but does not own a's shards, copies them on to c once c is back:
// were the city lost next, they would otherwise be gone.
#[test]
fn the_dr_site_gets_a_lost_sites_writes_from_its_in_city_peer() {
    let mut c = Cluster::new();
    let status = c.start_all();
    let tenant = tenant_owned_by(&status, "a", "held-by-b");
    let out = c.tandem(&SITES, &["pause", "--reason", "investigating", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    c.kill_replicator("c");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deed.pdf");
    std::fs::write(&file, b"signed while c was away").unwrap();
    let put = c.contract("a", &["put", "--json", "--tenant", &tenant, "--id", "only-at-a-and-b", "--file", &file.display().to_string()]);
    assert!(put.status.success(), "{}", stderr(&put));
    assert!(list_ids(&c, "b", &tenant).contains("only-at-a-and-b"), "acknowledged in sync mode, so b holds it");
    c.kill_site("a");
    c.start_replicator("c");
    c.wait_for("c receiving a's write from b", || {
        let out = c.contract("c", &["list", "--json", "--tenant", &tenant]);
        // Until c's replicator listens, the list fails: ask again.
        let listed: Value = serde_json::from_slice(&out.stdout).ok()?;
        listed.as_array()?.iter().any(|v| v["contract_id"] == "only-at-a-and-b").then_some(())
    });
    let s = c.status(&["b", "c"]).unwrap();
    assert_eq!(s["shard_counts"]["a"], SHARDS / 2, "a still owns its shards: nobody failed them over");
}

// City-wide disaster: A and B are lost. `tandem dr activate` on C's
// (stopped) controller makes C the only member and owner of every shard;
// C serves what it had and takes new writes; A's controller, restarted with
// its old data, refuses to act (no second cluster). Then failback of A:
// `tandem dr rejoin` keeps its old controller store and prepares a fresh
// one, `tandem failback` adds it to generation 2 and quarantines the writes
// A made that C never received (one of them replaced by C's own version),
// and a switchover hands A's shards back; C receives A's new writes.
#[test]
fn dr_activation_after_losing_the_city_then_failback_of_a() {
    let mut c = Cluster::new();
    let status = c.start_all();
    let tenant = tenant_owned_by(&status, "a", "city");
    let dir = tempfile::tempdir().unwrap();
    let body = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let deed = |text: &str| body("deed.pdf", text);
    put_at(&c, &tenant, "a", "before", &deed("signed before the disaster"));
    put_at(&c, &tenant, "a", "shared", &deed("shared v1"));
    c.wait_for("c has both contracts", || {
        let ids = list_ids(&c, "c", &tenant);
        (ids.contains("before") && ids.contains("shared")).then_some(())
    });
    // The DR link is down for A's last writes: C never receives them.
    c.kill_replicator("c");
    put_at(&c, &tenant, "a", "diverged", &deed("written at a only"));
    let v2 = put_at(&c, &tenant, "a", "shared", &deed("shared v2 at a"));
    assert_eq!(v2["contract"]["version"], 2);
    // c's controller has heard a and b report since (the DR activation's
    // loss estimate comes from those reports).
    let reported = v2["contract"]["created_unix_ms"].as_u64().unwrap();
    c.wait_status("c's controller holding a's and b's latest reports", &["c"], |s| {
        ["a", "b"]
            .iter()
            .all(|site| s["replicators"].as_array().unwrap().iter().any(|h| h["site"] == *site && h["received_at_unix_ms"].as_u64() > Some(reported)))
    });

    c.kill_site("a");
    c.kill_site("b");
    // Refused while C's own controller runs (its store is in use).
    let config = c.config_path("c").display().to_string();
    let fenced = ["--city-fenced", "a and b powered off"];
    let activate = |c: &Cluster, extra: &[&str]| {
        let mut args = vec!["dr", "activate", "--config", config.as_str(), "--reason", "city-1 lost", "--yes"];
        args.extend(extra);
        c.tandem(&["c"], &args)
    };
    let out = activate(&c, &fenced);
    assert!(!out.status.success() && stderr(&out).contains("still running"), "{}", stderr(&out));
    c.kill("c");
    // Refused without the statement that the city is fenced, naming when
    // a and b were last heard; nothing changes.
    let out = activate(&c, &[]);
    assert!(!out.status.success() && stderr(&out).contains("must be fenced first"), "{}", stderr(&out));
    assert!(stdout(&out).contains("a last heard") && stdout(&out).contains("b last heard"), "{}", stdout(&out));
    // Also refused while a or b was heard within two write leases: asked
    // again until they have been silent that long.
    let out = c.wait_for("a and b silent long enough for a DR activation", || {
        let out = activate(&c, &fenced);
        (!stderr(&out).contains("it is not lost")).then_some(out)
    });
    assert!(out.status.success(), "{}\n{}", stderr(&out), stdout(&out));
    assert!(stdout(&out).contains("generation 2"), "{}", stdout(&out));
    // The loss estimate comes from what a and b last reported to c.
    assert!(stdout(&out).contains("a reported") && stdout(&out).contains("b reported"), "{}", stdout(&out));
    c.start("c");
    c.start_replicator("c");
    c.wait_status("c leading generation 2 and owning every shard", &["c"], |s| {
        s["cluster"]["generation"] == 2 && s["shard_counts"]["c"] == SHARDS && leader_of(s).as_deref() == Some("c")
    });

    // Once c's replicator has seen the new generation, it takes the writes.
    let after = deed("written at c after the disaster");
    let v = c.wait_for("c taking writes for a's old shard", || {
        let put = c.contract("c", &["put", "--json", "--tenant", &tenant, "--id", "after", "--file", &after]);
        put.status.success().then(|| serde_json::from_slice::<Value>(&put.stdout).unwrap())
    });
    assert_eq!(v["contract"]["origin"], "c");
    assert_eq!(v["contract"]["epoch"], 2);
    assert_eq!(read_at(&c, dir.path(), &tenant, "c", "before"), b"signed before the disaster");
    // C writes its own version 2 of the contract A had diverged on.
    let v = put_at(&c, &tenant, "c", "shared", &deed("shared v2 at c"));
    assert_eq!(v["contract"]["version"], 2);

    // The old city's controller, with its old data, refuses to act.
    c.start("a");
    let exit = c.wait_exit("a");
    assert!(!exit.success());
    let log = c.log("a");
    assert!(log.contains("fenced") && log.contains("generation 2"), "{log}");
    let s = c.status(&["c"]).unwrap();
    assert_eq!(s["cluster"]["generation"], 2);
    assert_eq!(s["cluster"]["sites"]["a"]["role"], "fenced");
    let entries = audit(&c, &["c"]);
    let activation = entries.iter().find(|e| e["what"].as_str().unwrap().starts_with("DR activation at c")).expect("audited");
    assert!(activation["why"].as_str().unwrap().contains("estimated loss"), "{activation}");
    assert!(activation["why"].as_str().unwrap().contains("city fenced: a and b powered off"), "{activation}");

    // Failback of A. A switchover to A is refused while it is fenced.
    let out = c.tandem(&["c"], &["switchover", "--from", "c", "--to", "a", "--shards", "0-31", "--reason", "too early", "--yes"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let a_config = c.config_path("a").display().to_string();
    let out = c.tandem(&["c"], &["dr", "rejoin", "--config", &a_config, "--reason", "city-1 power restored", "--yes"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), stdout(&out));
    let kept: Vec<_> = std::fs::read_dir(c.data_dir("a"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("controller.superseded-"))
        .collect();
    assert_eq!(kept.len(), 1, "the old controller store is kept aside");
    c.start("a");
    c.start_replicator("a");
    let out = c.tandem(&["c"], &["failback", "--site", "a", "--reason", "city-1 power restored", "--yes", "--json"]);
    assert!(out.status.success(), "failback failed: {}\n{}", stderr(&out), stdout(&out));
    let text = stdout(&out);
    let report: Value = serde_json::from_str(&text[text.find("{\n").unwrap()..]).unwrap();
    let divergent = report["divergent"].as_array().unwrap();
    for (id, version) in [("diverged", 1), ("shared", 2)] {
        let d = divergent.iter().find(|d| d["contract_id"] == id && d["version"] == version);
        let d = d.unwrap_or_else(|| panic!("{id} v{version} not listed as divergent: {text}"));
        assert_eq!(d["quarantined"], true, "{d}");
        assert_eq!(d["origin"], "a", "{d}");
    }
    assert_eq!(divergent.len(), 2, "{text}");
    // Only a's shards go back to a, not b's, which the DR activation moved too.
    let back = report["return_shards"].as_array().unwrap();
    assert_eq!(back.len(), 1, "{back:?}");
    assert!(back[0].as_str().unwrap().starts_with("tandem switchover --from c --to a --shards 0-31 "), "{back:?}");
    // a's controller joins as a learner: with c, two voters, and losing
    // either would stop every commit.
    c.wait_status("a's controller a learner of generation 2, a active", &["c", "a"], |s| {
        s["nodes"]["a"]["role"] == "learner" && s["cluster"]["sites"]["a"]["role"] == "active" && s["cluster"]["generation"] == 2
    });
    // a's own controller holds the whole state (sent as a snapshot: the DR
    // reset's state is in no log entry).
    c.wait_status("a's own controller knowing every shard of generation 2", &["a"], |s| {
        s["cluster"]["generation"] == 2 && s["shard_counts"]["c"] == SHARDS && s["cluster"]["sites"]["a"]["role"] == "active"
    });
    // Quarantined: not served; A serves C's version of the contract.
    assert_eq!(read_at(&c, dir.path(), &tenant, "a", "shared"), b"shared v2 at c");
    assert!(!list_ids(&c, "a", &tenant).contains("diverged"), "a quarantined write is still served");
    assert_eq!(read_at(&c, dir.path(), &tenant, "a", "after"), b"written at c after the disaster");
    // ...but kept, ciphertext included.
    let quarantine = c.data_dir("a").join("replicator").join("blobs").join("quarantine");
    let kept_blobs = walk(&quarantine);
    assert_eq!(kept_blobs, 2, "both divergent files are kept under {}", quarantine.display());

    // a is lost again before any shard returns to it: c, still the only
    // voter, goes on committing and taking writes.
    c.kill_site("a");
    let again = deed("written at c while a is lost again");
    c.wait_for("c taking writes with a lost again", || {
        let put = c.contract("c", &["put", "--json", "--tenant", &tenant, "--id", "meanwhile", "--file", &again]);
        put.status.success().then_some(())
    });
    let out = c.tandem(&["c"], &["pause", "--reason", "c commits alone", "--yes"]);
    assert!(out.status.success(), "c could not commit with a lost: {}", stderr(&out));
    let out = c.tandem(&["c"], &["resume", "--reason", "c commits alone", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    c.start("a");
    c.start_replicator("a");
    c.wait_status("a back, a learner again", &["c", "a"], |s| s["nodes"]["a"]["role"] == "learner");

    let out = c.tandem(&["c"], &["switchover", "--from", "c", "--to", "a", "--shards", "0-31", "--reason", "failback of a", "--yes"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), stdout(&out));
    let back = put_at(&c, &tenant, "a", "back-home", &deed("written at a after failback"));
    assert_eq!(back["contract"]["origin"], "a");
    assert_eq!(back["contract"]["epoch"], 3);
    // A's log flows to C past the entries it quarantined.
    c.wait_for("c receiving a's new write", || list_ids(&c, "c", &tenant).contains("back-home").then_some(()));
    assert_eq!(read_at(&c, dir.path(), &tenant, "c", "back-home"), b"written at a after failback");
    assert!(!list_ids(&c, "c", &tenant).contains("diverged"));

    // B's replicator returns with its old data: it had applied A's
    // divergent writes (sync pair), and quarantines its copies too.
    c.start_replicator("b");
    c.wait_for("b quarantining its copies of a's divergent writes", || {
        let d = try_divergent_at(&c, "b").ok()?;
        (d.iter().filter(|d| d.quarantined && d.origin == "a").count() == 2).then_some(())
    });
    assert!(!list_ids(&c, "b", &tenant).contains("diverged"), "b still serves a quarantined write");
    let entries = audit(&c, &["c", "a"]);
    assert!(entries.iter().any(|e| e["what"].as_str().unwrap().starts_with("site a joined generation 2 as a Raft learner")), "the join is audited");
}

fn put_at(c: &Cluster, tenant: &str, site: &str, id: &str, file: &str) -> Value {
    let out = c.contract(site, &["put", "--json", "--tenant", tenant, "--id", id, "--file", file]);
    assert!(out.status.success(), "put {id} at {site}: {}", stderr(&out));
    serde_json::from_slice::<Value>(&out.stdout).unwrap()
}

fn read_at(c: &Cluster, dir: &std::path::Path, tenant: &str, site: &str, id: &str) -> Vec<u8> {
    let out = dir.join(format!("read-{site}-{id}"));
    let got = c.contract(site, &["get", "--tenant", tenant, "--id", id, "--out", &out.display().to_string()]);
    assert!(got.status.success(), "get {id} at {site}: {}", stderr(&got));
    std::fs::read(out.join("deed.pdf")).unwrap()
}

/// Number of files under `dir`.
fn walk(dir: &std::path::Path) -> usize {
    let Ok(read) = std::fs::read_dir(dir) else { return 0 };
    read.filter_map(|e| e.ok()).map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum()
}
