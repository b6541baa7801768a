//! Sync replication with the in-city peer, and the way back to sync.
//!
//! [`confirm`] runs after a write is durable here and decides when it may be
//! acknowledged: at once when this site's direction (its writes towards the
//! peer) is `async`, after the peer confirmed it when it is `sync` or
//! `sync-recover`. If the peer neither confirms nor receives anything for
//! the sync timeout, this direction is first recorded `async` through the
//! controller (a Raft commit), and only then is the write acknowledged: the
//! controller never believes a peer holds this site's writes when it may
//! not. The peer's own direction is the peer's to change.
//!
//! The mode is read *after* the write is in the log, and the controller view
//! never goes back in time; [`recover`] relies on both (see `ops::pair_mode`
//! in the controller for the protocol).

use std::time::Duration;

use tandem_controller::ops::PairModeSpec;
use tandem_controller::state::ReplicationMode;

use crate::error::ReplicaError;
use crate::lag;
use crate::site::Site;
use crate::view::waits_for_peer;

/// A pair leaves `async` for `sync-recover` when both backlogs are at most
/// this many entries.
pub const RECOVER_ENTRIES: u64 = 100;
/// How often the recovery check runs.
pub const RECOVER_EVERY: Duration = Duration::from_millis(500);

fn who(site: &Site) -> String {
    format!("replicator@{}", site.name)
}

/// Fetches the controller state now (not waiting for the next poll) from
/// the leader that just committed a change: it has applied it, while a
/// follower may not have yet, and a stale view would make the next write
/// wait out the sync timeout again.
async fn refresh_view(site: &Site, leader_addr: &str) {
    if let Ok(status) = site.control.status_at(leader_addr).await {
        site.view.offer(status.cluster, status.raft.last_applied_index);
    }
}

/// Waits until write `seq` (carrying `bytes` of ciphertext) may be
/// acknowledged; returns how it was made durable, for the client.
///
/// The sync timeout bounds *silence*, not the whole transfer: while bytes
/// keep flowing to the peer the write keeps waiting, so a large file is
/// not mistaken for a dead peer.
///
/// `written` is the write's (shard, epoch). A write the peer did not
/// confirm is acknowledged only if, once the pair is recorded async, the
/// shard is still this site's under that epoch and not being moved: a
/// failover may have given it away meanwhile, and then the peer (the new
/// owner) may never get this write, so acknowledging it would promise a
/// contract that could be lost.
pub async fn confirm(site: &Site, seq: u64, bytes: u64, written: (u32, u64)) -> Result<String, ReplicaError> {
    let how = confirm_by_mode(site, seq, bytes, written).await?;
    // The site found meanwhile that its store is behind its peers (see
    // `crate::restore::store_behind`): the peers may hold other entries
    // under this number, and never take this one.
    if let Some(why) = site.restoring() {
        return Err(ReplicaError::NotAcknowledged(format!("write is stored at {} (log entry {seq}) but NOT acknowledged: {why}", site.name)));
    }
    Ok(how)
}

async fn confirm_by_mode(site: &Site, seq: u64, bytes: u64, written: (u32, u64)) -> Result<String, ReplicaError> {
    let me = &site.name;
    let stall = site.sync_timeout + Duration::from_millis(bytes.saturating_mul(1000) / crate::site::PEER_SYNC_RATE);
    let ms = stall.as_millis();
    for _ in 0..3 {
        let state = site.view.latest().ok_or_else(|| ReplicaError::NotAcknowledged("no controller view yet; write not acknowledged".into()))?;
        let Some(pair) = state.pair_of(me) else {
            return Ok(format!("async: {me} has no in-city peer"));
        };
        let peer = pair.partner(me).to_string();
        let mode = pair.outgoing(me);
        if !waits_for_peer(mode) {
            return Ok(format!("async: replication {me} -> {peer} is {}; {peer} catches up in the background", mode.as_str()));
        }
        let link = site.links.get(&peer).ok_or_else(|| ReplicaError::Internal(format!("no replication link configured to in-city peer {peer}")))?;
        if link.wait_acked(seq, stall).await {
            return Ok(format!("sync: stored and synced at {me} and {peer}"));
        }
        // Only this site's direction goes async: the peer may lack this
        // site's writes from the first one it has not confirmed.
        let since_seq = *link.acked.borrow() + 1;
        let spec = PairModeSpec { site: me.clone(), peer: peer.clone(), expect_state_id: pair.state_id, mode: ReplicationMode::Async, since_seq };
        let why = format!("{peer} did not confirm log entry {seq}, nor receive any of it, for {ms} ms");
        match site.control.set_pair_mode(&spec, &who(site), &why).await {
            Ok(o) if o.changed => {
                refresh_view(site, &o.leader_addr).await;
                tracing::warn!(site = %me, peer = %peer, seq, "peer did not confirm in time; this direction recorded async");
                if let Err(e) = site.still_owner(written.0, written.1) {
                    return Err(ReplicaError::NotAcknowledged(format!(
                        "write is stored at {me} (log entry {seq}) but NOT acknowledged: {peer} did not confirm it and \
                         the shard is no longer this site's to write ({e}); it stays in {me}'s log for reconciliation"
                    )));
                }
                return Ok(format!("async: {why}; {me} -> {peer} recorded async (audit #{})", o.audit_seq));
            }
            // Someone changed the mode first: look again.
            Ok(o) => refresh_view(site, &o.leader_addr).await,
            Err(e) => {
                return Err(ReplicaError::NotAcknowledged(format!(
                    "write is stored at {me} but NOT acknowledged: {why}, and the controller could not record the pair as async ({e})"
                )))
            }
        }
    }
    Err(ReplicaError::NotAcknowledged(format!("write is stored at {me} but NOT acknowledged: the pair's mode kept changing")))
}

/// How many sync timeouts of silence the [`watchdog`] waits: a write that
/// is still waiting records the pair async itself after one, and the
/// watchdog acting as early would change the mode under it (found by the
/// drill `flapping-in-city-link`: a link cut every 2 s flapped the pair).
pub const WATCHDOG_STALLS: u32 = 3;

/// What the [`watchdog`] saw of the peer last time: its cursor, the bytes
/// sent to it, and since when neither moved.
pub struct Stalled {
    acked: u64,
    sent: u64,
    since: tokio::time::Instant,
}

/// Records this site's direction async when the peer has left entries of
/// this site's log unconfirmed, receiving nothing, for [`WATCHDOG_STALLS`]
/// sync timeouts,
/// whether or not a write still waits for it; run every
/// [`RECOVER_EVERY`]. A write records it itself while it waits
/// ([`confirm`]), but a client whose deadline is shorter than the sync
/// timeout (300 ms against 700) cancels every write before that, and then
/// no write would be acknowledged until the peer returned (found by the
/// drill `partition-manual-failover`).
pub async fn watchdog(site: &Site, last: &mut Option<Stalled>) {
    let me = &site.name;
    let Some(state) = site.view.latest() else { return };
    let Some(pair) = state.pair_of(me) else { return };
    let peer = pair.partner(me).to_string();
    let Some(link) = site.links.get(&peer) else { return };
    let head = site.meta.log_head().unwrap_or(0);
    let (acked, sent) = (*link.acked.borrow(), *link.sent.borrow());
    // Only a cursor the peer itself reported says what it lacks.
    let known = link.acked_known.load(std::sync::atomic::Ordering::SeqCst);
    if !waits_for_peer(pair.outgoing(me)) || !known || acked >= head {
        *last = None;
        return;
    }
    match last {
        Some(s) if s.acked == acked && s.sent == sent => {
            if s.since.elapsed() < WATCHDOG_STALLS * site.sync_timeout {
                return;
            }
        }
        _ => {
            *last = Some(Stalled { acked, sent, since: tokio::time::Instant::now() });
            return;
        }
    }
    *last = None;
    let spec = PairModeSpec { site: me.clone(), peer: peer.clone(), expect_state_id: pair.state_id, mode: ReplicationMode::Async, since_seq: acked + 1 };
    let why = format!("{peer} confirmed nothing after log entry {acked}, nor received any of it, for {} ms", (WATCHDOG_STALLS * site.sync_timeout).as_millis());
    match site.control.set_pair_mode(&spec, &who(site), &why).await {
        Ok(o) if o.changed => {
            refresh_view(site, &o.leader_addr).await;
            tracing::warn!(site = %me, peer = %peer, "peer silent with entries waiting; this direction recorded async");
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "the pair could not be recorded async yet"),
    }
}

/// One step of this site's direction back to sync; run every
/// [`RECOVER_EVERY`]. Only this site's own backlog matters: the peer's
/// direction recovers on the peer's own steps.
pub async fn recover(site: &Site) {
    let me = &site.name;
    let Some(state) = site.view.latest() else { return };
    let Some(pair) = state.pair_of(me) else { return };
    let peer = pair.partner(me).to_string();
    let Some(link) = site.links.get(&peer) else { return };
    let next = match pair.outgoing(me) {
        ReplicationMode::Sync => return,
        ReplicationMode::Async => {
            match lag::of_link(site, link) {
                Ok(l) if l.entries <= RECOVER_ENTRIES => {}
                _ => return,
            }
            // A small backlog also means "the peer just died": only a peer
            // that answers may be waited for again, or every write would
            // wait out the sync timeout once more (and the direction flap).
            if crate::peer::backlog(&site.transport, &link.addr, &site.name).await.is_none() {
                return;
            }
            ReplicationMode::SyncRecover
        }
        ReplicationMode::SyncRecover => {
            // The view (read above) already says sync-recover, so every
            // write logged from now on waits for the peer; the ones before
            // are covered by the backlog being empty.
            let head = match site.meta.log_head() {
                Ok(h) => h,
                Err(_) => return,
            };
            if *link.acked.borrow() < head {
                return;
            }
            ReplicationMode::Sync
        }
    };
    let spec = PairModeSpec { site: me.clone(), peer: peer.clone(), expect_state_id: pair.state_id, mode: next, since_seq: 0 };
    let why = match next {
        ReplicationMode::SyncRecover => format!("{me}'s backlog towards {peer} is at most {RECOVER_ENTRIES} entries"),
        _ => format!("{peer} has confirmed every entry of {me}'s log"),
    };
    match site.control.set_pair_mode(&spec, &who(site), &why).await {
        Ok(o) => {
            tracing::info!(site = %me, mode = next.as_str(), result = %o.result, "replication mode change proposed");
            refresh_view(site, &o.leader_addr).await;
        }
        Err(e) => tracing::debug!(error = %e, "replication mode change not recorded"),
    }
}
