//! The committed Solidity must be what the current keys and Poseidon
//! constants generate.

use std::path::Path;
use std::process::Command;

#[test]
fn committed_solidity_matches_the_current_keys_and_constants() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let out = Command::new(env!("CARGO_BIN_EXE_nox-zk"))
        .args(["generate", "--check", "--dir"])
        .arg(root.join("contracts/src/generated"))
        .output()
        .expect("running nox-zk");
    assert!(out.status.success(), "generated Solidity is stale:\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_stale_file_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_nox-zk")).args(args).arg(dir.path()).output().expect("running nox-zk")
    };
    assert!(run(&["generate", "--dir"]).status.success());
    assert!(run(&["generate", "--check", "--dir"]).status.success());
    let file = dir.path().join("SpendVerifier.sol");
    let text = std::fs::read_to_string(&file).expect("generated file");
    std::fs::write(&file, text.replace("IC3_X", "IC3_Z")).expect("write");
    let out = run(&["generate", "--check", "--dir"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SpendVerifier.sol differs"));
}

#[test]
fn tree_root_matches_the_library_and_rejects_bad_leaves() {
    let out = Command::new(env!("CARGO_BIN_EXE_nox-zk")).args(["tree-root", "0x01", "0x02"]).output().expect("run");
    assert!(out.status.success());
    let mut tree = nox_circuits::tree::MerkleTree::new(nox_circuits::tree::TREE_DEPTH);
    tree.insert(ark_bn254::Fr::from(1u64)).expect("insert");
    tree.insert(ark_bn254::Fr::from(2u64)).expect("insert");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), nox_circuits::field::to_hex(&tree.root()));
    let bad = Command::new(env!("CARGO_BIN_EXE_nox-zk")).args(["tree-root", "0xzz"]).output().expect("run");
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn committed_fixtures_are_what_the_generator_gives() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let out = Command::new(env!("CARGO_BIN_EXE_nox-zk"))
        .args(["fixtures", "--check", "--out"])
        .arg(root.join("contracts/test/fixtures/spend.json"))
        .output()
        .expect("running nox-zk");
    assert!(out.status.success(), "fixtures are stale:\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_arguments_are_refused_with_exit_code_2_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_nox-zk")).args(args).output().expect("running nox-zk");
    let d = dir.path().to_str().expect("utf-8 path");
    for args in [
        vec!["generate", "--chek", "--dir", d],
        vec!["generate", "--dir", "--check"],
        vec!["generate", "--dir"],
        vec!["keys"],
        vec!["fixtures", "--out"],
        vec!["tree-root", ""],
        vec!["tree-root", "0x0x05"],
        vec!["tree-root", "0x30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000001"],
        vec!["commitment", "0x1", "0x2"],
        vec!["frobnicate"],
        vec![],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage: nox-zk"), "{args:?}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0, "nothing written");
}
