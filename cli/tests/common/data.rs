//! Helpers for tests that store and read contracts through the CLI.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{stderr, stdout, Cluster, SITES};

/// Deterministic bytes that contain `marker` every 4 KiB, so plaintext
/// anywhere on disk would be found by searching for the marker.
pub fn body(marker: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x: u32 = 0x9e37_79b9;
    while out.len() < len {
        if out.len() % 4096 == 0 {
            out.extend_from_slice(marker.as_bytes());
        } else {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out.push(x as u8);
        }
    }
    out.truncate(len);
    out
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The value of one sample (name with its labels, exactly as exported).
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

pub fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "command failed: {}\n{}", stderr(out), stdout(out));
    stdout(out)
}

pub fn put(c: &Cluster, at: &str, tenant: &str, id: &str, files: &[&Path], extra: &[&str]) -> Value {
    let mut args = vec!["put", "--json", "--tenant", tenant, "--id", id];
    let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    for p in &paths {
        args.extend(["--file", p.as_str()]);
    }
    args.extend(extra);
    serde_json::from_str(&ok(&c.contract(at, &args))).unwrap()
}

/// `tandem contract get` at `site` into `out`, or its error text.
pub fn get(c: &Cluster, site: &str, tenant: &str, id: &str, out: &Path) -> Result<Value, String> {
    let o = c.contract(site, &["get", "--json", "--show-pii", "--tenant", tenant, "--id", id, "--out", &out.display().to_string()]);
    if o.status.success() {
        Ok(serde_json::from_str(&stdout(&o)).unwrap())
    } else {
        Err(stderr(&o))
    }
}

pub fn wait_readable(c: &Cluster, site: &str, tenant: &str, id: &str, out: &Path) -> Value {
    c.wait_for(&format!("{tenant}/{id} readable at {site}"), || get(c, site, tenant, id, out).ok())
}

/// Runs `tandem verify` (with `args`); `Ok` when it reports no difference,
/// otherwise its report, or its error as a string when it could not run.
pub fn verify(c: &Cluster, args: &[&str]) -> Result<Value, Value> {
    let mut all = vec!["verify", "--json"];
    all.extend(args);
    let out = c.tandem(&SITES, &all);
    let Ok(report) = serde_json::from_str::<Value>(&stdout(&out)) else {
        return Err(Value::String(stderr(&out)));
    };
    if out.status.success() && report["differences"].as_array().unwrap().is_empty() {
        Ok(report)
    } else {
        Err(report)
    }
}
