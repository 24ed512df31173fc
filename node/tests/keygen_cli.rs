//! `nox keygen` as an operator runs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use nox_node::keys::NodeKeys;

fn nox(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nox")).args(args).output().expect("run nox")
}

#[test]
fn keygen_writes_private_files_and_prints_the_public_parts() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("k");
    let out = nox(&["keygen", "--dir", keys_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let loaded = NodeKeys::load(&keys_dir).unwrap();
    assert_eq!(v["node_id"], format!("0x{}", hex::encode(loaded.node_id())));
    assert_eq!(v["wallet_address"], loaded.wallet_address().to_string());
    for f in ["identity.key", "wallet.key"] {
        assert_eq!(std::fs::metadata(keys_dir.join(f)).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // A second run refuses to destroy the keys and says how to proceed.
    let again = nox(&["keygen", "--dir", keys_dir.to_str().unwrap()]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already exists") && err.contains("--force"), "{err}");
    assert_eq!(NodeKeys::load(&keys_dir).unwrap().node_id(), loaded.node_id());
}
