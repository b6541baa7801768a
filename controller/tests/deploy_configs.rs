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
        let members: Vec<(String, u64, String)> =
            cfg.sites.iter().map(|s| (s.name.clone(), s.node_id, s.addr.clone())).collect();
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
