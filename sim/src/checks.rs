//! The invariants a drill checks on its recorded history and on what every
//! site stores at the end:
//! - no acknowledged write lost beyond the scenario's RPO (entries, seconds);
//! - never two sites accepting writes for one shard at the same time;
//! - after healing, every running site holds identical per-shard digests
//!   (not checked when only one site runs);
//! - every acknowledged contract reads back at every running site as the
//!   client wrote it (its bytes and its SM4-sealed field), apart from what
//!   the RPO lost; a replica that lacks a write is told apart from one that
//!   serves it wrong;
//! - destroyed contracts cannot be read anywhere;
//! - writes resume within the RTO after every fault;
//! - every shard has a writer at the end.
//!
//! Each invariant names the data it was checked on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tandem_net::Transport;
use tandem_proto::replicator as pb;
use tandem_replicator::client::ReplicatorClient;
use tandem_replicator::meta::MetaStore;
use tandem_replicator::model::VersionRecord;

use sha2::Digest as _;

use crate::cluster::{replicator_addr, site_names, SimCluster};
use crate::workload::{Op, OpKind};

/// The agreed state at the end, from the controller store that holds the
/// newest generation (then the longest audit log): after a DR activation
/// the old city's stores still say what the old generation agreed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FinalState {
    /// The site whose store it was read from, and its generation.
    pub from_site: String,
    pub generation: u64,
    /// Shard → owner.
    pub owners: Vec<String>,
    /// Shards still drained (no writer) at the end: "shard 3 of a towards b".
    pub drained: Vec<String>,
}

/// One acknowledged contract as a site served it at the end.
#[derive(Clone, Debug, Default)]
pub struct ReadBack {
    pub version: u64,
    /// File name → BLAKE3 (hex) of the decrypted bytes.
    pub files: BTreeMap<String, String>,
    /// The PII fields, decrypted (SM4) by the site.
    pub pii: BTreeMap<String, String>,
}

/// One end-state write: a put to each shard, sent to its owner.
#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    pub shard: u32,
    pub tenant: String,
    /// The site that acknowledged it, or why none did.
    pub result: Result<String, String>,
}

/// What the checker client read from the running sites at the end.
#[derive(Clone, Debug, Default)]
pub struct FinalReads {
    /// Site → per-shard digests (sites that answered).
    pub digests: BTreeMap<String, Vec<String>>,
    /// (site, tenant, contract) → what the site served, or the error.
    pub reads: BTreeMap<(String, String, String), Result<ReadBack, String>>,
    /// After the reads: one write to every shard, at its owner.
    pub probes: Vec<Probe>,
}

/// A tenant name that lands in `shard` (for the end-state writes).
pub fn probe_tenant(shard: u32, shards: u32) -> String {
    (0u64..).map(|k| format!("probe-{k}")).find(|t| tandem_controller::state::shard_of(t, shards) == shard).expect("some tenant name lands in every shard")
}

/// Reads everything the checks need, from a client host: each running
/// site's digests and every acknowledged contract at every running site
/// (decrypted by the site, hashed here); then writes once to every shard
/// through its owner, as a platform client would.
pub async fn read_final(ops: Vec<Op>, sites: Vec<String>, owners: Vec<String>) -> FinalReads {
    let mut out = FinalReads::default();
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
            let read = tokio::time::timeout(Duration::from_secs(10), client.get_hashed(&replicator_addr(site), tenant, id)).await;
            let read = match read {
                Ok(Ok((info, files))) => Ok(ReadBack { version: info.version, files, pii: info.pii_fields.into_iter().collect() }),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no answer".into()),
            };
            out.reads.insert((site.clone(), tenant.clone(), id.clone()), read);
        }
    }
    let shards = owners.len() as u32;
    for (shard, owner) in owners.iter().enumerate() {
        let tenant = probe_tenant(shard as u32, shards);
        let header = tandem_replicator::write::PutHeader { tenant: tenant.clone(), contract_id: format!("end-{shard}"), ..Default::default() };
        let files = vec![("probe.txt".to_string(), bytes::Bytes::from_static(b"end-state write"))];
        // Running sites only, the owner first: a shard whose owner is down
        // and that no other site took has no writer.
        let mut order: Vec<&str> = sites.iter().filter(|s| *s == owner).map(String::as_str).collect();
        order.extend(sites.iter().filter(|s| *s != owner).map(String::as_str));
        let mut result = Err("no site tried".to_string());
        for site in order {
            match tokio::time::timeout(Duration::from_secs(10), client.put_bytes(&replicator_addr(site), &header, &files)).await {
                Ok(Ok(r)) => {
                    result = Ok(r.contract.map(|c| c.origin).unwrap_or_default());
                    break;
                }
                Ok(Err(e)) => result = Err(format!("{site}: {e}")),
                Err(_) => result = Err(format!("{site}: no answer within 10 s")),
            }
        }
        out.probes.push(Probe { shard: shard as u32, tenant, result });
    }
    out
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Invariant {
    pub name: String,
    pub passed: bool,
    /// False when there was nothing to check it on (one running site has
    /// no peer to compare digests with): shown as NOT CHECKED, not as a pass.
    pub checked: bool,
    /// What data it was checked on.
    pub on: String,
    /// What was found (each violation, or a summary when it passed).
    pub details: Vec<String>,
}

impl Invariant {
    pub fn verdict(&self) -> &'static str {
        match (self.checked, self.passed) {
            (false, _) => "NOT CHECKED",
            (true, true) => "PASS",
            (true, false) => "FAIL",
        }
    }

    /// A safety invariant (data, writers) as opposed to a timing objective.
    pub fn is_safety(&self) -> bool {
        !(self.name.contains("RTO") || self.name.contains("failover objective") || self.name.contains("refused"))
    }
}

/// What one site holds at the end and what the checker read back from it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SiteInventory {
    pub site: String,
    pub running: bool,
    /// Contracts and files in its metadata (current versions).
    pub contracts: usize,
    pub files: usize,
    /// SHA-256 over its per-shard digests (Merkle over contract id,
    /// version and ciphertext hash), as it reported them; empty when it
    /// did not report.
    pub ciphertext_digest: String,
    /// Acknowledged contracts read back (decrypted by the site) and
    /// compared byte for byte with what the client sent, and how many matched.
    pub decrypted: usize,
    pub matched: usize,
    /// SM4-sealed PII fields returned decrypted and equal to what was sent.
    pub pii_round_tripped: usize,
    /// Acknowledged contracts it does not hold (lost within the RPO, or not
    /// arrived), or holds in another form.
    pub missing: usize,
    pub corrupt: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Checks {
    pub invariants: Vec<Invariant>,
    /// The worst fault's RTO (a shard that never came back counts to the
    /// end of the run), and which fault.
    pub rto_ms: u64,
    pub rto_fault: String,
    /// Per fault or command: the shards it stopped and when each wrote again.
    pub faults: Vec<crate::recovery::FaultRecovery>,
    /// Longest time a tenant went without an acknowledged write (counted
    /// to the end of the run when its last request failed), and which.
    pub longest_gap_ms: u64,
    pub longest_gap_tenant: String,
    /// Acknowledged writes no running site can serve where they should be.
    pub lost: Vec<String>,
    /// How far back before the fault that lost them the lost writes reach.
    pub rpo_ms: u64,
    /// Replicas lacking an acknowledged write that is within the RPO.
    pub missing_within_rpo: Vec<String>,
    /// Contracts stored more than once (a retried write).
    pub duplicated: Vec<String>,
    /// Writes moved aside as divergent, per site.
    pub quarantined: Vec<String>,
    pub acked_puts: usize,
    pub failed_requests: usize,
    pub sites: Vec<SiteInventory>,
    pub final_state: FinalState,
    pub probes: Vec<Probe>,
}

impl Checks {
    /// Every checked invariant holds.
    pub fn passed(&self) -> bool {
        self.invariants.iter().all(|i| i.passed || !i.checked)
    }
}

fn invariant(name: &str, on: String, violations: Vec<String>, ok: String) -> Invariant {
    let passed = violations.is_empty();
    Invariant { name: name.into(), passed, checked: true, on, details: if passed { vec![ok] } else { violations } }
}

/// Simulated milliseconds as the report's one time base.
pub fn t(ms: u64) -> String {
    format!("T+{:.3} s", ms as f64 / 1000.0)
}

/// Simulated milliseconds of a site's wall-clock stamp (unix ms).
fn rel(unix_ms: u64) -> u64 {
    unix_ms.saturating_sub(crate::cluster::SIM_EPOCH_UNIX_S * 1000)
}

/// When the run's phases ended (simulated ms since it began).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Window {
    pub workload_start_ms: u64,
    pub workload_end_ms: u64,
    /// After healing and settling, when the checks began.
    pub run_end_ms: u64,
}

/// What the client sent with request `op`: file BLAKE3 and the ID card.
fn sent(op: &Op) -> (String, String) {
    (blake3::hash(&crate::workload::body(op.n, op.size)).to_hex().to_string(), crate::workload::id_card(op.n))
}

/// Evaluates every invariant.
pub fn evaluate(
    c: &SimCluster,
    ops: &[Op],
    reads: &FinalReads,
    state: &FinalState,
    window: Window,
    goals: &crate::scenario::Goals,
    faults: Vec<crate::recovery::FaultRecovery>,
) -> Checks {
    let mut checks = Checks { final_state: state.clone(), probes: reads.probes.clone(), ..Default::default() };
    let up: Vec<String> = site_names().into_iter().filter(|s| c.is_up(s)).map(String::from).collect();
    let destroyed: BTreeSet<(String, String)> =
        ops.iter().filter(|o| o.kind == OpKind::Destroy && o.result.is_ok()).map(|o| (o.tenant.clone(), o.contract_id.clone())).collect();
    // A destroy that got no answer may still have taken effect: such a
    // contract may be readable or destroyed, both are right.
    let maybe_destroyed: BTreeSet<(String, String)> =
        ops.iter().filter(|o| o.kind == OpKind::Destroy && o.result.is_err()).map(|o| (o.tenant.clone(), o.contract_id.clone())).collect();
    let puts: Vec<&Op> = ops.iter().filter(|o| o.kind == OpKind::Put).collect();
    let acked: Vec<&Op> = puts.iter().copied().filter(|o| o.result.is_ok()).collect();
    checks.acked_puts = acked.len();
    checks.failed_requests = ops.iter().filter(|o| o.result.is_err()).count();
    let rpo_entries = goals.rpo_entries.value;

    // Stored versions everywhere (current and quarantined).
    let mut stored: Vec<(String, VersionRecord)> = Vec::new();
    let mut inventory: BTreeMap<String, SiteInventory> = BTreeMap::new();
    for site in site_names() {
        let meta = MetaStore::new(Arc::new(c.disks(site).replicator.clone()));
        let versions = meta.all_versions().unwrap_or_default();
        let contracts: BTreeSet<(&str, &str)> = versions.iter().map(|v| (v.tenant.as_str(), v.contract_id.as_str())).collect();
        let digest = reads.digests.get(site).map(|d| crate::scenario::hex(&sha2::Sha256::digest(d.join("\n").as_bytes()))).unwrap_or_default();
        inventory.insert(
            site.to_string(),
            SiteInventory {
                site: site.to_string(),
                running: up.iter().any(|u| u == site),
                contracts: contracts.len(),
                files: versions.iter().map(|v| v.files.len()).sum(),
                ciphertext_digest: digest,
                ..Default::default()
            },
        );
        for v in versions {
            stored.push((site.to_string(), v));
        }
        for q in meta.all_quarantined().unwrap_or_default() {
            checks.quarantined.push(format!("{}/{} v{} written by {} under epoch {}, kept at {site}", q.tenant, q.contract_id, q.version, q.origin, q.epoch));
            if let Some(v) = q.record {
                stored.push((site.to_string(), v));
            }
        }
    }

    // What the client sent, computed once per write (not once per site).
    let sent_by: BTreeMap<u64, (String, String)> = acked.iter().map(|o| (o.n, sent(o))).collect();
    // What each running site served, against what the client sent.
    let served = |site: &str, op: &Op| -> Served {
        let key = (op.tenant.clone(), op.contract_id.clone());
        match reads.reads.get(&(site.to_string(), key.0.clone(), key.1.clone())) {
            None => Served::NotAsked,
            Some(Ok(r)) => {
                let (file, card) = sent_by.get(&op.n).cloned().unwrap_or_else(|| sent(op));
                let ack_version = op.result.as_ref().map(|a| a.version).unwrap_or(0);
                if r.version < ack_version {
                    Served::Missing(format!("v{} (acknowledged v{ack_version})", r.version))
                } else if r.files.values().next() != Some(&file) || r.files.len() != 1 {
                    Served::Corrupt("its file's bytes differ from what the client sent".into())
                } else if r.pii.get(crate::workload::PII_FIELD) != Some(&card) {
                    Served::Corrupt("its SM4-sealed ID-card field differs from what the client sent".into())
                } else {
                    Served::Same
                }
            }
            Some(Err(e)) if e.contains("destroyed") && (destroyed.contains(&key) || maybe_destroyed.contains(&key)) => Served::Destroyed,
            Some(Err(e)) if e.contains("not found") || e.contains("no such") => Served::Missing(e.clone()),
            Some(Err(e)) => Served::Corrupt(e.clone()),
        }
    };

    // Lost: an acknowledged write its shard's final owner cannot serve (or,
    // with the owner down, no running site can).
    let mut lost_keys = BTreeSet::new();
    let site_faults: Vec<u64> = faults.iter().filter(|f| f.what.starts_with("fault:")).map(|f| f.at_ms).collect();
    for op in &acked {
        let key = (op.tenant.clone(), op.contract_id.clone());
        if destroyed.contains(&key) {
            continue;
        }
        let ack = op.result.as_ref().expect("filtered on ok");
        let owner = state.owners.get(ack.shard as usize).cloned().unwrap_or_default();
        let asked: Vec<String> = if up.contains(&owner) { vec![owner.clone()] } else { up.clone() };
        let answers: Vec<(String, Served)> = asked.iter().map(|s| (s.clone(), served(s, op))).collect();
        let held = answers.iter().any(|(_, a)| matches!(a, Served::Same | Served::Destroyed | Served::Corrupt(_)));
        if held || answers.is_empty() {
            continue;
        }
        lost_keys.insert(key.clone());
        // How far back before the fault that lost it.
        let fault = site_faults.iter().find(|f| **f >= op.done_ms).copied();
        checks.rpo_ms = checks.rpo_ms.max(fault.map_or(0, |f| f - op.done_ms));
        let seen: Vec<String> = answers.iter().map(|(s, a)| format!("{s}: {}", a.describe())).collect();
        checks.lost.push(format!(
            "{}/{} v{} acknowledged by {} at {}{}; {}",
            op.tenant,
            op.contract_id,
            ack.version,
            ack.origin,
            t(op.done_ms),
            fault.map_or(String::new(), |f| format!(" ({:.3} s before the fault at {})", (f - op.done_ms) as f64 / 1000.0, t(f))),
            seen.join(", ")
        ));
    }
    let rpo_s = goals.rpo_s.value;
    let lost_ok = checks.lost.len() as u64 <= rpo_entries && checks.rpo_ms as f64 <= rpo_s * 1000.0;
    checks.invariants.push(Invariant {
        name: "no acknowledged write lost beyond the RPO".into(),
        passed: lost_ok,
        checked: true,
        on: format!(
            "the client's {} acknowledged puts, read at their shard's final owner ({} agreed in generation {}) or, with it down, at every running site",
            checks.acked_puts, state.from_site, state.generation
        ),
        details: if checks.lost.is_empty() {
            vec![format!("all {} acknowledged writes are where they belong", checks.acked_puts)]
        } else {
            let mut d = vec![format!(
                "{} lost reaching {:.3} s before their fault; the objective allows {rpo_entries} entries and {rpo_s} s",
                checks.lost.len(),
                checks.rpo_ms as f64 / 1000.0
            )];
            d.extend(checks.lost.iter().cloned());
            d
        },
    });

    // Two writers: per shard, writes in time order must never go back to
    // an older epoch, and one epoch has one writer.
    let mut by_shard: BTreeMap<u32, Vec<(u64, u64, String, String)>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    // Each write's stamp, taken by its origin's clock, mapped back to when
    // it happened (the drill may have skewed that clock): in the order of
    // the origin's own log, which a step back cannot reorder.
    let mut in_log_order: BTreeMap<(String, String, u64, String), u64> = BTreeMap::new();
    for site in site_names() {
        let meta = MetaStore::new(Arc::new(c.disks(site).replicator.clone()));
        let mut own = Vec::new();
        for seq in 1..=meta.log_head().unwrap_or(0) {
            if let Ok(Some(e)) = meta.log_entry(seq) {
                if let tandem_replicator::model::Change::Put(v) = &e.change {
                    if v.origin == site {
                        own.push(((v.tenant.clone(), v.contract_id.clone(), v.version, v.origin.clone()), v.created_unix_ms));
                    }
                }
            }
        }
        let stamps: Vec<u64> = own.iter().map(|(_, at)| *at).collect();
        for ((key, _), real) in own.into_iter().zip(c.disks(site).clock.to_real_in_order(&stamps)) {
            in_log_order.insert(key, real);
        }
    }
    let real_ms = |v: &VersionRecord| match in_log_order.get(&(v.tenant.clone(), v.contract_id.clone(), v.version, v.origin.clone())) {
        Some(real) => *real,
        None => match site_names().into_iter().find(|s| *s == v.origin) {
            Some(site) => c.disks(site).clock.to_real_ms(v.created_unix_ms),
            None => rel(v.created_unix_ms),
        },
    };
    for (_, v) in &stored {
        if seen.insert((v.tenant.clone(), v.contract_id.clone(), v.version, v.origin.clone(), v.epoch)) {
            by_shard.entry(v.shard).or_default().push((real_ms(v), v.epoch, v.origin.clone(), format!("{}/{} v{}", v.tenant, v.contract_id, v.version)));
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
                Some((e, o, at_e)) if epoch < e => two.push(format!(
                    "shard {shard}: {origin} accepted {what} under epoch {epoch} at {}, after {o} had accepted a write under epoch {e} at {}",
                    t(*at),
                    t(*at_e)
                )),
                _ => highest = Some((*epoch, origin.clone(), *at)),
            }
        }
    }
    checks.invariants.push(invariant(
        "never two sites accepting writes for one shard",
        format!("every version stored at any site, current or quarantined ({} distinct writes), in the order they were accepted (each owner's stamp mapped back through its clock's skew)", seen.len()),
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
    let mut converge = invariant(
        "running sites converge to identical per-shard digests",
        format!("the per-shard digests reported by the running sites ({})", up.join(", ")),
        diff,
        format!("{} running sites hold identical digests", answered.len()),
    );
    if up.len() < 2 && converge.passed {
        converge.checked = false;
        converge.details = vec![format!("only {} running site(s) at the end ({}): nothing to compare", up.len(), up.join(", "))];
    }
    checks.invariants.push(converge);

    // Every acknowledged contract reads back, as the client wrote it, at
    // every running site; destroyed ones nowhere.
    let mut corrupt = Vec::new();
    let mut missing = Vec::new();
    let mut readable = Vec::new();
    for site in &up {
        let inv = inventory.get_mut(site).expect("every site has an inventory");
        for op in &acked {
            let key = (op.tenant.clone(), op.contract_id.clone());
            let answer = served(site, op);
            if destroyed.contains(&key) {
                if let Served::Same = answer {
                    readable.push(format!("{}/{} (destroyed) read at {site}", op.tenant, op.contract_id));
                }
                continue;
            }
            match answer {
                Served::Same => {
                    inv.decrypted += 1;
                    inv.matched += 1;
                    inv.pii_round_tripped += 1;
                }
                Served::Destroyed | Served::NotAsked => {}
                Served::Missing(e) => {
                    inv.missing += 1;
                    let line = format!("{}/{} at {site}: {e}", op.tenant, op.contract_id);
                    if lost_keys.contains(&key) {
                        checks.missing_within_rpo.push(line);
                    } else {
                        missing.push(line);
                    }
                }
                Served::Corrupt(e) => {
                    inv.decrypted += 1;
                    inv.corrupt += 1;
                    corrupt.push(format!("{}/{} at {site}: {e}", op.tenant, op.contract_id));
                }
            }
        }
    }
    checks.invariants.push(invariant(
        "every acknowledged contract reads back at every running site as the client wrote it",
        format!(
            "{} reads: each acknowledged, undestroyed contract at each running site, decrypted by the site and compared with the bytes and the SM4-sealed ID-card field the client sent",
            reads.reads.len()
        ),
        corrupt,
        format!(
            "{} reads decrypted and equal to the client's bytes and ID-card field; {} missing within the RPO",
            inventory.values().map(|i| i.matched).sum::<usize>(),
            checks.missing_within_rpo.len()
        ),
    ));
    checks.invariants.push(invariant(
        "every running site holds every acknowledged write the RPO did not lose",
        "the same reads: a contract a running site does not serve, although its owner kept it".into(),
        missing,
        "no running site lacks a write its owner kept".into(),
    ));
    checks.invariants.push(invariant(
        "destroyed contracts cannot be read anywhere",
        format!("the {} contracts the client destroyed, read at every running site", destroyed.len()),
        readable,
        format!("{} destroyed contracts refused everywhere", destroyed.len()),
    ));

    // The end state: every shard has a writer. A move left half-done leaves
    // its shards drained; a shard whose owner stayed down has none either.
    let mut writerless = state.drained.clone();
    for p in &reads.probes {
        if let Err(e) = &p.result {
            writerless.push(format!(
                "shard {} (owner {}): an end-state write was refused: {e}",
                p.shard,
                state.owners.get(p.shard as usize).cloned().unwrap_or_default()
            ));
        }
    }
    checks.invariants.push(invariant(
        "every shard has a writer at the end",
        format!(
            "the shard map of generation {} (read from {}'s store) and one write to each of its {} shards after the checks, sent to its owner",
            state.generation,
            state.from_site,
            state.owners.len()
        ),
        writerless,
        format!("all {} shards took an end-state write", reads.probes.len()),
    ));

    // Duplicates: one request, more than one stored version.
    let mut versions: BTreeMap<(String, String), BTreeSet<u64>> = BTreeMap::new();
    for (_, v) in &stored {
        versions.entry((v.tenant.clone(), v.contract_id.clone())).or_default().insert(v.version);
    }
    checks.duplicated = versions.iter().filter(|(_, v)| v.len() > 1).map(|((t, c), v)| format!("{t}/{c}: {} versions", v.len())).collect();

    // The longest gap per tenant: counted to the end of the run when the
    // tenant's last request failed (its writes never came back).
    let mut last: BTreeMap<&str, (u64, bool)> = BTreeMap::new();
    for op in &puts {
        last.entry(op.tenant.as_str()).or_insert((window.workload_start_ms, true));
    }
    let mut sorted = puts.clone();
    sorted.sort_by_key(|o| (o.done_ms, o.n));
    for op in &sorted {
        let entry = last.get_mut(op.tenant.as_str()).expect("every tenant was entered");
        if op.result.is_ok() {
            let gap = op.done_ms.saturating_sub(entry.0);
            if gap > checks.longest_gap_ms {
                checks.longest_gap_ms = gap;
                checks.longest_gap_tenant = op.tenant.clone();
            }
            *entry = (op.done_ms, true);
        } else {
            entry.1 = false;
        }
    }
    for (tenant, (at, ok)) in &last {
        let until = if *ok { window.workload_end_ms } else { window.run_end_ms };
        if until.saturating_sub(*at) > checks.longest_gap_ms {
            checks.longest_gap_ms = until.saturating_sub(*at);
            checks.longest_gap_tenant = tenant.to_string();
        }
    }

    // RTO: per fault, to the first acknowledged write of every shard it
    // stopped; a shard that never came back counts to the end of the run.
    let rto_ms = goals.rto_s.value * 1000;
    let mut late = Vec::new();
    for f in &faults {
        let took = f.rto_or(window.run_end_ms);
        if took > checks.rto_ms || checks.rto_fault.is_empty() {
            checks.rto_ms = took;
            checks.rto_fault = format!("{} at {}", f.what, t(f.at_ms));
        }
        if f.rto_ms.is_none() || took > rto_ms {
            late.push(format!(
                "{} at {}: shard {} {}",
                f.what,
                t(f.at_ms),
                f.slowest_shard.map_or("?".into(), |s| s.to_string()),
                match f.rto_ms {
                    Some(ms) => format!("wrote again after {:.3} s", ms as f64 / 1000.0),
                    None => "never wrote again before the end of the run".into(),
                }
            ));
        }
    }
    checks.invariants.push(invariant(
        "writes resume within the RTO",
        format!(
            "per fault or command ({}): from the event to the first acknowledged write of every shard whose first request after it failed or took over {} ms",
            faults.len(),
            crate::recovery::SLOW_MS
        ),
        late,
        format!("slowest {:.3} s ({}), objective {} s", checks.rto_ms as f64 / 1000.0, checks.rto_fault, goals.rto_s.value),
    ));
    checks.faults = faults;
    checks.sites = inventory.into_values().collect();
    checks
}

/// What one running site served for one acknowledged contract.
enum Served {
    Same,
    Destroyed,
    Missing(String),
    Corrupt(String),
    NotAsked,
}

impl Served {
    fn describe(&self) -> String {
        match self {
            Served::Same => "as sent".into(),
            Served::Destroyed => "destroyed".into(),
            Served::Missing(e) | Served::Corrupt(e) => e.clone(),
            Served::NotAsked => "not asked".into(),
        }
    }
}
