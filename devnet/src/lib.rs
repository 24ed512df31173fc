//! # nox-devnet
//!
//! One-command local network: anvil, contracts, nodes and oracle.
//!
//! **Not implemented yet.** The harness (start anvil, deploy, fund and register
//! nodes, start them, wait for the topology, tear down) arrives with the devnet
//! issue; until then this crate exports nothing. Its `tests/registry_anvil.rs`
//! already exercises the pieces the harness will reuse: anvil from
//! `node_modules/.bin` in its own process group, and the forge deploy script
//! `contracts/script/Deploy.s.sol`.

#![warn(missing_docs)]
