//! Outgoing replication: one shipper task per peer streams this site's
//! change log, entry by entry, from the peer's durable cursor.
//!
//! The peer's cursor is asked for on every (re)connection, so after a
//! broken link, a restart of either side or a lost ack, shipping resumes
//! exactly where the peer's durable state is, never resending what it has.
//! Ciphertext and wrapped keys travel as they are stored; nothing is
//! decrypted. Every call is bounded, and a timed-out connection is dropped
//! and rebuilt (a connection across a silent partition can hang forever).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tandem_proto::replicator as pb;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::blob::BlobStore;
use crate::model::LogEntry;
use crate::peer::{client, RPC_TIMEOUT};
use crate::prefetch::Prefetch;
use crate::site::{Link, Site};

/// An entry's transfer may take this long, plus time for its bytes at
/// [`MIN_RATE`] (or the link's cap, if lower).
const ENTRY_TIMEOUT_BASE: Duration = Duration::from_secs(10);
const MIN_RATE: u64 = 2 * 1024 * 1024;

/// Paces a link to its configured bandwidth (a token bucket without burst).
pub struct Pacer {
    bytes_per_s: u64,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    pub fn new(bytes_per_s: u64) -> Self {
        Self { bytes_per_s, next: Mutex::new(None) }
    }

    /// Waits until `n` more bytes may be sent.
    pub async fn take(&self, n: usize) {
        if self.bytes_per_s == 0 {
            return;
        }
        let start = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let start = next.map_or(now, |t| t.max(now));
            *next = Some(start + Duration::from_secs_f64(n as f64 / self.bytes_per_s as f64));
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

/// The chunks that carry `entry`: its JSON, then each file's ciphertext
/// (read from the blob store in [`crate::blob::IO_CHUNK`] pieces), or, for
/// a file in `staged` (blob path -> the peer's staged id), only a reference
/// to the copy the peer already holds.
/// Reading stops (and the stream ends early) if a blob cannot be read; the
/// receiver then refuses the truncated entry.
/// `progress`, when given, counts the ciphertext bytes handed to the stream.
pub fn entry_chunks(
    blobs: BlobStore,
    entry: LogEntry,
    staged: BTreeMap<String, String>,
    pacer: Option<Arc<Pacer>>,
    progress: Option<Arc<tokio::sync::watch::Sender<u64>>>,
) -> ReceiverStream<pb::ApplyChunk> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let json = serde_json::to_vec(&entry).expect("log entries serialise");
        if tx.send(pb::ApplyChunk { part: Some(pb::apply_chunk::Part::EntryJson(json.into())) }).await.is_err() {
            return;
        }
        for file in entry.files() {
            let staged_id = staged.get(&file.blob).cloned().unwrap_or_default();
            let is_staged = !staged_id.is_empty();
            let start = pb::FileStart { name: file.name.clone(), staged_id };
            if tx.send(pb::ApplyChunk { part: Some(pb::apply_chunk::Part::File(start)) }).await.is_err() {
                return;
            }
            if is_staged {
                continue;
            }
            let mut stream = match blobs.read(&file.blob).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(blob = %file.blob, error = %e, "cannot read ciphertext to replicate");
                    return;
                }
            };
            while let Some(chunk) = stream.next().await {
                let chunk: Bytes = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(blob = %file.blob, error = %e, "ciphertext read failed while replicating");
                        return;
                    }
                };
                if let Some(p) = &pacer {
                    p.take(chunk.len()).await;
                }
                let len = chunk.len() as u64;
                if tx.send(pb::ApplyChunk { part: Some(pb::apply_chunk::Part::Data(chunk)) }).await.is_err() {
                    return;
                }
                if let Some(p) = &progress {
                    p.send_modify(|sent| *sent += len);
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Ships to `link`'s peer until the task is dropped.
pub async fn run(site: Arc<Site>, peer: String) {
    let Some(link) = site.links.get(&peer) else { return };
    let pacer = Arc::new(Pacer::new(link.send_limit));
    let mut backoff = Duration::from_millis(100);
    let mut last_error = String::new();
    loop {
        let err = ship(&site, link, &pacer, &mut backoff).await;
        if err != last_error {
            tracing::warn!(site = %site.name, peer = %peer, error = %err, "replication link interrupted; retrying");
            last_error = err;
        }
        // Back off, unless the peer shows it is up (its own shipper asked
        // this site for a cursor): a restarted site gets its backlog at once.
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = link.peer_seen.notified() => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Ships entries until something fails; returns what failed.
async fn ship(site: &Arc<Site>, link: &Link, pacer: &Arc<Pacer>, backoff: &mut Duration) -> String {
    let channel = match site.transport.channel(&link.addr) {
        Ok(c) => c,
        Err(e) => return format!("bad address {}: {e}", link.addr),
    };
    let mut client = client(channel.clone());
    let req = pb::CursorRequest { origin: site.name.clone() };
    let (cursor, batches) = match tokio::time::timeout(RPC_TIMEOUT, client.cursor(req)).await {
        Ok(Ok(r)) => {
            let r = r.into_inner();
            (r.applied_seq, r.takes_batches)
        }
        Ok(Err(s)) => return format!("cursor: {}", s.message()),
        Err(_) => return "cursor: no answer".into(),
    };
    // A peer holding more of this site's log than this site has: the store
    // was replaced, or restored from an old copy, behind tandem's back. Its
    // next entries would reuse numbers the peer holds (and skips), so it
    // must catch up as a restored site first; the cursor is not believed.
    // Until the peer's cursor has been checked once in this process, the
    // bound is the head the store held at start: entries appended since
    // may carry numbers the peer already holds from a lost copy.
    let head = match (site.meta.log_head(), site.meta.log_floor()) {
        (Ok(h), _) if link.acked_known.load(std::sync::atomic::Ordering::SeqCst) => h,
        (Ok(_), Ok(floor)) => site.started_head.max(floor),
        (Err(e), _) | (_, Err(e)) => return e.to_string(),
    };
    if cursor > head {
        let why = format!(
            "{} holds entries up to {cursor} of this site's log, which ends at {head} here: this store is older than its peers' copy (replaced or restored without `tandem backup restore`?)",
            link.peer
        );
        crate::restore::store_behind(site, &why);
        return format!("cursor: {why}");
    }
    link.acked.send_replace(cursor);
    link.acked_known.store(true, std::sync::atomic::Ordering::SeqCst);
    tracing::info!(site = %site.name, peer = %link.peer, cursor, "replication link up; shipping from the peer's cursor");
    let mut grew = site.log_grew.subscribe();
    // Quarantine count when the peer last had every retraction it needs.
    let mut retracted: Option<u64> = None;
    let mut prefetch = Prefetch::default();
    // Set after the peer refused a group: the next entry goes alone.
    let mut single = false;
    loop {
        let head = match site.meta.log_head() {
            Ok(h) => h,
            Err(e) => return e.to_string(),
        };
        let acked = *link.acked.borrow();
        if acked >= head {
            // Idle: settle retractions (retried each idle second until done).
            let quarantines = *site.quarantines.borrow();
            if retracted != Some(quarantines) && retract_all(site, link, &mut client).await {
                retracted = Some(quarantines);
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), grew.changed()).await;
            continue;
        }
        let entry = match site.meta.log_entry(acked + 1) {
            Ok(Some(e)) => e,
            Ok(None) => match site.meta.log_floor() {
                // Lost with the store this site was restored over: the peer
                // steps over them (see `crate::apply::skip_lost`).
                Ok(floor) if acked < floor => match skip_lost(link, &mut client, &site.name, acked + 1, floor).await {
                    Ok(()) => continue,
                    Err(e) => return e,
                },
                Ok(_) => return format!("log entry {} is missing", acked + 1),
                Err(e) => return e.to_string(),
            },
            Err(e) => return e.to_string(),
        };
        let held = match crate::quarantine::holds(site, &entry) {
            Ok(h) => h,
            Err(e) => return e.to_string(),
        };
        if held {
            match skip(site, link, &mut client, &entry).await {
                Ok(()) => continue,
                Err(e) => return e,
            }
        }
        // A put of a contract destroyed here since: its keys are gone and its
        // ciphertext may be collected (a peer far behind, or restored from a
        // backup, meets it). Nothing of it is sent.
        match destroyed_since(site, &entry) {
            Ok(true) => match skip_destroyed(link, &mut client, &site.name, &entry).await {
                Ok(()) => continue,
                Err(e) => return e,
            },
            Ok(false) => {}
            Err(e) => return e.to_string(),
        }
        // A backlog on a link no write waits for: stage what follows over
        // parallel connections while this entry goes.
        if head > acked + 1 && !crate::write::waits_for(site, &link.peer) {
            prefetch.ahead(site, link, acked, head);
        }
        // The entries that follow go in the same stream while they need no
        // step-over (the peer commits them together: see `crate::apply`).
        let group = if batches && !single { follow_on(site, entry, head) } else { Ok(vec![entry]) };
        let group = match group {
            Ok(g) => g,
            Err(e) => return e.to_string(),
        };
        let rate = match link.send_limit {
            0 => MIN_RATE,
            cap => cap.min(MIN_RATE),
        };
        let entry_limit = |e: &crate::model::LogEntry| ENTRY_TIMEOUT_BASE + Duration::from_secs(e.files().iter().map(|f| f.ciphertext_len).sum::<u64>() / rate);
        let limit: Duration = group.iter().map(entry_limit).sum();
        let (first, last) = (group[0].seq, group[group.len() - 1].seq);
        let many = group.len() > 1;
        // Files already staged at the peer go as references, once the peer
        // has confirmed them (each confirmation is bounded: see
        // `StageUpload::finish`). Whatever the outcome, they are forgotten
        // here: a retry sends the bytes.
        let mut parts = Vec::with_capacity(group.len());
        for entry in group {
            let mut staged = BTreeMap::new();
            // Each entry's staged files wait for as long as that entry
            // would take to send, not the whole group's.
            let wait = entry_limit(&entry);
            for (blob, id) in link.take_staged(entry.files().iter().map(|f| f.blob.as_str())) {
                if let Ok(Ok(Some(id))) = tokio::time::timeout(wait, id).await {
                    staged.insert(blob, id);
                }
            }
            parts.push((entry, staged));
        }
        let (blobs, pacer, sent) = (site.blobs.clone(), pacer.clone(), link.sent.clone());
        let chunks =
            futures::stream::iter(parts).flat_map(move |(entry, staged)| entry_chunks(blobs.clone(), entry, staged, Some(pacer.clone()), Some(sent.clone())));
        let call = crate::bulk::call::<_, pb::ApplyReply>(channel.clone(), crate::bulk::APPLY, chunks);
        let what = if many { format!("entries {first}..={last}") } else { format!("entry {first}") };
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(r)) => {
                link.acked.send_replace(r.applied_seq);
                *backoff = Duration::from_millis(100);
                single = false;
            }
            // The peer kept the entries before the one it refused: the
            // next turn sends from its cursor, one entry at a time, so a
            // refusal is handled for the entry it concerns.
            Ok(Err(s)) if many => {
                tracing::debug!(site = %site.name, peer = %link.peer, %what, error = %s.message(), "a group of entries was refused; sending one at a time");
                match refreshed_cursor(link, &mut client, &site.name).await {
                    Ok(()) => single = true,
                    Err(e) => return e,
                }
            }
            Ok(Err(s)) if is_stale_epoch(&s) => {
                let entry = match site.meta.log_entry(first) {
                    Ok(Some(e)) => e,
                    Ok(None) => return format!("log entry {first} is missing"),
                    Err(e) => return e.to_string(),
                };
                if let Err(e) = stale_refused(site, link, &mut client, &entry, s.message()).await {
                    return e;
                }
            }
            Ok(Err(s)) => return format!("{what}: {}", s.message()),
            Err(_) => return format!("{what}: not confirmed within {} s", limit.as_secs()),
        }
    }
}

/// Most entries, and ciphertext bytes sent inline, one Apply stream
/// carries (the peer commits at most [`crate::apply::MAX_GROUP`] at once).
const MAX_GROUP: usize = crate::apply::MAX_GROUP;
const MAX_GROUP_BYTES: u64 = 8 << 20;

/// `entry` and the entries after it, up to `head`, that can go in one
/// stream with it: stored, not held back (quarantined here, or a put of a
/// contract destroyed since: those need a step-over), and within the
/// group's bounds.
fn follow_on(site: &Site, entry: LogEntry, head: u64) -> Result<Vec<LogEntry>, crate::error::ReplicaError> {
    let mut bytes: u64 = entry.files().iter().map(|f| f.ciphertext_len).sum();
    let mut group = vec![entry];
    while group.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
        let seq = group[group.len() - 1].seq + 1;
        if seq > head {
            break;
        }
        let Some(next) = site.meta.log_entry(seq)? else { break };
        if crate::quarantine::holds(site, &next)? || destroyed_since(site, &next)? {
            break;
        }
        bytes += next.files().iter().map(|f| f.ciphertext_len).sum::<u64>();
        group.push(next);
    }
    Ok(group)
}

/// Asks the peer for its cursor again (after it refused a group, some of
/// which it may have kept).
async fn refreshed_cursor(link: &Link, client: &mut Client, me: &str) -> Result<(), String> {
    match tokio::time::timeout(RPC_TIMEOUT, client.cursor(pb::CursorRequest { origin: me.to_string() })).await {
        Ok(Ok(r)) => {
            link.acked.send_replace(r.into_inner().applied_seq);
            Ok(())
        }
        Ok(Err(s)) => Err(format!("cursor: {}", s.message())),
        Err(_) => Err("cursor: no answer".into()),
    }
}

fn is_stale_epoch(s: &tonic::Status) -> bool {
    s.metadata().get(tandem_proto::ERROR_CODE_METADATA).and_then(|v| v.to_str().ok()) == Some(tandem_proto::error_code::STALE_EPOCH)
}

/// The peer refused `entry` as stale: its shard has moved on. If the
/// shard's current owner never confirmed the entry, it is a divergent
/// write: quarantine it here. Either way the peer can never apply it, so
/// step over it (an entry the owner has reaches the peer from the owner,
/// through anti-entropy).
async fn stale_refused(site: &Site, link: &Link, client: &mut Client, entry: &LogEntry, why: &str) -> Result<(), String> {
    let now = site.view.latest().and_then(|s| s.shards.get(entry.shard as usize).map(|o| (o.owner.clone(), o.epoch)));
    // Judge only with a view that shows the move: a stale view still names
    // this site as the owner.
    let owner = match now {
        Some((owner, epoch)) if epoch > entry.epoch => owner,
        _ => return Err(format!("entry {}: refused as stale; waiting for this site's controller view to show the shard's new owner", entry.seq)),
    };
    let owner_has_it = match site.links.get(&owner) {
        // The owner is the peer that just refused it.
        Some(l) if l.peer == link.peer => false,
        Some(l) if l.acked_known.load(std::sync::atomic::Ordering::SeqCst) => *l.acked.borrow() >= entry.seq,
        Some(_) => return Err(format!("entry {}: refused as stale; waiting to learn whether {owner} has it", entry.seq)),
        // This site owns the shard again: the entry is its own history.
        None => true,
    };
    if !owner_has_it {
        let reason = format!("{} refused it ({why}); {owner} owns the shard and never received it", link.peer);
        crate::quarantine::own_entry(site, entry, &reason).await.map_err(|e| format!("entry {}: cannot quarantine: {e}", entry.seq))?;
    }
    skip(site, link, client, entry).await
}

type Client = tandem_proto::replicator::replication_client::ReplicationClient<Channel>;

/// Asks the peer to quarantine its copies of this site's quarantined
/// writes that it applied (see [`crate::quarantine::retract`]). Returns
/// whether every one was settled; the rest are retried later.
async fn retract_all(site: &Site, link: &Link, client: &mut Client) -> bool {
    let own = match crate::quarantine::own_retractable(site) {
        Ok(q) => q,
        Err(e) => {
            tracing::warn!(site = %site.name, error = %e, "cannot list quarantined writes");
            return false;
        }
    };
    // Sent to every peer: one that never applied the write answers that it
    // holds no copy (the origin never ships a quarantined entry again).
    let mut settled = true;
    for q in &own {
        let req = pb::RetractRequest {
            origin: site.name.clone(),
            seq: q.seq,
            shard: q.shard,
            epoch: q.epoch,
            tenant: q.tenant.clone(),
            contract_id: q.contract_id.clone(),
            version: q.version,
        };
        match tokio::time::timeout(RPC_TIMEOUT, client.retract(req)).await {
            Ok(Ok(_)) => {}
            Ok(Err(s)) => {
                tracing::debug!(site = %site.name, peer = %link.peer, seq = q.seq, error = %s.message(), "retraction not accepted yet");
                settled = false;
            }
            Err(_) => settled = false,
        }
    }
    settled
}

/// Whether `entry` puts a version of a contract this site has destroyed
/// since.
fn destroyed_since(site: &Site, entry: &LogEntry) -> Result<bool, crate::error::ReplicaError> {
    let crate::model::Change::Put(v) = &entry.change else { return Ok(false) };
    Ok(site.meta.head(v.shard, &v.tenant, &v.contract_id)?.is_some_and(|h| h.destroyed.is_some()))
}

/// Asks the peer to step over `entry`, a put of a contract destroyed here
/// since (see [`crate::apply::skip`]).
async fn skip_destroyed(link: &Link, client: &mut Client, me: &str, entry: &LogEntry) -> Result<(), String> {
    let req = pb::SkipRequest { origin: me.to_string(), seq: entry.seq, shard: entry.shard, epoch: entry.epoch, lost_through: 0, destroyed_since: true };
    send_skip(link, client, req, &format!("entry {} (its contract was destroyed since)", entry.seq)).await
}

/// Asks the peer to step over entries `from..=through`, lost with this
/// site's old store.
async fn skip_lost(link: &Link, client: &mut Client, me: &str, from: u64, through: u64) -> Result<(), String> {
    let req = pb::SkipRequest { origin: me.to_string(), seq: from, shard: 0, epoch: 0, lost_through: through, destroyed_since: false };
    send_skip(link, client, req, &format!("lost entries {from}..={through}")).await?;
    tracing::warn!(site = %me, peer = %link.peer, from, through, "entries lost with the store this site was restored over: the peer steps over them");
    Ok(())
}

/// Asks the peer to step over `entry`, quarantined here (see
/// [`crate::apply::skip`]).
async fn skip(site: &Site, link: &Link, client: &mut Client, entry: &LogEntry) -> Result<(), String> {
    let req = pb::SkipRequest { origin: site.name.clone(), seq: entry.seq, shard: entry.shard, epoch: entry.epoch, lost_through: 0, destroyed_since: false };
    send_skip(link, client, req, &format!("entry {}", entry.seq)).await
}

/// Sends one step-over request and takes the peer's cursor after it;
/// `what` names the entries in the error.
async fn send_skip(link: &Link, client: &mut Client, req: pb::SkipRequest, what: &str) -> Result<(), String> {
    match tokio::time::timeout(RPC_TIMEOUT, client.skip(req)).await {
        Ok(Ok(r)) => {
            link.acked.send_replace(r.into_inner().applied_seq);
            Ok(())
        }
        Ok(Err(s)) => Err(format!("stepping over {what}: {}", s.message())),
        Err(_) => Err(format!("stepping over {what}: no answer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pacer_spreads_bytes_over_time() {
        let pacer = Pacer::new(1000);
        let start = Instant::now();
        for _ in 0..5 {
            pacer.take(500).await;
        }
        // 2500 bytes at 1000 B/s: the fifth chunk starts after 2 s.
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_pacer_never_waits() {
        let pacer = Pacer::new(0);
        let start = Instant::now();
        pacer.take(1 << 30).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
