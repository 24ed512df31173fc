//! # nox-circuits
//!
//! Zero-knowledge circuits: gas_payment spend circuit, Poseidon, notes, Merkle tree.
//!
//! **Not implemented yet.** This crate is a placeholder in the workspace layout
//! so that the dependency direction (`nox-protocol` ← this crate) is fixed from
//! the start. Its contents arrive with the shielded pool issue; until then it exports nothing.

#![warn(missing_docs)]
