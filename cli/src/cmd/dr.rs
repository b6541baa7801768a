//! `tandem dr activate --config <the DR site's controller config>`: the
//! city-wide disaster procedure. Run on the surviving site's controller host
//! with that controller stopped. It refuses while a Raft leader with a
//! quorum still answers (then it is a failover, not a disaster). Otherwise
//! it resets the site's controller store: a new cluster generation with
//! this site as the only member, owner of every shard under new epochs,
//! every other site fenced, the reset recorded in the audit log. Start the
//! controller again afterwards; nodes of the old generation are refused.
//!
//! `tandem dr rejoin --config <a returning old site's controller config>`:
//! the first step of failback after a DR activation, run on the returning
//! site's controller host with that controller stopped. It needs the
//! activated generation's leader to answer and to list this site as
//! fenced. The old controller store is kept (renamed, for the auditors) and
//! a fresh one is prepared that joins the activated generation instead of
//! starting its own; `tandem failback --site <it>` then adds it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use tandem_controller::client::ControlClient;
use tandem_controller::clock::{Clock, SystemClock};
use tandem_controller::config::NodeConfig;
use tandem_controller::raft::state_machine::{dr_reset, DrReset};
use tandem_net::{Caller, Need, Role};
use tandem_storage::RocksKv;

use super::Audited;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Make this site the only member and owner of every shard (its controller stopped).
    Activate {
        /// The surviving site's controller config.
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        audited: Audited,
    },
    /// Prepare a returning old site's controller to join the activated generation (its controller stopped).
    Rejoin {
        /// The returning site's controller config.
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        audited: Audited,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Activate { config, audited } => activate(config, audited).await,
        Command::Rejoin { config, audited } => rejoin(config, audited).await,
    }
}

/// Both commands act on a stopped controller's local store, so no server
/// can check the caller: when the site runs TLS, the operator's certificate
/// (already loaded with its key by `main`) must be signed by the CA in the
/// site's `[tls]` and carry role admin. Without `[tls]` nothing can be
/// checked and the command is allowed, as everything is over plaintext.
fn require_admin(config: &NodeConfig, what: &str) -> anyhow::Result<()> {
    let Some(site_tls) = &config.tls else { return Ok(()) };
    let Some(mine) = super::tls_files() else {
        bail!("permission denied: {what} needs role admin, and no operator certificate was given (--tls-dir or TANDEM_TLS_DIR)");
    };
    let peer = tandem_net::tls::verify_client_cert(&site_tls.ca, &mine.cert).map_err(|e| anyhow::anyhow!("permission denied: {e}"))?;
    Caller::Tls(peer).check(what, Need::Role(Role::Admin))?;
    Ok(())
}

async fn rejoin(config: PathBuf, audited: Audited) -> anyhow::Result<()> {
    audited.check_reason()?;
    let config = NodeConfig::load(&config)?;
    require_admin(&config, "dr rejoin")?;
    let me = config.this_site().clone();
    let others: Vec<String> = config.sites.iter().filter(|s| s.name != me.name).map(|s| s.addr.clone()).collect();
    let client = ControlClient::new(others, super::transport(), Duration::from_secs(5));
    let status = client
        .leader_status()
        .await
        .map_err(|e| anyhow::anyhow!("no leader of an activated generation answers ({e}): rejoin needs it to add {}; nothing changed", me.name))?;
    let role = status.cluster.sites.get(&me.name).map(|s| s.role);
    if role != Some(tandem_controller::state::SiteRole::Fenced) {
        bail!(
            "site {} leads generation {} and lists {} as {}, not fenced: rejoin is only for a site returning after a DR activation; nothing changed",
            status.raft.site,
            status.cluster.generation,
            me.name,
            role.map(|r| r.as_str()).unwrap_or("unknown")
        );
    }
    let generation = status.cluster.generation;
    let dir = config.data_dir.join("controller");
    let kept = config.data_dir.join(format!("controller.superseded-{}", SystemClock.now_unix_ms()));
    println!("plan: site {} rejoins generation {generation}, led by {}", me.name, status.raft.site);
    println!("  1. keep this site's old controller store as {} (never deleted)", kept.display());
    println!("  2. prepare an empty store that joins generation {generation} instead of starting its own cluster");
    println!("  3. then: start the controller, and run `tandem failback --site {}`", me.name);
    if audited.dry_run {
        println!("dry run: nothing changed");
        return Ok(());
    }
    if !audited.yes {
        super::change::confirm()?;
    }
    if dir.exists() {
        // Opening takes rocksdb's lock: refuses while the controller runs.
        drop(
            RocksKv::open(&dir)
                .with_context(|| format!("cannot open {} (is the controller of site {} still running? stop it first)", dir.display(), me.name))?,
        );
        std::fs::rename(&dir, &kept).with_context(|| format!("cannot move {} aside", dir.display()))?;
    }
    let kv = RocksKv::open(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    tandem_controller::raft::state_machine::prepare_join(&kv, generation).map_err(|e| anyhow::anyhow!("cannot prepare {}: {e}", dir.display()))?;
    drop(kv);
    let what = format!("site {}'s controller store reset to join generation {generation}; old store kept at {}", me.name, kept.display());
    match client.record_event(&what, "ok", &audited.who, &audited.reason).await {
        Ok(o) => println!("rejoin prepared (audit #{})", o.audit_seq),
        Err(e) => println!("rejoin prepared (not audited: {e})"),
    }
    println!("now start the controller of site {}, then: tandem failback --site {} --reason ...", me.name, me.name);
    Ok(())
}

async fn activate(config: PathBuf, audited: Audited) -> anyhow::Result<()> {
    audited.check_reason()?;
    let config = NodeConfig::load(&config)?;
    require_admin(&config, "DR activation")?;
    let me = config.this_site().clone();
    let others: Vec<String> = config.sites.iter().filter(|s| s.name != me.name).map(|s| s.addr.clone()).collect();
    let probe = ControlClient::new(others, super::transport(), Duration::from_secs(3));
    if let Ok(status) = probe.leader_status().await {
        bail!("site {} leads a Raft quorum right now: this is not a city-wide disaster. Use `tandem failover`; nothing changed", status.raft.site);
    }
    println!("plan: DR activation at site {}", me.name);
    println!("  1. new cluster generation with {} as the only Raft member", me.name);
    println!("  2. {} owns every shard under a new epoch; every other site is fenced", me.name);
    println!("  3. writes the other sites acknowledged but {} never received are lost; estimate below", me.name);
    if audited.dry_run {
        println!("dry run: nothing changed");
        return Ok(());
    }
    if !audited.yes {
        super::change::confirm()?;
    }
    let dir = config.data_dir.join("controller");
    let kv =
        RocksKv::open(&dir).with_context(|| format!("cannot open {} (is the controller of site {} still running? stop it first)", dir.display(), me.name))?;
    let loss = loss_estimate(&me.name, &tandem_controller::health::HealthBoard::load(&kv));
    for line in &loss {
        println!("  {line}");
    }
    let why = if loss.is_empty() { audited.reason.clone() } else { format!("{} (estimated loss: {})", audited.reason, loss.join("; ")) };
    let reset = DrReset { site: me.name.clone(), node_id: me.node_id, who: audited.who.clone(), why, at_unix_ms: SystemClock.now_unix_ms() };
    let result = dr_reset(&kv, &reset).map_err(|e| anyhow::anyhow!("DR activation refused: {e}; nothing changed"))?;
    drop(kv);
    println!("DR activation: {result}");
    println!("now start the controller of site {}: tandem controller --config <its config>", me.name);
    Ok(())
}

/// What the surviving site had not received from each other site, as those
/// sites last reported it to this site's controller.
fn loss_estimate(me: &str, board: &[tandem_controller::health::ReplicatorHealth]) -> Vec<String> {
    let now = SystemClock.now_unix_ms();
    let mut out = Vec::new();
    for h in board.iter().filter(|h| h.site != me) {
        let age_s = now.saturating_sub(h.received_at_unix_ms) / 1000;
        match h.links.iter().find(|l| l.peer == me) {
            Some(l) => out.push(format!(
                "{} reported {} s ago: {} entries, {} bytes not yet at {me} (oldest {} s old); anything it wrote after that is lost too",
                h.site, age_s, l.entries, l.bytes, l.seconds
            )),
            None => out.push(format!("{} reported {} s ago without a link to {me}", h.site, age_s)),
        }
    }
    if out.is_empty() {
        out.push(format!("no report from the other sites is kept at {me}: the loss cannot be estimated"));
    }
    out
}
