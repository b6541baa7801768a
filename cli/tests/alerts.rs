//! The Prometheus alert rules in `deploy/prometheus/` checked and tested by
//! Prometheus's own `promtool` (`./dev test` installs Debian's `prometheus`
//! package for it): the rules parse, and each alert fires once per link or
//! site with its labels (`tandem-alerts.test.yml`).

use std::path::Path;
use std::process::Command;

fn promtool(args: &[&str]) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    let out = Command::new("promtool").args(args).current_dir(&dir).output().expect("promtool not found: `./dev test` installs it (Debian package prometheus)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {} failed:\n{text}", args.join(" "));
    text
}

#[test]
fn the_alert_rules_parse() {
    let out = promtool(&["check", "rules", "tandem-alerts.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn each_alert_fires_once_per_link_with_its_labels() {
    let out = promtool(&["test", "rules", "tandem-alerts.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}
