//! [`MailQueue`]: the exit's durable mail queue, one redb file of its own
//! (`mail-queue.redb`, mode 0600).
//!
//! Tables:
//!
//! * `mail_schedule`: entry id → (transport, accepted at, next attempt,
//!   attempts, bytes) — the small row the worker scans each window;
//! * `mail_recipients`: entry id → the recipients still to deliver to
//!   (`u16` count, then `u16` length ‖ bytes each);
//! * `mail_messages`: entry id → the message as it will be delivered;
//! * `mail_accepted`: request id → expiry, and `mail_accepted_expiry`:
//!   (expiry, request id) → () — the ids of accepted requests, so that a
//!   retry is answered without a second entry, forgotten at their expiry or,
//!   beyond [`QueueLimits::max_accepted_ids`], soonest expiry first.
//!
//! Times are Unix milliseconds. Every write is one transaction committed
//! with `Durability::Immediate`: when [`MailQueue::accept`] returns, the
//! entry and its request id are on disk together, and a removal or a
//! reschedule is on disk before the worker moves on. The totals (entries,
//! bytes, ids) are counted at open and kept in memory under a lock held
//! across each write, so that two writers never pass a limit together.
//!
//! All methods block on the disk: call them from a blocking thread.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use nox_protocol::payload::MailTransport;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};

/// (transport, accepted at, next attempt, attempts, bytes).
type ScheduleRow = (u8, u64, u64, u32, u64);

const SCHEDULE: TableDefinition<'static, u64, ScheduleRow> = TableDefinition::new("mail_schedule");
const RECIPIENTS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("mail_recipients");
const MESSAGES: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("mail_messages");
const ACCEPTED: TableDefinition<'static, [u8; 16], u64> = TableDefinition::new("mail_accepted");
const ACCEPTED_EXPIRY: TableDefinition<'static, (u64, [u8; 16]), ()> = TableDefinition::new("mail_accepted_expiry");

/// Bytes an entry is counted for beyond its message and recipients (its
/// rows and keys).
const ENTRY_OVERHEAD: u64 = 64;

/// How long [`MailQueue::open`] waits for a file another holder is letting go.
const OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// How much the queue holds before it refuses mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Entries (`exit.mail_max_queue_entries`).
    pub max_entries: usize,
    /// Bytes of messages and recipients (`exit.mail_max_queue_bytes`).
    pub max_bytes: u64,
    /// Request ids remembered (`exit.mail_max_accepted_ids`).
    pub max_accepted_ids: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits { max_entries: 10_000, max_bytes: 1 << 30, max_accepted_ids: 1_000_000 }
    }
}

/// Why the queue could not do what was asked. No variant carries a
/// message's content or an address.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Creating or opening the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// redb failed.
    #[error("mail queue: {what}: {detail}")]
    Storage {
        /// What was being done.
        what: &'static str,
        /// What redb said.
        detail: String,
    },
    /// The queue holds `exit.mail_max_queue_entries` entries, or the
    /// message would take it past `exit.mail_max_queue_bytes`.
    #[error("the mail queue is full ({entries} entries, {bytes} bytes)")]
    Full {
        /// Entries held.
        entries: usize,
        /// Bytes held.
        bytes: u64,
    },
}

fn storage<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> QueueError {
    move |e| QueueError::Storage { what, detail: e.to_string() }
}

/// A message to queue. `Debug` shows its transport and sizes only.
#[derive(Clone, PartialEq, Eq)]
pub struct NewMail {
    /// SMTP or NNTP.
    pub transport: MailTransport,
    /// Mailboxes, or newsgroups.
    pub recipients: Vec<String>,
    /// The message as it will be delivered (scrubbed; for NNTP, the article).
    pub message: Vec<u8>,
}

impl std::fmt::Debug for NewMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewMail")
            .field("transport", &self.transport)
            .field("recipients", &self.recipients.len())
            .field("bytes", &self.message.len())
            .finish()
    }
}

impl NewMail {
    fn bytes(&self) -> u64 {
        entry_bytes(&self.recipients, self.message.len())
    }
}

fn entry_bytes(recipients: &[String], message_len: usize) -> u64 {
    let r: usize = recipients.iter().map(String::len).sum();
    (message_len + r) as u64 + ENTRY_OVERHEAD
}

/// What [`MailQueue::accept`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A new entry, due at the time given.
    Queued,
    /// The request id was already accepted: nothing was written.
    Duplicate,
}

/// One queued message, read back for delivery. `Debug` shows no content.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry's id (local to this queue).
    pub id: u64,
    /// SMTP or NNTP.
    pub transport: MailTransport,
    /// When it was accepted (Unix ms).
    pub accepted_ms: u64,
    /// Attempts made so far.
    pub attempts: u32,
    /// Recipients still to deliver to.
    pub recipients: Vec<String>,
    /// The message.
    pub message: Vec<u8>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("id", &self.id)
            .field("transport", &self.transport)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// A stored entry that does not decode (a damaged file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt;

/// The durable mail queue (see the module docs). Cloning shares the file.
#[derive(Clone)]
pub struct MailQueue {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: Database,
    limits: QueueLimits,
    totals: Mutex<Totals>,
}

/// What the queue holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Entries.
    pub entries: usize,
    /// Bytes counted against `max_bytes`.
    pub bytes: u64,
    /// Request ids remembered.
    pub accepted_ids: usize,
    next_id: u64,
}

impl std::fmt::Debug for MailQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailQueue").field("path", &self.inner.path).field("limits", &self.inner.limits).finish()
    }
}

fn transport_code(t: MailTransport) -> u8 {
    t as u8
}

fn transport_of(code: u8) -> Option<MailTransport> {
    match code {
        1 => Some(MailTransport::Smtp),
        2 => Some(MailTransport::Nntp),
        _ => None,
    }
}

/// `u16` count, then `u16` length ‖ bytes per recipient (each at most 254
/// bytes, at most 1000 of them: the service's bounds).
fn encode_recipients(recipients: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + recipients.iter().map(|r| r.len() + 2).sum::<usize>());
    out.extend_from_slice(&(recipients.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    for r in recipients.iter().take(usize::from(u16::MAX)) {
        let bytes = &r.as_bytes()[..r.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

fn decode_recipients(bytes: &[u8]) -> Result<Vec<String>, Corrupt> {
    let take_u16 = |b: &mut &[u8]| -> Result<usize, Corrupt> {
        let [hi, lo, rest @ ..] = *b else { return Err(Corrupt) };
        *b = rest;
        Ok(usize::from(u16::from_be_bytes([*hi, *lo])))
    };
    let mut rest = bytes;
    let n = take_u16(&mut rest)?;
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let len = take_u16(&mut rest)?;
        if rest.len() < len {
            return Err(Corrupt);
        }
        let (r, tail) = rest.split_at(len);
        out.push(String::from_utf8(r.to_vec()).map_err(|_| Corrupt)?);
        rest = tail;
    }
    if rest.is_empty() { Ok(out) } else { Err(Corrupt) }
}

impl MailQueue {
    /// Opens the queue at `path`, creating the file (mode 0600, and its
    /// directory, mode 0700) if needed, and counts what it holds. Another
    /// process holding the file gets [`QueueError::Storage`].
    pub fn open(path: &Path, limits: QueueLimits) -> Result<MailQueue, QueueError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| QueueError::Io { path, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io(path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))?;
        // A restart in the same process may find the last holder of the
        // file (a commit on a blocking thread) not quite gone: wait for it a
        // little. Another process holding the file is still refused.
        let started = std::time::Instant::now();
        let db = loop {
            match Database::create(path) {
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if started.elapsed() < OPEN_WAIT => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other.map_err(storage("opening the database"))?,
            }
        };
        let mut totals = Totals::default();
        let txn = db.begin_write().map_err(storage("beginning a write"))?;
        {
            let schedule = txn.open_table(SCHEDULE).map_err(storage("opening mail_schedule"))?;
            txn.open_table(RECIPIENTS).map_err(storage("opening mail_recipients"))?;
            txn.open_table(MESSAGES).map_err(storage("opening mail_messages"))?;
            let accepted = txn.open_table(ACCEPTED).map_err(storage("opening mail_accepted"))?;
            txn.open_table(ACCEPTED_EXPIRY).map_err(storage("opening mail_accepted_expiry"))?;
            for row in schedule.iter().map_err(storage("reading mail_schedule"))? {
                let (id, row) = row.map_err(storage("reading mail_schedule"))?;
                totals.entries += 1;
                totals.bytes = totals.bytes.saturating_add(row.value().4);
                totals.next_id = totals.next_id.max(id.value().saturating_add(1));
            }
            totals.accepted_ids =
                usize::try_from(accepted.len().map_err(storage("counting mail_accepted"))?).unwrap_or(usize::MAX);
        }
        txn.commit().map_err(storage("committing"))?;
        Ok(MailQueue { inner: Arc::new(Inner { path: path.to_owned(), db, limits, totals: Mutex::new(totals) }) })
    }

    /// The queue's limits.
    pub fn limits(&self) -> QueueLimits {
        self.inner.limits
    }

    /// What the queue holds now.
    pub fn totals(&self) -> Totals {
        *self.lock_totals()
    }

    fn lock_totals(&self) -> std::sync::MutexGuard<'_, Totals> {
        self.inner.totals.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn begin_write(&self) -> Result<WriteTransaction, QueueError> {
        let mut txn = self.inner.db.begin_write().map_err(storage("beginning a write"))?;
        txn.set_durability(Durability::Immediate).map_err(storage("setting durability"))?;
        Ok(txn)
    }

    /// Queues `mail` for `request_id`, due at `due_ms`, and remembers the id
    /// until `id_expiry_ms`; or, if the id is remembered (and not expired at
    /// `now_ms`), writes nothing and says [`Accepted::Duplicate`]. On disk
    /// when it returns. [`QueueError::Full`] beyond the limits; an accepted
    /// entry is never dropped to make room.
    pub fn accept(
        &self,
        request_id: [u8; 16],
        mail: &NewMail,
        due_ms: u64,
        id_expiry_ms: u64,
        now_ms: u64,
    ) -> Result<Accepted, QueueError> {
        let limits = self.inner.limits;
        let bytes = mail.bytes();
        let mut totals = self.lock_totals();
        let txn = self.begin_write()?;
        let id = totals.next_id;
        let mut ids_delta: isize = 0;
        {
            let mut accepted = txn.open_table(ACCEPTED).map_err(storage("opening mail_accepted"))?;
            let mut by_expiry = txn.open_table(ACCEPTED_EXPIRY).map_err(storage("opening mail_accepted_expiry"))?;
            let known = accepted.get(request_id).map_err(storage("reading mail_accepted"))?.map(|v| v.value());
            let early = match known {
                Some(expiry) if expiry > now_ms => Some(Ok(Accepted::Duplicate)),
                _ if totals.entries >= limits.max_entries || totals.bytes.saturating_add(bytes) > limits.max_bytes => {
                    Some(Err(QueueError::Full { entries: totals.entries, bytes: totals.bytes }))
                }
                _ => None,
            };
            if let Some(answer) = early {
                drop((accepted, by_expiry));
                txn.abort().map_err(storage("aborting"))?;
                return answer;
            }
            match known {
                Some(expiry) => {
                    by_expiry.remove((expiry, request_id)).map_err(storage("writing mail_accepted_expiry"))?;
                }
                None => ids_delta += 1,
            }
            let row: ScheduleRow = (transport_code(mail.transport), now_ms, due_ms, 0, bytes);
            txn.open_table(SCHEDULE)
                .map_err(storage("opening mail_schedule"))?
                .insert(id, row)
                .map_err(storage("writing mail_schedule"))?;
            txn.open_table(RECIPIENTS)
                .map_err(storage("opening mail_recipients"))?
                .insert(id, encode_recipients(&mail.recipients).as_slice())
                .map_err(storage("writing mail_recipients"))?;
            txn.open_table(MESSAGES)
                .map_err(storage("opening mail_messages"))?
                .insert(id, mail.message.as_slice())
                .map_err(storage("writing mail_messages"))?;
            accepted.insert(request_id, id_expiry_ms).map_err(storage("writing mail_accepted"))?;
            by_expiry.insert((id_expiry_ms, request_id), ()).map_err(storage("writing mail_accepted_expiry"))?;
            // Beyond the bound, the ids closest to their expiry go first.
            let held = totals.accepted_ids.saturating_add_signed(ids_delta);
            for _ in limits.max_accepted_ids..held {
                let first = by_expiry.pop_first().map_err(storage("trimming mail_accepted_expiry"))?;
                let Some((key, _)) = first else { break };
                let (_, old) = key.value();
                accepted.remove(old).map_err(storage("trimming mail_accepted"))?;
                ids_delta -= 1;
            }
        }
        txn.commit().map_err(storage("committing"))?;
        totals.next_id = id + 1;
        totals.entries += 1;
        totals.bytes = totals.bytes.saturating_add(bytes);
        totals.accepted_ids = totals.accepted_ids.saturating_add_signed(ids_delta);
        Ok(Accepted::Queued)
    }

    /// Ids of entries due at `upto_ms` (next attempt at or before it), not in
    /// `exclude`, in id order.
    pub fn due(&self, upto_ms: u64, exclude: &HashSet<u64>) -> Result<Vec<u64>, QueueError> {
        let txn = self.inner.db.begin_read().map_err(storage("beginning a read"))?;
        let schedule = txn.open_table(SCHEDULE).map_err(storage("opening mail_schedule"))?;
        let mut due = Vec::new();
        for row in schedule.iter().map_err(storage("reading mail_schedule"))? {
            let (id, row) = row.map_err(storage("reading mail_schedule"))?;
            let id = id.value();
            if row.value().2 <= upto_ms && !exclude.contains(&id) {
                due.push(id);
            }
        }
        Ok(due)
    }

    /// Reads entry `id`: `Ok(None)` if it is gone, `Ok(Some(Err(Corrupt)))`
    /// if it does not decode.
    pub fn load(&self, id: u64) -> Result<Option<Result<Entry, Corrupt>>, QueueError> {
        let txn = self.inner.db.begin_read().map_err(storage("beginning a read"))?;
        let schedule = txn.open_table(SCHEDULE).map_err(storage("opening mail_schedule"))?;
        let Some(row) = schedule.get(id).map_err(storage("reading mail_schedule"))? else { return Ok(None) };
        let (transport, accepted_ms, _, attempts, _) = row.value();
        let recipients = txn.open_table(RECIPIENTS).map_err(storage("opening mail_recipients"))?;
        let recipients = recipients.get(id).map_err(storage("reading mail_recipients"))?.map(|v| v.value().to_vec());
        let messages = txn.open_table(MESSAGES).map_err(storage("opening mail_messages"))?;
        let message = messages.get(id).map_err(storage("reading mail_messages"))?.map(|v| v.value().to_vec());
        let entry = (|| {
            Ok(Entry {
                id,
                transport: transport_of(transport).ok_or(Corrupt)?,
                accepted_ms,
                attempts,
                recipients: decode_recipients(&recipients.ok_or(Corrupt)?)?,
                message: message.ok_or(Corrupt)?,
            })
        })();
        Ok(Some(entry))
    }

    /// Records an attempt on entry `id` that left `remaining` recipients:
    /// `attempts` made, next attempt at `next_ms`. Nothing if the entry is gone.
    pub fn reschedule(&self, id: u64, remaining: &[String], attempts: u32, next_ms: u64) -> Result<(), QueueError> {
        let mut totals = self.lock_totals();
        let txn = self.begin_write()?;
        let delta;
        {
            let mut schedule = txn.open_table(SCHEDULE).map_err(storage("opening mail_schedule"))?;
            let row = schedule.get(id).map_err(storage("reading mail_schedule"))?.map(|v| v.value());
            let Some((transport, accepted_ms, _, _, old_bytes)) = row else {
                drop(schedule);
                txn.abort().map_err(storage("aborting"))?;
                return Ok(());
            };
            let message_len = txn
                .open_table(MESSAGES)
                .map_err(storage("opening mail_messages"))?
                .get(id)
                .map_err(storage("reading mail_messages"))?
                .map_or(0, |v| v.value().len());
            let bytes = entry_bytes(remaining, message_len);
            schedule
                .insert(id, (transport, accepted_ms, next_ms, attempts, bytes))
                .map_err(storage("writing mail_schedule"))?;
            txn.open_table(RECIPIENTS)
                .map_err(storage("opening mail_recipients"))?
                .insert(id, encode_recipients(remaining).as_slice())
                .map_err(storage("writing mail_recipients"))?;
            delta = (old_bytes, bytes);
        }
        txn.commit().map_err(storage("committing"))?;
        totals.bytes = totals.bytes.saturating_sub(delta.0).saturating_add(delta.1);
        Ok(())
    }

    /// Deletes entry `id` (delivered, refused for good, or given up). Its
    /// request id stays remembered until it expires.
    pub fn remove(&self, id: u64) -> Result<(), QueueError> {
        let mut totals = self.lock_totals();
        let txn = self.begin_write()?;
        let removed = {
            let mut schedule = txn.open_table(SCHEDULE).map_err(storage("opening mail_schedule"))?;
            let row = schedule.remove(id).map_err(storage("removing from mail_schedule"))?.map(|v| v.value());
            txn.open_table(RECIPIENTS)
                .map_err(storage("opening mail_recipients"))?
                .remove(id)
                .map_err(storage("removing from mail_recipients"))?;
            txn.open_table(MESSAGES)
                .map_err(storage("opening mail_messages"))?
                .remove(id)
                .map_err(storage("removing from mail_messages"))?;
            row
        };
        txn.commit().map_err(storage("committing"))?;
        if let Some(row) = removed {
            totals.entries = totals.entries.saturating_sub(1);
            totals.bytes = totals.bytes.saturating_sub(row.4);
        }
        Ok(())
    }

    /// Forgets up to `max` request ids expired at `now_ms`; how many.
    pub fn prune_accepted(&self, now_ms: u64, max: usize) -> Result<usize, QueueError> {
        let mut totals = self.lock_totals();
        let txn = self.begin_write()?;
        let mut n = 0;
        {
            let mut accepted = txn.open_table(ACCEPTED).map_err(storage("opening mail_accepted"))?;
            let mut by_expiry = txn.open_table(ACCEPTED_EXPIRY).map_err(storage("opening mail_accepted_expiry"))?;
            while n < max {
                let first = by_expiry.first().map_err(storage("reading mail_accepted_expiry"))?.map(|(k, _)| k.value());
                let Some((expiry, id)) = first else { break };
                if expiry > now_ms {
                    break;
                }
                by_expiry.remove((expiry, id)).map_err(storage("pruning mail_accepted_expiry"))?;
                accepted.remove(id).map_err(storage("pruning mail_accepted"))?;
                n += 1;
            }
        }
        if n == 0 {
            txn.abort().map_err(storage("aborting"))?;
            return Ok(0);
        }
        txn.commit().map_err(storage("committing"))?;
        totals.accepted_ids = totals.accepted_ids.saturating_sub(n);
        Ok(n)
    }

    /// Whether `request_id` is remembered as accepted at `now_ms`.
    pub fn is_accepted(&self, request_id: [u8; 16], now_ms: u64) -> Result<bool, QueueError> {
        let txn = self.inner.db.begin_read().map_err(storage("beginning a read"))?;
        let accepted = txn.open_table(ACCEPTED).map_err(storage("opening mail_accepted"))?;
        Ok(accepted.get(request_id).map_err(storage("reading mail_accepted"))?.is_some_and(|v| v.value() > now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(n: usize) -> NewMail {
        NewMail {
            transport: MailTransport::Smtp,
            recipients: vec!["a@example.org".into(), "b@example.net".into()],
            message: vec![b'x'; n],
        }
    }

    fn open(dir: &tempfile::TempDir, limits: QueueLimits) -> MailQueue {
        MailQueue::open(&dir.path().join("q").join("mail-queue.redb"), limits).unwrap()
    }

    #[test]
    fn entries_survive_a_reopen_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(&dir, QueueLimits::default());
        assert_eq!(q.accept([1; 16], &mail(10), 1000, 9000, 0).unwrap(), Accepted::Queued);
        assert_eq!(q.accept([2; 16], &mail(20), 2000, 9000, 0).unwrap(), Accepted::Queued);
        drop(q);
        let path = dir.path().join("q").join("mail-queue.redb");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let q = open(&dir, QueueLimits::default());
        let t = q.totals();
        assert_eq!((t.entries, t.accepted_ids), (2, 2));
        assert_eq!(q.due(1000, &HashSet::new()).unwrap(), vec![0]);
        assert_eq!(q.due(2000, &HashSet::new()).unwrap(), vec![0, 1]);
        assert_eq!(q.due(2000, &HashSet::from([0])).unwrap(), vec![1]);
        let e = q.load(1).unwrap().unwrap().unwrap();
        assert_eq!((e.recipients.len(), e.message.len(), e.attempts), (2, 20, 0));
        // A new entry after the reopen takes a fresh id.
        q.accept([3; 16], &mail(1), 0, 9000, 0).unwrap();
        assert!(q.load(2).unwrap().is_some());
    }

    #[test]
    fn a_remembered_id_is_a_duplicate_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(&dir, QueueLimits::default());
        assert_eq!(q.accept([7; 16], &mail(10), 0, 5000, 0).unwrap(), Accepted::Queued);
        assert_eq!(q.accept([7; 16], &mail(10), 0, 5000, 100).unwrap(), Accepted::Duplicate);
        assert_eq!(q.totals().entries, 1);
        assert!(q.is_accepted([7; 16], 4999).unwrap());
        assert_eq!(q.prune_accepted(4999, 100).unwrap(), 0);
        assert_eq!(q.prune_accepted(5000, 100).unwrap(), 1);
        assert!(!q.is_accepted([7; 16], 0).unwrap());
        assert_eq!(q.accept([7; 16], &mail(10), 0, 9000, 5000).unwrap(), Accepted::Queued);
    }

    #[test]
    fn full_refuses_and_keeps_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(&dir, QueueLimits { max_entries: 2, max_bytes: 1 << 20, max_accepted_ids: 100 });
        q.accept([1; 16], &mail(10), 0, 9000, 0).unwrap();
        q.accept([2; 16], &mail(10), 0, 9000, 0).unwrap();
        assert!(matches!(q.accept([3; 16], &mail(10), 0, 9000, 0), Err(QueueError::Full { entries: 2, .. })));
        // A duplicate of an accepted request is still answered.
        assert_eq!(q.accept([2; 16], &mail(10), 0, 9000, 0).unwrap(), Accepted::Duplicate);
        assert!(!q.is_accepted([3; 16], 0).unwrap(), "a refused request is not remembered");
        q.remove(0).unwrap();
        q.accept([3; 16], &mail(10), 0, 9000, 0).unwrap();

        let q2 = MailQueue::open(
            &dir.path().join("bytes.redb"),
            QueueLimits { max_entries: 100, max_bytes: 400, max_accepted_ids: 100 },
        )
        .unwrap();
        q2.accept([1; 16], &mail(100), 0, 9000, 0).unwrap();
        assert!(matches!(q2.accept([2; 16], &mail(200), 0, 9000, 0), Err(QueueError::Full { .. })));
        q2.accept([2; 16], &mail(50), 0, 9000, 0).unwrap();
    }

    #[test]
    fn reschedule_and_remove_keep_the_totals() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(&dir, QueueLimits::default());
        q.accept([1; 16], &mail(100), 0, 9000, 0).unwrap();
        let before = q.totals().bytes;
        q.reschedule(0, &["a@example.org".into()], 1, 5000).unwrap();
        assert_eq!(q.totals().bytes, before - "b@example.net".len() as u64);
        assert!(q.due(4999, &HashSet::new()).unwrap().is_empty());
        let e = q.load(0).unwrap().unwrap().unwrap();
        assert_eq!((e.recipients, e.attempts), (vec!["a@example.org".to_string()], 1));
        q.remove(0).unwrap();
        assert_eq!(q.totals().entries, 0);
        assert_eq!(q.totals().bytes, 0);
        assert!(q.load(0).unwrap().is_none());
        q.reschedule(0, &[], 2, 0).unwrap();
        q.remove(0).unwrap();
    }

    #[test]
    fn accepted_ids_are_bounded_soonest_expiry_first() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(&dir, QueueLimits { max_entries: 100, max_bytes: 1 << 20, max_accepted_ids: 2 });
        q.accept([1; 16], &mail(1), 0, 3000, 0).unwrap();
        q.accept([2; 16], &mail(1), 0, 1000, 0).unwrap();
        q.accept([3; 16], &mail(1), 0, 2000, 0).unwrap();
        assert_eq!(q.totals().accepted_ids, 2);
        assert!(!q.is_accepted([2; 16], 0).unwrap());
        assert!(q.is_accepted([1; 16], 0).unwrap() && q.is_accepted([3; 16], 0).unwrap());
    }

    #[test]
    fn recipients_round_trip_and_damage_is_caught() {
        let r = vec!["a@example.org".to_string(), "alt.test".to_string(), String::new()];
        assert_eq!(decode_recipients(&encode_recipients(&r)), Ok(r.clone()));
        let enc = encode_recipients(&r);
        assert_eq!(decode_recipients(&enc[..enc.len() - 1]), Err(Corrupt));
        let mut longer = enc.clone();
        longer.push(0);
        assert_eq!(decode_recipients(&longer), Err(Corrupt));
        assert_eq!(decode_recipients(&[]), Err(Corrupt));
    }
}
