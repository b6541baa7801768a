//! The example replicator configs in `deploy/` must stay loadable and
//! consistent: an SRE copies them onto real hosts.

use std::path::PathBuf;

use tandem_replicator::config::ReplicatorConfig;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
fn every_replicator_config_loads_and_lists_the_same_sites() {
    let mut lists = Vec::new();
    for site in ["a", "b", "c"] {
        let path = deploy_dir().join(format!("replicator-{site}.toml"));
        let cfg = ReplicatorConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.site, site);
        assert!(cfg.tls.is_some(), "{site}: the production example must run mutual TLS");
        assert_eq!(cfg.controllers.len(), 3, "{site}: every controller, so losing one is survivable");
        lists.push(cfg.sites.iter().map(|s| (s.name.clone(), s.addr.clone())).collect::<Vec<_>>());
    }
    assert_eq!(lists[0], lists[1]);
    assert_eq!(lists[1], lists[2]);
}

#[test]
fn systemd_unit_starts_the_replicator_with_a_config() {
    let unit = std::fs::read_to_string(deploy_dir().join("systemd/tandem-replicator.service")).unwrap();
    let exec = unit.lines().find(|l| l.starts_with("ExecStart=")).expect("ExecStart line");
    assert!(exec.contains("tandem replicator --config "), "{exec}");
}

// The compose test setup's replicator configs load, and every address in
// them is a compose service.
#[test]
fn compose_replicator_configs_name_compose_services() {
    let compose = std::fs::read_to_string(deploy_dir().join("compose.yaml")).unwrap();
    for site in ["a", "b", "c"] {
        let cfg = ReplicatorConfig::load(&deploy_dir().join(format!("compose/replicator-{site}.toml"))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.site, site);
        assert!(cfg.tls.is_some(), "compose runs mutual TLS");
        let hosts = cfg.controllers.iter().chain(cfg.sites.iter().map(|s| &s.addr)).map(|a| a.split(':').next().unwrap().to_string());
        for host in hosts {
            assert!(compose.contains(&format!("\n  {host}:\n")), "{site}: {host} is not a compose service");
        }
    }
}

// The commented `[hsm]` example stays valid: uncommented, with `key_file`
// removed as its comment says, every example config loads with it.
#[test]
fn commented_hsm_example_loads_in_place_of_the_key_file() {
    for site in ["a", "b", "c"] {
        let path = deploy_dir().join(format!("replicator-{site}.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\n# [hsm]\n"), "{site}: a commented [hsm] example");
        let mut out = String::new();
        let mut in_example = false;
        for line in text.lines().filter(|l| !l.starts_with("key_file")) {
            in_example = line == "# [hsm]" || (in_example && line.starts_with("# "));
            out.push_str(if in_example { &line[2..] } else { line });
            out.push('\n');
        }
        let cfg = ReplicatorConfig::parse(&out, &path.display().to_string()).unwrap_or_else(|e| panic!("{e}\n{out}"));
        let hsm = cfg.hsm.expect("[hsm] parsed");
        assert!(cfg.key_file.is_none() && !hsm.key_label.is_empty(), "{site}");
    }
}
