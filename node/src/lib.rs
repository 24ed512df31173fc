//! # nox-node
//!
//! The relay node operators run (binary `nox`). `docs/architecture.md` describes
//! the stages and what crosses each boundary; in short:
//!
//! * [`control`] — the handshake through [`admission`], descriptors, epoch
//!   rotation, reply claims;
//! * [`pipeline`] — ingest → workers → mix → egress, bounded queues throughout;
//! * [`delivery`] — final payloads on every node: cover accounting, client
//!   fragments on to the exit stage;
//! * [`exit`] — an exit's client messages: reassembly, the
//!   [`exit::ServiceRouter`] of [`exit::ExitService`]s, replies through SURBs;
//! * [`cover`] — loop and drop cover traffic, shaped like clients' requests,
//!   and loop reliability;
//! * [`epoch`], [`replay`], [`store`] — epoch keys and per-key replay caches,
//!   persisted in one redb database;
//! * [`chain`] — the chain watcher: NoxRegistry's events become the topology;
//! * [`prices`] — the price book of trusted oracles' signed rounds: price
//!   gossip is checked against it, an exit prices token fees with it;
//! * [`topology`], [`peers`], [`replies`] — shared state;
//! * [`http`], [`metrics`] — `/health`, `/metrics`, `/topology`;
//! * [`config`], [`keys`], [`node`] — configuration, key files, assembly.

#![warn(missing_docs)]

pub mod admission;
pub mod chain;
pub mod config;
pub mod control;
pub mod cover;
pub mod delivery;
pub mod epoch;
pub mod epoch_store;
pub mod exit;
#[cfg(feature = "test-harness")]
pub mod faults;
pub mod http;
pub mod keys;
#[cfg(any(test, feature = "test-harness"))]
pub mod localnet;
pub mod metrics;
pub mod node;
pub mod peers;
pub mod pipeline;
pub mod prices;
pub mod replay;
pub mod replay_log;
pub mod replies;
pub mod smtp_entry;
pub mod store;
pub mod topology;
