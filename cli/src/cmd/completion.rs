//! `tandem completion SHELL` and `tandem man`: generated from the same clap
//! definitions the binary parses, so they never drift from the flags.

use std::path::PathBuf;

use anyhow::Context;
use clap::CommandFactory;

#[derive(clap::Args)]
pub struct CompletionArgs {
    /// The shell to complete for, e.g. `source <(tandem completion bash)`.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(clap::Args)]
pub struct ManArgs {
    /// Write tandem.1 and one tandem-<command>.1 per subcommand here,
    /// instead of printing tandem.1.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

pub fn completion(args: CompletionArgs) -> anyhow::Result<()> {
    let mut cmd = crate::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "tandem", &mut std::io::stdout());
    Ok(())
}

pub fn man(args: ManArgs) -> anyhow::Result<()> {
    let cmd = crate::Cli::command();
    match args.out_dir {
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout()).context("cannot write the man page"),
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir).with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
            println!("man pages written to {} (man -l {}/tandem.1)", dir.display(), dir.display());
            Ok(())
        }
    }
}
