//! The payload envelope: what a reassembled message asks the exit to do, and
//! what comes back.
//!
//! ## Layout
//!
//! ```text
//! version (1) = 1 ‖ kind (1) ‖ request id (16) ‖ SURB count (1) ‖ SURBs (count × 507) ‖ body
//! ```
//!
//! The body's layout depends on the kind; every variable-length field is a
//! big-endian `u32` length followed by that many bytes, strings are UTF-8, and
//! lists are a `u16` count followed by the items. Decoding never allocates more
//! than the input holds and refuses trailing bytes, so a hostile envelope gets a
//! typed [`EnvelopeError`] and nothing else.
//!
//! Kinds (later issues add fields by bumping the version, never by reinterpreting
//! bytes):
//!
//! | kind | name           | body                                                            |
//! |------|----------------|-----------------------------------------------------------------|
//! | 0x01 | Echo           | data                                                            |
//! | 0x02 | EthRequest     | chain id u64 ‖ target (20) ‖ calldata ‖ payment                 |
//! | 0x03 | RawBroadcast   | chain id u64 ‖ signed raw transaction                           |
//! | 0x04 | RpcCall        | chain id u64 ‖ JSON-RPC request (string)                        |
//! | 0x05 | Http           | method ‖ url ‖ headers (list of name, value) ‖ body              |
//! | 0x06 | Mail           | transport u8 (1 SMTP, 2 NNTP) ‖ recipients (list) ‖ message     |
//! | 0x10 | Reply          | status u8 ‖ data                                                |
//!
//! `payment` in an Ethereum request is the encoded gas-payment proof; its inner
//! format belongs to the shielded-pool circuits and is carried here as opaque
//! bytes.

use crate::sphinx::surb::{SURB_LEN, Surb};
use crate::wire::{Reader, Truncated};

/// Envelope format version.
pub const ENVELOPE_VERSION: u8 = 1;
/// Length of a request identifier.
pub const REQUEST_ID_LEN: usize = 16;
/// Most SURBs one envelope carries.
pub const MAX_SURBS: usize = 255;

/// Envelope decoding errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Input ended inside a field.
    #[error("envelope truncated at byte {0}")]
    Truncated(usize),
    /// A version this implementation does not speak.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    /// An unknown kind byte.
    #[error("unknown envelope kind {0:#04x}")]
    UnknownKind(u8),
    /// A string field is not UTF-8.
    #[error("string field is not valid UTF-8")]
    InvalidUtf8,
    /// A SURB inside the envelope is malformed.
    #[error("malformed SURB in envelope")]
    MalformedSurb,
    /// An unknown mail transport.
    #[error("unknown mail transport {0}")]
    UnknownTransport(u8),
    /// Bytes left over after the last field.
    #[error("{0} trailing bytes after the envelope")]
    TrailingBytes(usize),
    /// More SURBs than the count byte can say.
    #[error("{0} SURBs exceed the maximum of {MAX_SURBS}")]
    TooManySurbs(usize),
    /// A field longer than its length prefix can say.
    #[error("field of {0} bytes is too long to encode")]
    FieldTooLong(usize),
}

/// How mail leaves the exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailTransport {
    /// SMTP to the recipients' MX (or a smarthost).
    Smtp = 1,
    /// An NNTP post to the listed newsgroups.
    Nntp = 2,
}

/// What a message asks for. `Debug` shows only the kind: the fields are user
/// content.
#[derive(Clone, PartialEq, Eq)]
pub enum Request {
    /// Send `data` straight back (diagnostics, latency probes).
    Echo {
        /// Bytes to echo.
        data: Vec<u8>,
    },
    /// Execute `calldata` on `target`, paying gas with a shielded-note proof.
    EthRequest {
        /// Chain the call is for.
        chain_id: u64,
        /// Contract called.
        target: [u8; 20],
        /// Call data.
        calldata: Vec<u8>,
        /// Encoded gas-payment proof.
        payment: Vec<u8>,
    },
    /// Broadcast a transaction the user signed.
    RawBroadcast {
        /// Chain the transaction is for.
        chain_id: u64,
        /// The signed, RLP-encoded transaction.
        raw_tx: Vec<u8>,
    },
    /// A read-only JSON-RPC call.
    RpcCall {
        /// Chain to query.
        chain_id: u64,
        /// The JSON-RPC request object.
        json: String,
    },
    /// An HTTP request made by the exit.
    Http {
        /// HTTP method.
        method: String,
        /// Absolute URL.
        url: String,
        /// Request headers.
        headers: Vec<(String, String)>,
        /// Request body.
        body: Vec<u8>,
    },
    /// Mail to deliver.
    Mail {
        /// SMTP or NNTP.
        transport: MailTransport,
        /// Recipient addresses, or newsgroups for NNTP.
        recipients: Vec<String>,
        /// The RFC 5322 message.
        message: Vec<u8>,
    },
    /// An answer travelling back through SURBs.
    Reply {
        /// 0 for success; otherwise an error class defined by the service.
        status: u8,
        /// The answer.
        data: Vec<u8>,
    },
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Request::Echo { .. } => "Echo",
            Request::EthRequest { .. } => "EthRequest",
            Request::RawBroadcast { .. } => "RawBroadcast",
            Request::RpcCall { .. } => "RpcCall",
            Request::Http { .. } => "Http",
            Request::Mail { .. } => "Mail",
            Request::Reply { .. } => "Reply",
        };
        write!(f, "Request::{name}(<redacted>)")
    }
}

impl Request {
    fn kind(&self) -> u8 {
        match self {
            Request::Echo { .. } => 0x01,
            Request::EthRequest { .. } => 0x02,
            Request::RawBroadcast { .. } => 0x03,
            Request::RpcCall { .. } => 0x04,
            Request::Http { .. } => 0x05,
            Request::Mail { .. } => 0x06,
            Request::Reply { .. } => 0x10,
        }
    }
}

/// A decoded envelope. `Debug` shows the request kind and the SURB count only.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Correlates a reply with its request.
    pub request_id: [u8; REQUEST_ID_LEN],
    /// Reply blocks the responder may use.
    pub surbs: Vec<Surb>,
    /// What is asked.
    pub request: Request,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("request", &self.request)
            .field("surbs", &self.surbs.len())
            .finish_non_exhaustive()
    }
}

impl Envelope {
    /// Encodes the envelope.
    pub fn encode(&self) -> Result<Vec<u8>, EnvelopeError> {
        if self.surbs.len() > MAX_SURBS {
            return Err(EnvelopeError::TooManySurbs(self.surbs.len()));
        }
        let mut w = Vec::with_capacity(19 + self.surbs.len() * SURB_LEN + 64);
        w.push(ENVELOPE_VERSION);
        w.push(self.request.kind());
        w.extend_from_slice(&self.request_id);
        w.push(self.surbs.len() as u8);
        for s in &self.surbs {
            w.extend_from_slice(&s.encode());
        }
        match &self.request {
            Request::Echo { data } => put_bytes(&mut w, data)?,
            Request::EthRequest { chain_id, target, calldata, payment } => {
                w.extend_from_slice(&chain_id.to_be_bytes());
                w.extend_from_slice(target);
                put_bytes(&mut w, calldata)?;
                put_bytes(&mut w, payment)?;
            }
            Request::RawBroadcast { chain_id, raw_tx } => {
                w.extend_from_slice(&chain_id.to_be_bytes());
                put_bytes(&mut w, raw_tx)?;
            }
            Request::RpcCall { chain_id, json } => {
                w.extend_from_slice(&chain_id.to_be_bytes());
                put_bytes(&mut w, json.as_bytes())?;
            }
            Request::Http { method, url, headers, body } => {
                put_bytes(&mut w, method.as_bytes())?;
                put_bytes(&mut w, url.as_bytes())?;
                put_count(&mut w, headers.len())?;
                for (name, value) in headers {
                    put_bytes(&mut w, name.as_bytes())?;
                    put_bytes(&mut w, value.as_bytes())?;
                }
                put_bytes(&mut w, body)?;
            }
            Request::Mail { transport, recipients, message } => {
                w.push(*transport as u8);
                put_count(&mut w, recipients.len())?;
                for r in recipients {
                    put_bytes(&mut w, r.as_bytes())?;
                }
                put_bytes(&mut w, message)?;
            }
            Request::Reply { status, data } => {
                w.push(*status);
                put_bytes(&mut w, data)?;
            }
        }
        Ok(w)
    }

    /// Decodes an envelope.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(version));
        }
        let kind = r.u8()?;
        let mut request_id = [0u8; REQUEST_ID_LEN];
        request_id.copy_from_slice(r.take(REQUEST_ID_LEN)?);
        let count = usize::from(r.u8()?);
        let mut surbs = Vec::with_capacity(count.min(r.remaining() / SURB_LEN));
        for _ in 0..count {
            surbs.push(Surb::decode(r.take(SURB_LEN)?).map_err(|_| EnvelopeError::MalformedSurb)?);
        }
        let request = match kind {
            0x01 => Request::Echo { data: r.bytes()?.to_vec() },
            0x02 => {
                let chain_id = r.u64()?;
                let mut target = [0u8; 20];
                target.copy_from_slice(r.take(20)?);
                Request::EthRequest { chain_id, target, calldata: r.bytes()?.to_vec(), payment: r.bytes()?.to_vec() }
            }
            0x03 => Request::RawBroadcast { chain_id: r.u64()?, raw_tx: r.bytes()?.to_vec() },
            0x04 => Request::RpcCall { chain_id: r.u64()?, json: r.string()? },
            0x05 => {
                let method = r.string()?;
                let url = r.string()?;
                let n = r.count()?;
                let mut headers = Vec::with_capacity(n.min(r.remaining() / 8));
                for _ in 0..n {
                    headers.push((r.string()?, r.string()?));
                }
                Request::Http { method, url, headers, body: r.bytes()?.to_vec() }
            }
            0x06 => {
                let transport = match r.u8()? {
                    1 => MailTransport::Smtp,
                    2 => MailTransport::Nntp,
                    t => return Err(EnvelopeError::UnknownTransport(t)),
                };
                let n = r.count()?;
                let mut recipients = Vec::with_capacity(n.min(r.remaining() / 4));
                for _ in 0..n {
                    recipients.push(r.string()?);
                }
                Request::Mail { transport, recipients, message: r.bytes()?.to_vec() }
            }
            0x10 => Request::Reply { status: r.u8()?, data: r.bytes()?.to_vec() },
            k => return Err(EnvelopeError::UnknownKind(k)),
        };
        if r.remaining() != 0 {
            return Err(EnvelopeError::TrailingBytes(r.remaining()));
        }
        Ok(Envelope { request_id, surbs, request })
    }
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) -> Result<(), EnvelopeError> {
    let len = u32::try_from(b.len()).map_err(|_| EnvelopeError::FieldTooLong(b.len()))?;
    w.extend_from_slice(&len.to_be_bytes());
    w.extend_from_slice(b);
    Ok(())
}

fn put_count(w: &mut Vec<u8>, n: usize) -> Result<(), EnvelopeError> {
    let n16 = u16::try_from(n).map_err(|_| EnvelopeError::FieldTooLong(n))?;
    w.extend_from_slice(&n16.to_be_bytes());
    Ok(())
}

impl From<Truncated> for EnvelopeError {
    fn from(t: Truncated) -> Self {
        EnvelopeError::Truncated(t.at)
    }
}

/// The envelope's own fields on top of the shared reader: counts (`u16`),
/// length-prefixed bytes (`u32`) and UTF-8 strings.
trait EnvelopeRead<'a> {
    fn count(&mut self) -> Result<usize, EnvelopeError>;
    fn bytes(&mut self) -> Result<&'a [u8], EnvelopeError>;
    fn string(&mut self) -> Result<String, EnvelopeError>;
}

impl<'a> EnvelopeRead<'a> for Reader<'a> {
    fn count(&mut self) -> Result<usize, EnvelopeError> {
        Ok(usize::from(self.u16()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], EnvelopeError> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?)
    }

    fn string(&mut self) -> Result<String, EnvelopeError> {
        let b = self.bytes()?;
        std::str::from_utf8(b).map(str::to_owned).map_err(|_| EnvelopeError::InvalidUtf8)
    }
}
