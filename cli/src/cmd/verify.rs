//! `tandem verify [--repair]`: compare every site's per-shard digests with
//! the shard owner's and list each difference; `--repair` copies the
//! owner's version to the sites that miss it or differ.
//!
//! The shard map comes from the controllers, and each site's replicator
//! address from its latest heartbeat (or `--replicators`).

use tandem_controller::operations::verify;
use tandem_controller::operations::GoAhead;

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
    let req = verify::Request { replicators: args.replicators.clone(), deep: args.deep, repair: args.repair };
    let report = verify::verify_cluster(&args.target.client(), &super::transport(), &req, &mut GoAhead).await?;
    print_report(&args, &report)?;
    // A script can tell "differences found" from success.
    if report.unresolved() > 0 {
        std::process::exit(3);
    }
    Ok(())
}

fn print_report(args: &Args, report: &verify::Report) -> anyhow::Result<()> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
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
    for r in &report.repairs {
        println!("repair: {r}");
    }
    Ok(())
}
