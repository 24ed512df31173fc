//! [`MailService`]: the `Mail` request's [`ExitService`]. It checks and
//! prepares the message ([`super::accept::prepare`]), writes it durably into
//! the [`MailQueue`] with its request id, and only then answers `Ok` with
//! [`ACK`]. A request id already accepted is answered [`ACK`] again without a
//! second entry. Delivery is the worker's business: the answer says the exit
//! holds the message, not that it arrived.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use futures::future::BoxFuture;
use nox_protocol::payload::{MailTransport, Request};

use super::accept::{MailRefusal, prepare};
use super::config::AcceptRules;
use super::queue::{Accepted, MailQueue, QueueError};
use super::schedule::{MailClock, Schedule};
use crate::exit::service::{ExitService, RequestContext, ServiceError};
use crate::metrics::MailMetrics;

/// The answer's data when a message is queued (or was already).
pub const ACK: &[u8] = b"queued";

/// Answers `Mail` requests (see the module docs).
#[derive(Clone)]
pub struct MailService {
    inner: Arc<Inner>,
}

struct Inner {
    queue: MailQueue,
    rules: AcceptRules,
    schedule: Schedule,
    clock: MailClock,
    metrics: MailMetrics,
}

impl std::fmt::Debug for MailService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailService").field("rules", &self.inner.rules).finish_non_exhaustive()
    }
}

impl MailService {
    /// A service that accepts by `rules` into `queue`, dating entries by
    /// `clock` and `schedule`.
    pub fn new(
        queue: MailQueue,
        rules: AcceptRules,
        schedule: Schedule,
        clock: MailClock,
        metrics: MailMetrics,
    ) -> MailService {
        for reason in MailRefusal::REASONS {
            let _ = metrics.refused(reason);
        }
        MailService { inner: Arc::new(Inner { queue, rules, schedule, clock, metrics }) }
    }

    /// The queue it writes to.
    pub fn queue(&self) -> &MailQueue {
        &self.inner.queue
    }
}

impl Inner {
    /// Blocks on the disk.
    fn accept(
        &self,
        request_id: [u8; 16],
        transport: MailTransport,
        recipients: Vec<String>,
        padded: &[u8],
    ) -> Result<Accepted, MailRefusal> {
        let now = self.clock.now_ms();
        let mail = prepare(&self.rules, transport, recipients, padded, UNIX_EPOCH + Duration::from_millis(now))?;
        let due = self.schedule.due_after_accept(now);
        let expiry = self.schedule.id_expiry(now);
        match self.queue.accept(request_id, &mail, due, expiry, now) {
            Ok(a) => Ok(a),
            Err(QueueError::Full { .. }) => Err(MailRefusal::QueueFull),
            Err(e) => {
                tracing::warn!(error = %e, "mail exit: a message could not be queued");
                Err(MailRefusal::Storage)
            }
        }
    }

    fn publish_totals(&self) {
        let t = self.queue.totals();
        self.metrics.queue_entries.set(i64::try_from(t.entries).unwrap_or(i64::MAX));
        self.metrics.queue_bytes.set(i64::try_from(t.bytes).unwrap_or(i64::MAX));
    }
}

impl ExitService for MailService {
    fn name(&self) -> &'static str {
        "mail"
    }

    fn serve(&self, ctx: RequestContext, request: Request) -> BoxFuture<'static, Result<Vec<u8>, ServiceError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let Request::Mail { transport, recipients, message } = request else {
                return Err(ServiceError::Unsupported(request.kind().name()));
            };
            // Scrubbing and the durable commit both block.
            let job = {
                let inner = inner.clone();
                tokio::task::spawn_blocking(move || inner.accept(ctx.request_id, transport, recipients, &message))
            };
            let outcome = job.await.unwrap_or(Err(MailRefusal::Storage));
            let m = &inner.metrics;
            match outcome {
                Ok(Accepted::Queued) => {
                    m.accepted.inc();
                    inner.publish_totals();
                    Ok(ACK.to_vec())
                }
                Ok(Accepted::Duplicate) => {
                    m.duplicate.inc();
                    Ok(ACK.to_vec())
                }
                Err(r) => {
                    m.refused(r.reason()).inc();
                    Err(r.into())
                }
            }
        })
    }
}
