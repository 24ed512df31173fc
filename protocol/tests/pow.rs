//! Submission frames and their proof of work, on arbitrary packets: the frame
//! round trips, every other length is refused, a solved nonce verifies, and
//! no byte of the packet is outside the work.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nox_protocol::pow::{self, PacketDigest, SUBMISSION_LEN, SubmissionHash};
use nox_protocol::sphinx::{PACKET_LEN, Packet, SphinxError};
use proptest::prelude::*;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn packet(seed: u64) -> Packet {
    let mut bytes = vec![0u8; PACKET_LEN];
    ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
    Packet::from_vec(bytes).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn frames_round_trip(seed in any::<u64>(), nonce in any::<u64>()) {
        let p = packet(seed);
        let frame = pow::encode_submission(&p, nonce);
        prop_assert_eq!(frame.len(), SUBMISSION_LEN);
        prop_assert_eq!(&frame[PACKET_LEN..], &nonce.to_be_bytes()[..]);
        let (q, n) = pow::decode_submission(frame).unwrap();
        prop_assert_eq!(q.as_bytes(), p.as_bytes());
        prop_assert_eq!(n, nonce);
    }

    #[test]
    fn other_lengths_are_refused(len in 0usize..SUBMISSION_LEN * 2, fill in any::<u8>()) {
        prop_assume!(len != SUBMISSION_LEN);
        let r = pow::decode_submission(vec![fill; len]);
        let expected =
            if len < SUBMISSION_LEN { SphinxError::Truncated { len } } else { SphinxError::Oversized { len } };
        prop_assert_eq!(r.err(), Some(expected));
    }

    #[test]
    fn a_solved_nonce_verifies_and_every_byte_is_covered(
        seed in any::<u64>(),
        start in any::<u64>(),
        bits in 0u8..=8,
        at in 0usize..PACKET_LEN,
    ) {
        let p = packet(seed);
        let n = pow::solve(&p, bits, start);
        prop_assert!(pow::verify(&p, n, bits));
        let d = PacketDigest::of(&p);
        prop_assert!(pow::verify_digest(&d, n, bits));
        prop_assert!(SubmissionHash::new(&d, n).zero_bits() >= u32::from(bits));
        // Any one byte changed gives another digest, hence another puzzle.
        let mut other = p.as_bytes().to_vec();
        other[at] ^= 0x80;
        let e = PacketDigest::of(&Packet::from_vec(other).unwrap());
        prop_assert_ne!(d, e);
        prop_assert_ne!(SubmissionHash::new(&d, n), SubmissionHash::new(&e, n));
    }
}
