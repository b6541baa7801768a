//! `tandem dr activate --config <the DR site's controller config>
//! --city-fenced <how>`: the city-wide disaster procedure. Run on the
//! surviving site's controller host with that controller stopped. It
//! refuses while a Raft leader with a quorum still answers (then it is a
//! failover, not a disaster), while another site was heard within two
//! write leases, and unless the operator states how the other sites were
//! fenced (tandem cannot see across a cut). Otherwise
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

use anyhow::bail;
use tandem_controller::client::ControlClient;
use tandem_controller::clock::{Clock, SystemClock};
use tandem_controller::config::NodeConfig;
use tandem_controller::operations::dr;
use tandem_net::{Caller, Need, Role};
use tandem_storage::RocksKv;

use super::{op_error, Audited, CliHooks};

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
        /// How the other sites were fenced (powered off, cut from their
        /// clients): required, and recorded in the audit log. Sites that
        /// still run keep writing under the old epochs.
        #[arg(long)]
        city_fenced: Option<String>,
        /// A second admin's signed approval (`tandem dr approve`): needed
        /// while the policy's four_eyes is on.
        #[arg(long)]
        approval: Option<PathBuf>,
        #[command(flatten)]
        audited: Audited,
    },
    /// Sign a second admin's approval of a DR activation at SITE (four
    /// eyes), for the admin who runs `dr activate --approval FILE` on its host.
    Approve {
        /// The site to be activated.
        #[arg(long)]
        site: String,
        /// The cluster generation it activates from (`dr activate` without
        /// an approval prints it; `tandem status` shows it): the activation
        /// moves it on, so the approval is used once.
        #[arg(long)]
        generation: u64,
        /// Why you approve it (e.g. the incident and who confirmed the disaster).
        #[arg(long)]
        reason: String,
        /// Where to write the approval (JSON).
        #[arg(long)]
        out: PathBuf,
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
        Command::Activate { config, city_fenced, approval, audited } => activate(config, city_fenced, approval, audited).await,
        Command::Approve { site, generation, reason, out } => approve(&site, generation, &reason, &out),
        Command::Rejoin { config, audited } => rejoin(config, audited).await,
    }
}

/// Both commands act on a stopped controller's local store, so no server
/// can check the caller: when the site runs TLS, the operator's certificate
/// (already loaded with its key by `main`) must be signed by the CA in the
/// site's `[tls]` and carry role admin. Without `[tls]` nothing can be
/// checked and the command is allowed, as everything is over plaintext.
/// Returns the operator's certificate name (None without `[tls]`).
fn require_admin(config: &NodeConfig, what: &str) -> anyhow::Result<Option<String>> {
    let Some(site_tls) = &config.tls else { return Ok(None) };
    let Some(mine) = super::tls_files() else {
        bail!("permission denied: {what} needs role admin, and no operator certificate was given (--tls-dir or TANDEM_TLS_DIR)");
    };
    let peer = tandem_net::tls::verify_client_cert(&site_tls.ca, &mine.cert).map_err(|e| anyhow::anyhow!("permission denied: {e}"))?;
    let name = match &peer {
        tandem_net::Peer::Operator { name, .. } => Some(name.clone()),
        _ => None,
    };
    Caller::Tls(peer).check(what, Need::Role(Role::Admin))?;
    Ok(name)
}

/// `tandem dr approve`: the second admin's signed approval.
fn approve(site: &str, generation: u64, reason: &str, out: &std::path::Path) -> anyhow::Result<()> {
    if reason.trim().is_empty() {
        bail!("--reason must not be empty: it is part of the approval");
    }
    let Some(mine) = super::tls_files() else {
        bail!("an approval is signed with your operator certificate: give it with --tls-dir or TANDEM_TLS_DIR");
    };
    let me = match tandem_net::tls::verify_client_cert(&mine.ca, &mine.cert).map_err(|e| anyhow::anyhow!("{e}"))? {
        tandem_net::Peer::Operator { name, role: Role::Admin } => name,
        other => bail!("permission denied: approving a DR activation needs role admin, certificate {other} has not"),
    };
    let file = dr::ApprovalFile::sign(&mine, &me, site, generation, reason.trim(), SystemClock.now_unix_ms()).map_err(|e| anyhow::anyhow!(e))?;
    if out.exists() {
        bail!("{} exists: not overwritten", out.display());
    }
    std::fs::write(out, serde_json::to_string_pretty(&file)?).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    println!(
        "approval of DR activation at site {site} from generation {generation} signed by {me}, valid {} min: {} (give it to the admin who activates)",
        tandem_controller::ops::approval::TTL_MS / 60_000,
        out.display()
    );
    Ok(())
}

async fn rejoin(config: PathBuf, audited: Audited) -> anyhow::Result<()> {
    audited.check_reason()?;
    let config = NodeConfig::load(&config)?;
    require_admin(&config, "dr rejoin")?;
    let me = config.this_site().clone();
    let dir = config.data_dir.join("controller");
    let kept = config.data_dir.join(format!("controller.superseded-{}", SystemClock.now_unix_ms()));
    println!("the old controller store is kept as {}", kept.display());
    let req = dr::Rejoin { site: me.name.clone(), who: audited.who.clone(), why: audited.reason.clone() };
    let prepare = |generation: u64| -> Result<String, String> {
        if dir.exists() {
            // Opening takes rocksdb's lock: refuses while the controller runs.
            drop(
                RocksKv::open(&dir)
                    .map_err(|e| format!("cannot open {} (is the controller of site {} still running? stop it first): {e}", dir.display(), me.name))?,
            );
            std::fs::rename(&dir, &kept).map_err(|e| format!("cannot move {} aside: {e}", dir.display()))?;
        }
        let kv = RocksKv::open(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        dr::prepare_rejoin(&kv, generation).map_err(|e| format!("cannot prepare {}: {e}", dir.display()))?;
        Ok(format!("site {}'s controller store reset to join generation {generation}; old store kept at {}", me.name, kept.display()))
    };
    let mut hooks = CliHooks::new(&audited, false);
    let Some((_, recorded)) = dr::rejoin(&others(&config), &req, prepare, &mut hooks).await.map_err(|e| op_error(e, "DR rejoin"))? else {
        return Ok(());
    };
    match recorded {
        Ok(seq) => println!("rejoin prepared (audit #{seq})"),
        Err(e) => println!("rejoin prepared (not audited: {e})"),
    }
    println!("now start the controller of site {}, then: tandem failback --site {} --reason ...", me.name, me.name);
    Ok(())
}

/// The other sites' controllers (a probe: short calls).
fn others(config: &NodeConfig) -> ControlClient {
    let me = &config.this_site().name;
    let addrs: Vec<String> = config.sites.iter().filter(|s| &s.name != me).map(|s| s.addr.clone()).collect();
    ControlClient::new(addrs, super::transport(), Duration::from_secs(5))
}

async fn activate(config: PathBuf, city_fenced: Option<String>, approval: Option<PathBuf>, audited: Audited) -> anyhow::Result<()> {
    audited.check_reason()?;
    let config = NodeConfig::load(&config)?;
    let operator = require_admin(&config, "DR activation")?;
    let me = config.this_site().clone();
    let approved_by = match (&approval, &config.tls) {
        (None, _) => None,
        (Some(path), None) => bail!("--approval {}: this site runs no [tls], so there is no CA to check the approval against", path.display()),
        (Some(path), Some(tls)) => {
            let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let file: dr::ApprovalFile = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: not an approval file: {e}", path.display()))?;
            Some(file.verify(&tls.ca, &me.name, SystemClock.now_unix_ms(), path).map_err(|e| anyhow::anyhow!("the approval is refused: {e}"))?)
        }
    };
    // With TLS the operator is who their certificate says.
    let audited = Audited { who: operator.unwrap_or(audited.who.clone()), ..audited };
    let dir = config.data_dir.join("controller");
    let req = dr::Activation { site: me.name.clone(), node_id: me.node_id, who: audited.who.clone(), why: audited.reason.clone(), city_fenced, approved_by };
    let open =
        || RocksKv::open(&dir).map_err(|e| format!("cannot open {} (is the controller of site {} still running? stop it first): {e}", dir.display(), me.name));
    let mut hooks = CliHooks::new(&audited, false);
    let Some(done) = dr::activate(&others(&config), &req, SystemClock.now_unix_ms(), open, &mut hooks).await.map_err(|e| op_error(e, "DR activation"))? else {
        return Ok(());
    };
    println!("DR activation: {}", done.result);
    println!("now start the controller of site {}: tandem controller --config <its config>", me.name);
    Ok(())
}
