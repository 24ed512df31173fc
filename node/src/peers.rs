//! Who is connected, and on which terms.
//!
//! The handshake runs both ways on every new connection: each end sends `Hello`
//! and the other answers through its admission policy. That gives two facts per
//! peer, kept here:
//!
//! * **admitted** — *we* accepted *them*, at a tier (node, client or oracle).
//!   Ingest drops every packet from a peer that is not admitted, and from an
//!   oracle (a gossip-only tier).
//! * **welcomed** — *they* accepted *us*. Egress opens a packet stream to a
//!   next hop only once welcomed, so a refused node never has packets queued
//!   on a stream that will be reset.
//!
//! Entries disappear with the last connection.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tokio::sync::watch;

use nox_net::p2p::PeerKind;

#[derive(Debug, Clone, Default)]
struct PeerState {
    admitted: Option<PeerKind>,
    welcomed: bool,
    connected_at: Option<Instant>,
    hello_seen: bool,
}

/// Admitted peers per tier ([`PeerTable::counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCounts {
    /// Nodes.
    pub nodes: i64,
    /// Clients.
    pub clients: i64,
    /// Price oracles.
    pub oracles: i64,
}

/// The table of connected peers. Shared behind an `Arc`.
#[derive(Debug)]
pub struct PeerTable {
    inner: RwLock<HashMap<PeerId, PeerState>>,
    version: watch::Sender<u64>,
}

impl Default for PeerTable {
    fn default() -> Self {
        PeerTable { inner: RwLock::new(HashMap::new()), version: watch::channel(0).0 }
    }
}

impl PeerTable {
    /// An empty table.
    pub fn new() -> Self {
        PeerTable::default()
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A connection to `peer` now exists.
    pub fn connected(&self, peer: PeerId) {
        let mut m = self.inner.write().unwrap_or_else(|e| e.into_inner());
        m.entry(peer).or_default().connected_at = Some(Instant::now());
    }

    /// The last connection to `peer` closed.
    pub fn disconnected(&self, peer: &PeerId) {
        self.inner.write().unwrap_or_else(|e| e.into_inner()).remove(peer);
        self.bump();
    }

    /// We admitted `peer` at `kind`.
    pub fn set_admitted(&self, peer: PeerId, kind: PeerKind) {
        let mut m = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let s = m.entry(peer).or_default();
        s.admitted = Some(kind);
        s.hello_seen = true;
        drop(m);
        self.bump();
    }

    /// `peer` said hello and was refused.
    pub fn set_refused(&self, peer: PeerId) {
        let mut m = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let s = m.entry(peer).or_default();
        s.admitted = None;
        s.hello_seen = true;
    }

    /// `peer` admitted us.
    pub fn set_welcomed(&self, peer: PeerId) {
        self.inner.write().unwrap_or_else(|e| e.into_inner()).entry(peer).or_default().welcomed = true;
        self.bump();
    }

    /// The tier `peer` is admitted at, if any.
    pub fn admitted(&self, peer: &PeerId) -> Option<PeerKind> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).get(peer).and_then(|s| s.admitted)
    }

    /// Whether `peer` admitted us.
    pub fn welcomed(&self, peer: &PeerId) -> bool {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).get(peer).is_some_and(|s| s.welcomed)
    }

    /// Waits up to `timeout` for `peer` to admit us.
    pub async fn wait_welcomed(&self, peer: &PeerId, timeout: Duration) -> bool {
        let mut rx = self.version.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.welcomed(peer) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.welcomed(peer),
            }
        }
    }

    /// Peers connected for longer than `timeout` that never said hello.
    pub fn silent_since(&self, timeout: Duration) -> Vec<PeerId> {
        let now = Instant::now();
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, s)| !s.hello_seen && s.connected_at.is_some_and(|t| now.duration_since(t) > timeout))
            .map(|(p, _)| *p)
            .collect()
    }

    /// Admitted peers per tier.
    pub fn counts(&self) -> PeerCounts {
        let m = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut c = PeerCounts::default();
        for s in m.values() {
            match s.admitted {
                Some(PeerKind::Node) => c.nodes += 1,
                Some(PeerKind::Client) => c.clients += 1,
                Some(PeerKind::Oracle) => c.oracles += 1,
                None => {}
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn welcome_wakes_waiters_and_disconnect_forgets() {
        let t = std::sync::Arc::new(PeerTable::new());
        let p = PeerId::random();
        t.connected(p);
        let t2 = t.clone();
        let waiter = tokio::spawn(async move { t2.wait_welcomed(&p, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        t.set_welcomed(p);
        assert!(waiter.await.unwrap());
        t.set_admitted(p, PeerKind::Node);
        assert_eq!(t.admitted(&p), Some(PeerKind::Node));
        assert_eq!(t.counts(), PeerCounts { nodes: 1, clients: 0, oracles: 0 });
        let o = PeerId::random();
        t.set_admitted(o, PeerKind::Oracle);
        assert_eq!(t.counts().oracles, 1);
        t.disconnected(&p);
        assert_eq!(t.admitted(&p), None);
        assert!(!t.wait_welcomed(&p, Duration::from_millis(10)).await);
    }

    #[test]
    fn silent_peers_are_listed_after_the_timeout() {
        let t = PeerTable::new();
        let quiet = PeerId::random();
        let polite = PeerId::random();
        t.connected(quiet);
        t.connected(polite);
        t.set_admitted(polite, PeerKind::Client);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(t.silent_since(Duration::from_millis(1)), vec![quiet]);
    }
}
