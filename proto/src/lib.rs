//! tandem's gRPC contract: the `.proto` files and the types tonic generates
//! from them. No logic lives here; conversions to domain types live beside
//! the services that use them (`tandem-controller`'s `service::convert`).

/// Raft peer RPCs between controller nodes.
pub mod raft {
    tonic::include_proto!("tandem.raft.v1");
}

/// The control API spoken by the `tandem` CLI.
pub mod control {
    tonic::include_proto!("tandem.control.v1");
}

/// Response metadata key carrying the leader's address when a follower
/// refuses a state-changing call.
pub const LEADER_ADDR_METADATA: &str = "tandem-leader-addr";

/// Response metadata key carrying a stable error code, so clients tell a
/// refusal by the cluster from a network failure without parsing messages.
pub const ERROR_CODE_METADATA: &str = "tandem-error";

/// Stable error codes (values of [`ERROR_CODE_METADATA`]). Runbooks are
/// named after them.
pub mod error_code {
    /// No leader is known: an election is under way or there is no quorum.
    pub const NO_LEADER: &str = "no-leader";
    /// A change was proposed but not committed in time; outcome unknown.
    pub const COMMIT_TIMEOUT: &str = "commit-timeout";
    /// This node is not the leader; the leader's address is attached.
    pub const NOT_LEADER: &str = "not-leader";
}
