//! S3 as the ciphertext store, end to end: three sites whose replicators
//! keep their blobs in a real S3-compatible server (moto's server mode,
//! one per site, started here), driven through the CLI.

mod common;

use std::path::Path;

use common::s3::S3Server;
use common::*;
use serde_json::Value;

fn bucket(site: &str) -> String {
    format!("contracts-{site}")
}

/// The objects of one contract in a site's bucket.
fn objects(s3: &S3Server, site: &str, tenant: &str, id: &str) -> Vec<String> {
    s3.keys(&bucket(site), &format!("tandem/{tenant}/{id}/"))
}

fn site_store_error(status: &Value, site: &str) -> Option<String> {
    let r = status["replicators"].as_array()?.iter().find(|r| r["site"] == site)?;
    Some(r["blob_store_error"].as_str().unwrap_or_default().to_string())
}

/// A cluster whose sites store ciphertext in their own S3 server. Site a's
/// replicator finds endpoint, region and credentials only in the AWS
/// environment variables; b's and c's in `[blob_options]` (and their
/// credentials in the environment too, as a deployment would).
fn s3_cluster() -> (Cluster, Vec<S3Server>) {
    let mut c = Cluster::new();
    let servers: Vec<S3Server> = SITES.iter().map(|s| S3Server::start(c.dir.path(), &format!("s3-{s}"))).collect();
    let key = c.dir.path().join("kek.key");
    for (site, s3) in SITES.iter().zip(&servers) {
        s3.create_bucket(&bucket(site));
        let mut env =
            vec![("AWS_ACCESS_KEY_ID".to_string(), "tandem-test".to_string()), ("AWS_SECRET_ACCESS_KEY".to_string(), "tandem-test-secret".to_string())];
        let options = if *site == "a" {
            env.extend([
                ("AWS_ENDPOINT_URL".to_string(), s3.endpoint()),
                ("AWS_REGION".to_string(), "cn-north-1".to_string()),
                ("AWS_ALLOW_HTTP".to_string(), "true".to_string()),
            ]);
            String::new()
        } else {
            format!("[blob_options]\nregion = \"cn-north-1\"\nendpoint = \"{}\"\nallow_http = \"true\"\n", s3.endpoint())
        };
        c.site_env.insert(site.to_string(), env);
        let extra = format!("blob_url = \"s3://{}/tandem\"", bucket(site));
        let mut config = c.replicator_config(site, &key, &extra);
        // [[sites]] are tables: the options table goes after them.
        config.push_str(&options);
        std::fs::write(c.replicator_config_path(site), config).unwrap();
    }
    (c, servers)
}

// Put, read at every site, verify --deep, destroy (its objects collected
// at every site), the metrics of the requests; then a site's store killed
// in the middle of a put: the put fails and says why, nothing of it is
// stored at either site of the pair, and status, /metrics and the log show
// the failing store until it answers again.
#[test]
fn three_sites_keep_ciphertext_in_s3() {
    let (mut c, mut s3) = s3_cluster();
    let status = c.start_all();
    let ta = tenant_owned_by(&status, "a", "acme");
    let input = tempfile::tempdir().unwrap();
    let small = write(input.path(), "lease.pdf", &body("S3-MARKER", 300_000));
    // Above the 8 MiB part size: a multipart upload of two parts.
    let big = write(input.path(), "scan.tiff", &body("S3-MARKER", 9 * 1024 * 1024 + 17));
    let r = put(&c, "a", &ta, "c1", &[&small, &big], &["--pii", "phone=13912345678"]);
    assert!(r["replication"].as_str().unwrap().starts_with("sync"), "{r}");

    let out = tempfile::tempdir().unwrap();
    for site in SITES {
        let dir = out.path().join(site);
        let info = wait_readable(&c, site, &ta, "c1", &dir);
        assert_eq!(info["pii_fields"]["phone"], "13912345678", "at {site}");
        for f in [&small, &big] {
            let name = f.file_name().unwrap();
            assert_eq!(std::fs::read(dir.join(name)).unwrap(), std::fs::read(f).unwrap(), "{name:?} read back at {site}");
        }
    }
    for (site, s3) in SITES.iter().zip(&s3) {
        assert_eq!(objects(s3, site, &ta, "c1").len(), 2, "two objects (one per file) in site {site}'s bucket");
        assert!(!c.data_dir(site).join("replicator/blobs").exists(), "site {site} wrote no ciphertext to its local disk");
    }
    verify(&c, &["--deep"]).unwrap_or_else(|r| panic!("sites differ: {r}"));

    let metrics = c.scrape("a-replicator").expect("a's replicator serves /metrics");
    assert_eq!(metric(&metrics, "tandem_blob_store_up"), Some(1.0), "{metrics}");
    for sample in [r#"tandem_blob_requests_total{op="put_part",outcome="ok"}"#, r#"tandem_blob_requests_total{op="complete_upload",outcome="ok"}"#] {
        assert!(metric(&metrics, sample).unwrap_or(0.0) >= 2.0, "{sample} in\n{metrics}");
    }
    assert!(metric(&metrics, r#"tandem_blob_request_seconds_count{op="put_part"}"#).unwrap_or(0.0) >= 2.0, "{metrics}");
    assert!(metrics.contains(r#"tandem_blob_request_seconds_bucket{op="get",le="+Inf"}"#), "{metrics}");

    ok(&c.contract("a", &["destroy", "--tenant", &ta, "--id", "c1", "--reason", "erasure request 7", "--yes"]));
    for (site, s3) in SITES.iter().zip(&s3) {
        c.wait_for(&format!("c1's objects collected at {site}"), || objects(s3, site, &ta, "c1").is_empty().then_some(()));
    }

    // Kill a's store while a large put streams into it.
    let huge = write(input.path(), "archive.bin", &body("S3-MARKER", 160 * 1024 * 1024));
    let parts_before = metric(&c.scrape("a-replicator").unwrap(), r#"tandem_blob_requests_total{op="put_part",outcome="ok"}"#).unwrap_or(0.0);
    let putting = c.spawn_contract("a", &["put", "--tenant", &ta, "--id", "c2", "--file", &huge.display().to_string()]);
    c.wait_for("a part of the large put stored at a", || {
        let parts = metric(&c.scrape("a-replicator")?, r#"tandem_blob_requests_total{op="put_part",outcome="ok"}"#)?;
        (parts > parts_before).then_some(())
    });
    s3[0].kill();
    let put_out = putting.wait_with_output().unwrap();
    let err = stderr(&put_out);
    assert!(!put_out.status.success(), "the put succeeded although a's store died during it: {}", stdout(&put_out));
    assert!(err.contains("blob store failed"), "the put says that the store failed: {err}");

    for site in ["a", "b"] {
        let e = get(&c, site, &ta, "c2", &out.path().join("c2")).expect_err("nothing of the failed put is readable");
        assert!(e.contains("not found"), "at {site}: {e}");
    }
    assert!(objects(&s3[1], "b", &ta, "c2").is_empty(), "b's bucket holds nothing of the failed put");
    let status = c.wait_status("a's blob store reported failing", &SITES, |s| site_store_error(s, "a").is_some_and(|e| !e.is_empty()));
    assert_eq!(site_store_error(&status, "b").as_deref(), Some(""), "b's store still answers");
    let shown = stdout(&c.tandem(&SITES, &["status"]));
    assert!(shown.contains("WARNING: site a's blob store fails"), "{shown}");
    let metrics = c.scrape("a-replicator").unwrap();
    assert_eq!(metric(&metrics, "tandem_blob_store_up"), Some(0.0), "{metrics}");
    assert!(metric(&metrics, r#"tandem_blob_requests_total{op="put_part",outcome="error"}"#).is_some_and(|n| n >= 1.0), "{metrics}");

    // The store comes back (empty: moto keeps nothing): the idle probe
    // clears the failure, and a's writes work again.
    s3[0].restart();
    s3[0].create_bucket(&bucket("a"));
    c.wait_status("a's blob store answering again", &SITES, |s| site_store_error(s, "a").as_deref() == Some(""));
    put(&c, "a", &ta, "c3", &[&small], &[]);
    assert_eq!(objects(&s3[0], "a", &ta, "c3").len(), 1);
    // The replicator logs each change once, when its probe loop next looks.
    assert!(c.log("a-replicator").contains("the blob store fails"));
    c.wait_for("the log saying the store answers again", || c.log("a-replicator").contains("the blob store answers again").then_some(()));
}

// A misspelt [blob_options] key stops the replicator at start with an
// error naming the key; nothing serves with a half-configured store.
#[test]
fn an_unknown_blob_option_is_a_config_error() {
    let mut c = Cluster::new();
    let key = c.dir.path().join("kek.key");
    let mut config = c.replicator_config("a", &key, "blob_url = \"s3://contracts-a/tandem\"");
    config.push_str("[blob_options]\nregion = \"cn-north-1\"\nendpiont = \"http://127.0.0.1:9\"\n");
    std::fs::write(c.replicator_config_path("a"), config).unwrap();
    c.start_replicator("a");
    let exit = c.wait_exit("a-replicator");
    assert!(!exit.success());
    let log = c.log("a-replicator");
    assert!(log.contains("\"endpiont\"") && log.contains("blob_options"), "{log}");
}

/// The deploy samples' S3 block, uncommented as an operator would, gives a
/// store pointed at the region's real endpoint (China's regions are not
/// under amazonaws.com).
#[test]
fn the_deploy_samples_s3_block_works_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for site in SITES {
        let text = std::fs::read_to_string(root.join(format!("deploy/replicator-{site}.toml"))).unwrap();
        let block: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("# blob_url ="))
            .take_while(|l| l.starts_with("# ") && !l.starts_with("# #"))
            .map(|l| l.trim_start_matches("# "))
            .collect();
        assert!(block.len() >= 3, "deploy/replicator-{site}.toml has an S3 block: {block:?}");
        let parsed: toml::Value = toml::from_str(&block.join("\n")).unwrap_or_else(|e| panic!("{site}: {e}\n{block:?}"));
        let url = parsed["blob_url"].as_str().unwrap();
        let options = parsed["blob_options"].as_table().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect();
        let builder = tandem_replicator::blob_url::s3_builder(url, &options).unwrap_or_else(|e| panic!("{site}: {e}"));
        let endpoint = builder.get_config_value(&object_store::aws::AmazonS3ConfigKey::Endpoint).unwrap_or_default();
        assert!(endpoint.ends_with(".amazonaws.com.cn"), "{site}: endpoint {endpoint:?}");
        tandem_replicator::blob::BlobStore::from_url(url, &options).unwrap_or_else(|e| panic!("{site}: {e}"));
    }
}
