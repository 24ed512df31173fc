//! Criterion benches of the packet layer: a whole hop, each phase, packet
//! creation, the body cipher, erasure coding, and every X25519 implementation
//! available on the registry (AWS-LC — the one used —, curve25519-dalek and
//! ring), so that the choice in `docs/protocol.md` can be re-checked.
//!
//! Run: `cargo bench -p nox-protocol`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use nox_protocol::crypto::body::BodyCipher;
use nox_protocol::crypto::x25519::{MixSecretKey, x25519};
use nox_protocol::fragment::{Fragmenter, MAX_SHARD_LEN};
use nox_protocol::sphinx::{BODY_LEN, Hop, NodeId, PacketBuilder};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn sphinx(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let keys: Vec<MixSecretKey> = (0..6).map(|_| MixSecretKey::generate(&mut rng)).collect();
    let route: Vec<Hop> = keys.iter().map(|k| Hop { id: NodeId([1; 32]), key: k.public_key(), delay_us: 0 }).collect();
    let b = PacketBuilder::new(0);
    let (_, packet) = b.forward(&route[..3], b"bench", &mut rng).unwrap();

    c.bench_function("hop/peel_header+finish", |bch| {
        bch.iter_batched(
            || packet.clone(),
            |p| {
                let h = p.peel_header(&keys[0]).unwrap();
                black_box(h.finish(p).unwrap())
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function("hop/peel_header (replay check point)", |bch| {
        bch.iter(|| black_box(packet.peel_header(&keys[0]).unwrap().replay_tag()))
    });
    c.bench_function("create/3 hops", |bch| bch.iter(|| black_box(b.forward(&route[..3], b"x", &mut rng).unwrap())));
    c.bench_function("create/6 hops", |bch| bch.iter(|| black_box(b.forward(&route, b"x", &mut rng).unwrap())));

    let cipher = BodyCipher::new(&[3; 32]);
    let mut body = vec![0u8; BODY_LEN];
    c.bench_function("body_cipher/decrypt 32 KiB body", |bch| bch.iter(|| cipher.decrypt(black_box(&mut body))));
}

fn x25519_impls(c: &mut Criterion) {
    let sk = [7u8; 32];
    let pk = MixSecretKey::from_bytes([9; 32]).public_key().0;
    c.bench_function("x25519/aws-lc", |b| b.iter(|| black_box(x25519(black_box(&sk), &pk).unwrap())));
    c.bench_function("x25519/x25519-dalek", |b| b.iter(|| black_box(x25519_dalek::x25519(black_box(sk), pk))));
    let point = curve25519_dalek::montgomery::MontgomeryPoint(pk);
    let scalar = curve25519_dalek::Scalar::from_bytes_mod_order([5; 32]);
    c.bench_function("x25519/curve25519-dalek montgomery * scalar", |b| {
        b.iter(|| black_box(black_box(point) * scalar))
    });
    let edwards = point.to_edwards(0).unwrap();
    c.bench_function("x25519/curve25519-dalek edwards * scalar", |b| b.iter(|| black_box(black_box(edwards) * scalar)));
    let rng = ring::rand::SystemRandom::new();
    c.bench_function("x25519/ring (ephemeral key + agree)", |b| {
        b.iter(|| {
            let k = ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::X25519, &rng).unwrap();
            let peer = ring::agreement::UnparsedPublicKey::new(&ring::agreement::X25519, &pk);
            black_box(ring::agreement::agree_ephemeral(k, &peer, |s| s[0]).unwrap())
        })
    });
}

fn fec(c: &mut Criterion) {
    let f = Fragmenter::default();
    let msg = vec![1u8; MAX_SHARD_LEN * 11];
    c.bench_function("fragment/split 11 shards (16+5 after bucket)", |b| {
        b.iter(|| black_box(f.split(&msg, [0; 16]).unwrap()))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = sphinx, x25519_impls, fec
}
criterion_main!(benches);
