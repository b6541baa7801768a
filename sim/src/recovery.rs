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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Ack;

    fn put(n: u64, done_ms: u64, shard: u32, origin: &str) -> Op {
        let ack = Ack { origin: origin.into(), epoch: 1, version: 1, shard, accepted_unix_ms: 0 };
        Op { n, kind: OpKind::Put, tenant: "t".into(), contract_id: format!("c{n}"), sent_ms: done_ms, done_ms, result: Ok(ack) }
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
