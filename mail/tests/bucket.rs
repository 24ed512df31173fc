//! Size buckets: round trips, the sizes pad produces, typed errors for every
//! malformed padded buffer, and the fit with the mixnet's fragment buckets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nox_mail::bucket::{
    BUCKET_SIZES, BucketError, MAX_MESSAGE_LEN, PAD_HEADER_LEN, PAD_VERSION, RECIPIENTS_ROOM, bucket_for, pad, unpad,
};
use nox_protocol::crypto::x25519::MixSecretKey;
use nox_protocol::fragment::{DEFAULT_BUCKETS, Fragmenter, MAX_SHARD_LEN};
use nox_protocol::payload::{Envelope, MailTransport, Request};
use nox_protocol::sphinx::surb::Surb;
use nox_protocol::sphinx::{Hop, NodeId, PacketBuilder};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// A message of `len` bytes that is not all zeros (so lost bytes would show).
fn message(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1).collect()
}

#[test]
fn test_pad_layout() {
    let padded = pad(b"hello").unwrap();
    assert_eq!(padded.len(), BUCKET_SIZES[0]);
    assert_eq!(&padded[..10], b"\x01\x00\x00\x00\x05hello");
    assert!(padded[10..].iter().all(|b| *b == 0));
    assert_eq!(unpad(&padded).unwrap(), b"hello");

    let empty = pad(b"").unwrap();
    assert_eq!(empty.len(), BUCKET_SIZES[0]);
    assert_eq!(unpad(&empty).unwrap(), b"");
}

#[test]
fn test_every_bucket_at_its_edges() {
    let mut lower = 0;
    for size in BUCKET_SIZES {
        let fits = size - PAD_HEADER_LEN;
        for len in [lower, fits] {
            let m = message(len, 3);
            let padded = pad(&m).unwrap();
            assert_eq!(padded.len(), size, "{len}");
            assert_eq!(unpad(&padded).unwrap(), m);
        }
        lower = fits + 1;
    }
}

#[test]
fn test_too_large_is_refused() {
    assert_eq!(
        pad(&vec![7; MAX_MESSAGE_LEN + 1]),
        Err(BucketError::TooLarge { len: MAX_MESSAGE_LEN + 1, max: MAX_MESSAGE_LEN })
    );
    assert_eq!(pad(&vec![7; MAX_MESSAGE_LEN]).unwrap().len(), BUCKET_SIZES[8]);
}

#[test]
fn test_unpad_refuses_a_buffer_that_is_not_a_bucket_size() {
    let padded = pad(b"hello").unwrap();
    for len in [0, 1, 4, 5, BUCKET_SIZES[0] - 1] {
        assert_eq!(unpad(&padded[..len]), Err(BucketError::NotABucketSize { len }));
    }
    let mut longer = padded.clone();
    longer.push(0);
    assert_eq!(unpad(&longer), Err(BucketError::NotABucketSize { len: BUCKET_SIZES[0] + 1 }));
}

#[test]
fn test_unpad_refuses_another_version() {
    let mut padded = pad(b"hello").unwrap();
    for v in [0, 2, 0xff] {
        padded[0] = v;
        assert_eq!(unpad(&padded), Err(BucketError::UnsupportedVersion(v)));
    }
    padded[0] = PAD_VERSION;
    assert!(unpad(&padded).is_ok());
}

#[test]
fn test_unpad_refuses_a_length_beyond_the_bucket() {
    let capacity = BUCKET_SIZES[0] - PAD_HEADER_LEN;
    let mut padded = pad(b"hello").unwrap();
    padded[1..5].copy_from_slice(&(capacity as u32).to_be_bytes());
    assert_eq!(unpad(&padded).unwrap().len(), capacity, "exactly full is fine");
    for declared in [capacity as u32 + 1, u32::MAX] {
        padded[1..5].copy_from_slice(&declared.to_be_bytes());
        assert_eq!(unpad(&padded), Err(BucketError::LengthBeyondBucket { declared, capacity }));
    }
}

#[test]
fn test_unpad_refuses_non_zero_padding() {
    let padded = pad(b"hello").unwrap();
    for offset in [10, 11, 1000, BUCKET_SIZES[0] - 1] {
        let mut bad = padded.clone();
        bad[offset] = 0x80;
        assert_eq!(unpad(&bad), Err(BucketError::NonZeroPadding { offset }));
    }
    // A length shorter than the message leaves message bytes in the padding.
    let mut short = padded;
    short[4] = 4;
    assert_eq!(unpad(&short), Err(BucketError::NonZeroPadding { offset: 9 }));
}

#[test]
fn test_unpad_accepts_a_larger_bucket_than_needed() {
    let mut padded = pad(b"hello").unwrap();
    padded.resize(BUCKET_SIZES[2], 0);
    assert_eq!(unpad(&padded).unwrap(), b"hello");
}

fn surb(rng: &mut StdRng) -> Surb {
    let key = MixSecretKey::generate(rng);
    let hop = Hop { id: NodeId([1; 32]), key: key.public_key(), delay_us: 5 };
    PacketBuilder::new(1).surb(&[hop, hop, hop], [2; 32], rng).unwrap().0
}

/// A full bucket, in a `Mail` request with one SURB and recipients filling
/// the reserve, becomes exactly its fragment bucket's data fragments; one
/// more byte of recipients spills into the next bucket (or no longer fits).
#[test]
fn test_each_bucket_fills_its_fragment_bucket() {
    let fragmenter = Fragmenter::default();
    let mut rng = StdRng::seed_from_u64(9);
    let surbs = vec![surb(&mut rng)];
    // Recipients filling their room: 4-byte lengths and the addresses.
    let mut recipients: Vec<String> = (0..45).map(|i| format!("recipient-{i:02}@a-long-domain.example.org")).collect();
    let used: usize = recipients.iter().map(|r| 4 + r.len()).sum();
    recipients.push("x".repeat(RECIPIENTS_ROOM - used - 4));
    for (k, size) in BUCKET_SIZES.into_iter().enumerate() {
        let data = usize::from(DEFAULT_BUCKETS[k]);
        let full = pad(&message(size - PAD_HEADER_LEN, k as u8)).unwrap();
        let envelope = Envelope {
            request_id: [k as u8; 16],
            surbs: surbs.clone(),
            request: Request::Mail { transport: MailTransport::Smtp, recipients: recipients.clone(), message: full },
        };
        let encoded = envelope.encode().unwrap();
        assert_eq!(encoded.len(), data * MAX_SHARD_LEN, "bucket {k} fills {data} fragments exactly");
        let same = Fragmenter::default().fragment_count(data * MAX_SHARD_LEN).unwrap();
        assert_eq!(fragmenter.fragment_count(encoded.len()).unwrap(), same);
        let mut over = encoded.clone();
        over.push(0);
        match fragmenter.fragment_count(over.len()) {
            Ok(n) => assert!(n > same, "bucket {k}: one more byte needs more fragments"),
            Err(_) => assert_eq!(k, BUCKET_SIZES.len() - 1),
        }

        // What the exit gets back.
        let Request::Mail { message, .. } = Envelope::decode(&encoded).unwrap().request else { panic!("not mail") };
        assert_eq!(unpad(&message).unwrap(), &self::message(size - PAD_HEADER_LEN, k as u8)[..]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip_small(m in prop::collection::vec(any::<u8>(), 0..70_000)) {
        let padded = pad(&m).unwrap();
        prop_assert!(BUCKET_SIZES.contains(&padded.len()));
        prop_assert_eq!(padded.len(), bucket_for(m.len()).unwrap());
        prop_assert_eq!(unpad(&padded).unwrap(), &m[..]);
    }

    #[test]
    fn unpad_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = unpad(&bytes);
    }

    /// A corrupted byte anywhere in the header or the padding is a typed
    /// error; in the message it changes the message and nothing else.
    #[test]
    fn corruption_is_caught_outside_the_message(
        m in prop::collection::vec(any::<u8>(), 0..2000),
        at in any::<prop::sample::Index>(),
        flip in 1u8..,
    ) {
        let mut padded = pad(&m).unwrap();
        let i = at.index(padded.len());
        padded[i] ^= flip;
        match unpad(&padded) {
            Ok(out) => {
                prop_assert!((PAD_HEADER_LEN..PAD_HEADER_LEN + m.len()).contains(&i) || (1..PAD_HEADER_LEN).contains(&i));
                if (PAD_HEADER_LEN..PAD_HEADER_LEN + m.len()).contains(&i) {
                    prop_assert_eq!(out.len(), m.len());
                    prop_assert_ne!(out, &m[..]);
                }
            }
            Err(_) => prop_assert!(i < PAD_HEADER_LEN || i >= PAD_HEADER_LEN + m.len()),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Any length up to the largest bucket (the content is cheap to build).
    #[test]
    fn round_trip_any_length(len in 0..=MAX_MESSAGE_LEN, seed in any::<u8>()) {
        let m = message(len, seed);
        let padded = pad(&m).unwrap();
        prop_assert!(BUCKET_SIZES.contains(&padded.len()));
        let size = bucket_for(len).unwrap();
        prop_assert_eq!(padded.len(), size);
        prop_assert!(BUCKET_SIZES.iter().all(|s| *s >= size || len > s - PAD_HEADER_LEN), "the smallest that holds it");
        prop_assert_eq!(unpad(&padded).unwrap(), &m[..]);
    }
}
