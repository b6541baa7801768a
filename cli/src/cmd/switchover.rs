//! `tandem switchover --from A --to B`: planned move of shards with no data
//! loss. Shows the plan (also with `--dry-run`), asks for confirmation
//! unless `--yes`, then drains, waits for the target, and moves; prints the
//! measured write pause. `--cancel` undoes a drain left behind by an
//! interrupted switchover.

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;
use tandem_controller::plan::{plan, Action};
use tandem_controller::switchover;

use super::{present_plan, Audited, Target};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// The site giving up the shards.
    #[arg(long)]
    pub from: String,
    /// The site taking them.
    #[arg(long)]
    pub to: String,
    /// Shards to move, e.g. `0-31,40` (default: every shard of --from).
    #[arg(long, value_parser = parse_shards)]
    pub shards: Option<ShardList>,
    /// Refuse unless every shard still has this epoch.
    #[arg(long)]
    pub expect_epoch: Option<u64>,
    /// Refuse unless --from still owns the shards (it always must; this
    /// makes the expectation explicit in scripts and runbooks).
    #[arg(long)]
    pub expect_owner: Option<String>,
    #[command(flatten)]
    pub audited: Audited,
    /// How long to wait for the target to confirm the source's log.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
    /// Undo the drain of an interrupted switchover instead.
    #[arg(long)]
    pub cancel: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// A parsed `--shards` list.
#[derive(Clone, Debug)]
pub struct ShardList(pub Vec<u32>);

/// "0-3,7" -> [0, 1, 2, 3, 7].
pub fn parse_shards(s: &str) -> Result<ShardList, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad shard list {s:?}: use numbers and ranges like 0-31,40");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err("empty shard list".into());
    }
    Ok(ShardList(out))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    args.audited.check_reason()?;
    if let Some(owner) = &args.expect_owner {
        if owner != &args.from {
            bail!("--expect-owner {owner} contradicts --from {}", args.from);
        }
    }
    let client = args.target.client();
    let (status, obs) = client.observe().await?;
    if args.cancel {
        let shards: Vec<u32> = args.shards.clone().map(|l| l.0).unwrap_or_else(|| {
            (0..status.cluster.shards.len() as u32)
                .filter(|n| {
                    let s = &status.cluster.shards[*n as usize];
                    s.owner == args.from && s.moving_to.as_deref() == Some(args.to.as_str())
                })
                .collect()
        });
        if shards.is_empty() {
            println!("nothing to cancel: no shard of {} is being drained towards {}", args.from, args.to);
            return Ok(());
        }
        println!("plan: cancel the drain of {} at {}", tandem_controller::ops::describe_shards(&shards), args.from);
        if args.audited.dry_run {
            println!("dry run: nothing changed");
            return Ok(());
        }
        if !args.audited.yes {
            super::change::confirm()?;
        }
        let result = switchover::cancel(&client, &args.from, &args.to, shards, false, &args.audited.who, &args.audited.reason).await?;
        println!("cancel: {result}");
        return Ok(());
    }

    let action = Action::Switchover { from: args.from.clone(), to: args.to.clone(), shards: args.shards.clone().map(|l| l.0) };
    let decision = plan(&status.cluster, &obs, &action);
    if decision.refused.is_none() {
        refuse_divergent_target(&obs, &args.to, &decision.shards).await?;
    }
    if !present_plan(&decision, &status.cluster.shards, args.expect_epoch, &args.audited, args.json)? {
        return Ok(());
    }
    let json = args.json;
    let report = switchover::run(&client, &decision, args.expect_epoch, &args.audited.who, &args.audited.reason, Duration::from_secs(args.timeout_s), |line| {
        if !json {
            println!("  {line}");
        }
    })
    .await
    .context("switchover failed")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&json!({ "plan": decision, "report": report }))?);
    } else {
        println!(
            "switchover done: {} shards from {} to {} ({}); writes to them paused for {} ms; {} entries drained first (audit #{}, #{})",
            report.shards, report.from, report.to, report.result, report.write_pause_ms, report.drained_entries, report.drain_audit_seq, report.move_audit_seq
        );
    }
    Ok(())
}

/// A target that still holds divergent writes for these shards (written
/// there under an older epoch, never received by the owner) would serve
/// them as current once it owns the shards again: refuse until they are
/// reconciled.
async fn refuse_divergent_target(obs: &tandem_controller::plan::Observations, to: &str, shards: &[u32]) -> anyhow::Result<()> {
    let Some(addr) = obs.replicators.iter().find(|h| h.site == to).map(|h| h.addr.clone()) else { return Ok(()) };
    let channel = super::transport().channel(&addr)?;
    let mut client = tandem_replicator::ship::client(channel);
    let reply = tokio::time::timeout(Duration::from_secs(30), client.divergent(tandem_proto::replicator::DivergentRequest {}))
        .await
        .map_err(|_| anyhow::anyhow!("{to}'s replicator did not answer whether it holds divergent writes"))?
        .map_err(|s| anyhow::anyhow!("{to}'s replicator: {}", s.message()))?
        .into_inner();
    let blocking: Vec<String> = reply
        .entries
        .iter()
        // Quarantined writes are no longer served; the others would be.
        .filter(|e| shards.contains(&e.shard) && !e.quarantined)
        .map(|e| format!("{}/{} (log entry {}, epoch {})", e.tenant, e.contract_id, e.seq, e.epoch))
        .collect();
    if !blocking.is_empty() {
        bail!(
            "switchover refused: {to} holds divergent writes for these shards, which it would serve as current: {}. \
             Reconcile them first (runbooks/verify-repair.md); nothing changed",
            blocking.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_shards;

    #[test]
    fn shard_lists_parse_ranges_and_refuse_nonsense() {
        assert_eq!(parse_shards("0-3,7").unwrap().0, vec![0, 1, 2, 3, 7]);
        assert!(parse_shards("3-1").is_err());
        assert!(parse_shards("x").is_err());
        assert!(parse_shards("").is_err());
    }
}
