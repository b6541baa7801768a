//! Ahead of a backlogged shipper: the files of the entries after the one
//! it is sending are staged at the peer ([`crate::stage`]), each over one
//! of several connections, so the shipper's entries carry only references.
//!
//! Why: the shipper sends one entry at a time and waits for the peer's
//! confirmation, on one TCP connection. On a lossy link every lost segment
//! holds that connection for a retransmission timeout, so one connection
//! carries about MSS / (loss x RTO): at 5 % loss some 150 KB/s, less than
//! the city writes, and the DR lag would grow for as long as the loss
//! lasts. Staging the next entries' bytes over [`STREAMS`] connections at
//! once multiplies that by the number of connections, and a loss holds one
//! file instead of the whole log. The peer still applies entries in log
//! order; nothing here changes what it accepts (a staged copy is checked
//! against its entry when the entry claims it), and any upload that fails
//! is forgotten: the shipper then sends that file with its entry.
//!
//! Only links that no write waits for use it (the DR link, and an in-city
//! link in async mode): a sync write's stall detector watches the
//! shipper's own progress, which staged uploads do not show.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::model::FileRecord;
use crate::site::{ChannelSlot, Link, Site};
use crate::stage::StageUpload;

/// Entries staged ahead of the one being shipped.
pub const AHEAD: u64 = 16;
/// Connections the staged uploads spread over.
pub const STREAMS: usize = 8;
/// Longest wait for the peer to take one chunk of a staged upload: losses
/// may hold a connection for seconds without it being dead.
const PATIENCE: Duration = Duration::from_secs(10);

/// The staging ahead of one shipper connection's run.
pub struct Prefetch {
    slots: Vec<ChannelSlot>,
    next_slot: usize,
    /// Highest log entry whose files were handed to an upload.
    staged_through: u64,
}

impl Default for Prefetch {
    fn default() -> Self {
        Prefetch { slots: (0..STREAMS).map(|_| ChannelSlot::default()).collect(), next_slot: 0, staged_through: 0 }
    }
}

impl Prefetch {
    /// Starts uploads for the files of entries `acked + 2 ..= head` (at most
    /// [`AHEAD`] past `acked`) not already staged: entry `acked + 1` is the
    /// one the shipper sends now, with its own bytes or a staged copy.
    pub fn ahead(&mut self, site: &Arc<Site>, link: &Link, acked: u64, head: u64) {
        let from = self.staged_through.max(acked + 1) + 1;
        let to = head.min(acked + AHEAD);
        for seq in from..=to {
            let entry = match site.meta.log_entry(seq) {
                Ok(Some(e)) => e,
                _ => return,
            };
            self.staged_through = seq;
            if crate::quarantine::holds(site, &entry).unwrap_or(true) {
                continue;
            }
            for file in entry.files().iter().filter(|f| !link.has_staged(&f.blob)) {
                let slot = self.slots[self.next_slot % STREAMS].clone();
                self.next_slot += 1;
                if let Some(upload) = StageUpload::start_on(site, link, &slot, PATIENCE, entry.shard, entry.epoch, &file.blob) {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    link.note_staged(&file.blob, rx);
                    tokio::spawn(upload_file(site.clone(), upload, file.clone(), tx));
                }
            }
        }
    }
}

/// Streams one stored file to the peer; `done` gets the peer's staged id,
/// or `None` when it cannot be staged (the shipper then sends the bytes).
async fn upload_file(site: Arc<Site>, mut upload: StageUpload, file: FileRecord, done: tokio::sync::oneshot::Sender<Option<String>>) {
    let mut stream = match site.blobs.read(&file.blob).await {
        Ok(s) => s,
        Err(_) => {
            let _ = done.send(None);
            return;
        }
    };
    while let Some(chunk) = stream.next().await {
        let sent = match chunk {
            Ok(c) => upload.send(c).await,
            Err(_) => false,
        };
        if !sent {
            let _ = done.send(None);
            return;
        }
    }
    let id = match upload.finish(file.ciphertext_len, &file.ciphertext_blake3).await {
        Some(id) => id.await.ok().flatten(),
        None => None,
    };
    let _ = done.send(id);
}
