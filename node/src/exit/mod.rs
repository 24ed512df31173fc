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
//! * [`raw_broadcast`] — [`RawBroadcastService`]: user-signed transactions,
//!   checked, then `eth_sendRawTransaction`;
//! * [`rpc_call`] — [`RpcCallService`]: read-only JSON-RPC calls (method
//!   allowlist, bounded `eth_getLogs`);
//! * [`upstream`] — [`EthUpstream`]: the Ethereum endpoint of both, the
//!   exit's chain id, bounded JSON-RPC calls;
//! * [`eth_request`] — [`EthRequestService`]: paid calls, checked, simulated,
//!   priced and sent as `NoxPool.relay` from the exit's wallet, answered with
//!   the receipt; and the flush of the change notes it relayed;
//! * [`nonce`] — [`nonce::TxSender`]: the wallet's nonces and transactions,
//!   recorded durably before they are broadcast, reconciled after a restart;
//! * [`http`] — [`HttpService`]: HTTP GET/POST behind the [`ssrf`] guard, and
//!   its [`HttpAnswer`];
//! * [`mail`] — [`MailService`]: mail accepted into a durable queue and
//!   delivered by SMTP or NNTP in shuffled batch windows, with retries;
//! * [`outcomes`], [`capped_body`] — what the services share: outcome
//!   counters, a body read with a byte cap;
//! * [`reply`] — replies as SURB packets;
//! * [`book`] — [`ReplyBook`]: requests by id (a retry is answered, not
//!   performed again) and answers held for more SURBs.
//!
//! Bounds (`[exit]`): the reassembler's bytes, messages, fragments per
//! message, message length and stale timeout (a fragment that finds the
//! bytes or messages full makes room by dropping the stalest incomplete
//! messages, counted `exit/reassembly_evicted` per fragment, so a flood of
//! messages that never complete cannot shut new ones out); `exit.concurrency` requests
//! served at once (beyond it a request is answered `Busy` and counted
//! `exit/busy`); `exit.request_timeout_ms` from the message's completion to
//! the answer (beyond it the answer is `Timeout`); an answer longer than
//! `exit.reply_max_bytes` is replaced by a `BadRequest` that says so, whatever
//! the service (a service that knows its answer's size early refuses before
//! doing the work).
//!
//! ## Large answers: SURB replenishment
//!
//! A client attaches SURBs for the answer it expects. When the answer needs
//! more fragments than the request carried SURBs, the exit holds it (in the
//! [`ReplyBook`], for `exit.reply_cache_secs`) and spends one SURB on a
//! [`ReplyStatus::MoreSurbs`] reply naming how many more it needs; the
//! client sends them in a `SurbTopUp` envelope with the same request id, and
//! the answer leaves whole once the exit holds a SURB per fragment.
//!
//! ## Retries
//!
//! A client that gets no answer in time sends the same request again (same
//! request id, fresh route, fresh SURBs). The book answers a repeat from what
//! it holds: a request still being served answers over the repeat's SURBs, an
//! answered one is answered again, a held one takes the repeat's SURBs. A
//! request is performed at most once per exit while its id is in the book.
//! `Busy` answers are not remembered, so a retry after `Busy` is served.
//!
//! Every request gets an
//! answer if it carried SURBs: an unknown kind is `Unsupported`, a malformed
//! envelope gets none (it has no readable SURBs) and is counted
//! `exit/bad_envelope`.

pub mod book;
pub mod capped_body;
pub mod echo;
pub mod eth_request;
pub mod http;
pub mod mail;
pub mod nonce;
pub mod outcomes;
pub mod pool_queue;
pub mod raw_broadcast;
pub mod reply;
pub mod router;
pub mod rpc_call;
pub mod service;
pub mod ssrf;
pub mod upstream;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nox_protocol::fragment::{Fragmenter, Reassembled, Reassembler, ReassemblyLimits};
use nox_protocol::payload::{Envelope, Reply, ReplyStatus, Request, RequestKind};
use nox_protocol::sphinx::Payload;
use nox_protocol::sphinx::surb::Surb;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;

pub use self::book::{Arrival, BookLimits, ReplyBook};
pub use self::echo::EchoService;
pub use self::eth_request::{EthRequestConfig, EthRequestService, EthSetupError};
pub use self::http::{HttpAnswer, HttpConfig, HttpService};
pub use self::mail::{MailExit, MailService};
pub use self::raw_broadcast::RawBroadcastService;
pub use self::router::{ExitSetupError, ServiceRouter};
pub use self::rpc_call::{RpcCallConfig, RpcCallService};
pub use self::service::{ExitService, RequestContext, ServiceError};
pub use self::upstream::{EthUpstream, UpstreamConfig};

use self::reply::{ReplyError, reply_budget, reply_packets};
use crate::config::ExitSection;
use crate::metrics::Metrics;
use crate::pipeline::Action;

/// Most SURBs one answer can use: the fragmenter's largest size bucket.
pub const MAX_REPLY_FRAGMENTS: usize = 256;

/// The longest answer any exit can send: what [`MAX_REPLY_FRAGMENTS`] SURBs carry.
pub fn max_reply_bytes() -> usize {
    reply_budget(MAX_REPLY_FRAGMENTS)
}

/// Exit-stage settings (`[exit]`).
#[derive(Debug, Clone)]
pub struct ExitConfig {
    /// Reassembly bounds.
    pub limits: ReassemblyLimits,
    /// Requests served at once.
    pub concurrency: usize,
    /// From a complete message to its answer.
    pub request_timeout: Duration,
    /// The same for an `EthRequest` (checks, simulation and inclusion).
    pub eth_request_timeout: Duration,
    /// The reply book's bounds.
    pub book: BookLimits,
    /// Longest answer sent back (at most [`max_reply_bytes`]).
    pub reply_max_bytes: usize,
}

impl Default for ExitConfig {
    fn default() -> Self {
        (&ExitSection::default()).into()
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
            eth_request_timeout: Duration::from_secs(c.eth_request_timeout_secs),
            book: BookLimits {
                entries: c.reply_cache_entries,
                bytes: c.reply_cache_bytes,
                ttl: Duration::from_secs(c.reply_cache_secs),
            },
            reply_max_bytes: c.reply_max_bytes.min(max_reply_bytes()),
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
    repeat: Counter,
    held: Counter,
    top_up: Counter,
    top_up_unknown: Counter,
    book_evicted: Counter,
    reassembly_evicted: Counter,
    metrics: Metrics,
}

impl ExitMetrics {
    fn answered(&self, status: ReplyStatus) {
        if status == ReplyStatus::Ok { &self.served } else { &self.service_failed }.inc();
        self.metrics.event("exit_reply", status.label()).inc();
    }
}

/// Everything a request's task shares with the stage.
struct Shared {
    ctx: ExitContext,
    m: ExitMetrics,
    book: Mutex<ReplyBook>,
    reply_max_bytes: usize,
}

impl Shared {
    fn book(&self) -> std::sync::MutexGuard<'_, ReplyBook> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The exit stage.
#[derive(Debug)]
pub struct ExitStage;

impl ExitStage {
    /// Runs until `input` closes.
    pub async fn run(cfg: ExitConfig, input: flume::Receiver<Payload>, ctx: ExitContext) {
        let mm = ctx.metrics.clone();
        let shared = Arc::new(Shared {
            m: ExitMetrics {
                served: mm.packets("exit", "served"),
                service_failed: mm.packets("exit", "service_failed"),
                fragment: mm.packets("exit", "fragment"),
                bad_fragment: mm.dropped("exit", "bad_fragment"),
                bad_envelope: mm.dropped("exit", "bad_envelope"),
                busy: mm.dropped("exit", "busy"),
                reply_packets: mm.packets("exit", "reply_packets"),
                short_of_surbs: mm.dropped("exit", "short_of_surbs"),
                reply_unbuildable: mm.dropped("exit", "reply_unbuildable"),
                repeat: mm.packets("exit", "repeat"),
                held: mm.packets("exit", "held_for_surbs"),
                top_up: mm.packets("exit", "surb_top_up"),
                top_up_unknown: mm.dropped("exit", "top_up_unknown"),
                book_evicted: mm.dropped("exit", "book_evicted"),
                reassembly_evicted: mm.dropped("exit", "reassembly_evicted"),
                metrics: mm,
            },
            ctx,
            book: Mutex::new(ReplyBook::new(cfg.book)),
            reply_max_bytes: cfg.reply_max_bytes,
        });
        let mut reassembler = Reassembler::new(cfg.limits);
        let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
        while let Ok(payload) = input.recv_async().await {
            let now = Instant::now();
            reassembler.expire(now);
            let inserted = reassembler.insert(payload.as_bytes(), now);
            // Fragments of the stalest incomplete messages, dropped to make room.
            shared.m.reassembly_evicted.inc_by(reassembler.take_evicted() as u64);
            let message = match inserted {
                Ok(Reassembled::Complete(msg)) => msg,
                Ok(_) => {
                    shared.m.fragment.inc();
                    continue;
                }
                Err(_) => {
                    shared.m.bad_fragment.inc();
                    continue;
                }
            };
            let Ok(Envelope { request_id, surbs, request }) = Envelope::decode(&message) else {
                shared.m.bad_envelope.inc();
                continue;
            };
            if request == Request::SurbTopUp {
                shared.m.top_up.inc();
                let arrival = shared.book().top_up(request_id, surbs, now);
                settle(arrival, &shared).await;
                continue;
            }
            let arrival = shared.book().arrive(request_id, surbs, now);
            if !matches!(arrival, Arrival::Serve) {
                shared.m.repeat.inc();
                settle(arrival, &shared).await;
                continue;
            }
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                shared.m.busy.inc();
                // Say so, so the client can try another exit at once; a
                // retry here later is served afresh.
                let surbs = {
                    let mut book = shared.book();
                    let surbs = book.take_surbs(&request_id);
                    book.forget(&request_id);
                    surbs
                };
                let reply = Reply { request_id, status: ReplyStatus::Busy, data: b"exit at capacity".to_vec() };
                send_reply(&reply, surbs, &shared).await;
                continue;
            };
            let shared = shared.clone();
            // A paid call waits for its inclusion: it has a deadline of its own.
            let timeout = match request.kind() {
                RequestKind::EthRequest => cfg.eth_request_timeout,
                _ => cfg.request_timeout,
            };
            let deadline = now + timeout;
            tokio::spawn(async move {
                let _permit = permit;
                serve(request_id, request, deadline, &shared).await;
            });
        }
    }
}

/// Acts on what the book said of a repeat or a top-up.
async fn settle(arrival: Arrival, shared: &Shared) {
    match arrival {
        Arrival::Serve | Arrival::InFlight | Arrival::StillShort { .. } => {}
        Arrival::Unknown => {
            shared.m.top_up_unknown.inc();
        }
        Arrival::Answered(reply, surbs) => deliver(reply, surbs, shared).await,
        Arrival::Release(reply, surbs) => {
            let packets = reply_packets(&reply, surbs);
            send_packets(packets, shared).await;
        }
    }
}

async fn serve(request_id: [u8; 16], request: Request, deadline: Instant, shared: &Shared) {
    let kind = request.kind();
    let budget = shared.reply_max_bytes;
    let rctx = RequestContext { request_id, kind, reply_budget: budget, deadline };
    let outcome = match shared.ctx.services.route(kind) {
        None => Err(ServiceError::Unsupported(kind.name())),
        Some(service) => {
            let wait = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(wait, service.serve(rctx, request)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(ServiceError::Timeout),
            }
        }
    };
    // An answer no SURBs could carry would be lost on the way back: say so instead.
    let outcome = outcome.and_then(|data| match data.len() {
        needed if needed > budget => Err(ServiceError::ReplyTooLarge { needed, budget }),
        _ => Ok(data),
    });
    let reply = match outcome {
        Ok(data) => Reply { request_id, status: ReplyStatus::Ok, data },
        Err(e) => Reply { request_id, status: e.status(), data: e.reply_data() },
    };
    shared.m.answered(reply.status);
    let surbs = shared.book().take_surbs(&request_id);
    deliver(reply, surbs, shared).await;
}

/// Sends `reply` over `surbs` if they are enough; otherwise holds it in the
/// book and asks for the rest with one of them.
async fn deliver(reply: Reply, mut surbs: Vec<Surb>, shared: &Shared) {
    let now = Instant::now();
    let id = reply.request_id;
    // Counted from the length: the reply is encoded once, when its packets are built.
    let fragments = match Fragmenter::default().fragment_count(reply.encoded_len()) {
        Ok(n) => n,
        Err(_) => {
            shared.m.reply_unbuildable.inc();
            return;
        }
    };
    if surbs.is_empty() || fragments <= surbs.len() {
        shared.book().answered(id, reply.clone(), now);
        send_reply(&reply, surbs, shared).await;
        return;
    }
    // One SURB carries the request for more; the rest wait with the answer.
    let Some(ask) = surbs.pop() else { return };
    let more = fragments - surbs.len();
    let held = {
        let mut book = shared.book();
        let held = book.hold(id, reply, surbs, fragments, now);
        shared.m.book_evicted.inc_by(book.take_evicted());
        held
    };
    if held {
        shared.m.held.inc();
        let more = u16::try_from(more).unwrap_or(u16::MAX);
        send_reply(&Reply::more_surbs(id, more), vec![ask], shared).await;
    } else {
        let refusal = Reply {
            request_id: id,
            status: ReplyStatus::BadRequest,
            data: b"the answer is larger than this exit can hold for more SURBs".to_vec(),
        };
        send_reply(&refusal, vec![ask], shared).await;
    }
}

async fn send_reply(reply: &Reply, surbs: Vec<Surb>, shared: &Shared) {
    send_packets(reply_packets(reply, surbs), shared).await;
}

async fn send_packets(packets: Result<Vec<Action>, ReplyError>, shared: &Shared) {
    let m = &shared.m;
    match packets {
        Ok(packets) => {
            for action in packets {
                if shared.ctx.egress.send_async(action).await.is_ok() {
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
