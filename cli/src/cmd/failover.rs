//! `tandem failover --from A --to B`: unplanned move of every shard of a
//! site that is down (or must be abandoned). Refused when the target may be
//! missing acknowledged writes (pair not in sync) unless
//! `--accept-data-loss`, and then the expected loss is stated.

use anyhow::{bail, Context};
use serde_json::json;
use tandem_controller::failover;
use tandem_controller::plan::{plan, Action};

use super::{present_plan, Audited, Target};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// The site whose shards move (the failed one); default: the in-city
    /// peer of --to.
    #[arg(long)]
    pub from: Option<String>,
    /// The site taking them.
    #[arg(long)]
    pub to: String,
    /// Fail over even though the target may be missing acknowledged writes.
    #[arg(long)]
    pub accept_data_loss: bool,
    /// Refuse unless every shard of --from still has this epoch.
    #[arg(long)]
    pub expect_epoch: Option<u64>,
    /// Refuse unless the site whose shards move is this one (guards a
    /// script against acting on a changed layout).
    #[arg(long)]
    pub expect_owner: Option<String>,
    #[command(flatten)]
    pub audited: Audited,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    args.audited.check_reason()?;
    let client = args.target.client();
    let (status, obs) = client.observe().await?;
    let from = match &args.from {
        Some(f) => f.clone(),
        None => status
            .cluster
            .peer_of(&args.to)
            .map(str::to_string)
            .with_context(|| format!("{} has no in-city peer: name the failed site with --from", args.to))?,
    };
    if let Some(owner) = &args.expect_owner {
        if owner != &from {
            bail!("--expect-owner {owner}: the shards would move from {from}; nothing changed");
        }
    }
    let action = Action::Failover { from, to: args.to.clone(), accept_data_loss: args.accept_data_loss, automatic: false };
    let decision = plan(&status.cluster, &obs, &action);
    if !present_plan(&decision, &status.cluster.shards, args.expect_epoch, &args.audited, args.json)? {
        return Ok(());
    }
    let json = args.json;
    let report = failover::run(&client, &decision, false, &args.audited.who, &args.audited.reason, |line| {
        if !json {
            println!("  {line}");
        }
    })
    .await
    .context("failover failed")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&json!({ "plan": decision, "report": report }))?);
    } else {
        println!(
            "failover done: {} shards from {} to {} ({}); expected loss {} entries, {} bytes (audit #{}, #{})",
            report.shards,
            report.from,
            report.to,
            report.result,
            decision.expected_loss.entries,
            decision.expected_loss.bytes,
            report.fence_audit_seq,
            report.move_audit_seq
        );
    }
    Ok(())
}
