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
//! Cover payloads start with [`COVER_KIND`] (a value no fragment starts with)
//! and are otherwise random; inside the mixnet they are packets like any other.
//! Per-hop delays are exponential with mean `cover.mean_delay_ms`, like a
//! client's.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use nox_protocol::NodeId;
use nox_protocol::sphinx::{Hop, PacketBuilder};
use prometheus_client::metrics::counter::Counter;
use rand::Rng;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;

use crate::epoch::EpochKeyRing;
use crate::metrics::Metrics;
use crate::pipeline::Action;
use crate::topology::Topology;

/// First payload byte of every cover packet (fragments start with version 1).
pub const COVER_KIND: u8 = 0x00;
/// Length of a loop id.
const LOOP_ID_LEN: usize = 16;
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
        let Some(id) = payload.get(1..1 + LOOP_ID_LEN) else { return false };
        let mut key = [0u8; LOOP_ID_LEN];
        key.copy_from_slice(id);
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
    /// A layer has no node with a known key for this epoch.
    #[error("no node with a key for this epoch in layer {0}")]
    EmptyLayer(u8),
    /// This node's own descriptor is not in the topology yet.
    #[error("own key for this epoch not known yet")]
    NoOwnKey,
    /// Packet construction failed.
    #[error("building the packet failed")]
    Build,
}

fn exp_delay(rng: &mut impl Rng, mean: Duration) -> u32 {
    let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let us = -u.ln() * mean.as_secs_f64() * 1e6;
    us.min(f64::from(u32::MAX)) as u32
}

fn pick(topology: &Topology, layer: u8, epoch: u64, not: &NodeId, rng: &mut impl Rng) -> Result<Hop, CoverError> {
    let members: Vec<_> = topology.layer_members(layer, epoch).into_iter().filter(|(id, _)| id != not).collect();
    let (id, key) = members.choose(rng).copied().ok_or(CoverError::EmptyLayer(layer))?;
    Ok(Hop { id, key, delay_us: 0 })
}

/// Builds one loop packet: through the other two layers and back to this node.
pub fn build_loop(
    ctx: &CoverContext,
    mean: Duration,
    rng: &mut ChaCha20Rng,
) -> Result<(Action, [u8; LOOP_ID_LEN], Vec<u8>), CoverError> {
    let epoch = ctx.keys.read().unwrap_or_else(|e| e.into_inner()).current_epoch();
    let own = ctx.topology.mix_key(&ctx.self_id, epoch).ok_or(CoverError::NoOwnKey)?;
    let layers: Vec<u8> = vec![(ctx.self_layer + 1) % 3, (ctx.self_layer + 2) % 3];
    let mut route = Vec::with_capacity(3);
    for l in &layers {
        route.push(pick(&ctx.topology, *l, epoch, &ctx.self_id, rng)?);
    }
    route.push(Hop { id: ctx.self_id, key: own, delay_us: 0 });
    for h in &mut route {
        h.delay_us = exp_delay(rng, mean);
    }
    let mut id = [0u8; LOOP_ID_LEN];
    rng.fill(&mut id);
    let mut payload = vec![COVER_KIND];
    payload.extend_from_slice(&id);
    let (next, packet) = PacketBuilder::new(epoch).forward(&route, &payload, rng).map_err(|_| CoverError::Build)?;
    Ok((Action::Forward { next, packet }, id, layers))
}

/// Builds one drop packet: through all three layers to a random exit.
pub fn build_drop(ctx: &CoverContext, mean: Duration, rng: &mut ChaCha20Rng) -> Result<Action, CoverError> {
    let epoch = ctx.keys.read().unwrap_or_else(|e| e.into_inner()).current_epoch();
    let mut route = Vec::with_capacity(3);
    for l in 0..3u8 {
        let mut hop = pick(&ctx.topology, l, epoch, &ctx.self_id, rng)?;
        hop.delay_us = exp_delay(rng, mean);
        route.push(hop);
    }
    let mut payload = vec![COVER_KIND];
    let mut junk = [0u8; LOOP_ID_LEN];
    rng.fill(&mut junk);
    payload.extend_from_slice(&junk);
    let (next, packet) = PacketBuilder::new(epoch).forward(&route, &payload, rng).map_err(|_| CoverError::Build)?;
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
        let mut payload = vec![COVER_KIND];
        payload.extend_from_slice(&[1; 16]);
        assert!(s.loop_returned(&payload));
        assert!(!s.loop_returned(&payload), "a loop counts once");
        assert_eq!(s.expire(Duration::ZERO), 1);
        assert_eq!(m.loop_reliability("1").get(), 0.5);
        assert_eq!(m.loop_reliability("2").get(), 0.5);
        assert_eq!(s.outstanding(), 0);
    }

    #[test]
    fn exponential_delays_have_the_right_mean() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let n = 20_000;
        let mean: f64 =
            (0..n).map(|_| f64::from(exp_delay(&mut rng, Duration::from_millis(10)))).sum::<f64>() / n as f64;
        assert!((mean - 10_000.0).abs() < 400.0, "{mean}");
    }
}
