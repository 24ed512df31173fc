//! The Sphinx packet: layout, construction and per-hop processing.
//!
//! Every packet on a link is exactly [`PACKET_LEN`] bytes:
//!
//! ```text
//! 0      1      2                34                        610        626         32768
//! +------+------+-----------------+-------------------------+----------+-----------+
//! | ver  | flags| alpha (X25519 u)| beta: 6 × 96-byte blocks| gamma MAC|   body    |
//! +------+------+-----------------+-------------------------+----------+-----------+
//! ```
//!
//! The header has room for [`MAX_HOPS`] routing blocks whatever the route's length,
//! so a node cannot tell where on the route it sits. Flag bit 0 is the epoch-key
//! parity: it tells a node which of its two live mix keys the sender used, so no
//! trial decryption is ever needed.
//!
//! ## Processing order at a hop
//!
//! [`Packet::peel_header`] (cheap half): version and flags → one X25519 agreement
//! → key schedule → constant-time MAC check → replay tag. The caller checks the tag
//! against its replay cache and only then calls [`PeeledHeader::finish`]
//! (expensive half): header decryption and shift → body decryption → for a final
//! hop, the body integrity check. A replayed packet therefore costs one scalar
//! multiplication and a MAC, not the 32 KiB body pass.
//!
//! ## Per-hop ephemeral keys instead of blinding
//!
//! Classic Sphinx carries one group element and each hop *blinds* it for the next
//! hop with a second scalar multiplication. NOX instead carries the next hop's
//! ephemeral public key inside the hop's encrypted routing block (as KEM-based
//! Sphinx variants and the Outfox format do): the sender draws an independent
//! ephemeral scalar per hop, and a hop does exactly one X25519. On the reference
//! machine a blinded hop cannot get under 100 µs (two multiplications at ~31 µs
//! plus a ~40 µs strong-PRP body pass); this one runs at about three quarters of
//! that. The cost is 32 header bytes per routing block. `docs/protocol.md`
//! ("Why no blinding") has the measurements and the security argument.

mod build;
mod header;
mod process;
pub mod surb;

pub use build::{Hop, PacketBuilder};
pub use header::{RoutingBlock, RoutingKind};
pub use process::{Payload, PeeledHeader, Processed};
pub use surb::{Surb, SurbKeys};

use subtle::ConstantTimeEq;

use crate::crypto::body::BlockTooShort;
use crate::crypto::padding::{PaddingError, pad_into, unpad};

/// Bytes in every packet on a link.
pub const PACKET_LEN: usize = 32_768;
/// Routing blocks in every header.
pub const MAX_HOPS: usize = 6;
/// Bytes in one routing block.
pub const ROUTING_BLOCK_LEN: usize = 96;
/// Bytes of the header MAC.
pub const MAC_LEN: usize = 16;
/// Packet format version.
pub const VERSION: u8 = 1;
/// Offset of `alpha` in the header.
pub const ALPHA_OFFSET: usize = 2;
/// Offset of `beta` in the header.
pub const BETA_OFFSET: usize = ALPHA_OFFSET + 32;
/// Bytes of `beta`.
pub const BETA_LEN: usize = MAX_HOPS * ROUTING_BLOCK_LEN;
/// Offset of `gamma` in the header.
pub const GAMMA_OFFSET: usize = BETA_OFFSET + BETA_LEN;
/// Bytes in the header.
pub const HEADER_LEN: usize = GAMMA_OFFSET + MAC_LEN;
/// Bytes in the body.
pub const BODY_LEN: usize = PACKET_LEN - HEADER_LEN;
/// Zero bytes at the front of the innermost body plaintext, checked at the end.
pub const INTEGRITY_TAG_LEN: usize = 16;
/// The largest payload one packet carries (one byte goes to the padding marker).
pub const PAYLOAD_CAPACITY: usize = BODY_LEN - INTEGRITY_TAG_LEN - 1;

/// Flag bit 0: the parity of the epoch whose mix keys the sender used.
pub const FLAG_EPOCH_PARITY: u8 = 0x01;

/// A node's 32-byte identifier as routing blocks carry it (the node's identity,
/// not a network address; the transport maps it to a peer).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub [u8; 32]);

impl std::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeId(")?;
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// Which of a node's two live epoch keys a packet was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Parity {
    /// Even epoch number.
    Even,
    /// Odd epoch number.
    Odd,
}

impl Parity {
    /// The parity of an epoch number.
    pub fn of_epoch(epoch: u64) -> Self {
        if epoch.is_multiple_of(2) { Parity::Even } else { Parity::Odd }
    }

    fn flag_bit(self) -> u8 {
        match self {
            Parity::Even => 0,
            Parity::Odd => FLAG_EPOCH_PARITY,
        }
    }
}

/// Everything that can be wrong with a packet, a route or a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SphinxError {
    /// Fewer bytes than a packet.
    #[error("truncated packet: {len} bytes, expected {PACKET_LEN}")]
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// More bytes than a packet.
    #[error("oversized packet: {len} bytes, expected {PACKET_LEN}")]
    Oversized {
        /// Bytes received.
        len: usize,
    },
    /// A version this implementation does not speak.
    #[error("unsupported packet version {0}")]
    UnsupportedVersion(u8),
    /// Flag bits that are reserved were set.
    #[error("reserved header flag bits set: {0:#04x}")]
    ReservedFlags(u8),
    /// `alpha` is a small-order point.
    #[error("header group element is a small-order point")]
    InvalidGroupElement,
    /// The header MAC did not verify: corrupted, or not for this node and key.
    #[error("header MAC mismatch")]
    MacMismatch,
    /// The decrypted routing block is not well formed.
    #[error("malformed routing block")]
    MalformedRoutingBlock,
    /// The body failed its integrity check at the final hop: it was modified.
    #[error("body integrity check failed (tagged or corrupted body)")]
    TaggedBody,
    /// The innermost plaintext's padding is invalid.
    #[error("invalid payload padding")]
    BadPadding,
    /// `finish` was given a different packet from the one whose header was peeled.
    #[error("finish called with a packet other than the one peeled")]
    PacketMismatch,
    /// A route without hops.
    #[error("a route needs at least one hop")]
    EmptyRoute,
    /// A route longer than the header can carry.
    #[error("route of {0} hops exceeds the maximum of {MAX_HOPS}")]
    TooManyHops(usize),
    /// A payload larger than one packet carries.
    #[error("payload of {len} bytes exceeds the capacity of {PAYLOAD_CAPACITY}")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
    },
    /// A node's public key on the route is a small-order point.
    #[error("mix public key of hop {hop} is invalid")]
    InvalidNodeKey {
        /// Index of the hop in the route.
        hop: usize,
    },
    /// A SURB's encoding is malformed.
    #[error("malformed SURB encoding")]
    MalformedSurb,
    /// A body shorter than the body cipher accepts (impossible for packets, whose
    /// bodies have a fixed size; kept so that every error is typed).
    #[error("body of {len} bytes is too short for the body cipher")]
    BodyTooShort {
        /// Bytes given.
        len: usize,
    },
    /// A reply body has the wrong length.
    #[error("reply body of {len} bytes, expected {BODY_LEN}")]
    ReplyLength {
        /// Bytes given.
        len: usize,
    },
}

impl From<PaddingError> for SphinxError {
    fn from(e: PaddingError) -> Self {
        match e {
            PaddingError::TooLong { len, .. } => SphinxError::PayloadTooLarge { len },
            PaddingError::Invalid => SphinxError::BadPadding,
        }
    }
}

impl From<BlockTooShort> for SphinxError {
    fn from(e: BlockTooShort) -> Self {
        SphinxError::BodyTooShort { len: e.0 }
    }
}

/// A packet: exactly [`PACKET_LEN`] bytes, heap-allocated once and processed in
/// place at every hop.
#[derive(Clone, PartialEq, Eq)]
pub struct Packet(Box<[u8; PACKET_LEN]>);

impl std::fmt::Debug for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Packet(..)")
    }
}

impl Packet {
    /// Takes a frame off the wire. Only the length is checked here; everything
    /// else is checked by [`Packet::peel_header`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SphinxError> {
        let len = bytes.len();
        if len < PACKET_LEN {
            return Err(SphinxError::Truncated { len });
        }
        if len > PACKET_LEN {
            return Err(SphinxError::Oversized { len });
        }
        let mut buf: Box<[u8; PACKET_LEN]> = Box::new([0u8; PACKET_LEN]);
        buf.copy_from_slice(bytes);
        Ok(Packet(buf))
    }

    /// Wraps an already-sized buffer without copying.
    pub fn from_boxed(buf: Box<[u8; PACKET_LEN]>) -> Self {
        Packet(buf)
    }

    /// Takes a `Vec` of exactly [`PACKET_LEN`] bytes without copying.
    pub fn from_vec(bytes: Vec<u8>) -> Result<Self, SphinxError> {
        let len = bytes.len();
        match bytes.into_boxed_slice().try_into() {
            Ok(buf) => Ok(Packet(buf)),
            Err(_) if len < PACKET_LEN => Err(SphinxError::Truncated { len }),
            Err(_) => Err(SphinxError::Oversized { len }),
        }
    }

    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8; PACKET_LEN] {
        &self.0
    }

    /// Mutable wire bytes (tests and fuzzers use this to corrupt packets).
    pub fn as_bytes_mut(&mut self) -> &mut [u8; PACKET_LEN] {
        &mut self.0
    }

    /// The wire bytes, consuming the packet.
    pub fn into_boxed(self) -> Box<[u8; PACKET_LEN]> {
        self.0
    }

    /// The header.
    pub fn header(&self) -> &[u8] {
        &self.0[..HEADER_LEN]
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.0[HEADER_LEN..]
    }

    /// The epoch-key parity named in the header flags.
    pub fn parity(&self) -> Parity {
        if self.0[1] & FLAG_EPOCH_PARITY != 0 { Parity::Odd } else { Parity::Even }
    }
}

/// `gamma = BLAKE3-keyed(mac_key, version ‖ flags ‖ alpha ‖ beta)[..16]`.
pub(crate) fn header_mac(mac_key: &[u8; 32], header_prefix: &[u8]) -> [u8; MAC_LEN] {
    let h = blake3::keyed_hash(mac_key, header_prefix);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&h.as_bytes()[..MAC_LEN]);
    out
}

/// Bytes of header keystream one hop uses: beta plus one routing block.
pub(crate) const HEADER_STREAM_LEN: usize = BETA_LEN + ROUTING_BLOCK_LEN;

/// The header keystream of one hop.
pub(crate) fn header_stream(key: &[u8; 32]) -> [u8; HEADER_STREAM_LEN] {
    use chacha20::cipher::{KeyIvInit, StreamCipher};
    let mut out = [0u8; HEADER_STREAM_LEN];
    let mut c = chacha20::ChaCha20::new(key.into(), &[0u8; 12].into());
    c.apply_keystream(&mut out);
    out
}

/// Writes the innermost body plaintext `0^16 ‖ content ‖ 0x80 ‖ 0x00*` over the
/// whole of `body` (forward packets and SURB replies alike).
pub(crate) fn seal_plaintext(content: &[u8], body: &mut [u8]) -> Result<(), SphinxError> {
    let (tag, rest) = body.split_at_mut(INTEGRITY_TAG_LEN);
    tag.fill(0);
    pad_into(content, rest)?;
    Ok(())
}

/// Checks an innermost body plaintext — the zero tag in constant time, then the
/// padding — and returns the content length (the content starts at
/// `INTEGRITY_TAG_LEN`).
pub(crate) fn open_plaintext(body: &[u8]) -> Result<usize, SphinxError> {
    if !bool::from(body[..INTEGRITY_TAG_LEN].ct_eq(&[0u8; INTEGRITY_TAG_LEN])) {
        return Err(SphinxError::TaggedBody);
    }
    Ok(unpad(&body[INTEGRITY_TAG_LEN..])?)
}

pub(crate) fn xor_in_place(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}
