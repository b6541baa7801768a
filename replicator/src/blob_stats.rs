//! What the blob store's backend is doing: each request it makes (an S3
//! PUT of one part, a GET, a HEAD...) counted by outcome and timed, and
//! whether the store is failing right now. The counts and times are
//! `/metrics` families; "failing" goes into the heartbeat, so `tandem
//! status` shows a site whose store does not answer even while its
//! replicator does.
//!
//! Object-store backends are measured per request by [`Instrumented`],
//! which wraps the backend; the local filesystem only by the idle probe
//! (its writes fail loudly on their own, and are not network requests).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
    UploadPart,
};
use tokio::time::Instant;

/// Upper bounds (seconds) of the latency histogram's buckets: from a
/// local-network HEAD to a part upload that took the whole retry budget.
pub const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// How one request ended, as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Ok,
    /// The store answered that there is no such object (an answer, not a
    /// failure: the probe expects it).
    NotFound,
    /// The store refused a conditional request (also an answer).
    Conflict,
    Error,
}

impl Outcome {
    pub fn of<T>(result: &Result<T>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok,
            Err(object_store::Error::NotFound { .. }) => Outcome::NotFound,
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } | object_store::Error::NotModified { .. }) => {
                Outcome::Conflict
            }
            Err(_) => Outcome::Error,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotFound => "not_found",
            Outcome::Conflict => "conflict",
            Outcome::Error => "error",
        }
    }
}

/// One operation's latency histogram (Prometheus semantics: cumulative
/// bucket counts are computed when rendered).
#[derive(Clone, Debug, Default)]
pub struct Latency {
    pub buckets: [u64; BUCKETS.len()],
    pub count: u64,
    pub sum_seconds: f64,
}

impl Latency {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum_seconds += seconds;
    }
}

/// How long a failed kind of request keeps the store "failing" when no
/// request of that kind has succeeded since: writes that fail while reads
/// (or the probe) succeed still show, and an idle site's last failure
/// clears once the probe has answered for this long.
pub const FAILING_FOR: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(&'static str, Outcome), u64>,
    latency: BTreeMap<&'static str, Latency>,
    /// Per kind of request, the error of its newest one if it failed, and when.
    failed: BTreeMap<&'static str, (Instant, String)>,
    last_request: Option<Instant>,
}

/// Shared by a store's clones and its instrumented backend.
#[derive(Clone, Default)]
pub struct BlobStats {
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for BlobStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlobStats")
    }
}

impl BlobStats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one request that took `elapsed` and ended as `outcome`
    /// (`error` is its message when it failed).
    pub fn record(&self, op: &'static str, outcome: Outcome, elapsed: Duration, error: Option<String>) {
        let mut inner = self.lock();
        *inner.requests.entry((op, outcome)).or_default() += 1;
        inner.latency.entry(op).or_default().observe(elapsed.as_secs_f64());
        match outcome {
            Outcome::Error => {
                inner.failed.insert(op, (Instant::now(), error.unwrap_or_else(|| format!("{op} failed"))));
            }
            _ => {
                inner.failed.remove(op);
            }
        }
        inner.last_request = Some(Instant::now());
    }

    fn record_result<T>(&self, op: &'static str, started: Instant, result: &Result<T>) {
        let outcome = Outcome::of(result);
        let error = match result {
            Err(e) if outcome == Outcome::Error => Some(e.to_string()),
            _ => None,
        };
        self.record(op, outcome, started.elapsed(), error);
    }

    /// Requests by (operation, outcome), in a stable order.
    pub fn requests(&self) -> Vec<((&'static str, Outcome), u64)> {
        self.lock().requests.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Latency per operation, in a stable order.
    pub fn latency(&self) -> Vec<(&'static str, Latency)> {
        self.lock().latency.iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    /// Why the store is failing: the newest failure of a kind of request
    /// that has not succeeded since, within [`FAILING_FOR`]; `op: error`.
    pub fn failing(&self) -> Option<String> {
        self.failing_at(Instant::now())
    }

    /// [`Self::failing`] as of `now`.
    pub fn failing_at(&self, now: Instant) -> Option<String> {
        let inner = self.lock();
        inner
            .failed
            .iter()
            .filter(|(_, (at, _))| now.saturating_duration_since(*at) < FAILING_FOR)
            .max_by_key(|(_, (at, _))| *at)
            .map(|(op, (_, e))| format!("{op}: {e}"))
    }

    /// How long since the last request (None: there was none yet).
    pub fn idle_for(&self) -> Option<Duration> {
        self.lock().last_request.map(|t| t.elapsed())
    }
}

/// An object-store backend whose every request is counted and timed.
#[derive(Debug)]
pub struct Instrumented {
    inner: Arc<dyn ObjectStore>,
    stats: BlobStats,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn ObjectStore>, stats: BlobStats) -> Self {
        Self { inner, stats }
    }
}

impl fmt::Display for Instrumented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Instrumented {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let started = Instant::now();
        let result = self.inner.put_opts(location, payload, opts).await;
        self.stats.record_result("put", started, &result);
        result
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        let started = Instant::now();
        let result = self.inner.put_multipart_opts(location, opts).await;
        self.stats.record_result("create_upload", started, &result);
        Ok(Box::new(InstrumentedUpload { inner: result?, stats: self.stats.clone() }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let op = if options.head { "head" } else { "get" };
        let started = Instant::now();
        let result = self.inner.get_opts(location, options).await;
        self.stats.record_result(op, started, &result);
        result
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        use futures::StreamExt;
        // Deletes may be batched by the backend: each result counts as one.
        let stats = self.stats.clone();
        let started = Instant::now();
        self.inner
            .delete_stream(locations)
            .map(move |result| {
                stats.record_result("delete", started, &result);
                result
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        use futures::StreamExt;
        // A listing is paged: it counts once, as failed at its first error
        // or as answered when it ends.
        let stats = self.stats.clone();
        let started = Instant::now();
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (at_end, failed_at_end) = (stats.clone(), failed.clone());
        self.inner
            .list(prefix)
            .map(move |item| {
                if item.is_err() && !failed.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    stats.record_result("list", started, &item);
                }
                Some(item)
            })
            .chain(futures::stream::once(async move {
                if !failed_at_end.load(std::sync::atomic::Ordering::Relaxed) {
                    at_end.record("list", Outcome::Ok, started.elapsed(), None);
                }
                None
            }))
            .filter_map(futures::future::ready)
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let started = Instant::now();
        let result = self.inner.list_with_delimiter(prefix).await;
        self.stats.record_result("list", started, &result);
        result
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let started = Instant::now();
        let result = self.inner.copy_opts(from, to, options).await;
        self.stats.record_result("copy", started, &result);
        result
    }
}

#[derive(Debug)]
struct InstrumentedUpload {
    inner: Box<dyn MultipartUpload>,
    stats: BlobStats,
}

#[async_trait]
impl MultipartUpload for InstrumentedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let stats = self.stats.clone();
        let part = self.inner.put_part(data);
        Box::pin(async move {
            let started = Instant::now();
            let result = part.await;
            stats.record_result("put_part", started, &result);
            result
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let started = Instant::now();
        let result = self.inner.complete().await;
        self.stats.record_result("complete_upload", started, &result);
        result
    }

    async fn abort(&mut self) -> Result<()> {
        let started = Instant::now();
        let result = self.inner.abort().await;
        self.stats.record_result("abort_upload", started, &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn requests_are_counted_and_a_failure_shows_until_an_answer() {
        let stats = BlobStats::default();
        let store = Instrumented::new(Arc::new(object_store::memory::InMemory::new()), stats.clone());
        let path = Path::from("t/c1");
        assert!(stats.idle_for().is_none());
        store.put(&path, PutPayload::from_static(b"x")).await.unwrap();
        assert!(store.head(&Path::from("t/none")).await.is_err());
        store.get(&path).await.unwrap();
        let requests = stats.requests();
        assert!(requests.contains(&(("put", Outcome::Ok), 1)), "{requests:?}");
        assert!(requests.contains(&(("head", Outcome::NotFound), 1)), "{requests:?}");
        assert!(requests.contains(&(("get", Outcome::Ok), 1)), "{requests:?}");
        assert_eq!(stats.failing(), None, "not found is an answer, not a failure");
        let latency: BTreeMap<_, _> = stats.latency().into_iter().collect();
        assert_eq!(latency["put"].count, 1);
        assert_eq!(latency["put"].buckets.iter().sum::<u64>(), 1, "an in-memory put lands in a bucket");

        stats.record("put_part", Outcome::Error, Duration::from_secs(40), Some("connection refused".into()));
        assert_eq!(stats.failing().as_deref(), Some("put_part: connection refused"));
        let latency: BTreeMap<_, _> = stats.latency().into_iter().collect();
        assert_eq!(latency["put_part"].buckets.iter().sum::<u64>(), 0, "beyond the last bucket: only +Inf holds it");
        assert_eq!(latency["put_part"].count, 1);
        store.head(&path).await.unwrap();
        assert_eq!(stats.failing().as_deref(), Some("put_part: connection refused"), "a read answering does not clear a failing write");
        stats.record("put_part", Outcome::Ok, Duration::from_millis(3), None);
        assert_eq!(stats.failing(), None, "the next answered write clears it");
    }

    #[test]
    fn a_failure_not_repeated_clears_after_a_while() {
        let stats = BlobStats::default();
        stats.record("put_part", Outcome::Error, Duration::from_secs(1), Some("connection refused".into()));
        assert!(stats.failing().is_some());
        assert_eq!(stats.failing_at(Instant::now() + FAILING_FOR + Duration::from_millis(1)), None);
    }
}
