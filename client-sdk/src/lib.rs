//! # nox-client
//!
//! The client side of NOX: what a dApp links to send requests through the
//! mixnet and read the answers. It depends on the shared crates only
//! (`nox-protocol`, `nox-net`), never on the relay.
//!
//! Today it holds the request path every client needs and every harness
//! uses: [`request`] wraps a [`nox_protocol::payload::Request`] in an
//! envelope with SURBs for its answer, fragments it into Sphinx packets over
//! the caller's route, submits them to an entry node with proof of work
//! through a [`nox_net::raw_peer::RawPeer`], and reassembles and authenticates
//! the [`nox_protocol::payload::Reply`].
//!
//! **Not implemented yet** (they arrive with the client issue): learning the
//! topology from NoxRegistry, choosing routes and delays itself, client
//! cover traffic, the SURB budget per request kind, the shielded wallet, the
//! private-call API and the local JSON-RPC and SMTP gateways.

#![warn(missing_docs)]

pub mod request;

pub use request::{PreparedRequest, ReplyError, RequestError, build_request, echo_request};
