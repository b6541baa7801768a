//! Divergent writes: entries of this site's own log written under an epoch
//! that has since moved to another site, and that the new owner never
//! confirmed. A failover states them as its loss (they were never
//! acknowledged in sync mode) or a DR activation estimated them. They are
//! quarantined as soon as the owner refuses them ([`crate::quarantine`]),
//! listed by `tandem verify` and `tandem failback`, and never merged or
//! dropped automatically: someone has to reconcile them.
//!
//! The list: every quarantined write, then every divergent entry of the
//! own log not quarantined yet (still served here as current).

use tandem_proto::replicator as pb;

use crate::error::ReplicaError;
use crate::model::Change;
use crate::site::Site;

/// Scans this site's log from the oldest entry any owner may lack.
pub fn entries(site: &Site) -> Result<Vec<pb::DivergentEntry>, ReplicaError> {
    let mut out: Vec<pb::DivergentEntry> = site
        .meta
        .all_quarantined()?
        .into_iter()
        .map(|q| pb::DivergentEntry {
            seq: q.seq,
            tenant: q.tenant,
            contract_id: q.contract_id,
            version: q.version,
            shard: q.shard,
            epoch: q.epoch,
            current_owner: String::new(),
            current_epoch: 0,
            at_unix_ms: q.written_unix_ms,
            quarantined: true,
            reason: q.reason,
            origin: q.origin,
        })
        .collect();
    let Some(state) = site.view.latest() else { return Ok(out) };
    for e in &mut out {
        if let Some(now) = state.shards.get(e.shard as usize) {
            e.current_owner = now.owner.clone();
            e.current_epoch = now.epoch;
        }
    }
    let head = site.meta.log_head()?;
    // Entries every peer confirmed cannot be divergent.
    let from = site.links.values().map(|l| *l.acked.borrow()).min().unwrap_or(head);
    for seq in from + 1..=head {
        let Some(e) = site.meta.log_entry(seq)? else { continue };
        if crate::quarantine::holds(site, &e)? {
            continue;
        }
        let Some(now) = state.shards.get(e.shard as usize) else { continue };
        if now.owner == site.name || now.epoch <= e.epoch {
            continue;
        }
        let confirmed = site.links.get(&now.owner).is_some_and(|l| *l.acked.borrow() >= seq);
        if confirmed {
            continue;
        }
        let version = match &e.change {
            Change::Put(v) | Change::Rewrap(v) => v.version,
            Change::Destroy { .. } => 0,
        };
        out.push(pb::DivergentEntry {
            seq,
            tenant: e.tenant().to_string(),
            contract_id: e.contract_id().to_string(),
            version,
            shard: e.shard,
            epoch: e.epoch,
            current_owner: now.owner.clone(),
            current_epoch: now.epoch,
            at_unix_ms: e.at_unix_ms,
            quarantined: false,
            reason: String::new(),
            origin: site.name.clone(),
        });
    }
    Ok(out)
}
