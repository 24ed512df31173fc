//! Batch insertion proven off-chain. **Measurement of an alternative design;
//! `NoxPool` does not use it** (the figures: `docs/protocol.md`, "Insertion proven
//! off-chain").
//!
//! `NoxPool` inserts note commitments by hashing on chain. The alternative
//! measured here: whoever flushes proves, with Groth16, that appending a batch
//! of `B = 2^k` leaves moves the tree from `old_root` to `new_root`, and the
//! contract verifies one proof per batch instead of hashing.
//!
//! Public inputs, in this order ([`BatchPublic::to_vec`]): `old_root`,
//! `new_root`, `start` (the first leaf's index), then the `B` leaves. The
//! private input is the path of the batch's subtree: its `depth - k`
//! siblings, from height `k` up. A valid proof shows:
//!
//! * `start = B · slot` with `slot < 2^(depth - k)`: the batch fills exactly
//!   one subtree of height `k`, inside the tree;
//! * that subtree was empty: `zeros[k]` at `slot` with the path gives
//!   `old_root`;
//! * the leaves hash, pairwise and level by level as in
//!   [`crate::tree::MerkleTree`], to a subtree root that at `slot` with the
//!   same path gives `new_root`.
//!
//! The same path serves both roots because appending fills only the subtree:
//! every sibling on its way to the root lies outside it. What a contract
//! would still check itself: `old_root` is its current root, `start` its next
//! free index (so insertion stays append-only), and the leaves are the
//! commitments waiting to be inserted.
//!
//! Every part has a native twin ([`subtree_root`] ↔ [`subtree_root_gadget`],
//! [`batch_roots`] ↔ the circuit), and the tests check the roots against a
//! [`MerkleTree`] that inserts the same leaves one by one. The keys come from
//! a seeded, public setup ([`DEV_SETUP_SEED`]): anyone can forge proofs.

use std::fmt::Write;
use std::sync::Arc;

use ark_bn254::{Bn254, Fr};
use ark_ff::{Field, UniformRand, Zero};
use ark_groth16::r1cs_to_qap::LibsnarkReduction;
use ark_groth16::{Groth16, PreparedVerifyingKey, Proof, ProvingKey, VerifyingKey};
use ark_r1cs_std::eq::EqGadget;
use ark_r1cs_std::fields::FieldVar;
use ark_r1cs_std::fields::fp::FpVar;
use ark_r1cs_std::prelude::AllocVar;
use ark_relations::r1cs::{
    ConstraintMatrices, ConstraintSynthesizer, ConstraintSystem, ConstraintSystemRef, OptimizationGoal, SynthesisError,
    SynthesisMode,
};
use ark_snark::SNARK;
use rand::{CryptoRng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::field::to_hex;
use crate::gadgets::{merkle_root, poseidon, range_check};
use crate::poseidon::hash2;
use crate::solidity::{BASE_MODULUS, SCALAR_MODULUS};
use crate::tree::{MerkleTree, root_from_path, zeros};

/// Seed of this measurement's setup. Public on purpose: not a trusted setup.
pub const DEV_SETUP_SEED: [u8; 32] = *b"NOX insert measurement NOT SAFE!";

/// Number of public inputs besides the leaves: old root, new root, start.
pub const FIXED_PUBLIC_INPUTS: usize = 3;

/// Errors of batch insertion.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    /// The batch size is not a power of two, or the tree cannot hold it.
    #[error("a batch of {batch} leaves does not fit a tree of depth {depth} (a power of two up to 2^depth)")]
    BadBatchSize {
        /// Leaves in the batch.
        batch: usize,
        /// Tree depth.
        depth: usize,
    },
    /// The tree's next free index is not a multiple of the batch size.
    #[error("the next leaf index {next} is not a multiple of the batch size {batch}")]
    NotAligned {
        /// The tree's next free index.
        next: u64,
        /// Leaves in the batch.
        batch: usize,
    },
    /// The batch does not fit in the tree's remaining leaves.
    #[error("a batch of {batch} leaves at index {next} overflows the tree of depth {depth}")]
    TreeFull {
        /// The tree's next free index.
        next: u64,
        /// Leaves in the batch.
        batch: usize,
        /// Tree depth.
        depth: usize,
    },
    /// A verifying key with this many public inputs is not an insertion key
    /// (three, then a power of two of leaves).
    #[error("a verifying key with {inputs} public inputs is not for the insertion circuit")]
    NotInsertKey {
        /// Its public inputs.
        inputs: usize,
    },
    /// The batch is for another circuit than the keys'.
    #[error(
        "a batch of {batch} leaves in a tree of depth {depth} for keys of {key_batch} leaves and depth {key_depth}"
    )]
    WrongShape {
        /// The batch's size.
        batch: usize,
        /// The batch's tree depth.
        depth: usize,
        /// The keys' batch size.
        key_batch: usize,
        /// The keys' tree depth.
        key_depth: usize,
    },
    /// The witness does not satisfy the circuit: no valid proof exists.
    #[error("the batch does not satisfy the insertion circuit")]
    Unsatisfied,
    /// Synthesis, setup or proving failed.
    #[error("proof system: {0}")]
    Snark(String),
}

fn snark<E: std::fmt::Display>(e: E) -> InsertError {
    InsertError::Snark(e.to_string())
}

/// `log2(batch)` if `batch` is a power of two no larger than `2^depth`.
fn batch_log(batch: usize, depth: usize) -> Result<usize, InsertError> {
    let log = batch.trailing_zeros() as usize;
    if !batch.is_power_of_two() || log > depth || depth > 63 {
        return Err(InsertError::BadBatchSize { batch, depth });
    }
    Ok(log)
}

/// The root of the subtree whose leaves are `leaves` (a power of two of
/// them), hashed pairwise level by level as the tree does. Twin of
/// [`subtree_root_gadget`].
pub fn subtree_root(leaves: &[Fr]) -> Fr {
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = level.chunks(2).map(|pair| hash2(pair[0], pair.get(1).copied().unwrap_or_default())).collect();
    }
    level.first().copied().unwrap_or_default()
}

/// [`subtree_root`] in the circuit: `B - 1` Poseidon.
pub fn subtree_root_gadget(leaves: &[FpVar<Fr>]) -> Result<FpVar<Fr>, SynthesisError> {
    if !leaves.len().is_power_of_two() {
        return Err(SynthesisError::Unsatisfiable);
    }
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = level.chunks(2).map(poseidon).collect::<Result<_, _>>()?;
    }
    level.pop().ok_or(SynthesisError::Unsatisfiable)
}

/// The roots before and after filling the subtree at `start` with `leaves`,
/// given the subtree's `path` (siblings from height `log2(leaves.len())`
/// up). Native twin of the circuit.
pub fn batch_roots(start: u64, leaves: &[Fr], path: &[Fr]) -> (Fr, Fr) {
    let k = leaves.len().trailing_zeros() as usize;
    let slot = start >> k;
    let empty = zeros(k)[k];
    (root_from_path(empty, slot, path), root_from_path(subtree_root(leaves), slot, path))
}

/// The public inputs of a batch insertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPublic {
    /// The root before the batch.
    pub old_root: Fr,
    /// The root after it.
    pub new_root: Fr,
    /// Index of the batch's first leaf.
    pub start: u64,
    /// The leaves, in index order.
    pub leaves: Vec<Fr>,
}

impl BatchPublic {
    /// In the circuit's order.
    pub fn to_vec(&self) -> Vec<Fr> {
        let mut v = vec![self.old_root, self.new_root, Fr::from(self.start)];
        v.extend_from_slice(&self.leaves);
        v
    }
}

/// A batch with everything its proof needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Tree depth.
    pub depth: usize,
    /// Public inputs.
    pub public: BatchPublic,
    /// Siblings of the batch's subtree, from its height up (private).
    pub path: Vec<Fr>,
}

impl Batch {
    /// The batch that appends `leaves` to `tree` at its next free index,
    /// which must be a multiple of `leaves.len()`. Clones the tree to read the
    /// subtree's path; the roots are then computed from that path alone.
    pub fn append(tree: &MerkleTree, leaves: Vec<Fr>) -> Result<Self, InsertError> {
        let depth = tree.depth();
        let k = batch_log(leaves.len(), depth)?;
        let next = tree.len();
        if !next.is_multiple_of(leaves.len() as u64) {
            return Err(InsertError::NotAligned { next, batch: leaves.len() });
        }
        let full = || InsertError::TreeFull { next, batch: leaves.len(), depth };
        if next + leaves.len() as u64 > 1u64 << depth {
            return Err(full());
        }
        let mut after = tree.clone();
        for leaf in &leaves {
            after.insert(*leaf).map_err(|_| full())?;
        }
        let path = after.path(next).map_err(|_| full())?.split_off(k);
        let (old_root, new_root) = batch_roots(next, &leaves, &path);
        Ok(Batch { depth, public: BatchPublic { old_root, new_root, start: next, leaves }, path })
    }
}

/// The batch-insertion circuit for batches of `2^batch_log` leaves in a tree
/// of `depth`.
#[derive(Debug, Clone)]
pub struct BatchInsertCircuit {
    depth: usize,
    batch_log: usize,
    public: Option<BatchPublic>,
    path: Option<Vec<Fr>>,
}

impl BatchInsertCircuit {
    /// The circuit with `batch`'s values.
    pub fn new(batch: &Batch) -> Result<Self, InsertError> {
        let batch_log = batch_log(batch.public.leaves.len(), batch.depth)?;
        Ok(BatchInsertCircuit {
            depth: batch.depth,
            batch_log,
            public: Some(batch.public.clone()),
            path: Some(batch.path.clone()),
        })
    }

    /// The circuit without values, for the setup.
    pub fn blank(depth: usize, batch: usize) -> Result<Self, InsertError> {
        Ok(BatchInsertCircuit { depth, batch_log: batch_log(batch, depth)?, public: None, path: None })
    }
}

impl ConstraintSynthesizer<Fr> for BatchInsertCircuit {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        let (k, levels) = (self.batch_log, self.depth - self.batch_log);
        let p = self.public.as_ref();
        let input = |v: Option<Fr>| FpVar::new_input(cs.clone(), || v.ok_or(SynthesisError::AssignmentMissing));
        let old_root = input(p.map(|p| p.old_root))?;
        let new_root = input(p.map(|p| p.new_root))?;
        let start = input(p.map(|p| Fr::from(p.start)))?;
        let leaves = (0..1usize << k)
            .map(|i| input(p.map(|p| p.leaves.get(i).copied().unwrap_or_default())))
            .collect::<Result<Vec<_>, _>>()?;
        let path = (0..levels)
            .map(|h| {
                FpVar::new_witness(cs.clone(), || {
                    self.path
                        .as_ref()
                        .map(|p| p.get(h).copied().unwrap_or_default())
                        .ok_or(SynthesisError::AssignmentMissing)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        // start / B fits in the levels above the subtree: only a multiple of
        // B inside the tree passes (anything else divides to a huge element).
        let b_inverse = Fr::from(1u64 << k).inverse().ok_or(SynthesisError::Unsatisfiable)?;
        let slot_bits = range_check(&(&start * FpVar::constant(b_inverse)), levels)?;

        // The slot was empty under the old root.
        let empty = FpVar::constant(zeros(k)[k]);
        merkle_root(&empty, &slot_bits, &path)?.enforce_equal(&old_root)?;
        // The leaves fill it under the new root.
        let subtree = subtree_root_gadget(&leaves)?;
        merkle_root(&subtree, &slot_bits, &path)?.enforce_equal(&new_root)?;
        Ok(())
    }
}

/// Proving key and the circuit's constraint matrices for one batch size.
#[derive(Clone)]
pub struct InsertKeys {
    /// Proving key (its `vk` is the verifying key).
    pub pk: ProvingKey<Bn254>,
    depth: usize,
    batch: usize,
    matrices: Arc<ConstraintMatrices<Fr>>,
}

impl std::fmt::Debug for InsertKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InsertKeys").field("depth", &self.depth).field("batch", &self.batch).finish_non_exhaustive()
    }
}

impl InsertKeys {
    /// The verifying key.
    pub fn vk(&self) -> &VerifyingKey<Bn254> {
        &self.pk.vk
    }

    /// Constraints of the circuit.
    pub fn num_constraints(&self) -> usize {
        self.matrices.num_constraints
    }

    /// Leaves per batch.
    pub fn batch(&self) -> usize {
        self.batch
    }
}

/// Setup for batches of `batch` leaves in trees of `depth`.
pub fn setup<R: RngCore + CryptoRng>(depth: usize, batch: usize, rng: &mut R) -> Result<InsertKeys, InsertError> {
    let (pk, _) =
        Groth16::<Bn254>::circuit_specific_setup(BatchInsertCircuit::blank(depth, batch)?, rng).map_err(snark)?;
    let cs = ConstraintSystem::<Fr>::new_ref();
    cs.set_optimization_goal(OptimizationGoal::Constraints);
    cs.set_mode(SynthesisMode::Setup);
    BatchInsertCircuit::blank(depth, batch)?.generate_constraints(cs.clone()).map_err(snark)?;
    cs.finalize();
    let matrices = cs.to_matrices().ok_or_else(|| InsertError::Snark("no constraint matrices".into()))?;
    Ok(InsertKeys { pk, depth, batch, matrices: Arc::new(matrices) })
}

/// The setup from [`DEV_SETUP_SEED`] (not secure: see the module docs).
pub fn dev_setup(depth: usize, batch: usize) -> Result<InsertKeys, InsertError> {
    setup(depth, batch, &mut ChaCha20Rng::from_seed(DEV_SETUP_SEED))
}

/// Proves `batch`: computes the witness, checks it against the keys'
/// matrices (a bad batch is [`InsertError::Unsatisfied`], not a proof that
/// fails to verify), then proves.
pub fn prove<R: RngCore + CryptoRng>(
    keys: &InsertKeys,
    batch: &Batch,
    rng: &mut R,
) -> Result<Proof<Bn254>, InsertError> {
    if batch.depth != keys.depth || batch.public.leaves.len() != keys.batch {
        return Err(InsertError::WrongShape {
            batch: batch.public.leaves.len(),
            depth: batch.depth,
            key_batch: keys.batch,
            key_depth: keys.depth,
        });
    }
    let cs = ConstraintSystem::<Fr>::new_ref();
    cs.set_optimization_goal(OptimizationGoal::Constraints);
    cs.set_mode(SynthesisMode::Prove { construct_matrices: false });
    BatchInsertCircuit::new(batch)?.generate_constraints(cs.clone()).map_err(snark)?;
    cs.finalize();
    let m = &*keys.matrices;
    let z: Vec<Fr> = {
        let cs = cs.borrow().ok_or_else(|| InsertError::Snark("constraint system in use".into()))?;
        cs.instance_assignment.iter().chain(&cs.witness_assignment).copied().collect()
    };
    if z.len() != m.num_instance_variables + m.num_witness_variables {
        return Err(InsertError::Snark("the witness does not match the keys' circuit".into()));
    }
    let row = |r: &[(Fr, usize)]| r.iter().fold(Fr::zero(), |acc, (c, i)| acc + *c * z[*i]);
    if !m.a.iter().zip(&m.b).zip(&m.c).all(|((a, b), c)| row(a) * row(b) == row(c)) {
        return Err(InsertError::Unsatisfied);
    }
    let (r, s) = (Fr::rand(rng), Fr::rand(rng));
    Groth16::<Bn254, LibsnarkReduction>::create_proof_with_reduction_and_matrices(
        &keys.pk,
        r,
        s,
        m,
        m.num_instance_variables,
        m.num_constraints,
        &z,
    )
    .map_err(snark)
}

/// Whether `proof` proves the batch insertion `public`.
pub fn verify(pvk: &PreparedVerifyingKey<Bn254>, public: &BatchPublic, proof: &Proof<Bn254>) -> bool {
    Groth16::<Bn254>::verify_with_processed_vk(pvk, &public.to_vec(), proof).unwrap_or(false)
}

/// A Solidity library `InsertVerifier<B>` that verifies this circuit's
/// proofs for `vk` (`verify(uint256[8] calldata proof, uint256[3 + B]
/// calldata input)`). Unlike the spend verifier it multiplies every input,
/// zero or not, so that its gas is the figure for any batch. The output is
/// `forge fmt` clean.
pub fn solidity_verifier(vk: &VerifyingKey<Bn254>) -> Result<String, InsertError> {
    let n = vk.gamma_abc_g1.len().saturating_sub(1);
    let b = n.saturating_sub(FIXED_PUBLIC_INPUTS);
    if !b.is_power_of_two() || n != b + FIXED_PUBLIC_INPUTS {
        return Err(InsertError::NotInsertKey { inputs: n });
    }
    let mut s = String::new();
    let _ = write!(
        s,
        r#"// SPDX-License-Identifier: MIT
// Generated by nox-circuits (`cargo run --release -p nox-circuits --example insert_proof_cost`). Do not edit.
// Measurement of an alternative design; NoxPool does not use it.
pragma solidity 0.8.30;

/// @title Groth16 verifier of the batch-insertion circuit for {b} leaves (BN254).
/// @notice Inputs: old root, new root, start index, then the {b} leaves. The keys come from a public
///         seed (nox_circuits::insert::DEV_SETUP_SEED): anyone can forge proofs for them.
library InsertVerifier{b} {{
    /// A public input is not below the scalar field modulus.
    error InputOutOfField(uint256 index);
    /// A proof coordinate is not below the base field modulus, or a point is not on its curve.
    error MalformedProof();

    uint256 internal constant SCALAR_MODULUS = {SCALAR_MODULUS};
    uint256 internal constant BASE_MODULUS = {BASE_MODULUS};
    uint256 internal constant EC_ADD_GAS = 150;
    uint256 internal constant EC_MUL_GAS = 6000;
    uint256 internal constant PAIRING_GAS = 45000 + 4 * 34000;
"#
    );
    crate::solidity::write_key_constants(&mut s, vk);
    let _ = write!(
        s,
        r#"
    /// @notice Whether `proof` ([A.x, A.y, B.x.c1, B.x.c0, B.y.c1, B.y.c0, C.x, C.y]) proves the insertion
    ///         `input`. Reverts on an input outside the scalar field and on a malformed proof.
    function verify(uint256[8] calldata proof, uint256[{n}] calldata input) internal view returns (bool) {{
        for (uint256 i = 0; i < {n}; ++i) {{
            if (input[i] >= SCALAR_MODULUS) revert InputOutOfField(i);
        }}
        for (uint256 i = 0; i < 8; ++i) {{
            if (proof[i] >= BASE_MODULUS) revert MalformedProof();
        }}
        bool ok = true;
        bool accepted;
        assembly ("memory-safe") {{
            let m := mload(0x40)
            // m: vk_x accumulator (2 words); m + 0x40: ecMul/ecAdd scratch (4 words).
            mstore(m, IC0_X)
            mstore(add(m, 0x20), IC0_Y)
            let q := add(m, 0x40)
"#
    );
    for i in 0..n {
        let _ = write!(
            s,
            r#"            // input {i}
            mstore(q, IC{k}_X)
            mstore(add(q, 0x20), IC{k}_Y)
            mstore(add(q, 0x40), calldataload(add(input, 0x{off:x})))
            ok := and(ok, staticcall(EC_MUL_GAS, 0x07, q, 0x60, q, 0x40))
            mstore(add(q, 0x40), mload(m))
            mstore(add(q, 0x60), mload(add(m, 0x20)))
            ok := and(ok, staticcall(EC_ADD_GAS, 0x06, q, 0x80, m, 0x40))
"#,
            k = i + 1,
            off = i * 32,
        );
    }
    s.push_str(
        r#"            // e(-A, B) · e(alpha, beta) · e(vk_x, gamma) · e(C, delta) = 1
            let p := add(m, 0x40)
            mstore(p, calldataload(proof))
            mstore(add(p, 0x20), mod(sub(BASE_MODULUS, calldataload(add(proof, 0x20))), BASE_MODULUS))
            calldatacopy(add(p, 0x40), add(proof, 0x40), 0x80)
            mstore(add(p, 0xc0), ALPHA_X)
            mstore(add(p, 0xe0), ALPHA_Y)
            mstore(add(p, 0x100), BETA_X1)
            mstore(add(p, 0x120), BETA_X0)
            mstore(add(p, 0x140), BETA_Y1)
            mstore(add(p, 0x160), BETA_Y0)
            mstore(add(p, 0x180), mload(m))
            mstore(add(p, 0x1a0), mload(add(m, 0x20)))
            mstore(add(p, 0x1c0), GAMMA_X1)
            mstore(add(p, 0x1e0), GAMMA_X0)
            mstore(add(p, 0x200), GAMMA_Y1)
            mstore(add(p, 0x220), GAMMA_Y0)
            calldatacopy(add(p, 0x240), add(proof, 0xc0), 0x40)
            mstore(add(p, 0x280), DELTA_X1)
            mstore(add(p, 0x2a0), DELTA_X0)
            mstore(add(p, 0x2c0), DELTA_Y1)
            mstore(add(p, 0x2e0), DELTA_Y0)
            ok := and(ok, staticcall(PAIRING_GAS, 0x08, p, 0x300, p, 0x20))
            accepted := mload(p)
        }
        if (!ok) revert MalformedProof();
        return accepted;
    }
}
"#,
    );
    Ok(s)
}

/// The proof and public inputs as the forge test reads them
/// (`contracts/test/fixtures/insert_b<B>.json`).
pub fn fixture_json(public: &BatchPublic, proof: &Proof<Bn254>) -> String {
    let doc = serde_json::json!({
        "comment": "Generated by `cargo run --release -p nox-circuits --example insert_proof_cost`. \
                    Measurement of an alternative design; NoxPool does not use it.",
        "batch": public.leaves.len(),
        "proof": crate::solidity::proof_words(proof),
        "inputs": public.to_vec().iter().map(to_hex).collect::<Vec<_>>(),
    });
    format!("{doc:#}\n")
}

#[cfg(test)]
mod tests {
    use ark_r1cs_std::R1CSVar;
    use ark_relations::r1cs::ConstraintSystem;

    use super::*;
    use crate::tree::TREE_DEPTH;

    fn leaves(rng: &mut ChaCha20Rng, n: usize) -> Vec<Fr> {
        (0..n).map(|_| Fr::rand(rng)).collect()
    }

    /// A tree of `depth` holding `n` random leaves.
    fn tree_of(rng: &mut ChaCha20Rng, depth: usize, n: usize) -> MerkleTree {
        let mut t = MerkleTree::new(depth);
        for leaf in leaves(rng, n) {
            t.insert(leaf).unwrap();
        }
        t
    }

    /// A batch that would overwrite the slot at `start`, which holds leaves of
    /// `tree`: its path and roots are otherwise honest.
    fn overwrite(tree: &MerkleTree, start: u64, new: Vec<Fr>) -> Batch {
        let path = tree.path(start).unwrap().split_off(new.len().trailing_zeros() as usize);
        let new_root = batch_roots(start, &new, &path).1;
        Batch { depth: tree.depth(), public: BatchPublic { old_root: tree.root(), new_root, start, leaves: new }, path }
    }

    /// Whether `batch` satisfies the circuit (no setup needed).
    fn satisfied(batch: &Batch) -> bool {
        let cs = ConstraintSystem::<Fr>::new_ref();
        BatchInsertCircuit::new(batch).unwrap().generate_constraints(cs.clone()).unwrap();
        cs.is_satisfied().unwrap()
    }

    #[test]
    fn subtree_gadget_equals_native() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for n in [1, 2, 4, 8] {
            let values = leaves(&mut rng, n);
            let cs = ConstraintSystem::<Fr>::new_ref();
            let vars: Vec<FpVar<Fr>> =
                values.iter().map(|v| FpVar::new_witness(cs.clone(), || Ok(*v)).unwrap()).collect();
            assert_eq!(subtree_root_gadget(&vars).unwrap().value().unwrap(), subtree_root(&values), "{n} leaves");
            assert!(cs.is_satisfied().unwrap());
        }
        let mut t = MerkleTree::new(2);
        let four = leaves(&mut rng, 4);
        for leaf in &four {
            t.insert(*leaf).unwrap();
        }
        assert_eq!(subtree_root(&four), t.root());
    }

    #[test]
    fn batch_roots_equal_the_tree_inserting_one_by_one() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        for (before, batch) in [(0, 8), (8, 8), (96, 8), (0, 32), (64, 32), (5, 1)] {
            let mut tree = tree_of(&mut rng, TREE_DEPTH, before);
            let new = leaves(&mut rng, batch);
            let b = Batch::append(&tree, new.clone()).unwrap();
            assert_eq!(b.public.old_root, tree.root(), "old root, {batch} after {before}");
            assert_eq!(b.path.len(), TREE_DEPTH - batch.trailing_zeros() as usize);
            for leaf in new {
                tree.insert(leaf).unwrap();
            }
            assert_eq!(b.public.new_root, tree.root(), "new root, {batch} after {before}");
            assert_eq!(b.public.start, before as u64);
        }
    }

    #[test]
    fn batches_that_do_not_fit_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let tree = tree_of(&mut rng, 4, 5);
        assert!(matches!(Batch::append(&tree, leaves(&mut rng, 4)), Err(InsertError::NotAligned { next: 5, .. })));
        assert!(matches!(Batch::append(&tree, leaves(&mut rng, 3)), Err(InsertError::BadBatchSize { batch: 3, .. })));
        assert!(matches!(Batch::append(&tree, leaves(&mut rng, 32)), Err(InsertError::BadBatchSize { .. })));
        let full = tree_of(&mut rng, 4, 16);
        assert!(matches!(Batch::append(&full, leaves(&mut rng, 8)), Err(InsertError::TreeFull { .. })));
    }

    #[test]
    fn the_circuit_accepts_a_batch_at_full_depth_and_costs_what_it_should() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let tree = tree_of(&mut rng, TREE_DEPTH, 40);
        let b = Batch::append(&tree, leaves(&mut rng, 8)).unwrap();
        let cs = ConstraintSystem::<Fr>::new_ref();
        cs.set_optimization_goal(OptimizationGoal::Constraints);
        BatchInsertCircuit::new(&b).unwrap().generate_constraints(cs.clone()).unwrap();
        assert!(cs.is_satisfied().unwrap());
        // 7 Poseidon for the subtree, 2 × 17 for the two paths (each level
        // with its select), 17 bits and their sum for the slot, and the two
        // roots' equalities.
        let poseidon = (8 * 3 + 57) * 3 - 3;
        assert_eq!(cs.num_constraints(), 7 * poseidon + 2 * 17 * (poseidon + 1) + (17 + 1) + 2);
    }

    #[test]
    fn a_non_empty_slot_an_unaligned_start_or_a_wrong_root_fail() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let tree = tree_of(&mut rng, TREE_DEPTH, 16);
        let honest = Batch::append(&tree, leaves(&mut rng, 8)).unwrap();
        assert!(satisfied(&honest));

        assert!(!satisfied(&overwrite(&tree, 8, leaves(&mut rng, 8))), "slot 1 holds leaves");

        let mut shifted = honest.clone();
        shifted.public.start += 1;
        assert!(!satisfied(&shifted), "start not a multiple of 8");
        let mut outside = honest.clone();
        outside.public.start += 1 << TREE_DEPTH;
        assert!(!satisfied(&outside), "start beyond the tree");

        let mut wrong = honest.clone();
        wrong.public.new_root += Fr::from(1u64);
        assert!(!satisfied(&wrong), "wrong new root");
        let mut wrong = honest.clone();
        wrong.public.old_root += Fr::from(1u64);
        assert!(!satisfied(&wrong), "wrong old root");
        let mut wrong = honest;
        wrong.public.leaves[3] += Fr::from(1u64);
        assert!(!satisfied(&wrong), "a leaf that is not under the new root");
    }

    #[test]
    fn a_valid_batch_proves_and_verifies_and_nothing_else_does() {
        const DEPTH: usize = 8;
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let keys = dev_setup(DEPTH, 4).unwrap();
        let pvk = ark_groth16::prepare_verifying_key(keys.vk());
        let tree = tree_of(&mut rng, DEPTH, 12);
        let batch = Batch::append(&tree, leaves(&mut rng, 4)).unwrap();
        let proof = prove(&keys, &batch, &mut rng).unwrap();
        assert!(verify(&pvk, &batch.public, &proof));
        for i in 0..FIXED_PUBLIC_INPUTS + 4 {
            let mut tampered = batch.public.clone();
            match i {
                0 => tampered.old_root += Fr::from(1u64),
                1 => tampered.new_root += Fr::from(1u64),
                2 => tampered.start += 4,
                _ => tampered.leaves[i - 3] += Fr::from(1u64),
            }
            assert!(!verify(&pvk, &tampered, &proof), "input {i} changed");
        }

        // No proof for a wrong new root or a slot that holds leaves.
        let mut wrong = batch.clone();
        wrong.public.new_root += Fr::from(1u64);
        assert!(matches!(prove(&keys, &wrong, &mut rng), Err(InsertError::Unsatisfied)));
        let filled = overwrite(&tree, 8, leaves(&mut rng, 4));
        assert!(matches!(prove(&keys, &filled, &mut rng), Err(InsertError::Unsatisfied)));
        // Nor for a batch of another shape than the keys'.
        let eight = Batch::append(&tree_of(&mut rng, DEPTH, 8), leaves(&mut rng, 8)).unwrap();
        assert!(matches!(prove(&keys, &eight, &mut rng), Err(InsertError::WrongShape { batch: 8, .. })));
    }

    #[test]
    fn the_solidity_verifier_takes_every_input() {
        let keys = dev_setup(4, 2).unwrap();
        let sol = solidity_verifier(keys.vk()).unwrap();
        assert!(sol.contains("library InsertVerifier2 {"));
        assert!(sol.contains("uint256[5] calldata input"));
        assert_eq!(sol.matches("staticcall(EC_MUL_GAS").count(), 5);
        assert!(sol.contains("IC5_Y"));
        assert!(sol.contains("NoxPool does not use it"));
    }
}
