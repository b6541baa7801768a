//! The drill's disk faults. The key-value stores are `MemKv`s (which lose
//! unsynced writes on a crash, and take the faults of
//! `tandem_storage::DiskFault`); the blob store of each site is the
//! in-memory object store behind [`FaultyBlobs`]: writes that fail (an
//! fsync error, a full disk), reads that return corrupted bytes, and a
//! slow disk (every call waits, in simulated time).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::throttle::{ThrottleConfig, ThrottledStore};
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, Result,
};

/// What is wrong with a disk right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobFault {
    #[default]
    None,
    /// Every write fails as an fsync that returned EIO.
    FsyncError,
    /// Every write fails: no space left on the device.
    Full,
    /// Every read returns the stored bytes with one flipped.
    CorruptRead,
}

/// A site's blob store with the faults the drill injects.
#[derive(Clone)]
pub struct FaultyBlobs {
    inner: Arc<ThrottledStore<object_store::memory::InMemory>>,
    fault: Arc<Mutex<BlobFault>>,
}

impl fmt::Debug for FaultyBlobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyBlobs")
    }
}

impl fmt::Display for FaultyBlobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "drill blob store")
    }
}

impl Default for FaultyBlobs {
    fn default() -> Self {
        FaultyBlobs { inner: Arc::new(ThrottledStore::new(object_store::memory::InMemory::new(), ThrottleConfig::default())), fault: Arc::default() }
    }
}

impl FaultyBlobs {
    pub fn set_fault(&self, fault: BlobFault) {
        *self.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    fn fault(&self) -> BlobFault {
        *self.fault.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call waits `per_call` (a slow disk; zero: back to normal).
    pub fn set_slow(&self, per_call: Duration) {
        self.inner.config_mut(|c| {
            c.wait_put_per_call = per_call;
            c.wait_get_per_call = per_call;
            c.wait_delete_per_call = per_call;
            c.wait_list_per_call = per_call;
        });
    }

    fn refuse_writes(&self, location: &Path) -> Result<()> {
        let why = match self.fault() {
            BlobFault::FsyncError => "fsync failed: Input/output error (os error 5)",
            BlobFault::Full => "No space left on device (os error 28)",
            _ => return Ok(()),
        };
        Err(object_store::Error::Generic { store: "drill", source: format!("{location}: {why}").into() })
    }
}

/// Flips one bit in the middle of the first chunk of a read.
fn corrupt(result: GetResult) -> GetResult {
    let GetResultPayload::Stream(stream) = result.payload else { return result };
    let mut first = true;
    let stream = stream
        .map(move |chunk| {
            chunk.map(|bytes| {
                if !std::mem::take(&mut first) || bytes.is_empty() {
                    return bytes;
                }
                let mut v = bytes.to_vec();
                let mid = v.len() / 2;
                v[mid] ^= 0x10;
                Bytes::from(v)
            })
        })
        .boxed();
    GetResult { payload: GetResultPayload::Stream(stream), ..result }
}

#[async_trait]
impl ObjectStore for FaultyBlobs {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.refuse_writes(location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.refuse_writes(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let result = self.inner.get_opts(location, options).await?;
        Ok(if self.fault() == BlobFault::CorruptRead { corrupt(result) } else { result })
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.refuse_writes(to)?;
        self.inner.copy_opts(from, to, options).await
    }
}
