//! `tandem approve ID`, `tandem reject ID`, `tandem approvals`: four-eyes
//! approval. While the policy's `four_eyes` is on (the default with TLS), a
//! failover that accepts data loss, a contract's destruction and a change
//! of a safety setting are recorded as a request when their first admin
//! runs them; a second admin approves the request here and this command
//! then carries it out as them, through the same operation code. The
//! controllers check every part of it (see controller/src/ops/approval.rs).

use std::time::Duration;

use anyhow::{bail, Context};
use tandem_controller::operations::approval::{self, Decide};
use tandem_controller::operations::{failover, policy};
use tandem_controller::ops::approval as rule;
use tandem_replicator::client::ReplicatorClient;

use super::{op_error, Audited, CliHooks, Target};

#[derive(clap::Args)]
pub struct DecideArgs {
    /// The request's id (`tandem approvals` lists them).
    pub id: u64,
    #[command(flatten)]
    pub target: Target,
    /// The replicator that carries out an approved `contract destroy`
    /// (any site's: it is sent on to the contract's owner).
    #[arg(long, env = "TANDEM_REPLICATOR", default_value = super::contract::DEMO_REPLICATOR)]
    pub replicator: String,
    #[command(flatten)]
    pub audited: Audited,
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// An operation stopped to wait for a second admin: not a failure of the
/// command (the request is recorded), so it is printed and exits 0.
pub fn awaiting(e: tandem_controller::operations::OpError, what: &str) -> anyhow::Result<()> {
    match e {
        e @ tandem_controller::operations::OpError::AwaitingApproval { .. } => {
            println!("{e}");
            Ok(())
        }
        other => Err(op_error(other, what)),
    }
}

pub async fn list(args: ListArgs) -> anyhow::Result<()> {
    let all = approval::list(&args.target.client()).await.map_err(|e| op_error(e, "approvals"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|a| {
            let by = match &a.state {
                tandem_controller::state::ApprovalState::Pending => String::new(),
                tandem_controller::state::ApprovalState::Approved { by, .. }
                | tandem_controller::state::ApprovalState::Rejected { by, .. }
                | tandem_controller::state::ApprovalState::Used { by, .. } => by.clone(),
            };
            vec![
                a.id.to_string(),
                a.state.as_str().into(),
                a.action.clone(),
                a.args.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
                a.requested_by.clone(),
                by,
                a.reason.clone(),
            ]
        })
        .collect();
    println!("{}", crate::output::table(&["ID", "STATE", "ACTION", "ARGS", "ASKED BY", "DECIDED BY", "REASON"], &rows));
    Ok(())
}

pub async fn reject(args: DecideArgs) -> anyhow::Result<()> {
    args.audited.check_reason()?;
    let req = Decide { id: args.id, approve: false, who: args.audited.who.clone(), why: args.audited.reason.clone() };
    let client = args.target.client();
    if approval::decide(&client, &req, &mut CliHooks::new(&args.audited, false)).await.map_err(|e| op_error(e, "reject"))?.is_some() {
        println!("request #{} rejected; nothing of it will be carried out", args.id);
    }
    Ok(())
}

pub async fn approve(args: DecideArgs) -> anyhow::Result<()> {
    args.audited.check_reason()?;
    let req = Decide { id: args.id, approve: true, who: args.audited.who.clone(), why: args.audited.reason.clone() };
    let client = args.target.client();
    let Some(a) = approval::decide(&client, &req, &mut CliHooks::new(&args.audited, false)).await.map_err(|e| op_error(e, "approve"))? else {
        return Ok(());
    };
    println!("approved request #{}; carrying it out", a.id);
    // Confirmed once, above: the operation's own plan is shown, not asked again.
    let go = Audited { yes: true, dry_run: false, ..args.audited.clone() };
    let mut hooks = CliHooks::new(&go, false);
    let carrying = args.target.client().with_approval(a.id);
    let arg = |k: &str| a.args.get(k).cloned().with_context(|| format!("request #{} has no {k}", a.id));
    let (who, why) = (go.who.clone(), go.reason.clone());
    match a.action.as_str() {
        rule::FAILOVER => {
            let req = failover::Request {
                from: Some(arg("from")?),
                to: arg("to")?,
                accept_data_loss: true,
                automatic: false,
                expect_epoch: None,
                expect_owner: None,
                who,
                why,
            };
            if let Some(done) = failover::failover(&carrying, &req, &mut hooks).await.map_err(|e| op_error(e, "failover"))? {
                super::failover::print_done(&done, false)?;
            }
        }
        rule::POLICY => {
            let req = policy::SetPolicy { key: arg("key")?, value: arg("value")?, expect: None, who, why };
            if let Some(o) = policy::set(&carrying, &req, &mut hooks).await.map_err(|e| op_error(e, "policy set"))? {
                println!("policy {}: {} (audit #{})", req.key, o.result, o.audit_seq);
            }
        }
        rule::DESTROY => {
            let (tenant, contract) = (arg("tenant")?, arg("contract")?);
            let replicas = ReplicatorClient::new(super::transport(), Duration::from_millis(args.target.timeout_ms));
            let reply = replicas.destroy(&args.replicator, &tenant, &contract, &who, &why, a.id).await?;
            println!("destroyed {tenant}/{contract} (log entry {}); {}", reply.log_seq, reply.replication);
        }
        other => bail!("request #{} is for {other:?}, which this build cannot carry out", a.id),
    }
    Ok(())
}
