//! The shared state of one replicator: its stores, keys, controller view
//! and outgoing links. Services and background tasks hold an `Arc<Site>`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_controller::client::ControlClient;
use tandem_controller::clock::Clock;
use tandem_crypto::{KeyProvider, RandomSource};
use tandem_net::Transport;
use tandem_storage::KvStore;
use tokio::sync::watch;

pub(crate) mod keys;
mod log;
mod rules;
pub mod staging;

use crate::blob::BlobStore;
use crate::config::ReplicatorConfig;
use crate::error::ReplicaError;
use crate::meta::MetaStore;
use crate::view::ControllerView;
pub use staging::{Registry, Staged, StagedId};

/// After the last byte of an entry reached the peer, the peer still has to
/// sync it: allow this rate on top of the sync timeout before the silence
/// counts as a stall (a 1 GiB file gets 5 s more).
pub(crate) const PEER_SYNC_RATE: u64 = 200 * 1024 * 1024;

/// One connection to a peer, made on first use and dropped on request (a
/// connection across a silent partition can hang; the next use makes a
/// fresh one).
#[derive(Clone, Default)]
pub struct ChannelSlot(Arc<Mutex<Option<tonic::transport::Channel>>>);

impl ChannelSlot {
    /// The connection to `addr`, connecting it if there is none.
    pub fn get(&self, transport: &Transport, addr: &str) -> Option<tonic::transport::Channel> {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = transport.channel(addr).ok();
        }
        guard.clone()
    }

    /// What drops the connection, for a task that finds it hanging.
    pub fn resetter(&self) -> impl FnOnce() + Send + 'static {
        let slot = self.0.clone();
        move || *slot.lock().unwrap_or_else(|p| p.into_inner()) = None
    }
}

/// An outgoing replication link from this site to one peer.
pub struct Link {
    pub peer: String,
    pub addr: String,
    /// Bytes per second this site may send on the link; 0: unlimited.
    pub send_limit: u64,
    /// The peer's cursor in this site's log, as last confirmed by it.
    pub acked: watch::Sender<u64>,
    /// Ciphertext bytes handed to the peer's stream so far: progress on a
    /// large entry, which keeps a sync write waiting while the peer is
    /// still receiving.
    pub sent: Arc<watch::Sender<u64>>,
    /// Ciphertext bytes of staged copies queued for the peer's stage
    /// stream, for `tandem_replication_sent_bytes_total` only. Not progress
    /// in `sent`: a queue accepts bytes a cut-off peer never reads, and a
    /// sync write must not wait on them as if the peer were receiving.
    pub staged_bytes: Arc<std::sync::atomic::AtomicU64>,
    /// Whether `acked` came from the peer since this process started (a
    /// fresh 0 means "not asked yet", not "has nothing").
    pub acked_known: std::sync::atomic::AtomicBool,
    /// Blobs of this site's writes streamed to the peer as staged copies
    /// (blob path -> the peer's staged id once it confirms, `None` if it
    /// does not), for the shipper to reference instead of sending their
    /// bytes again (see [`crate::stage`]).
    pub staged: Mutex<BTreeMap<String, StagedId>>,
    /// The connection staged uploads use (separate from the shipper's, so
    /// neither waits behind the other's flow control).
    pub stage_channel: ChannelSlot,
    /// Signalled when the peer contacts this site (it is up): wakes the
    /// shipper from its back-off.
    pub peer_seen: tokio::sync::Notify,
}

impl Link {
    pub fn new(peer: String, addr: String, send_limit: u64) -> Self {
        Link {
            peer,
            addr,
            send_limit,
            acked: watch::Sender::new(0),
            sent: Arc::new(watch::Sender::new(0)),
            staged_bytes: Arc::default(),
            acked_known: std::sync::atomic::AtomicBool::new(false),
            staged: Mutex::new(BTreeMap::new()),
            stage_channel: ChannelSlot::default(),
            peer_seen: tokio::sync::Notify::new(),
        }
    }

    /// Records that `blob` was streamed to the peer; `id` resolves to the
    /// peer's staged id once it has checked and synced it.
    pub fn note_staged(&self, blob: &str, id: StagedId) {
        self.staged.lock().unwrap_or_else(|p| p.into_inner()).insert(blob.to_string(), id);
    }

    /// Whether a staged copy of `blob` was noted and not yet taken.
    pub fn has_staged(&self, blob: &str) -> bool {
        self.staged.lock().unwrap_or_else(|p| p.into_inner()).contains_key(blob)
    }

    /// Forgets the staged copies of `blobs`, returning those it had.
    pub fn take_staged<'b>(&self, blobs: impl IntoIterator<Item = &'b str>) -> Vec<(String, StagedId)> {
        let mut map = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        blobs.into_iter().filter_map(|b| map.remove(b).map(|id| (b.to_string(), id))).collect()
    }

    /// Waits until the peer has confirmed entry `seq`, or until `stall`
    /// passes with neither a confirmation nor any bytes sent to the peer.
    /// Returns whether `seq` was confirmed.
    pub async fn wait_acked(&self, seq: u64, stall: Duration) -> bool {
        let mut acked = self.acked.subscribe();
        let mut sent = self.sent.subscribe();
        loop {
            if *acked.borrow_and_update() >= seq {
                return true;
            }
            tokio::select! {
                changed = acked.changed() => if changed.is_err() { return false },
                changed = sent.changed() => if changed.is_err() { return false },
                _ = tokio::time::sleep(stall) => return *acked.borrow() >= seq,
            }
        }
    }
}

/// What a replicator needs from outside: its stores, keys, randomness,
/// clock and network. The daemon, the demo, the tests and the simulation
/// each give their own.
pub struct ReplicatorDeps {
    pub kv: Arc<dyn KvStore>,
    pub blobs: BlobStore,
    pub keys: Arc<dyn KeyProvider>,
    pub rng: Arc<dyn RandomSource>,
    pub clock: Arc<dyn Clock>,
    pub transport: Transport,
}

/// Bound on mode-change calls: above the controllers' commit timeout.
pub const CONTROL_CHANGE_TIMEOUT: Duration = Duration::from_secs(8);

/// One site's replicator state. The stores and the view are open to the
/// operations of this crate; the locks are not: the methods that need one
/// take it ([`Site::append`] the log lock, [`Site::ordered`] an origin's
/// order, [`Site::claim`] a contract), so no caller can forget the rule.
pub struct Site {
    pub(crate) name: String,
    pub(crate) meta: MetaStore,
    pub(crate) blobs: BlobStore,
    pub(crate) keys: keys::Keys,
    pub(crate) rng: Arc<dyn RandomSource>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) transport: Transport,
    pub(crate) view: ControllerView,
    /// For mode changes: calls bounded by the controllers' commit timeout.
    pub(crate) control: ControlClient,
    pub(crate) links: BTreeMap<String, Link>,
    /// Replicator address of every site, for redirects and repair.
    pub(crate) addrs: BTreeMap<String, String>,
    /// How long a sync write waits for the in-city peer.
    pub(crate) sync_timeout: Duration,
    /// Serialises appends to the change log (sequence numbers without gaps).
    log_lock: tokio::sync::Mutex<()>,
    /// Appends waiting for their group's commit ([`Site::append`]).
    appends: log::Appends,
    /// Contracts with a write in progress here: one writer per contract.
    busy: Mutex<BTreeSet<(String, String)>>,
    /// Wakes the shippers when the log grows.
    pub(crate) log_grew: watch::Sender<u64>,
    /// One per origin site: entries of one origin are applied in order.
    apply_locks: BTreeMap<String, tokio::sync::Mutex<()>>,
    /// Wakes the ciphertext collector after a destroy.
    pub(crate) gc_wake: tokio::sync::Notify,
    /// Striped per-contract locks: an incoming version and a quarantine of
    /// the same contract never interleave (see [`crate::quarantine`]).
    contract_locks: Vec<tokio::sync::Mutex<()>>,
    /// Counts quarantines of this site's own writes: shippers then ask
    /// peers that applied them to quarantine their copies.
    pub(crate) quarantines: watch::Sender<u64>,
    /// Blobs other sites staged here, waiting for their log entries.
    pub(crate) staged: Registry,
    /// How long a staged blob waits for its entry before it is deleted.
    pub(crate) staged_ttl: Duration,
    /// Requests served and refused, for `/metrics`.
    pub(crate) counters: Counters,
    /// While this site, restored from a backup, catches up: what it waits
    /// for. It serves no contract meanwhile (see [`crate::restore`]).
    restoring: Mutex<Option<String>>,
    /// The log head when this process opened the store: a peer's first
    /// cursor in this process is checked against it (entries appended
    /// since cannot be what the peer holds).
    pub(crate) started_head: u64,
    /// Tasks started later than the server's own (a catch-up found
    /// necessary while running), stopped with it.
    pub(crate) late_tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Outcomes of the calls that change data, by call and error kind.
#[derive(Default)]
pub struct Counters {
    outcomes: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Per peer: owned shards whose digest differed from the peer's at the
    /// last background comparison (`crate::anti_entropy`), before repair.
    differing: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    /// Counts one `call` ("put", "apply"): `ok`, or the error's kind.
    pub fn count(&self, call: &'static str, error: Option<&crate::error::ReplicaError>) {
        let outcome = error.map_or("ok", |e| e.kind());
        *self.outcomes.lock().unwrap_or_else(|p| p.into_inner()).entry((call, outcome)).or_default() += 1;
    }

    pub fn set_differing(&self, peer: &str, shards: u64) {
        self.differing.lock().unwrap_or_else(|p| p.into_inner()).insert(peer.to_string(), shards);
    }

    /// (peer, shards differing at the last comparison).
    pub fn differing(&self) -> Vec<(String, u64)> {
        self.differing.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// ((call, outcome), count), in a stable order.
    pub fn snapshot(&self) -> Vec<((&'static str, &'static str), u64)> {
        self.outcomes.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (*k, *v)).collect()
    }
}

/// Number of [`Site::contract_locks`] stripes.
pub const CONTRACT_LOCK_STRIPES: usize = 64;

/// Marks a contract busy for the life of the guard.
pub struct BusyGuard<'a> {
    site: &'a Site,
    key: (String, String),
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.site.busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

impl Site {
    /// The state of site `config.site` before anything runs: its stores,
    /// one link per other site, the log head as its stores hold it.
    pub fn new(config: &ReplicatorConfig, deps: ReplicatorDeps) -> Result<Site, ReplicaError> {
        let meta = MetaStore::new(deps.kv.clone());
        let head = meta.log_head()?;
        let restoring = meta.restoring()?.map(|r| r.waiting());
        let links = config
            .sites
            .iter()
            .filter(|s| s.name != config.site)
            .map(|s| {
                let link = Link::new(s.name.clone(), s.addr.clone(), s.send_limit_mib_s * 1024 * 1024);
                (s.name.clone(), link)
            })
            .collect();
        Ok(Site {
            name: config.site.clone(),
            meta,
            blobs: deps.blobs,
            keys: keys::Keys::new(deps.keys),
            rng: deps.rng,
            clock: deps.clock.clone(),
            transport: deps.transport.clone(),
            view: ControllerView::new(deps.clock.clone()),
            control: ControlClient::new(config.controllers.clone(), deps.transport.clone(), CONTROL_CHANGE_TIMEOUT),
            links,
            addrs: config.sites.iter().map(|s| (s.name.clone(), s.addr.clone())).collect(),
            sync_timeout: config.sync_timeout(),
            log_lock: tokio::sync::Mutex::new(()),
            appends: log::Appends::default(),
            busy: Mutex::new(Default::default()),
            log_grew: watch::Sender::new(head),
            apply_locks: config.sites.iter().map(|s| (s.name.clone(), tokio::sync::Mutex::new(()))).collect(),
            quarantines: tokio::sync::watch::Sender::new(0),
            counters: Default::default(),
            contract_locks: (0..CONTRACT_LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            gc_wake: tokio::sync::Notify::new(),
            staged: Default::default(),
            staged_ttl: config.staged_ttl(),
            restoring: Mutex::new(restoring),
            started_head: head,
            late_tasks: Mutex::default(),
        })
    }

    /// Whether `origin` is another site of the cluster (whose entries this
    /// site may receive).
    pub fn knows_origin(&self, origin: &str) -> bool {
        origin != self.name && self.apply_locks.contains_key(origin)
    }

    /// Holds `origin`'s order: entries of one origin are applied (or
    /// skipped) one at a time, in sequence. Refused for an unknown origin.
    pub async fn ordered(&self, origin: &str) -> Result<tokio::sync::MutexGuard<'_, ()>, ReplicaError> {
        let lock = self.apply_locks.get(origin).ok_or_else(|| ReplicaError::Invalid(format!("entry from unknown site {origin:?}")))?;
        Ok(lock.lock().await)
    }

    /// The controller view's index and this site's log head, read together
    /// under the log lock once every entry numbered before is committed or
    /// has failed: every append after this is checked against a view at
    /// least as new (see [`Site::append`]), and every entry before it is in
    /// the store, so the peers' lag up to this head is what a switchover
    /// may rely on (an entry still waiting for its group's commit, counted
    /// in no link's lag, could otherwise be acknowledged after the move).
    pub async fn view_and_log_head(&self) -> (u64, u64) {
        let _log = self.log_lock.lock().await;
        self.settle_appends().await;
        (self.view.applied_index(), self.meta.log_head().unwrap_or(0))
    }

    /// Claims `tenant/contract_id` for one write; `None` if another write
    /// to it is in progress.
    pub fn claim(&self, tenant: &str, contract_id: &str) -> Option<BusyGuard<'_>> {
        let key = (tenant.to_string(), contract_id.to_string());
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.insert(key.clone()).then(|| BusyGuard { site: self, key })
    }

    /// The lock stripe of one contract.
    pub fn contract_lock(&self, tenant: &str, contract_id: &str) -> &tokio::sync::Mutex<()> {
        let mut h = crc32fast::Hasher::new();
        h.update(tenant.as_bytes());
        h.update(b"/");
        h.update(contract_id.as_bytes());
        &self.contract_locks[h.finalize() as usize % self.contract_locks.len()]
    }

    /// What a restored site waits for before it serves (`None`: it serves).
    pub fn restoring(&self) -> Option<String> {
        self.restoring.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_restoring(&self, waiting: Option<String>) {
        *self.restoring.lock().unwrap_or_else(|p| p.into_inner()) = waiting;
    }

    /// Starts serving nothing (`waiting` says why), unless already so;
    /// returns whether this call started it.
    pub(crate) fn begin_restoring(&self, waiting: String) -> bool {
        let mut restoring = self.restoring.lock().unwrap_or_else(|p| p.into_inner());
        if restoring.is_some() {
            return false;
        }
        *restoring = Some(waiting);
        true
    }

    /// Refuses every contract call while the site catches up after a
    /// restore: a destroyed contract must not be read from the backup's
    /// keys, and nothing may be written under a stale log position.
    pub fn serving(&self) -> Result<(), ReplicaError> {
        match self.restoring() {
            None => Ok(()),
            Some(why) => Err(ReplicaError::NotReady(format!("site {} serves no contract yet: {why}", self.name))),
        }
    }

    /// The replicator address of `site`.
    pub fn addr_of(&self, site: &str) -> Option<&str> {
        self.addrs.get(site).map(String::as_str)
    }
}
