//! The oracle as a libp2p peer: stay connected to the bootstrap nodes, speak
//! the handshake, never relay anyone's prices.
//!
//! The oracle has no listeners that matter and no topology: it dials every
//! `[p2p] bootstrap` node, re-dials the ones it is not connected to every
//! `redial_secs`, and on each new connection says
//! `Hello { kind: Oracle }`. A node admits it (for gossip only) if the
//! peer id's Ed25519 key is one of its `[prices] oracle_keys` — the same key
//! that signs the rounds ([`crate::key_file`]) — and answers `Welcome`, or
//! `Refused` with a reason, which is logged as the hint an operator needs.
//!
//! What comes in is answered from what the oracle owns and nothing else:
//! `Hello` → `Welcome { kind: Node }` (admission is the node's business, the
//! oracle has nothing to protect), `GetPrices` → its own latest round,
//! `GetDescriptors` → an empty list, anything else → `Error`. Gossip received
//! on any topic is rejected: an oracle publishes its own rounds and is no
//! relay for other oracles' (nodes do that, after checking them).
//!
//! The task keeps the count of connected peers, which the round loop reads
//! to count a publication with nobody to hear it (GossipSub refuses to
//! publish without peers; the swarm only logs that).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use nox_net::p2p::{CONTROL_VERSION, Command, ControlRequest, ControlResponse, Event, P2pHandle, PeerKind};
use nox_protocol::price::PriceRound;
use tokio::sync::{mpsc, watch};

use crate::metrics::OracleMetrics;

/// What the network task needs.
#[derive(Debug)]
pub(crate) struct NetworkTask {
    /// The swarm.
    pub handle: P2pHandle,
    /// The swarm's events.
    pub events: mpsc::Receiver<Event>,
    /// Nodes to stay connected to.
    pub bootstrap: Vec<(PeerId, Multiaddr)>,
    /// Pause between re-dials.
    pub redial: Duration,
    /// The latest signed round (answers `GetPrices`).
    pub latest: watch::Receiver<Option<PriceRound>>,
    /// Connected peers, for the round loop and `/health`.
    pub peers: Arc<AtomicUsize>,
    /// Metrics.
    pub metrics: OracleMetrics,
}

impl NetworkTask {
    /// Runs until the swarm stops.
    pub(crate) async fn run(mut self) {
        let mut connected: HashSet<PeerId> = HashSet::new();
        // Bootstrap peers whose failure was already logged at warn level.
        let mut failing: HashSet<PeerId> = HashSet::new();
        let bootstrap: HashMap<PeerId, Multiaddr> = self.bootstrap.iter().cloned().collect();
        let mut redial = tokio::time::interval(self.redial);
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = redial.tick() => {
                    for (peer, addr) in &bootstrap {
                        if !connected.contains(peer) {
                            let dial = Command::Dial { peer: *peer, addrs: vec![addr.clone()] };
                            if self.handle.command(dial).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                event = self.events.recv() => {
                    let Some(event) = event else { return };
                    if !self.on_event(event, &mut connected, &mut failing, &bootstrap).await {
                        return;
                    }
                    self.peers.store(connected.len(), Ordering::Relaxed);
                    self.metrics.set_peers(connected.len());
                }
            }
        }
    }

    /// Handles one event; `false` when the swarm is gone.
    async fn on_event(
        &mut self,
        event: Event,
        connected: &mut HashSet<PeerId>,
        failing: &mut HashSet<PeerId>,
        bootstrap: &HashMap<PeerId, Multiaddr>,
    ) -> bool {
        let command = match event {
            Event::Connected { peer } => {
                connected.insert(peer);
                failing.remove(&peer);
                tracing::debug!(%peer, "connected; saying hello");
                Command::Request {
                    peer,
                    request: ControlRequest::Hello { version: CONTROL_VERSION, kind: PeerKind::Oracle },
                }
            }
            Event::Disconnected { peer } => {
                connected.remove(&peer);
                tracing::debug!(%peer, "disconnected");
                return true;
            }
            Event::DialFailed { peer, reason } => {
                if bootstrap.contains_key(&peer) && failing.insert(peer) {
                    tracing::warn!(%peer, %reason, "cannot reach bootstrap node; retrying");
                } else {
                    tracing::debug!(%peer, %reason, "dial failed");
                }
                return true;
            }
            Event::Request { peer, request, channel } => {
                let response = match request {
                    ControlRequest::Hello { .. } => ControlResponse::Welcome { kind: PeerKind::Node },
                    ControlRequest::GetPrices => {
                        let encoded = self.latest.borrow().as_ref().map(PriceRound::encode).into_iter().collect();
                        ControlResponse::Prices { encoded }
                    }
                    ControlRequest::GetDescriptors => ControlResponse::Descriptors { encoded: Vec::new() },
                    other => {
                        tracing::debug!(%peer, request = ?other, "request an oracle does not serve");
                        ControlResponse::Error {
                            reason: "an oracle serves only Hello, GetPrices and GetDescriptors".into(),
                        }
                    }
                };
                Command::Respond { channel, response }
            }
            Event::Response { peer, response } => {
                match response {
                    ControlResponse::Welcome { .. } => tracing::info!(%peer, "admitted by node"),
                    ControlResponse::Refused { reason } => tracing::warn!(
                        %peer,
                        %reason,
                        "refused by node; is this oracle's public key (nox-oracle public-key) in its [prices] oracle_keys?"
                    ),
                    other => tracing::debug!(%peer, response = ?other, "unexpected response"),
                }
                return true;
            }
            Event::RequestFailed { peer } => {
                tracing::debug!(%peer, "control request failed");
                return true;
            }
            Event::Gossip { source, message_id, .. } => Command::Validate { message_id, source, accept: false },
        };
        self.handle.command(command).await.is_ok()
    }
}
