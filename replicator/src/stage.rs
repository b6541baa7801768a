//! Staged blobs: in sync mode the owner streams a file's ciphertext to its
//! in-city peer *while* it stores its own copy, so the two sites write at
//! the same time instead of one after the other.
//!
//! At the peer (receiver), a staged blob is checked as it arrives exactly
//! like replicated ciphertext (epoch not stale, framing and every
//! segment's crc32, then length), stored and synced under `.staging/`, and
//! registered in memory. It is never served: it has no metadata, and only
//! the apply of the log entry that references it (by the id returned
//! here) gives it its real name, after checking that it is the entry's
//! file (origin, path, length, plaintext length, key id, the owner's
//! BLAKE3). A stream cut before its end marker keeps nothing. A staged
//! blob that no entry claims within `staged_ttl` is deleted; the staging
//! directory is emptied when the replicator starts.
//!
//! At the owner (sender, [`StageUpload`]), staging is an optimisation
//! only: if the peer is slow, refuses, or the link breaks, the upload is
//! abandoned and the shipper sends the file with its entry as before. The
//! put does not wait for the peer to confirm its staged copy (so the peer
//! syncs while the owner commits the entry); the shipper does, bounded by
//! the sync timeout, before it refers to the copy. The write is
//! acknowledged in sync mode only once the peer has applied the entry
//! (stored, synced, metadata committed), as without staging.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tandem_crypto::SegmentScanner;
use tandem_proto::replicator as pb;
use tandem_proto::replicator::stage_chunk::Part;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ReplicaError;
use crate::model::FileRecord;
use crate::parts::PartReader;
pub use crate::site::staging::{Registry, Staged, StagedId};
use crate::site::{ChannelSlot, Link, Site};

/// Longest blob path a stage may name.
const BLOB_NAME_MAX: usize = 512;
/// Messages queued towards the peer per upload.
pub(crate) const QUEUE: usize = 4;

/// Receives one staged blob; returns its id.
pub async fn receive<S>(site: &Site, chunks: S) -> Result<String, ReplicaError>
where
    S: Stream<Item = Result<pb::StageChunk, tonic::Status>>,
{
    let mut chunks = PartReader::new(chunks, "stage");
    let start = match chunks.next().await? {
        Some(Part::Start(s)) => s,
        _ => return Err(ReplicaError::Invalid("a stage stream must start with its start message".into())),
    };
    if !site.knows_origin(&start.origin) {
        return Err(ReplicaError::Invalid(format!("stage from unexpected site {:?}", start.origin)));
    }
    if start.blob.is_empty() || start.blob.len() > BLOB_NAME_MAX {
        return Err(ReplicaError::Invalid("stage names no valid blob path".into()));
    }
    let known = site.known_epoch(start.shard)?;
    if start.epoch < known {
        return Err(ReplicaError::StaleEpoch { shard: start.shard, got: start.epoch, known });
    }
    let what = format!("staged copy of {} from {}", start.blob, start.origin);
    let name = site.blobs.staging_name(&start.origin);
    // Dropped on any error below: the file goes with it.
    let mut writer = site.blobs.stage_writer(&name).await?;
    let mut scanner = SegmentScanner::new();
    let end = loop {
        match chunks.next().await? {
            Some(Part::Data(data)) => {
                scanner.push(&data).map_err(|e| ReplicaError::Corrupt(format!("{what}: {e}")))?;
                writer.write(&data).await?;
            }
            Some(Part::End(end)) => break end,
            Some(Part::Start(_)) => return Err(ReplicaError::Invalid(format!("{what}: a second start message"))),
            None => return Err(ReplicaError::Invalid(format!("{what}: stream ended before its end marker (truncated); nothing was kept"))),
        }
    };
    let header = scanner.header();
    let summary = scanner.finish().map_err(|e| ReplicaError::Corrupt(format!("{what}: {e}")))?;
    let header = header.ok_or_else(|| ReplicaError::Corrupt(format!("{what}: no header")))?;
    if summary.ciphertext_len != end.len || writer.len() != end.len {
        return Err(ReplicaError::Corrupt(format!("{what}: received {} bytes, the sender sent {}", writer.len(), end.len)));
    }
    writer.finish().await?;
    let id = name.rsplit('/').next().unwrap_or(&name).to_string();
    site.staged.insert(
        id.clone(),
        Staged {
            name,
            origin: start.origin,
            blob: start.blob,
            len: end.len,
            plaintext_len: summary.plaintext_len,
            key_id: header.key_id,
            blake3: end.blake3,
            at: Instant::now(),
        },
    );
    Ok(id)
}

/// Commits the staged blob `id` as `file` of an entry from `origin`: checks
/// it is that file, then gives it the file's path, durably.
pub async fn commit(site: &Site, id: &str, origin: &str, file: &FileRecord, what: &str) -> Result<(), ReplicaError> {
    let mut dirs = crate::blob::DirSyncs::default();
    commit_deferred(site, id, origin, file, what, &mut dirs).await?;
    Ok(site.blobs.sync_dirs(dirs).await?)
}

/// [`commit`], leaving the directories to sync in `dirs` (see
/// [`crate::blob::BlobStore::promote_deferred`]).
pub async fn commit_deferred(site: &Site, id: &str, origin: &str, file: &FileRecord, what: &str, dirs: &mut crate::blob::DirSyncs) -> Result<(), ReplicaError> {
    let staged = site
        .staged
        .take(id)
        .ok_or_else(|| ReplicaError::Invalid(format!("{what}: staged copy {id:?} is not here (expired or lost in a restart); send the file")))?;
    let key_ok = file.key.as_ref().is_none_or(|k| k.key_id == staged.key_id);
    if staged.origin != origin
        || staged.blob != file.blob
        || staged.len != file.ciphertext_len
        || staged.plaintext_len != file.size
        || staged.blake3 != file.ciphertext_blake3
        || !key_ok
    {
        let _ = site.blobs.delete(&staged.name).await;
        return Err(ReplicaError::Corrupt(format!("{what}: the staged copy {id:?} is not this file (path, length, key or hash differ)")));
    }
    site.blobs.promote_deferred(&staged.name, &file.blob, dirs).await?;
    tracing::debug!(site = %site.name, origin, blob = %file.blob, "staged copy committed");
    Ok(())
}

/// Deletes staged blobs no entry claimed in time; returns how many.
pub async fn collect(site: &Site) -> usize {
    let expired = site.staged.expired(site.staged_ttl);
    let n = expired.len();
    for s in expired {
        tracing::info!(site = %site.name, origin = %s.origin, blob = %s.blob, "staged copy never committed; deleting it");
        if let Err(e) = site.blobs.delete(&s.name).await {
            tracing::warn!(name = %s.name, error = %e, "cannot delete an expired staged copy");
        }
    }
    n
}

pub async fn run(site: Arc<Site>) {
    let every = (site.staged_ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        tokio::time::sleep(every).await;
        collect(&site).await;
    }
}

/// The sending side: one file's ciphertext streamed to the in-city peer.
pub struct StageUpload {
    tx: Option<mpsc::Sender<pb::StageChunk>>,
    call: Option<JoinHandle<Result<String, tonic::Status>>>,
    /// Longest wait for the peer to take one chunk.
    patience: Duration,
    peer: String,
    /// The connection the upload runs on (dropped if the peer stops answering).
    slot: ChannelSlot,
    /// The link's count of staged bytes queued for the peer (see
    /// `Link::staged_bytes`).
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl StageUpload {
    /// Starts streaming the file that will be stored as `blob` to `link`'s
    /// peer; `None` if no connection can be made.
    pub fn start(site: &Site, link: &Link, shard: u32, epoch: u64, blob: &str) -> Option<Self> {
        Self::start_on(site, link, &link.stage_channel, site.sync_timeout, shard, epoch, blob)
    }

    /// [`StageUpload::start`] on the connection in `slot`, waiting up to
    /// `patience` for the peer to take each chunk.
    pub fn start_on(site: &Site, link: &Link, slot: &ChannelSlot, patience: Duration, shard: u32, epoch: u64, blob: &str) -> Option<Self> {
        let channel = slot.get(&site.transport, &link.addr)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let start = pb::StageStart { origin: site.name.clone(), shard, epoch, blob: blob.to_string() };
        tx.try_send(pb::StageChunk { part: Some(Part::Start(start)) }).ok()?;
        let call =
            tokio::spawn(
                async move { crate::bulk::call::<_, pb::StageReply>(channel, crate::bulk::STAGE, ReceiverStream::new(rx)).await.map(|r| r.staged_id) },
            );
        Some(Self { tx: Some(tx), call: Some(call), patience, peer: link.peer.clone(), slot: slot.clone(), sent: link.staged_bytes.clone() })
    }

    fn abandon(&mut self, why: &str) {
        if self.tx.take().is_some() {
            tracing::info!(peer = %self.peer, why, "staging abandoned; the file goes with its log entry instead");
        }
        if let Some(call) = self.call.take() {
            call.abort();
        }
    }

    /// Sends ciphertext. Returns false (and gives up) if the peer does not
    /// take it within the sync timeout or the stream failed.
    pub async fn send(&mut self, data: Bytes) -> bool {
        let Some(tx) = &self.tx else { return false };
        let len = data.len() as u64;
        match tokio::time::timeout(self.patience, tx.send(pb::StageChunk { part: Some(Part::Data(data)) })).await {
            Ok(Ok(())) => {
                self.sent.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
                true
            }
            Ok(Err(_)) => {
                self.abandon("the stage stream failed");
                false
            }
            Err(_) => {
                self.abandon("the peer did not take the data within the sync timeout");
                false
            }
        }
    }

    /// Ends the stream without waiting for the peer: the returned id
    /// resolves to the peer's id for the staged blob once the peer has
    /// checked, stored and synced it, or to `None` if it refuses or does not
    /// confirm within the sync timeout (plus time to sync the bytes).
    /// `None` here: the end could not even be sent.
    pub async fn finish(mut self, len: u64, blake3: &str) -> Option<StagedId> {
        let tx = self.tx.take()?;
        let end = pb::StageChunk { part: Some(Part::End(pb::StageEnd { len, blake3: blake3.to_string() })) };
        if !matches!(tokio::time::timeout(self.patience, tx.send(end)).await, Ok(Ok(()))) {
            self.abandon("the peer did not take the end of the stream");
            return None;
        }
        drop(tx);
        let limit = self.patience + Duration::from_millis(len.saturating_mul(1000) / crate::site::PEER_SYNC_RATE);
        let (done, id) = tokio::sync::oneshot::channel();
        let mut call = self.call.take()?;
        let peer = self.peer.clone();
        let reset = self.slot.resetter();
        tokio::spawn(async move {
            let staged = match tokio::time::timeout(limit, &mut call).await {
                Ok(Ok(Ok(id))) => Some(id),
                Ok(Ok(Err(s))) => {
                    tracing::info!(peer = %peer, error = %s.message(), "peer refused the staged copy; the file goes with its log entry instead");
                    None
                }
                Ok(Err(_)) => None,
                Err(_) => {
                    call.abort();
                    reset();
                    tracing::info!(peer = %peer, "peer did not confirm the staged copy in time; the file goes with its log entry instead");
                    None
                }
            };
            let _ = done.send(staged);
        });
        Some(id)
    }
}

impl Drop for StageUpload {
    /// An upload dropped unfinished (a failed put) is cut: the peer keeps
    /// nothing of it.
    fn drop(&mut self) {
        if let (Some(_), Some(call)) = (&self.tx, &self.call) {
            call.abort();
        }
    }
}
