//! Feeds hostile packets to a node: both processing phases must return `Ok` or a
//! typed error, never panic.
//!
//! The first input byte picks a mode:
//! * raw — the rest is a frame of any length, straight off the wire;
//! * hostile sender — the rest supplies an ephemeral scalar, flags, the
//!   *plaintext* routing block and the *plaintext* body; the target encrypts and
//!   MACs them with the node's public key exactly as a malicious client could.
//!   That drives the fuzzer past the MAC into routing-block decoding, the header
//!   shift, the body cipher and the final-hop integrity and padding checks, all
//!   on bytes it controls.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nox_protocol::crypto::kdf::HopKeys;
use nox_protocol::crypto::x25519::{MixSecretKey, x25519, x25519_base};
use nox_protocol::sphinx::surb::Surb;
use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use nox_protocol::crypto::body::BodyCipher;
use nox_protocol::sphinx::{BETA_OFFSET, GAMMA_OFFSET, HEADER_LEN, MAC_LEN, PACKET_LEN, Packet, ROUTING_BLOCK_LEN};

fn process(key: &MixSecretKey, p: Packet) {
    if let Ok(h) = p.peel_header(key) {
        let _ = h.replay_tag();
        let _ = h.finish(p);
    }
}

fuzz_target!(|data: &[u8]| {
    let key = MixSecretKey::from_bytes([0x11; 32]);
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        if let Ok(p) = Packet::from_bytes(rest) {
            process(&key, p);
        }
        let _ = Surb::decode(rest);
        return;
    }
    if rest.len() < 33 {
        return;
    }
    let mut x = [0u8; 32];
    x.copy_from_slice(&rest[..32]);
    let flags = rest[32];
    let tail = &rest[33..];
    let Ok(s) = x25519(&x, &key.public_key().0) else { return };
    let keys = HopKeys::derive(&s);

    let mut buf = vec![0u8; PACKET_LEN];
    buf[0] = 1;
    buf[1] = flags;
    buf[2..34].copy_from_slice(&x25519_base(&x));
    // Plaintext routing block (then zeros), encrypted with the hop's header stream.
    let block_n = tail.len().min(ROUTING_BLOCK_LEN);
    buf[BETA_OFFSET..BETA_OFFSET + block_n].copy_from_slice(&tail[..block_n]);
    let mut stream = ChaCha20::new(&keys.header_stream.into(), &[0u8; 12].into());
    stream.apply_keystream(&mut buf[BETA_OFFSET..GAMMA_OFFSET]);
    // Plaintext body, encrypted under the hop's body key.
    let body_src = &tail[block_n..];
    let body_n = body_src.len().min(PACKET_LEN - HEADER_LEN);
    buf[HEADER_LEN..HEADER_LEN + body_n].copy_from_slice(&body_src[..body_n]);
    if BodyCipher::new(&keys.body).encrypt(&mut buf[HEADER_LEN..]).is_err() {
        return;
    }
    let mac = blake3::keyed_hash(&keys.mac, &buf[..GAMMA_OFFSET]);
    buf[GAMMA_OFFSET..HEADER_LEN].copy_from_slice(&mac.as_bytes()[..MAC_LEN]);
    if let Ok(p) = Packet::from_vec(buf) {
        process(&key, p);
    }
});
