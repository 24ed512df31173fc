//! [`DeliveryWorker`]: takes what the queue holds to the network, one batch
//! window at a time.
//!
//! At each window end ([`super::schedule`]) the worker takes the ids of
//! every entry due by then and not already being delivered, shuffles them
//! with the operating system's CSPRNG, and starts their deliveries in that
//! order, at most `exit.mail_delivery_concurrency` at once (a fair
//! semaphore: they start in the shuffled order). A delivery reads its entry
//! only once it has a slot, so memory holds at most that many messages.
//!
//! One delivery: an SMTP entry's recipients grouped by domain (ASCII case
//! ignored), one [`MailDeliverer::send`] per domain in turn; an NNTP entry
//! one [`MailDeliverer::post`]. Then, in one durable write: no recipient
//! left → the entry is deleted; some left → rescheduled with backoff; some
//! left past the lifetime → deleted and counted `expired`. An entry is
//! removed only after its outcome is final, so a crash loses nothing: at
//! start the worker finds every entry still in the file and tries it at the
//! next window end. (A crash between a server's acceptance and the write
//! that records it sends that recipient the message again: mail is
//! delivered at least once.)
//!
//! Counted per recipient: `delivered`, `deferred`, `bounced`; per article:
//! `posted`; per message given up: `expired`. Storage failures are logged
//! with what failed, never with what the entry holds.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use nox_protocol::payload::MailTransport;
use rand::seq::SliceRandom;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::deliverer::{MailDeliverer, Outcome};
use super::queue::{Entry, MailQueue, QueueError};
use super::recipient::domain_key;
use super::schedule::{MailClock, Schedule};
use crate::metrics::MailMetrics;

/// Request ids forgotten per window at most (the rest at the next).
const PRUNE_PER_WINDOW: usize = 10_000;

/// How long one attempt on one entry may take, all its domains together,
/// unless [`DeliveryWorker::with_attempt_timeout`] says otherwise.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The worker (see the module docs). Cloning shares it.
#[derive(Clone)]
pub struct DeliveryWorker {
    inner: Arc<Inner>,
}

struct Inner {
    queue: MailQueue,
    deliverer: Arc<dyn MailDeliverer>,
    schedule: Schedule,
    slots: Arc<Semaphore>,
    attempt_timeout: Duration,
    in_flight: Mutex<HashSet<u64>>,
    clock: MailClock,
    metrics: MailMetrics,
}

impl std::fmt::Debug for DeliveryWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryWorker").field("schedule", &self.inner.schedule).finish_non_exhaustive()
    }
}

/// What became of an entry after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Settled {
    /// No recipient left.
    Done,
    /// These recipients wait for `next_ms`.
    Retry { remaining: Vec<String>, next_ms: u64 },
    /// Recipients were left past the lifetime.
    GiveUp,
}

impl DeliveryWorker {
    /// A worker over `queue`, delivering through `deliverer` at most
    /// `concurrency` messages at once.
    pub fn new(
        queue: MailQueue,
        deliverer: Arc<dyn MailDeliverer>,
        schedule: Schedule,
        concurrency: usize,
        clock: MailClock,
        metrics: MailMetrics,
    ) -> Self {
        DeliveryWorker {
            inner: Arc::new(Inner {
                queue,
                deliverer,
                schedule,
                slots: Arc::new(Semaphore::new(concurrency.max(1))),
                attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
                in_flight: Mutex::new(HashSet::new()),
                clock,
                metrics,
            }),
        }
    }

    /// Bounds one attempt on one entry, all its domains together: a domain
    /// not answered by then counts as deferred. Without it a slow server
    /// (replies trickling in just within each command's timeout) could hold
    /// a delivery slot for hours. Call before [`DeliveryWorker::run`].
    pub fn with_attempt_timeout(self, timeout: Duration) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.attempt_timeout = timeout;
                DeliveryWorker { inner: Arc::new(inner) }
            }
            // Already shared: unchanged.
            Err(inner) => DeliveryWorker { inner },
        }
    }

    /// Runs until dropped: at each window end, [`DeliveryWorker::take`]
    /// and deliver. Deliveries run in a set owned by this future, so
    /// dropping it (aborting its task) stops them and releases the queue.
    pub async fn run(self) {
        let mut batches = JoinSet::new();
        loop {
            let boundary = self.inner.schedule.window_end_after(self.inner.clock.now_ms());
            // Wait for the window's end by the wall clock, reaping finished batches.
            loop {
                let now = self.inner.clock.now_ms();
                if now >= boundary {
                    break;
                }
                let sleep = tokio::time::sleep(Duration::from_millis(boundary - now));
                tokio::select! {
                    _ = sleep => {}
                    Some(_) = batches.join_next(), if !batches.is_empty() => {}
                }
            }
            let ids = self.take(boundary).await;
            if !ids.is_empty() {
                let worker = self.clone();
                batches.spawn(async move { worker.deliver_batch(ids).await });
            }
            self.prune(boundary).await;
        }
    }

    /// One window, start to finish (tests): takes what is due at
    /// `boundary_ms` and delivers it, returning when every delivery ended.
    pub async fn run_window(&self, boundary_ms: u64) {
        let ids = self.take(boundary_ms).await;
        self.deliver_batch(ids).await;
        self.prune(boundary_ms).await;
    }

    /// The ids due at `boundary_ms` and not being delivered, shuffled, now
    /// marked as being delivered.
    pub async fn take(&self, boundary_ms: u64) -> Vec<u64> {
        let exclude = self.in_flight().clone();
        let queue = self.inner.queue.clone();
        let due = tokio::task::spawn_blocking(move || queue.due(boundary_ms, &exclude)).await;
        let mut ids = match due {
            Ok(Ok(ids)) => ids,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "mail exit: the queue could not be read");
                return Vec::new();
            }
            Err(_) => return Vec::new(),
        };
        ids.shuffle(&mut rand::rngs::OsRng);
        self.in_flight().extend(ids.iter().copied());
        ids
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.inner.in_flight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Delivers `ids`, starting them in order, at most the concurrency at once.
    async fn deliver_batch(&self, ids: Vec<u64>) {
        futures::stream::iter(ids)
            .for_each_concurrent(None, |id| async move {
                let Ok(_slot) = self.inner.slots.clone().acquire_owned().await else { return };
                self.deliver(id).await;
                self.in_flight().remove(&id);
            })
            .await;
    }

    async fn deliver(&self, id: u64) {
        let queue = self.inner.queue.clone();
        let entry = match tokio::task::spawn_blocking(move || queue.load(id)).await {
            Ok(Ok(Some(Ok(entry)))) => entry,
            Ok(Ok(None)) | Err(_) => return,
            Ok(Ok(Some(Err(_)))) => {
                tracing::warn!("mail exit: a queue entry does not decode; removed");
                self.write(move |q| q.remove(id)).await;
                self.inner.metrics.expired.inc();
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "mail exit: the queue could not be read");
                return;
            }
        };
        let remaining = self.attempt(&entry).await;
        let now = self.inner.clock.now_ms();
        let attempts = entry.attempts.saturating_add(1);
        match settle(&self.inner.schedule, &entry, remaining, attempts, now) {
            Settled::Done => self.write(move |q| q.remove(id)).await,
            Settled::GiveUp => {
                self.inner.metrics.expired.inc();
                self.write(move |q| q.remove(id)).await;
            }
            Settled::Retry { remaining, next_ms } => {
                self.write(move |q| q.reschedule(id, &remaining, attempts, next_ms)).await;
            }
        }
    }

    /// One attempt on every recipient of `entry`, within the attempt
    /// timeout; the recipients left.
    async fn attempt(&self, entry: &Entry) -> Vec<String> {
        let m = &self.inner.metrics;
        let deliverer = &self.inner.deliverer;
        let deadline = tokio::time::Instant::now() + self.inner.attempt_timeout;
        match entry.transport {
            MailTransport::Nntp => match tokio::time::timeout_at(deadline, deliverer.post(&entry.message))
                .await
                .unwrap_or(Outcome::Transient)
            {
                Outcome::Delivered => {
                    m.posted.inc();
                    Vec::new()
                }
                Outcome::Permanent => {
                    m.bounced.inc();
                    Vec::new()
                }
                Outcome::Transient => {
                    m.deferred.inc();
                    entry.recipients.clone()
                }
            },
            MailTransport::Smtp => {
                let mut by_domain: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for r in &entry.recipients {
                    by_domain.entry(domain_key(r)).or_default().push(r.clone());
                }
                let mut remaining = Vec::new();
                for (domain, recipients) in by_domain {
                    let send = deliverer.send(&domain, &recipients, &entry.message);
                    // Past the deadline every domain left is deferred.
                    let outcomes = tokio::time::timeout_at(deadline, send).await.unwrap_or_default();
                    for (i, r) in recipients.into_iter().enumerate() {
                        match outcomes.get(i).copied().unwrap_or(Outcome::Transient) {
                            Outcome::Delivered => m.delivered.inc(),
                            Outcome::Permanent => m.bounced.inc(),
                            Outcome::Transient => {
                                remaining.push(r);
                                m.deferred.inc()
                            }
                        };
                    }
                }
                remaining
            }
        }
    }

    /// A durable write on a blocking thread; a failure is logged (the entry
    /// stays as it was and is tried again).
    async fn write(&self, f: impl FnOnce(&MailQueue) -> Result<(), QueueError> + Send + 'static) {
        let queue = self.inner.queue.clone();
        match tokio::task::spawn_blocking(move || f(&queue)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "mail exit: the queue could not be written"),
            Err(_) => tracing::warn!("mail exit: a queue write did not finish"),
        }
        self.publish_totals();
    }

    fn publish_totals(&self) {
        let t = self.inner.queue.totals();
        self.inner.metrics.queue_entries.set(i64::try_from(t.entries).unwrap_or(i64::MAX));
        self.inner.metrics.queue_bytes.set(i64::try_from(t.bytes).unwrap_or(i64::MAX));
    }

    async fn prune(&self, now_ms: u64) {
        let queue = self.inner.queue.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || queue.prune_accepted(now_ms, PRUNE_PER_WINDOW)).await {
            tracing::warn!(error = %e, "mail exit: expired request ids could not be forgotten");
        }
        self.publish_totals();
    }
}

fn settle(schedule: &Schedule, entry: &Entry, remaining: Vec<String>, attempts: u32, now_ms: u64) -> Settled {
    if remaining.is_empty() {
        return Settled::Done;
    }
    match schedule.next_attempt(entry.accepted_ms, attempts, now_ms) {
        Some(next_ms) => Settled::Retry { remaining, next_ms },
        None => Settled::GiveUp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settle_is_done_retry_or_give_up() {
        let s = Schedule {
            batch: Duration::from_secs(1),
            retry_min: Duration::from_secs(2),
            retry_max: Duration::from_secs(8),
            lifetime: Duration::from_secs(20),
        };
        let entry = Entry {
            id: 0,
            transport: MailTransport::Smtp,
            accepted_ms: 0,
            attempts: 0,
            recipients: vec!["a@example.org".into()],
            message: vec![],
        };
        assert_eq!(settle(&s, &entry, vec![], 1, 1000), Settled::Done);
        assert_eq!(
            settle(&s, &entry, entry.recipients.clone(), 1, 1000),
            Settled::Retry { remaining: entry.recipients.clone(), next_ms: 3000 }
        );
        assert_eq!(settle(&s, &entry, entry.recipients.clone(), 5, 20_000), Settled::GiveUp);
    }
}
