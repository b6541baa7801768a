//! `tandem pause` / `tandem resume`: state-changing commands.
//!
//! Like every state-changing command: `--dry-run` shows what would change
//! and changes nothing; without `--yes` it asks for confirmation (and
//! refuses when nobody can answer); `--reason` is required and recorded
//! with who ran it in the audit log.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::bail;
use tandem_controller::client::Change;

use super::{Audited, Target};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub audited: Audited,
}

pub async fn run(change: Change, args: Args) -> anyhow::Result<()> {
    args.audited.check_reason()?;
    let client = args.target.client();
    let (_, status) = client.status().await?;
    let paused = status.cluster.policy.paused;
    let (verb, would_change) = match change {
        Change::Pause => ("pause automatic actions", !paused),
        Change::Resume => ("resume automatic actions", paused),
    };
    let now = if paused { "paused" } else { "not paused" };
    let plan = if would_change {
        format!("plan: {verb} (now: {now})")
    } else {
        format!("plan: {verb}: no change, automatic actions are already {now} (it is still recorded in the audit log)")
    };
    println!("{plan}");
    if args.audited.dry_run {
        println!("dry run: nothing changed");
        return Ok(());
    }
    if !args.audited.yes {
        confirm()?;
    }
    let outcome = client.change(change, &args.audited.who, &args.audited.reason).await?;
    println!("{}: {} (audit #{}, leader {})", verb, outcome.result, outcome.audit_seq, outcome.leader_addr);
    Ok(())
}

pub fn confirm() -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("refusing to change the cluster without confirmation: stdin is not a terminal, pass --yes");
    }
    print!("Proceed? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        bail!("cancelled: nothing changed");
    }
    Ok(())
}
