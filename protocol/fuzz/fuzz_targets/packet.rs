//! Feeds arbitrary bytes to a node as a packet: both processing phases must
//! return `Ok` or a typed error, never panic. The first two input bytes choose
//! how the input is laid over a valid packet, so the fuzzer reaches the MAC,
//! routing-block and body checks and not only the length check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nox_protocol::crypto::x25519::MixSecretKey;
use nox_protocol::sphinx::{Packet, PACKET_LEN};

fuzz_target!(|data: &[u8]| {
    let key = MixSecretKey::from_bytes([0x11; 32]);
    // Raw frame, any length.
    if let Ok(p) = Packet::from_bytes(data) {
        if let Ok(h) = p.peel_header(&key) {
            let _ = h.finish(p);
        }
    }
    // The input written over a fixed template packet at an offset it chooses.
    if data.len() >= 2 {
        let offset = usize::from(u16::from_le_bytes([data[0], data[1]])) % PACKET_LEN;
        let mut buf = vec![0u8; PACKET_LEN];
        buf[0] = 1;
        let n = (data.len() - 2).min(PACKET_LEN - offset);
        buf[offset..offset + n].copy_from_slice(&data[2..2 + n]);
        if let Ok(p) = Packet::from_vec(buf) {
            if let Ok(h) = p.peel_header(&key) {
                let _ = h.finish(p);
            }
        }
    }
    let _ = nox_protocol::sphinx::Surb::decode(data);
});
