//! Where the node's epoch secret keys rest between runs: one small file per
//! epoch in the directory `epoch_keys/` of the data directory.
//!
//! ## Why files and not the database
//!
//! A retired mix key must be *gone*, or forward secrecy of its epoch is lost to
//! whoever takes the disk later. redb is copy-on-write: deleting a row frees its
//! page without overwriting it, so the secret would stay in the database file
//! until redb happened to reuse the page. A file can be destroyed on purpose:
//! [`EpochKeyStore::wipe`] overwrites it with zeros in place, flushes, and only
//! then unlinks it.
//!
//! On an ordinary journalling file system (ext4 or XFS with default options) the
//! in-place overwrite replaces the data blocks. It does not reach copies the
//! storage keeps below the file system: a copy-on-write file system (btrfs, ZFS)
//! or a snapshot writes the zeros elsewhere, `data=journal` mode passes them
//! through the journal, and an SSD's flash translation layer remaps blocks. On
//! such storage, forward secrecy against someone who images the disk needs the
//! data directory on an encrypted volume.
//!
//! ## What crosses its edges
//!
//! [`crate::epoch::EpochKeyRing`] is the only user: it [`EpochKeyStore::store`]s
//! a key before it holds or publishes it, [`EpochKeyStore::load`]s keys after a
//! restart and [`EpochKeyStore::wipe`]s the ones it retires.
//! [`crate::store::open_database`] calls [`migrate_database_keys`] once, to move
//! the keys of a node that kept them in the database's old `epoch_keys` table.
//! One node owns a data directory: the database's file lock, taken first by
//! [`crate::store::open_database`], keeps a second one out of the key directory.
//!
//! ## Invariant
//!
//! [`EpochKeyStore::store`] returns only once the key is durable: the file is
//! written under a temporary name, flushed, renamed into place, and the
//! directory is flushed. A crash leaves either no key or the whole key; a
//! half-written temporary file is never a published key, and the next
//! [`EpochKeyStore::open`] wipes it. [`EpochKeyStore::wipe`] returns only once the
//! zeros are flushed and the name is gone from the flushed directory.
//!
//! ## File layout
//!
//! `<epoch>.key` (decimal epoch, no leading zeros), mode 0600, exactly 80 bytes:
//!
//! | bytes  | content                                   |
//! |--------|-------------------------------------------|
//! | 0..8   | `NOXEKEY1`                                |
//! | 8..16  | the epoch, big-endian                     |
//! | 16..48 | the X25519 secret                         |
//! | 48..80 | BLAKE3 of bytes 0..48 (detects damage)    |
//!
//! A file of 80 zero bytes is a wipe that was interrupted before the unlink: it
//! holds no key and is removed on the next open. Anything else in the directory
//! — another name, a directory, a symlink, a file of another size or with a bad
//! checksum — is refused with an error naming it, never skipped: a stray copy of
//! a key there would outlive its epoch.

use std::collections::BTreeSet;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nox_protocol::crypto::x25519::MixSecretKey;
use redb::{ReadableTable, TableDefinition, TableError};
use zeroize::Zeroizing;

/// Name of the key directory inside the data directory.
pub const EPOCH_KEYS_DIR: &str = "epoch_keys";

/// The database table older nodes kept their epoch keys in: epoch → 32 secret
/// bytes. Read once by [`migrate_database_keys`], then deleted.
const DATABASE_KEYS: TableDefinition<'static, u64, [u8; 32]> = TableDefinition::new("epoch_keys");

const MAGIC: &[u8; 8] = b"NOXEKEY1";
/// Size of a key file.
pub const KEY_FILE_LEN: usize = 80;
const KEY_SUFFIX: &str = ".key";
const TMP_SUFFIX: &str = ".key.tmp";

/// The key directory of the data directory `data_dir`.
pub fn epoch_keys_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(EPOCH_KEYS_DIR)
}

/// Key store errors; each names the file or directory it is about.
#[derive(Debug, thiserror::Error)]
pub enum EpochStoreError {
    /// Creating, reading, writing, flushing or removing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A key file is damaged: wrong size, wrong header, another epoch's key, or
    /// a checksum that does not match.
    #[error("{path}: not a valid epoch key file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Something in the key directory that the store did not write.
    #[error(
        "{path}: unexpected entry in the epoch key directory (it holds only <epoch>.key files); \
         move it out of the data directory"
    )]
    Foreign {
        /// The entry.
        path: PathBuf,
    },
    /// The key directory's path names something that is not a directory.
    #[error("{path}: the epoch key directory is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// Reading or deleting the database's old `epoch_keys` table failed.
    #[error("moving epoch keys out of the database: {context}: {source}")]
    Database {
        /// What was being done.
        context: &'static str,
        /// What redb said.
        source: Box<redb::Error>,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EpochStoreError + '_ {
    move |source| EpochStoreError::Io { path: path.to_owned(), source }
}

fn db_err<E: Into<redb::Error>>(context: &'static str) -> impl FnOnce(E) -> EpochStoreError {
    move |e| EpochStoreError::Database { context, source: Box::new(e.into()) }
}

/// What a directory entry's name says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryName {
    /// `<epoch>.key`.
    Key(u64),
    /// `<epoch>.key.tmp`: a write that did not finish.
    Temporary(u64),
}

/// Parses a strict decimal epoch: digits only, no sign, no leading zero.
fn parse_epoch(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

fn entry_name(name: &str) -> Option<EntryName> {
    if let Some(epoch) = name.strip_suffix(TMP_SUFFIX) {
        return parse_epoch(epoch).map(EntryName::Temporary);
    }
    name.strip_suffix(KEY_SUFFIX).and_then(parse_epoch).map(EntryName::Key)
}

fn checksum(head: &[u8]) -> [u8; 32] {
    *blake3::hash(head).as_bytes()
}

/// The 80 bytes of `epoch`'s key file.
fn encode(epoch: u64, secret: &MixSecretKey) -> Zeroizing<[u8; KEY_FILE_LEN]> {
    let mut out = Zeroizing::new([0u8; KEY_FILE_LEN]);
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&epoch.to_be_bytes());
    out[16..48].copy_from_slice(&Zeroizing::new(secret.to_bytes())[..]);
    let sum = checksum(&out[..48]);
    out[48..].copy_from_slice(&sum);
    out
}

/// What a key file's bytes hold.
enum Decoded {
    Key(MixSecretKey),
    /// All zeros: a wipe interrupted before the unlink.
    Wiped,
}

fn decode(path: &Path, epoch: u64, bytes: &[u8]) -> Result<Decoded, EpochStoreError> {
    let corrupt = |reason: String| EpochStoreError::Corrupt { path: path.to_owned(), reason };
    if bytes.len() != KEY_FILE_LEN {
        return Err(corrupt(format!("{} bytes, expected {KEY_FILE_LEN}", bytes.len())));
    }
    if bytes.iter().all(|b| *b == 0) {
        return Ok(Decoded::Wiped);
    }
    if &bytes[..8] != MAGIC {
        return Err(corrupt("wrong header".to_owned()));
    }
    let mut epoch_bytes = [0u8; 8];
    epoch_bytes.copy_from_slice(&bytes[8..16]);
    let inside = u64::from_be_bytes(epoch_bytes);
    if inside != epoch {
        return Err(corrupt(format!("holds the key of epoch {inside}")));
    }
    if checksum(&bytes[..48])[..] != bytes[48..] {
        return Err(corrupt("checksum does not match (the file is damaged)".to_owned()));
    }
    let mut secret = Zeroizing::new([0u8; 32]);
    secret.copy_from_slice(&bytes[16..48]);
    Ok(Decoded::Key(MixSecretKey::from_bytes(*secret)))
}

/// The epoch secret keys at rest: one file per epoch, really erased when
/// retired. See the module docs for the layout and the guarantees.
#[derive(Debug)]
pub struct EpochKeyStore {
    dir: PathBuf,
}

impl EpochKeyStore {
    /// Opens the key directory `dir`, creating it with mode 0700 (or tightening
    /// it to 0700) and finishing what a crash interrupted: temporary files and
    /// zero-filled files are wiped and removed. Anything the store did not write
    /// is refused with [`EpochStoreError::Foreign`].
    pub fn open(dir: &Path) -> Result<Self, EpochStoreError> {
        if !dir.exists() {
            DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err(dir))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let meta = fs::symlink_metadata(dir).map_err(io_err(dir))?;
        if !meta.is_dir() {
            return Err(EpochStoreError::NotADirectory { path: dir.to_owned() });
        }
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
        }
        let store = EpochKeyStore { dir: dir.to_owned() };
        let mut finished = false;
        for (name, path) in store.entries()? {
            match name {
                EntryName::Temporary(_) => {
                    wipe_file(&path)?;
                    finished = true;
                }
                EntryName::Key(epoch) => {
                    if matches!(store.read(epoch, &path)?, Some(Decoded::Wiped)) {
                        wipe_file(&path)?;
                        finished = true;
                    }
                }
            }
        }
        if finished {
            sync_dir(&store.dir)?;
            tracing::info!("finished an interrupted epoch key write or wipe");
        }
        Ok(store)
    }

    /// The directory the keys are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every epoch with a key file, in increasing order. Refuses anything in the
    /// directory the store did not write.
    pub fn epochs(&self) -> Result<BTreeSet<u64>, EpochStoreError> {
        Ok(self
            .entries()?
            .into_iter()
            .filter_map(|(name, _)| match name {
                EntryName::Key(epoch) => Some(epoch),
                EntryName::Temporary(_) => None,
            })
            .collect())
    }

    /// The key of `epoch`, or `None` if there is none (or it was wiped).
    pub fn load(&self, epoch: u64) -> Result<Option<MixSecretKey>, EpochStoreError> {
        let path = self.path(epoch);
        Ok(match self.read(epoch, &path)? {
            Some(Decoded::Key(key)) => Some(key),
            Some(Decoded::Wiped) | None => None,
        })
    }

    /// Writes the key of `epoch` durably (see the module's invariant). The
    /// caller has checked with [`EpochKeyStore::load`] that there is none.
    pub fn store(&self, epoch: u64, secret: &MixSecretKey) -> Result<(), EpochStoreError> {
        let path = self.path(epoch);
        let tmp = self.dir.join(format!("{epoch}{TMP_SUFFIX}"));
        match fs::symlink_metadata(&tmp) {
            Ok(meta) if meta.is_file() => wipe_file(&tmp)?,
            // Never write through a symlink or into a directory.
            Ok(_) => return Err(EpochStoreError::Foreign { path: tmp }),
            Err(_) => {}
        }
        let bytes = encode(epoch, secret);
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&bytes[..]).and_then(|()| f.sync_all()));
        if let Err(source) = written {
            // Do not leave part of a secret behind.
            let _ = wipe_file(&tmp);
            return Err(EpochStoreError::Io { path: tmp, source });
        }
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(&self.dir)
    }

    /// Destroys the key of `epoch`: overwrites its file with zeros, flushes it,
    /// unlinks it and flushes the directory. `false` if there was no file.
    pub fn wipe(&self, epoch: u64) -> Result<bool, EpochStoreError> {
        let path = self.path(epoch);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(EpochStoreError::Io { path, source }),
            Ok(meta) if !meta.is_file() => return Err(EpochStoreError::Foreign { path }),
            Ok(_) => {}
        }
        wipe_file(&path)?;
        sync_dir(&self.dir)?;
        Ok(true)
    }

    fn path(&self, epoch: u64) -> PathBuf {
        self.dir.join(format!("{epoch}{KEY_SUFFIX}"))
    }

    /// The file's content, `None` if it does not exist.
    fn read(&self, epoch: u64, path: &Path) -> Result<Option<Decoded>, EpochStoreError> {
        let meta = match fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(EpochStoreError::Io { path: path.to_owned(), source }),
            Ok(meta) => meta,
        };
        if !meta.is_file() {
            return Err(EpochStoreError::Foreign { path: path.to_owned() });
        }
        // One byte more than a key file, to tell a longer file from a good one
        // without reading all of it.
        let mut buf = Zeroizing::new([0u8; KEY_FILE_LEN + 1]);
        let mut len = 0;
        let mut file = File::open(path).map_err(io_err(path))?;
        while len < buf.len() {
            match file.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => return Err(EpochStoreError::Io { path: path.to_owned(), source }),
            }
        }
        decode(path, epoch, &buf[..len]).map(Some)
    }

    /// Every entry of the directory, named; anything else is refused.
    fn entries(&self) -> Result<Vec<(EntryName, PathBuf)>, EpochStoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let path = entry.path();
            let file_type = entry.file_type().map_err(io_err(&path))?;
            let name = entry.file_name().to_str().and_then(entry_name);
            match name {
                Some(name) if file_type.is_file() => out.push((name, path)),
                _ => return Err(EpochStoreError::Foreign { path }),
            }
        }
        Ok(out)
    }
}

/// Overwrites the file at `path` with zeros over its whole length, flushes it
/// and unlinks it. The caller flushes the directory.
fn wipe_file(path: &Path) -> Result<(), EpochStoreError> {
    let mut file = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    let zeros = [0u8; 4096];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n]).map_err(io_err(path))?;
        left -= n as u64;
    }
    file.sync_all().map_err(io_err(path))?;
    drop(file);
    fs::remove_file(path).map_err(io_err(path))
}

fn sync_dir(dir: &Path) -> Result<(), EpochStoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

/// Moves the keys of the database's old `epoch_keys` table (nodes before the
/// key directory) into the key directory `dir`, deletes the table and compacts
/// the database. Returns how many keys moved; 0, without touching anything, if
/// there is no such table.
///
/// Crash-safe: the files are durable before the table is deleted, and a key
/// already in the directory (from an interrupted run) is kept. Compaction
/// shrinks the file and rewrites most of it, but redb does not overwrite the
/// pages it frees: bytes of the old keys may remain in the database file until
/// redb reuses those pages.
pub fn migrate_database_keys(db: &mut redb::Database, dir: &Path) -> Result<usize, EpochStoreError> {
    use redb::ReadableDatabase;

    let rows = {
        let txn = db.begin_read().map_err(db_err("beginning a read transaction"))?;
        let table = match txn.open_table(DATABASE_KEYS) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(db_err("opening table epoch_keys")(e)),
        };
        let mut rows = Vec::new();
        for row in table.iter().map_err(db_err("listing epoch keys"))? {
            let (epoch, secret) = row.map_err(db_err("reading an epoch key"))?;
            rows.push((epoch.value(), MixSecretKey::from_bytes(secret.value())));
        }
        rows
    };
    let store = EpochKeyStore::open(dir)?;
    for (epoch, secret) in &rows {
        if store.load(*epoch)?.is_none() {
            store.store(*epoch, secret)?;
        }
    }
    let mut txn = db.begin_write().map_err(db_err("beginning a write transaction"))?;
    txn.set_durability(redb::Durability::Immediate).map_err(db_err("setting durability"))?;
    txn.delete_table(DATABASE_KEYS).map_err(db_err("deleting table epoch_keys"))?;
    txn.commit().map_err(db_err("committing"))?;
    while db.compact().map_err(db_err("compacting the database"))? {}
    tracing::info!(keys = rows.len(), dir = %dir.display(), "moved epoch keys out of the database");
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    fn key(n: u8) -> MixSecretKey {
        MixSecretKey::from_bytes([n; 32])
    }

    #[test]
    fn names_parse_strictly() {
        assert_eq!(entry_name("42.key"), Some(EntryName::Key(42)));
        assert_eq!(entry_name("0.key"), Some(EntryName::Key(0)));
        assert_eq!(entry_name("42.key.tmp"), Some(EntryName::Temporary(42)));
        for bad in ["042.key", "+42.key", ".key", "42.KEY", "42.key.bak", "42", "x.key", "18446744073709551616.key"] {
            assert_eq!(entry_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn store_load_wipe_round_trip_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let kdir = epoch_keys_dir(dir.path());
        let store = EpochKeyStore::open(&kdir).unwrap();
        assert_eq!(fs::metadata(&kdir).unwrap().permissions().mode() & 0o777, 0o700);
        let secret = MixSecretKey::generate(&mut ChaCha20Rng::seed_from_u64(1));
        store.store(7, &secret).unwrap();
        store.store(9, &key(9)).unwrap();
        let path = kdir.join("7.key");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&path).unwrap().len(), KEY_FILE_LEN as u64);
        assert_eq!(store.epochs().unwrap(), BTreeSet::from([7, 9]));
        assert_eq!(store.load(7).unwrap().unwrap().to_bytes(), secret.to_bytes());
        assert!(store.load(8).unwrap().is_none());

        assert!(store.wipe(7).unwrap());
        assert!(!path.exists());
        assert!(!store.wipe(7).unwrap(), "a second wipe finds nothing");
        assert_eq!(store.epochs().unwrap(), BTreeSet::from([9]));
        drop(store);
        let store = EpochKeyStore::open(&kdir).unwrap();
        assert!(store.load(7).unwrap().is_none());
        assert_eq!(store.load(9).unwrap().unwrap().to_bytes(), [9; 32]);
    }

    #[test]
    fn damaged_files_get_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = EpochKeyStore::open(dir.path()).unwrap();
        store.store(5, &key(5)).unwrap();
        let path = dir.path().join("5.key");
        let good = fs::read(&path).unwrap();
        let corrupt = |bytes: &[u8], want: &str| {
            fs::write(&path, bytes).unwrap();
            match store.load(5) {
                Err(EpochStoreError::Corrupt { path: p, reason }) => {
                    assert_eq!(p, path);
                    assert!(reason.contains(want), "{reason}");
                }
                other => panic!("{want}: {other:?}"),
            }
        };
        corrupt(&good[..40], "40 bytes");
        corrupt(&[], "0 bytes");
        corrupt(&[good.clone(), vec![0]].concat(), "81 bytes");
        let mut bad = good.clone();
        bad[0] ^= 1;
        corrupt(&bad, "header");
        let mut bad = good.clone();
        bad[20] ^= 1;
        corrupt(&bad, "checksum");
        // Another epoch's valid file under this name.
        store.store(6, &key(6)).unwrap();
        corrupt(&fs::read(dir.path().join("6.key")).unwrap(), "epoch 6");
        // A damaged file also stops the store from opening.
        assert!(matches!(EpochKeyStore::open(dir.path()), Err(EpochStoreError::Corrupt { .. })));
        // Wiping needs no valid content.
        assert!(store.wipe(5).unwrap());
        assert_eq!(store.epochs().unwrap(), BTreeSet::from([6]));
    }

    #[test]
    fn foreign_entries_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = EpochKeyStore::open(dir.path()).unwrap();
        store.store(3, &key(3)).unwrap();
        for name in ["3.key.bak", "notes.txt", "03.key"] {
            let path = dir.path().join(name);
            fs::write(&path, b"x").unwrap();
            assert!(matches!(store.epochs(), Err(EpochStoreError::Foreign { path: p }) if p == path), "{name}");
            assert!(matches!(EpochKeyStore::open(dir.path()), Err(EpochStoreError::Foreign { .. })));
            fs::remove_file(&path).unwrap();
        }
        // A directory or a symlink under a key's name is not a key file either.
        fs::create_dir(dir.path().join("4.key")).unwrap();
        assert!(matches!(store.epochs(), Err(EpochStoreError::Foreign { .. })));
        assert!(matches!(store.load(4), Err(EpochStoreError::Foreign { .. })));
        assert!(matches!(store.wipe(4), Err(EpochStoreError::Foreign { .. })));
        fs::remove_dir(dir.path().join("4.key")).unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("4.key")).unwrap();
        assert!(matches!(store.load(4), Err(EpochStoreError::Foreign { .. })));
        assert!(matches!(store.wipe(4), Err(EpochStoreError::Foreign { .. })));
        assert!(outside.path().exists(), "the symlink's target is left alone");
        fs::remove_file(dir.path().join("4.key")).unwrap();
        assert_eq!(store.epochs().unwrap(), BTreeSet::from([3]));
        // The key directory itself must be a directory.
        let file = dir.path().join("3.key");
        assert!(matches!(EpochKeyStore::open(&file), Err(EpochStoreError::NotADirectory { .. })));
        // A symlink where a temporary file would go is not written through.
        let tmp = dir.path().join("5.key.tmp");
        std::os::unix::fs::symlink(outside.path(), &tmp).unwrap();
        assert!(matches!(store.store(5, &key(5)), Err(EpochStoreError::Foreign { path }) if path == tmp));
        assert!(store.load(5).unwrap().is_none());
        fs::remove_file(&tmp).unwrap();
    }

    #[test]
    fn open_finishes_interrupted_writes_and_wipes() {
        let dir = tempfile::tempdir().unwrap();
        let store = EpochKeyStore::open(dir.path()).unwrap();
        store.store(1, &key(1)).unwrap();
        // A write that stopped before its rename, and a wipe that stopped before
        // its unlink.
        let tmp = dir.path().join("2.key.tmp");
        fs::write(&tmp, &encode(2, &key(2))[..40]).unwrap();
        fs::write(dir.path().join("3.key"), [0u8; KEY_FILE_LEN]).unwrap();
        assert!(store.load(3).unwrap().is_none(), "a zero-filled file holds no key");
        assert_eq!(store.epochs().unwrap(), BTreeSet::from([1, 3]));
        drop(store);
        let store = EpochKeyStore::open(dir.path()).unwrap();
        assert!(!tmp.exists());
        assert_eq!(store.epochs().unwrap(), BTreeSet::from([1]));
        // A leftover temporary file does not block the next write of its epoch.
        fs::write(&tmp, b"partial").unwrap();
        store.store(2, &key(2)).unwrap();
        assert!(!tmp.exists());
        assert_eq!(store.load(2).unwrap().unwrap().to_bytes(), [2; 32]);
    }

    #[test]
    fn migration_moves_database_keys_and_deletes_the_table() {
        use redb::ReadableDatabase;

        let dir = tempfile::tempdir().unwrap();
        let kdir = epoch_keys_dir(dir.path());
        let mut db = redb::Database::create(dir.path().join("node.redb")).unwrap();
        assert_eq!(migrate_database_keys(&mut db, &kdir).unwrap(), 0);
        assert!(!kdir.exists(), "nothing to move: no directory made");
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(DATABASE_KEYS).unwrap();
            t.insert(10, [10u8; 32]).unwrap();
            t.insert(11, [11u8; 32]).unwrap();
        }
        txn.commit().unwrap();
        // An earlier, interrupted migration already wrote epoch 11: kept.
        EpochKeyStore::open(&kdir).unwrap().store(11, &key(11)).unwrap();

        assert_eq!(migrate_database_keys(&mut db, &kdir).unwrap(), 2);
        let store = EpochKeyStore::open(&kdir).unwrap();
        assert_eq!(store.epochs().unwrap(), BTreeSet::from([10, 11]));
        assert_eq!(store.load(10).unwrap().unwrap().to_bytes(), [10; 32]);
        let txn = db.begin_read().unwrap();
        assert!(matches!(txn.open_table(DATABASE_KEYS), Err(TableError::TableDoesNotExist(_))));
        drop(txn);
        assert_eq!(migrate_database_keys(&mut db, &kdir).unwrap(), 0, "runs once");
    }
}
