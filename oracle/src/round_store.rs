//! The round counter on disk: what keeps round numbers increasing across
//! restarts.
//!
//! Every node keeps, per oracle, the last round it accepted and refuses a
//! round number that is not higher (`replayed`, `out_of_order`) or a
//! timestamp earlier than the last one. An oracle that restarted at round 1
//! would be ignored until it caught up with itself. So the number and
//! timestamp of the last signed round live in `state_dir/round.json`, and
//! the invariant is **durable before published**: a round is written (temporary
//! file, fsync, rename, fsync of the directory) before it is handed to the
//! network. A crash between the two loses one round number, never reuses one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name inside `state_dir`.
pub const ROUND_FILE: &str = "round.json";

/// The last signed round.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRound {
    /// Its number (0: none yet).
    pub round: u64,
    /// Its timestamp, unix milliseconds.
    pub timestamp_ms: u64,
}

/// State file errors; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum RoundStoreError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file exists but does not hold a round.
    #[error(
        "{path} is not a round state file ({reason}); fix or remove it, knowing the next round must exceed the last one nodes saw"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
}

/// The round counter of one `state_dir`.
#[derive(Debug, Clone)]
pub struct RoundStore {
    dir: PathBuf,
}

impl RoundStore {
    /// Opens (creating the directory if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, RoundStoreError> {
        fs::create_dir_all(dir).map_err(|source| RoundStoreError::Io { path: dir.to_owned(), source })?;
        Ok(RoundStore { dir: dir.to_owned() })
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(ROUND_FILE)
    }

    /// The last stored round (zero when the file does not exist yet).
    pub fn load(&self) -> Result<LastRound, RoundStoreError> {
        let path = self.path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| RoundStoreError::Corrupt { path: path.clone(), reason: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LastRound::default()),
            Err(source) => Err(RoundStoreError::Io { path, source }),
        }
    }

    /// Stores `last` durably: temporary file, fsync, rename, fsync of the directory.
    pub fn store(&self, last: LastRound) -> Result<(), RoundStoreError> {
        let path = self.path();
        let tmp = self.dir.join(format!("{ROUND_FILE}.tmp"));
        let io = |p: &Path| {
            let p = p.to_owned();
            move |source| RoundStoreError::Io { path: p, source }
        };
        let text = serde_json::to_vec(&last).unwrap_or_default();
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(io(&tmp))?;
        f.write_all(&text).and_then(|()| f.sync_all()).map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_loads_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = RoundStore::open(&dir.path().join("state")).unwrap();
        assert_eq!(store.load().unwrap(), LastRound::default());
        store.store(LastRound { round: 7, timestamp_ms: 1_000 }).unwrap();
        store.store(LastRound { round: 8, timestamp_ms: 2_000 }).unwrap();
        let again = RoundStore::open(&dir.path().join("state")).unwrap();
        assert_eq!(again.load().unwrap(), LastRound { round: 8, timestamp_ms: 2_000 });
        fs::write(again.path(), b"{\"round\":").unwrap();
        assert!(matches!(again.load(), Err(RoundStoreError::Corrupt { .. })));
    }
}
