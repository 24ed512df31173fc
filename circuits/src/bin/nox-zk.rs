//! `nox-zk`: the shielded pool's tooling.
//!
//! ```text
//! nox-zk generate [--check] [--dir contracts/src/generated]
//!     write (or, with --check, compare) SpendVerifier.sol, PoseidonT3.sol,
//!     PoseidonT4.sol and NoxTree.sol from the development keys, the Poseidon
//!     constants and the tree's shape
//! nox-zk keys --dir DIR
//!     write the development proving and verifying keys (spend.pk, spend.vk)
//! nox-zk tree-root [LEAF ...]
//!     the depth-20 tree root after inserting the leaves (hex), in order
//! nox-zk fixtures [--check] [--out contracts/test/fixtures/spend.json]
//!     write (or compare) the deposits, roots and proofs of the forge tests
//! ```
//!
//! Exit codes: 0 done, 1 `--check` found a difference, 2 bad arguments or
//! input, 3 I/O or proving failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nox_circuits::groth16::dev_setup;
use nox_circuits::poseidon::{fr_from_hex, fr_to_hex};
use nox_circuits::solidity::{poseidon_library, tree_constants, verifier};
use nox_circuits::tree::{MerkleTree, TREE_DEPTH};

fn usage() -> ExitCode {
    eprintln!(
        "usage: nox-zk generate [--check] [--dir DIR] | keys --dir DIR | tree-root [LEAF ...] | fixtures [--check] [--out FILE]"
    );
    ExitCode::from(2)
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

/// The generated files: name and contents.
fn generated() -> Result<Vec<(&'static str, String)>, String> {
    let keys = dev_setup(TREE_DEPTH).map_err(|e| e.to_string())?;
    Ok(vec![
        ("SpendVerifier.sol", verifier(&keys.vk)),
        ("PoseidonT3.sol", poseidon_library(3)),
        ("PoseidonT4.sol", poseidon_library(4)),
        ("NoxTree.sol", tree_constants()),
    ])
}

fn generate(dir: &Path, check: bool) -> ExitCode {
    let files = match generated() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("nox-zk: {e}");
            return ExitCode::from(3);
        }
    };
    let mut stale = false;
    for (name, text) in files {
        let path = dir.join(name);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                eprintln!("{} differs from what the current keys and constants give", path.display());
                stale = true;
            }
        } else if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, text)) {
            eprintln!("nox-zk: {}: {e}", path.display());
            return ExitCode::from(3);
        }
    }
    if stale {
        eprintln!("run `cargo run -p nox-circuits --bin nox-zk -- generate` and commit the result");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn tree_root(leaves: &[String]) -> ExitCode {
    let mut tree = MerkleTree::new(TREE_DEPTH);
    for l in leaves {
        let Some(leaf) = fr_from_hex(l) else {
            eprintln!("nox-zk: {l:?} is not a field element in hex");
            return ExitCode::from(2);
        };
        if let Err(e) = tree.insert(leaf) {
            eprintln!("nox-zk: {e}");
            return ExitCode::from(2);
        }
    }
    println!("{}", fr_to_hex(&tree.root()));
    ExitCode::SUCCESS
}

fn fixtures(out: &Path, check: bool) -> ExitCode {
    let text = match dev_setup(TREE_DEPTH).and_then(|k| nox_circuits::fixtures::generate_text(&k)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("nox-zk: {e}");
            return ExitCode::from(3);
        }
    };
    if check {
        if std::fs::read_to_string(out).ok().as_deref() == Some(text.as_str()) {
            return ExitCode::SUCCESS;
        }
        eprintln!("{} differs from what the current keys give; run `nox-zk fixtures`", out.display());
        return ExitCode::from(1);
    }
    let written = out.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(out, text));
    if let Err(e) = written {
        eprintln!("nox-zk: {}: {e}", out.display());
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("generate") => {
            let dir = flag(&args, "--dir").map_or_else(|| PathBuf::from("contracts/src/generated"), PathBuf::from);
            generate(&dir, args.iter().any(|a| a == "--check"))
        }
        Some("keys") => {
            let Some(dir) = flag(&args, "--dir") else { return usage() };
            match dev_setup(TREE_DEPTH).and_then(|k| k.write(Path::new(&dir))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("nox-zk: {e}");
                    ExitCode::from(3)
                }
            }
        }
        Some("tree-root") => tree_root(&args[1..]),
        Some("fixtures") => {
            let out =
                flag(&args, "--out").map_or_else(|| PathBuf::from("contracts/test/fixtures/spend.json"), PathBuf::from);
            fixtures(&out, args.iter().any(|a| a == "--check"))
        }
        _ => usage(),
    }
}
