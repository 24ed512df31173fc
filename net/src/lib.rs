//! # nox-net
//!
//! What every NOX peer — relay node, client, oracle — needs to talk to the
//! network, without the relay pipeline:
//!
//! * [`control`] — protocol ids, GossipSub topics, the handshake and the
//!   control messages;
//! * [`p2p`] — the libp2p swarm (TCP + Noise + Yamux, request-response,
//!   GossipSub, identify, ping, raw streams) as one task driven by commands,
//!   with connection caps ([`p2p::limits`]);
//! * [`packet_link`] — the data plane between nodes: a direct TCP
//!   connection of fixed AES-256-GCM frames, set up over the libp2p link;
//! * [`raw_peer`] — a peer without a pipeline: the client transport (submit
//!   packets with proof of work, claim and receive replies), the relay
//!   benchmark's load generator and forwarder, and the hostile peer of tests;
//! * [`topology_doc`] — the typed `/topology` document nodes serve and
//!   everyone reads.
//!
//! The packet formats themselves are `nox-protocol`'s; this crate moves bytes.

#![warn(missing_docs)]

pub mod control;
pub mod p2p;
pub mod packet_link;
pub mod raw_peer;
pub mod topology_doc;
