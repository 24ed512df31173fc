//! Workers: the cryptographic stage, on N dedicated OS threads.
//!
//! Per packet, in this order (so a replay or a forgery costs as little as
//! possible): pick the epoch key the header's parity bit names; `peel_header`
//! (one X25519, the key schedule, a constant-time MAC check); look the replay
//! tag up in the replay cache of *that epoch key* and record it against the
//! sender's share (a sender over its share is shed, others served); only then
//! `finish` (header shift and the 32 KiB body pass). Tagged bodies are found at
//! the final hop by the integrity tag and dropped here.
//!
//! The result is scheduled for `min(sender's delay, mix.max_delay)` from now.
//! Workers never drop for lack of room: they wait on the mix queue, which
//! pushes back on ingest.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nox_protocol::sphinx::{Processed, SphinxError};
use prometheus_client::metrics::counter::Counter;

use super::{Action, Inbound, Scheduled};
use crate::epoch::{EpochKeyRing, unix_now};
use crate::metrics::Metrics;
use crate::replay::{ReplayCache, ReplayError};

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Threads.
    pub threads: usize,
    /// Capacity of the queue to the mix stage.
    pub queue: usize,
    /// Cap on the sender's delay.
    pub max_delay: Duration,
    /// Whether packets wait for their replay tag to be durable.
    pub durable_before_forward: bool,
}

struct WorkerMetrics {
    forward: Counter,
    final_: Counter,
    reply: Counter,
    no_key: Counter,
    bad_mac: Counter,
    malformed: Counter,
    replay: Counter,
    replay_full: Counter,
    replay_share: Counter,
    replay_unavailable: Counter,
    tagged: Counter,
}

impl WorkerMetrics {
    fn new(m: &Metrics) -> Self {
        WorkerMetrics {
            forward: m.packets("worker", "forward"),
            final_: m.packets("worker", "final"),
            reply: m.packets("worker", "reply"),
            no_key: m.dropped("worker", "no_epoch_key"),
            bad_mac: m.dropped("worker", "bad_mac"),
            malformed: m.dropped("worker", "malformed"),
            replay: m.dropped("worker", "replay"),
            replay_full: m.dropped("worker", "replay_cache_full"),
            replay_share: m.dropped("worker", "replay_share_exceeded"),
            replay_unavailable: m.dropped("worker", "replay_cache_unavailable"),
            tagged: m.dropped("worker", "tagged"),
        }
    }
}

/// Everything a worker thread needs.
#[derive(Clone)]
pub struct WorkerContext {
    /// Epoch keys.
    pub keys: Arc<RwLock<EpochKeyRing>>,
    /// Replay caches.
    pub replay: Arc<ReplayCache>,
    /// Metrics.
    pub metrics: Metrics,
    /// Set to stop the threads.
    pub stop: Arc<AtomicBool>,
    /// Where the workers report what they take from the input queue.
    pub room: Arc<super::ingest::QueueRoom>,
}

impl std::fmt::Debug for WorkerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerContext")
    }
}

/// The worker stage.
#[derive(Debug)]
pub struct WorkerStage;

impl WorkerStage {
    /// Starts `cfg.threads` workers reading `input`; returns their handles and
    /// the receiving end of the queue to the mix stage.
    pub fn spawn(
        cfg: &WorkerConfig,
        input: flume::Receiver<Inbound>,
        ctx: WorkerContext,
    ) -> std::io::Result<(Vec<JoinHandle<()>>, MixInput)> {
        // The queue holds batches; its bound in packets stays `cfg.queue`.
        let (tx, rx) = flume::bounded((cfg.queue / BATCH).max(1));
        let mut handles = Vec::new();
        for i in 0..cfg.threads.max(1) {
            let input = input.clone();
            let tx = tx.clone();
            let ctx = ctx.clone();
            let cfg = cfg.clone();
            let h = std::thread::Builder::new()
                .name(format!("nox-worker-{i}"))
                .spawn(move || run(&cfg, &input, &tx, &ctx))?;
            handles.push(h);
        }
        Ok((handles, rx))
    }
}

/// The mix stage's end of the workers' queue: batches of processed packets.
pub type MixInput = flume::Receiver<Vec<Scheduled>>;

/// Most packets a worker hands to the mix stage at once.
pub const BATCH: usize = 32;
/// Longest a worker keeps processed packets before handing them over.
const BATCH_TIME: Duration = Duration::from_millis(1);

/// Takes packets from `input` and hands what it processed to the mix stage in
/// batches: everything already queued, up to [`BATCH`] packets or
/// [`BATCH_TIME`] of work. A loaded node then wakes the mix thread once per
/// batch, not once per packet (on a shared core every wake-up is two context
/// switches); an idle node hands each packet over at once.
fn run(cfg: &WorkerConfig, input: &flume::Receiver<Inbound>, out: &flume::Sender<Vec<Scheduled>>, ctx: &WorkerContext) {
    let m = WorkerMetrics::new(&ctx.metrics);
    let mut batch = Vec::with_capacity(BATCH);
    while !ctx.stop.load(Ordering::Relaxed) {
        let inbound = match input.recv_timeout(Duration::from_millis(100)) {
            Ok(i) => i,
            Err(flume::RecvTimeoutError::Timeout) => continue,
            Err(flume::RecvTimeoutError::Disconnected) => break,
        };
        ctx.room.taken(input.len());
        let started = Instant::now();
        batch.extend(process(cfg, inbound, ctx, &m));
        while batch.len() < BATCH && started.elapsed() < BATCH_TIME {
            let Ok(inbound) = input.try_recv() else { break };
            ctx.room.taken(input.len());
            batch.extend(process(cfg, inbound, ctx, &m));
        }
        if !batch.is_empty() && out.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))).is_err() {
            break;
        }
    }
}

/// Processes one packet; `None` when it was dropped (and counted).
fn process(cfg: &WorkerConfig, inbound: Inbound, ctx: &WorkerContext, m: &WorkerMetrics) -> Option<Scheduled> {
    let Inbound { packet, sender } = inbound;
    let parity = packet.parity();
    let (epoch, peeled) = {
        let ring = ctx.keys.read().unwrap_or_else(|e| e.into_inner());
        let Some((epoch, key)) = ring.key_for(parity, unix_now()) else {
            m.no_key.inc();
            return None;
        };
        match packet.peel_header(key) {
            Ok(p) => (epoch, p),
            Err(SphinxError::MacMismatch) => {
                m.bad_mac.inc();
                return None;
            }
            Err(_) => {
                m.malformed.inc();
                return None;
            }
        }
    };
    let tag = peeled.replay_tag();
    let seq = match ctx.replay.check_and_insert_from(epoch, &tag.0, sender) {
        Ok(seq) => seq,
        Err(ReplayError::Replayed) => {
            m.replay.inc();
            return None;
        }
        Err(ReplayError::Full { .. }) => {
            m.replay_full.inc();
            return None;
        }
        // This sender holds its share of the cache; others are still served.
        Err(ReplayError::ShareExceeded { .. }) => {
            m.replay_share.inc();
            return None;
        }
        // No cache for the epoch, a persistence backlog, a failed commit or a
        // closed cache: fail closed.
        Err(_) => {
            m.replay_unavailable.inc();
            return None;
        }
    };
    let processed = match peeled.finish(packet) {
        Ok(p) => p,
        Err(SphinxError::TaggedBody) => {
            m.tagged.inc();
            return None;
        }
        Err(_) => {
            m.malformed.inc();
            return None;
        }
    };
    let (delay_us, action) = match processed {
        Processed::Forward { next, delay_us, packet } => {
            m.forward.inc();
            (delay_us, Action::Forward { next, packet })
        }
        Processed::Final { delay_us, payload } => {
            m.final_.inc();
            (delay_us, Action::Final { payload })
        }
        Processed::Reply { surb_id, delay_us, packet } => {
            m.reply.inc();
            (delay_us, Action::Reply { surb_id, packet })
        }
    };
    let delay = Duration::from_micros(u64::from(delay_us)).min(cfg.max_delay);
    Some(Scheduled {
        release_at: Instant::now() + delay,
        durable_seq: if cfg.durable_before_forward { seq } else { 0 },
        action,
        sender,
    })
}
