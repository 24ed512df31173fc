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
//! nox-zk commitment ASSET VALUE SECRET
//!     Poseidon(asset, value, secret), the commitment a deposit makes (hex in,
//!     hex out)
//! nox-zk poseidon A B [C]
//!     Poseidon of two or three field elements (hex in, hex out), the reference
//!     the Solidity PoseidonT3 and PoseidonT4 are tested against
//! nox-zk fixtures [--check] [--out contracts/test/fixtures/spend.json]
//!     write (or compare) the deposits, roots and proofs of the forge tests
//! ```
//!
//! Exit codes: 0 done, 1 `--check` found a difference, 2 bad arguments or
//! input, 3 I/O or proving failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ark_bn254::Fr;
use nox_circuits::field::{from_hex, to_hex};
use nox_circuits::groth16::dev_setup;
use nox_circuits::solidity::{poseidon_library, tree_constants, verifier};
use nox_circuits::tree::{MerkleTree, TREE_DEPTH};

const USAGE: &str = "usage: nox-zk generate [--check] [--dir DIR] | keys --dir DIR | tree-root [LEAF ...] \
                     | commitment ASSET VALUE SECRET | poseidon A B [C] | fixtures [--check] [--out FILE]";

/// What went wrong, and the exit code it gets.
enum Failure {
    /// Bad arguments or input (2).
    Usage(String),
    /// `--check` found a difference (1).
    Stale(String),
    /// I/O or proving (3).
    Failed(String),
}

/// The flags of a subcommand: `--check` and one path option, nothing else.
struct Flags {
    check: bool,
    path: Option<PathBuf>,
}

fn parse_flags(args: &[String], path_flag: &str, check_allowed: bool) -> Result<Flags, Failure> {
    let mut flags = Flags { check: false, path: None };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--check" if check_allowed => flags.check = true,
            f if f == path_flag => match it.next() {
                Some(v) if !v.starts_with("--") => flags.path = Some(PathBuf::from(v)),
                _ => return Err(Failure::Usage(format!("{path_flag} needs a path"))),
            },
            other => return Err(Failure::Usage(format!("unexpected argument {other:?}"))),
        }
    }
    Ok(flags)
}

/// The generated files: name and contents.
fn generated() -> Result<Vec<(&'static str, String)>, Failure> {
    let keys = dev_setup(TREE_DEPTH).map_err(|e| Failure::Failed(e.to_string()))?;
    Ok(vec![
        ("SpendVerifier.sol", verifier(keys.vk())),
        ("PoseidonT3.sol", poseidon_library(3)),
        ("PoseidonT4.sol", poseidon_library(4)),
        ("NoxTree.sol", tree_constants()),
    ])
}

/// Writes `text` to `path`, or with `check` compares it.
fn write_or_check(path: &Path, text: &str, check: bool) -> Result<(), Failure> {
    if check {
        return if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
            Ok(())
        } else {
            Err(Failure::Stale(format!("{} differs from what the current keys and constants give", path.display())))
        };
    }
    path.parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, text))
        .map_err(|e| Failure::Failed(format!("{}: {e}", path.display())))
}

fn generate(dir: &Path, check: bool) -> Result<(), Failure> {
    let mut stale = Vec::new();
    for (name, text) in generated()? {
        match write_or_check(&dir.join(name), &text, check) {
            Err(Failure::Stale(msg)) => stale.push(msg),
            other => other?,
        }
    }
    if stale.is_empty() { Ok(()) } else { Err(Failure::Stale(stale.join("\n"))) }
}

fn field(s: &str) -> Result<Fr, Failure> {
    from_hex::<Fr>(s).ok_or_else(|| Failure::Usage(format!("{s:?} is not a field element in hex")))
}

fn tree_root(leaves: &[String]) -> Result<(), Failure> {
    let mut tree = MerkleTree::new(TREE_DEPTH);
    for l in leaves {
        tree.insert(field(l)?).map_err(|e| Failure::Usage(e.to_string()))?;
    }
    println!("{}", to_hex(&tree.root()));
    Ok(())
}

/// Prints Poseidon of two or three hex inputs.
fn poseidon(inputs: &[String]) -> Result<(), Failure> {
    if !(2..=3).contains(&inputs.len()) {
        return Err(Failure::Usage("poseidon takes two or three inputs".into()));
    }
    let inputs = inputs.iter().map(|s| field(s)).collect::<Result<Vec<Fr>, Failure>>()?;
    let h = nox_circuits::poseidon::hash(&inputs).map_err(|e| Failure::Usage(e.to_string()))?;
    println!("{}", to_hex(&h));
    Ok(())
}

fn fixtures(out: &Path, check: bool) -> Result<(), Failure> {
    let keys = dev_setup(TREE_DEPTH).map_err(|e| Failure::Failed(e.to_string()))?;
    let text = nox_circuits::fixtures::generate_text(&keys).map_err(|e| Failure::Failed(e.to_string()))?;
    write_or_check(out, &text, check)
}

fn run(args: &[String]) -> Result<(), Failure> {
    let Some((command, rest)) = args.split_first() else { return Err(Failure::Usage("no command".into())) };
    match command.as_str() {
        "generate" => {
            let f = parse_flags(rest, "--dir", true)?;
            generate(&f.path.unwrap_or_else(|| PathBuf::from("contracts/src/generated")), f.check)
        }
        "keys" => {
            let dir =
                parse_flags(rest, "--dir", false)?.path.ok_or_else(|| Failure::Usage("keys needs --dir".into()))?;
            dev_setup(TREE_DEPTH).and_then(|k| k.write(&dir)).map_err(|e| Failure::Failed(e.to_string()))
        }
        "tree-root" => tree_root(rest),
        "commitment" => match rest {
            [asset, value, secret] => {
                let c = nox_circuits::note::commitment_from_secret(field(asset)?, field(value)?, field(secret)?);
                println!("{}", to_hex(&c));
                Ok(())
            }
            _ => Err(Failure::Usage("commitment takes ASSET VALUE SECRET".into())),
        },
        "poseidon" => poseidon(rest),
        "fixtures" => {
            let f = parse_flags(rest, "--out", true)?;
            fixtures(&f.path.unwrap_or_else(|| PathBuf::from("contracts/test/fixtures/spend.json")), f.check)
        }
        other => Err(Failure::Usage(format!("unknown command {other:?}"))),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("nox-zk: {msg}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Stale(msg)) => {
            eprintln!(
                "{msg}\nrun `cargo run -p nox-circuits --bin nox-zk -- generate` (or `fixtures`) and commit the result"
            );
            ExitCode::from(1)
        }
        Err(Failure::Failed(msg)) => {
            eprintln!("nox-zk: {msg}");
            ExitCode::from(3)
        }
    }
}
