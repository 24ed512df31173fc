//! Ingest: the first stage. Decides, per frame and before any cryptography,
//! whether a packet may enter the node.
//!
//! Checks, cheapest first: the frame is exactly one packet (or one packet plus
//! a PoW nonce on `/nox/submit/1`); the peer is admitted; its token bucket (per
//! peer, sized by tier) has a token; a client's proof of work is valid. Then
//! the packet waits for room in the queue to the workers — the wait is the
//! backpressure: the stream reader stops reading, Yamux stops granting window,
//! and the sender's own egress queue fills and sheds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use libp2p::PeerId;
use nox_protocol::pow;
use nox_protocol::sphinx::{PACKET_LEN, Packet};
use prometheus_client::metrics::counter::Counter;

use super::Inbound;
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
    /// Submissions are for clients; nodes use `/nox/packet/1`.
    #[error("only clients submit on /nox/submit/1")]
    NotAClient,
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
    not_a_client: Counter,
    not_a_node: Counter,
}

/// The ingest stage. Shared by every stream reader behind an `Arc`.
pub struct IngestStage {
    cfg: IngestConfig,
    buckets: Mutex<HashMap<PeerId, TokenBucket>>,
    tx: flume::Sender<Inbound>,
    m: IngestMetrics,
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
            not_a_client: metrics.dropped("ingest", "not_a_client"),
            not_a_node: metrics.dropped("ingest", "not_a_node"),
        };
        (IngestStage { cfg, buckets: Mutex::new(HashMap::new()), tx, m }, rx)
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
            IngestError::NotAClient => self.m.not_a_client.inc(),
            IngestError::NotANode => self.m.not_a_node.inc(),
            IngestError::Closed => 0,
        };
    }

    fn admit(&self, peer: &PeerId, tier: Option<PeerKind>) -> Result<PeerKind, IngestError> {
        let tier = tier.ok_or(IngestError::NotAdmitted)?;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(*peer).or_insert_with(|| match tier {
            PeerKind::Node => TokenBucket::new(self.cfg.node_rate, self.cfg.node_burst, now),
            PeerKind::Client => TokenBucket::new(self.cfg.client_rate, self.cfg.client_burst, now),
        });
        if bucket.take(now) { Ok(tier) } else { Err(IngestError::RateLimited) }
    }

    /// Checks a `/nox/packet/1` frame from `peer` (admitted at `tier`, if at all).
    pub fn check_packet(&self, peer: &PeerId, tier: Option<PeerKind>, frame: Vec<u8>) -> Result<Inbound, IngestError> {
        let r = (|| {
            if frame.len() != PACKET_LEN {
                return Err(IngestError::WrongSize { len: frame.len() });
            }
            if tier == Some(PeerKind::Client) {
                return Err(IngestError::NotANode);
            }
            self.admit(peer, tier)?;
            let packet = Packet::from_vec(frame).map_err(|_| IngestError::WrongSize { len: PACKET_LEN })?;
            Ok(Inbound { packet })
        })();
        if let Err(e) = &r {
            self.count(e);
        }
        r
    }

    /// Checks a `/nox/submit/1` frame (packet ‖ nonce) from a client.
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
                None => return Err(IngestError::NotAdmitted),
                Some(PeerKind::Node) => return Err(IngestError::NotAClient),
                Some(PeerKind::Client) => {}
            }
            self.admit(peer, tier)?;
            let len = frame.len();
            let (packet, nonce) = pow::decode_submission(frame).map_err(|_| IngestError::WrongSize { len })?;
            if !pow::verify(&packet, nonce, self.cfg.pow_bits) {
                return Err(IngestError::BadProofOfWork { bits: self.cfg.pow_bits });
            }
            Ok(Inbound { packet })
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

    /// Queues a packet without waiting (for packets the node makes itself);
    /// `false` when the queue is full or closed.
    pub fn try_push(&self, inbound: Inbound) -> bool {
        let ok = self.tx.try_send(inbound).is_ok();
        if ok {
            self.m.accepted.inc();
        }
        ok
    }

    /// Forgets a disconnected peer's bucket.
    pub fn forget(&self, peer: &PeerId) {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).remove(peer);
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
    fn submissions_need_a_client_and_a_valid_proof() {
        let (s, _rx, m) = stage(8);
        let p = PeerId::random();
        let packet = Packet::from_vec(vec![3; PACKET_LEN]).unwrap();
        let nonce = pow::solve(&packet, 8, 0);
        let mut good = packet.as_bytes().to_vec();
        good.extend_from_slice(&nonce.to_be_bytes());
        assert_eq!(s.check_submission(&p, Some(PeerKind::Node), good.clone()).unwrap_err(), IngestError::NotAClient);
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
        assert!(s.check_submission(&r, Some(PeerKind::Client), good).is_ok());
        assert_eq!(m.dropped_value("ingest", "bad_pow"), 1);
    }

    #[tokio::test]
    async fn push_waits_for_room_instead_of_dropping() {
        let (s, rx, _m) = stage(0);
        let s = std::sync::Arc::new(s);
        for _ in 0..4 {
            s.push(Inbound { packet: Packet::from_vec(vec![0; PACKET_LEN]).unwrap() }).await.unwrap();
        }
        let s2 = s.clone();
        let blocked =
            tokio::spawn(
                async move { s2.push(Inbound { packet: Packet::from_vec(vec![0; PACKET_LEN]).unwrap() }).await },
            );
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!blocked.is_finished());
        rx.recv_async().await.unwrap();
        blocked.await.unwrap().unwrap();
        assert_eq!(rx.len(), 4);
    }
}
