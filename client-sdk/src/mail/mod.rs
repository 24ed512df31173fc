//! The client's side of anonymous mail: the outgoing queue the local SMTP
//! gateway (`nox-client smtp`) fills, what a submission must be before it
//! is queued ([`gateway`]), and the sender that empties the queue through
//! the mixnet ([`sender`]), deleting an entry only once an exit
//! acknowledged it.
//!
//! ## What it owns
//!
//! [`MailQueue`] is one redb database file (0600) of queued messages. Each
//! entry is sealed with XChaCha20-Poly1305 under a key derived from the
//! user's passphrase — argon2id with a salt stored in the database, the
//! wallet's scheme ([`crate::passphrase`]). The id, the recipients, `MAIL
//! FROM` (only if the caller keeps it, [`MailQueue::keep_mail_from`]) and
//! the message are all inside the ciphertext; in the clear is only what
//! scheduling needs: when the entry was accepted, its attempts, its next
//! attempt and its state, and its sealed size. The associated data binds a
//! ciphertext to its id, so entries cannot be swapped; a changed byte is
//! reported as [`MailQueueError::CorruptEntry`] for that entry alone.
//!
//! ## What flows in and out
//!
//! In: [`nox_mail::smtp::Spool::accept`] (the SMTP server's `DATA`), or
//! [`MailQueue::enqueue`]. Out: [`MailQueue::due`] hands the sender the
//! opened entries whose time has come; it records each try with
//! [`MailQueue::mark_attempt`] and deletes an entry with
//! [`MailQueue::acknowledge`] only once the exit acknowledged delivery.
//! [`MailQueue::give_up_expired`] stops retrying entries past their
//! lifetime; they stay, visible in [`MailQueue::list`], until
//! [`MailQueue::discard`].
//!
//! ## The invariants it keeps
//!
//! * **Durable before `250`.** `accept` returns `Ok` only after the write
//!   transaction is committed with `Durability::Immediate` (fsynced): the
//!   server's `250` means the message survives a crash of the process.
//! * **Bounded, never lossy.** At most `max_entries` entries and
//!   `max_bytes` sealed bytes ([`QueueLimits`]); a message beyond them is
//!   refused ([`nox_mail::smtp::SpoolError::Full`], `452`: the mail client
//!   keeps it and retries) — an accepted entry is never dropped to make room.
//! * **Nothing readable at rest** but the schedule.
//!
//! One process at a time holds the file (redb locks it).

mod entry;
mod error;
pub mod gateway;
mod keys;
mod queue;
pub mod sender;
#[cfg(test)]
mod tests;

pub use entry::{EntryInfo, EntryState, MailId, QueuedEnvelope, QueuedMail};
pub use error::MailQueueError;
pub use gateway::{Destination, GatewaySpool, NEWSGROUP_DOMAIN, SubmissionError};
pub use keys::{GatewayKeys, MAX_CONCURRENCY, MAX_RECIPIENTS_LIMIT, check_gateway};
pub use queue::{Due, MailQueue, QueueLimits};
pub use sender::{MailCarrier, MailSender, SenderConfig, SenderStats, TryOutcome};

pub use crate::passphrase::KdfParams;
