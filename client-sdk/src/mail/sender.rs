//! [`MailSender`]: takes due messages from the [`MailQueue`], sends each as
//! a `Mail` request through the mixnet, and deletes it once an exit
//! acknowledged it through a SURB.
//!
//! ## The rules
//!
//! * **An entry leaves the queue only on an acknowledgement**: a reply with
//!   status `Ok` from the exit, which answers only once the message is in
//!   its own durable queue. Anything else — no answer, `Busy`, `Failed`, a
//!   crash of this process mid-send — leaves the entry where it is.
//! * **One request id per entry, for its whole life**
//!   ([`MailQueue::request_id`]): an exit that queued a message and whose
//!   acknowledgement was lost recognises the next try and acknowledges
//!   again instead of delivering twice. (Two different exits cannot know
//!   of each other: a message whose acknowledgement was lost can, rarely,
//!   be delivered by both. Delivery is at least once.)
//! * **Every try a fresh route**: the client draws routes per attempt; a
//!   try after a failure may also go to another exit.
//! * **Backoff**: before a try the entry's next attempt is moved to
//!   `retry_min × 2^(tries − 1)`, at most `retry_max`, so a crash in the
//!   middle of a send does not make the entry due at once again.
//! * **Give up**: an exit's `BadRequest` (the message can never be taken
//!   as it is) gives up on the entry at once; every entry older than
//!   `lifetime` is given up on. A given-up entry stays in the queue, shown
//!   by `nox-client mail queue`, until the user discards it.
//!
//! What the sender logs: counts (given-up entries) at `warn`; each try's
//! outcome with its entry id only at `debug` — a node's SMTP entry runs this
//! sender too, and per-message lines there would tie a submission to its
//! sending. Never addresses or content.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use nox_protocol::payload::{Reply, ReplyStatus, Request};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::entry::{EntryState, MailId};
use super::gateway::mail_request;
use super::queue::MailQueue;
use crate::client::{Client, ClientError};

/// How the sender paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderConfig {
    /// How long an entry is tried before it is given up on (from its
    /// acceptance). Default five days, what mail servers keep trying.
    pub lifetime: Duration,
    /// The wait after the first try. Default 60 s.
    pub retry_min: Duration,
    /// The longest wait between tries. Default one hour.
    pub retry_max: Duration,
    /// Messages in flight at once. Default 2.
    pub concurrency: usize,
    /// The longest sleep between two looks at the queue when nothing wakes
    /// the sender. Default 30 s.
    pub idle_poll: Duration,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            lifetime: Duration::from_secs(5 * 86_400),
            retry_min: Duration::from_secs(60),
            retry_max: Duration::from_secs(3_600),
            concurrency: 2,
            idle_poll: Duration::from_secs(30),
        }
    }
}

impl SenderConfig {
    /// The wait after try number `tries` (1 for the first).
    pub fn backoff(&self, tries: u32) -> Duration {
        let factor = 1u32.checked_shl(tries.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
        self.retry_min.saturating_mul(factor).min(self.retry_max).max(self.retry_min.min(self.retry_max))
    }
}

/// What carries a `Mail` request to an exit and its answer back:
/// [`Client::request_as`], or a stand-in in tests.
pub trait MailCarrier: Send + Sync + 'static {
    /// Sends `request` under `request_id` and returns the exit's reply.
    fn send(&self, request_id: [u8; 16], request: Request) -> BoxFuture<'_, Result<Reply, ClientError>>;
}

impl MailCarrier for Client {
    fn send(&self, request_id: [u8; 16], request: Request) -> BoxFuture<'_, Result<Reply, ClientError>> {
        Box::pin(self.request_as(request_id, request, |_| {}))
    }
}

/// The sender's counters.
#[derive(Debug, Default)]
pub struct SenderStats {
    tries: AtomicU64,
    acknowledged: AtomicU64,
    failed_tries: AtomicU64,
    refused: AtomicU64,
    expired: AtomicU64,
}

impl SenderStats {
    /// Tries made (each a `Mail` request with its own attempts).
    pub fn tries(&self) -> u64 {
        self.tries.load(Ordering::Relaxed)
    }
    /// Entries an exit acknowledged (and the queue deleted).
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::Relaxed)
    }
    /// Tries that got no acknowledgement (the entry waits for the next).
    pub fn failed_tries(&self) -> u64 {
        self.failed_tries.load(Ordering::Relaxed)
    }
    /// Entries given up on because an exit refused them as malformed.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
    /// Entries given up on at the end of their lifetime.
    pub fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }
}

/// How one try ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TryOutcome {
    /// The exit acknowledged: the entry is deleted.
    Acknowledged,
    /// The exit refused the message as malformed: the entry is given up.
    Refused(String),
    /// No acknowledgement: the entry waits for its next try.
    Retry(String),
}

/// The loop that empties the queue (see the module docs).
pub struct MailSender<C: MailCarrier> {
    queue: MailQueue,
    carrier: Arc<C>,
    config: SenderConfig,
    wake: Arc<Notify>,
    stats: Arc<SenderStats>,
}

impl<C: MailCarrier> std::fmt::Debug for MailSender<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailSender").field("queue", &self.queue).field("config", &self.config).finish_non_exhaustive()
    }
}

impl<C: MailCarrier> MailSender<C> {
    /// A sender of `queue`'s entries through `carrier`, woken early by
    /// `wake` (the gateway notifies it after each accepted message).
    pub fn new(queue: MailQueue, carrier: Arc<C>, config: SenderConfig, wake: Arc<Notify>) -> Self {
        MailSender { queue, carrier, config, wake, stats: Arc::new(SenderStats::default()) }
    }

    /// The counters, live.
    pub fn stats(&self) -> Arc<SenderStats> {
        Arc::clone(&self.stats)
    }

    /// Sends until `shutdown` resolves. Tries in flight then are dropped
    /// unfinished: their entries stay queued and are tried again at the
    /// next start.
    pub async fn run<F: std::future::Future<Output = ()>>(self, shutdown: F) {
        tokio::pin!(shutdown);
        let mut in_flight: HashSet<MailId> = HashSet::new();
        let mut tasks: JoinSet<MailId> = JoinSet::new();
        loop {
            let sleep = self.step(&mut in_flight, &mut tasks).await;
            tokio::select! {
                () = &mut shutdown => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(sleep) => {}
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(id) = done {
                        in_flight.remove(&id);
                    }
                }
            }
        }
        tasks.shutdown().await;
    }

    /// One look at the queue: gives up expired entries, starts tries of due
    /// ones (up to the concurrency), and returns how long to sleep.
    async fn step(&self, in_flight: &mut HashSet<MailId>, tasks: &mut JoinSet<MailId>) -> Duration {
        // A finished try frees its place before new ones start.
        while let Some(done) = tasks.try_join_next() {
            if let Ok(id) = done {
                in_flight.remove(&id);
            }
        }
        let queue = self.queue.clone();
        let lifetime = self.config.lifetime;
        let looked = tokio::task::spawn_blocking(move || {
            let now = SystemTime::now();
            let expired = queue.give_up_expired(now, lifetime)?;
            let due = queue.due(now)?;
            let list = queue.list()?;
            Ok::<_, super::MailQueueError>((expired, due, list))
        })
        .await;
        let (expired, due, list) = match looked {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "mail queue: reading the due entries failed; trying again");
                return self.config.idle_poll.min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::warn!(error = %e, "mail queue: the reader stopped");
                return self.config.idle_poll.min(Duration::from_secs(5));
            }
        };
        if !expired.is_empty() {
            self.stats.expired.fetch_add(expired.len() as u64, Ordering::Relaxed);
            tracing::warn!(
                count = expired.len(),
                "mail given up: not acknowledged within its lifetime (`nox-client mail queue` lists them)"
            );
        }
        for mail in due.mail {
            if in_flight.len() >= self.config.concurrency.max(1) {
                break;
            }
            if in_flight.contains(&mail.id) {
                continue;
            }
            in_flight.insert(mail.id);
            let (queue, carrier, stats, config) =
                (self.queue.clone(), Arc::clone(&self.carrier), Arc::clone(&self.stats), self.config);
            tasks.spawn(async move {
                let id = mail.id;
                let outcome = try_once(&queue, &*carrier, &config, &stats, mail).await;
                // Per message at debug only: in a node's SMTP entry these
                // lines would tie each submission to its sending.
                match &outcome {
                    TryOutcome::Acknowledged => tracing::debug!(%id, "mail acknowledged by an exit"),
                    TryOutcome::Refused(why) => tracing::debug!(%id, why, "mail given up: an exit refused it"),
                    TryOutcome::Retry(why) => tracing::debug!(%id, why, "mail not acknowledged; will try again"),
                }
                id
            });
        }
        // Sleep until the earliest next attempt of an entry not in flight.
        let now = SystemTime::now();
        list.iter()
            .filter(|i| i.state == EntryState::Waiting && !in_flight.contains(&i.id))
            .map(|i| i.next_attempt.duration_since(now).unwrap_or(Duration::ZERO))
            .min()
            .map_or(self.config.idle_poll, |d| d.min(self.config.idle_poll))
            .max(Duration::from_millis(if in_flight.len() >= self.config.concurrency.max(1) { 1_000 } else { 50 }))
    }
}

/// One try of `mail`: moves its next attempt forward first, sends, and
/// acknowledges or gives up as the reply says.
pub async fn try_once<C: MailCarrier + ?Sized>(
    queue: &MailQueue,
    carrier: &C,
    config: &SenderConfig,
    stats: &SenderStats,
    mail: super::QueuedMail,
) -> TryOutcome {
    let id = mail.id;
    let next = SystemTime::now() + config.backoff(mail.attempts.saturating_add(1));
    let q = queue.clone();
    if let Err(e) = blocking(move || q.mark_attempt(id, next)).await {
        return TryOutcome::Retry(format!("recording the try failed: {e}"));
    }
    let request = match mail_request(&mail) {
        Ok(r) => r,
        Err(e) => {
            // Checked at acceptance; a queue written by another build may differ.
            let q = queue.clone();
            let _ = blocking(move || q.give_up(id)).await;
            stats.refused.fetch_add(1, Ordering::Relaxed);
            return TryOutcome::Refused(e.to_string());
        }
    };
    drop(mail);
    stats.tries.fetch_add(1, Ordering::Relaxed);
    let outcome = match carrier.send(queue.request_id(id), request).await {
        Ok(reply) if reply.status == ReplyStatus::Ok => TryOutcome::Acknowledged,
        Ok(reply) if reply.status == ReplyStatus::BadRequest => {
            TryOutcome::Refused(String::from_utf8_lossy(&reply.data).chars().take(200).collect())
        }
        Ok(reply) => TryOutcome::Retry(format!(
            "the exit answered {}: {}",
            reply.status.label(),
            String::from_utf8_lossy(&reply.data).chars().take(200).collect::<String>()
        )),
        Err(e) => TryOutcome::Retry(e.to_string()),
    };
    let q = queue.clone();
    match &outcome {
        TryOutcome::Acknowledged => match blocking(move || q.acknowledge(id)).await {
            Ok(()) => {
                stats.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            // The exit has it; the next try is answered from its
            // duplicate check and deletes the entry then.
            Err(e) => return TryOutcome::Retry(format!("deleting the acknowledged entry failed: {e}")),
        },
        TryOutcome::Refused(_) => {
            let _ = blocking(move || q.give_up(id)).await;
            stats.refused.fetch_add(1, Ordering::Relaxed);
        }
        TryOutcome::Retry(_) => {
            stats.failed_tries.fetch_add(1, Ordering::Relaxed);
        }
    }
    outcome
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, super::MailQueueError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}
