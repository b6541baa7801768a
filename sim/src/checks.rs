//! The invariants a drill checks on its recorded history and on what every
//! site stores at the end:
//! - no acknowledged write lost beyond the scenario's RPO;
//! - never two sites accepting writes for one shard at the same time;
//! - after healing, every running site holds identical per-shard digests;
//! - every stored contract decrypts and matches its checksums everywhere;
//! - destroyed contracts cannot be read anywhere;
//! - writes resume within the RTO;
//! - no shard is left drained (without a writer) at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tandem_net::Transport;
use tandem_proto::replicator as pb;
use tandem_replicator::client::ReplicatorClient;
use tandem_replicator::meta::MetaStore;
use tandem_replicator::model::VersionRecord;

use crate::cluster::{controller_addr, replicator_addr, site_names, SimCluster};
use crate::workload::{Op, OpKind};

/// What the checker client read from the running sites at the end.
#[derive(Clone, Debug, Default)]
pub struct FinalReads {
    /// Site → per-shard digests (sites that answered).
    pub digests: BTreeMap<String, Vec<String>>,
    /// Shard → owner, from the controllers.
    pub owners: Vec<String>,
    /// Shards still drained (no writer) at the end: "shard 3 of a towards b".
    pub drained: Vec<String>,
    /// (site, tenant, contract) → the version read, or the error.
    pub reads: BTreeMap<(String, String, String), Result<u64, String>>,
}

/// Reads everything the checks need, from a client host.
pub async fn read_final(ops: Vec<Op>, sites: Vec<String>) -> FinalReads {
    let mut out = FinalReads::default();
    let control =
        tandem_controller::client::ControlClient::new(site_names().into_iter().map(controller_addr).collect(), Transport::Turmoil, Duration::from_secs(5));
    if let Ok(status) = control.leader_status().await {
        out.owners = status.cluster.shards.iter().map(|s| s.owner.clone()).collect();
        out.drained = status
            .cluster
            .shards
            .iter()
            .enumerate()
            .filter_map(|(n, s)| s.moving_to.as_ref().map(|to| format!("shard {n} of {} drained towards {to}", s.owner)))
            .collect();
    }
    for site in &sites {
        let Ok(channel) = Transport::Turmoil.channel(&replicator_addr(site)) else { continue };
        let mut rc = tandem_replicator::peer::client(channel);
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(10), rc.digests(pb::DigestsRequest {})).await {
            out.digests.insert(site.clone(), r.into_inner().shard_digests);
        }
    }
    let client = ReplicatorClient::new(Transport::Turmoil, Duration::from_secs(10));
    let contracts: BTreeSet<(String, String)> = ops.iter().filter(|o| o.result.is_ok()).map(|o| (o.tenant.clone(), o.contract_id.clone())).collect();
    for site in &sites {
        for (tenant, id) in &contracts {
            let read = tokio::time::timeout(Duration::from_secs(10), client.get(&replicator_addr(site), tenant, id, 0, None)).await;
            let read = match read {
                Ok(Ok(info)) => Ok(info.version),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no answer".into()),
            };
            out.reads.insert((site.clone(), tenant.clone(), id.clone()), read);
        }
    }
    out
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Invariant {
    pub name: String,
    pub passed: bool,
    /// What was found (each violation, or a summary when it passed).
    pub details: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Checks {
    pub invariants: Vec<Invariant>,
    /// Longest time a tenant went without an acknowledged write, and which.
    pub rto_ms: u64,
    pub rto_tenant: String,
    /// Acknowledged writes no running owner holds.
    pub lost: Vec<String>,
    /// Contracts stored more than once (a retried write).
    pub duplicated: Vec<String>,
    /// Writes moved aside as divergent, per site.
    pub quarantined: Vec<String>,
    pub acked_puts: usize,
    pub failed_requests: usize,
}

impl Checks {
    pub fn passed(&self) -> bool {
        self.invariants.iter().all(|i| i.passed)
    }
}

fn invariant(name: &str, violations: Vec<String>, ok: String) -> Invariant {
    let passed = violations.is_empty();
    Invariant { name: name.into(), passed, details: if passed { vec![ok] } else { violations } }
}

/// Evaluates every invariant.
pub fn evaluate(c: &SimCluster, ops: &[Op], reads: &FinalReads, workload_ms: (u64, u64), rto: Duration, rpo_entries: u64) -> Checks {
    let mut checks = Checks::default();
    let up: Vec<String> = site_names().into_iter().filter(|s| c.is_up(s)).map(String::from).collect();
    let destroyed: BTreeSet<(String, String)> =
        ops.iter().filter(|o| o.kind == OpKind::Destroy && o.result.is_ok()).map(|o| (o.tenant.clone(), o.contract_id.clone())).collect();
    // A destroy that got no answer may still have taken effect: such a
    // contract may be readable or destroyed, both are right.
    let maybe_destroyed: BTreeSet<(String, String)> =
        ops.iter().filter(|o| o.kind == OpKind::Destroy && o.result.is_err()).map(|o| (o.tenant.clone(), o.contract_id.clone())).collect();
    let puts: Vec<&Op> = ops.iter().filter(|o| o.kind == OpKind::Put).collect();
    checks.acked_puts = puts.iter().filter(|o| o.result.is_ok()).count();
    checks.failed_requests = ops.iter().filter(|o| o.result.is_err()).count();

    // Stored versions everywhere (current and quarantined).
    let mut stored: Vec<(String, VersionRecord)> = Vec::new();
    for site in site_names() {
        let meta = MetaStore::new(Arc::new(c.disks(site).replicator.clone()));
        for v in meta.all_versions().unwrap_or_default() {
            stored.push((site.to_string(), v));
        }
        for q in meta.all_quarantined().unwrap_or_default() {
            checks.quarantined.push(format!("{}/{} v{} written by {} under epoch {}, kept at {site}", q.tenant, q.contract_id, q.version, q.origin, q.epoch));
            if let Some(v) = q.record {
                stored.push((site.to_string(), v));
            }
        }
    }

    // Lost: an acknowledged write the shard's owner (if running) cannot serve.
    let mut lost_keys = BTreeSet::new();
    for op in puts.iter().filter(|o| o.result.is_ok()) {
        let key = (op.tenant.clone(), op.contract_id.clone());
        if destroyed.contains(&key) {
            continue;
        }
        let ack = op.result.as_ref().expect("filtered on ok");
        let Some(owner) = reads.owners.get(ack.shard as usize) else { continue };
        if !up.contains(owner) {
            continue;
        }
        match reads.reads.get(&(owner.clone(), key.0.clone(), key.1.clone())) {
            Some(Ok(v)) if *v >= ack.version => {}
            Some(Err(e)) if maybe_destroyed.contains(&key) && e.contains("destroyed") => {}
            other => {
                lost_keys.insert(key.clone());
                checks.lost.push(format!(
                    "{}/{} v{} acknowledged by {} at {} ms; owner {owner} has {}",
                    op.tenant,
                    op.contract_id,
                    ack.version,
                    ack.origin,
                    op.done_ms,
                    match other {
                        Some(Ok(v)) => format!("v{v}"),
                        Some(Err(e)) => e.clone(),
                        None => "not been asked".into(),
                    }
                ))
            }
        }
    }
    let lost_ok = checks.lost.len() as u64 <= rpo_entries;
    checks.invariants.push(Invariant {
        name: "no acknowledged write lost beyond the RPO".into(),
        passed: lost_ok,
        details: if checks.lost.is_empty() {
            vec![format!("all {} acknowledged writes are at their owner", checks.acked_puts)]
        } else {
            let mut d = vec![format!("{} lost, the objective allows {rpo_entries}", checks.lost.len())];
            d.extend(checks.lost.iter().cloned());
            d
        },
    });

    // Two writers: per shard, writes in time order must never go back to
    // an older epoch, and one epoch has one writer.
    let mut by_shard: BTreeMap<u32, Vec<(u64, u64, String, String)>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (_, v) in &stored {
        if seen.insert((v.tenant.clone(), v.contract_id.clone(), v.version, v.origin.clone(), v.epoch)) {
            by_shard.entry(v.shard).or_default().push((v.created_unix_ms, v.epoch, v.origin.clone(), format!("{}/{} v{}", v.tenant, v.contract_id, v.version)));
        }
    }
    let mut two = Vec::new();
    for (shard, mut writes) in by_shard {
        writes.sort();
        let mut writer_of: BTreeMap<u64, String> = BTreeMap::new();
        let mut highest: Option<(u64, String, u64)> = None;
        for (at, epoch, origin, what) in &writes {
            if let Some(w) = writer_of.get(epoch).filter(|w| *w != origin) {
                two.push(format!("shard {shard}: epoch {epoch} written by both {w} and {origin} ({what})"));
            }
            writer_of.insert(*epoch, origin.clone());
            match &highest {
                Some((e, o, t)) if epoch < e => two.push(format!(
                    "shard {shard}: {origin} accepted {what} under epoch {epoch} at {at} ms, after {o} had accepted a write under epoch {e} at {t} ms"
                )),
                _ => highest = Some((*epoch, origin.clone(), *at)),
            }
        }
    }
    checks.invariants.push(invariant(
        "never two sites accepting writes for one shard",
        two,
        format!("{} stored writes checked, epochs never go back in time", seen.len()),
    ));

    // Convergence among the running sites.
    let mut diff = Vec::new();
    let answered: Vec<&String> = up.iter().filter(|s| reads.digests.contains_key(*s)).collect();
    for s in up.iter().filter(|s| !reads.digests.contains_key(*s)) {
        diff.push(format!("site {s} did not report its digests"));
    }
    if let Some(first) = answered.first() {
        for other in &answered[1..] {
            let (a, b) = (&reads.digests[*first], &reads.digests[*other]);
            let shards: Vec<String> = (0..a.len().max(b.len())).filter(|i| a.get(*i) != b.get(*i)).map(|i| i.to_string()).collect();
            if !shards.is_empty() {
                diff.push(format!("{first} and {other} differ on shards {}", shards.join(",")));
            }
        }
    }
    checks.invariants.push(invariant(
        "running sites converge to identical per-shard digests",
        diff,
        format!("{} running sites hold identical digests", answered.len()),
    ));

    // Every live contract reads back (decrypts, authenticates) everywhere;
    // destroyed ones nowhere.
    let mut unreadable = Vec::new();
    let mut readable = Vec::new();
    for ((site, tenant, id), read) in &reads.reads {
        let key = (tenant.clone(), id.clone());
        match (destroyed.contains(&key), read) {
            (true, Ok(v)) => readable.push(format!("{tenant}/{id} (destroyed) read as v{v} at {site}")),
            (true, Err(e)) if !e.contains("destroyed") => unreadable.push(format!("{tenant}/{id} at {site}: {e}")),
            (false, Err(e)) if maybe_destroyed.contains(&key) && e.contains("destroyed") => {}
            // A write that never arrived is counted (against the RPO) above;
            // this check is about what a site does hold.
            (false, Err(e)) if lost_keys.contains(&key) && e.contains("not found") => {}
            (false, Err(e)) => unreadable.push(format!("{tenant}/{id} at {site}: {e}")),
            _ => {}
        }
    }
    checks.invariants.push(invariant(
        "every stored contract decrypts and matches its checksums",
        unreadable,
        format!("{} reads across the running sites authenticated", reads.reads.len()),
    ));
    checks.invariants.push(invariant(
        "destroyed contracts cannot be read anywhere",
        readable,
        format!("{} destroyed contracts refused everywhere", destroyed.len()),
    ));

    // A move left half-done leaves its shards without a writer: the
    // leader must have finished or undone every one by the end.
    checks.invariants.push(invariant(
        "no shard is left drained without a writer",
        reads.drained.clone(),
        format!("all {} shards have a writer", reads.owners.len()),
    ));

    // Duplicates: one request, more than one stored version.
    let mut versions: BTreeMap<(String, String), BTreeSet<u64>> = BTreeMap::new();
    for (_, v) in &stored {
        versions.entry((v.tenant.clone(), v.contract_id.clone())).or_default().insert(v.version);
    }
    checks.duplicated = versions.iter().filter(|(_, v)| v.len() > 1).map(|((t, c), v)| format!("{t}/{c}: {} versions", v.len())).collect();

    // RTO: the longest gap without an acknowledged write, per tenant.
    let (start, end) = workload_ms;
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for op in &puts {
        last.entry(op.tenant.as_str()).or_insert(start);
    }
    for op in puts.iter().filter(|o| o.result.is_ok()) {
        let prev = last.insert(op.tenant.as_str(), op.done_ms).unwrap_or(start);
        let gap = op.done_ms.saturating_sub(prev);
        if gap > checks.rto_ms {
            checks.rto_ms = gap;
            checks.rto_tenant = op.tenant.clone();
        }
    }
    for (tenant, at) in &last {
        if end.saturating_sub(*at) > checks.rto_ms {
            checks.rto_ms = end.saturating_sub(*at);
            checks.rto_tenant = tenant.to_string();
        }
    }
    checks.invariants.push(invariant(
        "writes resume within the RTO",
        if checks.rto_ms <= rto.as_millis() as u64 {
            Vec::new()
        } else {
            vec![format!("{} went {} ms without an acknowledged write (objective {} s)", checks.rto_tenant, checks.rto_ms, rto.as_secs())]
        },
        format!("longest gap {} ms ({}), objective {} s", checks.rto_ms, checks.rto_tenant, rto.as_secs()),
    ));
    checks
}
