//! # nox-node
//!
//! Relay node: libp2p transport, relay pipeline, mixing, cover traffic, exit services, chain watcher, HTTP API.
//!
//! **Not implemented yet.** This crate is a placeholder in the workspace layout
//! so that the dependency direction (`nox-protocol` ← this crate) is fixed from
//! the start. Its contents arrive with the relay node issue; until then it exports nothing.

#![warn(missing_docs)]
