//! [`MailQueue`]: the database, its header and the entry operations.
//!
//! Tables: `meta` (`"header"` → magic ‖ version ‖ KDF ‖ salt ‖ passphrase
//! check, 71 bytes), `schedule` (id → [`ScheduleRow`], the clear part) and
//! `sealed` (id → nonce ‖ ciphertext ‖ tag; associated data = magic ‖
//! version ‖ id).

use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use nox_mail::smtp::{Envelope, QueueId, Spool, SpoolError, SpoolFuture};
use rand::RngCore;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use zeroize::Zeroizing;

use super::entry::{self, EntryInfo, EntryState, MailId, QueuedEnvelope, QueuedMail, ScheduleRow};
use super::error::MailQueueError;
use crate::passphrase::{self, Contexts, KDF_LEN, KdfParams, NONCE_LEN, SALT_LEN};

const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");
pub(super) const SCHEDULE: TableDefinition<'static, u64, ScheduleRow> = TableDefinition::new("schedule");
pub(super) const SEALED: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("sealed");
const HEADER_KEY: &str = "header";
/// The context of the key request ids are derived with.
const REQUEST_ID_CONTEXT: &str = "NOX mail queue v1 request id";

/// The header's first bytes.
const MAGIC: [u8; 8] = *b"NOXMAILQ";
/// The format version this build reads and writes.
const VERSION: u16 = 1;
const HEADER_LEN: usize = 8 + 2 + KDF_LEN + SALT_LEN + 32;
const CONTEXTS: Contexts = Contexts { check: "NOX mail queue v1 passphrase check", key: "NOX mail queue v1 entry key" };

/// How much the queue holds before it refuses mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Entries, waiting or expired.
    pub max_entries: usize,
    /// Sealed bytes of all entries (a message's size plus its addresses and
    /// about 60 bytes).
    pub max_bytes: u64,
}

impl Default for QueueLimits {
    /// 1000 entries, 256 MiB.
    fn default() -> Self {
        QueueLimits { max_entries: 1000, max_bytes: 256 * 1024 * 1024 }
    }
}

/// What [`MailQueue::due`] found.
#[derive(Debug, Default)]
pub struct Due {
    /// The due entries, opened, earliest next attempt first.
    pub mail: Vec<QueuedMail>,
    /// Due entries that do not authenticate or decode: reported, skipped,
    /// left in place (the user may [`MailQueue::discard`] them).
    pub corrupt: Vec<MailId>,
}

/// The client's durable, encrypted outgoing mail queue (see the module docs).
/// Cloning shares the same open database.
#[derive(Clone)]
pub struct MailQueue {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: Database,
    key: Zeroizing<[u8; 32]>,
    limits: QueueLimits,
    keep_mail_from: bool,
    /// Entries and sealed bytes stored. Held across every write transaction
    /// that changes them, so that a limit is never passed by two writers.
    totals: Mutex<Totals>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    entries: usize,
    bytes: u64,
}

impl std::fmt::Debug for MailQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailQueue")
            .field("path", &self.inner.path)
            .field("limits", &self.inner.limits)
            .field("keep_mail_from", &self.inner.keep_mail_from)
            .finish_non_exhaustive()
    }
}

impl MailQueue {
    /// Opens the queue at `path` with `passphrase`, creating it (with `kdf`
    /// and a fresh salt) if the file does not exist or is empty; an existing
    /// queue keeps the parameters it was created with. Runs argon2id once:
    /// call it from a blocking context.
    pub fn open(
        path: &Path,
        passphrase: &str,
        kdf: KdfParams,
        limits: QueueLimits,
    ) -> Result<MailQueue, MailQueueError> {
        let io = |source| MailQueueError::Io { path: path.to_path_buf(), source };
        // Create the file ourselves so that it never exists with a looser mode.
        OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let db = match Database::create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(MailQueueError::Busy(path.to_path_buf())),
            Err(e) => return Err(db_err(path, "opening the database")(e)),
        };

        let txn = begin_write(&db, path)?;
        let key = {
            let mut meta = txn.open_table(META).map_err(db_err(path, "opening the meta table"))?;
            let stored = meta.get(HEADER_KEY).map_err(db_err(path, "reading the header"))?.map(|h| h.value().to_vec());
            match stored {
                Some(header) => open_header(path, &header, passphrase)?,
                None => {
                    let salt = passphrase::fresh_salt();
                    let derived = passphrase::derive(passphrase, kdf, &salt, CONTEXTS)?;
                    let mut header = Vec::with_capacity(HEADER_LEN);
                    header.extend_from_slice(&MAGIC);
                    header.extend_from_slice(&VERSION.to_be_bytes());
                    header.extend_from_slice(&kdf.to_bytes());
                    header.extend_from_slice(&salt);
                    header.extend_from_slice(&derived.check);
                    meta.insert(HEADER_KEY, header.as_slice()).map_err(db_err(path, "writing the header"))?;
                    derived.key
                }
            }
        };
        let mut totals = Totals::default();
        {
            let schedule = txn.open_table(SCHEDULE).map_err(db_err(path, "opening the schedule"))?;
            txn.open_table(SEALED).map_err(db_err(path, "opening the sealed entries"))?;
            for row in schedule.iter().map_err(db_err(path, "reading the schedule"))? {
                let (_, row) = row.map_err(db_err(path, "reading the schedule"))?;
                totals.entries += 1;
                totals.bytes = totals.bytes.saturating_add(row.value().4);
            }
        }
        txn.commit().map_err(db_err(path, "committing"))?;
        Ok(MailQueue {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                db,
                key,
                limits,
                keep_mail_from: false,
                totals: Mutex::new(totals),
            }),
        })
    }

    /// Whether `MAIL FROM` is kept in the sealed envelope (default: no; the
    /// mail exit sets the sender anyway). Call before sharing the queue.
    pub fn keep_mail_from(self, keep: bool) -> MailQueue {
        let inner = Arc::try_unwrap(self.inner).map(|mut inner| {
            inner.keep_mail_from = keep;
            Arc::new(inner)
        });
        match inner {
            Ok(inner) => MailQueue { inner },
            // Already shared: the setting stays as it was.
            Err(inner) => MailQueue { inner },
        }
    }

    /// The queue's limits.
    pub fn limits(&self) -> QueueLimits {
        self.inner.limits
    }

    /// Seals `envelope` and commits it durably, due at once (`now`).
    /// [`MailQueueError::Full`] or [`MailQueueError::TooLarge`] beyond the
    /// limits. Blocks on the disk: the [`Spool`] implementation runs it on a
    /// blocking thread.
    pub fn enqueue(&self, envelope: &Envelope, now: SystemTime) -> Result<MailId, MailQueueError> {
        let inner = &*self.inner;
        let queued = QueuedEnvelope {
            mail_from: inner.keep_mail_from.then(|| envelope.mail_from.clone()),
            rcpt_to: envelope.rcpt_to.clone(),
            data: envelope.data.clone(),
        };
        loop {
            let id = MailId(rand::rngs::OsRng.next_u64());
            let plain = entry::encode(id, &queued);
            let nonce = passphrase::fresh_nonce();
            let sealed = passphrase::seal(&inner.key, &nonce, &entry_aad(id), &plain)
                .ok_or(MailQueueError::TooLarge { bytes: plain.len() as u64, max: inner.limits.max_bytes })?;
            let mut record = Vec::with_capacity(NONCE_LEN + sealed.len());
            record.extend_from_slice(&nonce);
            record.extend_from_slice(&sealed);
            let bytes = record.len() as u64;
            if bytes > inner.limits.max_bytes {
                return Err(MailQueueError::TooLarge { bytes, max: inner.limits.max_bytes });
            }

            let mut totals = inner.totals.lock().unwrap_or_else(PoisonError::into_inner);
            if totals.entries >= inner.limits.max_entries || totals.bytes.saturating_add(bytes) > inner.limits.max_bytes
            {
                return Err(MailQueueError::Full { entries: totals.entries, bytes: totals.bytes });
            }
            let txn = self.begin_write()?;
            {
                let mut schedule = txn.open_table(SCHEDULE).map_err(self.db_err("opening the schedule"))?;
                if schedule.get(id.0).map_err(self.db_err("reading the schedule"))?.is_some() {
                    // 64 random bits collided: draw another id.
                    continue;
                }
                let at = entry::to_ms(now);
                let row: ScheduleRow = (at, at, 0, EntryState::Waiting.to_byte(), bytes);
                schedule.insert(id.0, row).map_err(self.db_err("writing the schedule"))?;
                let mut table = txn.open_table(SEALED).map_err(self.db_err("opening the sealed entries"))?;
                table.insert(id.0, record.as_slice()).map_err(self.db_err("writing the entry"))?;
            }
            txn.commit().map_err(self.db_err("committing the entry"))?;
            totals.entries += 1;
            totals.bytes = totals.bytes.saturating_add(bytes);
            return Ok(id);
        }
    }

    /// The waiting entries whose next attempt is at or before `now`, opened,
    /// earliest first; entries that do not open are listed apart.
    pub fn due(&self, now: SystemTime) -> Result<Due, MailQueueError> {
        let now = entry::to_ms(now);
        let txn = self.inner.db.begin_read().map_err(self.db_err("beginning a read"))?;
        let schedule = txn.open_table(SCHEDULE).map_err(self.db_err("opening the schedule"))?;
        let sealed = txn.open_table(SEALED).map_err(self.db_err("opening the sealed entries"))?;
        let mut due = Vec::new();
        for row in schedule.iter().map_err(self.db_err("reading the schedule"))? {
            let (id, row) = row.map_err(self.db_err("reading the schedule"))?;
            let (created, next_at, attempts, state, _) = row.value();
            if state == EntryState::Waiting.to_byte() && next_at <= now {
                due.push((next_at, created, MailId(id.value()), attempts));
            }
        }
        due.sort();
        let mut out = Due::default();
        for (_, created, id, attempts) in due {
            let record = sealed.get(id.0).map_err(self.db_err("reading an entry"))?;
            match record.ok_or("the sealed part is missing").and_then(|r| self.open_entry(id, r.value())) {
                Ok(envelope) => out.mail.push(QueuedMail { id, envelope, created: entry::from_ms(created), attempts }),
                Err(reason) => {
                    tracing::warn!(%id, reason, "a mail queue entry does not open");
                    out.corrupt.push(id);
                }
            }
        }
        Ok(out)
    }

    /// One entry, opened, whatever its state.
    pub fn get(&self, id: MailId) -> Result<QueuedMail, MailQueueError> {
        let txn = self.inner.db.begin_read().map_err(self.db_err("beginning a read"))?;
        let schedule = txn.open_table(SCHEDULE).map_err(self.db_err("opening the schedule"))?;
        let row = schedule.get(id.0).map_err(self.db_err("reading the schedule"))?;
        let (created, _, attempts, _, _) = row.ok_or(MailQueueError::UnknownEntry(id))?.value();
        let sealed = txn.open_table(SEALED).map_err(self.db_err("opening the sealed entries"))?;
        let record = sealed.get(id.0).map_err(self.db_err("reading an entry"))?;
        let envelope = record
            .ok_or("the sealed part is missing")
            .and_then(|r| self.open_entry(id, r.value()))
            .map_err(|reason| MailQueueError::CorruptEntry { id, reason })?;
        Ok(QueuedMail { id, envelope, created: entry::from_ms(created), attempts })
    }

    /// Records an attempt to send `id` and when to try next.
    pub fn mark_attempt(&self, id: MailId, next_at: SystemTime) -> Result<(), MailQueueError> {
        self.update(id, |row| {
            row.1 = entry::to_ms(next_at);
            row.2 = row.2.saturating_add(1);
        })
    }

    /// Deletes `id`: the exit acknowledged its delivery. Call it then and
    /// only then.
    pub fn acknowledge(&self, id: MailId) -> Result<(), MailQueueError> {
        self.delete(id)
    }

    /// Deletes `id` undelivered: the user gave up on it (an expired or a
    /// corrupt entry, or one they no longer want sent).
    pub fn discard(&self, id: MailId) -> Result<(), MailQueueError> {
        self.delete(id)
    }

    /// Marks `id` [`EntryState::Expired`] at once: an exit refused it as
    /// malformed, and no later try would go better. It stays, visible,
    /// until discarded.
    pub fn give_up(&self, id: MailId) -> Result<(), MailQueueError> {
        self.update(id, |row| row.3 = EntryState::Expired.to_byte())
    }

    /// The request id every try of `id` carries: the same for the entry's
    /// whole life (across restarts), so that an exit that queued it once
    /// answers a later try without delivering twice; derived with a key
    /// from the passphrase, so that nobody else can link it to the entry's
    /// id, which the user's mail program saw.
    pub fn request_id(&self, id: MailId) -> [u8; 16] {
        let key = blake3::derive_key(REQUEST_ID_CONTEXT, self.inner.key.as_slice());
        let hash = blake3::keyed_hash(&key, &id.0.to_be_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&hash.as_bytes()[..16]);
        out
    }

    /// Marks [`EntryState::Expired`] every waiting entry accepted `lifetime`
    /// or longer before `now`; returns them (the caller tells the user).
    pub fn give_up_expired(&self, now: SystemTime, lifetime: Duration) -> Result<Vec<EntryInfo>, MailQueueError> {
        let deadline = entry::to_ms(now).saturating_sub(u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX));
        let txn = self.begin_write()?;
        let mut expired = Vec::new();
        {
            let mut schedule = txn.open_table(SCHEDULE).map_err(self.db_err("opening the schedule"))?;
            let mut rows = Vec::new();
            for row in schedule.iter().map_err(self.db_err("reading the schedule"))? {
                let (id, row) = row.map_err(self.db_err("reading the schedule"))?;
                let row = row.value();
                if row.3 == EntryState::Waiting.to_byte() && row.0 <= deadline {
                    rows.push((MailId(id.value()), row));
                }
            }
            for (id, mut row) in rows {
                row.3 = EntryState::Expired.to_byte();
                schedule.insert(id.0, row).map_err(self.db_err("writing the schedule"))?;
                expired.push(info(id, row));
            }
        }
        txn.commit().map_err(self.db_err("committing"))?;
        Ok(expired)
    }

    /// Every entry of the queue at `path`, oldest first, without content
    /// and without the passphrase: the schedule is in the clear. Fails with
    /// [`MailQueueError::Busy`] while another process holds the file (a
    /// running gateway).
    pub fn read_schedule(path: &Path) -> Result<Vec<EntryInfo>, MailQueueError> {
        if !path.exists() {
            return Err(MailQueueError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no mail queue here"),
            });
        }
        let db = match Database::open(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(MailQueueError::Busy(path.to_path_buf())),
            Err(e) => return Err(db_err(path, "opening the database")(e)),
        };
        let txn = db.begin_read().map_err(db_err(path, "beginning a read"))?;
        let meta = txn.open_table(META).map_err(db_err(path, "opening the meta table"))?;
        match meta.get(HEADER_KEY).map_err(db_err(path, "reading the header"))? {
            Some(h) if h.value().len() == HEADER_LEN && h.value()[..8] == MAGIC => {}
            _ => return Err(MailQueueError::NotAMailQueue(path.to_path_buf())),
        }
        let schedule = txn.open_table(SCHEDULE).map_err(db_err(path, "opening the schedule"))?;
        let mut out = Vec::new();
        for row in schedule.iter().map_err(db_err(path, "reading the schedule"))? {
            let (id, row) = row.map_err(db_err(path, "reading the schedule"))?;
            out.push(info(MailId(id.value()), row.value()));
        }
        out.sort_by_key(|i| (i.created, i.id));
        Ok(out)
    }

    /// Every entry, oldest first, without content.
    pub fn list(&self) -> Result<Vec<EntryInfo>, MailQueueError> {
        let txn = self.inner.db.begin_read().map_err(self.db_err("beginning a read"))?;
        let schedule = txn.open_table(SCHEDULE).map_err(self.db_err("opening the schedule"))?;
        let mut out = Vec::new();
        for row in schedule.iter().map_err(self.db_err("reading the schedule"))? {
            let (id, row) = row.map_err(self.db_err("reading the schedule"))?;
            out.push(info(MailId(id.value()), row.value()));
        }
        out.sort_by_key(|i| (i.created, i.id));
        Ok(out)
    }

    fn open_entry(&self, id: MailId, record: &[u8]) -> Result<QueuedEnvelope, &'static str> {
        if record.len() < NONCE_LEN {
            return Err("truncated entry");
        }
        let (nonce, sealed) = record.split_at(NONCE_LEN);
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(nonce);
        let plain =
            passphrase::open(&self.inner.key, &n, &entry_aad(id), sealed).ok_or("the entry does not authenticate")?;
        let (inside, envelope) = entry::decode(&plain)?;
        if inside != id {
            return Err("the entry names another id");
        }
        Ok(envelope)
    }

    fn update(&self, id: MailId, change: impl FnOnce(&mut ScheduleRow)) -> Result<(), MailQueueError> {
        let txn = self.begin_write()?;
        {
            let mut schedule = txn.open_table(SCHEDULE).map_err(self.db_err("opening the schedule"))?;
            let row = schedule.get(id.0).map_err(self.db_err("reading the schedule"))?.map(|r| r.value());
            let mut row = row.ok_or(MailQueueError::UnknownEntry(id))?;
            change(&mut row);
            schedule.insert(id.0, row).map_err(self.db_err("writing the schedule"))?;
        }
        txn.commit().map_err(self.db_err("committing"))
    }

    fn delete(&self, id: MailId) -> Result<(), MailQueueError> {
        let mut totals = self.inner.totals.lock().unwrap_or_else(PoisonError::into_inner);
        let txn = self.begin_write()?;
        let row = {
            let mut schedule = txn.open_table(SCHEDULE).map_err(self.db_err("opening the schedule"))?;
            let row = schedule.remove(id.0).map_err(self.db_err("deleting from the schedule"))?.map(|r| r.value());
            let row = row.ok_or(MailQueueError::UnknownEntry(id))?;
            let mut sealed = txn.open_table(SEALED).map_err(self.db_err("opening the sealed entries"))?;
            sealed.remove(id.0).map_err(self.db_err("deleting the entry"))?;
            row
        };
        txn.commit().map_err(self.db_err("committing"))?;
        totals.entries = totals.entries.saturating_sub(1);
        totals.bytes = totals.bytes.saturating_sub(row.4);
        Ok(())
    }

    fn begin_write(&self) -> Result<WriteTransaction, MailQueueError> {
        begin_write(&self.inner.db, &self.inner.path)
    }

    fn db_err<E: Into<redb::Error>>(&self, what: &'static str) -> impl FnOnce(E) -> MailQueueError + use<E> {
        db_err(&self.inner.path, what)
    }
}

impl Spool for MailQueue {
    /// Seals and commits on a blocking thread; `Ok` once committed.
    fn accept(&self, envelope: Envelope) -> SpoolFuture<'_> {
        let queue = self.clone();
        Box::pin(async move {
            let outcome = tokio::task::spawn_blocking(move || queue.enqueue(&envelope, SystemTime::now())).await;
            match outcome {
                Ok(Ok(id)) => Ok(QueueId(id.to_string())),
                Ok(Err(MailQueueError::Full { .. })) => Err(SpoolError::Full),
                Ok(Err(MailQueueError::TooLarge { .. })) => Err(SpoolError::TooLarge),
                Ok(Err(e)) => Err(SpoolError::Failed(e.to_string())),
                Err(e) => Err(SpoolError::Failed(format!("the mail queue's writer stopped: {e}"))),
            }
        })
    }
}

/// The key `header` gives with `passphrase`, or why not.
fn open_header(path: &Path, header: &[u8], passphrase: &str) -> Result<Zeroizing<[u8; 32]>, MailQueueError> {
    if header.len() < 10 || header[..8] != MAGIC {
        return Err(MailQueueError::NotAMailQueue(path.to_path_buf()));
    }
    let version = u16::from_be_bytes([header[8], header[9]]);
    if version != VERSION {
        return Err(MailQueueError::UnsupportedVersion { found: version, supported: VERSION });
    }
    if header.len() != HEADER_LEN {
        return Err(MailQueueError::NotAMailQueue(path.to_path_buf()));
    }
    let mut kdf = [0u8; KDF_LEN];
    kdf.copy_from_slice(&header[10..10 + KDF_LEN]);
    let kdf = KdfParams::from_bytes(&kdf)?;
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&header[10 + KDF_LEN..10 + KDF_LEN + SALT_LEN]);
    let mut check = [0u8; 32];
    check.copy_from_slice(&header[HEADER_LEN - 32..]);
    let derived = passphrase::derive(passphrase, kdf, &salt, CONTEXTS)?;
    if !passphrase::constant_time_eq(&derived.check, &check) {
        return Err(MailQueueError::WrongPassphrase);
    }
    Ok(derived.key)
}

/// The associated data of entry `id`.
fn entry_aad(id: MailId) -> [u8; 18] {
    let mut aad = [0u8; 18];
    aad[..8].copy_from_slice(&MAGIC);
    aad[8..10].copy_from_slice(&VERSION.to_be_bytes());
    aad[10..].copy_from_slice(&id.0.to_be_bytes());
    aad
}

fn info(id: MailId, row: ScheduleRow) -> EntryInfo {
    let (created, next_at, attempts, state, bytes) = row;
    EntryInfo {
        id,
        bytes,
        created: entry::from_ms(created),
        attempts,
        next_attempt: entry::from_ms(next_at),
        // An unknown state byte (a newer build's) is shown as waiting but is never due.
        state: EntryState::from_byte(state).unwrap_or(EntryState::Waiting),
    }
}

fn begin_write(db: &Database, path: &Path) -> Result<WriteTransaction, MailQueueError> {
    let mut txn = db.begin_write().map_err(db_err(path, "beginning a write"))?;
    txn.set_durability(Durability::Immediate).map_err(db_err(path, "setting durability"))?;
    Ok(txn)
}

fn db_err<E: Into<redb::Error>>(path: &Path, what: &'static str) -> impl FnOnce(E) -> MailQueueError + use<E> {
    let path = path.to_path_buf();
    move |e| MailQueueError::Database { path, what, source: Box::new(e.into()) }
}
