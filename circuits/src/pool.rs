//! What `NoxPool` computes on chain and a wallet must compute the same way.
//!
//! The execution hash binds a gas payment to one call and to the gas that call
//! must be given:
//!
//! ```text
//! execution_hash = uint256(keccak256(abi.encode(
//!     uint256 chain_id, address pool, address target, uint256 call_gas, uint256 deadline, bytes32 keccak256(data)
//! ))) mod r
//! ```
//!
//! where `r` is the BN254 scalar field modulus. Binding `call_gas` keeps a
//! relayer from sending the transaction with too little gas for the call, so
//! that the call fails and the fee is kept: the executor gives the call exactly
//! `call_gas` and reverts the whole relay if it could not. Binding `deadline`
//! (a Unix time) makes the proof expire: the pool refuses the relay in a block
//! after it, so a relayer cannot hold a proof and use it at a time of its
//! choosing, and a wallet knows when an unused note is safe to spend again. A
//! withdrawal uses `target = address(0)`, `call_gas = 0`, `deadline = 0` and
//! empty `data`, which binds it to the chain and the pool; `relay` refuses
//! `target = address(0)`, so the two never share a hash.

use alloy_primitives::keccak256;
use ark_bn254::Fr;
use ark_ff::PrimeField;

/// The call a gas payment is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execution<'a> {
    /// The chain.
    pub chain_id: u64,
    /// The pool that pays.
    pub pool: &'a [u8; 20],
    /// The called contract (zero for a withdrawal).
    pub target: &'a [u8; 20],
    /// Gas the call is given.
    pub call_gas: u64,
    /// The last Unix time (seconds) at which the relay may be mined.
    pub deadline: u64,
    /// The calldata.
    pub data: &'a [u8],
}

/// The execution hash of a call (see the module docs).
pub fn execution_hash(e: &Execution<'_>) -> Fr {
    let mut encoded = [0u8; 192];
    encoded[24..32].copy_from_slice(&e.chain_id.to_be_bytes());
    encoded[44..64].copy_from_slice(e.pool);
    encoded[76..96].copy_from_slice(e.target);
    encoded[120..128].copy_from_slice(&e.call_gas.to_be_bytes());
    encoded[152..160].copy_from_slice(&e.deadline.to_be_bytes());
    encoded[160..192].copy_from_slice(keccak256(e.data).as_slice());
    Fr::from_be_bytes_mod_order(keccak256(encoded).as_slice())
}

/// The execution hash of a withdrawal from `pool` on chain `chain_id`.
pub fn withdrawal_hash(chain_id: u64, pool: &[u8; 20]) -> Fr {
    execution_hash(&Execution { chain_id, pool, target: &[0; 20], call_gas: 0, deadline: 0, data: &[] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_of_the_call_changes_the_hash() {
        let (pool, target, other) = ([1u8; 20], [2u8; 20], [3u8; 20]);
        let e =
            Execution { chain_id: 31337, pool: &pool, target: &target, call_gas: 50_000, deadline: 9, data: b"call" };
        let h = execution_hash(&e);
        assert_ne!(execution_hash(&Execution { chain_id: 1, ..e }), h);
        assert_ne!(execution_hash(&Execution { pool: &other, ..e }), h);
        assert_ne!(execution_hash(&Execution { target: &other, ..e }), h);
        assert_ne!(execution_hash(&Execution { call_gas: 50_001, ..e }), h);
        assert_ne!(execution_hash(&Execution { deadline: 10, ..e }), h);
        assert_ne!(execution_hash(&Execution { data: b"calm", ..e }), h);
        assert_eq!(execution_hash(&e), h);
        assert_ne!(withdrawal_hash(31337, &pool), h);
    }
}
