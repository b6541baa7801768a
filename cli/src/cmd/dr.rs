//! `tandem dr activate --config <the DR site's controller config>`: the
//! city-wide disaster procedure. Run on the surviving site's controller host
//! with that controller stopped. It refuses while a Raft leader with a
//! quorum still answers (then it is a failover, not a disaster). Otherwise
//! it resets the site's controller store: a new cluster generation with
//! this site as the only member, owner of every shard under new epochs,
//! every other site fenced, the reset recorded in the audit log. Start the
//! controller again afterwards; nodes of the old generation are refused.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use tandem_controller::client::ControlClient;
use tandem_controller::clock::{Clock, SystemClock};
use tandem_controller::config::NodeConfig;
use tandem_controller::raft::state_machine::{dr_reset, DrReset};
use tandem_net::Transport;
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
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let Command::Activate { config, audited } = args.command;
    audited.check_reason()?;
    let config = NodeConfig::load(&config)?;
    let me = config.this_site().clone();
    let others: Vec<String> = config.sites.iter().filter(|s| s.name != me.name).map(|s| s.addr.clone()).collect();
    let probe = ControlClient::new(others, Transport::Tokio, Duration::from_secs(3));
    if let Ok(status) = probe.leader_status().await {
        bail!(
            "site {} leads a Raft quorum right now: this is not a city-wide disaster. Use `tandem failover`; nothing changed",
            status.raft.site
        );
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
    let kv = RocksKv::open(&dir).with_context(|| {
        format!("cannot open {} (is the controller of site {} still running? stop it first)", dir.display(), me.name)
    })?;
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
