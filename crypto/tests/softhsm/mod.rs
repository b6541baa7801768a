//! Throwaway SoftHSM2 tokens for tests: a conf file whose token directory
//! is a temp dir, and tokens initialised with `softhsm2-util`. Used by the
//! crypto tests (in process) and the end-to-end tests (cli/tests/hsm.rs,
//! for daemons started with `SOFTHSM2_CONF`).
//!
//! SoftHSM2 is required, never skipped: `./dev test` installs it.
#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

pub const USER_PIN: &str = "4711-user";
const SO_PIN: &str = "4711-security-officer";

/// Where Debian and other distributions put the SoftHSM2 module.
const MODULE_PATHS: [&str; 3] =
    ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so", "/usr/local/lib/softhsm/libsofthsm2.so"];

/// The SoftHSM2 module; panics with the fix when it is not installed.
pub fn module() -> PathBuf {
    MODULE_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("SoftHSM2 is not installed (no libsofthsm2.so in {MODULE_PATHS:?}); `./dev test` installs it (apt-get install softhsm2)"))
}

/// A SoftHSM2 configuration with its own (empty) token directory under
/// `dir`. Give `conf` to processes as `SOFTHSM2_CONF`.
pub struct SoftHsm {
    pub module: PathBuf,
    pub conf: PathBuf,
    /// A file holding [`USER_PIN`], for `pin_file`.
    pub pin_file: PathBuf,
}

impl SoftHsm {
    pub fn new(dir: &Path) -> SoftHsm {
        let tokens = dir.join("softhsm-tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(&conf, format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display())).unwrap();
        let pin_file = dir.join("hsm.pin");
        std::fs::write(&pin_file, format!("{USER_PIN}\n")).unwrap();
        SoftHsm { module: module(), conf, pin_file }
    }

    /// Initialises a new token labelled `label` with [`USER_PIN`].
    pub fn init_token(&self, label: &str) {
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label, "--pin", USER_PIN, "--so-pin", SO_PIN])
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .unwrap_or_else(|e| panic!("cannot run softhsm2-util ({e}); `./dev test` installs softhsm2"));
        assert!(out.status.success(), "softhsm2-util --init-token failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Token every in-process test shares (each test uses its own key labels).
pub const SHARED_TOKEN: &str = "tandem-shared";
/// Token only the wrong-PIN test logs into: login state is per process and
/// token, so a token another test is logged into would not check the PIN.
pub const PIN_TEST_TOKEN: &str = "tandem-pin-test";

/// The process's SoftHSM2, for tests that load the module in process. The
/// module reads `SOFTHSM2_CONF` once, when first initialised, and may not
/// see tokens created after that, so both tokens are created here, before
/// any test loads it; every in-process test must come through here first.
pub fn in_process() -> &'static SoftHsm {
    static HSM: OnceLock<SoftHsm> = OnceLock::new();
    HSM.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        remove_dead_runs(root);
        let dir = root.join(format!("softhsm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let hsm = SoftHsm::new(&dir);
        hsm.init_token(SHARED_TOKEN);
        hsm.init_token(PIN_TEST_TOKEN);
        std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
        hsm
    })
}

/// Removes the token directories of earlier test processes that are gone.
fn remove_dead_runs(root: &Path) {
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("softhsm-") {
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// In-process tests take turns: hold the guard for the whole test.
/// SoftHSM2 2.6 is not reliably thread-safe across sessions (its issues
/// #573 and #688: concurrent key creation fails, or the process crashes).
/// The provider itself keeps one session per token and serialises on it.
pub fn take_turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    // A failed test poisons the lock; the next one may still run.
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}
