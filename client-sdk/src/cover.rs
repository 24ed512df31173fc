//! Client cover traffic (Loopix): what the entry node and anyone watching the
//! client's link see is the same stream of packets whether the client is
//! busy or idle.
//!
//! Three independent Poisson streams leave the client for its entry:
//!
//! * **payload** (`λP`, [`CoverRates::payload`]): every tick sends the next
//!   real packet waiting in the outbound queue, or a drop cover packet when
//!   there is none. Real packets wait for a tick (on average `1/λP`), so the
//!   client's sending times do not depend on when the user acts;
//! * **loop** (`λL`, [`CoverRates::loops`]): an `Echo` request with one SURB
//!   through entry → mix → exit, answered back through mix → entry to the
//!   client — shaped exactly like a real request at every hop. The share that
//!   returns within [`CoverRates::loop_timeout`] is [`LoopStats`]: a client
//!   whose entry, mix or exit drops its traffic sees it;
//! * **drop** (`λD`, [`CoverRates::drops`]): a cover payload to a random exit,
//!   which discards it.
//!
//! What it protects: an observer of the client's link (or its entry) learns
//! neither when the client sends requests nor how many, as long as real
//! packets do not outrun `λP` (then the queue grows and the wait with it).
//! What it costs: `(λP + λL + λD) × 32 KiB/s` up and `λL × 32 KiB/s` down,
//! proof of work per packet, and the wait for a tick. With cover off
//! (one-shot commands), packets leave the moment they are built, and the
//! client's activity is visible on its link.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;

/// The rates of the three streams, in packets per second.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoverRates {
    /// Whether the streams run at all.
    pub enabled: bool,
    /// λP: payload ticks per second (real packet or drop).
    pub payload: f64,
    /// λL: loops per second.
    pub loops: f64,
    /// λD: extra drops per second.
    pub drops: f64,
    /// When a loop that has not come back counts as lost.
    #[serde(with = "secs", rename = "loop_timeout_secs")]
    pub loop_timeout: Duration,
    /// Real packets waiting for a payload tick, at most.
    pub queue: usize,
}

impl Default for CoverRates {
    fn default() -> Self {
        CoverRates {
            enabled: true,
            payload: 5.0,
            loops: 1.0,
            drops: 1.0,
            loop_timeout: Duration::from_secs(30),
            queue: 4096,
        }
    }
}

impl CoverRates {
    /// Cover off: packets leave as soon as they are built.
    pub fn off() -> Self {
        CoverRates { enabled: false, ..CoverRates::default() }
    }
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

/// How many loops went out and came back.
#[derive(Debug, Default)]
pub struct LoopStats {
    /// Loops sent.
    pub sent: AtomicU64,
    /// Loops whose answer came back in time.
    pub returned: AtomicU64,
    /// Loops given up on.
    pub lost: AtomicU64,
    /// Payload ticks that carried a real packet.
    pub real: AtomicU64,
    /// Payload ticks and drops that carried cover.
    pub dropped_cover: AtomicU64,
}

impl LoopStats {
    /// Returned over finished (returned + lost); `None` before any finished.
    pub fn reliability(&self) -> Option<f64> {
        let r = self.returned.load(Ordering::Relaxed);
        let done = r + self.lost.load(Ordering::Relaxed);
        (done > 0).then(|| r as f64 / done as f64)
    }
}

/// One exponential wait for a Poisson stream of `rate` per second.
pub fn next_gap(rate: f64, rng: &mut impl Rng) -> Duration {
    let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    Duration::from_secs_f64((-u.ln() / rate.max(1e-9)).min(3600.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn gaps_average_the_inverse_rate() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        let n = 20_000;
        let mean = (0..n).map(|_| next_gap(4.0, &mut rng).as_secs_f64()).sum::<f64>() / f64::from(n);
        assert!((mean - 0.25).abs() < 0.01, "mean gap {mean}");
    }

    #[test]
    fn reliability_is_returned_over_finished() {
        let s = LoopStats::default();
        assert_eq!(s.reliability(), None);
        s.returned.store(3, Ordering::Relaxed);
        s.lost.store(1, Ordering::Relaxed);
        assert_eq!(s.reliability(), Some(0.75));
    }
}
