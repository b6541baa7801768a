//! Which build this process runs: the crate version, the commit and the
//! build date. The `tandem` binary sets it once at start from what its build
//! script recorded; libraries read it for heartbeats, Status, `/health` and
//! `tandem_build_info`. Unset (the simulation, library tests) it reads as
//! the crate version with commit "unknown", and heartbeats and Status carry
//! no version at all ([`reported`] is empty), so drill traces do not depend
//! on which build ran them, nor on the version's length.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// The workspace version ("0.1.0").
    pub version: String,
    /// Short git commit, or "unknown" when built outside a checkout.
    pub commit: String,
    /// UTC date of the build (YYYY-MM-DD), or "unknown".
    pub built: String,
}

impl BuildInfo {
    /// How status lines and heartbeats name a build: "0.1.0+1a2b3c4d5e6f".
    pub fn label(&self) -> String {
        format!("{}+{}", self.version, self.commit)
    }
}

static BUILD: OnceLock<BuildInfo> = OnceLock::new();

/// Records this process's build (first call wins).
pub fn set(info: BuildInfo) {
    let _ = BUILD.set(info);
}

/// This process's build.
pub fn current() -> BuildInfo {
    BUILD.get().cloned().unwrap_or_else(|| BuildInfo { version: env!("CARGO_PKG_VERSION").into(), commit: "unknown".into(), built: "unknown".into() })
}

/// The version daemons report in heartbeats and Status: this build's label,
/// or "" when no build was recorded (the simulation, library tests).
pub fn reported() -> String {
    BUILD.get().map(BuildInfo::label).unwrap_or_default()
}
