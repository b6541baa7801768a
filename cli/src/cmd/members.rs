//! `tandem members`: the controllers' Raft membership as the leader sees
//! it, and the procedure for a controller whose disk is lost
//! (runbooks/controller-node-lost.md): `remove` it, `prepare` an empty
//! store for its replacement (offline, where it will run), start it, `add`
//! it.

use std::path::PathBuf;
use std::time::Duration;

use tandem_controller::clock::{Clock, SystemClock};
use tandem_controller::config::NodeConfig;
use tandem_controller::members::Members;
use tandem_controller::operations::members::{self, Replacement};
use tandem_storage::RocksKv;

use super::{op_error, Audited, CliHooks, Target};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub target: GlobalTarget,
    /// Print JSON instead of a table (listing only).
    #[arg(long)]
    pub json: bool,
}

/// [`Target`] for `members` and every subcommand alike: given before or
/// after the subcommand, it is the one cluster acted on (a copy per
/// subcommand would let `members --controllers X remove` act elsewhere).
#[derive(clap::Args, Clone, Debug)]
pub struct GlobalTarget {
    /// Controller addresses (host:port, comma-separated), tried in order.
    #[arg(long, env = "TANDEM_CONTROLLERS", default_value = crate::DEMO_CONTROLLERS, value_delimiter = ',', global = true)]
    pub controllers: Vec<String>,
    /// Upper bound on each call to a controller, in milliseconds.
    #[arg(long, default_value_t = 8000, global = true)]
    pub timeout_ms: u64,
}

impl GlobalTarget {
    fn client(&self) -> tandem_controller::client::ControlClient {
        Target { controllers: self.controllers.clone(), timeout_ms: self.timeout_ms }.client()
    }
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Remove a lost site's controller from the membership (refused while the leader still hears it).
    Remove {
        #[arg(long)]
        site: String,
        #[command(flatten)]
        audited: Audited,
    },
    /// Prepare an empty store for a replacement controller (run where it will run, before starting it).
    Prepare {
        /// The replacement's controller config (its site and data_dir).
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        audited: Audited,
    },
    /// Add a site's running replacement controller: learner, then voter.
    Add {
        #[arg(long)]
        site: String,
        #[command(flatten)]
        audited: Audited,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        None => {
            let m = members::list(&args.target.client()).await.map_err(|e| op_error(e, "members"))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                print!("{}", render(&m));
            }
            Ok(())
        }
        Some(Command::Remove { site, audited }) => {
            audited.check_reason()?;
            let client = args.target.client();
            let mut hooks = CliHooks::new(&audited, false);
            if let Some(o) = members::remove(&client, &site, &audited.who, &audited.reason, &mut hooks).await.map_err(|e| op_error(e, "members remove"))? {
                println!("{} (audit #{})", o.result, o.audit_seq);
            }
            Ok(())
        }
        Some(Command::Prepare { config, audited }) => prepare(args.target.client(), config, audited).await,
        Some(Command::Add { site, audited }) => {
            audited.check_reason()?;
            // The new node must receive the whole state first.
            let client = args.target.client().with_timeout(Duration::from_secs(120));
            let mut hooks = CliHooks::new(&audited, false);
            if let Some(o) = members::add(&client, &site, &audited.who, &audited.reason, &mut hooks).await.map_err(|e| op_error(e, "members add"))? {
                println!("{} (audit #{})", o.result, o.audit_seq);
            }
            Ok(())
        }
    }
}

async fn prepare(client: tandem_controller::client::ControlClient, config: PathBuf, audited: Audited) -> anyhow::Result<()> {
    audited.check_reason()?;
    let config = NodeConfig::load(&config)?;
    let me = config.this_site().clone();
    let dir = config.data_dir.join("controller");
    let kept = config.data_dir.join(format!("controller.replaced-{}", SystemClock.now_unix_ms()));
    let req = Replacement { site: me.name.clone(), who: audited.who.clone(), why: audited.reason.clone() };
    let open_fresh = |generation: u64| -> Result<String, String> {
        let mut note = String::new();
        if dir.exists() {
            // Opening takes rocksdb's lock: refuses while a controller runs on it.
            drop(RocksKv::open(&dir).map_err(|e| format!("cannot open {} (is a controller still running on it? stop it first): {e}", dir.display()))?);
            std::fs::rename(&dir, &kept).map_err(|e| format!("cannot move {} aside: {e}", dir.display()))?;
            note = format!("; what was left of the old store is kept at {}", kept.display());
        }
        let kv = RocksKv::open(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        tandem_controller::raft::state_machine::prepare_join(&kv, generation).map_err(|e| format!("cannot prepare {}: {e}", dir.display()))?;
        Ok(format!("replacement controller store for site {} prepared to join generation {generation}{note}", me.name))
    };
    let mut hooks = CliHooks::new(&audited, false);
    if let Some(o) = members::prepare(&client, &req, open_fresh, &mut hooks).await.map_err(|e| op_error(e, "members prepare"))? {
        println!("{} (audit #{})", o.result, o.audit_seq);
        println!("now start the controller of site {}, then: tandem members add --site {} --reason ...", me.name, me.name);
    }
    Ok(())
}

fn render(m: &Members) -> String {
    let rows: Vec<Vec<String>> = m
        .members
        .iter()
        .map(|x| {
            vec![
                if x.site.is_empty() { "?".into() } else { x.site.clone() },
                x.node_id.to_string(),
                format!("{}{}", x.role, if x.leader { " (leader)" } else { "" }),
                x.addr.clone(),
                x.matched_index.map_or("-".into(), |i| i.to_string()),
                match x.last_contact_ms {
                    Some(ms) => format!("{:.1} s ago", ms as f64 / 1000.0),
                    None if m.from_leader => "never (since this leader started)".into(),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    let source = if m.from_leader {
        format!("term {}, leader log index {}, generation {}", m.term, m.last_log_index, m.generation)
    } else {
        format!(
            "NO LEADER ANSWERED: the membership as node {} last saw it (term {}, generation {}); log indexes and contacts are known only to a leader",
            m.answered_by, m.term, m.generation
        )
    };
    format!("{}\n{source}\n", crate::output::table(&["SITE", "NODE", "ROLE", "ADDR", "LOG INDEX", "LAST CONTACT"], &rows))
}
