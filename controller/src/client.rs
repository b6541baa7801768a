//! Client of the control API, used by the CLI (and tests).
//!
//! Reads go to the first controller that answers. Changes follow the
//! leader: a follower's refusal names the leader's address, and the client
//! retries there. Every call is bounded, and a client never retries a change
//! whose outcome is unknown (a commit timeout), since it might have applied.

use std::collections::VecDeque;
use std::time::Duration;

use tandem_net::Transport;
use tandem_proto::control as pb;
use tandem_proto::control::control_client::ControlClient as PbClient;
use tandem_proto::error_code as code;
use tonic::Code;

use crate::convert;
use crate::health::ReplicatorHealth;
use crate::ops::{PairModeSpec, ShardMoveSpec};
use crate::state::AuditEntry;
use crate::status::NodeStatus;

/// Redirects followed before giving up (a leader change mid-call moves
/// the leader once; more means the cluster is unstable).
const MAX_LEADER_HOPS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no controller answered: {tried}. Is the cluster running? (`tandem demo` starts a local one; --controllers or TANDEM_CONTROLLERS picks others; a cluster with TLS needs your certificate: --tls-dir or TANDEM_TLS_DIR)")]
    NoController { tried: String },
    #[error("no quorum: {0}")]
    NoQuorum(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Malformed(#[from] convert::Malformed),
}

/// How long a pair-mode change waits for the first controller it asks (the
/// leader it last knew) before it goes the other way round, through another
/// controller that forwards it: across a fresh cut the leader does not
/// answer, and the full call bound (8 s for a replicator) kept writes
/// waiting. Safe because the change is a compare-and-set on the pair's
/// state id: if the first call did land after all, the second is refused
/// as "changed meanwhile", and the caller reads the mode again.
pub const PAIR_MODE_FIRST_ANSWER: Duration = Duration::from_millis(1500);

/// How long a change waits for an election to finish before it reports
/// that no leader is reachable.
const ELECTION_WAIT: Duration = Duration::from_secs(3);

/// Why one round of a proposal failed.
enum Round {
    /// Nodes answered but none knew a reachable leader: worth retrying.
    NoLeader(ClientError),
    Failed(ClientError),
}

/// A state change the CLI can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Pause,
    Resume,
}

/// What a committed change produced.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ChangeOutcome {
    pub audit_seq: u64,
    pub result: String,
    /// Address of the leader that committed it.
    pub leader_addr: String,
    /// Raft log index that carried it.
    pub log_index: u64,
    /// False when the rules refused it (nothing changed; `result` says why).
    pub accepted: bool,
    /// It changed the agreed state (an accepted request may not).
    pub changed: bool,
}

pub struct ControlClient {
    addrs: Vec<String>,
    transport: Transport,
    call_timeout: Duration,
    /// The controller that last answered a leader-only call: asked first
    /// next time, so a dead controller early in `addrs` costs one timeout,
    /// not one per call (a failover's steps, a lease renewal every 250 ms).
    leader_hint: std::sync::Mutex<Option<String>>,
    /// One connection per controller, dropped when a call finds it
    /// unreachable.
    channels: std::sync::Mutex<std::collections::BTreeMap<String, tonic::transport::Channel>>,
    /// The approved request ([`crate::ops::approval`]) that this client's
    /// shard moves and policy changes carry out (`tandem approve`).
    approval: Option<u64>,
}

/// Which controllers to ask, in order. A follower's "not the leader"
/// sends the next call to the leader it names; only when that leader
/// cannot be reached from here (a link cut) is the follower asked again,
/// to forward the call itself (for the calls it forwards: the
/// leader-confirmed status and pair-mode changes).
struct Route {
    queue: VecDeque<(String, bool)>,
    unreachable: std::collections::BTreeSet<String>,
    /// Leader -> the follower that named it.
    via: std::collections::BTreeMap<String, String>,
    asked_to_forward: std::collections::BTreeSet<String>,
}

impl Route {
    fn new(addrs: &[String], first: Option<String>) -> Self {
        let mut queue: VecDeque<(String, bool)> = addrs.iter().filter(|a| Some(*a) != first.as_ref()).map(|a| (a.clone(), false)).collect();
        if let Some(f) = first {
            queue.push_front((f, false));
        }
        Route { queue, unreachable: Default::default(), via: Default::default(), asked_to_forward: Default::default() }
    }

    /// The next address, and whether to ask it to forward.
    fn next(&mut self) -> Option<(String, bool)> {
        self.queue.pop_front()
    }

    fn ask_to_forward(&mut self, follower: &str) {
        if self.asked_to_forward.insert(follower.to_string()) {
            self.queue.push_front((follower.to_string(), true));
        }
    }

    /// `from` said it is not the leader and named `leader`.
    fn redirected(&mut self, from: &str, leader: String) {
        if self.unreachable.contains(&leader) {
            self.ask_to_forward(from);
        } else {
            self.queue.retain(|(a, _)| *a != leader);
            self.via.insert(leader.clone(), from.to_string());
            self.queue.push_front((leader, false));
        }
    }

    /// `addr` did not answer.
    fn unreachable(&mut self, addr: &str) {
        self.unreachable.insert(addr.to_string());
        if let Some(follower) = self.via.get(addr).cloned() {
            self.ask_to_forward(&follower);
        }
    }
}

/// The generated client the calls go through.
type Pb = PbClient<tonic::transport::Channel>;

/// What a leader-only call makes of a refusal other than "not the leader,
/// ask X".
enum Refused<E> {
    /// Ask the next node.
    Next,
    /// Stop with this error.
    Stop(E),
}

/// A leader-only call no node answered.
#[derive(Default)]
struct Missed {
    /// Every node asked, and what went wrong there, in order.
    tried: Vec<(String, CallError)>,
    /// The nodes among them that answered without answering (not the
    /// leader, no leader known).
    answered: Vec<String>,
}

/// `msg` as a request, asking a follower to forward it if `forward`.
fn routed<T>(msg: T, forward: bool) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if forward {
        req.metadata_mut().insert(tandem_proto::FORWARD_METADATA, tonic::metadata::MetadataValue::from_static(tandem_proto::FORWARD_PLEASE));
    }
    req
}

enum CallError {
    /// Could not reach the node, or it did not answer in time.
    Unreachable(String),
    Status(tonic::Status),
}

impl ControlClient {
    /// `call_timeout` bounds each call; keep it above the servers' commit
    /// timeout so a slow commit is reported by the server, not cut off here.
    pub fn new(addrs: Vec<String>, transport: Transport, call_timeout: Duration) -> Self {
        Self { addrs, transport, call_timeout, leader_hint: Default::default(), channels: Default::default(), approval: None }
    }

    /// This client, its shard moves and policy changes carrying approval
    /// `id` (the approver running what they approved).
    pub fn with_approval(mut self, id: u64) -> Self {
        self.approval = Some(id);
        self
    }

    /// The approval this client carries, if any.
    pub fn approval(&self) -> Option<u64> {
        self.approval
    }

    fn hint(&self) -> Option<String> {
        self.leader_hint.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `addr` answered a leader-only call (`Some`), or the hinted leader
    /// did not answer (`None` clears the hint if it was `addr`).
    fn note_leader(&self, addr: &str, answered: bool) {
        let mut h = self.leader_hint.lock().unwrap_or_else(|p| p.into_inner());
        if answered {
            *h = Some(addr.to_string());
        } else if h.as_deref() == Some(addr) {
            *h = None;
        }
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// A client of the same controllers whose calls may take `call_timeout`
    /// (a Raft join waits for the learner to catch up).
    pub fn with_timeout(&self, call_timeout: Duration) -> ControlClient {
        ControlClient::new(self.addrs.clone(), self.transport.clone(), call_timeout)
    }

    /// A client of `addr` alone, with this one's transport and timeout.
    pub fn clone_for(&self, addr: &str) -> ControlClient {
        ControlClient::new(vec![addr.to_string()], self.transport.clone(), self.call_timeout)
    }

    /// A client on the connection kept for `addr` (made on first use): a
    /// new TCP (and TLS) connection per call would cost its handshakes on
    /// every lease renewal, heartbeat and probe, round trips that a
    /// degraded DR link makes long.
    fn client(&self, addr: &str) -> Result<PbClient<tonic::transport::Channel>, CallError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                let c = self.transport.channel(addr).map_err(|e| CallError::Unreachable(format!("bad address: {e}")))?;
                channels.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(PbClient::new(channel))
    }

    /// Bounds one call to `addr`; a connection found unreachable is dropped,
    /// so the next call connects afresh (one across a silent partition can
    /// hang without ever reporting an error).
    async fn bounded<T>(&self, addr: &str, fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> Result<T, CallError> {
        let r = self.bounded_once(fut).await;
        if matches!(r, Err(CallError::Unreachable(_))) {
            self.channels.lock().unwrap_or_else(|p| p.into_inner()).remove(addr);
        }
        r
    }

    async fn bounded_once<T>(&self, fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> Result<T, CallError> {
        match tokio::time::timeout(self.call_timeout, fut).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            // Our servers mark their own refusals with an error code; an
            // unmarked UNAVAILABLE/UNKNOWN/CANCELLED comes from the transport,
            // and UNIMPLEMENTED/INTERNAL from something that is not a tandem
            // controller (e.g. a middlebox answering HTTP 404 for a host
            // whose route is gone).
            Ok(Err(s)) if error_code(&s).is_none() && is_transport_failure(&s) => Err(CallError::Unreachable(s.message().to_string())),
            Ok(Err(s)) => Err(CallError::Status(s)),
            Err(_) => Err(CallError::Unreachable(format!("no answer within {} ms", self.call_timeout.as_millis()))),
        }
    }

    /// Status of the controller at `addr`.
    pub async fn status_at(&self, addr: &str) -> Result<NodeStatus, ClientError> {
        let mut c = self.client(addr).map_err(|e| no_controller(vec![(addr.to_string(), e)]))?;
        match self.bounded(addr, c.status(pb::StatusRequest { linearizable: false, ..Default::default() })).await {
            Ok(r) => Ok(convert::status_from_pb(r)?),
            Err(e) => Err(no_controller(vec![(addr.to_string(), e)])),
        }
    }

    /// The state as of now, from the leader after it confirmed its
    /// leadership with a quorum (see `StatusRequest.linearizable`).
    /// Follows one leader redirect. Not a write lease: for readers that
    /// never write (the CLI, the drill's checker).
    pub async fn leader_status(&self) -> Result<NodeStatus, ClientError> {
        self.linearizable_status(pb::StatusRequest { linearizable: true, lease_for: String::new(), no_lease: true }).await
    }

    /// [`ControlClient::leader_status`] for `site`'s replicator, which takes
    /// its write lease from the answer: the leader records the grant (see
    /// `crate::lease`).
    pub async fn lease_status(&self, site: &str) -> Result<NodeStatus, ClientError> {
        self.linearizable_status(pb::StatusRequest { linearizable: true, lease_for: site.to_string(), no_lease: false }).await
    }

    async fn linearizable_status(&self, req: pb::StatusRequest) -> Result<NodeStatus, ClientError> {
        let call = |mut c: Pb, forward: bool| {
            let req = routed(req.clone(), forward);
            async move { c.status(req).await }
        };
        let r = self.read_from_leader(call).await?;
        Ok(convert::status_from_pb(r)?)
    }

    /// A leader-only read. While the nodes that answer know no leader (an
    /// election under way, or a leader that just stepped down), it asks
    /// again for up to [`ELECTION_WAIT`]: a read changes nothing, and an
    /// SRE's command should ride out an election, not fail on it.
    async fn read_from_leader<T, Fut>(&self, call: impl Fn(Pb, bool) -> Fut) -> Result<T, ClientError>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = tokio::time::Instant::now();
        loop {
            match self.to_leader(&call, |_| Refused::<ClientError>::Next).await {
                Ok((_, r)) => return Ok(r),
                Err(Ok(e)) => return Err(e),
                Err(Err(missed)) if !missed.answered.is_empty() && started.elapsed() < ELECTION_WAIT => {
                    tracing::debug!("no leader answered yet; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(Err(missed)) => return Err(no_controller(missed.tried)),
            }
        }
    }

    /// Sends one leader-only call: to the controller that last answered one
    /// first, then the others in order, following "not the leader"
    /// redirects (at most [`MAX_LEADER_HOPS`]) and asking a follower to
    /// forward when the leader it names cannot be reached from here (see
    /// [`Route`]). `refused` says what any other refusal means. Returns the
    /// answering address and its answer; `Err(Ok)` when `refused` stopped,
    /// `Err(Err)` when no node answered.
    async fn to_leader<T, E, Fut>(
        &self,
        call: impl Fn(Pb, bool) -> Fut,
        refused: impl FnMut(&tonic::Status) -> Refused<E>,
    ) -> Result<(String, T), Result<E, Missed>>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.to_leader_within(call, refused, None).await
    }

    /// [`Self::to_leader`], giving the first controller asked only
    /// `first_answer` when set (and another route exists); see
    /// [`PAIR_MODE_FIRST_ANSWER`] for when that is safe.
    async fn to_leader_within<T, E, Fut>(
        &self,
        call: impl Fn(Pb, bool) -> Fut,
        mut refused: impl FnMut(&tonic::Status) -> Refused<E>,
        first_answer: Option<Duration>,
    ) -> Result<(String, T), Result<E, Missed>>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut route = Route::new(&self.addrs, self.hint());
        let mut missed = Missed::default();
        let mut hops = 0;
        let mut first = first_answer.filter(|_| self.addrs.len() > 1);
        while let Some((addr, forward)) = route.next() {
            let result = match (self.client(&addr), first.take()) {
                (Ok(c), Some(bound)) => match tokio::time::timeout(bound, self.bounded(&addr, call(c, forward))).await {
                    Ok(r) => r,
                    Err(_) => {
                        // A connection across a cut can hang: the next call makes a new one.
                        self.channels.lock().unwrap_or_else(|p| p.into_inner()).remove(&addr);
                        Err(CallError::Unreachable(format!("no answer within {} ms; asking another controller", bound.as_millis())))
                    }
                },
                (Ok(c), None) => self.bounded(&addr, call(c, forward)).await,
                (Err(e), _) => Err(e),
            };
            match result {
                Ok(r) => {
                    if !forward {
                        self.note_leader(&addr, true);
                    }
                    return Ok((addr, r));
                }
                Err(CallError::Status(s)) => {
                    let leader = if error_code(&s) == Some(code::NOT_LEADER) { convert::leader_named(&s) } else { None };
                    match leader {
                        Some(l) if hops < MAX_LEADER_HOPS => {
                            hops += 1;
                            route.redirected(&addr, l);
                        }
                        _ => {
                            if let Refused::Stop(e) = refused(&s) {
                                return Err(Ok(e));
                            }
                        }
                    }
                    missed.answered.push(addr.clone());
                    missed.tried.push((addr, CallError::Status(s)));
                }
                Err(e) => {
                    self.note_leader(&addr, false);
                    route.unreachable(&addr);
                    missed.tried.push((addr, e));
                }
            }
        }
        Err(Err(missed))
    }

    /// The agreed state (from the answering controller that has applied the
    /// most) and what every answering controller observes of the
    /// replicators, merged ([`crate::plan::Observations::merged`]).
    pub async fn observe(&self) -> Result<(NodeStatus, crate::plan::Observations), ClientError> {
        let answers = futures::future::join_all(self.addrs.iter().map(|a| self.status_at(a))).await;
        let answered: Vec<NodeStatus> = answers.into_iter().flatten().collect();
        // The most up-to-date agreed state: a controller that just came
        // back may not have applied the latest changes yet, and a plan made
        // on its state would be stale.
        let newest = answered.iter().max_by_key(|s| (s.cluster.generation, s.raft.last_applied_index)).cloned();
        let Some(first) = newest else {
            // Nobody answered: let `status` report it (it names every address).
            let (_, first) = self.status().await?;
            let obs = crate::plan::Observations::merged([&first]);
            return Ok((first, obs));
        };
        let obs = crate::plan::Observations::merged(&answered);
        Ok((first, obs))
    }

    /// Status from the first controller that answers, with its address.
    pub async fn status(&self) -> Result<(String, NodeStatus), ClientError> {
        let mut tried = Vec::new();
        for addr in &self.addrs {
            match self.status_at(addr).await {
                Ok(s) => return Ok((addr.clone(), s)),
                Err(ClientError::NoController { tried: t }) => tried.push(t),
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::NoController { tried: tried.join("; ") })
    }

    /// The newest `limit` audit entries (newest first), from the first
    /// controller that answers.
    pub async fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>, ClientError> {
        self.audit_from(&self.addrs, limit).await
    }

    /// The audit log as the leader has it (a node that just restarted may
    /// not have replayed the latest entries yet). Falls back to any node.
    pub async fn leader_audit(&self, limit: u32) -> Result<Vec<AuditEntry>, ClientError> {
        if let Ok(status) = self.leader_status().await {
            if let Some(addr) = status.raft.leader_addr {
                if let Ok(entries) = self.audit_from(&[addr], limit).await {
                    return Ok(entries);
                }
            }
        }
        self.audit(limit).await
    }

    /// One page of the audit log as the controller at `addr` has it on its
    /// disk: up to `limit` entries from `from_seq` on, oldest first, and the
    /// number of entries it says it holds.
    pub async fn audit_page(&self, addr: &str, from_seq: u64, limit: u32) -> Result<(Vec<AuditEntry>, u64), ClientError> {
        let mut c = self.client(addr).map_err(|e| no_controller(vec![(addr.to_string(), e)]))?;
        match self.bounded(addr, c.audit(pb::AuditRequest { limit, from_seq: from_seq.max(1) })).await {
            Ok(r) => Ok((r.entries.into_iter().map(convert::audit_from_pb).collect(), r.audit_len)),
            Err(CallError::Status(s)) => Err(ClientError::Refused(s.message().to_string())),
            Err(e) => Err(no_controller(vec![(addr.to_string(), e)])),
        }
    }

    async fn audit_from(&self, addrs: &[String], limit: u32) -> Result<Vec<AuditEntry>, ClientError> {
        let mut tried = Vec::new();
        for addr in addrs {
            let result = match self.client(addr) {
                Ok(mut c) => self.bounded(addr, c.audit(pb::AuditRequest { limit, from_seq: 0 })).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(r) => return Ok(r.entries.into_iter().map(convert::audit_from_pb).collect()),
                Err(CallError::Status(s)) => return Err(ClientError::Refused(s.message().to_string())),
                Err(e) => tried.push((addr.clone(), e)),
            }
        }
        Err(no_controller(tried))
    }

    /// Asks the leader to apply `change`, following redirects.
    pub async fn change(&self, change: Change, who: &str, why: &str) -> Result<ChangeOutcome, ClientError> {
        let req = pb::ChangeRequest { who: who.to_string(), why: why.to_string(), approval: 0 };
        match change {
            Change::Pause => {
                self.propose(|mut c, _| {
                    let r = req.clone();
                    async move { c.pause(r).await }
                })
                .await
            }
            Change::Resume => {
                self.propose(|mut c, _| {
                    let r = req.clone();
                    async move { c.resume(r).await }
                })
                .await
            }
        }
    }

    /// Asks the leader to set an in-city pair's replication mode
    /// (compare-and-set on `spec.expect_state_id`).
    pub async fn set_pair_mode(&self, spec: &PairModeSpec, who: &str, why: &str) -> Result<ChangeOutcome, ClientError> {
        let req = pb::PairModeRequest {
            who: who.to_string(),
            why: why.to_string(),
            site: spec.site.clone(),
            peer: spec.peer.clone(),
            expect_state_id: spec.expect_state_id,
            mode: spec.mode.as_str().to_string(),
            since_seq: spec.since_seq,
        };
        self.propose_within(
            |mut c, forward| {
                let r = routed(req.clone(), forward);
                async move { c.set_pair_mode(r).await }
            },
            Some(PAIR_MODE_FIRST_ANSWER),
        )
        .await
    }

    /// Asks the leader to apply one step of a shard move.
    pub async fn shard_move(&self, spec: &ShardMoveSpec, who: &str, why: &str) -> Result<ChangeOutcome, ClientError> {
        let req = pb::ShardMoveRequest {
            who: who.to_string(),
            why: why.to_string(),
            step: spec.step.as_str().to_string(),
            from: spec.from.clone(),
            to: spec.to.clone(),
            shards: spec.shards.clone(),
            expect_epoch: spec.expect_epoch,
            require_drained: spec.require_drained,
            automatic: spec.automatic,
            require_sync: spec.require_sync,
            kind: spec.kind.as_str().to_string(),
            deadline_ms: spec.deadline_ms,
            approval: self.approval.unwrap_or(0),
        };
        self.propose(|mut c, _| {
            let r = req.clone();
            async move { c.shard_move(r).await }
        })
        .await
    }

    /// Sets a site's role (compare-and-set on `spec.expect`).
    pub async fn set_site_role(&self, spec: &crate::ops::SiteRoleSpec, who: &str, why: &str) -> Result<ChangeOutcome, ClientError> {
        let req = pb::SiteRoleRequest {
            who: who.into(),
            why: why.into(),
            site: spec.site.clone(),
            expect: spec.expect.as_str().into(),
            role: spec.role.as_str().into(),
        };
        self.propose(|mut c, _| {
            let r = req.clone();
            async move { c.set_site_role(r).await }
        })
        .await
    }

    /// Adds `site`'s controller (restarted empty by `tandem dr rejoin`) to
    /// the Raft membership of the current generation. Give this client a
    /// call timeout long enough for the new node to catch up.
    pub async fn join(&self, site: &str, who: &str, why: &str) -> Result<ChangeOutcome, ClientError> {
        let req = pb::JoinRequest { who: who.into(), why: why.into(), site: site.into() };
        self.propose(|mut c, _| {
            let r = req.clone();
            async move { c.join(r).await }
        })
        .await
    }

    /// Sets one policy key, from the value the caller saw (`expect`).
    pub async fn set_policy(&self, spec: &crate::ops::PolicySpec, who: &str, why: &str) -> Result<ChangeOutcome, ClientError> {
        let req = pb::PolicyRequest {
            who: who.into(),
            why: why.into(),
            key: spec.key.clone(),
            value: spec.value.clone(),
            expect: spec.expect.clone(),
            approval: self.approval.unwrap_or(0),
        };
        self.propose(|mut c, _| {
            let r = req.clone();
            async move { c.set_policy(r).await }
        })
        .await
    }

    /// Records a request for a second admin's approval; the outcome's
    /// audit_seq is its id.
    pub async fn request_approval(&self, spec: &crate::ops::approval::RequestSpec, who: &str, why: &str) -> Result<ChangeOutcome, ClientError> {
        let req = pb::ApprovalRequest {
            who: who.into(),
            why: why.into(),
            action: spec.action.clone(),
            args: spec.args.clone().into_iter().collect(),
            plan: spec.plan.clone(),
        };
        self.propose(|mut c, _| {
            let r = req.clone();
            async move { c.request_approval(r).await }
        })
        .await
    }

    /// Approves or rejects request `id`.
    pub async fn decide_approval(&self, id: u64, approve: bool, who: &str, why: &str) -> Result<ChangeOutcome, ClientError> {
        let req = pb::ApprovalDecision { who: who.into(), why: why.into(), id, approve };
        self.propose(|mut c, _| {
            let r = req.clone();
            async move { c.decide_approval(r).await }
        })
        .await
    }

    /// Uses approval `spec.id` for a change made outside the controllers
    /// (a replicator's destroy), on behalf of `who`.
    pub async fn use_approval(&self, spec: &crate::ops::approval::UseSpec, who: &str, why: &str) -> Result<ChangeOutcome, ClientError> {
        let req = pb::ApprovalUse { who: who.into(), why: why.into(), id: spec.id, action: spec.action.clone(), args: spec.args.clone().into_iter().collect() };
        self.propose(|mut c, _| {
            let r = req.clone();
            async move { c.use_approval(r).await }
        })
        .await
    }

    /// The Raft membership, from the leader (it alone knows how far each
    /// member's log is and when it last answered).
    /// While the nodes that answer know no leader (an election under way),
    /// it asks again for up to [`ELECTION_WAIT`].
    pub async fn members(&self) -> Result<crate::members::Members, ClientError> {
        let call = |mut c: Pb, forward: bool| async move { c.members(routed(pb::MembersRequest { local: false }, forward)).await };
        Ok(crate::members::Members::from_pb(self.read_from_leader(call).await?))
    }

    /// The membership as the first controller that answers last saw it,
    /// without a leader (no log indexes, no contacts): what `tandem
    /// members` shows when no leader answers.
    pub async fn members_seen(&self) -> Result<crate::members::Members, ClientError> {
        let mut tried = Vec::new();
        for addr in &self.addrs {
            let mut c = match self.client(addr) {
                Ok(c) => c,
                Err(e) => {
                    tried.push((addr.clone(), e));
                    continue;
                }
            };
            match self.bounded(addr, c.members(pb::MembersRequest { local: true })).await {
                Ok(r) => return Ok(crate::members::Members::from_pb(r)),
                Err(e) => tried.push((addr.clone(), e)),
            }
        }
        Err(no_controller(tried))
    }

    /// Removes `site`'s lost controller from the Raft membership.
    pub async fn remove_member(&self, site: &str, who: &str, why: &str) -> Result<ChangeOutcome, ClientError> {
        let req = pb::RemoveMemberRequest { who: who.into(), why: why.into(), site: site.into() };
        self.propose(|mut c, _| {
            let r = req.clone();
            async move { c.remove_member(r).await }
        })
        .await
    }

    /// Records an event in the audit log.
    pub async fn record_event(&self, what: &str, result: &str, who: &str, why: &str) -> Result<ChangeOutcome, ClientError> {
        let req = pb::EventRequest { who: who.into(), why: why.into(), what: what.into(), result: result.into(), automatic: false };
        self.propose(|mut c, _| {
            let r = req.clone();
            async move { c.record_event(r).await }
        })
        .await
    }

    /// Records what tandem's own detector decided (a declined automatic
    /// failover): it becomes the cluster's last automatic action.
    pub async fn record_automatic(&self, what: &str, result: &str, who: &str, why: &str) -> Result<ChangeOutcome, ClientError> {
        let req = pb::EventRequest { who: who.into(), why: why.into(), what: what.into(), result: result.into(), automatic: true };
        self.propose(|mut c, _| {
            let r = req.clone();
            async move { c.record_event(r).await }
        })
        .await
    }

    /// Sends a replicator heartbeat to every controller (each keeps its own
    /// view). Returns how many accepted it.
    pub async fn heartbeat(&self, health: &ReplicatorHealth) -> usize {
        let calls = self.addrs.iter().map(|addr| async move {
            let mut c = self.client(addr).ok()?;
            let req = pb::HeartbeatRequest { replicator: Some(convert::replicator_to_pb(health)) };
            self.bounded(addr, c.heartbeat(req)).await.ok()
        });
        futures::future::join_all(calls).await.into_iter().filter(Option::is_some).count()
    }

    /// Sends a state change (`call`, resent as it is to the next node on a
    /// redirect) to the leader. While the answering nodes know no
    /// reachable leader (an election under way), it tries again for up to
    /// [`ELECTION_WAIT`]: nothing was proposed, so a retry cannot apply a
    /// change twice.
    async fn propose<Fut>(&self, call: impl Fn(Pb, bool) -> Fut) -> Result<ChangeOutcome, ClientError>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<pb::ChangeReply>, tonic::Status>>,
    {
        self.propose_within(call, None).await
    }

    /// [`Self::propose`]; `first_answer`: see [`Self::to_leader_within`].
    async fn propose_within<Fut>(&self, call: impl Fn(Pb, bool) -> Fut, first_answer: Option<Duration>) -> Result<ChangeOutcome, ClientError>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<pb::ChangeReply>, tonic::Status>>,
    {
        let started = tokio::time::Instant::now();
        loop {
            match self.propose_round(&call, first_answer).await {
                Err(Round::NoLeader(e)) if started.elapsed() < ELECTION_WAIT => {
                    tracing::debug!(error = %e, "no leader yet; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(Round::NoLeader(e)) | Err(Round::Failed(e)) => return Err(e),
                Ok(o) => return Ok(o),
            }
        }
    }

    async fn propose_round<Fut>(&self, call: &impl Fn(Pb, bool) -> Fut, first_answer: Option<Duration>) -> Result<ChangeOutcome, Round>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<pb::ChangeReply>, tonic::Status>>,
    {
        let refused = |s: &tonic::Status| match error_code(s) {
            Some(code::NOT_LEADER) => Refused::Stop(ClientError::NoQuorum(format!("leadership keeps moving: {}", s.message()))),
            Some(code::NO_LEADER) => Refused::Next,
            // A commit timeout: the change may still apply, so never
            // resend it to another node.
            Some(code::COMMIT_TIMEOUT) => Refused::Stop(ClientError::NoQuorum(s.message().to_string())),
            _ => Refused::Stop(ClientError::Refused(s.message().to_string())),
        };
        match self.to_leader_within(call, refused, first_answer).await {
            Ok((addr, r)) => Ok(ChangeOutcome {
                audit_seq: r.audit_seq,
                result: r.result,
                leader_addr: addr,
                log_index: r.log_index,
                accepted: r.accepted,
                changed: r.changed,
            }),
            Err(Ok(e)) => Err(Round::Failed(e)),
            // Nodes that answered but could not commit (no leader known, or
            // a leader named that then did not answer): a quorum problem,
            // not a dead cluster.
            Err(Err(missed)) if !missed.answered.is_empty() => {
                let unreachable: Vec<&str> = missed.tried.iter().filter(|(_, e)| matches!(e, CallError::Unreachable(_))).map(|(a, _)| a.as_str()).collect();
                Err(Round::NoLeader(ClientError::NoQuorum(format!(
                    "the controllers that answered ({}) know no reachable leader (unreachable: {}); \
                     a majority of sites may be down or cut off. Nothing was changed",
                    missed.answered.join(", "),
                    if unreachable.is_empty() { "none".to_string() } else { unreachable.join(", ") }
                ))))
            }
            Err(Err(missed)) => Err(Round::Failed(no_controller(missed.tried))),
        }
    }
}

/// A status that says nothing about the controller's decision.
pub fn is_transport_failure(s: &tonic::Status) -> bool {
    matches!(s.code(), Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Unimplemented | Code::DeadlineExceeded)
        || s.message().contains("grpc-status header missing")
}

fn error_code(s: &tonic::Status) -> Option<&str> {
    s.metadata().get(tandem_proto::ERROR_CODE_METADATA).and_then(|v| v.to_str().ok())
}

fn no_controller(tried: Vec<(String, CallError)>) -> ClientError {
    let tried = tried
        .into_iter()
        .map(|(addr, e)| match e {
            CallError::Unreachable(m) => format!("{addr} ({m})"),
            CallError::Status(s) => format!("{addr} ({})", s.message()),
        })
        .collect::<Vec<_>>()
        .join("; ");
    ClientError::NoController { tried }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(route: &mut Route) -> Vec<String> {
        std::iter::from_fn(|| route.next().map(|(a, _)| a)).collect()
    }

    // The controller that last answered a leader-only call is asked first,
    // so a dead one earlier in the list costs one timeout, not one per call.
    #[test]
    fn the_last_leader_is_asked_first() {
        let addrs: Vec<String> = ["a:1", "b:1", "c:1"].iter().map(|s| s.to_string()).collect();
        assert_eq!(order(&mut Route::new(&addrs, None)), addrs);
        assert_eq!(order(&mut Route::new(&addrs, Some("c:1".into()))), vec!["c:1", "a:1", "b:1"]);
        // A leader named by a redirect that is not in the list is asked too.
        assert_eq!(order(&mut Route::new(&addrs, Some("d:1".into()))), vec!["d:1", "a:1", "b:1", "c:1"]);
    }

    #[test]
    fn an_unreachable_hint_is_forgotten() {
        let c = ControlClient::new(vec!["a:1".into(), "b:1".into()], Transport::Tokio, Duration::from_millis(10));
        c.note_leader("b:1", true);
        assert_eq!(c.hint().as_deref(), Some("b:1"));
        c.note_leader("a:1", false);
        assert_eq!(c.hint().as_deref(), Some("b:1"), "another controller's silence says nothing of the leader");
        c.note_leader("b:1", false);
        assert_eq!(c.hint(), None);
    }
}
