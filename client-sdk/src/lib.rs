//! # nox-client
//!
//! Client SDK: routing, cover traffic, SURB budget, reassembly, shielded wallet, private transaction API.
//!
//! **Not implemented yet.** This crate is a placeholder in the workspace layout
//! so that the dependency direction (`nox-protocol` ← this crate) is fixed from
//! the start. Its contents arrive with the client issues; until then it exports nothing.

#![warn(missing_docs)]
