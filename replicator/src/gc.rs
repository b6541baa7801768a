//! Collection of destroyed contracts' ciphertext. The keys are already gone
//! (that is what destroys the contract); this reclaims the space. At the
//! origin, a blob waits until every peer has confirmed the destroy entry,
//! so a peer still catching up can be sent the earlier put it needs.

use std::sync::Arc;
use std::time::Duration;

use crate::meta::MetaBatch;
use crate::site::Site;

const EVERY: Duration = Duration::from_secs(2);
const BATCH: usize = 256;

/// Deletes what can be deleted now; returns how many blobs went.
pub async fn collect(site: &Site) -> usize {
    let queue = match site.meta.gc_queue(BATCH) {
        Ok(q) => q,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the collection queue");
            return 0;
        }
    };
    let confirmed_by_all = site.links.values().map(|l| *l.acked.borrow()).min().unwrap_or(u64::MAX);
    let mut done = MetaBatch::default();
    let mut n = 0;
    for (blob, after) in queue {
        if after > confirmed_by_all {
            continue;
        }
        match site.blobs.delete(&blob).await {
            Ok(()) => {
                done.done_gc(&blob);
                n += 1;
            }
            Err(e) => tracing::warn!(blob = %blob, error = %e, "cannot delete destroyed ciphertext; will retry"),
        }
    }
    if n > 0 {
        if let Err(e) = site.meta.commit(done) {
            tracing::warn!(error = %e, "cannot record collected blobs; will retry");
        }
    }
    n
}

pub async fn run(site: Arc<Site>) {
    loop {
        collect(&site).await;
        let _ = tokio::time::timeout(EVERY, site.gc_wake.notified()).await;
    }
}
