//! Counters of what the SMTP server did: counts only, never who or what.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why the server refused something: a session, a command, or a message.
/// Each has its own counter in [`SmtpStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// A connection beyond `max_sessions` (`421 4.3.2`).
    SessionLimit,
    /// A client silent for longer than a timeout (`421 4.4.2`).
    Timeout,
    /// A command line longer than `max_command_line` (`500 5.5.2`).
    CommandLineTooLong,
    /// An unknown or unimplemented command (`500`, `502`).
    UnknownCommand,
    /// A known command with bad arguments (`501`, `555`).
    Syntax,
    /// A command out of sequence (`503`).
    Sequence,
    /// `MAIL` before `AUTH` where authentication is required (`530 5.7.0`).
    AuthRequired,
    /// `AUTH` with wrong credentials, cancelled, or undecodable (`535`, `501`).
    AuthFailed,
    /// `AUTH` in clear where it is only allowed under TLS (`538 5.7.11`).
    EncryptionRequired,
    /// A TLS handshake after `STARTTLS` that failed (the connection closes).
    TlsFailed,
    /// A `RCPT` beyond `max_recipients` (`452 4.5.3`).
    TooManyRecipients,
    /// A message over `max_message_bytes`, declared at `MAIL` or counted in
    /// `DATA`, or refused by the spool as too large (`552 5.3.4`).
    MessageTooLarge,
    /// A message with a line longer than `max_text_line` (`552 5.3.4`).
    TextLineTooLong,
    /// A message the spool had no room for (`452 4.3.1`).
    SpoolFull,
    /// A message the spool failed to keep (`451 4.3.0`).
    SpoolFailed,
    /// A message the spool will not take as it is (`554 5.6.0`).
    SpoolRejected,
}

impl Refusal {
    /// Every reason, in a fixed order.
    pub const ALL: [Refusal; 16] = [
        Refusal::SessionLimit,
        Refusal::Timeout,
        Refusal::CommandLineTooLong,
        Refusal::UnknownCommand,
        Refusal::Syntax,
        Refusal::Sequence,
        Refusal::AuthRequired,
        Refusal::AuthFailed,
        Refusal::EncryptionRequired,
        Refusal::TlsFailed,
        Refusal::TooManyRecipients,
        Refusal::MessageTooLarge,
        Refusal::TextLineTooLong,
        Refusal::SpoolFull,
        Refusal::SpoolFailed,
        Refusal::SpoolRejected,
    ];

    /// A short name for logs and metric labels (`session_limit`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Refusal::SessionLimit => "session_limit",
            Refusal::Timeout => "timeout",
            Refusal::CommandLineTooLong => "command_line_too_long",
            Refusal::UnknownCommand => "unknown_command",
            Refusal::Syntax => "syntax",
            Refusal::Sequence => "sequence",
            Refusal::AuthRequired => "auth_required",
            Refusal::AuthFailed => "auth_failed",
            Refusal::EncryptionRequired => "encryption_required",
            Refusal::TlsFailed => "tls_failed",
            Refusal::TooManyRecipients => "too_many_recipients",
            Refusal::MessageTooLarge => "message_too_large",
            Refusal::TextLineTooLong => "text_line_too_long",
            Refusal::SpoolFull => "spool_full",
            Refusal::SpoolFailed => "spool_failed",
            Refusal::SpoolRejected => "spool_rejected",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The server's counters, shared with whoever exports them
/// ([`crate::smtp::SmtpServer::stats`]). Relaxed atomics: each counter is
/// exact, a read of several is not a snapshot of one instant.
#[derive(Debug, Default)]
pub struct SmtpStats {
    sessions: AtomicU64,
    messages_accepted: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
}

impl SmtpStats {
    /// Sessions served (greeted with `220`); refused connections are counted
    /// as [`Refusal::SessionLimit`] instead.
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Messages the spool accepted, each answered `250 2.0.0 queued as`.
    pub fn messages_accepted(&self) -> u64 {
        self.messages_accepted.load(Ordering::Relaxed)
    }

    /// How many times the server refused for `reason`.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused[reason.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn session_opened(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn message_accepted(&self) {
        self.messages_accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refuse(&self, reason: Refusal) {
        self.refused[reason.index()].fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_every_reason_has_its_own_counter() {
        let stats = SmtpStats::default();
        for (i, reason) in Refusal::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
            for _ in 0..=i {
                stats.refuse(*reason);
            }
        }
        for (i, reason) in Refusal::ALL.iter().enumerate() {
            assert_eq!(stats.refused(*reason), i as u64 + 1, "{}", reason.name());
        }
    }
}
