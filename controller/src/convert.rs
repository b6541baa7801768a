//! Conversions between the control API's prost types and domain types.
//! Domain code never handles prost structs; this file is the one place
//! where the two meet.

use std::collections::BTreeMap;

use tandem_proto::control as pb;

use crate::health::{LinkLag, ReplicatorHealth};
use crate::state::{
    AuditEntry, AutoAction, ClusterState, Direction, Drain, MoveKind, MoveRecord, MovedShard, Policy, ReplicationMode, ReplicationPair, Shard, Site, SiteRole,
    Tally,
};
use crate::status::{NodeStatus, RaftStatus};

/// A reply that does not describe a valid state.
#[derive(Debug, thiserror::Error)]
#[error("malformed reply from controller: {0}")]
pub struct Malformed(pub String);

pub fn status_to_pb(s: &NodeStatus) -> pb::StatusReply {
    let r = &s.raft;
    let c = &s.cluster;
    pb::StatusReply {
        raft: Some(pb::RaftView {
            node_id: r.node_id,
            site: r.site.clone(),
            role: r.role.clone(),
            term: r.term,
            leader_id: r.leader_id.unwrap_or(0),
            leader_site: r.leader_site.clone().unwrap_or_default(),
            leader_addr: r.leader_addr.clone().unwrap_or_default(),
            last_log_index: r.last_log_index,
            last_applied_index: r.last_applied_index,
            version: r.version.clone(),
        }),
        cluster: Some(pb::ClusterView {
            bootstrapped: c.bootstrapped,
            generation: c.generation,
            sites: c
                .sites
                .values()
                .map(|s| pb::SiteView { name: s.name.clone(), node_id: s.node_id, city: s.city.clone(), role: s.role.as_str().into(), addr: s.addr.clone() })
                .collect(),
            shards: c
                .shards
                .iter()
                .enumerate()
                .map(|(i, s)| pb::ShardView {
                    shard: i as u32,
                    owner: s.owner.clone(),
                    epoch: s.epoch,
                    moving_to: s.moving_to.clone().unwrap_or_default(),
                    drain_kind: s.drain.as_ref().map_or(String::new(), |d| d.kind.as_str().into()),
                    drain_at_unix_ms: s.drain.as_ref().map_or(0, |d| d.at_unix_ms),
                    drain_deadline_unix_ms: s.drain.as_ref().map_or(0, |d| d.deadline_unix_ms),
                    drain_log_index: s.drain.as_ref().map_or(0, |d| d.log_index),
                    drain_writer_last_heard_unix_ms: s.drain.as_ref().map_or(0, |d| d.writer_last_heard_unix_ms),
                    displaced_from: s.displaced_from.clone().unwrap_or_default(),
                })
                .collect(),
            pairs: c
                .pairs
                .iter()
                .map(|p| pb::PairView {
                    site_a: p.site_a.clone(),
                    site_b: p.site_b.clone(),
                    mode: p.mode.as_str().into(),
                    state_id: p.state_id,
                    directions: p
                        .directions
                        .iter()
                        .map(|d| pb::DirectionView { from: d.from.clone(), mode: d.mode.as_str().into(), state_id: d.state_id, since_seq: d.since_seq })
                        .collect(),
                })
                .collect(),
            policy: Some(pb::PolicyView {
                auto_failover: c.policy.auto_failover,
                paused: c.policy.paused,
                cooldown_s: c.policy.cooldown_s,
                lag_entries_max: c.policy.lag_entries_max,
                lag_s_max: c.policy.lag_s_max,
                down_after_ms: c.policy.down_after_ms,
                four_eyes: c.policy.four_eyes,
            }),
            audit_len: c.audit_len,
            last_auto_failover_unix_ms: c.last_auto_failover_unix_ms,
            audit_head: c.audit_head.clone(),
            last_moves: c
                .last_moves
                .values()
                .map(|m| pb::MoveRecordView {
                    kind: m.kind.as_str().into(),
                    from: m.from.clone(),
                    to: m.to.clone(),
                    shards: m.shards,
                    automatic: m.automatic,
                    drained_at_unix_ms: m.drained_at_unix_ms,
                    moved_at_unix_ms: m.moved_at_unix_ms,
                    write_pause_ms: m.write_pause_ms,
                    audit_seq: m.audit_seq,
                    moved: m.moved.iter().map(|s| pb::MovedShardView { shard: s.shard, from_epoch: s.from_epoch, to_epoch: s.to_epoch }).collect(),
                })
                .collect(),
            tally: c.tally.as_ref().map(|t| pb::TallyView { moves: t.moves, automatic_moves: t.automatic_moves, refused: t.refused, declined: t.declined }),
            approvals_json: if c.approvals.is_empty() { String::new() } else { serde_json::to_string(&c.approvals).unwrap_or_default() },
            last_automatic: c.last_automatic.as_ref().map(|a| pb::AutoActionView {
                at_unix_ms: a.at_unix_ms,
                audit_seq: a.audit_seq,
                what: a.what.clone(),
                result: a.result.clone(),
            }),
        }),
        replicators: s.replicators.iter().map(replicator_to_pb).collect(),
        now_unix_ms: s.now_unix_ms,
        auto_failover: s.auto_failover.clone().into_iter().collect(),
    }
}

pub fn replicator_to_pb(h: &ReplicatorHealth) -> pb::ReplicatorView {
    pb::ReplicatorView {
        site: h.site.clone(),
        addr: h.addr.clone(),
        log_head: h.log_head,
        links: h.links.iter().map(|l| pb::LinkLagView { peer: l.peer.clone(), entries: l.entries, bytes: l.bytes, seconds: l.seconds }).collect(),
        received_at_unix_ms: h.received_at_unix_ms,
        view_index: h.view_index,
        version: h.version.clone(),
        blob_store_error: h.blob_store_error.clone(),
        restoring: h.restoring.clone(),
        keys_error: h.keys_error.clone(),
    }
}

pub fn replicator_from_pb(v: pb::ReplicatorView) -> ReplicatorHealth {
    ReplicatorHealth {
        site: v.site,
        addr: v.addr,
        log_head: v.log_head,
        links: v.links.into_iter().map(|l| LinkLag { peer: l.peer, entries: l.entries, bytes: l.bytes, seconds: l.seconds }).collect(),
        received_at_unix_ms: v.received_at_unix_ms,
        view_index: v.view_index,
        version: v.version,
        blob_store_error: v.blob_store_error,
        restoring: v.restoring,
        keys_error: v.keys_error,
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

pub fn status_from_pb(mut reply: pb::StatusReply) -> Result<NodeStatus, Malformed> {
    let r = reply.raft.take().ok_or_else(|| Malformed("status without raft view".into()))?;
    let c = reply.cluster.take().ok_or_else(|| Malformed("status without cluster view".into()))?;
    let p = c.policy.unwrap_or_default();
    let mut sites = BTreeMap::new();
    for s in c.sites {
        let role = SiteRole::parse(&s.role).ok_or_else(|| Malformed(format!("unknown site role {:?}", s.role)))?;
        sites.insert(s.name.clone(), Site { name: s.name, node_id: s.node_id, city: s.city, role, addr: s.addr });
    }
    let mut shards = Vec::with_capacity(c.shards.len());
    for (i, s) in c.shards.into_iter().enumerate() {
        if s.shard as usize != i {
            return Err(Malformed(format!("shard list out of order at {i}")));
        }
        let drain = if s.drain_kind.is_empty() {
            None
        } else {
            let kind = MoveKind::parse(&s.drain_kind).ok_or_else(|| Malformed(format!("unknown drain kind {:?}", s.drain_kind)))?;
            Some(Drain {
                kind,
                at_unix_ms: s.drain_at_unix_ms,
                deadline_unix_ms: s.drain_deadline_unix_ms,
                log_index: s.drain_log_index,
                writer_last_heard_unix_ms: s.drain_writer_last_heard_unix_ms,
            })
        };
        shards.push(Shard { owner: s.owner, epoch: s.epoch, moving_to: non_empty(s.moving_to), drain, displaced_from: non_empty(s.displaced_from) });
    }
    let mut pairs = Vec::new();
    for p in c.pairs {
        let mode = ReplicationMode::parse(&p.mode).ok_or_else(|| Malformed(format!("unknown replication mode {:?}", p.mode)))?;
        let mut directions = Vec::new();
        for d in p.directions {
            let dmode = ReplicationMode::parse(&d.mode).ok_or_else(|| Malformed(format!("unknown replication mode {:?}", d.mode)))?;
            directions.push(Direction { from: d.from, mode: dmode, state_id: d.state_id, since_seq: d.since_seq });
        }
        pairs.push(ReplicationPair { site_a: p.site_a, site_b: p.site_b, mode, state_id: p.state_id, directions });
    }
    let mut last_moves = BTreeMap::new();
    for m in c.last_moves {
        let kind = MoveKind::parse(&m.kind).ok_or_else(|| Malformed(format!("unknown move kind {:?}", m.kind)))?;
        let record = MoveRecord {
            kind,
            from: m.from,
            to: m.to,
            shards: m.shards,
            automatic: m.automatic,
            drained_at_unix_ms: m.drained_at_unix_ms,
            moved_at_unix_ms: m.moved_at_unix_ms,
            write_pause_ms: m.write_pause_ms,
            audit_seq: m.audit_seq,
            moved: m.moved.into_iter().map(|s| MovedShard { shard: s.shard, from_epoch: s.from_epoch, to_epoch: s.to_epoch }).collect(),
        };
        last_moves.insert(kind, record);
    }
    let last_automatic = c.last_automatic.map(|a| AutoAction { at_unix_ms: a.at_unix_ms, audit_seq: a.audit_seq, what: a.what, result: a.result });
    Ok(NodeStatus {
        raft: RaftStatus {
            node_id: r.node_id,
            site: r.site,
            role: r.role,
            term: r.term,
            leader_id: (r.leader_id != 0).then_some(r.leader_id),
            leader_site: non_empty(r.leader_site),
            leader_addr: non_empty(r.leader_addr),
            last_log_index: r.last_log_index,
            last_applied_index: r.last_applied_index,
            version: r.version,
        },
        cluster: ClusterState {
            bootstrapped: c.bootstrapped,
            generation: c.generation,
            sites,
            shards,
            pairs,
            policy: Policy {
                auto_failover: p.auto_failover,
                paused: p.paused,
                cooldown_s: p.cooldown_s,
                lag_entries_max: p.lag_entries_max,
                lag_s_max: p.lag_s_max,
                down_after_ms: p.down_after_ms,
                four_eyes: p.four_eyes,
            },
            audit_len: c.audit_len,
            audit_head: c.audit_head,
            last_auto_failover_unix_ms: c.last_auto_failover_unix_ms,
            last_moves,
            last_automatic,
            tally: c.tally.map(|t| Tally { moves: t.moves, automatic_moves: t.automatic_moves, refused: t.refused, declined: t.declined }),
            approvals: if c.approvals_json.is_empty() {
                Default::default()
            } else {
                serde_json::from_str(&c.approvals_json).map_err(|e| Malformed(format!("approvals: {e}")))?
            },
        },
        replicators: reply.replicators.into_iter().map(replicator_from_pb).collect(),
        now_unix_ms: reply.now_unix_ms,
        auto_failover: reply.auto_failover.into_iter().collect(),
    })
}

pub fn audit_to_pb(e: &AuditEntry) -> pb::AuditEntryView {
    pb::AuditEntryView {
        seq: e.seq,
        at_unix_ms: e.at_unix_ms,
        clock: e.clock.clone(),
        who: e.who.clone(),
        why: e.why.clone(),
        what: e.what.clone(),
        result: e.result.clone(),
        log_index: e.log_index,
        prev_hash: e.prev_hash.clone(),
        hash: e.hash.clone(),
    }
}

pub fn audit_from_pb(e: pb::AuditEntryView) -> AuditEntry {
    AuditEntry {
        seq: e.seq,
        at_unix_ms: e.at_unix_ms,
        clock: e.clock,
        who: e.who,
        why: e.why,
        what: e.what,
        result: e.result,
        log_index: e.log_index,
        prev_hash: e.prev_hash,
        hash: e.hash,
    }
}

/// The leader's address a "not the leader" refusal names.
pub fn leader_named(s: &tonic::Status) -> Option<String> {
    s.metadata().get(tandem_proto::LEADER_ADDR_METADATA).and_then(|v| v.to_str().ok()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{self, BootstrapSpec, Command, OpMeta, Request};

    // Status survives the trip through the wire types unchanged.
    #[test]
    fn status_round_trips() {
        let mut cluster = ClusterState::default();
        let spec = BootstrapSpec {
            sites: vec![
                Site { name: "a".into(), node_id: 1, city: "x".into(), role: SiteRole::Active, addr: "a:1".into() },
                Site { name: "b".into(), node_id: 2, city: "x".into(), role: SiteRole::Active, addr: "b:1".into() },
                Site { name: "c".into(), node_id: 3, city: "y".into(), role: SiteRole::DrStandby, addr: "c:1".into() },
            ],
            shard_count: 16,
            policy: Policy::default(),
        };
        let meta = OpMeta { who: "t".into(), why: "t".into(), at_unix_ms: 1, clock: String::new(), approval: None };
        ops::apply(&mut cluster, &Request { command: Command::Bootstrap(spec), meta: meta.clone() }, 1);
        // A failover done (a record, a displaced shard, the last automatic
        // action) and one still fenced (a drain with its last-heard time).
        let step = |step, shards: Vec<u32>| ops::ShardMoveSpec {
            step,
            from: "a".into(),
            to: "b".into(),
            shards,
            expect_epoch: None,
            require_drained: true,
            automatic: true,
            require_sync: false,
            kind: MoveKind::Failover,
            deadline_ms: 0,
            writer_last_heard_ms: 1,
        };
        for spec in [step(ops::MoveStep::Drain, vec![0]), step(ops::MoveStep::Move, vec![0]), step(ops::MoveStep::Drain, vec![1])] {
            let (outcome, _) = ops::apply(&mut cluster, &Request { command: Command::ShardMove(spec), meta: meta.clone() }, 2);
            assert!(outcome.changed, "{}", outcome.result);
        }
        assert!(cluster.last_automatic.is_some() && cluster.shards[0].displaced_from.is_some() && cluster.shards[1].drain.is_some());
        assert_eq!(cluster.last_moves.len(), 1);
        let status = NodeStatus {
            raft: RaftStatus {
                node_id: 1,
                site: "a".into(),
                role: "leader".into(),
                term: 3,
                leader_id: Some(1),
                leader_site: Some("a".into()),
                leader_addr: Some("a:1".into()),
                last_log_index: 9,
                last_applied_index: 9,
                version: "0.1.0+abc".into(),
            },
            cluster,
            replicators: vec![ReplicatorHealth {
                site: "a".into(),
                addr: "a:2".into(),
                log_head: 7,
                links: vec![LinkLag { peer: "c".into(), entries: 2, bytes: 300, seconds: 4 }],
                received_at_unix_ms: 11,
                view_index: 9,
                version: "0.1.0+def".into(),
                blob_store_error: "s3: connection refused".into(),
                restoring: "restored from backup a-1; catching up".into(),
                keys_error: "HSM: token not present".into(),
            }],
            now_unix_ms: 12,
            auto_failover: [("a".to_string(), String::new()), ("b".to_string(), "pair b -> a async".to_string())].into(),
        };
        assert_eq!(status_from_pb(status_to_pb(&status)).unwrap(), status);
    }

    #[test]
    fn unknown_role_is_malformed() {
        let mut reply = status_to_pb(&NodeStatus {
            raft: RaftStatus {
                node_id: 1,
                site: "a".into(),
                role: "leader".into(),
                term: 1,
                leader_id: None,
                leader_site: None,
                leader_addr: None,
                last_log_index: 0,
                last_applied_index: 0,
                version: String::new(),
            },
            cluster: ClusterState::default(),
            replicators: Vec::new(),
            now_unix_ms: 0,
            auto_failover: Default::default(),
        });
        reply.cluster.as_mut().unwrap().sites.push(pb::SiteView { role: "boss".into(), ..Default::default() });
        assert!(status_from_pb(reply).unwrap_err().to_string().contains("boss"));
    }
}
