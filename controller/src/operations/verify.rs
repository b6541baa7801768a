//! Verify and repair (`tandem verify [--repair]`, the drill): compare what
//! every site stores, shard by shard, against the shard's owner, and
//! optionally repair the differences from the owner.
//!
//! Every site must answer: a verify that skipped a site could not say "no
//! difference". Only differing shards' inventories are fetched.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tandem_net::Transport;
use tandem_proto::replicator as pb;

use super::{replication_client as client, Hooks, OpError};
use crate::client::ControlClient;
use crate::state::ClusterState;
use crate::status::NodeStatus;

/// How one site differs from the owner for one contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The owner has it, this site does not.
    Missing,
    /// This site has it, the owner does not.
    Extra,
    /// Both have it, with a different version, destroyed state or content.
    Different,
    /// The site's stored file does not match its own record (found by a
    /// deep verify, which reads every file back).
    Corrupt,
    /// Written at this site under an epoch that has since moved, and never
    /// received by the shard's current owner: kept for reconciliation,
    /// never repaired automatically.
    Divergent,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub shard: u32,
    pub owner: String,
    pub site: String,
    pub tenant: String,
    pub contract_id: String,
    pub kind: Kind,
    /// e.g. "owner has version 3, site has version 2".
    pub detail: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub sites: Vec<String>,
    pub shards: u32,
    pub shards_differing: u32,
    pub differences: Vec<Difference>,
    /// Files and ciphertext bytes read back by a deep verify (all sites).
    pub files_checked: u64,
    pub bytes_checked: u64,
    /// Filled by [`repair`]: one per difference.
    pub repairs: Vec<Repair>,
}

impl Report {
    /// Differences that are still there: all of them without a repair,
    /// else those whose repair did not fix them.
    pub fn unresolved(&self) -> usize {
        if self.repairs.is_empty() {
            return self.differences.len();
        }
        self.repairs.iter().filter(|r| r.outcome != RepairOutcome::Repaired).count()
    }
}

/// What the repair of one difference did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RepairOutcome {
    /// The site now holds the owner's (or a sound) copy.
    Repaired,
    /// Left for a person on purpose: an extra contract, a divergent write.
    NotRepaired,
    /// The repair was tried and did not work.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Repair {
    pub site: String,
    pub tenant: String,
    pub contract_id: String,
    pub outcome: RepairOutcome,
    /// What was done or why not, e.g. "repaired from a (version 3)".
    pub detail: String,
}

impl std::fmt::Display for Repair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} at {}: {}", self.tenant, self.contract_id, self.site, self.detail)
    }
}

/// What the caller asks for.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// Replicator addresses as SITE=HOST:PORT, over those the replicators
    /// report in their heartbeats.
    pub replicators: Vec<String>,
    /// Also read back every stored file at every site.
    pub deep: bool,
    /// Copy the owner's version to every site that misses it or differs.
    pub repair: bool,
}

/// Verifies every site against each shard's owner, and repairs when asked
/// (each repair is one progress line).
pub async fn verify_cluster(client: &ControlClient, transport: &Transport, req: &Request, hooks: &mut impl Hooks) -> Result<Report, OpError> {
    let (_, status) = client.status().await?;
    let sites = site_replicators(&status, &req.replicators)?;
    let mut report = verify(transport, &sites, &status.cluster, req.deep).await.map_err(|e| OpError::Failed(e.to_string()))?;
    if req.repair && !report.differences.is_empty() {
        repair(transport, &sites, &mut report).await;
        for r in &report.repairs {
            hooks.progress(&r.to_string());
        }
    }
    Ok(report)
}

/// Every site's replicator address: from its latest heartbeat, or from
/// `overrides` (SITE=HOST:PORT). Every site must have one.
pub fn site_replicators(status: &NodeStatus, overrides: &[String]) -> Result<BTreeMap<String, String>, OpError> {
    let mut sites: BTreeMap<String, String> = BTreeMap::new();
    for h in &status.replicators {
        if status.cluster.sites.contains_key(&h.site) && !h.addr.is_empty() {
            sites.insert(h.site.clone(), h.addr.clone());
        }
    }
    for entry in overrides {
        let (site, addr) = entry.split_once('=').ok_or_else(|| OpError::Failed(format!("--replicators {entry}: expected SITE=HOST:PORT")))?;
        if !status.cluster.sites.contains_key(site) {
            return Err(OpError::Failed(format!("--replicators names site {site}, which the cluster does not know")));
        }
        sites.insert(site.to_string(), addr.to_string());
    }
    let unknown: Vec<&str> = status.cluster.sites.keys().filter(|s| !sites.contains_key(*s)).map(String::as_str).collect();
    if !unknown.is_empty() {
        return Err(OpError::Failed(format!(
            "no replicator address for site(s) {}: they have not sent a heartbeat to the controller (down?); pass --replicators SITE=HOST:PORT",
            unknown.join(", ")
        )));
    }
    Ok(sites)
}

#[derive(Debug, thiserror::Error)]
#[error("verify needs every site: {0}")]
pub struct VerifyError(pub String);

/// One bounded call to a site's replicator ([`super::replicator_call`]).
async fn call<T>(site: &str, fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> Result<T, VerifyError> {
    super::replicator_call(site, fut).await.map_err(VerifyError)
}

/// Compares every site (name → replicator address) with each shard's owner;
/// `deep` also reads back every stored file at every site.
pub async fn verify(transport: &Transport, sites: &BTreeMap<String, String>, cluster: &ClusterState, deep: bool) -> Result<Report, VerifyError> {
    let mut digests = BTreeMap::new();
    for (name, addr) in sites {
        let mut c = client(transport.channel(addr).map_err(|e| VerifyError(e.to_string()))?);
        let reply = call(name, c.digests(pb::DigestsRequest {})).await?;
        if reply.shard_digests.len() != cluster.shards.len() {
            return Err(VerifyError(format!("site {name} reports {} shards, the controller {}", reply.shard_digests.len(), cluster.shards.len())));
        }
        digests.insert(name.clone(), reply.shard_digests);
    }
    let mut report = Report { sites: sites.keys().cloned().collect(), shards: cluster.shards.len() as u32, ..Default::default() };
    for (shard, owner) in cluster.shards.iter().enumerate() {
        let shard = shard as u32;
        let Some(reference) = digests.get(&owner.owner).map(|d| &d[shard as usize]) else {
            return Err(VerifyError(format!("owner {} of shard {shard} is not among the sites", owner.owner)));
        };
        if digests.values().all(|d| &d[shard as usize] == reference) {
            continue;
        }
        report.shards_differing += 1;
        let mut inventories = BTreeMap::new();
        for (name, addr) in sites {
            let mut c = client(transport.channel(addr).map_err(|e| VerifyError(e.to_string()))?);
            let items = call(name, c.inventory(pb::InventoryRequest { shard })).await?.items;
            let by_id: BTreeMap<(String, String), pb::InventoryItem> = items.into_iter().map(|i| ((i.tenant.clone(), i.contract_id.clone()), i)).collect();
            inventories.insert(name.clone(), by_id);
        }
        let own = &inventories[&owner.owner];
        for (name, theirs) in &inventories {
            if name == &owner.owner {
                continue;
            }
            let diff = |key: &(String, String), kind: Kind, detail: String| Difference {
                shard,
                owner: owner.owner.clone(),
                site: name.clone(),
                tenant: key.0.clone(),
                contract_id: key.1.clone(),
                kind,
                detail,
            };
            for (key, o) in own {
                match theirs.get(key) {
                    None => report.differences.push(diff(key, Kind::Missing, format!("{} has version {}, {name} has nothing", owner.owner, o.version))),
                    Some(t) if t.digest != o.digest => report.differences.push(diff(
                        key,
                        Kind::Different,
                        format!("{} has version {}{}, {name} has version {}{}", owner.owner, o.version, destroyed(o), t.version, destroyed(t)),
                    )),
                    Some(_) => {}
                }
            }
            for key in theirs.keys().filter(|k| !own.contains_key(*k)) {
                report.differences.push(diff(key, Kind::Extra, format!("{name} has it, the owner {} has not", owner.owner)));
            }
        }
    }
    if deep {
        scrub_all(transport, sites, cluster, &mut report).await?;
    }
    for (name, addr) in sites {
        let mut c = client(transport.channel(addr).map_err(|e| VerifyError(e.to_string()))?);
        for e in call(name, c.divergent(pb::DivergentRequest {})).await?.entries {
            let detail = divergent_detail(name, &e);
            report.differences.push(Difference {
                shard: e.shard,
                owner: e.current_owner.clone(),
                site: name.clone(),
                tenant: e.tenant,
                contract_id: e.contract_id,
                kind: Kind::Divergent,
                detail,
            });
        }
    }
    Ok(report)
}

/// One line about a divergent write, quarantined or not yet.
pub fn divergent_detail(site: &str, e: &pb::DivergentEntry) -> String {
    let what = if e.version == 0 { "destroy".to_string() } else { format!("version {}", e.version) };
    if e.quarantined {
        format!(
            "QUARANTINED at {site}: {what} that {} wrote under epoch {}{}; {} owns the shard under epoch {}. Kept aside, not served: {}",
            e.origin,
            e.epoch,
            if e.seq > 0 { format!(" (its log entry {})", e.seq) } else { String::new() },
            e.current_owner,
            e.current_epoch,
            e.reason
        )
    } else {
        format!(
            "{site}'s log entry {} ({what}) was written under epoch {}; {} owns the shard under epoch {} and never received it (not quarantined yet: served here as current)",
            e.seq, e.epoch, e.current_owner, e.current_epoch
        )
    }
}

/// Adds every site's scrub problems to `report` as [`Kind::Corrupt`].
async fn scrub_all(transport: &Transport, sites: &BTreeMap<String, String>, cluster: &ClusterState, report: &mut Report) -> Result<(), VerifyError> {
    for (name, addr) in sites {
        let mut c = client(transport.channel(addr).map_err(|e| VerifyError(e.to_string()))?);
        let reply = call(name, c.scrub(pb::ScrubRequest {})).await?;
        report.files_checked += reply.files_checked;
        report.bytes_checked += reply.bytes_checked;
        for p in reply.problems {
            let (shard, owner) = cluster.shard_for(&p.tenant).map(|(n, s)| (n, s.owner.clone())).unwrap_or_default();
            report.differences.push(Difference {
                shard,
                owner,
                site: name.clone(),
                tenant: p.tenant,
                contract_id: p.contract_id,
                kind: Kind::Corrupt,
                detail: format!("version {} file {:?}: {}", p.version, p.file, p.problem),
            });
        }
    }
    Ok(())
}

fn destroyed(i: &pb::InventoryItem) -> &'static str {
    if i.destroyed {
        " (destroyed)"
    } else {
        ""
    }
}

/// Copies the owner's state to each site that misses it, differs or holds
/// a corrupt file; when the owner's own copy is corrupt, from a site whose
/// copy is sound. Extra contracts are reported, never deleted: only a
/// person may decide that a contract the owner lacks should go.
pub async fn repair(transport: &Transport, sites: &BTreeMap<String, String>, report: &mut Report) {
    let corrupt: std::collections::BTreeSet<(&str, &str, &str)> =
        report.differences.iter().filter(|d| d.kind == Kind::Corrupt).map(|d| (d.site.as_str(), d.tenant.as_str(), d.contract_id.as_str())).collect();
    let mut repairs = Vec::new();
    for d in &report.differences {
        let sound = |site: &str| !corrupt.contains(&(site, d.tenant.as_str(), d.contract_id.as_str()));
        let source = if sound(&d.owner) { Some(d.owner.as_str()) } else { sites.keys().map(String::as_str).find(|s| *s != d.site && sound(s)) };
        let (outcome, detail) = match d.kind {
            Kind::Extra => (RepairOutcome::NotRepaired, format!("not repaired (the owner {} lacks it; investigate before removing anything)", d.owner)),
            Kind::Divergent => (RepairOutcome::NotRepaired, format!("divergent write kept for reconciliation, not repaired ({})", d.detail)),
            Kind::Missing | Kind::Different | Kind::Corrupt => {
                let Some(addr) = sites.get(&d.site) else { continue };
                match source.and_then(|s| sites.get(s)) {
                    None => (RepairOutcome::Failed, "repair FAILED: no site holds a sound copy".to_string()),
                    Some(source) => repair_one(transport, addr, d, source).await,
                }
            }
        };
        repairs.push(Repair { site: d.site.clone(), tenant: d.tenant.clone(), contract_id: d.contract_id.clone(), outcome, detail });
    }
    report.repairs = repairs;
}

/// Asks `d.site`'s replicator (at `addr`) to copy the contract from `source`.
async fn repair_one(transport: &Transport, addr: &str, d: &Difference, source: &str) -> (RepairOutcome, String) {
    let req = pb::RepairRequest { tenant: d.tenant.clone(), contract_id: d.contract_id.clone(), source_addr: source.to_string() };
    match transport.channel(addr) {
        Ok(ch) => match tokio::time::timeout(Duration::from_secs(900), client(ch).repair(req)).await {
            Ok(Ok(r)) => (RepairOutcome::Repaired, r.into_inner().result),
            Ok(Err(s)) => (RepairOutcome::Failed, format!("repair FAILED: {}", s.message())),
            Err(_) => (RepairOutcome::Failed, "repair FAILED: timed out".to_string()),
        },
        Err(e) => (RepairOutcome::Failed, format!("repair FAILED: {e}")),
    }
}
