//! # nox-eth
//!
//! Everything NOX does on Ethereum that more than one binary needs, with no
//! dependency on the relay:
//!
//! * [`rpc`] — [`EthClient`], the one JSON-RPC client: endpoint and chain-id
//!   checks, typed `eth_call` views (at the latest or a given block), logs,
//!   balances, transactions signed by a local wallet with receipts, and one
//!   error type, [`EthError`], that says which endpoint failed which request;
//! * [`revert`] — revert data in words (the contracts' custom errors,
//!   `Error(string)`, `Panic(uint256)`);
//! * [`amount`] — token amounts as people type and read them;
//! * [`registry`] — NoxRegistry: the view folded from its events, the
//!   follower that keeps a view in step with the chain (confirmations, reorgs,
//!   fingerprint, resumable progress), and the operator transactions
//!   (register, status, unstake, withdraw).
//!
//! The node's chain watcher, the operator commands, the devnet and — next —
//! the client's wallet and the exit's transaction sender build on these.
//! Contract ABIs and the formulas both sides must agree on are in
//! `nox_protocol::contracts`.

#![warn(missing_docs)]

pub mod amount;
pub mod registry;
pub mod revert;
pub mod rpc;

pub use rpc::{EthClient, EthError};
