//! [`EthUpstream`]: the Ethereum JSON-RPC endpoint behind an exit's
//! Ethereum services (`exit.rpc_url`), shared by
//! [`super::raw_broadcast::RawBroadcastService`] and
//! [`super::rpc_call::RpcCallService`].
//!
//! It owns three things:
//!
//! * **The exit's chain id.** Asked once with `eth_chainId` (through
//!   [`nox_eth::EthClient`]) at start ([`EthUpstream::check_at_start`]); a
//!   chain other than `chain.chain_id` (when `[chain]` is configured) stops the
//!   start. An upstream that does not answer at start does not stop the node:
//!   the lookup is retried by the next request that needs it, and until it
//!   succeeds the services answer `Failed` ("unreachable").
//! * **One JSON-RPC call, bounded.** [`EthUpstream::call`] sends one request
//!   object with a fresh `id` (the caller's id never reaches the upstream, so
//!   client-chosen ids cannot link requests there), waits at most
//!   `exit.upstream_timeout_ms` and never past the request's deadline, reads
//!   the body chunk by chunk up to `exit.rpc_max_answer_bytes`, and requires a
//!   JSON-RPC 2.0 response object that answers that id with exactly one of
//!   `result` and `error`. The `result` or `error` is kept as raw JSON
//!   ([`RpcAnswer`]), byte for byte as the upstream wrote it.
//! * **Which failures are whose.** An upstream's JSON-RPC *error* answer is an
//!   answer ([`RpcAnswer`] with `error`): the service passes it to the client
//!   as the same JSON-RPC error, e.g. "nonce too low". Only a transport
//!   failure — no connection, a timeout, an HTTP error without a JSON-RPC
//!   body, something that is not a JSON-RPC response — is an
//!   [`UpstreamError`], which becomes `ServiceError::Failed` (an answer over
//!   the cap is `BadRequest`, since asking for less is the fix; the deadline
//!   is `Timeout`).
//!
//! Messages never name the endpoint (its URL may carry an API key) nor
//! repeat the request.
//!
//! The chain id goes through `EthClient`, NOX's one RPC client; the calls
//! themselves do not, because an exit relays answers rather than reading
//! them: it must hand back the upstream's `result` or `error` as raw JSON,
//! and stop reading a body at a byte cap, where `EthClient` (alloy) buffers
//! whole answers and turns error answers into typed errors.

use std::time::{Duration, Instant};

use nox_eth::{EthClient, EthError};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::OnceCell;

use super::capped_body::{BodyError, read_capped};
use super::service::ServiceError;

/// Settings of an exit's upstream.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `exit.rpc_url`.
    pub url: String,
    /// `exit.upstream_timeout_ms`: one upstream request at most.
    pub timeout: Duration,
    /// `exit.rpc_max_answer_bytes`: the longest answer body read.
    pub max_answer_bytes: usize,
    /// `chain.chain_id` when `[chain]` is configured: the chain the upstream
    /// must serve.
    pub expected_chain_id: Option<u64>,
}

/// Why the upstream gave no JSON-RPC answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// No connection, or it broke.
    #[error("the exit's Ethereum upstream is unreachable")]
    Unreachable,
    /// `exit.upstream_timeout_ms` passed.
    #[error("the exit's Ethereum upstream did not answer within {0} ms")]
    TimedOut(u128),
    /// The request's deadline passed first.
    #[error("no answer before the request's deadline")]
    Deadline,
    /// An HTTP error status without a JSON-RPC answer.
    #[error("the exit's Ethereum upstream answered HTTP {0}")]
    HttpStatus(u16),
    /// The answer is longer than `exit.rpc_max_answer_bytes`.
    #[error("{}", too_large_message(*.len, *.cap))]
    TooLarge {
        /// Its announced length, when the upstream said.
        len: Option<u64>,
        /// `exit.rpc_max_answer_bytes`.
        cap: usize,
    },
    /// Not a JSON-RPC 2.0 response to the request sent.
    #[error("the exit's Ethereum upstream answered something that is not a JSON-RPC response ({0})")]
    NotJsonRpc(&'static str),
    /// The upstream serves another chain than `chain.chain_id`.
    #[error("the exit's Ethereum upstream serves chain {actual}, but chain.chain_id is {expected}")]
    WrongChain {
        /// `chain.chain_id`.
        expected: u64,
        /// What `eth_chainId` says.
        actual: u64,
    },
}

fn too_large_message(len: Option<u64>, cap: usize) -> String {
    match len {
        Some(n) => format!("answer of {n} bytes exceeds exit.rpc_max_answer_bytes ({cap})"),
        None => format!("answer of more than {cap} bytes exceeds exit.rpc_max_answer_bytes ({cap})"),
    }
}

impl UpstreamError {
    /// The metrics outcome (`upstream_failed`, `upstream_timeout`,
    /// `refused_too_large`, `timeout`).
    pub fn outcome(&self) -> &'static str {
        match self {
            UpstreamError::TooLarge { .. } => "refused_too_large",
            UpstreamError::TimedOut(_) => "upstream_timeout",
            UpstreamError::Deadline => "timeout",
            _ => "upstream_failed",
        }
    }
}

impl From<UpstreamError> for ServiceError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::TooLarge { .. } => ServiceError::BadRequest(e.to_string()),
            UpstreamError::Deadline => ServiceError::Timeout,
            other => ServiceError::Failed(other.to_string()),
        }
    }
}

/// An upstream's JSON-RPC answer: its `result` or its `error`, raw.
#[derive(Debug, Clone)]
pub enum RpcAnswer {
    /// `result` (any JSON value, `null` included).
    Result(Box<RawValue>),
    /// `error` (an object with `code` and `message`).
    Error(Box<RawValue>),
}

impl RpcAnswer {
    /// The `result`, if the answer is not an error.
    pub fn result(&self) -> Option<&RawValue> {
        match self {
            RpcAnswer::Result(r) => Some(r),
            RpcAnswer::Error(_) => None,
        }
    }

    /// The JSON-RPC 2.0 response object answering `id` (JSON text: a
    /// number, a string or `null`), as bytes:
    /// `{"jsonrpc":"2.0","id":…,"result":…}` or `{"jsonrpc":"2.0","id":…,"error":…}`.
    pub fn to_response(&self, id: &str) -> Vec<u8> {
        let (field, value) = match self {
            RpcAnswer::Result(r) => ("result", r.get()),
            RpcAnswer::Error(e) => ("error", e.get()),
        };
        format!(r#"{{"jsonrpc":"2.0","id":{id},"{field}":{value}}}"#).into_bytes()
    }
}

#[derive(Serialize)]
struct Outgoing<'a, P: Serialize> {
    jsonrpc: &'static str,
    id: u64,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a P>,
}

/// The exit's Ethereum JSON-RPC endpoint.
pub struct EthUpstream {
    http: reqwest::Client,
    url: reqwest::Url,
    eth: EthClient,
    timeout: Duration,
    max_answer_bytes: usize,
    expected_chain_id: Option<u64>,
    chain_id: OnceCell<u64>,
}

impl std::fmt::Debug for EthUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthUpstream").field("chain_id", &self.chain_id.get()).finish_non_exhaustive()
    }
}

/// An upstream that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamSetupError {
    /// `exit.rpc_url` is not an http(s) URL.
    #[error("exit.rpc_url is not an http:// or https:// URL: {0}")]
    InvalidUrl(String),
    /// The HTTP client could not be built.
    #[error("the exit's upstream HTTP client: {0}")]
    Client(String),
}

impl EthUpstream {
    /// An upstream at `cfg.url`. Sends nothing.
    pub fn new(cfg: UpstreamConfig) -> Result<Self, UpstreamSetupError> {
        let url = reqwest::Url::parse(&cfg.url).map_err(|e| UpstreamSetupError::InvalidUrl(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(UpstreamSetupError::InvalidUrl("not an http:// or https:// URL with a host".into()));
        }
        let eth = EthClient::new(&cfg.url, cfg.timeout, None).map_err(|e| match e {
            EthError::InvalidUrl { reason, .. } => UpstreamSetupError::InvalidUrl(reason),
            other => UpstreamSetupError::Client(other.to_string()),
        })?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| UpstreamSetupError::Client(e.to_string()))?;
        Ok(EthUpstream {
            http,
            url,
            eth,
            timeout: cfg.timeout,
            max_answer_bytes: cfg.max_answer_bytes,
            expected_chain_id: cfg.expected_chain_id,
            chain_id: OnceCell::new(),
        })
    }

    /// The chain id, if it is known.
    pub fn known_chain_id(&self) -> Option<u64> {
        self.chain_id.get().copied()
    }

    /// The start-up lookup: `Ok(Some(id))` when the upstream answered with
    /// the expected chain, `Ok(None)` when it did not answer (the services
    /// retry later), [`UpstreamError::WrongChain`] when it serves another
    /// chain (the node must not start).
    pub async fn check_at_start(&self) -> Result<Option<u64>, UpstreamError> {
        match self.chain_id(Instant::now() + self.timeout).await {
            Ok(id) => Ok(Some(id)),
            Err(e @ UpstreamError::WrongChain { .. }) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// The exit's chain id: known after the first successful lookup; until
    /// then every call asks `eth_chainId` (one at a time).
    pub async fn chain_id(&self, deadline: Instant) -> Result<u64, UpstreamError> {
        if let Some(id) = self.chain_id.get() {
            return Ok(*id);
        }
        let lookup = async {
            let actual = self.eth.chain_id().await.map_err(|e| match e {
                EthError::Unreachable { .. } => UpstreamError::Unreachable,
                _ => UpstreamError::NotJsonRpc("eth_chainId did not answer a chain id"),
            })?;
            match self.expected_chain_id {
                Some(expected) if expected != actual => Err(UpstreamError::WrongChain { expected, actual }),
                _ => Ok(actual),
            }
        };
        self.chain_id.get_or_try_init(|| self.bounded(deadline, lookup)).await.copied()
    }

    /// Calls `method` with `params` (omitted when `None`) and returns the
    /// upstream's answer.
    pub async fn call<P: Serialize>(
        &self,
        method: &str,
        params: Option<&P>,
        deadline: Instant,
    ) -> Result<RpcAnswer, UpstreamError> {
        // Below 2^53, so that every JSON reader keeps it exact.
        let id = rand::random::<u64>() >> 11;
        let body = serde_json::to_vec(&Outgoing { jsonrpc: "2.0", id, method, params })
            .map_err(|_| UpstreamError::NotJsonRpc("the request does not serialise"))?;
        let cap = self.max_answer_bytes;
        let exchange = async {
            let response = self
                .http
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .map_err(|_| UpstreamError::Unreachable)?;
            let status = response.status();
            let body = read_capped(response, cap).await.map_err(|e| match e {
                BodyError::TooLarge { len, cap } => UpstreamError::TooLarge { len, cap },
                BodyError::Transport(_) => UpstreamError::Unreachable,
            })?;
            parse_answer(&body, id).map_err(|e| match e {
                // An HTTP error without a JSON-RPC body says more as its status.
                UpstreamError::NotJsonRpc(_) if !status.is_success() => UpstreamError::HttpStatus(status.as_u16()),
                other => other,
            })
        };
        self.bounded(deadline, exchange).await
    }

    /// Runs `work` for at most `exit.upstream_timeout_ms`, and not past `deadline`.
    async fn bounded<T>(
        &self,
        deadline: Instant,
        work: impl Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let (limit, elapsed) = if left < self.timeout {
            (left, UpstreamError::Deadline)
        } else {
            (self.timeout, UpstreamError::TimedOut(self.timeout.as_millis()))
        };
        tokio::time::timeout(limit, work).await.unwrap_or(Err(elapsed))
    }
}

/// Reads a JSON-RPC 2.0 response object answering `id`.
pub fn parse_answer(body: &[u8], id: u64) -> Result<RpcAnswer, UpstreamError> {
    let mut fields: std::collections::HashMap<String, Box<RawValue>> =
        serde_json::from_slice(body).map_err(|_| UpstreamError::NotJsonRpc("not a JSON object"))?;
    match fields.get("jsonrpc").map(|v| v.get()) {
        Some(r#""2.0""#) => {}
        _ => return Err(UpstreamError::NotJsonRpc("no \"jsonrpc\":\"2.0\"")),
    }
    let answers_id = fields.get("id").and_then(|v| serde_json::from_str::<u64>(v.get()).ok()) == Some(id);
    if !answers_id {
        return Err(UpstreamError::NotJsonRpc("it answers another request"));
    }
    match (fields.remove("result"), fields.remove("error")) {
        (Some(result), None) => Ok(RpcAnswer::Result(result)),
        (None, Some(error)) if error.get().starts_with('{') => Ok(RpcAnswer::Error(error)),
        (None, Some(_)) => Err(UpstreamError::NotJsonRpc("its error is not an object")),
        _ => Err(UpstreamError::NotJsonRpc("not exactly one of result and error")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_raw_and_checked_against_the_id_sent() {
        let a = parse_answer(br#"{"jsonrpc":"2.0","id":7,"result":"0x1"}"#, 7).unwrap();
        assert_eq!(a.result().map(RawValue::get), Some(r#""0x1""#));
        let a = parse_answer(br#"{"jsonrpc":"2.0","id":7,"result":null}"#, 7).unwrap();
        assert_eq!(a.result().map(RawValue::get), Some("null"), "a null result is a result");
        let a =
            parse_answer(br#"{"id":7,"jsonrpc":"2.0","error":{"code":-32000,"message":"nonce too low"}}"#, 7).unwrap();
        assert!(a.result().is_none());
        assert_eq!(
            String::from_utf8(a.to_response(r#""abc""#)).unwrap(),
            r#"{"jsonrpc":"2.0","id":"abc","error":{"code":-32000,"message":"nonce too low"}}"#
        );
        for (body, why) in [
            (&br#"{"jsonrpc":"2.0","id":8,"result":"0x1"}"#[..], "another request"),
            (br#"{"jsonrpc":"2.0","id":"7","result":"0x1"}"#, "another request"),
            (br#"{"jsonrpc":"1.0","id":7,"result":"0x1"}"#, "jsonrpc"),
            (br#"{"id":7,"result":"0x1"}"#, "jsonrpc"),
            (br#"{"jsonrpc":"2.0","id":7}"#, "exactly one"),
            (br#"{"jsonrpc":"2.0","id":7,"result":1,"error":{}}"#, "exactly one"),
            (br#"{"jsonrpc":"2.0","id":7,"error":"no"}"#, "not an object"),
            (br#"[{"jsonrpc":"2.0","id":7,"result":1}]"#, "JSON object"),
            (b"<html>", "JSON object"),
        ] {
            let e = parse_answer(body, 7).unwrap_err();
            assert!(e.to_string().contains(why), "{}: {e}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn errors_map_to_statuses_and_say_the_cap() {
        let e = UpstreamError::TooLarge { len: Some(100), cap: 10 };
        assert_eq!(e.to_string(), "answer of 100 bytes exceeds exit.rpc_max_answer_bytes (10)");
        assert!(matches!(ServiceError::from(e), ServiceError::BadRequest(_)));
        assert_eq!(ServiceError::from(UpstreamError::Deadline), ServiceError::Timeout);
        assert!(
            matches!(ServiceError::from(UpstreamError::Unreachable), ServiceError::Failed(m) if m.contains("unreachable"))
        );
    }

    #[tokio::test]
    async fn a_dead_upstream_is_unreachable_and_retried() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let up = EthUpstream::new(UpstreamConfig {
            url: format!("http://127.0.0.1:{port}"),
            timeout: Duration::from_secs(2),
            max_answer_bytes: 1 << 20,
            expected_chain_id: None,
        })
        .unwrap();
        assert_eq!(up.check_at_start().await, Ok(None));
        let deadline = Instant::now() + Duration::from_secs(2);
        assert_eq!(up.chain_id(deadline).await, Err(UpstreamError::Unreachable));
        assert_eq!(up.known_chain_id(), None, "a failed lookup is not remembered");
        let e = up.call::<()>("eth_blockNumber", None, deadline).await.unwrap_err();
        assert_eq!(e, UpstreamError::Unreachable);
        assert_eq!(e.outcome(), "upstream_failed");
    }

    #[test]
    fn urls_are_checked() {
        let cfg = |url: &str| UpstreamConfig {
            url: url.to_string(),
            timeout: Duration::from_secs(1),
            max_answer_bytes: 1,
            expected_chain_id: None,
        };
        assert!(matches!(EthUpstream::new(cfg("ftp://x/")), Err(UpstreamSetupError::InvalidUrl(_))));
        assert!(matches!(EthUpstream::new(cfg("not a url")), Err(UpstreamSetupError::InvalidUrl(_))));
    }
}
