//! # nox-oracle
//!
//! Price oracle: price sources, aggregation, signing, GossipSub publication.
//!
//! **Not implemented yet.** This crate is a placeholder in the workspace layout;
//! its contents arrive with the oracle issue and it exports nothing until then.
//! Its place is fixed: each price source behind one source trait here; the
//! signed price message's byte layout in `nox-protocol` (nodes verify what
//! the oracle signs); publication on `nox_net::control::PRICE_TOPIC` through
//! `nox_net::p2p`; its configuration file through `nox-config`. It never
//! depends on `nox-node`.

#![warn(missing_docs)]
