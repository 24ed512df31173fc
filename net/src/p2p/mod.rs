//! The libp2p transport: one swarm task, driven by commands, reporting events.
//!
//! Wire stack: TCP (nodelay) + Noise XX + Yamux, with the node's Ed25519
//! identity as the libp2p key, so the peer id *is* the 32-byte node id that
//! routing blocks name ([`peer_id_of`], [`node_id_of`]). The protocols and
//! topics it speaks, and their framing, are listed in [`crate::control`].
//!
//! The swarm task owns the `Swarm` and never waits on anyone: it forwards
//! [`Event`]s with `try_send` (an owner that falls behind loses events — logged
//! at debug level — never the swarm's progress) and executes [`Command`]s. Packet streams are not
//! handled here at all: they are opened and accepted through the
//! `libp2p_stream::Control` in [`P2pHandle`], so packet bytes go straight from a
//! Yamux substream into the ingest stage without crossing this task.
//!
//! Admission is the owner's business: a node answers `Hello` through its
//! admission policy, a client or a [`crate::raw_peer::RawPeer`] through its
//! own rule. Nothing is accepted from a peer on the packet protocols until
//! that answer was "welcome". The messages themselves are in
//! [`crate::control`]; this module only carries them.

pub mod limits;

use std::collections::VecDeque;
use std::time::Duration;

use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, identify, noise, ping, tcp, yamux};
use nox_protocol::NodeId;
use tokio::sync::{mpsc, watch};

use self::limits::{ConnectionCaps, DeniedCounters};
pub use crate::control::{
    CONTROL_PROTOCOL, CONTROL_VERSION, ControlRequest, ControlResponse, DESCRIPTOR_TOPIC, MAX_REPLY_CLAIMS,
    PACKET_PROTOCOL, PRICE_TOPIC, PeerKind, SUBMIT_PROTOCOL,
};

/// The combined behaviour.
#[derive(NetworkBehaviour)]
#[allow(missing_debug_implementations, missing_docs)]
struct NoxBehaviour {
    caps: ConnectionCaps,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    gossipsub: gossipsub::Behaviour,
    control: request_response::cbor::Behaviour<ControlRequest, ControlResponse>,
    streams: libp2p_stream::Behaviour,
}

/// Transport settings.
#[derive(Debug, Clone)]
pub struct P2pConfig {
    /// Addresses to listen on (may be empty for a client).
    pub listen: Vec<Multiaddr>,
    /// Total connection cap.
    pub max_connections: u32,
    /// Inbound connections per /24 (/48).
    pub max_connections_per_subnet: u32,
    /// Idle connections are closed after this long.
    pub idle_timeout: Duration,
    /// Control request timeout.
    pub request_timeout: Duration,
    /// Where refused connections are counted (the node passes its metrics).
    pub denied: DeniedCounters,
    /// How links are authenticated and encrypted.
    pub security: LinkSecurity,
}

/// How a link is authenticated and encrypted. Either way the peer proves the
/// libp2p identity (the node's Ed25519 key) its peer id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkSecurity {
    /// Noise only (XX, ChaCha20-Poly1305). The default: measured cheaper
    /// per relayed packet than TLS through libp2p's stream path
    /// (docs/architecture.md, "Throughput").
    #[default]
    Noise,
    /// TLS 1.3 (libp2p-tls: rustls with aws-lc, AES-256-GCM where the CPU
    /// has AES instructions) offered first, Noise accepted: a peer that
    /// speaks only Noise still connects. For measuring, and for machines
    /// where it is the cheaper link.
    Tls,
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            listen: Vec::new(),
            max_connections: 1024,
            max_connections_per_subnet: 16,
            idle_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(10),
            denied: DeniedCounters::default(),
            security: LinkSecurity::default(),
        }
    }
}

/// Transport errors.
#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    /// The identity key could not be turned into a libp2p key.
    #[error("identity key is not a valid Ed25519 secret key")]
    InvalidIdentity,
    /// A node id that is not a valid Ed25519 public key.
    #[error("node id is not an Ed25519 public key")]
    InvalidNodeId,
    /// The swarm could not be built.
    #[error("building the libp2p swarm: {0}")]
    Build(String),
    /// Listening failed.
    #[error("listening on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// The swarm task is gone.
    #[error("the libp2p task has stopped")]
    Stopped,
}

/// Commands to the swarm task.
#[derive(Debug)]
pub enum Command {
    /// Connect to `peer` on `addrs` unless already connected.
    Dial {
        /// The peer.
        peer: PeerId,
        /// Where.
        addrs: Vec<Multiaddr>,
    },
    /// Send a control request.
    Request {
        /// To whom.
        peer: PeerId,
        /// What.
        request: ControlRequest,
    },
    /// Answer a control request.
    Respond {
        /// The request's channel.
        channel: ResponseChannel<ControlResponse>,
        /// The answer.
        response: ControlResponse,
    },
    /// Publish on a GossipSub topic.
    Publish {
        /// Topic name.
        topic: &'static str,
        /// Bytes.
        data: Vec<u8>,
    },
    /// Report the validation result of a received gossip message.
    Validate {
        /// The message.
        message_id: MessageId,
        /// Who forwarded it.
        source: PeerId,
        /// Valid (propagate) or not (drop and penalise).
        accept: bool,
    },
    /// Close every connection to `peer`.
    Disconnect {
        /// The peer.
        peer: PeerId,
    },
}

/// Events from the swarm task.
#[derive(Debug)]
pub enum Event {
    /// First connection to `peer` established.
    Connected {
        /// The peer.
        peer: PeerId,
    },
    /// Last connection to `peer` closed.
    Disconnected {
        /// The peer.
        peer: PeerId,
    },
    /// A dial to `peer` failed (unreachable, refused, handshake failed).
    DialFailed {
        /// The peer.
        peer: PeerId,
        /// What went wrong, as libp2p says it.
        reason: String,
    },
    /// A control request arrived.
    Request {
        /// From whom.
        peer: PeerId,
        /// What.
        request: ControlRequest,
        /// Where to answer.
        channel: ResponseChannel<ControlResponse>,
    },
    /// An answer to one of our requests.
    Response {
        /// From whom.
        peer: PeerId,
        /// What.
        response: ControlResponse,
    },
    /// One of our requests failed (timeout, connection lost, protocol error).
    RequestFailed {
        /// To whom.
        peer: PeerId,
    },
    /// A gossip message that awaits validation.
    Gossip {
        /// Who forwarded it.
        source: PeerId,
        /// Its id, for [`Command::Validate`].
        message_id: MessageId,
        /// Topic name (one of ours, or an unknown string).
        topic: String,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// A handle on the running transport.
#[derive(Clone)]
pub struct P2pHandle {
    /// This end's peer id.
    pub peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    /// Opens and accepts raw streams (packets, submissions).
    pub streams: libp2p_stream::Control,
    listen: watch::Receiver<Vec<Multiaddr>>,
}

impl std::fmt::Debug for P2pHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P2pHandle").field("peer_id", &self.peer_id).finish_non_exhaustive()
    }
}

impl P2pHandle {
    /// Sends a command, waiting if the command queue is full.
    pub async fn command(&self, c: Command) -> Result<(), P2pError> {
        self.commands.send(c).await.map_err(|_| P2pError::Stopped)
    }

    /// Waits until at least one listen address is bound.
    pub async fn wait_listening(&mut self) -> Vec<Multiaddr> {
        loop {
            let now = self.listen.borrow().clone();
            if !now.is_empty() {
                return now;
            }
            if self.listen.changed().await.is_err() {
                return Vec::new();
            }
        }
    }
}

/// The libp2p keypair of an Ed25519 identity key.
pub fn keypair_from_identity(identity: &ed25519_dalek::SigningKey) -> Result<Keypair, P2pError> {
    let mut secret = identity.to_bytes();
    let kp = Keypair::ed25519_from_bytes(&mut secret).map_err(|_| P2pError::InvalidIdentity);
    zeroize::Zeroize::zeroize(&mut secret);
    kp
}

/// The peer id of a node id.
pub fn peer_id_of(id: &NodeId) -> Result<PeerId, P2pError> {
    let pk = libp2p::identity::ed25519::PublicKey::try_from_bytes(&id.0).map_err(|_| P2pError::InvalidNodeId)?;
    Ok(PeerId::from_public_key(&libp2p::identity::PublicKey::from(pk)))
}

/// The node id of a peer id, when the peer uses an Ed25519 key (NOX peers do).
pub fn node_id_of(peer: &PeerId) -> Option<NodeId> {
    let mh: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    let pk = libp2p::identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    let ed = pk.try_into_ed25519().ok()?;
    Some(NodeId(ed.to_bytes()))
}

fn build_swarm(keypair: Keypair, cfg: &P2pConfig) -> Result<libp2p::Swarm<NoxBehaviour>, P2pError> {
    let caps = ConnectionCaps::new(cfg.max_connections, cfg.max_connections_per_subnet, cfg.denied.clone());
    let request_timeout = cfg.request_timeout;
    let idle = cfg.idle_timeout;
    let behaviour = move |key: &Keypair| behaviour(key, caps, request_timeout);
    let build = |e: &dyn std::fmt::Display| P2pError::Build(e.to_string());
    let tcp = tcp::Config::default().nodelay(true);
    let builder = libp2p::SwarmBuilder::with_existing_identity(keypair).with_tokio();
    let swarm = match cfg.security {
        LinkSecurity::Tls => builder
            .with_tcp(tcp, (libp2p::tls::Config::new, noise::Config::new), yamux::Config::default)
            .map_err(|e| build(&e))?
            .with_behaviour(behaviour)
            .map_err(|e| build(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
        LinkSecurity::Noise => builder
            .with_tcp(tcp, noise::Config::new, yamux::Config::default)
            .map_err(|e| build(&e))?
            .with_behaviour(behaviour)
            .map_err(|e| build(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
    };
    Ok(swarm)
}

fn behaviour(
    key: &Keypair,
    caps: ConnectionCaps,
    request_timeout: Duration,
) -> Result<NoxBehaviour, Box<dyn std::error::Error + Send + Sync>> {
    let gossip_cfg = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(64 * 1024)
        .heartbeat_interval(Duration::from_secs(1))
        .message_id_fn(|m: &gossipsub::Message| MessageId::from(blake3::hash(&m.data).as_bytes().to_vec()))
        .build()
        .map_err(|e| P2pError::Build(e.to_string()))?;
    let gossipsub = gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), gossip_cfg)
        .map_err(|e| P2pError::Build(e.to_string()))?;
    let control = request_response::cbor::Behaviour::new(
        [(CONTROL_PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(request_timeout),
    );
    Ok(NoxBehaviour {
        caps,
        identify: identify::Behaviour::new(identify::Config::new("/nox/1".to_string(), key.public())),
        ping: ping::Behaviour::new(ping::Config::new()),
        gossipsub,
        control,
        streams: libp2p_stream::Behaviour::new(),
    })
}

/// Starts the swarm task on the current tokio runtime. Aborting the returned
/// task drops the swarm and closes every connection.
pub fn spawn(
    keypair: Keypair,
    cfg: P2pConfig,
) -> Result<(P2pHandle, mpsc::Receiver<Event>, tokio::task::JoinHandle<()>), P2pError> {
    let mut swarm = build_swarm(keypair, &cfg)?;
    for addr in &cfg.listen {
        swarm.listen_on(addr.clone()).map_err(|e| P2pError::Listen { addr: addr.clone(), reason: e.to_string() })?;
    }
    for topic in [DESCRIPTOR_TOPIC, PRICE_TOPIC] {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&IdentTopic::new(topic))
            .map_err(|e| P2pError::Build(e.to_string()))?;
    }
    let peer_id = *swarm.local_peer_id();
    let streams = swarm.behaviour().streams.new_control();
    let (cmd_tx, cmd_rx) = mpsc::channel(4096);
    let (ev_tx, ev_rx) = mpsc::channel(4096);
    let (listen_tx, listen_rx) = watch::channel(Vec::new());
    let task = tokio::spawn(run(swarm, cmd_rx, ev_tx, listen_tx));
    Ok((P2pHandle { peer_id, commands: cmd_tx, streams, listen: listen_rx }, ev_rx, task))
}

/// Where the swarm task puts its events. The queue to the owner is bounded;
/// when it is full, gossip is dropped (a peer flooding the topics must not
/// crowd out anything else), while every other event — connections, dial
/// failures, requests, responses — waits in a local backlog, in order, so that
/// the peer table, the handshake and the reply claims never miss one. The
/// backlog only holds events of connections and requests, which the connection
/// caps and the request-response limits bound.
struct EventOut {
    tx: mpsc::Sender<Event>,
    backlog: VecDeque<Event>,
}

impl EventOut {
    fn emit(&mut self, e: Event) {
        let droppable = matches!(e, Event::Gossip { .. });
        if self.backlog.is_empty() {
            match self.tx.try_send(e) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(e)) if !droppable => self.backlog.push_back(e),
                Err(mpsc::error::TrySendError::Full(_)) => tracing::debug!("p2p event queue full; gossip dropped"),
            }
        } else if droppable {
            tracing::debug!("p2p event queue full; gossip dropped");
        } else {
            self.backlog.push_back(e);
        }
    }

    /// Moves backlogged events into the queue as far as it has room.
    fn drain(&mut self) {
        while let Some(e) = self.backlog.pop_front() {
            if let Err(mpsc::error::TrySendError::Full(e)) = self.tx.try_send(e) {
                self.backlog.push_front(e);
                return;
            }
        }
    }
}

async fn run(
    mut swarm: libp2p::Swarm<NoxBehaviour>,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    listen: watch::Sender<Vec<Multiaddr>>,
) {
    let mut out = EventOut { tx: events.clone(), backlog: VecDeque::new() };
    loop {
        tokio::select! {
            // Room in the queue again: the backlog goes first, in order.
            permit = events.reserve(), if !out.backlog.is_empty() => {
                let Ok(permit) = permit else { break };
                if let Some(e) = out.backlog.pop_front() {
                    permit.send(e);
                }
                out.drain();
            }
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { break };
                execute(&mut swarm, cmd);
            }
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::NewListenAddr { address, .. } => {
                    listen.send_modify(|v| v.push(address));
                }
                SwarmEvent::ExpiredListenAddr { address, .. } => {
                    listen.send_modify(|v| v.retain(|a| a != &address));
                }
                SwarmEvent::ConnectionEstablished { peer_id, num_established, .. } if num_established.get() == 1 => {
                    out.emit(Event::Connected { peer: peer_id });
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    out.emit(Event::Disconnected { peer: peer_id });
                }
                SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. } => {
                    out.emit(Event::DialFailed { peer, reason: error.to_string() });
                }
                SwarmEvent::Behaviour(NoxBehaviourEvent::Control(e)) => match e {
                    request_response::Event::Message { peer, message, .. } => match message {
                        request_response::Message::Request { request, channel, .. } => {
                            out.emit(Event::Request { peer, request, channel });
                        }
                        request_response::Message::Response { response, .. } => {
                            out.emit(Event::Response { peer, response });
                        }
                    },
                    request_response::Event::OutboundFailure { peer, .. } => out.emit(Event::RequestFailed { peer }),
                    request_response::Event::InboundFailure { .. } | request_response::Event::ResponseSent { .. } => {}
                },
                SwarmEvent::Behaviour(NoxBehaviourEvent::Gossipsub(gossipsub::Event::Message {
                    propagation_source,
                    message_id,
                    message,
                })) => {
                    out.emit(Event::Gossip {
                        source: propagation_source,
                        message_id,
                        topic: message.topic.into_string(),
                        data: message.data,
                    });
                }
                _ => {}
            }
        }
    }
}

fn execute(swarm: &mut libp2p::Swarm<NoxBehaviour>, cmd: Command) {
    match cmd {
        Command::Dial { peer, addrs } => {
            if swarm.is_connected(&peer) {
                return;
            }
            for a in &addrs {
                swarm.add_peer_address(peer, a.clone());
            }
            let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .condition(libp2p::swarm::dial_opts::PeerCondition::DisconnectedAndNotDialing)
                .addresses(addrs)
                .build();
            if let Err(e) = swarm.dial(opts) {
                tracing::debug!(error = %e, "dial not started");
            }
        }
        Command::Request { peer, request } => {
            swarm.behaviour_mut().control.send_request(&peer, request);
        }
        Command::Respond { channel, response } => {
            // Fails only when the requester has gone away.
            let _ = swarm.behaviour_mut().control.send_response(channel, response);
        }
        Command::Publish { topic, data } => {
            if let Err(e) = swarm.behaviour_mut().gossipsub.publish(IdentTopic::new(topic), data) {
                tracing::debug!(error = %e, topic, "gossip publish failed");
            }
        }
        Command::Validate { message_id, source, accept } => {
            let acceptance = if accept { MessageAcceptance::Accept } else { MessageAcceptance::Reject };
            swarm.behaviour_mut().gossipsub.report_message_validation_result(&message_id, &source, acceptance);
        }
        Command::Disconnect { peer } => {
            let _ = swarm.disconnect_peer_id(peer);
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_full_event_queue_drops_gossip_but_keeps_every_other_event_in_order() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut out = EventOut { tx, backlog: VecDeque::new() };
        let (a, b) = (PeerId::random(), PeerId::random());
        let gossip = |source| Event::Gossip {
            source,
            message_id: MessageId::from(vec![1]),
            topic: DESCRIPTOR_TOPIC.into(),
            data: vec![],
        };
        out.emit(Event::Connected { peer: a }); // fills the queue
        out.emit(gossip(a)); // dropped
        out.emit(Event::Disconnected { peer: a }); // backlogged
        out.emit(gossip(b)); // dropped: the backlog is not empty
        out.emit(Event::Connected { peer: b }); // backlogged after it
        assert_eq!(out.backlog.len(), 2);
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(match rx.recv().await.unwrap() {
                Event::Connected { peer } => ("connected", peer),
                Event::Disconnected { peer } => ("disconnected", peer),
                other => panic!("unexpected {other:?}"),
            });
            out.drain();
        }
        assert_eq!(seen, vec![("connected", a), ("disconnected", a), ("connected", b)]);
        assert!(out.backlog.is_empty() && rx.try_recv().is_err());
    }

    use super::*;

    #[test]
    fn node_id_and_peer_id_round_trip() {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let id = NodeId(sk.verifying_key().to_bytes());
        let peer = peer_id_of(&id).unwrap();
        assert_eq!(node_id_of(&peer), Some(id));
        assert_eq!(keypair_from_identity(&sk).unwrap().public().to_peer_id(), peer);
        // y = 2 is not the y-coordinate of any Edwards25519 point.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert!(matches!(peer_id_of(&NodeId(off_curve)), Err(P2pError::InvalidNodeId)));
        // A peer id that does not carry an Ed25519 key is not a node id.
        assert_eq!(node_id_of(&PeerId::random()), None);
    }

    #[test]
    fn subscribe_replies_debug_hides_ids() {
        let r = ControlRequest::SubscribeReplies { surb_ids: vec![[0xab; 32]] };
        let s = format!("{r:?}");
        assert!(!s.contains("ab") && !s.contains("171"), "{s}");
    }
}
