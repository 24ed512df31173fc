//! Ingest: the first stage. Decides, per frame and before any cryptography,
//! whether a packet may enter the node.
//!
//! Checks, cheapest first: the frame is exactly one packet (or one packet plus
//! a PoW nonce on `/nox/submit/1`); the peer is admitted; its token bucket has
//! a token; a submission's proof of work is valid and the same frame was not
//! accepted recently ([`SeenSubmissions`]). Then the packet waits for
//! room in the queue to the workers — the wait is the backpressure: the stream
//! reader stops reading, Yamux stops granting window, and the sender's own
//! egress queue fills and sheds.
//!
//! Two paths in, two kinds of bucket:
//! * `/nox/packet/1` — packets relayed by nodes (a client may not use it), one
//!   bucket per node at `ingest.node_rate`/`node_burst`;
//! * `/nox/submit/1` — packets a sender submits into the network with a proof
//!   of work: clients' requests and cover, and a node's own loop and drop
//!   cover (`crate::cover`), which must look like a client's at the entry.
//!   Both are checked alike: the same proof of work, and one submission
//!   bucket per peer at `ingest.client_rate`/`client_burst`, apart from a
//!   node's relay bucket. Accepted submissions are counted as
//!   `ingest/submitted`; a node that is itself the entry of its cover puts it
//!   on this path too ([`IngestStage::submit_local`]).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use nox_protocol::pow;
use nox_protocol::sphinx::{PACKET_LEN, Packet};
use prometheus_client::metrics::counter::Counter;

use super::{Inbound, Sender};
use crate::metrics::Metrics;
use nox_net::p2p::PeerKind;

/// Ingest settings: the `[ingest]` section of the configuration.
pub type IngestConfig = crate::config::IngestSection;

/// Why ingest refused a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The frame is not one packet long.
    #[error("frame of {len} bytes is not a packet")]
    WrongSize {
        /// The frame's length.
        len: usize,
    },
    /// The peer has not completed the handshake, or was refused.
    #[error("peer is not admitted")]
    NotAdmitted,
    /// The peer is over its rate.
    #[error("peer is over its rate limit")]
    RateLimited,
    /// A client's proof of work is missing or too weak.
    #[error("proof of work does not meet {bits} bits")]
    BadProofOfWork {
        /// Required bits.
        bits: u8,
    },
    /// The same submission (packet and nonce) was accepted a moment ago:
    /// its proof was already spent.
    #[error("this proof of work was already spent on an accepted submission")]
    PowReused,
    /// `/nox/packet/1` is for nodes; clients submit with a proof of work.
    #[error("only nodes send on /nox/packet/1")]
    NotANode,
    /// The node is shutting down.
    #[error("the worker queue is closed")]
    Closed,
}

/// A token bucket: `rate` tokens per second up to `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        TokenBucket { tokens: f64::from(burst), rate, burst: f64::from(burst), last: now }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The proofs of work of recently accepted submissions, so that the same
/// frame sent again is refused before it costs the entry an X25519.
///
/// A proof's [`pow::SubmissionHash`] covers the whole packet and its nonce;
/// the first 16 bytes are kept. Two sets rotate: a hash goes into the
/// current set; once the current set is `window / 2` old, it becomes the
/// previous one and the old previous set is emptied; a lookup searches both.
/// So a hash is remembered for at least `window / 2` — unless the current set
/// reaches `max / 2` hashes first, when it rotates early (counted as
/// `nox_events_total{kind="pow_seen",outcome="rotated_early"}`) and the
/// window shrinks to what `max / 2` submissions take. Memory is capped by
/// `max` keys (`ingest.pow_seen_max`, the allocations of two hash sets of
/// `max / 2` 16-byte keys each), whatever the rate.
///
/// A frame sent again after its hash is forgotten costs the entry one X25519
/// and is then refused by the replay cache (`worker/replay`); the same packet
/// with a new nonce is new work and goes the same way.
#[derive(Debug)]
pub struct SeenSubmissions {
    current: HashSet<[u8; 16]>,
    previous: HashSet<[u8; 16]>,
    since: Instant,
    half: Duration,
    per_set: usize,
    rotated_early: Counter,
}

impl SeenSubmissions {
    /// An empty filter remembering hashes for `window` (at least half of
    /// it), at most `max` at once.
    pub fn new(window: Duration, max: usize, now: Instant, rotated_early: Counter) -> Self {
        SeenSubmissions {
            current: HashSet::new(),
            previous: HashSet::new(),
            since: now,
            half: window / 2,
            per_set: (max / 2).max(1),
            rotated_early,
        }
    }

    /// Records `hash`; `false` when it is already remembered.
    pub fn insert(&mut self, hash: &pow::SubmissionHash, now: Instant) -> bool {
        let mut key = [0u8; 16];
        key.copy_from_slice(&hash.0[..16]);
        let age = now.saturating_duration_since(self.since);
        if age >= self.half.saturating_mul(2) {
            // Quiet for a whole window: everything is older than `window / 2`.
            self.previous.clear();
            self.current.clear();
            self.since = now;
        } else if age >= self.half {
            self.rotate(now);
        }
        if self.current.contains(&key) || self.previous.contains(&key) {
            return false;
        }
        if self.current.len() >= self.per_set {
            self.rotated_early.inc();
            self.rotate(now);
        }
        self.current.insert(key);
        true
    }

    /// Hashes remembered.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether no hash is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current set becomes the previous one; the old previous set's
    /// allocation is reused for the new current set.
    fn rotate(&mut self, now: Instant) {
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.clear();
        self.since = now;
    }
}

struct IngestMetrics {
    accepted: Counter,
    wrong_size: Counter,
    not_admitted: Counter,
    rate_limited: Counter,
    bad_pow: Counter,
    pow_reused: Counter,
    not_a_node: Counter,
    submitted: Counter,
}

/// Which bucket a frame takes a token from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Path {
    /// `/nox/packet/1`: a node relaying.
    Relay,
    /// `/nox/submit/1`: a client or a node submitting.
    Submit,
}

/// Room in the queue to the workers, with hysteresis: a reader that found
/// the queue full waits until the workers have taken it down to half, then
/// fills it again, instead of being woken for every packet a worker takes.
/// (Woken per packet, a reader and a worker sharing a core switch twice per
/// packet; woken per half queue, a few times per thousand.)
#[derive(Debug)]
pub struct QueueRoom {
    notify: tokio::sync::Notify,
    waiting: std::sync::atomic::AtomicBool,
    low: usize,
}

impl QueueRoom {
    fn new(capacity: usize) -> Self {
        QueueRoom { notify: tokio::sync::Notify::new(), waiting: false.into(), low: capacity / 2 }
    }

    /// A worker took a packet and `left` remain: readers waiting for room
    /// are woken once `left` is down to half the queue.
    pub fn taken(&self, left: usize) {
        use std::sync::atomic::Ordering;
        if left <= self.low && self.waiting.load(Ordering::Acquire) && self.waiting.swap(false, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }
}

/// The ingest stage. Shared by every stream reader behind an `Arc`.
pub struct IngestStage {
    cfg: IngestConfig,
    room: std::sync::Arc<QueueRoom>,
    buckets: Mutex<HashMap<(PeerId, Path), TokenBucket>>,
    seen: Mutex<SeenSubmissions>,
    tx: flume::Sender<Inbound>,
    m: IngestMetrics,
    #[cfg(feature = "test-harness")]
    faults: crate::faults::Faults,
}

impl std::fmt::Debug for IngestStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestStage").field("queued", &self.tx.len()).finish_non_exhaustive()
    }
}

impl IngestStage {
    /// The stage and the receiving end of its output queue.
    pub fn new(cfg: IngestConfig, metrics: &Metrics) -> (Self, flume::Receiver<Inbound>) {
        let (tx, rx) = flume::bounded(cfg.queue.max(1));
        let m = IngestMetrics {
            accepted: metrics.packets("ingest", "accepted"),
            wrong_size: metrics.dropped("ingest", "wrong_size"),
            not_admitted: metrics.dropped("ingest", "not_admitted"),
            rate_limited: metrics.dropped("ingest", "rate_limited"),
            bad_pow: metrics.dropped("ingest", "bad_pow"),
            pow_reused: metrics.dropped("ingest", "pow_reused"),
            not_a_node: metrics.dropped("ingest", "not_a_node"),
            submitted: metrics.packets("ingest", "submitted"),
        };
        let seen = SeenSubmissions::new(
            Duration::from_secs(cfg.pow_seen_secs),
            cfg.pow_seen_max,
            Instant::now(),
            metrics.event("pow_seen", "rotated_early"),
        );
        let stage = IngestStage {
            room: std::sync::Arc::new(QueueRoom::new(cfg.queue.max(1))),
            cfg,
            buckets: Mutex::new(HashMap::new()),
            seen: Mutex::new(seen),
            tx,
            m,
            #[cfg(feature = "test-harness")]
            faults: crate::faults::Faults::default(),
        };
        (stage, rx)
    }

    /// Gives the stage a test fault (`drop_submissions` applies here).
    #[cfg(feature = "test-harness")]
    pub fn with_faults(mut self, faults: crate::faults::Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Whether accepted submissions are discarded (a test fault; never
    /// outside the test harness).
    fn discards_submissions(&self) -> bool {
        #[cfg(feature = "test-harness")]
        {
            self.faults.drop_submissions
        }
        #[cfg(not(feature = "test-harness"))]
        {
            false
        }
    }

    /// The proof-of-work difficulty this node asks of submissions (and, the
    /// network sharing the parameter, what its own submissions carry).
    pub fn pow_bits(&self) -> u8 {
        self.cfg.pow_bits
    }

    /// Packets waiting for a worker.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    fn count(&self, e: &IngestError) {
        match e {
            IngestError::WrongSize { .. } => self.m.wrong_size.inc(),
            IngestError::NotAdmitted => self.m.not_admitted.inc(),
            IngestError::RateLimited => self.m.rate_limited.inc(),
            IngestError::BadProofOfWork { .. } => self.m.bad_pow.inc(),
            IngestError::PowReused => self.m.pow_reused.inc(),
            IngestError::NotANode => self.m.not_a_node.inc(),
            IngestError::Closed => 0,
        };
    }

    fn admit(&self, peer: &PeerId, path: Path) -> Result<(), IngestError> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry((*peer, path)).or_insert_with(|| match path {
            Path::Relay => TokenBucket::new(self.cfg.node_rate, self.cfg.node_burst, now),
            Path::Submit => TokenBucket::new(self.cfg.client_rate, self.cfg.client_burst, now),
        });
        if bucket.take(now) { Ok(()) } else { Err(IngestError::RateLimited) }
    }

    /// Checks a `/nox/packet/1` frame from `peer` (admitted at `tier`, if at all).
    pub fn check_packet(&self, peer: &PeerId, tier: Option<PeerKind>, frame: Vec<u8>) -> Result<Inbound, IngestError> {
        let r = (|| {
            if frame.len() != PACKET_LEN {
                return Err(IngestError::WrongSize { len: frame.len() });
            }
            match tier {
                None => return Err(IngestError::NotAdmitted),
                Some(PeerKind::Client | PeerKind::Oracle) => return Err(IngestError::NotANode),
                Some(PeerKind::Node) => {}
            }
            self.admit(peer, Path::Relay)?;
            let packet = Packet::from_vec(frame).map_err(|_| IngestError::WrongSize { len: PACKET_LEN })?;
            Ok(Inbound { packet, sender: Sender::Node(*peer) })
        })();
        if let Err(e) = &r {
            self.count(e);
        }
        r
    }

    /// Checks a `/nox/submit/1` frame (packet ‖ nonce) from a client or a
    /// node: both are held to the same proof of work and submission rate.
    pub fn check_submission(
        &self,
        peer: &PeerId,
        tier: Option<PeerKind>,
        frame: Vec<u8>,
    ) -> Result<Inbound, IngestError> {
        let r = (|| {
            if frame.len() != pow::SUBMISSION_LEN {
                return Err(IngestError::WrongSize { len: frame.len() });
            }
            match tier {
                // An oracle is admitted for gossip only: not for submissions.
                None | Some(PeerKind::Oracle) => return Err(IngestError::NotAdmitted),
                Some(PeerKind::Node | PeerKind::Client) => {}
            }
            self.admit(peer, Path::Submit)?;
            let len = frame.len();
            let (packet, nonce) = pow::decode_submission(frame).map_err(|_| IngestError::WrongSize { len })?;
            // The whole packet is hashed once, outside the lock.
            let hash = pow::SubmissionHash::new(&pow::PacketDigest::of(&packet), nonce);
            if !hash.meets(self.cfg.pow_bits) {
                return Err(IngestError::BadProofOfWork { bits: self.cfg.pow_bits });
            }
            if !self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(&hash, Instant::now()) {
                return Err(IngestError::PowReused);
            }
            let sender = if tier == Some(PeerKind::Client) { Sender::Client(*peer) } else { Sender::Node(*peer) };
            Ok(Inbound { packet, sender })
        })();
        if let Err(e) = &r {
            self.count(e);
        }
        r
    }

    /// The queue's room, which the workers report to ([`QueueRoom::taken`]).
    pub fn room(&self) -> std::sync::Arc<QueueRoom> {
        self.room.clone()
    }

    /// Queues an accepted packet for the workers, waiting for room: when the
    /// queue is full, until the workers have taken it down to half
    /// ([`QueueRoom`]).
    pub async fn push(&self, inbound: Inbound) -> Result<(), IngestError> {
        use std::sync::atomic::Ordering;
        let mut item = inbound;
        loop {
            match self.tx.try_send(item) {
                Ok(()) => {
                    self.m.accepted.inc();
                    return Ok(());
                }
                Err(flume::TrySendError::Disconnected(_)) => return Err(IngestError::Closed),
                Err(flume::TrySendError::Full(back)) => {
                    item = back;
                    let notified = self.room.notify.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    self.room.waiting.store(true, Ordering::Release);
                    // Taken down to half meanwhile: no worker will say so.
                    if self.tx.len() <= self.room.low {
                        continue;
                    }
                    // The timeout only bounds a wait the workers' notice
                    // should end; a stopped node closes the queue.
                    let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
                }
            }
        }
    }

    /// Queues a checked submission for the workers, waiting for room;
    /// counted as `ingest/submitted`.
    pub async fn push_submission(&self, inbound: Inbound) -> Result<(), IngestError> {
        self.m.submitted.inc();
        if self.discards_submissions() {
            return Ok(());
        }
        self.push(inbound).await
    }

    /// A packet this node submits to itself as the entry of its own cover:
    /// on the submission path like any other (no proof of work: the node
    /// would check its own), without waiting. `false` when the queue is full
    /// or closed.
    pub fn submit_local(&self, packet: Packet) -> bool {
        self.m.submitted.inc();
        if self.discards_submissions() {
            return true;
        }
        self.try_push(Inbound { packet, sender: Sender::Local })
    }

    /// Queues a packet without waiting (for packets the node makes itself);
    /// `false` when the queue is full or closed.
    pub fn try_push(&self, inbound: Inbound) -> bool {
        let ok = self.tx.try_send(inbound).is_ok();
        if ok {
            self.m.accepted.inc();
        }
        ok
    }

    /// Forgets a disconnected peer's buckets.
    pub fn forget(&self, peer: &PeerId) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        for path in [Path::Relay, Path::Submit] {
            buckets.remove(&(*peer, path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn stage(pow_bits: u8) -> (IngestStage, flume::Receiver<Inbound>, Metrics) {
        let m = Metrics::new();
        let cfg = IngestConfig {
            queue: 4,
            node_rate: 10.0,
            node_burst: 3,
            client_rate: 1.0,
            client_burst: 1,
            pow_bits,
            ..IngestConfig::default()
        };
        let (s, rx) = IngestStage::new(cfg, &m);
        (s, rx, m)
    }

    #[test]
    fn token_bucket_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 2, t0);
        assert!(b.take(t0) && b.take(t0));
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(110)));
        assert!(!b.take(t0 + Duration::from_millis(110)));
    }

    #[test]
    fn wrong_sizes_unadmitted_and_floods_are_counted() {
        let (s, _rx, m) = stage(0);
        let p = PeerId::random();
        assert_eq!(
            s.check_packet(&p, Some(PeerKind::Node), vec![0; 100]).unwrap_err(),
            IngestError::WrongSize { len: 100 }
        );
        assert_eq!(s.check_packet(&p, None, vec![0; PACKET_LEN]).unwrap_err(), IngestError::NotAdmitted);
        for _ in 0..3 {
            s.check_packet(&p, Some(PeerKind::Node), vec![0; PACKET_LEN]).unwrap();
        }
        assert_eq!(
            s.check_packet(&p, Some(PeerKind::Node), vec![0; PACKET_LEN]).unwrap_err(),
            IngestError::RateLimited
        );
        // Another peer has its own bucket.
        s.check_packet(&PeerId::random(), Some(PeerKind::Node), vec![0; PACKET_LEN]).unwrap();
        assert_eq!(m.dropped_value("ingest", "rate_limited"), 1);
        assert_eq!(m.dropped_value("ingest", "wrong_size"), 1);
        assert_eq!(m.dropped_value("ingest", "not_admitted"), 1);
    }

    #[test]
    fn submissions_need_an_admitted_peer_and_a_valid_proof_whoever_submits() {
        let (s, _rx, m) = stage(8);
        let p = PeerId::random();
        let packet = Packet::from_vec(vec![3; PACKET_LEN]).unwrap();
        let nonce = pow::solve(&packet, 8, 0);
        let mut good = packet.as_bytes().to_vec();
        good.extend_from_slice(&nonce.to_be_bytes());
        assert_eq!(s.check_submission(&p, None, good.clone()).unwrap_err(), IngestError::NotAdmitted);
        let mut bad = packet.as_bytes().to_vec();
        bad.extend_from_slice(&(nonce.wrapping_add(1)).to_be_bytes());
        let q = PeerId::random();
        // A wrong nonce fails unless it happens to be a proof too; pick one that is not.
        let wrong = (0..).map(|k: u64| nonce.wrapping_add(1 + k)).find(|n| !pow::verify(&packet, *n, 8)).unwrap();
        bad[PACKET_LEN..].copy_from_slice(&wrong.to_be_bytes());
        assert_eq!(
            s.check_submission(&q, Some(PeerKind::Client), bad).unwrap_err(),
            IngestError::BadProofOfWork { bits: 8 }
        );
        let r = PeerId::random();
        assert!(s.check_submission(&r, Some(PeerKind::Client), good.clone()).is_ok());
        // A node submits its cover like a client: the same proof is checked.
        let cover = Packet::from_vec(vec![4; PACKET_LEN]).unwrap();
        let node = PeerId::random();
        let frame = pow::encode_submission(&cover, pow::solve(&cover, 8, 0));
        assert!(s.check_submission(&node, Some(PeerKind::Node), frame).is_ok());
        let mut weak = packet.as_bytes().to_vec();
        weak.extend_from_slice(&wrong.to_be_bytes());
        assert_eq!(
            s.check_submission(&PeerId::random(), Some(PeerKind::Node), weak).unwrap_err(),
            IngestError::BadProofOfWork { bits: 8 }
        );
        assert_eq!(m.dropped_value("ingest", "bad_pow"), 2);
    }

    /// A submission frame with a proof of `bits` for `packet`.
    fn solved(packet: &Packet, bits: u8) -> Vec<u8> {
        pow::encode_submission(packet, pow::solve(packet, bits, 0))
    }

    #[test]
    fn one_nonce_does_not_carry_over_to_a_packet_with_another_body() {
        let (s, rx, m) = stage(12);
        let mut bytes = vec![9u8; PACKET_LEN];
        let first = Packet::from_vec(bytes.clone()).unwrap();
        let frame = solved(&first, 12);
        let nonce = frame[PACKET_LEN..].to_vec();
        assert!(s.check_submission(&PeerId::random(), Some(PeerKind::Client), frame).is_ok());
        // The attacker keeps alpha, gamma and the nonce, and changes the body.
        bytes[PACKET_LEN - 1] ^= 0xff;
        let mut second = bytes;
        second.extend_from_slice(&nonce);
        assert_eq!(
            s.check_submission(&PeerId::random(), Some(PeerKind::Client), second).unwrap_err(),
            IngestError::BadProofOfWork { bits: 12 }
        );
        assert_eq!(m.dropped_value("ingest", "bad_pow"), 1);
        assert!(rx.is_empty());
    }

    #[tokio::test]
    async fn the_same_frame_again_is_refused_before_the_workers() {
        let (s, rx, m) = stage(8);
        let packet = Packet::from_vec(vec![5; PACKET_LEN]).unwrap();
        let frame = solved(&packet, 8);
        let first = s.check_submission(&PeerId::random(), Some(PeerKind::Client), frame.clone()).unwrap();
        s.push_submission(first).await.unwrap();
        // The same frame, from the same client's next stream or from other
        // peers (each with a fresh bucket): refused at ingest, so none of them
        // reaches a worker's X25519.
        for tier in [PeerKind::Client, PeerKind::Client, PeerKind::Node] {
            assert_eq!(
                s.check_submission(&PeerId::random(), Some(tier), frame.clone()).unwrap_err(),
                IngestError::PowReused
            );
        }
        assert_eq!(m.dropped_value("ingest", "pow_reused"), 3);
        assert_eq!(rx.len(), 1);
        // The same packet with a newly solved nonce is new work: admitted here,
        // and left to the replay cache.
        let nonce = u64::from_be_bytes(frame[PACKET_LEN..].try_into().unwrap());
        let again = pow::encode_submission(&packet, pow::solve(&packet, 8, nonce.wrapping_add(1)));
        assert!(s.check_submission(&PeerId::random(), Some(PeerKind::Client), again).is_ok());
        // With no proof asked for, repeats are still refused.
        let (s, _rx, m) = stage(0);
        let frame = pow::encode_submission(&packet, 42);
        assert!(s.check_submission(&PeerId::random(), Some(PeerKind::Client), frame.clone()).is_ok());
        assert_eq!(
            s.check_submission(&PeerId::random(), Some(PeerKind::Client), frame).unwrap_err(),
            IngestError::PowReused
        );
        assert_eq!(m.dropped_value("ingest", "pow_reused"), 1);
    }

    #[test]
    fn the_seen_filter_forgets_after_its_window() {
        let m = Metrics::new();
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let mut f = SeenSubmissions::new(secs(10), 1000, t0, m.event("pow_seen", "rotated_early"));
        let h = |i: u8| pow::SubmissionHash([i; 32]);
        assert!(f.insert(&h(1), t0));
        assert!(!f.insert(&h(1), t0 + secs(1)));
        // Half a window on: the set rotates, and 1 is still remembered.
        assert!(f.insert(&h(2), t0 + secs(5)));
        assert!(!f.insert(&h(1), t0 + secs(9)));
        // Another half: 1 is forgotten (and accepted again), 2 is not.
        assert!(f.insert(&h(3), t0 + secs(10)));
        assert!(f.insert(&h(1), t0 + secs(11)));
        assert!(!f.insert(&h(2), t0 + secs(12)));
        // A whole window without submissions forgets everything.
        assert!(f.insert(&h(2), t0 + secs(40)));
        assert_eq!(f.len(), 1);
        // Time alone rotates the sets: nothing was rotated early.
        assert_eq!(crate::metrics::sum_family(&m.render(), "nox_events_total"), 0);
    }

    #[test]
    fn the_seen_filter_holds_at_most_its_cap_under_a_flood() {
        let m = Metrics::new();
        let t0 = Instant::now();
        let mut f = SeenSubmissions::new(Duration::from_secs(3600), 8, t0, m.event("pow_seen", "rotated_early"));
        let h = |i: u32| {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_be_bytes());
            pow::SubmissionHash(b)
        };
        for i in 0..1000u32 {
            assert!(f.insert(&h(i), t0), "{i} is new");
            assert!(f.len() <= 8, "{} hashes held", f.len());
            // The last half-cap of hashes is always remembered.
            for j in i.saturating_sub(3)..=i {
                assert!(!f.insert(&h(j), t0), "{j} forgotten at {i}");
            }
        }
        // 1,000 hashes into sets of 4: a rotation every 4 inserts after the first.
        assert_eq!(crate::metrics::sum_family(&m.render(), "nox_events_total"), 249);
    }

    #[test]
    fn a_nodes_submissions_take_the_client_rate_apart_from_its_relay_bucket() {
        let (s, _rx, m) = stage(0);
        let node = PeerId::random();
        let frame = |n: u8| {
            let mut f = vec![n; PACKET_LEN];
            f.extend_from_slice(&0u64.to_be_bytes());
            f
        };
        // client_burst is 1: the second submission is over the rate...
        assert!(s.check_submission(&node, Some(PeerKind::Node), frame(1)).is_ok());
        assert_eq!(s.check_submission(&node, Some(PeerKind::Node), frame(2)).unwrap_err(), IngestError::RateLimited);
        // ...while relayed packets still have their own burst of 3.
        for _ in 0..3 {
            s.check_packet(&node, Some(PeerKind::Node), vec![0; PACKET_LEN]).unwrap();
        }
        // A client may not relay.
        assert_eq!(
            s.check_packet(&PeerId::random(), Some(PeerKind::Client), vec![0; PACKET_LEN]).unwrap_err(),
            IngestError::NotANode
        );
        assert_eq!(m.dropped_value("ingest", "rate_limited"), 1);
    }

    #[tokio::test]
    async fn submissions_are_counted_on_their_own_path() {
        let (s, rx, m) = stage(0);
        let packet = || Packet::from_vec(vec![0; PACKET_LEN]).unwrap();
        s.push_submission(Inbound { packet: packet(), sender: Sender::Local }).await.unwrap();
        assert!(s.submit_local(packet()));
        s.push(Inbound { packet: packet(), sender: Sender::Local }).await.unwrap();
        assert_eq!(m.packets_value("ingest", "submitted"), 2);
        assert_eq!(m.packets_value("ingest", "accepted"), 3);
        assert_eq!(rx.len(), 3);
    }

    #[tokio::test]
    async fn push_waits_for_room_instead_of_dropping() {
        let (s, rx, _m) = stage(0);
        let s = std::sync::Arc::new(s);
        for _ in 0..4 {
            s.push(Inbound { packet: Packet::from_vec(vec![0; PACKET_LEN]).unwrap(), sender: Sender::Local })
                .await
                .unwrap();
        }
        let s2 = s.clone();
        let blocked = tokio::spawn(async move {
            s2.push(Inbound { packet: Packet::from_vec(vec![0; PACKET_LEN]).unwrap(), sender: Sender::Local }).await
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!blocked.is_finished());
        rx.recv_async().await.unwrap();
        blocked.await.unwrap().unwrap();
        assert_eq!(rx.len(), 4);
    }
}
