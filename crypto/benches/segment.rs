//! Throughput of segment encryption + decryption over 256 MiB, relative to a
//! baseline of memcpy + crc32 of the same bytes measured in the same run, so
//! the ratio means the same on any machine. Run with
//! `cargo bench -p tandem-crypto --bench segment`.

use std::hint::black_box;
use std::time::{Duration, Instant};
use tandem_crypto::{DataKey, Decryptor, Encryptor, FileContext, SystemRandomSource, DEFAULT_SEGMENT_SIZE};

const TOTAL: usize = 256 << 20;
/// Chunk size the replicator is likely to see from object storage / the network.
const CHUNK: usize = 64 << 10;
const ROUNDS: usize = 3;

fn mib_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

/// Best of ROUNDS runs, to damp noise from the shared machine.
fn best(mut f: impl FnMut() -> Duration) -> Duration {
    (0..ROUNDS).map(|_| f()).min().expect("ROUNDS > 0")
}

fn main() {
    let plain: Vec<u8> = (0..TOTAL as u64).map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8).collect();
    let ctx = FileContext { tenant: "bench".into(), contract_id: "c-1".into(), version: 1, file_name: "blob.bin".into() };
    let key = DataKey::generate(&SystemRandomSource).expect("key");

    // Baseline: what any copy of the data through a checksum costs at least.
    let mut copy = vec![0u8; TOTAL];
    let baseline = best(|| {
        let t = Instant::now();
        copy.copy_from_slice(&plain);
        black_box(crc32fast::hash(black_box(&copy)));
        t.elapsed()
    });

    let mut ct = Vec::with_capacity(tandem_crypto::ciphertext_len(TOTAL as u64, DEFAULT_SEGMENT_SIZE) as usize);
    let encrypt = best(|| {
        ct.clear();
        let t = Instant::now();
        let mut enc = Encryptor::new(&key, &ctx, DEFAULT_SEGMENT_SIZE, &SystemRandomSource).expect("encryptor");
        for chunk in plain.chunks(CHUNK) {
            enc.push(chunk, &mut ct).expect("push");
        }
        enc.finish(&mut ct).expect("finish");
        t.elapsed()
    });

    let mut out = Vec::with_capacity(TOTAL);
    let mut decrypt_chunked = || {
        out.clear();
        let t = Instant::now();
        let mut dec = Decryptor::new(&key, &ctx);
        for chunk in ct.chunks(CHUNK) {
            dec.push(chunk, &mut out).expect("push");
        }
        dec.finish().expect("finish");
        t.elapsed()
    };
    let decrypt = best(&mut decrypt_chunked);
    assert!(out == plain, "round trip failed");

    let mut out_whole = Vec::with_capacity(TOTAL);
    let decrypt_whole = best(|| {
        out_whole.clear();
        let t = Instant::now();
        let mut dec = Decryptor::new(&key, &ctx);
        dec.push(&ct, &mut out_whole).expect("push");
        dec.finish().expect("finish");
        t.elapsed()
    });
    assert!(out_whole == plain, "round trip failed");

    let enc_dec = encrypt + decrypt;
    println!("segment bench: {} MiB, segment size {} KiB, push chunks {} KiB, best of {ROUNDS}", TOTAL >> 20, DEFAULT_SEGMENT_SIZE >> 10, CHUNK >> 10);
    println!("  baseline memcpy+crc32 : {:8.0} MiB/s", mib_per_s(TOTAL, baseline));
    println!("  encrypt               : {:8.0} MiB/s  ({:.2}x baseline time)", mib_per_s(TOTAL, encrypt), encrypt.as_secs_f64() / baseline.as_secs_f64());
    println!("  decrypt (64 KiB push) : {:8.0} MiB/s  ({:.2}x baseline time)", mib_per_s(TOTAL, decrypt), decrypt.as_secs_f64() / baseline.as_secs_f64());
    println!(
        "  decrypt (one push)    : {:8.0} MiB/s  ({:.2}x baseline time)",
        mib_per_s(TOTAL, decrypt_whole),
        decrypt_whole.as_secs_f64() / baseline.as_secs_f64()
    );
    println!(
        "  encrypt+decrypt       : {:8.0} MiB/s  ratio to baseline time: {:.2}",
        mib_per_s(TOTAL, enc_dec),
        enc_dec.as_secs_f64() / baseline.as_secs_f64()
    );
}
