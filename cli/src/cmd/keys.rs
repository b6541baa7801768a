//! `tandem keys create`: a new local key-encryption key file (mode 0600).
//!
//! Every site must use the same key-encryption key: each site unwraps the
//! data keys of the files it serves, including replicated ones. Copy the
//! file to each site over a secure channel; the config names its path.

use std::path::PathBuf;

use anyhow::Context;
use tandem_crypto::{KeyProvider, LocalKeyFile, SystemRandomSource};

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
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Create { file, kek_id } => {
            let key = LocalKeyFile::create(&file, &kek_id, &SystemRandomSource)
                .with_context(|| format!("cannot create the key file {}", file.display()))?;
            println!("created key file {} (key id {}, mode 0600)", file.display(), key.kek_id());
            Ok(())
        }
    }
}
