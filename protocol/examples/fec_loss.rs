//! Delivery rate of an 11 + 4 shard message at 10 % independent packet loss.
//!
//! Each of 10,000 trials drops every fragment independently with probability
//! 0.1 and feeds the survivors to a fresh [`Reassembler`]; a trial counts as
//! delivered when the message comes out byte-exact. Beside the measured rate the
//! example prints the binomial prediction (at least 11 of 15 arrive) and, for
//! comparison, the same message sent as 11 fragments without parity.
//!
//! Run: `cargo run --release -p nox-protocol --example fec_loss`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use nox_protocol::fragment::{Fragmenter, MAX_SHARD_LEN, Reassembled, Reassembler, ReassemblyLimits, SizeBuckets};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

const TRIALS: usize = 10_000;
const LOSS: f64 = 0.10;

fn binomial_at_least(n: u64, k: u64, p_success: f64) -> f64 {
    let choose = |n: u64, r: u64| (0..r).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64);
    (k..=n).map(|i| choose(n, i) * p_success.powi(i as i32) * (1.0 - p_success).powi((n - i) as i32)).sum()
}

fn delivery(fragmenter: &Fragmenter, message: &[u8], rng: &mut ChaCha20Rng) -> (usize, f64) {
    let fragments = fragmenter.split(message, [1; 16]).expect("split");
    let mut delivered = 0usize;
    for _ in 0..TRIALS {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let now = Instant::now();
        let mut got = None;
        for f in &fragments {
            if rng.r#gen::<f64>() < LOSS {
                continue;
            }
            if let Ok(Reassembled::Complete(m)) = r.insert(f, now) {
                got = Some(m);
            }
        }
        if got.as_deref() == Some(message) {
            delivered += 1;
        }
    }
    (fragments.len(), delivered as f64 / TRIALS as f64)
}

fn main() {
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    // Eleven data shards' worth of bytes.
    let message: Vec<u8> = (0..MAX_SHARD_LEN * 11 - 7).map(|_| rng.r#gen()).collect();
    let with_fec = Fragmenter::new(SizeBuckets::new(vec![1, 11]).expect("buckets"), 0.3).expect("fragmenter");
    let without = Fragmenter::new(SizeBuckets::new(vec![1, 11]).expect("buckets"), 0.0).expect("fragmenter");
    let (n_fec, rate_fec) = delivery(&with_fec, &message, &mut rng);
    let (n_plain, rate_plain) = delivery(&without, &message, &mut rng);
    assert_eq!((n_fec, n_plain), (15, 11));
    println!(
        "shards=11+4 loss={LOSS:.2} trials={TRIALS} delivery_rate={rate_fec:.4} binomial={:.4} no_fec_rate={rate_plain:.4} no_fec_binomial={:.4}",
        binomial_at_least(15, 11, 1.0 - LOSS),
        binomial_at_least(11, 11, 1.0 - LOSS)
    );
}
