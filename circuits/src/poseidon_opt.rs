//! Poseidon rearranged so that a partial round is cheap: the form the
//! generated Solidity libraries compute ([`crate::solidity::poseidon_library`]),
//! with its native twin here, tested equal to [`crate::poseidon::permute`].
//!
//! A partial round of the plain form adds `t` round constants, raises the first
//! element to the fifth power and multiplies by the dense MDS matrix (`t²`
//! products). Three exact rewrites, the first two from the Poseidon paper's
//! appendix B:
//!
//! * **Constants move forward.** In a partial round, the constants added to
//!   elements `1..t` pass the S-box untouched, so adding them equals adding
//!   `M · (0, c₁, …)` after the round: they are carried into the next round's
//!   constants, and the last partial round hands the total to the first full
//!   round after it. Each partial round then adds one constant, to element 0.
//! * **The matrix splits.** Write a matrix as `[[a, bᵀ], [c, E]]`. It equals
//!   `S · A` with the sparse `S = [[a, (E⁻ᵀ b)ᵀ], [c, I]]` and `A = diag(1, E)`.
//!   `A` leaves element 0 alone, so it commutes with a partial round's S-box
//!   and its constant: it moves into the previous round's matrix (`A · M`),
//!   which splits again. Going from the last partial round to the first, every
//!   partial round keeps a sparse `S` (`2t - 1` products) and the last full
//!   round before them ends with the dense `A · M` (the pre-sparse matrix).
//! * **Elements carry a factor.** Each state element may be held multiplied
//!   by a known nonzero factor, which the constants and coefficients that
//!   touch it absorb; choosing each row's new factor as the inverse of one of
//!   its coefficients turns that coefficient into one: an addition instead of
//!   a product, in every row of every product but the last (see `rescale`).
//!
//! A hash starts from `[0, inputs…]`: the S-box of round 0's first element is
//! then a constant, so its share of round 0's product (column 0) becomes part
//! of round 1's constants. Only element 0 of the last product is the hash.
//!
//! What flows out is a list of [`Step`]s. [`run`] executes them on field
//! elements; the Solidity generator prints the same list, so the tests that
//! compare [`run`] with [`crate::poseidon::permute`] and
//! [`crate::poseidon::hash`] check the arithmetic the contracts do (reduction
//! modulo `p` aside: the generator keeps sums below `2^256` and reduces the
//! output).

use ark_bn254::Fr;
use ark_ff::{Field, One, Zero};

use crate::poseidon::{FULL_ROUNDS, Params};

/// A square matrix over the field, row by row.
pub type Matrix = Vec<Vec<Fr>>;

/// One operation on the state `s` of width `t`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `s[i] += c`.
    Add(usize, Fr),
    /// `s[i] = s[i]⁵`.
    Sbox(usize),
    /// `s[i] = Σ_j rows[i][j] · s[j]` for the rows given (all `t`, or only the
    /// first for a hash's last round). Zero coefficients cost nothing.
    Dense(Matrix),
    /// `s[0] = Σ_j row[j] · s[j]` and `s[i] += col[i - 1] · s[0]` for `i ≥ 1`,
    /// both with the old `s`.
    Sparse {
        /// The new first element's coefficients (`t`).
        row: Vec<Fr>,
        /// The old first element's coefficient in each other element (`t - 1`).
        col: Vec<Fr>,
    },
}

/// Why the rearrangement failed: a block of the MDS matrix's powers is not
/// invertible (never for a Cauchy matrix, whose square blocks all are).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Poseidon width {t}: the lower-right block of a partial round's matrix is singular")]
pub struct SingularBlock {
    /// The state width.
    pub t: usize,
}

/// The steps of the whole permutation: `run(&permutation(p)?, state)` equals
/// `poseidon::permute(p, state)`.
pub fn permutation(p: &Params) -> Result<Vec<Step>, SingularBlock> {
    Ok(steps(p, false)?.into_iter().flatten().collect())
}

/// The steps of a hash of `t - 1` inputs: run on `[0, inputs…]`, element 0 of
/// the result is `poseidon::hash(inputs)` (the other elements are not kept).
pub fn hash(p: &Params) -> Result<Vec<Step>, SingularBlock> {
    Ok(steps(p, true)?.into_iter().flatten().collect())
}

/// The steps of a hash grouped by round, as the Solidity generator prints them.
pub fn hash_rounds(p: &Params) -> Result<Vec<Vec<Step>>, SingularBlock> {
    steps(p, true)
}

/// Executes `steps` on `state`, which must have the width the steps were made
/// for (a shorter one panics).
pub fn run(steps: &[Step], state: &mut [Fr]) {
    for step in steps {
        match step {
            Step::Add(i, c) => state[*i] += c,
            Step::Sbox(i) => {
                let x2 = state[*i].square();
                state[*i] *= x2.square();
            }
            Step::Dense(rows) => {
                let next: Vec<Fr> = rows.iter().map(|row| dot(row, state)).collect();
                state[..next.len()].copy_from_slice(&next);
            }
            Step::Sparse { row, col } => {
                let x = state[0];
                state[0] = dot(row, state);
                for (s, c) in state[1..].iter_mut().zip(col) {
                    *s += *c * x;
                }
            }
        }
    }
}

fn dot(a: &[Fr], b: &[Fr]) -> Fr {
    a.iter().zip(b).map(|(x, y)| *x * y).sum()
}

/// The rounds of the optimised form; `for_hash` folds the known zero of
/// element 0 into round 1 and keeps only row 0 of the last product.
fn steps(p: &Params, for_hash: bool) -> Result<Vec<Vec<Step>>, SingularBlock> {
    let t = p.t;
    let half = FULL_ROUNDS / 2;
    let first_partial = half;
    let end_partial = half + p.partial_rounds;
    let mut constants: Vec<Vec<Fr>> = p.round_constants.chunks(t).map(<[Fr]>::to_vec).collect();

    // Constants of elements 1.. of a partial round, carried into the next round.
    for r in first_partial..end_partial {
        let mut tail = constants[r].clone();
        tail[0] = Fr::zero();
        constants[r][1..].iter_mut().for_each(|c| *c = Fr::zero());
        for (c, m) in constants[r + 1].iter_mut().zip(mat_vec(&p.mds, &tail)) {
            *c += m;
        }
    }

    // Sparse matrices, from the last partial round back to the first.
    let mut sparse = vec![Step::Sbox(0); p.partial_rounds];
    let mut carried: Option<Matrix> = None; // A = diag(1, E) of the round after
    for r in (first_partial..end_partial).rev() {
        let n = carried.as_ref().map_or_else(|| p.mds.clone(), |a| mat_mul(a, &p.mds));
        let e: Matrix = n[1..].iter().map(|row| row[1..].to_vec()).collect();
        let e_inv_t = transpose(&invert(&e).ok_or(SingularBlock { t })?);
        let mut row = vec![n[0][0]];
        row.extend(mat_vec(&e_inv_t, &n[0][1..]));
        let col = n[1..].iter().map(|row| row[0]).collect();
        sparse[r - first_partial] = Step::Sparse { row, col };
        carried = Some(block_diagonal(&e));
    }
    let pre_sparse = carried.map_or_else(|| p.mds.clone(), |a| mat_mul(&a, &p.mds));

    let mut rounds = Vec::with_capacity(p.rounds());
    for r in 0..p.rounds() {
        let mut round = Vec::new();
        if p.is_full_round(r) {
            // A hash's round 0 starts at element 1: element 0 is known (below).
            let first = usize::from(for_hash && r == 0);
            for (i, c) in constants[r].iter().enumerate().skip(first) {
                round.push(Step::Add(i, *c));
                round.push(Step::Sbox(i));
            }
            let mut m = if r + 1 == first_partial { pre_sparse.clone() } else { p.mds.clone() };
            if for_hash && r == 0 {
                // s[0] is the fifth power of round 0's first constant.
                let k = constants[0][0].pow([5]);
                for (c, row) in constants[1].iter_mut().zip(m.iter_mut()) {
                    *c += row[0] * k;
                    row[0] = Fr::zero();
                }
            }
            if for_hash && r + 1 == p.rounds() {
                m.truncate(1);
            }
            round.push(Step::Dense(m));
        } else {
            round.push(Step::Add(0, constants[r][0]));
            round.push(Step::Sbox(0));
            round.push(sparse[r - first_partial].clone());
        }
        rounds.push(round);
    }
    rescale(&mut rounds, t);
    Ok(rounds)
}

/// Keeps each state element multiplied by a factor of its own, chosen so that
/// one coefficient of every row of every product but the last is one (an
/// addition where a product was). Element `i` is held as `σ_i · s_i`: a
/// constant added to it is scaled by `σ_i`, an S-box raises `σ_i` to the fifth
/// power, and a product's coefficient `m` of element `k` in row `j` becomes
/// `τ_j · m / σ_k`, where `τ_j` is the row's new factor. The last product
/// keeps `τ = 1`, so the output is exact. A sparse product's other rows add to
/// their element in place, so their factor stays.
fn rescale(rounds: &mut [Vec<Step>], t: usize) {
    let mut sigma = vec![Fr::one(); t];
    let last_product = rounds.iter().flatten().filter(|s| matches!(s, Step::Dense(_) | Step::Sparse { .. })).count();
    let mut products = 0;
    // σ is never zero: it starts at one and is only raised to powers or set to
    // a ratio of nonzero elements.
    let inv = |x: &Fr| x.inverse().unwrap_or_else(|| unreachable!("scale factors are nonzero"));
    for step in rounds.iter_mut().flatten() {
        match step {
            Step::Add(i, c) => *c *= sigma[*i],
            Step::Sbox(i) => sigma[*i] = sigma[*i].pow([5]),
            Step::Dense(rows) => {
                products += 1;
                let old: Vec<Fr> = sigma.iter().map(inv).collect();
                for (j, row) in rows.iter_mut().enumerate() {
                    row.iter_mut().zip(&old).for_each(|(m, inv_sigma)| *m *= inv_sigma);
                    let tau = match row.iter().find(|m| !m.is_zero()) {
                        Some(m) if products < last_product => inv(m),
                        _ => Fr::one(),
                    };
                    row.iter_mut().for_each(|m| *m *= tau);
                    sigma[j] = tau;
                }
            }
            Step::Sparse { row, col } => {
                products += 1;
                let inv_x = inv(&sigma[0]);
                row.iter_mut().zip(&sigma).for_each(|(m, s)| *m *= inv(s));
                for (c, s) in col.iter_mut().zip(&sigma[1..]) {
                    *c *= *s * inv_x;
                }
                let tau = if products < last_product && !row[0].is_zero() { inv(&row[0]) } else { Fr::one() };
                row.iter_mut().for_each(|m| *m *= tau);
                sigma[0] = tau;
            }
        }
    }
}

fn mat_vec(m: &Matrix, v: &[Fr]) -> Vec<Fr> {
    m.iter().map(|row| dot(row, v)).collect()
}

fn mat_mul(a: &Matrix, b: &Matrix) -> Matrix {
    let bt = transpose(b);
    a.iter().map(|row| bt.iter().map(|col| dot(row, col)).collect()).collect()
}

fn transpose(m: &Matrix) -> Matrix {
    (0..m.first().map_or(0, Vec::len)).map(|j| m.iter().map(|row| row[j]).collect()).collect()
}

/// `diag(1, e)`.
fn block_diagonal(e: &Matrix) -> Matrix {
    let n = e.len() + 1;
    (0..n)
        .map(|i| {
            (0..n)
                .map(|j| match (i, j) {
                    (0, 0) => Fr::one(),
                    (0, _) | (_, 0) => Fr::zero(),
                    _ => e[i - 1][j - 1],
                })
                .collect()
        })
        .collect()
}

/// Gauss–Jordan elimination; `None` when `m` is singular.
fn invert(m: &Matrix) -> Option<Matrix> {
    let n = m.len();
    let mut a: Matrix = m
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut r = row.clone();
            r.extend((0..n).map(|j| if i == j { Fr::one() } else { Fr::zero() }));
            r
        })
        .collect();
    for col in 0..n {
        let pivot = (col..n).find(|&r| !a[r][col].is_zero())?;
        a.swap(col, pivot);
        let inv = a[col][col].inverse()?;
        a[col].iter_mut().for_each(|x| *x *= inv);
        let pivot_row = a[col].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != col && !row[col].is_zero() {
                let f = row[col];
                row.iter_mut().zip(&pivot_row).for_each(|(x, p)| *x -= f * p);
            }
        }
    }
    Some(a.into_iter().map(|row| row[n..].to_vec()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poseidon::{self, PoseidonError, params};
    use ark_ff::UniformRand;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn widths() -> impl Iterator<Item = &'static Params> {
        (2..=17).map(|t| params(t).unwrap())
    }

    fn edge_inputs(n: usize) -> Vec<Vec<Fr>> {
        let top = -Fr::one();
        vec![vec![Fr::zero(); n], vec![top; n], (0..n).map(|i| Fr::from(i as u64 + 1)).collect()]
    }

    #[test]
    fn the_permutation_equals_the_plain_one() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        for p in widths() {
            let steps = permutation(p).unwrap();
            for _ in 0..4 {
                let state: Vec<Fr> = (0..p.t).map(|_| Fr::rand(&mut rng)).collect();
                let (mut plain, mut fast) = (state.clone(), state.clone());
                poseidon::permute(p, &mut plain);
                run(&steps, &mut fast);
                assert_eq!(fast, plain, "width {}", p.t);
            }
        }
    }

    #[test]
    fn the_hash_equals_the_plain_one() -> Result<(), PoseidonError> {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        for p in widths() {
            let steps = hash(p).unwrap();
            let n = p.t - 1;
            let random = (0..16).map(|_| (0..n).map(|_| Fr::rand(&mut rng)).collect());
            for inputs in edge_inputs(n).into_iter().chain(random) {
                let mut state = vec![Fr::zero()];
                state.extend(&inputs);
                run(&steps, &mut state);
                assert_eq!(state[0], poseidon::hash(&inputs)?, "width {}, {inputs:?}", p.t);
            }
        }
        Ok(())
    }

    /// Coefficients that cost a product: neither zero nor one.
    fn products(step: &Step) -> usize {
        let costly = |m: &&Fr| !m.is_zero() && !m.is_one();
        match step {
            Step::Dense(rows) => rows.iter().flatten().filter(costly).count(),
            Step::Sparse { row, col } => row.iter().chain(col).filter(costly).count(),
            _ => 0,
        }
    }

    #[test]
    fn partial_rounds_add_one_constant_and_multiply_sparsely() {
        for p in widths() {
            let rounds = hash_rounds(p).unwrap();
            assert_eq!(rounds.len(), p.rounds());
            for (r, round) in rounds.iter().enumerate().filter(|(r, _)| !p.is_full_round(*r)) {
                let adds = round.iter().filter(|s| matches!(s, Step::Add(..))).count();
                let sparse = round.iter().filter(|s| matches!(s, Step::Sparse { .. })).count();
                let products: usize = round.iter().map(products).sum();
                assert_eq!((adds, sparse, products), (1, 1, 2 * p.t - 2), "width {}, round {r}", p.t);
            }
        }
    }

    #[test]
    fn every_row_but_the_output_has_a_coefficient_one() {
        for p in widths() {
            let steps = hash(p).unwrap();
            let (last, others) = steps.split_last().unwrap();
            assert!(matches!(last, Step::Dense(rows) if rows.len() == 1));
            for step in others {
                match step {
                    Step::Dense(rows) => assert!(rows.iter().all(|row| row.iter().any(Fr::is_one))),
                    Step::Sparse { row, .. } => assert!(row[0].is_one()),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn a_hash_skips_the_known_zero_and_the_unused_outputs() {
        let p = params(3).unwrap();
        let rounds = hash_rounds(p).unwrap();
        assert!(!rounds[0].contains(&Step::Sbox(0)));
        let Some(Step::Dense(first)) = rounds[0].last() else { panic!("round 0 ends with a product") };
        assert!(first.iter().all(|row| row[0].is_zero()));
        let Some(Step::Dense(last)) = rounds[p.rounds() - 1].last() else { panic!("the last round too") };
        assert_eq!(last.len(), 1);
    }

    #[test]
    fn inversion_inverts_and_refuses_singular_matrices() {
        let p = params(5).unwrap();
        let inv = invert(&p.mds).unwrap();
        let product = mat_mul(&p.mds, &inv);
        for (i, row) in product.iter().enumerate() {
            for (j, x) in row.iter().enumerate() {
                assert_eq!(*x, if i == j { Fr::one() } else { Fr::zero() });
            }
        }
        let singular = vec![vec![Fr::one(), Fr::from(2u64)], vec![Fr::from(2u64), Fr::from(4u64)]];
        assert_eq!(invert(&singular), None);
    }
}
