//! # nox-mail
//!
//! What anonymous mail needs on both sides of the mixnet, below the client
//! and the node (neither depends on the other):
//!
//! * [`message`]: what a message becomes before it enters the mixnet —
//!   identifying headers scrubbed, `Message-ID` regenerated, `Date`
//!   coarsened — and [`bucket`]: the scrubbed message padded into one of a
//!   fixed set of sizes, so that its length says little about it;
//! * [`smtp`]: an SMTP submission server (RFC 5321) that hands each
//!   accepted message to a durable spool before it answers `250`; the
//!   client's local gateway (`nox-client smtp`) and the node's optional SMTP
//!   entry both run it.
//!
//! Not built yet: the client's `nox-client smtp` gateway with its encrypted
//! queue, the node's SMTP entry, and delivery at the exit (MX, smarthost,
//! NNTP) with its queue; the server here is their common front
//! (docs/architecture.md, the crate table).

#![warn(missing_docs)]

pub mod bucket;
pub mod message;
pub mod smtp;
