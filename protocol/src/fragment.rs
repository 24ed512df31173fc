//! Messages larger than one packet: fragmentation, Reed–Solomon parity, size
//! buckets and bounded reassembly.
//!
//! ## Sending
//!
//! [`Fragmenter::split`] cuts a message into `D` equal data shards of at most
//! [`MAX_SHARD_LEN`] bytes, pads `D` up to the next *size bucket* with all-zero
//! shards, and adds `P = ceil(D · ratio)` Reed–Solomon parity shards when `D > 1`.
//! An observer who counts packets therefore learns only the bucket, and any `D` of
//! the `D + P` fragments rebuild the message.
//!
//! ## Fragment layout (inside one packet payload)
//!
//! ```text
//! 0        1               17        19           21             23             27
//! +--------+---------------+---------+------------+--------------+--------------+-------------+
//! | ver=1  | message id    | index   | data shards| parity shards| message len  | shard bytes |
//! |        | (16 random)   | u16 BE  | u16 BE     | u16 BE       | u32 BE       | (even, ≥ 2) |
//! +--------+---------------+---------+------------+--------------+--------------+-------------+
//! ```
//!
//! ## Receiving
//!
//! A [`Reassembler`] holds incomplete messages within hard limits: total shard
//! bytes, concurrent messages, fragments per message, message length, and a stale
//! timeout. Fragments that contradict what an earlier fragment of the same message
//! said, repeat an index, or point outside the declared message are refused with a
//! typed [`FragmentError`] and never disturb the message already being collected.
//! Nothing in this module panics on any input.
//!
//! When a new fragment finds the message or byte budget full, the stalest
//! incomplete messages (earliest first fragment; among equals, the first
//! begun) are dropped to make room
//! ([`Reassembler::take_evicted`] counts their fragments), never the
//! fragment's own message. A flood of messages that never complete therefore
//! cannot shut new messages out: it can only push out messages older than the
//! flood's last `max_messages` (and `max_bytes`), so to break an honest message
//! whose fragments arrive within `S` seconds a flooder must start more than
//! `max_messages / S` new messages a second for as long as it wants to.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::sphinx::PAYLOAD_CAPACITY;

/// Fragment format version.
pub const FRAGMENT_VERSION: u8 = 1;
/// Bytes of fragment header.
pub const FRAGMENT_HEADER_LEN: usize = 27;
/// The largest shard one packet carries (even, as the erasure code requires).
pub const MAX_SHARD_LEN: usize = (PAYLOAD_CAPACITY - FRAGMENT_HEADER_LEN) & !1;
/// Length of a message identifier.
pub const MESSAGE_ID_LEN: usize = 16;

/// A message identifier: 16 random bytes chosen by the sender.
pub type MessageId = [u8; MESSAGE_ID_LEN];

/// The default size buckets (numbers of data fragments).
pub const DEFAULT_BUCKETS: [u16; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];
/// The default share of parity shards.
pub const DEFAULT_PARITY_RATIO: f64 = 0.3;

/// Everything that can go wrong splitting or reassembling a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    /// A message larger than the biggest bucket holds.
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    MessageTooLarge {
        /// Message length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bucket list is empty, unsorted, has a zero, or has more than 9 entries.
    #[error("invalid size buckets: {0}")]
    InvalidBuckets(&'static str),
    /// The parity ratio is not a finite value in [0, 4].
    #[error("invalid parity ratio")]
    InvalidParityRatio,
    /// Fewer bytes than a fragment header, or no shard bytes.
    #[error("fragment of {0} bytes is too short")]
    TooShort(usize),
    /// A fragment version this implementation does not speak.
    #[error("unsupported fragment version {0}")]
    UnsupportedVersion(u8),
    /// The declared shape is impossible or over the limits.
    #[error("fragment declares {data} data and {parity} parity shards, beyond the limit of {limit}")]
    TooManyFragments {
        /// Declared data shards.
        data: u16,
        /// Declared parity shards.
        parity: u16,
        /// Configured limit.
        limit: u16,
    },
    /// Zero data shards, an odd or oversized shard, or a length the shards cannot hold.
    #[error("fragment declares an impossible message shape")]
    BadShape,
    /// The index is outside `0..data + parity`.
    #[error("fragment index {index} outside 0..{total}")]
    IndexOutOfRange {
        /// Declared index.
        index: u16,
        /// Declared total.
        total: u32,
    },
    /// The declared message is longer than allowed.
    #[error("declared message length {len} exceeds the limit of {limit}")]
    MessageLengthLimit {
        /// Declared length.
        len: u32,
        /// Configured limit.
        limit: u32,
    },
    /// The fragment disagrees with earlier fragments of the same message.
    #[error("fragment contradicts earlier fragments of its message")]
    Inconsistent,
    /// This index of this message was already received.
    #[error("duplicate fragment")]
    Duplicate,
    /// Accepting the fragment would exceed the byte budget.
    #[error("reassembly byte budget exhausted")]
    MemoryLimit,
    /// Accepting a new message would exceed the concurrent-message limit.
    #[error("too many messages in reassembly")]
    MessageLimit,
    /// The shards could not be decoded (corrupt parity).
    #[error("erasure decoding failed")]
    Undecodable,
}

/// The configured size buckets: the data-fragment counts a message is padded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeBuckets(Vec<u16>);

impl SizeBuckets {
    /// Validates a bucket list: 1 to 9 strictly increasing non-zero counts.
    pub fn new(buckets: Vec<u16>) -> Result<Self, FragmentError> {
        if buckets.is_empty() || buckets.len() > 9 {
            return Err(FragmentError::InvalidBuckets("between 1 and 9 buckets are required"));
        }
        if buckets[0] == 0 {
            return Err(FragmentError::InvalidBuckets("a bucket of zero fragments"));
        }
        if buckets.windows(2).any(|w| w[0] >= w[1]) {
            return Err(FragmentError::InvalidBuckets("buckets must be strictly increasing"));
        }
        Ok(SizeBuckets(buckets))
    }

    /// The smallest bucket that holds `fragments` data fragments.
    pub fn bucket_for(&self, fragments: usize) -> Option<u16> {
        self.0.iter().copied().find(|b| usize::from(*b) >= fragments)
    }

    /// The largest bucket.
    pub fn max(&self) -> u16 {
        self.0.last().copied().unwrap_or(1)
    }

    /// The buckets.
    pub fn as_slice(&self) -> &[u16] {
        &self.0
    }
}

impl Default for SizeBuckets {
    fn default() -> Self {
        SizeBuckets(DEFAULT_BUCKETS.to_vec())
    }
}

/// Splits messages into fragments.
#[derive(Debug, Clone)]
pub struct Fragmenter {
    buckets: SizeBuckets,
    parity_ratio: f64,
}

impl Default for Fragmenter {
    fn default() -> Self {
        Fragmenter { buckets: SizeBuckets::default(), parity_ratio: DEFAULT_PARITY_RATIO }
    }
}

/// Parity shards for `data` data shards at `ratio`: none for a single shard.
pub fn parity_for(data: u16, ratio: f64) -> u16 {
    if data <= 1 {
        return 0;
    }
    let p = (f64::from(data) * ratio).ceil();
    if p <= 0.0 { 0 } else { p.min(f64::from(u16::MAX)) as u16 }
}

impl Fragmenter {
    /// A fragmenter with the given buckets and parity ratio (0 disables parity).
    pub fn new(buckets: SizeBuckets, parity_ratio: f64) -> Result<Self, FragmentError> {
        if !parity_ratio.is_finite() || !(0.0..=4.0).contains(&parity_ratio) {
            return Err(FragmentError::InvalidParityRatio);
        }
        Ok(Fragmenter { buckets, parity_ratio })
    }

    /// The largest message this fragmenter accepts.
    pub fn max_message_len(&self) -> usize {
        usize::from(self.buckets.max()) * MAX_SHARD_LEN
    }

    /// The longest message that becomes at most `fragments` packets (parity
    /// included): what a reply carried by `fragments` SURBs may hold. 0 when
    /// not even the smallest bucket fits.
    pub fn max_message_len_for(&self, fragments: usize) -> usize {
        self.buckets
            .as_slice()
            .iter()
            .filter(|b| usize::from(**b) + usize::from(parity_for(**b, self.parity_ratio)) <= fragments)
            .map(|b| usize::from(*b) * MAX_SHARD_LEN)
            .max()
            .unwrap_or(0)
    }

    /// How many packets a message of `len` bytes becomes.
    pub fn fragment_count(&self, len: usize) -> Result<usize, FragmentError> {
        let (data, parity, _) = self.shape(len)?;
        Ok(usize::from(data) + usize::from(parity))
    }

    fn shape(&self, len: usize) -> Result<(u16, u16, usize), FragmentError> {
        let max = self.max_message_len();
        if len > max || len > u32::MAX as usize {
            return Err(FragmentError::MessageTooLarge { len, max });
        }
        let real = len.div_ceil(MAX_SHARD_LEN).max(1);
        let data = self.buckets.bucket_for(real).ok_or(FragmentError::MessageTooLarge { len, max })?;
        let shard_len = (len.div_ceil(real).max(2) + 1) & !1;
        Ok((data, parity_for(data, self.parity_ratio), shard_len))
    }

    /// Splits `message` into fragments, each at most [`PAYLOAD_CAPACITY`] bytes.
    pub fn split(&self, message: &[u8], id: MessageId) -> Result<Vec<Vec<u8>>, FragmentError> {
        let (data, parity, shard_len) = self.shape(message.len())?;
        let mut shards: Vec<Vec<u8>> = (0..data)
            .map(|i| {
                let start = (usize::from(i) * shard_len).min(message.len());
                let end = (start + shard_len).min(message.len());
                let mut s = message[start..end].to_vec();
                s.resize(shard_len, 0);
                s
            })
            .collect();
        if parity > 0 {
            let recovery = reed_solomon_simd::encode(usize::from(data), usize::from(parity), &shards)
                .map_err(|_| FragmentError::BadShape)?;
            shards.extend(recovery);
        }
        let message_len = message.len() as u32;
        let mut fragments = Vec::with_capacity(shards.len());
        for (index, shard) in shards.iter().enumerate() {
            let header = FragmentHeader { id, index: index as u16, data, parity, message_len };
            let mut out = Vec::with_capacity(FRAGMENT_HEADER_LEN + shard.len());
            header.encode_into(&mut out);
            out.extend_from_slice(shard);
            fragments.push(out);
        }
        Ok(fragments)
    }
}

/// A decoded fragment header. `Debug` shows the shape only, not the message id
/// or length, which identify one user's message.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FragmentHeader {
    /// Message identifier.
    pub id: MessageId,
    /// Shard index: data shards first, then parity.
    pub index: u16,
    /// Data shards (after bucket padding).
    pub data: u16,
    /// Parity shards.
    pub parity: u16,
    /// Message length in bytes.
    pub message_len: u32,
}

impl std::fmt::Debug for FragmentHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FragmentHeader").field("data", &self.data).field("parity", &self.parity).finish_non_exhaustive()
    }
}

impl FragmentHeader {
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(FRAGMENT_VERSION);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.data.to_be_bytes());
        out.extend_from_slice(&self.parity.to_be_bytes());
        out.extend_from_slice(&self.message_len.to_be_bytes());
    }

    /// Parses a fragment into its header and shard bytes.
    pub fn parse(fragment: &[u8]) -> Result<(Self, &[u8]), FragmentError> {
        if fragment.len() <= FRAGMENT_HEADER_LEN {
            return Err(FragmentError::TooShort(fragment.len()));
        }
        if fragment[0] != FRAGMENT_VERSION {
            return Err(FragmentError::UnsupportedVersion(fragment[0]));
        }
        let u16_at = |o: usize| u16::from_be_bytes([fragment[o], fragment[o + 1]]);
        let mut id = [0u8; MESSAGE_ID_LEN];
        id.copy_from_slice(&fragment[1..17]);
        let header = FragmentHeader {
            id,
            index: u16_at(17),
            data: u16_at(19),
            parity: u16_at(21),
            message_len: u32::from_be_bytes([fragment[23], fragment[24], fragment[25], fragment[26]]),
        };
        Ok((header, &fragment[FRAGMENT_HEADER_LEN..]))
    }
}

/// Limits on what a [`Reassembler`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Total shard bytes held across all incomplete messages.
    pub max_bytes: usize,
    /// Incomplete messages held at once.
    pub max_messages: usize,
    /// Data plus parity fragments one message may declare.
    pub max_fragments_per_message: u16,
    /// Longest message accepted, in bytes.
    pub max_message_len: u32,
    /// An incomplete message is dropped this long after its first fragment.
    pub stale_after: Duration,
    /// Identifiers of completed messages remembered, so late fragments are ignored.
    pub completed_memory: usize,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        ReassemblyLimits {
            max_bytes: 64 * 1024 * 1024,
            max_messages: 1024,
            max_fragments_per_message: 512,
            max_message_len: 8 * 1024 * 1024,
            stale_after: Duration::from_secs(60),
            completed_memory: 4096,
        }
    }
}

/// What happened to an accepted fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum Reassembled {
    /// The message is complete.
    Complete(Vec<u8>),
    /// Stored; the message is still incomplete.
    Pending,
    /// The message was already completed; the fragment was not needed.
    Late,
}

struct Partial {
    data: u16,
    parity: u16,
    message_len: u32,
    shard_len: usize,
    shards: HashMap<u16, Vec<u8>>,
    first_seen: Instant,
    /// Order of arrival among messages begun at the same instant.
    seq: u64,
}

impl Partial {
    fn bytes(&self) -> usize {
        self.shards.len() * self.shard_len
    }
}

/// Collects fragments into messages within fixed bounds.
pub struct Reassembler {
    limits: ReassemblyLimits,
    partial: HashMap<MessageId, Partial>,
    /// Recently completed ids, oldest first, with a set for O(1) look-ups.
    completed: VecDeque<MessageId>,
    completed_set: HashSet<MessageId>,
    bytes: usize,
    /// Fragments of messages dropped to make room, since the last look.
    evicted: usize,
    /// Messages begun so far (orders messages begun at the same instant).
    begun: u64,
}

impl std::fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reassembler")
            .field("messages", &self.partial.len())
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new(limits: ReassemblyLimits) -> Self {
        Reassembler {
            limits,
            partial: HashMap::new(),
            completed: VecDeque::new(),
            completed_set: HashSet::new(),
            bytes: 0,
            evicted: 0,
            begun: 0,
        }
    }

    /// Fragments dropped with the stale messages that made room for newer
    /// ones since the last call.
    pub fn take_evicted(&mut self) -> usize {
        std::mem::take(&mut self.evicted)
    }

    /// Makes room for `bytes` more shard bytes and, if `new_message`, one
    /// more message, dropping the stalest incomplete messages other than
    /// `keep`. Refuses only when no other message is left to drop.
    fn make_room(&mut self, keep: &MessageId, new_message: bool, bytes: usize) -> Result<(), FragmentError> {
        loop {
            let over_messages = new_message && self.partial.len() >= self.limits.max_messages;
            let over_bytes = self.bytes + bytes > self.limits.max_bytes;
            if !over_messages && !over_bytes {
                return Ok(());
            }
            let stalest = self
                .partial
                .iter()
                .filter(|(id, _)| *id != keep)
                .min_by_key(|(_, p)| (p.first_seen, p.seq))
                .map(|(id, _)| *id);
            let Some(p) = stalest.and_then(|id| self.partial.remove(&id)) else {
                return Err(if over_messages { FragmentError::MessageLimit } else { FragmentError::MemoryLimit });
            };
            self.bytes -= p.bytes();
            self.evicted += p.shards.len();
        }
    }

    /// Incomplete messages held.
    pub fn pending_messages(&self) -> usize {
        self.partial.len()
    }

    /// Shard bytes held.
    pub fn pending_bytes(&self) -> usize {
        self.bytes
    }

    /// Drops messages whose first fragment is older than the stale timeout;
    /// returns how many were dropped.
    pub fn expire(&mut self, now: Instant) -> usize {
        let stale_after = self.limits.stale_after;
        let before = self.partial.len();
        let mut freed = 0;
        self.partial.retain(|_, p| {
            let keep = now.saturating_duration_since(p.first_seen) < stale_after;
            if !keep {
                freed += p.bytes();
            }
            keep
        });
        self.bytes -= freed;
        before - self.partial.len()
    }

    /// Accepts one fragment received at `now`.
    pub fn insert(&mut self, fragment: &[u8], now: Instant) -> Result<Reassembled, FragmentError> {
        let (h, shard) = FragmentHeader::parse(fragment)?;
        let total = u32::from(h.data) + u32::from(h.parity);
        if total > u32::from(self.limits.max_fragments_per_message) {
            return Err(FragmentError::TooManyFragments {
                data: h.data,
                parity: h.parity,
                limit: self.limits.max_fragments_per_message,
            });
        }
        if h.data == 0 || !shard.len().is_multiple_of(2) || shard.len() > MAX_SHARD_LEN {
            return Err(FragmentError::BadShape);
        }
        if u32::from(h.index) >= total {
            return Err(FragmentError::IndexOutOfRange { index: h.index, total });
        }
        if h.message_len > self.limits.max_message_len {
            return Err(FragmentError::MessageLengthLimit { len: h.message_len, limit: self.limits.max_message_len });
        }
        let capacity = usize::from(h.data) * shard.len();
        if h.message_len as usize > capacity {
            return Err(FragmentError::BadShape);
        }
        if self.completed_set.contains(&h.id) {
            return Ok(Reassembled::Late);
        }

        let new_message = match self.partial.get(&h.id) {
            Some(p) => {
                if p.data != h.data
                    || p.parity != h.parity
                    || p.message_len != h.message_len
                    || p.shard_len != shard.len()
                {
                    return Err(FragmentError::Inconsistent);
                }
                if p.shards.contains_key(&h.index) {
                    return Err(FragmentError::Duplicate);
                }
                false
            }
            None => true,
        };
        if (new_message && self.partial.len() >= self.limits.max_messages)
            || self.bytes + shard.len() > self.limits.max_bytes
        {
            self.expire(now);
            self.make_room(&h.id, new_message, shard.len())?;
        }

        let begun = &mut self.begun;
        let p = self.partial.entry(h.id).or_insert_with(|| {
            *begun += 1;
            Partial {
                data: h.data,
                parity: h.parity,
                message_len: h.message_len,
                shard_len: shard.len(),
                shards: HashMap::new(),
                first_seen: now,
                seq: *begun,
            }
        });
        p.shards.insert(h.index, shard.to_vec());
        self.bytes += shard.len();
        if p.shards.len() < usize::from(p.data) {
            return Ok(Reassembled::Pending);
        }

        // Enough shards: decode, then forget the message whatever the outcome.
        let Some(p) = self.partial.remove(&h.id) else {
            return Err(FragmentError::Inconsistent);
        };
        self.bytes -= p.bytes();
        self.remember_completed(h.id);
        decode(p).map(Reassembled::Complete)
    }

    fn remember_completed(&mut self, id: MessageId) {
        if self.limits.completed_memory == 0 {
            return;
        }
        if self.completed.len() >= self.limits.completed_memory
            && let Some(old) = self.completed.pop_front()
        {
            self.completed_set.remove(&old);
        }
        if self.completed_set.insert(id) {
            self.completed.push_back(id);
        }
    }
}

fn decode(mut p: Partial) -> Result<Vec<u8>, FragmentError> {
    let data = usize::from(p.data);
    let missing: Vec<u16> = (0..p.data).filter(|i| !p.shards.contains_key(i)).collect();
    if !missing.is_empty() {
        let originals: Vec<(usize, &Vec<u8>)> =
            p.shards.iter().filter(|(i, _)| **i < p.data).map(|(i, s)| (usize::from(*i), s)).collect();
        let recovery: Vec<(usize, &Vec<u8>)> =
            p.shards.iter().filter(|(i, _)| **i >= p.data).map(|(i, s)| (usize::from(*i) - data, s)).collect();
        let restored = reed_solomon_simd::decode(data, usize::from(p.parity), originals, recovery)
            .map_err(|_| FragmentError::Undecodable)?;
        for (i, shard) in restored {
            p.shards.insert(i as u16, shard);
        }
    }
    let mut out = Vec::with_capacity(data * p.shard_len);
    for i in 0..p.data {
        let shard = p.shards.get(&i).ok_or(FragmentError::Undecodable)?;
        out.extend_from_slice(shard);
    }
    out.truncate(p.message_len as usize);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parity_follows_the_ratio() {
        assert_eq!(parity_for(1, 0.3), 0);
        assert_eq!(parity_for(11, 0.3), 4);
        assert_eq!(parity_for(16, 0.3), 5);
        assert_eq!(parity_for(256, 0.3), 77);
        assert_eq!(parity_for(8, 0.0), 0);
    }

    #[test]
    fn buckets_are_validated() {
        assert!(SizeBuckets::new(vec![]).is_err());
        assert!(SizeBuckets::new(vec![0, 1]).is_err());
        assert!(SizeBuckets::new(vec![2, 2]).is_err());
        assert!(SizeBuckets::new((1..=10).collect()).is_err());
        let b = SizeBuckets::new(vec![1, 3, 7]).unwrap();
        assert_eq!(b.bucket_for(2), Some(3));
        assert_eq!(b.bucket_for(8), None);
        assert!(Fragmenter::new(b.clone(), f64::NAN).is_err());
        assert!(Fragmenter::new(b.clone(), -0.1).is_err());
        assert!(Fragmenter::new(b.clone(), 4.5).is_err());
        assert!(Fragmenter::new(b, 4.0).is_ok());
    }

    /// A message's fragments, fed whole.
    fn feed_all(r: &mut Reassembler, frags: &[Vec<u8>], now: Instant) -> Option<Vec<u8>> {
        let mut out = None;
        for f in frags {
            if let Ok(Reassembled::Complete(m)) = r.insert(f, now) {
                out = Some(m);
            }
        }
        out
    }

    #[test]
    fn a_flood_of_incomplete_messages_does_not_stop_an_honest_one() {
        // Bytes bind before messages: both kinds of room are made.
        let limits =
            ReassemblyLimits { max_messages: 64, max_bytes: 40 * MAX_SHARD_LEN, ..ReassemblyLimits::default() };
        let mut r = Reassembler::new(limits);
        let f = Fragmenter::default();
        let t0 = Instant::now();
        // Never-completing messages: the first of 2 data shards, each shard maximal.
        let flood_fragment = |n: u32| {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&n.to_be_bytes());
            f.split(&vec![1u8; MAX_SHARD_LEN * 2], id).unwrap().swap_remove(0)
        };
        let mut flood = 0u32;
        // A message begun before the flood is the stalest: the flood pushes it out.
        let early = f.split(&vec![9u8; MAX_SHARD_LEN * 3 + 1], [0xee; 16]).unwrap();
        assert_eq!(early.len(), 6, "4 data and 2 parity fragments");
        assert_eq!(r.insert(&early[0], t0), Ok(Reassembled::Pending));
        for i in 1..=200 {
            let now = t0 + Duration::from_millis(i);
            assert_eq!(r.insert(&flood_fragment(flood), now), Ok(Reassembled::Pending), "flood message {flood}");
            flood += 1;
            assert!(r.pending_messages() <= limits.max_messages && r.pending_bytes() <= limits.max_bytes);
        }
        assert!(r.take_evicted() >= 160, "the flood never filled the budget");
        let now = t0 + Duration::from_millis(250);
        for frag in &early[1..4] {
            assert_eq!(r.insert(frag, now), Ok(Reassembled::Pending), "the early first fragment is gone");
        }
        // A message whose fragments arrive while the flood goes on (30 flood
        // messages between its first fragment and its last) is reassembled.
        let later = vec![5u8; MAX_SHARD_LEN * 2 + 7];
        let later_frags = f.split(&later, [0xdd; 16]).unwrap();
        let mut done = None;
        for (k, frag) in later_frags.iter().enumerate() {
            let now = t0 + Duration::from_millis(300 + k as u64 * 10);
            for _ in 0..10 {
                assert_eq!(r.insert(&flood_fragment(flood), now), Ok(Reassembled::Pending));
                flood += 1;
            }
            if let Ok(Reassembled::Complete(m)) = r.insert(frag, now) {
                done = Some(m);
            }
        }
        assert_eq!(done, Some(later));
        // And a message arriving whole always completes.
        let whole = vec![3u8; 10_000];
        assert_eq!(feed_all(&mut r, &f.split(&whole, [0xcc; 16]).unwrap(), t0 + Duration::from_secs(1)), Some(whole));
    }

    #[test]
    fn a_budget_too_small_for_one_shard_refuses_with_a_typed_error() {
        let limits = ReassemblyLimits { max_bytes: 100, ..ReassemblyLimits::default() };
        let mut r = Reassembler::new(limits);
        let frags = Fragmenter::default().split(&vec![1u8; 1000], [1; 16]).unwrap();
        assert_eq!(r.insert(&frags[0], Instant::now()), Err(FragmentError::MemoryLimit));
        assert_eq!((r.pending_messages(), r.pending_bytes(), r.take_evicted()), (0, 0, 0));
    }

    #[test]
    fn fragments_fit_a_packet() {
        let f = Fragmenter::default();
        let msg = vec![7u8; MAX_SHARD_LEN * 3 + 5];
        let frags = f.split(&msg, [1; 16]).unwrap();
        // 4 data shards (bucket 4) + 2 parity.
        assert_eq!(frags.len(), 6);
        assert!(frags.iter().all(|x| x.len() <= PAYLOAD_CAPACITY));
    }
}
