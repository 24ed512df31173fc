//! What a gas payment costs the user's device and the verifier.
//!
//! ```sh
//! cargo run --release -p nox-circuits --example prove_cost [-- --proofs N]
//! ```
//!
//! Builds a depth-20 tree position (a note at leaf 5 of a tree with other
//! leaves), sets up the spend circuit with the development setup (not timed),
//! then proves N spends (default 15) and verifies each proof 20 times with a
//! prepared verifying key. Prints
//! `constraints=<n> prove_ms=<median> verify_ms=<median>` and the spread.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use ark_bn254::Fr;
use ark_ff::UniformRand;
use nox_circuits::groth16::{constraint_count, dev_setup, prepare, prove, verify};
use nox_circuits::note::{Note, SpendingKey};
use nox_circuits::spend::{Spend, SpendCircuit};
use nox_circuits::tree::{MerkleTree, TREE_DEPTH};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let proofs: usize =
        args.iter().position(|a| a == "--proofs").and_then(|i| args.get(i + 1)).map_or(15, |v| v.parse().unwrap());
    let mut rng = ChaCha20Rng::seed_from_u64(2026);
    let t = Instant::now();
    let keys = dev_setup(TREE_DEPTH).unwrap();
    eprintln!("setup: {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    let pvk = prepare(keys.vk());

    let sk = SpendingKey::random(&mut rng);
    let asset = Fr::from(0u64);
    let mut tree = MerkleTree::new(TREE_DEPTH);
    let notes: Vec<Note> = (0..8).map(|i| Note::new(asset, 1_000 + i, sk.owner(), &mut rng)).collect();
    for n in &notes {
        tree.insert(n.commitment()).unwrap();
    }
    let (mut prove_ms, mut verify_ms) = (Vec::new(), Vec::new());
    for i in 0..proofs {
        let idx = (i % notes.len()) as u64;
        let note = notes[idx as usize];
        let spend = Spend {
            sk: sk.clone(),
            note,
            index: idx,
            path: tree.path(idx).unwrap(),
            public_value: 250,
            change: Note::new(asset, note.value - 250, sk.owner(), &mut rng),
            recipient: Fr::rand(&mut rng),
            execution_hash: Fr::rand(&mut rng),
        };
        let (public, witness) = spend.inputs(TREE_DEPTH).unwrap();
        let t = Instant::now();
        let proof = prove(&keys, SpendCircuit::new(TREE_DEPTH, public, witness), &mut rng).unwrap();
        prove_ms.push(t.elapsed().as_secs_f64() * 1e3);
        for _ in 0..20 {
            let t = Instant::now();
            assert!(verify(&pvk, &public, &proof));
            verify_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let (pmin, pmax) =
        (prove_ms.iter().copied().fold(f64::MAX, f64::min), prove_ms.iter().copied().fold(0.0, f64::max));
    eprintln!("prove: {proofs} proofs, {pmin:.0}–{pmax:.0} ms; verify: {} verifications", verify_ms.len());
    println!(
        "constraints={} prove_ms={:.0} verify_ms={:.2} depth={TREE_DEPTH} threads={}",
        constraint_count(TREE_DEPTH).unwrap(),
        median(prove_ms),
        median(verify_ms),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
}
