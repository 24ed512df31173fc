//! Packet construction (the client side, and the SURB author).
//!
//! For a route of `n` hops the sender draws an independent ephemeral scalar
//! `x_i` per hop, sets `alpha_i = X25519(x_i, 9)` and `s_i = X25519(x_i, pk_i)`,
//! then builds `beta` from the last hop backwards: hop `i`'s routing block names
//! the next node, carries `alpha_{i+1}` and the next hop's MAC, and the filler
//! makes the header look the same length at every hop. Only `alpha_0` is visible
//! on the first link; every later one travels encrypted inside `beta`. The body
//! is padded, prefixed with a zero integrity tag and encrypted once per hop,
//! innermost layer for the last hop. Cost: `2n` X25519 operations for `n` hops.

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroize;

use super::header::{RoutingBlock, RoutingKind};
use super::seal_plaintext;
use super::{
    ALPHA_OFFSET, BETA_LEN, BETA_OFFSET, BODY_LEN, GAMMA_OFFSET, HEADER_LEN, INTEGRITY_TAG_LEN, MAC_LEN, MAX_HOPS,
    NodeId, PACKET_LEN, Packet, Parity, ROUTING_BLOCK_LEN, SphinxError, VERSION, header_mac, header_stream,
    xor_in_place,
};
use crate::crypto::body::BodyCipher;
use crate::crypto::kdf::HopKeys;
use crate::crypto::x25519::{MixPublicKey, x25519, x25519_base};

/// One hop of a route, as the sender sees it. `Debug` does not show it: a route
/// in a client log would undo the mixing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    /// The node's identifier.
    pub id: NodeId,
    /// The node's mix key for the packet's epoch.
    pub key: MixPublicKey,
    /// How long this node should hold the packet, in microseconds.
    pub delay_us: u32,
}

impl std::fmt::Debug for Hop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hop(<redacted>)")
    }
}

/// Builds packets for one epoch's keys.
#[derive(Debug, Clone, Copy)]
pub struct PacketBuilder {
    epoch: u64,
}

/// A header and the per-hop keys used to build it.
pub(crate) struct BuiltHeader {
    pub(crate) header: [u8; HEADER_LEN],
    pub(crate) keys: Vec<HopKeys>,
}

impl PacketBuilder {
    /// A builder for packets under the mix keys of `epoch`.
    pub fn new(epoch: u64) -> Self {
        PacketBuilder { epoch }
    }

    /// The epoch the packets are built for.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Builds a forward packet that delivers `payload` to the last hop of
    /// `route`, which acts as the exit. Returns the first hop and the packet.
    pub fn forward(
        &self,
        route: &[Hop],
        payload: &[u8],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(NodeId, Packet), SphinxError> {
        if payload.len() > super::PAYLOAD_CAPACITY {
            return Err(SphinxError::PayloadTooLarge { len: payload.len() });
        }
        let built = self.build_header(route, RoutingKind::Final, NodeId::default(), rng)?;
        let mut buf: Box<[u8; PACKET_LEN]> = Box::new([0u8; PACKET_LEN]);
        buf[..HEADER_LEN].copy_from_slice(&built.header);
        let body = &mut buf[HEADER_LEN..];
        seal_plaintext(payload, body)?;
        for keys in built.keys.iter().rev() {
            BodyCipher::new(&keys.body).encrypt(body)?;
        }
        Ok((route[0].id, Packet::from_boxed(buf)))
    }

    /// Builds the header for `route`; the last hop's block has `last_kind` and
    /// `last_next`.
    pub(crate) fn build_header(
        &self,
        route: &[Hop],
        last_kind: RoutingKind,
        last_next: NodeId,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<BuiltHeader, SphinxError> {
        let n = route.len();
        if n == 0 {
            return Err(SphinxError::EmptyRoute);
        }
        if n > MAX_HOPS {
            return Err(SphinxError::TooManyHops(n));
        }
        let flags = Parity::of_epoch(self.epoch).flag_bit();

        // An independent ephemeral key pair and shared secret for every hop.
        let mut alphas: Vec<[u8; 32]> = Vec::with_capacity(n);
        let mut keys: Vec<HopKeys> = Vec::with_capacity(n);
        for (i, hop) in route.iter().enumerate() {
            let mut x = [0u8; 32];
            rng.fill_bytes(&mut x);
            let mut s = x25519(&x, &hop.key.0).map_err(|_| SphinxError::InvalidNodeKey { hop: i })?;
            alphas.push(x25519_base(&x));
            keys.push(HopKeys::derive(&s));
            s.zeroize();
            x.zeroize();
        }

        let streams: Vec<[u8; super::HEADER_STREAM_LEN]> =
            keys.iter().map(|k| header_stream(&k.header_stream)).collect();

        // Filler: what the header shift at hops 0..n-2 appends, as seen by the last hop.
        let mut filler: Vec<u8> = Vec::with_capacity((n - 1) * ROUTING_BLOCK_LEN);
        for stream in streams.iter().take(n - 1) {
            filler.extend_from_slice(&[0u8; ROUTING_BLOCK_LEN]);
            let start = stream.len() - filler.len();
            xor_in_place(&mut filler, &stream[start..]);
        }

        // The last hop's beta: its block, random padding, then the filler.
        let mut beta = [0u8; BETA_LEN];
        let last = RoutingBlock {
            kind: last_kind,
            delay_us: route[n - 1].delay_us,
            next: last_next,
            next_alpha: [0u8; 32],
            next_mac: [0u8; MAC_LEN],
        };
        let open_len = BETA_LEN - filler.len();
        beta[..ROUTING_BLOCK_LEN].copy_from_slice(&last.encode());
        rng.fill_bytes(&mut beta[ROUTING_BLOCK_LEN..open_len]);
        xor_in_place(&mut beta[..open_len], &streams[n - 1][..open_len]);
        beta[open_len..].copy_from_slice(&filler);

        let mut header = [0u8; HEADER_LEN];
        header[0] = VERSION;
        header[1] = flags;
        let mut gamma = mac_for(&mut header, &alphas[n - 1], &beta, &keys[n - 1].mac);

        // Every earlier hop wraps the later hop's beta.
        for i in (0..n - 1).rev() {
            let block = RoutingBlock {
                kind: RoutingKind::Forward,
                delay_us: route[i].delay_us,
                next: route[i + 1].id,
                next_alpha: alphas[i + 1],
                next_mac: gamma,
            };
            let mut wrapped = [0u8; BETA_LEN];
            wrapped[..ROUTING_BLOCK_LEN].copy_from_slice(&block.encode());
            wrapped[ROUTING_BLOCK_LEN..].copy_from_slice(&beta[..BETA_LEN - ROUTING_BLOCK_LEN]);
            xor_in_place(&mut wrapped, &streams[i][..BETA_LEN]);
            beta = wrapped;
            gamma = mac_for(&mut header, &alphas[i], &beta, &keys[i].mac);
        }
        header[ALPHA_OFFSET..BETA_OFFSET].copy_from_slice(&alphas[0]);
        header[BETA_OFFSET..GAMMA_OFFSET].copy_from_slice(&beta);
        header[GAMMA_OFFSET..].copy_from_slice(&gamma);
        Ok(BuiltHeader { header, keys })
    }
}

/// Writes alpha and beta into `header` and returns the MAC over its prefix.
fn mac_for(header: &mut [u8; HEADER_LEN], alpha: &[u8; 32], beta: &[u8; BETA_LEN], key: &[u8; 32]) -> [u8; MAC_LEN] {
    header[ALPHA_OFFSET..BETA_OFFSET].copy_from_slice(alpha);
    header[BETA_OFFSET..GAMMA_OFFSET].copy_from_slice(beta);
    header_mac(key, &header[..GAMMA_OFFSET])
}

const _: () = assert!(BODY_LEN > INTEGRITY_TAG_LEN + crate::crypto::body::MIN_BLOCK_LEN);
