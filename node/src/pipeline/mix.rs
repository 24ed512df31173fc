//! Mix: holds each packet for the delay its sender chose (capped), optionally
//! pools released packets in a batch window, and only then lets them go.
//!
//! Loopix-style mixing needs the node to honour per-packet exponential delays
//! chosen by the sender: the timer queue does that, on its own thread with a
//! binary heap and `recv_deadline`, so a release is late by scheduler jitter
//! (microseconds), not by a timer wheel's millisecond tick. The optional batch
//! window (Fog-style) collects released packets for `W`, shuffles them with a
//! CSPRNG and sends them out together, so arrival order within a window says
//! nothing about departure order.
//!
//! A packet also waits for its replay tag to be on disk when the replay cache
//! runs with `durable_before_forward`: a node that crashes and restarts must
//! not forward a packet it already forwarded.
//!
//! Bounds: at most `capacity` packets are held (heap + batch); beyond that new
//! packets are dropped and counted as `mix_full`. The output queue to egress is
//! bounded too; when it is full the packet is dropped (`egress_full`) rather
//! than delaying every other packet's release.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;

use super::{Action, Scheduled};
use crate::metrics::Metrics;
use crate::replay::ReplayCache;

/// Mix settings (`[mix]`).
#[derive(Debug, Clone)]
pub struct MixConfig {
    /// Most packets held.
    pub capacity: usize,
    /// Batch window; `None` releases each packet at its time.
    pub batch_window: Option<Duration>,
}

struct Held {
    at: Instant,
    order: u64,
    item: Scheduled,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.order == other.order
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    // Reversed: BinaryHeap is a max-heap and we want the earliest first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.at.cmp(&self.at).then_with(|| other.order.cmp(&self.order))
    }
}

/// The mix stage.
#[derive(Debug)]
pub struct MixStage;

struct MixMetrics {
    released: Counter,
    mix_full: Counter,
    egress_full: Counter,
    held: Gauge,
    pending_durable: Gauge,
}

impl MixStage {
    /// Starts the mix thread, releasing into `tx` (the egress queue, which
    /// cover traffic, exit replies and claimed replies share).
    pub fn spawn(
        cfg: MixConfig,
        input: flume::Receiver<Scheduled>,
        tx: flume::Sender<Action>,
        replay: Option<Arc<ReplayCache>>,
        metrics: &Metrics,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<JoinHandle<()>> {
        let m = MixMetrics {
            released: metrics.packets("mix", "released"),
            mix_full: metrics.dropped("mix", "mix_full"),
            egress_full: metrics.dropped("mix", "egress_full"),
            held: metrics.queue_depth("mix_held"),
            pending_durable: metrics.pending_durable(),
        };
        let h = std::thread::Builder::new()
            .name("nox-mix".into())
            .spawn(move || run(&cfg, &input, &tx, replay.as_deref(), &m, &stop))?;
        Ok(h)
    }
}

fn run(
    cfg: &MixConfig,
    input: &flume::Receiver<Scheduled>,
    out: &flume::Sender<Action>,
    replay: Option<&ReplayCache>,
    m: &MixMetrics,
    stop: &AtomicBool,
) {
    let mut heap: BinaryHeap<Held> = BinaryHeap::new();
    let mut batch: Vec<Action> = Vec::new();
    let mut order = 0u64;
    let mut rng = ChaCha20Rng::from_entropy();
    let mut next_batch = cfg.batch_window.map(|w| Instant::now() + w);
    let send = |a: Action| {
        if out.try_send(a).is_ok() {
            m.released.inc();
        } else {
            m.egress_full.inc();
        }
    };
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        // Wake for the earliest of: the next release, the batch boundary, a
        // periodic stop check.
        let now = Instant::now();
        let mut wake = now + Duration::from_millis(100);
        if let Some(top) = heap.peek() {
            wake = wake.min(top.at);
        }
        if let Some(b) = next_batch {
            wake = wake.min(b);
        }
        let received = if wake > now {
            match input.recv_deadline(wake) {
                Ok(s) => Some(s),
                Err(flume::RecvTimeoutError::Timeout) => None,
                Err(flume::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            input.try_recv().ok()
        };
        if let Some(s) = received {
            let mut admit = |s: Scheduled| {
                if heap.len() + batch.len() >= cfg.capacity {
                    m.mix_full.inc();
                } else {
                    order += 1;
                    heap.push(Held { at: s.release_at, order, item: s });
                }
            };
            admit(s);
            // Drain what is already queued without waiting.
            while let Ok(s) = input.try_recv() {
                admit(s);
            }
        }
        // Release everything that is due.
        let now = Instant::now();
        while heap.peek().is_some_and(|h| h.at <= now) {
            let Some(held) = heap.pop() else { break };
            if let Some(cache) = replay
                && held.item.durable_seq > cache.durable_seq()
            {
                m.pending_durable.inc();
                // Group commit is continuous, so this waits for at most one
                // commit; the bound keeps a stuck disk from freezing the node.
                let durable = cache.wait_durable(held.item.durable_seq, Duration::from_secs(5));
                m.pending_durable.dec();
                if !durable {
                    tracing::warn!("replay tag not durable in time; holding the packet");
                    heap.push(held);
                    break;
                }
            }
            match cfg.batch_window {
                Some(_) => batch.push(held.item.action),
                None => send(held.item.action),
            }
        }
        if let (Some(w), Some(at)) = (cfg.batch_window, next_batch)
            && Instant::now() >= at
        {
            batch.shuffle(&mut rng);
            for a in batch.drain(..) {
                send(a);
            }
            next_batch = Some(at + w);
        }
        m.held.set((heap.len() + batch.len()) as i64);
    }
}
