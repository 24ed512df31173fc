//! What comes back in an `Ok` reply's data, for the kinds whose answer has
//! a layout of its own (`docs/protocol.md` §4.5). `Echo` returns its data,
//! `RpcCall` and `RawBroadcast` the upstream's JSON-RPC response object as
//! bytes; `Http` returns an [`HttpAnswer`]:
//!
//! ```text
//! status u16 ‖ header count u16 ‖ count × (name u32-len ‖ name, value u32-len ‖ value) ‖ body u32-len ‖ body
//! ```
//!
//! Big-endian; header names lower-case UTF-8, values bytes. Decoding never
//! allocates beyond the input and refuses trailing bytes.

use crate::wire::{Reader, Truncated};

/// An HTTP answer as the client receives it. `Debug` shows the status and
/// the sizes only.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The headers, in the server's order, names in lower case.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for HttpAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAnswer")
            .field("status", &self.status)
            .field("headers", &self.headers.len())
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Why an [`HttpAnswer`] does not encode or decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpAnswerError {
    /// The input ends inside a field.
    #[error("HTTP answer truncated at byte {0}")]
    Truncated(usize),
    /// Bytes after the body.
    #[error("{0} trailing bytes after the HTTP answer")]
    TrailingBytes(usize),
    /// A header name is not UTF-8.
    #[error("a header name is not valid UTF-8")]
    InvalidUtf8,
    /// More headers than a `u16` counts.
    #[error("{0} headers exceed the 65535 an answer can carry")]
    TooManyHeaders(usize),
    /// A field longer than a `u32` length says.
    #[error("a field of {0} bytes is too long to encode")]
    FieldTooLong(usize),
}

fn field<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], Truncated> {
    let len = r.u32()? as usize;
    r.take(len)
}

impl From<Truncated> for HttpAnswerError {
    fn from(t: Truncated) -> Self {
        HttpAnswerError::Truncated(t.at)
    }
}

fn put_field(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), HttpAnswerError> {
    let len = u32::try_from(bytes.len()).map_err(|_| HttpAnswerError::FieldTooLong(bytes.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

impl HttpAnswer {
    /// Encodes the answer.
    pub fn encode(&self) -> Result<Vec<u8>, HttpAnswerError> {
        let count =
            u16::try_from(self.headers.len()).map_err(|_| HttpAnswerError::TooManyHeaders(self.headers.len()))?;
        let header_bytes: usize = self.headers.iter().map(|(n, v)| 8 + n.len() + v.len()).sum();
        let mut out = Vec::with_capacity(8 + header_bytes + self.body.len());
        out.extend_from_slice(&self.status.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        for (name, value) in &self.headers {
            put_field(&mut out, name.as_bytes())?;
            put_field(&mut out, value)?;
        }
        put_field(&mut out, &self.body)?;
        Ok(out)
    }

    /// Decodes an answer; never allocates more than `bytes` holds, refuses
    /// trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, HttpAnswerError> {
        let mut r = Reader::new(bytes);
        let status = r.u16()?;
        let count = usize::from(r.u16()?);
        let mut headers = Vec::with_capacity(count.min(bytes.len() / 8));
        for _ in 0..count {
            let name = std::str::from_utf8(field(&mut r)?).map_err(|_| HttpAnswerError::InvalidUtf8)?.to_owned();
            headers.push((name, field(&mut r)?.to_vec()));
        }
        let body = field(&mut r)?.to_vec();
        match r.remaining() {
            0 => Ok(HttpAnswer { status, headers, body }),
            n => Err(HttpAnswerError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn answers_round_trip(
            status in any::<u16>(),
            headers in proptest::collection::vec(("[a-z-]{0,20}", proptest::collection::vec(any::<u8>(), 0..40)), 0..8),
            body in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let a = HttpAnswer { status, headers, body };
            let bytes = a.encode().unwrap();
            prop_assert_eq!(HttpAnswer::decode(&bytes).unwrap(), a);
            // Every strict prefix is truncated; an extra byte is trailing.
            for cut in [0, 1, 3, bytes.len() / 2, bytes.len() - 1] {
                prop_assert!(matches!(HttpAnswer::decode(&bytes[..cut]), Err(HttpAnswerError::Truncated(_))));
            }
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert_eq!(HttpAnswer::decode(&longer), Err(HttpAnswerError::TrailingBytes(1)));
        }

        #[test]
        fn decoding_anything_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = HttpAnswer::decode(&bytes);
        }
    }

    #[test]
    fn the_answer_layout_is_pinned() {
        let a = HttpAnswer { status: 200, headers: vec![("a".into(), b"bc".to_vec())], body: b"xyz".to_vec() };
        let want = "00c8".to_string() + "0001" + "00000001" + "61" + "00000002" + "6263" + "00000003" + "78797a";
        assert_eq!(hex::encode(a.encode().unwrap()), want);
        let huge = [0, 200, 0, 1, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(HttpAnswer::decode(&huge), Err(HttpAnswerError::Truncated(8)));
        let bad_name = [0, 200, 0, 1, 0, 0, 0, 1, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(HttpAnswer::decode(&bad_name), Err(HttpAnswerError::InvalidUtf8));
        assert_eq!(format!("{a:?}"), "HttpAnswer { status: 200, headers: 1, body_len: 3 }");
    }
}
