//! The site's key provider behind awaited calls. Wrapping and unwrapping a
//! key may take time (an HSM across a network); a provider that says how
//! long each call takes ([`KeyProvider::latency`], the simulation's slow
//! key provider) is waited out here, in the runtime's time, before the
//! call. Real providers take their time inside the call and say zero.
//! Every key call of the replicator goes through these methods, so no
//! call site can skip the wait, and each remembers whether the provider
//! itself failed (unreachable, refusing), which the heartbeat reports: a
//! site that cannot wrap keys cannot take writes, and the controllers fail
//! its shards over.

use std::sync::{Arc, Mutex};

use tandem_crypto::{CryptoError, DataKey, KeyProvider, PiiKey, RandomSource, WrappedKey};

pub struct Keys {
    provider: Arc<dyn KeyProvider>,
    /// Why the provider's last call failed; `None` once one succeeds.
    failing: Mutex<Option<String>>,
}

/// Whether `e` says the provider failed (rather than the data or the key
/// offered being wrong).
fn provider_failed(e: &CryptoError) -> bool {
    matches!(e, CryptoError::Hsm(_) | CryptoError::KeyFile(_))
}

impl Keys {
    pub fn new(provider: Arc<dyn KeyProvider>) -> Self {
        Keys { provider, failing: Mutex::new(None) }
    }

    /// Why the provider's last call failed, until one succeeds.
    pub fn failing(&self) -> Option<String> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn note<T>(&self, r: Result<T, CryptoError>) -> Result<T, CryptoError> {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        match &r {
            Ok(_) => *failing = None,
            Err(e) if provider_failed(e) => *failing = Some(e.to_string()),
            Err(_) => {}
        }
        r
    }

    /// One cheap call (a throwaway key wrapped), to learn whether a
    /// provider that failed answers again while the site is idle.
    pub async fn probe(&self, rng: &dyn RandomSource) {
        if let Ok(key) = DataKey::generate(rng) {
            let _ = self.wrap_data_key(&key, b"tandem/key-provider-probe", rng).await;
        }
    }

    pub fn kek_id(&self) -> &str {
        self.provider.kek_id()
    }

    async fn wait(&self) {
        let latency = self.provider.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }

    pub async fn wrap_data_key(&self, key: &DataKey, context: &[u8], rng: &dyn RandomSource) -> Result<WrappedKey, CryptoError> {
        self.wait().await;
        self.note(self.provider.wrap_data_key(key, context, rng))
    }

    pub async fn unwrap_data_key(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<DataKey, CryptoError> {
        self.wait().await;
        self.note(self.provider.unwrap_data_key(wrapped, context))
    }

    pub async fn wrap_pii_key(&self, key: &PiiKey, context: &[u8], rng: &dyn RandomSource) -> Result<WrappedKey, CryptoError> {
        self.wait().await;
        self.note(self.provider.wrap_pii_key(key, context, rng))
    }

    pub async fn unwrap_pii_key(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<PiiKey, CryptoError> {
        self.wait().await;
        self.note(self.provider.unwrap_pii_key(wrapped, context))
    }
}
