//! `tandem failover --from A --to B`: unplanned move of every shard of a
//! site that is down (or must be abandoned). Refused when the target may be
//! missing acknowledged writes (pair not in sync) unless
//! `--accept-data-loss`, and then the expected loss is stated.

use tandem_controller::operations::failover;

use super::{Audited, CliHooks, Target};

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
    let req = failover::Request {
        from: args.from.clone(),
        to: args.to.clone(),
        accept_data_loss: args.accept_data_loss,
        automatic: false,
        expect_epoch: args.expect_epoch,
        expect_owner: args.expect_owner.clone(),
        who: args.audited.who.clone(),
        why: args.audited.reason.clone(),
    };
    let mut hooks = CliHooks::new(&args.audited, args.json);
    let done = match failover::failover(&client, &req, &mut hooks).await {
        Ok(Some(done)) => done,
        Ok(None) => return Ok(()),
        Err(e) => return super::approve::awaiting(e, "failover"),
    };
    print_done(&done, args.json)
}

/// What a failover did, as text or JSON.
pub fn print_done(done: &tandem_controller::operations::Done<failover::Report>, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(done)?);
    } else {
        let (r, loss) = (&done.report, &done.plan.expected_loss);
        println!(
            "failover done: {} shards from {} to {} ({}); expected loss {} entries, {} bytes (audit #{}, #{})",
            r.shards, r.from, r.to, r.result, loss.entries, loss.bytes, r.fence_audit_seq, r.move_audit_seq
        );
    }
    Ok(())
}
