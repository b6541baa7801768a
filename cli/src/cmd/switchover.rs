//! `tandem switchover --from A --to B`: planned move of shards with no data
//! loss. Shows the plan (also with `--dry-run`), asks for confirmation
//! unless `--yes`, then drains, waits for the target, and moves; prints the
//! measured write pause. `--cancel` undoes a drain left behind by an
//! interrupted switchover.

use std::time::Duration;

use anyhow::bail;
use tandem_controller::operations::switchover;

use super::{op_error, Audited, CliHooks, Target};

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
    let mut hooks = CliHooks::new(&args.audited, args.json);
    let (who, why) = (args.audited.who.clone(), args.audited.reason.clone());
    if args.cancel {
        let req = switchover::CancelRequest { from: args.from.clone(), to: args.to.clone(), shards: args.shards.clone().map(|l| l.0), who, why };
        if let Some(result) = switchover::cancel(&client, &req, &mut hooks).await.map_err(|e| op_error(e, "cancel"))? {
            println!("cancel: {result}");
        }
        return Ok(());
    }
    let req = switchover::Request {
        from: args.from.clone(),
        to: args.to.clone(),
        shards: args.shards.clone().map(|l| l.0),
        expect_epoch: args.expect_epoch,
        who,
        why,
        catch_up_timeout: Duration::from_secs(args.timeout_s),
    };
    let Some(done) = switchover::switchover(&client, &super::transport(), &req, &mut hooks).await.map_err(|e| op_error(e, "switchover"))? else {
        return Ok(());
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else {
        let r = &done.report;
        println!(
            "switchover done: {} shards from {} to {} ({}); writes to them paused for {} ms; {} entries drained first (audit #{}, #{})",
            r.shards, r.from, r.to, r.result, r.write_pause_ms, r.drained_entries, r.drain_audit_seq, r.move_audit_seq
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
