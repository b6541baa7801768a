//! End-to-end test of the HSM key provider with real processes: three
//! replicators whose `[hsm]` section points at one shared SoftHSM2 token
//! (all sites share the KEK, as with a network HSM), the KEK made by
//! `tandem keys hsm-create`, and no key file anywhere.

mod common;
#[path = "../../crypto/tests/softhsm/mod.rs"]
mod softhsm;

use std::process::Command;

use common::*;
use serde_json::Value;

// The KEK is generated in the token by the CLI (a second create with the
// same label is refused); a replicator given a wrong PIN refuses to start,
// naming the PIN file but not the PIN; with the right one, a contract put
// at a (with a PII field) is read back at c, while the key file the
// harness made is deleted, so nothing can be using it.
#[test]
fn replicators_share_an_hsm_kek_and_never_use_a_key_file() {
    let mut c = Cluster::new();
    let hsm = softhsm::SoftHsm::new(c.dir.path());
    hsm.init_token("tandem-e2e");
    c.env.push(("SOFTHSM2_CONF".into(), hsm.conf.display().to_string()));
    let hsm_create = |label: &str| {
        run_bounded(
            Command::new(TANDEM)
                .args(["keys", "hsm-create", "--token-label", "tandem-e2e", "--kek-id", label, "--module"])
                .arg(&hsm.module)
                .arg("--pin-file")
                .arg(&hsm.pin_file)
                .env("SOFTHSM2_CONF", &hsm.conf),
        )
    };
    let out = hsm_create("hsm-kek-1");
    assert!(out.status.success() && stdout(&out).contains("hsm-kek-1"), "{}", stderr(&out));
    let again = hsm_create("hsm-kek-1");
    assert!(!again.status.success() && stderr(&again).contains("already exists"), "{}", stderr(&again));

    std::fs::remove_file(c.dir.path().join("kek.key")).unwrap();
    let section = |pin_file: &std::path::Path| {
        format!(
            "[hsm]\nmodule = \"{}\"\ntoken_label = \"tandem-e2e\"\npin_file = \"{}\"\nkey_label = \"hsm-kek-1\"\n",
            hsm.module.display(),
            pin_file.display()
        )
    };

    let wrong_pin = c.dir.path().join("wrong.pin");
    std::fs::write(&wrong_pin, "1234-not-it\n").unwrap();
    let bad = c.dir.path().join("wrong-pin-replicator.toml");
    std::fs::write(&bad, c.replicator_config_keyed("a", "", &section(&wrong_pin))).unwrap();
    let out = run_bounded(Command::new(TANDEM).args(["replicator", "--config"]).arg(&bad).env("SOFTHSM2_CONF", &hsm.conf));
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("wrong.pin") && err.contains("PIN") && err.contains("tandem-e2e"), "{err}");
    assert!(!err.contains("1234-not-it") && !err.contains(softhsm::USER_PIN), "{err}");

    for site in SITES {
        std::fs::write(c.replicator_config_path(site), c.replicator_config_keyed(site, "", &section(&hsm.pin_file))).unwrap();
    }
    // One replicator after the other: SoftHSM2 keeps its token store in
    // files, and a process opening it while another does can find no token
    // at all (seen once in a full test run; retrying the lookup in the same
    // process did not help). A network HSM has no such shared files.
    for site in SITES {
        c.start(site);
    }
    for site in SITES {
        c.start_replicator(site);
        let log = format!("{site}-replicator");
        c.wait_for(&format!("{log} loading its KEK"), || c.log(&log).contains("key-encryption keys loaded").then_some(()));
    }
    let status = c.wait_ready();
    for site in SITES {
        let log = c.log(&format!("{site}-replicator"));
        assert!(log.lines().any(|l| l.contains("key-encryption keys loaded") && l.contains("hsm-kek-1")), "{log}");
        assert!(!log.contains(softhsm::USER_PIN));
    }

    let tenant = tenant_owned_by(&status, "a", "hsm");
    let input = tempfile::tempdir().unwrap();
    let file = input.path().join("deed.pdf");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(&file, &bytes).unwrap();
    let put = c.contract("a", &["put", "--json", "--tenant", &tenant, "--id", "h1", "--pii", "phone=13700000000", "--file", &file.display().to_string()]);
    assert!(put.status.success(), "{}", stderr(&put));

    let out = input.path().join("at-c");
    let got: Value = c.wait_for("h1 readable at c", || {
        let o = c.contract("c", &["get", "--json", "--show-pii", "--tenant", &tenant, "--id", "h1", "--out", &out.display().to_string()]);
        o.status.success().then(|| serde_json::from_str(&stdout(&o)).unwrap())
    });
    assert_eq!(std::fs::read(out.join("deed.pdf")).unwrap(), bytes);
    assert_eq!(got["pii_fields"]["phone"], "13700000000");
}
