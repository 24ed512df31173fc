//! Ingest: the first stage. Decides, per frame and before any cryptography,
//! whether a packet may enter the node.
//!
//! Checks, cheapest first: the frame is exactly one packet (or one packet plus
//! a PoW nonce on `/nox/submit/1`); the peer is admitted; its token bucket has
//! a token; a submission's proof of work is valid. Then the packet waits for
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

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

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

struct IngestMetrics {
    accepted: Counter,
    wrong_size: Counter,
    not_admitted: Counter,
    rate_limited: Counter,
    bad_pow: Counter,
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

/// The ingest stage. Shared by every stream reader behind an `Arc`.
pub struct IngestStage {
    cfg: IngestConfig,
    buckets: Mutex<HashMap<(PeerId, Path), TokenBucket>>,
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
            not_a_node: metrics.dropped("ingest", "not_a_node"),
            submitted: metrics.packets("ingest", "submitted"),
        };
        let stage = IngestStage {
            cfg,
            buckets: Mutex::new(HashMap::new()),
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
            if !pow::verify(&packet, nonce, self.cfg.pow_bits) {
                return Err(IngestError::BadProofOfWork { bits: self.cfg.pow_bits });
            }
            let sender = if tier == Some(PeerKind::Client) { Sender::Client(*peer) } else { Sender::Node(*peer) };
            Ok(Inbound { packet, sender })
        })();
        if let Err(e) = &r {
            self.count(e);
        }
        r
    }

    /// Queues an accepted packet for the workers, waiting for room.
    pub async fn push(&self, inbound: Inbound) -> Result<(), IngestError> {
        self.tx.send_async(inbound).await.map_err(|_| IngestError::Closed)?;
        self.m.accepted.inc();
        Ok(())
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
        let cfg =
            IngestConfig { queue: 4, node_rate: 10.0, node_burst: 3, client_rate: 1.0, client_burst: 1, pow_bits };
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
        let node = PeerId::random();
        assert!(s.check_submission(&node, Some(PeerKind::Node), good).is_ok());
        let mut weak = packet.as_bytes().to_vec();
        weak.extend_from_slice(&wrong.to_be_bytes());
        assert_eq!(
            s.check_submission(&PeerId::random(), Some(PeerKind::Node), weak).unwrap_err(),
            IngestError::BadProofOfWork { bits: 8 }
        );
        assert_eq!(m.dropped_value("ingest", "bad_pow"), 2);
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
