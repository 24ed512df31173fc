//! Notes, their commitments and nullifiers.
//!
//! ```text
//! owner      = Poseidon(sk)                                   (1 input)
//! secret     = Poseidon(owner, blinding)                      (2 inputs)
//! commitment = Poseidon(asset, value, secret)                 (3 inputs)
//! nullifier  = Poseidon(sk, commitment, leaf_index)           (3 inputs)
//! ```
//!
//! `sk` is the owner's spending key, a random field element; `owner` is what
//! a payer puts in a note for them. `asset` is the token's address as an
//! integer (0 for ETH), `value` a `u128`, `blinding` a random field element.
//! The commitment is split so that a deposit can reveal `asset` and `value`
//! (the pool must check them against what it receives) and `secret`, which
//! hides the owner behind the blinding, and the pool computes the commitment
//! itself: a depositor cannot claim more than it paid. The nullifier needs
//! `sk`, so only the owner can spend or even recognise the note as spent; it
//! includes the leaf index, so two notes with the same commitment at
//! different leaves are spent separately.

use ark_bn254::Fr;
use ark_ff::{PrimeField, UniformRand};
use rand::{CryptoRng, RngCore};

use crate::poseidon::hash;

/// A spending key. Its `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct SpendingKey(pub Fr);

impl std::fmt::Debug for SpendingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpendingKey(<secret>)")
    }
}

impl SpendingKey {
    /// A fresh random key.
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        SpendingKey(Fr::rand(rng))
    }

    /// The owner value notes for this key carry.
    pub fn owner(&self) -> Fr {
        owner_of(self.0)
    }
}

/// `Poseidon(sk)`.
pub fn owner_of(sk: Fr) -> Fr {
    hash(&[sk]).unwrap_or_else(|_| unreachable!("one input is supported"))
}

/// A shielded note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note {
    /// Token address as an integer; 0 for ETH.
    pub asset: Fr,
    /// Amount in the token's smallest unit.
    pub value: u128,
    /// `Poseidon(sk)` of the owner.
    pub owner: Fr,
    /// Random blinding.
    pub blinding: Fr,
}

impl Note {
    /// A note with a fresh random blinding.
    pub fn new<R: RngCore + CryptoRng>(asset: Fr, value: u128, owner: Fr, rng: &mut R) -> Self {
        Note { asset, value, owner, blinding: Fr::rand(rng) }
    }

    /// `Poseidon(owner, blinding)`: what a deposit reveals besides asset and value.
    pub fn secret(&self) -> Fr {
        secret_of(self.owner, self.blinding)
    }

    /// `Poseidon(asset, value, Poseidon(owner, blinding))`.
    pub fn commitment(&self) -> Fr {
        commitment_of(self.asset, Fr::from(self.value), self.owner, self.blinding)
    }
}

/// `Poseidon(owner, blinding)`.
pub fn secret_of(owner: Fr, blinding: Fr) -> Fr {
    crate::poseidon::hash2(owner, blinding)
}

/// The commitment for raw field elements.
pub fn commitment_of(asset: Fr, value: Fr, owner: Fr, blinding: Fr) -> Fr {
    commitment_from_secret(asset, value, secret_of(owner, blinding))
}

/// `Poseidon(asset, value, secret)`: what the pool computes at a deposit.
pub fn commitment_from_secret(asset: Fr, value: Fr, secret: Fr) -> Fr {
    hash(&[asset, value, secret]).unwrap_or_else(|_| unreachable!("three inputs are supported"))
}

/// `Poseidon(sk, commitment, leaf_index)`.
pub fn nullifier(sk: &SpendingKey, commitment: Fr, leaf_index: u64) -> Fr {
    hash(&[sk.0, commitment, Fr::from(leaf_index)]).unwrap_or_else(|_| unreachable!("three inputs are supported"))
}

/// An Ethereum address as a field element (big-endian `uint160`).
pub fn address_to_fr(address: &[u8; 20]) -> Fr {
    Fr::from_be_bytes_mod_order(address)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;

    #[test]
    fn commitments_bind_every_field_and_nullifiers_the_key_and_index() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let sk = SpendingKey::random(&mut rng);
        let note = Note::new(Fr::from(7u64), 1_000, sk.owner(), &mut rng);
        let c = note.commitment();
        for other in [
            Note { asset: Fr::from(8u64), ..note },
            Note { value: 1_001, ..note },
            Note { owner: Fr::from(1u64), ..note },
            Note { blinding: note.blinding + Fr::from(1u64), ..note },
        ] {
            assert_ne!(other.commitment(), c);
        }
        let n = nullifier(&sk, c, 5);
        assert_ne!(nullifier(&sk, c, 6), n);
        assert_ne!(nullifier(&SpendingKey::random(&mut rng), c, 5), n);
        assert_eq!(nullifier(&sk, c, 5), n);
    }

    #[test]
    fn addresses_are_big_endian_integers() {
        let mut a = [0u8; 20];
        a[19] = 1;
        assert_eq!(address_to_fr(&a), Fr::from(1u64));
        a[18] = 1;
        assert_eq!(address_to_fr(&a), Fr::from(257u64));
        assert!(!format!("{:?}", SpendingKey(Fr::from(42u64))).contains("42"));
    }
}
