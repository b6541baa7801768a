//! Raft peer client: openraft's RPCs over tonic.
//!
//! One cached channel per peer, shared by every client openraft creates for
//! that peer. Every call is bounded by the RPC option's hard TTL; after a
//! timeout or a transport error the channel is dropped and the next call
//! dials afresh, because a connection across a silent partition (or a
//! simulated one, which never retransmits) can hang without failing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tandem_net::Transport;
use tandem_proto::raft::raft_client::RaftClient;
use tandem_proto::raft::RaftPayload;
use tonic::transport::Channel;

use super::{NodeId, TypeConfig};

/// Largest Raft message accepted (snapshot chunks, log batches).
pub const MAX_RAFT_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// When this node last had an answer from each peer (any Raft RPC), for
/// `tandem members`: openraft's metrics say how far a peer's log is, not
/// whether it still answers.
#[derive(Clone)]
pub struct Contacts {
    heard: Arc<Mutex<BTreeMap<NodeId, tokio::time::Instant>>>,
    /// When this process began recording.
    since: tokio::time::Instant,
}

impl Default for Contacts {
    fn default() -> Self {
        Contacts { heard: Arc::default(), since: tokio::time::Instant::now() }
    }
}

impl Contacts {
    /// How long this node has been recording contacts: "never heard" means
    /// little from a node that started a moment ago.
    pub fn recording_for(&self) -> std::time::Duration {
        self.since.elapsed()
    }

    fn heard(&self, node: NodeId) {
        self.heard.lock().unwrap_or_else(|e| e.into_inner()).insert(node, tokio::time::Instant::now());
    }

    /// How long ago `node` last answered (`None`: never, since this
    /// process started).
    pub fn since(&self, node: NodeId) -> Option<std::time::Duration> {
        self.heard.lock().unwrap_or_else(|e| e.into_inner()).get(&node).map(|t| t.elapsed())
    }
}

/// Creates per-peer clients that share a channel cache.
#[derive(Clone)]
pub struct PeerNetwork {
    transport: Transport,
    channels: Arc<Mutex<BTreeMap<NodeId, Channel>>>,
    /// The applied state, for the generation every request carries.
    state: super::state_machine::StateReader,
    contacts: Contacts,
}

impl PeerNetwork {
    pub fn new(transport: Transport, state: super::state_machine::StateReader) -> Self {
        Self { transport, channels: Arc::default(), state, contacts: Contacts::default() }
    }

    /// When each peer last answered this node.
    pub fn contacts(&self) -> Contacts {
        self.contacts.clone()
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient { target, addr: node.addr.clone(), net: self.clone() }
    }
}

pub struct PeerClient {
    target: NodeId,
    addr: String,
    net: PeerNetwork,
}

#[derive(Clone, Copy)]
enum Rpc {
    Vote,
    Append,
    Snapshot,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

impl PeerClient {
    fn channel(&self) -> Result<Channel, Failure> {
        let mut cache = self.net.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ch) = cache.get(&self.target) {
            return Ok(ch.clone());
        }
        let ch = self.net.transport.channel(&self.addr).map_err(|e| Failure(format!("bad peer address {}: {e}", self.addr)))?;
        cache.insert(self.target, ch.clone());
        Ok(ch)
    }

    fn forget_channel(&self) {
        self.net.channels.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.target);
    }

    async fn call<Req, Resp, E>(&mut self, rpc: Rpc, req: &Req, option: &RPCOption) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let json = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let channel = self.channel().map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut client = RaftClient::new(channel).max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES).max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES);
        let payload = RaftPayload { json, generation: self.net.state.cluster().generation };
        let fut = async move {
            match rpc {
                Rpc::Vote => client.vote(payload).await,
                Rpc::Append => client.append_entries(payload).await,
                Rpc::Snapshot => client.install_snapshot(payload).await,
            }
        };
        let reply = match tokio::time::timeout(option.hard_ttl(), fut).await {
            Ok(Ok(reply)) => {
                self.net.contacts.heard(self.target);
                reply.into_inner()
            }
            Ok(Err(status)) => {
                self.forget_channel();
                let f = Failure(format!("peer {} ({}): {}", self.target, self.addr, status.message()));
                return Err(RPCError::Unreachable(Unreachable::new(&f)));
            }
            Err(_) => {
                self.forget_channel();
                let f = Failure(format!("peer {} ({}) did not answer within {:?}", self.target, self.addr, option.hard_ttl()));
                return Err(RPCError::Unreachable(Unreachable::new(&f)));
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(&reply.json).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>> {
        self.call(Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}
