//! The control plane: the task that answers the transport's events.
//!
//! It owns everything that is not packet processing:
//! * the handshake — sends `Hello` on every new connection, answers the
//!   peer's `Hello` through the [`Admission`] policy, records the outcome in
//!   the [`PeerTable`], and disconnects peers that stay silent past the
//!   handshake timeout or are refused;
//! * descriptors — publishes this node's signed descriptors (current and next
//!   epoch) on GossipSub at start, at every rotation and periodically; answers
//!   `GetDescriptors`; validates gossip before GossipSub passes it on
//!   (forged, stale and future descriptors are rejected and counted); a
//!   descriptor that proves its node equivocated (a second signed mix key for
//!   an epoch) is passed on, so every node holding the first learns it;
//! * epochs — rotates the key ring once a second when due, creates and drops
//!   the matching replay caches, prunes old descriptors;
//! * reply claims (`SubscribeReplies`) from clients, and from nodes claiming
//!   the replies to their loop cover exactly as a client claims its own
//!   (`crate::cover`), each answered `Claimed` with the ids the mailbox
//!   refused (the claimant's share, see `crate::replies`);
//! * prices — price rounds gossiped on `nox/prices/1` by any admitted peer
//!   (oracles publish them, nodes relay them) go through the
//!   [`PriceFeed`]: GossipSub relays a round only if the feed accepted it.
//!   `GetPrices` is answered with the feed's latest round of each oracle, and
//!   a node that welcomes us is asked for its rounds, so a node that just
//!   started can price at once instead of waiting for the next round.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use libp2p::PeerId;
use nox_protocol::NodeId;
use tokio::sync::mpsc;

use crate::admission::Admission;
use crate::epoch::{EpochKeyRing, unix_now};
use crate::metrics::Metrics;
use crate::peers::PeerTable;
use crate::pipeline::Action;
use crate::pipeline::ingest::IngestStage;
use crate::prices::PriceFeed;
use crate::replay::ReplayCache;
use crate::replies::ReplyMailbox;
use crate::topology::Topology;
use nox_net::p2p::{
    self, CONTROL_VERSION, Command, ControlRequest, ControlResponse, DESCRIPTOR_TOPIC, Event, MAX_REPLY_CLAIMS,
    P2pHandle, PRICE_TOPIC, PeerKind,
};

/// What the control task works with.
#[derive(Clone)]
pub struct ControlContext {
    /// This node's id.
    pub self_id: NodeId,
    /// Its identity key (signs descriptors).
    pub identity: SigningKey,
    /// Layer and role byte for descriptors.
    pub layer: u8,
    /// 0 relay, 1 exit.
    pub role: u8,
    /// The request kinds this node serves, as its descriptors list them (0 for a relay).
    pub services: u16,
    /// Addresses to publish.
    pub addresses: Arc<[String]>,
    /// An exit's fee policy for paid calls, if it relays them.
    pub fee_policy: Option<nox_protocol::descriptor::FeePolicy>,
    /// Transport.
    pub p2p: P2pHandle,
    /// Peer table.
    pub peers: Arc<PeerTable>,
    /// Topology.
    pub topology: Arc<Topology>,
    /// Admission policy.
    pub admission: Arc<dyn Admission>,
    /// Epoch keys.
    pub keys: Arc<RwLock<EpochKeyRing>>,
    /// Replay caches.
    pub replay: Arc<ReplayCache>,
    /// Reply mailbox.
    pub replies: Arc<ReplyMailbox>,
    /// The price book.
    pub prices: Arc<PriceFeed>,
    /// Ingest (to forget a departed peer's bucket).
    pub ingest: Arc<IngestStage>,
    /// Egress input (claimed replies).
    pub egress: flume::Sender<Action>,
    /// Metrics.
    pub metrics: Metrics,
    /// Handshake deadline.
    pub handshake_timeout: Duration,
    /// How often descriptors are re-published.
    pub publish_every: Duration,
}

impl std::fmt::Debug for ControlContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlContext")
    }
}

/// Runs the control plane until the transport's event stream ends.
pub async fn run(ctx: ControlContext, mut events: mpsc::Receiver<Event>) {
    publish_descriptors(&ctx).await;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut maintain = tokio::time::interval(Duration::from_secs(3));
    let mut publish = tokio::time::interval(ctx.publish_every.max(Duration::from_secs(1)));
    publish.tick().await;
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => on_event(&ctx, ev).await,
                None => return,
            },
            _ = tick.tick() => on_tick(&ctx).await,
            _ = publish.tick() => publish_descriptors(&ctx).await,
            _ = maintain.tick() => maintain_connections(&ctx).await,
        }
    }
}

/// Signs this node's current and next descriptors, records them in its own
/// topology and publishes them.
pub async fn publish_descriptors(ctx: &ControlContext) {
    let (descriptors, current) = {
        let ring = ctx.keys.read().unwrap_or_else(|e| e.into_inner());
        (
            ring.descriptors(&ctx.identity, ctx.layer, ctx.role, ctx.services, &ctx.addresses, ctx.fee_policy.as_ref()),
            ring.current_epoch(),
        )
    };
    let descriptors = match descriptors {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "signing descriptors failed");
            return;
        }
    };
    for d in descriptors {
        let bytes = d.encode();
        let _ = ctx.topology.accept_descriptor(d, current);
        let _ = ctx.p2p.command(Command::Publish { topic: DESCRIPTOR_TOPIC, data: bytes }).await;
    }
    ctx.metrics.event("descriptor", "published").inc();
}

/// Dials every node of the topology that has not admitted us yet: a refused
/// or dropped connection is retried, and nodes learnt later get connected, so
/// descriptors and gossip reach every node.
async fn maintain_connections(ctx: &ControlContext) {
    for (id, _) in ctx.topology.node_ids() {
        if id == ctx.self_id {
            continue;
        }
        let Ok(peer) = p2p::peer_id_of(&id) else { continue };
        if !ctx.peers.welcomed(&peer) {
            let addrs = ctx.topology.addresses(&id);
            if !addrs.is_empty() {
                let _ = ctx.p2p.command(Command::Dial { peer, addrs }).await;
            }
        }
    }
}

async fn on_tick(ctx: &ControlContext) {
    let now = unix_now();
    // Workers read the ring for every packet: the write lock is taken only
    // when a rotation is due, and the rotation's commit (an fsync) runs off
    // the async runtime.
    if ctx.keys.read().unwrap_or_else(|e| e.into_inner()).rotation_due(now) {
        let keys = ctx.keys.clone();
        let rotated = tokio::task::spawn_blocking(move || {
            keys.write().unwrap_or_else(|e| e.into_inner()).rotate(now, &mut rand::rngs::OsRng)
        })
        .await;
        match rotated {
            Ok(Ok(r)) if !r.is_empty() => {
                for e in r.new_current.iter().chain(&r.new_next) {
                    ctx.replay.add_epoch(*e);
                }
                for e in &r.retired {
                    if let Err(err) = ctx.replay.drop_epoch(*e) {
                        tracing::warn!(error = %err, epoch = e, "dropping a replay cache failed");
                    }
                }
                let current = ctx.keys.read().unwrap_or_else(|e| e.into_inner()).current_epoch();
                ctx.topology.prune(current);
                ctx.metrics.event("epoch", "rotated").inc();
                publish_descriptors(ctx).await;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                ctx.metrics.event("epoch", "rotation_failed").inc();
                tracing::error!(error = %e, "epoch rotation failed");
            }
            Err(e) => {
                ctx.metrics.event("epoch", "rotation_failed").inc();
                tracing::error!(error = %e, "epoch rotation task failed");
            }
        }
    }
    let current = ctx.keys.read().unwrap_or_else(|e| e.into_inner()).current_epoch();
    ctx.metrics.epoch().set(current as i64);
    for peer in ctx.peers.silent_since(ctx.handshake_timeout) {
        ctx.metrics.event("handshake", "timeout").inc();
        let _ = ctx.p2p.command(Command::Disconnect { peer }).await;
    }
    let counts = ctx.peers.counts();
    ctx.metrics.peers("node").set(counts.nodes);
    ctx.metrics.peers("client").set(counts.clients);
    ctx.metrics.peers("oracle").set(counts.oracles);
    ctx.metrics.queue_depth("ingest").set(ctx.ingest.queued() as i64);
}

async fn on_event(ctx: &ControlContext, ev: Event) {
    match ev {
        Event::Connected { peer } => {
            ctx.peers.connected(peer);
            let hello = ControlRequest::Hello { version: CONTROL_VERSION, kind: PeerKind::Node };
            let _ = ctx.p2p.command(Command::Request { peer, request: hello }).await;
        }
        Event::Disconnected { peer } => {
            ctx.peers.disconnected(&peer);
            ctx.ingest.forget(&peer);
            ctx.replies.forget_client(&peer);
        }
        // Egress waits for the welcome with a timeout and counts the packets
        // it could not send; the maintenance tick dials again.
        // The error names the peer and its address, and egress dials when a
        // packet is first due for a hop: logging it would time a route.
        Event::DialFailed { .. } => {
            tracing::debug!("dial failed");
            ctx.metrics.event("dial", "failed").inc();
        }
        Event::Request { peer, request, channel } => {
            let response = on_request(ctx, peer, request);
            let refused = matches!(response, ControlResponse::Refused { .. });
            let _ = ctx.p2p.command(Command::Respond { channel, response }).await;
            if refused {
                // Give the answer a moment to leave, then close.
                let p2p = ctx.p2p.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let _ = p2p.command(Command::Disconnect { peer }).await;
                });
            }
        }
        Event::Response { peer, response } => match response {
            ControlResponse::Welcome { .. } => {
                ctx.peers.set_welcomed(peer);
                // A node that admitted us is worth asking for its descriptors
                // (and its prices, if we keep a book).
                let _ = ctx.p2p.command(Command::Request { peer, request: ControlRequest::GetDescriptors }).await;
                if ctx.prices.enabled() {
                    let _ = ctx.p2p.command(Command::Request { peer, request: ControlRequest::GetPrices }).await;
                }
            }
            // The reason is the peer's text: counted, not logged.
            ControlResponse::Refused { .. } => {
                ctx.metrics.event("handshake", "refused_by_peer").inc();
                tracing::warn!("a peer refused our handshake");
            }
            ControlResponse::Descriptors { encoded } => {
                let current = descriptor_epoch(ctx);
                for bytes in encoded.iter().take(4096) {
                    count_descriptor(ctx, ctx.topology.accept_descriptor_bytes(bytes, current), current);
                }
            }
            ControlResponse::Prices { encoded } => {
                if ctx.prices.enabled() {
                    for bytes in encoded.iter().take(nox_protocol::price::MAX_ORACLES) {
                        let _ = ctx.prices.accept_fetched(bytes);
                    }
                }
            }
            // The answer to this node's claims for its loops: a refused claim
            // leaves that loop's reply unpushed, and the loop counts as lost.
            ControlResponse::Claimed { refused, .. } => {
                ctx.metrics.event("reply_claim", "refused_by_peer").inc_by(refused.len() as u64);
            }
            ControlResponse::Ack | ControlResponse::Error { .. } => {}
        },
        Event::RequestFailed { .. } => {
            ctx.metrics.event("control", "request_failed").inc();
        }
        Event::Gossip { source, message_id, topic, data } => {
            let accept = if topic == DESCRIPTOR_TOPIC {
                let current = descriptor_epoch(ctx);
                let r = ctx.topology.accept_descriptor_bytes(&data, current);
                // The second key of an equivocation is evidence: relayed, so
                // that nodes holding the first exclude the node too.
                let ok = matches!(r, Ok(_) | Err(crate::topology::DescriptorRejection::Equivocation { .. }));
                count_descriptor(ctx, r, current);
                ok
            } else if topic == PRICE_TOPIC {
                // From any admitted peer (an oracle publishes, nodes relay);
                // the feed's checks decide whether GossipSub passes it on.
                if ctx.peers.admitted(&source).is_some() {
                    ctx.prices.accept_gossip(&data)
                } else {
                    ctx.metrics.event(crate::prices::KIND, "not_admitted").inc();
                    false
                }
            } else {
                false
            };
            let _ = ctx.p2p.command(Command::Validate { message_id, source, accept }).await;
        }
    }
}

/// The epoch received descriptors are judged against: the wall clock's, or the
/// ring's if that is ahead. The ring rotates on a one-second tick, so right
/// after a boundary a peer that already rotated publishes its new next-epoch
/// descriptor while this ring may still be one epoch behind; judged by the ring
/// it would be refused as `future`, and GossipSub does not send the same bytes
/// again while they are in its duplicate cache.
fn descriptor_epoch(ctx: &ControlContext) -> u64 {
    let ring = ctx.keys.read().unwrap_or_else(|e| e.into_inner());
    ring.current_epoch().max(ring.clock().epoch_at(unix_now()))
}

fn count_descriptor(ctx: &ControlContext, r: Result<bool, crate::topology::DescriptorRejection>, current: u64) {
    match r {
        Ok(true) => ctx.metrics.event("descriptor", "accepted").inc(),
        Ok(false) => ctx.metrics.event("descriptor", "duplicate").inc(),
        Err(e @ crate::topology::DescriptorRejection::Equivocation { .. }) => {
            // Operator data (a node id and an epoch), never a user's.
            tracing::warn!(error = %e, "equivocation: a node signed two mix keys for one epoch");
            ctx.metrics.equivocating_nodes().set(ctx.topology.excluded_nodes(current) as i64);
            ctx.metrics.event("descriptor", e.label()).inc()
        }
        Err(e) => {
            tracing::debug!(reason = e.label(), "descriptor rejected");
            ctx.metrics.event("descriptor", e.label()).inc()
        }
    };
}

fn on_request(ctx: &ControlContext, peer: PeerId, request: ControlRequest) -> ControlResponse {
    match request {
        ControlRequest::Hello { version, kind } => {
            let id = p2p::node_id_of(&peer);
            match ctx.admission.admit(id.as_ref(), version, kind) {
                Ok(tier) => {
                    ctx.peers.set_admitted(peer, tier);
                    ctx.metrics.event("handshake", "admitted").inc();
                    ControlResponse::Welcome { kind: tier }
                }
                Err(refusal) => {
                    ctx.peers.set_refused(peer);
                    ctx.metrics.event("handshake", refusal.label()).inc();
                    ControlResponse::Refused { reason: refusal.to_string() }
                }
            }
        }
        ControlRequest::GetPrices => {
            if ctx.peers.admitted(&peer).is_none() {
                return ControlResponse::Error { reason: "handshake first".into() };
            }
            ControlResponse::Prices { encoded: ctx.prices.encoded_rounds() }
        }
        ControlRequest::GetDescriptors => {
            if ctx.peers.admitted(&peer).is_none() {
                return ControlResponse::Error { reason: "handshake first".into() };
            }
            ControlResponse::Descriptors { encoded: ctx.topology.encoded_descriptors(descriptor_epoch(ctx)) }
        }
        ControlRequest::SubscribeReplies { surb_ids } => {
            // A node's loops end at their entry like a client's requests, so
            // a node claims their replies like a client; the mailbox holds
            // every claimant to the same share. An oracle receives no packets.
            match ctx.peers.admitted(&peer) {
                None => return ControlResponse::Error { reason: "handshake first".into() },
                Some(PeerKind::Oracle) => {
                    return ControlResponse::Error { reason: "oracles receive no replies".into() };
                }
                Some(PeerKind::Node | PeerKind::Client) => {}
            }
            if surb_ids.len() > MAX_REPLY_CLAIMS {
                return ControlResponse::Error { reason: format!("at most {MAX_REPLY_CLAIMS} ids per claim") };
            }
            let out = ctx.replies.claim(peer, &surb_ids);
            for packet in out.ready {
                if ctx.egress.try_send(Action::Push { client: peer, packet }).is_err() {
                    ctx.metrics.dropped("control", "egress_full").inc();
                }
            }
            // Every id is answered: the claimant learns which ones it does not hold.
            ctx.metrics.event("reply_claim", "accepted").inc_by(out.accepted as u64);
            ctx.metrics.event("reply_claim", "refused").inc_by(out.refused.len() as u64);
            ControlResponse::Claimed { accepted: out.accepted as u32, refused: out.refused }
        }
    }
}
