//! # nox-circuits
//!
//! The shielded pool's cryptography: Poseidon (circomlib's instance), notes,
//! the incremental Merkle tree, the spend circuit that serves withdrawals and
//! gas payments, Groth16 over BN254, and the Solidity verifier generated from
//! the verifying key.

#![warn(missing_docs)]

pub mod field;
pub mod fixtures;
pub mod gadgets;
pub mod groth16;
pub mod insert;
pub mod note;
pub mod pool;
pub mod poseidon;
pub mod poseidon_opt;
pub mod solidity;
pub mod spend;
pub mod tree;
