//! The 96-byte routing block each hop decrypts from `beta`.
//!
//! ```text
//! 0     1          4              8                    40              72          88        96
//! +-----+----------+--------------+--------------------+---------------+-----------+---------+
//! |kind | reserved | delay µs (BE)| next node id / SURB| next alpha    | next gamma| reserved|
//! +-----+----------+--------------+--------------------+---------------+-----------+---------+
//! ```
//!
//! Reserved bytes must be zero; a block that breaks this, or names an unknown
//! kind, is rejected as malformed (the MAC has already passed, so only a buggy or
//! hostile *sender* can produce one).

use super::{MAC_LEN, NodeId, ROUTING_BLOCK_LEN, SphinxError};

/// What a hop does with the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RoutingKind {
    /// Relay to `next` after `delay`.
    Forward = 1,
    /// This hop is the exit: the body holds the payload.
    Final = 2,
    /// This hop is the last of a SURB route: hand the body to the client that
    /// owns the SURB named by `next`.
    Reply = 3,
}

/// A decoded routing block. `Debug` shows only the kind (the rest is one
/// packet's route and timing).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RoutingBlock {
    /// What to do.
    pub kind: RoutingKind,
    /// Sender-chosen delay at this hop, in microseconds.
    pub delay_us: u32,
    /// Next node (forward), SURB id (reply), zero (final).
    pub next: NodeId,
    /// The next hop's ephemeral public key (zero at the last hop).
    pub next_alpha: [u8; 32],
    /// MAC of the next hop's header (zero at the last hop).
    pub next_mac: [u8; MAC_LEN],
}

impl std::fmt::Debug for RoutingBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingBlock").field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl RoutingBlock {
    /// Encodes into a 64-byte slot.
    pub fn encode(&self) -> [u8; ROUTING_BLOCK_LEN] {
        let mut out = [0u8; ROUTING_BLOCK_LEN];
        out[0] = self.kind as u8;
        out[4..8].copy_from_slice(&self.delay_us.to_be_bytes());
        out[8..40].copy_from_slice(&self.next.0);
        out[40..72].copy_from_slice(&self.next_alpha);
        out[72..88].copy_from_slice(&self.next_mac);
        out
    }

    /// Decodes a 64-byte slot.
    pub fn decode(b: &[u8; ROUTING_BLOCK_LEN]) -> Result<Self, SphinxError> {
        let kind = match b[0] {
            1 => RoutingKind::Forward,
            2 => RoutingKind::Final,
            3 => RoutingKind::Reply,
            _ => return Err(SphinxError::MalformedRoutingBlock),
        };
        if b[1..4].iter().chain(&b[88..96]).any(|x| *x != 0) {
            return Err(SphinxError::MalformedRoutingBlock);
        }
        let mut delay = [0u8; 4];
        delay.copy_from_slice(&b[4..8]);
        let mut next = [0u8; 32];
        next.copy_from_slice(&b[8..40]);
        let mut next_alpha = [0u8; 32];
        next_alpha.copy_from_slice(&b[40..72]);
        let mut next_mac = [0u8; MAC_LEN];
        next_mac.copy_from_slice(&b[72..88]);
        Ok(RoutingBlock { kind, delay_us: u32::from_be_bytes(delay), next: NodeId(next), next_alpha, next_mac })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(kind in 1u8..=3, delay in any::<u32>(), next in any::<[u8; 32]>(), alpha in any::<[u8; 32]>(), mac in any::<[u8; 16]>()) {
            let kind = match kind { 1 => RoutingKind::Forward, 2 => RoutingKind::Final, _ => RoutingKind::Reply };
            let b = RoutingBlock { kind, delay_us: delay, next: NodeId(next), next_alpha: alpha, next_mac: mac };
            prop_assert_eq!(RoutingBlock::decode(&b.encode()), Ok(b));
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 96)) {
            let mut b = [0u8; ROUTING_BLOCK_LEN];
            b.copy_from_slice(&bytes);
            let _ = RoutingBlock::decode(&b);
        }
    }

    #[test]
    fn reserved_and_kind_are_checked() {
        let b = RoutingBlock {
            kind: RoutingKind::Forward,
            delay_us: 5,
            next: NodeId([1; 32]),
            next_alpha: [3; 32],
            next_mac: [2; 16],
        };
        let mut e = b.encode();
        e[2] = 1;
        assert_eq!(RoutingBlock::decode(&e), Err(SphinxError::MalformedRoutingBlock));
        let mut e = b.encode();
        e[95] = 1;
        assert_eq!(RoutingBlock::decode(&e), Err(SphinxError::MalformedRoutingBlock));
        let mut e = b.encode();
        e[0] = 0;
        assert_eq!(RoutingBlock::decode(&e), Err(SphinxError::MalformedRoutingBlock));
    }
}
