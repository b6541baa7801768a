//! Ciphertext storage: the local filesystem by default, S3 and the other
//! object_store backends by URL in the config.
//!
//! Files are streamed in and out, never held whole in memory.
//!
//! **Local filesystem** (the default, and `file://` URLs): written directly,
//! not through object_store. A file is written to a temporary name under
//! `.staging/` by a writer thread fed through a small pool of 1 MiB
//! buffers (so the disk works while the next bytes arrive), with
//! `O_DIRECT` when the filesystem supports it (the page cache would only
//! add a copy of every byte and a large write-back at the fsync; on a
//! filesystem without it, plain writes). At the end: one fsync of the
//! file, a rename to its name, an fsync of its directory (and of each
//! directory above it that this process has not yet seen synced into its
//! parent, [`DirSyncs`]). So a name only ever designates a complete,
//! durable file, and metadata is committed only after that.
//! Reads use `O_DIRECT` too, from a reader thread, 1 MiB at a time.
//!
//! **Other backends** go through object_store: multipart uploads, which
//! are durable and atomic once complete.
//!
//! **Staged blobs** (see `stage`): ciphertext a peer streams here while it
//! stores its own copy. It is written under `.staging/` and gets its real
//! name ([`BlobStore::promote`]) only when the log entry that references it
//! is applied; nothing under `.staging/` is ever served, and the directory
//! is emptied when the replicator starts.

use std::io::Write as _;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::blob_stats::{BlobStats, Instrumented, Outcome};
use crate::hash::Hasher;
use crate::pool::Pool;

/// Bytes buffered per multipart part (object_store's own default is 5 MiB;
/// S3 needs at least that for every part but the last).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight at once: bounds memory to about PART_SIZE * this.
const PARTS_IN_FLIGHT: usize = 2;

/// Local files: bytes per write and per read (a multiple of [`ALIGN`]).
pub const IO_CHUNK: usize = 1024 * 1024;
/// Buffers per local writer: one being filled, the others being hashed or
/// written. Bounds a writer's memory to `IO_CHUNK * WRITE_BUFFERS`.
const WRITE_BUFFERS: usize = 3;
/// Reads ahead per local reader.
const READ_AHEAD: usize = 2;
/// Alignment of `O_DIRECT` buffers, offsets and lengths: the largest
/// logical block size in use.
const ALIGN: usize = 4096;

/// Where temporary and staged files live, under the local root (or as a
/// prefix of the object store). Tenant ids cannot start with '.', so no
/// contract's blobs can land here.
pub const STAGING: &str = ".staging";
/// What the idle probe asks for: under the staging prefix, so no contract
/// can have that name, and never written.
const PROBE: &str = ".staging/.probe";

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store: {0}")]
    Store(String),
    #[error("blob {0} not found")]
    NotFound(String),
    #[error("cannot sync {path}: {reason}")]
    Sync { path: String, reason: String },
}

impl From<object_store::Error> for BlobError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => BlobError::NotFound(path),
            other => BlobError::Store(other.to_string()),
        }
    }
}

fn io_err(what: impl std::fmt::Display, e: std::io::Error) -> BlobError {
    if e.kind() == std::io::ErrorKind::NotFound {
        return BlobError::NotFound(what.to_string());
    }
    BlobError::Store(format!("{what}: {e}"))
}

fn join_err(e: tokio::task::JoinError) -> BlobError {
    BlobError::Store(format!("blob i/o task failed: {e}"))
}

/// A plain file written like a local blob (writer threads, `O_DIRECT`
/// where the filesystem takes it, fsync at [`BlobWriter::finish`]), for
/// clients writing what they read. The caller renames it into place.
pub async fn file_writer(path: &FsPath) -> Result<BlobWriter, BlobError> {
    let root = path.parent().map(FsPath::to_path_buf).unwrap_or_default();
    let w = LocalWriter::start(direct_flag(true) != 0, root, Arc::default(), path.to_path_buf(), None, Hashing::None).await?;
    Ok(BlobWriter { inner: Inner::Local(w), len: 0 })
}

/// Whether a blob's hash ([`crate::hash`]) is computed while it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hashing {
    /// The owner's copy: the hash goes into the file's record.
    Hash,
    /// A copy received from another site: framing, crc32 and length are
    /// checked by the receiver; the hash travels in the record.
    None,
}

#[derive(Clone)]
pub struct BlobStore {
    backend: Backend,
    /// Requests to the backend and whether it fails (metrics, heartbeats).
    stats: BlobStats,
}

#[derive(Clone)]
enum Backend {
    Local(Arc<LocalFs>),
    /// The store, and the counter naming its staged blobs (per store: the
    /// drill runs several simulated sites, and several drills, per process).
    Object(Arc<dyn ObjectStore>, Arc<AtomicU64>),
}

struct LocalFs {
    root: PathBuf,
    durable: Arc<DurableDirs>,
    /// Files are written and read with `O_DIRECT`.
    direct: bool,
    /// Names of temporary and staged files: unique within this process
    /// (the staging directory is emptied at start).
    next: AtomicU64,
}

impl BlobStore {
    /// The local filesystem under `root` (created if missing), with direct
    /// I/O if the filesystem supports it.
    pub fn local(root: &FsPath) -> Result<Self, BlobError> {
        Self::local_with(root, true)
    }

    /// Like [`Self::local`]; `direct: false` never uses `O_DIRECT`.
    pub fn local_with(root: &FsPath, direct: bool) -> Result<Self, BlobError> {
        std::fs::create_dir_all(root).map_err(|e| BlobError::Store(format!("cannot create {}: {e}", root.display())))?;
        let root = root.canonicalize().map_err(|e| BlobError::Store(format!("cannot resolve {}: {e}", root.display())))?;
        let staging = root.join(STAGING);
        std::fs::create_dir_all(&staging).map_err(|e| BlobError::Store(format!("cannot create {}: {e}", staging.display())))?;
        let direct = direct && direct_io_works(&staging);
        tracing::debug!(root = %root.display(), direct, "local blob store");
        Ok(Self { backend: Backend::Local(Arc::new(LocalFs { root, durable: Arc::default(), direct, next: AtomicU64::new(0) })), stats: BlobStats::default() })
    }

    /// An in-memory store that lives as long as its clones: the drill keeps
    /// one per site so a simulated crash keeps what was stored (blobs are
    /// synced before any metadata refers to them).
    pub fn memory() -> Self {
        Self::over(Arc::new(object_store::memory::InMemory::new()))
    }

    /// A store over any `object_store` backend (the drill's faulty disks
    /// wrap the in-memory one).
    pub fn over(store: Arc<dyn ObjectStore>) -> Self {
        let stats = BlobStats::default();
        let store = Arc::new(Instrumented::new(store, stats.clone()));
        Self { backend: Backend::Object(store, Arc::new(AtomicU64::new(0))), stats }
    }

    /// A backend by URL (`s3://bucket/prefix`, `gs://...`, `az://...`,
    /// `http(s)://...`, `file:///path`, `memory:///`), with backend options
    /// (region, endpoint...; see [`crate::blob_url`]): an unknown option is
    /// an error that names it. Credentials and settings also come from the
    /// backend's usual environment variables (`AWS_ACCESS_KEY_ID`, ...);
    /// options override them.
    pub fn from_url(url: &str, options: &std::collections::BTreeMap<String, String>) -> Result<Self, BlobError> {
        if let Some(path) = url.strip_prefix("file://") {
            if let Some(key) = options.keys().next() {
                return Err(BlobError::Store(format!("blob_options: a file:// store takes no options (got {key:?})")));
            }
            return Self::local(FsPath::new(path));
        }
        let (store, prefix) = crate::blob_url::open(url, options).map_err(BlobError::Store)?;
        let stats = BlobStats::default();
        let store: Arc<dyn ObjectStore> = Arc::new(Instrumented::new(store, stats.clone()));
        let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() { store } else { Arc::new(object_store::prefix::PrefixStore::new(store, prefix)) };
        Ok(Self { backend: Backend::Object(store, Arc::new(AtomicU64::new(0))), stats })
    }

    /// The backend's request counts and latencies, and whether it fails.
    pub fn stats(&self) -> &BlobStats {
        &self.stats
    }

    /// One cheap request that needs the store to answer (a HEAD of a name
    /// that never exists; a stat of the root on the local disk), so an
    /// idle store's failure shows too. Its outcome lands in [`Self::stats`].
    pub async fn probe(&self) {
        match &self.backend {
            Backend::Object(..) => {
                let _ = self.exists(PROBE).await;
            }
            Backend::Local(fs) => {
                let started = tokio::time::Instant::now();
                let root = fs.root.clone();
                let result = tokio::task::spawn_blocking(move || std::fs::metadata(&root).map(|_| ())).await;
                let error = match result {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(io_err(fs.root.display(), e).to_string()),
                    Err(e) => Some(join_err(e).to_string()),
                };
                let outcome = if error.is_some() { Outcome::Error } else { Outcome::Ok };
                self.stats.record("probe", outcome, started.elapsed(), error);
            }
        }
    }

    /// Where a blob lives on the local disk, if this is the local backend
    /// (tests and the drill corrupt files through it).
    pub fn local_path(&self, blob: &str) -> Option<PathBuf> {
        match &self.backend {
            Backend::Local(fs) => Some(fs.root.join(blob)),
            Backend::Object(..) => None,
        }
    }

    /// Whether local files are written and read with `O_DIRECT`.
    pub fn direct_io(&self) -> bool {
        matches!(&self.backend, Backend::Local(fs) if fs.direct)
    }

    /// Starts writing `blob`; nothing is visible under that name until
    /// [`BlobWriter::finish`].
    pub async fn writer(&self, blob: &str, hashing: Hashing) -> Result<BlobWriter, BlobError> {
        match &self.backend {
            Backend::Local(fs) => {
                let tmp = fs.root.join(STAGING).join(format!("tmp-{}", fs.next.fetch_add(1, Ordering::Relaxed)));
                let w = LocalWriter::start(fs.direct, fs.root.clone(), fs.durable.clone(), tmp, Some(fs.root.join(blob)), hashing).await?;
                Ok(BlobWriter { inner: Inner::Local(w), len: 0 })
            }
            Backend::Object(store, _) => Ok(BlobWriter { inner: Inner::Object(Box::new(ObjectWriter::start(store, blob, hashing).await?)), len: 0 }),
        }
    }

    /// A fresh name under the staging area, for [`Self::stage_writer`].
    pub fn staging_name(&self, label: &str) -> String {
        let n = match &self.backend {
            Backend::Local(fs) => fs.next.fetch_add(1, Ordering::Relaxed),
            Backend::Object(_, next) => next.fetch_add(1, Ordering::Relaxed),
        };
        format!("{STAGING}/stage-{label}-{}-{n}", std::process::id())
    }

    /// Starts writing a staged blob named by [`Self::staging_name`]. It is
    /// never served; [`Self::promote`] gives it its real name.
    pub async fn stage_writer(&self, staged: &str) -> Result<BlobWriter, BlobError> {
        if !staged.starts_with(&format!("{STAGING}/")) {
            return Err(BlobError::Store(format!("{staged} is not a staging name")));
        }
        match &self.backend {
            // Written in place: the name is private until promoted.
            Backend::Local(fs) => {
                let w = LocalWriter::start(fs.direct, fs.root.clone(), fs.durable.clone(), fs.root.join(staged), None, Hashing::None).await?;
                Ok(BlobWriter { inner: Inner::Local(w), len: 0 })
            }
            Backend::Object(store, _) => Ok(BlobWriter { inner: Inner::Object(Box::new(ObjectWriter::start(store, staged, Hashing::None).await?)), len: 0 }),
        }
    }

    /// Gives the finished staged blob `staged` the name `blob`, durably.
    pub async fn promote(&self, staged: &str, blob: &str) -> Result<(), BlobError> {
        match &self.backend {
            Backend::Local(fs) => {
                let (from, to, fs) = (fs.root.join(staged), fs.root.join(blob), fs.clone());
                tokio::task::spawn_blocking(move || rename_durably(&fs.root, &fs.durable, &from, &to)).await.map_err(join_err)?
            }
            Backend::Object(store, _) => {
                let from = Path::parse(staged).map_err(|e| BlobError::Store(e.to_string()))?;
                let to = Path::parse(blob).map_err(|e| BlobError::Store(e.to_string()))?;
                Ok(store.rename(&from, &to).await?)
            }
        }
    }

    /// [`Self::promote`], leaving the directories that must be synced for
    /// the new name to survive a crash in `dirs`, for [`Self::sync_dirs`]
    /// to sync with others at once (a group of entries applied together
    /// syncs each directory once, and the syncs in parallel: one after the
    /// other they were most of a peer's time per entry).
    pub async fn promote_deferred(&self, staged: &str, blob: &str, dirs: &mut DirSyncs) -> Result<(), BlobError> {
        match &self.backend {
            Backend::Local(fs) => {
                let (from, to, fs) = (fs.root.join(staged), fs.root.join(blob), fs.clone());
                let created = tokio::task::spawn_blocking(move || {
                    let dirs = prepare_dirs(&fs.root, &fs.durable, &to)?;
                    rename(&from, &to)?;
                    Ok::<_, BlobError>(dirs)
                })
                .await
                .map_err(join_err)??;
                dirs.extend(created);
                Ok(())
            }
            Backend::Object(..) => self.promote(staged, blob).await,
        }
    }

    /// Syncs `dirs` (from [`Self::promote_deferred`]), in parallel.
    pub async fn sync_dirs(&self, dirs: DirSyncs) -> Result<(), BlobError> {
        let DirSyncs { sync, durable } = dirs;
        let syncs = sync.into_iter().map(|d| tokio::task::spawn_blocking(move || sync_dir(&d)));
        for r in futures::future::join_all(syncs).await {
            r.map_err(join_err)??;
        }
        if let Backend::Local(fs) = &self.backend {
            fs.durable.add(durable);
        }
        Ok(())
    }

    /// All of `blob` in memory: for small files only (a backup's manifest
    /// and metadata dump, tests); contracts are streamed with [`Self::read`].
    pub async fn read_to_vec(&self, blob: &str) -> Result<Vec<u8>, BlobError> {
        let mut stream = self.read(blob).await?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    /// Every blob name under `prefix` (a directory-like path, e.g.
    /// `backups/`), in no particular order; staging is never listed.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        match &self.backend {
            Backend::Local(fs) => {
                let root = fs.root.clone();
                let start = root.join(prefix);
                tokio::task::spawn_blocking(move || -> Result<Vec<String>, BlobError> {
                    let mut out = Vec::new();
                    let mut dirs = vec![start];
                    while let Some(dir) = dirs.pop() {
                        let entries = match std::fs::read_dir(&dir) {
                            Ok(e) => e,
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                            Err(e) => return Err(io_err(dir.display(), e)),
                        };
                        for e in entries {
                            let path = e.map_err(|e| io_err(dir.display(), e))?.path();
                            if path.is_dir() {
                                dirs.push(path);
                            } else if let Ok(rel) = path.strip_prefix(&root) {
                                let name = rel.to_string_lossy().to_string();
                                if !name.starts_with(STAGING) {
                                    out.push(name);
                                }
                            }
                        }
                    }
                    Ok(out)
                })
                .await
                .map_err(join_err)?
            }
            Backend::Object(store, _) => {
                let prefix = Path::parse(prefix.trim_end_matches('/')).map_err(|e| BlobError::Store(e.to_string()))?;
                let mut listed = store.list(Some(&prefix));
                let mut out = Vec::new();
                while let Some(meta) = listed.next().await {
                    out.push(meta?.location.to_string());
                }
                Ok(out)
            }
        }
    }

    /// Deletes everything under the staging area (at start: nothing there
    /// can be committed any more).
    pub async fn clear_staging(&self) -> Result<usize, BlobError> {
        match &self.backend {
            Backend::Local(fs) => {
                let dir = fs.root.join(STAGING);
                tokio::task::spawn_blocking(move || -> Result<usize, BlobError> {
                    let mut n = 0;
                    for e in std::fs::read_dir(&dir).map_err(|e| io_err(dir.display(), e))? {
                        let e = e.map_err(|e| io_err(dir.display(), e))?;
                        match std::fs::remove_file(e.path()) {
                            Ok(()) => n += 1,
                            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                            Err(err) => return Err(io_err(e.path().display(), err)),
                        }
                    }
                    Ok(n)
                })
                .await
                .map_err(join_err)?
            }
            Backend::Object(store, _) => {
                let prefix = Path::parse(STAGING).map_err(|e| BlobError::Store(e.to_string()))?;
                let mut listed = store.list(Some(&prefix));
                let mut n = 0;
                while let Some(meta) = listed.next().await {
                    let meta = meta?;
                    match store.delete(&meta.location).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => n += 1,
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(n)
            }
        }
    }

    /// The blob's bytes, streamed.
    pub async fn read(&self, blob: &str) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError> {
        match &self.backend {
            Backend::Local(fs) => read_local(fs.root.join(blob), blob.to_string(), fs.direct).await,
            Backend::Object(store, _) => {
                let path = Path::parse(blob).map_err(|e| BlobError::Store(e.to_string()))?;
                let got = store.get(&path).await?;
                match got.payload {
                    // object_store reads local files 8 KiB per blocking
                    // task; read them 1 MiB at a time instead.
                    object_store::GetResultPayload::File(file, path) => {
                        drop(file);
                        read_local(path, blob.to_string(), false).await
                    }
                    object_store::GetResultPayload::Stream(s) => Ok(s.map(|r| r.map_err(BlobError::from)).boxed()),
                }
            }
        }
    }

    /// Moves `from` to `to` (quarantine). Returns false, changing nothing,
    /// when `from` does not exist. Durable once it returns.
    pub async fn rename(&self, from: &str, to: &str) -> Result<bool, BlobError> {
        match &self.backend {
            Backend::Local(fs) => {
                let (src, dst, fs) = (fs.root.join(from), fs.root.join(to), fs.clone());
                tokio::task::spawn_blocking(move || {
                    if !src.exists() {
                        return Ok(false);
                    }
                    rename_durably(&fs.root, &fs.durable, &src, &dst)?;
                    // The name is gone from its old directory too.
                    if let Some(dir) = src.parent() {
                        sync_dir(dir)?;
                    }
                    Ok(true)
                })
                .await
                .map_err(join_err)?
            }
            Backend::Object(store, _) => {
                let src = Path::parse(from).map_err(|e| BlobError::Store(e.to_string()))?;
                let dst = Path::parse(to).map_err(|e| BlobError::Store(e.to_string()))?;
                match store.rename(&src, &dst).await {
                    Ok(()) => Ok(true),
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Whether `blob` exists.
    pub async fn exists(&self, blob: &str) -> Result<bool, BlobError> {
        match &self.backend {
            Backend::Local(fs) => {
                let path = fs.root.join(blob);
                tokio::task::spawn_blocking(move || match std::fs::metadata(&path) {
                    Ok(m) => Ok(m.is_file()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(io_err(path.display(), e)),
                })
                .await
                .map_err(join_err)?
            }
            Backend::Object(store, _) => {
                let path = Path::parse(blob).map_err(|e| BlobError::Store(e.to_string()))?;
                match store.head(&path).await {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Deletes `blob`; deleting a missing blob is not an error.
    pub async fn delete(&self, blob: &str) -> Result<(), BlobError> {
        match &self.backend {
            Backend::Local(fs) => {
                let path = fs.root.join(blob);
                tokio::task::spawn_blocking(move || match std::fs::remove_file(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(io_err(path.display(), e)),
                })
                .await
                .map_err(join_err)?
            }
            Backend::Object(store, _) => {
                let path = Path::parse(blob).map_err(|e| BlobError::Store(e.to_string()))?;
                match store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }
}

/// A blob being written: counts (and, if asked, hashes) what passes through.
pub struct BlobWriter {
    inner: Inner,
    len: u64,
}

enum Inner {
    Local(LocalWriter),
    // Boxed: an object-store upload carries ~2 KiB of state.
    Object(Box<ObjectWriter>),
}

/// What was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    pub len: u64,
    /// Hex hash ([`crate::hash`]) of the stored bytes ([`Hashing::Hash`]), else empty.
    pub hash: String,
}

impl BlobWriter {
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        match &mut self.inner {
            Inner::Local(w) => w.write(bytes).await?,
            Inner::Object(w) => w.write(bytes).await?,
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Completes the file and makes it durable under its name.
    pub async fn finish(self) -> Result<StoredBlob, BlobError> {
        self.finish_early(|_| {}).await
    }

    /// Like [`Self::finish`], calling `hashed` with the hex hash (empty
    /// without [`Hashing::Hash`]) as soon as it is known, before the file
    /// is durable: the owner tells its peer the hash while it still syncs.
    pub async fn finish_early(self, hashed: impl FnOnce(&str)) -> Result<StoredBlob, BlobError> {
        let hash = match self.inner {
            Inner::Local(w) => w.finish(hashed).await?,
            Inner::Object(w) => w.finish(hashed).await?,
        };
        Ok(StoredBlob { len: self.len, hash: hash.unwrap_or_default() })
    }

    /// Gives up; nothing appears under the name. (Dropping the writer does
    /// the same.)
    pub async fn abort(self) {
        match self.inner {
            Inner::Local(w) => w.abort().await,
            Inner::Object(w) => w.abort().await,
        }
    }
}

struct ObjectWriter {
    upload: WriteMultipart,
    hash: Option<Hasher>,
}

impl ObjectWriter {
    async fn start(store: &Arc<dyn ObjectStore>, blob: &str, hashing: Hashing) -> Result<Self, BlobError> {
        let path = Path::parse(blob).map_err(|e| BlobError::Store(e.to_string()))?;
        let upload = store.put_multipart(&path).await?;
        Ok(Self { upload: WriteMultipart::new_with_chunk_size(upload, PART_SIZE), hash: (hashing == Hashing::Hash).then(Hasher::new) })
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        // Back-pressure: wait while too many parts are uploading.
        self.upload.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        if let Some(hash) = &mut self.hash {
            hash.update(bytes);
        }
        self.upload.write(bytes);
        Ok(())
    }

    async fn finish(self, hashed: impl FnOnce(&str)) -> Result<Option<String>, BlobError> {
        let hash = self.hash.map(|h| h.hex());
        hashed(hash.as_deref().unwrap_or_default());
        self.upload.finish().await?;
        Ok(hash)
    }

    async fn abort(self) {
        let _ = self.upload.abort().await;
    }
}

/// A buffer whose data starts at an [`ALIGN`]ed address, as `O_DIRECT`
/// needs. (Safe code cannot allocate with an alignment, so it allocates
/// `ALIGN` more and starts at the first aligned byte.)
struct AlignedBuf {
    mem: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    fn new(capacity: usize) -> Self {
        let mut mem = Vec::with_capacity(capacity + ALIGN);
        let start = (ALIGN - mem.as_ptr() as usize % ALIGN) % ALIGN;
        mem.resize(start, 0);
        Self { mem, start }
    }

    fn len(&self) -> usize {
        self.mem.len() - self.start
    }

    fn data(&self) -> &[u8] {
        &self.mem[self.start..]
    }

    /// Appends what fits of `bytes` within `capacity`; returns how much.
    fn fill(&mut self, bytes: &[u8], capacity: usize) -> usize {
        let n = (capacity - self.len()).min(bytes.len());
        self.mem.extend_from_slice(&bytes[..n]);
        n
    }

    fn clear(&mut self) {
        self.mem.truncate(self.start);
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.data()
    }
}

/// Work for a local writer's threads.
struct Job {
    buf: AlignedBuf,
    /// The last bytes of the file (the only buffer that may be partial).
    last: bool,
}

/// A local file being written. A file that fits in one buffer is written
/// at [`LocalWriter::finish`] by one blocking task (open, write, sync,
/// rename: one hand-off, which is what a small contract's latency needs).
/// A larger one gets a writing thread (and a hashing thread) once its
/// first buffer is full, so the disk works while the next bytes arrive.
struct LocalWriter {
    hashing: Hashing,
    /// The file being opened (and its directories created) while the first
    /// bytes arrive.
    opening: Option<JoinHandle<Result<Opened, BlobError>>>,
    /// Set when the writer goes away unfinished: the opening task removes
    /// what it created.
    gone: Arc<std::sync::atomic::AtomicBool>,
    pipeline: Option<Pipeline>,
    current: Option<AlignedBuf>,
    /// Where the bytes go while they are written.
    tmp: PathBuf,
    done: bool,
}

/// An open temporary file and where it goes.
struct Opened {
    file: std::fs::File,
    target: Target,
}

struct Pipeline {
    /// To the hashing or writing thread.
    jobs: Option<mpsc::Sender<Job>>,
    /// Written buffers come back here.
    free: mpsc::Receiver<AlignedBuf>,
    allocated: usize,
    hasher: Option<JoinHandle<Hasher>>,
    /// Writes, syncs and renames; hands back the file's final state.
    writer: Option<JoinHandle<Result<(), BlobError>>>,
}

impl LocalWriter {
    async fn start(direct: bool, root: PathBuf, durable: Arc<DurableDirs>, tmp: PathBuf, dst: Option<PathBuf>, hashing: Hashing) -> Result<Self, BlobError> {
        let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut target = Target { tmp: tmp.clone(), dst, root, known: durable, direct, dirs: DirSyncs::default() };
        let quit = gone.clone();
        let opening = tokio::task::spawn_blocking(move || {
            if let Some(dst) = &target.dst {
                target.dirs = prepare_dirs(&target.root, &target.known, dst)?;
            }
            let file = target.open()?;
            if quit.load(Ordering::SeqCst) {
                let _ = std::fs::remove_file(&target.tmp);
            }
            Ok(Opened { file, target })
        });
        Ok(Self { hashing, opening: Some(opening), gone, pipeline: None, current: None, tmp, done: false })
    }

    async fn opened(&mut self) -> Result<Opened, BlobError> {
        let opening = self.opening.take().ok_or_else(|| BlobError::Store(format!("{} is not open", self.tmp.display())))?;
        opening.await.map_err(join_err)?
    }

    async fn start_pipeline(&mut self) -> Result<Pipeline, BlobError> {
        let opened = self.opened().await?;
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(WRITE_BUFFERS);
        let (free_tx, free) = mpsc::channel::<AlignedBuf>(WRITE_BUFFERS);
        let (hasher, to_writer) = match self.hashing {
            Hashing::None => (None, jobs_rx),
            Hashing::Hash => {
                let (tx, rx) = mpsc::channel::<Job>(WRITE_BUFFERS);
                let mut from = jobs_rx;
                let hasher = tokio::task::spawn_blocking(move || {
                    let mut hash = Hasher::new();
                    while let Some(job) = from.blocking_recv() {
                        hash.update(job.buf.data());
                        if tx.blocking_send(job).is_err() {
                            break;
                        }
                    }
                    hash
                });
                (Some(hasher), rx)
            }
        };
        let writer = tokio::task::spawn_blocking(move || write_jobs(opened, to_writer, free_tx));
        Ok(Pipeline { jobs: Some(jobs_tx), free, allocated: 1, hasher, writer: Some(writer) })
    }

    /// The writer's error once its threads stopped early.
    async fn failure(&mut self) -> BlobError {
        if let Some(p) = &mut self.pipeline {
            p.jobs = None;
            if let Some(w) = p.writer.take() {
                match w.await {
                    Ok(Err(e)) => return e,
                    Err(e) => return join_err(e),
                    Ok(Ok(())) => {}
                }
            }
        }
        BlobError::Store(format!("writing {} stopped", self.tmp.display()))
    }

    async fn write(&mut self, mut bytes: &[u8]) -> Result<(), BlobError> {
        while !bytes.is_empty() {
            let mut buf = match (self.current.take(), &mut self.pipeline) {
                (Some(b), _) => b,
                (None, None) => AlignedBuf::new(IO_CHUNK),
                (None, Some(p)) if p.allocated < WRITE_BUFFERS => {
                    p.allocated += 1;
                    AlignedBuf::new(IO_CHUNK)
                }
                (None, Some(p)) => match p.free.recv().await {
                    Some(mut b) => {
                        b.clear();
                        b
                    }
                    None => return Err(self.failure().await),
                },
            };
            let n = buf.fill(bytes, IO_CHUNK);
            bytes = &bytes[n..];
            if buf.len() < IO_CHUNK {
                self.current = Some(buf);
                continue;
            }
            if self.pipeline.is_none() {
                self.pipeline = Some(self.start_pipeline().await?);
            }
            let sent = match self.pipeline.as_ref().and_then(|p| p.jobs.as_ref()) {
                Some(jobs) => jobs.send(Job { buf, last: false }).await.is_ok(),
                None => false,
            };
            if !sent {
                return Err(self.failure().await);
            }
        }
        Ok(())
    }

    async fn finish(mut self, hashed: impl FnOnce(&str)) -> Result<Option<String>, BlobError> {
        let buf = self.current.take().unwrap_or_else(|| AlignedBuf::new(0));
        let Some(mut pipeline) = self.pipeline.take() else {
            // All of it in one buffer: hash here (at most one chunk), then
            // one blocking task does the rest.
            let hash = (self.hashing == Hashing::Hash).then(|| crate::hash::hex(buf.data()));
            hashed(hash.as_deref().unwrap_or_default());
            let opened = self.opened().await?;
            tokio::task::spawn_blocking(move || write_once(opened, buf)).await.map_err(join_err)??;
            self.done = true;
            return Ok(hash);
        };
        let sent = match pipeline.jobs.take() {
            Some(jobs) => jobs.send(Job { buf, last: true }).await.is_ok(),
            None => false,
        };
        let writer = pipeline.writer.take();
        let hasher = pipeline.hasher.take();
        self.pipeline = Some(pipeline);
        if !sent {
            return Err(self.failure().await);
        }
        let hash = match hasher {
            Some(h) => Some(h.await.map_err(join_err)?.hex()),
            None => None,
        };
        hashed(hash.as_deref().unwrap_or_default());
        writer.expect("a writer until finished").await.map_err(join_err)??;
        self.done = true;
        Ok(hash)
    }

    async fn abort(mut self) {
        if let Some(opening) = self.opening.take() {
            let _ = opening.await;
        }
        if let Some(mut p) = self.pipeline.take() {
            p.jobs = None;
            if let Some(w) = p.writer.take() {
                let _ = w.await;
            }
        }
        let tmp = self.tmp.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(tmp)).await;
        self.done = true;
    }
}

/// Where a local writer's bytes go.
struct Target {
    tmp: PathBuf,
    dst: Option<PathBuf>,
    root: PathBuf,
    known: Arc<DurableDirs>,
    direct: bool,
    /// The directories to sync once `dst` has its name.
    dirs: DirSyncs,
}

impl Target {
    /// Opens `tmp`, without `O_DIRECT` if the filesystem refuses it.
    fn open(&mut self) -> Result<std::fs::File, BlobError> {
        match open_for_write(&self.tmp, self.direct) {
            Err(_) if self.direct => {
                self.direct = false;
                open_for_write(&self.tmp, false)
            }
            r => r,
        }
    }

    /// After the last byte: make the file durable under its name.
    ///
    /// A new name is given first and the file synced after, so one journal
    /// commit covers both: until the caller commits the metadata that
    /// refers to it, a name that a crash left pointing at an incomplete
    /// file is never read (and the retry of the write replaces it). An
    /// existing name is only ever replaced by a file already synced.
    fn complete(&self, file: std::fs::File) -> Result<(), BlobError> {
        let sync = |file: &std::fs::File| file.sync_all().map_err(|e| BlobError::Sync { path: self.tmp.display().to_string(), reason: e.to_string() });
        let Some(dst) = &self.dst else { return sync(&file) };
        let fresh = !dst.exists();
        if !fresh {
            sync(&file)?;
        }
        rename(&self.tmp, dst)?;
        if fresh {
            sync(&file)?;
        }
        self.dirs.sync.iter().try_for_each(|d| sync_dir(d))?;
        self.known.add(self.dirs.durable.clone());
        Ok(())
    }
}

/// A whole (small) file in one go.
fn write_once(opened: Opened, mut buf: AlignedBuf) -> Result<(), BlobError> {
    let Opened { mut file, mut target } = opened;
    let result = (|| {
        write_checked(&mut file, &mut target, &mut buf, true, 0)?;
        target.complete(file)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&target.tmp);
    }
    result
}

/// Writes one buffer at offset `len`; if the very first write is refused
/// (some filesystems open with O_DIRECT but refuse the writes), the file is
/// reopened and written without it.
fn write_checked(file: &mut std::fs::File, target: &mut Target, buf: &mut AlignedBuf, last: bool, len: u64) -> Result<(), BlobError> {
    let failed = |e: std::io::Error| BlobError::Store(format!("cannot write {}: {e}", target.tmp.display()));
    let n = buf.len();
    match write_job(file, target.direct, buf, last, len) {
        Err(e) if target.direct && len == 0 && e.raw_os_error() == Some(libc::EINVAL) => {
            target.direct = false;
            *file = open_for_write(&target.tmp, false)?;
            buf.mem.truncate(buf.start + n);
            write_job(file, false, buf, last, 0).map_err(failed)
        }
        r => r.map_err(failed),
    }
}

impl Drop for LocalWriter {
    /// A writer dropped unfinished (a broken stream) leaves nothing: its
    /// threads stop when their channel closes, and the file goes.
    fn drop(&mut self) {
        if !self.done {
            self.gone.store(true, Ordering::SeqCst);
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(target_os = "linux")]
fn direct_flag(direct: bool) -> i32 {
    if direct {
        libc::O_DIRECT
    } else {
        0
    }
}

#[cfg(not(target_os = "linux"))]
fn direct_flag(_direct: bool) -> i32 {
    0
}

fn open_for_write(path: &FsPath, direct: bool) -> Result<std::fs::File, BlobError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(direct_flag(direct))
        .open(path)
        .map_err(|e| BlobError::Store(format!("cannot create {}: {e}", path.display())))
}

/// Whether files under `dir` can be written with `O_DIRECT` (not every
/// filesystem supports it).
fn direct_io_works(dir: &FsPath) -> bool {
    if direct_flag(true) == 0 {
        return false;
    }
    let probe = dir.join("direct-io-probe");
    let ok = (|| -> std::io::Result<()> {
        let mut f = open_for_write(&probe, true).map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut buf = AlignedBuf::new(ALIGN);
        buf.fill(&[0u8; ALIGN], ALIGN);
        f.write_all(buf.data())?;
        let mut r = open_for_read(&probe, true)?;
        let mut back = AlignedBuf::new(ALIGN);
        back.mem.resize(back.start + ALIGN, 0);
        let start = back.start;
        std::io::Read::read_exact(&mut r, &mut back.mem[start..])
    })()
    .is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// The writing thread: writes each buffer, hands it back, and after the
/// last one makes the file durable under its name.
fn write_jobs(opened: Opened, jobs: mpsc::Receiver<Job>, free: mpsc::Sender<AlignedBuf>) -> Result<(), BlobError> {
    let tmp = opened.target.tmp.clone();
    let result = write_all_jobs(opened, jobs, free);
    if result.is_err() {
        // Abandoned or failed: the writer (which may already be gone)
        // leaves nothing behind.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_all_jobs(opened: Opened, mut jobs: mpsc::Receiver<Job>, free: mpsc::Sender<AlignedBuf>) -> Result<(), BlobError> {
    let Opened { mut file, mut target } = opened;
    let mut len = 0u64;
    while let Some(Job { mut buf, last }) = jobs.blocking_recv() {
        write_checked(&mut file, &mut target, &mut buf, last, len)?;
        len += buf.len() as u64;
        if last {
            return target.complete(file);
        }
        // The sender may be gone (it failed); then the buffer is dropped.
        let _ = free.blocking_send(buf);
    }
    // The sender stopped without a last buffer: abandoned.
    Err(BlobError::Store(format!("writing {} was abandoned", target.tmp.display())))
}

/// Writes one buffer at offset `len`. O_DIRECT writes whole blocks: the
/// last buffer is padded, then the file cut back to its length.
fn write_job(file: &mut std::fs::File, direct: bool, buf: &mut AlignedBuf, last: bool, len: u64) -> std::io::Result<()> {
    let n = buf.len();
    if last && direct && !n.is_multiple_of(ALIGN) {
        let pad = ALIGN - n % ALIGN;
        buf.mem.resize(buf.mem.len() + pad, 0);
        file.write_all(buf.data())?;
        file.set_len(len + n as u64)
    } else {
        file.write_all(buf.data())
    }
}

/// Renames `from` to `to` and makes that durable: `from` was synced, the
/// rename is synced by syncing `to`'s directory, and so is each directory
/// above it not yet known durable ([`prepare_dirs`]).
fn rename_durably(root: &FsPath, known: &DurableDirs, from: &FsPath, to: &FsPath) -> Result<(), BlobError> {
    let dirs = prepare_dirs(root, known, to)?;
    rename(from, to)?;
    dirs.sync.iter().try_for_each(|d| sync_dir(d))?;
    known.add(dirs.durable);
    Ok(())
}

/// The directories a new name needs synced, and what that makes durable.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DirSyncs {
    /// To sync: the name's own directory, and the parent of each directory
    /// above it not yet known durable.
    sync: std::collections::BTreeSet<PathBuf>,
    /// Directories whose own names are durable once `sync` is done.
    durable: Vec<PathBuf>,
}

impl DirSyncs {
    pub fn is_empty(&self) -> bool {
        self.sync.is_empty()
    }

    fn extend(&mut self, other: DirSyncs) {
        self.sync.extend(other.sync);
        self.durable.extend(other.durable);
    }
}

/// Directories of a local store whose names this process has seen synced
/// into their parents after they existed. Empty at start: a directory a
/// crash interrupted may exist without being durable, so each one is
/// synced into its parent once per process, and after that a new name
/// below it syncs only its own directory (a new contract once synced
/// three or four directories up to the root; a sync of a clean directory
/// still costs a journal round on ext4). Nothing removes a directory of
/// the store while the process runs; one that did would have to leave
/// this set.
#[derive(Default)]
struct DurableDirs(std::sync::Mutex<std::collections::BTreeSet<PathBuf>>);

impl DurableDirs {
    fn contains(&self, dir: &FsPath) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).contains(dir)
    }

    fn add(&self, dirs: Vec<PathBuf>) {
        if !dirs.is_empty() {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).extend(dirs);
        }
    }
}

/// Creates `to`'s directory if needed; returns the directories to sync once
/// `to` has its name: its own, and for each directory above it (up to
/// `root`) not known durable, that directory's parent. Not only those
/// created here: a directory another write created a moment ago may not be
/// synced into its parent yet, and this write's commit must not rely on
/// that one's.
fn prepare_dirs(root: &FsPath, known: &DurableDirs, to: &FsPath) -> Result<DirSyncs, BlobError> {
    let parent = to.parent().ok_or_else(|| BlobError::Store(format!("{} has no directory", to.display())))?;
    if !parent.starts_with(root) {
        return Err(BlobError::Store(format!("{} is outside the store", to.display())));
    }
    std::fs::create_dir_all(parent).map_err(|e| BlobError::Store(format!("cannot create {}: {e}", parent.display())))?;
    let mut dirs = DirSyncs::default();
    dirs.sync.insert(parent.to_path_buf());
    let mut dir = parent;
    while dir != root && !known.contains(dir) {
        let Some(above) = dir.parent() else { break };
        dirs.sync.insert(above.to_path_buf());
        dirs.durable.push(dir.to_path_buf());
        dir = above;
    }
    Ok(dirs)
}

fn rename(from: &FsPath, to: &FsPath) -> Result<(), BlobError> {
    std::fs::rename(from, to).map_err(|e| BlobError::Store(format!("cannot rename {} to {}: {e}", from.display(), to.display())))
}

fn sync_dir(dir: &FsPath) -> Result<(), BlobError> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| BlobError::Sync { path: dir.display().to_string(), reason: e.to_string() })
}

fn open_for_read(path: &FsPath, direct: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(direct_flag(direct)).open(path)
}

/// A local file as a stream of [`IO_CHUNK`] reads from a reader thread.
async fn read_local(path: PathBuf, blob: String, direct: bool) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError> {
    let p = path.clone();
    let (file, len) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let f = open_for_read(&p, direct).or_else(|e| if direct { open_for_read(&p, false) } else { Err(e) })?;
        let len = f.metadata()?.len();
        Ok((f, len))
    })
    .await
    .map_err(join_err)?
    .map_err(|e| io_err(&blob, e))?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, BlobError>>(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut file = file;
        let mut at = 0u64;
        // The read-ahead, plus chunks still being sent.
        let pool = Pool::<AlignedBuf>::new(READ_AHEAD + 4);
        while at < len {
            let want = IO_CHUNK.min((len - at) as usize);
            // Whole blocks for O_DIRECT: the read stops at the end of file.
            // A reused buffer keeps its length: resizing only zero-fills
            // what a fresh one (or a longer read) adds.
            let mut buf = pool.take().unwrap_or_else(|| AlignedBuf::new(IO_CHUNK));
            let start = buf.start;
            buf.mem.resize(start + want.div_ceil(ALIGN) * ALIGN, 0);
            let mut got = 0;
            let read = loop {
                match std::io::Read::read(&mut file, &mut buf.mem[start + got..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        got += n;
                        if got >= want {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            if let Err(e) = read {
                let _ = tx.blocking_send(Err(BlobError::Store(format!("cannot read {}: {e}", path.display()))));
                return;
            }
            if got < want {
                let _ = tx.blocking_send(Err(BlobError::Store(format!("{} ended at byte {} of {len}", path.display(), at + got as u64))));
                return;
            }
            let chunk = crate::pool::bytes(&pool, buf, 0..want);
            at += want as u64;
            if tx.blocking_send(Ok(chunk)).is_err() {
                return;
            }
        }
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(store: &BlobStore, blob: &str) -> Vec<u8> {
        store.read_to_vec(blob).await.unwrap()
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    fn stores(dir: &FsPath) -> Vec<BlobStore> {
        vec![BlobStore::local_with(&dir.join("direct"), true).unwrap(), BlobStore::local_with(&dir.join("buffered"), false).unwrap()]
    }

    // Every directory above a new name is synced into its parent once,
    // not only those this write created (one another write created a
    // moment ago may not be in its parent yet), and once that is done only
    // the name's own directory.
    #[test]
    fn a_new_name_syncs_each_directory_above_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("blobs");
        std::fs::create_dir_all(root.join("t1/c1")).unwrap();
        let known = DurableDirs::default();
        let dirs = prepare_dirs(&root, &known, &root.join("t1/c1/v1/0")).unwrap();
        let set = |d: &[PathBuf]| d.iter().cloned().collect::<std::collections::BTreeSet<_>>();
        assert_eq!(dirs.sync, set(&[root.join("t1/c1/v1"), root.join("t1/c1"), root.join("t1"), root.clone()]));
        assert_eq!(dirs.durable, vec![root.join("t1/c1/v1"), root.join("t1/c1"), root.join("t1")]);
        assert!(root.join("t1/c1/v1").is_dir());
        // Not synced yet: the next name still syncs everything.
        assert_eq!(prepare_dirs(&root, &known, &root.join("t1/c1/v1/1")).unwrap(), dirs);
        known.add(dirs.durable);
        let next = prepare_dirs(&root, &known, &root.join("t1/c1/v1/2")).unwrap();
        assert_eq!((next.sync, next.durable), (set(&[root.join("t1/c1/v1")]), vec![]));
        // A new directory beside them: it and its parent.
        let other = prepare_dirs(&root, &known, &root.join("t1/c2/v1/0")).unwrap();
        assert_eq!(other.sync, set(&[root.join("t1/c2/v1"), root.join("t1/c2"), root.join("t1")]));
        assert!(prepare_dirs(&root, &known, &dir.path().join("elsewhere/f")).is_err(), "a name outside the store is refused");
    }

    // Through the store: what a write's syncs made durable is remembered,
    // a failed or unfinished one remembers nothing.
    #[tokio::test]
    async fn a_store_remembers_only_directories_it_synced() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::local_with(&dir.path().join("blobs"), false).unwrap();
        let Backend::Local(fs) = &store.backend else { unreachable!() };
        let mut w = store.writer("t/b1/x.v1.0", Hashing::None).await.unwrap();
        w.write(b"abc").await.unwrap();
        assert!(!fs.durable.contains(&fs.root.join("t/b1")), "not before the write is finished");
        w.finish().await.unwrap();
        assert!(fs.durable.contains(&fs.root.join("t/b1")) && fs.durable.contains(&fs.root.join("t")));
        let mut w = store.writer("t/b2/y.v1.0", Hashing::None).await.unwrap();
        w.write(b"abc").await.unwrap();
        w.abort().await;
        assert!(!fs.durable.contains(&fs.root.join("t/b2")));
    }

    fn staging_files(store: &BlobStore) -> Vec<PathBuf> {
        let dir = store.local_path(STAGING).unwrap();
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect()
    }

    #[tokio::test]
    async fn streams_in_and_out_with_hash_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        for store in stores(dir.path()) {
            let mut w = store.writer("t/c/v1/0", Hashing::Hash).await.unwrap();
            let chunk = vec![7u8; 1 << 20];
            for _ in 0..10 {
                w.write(&chunk).await.unwrap();
            }
            let stored = w.finish().await.unwrap();
            assert_eq!(stored.len, 10 << 20);
            let back = read_all(&store, "t/c/v1/0").await;
            assert_eq!(back.len(), 10 << 20);
            assert_eq!(crate::hash::hex(&back), stored.hash);
            assert!(store.local_path("t/c/v1/0").unwrap().exists());
            assert!(staging_files(&store).is_empty(), "temporary files left behind");
            assert!(store.rename("t/c/v1/0", "q/t/c/v1/0").await.unwrap());
            assert!(!store.exists("t/c/v1/0").await.unwrap() && store.exists("q/t/c/v1/0").await.unwrap());
            assert!(!store.rename("t/c/v1/0", "q/t/c/v1/0").await.unwrap(), "a missing source is reported, not an error");
            assert!(read_all(&store, "q/t/c/v1/0").await == back);
            store.delete("q/t/c/v1/0").await.unwrap();
            store.delete("q/t/c/v1/0").await.unwrap();
            assert!(matches!(store.read("q/t/c/v1/0").await, Err(BlobError::NotFound(_))));
        }
    }

    // Every length around the block and buffer sizes, written in uneven
    // pieces, reads back exactly (O_DIRECT pads the last block and cuts
    // the file back).
    #[tokio::test]
    async fn odd_lengths_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, IO_CHUNK - 1, IO_CHUNK, IO_CHUNK + 1, 3 * IO_CHUNK + 12345];
        for store in stores(dir.path()) {
            for (i, &size) in sizes.iter().enumerate() {
                let data = pattern(size);
                let blob = format!("t/c/v{i}/0");
                let mut w = store.writer(&blob, Hashing::Hash).await.unwrap();
                for piece in data.chunks(1_000_003) {
                    w.write(piece).await.unwrap();
                }
                let stored = w.finish().await.unwrap();
                assert_eq!(stored.len, size as u64);
                assert_eq!(stored.hash, crate::hash::hex(&data));
                assert_eq!(std::fs::metadata(store.local_path(&blob).unwrap()).unwrap().len(), size as u64);
                assert!(read_all(&store, &blob).await == data, "size {size} direct {}", store.direct_io());
            }
        }
    }

    // A writer dropped or aborted before finishing leaves no file under
    // the name and nothing in the staging area.
    #[tokio::test]
    async fn unfinished_writes_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        for store in stores(dir.path()) {
            let mut w = store.writer("t/c/v1/0", Hashing::Hash).await.unwrap();
            w.write(&pattern(IO_CHUNK + 5)).await.unwrap();
            drop(w);
            let mut w = store.writer("t/c/v2/0", Hashing::None).await.unwrap();
            w.write(&pattern(10)).await.unwrap();
            w.abort().await;
            // The dropped writer's thread notices on its own.
            for _ in 0..100 {
                if staging_files(&store).is_empty() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            assert!(!store.local_path("t/c/v1/0").unwrap().exists());
            assert!(!store.local_path("t/c/v2/0").unwrap().exists());
            assert!(staging_files(&store).is_empty(), "left behind: {:?}", staging_files(&store));
        }
    }

    // A client's output file: written where asked, complete and synced at
    // finish; an aborted one leaves nothing.
    #[tokio::test]
    async fn plain_files_for_clients() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(IO_CHUNK * 2 + 4097);
        let path = dir.path().join(".out.partial");
        let mut w = file_writer(&path).await.unwrap();
        w.write(&data).await.unwrap();
        assert_eq!(w.finish().await.unwrap().len, data.len() as u64);
        assert!(std::fs::read(&path).unwrap() == data);
        let other = dir.path().join(".other.partial");
        let mut w = file_writer(&other).await.unwrap();
        w.write(&data).await.unwrap();
        w.abort().await;
        assert!(!other.exists());
    }

    // A staged blob is invisible under any blob name until promoted; the
    // staging area is emptied on request (at start).
    #[tokio::test]
    async fn staged_blobs_are_promoted_or_cleared() {
        let dir = tempfile::tempdir().unwrap();
        for store in stores(dir.path()) {
            let data = pattern(IO_CHUNK * 2 + 77);
            let kept = store.staging_name("a");
            let mut w = store.stage_writer(&kept).await.unwrap();
            w.write(&data).await.unwrap();
            assert_eq!(w.finish().await.unwrap().hash, "");
            let dropped = store.staging_name("a");
            let mut w = store.stage_writer(&dropped).await.unwrap();
            w.write(&data).await.unwrap();
            w.finish().await.unwrap();
            assert!(matches!(store.read("t/c/v1/0").await, Err(BlobError::NotFound(_))));
            store.promote(&kept, "t/c/v1/0").await.unwrap();
            assert!(read_all(&store, "t/c/v1/0").await == data);
            assert_eq!(staging_files(&store).len(), 1);
            assert_eq!(store.clear_staging().await.unwrap(), 1);
            assert!(staging_files(&store).is_empty());
            assert!(store.stage_writer("t/c/v9/0").await.is_err(), "only staging names are staged");
        }
    }
}
