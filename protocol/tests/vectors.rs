//! Test vectors that pin the wire format.
//!
//! Each file under `tests/vectors/` holds `name: hex` lines. The test does two
//! things with them:
//!
//! 1. It regenerates every vector from fixed seeds and requires the files to
//!    match byte for byte, so any change to the format shows up as a diff.
//! 2. It checks the stored vectors *independently of the generator*: stored
//!    packets are processed with the stored node keys and must yield the stored
//!    outputs, stored ciphertexts must decrypt to the stored plaintexts.
//!
//! After an intentional format change, regenerate with
//! `NOX_REGENERATE_VECTORS=1 cargo test -p nox-protocol --test vectors` and
//! bump the version bytes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use nox_protocol::crypto::body::BodyCipher;
use nox_protocol::crypto::kdf::HopKeys;
use nox_protocol::crypto::padding::pad_into;
use nox_protocol::crypto::x25519::{MixSecretKey, x25519};
use nox_protocol::fragment::{Fragmenter, MAX_SHARD_LEN, Reassembled, Reassembler, ReassemblyLimits};
use nox_protocol::payload::{Envelope, Reply, ReplyStatus, Request};
use nox_protocol::payment::{GasPayment, PROOF_LEN, SpendInputs};
use nox_protocol::pow::{self, PacketDigest, SubmissionHash};
use nox_protocol::sphinx::surb::Surb;
use nox_protocol::sphinx::{Hop, NodeId, PACKET_LEN, Packet, PacketBuilder, Processed};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

type Vectors = BTreeMap<&'static str, Vec<(String, Vec<u8>)>>;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn node_keys() -> Vec<MixSecretKey> {
    (0..3u8).map(|i| MixSecretKey::from_bytes([0x10 + i; 32])).collect()
}

fn route() -> Vec<Hop> {
    node_keys()
        .iter()
        .enumerate()
        .map(|(i, k)| Hop { id: NodeId([0xA0 + i as u8; 32]), key: k.public_key(), delay_us: 1000 * (i as u32 + 1) })
        .collect()
}

fn generate() -> Vectors {
    let mut v = Vectors::new();
    let mut put = |file: &'static str, name: &str, bytes: Vec<u8>| {
        v.entry(file).or_default().push((name.to_owned(), bytes));
    };

    // X25519 and the key schedule.
    let scalar = [0x42u8; 32];
    let point = MixSecretKey::from_bytes([0x24; 32]).public_key().0;
    let shared = x25519(&scalar, &point).expect("x25519");
    put("x25519_kdf.hex", "scalar", scalar.to_vec());
    put("x25519_kdf.hex", "point", point.to_vec());
    put("x25519_kdf.hex", "shared_secret", shared.to_vec());
    let k = HopKeys::derive(&shared);
    put("x25519_kdf.hex", "replay_tag", k.replay_tag.to_vec());
    put("x25519_kdf.hex", "mac_key", k.mac.to_vec());
    put("x25519_kdf.hex", "header_stream_key", k.header_stream.to_vec());
    put("x25519_kdf.hex", "body_key", k.body.to_vec());

    // Body cipher and padding.
    let key = [0x33u8; 32];
    let plain: Vec<u8> = (0..200u32).map(|i| (i * 3) as u8).collect();
    let mut ct = plain.clone();
    BodyCipher::new(&key).encrypt(&mut ct).expect("encrypt");
    put("body_cipher.hex", "key", key.to_vec());
    put("body_cipher.hex", "plaintext", plain);
    put("body_cipher.hex", "ciphertext", ct);
    let mut padded = vec![0u8; 16];
    pad_into(b"NOX", &mut padded).expect("pad");
    put("body_cipher.hex", "pad_content", b"NOX".to_vec());
    put("body_cipher.hex", "padded_16", padded);

    // A 3-hop forward packet.
    let mut rng = ChaCha20Rng::seed_from_u64(0x4e4f58);
    let payload = b"NOX test vector payload".to_vec();
    let (first, packet) = PacketBuilder::new(6).forward(&route(), &payload, &mut rng).expect("build");
    for (i, k) in node_keys().iter().enumerate() {
        put("packet_3hop.hex", &format!("node{i}_secret"), k.to_bytes().to_vec());
        put("packet_3hop.hex", &format!("node{i}_id"), route()[i].id.0.to_vec());
    }
    put("packet_3hop.hex", "epoch", 6u64.to_be_bytes().to_vec());
    put("packet_3hop.hex", "payload", payload);
    put("packet_3hop.hex", "first_hop", first.0.to_vec());
    put("packet_3hop.hex", "packet", packet.as_bytes().to_vec());
    // The submission proof of work for that packet, at 12 bits.
    let digest = PacketDigest::of(&packet);
    let nonce = pow::solve_digest(&digest, 12, 0);
    put("pow.hex", "packet_blake3", digest.0.to_vec());
    put("pow.hex", "bits", vec![12]);
    put("pow.hex", "nonce", nonce.to_be_bytes().to_vec());
    put("pow.hex", "hash", SubmissionHash::new(&digest, nonce).0.to_vec());
    put("pow.hex", "frame_tail", pow::encode_submission(&packet, nonce)[PACKET_LEN - 8..].to_vec());
    let mut p = packet;
    for (i, key) in node_keys().iter().enumerate() {
        let peeled = p.peel_header(key).expect("peel");
        put("packet_3hop.hex", &format!("hop{i}_replay_tag"), peeled.replay_tag().0.to_vec());
        match peeled.finish(p).expect("finish") {
            Processed::Forward { packet, .. } => {
                put(
                    "packet_3hop.hex",
                    &format!("hop{i}_output_blake3"),
                    blake3::hash(packet.as_bytes()).as_bytes().to_vec(),
                );
                p = packet;
            }
            Processed::Final { .. } => break,
            Processed::Reply { .. } => unreachable!(),
        }
    }

    // A SURB over the same nodes and the reply packet made from it.
    let (surb, _) = PacketBuilder::new(6).surb(&route(), [0x5b; 32], &mut rng).expect("surb");
    put("surb.hex", "surb", surb.encode().to_vec());
    put("surb.hex", "reply", b"NOX reply vector".to_vec());
    let (_, reply) = surb.into_packet(b"NOX reply vector").expect("reply");
    put("surb.hex", "reply_packet_blake3", blake3::hash(reply.as_bytes()).as_bytes().to_vec());

    // Fragments of a two-shard message and an envelope.
    let msg: Vec<u8> = (0..MAX_SHARD_LEN + 10).map(|i| (i % 253) as u8).collect();
    let frags = Fragmenter::default().split(&msg, [0x77; 16]).expect("split");
    put("fragments.hex", "message_blake3", blake3::hash(&msg).as_bytes().to_vec());
    for (i, f) in frags.iter().enumerate() {
        put("fragments.hex", &format!("fragment{i}_header"), f[..27].to_vec());
        put("fragments.hex", &format!("fragment{i}_blake3"), blake3::hash(f).as_bytes().to_vec());
    }
    let env = Envelope {
        request_id: [0x0e; 16],
        surbs: vec![],
        request: Request::EthRequest {
            chain_id: 31337,
            target: [0xee; 20],
            call_gas: 100_000,
            deadline: 2_000_000_000,
            allow_failure: false,
            calldata: vec![0xde, 0xad],
            payment: Box::new(GasPayment {
                proof: [0x01; PROOF_LEN],
                inputs: SpendInputs {
                    root: [0x02; 32],
                    nullifier: [0x03; 32],
                    change_commitment: [0x04; 32],
                    asset: [0; 32],
                    public_value: {
                        let mut w = [0u8; 32];
                        w[24..].copy_from_slice(&1_000_000u64.to_be_bytes());
                        w
                    },
                    recipient: {
                        let mut w = [0u8; 32];
                        w[12..].copy_from_slice(&[0xaa; 20]);
                        w
                    },
                    execution_hash: [0x05; 32],
                },
            }),
        },
    };
    put("envelope.hex", "eth_request", env.encode().expect("encode"));
    let reply = Reply { request_id: [0x0e; 16], status: ReplyStatus::Refused, data: b"fee too low".to_vec() };
    put("envelope.hex", "reply_refused", reply.encode().expect("encode"));
    let echo = Envelope { request_id: [0x0f; 16], surbs: vec![], request: Request::Echo { data: b"ping".to_vec() } };
    put("envelope.hex", "echo", echo.encode().expect("encode"));
    v
}

fn render(entries: &[(String, Vec<u8>)]) -> String {
    entries.iter().map(|(n, b)| format!("{n}: {}\n", hex::encode(b))).collect()
}

fn load(file: &str) -> BTreeMap<String, Vec<u8>> {
    let text = std::fs::read_to_string(dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, hex) = l.split_once(": ").expect("name: hex");
            (name.to_owned(), hex::decode(hex).expect("hex"))
        })
        .collect()
}

#[test]
fn vectors_match_the_implementation() {
    let generated = generate();
    if std::env::var_os("NOX_REGENERATE_VECTORS").is_some() {
        std::fs::create_dir_all(dir()).expect("mkdir");
        for (file, entries) in &generated {
            std::fs::write(dir().join(file), render(entries)).expect("write");
        }
    }
    for (file, entries) in &generated {
        let stored = std::fs::read_to_string(dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(stored == render(entries), "{file} differs from the implementation: the wire format changed");
    }
}

#[test]
fn stored_packet_processes_with_stored_keys() {
    let v = load("packet_3hop.hex");
    let mut packet = Packet::from_vec(v["packet"].clone()).expect("packet");
    let mut expected = NodeId(v["first_hop"].clone().try_into().expect("id"));
    for i in 0..3 {
        let id = NodeId(v[&format!("node{i}_id")].clone().try_into().expect("id"));
        assert_eq!(expected, id);
        let key = MixSecretKey::from_bytes(v[&format!("node{i}_secret")].clone().try_into().expect("key"));
        let peeled = packet.peel_header(&key).expect("peel");
        assert_eq!(peeled.replay_tag().0.to_vec(), v[&format!("hop{i}_replay_tag")]);
        match peeled.finish(packet).expect("finish") {
            Processed::Forward { next, packet: p, delay_us } => {
                assert_eq!(delay_us, 1000 * (i as u32 + 1));
                assert_eq!(blake3::hash(p.as_bytes()).as_bytes().to_vec(), v[&format!("hop{i}_output_blake3")]);
                expected = next;
                packet = p;
            }
            Processed::Final { payload, .. } => {
                assert_eq!(i, 2);
                assert_eq!(payload.to_vec(), v["payload"]);
                return;
            }
            Processed::Reply { .. } => panic!("not a reply"),
        }
    }
    panic!("the stored packet did not end at hop 2");
}

#[test]
fn stored_proof_of_work_checks_out() {
    let packet = load("packet_3hop.hex").remove("packet").expect("packet");
    let v = load("pow.hex");
    // The layout restated from docs/protocol.md §10.2, apart from the code.
    let d = blake3::hash(&packet);
    assert_eq!(d.as_bytes().to_vec(), v["packet_blake3"]);
    let nonce: [u8; 8] = v["nonce"].clone().try_into().expect("nonce");
    let mut h = blake3::Hasher::new_derive_key("NOX submission pow v2");
    h.update(d.as_bytes());
    h.update(&nonce);
    let hash = *h.finalize().as_bytes();
    assert_eq!(hash.to_vec(), v["hash"]);
    let bits = v["bits"][0];
    assert!(SubmissionHash(hash).zero_bits() >= u32::from(bits));
    // The frame is the packet, then the nonce big endian.
    assert_eq!(v["frame_tail"][..8], packet[PACKET_LEN - 8..]);
    assert_eq!(v["frame_tail"][8..], nonce);
    // The implementation agrees, and the nonce does not carry over to the
    // packet with one body byte changed.
    let p = Packet::from_vec(packet.clone()).expect("packet");
    let n = u64::from_be_bytes(nonce);
    assert!(pow::verify(&p, n, bits));
    let mut other = packet;
    other[PACKET_LEN - 1] ^= 1;
    assert!(!pow::verify(&Packet::from_vec(other).expect("packet"), n, bits));
}

#[test]
fn stored_primitives_check_out() {
    let v = load("x25519_kdf.hex");
    let shared = x25519(&v["scalar"].clone().try_into().expect("32"), &v["point"].clone().try_into().expect("32"))
        .expect("x25519");
    assert_eq!(shared.to_vec(), v["shared_secret"]);
    let k = HopKeys::derive(&shared);
    assert_eq!(k.replay_tag.to_vec(), v["replay_tag"]);
    assert_eq!(k.body.to_vec(), v["body_key"]);

    let b = load("body_cipher.hex");
    let mut buf = b["ciphertext"].clone();
    BodyCipher::new(&b["key"].clone().try_into().expect("32")).decrypt(&mut buf).expect("decrypt");
    assert_eq!(buf, b["plaintext"]);

    let s = load("surb.hex");
    let surb = Surb::decode(&s["surb"]).expect("surb");
    let (_, reply) = surb.into_packet(&s["reply"]).expect("reply");
    assert_eq!(blake3::hash(reply.as_bytes()).as_bytes().to_vec(), s["reply_packet_blake3"]);

    let e = load("envelope.hex");
    assert!(matches!(Envelope::decode(&e["echo"]).expect("echo").request, Request::Echo { .. }));
    assert!(matches!(
        Envelope::decode(&e["eth_request"]).expect("eth").request,
        Request::EthRequest { chain_id: 31337, call_gas: 100_000, .. }
    ));
    let reply = Reply::decode(&e["reply_refused"]).expect("reply");
    assert_eq!((reply.status, reply.data.as_slice()), (ReplyStatus::Refused, b"fee too low".as_slice()));

    let f = load("fragments.hex");
    let msg: Vec<u8> = (0..MAX_SHARD_LEN + 10).map(|i| (i % 253) as u8).collect();
    assert_eq!(blake3::hash(&msg).as_bytes().to_vec(), f["message_blake3"]);
    let frags = Fragmenter::default().split(&msg, [0x77; 16]).expect("split");
    let mut r = Reassembler::new(ReassemblyLimits::default());
    let mut out = None;
    for (i, frag) in frags.iter().enumerate() {
        assert_eq!(frag[..27].to_vec(), f[&format!("fragment{i}_header")]);
        if let Ok(Reassembled::Complete(m)) = r.insert(frag, std::time::Instant::now()) {
            out = Some(m);
        }
    }
    assert!(out == Some(msg));
}
