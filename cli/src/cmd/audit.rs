//! `tandem audit`: who did what, when, why, and the result.
//! `tandem events`: the same log, only what tandem did or declined by
//! itself (detections, automatic failovers, replication mode changes).

use super::Target;
use crate::output::{table, utc};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// How many entries, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Entries written by tandem's own components, not by an operator.
pub fn is_event(who: &str) -> bool {
    who.starts_with("controller@") || who.starts_with("replicator@")
}

pub async fn run(args: Args, events_only: bool) -> anyhow::Result<()> {
    let mut entries = args.target.client().audit(args.limit).await?;
    if events_only {
        entries.retain(|e| is_event(&e.who));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!("{}", if events_only { "no events in the latest audit entries" } else { "the audit log is empty" });
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| vec![e.seq.to_string(), utc(e.at_unix_ms), e.who.clone(), e.what.clone(), e.result.clone(), e.why.clone()])
        .collect();
    println!("{}", table(&["SEQ", "WHEN (UTC)", "WHO", "WHAT", "RESULT", "WHY"], &rows));
    Ok(())
}
