//! # nox-oracle
//!
//! Price oracle: price sources, aggregation, signing, GossipSub publication.
//!
//! **Not implemented yet.** This crate is a placeholder in the workspace layout
//! so that the dependency direction (`nox-protocol` ← this crate) is fixed from
//! the start. Its contents arrive with the oracle issue; until then it exports nothing.

#![warn(missing_docs)]
