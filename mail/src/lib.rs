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
//!   entry both run it;
//! * [`deliver`]: the outgoing side of a mail exit — MX lookup
//!   ([`deliver::MxResolver`]), an SMTP client for an MX or a smarthost
//!   ([`deliver::send_mail`]) and NNTP posting ([`deliver::post_article`]),
//!   each one attempt with a typed, transient-or-permanent outcome; the
//!   exit's queue, which decides when to retry, lives in the node.
//!
//! Built on these: the client's gateway (`nox-client smtp`,
//! `nox_client::mail`), the node's optional SMTP entry, and the mail exit
//! with its delivery queue (`nox-node`'s `exit::mail`); docs/architecture.md
//! has the whole path.

#![warn(missing_docs)]

pub mod bucket;
pub mod deliver;
pub mod message;
pub mod smtp;
