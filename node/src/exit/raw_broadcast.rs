//! `RawBroadcast`: a transaction the user signed, broadcast by the exit with
//! `eth_sendRawTransaction`, so that the upstream (and the mempool) sees the
//! exit's address, not the user's.
//!
//! [`RawBroadcastService`] checks the transaction before it spends an
//! upstream request on it ([`check_transaction`]):
//!
//! * it decodes as one EIP-2718 transaction (alloy's `TxEnvelope`: legacy,
//!   EIP-2930, EIP-1559, EIP-4844 and EIP-7702), with no trailing bytes;
//! * its chain id is the request's; a legacy transaction without a chain id
//!   (pre-EIP-155) is refused, since it could be replayed on any chain;
//! * its signature recovers a sender, with a low `s` (EIP-2);
//! * and only then, the request's chain is the exit's (the upstream's
//!   `eth_chainId`), so a bad transaction costs no upstream request.
//!
//! Each of those failures is a `BadRequest`. Then the raw bytes, unchanged,
//! go upstream, and the answer is the upstream's JSON-RPC response object,
//! `{"jsonrpc":"2.0","id":1,"result":"0x<tx hash>"}` — or the JSON-RPC
//! error the upstream answered (`nonce too low`, `insufficient funds`, …),
//! `{"jsonrpc":"2.0","id":1,"error":{…}}`, so that the client's proxy gives
//! the wallet the same error a direct endpoint would. The `id` is always 1;
//! the client's proxy puts its caller's id in its place. A result that is not
//! the transaction's own hash is an upstream lying about what it did, and is
//! `Failed`, like any upstream that gives no JSON-RPC answer.
//!
//! Counted as `nox_events_total{kind="exit_raw_broadcast",outcome}`:
//! `request`, `ok`, `rpc_error`, `refused_bad_tx`, `refused_chain_id`,
//! `refused_too_large`, `upstream_failed`, `upstream_timeout`, `timeout`.
//! Nothing about a transaction (hash, sender, nonce) is logged.

use std::sync::Arc;
use std::time::Instant;

use alloy::consensus::{Transaction, TxEnvelope};
use alloy::eips::eip2718::Decodable2718;
use alloy_primitives::B256;
use futures::future::BoxFuture;
use nox_protocol::payload::Request;

use super::outcomes::ServiceOutcomes;
use super::service::{ExitService, RequestContext, ServiceError};
use super::upstream::{EthUpstream, UpstreamError};
use crate::metrics::Metrics;

/// The metrics kind.
pub const KIND: &str = "exit_raw_broadcast";

const OUTCOMES: [&str; 9] = [
    "request",
    "ok",
    "rpc_error",
    "refused_bad_tx",
    "refused_chain_id",
    "refused_too_large",
    "upstream_failed",
    "upstream_timeout",
    "timeout",
];

/// Why a signed transaction is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// Not one EIP-2718 transaction.
    #[error("not a signed transaction: the encoding does not decode")]
    Malformed,
    /// A legacy transaction without EIP-155 replay protection.
    #[error(
        "a legacy transaction without a chain id (pre-EIP-155) could be replayed on any chain; sign it with EIP-155"
    )]
    NoChainId,
    /// Signed for another chain than the one asked for.
    #[error("the transaction is signed for another chain than {expected}")]
    WrongChain {
        /// The chain it must be for.
        expected: u64,
    },
    /// The signature does not recover a sender (or has a high `s`).
    #[error("the transaction's signature does not recover a sender")]
    BadSignature,
}

/// Checks `raw` as a signed transaction for `chain_id` and returns its hash.
pub fn check_transaction(raw: &[u8], chain_id: u64) -> Result<B256, TxError> {
    let tx = TxEnvelope::decode_2718_exact(raw).map_err(|_| TxError::Malformed)?;
    match tx.chain_id() {
        None => return Err(TxError::NoChainId),
        Some(id) if id != chain_id => return Err(TxError::WrongChain { expected: chain_id }),
        Some(_) => {}
    }
    let signature = tx.signature();
    // EIP-2: a high-s twin of a valid signature is refused by every node.
    if signature.normalize_s().is_some() {
        return Err(TxError::BadSignature);
    }
    signature.recover_address_from_prehash(&tx.signature_hash()).map_err(|_| TxError::BadSignature)?;
    Ok(*tx.tx_hash())
}

/// Broadcasts user-signed transactions through the exit's upstream.
pub struct RawBroadcastService {
    inner: Arc<Inner>,
}

struct Inner {
    upstream: Arc<EthUpstream>,
    outcomes: ServiceOutcomes,
}

impl std::fmt::Debug for RawBroadcastService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawBroadcastService").finish_non_exhaustive()
    }
}

impl RawBroadcastService {
    /// A service broadcasting through `upstream`, counting into `metrics`.
    pub fn new(upstream: Arc<EthUpstream>, metrics: &Metrics) -> Self {
        RawBroadcastService {
            inner: Arc::new(Inner { upstream, outcomes: ServiceOutcomes::new(metrics, KIND, &OUTCOMES) }),
        }
    }

    /// The outcome counters (tests).
    pub fn outcomes(&self) -> &ServiceOutcomes {
        &self.inner.outcomes
    }
}

fn upstream_failure(e: UpstreamError) -> (&'static str, ServiceError) {
    (e.outcome(), e.into())
}

impl Inner {
    async fn serve(
        &self,
        chain_id: u64,
        raw_tx: &[u8],
        deadline: Instant,
    ) -> Result<Vec<u8>, (&'static str, ServiceError)> {
        // The transaction first: a bad one costs no upstream request.
        let hash = check_transaction(raw_tx, chain_id).map_err(|e| {
            let outcome = if matches!(e, TxError::WrongChain { .. }) { "refused_chain_id" } else { "refused_bad_tx" };
            (outcome, ServiceError::BadRequest(e.to_string()))
        })?;
        let exit_chain = self.upstream.chain_id(deadline).await.map_err(upstream_failure)?;
        if chain_id != exit_chain {
            let msg = format!("this exit serves chain {exit_chain}");
            return Err(("refused_chain_id", ServiceError::BadRequest(msg)));
        }
        let params = [format!("0x{}", hex::encode(raw_tx))];
        let answer =
            self.upstream.call("eth_sendRawTransaction", Some(&params), deadline).await.map_err(upstream_failure)?;
        if let Some(result) = answer.result() {
            if serde_json::from_str::<B256>(result.get()).ok() != Some(hash) {
                let msg = "the exit's Ethereum upstream answered another transaction hash".to_string();
                return Err(("upstream_failed", ServiceError::Failed(msg)));
            }
            self.outcomes.inc("ok");
        } else {
            self.outcomes.inc("rpc_error");
        }
        Ok(answer.to_response(ANSWER_ID))
    }
}

/// The `id` of every answer; the client's proxy replaces it.
const ANSWER_ID: &str = "1";

impl ExitService for RawBroadcastService {
    fn name(&self) -> &'static str {
        "raw_broadcast"
    }

    fn serve(&self, ctx: RequestContext, request: Request) -> BoxFuture<'static, Result<Vec<u8>, ServiceError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let Request::RawBroadcast { chain_id, raw_tx } = request else {
                return Err(ServiceError::Unsupported(request.kind().name()));
            };
            inner.outcomes.inc("request");
            inner.serve(chain_id, &raw_tx, ctx.deadline).await.map_err(|(outcome, e)| {
                inner.outcomes.inc(outcome);
                e
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::consensus::{SignableTransaction, TxEip1559, TxLegacy};
    use alloy::eips::eip2718::Encodable2718;
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;
    use alloy_primitives::{Address, Signature, TxKind, U256};

    const CHAIN: u64 = 31337;

    fn signer() -> PrivateKeySigner {
        "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80".parse().unwrap()
    }

    fn sign<T: SignableTransaction<Signature>>(tx: T) -> Vec<u8>
    where
        TxEnvelope: From<alloy::consensus::Signed<T>>,
    {
        let sig = signer().sign_hash_sync(&tx.signature_hash()).unwrap();
        TxEnvelope::from(tx.into_signed(sig)).encoded_2718()
    }

    fn eip1559(chain_id: u64) -> TxEip1559 {
        TxEip1559 {
            chain_id,
            nonce: 0,
            gas_limit: 21_000,
            max_fee_per_gas: 2_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
            to: TxKind::Call(Address::repeat_byte(0x11)),
            value: U256::from(1),
            ..Default::default()
        }
    }

    fn legacy(chain_id: Option<u64>) -> TxLegacy {
        TxLegacy {
            chain_id,
            nonce: 0,
            gas_price: 1_000_000_000,
            gas_limit: 21_000,
            to: TxKind::Call(Address::repeat_byte(0x11)),
            value: U256::from(1),
            ..Default::default()
        }
    }

    #[test]
    fn a_transaction_signed_for_the_exits_chain_passes_with_its_hash() {
        let raw = sign(eip1559(CHAIN));
        let decoded = TxEnvelope::decode_2718_exact(&raw).unwrap();
        assert_eq!(check_transaction(&raw, CHAIN), Ok(*decoded.tx_hash()));
        let raw = sign(legacy(Some(CHAIN)));
        assert!(check_transaction(&raw, CHAIN).is_ok(), "EIP-155 legacy");
    }

    #[test]
    fn another_chain_and_no_chain_are_refused() {
        assert_eq!(check_transaction(&sign(eip1559(1)), CHAIN), Err(TxError::WrongChain { expected: CHAIN }));
        assert_eq!(check_transaction(&sign(legacy(Some(1))), CHAIN), Err(TxError::WrongChain { expected: CHAIN }));
        assert_eq!(check_transaction(&sign(legacy(None)), CHAIN), Err(TxError::NoChainId));
    }

    #[test]
    fn garbage_and_trailing_bytes_are_malformed() {
        for raw in [vec![], vec![0x00], vec![0xff; 40], b"hello".to_vec(), vec![0x02, 0xc0]] {
            assert_eq!(check_transaction(&raw, CHAIN), Err(TxError::Malformed), "{raw:?}");
        }
        let mut raw = sign(eip1559(CHAIN));
        raw.push(0);
        assert_eq!(check_transaction(&raw, CHAIN), Err(TxError::Malformed));
        let raw = sign(eip1559(CHAIN));
        assert_eq!(check_transaction(&raw[..raw.len() - 1], CHAIN), Err(TxError::Malformed));
    }

    #[test]
    fn a_signature_that_does_not_recover_or_has_a_high_s_is_refused() {
        let tx = eip1559(CHAIN);
        let good = signer().sign_hash_sync(&tx.signature_hash()).unwrap();
        // r = 0 recovers no key.
        let zero_r = Signature::new(U256::ZERO, good.s(), good.v());
        let raw = TxEnvelope::from(tx.clone().into_signed(zero_r)).encoded_2718();
        assert_eq!(check_transaction(&raw, CHAIN), Err(TxError::BadSignature));
        // The high-s twin of a valid signature.
        let n = U256::from_str_radix("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141", 16).unwrap();
        let high_s = Signature::new(good.r(), n - good.s(), !good.v());
        let raw = TxEnvelope::from(tx.into_signed(high_s)).encoded_2718();
        assert_eq!(check_transaction(&raw, CHAIN), Err(TxError::BadSignature));
    }

    #[test]
    fn messages_do_not_repeat_the_transaction() {
        let msg = TxError::WrongChain { expected: CHAIN }.to_string();
        assert!(msg.contains("31337") && !msg.contains("0x"), "{msg}");
    }
}
