//! The data-path rules, on one [`Site`] over the in-memory stores (no
//! network, no controller): what `apply` refuses, when a put is refused,
//! what quarantine does to a version, which entry may claim a staged copy.
//! Each test removes nothing but checks one rule, and fails if it goes.

use std::collections::BTreeMap;
use std::sync::Arc;

use tandem_controller::clock::Clock;
use tandem_controller::state::{ClusterState, Shard, Site as SiteState, SiteRole};
use tandem_crypto::{LocalKeyFile, SeededRandomSource};
use tandem_net::Transport;
use tandem_proto::replicator as pb;
use tandem_proto::replicator::apply_chunk::Part;
use tandem_storage::MemKv;

use crate::apply::{apply, Mode};
use crate::blob::BlobStore;
use crate::config::ReplicatorConfig;
use crate::error::ReplicaError;
use crate::model::{Change, FileRecord, LogEntry, Tombstone};
use crate::site::{ReplicatorDeps, Site, Staged};
use crate::write::{PutHeader, PutSession};

const SHARDS: usize = 4;

struct FixedClock;

impl Clock for FixedClock {
    fn now_unix_ms(&self) -> u64 {
        1_800_000_000_000
    }
}

fn config(me: &str) -> ReplicatorConfig {
    let text = format!(
        r#"
site = "{me}"
data_dir = "/nonexistent/{me}"
key_file = "/nonexistent/kek"
controllers = ["127.0.0.1:1"]

[[sites]]
name = "a"
addr = "127.0.0.1:2"

[[sites]]
name = "b"
addr = "127.0.0.1:3"

[[sites]]
name = "c"
addr = "127.0.0.1:4"
"#
    );
    ReplicatorConfig::parse(&text, "test.toml").unwrap()
}

fn site(me: &str) -> Site {
    site_on(me, Arc::new(MemKv::new()), BlobStore::memory())
}

/// A site over the given stores (a restored one, say).
fn site_on(me: &str, kv: Arc<MemKv>, blobs: BlobStore) -> Site {
    let rng = SeededRandomSource::new(7);
    let deps = ReplicatorDeps {
        kv,
        blobs,
        keys: Arc::new(LocalKeyFile::in_memory("test-kek", &rng).unwrap()),
        rng: Arc::new(rng),
        clock: Arc::new(FixedClock),
        transport: Transport::Tokio,
    };
    Site::new(&config(me), deps).unwrap()
}

/// Sites a, b, c (all active); every shard owned by `owner` under `epoch`;
/// no in-city pair, so a put waits for nobody.
fn cluster(owner: &str, epoch: u64) -> ClusterState {
    let sites: BTreeMap<String, SiteState> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (n.to_string(), SiteState { name: n.to_string(), node_id: i as u64 + 1, city: "city-1".into(), addr: String::new(), role: SiteRole::Active })
        })
        .collect();
    ClusterState { bootstrapped: true, generation: 1, sites, shards: (0..SHARDS).map(|_| Shard::new(owner, epoch)).collect(), ..Default::default() }
}

/// `site` sees `state`, with a write lease from the leader just now.
fn leased(site: &Site, state: ClusterState, index: u64) {
    site.view.offer_leased(state, index, tokio::time::Instant::now());
}

fn tombstone(origin: &str) -> Tombstone {
    Tombstone { at_unix_ms: 1, origin: origin.into(), who: "test".into(), why: "test".into() }
}

/// A destroy entry of `origin`'s log (no files follow it on the wire).
fn destroy_entry(origin: &str, seq: u64, shard: u32, epoch: u64) -> LogEntry {
    LogEntry {
        origin: origin.into(),
        seq,
        cum_bytes: 512 * seq,
        at_unix_ms: 1,
        shard,
        epoch,
        change: Change::Destroy { tenant: "t1".into(), contract_id: "c1".into(), tombstone: tombstone(origin) },
    }
}

fn stream(entry: &LogEntry) -> impl futures::Stream<Item = Result<pb::ApplyChunk, tonic::Status>> {
    let json = serde_json::to_vec(entry).unwrap();
    futures::stream::iter(vec![Ok(pb::ApplyChunk { part: Some(Part::EntryJson(json.into())) })])
}

fn shard_of_t1() -> u32 {
    tandem_controller::state::shard_of("t1", SHARDS as u32)
}

#[tokio::test]
async fn apply_takes_the_next_entry_and_refuses_a_gap() {
    let b = site("b");
    leased(&b, cluster("a", 1), 1);
    let shard = shard_of_t1();
    let gap = apply(&b, stream(&destroy_entry("a", 2, shard, 1)), Mode::Log).await.unwrap_err();
    assert!(matches!(gap, ReplicaError::Gap { expected: 1, got: 2, .. }), "{gap:?}");
    assert_eq!(b.meta.cursor("a").unwrap(), 0, "a refused entry moves no cursor");
    assert_eq!(apply(&b, stream(&destroy_entry("a", 1, shard, 1)), Mode::Log).await.unwrap(), 1);
    assert_eq!(b.meta.cursor("a").unwrap(), 1);
}

#[tokio::test]
async fn apply_refuses_an_epoch_older_than_this_site_knows() {
    let b = site("b");
    // The shard moved to b under epoch 2; a's entry was written under 1.
    leased(&b, cluster("b", 2), 1);
    let err = apply(&b, stream(&destroy_entry("a", 1, shard_of_t1(), 1)), Mode::Log).await.unwrap_err();
    assert!(matches!(err, ReplicaError::StaleEpoch { .. }), "{err:?}");
    assert_eq!(b.meta.cursor("a").unwrap(), 0);
}

#[tokio::test]
async fn apply_refuses_an_entry_of_its_own_log() {
    let a = site("a");
    leased(&a, cluster("a", 1), 1);
    let err = apply(&a, stream(&destroy_entry("a", 1, shard_of_t1(), 1)), Mode::Log).await.unwrap_err();
    assert!(matches!(err, ReplicaError::Invalid(ref m) if m.contains("own log")), "{err:?}");
}

fn header() -> PutHeader {
    PutHeader { tenant: "t1".into(), contract_id: "c1".into(), fields: Default::default(), pii_fields: Default::default() }
}

#[tokio::test]
async fn a_put_needs_ownership_a_lease_and_a_shard_that_is_not_moving() {
    let a = site("a");
    // Owned elsewhere: sent to the owner (no lease needed to say so).
    a.view.offer(cluster("b", 1), 1);
    let err = PutSession::begin(&a, header()).await.err().unwrap();
    assert!(matches!(err, ReplicaError::NotOwner { ref owner, epoch: 1, .. } if owner == "b"), "{err:?}");

    // Owned here, but the view is not leased: it cannot prove it still owns it.
    let a = site("a");
    a.view.offer(cluster("a", 1), 1);
    assert!(matches!(PutSession::begin(&a, header()).await.err().unwrap(), ReplicaError::NoLease(_)));

    // Owned and leased, but being drained towards b.
    let a = site("a");
    let mut moving = cluster("a", 1);
    moving.shards[shard_of_t1() as usize].moving_to = Some("b".into());
    leased(&a, moving, 1);
    assert!(matches!(PutSession::begin(&a, header()).await.err().unwrap(), ReplicaError::Moving { ref to, .. } if to == "b"));

    // Owned, leased, not moving: accepted.
    let a = site("a");
    leased(&a, cluster("a", 1), 1);
    assert!(PutSession::begin(&a, header()).await.is_ok());
}

/// Writes one version of t1/`id` at `a` (the owner); returns its log entry.
async fn put_id(a: &Site, id: &str, bytes: &[u8]) -> LogEntry {
    let mut s = PutSession::begin(a, PutHeader { contract_id: id.into(), ..header() }).await.unwrap();
    s.start_file("deed.pdf").await.unwrap();
    s.write(bytes).await.unwrap();
    let (_, ack) = s.commit().await.unwrap();
    a.meta.log_entry(ack.seq).unwrap().unwrap()
}

/// `entries` of `a`'s log as one Apply stream, as its shipper sends them.
fn chunks_of(a: &Site, entries: &[LogEntry]) -> impl futures::Stream<Item = Result<pb::ApplyChunk, tonic::Status>> {
    use futures::StreamExt;
    let blobs = a.blobs.clone();
    futures::stream::iter(entries.to_vec()).flat_map(move |e| crate::ship::entry_chunks(blobs.clone(), e, BTreeMap::new(), None, None)).map(Ok)
}

// One stream carries several entries of a log: applied in order with their
// files (two versions of one contract, a destroy between puts), an entry
// already applied is passed over, and one refused in the middle keeps the
// entries before it and moves the cursor to them.
#[tokio::test]
async fn one_stream_carries_several_entries() {
    let a = site("a");
    leased(&a, cluster("a", 1), 1);
    let b = site("b");
    leased(&b, cluster("a", 1), 1);
    let e1 = put_id(&a, "c1", b"one").await;
    let e2 = put_id(&a, "c2", b"two").await;
    let e3 = put_id(&a, "c1", b"three").await;
    crate::write::destroy(&a, "t1", "c2", "ada", "test", 0).await.unwrap();
    let e4 = a.meta.log_entry(4).unwrap().unwrap();
    let e5 = put_id(&a, "c3", b"five").await;
    assert_eq!(apply(&b, chunks_of(&a, &[e1, e2, e3.clone()]), Mode::Log).await.unwrap(), 3);
    let shard = shard_of_t1();
    assert_eq!(b.meta.head(shard, "t1", "c1").unwrap().unwrap().latest, 2, "both versions of c1, in order");
    for v in [1, 2] {
        let record = b.meta.version("t1", "c1", v).unwrap().unwrap();
        assert!(b.blobs.exists(&record.files[0].blob).await.unwrap(), "version {v}'s file is stored");
    }
    assert_eq!(apply(&b, chunks_of(&a, &[e3, e4, e5]), Mode::Log).await.unwrap(), 5, "a resent entry is passed over");
    assert!(b.meta.head(shard, "t1", "c2").unwrap().unwrap().destroyed.is_some());
    assert!(b.meta.head(shard, "t1", "c3").unwrap().is_some());
    let e6 = put_id(&a, "c4", b"six").await;
    let _e7 = put_id(&a, "c5", b"seven").await;
    let e8 = put_id(&a, "c6", b"eight").await;
    let gap = apply(&b, chunks_of(&a, &[e6, e8]), Mode::Log).await.unwrap_err();
    assert!(matches!(gap, ReplicaError::Gap { expected: 7, got: 8, .. }), "{gap:?}");
    assert_eq!(b.meta.cursor("a").unwrap(), 6, "the entry before the refused one is kept");
    assert!(b.meta.head(shard, "t1", "c4").unwrap().is_some());
    assert_eq!(crate::digest::shard_digests(&b, SHARDS as u32).unwrap(), crate::digest::store_digests(&b.meta, SHARDS as u32).unwrap());
}

// A put's file goes where `blob_path` says; an entry naming any other
// path for it is refused and nothing of it is kept.
#[tokio::test]
async fn an_entry_names_its_files_where_blob_path_puts_them() {
    let a = site("a");
    leased(&a, cluster("a", 1), 1);
    let b = site("b");
    leased(&b, cluster("a", 1), 1);
    let e1 = put_id(&a, "c1", b"one").await;
    let with_blob = |e: &LogEntry, blob: &str| {
        let mut e = e.clone();
        let Change::Put(v) = &mut e.change else { panic!("a put") };
        v.files[0].blob = blob.to_string();
        e
    };
    assert_eq!(e1.files()[0].blob, crate::model::blob_path("t1", "c1", 1, 0));
    assert_eq!(apply(&b, chunks_of(&a, &[e1]), Mode::Log).await.unwrap(), 1);
    let e3 = put_id(&a, "c3", b"three").await;
    let elsewhere = "t1/c3/elsewhere";
    assert!(a.blobs.rename(&e3.files()[0].blob, elsewhere).await.unwrap());
    let err = apply(&b, chunks_of(&a, &[with_blob(&e3, elsewhere)]), Mode::Log).await.unwrap_err();
    assert!(matches!(err, ReplicaError::Invalid(ref m) if m.contains("unexpected storage path")), "{err:?}");
    assert!(!b.blobs.exists(elsewhere).await.unwrap() && b.meta.head(shard_of_t1(), "t1", "c3").unwrap().is_none());
}

// Reads and a repair's copy go as bulk streams; against a replicator that
// serves only the gRPC calls (one built before them, during a rolling
// upgrade) the client and the repairing site fall back to gRPC and get
// the same bytes.
#[tokio::test]
async fn reads_and_repairs_fall_back_to_grpc_at_an_older_replicator() {
    use tandem_proto::replicator::{contracts_server::ContractsServer, replication_server::ReplicationServer};
    let a = site("a");
    leased(&a, cluster("a", 1), 1);
    let plain = b"a deed read from an older replicator".to_vec();
    put_id(&a, "c1", &plain).await;
    let a = Arc::new(a);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let grpc_only = tonic::transport::Server::builder()
        .add_service(ContractsServer::new(crate::service::ContractsService::new(a.clone())))
        .add_service(ReplicationServer::new(crate::service::ReplicationService::new(a.clone())))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    let server = tokio::spawn(grpc_only);
    let channel = Transport::Tokio.channel(&addr).unwrap();
    let req = pb::GetRequest { tenant: "t1".into(), contract_id: "c1".into(), version: 0 };
    let bulk = crate::bulk::download::<_, pb::GetChunk>(channel, crate::bulk::GET, &req).await;
    assert_eq!(bulk.err().map(|s| s.code()), Some(tonic::Code::Unimplemented), "the server has no bulk calls");

    let client = crate::client::ReplicatorClient::new(Transport::Tokio, std::time::Duration::from_secs(10));
    let (info, hashes) = client.get_hashed(&addr, "t1", "c1").await.unwrap();
    assert_eq!(info.contract_id, "c1");
    assert_eq!(hashes["deed.pdf"], blake3::hash(&plain).to_hex().to_string());

    let b = site("b");
    leased(&b, cluster("a", 1), 1);
    crate::apply::copy_from(&b, &addr, "t1", "c1").await.unwrap();
    let v = b.meta.version("t1", "c1", 1).unwrap().unwrap();
    assert_eq!(b.blobs.read_to_vec(&v.files[0].blob).await.unwrap(), a.blobs.read_to_vec(&v.files[0].blob).await.unwrap());
    server.abort();
}

// Puts that reach the log together share one synced commit (group
// commit), numbered in order without gaps.
#[tokio::test(start_paused = true)]
async fn concurrent_puts_share_a_synced_commit() {
    let kv = Arc::new(MemKv::new());
    let a = site_on("a", kv.clone(), BlobStore::memory());
    leased(&a, cluster("a", 1), 1);
    // Each sync takes 10 ms: the puts arrive while one is under way.
    kv.set_slow(std::time::Duration::from_millis(10));
    let before = kv.synced_writes();
    let names: Vec<String> = (0..8).map(|i| format!("g{i}")).collect();
    let entries = futures::future::join_all(names.iter().map(|n| put_id(&a, n, b"x"))).await;
    let mut seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=8).collect::<Vec<u64>>());
    let syncs = kv.synced_writes() - before;
    assert_eq!(syncs, 1, "eight puts, {syncs} synced commits");
}

// A group whose commit fails fails every put in it, and numbering goes on
// from what the store holds: no gap, no number given twice.
#[tokio::test]
async fn a_failed_group_commit_fails_its_puts_and_leaves_no_gap() {
    let kv = Arc::new(MemKv::new());
    let a = site_on("a", kv.clone(), BlobStore::memory());
    leased(&a, cluster("a", 1), 1);
    kv.set_fault(tandem_storage::DiskFault::Full);
    let try_put = |id: &'static str| {
        let a = &a;
        async move {
            let mut s = PutSession::begin(a, PutHeader { contract_id: id.into(), ..header() }).await?;
            s.start_file("deed.pdf").await?;
            s.write(b"x").await?;
            s.commit().await.map(|(_, ack)| ack.seq)
        }
    };
    let failed = futures::future::join_all(["f1", "f2", "f3"].map(try_put)).await;
    assert!(failed.iter().all(|r| r.is_err()), "{failed:?}");
    kv.set_fault(tandem_storage::DiskFault::None);
    assert_eq!(try_put("f4").await.unwrap(), 1, "nothing was written: numbering starts again at 1");
    assert_eq!(a.meta.log_head().unwrap(), 1);
}

// The log head a heartbeat reports (with its view) counts only committed
// entries: it waits for the entries numbered before it, so a link's lag up
// to that head includes them (a switchover moves on a lag of 0).
#[tokio::test(start_paused = true)]
async fn the_reported_log_head_waits_for_numbered_entries() {
    let kv = Arc::new(MemKv::new());
    let a = site_on("a", kv.clone(), BlobStore::memory());
    leased(&a, cluster("a", 1), 1);
    kv.set_slow(std::time::Duration::from_millis(10));
    let names: Vec<String> = (0..4).map(|i| format!("h{i}")).collect();
    let puts = futures::future::join_all(names.iter().map(|n| put_id(&a, n, b"x")));
    let report = async {
        // The puts are numbered and wait for their sync.
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        assert_eq!(a.meta.log_head().unwrap(), 0, "numbered, not yet committed");
        let (_, head) = a.view_and_log_head().await;
        (head, a.meta.log_head().unwrap())
    };
    let (entries, (reported, stored)) = futures::join!(puts, report);
    assert_eq!(entries.len(), 4);
    assert_eq!((reported, stored), (4, 4), "the reported head is the store's, with every numbered entry in it");
}

// A put given up while its entry waits for the disk's sync leaves the
// entry committed, not queued until some later append.
#[tokio::test(start_paused = true)]
async fn a_put_given_up_during_its_sync_still_commits_its_entry() {
    let kv = Arc::new(MemKv::new());
    let a = site_on("a", kv.clone(), BlobStore::memory());
    leased(&a, cluster("a", 1), 1);
    kv.set_slow(std::time::Duration::from_millis(10));
    let given_up = tokio::time::timeout(std::time::Duration::from_millis(1), put_id(&a, "p1", b"x")).await;
    assert!(given_up.is_err(), "the put was still waiting for its sync");
    assert_eq!(a.meta.log_head().unwrap(), 1, "its entry was committed when the put was dropped");
    kv.set_slow(std::time::Duration::ZERO);
    assert_eq!(put_id(&a, "p2", b"y").await.seq, 2);
}

/// Writes one version of t1/c1 at `a` (the owner); returns its log entry.
async fn put(a: &Site, bytes: &[u8]) -> LogEntry {
    let mut s = PutSession::begin(a, header()).await.unwrap();
    s.start_file("deed.pdf").await.unwrap();
    s.write(bytes).await.unwrap();
    let (_, ack) = s.commit().await.unwrap();
    a.meta.log_entry(ack.seq).unwrap().unwrap()
}

#[tokio::test]
async fn quarantine_moves_a_version_aside_and_rolls_the_head_back() {
    let a = site("a");
    leased(&a, cluster("a", 1), 1);
    put(&a, b"first").await;
    let second = put(&a, b"second").await;
    assert_eq!(a.meta.head(shard_of_t1(), "t1", "c1").unwrap().unwrap().latest, 2);

    crate::quarantine::own_entry(&a, &second, "refused by the owner").await.unwrap();
    assert_eq!(a.meta.head(shard_of_t1(), "t1", "c1").unwrap().unwrap().latest, 1, "the head is back at the version before");
    assert!(a.meta.version("t1", "c1", 2).unwrap().is_none(), "the divergent version is no longer served");
    let q = a.meta.quarantined("t1", "c1", 2, "a", 1).unwrap().expect("kept aside");
    assert!(q.record.is_some() && q.reason.contains("refused by the owner"), "{q:?}");
    assert!(a.meta.version("t1", "c1", 1).unwrap().is_some(), "the version before is untouched");
}

fn staged(origin: &str, blob: &str) -> Staged {
    Staged {
        name: format!(".staging/{blob}"),
        origin: origin.into(),
        blob: blob.into(),
        len: 10,
        plaintext_len: 4,
        key_id: [1; tandem_crypto::KEY_ID_LEN],
        blake3: "h".into(),
        at: tokio::time::Instant::now(),
    }
}

fn file(blob: &str) -> FileRecord {
    FileRecord { name: "deed.pdf".into(), blob: blob.into(), size: 4, ciphertext_len: 10, ciphertext_blake3: "h".into(), key: None }
}

/// Writes the staged copy's bytes where [`staged`] names them.
async fn write_staged(b: &Site, blob: &str) {
    let mut w = b.blobs.stage_writer(&staged("a", blob).name).await.unwrap();
    w.write(b"0123456789").await.unwrap();
    w.finish().await.unwrap();
}

#[tokio::test]
async fn a_staged_copy_is_claimed_only_by_the_entry_that_matches_it() {
    let b = site("b");
    let blob = "t1/c1/1/deed.pdf";
    write_staged(&b, blob).await;
    // Claimed by an entry of another origin: refused, and the copy dropped.
    b.staged.insert("s1".into(), staged("a", blob));
    let err = crate::stage::commit(&b, "s1", "c", &file(blob), "test").await.unwrap_err();
    assert!(matches!(err, ReplicaError::Corrupt(ref m) if m.contains("is not this file")), "{err:?}");
    assert!(b.staged.is_empty());
    // Of another length: refused.
    b.staged.insert("s2".into(), staged("a", blob));
    let other = FileRecord { ciphertext_len: 11, ..file(blob) };
    assert!(crate::stage::commit(&b, "s2", "a", &other, "test").await.is_err());
    // An id nobody staged.
    assert!(crate::stage::commit(&b, "nope", "a", &file(blob), "test").await.is_err());

    // The matching entry claims it: the copy is under the file's path now.
    write_staged(&b, blob).await;
    b.staged.insert("s3".into(), staged("a", blob));
    crate::stage::commit(&b, "s3", "a", &file(blob), "test").await.unwrap();
    assert!(b.blobs.exists(blob).await.unwrap(), "committed under its path");
}

// The digests anti-entropy compares are kept as writes land: unchanged
// shards keep theirs, and every change moves its shard's, including one
// that keeps the version number (a key rotation rewrites the record in
// place); each time they equal the digests recomputed from the records.
#[tokio::test]
async fn kept_digests_follow_every_change() {
    let a = site("a");
    leased(&a, cluster("a", 1), 1);
    let shard = shard_of_t1();
    put(&a, b"first").await;
    let before = crate::digest::shard_digests(&a, 64).unwrap();
    assert_eq!(crate::digest::shard_digests(&a, 64).unwrap(), before, "unchanged: the same digests");
    let second = put(&a, b"second").await;
    let after_put = crate::digest::shard_digests(&a, 64).unwrap();
    assert_ne!(after_put[shard as usize], before[shard as usize], "a new version changes its shard's digest");
    assert_eq!(after_put[(shard as usize + 1) % 64], before[(shard as usize + 1) % 64], "other shards keep theirs");
    // The same version rewritten in place (as a rewrap does).
    let crate::model::Change::Put(mut v) = second.change else { panic!("a put") };
    v.fields.insert("rewrapped".into(), "yes".into());
    let mut batch = crate::meta::MetaBatch::default();
    batch.put_version(&v);
    a.meta.commit(batch).unwrap();
    let after_rewrite = crate::digest::shard_digests(&a, 64).unwrap();
    assert_ne!(after_rewrite[shard as usize], after_put[shard as usize], "a record rewritten under the same version changes the digest");
    assert_eq!(after_rewrite, crate::digest::store_digests(&a.meta, 64).unwrap(), "the kept digests are the records' digests");
    crate::write::destroy(&a, "t1", "c1", "ada", "test", 0).await.unwrap();
    let after_destroy = crate::digest::shard_digests(&a, 64).unwrap();
    assert_ne!(after_destroy[shard as usize], after_rewrite[shard as usize], "a destroy changes the digest");
    assert_eq!(after_destroy, crate::digest::store_digests(&a.meta, 64).unwrap());
}

fn restore_req<'a>(from: &'a BlobStore, id: &'a str, site: &'a str, why: &'a str, now_unix_ms: u64) -> crate::restore::Request<'a> {
    crate::restore::Request { from, id, site, who: "ada", why, now_unix_ms }
}

// Entries their origin lost with its old store (it was restored from a
// backup) are stepped over together, only as the next entries, once; the
// origin's next entry then applies.
#[tokio::test]
async fn entries_lost_at_their_origin_are_stepped_over_together() {
    let b = site("b");
    leased(&b, cluster("a", 1), 1);
    let shard = shard_of_t1();
    apply(&b, stream(&destroy_entry("a", 1, shard, 1)), Mode::Log).await.unwrap();
    let req = |seq, through| pb::SkipRequest { origin: "a".into(), seq, shard: 0, epoch: 0, lost_through: through, destroyed_since: false };
    let gap = crate::apply::skip(&b, &req(3, 9)).await.unwrap_err();
    assert!(matches!(gap, ReplicaError::Gap { expected: 2, got: 3, .. }), "{gap:?}");
    assert_eq!(crate::apply::skip(&b, &req(2, 9)).await.unwrap(), 9);
    assert_eq!(b.meta.cursor("a").unwrap(), 9);
    assert_eq!(b.meta.skipped("a", 2).unwrap().unwrap().lost_through, Some(9));
    assert_eq!(crate::apply::skip(&b, &req(2, 9)).await.unwrap(), 9, "asked again: nothing changes");
    let empty = crate::apply::skip(&b, &req(10, 5)).await.unwrap_err();
    assert!(matches!(empty, ReplicaError::Invalid(ref m) if m.contains("empty range")), "{empty:?}");
    assert_eq!(apply(&b, stream(&destroy_entry("a", 10, shard, 1)), Mode::Log).await.unwrap(), 10);
}

// A backup stores a file under its hash only if the bytes it copied have
// that hash: a live file whose bytes changed since its record fails the
// backup, and nothing is left under the hash for a later one to reuse.
#[tokio::test]
async fn a_backup_never_stores_other_bytes_under_a_files_hash() {
    let a = site("a");
    leased(&a, cluster("a", 1), 1);
    let entry = put(&a, b"first").await;
    let Change::Put(v) = &entry.change else { panic!("a put") };
    let blob = &v.files[0].blob;
    let good = a.blobs.read_to_vec(blob).await.unwrap();
    let mut w = a.blobs.writer(blob, crate::blob::Hashing::None).await.unwrap();
    w.write(b"other bytes").await.unwrap();
    w.finish().await.unwrap();
    let dest = BlobStore::memory();
    let e = crate::backup::create(&a, &dest, "ada", "nightly").await.unwrap_err();
    assert!(e.to_string().contains("no longer holds the bytes"), "{e}");
    let hashed = format!("blobs/{}", v.files[0].ciphertext_blake3);
    assert!(!dest.exists(&hashed).await.unwrap(), "nothing kept under the hash");
    let mut w = a.blobs.writer(blob, crate::blob::Hashing::None).await.unwrap();
    w.write(&good).await.unwrap();
    w.finish().await.unwrap();
    crate::backup::create(&a, &dest, "ada", "nightly").await.unwrap();
    assert_eq!(dest.read_to_vec(&hashed).await.unwrap(), good);
}

// A restore writes a backup's records and files into an empty store of
// the same site, never over a store in use, and marks it: the site then
// serves no contract until it has caught up. One damaged file stops it,
// and a replicator refuses the half-written store until a restore
// finishes; a log floor keeps the head past what peers hold.
#[tokio::test]
async fn a_restore_goes_into_an_empty_store_and_the_site_serves_nothing_until_caught_up() {
    let a = site("a");
    leased(&a, cluster("a", 1), 1);
    put(&a, b"first").await;
    put(&a, b"second").await;
    let dest = BlobStore::memory();
    let m = crate::backup::create(&a, &dest, "ada", "nightly").await.unwrap();

    let kv = Arc::new(MemKv::new());
    let meta = crate::meta::MetaStore::new(kv.clone());
    let blobs = BlobStore::memory();
    let r = crate::restore::into_store(&meta, &blobs, &restore_req(&dest, &m.id, "a", "disk lost", 5)).await.unwrap();
    assert_eq!((r.records, r.files as usize), (m.records, m.blobs.len()));
    assert_eq!(meta.log_head().unwrap(), m.log_head);
    for b in &m.blobs {
        assert_eq!(blobs.read_to_vec(&b.blob).await.unwrap(), a.blobs.read_to_vec(&b.blob).await.unwrap(), "{}", b.blob);
    }
    let again = crate::restore::into_store(&meta, &blobs, &restore_req(&dest, &m.id, "a", "again", 6)).await.unwrap_err();
    assert!(again.to_string().contains("not empty"), "{again}");
    let fresh = crate::meta::MetaStore::new(Arc::new(MemKv::new()));
    let other = crate::restore::into_store(&fresh, &BlobStore::memory(), &restore_req(&dest, &m.id, "b", "wrong site", 6)).await.unwrap_err();
    assert!(other.to_string().contains("is of site a"), "{other}");
    assert!(fresh.is_empty().unwrap(), "a refused restore writes nothing");

    let restored = site_on("a", kv, blobs);
    leased(&restored, cluster("b", 2), 2);
    let refused = restored.serving().unwrap_err();
    assert!(matches!(refused, ReplicaError::NotReady(ref m) if m.contains("serves no contract yet")), "{refused:?}");
    assert!(restored.restoring().unwrap().contains(&m.id));
    crate::restore::check_startable(&restored.meta).unwrap();
    let mut batch = crate::meta::MetaBatch::default();
    batch.set_log_floor(m.log_head + 5);
    restored.meta.commit(batch).unwrap();
    assert_eq!(restored.meta.log_head().unwrap(), m.log_head + 5, "the head follows the floor");

    // A damaged file in the backup: the restore stops, the store is marked
    // unfinished, and a later restore may finish it.
    let damaged = &m.blobs[0];
    let name = format!("blobs/{}", damaged.blake3);
    let mut bytes = dest.read_to_vec(&name).await.unwrap();
    bytes[20] ^= 1;
    let mut w = dest.writer(&name, crate::blob::Hashing::None).await.unwrap();
    w.write(&bytes).await.unwrap();
    w.finish().await.unwrap();
    let half = crate::meta::MetaStore::new(Arc::new(MemKv::new()));
    let err = crate::restore::into_store(&half, &BlobStore::memory(), &restore_req(&dest, &m.id, "a", "disk lost", 7)).await.unwrap_err();
    assert!(matches!(err, ReplicaError::Corrupt(ref e) if e.contains(&damaged.blob)), "{err:?}");
    let unstartable = crate::restore::check_startable(&half).unwrap_err();
    assert!(unstartable.to_string().contains("did not finish"), "{unstartable}");
    let mut w = dest.writer(&name, crate::blob::Hashing::None).await.unwrap();
    bytes[20] ^= 1;
    w.write(&bytes).await.unwrap();
    w.finish().await.unwrap();
    crate::restore::into_store(&half, &BlobStore::memory(), &restore_req(&dest, &m.id, "a", "disk lost", 8)).await.unwrap();
    crate::restore::check_startable(&half).unwrap();
}

// A slow key-value disk (the drill's fault) makes each synced write of the
// data path take that much longer, in simulated time.
#[tokio::test(start_paused = true)]
async fn a_slow_key_value_disk_delays_each_synced_write() {
    let kv = Arc::new(MemKv::new());
    let a = site_on("a", kv.clone(), BlobStore::memory());
    leased(&a, cluster("a", 1), 1);
    let t0 = tokio::time::Instant::now();
    put(&a, b"fast").await;
    let fast = t0.elapsed();
    kv.set_slow(std::time::Duration::from_millis(200));
    leased(&a, cluster("a", 1), 2);
    let t1 = tokio::time::Instant::now();
    put(&a, b"slow").await;
    assert!(t1.elapsed() >= fast + std::time::Duration::from_millis(200), "{:?} vs {fast:?}", t1.elapsed());
    assert_eq!(a.meta.log_head().unwrap(), 2, "the write went through");
}

// A destroy scrubs the contract's wrapped keys from this site's own log
// too: the put's entry keeps its place and size, not its keys.
#[tokio::test]
async fn a_destroy_scrubs_the_keys_from_the_sites_own_log() {
    let a = site("a");
    leased(&a, cluster("a", 1), 1);
    let entry = put(&a, b"to be destroyed").await;
    let crate::model::Change::Put(v) = &entry.change else { panic!("a put") };
    assert!(v.files[0].key.is_some(), "the put's entry carries the file's wrapped key");
    assert_eq!(a.meta.keyed_entries("t1", "c1").unwrap(), vec![entry.seq]);
    let head = a.meta.head(shard_of_t1(), "t1", "c1").unwrap().unwrap();
    let mut batch = crate::meta::MetaBatch::default();
    a.shred(&head, &tombstone("a"), 0, &mut batch).unwrap();
    a.meta.commit(batch).unwrap();
    let scrubbed = a.meta.log_entry(entry.seq).unwrap().unwrap();
    let crate::model::Change::Put(v) = &scrubbed.change else { panic!("still a put") };
    assert!(v.files.iter().all(|f| f.key.is_none()) && v.pii_key.is_none() && v.pii.is_empty(), "{v:?}");
    assert_eq!((scrubbed.seq, scrubbed.cum_bytes), (entry.seq, entry.cum_bytes));
    assert!(a.meta.keyed_entries("t1", "c1").unwrap().is_empty());
}
