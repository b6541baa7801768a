//! `tandem verify`: compare what every site stores, shard by shard, against
//! the shard's owner, and optionally repair the differences from the owner.
//!
//! Every site must answer: a verify that skipped a site could not say "no
//! difference". Only differing shards' inventories are fetched.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tandem_controller::state::ClusterState;
use tandem_net::Transport;
use tandem_proto::replicator as pb;

use crate::ship::client;

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
    /// Filled by [`repair`]: one line per difference.
    pub repairs: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("verify needs every site: {0}")]
pub struct VerifyError(pub String);

const CALL: Duration = Duration::from_secs(30);

async fn call<T>(site: &str, fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> Result<T, VerifyError> {
    match tokio::time::timeout(CALL, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(VerifyError(format!("site {site}: {}", s.message()))),
        Err(_) => Err(VerifyError(format!("site {site}: no answer within {} s", CALL.as_secs()))),
    }
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
    let mut lines = Vec::new();
    for d in &report.differences {
        let sound = |site: &str| !corrupt.contains(&(site, d.tenant.as_str(), d.contract_id.as_str()));
        let source = if sound(&d.owner) { Some(d.owner.as_str()) } else { sites.keys().map(String::as_str).find(|s| *s != d.site && sound(s)) };
        let line = match d.kind {
            Kind::Extra => {
                format!("{}/{} at {}: not repaired (the owner {} lacks it; investigate before removing anything)", d.tenant, d.contract_id, d.site, d.owner)
            }
            Kind::Divergent => format!("{}/{} at {}: divergent write kept for reconciliation, not repaired ({})", d.tenant, d.contract_id, d.site, d.detail),
            Kind::Missing | Kind::Different | Kind::Corrupt => {
                let Some(addr) = sites.get(&d.site) else { continue };
                let Some(source) = source.and_then(|s| sites.get(s)) else {
                    lines.push(format!("{}/{} at {}: repair FAILED: no site holds a sound copy", d.tenant, d.contract_id, d.site));
                    continue;
                };
                let req = pb::RepairRequest { tenant: d.tenant.clone(), contract_id: d.contract_id.clone(), source_addr: source.clone() };
                match transport.channel(addr) {
                    Ok(ch) => match tokio::time::timeout(Duration::from_secs(900), client(ch).repair(req)).await {
                        Ok(Ok(r)) => format!("{}/{} at {}: {}", d.tenant, d.contract_id, d.site, r.into_inner().result),
                        Ok(Err(s)) => format!("{}/{} at {}: repair FAILED: {}", d.tenant, d.contract_id, d.site, s.message()),
                        Err(_) => format!("{}/{} at {}: repair FAILED: timed out", d.tenant, d.contract_id, d.site),
                    },
                    Err(e) => format!("{}/{} at {}: repair FAILED: {e}", d.tenant, d.contract_id, d.site),
                }
            }
        };
        lines.push(line);
    }
    report.repairs = lines;
}
