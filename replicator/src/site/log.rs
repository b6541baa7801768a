//! This site's own log: appending an entry (under the log lock, with the
//! ownership re-checked there) and the writes that shred a contract.

use super::Site;
use crate::error::ReplicaError;
use crate::meta::MetaBatch;
use crate::model::{Change, ContractHead, LogEntry, Tombstone};

impl Site {
    /// Appends `change` to this site's log in one synced batch with the writes
    /// `fill` adds (given the entry's sequence number). If `fill` fails,
    /// nothing is written.
    pub async fn append(
        &self,
        shard: u32,
        epoch: u64,
        change: Change,
        fill: impl FnOnce(u64, &mut MetaBatch) -> Result<(), ReplicaError>,
    ) -> Result<u64, ReplicaError> {
        let _log = self.log_lock.lock().await;
        // Checked again under the log lock: a heartbeat reads its view index
        // and log head under the same lock, so once it reports a view that
        // drains or moves this shard, no later append can slip in (what a
        // switchover relies on).
        self.still_owner(shard, epoch)?;
        let head = self.meta.log_head()?;
        let prev_cum = match head {
            0 => 0,
            n => self.meta.log_stamp(n)?.map(|e| e.cum_bytes).unwrap_or(0),
        };
        let payload = match &change {
            Change::Put(v) => v.payload_bytes(),
            Change::Destroy { .. } | Change::Rewrap(_) => 512,
        };
        let entry =
            LogEntry { origin: self.name.clone(), seq: head + 1, cum_bytes: prev_cum + payload, at_unix_ms: self.clock.now_unix_ms(), shard, epoch, change };
        let mut batch = MetaBatch::default();
        fill(entry.seq, &mut batch)?;
        if let Change::Put(v) | Change::Rewrap(v) = &entry.change {
            batch.note_keyed_entry(&v.tenant, &v.contract_id, entry.seq);
        }
        batch.append_log(&entry);
        batch.set_epoch(shard, epoch.max(self.meta.epoch(shard)?));
        // A slow disk's sync, before the batch is visible (as rocksdb
        // shows a synced write only once its log record is on disk).
        self.meta.slow_sync().await;
        self.meta.commit(batch)?;
        self.log_grew.send_replace(entry.seq);
        Ok(entry.seq)
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

/// A version without its keys or sealed PII: what is left of a destroyed one.
fn strip_keys(v: &mut crate::model::VersionRecord) {
    v.pii_key = None;
    v.pii.clear();
    for f in &mut v.files {
        f.key = None;
    }
}
