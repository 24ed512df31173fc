//! [`EthClient`]: the one Ethereum JSON-RPC client of NOX.
//!
//! One HTTP(S) endpoint with a per-request timeout, optionally a local wallet
//! that signs transactions. Every failure is an [`EthError`] that names the
//! endpoint and the request, and tells a transport failure (the endpoint did
//! not answer: [`EthError::Unreachable`]) from an error answer
//! ([`EthError::Failed`]) — a caller that retries with a smaller request (a
//! log range, say) needs the difference. A reverted transaction, at the gas
//! estimate or on chain, is [`EthError::Reverted`] with the revert decoded by
//! the caller's decoder ([`crate::revert::describe_revert`] by default).
//!
//! [`check_transport`] is the one rule for which endpoints may be trusted
//! with a plain connection: TLS (`https://`) everywhere, plain `http://` only
//! to a loopback host (a devnet, or a local node of one's own).
//! [`EthClient::with_label`] gives an endpoint a name (`RPC endpoint #1`)
//! that errors carry instead of its URL, which may hold an API key.

use std::time::Duration;

use alloy::eips::BlockId;
use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{BlockNumberOrTag, Filter, Log, TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::http::reqwest;
use alloy::transports::{RpcError, TransportErrorKind};
use alloy_sol_types::SolCall;

use crate::revert::describe_revert;

/// How long a sent transaction may take to be mined by default.
pub const RECEIPT_TIMEOUT: Duration = Duration::from_secs(180);
const RECEIPT_POLL: Duration = Duration::from_millis(200);

/// What went wrong talking to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EthError {
    /// The endpoint URL does not parse, or is not http(s).
    #[error("chain.rpc_url `{url}` is not a URL: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why.
        reason: String,
    },
    /// A plain `http://` endpoint on a host that is not loopback: its answers
    /// could be rewritten by anyone on the path.
    #[error(
        "plain http:// to `{host}` is not encrypted, so anyone on the path could rewrite its answers; \
         use https:// (plain http:// is allowed only to a loopback host: 127.0.0.0/8, ::1, localhost)"
    )]
    Insecure {
        /// The host named by the URL (not the whole URL, which may carry a key).
        host: String,
    },
    /// The endpoint did not answer (refused, unreachable, timed out, not an
    /// RPC endpoint).
    #[error("cannot reach the RPC endpoint at {url}: {reason}")]
    Unreachable {
        /// The endpoint.
        url: String,
        /// What the transport said.
        reason: String,
    },
    /// The endpoint answered with an error, or with something that does not decode.
    #[error("the RPC endpoint at {url} failed {request}: {reason}")]
    Failed {
        /// The endpoint.
        url: String,
        /// The request, e.g. `eth_call NoxRegistry.getNode(address)`.
        request: String,
        /// The error.
        reason: String,
    },
    /// The endpoint answered a call with bytes that do not decode as its return type.
    #[error("the RPC endpoint at {url} answered {request} with data that does not decode: {reason}")]
    Undecodable {
        /// The endpoint.
        url: String,
        /// The request.
        request: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// The endpoint serves another chain.
    #[error(
        "the RPC endpoint reports chain id {actual}, but chain.chain_id is {expected}; \
         check that chain.rpc_url points at the intended network"
    )]
    WrongChain {
        /// The configured chain id.
        expected: u64,
        /// What `eth_chainId` returned.
        actual: u64,
    },
    /// A transaction (or its gas estimate) reverted.
    #[error("{call} reverted: {reason}")]
    Reverted {
        /// The contract call, e.g. `NoxRegistry.register`.
        call: &'static str,
        /// The decoded error with its fields, or the raw revert data.
        reason: String,
    },
    /// A sent transaction was not mined in time.
    #[error("{call} transaction {tx_hash} was not mined within {secs} s; it may still be")]
    ReceiptTimeout {
        /// The contract call.
        call: &'static str,
        /// The transaction.
        tx_hash: B256,
        /// The wait.
        secs: u64,
    },
    /// The wallet cannot pay for gas.
    #[error("wallet {sender} has {balance} wei, not enough ETH to pay for gas; send ETH to it")]
    NoGasFunds {
        /// The wallet.
        sender: Address,
        /// Its balance in wei.
        balance: U256,
    },
    /// A transaction was asked of a client without a wallet.
    #[error("this RPC client has no wallet to sign {call}")]
    NoWallet {
        /// The contract call.
        call: &'static str,
    },
}

impl EthError {
    /// Whether the endpoint answered (with an error) rather than not at all.
    pub fn is_error_answer(&self) -> bool {
        matches!(self, EthError::Failed { .. })
    }
}

/// Requires `url` to be an `https://` URL, or an `http://` URL whose host is
/// loopback (`127.0.0.0/8`, `::1`, `localhost`): the rule for endpoints whose
/// answers the caller trusts (the registry's). Sends nothing.
pub fn check_transport(url: &str) -> Result<(), EthError> {
    let invalid = |reason: &str| EthError::InvalidUrl { url: url.to_string(), reason: reason.to_string() };
    let parsed = url.parse::<reqwest::Url>().map_err(|e| invalid(&e.to_string()))?;
    let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| invalid("no host"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(host) => Ok(()),
        "http" => Err(EthError::Insecure { host: host.to_string() }),
        _ => Err(invalid("not an http:// or https:// URL")),
    }
}

/// `localhost`, or an IP address in `127.0.0.0/8` or `::1` (as a URL writes
/// it: IPv6 in brackets).
fn is_loopback(host: &str) -> bool {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.eq_ignore_ascii_case("localhost") || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An Ethereum JSON-RPC endpoint, optionally with a wallet.
#[derive(Clone)]
pub struct EthClient {
    provider: DynProvider,
    url: String,
    /// What errors call the endpoint: its URL, or a label without it.
    label: String,
    timeout: Duration,
    sender: Option<Address>,
    receipt_timeout: Duration,
}

impl std::fmt::Debug for EthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthClient").field("url", &self.url).field("sender", &self.sender).finish_non_exhaustive()
    }
}

impl EthClient {
    /// A client of `url` whose requests time out after `timeout`; `wallet`,
    /// if given, signs transactions. Sends nothing.
    pub fn new(url: &str, timeout: Duration, wallet: Option<PrivateKeySigner>) -> Result<Self, EthError> {
        let invalid = |reason: String| EthError::InvalidUrl { url: url.to_string(), reason };
        let parsed = url.parse::<reqwest::Url>().map_err(|e| invalid(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid("not an http:// or https:// URL".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| EthError::Unreachable { url: url.to_string(), reason: error_chain(&e) })?;
        let sender = wallet.as_ref().map(|w| w.address());
        let provider = match wallet {
            Some(w) => ProviderBuilder::new().wallet(EthereumWallet::from(w)).connect_reqwest(http, parsed).erased(),
            None => ProviderBuilder::new().disable_recommended_fillers().connect_reqwest(http, parsed).erased(),
        };
        Ok(EthClient {
            provider,
            url: url.to_string(),
            label: url.to_string(),
            timeout,
            sender,
            receipt_timeout: RECEIPT_TIMEOUT,
        })
    }

    /// [`EthClient::new`], then a check that the endpoint serves `chain_id`.
    pub async fn connect(
        url: &str,
        chain_id: u64,
        timeout: Duration,
        wallet: Option<PrivateKeySigner>,
    ) -> Result<Self, EthError> {
        let client = EthClient::new(url, timeout, wallet)?;
        client.check_chain(chain_id).await?;
        Ok(client)
    }

    /// How long [`EthClient::transact`] waits for a receipt.
    pub fn with_receipt_timeout(mut self, timeout: Duration) -> Self {
        self.receipt_timeout = timeout;
        self
    }

    /// Names the endpoint `label` in errors instead of by its URL (which may
    /// carry an API key that must not reach a log).
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// What errors call the endpoint (its URL unless [`EthClient::with_label`]).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The wallet's address, if the client has one.
    pub fn sender(&self) -> Option<Address> {
        self.sender
    }

    /// The underlying alloy provider, for requests this type does not wrap.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// An [`EthError::Failed`] about `request`.
    pub fn failed(&self, request: impl Into<String>, reason: impl Into<String>) -> EthError {
        EthError::Failed { url: self.label.clone(), request: request.into(), reason: self.scrub(reason.into()) }
    }

    /// A transport failure is [`EthError::Unreachable`]; an error answer is
    /// [`EthError::Failed`].
    pub fn rpc_error(&self, request: &str, e: RpcError<TransportErrorKind>) -> EthError {
        match e {
            RpcError::Transport(kind) => {
                EthError::Unreachable { url: self.label.clone(), reason: self.transport_reason(&kind) }
            }
            RpcError::ErrorResp(p) => self.failed(request, format!("{} (code {})", p.message, p.code)),
            RpcError::NullResp => self.failed(request, "null answer"),
            other => self.failed(request, error_chain(&other)),
        }
    }

    fn transport_reason(&self, kind: &TransportErrorKind) -> String {
        if let TransportErrorKind::Custom(inner) = kind {
            if let Some(e) = inner.downcast_ref::<reqwest::Error>()
                && e.is_timeout()
            {
                return format!("no answer within {} s", self.timeout.as_secs_f64());
            }
            return self.scrub(error_chain(inner.as_ref()));
        }
        self.scrub(error_chain(kind))
    }

    /// `text` with the endpoint's URL (as given, and as the HTTP client
    /// writes it) replaced by its label, when it has one.
    fn scrub(&self, text: String) -> String {
        if self.label == self.url {
            return text;
        }
        let written = self.url.parse::<reqwest::Url>().map(|u| u.to_string()).unwrap_or_default();
        let mut text = text;
        for form in [written.as_str(), self.url.as_str()] {
            if !form.is_empty() {
                text = text.replace(form, &self.label);
            }
        }
        text
    }

    /// `eth_chainId`.
    pub async fn chain_id(&self) -> Result<u64, EthError> {
        self.provider.get_chain_id().await.map_err(|e| self.rpc_error("eth_chainId", e))
    }

    /// Requires the endpoint to serve `expected`.
    pub async fn check_chain(&self, expected: u64) -> Result<(), EthError> {
        let actual = self.chain_id().await?;
        if actual == expected { Ok(()) } else { Err(EthError::WrongChain { expected, actual }) }
    }

    /// `eth_blockNumber`.
    pub async fn block_number(&self) -> Result<u64, EthError> {
        self.provider.get_block_number().await.map_err(|e| self.rpc_error("eth_blockNumber", e))
    }

    /// The hash of block `n`; `None` if the endpoint has no such block.
    pub async fn block_hash(&self, n: u64) -> Result<Option<B256>, EthError> {
        let block =
            self.provider.get_block_by_number(n.into()).await.map_err(|e| self.rpc_error("eth_getBlockByNumber", e))?;
        Ok(block.map(|b| b.header.hash))
    }

    /// The latest block's timestamp.
    pub async fn latest_timestamp(&self) -> Result<u64, EthError> {
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .map_err(|e| self.rpc_error("eth_getBlockByNumber", e))?
            .ok_or_else(|| self.failed("eth_getBlockByNumber", "no latest block"))?;
        Ok(block.header.timestamp)
    }

    /// The code at `address`.
    pub async fn code_at(&self, address: Address) -> Result<Bytes, EthError> {
        self.provider.get_code_at(address).await.map_err(|e| self.rpc_error("eth_getCode", e))
    }

    /// The ETH balance of `address`, in wei.
    pub async fn balance(&self, address: Address) -> Result<U256, EthError> {
        self.provider.get_balance(address).await.map_err(|e| self.rpc_error("eth_getBalance", e))
    }

    /// `eth_getLogs`.
    pub async fn logs(&self, filter: &Filter) -> Result<Vec<Log>, EthError> {
        self.provider.get_logs(filter).await.map_err(|e| self.rpc_error("eth_getLogs", e))
    }

    /// `eth_call` of a view on `contract` at the latest block (`name` labels
    /// the contract in errors).
    pub async fn view<C: SolCall>(&self, name: &str, contract: Address, call: C) -> Result<C::Return, EthError> {
        self.view_at_block(name, contract, call, BlockId::latest()).await
    }

    /// `eth_call` of a view on `contract` at block `n`.
    pub async fn view_at<C: SolCall>(
        &self,
        name: &str,
        contract: Address,
        call: C,
        n: u64,
    ) -> Result<C::Return, EthError> {
        self.view_at_block(name, contract, call, BlockId::number(n)).await
    }

    async fn view_at_block<C: SolCall>(
        &self,
        name: &str,
        contract: Address,
        call: C,
        block: BlockId,
    ) -> Result<C::Return, EthError> {
        let request = format!("eth_call {name}.{}", C::SIGNATURE);
        let tx = TransactionRequest::default().with_to(contract).with_input(call.abi_encode());
        let out = self.provider.call(tx).block(block).await.map_err(|e| self.rpc_error(&request, e))?;
        C::abi_decode_returns(&out).map_err(|e| EthError::Undecodable {
            url: self.label.clone(),
            request,
            reason: format!("{} bytes: {e}", out.len()),
        })
    }

    /// Requires the wallet to hold some ETH.
    pub async fn require_gas(&self) -> Result<(), EthError> {
        let sender = self.sender.ok_or(EthError::NoWallet { call: "a transaction" })?;
        let balance = self.balance(sender).await?;
        if balance.is_zero() {
            return Err(EthError::NoGasFunds { sender, balance });
        }
        Ok(())
    }

    /// Sends `data` to `to` from the wallet, waits for the receipt and
    /// requires success. A revert, at the gas estimate or on chain, becomes
    /// [`EthError::Reverted`] with the revert data put in words by
    /// [`describe_revert`].
    pub async fn transact(
        &self,
        call: &'static str,
        to: Address,
        data: Vec<u8>,
    ) -> Result<TransactionReceipt, EthError> {
        self.transact_with_value(call, to, data, U256::ZERO).await
    }

    /// [`EthClient::transact`] sending `value` wei with the call.
    pub async fn transact_with_value(
        &self,
        call: &'static str,
        to: Address,
        data: Vec<u8>,
        value: U256,
    ) -> Result<TransactionReceipt, EthError> {
        let sender = self.sender.ok_or(EthError::NoWallet { call })?;
        let tx = TransactionRequest::default().with_from(sender).with_to(to).with_input(data).with_value(value);
        let pending = match self.provider.send_transaction(tx.clone()).await {
            Ok(pending) => pending,
            Err(RpcError::ErrorResp(p)) => {
                if let Some(data) = p.as_revert_data() {
                    return Err(EthError::Reverted { call, reason: describe_revert(&data) });
                }
                if p.message.contains("revert") {
                    return Err(EthError::Reverted { call, reason: format!("{} (no revert data)", p.message) });
                }
                if p.message.contains("insufficient funds") {
                    let balance = self.balance(sender).await?;
                    return Err(EthError::NoGasFunds { sender, balance });
                }
                return Err(self.failed(format!("sending {call}"), format!("{} (code {})", p.message, p.code)));
            }
            Err(e) => return Err(self.rpc_error(&format!("sending {call}"), e)),
        };
        let tx_hash = *pending.tx_hash();
        let receipt = self.wait_receipt(call, tx_hash).await?;
        if receipt.status() {
            return Ok(receipt);
        }
        // Mined but reverted: replay it to learn why.
        let reason = match self.provider.call(tx).await {
            Err(RpcError::ErrorResp(p)) => match p.as_revert_data() {
                Some(data) => describe_revert(&data),
                None => p.message.to_string(),
            },
            Err(e) => format!("and replaying it failed: {}", error_chain(&e)),
            Ok(_) => "on chain, but a replay on the latest state succeeds; the state changed in between".to_string(),
        };
        Err(EthError::Reverted { call, reason: format!("{reason} (transaction {tx_hash})") })
    }

    /// Polls for the receipt of `tx_hash` until the receipt timeout.
    pub async fn wait_receipt(&self, call: &'static str, tx_hash: B256) -> Result<TransactionReceipt, EthError> {
        let deadline = tokio::time::Instant::now() + self.receipt_timeout;
        loop {
            let receipt = self
                .provider
                .get_transaction_receipt(tx_hash)
                .await
                .map_err(|e| self.rpc_error("eth_getTransactionReceipt", e))?;
            if let Some(receipt) = receipt {
                return Ok(receipt);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EthError::ReceiptTimeout { call, tx_hash, secs: self.receipt_timeout.as_secs() });
            }
            tokio::time::sleep(RECEIPT_POLL).await;
        }
    }
}

/// `e` and its sources, joined with `: `, without repeats.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_before_anything_is_sent() {
        let t = Duration::from_secs(1);
        assert!(matches!(EthClient::new("not a url", t, None), Err(EthError::InvalidUrl { .. })));
        assert!(matches!(EthClient::new("ftp://127.0.0.1/", t, None), Err(EthError::InvalidUrl { .. })));
        assert!(EthClient::new("http://127.0.0.1:8545", t, None).is_ok());
    }

    #[test]
    fn plain_http_is_trusted_only_on_loopback() {
        for ok in [
            "https://rpc.example.org/v2/KEY",
            "https://10.0.0.1:8545",
            "http://127.0.0.1:8545",
            "http://127.3.2.1:8545",
            "http://localhost:8545",
            "http://LOCALHOST",
            "http://[::1]:8545",
        ] {
            assert_eq!(check_transport(ok), Ok(()), "{ok}");
        }
        for (bad, host) in [
            ("http://rpc.example.org/v2/KEY", "rpc.example.org"),
            ("http://10.0.0.1:8545", "10.0.0.1"),
            ("http://0.0.0.0:8545", "0.0.0.0"),
            ("http://[::2]:8545", "[::2]"),
            ("http://localhost.example.org", "localhost.example.org"),
            ("http://127.0.0.1.example.org", "127.0.0.1.example.org"),
        ] {
            let e = check_transport(bad).unwrap_err();
            assert_eq!(e, EthError::Insecure { host: host.into() }, "{bad}");
            assert!(!e.to_string().contains("KEY"), "the error leaves the URL's path out: {e}");
        }
        for bad in ["ws://127.0.0.1:8545", "wss://rpc.example.org", "not a url", "file:///tmp/x"] {
            assert!(matches!(check_transport(bad), Err(EthError::InvalidUrl { .. })), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_labelled_endpoint_is_named_by_its_label_in_errors() {
        let c = EthClient::new("http://127.0.0.1:9/SECRET", Duration::from_secs(2), None)
            .unwrap()
            .with_label("RPC endpoint #2");
        let e = c.block_number().await.unwrap_err();
        assert!(matches!(&e, EthError::Unreachable { url, .. } if url == "RPC endpoint #2"), "{e}");
        assert!(!e.to_string().contains("SECRET"), "{e}");
        assert_eq!(c.url(), "http://127.0.0.1:9/SECRET");
    }

    #[tokio::test]
    async fn a_dead_endpoint_is_unreachable_and_a_transaction_needs_a_wallet() {
        let c = EthClient::new("http://127.0.0.1:9", Duration::from_secs(2), None).unwrap();
        let e = c.chain_id().await.unwrap_err();
        assert!(matches!(&e, EthError::Unreachable { url, .. } if url == "http://127.0.0.1:9"), "{e}");
        assert!(!e.is_error_answer());
        let e = c.transact("X.y", Address::ZERO, vec![]).await.unwrap_err();
        assert_eq!(e, EthError::NoWallet { call: "X.y" });
    }
}
