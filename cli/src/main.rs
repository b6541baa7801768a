//! `tandem`: the one binary for daemons, SRE commands and drills.
//!
//! Each subcommand lives in its own file under `cmd/`. Commands that talk
//! to the cluster find it through `--controllers` (or `TANDEM_CONTROLLERS`),
//! which defaults to the addresses `tandem demo` uses.

mod cmd;
mod logging;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Addresses of the three demo controllers; the default target of every
/// cluster command, so `tandem status` just works next to `tandem demo`.
pub const DEMO_CONTROLLERS: &str = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103";

/// `tandem --version`: the version, the commit and the build date (see build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("TANDEM_COMMIT"), ", built ", env!("TANDEM_BUILT"), ")");

/// This binary's build, as daemons report it (heartbeats, Status, /health).
fn build_info() -> tandem_net::version::BuildInfo {
    tandem_net::version::BuildInfo { version: env!("CARGO_PKG_VERSION").into(), commit: env!("TANDEM_COMMIT").into(), built: env!("TANDEM_BUILT").into() }
}

#[derive(Parser)]
#[command(name = "tandem", version = VERSION, about = "Disaster-recovery controller for the contract platform")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as human-readable text or JSON objects (PII and key
    /// material are masked in both).
    #[arg(long, global = true, env = "TANDEM_LOG_FORMAT", value_enum, default_value_t = logging::LogFormat::Human)]
    log_format: logging::LogFormat,
    #[command(flatten)]
    tls: cmd::TlsArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a controller node (one per site) from its TOML config.
    Controller(cmd::controller::Args),
    /// Run a replicator (one per site: the contract store and its replication) from its TOML config.
    Replicator(cmd::replicator::Args),
    /// Start a complete local three-site cluster (A and B in one city, C the DR site).
    Demo(cmd::demo::Args),
    /// Show sites, roles, Raft state, shard owners and replication modes.
    Status(cmd::status::Args),
    /// List the audit log, newest first.
    Audit(cmd::audit::Args),
    /// List what tandem detected, did or declined by itself (from the audit log).
    Events(cmd::audit::Args),
    /// Pause automatic actions (automatic failover).
    Pause(cmd::change::Args),
    /// Resume automatic actions.
    Resume(cmd::change::Args),
    /// Planned move of shards between sites, without data loss (drain, wait, move).
    Switchover(cmd::switchover::Args),
    /// Unplanned move of a failed site's shards (refused when it would lose writes, unless --accept-data-loss).
    Failover(cmd::failover::Args),
    /// Bring a site back after a failover: recovering, catch up, divergent writes listed, active again.
    Failback(cmd::failback::Args),
    /// City-wide disaster: make the DR site the only member and owner of every shard.
    Dr(cmd::dr::Args),
    /// Put, get, list or destroy contracts at a replicator.
    Contract(cmd::contract::Args),
    /// Measure replication throughput and write latency against a same-run baseline (use a release build).
    Bench(cmd::bench::Args),
    /// Manage key-encryption keys (key files, HSM keys).
    Keys(cmd::keys::Args),
    /// Create a development CA and TLS certificates for sites and operators.
    Certs(cmd::certs::Args),
    /// Compare what every site stores with each shard's owner (exit 3 on differences).
    Verify(cmd::verify::Args),
    /// The deterministic DR drill: run a scenario, or fuzz fault schedules (exit 3 on a failed check).
    Drill(cmd::drill::Args),
    /// Show or change the cluster's automatic-failover policy (through Raft, audited).
    Policy(cmd::policy::Args),
    /// List the controllers' Raft members; remove a lost one, add its replacement.
    Members(cmd::members::Args),
    /// Back up a site (consistent, while it writes) into a directory or object store; list and verify backups.
    Backup(cmd::backup::Args),
    /// Approve a second admin's request (four eyes) and carry it out as yourself.
    Approve(cmd::approve::DecideArgs),
    /// Reject a request waiting for approval (nothing of it is carried out).
    Reject(cmd::approve::DecideArgs),
    /// List the requests for a second admin's approval (pending, approved, recent).
    Approvals(cmd::approve::ListArgs),
    /// Ask a daemon's /health or /ready (exit 0 when it answers 200): for healthchecks.
    Probe(cmd::probe::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(cmd::completion::CompletionArgs),
    /// Print the man page (roff), or write one per subcommand with --out-dir.
    Man(cmd::completion::ManArgs),
}

fn main() -> ExitCode {
    tandem_net::version::set(build_info());
    let cli = Cli::parse();
    // `tandem demo env` only prints the running demo's environment.
    if let Command::Demo(cmd::demo::Args { command: Some(cmd::demo::Command::Env), dir, .. }) = &cli.command {
        return match cmd::demo::print_env(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let log_file = match &cli.command {
        Command::Demo(args) => match cmd::demo::open_log(&args.dir) {
            Ok(file) => Some(file),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let level = match cli.command {
        Command::Controller(_) | Command::Replicator(_) | Command::Demo(_) => "info,openraft=warn",
        // The benchmark's cluster is torn down on purpose; only errors matter.
        Command::Bench(_) => "error,openraft=off",
        // The drill's faults make the real code log what it would log in an
        // outage; the report says what happened.
        Command::Drill(_) => "off",
        _ => "warn",
    };
    logging::init(level, cli.log_format, log_file);
    // Client commands dial with the operator's certificate; daemons take
    // theirs from their configs, and probes, completion and man dial no
    // controller.
    let own_transport = matches!(
        cli.command,
        Command::Controller(_) | Command::Replicator(_) | Command::Demo(_) | Command::Probe(_) | Command::Completion(_) | Command::Man(_)
    );
    if !own_transport {
        if let Err(e) = cmd::init_client_transport(&cli.tls) {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    // The simulation brings its own runtimes.
    if let Command::Drill(args) = cli.command {
        return match cmd::drill::run(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(3),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Controller(args) => cmd::controller::run(args).await,
            Command::Replicator(args) => cmd::replicator::run(args).await,
            Command::Demo(args) => cmd::demo::run(args).await,
            Command::Status(args) => cmd::status::run(args).await,
            Command::Audit(args) => cmd::audit::run(args, false).await,
            Command::Events(args) => cmd::audit::run(args, true).await,
            Command::Pause(args) => cmd::change::run(tandem_controller::client::Change::Pause, args).await,
            Command::Resume(args) => cmd::change::run(tandem_controller::client::Change::Resume, args).await,
            Command::Contract(args) => cmd::contract::run(args).await,
            Command::Switchover(args) => cmd::switchover::run(args).await,
            Command::Failover(args) => cmd::failover::run(args).await,
            Command::Failback(args) => cmd::failback::run(args).await,
            Command::Dr(args) => cmd::dr::run(args).await,
            Command::Verify(args) => cmd::verify::run(args).await,
            Command::Keys(args) => cmd::keys::run(args).await,
            Command::Certs(args) => cmd::certs::run(args),
            Command::Bench(args) => cmd::bench::run(args).await,
            Command::Policy(args) => cmd::policy::run(args).await,
            Command::Members(args) => cmd::members::run(args).await,
            Command::Backup(args) => cmd::backup::run(args).await,
            Command::Approve(args) => cmd::approve::approve(args).await,
            Command::Reject(args) => cmd::approve::reject(args).await,
            Command::Approvals(args) => cmd::approve::list(args).await,
            Command::Probe(args) => cmd::probe::run(args).await,
            Command::Completion(args) => cmd::completion::completion(args),
            Command::Man(args) => cmd::completion::man(args),
            Command::Drill(_) => unreachable!("drills run before the runtime starts"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
