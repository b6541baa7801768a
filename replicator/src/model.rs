//! What the replicator stores about contracts, and the change-log entries
//! that carry it between sites. These types are serialised (JSON) into
//! rocksdb and into replication messages: add fields with `#[serde(default)]`.
//!
//! Nothing here holds plaintext of a file, a PII value or a key: files are
//! ciphertext in the blob store, PII values are SM4-GCM sealed, data keys
//! are wrapped by the key-encryption key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tandem_crypto::WrappedKey;

/// One stored file of a contract version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub name: String,
    /// Object path of the ciphertext in the blob store.
    pub blob: String,
    /// Plaintext size.
    pub size: u64,
    pub ciphertext_len: u64,
    /// Hex BLAKE3 ([`crate::hash`]) of the ciphertext: what sites compare, without a key.
    pub ciphertext_blake3: String,
    /// The file's data key, wrapped. `None` once destroyed (crypto-shredded).
    pub key: Option<WrappedKey>,
}

/// One version of a contract, as written by its owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub tenant: String,
    pub contract_id: String,
    pub version: u64,
    pub shard: u32,
    /// Owner epoch under which it was written.
    pub epoch: u64,
    /// Site that accepted the write.
    pub origin: String,
    pub created_unix_ms: u64,
    pub fields: BTreeMap<String, String>,
    /// PII fields, each sealed with SM4-GCM under `pii_key`.
    pub pii: BTreeMap<String, Vec<u8>>,
    /// `None` when there are no PII fields, or once destroyed.
    pub pii_key: Option<WrappedKey>,
    pub files: Vec<FileRecord>,
}

impl VersionRecord {
    /// Bytes this version adds to replication traffic (for lag in bytes).
    pub fn payload_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.ciphertext_len).sum::<u64>() + 512
    }
}

/// The record of a destroy: who, when and why. The keys are gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub at_unix_ms: u64,
    pub origin: String,
    pub who: String,
    pub why: String,
}

/// The per-contract head: latest version and whether it was destroyed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractHead {
    pub tenant: String,
    pub contract_id: String,
    pub shard: u32,
    pub latest: u64,
    pub destroyed: Option<Tombstone>,
}

/// What one change-log entry does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A new version; its ciphertext files follow the entry on the wire.
    Put(VersionRecord),
    /// Crypto-shredding of every version of a contract.
    Destroy { tenant: String, contract_id: String, tombstone: Tombstone },
    /// The same version with its keys re-wrapped under another KEK (key
    /// rotation, see `crate::rotate`); no file travels with it.
    Rewrap(VersionRecord),
}

/// One entry of a site's change log: a write that site accepted as owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub origin: String,
    /// Position in the origin's log, from 1, without gaps.
    pub seq: u64,
    /// Sum of `payload_bytes` of entries 1..=seq: lag in bytes is a subtraction.
    pub cum_bytes: u64,
    pub at_unix_ms: u64,
    pub shard: u32,
    pub epoch: u64,
    pub change: Change,
}

impl LogEntry {
    pub fn tenant(&self) -> &str {
        match &self.change {
            Change::Put(v) | Change::Rewrap(v) => &v.tenant,
            Change::Destroy { tenant, .. } => tenant,
        }
    }

    pub fn contract_id(&self) -> &str {
        match &self.change {
            Change::Put(v) | Change::Rewrap(v) => &v.contract_id,
            Change::Destroy { contract_id, .. } => contract_id,
        }
    }

    /// The files whose ciphertext travels with this entry.
    pub fn files(&self) -> &[FileRecord] {
        match &self.change {
            Change::Put(v) => &v.files,
            Change::Destroy { .. } | Change::Rewrap(_) => &[],
        }
    }
}

/// A divergent write moved aside: written under an epoch that has since
/// moved to another site, never received by the new owner. No longer
/// served as current, never replicated, never merged or dropped: kept,
/// with its ciphertext and wrapped keys, for someone to reconcile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    pub tenant: String,
    pub contract_id: String,
    /// 0 for a destroy.
    pub version: u64,
    pub shard: u32,
    /// The site that accepted the write, and under which epoch.
    pub origin: String,
    pub epoch: u64,
    /// Position in the origin's log, when this site is the origin (0 when
    /// the write came from another site and was replaced here).
    pub seq: u64,
    pub written_unix_ms: u64,
    pub quarantined_unix_ms: u64,
    pub reason: String,
    /// The version as written, its files' blobs now under [`quarantine_path`];
    /// `None` for a destroy (its keys were already shredded here).
    pub record: Option<VersionRecord>,
}

/// An entry of another site's log this site stepped over: refused as
/// stale, and quarantined at its origin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub shard: u32,
    pub epoch: u64,
    pub at_unix_ms: u64,
    /// Set when the origin lost entries `seq..=lost_through` with its old
    /// store (restored from a backup): stepped over together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_through: Option<u64>,
    /// Set when the entry put a contract its origin had destroyed since.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub destroyed_since: bool,
}

/// A store restored from a backup (`crate::restore`), until it has caught
/// up: the replicator serves no contract while this is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restoring {
    pub backup_id: String,
    /// This site's log head in the backup.
    pub backup_log_head: u64,
    /// Whether every record and file was written (an unfinished restore
    /// is run again; the replicator refuses to start on one).
    pub complete: bool,
    pub who: String,
    pub why: String,
    pub at_unix_ms: u64,
}

impl Restoring {
    /// What is being caught up from, for messages.
    pub fn what(&self) -> String {
        match self.backup_id.as_str() {
            "" => "store behind its peers".into(),
            id => format!("backup {id}"),
        }
    }

    /// What the site says while it catches up.
    pub fn waiting(&self) -> String {
        match self.backup_id.as_str() {
            "" => format!("{}; catching up", self.why),
            id => format!("restored from backup {id}; catching up"),
        }
    }
}

/// Where a quarantined file's ciphertext is kept: outside the contract
/// paths, so a later version with the same number cannot overwrite it.
pub fn quarantine_path(blob: &str, origin: &str, epoch: u64) -> String {
    format!("quarantine/{origin}-e{epoch}/{blob}")
}

/// Object path of a file's ciphertext: by position, never by the
/// client-given file name: a directory per contract and version. (A flat
/// layout of 256 bucket directories per tenant was measured on 2026-12-08
/// and not kept: README "Performance".)
pub fn blob_path(tenant: &str, contract_id: &str, version: u64, index: usize) -> String {
    format!("{tenant}/{contract_id}/v{version}/{index}")
}

/// What the data key and PII key of a version are bound to, so a wrapped
/// key cannot be moved to another contract or version.
pub fn key_context(tenant: &str, contract_id: &str, version: u64, what: &str) -> Vec<u8> {
    format!("tandem/{tenant}/{contract_id}/{version}/{what}").into_bytes()
}
