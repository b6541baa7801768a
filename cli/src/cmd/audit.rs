//! `tandem audit`: who did what, when, why, and the result.

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

pub async fn run(args: Args) -> anyhow::Result<()> {
    let entries = args.target.client().audit(args.limit).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!("the audit log is empty");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| vec![e.seq.to_string(), utc(e.at_unix_ms), e.who.clone(), e.what.clone(), e.result.clone(), e.why.clone()])
        .collect();
    println!("{}", table(&["SEQ", "WHEN (UTC)", "WHO", "WHAT", "RESULT", "WHY"], &rows));
    Ok(())
}
