//! The site's key provider behind awaited calls. Wrapping and unwrapping a
//! key may take time (an HSM across a network); a provider that says how
//! long each call takes ([`KeyProvider::latency`], the simulation's slow
//! key provider) is waited out here, in the runtime's time, before the
//! call. Real providers take their time inside the call and say zero.
//! Every key call of the replicator goes through these methods, so no
//! call site can skip the wait.

use std::sync::Arc;

use tandem_crypto::{CryptoError, DataKey, KeyProvider, PiiKey, RandomSource, WrappedKey};

pub struct Keys(Arc<dyn KeyProvider>);

impl Keys {
    pub fn new(provider: Arc<dyn KeyProvider>) -> Self {
        Keys(provider)
    }

    pub fn kek_id(&self) -> &str {
        self.0.kek_id()
    }

    async fn wait(&self) {
        let latency = self.0.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }

    pub async fn wrap_data_key(&self, key: &DataKey, context: &[u8], rng: &dyn RandomSource) -> Result<WrappedKey, CryptoError> {
        self.wait().await;
        self.0.wrap_data_key(key, context, rng)
    }

    pub async fn unwrap_data_key(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<DataKey, CryptoError> {
        self.wait().await;
        self.0.unwrap_data_key(wrapped, context)
    }

    pub async fn wrap_pii_key(&self, key: &PiiKey, context: &[u8], rng: &dyn RandomSource) -> Result<WrappedKey, CryptoError> {
        self.wait().await;
        self.0.wrap_pii_key(key, context, rng)
    }

    pub async fn unwrap_pii_key(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<PiiKey, CryptoError> {
        self.wait().await;
        self.0.unwrap_pii_key(wrapped, context)
    }
}
