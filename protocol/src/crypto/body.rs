//! The body cipher: a wide-block strong pseudorandom permutation (SPRP).
//!
//! Every hop decrypts the whole packet body with a key only it and the sender
//! know. Because the cipher is a strong PRP over the *entire* body, changing any
//! bit of a ciphertext turns the whole decryption into noise; the sender put a
//! 16-byte all-zero tag at the front of the innermost plaintext, so the final hop
//! detects a tagged body and drops it, and nothing downstream ever sees a
//! plaintext that differs from the original in a controlled way.
//!
//! ## Construction
//!
//! The body is split into a 32-byte left part `L` and the bulk `R`. The shape is
//! the hash–encrypt–hash Feistel of Lion/BEAR with a small-block permutation in
//! the middle (as in the HBSH family), which makes it strong — secure against
//! adversaries that mix encryption and decryption queries, which plain three-round
//! BEAR and Lion are not:
//!
//! ```text
//! encrypt(L, R):  M  = L  ⊕ H1(R)          H = keyed BLAKE3, 32-byte output
//!                 CM = E(M)                E = 4-round Feistel on 2×16 bytes,
//!                 R' = R  ⊕ S(CM)              round function keyed BLAKE3
//!                 L' = CM ⊕ H2(R')         S = ChaCha20(key = BLAKE3_kS(CM), nonce 0)
//! ```
//!
//! Decryption runs the same steps backwards. Only three passes touch the bulk —
//! two BLAKE3 hashes and one ChaCha20 stream — against four for LIONESS; that
//! difference is what keeps a 32 KiB hop inside its time budget
//! (`docs/protocol.md`, "Body cipher").
//!
//! The four sub-keys (H1, H2, E, S) are expanded from a 32-byte body key with
//! BLAKE3 `derive_key` under [`BODY_KEYS_CONTEXT`].

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// BLAKE3 context that expands a body key into the cipher's sub-keys.
pub const BODY_KEYS_CONTEXT: &str = "NOX sphinx v1 body cipher keys";

/// Bytes in the left (small-block) part.
pub const LEFT_LEN: usize = 32;

/// The shortest block the cipher accepts: the left part plus one byte of bulk.
pub const MIN_BLOCK_LEN: usize = LEFT_LEN + 1;

/// The block given to the body cipher was too short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("body cipher block of {0} bytes is shorter than the minimum of {MIN_BLOCK_LEN}")]
pub struct BlockTooShort(pub usize);

/// The body cipher under one key.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct BodyCipher {
    h1: [u8; 32],
    h2: [u8; 32],
    prp: [u8; 32],
    stream: [u8; 32],
}

impl std::fmt::Debug for BodyCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyCipher(<redacted>)")
    }
}

impl BodyCipher {
    /// Expands a 32-byte body key.
    pub fn new(key: &[u8; 32]) -> Self {
        let mut out = [0u8; 128];
        let mut hasher = blake3::Hasher::new_derive_key(BODY_KEYS_CONTEXT);
        hasher.update(key);
        hasher.finalize_xof().fill(&mut out);
        let mut c = BodyCipher { h1: [0; 32], h2: [0; 32], prp: [0; 32], stream: [0; 32] };
        c.h1.copy_from_slice(&out[0..32]);
        c.h2.copy_from_slice(&out[32..64]);
        c.prp.copy_from_slice(&out[64..96]);
        c.stream.copy_from_slice(&out[96..128]);
        out.zeroize();
        c
    }

    /// Encrypts `block` in place.
    pub fn encrypt(&self, block: &mut [u8]) -> Result<(), BlockTooShort> {
        let (left, right) = split(block)?;
        xor_into(left, blake3::keyed_hash(&self.h1, right).as_bytes());
        self.small_prp(left, false);
        self.apply_stream(left, right);
        xor_into(left, blake3::keyed_hash(&self.h2, right).as_bytes());
        Ok(())
    }

    /// Decrypts `block` in place.
    pub fn decrypt(&self, block: &mut [u8]) -> Result<(), BlockTooShort> {
        let (left, right) = split(block)?;
        xor_into(left, blake3::keyed_hash(&self.h2, right).as_bytes());
        self.apply_stream(left, right);
        self.small_prp(left, true);
        xor_into(left, blake3::keyed_hash(&self.h1, right).as_bytes());
        Ok(())
    }

    fn apply_stream(&self, left: &[u8; LEFT_LEN], right: &mut [u8]) {
        let mut key = *blake3::keyed_hash(&self.stream, left).as_bytes();
        let mut cipher = ChaCha20::new(&key.into(), &[0u8; 12].into());
        cipher.apply_keystream(right);
        key.zeroize();
    }

    /// Four-round balanced Feistel over the 32-byte left part; `inverse` runs it
    /// backwards.
    fn small_prp(&self, left: &mut [u8; LEFT_LEN], inverse: bool) {
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        a.copy_from_slice(&left[..16]);
        b.copy_from_slice(&left[16..]);
        if !inverse {
            for round in 0u8..4 {
                let f = self.round_fn(round, &b);
                xor_into(&mut a, &f);
                std::mem::swap(&mut a, &mut b);
            }
        } else {
            for round in (0u8..4).rev() {
                std::mem::swap(&mut a, &mut b);
                let f = self.round_fn(round, &b);
                xor_into(&mut a, &f);
            }
        }
        left[..16].copy_from_slice(&a);
        left[16..].copy_from_slice(&b);
        a.zeroize();
        b.zeroize();
    }

    fn round_fn(&self, round: u8, half: &[u8; 16]) -> [u8; 16] {
        let mut input = [0u8; 17];
        input[0] = round;
        input[1..].copy_from_slice(half);
        let h = blake3::keyed_hash(&self.prp, &input);
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.as_bytes()[..16]);
        out
    }
}

fn split(block: &mut [u8]) -> Result<(&mut [u8; LEFT_LEN], &mut [u8]), BlockTooShort> {
    let len = block.len();
    if len < MIN_BLOCK_LEN {
        return Err(BlockTooShort(len));
    }
    let (left, right) = block.split_at_mut(LEFT_LEN);
    let left: &mut [u8; LEFT_LEN] = left.try_into().map_err(|_| BlockTooShort(len))?;
    Ok((left, right))
}

fn xor_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(key in any::<[u8; 32]>(), data in proptest::collection::vec(any::<u8>(), 33..2000)) {
            let c = BodyCipher::new(&key);
            let mut buf = data.clone();
            c.encrypt(&mut buf).unwrap();
            prop_assert_ne!(&buf, &data);
            c.decrypt(&mut buf).unwrap();
            prop_assert_eq!(&buf, &data);
        }

        #[test]
        fn any_flip_scrambles_everything(key in any::<[u8; 32]>(), bit in 0usize..(600 * 8)) {
            let c = BodyCipher::new(&key);
            let plain = vec![0u8; 600];
            let mut ct = plain.clone();
            c.encrypt(&mut ct).unwrap();
            ct[bit / 8] ^= 1 << (bit % 8);
            c.decrypt(&mut ct).unwrap();
            // The left 32 bytes (where the integrity tag lives) and the bulk
            // both change: no bit flip leaves the tag intact.
            prop_assert_ne!(&ct[..16], &plain[..16]);
            let unchanged = ct[32..].iter().filter(|b| **b == 0).count();
            prop_assert!(unchanged < 40, "bulk kept {} zero bytes", unchanged);
        }
    }

    #[test]
    fn short_blocks_are_rejected() {
        let c = BodyCipher::new(&[1; 32]);
        let mut b = [0u8; 32];
        assert_eq!(c.encrypt(&mut b), Err(BlockTooShort(32)));
        assert_eq!(c.decrypt(&mut []), Err(BlockTooShort(0)));
    }

    #[test]
    fn decrypt_is_a_permutation_too() {
        // Decrypting first and encrypting afterwards is also the identity: the
        // construction is a permutation in both directions (SURB replies use it
        // that way round).
        let c = BodyCipher::new(&[9; 32]);
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut buf = data.clone();
        c.decrypt(&mut buf).unwrap();
        c.encrypt(&mut buf).unwrap();
        assert_eq!(buf, data);
    }
}
