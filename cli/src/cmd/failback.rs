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

use anyhow::{bail, Context};
use serde_json::json;
use tandem_controller::ops::SiteRoleSpec;
use tandem_controller::state::SiteRole;
use tandem_net::Transport;
use tandem_proto::replicator as pb;

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
    let (_, status) = client.status().await?;
    let site = status.cluster.sites.get(&args.site).with_context(|| format!("unknown site {:?}", args.site))?.clone();
    let owned = status.cluster.shards.iter().filter(|s| s.owner == args.site).count();
    if owned > 0 {
        bail!("{} owns {owned} shards: failback is for a site that lost its shards in a failover", args.site);
    }
    if site.role == SiteRole::DrStandby {
        bail!("{} is a DR standby; failback is for a site that lost its shards in a failover or a DR activation", args.site);
    }
    let returns = shards_moved_away(&client, &args.site).await;
    println!("plan: failback of {}", args.site);
    if site.role == SiteRole::Fenced {
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
    if site.role == SiteRole::Fenced {
        // Adding a learner waits for it to catch up: allow for that.
        let joiner = tandem_controller::client::ControlClient::new(client.addrs().to_vec(), Transport::Tokio, Duration::from_secs(120));
        let o = joiner.join(&args.site, who, why).await.with_context(|| {
            format!("{}'s controller could not join (run `tandem dr rejoin` for it and start it first)", args.site)
        })?;
        println!("  {}'s controller joined: {} (audit #{})", args.site, o.result, o.audit_seq);
        let spec = SiteRoleSpec { site: args.site.clone(), expect: SiteRole::Fenced, role: SiteRole::Recovering };
        let o = client.set_site_role(&spec, who, why).await?;
        if !o.result.starts_with("ok") {
            bail!("marking {} recovering was refused: {}", args.site, o.result);
        }
        println!("  {} is recovering (audit #{})", args.site, o.audit_seq);
    }
    if site.role == SiteRole::Active {
        let o = client.set_site_role(&SiteRoleSpec { site: args.site.clone(), expect: SiteRole::Active, role: SiteRole::Recovering }, who, why).await?;
        if !o.result.starts_with("ok") {
            bail!("marking {} recovering was refused: {}", args.site, o.result);
        }
        println!("  {} is recovering (audit #{})", args.site, o.audit_seq);
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_s);
    let mut last: Option<(tokio::time::Instant, u64)> = None;
    let replicator_addr = loop {
        let (node, s) = client.observe().await?;
        let fresh = |site: &str| {
            s.replicators.iter().find(|h| h.site == site).filter(|h| s.now_unix_ms.saturating_sub(h.received_at_unix_ms) < 5_000)
        };
        let (mut entries, mut bytes) = (0u64, 0u64);
        for h in s.replicators.iter().filter(|h| h.site != args.site) {
            if let Some(l) = h.links.iter().find(|l| l.peer == args.site) {
                entries += l.entries;
                bytes += l.bytes;
            }
        }
        // Its own entries towards the owners: shipped, or refused and
        // quarantined there (so the divergent list below is complete).
        let owners: std::collections::BTreeSet<&str> = node.cluster.shards.iter().map(|sh| sh.owner.as_str()).collect();
        let outgoing: u64 = fresh(&args.site)
            .map(|own| own.links.iter().filter(|l| owners.contains(l.peer.as_str())).map(|l| l.entries).sum())
            .unwrap_or(0);
        if let Some(own) = fresh(&args.site) {
            if entries == 0 && outgoing == 0 {
                break own.addr.clone();
            }
        }
        let now = tokio::time::Instant::now();
        let eta = match last {
            Some((t, b)) if b > bytes => {
                let rate = (b - bytes) as f64 / (now - t).as_secs_f64().max(0.001);
                format!("about {:.0} s left", bytes as f64 / rate)
            }
            _ => "estimating".into(),
        };
        println!("  catching up: {entries} entries, {bytes} bytes behind ({eta}); {outgoing} own entries not yet settled with the owners");
        last = Some((now, bytes));
        if now >= deadline {
            bail!("{} did not catch up within {} s; it stays recovering (run failback again to continue)", args.site, args.timeout_s);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    println!("  {} has caught up", args.site);

    let channel = Transport::Tokio.channel(&replicator_addr)?;
    let mut rc = tandem_replicator::ship::client(channel);
    let divergent = tokio::time::timeout(Duration::from_secs(30), rc.divergent(pb::DivergentRequest {}))
        .await
        .context("the replicator did not answer")??
        .into_inner()
        .entries;
    for d in &divergent {
        println!("  {}/{}: {}", d.tenant, d.contract_id, tandem_replicator::verify::divergent_detail(&args.site, d));
    }
    let quarantined = divergent.iter().filter(|d| d.quarantined).count();
    let o = client.set_site_role(&SiteRoleSpec { site: args.site.clone(), expect: SiteRole::Recovering, role: SiteRole::Active }, who, why).await?;
    if !o.result.starts_with("ok") {
        bail!("marking {} active was refused: {}", args.site, o.result);
    }
    let commands: Vec<String> = returns
        .iter()
        .map(|(from, shards)| format!("tandem switchover --from {from} --to {} --shards {shards} --reason \"failback of {}\"", args.site, args.site))
        .collect();
    if args.json {
        let divergent: Vec<_> = divergent
            .iter()
            .map(|d| {
                json!({
                    "seq": d.seq, "tenant": d.tenant, "contract_id": d.contract_id, "version": d.version, "origin": d.origin,
                    "epoch": d.epoch, "current_owner": d.current_owner, "quarantined": d.quarantined, "reason": d.reason,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json!({ "site": args.site, "divergent": divergent, "return_shards": commands }))?);
    } else {
        println!(
            "failback: {} is active again (audit #{}); {} divergent writes kept there, {quarantined} of them quarantined",
            args.site,
            o.audit_seq,
            divergent.len()
        );
        for c in &commands {
            println!("return its shards with: {c}");
        }
        if commands.is_empty() {
            println!(
                "return its shards with: tandem switchover --from <current owner> --to {} --shards <its shards> --reason \"failback of {}\"",
                args.site, args.site
            );
        }
    }
    Ok(())
}

/// Where the site's shards went, from the audit log's moves:
/// (new owner, shard ranges as `--shards` takes them).
async fn shards_moved_away(client: &tandem_controller::client::ControlClient, site: &str) -> Vec<(String, String)> {
    let Ok(entries) = client.leader_audit(10_000).await else { return Vec::new() };
    let prefix = "move ";
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| e.result.starts_with("ok") && e.what.starts_with(prefix)) {
        // "move 32 shards (0-31) from a to b"
        let (Some(open), Some(close)) = (e.what.find('('), e.what.find(')')) else { continue };
        let ranges = e.what[open + 1..close].replace(' ', "");
        let rest = &e.what[close + 1..];
        if let Some(to) = rest.trim().strip_prefix(&format!("from {site} to ")) {
            out.push((to.to_string(), ranges));
        }
    }
    out
}
