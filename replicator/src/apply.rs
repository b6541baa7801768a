//! Incoming replication: store one entry of another site's change log.
//!
//! Checks before anything is stored: the entry is the next one of its
//! origin's log (or already applied: then it is skipped), its epoch is not
//! older than any this site knows for the shard (a stale owner's traffic is
//! refused), and every file's framing and per-segment crc32 are intact and
//! its length, plaintext length and data key id (in the file header) match
//! the entry. The hash is not recomputed for log entries: the owner
//! computed it as it encrypted, the entry carries it, and the crc32 of
//! every segment already catches what the transport or a disk damages;
//! `verify --deep` recomputes it at every site, and a repair copy (`verify
//! --repair`, rare) is hashed as it arrives and refused if it differs. The
//! ciphertext is stored and synced, then
//! the metadata and the origin's cursor move in one synced batch. Nothing
//! is decrypted here.
//!
//! A file that the origin staged here beforehand ([`crate::stage`]) comes
//! as a reference to the staged copy, which was checked the same way on
//! arrival; it is committed under the file's path only now.

use futures::Stream;
use tandem_crypto::SegmentScanner;
use tandem_proto::replicator as pb;
use tandem_proto::replicator::apply_chunk::Part;

use crate::blob::Hashing;
use crate::error::ReplicaError;
use crate::ids::{check_file_name, check_id};
use crate::meta::MetaBatch;
use crate::model::{blob_path, Change, ContractHead, LogEntry};
use crate::parts::PartReader;
use crate::site::Site;

/// Why an entry arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// In log order from its origin: the cursor is checked and advanced.
    Log,
    /// A copy fetched by `verify --repair`: no cursor involved.
    Repair,
}

/// Most entries one Apply stream's entries are committed together in;
/// a longer stream is committed in several synced writes.
pub const MAX_GROUP: usize = 64;

/// Applies the entries read from `chunks` (one in [`Mode::Repair`]; in
/// [`Mode::Log`] one or more of one origin's log in order); returns the
/// origin's cursor after them. Consecutive puts of different contracts
/// are committed together, in one synced write (a group commit: a peer
/// applies a backlog, or a busy owner's sync writes, at the rate of its
/// disk's syncs times the group, not one entry per sync). A destroy or a
/// re-wrap, which reads what earlier entries wrote, is committed alone.
/// Entries before one that is refused are kept.
pub async fn apply<S>(site: &Site, chunks: S, mode: Mode) -> Result<u64, ReplicaError>
where
    S: Stream<Item = Result<pb::ApplyChunk, tonic::Status>>,
{
    let mut chunks = PartReader::new(chunks, "replication");
    let first = match chunks.next().await? {
        Some(Part::EntryJson(json)) => parse_entry(&json)?,
        _ => return Err(ReplicaError::Invalid("a replication stream must start with its log entry".into())),
    };
    if mode == Mode::Log && first.origin == site.name {
        return Err(ReplicaError::Invalid(format!("entry {} is from this site's own log", first.seq)));
    }
    let origin = first.origin.clone();
    let _ordered = site.ordered(&origin).await?;
    let mut group = Group { applied: site.meta.cursor(&origin)?, ..Group::default() };
    let mut next = Some(first);
    let mut refused = None;
    while let Some(entry) = next.take() {
        match stage(site, entry, &origin, &mut chunks, mode, &mut group).await {
            Ok(None) => {}
            Ok(Some(json)) if mode == Mode::Log => match parse_entry(&json) {
                Ok(e) => next = Some(e),
                Err(e) => refused = Some(e),
            },
            // Nothing of a repair copy with more after it is kept.
            Ok(Some(_)) => return Err(ReplicaError::Invalid("a repair copy carries one entry; unexpected data after its files".into())),
            Err(e) if mode == Mode::Log => refused = Some(e),
            Err(e) => return Err(e),
        }
    }
    // The entries before a refused one are whole and checked: kept.
    let applied = group.commit(site).await?;
    match refused {
        Some(e) => Err(e),
        None => Ok(applied),
    }
}

fn parse_entry(json: &[u8]) -> Result<LogEntry, ReplicaError> {
    let entry: LogEntry = serde_json::from_slice(json).map_err(|e| ReplicaError::Invalid(format!("malformed log entry: {e}")))?;
    check_id("tenant", entry.tenant())?;
    check_id("contract id", entry.contract_id())?;
    Ok(entry)
}

/// Entries checked and their files stored, their metadata waiting for
/// one synced commit.
#[derive(Default)]
struct Group<'a> {
    batch: MetaBatch,
    /// The contracts in the batch, each held (its lock) until the commit.
    contracts: std::collections::BTreeSet<(String, String)>,
    held: Vec<tokio::sync::MutexGuard<'a, ()>>,
    entries: usize,
    /// Directories whose new entries (staged copies committed under their
    /// paths) must be synced before the batch.
    dirs: crate::blob::DirSyncs,
    /// The origin's cursor once the batch is committed.
    applied: u64,
    destroys: bool,
}

impl<'a> Group<'a> {
    /// Commits what is waiting; returns the origin's cursor after it.
    async fn commit(&mut self, site: &Site) -> Result<u64, ReplicaError> {
        let dirs = std::mem::take(&mut self.dirs);
        if !dirs.is_empty() {
            if let Err(e) = site.blobs.sync_dirs(dirs).await {
                // Nothing of the batch is committed: its files' names may
                // not survive a crash.
                self.batch = MetaBatch::default();
                self.held.clear();
                self.contracts.clear();
                self.entries = 0;
                return Err(e.into());
            }
        }
        if self.entries > 0 {
            site.meta.slow_sync().await;
            let batch = std::mem::take(&mut self.batch);
            let committed = site.meta.commit(batch);
            self.held.clear();
            self.contracts.clear();
            self.entries = 0;
            committed?;
            if std::mem::take(&mut self.destroys) {
                site.gc_wake.notify_one();
            }
        }
        Ok(self.applied)
    }

    /// Takes `entry`'s contract for the batch, committing the batch first
    /// if it holds the contract, or another contract sharing its lock.
    async fn take(&mut self, site: &'a Site, entry: &LogEntry) -> Result<(), ReplicaError> {
        let key = (entry.tenant().to_string(), entry.contract_id().to_string());
        let lock = site.contract_lock(&key.0, &key.1);
        let guard = match (self.contracts.contains(&key), lock.try_lock()) {
            (false, Ok(g)) => g,
            _ => {
                self.commit(site).await?;
                lock.lock().await
            }
        };
        self.held.push(guard);
        self.contracts.insert(key);
        Ok(())
    }
}

/// Checks one entry, stores its files and adds its metadata to `group`
/// (committing it when the entry must be alone or the group is full).
/// Returns the next entry's JSON, if the stream goes on.
async fn stage<'a, S>(
    site: &'a Site,
    entry: LogEntry,
    origin: &str,
    chunks: &mut PartReader<S>,
    mode: Mode,
    group: &mut Group<'a>,
) -> Result<Option<bytes::Bytes>, ReplicaError>
where
    S: Stream<Item = Result<pb::ApplyChunk, tonic::Status>>,
{
    if entry.origin != origin {
        return Err(ReplicaError::Invalid(format!("entry {} of {} in a stream of {origin}'s entries", entry.seq, entry.origin)));
    }
    if mode == Mode::Log {
        if entry.seq <= group.applied {
            // Already applied (a resend): its parts are passed over.
            return skip_parts(chunks).await;
        }
        if entry.seq != group.applied + 1 {
            return Err(ReplicaError::Gap { origin: entry.origin.clone(), expected: group.applied + 1, got: entry.seq });
        }
    }
    let known = site.known_epoch(entry.shard)?;
    // A repair copies the owner's current state, written under whatever
    // epoch was current then; fencing applies to live log traffic.
    if mode == Mode::Log && entry.epoch < known {
        return Err(ReplicaError::StaleEpoch { shard: entry.shard, got: entry.epoch, known });
    }
    // A destroy or re-wrap reads what the entries before it wrote.
    let alone = !matches!(entry.change, Change::Put(_));
    if alone {
        group.commit(site).await?;
    }
    let epoch = entry.epoch.max(site.meta.epoch(entry.shard)?);
    group.take(site, &entry).await?;
    let head = site.meta.head(entry.shard, entry.tenant(), entry.contract_id())?;
    let batch = &mut group.batch;
    let next = match &entry.change {
        Change::Put(v) => {
            if v.shard != entry.shard {
                return Err(ReplicaError::Invalid("entry and version disagree on the shard".into()));
            }
            for (i, file) in v.files.iter().enumerate() {
                check_file_name(&file.name)?;
                if file.blob != blob_path(&v.tenant, &v.contract_id, v.version, i) {
                    return Err(ReplicaError::Invalid(format!("file {} has an unexpected storage path", file.name)));
                }
            }
            // A different version under this number (a divergent write
            // held here) is moved aside before its ciphertext is replaced.
            crate::quarantine::replaced(site, v).await?;
            let t0 = tokio::time::Instant::now();
            let next = receive_files(site, &entry, chunks, mode == Mode::Repair, &mut group.dirs).await?;
            tracing::debug!(origin = %entry.origin, seq = entry.seq, received_ms = t0.elapsed().as_millis() as u64, "entry files received and synced");
            let mut v = v.clone();
            let destroyed = head.as_ref().and_then(|h| h.destroyed.clone());
            if destroyed.is_some() {
                // A copy arriving after the destroy must not bring keys back.
                v.pii_key = None;
                v.pii.clear();
                for f in &mut v.files {
                    f.key = None;
                    batch.queue_gc(&f.blob, 0);
                }
            }
            let latest = head.as_ref().map(|h| h.latest).unwrap_or(0).max(v.version);
            batch.put_head(&ContractHead { tenant: v.tenant.clone(), contract_id: v.contract_id.clone(), shard: v.shard, latest, destroyed });
            batch.put_version(&v);
            next
        }
        Change::Destroy { tenant, contract_id, tombstone } => {
            let next = no_files(chunks, "a destroy entry").await?;
            let head = head.unwrap_or_else(|| ContractHead {
                tenant: tenant.clone(),
                contract_id: contract_id.clone(),
                shard: entry.shard,
                latest: 0,
                destroyed: None,
            });
            site.shred(&head, tombstone, 0, batch)?;
            group.destroys = true;
            next
        }
        Change::Rewrap(v) => {
            let next = no_files(chunks, "a key re-wrap entry").await?;
            let live = head.as_ref().is_some_and(|h| h.destroyed.is_none());
            let held = if live { site.meta.version(&v.tenant, &v.contract_id, v.version)? } else { None };
            if let Some(updated) = crate::rotate::apply(held, v) {
                batch.put_version(&updated);
            }
            next
        }
    };
    let batch = &mut group.batch;
    if mode == Mode::Log {
        batch.set_cursor(&entry.origin, entry.seq);
        group.applied = entry.seq;
    }
    batch.set_epoch(entry.shard, epoch);
    group.entries += 1;
    if (alone && mode == Mode::Log) || group.entries >= MAX_GROUP {
        group.commit(site).await?;
    }
    Ok(next)
}

/// The part after an entry that carries no files: the next entry's JSON
/// or the end.
async fn no_files<S>(chunks: &mut PartReader<S>, what: &str) -> Result<Option<bytes::Bytes>, ReplicaError>
where
    S: Stream<Item = Result<pb::ApplyChunk, tonic::Status>>,
{
    match chunks.next().await? {
        None => Ok(None),
        Some(Part::EntryJson(json)) => Ok(Some(json)),
        Some(_) => Err(ReplicaError::Invalid(format!("{what} carries no files"))),
    }
}

/// Passes over the parts of an entry already applied; returns the next
/// entry's JSON, if any.
async fn skip_parts<S>(chunks: &mut PartReader<S>) -> Result<Option<bytes::Bytes>, ReplicaError>
where
    S: Stream<Item = Result<pb::ApplyChunk, tonic::Status>>,
{
    loop {
        match chunks.next().await? {
            None => return Ok(None),
            Some(Part::EntryJson(json)) => return Ok(Some(json)),
            Some(_) => {}
        }
    }
}

/// Bound on one contract's copy from another site.
const COPY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Copies one contract's latest state (or its destruction) from the site
/// at `source_addr` ([`Mode::Repair`]): what `verify --repair` and
/// anti-entropy ask a site to do, and what a restored site does to catch up.
pub async fn copy_from(site: &Site, source_addr: &str, tenant: &str, contract_id: &str) -> Result<(), tonic::Status> {
    copy_version_from(site, source_addr, tenant, contract_id, 0).await
}

/// [`copy_from`] of one version (0: the latest state).
pub async fn copy_version_from(site: &Site, source_addr: &str, tenant: &str, contract_id: &str, version: u64) -> Result<(), tonic::Status> {
    let channel = site.transport.channel(source_addr).map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
    let call = async {
        let req = pb::FetchRequest { tenant: tenant.into(), contract_id: contract_id.into(), version };
        let grpc = |channel, req| async move { crate::peer::client(channel).fetch(req).await };
        let stream = crate::bulk::download_or_grpc(channel, crate::bulk::FETCH, req, grpc).await?;
        apply(site, stream, Mode::Repair).await.map_err(tonic::Status::from)
    };
    match tokio::time::timeout(COPY_TIMEOUT, call).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!("the copy did not finish within {} s", COPY_TIMEOUT.as_secs()))),
    }
}

/// Steps the cursor over entry `req.seq` of `req.origin`'s log without
/// storing it: the origin quarantined it (then only an entry whose epoch
/// is older than this site knows for the shard may be skipped, so a
/// current write can never be), or it puts a contract the origin has
/// destroyed since (`destroyed_since`), or the origin lost it with its old
/// store (`lost_through`, see [`skip_lost`]). Returns the origin's cursor
/// after it.
pub async fn skip(site: &Site, req: &pb::SkipRequest) -> Result<u64, ReplicaError> {
    if req.origin == site.name {
        return Err(ReplicaError::Invalid(format!("entry {} is from this site's own log", req.seq)));
    }
    let _ordered = site.ordered(&req.origin).await?;
    let cursor = site.meta.cursor(&req.origin)?;
    if req.seq.max(req.lost_through) <= cursor {
        return Ok(cursor);
    }
    if req.seq != cursor + 1 {
        return Err(ReplicaError::Gap { origin: req.origin.clone(), expected: cursor + 1, got: req.seq });
    }
    if req.lost_through > 0 {
        return skip_lost(site, req).await;
    }
    if req.destroyed_since {
        // Its contract's destroy comes on its own (from the origin's log
        // or anti-entropy); the put would bring nothing readable.
        return step_over(site, req, req.seq, None, true);
    }
    let known = site.known_epoch(req.shard)?;
    if req.epoch >= known {
        return Err(ReplicaError::Invalid(format!(
            "entry {} of {} carries epoch {} for shard {}, which is current here: it cannot be skipped",
            req.seq, req.origin, req.epoch, req.shard
        )));
    }
    step_over(site, req, req.seq, None, false)?;
    tracing::info!(site = %site.name, origin = %req.origin, seq = req.seq, shard = req.shard, epoch = req.epoch, "stale entry skipped (quarantined at its origin)");
    Ok(req.seq)
}

/// Moves `req.origin`'s cursor to `through` and records why entries from
/// `req.seq` were stepped over; returns the cursor.
fn step_over(site: &Site, req: &pb::SkipRequest, through: u64, lost_through: Option<u64>, destroyed_since: bool) -> Result<u64, ReplicaError> {
    let mut batch = MetaBatch::default();
    batch.set_cursor(&req.origin, through);
    let skipped = crate::model::Skipped { shard: req.shard, epoch: req.epoch, at_unix_ms: site.clock.now_unix_ms(), lost_through, destroyed_since };
    batch.put_skipped(&req.origin, req.seq, &skipped);
    site.meta.commit(batch)?;
    Ok(through)
}

/// Steps the cursor over entries `req.seq..=req.lost_through`, which their
/// origin lost with its old store when it was restored from a backup (it
/// numbers its next entry after them). Their contracts are not lost: the
/// peer that applied them holds them, and anti-entropy brings them here
/// (this site's cursor was behind that peer's). Called under the origin's
/// order, with `req.seq` the next entry.
async fn skip_lost(site: &Site, req: &pb::SkipRequest) -> Result<u64, ReplicaError> {
    if req.lost_through < req.seq {
        return Err(ReplicaError::Invalid(format!("lost entries {}..={} of {}: an empty range", req.seq, req.lost_through, req.origin)));
    }
    step_over(site, req, req.lost_through, Some(req.lost_through), false)?;
    tracing::warn!(
        site = %site.name, origin = %req.origin, from = req.seq, through = req.lost_through,
        "entries lost at their origin (restored from a backup) stepped over; their contracts come from the peers that hold them"
    );
    Ok(req.lost_through)
}

/// Stores the entry's files from the stream, checking each as it arrives
/// (or commits the staged copies the stream names); returns the next
/// entry's JSON if another follows.
/// A repair (rare, and replacing a copy found damaged) also recomputes the
/// hash of what it receives.
async fn receive_files<S>(
    site: &Site,
    entry: &LogEntry,
    chunks: &mut PartReader<S>,
    check_hash: bool,
    dirs: &mut crate::blob::DirSyncs,
) -> Result<Option<bytes::Bytes>, ReplicaError>
where
    S: Stream<Item = Result<pb::ApplyChunk, tonic::Status>>,
{
    let mut pending = chunks.next().await?;
    for file in entry.files() {
        let what = format!("file {:?} of {}/{} (entry {} of {})", file.name, entry.tenant(), entry.contract_id(), entry.seq, entry.origin);
        let staged_id = match pending.take() {
            Some(Part::File(start)) if start.name == file.name => start.staged_id,
            _ => return Err(ReplicaError::Invalid(format!("{what}: expected its start"))),
        };
        if !staged_id.is_empty() {
            crate::stage::commit_deferred(site, &staged_id, &entry.origin, file, &what, dirs).await?;
            pending = chunks.next().await?;
            continue;
        }
        let mut writer = site.blobs.writer(&file.blob, Hashing::None).await?;
        let mut scanner = SegmentScanner::new();
        let mut hash = check_hash.then(crate::hash::Hasher::new);
        loop {
            pending = chunks.next().await?;
            let Some(Part::Data(data)) = &pending else { break };
            if let Err(e) = scanner.push(data) {
                writer.abort().await;
                return Err(ReplicaError::Corrupt(format!("{what}: {e}")));
            }
            if let Some(hash) = &mut hash {
                hash.update(data);
            }
            writer.write(data).await?;
        }
        if let Some(hash) = hash {
            if hash.hex() != file.ciphertext_blake3 {
                writer.abort().await;
                return Err(ReplicaError::Corrupt(format!("{what}: the copy's BLAKE3 differs from the record's")));
            }
        }
        let header = scanner.header();
        let summary = match scanner.finish() {
            Ok(s) => s,
            Err(e) => {
                writer.abort().await;
                return Err(ReplicaError::Corrupt(format!("{what}: {e}")));
            }
        };
        let key_ok = match (&file.key, header) {
            (Some(k), Some(h)) => k.key_id == h.key_id,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        let got = writer.len();
        if summary.ciphertext_len != file.ciphertext_len || got != file.ciphertext_len || summary.plaintext_len != file.size || !key_ok {
            writer.abort().await;
            return Err(ReplicaError::Corrupt(format!(
                "{what}: received {} bytes ({} of plaintext){}, but the entry declares {} ({}) and data key {}",
                got,
                summary.plaintext_len,
                header.map(|h| format!(" under data key {}", tandem_crypto::key_id_hex(&h.key_id))).unwrap_or_default(),
                file.ciphertext_len,
                file.size,
                file.key.as_ref().map(|k| tandem_crypto::key_id_hex(&k.key_id)).unwrap_or_else(|| "(shredded)".into()),
            )));
        }
        writer.finish().await?;
    }
    match pending {
        None => Ok(None),
        Some(Part::EntryJson(json)) => Ok(Some(json)),
        Some(_) => Err(ReplicaError::Invalid(format!("entry {} of {}: unexpected data after its files", entry.seq, entry.origin))),
    }
}
