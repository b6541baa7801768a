//! `tandem verify [--repair]`: compare every site's per-shard digests with
//! the shard owner's and list each difference; `--repair` copies the
//! owner's version to the sites that miss it or differ.
//!
//! The shard map comes from the controllers, and each site's replicator
//! address from its latest heartbeat (or `--replicators`).

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use tandem_replicator::verify::{repair, verify};

use tandem_controller::status::NodeStatus;

use super::Target;
use crate::output::table;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Replicator addresses as SITE=HOST:PORT (comma-separated); by
    /// default the addresses the replicators report in their heartbeats.
    #[arg(long, value_delimiter = ',')]
    pub replicators: Vec<String>,
    /// Also read back every stored file at every site and check it against
    /// its record (crc32 per segment, length, BLAKE3); reads all ciphertext.
    #[arg(long)]
    pub deep: bool,
    /// Copy the owner's version to every site that misses it, differs or
    /// holds a corrupt file (from another site when the owner's is corrupt).
    #[arg(long)]
    pub repair: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (_, status) = args.target.client().status().await?;
    let sites = site_replicators(&status, &args.replicators)?;
    report(&args, &status, &sites).await
}

/// Every site's replicator address: from its latest heartbeat, or from
/// `overrides` (SITE=HOST:PORT). Every site must have one.
pub fn site_replicators(status: &NodeStatus, overrides: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut sites: BTreeMap<String, String> = BTreeMap::new();
    for h in &status.replicators {
        if status.cluster.sites.contains_key(&h.site) && !h.addr.is_empty() {
            sites.insert(h.site.clone(), h.addr.clone());
        }
    }
    for entry in overrides {
        let (site, addr) = entry.split_once('=').with_context(|| format!("--replicators {entry}: expected SITE=HOST:PORT"))?;
        if !status.cluster.sites.contains_key(site) {
            bail!("--replicators names site {site}, which the cluster does not know");
        }
        sites.insert(site.to_string(), addr.to_string());
    }
    let unknown: Vec<&String> = status.cluster.sites.keys().filter(|s| !sites.contains_key(*s)).collect();
    if !unknown.is_empty() {
        bail!(
            "no replicator address for site(s) {}: they have not sent a heartbeat to the controller \
             (down?); pass --replicators SITE=HOST:PORT",
            unknown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(sites)
}

async fn report(args: &Args, status: &NodeStatus, sites: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let mut report = verify(&super::transport(), sites, &status.cluster, args.deep).await?;
    if args.repair && !report.differences.is_empty() {
        repair(&super::transport(), sites, &mut report).await;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "verified {} shards across sites {}: {} shard(s) differ, {} difference(s)",
            report.shards,
            report.sites.join(", "),
            report.shards_differing,
            report.differences.len()
        );
        if args.deep {
            println!("read back {} files ({} bytes of ciphertext)", report.files_checked, report.bytes_checked);
        }
        if !report.differences.is_empty() {
            let rows: Vec<Vec<String>> = report
                .differences
                .iter()
                .map(|d| {
                    vec![
                        d.shard.to_string(),
                        d.site.clone(),
                        d.owner.clone(),
                        format!("{}/{}", d.tenant, d.contract_id),
                        format!("{:?}", d.kind).to_lowercase(),
                        d.detail.clone(),
                    ]
                })
                .collect();
            println!("{}", table(&["SHARD", "SITE", "OWNER", "CONTRACT", "KIND", "DETAIL"], &rows));
        }
        for line in &report.repairs {
            println!("repair: {line}");
        }
    }
    // A script can tell "differences found" from success.
    let unrepaired = report.repairs.iter().any(|l| l.contains("FAILED") || l.contains("not repaired") || l.contains("divergent"));
    if !report.differences.is_empty() && (!args.repair || unrepaired) {
        std::process::exit(3);
    }
    Ok(())
}
