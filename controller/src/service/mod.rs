//! The control API (tonic): what the CLI talks to.
//!
//! Reads answer from this node's applied state. State-changing calls go
//! through Raft; on a follower they are refused with the leader's address
//! (FAILED_PRECONDITION + `tandem-leader-addr` metadata), which the client
//! follows. Every wait on Raft is bounded by the commit timeout, so a
//! cluster without quorum gives a clear error instead of a hung command.
//!
//! Two calls replicators depend on to keep writing are instead *forwarded*
//! by a follower to the leader, once, when the caller asks for it (it could
//! not reach the leader itself): a leader-confirmed status (the write
//! lease) and a pair-mode change (recording the pair async). A site cut off
//! from the leader's site but not from the third site (an in-city link cut
//! while the leader is across it) keeps its lease and records async through
//! that third site, instead of stopping its writes until the link heals.
//! Every call is checked against the caller's certificate first
//! (see each handler); a refusal names the role it needed and is recorded
//! in the audit log.

pub mod refusals;

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use tandem_proto::control as pb;
use tandem_proto::control::control_server::Control;
use tandem_proto::error_code;
use tonic::{Request, Response, Status};

use crate::clock::Clock;
use crate::convert;
use crate::health::HealthBoard;
use crate::ops::{Command, MoveStep, OpMeta, Outcome, PairModeSpec, ShardMoveSpec, SiteRoleSpec, NOT_CAUGHT_UP};
use crate::raft::state_machine::StateReader;
use crate::raft::Raft;
use crate::state::SiteRole;
use crate::state::{MoveKind, ReplicationMode};
use crate::status::node_status;
use tandem_proto::control::control_client::ControlClient;

/// Whether the caller asked this node to forward the call to the leader
/// (it cannot reach the leader itself).
fn wants_forwarding<T>(req: &Request<T>) -> bool {
    req.metadata().get(tandem_proto::FORWARD_METADATA).is_some_and(|v| v == tandem_proto::FORWARD_PLEASE)
}

/// `msg` as a request marked forwarded (never forwarded again).
fn forwarded_request<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert(tandem_proto::FORWARD_METADATA, tonic::metadata::MetadataValue::from_static(tandem_proto::FORWARD_DONE));
    req
}

/// `change` with its `who` made the authenticated identity when the caller
/// has an operator certificate (`alice`, or `alice (as root)` when the
/// `--who` it sent differs): the audit log then names who really acted.
/// Sites (automatic actions) and plaintext callers keep the `who` they sent.
fn attested(caller: &Caller, mut change: pb::ChangeRequest) -> pb::ChangeRequest {
    if let Caller::Tls(tandem_net::Peer::Operator { name, .. }) = caller {
        let claimed = change.who.trim();
        change.who = if claimed.is_empty() || claimed == name { name.clone() } else { format!("{name} (as {claimed})") };
    }
    change
}

/// Four eyes count people: with TLS, requests and decisions come from an
/// operator's certificate (whose name is then the audited `who`), never a
/// site's, which could claim any name.
fn operator_only(caller: &Caller, what: &str) -> Result<(), Status> {
    match caller {
        Caller::Tls(tandem_net::Peer::Operator { .. }) | Caller::Plaintext => Ok(()),
        Caller::Tls(peer) => Err(with_code(
            Status::permission_denied(format!("permission denied: {what} needs an operator's certificate, not {peer}'s")),
            error_code::PERMISSION_DENIED,
        )),
    }
}

/// A member the leader has not heard from for this long may be removed as
/// lost (many heartbeats and election timeouts; a live one answers every
/// heartbeat).
const MEMBER_LOST_AFTER: Duration = Duration::from_secs(10);
/// How long a switchover's move waits for this leader's own board to show
/// the target caught up (heartbeats come every 250 ms; the operation saw
/// it already, possibly on another node's board).
const CAUGHT_UP_PROOF_WAIT: Duration = Duration::from_secs(3);

/// Voters a membership grown back after a DR activation needs before the
/// returning sites vote: with two, the loss of either stops every commit,
/// worse than the one voter the activation left.
const MIN_SAFE_VOTERS: usize = 3;

/// Whether `voters` voters may become `members` (voters and learners
/// together): only to a configuration that survives the loss of one
/// voter, and never fewer voters than now.
fn quorum_safe(voters: usize, members: usize) -> bool {
    members >= MIN_SAFE_VOTERS && members >= voters
}

/// The "not the leader" refusal, naming the leader's address (clients
/// follow it).
fn not_the_leader(message: String, leader_addr: &str) -> Status {
    let mut status = Status::failed_precondition(message);
    if let Ok(v) = leader_addr.parse() {
        status.metadata_mut().insert(tandem_proto::LEADER_ADDR_METADATA, v);
    }
    with_code(status, error_code::NOT_LEADER)
}
use refusals::Refusals;
use tandem_net::{Caller, Need, Role};

/// Audit entries returned when the caller asks for none in particular.
pub const AUDIT_PAGE_DEFAULT: usize = 50;
/// Upper bound on one audit page, to bound reply size.
pub const AUDIT_PAGE_MAX: usize = 10_000;
/// Longest accepted `who` or `why`; they are stored forever.
pub const TEXT_MAX_CHARS: usize = 1024;

pub struct ControlService {
    raft: Raft,
    state: StateReader,
    health: HealthBoard,
    site: String,
    node_id: u64,
    clock: Arc<dyn Clock>,
    commit_timeout: Duration,
    /// To reach the leader when forwarding.
    transport: tandem_net::Transport,
    refusals: Refusals,
    /// Lease grants of this node as leader; every move waits them out.
    leases: crate::lease::LeaseBook,
    /// Only the drill's deliberately broken build turns this off.
    hold_moves: bool,
    /// When each Raft peer last answered this node (`Members`).
    contacts: crate::raft::network::Contacts,
}

impl ControlService {
    // Everything the service shares with the node that runs it; called in
    // one place (`node.rs`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        raft: Raft,
        state: StateReader,
        health: HealthBoard,
        site: String,
        node_id: u64,
        clock: Arc<dyn Clock>,
        commit_timeout: Duration,
        transport: tandem_net::Transport,
        refusals: Refusals,
    ) -> Self {
        Self {
            raft,
            state,
            health,
            site,
            node_id,
            clock,
            commit_timeout,
            transport,
            refusals,
            leases: Default::default(),
            hold_moves: true,
            contacts: Default::default(),
        }
    }

    /// Shares `leases` with the node's detector; `hold_moves: false` lets
    /// moves commit without waiting out the old owner's lease (the drill's
    /// deliberately broken build only, to prove its checks catch it).
    pub fn with_leases(mut self, leases: crate::lease::LeaseBook, hold_moves: bool) -> Self {
        self.leases = leases;
        self.hold_moves = hold_moves;
        self
    }

    /// Shares the Raft network's record of when each peer last answered.
    pub fn with_contacts(mut self, contacts: crate::raft::network::Contacts) -> Self {
        self.contacts = contacts;
        self
    }

    /// The membership as this node sees it; log indexes and contacts only
    /// when it leads (a follower hears from the leader alone).
    fn members(&self) -> pb::MembersReply {
        let m = self.raft.metrics().borrow().clone();
        let leading = m.state == openraft::ServerState::Leader;
        let cluster = self.state.cluster();
        let membership = m.membership_config.membership().clone();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let matched = m.replication.clone().unwrap_or_default();
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let me = *id == self.node_id;
                pb::MemberView {
                    node_id: *id,
                    site: cluster.sites.values().find(|s| s.node_id == *id).map(|s| s.name.clone()).unwrap_or_default(),
                    addr: node.addr.clone(),
                    role: if voters.contains(id) { "voter" } else { "learner" }.into(),
                    leader: m.current_leader == Some(*id),
                    matched_index: match (me, leading) {
                        (true, _) => m.last_log_index,
                        (false, true) => matched.get(id).copied().flatten().map(|l| l.index),
                        (false, false) => None,
                    },
                    last_contact_ms: match (me, leading) {
                        (true, _) => Some(0),
                        (false, true) => self.contacts.since(*id).map(|d| d.as_millis() as u64),
                        (false, false) => None,
                    },
                }
            })
            .collect();
        pb::MembersReply {
            leader_id: m.current_leader.unwrap_or(0),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            generation: cluster.generation,
            members,
            from_leader: false,
            answered_by: self.node_id,
        }
    }

    /// This node's current term, if it believes it leads.
    fn leading_term(&self) -> Option<u64> {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.current_leader == Some(self.node_id)).then_some(m.current_term)
    }

    /// Holds a shard move until the old owner can no longer write the
    /// shards (the rule and its argument are in [`crate::lease`]): it has
    /// reported a view that includes their drain, or every lease it may
    /// hold with an older state has surely run out. Returns how long it
    /// waited. On a follower it returns at once (the proposal is refused
    /// with the leader's address, and the leader holds it).
    async fn hold_move(&self, spec: &ShardMoveSpec) -> Duration {
        let started = tokio::time::Instant::now();
        if !self.hold_moves {
            return Duration::ZERO;
        }
        loop {
            let cluster = self.state.cluster();
            // The drain this move completes: the newest among the shards'
            // (a shard not drained, or drained by an older build: every
            // grant counts).
            let drains: Vec<Option<&crate::state::Drain>> = spec
                .shards
                .iter()
                .map(|n| {
                    cluster
                        .shards
                        .get(*n as usize)
                        .filter(|s| s.moving_to.as_deref() == Some(spec.to.as_str()))
                        .and_then(|s| s.drain.as_ref())
                        .filter(|d| d.log_index > 0)
                })
                .collect();
            let drain_index = drains.iter().map(|d| d.map_or(u64::MAX, |d| d.log_index)).max().unwrap_or(u64::MAX);
            let drained_at = drains.iter().flatten().map(|d| d.at_unix_ms).max().unwrap_or(u64::MAX);
            // A report received after the drain, of a view that includes it
            // (an older one, kept across a restart or from before a DR
            // activation restarted the log, proves nothing).
            let sees_drain = drain_index != u64::MAX
                && self.health.snapshot().iter().any(|h| h.site == spec.from && h.view_index >= drain_index && h.received_at_unix_ms >= drained_at);
            if sees_drain {
                return started.elapsed();
            }
            let Some(term) = self.leading_term() else { return started.elapsed() };
            self.leases.leading(term);
            let Some(expiry) = self.leases.expiry(&spec.from, drain_index) else { return started.elapsed() };
            let now = tokio::time::Instant::now();
            if now >= expiry {
                return started.elapsed();
            }
            // Look again soon: the old owner may report the drain first.
            tokio::time::sleep((expiry - now).min(Duration::from_millis(50))).await;
        }
    }

    /// A move that completes a switchover's drain commits only once this
    /// leader's own board shows the target holds the source's whole log for
    /// the shards: the source reported, after the drain, a view that
    /// includes it (no later write of them is possible there) and no
    /// backlog towards the target. The switchover operation waits for this
    /// before it asks; here it is the server's rule, so a move sent by hand
    /// or by a driver with a stale view cannot drop acknowledged writes.
    /// `Err`: why the proof is missing after [`CAUGHT_UP_PROOF_WAIT`].
    /// On a follower it returns at once (the proposal is refused with the
    /// leader's address, and the leader checks).
    async fn prove_caught_up(&self, spec: &ShardMoveSpec) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + CAUGHT_UP_PROOF_WAIT;
        loop {
            if self.leading_term().is_none() {
                return Ok(());
            }
            let cluster = self.state.cluster();
            let drains: Vec<crate::state::Drain> = spec
                .shards
                .iter()
                .filter_map(|n| cluster.shards.get(*n as usize))
                .filter(|s| s.moving_to.as_deref() == Some(spec.to.as_str()))
                .filter_map(|s| s.drain.clone())
                .filter(|d| d.kind == MoveKind::Switchover)
                .collect();
            let (Some(index), Some(at)) = (drains.iter().map(|d| d.log_index).max(), drains.iter().map(|d| d.at_unix_ms).max()) else {
                return Ok(());
            };
            let board = self.health.snapshot();
            let (from, to) = (&spec.from, &spec.to);
            let missing = match board.iter().find(|h| h.site == *from) {
                None => format!("{from}'s replicator has not reported to the leader"),
                Some(h) if h.view_index < index || h.received_at_unix_ms < at => {
                    format!("{from} has not yet reported a view that includes the drain (raft index {index}; its last: {})", h.view_index)
                }
                Some(h) => match h.links.iter().find(|l| l.peer == *to) {
                    Some(l) if l.entries == 0 => return Ok(()),
                    Some(l) => format!("{to} has not confirmed {} entries ({} bytes) of {from}'s log", l.entries, l.bytes),
                    None => format!("{from} reports no replication link to {to}"),
                },
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(missing);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Refuses (and audits) a call whose caller lacks `need`.
    /// Returns the caller, for [`attested`].
    fn authorize<T>(&self, req: &Request<T>, what: &str, need: Need) -> Result<Caller, Status> {
        let caller = Caller::of(req);
        caller.check(what, need).map_err(|denied| {
            self.refusals.record(&caller, what, &denied);
            with_code(Status::permission_denied(denied.to_string()), error_code::PERMISSION_DENIED)
        })?;
        Ok(caller)
    }

    /// A client of the leader at `addr`, for forwarding.
    fn leader_client(&self, addr: &str) -> Result<ControlClient<tonic::transport::Channel>, Status> {
        let channel = self.transport.channel(addr).map_err(|e| Status::unavailable(format!("cannot reach the leader at {addr}: {e}")))?;
        Ok(ControlClient::new(channel))
    }

    /// Calls the leader at `addr` on a caller's behalf, marked forwarded,
    /// bounded by the commit timeout.
    async fn forward<T, F, Fut>(&self, addr: &str, call: F) -> Result<T, Status>
    where
        F: FnOnce(ControlClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        let client = self.leader_client(addr)?;
        match tokio::time::timeout(self.commit_timeout, call(client)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(s),
            Err(_) => Err(with_code(
                Status::unavailable(format!("the leader at {addr} did not answer a forwarded call within {} ms", self.commit_timeout.as_millis())),
                error_code::NO_LEADER,
            )),
        }
    }

    /// Confirms with a quorum that this node still leads, and waits until
    /// every committed change is applied: a state read after this is not
    /// older than any change committed before the call.
    async fn confirm_leadership(&self) -> Result<(), Status> {
        match tokio::time::timeout(self.commit_timeout, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(fwd)))) => match fwd.leader_node {
                Some(node) => Err(not_the_leader(format!("not the leader; the leader is at {}", node.addr), &node.addr)),
                None => Err(with_code(Status::unavailable("no leader known"), error_code::NO_LEADER)),
            },
            Ok(Err(e)) => Err(with_code(Status::unavailable(format!("leadership not confirmed: {e}")), error_code::NO_LEADER)),
            Err(_) => Err(with_code(
                Status::unavailable(format!("leadership not confirmed by a quorum within {} ms", self.commit_timeout.as_millis())),
                error_code::NO_LEADER,
            )),
        }
    }

    /// Builds a snapshot of everything applied so far and purges the log
    /// up to it (see [`Control::join`]).
    async fn snapshot_and_purge(&self, wait: Duration) -> Result<(), Status> {
        let applied = self.raft.metrics().borrow().last_applied.map(|l| l.index);
        let Some(applied) = applied else { return Ok(()) };
        self.raft.trigger().snapshot().await.map_err(|e| Status::unavailable(format!("cannot take a snapshot: {e}")))?;
        let mut metrics = self.raft.metrics();
        let taken = tokio::time::timeout(wait, async {
            loop {
                if metrics.borrow().snapshot.is_some_and(|s| s.index >= applied) {
                    return;
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        if taken.is_err() || self.raft.metrics().borrow().snapshot.is_none_or(|s| s.index < applied) {
            return Err(Status::unavailable(format!("no snapshot of index {applied} within {} s", wait.as_secs())));
        }
        self.raft.trigger().purge_log(applied).await.map_err(|e| Status::unavailable(format!("cannot purge the log: {e}")))?;
        Ok(())
    }

    async fn propose(&self, command: Command, req: pb::ChangeRequest) -> Result<Outcome, Status> {
        let request = self.request(command, req)?;
        self.propose_request(request).await
    }

    /// `command` with its audit fields checked and the proposer's time.
    fn request(&self, command: Command, req: pb::ChangeRequest) -> Result<crate::ops::Request, Status> {
        let (who, why) = audit_fields(&req)?;
        Ok(crate::ops::Request {
            command,
            meta: OpMeta { who, why, at_unix_ms: self.clock.now_unix_ms(), clock: self.site.clone(), approval: (req.approval > 0).then_some(req.approval) },
        })
    }

    /// Proposes `request` through Raft (this node must lead).
    async fn propose_request(&self, request: crate::ops::Request) -> Result<Outcome, Status> {
        match tokio::time::timeout(self.commit_timeout, self.raft.client_write(request)).await {
            Ok(Ok(resp)) => Ok(resp.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(fwd)))) => match fwd.leader_node {
                Some(node) => {
                    Err(not_the_leader(format!("not the leader; the leader is node {} at {}", fwd.leader_id.unwrap_or_default(), node.addr), &node.addr))
                }
                None => Err(with_code(
                    Status::unavailable("no leader known: an election is under way or a majority of sites is unreachable"),
                    error_code::NO_LEADER,
                )),
            },
            Ok(Err(e)) => Err(Status::internal(format!("raft refused the change: {e}"))),
            Err(_) => Err(with_code(
                Status::unavailable(format!(
                    "not committed within {} ms: a majority of sites is probably unreachable. The change may \
                     still commit later; check `tandem audit` before retrying",
                    self.commit_timeout.as_millis()
                )),
                error_code::COMMIT_TIMEOUT,
            )),
        }
    }
}

/// The audit log's who and why of a change, trimmed, or why they cannot be
/// recorded.
fn audit_fields(req: &pb::ChangeRequest) -> Result<(String, String), Status> {
    let who = req.who.trim().to_string();
    let why = req.why.trim().to_string();
    if who.is_empty() {
        return Err(Status::invalid_argument("who is required: the audit log records who made every change"));
    }
    if why.is_empty() {
        return Err(Status::invalid_argument("a reason is required (--reason): the audit log records why"));
    }
    if who.chars().count() > TEXT_MAX_CHARS || why.chars().count() > TEXT_MAX_CHARS {
        return Err(Status::invalid_argument(format!("who and reason are limited to {TEXT_MAX_CHARS} characters")));
    }
    Ok((who, why))
}

fn with_code(mut status: Status, code: &'static str) -> Status {
    status.metadata_mut().insert(tandem_proto::ERROR_CODE_METADATA, tonic::metadata::MetadataValue::from_static(code));
    status
}

fn change_reply(o: Outcome) -> Response<pb::ChangeReply> {
    Response::new(pb::ChangeReply { audit_seq: o.audit_seq, result: o.result, log_index: o.log_index, accepted: o.accepted, changed: o.changed })
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn status(&self, req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusReply>, Status> {
        self.authorize(&req, "status", Need::Role(Role::Viewer))?;
        let forward = wants_forwarding(&req);
        let r = req.into_inner();
        let mut term = None;
        if r.linearizable {
            if let Err(refusal) = self.confirm_leadership().await {
                return match convert::leader_named(&refusal) {
                    Some(addr) if forward => {
                        let reply = self.forward(&addr, |mut c| async move { c.status(forwarded_request(r)).await }).await?;
                        Ok(Response::new(reply))
                    }
                    _ => Err(refusal),
                };
            }
            term = self.leading_term();
        }
        let status = node_status(&self.raft, &self.state, &self.health, self.clock.as_ref(), &self.site, self.node_id);
        // A write lease is granted by this answer: record it before it leaves.
        if let Some(term) = term.filter(|_| !r.no_lease) {
            let site = if r.lease_for.is_empty() { crate::lease::ANY_SITE } else { r.lease_for.as_str() };
            self.leases.granted(term, site, status.raft.last_applied_index);
        }
        Ok(Response::new(convert::status_to_pb(&status)))
    }

    async fn audit(&self, req: Request<pb::AuditRequest>) -> Result<Response<pb::AuditReply>, Status> {
        self.authorize(&req, "audit", Need::Role(Role::Viewer))?;
        let req = req.into_inner();
        let limit = match req.limit as usize {
            0 => AUDIT_PAGE_DEFAULT,
            n => n.min(AUDIT_PAGE_MAX),
        };
        let cannot = |e| Status::internal(format!("cannot read audit log: {e}"));
        let (entries, audit_len) = if req.from_seq > 0 {
            self.state.audit_from(req.from_seq, limit).map_err(cannot)?
        } else {
            (self.state.audit(limit).map_err(cannot)?, self.state.cluster().audit_len)
        };
        Ok(Response::new(pb::AuditReply { entries: entries.iter().map(convert::audit_to_pb).collect(), audit_len }))
    }

    async fn pause(&self, req: Request<pb::ChangeRequest>) -> Result<Response<pb::ChangeReply>, Status> {
        let caller = self.authorize(&req, "pause", Need::Role(Role::Operator))?;
        self.propose(Command::Pause, attested(&caller, req.into_inner())).await.map(change_reply)
    }

    async fn resume(&self, req: Request<pb::ChangeRequest>) -> Result<Response<pb::ChangeReply>, Status> {
        let caller = self.authorize(&req, "resume", Need::Role(Role::Operator))?;
        self.propose(Command::Resume, attested(&caller, req.into_inner())).await.map(change_reply)
    }

    async fn set_pair_mode(&self, req: Request<pb::PairModeRequest>) -> Result<Response<pb::ChangeReply>, Status> {
        // Replicators record their pair's mode; people do not.
        self.authorize(&req, "setting a pair's replication mode", Need::Site)?;
        let forward = wants_forwarding(&req);
        let r = req.into_inner();
        let mode = ReplicationMode::parse(&r.mode)
            .ok_or_else(|| Status::invalid_argument(format!("unknown replication mode {:?}: use sync, async or sync-recover", r.mode)))?;
        let spec = PairModeSpec { site: r.site, peer: r.peer, expect_state_id: r.expect_state_id, mode, since_seq: r.since_seq };
        let request = self.request(Command::SetPairMode(spec), pb::ChangeRequest { who: r.who, why: r.why, approval: 0 })?;
        match self.propose_request(request.clone()).await {
            Err(refusal) if forward => match convert::leader_named(&refusal) {
                Some(addr) => {
                    let json = serde_json::to_vec(&request).map_err(|e| Status::internal(e.to_string()))?;
                    let reply = self
                        .forward(&addr, |mut c| async move { c.forwarded_change(forwarded_request(pb::ForwardedChangeRequest { request_json: json })).await })
                        .await?;
                    Ok(Response::new(reply))
                }
                None => Err(refusal),
            },
            other => other.map(change_reply),
        }
    }

    async fn forwarded_change(&self, req: Request<pb::ForwardedChangeRequest>) -> Result<Response<pb::ChangeReply>, Status> {
        // Controllers forward; nobody else may propose a raw change.
        self.authorize(&req, "forwarding a change to the leader", Need::Site)?;
        let request: crate::ops::Request =
            serde_json::from_slice(&req.into_inner().request_json).map_err(|e| Status::invalid_argument(format!("malformed forwarded change: {e}")))?;
        // Only what followers forward (see the module comment).
        if !matches!(request.command, Command::SetPairMode(_)) {
            return Err(Status::invalid_argument("only pair-mode changes are forwarded"));
        }
        self.propose_request(request).await.map(change_reply)
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatReply>, Status> {
        self.authorize(&req, "a replicator heartbeat", Need::Site)?;
        let view = req.into_inner().replicator.ok_or_else(|| Status::invalid_argument("heartbeat without replicator"))?;
        if view.site.is_empty() || !self.state.cluster().sites.contains_key(&view.site) {
            return Err(Status::invalid_argument(format!("heartbeat from unknown site {:?}", view.site)));
        }
        let mut health = convert::replicator_from_pb(view);
        health.received_at_unix_ms = self.clock.now_unix_ms();
        self.health.record(health);
        Ok(Response::new(pb::HeartbeatReply {}))
    }

    async fn record_event(&self, req: Request<pb::EventRequest>) -> Result<Response<pb::ChangeReply>, Status> {
        // Sites record detections and refusals; `tandem dr rejoin` (admin)
        // records its offline reset.
        let caller = self.authorize(&req, "recording an audit event", Need::Role(Role::Admin))?;
        let r = req.into_inner();
        if r.what.chars().count() > TEXT_MAX_CHARS || r.result.chars().count() > TEXT_MAX_CHARS {
            return Err(Status::invalid_argument(format!("events are limited to {TEXT_MAX_CHARS} characters")));
        }
        let change = attested(&caller, pb::ChangeRequest { who: r.who, why: r.why, approval: 0 });
        self.propose(Command::Event { what: r.what, result: r.result, automatic: r.automatic }, change).await.map(change_reply)
    }

    async fn set_site_role(&self, req: Request<pb::SiteRoleRequest>) -> Result<Response<pb::ChangeReply>, Status> {
        let caller = self.authorize(&req, "failback (setting a site's role)", Need::Role(Role::Admin))?;
        let r = req.into_inner();
        let role = |s: &str| SiteRole::parse(s).ok_or_else(|| Status::invalid_argument(format!("unknown site role {s:?}")));
        let spec = SiteRoleSpec { site: r.site, expect: role(&r.expect)?, role: role(&r.role)? };
        self.propose(Command::SetSiteRole(spec), attested(&caller, pb::ChangeRequest { who: r.who, why: r.why, approval: 0 })).await.map(change_reply)
    }

    async fn join(&self, req: Request<pb::JoinRequest>) -> Result<Response<pb::ChangeReply>, Status> {
        let caller = self.authorize(&req, "failback join (a Raft membership change)", Need::Role(Role::Admin))?;
        let mut r = req.into_inner();
        r.who = attested(&caller, pb::ChangeRequest { who: r.who, why: String::new(), approval: 0 }).who;
        if r.who.trim().is_empty() || r.why.trim().is_empty() {
            return Err(Status::invalid_argument("who and a reason (--reason) are required: the audit log records them"));
        }
        self.confirm_leadership().await?;
        let cluster = self.state.cluster();
        let site = cluster.sites.get(&r.site).ok_or_else(|| Status::invalid_argument(format!("unknown site {:?}", r.site)))?.clone();
        let (voters, learners) = {
            let m = self.raft.metrics().borrow().membership_config.membership().clone();
            (m.voter_ids().collect::<std::collections::BTreeSet<u64>>(), m.learner_ids().collect::<std::collections::BTreeSet<u64>>())
        };
        if voters.contains(&site.node_id) || learners.contains(&site.node_id) {
            let what = if voters.contains(&site.node_id) { "voter" } else { "learner" };
            return Ok(Response::new(pb::ChangeReply {
                audit_seq: 0,
                result: format!("ok: {} is already a Raft {what}", r.site),
                log_index: 0,
                accepted: true,
                changed: false,
            }));
        }
        // A fenced site returns after a DR activation (`tandem dr rejoin`);
        // any other site that is no member was removed as lost, and its
        // replacement joins (`tandem members prepare`, then add).
        tracing::info!(site = %r.site, role = site.role.as_str(), "a controller joins the Raft membership");
        // After a DR activation the log restarts from an applied state that
        // no log entry carries: the new member must get it as a snapshot.
        // Take one now and purge the log up to it, so replication to the
        // learner starts with the snapshot.
        let wait = self.commit_timeout * 10;
        self.snapshot_and_purge(wait).await?;
        // The learner first receives the whole state, then may become a
        // voter: a node that votes before it has the log could elect a
        // stale leader.
        let node = openraft::BasicNode { addr: site.addr.clone() };
        match tokio::time::timeout(wait, self.raft.add_learner(site.node_id, node, true)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Status::unavailable(format!("{} could not be added as a learner: {e}", r.site))),
            Err(_) => {
                return Err(Status::unavailable(format!(
                    "{}'s controller did not catch up as a learner within {} s: is it running, started after `tandem dr rejoin`?",
                    r.site,
                    wait.as_secs()
                )))
            }
        }
        let mut members = voters.clone();
        members.extend(learners.iter().copied());
        members.insert(site.node_id);
        let what = if quorum_safe(voters.len(), members.len()) {
            match tokio::time::timeout(wait, self.raft.change_membership(members.clone(), false)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(Status::unavailable(format!("{} could not be made a voter: {e}", r.site))),
                Err(_) => return Err(Status::unavailable(format!("the membership change for {} did not commit within {} s", r.site, wait.as_secs()))),
            }
            format!("site {} joined generation {} as a Raft voter ({} voters now)", r.site, cluster.generation, members.len())
        } else {
            format!(
                "site {} joined generation {} as a Raft learner: it votes once {} more site(s) rejoin (with {} voters, losing either one would stop every commit)",
                r.site,
                cluster.generation,
                MIN_SAFE_VOTERS - members.len(),
                members.len()
            )
        };
        self.propose(Command::Event { what, result: "ok".into(), automatic: false }, pb::ChangeRequest { who: r.who, why: r.why, approval: 0 })
            .await
            .map(change_reply)
    }

    async fn set_policy(&self, req: Request<pb::PolicyRequest>) -> Result<Response<pb::ChangeReply>, Status> {
        let caller = self.authorize(&req, "policy set (changing the automatic-failover policy)", Need::Role(Role::Admin))?;
        let r = req.into_inner();
        // Over plaintext nobody has a certificate name to approve with.
        if r.key == "four_eyes" && r.value.trim() == "true" && matches!(caller, Caller::Plaintext) {
            return Err(Status::failed_precondition(format!("{}; nothing changed", crate::config::FOUR_EYES_NEEDS_TLS)));
        }
        let spec = crate::ops::PolicySpec { key: r.key, value: r.value, expect: r.expect };
        self.propose(Command::SetPolicy(spec), attested(&caller, pb::ChangeRequest { who: r.who, why: r.why, approval: r.approval })).await.map(change_reply)
    }

    async fn members(&self, req: Request<pb::MembersRequest>) -> Result<Response<pb::MembersReply>, Status> {
        self.authorize(&req, "members", Need::Role(Role::Viewer))?;
        let forward = wants_forwarding(&req);
        if req.get_ref().local {
            return Ok(Response::new(self.members()));
        }
        if let Err(refusal) = self.confirm_leadership().await {
            return match convert::leader_named(&refusal) {
                Some(addr) if forward => {
                    let reply = self.forward(&addr, |mut c| async move { c.members(forwarded_request(pb::MembersRequest { local: false })).await }).await?;
                    Ok(Response::new(reply))
                }
                _ => Err(refusal),
            };
        }
        Ok(Response::new(pb::MembersReply { from_leader: true, ..self.members() }))
    }

    async fn remove_member(&self, req: Request<pb::RemoveMemberRequest>) -> Result<Response<pb::ChangeReply>, Status> {
        let caller = self.authorize(&req, "members remove (a Raft membership change)", Need::Role(Role::Admin))?;
        let r = req.into_inner();
        let change = attested(&caller, pb::ChangeRequest { who: r.who, why: r.why, approval: 0 });
        // Checked before anything changes: no removal goes unaudited.
        audit_fields(&change)?;
        self.confirm_leadership().await?;
        let cluster = self.state.cluster();
        let site = cluster.sites.get(&r.site).ok_or_else(|| Status::invalid_argument(format!("unknown site {:?}", r.site)))?.clone();
        let view = pb::MembersReply { from_leader: true, ..self.members() };
        let Some(member) = view.members.iter().find(|m| m.node_id == site.node_id) else {
            return Ok(Response::new(pb::ChangeReply {
                audit_seq: 0,
                result: format!("no change: {}'s controller is not a Raft member", r.site),
                log_index: 0,
                accepted: true,
                changed: false,
            }));
        };
        if member.leader {
            return Err(Status::failed_precondition(format!(
                "{}'s controller leads: a lost controller cannot lead, so this one is alive. Stop it first (another leader is elected), then remove it",
                r.site
            )));
        }
        let heard = member.last_contact_ms.map(Duration::from_millis);
        // Never heard counts as lost only after this node has listened for
        // as long (a leader that just started has heard nobody yet).
        let listened = self.contacts.recording_for();
        if heard.is_none() && listened < MEMBER_LOST_AFTER {
            return Err(Status::failed_precondition(format!(
                "this leader started {} s ago and has not heard {}'s controller yet: ask again once it has listened for {} s",
                listened.as_secs(),
                r.site,
                MEMBER_LOST_AFTER.as_secs()
            )));
        }
        if heard.is_some_and(|h| h < MEMBER_LOST_AFTER) {
            return Err(Status::failed_precondition(format!(
                "{}'s controller answered the leader {} ms ago: it is not lost. Stop it for good before removing it (a removed controller that still runs would disturb the cluster)",
                r.site,
                heard.unwrap_or_default().as_millis()
            )));
        }
        let voters: std::collections::BTreeSet<u64> = view.members.iter().filter(|m| m.role == "voter").map(|m| m.node_id).collect();
        let remaining: std::collections::BTreeSet<u64> = voters.iter().copied().filter(|id| *id != site.node_id).collect();
        if remaining.len() < 2 && member.role == "voter" {
            return Err(Status::failed_precondition(format!(
                "removing {} would leave {} voter(s): keep it, or add a replacement first",
                r.site,
                remaining.len()
            )));
        }
        let wait = self.commit_timeout * 2;
        let gone = std::collections::BTreeSet::from([site.node_id]);
        // `retain: false`: a removed voter does not stay on as a learner.
        let removal = match member.role.as_str() {
            "voter" => openraft::ChangeMembers::RemoveVoters(gone),
            _ => openraft::ChangeMembers::RemoveNodes(gone),
        };
        let changed = tokio::time::timeout(wait, self.raft.change_membership(removal, false)).await;
        match changed {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Status::unavailable(format!("{} could not be removed: {e}", r.site))),
            Err(_) => return Err(Status::unavailable(format!("the membership change removing {} did not commit within {} s", r.site, wait.as_secs()))),
        }
        let what = format!(
            "site {}'s controller (node {}) removed from the Raft membership ({} voters now); a replacement joins with `tandem members add --site {}`",
            r.site,
            site.node_id,
            voters.len() - usize::from(member.role == "voter"),
            r.site
        );
        // The removal has committed: a failure now is of its audit entry
        // only, and must not read as "nothing happened".
        self.propose(Command::Event { what, result: "ok".into(), automatic: false }, change).await.map(change_reply).map_err(|e| {
            Status::unavailable(format!(
                "{}'s controller WAS removed from the Raft membership, but its audit entry could not be recorded ({}): record it by hand (`tandem members` shows the removal)",
                r.site,
                e.message()
            ))
        })
    }

    async fn request_approval(&self, req: Request<pb::ApprovalRequest>) -> Result<Response<pb::ChangeReply>, Status> {
        let caller = self.authorize(&req, "asking for a second admin's approval", Need::Role(Role::Admin))?;
        operator_only(&caller, "asking for a second admin's approval")?;
        let r = req.into_inner();
        let spec = crate::ops::approval::RequestSpec { action: r.action, args: r.args.into_iter().collect(), plan: r.plan };
        self.propose(Command::RequestApproval(spec), attested(&caller, pb::ChangeRequest { who: r.who, why: r.why, approval: 0 })).await.map(change_reply)
    }

    async fn decide_approval(&self, req: Request<pb::ApprovalDecision>) -> Result<Response<pb::ChangeReply>, Status> {
        let caller = self.authorize(&req, "approving or rejecting a request (four eyes)", Need::Role(Role::Admin))?;
        operator_only(&caller, "approving or rejecting a request (four eyes)")?;
        let r = req.into_inner();
        let spec = crate::ops::approval::DecisionSpec { id: r.id, approve: r.approve };
        self.propose(Command::DecideApproval(spec), attested(&caller, pb::ChangeRequest { who: r.who, why: r.why, approval: 0 })).await.map(change_reply)
    }

    async fn use_approval(&self, req: Request<pb::ApprovalUse>) -> Result<Response<pb::ChangeReply>, Status> {
        // A replicator, for the operator it authenticated (their `who`).
        self.authorize(&req, "using an approval (a replicator's destroy)", Need::Site)?;
        let r = req.into_inner();
        let spec = crate::ops::approval::UseSpec { id: r.id, action: r.action, args: r.args.into_iter().collect() };
        self.propose(Command::UseApproval(spec), pb::ChangeRequest { who: r.who, why: r.why, approval: 0 }).await.map(change_reply)
    }

    async fn shard_move(&self, req: Request<pb::ShardMoveRequest>) -> Result<Response<pb::ChangeReply>, Status> {
        // Switchover and failover send the same steps; both are an operator's call.
        let caller = self.authorize(&req, "switchover or failover (moving shards)", Need::Role(Role::Operator))?;
        let r = req.into_inner();
        if r.automatic && matches!(caller, Caller::Tls(tandem_net::Peer::Operator { .. })) {
            // Automatic moves are tandem's own (no approval, the cooldown):
            // an operator's certificate cannot claim to be one.
            return Err(Status::permission_denied("only a site's controller makes automatic moves; an operator's move is never automatic"));
        }
        let step =
            MoveStep::parse(&r.step).ok_or_else(|| Status::invalid_argument(format!("unknown shard move step {:?}: use drain, move or cancel", r.step)))?;
        let spec = ShardMoveSpec {
            step,
            from: r.from,
            to: r.to,
            shards: r.shards,
            expect_epoch: r.expect_epoch,
            require_drained: r.require_drained,
            automatic: r.automatic,
            require_sync: r.require_sync,
            kind: MoveKind::parse(&r.kind)
                .ok_or_else(|| Status::invalid_argument(format!("unknown shard move kind {:?}: use switchover or failover", r.kind)))?,
            deadline_ms: r.deadline_ms,
            writer_last_heard_ms: 0,
        };
        let mut spec = spec;
        if spec.step == MoveStep::Drain && spec.kind == MoveKind::Failover {
            // Only this node's own board says when the old owner was last
            // heard (a proposal a follower refuses is re-sent to the leader,
            // which fills it in from its board).
            spec.writer_last_heard_ms = self.health.snapshot().iter().find(|h| h.site == spec.from).map_or(0, |h| h.received_at_unix_ms);
        }
        if spec.step == MoveStep::Move {
            if let Err(missing) = self.prove_caught_up(&spec).await {
                let why = format!(
                    "switchover move of {} from {} to {} refused, {NOT_CAUGHT_UP} {missing}; nothing moved (the drain stays until the switchover finishes or is cancelled)",
                    crate::ops::describe_shards(&spec.shards),
                    spec.from,
                    spec.to
                );
                return Err(with_code(Status::failed_precondition(why), error_code::NOT_CAUGHT_UP));
            }
            let held = self.hold_move(&spec).await;
            if !held.is_zero() {
                tracing::info!(from = %spec.from, to = %spec.to, held_ms = held.as_millis() as u64, "move held until the old owner's lease ran out");
            }
        }
        self.propose(Command::ShardMove(spec), attested(&caller, pb::ChangeRequest { who: r.who, why: r.why, approval: r.approval })).await.map(change_reply)
    }
}

#[cfg(test)]
mod tests {
    use super::quorum_safe;

    // After a DR activation (one voter) a returning site stays a learner
    // until a third site returns; then all vote.
    #[test]
    fn returning_sites_vote_only_in_a_configuration_that_survives_a_loss() {
        assert!(!quorum_safe(1, 2), "one voter and one returning site would make two voters");
        assert!(quorum_safe(1, 3));
        assert!(quorum_safe(3, 3));
        assert!(!quorum_safe(3, 2), "never fewer voters than now");
    }
}
