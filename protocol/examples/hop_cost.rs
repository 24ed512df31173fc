//! Per-hop cost of a 32 KiB packet against its floor, measured in one run.
//!
//! Prints one line:
//! `per_hop_us=<median> floor_us=<median> ratio=<per_hop/floor> create3_us=<median> create6_us=<median> hop_floor_us=<median> hop_ratio=<per_hop/hop_floor>`
//!
//! * `per_hop_us` — both processing phases of a forward hop: agreement, key
//!   schedule, MAC, replay tag, header shift, body decryption.
//! * `floor_us` — the reference floor for a Sphinx hop with the same
//!   implementations: one X25519 agreement, one more variable-base X25519
//!   multiplication (the blinding a classic Sphinx hop does) and one body-cipher
//!   pass over the body.
//! * `create3_us`, `create6_us` — building a forward packet for 3 and 6 hops.
//! * `hop_floor_us` — the floor of NOX's own hop, which has no blinding
//!   multiplication: one agreement plus one body-cipher pass. `hop_ratio` says
//!   how much the rest of the hop (key schedule, MAC, header shift, copies)
//!   costs on top of it.
//!
//! Every sample times one operation on a buffer that is warm in cache (the packet
//! is copied in before the clock starts), so the hop and the floor are measured
//! alike; samples of the different measurements are interleaved so that machine
//! noise hits them equally, and medians are reported.
//!
//! Run: `cargo run --release -p nox-protocol --example hop_cost`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Instant;

use nox_protocol::crypto::body::BodyCipher;
use nox_protocol::crypto::x25519::{MixSecretKey, x25519};
use nox_protocol::sphinx::{BODY_LEN, Hop, NodeId, PACKET_LEN, Packet, PacketBuilder, Processed};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

const SAMPLES: usize = 3000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time_us(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64() * 1e6
}

fn main() {
    let mut rng = ChaCha20Rng::seed_from_u64(2026);
    let keys: Vec<MixSecretKey> = (0..6).map(|_| MixSecretKey::generate(&mut rng)).collect();
    let route: Vec<Hop> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Hop { id: NodeId([i as u8; 32]), key: k.public_key(), delay_us: 0 })
        .collect();
    let builder = PacketBuilder::new(1);
    let (_, original) = builder.forward(&route[..3], b"hop cost", &mut rng).expect("build");
    let original = original.into_boxed();

    let alpha: [u8; 32] = original[2..34].try_into().expect("alpha");
    let blinding = [0x42u8; 32];
    let body_cipher = BodyCipher::new(&[7u8; 32]);
    let mut body = vec![0u8; BODY_LEN];

    let mut buf: Box<[u8; PACKET_LEN]> = Box::new([0u8; PACKET_LEN]);
    let (mut hop, mut floor, mut own_floor, mut c3, mut c6) = (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..SAMPLES + 100 {
        buf.copy_from_slice(&original[..]);
        let packet = Packet::from_boxed(buf);
        let mut out = None;
        let h = time_us(|| {
            let peeled = packet.peel_header(&keys[0]).expect("peel");
            black_box(peeled.replay_tag());
            out = Some(peeled.finish(packet).expect("finish"));
        });
        buf = match out {
            Some(Processed::Forward { packet, .. }) => packet.into_boxed(),
            _ => unreachable!("a 3-hop packet is forwarded at hop 0"),
        };
        let f = time_us(|| {
            black_box(keys[0].agree(black_box(&alpha)).expect("agree"));
            black_box(x25519(black_box(&blinding), &alpha).expect("blind"));
            body_cipher.decrypt(black_box(&mut body)).expect("body");
        });
        let o = time_us(|| {
            black_box(keys[0].agree(black_box(&alpha)).expect("agree"));
            body_cipher.decrypt(black_box(&mut body)).expect("body");
        });
        if i >= 100 {
            hop.push(h);
            floor.push(f);
            own_floor.push(o);
            if i % 10 == 0 {
                c3.push(time_us(|| {
                    black_box(builder.forward(&route[..3], b"x", &mut rng).expect("build"));
                }));
                c6.push(time_us(|| {
                    black_box(builder.forward(&route, b"x", &mut rng).expect("build"));
                }));
            }
        }
    }
    let (h, f, o) = (median(hop), median(floor), median(own_floor));
    println!(
        "per_hop_us={h:.1} floor_us={f:.1} ratio={:.3} create3_us={:.1} create6_us={:.1} hop_floor_us={o:.1} hop_ratio={:.3}",
        h / f,
        median(c3),
        median(c6),
        h / o
    );
}
