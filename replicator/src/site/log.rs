//! This site's own log: appending an entry (under the log lock, with the
//! ownership re-checked there) and the writes that shred a contract.

use super::Site;
use crate::error::ReplicaError;
use crate::meta::MetaBatch;
use crate::model::{Change, ContractHead, LogEntry, Tombstone};

/// Entries numbered under the log lock and waiting for their synced
/// commit, and what the next one follows: several appends share one
/// commit (a group commit), so a busy site's log grows at its disk's
/// sync rate times the group, not one entry per sync.
#[derive(Default)]
pub(crate) struct Appends {
    queue: std::sync::Mutex<Vec<Queued>>,
    /// The newest entry numbered, committed or not, and its `cum_bytes`
    /// (`None`: read the store).
    last: std::sync::Mutex<Option<(u64, u64)>>,
    /// Held by the append that commits the queue (never across an await:
    /// an append whose caller gives up cannot leave entries behind).
    committing: std::sync::Mutex<()>,
}

struct Queued {
    seq: u64,
    batch: MetaBatch,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

impl Appends {
    pub(crate) fn last(&self) -> Option<(u64, u64)> {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_last(&self, last: Option<(u64, u64)>) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = last;
    }

    /// Forgets the newest numbered entry if it is still `seq` (its group
    /// failed): the next append numbers from the store again. If later
    /// entries were numbered meanwhile they fail at their own commit (a
    /// gap), and the newest of those resets it; resetting here as well
    /// would number a second entry under a sequence number still queued.
    fn forget_last_if(&self, seq: u64) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|(s, _)| s == seq) {
            *last = None;
        }
    }

    /// Whether no numbered entry waits for its commit and none is being
    /// committed (whoever commits holds `committing`, never across an
    /// await).
    fn settled(&self) -> bool {
        let Some(_committing) = self.try_committing() else { return false };
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    /// The right to commit the queue, unless another append holds it. A
    /// commit that panicked leaves nothing half-done that matters here
    /// (its group's appends see their senders dropped), so a poisoned
    /// lock is taken as it is.
    fn try_committing(&self) -> Option<std::sync::MutexGuard<'_, ()>> {
        match self.committing.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    fn take_queue(&self) -> Vec<Queued> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Site {
    /// Appends `change` to this site's log in one synced batch with the writes
    /// `fill` adds (given the entry's sequence number). If `fill` fails,
    /// nothing is written. Returns once the entry is committed (with
    /// whatever other appends were waiting: see [`Appends`]).
    pub async fn append(
        &self,
        shard: u32,
        epoch: u64,
        change: Change,
        fill: impl FnOnce(u64, &mut MetaBatch) -> Result<(), ReplicaError>,
    ) -> Result<u64, ReplicaError> {
        let (seq, done) = {
            let _log = self.log_lock.lock().await;
            // Checked again under the log lock: a heartbeat reads its view
            // index and log head (numbered entries included) under the same
            // lock, so once it reports a view that drains or moves this
            // shard, no later append can slip in (what a switchover relies
            // on).
            self.still_owner(shard, epoch)?;
            let stored = self.meta.log_head()?;
            let (head, prev_cum) = match self.appends.last() {
                Some((seq, cum)) if seq >= stored => (seq, cum),
                _ => (stored, if stored == 0 { 0 } else { self.meta.log_stamp(stored)?.map(|e| e.cum_bytes).unwrap_or(0) }),
            };
            let payload = match &change {
                Change::Put(v) => v.payload_bytes(),
                Change::Destroy { .. } | Change::Rewrap(_) => 512,
            };
            let entry = LogEntry {
                origin: self.name.clone(),
                seq: head + 1,
                cum_bytes: prev_cum + payload,
                at_unix_ms: self.clock.now_unix_ms(),
                shard,
                epoch,
                change,
            };
            let mut batch = MetaBatch::default();
            fill(entry.seq, &mut batch)?;
            if let Change::Put(v) | Change::Rewrap(v) = &entry.change {
                batch.note_keyed_entry(&v.tenant, &v.contract_id, entry.seq);
            }
            batch.append_log(&entry);
            // Never lowers the stored epoch: the commit keeps the higher one.
            batch.set_epoch(shard, epoch);
            let (tx, rx) = tokio::sync::oneshot::channel();
            // Set before the entry is queued, so a group that takes it and
            // fails finds it as the newest (see `forget_last_if`).
            self.appends.set_last(Some((entry.seq, entry.cum_bytes)));
            self.appends.queue.lock().unwrap_or_else(|p| p.into_inner()).push(Queued { seq: entry.seq, batch, done: tx });
            (entry.seq, rx)
        };
        // Commits the queue even if this append's caller gives up during
        // the sync below: a numbered entry must never be left waiting.
        let commit = CommitOnDrop(self);
        // A slow disk's sync, before the batch is visible (as rocksdb
        // shows a synced write only once its log record is on disk).
        self.meta.slow_sync().await;
        drop(commit);
        match done.await {
            Ok(Ok(())) => Ok(seq),
            Ok(Err(e)) => Err(ReplicaError::Internal(e)),
            Err(_) => Err(ReplicaError::Internal("the log commit was abandoned".into())),
        }
    }

    /// Commits every numbered entry waiting, a synced write at a time,
    /// unless another append is doing so: it then also commits what was
    /// queued meanwhile (checked again after it lets go, so nothing is
    /// left waiting).
    fn commit_appends(&self) {
        loop {
            {
                let Some(_committing) = self.appends.try_committing() else { return };
                loop {
                    let queued = self.appends.take_queue();
                    if queued.is_empty() {
                        break;
                    }
                    self.commit_group(queued);
                }
            }
            if self.appends.queue.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
                return;
            }
        }
    }

    /// Commits `queued` (numbered in order) in one synced write and tells
    /// each append how it went.
    fn commit_group(&self, queued: Vec<Queued>) {
        let first = queued[0].seq;
        let newest = queued[queued.len() - 1].seq;
        // Each entry follows the one before (a second numbering from the
        // store's head, after a failed group, must never share a number).
        let in_order = queued.iter().zip(first..).all(|(q, seq)| q.seq == seq);
        let mut batch = MetaBatch::default();
        let mut waiting = Vec::with_capacity(queued.len());
        for q in queued {
            batch.absorb(q.batch);
            waiting.push(q.done);
        }
        // Numbering continues from the store's head: after a failed commit
        // (or the head moved under a restore), entries numbered past it
        // would leave a gap, so they fail too and numbering starts again.
        let result = match self.meta.log_head() {
            Ok(head) if head + 1 == first && in_order => self.meta.commit(batch).map_err(|e| e.to_string()),
            Ok(head) if head + 1 == first => Err(format!("entries {first}..={newest} are not numbered one after the other; nothing was written")),
            Ok(head) => Err(format!("entry {first} was numbered after a failed commit (the log ends at {head}); nothing was written")),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => {
                self.log_grew.send_replace(newest);
            }
            Err(_) => self.appends.forget_last_if(newest),
        }
        for done in waiting {
            let _ = done.send(result.clone());
        }
    }

    /// Waits until every entry numbered so far is committed or has failed
    /// (committing the queue itself if need be, after the disk's sync as
    /// an append would). Called under the log lock, so nothing is numbered
    /// meanwhile; the committer never takes that lock.
    pub(crate) async fn settle_appends(&self) {
        loop {
            if !self.appends.queue.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
                self.meta.slow_sync().await;
                self.commit_appends();
            }
            if self.appends.settled() {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    /// The writes that shred a contract: every version loses its keys, the head
    /// records the tombstone, the ciphertext is queued for collection once
    /// `gc_after` (a log position every peer must have confirmed; 0: at once),
    /// and this site's own log entries that carried the keys lose them too
    /// (no wrapped key of a destroyed contract is left here, nor in a backup
    /// taken later; entries of builds before the index are not found).
    pub fn shred(&self, head: &ContractHead, tombstone: &Tombstone, gc_after: u64, batch: &mut MetaBatch) -> Result<(), ReplicaError> {
        for seq in self.meta.keyed_entries(&head.tenant, &head.contract_id)? {
            if let Some(mut e) = self.meta.log_entry(seq)? {
                if let Change::Put(v) | Change::Rewrap(v) = &mut e.change {
                    strip_keys(v);
                }
                batch.append_log(&e);
            }
            batch.forget_keyed_entry(&head.tenant, &head.contract_id, seq);
        }
        for mut v in self.meta.versions(&head.tenant, &head.contract_id)? {
            strip_keys(&mut v);
            for f in &v.files {
                batch.queue_gc(&f.blob, gc_after);
            }
            batch.put_version(&v);
        }
        let mut head = head.clone();
        head.destroyed = Some(tombstone.clone());
        batch.put_head(&head);
        Ok(())
    }
}

/// Commits the numbered entries waiting when dropped (see `Site::append`).
struct CommitOnDrop<'a>(&'a Site);

impl Drop for CommitOnDrop<'_> {
    fn drop(&mut self) {
        self.0.commit_appends();
    }
}

/// A version without its keys or sealed PII: what is left of a destroyed one.
fn strip_keys(v: &mut crate::model::VersionRecord) {
    v.pii_key = None;
    v.pii.clear();
    for f in &mut v.files {
        f.key = None;
    }
}

#[cfg(test)]
mod tests {
    use super::Appends;

    // A failed group forgets the newest numbered entry only if nothing was
    // numbered after it: else the next append would reuse a number that
    // is still queued.
    #[test]
    fn a_failed_group_resets_numbering_only_if_it_was_the_newest() {
        let appends = Appends::default();
        appends.set_last(Some((7, 70)));
        appends.forget_last_if(6);
        assert_eq!(appends.last(), Some((7, 70)), "entry 7 was numbered after the failed group");
        appends.forget_last_if(7);
        assert_eq!(appends.last(), None);
        assert!(appends.settled(), "nothing queued");
    }
}
