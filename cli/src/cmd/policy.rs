//! `tandem policy show` and `tandem policy set KEY=VALUE --reason ...`: the
//! cluster's automatic-failover policy. The TOML's `[policy]` seeds it once,
//! at bootstrap; afterwards it changes only here, through Raft, audited, and
//! from the value shown (compare-and-set). Daemons warn at start when their
//! TOML says otherwise.

use anyhow::bail;
use serde::Serialize;
use tandem_controller::operations::policy::{self, SetPolicy};
use tandem_controller::state::POLICY_KEYS;

use super::{Audited, CliHooks, Target};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Show the agreed policy, each key with what it does.
    Show {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change one key: `tandem policy set cooldown_s=300 --reason "..."`.
    Set {
        /// KEY=VALUE; `tandem policy show` lists the keys.
        assignment: String,
        /// Refuse unless the key holds this value now (default: the value
        /// the plan shows).
        #[arg(long)]
        expect: Option<String>,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        audited: Audited,
    },
}

#[derive(Serialize)]
struct Shown {
    key: &'static str,
    value: String,
    help: &'static str,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Show { target, json } => show(target, json).await,
        Command::Set { assignment, expect, target, audited } => set(assignment, expect, target, audited).await,
    }
}

/// From the controller that has applied the most among those that answer
/// (no quorum needed: at 3 a.m. the policy must be readable during an
/// election too); `set` checks the value at the leader.
async fn show(target: Target, json: bool) -> anyhow::Result<()> {
    let (status, _) = target.client().observe().await?;
    let p = &status.cluster.policy;
    let mut keys: Vec<Shown> = POLICY_KEYS.iter().map(|k| Shown { key: k.name, value: p.get(k.name).unwrap_or_default(), help: k.help }).collect();
    keys.push(Shown { key: "paused", value: p.paused.to_string(), help: "no automatic action while paused (tandem pause / resume)" });
    if json {
        println!("{}", serde_json::to_string_pretty(&keys)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = keys.iter().map(|k| vec![k.key.to_string(), k.value.clone(), k.help.to_string()]).collect();
    println!("{}", crate::output::table(&["KEY", "VALUE", "MEANING"], &rows));
    println!("(agreed through Raft; as applied by site {}'s controller)", status.raft.site);
    Ok(())
}

async fn set(assignment: String, expect: Option<String>, target: Target, audited: Audited) -> anyhow::Result<()> {
    audited.check_reason()?;
    let Some((key, value)) = assignment.split_once('=') else {
        bail!("expected KEY=VALUE (e.g. cooldown_s=300), got {assignment:?}");
    };
    let req = SetPolicy { key: key.trim().to_string(), value: value.trim().to_string(), expect, who: audited.who.clone(), why: audited.reason.clone() };
    let mut hooks = CliHooks::new(&audited, false);
    let client = target.client();
    let outcome = match policy::set(&client, &req, &mut hooks).await {
        Ok(o) => o,
        Err(e) => return super::approve::awaiting(e, "policy set"),
    };
    if let Some(o) = outcome {
        println!("policy {}: {} (audit #{}, leader {})", req.key, o.result, o.audit_seq, o.leader_addr);
    }
    Ok(())
}
