//! `Mail`: anonymous mail leaving the mixnet at an exit, by SMTP to the
//! recipients' mail servers (or a smarthost) or by NNTP to a news server.
//!
//! ```text
//! exit stage ── Request::Mail ──► MailService ── prepare ──► MailQueue (redb, durable) ──► "queued"
//!                                  (service)      (accept)      (queue)
//!                                                                  │ at each window end: due ids,
//!                                                                  ▼ shuffled (OsRng)
//!                                                            DeliveryWorker ──► MailDeliverer ──► MX / smarthost / news server
//!                                                              (worker)          (deliverer;       (nox_mail::deliver)
//!                                                                                 network)
//! ```
//!
//! * [`accept`] — what a request must be (transport, recipients, padding,
//!   size, a header that parses) and what it becomes: scrubbed again at the
//!   exit, and for NNTP an article with `Newsgroups` from the request;
//! * [`service`] — [`MailService`]: the [`ExitService`](super::ExitService)
//!   that answers `"queued"` only once the message is on disk;
//! * [`queue`] — [`MailQueue`]: entries and the ids of accepted requests in
//!   their own redb file, committed with `Durability::Immediate`;
//! * [`schedule`] — windows, backoff and lifetime; [`MailClock`];
//! * [`worker`] — [`DeliveryWorker`]: each window's due mail, shuffled,
//!   delivered with bounded concurrency, its outcome recorded;
//! * [`deliverer`] — the [`MailDeliverer`] boundary; [`network`] —
//!   [`NetworkDeliverer`], the real one, with the address guard;
//! * [`recipient`], [`config`] — syntax rules and settings, shared with
//!   `nox check-config`.
//!
//! ## What the exit learns, and keeps
//!
//! The message, its recipients, and when it arrived; nothing of its
//! sender, who reached the exit through the mixnet. The message and
//! recipients are written to the queue file and nowhere else, and removed
//! from it once delivered, refused for good or given up. The request id is
//! kept for `exit.mail_lifetime_secs` (so that a retried request is not
//! queued twice), and with it nothing but its expiry. Logs and metrics
//! carry counts only: no address, size, id or server.
//!
//! ## The queue's promises
//!
//! * **Durable before the answer**: `Ok` ("queued") is sent only after the
//!   entry is committed; a crash after it loses nothing.
//! * **Once per request id**: a request whose id was accepted is answered
//!   `Ok` again, without a second entry (a client retries with the same id
//!   when an answer is lost).
//! * **Bounded, never dropping**: beyond `exit.mail_max_queue_entries` or
//!   `exit.mail_max_queue_bytes` a request is refused `Busy`; accepted mail
//!   is never dropped to make room.
//! * **Mixed on the way out**: accepted mail waits for the end of its batch
//!   window (`exit.mail_batch_secs`), and each window's mail leaves in an
//!   order drawn from the CSPRNG, on top of the mixnet's own delays: the
//!   order of arrival at the exit does not show in the order of delivery.
//! * **Retried, then given up**: recipients a server defers are tried again
//!   after `exit.mail_retry_min_secs`, doubling to
//!   `exit.mail_retry_max_secs`, until `exit.mail_lifetime_secs` after
//!   acceptance; then dropped (`expired`). Nobody is told: the sender is
//!   anonymous, and the envelope sender is the null path `<>`.

pub mod accept;
pub mod config;
pub mod deliverer;
pub mod network;
pub mod queue;
pub mod recipient;
pub mod schedule;
pub mod service;
pub mod worker;

use std::path::Path;
use std::sync::Arc;

use tokio::task::JoinHandle;

pub use self::config::{AcceptRules, MailExitConfig, MailSetupError, NetworkConfig};
pub use self::deliverer::{MailDeliverer, Outcome};
pub use self::network::NetworkDeliverer;
pub use self::queue::{MailQueue, QueueError, QueueLimits};
pub use self::schedule::{MailClock, Schedule};
pub use self::service::{ACK, MailService};
pub use self::worker::DeliveryWorker;
use crate::config::ExitSection;
use crate::metrics::Metrics;

/// A running mail exit: the service to register for `RequestKind::Mail`,
/// and the worker's task (abort it to stop delivering and release the
/// queue file).
#[derive(Debug)]
pub struct MailExit {
    /// The `Mail` service.
    pub service: MailService,
    /// The delivery worker's task.
    pub worker: JoinHandle<()>,
}

impl MailExit {
    /// Opens the queue at `cfg.queue_path` and starts the worker over it,
    /// delivering through `deliverer`. Entries left by an earlier run are
    /// delivered from the next window end on. Needs a tokio runtime.
    pub fn start(
        cfg: &MailExitConfig,
        deliverer: Arc<dyn MailDeliverer>,
        clock: MailClock,
        metrics: &Metrics,
    ) -> Result<MailExit, MailSetupError> {
        let queue = MailQueue::open(&cfg.queue_path, cfg.limits)?;
        let m = metrics.mail();
        let totals = queue.totals();
        m.queue_entries.set(i64::try_from(totals.entries).unwrap_or(i64::MAX));
        m.queue_bytes.set(i64::try_from(totals.bytes).unwrap_or(i64::MAX));
        let service = MailService::new(queue.clone(), cfg.rules, cfg.schedule, clock.clone(), m.clone());
        let worker = DeliveryWorker::new(queue, deliverer, cfg.schedule, cfg.concurrency, clock, m)
            .with_attempt_timeout(cfg.attempt_timeout);
        Ok(MailExit { service, worker: tokio::spawn(worker.run()) })
    }

    /// The mail exit `[exit]` describes, with the queue in `data_dir`
    /// unless `exit.mail_queue_path` is set, delivering through a
    /// [`NetworkDeliverer`]. Warns when `exit.mail_allow_loopback` is on.
    pub fn from_section(exit: &ExitSection, data_dir: &Path, metrics: &Metrics) -> Result<MailExit, MailSetupError> {
        if exit.mail_allow_loopback {
            tracing::warn!(
                "exit.mail_allow_loopback is on: mail may be delivered to this host's loopback services; \
                 a setting for tests, never for a public exit"
            );
        }
        let deliverer = NetworkDeliverer::new(&NetworkConfig::from_section(exit)?, metrics)?;
        let cfg = MailExitConfig::from_section(exit, data_dir);
        let exit = MailExit::start(&cfg, Arc::new(deliverer), MailClock::system(), metrics)?;
        tracing::info!(queued = exit.service.queue().totals().entries, "exit: mail delivery on");
        Ok(exit)
    }
}
