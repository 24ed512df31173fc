//! Poseidon over the BN254 scalar field, the instance circomlib uses, so that
//! hashes agree between this crate, the Solidity contracts and any circom
//! tooling a user already has.
//!
//! Parameters: S-box `x⁵`, 8 full rounds, state width `t = inputs + 1`
//! (1 to 16 inputs), partial rounds by width as in [`PARTIAL_ROUNDS`]. The
//! round constants and the Cauchy MDS matrix are not tables in this file: they
//! are derived at first use from the Grain LFSR exactly as the Poseidon
//! paper's parameter generation describes (the LFSR seeded with field type,
//! S-box, field size, width and round numbers; 160 bits discarded; a
//! self-shrinking output; round constants by rejection sampling below the
//! modulus; then `2t` distinct elements `x, y` for `M[i][j] = 1 / (x_i + y_j)`).
//! The tests pin the result to circomlib's published outputs for every width
//! from 2 to 7 and to the reference permutation vector.
//!
//! Hashing `inputs`: the state is `[0, inputs…]`; each round adds its round
//! constants, applies the S-box (to every element in a full round, to the
//! first in a partial round) and multiplies by the MDS matrix; the hash is the
//! first element of the final state.

use std::sync::OnceLock;

use ark_bn254::Fr;
use ark_ff::{BigInteger, BigInteger256, Field, PrimeField, Zero};

/// Full rounds (half before the partial rounds, half after).
pub const FULL_ROUNDS: usize = 8;
/// Partial rounds for state widths 2 to 17 (index `t - 2`).
pub const PARTIAL_ROUNDS: [usize; 16] = [56, 57, 56, 60, 60, 63, 64, 63, 60, 66, 60, 65, 70, 60, 64, 68];
/// Most inputs one hash takes.
pub const MAX_INPUTS: usize = 16;

/// Poseidon errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoseidonError {
    /// The number of inputs is not between 1 and [`MAX_INPUTS`].
    #[error("Poseidon takes 1 to {MAX_INPUTS} inputs, got {0}")]
    Arity(usize),
}

/// The constants of one state width.
#[derive(Debug)]
pub struct Params {
    /// State width.
    pub t: usize,
    /// Partial rounds.
    pub partial_rounds: usize,
    /// `(FULL_ROUNDS + partial_rounds) × t` round constants, round by round.
    pub round_constants: Vec<Fr>,
    /// The `t × t` MDS matrix: `new[i] = Σ_j mds[i][j] · old[j]`.
    pub mds: Vec<Vec<Fr>>,
}

impl Params {
    /// Total rounds.
    pub fn rounds(&self) -> usize {
        FULL_ROUNDS + self.partial_rounds
    }

    /// Whether round `r` is a full round.
    pub fn is_full_round(&self, r: usize) -> bool {
        r < FULL_ROUNDS / 2 || r >= FULL_ROUNDS / 2 + self.partial_rounds
    }
}

/// The constants for state width `t` (2 to 17), derived once.
pub fn params(t: usize) -> Result<&'static Params, PoseidonError> {
    static CACHE: [OnceLock<Params>; MAX_INPUTS] = [const { OnceLock::new() }; MAX_INPUTS];
    if !(2..=MAX_INPUTS + 1).contains(&t) {
        return Err(PoseidonError::Arity(t.saturating_sub(1)));
    }
    Ok(CACHE[t - 2].get_or_init(|| derive(t)))
}

/// Poseidon hash of 1 to 16 field elements.
pub fn hash(inputs: &[Fr]) -> Result<Fr, PoseidonError> {
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        return Err(PoseidonError::Arity(inputs.len()));
    }
    let p = params(inputs.len() + 1)?;
    let mut state = Vec::with_capacity(p.t);
    state.push(Fr::zero());
    state.extend_from_slice(inputs);
    permute(p, &mut state);
    Ok(state[0])
}

/// Poseidon of two elements (Merkle nodes, nullifiers).
pub fn hash2(a: Fr, b: Fr) -> Fr {
    let p = params(3).unwrap_or_else(|_| unreachable!("width 3 is supported"));
    let mut state = vec![Fr::zero(), a, b];
    permute(p, &mut state);
    state[0]
}

/// The Poseidon permutation of `state` (its length must be `p.t`).
pub fn permute(p: &Params, state: &mut [Fr]) {
    debug_assert_eq!(state.len(), p.t);
    let mut next = vec![Fr::zero(); p.t];
    for r in 0..p.rounds() {
        for (s, c) in state.iter_mut().zip(&p.round_constants[r * p.t..(r + 1) * p.t]) {
            *s += c;
        }
        if p.is_full_round(r) {
            state.iter_mut().for_each(sbox);
        } else {
            sbox(&mut state[0]);
        }
        for (n, row) in next.iter_mut().zip(&p.mds) {
            *n = row.iter().zip(state.iter()).map(|(m, s)| *m * s).sum();
        }
        state.copy_from_slice(&next);
    }
}

fn sbox(x: &mut Fr) {
    let x2 = x.square();
    *x *= x2.square();
}

/// The Grain LFSR of the Poseidon parameter generation, 80 bits of state.
struct Grain {
    /// Bit `i` is the `i`-th oldest bit of the sequence.
    state: u128,
}

impl Grain {
    const LEN: u32 = 80;

    fn new(t: usize, partial_rounds: usize) -> Self {
        // (value, width): field type 1 (prime field), S-box 0 (x^alpha), field
        // size 254 bits, width, full and partial rounds, then thirty 1 bits.
        let fields: [(u64, u32); 7] = [
            (1, 2),
            (0, 4),
            (254, 12),
            (t as u64, 12),
            (FULL_ROUNDS as u64, 10),
            (partial_rounds as u64, 10),
            ((1 << 30) - 1, 30),
        ];
        let mut g = Grain { state: 0 };
        let mut pos = 0;
        for (value, width) in fields {
            for i in (0..width).rev() {
                g.state |= u128::from((value >> i) & 1) << pos;
                pos += 1;
            }
        }
        debug_assert_eq!(pos, Self::LEN);
        for _ in 0..160 {
            g.step();
        }
        g
    }

    fn step(&mut self) -> bool {
        let s = self.state;
        let bit = ((s >> 62) ^ (s >> 51) ^ (s >> 38) ^ (s >> 23) ^ (s >> 13) ^ s) & 1;
        self.state = (s >> 1) | (bit << (Self::LEN - 1));
        bit == 1
    }

    /// Self-shrinking output: of each pair of bits, the second when the first is 1.
    fn next_bit(&mut self) -> bool {
        loop {
            let keep = self.step();
            let bit = self.step();
            if keep {
                return bit;
            }
        }
    }

    /// 254 output bits, most significant first.
    fn next_254(&mut self) -> BigInteger256 {
        let mut limbs = [0u64; 4];
        for i in (0..254).rev() {
            if self.next_bit() {
                limbs[i / 64] |= 1 << (i % 64);
            }
        }
        BigInteger256::new(limbs)
    }

    /// A field element by rejection sampling (round constants).
    fn next_below_modulus(&mut self) -> Fr {
        loop {
            let v = self.next_254();
            if let Some(f) = Fr::from_bigint(v) {
                return f;
            }
        }
    }

    /// A field element reduced modulo p (the MDS samples).
    fn next_reduced(&mut self) -> Fr {
        Fr::from_le_bytes_mod_order(&self.next_254().to_bytes_le())
    }
}

fn derive(t: usize) -> Params {
    let partial_rounds = PARTIAL_ROUNDS[t - 2];
    let mut grain = Grain::new(t, partial_rounds);
    let round_constants: Vec<Fr> =
        (0..(FULL_ROUNDS + partial_rounds) * t).map(|_| grain.next_below_modulus()).collect();
    let mds = loop {
        let mut samples: Vec<Fr> = (0..2 * t).map(|_| grain.next_reduced()).collect();
        while !all_distinct(&samples) {
            samples = (0..2 * t).map(|_| grain.next_reduced()).collect();
        }
        let (xs, ys) = samples.split_at(t);
        let rows: Option<Vec<Vec<Fr>>> =
            xs.iter().map(|x| ys.iter().map(|y| (*x + y).inverse()).collect::<Option<Vec<Fr>>>()).collect();
        if let Some(rows) = rows {
            break rows;
        }
    };
    Params { t, partial_rounds, round_constants, mds }
}

fn all_distinct(v: &[Fr]) -> bool {
    v.iter().enumerate().all(|(i, a)| v[i + 1..].iter().all(|b| a != b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fr(n: u64) -> Fr {
        Fr::from(n)
    }

    /// circomlib's outputs for `Poseidon([1, …, n])` and `Poseidon([0])`.
    const VECTORS: [(&[u64], &str); 7] = [
        (&[1], "0x29176100eaa962bdc1fe6c654d6a3c130e96a4d1168b33848b897dc502820133"),
        (&[1, 2], "0x115cc0f5e7d690413df64c6b9662e9cf2a3617f2743245519e19607a4417189a"),
        (&[1, 2, 3], "0x0e7732d89e6939c0ff03d5e58dab6302f3230e269dc5b968f725df34ab36d732"),
        (&[1, 2, 3, 4], "0x299c867db6c1fdd79dcefa40e4510b9837e60ebb1ce0663dbaa525df65250465"),
        (&[1, 2, 3, 4, 5], "0x0dab9449e4a1398a15224c0b15a49d598b2174d305a316c918125f8feeb123c0"),
        (&[1, 2, 3, 4, 5, 6], "0x2d1a03850084442813c8ebf094dea47538490a68b05f2239134a4cca2f6302e1"),
        (&[0], "0x2a09a9fd93c590c26b91effbb2499f07e8f7aa12e2b4940a3aed2411cb65e11c"),
    ];

    #[test]
    fn matches_circomlib_for_widths_2_to_7() {
        for (inputs, expected) in VECTORS {
            let inputs: Vec<Fr> = inputs.iter().map(|&n| fr(n)).collect();
            assert_eq!(crate::field::to_hex(&hash(&inputs).unwrap()), expected, "Poseidon({inputs:?})");
        }
    }

    #[test]
    fn matches_the_reference_permutation_vector() {
        let p = params(3).unwrap();
        let mut state = vec![fr(0), fr(1), fr(2)];
        permute(p, &mut state);
        let hexes: Vec<String> = state.iter().map(crate::field::to_hex).collect();
        assert_eq!(
            hexes,
            [
                "0x115cc0f5e7d690413df64c6b9662e9cf2a3617f2743245519e19607a4417189a",
                "0x0fca49b798923ab0239de1c9e7a4a9a2210312b6a2f616d18b5a87f9b628ae29",
                "0x0e7ae82e40091e63cbd4f16a6d16310b3729d4b6e138fcf54110e2867045a30c",
            ]
        );
    }

    #[test]
    fn hash2_is_hash_of_two() {
        assert_eq!(hash2(fr(1), fr(2)), hash(&[fr(1), fr(2)]).unwrap());
        assert_ne!(hash2(fr(1), fr(2)), hash2(fr(2), fr(1)));
    }

    #[test]
    fn arity_is_checked() {
        assert_eq!(hash(&[]), Err(PoseidonError::Arity(0)));
        assert_eq!(hash(&[fr(1); 17]), Err(PoseidonError::Arity(17)));
        assert!(hash(&[fr(1); 16]).is_ok());
        assert!(params(1).is_err() && params(18).is_err());
    }

    #[test]
    fn every_width_has_well_formed_constants() {
        for t in 2..=17 {
            let p = params(t).unwrap();
            assert_eq!(p.round_constants.len(), (FULL_ROUNDS + PARTIAL_ROUNDS[t - 2]) * t);
            assert_eq!(p.mds.len(), t);
            assert!(p.mds.iter().all(|row| row.len() == t && row.iter().all(|m| !m.is_zero())));
        }
    }
}
