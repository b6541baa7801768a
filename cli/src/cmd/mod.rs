//! One file per subcommand.

pub mod approve;
pub mod audit;
pub mod backup;
pub mod bench;
pub mod certs;
pub mod change;
pub mod completion;
pub mod contract;
pub mod controller;
pub mod demo;
pub mod dr;
pub mod drill;
pub mod failback;
pub mod failover;
pub mod keys;
pub mod members;
pub mod policy;
pub mod probe;
pub mod replicator;
pub mod status;
pub mod switchover;
pub mod verify;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use clap::Args as ClapArgs;
use tandem_controller::client::ControlClient;
use tandem_controller::operations::{Hooks, OpError, Plan};
use tandem_net::{TlsFiles, Transport};

/// The operator's certificate for client commands (global flags). Without
/// any of them the CLI speaks plaintext, which only a cluster without TLS
/// accepts.
#[derive(ClapArgs, Clone, Debug, Default)]
pub struct TlsArgs {
    /// A directory from `tandem certs init` holding ca.pem, cert.pem and
    /// key.pem (e.g. <dir>/operator-alice); `tandem demo` prints its own.
    #[arg(long, env = "TANDEM_TLS_DIR", global = true)]
    pub tls_dir: Option<PathBuf>,
    /// The cluster CA's certificate (overrides the one in --tls-dir).
    #[arg(long, env = "TANDEM_TLS_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Your operator certificate (overrides the one in --tls-dir).
    #[arg(long, env = "TANDEM_TLS_CERT", global = true)]
    pub cert: Option<PathBuf>,
    /// Its private key (overrides the one in --tls-dir).
    #[arg(long, env = "TANDEM_TLS_KEY", global = true)]
    pub key: Option<PathBuf>,
}

impl TlsArgs {
    /// The files to use, if TLS was asked for at all.
    pub fn files(&self) -> anyhow::Result<Option<TlsFiles>> {
        let base = self.tls_dir.as_deref().map(TlsFiles::in_dir);
        if base.is_none() && self.ca.is_none() && self.cert.is_none() && self.key.is_none() {
            return Ok(None);
        }
        let pick = |given: &Option<PathBuf>, from_dir: Option<&PathBuf>, flag: &str| {
            given.clone().or_else(|| from_dir.cloned()).ok_or_else(|| anyhow::anyhow!("TLS needs {flag} (or --tls-dir)"))
        };
        Ok(Some(TlsFiles {
            ca: pick(&self.ca, base.as_ref().map(|b| &b.ca), "--ca")?,
            cert: pick(&self.cert, base.as_ref().map(|b| &b.cert), "--cert")?,
            key: pick(&self.key, base.as_ref().map(|b| &b.key), "--key")?,
        }))
    }
}

/// The client transport of this run, set once by `main` from [`TlsArgs`]
/// before any command runs (every command's clients use it).
static CLIENT: OnceLock<(Transport, Option<TlsFiles>)> = OnceLock::new();

/// Loads the operator's TLS files (if any) for [`transport`].
pub fn init_client_transport(args: &TlsArgs) -> anyhow::Result<()> {
    let files = args.files()?;
    let transport = Transport::over_tokio(files.as_ref()).map_err(|e| anyhow::anyhow!("TLS: {e}"))?;
    let _ = CLIENT.set((transport, files));
    Ok(())
}

/// How client commands reach the daemons: mutual TLS with the operator's
/// certificate, or plaintext when none was given.
pub fn transport() -> Transport {
    CLIENT.get().map(|(t, _)| t.clone()).unwrap_or(Transport::Tokio)
}

/// The operator's TLS files, when given.
pub fn tls_files() -> Option<TlsFiles> {
    CLIENT.get().and_then(|(_, f)| f.clone())
}

/// How to reach the cluster; shared by every client command.
#[derive(ClapArgs, Clone, Debug)]
pub struct Target {
    /// Controller addresses (host:port, comma-separated), tried in order.
    #[arg(long, env = "TANDEM_CONTROLLERS", default_value = crate::DEMO_CONTROLLERS, value_delimiter = ',')]
    pub controllers: Vec<String>,
    /// Upper bound on each call to a controller, in milliseconds. Keep it
    /// above the controllers' commit timeout (5000 ms by default).
    #[arg(long, default_value_t = 8000)]
    pub timeout_ms: u64,
}

impl Target {
    pub fn client(&self) -> ControlClient {
        ControlClient::new(self.controllers.clone(), transport(), Duration::from_millis(self.timeout_ms))
    }
}

/// The flags every audited, state-changing command takes.
#[derive(ClapArgs, Clone, Debug)]
pub struct Audited {
    /// Why: recorded in the audit log.
    #[arg(long)]
    pub reason: String,
    /// Who: recorded in the audit log (defaults to $USER).
    #[arg(long, env = "USER", default_value = "unknown")]
    pub who: String,
    /// Show the plan, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

impl Audited {
    pub fn check_reason(&self) -> anyhow::Result<()> {
        if self.reason.trim().is_empty() {
            anyhow::bail!("--reason must not be empty: the audit log records why");
        }
        Ok(())
    }
}

/// The CLI's side of every operation (`tandem_controller::operations`):
/// prints the plan (JSON with `--json`, for a dry run or a refusal), stops
/// for `--dry-run`, asks for confirmation unless `--yes`, prints each step.
pub struct CliHooks<'a> {
    audited: &'a Audited,
    json: bool,
}

impl<'a> CliHooks<'a> {
    pub fn new(audited: &'a Audited, json: bool) -> Self {
        CliHooks { audited, json }
    }
}

impl Hooks for CliHooks<'_> {
    fn plan(&mut self, plan: &Plan<'_>) {
        match (self.json, plan.decision) {
            (true, Some(d)) if self.audited.dry_run || d.refused.is_some() => {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "plan": d })).unwrap_or_default());
            }
            (true, _) => {}
            (false, _) if plan.text.ends_with('\n') => print!("{}", plan.text),
            (false, _) => println!("{}", plan.text),
        }
    }

    async fn confirm(&mut self) -> Result<bool, String> {
        if self.audited.dry_run {
            if !self.json {
                println!("dry run: nothing changed");
            }
            return Ok(false);
        }
        if !self.audited.yes {
            change::confirm().map_err(|e| e.to_string())?;
        }
        Ok(true)
    }

    fn progress(&mut self, line: &str) {
        if !self.json {
            println!("  {line}");
        }
    }
}

/// An operation's error for the operator: a refusal or a "no" as it is,
/// anything else under `what failed`.
pub fn op_error(e: OpError, what: &str) -> anyhow::Error {
    match e {
        OpError::Refused { .. } | OpError::NotConfirmed(_) => anyhow::anyhow!("{e}"),
        // Its message is the controller's, once (as a source it would print twice).
        OpError::Control(c) => anyhow::Error::new(c).context(format!("{what} failed")),
        other => anyhow::Error::new(other).context(format!("{what} failed")),
    }
}
