//! The node's database file.
//!
//! One redb file in the data directory holds what the node must not forget
//! across a restart, apart from its epoch secret keys: the replay tags of every
//! live epoch key ([`crate::replay`], tables `replay_<epoch>`) and the state of
//! the chain watcher and the exit's nonce ledger. They share one
//! [`redb::Database`] through an `Arc`; redb serialises write transactions, so
//! they never corrupt each other, and a commit with `Durability::Immediate` is
//! on disk when it returns.
//!
//! The epoch secret keys are *not* here. redb is copy-on-write: a deleted
//! value's old page is freed, not overwritten, until redb reuses it, so a
//! retired key would outlive its epoch in this file. They live in the key
//! directory instead ([`crate::epoch_store`]), where a retired key's file is
//! overwritten before it is unlinked. Older nodes kept them in the table
//! `epoch_keys`: [`open_database`] moves that table's keys into the key
//! directory, deletes it and compacts the file — but pages redb freed may still
//! hold those keys until they are reused.
//!
//! The file is created with mode 0600 (and tightened to 0600 if it is found
//! looser) in a directory created with mode 0700.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File name of the database inside the data directory.
pub const DATABASE_FILE: &str = "node.redb";

/// Page cache redb may use. Replay tags are answered from memory, so the cache
/// only serves commits and the load at startup.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Opening the database failed; each variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Creating the directory or the file, or setting its mode, failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// redb refused the file (locked by another process, corrupted, wrong format).
    #[error("opening database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        source: redb::DatabaseError,
    },
    /// Moving the epoch keys of the database's old `epoch_keys` table into the
    /// key directory failed; the table is left as it was.
    #[error("{path}: {source}")]
    EpochKeys {
        /// The database file.
        path: PathBuf,
        /// What failed.
        source: crate::epoch_store::EpochStoreError,
    },
}

/// Opens the database at `path`, creating it (and its parent directory) if
/// needed. Another process holding the file gets [`StoreError::Open`]. Epoch
/// keys an older node kept in the database are moved to the key directory
/// beside it ([`crate::epoch_store::migrate_database_keys`]).
pub fn open_database(path: &Path) -> Result<Arc<redb::Database>, StoreError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Io { path, source }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        fs::create_dir_all(dir).map_err(io(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    }
    // Create the file ourselves so that it never exists with a looser mode.
    OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path).map_err(io(path))?;
    let mode = fs::metadata(path).map_err(io(path))?.permissions().mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    }
    let mut db = redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
    let data_dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    crate::epoch_store::migrate_database_keys(&mut db, &crate::epoch_store::epoch_keys_dir(data_dir))
        .map_err(|source| StoreError::EpochKeys { path: path.to_owned(), source })?;
    Ok(Arc::new(db))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_file_and_refuses_a_second_opener() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join(DATABASE_FILE);
        let db = open_database(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        assert!(matches!(open_database(&path), Err(StoreError::Open { .. })));
        drop(db);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let _db = open_database(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn refuses_a_file_that_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE_FILE);
        fs::write(&path, b"not a redb file, just some text that is long enough to be noticed").unwrap();
        assert!(matches!(open_database(&path), Err(StoreError::Open { .. })));
    }
}
