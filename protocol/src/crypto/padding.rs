//! ISO/IEC 7816-4 padding: the content, one `0x80` byte, then zeros.
//!
//! [`unpad`] runs in time that depends only on the buffer length, not on where
//! the marker is, so a node or client that unpads attacker-influenced bytes leaks
//! nothing about their content through timing.

use subtle::{ConditionallySelectable, ConstantTimeEq};

/// Padding errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PaddingError {
    /// The content does not fit with at least one byte of padding.
    #[error("content of {len} bytes does not fit a {capacity}-byte padded buffer")]
    TooLong {
        /// Content length.
        len: usize,
        /// Buffer size.
        capacity: usize,
    },
    /// No `0x80` marker followed only by zeros was found.
    #[error("invalid ISO/IEC 7816-4 padding")]
    Invalid,
}

/// Writes `content` into `out`, padded to the whole of `out`.
pub fn pad_into(content: &[u8], out: &mut [u8]) -> Result<(), PaddingError> {
    if content.len() >= out.len() {
        return Err(PaddingError::TooLong { len: content.len(), capacity: out.len() });
    }
    out[..content.len()].copy_from_slice(content);
    out[content.len()] = 0x80;
    out[content.len() + 1..].fill(0);
    Ok(())
}

/// Returns the content length of a padded buffer, in constant time.
pub fn unpad(padded: &[u8]) -> Result<usize, PaddingError> {
    // Scan from the end: remember the index of the last non-zero byte and whether
    // that byte is 0x80. Every byte is visited, and the selection is branch-free.
    let mut found = subtle::Choice::from(0u8);
    let mut marker_ok = subtle::Choice::from(0u8);
    let mut index = 0u64;
    for (i, byte) in padded.iter().enumerate().rev() {
        let nonzero = !byte.ct_eq(&0);
        let take = nonzero & !found;
        index = u64::conditional_select(&index, &(i as u64), take);
        marker_ok.conditional_assign(&byte.ct_eq(&0x80), take);
        found |= nonzero;
    }
    if bool::from(found & marker_ok) { Ok(index as usize) } else { Err(PaddingError::Invalid) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(content in proptest::collection::vec(any::<u8>(), 0..300), extra in 1usize..64) {
            let mut buf = vec![0xAAu8; content.len() + extra];
            pad_into(&content, &mut buf).unwrap();
            let n = unpad(&buf).unwrap();
            prop_assert_eq!(&buf[..n], &content[..]);
        }
    }

    #[test]
    fn invalid_paddings() {
        assert_eq!(unpad(&[]), Err(PaddingError::Invalid));
        assert_eq!(unpad(&[0, 0, 0]), Err(PaddingError::Invalid));
        assert_eq!(unpad(&[1, 0x80, 0x01]), Err(PaddingError::Invalid));
        assert_eq!(unpad(&[1, 0x81, 0]), Err(PaddingError::Invalid));
        assert_eq!(unpad(&[0x80]), Ok(0));
        assert_eq!(unpad(&[5, 0x80, 0, 0]), Ok(1));
        let mut small = [0u8; 3];
        assert_eq!(pad_into(&[1, 2, 3], &mut small), Err(PaddingError::TooLong { len: 3, capacity: 3 }));
    }
}
