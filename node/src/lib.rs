//! # nox-node
//!
//! The relay node operators run (binary `nox`). `docs/architecture.md` describes
//! the stages and what crosses each boundary; in short:
//!
//! * [`p2p`] — the libp2p swarm (TCP + Noise + Yamux, packet streams, control
//!   requests, GossipSub, identify, ping) and connection caps;
//! * [`control`] — the handshake through [`admission`], descriptors, epoch
//!   rotation, reply claims;
//! * [`pipeline`] — ingest → workers → mix → egress, bounded queues throughout;
//! * [`exit`] — final payloads: reassembly, the [`exit::ExitService`], replies;
//! * [`cover`] — loop and drop cover traffic and loop reliability;
//! * [`epoch`], [`replay`], [`store`] — epoch keys and per-key replay caches,
//!   persisted in one redb database;
//! * [`chain`] — the chain watcher: NoxRegistry's events become the topology;
//! * [`topology`], [`peers`], [`replies`] — shared state;
//! * [`http`], [`metrics`] — `/health`, `/metrics`, `/topology`;
//! * [`config`], [`keys`], [`node`] — configuration, key files, assembly.

#![warn(missing_docs)]

pub mod admission;
pub mod chain;
pub mod config;
pub mod control;
pub mod cover;
pub mod epoch;
pub mod exit;
pub mod http;
pub mod keys;
pub mod localnet;
pub mod metrics;
pub mod node;
pub mod operator;
pub mod p2p;
pub mod peers;
pub mod pipeline;
pub mod raw_peer;
pub mod replay;
pub mod replies;
pub mod store;
pub mod topology;
