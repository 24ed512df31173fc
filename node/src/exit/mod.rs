//! The exit stage: client messages at an exit node, from fragments to the
//! service that answers them and back through the SURBs.
//!
//! ```text
//! delivery stage ──fragments──► Reassembler ──message──► Envelope::decode ──► ServiceRouter
//!   (crate::delivery)            (exit.max_*)                                   │ kind → ExitService
//!                                                                               ▼
//!                   egress ◄── SURB packets ◄── reply::reply_packets ◄── Reply { status, data }
//! ```
//!
//! * [`service`] — the [`ExitService`] trait: a request with its
//!   [`RequestContext`] (id, reply budget, deadline) in, the answer or a typed
//!   [`ServiceError`] out;
//! * [`router`] — [`ServiceRouter`]: request kind → service;
//! * [`echo`] — [`EchoService`];
//! * [`reply`] — replies as SURB packets.
//!
//! Bounds (`[exit]`): the reassembler's bytes, messages, fragments per
//! message, message length and stale timeout; `exit.concurrency` requests
//! served at once (beyond it a request is answered `Busy` and counted
//! `exit/busy`); `exit.request_timeout_ms` from the message's completion to
//! the answer (beyond it the answer is `Timeout`); an answer longer than the
//! request's SURBs carry is replaced by a `BadRequest` that says so, whatever
//! the service (a service that knows its answer's size early refuses before
//! doing the work). Every request gets an
//! answer if it carried SURBs: an unknown kind is `Unsupported`, a malformed
//! envelope gets none (it has no readable SURBs) and is counted
//! `exit/bad_envelope`.

pub mod echo;
pub mod reply;
pub mod router;
pub mod service;

use std::sync::Arc;
use std::time::{Duration, Instant};

use nox_protocol::fragment::{Reassembled, Reassembler, ReassemblyLimits};
use nox_protocol::payload::{Envelope, Reply, ReplyStatus};
use nox_protocol::sphinx::Payload;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;

pub use self::echo::EchoService;
pub use self::router::ServiceRouter;
pub use self::service::{ExitService, RequestContext, ServiceError};

use self::reply::{ReplyError, reply_budget, reply_packets};
use crate::config::ExitSection;
use crate::metrics::Metrics;
use crate::pipeline::Action;

/// Exit-stage settings (`[exit]`).
#[derive(Debug, Clone)]
pub struct ExitConfig {
    /// Reassembly bounds.
    pub limits: ReassemblyLimits,
    /// Requests served at once.
    pub concurrency: usize,
    /// From a complete message to its answer.
    pub request_timeout: Duration,
}

impl Default for ExitConfig {
    fn default() -> Self {
        ExitConfig { limits: ReassemblyLimits::default(), concurrency: 256, request_timeout: Duration::from_secs(30) }
    }
}

impl From<&ExitSection> for ExitConfig {
    fn from(c: &ExitSection) -> Self {
        ExitConfig {
            limits: ReassemblyLimits {
                max_bytes: c.reassembly_max_bytes,
                max_messages: c.reassembly_max_messages,
                max_fragments_per_message: c.reassembly_max_fragments,
                max_message_len: c.reassembly_max_message_bytes,
                stale_after: Duration::from_secs(c.reassembly_stale_secs),
                completed_memory: ReassemblyLimits::default().completed_memory,
            },
            concurrency: c.concurrency,
            request_timeout: Duration::from_millis(c.request_timeout_ms),
        }
    }
}

/// What the exit stage talks to.
#[derive(Clone)]
pub struct ExitContext {
    /// Request kind → service.
    pub services: ServiceRouter,
    /// Egress input, for replies.
    pub egress: flume::Sender<Action>,
    /// Metrics.
    pub metrics: Metrics,
}

impl std::fmt::Debug for ExitContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExitContext").field("services", &self.services).finish_non_exhaustive()
    }
}

struct ExitMetrics {
    served: Counter,
    service_failed: Counter,
    fragment: Counter,
    bad_fragment: Counter,
    bad_envelope: Counter,
    busy: Counter,
    reply_packets: Counter,
    short_of_surbs: Counter,
    reply_unbuildable: Counter,
    metrics: Metrics,
}

impl ExitMetrics {
    fn answered(&self, status: ReplyStatus) {
        if status == ReplyStatus::Ok { &self.served } else { &self.service_failed }.inc();
        self.metrics.event("exit_reply", status.label()).inc();
    }
}

/// The exit stage.
#[derive(Debug)]
pub struct ExitStage;

impl ExitStage {
    /// Runs until `input` closes.
    pub async fn run(cfg: ExitConfig, input: flume::Receiver<Payload>, ctx: ExitContext) {
        let mm = &ctx.metrics;
        let m = Arc::new(ExitMetrics {
            served: mm.packets("exit", "served"),
            service_failed: mm.packets("exit", "service_failed"),
            fragment: mm.packets("exit", "fragment"),
            bad_fragment: mm.dropped("exit", "bad_fragment"),
            bad_envelope: mm.dropped("exit", "bad_envelope"),
            busy: mm.dropped("exit", "busy"),
            reply_packets: mm.packets("exit", "reply_packets"),
            short_of_surbs: mm.dropped("exit", "short_of_surbs"),
            reply_unbuildable: mm.dropped("exit", "reply_unbuildable"),
            metrics: mm.clone(),
        });
        let mut reassembler = Reassembler::new(cfg.limits);
        let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
        while let Ok(payload) = input.recv_async().await {
            let now = Instant::now();
            reassembler.expire(now);
            let message = match reassembler.insert(payload.as_bytes(), now) {
                Ok(Reassembled::Complete(msg)) => msg,
                Ok(_) => {
                    m.fragment.inc();
                    continue;
                }
                Err(_) => {
                    m.bad_fragment.inc();
                    continue;
                }
            };
            let envelope = match Envelope::decode(&message) {
                Ok(e) => e,
                Err(_) => {
                    m.bad_envelope.inc();
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                m.busy.inc();
                // Say so, so the client can try another exit at once.
                let Envelope { request_id, surbs, .. } = envelope;
                let reply = Reply { request_id, status: ReplyStatus::Busy, data: b"exit at capacity".to_vec() };
                send_reply(&reply, surbs, &ctx, &m).await;
                continue;
            };
            let (ctx, m) = (ctx.clone(), m.clone());
            let deadline = now + cfg.request_timeout;
            tokio::spawn(async move {
                let _permit = permit;
                serve(envelope, deadline, &ctx, &m).await;
            });
        }
    }
}

async fn serve(envelope: Envelope, deadline: Instant, ctx: &ExitContext, m: &ExitMetrics) {
    let Envelope { request_id, surbs, request } = envelope;
    let kind = request.kind();
    let budget = reply_budget(surbs.len());
    let rctx = RequestContext { request_id, kind, reply_budget: budget, deadline };
    let outcome = match ctx.services.route(kind) {
        None => Err(ServiceError::Unsupported(kind.name())),
        Some(service) => {
            let wait = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(wait, service.serve(rctx, request)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(ServiceError::Timeout),
            }
        }
    };
    // An answer the SURBs cannot carry would be lost on the way back: say so instead.
    let outcome = outcome.and_then(|data| match data.len() {
        needed if needed > budget => Err(ServiceError::ReplyTooLarge { needed, budget }),
        _ => Ok(data),
    });
    let reply = match outcome {
        Ok(data) => Reply { request_id, status: ReplyStatus::Ok, data },
        Err(e) => Reply { request_id, status: e.status(), data: e.to_string().into_bytes() },
    };
    m.answered(reply.status);
    send_reply(&reply, surbs, ctx, m).await;
}

async fn send_reply(reply: &Reply, surbs: Vec<nox_protocol::sphinx::surb::Surb>, ctx: &ExitContext, m: &ExitMetrics) {
    match reply_packets(reply, surbs) {
        Ok(packets) => {
            for action in packets {
                if ctx.egress.send_async(action).await.is_ok() {
                    m.reply_packets.inc();
                }
            }
        }
        // A request without SURBs wants no answer.
        Err(ReplyError::NoSurbs) => {}
        Err(ReplyError::ShortOfSurbs { .. }) => {
            m.short_of_surbs.inc();
        }
        Err(ReplyError::Unbuildable) => {
            m.reply_unbuildable.inc();
        }
    }
}
