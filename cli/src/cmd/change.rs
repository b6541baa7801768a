//! `tandem pause` / `tandem resume`: state-changing commands.
//!
//! Like every state-changing command: `--dry-run` shows what would change
//! and changes nothing; without `--yes` it asks for confirmation (and
//! refuses when nobody can answer); `--reason` is required and recorded
//! with who ran it in the audit log.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::bail;
use tandem_controller::client::Change;
use tandem_controller::operations;

use super::{op_error, Audited, CliHooks, Target};

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
    let pause = matches!(change, Change::Pause);
    let verb = if pause { "pause automatic actions" } else { "resume automatic actions" };
    let mut hooks = CliHooks::new(&args.audited, false);
    let outcome = operations::pause::pause(&client, pause, &args.audited.who, &args.audited.reason, &mut hooks).await.map_err(|e| op_error(e, verb))?;
    if let Some(o) = outcome {
        println!("{}: {} (audit #{}, leader {})", verb, o.result, o.audit_seq, o.leader_addr);
    }
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
