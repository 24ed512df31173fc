//! Egress: the last stage. Sends each released packet where it belongs.
//!
//! * `Forward` to another node: into that node's link queue. A link is one
//!   task per next hop that dials the node (addresses from the topology), waits
//!   for the handshake's welcome, opens one `/nox/packet/1` stream and writes
//!   packets back to back. A full link queue drops the packet
//!   (`peer_queue_full`): one slow or dead next hop never stalls the others.
//! * `Forward` to this node itself: straight back into ingest.
//! * `Submit`: this node's own cover for an entry, on a link of its own that
//!   opens a `/nox/submit/1` stream to the entry (the node's relay link to the
//!   same node stays a `/nox/packet/1` stream) and writes submission frames,
//!   exactly as a client's connection does.
//! * `Final`: to the exit stage's queue.
//! * `Reply`: a reply for one of this node's own loops (this node was the
//!   loop's entry) goes to [`CoverState`] at once; any other to the reply
//!   mailbox, which pushes it to the peer that claimed the SURB id, or keeps
//!   it (bounded, with a TTL) until the peer does.
//! * `Push`: a claimed reply to its claimant: a client over the connection it
//!   holds, a node (claiming its loops' replies) over this node's link to it.
//!
//! Client links share one budget, `egress.client_queue_bytes`: every packet
//! queued for a client (the one being written included) holds its part of it
//! until it is written or dropped. One client may queue at most half of what
//! the other clients leave free, and at most `egress.peer_queue` packets, so
//! clients that stop reading cannot take the whole budget and a client that
//! reads always finds room. A client is disconnected (and its queue dropped)
//! when one packet takes longer than `egress.client_write_timeout_ms` to
//! write, or when its queue stays that long at its share (refusing packets,
//! and never drained to half of it in between).
//! Node links have no write deadline: a slow next hop is backpressure (its
//! ingest waits), and its queue is its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use nox_protocol::NodeId;
use nox_protocol::sphinx::{PACKET_LEN, Packet, Payload};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use super::Action;
use super::ingest::IngestStage;
use super::{Inbound, Sender};
use crate::cover::CoverState;
use crate::metrics::Metrics;
use crate::peers::PeerTable;
use crate::replies::{Delivery, ReplyMailbox};
use crate::topology::Topology;
use libp2p::StreamProtocol;
use nox_net::p2p::{self, Command, P2pHandle, PACKET_PROTOCOL, PeerKind, SUBMIT_PROTOCOL};
use nox_net::packet_link::{self, BufferPool, LinkError, LinkWriter, PacketOut};

/// Egress settings.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// Packets queued per next hop.
    pub peer_queue: usize,
    /// How long a link waits for a connection and a welcome.
    pub connect_timeout: Duration,
    /// Bytes queued on all client links together.
    pub client_queue_bytes: usize,
    /// Deadline of one write to a client, and longest a client may stay at
    /// its share without taking a packet.
    pub client_write_timeout: Duration,
    /// Ask next hops for a packet link before falling back to a
    /// `/nox/packet/1` stream (`p2p.packet_link`).
    pub packet_link: bool,
}

/// Shared pieces egress talks to.
#[derive(Clone)]
pub struct EgressContext {
    /// This node's id.
    pub self_id: NodeId,
    /// Transport.
    pub p2p: P2pHandle,
    /// Who admitted us.
    pub peers: Arc<PeerTable>,
    /// Addresses of next hops.
    pub topology: Arc<Topology>,
    /// Local delivery (a route through this node twice in a row).
    pub ingest: Arc<IngestStage>,
    /// Final payloads.
    pub exit: flume::Sender<Payload>,
    /// Replies for clients.
    pub replies: Arc<ReplyMailbox>,
    /// This node's loops (a reply for one of them ends here).
    pub cover: Arc<CoverState>,
    /// Metrics.
    pub metrics: Metrics,
    /// Where packet buffers go once sealed into a packet link (the node's
    /// link readers take them from there).
    pub buffers: Option<Arc<BufferPool>>,
    /// Test faults (`drop_finals` applies here).
    #[cfg(feature = "test-harness")]
    pub faults: crate::faults::Faults,
}

impl std::fmt::Debug for EgressContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EgressContext")
    }
}

struct EgressMetrics {
    sent: Counter,
    local: Counter,
    to_exit: Counter,
    reply_pushed: Counter,
    reply_stored: Counter,
    peer_queue_full: Counter,
    bad_next_hop: Counter,
    exit_full: Counter,
    mailbox_full: Counter,
    reply_duplicate: Counter,
    local_full: Counter,
    link_failed: Counter,
    client_share_full: Counter,
    client_budget_full: Counter,
    client_write_timeout: Counter,
    client_stalled: Counter,
    client_timed_out: Counter,
    client_queued: prometheus_client::metrics::gauge::Gauge,
    link_opened: Counter,
    link_fallback: Counter,
}

/// The egress stage.
#[derive(Debug)]
pub struct EgressStage;

/// What a link writes: a packet (`/nox/packet/1`) or a submission frame
/// (`/nox/submit/1`).
enum Frame {
    Packet(Packet),
    Submission(Vec<u8>),
}

/// A frame on a link queue; a client's holds its part of the client budget
/// until it is written or dropped.
struct Queued {
    frame: Frame,
    hold: Option<Reservation>,
}

/// One packet's part of the client budget (and of its link's count), given
/// back when dropped.
struct Reservation {
    link: Arc<AtomicUsize>,
    budget: Arc<ClientBudget>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.link.fetch_sub(1, Ordering::AcqRel);
        let left = self.budget.queued.fetch_sub(1, Ordering::AcqRel) - 1;
        self.budget.gauge.set(left as i64);
    }
}

/// The packets queued on all client links together. Only the egress task
/// reserves (so the bound is exact); link tasks give back.
struct ClientBudget {
    capacity: usize,
    per_link: usize,
    queued: AtomicUsize,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

/// Why a client's packet was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The client holds its share already.
    Share,
    /// Every client together hold the whole budget.
    Budget,
}

impl ClientBudget {
    fn new(cfg: &EgressConfig, gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        ClientBudget {
            capacity: (cfg.client_queue_bytes / PACKET_LEN).max(2),
            per_link: cfg.peer_queue.max(1),
            queued: AtomicUsize::new(0),
            gauge,
        }
    }

    /// Most packets a link may hold while the others hold `others`: half of
    /// what they leave free, within the per-link cap.
    fn share(&self, others: usize) -> usize {
        (self.capacity.saturating_sub(others) / 2).min(self.per_link)
    }

    /// Whether the link counting `link` holds at most half of its share.
    fn drained(&self, link: &AtomicUsize) -> bool {
        let total = self.queued.load(Ordering::Acquire);
        let mine = link.load(Ordering::Acquire);
        mine * 2 <= self.share(total.saturating_sub(mine))
    }

    /// Reserves one packet for the link counting `link`, if its share allows.
    fn reserve(self: &Arc<Self>, link: &Arc<AtomicUsize>) -> Result<Reservation, Refusal> {
        let total = self.queued.load(Ordering::Acquire);
        let mine = link.load(Ordering::Acquire);
        if total >= self.capacity {
            return Err(Refusal::Budget);
        }
        if mine >= self.share(total.saturating_sub(mine)) {
            return Err(Refusal::Share);
        }
        link.fetch_add(1, Ordering::AcqRel);
        let now = self.queued.fetch_add(1, Ordering::AcqRel) + 1;
        self.gauge.set(now as i64);
        Ok(Reservation { link: link.clone(), budget: self.clone() })
    }
}

/// Egress's handle on one link.
struct Link {
    tx: mpsc::Sender<Queued>,
    /// Packets queued on it (counted for client links only).
    queued: Arc<AtomicUsize>,
    /// Since when a client's packets have been refused for its share, with
    /// its queue not drained to half its share in between.
    full_since: Option<Instant>,
}

impl EgressStage {
    /// Runs egress until `input` closes.
    /// Runs egress until `input` closes: `input` carries what cover, the exit
    /// stage and control send; `released`, the mix stage's batches.
    pub async fn run(
        cfg: EgressConfig,
        input: flume::Receiver<Action>,
        released: flume::Receiver<Vec<Action>>,
        ctx: EgressContext,
    ) {
        let m = Arc::new(EgressMetrics {
            sent: ctx.metrics.packets("egress", "sent"),
            local: ctx.metrics.packets("egress", "local"),
            to_exit: ctx.metrics.packets("egress", "final"),
            reply_pushed: ctx.metrics.packets("egress", "reply_pushed"),
            reply_stored: ctx.metrics.packets("egress", "reply_stored"),
            peer_queue_full: ctx.metrics.dropped("egress", "peer_queue_full"),
            bad_next_hop: ctx.metrics.dropped("egress", "bad_next_hop"),
            exit_full: ctx.metrics.dropped("egress", "exit_queue_full"),
            mailbox_full: ctx.metrics.dropped("egress", "reply_mailbox_full"),
            reply_duplicate: ctx.metrics.dropped("egress", "reply_duplicate"),
            local_full: ctx.metrics.dropped("egress", "local_queue_full"),
            link_failed: ctx.metrics.dropped("egress", "link_failed"),
            client_share_full: ctx.metrics.dropped("egress", "client_share_full"),
            client_budget_full: ctx.metrics.dropped("egress", "client_budget_full"),
            client_write_timeout: ctx.metrics.dropped("egress", "client_write_timeout"),
            client_stalled: ctx.metrics.event("client_link", "disconnected_stalled"),
            client_timed_out: ctx.metrics.event("client_link", "disconnected_write_timeout"),
            link_opened: ctx.metrics.event("packet_link", "opened"),
            link_fallback: ctx.metrics.event("packet_link", "fallback"),
            client_queued: ctx.metrics.queue_depth("client_links"),
        });
        let budget = Arc::new(ClientBudget::new(&cfg, m.client_queued.clone()));
        let mut links: HashMap<Target, Link> = HashMap::new();
        let mut removals_seen = ctx.topology.removals();
        let mut mix_open = true;
        loop {
            let actions = tokio::select! {
                a = input.recv_async() => match a {
                    Ok(a) => vec![a],
                    Err(_) => break,
                },
                b = released.recv_async(), if mix_open => match b {
                    Ok(b) => b,
                    Err(_) => {
                        mix_open = false;
                        continue;
                    }
                },
            };
            for action in actions {
                // A node that left the topology (unregistered, slashed, unstaked)
                // loses its link, so its next packet meets the membership check
                // of a new link (`bad_next_hop`). One atomic load per packet; the
                // links are walked only after a removal.
                let removals = ctx.topology.removals();
                if removals != removals_seen {
                    removals_seen = removals;
                    links.retain(|t, _| match t {
                        Target::Node(id) | Target::Submit(id) => ctx.topology.contains(id),
                        Target::Client(_) => true,
                    });
                }
                match action {
                    Action::Forward { next, packet } => {
                        if next == ctx.self_id {
                            if ctx.ingest.try_push(Inbound { packet, sender: Sender::Local }) {
                                m.local.inc();
                            } else {
                                m.local_full.inc();
                            }
                            continue;
                        }
                        send_to(&cfg, &ctx, &m, &budget, &mut links, Target::Node(next), Frame::Packet(packet));
                    }
                    Action::Submit { entry, frame } => {
                        // The cover task submits to itself through ingest, never here.
                        if entry == ctx.self_id {
                            m.bad_next_hop.inc();
                            continue;
                        }
                        send_to(&cfg, &ctx, &m, &budget, &mut links, Target::Submit(entry), Frame::Submission(frame));
                    }
                    Action::Final { payload } => {
                        #[cfg(feature = "test-harness")]
                        if ctx.faults.drop_finals {
                            continue;
                        }
                        if ctx.exit.try_send(payload).is_ok() {
                            m.to_exit.inc();
                        } else {
                            m.exit_full.inc();
                        }
                    }
                    Action::Push { client, packet } => {
                        m.reply_pushed.inc();
                        send_to(&cfg, &ctx, &m, &budget, &mut links, claimant(&ctx, client), Frame::Packet(packet));
                    }
                    Action::Reply { surb_id, mut packet } => {
                        // This node was the entry of one of its own loops: the
                        // reply ends here, as it would at the node that claimed it.
                        nox_protocol::sphinx::surb::mark_delivered(&mut packet, surb_id);
                        if ctx.cover.take_reply(&packet) {
                            continue;
                        }
                        match ctx.replies.deliver(surb_id, packet) {
                            Delivery::Push { client, packet } => {
                                m.reply_pushed.inc();
                                send_to(
                                    &cfg,
                                    &ctx,
                                    &m,
                                    &budget,
                                    &mut links,
                                    claimant(&ctx, client),
                                    Frame::Packet(packet),
                                );
                            }
                            Delivery::Stored => {
                                m.reply_stored.inc();
                            }
                            Delivery::Full => {
                                m.mailbox_full.inc();
                            }
                            Delivery::Duplicate => {
                                m.reply_duplicate.inc();
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Where a claimed reply goes: a node that claimed it (for its loops) over
/// the node link this node keeps to it anyway, a client over its own
/// connection. One link per node keeps a node to one `/nox/packet/1` stream
/// from here, as its ingest expects.
fn claimant(ctx: &EgressContext, peer: PeerId) -> Target {
    match (ctx.peers.admitted(&peer), p2p::node_id_of(&peer)) {
        (Some(PeerKind::Node), Some(id)) => Target::Node(id),
        _ => Target::Client(peer),
    }
}

/// Where a link leads. Node links are keyed by node id, so the peer id (an
/// Ed25519 point decompression) is derived once per link, not per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    /// A node, dialled at its topology addresses (`/nox/packet/1`).
    Node(NodeId),
    /// An entry node this node submits its own cover to (`/nox/submit/1`).
    Submit(NodeId),
    /// A connected client (replies only).
    Client(PeerId),
}

impl Target {
    fn protocol(&self) -> StreamProtocol {
        match self {
            Target::Submit(_) => SUBMIT_PROTOCOL,
            Target::Node(_) | Target::Client(_) => PACKET_PROTOCOL,
        }
    }
}

fn send_to(
    cfg: &EgressConfig,
    ctx: &EgressContext,
    m: &Arc<EgressMetrics>,
    budget: &Arc<ClientBudget>,
    links: &mut HashMap<Target, Link>,
    target: Target,
    frame: Frame,
) {
    // A client's packet first needs its share of the client budget.
    let hold = match target {
        Target::Client(peer) => {
            let queued = links.get(&target).map(|l| l.queued.clone()).unwrap_or_default();
            match budget.reserve(&queued) {
                Ok(r) => {
                    // Only a queue that drained to half its share has stopped
                    // being full: a client that takes a packet now and then
                    // while its queue stays at its share is still cut off.
                    if budget.drained(&queued)
                        && let Some(link) = links.get_mut(&target)
                    {
                        link.full_since = None;
                    }
                    Some(r)
                }
                Err(refusal) => {
                    match refusal {
                        Refusal::Share => m.client_share_full.inc(),
                        Refusal::Budget => m.client_budget_full.inc(),
                    };
                    // A link kept at its share for the write deadline is a
                    // client that does not keep up: cut it off.
                    if refusal == Refusal::Share
                        && let Some(link) = links.get_mut(&target)
                    {
                        let since = *link.full_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= cfg.client_write_timeout {
                            links.remove(&target);
                            m.client_stalled.inc();
                            disconnect(ctx, peer);
                        }
                    }
                    return;
                }
            }
        }
        Target::Node(_) | Target::Submit(_) => None,
    };
    let item = Queued { frame, hold };
    let item = match links.get(&target) {
        Some(link) => match link.tx.try_send(item) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(_)) => {
                m.peer_queue_full.inc();
                return;
            }
            // The link task ended (it gives up after repeated failures): start afresh.
            Err(mpsc::error::TrySendError::Closed(f)) => f,
        },
        None => item,
    };
    // The sender of a packet chooses its next hop: only a node of the topology
    // gets a link (and a task), so forged ids cannot make egress grow.
    let (peer, node) = match target {
        Target::Client(peer) => (peer, None),
        Target::Node(id) | Target::Submit(id) => match p2p::peer_id_of(&id) {
            Ok(peer) if ctx.topology.contains(&id) => (peer, Some(id)),
            _ => {
                m.bad_next_hop.inc();
                return;
            }
        },
    };
    // Links whose task has ended are forgotten here, so the map holds at most
    // the topology's nodes and the clients with a live link.
    links.retain(|_, l| !l.tx.is_closed());
    // A client's reservation already counts on the link it was made for.
    let queued = item.hold.as_ref().map(|r| r.link.clone()).unwrap_or_default();
    let (tx, rx) = mpsc::channel(cfg.peer_queue.max(1));
    tokio::spawn(run_link(cfg.clone(), ctx.clone(), m.clone(), peer, node, target.protocol(), rx));
    if tx.try_send(item).is_err() {
        m.peer_queue_full.inc();
    }
    links.insert(target, Link { tx, queued, full_since: None });
}

/// Closes the connection of a client that stopped reading; its claims go with
/// it (`Event::Disconnected`).
fn disconnect(ctx: &EgressContext, peer: PeerId) {
    let p2p = ctx.p2p.clone();
    tokio::spawn(async move {
        let _ = p2p.command(Command::Disconnect { peer }).await;
    });
}

/// Drops everything queued on a link that cannot send, counting each packet.
fn shed(rx: &mut mpsc::Receiver<Queued>, counter: &Counter) {
    while rx.try_recv().is_ok() {
        counter.inc();
    }
}

/// `io` within `deadline`, if there is one; a timeout is `Err(None)`.
async fn within<F>(deadline: Option<Duration>, io: F) -> Result<(), Option<std::io::Error>>
where
    F: std::future::Future<Output = std::io::Result<()>>,
{
    match deadline {
        Some(d) => match tokio::time::timeout(d, io).await {
            Ok(r) => r.map_err(Some),
            Err(_) => Err(None),
        },
        None => io.await.map_err(Some),
    }
}

/// Reaches `peer`: for a node, dial it at its topology addresses and wait for
/// its welcome; then, to a node with `packet_link` on, ask for a packet link
/// and fall back to the link's stream (`protocol`) when the node offers none
/// (a node with links off, or one that cannot be reached on its link port).
/// A client is reached over the connection it already holds.
async fn connect(
    cfg: &EgressConfig,
    ctx: &EgressContext,
    m: &EgressMetrics,
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    node: Option<NodeId>,
    protocol: StreamProtocol,
) -> Option<PacketOut> {
    if let Some(id) = node {
        let addrs = ctx.topology.addresses(&id);
        let _ = ctx.p2p.command(Command::Dial { peer, addrs }).await;
        if !ctx.peers.wait_welcomed(&peer, cfg.connect_timeout).await {
            return None;
        }
        if cfg.packet_link && protocol == PACKET_PROTOCOL {
            match open_packet_link(cfg, ctx, control, peer, id).await {
                Ok(link) => {
                    m.link_opened.inc();
                    return Some(PacketOut::Link(link));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "no packet link; relaying on a stream");
                    m.link_fallback.inc();
                }
            }
        }
    }
    match control.open_stream(peer, protocol).await {
        Ok(s) => Some(PacketOut::Stream(s)),
        Err(e) => {
            tracing::debug!(error = %e, "opening packet stream failed");
            None
        }
    }
}

/// Asks the node `id` (connected as `peer`) for a packet link and sets it up
/// at the host of its topology addresses, within `connect_timeout`.
async fn open_packet_link(
    cfg: &EgressConfig,
    ctx: &EgressContext,
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    id: NodeId,
) -> Result<LinkWriter, LinkError> {
    let hosts = packet_link::hosts_of(&ctx.topology.addresses(&id));
    let setup = packet_link::request_link(control, peer, &hosts);
    match tokio::time::timeout(cfg.connect_timeout, setup).await {
        Ok(r) => r,
        Err(_) => Err(LinkError::Unreachable("timed out".into())),
    }
}

/// One next hop's link: connect, stream packets back to back; when the hop
/// cannot be reached, drop the packet in hand and everything queued behind it
/// (counted as `link_failed`), back off, and try again with the next packet.
/// A link gives up after three failures in a row (egress starts a new one on
/// the next packet); a client link ends as soon as it cannot connect or its
/// stream breaks, and a client write (or flush) past the deadline
/// disconnects the client and drops its queue (`client_write_timeout`).
async fn run_link(
    cfg: EgressConfig,
    ctx: EgressContext,
    m: Arc<EgressMetrics>,
    peer: PeerId,
    node: Option<NodeId>,
    protocol: StreamProtocol,
    mut rx: mpsc::Receiver<Queued>,
) {
    let mut control = ctx.p2p.streams.clone();
    let mut failures = 0u32;
    let deadline = node.is_none().then_some(cfg.client_write_timeout);
    // Wait for the first packet before dialling anything.
    let Some(first) = rx.recv().await else { return };
    let mut pending = Some(first);
    loop {
        match connect(&cfg, &ctx, &m, &mut control, peer, node, protocol.clone()).await {
            Some(mut out) => {
                failures = 0;
                // Why the stream is given up: an error, or `None` for a client
                // past its deadline; and whether a packet in hand was lost.
                let (broke, lost) = loop {
                    if let Some(item) = pending.take() {
                        let write = async {
                            match &item.frame {
                                Frame::Packet(p) => out.write_packet(p.as_bytes()).await,
                                Frame::Submission(f) => out.write_raw(f).await,
                            }
                        };
                        if let Err(e) = within(deadline, write).await {
                            break (e, true);
                        }
                        m.sent.inc();
                        // Sealed into a link's buffer: the packet's own buffer
                        // goes back to the pool, for a packet a link reads.
                        if let (PacketOut::Link(_), Some(pool), Frame::Packet(p)) = (&out, &ctx.buffers, item.frame) {
                            pool.put(p);
                        }
                        // Written: its part of the client budget goes back as it drops here.
                    }
                    // Flush only when nothing else is queued, so bursts go out in fewer syscalls.
                    pending = match rx.try_recv() {
                        Ok(p) => Some(p),
                        Err(mpsc::error::TryRecvError::Empty) => {
                            if let Err(e) = within(deadline, out.flush()).await {
                                break (e, false);
                            }
                            match rx.recv().await {
                                Some(p) => Some(p),
                                None => {
                                    out.close().await;
                                    return;
                                }
                            }
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    };
                };
                match broke {
                    Some(e) => {
                        tracing::debug!(error = %e, "packet stream write failed");
                        m.link_failed.inc();
                    }
                    // A client that does not read loses its connection and
                    // everything queued for it.
                    None => {
                        if lost {
                            m.client_write_timeout.inc();
                        }
                        m.client_timed_out.inc();
                        shed(&mut rx, &m.client_write_timeout);
                        disconnect(&ctx, peer);
                        return;
                    }
                }
                // A client's connection is gone with its stream: the link ends
                // (and egress forgets it) rather than wait for a client that left.
                if node.is_none() {
                    shed(&mut rx, &m.link_failed);
                    return;
                }
            }
            None => {
                failures += 1;
                drop(pending.take());
                m.link_failed.inc();
                shed(&mut rx, &m.link_failed);
                if failures >= 3 || node.is_none() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
            }
        }
        match rx.recv().await {
            Some(p) => pending = Some(p),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(packets: usize, per_link: usize) -> Arc<ClientBudget> {
        let cfg = EgressConfig {
            peer_queue: per_link,
            connect_timeout: Duration::from_secs(1),
            client_queue_bytes: packets * PACKET_LEN,
            client_write_timeout: Duration::from_secs(1),
            packet_link: false,
        };
        Arc::new(ClientBudget::new(&cfg, Default::default()))
    }

    /// Reserves on `link` until refused; returns the reservations and why it stopped.
    fn fill(b: &Arc<ClientBudget>, link: &Arc<AtomicUsize>) -> (Vec<Reservation>, Refusal) {
        let mut held = Vec::new();
        loop {
            match b.reserve(link) {
                Ok(r) => held.push(r),
                Err(why) => return (held, why),
            }
        }
    }

    #[test]
    fn clients_that_stop_reading_each_get_half_of_what_is_left() {
        let b = budget(64, 1024);
        let links: Vec<Arc<AtomicUsize>> = (0..4).map(|_| Arc::default()).collect();
        let mut kept = Vec::new();
        for (link, expect) in links.iter().zip([32, 16, 8, 4]) {
            let (held, why) = fill(&b, link);
            assert_eq!((held.len(), why), (expect, Refusal::Share));
            kept.push(held);
        }
        assert_eq!(b.queued.load(Ordering::Acquire), 60);
        // A client that reads still finds room.
        let reader = Arc::default();
        let first = b.reserve(&reader).unwrap();
        drop(first);
        // Written or dropped packets give their part back, to the link and the budget.
        kept.swap_remove(0);
        assert_eq!((links[0].load(Ordering::Acquire), b.queued.load(Ordering::Acquire)), (0, 28));
        assert_eq!(b.gauge.get(), 28);
    }

    #[test]
    fn the_per_link_cap_and_the_whole_budget_hold() {
        let b = budget(1000, 10);
        let link = Arc::default();
        let (held, why) = fill(&b, &link);
        assert_eq!((held.len(), why), (10, Refusal::Share));
        // The smallest budget (two packets) still serves one client a packet at a time.
        let b = budget(2, 1024);
        let (a, c) = (Arc::default(), Arc::default());
        let (held, _) = fill(&b, &a);
        assert_eq!(held.len(), 1);
        let (others, why) = fill(&b, &c);
        assert_eq!((others.len(), why), (0, Refusal::Share));
        drop(held);
        assert_eq!(fill(&b, &c).0.len(), 1);
    }
}
