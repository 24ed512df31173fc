//! # nox-client
//!
//! The client side of NOX: what a dApp links to send requests through the
//! mixnet and read the answers. It depends on the shared crates only
//! (`nox-protocol`, `nox-net`, `nox-eth`), never on the relay.
//!
//! * [`directory`] — who is in the network: members from NoxRegistry (or a
//!   static list) and the signed descriptors the entry hands over, each
//!   checked before it can be routed through;
//! * [`client`] — [`Client`]: connects to an entry, draws routes and delays,
//!   attaches SURBs by the [`budget`], submits with proof of work, retries
//!   with the same request id, tops SURBs up for large answers, and
//!   authenticates and reassembles the answer;
//! * [`budget`] — SURBs per request kind;
//! * [`cover`] — Loopix client cover: payload (λP), loop (λL) and drop (λD)
//!   streams, so the client's link looks the same busy or idle;
//! * [`request`] — one request over a caller-chosen route (test harnesses and
//!   diagnostics name their hops);
//! * [`config`] — `nox-client.toml`, the binary's configuration, and the
//!   [`ClientConfig`] it gives;
//! * [`wallet`] — the shielded wallet: an encrypted file with the spending
//!   key and notes, the pool's note tree followed from its confirmed logs,
//!   note states, one-note selection, deposits, withdrawals and the prover;
//! * [`private`] — [`Client::private_call`]: a contract call performed by an
//!   exit and paid from a shielded note (exit first, fee from its signed
//!   policy and the chain's fees read through the mixnet, proof, answer);
//! * [`fee`] — what a private call pays: the relay's cost in wei and the
//!   fee in ETH or a token the exit lists (one formula for both);
//! * [`prices`] — token prices: the entry's signed oracle rounds, checked
//!   against the client's own oracle keys ([`Client::price_book`]);
//! * [`chain_reader`] — the wallet's pool reads as `RpcCall`s through the
//!   mixnet;
//! * [`mail`] — [`mail::MailQueue`]: outgoing mail, durable and sealed
//!   under the user's passphrase, the `Spool` of the coming SMTP gateway;
//! * [`proxy`] — the local Ethereum JSON-RPC proxy: wallet requests in,
//!   `RpcCall`/`RawBroadcast` through the mixnet behind a [`proxy::Backend`].
//!
//! The `nox-client` binary (`src/bin/nox-client/`) runs the proxy, one echo
//! or one JSON-RPC call, the wallet's commands and private calls, and checks
//! a configuration.
//!
//! **Not implemented yet**: the local SMTP gateway.

#![warn(missing_docs)]

pub mod budget;
pub mod chain_reader;
pub mod client;
pub mod config;
pub mod cover;
pub mod directory;
pub mod fee;
pub mod mail;
mod passphrase;
pub mod prices;
pub mod private;
pub mod proxy;
pub mod request;
pub mod wallet;

pub use budget::SurbBudget;
pub use client::{Client, ClientConfig, ClientError, Progress, RouteShape, TopologySource};
pub use cover::{CoverRates, LoopStats};
pub use directory::{DescriptorRejected, Directory, Member, StaticMember};
pub use request::{PreparedRequest, ReplyError, RequestError, build_request, echo_request};
