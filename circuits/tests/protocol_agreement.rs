//! What `nox-protocol` and this crate must agree on without depending on each
//! other: the BN254 moduli a gas payment's words are range-checked against,
//! and the proof's 256-byte word order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ark_bn254::{Fq, Fr};
use ark_ff::{BigInteger, PrimeField};
use nox_protocol::payment::{BASE_MODULUS, PROOF_LEN, SCALAR_MODULUS};

#[test]
fn the_payment_checks_use_bn254s_moduli() {
    assert_eq!(Fr::MODULUS.to_bytes_be(), SCALAR_MODULUS.to_vec());
    assert_eq!(Fq::MODULUS.to_bytes_be(), BASE_MODULUS.to_vec());
    assert_eq!(nox_circuits::groth16::PROOF_LEN, PROOF_LEN);
}
