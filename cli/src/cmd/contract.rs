//! `tandem contract put|get|list|destroy`: the Contracts API from the
//! command line, for operators and tests. File bodies stream from and to
//! disk. PII fields are masked in the output unless `--show-pii` is given.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tandem_proto::replicator as pb;
use tandem_replicator::client::ReplicatorClient;
use tandem_replicator::write::PutHeader;

use crate::output::{table, utc};

/// Replicator of demo site A: the default target, like the controllers.
pub const DEMO_REPLICATOR: &str = "127.0.0.1:7111";

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

/// Which replicator to talk to; shared by every contract command.
#[derive(clap::Args, Clone, Debug)]
pub struct Replica {
    /// Replicator address (host:port). Writes sent to a site that does not
    /// own the tenant's shard are forwarded once to the owner it names.
    #[arg(long, env = "TANDEM_REPLICATOR", default_value = DEMO_REPLICATOR)]
    pub replicator: String,
    /// Upper bound on calls without a file body, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl Replica {
    fn client(&self) -> ReplicatorClient {
        ReplicatorClient::new(super::transport(), Duration::from_millis(self.timeout_ms))
    }
}

/// Which contract: `--tenant T --id C`.
#[derive(clap::Args, Clone, Debug)]
pub struct ContractRef {
    #[arg(long)]
    pub tenant: String,
    #[arg(long = "id")]
    pub contract_id: String,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Store a new version of a contract.
    Put(PutArgs),
    /// Read a contract: its description, and its files with --out.
    Get(GetArgs),
    /// List a tenant's contracts.
    List(ListArgs),
    /// Crypto-shred a contract on every site (irreversible).
    Destroy(DestroyArgs),
}

#[derive(clap::Args)]
pub struct PutArgs {
    #[command(flatten)]
    pub replica: Replica,
    #[command(flatten)]
    pub contract: ContractRef,
    /// Metadata field, NAME=VALUE (repeatable).
    #[arg(long = "field", value_parser = key_value)]
    pub fields: Vec<(String, String)>,
    /// PII field, NAME=VALUE (repeatable): stored encrypted (SM4-GCM).
    #[arg(long = "pii", value_parser = key_value)]
    pub pii: Vec<(String, String)>,
    /// File to store (repeatable); stored under its file name.
    #[arg(long = "file")]
    pub files: Vec<PathBuf>,
    /// Refuse (with the owner's address and epoch) instead of forwarding
    /// when this replicator's site does not own the tenant's shard.
    #[arg(long)]
    pub here: bool,
}

#[derive(clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub replica: Replica,
    #[command(flatten)]
    pub contract: ContractRef,
    /// Version to read; the latest when omitted.
    #[arg(long, default_value_t = 0)]
    pub version: u64,
    /// Write the files into this directory (created if missing).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print PII fields in clear instead of masked.
    #[arg(long)]
    pub show_pii: bool,
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub replica: Replica,
    #[arg(long)]
    pub tenant: String,
}

#[derive(clap::Args)]
pub struct DestroyArgs {
    #[command(flatten)]
    pub replica: Replica,
    #[command(flatten)]
    pub contract: ContractRef,
    /// Why (e.g. the destruction request's reference): recorded with the tombstone.
    #[arg(long)]
    pub reason: String,
    /// Who: recorded with the tombstone (defaults to $USER).
    #[arg(long, env = "USER", default_value = "unknown")]
    pub who: String,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Controllers, to record a request for approval when the policy's
    /// four_eyes needs one.
    #[arg(long, env = "TANDEM_CONTROLLERS", default_value = crate::DEMO_CONTROLLERS, value_delimiter = ',')]
    pub controllers: Vec<String>,
}

/// A `NAME=VALUE` argument (also `tandem backup --option`).
pub(super) fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err("expected NAME=VALUE".into()),
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Put(a) => put(a).await,
        Command::Get(a) => get(a).await,
        Command::List(a) => list(a).await,
        Command::Destroy(a) => destroy(a).await,
    }
}

async fn put(a: PutArgs) -> anyhow::Result<()> {
    let mut files = Vec::new();
    for path in &a.files {
        let name = path.file_name().and_then(|n| n.to_str()).with_context(|| format!("--file {}: no usable file name", path.display()))?;
        files.push((name.to_string(), path.clone()));
    }
    let header = PutHeader {
        tenant: a.contract.tenant,
        contract_id: a.contract.contract_id,
        fields: a.fields.into_iter().collect(),
        pii_fields: a.pii.into_iter().collect(),
    };
    let client = a.replica.client();
    let reply =
        if a.here { client.put_here(&a.replica.replicator, &header, &files).await? } else { client.put(&a.replica.replicator, &header, &files).await? };
    let info = reply.contract.context("the replicator acknowledged without describing the contract")?;
    if a.replica.json {
        println!("{}", json!({ "contract": info_json(&info, false), "replication": reply.replication }));
    } else {
        println!(
            "stored {}/{} version {} (shard {}, epoch {}, at site {}); {}",
            info.tenant, info.contract_id, info.version, info.shard, info.epoch, info.origin, reply.replication
        );
    }
    Ok(())
}

async fn get(a: GetArgs) -> anyhow::Result<()> {
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let info = a.replica.client().get(&a.replica.replicator, &a.contract.tenant, &a.contract.contract_id, a.version, a.out.as_deref()).await?;
    if a.replica.json {
        println!("{}", info_json(&info, a.show_pii));
        return Ok(());
    }
    print!("{}", describe(&info, a.show_pii));
    if let Some(dir) = &a.out {
        println!("files written to {}", dir.display());
    }
    Ok(())
}

async fn list(a: ListArgs) -> anyhow::Result<()> {
    let contracts = a.replica.client().list(&a.replica.replicator, &a.tenant).await?;
    if a.replica.json {
        println!("{}", Value::Array(contracts.iter().map(|c| info_json(c, false)).collect()));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = contracts
        .iter()
        .map(|c| {
            vec![
                c.contract_id.clone(),
                c.version.to_string(),
                if c.destroyed { "destroyed".into() } else { c.files.len().to_string() },
                c.shard.to_string(),
                c.origin.clone(),
                utc(c.created_unix_ms),
            ]
        })
        .collect();
    println!("{}", table(&["CONTRACT", "VERSION", "FILES", "SHARD", "WRITTEN AT", "WHEN"], &rows));
    Ok(())
}

async fn destroy(a: DestroyArgs) -> anyhow::Result<()> {
    if a.reason.trim().is_empty() {
        bail!("--reason must not be empty: the tombstone records why");
    }
    println!(
        "plan: destroy {}/{} on every site by deleting its data keys (crypto-shredding); this cannot be undone",
        a.contract.tenant, a.contract.contract_id
    );
    if !a.yes {
        super::change::confirm()?;
    }
    let (tenant, id) = (&a.contract.tenant, &a.contract.contract_id);
    let reply = match a.replica.client().destroy(&a.replica.replicator, tenant, id, &a.who, &a.reason, 0).await {
        Ok(r) => r,
        // Policy four_eyes: the replicator refused before destroying
        // anything; record the request for a second admin.
        Err(e) if e.code() == Some(tandem_proto::error_code::NEEDS_APPROVAL) => {
            let control = tandem_controller::client::ControlClient::new(a.controllers.clone(), super::transport(), Duration::from_millis(a.replica.timeout_ms));
            let plan = format!("destroy {tenant}/{id} on every site by deleting its data keys (crypto-shredding)");
            let args = tandem_controller::ops::approval::destroy_args(tenant, id);
            let asked = tandem_controller::operations::approval::ask(&control, tandem_controller::ops::approval::DESTROY, args, &plan, &a.who, &a.reason).await;
            return super::approve::awaiting(asked, "contract destroy");
        }
        Err(e) => return Err(e.into()),
    };
    if a.replica.json {
        println!("{}", json!({ "log_seq": reply.log_seq, "replication": reply.replication }));
    } else {
        println!("destroyed {}/{} (log entry {}); {}", a.contract.tenant, a.contract.contract_id, reply.log_seq, reply.replication);
    }
    Ok(())
}

const MASK: &str = "********";

fn info_json(c: &pb::ContractInfo, show_pii: bool) -> Value {
    let fields: BTreeMap<&String, &String> = c.fields.iter().collect();
    let pii: BTreeMap<&str, &str> = c
        .pii_field_names
        .iter()
        .map(|n| {
            let v = if show_pii { c.pii_fields.get(n).map(String::as_str).unwrap_or("") } else { MASK };
            (n.as_str(), v)
        })
        .collect();
    json!({
        "tenant": c.tenant,
        "contract_id": c.contract_id,
        "version": c.version,
        "shard": c.shard,
        "epoch": c.epoch,
        "origin": c.origin,
        "created_unix_ms": c.created_unix_ms,
        "destroyed": c.destroyed,
        "fields": fields,
        "pii_fields": pii,
        "files": c.files.iter().map(|f| json!({
            "name": f.name,
            "size": f.size,
            "ciphertext_len": f.ciphertext_len,
            "ciphertext_blake3": f.ciphertext_blake3,
        })).collect::<Vec<_>>(),
    })
}

fn describe(c: &pb::ContractInfo, show_pii: bool) -> String {
    let mut out = format!(
        "{}/{} version {}{}\n  shard {} epoch {}, written at site {} on {}\n",
        c.tenant,
        c.contract_id,
        c.version,
        if c.destroyed { " (DESTROYED)" } else { "" },
        c.shard,
        c.epoch,
        c.origin,
        utc(c.created_unix_ms)
    );
    let mut fields: Vec<_> = c.fields.iter().collect();
    fields.sort();
    for (k, v) in fields {
        out.push_str(&format!("  {k} = {v}\n"));
    }
    let mut names = c.pii_field_names.clone();
    names.sort();
    for n in names {
        let v = if show_pii { c.pii_fields.get(&n).cloned().unwrap_or_default() } else { MASK.to_string() };
        out.push_str(&format!("  {n} = {v} (PII)\n"));
    }
    for f in &c.files {
        out.push_str(&format!("  file {} ({} bytes, ciphertext blake3 {})\n", f.name, f.size, f.ciphertext_blake3));
    }
    out
}
