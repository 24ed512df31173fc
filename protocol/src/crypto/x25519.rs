//! X25519 through AWS-LC.
//!
//! Every scalar multiplication in the packet format is an RFC 7748 `X25519(k, u)`
//! call: the 32-byte scalar is clamped (bits 0–2 and 255 cleared, bit 254 set)
//! and multiplied with the point given by its u-coordinate. The packet format
//! never needs an unclamped scalar: each hop's ephemeral key is an independent
//! X25519 key pair chosen by the sender, so a hop performs exactly one
//! `X25519(sk, alpha)` (see [`crate::sphinx`], "Per-hop ephemeral keys").
//!
//! The only `unsafe` code in the crate is the FFI call below; the buffers are
//! fixed-size arrays, so the lengths AWS-LC reads and writes are checked by the
//! type system.

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of a scalar, a u-coordinate and a shared secret.
pub const KEY_LEN: usize = 32;

/// The u-coordinate of the Curve25519 base point.
pub const BASE_POINT: [u8; KEY_LEN] = {
    let mut b = [0u8; KEY_LEN];
    b[0] = 9;
    b
};

/// The result of a multiplication was the identity: the input point had small
/// order. Every packet or key that produces it is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("X25519 produced the all-zero output (small-order input point)")]
pub struct LowOrderPoint;

/// `X25519(scalar, point)`: multiply `point` by `clamp(scalar)`.
///
/// Constant-time in the scalar. Returns [`LowOrderPoint`] when the result is the
/// all-zero string, which RFC 7748 §6.1 tells implementations to reject.
pub fn x25519(scalar: &[u8; KEY_LEN], point: &[u8; KEY_LEN]) -> Result<[u8; KEY_LEN], LowOrderPoint> {
    let mut out = [0u8; KEY_LEN];
    // SAFETY: AWS-LC's `X25519` reads exactly 32 bytes from `scalar` and `point`
    // and writes exactly 32 bytes to `out`; all three are `[u8; 32]` that live for
    // the whole call and do not alias the output.
    #[allow(unsafe_code)]
    let ok = unsafe { aws_lc_sys::X25519(out.as_mut_ptr(), scalar.as_ptr(), point.as_ptr()) };
    if ok == 1 { Ok(out) } else { Err(LowOrderPoint) }
}

/// `X25519(scalar, 9)`: the public key of `scalar`.
pub fn x25519_base(scalar: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    // SAFETY: reads 32 bytes from `scalar`, writes 32 bytes to `out`; both are
    // `[u8; 32]` owned by this frame.
    #[allow(unsafe_code)]
    unsafe {
        aws_lc_sys::X25519_public_from_private(out.as_mut_ptr(), scalar.as_ptr())
    };
    out
}

/// A node's mix (epoch) public key: a Curve25519 u-coordinate.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MixPublicKey(pub [u8; KEY_LEN]);

impl std::fmt::Debug for MixPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MixPublicKey(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// A node's mix (epoch) secret key. Zeroized when dropped, which is how a node
/// gets forward secrecy at the end of an epoch's grace period.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MixSecretKey([u8; KEY_LEN]);

impl std::fmt::Debug for MixSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MixSecretKey(<redacted>)")
    }
}

impl MixSecretKey {
    /// Wraps 32 secret bytes (any value is a valid X25519 scalar).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// A fresh key from a cryptographically secure generator.
    pub fn generate(rng: &mut (impl rand_core::RngCore + rand_core::CryptoRng)) -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The secret scalar bytes, for persisting the key.
    pub fn to_bytes(&self) -> [u8; KEY_LEN] {
        self.0
    }

    /// The matching public key.
    pub fn public_key(&self) -> MixPublicKey {
        MixPublicKey(x25519_base(&self.0))
    }

    /// Diffie–Hellman with a peer's point.
    pub fn agree(&self, point: &[u8; KEY_LEN]) -> Result<[u8; KEY_LEN], LowOrderPoint> {
        x25519(&self.0, point)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7748_vector() {
        // RFC 7748 §5.2, first test vector.
        let k: [u8; 32] = hex_lit("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
        let u: [u8; 32] = hex_lit("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c");
        let out = x25519(&k, &u).unwrap_or_default();
        assert_eq!(out, hex_lit::<32>("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"));
    }

    #[test]
    fn dh_agrees_and_low_order_is_rejected() {
        let a = MixSecretKey::from_bytes([1; 32]);
        let b = MixSecretKey::from_bytes([2; 32]);
        let ab = a.agree(&b.public_key().0);
        let ba = b.agree(&a.public_key().0);
        assert!(ab.is_ok());
        assert_eq!(ab, ba);
        assert_eq!(a.agree(&[0u8; 32]), Err(LowOrderPoint));
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(a.agree(&one), Err(LowOrderPoint));
    }

    fn hex_lit<const N: usize>(s: &str) -> [u8; N] {
        let mut out = [0u8; N];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or_default();
        }
        out
    }
}
