//! `tandem keys create`: a new local key-encryption key file (mode 0600).
//! `tandem keys rotate`: re-wrap every stored data and PII key under the
//! current KEK, at every site, without re-encrypting any file.
//! `tandem keys hsm-create`: a new key-encryption key generated inside an
//! HSM token over PKCS#11 (AES-256, sensitive, not extractable). An HSM key
//! never leaves the token: the sites share the token (a network HSM), or
//! the key is replicated between HSMs by the vendor's tools.
//!
//! Every site must use the same key-encryption key: each site unwraps the
//! data keys of the files it serves, including replicated ones. Copy the
//! file to each site over a secure channel; the config names its path.
//! Rotation: create a new KEK, make it every replicator's `key_file` and
//! move the old one to `retired_key_files`, restart the replicators, then
//! run `tandem keys rotate`; once it reports nothing left under the old
//! KEK anywhere, remove the old KEK from the configs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use tandem_crypto::{KeyProvider, LocalKeyFile, Pkcs11Token, SystemRandomSource};
use tandem_replicator::client::ReplicatorClient;

use super::{Audited, Target};
use crate::output::table;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a key file with a fresh random key (refuses to overwrite).
    Create {
        /// Where to write it.
        #[arg(long)]
        file: PathBuf,
        /// The key's id, stored with every key it wraps (e.g. kek-2026-1).
        #[arg(long)]
        kek_id: String,
    },
    /// Re-wrap every data and PII key under each site's current KEK (the
    /// shard owners re-wrap; the re-wrapped keys replicate), then wait until
    /// no site holds a key under another KEK.
    Rotate(RotateArgs),
    /// Generate a key inside an HSM token (AES-256, non-extractable);
    /// refuses if a key with that label exists. Name it in the
    /// replicator's `[hsm] key_label`.
    HsmCreate {
        /// The PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so.
        #[arg(long, alias = "hsm-module")]
        module: PathBuf,
        /// Label of the token to create the key in.
        #[arg(long)]
        token_label: String,
        /// File holding the token's user PIN.
        #[arg(long)]
        pin_file: PathBuf,
        /// The key's label, which is its KEK id (e.g. kek-2026-1).
        #[arg(long)]
        kek_id: String,
    },
}

#[derive(clap::Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub audited: Audited,
    /// Replicator addresses as SITE=HOST:PORT (comma-separated); by
    /// default the addresses the replicators report in their heartbeats.
    #[arg(long, value_delimiter = ',')]
    pub replicators: Vec<String>,
    /// How long to wait for every site to hold only keys under the current
    /// KEK, in seconds.
    #[arg(long, default_value_t = 120)]
    pub wait_s: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Create { file, kek_id } => {
            let key = LocalKeyFile::create(&file, &kek_id, &SystemRandomSource).with_context(|| format!("cannot create the key file {}", file.display()))?;
            println!("created key file {} (key id {}, mode 0600)", file.display(), key.kek_id());
            Ok(())
        }
        Command::Rotate(a) => rotate(a).await,
        Command::HsmCreate { module, token_label, pin_file, kek_id } => {
            let token = Pkcs11Token::open(&module, &token_label, &pin_file)?;
            let key = token.create_key(&kek_id)?;
            println!("created key {:?} in HSM token {token_label:?} (AES-256, not extractable)", key.kek_id());
            Ok(())
        }
    }
}

/// One site's answer, as a table row.
fn row(site: &str, r: &tandem_proto::replicator::RotateReply) -> Vec<String> {
    vec![site.to_string(), r.kek_id.clone(), r.versions_rewrapped.to_string(), r.keys_rewrapped.to_string(), r.busy.to_string(), r.remaining.to_string()]
}

const HEADERS: [&str; 6] = ["SITE", "CURRENT KEK", "VERSIONS RE-WRAPPED", "KEYS RE-WRAPPED", "BUSY (RETRY)", "KEYS UNDER OTHER KEKS"];

async fn rotate(a: RotateArgs) -> anyhow::Result<()> {
    let control = a.target.client();
    let (_, status) = control.status().await?;
    let sites = super::verify::site_replicators(&status, &a.replicators)?;
    let client = ReplicatorClient::new(super::transport(), Duration::from_secs(30));

    // The plan: what each site holds under other KEKs, and its current KEK.
    let mut rows = Vec::new();
    let mut keks = std::collections::BTreeSet::new();
    for (site, addr) in &sites {
        let r = client.rotate(addr, true).await.with_context(|| format!("site {site}"))?;
        keks.insert(r.kek_id.clone());
        rows.push(row(site, &r));
    }
    println!("{}", table(&HEADERS, &rows));
    if keks.len() > 1 {
        bail!(
            "the sites wrap new keys with different KEKs ({}): give every replicator the same key_file and restart them first",
            keks.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    let kek = keks.into_iter().next().unwrap_or_default();
    println!("plan: every shard owner re-wraps its keys under {kek}; the re-wrapped keys replicate; no file is re-encrypted");
    if a.audited.dry_run {
        println!("dry run: nothing changed");
        return Ok(());
    }
    if !a.audited.yes {
        super::change::confirm()?;
    }

    let mut done = Vec::new();
    let (mut versions, mut keys) = (0, 0);
    for (site, addr) in &sites {
        let r = client.rotate(addr, false).await.with_context(|| format!("site {site}: rotation failed part-way; run it again (it is idempotent)"))?;
        versions += r.versions_rewrapped;
        keys += r.keys_rewrapped;
        done.push(row(site, &r));
    }
    println!("{}", table(&HEADERS, &done));

    // Done when no site holds a key under another KEK (peers apply the
    // re-wrapped keys as they receive the owners' log entries).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(a.wait_s);
    let left = loop {
        let mut left = Vec::new();
        for (site, addr) in &sites {
            let r = client.rotate(addr, true).await.with_context(|| format!("site {site}"))?;
            if r.remaining > 0 {
                left.push(format!("{site}: {}", r.remaining));
            }
        }
        if left.is_empty() || tokio::time::Instant::now() >= deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let result = if left.is_empty() {
        format!("ok: {keys} keys of {versions} versions re-wrapped under {kek}; no site holds a key under another KEK")
    } else {
        format!("incomplete: {keys} keys of {versions} versions re-wrapped under {kek}; keys under other KEKs remain ({})", left.join(", "))
    };
    control
        .record_event(&format!("key rotation to KEK {kek}"), &result, &a.audited.who, &a.audited.reason)
        .await
        .context("the rotation is done but could not be recorded in the audit log")?;
    println!("{result}");
    if !left.is_empty() {
        bail!("run `tandem keys rotate` again once the sites are reachable and caught up (busy contracts are retried)");
    }
    Ok(())
}
