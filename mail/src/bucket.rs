//! Size buckets: a scrubbed message padded to one of nine fixed sizes.
//!
//! A message's exact length says a lot about it (the same attachment sent
//! twice, a reply of a known length). [`pad`] writes it into the smallest of
//! [`BUCKET_SIZES`] that holds it, and the result is what the `Mail` request
//! carries as its message (docs/protocol.md §4.7); the exit calls [`unpad`]
//! before it delivers. Until then — in the client's spool, in the fragment
//! headers, in the exit's reassembly — only the bucket shows. The exit that
//! delivers the message, and its recipient, see its length: they must.
//!
//! ## Layout
//!
//! ```text
//! version (1) = 1 ‖ message length (4, u32 big-endian) ‖ message ‖ zero bytes
//! ```
//!
//! The whole is exactly one bucket size long.
//!
//! ## The sizes, and why
//!
//! A `Mail` request is cut into fragments of [`MAX_SHARD_LEN`] bytes (32,098)
//! whose count is padded to a power of two, 1 to 256 ([`DEFAULT_BUCKETS`],
//! docs/protocol.md §3); the mixnet carries nothing longer than 256 fragments.
//! Mail buckets follow those counts: bucket `k` is `2^k` fragments less
//! [`ENVELOPE_RESERVE`], the room the request's other fields need (its version,
//! kind, id and SURB count, one SURB, the transport, and the recipients list:
//! [`RECIPIENTS_ROOM`] bytes of it). A padded message with its envelope
//! therefore fills its fragment bucket and never spills into the next one:
//!
//! | bucket | fragments | bytes (padded) | longest message |
//! |--------|-----------|----------------|-----------------|
//! | 0 | 1   | 28,002    | 27,997    |
//! | 1 | 2   | 60,100    | 60,095    |
//! | 2 | 4   | 124,296   | 124,291   |
//! | 3 | 8   | 252,688   | 252,683   |
//! | 4 | 16  | 509,472   | 509,467   |
//! | 5 | 32  | 1,023,040 | 1,023,035 |
//! | 6 | 64  | 2,050,176 | 2,050,171 |
//! | 7 | 128 | 4,104,448 | 4,104,443 |
//! | 8 | 256 | 8,212,992 | 8,212,987 |
//!
//! Smaller buckets would buy nothing: a packet is 32 KiB whatever it carries,
//! so every message up to one packet looks the same on the wire, and sizes
//! below it would only tell the exit more. Buckets that do not line up with
//! the fragment counts would cost up to twice the packets for nothing. The
//! largest is the mixnet's largest message (about 7.8 MiB, some 6 MB of
//! attachment once base64 and its line breaks have grown it); a larger mail limit needs
//! a larger fragment bucket first.

use nox_protocol::fragment::{DEFAULT_BUCKETS, MAX_SHARD_LEN};
use nox_protocol::sphinx::surb::SURB_LEN;

/// Version byte of a padded message.
pub const PAD_VERSION: u8 = 1;

/// Bytes before the message: the version and the length.
pub const PAD_HEADER_LEN: usize = 5;

/// Bytes of each fragment bucket left for the rest of the `Mail` request: its
/// fixed fields, one SURB, and [`RECIPIENTS_ROOM`] for the recipients.
pub const ENVELOPE_RESERVE: usize = 4096;

/// The `Mail` request's fixed fields: version, kind, request id and SURB
/// count (19 bytes), transport (1), recipients count (2), message length (4).
const MAIL_FIXED_LEN: usize = 26;

/// What [`ENVELOPE_RESERVE`] leaves for the recipients with one SURB: each
/// recipient takes a 4-byte length and its address (3,371 bytes: some fifty
/// ordinary addresses). More recipients or SURBs than that still travel; they
/// take the next fragment bucket.
pub const RECIPIENTS_ROOM: usize = ENVELOPE_RESERVE - MAIL_FIXED_LEN - SURB_LEN;

/// The nine padded sizes, in bytes, smallest first (see the module docs).
pub const BUCKET_SIZES: [usize; 9] = bucket_sizes();

/// The longest message [`pad`] accepts.
pub const MAX_MESSAGE_LEN: usize = BUCKET_SIZES[BUCKET_SIZES.len() - 1] - PAD_HEADER_LEN;

const fn bucket_sizes() -> [usize; 9] {
    let mut sizes = [0; 9];
    let mut i = 0;
    while i < sizes.len() {
        sizes[i] = DEFAULT_BUCKETS[i] as usize * MAX_SHARD_LEN - ENVELOPE_RESERVE;
        i += 1;
    }
    sizes
}

// The length field is a u32.
const _: () = assert!(MAX_MESSAGE_LEN <= u32::MAX as usize);

/// Why a message could not be padded or unpadded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BucketError {
    /// The message is longer than the largest bucket holds.
    #[error("message of {len} bytes is larger than the largest bucket holds ({max} bytes)")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// [`MAX_MESSAGE_LEN`].
        max: usize,
    },
    /// The padded buffer's length is not one of [`BUCKET_SIZES`].
    #[error("padded message of {len} bytes is not a bucket size")]
    NotABucketSize {
        /// The buffer's length.
        len: usize,
    },
    /// The version byte is not [`PAD_VERSION`].
    #[error("unsupported padding version {0}")]
    UnsupportedVersion(u8),
    /// The declared length does not fit in the buffer after the header.
    #[error("declared message length {declared} exceeds the bucket's {capacity} bytes")]
    LengthBeyondBucket {
        /// The length the header declares.
        declared: u32,
        /// The bytes the bucket has for the message.
        capacity: usize,
    },
    /// A padding byte is not zero.
    #[error("padding byte at offset {offset} is not zero")]
    NonZeroPadding {
        /// Its offset in the padded buffer.
        offset: usize,
    },
}

/// The size of the smallest bucket that holds a message of `len` bytes.
pub fn bucket_for(len: usize) -> Result<usize, BucketError> {
    BUCKET_SIZES
        .iter()
        .copied()
        .find(|size| len <= size - PAD_HEADER_LEN)
        .ok_or(BucketError::TooLarge { len, max: MAX_MESSAGE_LEN })
}

/// Pads `message` into the smallest bucket that holds it.
pub fn pad(message: &[u8]) -> Result<Vec<u8>, BucketError> {
    let size = bucket_for(message.len())?;
    let len =
        u32::try_from(message.len()).map_err(|_| BucketError::TooLarge { len: message.len(), max: MAX_MESSAGE_LEN })?;
    let mut out = Vec::with_capacity(size);
    out.push(PAD_VERSION);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    out.resize(size, 0);
    Ok(out)
}

/// The message inside a padded buffer. Checks, in this order, that the buffer
/// is exactly a bucket size, the version, that the declared length fits, and
/// that every byte after the message is zero. A message in a larger bucket than
/// it needs is accepted (a sender may pad further).
pub fn unpad(padded: &[u8]) -> Result<&[u8], BucketError> {
    if !BUCKET_SIZES.contains(&padded.len()) {
        return Err(BucketError::NotABucketSize { len: padded.len() });
    }
    let [version, l0, l1, l2, l3, rest @ ..] = padded else {
        return Err(BucketError::NotABucketSize { len: padded.len() });
    };
    if *version != PAD_VERSION {
        return Err(BucketError::UnsupportedVersion(*version));
    }
    let declared = u32::from_be_bytes([*l0, *l1, *l2, *l3]);
    let len = usize::try_from(declared).unwrap_or(usize::MAX);
    if len > rest.len() {
        return Err(BucketError::LengthBeyondBucket { declared, capacity: rest.len() });
    }
    let (message, padding) = rest.split_at(len);
    if let Some(i) = padding.iter().position(|b| *b != 0) {
        return Err(BucketError::NonZeroPadding { offset: PAD_HEADER_LEN + len + i });
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_bucket_sizes_are_pinned() {
        assert_eq!(
            BUCKET_SIZES,
            [28_002, 60_100, 124_296, 252_688, 509_472, 1_023_040, 2_050_176, 4_104_448, 8_212_992]
        );
        assert_eq!(MAX_MESSAGE_LEN, 8_212_987);
        assert_eq!(RECIPIENTS_ROOM, 3_371);
    }

    #[test]
    fn test_bucket_for_boundaries() {
        assert_eq!(bucket_for(0), Ok(BUCKET_SIZES[0]));
        for pair in BUCKET_SIZES.windows(2) {
            assert_eq!(bucket_for(pair[0] - PAD_HEADER_LEN), Ok(pair[0]));
            assert_eq!(bucket_for(pair[0] - PAD_HEADER_LEN + 1), Ok(pair[1]));
        }
        assert_eq!(bucket_for(MAX_MESSAGE_LEN), Ok(BUCKET_SIZES[8]));
        assert_eq!(
            bucket_for(MAX_MESSAGE_LEN + 1),
            Err(BucketError::TooLarge { len: MAX_MESSAGE_LEN + 1, max: MAX_MESSAGE_LEN })
        );
    }
}
