//! # nox-node
//!
//! The relay node operators run (binary `nox`).
//!
//! **Partly implemented.** What exists today is [`keys`]: generating, storing and
//! loading the node's identity and wallet keys (`nox keygen`). The libp2p
//! transport, the relay pipeline, mixing, cover traffic, epoch keys, the HTTP API
//! and the exit services arrive with the relay-node issue; nothing here pretends
//! to provide them.

#![warn(missing_docs)]

pub mod keys;
