//! Background anti-entropy: every site makes sure its peers hold the
//! contracts that reached it from *another* site's log. Each site ships
//! only its own log, so when a site dies after its in-city peer received
//! entries the DR site had not, nobody else would send them: the in-city
//! survivor copies them on from here (what `tandem verify --repair` does by
//! hand), whether or not it owns the shard by then (a failover may be
//! declined or paused while the dead site still owns it), and however busy
//! its own log keeps the link.
//!
//! What this site pushes to a peer, of the contracts the peer lacks or
//! holds in an older version or not yet destroyed:
//! - in a shard it owns: what another site wrote, and its own writes while
//!   its log is fully confirmed by the peer (otherwise they are on their
//!   way through the shipper);
//! - in a shard another site owns: only what that owner wrote under its
//!   current epoch (never a stale owner's, possibly divergent, writes), and
//!   never to the owner itself;
//! - only what is older than [`SETTLED`]: newer writes are still travelling
//!   through their origin's own shipper.
//!
//! Every [`EVERY`] it compares the shards it owns while its own log to the
//! peer is confirmed (the old, cheap round); every [`FULL_EVERY`] rounds
//! every shard but the peer's, however busy the link.
//!
//! It only *adds*: it never removes or replaces a newer version a peer
//! holds (divergent writes are kept for reconciliation). A write a site
//! holds reaches every peer within [`SETTLED`] plus one full round (30 s)
//! while both are reachable: under a minute.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tandem_proto::replicator as pb;

use tandem_controller::state::Shard;

use crate::digest::{self, Item};
use crate::peer::client;
use crate::site::Site;

/// How often each peer is compared (the shards this site owns, while its
/// own log to the peer is confirmed: the cheap, common case).
pub const EVERY: Duration = Duration::from_secs(5);
/// How often every shard is compared with each peer, busy link or not
/// (reading every contract's record: kept rarer).
pub const FULL_EVERY: u32 = 6;
/// A write of another site is pushed once it is this old (by this site's
/// clock against the write's): until then its origin's shipper is still
/// expected to deliver it.
pub const SETTLED: Duration = Duration::from_secs(20);
const CALL: Duration = Duration::from_secs(30);

pub async fn run(site: Arc<Site>) {
    let mut rounds = 0u32;
    loop {
        tokio::time::sleep(EVERY).await;
        rounds = rounds.wrapping_add(1);
        let full = rounds.is_multiple_of(FULL_EVERY);
        for peer in site.links.keys() {
            match round(&site, peer, full).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(site = %site.name, peer = %peer, copied = n, "anti-entropy copied contracts the peer lacked"),
                Err(e) => tracing::debug!(site = %site.name, peer = %peer, error = %e, "anti-entropy round skipped"),
            }
        }
    }
}

async fn bounded<T>(what: &str, call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> Result<T, String> {
    match tokio::time::timeout(CALL, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(format!("{what}: {}", s.message())),
        Err(_) => Err(format!("{what}: no answer within {} s", CALL.as_secs())),
    }
}

/// Compares shards with `peer` and has it copy what it lacks from here
/// (see the module doc for what may be pushed): every shard but the
/// peer's when `full`, else only this site's own, and only while its own
/// log is confirmed by the peer. Returns how many contracts were copied.
async fn round(site: &Site, peer: &str, full: bool) -> Result<usize, String> {
    let state = site.view.leased().ok_or("no leased controller view")?;
    let link = site.links.get(peer).ok_or("no link")?;
    let own_confirmed = crate::lag::of_link(site, link).map_err(|e| e.to_string())?.entries == 0;
    if !full && !own_confirmed {
        return Ok(0);
    }
    let compared = |owner: &str| owner != peer && (full || owner == site.name);
    let shards: Vec<u32> = (0..state.shards.len() as u32).filter(|n| compared(&state.shards[*n as usize].owner)).collect();
    if shards.is_empty() {
        return Ok(0);
    }
    let me = site.addr_of(&site.name).ok_or("own address unknown")?.to_string();
    let channel = site.transport.channel(&link.addr).map_err(|e| e.to_string())?;
    let mut c = client(channel);
    let theirs = bounded("digests", c.digests(pb::DigestsRequest {})).await?.shard_digests;
    if theirs.len() != state.shards.len() {
        return Err("peer has another shard count".into());
    }
    let now = site.clock.now_unix_ms();
    let kept = digest::shard_digests(site, state.shards.len() as u32).map_err(|e| e.to_string())?;
    let mut copied = 0;
    let mut differing = 0;
    for shard in shards {
        if kept[shard as usize] == theirs[shard as usize] {
            continue;
        }
        let ours = digest::inventory(site, shard).map_err(|e| e.to_string())?;
        let owner = &state.shards[shard as usize];
        if owner.owner == site.name {
            differing += 1;
        }
        let reply = bounded("inventory", c.inventory(pb::InventoryRequest { shard })).await?;
        let at_peer: BTreeMap<(String, String), pb::InventoryItem> = reply.items.into_iter().map(|i| ((i.tenant.clone(), i.contract_id.clone()), i)).collect();
        for item in ours {
            let behind = match at_peer.get(&(item.tenant.clone(), item.contract_id.clone())) {
                None => true,
                Some(p) => p.version < item.version || (item.destroyed && !p.destroyed),
            };
            if !behind || !pushable(site, shard, owner, &item, own_confirmed, now).map_err(|e| e.to_string())? {
                continue;
            }
            let req = pb::RepairRequest { tenant: item.tenant.clone(), contract_id: item.contract_id.clone(), source_addr: me.clone() };
            bounded("repair", c.repair(req)).await?;
            copied += 1;
        }
    }
    site.counters.set_differing(peer, differing);
    Ok(copied)
}

/// Whether this site may push `item` of `shard`, which `owner` holds (see
/// the module doc).
fn pushable(site: &Site, shard: u32, owner: &Shard, item: &Item, own_confirmed: bool, now_unix_ms: u64) -> Result<bool, crate::error::ReplicaError> {
    let owned = owner.owner == site.name;
    let settled = |written_unix_ms: u64| now_unix_ms.saturating_sub(written_unix_ms) >= SETTLED.as_millis() as u64;
    if item.destroyed {
        let Some(head) = site.meta.head(shard, &item.tenant, &item.contract_id)? else { return Ok(false) };
        let Some(t) = head.destroyed else { return Ok(false) };
        return Ok(if t.origin == site.name { owned && own_confirmed } else { settled(t.at_unix_ms) && (owned || t.origin == owner.owner) });
    }
    let Some(v) = site.meta.version(&item.tenant, &item.contract_id, item.version)? else { return Ok(false) };
    if v.origin == site.name {
        return Ok(owned && own_confirmed);
    }
    Ok(settled(v.created_unix_ms) && (owned || (v.origin == owner.owner && v.epoch == owner.epoch)))
}
