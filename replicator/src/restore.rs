//! Restoring a site from a backup ([`crate::backup`]) into an empty store,
//! and the catch-up that must finish before the restored site serves.
//!
//! A restore is not a copy back. While the site was gone:
//! - its peers went on: they hold entries of its own log it wrote after
//!   the backup (applied, as state), and their cursors in its log are past
//!   the backup's head;
//! - contracts were written and destroyed elsewhere, and the backup still
//!   holds the wrapped keys of those destroyed since.
//!
//! So [`into_store`] (offline, the replicator stopped) writes the backup's
//! records and files into the empty store and marks it [`Restoring`]; the
//! replicator then runs [`catch_up`] before serving any contract (reads
//! included: a destroyed contract must never come back readable):
//! 1. its log head is set to the highest cursor any peer holds for it
//!    ([`MetaStore::log_floor`](crate::meta::MetaStore::log_floor)), so
//!    its next entry never reuses a number the peers already hold; the
//!    entries in between are lost at this site, and a peer that lacks some
//!    of them steps over them ([`crate::apply::skip`]) and gets their
//!    contracts from the peer that applied them (anti-entropy);
//! 2. it copies from every peer each contract the peer holds newer or
//!    destroyed: every destroy recorded since the backup is replayed, and
//!    its own writes since come back (a peer catching up too is left out);
//! 3. it clears the mark and serves. Shards it still owns take no write
//!    until then (fail them over to keep writing them: the runbook does
//!    that first); no shard can be moved to it meanwhile (the planner
//!    refuses a target that reports it is restoring), and `tandem
//!    failback` waits for it like for any returning site.
//!
//! The peers' logs still reach it from its (older) cursors as usual.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tandem_proto::replicator as pb;

use crate::apply::copy_version_from;
use crate::backup::{self, Manifest};
use crate::blob::{BlobStore, Hashing};
use crate::digest;
use crate::error::ReplicaError;
use crate::meta::{MetaBatch, MetaStore};
use crate::model::Restoring;
use crate::peer::{client, RPC_TIMEOUT};
use crate::site::Site;

/// Records are written in batches of this many.
const BATCH: usize = 1000;
/// How often a catch-up that could not finish is tried again.
const RETRY: Duration = Duration::from_secs(2);
/// Bound on one contract's copy from a peer.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What [`into_store`] wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Restored {
    pub backup_id: String,
    pub site: String,
    pub records: u64,
    pub files: u64,
    pub bytes: u64,
    pub backup_log_head: u64,
}

/// What to restore, into which site, by whom.
pub struct Request<'a> {
    /// Where the backups are.
    pub from: &'a BlobStore,
    /// Which backup.
    pub id: &'a str,
    /// The site whose stores are written.
    pub site: &'a str,
    pub who: &'a str,
    pub why: &'a str,
    pub now_unix_ms: u64,
}

/// Writes backup `req.id` into `meta` and `blobs`, the empty stores of site
/// `req.site` (or the stores of a restore that did not finish), and marks
/// them [`Restoring`]. Every record's crc and the dump's hash, and every
/// file's length and BLAKE3, are checked as they are copied; on any damage
/// it stops, and the replicator refuses to start on the half-written store
/// until a restore finishes.
pub async fn into_store(meta: &MetaStore, blobs: &BlobStore, req: &Request<'_>) -> Result<Restored, ReplicaError> {
    let (from, id, site) = (req.from, req.id, req.site);
    let manifest = backup::manifest(from, id).await.map_err(ReplicaError::from)?;
    if manifest.site != site {
        return Err(ReplicaError::Invalid(format!("backup {id} is of site {}, and this store is site {site}'s", manifest.site)));
    }
    let unfinished = match meta.restoring()? {
        Some(r) if !r.complete && r.backup_id != manifest.id => {
            return Err(ReplicaError::Invalid(format!(
                "this store holds an unfinished restore of backup {}: finish that one (or start over from an empty store), not {id}",
                r.backup_id
            )))
        }
        Some(r) => !r.complete,
        None => false,
    };
    if !meta.is_empty()? && !unfinished {
        return Err(ReplicaError::Invalid(
            "this site's metadata store is not empty: a restore goes into an empty store (move the old one aside, never delete it)".into(),
        ));
    }
    let mut mark = Restoring {
        backup_id: manifest.id.clone(),
        backup_log_head: manifest.log_head,
        complete: false,
        who: req.who.into(),
        why: req.why.into(),
        at_unix_ms: req.now_unix_ms,
    };
    let mut batch = MetaBatch::default();
    batch.set_restoring(&mark);
    meta.commit(batch)?;

    let records = write_records(meta, from, &manifest).await?;
    let (files, bytes) = copy_files(blobs, from, &manifest).await?;

    mark.complete = true;
    let mut batch = MetaBatch::default();
    batch.set_restoring(&mark);
    meta.commit(batch)?;
    Ok(Restored { backup_id: manifest.id.clone(), site: site.into(), records, files, bytes, backup_log_head: manifest.log_head })
}

async fn write_records(meta: &MetaStore, from: &BlobStore, manifest: &Manifest) -> Result<u64, ReplicaError> {
    let dump = from.read_to_vec(&backup::dump_path(&manifest.id)).await.map_err(ReplicaError::from)?;
    let mut problems = Vec::new();
    backup::check_dump_bytes(&dump, manifest, &mut problems);
    if let Some(p) = problems.first() {
        return Err(ReplicaError::Corrupt(format!("backup {}: {p}; nothing more is restored", manifest.id)));
    }
    let mut batch = MetaBatch::default();
    // The backup's own records say whether every contract has its item
    // hash (`MetaStore::shard_digests`), not this store's.
    batch.forget_digest_items();
    let mut records = 0u64;
    let mut failed = None;
    let framing = backup::each_record(&dump, &mut |key, value| {
        // A restore mark is this store's own, never one from the backup.
        if key == crate::meta::RESTORE_KEY.as_bytes() {
            return true;
        }
        batch.put_raw(key, value);
        records += 1;
        if batch.len() >= BATCH {
            if let Err(e) = meta.commit(std::mem::take(&mut batch)) {
                failed = Some(e);
                return false;
            }
        }
        true
    });
    framing.map_err(|e| ReplicaError::Corrupt(format!("backup {}: {e}", manifest.id)))?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    if !batch.is_empty() {
        meta.commit(batch)?;
    }
    Ok(records)
}

async fn copy_files(blobs: &BlobStore, from: &BlobStore, manifest: &Manifest) -> Result<(u64, u64), ReplicaError> {
    let (mut files, mut bytes) = (0u64, 0u64);
    for b in &manifest.blobs {
        let source = backup::blob_path(b);
        // Written under its path before it is checked: the replicator will
        // not start on this unfinished restore, and a good copy overwrites it.
        let stored = backup::copy(from, &source, blobs, &b.blob, Hashing::Hash).await?;
        if stored.len != b.len {
            return Err(ReplicaError::Corrupt(format!("backup file {source} ({}): {} bytes, its record says {}", b.blob, stored.len, b.len)));
        }
        if stored.hash != b.blake3 {
            return Err(ReplicaError::Corrupt(format!("backup file {source} ({}): its BLAKE3 differs from its record's", b.blob)));
        }
        files += 1;
        bytes += b.len;
    }
    Ok((files, bytes))
}

/// Whether a replicator may start on `meta`: not on a restore that did not
/// finish.
pub fn check_startable(meta: &MetaStore) -> Result<(), ReplicaError> {
    match meta.restoring()? {
        Some(r) if !r.complete => {
            Err(ReplicaError::Invalid(format!("the restore of backup {} into this store did not finish: run `tandem backup restore` again", r.backup_id)))
        }
        _ => Ok(()),
    }
}

/// Turns this site into a restoring one when a peer shows that its store
/// is behind (see `crate::ship`): marked in the store, so a restart keeps
/// it, and caught up like a restored site (its log head moves past what
/// the peers hold, it copies what they hold newer, and it serves nothing
/// until then). Two shippers finding it at once start one catch-up.
pub fn store_behind(site: &Arc<Site>, why: &str) {
    if site.restoring().is_some() {
        return;
    }
    let head = site.meta.log_head().unwrap_or(0);
    let mark = Restoring {
        backup_id: String::new(),
        backup_log_head: head,
        complete: true,
        who: "replicator".into(),
        why: why.into(),
        at_unix_ms: site.clock.now_unix_ms(),
    };
    if !site.begin_restoring(mark.waiting()) {
        return;
    }
    let mut batch = MetaBatch::default();
    batch.set_restoring(&mark);
    if let Err(e) = site.meta.commit(batch) {
        tracing::error!(site = %site.name, error = %e, "cannot mark the store as behind its peers");
    }
    tracing::error!(site = %site.name, %why, "this site's store is behind its peers: it serves nothing until it has caught up");
    let task = tokio::spawn(catch_up(site.clone()));
    site.late_tasks.lock().unwrap_or_else(|p| p.into_inner()).push(task);
}

/// Runs the catch-up of a restored site (see the module doc) until it is
/// done; the site serves no contract meanwhile ([`Site::serving`]).
pub async fn catch_up(site: Arc<Site>) {
    let mut last = String::new();
    loop {
        match step(&site).await {
            Ok(()) => {
                site.set_restoring(None);
                tracing::info!(site = %site.name, "restore complete: caught up with every peer; serving");
                return;
            }
            Err(wait) => {
                if wait != last {
                    tracing::warn!(site = %site.name, waiting = %wait, "restored from a backup, or behind its peers; catching up before serving");
                    last = wait.clone();
                }
                let base = site.meta.restoring().ok().flatten().map(|m| m.waiting()).unwrap_or_default();
                site.set_restoring(Some(format!("{base}: {wait}")));
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// One attempt; `Err`: what it waits for.
async fn step(site: &Site) -> Result<(), String> {
    let Some(mark) = site.meta.restoring().map_err(|e| e.to_string())? else { return Ok(()) };
    let id = mark.what();
    // Said with every wait: the shards this site owns take no writes until
    // it is done (their owner serves nothing yet).
    let owned = site.view.latest().map_or(0, |s| s.shards.iter().filter(|sh| sh.owner == site.name).count());
    let stalled = |why: String| match owned {
        0 => why,
        n => format!("{why}; the {n} shards it owns take no writes until then (tandem failover --from {} moves them to a peer)", site.name),
    };
    // 1. The log head: past every number a peer already holds.
    let mut floor = mark.backup_log_head.max(site.meta.log_floor().map_err(|e| e.to_string())?);
    for link in site.links.values() {
        let mut c = client(site.transport.channel(&link.addr).map_err(|e| e.to_string())?);
        let req = pb::CursorRequest { origin: site.name.clone() };
        let cursor = match tokio::time::timeout(RPC_TIMEOUT, c.cursor(req)).await {
            Ok(Ok(r)) => r.into_inner().applied_seq,
            Ok(Err(s)) => return Err(stalled(format!("asking {} how much of this site's log it holds: {}", link.peer, s.message()))),
            Err(_) => return Err(stalled(format!("asking {} how much of this site's log it holds: no answer (every peer must answer)", link.peer))),
        };
        floor = floor.max(cursor);
    }
    if floor > site.meta.log_head().map_err(|e| e.to_string())? {
        let mut batch = MetaBatch::default();
        batch.set_log_floor(floor);
        site.meta.commit(batch).map_err(|e| e.to_string())?;
        tracing::warn!(site = %site.name, from = %id, lost_from = mark.backup_log_head + 1, through = floor, "this site's log entries after its copy are lost here; its next entry follows the peers' cursors");
        site.log_grew.send_replace(floor);
    }
    // 2. Everything the peers hold newer, or destroyed: every destroy since
    // the copy, and this site's own writes since, come back. A peer that
    // is restoring too holds nothing the others lack, and is left out.
    let state = site.view.leased().ok_or_else(|| stalled("waiting for a leased controller view".to_string()))?;
    let (mut copied, mut from) = (0, 0);
    for link in site.links.values() {
        match pull(site, &link.peer, &link.addr, state.shards.len() as u32).await {
            Ok(Some(n)) => {
                copied += n;
                from += 1;
            }
            Ok(None) => tracing::warn!(site = %site.name, peer = %link.peer, "the peer is catching up too: not copied from"),
            Err(e) => return Err(stalled(format!("copying from {}: {e}", link.peer))),
        }
    }
    if from == 0 {
        return Err(stalled("every peer is catching up too: waiting for one that serves".into()));
    }
    let mut batch = MetaBatch::default();
    batch.done_restoring();
    site.meta.commit(batch).map_err(|e| e.to_string())?;
    tracing::info!(site = %site.name, from = %id, copied, log_head = floor, "restored site holds everything its peers hold");
    Ok(())
}

/// Copies from `peer` every contract it holds in a newer version, or
/// destroyed, than here. Returns how many; `None` when the peer serves no
/// contract either (it is catching up too).
async fn pull(site: &Site, peer: &str, addr: &str, shard_count: u32) -> Result<Option<usize>, String> {
    let mut c = client(site.transport.channel(addr).map_err(|e| e.to_string())?);
    let theirs = match tokio::time::timeout(CALL_TIMEOUT, c.digests(pb::DigestsRequest {})).await {
        Ok(Ok(r)) => r.into_inner().shard_digests,
        Ok(Err(s)) => return Err(format!("digests: {}", s.message())),
        Err(_) => return Err("digests: no answer".into()),
    };
    if theirs.len() != shard_count as usize {
        return Err(format!("{peer} has {} shards, this site's view {shard_count}", theirs.len()));
    }
    let kept = digest::shard_digests(site, shard_count).map_err(|e| e.to_string())?;
    let mut copied = 0;
    for shard in 0..shard_count {
        if kept[shard as usize] == theirs[shard as usize] {
            continue;
        }
        let ours = digest::inventory(site, shard).map_err(|e| e.to_string())?;
        let ours: BTreeMap<(String, String), digest::Item> = ours.into_iter().map(|i| ((i.tenant.clone(), i.contract_id.clone()), i)).collect();
        let items = match tokio::time::timeout(CALL_TIMEOUT, c.inventory(pb::InventoryRequest { shard })).await {
            Ok(Ok(r)) => r.into_inner().items,
            Ok(Err(s)) => return Err(format!("inventory of shard {shard}: {}", s.message())),
            Err(_) => return Err(format!("inventory of shard {shard}: no answer")),
        };
        for item in items {
            let ahead = match ours.get(&(item.tenant.clone(), item.contract_id.clone())) {
                None => true,
                Some(o) => item.version > o.version || (item.destroyed && !o.destroyed),
            };
            if !ahead {
                continue;
            }
            // Every version it lacks, oldest first, then the latest state
            // (for a destroyed one, its tombstone alone).
            let from = ours.get(&(item.tenant.clone(), item.contract_id.clone())).map_or(1, |o| o.version + 1);
            let versions: Vec<u64> = if item.destroyed { vec![0] } else { (from..item.version).chain([0]).collect() };
            let mut result = Ok(());
            for v in versions {
                match copy_version_from(site, addr, &item.tenant, &item.contract_id, v).await {
                    // A version the peer never held (quarantined, or numbered
                    // past a divergent write) is not there to copy.
                    Err(s) if v != 0 && s.code() == tonic::Code::NotFound => {}
                    Err(s) => {
                        result = Err(s);
                        break;
                    }
                    Ok(()) => {}
                }
            }
            match result {
                Ok(()) => copied += 1,
                Err(s)
                    if s.metadata().get(tandem_proto::ERROR_CODE_METADATA).and_then(|v| v.to_str().ok()) == Some(tandem_proto::error_code::NOT_READY)
                        && s.message().contains("serves no contract yet") =>
                {
                    return Ok(None)
                }
                Err(s) => return Err(format!("{}/{}: {}", item.tenant, item.contract_id, s.message())),
            }
        }
    }
    Ok(Some(copied))
}
