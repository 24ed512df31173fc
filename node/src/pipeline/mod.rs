//! The relay pipeline: four stages joined by bounded queues.
//!
//! ```text
//!  streams ──► Ingest ──q1──► Workers ×N ──q2──► Mix ──q3──► Egress ──► next hop / exit / client
//!  (per peer)  size, tier,    X25519+MAC,        timer       per-peer
//!              token bucket,  replay check,      queue,      queues,
//!              PoW (clients)  body pass          batch       exit, replies
//! ```
//!
//! Each stage is a type with its own config and metrics; the queues between
//! them are `flume` channels with fixed capacities, so the memory a node can
//! hold is fixed by configuration: `q1 + q2 + mix.capacity + q3 + egress_in +
//! peers × egress.peer_queue` packets of 32 KiB. Ingest waits when `q1` is full
//! (backpressure reaches the sender's TCP window); the replay cache sheds a
//! sender holding its share of an epoch's tags; the mix stage drops with a
//! counter when a sender holds its fair share of `mix.capacity`, or the stage
//! all of it; egress drops with a counter
//! when one next hop's queue is full. Every drop is counted under
//! `nox_dropped_total{stage,reason}`.
//!
//! What crosses each boundary:
//! * q1: [`Inbound`] — a packet of exactly 32,768 bytes from an admitted peer,
//!   and its [`Sender`] (the key of the per-sender shares downstream).
//! * q2: batches of [`Scheduled`] (up to `worker::BATCH`, the queue bounded to
//!   `workers.queue` packets) — each a processed packet, its release time (the sender's delay,
//!   capped), the replay-cache sequence number that must be durable first, and
//!   its [`Sender`].
//! * q3: batches of up to `mix::RELEASE_BATCH` [`Action`]s from the mix (at
//!   most `egress.queue` packets), and beside it egress_in, single
//!   [`Action`]s from cover, the exit stage and control — forward to a node
//!   id, submit this node's own cover to an entry, deliver a final payload, or
//!   hand a reply to its SURB's client.

pub mod egress;
pub mod ingest;
pub mod mix;
pub mod worker;

use std::time::Instant;

use nox_protocol::NodeId;
use nox_protocol::sphinx::Packet;
use nox_protocol::sphinx::Payload;

/// Who handed a packet to this node: the key of its fair shares in the
/// replay cache and the mix (see [`mix`] and [`crate::replay`]).
///
/// Set by ingest from the stream the packet came on; `Copy` and without
/// allocation, so carrying it costs a few bytes per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sender {
    /// The node itself: its own cover submitted to itself, and packets it
    /// routes to itself. A route that crosses this node twice in a row counts
    /// its later hops here: the original sender is not carried through
    /// egress, so such hops share the node's own share, not their sender's.
    Local,
    /// An admitted node relaying on `/nox/packet/1`, or submitting its own
    /// cover on `/nox/submit/1`.
    Node(libp2p::PeerId),
    /// A client submitting on `/nox/submit/1`. Clients cost nothing to
    /// create, so they share one tier (see the stages' share rules).
    Client(libp2p::PeerId),
}

/// A packet accepted by ingest.
pub struct Inbound {
    /// The packet.
    pub packet: Packet,
    /// Who handed it over.
    pub sender: Sender,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inbound")
    }
}

/// What egress does with a packet.
pub enum Action {
    /// Send to the node `next`.
    Forward {
        /// Next hop.
        next: NodeId,
        /// The packet.
        packet: Packet,
    },
    /// This node's own cover, submitted to the entry `entry` on
    /// `/nox/submit/1` exactly as a client submits (`crate::cover`).
    Submit {
        /// The entry node.
        entry: NodeId,
        /// The submission frame: packet ‖ proof-of-work nonce.
        frame: Vec<u8>,
    },
    /// This node is the last hop: the payload goes to the exit stage.
    Final {
        /// The payload.
        payload: Payload,
    },
    /// A stored reply, now claimed: send it to the connected peer `client`
    /// that claimed it (a client, or a node claiming its loops' replies).
    Push {
        /// The claimant's peer id.
        client: libp2p::PeerId,
        /// The packet.
        packet: Packet,
    },
    /// A reply for the client holding SURB `surb_id`.
    Reply {
        /// SURB id.
        surb_id: [u8; 32],
        /// The packet.
        packet: Packet,
    },
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Forward { .. } => "Action::Forward(<redacted>)",
            Action::Submit { .. } => "Action::Submit(<redacted>)",
            Action::Final { .. } => "Action::Final(<redacted>)",
            Action::Reply { .. } => "Action::Reply(<redacted>)",
            Action::Push { .. } => "Action::Push(<redacted>)",
        })
    }
}

/// A processed packet waiting for its release.
pub struct Scheduled {
    /// When the mix stage may release it.
    pub release_at: Instant,
    /// Replay-cache sequence number that must be durable before release (0: none).
    pub durable_seq: u64,
    /// What to do then.
    pub action: Action,
    /// Who handed the packet over (from [`Inbound::sender`]).
    pub sender: Sender,
}

impl std::fmt::Debug for Scheduled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scheduled(<redacted>)")
    }
}
