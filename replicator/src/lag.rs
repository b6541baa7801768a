//! Replication lag of an outgoing link, in entries, bytes and seconds.

use tandem_controller::health::LinkLag;

use crate::error::ReplicaError;
use crate::site::{Link, Site};

/// How far `link`'s peer is behind this site's log.
pub fn of_link(site: &Site, link: &Link) -> Result<LinkLag, ReplicaError> {
    of_link_at(site, link, site.meta.log_head()?)
}

/// How far `link`'s peer is behind this site's log up to `head` (a head
/// read earlier, as a heartbeat reports it with its view).
pub fn of_link_at(site: &Site, link: &Link, head: u64) -> Result<LinkLag, ReplicaError> {
    let acked = (*link.acked.borrow()).min(head);
    if acked == head {
        return Ok(LinkLag { peer: link.peer.clone(), ..Default::default() });
    }
    let cum = |seq: u64| -> Result<u64, ReplicaError> {
        Ok(match seq {
            0 => 0,
            n => site.meta.log_stamp(n)?.map(|e| e.cum_bytes).unwrap_or(0),
        })
    };
    // No entry: lost with the store this site was restored over (see
    // `MetaStore::log_floor`); the peer steps over it at once.
    let now = site.clock.now_unix_ms();
    let oldest = site.meta.log_stamp(acked + 1)?.map(|e| e.at_unix_ms).unwrap_or(now);
    Ok(LinkLag { peer: link.peer.clone(), entries: head - acked, bytes: cum(head)?.saturating_sub(cum(acked)?), seconds: now.saturating_sub(oldest) / 1000 })
}
