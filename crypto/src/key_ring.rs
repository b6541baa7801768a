//! Several key-encryption keys at once, for rotation: new keys are wrapped
//! with the current KEK; a wrapped key is unwrapped by whichever KEK its
//! `kek_id` names (the current one or a retired one still configured).
//! `tandem keys rotate` re-wraps everything under the current KEK, after
//! which retired KEKs can be removed from the config.

use std::sync::Arc;

use crate::{CryptoError, DataKey, KeyProvider, PiiKey, RandomSource, WrappedKey};

pub struct KeyRing {
    current: Arc<dyn KeyProvider>,
    retired: Vec<Arc<dyn KeyProvider>>,
}

impl KeyRing {
    /// `current` wraps; `retired` only unwrap. KEK ids must be distinct.
    pub fn new(current: Arc<dyn KeyProvider>, retired: Vec<Arc<dyn KeyProvider>>) -> Result<Self, CryptoError> {
        let mut ids = vec![current.kek_id().to_string()];
        for r in &retired {
            if ids.iter().any(|id| id == r.kek_id()) {
                return Err(CryptoError::InvalidArgument(format!("KEK id {:?} is configured twice", r.kek_id())));
            }
            ids.push(r.kek_id().to_string());
        }
        Ok(Self { current, retired })
    }

    /// Ids of every KEK held, the current one first.
    pub fn kek_ids(&self) -> Vec<String> {
        std::iter::once(&self.current).chain(&self.retired).map(|p| p.kek_id().to_string()).collect()
    }

    fn holder(&self, wrapped: &WrappedKey) -> Result<&dyn KeyProvider, CryptoError> {
        std::iter::once(&self.current).chain(&self.retired).find(|p| p.kek_id() == wrapped.kek_id).map(|p| p.as_ref()).ok_or_else(|| {
            CryptoError::WrongKey(format!(
                "the key is wrapped by KEK {:?}, which is not configured here (configured: {})",
                wrapped.kek_id,
                self.kek_ids().join(", ")
            ))
        })
    }
}

impl KeyProvider for KeyRing {
    fn kek_id(&self) -> &str {
        self.current.kek_id()
    }

    fn wrap_data_key(&self, key: &DataKey, context: &[u8], rng: &dyn RandomSource) -> Result<WrappedKey, CryptoError> {
        self.current.wrap_data_key(key, context, rng)
    }

    fn unwrap_data_key(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<DataKey, CryptoError> {
        self.holder(wrapped)?.unwrap_data_key(wrapped, context)
    }

    fn wrap_pii_key(&self, key: &PiiKey, context: &[u8], rng: &dyn RandomSource) -> Result<WrappedKey, CryptoError> {
        self.current.wrap_pii_key(key, context, rng)
    }

    fn unwrap_pii_key(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<PiiKey, CryptoError> {
        self.holder(wrapped)?.unwrap_pii_key(wrapped, context)
    }

    /// The slowest of the keys held (a call may go to any of them).
    fn latency(&self) -> std::time::Duration {
        std::iter::once(&self.current).chain(&self.retired).map(|p| p.latency()).max().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LocalKeyFile, SeededRandomSource};

    #[test]
    fn wraps_with_the_current_kek_and_unwraps_with_any_configured_one() {
        let rng = SeededRandomSource::new(7);
        let dir = tempfile::tempdir().unwrap();
        let old: Arc<dyn KeyProvider> = Arc::new(LocalKeyFile::create(&dir.path().join("old.key"), "kek-old", &rng).unwrap());
        let new: Arc<dyn KeyProvider> = Arc::new(LocalKeyFile::create(&dir.path().join("new.key"), "kek-new", &rng).unwrap());
        let key = DataKey::generate(&rng).unwrap();
        let under_old = old.wrap_data_key(&key, b"ctx", &rng).unwrap();

        let ring = KeyRing::new(new.clone(), vec![old.clone()]).unwrap();
        assert_eq!(ring.unwrap_data_key(&under_old, b"ctx").unwrap().expose_secret(), key.expose_secret());
        let rewrapped = ring.wrap_data_key(&ring.unwrap_data_key(&under_old, b"ctx").unwrap(), b"ctx", &rng).unwrap();
        assert_eq!(rewrapped.kek_id, "kek-new");
        assert_eq!(rewrapped.key_id, under_old.key_id);

        // Once the old KEK is removed, only what was re-wrapped is readable.
        let only_new = KeyRing::new(new, vec![]).unwrap();
        assert!(only_new.unwrap_data_key(&rewrapped, b"ctx").is_ok());
        let err = only_new.unwrap_data_key(&under_old, b"ctx").unwrap_err().to_string();
        assert!(err.contains("kek-old") && err.contains("not configured"), "{err}");
        assert!(KeyRing::new(old.clone(), vec![old]).is_err(), "a KEK configured twice is refused");
    }
}
