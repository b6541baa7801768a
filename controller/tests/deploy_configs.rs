//! The example configs in `deploy/` must stay loadable and consistent: an
//! SRE copies them onto real hosts.

use std::path::PathBuf;

use tandem_controller::config::NodeConfig;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
fn every_site_config_loads_and_names_its_own_site() {
    let mut member_lists = Vec::new();
    for site in ["a", "b", "c"] {
        let path = deploy_dir().join(format!("site-{site}.toml"));
        let cfg = NodeConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.site, site);
        assert_eq!(cfg.this_site().name, site);
        assert!(cfg.tls.is_some(), "the production example must run mutual TLS");
        let members: Vec<(String, u64, String)> = cfg.sites.iter().map(|s| (s.name.clone(), s.node_id, s.addr.clone())).collect();
        member_lists.push(members);
    }
    // All three must describe the same membership, or the cluster would
    // never agree on who votes.
    assert_eq!(member_lists[0], member_lists[1]);
    assert_eq!(member_lists[1], member_lists[2]);
}

#[test]
fn systemd_unit_starts_the_controller_with_a_config() {
    let unit = std::fs::read_to_string(deploy_dir().join("systemd/tandem-controller.service")).unwrap();
    let exec = unit.lines().find(|l| l.starts_with("ExecStart=")).expect("ExecStart line");
    assert!(exec.contains("tandem controller --config "), "{exec}");
}

/// The services defined in deploy/compose.yaml (two-space indented keys
/// under `services:`).
fn compose_services() -> Vec<String> {
    let text = std::fs::read_to_string(deploy_dir().join("compose.yaml")).unwrap();
    let services = text.split("\nservices:\n").nth(1).expect("a services: section");
    services
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with(' ') || l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("  ").filter(|r| !r.starts_with(' ')).and_then(|r| r.strip_suffix(':')))
        .map(str::to_string)
        .collect()
}

// The compose test setup: each site's controller config loads, names
// itself, uses its own site certificate, and every peer address is a
// compose service.
#[test]
fn compose_controller_configs_match_the_compose_services() {
    let services = compose_services();
    assert!(services.contains(&"pki".to_string()), "{services:?}");
    for site in ["a", "b", "c"] {
        let cfg = NodeConfig::load(&deploy_dir().join(format!("compose/site-{site}.toml"))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.site, site);
        let tls = cfg.tls.as_ref().expect("compose runs mutual TLS");
        assert!(tls.cert.starts_with(format!("/etc/tandem/tls/site-{site}")), "{:?}", tls.cert);
        for s in &cfg.sites {
            let host = s.addr.split(':').next().unwrap();
            assert!(services.iter().any(|svc| svc == host), "{site}: {} is not a compose service ({services:?})", s.addr);
        }
        assert!(services.contains(&format!("controller-{site}")));
        assert!(services.contains(&format!("replicator-{site}")));
    }
}
