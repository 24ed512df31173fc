//! Field elements as bytes and hex, the one place every module converts them.
//! Big-endian throughout, as Solidity's `uint256` and the EVM's words.

use ark_ff::{BigInteger, PrimeField};

/// `0x` and the 64 big-endian hex digits of `f`.
pub fn to_hex<F: PrimeField>(f: &F) -> String {
    format!("0x{}", hex::encode(f.into_bigint().to_bytes_be()))
}

/// The element written as 32 big-endian bytes, if it is below the modulus
/// (no reduction: each element has exactly one encoding).
pub fn from_be32<F: PrimeField>(bytes: &[u8; 32]) -> Option<F> {
    let reduced = F::from_be_bytes_mod_order(bytes);
    (reduced.into_bigint().to_bytes_be() == bytes.as_slice()).then_some(reduced)
}

/// The element written in big-endian hex: an optional `0x`, then 1 to 64
/// digits; `None` for anything else or for a value not below the modulus.
pub fn from_hex<F: PrimeField>(s: &str) -> Option<F> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    if digits.is_empty() || digits.len() > 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: [u8; 32] = hex::decode(format!("{digits:0>64}")).ok()?.try_into().ok()?;
    from_be32(&bytes)
}

#[cfg(test)]
mod tests {
    use ark_bn254::{Fq, Fr};

    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_junk_and_out_of_field() {
        let f = Fr::from(123_456_789u64);
        assert_eq!(from_hex::<Fr>(&to_hex(&f)), Some(f));
        assert_eq!(from_hex::<Fr>("0x01"), Some(Fr::from(1u64)));
        assert_eq!(from_hex::<Fr>("ff"), Some(Fr::from(255u64)));
        for junk in ["", "0x", "0x0x05", "zz", "0x-1", " 0x1", &format!("0x{}", "1".repeat(65))] {
            assert_eq!(from_hex::<Fr>(junk), None, "{junk:?}");
        }
        // The moduli themselves are not elements.
        assert_eq!(from_hex::<Fr>("0x30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000001"), None);
        assert_eq!(from_hex::<Fq>("0x30644e72e131a029b85045b68181585d97816a916871ca8d3c208c16d87cfd47"), None);
        assert_eq!(from_be32::<Fr>(&[0xff; 32]), None);
    }
}
