//! Raft wiring, as in openraft's examples: the store (log and state
//! machine, over the storage seam), the peer network (tonic client), the
//! peer service (tonic server) and the runtime seam.

pub mod log_store;
pub mod network;
pub mod peer_service;
pub mod runtime;
pub mod state_machine;

use std::io::Cursor;

use crate::ops::{Outcome, Request};

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// tandem's Raft types: commands are [`Request`]s, results [`Outcome`]s.
    pub TypeConfig:
        D = Request,
        R = Outcome,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = runtime::TandemRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;

/// Maps a storage-seam failure into openraft's error, naming what failed.
fn io_err(subject: openraft::ErrorSubject<NodeId>, verb: openraft::ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}
