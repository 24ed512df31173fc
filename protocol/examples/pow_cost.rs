//! What a submission's proof of work costs its sender against what the
//! submission costs the entry, measured in one run on one core.
//!
//! Prints one line:
//! `bits=<b> hash_rate_mhs=<M/s> digest_us=<median> solve_ms_mean=<mean> solve_ms_p90=<p90> check_us=<median> entry_us=<median> ratio=<solve_mean/entry>`
//!
//! * `hash_rate_mhs` — attempts per second of the search (one 40-byte BLAKE3
//!   compression each), in millions, over all the solves below.
//! * `digest_us` — hashing the whole 32 KiB packet once (sender and entry both
//!   pay it once per packet).
//! * `solve_ms_mean`, `solve_ms_p90` — finding a nonce at `b` bits for fresh
//!   packets, digest included (expected `2^b` attempts; the spread is
//!   geometric).
//! * `check_us` — what the entry pays before any X25519: the digest and one
//!   attempt.
//! * `entry_us` — what an accepted submission costs the entry up to the replay
//!   cache's answer: the check plus `peel_header` (one X25519, the key schedule
//!   and the MAC). A submission the replay cache refuses costs exactly this.
//! * `ratio` — `solve_ms_mean` over `entry_us`: how many times the sender's
//!   work exceeds the entry's, on the same core. An attacker with faster
//!   hashing hardware (GPU, ASIC) divides it by their speed-up.
//!
//! Run: `cargo run --release -p nox-protocol --example pow_cost [bits]`
//! (`bits` defaults to 12, the default `ingest.pow_bits`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Instant;

use nox_protocol::crypto::x25519::MixSecretKey;
use nox_protocol::pow::{PacketDigest, solve_digest, verify_digest};
use nox_protocol::sphinx::{Hop, NodeId, PACKET_LEN, Packet, PacketBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

const SAMPLES: usize = 2000;
const SOLVES: usize = 400;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn p90(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() * 9 / 10]
}

fn time_us(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64() * 1e6
}

fn main() {
    let bits: u8 = std::env::args().nth(1).map(|a| a.parse().expect("bits: a number")).unwrap_or(12);
    let mut rng = ChaCha20Rng::seed_from_u64(2026);
    let keys: Vec<MixSecretKey> = (0..3).map(|_| MixSecretKey::generate(&mut rng)).collect();
    let route: Vec<Hop> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Hop { id: NodeId([i as u8; 32]), key: k.public_key(), delay_us: 0 })
        .collect();
    let builder = PacketBuilder::new(1);
    let (_, packet) = builder.forward(&route, b"pow cost", &mut rng).expect("build");
    let original = packet.as_bytes().to_vec();

    // The entry's side, interleaved: the check alone, then check + peel.
    let (mut digest, mut check, mut entry) = (vec![], vec![], vec![]);
    for i in 0..SAMPLES + 100 {
        let p = Packet::from_vec(original.clone()).expect("packet");
        let t = time_us(|| {
            black_box(PacketDigest::of(black_box(&p)));
        });
        let c = time_us(|| {
            let d = PacketDigest::of(black_box(&p));
            black_box(verify_digest(&d, 0, 1));
        });
        let e = time_us(|| {
            let d = PacketDigest::of(black_box(&p));
            black_box(verify_digest(&d, 0, 1));
            black_box(p.peel_header(&keys[0]).expect("peel").replay_tag());
        });
        if i >= 100 {
            digest.push(t);
            check.push(c);
            entry.push(e);
        }
    }

    // The sender's side: fresh packets (different bytes), random starts.
    let mut solves = Vec::with_capacity(SOLVES);
    let mut attempts = 0u64;
    let mut bytes = original;
    for i in 0..SOLVES {
        bytes[PACKET_LEN - 8..].copy_from_slice(&(i as u64).to_be_bytes());
        let p = Packet::from_vec(bytes.clone()).expect("packet");
        let from = rng.r#gen::<u64>();
        let mut found = from;
        solves.push(time_us(|| {
            found = black_box(solve_digest(&PacketDigest::of(&p), bits, from));
        }));
        attempts += found.wrapping_sub(from) + 1;
    }
    let solve_total_us = solves.iter().sum::<f64>();
    let solve_mean = solve_total_us / solves.len() as f64;
    let rate = attempts as f64 / (solve_total_us / 1e6);
    let entry_us = median(entry);
    println!(
        "bits={bits} hash_rate_mhs={:.2} digest_us={:.1} solve_ms_mean={:.3} solve_ms_p90={:.3} check_us={:.1} entry_us={entry_us:.1} ratio={:.1}",
        rate / 1e6,
        median(digest),
        solve_mean / 1e3,
        p90(solves) / 1e3,
        median(check),
        solve_mean / entry_us,
    );
}
