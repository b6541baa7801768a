//! Randomness seam.
//!
//! Every random byte the crate uses (keys, key ids, nonces) comes through
//! [`RandomSource`], so the deterministic simulation can replay a run
//! bit-for-bit by passing a seeded source, while production uses the OS.

use crate::CryptoError;
use std::sync::Mutex;

/// Source of random bytes. Production uses [`SystemRandomSource`]; the
/// deterministic simulation passes a seeded source.
pub trait RandomSource: Send + Sync {
    /// Fills `buf` completely with random bytes.
    fn fill(&self, buf: &mut [u8]) -> Result<(), CryptoError>;
}

/// The operating system's CSPRNG, through `ring::rand::SystemRandom`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemRandomSource;

impl RandomSource for SystemRandomSource {
    fn fill(&self, buf: &mut [u8]) -> Result<(), CryptoError> {
        use ring::rand::SecureRandom;
        // SystemRandom is a zero-sized handle; building it per call costs nothing.
        ring::rand::SystemRandom::new().fill(buf).map_err(|_| CryptoError::Random)
    }
}

/// Deterministic source for tests and the simulation: the same seed always
/// yields the same byte stream (SHA-256 of seed || block counter).
///
/// **Never use it in production**: anyone who knows the seed knows every key
/// and nonce drawn from it.
#[derive(Debug)]
pub struct SeededRandomSource {
    seed: u64,
    // Next block counter and the unused tail of the current block, so that
    // fill(a) then fill(b) yields the same bytes as one fill(a + b).
    state: Mutex<SeededState>,
}

#[derive(Debug)]
struct SeededState {
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl SeededRandomSource {
    /// A source whose output depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRandomSource { seed, state: Mutex::new(SeededState { counter: 0, block: [0; 32], used: 32 }) }
    }
}

impl RandomSource for SeededRandomSource {
    fn fill(&self, buf: &mut [u8]) -> Result<(), CryptoError> {
        // A poisoned lock only means another thread panicked mid-fill; the
        // state is still a valid position in the stream.
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut filled = 0;
        while filled < buf.len() {
            if st.used == st.block.len() {
                let mut input = [0u8; 16];
                input[..8].copy_from_slice(&self.seed.to_be_bytes());
                input[8..].copy_from_slice(&st.counter.to_be_bytes());
                let digest = ring::digest::digest(&ring::digest::SHA256, &input);
                st.block.copy_from_slice(digest.as_ref());
                st.counter = st.counter.wrapping_add(1);
                st.used = 0;
            }
            let n = (st.block.len() - st.used).min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&st.block[st.used..st.used + n]);
            st.used += n;
            filled += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_source_is_deterministic_and_split_invariant() {
        let a = SeededRandomSource::new(7);
        let b = SeededRandomSource::new(7);
        let c = SeededRandomSource::new(8);
        let mut whole = [0u8; 100];
        a.fill(&mut whole).unwrap();
        let mut parts = [0u8; 100];
        b.fill(&mut parts[..3]).unwrap();
        b.fill(&mut parts[3..40]).unwrap();
        b.fill(&mut parts[40..]).unwrap();
        assert_eq!(whole, parts);
        let mut other = [0u8; 100];
        c.fill(&mut other).unwrap();
        assert_ne!(whole, other);
    }

    #[test]
    fn system_source_fills() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        SystemRandomSource.fill(&mut a).unwrap();
        SystemRandomSource.fill(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
