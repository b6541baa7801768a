//! tandem's gRPC contract: the `.proto` files and the types tonic generates
//! from them. No logic lives here; conversions to domain types live beside
//! the services that use them (`tandem-controller`'s `convert`).

/// Raft peer RPCs between controller nodes.
pub mod raft {
    tonic::include_proto!("tandem.raft.v1");
}

/// The control API spoken by the `tandem` CLI.
pub mod control {
    tonic::include_proto!("tandem.control.v1");
}

/// The replicator's contract API and the replication protocol between sites.
pub mod replicator {
    tonic::include_proto!("tandem.replicator.v1");
}

/// Largest message a replicator sends or accepts, gRPC or bulk frame; file
/// bytes go in chunks well below it. Clients of the replicator's APIs use
/// the same limit.
pub const MAX_MESSAGE: usize = 8 * 1024 * 1024;

/// Response metadata keys on a write refused because this site does not
/// own the shard: the owner site, its replicator address, and the epoch.
pub const OWNER_SITE_METADATA: &str = "tandem-owner";
pub const OWNER_ADDR_METADATA: &str = "tandem-owner-addr";
pub const OWNER_EPOCH_METADATA: &str = "tandem-owner-epoch";

/// Response metadata key carrying the leader's address when a follower
/// refuses a state-changing call.
pub const LEADER_ADDR_METADATA: &str = "tandem-leader-addr";

/// Request metadata key asking a follower controller to forward the call
/// to the leader (value [`FORWARD_PLEASE`]: the caller cannot reach the
/// leader itself), or marking a call a controller forwarded (value
/// [`FORWARD_DONE`]: never forwarded again).
pub const FORWARD_METADATA: &str = "tandem-forward";
pub const FORWARD_PLEASE: &str = "please";
pub const FORWARD_DONE: &str = "done";

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
    /// This site does not own the shard; the owner is attached.
    pub const NOT_OWNER: &str = "not-owner";
    /// This site's view of the shard map is too old to accept writes.
    pub const NO_LEASE: &str = "no-lease";
    /// The contract was destroyed (crypto-shredded).
    pub const DESTROYED: &str = "destroyed";
    /// A replication entry carries an epoch older than the receiver knows.
    pub const STALE_EPOCH: &str = "stale-epoch";
    /// Stored data failed an integrity check (crc, authentication, length).
    pub const CORRUPT: &str = "corrupt";
    /// The shard is being drained for a switchover; retry, the new owner
    /// takes writes shortly.
    pub const MOVING: &str = "moving";
    /// The write is stored at the owner but could not be acknowledged (its
    /// in-city peer did not confirm and the controller could not record the
    /// pair as async). Its outcome is unknown to the client.
    pub const NOT_ACKNOWLEDGED: &str = "not-acknowledged";
    /// The replicator has no controller view yet (just started); retry.
    pub const NOT_READY: &str = "not-ready";
    /// The caller's certificate lacks the role (or is not a site's) that
    /// the call needs; the message names both.
    pub const PERMISSION_DENIED: &str = "permission-denied";
    /// The site's blob store failed (unreachable, refused, full); a write
    /// refused with it stored nothing.
    pub const BLOB_STORE: &str = "blob-store";
    /// The change needs a second admin's approval (policy four_eyes) and
    /// the call carried none; nothing changed. The CLI then records a
    /// request for one.
    pub const NEEDS_APPROVAL: &str = "needs-approval";
    /// A switchover's move was refused: the leader's own reports do not
    /// show that the target holds the source's whole log for the shards;
    /// nothing moved.
    pub const NOT_CAUGHT_UP: &str = "not-caught-up";
}
