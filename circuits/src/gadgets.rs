//! R1CS gadgets, each the in-circuit twin of a native function in this crate:
//! [`poseidon`] ↔ [`crate::poseidon::hash`], [`merkle_root`] ↔
//! [`crate::tree::root_from_path`], [`range_check`] ↔ "fits in `bits` bits".
//! The tests check each against its twin on random inputs.

use ark_bn254::Fr;
use ark_r1cs_std::R1CSVar;
use ark_r1cs_std::boolean::Boolean;
use ark_r1cs_std::eq::EqGadget;
use ark_r1cs_std::fields::FieldVar;
use ark_r1cs_std::fields::fp::FpVar;
use ark_r1cs_std::prelude::AllocVar;
use ark_relations::r1cs::SynthesisError;

use crate::poseidon::{self, MAX_INPUTS};

/// `x⁵` in three constraints.
fn sbox(x: &FpVar<Fr>) -> Result<FpVar<Fr>, SynthesisError> {
    let x2 = x.square()?;
    let x4 = x2.square()?;
    Ok(x4 * x)
}

/// Poseidon of 1 to 16 elements, the twin of [`crate::poseidon::hash`].
pub fn poseidon(inputs: &[FpVar<Fr>]) -> Result<FpVar<Fr>, SynthesisError> {
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        return Err(SynthesisError::Unsatisfiable);
    }
    let p = poseidon::params(inputs.len() + 1).map_err(|_| SynthesisError::Unsatisfiable)?;
    let mut state: Vec<FpVar<Fr>> = Vec::with_capacity(p.t);
    state.push(FpVar::zero());
    state.extend_from_slice(inputs);
    for r in 0..p.rounds() {
        for (s, c) in state.iter_mut().zip(&p.round_constants[r * p.t..(r + 1) * p.t]) {
            *s += FpVar::constant(*c);
        }
        if p.is_full_round(r) {
            for s in state.iter_mut() {
                *s = sbox(s)?;
            }
        } else {
            state[0] = sbox(&state[0])?;
        }
        // Linear: no constraints.
        state = p
            .mds
            .iter()
            .map(|row| row.iter().zip(&state).fold(FpVar::zero(), |acc, (m, s)| acc + s * FpVar::constant(*m)))
            .collect();
    }
    Ok(state.swap_remove(0))
}

/// The root reached from `leaf` with `siblings` (leaf level first) and the
/// leaf's index as little-endian `index_bits` (bit `i` set: the node at level
/// `i` is a right child). Twin of [`crate::tree::root_from_path`].
pub fn merkle_root(
    leaf: &FpVar<Fr>,
    index_bits: &[Boolean<Fr>],
    siblings: &[FpVar<Fr>],
) -> Result<FpVar<Fr>, SynthesisError> {
    if index_bits.len() != siblings.len() {
        return Err(SynthesisError::Unsatisfiable);
    }
    let mut node = leaf.clone();
    for (bit, sibling) in index_bits.iter().zip(siblings) {
        // left = bit ? sibling : node, in one constraint; right follows linearly.
        let left = bit.select(sibling, &node)?;
        let right = &node + sibling - &left;
        node = poseidon(&[left, right])?;
    }
    Ok(node)
}

/// Enforces `0 ≤ value < 2^bits` by decomposing it into `bits` boolean
/// witnesses whose weighted sum must equal it. Returns the bits (little-endian).
pub fn range_check(value: &FpVar<Fr>, bits: usize) -> Result<Vec<Boolean<Fr>>, SynthesisError> {
    use ark_ff::{BigInteger, PrimeField};
    let cs = value.cs();
    let native = value.value().ok();
    let le: Vec<bool> = native.map(|v| v.into_bigint().to_bits_le()).unwrap_or_default();
    let bits_var = (0..bits)
        .map(|i| {
            Boolean::new_witness(cs.clone(), || {
                native.map(|_| le.get(i).copied().unwrap_or(false)).ok_or(SynthesisError::AssignmentMissing)
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Boolean::le_bits_to_fp(&bits_var)?.enforce_equal(value)?;
    Ok(bits_var)
}

#[cfg(test)]
mod tests {
    use ark_ff::UniformRand;
    use ark_r1cs_std::R1CSVar;
    use ark_relations::r1cs::{ConstraintSystem, ConstraintSystemRef};
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::tree::{MerkleTree, root_from_path};

    fn witness(cs: &ConstraintSystemRef<Fr>, v: Fr) -> FpVar<Fr> {
        FpVar::new_witness(cs.clone(), || Ok(v)).unwrap()
    }

    #[test]
    fn poseidon_gadget_equals_native_for_every_arity() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for n in 1..=MAX_INPUTS {
            let cs = ConstraintSystem::<Fr>::new_ref();
            let inputs: Vec<Fr> = (0..n).map(|_| Fr::rand(&mut rng)).collect();
            let vars: Vec<FpVar<Fr>> = inputs.iter().map(|v| witness(&cs, *v)).collect();
            let out = poseidon(&vars).unwrap();
            assert_eq!(out.value().unwrap(), poseidon::hash(&inputs).unwrap(), "{n} inputs");
            assert!(cs.is_satisfied().unwrap());
        }
        let cs = ConstraintSystem::<Fr>::new_ref();
        assert!(poseidon(&[]).is_err());
        assert!(poseidon(&vec![witness(&cs, Fr::from(1u64)); 17]).is_err());
    }

    #[test]
    fn poseidon_gadget_costs_three_constraints_per_sbox() {
        let cs = ConstraintSystem::<Fr>::new_ref();
        let a = witness(&cs, Fr::from(1u64));
        let b = witness(&cs, Fr::from(2u64));
        let before = cs.num_constraints();
        let _ = poseidon(&[a, b]).unwrap();
        // 8 full rounds of 3 S-boxes and 57 partial rounds of 1, 3 constraints
        // each, less the first S-box, which sees a constant (the capacity
        // element 0 plus a round constant).
        assert_eq!(cs.num_constraints() - before, (8 * 3 + 57) * 3 - 3);
    }

    #[test]
    fn merkle_gadget_equals_native() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let mut tree = MerkleTree::new(8);
        let leaves: Vec<Fr> = (0..37).map(|_| Fr::rand(&mut rng)).collect();
        for l in &leaves {
            tree.insert(*l).unwrap();
        }
        for index in [0u64, 1, 2, 17, 36] {
            let path = tree.path(index).unwrap();
            let native = root_from_path(leaves[index as usize], index, &path);
            assert_eq!(native, tree.root());
            let cs = ConstraintSystem::<Fr>::new_ref();
            let leaf = witness(&cs, leaves[index as usize]);
            let bits: Vec<Boolean<Fr>> =
                (0..8).map(|i| Boolean::new_witness(cs.clone(), || Ok((index >> i) & 1 == 1)).unwrap()).collect();
            let siblings: Vec<FpVar<Fr>> = path.iter().map(|s| witness(&cs, *s)).collect();
            let root = merkle_root(&leaf, &bits, &siblings).unwrap();
            assert_eq!(root.value().unwrap(), native, "index {index}");
            assert!(cs.is_satisfied().unwrap());
        }
    }

    #[test]
    fn range_check_accepts_the_range_and_nothing_above() {
        for (v, ok) in [
            (Fr::from(0u64), true),
            (Fr::from(u128::MAX), true),
            (Fr::from(u128::MAX) + Fr::from(1u64), false),
            (-Fr::from(1u64), false),
        ] {
            let cs = ConstraintSystem::<Fr>::new_ref();
            let var = witness(&cs, v);
            range_check(&var, 128).unwrap();
            assert_eq!(cs.is_satisfied().unwrap(), ok, "{v}");
        }
    }
}
