//! The replicator's errors, and the one place they become gRPC statuses.
//! Messages name contracts, shards and sites, never key material, file
//! contents or PII values.

use tandem_proto::error_code;
use tonic::{Code, Status};

use crate::blob::BlobError;
use crate::ids::InvalidInput;
use crate::meta::MetaError;

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("shard {shard} is owned by site {owner} (epoch {epoch}) at {owner_addr}; send writes there")]
    NotOwner { shard: u32, owner: String, owner_addr: String, epoch: u64 },
    #[error("not accepting writes: {0}")]
    NoLease(String),
    #[error("shard {shard} is being moved to site {to} (switchover); nothing was stored. Retry in a moment: writes resume at the new owner")]
    Moving { shard: u32, to: String },
    /// The site cannot serve yet (e.g. it has not heard from a controller
    /// since it started); retry shortly.
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("contract {tenant}/{contract_id} was destroyed; its keys are deleted and it can no longer be read")]
    Destroyed { tenant: String, contract_id: String },
    #[error("another write to {0} is in progress; retry when it has finished")]
    Busy(String),
    #[error("refused: entry for shard {shard} carries epoch {got}, but epoch {known} is known here (stale owner)")]
    StaleEpoch { shard: u32, got: u64, known: u64 },
    #[error("refused: expected entry {expected} of {origin}'s log, got {got}")]
    Gap { origin: String, expected: u64, got: u64 },
    #[error("integrity check failed: {0}")]
    Corrupt(String),
    #[error("{0}")]
    NotAcknowledged(String),
    #[error("cannot decrypt: {0}")]
    Key(String),
    /// The site's blob store failed: a write refused with it stored nothing
    /// (no name is given to a file before it is complete, and no metadata
    /// refers to it).
    #[error("this site's blob store failed: {0}")]
    BlobStore(String),
    /// Policy four_eyes: a second admin's approval is needed first.
    #[error("{0}")]
    NeedsApproval(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<InvalidInput> for ReplicaError {
    fn from(e: InvalidInput) -> Self {
        ReplicaError::Invalid(e.0)
    }
}

impl From<MetaError> for ReplicaError {
    fn from(e: MetaError) -> Self {
        ReplicaError::Internal(e.to_string())
    }
}

impl From<BlobError> for ReplicaError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound(p) => ReplicaError::Corrupt(format!("stored file {p} is missing")),
            BlobError::Store(e) => ReplicaError::BlobStore(e),
            sync @ BlobError::Sync { .. } => ReplicaError::BlobStore(sync.to_string()),
        }
    }
}

impl From<tandem_crypto::CryptoError> for ReplicaError {
    fn from(e: tandem_crypto::CryptoError) -> Self {
        use tandem_crypto::CryptoError as C;
        match e {
            C::WrongKey(_) | C::KeyFile(_) => ReplicaError::Key(e.to_string()),
            C::Corrupt(_) | C::Tampered(_) | C::Truncated => ReplicaError::Corrupt(e.to_string()),
            other => ReplicaError::Internal(other.to_string()),
        }
    }
}

fn coded(code: Code, msg: String, error: &'static str) -> Status {
    let mut s = Status::new(code, msg);
    s.metadata_mut().insert(tandem_proto::ERROR_CODE_METADATA, tonic::metadata::MetadataValue::from_static(error));
    s
}

impl ReplicaError {
    /// A short name for the kind of error (metrics labels).
    pub fn kind(&self) -> &'static str {
        match self {
            ReplicaError::Invalid(_) => "invalid",
            // The caller is told where the owner is and its client stores
            // the put there: a redirect, not a refusal of the write.
            ReplicaError::NotOwner { owner_addr, .. } if !owner_addr.is_empty() => "redirected",
            ReplicaError::NotOwner { .. } => "not_owner",
            ReplicaError::NoLease(_) => "no_lease",
            ReplicaError::Moving { .. } => "moving",
            ReplicaError::NotReady(_) => "not_ready",
            ReplicaError::NotFound(_) => "not_found",
            ReplicaError::Destroyed { .. } => "destroyed",
            ReplicaError::Busy(_) => "busy",
            ReplicaError::StaleEpoch { .. } => "stale_epoch",
            ReplicaError::Gap { .. } => "gap",
            ReplicaError::Corrupt(_) => "corrupt",
            ReplicaError::NotAcknowledged(_) => "not_acknowledged",
            ReplicaError::Key(_) => "key",
            ReplicaError::BlobStore(_) => "blob_store",
            ReplicaError::NeedsApproval(_) => "needs_approval",
            ReplicaError::Internal(_) => "internal",
        }
    }
}

impl From<ReplicaError> for Status {
    fn from(e: ReplicaError) -> Self {
        let msg = e.to_string();
        match e {
            ReplicaError::Invalid(_) => Status::invalid_argument(msg),
            ReplicaError::NotOwner { owner, owner_addr, epoch, .. } => {
                let mut s = coded(Code::FailedPrecondition, msg, error_code::NOT_OWNER);
                let md = s.metadata_mut();
                if let Ok(v) = owner.parse() {
                    md.insert(tandem_proto::OWNER_SITE_METADATA, v);
                }
                if let Ok(v) = owner_addr.parse() {
                    md.insert(tandem_proto::OWNER_ADDR_METADATA, v);
                }
                if let Ok(v) = epoch.to_string().parse() {
                    md.insert(tandem_proto::OWNER_EPOCH_METADATA, v);
                }
                s
            }
            ReplicaError::NoLease(_) => coded(Code::Unavailable, msg, error_code::NO_LEASE),
            ReplicaError::Moving { .. } => coded(Code::Unavailable, msg, error_code::MOVING),
            ReplicaError::NotReady(_) => coded(Code::Unavailable, msg, error_code::NOT_READY),
            ReplicaError::NotFound(_) => Status::not_found(msg),
            ReplicaError::Destroyed { .. } => coded(Code::FailedPrecondition, msg, error_code::DESTROYED),
            ReplicaError::Busy(_) => Status::aborted(msg),
            ReplicaError::StaleEpoch { .. } => coded(Code::FailedPrecondition, msg, error_code::STALE_EPOCH),
            ReplicaError::Gap { .. } => Status::failed_precondition(msg),
            ReplicaError::Corrupt(_) => coded(Code::DataLoss, msg, error_code::CORRUPT),
            ReplicaError::NotAcknowledged(_) => coded(Code::Unavailable, msg, error_code::NOT_ACKNOWLEDGED),
            ReplicaError::Key(_) => Status::failed_precondition(msg),
            ReplicaError::BlobStore(_) => coded(Code::Unavailable, msg, error_code::BLOB_STORE),
            ReplicaError::NeedsApproval(_) => coded(Code::FailedPrecondition, msg, error_code::NEEDS_APPROVAL),
            ReplicaError::Internal(_) => Status::internal(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_sent_on_to_its_owner_counts_as_redirected() {
        let to = |addr: &str| ReplicaError::NotOwner { shard: 1, owner: "b".into(), owner_addr: addr.into(), epoch: 2 };
        assert_eq!(to("10.0.0.2:7111").kind(), "redirected");
        assert_eq!(to("").kind(), "not_owner");
    }
}
