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
    let rng = SeededRandomSource::new(7);
    let deps = ReplicatorDeps {
        kv: Arc::new(MemKv::new()),
        blobs: BlobStore::memory(),
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

// The digests anti-entropy compares are reused for unchanged shards and
// contracts, and recomputed for every change, including one that keeps
// the version number (a key rotation rewrites the record in place).
#[tokio::test]
async fn cached_digests_follow_every_change() {
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
}
