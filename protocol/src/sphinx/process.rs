//! Per-hop processing (the node side), in two phases.

use subtle::ConstantTimeEq;

use super::header::{RoutingBlock, RoutingKind};
use super::{
    ALPHA_OFFSET, BETA_LEN, BETA_OFFSET, FLAG_EPOCH_PARITY, GAMMA_OFFSET, HEADER_LEN, INTEGRITY_TAG_LEN, MAC_LEN,
    NodeId, Packet, ROUTING_BLOCK_LEN, SphinxError, VERSION, header_mac, header_stream, open_plaintext, xor_in_place,
};
use crate::crypto::body::BodyCipher;
use crate::crypto::kdf::{HopKeys, ReplayTag};
use crate::crypto::x25519::MixSecretKey;

/// The outcome of the cheap phase: the MAC verified and the replay tag is known.
/// Nothing about the packet has been decrypted yet.
#[derive(Debug)]
pub struct PeeledHeader {
    keys: HopKeys,
    /// The verified MAC, so that `finish` can refuse a different packet.
    gamma: [u8; MAC_LEN],
}

/// What a hop does with a packet once it is processed.
///
/// `Debug` shows only the variant: next hops, delays and SURB ids describe one
/// user's route and must never reach a log.
pub enum Processed {
    /// Hold for `delay_us`, then send `packet` to `next`.
    Forward {
        /// Next hop.
        next: NodeId,
        /// Sender-chosen delay in microseconds (the node applies its own cap).
        delay_us: u32,
        /// The re-encrypted packet.
        packet: Packet,
    },
    /// This node is the exit: the payload arrived intact.
    Final {
        /// Sender-chosen delay at this hop, in microseconds.
        delay_us: u32,
        /// The payload.
        payload: Payload,
    },
    /// This node ends a SURB route: hand the body to the owner of `surb_id`.
    Reply {
        /// The SURB identifier the client chose.
        surb_id: [u8; 32],
        /// Sender-chosen delay at this hop, in microseconds.
        delay_us: u32,
        /// The packet, whose body the client decrypts with its SURB keys.
        packet: Packet,
    },
}

impl std::fmt::Debug for Processed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Processed::Forward { .. } => "Processed::Forward(<redacted>)",
            Processed::Final { .. } => "Processed::Final(<redacted>)",
            Processed::Reply { .. } => "Processed::Reply(<redacted>)",
        })
    }
}

/// A final hop's payload, kept in the packet buffer it arrived in.
pub struct Payload {
    packet: Packet,
    len: usize,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Payload(<redacted>)")
    }
}

impl Payload {
    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        let start = HEADER_LEN + INTEGRITY_TAG_LEN;
        &self.packet.as_bytes()[start..start + self.len]
    }

    /// The payload as an owned vector.
    pub fn to_vec(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}

impl Packet {
    /// Phase one: checks the version and flags, agrees on the shared secret with
    /// `key` (the node's mix key for [`Packet::parity`]), verifies the MAC in
    /// constant time and derives the replay tag.
    pub fn peel_header(&self, key: &MixSecretKey) -> Result<PeeledHeader, SphinxError> {
        let h = self.as_bytes();
        if h[0] != VERSION {
            return Err(SphinxError::UnsupportedVersion(h[0]));
        }
        if h[1] & !FLAG_EPOCH_PARITY != 0 {
            return Err(SphinxError::ReservedFlags(h[1]));
        }
        let mut alpha = [0u8; 32];
        alpha.copy_from_slice(&h[ALPHA_OFFSET..BETA_OFFSET]);
        let mut s = key.agree(&alpha).map_err(|_| SphinxError::InvalidGroupElement)?;
        let keys = HopKeys::derive(&s);
        zeroize::Zeroize::zeroize(&mut s);
        let mac = header_mac(&keys.mac, &h[..GAMMA_OFFSET]);
        if !bool::from(mac.ct_eq(&h[GAMMA_OFFSET..HEADER_LEN])) {
            return Err(SphinxError::MacMismatch);
        }
        let mut gamma = [0u8; MAC_LEN];
        gamma.copy_from_slice(&h[GAMMA_OFFSET..HEADER_LEN]);
        Ok(PeeledHeader { keys, gamma })
    }
}

impl PeeledHeader {
    /// The packet's replay tag at this hop. Check it against the replay cache of
    /// the key that was used before calling [`PeeledHeader::finish`].
    pub fn replay_tag(&self) -> ReplayTag {
        self.keys.tag()
    }

    /// Phase two: decrypts and shifts the header (installing the next hop's
    /// ephemeral key from the routing block), decrypts the body, and for a final
    /// hop checks the body's integrity tag and padding.
    /// `packet` must be the packet [`Packet::peel_header`] was called on; any
    /// other packet is refused with [`SphinxError::PacketMismatch`].
    pub fn finish(self, mut packet: Packet) -> Result<Processed, SphinxError> {
        if !bool::from(self.gamma.ct_eq(&packet.as_bytes()[GAMMA_OFFSET..HEADER_LEN])) {
            return Err(SphinxError::PacketMismatch);
        }
        let stream = header_stream(&self.keys.header_stream);
        let buf = packet.as_bytes_mut();
        let mut ext = [0u8; BETA_LEN + ROUTING_BLOCK_LEN];
        ext[..BETA_LEN].copy_from_slice(&buf[BETA_OFFSET..GAMMA_OFFSET]);
        xor_in_place(&mut ext, &stream);
        let mut block = [0u8; ROUTING_BLOCK_LEN];
        block.copy_from_slice(&ext[..ROUTING_BLOCK_LEN]);
        let routing = RoutingBlock::decode(&block)?;

        BodyCipher::new(&self.keys.body).decrypt(&mut buf[HEADER_LEN..])?;

        match routing.kind {
            RoutingKind::Forward => {
                buf[ALPHA_OFFSET..BETA_OFFSET].copy_from_slice(&routing.next_alpha);
                buf[BETA_OFFSET..GAMMA_OFFSET].copy_from_slice(&ext[ROUTING_BLOCK_LEN..]);
                buf[GAMMA_OFFSET..HEADER_LEN].copy_from_slice(&routing.next_mac[..MAC_LEN]);
                Ok(Processed::Forward { next: routing.next, delay_us: routing.delay_us, packet })
            }
            RoutingKind::Final => {
                let len = open_plaintext(&buf[HEADER_LEN..])?;
                Ok(Processed::Final { delay_us: routing.delay_us, payload: Payload { packet, len } })
            }
            RoutingKind::Reply => Ok(Processed::Reply { surb_id: routing.next.0, delay_us: routing.delay_us, packet }),
        }
    }
}
