//! # nox-protocol
//!
//! Everything that every NOX party — client, relay node, exit, oracle — must agree
//! on byte for byte. The crate is pure and synchronous: no async runtime, no
//! network, no clock. Callers pass time in and get typed errors out, which keeps it
//! fuzzable and lets the node drive it from any number of worker threads.
//!
//! The layers, from the wire inwards:
//!
//! * [`sphinx`] — the fixed-size 32,768-byte packet. Clients build it
//!   ([`sphinx::PacketBuilder`]); nodes peel one layer per hop in two phases
//!   ([`sphinx::Packet::peel_header`], then [`sphinx::PeeledHeader::finish`]) so
//!   that a replay is dropped before the expensive half of the work. Single-use
//!   reply blocks live in [`sphinx::surb`].
//! * [`crypto`] — the primitives the packet is made of: X25519 (AWS-LC), the
//!   BLAKE3 key schedule, the wide-block body cipher and ISO/IEC 7816-4 padding.
//! * [`fragment`] — messages larger than one packet: fragmentation, Reed–Solomon
//!   parity, size buckets and a bounded reassembler.
//! * [`payload`] — the versioned envelope that says what a message asks for
//!   (echo, an Ethereum request, an RPC call, mail, …) and the reply that
//!   answers it; [`payment`] — the gas payment an Ethereum request carries.
//! * [`route`] — route choice (stratified, free, cover loops) and the
//!   sender-sampled delays; [`cover`] — the cover payload format.
//! * [`topology`] — roles, layers and the layer rule every party applies.
//! * [`descriptor`] — epoch numbers and the signed descriptors in which nodes
//!   publish each epoch's mix key one epoch ahead.
//! * [`price`] — the signed price rounds oracles publish and the price book
//!   (trusted keys, threshold, staleness) exits and clients value tokens with.
//! * [`pow`] — the proof of work a client attaches to each packet it submits
//!   to an entry node, and the submission frame that carries both.
//! * [`contracts`] — the contracts' ABIs and the formulas nodes and clients
//!   must compute exactly as the contracts do.
//!
//! `docs/protocol.md` in the repository gives every byte layout and key
//! derivation label; the vectors under `protocol/tests/vectors/` pin them.

#![warn(missing_docs)]

pub mod answer;
pub mod contracts;
pub mod cover;
pub mod crypto;
pub mod descriptor;
pub mod fragment;
pub mod payload;
pub mod payment;
pub mod pow;
pub mod price;
pub mod route;
pub mod sphinx;
pub mod topology;
mod wire;

pub use topology::Role;

pub use sphinx::{
    BODY_LEN, HEADER_LEN, MAX_HOPS, NodeId, PACKET_LEN, PAYLOAD_CAPACITY, Packet, PacketBuilder, PeeledHeader,
    Processed, RoutingKind, SphinxError,
};
