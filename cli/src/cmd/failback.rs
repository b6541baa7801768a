//! `tandem failback --site A`: a site returning after a failover rejoins as
//! `recovering` (no shard can be moved to it), catches up from the others
//! (progress and an estimate are printed), has its divergent writes
//! quarantined and listed (kept for reconciliation, never merged or
//! dropped), and becomes `active` again. It then prints the
//! `tandem switchover` that returns its shards.
//!
//! After a DR activation the site is `fenced` and its controller is not a
//! member of the new generation: `tandem dr rejoin` prepares it, and this
//! command first adds it to the Raft membership.

use std::time::Duration;

use serde_json::json;
use tandem_controller::client::ControlClient;
use tandem_controller::state::SiteRole;
use tandem_replicator::failback;

use super::{Audited, Target};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// The returning site.
    #[arg(long)]
    pub site: String,
    #[command(flatten)]
    pub audited: Audited,
    /// How long to wait for the site to catch up.
    #[arg(long, default_value_t = 3600)]
    pub timeout_s: u64,
    /// Print JSON at the end.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    args.audited.check_reason()?;
    let client = args.target.client();
    let status = client.leader_status().await?;
    let role = failback::check(&client, &args.site).await?;
    let returns = failback::shards_to_return(&client, &args.site).await?;
    println!("plan: failback of {}", args.site);
    if role == SiteRole::Fenced {
        println!("  0. add {}'s controller (prepared by `tandem dr rejoin`) to generation {}'s Raft membership", args.site, status.cluster.generation);
    }
    println!("  1. mark {} recovering (no shard can be moved to it meanwhile)", args.site);
    println!("  2. wait until every other site has no backlog towards {}, and it has none towards the owners", args.site);
    println!("  3. list {}'s divergent writes: quarantined there when the owners refuse them (kept, not served)", args.site);
    println!("  4. mark {} active; then return its shards with a switchover", args.site);
    if args.audited.dry_run {
        println!("dry run: nothing changed");
        return Ok(());
    }
    if !args.audited.yes {
        super::change::confirm()?;
    }
    let (who, why) = (&args.audited.who, &args.audited.reason);
    // Adding a learner waits for it to catch up: allow for that.
    let joiner = ControlClient::new(client.addrs().to_vec(), super::transport(), Duration::from_secs(120));
    let timeout = Duration::from_secs(args.timeout_s);
    let report = failback::run(&client, &joiner, super::transport(), &args.site, who, why, timeout, |p| println!("  {p}")).await?;
    for d in &report.divergent {
        println!("  {}/{}: {}", d.tenant, d.contract_id, tandem_replicator::verify::divergent_detail(&args.site, d));
    }
    let quarantined = report.divergent.iter().filter(|d| d.quarantined).count();
    let commands: Vec<String> = returns
        .iter()
        .map(|(from, shards)| format!("tandem switchover --from {from} --to {} --shards {shards} --reason \"failback of {}\"", args.site, args.site))
        .collect();
    if args.json {
        let divergent: Vec<_> = report
            .divergent
            .iter()
            .map(|d| {
                json!({
                    "seq": d.seq, "tenant": d.tenant, "contract_id": d.contract_id, "version": d.version, "origin": d.origin,
                    "epoch": d.epoch, "current_owner": d.current_owner, "quarantined": d.quarantined, "reason": d.reason,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "site": args.site, "divergent": divergent, "quarantined": quarantined, "return_shards": commands }))?
        );
    } else {
        println!(
            "failback: {} is active again (audit #{}); {} divergent writes kept there, {quarantined} of them quarantined",
            args.site,
            report.active_audit_seq,
            report.divergent.len()
        );
        for c in &commands {
            println!("return its shards with: {c}");
        }
        if commands.is_empty() {
            println!("no shard of {} is away from it: nothing to return", args.site);
        }
    }
    Ok(())
}
