//! The oracle's key file.
//!
//! One Ed25519 key does two jobs: it signs every price round, and it is the
//! oracle's libp2p identity. Nodes admit an oracle peer only if its peer id's
//! key is one of their `[prices] oracle_keys`, and then accept only rounds
//! signed by that same key; keeping one key means an operator configures
//! one value on the nodes, the one `nox-oracle keygen` prints.
//!
//! The file holds the 32 secret bytes as one line of lowercase hex, mode 0600.
//! It is never overwritten, and refused on load if group or others can read
//! it (the same rules as the node's key files).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

/// Key file errors; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file exists.
    #[error("{0} already exists; refusing to replace an oracle key (nodes trust its public key)")]
    Exists(PathBuf),
    /// Reading, writing or creating failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Group or others can read the file.
    #[error("{path} has mode {mode:o}; a key file must not be readable by group or others (chmod 600)")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// Not 64 hex characters.
    #[error("{0} does not hold a key: expected one line of 64 hex characters")]
    Malformed(PathBuf),
}

impl KeyFileError {
    /// Whether the file is simply not there.
    pub fn is_missing(&self) -> bool {
        matches!(self, KeyFileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Creates `path` (mode 0600) with a fresh key and returns it. Refuses an
/// existing file. The parent directory is created (mode 0700) if missing.
pub fn generate(path: &Path) -> Result<SigningKey, KeyFileError> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    write(path, &key)?;
    Ok(key)
}

/// Writes `key` to a new file `path` (mode 0600); refuses an existing file.
pub fn write(path: &Path, key: &SigningKey) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io { path: path.to_owned(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        fs::create_dir_all(dir).map_err(|source| KeyFileError::Io { path: dir.to_owned(), source })?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|source| KeyFileError::Io { path: dir.to_owned(), source })?;
    }
    if path.exists() {
        return Err(KeyFileError::Exists(path.to_owned()));
    }
    let text = Zeroizing::new(format!("{}\n", hex::encode(key.to_bytes())));
    // A fresh 0600 file beside the target, renamed into place: a crash leaves
    // either no key or a whole one.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(io)?;
    // `hard_link` + remove instead of `rename`: never replaces a file that
    // appeared in between.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(KeyFileError::Exists(path.to_owned())),
        Err(e) => Err(io(e)),
    }
}

/// Loads the key from `path`, checking its permissions.
pub fn load(path: &Path) -> Result<SigningKey, KeyFileError> {
    let io = |source| KeyFileError::Io { path: path.to_owned(), source };
    let mode = fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions { path: path.to_owned(), mode: mode & 0o777 });
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(io)?);
    let mut secret = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), &mut secret[..]).map_err(|_| KeyFileError::Malformed(path.to_owned()))?;
    Ok(SigningKey::from_bytes(&secret))
}

/// The public key nodes list in `[prices] oracle_keys`: 64 lowercase hex digits.
pub fn public_key_hex(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_load_round_trip_with_a_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("oracle.key");
        let key = generate(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(load(&path).unwrap().to_bytes(), key.to_bytes());
        assert_eq!(public_key_hex(&key).len(), 64);
    }

    #[test]
    fn never_overwrites_and_refuses_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oracle.key");
        let first = generate(&path).unwrap();
        assert!(matches!(generate(&path), Err(KeyFileError::Exists(_))));
        assert_eq!(load(&path).unwrap().to_bytes(), first.to_bytes(), "the old key survives");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(load(&path), Err(KeyFileError::Permissions { mode: 0o640, .. })));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "not hex\n").unwrap();
        assert!(matches!(load(&path), Err(KeyFileError::Malformed(_))));
        let missing = load(&dir.path().join("missing")).unwrap_err();
        assert!(missing.is_missing());
    }
}
