//! How long each site crash kept writes from being acknowledged, from the
//! recorded history: the figures behind the failover objectives.
//!
//! For a crash of site X at time t:
//! - **failover**: X's shards (those whose last acknowledged write before t
//!   came from X) are writable again when a write to each of them is
//!   acknowledged by another site; the figure is the slowest of them, from
//!   t to the client seeing that acknowledgement;
//! - **survivor**: the other sites' own shards may pause too (their writes
//!   wait for X until their direction goes async); the figure is the
//!   slowest first acknowledgement after t among them.
//!
//! A shard with no acknowledged write after t counts as not recovered
//! (`None`): the figure is then "never", not the end of the run.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::workload::{Op, OpKind};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CrashRecovery {
    pub site: String,
    /// Simulated milliseconds since the run began.
    pub at_ms: u64,
    /// Shards the crashed site had been writing.
    pub shards: usize,
    /// Crash to the last of those shards' first acknowledged write at
    /// another site; `None`: some never got one in the run.
    pub failover_ms: Option<u64>,
    /// Crash to the last first-acknowledgement among the other sites' own
    /// shards; `None`: one never got one.
    pub survivor_ms: Option<u64>,
}

/// One entry per crash: (site, simulated ms of the crash).
pub fn after_crashes(crashes: &[(String, u64)], ops: &[Op]) -> Vec<CrashRecovery> {
    let mut acked: Vec<(&Op, &crate::workload::Ack)> =
        ops.iter().filter(|o| o.kind == OpKind::Put).filter_map(|o| o.result.as_ref().ok().map(|a| (o, a))).collect();
    acked.sort_by_key(|(o, _)| (o.done_ms, o.n));
    let mut out = Vec::new();
    for (site, at_ms) in crashes {
        let at_ms = *at_ms;
        // Who last wrote each shard before the crash.
        let mut writer: BTreeMap<u32, &str> = BTreeMap::new();
        for (_, a) in acked.iter().filter(|(o, _)| o.done_ms < at_ms) {
            writer.insert(a.shard, a.origin.as_str());
        }
        let first_after = |shard: u32, other_than: Option<&str>| {
            acked.iter().find(|(o, a)| o.done_ms >= at_ms && a.shard == shard && other_than.is_none_or(|x| a.origin != x)).map(|(o, _)| o.done_ms - at_ms)
        };
        let slowest = |shards: Vec<u32>, other_than: Option<&str>| -> Option<u64> {
            shards.into_iter().map(|s| first_after(s, other_than)).try_fold(0, |m, t| t.map(|t| m.max(t)))
        };
        let theirs: Vec<u32> = writer.iter().filter(|(_, w)| **w == site.as_str()).map(|(s, _)| *s).collect();
        let others: Vec<u32> = writer.iter().filter(|(_, w)| **w != site.as_str()).map(|(s, _)| *s).collect();
        out.push(CrashRecovery {
            site: site.clone(),
            at_ms,
            shards: theirs.len(),
            failover_ms: if theirs.is_empty() { Some(0) } else { slowest(theirs, Some(site)) },
            survivor_ms: if others.is_empty() { Some(0) } else { slowest(others, None) },
        });
    }
    out
}

/// A request slower than this after a fault counts as stopped by it (a
/// normal put, sync with the peer, takes a few ms in the simulation).
pub const SLOW_MS: u64 = 1_000;

/// RTO of one fault (or command): from the event to the first
/// acknowledged write of every shard it stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FaultRecovery {
    /// The event, as the timeline describes it.
    pub what: String,
    /// Simulated milliseconds since the run began.
    pub at_ms: u64,
    /// Shards whose first request after the event failed or was slow.
    pub stopped: Vec<u32>,
    /// The event to the last of those shards' first acknowledged write;
    /// `None`: one got no acknowledged write before the end of the run.
    pub rto_ms: Option<u64>,
    /// The shard that took longest (or never came back).
    pub slowest_shard: Option<u32>,
}

impl FaultRecovery {
    /// The figure checked against the RTO objective: a shard that never
    /// came back counts until the end of the run.
    pub fn rto_or(&self, end_ms: u64) -> u64 {
        self.rto_ms.unwrap_or(end_ms.saturating_sub(self.at_ms))
    }
}

/// One entry per event (description, simulated ms). A shard's requests
/// are those of the tenants in it (`shard_of`), in the order they finished.
pub fn after_faults(events: &[(String, u64)], ops: &[Op], shard_of: impl Fn(&str) -> u32) -> Vec<FaultRecovery> {
    let mut by_shard: BTreeMap<u32, Vec<&Op>> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.kind == OpKind::Put) {
        by_shard.entry(shard_of(&op.tenant)).or_default().push(op);
    }
    for list in by_shard.values_mut() {
        list.sort_by_key(|o| (o.done_ms, o.n));
    }
    events
        .iter()
        .map(|(what, at_ms)| {
            let at_ms = *at_ms;
            let mut stopped = Vec::new();
            let mut worst: Option<(Option<u64>, u32)> = None;
            for (shard, list) in &by_shard {
                let after: Vec<&&Op> = list.iter().filter(|o| o.done_ms >= at_ms).collect();
                let Some(first) = after.first() else { continue };
                let unhurt = first.result.is_ok() && first.done_ms.saturating_sub(first.sent_ms.max(at_ms)) < SLOW_MS;
                if unhurt {
                    continue;
                }
                stopped.push(*shard);
                let back = after.iter().find(|o| o.result.is_ok()).map(|o| o.done_ms - at_ms);
                let longer = match (&worst, back) {
                    (None, _) => true,
                    (Some((None, _)), _) => false,
                    (Some((Some(_), _)), None) => true,
                    (Some((Some(w), _)), Some(b)) => b > *w,
                };
                if longer {
                    worst = Some((back, *shard));
                }
            }
            FaultRecovery {
                what: what.clone(),
                at_ms,
                rto_ms: match worst {
                    None => Some(0),
                    Some((back, _)) => back,
                },
                slowest_shard: worst.map(|(_, s)| s),
                stopped,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Ack;

    fn put(n: u64, done_ms: u64, shard: u32, origin: &str) -> Op {
        let ack = Ack { origin: origin.into(), epoch: 1, version: 1, shard, accepted_unix_ms: 0 };
        Op { n, kind: OpKind::Put, tenant: "t".into(), contract_id: format!("c{n}"), size: 1, sent_ms: done_ms, done_ms, result: Ok(ack) }
    }

    fn crash() -> Vec<(String, u64)> {
        vec![("a".to_string(), 11_000)]
    }

    #[test]
    fn the_slowest_shard_of_the_crashed_site_sets_the_failover_time() {
        let ops =
            vec![put(1, 5_000, 0, "a"), put(2, 6_000, 1, "a"), put(3, 7_000, 2, "b"), put(4, 11_500, 2, "b"), put(5, 12_000, 0, "b"), put(6, 13_200, 1, "b")];
        let r = after_crashes(&crash(), &ops);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].site.as_str(), r[0].at_ms, r[0].shards), ("a", 11_000, 2));
        assert_eq!(r[0].failover_ms, Some(2_200));
        assert_eq!(r[0].survivor_ms, Some(500));
    }

    #[test]
    fn a_fault_s_rto_is_its_slowest_stopped_shard_and_never_when_one_never_returns() {
        let tenant_shard = |t: &str| t.trim_start_matches('t').parse::<u32>().unwrap_or(0);
        let op = |n: u64, tenant: &str, sent: u64, done: u64, ok: bool| {
            let ack = Ack { origin: "b".into(), epoch: 2, version: 1, shard: tenant_shard(tenant), accepted_unix_ms: 0 };
            Op {
                n,
                kind: OpKind::Put,
                tenant: tenant.into(),
                contract_id: format!("c{n}"),
                size: 1,
                sent_ms: sent,
                done_ms: done,
                result: if ok { Ok(ack) } else { Err("a: no answer".into()) },
            }
        };
        let ops = vec![
            op(1, "t0", 9_000, 9_010, true),
            op(2, "t0", 10_100, 10_600, false), // stopped by the crash at 10 s
            op(3, "t1", 10_200, 10_210, true),  // not stopped
            op(4, "t0", 10_700, 13_400, true),  // back 3.4 s after the crash
            op(5, "t2", 10_300, 12_500, true),  // slow: stopped, back at 2.5 s
        ];
        let r = after_faults(&[("crash".into(), 10_000)], &ops, tenant_shard);
        assert_eq!(r[0].stopped, vec![0, 2]);
        assert_eq!((r[0].rto_ms, r[0].slowest_shard), (Some(3_400), Some(0)));
        // Without op 4, shard 0 never came back: counted to the end of the run.
        let ops: Vec<Op> = ops.into_iter().filter(|o| o.n != 4).collect();
        let r = after_faults(&[("crash".into(), 10_000)], &ops, tenant_shard);
        assert_eq!((r[0].rto_ms, r[0].slowest_shard), (None, Some(0)));
        assert_eq!(r[0].rto_or(70_000), 60_000);
    }

    #[test]
    fn a_shard_never_written_again_is_never_recovered() {
        let ops = vec![put(1, 5_000, 0, "a"), put(2, 6_000, 1, "a"), put(3, 12_000, 0, "b")];
        let r = after_crashes(&crash(), &ops);
        assert_eq!(r[0].failover_ms, None, "shard 1 got no write after the crash");
        // A write acknowledged by the crashed site itself (after a restart)
        // is not a failover.
        let ops = vec![put(1, 5_000, 0, "a"), put(2, 30_000, 0, "a")];
        assert_eq!(after_crashes(&crash(), &ops)[0].failover_ms, None);
    }
}
