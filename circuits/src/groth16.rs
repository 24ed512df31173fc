//! Groth16 over BN254 for the spend circuit: setup, proving, verifying, and
//! keys in files.
//!
//! **The development setup is not a trusted setup.** [`dev_setup`] draws the
//! toxic waste from a ChaCha20 stream seeded with the public constant
//! [`DEV_SETUP_SEED`], so anyone can recompute it and forge proofs. It exists
//! so that the devnet, the tests and the committed Solidity verifier are
//! reproducible. A production pool needs keys from a multi-party ceremony
//! (`docs/protocol.md`).

use std::path::Path;
use std::sync::Arc;

use ark_bn254::{Bn254, Fr};
use ark_ff::{UniformRand, Zero};
use ark_groth16::r1cs_to_qap::LibsnarkReduction;
use ark_groth16::{Groth16, PreparedVerifyingKey, Proof, ProvingKey, VerifyingKey};
use ark_relations::r1cs::{
    ConstraintMatrices, ConstraintSynthesizer, ConstraintSystem, OptimizationGoal, SynthesisMode,
};
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use ark_snark::SNARK;
use rand::{CryptoRng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::spend::{PublicInputs, SpendCircuit};

/// Seed of the development setup. Public on purpose: see the module docs.
pub const DEV_SETUP_SEED: [u8; 32] = *b"NOX development setup: NOT SAFE!";

/// File name of the proving key in a key directory.
pub const PROVING_KEY_FILE: &str = "spend.pk";
/// File name of the verifying key in a key directory.
pub const VERIFYING_KEY_FILE: &str = "spend.vk";

/// Proof system errors.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// Synthesis, setup or proving failed.
    #[error("proof system: {0}")]
    Snark(String),
    /// The witness does not satisfy the circuit: no valid proof exists.
    #[error("the witness does not satisfy the spend circuit")]
    Unsatisfied,
    /// A key or proof file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The keys are for another circuit, or the spend circuit at another
    /// tree depth than `depth` (0: a verifying key with the wrong number of
    /// public inputs).
    #[error("the keys are not for the spend circuit at tree depth {depth}")]
    WrongCircuit {
        /// The depth asked for.
        depth: usize,
    },
    /// A key or proof did not decode.
    #[error("{what} does not decode: {reason}")]
    Decode {
        /// What was decoded.
        what: String,
        /// Why it failed.
        reason: String,
    },
}

fn snark<E: std::fmt::Display>(e: E) -> ProofError {
    ProofError::Snark(e.to_string())
}

/// Proving and verifying key, and the circuit's constraint matrices (derived
/// once from the circuit, so that each proof only computes its witness).
#[derive(Clone)]
pub struct Keys {
    /// Proving key (its `vk` is the verifying key).
    pub pk: ProvingKey<Bn254>,
    depth: usize,
    matrices: Arc<ConstraintMatrices<Fr>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("depth", &self.depth).finish_non_exhaustive()
    }
}

/// Circuit-specific setup for trees of `depth` with randomness from `rng`.
pub fn setup<R: RngCore + CryptoRng>(depth: usize, rng: &mut R) -> Result<Keys, ProofError> {
    let (pk, _) = Groth16::<Bn254>::circuit_specific_setup(SpendCircuit::blank(depth), rng).map_err(snark)?;
    Ok(Keys { pk, depth, matrices: Arc::new(matrices(depth)?) })
}

/// The spend circuit's R1CS matrices, synthesised as the setup does.
fn matrices(depth: usize) -> Result<ConstraintMatrices<Fr>, ProofError> {
    let cs = ConstraintSystem::<Fr>::new_ref();
    cs.set_optimization_goal(OptimizationGoal::Constraints);
    cs.set_mode(SynthesisMode::Setup);
    SpendCircuit::blank(depth).generate_constraints(cs.clone()).map_err(snark)?;
    cs.finalize();
    cs.to_matrices().ok_or_else(|| ProofError::Snark("no constraint matrices".into()))
}

/// The deterministic development setup (see the module docs: not secure).
pub fn dev_setup(depth: usize) -> Result<Keys, ProofError> {
    setup(depth, &mut ChaCha20Rng::from_seed(DEV_SETUP_SEED))
}

/// Number of constraints of the spend circuit for `depth`.
pub fn constraint_count(depth: usize) -> Result<usize, ProofError> {
    Ok(matrices(depth)?.num_constraints)
}

/// Proves `circuit`: computes its witness (no constraint matrices: those
/// are the keys'), checks it against the matrices, so that a bad witness is
/// an error rather than a proof that fails to verify, then proves.
pub fn prove<R: RngCore + CryptoRng>(
    keys: &Keys,
    circuit: SpendCircuit,
    rng: &mut R,
) -> Result<Proof<Bn254>, ProofError> {
    if circuit.depth != keys.depth {
        return Err(ProofError::Snark(format!("circuit of depth {} for keys of depth {}", circuit.depth, keys.depth)));
    }
    let cs = ConstraintSystem::<Fr>::new_ref();
    cs.set_optimization_goal(OptimizationGoal::Constraints);
    cs.set_mode(SynthesisMode::Prove { construct_matrices: false });
    circuit.generate_constraints(cs.clone()).map_err(snark)?;
    cs.finalize();
    let m = &*keys.matrices;
    let z: Vec<Fr> = {
        let cs = cs.borrow().ok_or_else(|| ProofError::Snark("constraint system in use".into()))?;
        cs.instance_assignment.iter().chain(&cs.witness_assignment).copied().collect()
    };
    if z.len() != m.num_instance_variables + m.num_witness_variables {
        return Err(ProofError::Snark("the witness does not match the keys' circuit".into()));
    }
    if !satisfies(m, &z) {
        return Err(ProofError::Unsatisfied);
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

/// Whether `(A·z) ∘ (B·z) = C·z` row by row.
fn satisfies(m: &ConstraintMatrices<Fr>, z: &[Fr]) -> bool {
    let row = |r: &[(Fr, usize)]| r.iter().fold(Fr::zero(), |acc, (c, i)| acc + *c * z[*i]);
    m.a.iter().zip(&m.b).zip(&m.c).all(|((a, b), c)| row(a) * row(b) == row(c))
}

/// Length of an encoded proof: eight 32-byte big-endian words, in the order
/// `NoxPool` takes them (`[A.x, A.y, B.x.c1, B.x.c0, B.y.c1, B.y.c0, C.x, C.y]`).
pub const PROOF_LEN: usize = 256;

/// A proof as the 256 bytes a wallet sends to an exit node and the pool takes.
pub fn encode_proof(proof: &Proof<Bn254>) -> [u8; PROOF_LEN] {
    use ark_ff::{BigInteger, PrimeField};
    let words = [proof.a.x, proof.a.y, proof.b.x.c1, proof.b.x.c0, proof.b.y.c1, proof.b.y.c0, proof.c.x, proof.c.y];
    let mut out = [0u8; PROOF_LEN];
    for (chunk, w) in out.chunks_exact_mut(32).zip(words) {
        chunk.copy_from_slice(&w.into_bigint().to_bytes_be());
    }
    out
}

/// Decodes [`encode_proof`]'s bytes, refusing anything that is not a proof's
/// shape: a wrong length, a coordinate not below the base field modulus, a
/// point off its curve or outside the prime-order subgroup, or a point at
/// infinity. An exit node runs this (and [`verify`]) before paying gas for a
/// relay.
pub fn decode_proof(bytes: &[u8]) -> Result<Proof<Bn254>, ProofError> {
    use ark_bn254::{Fq, Fq2, G1Affine, G2Affine};
    let bad = |reason: &str| ProofError::Decode { what: "proof".into(), reason: reason.into() };
    if bytes.len() != PROOF_LEN {
        return Err(bad(&format!("{} bytes, not {PROOF_LEN}", bytes.len())));
    }
    let mut w = [Fq::zero(); 8];
    for (i, chunk) in bytes.chunks_exact(32).enumerate() {
        let mut word = [0u8; 32];
        word.copy_from_slice(chunk);
        w[i] = crate::field::from_be32(&word)
            .ok_or_else(|| bad(&format!("word {i} is not below the base field modulus")))?;
    }
    let g1 = |x: Fq, y: Fq, name: &str| {
        let p = G1Affine::new_unchecked(x, y);
        if x.is_zero() && y.is_zero() {
            return Err(bad(&format!("{name} is the point at infinity")));
        }
        if !p.is_on_curve() || !p.is_in_correct_subgroup_assuming_on_curve() {
            return Err(bad(&format!("{name} is not a point of G1")));
        }
        Ok(p)
    };
    let a = g1(w[0], w[1], "A")?;
    let b = G2Affine::new_unchecked(Fq2::new(w[3], w[2]), Fq2::new(w[5], w[4]));
    if b.x.is_zero() && b.y.is_zero() {
        return Err(bad("B is the point at infinity"));
    }
    if !b.is_on_curve() || !b.is_in_correct_subgroup_assuming_on_curve() {
        return Err(bad("B is not a point of G2"));
    }
    let c = g1(w[6], w[7], "C")?;
    Ok(Proof { a, b, c })
}

/// Prepares a verifying key for repeated verification.
pub fn prepare(vk: &VerifyingKey<Bn254>) -> PreparedVerifyingKey<Bn254> {
    ark_groth16::prepare_verifying_key(vk)
}

/// Whether `proof` proves a spend with `public`.
pub fn verify(pvk: &PreparedVerifyingKey<Bn254>, public: &PublicInputs, proof: &Proof<Bn254>) -> bool {
    Groth16::<Bn254>::verify_with_processed_vk(pvk, &public.to_vec(), proof).unwrap_or(false)
}

fn write(path: &Path, value: &impl CanonicalSerialize) -> Result<(), ProofError> {
    let mut bytes = Vec::new();
    value.serialize_uncompressed(&mut bytes).map_err(snark)?;
    std::fs::write(path, bytes).map_err(|source| ProofError::Io { path: path.display().to_string(), source })
}

/// One field of a key's uncompressed encoding, for [`check_layout`].
#[derive(Clone, Copy)]
enum Part {
    /// That many bytes.
    Fixed(usize),
    /// A little-endian `u64` count, then that many elements of this size.
    List(usize),
}

const G1: usize = 64;
const G2: usize = 128;
/// `VerifyingKey`: alpha (G1), beta, gamma, delta (G2), gamma_abc (G1 list).
const VK_LAYOUT: [Part; 2] = [Part::Fixed(G1 + 3 * G2), Part::List(G1)];
/// `ProvingKey`: the verifying key, beta and delta (G1), then the a, b (G1),
/// b (G2), h and l queries.
const PK_LAYOUT: [Part; 8] = [
    Part::Fixed(G1 + 3 * G2),
    Part::List(G1),
    Part::Fixed(2 * G1),
    Part::List(G1),
    Part::List(G1),
    Part::List(G2),
    Part::List(G1),
    Part::List(G1),
];

/// Checks every count in `bytes` against the bytes that follow it, so that a
/// corrupt or hostile file is a decode error rather than an allocation of
/// whatever size its counts claim (the deserialiser trusts them).
fn check_layout(bytes: &[u8], layout: &[Part]) -> Result<(), String> {
    let mut at = 0usize;
    for part in layout {
        let size = match *part {
            Part::Fixed(n) => n,
            Part::List(elem) => {
                let count: [u8; 8] = bytes.get(at..at + 8).and_then(|c| c.try_into().ok()).ok_or("truncated")?;
                at += 8;
                let count = usize::try_from(u64::from_le_bytes(count)).map_err(|_| "count too large")?;
                count.checked_mul(elem).ok_or("count too large")?
            }
        };
        at = at.checked_add(size).filter(|end| *end <= bytes.len()).ok_or("truncated or count too large")?;
    }
    if at != bytes.len() { Err(format!("{} bytes after the key", bytes.len() - at)) } else { Ok(()) }
}

fn read<T: CanonicalDeserialize>(path: &Path, layout: &[Part]) -> Result<T, ProofError> {
    let decode = |reason: String| ProofError::Decode { what: path.display().to_string(), reason };
    let bytes = std::fs::read(path).map_err(|source| ProofError::Io { path: path.display().to_string(), source })?;
    check_layout(&bytes, layout).map_err(decode)?;
    T::deserialize_uncompressed(bytes.as_slice()).map_err(|e| decode(e.to_string()))
}

impl Keys {
    /// The verifying key.
    pub fn vk(&self) -> &VerifyingKey<Bn254> {
        &self.pk.vk
    }

    /// Writes `spend.pk` and `spend.vk` into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> Result<(), ProofError> {
        std::fs::create_dir_all(dir).map_err(|source| ProofError::Io { path: dir.display().to_string(), source })?;
        write(&dir.join(PROVING_KEY_FILE), &self.pk)?;
        write(&dir.join(VERIFYING_KEY_FILE), self.vk())
    }

    /// Reads the keys `Keys::write` wrote for trees of `depth`. Points are
    /// checked to be on their curves and in the right subgroups; keys of
    /// another depth or another circuit are [`ProofError::WrongCircuit`].
    pub fn read(dir: &Path, depth: usize) -> Result<Self, ProofError> {
        let pk: ProvingKey<Bn254> = read(&dir.join(PROVING_KEY_FILE), &PK_LAYOUT)?;
        let vk = read_verifying_key(&dir.join(VERIFYING_KEY_FILE))?;
        if pk.vk != vk {
            return Err(ProofError::Decode {
                what: dir.display().to_string(),
                reason: "the proving key and the verifying key are from different setups".into(),
            });
        }
        let matrices = matrices(depth)?;
        let variables = matrices.num_instance_variables + matrices.num_witness_variables;
        if pk.a_query.len() != variables || pk.l_query.len() != matrices.num_witness_variables {
            return Err(ProofError::WrongCircuit { depth });
        }
        Ok(Keys { pk, depth, matrices: Arc::new(matrices) })
    }
}

/// Reads only a verifying key (what a verifier, such as an exit node, needs);
/// one for another number of public inputs is [`ProofError::WrongCircuit`].
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey<Bn254>, ProofError> {
    let vk: VerifyingKey<Bn254> = read(path, &VK_LAYOUT)?;
    if vk.gamma_abc_g1.len() != crate::spend::NUM_PUBLIC_INPUTS + 1 {
        return Err(ProofError::WrongCircuit { depth: 0 });
    }
    Ok(vk)
}

#[cfg(test)]
mod tests {
    use ark_ff::UniformRand;

    use super::*;
    use crate::note::{Note, SpendingKey};
    use crate::spend::Spend;
    use crate::tree::MerkleTree;

    const DEPTH: usize = 4;

    fn spend(rng: &mut ChaCha20Rng) -> (PublicInputs, SpendCircuit) {
        let sk = SpendingKey::random(rng);
        let note = Note::new(Fr::from(1u64), 100, sk.owner(), rng);
        let mut tree = MerkleTree::new(DEPTH);
        tree.insert(Fr::rand(rng)).unwrap();
        let index = tree.insert(note.commitment()).unwrap();
        let s = Spend {
            path: tree.path(index).unwrap(),
            index,
            public_value: 30,
            change: Note::new(Fr::from(1u64), 70, sk.owner(), rng),
            recipient: Fr::from(5u64),
            execution_hash: Fr::from(6u64),
            note,
            sk,
        };
        let (public, witness) = s.inputs(DEPTH).unwrap();
        (public, SpendCircuit::new(DEPTH, public, witness))
    }

    #[test]
    fn proofs_verify_only_with_their_public_inputs() {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let keys = dev_setup(DEPTH).unwrap();
        let pvk = prepare(keys.vk());
        let (public, circuit) = spend(&mut rng);
        let proof = prove(&keys, circuit, &mut rng).unwrap();
        assert!(verify(&pvk, &public, &proof));
        for tamper in [
            |p: &mut PublicInputs| p.recipient += Fr::from(1u64),
            |p: &mut PublicInputs| p.execution_hash += Fr::from(1u64),
            |p: &mut PublicInputs| p.public_value += Fr::from(1u64),
            |p: &mut PublicInputs| p.nullifier += Fr::from(1u64),
            |p: &mut PublicInputs| p.root += Fr::from(1u64),
            |p: &mut PublicInputs| p.change_commitment += Fr::from(1u64),
            |p: &mut PublicInputs| p.asset += Fr::from(1u64),
        ] {
            let mut p = public;
            tamper(&mut p);
            assert!(!verify(&pvk, &p, &proof));
        }
    }

    #[test]
    fn proofs_round_trip_as_bytes_and_hostile_bytes_are_typed_errors() {
        let mut rng = ChaCha20Rng::seed_from_u64(13);
        let keys = dev_setup(DEPTH).unwrap();
        let pvk = prepare(keys.vk());
        let (public, circuit) = spend(&mut rng);
        let proof = prove(&keys, circuit, &mut rng).unwrap();
        let bytes = encode_proof(&proof);
        let decoded = decode_proof(&bytes).unwrap();
        assert_eq!(decoded, proof);
        assert!(verify(&pvk, &public, &decoded));

        let decode_err = |b: &[u8]| match decode_proof(b) {
            Err(ProofError::Decode { reason, .. }) => reason,
            other => panic!("expected a decode error, got {other:?}"),
        };
        assert!(decode_err(&bytes[..255]).contains("255 bytes"));
        assert!(decode_err(&[0u8; 256]).contains("infinity"));
        let mut b = bytes;
        b[..32].copy_from_slice(&[0xff; 32]);
        assert!(decode_err(&b).contains("word 0"));
        let mut b = bytes;
        b[63] ^= 1; // A.y changed: off the curve
        assert!(decode_err(&b).contains("A is not"));
        let mut b = bytes;
        b[127] ^= 1; // B.x.c0 changed
        assert!(decode_err(&b).contains("B is not"));
        let mut b = bytes;
        b[255] ^= 1;
        assert!(decode_err(&b).contains("C is not"));
        // Random bytes never decode into something that panics, and never verify.
        let mut rng = ChaCha20Rng::seed_from_u64(14);
        for _ in 0..200 {
            let mut junk = [0u8; 256];
            rand::RngCore::fill_bytes(&mut rng, &mut junk);
            if let Ok(p) = decode_proof(&junk) {
                assert!(!verify(&pvk, &public, &p));
            }
        }
    }

    #[test]
    fn an_unsatisfied_witness_is_an_error_not_a_proof() {
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        let keys = dev_setup(DEPTH).unwrap();
        let (_, mut circuit) = spend(&mut rng);
        if let Some(w) = circuit.witness.as_mut() {
            w.path[0] += Fr::from(1u64);
        }
        assert!(matches!(prove(&keys, circuit, &mut rng), Err(ProofError::Unsatisfied)));
    }

    #[test]
    fn the_dev_setup_is_deterministic_and_keys_round_trip_through_files() {
        let a = dev_setup(DEPTH).unwrap();
        let b = dev_setup(DEPTH).unwrap();
        assert_eq!(a.vk(), b.vk());
        let dir = tempfile::tempdir().unwrap();
        a.write(dir.path()).unwrap();
        let read = Keys::read(dir.path(), DEPTH).unwrap();
        assert_eq!(read.vk(), a.vk());
        assert_eq!(read.depth, DEPTH);
        assert_eq!(read_verifying_key(&dir.path().join(VERIFYING_KEY_FILE)).unwrap(), *a.vk());
        // Keys of another depth are told apart when they are read.
        assert!(
            matches!(Keys::read(dir.path(), DEPTH + 1), Err(ProofError::WrongCircuit { depth }) if depth == DEPTH + 1)
        );
        let pk_path = dir.path().join(PROVING_KEY_FILE);
        let pk = std::fs::read(&pk_path).unwrap();
        // A truncated key file is a decode error, not a panic.
        std::fs::write(&pk_path, &pk[..pk.len() / 2]).unwrap();
        assert!(matches!(Keys::read(dir.path(), DEPTH), Err(ProofError::Decode { .. })));
        // A count claiming 2^40 elements is refused before anything is allocated
        // (the deserialiser would try to reserve room for them all).
        let mut hostile = pk.clone();
        let gamma_abc_count = G1 + 3 * G2;
        hostile[gamma_abc_count..gamma_abc_count + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        std::fs::write(&pk_path, &hostile).unwrap();
        assert!(matches!(Keys::read(dir.path(), DEPTH), Err(ProofError::Decode { .. })));
        let vk_path = dir.path().join(VERIFYING_KEY_FILE);
        let mut vk = std::fs::read(&vk_path).unwrap();
        vk[gamma_abc_count..gamma_abc_count + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&vk_path, &vk).unwrap();
        assert!(matches!(read_verifying_key(&vk_path), Err(ProofError::Decode { .. })));
        // Keys of another setup do not pair up.
        a.write(dir.path()).unwrap();
        let other = setup(DEPTH, &mut ChaCha20Rng::seed_from_u64(1)).unwrap();
        write(&pk_path, &other.pk).unwrap();
        assert!(matches!(Keys::read(dir.path(), DEPTH), Err(ProofError::Decode { .. })));
        assert!(matches!(Keys::read(&dir.path().join("missing"), DEPTH), Err(ProofError::Io { .. })));
    }
}
