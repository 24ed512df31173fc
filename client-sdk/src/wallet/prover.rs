//! [`Prover`]: the spend circuit's Groth16 keys, turning a [`PreparedSpend`]
//! into the proof and public inputs `NoxPool` takes ([`GasPayment`]).

use std::path::Path;

use nox_circuits::groth16::{self, Keys};
use nox_circuits::spend::{Spend, SpendCircuit};
use nox_circuits::tree::TREE_DEPTH;
use nox_protocol::payment::{GasPayment, SpendInputs};

use super::{PreparedSpend, WalletError, fr_to_be32};

/// The spend circuit's keys for the pool's tree depth.
#[derive(Debug, Clone)]
pub struct Prover {
    keys: Keys,
}

impl Prover {
    /// Reads `spend.pk` and `spend.vk` from `dir` (the keys the pool's
    /// verifier was generated from).
    pub fn load(dir: &Path) -> Result<Prover, WalletError> {
        Ok(Prover { keys: Keys::read(dir, TREE_DEPTH)? })
    }

    /// The development setup's keys: they match the verifier deployed on
    /// local chains, and anyone can forge proofs for them (see
    /// `nox_circuits::groth16`). Takes seconds.
    pub fn development() -> Result<Prover, WalletError> {
        Ok(Prover { keys: groth16::dev_setup(TREE_DEPTH)? })
    }

    /// A prover with keys already in memory (a process that holds the
    /// development keys for other uses shares them instead of a second setup).
    pub fn from_keys(keys: Keys) -> Prover {
        Prover { keys }
    }

    /// The keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Proves `spend`: the proof's eight words and the seven public inputs,
    /// in the pool's order.
    pub fn prove(&self, spend: &PreparedSpend) -> Result<GasPayment, WalletError> {
        self.prove_spend(&spend.spend)
    }

    /// Proves a spend built without the wallet (tests and benchmarks that
    /// hold the note and its path themselves).
    pub fn prove_spend(&self, spend: &Spend) -> Result<GasPayment, WalletError> {
        let (public, witness) = spend.inputs(TREE_DEPTH)?;
        let circuit = SpendCircuit::new(TREE_DEPTH, public, witness);
        let proof = groth16::prove(&self.keys, circuit, &mut rand::rngs::OsRng)?;
        Ok(GasPayment {
            proof: groth16::encode_proof(&proof),
            inputs: SpendInputs {
                root: fr_to_be32(public.root),
                nullifier: fr_to_be32(public.nullifier),
                change_commitment: fr_to_be32(public.change_commitment),
                asset: fr_to_be32(public.asset),
                public_value: fr_to_be32(public.public_value),
                recipient: fr_to_be32(public.recipient),
                execution_hash: fr_to_be32(public.execution_hash),
            },
        })
    }
}
