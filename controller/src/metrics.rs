//! What a controller exports on `/metrics` (Prometheus text): its Raft
//! view, the agreed cluster state (owners, pair modes), the replicators'
//! heartbeats and lag as this node last heard them, the tally of applied
//! commands (moves, refusals) from the agreed state, and whether this
//! node's copy of the audit hash chain holds (checked incrementally, and
//! in full every ten minutes). Names and meanings are listed in `deploy/README.md`.

use std::sync::{Arc, Mutex};

use tandem_net::metrics::{Kind, Text};

use crate::audit::ChainCheck;
use crate::clock::Clock;
use crate::health::HealthBoard;
use crate::plan::Observations;
use crate::raft::state_machine::StateReader;
use crate::raft::Raft;
use crate::state::{ReplicationMode, SiteRole, Tally};
use crate::status::node_status;
use crate::status::NodeStatus;

/// Audit entries read per page when checking the chain.
const PAGE: usize = 10_000;
/// How often a scrape checks the whole chain again from the first entry;
/// between those it checks only the entries added since the last scrape.
const FULL_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Everything a scrape needs, cloned out of the running node.
#[derive(Clone)]
pub struct MetricsSource {
    pub(crate) raft: Raft,
    pub(crate) state: StateReader,
    pub(crate) health: HealthBoard,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) site: String,
    pub(crate) node_id: u64,
    /// The chain checked so far, carried from scrape to scrape.
    pub(crate) chain: Arc<Mutex<ChainProgress>>,
}

/// How far the audit chain has been checked, and when it was last checked
/// from its first entry.
#[derive(Default)]
pub struct ChainProgress {
    check: ChainCheck,
    full_at: Option<tokio::time::Instant>,
}

impl ChainProgress {
    /// Checks the entries added since the last call (all of them when a
    /// full check is due or the log got shorter) and returns the first
    /// broken entry, 0 if the chain holds.
    fn advance(&mut self, state: &StateReader) -> Result<u64, String> {
        let due = self.full_at.is_none_or(|at| at.elapsed() >= FULL_CHECK_EVERY);
        if due {
            *self = ChainProgress { full_at: Some(tokio::time::Instant::now()), ..Default::default() };
        }
        let len = loop {
            let (page, len) = state.audit_from(self.check.checked + 1, PAGE).map_err(|e| e.to_string())?;
            if self.check.checked > len {
                // The log was replaced (a snapshot): start again.
                *self = ChainProgress::default();
                continue;
            }
            page.iter().for_each(|e| self.check.push(e));
            if page.len() < PAGE || self.check.broken.is_some() {
                break len;
            }
        };
        let mut at_end = self.check.clone();
        at_end.finish(len);
        Ok(at_end.broken.map_or(0, |b| b.seq))
    }
}

/// The audit facts a scrape reports: the chain as this node's disk holds
/// it, and the tally counted when each command was applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFacts {
    pub entries: u64,
    /// 0 when the chain holds, else the first broken entry.
    pub first_broken: u64,
    pub tally: Tally,
}

impl MetricsSource {
    pub(crate) fn new(raft: Raft, state: StateReader, health: HealthBoard, clock: Arc<dyn Clock>, site: String, node_id: u64) -> Self {
        Self { raft, state, health, clock, site, node_id, chain: Default::default() }
    }

    pub fn render(&self) -> String {
        let status = node_status(&self.raft, &self.state, &self.health, self.clock.as_ref(), &self.site, self.node_id);
        let first_broken = self.chain.lock().unwrap_or_else(|p| p.into_inner()).advance(&self.state).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "metrics: cannot read the audit log");
            // An unreadable log is as bad as a broken one.
            1
        });
        let audit = AuditFacts { entries: status.cluster.audit_len, first_broken, tally: status.cluster.tally.clone().unwrap_or_default() };
        render(&status, &audit)
    }
}

fn b(v: bool) -> f64 {
    if v {
        1.0
    } else {
        0.0
    }
}

/// The text for one scrape. Pure, so it is tested without a cluster.
pub fn render(s: &NodeStatus, audit: &AuditFacts) -> String {
    let mut t = Text::new();
    let c = &s.cluster;
    t.single("tandem_raft_term", Kind::Gauge, "Raft term this controller is in.", s.raft.term as f64);
    t.single("tandem_raft_is_leader", Kind::Gauge, "1 if this controller is the Raft leader.", b(s.raft.role == "leader"));
    t.single("tandem_raft_has_leader", Kind::Gauge, "1 if this controller knows a Raft leader.", b(s.raft.leader_id.is_some()));
    let leader: Vec<_> = s.raft.leader_site.iter().map(|l| (vec![("site", l.clone())], 1.0)).collect();
    t.family("tandem_raft_leader", Kind::Gauge, "The site whose controller leads, as this controller knows it.", &leader);
    t.single("tandem_raft_last_applied_index", Kind::Gauge, "Raft log index applied here.", s.raft.last_applied_index as f64);
    t.single("tandem_cluster_generation", Kind::Gauge, "Membership generation (grows with each DR activation).", c.generation as f64);
    t.single("tandem_policy_paused", Kind::Gauge, "1 while automatic actions are paused.", b(c.policy.paused));

    let roles = [SiteRole::Active, SiteRole::DrStandby, SiteRole::Fenced, SiteRole::Recovering];
    let mut site_roles = Vec::new();
    let mut owned = Vec::new();
    for (name, site) in &c.sites {
        for r in roles {
            site_roles.push((vec![("site", name.clone()), ("role", r.as_str().to_string())], b(site.role == r)));
        }
        owned.push((vec![("site", name.clone())], c.shards.iter().filter(|sh| sh.owner == *name).count() as f64));
    }
    t.family("tandem_site_role", Kind::Gauge, "1 for each site's current role.", &site_roles);
    t.family("tandem_shards_owned", Kind::Gauge, "Shards each site owns (may write).", &owned);

    let modes = [ReplicationMode::Sync, ReplicationMode::Async, ReplicationMode::SyncRecover];
    let mut pair_modes = Vec::new();
    let mut pair_sync = Vec::new();
    let mut state_ids = Vec::new();
    for p in &c.pairs {
        let pair = format!("{}-{}", p.site_a, p.site_b);
        for m in modes {
            pair_modes.push((vec![("pair", pair.clone()), ("mode", m.as_str().to_string())], b(p.mode == m)));
        }
        pair_sync.push((vec![("pair", pair.clone())], b(p.mode == ReplicationMode::Sync)));
        state_ids.push((vec![("pair", pair)], p.state_id as f64));
    }
    let mut directions = Vec::new();
    for p in &c.pairs {
        for from in [&p.site_a, &p.site_b] {
            let labels = vec![("from", from.clone()), ("to", p.partner(from).to_string())];
            directions.push((labels, b(p.outgoing(from) == ReplicationMode::Sync)));
        }
    }
    t.family(
        "tandem_replication_direction_sync",
        Kind::Gauge,
        "1 while every write `from` acknowledged is confirmed at `to` (its in-city direction is in sync: a failover from -> to loses nothing).",
        &directions,
    );
    let available: Vec<_> = s.auto_failover.iter().map(|(site, why)| (vec![("site", site.clone())], b(why.is_empty()))).collect();
    t.family(
        "tandem_auto_failover_available",
        Kind::Gauge,
        "Leader only: 1 if the site's automatic failover would go ahead were it lost now, 0 if it would be declined (tandem status says why).",
        &available,
    );
    // What a failover now would lose, per direction, from the planner.
    let obs = Observations { replicators: s.replicators.clone(), now_unix_ms: s.now_unix_ms };
    let (mut rpo_entries, mut rpo_bytes, mut rpo_seconds) = (Vec::new(), Vec::new(), Vec::new());
    for p in &c.pairs {
        for from in [&p.site_a, &p.site_b] {
            let to = p.partner(from);
            let loss = crate::plan::exposure(c, &obs, from, to);
            let labels = vec![("from", from.clone()), ("to", to.to_string())];
            rpo_entries.push((labels.clone(), loss.entries as f64));
            rpo_bytes.push((labels.clone(), loss.bytes as f64));
            rpo_seconds.push((labels, loss.seconds as f64));
        }
    }
    t.family(
        "tandem_rpo_exposure_entries",
        Kind::Gauge,
        "Acknowledged writes a failover from -> to would lose if it happened now (0 while the direction is in sync).",
        &rpo_entries,
    );
    t.family("tandem_rpo_exposure_bytes", Kind::Gauge, "Bytes of those writes.", &rpo_bytes);
    t.family("tandem_rpo_exposure_seconds", Kind::Gauge, "How far back those writes go, in seconds.", &rpo_seconds);

    let (mut move_at, mut move_duration, mut move_pause) = (Vec::new(), Vec::new(), Vec::new());
    for m in c.last_moves.values() {
        let labels = vec![("kind", m.kind.as_str().to_string())];
        move_at.push((labels.clone(), m.moved_at_unix_ms as f64 / 1000.0));
        move_duration.push((labels.clone(), m.duration_ms() as f64 / 1000.0));
        move_pause.push((labels, m.write_pause_ms as f64 / 1000.0));
    }
    t.family("tandem_last_move_timestamp_seconds", Kind::Gauge, "When the last switchover / failover committed (Unix time).", &move_at);
    t.family("tandem_last_move_duration_seconds", Kind::Gauge, "The last switchover / failover, from its drain (fence) to its move.", &move_duration);
    t.family(
        "tandem_last_move_write_pause_seconds",
        Kind::Gauge,
        "How long the last switchover / failover left its shards without a writer: from the drain, or for a failover from when the lost owner was last heard, to the move.",
        &move_pause,
    );
    t.single(
        "tandem_last_automatic_action_timestamp_seconds",
        Kind::Gauge,
        "When tandem last acted on its own (automatic failover, a declined one, a move finished or undone for a driver that died); 0: never. `tandem status` says what it was.",
        c.last_automatic.as_ref().map_or(0.0, |a| a.at_unix_ms as f64 / 1000.0),
    );
    t.family("tandem_pair_mode", Kind::Gauge, "1 for each in-city pair's current replication mode.", &pair_modes);
    t.family("tandem_pair_sync", Kind::Gauge, "1 while the in-city pair is in sync mode (no acknowledged write can be lost).", &pair_sync);
    t.family("tandem_pair_state_id", Kind::Gauge, "State id of the pair's mode (grows with every mode change).", &state_ids);

    let mut ages = Vec::new();
    let (mut lag_entries, mut lag_bytes, mut lag_seconds, mut heads) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in &s.replicators {
        ages.push((vec![("site", r.site.clone())], s.now_unix_ms.saturating_sub(r.received_at_unix_ms) as f64 / 1000.0));
        heads.push((vec![("site", r.site.clone())], r.log_head as f64));
        for l in &r.links {
            let labels = vec![("from", r.site.clone()), ("to", l.peer.clone())];
            lag_entries.push((labels.clone(), l.entries as f64));
            lag_bytes.push((labels.clone(), l.bytes as f64));
            lag_seconds.push((labels, l.seconds as f64));
        }
    }
    t.family("tandem_replicator_heartbeat_age_seconds", Kind::Gauge, "Seconds since this controller heard from each site's replicator.", &ages);
    t.family("tandem_replicator_log_head", Kind::Gauge, "Change-log entries written at each site (rate = write throughput).", &heads);
    t.family("tandem_replication_lag_entries", Kind::Gauge, "Entries a site has written that the peer has not confirmed.", &lag_entries);
    t.family("tandem_replication_lag_bytes", Kind::Gauge, "Bytes of those entries.", &lag_bytes);
    t.family("tandem_replication_lag_seconds", Kind::Gauge, "Age of the oldest of those entries.", &lag_seconds);

    t.single("tandem_audit_entries", Kind::Gauge, "Entries in this controller's audit log.", audit.entries as f64);
    t.single("tandem_audit_chain_ok", Kind::Gauge, "1 while this controller's audit hash chain verifies.", b(audit.first_broken == 0));
    t.single("tandem_audit_chain_first_broken", Kind::Gauge, "First audit entry where the chain breaks; 0 if none.", audit.first_broken as f64);
    t.single("tandem_shard_moves_total", Kind::Counter, "Shard moves that took effect (switchovers and failovers).", audit.tally.moves as f64);
    t.single("tandem_automatic_failovers_total", Kind::Counter, "Shard moves made by tandem itself (automatic failovers).", audit.tally.automatic_moves as f64);
    t.single("tandem_refused_total", Kind::Counter, "Commands refused by the safety rules (audited).", audit.tally.refused as f64);
    t.single("tandem_declined_total", Kind::Counter, "Automatic actions tandem declined (audited).", audit.tally.declined as f64);
    t.build_and_process("controller");
    t.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{LinkLag, ReplicatorHealth};
    use crate::state::{AutoAction, MoveKind, MoveRecord};

    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    fn status() -> NodeStatus {
        NodeStatus {
            raft: Default::default(),
            cluster: crate::ops::test_state(8),
            replicators: vec![ReplicatorHealth {
                site: "a".into(),
                links: vec![LinkLag { peer: "b".into(), entries: 12, bytes: 3_000, seconds: 4 }],
                received_at_unix_ms: 98_000,
                ..Default::default()
            }],
            now_unix_ms: 100_000,
            auto_failover: Default::default(),
        }
    }

    #[test]
    fn rpo_exposure_is_the_lag_of_a_direction_out_of_sync_only() {
        let mut s = status();
        let text = render(&s, &AuditFacts::default());
        assert_eq!(sample(&text, "tandem_rpo_exposure_entries{from=\"a\",to=\"b\"}"), Some(0.0), "in sync: nothing at risk\n{text}");
        s.cluster.pairs[0].set_outgoing("a", ReplicationMode::Async, 40);
        let text = render(&s, &AuditFacts::default());
        assert_eq!(sample(&text, "tandem_rpo_exposure_entries{from=\"a\",to=\"b\"}"), Some(12.0), "{text}");
        assert_eq!(sample(&text, "tandem_rpo_exposure_bytes{from=\"a\",to=\"b\"}"), Some(3_000.0));
        // The lag's age plus the two seconds since a last reported it.
        assert_eq!(sample(&text, "tandem_rpo_exposure_seconds{from=\"a\",to=\"b\"}"), Some(6.0));
        assert_eq!(sample(&text, "tandem_rpo_exposure_entries{from=\"b\",to=\"a\"}"), Some(0.0));
    }

    #[test]
    fn the_last_moves_and_automatic_action_are_exported() {
        let mut s = status();
        let text = render(&s, &AuditFacts::default());
        assert_eq!(sample(&text, "tandem_last_automatic_action_timestamp_seconds"), Some(0.0));
        assert!(!text.contains("tandem_last_move_duration_seconds{"), "no move yet, no sample\n{text}");
        let failover = MoveRecord {
            kind: MoveKind::Failover,
            from: "a".into(),
            to: "b".into(),
            shards: 4,
            automatic: true,
            drained_at_unix_ms: 50_000,
            moved_at_unix_ms: 50_400,
            write_pause_ms: 1_900,
            audit_seq: 9,
            moved: Vec::new(),
        };
        s.cluster.last_moves.insert(MoveKind::Failover, failover);
        s.cluster.last_automatic = Some(AutoAction { at_unix_ms: 50_400, audit_seq: 9, what: "move".into(), result: "ok".into() });
        let text = render(&s, &AuditFacts::default());
        assert_eq!(sample(&text, "tandem_last_move_duration_seconds{kind=\"failover\"}"), Some(0.4), "{text}");
        assert_eq!(sample(&text, "tandem_last_move_write_pause_seconds{kind=\"failover\"}"), Some(1.9));
        assert_eq!(sample(&text, "tandem_last_move_timestamp_seconds{kind=\"failover\"}"), Some(50.4));
        assert_eq!(sample(&text, "tandem_last_automatic_action_timestamp_seconds"), Some(50.4));
    }
}
