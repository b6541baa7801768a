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
    /// While `moving_to` is set: what drained it and until when its driver
    /// may take (`None` for a drain recorded by an older build).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<Drain>,
    /// The site a failover or DR activation took this shard from, until a
    /// move returns it there: what `tandem failback` of that site hands
    /// back. A planned switchover elsewhere keeps it (the shard is still
    /// away from home).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub displaced_from: Option<String>,
}

impl Shard {
    pub fn new(owner: &str, epoch: u64) -> Self {
        Shard { owner: owner.into(), epoch, moving_to: None, drain: None, displaced_from: None }
    }

    /// Gives the shard to `to` under the next epoch (a committed move, or
    /// a DR activation) and keeps `displaced_from` up to date: set to the
    /// old owner when a failover takes it away, cleared when it comes home.
    pub fn hand_over(&mut self, to: &str, kind: MoveKind) {
        if self.displaced_from.as_deref() == Some(to) {
            self.displaced_from = None;
        } else if kind == MoveKind::Failover && self.displaced_from.is_none() && self.owner != to {
            self.displaced_from = Some(self.owner.clone());
        }
        self.owner = to.to_string();
        self.epoch += 1;
        self.moving_to = None;
        self.drain = None;
    }
}

/// Which operation drained a shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MoveKind {
    /// Planned: the source is alive and drains; the move waits for the target.
    #[default]
    Switchover,
    /// Unplanned: the source is fenced; the move waits out its write lease.
    Failover,
}

impl MoveKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MoveKind::Switchover => "switchover",
            MoveKind::Failover => "failover",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "switchover" => Some(MoveKind::Switchover),
            "failover" => Some(MoveKind::Failover),
            _ => None,
        }
    }
}

/// An unfinished move: if its driver (a CLI, the detector of a leader that
/// has since died) does not finish it by `deadline_unix_ms`, the leader
/// does (`crate::orphans`), so shards are never left without a writer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Drain {
    pub kind: MoveKind,
    /// When the drain committed (proposer's clock).
    pub at_unix_ms: u64,
    pub deadline_unix_ms: u64,
    /// The Raft log index that carried the drain: a lease granted with an
    /// older state may still let the old owner write (see `crate::lease`).
    #[serde(default)]
    pub log_index: u64,
    /// Failover only: when the leader last heard the old owner's replicator
    /// before the fence (0: unknown). The old owner wrote nothing after its
    /// crash, which came after this: the write pause is measured from here.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub writer_last_heard_unix_ms: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The last committed move of one kind, for `tandem status` and the
/// `tandem_last_move_*` metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRecord {
    pub kind: MoveKind,
    pub from: String,
    pub to: String,
    pub shards: u64,
    /// Made by tandem itself (the detector, or the leader finishing a move
    /// its driver left).
    pub automatic: bool,
    /// When the drain (fence) committed; equal to `moved_at_unix_ms` for a
    /// move without a drain.
    pub drained_at_unix_ms: u64,
    pub moved_at_unix_ms: u64,
    /// How long the shards could not be written: from the drain (a
    /// switchover) or from the last time the old owner was heard (a
    /// failover) to the move.
    pub write_pause_ms: u64,
    pub audit_seq: u64,
    /// Each shard moved, with its epoch before and after (empty in records
    /// written before this field existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<MovedShard>,
}

/// One shard of a move and its epochs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedShard {
    pub shard: u32,
    pub from_epoch: u64,
    pub to_epoch: u64,
}

/// What the applied commands came to, counted when each is applied (so
/// `/metrics` need not re-read the audit log), for the `tandem_audit_*`
/// counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Shard moves that took effect.
    pub moves: u64,
    /// Of those, made by tandem itself (automatic failovers, moves it
    /// finished for a driver that died).
    pub automatic_moves: u64,
    /// Commands the rules refused (wrong owner or epoch, not in sync...).
    pub refused: u64,
    /// Automatic actions tandem declined and recorded (paused, cooldown...).
    pub declined: u64,
}

impl MoveRecord {
    /// From the drain's commit to the move's commit.
    pub fn duration_ms(&self) -> u64 {
        self.moved_at_unix_ms.saturating_sub(self.drained_at_unix_ms)
    }
}

/// The last thing tandem did on its own (an automatic failover, a declined
/// one, a move it finished or undid for a driver that died).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoAction {
    pub at_unix_ms: u64,
    pub audit_seq: u64,
    pub what: String,
    pub result: String,
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

/// One direction of an in-city pair: the writes of site `from` towards the
/// other site. Each direction has its own mode because each site decides
/// alone when to stop waiting for its peer, and that decision only says
/// the *peer* may lack *this site's* writes: when `b` records `b -> a`
/// async because `a` died, every write `a` acknowledged was still
/// confirmed by `b`, and `a`'s shards can fail over to `b` without loss.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Direction {
    /// The sending site.
    pub from: String,
    pub mode: ReplicationMode,
    /// The pair's state id when this direction last changed (the
    /// compare-and-set of `ops::pair_mode` is per direction).
    #[serde(default)]
    pub state_id: u64,
    /// When `mode` is not sync: the first entry of `from`'s change log the
    /// peer may lack (0: unknown, recorded by an older build).
    #[serde(default)]
    pub since_seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationPair {
    pub site_a: String,
    pub site_b: String,
    /// The pair as a whole (for display and metrics): sync when both
    /// directions are, async when either is, sync-recover otherwise.
    /// Decisions read [`ReplicationPair::outgoing`].
    pub mode: ReplicationMode,
    /// Grows with every mode change, so a replicator can tell which change
    /// a decision was based on.
    pub state_id: u64,
    /// Per sending site. Empty in states written before directions existed:
    /// both directions then have `mode`.
    #[serde(default)]
    pub directions: Vec<Direction>,
}

impl ReplicationPair {
    /// A new pair in sync mode, both directions recorded.
    pub fn new_sync(site_a: &str, site_b: &str) -> Self {
        let mut p = ReplicationPair { site_a: site_a.into(), site_b: site_b.into(), mode: ReplicationMode::Sync, state_id: 1, directions: Vec::new() };
        p.fill_directions();
        p
    }

    /// Whether `site` is one of the pair.
    pub fn has(&self, site: &str) -> bool {
        self.site_a == site || self.site_b == site
    }

    /// Whether this is the pair of `x` and `y`, in either order.
    pub fn joins(&self, x: &str, y: &str) -> bool {
        (self.site_a == x && self.site_b == y) || (self.site_a == y && self.site_b == x)
    }

    /// The other site of the pair.
    pub fn partner(&self, site: &str) -> &str {
        if self.site_a == site {
            &self.site_b
        } else {
            &self.site_a
        }
    }

    /// The direction of `from`'s writes, if recorded.
    pub fn direction(&self, from: &str) -> Option<&Direction> {
        self.directions.iter().find(|d| d.from == from)
    }

    /// Mode of `from`'s writes towards its peer: whether the peer holds
    /// every write `from` acknowledged (sync), may lack some (async), or is
    /// catching up while `from` waits for it again (sync-recover).
    pub fn outgoing(&self, from: &str) -> ReplicationMode {
        self.direction(from).map_or(self.mode, |d| d.mode)
    }

    /// Records both directions (from the pair's mode, as an older build
    /// meant it) if they are not recorded yet.
    fn fill_directions(&mut self) {
        for site in [self.site_a.clone(), self.site_b.clone()] {
            if self.direction(&site).is_none() {
                self.directions.push(Direction { from: site, mode: self.mode, state_id: self.state_id, since_seq: 0 });
            }
        }
        self.directions.sort_by(|x, y| x.from.cmp(&y.from));
    }

    /// Changes the mode of `from`'s direction under a new state id, and the
    /// pair's summary with it.
    pub fn set_outgoing(&mut self, from: &str, mode: ReplicationMode, since_seq: u64) {
        self.fill_directions();
        self.state_id += 1;
        let state_id = self.state_id;
        if let Some(d) = self.directions.iter_mut().find(|d| d.from == from) {
            d.mode = mode;
            d.state_id = state_id;
            d.since_seq = if mode == ReplicationMode::Sync { 0 } else { since_seq };
        }
        let modes: Vec<ReplicationMode> = self.directions.iter().map(|d| d.mode).collect();
        self.mode = if modes.iter().all(|m| *m == ReplicationMode::Sync) {
            ReplicationMode::Sync
        } else if modes.contains(&ReplicationMode::Async) {
            ReplicationMode::Async
        } else {
            ReplicationMode::SyncRecover
        };
    }

    /// "a -> b sync, b -> a async since b's entry 17".
    pub fn describe(&self) -> String {
        let mut out = Vec::new();
        for from in [&self.site_a, &self.site_b] {
            let to = self.partner(from);
            let mut s = format!("{from} -> {to} {}", self.outgoing(from).as_str());
            if let Some(d) = self.direction(from).filter(|d| d.mode != ReplicationMode::Sync && d.since_seq > 0) {
                s.push_str(&format!(" since {from}'s entry {}", d.since_seq));
            }
            out.push(s);
        }
        out.join(", ")
    }
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
    /// A site is declared down when the leader (and a second vantage point,
    /// when one answers) has not heard from it for this long. (States
    /// written with the older `down_after_s` take this default.)
    #[serde(default = "default_down_after_ms")]
    pub down_after_ms: u64,
    /// The riskiest operations (a failover that accepts data loss, a
    /// contract's destruction, a DR activation, a change of a safety
    /// setting) need a second admin's approval (`crate::ops::approval`).
    /// On by default when the controllers run mutual TLS (the identities
    /// are then certificates); states written before it read as off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub four_eyes: bool,
}

fn default_down_after_ms() -> u64 {
    1500
}

impl Default for Policy {
    fn default() -> Self {
        Self { auto_failover: true, paused: false, cooldown_s: 600, lag_entries_max: 0, lag_s_max: 0, down_after_ms: default_down_after_ms(), four_eyes: false }
    }
}

/// A policy key that `tandem policy set` changes, with what it accepts.
pub struct PolicyKey {
    pub name: &'static str,
    pub help: &'static str,
    /// Inclusive bounds of a number (`None`: a boolean).
    pub range: Option<(u64, u64)>,
}

/// The keys `tandem policy set` changes. `paused` is not one of them: it
/// has its own audited commands, `tandem pause` and `tandem resume`.
pub const POLICY_KEYS: &[PolicyKey] = &[
    PolicyKey { name: "auto_failover", help: "move a lost site's shards automatically (true/false)", range: None },
    PolicyKey { name: "cooldown_s", help: "seconds between two automatic failovers", range: Some((0, 7 * 86_400)) },
    PolicyKey { name: "lag_entries_max", help: "a peer further behind (entries) is not promoted without --accept-data-loss", range: Some((0, u64::MAX)) },
    PolicyKey { name: "lag_s_max", help: "a peer further behind (seconds) is not promoted without --accept-data-loss", range: Some((0, u64::MAX)) },
    // Below ~0.5 s a scheduling hiccup or a GC pause reads as a lost site;
    // above 10 min a lost site goes unnoticed too long to be automatic.
    PolicyKey { name: "down_after_ms", help: "a site unheard this long is judged down", range: Some((500, 600_000)) },
    PolicyKey {
        name: "four_eyes",
        help: "lossy failover, destroy, DR activation and safety settings need a second admin's approval (true/false)",
        range: None,
    },
];

/// Policy keys whose change needs a second admin's approval while
/// `four_eyes` is on: raising a lag limit lets failovers lose writes
/// without anyone accepting it, and turning `four_eyes` off removes the
/// rule itself.
pub const SAFETY_KEYS: &[&str] = &["lag_entries_max", "lag_s_max", "four_eyes"];

impl Policy {
    /// The current value of `key` as `tandem policy` shows it, `None` for
    /// an unknown key.
    pub fn get(&self, key: &str) -> Option<String> {
        Some(match key {
            "auto_failover" => self.auto_failover.to_string(),
            "paused" => self.paused.to_string(),
            "cooldown_s" => self.cooldown_s.to_string(),
            "lag_entries_max" => self.lag_entries_max.to_string(),
            "lag_s_max" => self.lag_s_max.to_string(),
            "down_after_ms" => self.down_after_ms.to_string(),
            "four_eyes" => self.four_eyes.to_string(),
            _ => return None,
        })
    }

    /// Sets `key` to `value` (as text), checking the key and the value's
    /// type and bounds; the error says what is accepted.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let Some(k) = POLICY_KEYS.iter().find(|k| k.name == key) else {
            if key == "paused" {
                return Err("paused is changed by `tandem pause` and `tandem resume`, not by `policy set`".into());
            }
            let known: Vec<&str> = POLICY_KEYS.iter().map(|k| k.name).collect();
            return Err(format!("unknown policy key {key:?}; the keys are {}", known.join(", ")));
        };
        match k.range {
            None => {
                let v = match value.trim() {
                    "true" => true,
                    "false" => false,
                    other => return Err(format!("{key} is true or false, not {other:?}")),
                };
                match key {
                    "four_eyes" => self.four_eyes = v,
                    _ => self.auto_failover = v,
                }
            }
            Some((lo, hi)) => {
                let v: u64 = value.trim().parse().map_err(|_| format!("{key} is a whole number, not {value:?}"))?;
                if v < lo || v > hi {
                    return Err(format!("{key} must be within {lo}..={hi}, not {v}"));
                }
                match key {
                    "cooldown_s" => self.cooldown_s = v,
                    "lag_entries_max" => self.lag_entries_max = v,
                    "lag_s_max" => self.lag_s_max = v,
                    _ => self.down_after_ms = v,
                }
            }
        }
        Ok(())
    }

    /// The keys whose values differ from `other`'s, with both values
    /// (`paused` left out: it is not configured).
    pub fn differences(&self, other: &Policy) -> Vec<(&'static str, String, String)> {
        POLICY_KEYS
            .iter()
            .filter_map(|k| {
                let (mine, theirs) = (self.get(k.name)?, other.get(k.name)?);
                (mine != theirs).then_some((k.name, mine, theirs))
            })
            .collect()
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
    /// The site whose clock gave `at_unix_ms` (the proposer's; "" from an
    /// older build): an auditor comparing times across sites needs it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub clock: String,
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
    /// The last committed move of each kind.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_moves: BTreeMap<MoveKind, MoveRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_automatic: Option<AutoAction>,
    /// Counted since the cluster began; `None` in a state written before
    /// the tally existed, until [`ClusterState::backfill_tally`] ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tally: Option<Tally>,
    /// Requests for a second admin's approval, by id (the audit entry that
    /// recorded the request); see `crate::ops::approval`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub approvals: BTreeMap<u64, Approval>,
}

/// One operation waiting for, or given, a second admin's approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub id: u64,
    /// Which operation ([`crate::ops::approval::ACTIONS`]).
    pub action: String,
    /// What exactly it does (site, tenant, key...): the approved operation
    /// must match them.
    pub args: BTreeMap<String, String>,
    /// The plan the requester was shown.
    pub plan: String,
    pub requested_by: String,
    pub reason: String,
    pub requested_at_unix_ms: u64,
    pub expires_at_unix_ms: u64,
    pub state: ApprovalState,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ApprovalState {
    Pending,
    /// A second admin approved it; their calls may now carry it out, once.
    Approved {
        by: String,
        at_unix_ms: u64,
    },
    Rejected {
        by: String,
        at_unix_ms: u64,
    },
    /// Carried out (the audit entry of the step that used it).
    Used {
        by: String,
        at_unix_ms: u64,
        audit_seq: u64,
    },
}

impl ApprovalState {
    pub fn as_str(&self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved { .. } => "approved",
            ApprovalState::Rejected { .. } => "rejected",
            ApprovalState::Used { .. } => "used",
        }
    }
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

    /// The in-city pair `site` belongs to, if any.
    pub fn pair_of(&self, site: &str) -> Option<&ReplicationPair> {
        self.pairs.iter().find(|p| p.has(site))
    }

    /// `site`'s in-city peer, if it has one.
    pub fn peer_of(&self, site: &str) -> Option<&str> {
        self.pair_of(site).map(|p| p.partner(site))
    }

    /// The shards a failover or DR activation took from `site` that another
    /// site still owns, by owner: what the failback of `site` hands back.
    pub fn displaced_from(&self, site: &str) -> BTreeMap<String, Vec<u32>> {
        let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (n, shard) in self.shards.iter().enumerate() {
            if shard.displaced_from.as_deref() == Some(site) && shard.owner != site {
                out.entry(shard.owner.clone()).or_default().push(n as u32);
            }
        }
        out
    }

    /// The tally, counted from `audit` (every entry, oldest first) when the
    /// state was written by a build without one. Those entries have no
    /// structured outcome, so this is the one place that reads their text:
    /// the outcome prefixes that build wrote ("ok", "refused", "declined")
    /// and the automatic proposer's name ("controller@").
    pub fn backfill_tally(&mut self, audit: impl IntoIterator<Item = AuditEntry>) {
        if self.tally.is_some() {
            return;
        }
        let mut t = Tally::default();
        for e in audit {
            if e.what.starts_with("move ") && e.result.starts_with("ok") {
                t.moves += 1;
                t.automatic_moves += u64::from(e.who.starts_with("controller@"));
            }
            t.refused += u64::from(e.result.starts_with("refused"));
            t.declined += u64::from(e.result.starts_with("declined"));
        }
        self.tally = Some(t);
    }

    /// The tally, started on first use.
    pub fn tally_mut(&mut self) -> &mut Tally {
        self.tally.get_or_insert_with(Tally::default)
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

    // A state written by the build before move records and displaced
    // shards (and a drain without its last-heard time) still loads.
    #[test]
    fn a_state_from_the_previous_build_loads() {
        let old = r#"{"bootstrapped":true,"generation":1,"sites":{},"pairs":[],
            "shards":[{"owner":"a","epoch":3,"moving_to":"b","drain":{"kind":"failover","at_unix_ms":5,"deadline_unix_ms":9,"log_index":4}}],
            "policy":{"auto_failover":true,"paused":false,"cooldown_s":300,"lag_entries_max":1000,"lag_s_max":30},
            "audit_len":7,"audit_head":"ab","last_auto_failover_unix_ms":0}"#;
        let s: ClusterState = serde_json::from_str(old).unwrap();
        assert_eq!((s.shards[0].displaced_from.clone(), s.last_moves.len(), s.last_automatic.clone()), (None, 0, None));
        assert_eq!(s.shards[0].drain.as_ref().map(|d| (d.log_index, d.writer_last_heard_unix_ms)), Some((4, 0)));
        // And a new state round-trips, records included.
        let mut s = s;
        s.last_moves.insert(MoveKind::Failover, MoveRecord { kind: MoveKind::Failover, from: "a".into(), ..Default::default() });
        s.shards[0].displaced_from = Some("a".into());
        let again: ClusterState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
    }

    // A move record written by the build before the shard list and epochs
    // (and a state without the tally) still loads.
    #[test]
    fn a_move_record_from_the_previous_build_loads() {
        let old = r#"{"bootstrapped":true,"generation":1,"sites":{},"pairs":[],"shards":[],
            "policy":{"auto_failover":true,"paused":false,"cooldown_s":300,"lag_entries_max":1000,"lag_s_max":30},
            "audit_len":7,"last_moves":{"failover":{"kind":"failover","from":"a","to":"b","shards":32,"automatic":true,
            "drained_at_unix_ms":5,"moved_at_unix_ms":9,"write_pause_ms":4,"audit_seq":7}}}"#;
        let s: ClusterState = serde_json::from_str(old).unwrap();
        let r = &s.last_moves[&MoveKind::Failover];
        assert_eq!((r.shards, r.moved.len(), s.tally.clone()), (32, 0, None));
    }

    // A state from a build without the tally counts it once from its audit
    // log, with that build's outcome words; a state with one keeps it.
    #[test]
    fn the_tally_of_an_older_store_is_counted_from_its_audit_log() {
        let entry = |who: &str, what: &str, result: &str| AuditEntry {
            seq: 0,
            at_unix_ms: 0,
            clock: String::new(),
            who: who.into(),
            why: String::new(),
            what: what.into(),
            result: result.into(),
            log_index: 0,
            prev_hash: String::new(),
            hash: String::new(),
        };
        let log = vec![
            entry("alice", "move 32 shards (0-31) from a to b", "ok: b owns them now (epoch 2)"),
            entry("controller@b", "move 32 shards (0-31) from a to b", "ok: b owns them now (epoch 3)"),
            entry("alice", "move 1 shard (0) from a to b", "refused: shard 0 is owned by b (epoch 3), not a"),
            entry("controller@b", "site a down; automatic failover to b declined", "declined: paused"),
            entry("alice", "pause automatic actions", "ok"),
        ];
        let old: ClusterState = serde_json::from_str(
            r#"{"bootstrapped":true,"generation":1,"sites":{},"pairs":[],"shards":[],
            "policy":{"auto_failover":true,"paused":false,"cooldown_s":300,"lag_entries_max":1000,"lag_s_max":30},"audit_len":5}"#,
        )
        .unwrap();
        assert_eq!(old.tally, None);
        let mut s = old.clone();
        s.backfill_tally(log.clone());
        assert_eq!(s.tally, Some(Tally { moves: 2, automatic_moves: 1, refused: 1, declined: 1 }));
        let mut again = s.clone();
        again.backfill_tally(log);
        assert_eq!(again.tally, s.tally, "counted once");
    }

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
