//! Cover traffic: loop and drop packets at Poisson rates, each shaped like a
//! client's request wherever a node on its path can look at it.
//!
//! A node sends two cover streams, each a Poisson process:
//!
//! * **loops** (`cover.loop_rate`) are real `Request::Echo` requests, built
//!   byte for byte as a client builds one: a random request id, random data
//!   (1 to [`ECHO_DATA_MAX`] bytes) and ONE SURB in an [`Envelope`], cut by
//!   the [`Fragmenter`] (one fragment) and wrapped by
//!   [`PacketBuilder::forward`]. The forward route is entry E → mix → exit X,
//!   X among the exits whose signed descriptor offers Echo
//!   ([`RouteSet::exits_offering`]; none: `cover/no_echo_exit`); the SURB's
//!   route is mix → E, the same entry. The node submits the packet to E on
//!   `/nox/submit/1` with a proof of work, over its node connection, as a
//!   client submits over its own (E checks it exactly like a client's:
//!   `crate::pipeline::ingest`), and claims the SURB id at E with
//!   `SubscribeReplies` as a client does. X serves the echo with its
//!   ordinary exit stage and answers through the SURB; E's reply mailbox
//!   marks the reply with its SURB id and pushes it to the claimant, this
//!   node, over the node link. The node's ingest hands every packet from a
//!   node to [`CoverState::take_reply`] before the workers try to peel it: a
//!   packet whose first 32 bytes name one of this node's outstanding loop
//!   SURBs is opened with that SURB's keys, reassembled and decoded as a
//!   [`Reply`]; the request id and the echoed data must match. When this node
//!   is itself the loop's entry (the only one, or the only one that admitted
//!   it) it submits into its own ingest, and the reply ends in its own egress
//!   (`Action::Reply`) instead of its mailbox.
//!
//!   So the entry sees a submission and a claim, the mix a packet, the exit
//!   an echo request with one SURB, and the entry a reply to push: what each
//!   sees of a client's echo. An entry that drops client submissions, or an
//!   exit that serves nothing, loses loops too. What the entry can still
//!   tell is *who* submits: a node, over a connection admitted at the node
//!   tier, from an address its descriptor publishes. Loops therefore catch a
//!   node that drops what it cannot tell from a client's traffic by content
//!   (Final payloads at an exit, submissions at an entry), not an entry that
//!   singles out its client connections.
//!
//! * **drops** (`cover.drop_rate`) carry the cover payload
//!   ([`nox_protocol::cover`]) over entry → mix → any exit, which discards
//!   them (`exit/cover_received`); they are submitted to their entry the same
//!   way, so drops, loops and client requests all enter through the submit
//!   path.
//!
//! Routes come from the topology's [`RouteSet`] for the current epoch; every
//! hop's delay is exponential with mean `cover.mean_delay_ms`, sampled here
//! as a client samples its own. A node prefers other nodes than itself in its
//! own layer and falls back to itself when it is alone there; it submits only
//! to entries that have admitted it (itself included).
//!
//! ## Loop reliability
//!
//! Every loop crosses all three layers (E twice, a mix on each way, X), so a
//! lost loop alone does not say which layer lost it. The node remembers the
//! nodes each of its last [`WINDOW`] loops crossed and whether it came back;
//! `nox_loop_reliability{layer}` is the return ratio of the *worst* node of
//! that layer among those crossed by at least [`MIN_SAMPLES`] of these loops
//! (or, while none has that many, of all loops). A layer whose nodes all
//! forward reads 1.0; one node that drops pulls its own layer to its own
//! ratio (0 for a node that drops everything) while the layers it shares
//! loops with fall only by its share of their loops — so the lowest gauge
//! names the layer that failed, and with one node per layer every layer
//! reads the same. A loop not back within `cover.loop_timeout_secs` counts
//! as lost (`cover/loop_lost`); a reply that arrives later is recognised,
//! counted (`cover/loop_late`) and dropped; a reply that does not open, or
//! echoes other data, counts the loop as failed (`cover/bad_loop_reply`).
//!
//! ## Bounds
//!
//! At most [`MAX_OUTSTANDING`] loops are in flight, each holding its SURB's
//! keys (zeroized when the loop returns or times out), the request id and a
//! digest of its data; beyond that a loop is not sent
//! (`cover/outstanding_full`). At most [`MAX_LATE`] SURB ids of lost loops
//! are remembered (without keys) to recognise late replies.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use nox_protocol::NodeId;
use nox_protocol::cover::drop_payload;
use nox_protocol::fragment::{FragmentError, Fragmenter, Reassembled, Reassembler, ReassemblyLimits};
use nox_protocol::payload::{Envelope, EnvelopeError, REQUEST_ID_LEN, Reply, ReplyStatus, Request, RequestKind};
use nox_protocol::pow;
use nox_protocol::route::{RouteError, RouteSet, sample_delays};
use nox_protocol::sphinx::surb::delivered_surb_id;
use nox_protocol::sphinx::{Hop, Packet, PacketBuilder, SphinxError, SurbKeys};
use nox_protocol::topology::{ENTRY_LAYER, EXIT_LAYER};
use prometheus_client::metrics::counter::Counter;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::epoch::EpochKeyRing;
use crate::metrics::Metrics;
use crate::peers::PeerTable;
use crate::pipeline::Action;
use crate::pipeline::ingest::IngestStage;
use crate::topology::Topology;
use nox_net::p2p::{self, Command, ControlRequest, P2pHandle};

/// Loops remembered for the reliability window.
pub const WINDOW: usize = 256;
/// Most loops in flight (also the default `egress.reply_claims_per_peer`, so
/// this node's own share never refuses one of its claims; an entry whose
/// claim table others have filled may still refuse it, which the entry's
/// `Claimed` answer says and `nox_events_total{kind="reply_claim",
/// outcome="refused_by_peer"}` counts: that loop's reply is then not pushed,
/// and the loop counts as lost, as it would through any failing entry).
pub const MAX_OUTSTANDING: usize = nox_net::control::MAX_REPLY_CLAIMS;
/// Most SURB ids of lost loops remembered to recognise late replies.
pub const MAX_LATE: usize = MAX_OUTSTANDING;
/// Loops through one node before its own return ratio counts for its layer.
pub const MIN_SAMPLES: u32 = 8;
/// Longest echo data a loop carries (its length is uniform in 1..=this).
pub const ECHO_DATA_MAX: usize = 1024;

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

/// The nodes one loop crosses, each once, with its layer.
type Crossed = Vec<(u8, NodeId)>;

/// A loop built and about to be sent: what its return is checked against.
pub struct PendingLoop {
    surb_id: [u8; 32],
    request_id: [u8; REQUEST_ID_LEN],
    data_digest: [u8; 32],
    keys: SurbKeys,
    crossed: Crossed,
}

impl std::fmt::Debug for PendingLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingLoop(<redacted>)")
    }
}

impl PendingLoop {
    /// The SURB id the entry delivers the reply under.
    pub fn surb_id(&self) -> [u8; 32] {
        self.surb_id
    }
}

struct Outstanding {
    sent: Instant,
    pending: PendingLoop,
}

#[derive(Clone)]
struct Outcome {
    crossed: Crossed,
    returned: bool,
}

#[derive(Default)]
struct Inner {
    outstanding: HashMap<[u8; 32], Outstanding>,
    late: HashSet<[u8; 32]>,
    /// Insertion order of `late` (ids already taken stay until they age out).
    late_order: VecDeque<[u8; 32]>,
    window: VecDeque<Outcome>,
}

/// Why a reply to one of this node's loops does not count as its return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoopReplyError {
    /// The body does not open with the SURB's keys.
    #[error("the reply does not open: {0}")]
    Unopened(#[from] SphinxError),
    /// The opened body is not a fragment of a one-fragment message.
    #[error("the reply is not a whole message: {0}")]
    Fragment(#[from] FragmentError),
    /// More fragments announced than the loop's one SURB could bring.
    #[error("the reply announces more than one fragment")]
    Incomplete,
    /// The message is not a reply.
    #[error("the reply does not decode: {0}")]
    Envelope(#[from] EnvelopeError),
    /// Another request id, another status or other data than the loop's.
    #[error("the reply does not answer the loop's echo")]
    Mismatch,
}

struct StateCounters {
    returned: Counter,
    late: Counter,
    bad_reply: Counter,
}

/// Loop bookkeeping, shared by the cover task, ingest's stream readers and
/// egress.
pub struct CoverState {
    inner: Mutex<Inner>,
    /// Outstanding loops plus remembered late ids: when 0, no packet needs
    /// a look-up.
    tracked: AtomicUsize,
    metrics: Metrics,
    counters: StateCounters,
}

impl std::fmt::Debug for CoverState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CoverState")
    }
}

impl CoverState {
    /// Empty state.
    pub fn new(metrics: Metrics) -> Self {
        let counters = StateCounters {
            returned: metrics.packets("cover", "loop_returned"),
            late: metrics.packets("cover", "loop_late"),
            bad_reply: metrics.dropped("cover", "bad_loop_reply"),
        };
        CoverState { inner: Mutex::new(Inner::default()), tracked: AtomicUsize::new(0), metrics, counters }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn retrack(&self, inner: &Inner) {
        self.tracked.store(inner.outstanding.len() + inner.late.len(), Ordering::Relaxed);
    }

    fn record(&self, inner: &mut Inner, crossed: Crossed, returned: bool) {
        inner.window.push_back(Outcome { crossed, returned });
        while inner.window.len() > WINDOW {
            inner.window.pop_front();
        }
        for layer in 0..3u8 {
            if let Some(r) = layer_reliability(&inner.window, layer) {
                self.metrics.loop_reliability(layer_label(layer)).set(r);
            }
        }
    }

    /// Registers a loop about to be sent; `false` (and nothing kept) when
    /// [`MAX_OUTSTANDING`] loops are already in flight.
    pub fn sent(&self, pending: PendingLoop) -> bool {
        let mut inner = self.lock();
        if inner.outstanding.len() >= MAX_OUTSTANDING {
            return false;
        }
        inner.outstanding.insert(pending.surb_id, Outstanding { sent: Instant::now(), pending });
        self.retrack(&inner);
        true
    }

    /// Forgets a registered loop that could not be sent after all (it is
    /// counted neither way).
    pub fn unsent(&self, surb_id: &[u8; 32]) {
        let mut inner = self.lock();
        inner.outstanding.remove(surb_id);
        self.retrack(&inner);
    }

    /// Takes `packet` if it is a delivered reply (marked with its SURB id by
    /// the entry) to one of this node's loops, outstanding or lately lost:
    /// `true` when it was one, and is consumed. Anything else is left alone
    /// (`false`), at the cost of one atomic load while no loop is tracked.
    pub fn take_reply(&self, packet: &Packet) -> bool {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let id = delivered_surb_id(packet);
        let outstanding = {
            let mut inner = self.lock();
            match inner.outstanding.remove(&id) {
                Some(o) => {
                    self.retrack(&inner);
                    o
                }
                None => {
                    let late = inner.late.remove(&id);
                    if late {
                        self.retrack(&inner);
                        self.counters.late.inc();
                    }
                    return late;
                }
            }
        };
        // Opening costs two body passes: outside the lock.
        let verdict = check_reply(&outstanding.pending, packet);
        match &verdict {
            Ok(()) => self.counters.returned.inc(),
            Err(e) => {
                tracing::debug!(error = %e, "a reply to a loop does not answer it");
                self.counters.bad_reply.inc()
            }
        };
        let mut inner = self.lock();
        self.record(&mut inner, outstanding.pending.crossed, verdict.is_ok());
        true
    }

    /// Counts loops older than `timeout` as lost; returns how many.
    pub fn expire(&self, timeout: Duration) -> usize {
        let now = Instant::now();
        let mut inner = self.lock();
        let lost: Vec<[u8; 32]> =
            inner.outstanding.iter().filter(|(_, o)| now.duration_since(o.sent) > timeout).map(|(k, _)| *k).collect();
        for k in &lost {
            if let Some(o) = inner.outstanding.remove(k) {
                self.record(&mut inner, o.pending.crossed, false);
                inner.late.insert(*k);
                inner.late_order.push_back(*k);
            }
        }
        while inner.late_order.len() > MAX_LATE {
            if let Some(old) = inner.late_order.pop_front() {
                inner.late.remove(&old);
            }
        }
        self.retrack(&inner);
        lost.len()
    }

    /// Loops in flight.
    pub fn outstanding(&self) -> usize {
        self.lock().outstanding.len()
    }
}

/// Opens a delivered reply with the loop's SURB keys and checks that it
/// answers the loop's echo.
fn check_reply(pending: &PendingLoop, packet: &Packet) -> Result<(), LoopReplyError> {
    let fragment = pending.keys.open(packet.body())?;
    let limits = ReassemblyLimits { max_messages: 1, ..ReassemblyLimits::default() };
    let Reassembled::Complete(message) = Reassembler::new(limits).insert(&fragment, Instant::now())? else {
        return Err(LoopReplyError::Incomplete);
    };
    let reply = Reply::decode(&message)?;
    let answers = reply.request_id == pending.request_id
        && reply.status == ReplyStatus::Ok
        && *blake3::hash(&reply.data).as_bytes() == pending.data_digest;
    if answers { Ok(()) } else { Err(LoopReplyError::Mismatch) }
}

/// The reliability of `layer` over `window` (see the module docs): the worst
/// return ratio among its nodes with [`MIN_SAMPLES`] loops, else the ratio of
/// every loop that crossed it; `None` before any did.
fn layer_reliability(window: &VecDeque<Outcome>, layer: u8) -> Option<f64> {
    let (mut sent, mut back) = (0u32, 0u32);
    let mut per_node: HashMap<NodeId, (u32, u32)> = HashMap::new();
    for o in window {
        let mut crossed = false;
        for (l, id) in &o.crossed {
            if *l == layer {
                crossed = true;
                let e = per_node.entry(*id).or_default();
                e.0 += 1;
                e.1 += u32::from(o.returned);
            }
        }
        if crossed {
            sent += 1;
            back += u32::from(o.returned);
        }
    }
    if sent == 0 {
        return None;
    }
    let worst = per_node
        .values()
        .filter(|(s, _)| *s >= MIN_SAMPLES)
        .map(|(s, b)| f64::from(*b) / f64::from(*s))
        .min_by(f64::total_cmp);
    Some(worst.unwrap_or(f64::from(back) / f64::from(sent)))
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
    /// Epoch keys (for the current epoch number).
    pub keys: Arc<RwLock<EpochKeyRing>>,
    /// Routes.
    pub topology: Arc<Topology>,
    /// Which entries have admitted this node.
    pub peers: Arc<PeerTable>,
    /// Transport (reply claims).
    pub p2p: P2pHandle,
    /// This node's ingest (its own submissions when it is the entry; the
    /// proof-of-work difficulty).
    pub ingest: Arc<IngestStage>,
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
    /// No route: a layer has no node with a known key for this epoch, or no
    /// entry with a key has admitted this node.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// No exit with a key for this epoch offers Echo.
    #[error("no exit offers echo")]
    NoEchoExit,
    /// Packet or SURB construction failed.
    #[error("building the packet: {0}")]
    Sphinx(#[from] SphinxError),
    /// The envelope did not encode.
    #[error("encoding the envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    /// The envelope did not fragment.
    #[error("fragmenting the envelope: {0}")]
    Fragment(#[from] FragmentError),
}

/// A loop ready to submit: the entry, its packets, and what to remember.
/// `Debug` shows the packet count only (a cover route is as secret as a
/// client's).
pub struct BuiltLoop {
    /// The entry the packets are submitted to.
    pub entry: NodeId,
    /// The request's packets (one per fragment; one with these sizes).
    pub packets: Vec<Packet>,
    /// What its reply is checked against.
    pub pending: PendingLoop,
}

impl std::fmt::Debug for BuiltLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltLoop").field("packets", &self.packets.len()).finish_non_exhaustive()
    }
}

/// Who chooses a cover route: the node, the routes of the epoch, and which
/// entries it may submit to.
pub struct RoutePlan<'a> {
    /// This node.
    pub self_id: NodeId,
    /// The epoch's routes.
    pub set: &'a RouteSet,
    /// Whether an entry (other than this node) has admitted this node.
    pub admitted_by: &'a dyn Fn(&NodeId) -> bool,
}

impl std::fmt::Debug for RoutePlan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoutePlan")
    }
}

impl RoutePlan<'_> {
    /// Entry → mix → exit (`exit` given, or any), preferring other nodes
    /// than this one and submitting only to entries that admitted it.
    fn forward(&self, exit: Option<NodeId>, rng: &mut impl Rng) -> Result<Vec<Hop>, RouteError> {
        let mut exclude: Vec<NodeId> = self
            .set
            .layer(ENTRY_LAYER)
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| *id != self.self_id && !(self.admitted_by)(id))
            .collect();
        exclude.push(self.self_id);
        match self.set.stratified(exit, &exclude, rng) {
            Ok(route) => Ok(route),
            Err(_) => {
                // Alone in its layer: the node is its own hop there.
                exclude.pop();
                self.set.stratified(exit, &exclude, rng)
            }
        }
    }

    /// A mix, preferring another node than this one.
    fn mix(&self, rng: &mut impl Rng) -> Result<Hop, RouteError> {
        self.set.pick(1, &[self.self_id], rng).or_else(|_| self.set.pick(1, &[], rng))
    }

    /// An exit offering Echo, preferring another node than this one.
    fn echo_exit(&self, rng: &mut impl Rng) -> Result<NodeId, CoverError> {
        let offering = self.set.exits_offering(RequestKind::Echo);
        let others: Vec<NodeId> = offering.iter().copied().filter(|x| *x != self.self_id).collect();
        others.choose(rng).or_else(|| offering.choose(rng)).copied().ok_or(CoverError::NoEchoExit)
    }
}

/// Builds one loop for `epoch` (see the module docs): an echo request with
/// one SURB, over entry → mix → an echo exit, its SURB over mix → the same
/// entry, every delay Exp(`mean`).
pub fn build_loop(
    plan: &RoutePlan<'_>,
    epoch: u64,
    mean: Duration,
    rng: &mut ChaCha20Rng,
) -> Result<BuiltLoop, CoverError> {
    let exit = plan.echo_exit(rng)?;
    let mut route = plan.forward(Some(exit), rng)?;
    sample_delays(&mut route, mean, rng);
    let entry = route[0];
    let mut surb_route = vec![plan.mix(rng)?, Hop { delay_us: 0, ..entry }];
    sample_delays(&mut surb_route, mean, rng);

    let builder = PacketBuilder::new(epoch);
    let mut surb_id = [0u8; 32];
    rng.fill_bytes(&mut surb_id);
    let (surb, keys) = builder.surb(&surb_route, surb_id, rng)?;
    let mut request_id = [0u8; REQUEST_ID_LEN];
    rng.fill_bytes(&mut request_id);
    let mut data = vec![0u8; rng.gen_range(1..=ECHO_DATA_MAX)];
    rng.fill_bytes(&mut data);
    let data_digest = *blake3::hash(&data).as_bytes();
    let message = Envelope { request_id, surbs: vec![surb], request: Request::Echo { data } }.encode()?;
    let mut message_id = [0u8; 16];
    rng.fill_bytes(&mut message_id);
    let mut packets = Vec::new();
    for fragment in Fragmenter::default().split(&message, message_id)? {
        packets.push(builder.forward(&route, &fragment, rng)?.1);
    }

    let mut crossed: Crossed = Vec::with_capacity(4);
    for (layer, hop) in [(ENTRY_LAYER, &route[0]), (1, &route[1]), (EXIT_LAYER, &route[2]), (1, &surb_route[0])] {
        if !crossed.contains(&(layer, hop.id)) {
            crossed.push((layer, hop.id));
        }
    }
    Ok(BuiltLoop { entry: entry.id, packets, pending: PendingLoop { surb_id, request_id, data_digest, keys, crossed } })
}

/// Builds one drop for `epoch`: the cover payload over entry → mix → any
/// exit. Returns the entry and the packet.
pub fn build_drop(
    plan: &RoutePlan<'_>,
    epoch: u64,
    mean: Duration,
    rng: &mut ChaCha20Rng,
) -> Result<(NodeId, Packet), CoverError> {
    let mut route = plan.forward(None, rng)?;
    sample_delays(&mut route, mean, rng);
    let (entry, packet) = PacketBuilder::new(epoch).forward(&route, &drop_payload(rng), rng)?;
    Ok((entry, packet))
}

struct TaskCounters {
    loop_sent: Counter,
    drop_sent: Counter,
    no_route: Counter,
    no_echo_exit: Counter,
    egress_full: Counter,
    outstanding_full: Counter,
    lost: Counter,
}

/// Why a cover packet built did not leave.
enum Unsent {
    /// The egress or ingest queue is full (or closed).
    Full,
}

/// Submits `packet` to `entry` as a client would: with a proof of work on
/// `/nox/submit/1`, or into this node's own ingest when it is the entry.
async fn submit(ctx: &CoverContext, entry: NodeId, packet: Packet) -> Result<(), Unsent> {
    if entry == ctx.self_id {
        return if ctx.ingest.submit_local(packet) { Ok(()) } else { Err(Unsent::Full) };
    }
    let bits = ctx.ingest.pow_bits();
    let start: u64 = rand::random();
    let solved = tokio::task::spawn_blocking(move || {
        let nonce = pow::solve(&packet, bits, start);
        pow::encode_submission(&packet, nonce)
    })
    .await;
    // The blocking task only fails when the runtime shuts down.
    let frame = solved.map_err(|_| Unsent::Full)?;
    ctx.egress.try_send(Action::Submit { entry, frame }).map_err(|_| Unsent::Full)
}

fn plan_for<'a>(ctx: &CoverContext, set: &'a RouteSet, admitted_by: &'a dyn Fn(&NodeId) -> bool) -> RoutePlan<'a> {
    RoutePlan { self_id: ctx.self_id, set, admitted_by }
}

fn admitted_by(peers: &PeerTable) -> impl Fn(&NodeId) -> bool + '_ {
    move |id: &NodeId| p2p::peer_id_of(id).is_ok_and(|peer| peers.welcomed(&peer))
}

async fn send_loop(ctx: &CoverContext, mean: Duration, rng: &mut ChaCha20Rng, c: &TaskCounters) {
    let epoch = ctx.keys.read().unwrap_or_else(|e| e.into_inner()).current_epoch();
    let set = ctx.topology.route_set(epoch);
    let admitted = admitted_by(&ctx.peers);
    let built = match build_loop(&plan_for(ctx, &set, &admitted), epoch, mean, rng) {
        Ok(b) => b,
        Err(CoverError::NoEchoExit) => {
            c.no_echo_exit.inc();
            return;
        }
        Err(e) => {
            tracing::debug!(error = %e, "no loop route");
            c.no_route.inc();
            return;
        }
    };
    let BuiltLoop { entry, packets, pending } = built;
    let surb_id = pending.surb_id();
    if !ctx.state.sent(pending) {
        c.outstanding_full.inc();
        return;
    }
    if entry != ctx.self_id
        && let Ok(peer) = p2p::peer_id_of(&entry)
    {
        // Claimed before the packet leaves; a reply that still arrives
        // first waits in the entry's mailbox for the claim.
        let claim = ControlRequest::SubscribeReplies { surb_ids: vec![surb_id] };
        let _ = ctx.p2p.command(Command::Request { peer, request: claim }).await;
    }
    for packet in packets {
        if submit(ctx, entry, packet).await.is_err() {
            ctx.state.unsent(&surb_id);
            c.egress_full.inc();
            return;
        }
    }
    c.loop_sent.inc();
}

async fn send_drop(ctx: &CoverContext, mean: Duration, rng: &mut ChaCha20Rng, c: &TaskCounters) {
    let epoch = ctx.keys.read().unwrap_or_else(|e| e.into_inner()).current_epoch();
    let set = ctx.topology.route_set(epoch);
    let admitted = admitted_by(&ctx.peers);
    let built = build_drop(&plan_for(ctx, &set, &admitted), epoch, mean, rng);
    match built {
        Ok((entry, packet)) => {
            let counter = match submit(ctx, entry, packet).await {
                Ok(()) => &c.drop_sent,
                Err(Unsent::Full) => &c.egress_full,
            };
            counter.inc();
        }
        Err(e) => {
            tracing::debug!(error = %e, "no drop route");
            c.no_route.inc();
        }
    }
}

/// Runs the two Poisson streams until the egress queue closes.
pub async fn run(cfg: CoverConfig, ctx: CoverContext) {
    let mut rng = ChaCha20Rng::from_entropy();
    let c = TaskCounters {
        loop_sent: ctx.metrics.packets("cover", "loop_sent"),
        drop_sent: ctx.metrics.packets("cover", "drop_sent"),
        no_route: ctx.metrics.dropped("cover", "no_route"),
        no_echo_exit: ctx.metrics.dropped("cover", "no_echo_exit"),
        egress_full: ctx.metrics.dropped("cover", "egress_full"),
        outstanding_full: ctx.metrics.dropped("cover", "outstanding_full"),
        lost: ctx.metrics.packets("cover", "loop_lost"),
    };
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
                send_loop(&ctx, cfg.mean_delay, &mut rng, &c).await;
                next_loop = next_in(&mut rng, cfg.loop_rate).map(|d| tokio::time::Instant::now() + d);
            }
            _ = tokio::time::sleep_until(next_drop.unwrap_or(far)), if next_drop.is_some() => {
                send_drop(&ctx, cfg.mean_delay, &mut rng, &c).await;
                next_drop = next_in(&mut rng, cfg.drop_rate).map(|d| tokio::time::Instant::now() + d);
            }
            _ = expire.tick() => {
                c.lost.inc_by(ctx.state.expire(cfg.loop_timeout) as u64);
                if ctx.egress.is_disconnected() { return; }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nox_protocol::crypto::x25519::MixSecretKey;
    use nox_protocol::sphinx::Processed;
    use nox_protocol::sphinx::surb::mark_delivered;

    /// A network of `per_layer` nodes per layer, every exit offering Echo;
    /// the secret keys by node id.
    fn network(per_layer: usize) -> (RouteSet, HashMap<NodeId, MixSecretKey>) {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut set = RouteSet::new();
        let mut secrets = HashMap::new();
        for layer in 0..3u8 {
            for i in 0..per_layer {
                let id = NodeId([layer * 16 + i as u8 + 1; 32]);
                let sk = MixSecretKey::generate(&mut rng);
                set.insert(layer, id, sk.public_key()).unwrap();
                if layer == EXIT_LAYER {
                    set.set_services(id, RequestKind::mask_of(&[RequestKind::Echo]));
                }
                secrets.insert(id, sk);
            }
        }
        (set, secrets)
    }

    /// Carries `packet` from `first` hop to hop; the final payload or the
    /// reply packet with its SURB id, and the nodes it crossed.
    fn carry(secrets: &HashMap<NodeId, MixSecretKey>, first: NodeId, mut packet: Packet) -> (Processed, Vec<NodeId>) {
        let mut at = first;
        let mut path = vec![at];
        loop {
            let peeled = packet.peel_header(&secrets[&at]).unwrap();
            match peeled.finish(packet).unwrap() {
                Processed::Forward { next, packet: p, .. } => {
                    at = next;
                    path.push(at);
                    packet = p;
                }
                done => return (done, path),
            }
        }
    }

    /// What an exit does with a loop: decode the envelope, echo through its SURB.
    fn serve(payload: &[u8]) -> (NodeId, Packet) {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let Ok(Reassembled::Complete(msg)) = r.insert(payload, Instant::now()) else { panic!("one fragment") };
        let env = Envelope::decode(&msg).unwrap();
        let Request::Echo { data } = env.request else { panic!("an echo") };
        assert!((1..=ECHO_DATA_MAX).contains(&data.len()));
        assert_eq!(env.surbs.len(), 1, "one SURB, as a client's small echo carries");
        let reply = Reply { request_id: env.request_id, status: ReplyStatus::Ok, data }.encode().unwrap();
        let mut frags = Fragmenter::default().split(&reply, [9; 16]).unwrap();
        assert_eq!(frags.len(), 1);
        env.surbs.into_iter().next().unwrap().into_packet(&frags.remove(0)).unwrap()
    }

    fn layer_of(set: &RouteSet, id: &NodeId) -> u8 {
        (0..3u8).find(|l| set.layer(*l).iter().any(|(n, _)| n == id)).unwrap()
    }

    #[test]
    fn a_loop_is_an_echo_request_through_all_three_layers_answered_through_its_entry() {
        let (set, secrets) = network(2);
        let own = set.layer(1)[0].0;
        let everyone = |_: &NodeId| true;
        let plan = RoutePlan { self_id: own, set: &set, admitted_by: &everyone };
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let m = Metrics::new();
        let state = CoverState::new(m.clone());
        for _ in 0..20 {
            let built = build_loop(&plan, 5, Duration::from_millis(1), &mut rng).unwrap();
            assert_eq!(built.packets.len(), 1);
            assert_eq!(layer_of(&set, &built.entry), 0);
            let (done, path) = carry(&secrets, built.entry, built.packets[0].clone());
            let layers: Vec<u8> = path.iter().map(|n| layer_of(&set, n)).collect();
            assert_eq!(layers, vec![0, 1, 2]);
            assert_ne!(path[1], own, "the node prefers another mix than itself");
            let Processed::Final { payload, .. } = done else { panic!("ends at the exit") };
            let (first, reply) = serve(payload.as_bytes());
            let (back, back_path) = carry(&secrets, first, reply);
            assert_eq!(back_path.last(), Some(&built.entry), "the SURB ends at the loop's entry");
            let Processed::Reply { surb_id, mut packet, .. } = back else { panic!("a reply") };
            assert_eq!(surb_id, built.pending.surb_id());
            assert!(state.sent(built.pending));
            // Not marked yet: not recognised, left alone.
            assert!(!state.take_reply(&packet));
            mark_delivered(&mut packet, surb_id);
            assert!(state.take_reply(&packet));
            assert!(!state.take_reply(&packet), "a loop counts once");
        }
        assert_eq!(m.packets_value("cover", "loop_returned"), 20);
        for layer in ["0", "1", "2"] {
            assert_eq!(m.loop_reliability(layer).get(), 1.0);
        }
        assert_eq!(state.outstanding(), 0);
    }

    #[test]
    fn a_node_alone_in_its_layer_is_its_own_hop_and_submits_only_where_admitted() {
        let (set, _) = network(1);
        let own = set.layer(0)[0].0;
        let nobody = |_: &NodeId| false;
        let plan = RoutePlan { self_id: own, set: &set, admitted_by: &nobody };
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let built = build_loop(&plan, 5, Duration::from_millis(1), &mut rng).unwrap();
        assert_eq!(built.entry, own, "the only entry submits to itself");
        let (set2, _) = network(2);
        let mix = set2.layer(1)[0].0;
        let plan = RoutePlan { self_id: mix, set: &set2, admitted_by: &nobody };
        assert!(matches!(
            build_loop(&plan, 5, Duration::from_millis(1), &mut rng),
            Err(CoverError::Route(RouteError::EmptyLayer(0)))
        ));
        let one = set2.layer(0)[1].0;
        let only_one = move |id: &NodeId| *id == one;
        let plan = RoutePlan { self_id: mix, set: &set2, admitted_by: &only_one };
        for _ in 0..10 {
            assert_eq!(build_loop(&plan, 5, Duration::from_millis(1), &mut rng).unwrap().entry, one);
            assert_eq!(build_drop(&plan, 5, Duration::from_millis(1), &mut rng).unwrap().0, one);
        }
    }

    #[test]
    fn without_an_echo_exit_there_is_no_loop() {
        let (mut set, _) = network(1);
        let exit = set.layer(2)[0].0;
        set.set_services(exit, RequestKind::mask_of(&[RequestKind::RpcCall]));
        let everyone = |_: &NodeId| true;
        let plan = RoutePlan { self_id: set.layer(1)[0].0, set: &set, admitted_by: &everyone };
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        assert!(matches!(build_loop(&plan, 5, Duration::from_millis(1), &mut rng), Err(CoverError::NoEchoExit)));
        // Drops need no service.
        assert!(build_drop(&plan, 5, Duration::from_millis(1), &mut rng).is_ok());
    }

    #[test]
    fn a_wrong_or_forged_reply_fails_the_loop_and_a_late_one_is_recognised() {
        let (set, secrets) = network(1);
        let everyone = |_: &NodeId| true;
        let plan = RoutePlan { self_id: set.layer(1)[0].0, set: &set, admitted_by: &everyone };
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let m = Metrics::new();
        let state = CoverState::new(m.clone());

        // A reply whose body was tampered with on the way does not open.
        let built = build_loop(&plan, 5, Duration::ZERO, &mut rng).unwrap();
        let id = built.pending.surb_id();
        let (Processed::Final { payload, .. }, _) = carry(&secrets, built.entry, built.packets[0].clone()) else {
            panic!()
        };
        let (_, mut reply) = serve(payload.as_bytes());
        assert!(state.sent(built.pending));
        mark_delivered(&mut reply, id);
        reply.as_bytes_mut()[5000] ^= 1;
        assert!(state.take_reply(&reply));
        assert_eq!(m.dropped_value("cover", "bad_loop_reply"), 1);

        // One that never comes within the timeout is lost; when it comes after
        // all, it is recognised as late.
        let built = build_loop(&plan, 5, Duration::ZERO, &mut rng).unwrap();
        let id = built.pending.surb_id();
        assert!(state.sent(built.pending));
        assert_eq!(state.expire(Duration::ZERO), 1);
        let mut late = reply.clone();
        mark_delivered(&mut late, id);
        assert!(state.take_reply(&late));
        assert!(!state.take_reply(&late));
        assert_eq!(m.packets_value("cover", "loop_late"), 1);
        for layer in ["0", "1", "2"] {
            assert_eq!(m.loop_reliability(layer).get(), 0.0);
        }
        assert_eq!(state.tracked.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn reliability_names_the_layer_of_the_node_that_drops() {
        let window: VecDeque<Outcome> = (0..64u8)
            .map(|i| {
                // Two nodes per layer; entry 0 loses every loop it carries.
                let (e, m, x) = (i % 2, (i / 2) % 2, (i / 4) % 2);
                let crossed = vec![(0, NodeId([e; 32])), (1, NodeId([10 + m; 32])), (2, NodeId([20 + x; 32]))];
                Outcome { crossed, returned: e == 1 }
            })
            .collect();
        assert_eq!(layer_reliability(&window, 0), Some(0.0));
        assert_eq!(layer_reliability(&window, 1), Some(0.5));
        assert_eq!(layer_reliability(&window, 2), Some(0.5));
        // Too few loops per node: the share of all loops that came back.
        let few: VecDeque<Outcome> = window.iter().take(6).cloned().collect();
        assert_eq!(layer_reliability(&few, 0), Some(0.5));
        assert_eq!(layer_reliability(&VecDeque::new(), 0), None);
    }
}
