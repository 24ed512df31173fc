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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::AsyncWriteExt;
use libp2p::PeerId;
use nox_protocol::NodeId;
use nox_protocol::sphinx::{Packet, Payload};
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

/// Egress settings.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// Packets queued per next hop.
    pub peer_queue: usize,
    /// How long a link waits for a connection and a welcome.
    pub connect_timeout: Duration,
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

impl Frame {
    fn bytes(&self) -> &[u8] {
        match self {
            Frame::Packet(p) => p.as_bytes(),
            Frame::Submission(f) => f,
        }
    }
}

/// A frame for a peer's link queue.
type LinkSender = mpsc::Sender<Frame>;

impl EgressStage {
    /// Runs egress until `input` closes.
    pub async fn run(cfg: EgressConfig, input: flume::Receiver<Action>, ctx: EgressContext) {
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
        });
        let mut links: HashMap<Target, LinkSender> = HashMap::new();
        let mut removals_seen = ctx.topology.removals();
        while let Ok(action) = input.recv_async().await {
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
                    send_to(&cfg, &ctx, &m, &mut links, Target::Node(next), Frame::Packet(packet));
                }
                Action::Submit { entry, frame } => {
                    // The cover task submits to itself through ingest, never here.
                    if entry == ctx.self_id {
                        m.bad_next_hop.inc();
                        continue;
                    }
                    send_to(&cfg, &ctx, &m, &mut links, Target::Submit(entry), Frame::Submission(frame));
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
                    send_to(&cfg, &ctx, &m, &mut links, claimant(&ctx, client), Frame::Packet(packet));
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
                            send_to(&cfg, &ctx, &m, &mut links, claimant(&ctx, client), Frame::Packet(packet));
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
    links: &mut HashMap<Target, LinkSender>,
    target: Target,
    frame: Frame,
) {
    let frame = match links.get(&target) {
        Some(link) => match link.try_send(frame) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(_)) => {
                m.peer_queue_full.inc();
                return;
            }
            // The link task ended (it gives up after repeated failures): start afresh.
            Err(mpsc::error::TrySendError::Closed(f)) => f,
        },
        None => frame,
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
    links.retain(|_, tx| !tx.is_closed());
    let (tx, rx) = mpsc::channel(cfg.peer_queue.max(1));
    tokio::spawn(run_link(cfg.clone(), ctx.clone(), m.clone(), peer, node, target.protocol(), rx));
    if tx.try_send(frame).is_err() {
        m.peer_queue_full.inc();
    }
    links.insert(target, tx);
}

/// Drops everything queued on a link that cannot send, counting each packet.
fn shed(rx: &mut mpsc::Receiver<Frame>, m: &EgressMetrics) {
    while rx.try_recv().is_ok() {
        m.link_failed.inc();
    }
}

/// Reaches `peer`: for a node, dial it at its topology addresses and wait for
/// its welcome; then open the link's stream (`protocol`). A client is reached
/// over the connection it already holds.
async fn connect(
    cfg: &EgressConfig,
    ctx: &EgressContext,
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    node: Option<NodeId>,
    protocol: StreamProtocol,
) -> Option<libp2p::Stream> {
    if let Some(id) = node {
        let addrs = ctx.topology.addresses(&id);
        let _ = ctx.p2p.command(Command::Dial { peer, addrs }).await;
        if !ctx.peers.wait_welcomed(&peer, cfg.connect_timeout).await {
            return None;
        }
    }
    match control.open_stream(peer, protocol).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::debug!(error = %e, "opening packet stream failed");
            None
        }
    }
}

/// One next hop's link: connect, stream packets back to back; when the hop
/// cannot be reached, drop the packet in hand and everything queued behind it
/// (counted as `link_failed`), back off, and try again with the next packet.
/// A link gives up after three failures in a row (egress starts a new one on
/// the next packet); a client link ends as soon as it cannot connect or its
/// stream breaks.
async fn run_link(
    cfg: EgressConfig,
    ctx: EgressContext,
    m: Arc<EgressMetrics>,
    peer: PeerId,
    node: Option<NodeId>,
    protocol: StreamProtocol,
    mut rx: mpsc::Receiver<Frame>,
) {
    let mut control = ctx.p2p.streams.clone();
    let mut failures = 0u32;
    // Wait for the first packet before dialling anything.
    let Some(mut pending) = rx.recv().await else { return };
    loop {
        match connect(&cfg, &ctx, &mut control, peer, node, protocol.clone()).await {
            Some(mut stream) => {
                failures = 0;
                loop {
                    if let Err(e) = stream.write_all(pending.bytes()).await {
                        tracing::debug!(error = %e, "packet stream write failed");
                        m.link_failed.inc();
                        break;
                    }
                    m.sent.inc();
                    // Flush only when nothing else is queued, so bursts go out in fewer syscalls.
                    pending = match rx.try_recv() {
                        Ok(p) => p,
                        Err(mpsc::error::TryRecvError::Empty) => {
                            if stream.flush().await.is_err() {
                                m.link_failed.inc();
                                break;
                            }
                            match rx.recv().await {
                                Some(p) => p,
                                None => {
                                    let _ = stream.close().await;
                                    return;
                                }
                            }
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    };
                }
                // A client's connection is gone with its stream: the link ends
                // (and egress forgets it) rather than wait for a client that left.
                if node.is_none() {
                    shed(&mut rx, &m);
                    return;
                }
            }
            None => {
                failures += 1;
                m.link_failed.inc();
                shed(&mut rx, &m);
                if failures >= 3 || node.is_none() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
            }
        }
        match rx.recv().await {
            Some(p) => pending = p,
            None => return,
        }
    }
}
