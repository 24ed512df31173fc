//! What inserting leaves with a proof instead of on-chain hashing would cost.
//! Measurement of an alternative design; NoxPool does not use it
//! (`docs/protocol.md`, "Insertion proven off-chain"; `nox_circuits::insert`).
//!
//! ```sh
//! cargo run --release -p nox-circuits --example insert_proof_cost [-- --proofs N] [--no-forge]
//! ```
//!
//! For batches of 8 and 32 leaves in the depth-20 tree (after 64 other
//! leaves): the seeded setup (timed once), N proofs of the same batch (default
//! 5) and 20 verifications of each with a prepared key. Writes the Solidity
//! verifier of each batch size to `contracts/test/bench/InsertVerifier<B>.sol`
//! and the first proof to `contracts/test/fixtures/insert_b<B>.json`
//! (deterministic: seeded setup and prover randomness), then runs
//! `forge test --match-contract InsertProofGasTest`, which verifies those
//! proofs on chain and logs the gas. Prints one line per batch size,
//! `batch=<B> constraints=<n> setup_ms=<t> prove_ms=<median> verify_ms=<median>`,
//! then forge's `insert_b<B> verify_gas=… calldata_gas=… per_leaf_gas=…` lines.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use ark_bn254::Fr;
use ark_ff::UniformRand;
use nox_circuits::insert::{Batch, dev_setup, fixture_json, prove, solidity_verifier, verify};
use nox_circuits::tree::{MerkleTree, TREE_DEPTH};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let proofs: usize =
        args.iter().position(|a| a == "--proofs").and_then(|i| args.get(i + 1)).map_or(5, |v| v.parse().unwrap());
    let run_forge = !args.iter().any(|a| a == "--no-forge");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace holds the crate");

    let mut lines = Vec::new();
    for batch in [8usize, 32] {
        let mut rng = ChaCha20Rng::seed_from_u64(2026);
        let mut tree = MerkleTree::new(TREE_DEPTH);
        for _ in 0..64 {
            tree.insert(Fr::rand(&mut rng)).unwrap();
        }
        let leaves: Vec<Fr> = (0..batch).map(|_| Fr::rand(&mut rng)).collect();
        let b = Batch::append(&tree, leaves).unwrap();

        let t = Instant::now();
        let keys = dev_setup(TREE_DEPTH, batch).unwrap();
        let setup_ms = ms(t);
        let pvk = ark_groth16::prepare_verifying_key(keys.vk());

        let (mut prove_ms, mut verify_ms, mut first) = (Vec::new(), Vec::new(), None);
        for _ in 0..proofs {
            let t = Instant::now();
            let proof = prove(&keys, &b, &mut rng).unwrap();
            prove_ms.push(ms(t));
            for _ in 0..20 {
                let t = Instant::now();
                assert!(verify(&pvk, &b.public, &proof));
                verify_ms.push(ms(t));
            }
            first.get_or_insert(proof);
        }
        let proof = first.expect("at least one proof");
        let verifier = root.join(format!("contracts/test/bench/InsertVerifier{batch}.sol"));
        std::fs::create_dir_all(verifier.parent().unwrap()).unwrap();
        std::fs::write(&verifier, solidity_verifier(keys.vk()).unwrap()).unwrap();
        let fixture = root.join(format!("contracts/test/fixtures/insert_b{batch}.json"));
        std::fs::write(&fixture, fixture_json(&b.public, &proof)).unwrap();
        eprintln!("wrote {} and {}", verifier.display(), fixture.display());

        let line = format!(
            "batch={batch} constraints={} setup_ms={setup_ms:.0} prove_ms={:.0} verify_ms={:.2} proofs={proofs} threads={}",
            keys.num_constraints(),
            median(prove_ms),
            median(verify_ms),
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        );
        println!("{line}");
        lines.push(line);
    }

    if run_forge {
        let out = Command::new(root.join("node_modules/.bin/forge"))
            .args(["test", "--match-contract", "InsertProofGasTest", "-vv"])
            .current_dir(root)
            .output();
        match out {
            Ok(out) if out.status.success() => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                for l in stdout.lines().map(str::trim).filter(|l| l.starts_with("insert_b")) {
                    println!("{l}");
                }
            }
            Ok(out) => eprintln!(
                "forge test failed; no gas figures:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("could not run forge ({e}); no gas figures"),
        }
    }
}
