//! A key provider the drill can switch off ("key provider unavailable for
//! a while"): every call fails while it is down, as an HSM that does not
//! answer would; or slow down: every call takes its latency, waited out in
//! simulated time by the replicator before the call.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tandem_crypto::{CryptoError, DataKey, KeyProvider, LocalKeyFile, PiiKey, RandomSource, WrappedKey};

#[derive(Clone)]
pub struct DrillKeys {
    inner: Arc<LocalKeyFile>,
    down: Arc<AtomicBool>,
    /// Milliseconds each call takes (0: answers at once).
    latency_ms: Arc<AtomicU64>,
}

impl DrillKeys {
    pub fn new(inner: Arc<LocalKeyFile>) -> Self {
        DrillKeys { inner, down: Arc::new(AtomicBool::new(false)), latency_ms: Arc::default() }
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms.store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), CryptoError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(CryptoError::KeyFile("key provider unavailable (drill fault)".into()));
        }
        Ok(())
    }
}

impl KeyProvider for DrillKeys {
    fn kek_id(&self) -> &str {
        self.inner.kek_id()
    }

    fn wrap_data_key(&self, key: &DataKey, context: &[u8], rng: &dyn RandomSource) -> Result<WrappedKey, CryptoError> {
        self.check()?;
        self.inner.wrap_data_key(key, context, rng)
    }

    fn unwrap_data_key(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<DataKey, CryptoError> {
        self.check()?;
        self.inner.unwrap_data_key(wrapped, context)
    }

    fn wrap_pii_key(&self, key: &PiiKey, context: &[u8], rng: &dyn RandomSource) -> Result<WrappedKey, CryptoError> {
        self.check()?;
        self.inner.wrap_pii_key(key, context, rng)
    }

    fn unwrap_pii_key(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<PiiKey, CryptoError> {
        self.check()?;
        self.inner.unwrap_pii_key(wrapped, context)
    }

    fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms.load(Ordering::SeqCst))
    }
}
