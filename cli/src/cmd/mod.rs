//! One file per subcommand.

pub mod audit;
pub mod bench;
pub mod change;
pub mod contract;
pub mod controller;
pub mod demo;
pub mod dr;
pub mod drill;
pub mod failback;
pub mod failover;
pub mod keys;
pub mod replicator;
pub mod status;
pub mod switchover;
pub mod verify;

use std::time::Duration;

use clap::Args as ClapArgs;
use tandem_controller::client::ControlClient;
use tandem_net::Transport;

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
        ControlClient::new(self.controllers.clone(), Transport::Tokio, Duration::from_millis(self.timeout_ms))
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

/// Shows a planner decision, then stops on a refusal or `--dry-run`, and
/// asks for confirmation unless `--yes`. Returns whether to go ahead.
pub fn present_plan(
    decision: &tandem_controller::plan::Decision,
    shards: &[tandem_controller::state::Shard],
    expect_epoch: Option<u64>,
    audited: &Audited,
    json: bool,
) -> anyhow::Result<bool> {
    if let Some(expected) = expect_epoch {
        if let Some(n) = decision.shards.iter().find(|n| shards[**n as usize].epoch != expected) {
            anyhow::bail!("--expect-epoch {expected} is stale: shard {n} has epoch {}; nothing changed", shards[*n as usize].epoch);
        }
    }
    if json && (audited.dry_run || decision.refused.is_some()) {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "plan": decision }))?);
    } else if !json {
        print!("{}", decision.explain());
    }
    if let Some(r) = &decision.refused {
        anyhow::bail!("{} refused: {r}; nothing changed", decision.action);
    }
    if audited.dry_run {
        if !json {
            println!("dry run: nothing changed");
        }
        return Ok(false);
    }
    if !audited.yes {
        change::confirm()?;
    }
    Ok(true)
}
