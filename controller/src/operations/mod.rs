//! The SRE operations, once, for every caller: `tandem` (the CLI), the
//! automatic detector and the drill (`sim/`) run these functions and
//! nothing else. Each one observes the cluster, plans (every refusal lives
//! here, so a drill proves the same rules an SRE meets at 3 a.m.), shows
//! the plan to its caller's [`Hooks`], runs the steps and returns a report.
//!
//! | operation | module | callers |
//! |---|---|---|
//! | switchover, cancel of a drain | [`switchover`] | CLI, drill |
//! | failover | [`failover`] | CLI, detector, drill |
//! | finishing a move whose driver died | [`orphan`] | detector |
//! | failback | [`failback`] | CLI, drill |
//! | DR activation, DR rejoin | [`dr`] | CLI, drill (the offline step) |
//! | pause / resume | [`pause`] | CLI, drill |
//! | verify / repair | [`verify`] | CLI, drill |
//! | key rotation | [`keys`] | CLI |
//! | policy change | [`policy`] | CLI |
//! | replacing a lost controller | [`members`] | CLI |
//! | four-eyes approval | [`approval`] | CLI (the rule: `crate::ops::approval`) |
//!
//! They live in the controller crate because the detector runs inside the
//! controller, and because none of them needs the replicator's internals:
//! they talk to the replicators over the public `Replication` API.
//!
//! The callers differ only in their [`Hooks`]: the CLI prints the plan,
//! stops for `--dry-run` and asks for confirmation; the detector re-checks
//! its judgement right before acting; the drill goes ahead.

pub mod approval;
pub mod dr;
pub mod failback;
pub mod failover;
pub mod keys;
pub mod members;
pub mod orphan;
pub mod pause;
pub mod policy;
pub mod switchover;
pub mod verify;

use std::future::Future;
use std::time::Duration;

use tandem_proto::replicator::replication_client::ReplicationClient;
use tonic::transport::Channel;

use crate::client::{ChangeOutcome, ClientError};
use crate::plan::Decision;

/// What an operation shows its caller before it changes anything.
pub struct Plan<'a> {
    /// The plan as an SRE reads it, one step per line, refusals included.
    pub text: String,
    /// The planner's decision, for the operations that have one.
    pub decision: Option<&'a Decision>,
}

impl<'a> Plan<'a> {
    pub fn text(text: impl Into<String>) -> Self {
        Plan { text: text.into(), decision: None }
    }

    pub fn of(decision: &'a Decision) -> Self {
        Plan { text: decision.explain(), decision: Some(decision) }
    }
}

/// How an operation talks to whoever runs it.
pub trait Hooks {
    /// Shown every plan, refused ones too (so the operator sees why).
    fn plan(&mut self, _plan: &Plan<'_>) {}

    /// Asked once the plan may go ahead, right before the first change.
    /// `Ok(false)` stops with nothing changed (a dry run); `Err` stops
    /// with that reason (the operator said no, or cannot be asked).
    fn confirm(&mut self) -> impl Future<Output = Result<bool, String>> + Send {
        async { Ok(true) }
    }

    /// One line per step while the operation runs.
    fn progress(&mut self, _line: &str) {}
}

/// Hooks that go ahead and say nothing (the drill).
pub struct GoAhead;

impl Hooks for GoAhead {}

/// An operation that ran: the plan it followed and what it did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Done<R> {
    pub plan: Decision,
    pub report: R,
}

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The rules refused the operation; nothing changed.
    #[error("{action} refused: {reason}; nothing changed")]
    Refused { action: String, reason: String },
    /// The caller's hooks stopped it before any change.
    #[error("{0}")]
    NotConfirmed(String),
    #[error("{0}")]
    Control(#[from] ClientError),
    #[error("{step} refused by the controller: {result}")]
    StepRefused { step: &'static str, result: String },
    #[error("{to} did not confirm {from}'s log within {secs} s; {cancel}")]
    Timeout { from: String, to: String, secs: u64, cancel: String },
    /// Anything else that stopped it, said in full.
    #[error("{0}")]
    Failed(String),
    /// It needs a second admin's approval (policy four_eyes): a request
    /// was recorded; nothing changed yet.
    #[error(
        "{action} needs a second admin's approval (policy four_eyes): recorded as request #{id}; nothing changed yet. Another admin runs `tandem approve {id} --reason ...` to carry it out (or `tandem reject {id}`)"
    )]
    AwaitingApproval { id: u64, action: String },
}

impl OpError {
    /// The planner's (or a rule's) refusal, if that is what this is.
    pub fn refusal(&self) -> Option<&str> {
        match self {
            OpError::Refused { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// Shows `plan`; stops on its decision's refusal; then asks to go ahead:
/// `Ok(true)` to run.
async fn present(hooks: &mut impl Hooks, plan: &Plan<'_>) -> Result<bool, OpError> {
    hooks.plan(plan);
    if let Some(decision) = plan.decision {
        go_ahead(decision)?;
    }
    hooks.confirm().await.map_err(OpError::NotConfirmed)
}

/// A refused decision as an error; `Ok` when it may go ahead.
fn go_ahead(decision: &Decision) -> Result<(), OpError> {
    match &decision.refused {
        Some(reason) => Err(OpError::Refused { action: decision.action.to_string(), reason: reason.clone() }),
        None => Ok(()),
    }
}

/// A controller's reply to one step: accepted, or the refusal as an error
/// naming the step.
fn accepted(step: &'static str, o: ChangeOutcome) -> Result<ChangeOutcome, OpError> {
    if !o.accepted {
        return Err(OpError::StepRefused { step, result: o.result });
    }
    Ok(o)
}

/// Bound on one call to a replicator's `Replication` API from an operation.
const REPLICATOR_CALL: Duration = Duration::from_secs(30);

/// A client of a replicator's `Replication` API (the limits the replicator
/// serves with).
pub fn replication_client(channel: Channel) -> ReplicationClient<Channel> {
    ReplicationClient::new(channel).max_decoding_message_size(tandem_proto::MAX_MESSAGE).max_encoding_message_size(tandem_proto::MAX_MESSAGE)
}

/// One bounded call to a replicator (`site` names it in errors).
async fn replicator_call<T>(site: &str, fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> Result<T, String> {
    match tokio::time::timeout(REPLICATOR_CALL, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(format!("site {site}: {}", s.message())),
        Err(_) => Err(format!("site {site}: no answer within {} s", REPLICATOR_CALL.as_secs())),
    }
}
