//! The replicated cluster state: what every controller agrees on.
//!
//! Only [`crate::ops`] changes it, and only while applying a committed Raft
//! entry, so every node computes the same state from the same log. Nothing
//! here reads a clock or a random source.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a site is doing right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SiteRole {
    /// Accepts writes for the shards it owns.
    Active,
    /// Receives everything asynchronously; owns no shard until DR activation.
    DrStandby,
    /// Must not write: its epochs are stale.
    Fenced,
    /// Rejoining after an outage: catching up before it gets shards back.
    Recovering,
}

impl SiteRole {
    pub fn as_str(self) -> &'static str {
        match self {
            SiteRole::Active => "active",
            SiteRole::DrStandby => "dr-standby",
            SiteRole::Fenced => "fenced",
            SiteRole::Recovering => "recovering",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(SiteRole::Active),
            "dr-standby" => Some(SiteRole::DrStandby),
            "fenced" => Some(SiteRole::Fenced),
            "recovering" => Some(SiteRole::Recovering),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    pub name: String,
    pub node_id: u64,
    pub city: String,
    pub role: SiteRole,
    /// Address of the site's controller (Raft peers and control API).
    pub addr: String,
}

/// Who may write a shard, and the fencing token that proves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub owner: String,
    /// Only grows. A writer or replication stream carrying an older epoch
    /// is refused.
    pub epoch: u64,
    /// Set while a switchover drains the shard towards this site: the owner
    /// accepts no new write for it until the move commits or is cancelled.
    #[serde(default)]
    pub moving_to: Option<String>,
}

/// Replication mode of an in-city pair of active sites.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicationMode {
    /// Every write is on both sites before it is acknowledged.
    Sync,
    /// The peer may lag; promoting it may lose writes.
    Async,
    /// The peer is catching up; sync resumes when it has.
    SyncRecover,
}

impl ReplicationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationMode::Sync => "sync",
            ReplicationMode::Async => "async",
            ReplicationMode::SyncRecover => "sync-recover",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sync" => Some(ReplicationMode::Sync),
            "async" => Some(ReplicationMode::Async),
            "sync-recover" => Some(ReplicationMode::SyncRecover),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationPair {
    pub site_a: String,
    pub site_b: String,
    pub mode: ReplicationMode,
    /// Grows with every mode change, so a replicator can tell which change
    /// a decision was based on.
    pub state_id: u64,
    /// In sync-recover: the sites that declared their outgoing direction
    /// clean under this state id (see `ops::pair_mode`).
    #[serde(default)]
    pub clean: Vec<String>,
}

/// Operator policy for automatic actions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub auto_failover: bool,
    /// Set by `tandem pause`: no automatic action runs while paused.
    pub paused: bool,
    /// Minimum time between two automatic failovers (anti-flapping).
    pub cooldown_s: u64,
    /// Lag above which a peer is not a failover candidate without loss.
    pub lag_entries_max: u64,
    pub lag_s_max: u64,
    /// A site is declared down when the leader and one other controller
    /// have both not heard from it for this long.
    #[serde(default = "default_down_after_s")]
    pub down_after_s: u64,
}

fn default_down_after_s() -> u64 {
    5
}

impl Default for Policy {
    fn default() -> Self {
        Self { auto_failover: true, paused: false, cooldown_s: 600, lag_entries_max: 0, lag_s_max: 0, down_after_s: default_down_after_s() }
    }
}

/// One line of the audit log: who did what, when, why, and what came of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the audit log, from 1, without gaps.
    pub seq: u64,
    /// Wall-clock time chosen by the proposing leader, so every replica
    /// records the same value.
    pub at_unix_ms: u64,
    pub who: String,
    pub why: String,
    pub what: String,
    pub result: String,
    /// The Raft log index that carried the operation.
    pub log_index: u64,
    /// Hash of the entry before this one ("" for the first): the chain
    /// that makes the log tamper-evident (see [`crate::audit`]).
    #[serde(default)]
    pub prev_hash: String,
    /// Hash of this entry's fields, `prev_hash` included.
    #[serde(default)]
    pub hash: String,
}

/// Everything the controllers agree on, except the audit log, which is kept
/// beside it (it only grows, so it is stored entry by entry).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// False until the first leader has written the initial layout.
    pub bootstrapped: bool,
    /// Grows when the membership is reset (DR activation), so the old
    /// city's nodes cannot act when they return.
    pub generation: u64,
    pub sites: BTreeMap<String, Site>,
    /// Index = shard number.
    pub shards: Vec<Shard>,
    pub pairs: Vec<ReplicationPair>,
    pub policy: Policy,
    /// Number of audit entries so far (the entries live in [`AuditLog`]).
    pub audit_len: u64,
    /// Hash of the newest audit entry: the next one links to it.
    #[serde(default)]
    pub audit_head: String,
    /// When the last automatic failover moved shards (proposer's clock), for
    /// the cooldown; 0: never.
    #[serde(default)]
    pub last_auto_failover_unix_ms: u64,
}

/// The shard a tenant's contracts live in: a stable hash of the tenant id
/// (crc32, the same on every site and every version of tandem), so all of a
/// tenant's contracts have one owner.
pub fn shard_of(tenant: &str, shard_count: u32) -> u32 {
    crc32fast::hash(tenant.as_bytes()) % shard_count.max(1)
}

impl ClusterState {
    /// Owner and epoch of `tenant`'s shard, with the shard number.
    pub fn shard_for(&self, tenant: &str) -> Option<(u32, &Shard)> {
        let n = u32::try_from(self.shards.len()).ok()?;
        let shard = shard_of(tenant, n);
        self.shards.get(shard as usize).map(|s| (shard, s))
    }

    /// Shards owned by each site, for every known site (zero included).
    pub fn shard_counts(&self) -> BTreeMap<String, u64> {
        let mut counts: BTreeMap<String, u64> = self.sites.keys().map(|s| (s.clone(), 0)).collect();
        for shard in &self.shards {
            *counts.entry(shard.owner.clone()).or_default() += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The mapping is part of the on-disk contract between sites: pin it.
    #[test]
    fn shard_of_is_stable_and_in_range() {
        assert_eq!(shard_of("tenant-1", 256), crc32fast::hash(b"tenant-1") % 256);
        assert_eq!(shard_of("tenant-1", 256), shard_of("tenant-1", 256));
        for t in ["", "a", "tenant-1", "a-much-longer-tenant-identifier"] {
            assert!(shard_of(t, 7) < 7);
        }
        let spread: std::collections::BTreeSet<u32> = (0..200).map(|i| shard_of(&format!("t{i}"), 16)).collect();
        assert!(spread.len() > 12, "tenants should spread over the shards: {spread:?}");
    }
}
