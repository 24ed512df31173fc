//! The wallet file: a versioned header in the clear, then one AEAD-sealed
//! body. Written atomically, readable by its owner only.
//!
//! ```text
//! offset size  field
//!      0    8  magic "NOXWALLT"
//!      8    2  version (big-endian), 2
//!     10    1  KDF: 1 = argon2id (v1.3)
//!     11    4  m_cost, KiB (big-endian)
//!     15    4  t_cost, passes
//!     19    4  p_cost, lanes
//!     23   16  salt
//!     39   32  passphrase check = BLAKE3-derive_key("NOX wallet v1 passphrase check", master)
//!     71   24  XChaCha20-Poly1305 nonce (fresh at every write)
//!     95    …  ciphertext of the body ‖ 16-byte tag; associated data = bytes 0..95
//! ```
//!
//! `master = argon2id(passphrase, salt, m, t, p)` (32 bytes); the AEAD key is
//! `BLAKE3-derive_key("NOX wallet v1 file key", master)`. The passphrase check
//! lets a wrong passphrase be told from a damaged file ([`WalletError::WrongPassphrase`]
//! vs [`WalletError::Corrupt`]); it gives a guesser nothing the AEAD tag would
//! not, and each guess still costs one argon2id. Because the whole header is
//! the associated data, changing any header byte (a KDF parameter, the salt)
//! makes the body fail to open.
//!
//! Version 2 is the format of NoxPool v2 (queued leaves kept with the sync
//! progress, see the parent module); a version 1 file, a wallet of the v1
//! pool, is refused with [`WalletError::PoolV1Wallet`]: its notes live in
//! another contract, which this build does not follow. The header itself did
//! not change (the key-derivation contexts still say `v1`).
//!
//! The key derivation and the sealing are [`crate::passphrase`]'s, shared
//! with the mail queue; this module owns the wallet's header and its write.
//!
//! The key is derived once, at `create` or `open`, and kept (zeroized on
//! drop) so that a save costs one encryption, not one argon2id.
//!
//! Writes go to `.<name>.tmp` in the same directory (created 0600), are
//! fsynced, renamed over the file, and the directory is fsynced: after a
//! crash the file is either the old one or the new one, never a mix. One
//! process at a time may hold a wallet file open for writing.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::error::WalletError;
use crate::passphrase::{self, Contexts, KDF_LEN, KdfError, NONCE_LEN, SALT_LEN, TAG_LEN};
pub use crate::passphrase::{KdfParams, MAX_M_KIB, MAX_P, MAX_T};

/// The file's first bytes.
pub const MAGIC: [u8; 8] = *b"NOXWALLT";
/// The format version this build reads and writes.
pub const VERSION: u16 = 2;
/// The version of wallets of NoxPool v1 (refused with a message of their own).
pub const POOL_V1_VERSION: u16 = 1;
/// Bytes of the header (the AEAD's associated data).
pub const HEADER_LEN: usize = 95;
const CHECK_LEN: usize = 32;
const CONTEXTS: Contexts = Contexts { check: "NOX wallet v1 passphrase check", key: "NOX wallet v1 file key" };

impl From<KdfError> for WalletError {
    fn from(e: KdfError) -> Self {
        WalletError::Kdf(e.0)
    }
}

/// What the header holds besides the nonce.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) kdf: KdfParams,
    pub(crate) salt: [u8; SALT_LEN],
    pub(crate) check: [u8; CHECK_LEN],
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Header").field("kdf", &self.kdf).finish_non_exhaustive()
    }
}

impl Header {
    fn encode(&self, nonce: &[u8; NONCE_LEN]) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..10].copy_from_slice(&VERSION.to_be_bytes());
        h[10..10 + KDF_LEN].copy_from_slice(&self.kdf.to_bytes());
        h[23..39].copy_from_slice(&self.salt);
        h[39..71].copy_from_slice(&self.check);
        h[71..95].copy_from_slice(nonce);
        h
    }

    /// The header and nonce of `bytes` (the whole file).
    fn decode(path: &Path, bytes: &[u8]) -> Result<(Header, [u8; NONCE_LEN]), WalletError> {
        if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
            if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
                return Err(WalletError::Truncated { len: bytes.len() });
            }
            return Err(WalletError::NotAWallet(path.to_path_buf()));
        }
        if bytes.len() < 10 {
            return Err(WalletError::Truncated { len: bytes.len() });
        }
        let version = u16::from_be_bytes([bytes[8], bytes[9]]);
        if version == POOL_V1_VERSION {
            return Err(WalletError::PoolV1Wallet(path.to_path_buf()));
        }
        if version != VERSION {
            return Err(WalletError::UnsupportedVersion { found: version, supported: VERSION });
        }
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(WalletError::Truncated { len: bytes.len() });
        }
        let mut kdf = [0u8; KDF_LEN];
        kdf.copy_from_slice(&bytes[10..10 + KDF_LEN]);
        let kdf = KdfParams::from_bytes(&kdf)?;
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&bytes[23..39]);
        let mut check = [0u8; CHECK_LEN];
        check.copy_from_slice(&bytes[39..71]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[71..95]);
        Ok((Header { kdf, salt, check }, nonce))
    }
}

/// The AEAD key of an open wallet (zeroized when dropped).
pub(crate) struct FileKey {
    header: Header,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKey(<secret>)")
    }
}

impl FileKey {
    /// A fresh salt, and the key `passphrase` gives with it.
    pub(crate) fn create(passphrase: &str, kdf: KdfParams) -> Result<FileKey, WalletError> {
        let salt = passphrase::fresh_salt();
        let derived = passphrase::derive(passphrase, kdf, &salt, CONTEXTS)?;
        Ok(FileKey { header: Header { kdf, salt, check: derived.check }, key: derived.key })
    }

    /// The header's parameters.
    pub(crate) fn kdf(&self) -> KdfParams {
        self.header.kdf
    }

    /// Seals `body` under a fresh nonce: the whole file's bytes.
    pub(crate) fn seal(&self, body: &[u8]) -> Result<Vec<u8>, WalletError> {
        let nonce = passphrase::fresh_nonce();
        let header = self.header.encode(&nonce);
        let sealed = passphrase::seal(&self.key, &nonce, &header, body)
            .ok_or_else(|| WalletError::Corrupt("encryption failed".into()))?;
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens the file's `bytes` with `passphrase`: the key and the body.
    pub(crate) fn open(
        path: &Path,
        bytes: &[u8],
        passphrase: &str,
    ) -> Result<(FileKey, Zeroizing<Vec<u8>>), WalletError> {
        let (header, nonce) = Header::decode(path, bytes)?;
        let derived = passphrase::derive(passphrase, header.kdf, &header.salt, CONTEXTS)?;
        if !passphrase::constant_time_eq(&derived.check, &header.check) {
            return Err(WalletError::WrongPassphrase);
        }
        let body = passphrase::open(&derived.key, &nonce, &bytes[..HEADER_LEN], &bytes[HEADER_LEN..])
            .ok_or_else(|| WalletError::Corrupt("the body does not authenticate".into()))?;
        Ok((FileKey { header, key: derived.key }, body))
    }
}

/// Reads the whole file.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, WalletError> {
    std::fs::read(path).map_err(|source| WalletError::Io { path: path.to_path_buf(), source })
}

/// The temporary file a write goes through.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Replaces `path` with `bytes` atomically (see the module docs).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WalletError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| WalletError::Io { path: p, source }
    };
    let tmp = temp_path(path);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut file =
        OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(path)(e));
    }
    File::open(&dir).and_then(|d| d.sync_all()).map_err(io(&dir))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn seal_open_round_trip_and_wrong_passphrase() {
        let key = FileKey::create("correct horse", KdfParams::insecure_fast()).unwrap();
        let file = key.seal(b"the body").unwrap();
        let p = Path::new("w");
        let (again, body) = FileKey::open(p, &file, "correct horse").unwrap();
        assert_eq!(body.as_slice(), b"the body");
        assert_eq!(again.kdf(), KdfParams::insecure_fast());
        assert!(matches!(FileKey::open(p, &file, "battery staple"), Err(WalletError::WrongPassphrase)));
        // A fresh nonce at every seal.
        assert_ne!(key.seal(b"the body").unwrap(), file);
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let key = FileKey::create("pw", KdfParams::insecure_fast()).unwrap();
        let file = key.seal(b"notes and keys").unwrap();
        let p = Path::new("w");
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x01;
            let err = FileKey::open(p, &bad, "pw").err().unwrap_or_else(|| panic!("byte {i} accepted"));
            let expected = match i {
                0..8 => matches!(err, WalletError::NotAWallet(_)),
                8..10 => matches!(err, WalletError::UnsupportedVersion { .. } | WalletError::PoolV1Wallet(_)),
                10 => matches!(err, WalletError::Kdf(_)),
                // KDF parameters, salt, check: another key, taken for another passphrase.
                11..71 => matches!(err, WalletError::WrongPassphrase | WalletError::Kdf(_)),
                _ => matches!(err, WalletError::Corrupt(_)),
            };
            assert!(expected, "byte {i}: {err:?}");
        }
    }

    #[test]
    fn short_files_are_truncated_and_strangers_are_not_wallets() {
        let key = FileKey::create("pw", KdfParams::insecure_fast()).unwrap();
        let file = key.seal(b"x").unwrap();
        let p = Path::new("w");
        for len in [0, 4, 9, HEADER_LEN, file.len() - 1] {
            let err = FileKey::open(p, &file[..len], "pw").err().unwrap();
            assert!(matches!(err, WalletError::Truncated { .. } | WalletError::Corrupt(_)), "{len} bytes: {err:?}");
        }
        assert!(matches!(FileKey::open(p, b"{\"json\": true}", "pw"), Err(WalletError::NotAWallet(_))));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        #[test]
        fn any_body_round_trips(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let key = FileKey::create("pw", KdfParams::insecure_fast()).unwrap();
            let file = key.seal(&body).unwrap();
            proptest::prop_assert_eq!(file.len(), HEADER_LEN + body.len() + TAG_LEN);
            let (_, opened) = FileKey::open(Path::new("w"), &file, "pw").unwrap();
            proptest::prop_assert_eq!(opened.as_slice(), body.as_slice());
        }
    }

    #[test]
    fn a_pool_v1_wallet_is_refused_by_name_and_other_versions_by_number() {
        let key = FileKey::create("pw", KdfParams::insecure_fast()).unwrap();
        let mut file = key.seal(b"body").unwrap();
        let p = Path::new("old.nox");
        file[8..10].copy_from_slice(&POOL_V1_VERSION.to_be_bytes());
        let err = FileKey::open(p, &file, "pw").unwrap_err();
        assert!(matches!(&err, WalletError::PoolV1Wallet(path) if path == p), "{err:?}");
        assert!(err.to_string().contains("NoxPool v1"), "{err}");
        file[8..10].copy_from_slice(&3u16.to_be_bytes());
        assert!(matches!(
            FileKey::open(p, &file, "pw"),
            Err(WalletError::UnsupportedVersion { found: 3, supported: VERSION })
        ));
    }

    #[test]
    fn oversized_kdf_parameters_are_refused() {
        let huge = KdfParams { m_kib: MAX_M_KIB + 1, t: 1, p: 1 };
        assert!(matches!(FileKey::create("pw", huge), Err(WalletError::Kdf(_))));
    }

    #[test]
    fn atomic_write_replaces_and_a_failed_write_leaves_the_old_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wallet.nox");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // The temporary file cannot be created: the write fails, the old file stays.
        std::fs::create_dir(temp_path(&path)).unwrap();
        assert!(matches!(write_atomic(&path, b"third"), Err(WalletError::Io { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
    }
}
