//! Single-use reply blocks.
//!
//! A client that wants an answer builds a [`Surb`] over a return route that ends
//! at a node it is attached to (its gateway), and keeps the matching
//! [`SurbKeys`]. The responder — an exit — turns the SURB and its reply into a
//! normal packet with [`Surb::into_packet`] without learning anything about the
//! route beyond the first hop. Every hop on the way back decrypts the body as
//! usual; the gateway sees a `Reply` routing block naming the SURB id and hands
//! the body to the client, who removes the hop layers and the reply layer with
//! [`SurbKeys::open`].
//!
//! ## Authentication
//!
//! The responder encrypts `0^16 ‖ pad(reply)` under the SURB's reply key with the
//! body cipher, a strong PRP. The client checks the 16 zero bytes after removing
//! every layer: a reply that anyone on the path (or anyone without the reply key)
//! altered or forged fails with [`SphinxError::TaggedBody`], except with
//! probability 2⁻¹²⁸. Only the holder of the SURB can produce a valid reply.
//!
//! ## Single use
//!
//! A SURB's header yields the same replay tag at its first hop every time, so the
//! second reply sent with it is dropped there as a replay.
//!
//! ## Wire format ([`SURB_LEN`] bytes)
//!
//! ```text
//! version (1) ‖ epoch (8, BE) ‖ first hop id (32) ‖ header (434) ‖ reply key (32)
//! ```

use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::build::{Hop, PacketBuilder};
use super::header::RoutingKind;
use super::{BODY_LEN, HEADER_LEN, INTEGRITY_TAG_LEN, NodeId, PACKET_LEN, PAYLOAD_CAPACITY, Packet, SphinxError};
use super::{open_plaintext, seal_plaintext};
use crate::crypto::body::BodyCipher;

/// SURB encoding version.
pub const SURB_VERSION: u8 = 1;
/// Bytes in an encoded SURB.
pub const SURB_LEN: usize = 1 + 8 + 32 + HEADER_LEN + 32;
/// Largest reply one SURB carries.
pub const REPLY_CAPACITY: usize = PAYLOAD_CAPACITY;

/// What a responder needs to send one reply.
#[derive(Clone, PartialEq, Eq)]
pub struct Surb {
    /// The epoch whose mix keys the return route uses; a responder should not
    /// use a SURB once that epoch's keys have been retired.
    pub epoch: u64,
    /// Where the reply packet goes first.
    pub first_hop: NodeId,
    header: [u8; HEADER_LEN],
    reply_key: [u8; 32],
}

impl std::fmt::Debug for Surb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The first hop is part of the client's return route: not shown.
        f.debug_struct("Surb").field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

impl Drop for Surb {
    fn drop(&mut self) {
        self.reply_key.zeroize();
    }
}

/// What the client keeps to open the reply that comes back through a SURB.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SurbKeys {
    surb_id: [u8; 32],
    hop_body_keys: Vec<[u8; 32]>,
    reply_key: [u8; 32],
}

impl std::fmt::Debug for SurbKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SurbKeys(<redacted>)")
    }
}

impl PacketBuilder {
    /// Builds a SURB over `route`; its last hop delivers to the client as
    /// `surb_id`. The client stores the returned keys under `surb_id`.
    pub fn surb(
        &self,
        route: &[Hop],
        surb_id: [u8; 32],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(Surb, SurbKeys), SphinxError> {
        let built = self.build_header(route, RoutingKind::Reply, NodeId(surb_id), rng)?;
        let mut reply_key = [0u8; 32];
        rng.fill_bytes(&mut reply_key);
        let keys = SurbKeys { surb_id, hop_body_keys: built.keys.iter().map(|k| k.body).collect(), reply_key };
        let surb = Surb { epoch: self.epoch(), first_hop: route[0].id, header: built.header, reply_key };
        Ok((surb, keys))
    }
}

impl Surb {
    /// Encodes for carriage inside a request.
    pub fn encode(&self) -> [u8; SURB_LEN] {
        let mut out = [0u8; SURB_LEN];
        out[0] = SURB_VERSION;
        out[1..9].copy_from_slice(&self.epoch.to_be_bytes());
        out[9..41].copy_from_slice(&self.first_hop.0);
        out[41..41 + HEADER_LEN].copy_from_slice(&self.header);
        out[41 + HEADER_LEN..].copy_from_slice(&self.reply_key);
        out
    }

    /// Decodes; fails on a wrong length or version.
    pub fn decode(bytes: &[u8]) -> Result<Self, SphinxError> {
        if bytes.len() != SURB_LEN || bytes[0] != SURB_VERSION {
            return Err(SphinxError::MalformedSurb);
        }
        let mut epoch = [0u8; 8];
        epoch.copy_from_slice(&bytes[1..9]);
        let mut first_hop = [0u8; 32];
        first_hop.copy_from_slice(&bytes[9..41]);
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&bytes[41..41 + HEADER_LEN]);
        let mut reply_key = [0u8; 32];
        reply_key.copy_from_slice(&bytes[41 + HEADER_LEN..]);
        Ok(Surb { epoch: u64::from_be_bytes(epoch), first_hop: NodeId(first_hop), header, reply_key })
    }

    /// Builds the reply packet: returns the first hop and the packet to send it.
    pub fn into_packet(self, reply: &[u8]) -> Result<(NodeId, Packet), SphinxError> {
        if reply.len() > REPLY_CAPACITY {
            return Err(SphinxError::PayloadTooLarge { len: reply.len() });
        }
        let mut buf: Box<[u8; PACKET_LEN]> = Box::new([0u8; PACKET_LEN]);
        buf[..HEADER_LEN].copy_from_slice(&self.header);
        let body = &mut buf[HEADER_LEN..];
        seal_plaintext(reply, body)?;
        BodyCipher::new(&self.reply_key).encrypt(body)?;
        Ok((self.first_hop, Packet::from_boxed(buf)))
    }
}

/// Where a gateway writes the SURB id in a reply it delivers to a client:
/// the first bytes of the header, which is spent once the SURB route has
/// ended. The client reads it with [`delivered_surb_id`] and finds the keys
/// that open the body at once, instead of trying every key it holds. The id
/// tells the client nothing the gateway did not already know, and the link
/// between them is encrypted.
pub const DELIVERED_ID_OFFSET: usize = 0;

/// Marks `packet`, a reply ending its SURB route at this gateway, with its
/// `surb_id` before it goes to the client.
pub fn mark_delivered(packet: &mut Packet, surb_id: [u8; 32]) {
    packet.as_bytes_mut()[DELIVERED_ID_OFFSET..DELIVERED_ID_OFFSET + 32].copy_from_slice(&surb_id);
}

/// The SURB id a gateway wrote into a delivered reply ([`mark_delivered`]).
pub fn delivered_surb_id(packet: &Packet) -> [u8; 32] {
    let mut id = [0u8; 32];
    id.copy_from_slice(&packet.as_bytes()[DELIVERED_ID_OFFSET..DELIVERED_ID_OFFSET + 32]);
    id
}

impl SurbKeys {
    /// The id the gateway delivers the reply under.
    pub fn surb_id(&self) -> [u8; 32] {
        self.surb_id
    }

    /// Removes every layer from a delivered reply body and authenticates it.
    pub fn open(&self, body: &[u8]) -> Result<Vec<u8>, SphinxError> {
        if body.len() != BODY_LEN {
            return Err(SphinxError::ReplyLength { len: body.len() });
        }
        let mut buf = body.to_vec();
        for key in self.hop_body_keys.iter().rev() {
            BodyCipher::new(key).encrypt(&mut buf)?;
        }
        BodyCipher::new(&self.reply_key).decrypt(&mut buf)?;
        let out = open_plaintext(&buf).map(|len| buf[INTEGRITY_TAG_LEN..INTEGRITY_TAG_LEN + len].to_vec());
        buf.zeroize();
        out
    }
}
