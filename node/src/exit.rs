//! The exit stage: what happens to a payload at the last hop.
//!
//! A final payload is one of three things:
//! * cover (first byte [`crate::cover::COVER_KIND`]): a loop of this node's
//!   coming home, or another node's drop packet — counted, then discarded;
//! * a fragment of a client message (first byte = fragment version): fed to a
//!   bounded [`Reassembler`]; a complete message is decoded as an [`Envelope`]
//!   and its request handed to the [`ExitService`];
//! * anything else: dropped and counted.
//!
//! The service's answer goes back as a `Reply` envelope, fragmented (with
//! Reed–Solomon parity when it needs more than one packet) and sent through the
//! SURBs the request carried, one SURB per fragment. Relays (layers 0 and 1)
//! only ever expect cover as a final payload; client payloads reaching them are
//! dropped (`not_exit`).

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use nox_protocol::fragment::{Fragmenter, Reassembled, Reassembler, ReassemblyLimits};
use nox_protocol::payload::{Envelope, Request};
use nox_protocol::sphinx::Payload;
use prometheus_client::metrics::counter::Counter;
use rand::RngCore;
use tokio::sync::Semaphore;

use crate::cover::{COVER_KIND, CoverState};
use crate::metrics::Metrics;
use crate::pipeline::Action;

/// Why a service could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExitError {
    /// This exit does not offer the requested service.
    #[error("request kind not supported by this exit")]
    Unsupported,
    /// The service failed.
    #[error("service failed: {0}")]
    Failed(String),
}

/// A service an exit offers. Implementations: [`EchoService`] now; Ethereum
/// execution, RPC, HTTP and mail arrive with their issues.
pub trait ExitService: Send + Sync + 'static {
    /// Handles one request; the returned bytes are the reply's data.
    fn handle(&self, request: Request) -> BoxFuture<'static, Result<Vec<u8>, ExitError>>;
}

/// Answers `Echo` with its data; refuses everything else.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoService;

impl ExitService for EchoService {
    fn handle(&self, request: Request) -> BoxFuture<'static, Result<Vec<u8>, ExitError>> {
        Box::pin(async move {
            match request {
                Request::Echo { data } => Ok(data),
                _ => Err(ExitError::Unsupported),
            }
        })
    }
}

/// Exit-stage settings.
#[derive(Debug, Clone)]
pub struct ExitConfig {
    /// Whether this node is an exit (layer 2).
    pub is_exit: bool,
    /// Reassembly bounds.
    pub limits: ReassemblyLimits,
    /// Requests served at once.
    pub concurrency: usize,
}

/// What the exit stage talks to.
#[derive(Clone)]
pub struct ExitContext {
    /// The service.
    pub service: Arc<dyn ExitService>,
    /// Egress input, for replies.
    pub egress: flume::Sender<Action>,
    /// Loop bookkeeping.
    pub cover: Arc<CoverState>,
    /// Metrics.
    pub metrics: Metrics,
}

impl std::fmt::Debug for ExitContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExitContext")
    }
}

struct ExitMetrics {
    cover_loop: Counter,
    cover_other: Counter,
    not_exit: Counter,
    fragment: Counter,
    bad_fragment: Counter,
    bad_envelope: Counter,
    served: Counter,
    failed: Counter,
    reply_packets: Counter,
    short_of_surbs: Counter,
    reply_unbuildable: Counter,
    busy: Counter,
}

/// The exit stage.
#[derive(Debug)]
pub struct ExitStage;

impl ExitStage {
    /// Runs until `input` closes.
    pub async fn run(cfg: ExitConfig, input: flume::Receiver<Payload>, ctx: ExitContext) {
        let mm = &ctx.metrics;
        let m = Arc::new(ExitMetrics {
            cover_loop: mm.packets("exit", "loop_returned"),
            cover_other: mm.packets("exit", "cover_received"),
            not_exit: mm.dropped("exit", "not_exit"),
            fragment: mm.packets("exit", "fragment"),
            bad_fragment: mm.dropped("exit", "bad_fragment"),
            bad_envelope: mm.dropped("exit", "bad_envelope"),
            served: mm.packets("exit", "served"),
            failed: mm.packets("exit", "service_failed"),
            reply_packets: mm.packets("exit", "reply_packets"),
            short_of_surbs: mm.dropped("exit", "short_of_surbs"),
            reply_unbuildable: mm.dropped("exit", "reply_unbuildable"),
            busy: mm.dropped("exit", "busy"),
        });
        let mut reassembler = Reassembler::new(cfg.limits);
        let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
        while let Ok(payload) = input.recv_async().await {
            let bytes = payload.as_bytes();
            if bytes.first() == Some(&COVER_KIND) {
                if ctx.cover.loop_returned(bytes) {
                    m.cover_loop.inc();
                } else {
                    m.cover_other.inc();
                }
                continue;
            }
            if !cfg.is_exit {
                m.not_exit.inc();
                continue;
            }
            let now = Instant::now();
            reassembler.expire(now);
            let message = match reassembler.insert(bytes, now) {
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
                continue;
            };
            let ctx = ctx.clone();
            let m = m.clone();
            tokio::spawn(async move {
                let _permit = permit;
                serve(envelope, &ctx, &m).await;
            });
        }
    }
}

async fn serve(envelope: Envelope, ctx: &ExitContext, m: &ExitMetrics) {
    let Envelope { request_id, surbs, request } = envelope;
    let (status, data) = match ctx.service.handle(request).await {
        Ok(d) => {
            m.served.inc();
            (0u8, d)
        }
        Err(ExitError::Unsupported) => {
            m.failed.inc();
            (1u8, b"unsupported".to_vec())
        }
        Err(ExitError::Failed(why)) => {
            m.failed.inc();
            (2u8, why.into_bytes())
        }
    };
    if surbs.is_empty() {
        return;
    }
    let reply = Envelope { request_id, surbs: Vec::new(), request: Request::Reply { status, data } };
    // A reply the envelope or the fragmenter refuses (too large, say), or a
    // SURB that cannot carry its fragment, is `reply_unbuildable`.
    let Ok(encoded) = reply.encode() else {
        m.reply_unbuildable.inc();
        return;
    };
    let mut id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let Ok(fragments) = Fragmenter::default().split(&encoded, id) else {
        m.reply_unbuildable.inc();
        return;
    };
    if fragments.len() > surbs.len() {
        // Without a SURB per fragment the client could not reassemble (unless
        // parity covers the gap, which the fragmenter's count already includes).
        m.short_of_surbs.inc();
        return;
    }
    for (surb, fragment) in surbs.into_iter().zip(fragments) {
        match surb.into_packet(&fragment) {
            Ok((next, packet)) => {
                if ctx.egress.send_async(Action::Forward { next, packet }).await.is_ok() {
                    m.reply_packets.inc();
                }
            }
            Err(_) => {
                m.reply_unbuildable.inc();
            }
        }
    }
}
