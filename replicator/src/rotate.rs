//! Key rotation: re-wraps every data key and PII key under the current
//! key-encryption key, without touching any ciphertext.
//!
//! Each site re-wraps the versions of the shards it owns and writes one
//! `Rewrap` entry per version into its change log; peers apply it by
//! replacing the wrapped keys of the version they hold (only if it is the
//! same version: same origin, epoch and key ids), so the re-wrapped keys
//! replicate like any write. Keys are unwrapped with whichever configured
//! KEK wrapped them (see `tandem_crypto::KeyRing`); once no site holds a key
//! under a retired KEK, that KEK can be removed from the configs.
//!
//! Quarantined versions are not re-wrapped: keep the retired KEK until they
//! are reconciled.

use crate::error::ReplicaError;
use crate::model::{key_context, Change, VersionRecord};
use crate::site::Site;

/// What one rotation call did (or, in a dry run, would do) at one site.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The KEK that wraps keys now.
    pub kek_id: String,
    /// Versions (of shards owned here) re-wrapped, and their keys.
    pub versions: u64,
    pub keys: u64,
    /// Contracts skipped because a write to them was in progress: run again.
    pub busy: u64,
    /// Keys held here (every shard) still wrapped by another KEK, after this
    /// call: 0 at every site means the rotation is complete.
    pub remaining: u64,
    /// The last change-log entry written (0: none).
    pub last_seq: u64,
}

/// Keys of `v` not wrapped by `kek_id`.
fn stale_keys(v: &VersionRecord, kek_id: &str) -> u64 {
    let pii = v.pii_key.iter().filter(|k| k.kek_id != kek_id).count();
    let files = v.files.iter().filter_map(|f| f.key.as_ref()).filter(|k| k.kek_id != kek_id).count();
    (pii + files) as u64
}

/// `v` with every key re-wrapped under the current KEK.
async fn rewrapped(site: &Site, v: &VersionRecord) -> Result<VersionRecord, ReplicaError> {
    let current = site.keys.kek_id().to_string();
    let mut out = v.clone();
    if let Some(k) = out.pii_key.as_mut().filter(|k| k.kek_id != current) {
        let ctx = key_context(&v.tenant, &v.contract_id, v.version, "pii");
        let key = site.keys.unwrap_pii_key(k, &ctx).await?;
        *k = site.keys.wrap_pii_key(&key, &ctx, site.rng.as_ref()).await?;
    }
    for f in &mut out.files {
        if let Some(k) = f.key.as_mut().filter(|k| k.kek_id != current) {
            let ctx = key_context(&v.tenant, &v.contract_id, v.version, &format!("file:{}", f.name));
            let key = site.keys.unwrap_data_key(k, &ctx).await?;
            *k = site.keys.wrap_data_key(&key, &ctx, site.rng.as_ref()).await?;
        }
    }
    Ok(out)
}

/// Every version this site holds, shard by shard.
fn held_versions(site: &Site, shards: u32) -> Result<Vec<VersionRecord>, ReplicaError> {
    let mut out = Vec::new();
    for shard in 0..shards {
        for head in site.meta.shard_heads(shard)? {
            if head.destroyed.is_none() {
                out.extend(site.meta.versions(&head.tenant, &head.contract_id)?);
            }
        }
    }
    Ok(out)
}

/// Re-wraps the keys of every version of the shards this site owns (with a
/// valid lease), unless `dry_run`. Waits until the last entry is confirmed
/// like any write (by the in-city peer in sync mode).
pub async fn run(site: &Site, dry_run: bool) -> Result<Report, ReplicaError> {
    let state = site.view.latest().ok_or_else(|| ReplicaError::NotReady("this site has not heard from a controller since it started".into()))?;
    let current = site.keys.kek_id().to_string();
    let mut report = Report { kek_id: current.clone(), ..Default::default() };
    if !dry_run {
        for (shard, owner) in state.shards.iter().enumerate() {
            let shard = shard as u32;
            if owner.owner != site.name {
                continue;
            }
            for head in site.meta.shard_heads(shard)? {
                if head.destroyed.is_some() {
                    continue;
                }
                let Some(_busy) = site.claim(&head.tenant, &head.contract_id) else {
                    report.busy += 1;
                    continue;
                };
                for v in site.meta.versions(&head.tenant, &head.contract_id)? {
                    let n = stale_keys(&v, &current);
                    if n == 0 {
                        continue;
                    }
                    let (shard, epoch) = site.check_owner(&head.tenant)?;
                    let new = rewrapped(site, &v).await?;
                    let change = Change::Rewrap(new.clone());
                    report.last_seq = site
                        .append(shard, epoch, change, |_, batch| {
                            batch.put_version(&new);
                            Ok(())
                        })
                        .await?;
                    report.versions += 1;
                    report.keys += n;
                }
            }
        }
        if report.last_seq > 0 {
            crate::sync::confirm(site, report.last_seq, 0, last_written(site, report.last_seq)?).await?;
        }
    }
    report.remaining = held_versions(site, state.shards.len() as u32)?.iter().map(|v| stale_keys(v, &current)).sum();
    Ok(report)
}

/// The (shard, epoch) under which log entry `seq` was written.
fn last_written(site: &Site, seq: u64) -> Result<(u32, u64), ReplicaError> {
    let e = site.meta.log_entry(seq)?.ok_or_else(|| ReplicaError::Internal(format!("log entry {seq} just written is missing")))?;
    Ok((e.shard, e.epoch))
}

/// Applies a peer's `Rewrap` of `new` to the version held here: its keys
/// replace ours only if it is the same version (same origin and epoch, same
/// key ids, same ciphertext). Anything else - not held, destroyed, another
/// version under that number - is left alone. Returns the updated record.
pub fn apply(held: Option<VersionRecord>, new: &VersionRecord) -> Option<VersionRecord> {
    let mut v = held?;
    let same = v.origin == new.origin
        && v.epoch == new.epoch
        && v.files.len() == new.files.len()
        && v.pii_key.as_ref().map(|k| k.key_id) == new.pii_key.as_ref().map(|k| k.key_id)
        && v.files.iter().zip(&new.files).all(|(a, b)| {
            a.ciphertext_blake3 == b.ciphertext_blake3 && a.key.is_some() && a.key.as_ref().map(|k| k.key_id) == b.key.as_ref().map(|k| k.key_id)
        });
    if !same {
        return None;
    }
    v.pii_key = new.pii_key.clone();
    for (a, b) in v.files.iter_mut().zip(&new.files) {
        a.key = b.key.clone();
    }
    Some(v)
}
