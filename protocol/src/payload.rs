//! The payload envelope: what a reassembled message asks the exit to do
//! ([`Envelope`]), and what comes back ([`Reply`]).
//!
//! ## Layout
//!
//! ```text
//! request: version (1) = 4 ‖ kind (1) ‖ request id (16) ‖ SURB count (1) ‖ SURBs (count × 699) ‖ body
//! reply:   version (1) = 4 ‖ kind (1) = 0x10 ‖ request id (16) ‖ status (1) ‖ data
//! ```
//!
//! A request and a reply share their first two fields, so a reader tells them
//! apart by the kind byte; each decoder refuses the other's kind
//! ([`EnvelopeError::WrongDirection`]).
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
//! | 0x02 | EthRequest     | chain id u64 ‖ target (20) ‖ call gas u64 ‖ deadline u64 ‖ flags u8 ‖ calldata ‖ payment (480) |
//! | 0x03 | RawBroadcast   | chain id u64 ‖ signed raw transaction                           |
//! | 0x04 | RpcCall        | chain id u64 ‖ JSON-RPC request (string)                        |
//! | 0x05 | Http           | method ‖ url ‖ headers (list of name, value) ‖ body              |
//! | 0x06 | Mail           | transport u8 (1 SMTP, 2 NNTP) ‖ recipients (list) ‖ message     |
//! | 0x07 | SurbTopUp      | (empty: the envelope's SURBs are the point)                     |
//! | 0x10 | Reply          | status u8 ‖ data (see [`ReplyStatus`])                          |
//!
//! A `SurbTopUp` carries more SURBs for an answer the exit holds: its request
//! id is the id of the request being answered, and the exit adds its SURBs to
//! those the request carried (see [`ReplyStatus::MoreSurbs`]). It gets no
//! answer of its own.
//!
//! `payment` in an Ethereum request is a [`GasPayment`]: the spend proof and
//! its public inputs, fixed-size and range-checked on decoding
//! ([`crate::payment`]). `call gas` is the gas the call must be given; the
//! pool's execution hash binds it, and so does `deadline`, the Unix time (seconds)
//! after which the pool refuses the relay. `flags` bit 0 ([`ETH_ALLOW_FAILURE`]) says
//! the user accepts paying for a call that fails (the exit then relays a call
//! its simulation sees fail); without it the exit relays only a call its
//! simulation sees succeed. Other bits are reserved and must be zero.

use crate::payment::{GasPayment, PAYMENT_LEN, PaymentError};
use crate::sphinx::surb::{SURB_LEN, Surb};
use crate::wire::{Reader, Truncated};

/// Envelope format version.
pub const ENVELOPE_VERSION: u8 = 4;
/// `EthRequest` flag: relay the call even if the exit's simulation sees it fail.
pub const ETH_ALLOW_FAILURE: u8 = 0x01;
/// Kind byte of a [`Reply`].
pub const REPLY_KIND: u8 = 0x10;
/// Length of a request identifier.
pub const REQUEST_ID_LEN: usize = 16;
/// Most SURBs one envelope carries.
pub const MAX_SURBS: usize = 255;
/// Bytes of a [`Reply`] before its data: version, kind, request id, status
/// and the data's length.
pub const REPLY_HEADER_LEN: usize = 2 + REQUEST_ID_LEN + 1 + 4;

/// The JSON-RPC methods an [`Request::RpcCall`] may carry: reads of chain
/// state, fee estimates and simulations — nothing that signs, holds accounts
/// or changes a node. An exit offers a subset (`exit.rpc_methods`) and refuses
/// the rest; a client sends nothing else as `RpcCall`.
pub const RPC_READ_METHODS: [&str; 18] = [
    "eth_call",
    "eth_chainId",
    "eth_blockNumber",
    "eth_getBalance",
    "eth_getCode",
    "eth_getTransactionCount",
    "eth_getTransactionReceipt",
    "eth_getTransactionByHash",
    "eth_getBlockByNumber",
    "eth_getBlockByHash",
    "eth_getLogs",
    "eth_estimateGas",
    "eth_gasPrice",
    "eth_feeHistory",
    "eth_maxPriorityFeePerGas",
    "eth_simulateV1",
    "net_version",
    "web3_clientVersion",
];

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
    /// A reply where a request was expected, or the other way round.
    #[error("kind {0:#04x} travels the other way (a reply is not a request, nor a request a reply)")]
    WrongDirection(u8),
    /// A reply status this implementation does not know.
    #[error("unknown reply status {0}")]
    UnknownStatus(u8),
    /// The gas payment of an Ethereum request is malformed.
    #[error("gas payment: {0}")]
    Payment(#[from] PaymentError),
    /// An Ethereum request sets reserved flag bits.
    #[error("unknown Ethereum request flags {0:#04x}")]
    UnknownFlags(u8),
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
    /// Execute `calldata` on `target` with `call_gas` gas, paying the exit
    /// with a shielded-note proof (`NoxPool.relay`).
    EthRequest {
        /// Chain the call is for.
        chain_id: u64,
        /// Contract called.
        target: [u8; 20],
        /// Gas the call must be given (bound by the payment's execution hash).
        call_gas: u64,
        /// The last Unix time (seconds) at which the relay may be mined (bound
        /// by the payment's execution hash; the pool refuses it later).
        deadline: u64,
        /// Relay the call even if the exit's simulation sees it fail
        /// ([`ETH_ALLOW_FAILURE`]); by default only a succeeding call is relayed.
        allow_failure: bool,
        /// Call data.
        calldata: Vec<u8>,
        /// The gas payment.
        payment: Box<GasPayment>,
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
    /// More SURBs for the held answer to the envelope's request id.
    SurbTopUp,
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
            Request::SurbTopUp => "SurbTopUp",
        };
        write!(f, "Request::{name}(<redacted>)")
    }
}

impl Request {
    /// The request's kind.
    pub fn kind(&self) -> RequestKind {
        match self {
            Request::Echo { .. } => RequestKind::Echo,
            Request::EthRequest { .. } => RequestKind::EthRequest,
            Request::RawBroadcast { .. } => RequestKind::RawBroadcast,
            Request::RpcCall { .. } => RequestKind::RpcCall,
            Request::Http { .. } => RequestKind::Http,
            Request::Mail { .. } => RequestKind::Mail,
            Request::SurbTopUp => RequestKind::SurbTopUp,
        }
    }
}

/// What a request asks for, without its content: what an exit routes on and
/// what its metrics and fee policy name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestKind {
    /// [`Request::Echo`].
    Echo,
    /// [`Request::EthRequest`].
    EthRequest,
    /// [`Request::RawBroadcast`].
    RawBroadcast,
    /// [`Request::RpcCall`].
    RpcCall,
    /// [`Request::Http`].
    Http,
    /// [`Request::Mail`].
    Mail,
    /// [`Request::SurbTopUp`]: handled by the exit stage itself, never by a
    /// service.
    SurbTopUp,
}

impl RequestKind {
    /// Every kind.
    pub const ALL: [RequestKind; 7] = [
        RequestKind::Echo,
        RequestKind::EthRequest,
        RequestKind::RawBroadcast,
        RequestKind::RpcCall,
        RequestKind::Http,
        RequestKind::Mail,
        RequestKind::SurbTopUp,
    ];

    /// The kind byte on the wire.
    pub const fn byte(self) -> u8 {
        match self {
            RequestKind::Echo => 0x01,
            RequestKind::EthRequest => 0x02,
            RequestKind::RawBroadcast => 0x03,
            RequestKind::RpcCall => 0x04,
            RequestKind::Http => 0x05,
            RequestKind::Mail => 0x06,
            RequestKind::SurbTopUp => 0x07,
        }
    }

    /// The kind's bit in a service set (`1 << byte`): what an exit's
    /// descriptor lists as the services it offers.
    pub const fn bit(self) -> u16 {
        1 << self.byte()
    }

    /// The service set (a `u16` of [`RequestKind::bit`]s) of `kinds`.
    pub fn mask_of(kinds: &[RequestKind]) -> u16 {
        kinds.iter().fold(0, |m, k| m | k.bit())
    }

    /// The kinds in the service set `mask`.
    pub fn in_mask(mask: u16) -> Vec<RequestKind> {
        RequestKind::ALL.into_iter().filter(|k| *k != RequestKind::SurbTopUp && mask & k.bit() != 0).collect()
    }

    /// The kind of a wire byte; `None` for a byte no request kind has.
    pub fn from_byte(b: u8) -> Option<RequestKind> {
        RequestKind::ALL.into_iter().find(|k| k.byte() == b)
    }

    /// The kind's name (`echo`, `eth_request`, …), for metrics, logs and
    /// configuration.
    pub const fn name(self) -> &'static str {
        match self {
            RequestKind::Echo => "echo",
            RequestKind::EthRequest => "eth_request",
            RequestKind::RawBroadcast => "raw_broadcast",
            RequestKind::RpcCall => "rpc_call",
            RequestKind::Http => "http",
            RequestKind::Mail => "mail",
            RequestKind::SurbTopUp => "surb_top_up",
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
        w.push(self.request.kind().byte());
        w.extend_from_slice(&self.request_id);
        w.push(self.surbs.len() as u8);
        for s in &self.surbs {
            w.extend_from_slice(&s.encode());
        }
        match &self.request {
            Request::Echo { data } => put_bytes(&mut w, data)?,
            Request::EthRequest { chain_id, target, call_gas, deadline, allow_failure, calldata, payment } => {
                payment.check()?;
                w.extend_from_slice(&chain_id.to_be_bytes());
                w.extend_from_slice(target);
                w.extend_from_slice(&call_gas.to_be_bytes());
                w.extend_from_slice(&deadline.to_be_bytes());
                w.push(if *allow_failure { ETH_ALLOW_FAILURE } else { 0 });
                put_bytes(&mut w, calldata)?;
                w.extend_from_slice(&payment.encode());
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
            Request::SurbTopUp => {}
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
        let kind = match r.u8()? {
            REPLY_KIND => return Err(EnvelopeError::WrongDirection(REPLY_KIND)),
            k => RequestKind::from_byte(k).ok_or(EnvelopeError::UnknownKind(k))?,
        };
        let mut request_id = [0u8; REQUEST_ID_LEN];
        request_id.copy_from_slice(r.take(REQUEST_ID_LEN)?);
        let count = usize::from(r.u8()?);
        let mut surbs = Vec::with_capacity(count.min(r.remaining() / SURB_LEN));
        for _ in 0..count {
            surbs.push(Surb::decode(r.take(SURB_LEN)?).map_err(|_| EnvelopeError::MalformedSurb)?);
        }
        let request = match kind {
            RequestKind::Echo => Request::Echo { data: r.bytes()?.to_vec() },
            RequestKind::EthRequest => {
                let chain_id = r.u64()?;
                let mut target = [0u8; 20];
                target.copy_from_slice(r.take(20)?);
                let call_gas = r.u64()?;
                let deadline = r.u64()?;
                let flags = r.u8()?;
                if flags & !ETH_ALLOW_FAILURE != 0 {
                    return Err(EnvelopeError::UnknownFlags(flags));
                }
                let calldata = r.bytes()?.to_vec();
                let mut bytes = [0u8; PAYMENT_LEN];
                bytes.copy_from_slice(r.take(PAYMENT_LEN)?);
                let payment = Box::new(GasPayment::decode(&bytes)?);
                let allow_failure = flags & ETH_ALLOW_FAILURE != 0;
                Request::EthRequest { chain_id, target, call_gas, deadline, allow_failure, calldata, payment }
            }
            RequestKind::RawBroadcast => Request::RawBroadcast { chain_id: r.u64()?, raw_tx: r.bytes()?.to_vec() },
            RequestKind::RpcCall => Request::RpcCall { chain_id: r.u64()?, json: r.string()? },
            RequestKind::Http => {
                let method = r.string()?;
                let url = r.string()?;
                let n = r.count()?;
                let mut headers = Vec::with_capacity(n.min(r.remaining() / 8));
                for _ in 0..n {
                    headers.push((r.string()?, r.string()?));
                }
                Request::Http { method, url, headers, body: r.bytes()?.to_vec() }
            }
            RequestKind::Mail => {
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
            RequestKind::SurbTopUp => Request::SurbTopUp,
        };
        if r.remaining() != 0 {
            return Err(EnvelopeError::TrailingBytes(r.remaining()));
        }
        Ok(Envelope { request_id, surbs, request })
    }
}

/// How an exit's answer turned out. `Ok` carries the service's answer,
/// `MoreSurbs` the count of SURBs it needs, and every other status a UTF-8
/// explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyStatus {
    /// Served; the data is the answer.
    Ok = 0,
    /// This exit does not offer the requested kind.
    Unsupported = 1,
    /// The request is malformed for its service (a bad URL, a chain this exit
    /// does not serve, calldata a simulation refuses).
    BadRequest = 2,
    /// The exit declines: the payment is too small, invalid or spent, a
    /// policy forbids the target.
    Refused = 3,
    /// The service tried and failed (an upstream error).
    Failed = 4,
    /// The service did not answer before the request's deadline.
    Timeout = 5,
    /// The exit is at its limit for this service; try another exit or later.
    Busy = 6,
    /// The answer is ready but needs more SURBs than the request carried: the
    /// data is the number of further SURBs needed (`u16`, big-endian). The exit
    /// holds the answer for a bounded time; a [`Request::SurbTopUp`] with the
    /// same request id and at least that many SURBs releases it.
    MoreSurbs = 7,
}

impl ReplyStatus {
    /// The status of a wire byte.
    pub fn from_byte(b: u8) -> Result<Self, EnvelopeError> {
        Ok(match b {
            0 => ReplyStatus::Ok,
            1 => ReplyStatus::Unsupported,
            2 => ReplyStatus::BadRequest,
            3 => ReplyStatus::Refused,
            4 => ReplyStatus::Failed,
            5 => ReplyStatus::Timeout,
            6 => ReplyStatus::Busy,
            7 => ReplyStatus::MoreSurbs,
            other => return Err(EnvelopeError::UnknownStatus(other)),
        })
    }

    /// A short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            ReplyStatus::Ok => "ok",
            ReplyStatus::Unsupported => "unsupported",
            ReplyStatus::BadRequest => "bad_request",
            ReplyStatus::Refused => "refused",
            ReplyStatus::Failed => "failed",
            ReplyStatus::Timeout => "timeout",
            ReplyStatus::Busy => "busy",
            ReplyStatus::MoreSurbs => "more_surbs",
        }
    }
}

/// An exit's answer, travelling back through SURBs. `Debug` shows the status
/// and the data's length only.
#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    /// The request it answers.
    pub request_id: [u8; REQUEST_ID_LEN],
    /// How it turned out.
    pub status: ReplyStatus,
    /// The answer, or the explanation of a failure.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("data_len", &self.data.len())
            .finish_non_exhaustive()
    }
}

impl Reply {
    /// Encodes the reply.
    pub fn encode(&self) -> Result<Vec<u8>, EnvelopeError> {
        let mut w = Vec::with_capacity(self.encoded_len());
        w.push(ENVELOPE_VERSION);
        w.push(REPLY_KIND);
        w.extend_from_slice(&self.request_id);
        w.push(self.status as u8);
        put_bytes(&mut w, &self.data)?;
        Ok(w)
    }

    /// Decodes a reply; a request is [`EnvelopeError::WrongDirection`].
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(version));
        }
        match r.u8()? {
            REPLY_KIND => {}
            k if RequestKind::from_byte(k).is_some() => return Err(EnvelopeError::WrongDirection(k)),
            k => return Err(EnvelopeError::UnknownKind(k)),
        }
        let mut request_id = [0u8; REQUEST_ID_LEN];
        request_id.copy_from_slice(r.take(REQUEST_ID_LEN)?);
        let status = ReplyStatus::from_byte(r.u8()?)?;
        let data = r.bytes()?.to_vec();
        if r.remaining() != 0 {
            return Err(EnvelopeError::TrailingBytes(r.remaining()));
        }
        Ok(Reply { request_id, status, data })
    }

    /// A `MoreSurbs` reply asking for `needed` further SURBs.
    pub fn more_surbs(request_id: [u8; REQUEST_ID_LEN], needed: u16) -> Self {
        Reply { request_id, status: ReplyStatus::MoreSurbs, data: needed.to_be_bytes().to_vec() }
    }

    /// The SURB count a `MoreSurbs` reply asks for; `None` for any other
    /// reply or a malformed count.
    pub fn surbs_needed(&self) -> Option<u16> {
        match (self.status, self.data.as_slice()) {
            (ReplyStatus::MoreSurbs, [hi, lo]) => Some(u16::from_be_bytes([*hi, *lo])),
            _ => None,
        }
    }

    /// The length of [`Reply::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        REPLY_HEADER_LEN + self.data.len()
    }

    /// The largest `data` whose encoded reply fits in `bytes`.
    pub fn max_data_for(bytes: usize) -> usize {
        bytes.saturating_sub(REPLY_HEADER_LEN)
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
