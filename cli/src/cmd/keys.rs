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
use tandem_controller::operations::keys;
use tandem_crypto::{KeyProvider, LocalKeyFile, Pkcs11Token, SystemRandomSource};

use super::{op_error, Audited, CliHooks, Target};
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

/// One site's rotation, as a table row.
fn row(r: &keys::SiteRotation) -> Vec<String> {
    vec![r.site.clone(), r.kek_id.clone(), r.versions_rewrapped.to_string(), r.keys_rewrapped.to_string(), r.busy.to_string(), r.remaining.to_string()]
}

const HEADERS: [&str; 6] = ["SITE", "CURRENT KEK", "VERSIONS RE-WRAPPED", "KEYS RE-WRAPPED", "BUSY (RETRY)", "KEYS UNDER OTHER KEKS"];

async fn rotate(a: RotateArgs) -> anyhow::Result<()> {
    let req =
        keys::Request { replicators: a.replicators.clone(), who: a.audited.who.clone(), why: a.audited.reason.clone(), wait: Duration::from_secs(a.wait_s) };
    let mut hooks = CliHooks::new(&a.audited, false);
    let Some(done) = keys::rotate(&a.target.client(), &super::transport(), &req, &mut hooks).await.map_err(|e| op_error(e, "key rotation"))? else {
        return Ok(());
    };
    let rows: Vec<Vec<String>> = done.sites.iter().map(row).collect();
    println!("{}", table(&HEADERS, &rows));
    println!("{}", done.result);
    if !done.complete() {
        bail!("run `tandem keys rotate` again once the sites are reachable and caught up (busy contracts are retried)");
    }
    Ok(())
}
