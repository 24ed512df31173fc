//! The node's long-lived keys and their files.
//!
//! * **Identity key** — Ed25519. Its 32-byte public key is the node's id: the
//!   value routing blocks carry as the next hop, the `identityKey` registered in
//!   NoxRegistry, and the key of the node's libp2p identity. It signs the node's
//!   epoch-key descriptors.
//! * **Wallet key** — secp256k1. The operator's Ethereum account: it stakes,
//!   registers, and (for exits) submits transactions.
//!
//! Both files hold the 32 secret bytes as one line of lowercase hex. They are
//! created with mode 0600 inside a directory with mode 0700, never overwritten
//! unless the caller asks, and refused on load if group or others can read them.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use alloy_primitives::Address;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

/// File name of the identity key inside the key directory.
pub const IDENTITY_FILE: &str = "identity.key";
/// File name of the wallet key inside the key directory.
pub const WALLET_FILE: &str = "wallet.key";

/// Key file errors; each names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file exists and overwriting was not requested.
    #[error("{0} already exists; pass --force to replace it (the old key is lost)")]
    Exists(PathBuf),
    /// Reading, writing or creating failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file is readable by group or others.
    #[error("{path} has mode {mode:o}; a key file must not be readable by group or others (chmod 600)")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// The content is not 32 bytes of hex.
    #[error("{0} does not hold a key: expected one line of 64 hex characters")]
    Malformed(PathBuf),
    /// The bytes are not a valid secp256k1 secret (zero or ≥ the group order).
    #[error("{0} holds an invalid secp256k1 secret key")]
    InvalidWalletKey(PathBuf),
}

/// The node's keys, loaded. Both key types zeroize their secrets on drop.
#[derive(Clone)]
pub struct NodeKeys {
    /// Ed25519 identity.
    pub identity: ed25519_dalek::SigningKey,
    /// secp256k1 wallet.
    pub wallet: k256::ecdsa::SigningKey,
}

impl std::fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKeys")
            .field("node_id", &hex::encode(self.node_id()))
            .field("wallet", &self.wallet_address())
            .finish()
    }
}

impl NodeKeys {
    /// Fresh keys from a cryptographically secure generator.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        NodeKeys { identity: ed25519_dalek::SigningKey::generate(rng), wallet: k256::ecdsa::SigningKey::random(rng) }
    }

    /// The node id: the identity's Ed25519 public key.
    pub fn node_id(&self) -> [u8; 32] {
        self.identity.verifying_key().to_bytes()
    }

    /// The wallet's Ethereum address.
    pub fn wallet_address(&self) -> Address {
        wallet_address(&self.wallet)
    }

    /// The operator these keys make in NoxRegistry: the wallet signs and
    /// holds the stake, the identity's public key is the registered node id.
    pub fn operator(&self) -> nox_eth::registry::operator::Operator {
        nox_eth::registry::operator::Operator {
            wallet: alloy::signers::local::PrivateKeySigner::from_signing_key(self.wallet.clone()),
            node_id: alloy_primitives::B256::from(self.node_id()),
        }
    }

    /// Writes both keys into `dir` (created with mode 0700 if missing), each file
    /// with mode 0600. Refuses to replace existing files unless `force`.
    pub fn write(&self, dir: &Path, force: bool) -> Result<(), KeyError> {
        create_private_dir(dir)?;
        let identity = Zeroizing::new(hex::encode(self.identity.to_bytes()));
        let wallet = Zeroizing::new(hex::encode(self.wallet.to_bytes()));
        let (id_path, wallet_path) = (dir.join(IDENTITY_FILE), dir.join(WALLET_FILE));
        if !force {
            for p in [&id_path, &wallet_path] {
                if p.exists() {
                    return Err(KeyError::Exists(p.clone()));
                }
            }
        }
        write_private(&id_path, &identity)?;
        write_private(&wallet_path, &wallet)?;
        Ok(())
    }

    /// Loads both keys from `dir`, checking their permissions.
    pub fn load(dir: &Path) -> Result<Self, KeyError> {
        let id_path = dir.join(IDENTITY_FILE);
        let wallet_path = dir.join(WALLET_FILE);
        let identity = ed25519_dalek::SigningKey::from_bytes(&*read_secret(&id_path)?);
        let wallet = k256::ecdsa::SigningKey::from_bytes((&*read_secret(&wallet_path)?).into())
            .map_err(|_| KeyError::InvalidWalletKey(wallet_path.clone()))?;
        Ok(NodeKeys { identity, wallet })
    }
}

/// The Ethereum address of a secp256k1 key: the last 20 bytes of the keccak256
/// of the uncompressed public key without its 0x04 prefix.
pub fn wallet_address(key: &k256::ecdsa::SigningKey) -> Address {
    let point = key.verifying_key().to_encoded_point(false);
    Address::from_raw_public_key(&point.as_bytes()[1..])
}

fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(|source| KeyError::Io { path: dir.to_owned(), source })?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|source| KeyError::Io { path: dir.to_owned(), source })?;
    }
    Ok(())
}

fn write_private(path: &Path, content: &str) -> Result<(), KeyError> {
    let io = |source| KeyError::Io { path: path.to_owned(), source };
    // Write a fresh 0600 file next to the target, then rename it into place, so a
    // crash never leaves a truncated key behind.
    let tmp = path.with_extension("key.tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
    f.write_all(content.as_bytes()).and_then(|()| f.write_all(b"\n")).and_then(|()| f.sync_all()).map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

fn read_secret(path: &Path) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let io = |source| KeyError::Io { path: path.to_owned(), source };
    let mode = fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions { path: path.to_owned(), mode: mode & 0o777 });
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(io)?);
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), &mut out[..]).map_err(|_| KeyError::Malformed(path.to_owned()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_load_round_trip_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("keys");
        let keys = NodeKeys::generate(&mut rand_core::OsRng);
        keys.write(&keys_dir, false).unwrap();
        for f in [IDENTITY_FILE, WALLET_FILE] {
            let mode = fs::metadata(keys_dir.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        assert_eq!(fs::metadata(&keys_dir).unwrap().permissions().mode() & 0o777, 0o700);
        let loaded = NodeKeys::load(&keys_dir).unwrap();
        assert_eq!(loaded.node_id(), keys.node_id());
        assert_eq!(loaded.wallet_address(), keys.wallet_address());
    }

    #[test]
    fn refuses_overwrite_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let a = NodeKeys::generate(&mut rand_core::OsRng);
        let b = NodeKeys::generate(&mut rand_core::OsRng);
        a.write(dir.path(), false).unwrap();
        assert!(matches!(b.write(dir.path(), false), Err(KeyError::Exists(_))));
        assert_eq!(NodeKeys::load(dir.path()).unwrap().node_id(), a.node_id(), "the old key survives");
        b.write(dir.path(), true).unwrap();
        assert_eq!(NodeKeys::load(dir.path()).unwrap().node_id(), b.node_id());
    }

    #[test]
    fn bad_files_get_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let keys = NodeKeys::generate(&mut rand_core::OsRng);
        keys.write(dir.path(), false).unwrap();
        let id = dir.path().join(IDENTITY_FILE);
        fs::set_permissions(&id, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(NodeKeys::load(dir.path()), Err(KeyError::Permissions { mode: 0o644, .. })));
        fs::set_permissions(&id, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&id, "not hex\n").unwrap();
        assert!(matches!(NodeKeys::load(dir.path()), Err(KeyError::Malformed(_))));
        keys.write(dir.path(), true).unwrap();
        fs::write(dir.path().join(WALLET_FILE), format!("{}\n", "00".repeat(32))).unwrap();
        assert!(matches!(NodeKeys::load(dir.path()), Err(KeyError::InvalidWalletKey(_))));
        assert!(matches!(NodeKeys::load(&dir.path().join("missing")), Err(KeyError::Io { .. })));
    }

    #[test]
    fn wallet_address_matches_a_known_vector() {
        // anvil's first development account.
        let secret = hex::decode("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80").unwrap();
        let key = k256::ecdsa::SigningKey::from_slice(&secret).unwrap();
        assert_eq!(wallet_address(&key), "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266".parse::<Address>().unwrap());
    }
}
