//! [`MailQueueError`]: what opening or using the mail queue can fail with.

use std::path::PathBuf;

use super::entry::MailId;

/// Why a mail-queue operation failed. No variant carries an address or any
/// of a message's content.
#[derive(Debug, thiserror::Error)]
pub enum MailQueueError {
    /// The queue's file (or its directory) could not be created or read.
    #[error("mail queue {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// redb failed: the file is locked by another process, is not a redb
    /// database, or a read, write or commit failed.
    #[error("mail queue {path}: {what}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// What redb said.
        source: Box<redb::Error>,
    },
    /// The passphrase does not open this queue.
    #[error("wrong passphrase for the mail queue")]
    WrongPassphrase,
    /// The database has a header that is not a mail queue's.
    #[error("{0} is not a NOX mail queue")]
    NotAMailQueue(PathBuf),
    /// The queue's format version is not one this build reads.
    #[error("mail queue version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The queue's version.
        found: u16,
        /// The version this build reads and writes.
        supported: u16,
    },
    /// Key-derivation parameters out of range (in the file or as given).
    #[error("key derivation parameters: {0}")]
    Kdf(String),
    /// An entry does not authenticate or decode: it was changed or damaged
    /// after it was written. The others are unaffected.
    #[error("mail queue entry {id} is corrupt: {reason}")]
    CorruptEntry {
        /// The entry.
        id: MailId,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Taking the message would pass the queue's entry or byte limit.
    /// Nothing was stored; nothing already queued was dropped.
    #[error("the mail queue is full ({entries} entries, {bytes} bytes)")]
    Full {
        /// Entries queued.
        entries: usize,
        /// Bytes queued.
        bytes: u64,
    },
    /// The message alone, sealed, is larger than the queue's byte limit.
    #[error("a message of {bytes} bytes sealed exceeds the queue's limit of {max} bytes")]
    TooLarge {
        /// Its sealed size.
        bytes: u64,
        /// `max_bytes`.
        max: u64,
    },
    /// Another process holds the queue's file (a running `nox-client smtp`).
    #[error("mail queue {0} is open in another process (a running `nox-client smtp`?)")]
    Busy(PathBuf),
    /// No entry has this id.
    #[error("the mail queue has no entry {0}")]
    UnknownEntry(MailId),
}

impl From<crate::passphrase::KdfError> for MailQueueError {
    fn from(e: crate::passphrase::KdfError) -> Self {
        MailQueueError::Kdf(e.0)
    }
}
