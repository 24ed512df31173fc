//! The per-hop key schedule.
//!
//! A hop's 32-byte X25519 shared secret `s` is expanded with one BLAKE3
//! `derive_key` call in extendable-output mode, under the context string
//! [`HOP_KEYS_CONTEXT`]. The output stream is cut into the keys below, in this
//! order (`docs/protocol.md`, "Key schedule"):
//!
//! | bytes     | key                                                   |
//! |-----------|-------------------------------------------------------|
//! | 0..16     | replay tag                                            |
//! | 16..48    | header MAC key (keyed BLAKE3)                         |
//! | 48..80    | header stream key (ChaCha20, nonce 0)                 |
//! | 80..112   | body key (expanded by [`super::body::BodyCipher`])     |
//!
//! Everything depends on `s` alone, never on the header's `alpha` bytes. Different
//! encodings of the same point (a set top bit, a non-canonical coordinate, an added
//! small-order component) give the same `s`, so they give the same replay tag: an
//! attacker cannot mint fresh tags for a replayed packet.

use zeroize::{Zeroize, ZeroizeOnDrop};

/// BLAKE3 context for the per-hop key schedule.
pub const HOP_KEYS_CONTEXT: &str = "NOX sphinx v1 hop keys";

/// Length of a replay tag.
pub const REPLAY_TAG_LEN: usize = 16;

/// A packet's replay tag at one hop: a function of the shared secret only. Two
/// presentations of the same packet to the same node key always give the same
/// tag; distinct packets give distinct tags except with negligible probability.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplayTag(pub [u8; REPLAY_TAG_LEN]);

impl std::fmt::Debug for ReplayTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tags identify packets; keep them out of logs by construction.
        f.write_str("ReplayTag(<redacted>)")
    }
}

/// Every key one hop needs, derived from its shared secret.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct HopKeys {
    /// Replay tag (not secret once the MAC has been checked, but zeroized anyway).
    pub replay_tag: [u8; REPLAY_TAG_LEN],
    /// Key for the header MAC.
    pub mac: [u8; 32],
    /// Key for the header's ChaCha20 stream.
    pub header_stream: [u8; 32],
    /// Key for the body cipher.
    pub body: [u8; 32],
}

impl std::fmt::Debug for HopKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HopKeys(<redacted>)")
    }
}

impl HopKeys {
    /// Expands a shared secret into the hop keys.
    pub fn derive(shared_secret: &[u8; 32]) -> Self {
        let mut out = [0u8; 112];
        let mut hasher = blake3::Hasher::new_derive_key(HOP_KEYS_CONTEXT);
        hasher.update(shared_secret);
        hasher.finalize_xof().fill(&mut out);
        let mut keys = HopKeys { replay_tag: [0; REPLAY_TAG_LEN], mac: [0; 32], header_stream: [0; 32], body: [0; 32] };
        keys.replay_tag.copy_from_slice(&out[0..16]);
        keys.mac.copy_from_slice(&out[16..48]);
        keys.header_stream.copy_from_slice(&out[48..80]);
        keys.body.copy_from_slice(&out[80..112]);
        out.zeroize();
        keys
    }

    /// The replay tag as a typed value.
    pub fn tag(&self) -> ReplayTag {
        ReplayTag(self.replay_tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_deterministic() {
        let a = HopKeys::derive(&[7; 32]);
        let b = HopKeys::derive(&[7; 32]);
        let c = HopKeys::derive(&[8; 32]);
        assert_eq!(a.replay_tag, b.replay_tag);
        assert_eq!(a.body, b.body);
        assert_ne!(a.replay_tag, c.replay_tag);
        assert_ne!(a.mac, a.header_stream);
        assert_ne!(a.body, a.mac);
    }
}
