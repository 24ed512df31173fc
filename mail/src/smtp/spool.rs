//! The boundary between the SMTP server and whatever keeps a message: the
//! server hands over an [`Envelope`] and answers `250` only once the
//! [`Spool`] says the message is durable.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// One message as the client submitted it: the envelope's addresses and the
/// message's bytes, dot-unstuffed, lines ending in CRLF.
///
/// `Debug` prints only counts, never addresses or content.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse path of `MAIL FROM:<...>` without the brackets; empty for
    /// the null sender `<>`.
    pub mail_from: String,
    /// The forward paths of the accepted `RCPT TO:<...>` commands, without
    /// the brackets, in the order given. Never empty.
    pub rcpt_to: Vec<String>,
    /// The message: headers and body as received after `DATA`, with the
    /// transparency dots removed and every line ending in CRLF; the final
    /// `.` line is not part of it.
    pub data: Vec<u8>,
    /// Whether the client authenticated (`AUTH`) in this session.
    pub authenticated: bool,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("recipients", &self.rcpt_to.len())
            .field("bytes", &self.data.len())
            .field("authenticated", &self.authenticated)
            .finish_non_exhaustive()
    }
}

/// The spool's name for an accepted message, quoted to the client in
/// `250 2.0.0 queued as <id>` (printable ASCII only; the server drops
/// anything else from the reply and shortens it to 64 characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueueId(pub String);

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a spool did not take a message. None of them is ever answered `250`:
/// the client keeps the message and tries again later (4xx) or gives up and
/// tells its user (5xx).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpoolError {
    /// The spool is at its bound. Answered `452 4.3.1 queue full, try later`.
    #[error("the spool is full")]
    Full,
    /// The spool will never take a message this large. Answered `552 5.3.4`.
    #[error("the message is larger than the spool takes")]
    TooLarge,
    /// The spool will never take this message as it is: a header that does
    /// not parse, recipients it cannot route. Answered `554 5.6.0` with the
    /// text, which must name the problem and never repeat the message's
    /// content or addresses.
    #[error("the message is refused: {0}")]
    Rejected(String),
    /// Anything else (the disk, the database). Answered `451 4.3.0`; the
    /// text is logged, never sent to the client.
    #[error("the spool failed: {0}")]
    Failed(String),
}

/// What [`Spool::accept`] returns.
pub type SpoolFuture<'a> = Pin<Box<dyn Future<Output = Result<QueueId, SpoolError>> + Send + 'a>>;

/// Where accepted messages go: the client gateway's outgoing queue, or the
/// node's entry queue.
///
/// The contract that makes `250` mean something: `accept` returns `Ok` only
/// once the message will survive a crash of the process (written and synced,
/// or handed to something that is). The server answers `250` after `Ok` and
/// only then; a spool that returns `Ok` before the message is durable can
/// lose mail the client believes delivered.
///
/// The future is not cancelled by the server: a session that is shutting
/// down waits for it and still answers.
pub trait Spool: Send + Sync + 'static {
    /// Keeps `envelope`, or says why not.
    fn accept(&self, envelope: Envelope) -> SpoolFuture<'_>;
}
