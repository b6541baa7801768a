//! What a node reports about itself and the cluster: the domain side of
//! the control API's Status call, also what `tandem status --json` prints.

use openraft::ServerState;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::health::{HealthBoard, ReplicatorHealth};
use crate::raft::state_machine::StateReader;
use crate::raft::Raft;
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
    /// The build this node runs ("0.1.0+<commit>"; "" from an older build).
    #[serde(default)]
    pub version: String,
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

/// Describes this node for the Status call.
pub fn node_status(raft: &Raft, state: &StateReader, health: &HealthBoard, clock: &dyn Clock, site: &str, node_id: u64) -> NodeStatus {
    let m = raft.metrics().borrow().clone();
    let cluster = state.cluster();
    let role = match m.state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    };
    let leader_addr = m.current_leader.and_then(|id| m.membership_config.membership().get_node(&id).map(|n| n.addr.clone()));
    let leader_site = m.current_leader.and_then(|id| cluster.sites.values().find(|s| s.node_id == id).map(|s| s.name.clone()));
    NodeStatus {
        raft: RaftStatus {
            node_id,
            site: site.to_string(),
            role: role.to_string(),
            term: m.current_term,
            leader_id: m.current_leader,
            leader_site,
            leader_addr,
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied_index: state.last_applied_index(),
            version: tandem_net::version::reported(),
        },
        cluster,
        replicators: health.snapshot(),
        now_unix_ms: clock.now_unix_ms(),
        auto_failover: health.auto_failover(),
    }
}

/// Whether this controller serves (`/ready`, systemd readiness): it knows a
/// Raft leader and has applied the cluster's layout, so it answers Status
/// with an agreed state and passes changes on to the leader. A controller
/// cut off from a quorum stops being ready once it loses its leader.
pub fn readiness(raft: &Raft, state: &StateReader) -> tandem_net::endpoints::Readiness {
    let m = raft.metrics().borrow().clone();
    let cluster = state.cluster();
    let leader_site = m.current_leader.and_then(|id| cluster.sites.values().find(|s| s.node_id == id).map(|s| s.name.clone()));
    // A leader cut off from every follower keeps believing it leads; it
    // serves only while a quorum has acknowledged it recently.
    let leader_cut_off = m.state == ServerState::Leader && m.millis_since_quorum_ack.is_none_or(|ms| ms > LEADER_QUORUM_ACK_MAX_MS);
    let reason = match (m.current_leader, cluster.bootstrapped) {
        (None, _) => "no Raft leader known (no quorum reachable, or an election is under way)",
        _ if leader_cut_off => "this node leads, but no quorum has acknowledged it recently",
        (Some(_), false) => "the cluster layout is not applied here yet",
        (Some(_), true) => "",
    };
    tandem_net::endpoints::Readiness {
        ready: reason.is_empty(),
        reason: reason.into(),
        detail: serde_json::json!({
            "raft_role": format!("{:?}", m.state).to_lowercase(),
            "term": m.current_term,
            "leader_id": m.current_leader,
            "leader_site": leader_site,
            "bootstrapped": cluster.bootstrapped,
            "last_applied_index": state.last_applied_index(),
            "millis_since_quorum_ack": m.millis_since_quorum_ack,
        }),
    }
}

/// How long a leader may go without a quorum's acknowledgement and still
/// count as serving: many heartbeats (150 ms), about two election timeouts.
const LEADER_QUORUM_ACK_MAX_MS: u64 = 3_000;
