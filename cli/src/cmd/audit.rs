//! `tandem audit`: who did what, when, why, and the result.
//! `tandem audit --verify`: checks each controller's hash chain and names
//! the first broken entry. `tandem audit --export FILE`: the whole log as
//! JSON lines, oldest first, for archiving.
//! `tandem events`: the same log, only what tandem did or declined by
//! itself (detections, automatic failovers, replication mode changes).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tandem_controller::audit::ChainCheck;
use tandem_controller::client::ControlClient;
use tandem_controller::state::AuditEntry;

use super::Target;
use crate::output::{table, utc};

/// Entries per call when reading the whole log.
const PAGE: u32 = 1000;

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
    /// Check the hash chain at every controller given (each reads its own
    /// disk); exits non-zero and names the first broken entry if any.
    #[arg(long, conflicts_with = "export")]
    pub verify: bool,
    /// Write the whole log, oldest first, as JSON lines to this file (from
    /// the first controller that answers; its chain is checked too).
    #[arg(long)]
    pub export: Option<PathBuf>,
}

/// Entries written by tandem's own components, not by an operator.
pub fn is_event(who: &str) -> bool {
    who.starts_with("controller@") || who.starts_with("replicator@")
}

pub async fn run(args: Args, events_only: bool) -> anyhow::Result<()> {
    if args.verify {
        return verify(&args.target).await;
    }
    if let Some(file) = &args.export {
        return export(&args.target, file).await;
    }
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
    let rows: Vec<Vec<String>> =
        entries.iter().map(|e| vec![e.seq.to_string(), when(e), e.who.clone(), e.what.clone(), e.result.clone(), e.why.clone()]).collect();
    println!("{}", table(&["SEQ", "WHEN (UTC)", "WHO", "WHAT", "RESULT", "WHY"], &rows));
    Ok(())
}

/// When an entry was proposed, and by whose clock: sites' clocks differ,
/// and an auditor comparing times across entries needs to know which.
fn when(e: &tandem_controller::state::AuditEntry) -> String {
    match e.clock.as_str() {
        "" => utc(e.at_unix_ms),
        site => format!("{} ({site}'s clock)", utc(e.at_unix_ms)),
    }
}

/// Reads the whole log from the controller at `addr`, page by page,
/// checking the chain and handing each entry to `each`.
async fn read_chain(client: &ControlClient, addr: &str, mut each: impl FnMut(&AuditEntry) -> anyhow::Result<()>) -> anyhow::Result<ChainCheck> {
    let mut check = ChainCheck::default();
    let mut len = 0;
    loop {
        let (page, page_len) = client.audit_page(addr, check.checked + 1, PAGE).await?;
        // The count at the first page: entries appended while we read are
        // checked if they arrive, but are not required.
        if check.checked == 0 {
            len = page_len;
        }
        let done = page.len() < PAGE as usize;
        for e in &page {
            check.push(e);
            each(e)?;
        }
        if done || check.broken.is_some() {
            break;
        }
    }
    if check.checked < len {
        check.finish(len);
    }
    Ok(check)
}

async fn verify(target: &Target) -> anyhow::Result<()> {
    let client = target.client();
    let mut failures = Vec::new();
    for addr in &target.controllers {
        match read_chain(&client, addr, |_| Ok(())).await {
            Ok(check) => match &check.broken {
                None => println!("{addr}: audit chain intact, {} entries, head {}", check.checked, short(&check.head)),
                Some(b) => {
                    println!("{addr}: audit chain BROKEN at entry {}: {} ({} entries before it verified)", b.seq, b.reason, check.checked);
                    failures.push(addr.clone());
                }
            },
            Err(e) => {
                println!("{addr}: cannot read the audit log: {e:#}");
                failures.push(addr.clone());
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("the audit chain could not be verified at {}", failures.join(", "))
    }
}

async fn export(target: &Target, file: &Path) -> anyhow::Result<()> {
    let client = target.client();
    let mut last_err = None;
    for addr in &target.controllers {
        let tmp = file.with_extension("partial");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?);
        let mut written = 0u64;
        let read = read_chain(&client, addr, |e| {
            written += 1;
            serde_json::to_writer(&mut out, e)?;
            out.write_all(b"\n")?;
            Ok(())
        })
        .await;
        match read {
            Ok(check) => {
                out.into_inner().map_err(|e| e.into_error()).and_then(|f| f.sync_all()).with_context(|| format!("cannot write {}", tmp.display()))?;
                std::fs::rename(&tmp, file).with_context(|| format!("cannot write {}", file.display()))?;
                println!("exported {written} entries from {addr} to {}", file.display());
                return match check.broken {
                    None => {
                        println!("audit chain intact, head {}", check.head);
                        Ok(())
                    }
                    Some(b) => anyhow::bail!("the exported log's chain is BROKEN at entry {}: {}", b.seq, b.reason),
                };
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                last_err = Some(e.context(format!("cannot read the audit log from {addr}")));
            }
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no controller given")))
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(16)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entrys_time_names_the_clock_it_came_from() {
        let mut e = tandem_controller::state::AuditEntry {
            seq: 1,
            at_unix_ms: 1_796_000_000_000,
            clock: String::new(),
            who: "ada".into(),
            why: "test".into(),
            what: "pause".into(),
            result: "ok".into(),
            log_index: 2,
            prev_hash: String::new(),
            hash: String::new(),
        };
        assert!(!when(&e).contains("clock"), "{}", when(&e));
        e.clock = "b".into();
        assert!(when(&e).starts_with(&utc(e.at_unix_ms)) && when(&e).ends_with("(b's clock)"), "{}", when(&e));
    }
}
