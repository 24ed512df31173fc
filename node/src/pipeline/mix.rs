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
//! bounded too (batches of up to [`RELEASE_BATCH`] packets, `egress.queue`
//! packets in all); when it is full the packets are dropped (`egress_full`)
//! rather than delaying every other packet's release.
//!
//! ## Fair shares
//!
//! A sender chooses its packets' delays, so one peer sending at full rate with
//! the longest delay allowed would otherwise hold every slot. [`MixShares`]
//! splits `capacity` between *groups*: each admitted node (by peer id), the
//! node's own traffic ([`Sender::Local`]), and the client tier (every client
//! together: clients cost nothing to create, so their number must not buy
//! slots). With `n` other groups holding packets, a group may hold
//! `max(capacity / (n + 2), min_share)`: the `+ 2` keeps one share free for a
//! group that is not holding anything yet, so a newcomer finds room at once
//! even when a flooder holds all it may. Inside the client tier each client
//! may hold `max(tier share / (m + 2), min_share)` with `m` other clients
//! holding packets. A group above its share (shares shrink as groups arrive)
//! keeps what it holds and gets nothing new until it drains below. Drops are
//! counted as `share_exceeded` (a node or the node's own traffic),
//! `client_tier_share_exceeded` and `client_share_exceeded`. `capacity` stays
//! the hard bound: with more than `capacity / min_share` groups holding
//! packets, `mix_full` can still be reached.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;

use super::{Action, Scheduled, Sender};
use crate::metrics::Metrics;
use crate::replay::ReplayCache;

/// Mix settings (`[mix]`).
#[derive(Debug, Clone)]
pub struct MixConfig {
    /// Most packets held.
    pub capacity: usize,
    /// Batch window; `None` releases each packet at its time.
    pub batch_window: Option<Duration>,
    /// Floor of a group's (and a client's) fair share of `capacity`
    /// (`mix.min_share_per_peer`, see the module docs).
    pub min_share: usize,
}

/// The group a sender's packets are counted against (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Group {
    Local,
    Node(libp2p::PeerId),
    Clients,
}

/// Why [`MixShares::admit`] refused a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    /// The stage holds `capacity` packets.
    #[error("the mix holds its capacity")]
    Full,
    /// A node, or the node's own traffic, holds its fair share.
    #[error("the sender holds its fair share of the mix")]
    ShareExceeded,
    /// The client tier together holds its fair share.
    #[error("the client tier holds its fair share of the mix")]
    ClientTierShareExceeded,
    /// This client holds its share of the client tier.
    #[error("the client holds its fair share of the client tier")]
    ClientShareExceeded,
}

/// Per-sender accounting of the packets the mix holds (see the module docs).
/// Only groups and clients holding at least one packet have an entry, so the
/// maps stay as small as the set of current senders.
#[derive(Debug)]
pub struct MixShares {
    capacity: usize,
    min_share: usize,
    held: usize,
    groups: HashMap<Group, usize>,
    clients: HashMap<libp2p::PeerId, usize>,
}

impl MixShares {
    /// Accounting for a stage of `capacity` packets with share floor `min_share`.
    pub fn new(capacity: usize, min_share: usize) -> Self {
        MixShares { capacity, min_share, held: 0, groups: HashMap::new(), clients: HashMap::new() }
    }

    /// Packets held in all.
    pub fn held(&self) -> usize {
        self.held
    }

    /// A share of `total` when `others` other holders hold packets.
    fn share(&self, total: usize, others: usize) -> usize {
        (total / others.saturating_add(2)).max(self.min_share)
    }

    /// Counts one more packet from `sender`, or says why it may not be held.
    pub fn admit(&mut self, sender: Sender) -> Result<(), ShareError> {
        if self.held >= self.capacity {
            return Err(ShareError::Full);
        }
        let group = group_of(sender);
        let mine = self.groups.get(&group).copied().unwrap_or(0);
        let others = self.groups.len() - usize::from(mine > 0);
        let share = self.share(self.capacity, others);
        if mine >= share {
            return Err(if group == Group::Clients {
                ShareError::ClientTierShareExceeded
            } else {
                ShareError::ShareExceeded
            });
        }
        if let Sender::Client(peer) = sender {
            let own = self.clients.get(&peer).copied().unwrap_or(0);
            let other_clients = self.clients.len() - usize::from(own > 0);
            if own >= self.share(share, other_clients) {
                return Err(ShareError::ClientShareExceeded);
            }
            *self.clients.entry(peer).or_insert(0) += 1;
        }
        *self.groups.entry(group).or_insert(0) += 1;
        self.held += 1;
        Ok(())
    }

    /// Forgets one packet of `sender` (released or dropped after admission).
    pub fn release(&mut self, sender: Sender) {
        fn dec<K: Eq + std::hash::Hash>(map: &mut HashMap<K, usize>, key: K) {
            if let Some(n) = map.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
        dec(&mut self.groups, group_of(sender));
        if let Sender::Client(peer) = sender {
            dec(&mut self.clients, peer);
        }
        self.held = self.held.saturating_sub(1);
    }
}

fn group_of(sender: Sender) -> Group {
    match sender {
        Sender::Local => Group::Local,
        Sender::Node(peer) => Group::Node(peer),
        Sender::Client(_) => Group::Clients,
    }
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
    share_exceeded: Counter,
    client_tier_share_exceeded: Counter,
    client_share_exceeded: Counter,
    egress_full: Counter,
    held: Gauge,
    pending_durable: Gauge,
}

impl MixStage {
    /// Starts the mix thread, releasing into `tx` (the egress queue, which
    /// cover traffic, exit replies and claimed replies share).
    pub fn spawn(
        cfg: MixConfig,
        input: flume::Receiver<Vec<Scheduled>>,
        tx: flume::Sender<Vec<Action>>,
        replay: Option<Arc<ReplayCache>>,
        metrics: &Metrics,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<JoinHandle<()>> {
        let m = MixMetrics {
            released: metrics.packets("mix", "released"),
            mix_full: metrics.dropped("mix", "mix_full"),
            share_exceeded: metrics.dropped("mix", "share_exceeded"),
            client_tier_share_exceeded: metrics.dropped("mix", "client_tier_share_exceeded"),
            client_share_exceeded: metrics.dropped("mix", "client_share_exceeded"),
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
    input: &flume::Receiver<Vec<Scheduled>>,
    out: &flume::Sender<Vec<Action>>,
    replay: Option<&ReplayCache>,
    m: &MixMetrics,
    stop: &AtomicBool,
) {
    let mut heap: BinaryHeap<Held> = BinaryHeap::new();
    let mut batch: Vec<(Action, Sender)> = Vec::new();
    let mut shares = MixShares::new(cfg.capacity, cfg.min_share);
    let mut order = 0u64;
    let mut rng = ChaCha20Rng::from_entropy();
    let mut next_batch = cfg.batch_window.map(|w| Instant::now() + w);
    // Released packets go to egress in batches of up to RELEASE_BATCH, so
    // that the packets due at one wake-up wake egress once.
    let mut ready: Vec<Action> = Vec::new();
    let send = |ready: &mut Vec<Action>| {
        while !ready.is_empty() {
            let chunk: Vec<Action> = ready.drain(..ready.len().min(RELEASE_BATCH)).collect();
            let n = chunk.len() as u64;
            if out.try_send(chunk).is_ok() {
                m.released.inc_by(n);
            } else {
                m.egress_full.inc_by(n);
            }
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
            let mut admit = |s: Scheduled| match shares.admit(s.sender) {
                Ok(()) => {
                    order += 1;
                    heap.push(Held { at: s.release_at, order, item: s });
                }
                Err(e) => {
                    match e {
                        ShareError::Full => m.mix_full.inc(),
                        ShareError::ShareExceeded => m.share_exceeded.inc(),
                        ShareError::ClientTierShareExceeded => m.client_tier_share_exceeded.inc(),
                        ShareError::ClientShareExceeded => m.client_share_exceeded.inc(),
                    };
                }
            };
            s.into_iter().for_each(&mut admit);
            // Drain what is already queued without waiting.
            while let Ok(s) = input.try_recv() {
                s.into_iter().for_each(&mut admit);
            }
        }
        // Release everything that is due.
        let now = Instant::now();
        while heap.peek().is_some_and(|h| h.at <= now) {
            let Some(held) = heap.pop() else { break };
            if let Some(cache) = replay
                && held.item.durable_seq > cache.durable_seq()
            {
                // What is already released does not wait for this commit.
                send(&mut ready);
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
                Some(_) => batch.push((held.item.action, held.item.sender)),
                None => {
                    shares.release(held.item.sender);
                    ready.push(held.item.action);
                }
            }
        }
        if let (Some(w), Some(at)) = (cfg.batch_window, next_batch)
            && Instant::now() >= at
        {
            batch.shuffle(&mut rng);
            for (a, sender) in batch.drain(..) {
                shares.release(sender);
                ready.push(a);
            }
            next_batch = Some(at + w);
        }
        send(&mut ready);
        m.held.set(shares.held() as i64);
    }
}

/// Most released packets the mix hands to egress at once (its queue holds
/// `egress.queue / RELEASE_BATCH` batches: at most `egress.queue` packets).
pub const RELEASE_BATCH: usize = 8;

#[cfg(test)]
mod tests {
    use nox_protocol::NodeId;
    use nox_protocol::sphinx::{PACKET_LEN, Packet};

    use super::*;

    fn peer() -> libp2p::PeerId {
        libp2p::PeerId::random()
    }

    #[test]
    fn a_lone_flooder_leaves_room_for_a_newcomer() {
        let mut s = MixShares::new(100, 1);
        let (a, b) = (Sender::Node(peer()), Sender::Node(peer()));
        let mut a_held = 0;
        while s.admit(a).is_ok() {
            a_held += 1;
        }
        assert_eq!(a_held, 50, "alone, a group may hold half the capacity");
        assert_eq!(s.admit(a), Err(ShareError::ShareExceeded));
        let mut b_held = 0;
        while s.admit(b).is_ok() {
            b_held += 1;
        }
        assert_eq!(b_held, 100 / 3, "the newcomer gets its share at once");
        // The flooder is above its new share: nothing new until it drains.
        assert_eq!(s.admit(a), Err(ShareError::ShareExceeded));
        // Once it drains below its share it is served again, up to that share.
        for _ in 0..20 {
            s.release(a);
        }
        let mut again = 0;
        while s.admit(a).is_ok() {
            again += 1;
        }
        assert_eq!(30 + again, 100 / 3);
    }

    /// Ten groups flooding, packets leaving oldest first (one long delay for
    /// all): whoever came first, the groups settle to equal parts and none is
    /// starved.
    #[test]
    fn flooding_groups_settle_to_equal_shares() {
        const CAP: usize = 600;
        let mut s = MixShares::new(CAP, 1);
        let senders: Vec<Sender> = (0..10).map(|_| Sender::Node(peer())).collect();
        let mut held: std::collections::VecDeque<Sender> = std::collections::VecDeque::new();
        for tick in 0..500 {
            for _ in 0..CAP / 20 {
                if let Some(x) = held.pop_front() {
                    s.release(x);
                }
            }
            for i in 0..senders.len() {
                let x = senders[(i + tick) % senders.len()];
                for _ in 0..CAP / 10 {
                    if s.admit(x).is_ok() {
                        held.push_back(x);
                    }
                }
            }
            assert!(s.held() <= CAP);
        }
        let parts: Vec<usize> = senders.iter().map(|x| s.groups.get(&group_of(*x)).copied().unwrap_or(0)).collect();
        let (min, max) = (parts.iter().min().unwrap(), parts.iter().max().unwrap());
        assert!(*min >= CAP / 11 - 10 && *max <= CAP / 11 + 10, "{parts:?}");
    }

    #[test]
    fn clients_share_one_tier_and_each_client_a_part_of_it() {
        let mut s = MixShares::new(120, 1);
        let node = Sender::Node(peer());
        let sybils: Vec<Sender> = (0..50).map(|_| Sender::Client(peer())).collect();
        for &c in &sybils {
            while s.admit(c).is_ok() {}
        }
        let tier = s.groups[&Group::Clients];
        assert_eq!(tier, 60, "fifty clients together hold one group's share");
        let c = Sender::Client(peer());
        assert_eq!(s.admit(c), Err(ShareError::ClientTierShareExceeded));
        // A node still finds room.
        assert!(s.admit(node).is_ok());
        // One client alone may not take the whole tier share.
        let mut s = MixShares::new(120, 1);
        let one = Sender::Client(peer());
        let mut n = 0;
        while s.admit(one).is_ok() {
            n += 1;
        }
        assert_eq!(n, 30, "a lone client holds half of half the capacity");
        assert_eq!(s.admit(one), Err(ShareError::ClientShareExceeded));
        assert!(s.admit(Sender::Client(peer())).is_ok());
    }

    #[test]
    fn the_floor_and_the_hard_capacity() {
        let mut s = MixShares::new(10, 4);
        let senders: Vec<Sender> = (0..5).map(|_| Sender::Node(peer())).collect();
        let got: Vec<usize> = senders
            .iter()
            .map(|&x| {
                let mut n = 0;
                while s.admit(x).is_ok() {
                    n += 1;
                }
                n
            })
            .collect();
        assert_eq!(got, vec![5, 4, 1, 0, 0], "the floor lets shares overlap; capacity stays the bound");
        assert_eq!(s.admit(Sender::Local), Err(ShareError::Full));
        s.release(senders[0]);
        assert!(s.admit(Sender::Local).is_ok());
        assert_eq!(s.held(), 10);
    }

    #[test]
    fn releases_forget_empty_groups() {
        let mut s = MixShares::new(10, 1);
        let (a, c) = (Sender::Node(peer()), Sender::Client(peer()));
        s.admit(a).unwrap();
        s.admit(c).unwrap();
        s.release(a);
        s.release(c);
        // Releasing more than was admitted is harmless.
        s.release(a);
        assert_eq!((s.held(), s.groups.len(), s.clients.len()), (0, 0, 0));
    }

    fn scheduled(sender: Sender, delay: Duration, mark: u8) -> Scheduled {
        let packet = Packet::from_vec(vec![mark; PACKET_LEN]).unwrap();
        Scheduled {
            release_at: Instant::now() + delay,
            durable_seq: 0,
            action: Action::Forward { next: NodeId([mark; 32]), packet },
            sender,
        }
    }

    /// One peer fills the mix with packets held for the longest delay; another
    /// peer's packets, sent after the flood, are still released.
    #[test]
    fn a_peer_flooding_with_long_delays_does_not_starve_another_peer() {
        let metrics = Metrics::new();
        let stop = Arc::new(AtomicBool::new(false));
        let (in_tx, in_rx) = flume::bounded(4_096);
        let (out_tx, out_rx) = flume::bounded(4_096);
        let cfg = MixConfig { capacity: 256, batch_window: None, min_share: 8 };
        let h = MixStage::spawn(cfg, in_rx, out_tx, None, &metrics, stop.clone()).unwrap();
        let (flooder, honest) = (Sender::Node(peer()), Sender::Node(peer()));
        for _ in 0..1_000 {
            in_tx.send(vec![scheduled(flooder, Duration::from_secs(3_600), 1)]).unwrap();
        }
        for _ in 0..20 {
            in_tx.send(vec![scheduled(honest, Duration::ZERO, 2)]).unwrap();
        }
        let mut released = 0;
        while released < 20 {
            match out_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(batch) => {
                    for action in batch {
                        match action {
                            Action::Forward { next, .. } => {
                                assert_eq!(next, NodeId([2; 32]), "only the honest peer's packets are due");
                                released += 1;
                            }
                            other => panic!("not a forward: {other:?}"),
                        }
                    }
                }
                other => panic!("honest packet {released} not released: {other:?}"),
            }
        }
        assert_eq!(metrics.dropped_value("mix", "share_exceeded"), 1_000 - 128);
        assert_eq!(metrics.dropped_value("mix", "mix_full"), 0);
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
    }

    /// The same flood through the client tier: the flooding client is held to
    /// its part of the tier, another client is still served, and so is a node.
    #[test]
    fn a_client_flooding_the_entry_does_not_starve_other_clients() {
        let metrics = Metrics::new();
        let stop = Arc::new(AtomicBool::new(false));
        let (in_tx, in_rx) = flume::bounded(4_096);
        let (out_tx, out_rx) = flume::bounded(4_096);
        let cfg = MixConfig { capacity: 256, batch_window: Some(Duration::from_millis(5)), min_share: 8 };
        let h = MixStage::spawn(cfg, in_rx, out_tx, None, &metrics, stop.clone()).unwrap();
        let (flooder, client, node) = (Sender::Client(peer()), Sender::Client(peer()), Sender::Node(peer()));
        for _ in 0..1_000 {
            in_tx.send(vec![scheduled(flooder, Duration::from_secs(3_600), 1)]).unwrap();
        }
        for _ in 0..10 {
            in_tx.send(vec![scheduled(client, Duration::ZERO, 2)]).unwrap();
            in_tx.send(vec![scheduled(node, Duration::ZERO, 3)]).unwrap();
        }
        let mut marks = Vec::new();
        while marks.len() < 20 {
            match out_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(batch) => {
                    for action in batch {
                        match action {
                            Action::Forward { next, .. } => marks.push(next.0[0]),
                            other => panic!("not a forward: {other:?}"),
                        }
                    }
                }
                other => panic!("packet {} not released: {other:?}", marks.len()),
            }
        }
        marks.sort_unstable();
        assert_eq!(marks, [vec![2; 10], vec![3; 10]].concat());
        // Alone in the tier, the flooder may hold half of the tier's half.
        assert_eq!(metrics.dropped_value("mix", "client_share_exceeded"), 1_000 - 64);
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
    }
}
