//! Divergent writes: entries of this site's own log written under an epoch
//! that has since moved to another site, and that the new owner never
//! confirmed. They were never acknowledged in sync mode (the owner only
//! acknowledges what its peer confirmed, or after the pair was recorded
//! async, in which case a failover states the loss), so they are not lost
//! contracts; but they are kept here, listed by `tandem verify`, and never
//! merged or dropped automatically: someone has to reconcile them.

use tandem_proto::replicator as pb;

use crate::error::ReplicaError;
use crate::model::Change;
use crate::site::Site;

/// Scans this site's log from the oldest entry any owner may lack.
pub fn entries(site: &Site) -> Result<Vec<pb::DivergentEntry>, ReplicaError> {
    let Some(state) = site.view.latest() else { return Ok(Vec::new()) };
    let head = site.meta.log_head()?;
    // Entries every peer confirmed cannot be divergent.
    let from = site.links.values().map(|l| *l.acked.borrow()).min().unwrap_or(head);
    let mut out = Vec::new();
    for seq in from + 1..=head {
        let Some(e) = site.meta.log_entry(seq)? else { continue };
        let Some(now) = state.shards.get(e.shard as usize) else { continue };
        if now.owner == site.name || now.epoch <= e.epoch {
            continue;
        }
        let confirmed = site.links.get(&now.owner).is_some_and(|l| *l.acked.borrow() >= seq);
        if confirmed {
            continue;
        }
        let version = match &e.change {
            Change::Put(v) => v.version,
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
        });
    }
    Ok(out)
}
