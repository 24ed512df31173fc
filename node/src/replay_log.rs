//! The replay caches on disk: one append-only log file per epoch key, in the
//! directory `replay/` of the data directory.
//!
//! ## Why files and not the database
//!
//! A replay tag is written once, never changed, and read back only at
//! start-up; what the persister needs is a few hundred bytes made durable, as
//! often as every `replay.commit_interval_ms` under load. A redb write
//! transaction does much more for that: it copies and checksums pages, updates
//! the allocator state and the header, and writes several pages before its
//! fsync. On a virtio disk that cost about 120 µs of CPU per commit in the
//! committing thread, against about 36 µs for one positioned write and an
//! `fdatasync` (`cargo run --release -p nox-node --example replay_commit`
//! prints both), and the node commits up to 500 times a second under load.
//!
//! ## File layout
//!
//! `<epoch>.log` (decimal epoch, no leading zeros), mode 0600, in a directory
//! of mode 0700:
//!
//! | bytes | content |
//! |-------|---------|
//! | 0..8  | `NOXRPLG1` |
//! | 8..16 | the epoch, big-endian |
//! | 16..  | records, then zeros |
//!
//! A record is `count` (u32 big-endian, 1 to [`TAGS_PER_RECORD`]) ‖ `count`
//! tags of 16 bytes ‖ 8 check bytes: the first 8 bytes of BLAKE3 over the
//! epoch, the record's offset in the file (both u64 big-endian), `count` and
//! the tags. The offset in the check makes a record valid only where it was
//! written.
//!
//! ## Durability
//!
//! The file grows in steps of [`PREALLOCATE`] bytes of written zeros, so a
//! commit is an overwrite inside the file: one positioned write of the new
//! records and one `fdatasync`, with no change to the file's size or extents
//! to journal in most commits. A count of zero ends the log.
//!
//! A crash can tear only what was written since the last sync, and
//! [`EpochLog::append`] syncs before that would exceed [`MAX_UNSYNCED`]
//! bytes. So [`EpochLog::open`] reads records up to the first one that is
//! missing or fails its check — the end of the log — and then requires zeros
//! from `MAX_UNSYNCED` bytes past that point to the end of the file. Non-zero
//! bytes within that reach are a write torn by a crash, never acknowledged as
//! durable: they are overwritten with zeros (and logged). Non-zero bytes
//! beyond it cannot come from a crash: the file is damaged, and
//! [`LogError::Corrupt`] refuses it rather than forget the tags after the
//! damage.
//!
//! A file shorter than its header, or whose header is all zeros, was being
//! created when the node stopped: it never held a durable tag and is written
//! anew.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nox_protocol::crypto::kdf::REPLAY_TAG_LEN;

/// A replay tag's bytes.
pub type Tag = [u8; REPLAY_TAG_LEN];

/// Name of the log directory inside the data directory.
pub const REPLAY_DIR: &str = "replay";
const MAGIC: &[u8; 8] = b"NOXRPLG1";
/// Length of a log file's header.
pub const HEADER_LEN: u64 = 16;
/// Most tags in one record.
pub const TAGS_PER_RECORD: usize = 4_096;
const RECORD_OVERHEAD: usize = 4 + 8;
/// The file grows by this many bytes of zeros at a time.
pub const PREALLOCATE: u64 = 1 << 20;
/// Most bytes [`EpochLog::append`] leaves written but not synced: the reach of
/// a write torn by a crash (see "Durability").
pub const MAX_UNSYNCED: u64 = 2 << 20;
const SUFFIX: &str = ".log";

/// The log directory of the data directory `data_dir`.
pub fn replay_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(REPLAY_DIR)
}

/// Log errors; each names the file or directory it is about.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Creating, reading, writing, flushing or removing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A log file is damaged (see "Durability" in the module docs).
    #[error("{path}: damaged replay log at byte {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the damage was found.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The log directory's path names something that is not a directory.
    #[error("{path}: the replay log directory is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io { path: path.to_owned(), source }
}

/// The epoch of a file named exactly `<epoch>.log` (strict decimal).
pub fn file_epoch(name: &str) -> Option<u64> {
    let s = name.strip_suffix(SUFFIX)?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

/// The file of `epoch`'s log in `dir`.
pub fn log_path(dir: &Path, epoch: u64) -> PathBuf {
    dir.join(format!("{epoch}{SUFFIX}"))
}

fn header(epoch: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&epoch.to_be_bytes());
    h
}

fn check(epoch: u64, offset: u64, count: u32, tags: &[u8]) -> [u8; 8] {
    let mut h = blake3::Hasher::new();
    h.update(&epoch.to_be_bytes());
    h.update(&offset.to_be_bytes());
    h.update(&count.to_be_bytes());
    h.update(tags);
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    out
}

/// Creates `dir` (mode 0700) if missing and lists the logs in it as
/// `(epoch, path)`, in increasing epoch order. Other entries are left alone
/// and logged.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(LogError::NotADirectory { path: dir.to_owned() }),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err(dir))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        Err(e) => return Err(io_err(dir)(e)),
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let is_file = entry.file_type().map_err(io_err(&path))?.is_file();
        match entry.file_name().to_str().and_then(file_epoch) {
            Some(epoch) if is_file => out.push((epoch, path)),
            _ => tracing::warn!(path = %path.display(), "not a replay log; left alone"),
        }
    }
    out.sort_unstable_by_key(|(e, _)| *e);
    Ok(out)
}

/// Flushes the directory `dir` (so a created or removed name is durable).
pub fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

/// One epoch's log, open for appending. Owned by one thread.
#[derive(Debug)]
pub struct EpochLog {
    file: File,
    path: PathBuf,
    epoch: u64,
    /// Where the next record goes.
    end: u64,
    /// The file's length: written zeros from `end` to here.
    allocated: u64,
    /// Bytes written since the last sync.
    unsynced: u64,
    buf: Vec<u8>,
}

impl EpochLog {
    /// Creates `epoch`'s log in `dir`: the header and [`PREALLOCATE`] zeros,
    /// flushed with the directory before it returns. An existing file is
    /// replaced.
    pub fn create(dir: &Path, epoch: u64) -> Result<Self, LogError> {
        let path = log_path(dir, epoch);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut log =
            EpochLog { file, path, epoch, end: HEADER_LEN, allocated: HEADER_LEN, unsynced: 0, buf: Vec::new() };
        log.file.write_all_at(&header(epoch), 0).map_err(io_err(&log.path))?;
        log.grow(HEADER_LEN + PREALLOCATE)?;
        log.file.sync_all().map_err(io_err(&log.path))?;
        sync_dir(dir)?;
        Ok(log)
    }

    /// Opens `epoch`'s log at `path`, passes every tag it holds to `each` in
    /// order, and readies it for appending (see "Durability" for what happens
    /// to a torn end and what is refused as damage).
    pub fn open(path: &Path, epoch: u64, mut each: impl FnMut(&Tag)) -> Result<Self, LogError> {
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(io_err(path))?;
        let len = file.metadata().map_err(io_err(path))?.len();
        let mut head = [0u8; HEADER_LEN as usize];
        if len >= HEADER_LEN {
            file.read_exact_at(&mut head, 0).map_err(io_err(path))?;
        }
        if head == [0u8; HEADER_LEN as usize] {
            tracing::warn!(path = %path.display(), "replay log was being created when the node stopped; starting it anew");
            drop(file);
            let dir = path.parent().unwrap_or(Path::new("."));
            return EpochLog::create(dir, epoch);
        }
        if head != header(epoch) {
            return Err(LogError::Corrupt {
                path: path.to_owned(),
                offset: 0,
                reason: format!("not the header of epoch {epoch}'s log"),
            });
        }

        let mut reader = BufReader::with_capacity(1 << 20, &file);
        let mut skip = [0u8; HEADER_LEN as usize];
        reader.read_exact(&mut skip).map_err(io_err(path))?;
        let mut end = HEADER_LEN;
        let mut tags = vec![0u8; TAGS_PER_RECORD * REPLAY_TAG_LEN + 8];
        loop {
            let mut count = [0u8; 4];
            if !read_full(&mut reader, &mut count).map_err(io_err(path))? {
                break;
            }
            let n = u32::from_be_bytes(count);
            if n == 0 || n as usize > TAGS_PER_RECORD {
                break;
            }
            let body = &mut tags[..n as usize * REPLAY_TAG_LEN + 8];
            if !read_full(&mut reader, body).map_err(io_err(path))? {
                break;
            }
            let (data, sum) = body.split_at(n as usize * REPLAY_TAG_LEN);
            if check(epoch, end, n, data) != sum {
                break;
            }
            for tag in data.chunks_exact(REPLAY_TAG_LEN) {
                let mut t: Tag = [0; REPLAY_TAG_LEN];
                t.copy_from_slice(tag);
                each(&t);
            }
            end += (RECORD_OVERHEAD + data.len()) as u64;
        }
        drop(reader);

        // From `end` on: zeros, but for a torn write within MAX_UNSYNCED.
        let mut torn = false;
        let mut offset = end;
        let mut chunk = vec![0u8; 1 << 20];
        while offset < len {
            let n = (len - offset).min(chunk.len() as u64) as usize;
            file.read_exact_at(&mut chunk[..n], offset).map_err(io_err(path))?;
            if let Some(i) = chunk[..n].iter().position(|&b| b != 0) {
                let at = offset + i as u64;
                if at >= end + MAX_UNSYNCED {
                    return Err(LogError::Corrupt {
                        path: path.to_owned(),
                        offset: end,
                        reason: format!(
                            "the log ends here but byte {at} is not zero, beyond what a crash can leave unwritten"
                        ),
                    });
                }
                torn = true;
            }
            offset += n as u64;
        }
        let log = EpochLog { file, path: path.to_owned(), epoch, end, allocated: len, unsynced: 0, buf: Vec::new() };
        if torn {
            let zero_to = len.min(end + MAX_UNSYNCED);
            tracing::warn!(
                path = %path.display(),
                offset = end,
                "replay log ends in a write torn by a crash (never acknowledged); cleared"
            );
            log.write_zeros(end, zero_to)?;
            log.file.sync_data().map_err(io_err(path))?;
        }
        Ok(log)
    }

    /// Appends `tags` as records. They are durable after the next
    /// [`EpochLog::sync`]; it runs here first if the write would leave more
    /// than [`MAX_UNSYNCED`] bytes unsynced.
    pub fn append(&mut self, tags: &[Tag]) -> Result<(), LogError> {
        let max_record = (RECORD_OVERHEAD + TAGS_PER_RECORD * REPLAY_TAG_LEN) as u64;
        // Whole records per write, at most MAX_UNSYNCED bytes each.
        let per_write = ((MAX_UNSYNCED / max_record) as usize).max(1) * TAGS_PER_RECORD;
        for group in tags.chunks(per_write) {
            self.buf.clear();
            let mut at = self.end;
            for record in group.chunks(TAGS_PER_RECORD) {
                let start = self.buf.len();
                let n = record.len() as u32;
                self.buf.extend_from_slice(&n.to_be_bytes());
                for tag in record {
                    self.buf.extend_from_slice(tag);
                }
                let sum = check(self.epoch, at, n, &self.buf[start + 4..]);
                self.buf.extend_from_slice(&sum);
                at += (self.buf.len() - start) as u64;
            }
            let len = self.buf.len() as u64;
            if self.unsynced + len > MAX_UNSYNCED {
                self.sync()?;
            }
            if self.end + len > self.allocated {
                let target = (self.end + len).div_ceil(PREALLOCATE) * PREALLOCATE + HEADER_LEN;
                self.grow(target)?;
            }
            self.file.write_all_at(&self.buf, self.end).map_err(io_err(&self.path))?;
            self.end += len;
            self.unsynced += len;
        }
        Ok(())
    }

    /// Makes everything appended durable (`fdatasync`).
    pub fn sync(&mut self) -> Result<(), LogError> {
        if self.unsynced > 0 {
            self.file.sync_data().map_err(io_err(&self.path))?;
            self.unsynced = 0;
        }
        Ok(())
    }

    /// Deletes the log and flushes its directory.
    pub fn remove(self) -> Result<(), LogError> {
        let EpochLog { file, path, .. } = self;
        drop(file);
        remove(&path)
    }

    /// Extends the file with written zeros to `to` bytes.
    fn grow(&mut self, to: u64) -> Result<(), LogError> {
        if to > self.allocated {
            self.write_zeros(self.allocated, to)?;
            self.allocated = to;
        }
        Ok(())
    }

    fn write_zeros(&self, from: u64, to: u64) -> Result<(), LogError> {
        let zeros = vec![0u8; (to - from).min(1 << 20) as usize];
        let mut at = from;
        while at < to {
            let n = (to - at).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..n], at).map_err(io_err(&self.path))?;
            at += n as u64;
        }
        Ok(())
    }
}

/// Deletes the log file at `path` (if present) and flushes its directory.
pub fn remove(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path)(e)),
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Fills `buf`; `false` if the input ends first (a short read at the end of
/// the file is the end of the log, not an error).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn tag(n: u32) -> Tag {
        let mut t = [0x5au8; REPLAY_TAG_LEN];
        t[..4].copy_from_slice(&n.to_be_bytes());
        t
    }

    fn tags(range: std::ops::Range<u32>) -> Vec<Tag> {
        range.map(tag).collect()
    }

    /// Creates `epoch`'s log in `dir` holding `tags`, durable; returns its path.
    fn written(dir: &Path, epoch: u64, tags: &[Tag]) -> PathBuf {
        let mut log = EpochLog::create(dir, epoch).unwrap();
        log.append(tags).unwrap();
        log.sync().unwrap();
        log_path(dir, epoch)
    }

    fn read(path: &Path, epoch: u64) -> Result<(EpochLog, Vec<Tag>), LogError> {
        let mut out = Vec::new();
        let log = EpochLog::open(path, epoch, |t| out.push(*t))?;
        Ok((log, out))
    }

    #[test]
    fn names_parse_strictly() {
        assert_eq!(file_epoch("42.log"), Some(42));
        assert_eq!(file_epoch("0.log"), Some(0));
        for bad in ["042.log", "+42.log", ".log", "42.log.tmp", "42", "x.log", "42.LOG"] {
            assert_eq!(file_epoch(bad), None, "{bad}");
        }
    }

    #[test]
    fn appended_tags_read_back_in_order_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join(REPLAY_DIR);
        assert!(list(&logs).unwrap().is_empty());
        assert_eq!(fs::metadata(&logs).unwrap().permissions().mode() & 0o777, 0o700);
        let mut log = EpochLog::create(&logs, 7).unwrap();
        log.append(&tags(0..3)).unwrap();
        log.sync().unwrap();
        log.append(&tags(3..4)).unwrap();
        log.sync().unwrap();
        let path = log_path(&logs, 7);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&path).unwrap().len(), HEADER_LEN + PREALLOCATE, "preallocated, not grown");
        drop(log);
        assert_eq!(list(&logs).unwrap(), vec![(7, path.clone())]);
        let (mut log, read_back) = read(&path, 7).unwrap();
        assert_eq!(read_back, tags(0..4));
        // Appends after a reopen continue the log.
        log.append(&tags(4..6)).unwrap();
        log.sync().unwrap();
        drop(log);
        assert_eq!(read(&path, 7).unwrap().1, tags(0..6));
    }

    #[test]
    fn large_appends_split_into_records_and_grow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // More than one preallocation step and more than one unsynced reach.
        let many = tags(0..200_000);
        let path = written(dir.path(), 1, &many);
        let len = fs::metadata(&path).unwrap().len();
        assert!(len > 3 * PREALLOCATE && (len - HEADER_LEN).is_multiple_of(PREALLOCATE), "{len}");
        assert_eq!(read(&path, 1).unwrap().1, many);
    }

    #[test]
    fn a_torn_end_is_cleared_and_the_log_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EpochLog::create(dir.path(), 3).unwrap();
        log.append(&tags(0..10)).unwrap();
        log.sync().unwrap();
        let end = log.end;
        drop(log);
        let path = log_path(dir.path(), 3);
        // A crash tore the next write: a record whose tags and check did not
        // all reach the disk.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let mut torn = 5u32.to_be_bytes().to_vec();
        torn.extend_from_slice(&[0xab; 40]);
        file.write_all_at(&torn, end).unwrap();
        drop(file);
        let (mut log, read_back) = read(&path, 3).unwrap();
        assert_eq!(read_back, tags(0..10), "the torn record is not a record");
        let mut after = vec![0u8; torn.len()];
        fs::File::open(&path).unwrap().read_exact_at(&mut after, end).unwrap();
        assert!(after.iter().all(|&b| b == 0), "the torn bytes are cleared");
        log.append(&tags(10..11)).unwrap();
        log.sync().unwrap();
        drop(log);
        assert_eq!(read(&path, 3).unwrap().1, tags(0..11));
    }

    #[test]
    fn damage_is_a_typed_error_not_a_shorter_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = written(dir.path(), 4, &tags(0..200_000));
        // A flipped byte in the first record: the log would end there, with
        // megabytes of records after it.
        let file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, HEADER_LEN + 10).unwrap();
        file.write_all_at(&[b[0] ^ 1], HEADER_LEN + 10).unwrap();
        drop(file);
        match read(&path, 4) {
            Err(LogError::Corrupt { offset, .. }) => assert_eq!(offset, HEADER_LEN),
            other => panic!("expected a damaged-log error, got {other:?}"),
        }
        // Another epoch's log under this name, or a foreign header.
        fs::rename(written(dir.path(), 5, &tags(0..1)), log_path(dir.path(), 6)).unwrap();
        assert!(matches!(read(&log_path(dir.path(), 6), 6), Err(LogError::Corrupt { offset: 0, .. })));
    }

    #[test]
    fn a_log_caught_in_its_creation_starts_anew() {
        let dir = tempfile::tempdir().unwrap();
        for bytes in [vec![], vec![0u8; 5], vec![0u8; 4096]] {
            let path = log_path(dir.path(), 9);
            fs::write(&path, &bytes).unwrap();
            let (mut log, read_back) = read(&path, 9).unwrap();
            assert!(read_back.is_empty());
            log.append(&tags(0..2)).unwrap();
            log.sync().unwrap();
            drop(log);
            assert_eq!(read(&path, 9).unwrap().1, tags(0..2));
        }
    }

    #[test]
    fn records_are_valid_only_where_they_were_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EpochLog::create(dir.path(), 2).unwrap();
        log.append(&tags(0..1)).unwrap();
        log.sync().unwrap();
        let record_len = log.end - HEADER_LEN;
        drop(log);
        let path = log_path(dir.path(), 2);
        // The same record copied one record further on is not a second record.
        let file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let mut record = vec![0u8; record_len as usize];
        file.read_exact_at(&mut record, HEADER_LEN).unwrap();
        file.write_all_at(&record, HEADER_LEN + record_len).unwrap();
        drop(file);
        let (log, read_back) = read(&path, 2).unwrap();
        assert_eq!(read_back, tags(0..1));
        assert_eq!(log.end, HEADER_LEN + record_len);
    }

    #[test]
    fn remove_deletes_and_a_missing_file_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let log = EpochLog::create(dir.path(), 8).unwrap();
        log.remove().unwrap();
        assert!(!log_path(dir.path(), 8).exists());
        remove(&log_path(dir.path(), 8)).unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(list(&file), Err(LogError::NotADirectory { .. })));
    }
}
