//! Quarantine of divergent writes.
//!
//! A divergent write was accepted here under an epoch that has since moved
//! to another site, and the new owner never received it (a failover or a
//! DR activation lost it). It must neither be served as current nor be
//! dropped: it is moved aside. Its version record and wrapped keys go to a
//! quarantine record, its ciphertext to a quarantine path (so a later
//! version with the same number cannot overwrite it), and the contract's
//! head goes back to the newest version that is not quarantined.
//!
//! Two ways in:
//! - [`own_entry`]: the shipper learns that the shard's current owner
//!   refused an entry of this site's own log as stale (so the owner never
//!   had it); the entry is quarantined, then stepped over on every link.
//! - [`replaced`]: another site's version with the same number arrives
//!   (the new owner wrote its own); the version held here is quarantined
//!   before the incoming one is stored.
//!
//! - [`retract`]: the origin quarantined a write this site had already
//!   applied from its log; this site quarantines its copy too.
//!
//! Reconciliation is by hand: `tandem verify` and `tandem failback` list
//! every quarantined write (see runbooks/verify-repair.md).

use tandem_proto::replicator as pb;

use crate::error::ReplicaError;
use crate::meta::MetaBatch;
use crate::model::{quarantine_path, Change, ContractHead, LogEntry, Quarantined, VersionRecord};
use crate::site::Site;

/// Whether this site has already quarantined `entry` of its own log.
pub fn holds(site: &Site, entry: &LogEntry) -> Result<bool, ReplicaError> {
    let version = match &entry.change {
        Change::Put(v) | Change::Rewrap(v) => v.version,
        Change::Destroy { .. } => 0,
    };
    Ok(site.meta.quarantined(entry.tenant(), entry.contract_id(), version, &entry.origin, entry.epoch)?.is_some())
}

/// Quarantines `entry` of this site's own log, which the shard's current
/// owner refused as stale. Idempotent.
pub async fn own_entry(site: &Site, entry: &LogEntry, reason: &str) -> Result<(), ReplicaError> {
    let _contract = site.contract_lock(entry.tenant(), entry.contract_id()).lock().await;
    if holds(site, entry)? {
        return Ok(());
    }
    let mut batch = MetaBatch::default();
    let (version, record, reason) = match &entry.change {
        Change::Put(v) => {
            let held = site.meta.version(&v.tenant, &v.contract_id, v.version)?.filter(|r| r.origin == v.origin && r.epoch == v.epoch);
            match held {
                Some(r) => {
                    let moved = move_aside(site, &r, &mut batch).await?;
                    roll_back_head(site, &r, &mut batch)?;
                    (v.version, Some(moved), reason.to_string())
                }
                // Replaced or destroyed here since: keep what the log says.
                None => (v.version, Some(v.clone()), format!("{reason} (its ciphertext is no longer held here)")),
            }
        }
        Change::Destroy { .. } => (0, None, format!("{reason}; the keys were already shredded here, the owner still holds the contract")),
        // Only wrapped keys changed: the version itself is not divergent,
        // and its keys are valid under either KEK.
        Change::Rewrap(v) => (v.version, None, format!("{reason}; it only re-wrapped keys (key rotation), nothing to reconcile")),
    };
    let q = Quarantined {
        tenant: entry.tenant().to_string(),
        contract_id: entry.contract_id().to_string(),
        version,
        shard: entry.shard,
        origin: entry.origin.clone(),
        epoch: entry.epoch,
        seq: entry.seq,
        written_unix_ms: entry.at_unix_ms,
        quarantined_unix_ms: site.clock.now_unix_ms(),
        reason,
        record,
    };
    batch.put_quarantined(&q);
    site.meta.commit(batch)?;
    site.quarantines.send_modify(|n| *n += 1);
    tracing::warn!(
        site = %site.name, tenant = %q.tenant, contract = %q.contract_id, version = q.version, epoch = q.epoch, seq = q.seq,
        "divergent write quarantined"
    );
    Ok(())
}

/// The writes of this site's own log it quarantined, which peers that
/// applied them must quarantine too (destroys cannot be undone there).
pub fn own_retractable(site: &Site) -> Result<Vec<Quarantined>, ReplicaError> {
    Ok(site.meta.all_quarantined()?.into_iter().filter(|q| q.origin == site.name && q.version > 0).collect())
}

/// At a peer: the origin quarantined `req`'s write, which this site applied
/// from its log. Quarantines this site's copy when it holds that very
/// version and its epoch is stale here (a current write is never
/// retracted). Idempotent; returns whether a copy was quarantined now.
pub async fn retract(site: &Site, req: &pb::RetractRequest) -> Result<bool, ReplicaError> {
    let known = site.known_epoch(req.shard)?;
    if req.epoch >= known {
        return Err(ReplicaError::Invalid(format!(
            "{}/{} version {} carries epoch {} for shard {}, which is current here: it cannot be retracted",
            req.tenant, req.contract_id, req.version, req.epoch, req.shard
        )));
    }
    let _contract = site.contract_lock(&req.tenant, &req.contract_id).lock().await;
    let held =
        site.meta.version(&req.tenant, &req.contract_id, req.version)?.filter(|r| r.origin == req.origin && r.epoch == req.epoch && r.shard == req.shard);
    let Some(held) = held else { return Ok(false) };
    let mut batch = MetaBatch::default();
    let record = move_aside(site, &held, &mut batch).await?;
    roll_back_head(site, &held, &mut batch)?;
    let reason = format!("quarantined at its origin {} (the shard's owner never received it); this copy came from its log", req.origin);
    let q = held_version(site, record, req.seq, reason);
    batch.put_quarantined(&q);
    site.meta.commit(batch)?;
    tracing::warn!(
        site = %site.name, origin = %q.origin, tenant = %q.tenant, contract = %q.contract_id, version = q.version, epoch = q.epoch,
        "copy of a divergent write quarantined at its origin's request"
    );
    Ok(true)
}

/// Before `incoming` is stored: if this site holds a different version
/// under the same number, quarantines it (committed before any of its
/// ciphertext could be overwritten). Call with the contract's lock held.
pub async fn replaced(site: &Site, incoming: &VersionRecord) -> Result<(), ReplicaError> {
    let Some(held) = site.meta.version(&incoming.tenant, &incoming.contract_id, incoming.version)? else { return Ok(()) };
    if held.origin == incoming.origin && held.epoch == incoming.epoch {
        return Ok(());
    }
    if site.meta.quarantined(&held.tenant, &held.contract_id, held.version, &held.origin, held.epoch)?.is_some() {
        return Ok(());
    }
    let mut batch = MetaBatch::default();
    let record = move_aside(site, &held, &mut batch).await?;
    let reason = format!("replaced by version {} that {} wrote under epoch {}", incoming.version, incoming.origin, incoming.epoch);
    let q = held_version(site, record, 0, reason);
    batch.put_quarantined(&q);
    site.meta.commit(batch)?;
    site.quarantines.send_modify(|n| *n += 1);
    tracing::warn!(
        site = %site.name, tenant = %q.tenant, contract = %q.contract_id, version = q.version, epoch = q.epoch,
        "divergent version quarantined before a newer owner's version replaced it"
    );
    Ok(())
}

/// The quarantine record of a version this site held (`moved`: its record
/// after [`move_aside`]); `seq` is its position in its origin's log, 0 if
/// unknown here.
fn held_version(site: &Site, moved: VersionRecord, seq: u64, reason: String) -> Quarantined {
    Quarantined {
        tenant: moved.tenant.clone(),
        contract_id: moved.contract_id.clone(),
        version: moved.version,
        shard: moved.shard,
        origin: moved.origin.clone(),
        epoch: moved.epoch,
        seq,
        written_unix_ms: moved.created_unix_ms,
        quarantined_unix_ms: site.clock.now_unix_ms(),
        reason,
        record: Some(moved),
    }
}

/// Moves `v`'s ciphertext to quarantine paths (durably) and returns the
/// record pointing there; removes `v` from the current versions in `batch`.
/// A crash before the batch commits leaves the blobs already moved, which
/// a retry finds at the quarantine path.
async fn move_aside(site: &Site, v: &VersionRecord, batch: &mut MetaBatch) -> Result<VersionRecord, ReplicaError> {
    let mut moved = v.clone();
    for f in &mut moved.files {
        let to = quarantine_path(&f.blob, &v.origin, v.epoch);
        if !site.blobs.rename(&f.blob, &to).await? && !site.blobs.exists(&to).await? {
            tracing::warn!(site = %site.name, blob = %f.blob, "quarantined file's ciphertext was already gone");
        }
        f.blob = to;
    }
    batch.delete_version(v);
    Ok(moved)
}

/// Points the contract's head at its newest version other than `gone`.
fn roll_back_head(site: &Site, gone: &VersionRecord, batch: &mut MetaBatch) -> Result<(), ReplicaError> {
    let Some(head) = site.meta.head(gone.shard, &gone.tenant, &gone.contract_id)? else { return Ok(()) };
    let latest = site.meta.versions(&gone.tenant, &gone.contract_id)?.iter().map(|r| r.version).filter(|&n| n != gone.version).max();
    match latest {
        Some(latest) => batch.put_head(&ContractHead { latest, ..head }),
        None if head.destroyed.is_none() => batch.delete_head(&head),
        None => batch.put_head(&ContractHead { latest: 0, ..head }),
    }
    Ok(())
}
