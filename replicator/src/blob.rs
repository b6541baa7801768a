//! Ciphertext storage through object_store: the local filesystem by
//! default, S3 and the other built-in backends by URL in the config.
//!
//! Files are streamed in and out, never held whole in memory. On the local
//! filesystem a finished file is fsynced (file and directory) before its
//! metadata is committed, because object_store does not sync: without it a
//! power cut could leave metadata pointing at a file that never reached the
//! disk. Remote stores are durable once the upload completes.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};

/// Bytes buffered per multipart part (object_store's own default is 5 MiB;
/// S3 needs at least that for every part but the last).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight at once: bounds memory to about PART_SIZE * this.
const PARTS_IN_FLIGHT: usize = 2;

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

#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// Set for the local filesystem backend, whose files we fsync.
    local_root: Option<PathBuf>,
}

impl BlobStore {
    /// The local filesystem under `root` (created if missing).
    pub fn local(root: &FsPath) -> Result<Self, BlobError> {
        std::fs::create_dir_all(root).map_err(|e| BlobError::Store(format!("cannot create {}: {e}", root.display())))?;
        let root = root.canonicalize().map_err(|e| BlobError::Store(format!("cannot resolve {}: {e}", root.display())))?;
        let fs = LocalFileSystem::new_with_prefix(&root)?;
        Ok(Self { store: Arc::new(fs), local_root: Some(root) })
    }

    /// An in-memory store that lives as long as its clones: the drill keeps
    /// one per site so a simulated crash keeps what was stored (blobs are
    /// synced before any metadata refers to them).
    pub fn memory() -> Self {
        Self { store: Arc::new(object_store::memory::InMemory::new()), local_root: None }
    }

    /// A backend by URL (`s3://bucket/prefix`, `gs://...`, `az://...`,
    /// `file:///path`, `memory:///`), with backend options (region,
    /// endpoint...). Credentials come from the options or the usual
    /// environment variables of the backend.
    pub fn from_url(url: &str, options: &std::collections::BTreeMap<String, String>) -> Result<Self, BlobError> {
        if let Some(path) = url.strip_prefix("file://") {
            return Self::local(FsPath::new(path));
        }
        let parsed = url::Url::parse(url).map_err(|e| BlobError::Store(format!("blob_url {url:?}: {e}")))?;
        let (store, prefix) = object_store::parse_url_opts(&parsed, options.iter())?;
        let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
            Arc::from(store)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
        };
        Ok(Self { store, local_root: None })
    }

    /// Where a blob lives on the local disk, if this is the local backend
    /// (tests and the drill corrupt files through it).
    pub fn local_path(&self, blob: &str) -> Option<PathBuf> {
        self.local_root.as_ref().map(|r| r.join(blob))
    }

    /// Starts writing `blob`; nothing is visible under that name until
    /// [`BlobWriter::finish`].
    pub async fn writer(&self, blob: &str) -> Result<BlobWriter, BlobError> {
        let path = Path::parse(blob).map_err(|e| BlobError::Store(e.to_string()))?;
        let upload = self.store.put_multipart(&path).await?;
        Ok(BlobWriter {
            upload: WriteMultipart::new_with_chunk_size(upload, PART_SIZE),
            sha: Sha256::new(),
            len: 0,
            local: self.local_path(blob),
        })
    }

    /// The blob's bytes, streamed.
    pub async fn read(&self, blob: &str) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError> {
        let path = Path::parse(blob).map_err(|e| BlobError::Store(e.to_string()))?;
        let got = self.store.get(&path).await?;
        match got.payload {
            // object_store reads local files 8 KiB per blocking task, which
            // caps replication far below the disk; read 1 MiB at a time.
            object_store::GetResultPayload::File(file, _) => Ok(read_file_chunks(file)),
            object_store::GetResultPayload::Stream(s) => Ok(s.map(|r| r.map_err(BlobError::from)).boxed()),
        }
    }

    /// Moves `from` to `to` (quarantine). Returns false, changing nothing,
    /// when `from` does not exist. Durable once it returns.
    pub async fn rename(&self, from: &str, to: &str) -> Result<bool, BlobError> {
        let src = Path::parse(from).map_err(|e| BlobError::Store(e.to_string()))?;
        let dst = Path::parse(to).map_err(|e| BlobError::Store(e.to_string()))?;
        match self.store.rename(&src, &dst).await {
            Ok(()) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        if let (Some(new), Some(old)) = (self.local_path(to), self.local_path(from)) {
            sync_file_and_dir(new).await?;
            if let Some(dir) = old.parent() {
                let dir = dir.to_path_buf();
                let shown = dir.display().to_string();
                tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
                    .await
                    .map_err(|e| BlobError::Sync { path: shown.clone(), reason: e.to_string() })?
                    .map_err(|e| BlobError::Sync { path: shown, reason: e.to_string() })?;
            }
        }
        Ok(true)
    }

    /// Whether `blob` exists.
    pub async fn exists(&self, blob: &str) -> Result<bool, BlobError> {
        let path = Path::parse(blob).map_err(|e| BlobError::Store(e.to_string()))?;
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes `blob`; deleting a missing blob is not an error.
    pub async fn delete(&self, blob: &str) -> Result<(), BlobError> {
        let path = Path::parse(blob).map_err(|e| BlobError::Store(e.to_string()))?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A blob being written: counts and hashes what passes through.
pub struct BlobWriter {
    upload: WriteMultipart,
    sha: Sha256,
    len: u64,
    local: Option<PathBuf>,
}

/// What was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    pub len: u64,
    /// Hex SHA-256 of the stored bytes.
    pub sha256: String,
}

impl BlobWriter {
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        // Back-pressure: wait while too many parts are uploading.
        self.upload.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        self.sha.update(bytes);
        self.len += bytes.len() as u64;
        self.upload.write(bytes);
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Length and hex SHA-256 of what was written so far, so a receiver can
    /// refuse a mismatch *before* it replaces anything already stored.
    pub fn digest_so_far(&self) -> StoredBlob {
        StoredBlob { len: self.len, sha256: hex::encode(self.sha.clone().finalize()) }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Completes the upload and makes it durable.
    pub async fn finish(self) -> Result<StoredBlob, BlobError> {
        self.upload.finish().await?;
        if let Some(path) = self.local {
            sync_file_and_dir(path).await?;
        }
        Ok(StoredBlob { len: self.len, sha256: hex::encode(self.sha.finalize()) })
    }

    /// Gives up; the partial upload is discarded.
    pub async fn abort(self) {
        let _ = self.upload.abort().await;
    }
}

/// Bytes per read of a local file.
const READ_CHUNK: usize = 1024 * 1024;

/// A local file as a stream of [`READ_CHUNK`] reads, each on the blocking pool.
fn read_file_chunks(file: std::fs::File) -> BoxStream<'static, Result<Bytes, BlobError>> {
    futures::stream::try_unfold(Some(file), |file| async move {
        let Some(mut file) = file else { return Ok(None) };
        let (file, chunk) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            use std::io::Read;
            let mut buf = Vec::with_capacity(READ_CHUNK);
            (&mut file).take(READ_CHUNK as u64).read_to_end(&mut buf)?;
            Ok((file, buf))
        })
        .await
        .map_err(|e| BlobError::Store(e.to_string()))?
        .map_err(|e| BlobError::Store(format!("cannot read: {e}")))?;
        if chunk.is_empty() {
            return Ok(None);
        }
        Ok(Some((Bytes::from(chunk), Some(file))))
    })
    .boxed()
}

async fn sync_file_and_dir(path: PathBuf) -> Result<(), BlobError> {
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::File::open(&path)?.sync_all()?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })
    .await
    .map_err(|e| BlobError::Sync { path: shown.clone(), reason: e.to_string() })?
    .map_err(|e| BlobError::Sync { path: shown, reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_in_and_out_with_hash_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::local(dir.path()).unwrap();
        let mut w = store.writer("t/c/v1/0").await.unwrap();
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..10 {
            w.write(&chunk).await.unwrap();
        }
        let stored = w.finish().await.unwrap();
        assert_eq!(stored.len, 10 << 20);
        let mut sha = Sha256::new();
        let mut n = 0;
        let mut s = store.read("t/c/v1/0").await.unwrap();
        while let Some(b) = s.next().await {
            let b = b.unwrap();
            n += b.len();
            sha.update(&b);
        }
        assert_eq!(n, 10 << 20);
        assert_eq!(hex::encode(sha.finalize()), stored.sha256);
        assert!(store.local_path("t/c/v1/0").unwrap().exists());
        assert!(store.rename("t/c/v1/0", "q/t/c/v1/0").await.unwrap());
        assert!(!store.exists("t/c/v1/0").await.unwrap() && store.exists("q/t/c/v1/0").await.unwrap());
        assert!(!store.rename("t/c/v1/0", "q/t/c/v1/0").await.unwrap(), "a missing source is reported, not an error");
        store.delete("q/t/c/v1/0").await.unwrap();
        store.delete("q/t/c/v1/0").await.unwrap();
        assert!(matches!(store.read("q/t/c/v1/0").await, Err(BlobError::NotFound(_))));
    }
}
