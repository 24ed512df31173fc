//! # nox-devnet
//!
//! One-command local network: anvil, contracts, nodes and oracle.
//!
//! **Not implemented yet.** This crate is a placeholder in the workspace layout
//! so that the dependency direction (`nox-protocol` ← this crate) is fixed from
//! the start. Its contents arrive with the devnet issue; until then it exports nothing.

#![warn(missing_docs)]
