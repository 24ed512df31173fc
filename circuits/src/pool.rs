//! What `NoxPool` computes on chain and a wallet must compute the same way.
//!
//! The execution hash binds a gas payment to one call and to the gas that call
//! must be given:
//!
//! ```text
//! execution_hash = uint256(keccak256(abi.encode(
//!     uint256 chain_id, address pool, address target, uint256 call_gas, bytes32 keccak256(data)
//! ))) mod r
//! ```
//!
//! where `r` is the BN254 scalar field modulus. Binding `call_gas` keeps a
//! relayer from sending the transaction with too little gas for the call, so
//! that the call fails and the fee is kept: the executor gives the call exactly
//! `call_gas` and reverts the whole relay if it could not. A withdrawal uses
//! `target = address(0)`, `call_gas = 0` and empty `data`, which binds it to
//! the chain and the pool; `relay` refuses `target = address(0)`, so the two
//! never share a hash.

use alloy_primitives::keccak256;
use ark_bn254::Fr;
use ark_ff::PrimeField;

/// The execution hash of a call of `target` with `data` and `call_gas`, paid
/// from `pool` on chain `chain_id`.
pub fn execution_hash(chain_id: u64, pool: &[u8; 20], target: &[u8; 20], call_gas: u64, data: &[u8]) -> Fr {
    let mut encoded = [0u8; 160];
    encoded[24..32].copy_from_slice(&chain_id.to_be_bytes());
    encoded[44..64].copy_from_slice(pool);
    encoded[76..96].copy_from_slice(target);
    encoded[120..128].copy_from_slice(&call_gas.to_be_bytes());
    encoded[128..160].copy_from_slice(keccak256(data).as_slice());
    Fr::from_be_bytes_mod_order(keccak256(encoded).as_slice())
}

/// The execution hash of a withdrawal from `pool` on chain `chain_id`.
pub fn withdrawal_hash(chain_id: u64, pool: &[u8; 20]) -> Fr {
    execution_hash(chain_id, pool, &[0; 20], 0, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_of_the_call_changes_the_hash() {
        let (pool, target) = ([1u8; 20], [2u8; 20]);
        let h = execution_hash(31337, &pool, &target, 50_000, b"call");
        assert_ne!(execution_hash(1, &pool, &target, 50_000, b"call"), h);
        assert_ne!(execution_hash(31337, &[3; 20], &target, 50_000, b"call"), h);
        assert_ne!(execution_hash(31337, &pool, &[3; 20], 50_000, b"call"), h);
        assert_ne!(execution_hash(31337, &pool, &target, 50_001, b"call"), h);
        assert_ne!(execution_hash(31337, &pool, &target, 50_000, b"calm"), h);
        assert_eq!(execution_hash(31337, &pool, &target, 50_000, b"call"), h);
        assert_ne!(withdrawal_hash(31337, &pool), h);
    }
}
