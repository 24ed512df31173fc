//! The spend circuit: one circuit for withdrawals and for gas payments.
//!
//! Public inputs, in this order ([`PublicInputs::to_vec`]):
//!
//! | # | input | meaning |
//! |---|-------|---------|
//! | 0 | `root` | a root of the note tree the input note is under |
//! | 1 | `nullifier` | the input note's nullifier |
//! | 2 | `change_commitment` | the change note's commitment (inserted by the pool) |
//! | 3 | `asset` | token address as an integer, 0 for ETH |
//! | 4 | `public_value` | the amount leaving the pool (to the recipient) |
//! | 5 | `recipient` | who is paid: the withdrawal's recipient or the relaying exit node |
//! | 6 | `execution_hash` | the call the payment is for (`docs/protocol.md`); bound, not interpreted |
//!
//! What a valid proof shows, for private `sk`, input value and blinding, leaf
//! index and path, change value, owner and blinding:
//!
//! * the input note `Poseidon(asset, in_value, Poseidon(Poseidon(sk),
//!   in_blinding))` is the leaf at `index` under `root`;
//! * `nullifier = Poseidon(sk, commitment, index)`;
//! * `in_value = public_value + change_value`, all three range-checked to 128
//!   bits, so that no sum wraps around the field;
//! * `change_commitment = Poseidon(asset, change_value, Poseidon(change_owner,
//!   change_blinding))`: same asset, well formed;
//! * `recipient` and `execution_hash` each take part in a constraint (their
//!   squares), so a proof cannot be replayed with other values.

use ark_bn254::Fr;
use ark_r1cs_std::boolean::Boolean;
use ark_r1cs_std::eq::EqGadget;
use ark_r1cs_std::fields::fp::FpVar;
use ark_r1cs_std::prelude::AllocVar;
use ark_relations::r1cs::{ConstraintSynthesizer, ConstraintSystemRef, SynthesisError};

use crate::gadgets::{merkle_root, poseidon, range_check};
use crate::note::{Note, SpendingKey, commitment_of, nullifier};
use crate::tree::root_from_path;

/// Number of public inputs.
pub const NUM_PUBLIC_INPUTS: usize = 7;
/// Bits of every value.
pub const VALUE_BITS: usize = 128;

/// The public inputs of a spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicInputs {
    /// Tree root.
    pub root: Fr,
    /// Input note's nullifier.
    pub nullifier: Fr,
    /// Change note's commitment.
    pub change_commitment: Fr,
    /// Asset.
    pub asset: Fr,
    /// Value paid out.
    pub public_value: Fr,
    /// Who is paid.
    pub recipient: Fr,
    /// The call the payment is bound to.
    pub execution_hash: Fr,
}

impl PublicInputs {
    /// In the circuit's order.
    pub fn to_vec(&self) -> Vec<Fr> {
        vec![
            self.root,
            self.nullifier,
            self.change_commitment,
            self.asset,
            self.public_value,
            self.recipient,
            self.execution_hash,
        ]
    }
}

/// The private inputs of a spend, as raw field elements (so that tests can
/// try values no honest wallet would produce).
#[derive(Clone, PartialEq, Eq)]
pub struct Witness {
    /// Spending key.
    pub sk: Fr,
    /// Input note value.
    pub in_value: Fr,
    /// Input note blinding.
    pub in_blinding: Fr,
    /// Input note's leaf index.
    pub index: u64,
    /// Input note's Merkle path (siblings, leaf level first).
    pub path: Vec<Fr>,
    /// Change value.
    pub change_value: Fr,
    /// Change owner.
    pub change_owner: Fr,
    /// Change blinding.
    pub change_blinding: Fr,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Witness(<secret>)")
    }
}

/// Errors building a spend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpendError {
    /// The input note is not owned by the key.
    #[error("the input note does not belong to this spending key")]
    NotOwner,
    /// The change note is of another asset.
    #[error("the change note's asset differs from the input note's")]
    AssetMismatch,
    /// Public value plus change is not the input value.
    #[error("input value {input} is not public value {public} plus change {change}")]
    Unbalanced {
        /// Input value.
        input: u128,
        /// Public value.
        public: u128,
        /// Change value.
        change: u128,
    },
    /// The path has the wrong length.
    #[error("Merkle path of {got} siblings for a tree of depth {depth}")]
    PathLength {
        /// Siblings given.
        got: usize,
        /// Tree depth.
        depth: usize,
    },
}

/// An honest spend, as a wallet builds it.
#[derive(Debug, Clone)]
pub struct Spend {
    /// Key of the input note.
    pub sk: SpendingKey,
    /// The input note.
    pub note: Note,
    /// Its leaf index.
    pub index: u64,
    /// Its Merkle path.
    pub path: Vec<Fr>,
    /// Amount leaving the pool.
    pub public_value: u128,
    /// The change note (its value is the rest).
    pub change: Note,
    /// Who is paid.
    pub recipient: Fr,
    /// The call the payment is bound to (0 binds none).
    pub execution_hash: Fr,
}

impl Spend {
    /// Checks the spend and returns its public and private inputs.
    pub fn inputs(&self, depth: usize) -> Result<(PublicInputs, Witness), SpendError> {
        if self.note.owner != self.sk.owner() {
            return Err(SpendError::NotOwner);
        }
        if self.change.asset != self.note.asset {
            return Err(SpendError::AssetMismatch);
        }
        if self.public_value.checked_add(self.change.value) != Some(self.note.value) {
            return Err(SpendError::Unbalanced {
                input: self.note.value,
                public: self.public_value,
                change: self.change.value,
            });
        }
        if self.path.len() != depth {
            return Err(SpendError::PathLength { got: self.path.len(), depth });
        }
        let commitment = self.note.commitment();
        let public = PublicInputs {
            root: root_from_path(commitment, self.index, &self.path),
            nullifier: nullifier(&self.sk, commitment, self.index),
            change_commitment: self.change.commitment(),
            asset: self.note.asset,
            public_value: Fr::from(self.public_value),
            recipient: self.recipient,
            execution_hash: self.execution_hash,
        };
        let witness = Witness {
            sk: self.sk.0,
            in_value: Fr::from(self.note.value),
            in_blinding: self.note.blinding,
            index: self.index,
            path: self.path.clone(),
            change_value: Fr::from(self.change.value),
            change_owner: self.change.owner,
            change_blinding: self.change.blinding,
        };
        Ok((public, witness))
    }
}

/// The circuit. Without inputs (for the setup) every value is missing.
#[derive(Debug, Clone)]
pub struct SpendCircuit {
    /// Tree depth.
    pub depth: usize,
    /// Public inputs.
    pub public: Option<PublicInputs>,
    /// Private inputs.
    pub witness: Option<Witness>,
}

impl SpendCircuit {
    /// The shape only, for the setup.
    pub fn blank(depth: usize) -> Self {
        SpendCircuit { depth, public: None, witness: None }
    }

    /// A circuit to prove.
    pub fn new(depth: usize, public: PublicInputs, witness: Witness) -> Self {
        SpendCircuit { depth, public: Some(public), witness: Some(witness) }
    }
}

impl ConstraintSynthesizer<Fr> for SpendCircuit {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        let p = self.public;
        let w = self.witness;
        let input = |f: fn(&PublicInputs) -> Fr| {
            FpVar::new_input(cs.clone(), || p.as_ref().map(f).ok_or(SynthesisError::AssignmentMissing))
        };
        let root = input(|p| p.root)?;
        let nullifier_pub = input(|p| p.nullifier)?;
        let change_commitment = input(|p| p.change_commitment)?;
        let asset = input(|p| p.asset)?;
        let public_value = input(|p| p.public_value)?;
        let recipient = input(|p| p.recipient)?;
        let execution_hash = input(|p| p.execution_hash)?;

        let secret = |f: &dyn Fn(&Witness) -> Fr| {
            FpVar::new_witness(cs.clone(), || w.as_ref().map(f).ok_or(SynthesisError::AssignmentMissing))
        };
        let sk = secret(&|w| w.sk)?;
        let in_value = secret(&|w| w.in_value)?;
        let in_blinding = secret(&|w| w.in_blinding)?;
        let change_value = secret(&|w| w.change_value)?;
        let change_owner = secret(&|w| w.change_owner)?;
        let change_blinding = secret(&|w| w.change_blinding)?;
        let index_bits = (0..self.depth)
            .map(|h| {
                Boolean::new_witness(cs.clone(), || {
                    w.as_ref().map(|w| (w.index >> h) & 1 == 1).ok_or(SynthesisError::AssignmentMissing)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let path = (0..self.depth)
            .map(|h| secret(&|w| w.path.get(h).copied().unwrap_or_default()))
            .collect::<Result<Vec<_>, _>>()?;

        // The input note is in the tree under `root`.
        let owner = poseidon(std::slice::from_ref(&sk))?;
        let secret = poseidon(&[owner, in_blinding])?;
        let commitment = poseidon(&[asset.clone(), in_value.clone(), secret])?;
        merkle_root(&commitment, &index_bits, &path)?.enforce_equal(&root)?;

        // Its nullifier.
        let index = Boolean::le_bits_to_fp(&index_bits)?;
        poseidon(&[sk, commitment, index])?.enforce_equal(&nullifier_pub)?;

        // Values: each below 2^128, and they balance.
        range_check(&in_value, VALUE_BITS)?;
        range_check(&public_value, VALUE_BITS)?;
        range_check(&change_value, VALUE_BITS)?;
        in_value.enforce_equal(&(&public_value + &change_value))?;

        // The change note.
        let change_secret = poseidon(&[change_owner, change_blinding])?;
        poseidon(&[asset, change_value, change_secret])?.enforce_equal(&change_commitment)?;

        // Bind the recipient and the execution hash.
        let _ = &recipient * &recipient;
        let _ = &execution_hash * &execution_hash;
        Ok(())
    }
}

/// Recomputes the change commitment for raw values (tests and fixtures).
pub fn change_commitment(asset: Fr, w: &Witness) -> Fr {
    commitment_of(asset, w.change_value, w.change_owner, w.change_blinding)
}

#[cfg(test)]
mod tests {
    use ark_ff::UniformRand;
    use ark_relations::r1cs::ConstraintSystem;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::tree::MerkleTree;

    const DEPTH: usize = 8;

    /// A tree with some notes, and an honest spend of the one at index 5.
    fn honest() -> (Spend, MerkleTree) {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let sk = SpendingKey::random(&mut rng);
        let asset = Fr::from(0xeeu64);
        let note = Note::new(asset, 5_000, sk.owner(), &mut rng);
        let mut tree = MerkleTree::new(DEPTH);
        for i in 0..9u64 {
            let leaf = if i == 5 { note.commitment() } else { Fr::rand(&mut rng) };
            tree.insert(leaf).unwrap();
        }
        let spend = Spend {
            path: tree.path(5).unwrap(),
            index: 5,
            public_value: 1_200,
            change: Note::new(asset, 3_800, sk.owner(), &mut rng),
            recipient: Fr::from(0xbeefu64),
            execution_hash: Fr::from(77u64),
            note,
            sk,
        };
        (spend, tree)
    }

    fn satisfied(public: PublicInputs, witness: Witness) -> bool {
        let cs = ConstraintSystem::<Fr>::new_ref();
        SpendCircuit::new(DEPTH, public, witness).generate_constraints(cs.clone()).unwrap();
        cs.is_satisfied().unwrap()
    }

    #[test]
    fn an_honest_spend_satisfies_the_circuit() {
        let (spend, tree) = honest();
        let (public, witness) = spend.inputs(DEPTH).unwrap();
        assert_eq!(public.root, tree.root());
        assert_eq!(public.change_commitment, change_commitment(public.asset, &witness));
        assert!(satisfied(public, witness));
    }

    #[test]
    fn a_wrong_path_is_unsatisfied() {
        let (spend, _) = honest();
        let (public, mut witness) = spend.inputs(DEPTH).unwrap();
        witness.path[3] += Fr::from(1u64);
        assert!(!satisfied(public, witness.clone()));
        // Right siblings, wrong position.
        let (public, mut witness) = spend.inputs(DEPTH).unwrap();
        witness.index = 4;
        assert!(!satisfied(public, witness));
    }

    #[test]
    fn a_wrong_nullifier_is_unsatisfied() {
        let (spend, _) = honest();
        let (mut public, witness) = spend.inputs(DEPTH).unwrap();
        public.nullifier = nullifier(&spend.sk, spend.note.commitment(), 6);
        assert!(!satisfied(public, witness.clone()));
        // Another key cannot produce the owner's nullifier either.
        let (public, mut witness) = spend.inputs(DEPTH).unwrap();
        witness.sk += Fr::from(1u64);
        assert!(!satisfied(public, witness));
    }

    #[test]
    fn value_overflow_is_unsatisfied() {
        let (spend, _) = honest();
        let (mut public, mut witness) = spend.inputs(DEPTH).unwrap();
        // Pay out more than the note holds, with a "negative" change that
        // balances in the field: public + change = in (mod p).
        public.public_value = Fr::from(6_000u64);
        witness.change_value = witness.in_value - public.public_value;
        public.change_commitment = change_commitment(public.asset, &witness);
        assert!(!satisfied(public, witness.clone()));
        // A public value of 2^128 and above is refused on its own.
        let (mut public, mut witness) = spend.inputs(DEPTH).unwrap();
        public.public_value = Fr::from(u128::MAX) + Fr::from(1u64);
        witness.change_value = witness.in_value - public.public_value;
        public.change_commitment = change_commitment(public.asset, &witness);
        assert!(!satisfied(public, witness));
        // And the honest builder refuses an unbalanced spend.
        let mut bad = spend.clone();
        bad.public_value = 6_000;
        assert!(matches!(bad.inputs(DEPTH), Err(SpendError::Unbalanced { .. })));
    }

    #[test]
    fn a_mismatched_asset_is_unsatisfied() {
        let (spend, _) = honest();
        // Claim another asset for the same note.
        let (mut public, witness) = spend.inputs(DEPTH).unwrap();
        public.asset = Fr::from(0xefu64);
        public.change_commitment = change_commitment(public.asset, &witness);
        assert!(!satisfied(public, witness));
        // Change in another asset than the input.
        let (mut public, witness) = spend.inputs(DEPTH).unwrap();
        public.change_commitment = change_commitment(Fr::from(0xefu64), &witness);
        assert!(!satisfied(public, witness));
        let mut bad = spend.clone();
        bad.change.asset = Fr::from(0xefu64);
        assert_eq!(bad.inputs(DEPTH).unwrap_err(), SpendError::AssetMismatch);
    }

    #[test]
    fn the_builder_checks_ownership_and_path_length() {
        let (spend, _) = honest();
        let mut bad = spend.clone();
        bad.note.owner += Fr::from(1u64);
        assert_eq!(bad.inputs(DEPTH).unwrap_err(), SpendError::NotOwner);
        assert_eq!(spend.inputs(DEPTH + 1).unwrap_err(), SpendError::PathLength { got: DEPTH, depth: DEPTH + 1 });
    }
}
