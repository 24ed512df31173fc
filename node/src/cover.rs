//! Cover traffic: loop and drop packets at Poisson rates.
//!
//! A node sends two cover streams, each a Poisson process:
//! * **loops** (`cover.loop_rate`): routed through one node of each *other*
//!   layer and back to this node as the final hop. A loop that comes home shows
//!   the layers it crossed are forwarding; the share that came home over the
//!   recent window is `nox_loop_reliability{layer}` for each layer crossed. A
//!   node that silently drops packets (an n−1 attack needs that) shows up as
//!   loops that do not return.
//! * **drops** (`cover.drop_rate`): routed through all three layers to a random
//!   exit, which discards them.
//!
//! Cover payloads are `nox_protocol::cover`'s format (clients send the same);
//! routes are chosen by `nox_protocol::route` from the topology's keys for the
//! current epoch; per-hop delays are exponential with mean
//! `cover.mean_delay_ms`, sampled here like a client samples its own.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use nox_protocol::NodeId;
use nox_protocol::cover::{COVER_ID_LEN, cover_id, drop_payload, loop_payload};
use nox_protocol::route::{RouteError, sample_delays};
use nox_protocol::sphinx::PacketBuilder;
use prometheus_client::metrics::counter::Counter;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::epoch::EpochKeyRing;
use crate::metrics::Metrics;
use crate::pipeline::Action;
use crate::topology::Topology;

/// Length of a loop id.
const LOOP_ID_LEN: usize = COVER_ID_LEN;
/// Loops remembered for the reliability window.
const WINDOW: usize = 256;
/// Most loops in flight.
const MAX_OUTSTANDING: usize = 4096;

/// Cover settings (`[cover]`).
#[derive(Debug, Clone)]
pub struct CoverConfig {
    /// Loops per second.
    pub loop_rate: f64,
    /// Drops per second.
    pub drop_rate: f64,
    /// Mean per-hop delay.
    pub mean_delay: Duration,
    /// When a loop counts as lost.
    pub loop_timeout: Duration,
}

struct Outstanding {
    sent: Instant,
    layers: Vec<u8>,
}

#[derive(Default)]
struct Inner {
    outstanding: HashMap<[u8; LOOP_ID_LEN], Outstanding>,
    /// Recent outcomes: (layers crossed, came home).
    window: VecDeque<(Vec<u8>, bool)>,
}

/// Loop bookkeeping, shared by the cover task and the exit stage.
pub struct CoverState {
    inner: Mutex<Inner>,
    metrics: Metrics,
}

impl std::fmt::Debug for CoverState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CoverState")
    }
}

impl CoverState {
    /// Empty state.
    pub fn new(metrics: Metrics) -> Self {
        CoverState { inner: Mutex::new(Inner::default()), metrics }
    }

    fn record(&self, inner: &mut Inner, layers: Vec<u8>, returned: bool) {
        inner.window.push_back((layers, returned));
        while inner.window.len() > WINDOW {
            inner.window.pop_front();
        }
        for layer in 0..3u8 {
            let (mut sent, mut back) = (0u32, 0u32);
            for (ls, ok) in &inner.window {
                if ls.contains(&layer) {
                    sent += 1;
                    back += u32::from(*ok);
                }
            }
            if sent > 0 {
                self.metrics.loop_reliability(layer_label(layer)).set(f64::from(back) / f64::from(sent));
            }
        }
    }

    fn sent(&self, id: [u8; LOOP_ID_LEN], layers: Vec<u8>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.outstanding.len() < MAX_OUTSTANDING {
            inner.outstanding.insert(id, Outstanding { sent: Instant::now(), layers });
        }
    }

    /// A cover payload arrived at this node as the final hop; `true` if it is
    /// one of this node's loops.
    pub fn loop_returned(&self, payload: &[u8]) -> bool {
        let Some(key) = cover_id(payload) else { return false };
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.outstanding.remove(&key) {
            Some(o) => {
                self.record(&mut inner, o.layers, true);
                true
            }
            None => false,
        }
    }

    /// Counts loops older than `timeout` as lost; returns how many.
    pub fn expire(&self, timeout: Duration) -> usize {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let lost: Vec<[u8; LOOP_ID_LEN]> =
            inner.outstanding.iter().filter(|(_, o)| now.duration_since(o.sent) > timeout).map(|(k, _)| *k).collect();
        for k in &lost {
            if let Some(o) = inner.outstanding.remove(k) {
                self.record(&mut inner, o.layers, false);
            }
        }
        lost.len()
    }

    /// Loops in flight.
    pub fn outstanding(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).outstanding.len()
    }
}

fn layer_label(layer: u8) -> &'static str {
    match layer {
        0 => "0",
        1 => "1",
        _ => "2",
    }
}

/// What the cover task needs.
#[derive(Clone)]
pub struct CoverContext {
    /// This node.
    pub self_id: NodeId,
    /// Its layer.
    pub self_layer: u8,
    /// Epoch keys (for the current epoch number).
    pub keys: Arc<RwLock<EpochKeyRing>>,
    /// Routes.
    pub topology: Arc<Topology>,
    /// Egress input.
    pub egress: flume::Sender<Action>,
    /// Loop bookkeeping.
    pub state: Arc<CoverState>,
    /// Metrics.
    pub metrics: Metrics,
}

impl std::fmt::Debug for CoverContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CoverContext")
    }
}

/// Why a cover packet could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoverError {
    /// No route: a layer has no node with a known key for this epoch.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// This node's own descriptor is not in the topology yet.
    #[error("own key for this epoch not known yet")]
    NoOwnKey,
    /// Packet construction failed.
    #[error("building the packet failed")]
    Build,
}

/// Builds one loop packet: through the other two layers and back to this node.
pub fn build_loop(
    ctx: &CoverContext,
    mean: Duration,
    rng: &mut ChaCha20Rng,
) -> Result<(Action, [u8; LOOP_ID_LEN], Vec<u8>), CoverError> {
    let epoch = ctx.keys.read().unwrap_or_else(|e| e.into_inner()).current_epoch();
    let own = ctx.topology.mix_key(&ctx.self_id, epoch).ok_or(CoverError::NoOwnKey)?;
    let (mut route, layers) = ctx.topology.route_set(epoch).cover_loop(ctx.self_id, ctx.self_layer, own, rng)?;
    sample_delays(&mut route, mean, rng);
    let mut id = [0u8; LOOP_ID_LEN];
    rng.fill(&mut id);
    let (next, packet) =
        PacketBuilder::new(epoch).forward(&route, &loop_payload(id), rng).map_err(|_| CoverError::Build)?;
    Ok((Action::Forward { next, packet }, id, layers))
}

/// Builds one drop packet: through all three layers (never this node) to a
/// random exit.
pub fn build_drop(ctx: &CoverContext, mean: Duration, rng: &mut ChaCha20Rng) -> Result<Action, CoverError> {
    let epoch = ctx.keys.read().unwrap_or_else(|e| e.into_inner()).current_epoch();
    let mut route = ctx.topology.route_set(epoch).stratified(None, &[ctx.self_id], rng)?;
    sample_delays(&mut route, mean, rng);
    let (next, packet) =
        PacketBuilder::new(epoch).forward(&route, &drop_payload(rng), rng).map_err(|_| CoverError::Build)?;
    Ok(Action::Forward { next, packet })
}

/// Runs the two Poisson streams until the egress queue closes.
pub async fn run(cfg: CoverConfig, ctx: CoverContext) {
    let mut rng = ChaCha20Rng::from_entropy();
    let sent_loop: Counter = ctx.metrics.packets("cover", "loop_sent");
    let sent_drop: Counter = ctx.metrics.packets("cover", "drop_sent");
    let unbuildable: Counter = ctx.metrics.dropped("cover", "no_route");
    let full: Counter = ctx.metrics.dropped("cover", "egress_full");
    let lost: Counter = ctx.metrics.packets("cover", "loop_lost");
    let next_in = |rng: &mut ChaCha20Rng, rate: f64| -> Option<Duration> {
        (rate > 0.0).then(|| {
            let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
            Duration::from_secs_f64((-u.ln() / rate).min(3600.0))
        })
    };
    let start = tokio::time::Instant::now();
    let mut next_loop = next_in(&mut rng, cfg.loop_rate).map(|d| start + d);
    let mut next_drop = next_in(&mut rng, cfg.drop_rate).map(|d| start + d);
    let mut expire = tokio::time::interval(Duration::from_secs(1));
    loop {
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            _ = tokio::time::sleep_until(next_loop.unwrap_or(far)), if next_loop.is_some() => {
                match build_loop(&ctx, cfg.mean_delay, &mut rng) {
                    Ok((action, id, layers)) => {
                        ctx.state.sent(id, layers);
                        if ctx.egress.try_send(action).is_ok() { sent_loop.inc(); } else { full.inc(); }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "no loop route");
                        unbuildable.inc();
                    }
                }
                next_loop = next_in(&mut rng, cfg.loop_rate).map(|d| tokio::time::Instant::now() + d);
            }
            _ = tokio::time::sleep_until(next_drop.unwrap_or(far)), if next_drop.is_some() => {
                match build_drop(&ctx, cfg.mean_delay, &mut rng) {
                    Ok(action) => if ctx.egress.try_send(action).is_ok() { sent_drop.inc(); } else { full.inc(); },
                    Err(_) => { unbuildable.inc(); }
                }
                next_drop = next_in(&mut rng, cfg.drop_rate).map(|d| tokio::time::Instant::now() + d);
            }
            _ = expire.tick() => {
                lost.inc_by(ctx.state.expire(cfg.loop_timeout) as u64);
                if ctx.egress.is_disconnected() { return; }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reliability_window_tracks_returns_per_layer() {
        let m = Metrics::new();
        let s = CoverState::new(m.clone());
        s.sent([1; 16], vec![1, 2]);
        s.sent([2; 16], vec![1, 2]);
        let payload = loop_payload([1; 16]);
        assert!(s.loop_returned(&payload));
        assert!(!s.loop_returned(&payload), "a loop counts once");
        assert_eq!(s.expire(Duration::ZERO), 1);
        assert_eq!(m.loop_reliability("1").get(), 0.5);
        assert_eq!(m.loop_reliability("2").get(), 0.5);
        assert_eq!(s.outstanding(), 0);
    }
}
