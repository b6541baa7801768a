//! Backups end to end: `tandem backup create` against a running site's
//! replicator (while a client keeps writing), into a directory and into a
//! real S3-compatible server; `backup list`; `backup verify` without keys,
//! which finds a damaged file and a truncated metadata dump.

mod common;

use std::path::Path;
use std::process::Command;

use common::s3::S3Server;
use common::*;
use serde_json::Value;

fn backup(c: &Cluster, at: &str, options: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut args = vec!["backup", "create", "--replicator", c.replicator_addrs["a"].as_str(), "--to", at, "--reason", "nightly backup", "--json"];
    args.extend(options);
    run_bounded(Command::new(TANDEM).args(&args).envs(env.iter().copied()))
}

fn manifest(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "backup failed: {}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn blobs_of(m: &Value) -> Vec<String> {
    m["blobs"].as_array().unwrap().iter().map(|b| b["blob"].as_str().unwrap().to_string()).collect()
}

fn tandem_at(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    run_bounded(Command::new(TANDEM).args(args).envs(env.iter().copied()))
}

// Two backups of site a into a directory while a client writes: the
// second copies only the new file; neither holds the destroyed contract's
// files; both verify; then a flipped byte in a file and a truncated dump
// are each found and named (exit 3).
#[test]
fn backups_are_consistent_incremental_and_verified_without_keys() {
    let mut c = Cluster::new();
    let status = c.start_all();
    let tenant = tenant_owned_by(&status, "a", "bk");
    let input = tempfile::tempdir().unwrap();
    let deed = write(input.path(), "deed.pdf", &body("BACKUP-MARKER", 200_000));
    let scan = write(input.path(), "scan.tiff", &body("BACKUP-MARKER", 3 * 1024 * 1024 + 5));
    put(&c, "a", &tenant, "c1", &[&deed, &scan], &["--pii", "phone=13912345678"]);
    put(&c, "a", &tenant, "c2", &[&deed], &[]);
    put(&c, "a", &tenant, "c3", &[&deed], &[]);
    ok(&c.contract("a", &["destroy", "--tenant", &tenant, "--id", "c3", "--reason", "erasure request 3", "--yes"]));

    let dir = tempfile::tempdir().unwrap();
    let at = dir.path().join("backups-a").display().to_string();
    let writer = Writer::start(&c.replicator_addrs["a"], &tenant, &deed);
    writer.wait_acks(&c, 1);
    let first = manifest(&backup(&c, &at, &[], &[]));
    let (acked, failed) = writer.stop();
    assert!(failed.is_empty(), "writes failed while the backup ran: {failed:?}");
    assert_eq!(first["site"], "a");
    let blobs = blobs_of(&first);
    for id in ["c1", "c2"] {
        assert!(blobs.iter().any(|b| b.contains(&format!("/{id}/"))), "{id} is in the backup: {blobs:?}");
    }
    assert!(!blobs.iter().any(|b| b.contains("/c3/")), "a destroyed contract's files are not backed up: {blobs:?}");
    assert_eq!(first["copied"].as_u64().unwrap() as usize, blobs.len(), "{first}");
    assert!(first["records"].as_u64().unwrap() > 0 && first["log_head"].as_u64().unwrap() >= 4, "{first}");
    assert!(!acked.is_empty());

    put(&c, "a", &tenant, "c4", &[&deed], &[]);
    let second = manifest(&backup(&c, &at, &[], &[]));
    let new = blobs_of(&second);
    assert!(new.iter().any(|b| b.contains("/c4/")), "{new:?}");
    assert_eq!(second["copied"].as_u64().unwrap() as usize, new.len() - blobs.len(), "only what the first lacked is copied: {second}");
    assert_eq!(second["reused"].as_u64().unwrap() as usize, blobs.len(), "{second}");

    let listed: Vec<Value> = serde_json::from_slice(&tandem_at(&["backup", "list", "--at", &at, "--json"], &[]).stdout).unwrap();
    assert_eq!(listed.iter().map(|m| m["id"].clone()).collect::<Vec<_>>(), vec![first["id"].clone(), second["id"].clone()]);
    let out = tandem_at(&["backup", "verify", "--at", &at], &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out).matches(": ok: ").count(), 2, "{}", stdout(&out));
    // Nothing in the backup holds plaintext or PII.
    for needle in ["BACKUP-MARKER", "13912345678"] {
        let mut stack = vec![dir.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let bytes = std::fs::read(&p).unwrap();
                    assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle} in {}", p.display());
                }
            }
        }
    }

    // Damage: one byte of c1's scan, and the first backup's dump cut short.
    let scan_blob = blobs.iter().find(|b| b.contains("/c1/") && b.ends_with("/1")).expect("c1's second file").clone();
    let scan_hash = first["blobs"].as_array().unwrap().iter().find(|b| b["blob"] == scan_blob.as_str()).unwrap()["blake3"].as_str().unwrap().to_string();
    // Stored by content: one file per distinct ciphertext.
    let damaged = Path::new(&at).join("blobs").join(&scan_hash);
    let mut bytes = std::fs::read(&damaged).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&damaged, bytes).unwrap();
    let dump = Path::new(&at).join("backups").join(first["id"].as_str().unwrap()).join("meta.dump");
    let len = std::fs::metadata(&dump).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&dump).unwrap().set_len(len - 7).unwrap();
    let out = tandem_at(&["backup", "verify", "--at", &at], &[]);
    assert_eq!(out.status.code(), Some(3), "{}{}", stdout(&out), stderr(&out));
    let report = stdout(&out);
    assert!(report.contains(&format!("blobs/{scan_hash} ({scan_blob}): ")), "{report}");
    assert!(report.contains("meta.dump: ") && report.contains("truncated"), "{report}");
    assert_eq!(report.matches("DAMAGED").count(), 2, "{report}");
}

// A backup into S3 (moto's server), listed and verified from the CLI with
// credentials from the environment; a misspelt option is refused by name.
#[test]
fn a_backup_goes_to_s3() {
    let mut c = Cluster::new();
    let s3 = S3Server::start(c.dir.path(), "s3-backups");
    s3.create_bucket("backups");
    let creds = [("AWS_ACCESS_KEY_ID", "tandem-test"), ("AWS_SECRET_ACCESS_KEY", "tandem-test-secret")];
    c.env = creds.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let status = c.start_all();
    let tenant = tenant_owned_by(&status, "a", "bk");
    let input = tempfile::tempdir().unwrap();
    let deed = write(input.path(), "deed.pdf", &body("BACKUP-MARKER", 9 * 1024 * 1024));
    put(&c, "a", &tenant, "c1", &[&deed], &[]);

    let endpoint = format!("endpoint={}", s3.endpoint());
    let options = ["--option", endpoint.as_str(), "--option", "allow_http=true", "--option", "region=cn-north-1"];
    let m = manifest(&backup(&c, "s3://backups/site-a", &options, &[]));
    assert_eq!(m["copied"], 1, "{m}");
    let keys = s3.keys("backups", "site-a/");
    assert!(keys.iter().any(|k| k.ends_with("/manifest.json")) && keys.iter().any(|k| k.contains("/blobs/")), "{keys:?}");

    let mut verify = vec!["backup", "verify", "--at", "s3://backups/site-a"];
    verify.extend(options);
    let out = tandem_at(&verify, &creds);
    assert!(out.status.success() && stdout(&out).contains(": ok: "), "{}{}", stdout(&out), stderr(&out));

    let bad = backup(&c, "s3://backups/site-a", &["--option", "endpiont=http://127.0.0.1:9"], &[]);
    assert!(!bad.status.success() && stderr(&bad).contains("\"endpiont\""), "{}", stderr(&bad));
}

fn restore(c: &Cluster, site: &str, at: &str, id: &str) -> std::process::Output {
    let config = c.replicator_config_path(site).display().to_string();
    tandem_at(&["backup", "restore", "--config", &config, "--at", at, "--id", id, "--reason", "disk lost, INC-7", "--json"], &[])
}

fn bytes_at(c: &Cluster, site: &str, tenant: &str, id: &str, dir: &Path) -> Result<Vec<u8>, String> {
    let out = dir.join(format!("{site}-{id}"));
    get(c, site, tenant, id, &out)?;
    Ok(std::fs::read(out.join("deed.pdf")).unwrap())
}

// Site a loses its replicator's disk and is restored from a backup taken
// before a destroy, a new contract and b's own writes. Meanwhile the DR
// site was down, so it holds less of a's log than b does. The restored
// replicator serves nothing until it has caught up with every peer (it
// waits for c, and no shard can be moved to it); then the destroyed
// contract stays unreadable there, the contract written after the backup
// is back, its log goes on after the numbers b holds (c steps over the
// lost ones and gets their contracts from b), and a failback plus a
// switchover make it the owner again, writing to both peers.
#[test]
fn a_restored_site_catches_up_and_never_serves_what_was_destroyed() {
    let mut c = Cluster::new();
    let status = c.start_all();
    let tenant = tenant_owned_by(&status, "a", "rs");
    let tenant_b = tenant_owned_by(&status, "b", "rsb");
    let input = tempfile::tempdir().unwrap();
    let deed = write(input.path(), "deed.pdf", &body("RESTORE-MARKER", 150_000));
    for id in ["kept", "doomed"] {
        put(&c, "a", &tenant, id, &[&deed], &[]);
    }
    put(&c, "b", &tenant_b, "b-doomed", &[&deed], &[]);
    // Everything so far has reached c.
    let dir = tempfile::tempdir().unwrap();
    for id in ["kept", "doomed"] {
        wait_readable(&c, "c", &tenant, id, &dir.path().join(format!("c-{id}")));
    }
    let at = dir.path().join("backups-a").display().to_string();
    let m = manifest(&backup(&c, &at, &[], &[]));
    let id = m["id"].as_str().unwrap().to_string();

    // After the backup, b writes and destroys a contract, and every site
    // confirms the destroy, so b collects its ciphertext: the restored a
    // meets that put in b's log with nothing left to send.
    put(&c, "b", &tenant_b, "b-late", &[&deed], &[]);
    let collected = c.data_dir("b").join("replicator").join("blobs").join(tandem_replicator::model::blob_path(&tenant_b, "b-late", 1, 0));
    assert!(collected.exists(), "b-late's ciphertext is at {}", collected.display());
    ok(&c.contract("b", &["destroy", "--tenant", &tenant_b, "--id", "b-late", "--reason", "erasure request 11", "--yes"]));
    c.wait_for("b collecting b-late's ciphertext", || (!collected.exists()).then_some(()));

    // Then, with c down: a destroys one contract and writes a new one
    // (entries of a's log only a and b hold); b destroys its own.
    c.kill_replicator("c");
    ok(&c.contract("a", &["destroy", "--tenant", &tenant, "--id", "doomed", "--reason", "erasure request 9", "--yes"]));
    put(&c, "a", &tenant, "after", &[&deed], &[]);
    // Two versions after the backup: both come back, not only the newest.
    let v1 = write(input.path(), "v1.pdf", &body("RESTORE-V1", 30_000));
    put(&c, "a", &tenant, "twice", &[&v1], &[]);
    put(&c, "a", &tenant, "twice", &[&deed], &[]);
    ok(&c.contract("b", &["destroy", "--tenant", &tenant_b, "--id", "b-doomed", "--reason", "erasure request 10", "--yes"]));

    // a's replicator dies with its disk; its shards fail over to b.
    c.kill_replicator("a");
    c.wait_status("a's shards at b", &["a", "b", "c"], |s| s["shard_counts"]["a"] == 0);
    let store = c.data_dir("a").join("replicator");
    std::fs::rename(&store, c.data_dir("a").join("replicator.lost")).unwrap();

    let out = restore(&c, "a", &at, "no-such-backup");
    assert!(!out.status.success() && stderr(&out).contains("no complete backup \"no-such-backup\""), "{}", stderr(&out));
    let out = restore(&c, "b", &at, &id);
    assert!(!out.status.success() && stderr(&out).contains("is of site a"), "{}", stderr(&out));
    let out = restore(&c, "a", &at, &id);
    let restored: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("restore failed: {}", stderr(&out)));
    assert_eq!(restored["records"], m["records"], "{restored}");
    assert_eq!(restored["files"].as_u64().unwrap() as usize, m["blobs"].as_array().unwrap().len(), "{restored}");
    let again = restore(&c, "a", &at, &id);
    assert!(!again.status.success() && stderr(&again).contains("not empty"), "a restore never overwrites a store: {}", stderr(&again));

    // Restored, with c still down: it serves nothing, says why, and takes no shard.
    c.start_replicator("a");
    let st = c.wait_status("a's replicator reporting that it catches up", &["a", "b"], |s| {
        s["replicators"].as_array().unwrap().iter().any(|h| h["site"] == "a" && h["restoring"].as_str().is_some_and(|r| r.contains("asking c")))
    });
    assert!(st["replicators"].as_array().unwrap().iter().any(|h| h["site"] == "a" && h["restoring"].as_str().unwrap().contains(&id)), "{st}");
    let refused = get(&c, "a", &tenant, "kept", &dir.path().join("early")).unwrap_err();
    assert!(refused.contains("serves no contract yet"), "{refused}");
    let text = stdout(&c.tandem(&["a", "b"], &["status"]));
    assert!(text.contains("site a's replicator serves no contract yet"), "{text}");
    let (code, ready) = http(&c.metrics_addrs["a-replicator"], "GET", "/ready", "").unwrap();
    assert!(code == 503 && ready.contains("restored from backup"), "{code} {ready}");
    let out = c.tandem(&["a", "b"], &["switchover", "--from", "b", "--to", "a", "--reason", "too early", "--dry-run"]);
    assert!(stdout(&out).contains("serves nothing yet"), "{}{}", stdout(&out), stderr(&out));

    // c returns: a catches up, and then serves.
    c.start_replicator("c");
    c.wait_for("a serving again", || get(&c, "a", &tenant, "kept", &dir.path().join("a-kept-0")).ok());
    assert_eq!(bytes_at(&c, "a", &tenant, "kept", dir.path()).unwrap(), std::fs::read(&deed).unwrap());
    assert_eq!(bytes_at(&c, "a", &tenant, "after", dir.path()).unwrap(), std::fs::read(&deed).unwrap(), "a's write after the backup is back");
    let first = dir.path().join("a-twice-v1");
    let o = c.contract("a", &["get", "--json", "--tenant", &tenant, "--id", "twice", "--version", "1", "--out", &first.display().to_string()]);
    assert!(o.status.success(), "version 1 of a contract written twice after the backup is back: {}", stderr(&o));
    assert_eq!(std::fs::read(first.join("v1.pdf")).unwrap(), std::fs::read(&v1).unwrap());
    for (t, gone) in [(&tenant, "doomed"), (&tenant_b, "b-doomed"), (&tenant_b, "b-late")] {
        let e = bytes_at(&c, "a", t, gone, dir.path()).unwrap_err();
        assert!(e.contains("was destroyed"), "{gone} came back from the backup: {e}");
    }
    assert!(c.log("a-replicator").contains("restore complete"), "{}", c.log("a-replicator"));
    // b's next write makes its shipper find a's (older) cursor and ship from
    // there, past the put of b-late whose ciphertext b has collected.
    put(&c, "b", &tenant_b, "b-after", &[&deed], &[]);
    wait_readable(&c, "a", &tenant_b, "b-after", &dir.path().join("a-b-after"));
    // c lacked a's last entries: it stepped over them, and gets their
    // contracts from b.
    c.wait_for("c stepping over a's lost entries", || c.log("c-replicator").contains("entries lost at their origin").then_some(()));
    wait_readable(&c, "c", &tenant, "after", &dir.path().join("c-after"));
    c.wait_for("the destroy reaching c", || get(&c, "c", &tenant, "doomed", &dir.path().join("c-doomed")).err().filter(|e| e.contains("was destroyed")));

    // Failback and a switchover: a owns its shards again, and its next
    // entries reach both peers (their numbers follow what they hold).
    let out = c.tandem(&SITES, &["failback", "--site", "a", "--reason", "a restored", "--yes"]);
    assert!(out.status.success(), "failback failed: {}\n{}", stderr(&out), stdout(&out));
    let out = c.tandem(&SITES, &["switchover", "--from", "b", "--to", "a", "--shards", "0-31", "--reason", "a restored", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let fresh = put(&c, "a", &tenant, "fresh", &[&deed], &[]);
    assert_eq!(fresh["contract"]["origin"], "a", "{fresh}");
    for site in ["b", "c"] {
        let got = wait_readable(&c, site, &tenant, "fresh", &dir.path().join(format!("{site}-fresh")));
        assert_eq!(got["origin"], "a", "{got}");
    }
    let e = bytes_at(&c, "a", &tenant, "doomed", dir.path()).unwrap_err();
    assert!(e.contains("was destroyed"), "{e}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

// An old copy of a's replicator store is put back by hand (a VM snapshot
// rolled back, no restore run): its peers hold more of its log than it
// has. a notices, serves nothing and takes no write until it has caught
// up, then holds the writes it had lost, and its next writes reach both
// peers instead of reusing numbers they would skip as already applied.
#[test]
fn an_old_store_put_back_by_hand_catches_up_instead_of_reusing_log_numbers() {
    let mut c = Cluster::new();
    let status = c.start_all();
    let tenant = tenant_owned_by(&status, "a", "old");
    let input = tempfile::tempdir().unwrap();
    let deed = write(input.path(), "deed.pdf", &body("ROLLBACK-MARKER", 40_000));
    put(&c, "a", &tenant, "before", &[&deed], &[]);
    c.kill_replicator("a");
    let store = c.data_dir("a").join("replicator");
    let old = c.data_dir("a").join("replicator.snapshot");
    copy_dir(&store, &old);
    c.start_replicator("a");
    for id in ["lost-1", "lost-2"] {
        // (The first once a's replicator listens again.)
        c.wait_for("a taking a write", || {
            c.contract("a", &["put", "--tenant", &tenant, "--id", id, "--file", &deed.display().to_string()]).status.success().then_some(())
        });
    }
    c.kill_replicator("a");
    std::fs::rename(&store, c.data_dir("a").join("replicator.newer")).unwrap();
    std::fs::rename(&old, &store).unwrap();
    c.start_replicator("a");

    let dir = tempfile::tempdir().unwrap();
    c.wait_for("a noticing its store is behind", || c.log("a-replicator").contains("store is behind its peers").then_some(()));
    let out = dir.path().join("x");
    c.wait_for("a serving again", || get(&c, "a", &tenant, "before", &out).ok());
    for id in ["lost-1", "lost-2"] {
        let got = get(&c, "a", &tenant, id, &dir.path().join(id)).unwrap_or_else(|e| panic!("{id} is back at a: {e}"));
        assert_eq!(got["origin"], "a", "{got}");
    }
    let fresh = c.wait_for("a taking writes again", || {
        let o = c.contract("a", &["put", "--json", "--tenant", &tenant, "--id", "fresh", "--file", &deed.display().to_string()]);
        o.status.success().then(|| serde_json::from_str::<Value>(&stdout(&o)).unwrap())
    });
    assert_eq!(fresh["contract"]["origin"], "a", "{fresh}");
    for site in ["b", "c"] {
        wait_readable(&c, site, &tenant, "fresh", &dir.path().join(format!("{site}-fresh")));
    }
}
