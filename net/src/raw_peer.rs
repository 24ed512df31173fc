//! A NOX peer without a pipeline: it speaks the handshake, asks for
//! descriptors, opens packet or submission streams and counts what arrives.
//!
//! Three users: a client that submits packets to an entry node and collects
//! replies (the transport half the client SDK builds on), the relay benchmark's
//! load generator, sink and transport-only forwarder, and tests that need a
//! hostile or misbehaving peer (floods, truncated frames, garbage). It answers
//! every `Hello` with a welcome and admits nothing else: it processes no
//! packet, it only hands received frames to its owner or, as a forwarder,
//! passes them unchanged to one next peer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{AsyncReadExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId, Stream};
use nox_protocol::descriptor::MixDescriptor;
use nox_protocol::pow;
use nox_protocol::sphinx::{PACKET_LEN, Packet};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;

use crate::p2p::{
    self, CONTROL_VERSION, Command, ControlRequest, ControlResponse, Event, P2pConfig, P2pHandle, PACKET_PROTOCOL,
    PeerKind, SUBMIT_PROTOCOL,
};
use crate::packet_link::{self, LinkListener, LinkReader, ListenerConfig, PACKET_LINK_PROTOCOL, PacketOut};

/// Errors of a raw peer.
#[derive(Debug, thiserror::Error)]
pub enum RawPeerError {
    /// Transport failure.
    #[error(transparent)]
    P2p(#[from] p2p::P2pError),
    /// The remote did not welcome us in time.
    #[error("no welcome from {0} within the timeout")]
    NotWelcomed(PeerId),
    /// No connection: the dial failed, or the remote closed the connection
    /// before welcoming us (a connection cap, say).
    #[error("cannot reach {peer}: {reason}")]
    Unreachable {
        /// Who.
        peer: PeerId,
        /// What failed.
        reason: String,
    },
    /// The remote refused us.
    #[error("refused by {peer}: {reason}")]
    Refused {
        /// Who.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// Opening or writing a stream failed.
    #[error("stream to {peer}: {reason}")]
    Stream {
        /// Who.
        peer: PeerId,
        /// What failed.
        reason: String,
    },
    /// No answer to a control request.
    #[error("no answer from {0}")]
    NoAnswer(PeerId),
    /// The entry refused some of the claimed SURB ids (the claimant's share
    /// or its claim table is full): their replies will not be pushed.
    #[error("{peer} refused {refused} of {claimed} reply claims")]
    ClaimsRefused {
        /// The entry.
        peer: PeerId,
        /// Ids refused.
        refused: usize,
        /// Ids claimed.
        claimed: usize,
    },
    /// The entry answered a claim with something else than a claim answer.
    #[error("{peer} answered a reply claim with: {reason}")]
    ClaimFailed {
        /// The entry.
        peer: PeerId,
        /// Its answer.
        reason: String,
    },
}

/// How long [`RawPeer::claim_replies`] waits for the entry's answer.
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);

/// The entry's answer to a reply claim: how many ids it holds for us and
/// which it refused.
#[derive(Clone, PartialEq, Eq)]
pub struct ClaimAnswer {
    /// Ids held (or answered at once with a waiting reply).
    pub accepted: usize,
    /// Ids refused, in the order they were claimed.
    pub refused: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ClaimAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SURB ids link a client to its replies: only the counts.
        write!(f, "ClaimAnswer {{ accepted: {}, refused: {} }}", self.accepted, self.refused.len())
    }
}

/// What a raw peer does with the packets it receives on `/nox/packet/1`.
#[derive(Debug, Clone)]
pub enum OnReceive {
    /// Count them and keep up to this many for [`RawPeer::next_packet`]
    /// (further ones are counted and dropped while the queue is full).
    Keep(usize),
    /// Count them and write each, unchanged, to this peer's packet stream,
    /// reading no faster than that peer accepts: a relay with Sphinx taken
    /// out, which is what the relay benchmark compares the node with.
    Forward(PeerId),
    /// Accept packet streams and never read them: a client that stopped
    /// reading, for tests of how a node sheds it.
    Stall,
    /// Keep them as [`OnReceive::Keep`] (up to this many), reading one packet
    /// per interval at most: a client that reads too slowly, for the same tests.
    Trickle(usize, std::time::Duration),
}

/// Where the answers to pending `GetDescriptors` (or `GetPrices`) requests
/// go, oldest first: an answer goes to the oldest asker still waiting (the
/// answers are lists of signed items every asker checks itself, so which
/// peer's list an asker gets does not matter, only that each gets one).
type DescriptorSlot = AnswerSlot<Vec<Vec<u8>>>;

/// Askers waiting for one kind of answer, oldest first.
type AnswerSlot<T> = Arc<Mutex<std::collections::VecDeque<mpsc::Sender<T>>>>;

/// The answer a claimant gets: the claim answer, or the error the entry sent.
type ClaimReply = Result<ClaimAnswer, String>;

/// Hands `encoded` to the oldest asker in `slot` that still waits.
async fn answer<T>(slot: &AnswerSlot<T>, mut encoded: T) {
    let mut waiting = slot.lock().await;
    while let Some(tx) = waiting.pop_front() {
        match tx.send(encoded).await {
            Ok(()) => return,
            // That asker timed out; the next one gets it.
            Err(mpsc::error::SendError(back)) => encoded = back,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Standing {
    Welcomed,
    Refused(String),
    /// The dial failed, or the connection closed before a welcome.
    Unreachable(String),
}

/// A running raw peer.
pub struct RawPeer {
    /// Transport handle.
    pub p2p: P2pHandle,
    kind: PeerKind,
    standing: Arc<std::sync::Mutex<std::collections::HashMap<PeerId, Standing>>>,
    standing_tx: watch::Sender<u64>,
    descriptors: DescriptorSlot,
    prices: DescriptorSlot,
    claims: AnswerSlot<ClaimReply>,
    /// One claim at a time, so each answer goes to the claim it answers.
    claiming: Mutex<()>,
    received: flume::Receiver<Packet>,
    received_count: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
    streams: Mutex<std::collections::HashMap<(PeerId, bool), PacketOut>>,
    /// Where each peer was dialled ([`RawPeer::connect`]): the hosts a packet
    /// link to it is set up at.
    addrs: Addresses,
    /// Whether packets to nodes go on packet links (where offered).
    links: bool,
}

/// The addresses each peer was dialled at.
type Addresses = Arc<std::sync::Mutex<std::collections::HashMap<PeerId, Vec<Multiaddr>>>>;

/// Where a receiving task reads packets from.
enum Source {
    Stream(Stream),
    Link(LinkReader),
}

impl Source {
    /// Reads the next packet into `buf` (`PACKET_LEN` bytes); `false` when
    /// the source ended or failed.
    async fn read(&mut self, buf: &mut Vec<u8>) -> bool {
        match self {
            Source::Stream(s) => s.read_exact(buf).await.is_ok(),
            Source::Link(l) => match l.next_frame().await {
                Ok(frame) => {
                    *buf = frame;
                    true
                }
                Err(_) => false,
            },
        }
    }

    /// Whether another packet is already buffered (a forwarder flushes
    /// only when none is).
    fn buffered(&self) -> bool {
        match self {
            Source::Stream(_) => false,
            Source::Link(l) => l.buffered(),
        }
    }
}

/// Opens what a raw peer sends packets to `peer` on: a packet link when
/// `links` is on and `peer` offers one, else a `/nox/packet/1` stream.
async fn open_packet_out(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    links: bool,
    addrs: &Addresses,
) -> Result<PacketOut, RawPeerError> {
    if links {
        let known = addrs.lock().unwrap_or_else(|e| e.into_inner()).get(&peer).cloned().unwrap_or_default();
        let hosts = packet_link::hosts_of(&known);
        match tokio::time::timeout(Duration::from_secs(10), packet_link::request_link(control, peer, &hosts)).await {
            Ok(Ok(link)) => return Ok(PacketOut::Link(link)),
            Ok(Err(e)) => tracing::debug!(error = %e, "no packet link; sending on a stream"),
            Err(_) => tracing::debug!("packet link setup timed out; sending on a stream"),
        }
    }
    control
        .open_stream(peer, PACKET_PROTOCOL)
        .await
        .map(PacketOut::Stream)
        .map_err(|e| RawPeerError::Stream { peer, reason: e.to_string() })
}

impl std::fmt::Debug for RawPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawPeer").field("peer_id", &self.p2p.peer_id).field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl RawPeer {
    /// Starts a peer with `keypair`, listening on `listen` (may be empty), that
    /// introduces itself as `kind`. Received packets are kept in a queue of
    /// `keep` (while it is full, newly received ones are counted and dropped).
    pub async fn start(
        keypair: Keypair,
        listen: Vec<Multiaddr>,
        kind: PeerKind,
        keep: usize,
    ) -> Result<Self, RawPeerError> {
        Self::start_with(keypair, listen, kind, OnReceive::Keep(keep)).await
    }

    /// Like [`RawPeer::start`], with the received packets handled as `on_receive`
    /// says. A forwarder must be connected to its next peer
    /// ([`RawPeer::connect`]) before packets arrive.
    pub async fn start_with(
        keypair: Keypair,
        listen: Vec<Multiaddr>,
        kind: PeerKind,
        on_receive: OnReceive,
    ) -> Result<Self, RawPeerError> {
        Self::start_secured(keypair, listen, kind, on_receive, p2p::LinkSecurity::default()).await
    }

    /// Like [`RawPeer::start_with`], with links secured as `security` says.
    pub async fn start_secured(
        keypair: Keypair,
        listen: Vec<Multiaddr>,
        kind: PeerKind,
        on_receive: OnReceive,
        security: p2p::LinkSecurity,
    ) -> Result<Self, RawPeerError> {
        Self::start_linked(keypair, listen, kind, on_receive, security, false).await
    }

    /// Like [`RawPeer::start_secured`]; with `links` on, the peer also speaks
    /// packet links (`crate::packet_link`) as a node does: it offers one to
    /// every peer that asks (on the host of its first listen address) and
    /// sends packets ([`RawPeer::send_packet`], and forwarding) on a link
    /// where the receiver offers one.
    pub async fn start_linked(
        keypair: Keypair,
        listen: Vec<Multiaddr>,
        kind: PeerKind,
        on_receive: OnReceive,
        security: p2p::LinkSecurity,
        links: bool,
    ) -> Result<Self, RawPeerError> {
        let keep = match on_receive {
            OnReceive::Keep(n) | OnReceive::Trickle(n, _) => n,
            OnReceive::Forward(_) | OnReceive::Stall => 1,
        };
        let cfg = P2pConfig { listen: listen.clone(), security, ..P2pConfig::default() };
        let (mut handle, mut events, swarm) = p2p::spawn(keypair, cfg)?;
        if !listen.is_empty() {
            handle.wait_listening().await;
        }
        let standing = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let (standing_tx, _) = watch::channel(0u64);
        let descriptors: DescriptorSlot = Arc::new(Mutex::new(std::collections::VecDeque::new()));
        let prices: DescriptorSlot = Arc::new(Mutex::new(std::collections::VecDeque::new()));
        let claims: AnswerSlot<ClaimReply> = Arc::new(Mutex::new(std::collections::VecDeque::new()));
        let (rx_tx, received) = flume::bounded(keep.max(1));
        let received_count = Arc::new(AtomicU64::new(0));
        let mut tasks = vec![swarm];

        let ctl = {
            let handle = handle.clone();
            let standing = standing.clone();
            let standing_tx = standing_tx.clone();
            let descriptors = descriptors.clone();
            let prices = prices.clone();
            let claims = claims.clone();
            tokio::spawn(async move {
                while let Some(ev) = events.recv().await {
                    match ev {
                        Event::DialFailed { peer, reason } => {
                            let mut s = standing.lock().unwrap_or_else(|e| e.into_inner());
                            if s.get(&peer) != Some(&Standing::Welcomed) {
                                s.insert(peer, Standing::Unreachable(reason));
                                standing_tx.send_modify(|v| *v += 1);
                            }
                        }
                        Event::Disconnected { peer } => {
                            let mut s = standing.lock().unwrap_or_else(|e| e.into_inner());
                            match s.get(&peer) {
                                // The remote forgets us too: a new connection needs a new welcome.
                                Some(Standing::Welcomed) => {
                                    s.remove(&peer);
                                }
                                Some(_) => {}
                                None => {
                                    s.insert(peer, Standing::Unreachable("connection closed before a welcome".into()));
                                }
                            }
                            standing_tx.send_modify(|v| *v += 1);
                        }
                        Event::Connected { peer } => {
                            let hello = ControlRequest::Hello { version: CONTROL_VERSION, kind };
                            let _ = handle.command(Command::Request { peer, request: hello }).await;
                        }
                        Event::Request { request, channel, .. } => {
                            let response = match request {
                                ControlRequest::Hello { .. } => ControlResponse::Welcome { kind: PeerKind::Node },
                                ControlRequest::GetDescriptors => ControlResponse::Descriptors { encoded: Vec::new() },
                                ControlRequest::GetPrices => ControlResponse::Prices { encoded: Vec::new() },
                                // It delivers no replies: every claim is refused, and said so.
                                ControlRequest::SubscribeReplies { surb_ids } => {
                                    ControlResponse::Claimed { accepted: 0, refused: surb_ids }
                                }
                            };
                            let _ = handle.command(Command::Respond { channel, response }).await;
                        }
                        Event::Response { peer, response } => match response {
                            ControlResponse::Welcome { .. } => {
                                standing.lock().unwrap_or_else(|e| e.into_inner()).insert(peer, Standing::Welcomed);
                                standing_tx.send_modify(|v| *v += 1);
                            }
                            ControlResponse::Refused { reason } => {
                                standing
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .insert(peer, Standing::Refused(reason));
                                standing_tx.send_modify(|v| *v += 1);
                            }
                            ControlResponse::Descriptors { encoded } => answer(&descriptors, encoded).await,
                            ControlResponse::Prices { encoded } => answer(&prices, encoded).await,
                            ControlResponse::Claimed { accepted, refused } => {
                                let accepted = usize::try_from(accepted).unwrap_or(usize::MAX);
                                answer(&claims, Ok(ClaimAnswer { accepted, refused })).await;
                            }
                            // An error answers the oldest claim waiting, if
                            // any (descriptor and price askers time out).
                            ControlResponse::Error { reason } => answer(&claims, Err(reason)).await,
                            _ => {}
                        },
                        Event::Gossip { message_id, source, .. } => {
                            let _ = handle.command(Command::Validate { message_id, source, accept: false }).await;
                        }
                        _ => {}
                    }
                }
            })
        };
        tasks.push(ctl);

        let mut incoming = handle
            .streams
            .clone()
            .accept(PACKET_PROTOCOL)
            .map_err(|e| RawPeerError::Stream { peer: handle.peer_id, reason: e.to_string() })?;
        let addrs: Addresses = Arc::default();
        let (sources_tx, mut sources) = mpsc::channel::<Source>(16);
        {
            let sources_tx = sources_tx.clone();
            tasks.push(tokio::spawn(async move {
                while let Some((_, stream)) = incoming.next().await {
                    if sources_tx.send(Source::Stream(stream)).await.is_err() {
                        return;
                    }
                }
            }));
        }
        if links {
            let ip = packet_link::first_ip(&listen);
            let bind = std::net::SocketAddr::new(ip.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)), 0);
            let (listener, mut accepted) = LinkListener::bind(bind, ListenerConfig::default(), Default::default(), 16)
                .await
                .map_err(|e| RawPeerError::Stream { peer: handle.peer_id, reason: e.to_string() })?;
            let listener = Arc::new(listener);
            let mut asks = handle
                .streams
                .clone()
                .accept(PACKET_LINK_PROTOCOL)
                .map_err(|e| RawPeerError::Stream { peer: handle.peer_id, reason: e.to_string() })?;
            tasks.push(tokio::spawn(async move {
                while let Some((peer, stream)) = asks.next().await {
                    let listener = listener.clone();
                    tokio::spawn(async move { packet_link::serve_offer(&listener, peer, stream).await });
                }
            }));
            tasks.push(tokio::spawn(async move {
                while let Some((_, link)) = accepted.recv().await {
                    if sources_tx.send(Source::Link(link)).await.is_err() {
                        return;
                    }
                }
            }));
        }
        let count = received_count.clone();
        let control = handle.streams.clone();
        let forward_addrs = addrs.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(mut source) = sources.recv().await {
                let tx = rx_tx.clone();
                let count = count.clone();
                let mut control = control.clone();
                let on_receive = on_receive.clone();
                let addrs = forward_addrs.clone();
                tokio::spawn(async move {
                    let pace = match on_receive {
                        OnReceive::Trickle(_, pace) => Some(pace),
                        _ => None,
                    };
                    let mut out = match on_receive {
                        OnReceive::Keep(_) | OnReceive::Trickle(..) => None,
                        // Hold the source open, read nothing.
                        OnReceive::Stall => {
                            std::future::pending::<()>().await;
                            drop(source);
                            return;
                        }
                        OnReceive::Forward(next) => match open_packet_out(&mut control, next, links, &addrs).await {
                            Ok(s) => Some(s),
                            Err(e) => {
                                tracing::debug!(error = %e, "forwarder cannot reach its next peer");
                                return;
                            }
                        },
                    };
                    let mut buf = vec![0u8; PACKET_LEN];
                    loop {
                        if !source.read(&mut buf).await {
                            return;
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                        if let Some(pace) = pace {
                            tokio::time::sleep(pace).await;
                        }
                        match out.as_mut() {
                            // Forwarding reuses the buffer; keeping hands it over whole.
                            Some(out) => {
                                let Ok(packet) = <&[u8; PACKET_LEN]>::try_from(&buf[..]) else { return };
                                if out.write_packet(packet).await.is_err() {
                                    return;
                                }
                                if !source.buffered() && out.flush().await.is_err() {
                                    return;
                                }
                            }
                            None => {
                                let full = std::mem::replace(&mut buf, vec![0u8; PACKET_LEN]);
                                if let Ok(p) = Packet::from_vec(full) {
                                    let _ = tx.try_send(p);
                                }
                            }
                        }
                    }
                });
            }
        }));
        Ok(RawPeer {
            p2p: handle,
            kind,
            standing,
            standing_tx,
            descriptors,
            prices,
            claims,
            claiming: Mutex::new(()),
            received,
            received_count,
            tasks,
            streams: Mutex::new(std::collections::HashMap::new()),
            addrs,
            links,
        })
    }

    /// Connects to `peer` and waits until it welcomes us.
    pub async fn connect(&self, peer: PeerId, addrs: Vec<Multiaddr>, timeout: Duration) -> Result<(), RawPeerError> {
        let mut rx = self.standing_tx.subscribe();
        {
            // Forget how an earlier attempt ended; keep a live welcome.
            let mut s = self.standing.lock().unwrap_or_else(|e| e.into_inner());
            if s.get(&peer) != Some(&Standing::Welcomed) {
                s.remove(&peer);
            }
        }
        self.addrs.lock().unwrap_or_else(|e| e.into_inner()).insert(peer, addrs.clone());
        self.p2p.command(Command::Dial { peer, addrs }).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.standing.lock().unwrap_or_else(|e| e.into_inner()).get(&peer).cloned();
            match s {
                Some(Standing::Welcomed) => return Ok(()),
                Some(Standing::Refused(reason)) => return Err(RawPeerError::Refused { peer, reason }),
                Some(Standing::Unreachable(reason)) => return Err(RawPeerError::Unreachable { peer, reason }),
                None => {}
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return Err(RawPeerError::NotWelcomed(peer));
            }
        }
    }

    /// Asks `peer` for its descriptors and verifies them.
    pub async fn descriptors(&self, peer: PeerId, timeout: Duration) -> Result<Vec<MixDescriptor>, RawPeerError> {
        let (tx, mut rx) = mpsc::channel(1);
        self.descriptors.lock().await.push_back(tx);
        self.p2p.command(Command::Request { peer, request: ControlRequest::GetDescriptors }).await?;
        let encoded =
            tokio::time::timeout(timeout, rx.recv()).await.ok().flatten().ok_or(RawPeerError::NoAnswer(peer))?;
        Ok(encoded.iter().filter_map(|b| MixDescriptor::decode(b).ok()).filter(|d| d.verify().is_ok()).collect())
    }

    /// Asks `peer` for the price rounds it holds, as encoded; the caller
    /// checks them against its own trusted oracle keys
    /// (`nox_protocol::price::PriceBook`).
    pub async fn price_rounds(&self, peer: PeerId, timeout: Duration) -> Result<Vec<Vec<u8>>, RawPeerError> {
        let (tx, mut rx) = mpsc::channel(1);
        self.prices.lock().await.push_back(tx);
        self.p2p.command(Command::Request { peer, request: ControlRequest::GetPrices }).await?;
        tokio::time::timeout(timeout, rx.recv()).await.ok().flatten().ok_or(RawPeerError::NoAnswer(peer))
    }

    /// Claims replies for `surb_ids` at `peer` (an entry node) and waits for
    /// its answer: an error if it refused any of them
    /// ([`RawPeerError::ClaimsRefused`]; see [`RawPeer::claim_replies_answer`]
    /// to learn which).
    pub async fn claim_replies(&self, peer: PeerId, surb_ids: Vec<[u8; 32]>) -> Result<(), RawPeerError> {
        let claimed = surb_ids.len();
        let answer = self.claim_replies_answer(peer, surb_ids, CLAIM_TIMEOUT).await?;
        match answer.refused.len() {
            0 => Ok(()),
            refused => Err(RawPeerError::ClaimsRefused { peer, refused, claimed }),
        }
    }

    /// Claims replies for `surb_ids` at `peer` and returns its answer: which
    /// ids it holds for us and which it refused. An answer that does not fit
    /// the claim (counts that do not add up, a refused id not claimed) is
    /// [`RawPeerError::ClaimFailed`].
    pub async fn claim_replies_answer(
        &self,
        peer: PeerId,
        surb_ids: Vec<[u8; 32]>,
        timeout: Duration,
    ) -> Result<ClaimAnswer, RawPeerError> {
        let _one_at_a_time = self.claiming.lock().await;
        let (tx, mut rx) = mpsc::channel(1);
        self.claims.lock().await.push_back(tx);
        let claimed: std::collections::HashSet<[u8; 32]> = surb_ids.iter().copied().collect();
        let count = surb_ids.len();
        self.p2p.command(Command::Request { peer, request: ControlRequest::SubscribeReplies { surb_ids } }).await?;
        let reply =
            tokio::time::timeout(timeout, rx.recv()).await.ok().flatten().ok_or(RawPeerError::NoAnswer(peer))?;
        let answer = reply.map_err(|reason| RawPeerError::ClaimFailed { peer, reason })?;
        if answer.accepted.checked_add(answer.refused.len()) != Some(count)
            || answer.refused.iter().any(|id| !claimed.contains(id))
        {
            return Err(RawPeerError::ClaimFailed { peer, reason: format!("an answer that does not fit: {answer:?}") });
        }
        Ok(answer)
    }

    /// Writes `bytes` to `peer`: on `/nox/submit/1` for a submission, else
    /// on the packet stream or link (a link takes whole packets only, sealed
    /// and written at once).
    async fn write(&self, peer: PeerId, submit: bool, bytes: &[u8]) -> Result<(), RawPeerError> {
        let mut streams = self.streams.lock().await;
        #[allow(clippy::map_entry)] // opening the stream is async; the entry API cannot await
        if !streams.contains_key(&(peer, submit)) {
            let mut control = self.p2p.streams.clone();
            let out = if submit {
                control
                    .open_stream(peer, SUBMIT_PROTOCOL)
                    .await
                    .map(PacketOut::Stream)
                    .map_err(|e| RawPeerError::Stream { peer, reason: e.to_string() })?
            } else {
                open_packet_out(&mut control, peer, self.links, &self.addrs).await?
            };
            streams.insert((peer, submit), out);
        }
        let Some(out) = streams.get_mut(&(peer, submit)) else {
            return Err(RawPeerError::Stream { peer, reason: "stream vanished".into() });
        };
        let written = match (&mut *out, <&[u8; PACKET_LEN]>::try_from(bytes)) {
            (PacketOut::Link(_), Ok(packet)) => match out.write_packet(packet).await {
                Ok(()) => out.flush().await,
                Err(e) => Err(e),
            },
            _ => out.write_raw(bytes).await,
        };
        if let Err(e) = written {
            streams.remove(&(peer, submit));
            return Err(RawPeerError::Stream { peer, reason: e.to_string() });
        }
        Ok(())
    }

    /// Writes raw bytes on the packet stream to `peer` (any length: tests use
    /// this for truncated and garbage frames).
    pub async fn send_raw(&self, peer: PeerId, bytes: &[u8]) -> Result<(), RawPeerError> {
        self.write(peer, false, bytes).await
    }

    /// Sends a packet on `/nox/packet/1` (as a node would).
    pub async fn send_packet(&self, peer: PeerId, packet: &Packet) -> Result<(), RawPeerError> {
        self.write(peer, false, packet.as_bytes()).await
    }

    /// Submits a packet on `/nox/submit/1` with a proof of `pow_bits`.
    pub async fn submit(&self, peer: PeerId, packet: &Packet, pow_bits: u8) -> Result<(), RawPeerError> {
        let nonce = {
            let p = packet.clone();
            tokio::task::spawn_blocking(move || pow::solve(&p, pow_bits, rand::random()))
                .await
                .map_err(|e| RawPeerError::Stream { peer, reason: e.to_string() })?
        };
        self.submit_with_nonce(peer, packet, nonce).await
    }

    /// Submits a packet with a nonce found beforehand (see [`pow::solve`]).
    pub async fn submit_with_nonce(&self, peer: PeerId, packet: &Packet, nonce: u64) -> Result<(), RawPeerError> {
        self.write(peer, true, &pow::encode_submission(packet, nonce)).await
    }

    /// Closes the packet/submission streams to `peer` (flushing them).
    pub async fn close_streams(&self, peer: PeerId) {
        let mut streams = self.streams.lock().await;
        for submit in [false, true] {
            if let Some(s) = streams.remove(&(peer, submit)) {
                s.close().await;
            }
        }
    }

    /// Waits up to `timeout` for the next received packet.
    pub async fn next_packet(&self, timeout: Duration) -> Option<Packet> {
        tokio::time::timeout(timeout, self.received.recv_async()).await.ok().and_then(Result::ok)
    }

    /// Packets received so far (including ones dropped from the full queue).
    pub fn received(&self) -> u64 {
        self.received_count.load(Ordering::Relaxed)
    }

    /// The counter behind [`RawPeer::received`], to read from another thread.
    pub fn received_counter(&self) -> Arc<AtomicU64> {
        self.received_count.clone()
    }

    /// Stops the peer (closes its connections).
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn each_answer_goes_to_the_oldest_asker_still_waiting() {
        let slot: DescriptorSlot = Arc::new(Mutex::new(std::collections::VecDeque::new()));
        let (gone_tx, gone_rx) = mpsc::channel(1);
        let (first_tx, mut first_rx) = mpsc::channel(1);
        let (second_tx, mut second_rx) = mpsc::channel(1);
        for tx in [gone_tx, first_tx, second_tx] {
            slot.lock().await.push_back(tx);
        }
        // The oldest asker timed out: its answer goes to the next one.
        drop(gone_rx);
        answer(&slot, vec![vec![1]]).await;
        answer(&slot, vec![vec![2]]).await;
        assert_eq!(first_rx.recv().await.unwrap(), vec![vec![1]]);
        assert_eq!(second_rx.recv().await.unwrap(), vec![vec![2]]);
        // An answer nobody waits for is dropped.
        answer(&slot, vec![vec![3]]).await;
        assert!(slot.lock().await.is_empty());
    }
}
