//! What a replicator exports on `/metrics` (Prometheus text): lag and
//! progress per outgoing link, its change log's growth (rate() of it is
//! the write throughput), the pair mode and write lease it is working
//! under, and the outcomes of writes and incoming entries. Names and
//! meanings are listed in `deploy/README.md`.

use tandem_controller::state::ReplicationMode;
use tandem_net::metrics::{HistogramSample, Kind, Text};

use crate::site::Site;

pub fn render(site: &Site) -> String {
    let mut t = Text::new();
    let head = site.meta.log_head().unwrap_or(0);
    let head_bytes = match head {
        0 => 0,
        n => site.meta.log_stamp(n).ok().flatten().map_or(0, |e| e.cum_bytes),
    };
    t.single("tandem_log_entries_total", Kind::Counter, "Entries written to this site's change log.", head as f64);
    t.single("tandem_log_bytes_total", Kind::Counter, "Bytes (metadata and ciphertext) written to this site's change log.", head_bytes as f64);

    let (mut entries, mut bytes, mut seconds, mut acked, mut sent) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for link in site.links.values() {
        let peer = vec![("peer", link.peer.clone())];
        match crate::lag::of_link(site, link) {
            Ok(lag) => {
                entries.push((peer.clone(), lag.entries as f64));
                bytes.push((peer.clone(), lag.bytes as f64));
                seconds.push((peer.clone(), lag.seconds as f64));
            }
            Err(e) => tracing::warn!(peer = %link.peer, error = %e, "metrics: cannot compute lag"),
        }
        acked.push((peer.clone(), *link.acked.borrow() as f64));
        // Shipped and staged bytes alike went to the peer.
        let staged = link.staged_bytes.load(std::sync::atomic::Ordering::Relaxed);
        sent.push((peer, (*link.sent.borrow() + staged) as f64));
    }
    t.family("tandem_replication_lag_entries", Kind::Gauge, "Entries written here that the peer has not confirmed.", &entries);
    t.family("tandem_replication_lag_bytes", Kind::Gauge, "Bytes of those entries.", &bytes);
    t.family("tandem_replication_lag_seconds", Kind::Gauge, "Age of the oldest of those entries.", &seconds);
    t.family("tandem_replication_acked_entries", Kind::Gauge, "The peer's confirmed position in this site's log.", &acked);
    t.family("tandem_replication_sent_bytes_total", Kind::Counter, "Ciphertext bytes streamed to the peer since start.", &sent);

    let state = site.view.latest();
    let pair = state.as_ref().and_then(|s| s.pair_of(&site.name).cloned());
    let modes = [ReplicationMode::Sync, ReplicationMode::Async, ReplicationMode::SyncRecover];
    let pair_modes: Vec<_> = pair
        .iter()
        .flat_map(|p| {
            modes.map(|m| (vec![("pair", format!("{}-{}", p.site_a, p.site_b)), ("mode", m.as_str().to_string())], if p.mode == m { 1.0 } else { 0.0 }))
        })
        .collect();
    t.family("tandem_pair_mode", Kind::Gauge, "1 for the pair's replication mode, as this replicator last saw it.", &pair_modes);
    let state_id: Vec<_> = pair.iter().map(|p| (vec![("pair", format!("{}-{}", p.site_a, p.site_b))], p.state_id as f64)).collect();
    t.family("tandem_pair_state_id", Kind::Gauge, "State id of that mode.", &state_id);
    let owned = state.as_ref().map_or(0, |s| s.shards.iter().filter(|sh| sh.owner == site.name).count());
    t.single("tandem_shards_owned", Kind::Gauge, "Shards this site owns, as it last saw the shard map.", owned as f64);
    // One lease covers every shard this site owns (it comes with a
    // leader-confirmed read of the whole map).
    t.single(
        "tandem_write_lease_remaining_seconds",
        Kind::Gauge,
        "Time left on the write lease for the shards owned here; 0: writes refused.",
        site.view.lease_remaining().as_secs_f64(),
    );

    let outcomes: Vec<_> = site
        .counters
        .snapshot()
        .into_iter()
        .map(|((call, outcome), n)| (vec![("call", call.to_string()), ("outcome", outcome.to_string())], n as f64))
        .collect();
    t.family("tandem_requests_total", Kind::Counter, "Puts and incoming entries, by outcome (ok, redirected to the owner, or why refused).", &outcomes);
    let differing: Vec<_> = site.counters.differing().into_iter().map(|(peer, n)| (vec![("peer", peer)], n as f64)).collect();
    t.family(
        "tandem_verify_shards_differing",
        Kind::Gauge,
        "Shards owned here whose digest differed from the peer's at the last background comparison (every 5 s while the link is caught up; differences are then repaired).",
        &differing,
    );
    blob_store(&mut t, site);
    t.build_and_process("replicator");
    t.finish()
}

/// The blob store's requests (object-store backends: one per HTTP request),
/// their latency, and whether it answers.
fn blob_store(t: &mut Text, site: &Site) {
    let stats = site.blobs.stats();
    let requests: Vec<_> =
        stats.requests().into_iter().map(|((op, outcome), n)| (vec![("op", op.to_string()), ("outcome", outcome.as_str().to_string())], n as f64)).collect();
    t.family("tandem_blob_requests_total", Kind::Counter, "Requests to the blob store, by operation and outcome (ok, not_found, conflict, error).", &requests);
    let latency: Vec<_> = stats
        .latency()
        .into_iter()
        .map(|(op, l)| HistogramSample { labels: vec![("op", op.to_string())], buckets: l.buckets.to_vec(), count: l.count, sum: l.sum_seconds })
        .collect();
    t.histogram("tandem_blob_request_seconds", "Time each blob store request took, by operation.", &crate::blob_stats::BUCKETS, &latency);
    t.single(
        "tandem_blob_store_up",
        Kind::Gauge,
        "1 while the blob store answers (its newest request, or the idle probe every 5 s, got an answer); 0 while it fails.",
        if stats.failing().is_some() { 0.0 } else { 1.0 },
    );
}
