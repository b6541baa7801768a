//! Per-shard digests kept up to date as writes land, so comparing two
//! sites (anti-entropy every few seconds, `tandem verify`) costs the same
//! at ten thousand stored contracts as at a million.
//!
//! Each contract has an item hash: BLAKE3 over its tenant, id and latest
//! version record exactly as replicated, or "destroyed" (see
//! [`item_hash`]). A shard's digest is the sum of its contracts' item
//! hashes modulo 2^256. A sum, unlike a hash over the items in key order,
//! can be updated from one contract's old and new hash alone: a commit
//! subtracts the old and adds the new (`crate::meta`). Two sites holding
//! the same contracts hold the same sum; any difference in what they
//! would serve changes an item hash and, short of a deliberate
//! collision, the sum. Anti-entropy only uses it to find the shards worth
//! comparing contract by contract, and that comparison uses the item
//! hashes themselves.

use crate::hash::Hasher;

/// One contract's item hash (raw BLAKE3 bytes).
pub type ItemHash = [u8; 32];

/// What a contract's item hash is made of.
pub enum ItemState<'a> {
    /// Crypto-shredded: nothing of it is served any more.
    Destroyed,
    /// Its latest version record, serialised as stored and replicated.
    Record(&'a [u8]),
    /// A head whose latest version record is missing.
    Missing,
}

/// The item hash of one contract.
pub fn item_hash(tenant: &str, contract_id: &str, state: ItemState<'_>) -> ItemHash {
    let mut hash = Hasher::new();
    hash.update(tenant.as_bytes()).update(&[0]).update(contract_id.as_bytes()).update(&[0]);
    match state {
        ItemState::Destroyed => hash.update(b"destroyed"),
        ItemState::Record(bytes) => hash.update(bytes),
        ItemState::Missing => hash.update(b"missing-version"),
    };
    hash.bytes()
}

/// Lower-case hex of an item hash (what inventories carry).
pub fn item_hex(h: &ItemHash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// A shard's digest: the sum of its item hashes modulo 2^256, as four
/// little-endian 64-bit limbs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sum([u64; 4]);

fn limbs(h: &ItemHash) -> [u64; 4] {
    std::array::from_fn(|i| u64::from_le_bytes(h[i * 8..i * 8 + 8].try_into().expect("8 bytes")))
}

impl Sum {
    pub fn add(&mut self, h: &ItemHash) {
        let mut carry = false;
        for (limb, x) in self.0.iter_mut().zip(limbs(h)) {
            let (s, c1) = limb.overflowing_add(x);
            let (s, c2) = s.overflowing_add(carry as u64);
            *limb = s;
            carry = c1 || c2;
        }
    }

    pub fn sub(&mut self, h: &ItemHash) {
        let mut borrow = false;
        for (limb, x) in self.0.iter_mut().zip(limbs(h)) {
            let (s, b1) = limb.overflowing_sub(x);
            let (s, b2) = s.overflowing_sub(borrow as u64);
            *limb = s;
            borrow = b1 || b2;
        }
    }

    /// The digest as sites exchange it: 64 hex digits, most significant
    /// first.
    pub fn hex(&self) -> String {
        self.0.iter().rev().map(|l| format!("{l:016x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> ItemHash {
        item_hash("t", &format!("c{n}"), ItemState::Record(&[n]))
    }

    // The sum does not depend on the order items came in, taking an item
    // out undoes adding it (carries and borrows across limbs included),
    // and one item more or less, or a changed one, changes it.
    #[test]
    fn the_sum_is_order_free_and_undoes_exactly() {
        let mut forward = Sum::default();
        let mut backward = Sum::default();
        for n in 0..50 {
            forward.add(&h(n));
        }
        for n in (0..50).rev() {
            backward.add(&h(n));
        }
        assert_eq!(forward, backward);
        let all = forward;
        forward.sub(&h(7));
        assert_ne!(forward, all);
        forward.add(&h(7));
        assert_eq!(forward, all);
        let mut max = Sum::default();
        max.add(&[0xff; 32]);
        max.add(&[1; 32]);
        max.sub(&[1; 32]);
        assert_eq!(max.hex(), "f".repeat(64), "carries and borrows cross limbs");
        let mut zero = Sum::default();
        zero.add(&h(1));
        zero.sub(&h(1));
        assert_eq!(zero, Sum::default());
        assert_eq!(zero.hex(), "0".repeat(64));
    }

    // Item hashes are BLAKE3 as before this module (mixed versions of the
    // replicator agree on every contract's item).
    #[test]
    fn item_hashes_are_the_blake3_of_the_item() {
        let mut expect = Hasher::new();
        expect.update(b"t\0c1\0destroyed");
        assert_eq!(item_hex(&item_hash("t", "c1", ItemState::Destroyed)), expect.hex());
        assert_ne!(item_hash("t", "c1", ItemState::Missing), item_hash("t", "c1", ItemState::Destroyed));
    }
}
