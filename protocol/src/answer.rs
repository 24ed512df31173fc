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
//!
//! An `EthRequest` answered `Ok` returns an [`EthReceipt`]: the relay
//! transaction as it was mined.
//!
//! ```text
//! tx hash (32) ‖ block u64 ‖ tx status u8 ‖ gas used u64 ‖ effective gas price u128
//!   ‖ call success u8 ‖ asset (20) ‖ fee u128 ‖ simulate µs u32 ‖ inclusion ms u32
//!   ‖ revert data (u32-len)
//! ```
//!
//! Any other status of an `EthRequest` returns an [`EthRefusal`]: why the
//! exit sent nothing (or, for [`EthRefusalCode::NoReceipt`], why it cannot say
//! yet what became of what it sent):
//!
//! ```text
//! code u8 ‖ message (u32-len, UTF-8) ‖ detail (u32-len)
//! ```
//!
//! `detail` is per code: the lowest fee the exit accepts (`u128`) for
//! [`EthRefusalCode::FeeTooLow`], the call's revert data for
//! [`EthRefusalCode::CallFails`], the transaction hash for
//! [`EthRefusalCode::NoReceipt`], empty otherwise.

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

/// The relay transaction of a paid call, as mined. `Debug` shows it all:
/// everything in it is public on chain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EthReceipt {
    /// The transaction's hash.
    pub tx_hash: [u8; 32],
    /// The block it was mined in.
    pub block_number: u64,
    /// Whether the transaction succeeded (a relay whose call failed still
    /// succeeds: the fee is paid and the `Relayed` event says so).
    pub tx_success: bool,
    /// Gas the transaction used.
    pub gas_used: u64,
    /// Price paid per gas, in wei.
    pub effective_gas_price: u128,
    /// The `Relayed` event's flag: whether the user's call succeeded.
    pub call_success: bool,
    /// The payment's asset (`[0; 20]` for ETH).
    pub asset: [u8; 20],
    /// The fee the exit was paid (the spend's public value).
    pub fee: u128,
    /// How long the exit's simulation took, in microseconds.
    pub simulate_us: u32,
    /// From sending the transaction to its receipt, in milliseconds.
    pub inclusion_ms: u32,
    /// The call's revert data when it failed (from the exit's simulation).
    pub revert_data: Vec<u8>,
}

/// Why an [`EthReceipt`] or [`EthRefusal`] does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EthAnswerError {
    /// The input ends inside a field.
    #[error("Ethereum answer truncated at byte {0}")]
    Truncated(usize),
    /// Bytes after the last field.
    #[error("{0} trailing bytes after the Ethereum answer")]
    TrailingBytes(usize),
    /// A flag byte other than 0 or 1.
    #[error("flag byte {0} is neither 0 nor 1")]
    BadFlag(u8),
    /// An unknown refusal code.
    #[error("unknown refusal code {0}")]
    UnknownCode(u8),
    /// The message is not UTF-8.
    #[error("the refusal message is not valid UTF-8")]
    InvalidUtf8,
    /// A field longer than a `u32` length says.
    #[error("a field of {0} bytes is too long to encode")]
    FieldTooLong(usize),
}

impl From<Truncated> for EthAnswerError {
    fn from(t: Truncated) -> Self {
        EthAnswerError::Truncated(t.at)
    }
}

fn put_long(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), EthAnswerError> {
    let len = u32::try_from(bytes.len()).map_err(|_| EthAnswerError::FieldTooLong(bytes.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn flag(r: &mut Reader<'_>) -> Result<bool, EthAnswerError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(EthAnswerError::BadFlag(b)),
    }
}

fn u128_of(r: &mut Reader<'_>) -> Result<u128, EthAnswerError> {
    Ok(u128::from_be_bytes(r.array()?))
}

impl EthReceipt {
    /// Encodes the receipt.
    pub fn encode(&self) -> Result<Vec<u8>, EthAnswerError> {
        let mut out = Vec::with_capacity(32 + 8 + 1 + 8 + 16 + 1 + 20 + 16 + 8 + 4 + self.revert_data.len());
        out.extend_from_slice(&self.tx_hash);
        out.extend_from_slice(&self.block_number.to_be_bytes());
        out.push(u8::from(self.tx_success));
        out.extend_from_slice(&self.gas_used.to_be_bytes());
        out.extend_from_slice(&self.effective_gas_price.to_be_bytes());
        out.push(u8::from(self.call_success));
        out.extend_from_slice(&self.asset);
        out.extend_from_slice(&self.fee.to_be_bytes());
        out.extend_from_slice(&self.simulate_us.to_be_bytes());
        out.extend_from_slice(&self.inclusion_ms.to_be_bytes());
        put_long(&mut out, &self.revert_data)?;
        Ok(out)
    }

    /// Decodes a receipt; refuses trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, EthAnswerError> {
        let mut r = Reader::new(bytes);
        let receipt = EthReceipt {
            tx_hash: r.array()?,
            block_number: u64::from_be_bytes(r.array()?),
            tx_success: flag(&mut r)?,
            gas_used: u64::from_be_bytes(r.array()?),
            effective_gas_price: u128_of(&mut r)?,
            call_success: flag(&mut r)?,
            asset: r.array()?,
            fee: u128_of(&mut r)?,
            simulate_us: u32::from_be_bytes(r.array()?),
            inclusion_ms: u32::from_be_bytes(r.array()?),
            revert_data: {
                let len = r.u32()? as usize;
                r.take(len)?.to_vec()
            },
        };
        match r.remaining() {
            0 => Ok(receipt),
            n => Err(EthAnswerError::TrailingBytes(n)),
        }
    }
}

/// Why an exit refused a paid call, in the order it checks (docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EthRefusalCode {
    /// The request is for a chain this exit does not serve.
    WrongChain = 1,
    /// A public input is not below the scalar field modulus, or the proof
    /// does not decode.
    Malformed = 2,
    /// The proof names another recipient than this exit's wallet.
    WrongRecipient = 3,
    /// The execution hash is not this call's (chain, pool, target, gas, data).
    WrongExecution = 4,
    /// The pool has never had this root.
    UnknownRoot = 5,
    /// The note was already spent on chain.
    NullifierSpent = 6,
    /// This exit is already relaying a spend of this note (another request).
    NullifierPending = 7,
    /// The proof does not verify.
    BadProof = 8,
    /// The payment is in an asset this exit does not take, or one it cannot
    /// price yet (tokens wait for the price oracle).
    AssetNotAccepted = 9,
    /// The call's gas is above this exit's cap.
    GasAboveCap = 10,
    /// The simulated relay transaction reverts.
    SimulationReverted = 11,
    /// The simulated call fails and the request asked for success only.
    CallFails = 12,
    /// The fee does not cover the simulated cost with the exit's margin.
    FeeTooLow = 13,
    /// The exit's upstream node failed (nothing was sent).
    Upstream = 14,
    /// The transaction was sent but no receipt came within the exit's bound;
    /// the detail is its hash.
    NoReceipt = 15,
    /// The exit is at its limit of paid calls in flight.
    Busy = 16,
    /// The payment is in a token the exit accepts but has no fresh price for
    /// (fewer than its threshold of trusted oracles quoted it recently).
    NoPrice = 17,
    /// The request's deadline has passed, or is too near for the exit to get
    /// the relay mined before it (`exit.eth_min_deadline_secs`); the detail is
    /// the earliest deadline accepted now (Unix seconds, 8 bytes big-endian).
    Expired = 18,
}

impl EthRefusalCode {
    /// Every code.
    pub const ALL: [EthRefusalCode; 18] = [
        EthRefusalCode::WrongChain,
        EthRefusalCode::Malformed,
        EthRefusalCode::WrongRecipient,
        EthRefusalCode::WrongExecution,
        EthRefusalCode::UnknownRoot,
        EthRefusalCode::NullifierSpent,
        EthRefusalCode::NullifierPending,
        EthRefusalCode::BadProof,
        EthRefusalCode::AssetNotAccepted,
        EthRefusalCode::GasAboveCap,
        EthRefusalCode::SimulationReverted,
        EthRefusalCode::CallFails,
        EthRefusalCode::FeeTooLow,
        EthRefusalCode::Upstream,
        EthRefusalCode::NoReceipt,
        EthRefusalCode::Busy,
        EthRefusalCode::NoPrice,
        EthRefusalCode::Expired,
    ];

    /// The code of a wire byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        EthRefusalCode::ALL.into_iter().find(|c| *c as u8 == b)
    }

    /// A short label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            EthRefusalCode::WrongChain => "wrong_chain",
            EthRefusalCode::Malformed => "malformed",
            EthRefusalCode::WrongRecipient => "wrong_recipient",
            EthRefusalCode::WrongExecution => "wrong_execution",
            EthRefusalCode::UnknownRoot => "unknown_root",
            EthRefusalCode::NullifierSpent => "nullifier_spent",
            EthRefusalCode::NullifierPending => "nullifier_pending",
            EthRefusalCode::BadProof => "bad_proof",
            EthRefusalCode::AssetNotAccepted => "asset_not_accepted",
            EthRefusalCode::GasAboveCap => "gas_above_cap",
            EthRefusalCode::SimulationReverted => "simulation_reverted",
            EthRefusalCode::CallFails => "call_fails",
            EthRefusalCode::FeeTooLow => "fee_too_low",
            EthRefusalCode::Upstream => "upstream",
            EthRefusalCode::NoReceipt => "no_receipt",
            EthRefusalCode::Busy => "busy",
            EthRefusalCode::NoPrice => "no_price",
            EthRefusalCode::Expired => "expired",
        }
    }
}

/// An exit's refusal of a paid call (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EthRefusal {
    /// Why.
    pub code: EthRefusalCode,
    /// In words, for people (no user data).
    pub message: String,
    /// Per code (see the module docs).
    pub detail: Vec<u8>,
}

impl std::fmt::Display for EthRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.label(), self.message)
    }
}

impl EthRefusal {
    /// A refusal without detail.
    pub fn new(code: EthRefusalCode, message: impl Into<String>) -> Self {
        EthRefusal { code, message: message.into(), detail: Vec::new() }
    }

    /// The lowest fee accepted, for [`EthRefusalCode::FeeTooLow`].
    pub fn required_fee(&self) -> Option<u128> {
        match (self.code, <[u8; 16]>::try_from(self.detail.as_slice())) {
            (EthRefusalCode::FeeTooLow, Ok(b)) => Some(u128::from_be_bytes(b)),
            _ => None,
        }
    }

    /// Encodes the refusal.
    pub fn encode(&self) -> Result<Vec<u8>, EthAnswerError> {
        let mut out = Vec::with_capacity(9 + self.message.len() + self.detail.len());
        out.push(self.code as u8);
        put_long(&mut out, self.message.as_bytes())?;
        put_long(&mut out, &self.detail)?;
        Ok(out)
    }

    /// Decodes a refusal; refuses trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, EthAnswerError> {
        let mut r = Reader::new(bytes);
        let b = r.u8()?;
        let code = EthRefusalCode::from_byte(b).ok_or(EthAnswerError::UnknownCode(b))?;
        let len = r.u32()? as usize;
        let message = std::str::from_utf8(r.take(len)?).map_err(|_| EthAnswerError::InvalidUtf8)?.to_owned();
        let len = r.u32()? as usize;
        let detail = r.take(len)?.to_vec();
        match r.remaining() {
            0 => Ok(EthRefusal { code, message, detail }),
            n => Err(EthAnswerError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn eth_answers_round_trip_and_refuse_garbage() {
        let r = EthReceipt {
            tx_hash: [7; 32],
            block_number: 12,
            tx_success: true,
            gas_used: 300_123,
            effective_gas_price: 1_000_000_007,
            call_success: false,
            asset: [0; 20],
            fee: 10u128.pow(15),
            simulate_us: 4_321,
            inclusion_ms: 1_002,
            revert_data: vec![0xde, 0xad],
        };
        let bytes = r.encode().unwrap();
        assert_eq!(EthReceipt::decode(&bytes).unwrap(), r);
        for cut in [0, 31, 40, bytes.len() - 1] {
            assert!(matches!(EthReceipt::decode(&bytes[..cut]), Err(EthAnswerError::Truncated(_))));
        }
        let mut bad = bytes.clone();
        bad[40] = 2;
        assert_eq!(EthReceipt::decode(&bad), Err(EthAnswerError::BadFlag(2)));
        let mut longer = bytes;
        longer.push(0);
        assert_eq!(EthReceipt::decode(&longer), Err(EthAnswerError::TrailingBytes(1)));

        for code in EthRefusalCode::ALL {
            let refusal = EthRefusal { code, message: "why".into(), detail: vec![1, 2] };
            assert_eq!(EthRefusal::decode(&refusal.encode().unwrap()).unwrap(), refusal);
            assert_eq!(EthRefusalCode::from_byte(code as u8), Some(code));
        }
        let fee = EthRefusal {
            code: EthRefusalCode::FeeTooLow,
            message: "fee below margin".into(),
            detail: 5_000u128.to_be_bytes().to_vec(),
        };
        assert_eq!(fee.required_fee(), Some(5_000));
        assert_eq!(EthRefusal::new(EthRefusalCode::BadProof, "x").required_fee(), None);
        assert_eq!(EthRefusal::decode(&[0, 0, 0, 0, 0, 0, 0, 0, 0]), Err(EthAnswerError::UnknownCode(0)));
        assert_eq!(EthRefusal::decode(&[8, 0, 0, 0, 1, 0xff, 0, 0, 0, 0]), Err(EthAnswerError::InvalidUtf8));
        assert!(matches!(EthRefusal::decode(&[8, 0xff, 0xff, 0xff, 0xff]), Err(EthAnswerError::Truncated(_))));
    }

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
