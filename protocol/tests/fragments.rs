//! Fragmentation, FEC and reassembly: round trips, loss recovery, bucket
//! padding, and hostile fragment streams that must stay within the bounds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use nox_protocol::fragment::{
    FRAGMENT_HEADER_LEN, FragmentError, Fragmenter, MAX_SHARD_LEN, Reassembled, Reassembler, ReassemblyLimits,
    SizeBuckets,
};
use nox_protocol::sphinx::PAYLOAD_CAPACITY;
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn feed(r: &mut Reassembler, frags: &[Vec<u8>], now: Instant) -> Option<Vec<u8>> {
    let mut out = None;
    for f in frags {
        match r.insert(f, now) {
            Ok(Reassembled::Complete(m)) => {
                assert!(out.is_none(), "completed twice");
                out = Some(m);
            }
            Ok(Reassembled::Pending | Reassembled::Late) => {}
            Err(e) => panic!("honest fragment refused: {e}"),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn round_trip_with_losses_up_to_the_parity(len in 0usize..(MAX_SHARD_LEN * 9), seed in any::<u64>()) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let msg: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
        let f = Fragmenter::default();
        let mut frags = f.split(&msg, rng.r#gen()).unwrap();
        prop_assert!(frags.iter().all(|x| x.len() <= PAYLOAD_CAPACITY));
        let total = frags.len();
        let data = total - nox_protocol::fragment::parity_for(bucket_of(total), 0.3) as usize;
        // Lose as many fragments as there are parity shards, in any order.
        frags.shuffle(&mut rng);
        frags.truncate(data);
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let out = feed(&mut r, &frags, Instant::now());
        prop_assert_eq!(out, Some(msg));
        prop_assert_eq!(r.pending_messages(), 0);
        prop_assert_eq!(r.pending_bytes(), 0);
    }
}

/// The data-shard bucket of a message that became `total` fragments at ratio 0.3.
fn bucket_of(total: usize) -> u16 {
    [1u16, 2, 4, 8, 16, 32, 64, 128, 256]
        .into_iter()
        .find(|b| usize::from(*b) + nox_protocol::fragment::parity_for(*b, 0.3) as usize == total)
        .expect("total matches a bucket")
}

#[test]
fn fragment_counts_reveal_only_the_bucket() {
    let f = Fragmenter::default();
    // 5, 6, 7 and 8 shards' worth of data all become 8 data + 3 parity packets.
    for shards in 5..=8 {
        assert_eq!(f.fragment_count(MAX_SHARD_LEN * shards).unwrap(), 8 + 3);
    }
    assert_eq!(f.fragment_count(1).unwrap(), 1);
    assert_eq!(f.fragment_count(MAX_SHARD_LEN + 1).unwrap(), 2 + 1);
    let max = f.max_message_len();
    assert!(matches!(f.split(&vec![0; max + 1], [0; 16]), Err(FragmentError::MessageTooLarge { .. })));
    // Custom buckets: 11 data shards get exactly 4 parity shards at 0.3.
    let f = Fragmenter::new(SizeBuckets::new(vec![1, 11]).unwrap(), 0.3).unwrap();
    assert_eq!(f.fragment_count(MAX_SHARD_LEN * 10).unwrap(), 15);
}

#[test]
fn too_many_losses_leave_the_message_pending_then_stale() {
    let f = Fragmenter::default();
    let msg = vec![9u8; MAX_SHARD_LEN * 4];
    let frags = f.split(&msg, [2; 16]).unwrap();
    assert_eq!(frags.len(), 6);
    let mut r = Reassembler::new(ReassemblyLimits::default());
    let t0 = Instant::now();
    assert_eq!(feed(&mut r, &frags[..3], t0), None);
    assert_eq!(r.pending_messages(), 1);
    assert_eq!(r.expire(t0 + Duration::from_secs(59)), 0);
    assert_eq!(r.expire(t0 + Duration::from_secs(61)), 1);
    assert_eq!(r.pending_bytes(), 0);
}

fn small_limits() -> ReassemblyLimits {
    ReassemblyLimits {
        max_bytes: 200_000,
        max_messages: 4,
        max_fragments_per_message: 20,
        max_message_len: 1_000_000,
        stale_after: Duration::from_secs(30),
        completed_memory: 8,
    }
}

fn raw_fragment(id: u8, index: u16, data: u16, parity: u16, len: u32, shard: usize) -> Vec<u8> {
    let mut v = vec![1u8];
    v.extend_from_slice(&[id; 16]);
    v.extend_from_slice(&index.to_be_bytes());
    v.extend_from_slice(&data.to_be_bytes());
    v.extend_from_slice(&parity.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v.extend(std::iter::repeat_n(0xAB, shard));
    v
}

#[test]
fn hostile_fragments_get_typed_errors() {
    let mut r = Reassembler::new(small_limits());
    let now = Instant::now();
    assert_eq!(r.insert(&[], now), Err(FragmentError::TooShort(0)));
    assert_eq!(r.insert(&[1; FRAGMENT_HEADER_LEN], now), Err(FragmentError::TooShort(FRAGMENT_HEADER_LEN)));
    let mut v2 = raw_fragment(1, 0, 2, 0, 10, 8);
    v2[0] = 2;
    assert_eq!(r.insert(&v2, now), Err(FragmentError::UnsupportedVersion(2)));
    // Zero data shards, odd shards, oversized shards.
    assert_eq!(r.insert(&raw_fragment(1, 0, 0, 1, 0, 8), now), Err(FragmentError::BadShape));
    assert_eq!(r.insert(&raw_fragment(1, 0, 2, 0, 10, 7), now), Err(FragmentError::BadShape));
    assert_eq!(r.insert(&raw_fragment(1, 0, 1, 0, 10, MAX_SHARD_LEN + 2), now), Err(FragmentError::BadShape));
    // More fragments than allowed, index past the total.
    assert!(matches!(r.insert(&raw_fragment(1, 0, 20, 1, 10, 8), now), Err(FragmentError::TooManyFragments { .. })));
    assert_eq!(
        r.insert(&raw_fragment(1, 5, 2, 1, 10, 8), now),
        Err(FragmentError::IndexOutOfRange { index: 5, total: 3 })
    );
    // A length the shards cannot hold, a length past the limit.
    assert_eq!(r.insert(&raw_fragment(1, 0, 2, 0, 17, 8), now), Err(FragmentError::BadShape));
    assert!(matches!(
        r.insert(&raw_fragment(1, 0, 2, 0, 2_000_000, 8), now),
        Err(FragmentError::MessageLengthLimit { .. })
    ));
    assert_eq!(r.pending_messages(), 0);
    assert_eq!(r.pending_bytes(), 0);
}

#[test]
fn duplicates_and_contradictions_do_not_disturb_a_message() {
    let f = Fragmenter::new(SizeBuckets::new(vec![1, 4]).unwrap(), 0.5).unwrap();
    let msg: Vec<u8> = (0..(MAX_SHARD_LEN * 3 + 100) as u32).map(|i| i as u8).collect();
    assert_eq!(frags_len(&msg), 6);
    let frags = f.split(&msg, [7; 16]).unwrap();
    let mut r = Reassembler::new(ReassemblyLimits::default());
    let now = Instant::now();
    assert_eq!(r.insert(&frags[0], now), Ok(Reassembled::Pending));
    assert_eq!(r.insert(&frags[0], now), Err(FragmentError::Duplicate));
    // Same id, different totals / length / shard size.
    let mut wrong_total = frags[1].clone();
    wrong_total[22] ^= 1;
    assert_eq!(r.insert(&wrong_total, now), Err(FragmentError::Inconsistent));
    let mut wrong_len = frags[1].clone();
    wrong_len[26] ^= 1;
    assert_eq!(r.insert(&wrong_len, now), Err(FragmentError::Inconsistent));
    let mut short = frags[1].clone();
    short.truncate(short.len() - 2);
    // (Its shards could no longer hold the declared length, so it is refused
    // before it is even compared with the message.)
    assert_eq!(r.insert(&short, now), Err(FragmentError::BadShape));
    let mut longer = frags[1].clone();
    longer.extend_from_slice(&[0, 0]);
    assert_eq!(r.insert(&longer, now), Err(FragmentError::Inconsistent));
    // The honest rest still completes the message, and late ones are ignored.
    let mut out = None;
    for frag in &frags[1..4] {
        if let Ok(Reassembled::Complete(m)) = r.insert(frag, now) {
            out = Some(m);
        }
    }
    assert!(out == Some(msg), "message not rebuilt");
    assert_eq!(r.insert(&frags[4], now), Ok(Reassembled::Late));
    assert_eq!(r.pending_messages(), 0);
}

#[test]
fn never_completing_floods_stay_within_the_bounds() {
    let limits = small_limits();
    let mut r = Reassembler::new(limits);
    let mut rng = ChaCha20Rng::seed_from_u64(77);
    let t0 = Instant::now();
    let mut refused = 0;
    for i in 0..5_000u32 {
        let id: u8 = rng.r#gen();
        let data = rng.gen_range(1..10u16);
        let index = rng.gen_range(0..data);
        let shard = rng.gen_range(1..2_000usize) * 2;
        let frag = raw_fragment(id, index, data, 0, shard as u32, shard);
        let now = t0 + Duration::from_millis(u64::from(i) * 5);
        if r.insert(&frag, now).is_err() {
            refused += 1;
        }
        assert!(r.pending_bytes() <= limits.max_bytes, "byte budget exceeded");
        assert!(r.pending_messages() <= limits.max_messages, "message budget exceeded");
    }
    assert!(refused > 0, "the flood never hit a limit");
    r.expire(t0 + Duration::from_secs(3600));
    assert_eq!((r.pending_messages(), r.pending_bytes()), (0, 0));
    // After the flood has gone stale, honest traffic is served again.
    let msg = vec![1u8; 5000];
    let frags = Fragmenter::default().split(&msg, [200; 16]).unwrap();
    assert_eq!(feed(&mut r, &frags, t0 + Duration::from_secs(3600)), Some(msg));
}

fn frags_len(msg: &[u8]) -> usize {
    let f = Fragmenter::new(SizeBuckets::new(vec![1, 4]).unwrap(), 0.5).unwrap();
    f.fragment_count(msg.len()).unwrap()
}

#[test]
fn recovery_from_parity_after_losing_data_shards() {
    let f = Fragmenter::new(SizeBuckets::new(vec![1, 4]).unwrap(), 0.5).unwrap();
    let msg = vec![5u8; MAX_SHARD_LEN * 3 + 100];
    let mut frags = f.split(&msg, [8; 16]).unwrap();
    assert_eq!(frags.len(), 6);
    // Lose data shards 0 and 2; both parity shards stand in for them. (Integrity
    // of each fragment is the Sphinx layer's job: every fragment was
    // authenticated by the body cipher's tag before it reaches reassembly.)
    frags.remove(2);
    frags.remove(0);
    let mut r = Reassembler::new(ReassemblyLimits::default());
    let out = feed(&mut r, &frags, Instant::now());
    assert!(out == Some(msg), "message not rebuilt from parity");
}

#[test]
fn the_reply_budget_of_n_surbs_is_the_longest_message_that_fits_them() {
    let f = Fragmenter::default();
    assert_eq!(f.max_message_len_for(0), 0);
    assert_eq!(f.max_message_len_for(1), MAX_SHARD_LEN, "one SURB carries one unprotected shard");
    for n in [1usize, 2, 3, 5, 11, 15, 40, 333] {
        let budget = f.max_message_len_for(n);
        if budget > 0 {
            assert!(f.fragment_count(budget).unwrap() <= n, "{n} SURBs: {budget} bytes need more");
        }
        // One byte more needs a larger bucket, which no longer fits (or the budget is the largest message).
        if budget < f.max_message_len() {
            assert!(f.fragment_count(budget + 1).unwrap() > n, "{n} SURBs could carry more than {budget}");
        }
    }
}
