//! Epochs and signed mix descriptors.
//!
//! ## Epochs
//!
//! Mix keys rotate every epoch. The epoch number is `unix time / epoch length`
//! ([`EpochClock`]), so nodes and clients agree on it without talking to each
//! other; the length is a network parameter (default [`DEFAULT_EPOCH_SECS`]).
//! Every Sphinx header carries the parity of the epoch whose keys the sender used
//! ([`crate::sphinx::Parity`]), which is enough for a node to pick the right one of
//! its live keys without trial decryption.
//!
//! ## Descriptors
//!
//! A node announces the X25519 key it uses in an epoch with a [`MixDescriptor`],
//! signed by its Ed25519 identity key — the key registered on-chain, whose public
//! half is the node's [`NodeId`]. A node publishes its next epoch's descriptor one
//! epoch ahead, so clients always hold the key before the first packet needs it.
//! Whoever receives a descriptor (over GossipSub, `/topology`, or from a cache)
//! checks the signature with [`MixDescriptor::verify`] and that `node_id` is
//! registered; a descriptor is only as trustworthy as that check.
//!
//! ## Layout
//!
//! ```text
//! version u8 = 3 ‖ node_id (32) ‖ epoch u64 ‖ mix_key (32) ‖ layer u8 ‖ role u8
//!   ‖ services u16 ‖ address count u8 ‖ count × (length u16 ‖ UTF-8 bytes)
//!   ‖ fee policy flag u8 (0 none, 1 present) ‖ [fee policy] ‖ signature (64)
//!
//! fee policy = wallet (20) ‖ pool (20) ‖ chain id u64 ‖ margin bps u16
//!   ‖ asset count u8 ‖ count × asset (20)
//! ```
//!
//! `services` is the set of request kinds an exit serves, one bit per kind
//! (`1 << kind byte`, `nox_protocol::payload::RequestKind::bit`); a relay's is
//! 0. Clients pick an exit among those whose descriptor offers the request's
//! kind, so an exit cannot claim a service it was not signed for.
//!
//! An exit that performs paid calls (`EthRequest`) publishes its [`FeePolicy`]:
//! the wallet a spend proof must name as recipient (the `msg.sender` of its
//! `NoxPool.relay` transactions), the pool and chain it relays for, the margin
//! it requires over its gas cost, and the assets it accepts as payment (the
//! zero address is ETH). A client proves its payment to that wallet, so the
//! policy is signed with the rest; a relay has none.
//!
//! Integers are big-endian. The signature is Ed25519 (RFC 8032, checked with
//! `verify_strict`) under `node_id`, over [`SIGNING_DOMAIN`] followed by every
//! byte before the signature. Decoding is strict: truncation, trailing bytes,
//! out-of-range fields and invalid UTF-8 are typed errors, so one byte string has
//! at most one meaning. [`MixDescriptor::decode`] does not check the signature:
//! callers verify, and they can do it after cheaper checks (is this node
//! registered? is the epoch current or next?).
//!
//! ## Equivocation
//!
//! A node has one mix key per epoch. Two descriptors that verify under the
//! same node id, for the same epoch, with different mix keys are an
//! [`Equivocation`]: whoever holds both knows the node can tell apart the
//! clients it gave each key to (a packet built for key A only opens under A),
//! and stops routing through it for that epoch — the first key as much as the
//! second. [`Equivocation::new`] checks both signatures, so a forged
//! descriptor is never evidence against the identity it names; the two
//! descriptors themselves are the proof, and anyone can check it again.
//! Descriptors that differ in other fields (addresses, services) but carry the
//! same key are not an equivocation.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::crypto::x25519::MixPublicKey;
use crate::price::{ETH, NO_BOOK, NoPrice, PriceBook};
use crate::sphinx::NodeId;
use crate::topology::Role;
use crate::wire::{Reader, Truncated};

/// Default epoch length: three hours.
pub const DEFAULT_EPOCH_SECS: u64 = 3 * 3600;

/// Descriptor format version.
pub const DESCRIPTOR_VERSION: u8 = 3;
/// Prefix of every signed descriptor message, so a descriptor signature can never
/// be taken for a signature over anything else the identity key signs.
pub const SIGNING_DOMAIN: &[u8] = b"NOX mix descriptor v3\0";
/// Most assets a fee policy lists.
pub const MAX_FEE_ASSETS: usize = 16;
/// Highest margin a fee policy may state, in basis points (100 %: twice the cost).
pub const MAX_MARGIN_BPS: u16 = 10_000;
/// Most addresses one descriptor lists.
pub const MAX_ADDRESSES: usize = 8;
/// Longest address, in bytes of UTF-8.
pub const MAX_ADDRESS_LEN: usize = 256;
pub use crate::topology::MAX_LAYER;
/// Role of a relay node ([`Role::Relay`]'s code).
pub const ROLE_RELAY: u8 = Role::Relay.code();
/// Role of an exit node ([`Role::Exit`]'s code).
pub const ROLE_EXIT: u8 = Role::Exit.code();
/// Bytes of the signature at the end of a descriptor.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes of a descriptor without addresses: version, node id, epoch, mix key,
/// layer, role, services, address count, fee policy flag and signature.
pub const MIN_DESCRIPTOR_LEN: usize = 1 + 32 + 8 + 32 + 1 + 1 + 2 + 1 + 1 + SIGNATURE_LEN;

/// What an exit charges for a paid call (`EthRequest`), signed in its
/// descriptor (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeePolicy {
    /// The exit's wallet: the recipient a spend proof must name.
    pub wallet: [u8; 20],
    /// The NoxPool it relays for.
    pub pool: [u8; 20],
    /// The chain of that pool.
    pub chain_id: u64,
    /// Required margin over the gas cost, in basis points (1,000 = 10 %).
    pub margin_bps: u16,
    /// Accepted payment assets; `[0; 20]` is ETH.
    pub assets: Vec<[u8; 20]>,
}

impl FeePolicy {
    /// Whether the exit accepts payment in `asset` (`[0; 20]` for ETH).
    pub fn accepts(&self, asset: &[u8; 20]) -> bool {
        self.assets.contains(asset)
    }

    /// The lowest fee the exit accepts for a call whose gas costs `cost` (in
    /// the asset's units): `cost × (10,000 + margin bps) / 10,000`, rounded up
    /// (saturating at `u128::MAX`).
    pub fn fee_for(&self, cost: u128) -> u128 {
        let m = u128::from(self.margin_bps);
        // cost × m / 10,000 without overflow: whole ten-thousandths, then the rest.
        let extra = (cost / 10_000) * m + ((cost % 10_000) * m).div_ceil(10_000);
        cost.saturating_add(extra)
    }

    /// The lowest fee the exit accepts, in base units of `asset`, for a call
    /// whose gas costs `cost_wei`: [`FeePolicy::fee_for`] of the cost for ETH,
    /// and for a token of the cost converted with `book` at `now_ms`
    /// ([`PriceBook::wei_to_token`], rounded up). The exit checks a payment
    /// and the client computes its offer with this one rule. A token without
    /// a book or a fresh price is [`NoPrice`]; whether the policy lists
    /// `asset` is the caller's check.
    pub fn fee_in(
        &self,
        asset: &[u8; 20],
        cost_wei: u128,
        book: Option<&PriceBook>,
        now_ms: u64,
    ) -> Result<u128, NoPrice> {
        if asset == &ETH {
            return Ok(self.fee_for(cost_wei));
        }
        Ok(self.fee_for(book.ok_or(NO_BOOK)?.wei_to_token(cost_wei, asset, now_ms)?))
    }

    fn encoded_len(&self) -> usize {
        20 + 20 + 8 + 2 + 1 + 20 * self.assets.len()
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.wallet);
        out.extend_from_slice(&self.pool);
        out.extend_from_slice(&self.chain_id.to_be_bytes());
        out.extend_from_slice(&self.margin_bps.to_be_bytes());
        out.push(u8::try_from(self.assets.len()).unwrap_or(u8::MAX));
        for a in &self.assets {
            out.extend_from_slice(a);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DescriptorError> {
        let wallet = r.array()?;
        let pool = r.array()?;
        let chain_id = u64::from_be_bytes(r.array()?);
        let margin_bps = u16::from_be_bytes(r.array()?);
        let count = usize::from(r.u8()?);
        if count > MAX_FEE_ASSETS {
            return Err(DescriptorError::BadFeePolicy(format!("{count} assets, at most {MAX_FEE_ASSETS}")));
        }
        let mut assets = Vec::with_capacity(count);
        for _ in 0..count {
            assets.push(r.array()?);
        }
        let policy = FeePolicy { wallet, pool, chain_id, margin_bps, assets };
        policy.check()?;
        Ok(policy)
    }

    /// Checks the policy's limits.
    pub fn check(&self) -> Result<(), DescriptorError> {
        let bad = |why: String| Err(DescriptorError::BadFeePolicy(why));
        if self.wallet == [0; 20] {
            return bad("the wallet is the zero address".into());
        }
        if self.pool == [0; 20] {
            return bad("the pool is the zero address".into());
        }
        if self.margin_bps > MAX_MARGIN_BPS {
            return bad(format!("margin of {} bps, at most {MAX_MARGIN_BPS}", self.margin_bps));
        }
        if self.assets.is_empty() || self.assets.len() > MAX_FEE_ASSETS {
            return bad(format!("{} assets, expected 1..={MAX_FEE_ASSETS}", self.assets.len()));
        }
        for (i, a) in self.assets.iter().enumerate() {
            if self.assets[..i].contains(a) {
                return bad(format!("asset {i} is listed twice"));
            }
        }
        Ok(())
    }
}

/// The epoch length is zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the epoch length must be at least one second")]
pub struct ZeroEpochLength;

/// Maps unix time to epoch numbers: `epoch = unix / epoch_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochClock {
    epoch_secs: u64,
}

impl EpochClock {
    /// A clock with epochs of `epoch_secs` seconds (at least 1).
    pub fn new(epoch_secs: u64) -> Result<Self, ZeroEpochLength> {
        if epoch_secs == 0 { Err(ZeroEpochLength) } else { Ok(EpochClock { epoch_secs }) }
    }

    /// The epoch length in seconds.
    pub fn epoch_secs(&self) -> u64 {
        self.epoch_secs
    }

    /// The epoch that contains `unix_secs`.
    pub fn epoch_at(&self, unix_secs: u64) -> u64 {
        unix_secs / self.epoch_secs
    }

    /// The first second of `epoch` (saturating at `u64::MAX`).
    pub fn start_of(&self, epoch: u64) -> u64 {
        epoch.saturating_mul(self.epoch_secs)
    }

    /// Seconds since the start of the epoch that contains `unix_secs`.
    pub fn secs_into_epoch(&self, unix_secs: u64) -> u64 {
        unix_secs % self.epoch_secs
    }
}

impl Default for EpochClock {
    fn default() -> Self {
        EpochClock { epoch_secs: DEFAULT_EPOCH_SECS }
    }
}

/// Everything that can be wrong with a descriptor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// The input ended inside a field.
    #[error("truncated descriptor: {len} bytes, a field at offset {at} runs past the end")]
    Truncated {
        /// Offset of the field that did not fit.
        at: usize,
        /// Bytes received.
        len: usize,
    },
    /// Bytes after the signature.
    #[error("descriptor has {0} trailing bytes after the signature")]
    TrailingBytes(usize),
    /// An unknown format version.
    #[error("unknown descriptor version {0} (expected {DESCRIPTOR_VERSION})")]
    UnknownVersion(u8),
    /// A layer above [`MAX_LAYER`].
    #[error("layer {0} is out of range (0..={MAX_LAYER})")]
    LayerOutOfRange(u8),
    /// A role other than [`ROLE_RELAY`] or [`ROLE_EXIT`].
    #[error("unknown role {0} (0 = relay, 1 = exit)")]
    UnknownRole(u8),
    /// More than [`MAX_ADDRESSES`] addresses.
    #[error("{0} addresses, at most {MAX_ADDRESSES} allowed")]
    TooManyAddresses(usize),
    /// An address that is empty or longer than [`MAX_ADDRESS_LEN`] bytes.
    #[error("address {index} has {len} bytes, expected 1..={MAX_ADDRESS_LEN}")]
    AddressLength {
        /// Position of the address in the list.
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// An address that is not UTF-8.
    #[error("address {index} is not valid UTF-8")]
    AddressNotUtf8 {
        /// Position of the address in the list.
        index: usize,
    },
    /// The signature does not verify under `node_id`, or `node_id` is not a
    /// usable Ed25519 public key: the descriptor is forged or was altered.
    #[error("descriptor signature does not verify under its node id")]
    BadSignature,
    /// A relay's descriptor lists services (only exits serve requests).
    #[error("a relay's descriptor lists services {0:#06x}")]
    RelayWithServices(u16),
    /// A relay's descriptor carries a fee policy.
    #[error("a relay's descriptor carries a fee policy")]
    RelayWithFeePolicy,
    /// The fee policy flag is neither 0 nor 1.
    #[error("fee policy flag {0} (expected 0 or 1)")]
    FeePolicyFlag(u8),
    /// A fee policy outside its limits.
    #[error("bad fee policy: {0}")]
    BadFeePolicy(String),
}

/// A node's signed announcement of the mix key it uses in one epoch.
///
/// The fields are public so that callers can read them without accessors; a
/// descriptor whose fields are changed after signing no longer verifies.
#[derive(Clone, PartialEq, Eq)]
pub struct MixDescriptor {
    /// The node's identity: its Ed25519 public key.
    pub node_id: NodeId,
    /// The epoch the key is for.
    pub epoch: u64,
    /// The node's X25519 key for that epoch.
    pub mix_key: MixPublicKey,
    /// 0 = entry, 1 = mix, 2 = exit.
    pub layer: u8,
    /// [`ROLE_RELAY`] or [`ROLE_EXIT`].
    pub role: u8,
    /// The request kinds an exit serves, one bit per kind (0 for a relay).
    pub services: u16,
    /// Where the node listens (e.g. libp2p multiaddrs), at most [`MAX_ADDRESSES`].
    pub addresses: Vec<String>,
    /// What an exit charges for paid calls, if it performs them.
    pub fee_policy: Option<FeePolicy>,
    signature: [u8; SIGNATURE_LEN],
}

impl std::fmt::Debug for MixDescriptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Operator data only; no user data ever lives in a descriptor.
        f.debug_struct("MixDescriptor")
            .field("node_id", &self.node_id)
            .field("epoch", &self.epoch)
            .field("layer", &self.layer)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl MixDescriptor {
    /// Builds and signs a descriptor offering no services; `node_id` is the
    /// public half of `identity`.
    pub fn sign(
        identity: &SigningKey,
        epoch: u64,
        mix_key: MixPublicKey,
        layer: u8,
        role: u8,
        addresses: Vec<String>,
    ) -> Result<Self, DescriptorError> {
        MixDescriptor::sign_with_services(identity, epoch, mix_key, layer, role, 0, addresses)
    }

    /// Builds and signs a descriptor; an exit lists its `services`
    /// (`RequestKind::mask_of`), a relay passes 0.
    pub fn sign_with_services(
        identity: &SigningKey,
        epoch: u64,
        mix_key: MixPublicKey,
        layer: u8,
        role: u8,
        services: u16,
        addresses: Vec<String>,
    ) -> Result<Self, DescriptorError> {
        MixDescriptor::sign_exit(identity, epoch, mix_key, layer, role, services, addresses, None)
    }

    /// Builds and signs a descriptor with every field, an exit's fee policy
    /// included.
    #[allow(clippy::too_many_arguments)]
    pub fn sign_exit(
        identity: &SigningKey,
        epoch: u64,
        mix_key: MixPublicKey,
        layer: u8,
        role: u8,
        services: u16,
        addresses: Vec<String>,
        fee_policy: Option<FeePolicy>,
    ) -> Result<Self, DescriptorError> {
        check_fields(layer, role, services, &addresses, fee_policy.as_ref())?;
        let mut descriptor = MixDescriptor {
            node_id: NodeId(identity.verifying_key().to_bytes()),
            epoch,
            mix_key,
            layer,
            role,
            services,
            addresses,
            fee_policy,
            signature: [0; SIGNATURE_LEN],
        };
        descriptor.signature = identity.sign(&descriptor.signing_message()).to_bytes();
        Ok(descriptor)
    }

    /// Whether the node serves `kind` (an exit whose descriptor lists it).
    pub fn offers(&self, kind: crate::payload::RequestKind) -> bool {
        self.role == ROLE_EXIT && self.services & kind.bit() != 0
    }

    /// The Ed25519 signature.
    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signature
    }

    /// Checks the field limits and the signature under `node_id`.
    pub fn verify(&self) -> Result<(), DescriptorError> {
        check_fields(self.layer, self.role, self.services, &self.addresses, self.fee_policy.as_ref())?;
        let key = VerifyingKey::from_bytes(&self.node_id.0).map_err(|_| DescriptorError::BadSignature)?;
        let signature = Signature::from_bytes(&self.signature);
        key.verify_strict(&self.signing_message(), &signature).map_err(|_| DescriptorError::BadSignature)
    }

    /// The wire encoding (see the module documentation).
    ///
    /// A descriptor whose public fields were pushed beyond the limits after
    /// signing encodes to bytes that [`MixDescriptor::decode`] refuses.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_signed_fields(&mut out);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Parses the wire encoding. Does **not** check the signature; call
    /// [`MixDescriptor::verify`] before trusting the result.
    pub fn decode(bytes: &[u8]) -> Result<Self, DescriptorError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != DESCRIPTOR_VERSION {
            return Err(DescriptorError::UnknownVersion(version));
        }
        let node_id = NodeId(r.array()?);
        let epoch = u64::from_be_bytes(r.array()?);
        let mix_key = MixPublicKey(r.array()?);
        let layer = r.u8()?;
        if layer > MAX_LAYER {
            return Err(DescriptorError::LayerOutOfRange(layer));
        }
        let role = r.u8()?;
        if role > ROLE_EXIT {
            return Err(DescriptorError::UnknownRole(role));
        }
        let services = u16::from_be_bytes(r.array()?);
        if role != ROLE_EXIT && services != 0 {
            return Err(DescriptorError::RelayWithServices(services));
        }
        let count = usize::from(r.u8()?);
        if count > MAX_ADDRESSES {
            return Err(DescriptorError::TooManyAddresses(count));
        }
        let mut addresses = Vec::with_capacity(count);
        for index in 0..count {
            let len = usize::from(u16::from_be_bytes(r.array()?));
            if len == 0 || len > MAX_ADDRESS_LEN {
                return Err(DescriptorError::AddressLength { index, len });
            }
            let raw = r.take(len)?;
            let text = std::str::from_utf8(raw).map_err(|_| DescriptorError::AddressNotUtf8 { index })?;
            addresses.push(text.to_owned());
        }
        let fee_policy = match r.u8()? {
            0 => None,
            1 if role == ROLE_EXIT => Some(FeePolicy::read(&mut r)?),
            1 => return Err(DescriptorError::RelayWithFeePolicy),
            other => return Err(DescriptorError::FeePolicyFlag(other)),
        };
        let signature = r.array()?;
        if r.remaining() != 0 {
            return Err(DescriptorError::TrailingBytes(r.remaining()));
        }
        Ok(MixDescriptor { node_id, epoch, mix_key, layer, role, services, addresses, fee_policy, signature })
    }

    /// The exact bytes the signature covers: [`SIGNING_DOMAIN`] followed by the
    /// encoding without the signature.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut msg = Vec::with_capacity(SIGNING_DOMAIN.len() + self.encoded_len());
        msg.extend_from_slice(SIGNING_DOMAIN);
        self.write_signed_fields(&mut msg);
        msg
    }

    fn encoded_len(&self) -> usize {
        MIN_DESCRIPTOR_LEN
            + self.addresses.iter().map(|a| 2 + a.len()).sum::<usize>()
            + self.fee_policy.as_ref().map_or(0, FeePolicy::encoded_len)
    }

    fn write_signed_fields(&self, out: &mut Vec<u8>) {
        out.push(DESCRIPTOR_VERSION);
        out.extend_from_slice(&self.node_id.0);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.mix_key.0);
        out.push(self.layer);
        out.push(self.role);
        out.extend_from_slice(&self.services.to_be_bytes());
        // Saturating lengths: out-of-limit fields (only possible by editing a
        // signed descriptor) produce bytes that decode refuses, never bytes that
        // decode to a different descriptor.
        out.push(u8::try_from(self.addresses.len()).unwrap_or(u8::MAX));
        for address in &self.addresses {
            out.extend_from_slice(&u16::try_from(address.len()).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(address.as_bytes());
        }
        match &self.fee_policy {
            None => out.push(0),
            Some(policy) => {
                out.push(1);
                policy.write(out);
            }
        }
    }
}

/// Most pieces of equivocation evidence a holder keeps (a node's topology, a
/// client's directory). Evidence for the current and the next epoch is never
/// evicted, since it is what excludes a node, and there are at most two such
/// pieces per node on record; past epochs' evidence is evicted oldest epoch
/// first beyond this number.
pub const MAX_EQUIVOCATIONS: usize = 1024;

/// Why two descriptors are not proof of an equivocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EquivocationError {
    /// One of them does not verify (`which` is 0 for the first argument, 1
    /// for the second): a forgery proves nothing against the node it names.
    #[error("descriptor {which} of the pair does not verify: {error}")]
    Invalid {
        /// Which argument.
        which: u8,
        /// Why it does not verify.
        error: DescriptorError,
    },
    /// They name different nodes.
    #[error("the descriptors name different nodes")]
    DifferentNodes,
    /// They are for different epochs (a new key each epoch is the rule).
    #[error("the descriptors are for epochs {0} and {1}")]
    DifferentEpochs(u64, u64),
    /// They carry the same mix key.
    #[error("the descriptors carry the same mix key")]
    SameKey,
}

/// Proof that one identity signed two different mix keys for one epoch (see
/// the module docs). Both descriptors verify; they are held in ascending
/// order of mix key, so the same pair is the same evidence whichever arrived
/// first.
#[derive(Clone, PartialEq, Eq)]
pub struct Equivocation {
    pair: [MixDescriptor; 2],
}

impl std::fmt::Debug for Equivocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Equivocation").field("node_id", &self.node_id()).field("epoch", &self.epoch()).finish()
    }
}

impl Equivocation {
    /// Checks that `a` and `b` prove an equivocation: both verify under the
    /// node id they name, the same node and epoch, different mix keys.
    pub fn new(a: MixDescriptor, b: MixDescriptor) -> Result<Self, EquivocationError> {
        if a.node_id != b.node_id {
            return Err(EquivocationError::DifferentNodes);
        }
        if a.epoch != b.epoch {
            return Err(EquivocationError::DifferentEpochs(a.epoch, b.epoch));
        }
        if a.mix_key == b.mix_key {
            return Err(EquivocationError::SameKey);
        }
        a.verify().map_err(|error| EquivocationError::Invalid { which: 0, error })?;
        b.verify().map_err(|error| EquivocationError::Invalid { which: 1, error })?;
        let pair = if a.mix_key.0 < b.mix_key.0 { [a, b] } else { [b, a] };
        Ok(Equivocation { pair })
    }

    /// The node that equivocated.
    pub fn node_id(&self) -> NodeId {
        self.pair[0].node_id
    }

    /// The epoch it signed two keys for.
    pub fn epoch(&self) -> u64 {
        self.pair[0].epoch
    }

    /// Both signed descriptors, in ascending order of mix key.
    pub fn descriptors(&self) -> &[MixDescriptor; 2] {
        &self.pair
    }

    /// Whether `d` is one of the two descriptors.
    pub fn contains(&self, d: &MixDescriptor) -> bool {
        self.pair.iter().any(|p| p == d)
    }
}

fn check_fields(
    layer: u8,
    role: u8,
    services: u16,
    addresses: &[String],
    fee_policy: Option<&FeePolicy>,
) -> Result<(), DescriptorError> {
    if layer > MAX_LAYER {
        return Err(DescriptorError::LayerOutOfRange(layer));
    }
    if role > ROLE_EXIT {
        return Err(DescriptorError::UnknownRole(role));
    }
    if role != ROLE_EXIT && services != 0 {
        return Err(DescriptorError::RelayWithServices(services));
    }
    if addresses.len() > MAX_ADDRESSES {
        return Err(DescriptorError::TooManyAddresses(addresses.len()));
    }
    for (index, address) in addresses.iter().enumerate() {
        if address.is_empty() || address.len() > MAX_ADDRESS_LEN {
            return Err(DescriptorError::AddressLength { index, len: address.len() });
        }
    }
    if let Some(policy) = fee_policy {
        if role != ROLE_EXIT {
            return Err(DescriptorError::RelayWithFeePolicy);
        }
        policy.check()?;
    }
    Ok(())
}

impl From<Truncated> for DescriptorError {
    fn from(t: Truncated) -> Self {
        DescriptorError::Truncated { at: t.at, len: t.len }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use proptest::prelude::*;

    use super::*;
    use crate::crypto::x25519::MixSecretKey;
    use crate::payload::RequestKind;

    fn identity(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn sample() -> MixDescriptor {
        MixDescriptor::sign(
            &identity(0x11),
            4242,
            MixSecretKey::from_bytes([0x22; 32]).public_key(),
            1,
            ROLE_RELAY,
            vec!["/ip4/192.0.2.7/tcp/9000".to_owned(), "/dns4/mix.example/tcp/9000".to_owned()],
        )
        .unwrap()
    }

    #[test]
    fn epoch_clock_arithmetic() {
        assert_eq!(EpochClock::new(0), Err(ZeroEpochLength));
        let c = EpochClock::new(10).unwrap();
        assert_eq!(c.epoch_at(0), 0);
        assert_eq!(c.epoch_at(9), 0);
        assert_eq!(c.epoch_at(10), 1);
        assert_eq!(c.start_of(7), 70);
        assert_eq!(c.secs_into_epoch(73), 3);
        assert_eq!(c.start_of(u64::MAX), u64::MAX);
        assert_eq!(EpochClock::default().epoch_secs(), DEFAULT_EPOCH_SECS);
    }

    #[test]
    fn sign_verify_round_trip() {
        let d = sample();
        assert_eq!(d.node_id.0, identity(0x11).verifying_key().to_bytes());
        d.verify().unwrap();
        let bytes = d.encode();
        assert_eq!(bytes.len(), MIN_DESCRIPTOR_LEN + 2 + 23 + 2 + 26);
        let back = MixDescriptor::decode(&bytes).unwrap();
        assert_eq!(back, d);
        back.verify().unwrap();
        // The Debug form names the node and the epoch but not the addresses.
        let debug = format!("{d:?}");
        assert!(debug.contains("4242") && !debug.contains("192.0.2.7"), "{debug}");
    }

    #[test]
    fn forgeries_are_bad_signatures() {
        let d = sample();
        let mut other_epoch = d.clone();
        other_epoch.epoch += 1;
        assert_eq!(other_epoch.verify(), Err(DescriptorError::BadSignature));
        let mut other_key = d.clone();
        other_key.mix_key = MixSecretKey::from_bytes([0x23; 32]).public_key();
        assert_eq!(other_key.verify(), Err(DescriptorError::BadSignature));
        // Someone else's signature over the same fields, claimed for node 0x11.
        let mut stolen = MixDescriptor::sign(&identity(0x12), d.epoch, d.mix_key, 1, 0, d.addresses.clone()).unwrap();
        stolen.node_id = d.node_id;
        assert_eq!(stolen.verify(), Err(DescriptorError::BadSignature));
        // A node id that is not a point, and one of small order.
        let mut not_a_point = d.clone();
        not_a_point.node_id = NodeId([0xff; 32]);
        assert_eq!(not_a_point.verify(), Err(DescriptorError::BadSignature));
        let mut identity_point = d.clone();
        identity_point.node_id = NodeId({
            let mut b = [0u8; 32];
            b[0] = 1;
            b
        });
        assert_eq!(identity_point.verify(), Err(DescriptorError::BadSignature));
    }

    #[test]
    fn every_byte_flip_fails_decode_or_verify() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            for mask in 1..=255u8 {
                let mut b = bytes.clone();
                b[i] ^= mask;
                if let Ok(d) = MixDescriptor::decode(&b) {
                    assert!(d.verify().is_err(), "flip {mask:#04x} at byte {i} still verifies");
                }
            }
        }
    }

    #[test]
    fn limits_are_enforced_on_sign_verify_and_decode() {
        let id = identity(0x11);
        let key = MixSecretKey::from_bytes([0x22; 32]).public_key();
        let sign = |layer, role, addrs: Vec<String>| MixDescriptor::sign(&id, 1, key, layer, role, addrs);
        assert_eq!(sign(3, 0, vec![]).unwrap_err(), DescriptorError::LayerOutOfRange(3));
        assert_eq!(sign(2, 2, vec![]).unwrap_err(), DescriptorError::UnknownRole(2));
        assert_eq!(sign(0, 0, vec!["a".into(); 9]).unwrap_err(), DescriptorError::TooManyAddresses(9));
        assert_eq!(sign(0, 0, vec![String::new()]).unwrap_err(), DescriptorError::AddressLength { index: 0, len: 0 });
        assert_eq!(
            sign(0, 0, vec!["a".into(), "x".repeat(257)]).unwrap_err(),
            DescriptorError::AddressLength { index: 1, len: 257 }
        );
        // The largest descriptor is accepted and round-trips.
        let max = sign(2, ROLE_EXIT, vec!["é".repeat(128); MAX_ADDRESSES]).unwrap();
        assert_eq!(MixDescriptor::decode(&max.encode()).unwrap(), max);
        max.verify().unwrap();

        // Decoding refuses the same violations, and truncation and trailing bytes.
        let good = sample().encode();
        let layer_at = 1 + 32 + 8 + 32;
        let mut b = good.clone();
        b[layer_at] = 3;
        assert_eq!(MixDescriptor::decode(&b), Err(DescriptorError::LayerOutOfRange(3)));
        let mut b = good.clone();
        b[layer_at + 1] = 7;
        assert_eq!(MixDescriptor::decode(&b), Err(DescriptorError::UnknownRole(7)));
        let mut b = good.clone();
        b[layer_at + 4] = 9;
        assert_eq!(MixDescriptor::decode(&b), Err(DescriptorError::TooManyAddresses(9)));
        let mut b = good.clone();
        b[layer_at + 5..layer_at + 7].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(MixDescriptor::decode(&b), Err(DescriptorError::AddressLength { index: 0, len: 0 }));
        let mut b = good.clone();
        b[layer_at + 5..layer_at + 7].copy_from_slice(&257u16.to_be_bytes());
        assert_eq!(MixDescriptor::decode(&b), Err(DescriptorError::AddressLength { index: 0, len: 257 }));
        let mut b = good.clone();
        b[layer_at + 7] = 0xff;
        assert_eq!(MixDescriptor::decode(&b), Err(DescriptorError::AddressNotUtf8 { index: 0 }));
        let mut b = good.clone();
        b[0] = 1;
        assert_eq!(MixDescriptor::decode(&b), Err(DescriptorError::UnknownVersion(1)));
        let mut b = good.clone();
        b.push(0);
        assert_eq!(MixDescriptor::decode(&b), Err(DescriptorError::TrailingBytes(1)));
        for len in 0..good.len() {
            assert!(
                matches!(MixDescriptor::decode(&good[..len]), Err(DescriptorError::Truncated { .. })),
                "prefix of {len} bytes"
            );
        }

        // Fields edited past the limits after signing: verify refuses, and the
        // encoding is refused by decode rather than read as something else.
        let mut edited = sample();
        edited.addresses = vec!["a".into(); 300];
        assert_eq!(edited.verify(), Err(DescriptorError::TooManyAddresses(300)));
        assert!(MixDescriptor::decode(&edited.encode()).is_err());
        let mut edited = sample();
        edited.addresses = vec!["a".repeat(70_000)];
        assert!(MixDescriptor::decode(&edited.encode()).is_err());
    }

    fn address() -> impl Strategy<Value = String> {
        // Up to 64 chars of up to 4 UTF-8 bytes each stays within 256 bytes.
        proptest::collection::vec(any::<char>(), 1..=64).prop_map(|c| c.into_iter().collect())
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(
            seed in any::<[u8; 32]>(),
            mix in any::<[u8; 32]>(),
            epoch in any::<u64>(),
            layer in 0..=MAX_LAYER,
            role in 0..=ROLE_EXIT,
            addresses in proptest::collection::vec(address(), 0..=MAX_ADDRESSES),
        ) {
            let d = MixDescriptor::sign(&SigningKey::from_bytes(&seed), epoch, MixPublicKey(mix), layer, role, addresses)
                .unwrap();
            let bytes = d.encode();
            let back = MixDescriptor::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &d);
            prop_assert_eq!(back.encode(), bytes);
            prop_assert!(back.verify().is_ok());
        }

        #[test]
        fn decode_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            // Never panics; whatever decodes re-encodes to the same bytes.
            if let Ok(d) = MixDescriptor::decode(&bytes) {
                prop_assert_eq!(d.encode(), bytes);
            }
        }
    }

    #[test]
    fn services_are_signed_and_only_exits_offer_them() {
        let id = identity(0x21);
        let key = MixPublicKey([3; 32]);
        let rpc = RequestKind::mask_of(&[RequestKind::RpcCall, RequestKind::RawBroadcast]);
        let exit = MixDescriptor::sign_with_services(&id, 1, key, 2, ROLE_EXIT, rpc, vec![]).unwrap();
        assert!(exit.offers(RequestKind::RpcCall) && exit.offers(RequestKind::RawBroadcast));
        assert!(!exit.offers(RequestKind::Http));
        let back = MixDescriptor::decode(&exit.encode()).unwrap();
        assert_eq!(back.services, rpc);
        back.verify().unwrap();
        // Claiming one more service after signing breaks the signature.
        let mut widened = back.clone();
        widened.services |= RequestKind::Http.bit();
        assert_eq!(widened.verify(), Err(DescriptorError::BadSignature));
        // A relay never lists services, signed or decoded.
        assert_eq!(
            MixDescriptor::sign_with_services(&id, 1, key, 1, ROLE_RELAY, rpc, vec![]).unwrap_err(),
            DescriptorError::RelayWithServices(rpc)
        );
        let mut bytes = MixDescriptor::sign(&id, 1, key, 1, ROLE_RELAY, vec![]).unwrap().encode();
        bytes[1 + 32 + 8 + 32 + 2 + 1] = 0x08;
        assert_eq!(MixDescriptor::decode(&bytes).unwrap_err(), DescriptorError::RelayWithServices(8));
    }

    #[test]
    fn two_keys_for_one_epoch_are_an_equivocation_only_when_both_verify() {
        let id = identity(0x31);
        let one = |mix: u8, epoch: u64| {
            MixDescriptor::sign(&id, epoch, MixPublicKey([mix; 32]), 1, ROLE_RELAY, vec![]).unwrap()
        };
        let (a, b) = (one(1, 9), one(2, 9));
        let e = Equivocation::new(b.clone(), a.clone()).unwrap();
        assert_eq!((e.node_id(), e.epoch()), (a.node_id, 9));
        // The same pair is the same evidence, whichever came first.
        assert_eq!(e, Equivocation::new(a.clone(), b.clone()).unwrap());
        assert_eq!(e.descriptors()[0].mix_key, a.mix_key);
        assert!(e.contains(&a) && e.contains(&b) && !e.contains(&one(3, 9)));
        let debug = format!("{e:?}");
        assert!(debug.contains("epoch: 9") && !debug.contains("mix_key"), "{debug}");

        // The same descriptor twice, the same key re-signed with other addresses,
        // two epochs, two nodes: not an equivocation.
        assert_eq!(Equivocation::new(a.clone(), a.clone()), Err(EquivocationError::SameKey));
        let moved = MixDescriptor::sign(&id, 9, a.mix_key, 1, ROLE_RELAY, vec!["/ip4/192.0.2.1/tcp/1".into()]).unwrap();
        assert_eq!(Equivocation::new(a.clone(), moved), Err(EquivocationError::SameKey));
        assert_eq!(Equivocation::new(a.clone(), one(2, 10)), Err(EquivocationError::DifferentEpochs(9, 10)));
        let other = MixDescriptor::sign(&identity(0x32), 9, MixPublicKey([2; 32]), 1, ROLE_RELAY, vec![]).unwrap();
        assert_eq!(Equivocation::new(a.clone(), other), Err(EquivocationError::DifferentNodes));

        // A second descriptor forged in the node's name (someone else's
        // signature, or a signed one with its key swapped) proves nothing.
        let mut stolen = MixDescriptor::sign(&identity(0x33), 9, MixPublicKey([2; 32]), 1, ROLE_RELAY, vec![]).unwrap();
        stolen.node_id = a.node_id;
        assert_eq!(
            Equivocation::new(a.clone(), stolen),
            Err(EquivocationError::Invalid { which: 1, error: DescriptorError::BadSignature })
        );
        let mut swapped = a.clone();
        swapped.mix_key = MixPublicKey([7; 32]);
        assert_eq!(
            Equivocation::new(swapped, a),
            Err(EquivocationError::Invalid { which: 0, error: DescriptorError::BadSignature })
        );
    }

    fn policy() -> FeePolicy {
        FeePolicy { wallet: [0xe1; 20], pool: [0x9a; 20], chain_id: 31337, margin_bps: 500, assets: vec![[0; 20]] }
    }

    #[test]
    fn a_fee_policy_is_signed_and_only_exits_carry_one() {
        let id = identity(0x22);
        let key = MixPublicKey([4; 32]);
        let kinds = RequestKind::mask_of(&[RequestKind::EthRequest]);
        let exit = MixDescriptor::sign_exit(&id, 1, key, 2, ROLE_EXIT, kinds, vec![], Some(policy())).unwrap();
        let back = MixDescriptor::decode(&exit.encode()).unwrap();
        back.verify().unwrap();
        assert_eq!(back.fee_policy, Some(policy()));
        // A cheaper margin or another wallet after signing breaks the signature.
        let mut cheaper = back.clone();
        cheaper.fee_policy.as_mut().unwrap().margin_bps = 0;
        assert_eq!(cheaper.verify(), Err(DescriptorError::BadSignature));
        let mut redirected = back.clone();
        redirected.fee_policy.as_mut().unwrap().wallet = [0xee; 20];
        assert_eq!(redirected.verify(), Err(DescriptorError::BadSignature));
        // Relays carry none.
        assert_eq!(
            MixDescriptor::sign_exit(&id, 1, key, 1, ROLE_RELAY, 0, vec![], Some(policy())).unwrap_err(),
            DescriptorError::RelayWithFeePolicy
        );
        let mut bytes = MixDescriptor::sign(&id, 1, key, 1, ROLE_RELAY, vec![]).unwrap().encode();
        let flag = bytes.len() - SIGNATURE_LEN - 1;
        bytes[flag] = 2;
        assert_eq!(MixDescriptor::decode(&bytes).unwrap_err(), DescriptorError::FeePolicyFlag(2));
        bytes[flag] = 1;
        assert_eq!(MixDescriptor::decode(&bytes).unwrap_err(), DescriptorError::RelayWithFeePolicy);
        // Limits.
        for bad in [
            FeePolicy { wallet: [0; 20], ..policy() },
            FeePolicy { pool: [0; 20], ..policy() },
            FeePolicy { margin_bps: MAX_MARGIN_BPS + 1, ..policy() },
            FeePolicy { assets: vec![], ..policy() },
            FeePolicy { assets: vec![[0; 20], [0; 20]], ..policy() },
            FeePolicy { assets: vec![[7; 20]; MAX_FEE_ASSETS + 1], ..policy() },
        ] {
            assert!(matches!(
                MixDescriptor::sign_exit(&id, 1, key, 2, ROLE_EXIT, kinds, vec![], Some(bad)),
                Err(DescriptorError::BadFeePolicy(_))
            ));
        }
    }

    #[test]
    fn fees_include_the_margin_rounded_up() {
        let p = FeePolicy { margin_bps: 1_000, ..policy() };
        assert_eq!(p.fee_for(1_000), 1_100);
        assert_eq!(p.fee_for(1), 2);
        assert_eq!(p.fee_for(0), 0);
        assert_eq!(FeePolicy { margin_bps: 0, ..policy() }.fee_for(12_345), 12_345);
        assert_eq!(p.fee_for(u128::MAX), u128::MAX);
        assert_eq!(p.fee_for(u128::MAX / 2), u128::MAX / 2 + (u128::MAX / 2).div_ceil(10));
    }

    // --- Test vector: protocol/tests/vectors/descriptor.hex ---------------------
    //
    // Same pattern as `tests/vectors.rs`: the file is regenerated from fixed seeds
    // and must match byte for byte (`NOX_REGENERATE_VECTORS=1` rewrites it), and
    // the stored descriptor is checked on its own, independently of the generator.

    fn vector_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/descriptor.hex")
    }

    fn generate_vector() -> String {
        let seed = [0x5eu8; 32];
        let mix = MixSecretKey::from_bytes([0x6d; 32]);
        let d = MixDescriptor::sign_exit(
            &SigningKey::from_bytes(&seed),
            163_840,
            mix.public_key(),
            2,
            ROLE_EXIT,
            RequestKind::mask_of(&[RequestKind::Echo, RequestKind::RpcCall, RequestKind::EthRequest]),
            vec!["/ip4/198.51.100.1/tcp/7000".to_owned(), "/ip6/2001:db8::1/tcp/7000".to_owned()],
            Some(FeePolicy {
                wallet: [0xe1; 20],
                pool: [0x9a; 20],
                chain_id: 31337,
                margin_bps: 1_000,
                assets: vec![[0; 20], [0x70; 20]],
            }),
        )
        .unwrap();
        let entries: [(&str, Vec<u8>); 6] = [
            ("identity_seed", seed.to_vec()),
            ("node_id", d.node_id.0.to_vec()),
            ("mix_secret", mix.to_bytes().to_vec()),
            ("mix_key", d.mix_key.0.to_vec()),
            ("signing_message", d.signing_message()),
            ("descriptor", d.encode()),
        ];
        entries.iter().map(|(n, b)| format!("{n}: {}\n", hex::encode(b))).collect()
    }

    #[test]
    fn vector_matches_the_implementation() {
        let generated = generate_vector();
        if std::env::var_os("NOX_REGENERATE_VECTORS").is_some() {
            std::fs::write(vector_path(), &generated).unwrap();
        }
        let stored = std::fs::read_to_string(vector_path()).unwrap();
        assert!(stored == generated, "descriptor.hex differs from the implementation: the wire format changed");
    }

    #[test]
    fn stored_vector_verifies() {
        let text = std::fs::read_to_string(vector_path()).unwrap();
        let v: BTreeMap<&str, Vec<u8>> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, hex) = l.split_once(": ").unwrap();
                (name, hex::decode(hex).unwrap())
            })
            .collect();
        let d = MixDescriptor::decode(&v["descriptor"]).unwrap();
        d.verify().unwrap();
        let seed: [u8; 32] = v["identity_seed"].clone().try_into().unwrap();
        assert_eq!(d.node_id.0, SigningKey::from_bytes(&seed).verifying_key().to_bytes());
        assert_eq!(d.node_id.0.to_vec(), v["node_id"]);
        let mix: [u8; 32] = v["mix_secret"].clone().try_into().unwrap();
        assert_eq!(d.mix_key, MixSecretKey::from_bytes(mix).public_key());
        assert_eq!(d.mix_key.0.to_vec(), v["mix_key"]);
        assert_eq!((d.epoch, d.layer, d.role), (163_840, 2, ROLE_EXIT));
        let policy = d.fee_policy.as_ref().unwrap();
        assert_eq!((policy.wallet, policy.chain_id, policy.margin_bps), ([0xe1; 20], 31337, 1_000));
        assert!(policy.accepts(&[0; 20]) && !policy.accepts(&[1; 20]));
        // The signature covers exactly domain ‖ encoding-without-signature.
        let body = &v["descriptor"][..v["descriptor"].len() - SIGNATURE_LEN];
        assert_eq!(v["signing_message"], [SIGNING_DOMAIN, body].concat());
        let key = VerifyingKey::from_bytes(&d.node_id.0).unwrap();
        key.verify_strict(&v["signing_message"], &Signature::from_bytes(d.signature())).unwrap();
    }
}
