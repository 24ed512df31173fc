//! What the control protocol says, and the names every NOX peer uses on the
//! wire: protocol ids, GossipSub topics, the handshake and the control
//! messages. Nodes, clients and the oracle speak it alike; the swarm in
//! [`crate::p2p`] carries it.
//!
//! | protocol / topic        | carries                                                       |
//! |-------------------------|---------------------------------------------------------------|
//! | `/nox/packet/1`         | a long-lived stream of raw 32,768-byte packets, no framing     |
//! | `/nox/packet-link/1`    | a packet link offer ([`crate::packet_link`]); packets then go on its own TCP connection |
//! | `/nox/submit/1`         | client (or a node's own cover) → entry: `packet ‖ 8-byte PoW nonce` frames (`nox_protocol::pow`) |
//! | `/nox/control/1`        | request-response (CBOR): [`ControlRequest`] / [`ControlResponse`] |
//! | `nox/descriptors/1`     | GossipSub: signed mix descriptors                              |
//! | `nox/prices/1`          | GossipSub: signed oracle price rounds (`nox_protocol::price`)   |

use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

/// Raw packets between nodes, and replies from an entry node to its clients.
pub const PACKET_PROTOCOL: StreamProtocol = StreamProtocol::new("/nox/packet/1");
/// Submissions with proof of work: clients', and nodes' own cover.
pub const SUBMIT_PROTOCOL: StreamProtocol = StreamProtocol::new("/nox/submit/1");
/// Control requests.
pub const CONTROL_PROTOCOL: StreamProtocol = StreamProtocol::new("/nox/control/1");
/// GossipSub topic for mix descriptors.
pub const DESCRIPTOR_TOPIC: &str = "nox/descriptors/1";
/// GossipSub topic for oracle prices.
pub const PRICE_TOPIC: &str = "nox/prices/1";
/// Version of the control protocol spoken in `Hello`.
pub const CONTROL_VERSION: u16 = 1;
/// Most SURB ids one `SubscribeReplies` may claim.
pub const MAX_REPLY_CLAIMS: usize = 1024;

/// What a peer says it is, and the tier it is admitted at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PeerKind {
    /// A relay or exit node.
    Node,
    /// A client submitting its own packets.
    Client,
    /// A price oracle: admitted for gossip only (it publishes price rounds),
    /// never for packets or submissions.
    Oracle,
}

/// A control request.
#[derive(Clone, Serialize, Deserialize)]
pub enum ControlRequest {
    /// The handshake: sent by both ends when a connection is first established.
    Hello {
        /// Control protocol version.
        version: u16,
        /// What the sender is.
        kind: PeerKind,
    },
    /// Ask for every verified descriptor the peer holds.
    GetDescriptors,
    /// Ask for the latest accepted price round of each oracle the peer
    /// trusts; the asker checks them against its own trusted keys.
    GetPrices,
    /// A client (or a node, for its loop cover) claims replies addressed to
    /// these SURB ids (entry nodes only).
    SubscribeReplies {
        /// The SURB ids.
        surb_ids: Vec<[u8; 32]>,
    },
}

impl std::fmt::Debug for ControlRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlRequest::Hello { version, kind } => write!(f, "Hello {{ version: {version}, kind: {kind:?} }}"),
            ControlRequest::GetDescriptors => f.write_str("GetDescriptors"),
            ControlRequest::GetPrices => f.write_str("GetPrices"),
            // SURB ids link a client to its replies: never print them.
            ControlRequest::SubscribeReplies { surb_ids } => write!(f, "SubscribeReplies({} ids)", surb_ids.len()),
        }
    }
}

/// A control response.
#[derive(Clone, Serialize, Deserialize)]
pub enum ControlResponse {
    /// Admitted at this tier.
    Welcome {
        /// The tier.
        kind: PeerKind,
    },
    /// Not admitted; the connection is closed after this answer.
    Refused {
        /// Why.
        reason: String,
    },
    /// Encoded descriptors.
    Descriptors {
        /// Each a `MixDescriptor` encoding.
        encoded: Vec<Vec<u8>>,
    },
    /// Encoded price rounds (empty when the peer keeps no price book).
    Prices {
        /// Each a `PriceRound` encoding.
        encoded: Vec<Vec<u8>>,
    },
    /// Done.
    Ack,
    /// The answer to `SubscribeReplies`: how many of its ids the entry holds
    /// for the claimant (a claim the claimant already held counts, and so does
    /// an id whose waiting reply is pushed at once), and which it refused —
    /// the claimant's share or the entry's claim table was full, or another
    /// peer holds the id. `accepted + refused.len()` is the number of ids
    /// claimed. A refused id's reply is not pushed; the claimant may claim it
    /// again later (the entry keeps an unclaimed reply for its TTL).
    Claimed {
        /// Ids held for the claimant.
        accepted: u32,
        /// The ids refused, in the order they were claimed.
        refused: Vec<[u8; 32]>,
    },
    /// The request could not be served.
    Error {
        /// Why.
        reason: String,
    },
}

impl std::fmt::Debug for ControlResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlResponse::Welcome { kind } => write!(f, "Welcome {{ kind: {kind:?} }}"),
            ControlResponse::Refused { reason } => write!(f, "Refused {{ reason: {reason:?} }}"),
            ControlResponse::Descriptors { encoded } => write!(f, "Descriptors({} encoded)", encoded.len()),
            ControlResponse::Prices { encoded } => write!(f, "Prices({} encoded)", encoded.len()),
            ControlResponse::Ack => f.write_str("Ack"),
            // SURB ids link a client to its replies: only the counts.
            ControlResponse::Claimed { accepted, refused } => {
                write!(f, "Claimed {{ accepted: {accepted}, refused: {} }}", refused.len())
            }
            ControlResponse::Error { reason } => write!(f, "Error {{ reason: {reason:?} }}"),
        }
    }
}
