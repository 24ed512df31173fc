//! The development spend keys of a devnet.
//!
//! The deployed SpendVerifier is generated from
//! `nox_circuits::groth16::dev_setup(TREE_DEPTH)`, so every devnet uses those
//! keys: exits verify with `spend.vk`, clients prove with `spend.pk`. The
//! setup takes seconds, so it runs once per process ([`dev_keys`]) and each
//! devnet writes the result into its directory ([`write_dev_keys`]).

use std::path::Path;
use std::sync::OnceLock;

use nox_circuits::groth16::{Keys, dev_setup};
use nox_circuits::tree::TREE_DEPTH;

use crate::DevnetError;

/// The development keys for the pool's tree depth, made once per process.
pub fn dev_keys() -> Result<&'static Keys, DevnetError> {
    static KEYS: OnceLock<Result<Keys, String>> = OnceLock::new();
    KEYS.get_or_init(|| dev_setup(TREE_DEPTH).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| DevnetError::Zk(e.clone()))
}

/// Writes `spend.pk` and `spend.vk` of [`dev_keys`] into `dir`.
pub fn write_dev_keys(dir: &Path) -> Result<(), DevnetError> {
    dev_keys()?.write(dir).map_err(|e| DevnetError::Zk(e.to_string()))
}
