//! A key provider the drill can switch off ("key provider unavailable for
//! a while"): every call fails while it is down, as an HSM that does not
//! answer would.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tandem_crypto::{CryptoError, DataKey, KeyProvider, LocalKeyFile, PiiKey, RandomSource, WrappedKey};

#[derive(Clone)]
pub struct DrillKeys {
    inner: Arc<LocalKeyFile>,
    down: Arc<AtomicBool>,
}

impl DrillKeys {
    pub fn new(inner: Arc<LocalKeyFile>) -> Self {
        DrillKeys { inner, down: Arc::new(AtomicBool::new(false)) }
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
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
}
