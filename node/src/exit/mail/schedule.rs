//! When queued mail is tried: the batch window, the backoff between
//! attempts and the lifetime after which it is given up, as arithmetic on
//! Unix milliseconds; and [`MailClock`], the wall clock they are read from.
//!
//! * **Windows** are aligned on multiples of the batch length since the Unix
//!   epoch, so they need no state and survive a restart. Mail accepted
//!   during a window is due at its end ([`Schedule::due_after_accept`]);
//!   the worker takes everything due at each window's end and sends it in a
//!   random order.
//! * **Retries** wait `retry_min · 2^(attempts − 1)`, at most `retry_max`,
//!   and then for the end of the window they fall in: retried mail leaves
//!   mixed with fresh mail, never on its own clock.
//! * **Lifetime**: the last attempt is at the first window end at or after
//!   `accepted + lifetime`; after an attempt at or past it, the rest is
//!   given up.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Batch window, retries and lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// The batch window (`exit.mail_batch_secs`).
    pub batch: Duration,
    /// The first retry's wait (`exit.mail_retry_min_secs`).
    pub retry_min: Duration,
    /// The longest wait (`exit.mail_retry_max_secs`).
    pub retry_max: Duration,
    /// How long mail is tried (`exit.mail_lifetime_secs`).
    pub lifetime: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            batch: Duration::from_secs(30),
            retry_min: Duration::from_secs(60),
            retry_max: Duration::from_secs(3600),
            lifetime: Duration::from_secs(4 * 86_400),
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Schedule {
    fn batch_ms(&self) -> u64 {
        ms(self.batch).max(1)
    }

    /// The first window end strictly after `t_ms`.
    pub fn window_end_after(&self, t_ms: u64) -> u64 {
        let b = self.batch_ms();
        (t_ms / b).saturating_add(1).saturating_mul(b)
    }

    /// The first window end at or after `t_ms`.
    pub fn window_end_at_or_after(&self, t_ms: u64) -> u64 {
        let b = self.batch_ms();
        t_ms.div_ceil(b).saturating_mul(b)
    }

    /// When mail accepted at `now_ms` is due: the end of the current window.
    pub fn due_after_accept(&self, now_ms: u64) -> u64 {
        self.window_end_after(now_ms)
    }

    /// How long a request id is remembered: the lifetime from acceptance.
    pub fn id_expiry(&self, accepted_ms: u64) -> u64 {
        accepted_ms.saturating_add(ms(self.lifetime))
    }

    /// The wait after the `attempts`-th attempt (1 = the first).
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(32);
        self.retry_min.saturating_mul(1u32 << doublings.min(31)).min(self.retry_max)
    }

    /// After an attempt at `now_ms` that left recipients, the `attempts`-th
    /// on mail accepted at `accepted_ms`: when to try again, or `None` to
    /// give up.
    pub fn next_attempt(&self, accepted_ms: u64, attempts: u32, now_ms: u64) -> Option<u64> {
        let end = accepted_ms.saturating_add(ms(self.lifetime));
        if now_ms >= end {
            return None;
        }
        let wanted = now_ms.saturating_add(ms(self.backoff(attempts))).min(end);
        Some(self.window_end_at_or_after(wanted).max(self.window_end_after(now_ms)))
    }
}

/// The wall clock of the queue's times (Unix milliseconds): the system's,
/// or one a test sets.
#[derive(Clone)]
pub struct MailClock(Arc<dyn Fn() -> u64 + Send + Sync>);

impl std::fmt::Debug for MailClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MailClock")
    }
}

impl Default for MailClock {
    fn default() -> Self {
        MailClock::system()
    }
}

impl MailClock {
    /// The system clock.
    pub fn system() -> Self {
        MailClock(Arc::new(|| unix_ms(SystemTime::now())))
    }

    /// A clock that reads `f`.
    pub fn from_fn(f: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        MailClock(Arc::new(f))
    }

    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        (self.0)()
    }
}

/// `t` in Unix milliseconds (0 before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> Schedule {
        Schedule {
            batch: Duration::from_secs(30),
            retry_min: Duration::from_secs(60),
            retry_max: Duration::from_secs(3600),
            lifetime: Duration::from_secs(4 * 3600),
        }
    }

    #[test]
    fn accepted_mail_is_due_at_the_end_of_its_window() {
        let s = s();
        assert_eq!(s.due_after_accept(0), 30_000);
        assert_eq!(s.due_after_accept(29_999), 30_000);
        assert_eq!(s.due_after_accept(30_000), 60_000);
        assert_eq!(s.window_end_at_or_after(30_000), 30_000);
        assert_eq!(s.window_end_at_or_after(30_001), 60_000);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let s = s();
        let secs: Vec<u64> = (1..=9).map(|a| s.backoff(a).as_secs()).collect();
        assert_eq!(secs, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert_eq!(s.backoff(u32::MAX).as_secs(), 3600);
        assert_eq!(s.backoff(0).as_secs(), 60);
    }

    #[test]
    fn retries_fall_on_window_ends_and_stop_at_the_lifetime() {
        let s = s();
        // First retry a minute later, rounded up to a window end.
        assert_eq!(s.next_attempt(0, 1, 1_000), Some(61_000u64.div_ceil(30_000) * 30_000));
        // Near the end of the lifetime: one last attempt at the end, then none.
        let end = 4 * 3_600_000;
        assert_eq!(s.next_attempt(0, 8, end - 10_000), Some(end));
        assert_eq!(s.next_attempt(0, 9, end), None);
        assert_eq!(s.next_attempt(0, 9, end + 1), None);
        // Always a later window than the attempt's own.
        let tiny = Schedule { retry_min: Duration::from_millis(1), ..s };
        assert_eq!(tiny.next_attempt(0, 1, 30_000), Some(60_000));
    }
}
