//! End-to-end tests of the data plane with real processes: a controller
//! and a replicator per site on loopback (harness in `common/`), driven
//! through `tandem contract` and `tandem verify`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// Every metric the alert rules and the dashboard in deploy/ use is one
/// the daemons export, and every runbook an alert names exists: renaming a
/// metric or a runbook cannot silently disable an alert.
fn deploy_names_only_exported_metrics(scrapes: &[&str]) {
    let exported: std::collections::BTreeSet<&str> =
        scrapes.iter().flat_map(|s| s.lines()).filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in ["deploy/prometheus/tandem-alerts.yml", "deploy/grafana/tandem-dashboard.json"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let used: std::collections::BTreeSet<&str> = text
            .match_indices("tandem_")
            .map(|(i, _)| {
                let rest = &text[i..];
                &rest[..rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len())]
            })
            .collect();
        assert!(!used.is_empty(), "{file} uses no tandem metric");
        // A histogram's series carry its family's name with a suffix.
        let family = |name: &str| ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name).to_string();
        let unknown: Vec<_> = used.iter().filter(|u| !exported.contains(*u) && !exported.contains(family(u).as_str())).collect();
        assert!(unknown.is_empty(), "{file} uses metrics no daemon exports: {unknown:?}");
        for line in text.lines().filter_map(|l| l.trim().strip_prefix("runbook: ")) {
            assert!(root.join(line).is_file(), "{file} names a runbook that does not exist: {line}");
        }
    }
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p);
                }
            }
        }
    }
    hits
}

fn blob_file(c: &Cluster, site: &str, tenant: &str, id: &str, index: usize) -> PathBuf {
    c.data_dir(site).join("replicator/blobs").join(tandem_replicator::model::blob_path(tenant, id, 1, index))
}

// Contracts put at A and at B (each for a shard it owns, and one sent to
// the wrong site and forwarded) are readable with identical content and
// PII at all three sites, and no file, log or database on disk holds a
// plaintext file body or PII value.
#[test]
fn contracts_replicate_to_every_site_encrypted() {
    let mut c = Cluster::new();
    let status = c.start_all();
    let ta = tenant_owned_by(&status, "a", "acme");
    let tb = tenant_owned_by(&status, "b", "bolt");
    let input = tempfile::tempdir().unwrap();
    let marker = "PLAINTEXT-MARKER-6d1f0c";
    let small = write(input.path(), "small.txt", &body(marker, 2000));
    let big = write(input.path(), "big.bin", &body(marker, 2 * 1024 * 1024 + 12345));
    let empty = write(input.path(), "empty.txt", b"");
    let (id_card, phone) = ("110101199003074477", "13912345678");
    let pii = ["--pii", &format!("id_card={id_card}"), "--pii", &format!("phone={phone}"), "--field", "title=apartment lease"].map(String::from);
    let pii: Vec<&str> = pii.iter().map(String::as_str).collect();

    let r = put(&c, "a", &ta, "c1", &[&small, &big, &empty], &pii);
    assert_eq!(r["contract"]["origin"], "a");
    assert!(r["replication"].as_str().unwrap().starts_with("sync"), "{r}");
    let r = put(&c, "b", &tb, "c2", &[&big], &pii);
    assert_eq!(r["contract"]["origin"], "b");
    // Sent to A, owned by B: forwarded to B.
    let r = put(&c, "a", &tb, "c3", &[&small], &[]);
    assert_eq!(r["contract"]["origin"], "b", "a put for B's shard must land at B");

    let output = tempfile::tempdir().unwrap();
    for site in SITES {
        for (tenant, id, files) in [(&ta, "c1", vec![&small, &big, &empty]), (&tb, "c2", vec![&big]), (&tb, "c3", vec![&small])] {
            let out = output.path().join(site).join(id);
            let info = wait_readable(&c, site, tenant, id, &out);
            assert_eq!(info["files"].as_array().unwrap().len(), files.len());
            for f in files {
                let name = f.file_name().unwrap();
                assert_eq!(std::fs::read(out.join(name)).unwrap(), std::fs::read(f).unwrap(), "{id}/{name:?} at {site}");
            }
            if id != "c3" {
                assert_eq!(info["pii_fields"]["id_card"], id_card, "at {site}");
                assert_eq!(info["pii_fields"]["phone"], phone, "at {site}");
                assert_eq!(info["fields"]["title"], "apartment lease");
            }
        }
    }
    // Without --show-pii the CLI masks PII.
    let masked = ok(&c.contract("c", &["get", "--tenant", &ta, "--id", "c1"]));
    assert!(!masked.contains(phone) && masked.contains("phone = ********"), "{masked}");

    verify(&c, &["--deep"]).unwrap_or_else(|r| panic!("sites differ after replication: {r}"));

    // Everything the cluster wrote (databases, blobs, logs) is in c.dir;
    // the inputs and the read-back copies are elsewhere.
    for needle in [marker, id_card, phone] {
        let hits = files_containing(c.dir.path(), needle.as_bytes());
        assert!(hits.is_empty(), "plaintext {needle:?} found on disk in {hits:?}");
    }
}

// kill -9 of B's replicator while A writes in sync mode: every write is
// still acknowledged (after the pair is recorded async through the
// controller), B has every acknowledged contract after it restarts, and
// the pair returns to sync.
#[test]
fn sync_writes_survive_peer_kill_and_pair_returns_to_sync() {
    let mut c = Cluster::new();
    let status = c.start_all();
    assert_eq!(status["cluster"]["pairs"][0]["mode"], "sync");
    let state_id_before = status["cluster"]["pairs"][0]["state_id"].as_u64().unwrap();
    let tenant = tenant_owned_by(&status, "a", "writer");
    let input = tempfile::tempdir().unwrap();
    let file = write(input.path(), "contract.pdf", &body("signed", 200 * 1024));

    let pair_sync = |c: &Cluster| c.scrape("a").and_then(|m| metric(&m, "tandem_pair_sync{pair=\"a-b\"}"));
    assert_eq!(pair_sync(&c), Some(1.0), "controller metrics: the pair in sync");
    let writer = Writer::start(&c.replicator_addrs["a"], &tenant, &file);
    writer.wait_acks(&c, 3);
    // In sync, a streams each file to b as a staged copy while it stores
    // it: those bytes count as sent to b like shipped ones.
    let sent_to_b = metric(&c.scrape("a-replicator").unwrap(), "tandem_replication_sent_bytes_total{peer=\"b\"}").unwrap();
    assert!(sent_to_b >= (3 * 200 * 1024) as f64, "staged bytes not counted as sent: {sent_to_b}");
    // A put sent to b, which does not own the tenant, is redirected to a
    // and stored there: b counts a redirect, not a refusal.
    let out = c.contract("b", &["put", "--tenant", &tenant, "--id", "via-b", "--file", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let at_b = c.scrape("b-replicator").unwrap();
    assert!(metric(&at_b, "tandem_requests_total{call=\"put\",outcome=\"redirected\"}").unwrap_or(0.0) >= 1.0, "{at_b}");
    assert_eq!(metric(&at_b, "tandem_requests_total{call=\"put\",outcome=\"not_owner\"}"), None, "{at_b}");
    c.kill_replicator("b");
    let at_kill = writer.acked().len();
    writer.wait_acks(&c, at_kill + 5);
    let (acked, failed) = writer.stop();
    assert!(failed.is_empty(), "writes failed while the peer was down: {failed:?}");
    assert!(acked.iter().any(|a| a.replication.starts_with("async")), "no write was acknowledged async: {acked:?}");

    let status = c.status(&SITES).unwrap();
    let pair = &status["cluster"]["pairs"][0];
    assert_eq!(pair["mode"], "async", "{pair}");
    // a's heartbeat reports the backlog towards b.
    let lag_to_b = c.wait_for("a reporting its lag towards b", || {
        let s = c.status(&SITES)?;
        let a = s["replicators"].as_array()?.iter().find(|r| r["site"] == "a")?.clone();
        let link = a["links"].as_array()?.iter().find(|l| l["peer"] == "b")?.clone();
        (link["entries"].as_u64()? >= 5).then_some(link)
    });
    assert!(lag_to_b["bytes"].as_u64().unwrap() >= 5 * 200 * 1024, "{lag_to_b}");
    // The same, scraped from the daemons' /metrics as Prometheus would.
    let scraped = c.wait_for("a's replicator exporting its lag towards b and the async mode", || {
        let m = c.scrape("a-replicator")?;
        let lag = metric(&m, "tandem_replication_lag_entries{peer=\"b\"}")?;
        (lag >= 5.0 && metric(&m, "tandem_pair_mode{pair=\"a-b\",mode=\"async\"}")? == 1.0).then_some(m)
    });
    assert!(metric(&scraped, "tandem_replication_lag_bytes{peer=\"b\"}").unwrap() >= (5 * 200 * 1024) as f64, "{scraped}");
    assert_eq!(metric(&scraped, "tandem_pair_mode{pair=\"a-b\",mode=\"sync\"}"), Some(0.0), "{scraped}");
    assert!(metric(&scraped, "tandem_requests_total{call=\"put\",outcome=\"ok\"}").unwrap() >= 5.0, "{scraped}");
    assert_eq!(pair_sync(&c), Some(0.0), "controller metrics: the pair left sync");
    // Every controller hears a's heartbeats on its own (every 250 ms): c's
    // may be one behind the one that answered the status above.
    let ctl = c.wait_for("c's controller exporting a's lag towards b", || {
        let ctl = c.scrape("c")?;
        (metric(&ctl, "tandem_replication_lag_entries{from=\"a\",to=\"b\"}")? >= 5.0).then_some(ctl)
    });
    // What a failover a -> b would lose now: a's backlog towards b.
    assert!(metric(&ctl, "tandem_rpo_exposure_entries{from=\"a\",to=\"b\"}").unwrap() >= 5.0, "{ctl}");
    assert_eq!(metric(&ctl, "tandem_audit_chain_ok"), Some(1.0), "{ctl}");
    deploy_names_only_exported_metrics(&[&ctl, &scraped]);
    assert!(pair["state_id"].as_u64().unwrap() > state_id_before, "the mode change must be a new Raft-recorded state: {pair}");

    c.start_replicator("b");
    c.wait_status("the pair back in sync", &SITES, |s| s["cluster"]["pairs"][0]["mode"] == "sync");
    c.wait_for("controller metrics: the pair back in sync", || (pair_sync(&c)? == 1.0).then_some(()));
    // The background comparison with each caught-up peer is exported, and
    // finds nothing once b has caught up.
    c.wait_for("a's replicator exporting its comparison with b", || {
        (metric(&c.scrape("a-replicator")?, "tandem_verify_shards_differing{peer=\"b\"}")? == 0.0).then_some(())
    });
    let at_b = list_ids(&c, "b", &tenant);
    let missing: Vec<&String> = acked.iter().map(|a| &a.id).filter(|id| !at_b.contains(*id)).collect();
    assert!(missing.is_empty(), "acknowledged contracts missing at b after catch-up: {missing:?}");
    let out = tempfile::tempdir().unwrap();
    let last = &acked.last().unwrap().id;
    get(&c, "b", &tenant, last, out.path()).unwrap();
    assert_eq!(std::fs::read(out.path().join("contract.pdf")).unwrap(), std::fs::read(&file).unwrap());
    // Back in sync: a new write is confirmed by b before it is acknowledged.
    let r = put(&c, "a", &tenant, "after", &[&file], &[]);
    assert!(r["replication"].as_str().unwrap().starts_with("sync"), "{r}");
}

// The DR site is stopped and started: it resumes from its durable cursor
// (the shippers start from where it stands, not from the beginning), gets
// everything written and destroyed meanwhile, and verify reports no
// difference.
#[test]
fn dr_site_resumes_from_its_cursor_and_converges() {
    let mut c = Cluster::new();
    let status = c.start_all();
    let ta = tenant_owned_by(&status, "a", "dr-a");
    let tb = tenant_owned_by(&status, "b", "dr-b");
    let input = tempfile::tempdir().unwrap();
    let file = write(input.path(), "doc.pdf", &body("dr", 300 * 1024));
    put(&c, "a", &ta, "before", &[&file], &[]);
    put(&c, "b", &tb, "before", &[&file], &[]);
    put(&c, "a", &ta, "doomed", &[&file], &[]);
    c.wait_for("c caught up before the cut", || verify(&c, &[]).ok());

    c.kill_replicator("c");
    for i in 0..4 {
        put(&c, "a", &ta, &format!("during-{i}"), &[&file], &[]);
        put(&c, "b", &tb, &format!("during-{i}"), &[&file], &[]);
    }
    ok(&c.contract("a", &["destroy", "--tenant", &ta, "--id", "doomed", "--reason", "erasure request 42", "--yes"]));
    // With c down, verify cannot vouch for it: it fails and names it.
    let out = c.tandem(&SITES, &["verify"]);
    assert!(!out.status.success() && stderr(&out).contains("site c"), "{}", stderr(&out));

    let before_restart = c.log("a-replicator").len();
    c.start_replicator("c");
    c.wait_for("c converged after restart", || verify(&c, &["--deep"]).ok());
    // A's shipper to c resumed from c's durable cursor (3 entries: two puts
    // and the doomed one), not from the start of the log.
    let resumed = c.log("a-replicator")[before_restart..].to_string();
    assert!(
        resumed.lines().any(|l| l.contains("replication link up") && l.contains("peer=c") && l.contains("cursor=2")),
        "a did not resume shipping to c from its cursor:\n{resumed}"
    );
    let out = tempfile::tempdir().unwrap();
    for i in 0..4 {
        get(&c, "c", &ta, &format!("during-{i}"), out.path()).unwrap();
        get(&c, "c", &tb, &format!("during-{i}"), out.path()).unwrap();
    }
    let err = get(&c, "c", &ta, "doomed", out.path()).unwrap_err();
    assert!(err.contains("destroyed"), "{err}");
}

// A put for a shard this site does not own, without forwarding, is refused
// with the owner's site, address and epoch; an entry carrying an epoch
// older than the receiver knows is refused and changes nothing.
#[test]
fn wrong_owner_and_stale_epoch_are_refused() {
    let mut c = Cluster::new();
    let status = c.start_all();
    let ta = tenant_owned_by(&status, "a", "fence");
    let input = tempfile::tempdir().unwrap();
    let file = write(input.path(), "x.pdf", b"contract body");

    let out = c.contract("b", &["put", "--here", "--tenant", &ta, "--id", "x", "--file", &file.display().to_string()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("owned by site a (epoch 1)") && err.contains(&c.replicator_addrs["a"]),
        "the refusal must name the owner, its epoch and address: {err}"
    );
    assert!(list_ids(&c, "b", &ta).is_empty() && list_ids(&c, "a", &ta).is_empty(), "a refused put stored something");

    put(&c, "a", &ta, "kept", &[&file], &[]);
    c.wait_for("b has the first contract", || list_ids(&c, "b", &ta).contains("kept").then_some(()));

    // Forge the next entry of a's log with epoch 0 and send it to b.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let b = c.replicator_addrs["b"].clone();
    let shard = tandem_controller::state::shard_of(&ta, SHARDS);
    let (refusal, cursor_before, cursor_after) = rt.block_on(async {
        use tandem_proto::replicator as pb;
        let channel = tandem_net::Transport::Tokio.channel(&b).unwrap();
        let mut client = pb::replication_client::ReplicationClient::new(channel.clone());
        let req = || pb::CursorRequest { origin: "a".into() };
        let before = client.cursor(req()).await.unwrap().into_inner().applied_seq;
        let entry = serde_json::json!({
            "origin": "a", "seq": before + 1, "cum_bytes": 0, "at_unix_ms": 0, "shard": shard, "epoch": 0,
            "change": {"Put": {
                "tenant": ta, "contract_id": "forged", "version": 1, "shard": shard, "epoch": 0, "origin": "a",
                "created_unix_ms": 0, "fields": {}, "pii": {}, "pii_key": null, "files": []
            }}
        });
        let chunk = pb::ApplyChunk { part: Some(pb::apply_chunk::Part::EntryJson(serde_json::to_vec(&entry).unwrap().into())) };
        let apply = tandem_replicator::bulk::call::<_, pb::ApplyReply>(channel.clone(), tandem_replicator::bulk::APPLY, futures::stream::iter(vec![chunk]));
        let refusal = apply.await.unwrap_err();
        // Stepping over a current entry (one its origin did not quarantine)
        // is refused too: only stale entries can be skipped.
        let skip = pb::SkipRequest { origin: "a".into(), seq: before + 1, shard, epoch: 1, lost_through: 0, destroyed_since: false };
        let skip_refusal = client.skip(skip).await.unwrap_err();
        assert!(skip_refusal.message().contains("cannot be skipped"), "{}", skip_refusal.message());
        let after = client.cursor(req()).await.unwrap().into_inner().applied_seq;
        (refusal, before, after)
    });
    let code = refusal.metadata().get(tandem_proto::ERROR_CODE_METADATA).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(code.as_deref(), Some(tandem_proto::error_code::STALE_EPOCH), "{refusal:?}");
    assert!(refusal.message().contains("epoch 0") && refusal.message().contains("epoch 1"), "{}", refusal.message());
    assert_eq!(cursor_before, cursor_after, "a refused entry moved the cursor");
    assert!(!list_ids(&c, "b", &ta).contains("forged"));

    // Replication from the real owner is unaffected.
    put(&c, "a", &ta, "next", &[&file], &[]);
    c.wait_for("b has the next contract", || list_ids(&c, "b", &ta).contains("next").then_some(()));
}

// Damaged ciphertext at a replica: a flipped byte, a truncated file, two
// segments swapped, and one contract's file swapped for another's. Each
// read fails with a clear error and writes no file; the owner's copies are
// untouched; `verify --deep` names every damaged file and `--repair`
// restores them from a sound copy.
#[test]
fn damaged_ciphertext_is_detected_and_repaired() {
    let mut c = Cluster::new();
    let status = c.start_all();
    let ta = tenant_owned_by(&status, "a", "dmg");
    let input = tempfile::tempdir().unwrap();
    // Three 1 MiB segments and a short last one.
    let file = write(input.path(), "deed.pdf", &body("deed", 3 * 1024 * 1024 + 100));
    let ids = ["flipped", "truncated", "swapped-segments", "swapped-files", "donor"];
    for id in ids {
        put(&c, "a", &ta, id, &[&file], &[]);
    }
    c.wait_for("every site has every contract", || verify(&c, &[]).ok());

    // Damage b's and c's copies (the replicators keep running).
    let flip = blob_file(&c, "c", &ta, "flipped", 0);
    let mut bytes = std::fs::read(&flip).unwrap();
    bytes[1024 * 1024 + 500] ^= 0x01;
    std::fs::write(&flip, bytes).unwrap();

    let trunc = blob_file(&c, "b", &ta, "truncated", 0);
    let bytes = std::fs::read(&trunc).unwrap();
    std::fs::write(&trunc, &bytes[..bytes.len() - 200]).unwrap();

    let swap = blob_file(&c, "c", &ta, "swapped-segments", 0);
    let bytes = std::fs::read(&swap).unwrap();
    let frames = frames(&bytes);
    assert!(frames.len() >= 3);
    let (s0, s1) = (frames[0].clone(), frames[1].clone());
    assert_eq!(s0.len(), s1.len());
    let mut swapped = bytes.clone();
    swapped[s0.clone()].copy_from_slice(&bytes[s1.clone()]);
    swapped[s1].copy_from_slice(&bytes[s0]);
    std::fs::write(&swap, swapped).unwrap();

    std::fs::copy(blob_file(&c, "b", &ta, "donor", 0), blob_file(&c, "b", &ta, "swapped-files", 0)).unwrap();

    let out = tempfile::tempdir().unwrap();
    for (site, id) in [("c", "flipped"), ("b", "truncated"), ("c", "swapped-segments"), ("b", "swapped-files")] {
        let dir = out.path().join(format!("{site}-{id}"));
        let err = get(&c, site, &ta, id, &dir).unwrap_err();
        assert!(err.contains("integrity check failed"), "{id} at {site}: {err}");
        let left: Vec<_> = std::fs::read_dir(&dir).map(|d| d.collect()).unwrap_or_default();
        assert!(left.is_empty(), "a failed read left files behind: {left:?}");
        // The owner's copy is intact.
        let good = out.path().join(format!("a-{id}"));
        get(&c, "a", &ta, id, &good).unwrap();
        assert_eq!(std::fs::read(good.join("deed.pdf")).unwrap(), std::fs::read(&file).unwrap());
    }

    let report = verify(&c, &["--deep"]).unwrap_err();
    let found: BTreeSet<(String, String)> = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["kind"], "corrupt", "{d}");
            (d["site"].as_str().unwrap().to_string(), d["contract_id"].as_str().unwrap().to_string())
        })
        .collect();
    let expected: BTreeSet<(String, String)> =
        [("c", "flipped"), ("b", "truncated"), ("c", "swapped-segments"), ("b", "swapped-files")].iter().map(|(s, i)| (s.to_string(), i.to_string())).collect();
    assert_eq!(found, expected, "{report}");

    let out2 = c.tandem(&SITES, &["verify", "--deep", "--repair", "--json"]);
    assert!(out2.status.success(), "repair failed: {}\n{}", stdout(&out2), stderr(&out2));
    verify(&c, &["--deep"]).unwrap_or_else(|r| panic!("still damaged after repair: {r}"));
    for (site, id) in [("c", "flipped"), ("b", "truncated"), ("c", "swapped-segments"), ("b", "swapped-files")] {
        let dir = out.path().join(format!("repaired-{site}-{id}"));
        get(&c, site, &ta, id, &dir).unwrap();
        assert_eq!(std::fs::read(dir.join("deed.pdf")).unwrap(), std::fs::read(&file).unwrap());
    }
}

/// Byte ranges of the segments of a stored ciphertext file.
fn frames(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut at = tandem_crypto::HEADER_LEN;
    let mut out = Vec::new();
    while at < bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        out.push(at..at + 8 + len);
        at += 8 + len;
    }
    out
}

// A replicator started with the wrong key-encryption key file cannot read
// (clear error, no plaintext), still stores what is replicated to it, and
// reads everything once the right key file is back.
#[test]
fn wrong_key_file_fails_clearly_and_loses_nothing() {
    let mut c = Cluster::new();
    let status = c.start_all();
    let ta = tenant_owned_by(&status, "a", "keys");
    let input = tempfile::tempdir().unwrap();
    let file = write(input.path(), "k.pdf", &body("key", 10_000));
    put(&c, "a", &ta, "k1", &[&file], &["--pii", "phone=13700000000"]);
    c.wait_for("c has k1", || verify(&c, &[]).ok());

    c.kill_replicator("c");
    let other = c.dir.path().join("other.key");
    ok(&c.tandem(&SITES, &["keys", "create", "--kek-id", "some-other-kek", "--file", &other.display().to_string()]));
    std::fs::write(c.replicator_config_path("c"), c.replicator_config("c", &other, "")).unwrap();
    c.start_replicator("c");
    c.wait_status("c's replicator reporting again", &SITES, heartbeats_fresh);

    let out = tempfile::tempdir().unwrap();
    let err = c.wait_for("c ready to serve reads", || {
        // Until it listens and has a controller view, c answers nothing useful.
        get(&c, "c", &ta, "k1", &out.path().join("wrong")).err().filter(|e| !e.contains("not ready") && !e.contains("did not answer"))
    });
    assert!(err.contains("cannot decrypt") && err.contains("test-kek-1") && err.contains("some-other-kek"), "{err}");
    assert!(!err.contains("13700000000"));
    put(&c, "a", &ta, "k2", &[&file], &[]);
    c.wait_for("c stores k2 without decrypting it", || list_ids(&c, "c", &ta).contains("k2").then_some(()));

    c.kill_replicator("c");
    std::fs::write(c.replicator_config_path("c"), c.replicator_config("c", &c.dir.path().join("kek.key"), "")).unwrap();
    c.start_replicator("c");
    for id in ["k1", "k2"] {
        let dir = out.path().join(id);
        let info = wait_readable(&c, "c", &ta, id, &dir);
        assert_eq!(std::fs::read(dir.join("k.pdf")).unwrap(), std::fs::read(&file).unwrap());
        if id == "k1" {
            assert_eq!(info["pii_fields"]["phone"], "13700000000");
        }
    }
}

// A bad replicator config line is reported with file, line and field, and
// the daemon does not start.
#[test]
fn malformed_replicator_config_names_file_line_and_field() {
    let c = Cluster::new();
    let text = std::fs::read_to_string(c.replicator_config_path("a")).unwrap().replace("sync_timeout_ms = 1000", "sync_timeout_ms = \"soon\"");
    let bad = c.dir.path().join("bad-replicator.toml");
    std::fs::write(&bad, text).unwrap();
    let out = run_bounded(std::process::Command::new(TANDEM).arg("replicator").arg("--config").arg(&bad));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("bad-replicator.toml:5:") && err.contains("sync_timeout_ms"), "{err}");
}

// The owner's own copy is damaged before the DR site received it: the DR
// site checks every segment's crc32 on arrival and refuses the entry (its
// cursor stays put, nothing is stored); `verify --deep --repair` restores
// the owner's copy from the in-city peer, and the DR site then converges.
#[test]
fn receiver_refuses_corrupt_entry_until_the_source_is_repaired() {
    let mut c = Cluster::new();
    let status = c.start_all();
    let ta = tenant_owned_by(&status, "a", "src");
    let input = tempfile::tempdir().unwrap();
    let file = write(input.path(), "deed.pdf", &body("src", 2 * 1024 * 1024 + 7));
    c.kill_replicator("c");
    let r = put(&c, "a", &ta, "x", &[&file], &[]);
    assert!(r["replication"].as_str().unwrap().starts_with("sync"), "b must hold a sound copy: {r}");

    let blob = blob_file(&c, "a", &ta, "x", 0);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[700_000] ^= 0x80;
    std::fs::write(&blob, bytes).unwrap();

    let before = c.log("c-replicator").len();
    c.start_replicator("c");
    c.wait_for("c refusing the corrupt entry", || {
        c.log("c-replicator")[before..].lines().any(|l| l.contains("replication entry refused") && l.contains("crc mismatch")).then_some(())
    });
    assert!(!list_ids(&c, "c", &ta).contains("x"), "a corrupt entry was stored");

    let out = c.tandem(&SITES, &["verify", "--deep", "--repair", "--json"]);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(report["differences"].as_array().unwrap().iter().any(|d| d["site"] == "a" && d["kind"] == "corrupt"), "{report}");
    c.wait_for("all sites converge after the repair", || verify(&c, &["--deep"]).ok());
    let got = tempfile::tempdir().unwrap();
    get(&c, "c", &ta, "x", got.path()).unwrap();
    assert_eq!(std::fs::read(got.path().join("deed.pdf")).unwrap(), std::fs::read(&file).unwrap());
}

// The owner's copy of one contract's file is replaced by another
// contract's file of the same length (every crc32 intact) before the DR
// site received it: the DR site checks the data key named in the file's
// header against the entry and refuses it, storing nothing.
#[test]
fn receiver_refuses_a_file_swapped_at_the_source() {
    let mut c = Cluster::new();
    let status = c.start_all();
    let ta = tenant_owned_by(&status, "a", "swp");
    let input = tempfile::tempdir().unwrap();
    let file = write(input.path(), "deed.pdf", &body("swp", 1024 * 1024 + 99));
    c.kill_replicator("c");
    put(&c, "a", &ta, "donor", &[&file], &[]);
    put(&c, "a", &ta, "victim", &[&file], &[]);
    std::fs::copy(blob_file(&c, "a", &ta, "donor", 0), blob_file(&c, "a", &ta, "victim", 0)).unwrap();

    let before = c.log("c-replicator").len();
    c.start_replicator("c");
    c.wait_for("c refusing the swapped file", || {
        c.log("c-replicator")[before..].lines().any(|l| l.contains("replication entry refused") && l.contains("data key")).then_some(())
    });
    let ids = list_ids(&c, "c", &ta);
    assert!(ids.contains("donor") && !ids.contains("victim"), "{ids:?}");
}

/// A valid ciphertext file (framing, crc32 of every segment) of `len`
/// plaintext bytes, and its data key id.
fn ciphertext(len: usize) -> (Vec<u8>, [u8; tandem_crypto::KEY_ID_LEN]) {
    use tandem_crypto::{DataKey, Encryptor, FileContext, SystemRandomSource, DEFAULT_SEGMENT_SIZE};
    let key = DataKey::generate(&SystemRandomSource).unwrap();
    let ctx = FileContext { tenant: "t".into(), contract_id: "x".into(), version: 1, file_name: "f".into() };
    let mut enc = Encryptor::new(&key, &ctx, DEFAULT_SEGMENT_SIZE, &SystemRandomSource).unwrap();
    let mut out = Vec::new();
    enc.push(&body("staged", len), &mut out).unwrap();
    enc.finish(&mut out).unwrap();
    (out, key.id())
}

/// Streams a staged copy to the replicator at `addr`: a start message,
/// `data` in 1 MiB chunks, then an end marker declaring `end_len` (none:
/// the stream is cut before its end marker).
async fn stage(addr: &str, shard: u32, epoch: u64, blob: &str, data: &[u8], end_len: Option<u64>) -> Result<String, tonic::Status> {
    use tandem_proto::replicator::{stage_chunk::Part, StageChunk, StageEnd, StageStart};
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let start = StageStart { origin: "c".into(), shard, epoch, blob: blob.into() };
    let chunks: Vec<Vec<u8>> = data.chunks(1 << 20).map(|c| c.to_vec()).collect();
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let call = tokio::spawn(async move {
        use tandem_replicator::bulk;
        bulk::call::<_, tandem_proto::replicator::StageReply>(channel, bulk::STAGE, stream).await.map(|r| r.staged_id)
    });
    // A send fails once the receiver has refused (its answer ends the call).
    let mut sent = tx.send(StageChunk { part: Some(Part::Start(start)) }).await.is_ok();
    for c in chunks {
        sent = sent && tx.send(StageChunk { part: Some(Part::Data(c.into())) }).await.is_ok();
    }
    match end_len {
        Some(len) => {
            let _ = sent && tx.send(StageChunk { part: Some(Part::End(StageEnd { len, blake3: "ab".repeat(32) })) }).await.is_ok();
            drop(tx);
            call.await.unwrap()
        }
        None => {
            // Cut mid-stream, as a failed put abandons its upload: the call
            // is dropped and its body ends without the end marker.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            call.abort();
            drop(tx);
            Err(tonic::Status::cancelled("cut by the test"))
        }
    }
}

/// An Apply of entry 1 of c's log whose one file refers to the staged copy `id`.
async fn apply_staged(addr: &str, tenant: &str, shard: u32, len: u64, key_id: [u8; tandem_crypto::KEY_ID_LEN], id: &str) -> Result<u64, tonic::Status> {
    use tandem_proto::replicator::{apply_chunk::Part, ApplyChunk, FileStart};
    use tandem_replicator::model::{blob_path, Change, FileRecord, LogEntry, VersionRecord};
    let file = FileRecord {
        name: "f".into(),
        blob: blob_path(tenant, "staged-x", 1, 0),
        size: 3 << 20,
        ciphertext_len: len,
        ciphertext_blake3: "cd".repeat(32),
        key: Some(tandem_crypto::WrappedKey { kek_id: "test-kek-1".into(), key_id, bytes: vec![1; 40] }),
    };
    let v = VersionRecord {
        tenant: tenant.into(),
        contract_id: "staged-x".into(),
        version: 1,
        shard,
        epoch: 1_000,
        origin: "c".into(),
        created_unix_ms: 1,
        fields: Default::default(),
        pii: Default::default(),
        pii_key: None,
        files: vec![file],
    };
    let entry = LogEntry { origin: "c".into(), seq: 1, cum_bytes: len, at_unix_ms: 1, shard, epoch: 1_000, change: Change::Put(v) };
    let chunks = vec![
        ApplyChunk { part: Some(Part::EntryJson(serde_json::to_vec(&entry).unwrap().into())) },
        ApplyChunk { part: Some(Part::File(FileStart { name: "f".into(), staged_id: id.into() })) },
    ];
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let apply =
        tandem_replicator::bulk::call::<_, tandem_proto::replicator::ApplyReply>(channel, tandem_replicator::bulk::APPLY, futures::stream::iter(chunks));
    apply.await.map(|r| r.applied_seq)
}

// Ciphertext streamed ahead of its log entry (how the owner of a sync pair
// ships a file to its peer while storing it) counts for nothing until an
// entry commits it: a stream cut before its end marker, a stale epoch or a
// bad crc32 keeps nothing; a complete staged copy is never served, is
// deleted when no entry claims it within staged_ttl_ms, and an entry can
// only commit a staged copy that is the file it declares.
#[test]
fn staged_copies_count_only_with_their_entry() {
    let mut c = Cluster::new();
    let key = c.dir.path().join("kek.key");
    std::fs::write(c.replicator_config_path("b"), c.replicator_config("b", &key, "staged_ttl_ms = 2000")).unwrap();
    let status = c.start_all();
    let ta = tenant_owned_by(&status, "a", "stg");
    let shard = tandem_controller::state::shard_of(&ta, SHARDS);
    let b = c.replicator_addrs["b"].clone();
    let staging = c.data_dir("b").join("replicator/blobs/.staging");
    let staged_files = || std::fs::read_dir(&staging).unwrap().count();
    let blob = tandem_replicator::model::blob_path(&ta, "staged-x", 1, 0);
    let (data, key_id) = ciphertext(3 << 20);
    let len = data.len() as u64;
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Cut mid-stream: nothing is kept.
    let _ = rt.block_on(stage(&b, shard, 1_000, &blob, &data[..data.len() / 2], None));
    c.wait_for("the cut stream's file gone", || (staged_files() == 0).then_some(()));
    // Stale epoch, damaged segment, wrong length: refused, nothing kept.
    let err = rt.block_on(stage(&b, shard, 0, &blob, &data, Some(len))).unwrap_err();
    assert!(err.message().contains("stale"), "{err:?}");
    let mut bad = data.clone();
    bad[(1 << 20) + 100] ^= 1;
    let err = rt.block_on(stage(&b, shard, 1_000, &blob, &bad, Some(len))).unwrap_err();
    assert!(err.message().contains("crc mismatch"), "{err:?}");
    let err = rt.block_on(stage(&b, shard, 1_000, &blob, &data, Some(len + 1))).unwrap_err();
    assert!(err.message().contains("bytes"), "{err:?}");
    assert_eq!(staged_files(), 0);

    // A complete staged copy is kept, but not served.
    let id = rt.block_on(stage(&b, shard, 1_000, &blob, &data, Some(len))).unwrap();
    assert_eq!(staged_files(), 1);
    assert!(!list_ids(&c, "b", &ta).contains("staged-x"));
    assert!(!c.data_dir("b").join("replicator/blobs").join(&ta).join("staged-x").exists());

    // An entry naming an unknown staged copy, or one that is another file
    // (here: another hash), is refused; the mismatched copy is deleted.
    let err = rt.block_on(apply_staged(&b, &ta, shard, len, key_id, "no-such-id")).unwrap_err();
    assert!(err.message().contains("is not here"), "{err:?}");
    let err = rt.block_on(apply_staged(&b, &ta, shard, len, key_id, &id)).unwrap_err();
    assert!(err.message().contains("is not this file"), "{err:?}");
    assert_eq!(staged_files(), 0);
    assert!(!list_ids(&c, "b", &ta).contains("staged-x"));
    assert!(!c.data_dir("b").join("replicator/blobs").join(&ta).join("staged-x").exists());

    // A staged copy no entry claims is collected after staged_ttl_ms.
    rt.block_on(stage(&b, shard, 1_000, &blob, &data, Some(len))).unwrap();
    assert_eq!(staged_files(), 1);
    c.wait_for("the unclaimed staged copy collected", || (staged_files() == 0).then_some(()));
    assert!(c.log("b-replicator").contains("staged copy never committed"));

    // Meanwhile sync writes (staged at b by a) go through, and b serves them.
    let input = tempfile::tempdir().unwrap();
    let file = write(input.path(), "deed.pdf", &body("stg", 5 * 1024 * 1024 + 3));
    let r = put(&c, "a", &ta, "real", &[&file], &[]);
    assert!(r["replication"].as_str().unwrap().starts_with("sync"), "{r}");
    let out = tempfile::tempdir().unwrap();
    get(&c, "b", &ta, "real", out.path()).unwrap();
    assert_eq!(std::fs::read(out.path().join("deed.pdf")).unwrap(), std::fs::read(&file).unwrap());
    assert_eq!(staged_files(), 0);
}

// A put stream that is malformed or cut short, over the bulk route
// tandem's client uses and over gRPC, is refused with a clear error and
// stores nothing; the same contract then stores normally.
#[test]
fn malformed_or_truncated_put_streams_store_nothing() {
    use tandem_proto::replicator::{put_chunk::Part, FileStart, PutChunk, PutEnd, PutHeader, PutReply};
    use tandem_replicator::bulk;
    let mut c = Cluster::new();
    let status = c.start_all();
    let ta = tenant_owned_by(&status, "a", "bad");
    let a = c.replicator_addrs["a"].clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let header = PutChunk { part: Some(Part::Header(PutHeader { tenant: ta.clone(), contract_id: "cut".into(), ..Default::default() })) };
    let file = PutChunk { part: Some(Part::File(FileStart { name: "f.pdf".into(), ..Default::default() })) };
    let data = PutChunk { part: Some(Part::Data(vec![5u8; 300_000].into())) };
    let channel = || tonic::transport::Endpoint::from_shared(format!("http://{a}")).unwrap().connect_lazy();
    let raw = |bytes: Vec<u8>| {
        let frames = vec![Ok::<_, tonic::Status>(http_body::Frame::data(bytes::Bytes::from(bytes)))];
        tonic::body::Body::new(http_body_util::StreamBody::new(futures::stream::iter(frames)))
    };
    // The frames of a valid beginning, then the body cut inside a data frame.
    let mut cut_inside = rt.block_on(async {
        use http_body_util::BodyExt;
        bulk::body(futures::stream::iter(vec![header.clone(), file.clone(), data.clone()])).collect().await.unwrap().to_bytes().to_vec()
    });
    cut_inside.truncate(cut_inside.len() - 1000);
    // A refusal for want of a lease (the replicator briefly out of touch
    // with the leader on a loaded machine) stores nothing and passes by
    // itself, as for any client: such a call is sent again.
    async fn past_lease<F: std::future::Future<Output = tonic::Result<PutReply>>>(call: impl Fn() -> F) -> tonic::Result<PutReply> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let r = call().await;
            let no_lease = matches!(&r, Err(e) if e.metadata().get(tandem_proto::ERROR_CODE_METADATA).is_some_and(|v| v == tandem_proto::error_code::NO_LEASE));
            if !no_lease || tokio::time::Instant::now() > deadline {
                return r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let cases: Vec<(&str, tonic::Result<PutReply>)> = rt.block_on(async {
        vec![
            (
                "ended before its end marker",
                past_lease(|| bulk::call(channel(), bulk::PUT, futures::stream::iter(vec![header.clone(), file.clone(), data.clone()]))).await,
            ),
            ("ended inside a frame", past_lease(|| bulk::send(channel(), bulk::PUT, raw(cut_inside.clone()))).await),
            ("unknown kind 7", past_lease(|| bulk::send(channel(), bulk::PUT, raw(vec![7, 0, 0, 0, 0]))).await),
            ("exceeds the limit", past_lease(|| bulk::send(channel(), bulk::PUT, raw(vec![1, 0xff, 0xff, 0xff, 0xff, 0]))).await),
            ("must start with its header", past_lease(|| bulk::send(channel(), bulk::PUT, raw(vec![0, 0, 0, 0, 0]))).await),
            ("must start with its header", past_lease(|| bulk::call(channel(), bulk::PUT, futures::stream::iter(vec![file.clone(), data.clone()]))).await),
            (
                "ended before its end marker",
                past_lease(|| async {
                    let mut grpc = tandem_proto::replicator::contracts_client::ContractsClient::new(channel());
                    grpc.put(futures::stream::iter(vec![header.clone(), file.clone(), data.clone()])).await.map(|r| r.into_inner())
                })
                .await,
            ),
        ]
    });
    for (expect, result) in cases {
        let e = result.expect_err(expect);
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{expect}: {e:?}");
        assert!(e.message().contains(expect), "{expect}: {}", e.message());
    }
    assert!(list_ids(&c, "a", &ta).is_empty(), "nothing was stored");
    // A bulk call the replicator does not serve (as between two versions).
    let unknown: tonic::Result<PutReply> = rt.block_on(async { bulk::send(channel(), "/tandem.replicator.v1.Bulk/Nope", raw(vec![])).await });
    let e = unknown.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);
    assert!(e.message().contains("is not served there"), "{}", e.message());
    let whole = vec![header, file, data, PutChunk { part: Some(Part::End(PutEnd { files: 1 })) }];
    let reply: PutReply = rt.block_on(async { bulk::call(channel(), bulk::PUT, futures::stream::iter(whole)).await }).unwrap();
    assert_eq!(reply.contract.unwrap().version, 1, "the first stored version");
    assert_eq!(list_ids(&c, "a", &ta).into_iter().collect::<Vec<_>>(), vec!["cut".to_string()]);
}

// A file larger than the memory bound streams through put, sync and async
// replication and read-back without any replicator holding it in memory.
#[test]
fn large_file_streams_with_bounded_memory() {
    const MIB: usize = 1024 * 1024;
    let mut c = Cluster::new();
    let status = c.start_all();
    let ta = tenant_owned_by(&status, "a", "big");
    let input = tempfile::tempdir().unwrap();
    let path = input.path().join("scan.tiff");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let block = body("big", MIB);
        for i in 0..300u32 {
            let mut b = block.clone();
            b[..4].copy_from_slice(&i.to_be_bytes());
            f.write_all(&b).unwrap();
        }
    }
    let r = put(&c, "a", &ta, "scan", &[&path], &[]);
    assert!(r["replication"].as_str().unwrap().starts_with("sync"), "{r}");
    let out = tempfile::tempdir().unwrap();
    wait_readable(&c, "c", &ta, "scan", out.path());
    assert!(same_bytes(&path, &out.path().join("scan.tiff")), "the copy read back from c differs");
    for site in SITES {
        let rss = c.peak_rss_mib(&format!("{site}-replicator"));
        eprintln!("replicator {site}: peak resident memory {rss} MiB");
        assert!(rss < 100, "replicator {site} peaked at {rss} MiB resident for a 300 MiB file");
    }
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a).unwrap(), std::fs::File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba).unwrap();
        let mut nb = 0;
        while nb < na {
            match fb.read(&mut bb[nb..na]).unwrap() {
                0 => break,
                m => nb += m,
            }
        }
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
    }
}

// After a workload that carries PII (ID-card number and phone as PII
// fields, an ID-card number inside a contract id, a phone number in a
// destroy reason) with the daemons logging at debug, no log line holds an
// ID-card number, a phone number or the key-encryption key; the destroy
// line that named the contract is there, masked; JSON format gives JSON.
#[test]
fn logs_never_show_pii_or_key_material() {
    let mut c = Cluster::new();
    c.env.push(("RUST_LOG".into(), "debug,openraft=info,h2=info,hyper=info,tower=info,hyper_util=info".into()));
    c.env.push(("TANDEM_LOG_FORMAT".into(), "json".into()));
    let status = c.start_all();
    let tenant = tenant_owned_by(&status, "a", "masking");
    let input = tempfile::tempdir().unwrap();
    let file = write(input.path(), "deed.pdf", &body("signed", 4096));
    let (id_card, phone, id_in_contract_id) = ("11010519491231002X", "13812345678", "110101199003074518");
    let contract_id = format!("id-{id_in_contract_id}");
    let pii = [format!("id_card={id_card}"), format!("phone={phone}")];
    put(&c, "a", &tenant, &contract_id, &[&file], &["--pii", &pii[0], "--pii", &pii[1], "--field", "title=lease"]);
    let out = tempfile::tempdir().unwrap();
    let got = wait_readable(&c, "c", &tenant, &contract_id, out.path());
    assert_eq!(got["pii_fields"]["phone"], phone, "the workload really carried the PII: {got}");
    ok(&c.contract("a", &["destroy", "--tenant", &tenant, "--id", &contract_id, "--reason", &format!("customer {phone} asked"), "--who", "dpo", "--yes"]));
    c.wait_for("the destroy logged at a", || c.log("a-replicator").contains("contract destroyed").then_some(()));

    let kek = std::fs::read_to_string(c.dir.path().join("kek.key")).unwrap();
    let kek_hex = kek.lines().find(|l| l.starts_with("tandem-kek-v1")).and_then(|l| l.split(' ').nth(2)).unwrap().to_string();
    let logs = c.logs();
    assert!(logs.lines().count() > 50, "the daemons logged at debug: {} lines", logs.lines().count());
    for (what, secret) in [("ID-card PII field", id_card), ("phone", phone), ("ID-card number in a contract id", id_in_contract_id), ("KEK", &kek_hex)] {
        let leaks: Vec<&str> = logs.lines().filter(|l| l.contains(secret)).take(3).collect();
        assert!(leaks.is_empty(), "the {what} reached the logs: {leaks:?}");
    }
    let destroyed = c.log("a-replicator").lines().find(|l| l.contains("contract destroyed")).unwrap().to_string();
    assert!(destroyed.contains("id-[id masked]"), "the destroy line names the contract, masked: {destroyed}");
    let line: Value = serde_json::from_str(&destroyed).unwrap_or_else(|e| panic!("not a JSON line ({e}): {destroyed}"));
    assert_eq!(line["fields"]["who"], "dpo", "{line}");
}

/// Restarts every replicator with `key_file` as its current KEK and
/// `retired` as retired KEKs, and waits until all report again.
fn restart_replicators_with_keys(c: &mut Cluster, key_file: &Path, retired: &[&Path]) {
    let extra = format!("retired_key_files = [{}]", retired.iter().map(|p| format!("\"{}\"", p.display())).collect::<Vec<_>>().join(", "));
    for s in SITES {
        c.kill_replicator(s);
        std::fs::write(c.replicator_config_path(s), c.replicator_config(s, key_file, &extra)).unwrap();
        c.start_replicator(s);
    }
    let started = c.status(&SITES).unwrap()["now_unix_ms"].as_u64().unwrap();
    c.wait_status("every replicator reporting after the restart", &SITES, |s| {
        heartbeats_fresh(s)
            && s["replicators"]
                .as_array()
                .is_some_and(|r| r.len() == 3 && r.iter().all(|h| h["received_at_unix_ms"].as_u64() > Some(started) && h["view_index"].as_u64() > Some(0)))
    });
}

// Key rotation: with a new current KEK and the old one retired, `tandem
// keys rotate` re-wraps every key at the owners and the re-wrapped keys
// replicate; then, with the old KEK removed from every config, every
// contract (files and PII) still reads back at every site, and no
// ciphertext was rewritten.
#[test]
fn key_rotation_rewraps_every_key_and_contracts_read_back_without_the_old_kek() {
    let mut c = Cluster::new();
    let status = c.start_all();
    let (ta, tb) = (tenant_owned_by(&status, "a", "rot-a"), tenant_owned_by(&status, "b", "rot-b"));
    let input = tempfile::tempdir().unwrap();
    let file = write(input.path(), "deed.pdf", &body("rotation", 300 * 1024));
    let contracts = [(&ta, "r1", "a"), (&ta, "r2", "a"), (&tb, "r3", "b")];
    for (tenant, id, at) in contracts {
        put(&c, at, tenant, id, &[&file], &["--pii", "phone=13700000001"]);
    }
    // A second version under the old KEK too.
    put(&c, "a", &ta, "r1", &[&file], &[]);
    let out = tempfile::tempdir().unwrap();
    for (tenant, id, _) in contracts {
        wait_readable(&c, "c", tenant, id, &out.path().join(format!("before-{id}")));
    }
    let blob = blob_file(&c, "c", &ta, "r2", 0);
    let blob_before = std::fs::read(&blob).unwrap();

    let old_kek = c.dir.path().join("kek.key");
    let new_kek = c.dir.path().join("kek-2.key");
    let o = run_bounded(std::process::Command::new(TANDEM).args(["keys", "create", "--kek-id", "test-kek-2", "--file"]).arg(&new_kek));
    assert!(o.status.success(), "{}", stderr(&o));
    restart_replicators_with_keys(&mut c, &new_kek, &[&old_kek]);

    let dry = c.tandem(&SITES, &["keys", "rotate", "--reason", "yearly rotation", "--who", "sec", "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(stdout(&dry).contains("dry run: nothing changed"), "{}", stdout(&dry));
    let o = c.tandem(&SITES, &["keys", "rotate", "--reason", "yearly rotation", "--who", "sec", "--yes"]);
    assert!(o.status.success(), "rotate failed: {}{}", stdout(&o), stderr(&o));
    // 4 versions, each with a file key and 3 with a PII key.
    assert!(stdout(&o).contains("ok: 7 keys of 4 versions re-wrapped under test-kek-2"), "{}", stdout(&o));
    assert!(String::from_utf8_lossy(&c.tandem(&SITES, &["audit", "--json"]).stdout).contains("key rotation to KEK test-kek-2"));
    let again = c.tandem(&SITES, &["keys", "rotate", "--reason", "again", "--who", "sec", "--yes"]);
    assert!(stdout(&again).contains("ok: 0 keys of 0 versions"), "a second run finds nothing to do: {}", stdout(&again));

    // The old KEK is gone from every site.
    restart_replicators_with_keys(&mut c, &new_kek, &[]);
    for site in SITES {
        for (tenant, id, _) in contracts {
            let dir = out.path().join(format!("{site}-{id}"));
            let info = get(&c, site, tenant, id, &dir).unwrap_or_else(|e| panic!("{tenant}/{id} at {site} after rotation: {e}"));
            assert_eq!(std::fs::read(dir.join("deed.pdf")).unwrap(), std::fs::read(&file).unwrap(), "{id} at {site}");
            if id != "r1" {
                assert_eq!(info["pii_fields"]["phone"], "13700000001", "{id} at {site}: {info}");
            }
        }
    }
    assert_eq!(std::fs::read(&blob).unwrap(), blob_before, "rotation must not rewrite ciphertext");
    verify(&c, &[]).expect("all sites agree after the rotation");
}
