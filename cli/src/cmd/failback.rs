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
use tandem_controller::operations::failback;
use tandem_controller::operations::verify::divergent_detail;

use super::{op_error, Audited, CliHooks, Target};

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
    let req = failback::Request {
        site: args.site.clone(),
        who: args.audited.who.clone(),
        why: args.audited.reason.clone(),
        timeout: Duration::from_secs(args.timeout_s),
    };
    // The plan and progress are printed even with --json, which ends with
    // one JSON document.
    let mut hooks = CliHooks::new(&args.audited, false);
    let Some(report) = failback::failback(&client, &super::transport(), &req, &mut hooks).await.map_err(|e| op_error(e, "failback"))? else {
        return Ok(());
    };
    for d in &report.divergent {
        println!("  {}/{}: {}", d.tenant, d.contract_id, divergent_detail(&args.site, d));
    }
    let quarantined = report.divergent.iter().filter(|d| d.quarantined).count();
    let commands: Vec<String> = report
        .return_shards
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
