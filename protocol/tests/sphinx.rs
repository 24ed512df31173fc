//! Sphinx packets end to end: construction, processing at every hop, SURB
//! replies, and every kind of corruption and misuse a node can meet.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nox_protocol::crypto::x25519::MixSecretKey;
use nox_protocol::sphinx::surb::{SURB_LEN, Surb};
use nox_protocol::sphinx::{
    BODY_LEN, HEADER_LEN, Hop, MAX_HOPS, NodeId, PACKET_LEN, PAYLOAD_CAPACITY, Packet, PacketBuilder, Parity,
    Processed, SphinxError,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

struct TestNode {
    id: NodeId,
    key: MixSecretKey,
}

fn nodes(n: usize, seed: u64) -> Vec<TestNode> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let mut id = [0u8; 32];
            id[0] = i as u8 + 1;
            id[31] = (seed & 0xff) as u8;
            TestNode { id: NodeId(id), key: MixSecretKey::generate(&mut rng) }
        })
        .collect()
}

fn route(nodes: &[TestNode]) -> Vec<Hop> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| Hop { id: n.id, key: n.key.public_key(), delay_us: 1000 * (i as u32 + 1) })
        .collect()
}

/// Runs a packet through `nodes`, checking at each hop that it is addressed to
/// the next node, and returns the final outcome.
fn run(nodes: &[TestNode], first: NodeId, mut packet: Packet) -> Result<Processed, (usize, SphinxError)> {
    let mut expected = first;
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(expected, node.id, "packet addressed to the wrong node at hop {i}");
        let peeled = packet.peel_header(&node.key).map_err(|e| (i, e))?;
        match peeled.finish(packet).map_err(|e| (i, e))? {
            Processed::Forward { next, delay_us, packet: p } => {
                assert_eq!(delay_us, 1000 * (i as u32 + 1));
                assert!(i + 1 < nodes.len(), "forwarded past the last hop");
                expected = next;
                packet = p;
            }
            other => {
                assert_eq!(i + 1, nodes.len(), "route ended early at hop {i}");
                return Ok(other);
            }
        }
    }
    panic!("route did not end");
}

fn final_payload(outcome: Processed) -> Vec<u8> {
    match outcome {
        Processed::Final { payload, .. } => payload.to_vec(),
        other => panic!("expected a final payload, got {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn forward_round_trip(hops in 1usize..=MAX_HOPS, seed in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let ns = nodes(hops, seed);
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 1);
        let (first, packet) = PacketBuilder::new(seed).forward(&route(&ns), &payload, &mut rng).unwrap();
        prop_assert_eq!(packet.as_bytes().len(), PACKET_LEN);
        prop_assert_eq!(packet.parity(), Parity::of_epoch(seed));
        let out = final_payload(run(&ns, first, packet).unwrap());
        prop_assert_eq!(out, payload);
    }

    #[test]
    fn surb_round_trip(hops in 1usize..=MAX_HOPS, seed in any::<u64>(), reply in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let ns = nodes(hops, seed);
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 2);
        let surb_id = [0x5a; 32];
        let (surb, keys) = PacketBuilder::new(7).surb(&route(&ns), surb_id, &mut rng).unwrap();
        // The SURB travels inside a request, so it goes through its encoding.
        let surb = Surb::decode(&surb.encode()).unwrap();
        let (first, packet) = surb.into_packet(&reply).unwrap();
        match run(&ns, first, packet).unwrap() {
            Processed::Reply { surb_id: id, packet, .. } => {
                prop_assert_eq!(id, surb_id);
                prop_assert_eq!(keys.open(packet.body()).unwrap(), reply);
            }
            other => prop_assert!(false, "expected a reply, got {:?}", other),
        }
    }
}

#[test]
fn full_capacity_payload_round_trips_and_one_more_byte_is_refused() {
    let ns = nodes(3, 11);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let payload: Vec<u8> = (0..PAYLOAD_CAPACITY).map(|i| (i % 251) as u8).collect();
    let (first, packet) = PacketBuilder::new(0).forward(&route(&ns), &payload, &mut rng).unwrap();
    assert_eq!(final_payload(run(&ns, first, packet).unwrap()), payload);
    let too_big = vec![0u8; PAYLOAD_CAPACITY + 1];
    assert_eq!(
        PacketBuilder::new(0).forward(&route(&ns), &too_big, &mut rng).unwrap_err(),
        SphinxError::PayloadTooLarge { len: PAYLOAD_CAPACITY + 1 }
    );
}

#[test]
fn route_length_is_checked() {
    let ns = nodes(MAX_HOPS + 1, 4);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let b = PacketBuilder::new(0);
    assert_eq!(b.forward(&[], b"x", &mut rng).unwrap_err(), SphinxError::EmptyRoute);
    assert_eq!(b.forward(&route(&ns), b"x", &mut rng).unwrap_err(), SphinxError::TooManyHops(MAX_HOPS + 1));
    let mut bad = route(&ns[..3]);
    bad[1].key.0 = [0; 32];
    assert_eq!(b.forward(&bad, b"x", &mut rng).unwrap_err(), SphinxError::InvalidNodeKey { hop: 1 });
}

/// Flips one bit at `hop` (before that hop processes the packet) and returns the
/// outcome of the whole route.
fn flip_at(hops: usize, hop: usize, bit: usize, seed: u64) -> Result<Processed, (usize, SphinxError)> {
    let ns = nodes(hops, seed);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let payload = b"flip me if you can".to_vec();
    let (mut expected, mut packet) = PacketBuilder::new(1).forward(&route(&ns), &payload, &mut rng).unwrap();
    for (i, node) in ns.iter().enumerate() {
        assert_eq!(expected, node.id);
        if i == hop {
            packet.as_bytes_mut()[bit / 8] ^= 1 << (bit % 8);
        }
        let peeled = packet.peel_header(&node.key).map_err(|e| (i, e))?;
        match peeled.finish(packet).map_err(|e| (i, e))? {
            Processed::Forward { next, packet: p, .. } => {
                expected = next;
                packet = p;
            }
            other => {
                if let Processed::Final { payload: p, .. } = &other {
                    assert_eq!(p.as_bytes(), payload.as_slice(), "a corrupted packet yielded a wrong plaintext");
                }
                return Ok(other);
            }
        }
    }
    panic!("route did not end");
}

#[test]
fn every_header_bit_flip_is_detected_at_the_hop_where_it_happens() {
    // Every single bit of the header, at every hop of 1-, 3- and 6-hop routes.
    for (hops, hop) in [(1, 0), (3, 0), (3, 1), (3, 2), (6, 0), (6, 1), (6, 2), (6, 3), (6, 4), (6, 5)] {
        for bit in 0..HEADER_LEN * 8 {
            let outcome = flip_at(hops, hop, bit, 99);
            match outcome {
                Err((at, e)) => {
                    assert_eq!(at, hop, "bit {bit} flipped before hop {hop} was caught at hop {at}");
                    assert!(
                        matches!(
                            e,
                            SphinxError::MacMismatch
                                | SphinxError::UnsupportedVersion(_)
                                | SphinxError::ReservedFlags(_)
                                | SphinxError::InvalidGroupElement
                        ),
                        "bit {bit} at hop {hop}: unexpected error {e:?}"
                    );
                }
                Ok(_) => panic!("header bit {bit} flipped before hop {hop} went undetected"),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn body_bit_flips_are_caught_at_the_final_hop(hops in 1usize..=MAX_HOPS, hop_sel in any::<usize>(), bit in 0usize..(BODY_LEN * 8), seed in any::<u64>()) {
        let hop = hop_sel % hops;
        let outcome = flip_at(hops, hop, HEADER_LEN * 8 + bit, seed);
        match outcome {
            Err((at, e)) => {
                prop_assert_eq!(at, hops - 1);
                prop_assert!(matches!(e, SphinxError::TaggedBody), "got {:?}", e);
            }
            Ok(_) => prop_assert!(false, "body bit {} flipped before hop {} went undetected", bit, hop),
        }
    }

    #[test]
    fn tampered_replies_are_rejected_by_the_client(hops in 1usize..=MAX_HOPS, hop_sel in any::<usize>(), bit in 0usize..(BODY_LEN * 8), seed in any::<u64>()) {
        let ns = nodes(hops, seed);
        let hop = hop_sel % (hops + 1);
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (surb, keys) = PacketBuilder::new(3).surb(&route(&ns), [1; 32], &mut rng).unwrap();
        let (_, mut packet) = surb.into_packet(b"the answer is 42").unwrap();
        for (i, node) in ns.iter().enumerate() {
            if i == hop {
                packet.as_bytes_mut()[HEADER_LEN + bit / 8] ^= 1 << (bit % 8);
            }
            packet = match packet.peel_header(&node.key).unwrap().finish(packet).unwrap() {
                Processed::Forward { packet, .. } | Processed::Reply { packet, .. } => packet,
                Processed::Final { .. } => unreachable!("a SURB route ends in a reply"),
            };
        }
        let mut body = packet.body().to_vec();
        if hop == hops {
            // Tampered between the gateway and the client.
            body[bit / 8] ^= 1 << (bit % 8);
        }
        prop_assert_eq!(keys.open(&body), Err(SphinxError::TaggedBody));
    }
}

#[test]
fn replay_tags_are_stable_per_packet_and_distinct_across_packets() {
    let ns = nodes(3, 5);
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let (_, p1) = PacketBuilder::new(2).forward(&route(&ns), b"one", &mut rng).unwrap();
    let (_, p2) = PacketBuilder::new(2).forward(&route(&ns), b"one", &mut rng).unwrap();
    let t1a = p1.peel_header(&ns[0].key).unwrap().replay_tag();
    let t1b = p1.clone().peel_header(&ns[0].key).unwrap().replay_tag();
    let t2 = p2.peel_header(&ns[0].key).unwrap().replay_tag();
    assert_eq!(t1a, t1b);
    assert_ne!(t1a, t2);

    // The tag follows the shared secret, not the encoding of alpha: setting the
    // (ignored) top bit of alpha does not mint a fresh tag. The MAC covers alpha,
    // so such a packet is rejected anyway.
    let mut forged = p1.clone();
    forged.as_bytes_mut()[2 + 31] ^= 0x80;
    assert_eq!(forged.peel_header(&ns[0].key).unwrap_err(), SphinxError::MacMismatch);

    // At the next hop the processed packet has its own, different tag.
    let next = match p1.peel_header(&ns[0].key).unwrap().finish(p1).unwrap() {
        Processed::Forward { packet, .. } => packet,
        other => panic!("{other:?}"),
    };
    let t_hop1 = next.peel_header(&ns[1].key).unwrap().replay_tag();
    assert_ne!(t_hop1, t1a);
}

#[test]
fn a_surb_is_single_use_by_replay_tag() {
    let ns = nodes(3, 6);
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let (surb, _keys) = PacketBuilder::new(2).surb(&route(&ns), [3; 32], &mut rng).unwrap();
    let (_, first) = surb.clone().into_packet(b"first").unwrap();
    let (_, second) = surb.into_packet(b"second, different body").unwrap();
    assert_eq!(
        first.peel_header(&ns[0].key).unwrap().replay_tag(),
        second.peel_header(&ns[0].key).unwrap().replay_tag()
    );
}

#[test]
fn wrong_node_and_wrong_epoch_key_are_rejected() {
    let ns = nodes(3, 7);
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let (_, packet) = PacketBuilder::new(4).forward(&route(&ns), b"hi", &mut rng).unwrap();
    // Delivered to the second node instead of the first.
    assert_eq!(packet.peel_header(&ns[1].key).unwrap_err(), SphinxError::MacMismatch);
    // The right node, but its key of another epoch.
    let other_epoch = MixSecretKey::generate(&mut rng);
    assert_eq!(packet.peel_header(&other_epoch).unwrap_err(), SphinxError::MacMismatch);
}

#[test]
fn wire_length_and_garbage_get_typed_errors() {
    assert_eq!(Packet::from_bytes(&[]).unwrap_err(), SphinxError::Truncated { len: 0 });
    assert_eq!(
        Packet::from_bytes(&vec![0; PACKET_LEN - 1]).unwrap_err(),
        SphinxError::Truncated { len: PACKET_LEN - 1 }
    );
    assert_eq!(
        Packet::from_bytes(&vec![0; PACKET_LEN + 1]).unwrap_err(),
        SphinxError::Oversized { len: PACKET_LEN + 1 }
    );
    assert_eq!(Packet::from_vec(vec![1; 10]).unwrap_err(), SphinxError::Truncated { len: 10 });
    let key = MixSecretKey::from_bytes([4; 32]);
    let zeros = Packet::from_bytes(&vec![0; PACKET_LEN]).unwrap();
    assert_eq!(zeros.peel_header(&key).unwrap_err(), SphinxError::UnsupportedVersion(0));
    let mut v1 = vec![0u8; PACKET_LEN];
    v1[0] = 1;
    v1[1] = 0x02;
    assert_eq!(Packet::from_vec(v1.clone()).unwrap().peel_header(&key).unwrap_err(), SphinxError::ReservedFlags(2));
    v1[1] = 0;
    // alpha = 0 is a small-order point.
    assert_eq!(Packet::from_vec(v1.clone()).unwrap().peel_header(&key).unwrap_err(), SphinxError::InvalidGroupElement);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for _ in 0..64 {
        let mut junk = vec![0u8; PACKET_LEN];
        rand::RngCore::fill_bytes(&mut rng, &mut junk);
        junk[0] = 1;
        junk[1] &= 1;
        assert!(Packet::from_vec(junk).unwrap().peel_header(&key).is_err());
    }
}

#[test]
fn finish_refuses_a_packet_it_did_not_peel() {
    let ns = nodes(3, 12);
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let (_, a) = PacketBuilder::new(0).forward(&route(&ns), b"a", &mut rng).unwrap();
    let (_, b) = PacketBuilder::new(0).forward(&route(&ns), b"b", &mut rng).unwrap();
    let peeled = a.peel_header(&ns[0].key).unwrap();
    assert_eq!(peeled.finish(b).unwrap_err(), SphinxError::PacketMismatch);
}

#[test]
fn surb_decoding_rejects_garbage() {
    assert_eq!(Surb::decode(&[]).unwrap_err(), SphinxError::MalformedSurb);
    assert_eq!(Surb::decode(&vec![0; SURB_LEN]).unwrap_err(), SphinxError::MalformedSurb);
    assert_eq!(Surb::decode(&vec![1; SURB_LEN + 1]).unwrap_err(), SphinxError::MalformedSurb);
    let ns = nodes(2, 1);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (_, keys) = PacketBuilder::new(0).surb(&route(&ns), [0; 32], &mut rng).unwrap();
    assert_eq!(keys.open(&[0; 10]).unwrap_err(), SphinxError::ReplyLength { len: 10 });
    // A body nobody made with this SURB's keys.
    assert_eq!(keys.open(&vec![0; BODY_LEN]).unwrap_err(), SphinxError::TaggedBody);
}

#[test]
fn debug_output_shows_no_route_timing_or_surb_id() {
    let ns = nodes(2, 13);
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    let r = route(&ns);
    assert_eq!(format!("{:?}", r[0]), "Hop(<redacted>)");
    let (_, packet) = PacketBuilder::new(0).forward(&r, b"secret content", &mut rng).unwrap();
    let out = packet.peel_header(&ns[0].key).unwrap().finish(packet).unwrap();
    let shown = format!("{out:?}");
    assert_eq!(shown, "Processed::Forward(<redacted>)");
    let (surb, _) = PacketBuilder::new(0).surb(&r, [0xab; 32], &mut rng).unwrap();
    let shown = format!("{surb:?}");
    assert!(!shown.contains("first_hop") && !shown.contains("NodeId"), "{shown}");
}
