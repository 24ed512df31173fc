//! Keys a user holds as a passphrase, and the sealing they protect: the one
//! home of the client's encryption at rest, below the wallet file
//! ([`crate::wallet::file`]) and the mail queue ([`crate::mail`]).
//!
//! `master = argon2id(passphrase, salt, m, t, p)` (32 bytes). From it, two
//! BLAKE3 `derive_key` outputs under contexts each format names for itself:
//! a *passphrase check*, stored beside the salt so that a wrong passphrase is
//! told from damaged data, and the XChaCha20-Poly1305 key. The check gives a
//! guesser nothing the AEAD tag would not; each guess still costs one
//! argon2id. The KDF parameters come from the file, so they are bounded
//! ([`MAX_M_KIB`], [`MAX_T`], [`MAX_P`]): a file cannot make an open allocate
//! without bound.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::Zeroizing;

/// Bytes of a salt.
pub(crate) const SALT_LEN: usize = 16;
/// Bytes of an XChaCha20-Poly1305 nonce.
pub(crate) const NONCE_LEN: usize = 24;
/// Bytes of a Poly1305 tag.
pub(crate) const TAG_LEN: usize = 16;
/// Bytes of [`KdfParams::to_bytes`].
pub(crate) const KDF_LEN: usize = 13;
/// The one key derivation function: argon2id v1.3.
const KDF_ARGON2ID: u8 = 1;

/// Largest memory cost a file may ask for (4 GiB).
pub const MAX_M_KIB: u32 = 4 * 1024 * 1024;
/// Largest number of passes a file may ask for.
pub const MAX_T: u32 = 64;
/// Largest number of lanes a file may ask for.
pub const MAX_P: u32 = 16;

/// argon2id parameters, stored beside the salt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory, KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane (about 0.1–0.3 s on a laptop; see
    /// `docs/architecture.md`).
    fn default() -> Self {
        KdfParams { m_kib: 64 * 1024, t: 3, p: 1 }
    }
}

/// Key-derivation parameters out of range, or a KDF this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct KdfError(pub(crate) String);

impl KdfParams {
    /// Cheap parameters (64 KiB, 1 pass) for tests. **Not for real data**:
    /// they make passphrase guessing cheap.
    pub fn insecure_fast() -> Self {
        KdfParams { m_kib: 64, t: 1, p: 1 }
    }

    fn argon2_params(&self) -> Result<argon2::Params, KdfError> {
        if self.m_kib > MAX_M_KIB || self.t > MAX_T || self.p > MAX_P {
            return Err(KdfError(format!(
                "m = {} KiB, t = {}, p = {} exceed the limits ({MAX_M_KIB} KiB, {MAX_T}, {MAX_P})",
                self.m_kib, self.t, self.p
            )));
        }
        argon2::Params::new(self.m_kib, self.t, self.p, Some(32)).map_err(|e| KdfError(e.to_string()))
    }

    /// `KDF id (1 = argon2id) ‖ m_kib ‖ t ‖ p`, big-endian.
    pub(crate) fn to_bytes(self) -> [u8; KDF_LEN] {
        let mut b = [0u8; KDF_LEN];
        b[0] = KDF_ARGON2ID;
        b[1..5].copy_from_slice(&self.m_kib.to_be_bytes());
        b[5..9].copy_from_slice(&self.t.to_be_bytes());
        b[9..13].copy_from_slice(&self.p.to_be_bytes());
        b
    }

    /// The inverse of [`KdfParams::to_bytes`]; the ranges are checked when a
    /// key is derived.
    pub(crate) fn from_bytes(b: &[u8; KDF_LEN]) -> Result<KdfParams, KdfError> {
        if b[0] != KDF_ARGON2ID {
            return Err(KdfError(format!("unknown key derivation function {}", b[0])));
        }
        let word = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        Ok(KdfParams { m_kib: word(1), t: word(5), p: word(9) })
    }
}

/// The BLAKE3 contexts a format derives its check and key under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Contexts {
    /// Context of the passphrase check.
    pub(crate) check: &'static str,
    /// Context of the AEAD key.
    pub(crate) key: &'static str,
}

/// A key derived from a passphrase: the check to store and the AEAD key.
pub(crate) struct DerivedKey {
    /// Stored beside the salt; compared with [`constant_time_eq`] at open.
    pub(crate) check: [u8; 32],
    /// The XChaCha20-Poly1305 key (zeroized on drop).
    pub(crate) key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for DerivedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DerivedKey(<secret>)")
    }
}

/// Runs argon2id over `passphrase` and `salt`, then derives the check and
/// the key under `contexts`.
pub(crate) fn derive(
    passphrase: &str,
    kdf: KdfParams,
    salt: &[u8; SALT_LEN],
    contexts: Contexts,
) -> Result<DerivedKey, KdfError> {
    let params = kdf.argon2_params()?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut master = Zeroizing::new([0u8; 32]);
    argon.hash_password_into(passphrase.as_bytes(), salt, master.as_mut()).map_err(|e| KdfError(e.to_string()))?;
    Ok(DerivedKey {
        check: blake3::derive_key(contexts.check, master.as_ref()),
        key: Zeroizing::new(blake3::derive_key(contexts.key, master.as_ref())),
    })
}

/// A fresh random salt.
pub(crate) fn fresh_salt() -> [u8; SALT_LEN] {
    let mut salt = [0u8; SALT_LEN];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    salt
}

/// A fresh random nonce (192 bits: random nonces never repeat in practice).
pub(crate) fn fresh_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    nonce
}

/// `msg` sealed under `key` and `nonce`, bound to `aad`: ciphertext ‖ tag.
/// `None` only for a message beyond the cipher's limit (256 GiB).
pub(crate) fn seal(key: &[u8; 32], nonce: &[u8; NONCE_LEN], aad: &[u8], msg: &[u8]) -> Option<Vec<u8>> {
    XChaCha20Poly1305::new(key.into()).encrypt(XNonce::from_slice(nonce), Payload { msg, aad }).ok()
}

/// The plaintext of `sealed`, or `None` if it does not authenticate under
/// `key`, `nonce` and `aad`.
pub(crate) fn open(key: &[u8; 32], nonce: &[u8; NONCE_LEN], aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    XChaCha20Poly1305::new(key.into())
        .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
        .ok()
        .map(Zeroizing::new)
}

/// Equality of two checks without an early exit.
pub(crate) fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const CONTEXTS: Contexts = Contexts { check: "test check", key: "test key" };

    #[test]
    fn kdf_params_round_trip_and_an_unknown_kdf_is_refused() {
        let kdf = KdfParams { m_kib: 1024, t: 2, p: 3 };
        assert_eq!(KdfParams::from_bytes(&kdf.to_bytes()).unwrap(), kdf);
        let mut bytes = kdf.to_bytes();
        bytes[0] = 2;
        assert!(KdfParams::from_bytes(&bytes).is_err());
    }

    #[test]
    fn same_passphrase_same_key_and_another_passphrase_another_check() {
        let salt = fresh_salt();
        let a = derive("pw", KdfParams::insecure_fast(), &salt, CONTEXTS).unwrap();
        let b = derive("pw", KdfParams::insecure_fast(), &salt, CONTEXTS).unwrap();
        let c = derive("other", KdfParams::insecure_fast(), &salt, CONTEXTS).unwrap();
        assert!(constant_time_eq(&a.check, &b.check) && a.key == b.key);
        assert!(!constant_time_eq(&a.check, &c.check));
        assert_ne!(a.check, *a.key, "check and key come from different contexts");
    }

    #[test]
    fn seal_open_round_trip_and_a_changed_aad_is_refused() {
        let key = derive("pw", KdfParams::insecure_fast(), &fresh_salt(), CONTEXTS).unwrap();
        let nonce = fresh_nonce();
        let sealed = seal(&key.key, &nonce, b"aad", b"body").unwrap();
        assert_eq!(sealed.len(), 4 + TAG_LEN);
        assert_eq!(open(&key.key, &nonce, b"aad", &sealed).unwrap().as_slice(), b"body");
        assert!(open(&key.key, &nonce, b"aaD", &sealed).is_none());
    }

    #[test]
    fn oversized_kdf_parameters_are_refused() {
        let huge = KdfParams { m_kib: MAX_M_KIB + 1, t: 1, p: 1 };
        assert!(derive("pw", huge, &fresh_salt(), CONTEXTS).is_err());
    }
}
