//! What a node reports about itself and the cluster: the domain side of
//! the control API's Status call, also what `tandem status --json` prints.

use serde::{Deserialize, Serialize};

use crate::health::ReplicatorHealth;
use crate::state::ClusterState;

/// One node's Raft view.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftStatus {
    pub node_id: u64,
    pub site: String,
    /// "leader", "follower", "candidate", "learner" or "shutdown".
    pub role: String,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub leader_site: Option<String>,
    pub leader_addr: Option<String>,
    pub last_log_index: u64,
    pub last_applied_index: u64,
}

/// A node's answer to Status: its Raft view and its applied cluster state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub raft: RaftStatus,
    pub cluster: ClusterState,
    /// Latest heartbeat of each replicator this node heard from.
    #[serde(default)]
    pub replicators: Vec<ReplicatorHealth>,
    /// The node's clock when it answered, to age the heartbeats.
    #[serde(default)]
    pub now_unix_ms: u64,
    /// The leader only: per site that owns shards, whether an automatic
    /// failover would go ahead if it were lost now ("" : it would; else
    /// why not). Followers leave it empty.
    #[serde(default)]
    pub auto_failover: std::collections::BTreeMap<String, String>,
}
