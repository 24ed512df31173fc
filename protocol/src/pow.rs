//! Proof of work on client submissions.
//!
//! An entry node asks whoever submits a packet — a client, or a node sending
//! its own cover shaped like a client's request — to attach a hashcash-style
//! proof to it (packets relayed between nodes carry none): an 8-byte nonce
//! such that
//!
//! ```text
//! BLAKE3-derive_key("NOX submission pow v1", alpha ‖ gamma ‖ nonce)
//! ```
//!
//! starts with at least `bits` zero bits. `alpha` (the packet's first ephemeral
//! key) and `gamma` (its first MAC) are different for every packet a client
//! builds, so a proof cannot be reused for another packet, and checking one costs
//! a single 56-byte hash — far below the hop's X25519 it protects. Resubmitting
//! the same packet with its proof is caught by the replay cache.
//!
//! A submission frame on `/nox/submit/1` is `packet (32,768) ‖ nonce (8, big
//! endian)`.

use crate::sphinx::{ALPHA_OFFSET, GAMMA_OFFSET, MAC_LEN, PACKET_LEN, Packet, SphinxError};

/// BLAKE3 context for submission proofs.
pub const POW_CONTEXT: &str = "NOX submission pow v1";
/// Length of the nonce appended to a submitted packet.
pub const POW_NONCE_LEN: usize = 8;
/// Most zero bits a verifier may ask for.
pub const MAX_POW_BITS: u8 = 32;
/// Length of a submission frame: the packet, then the nonce.
pub const SUBMISSION_LEN: usize = PACKET_LEN + POW_NONCE_LEN;

/// A submission frame: `packet ‖ nonce` (big endian).
pub fn encode_submission(packet: &Packet, nonce: u64) -> Vec<u8> {
    let mut frame = Vec::with_capacity(SUBMISSION_LEN);
    frame.extend_from_slice(packet.as_bytes());
    frame.extend_from_slice(&nonce.to_be_bytes());
    frame
}

/// Splits a submission frame into its packet (the frame's buffer, not a copy)
/// and its nonce. Any length but [`SUBMISSION_LEN`] is refused.
pub fn decode_submission(mut frame: Vec<u8>) -> Result<(Packet, u64), SphinxError> {
    let len = frame.len();
    if len < SUBMISSION_LEN {
        return Err(SphinxError::Truncated { len });
    }
    if len > SUBMISSION_LEN {
        return Err(SphinxError::Oversized { len });
    }
    let mut nonce = [0u8; POW_NONCE_LEN];
    nonce.copy_from_slice(&frame[PACKET_LEN..]);
    frame.truncate(PACKET_LEN);
    Ok((Packet::from_vec(frame)?, u64::from_be_bytes(nonce)))
}

fn digest(packet: &Packet, nonce: u64) -> [u8; 32] {
    let bytes = packet.as_bytes();
    let mut h = blake3::Hasher::new_derive_key(POW_CONTEXT);
    h.update(&bytes[ALPHA_OFFSET..ALPHA_OFFSET + 32]);
    h.update(&bytes[GAMMA_OFFSET..GAMMA_OFFSET + MAC_LEN]);
    h.update(&nonce.to_be_bytes());
    *h.finalize().as_bytes()
}

fn leading_zero_bits(d: &[u8; 32]) -> u32 {
    let mut n = 0;
    for b in d {
        if *b == 0 {
            n += 8;
        } else {
            return n + b.leading_zeros();
        }
    }
    n
}

/// Whether `nonce` is a proof of at least `bits` zero bits for `packet`.
pub fn verify(packet: &Packet, nonce: u64, bits: u8) -> bool {
    bits == 0 || leading_zero_bits(&digest(packet, nonce)) >= u32::from(bits.min(MAX_POW_BITS))
}

/// Finds a nonce for `packet` with at least `bits` zero bits (expected
/// `2^bits` hashes), starting the search at `start`.
pub fn solve(packet: &Packet, bits: u8, start: u64) -> u64 {
    let bits = bits.min(MAX_POW_BITS);
    let mut nonce = start;
    while !verify(packet, nonce, bits) {
        nonce = nonce.wrapping_add(1);
    }
    nonce
}

#[cfg(test)]
mod submission_tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_other_lengths_are_refused() {
        let packet = Packet::from_vec(vec![7; PACKET_LEN]).unwrap();
        let frame = encode_submission(&packet, 0x0102_0304_0506_0708);
        assert_eq!(frame.len(), SUBMISSION_LEN);
        let (p, nonce) = decode_submission(frame.clone()).unwrap();
        assert_eq!((p.as_bytes(), nonce), (packet.as_bytes(), 0x0102_0304_0506_0708));
        assert!(matches!(decode_submission(frame[..SUBMISSION_LEN - 1].to_vec()), Err(SphinxError::Truncated { .. })));
        let mut long = frame;
        long.push(0);
        assert!(matches!(decode_submission(long), Err(SphinxError::Oversized { .. })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sphinx::PACKET_LEN;

    fn packet(seed: u8) -> Packet {
        let mut v = vec![0u8; PACKET_LEN];
        v[ALPHA_OFFSET] = seed;
        Packet::from_vec(v).unwrap()
    }

    #[test]
    fn solved_nonce_verifies_and_is_bound_to_the_packet() {
        let p = packet(1);
        let n = solve(&p, 10, 0);
        assert!(verify(&p, n, 10));
        // The proof covers alpha and gamma: change either and the digest changes,
        // and (for these fixed packets) the proof no longer passes.
        let q = packet(2);
        assert_ne!(digest(&p, n), digest(&q, n));
        assert!(!verify(&q, n, 10));
        let mut g = p.as_bytes().to_vec();
        g[GAMMA_OFFSET] ^= 1;
        let g = Packet::from_vec(g).unwrap();
        assert_ne!(digest(&p, n), digest(&g, n));
    }

    #[test]
    fn zero_bits_accepts_anything_and_wrong_nonce_fails() {
        let p = packet(3);
        assert!(verify(&p, 12345, 0));
        let n = solve(&p, 12, 0);
        // The first nonce that passes is `n`; every smaller one fails.
        assert!((0..n).all(|m| !verify(&p, m, 12)));
    }

    #[test]
    fn leading_zero_count() {
        let mut d = [0u8; 32];
        d[1] = 0x10;
        assert_eq!(leading_zero_bits(&d), 8 + 3);
        assert_eq!(leading_zero_bits(&[0u8; 32]), 256);
    }
}
