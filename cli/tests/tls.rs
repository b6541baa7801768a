//! End-to-end tests of mutual TLS and roles with real processes (harness in
//! `common/`): daemons configured by `tandem certs init`, the CLI dialling
//! with an operator's certificate.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::*;
use serde_json::Value;

fn tls_dir(c: &Cluster) -> PathBuf {
    c.tls.clone().unwrap()
}

/// Runs `tandem status` against `site` with explicit TLS files.
fn status_with(c: &Cluster, site: &str, ca: &Path, cert: &Path, key: &Path) -> std::process::Output {
    run_bounded(
        Command::new(TANDEM)
            .args(["status", "--timeout-ms", "3000", "--controllers", &c.addrs[site], "--ca"])
            .arg(ca)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .env_remove("TANDEM_TLS_DIR"),
    )
}

/// Writes an operator certificate signed by the cluster's CA whose
/// validity ended in 2001, with rcgen and the CA key from `certs init`.
fn expired_operator_cert(tls: &Path, out: &Path) -> (PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(tls.join("ca.key")).unwrap()).unwrap();
    // The same subject as `certs init`'s CA, so the chain links up.
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "tandem development CA");
    ca_params.distinguished_name.push(rcgen::DnType::OrganizationName, "tandem");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "old");
    params.subject_alt_names =
        vec![rcgen::SanType::URI("tandem:operator:old".try_into().unwrap()), rcgen::SanType::URI("tandem:role:admin".try_into().unwrap())];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (cert_path, key_path) = (out.join("expired.pem"), out.join("expired.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

/// Waits until `site`'s log has a line containing all of `needles`.
fn wait_log(c: &Cluster, site: &str, what: &str, needles: &[&str]) {
    c.wait_for(what, || c.log(site).lines().any(|l| needles.iter().all(|n| l.contains(n))).then_some(()));
}

// Controllers talk Raft over mutual TLS (a leader is elected and the layout
// committed); a client without a certificate, with one from another CA, or
// with an expired one is refused by the server, which logs why, and the
// client's error says which handshake failed and why.
#[test]
fn peers_without_a_valid_certificate_are_refused() {
    let mut c = Cluster::with_tls();
    for s in SITES {
        c.start(s);
    }
    c.wait_status("a leader and the layout over TLS", &SITES, |s| leader_of(s).is_some() && s["cluster"]["bootstrapped"] == true);
    let tls = tls_dir(&c);
    let addr = c.addrs["a"].clone();

    // 1. No client certificate: a TLS client that trusts the CA but shows nothing.
    let err = handshake_without_certificate(&tls.join("ca.pem"), &addr);
    assert!(err.contains("no certificate presented"), "{err}");
    wait_log(&c, "a", "a's log names the refused handshake", &["TLS handshake refused", "no certificate presented"]);
    // And a plaintext client gets no answer it could mistake for one.
    let out = run_bounded(Command::new(TANDEM).args(["status", "--controllers", &addr]).env_remove("TANDEM_TLS_DIR"));
    assert!(!out.status.success(), "plaintext status against a TLS controller succeeded");

    // 2. A certificate from another CA.
    let other = c.dir.path().join("other-pki");
    let out = run_bounded(Command::new(TANDEM).args(["certs", "init", "--dir"]).arg(&other));
    assert!(out.status.success(), "{}", stderr(&out));
    let stranger = other.join("operator-admin");
    let out = status_with(&c, "a", &tls.join("ca.pem"), &stranger.join("cert.pem"), &stranger.join("key.pem"));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("TLS handshake with {addr} failed")) && err.contains("not trusted"), "{err}");
    wait_log(&c, "a", "a's log names the untrusted certificate", &["TLS handshake refused", "certificate not trusted"]);
    // The other way round: a client of the other CA does not trust our server.
    let out = status_with(&c, "a", &stranger.join("ca.pem"), &stranger.join("cert.pem"), &stranger.join("key.pem"));
    assert!(stderr(&out).contains(&format!("TLS handshake with {addr} failed: certificate not trusted")), "{}", stderr(&out));

    // 3. An expired certificate of the right CA.
    let (cert, key) = expired_operator_cert(&tls, c.dir.path());
    let out = status_with(&c, "a", &tls.join("ca.pem"), &cert, &key);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("TLS handshake with {addr} failed")) && err.contains("expired"), "{err}");
    wait_log(&c, "a", "a's log names the expired certificate", &["TLS handshake refused", "certificate expired"]);

    // The admin's own certificate still works.
    let admin = tls.join(format!("operator-{ADMIN}"));
    let out = status_with(&c, "a", &admin.join("ca.pem"), &admin.join("cert.pem"), &admin.join("key.pem"));
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Handshakes with `addr` trusting `ca` but without a client certificate;
/// returns the error the client sees.
fn handshake_without_certificate(ca: &Path, addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let mut stream = match connector.connect(name, tcp).await {
            Ok(s) => s,
            Err(e) => return tandem_net::tls::describe(e.get_ref().unwrap().downcast_ref::<rustls::Error>().unwrap()),
        };
        // TLS 1.3: the refusal arrives after our side finished the handshake.
        let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let mut buf = [0u8; 1024];
        let result = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("the server neither answered nor refused");
        match result {
            Ok(n) => format!("the server answered {n} bytes without a client certificate"),
            Err(e) => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(tls) => tandem_net::tls::describe(tls),
                None => e.to_string(),
            },
        }
    })
}

fn audit_entries(c: &Cluster) -> Vec<Value> {
    let out = c.tandem_as(VIEWER, &SITES, &["audit", "--json", "--limit", "200"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

// Roles, checked by the servers: a viewer reads but may not pause or move
// shards (refused naming the role needed, and the refusal is audited); an
// operator pauses and puts contracts but may not destroy one or activate
// DR; an admin may. An operator's certificate cannot speak Raft.
#[test]
fn roles_bound_what_each_operator_may_do() {
    let mut c = Cluster::with_tls();
    c.start_all();

    // Viewer: reads yes, changes no.
    let out = c.tandem_as(VIEWER, &SITES, &["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = c.tandem_as(VIEWER, &SITES, &["pause", "--reason", "viewer tries", "--yes"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(&format!("permission denied: pause needs role operator, certificate {VIEWER} has viewer")), "{}", stderr(&out));
    let out = c.tandem_as(VIEWER, &SITES, &["switchover", "--from", "a", "--to", "b", "--reason", "viewer tries", "--yes"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("needs role operator") && stderr(&out).contains(VIEWER), "{}", stderr(&out));
    let refused = c.wait_for("the viewer's refusals in the audit log", || {
        let entries = audit_entries(&c);
        let pause = entries.iter().find(|e| e["what"] == "refused: pause" && e["who"] == VIEWER).cloned();
        let moving = entries.iter().any(|e| e["what"].as_str().is_some_and(|w| w.starts_with("refused: switchover")));
        pause.filter(|_| moving)
    });
    assert!(refused["result"].as_str().unwrap().contains("needs role operator"), "{refused}");
    assert_eq!(c.status(&SITES).unwrap()["cluster"]["policy"]["paused"], false, "a refused pause changed the policy");

    // Operator: pause and put yes; destroy and DR activation no.
    let out = c.tandem_as(OPERATOR, &SITES, &["pause", "--reason", "operator may", "--who", "root", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The audit log names the certificate that acted, and what it claimed.
    let pause = audit_entries(&c).into_iter().find(|e| e["why"] == "operator may").expect("the pause is audited");
    assert_eq!(pause["who"], format!("{OPERATOR} (as root)"), "{pause}");
    let file = c.dir.path().join("deed.txt");
    std::fs::write(&file, "signed").unwrap();
    let out = c.contract_as(OPERATOR, "a", &["put", "--tenant", "t1", "--id", "d1", "--file", &file.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = c.contract_as(VIEWER, "a", &["get", "--tenant", "t1", "--id", "d1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The sites replicate it to each other over mutual TLS with their own
    // certificates (bulk streams: staged copy and Apply).
    c.wait_for("d1 readable at b and c", || {
        ["b", "c"].iter().all(|s| c.contract_as(VIEWER, s, &["get", "--tenant", "t1", "--id", "d1"]).status.success()).then_some(())
    });
    let out = c.contract_as(VIEWER, "a", &["put", "--tenant", "t1", "--id", "d2", "--file", &file.display().to_string()]);
    assert!(stderr(&out).contains("contract put needs role operator"), "{}", stderr(&out));
    let destroy = ["destroy", "--tenant", "t1", "--id", "d1", "--reason", "retention ended", "--yes"];
    let out = c.contract_as(OPERATOR, "a", &destroy);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(&format!("contract destroy needs role admin, certificate {OPERATOR} has operator")), "{}", stderr(&out));
    let config = c.config_path("c").display().to_string();
    let out = c.tandem_as(OPERATOR, &SITES, &["dr", "activate", "--config", &config, "--reason", "operator tries", "--yes"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(&format!("DR activation needs role admin, certificate {OPERATOR} has operator")), "{}", stderr(&out));

    // The policy and the Raft membership are an admin's; reading them a viewer's.
    let out = c.tandem_as(VIEWER, &SITES, &["members"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = c.tandem_as(OPERATOR, &SITES, &["policy", "set", "cooldown_s=30", "--reason", "operator tries", "--yes"]);
    assert!(!out.status.success() && stderr(&out).contains("needs role admin") && stderr(&out).contains(OPERATOR), "{}", stderr(&out));
    let out = c.tandem_as(OPERATOR, &SITES, &["members", "remove", "--site", "c", "--reason", "operator tries", "--yes"]);
    assert!(!out.status.success() && stderr(&out).contains("needs role admin"), "{}", stderr(&out));
    assert_eq!(c.status(&SITES).unwrap()["cluster"]["policy"]["cooldown_s"], 600, "a refused policy change applied");
    let out = c.tandem_as(ADMIN, &SITES, &["policy", "set", "cooldown_s=30", "--reason", "admin may", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // An admin passes the role check; a live controller is still not removed.
    let out = c.tandem_as(ADMIN, &SITES, &["members", "remove", "--site", "c", "--reason", "admin tries", "--yes"]);
    let why = stderr(&out);
    assert!(!out.status.success() && !why.contains("permission denied") && (why.contains("not lost") || why.contains("leads")), "{why}");

    // Admin: destroy passes the role check (and, four eyes being on with
    // TLS, becomes a request for a second admin); DR activation passes it
    // and is then refused for its own reason (the cluster still has a quorum).
    let out = c.contract_as(ADMIN, "a", &destroy);
    assert!(out.status.success() && stdout(&out).contains("recorded as request #"), "{}{}", stdout(&out), stderr(&out));
    let out = c.tandem_as(ADMIN, &SITES, &["dr", "activate", "--config", &config, "--reason", "admin tries", "--yes"]);
    assert!(!out.status.success());
    assert!(!stderr(&out).contains("permission denied") && stderr(&out).contains("not a city-wide disaster"), "{}", stderr(&out));
    c.wait_for("the refused destroy in the audit log", || {
        audit_entries(&c).iter().any(|e| e["what"] == "refused: contract destroy" && e["who"] == OPERATOR).then_some(())
    });

    // Daemon-to-daemon calls need a site's certificate, whatever the role:
    // Raft, and shipping a replication entry (a bulk stream).
    let err = raft_vote_as(&c, ADMIN);
    assert!(err.contains("needs a site certificate"), "{err}");
    let err = bulk_apply_as(&c, ADMIN);
    assert!(err.contains("needs a site certificate"), "{err}");
    // Fetching a contract's ciphertext for a repair is between sites too.
    let err = bulk_fetch_as(&c, ADMIN);
    assert!(err.contains("needs a site certificate"), "{err}");
}

/// Runs `call` on a channel to `addr` made with an operator's certificate;
/// returns the refusal's message.
fn call_as<T, F>(c: &Cluster, operator: &str, addr: &str, call: impl FnOnce(tonic::transport::Channel) -> F) -> String
where
    F: std::future::Future<Output = Result<T, tonic::Status>>,
{
    // An operator's name, or a site's directory ("site-a").
    let dir = if operator.starts_with("site-") { operator.to_string() } else { format!("operator-{operator}") };
    let files = tandem_net::TlsFiles::in_dir(&tls_dir(c).join(dir));
    let transport = tandem_net::Transport::over_tokio(Some(&files)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let channel = transport.channel(addr).unwrap();
        match tokio::time::timeout(WAIT, call(channel)).await.expect("no answer") {
            Ok(_) => "the call was accepted".to_string(),
            Err(s) => s.message().to_string(),
        }
    })
}

/// Sends a (meaningless) Raft vote to site a's controller.
fn raft_vote_as(c: &Cluster, operator: &str) -> String {
    call_as(c, operator, &c.addrs["a"], |channel| async move {
        let mut client = tandem_proto::raft::raft_client::RaftClient::new(channel);
        client.vote(tandem_proto::raft::RaftPayload { json: b"{}".to_vec(), generation: 1 }).await
    })
}

/// Sends an (empty) replication entry to site a's replicator as a bulk stream.
fn bulk_apply_as(c: &Cluster, operator: &str) -> String {
    use tandem_proto::replicator::{ApplyChunk, ApplyReply};
    use tandem_replicator::bulk;
    call_as(c, operator, &c.replicator_addrs["a"], |channel| bulk::call::<ApplyChunk, ApplyReply>(channel, bulk::APPLY, futures::stream::empty()))
}

/// Asks site a's replicator for a contract's ciphertext (the bulk Fetch a
/// repairing site makes).
fn bulk_fetch_as(c: &Cluster, operator: &str) -> String {
    use futures::StreamExt;
    use tandem_proto::replicator::{ApplyChunk, FetchRequest};
    use tandem_replicator::bulk;
    call_as(c, operator, &c.replicator_addrs["a"], |channel| async move {
        let req = FetchRequest { tenant: "t1".into(), contract_id: "d1".into(), version: 0 };
        let mut chunks = bulk::download::<_, ApplyChunk>(channel, bulk::FETCH, &req).await?;
        chunks.next().await.transpose()
    })
}

// A [tls] section naming a missing file, or a key file that holds no key,
// stops the daemon with an error naming the file and showing none of it.
#[test]
fn bad_tls_files_are_named_without_their_content() {
    let c = Cluster::with_tls();
    let tls = tls_dir(&c);
    let good = std::fs::read_to_string(c.config_path("a")).unwrap();
    let key = tls.join("site-a/key.pem").display().to_string();

    let missing = good.replace(&key, "/nonexistent/key.pem");
    let path = c.dir.path().join("missing.toml");
    std::fs::write(&path, missing).unwrap();
    let out = run_bounded(Command::new(TANDEM).arg("controller").arg("--config").arg(&path));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/nonexistent/key.pem: cannot read"), "{}", stderr(&out));

    let secret = "NOT-A-KEY-but-secret-looking-text";
    let garbage = c.dir.path().join("garbage.pem");
    std::fs::write(&garbage, secret).unwrap();
    let bad = good.replace(&key, &garbage.display().to_string());
    let path = c.dir.path().join("garbage.toml");
    std::fs::write(&path, bad).unwrap();
    let out = run_bounded(Command::new(TANDEM).arg("controller").arg("--config").arg(&path));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("{}: contains no PEM private key", garbage.display())), "{err}");
    assert!(!err.contains(secret), "the error shows the file's content: {err}");

    // `certs init` never overwrites.
    let out = run_bounded(Command::new(TANDEM).args(["certs", "init", "--dir"]).arg(&tls));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("refusing to overwrite"), "{}", stderr(&out));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(tls.join("site-a/key.pem")).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "keys must be private to their owner");
}

fn request_id(out: &std::process::Output) -> String {
    let text = stdout(out);
    assert!(out.status.success(), "{text}{}", stderr(out));
    let at = text.find("recorded as request #").unwrap_or_else(|| panic!("no request recorded: {text}"));
    text[at + "recorded as request #".len()..].chars().take_while(char::is_ascii_digit).collect()
}

// Four eyes (on by default with TLS): a destroy, a safety setting and a
// failover accepting data loss are each recorded as a request by the first
// admin and change nothing; the same certificate cannot approve its own
// request; a second admin's approval carries it out, once; a rejected one
// never runs. Every step is in the audit log under the certificate's name.
#[test]
fn a_second_admin_approves_what_one_admin_asks() {
    let mut c = Cluster::with_tls();
    c.start_all();
    let policy = c.status(&SITES).unwrap()["cluster"]["policy"].clone();
    assert_eq!(policy["four_eyes"], true, "on by default with TLS: {policy}");
    let a_replicator = c.replicator_addrs["a"].clone();

    // Destroy: asked by ada, refused to ada, carried out by bea, once.
    let file = c.dir.path().join("deed.txt");
    std::fs::write(&file, "signed").unwrap();
    let out = c.contract_as(ADMIN, "a", &["put", "--tenant", "t1", "--id", "d1", "--file", &file.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let destroy = ["destroy", "--tenant", "t1", "--id", "d1", "--reason", "erasure request 9", "--yes"];
    let id = request_id(&c.contract_as(ADMIN, "a", &destroy));
    assert!(c.contract_as(ADMIN, "a", &["get", "--tenant", "t1", "--id", "d1"]).status.success(), "a request destroys nothing");
    // Whoever is on call sees it waiting.
    let shown = stdout(&c.tandem_as(VIEWER, &SITES, &["status"]));
    assert!(shown.contains(&format!("#{id} contract destroy by {ADMIN}")), "{shown}");
    let approve =
        |who: &str, id: &str| c.tandem_as(who, &SITES, &["approve", id, "--replicator", &a_replicator, "--reason", "checked the erasure request", "--yes"]);
    let own = approve(ADMIN, &id);
    assert!(!own.status.success() && stderr(&own).contains("a second admin must approve it"), "{}{}", stdout(&own), stderr(&own));
    assert!(c.contract_as(ADMIN, "a", &["get", "--tenant", "t1", "--id", "d1"]).status.success());
    let out = approve(ADMIN2, &id);
    assert!(out.status.success() && stdout(&out).contains("destroyed t1/d1"), "{}{}", stdout(&out), stderr(&out));
    let gone = c.contract_as(ADMIN, "a", &["get", "--tenant", "t1", "--id", "d1"]);
    assert!(stderr(&gone).contains("destroyed"), "{}", stderr(&gone));
    let again = approve(ADMIN2, &id);
    assert!(!again.status.success() && stderr(&again).contains("is used already"), "{}", stderr(&again));

    // A safety setting: asked, then rejected; it never applies.
    let out = c.tandem_as(ADMIN, &SITES, &["policy", "set", "lag_s_max=30", "--reason", "accept 30 s of loss", "--yes"]);
    let id = request_id(&out);
    let out = c.tandem_as(ADMIN2, &SITES, &["reject", &id, "--reason", "no: RPO is 0", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!approve(ADMIN2, &id).status.success());
    let listed = stdout(&c.tandem_as(ADMIN, &SITES, &["approvals", "--json"]));
    let listed: Vec<Value> = serde_json::from_str(&listed).unwrap();
    let rejected = listed.iter().find(|a| a["id"] == id.parse::<u64>().unwrap()).expect("the request is listed");
    assert_eq!(rejected["state"]["state"], "rejected", "{rejected}");
    assert_eq!(c.status(&SITES).unwrap()["cluster"]["policy"]["lag_s_max"], 0);
    // A site's certificate may call anything a role may, but cannot ask or
    // decide: it could claim any name.
    let as_site = call_as(&c, "site-a", &c.addrs["a"], |channel| async move {
        let mut client = tandem_proto::control::control_client::ControlClient::new(channel);
        client.decide_approval(tandem_proto::control::ApprovalDecision { who: ADMIN2.into(), why: "forged".into(), id: 1, approve: true }).await
    });
    assert!(as_site.contains("needs an operator's certificate"), "{as_site}");

    // A failover accepting data loss: b is down, automatic actions paused.
    let out = c.tandem_as(ADMIN, &SITES, &["pause", "--reason", "incident 77", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    c.kill_site("b");
    c.wait_status("b judged down", &["a", "c"], |s| ["a", "c"].iter().all(|o| s["health"]["b"][*o].as_u64().is_some_and(|ms| ms > 3_000)));
    let failover = ["failover", "--from", "b", "--to", "a", "--accept-data-loss", "--reason", "b lost, incident 77", "--yes"];
    let id = request_id(&c.tandem_as(ADMIN, &["a", "c"], &failover));
    let owned_by_b = |c: &Cluster| c.status(&["a", "c"]).unwrap()["cluster"]["shards"].as_array().unwrap().iter().filter(|s| s["owner"] == "b").count();
    assert!(owned_by_b(&c) > 0, "a request moves nothing");
    let out = c.tandem_as(ADMIN2, &["a", "c"], &["approve", &id, "--reason", "confirmed b is lost", "--yes"]);
    assert!(out.status.success() && stdout(&out).contains("failover done"), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(owned_by_b(&c), 0);

    let entries = audit_entries(&c);
    let by = |needle: &str| entries.iter().find(|e| e["what"].as_str().is_some_and(|w| w.contains(needle))).cloned().unwrap_or_default();
    assert_eq!(by("approval requested: contract destroy")["who"].as_str().map(|w| w.starts_with(ADMIN)), Some(true), "{entries:?}");
    assert_eq!(by("approved: contract destroy")["who"].as_str().map(|w| w.starts_with(ADMIN2)), Some(true), "{entries:?}");
    assert!(by("approved: contract destroy")["result"] == "ok");
    let moved =
        entries.iter().find(|e| e["what"].as_str().is_some_and(|w| w.starts_with("move ")) && e["result"].as_str().is_some_and(|r| r.starts_with("ok")));
    let moved = moved.unwrap_or_else(|| panic!("the move is audited: {entries:#?}"));
    assert!(moved["who"].as_str().unwrap().starts_with(ADMIN2), "the approver carried it out: {moved}");
}

// Four eyes for the DR activation, which runs offline on C's host: the
// second admin's approval is a file signed with their certificate's key.
// Without one, with one the activating admin signed, with an altered one,
// or with one for another site, nothing changes; with the second admin's
// it goes ahead, and the audit entry names both.
#[test]
fn a_dr_activation_needs_a_second_admins_signed_approval() {
    let mut c = Cluster::with_tls();
    c.start_all();
    // c's own store must hold the applied state before it is stopped (a
    // loaded machine can leave a follower behind for a moment).
    c.wait_status("c's controller holding the layout", &["c"], |s| s["cluster"]["bootstrapped"] == true);
    c.kill_site("a");
    c.kill_site("b");
    c.kill("c");
    let config = c.config_path("c").display().to_string();
    let files = c.dir.path().join("approvals");
    std::fs::create_dir_all(&files).unwrap();
    let sign = |who: &str, site: &str, name: &str| {
        let out_file = files.join(name);
        let generation = if name.starts_with("stale") { "7" } else { "1" };
        let out = c.tandem_as(
            who,
            &["c"],
            &[
                "dr",
                "approve",
                "--site",
                site,
                "--generation",
                generation,
                "--reason",
                "city-1 lost, confirmed with the DC lead",
                "--out",
                &out_file.display().to_string(),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        out_file.display().to_string()
    };
    let activate = |approval: Option<&str>| {
        let mut args = vec!["dr", "activate", "--config", config.as_str(), "--city-fenced", "a and b powered off", "--reason", "city-1 lost", "--yes"];
        if let Some(f) = approval {
            args.extend(["--approval", f]);
        }
        c.tandem_as(ADMIN, &["c"], &args)
    };
    let out = c.wait_for("a and b silent long enough for a DR activation", || {
        let out = activate(None);
        // (The killed controller's store lock may still be held for a moment.)
        (!stderr(&out).contains("it is not lost") && !stderr(&out).contains("still running")).then_some(out)
    });
    assert!(!out.status.success() && stderr(&out).contains("needs a second admin's approval"), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("--generation 1"), "the refusal says which generation to approve: {}", stderr(&out));
    // An approval for another generation (one already used, say) is refused.
    let stale = sign(ADMIN2, "c", "stale.json");
    let out = activate(Some(&stale));
    assert!(!out.status.success() && stderr(&out).contains("approves activating from generation 7"), "{}", stderr(&out));

    let own = sign(ADMIN, "c", "own.json");
    let out = activate(Some(&own));
    assert!(!out.status.success() && stderr(&out).contains("a second admin must sign it"), "{}", stderr(&out));
    let other_site = sign(ADMIN2, "b", "b.json");
    let out = activate(Some(&other_site));
    assert!(!out.status.success() && stderr(&out).contains("not DR activation of site c"), "{}", stderr(&out));
    let good = sign(ADMIN2, "c", "bea.json");
    let altered = files.join("altered.json");
    std::fs::write(&altered, std::fs::read_to_string(&other_site).unwrap().replace(r#"\"site\":\"b\""#, r#"\"site\":\"c\""#)).unwrap();
    let out = activate(Some(&altered.display().to_string()));
    assert!(!out.status.success() && stderr(&out).contains("signature does not match"), "{}", stderr(&out));
    let out = c.tandem_as(
        OPERATOR,
        &["c"],
        &["dr", "approve", "--site", "c", "--generation", "1", "--reason", "operator tries", "--out", &files.join("op.json").display().to_string()],
    );
    assert!(!out.status.success() && stderr(&out).contains("needs role admin"), "{}", stderr(&out));

    let out = activate(Some(&good));
    assert!(out.status.success() && stdout(&out).contains("generation 2"), "{}{}", stdout(&out), stderr(&out));
    c.start("c");
    let entries = c.wait_for("c's audit log", || {
        let out = c.tandem_as(VIEWER, &["c"], &["audit", "--json", "--limit", "20"]);
        out.status.success().then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    });
    let activation = entries.as_array().unwrap().iter().find(|e| e["what"].as_str().unwrap().starts_with("DR activation at c")).expect("audited").clone();
    assert_eq!(activation["who"], ADMIN, "{activation}");
    assert!(activation["why"].as_str().unwrap().contains(&format!("approved by {ADMIN2}, signed approval file")), "{activation}");
}
