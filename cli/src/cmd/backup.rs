//! `tandem backup create|list|verify|restore`: backups of one site (a
//! consistent cut of its metadata and the ciphertext it names; see
//! replicator/src/backup.rs) into a directory or an object store, taken by
//! the site's replicator while it keeps writing. `list` and `verify` read
//! the destination directly and need no key. `restore` runs on the site's
//! host with its replicator stopped, into an empty store; the replicator
//! then catches up before it serves (replicator/src/restore.rs).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use tandem_replicator::backup;
use tandem_replicator::client::ReplicatorClient;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

/// Where backups live: an absolute directory or an object-store URL.
#[derive(clap::Args, Clone, Debug)]
pub struct Destination {
    /// An absolute directory, or s3://bucket/prefix (or gs://, az://).
    /// Credentials come from the environment (AWS_ACCESS_KEY_ID, ...).
    /// (`--to` is the same, for `create`.)
    #[arg(long = "at", visible_alias = "to")]
    pub url: String,
    /// A backend option, KEY=VALUE (region, endpoint, allow_http...; repeatable).
    #[arg(long = "option", value_parser = super::contract::key_value)]
    pub options: Vec<(String, String)>,
}

impl Destination {
    fn options(&self) -> BTreeMap<String, String> {
        self.options.iter().cloned().collect()
    }
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Take a backup of a site, by its replicator (writes go on meanwhile).
    Create {
        /// The replicator of the site to back up (host:port).
        #[arg(long, env = "TANDEM_REPLICATOR", default_value = super::contract::DEMO_REPLICATOR)]
        replicator: String,
        #[command(flatten)]
        to: Destination,
        /// Why: recorded in the backup's manifest.
        #[arg(long)]
        reason: String,
        /// Who: recorded in the manifest (with TLS, your certificate's name).
        #[arg(long, env = "USER", default_value = "unknown")]
        who: String,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the complete backups in a destination, oldest first.
    List {
        #[command(flatten)]
        from: Destination,
        #[arg(long)]
        json: bool,
    },
    /// Check backups without any key: the metadata dump (length, hash, every
    /// record's crc) and every file (length, BLAKE3, every segment's crc).
    /// Exit 3 when a backup is damaged.
    Verify {
        #[command(flatten)]
        from: Destination,
        /// One backup (default: every one in the destination).
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Restore a site from a backup, on its host, with its replicator
    /// stopped, into an empty metadata store. Started again, the replicator
    /// serves nothing until it has caught up with its peers (destroys since
    /// the backup included); then `tandem failback --site` and a switchover
    /// return its shards. See runbooks/backup.md.
    Restore {
        /// The site's replicator config (its stores are written).
        #[arg(long)]
        config: std::path::PathBuf,
        #[command(flatten)]
        from: Destination,
        /// The backup (`tandem backup list`).
        #[arg(long)]
        id: String,
        /// Why: kept with the restored store and logged by the replicator.
        #[arg(long)]
        reason: String,
        #[arg(long, env = "USER", default_value = "unknown")]
        who: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Create { replicator, to, reason, who, json } => {
            if reason.trim().is_empty() {
                bail!("--reason must not be empty: it is recorded in the manifest");
            }
            // Hours for a large site: bounded by the replicator, not here.
            let client = ReplicatorClient::new(super::transport(), Duration::from_secs(24 * 3600));
            let m = client.backup(&replicator, &to.url, &to.options(), &who, &reason).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                println!(
                    "backup {} of site {} at {}: {} records ({} versions, log head {}), {} files ({} copied, {} already there){}",
                    m.id,
                    m.site,
                    to.url,
                    m.records,
                    m.versions,
                    m.log_head,
                    m.blobs.len(),
                    m.copied,
                    m.reused,
                    if m.gone.is_empty() { String::new() } else { format!(", {} destroyed meanwhile", m.gone.len()) }
                );
            }
            Ok(())
        }
        Command::List { from, json } => {
            let dest = backup::destination(&from.url, &from.options())?;
            let all = backup::list(&dest).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|m| {
                    vec![
                        m.id.clone(),
                        m.site.clone(),
                        crate::output::utc(m.created_unix_ms),
                        m.records.to_string(),
                        m.blobs.len().to_string(),
                        m.copied.to_string(),
                        m.who.clone(),
                        m.why.clone(),
                    ]
                })
                .collect();
            println!("{}", crate::output::table(&["ID", "SITE", "TAKEN", "RECORDS", "FILES", "COPIED", "WHO", "WHY"], &rows));
            Ok(())
        }
        Command::Verify { from, id, json } => {
            let dest = backup::destination(&from.url, &from.options())?;
            let ids = match id {
                Some(id) => vec![id],
                None => backup::list(&dest).await?.into_iter().map(|m| m.id).collect(),
            };
            if ids.is_empty() {
                bail!("no backup in {}", from.url);
            }
            let mut results = Vec::new();
            for id in ids {
                results.push(backup::verify(&dest, &id).await?);
            }
            let damaged = results.iter().filter(|v| !v.problems.is_empty()).count();
            if json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            } else {
                for v in &results {
                    let verdict = if v.problems.is_empty() { "ok".to_string() } else { format!("DAMAGED ({} problems)", v.problems.len()) };
                    println!("{}: {verdict}: {} records, {} files, {} segments checked", v.id, v.records, v.blobs, v.segments);
                    for p in &v.problems {
                        println!("  {p}");
                    }
                }
            }
            if damaged > 0 {
                eprintln!("{damaged} backup(s) damaged");
                // As `tandem verify`: 3 means "checked, and found damage".
                std::process::exit(3);
            }
            Ok(())
        }
        Command::Restore { config, from, id, reason, who, json } => {
            if reason.trim().is_empty() {
                bail!("--reason must not be empty: it is kept with the restored store");
            }
            let config = tandem_replicator::config::ReplicatorConfig::load(&config)?;
            let source = backup::destination(&from.url, &from.options())?;
            // Checked before the stores are opened (into_store checks again).
            let manifest = backup::manifest(&source, &id).await?;
            if manifest.site != config.site {
                bail!("backup {id} is of site {}, and this config is site {}'s: nothing was restored", manifest.site, config.site);
            }
            let (kv, blobs) = super::replicator::open_stores(&config)?;
            let meta = tandem_replicator::meta::MetaStore::new(std::sync::Arc::new(kv));
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
            let req = tandem_replicator::restore::Request { from: &source, id: &id, site: &config.site, who: &who, why: reason.trim(), now_unix_ms: now };
            let r = tandem_replicator::restore::into_store(&meta, &blobs, &req).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "restored backup {} into site {}: {} records, {} files ({} bytes); its log head in the backup was {}",
                    r.backup_id, r.site, r.records, r.files, r.bytes, r.backup_log_head
                );
                println!("next: start the replicator; it serves nothing until it has caught up with its peers (tandem status shows it),");
                println!("      then `tandem failback --site {}` and a switchover return its shards (runbooks/backup.md)", r.site);
            }
            Ok(())
        }
    }
}
