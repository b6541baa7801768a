//! `tandem keys create`: a new local key-encryption key file (mode 0600).
//! `tandem keys hsm-create`: a new key-encryption key generated inside an
//! HSM token over PKCS#11 (AES-256, sensitive, not extractable).
//!
//! Every site must use the same key-encryption key: each site unwraps the
//! data keys of the files it serves, including replicated ones. Copy the
//! file to each site over a secure channel; the config names its path. An
//! HSM key never leaves the token: the sites share the token (a network
//! HSM), or the key is replicated between HSMs by the vendor's tools.

use std::path::PathBuf;

use anyhow::Context;
use tandem_crypto::{KeyProvider, LocalKeyFile, Pkcs11Token, SystemRandomSource};

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

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Create { file, kek_id } => {
            let key = LocalKeyFile::create(&file, &kek_id, &SystemRandomSource)
                .with_context(|| format!("cannot create the key file {}", file.display()))?;
            println!("created key file {} (key id {}, mode 0600)", file.display(), key.kek_id());
            Ok(())
        }
        Command::HsmCreate { module, token_label, pin_file, kek_id } => {
            let token = Pkcs11Token::open(&module, &token_label, &pin_file)?;
            let key = token.create_key(&kek_id)?;
            println!("created key {:?} in HSM token {token_label:?} (AES-256, not extractable)", key.kek_id());
            Ok(())
        }
    }
}
