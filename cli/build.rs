//! Records which commit this binary is built from, and when, for
//! `tandem --version`, `/health`, `tandem status`, `tandem_build_info` and
//! drill reports. A build from a checkout with uncommitted changes says so
//! ("-dirty").
//!
//! The commit comes from `TANDEM_BUILD_COMMIT` when set (a container build
//! has no .git in its context: `--build-arg TANDEM_BUILD_COMMIT=...`), else
//! from git, else "unknown". The date is the UTC day the build script ran,
//! or `SOURCE_DATE_EPOCH`'s day for a reproducible build.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=TANDEM_BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let commit = std::env::var("TANDEM_BUILD_COMMIT").ok().filter(|c| !c.trim().is_empty()).or_else(git_commit).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TANDEM_COMMIT={}", commit.trim());
    println!("cargo:rustc-env=TANDEM_BUILT={}", build_date());
}

/// The short commit of HEAD; re-run when HEAD moves (a commit, a checkout).
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        // Staging or committing a change rewrites the index.
        println!("cargo:rerun-if-changed={dir}/index");
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head_ref}");
        }
        println!("cargo:rerun-if-changed={dir}/packed-refs");
    }
    Some(if dirty { format!("{commit}-dirty") } else { commit })
}

fn build_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0));
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic
/// Gregorian calendar (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
