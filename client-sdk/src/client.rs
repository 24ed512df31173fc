//! [`Client`]: a connection to the mixnet through one entry node, and the
//! request/answer loop every NOX application uses.
//!
//! ```text
//!  Client::request ──► choose exit (offers the kind) ──► route entry → mix → exit, delays ~ Exp(mean)
//!        │                                                  SURBs over mix → entry, budget by kind
//!        │            claim SURB ids at the entry, submit packets with PoW
//!        ▼
//!  dispatcher task ◄── reply packets from the entry (marked with their SURB id)
//!        │ open with that SURB's keys (authenticates the exit's answer)
//!        ▼
//!  reassemble ──► Reply ──► MoreSurbs(n)? send a SurbTopUp with n SURBs, keep waiting
//!                        ──► otherwise: the answer
//! ```
//!
//! **Retries.** An attempt with no answer by `attempt_timeout` is sent again
//! with the same request id over a fresh route and fresh SURBs. The second
//! attempt goes to the same exit (whose reply book answers a repeat without
//! performing it again), later ones to another exit offering the kind (the
//! first may be gone). The keys of every attempt stay live, so an answer
//! through an earlier attempt's SURBs still counts.
//!
//! **What the entry learns.** It sees the client's packets and the replies it
//! pushes back, never a route beyond the next hop nor any content.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::{Multiaddr, PeerId};
use nox_net::p2p::{PeerKind, peer_id_of};
use nox_net::raw_peer::{RawPeer, RawPeerError};
use nox_protocol::NodeId;
use nox_protocol::descriptor::EpochClock;
use nox_protocol::fragment::{Fragmenter, Reassembled, Reassembler, ReassemblyLimits};
use nox_protocol::payload::{Envelope, MAX_SURBS, Reply, ReplyStatus, Request, RequestKind};
use nox_protocol::route::{RouteError, RouteSet, sample_delays};
use nox_protocol::sphinx::surb::delivered_surb_id;
use nox_protocol::sphinx::{Hop, Packet, PacketBuilder, SurbKeys};
use nox_protocol::topology::{ENTRY_LAYER, EXIT_LAYER};
use rand::RngCore;
use rand::seq::SliceRandom;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::budget::SurbBudget;
use crate::cover::{CoverRates, LoopStats, next_gap};
use crate::directory::{BadStaticMember, Directory, StaticMember};

/// Where the client learns the network's members.
#[derive(Debug, Clone)]
pub enum TopologySource {
    /// A fixed list (development networks without a chain).
    Static(Vec<StaticMember>),
    /// NoxRegistry, followed with confirmations and reorg handling.
    Registry(nox_eth::registry::follower::FollowerConfig),
}

/// How routes are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteShape {
    /// Entry → mix → exit (Loopix's stratified topology).
    Stratified,
    /// This many hops (3–6): the entry, any nodes, the exit.
    Free(usize),
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Where members come from.
    pub topology: TopologySource,
    /// The network's epoch length in seconds.
    pub epoch_secs: u64,
    /// The entry node to use; a random registered entry when `None`.
    pub entry: Option<NodeId>,
    /// Mean of the exponential per-hop delay the client samples.
    pub mean_delay: Duration,
    /// Route shape.
    pub route: RouteShape,
    /// Proof-of-work difficulty the entry requires.
    pub pow_bits: u8,
    /// How long one attempt waits for its answer.
    pub attempt_timeout: Duration,
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// SURBs per request kind.
    pub surbs: SurbBudget,
    /// Longest answer the client reassembles.
    pub max_reply_bytes: usize,
    /// Dialling and control-request timeout.
    pub connect_timeout: Duration,
    /// How often a long-running caller should call [`Client::refresh`]
    /// (members, and the next epoch's descriptors before it starts). The
    /// client does not refresh by itself; `nox-client proxy` does, on this
    /// period.
    pub refresh_every: Duration,
    /// Cover traffic (off unless asked for: long-running clients turn it on).
    pub cover: CoverRates,
    /// Packets per second this client submits to its entry at most, when
    /// cover is off (with cover on, the payload stream paces them). An entry
    /// drops a client's packets beyond its `ingest.client_rate` (100/s by
    /// default) and burst (200): a large request sent at once would lose
    /// fragments.
    pub submit_rate: f64,
    /// Packets this client may submit at once before `submit_rate` applies.
    pub submit_burst: u32,
}

impl ClientConfig {
    /// Defaults around `topology`.
    pub fn new(topology: TopologySource) -> Self {
        ClientConfig {
            topology,
            epoch_secs: nox_protocol::descriptor::DEFAULT_EPOCH_SECS,
            entry: None,
            mean_delay: Duration::from_millis(50),
            route: RouteShape::Stratified,
            pow_bits: 12,
            attempt_timeout: Duration::from_secs(20),
            attempts: 3,
            surbs: SurbBudget::default(),
            max_reply_bytes: 8 << 20,
            connect_timeout: Duration::from_secs(10),
            refresh_every: Duration::from_secs(60),
            cover: CoverRates::off(),
            submit_rate: 80.0,
            submit_burst: 150,
        }
    }
}

/// Why a request got no answer, or the client could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The topology source failed (registry unreachable, wrong chain).
    #[error("topology: {0}")]
    Topology(String),
    /// A static member does not parse.
    #[error(transparent)]
    StaticMember(#[from] BadStaticMember),
    /// No entry node is known, or the configured one is not a member.
    #[error("no usable entry node: {0}")]
    NoEntry(String),
    /// The entry node could not be reached or refused the client.
    #[error("entry node: {0}")]
    Entry(#[from] RawPeerError),
    /// No route can be drawn for the epoch.
    #[error("no route: {0}")]
    NoRoute(#[from] RouteError),
    /// No exit with a valid descriptor offers the request's kind.
    #[error("no exit offers {0}")]
    NoExit(&'static str),
    /// No valid descriptor for the current epoch.
    #[error("no valid descriptors for epoch {0} (the entry sent none that verify for registered nodes)")]
    NoDescriptors(u64),
    /// Building the packets failed.
    #[error("building the request: {0}")]
    Build(String),
    /// The request is larger than a message can be.
    #[error("the request of {len} bytes exceeds the largest message ({max} bytes)")]
    RequestTooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No answer after every attempt.
    #[error("no answer after {attempts} attempts of {per_attempt:?} each")]
    Timeout {
        /// Attempts made.
        attempts: u32,
        /// Wait per attempt.
        per_attempt: Duration,
    },
    /// The exit needs more SURBs than a client may send for one answer.
    #[error("the answer needs {needed} more SURBs, beyond the client's limit for one answer")]
    ReplyTooLarge {
        /// SURBs asked for.
        needed: usize,
    },
    /// The answer does not decode.
    #[error("undecodable answer: {0}")]
    BadReply(String),
    /// The exit answered with an error status.
    #[error("the exit answered {}: {message}", status.label())]
    Status {
        /// The status.
        status: ReplyStatus,
        /// The exit's explanation.
        message: String,
    },
    /// The client has shut down.
    #[error("the client has shut down")]
    Closed,
    /// More real packets wait for a cover tick than the queue holds.
    #[error("{0} packets already wait to be sent (cover.queue); try again later")]
    QueueFull(usize),
}

/// Progress of one request, for a caller that shows long waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Attempt `n` (from 1) sent.
    Sent {
        /// Attempt number.
        attempt: u32,
        /// Packets submitted.
        packets: usize,
    },
    /// The exit asked for more SURBs; they were sent.
    ToppedUp {
        /// SURBs sent.
        surbs: usize,
    },
    /// A fragment of the answer arrived.
    Fragment {
        /// Fragments so far.
        received: usize,
    },
    /// The answer is complete. The delays the client sampled on the way of
    /// the last packet out and the last fragment back: what the mixing asked
    /// for, as opposed to what the network added.
    Answered {
        /// Sampled delays of the slowest forward route of the last attempt, µs.
        forward_delay_us: u64,
        /// Sampled delays of the SURB route of the last fragment back, µs.
        reply_delay_us: u64,
    },
}

/// A reply fragment and the delays sampled for the SURB route it came back
/// over, in microseconds.
type Arrived = (Vec<u8>, u64);

/// SURB id → its keys, where its fragment goes, and its route's sampled delays.
type Waiters = Arc<Mutex<HashMap<[u8; 32], (SurbKeys, mpsc::UnboundedSender<Arrived>, u64)>>>;

/// What the client and its cover tasks share: the link to the entry, the
/// directory, the route settings and the SURB keys waiting for replies.
#[derive(Clone)]
struct Wire {
    peer: Arc<RawPeer>,
    entry: (NodeId, PeerId),
    directory: Arc<RwLock<Directory>>,
    waiters: Waiters,
    clock: EpochClock,
    shape: RouteShape,
    mean_delay: Duration,
    pow_bits: u8,
}

/// A client connected to an entry node.
pub struct Client {
    cfg: ClientConfig,
    wire: Wire,
    follower: Option<tokio::sync::Mutex<nox_eth::registry::follower::RegistryFollower>>,
    /// Real packets waiting for a payload tick (cover on), or `None` (sent at once).
    outbound: Option<flume::Sender<Packet>>,
    /// Paces packets sent at once (cover off) to the entry's client rate.
    pacer: Pacer,
    stats: Arc<LoopStats>,
    tasks: Vec<JoinHandle<()>>,
}

/// A token bucket: [`Pacer::take`] waits until a packet may be submitted.
#[derive(Debug)]
struct Pacer {
    rate: f64,
    burst: f64,
    state: tokio::sync::Mutex<(f64, tokio::time::Instant)>,
}

impl Pacer {
    fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Pacer { rate, burst, state: tokio::sync::Mutex::new((burst, tokio::time::Instant::now())) }
    }

    /// Waits for one token. A rate that is not positive and finite paces
    /// nothing.
    async fn take(&self) {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return;
        }
        let mut state = self.state.lock().await;
        let now = tokio::time::Instant::now();
        state.0 = (state.0 + now.duration_since(state.1).as_secs_f64() * self.rate).min(self.burst);
        state.1 = now;
        if state.0 < 1.0 {
            // Held across the sleep: the next caller queues behind this one.
            let wait = Duration::from_secs_f64((1.0 - state.0) / self.rate);
            tokio::time::sleep(wait).await;
            state.0 = 1.0;
            state.1 = tokio::time::Instant::now();
        }
        state.0 -= 1.0;
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("entry", &self.wire.entry.0).finish_non_exhaustive()
    }
}

impl Client {
    /// Learns the members, connects to an entry, fetches its descriptors.
    pub async fn connect(cfg: ClientConfig) -> Result<Self, ClientError> {
        let clock = EpochClock::new(cfg.epoch_secs).map_err(|e| ClientError::Topology(e.to_string()))?;
        let (directory, follower) = match &cfg.topology {
            TopologySource::Static(list) => (Directory::from_static(list)?, None),
            TopologySource::Registry(fc) => {
                let store = Arc::new(nox_eth::registry::follower::MemoryProgress::default());
                let (mut f, _) = nox_eth::registry::follower::RegistryFollower::new(fc.clone(), store)
                    .map_err(|e| ClientError::Topology(e.to_string()))?;
                f.poll().await.map_err(|e| ClientError::Topology(e.to_string()))?;
                let mut d = Directory::new();
                d.set_members_from_registry(f.view());
                (d, Some(tokio::sync::Mutex::new(f)))
            }
        };
        let entries = directory.layer(ENTRY_LAYER);
        let (entry_id, entry) = match cfg.entry {
            Some(id) => entries
                .iter()
                .find(|(n, _)| *n == id)
                .cloned()
                .ok_or_else(|| ClientError::NoEntry("the configured entry is not a member of layer 0".into()))?,
            None => entries
                .choose(&mut rand::thread_rng())
                .cloned()
                .ok_or_else(|| ClientError::NoEntry("no member in layer 0".into()))?,
        };
        let entry_peer = peer_id_of(&entry_id).map_err(|e| ClientError::NoEntry(e.to_string()))?;
        let addr: Multiaddr =
            entry.address.parse().map_err(|e| ClientError::NoEntry(format!("address {}: {e}", entry.address)))?;
        let keypair = libp2p::identity::Keypair::generate_ed25519();
        let peer = Arc::new(RawPeer::start(keypair, Vec::new(), PeerKind::Client, 4096).await?);
        peer.connect(entry_peer, vec![addr], cfg.connect_timeout).await?;
        let waiters: Waiters = Arc::default();
        let wire = Wire {
            peer: peer.clone(),
            entry: (entry_id, entry_peer),
            directory: Arc::new(RwLock::new(directory)),
            waiters: waiters.clone(),
            clock,
            shape: cfg.route,
            mean_delay: cfg.mean_delay,
            pow_bits: cfg.pow_bits,
        };
        let pacer = Pacer::new(cfg.submit_rate, cfg.submit_burst);
        let mut client =
            Client { wire, follower, outbound: None, pacer, stats: Arc::default(), tasks: Vec::new(), cfg };
        client.refresh_descriptors().await?;
        client.tasks.push(tokio::spawn(dispatch(peer, waiters)));
        let rates = client.cfg.cover;
        if rates.enabled {
            let (tx, rx) = flume::bounded(rates.queue.max(1));
            client.outbound = Some(tx);
            let (w, st) = (client.wire.clone(), client.stats.clone());
            client.tasks.push(tokio::spawn(payload_stream(w, rates, rx, st)));
            if rates.loops > 0.0 {
                let (w, st) = (client.wire.clone(), client.stats.clone());
                client.tasks.push(tokio::spawn(loop_stream(w, rates, st)));
            }
            if rates.drops > 0.0 {
                let (w, st) = (client.wire.clone(), client.stats.clone());
                client.tasks.push(tokio::spawn(drop_stream(w, rates, st)));
            }
        }
        Ok(client)
    }

    /// The entry node's id.
    pub fn entry(&self) -> NodeId {
        self.wire.entry.0
    }

    /// Loops sent and returned, cover and real payload ticks (cover on).
    pub fn cover_stats(&self) -> &LoopStats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// The current epoch by this machine's clock.
    pub fn epoch(&self) -> u64 {
        self.wire.epoch()
    }

    /// The routes of the current epoch.
    pub fn route_set(&self) -> RouteSet {
        self.wire.route_set()
    }

    /// Polls the registry (when it is the source) and takes the entry's
    /// descriptors again. Returns how many descriptors were accepted.
    pub async fn refresh(&self) -> Result<usize, ClientError> {
        if let Some(f) = &self.follower {
            let mut f = f.lock().await;
            f.poll().await.map_err(|e| ClientError::Topology(e.to_string()))?;
            self.wire.directory.write().unwrap_or_else(|e| e.into_inner()).set_members_from_registry(f.view());
        }
        self.refresh_descriptors().await
    }

    async fn refresh_descriptors(&self) -> Result<usize, ClientError> {
        let descriptors = self.wire.peer.descriptors(self.wire.entry.1, self.cfg.connect_timeout).await?;
        let current = self.epoch();
        let mut dir = self.wire.directory.write().unwrap_or_else(|e| e.into_inner());
        let accepted = descriptors.into_iter().filter(|d| dir.accept(d.clone(), current).is_ok()).count();
        if dir.route_set(current).layer(ENTRY_LAYER).is_empty() {
            return Err(ClientError::NoDescriptors(current));
        }
        Ok(accepted)
    }

    /// Sends `request` and waits for the answer's data (`ReplyStatus::Ok`);
    /// any other status is [`ClientError::Status`].
    pub async fn call(&self, request: Request) -> Result<Vec<u8>, ClientError> {
        self.call_with_progress(request, |_| {}).await
    }

    /// [`Client::call`], reporting progress.
    pub async fn call_with_progress(
        &self,
        request: Request,
        progress: impl FnMut(Progress),
    ) -> Result<Vec<u8>, ClientError> {
        let reply = self.request(request, progress).await?;
        match reply.status {
            ReplyStatus::Ok => Ok(reply.data),
            status => Err(ClientError::Status { status, message: String::from_utf8_lossy(&reply.data).into_owned() }),
        }
    }

    /// Every piece of equivocation evidence the directory holds: nodes that
    /// signed two mix keys for one epoch, excluded from routes in that epoch.
    /// Each holds both signed descriptors, which anyone can verify again.
    pub fn equivocations(&self) -> Vec<nox_protocol::descriptor::Equivocation> {
        self.wire.directory.read().unwrap_or_else(|e| e.into_inner()).equivocations().cloned().collect()
    }

    /// The exits of the current epoch that perform paid calls, with the fee
    /// policy each signed.
    pub fn paying_exits(&self) -> Vec<(NodeId, nox_protocol::descriptor::FeePolicy)> {
        let epoch = self.epoch();
        self.wire.directory.read().unwrap_or_else(|e| e.into_inner()).fee_policies(epoch)
    }

    /// The entry's latest signed price round of each oracle it follows, as
    /// encoded and unchecked: [`Client::price_book`] checks them against the
    /// client's own oracle keys.
    pub async fn price_rounds(&self) -> Result<Vec<Vec<u8>>, ClientError> {
        Ok(self.wire.peer.price_rounds(self.wire.entry.1, self.cfg.connect_timeout).await?)
    }

    /// Sends `request` through the mixnet and returns the exit's reply,
    /// retrying and topping up SURBs as the module describes.
    pub async fn request(&self, request: Request, progress: impl FnMut(Progress)) -> Result<Reply, ClientError> {
        self.request_via(request, None, None, self.cfg.attempt_timeout, progress).await
    }

    /// [`Client::request`] under a request id the caller chose and keeps
    /// across calls, so that an exit that performed the request once (its
    /// acknowledgement lost on the way back) recognises a later try as the
    /// same request and does not perform it twice. Mail is sent this way:
    /// each queued message has its own id for its whole life. The id must
    /// be unpredictable to anyone else (derive it with a key, or draw it).
    pub async fn request_as(
        &self,
        request_id: [u8; 16],
        request: Request,
        progress: impl FnMut(Progress),
    ) -> Result<Reply, ClientError> {
        self.request_via(request, None, Some(request_id), self.cfg.attempt_timeout, progress).await
    }

    /// [`Client::request`] to one exit, every attempt: for requests only that
    /// exit can serve (a paid call names its wallet). `attempt_timeout`
    /// replaces the configured one (a paid call waits for its inclusion).
    pub async fn request_to(
        &self,
        exit: NodeId,
        request: Request,
        attempt_timeout: Duration,
        progress: impl FnMut(Progress),
    ) -> Result<Reply, ClientError> {
        self.request_via(request, Some(exit), None, attempt_timeout, progress).await
    }

    async fn request_via(
        &self,
        request: Request,
        pinned: Option<NodeId>,
        fixed_id: Option<[u8; 16]>,
        attempt_timeout: Duration,
        mut progress: impl FnMut(Progress),
    ) -> Result<Reply, ClientError> {
        let kind = request.kind();
        let request_id = fixed_id.unwrap_or_else(|| {
            let mut id = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut id);
            id
        });
        let surbs = self.cfg.surbs.for_request(&request);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut ids: Vec<[u8; 32]> = Vec::new();
        let result = async {
            let mut tried: Vec<NodeId> = Vec::new();
            let mut exit = None;
            let limits = ReassemblyLimits {
                max_message_len: u32::try_from(self.cfg.max_reply_bytes + 64).unwrap_or(u32::MAX),
                ..ReassemblyLimits::default()
            };
            let mut reassembler = Reassembler::new(limits);
            let mut received = 0usize;
            let mut topped_up = 0usize;
            let mut forward_delay_us;
            for attempt in 1..=self.cfg.attempts.max(1) {
                let set = self.route_set();
                let exits = set.exits_offering(kind);
                if exits.is_empty() {
                    return Err(ClientError::NoExit(kind.name()));
                }
                // Attempts 1 and 2 use one exit; later ones another if there is
                // one — unless the request names its exit.
                let chosen = match (pinned, exit) {
                    (Some(p), _) if exits.contains(&p) => p,
                    (Some(_), _) => return Err(ClientError::NoExit(kind.name())),
                    (None, Some(e)) if attempt <= 2 && exits.contains(&e) => e,
                    _ => {
                        let fresh: Vec<NodeId> = exits.iter().copied().filter(|e| !tried.contains(e)).collect();
                        *fresh
                            .choose(&mut rand::thread_rng())
                            .or_else(|| exits.choose(&mut rand::thread_rng()))
                            .ok_or(ClientError::NoExit(kind.name()))?
                    }
                };
                exit = Some(chosen);
                tried.push(chosen);
                let envelope = Envelope { request_id, surbs: Vec::new(), request: request.clone() };
                let (packets, delay) = self.send(&set, chosen, envelope, surbs, &tx, &mut ids).await?;
                forward_delay_us = delay;
                progress(Progress::Sent { attempt, packets });
                let deadline = tokio::time::Instant::now() + attempt_timeout;
                loop {
                    let Ok(Some((fragment, back))) = tokio::time::timeout_at(deadline, rx.recv()).await else {
                        break;
                    };
                    let Ok(Reassembled::Complete(msg)) = reassembler.insert(&fragment, Instant::now()) else {
                        received += 1;
                        progress(Progress::Fragment { received });
                        continue;
                    };
                    let reply = Reply::decode(&msg).map_err(|e| ClientError::BadReply(e.to_string()))?;
                    if reply.request_id != request_id {
                        return Err(ClientError::BadReply("the answer names another request".into()));
                    }
                    if let Some(needed) = reply.surbs_needed() {
                        let needed = usize::from(needed);
                        topped_up += needed;
                        if topped_up > nox_protocol::fragment::DEFAULT_BUCKETS[8] as usize {
                            return Err(ClientError::ReplyTooLarge { needed });
                        }
                        self.top_up(&set, chosen, request_id, needed, &tx, &mut ids).await?;
                        progress(Progress::ToppedUp { surbs: needed });
                        continue;
                    }
                    progress(Progress::Answered { forward_delay_us, reply_delay_us: back });
                    return Ok(reply);
                }
            }
            Err(ClientError::Timeout { attempts: self.cfg.attempts.max(1), per_attempt: attempt_timeout })
        }
        .await;
        // Whatever happened, this request's SURB keys are done with.
        let mut w = self.wire.waiters.lock().unwrap_or_else(|e| e.into_inner());
        for id in &ids {
            w.remove(id);
        }
        result
    }

    /// Builds `envelope` with `surbs` fresh SURBs over a fresh route to
    /// `exit`, registers the keys, claims the ids and sends the packets
    /// (through the payload stream when cover is on).
    async fn send(
        &self,
        set: &RouteSet,
        exit: NodeId,
        envelope: Envelope,
        surbs: usize,
        tx: &mpsc::UnboundedSender<Arrived>,
        ids: &mut Vec<[u8; 32]>,
    ) -> Result<(usize, u64), ClientError> {
        let (packets, delay) = self.wire.prepare(set, exit, envelope, surbs, tx, ids).await?;
        let count = packets.len();
        for packet in packets {
            match &self.outbound {
                Some(queue) => queue.try_send(packet).map_err(|_| ClientError::QueueFull(queue.len()))?,
                None => {
                    self.pacer.take().await;
                    self.wire.peer.submit(self.wire.entry.1, &packet, self.wire.pow_bits).await?
                }
            }
        }
        Ok((count, delay))
    }

    /// Sends `needed` more SURBs for the held answer to `request_id`.
    async fn top_up(
        &self,
        set: &RouteSet,
        exit: NodeId,
        request_id: [u8; 16],
        needed: usize,
        tx: &mpsc::UnboundedSender<Arrived>,
        ids: &mut Vec<[u8; 32]>,
    ) -> Result<(), ClientError> {
        let mut left = needed;
        while left > 0 {
            let n = left.min(MAX_SURBS);
            let envelope = Envelope { request_id, surbs: Vec::new(), request: Request::SurbTopUp };
            self.send(set, exit, envelope, n, tx, ids).await?;
            left -= n;
        }
        Ok(())
    }

    /// Echoes `data` through an exit that offers echo.
    pub async fn echo(&self, data: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        self.call(Request::Echo { data }).await
    }

    /// Whether any exit offers `kind` in the current epoch.
    pub fn offers(&self, kind: RequestKind) -> bool {
        !self.route_set().exits_offering(kind).is_empty()
    }

    /// Stops the client's tasks and closes its connection.
    pub async fn shutdown(mut self) {
        self.outbound = None;
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        let Client { wire, .. } = self;
        if let Ok(peer) = Arc::try_unwrap(wire.peer) {
            peer.shutdown().await;
        }
    }
}

/// Hands each reply packet to the request whose SURB it came through.
async fn dispatch(peer: Arc<RawPeer>, waiters: Waiters) {
    loop {
        let Some(packet) = peer.next_packet(Duration::from_secs(1)).await else { continue };
        let id = delivered_surb_id(&packet);
        let waiter = waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        // A SURB is single-use: its keys go with its reply.
        if let Some((keys, tx, delay)) = waiter
            && let Ok(fragment) = keys.open(packet.body())
        {
            let _ = tx.send((fragment, delay));
        }
    }
}

impl Wire {
    fn epoch(&self) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.clock.epoch_at(now)
    }

    fn route_set(&self) -> RouteSet {
        self.directory.read().unwrap_or_else(|e| e.into_inner()).route_set(self.epoch())
    }

    /// Builds `envelope` with `surbs` fresh SURBs, registers their keys to
    /// `tx`, claims their ids at the entry, and returns one packet per
    /// fragment, each over its own fresh route to `exit`, with the largest
    /// sum of sampled delays among those routes (µs).
    async fn prepare(
        &self,
        set: &RouteSet,
        exit: NodeId,
        mut envelope: Envelope,
        surbs: usize,
        tx: &mpsc::UnboundedSender<Arrived>,
        ids: &mut Vec<[u8; 32]>,
    ) -> Result<(Vec<Packet>, u64), ClientError> {
        let builder = PacketBuilder::new(self.epoch());
        let mut rng = rand::rngs::OsRng;
        let mut built = Vec::with_capacity(surbs);
        for _ in 0..surbs.min(MAX_SURBS) {
            let back = self.surb_route(set)?;
            let mut id = [0u8; 32];
            rng.fill_bytes(&mut id);
            let (surb, keys) = builder.surb(&back, id, &mut rng).map_err(|e| ClientError::Build(e.to_string()))?;
            let delay = back.iter().map(|h| u64::from(h.delay_us)).sum();
            self.waiters.lock().unwrap_or_else(|e| e.into_inner()).insert(id, (keys, tx.clone(), delay));
            ids.push(id);
            built.push((id, surb));
        }
        // Claim before sending: the entry answers which ids it holds for us.
        // A refused id's reply would not be pushed, so its SURB is left out
        // (the exit asks for more SURBs if the rest are too few); a request
        // left with none, or a top-up short of what the exit asked for, fails
        // with the entry's refusal.
        let claims: Vec<[u8; 32]> = built.iter().map(|(id, _)| *id).collect();
        let mut refused = std::collections::HashSet::new();
        for chunk in claims.chunks(nox_net::control::MAX_REPLY_CLAIMS) {
            let answer =
                self.peer.claim_replies_answer(self.entry.1, chunk.to_vec(), nox_net::raw_peer::CLAIM_TIMEOUT).await?;
            refused.extend(answer.refused);
        }
        if !refused.is_empty() {
            let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            for id in &refused {
                waiters.remove(id);
            }
            if refused.len() == built.len() || envelope.request == Request::SurbTopUp {
                return Err(ClientError::Entry(RawPeerError::ClaimsRefused {
                    peer: self.entry.1,
                    refused: refused.len(),
                    claimed: built.len(),
                }));
            }
        }
        envelope.surbs.extend(built.into_iter().filter(|(id, _)| !refused.contains(id)).map(|(_, surb)| surb));
        let message = envelope.encode().map_err(|e| ClientError::Build(e.to_string()))?;
        let fragmenter = Fragmenter::default();
        if message.len() > fragmenter.max_message_len() {
            return Err(ClientError::RequestTooLarge { len: message.len(), max: fragmenter.max_message_len() });
        }
        let mut message_id = [0u8; 16];
        rng.fill_bytes(&mut message_id);
        let fragments = fragmenter.split(&message, message_id).map_err(|e| ClientError::Build(e.to_string()))?;
        let mut packets = Vec::with_capacity(fragments.len());
        let mut slowest = 0u64;
        for f in fragments {
            // Every fragment takes its own route to the same exit.
            let route = self.forward_route(set, exit)?;
            slowest = slowest.max(route.iter().map(|h| u64::from(h.delay_us)).sum());
            let (_, packet) = builder.forward(&route, &f, &mut rng).map_err(|e| ClientError::Build(e.to_string()))?;
            packets.push(packet);
        }
        Ok((packets, slowest))
    }

    /// The client's entry, then the route's middle, then `exit`; delays sampled.
    fn forward_route(&self, set: &RouteSet, exit: NodeId) -> Result<Vec<Hop>, ClientError> {
        let mut rng = rand::thread_rng();
        let (entry, exit) = (Some(self.entry.0), Some(exit));
        let mut route = match self.shape {
            RouteShape::Stratified => set.stratified_between(entry, exit, &[], &mut rng),
            RouteShape::Free(hops) => set.free_between(hops, entry, exit, &mut rng),
        }
        .map_err(|e| match e {
            RouteError::UnknownEntry => ClientError::NoDescriptors(self.epoch()),
            other => other.into(),
        })?;
        sample_delays(&mut route, self.mean_delay, &mut rng);
        Ok(route)
    }

    /// A SURB route: a mix, then the client's entry, which delivers to it.
    fn surb_route(&self, set: &RouteSet) -> Result<Vec<Hop>, ClientError> {
        let mut rng = rand::thread_rng();
        let mut route = vec![set.pick(1, &[], &mut rng)?, self.entry_hop(set)?];
        sample_delays(&mut route, self.mean_delay, &mut rng);
        Ok(route)
    }

    fn entry_hop(&self, set: &RouteSet) -> Result<Hop, ClientError> {
        let key = set.key_of(&self.entry.0).ok_or(ClientError::NoDescriptors(self.epoch()))?;
        Ok(Hop { id: self.entry.0, key, delay_us: 0 })
    }

    /// A drop: a cover payload over a full route to a random exit.
    fn drop_packet(&self) -> Result<Packet, ClientError> {
        let set = self.route_set();
        let mut rng = rand::thread_rng();
        let exit = set.pick(EXIT_LAYER, &[], &mut rng)?.id;
        let route = self.forward_route(&set, exit)?;
        let payload = nox_protocol::cover::drop_payload(&mut rand::rngs::OsRng);
        let (_, packet) = PacketBuilder::new(self.epoch())
            .forward(&route, &payload, &mut rand::rngs::OsRng)
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(packet)
    }

    async fn submit(&self, packet: &Packet) -> Result<(), ClientError> {
        Ok(self.peer.submit(self.entry.1, packet, self.pow_bits).await?)
    }
}

/// λP: each tick sends the next real packet, or a drop when none waits.
async fn payload_stream(wire: Wire, rates: CoverRates, queue: flume::Receiver<Packet>, stats: Arc<LoopStats>) {
    loop {
        let gap = next_gap(rates.payload, &mut rand::thread_rng());
        tokio::time::sleep(gap).await;
        let packet = match queue.try_recv() {
            Ok(p) => {
                stats.real.fetch_add(1, Ordering::Relaxed);
                p
            }
            Err(flume::TryRecvError::Empty) => match wire.drop_packet() {
                Ok(p) => {
                    stats.dropped_cover.fetch_add(1, Ordering::Relaxed);
                    p
                }
                Err(_) => continue,
            },
            Err(flume::TryRecvError::Disconnected) => return,
        };
        let _ = wire.submit(&packet).await;
    }
}

/// λD: drops on their own Poisson clock.
async fn drop_stream(wire: Wire, rates: CoverRates, stats: Arc<LoopStats>) {
    loop {
        let gap = next_gap(rates.drops, &mut rand::thread_rng());
        tokio::time::sleep(gap).await;
        if let Ok(p) = wire.drop_packet() {
            stats.dropped_cover.fetch_add(1, Ordering::Relaxed);
            let _ = wire.submit(&p).await;
        }
    }
}

/// λL: echo requests with one SURB through an exit and back to this client.
async fn loop_stream(wire: Wire, rates: CoverRates, stats: Arc<LoopStats>) {
    loop {
        let gap = next_gap(rates.loops, &mut rand::thread_rng());
        tokio::time::sleep(gap).await;
        let set = wire.route_set();
        let Some(exit) = set.exits_offering(RequestKind::Echo).choose(&mut rand::thread_rng()).copied() else {
            continue;
        };
        let mut request_id = [0u8; 16];
        let mut data = vec![0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut request_id);
        rand::rngs::OsRng.fill_bytes(&mut data);
        let envelope = Envelope { request_id, surbs: Vec::new(), request: Request::Echo { data: data.clone() } };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut ids = Vec::new();
        let Ok((packets, _)) = wire.prepare(&set, exit, envelope, 1, &tx, &mut ids).await else { continue };
        stats.sent.fetch_add(1, Ordering::Relaxed);
        for p in &packets {
            let _ = wire.submit(p).await;
        }
        let (waiters, stats) = (wire.waiters.clone(), stats.clone());
        tokio::spawn(async move {
            let came_back = async {
                let (fragment, _) = rx.recv().await?;
                let mut r = Reassembler::new(ReassemblyLimits::default());
                let Ok(Reassembled::Complete(msg)) = r.insert(&fragment, Instant::now()) else { return None };
                let reply = Reply::decode(&msg).ok()?;
                (reply.request_id == request_id && reply.status == ReplyStatus::Ok && reply.data == data).then_some(())
            };
            match tokio::time::timeout(rates.loop_timeout, came_back).await {
                Ok(Some(())) => stats.returned.fetch_add(1, Ordering::Relaxed),
                _ => stats.lost.fetch_add(1, Ordering::Relaxed),
            };
            let mut w = waiters.lock().unwrap_or_else(|e| e.into_inner());
            for id in &ids {
                w.remove(id);
            }
        });
    }
}

#[cfg(test)]
mod pacer_tests {
    use super::*;

    #[tokio::test]
    async fn the_pacer_lets_a_burst_through_then_holds_the_rate() {
        let pacer = Pacer::new(1000.0, 10);
        let start = tokio::time::Instant::now();
        for _ in 0..10 {
            pacer.take().await;
        }
        assert!(start.elapsed() < Duration::from_millis(50), "the burst passes at once");
        for _ in 0..200 {
            pacer.take().await;
        }
        let spent = start.elapsed();
        // 200 tokens at 1000/s: 200 ms, never less; a loaded machine may add.
        assert!(spent >= Duration::from_millis(195) && spent <= Duration::from_millis(2000), "{spent:?}");
        // A rate of zero paces nothing.
        let off = Pacer::new(0.0, 1);
        let start = tokio::time::Instant::now();
        for _ in 0..1000 {
            off.take().await;
        }
        assert!(start.elapsed() < Duration::from_millis(50));
    }
}
