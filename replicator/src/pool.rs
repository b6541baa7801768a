//! Buffers reused from chunk to chunk instead of allocated for each.
//!
//! A stream of large files passes through megabyte buffers. A fresh
//! megabyte is mapped and faulted in page by page, and on this project's
//! VMs that alone made a blob read half as fast as the disk. So the hot
//! paths (reading a blob, encrypting, decrypting, a client reading its
//! file) take their buffers from a [`Pool`]; a chunk leaves as `Bytes`
//! (see [`bytes`]) whose last drop hands its buffer back.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Free buffers, at most `keep` of them.
pub struct Pool<T> {
    free: Mutex<Vec<T>>,
    keep: usize,
}

impl<T: Send + 'static> Pool<T> {
    pub fn new(keep: usize) -> Arc<Self> {
        Arc::new(Self { free: Mutex::new(Vec::new()), keep })
    }

    /// A free buffer, as it was given back (the caller clears it).
    pub fn take(&self) -> Option<T> {
        self.free.lock().ok()?.pop()
    }

    /// Keeps `buf` for reuse, unless `keep` buffers are already free.
    pub fn give_back(&self, buf: T) {
        if let Ok(mut free) = self.free.lock() {
            if free.len() < self.keep {
                free.push(buf);
            }
        }
    }
}

impl Pool<Vec<u8>> {
    /// An empty buffer with room for `capacity` bytes, reused if one is free.
    pub fn vec(&self, capacity: usize) -> Vec<u8> {
        let mut buf = self.take().unwrap_or_default();
        buf.clear();
        buf.reserve(capacity);
        buf
    }
}

/// All of `buf` as `Bytes` that give it back to `pool` (see [`bytes`]).
pub fn whole(pool: &Arc<Pool<Vec<u8>>>, buf: Vec<u8>) -> Bytes {
    let len = buf.len();
    bytes(pool, buf, 0..len)
}

/// `buf`'s bytes in `range`, as `Bytes` that give `buf` back to `pool`
/// when the last of them is dropped.
pub fn bytes<T: AsRef<[u8]> + Send + 'static>(pool: &Arc<Pool<T>>, buf: T, range: Range<usize>) -> Bytes {
    Bytes::from_owner(Pooled { buf: Some(buf), range, pool: pool.clone() })
}

struct Pooled<T: Send + 'static> {
    buf: Option<T>,
    range: Range<usize>,
    pool: Arc<Pool<T>>,
}

impl<T: AsRef<[u8]> + Send + 'static> AsRef<[u8]> for Pooled<T> {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[], |b| &b.as_ref()[self.range.clone()])
    }
}

impl<T: Send + 'static> Drop for Pooled<T> {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.give_back(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_when_its_last_bytes_are_dropped() {
        let pool = Pool::<Vec<u8>>::new(2);
        let buf = vec![1, 2, 3, 4];
        let ptr = buf.as_ptr();
        let whole = bytes(&pool, buf, 1..3);
        assert_eq!(&whole[..], &[2, 3]);
        let part = whole.slice(1..);
        drop(whole);
        assert!(pool.take().is_none(), "still in use by `part`");
        drop(part);
        let back = pool.take().expect("given back");
        assert_eq!(back.as_ptr(), ptr);
        assert!(pool.take().is_none());
    }

    #[test]
    fn keeps_at_most_keep() {
        let pool = Pool::<Vec<u8>>::new(1);
        pool.give_back(vec![0]);
        pool.give_back(vec![1]);
        assert_eq!(pool.take(), Some(vec![0]));
        assert_eq!(pool.take(), None);
    }
}
