//! Proof of work on client submissions.
//!
//! An entry node asks whoever submits a packet — a client, or a node sending
//! its own cover shaped like a client's request — to attach a hashcash-style
//! proof to it (packets relayed between nodes carry none): an 8-byte nonce
//! such that
//!
//! ```text
//! d = BLAKE3(packet)                                   (all 32,768 bytes, once)
//! h = BLAKE3-derive_key("NOX submission pow v2", d ‖ nonce_be)
//! ```
//!
//! and `h` starts with at least `bits` zero bits.
//!
//! The work is bound to the whole packet: changing any byte of it — header,
//! routing information or body — changes `d`, so a solved nonce admits exactly
//! one packet. (Version 1 covered only `alpha` and `gamma`, so one nonce
//! admitted any number of packets sharing them but differing in the body, each
//! costing the entry an X25519 before its replay cache could refuse it.) The
//! 32 KiB are hashed once per packet; each attempt of the search hashes 40
//! bytes (one BLAKE3 compression), and so does the check.
//!
//! `h` is also the submission's identity: the entry keeps the `h` of the
//! submissions it accepted for a short while and refuses the same frame again
//! before any X25519 (`nox_node::pipeline::ingest`). The same packet with
//! another valid nonce is new work, and it reaches the replay cache.
//!
//! A submission frame on `/nox/submit/1` is `packet (32,768) ‖ nonce (8, big
//! endian)`. The cost of the work against the entry's cost per submission is
//! printed by `cargo run --release -p nox-protocol --example pow_cost`.

use crate::sphinx::{PACKET_LEN, Packet, SphinxError};

/// BLAKE3 context for submission proofs.
pub const POW_CONTEXT: &str = "NOX submission pow v2";
/// Length of the nonce appended to a submitted packet.
pub const POW_NONCE_LEN: usize = 8;
/// Most zero bits a verifier may ask for.
pub const MAX_POW_BITS: u8 = 32;
/// Length of a submission frame: the packet, then the nonce.
pub const SUBMISSION_LEN: usize = PACKET_LEN + POW_NONCE_LEN;

/// `d`: the BLAKE3 hash of a whole packet, the input of its proof of work.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PacketDigest(pub [u8; 32]);

impl PacketDigest {
    /// Hashes all 32,768 bytes of `packet`.
    pub fn of(packet: &Packet) -> Self {
        PacketDigest(*blake3::hash(packet.as_bytes()).as_bytes())
    }
}

impl std::fmt::Debug for PacketDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PacketDigest(..)")
    }
}

/// `h`: the proof-of-work hash of one submission (`packet ‖ nonce`). Its
/// leading zero bits are the work done; the entry also keys its filter of
/// submissions already seen on it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubmissionHash(pub [u8; 32]);

impl SubmissionHash {
    /// The hash of `nonce` for the packet whose digest is `digest`.
    pub fn new(digest: &PacketDigest, nonce: u64) -> Self {
        Puzzle::new(digest).hash(nonce)
    }

    /// Leading zero bits of the hash: the work it proves.
    pub fn zero_bits(&self) -> u32 {
        let mut n = 0;
        for b in &self.0 {
            if *b == 0 {
                n += 8;
            } else {
                return n + b.leading_zeros();
            }
        }
        n
    }

    /// Whether the hash has at least `bits` leading zero bits (capped at
    /// [`MAX_POW_BITS`]; 0 accepts anything).
    pub fn meets(&self, bits: u8) -> bool {
        bits == 0 || self.zero_bits() >= u32::from(bits.min(MAX_POW_BITS))
    }
}

impl std::fmt::Debug for SubmissionHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubmissionHash(..)")
    }
}

/// The hasher state after the context and `d`: each nonce then costs one
/// compression.
#[derive(Clone)]
struct Puzzle(blake3::Hasher);

impl Puzzle {
    fn new(digest: &PacketDigest) -> Self {
        let mut h = blake3::Hasher::new_derive_key(POW_CONTEXT);
        h.update(&digest.0);
        Puzzle(h)
    }

    fn hash(&self, nonce: u64) -> SubmissionHash {
        let mut h = self.0.clone();
        h.update(&nonce.to_be_bytes());
        SubmissionHash(*h.finalize().as_bytes())
    }
}

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

/// Whether `nonce` is a proof of at least `bits` zero bits for `packet`
/// (hashes the whole packet; see [`verify_digest`] to hash it once).
pub fn verify(packet: &Packet, nonce: u64, bits: u8) -> bool {
    bits == 0 || verify_digest(&PacketDigest::of(packet), nonce, bits)
}

/// Whether `nonce` is a proof of at least `bits` zero bits for the packet
/// whose digest is `digest`.
pub fn verify_digest(digest: &PacketDigest, nonce: u64, bits: u8) -> bool {
    bits == 0 || SubmissionHash::new(digest, nonce).meets(bits)
}

/// Finds a nonce for `packet` with at least `bits` zero bits (expected
/// `2^bits` hashes of 40 bytes, after one hash of the packet), starting the
/// search at `start`.
pub fn solve(packet: &Packet, bits: u8, start: u64) -> u64 {
    solve_digest(&PacketDigest::of(packet), bits, start)
}

/// [`solve`] for a packet already hashed.
pub fn solve_digest(digest: &PacketDigest, bits: u8, start: u64) -> u64 {
    let bits = bits.min(MAX_POW_BITS);
    if bits == 0 {
        return start;
    }
    let puzzle = Puzzle::new(digest);
    let mut nonce = start;
    while !puzzle.hash(nonce).meets(bits) {
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
    use crate::sphinx::{ALPHA_OFFSET, GAMMA_OFFSET};

    fn packet(seed: u8) -> Packet {
        let mut v = vec![0u8; PACKET_LEN];
        v[ALPHA_OFFSET] = seed;
        Packet::from_vec(v).unwrap()
    }

    fn with_byte_flipped(p: &Packet, at: usize) -> Packet {
        let mut v = p.as_bytes().to_vec();
        v[at] ^= 1;
        Packet::from_vec(v).unwrap()
    }

    #[test]
    fn a_solved_nonce_admits_only_its_own_packet() {
        let p = packet(1);
        let n = solve(&p, 16, 0);
        assert!(verify(&p, n, 16));
        // What an attacker holding one proof would try: keep alpha and gamma
        // (all that version 1 covered) and vary the body, or vary the header.
        // Every byte is covered, so each variant has its own digest and the
        // nonce fails on it (for these fixed packets; by chance 2^-16 each).
        for at in [ALPHA_OFFSET, GAMMA_OFFSET, GAMMA_OFFSET + 100, PACKET_LEN / 2, PACKET_LEN - 1] {
            let q = with_byte_flipped(&p, at);
            assert_ne!(PacketDigest::of(&p), PacketDigest::of(&q), "byte {at}");
            assert!(!verify(&q, n, 16), "byte {at}");
        }
        let refused = (0..64u8)
            .filter(|k| {
                let mut v = p.as_bytes().to_vec();
                v[PACKET_LEN - 2] = *k + 1;
                !verify(&Packet::from_vec(v).unwrap(), n, 16)
            })
            .count();
        assert_eq!(refused, 64, "a body variant reused the proof");
    }

    #[test]
    fn the_digest_form_agrees_with_the_packet_form() {
        let p = packet(4);
        let d = PacketDigest::of(&p);
        let n = solve_digest(&d, 10, 77);
        assert_eq!(n, solve(&p, 10, 77));
        assert!(n >= 77);
        assert!(verify_digest(&d, n, 10) && verify(&p, n, 10));
        assert!(SubmissionHash::new(&d, n).zero_bits() >= 10);
        // One nonce, two hashes: the submission hash names the frame.
        assert_ne!(SubmissionHash::new(&d, n), SubmissionHash::new(&d, n + 1));
    }

    #[test]
    fn zero_bits_accepts_anything_and_wrong_nonce_fails() {
        let p = packet(3);
        assert!(verify(&p, 12345, 0));
        assert_eq!(solve(&p, 0, 9), 9);
        let n = solve(&p, 12, 0);
        // The first nonce that passes is `n`; every smaller one fails.
        assert!((0..n).all(|m| !verify(&p, m, 12)));
        // Asking for more than the maximum asks for the maximum.
        let d = PacketDigest::of(&p);
        assert_eq!(SubmissionHash::new(&d, n).meets(200), SubmissionHash::new(&d, n).meets(MAX_POW_BITS));
    }

    #[test]
    fn leading_zero_count() {
        let mut d = [0u8; 32];
        d[1] = 0x10;
        assert_eq!(SubmissionHash(d).zero_bits(), 8 + 3);
        assert!(SubmissionHash(d).meets(11) && !SubmissionHash(d).meets(12));
        assert_eq!(SubmissionHash([0u8; 32]).zero_bits(), 256);
    }

    #[test]
    fn debug_shows_no_digest() {
        let d = PacketDigest::of(&packet(5));
        assert_eq!(format!("{d:?}"), "PacketDigest(..)");
        assert_eq!(format!("{:?}", SubmissionHash::new(&d, 1)), "SubmissionHash(..)");
    }
}
