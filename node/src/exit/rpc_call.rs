//! `RpcCall`: one read-only Ethereum JSON-RPC request, made by the exit on
//! the client's behalf, so the upstream learns the question but not who asked.
//!
//! [`RpcCallService`] owns the policy between a client's JSON-RPC request and
//! the exit's upstream ([`EthUpstream`]):
//!
//! * **One request object**, JSON-RPC 2.0, with an `id` (a number, a string
//!   or `null`), a `method` and optional `params` (an array or an object). A
//!   batch is refused: the client's proxy splits batches, so that each request
//!   travels (and is paid for, and bounded) on its own.
//! * **Read-only methods only**: [`RPC_METHODS`] is the built-in list; an exit
//!   may offer fewer (`exit.rpc_methods`), never others (the configuration
//!   refuses a name outside the list), so `eth_sendTransaction`, `eth_sign`,
//!   `personal_*`, `debug_*`, `admin_*` or a dev chain's `anvil_*` never reach
//!   the upstream. Transactions go through `RawBroadcast`.
//! * **The request's chain** must be the exit's (the upstream's `eth_chainId`).
//! * **Bounded work**: `eth_getLogs` must name a `blockHash`, or a block range
//!   of at most `exit.rpc_max_log_blocks` blocks. Tags are resolved against
//!   the upstream (`latest` and `pending` through `eth_blockNumber`, `safe`
//!   and `finalized` through their block's number, `earliest` is 0, a missing
//!   bound is `latest`), each in the direction that can only make the range
//!   look longer.
//! * **Bounded answers**: the upstream's answer is read up to
//!   `exit.rpc_max_answer_bytes` (refused beyond: `BadRequest`, "answer of N
//!   bytes exceeds exit.rpc_max_answer_bytes"); whether it fits the request's
//!   SURBs is the exit stage's check, not this service's, since SURB
//!   replenishment can grow the budget after the request arrives.
//!
//! The request is forwarded as `{"jsonrpc":"2.0","id":<fresh>,"method","params"}`
//! — nothing else of the client's object, and a fresh id — and the answer is
//! the upstream's JSON-RPC response object with the client's `id` put back:
//! `{"jsonrpc":"2.0","id":…,"result":…}` or, for an error the upstream
//! answered (an execution revert, a bad parameter), `{"jsonrpc":"2.0","id":…,
//! "error":…}` — so the client's proxy hands the wallet exactly what a direct
//! endpoint would have. A refusal by this service is a `BadRequest` whose
//! message the proxy turns into a JSON-RPC error; an upstream that gives no
//! JSON-RPC answer is `Failed`.
//!
//! Counted as `nox_events_total{kind="exit_rpc_call",outcome}`: `request`,
//! `ok`, `rpc_error`, `bad_request`, `refused_method`, `refused_chain_id`,
//! `refused_log_range`, `refused_too_large`, `upstream_failed`,
//! `upstream_timeout`, `timeout`. Methods are not labels: per-method counts
//! scraped often enough would time a low-traffic exit's individual requests.

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use nox_protocol::payload::Request;
use serde_json::Value;
use serde_json::value::RawValue;

use super::outcomes::ServiceOutcomes;
use super::service::{ExitService, RequestContext, ServiceError};
use super::upstream::{EthUpstream, UpstreamError};
use crate::metrics::Metrics;

/// Every method an exit can offer (the protocol's list of `RpcCall`
/// methods): the default of `exit.rpc_methods`.
pub use nox_protocol::payload::RPC_READ_METHODS as RPC_METHODS;

/// The metrics kind.
pub const KIND: &str = "exit_rpc_call";

const OUTCOMES: [&str; 11] = [
    "request",
    "ok",
    "rpc_error",
    "bad_request",
    "refused_method",
    "refused_chain_id",
    "refused_log_range",
    "refused_too_large",
    "upstream_failed",
    "upstream_timeout",
    "timeout",
];

/// A method name outside [`RPC_METHODS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a read-only method an exit can offer; exit.rpc_methods takes names from: {list}", list = RPC_METHODS.join(", "))]
pub struct UnknownMethod(pub String);

/// The built-in entry of `name`.
pub fn builtin_method(name: &str) -> Result<&'static str, UnknownMethod> {
    RPC_METHODS.iter().copied().find(|m| *m == name).ok_or_else(|| UnknownMethod(name.to_string()))
}

/// `RpcCall` settings.
#[derive(Debug, Clone)]
pub struct RpcCallConfig {
    /// The methods offered (`exit.rpc_methods`), each from [`RPC_METHODS`].
    pub methods: Vec<String>,
    /// The longest `eth_getLogs` block range (`exit.rpc_max_log_blocks`).
    pub max_log_blocks: u64,
}

impl Default for RpcCallConfig {
    fn default() -> Self {
        RpcCallConfig { methods: RPC_METHODS.iter().map(|m| m.to_string()).collect(), max_log_blocks: 10_000 }
    }
}

/// Why a request is refused before it reaches the upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcRefusal {
    /// Not a JSON-RPC 2.0 request object.
    #[error("not a JSON-RPC 2.0 request: {0}")]
    Malformed(&'static str),
    /// A batch.
    #[error("a JSON-RPC batch; send its requests one by one")]
    Batch,
    /// A method this exit does not offer.
    #[error("method not offered by this exit (read-only methods only; transactions go through RawBroadcast)")]
    Method,
    /// An `eth_getLogs` filter this service cannot bound.
    #[error("eth_getLogs: {0}")]
    LogFilter(&'static str),
    /// An `eth_getLogs` range that is too long.
    #[error("eth_getLogs over {blocks} blocks exceeds exit.rpc_max_log_blocks ({max}); ask for a shorter range")]
    LogRange {
        /// Blocks asked for.
        blocks: u64,
        /// `exit.rpc_max_log_blocks`.
        max: u64,
    },
}

impl RpcRefusal {
    fn outcome(&self) -> &'static str {
        match self {
            RpcRefusal::Malformed(_) | RpcRefusal::Batch | RpcRefusal::LogFilter(_) => "bad_request",
            RpcRefusal::Method => "refused_method",
            RpcRefusal::LogRange { .. } => "refused_log_range",
        }
    }
}

/// A parsed client request: its id (raw JSON), the built-in name of its
/// method, its params.
#[derive(Debug, Clone)]
pub struct RpcRequest {
    /// The client's id, given back in the answer.
    pub id: Box<RawValue>,
    /// The method (an entry of [`RPC_METHODS`]).
    pub method: &'static str,
    /// The params (`None` when absent).
    pub params: Option<Value>,
}

/// Parses `json` as one request object for one of `allowed`.
pub fn parse_request(json: &str, allowed: &[&'static str]) -> Result<RpcRequest, RpcRefusal> {
    let value: Value = serde_json::from_str(json).map_err(|_| RpcRefusal::Malformed("not JSON"))?;
    let mut object = match value {
        Value::Object(o) => o,
        Value::Array(_) => return Err(RpcRefusal::Batch),
        _ => return Err(RpcRefusal::Malformed("not an object")),
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(RpcRefusal::Malformed("\"jsonrpc\" is not \"2.0\""));
    }
    let id = match object.remove("id") {
        None => return Err(RpcRefusal::Malformed("no id (a notification gets no answer)")),
        Some(id @ (Value::Number(_) | Value::String(_) | Value::Null)) => {
            serde_json::value::to_raw_value(&id).map_err(|_| RpcRefusal::Malformed("id"))?
        }
        Some(_) => return Err(RpcRefusal::Malformed("id is not a number, a string or null")),
    };
    let name = object.get("method").and_then(Value::as_str).ok_or(RpcRefusal::Malformed("no method"))?;
    let method = allowed.iter().copied().find(|m| *m == name).ok_or(RpcRefusal::Method)?;
    let params = match object.remove("params") {
        None => None,
        Some(p @ (Value::Array(_) | Value::Object(_))) => Some(p),
        Some(_) => return Err(RpcRefusal::Malformed("params is not an array or an object")),
    };
    Ok(RpcRequest { id, method, params })
}

/// One end of an `eth_getLogs` range, before resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockBound {
    /// A block number.
    Number(u64),
    /// `earliest`.
    Earliest,
    /// `latest` (also a missing bound).
    Latest,
    /// `pending`.
    Pending,
    /// `safe`.
    Safe,
    /// `finalized`.
    Finalized,
}

/// Reads a filter's `fromBlock` or `toBlock`: a hex quantity or a tag;
/// missing or `null` is `latest`.
pub fn block_bound(v: Option<&Value>) -> Result<BlockBound, RpcRefusal> {
    let text = match v {
        None | Some(Value::Null) => return Ok(BlockBound::Latest),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(RpcRefusal::LogFilter("a block bound is not a string")),
    };
    Ok(match text {
        "earliest" => BlockBound::Earliest,
        "latest" => BlockBound::Latest,
        "pending" => BlockBound::Pending,
        "safe" => BlockBound::Safe,
        "finalized" => BlockBound::Finalized,
        _ => {
            let digits = text.strip_prefix("0x").ok_or(RpcRefusal::LogFilter("a block bound is not a quantity"))?;
            if digits.is_empty() || digits.len() > 16 {
                return Err(RpcRefusal::LogFilter("a block bound is not a quantity"));
            }
            BlockBound::Number(
                u64::from_str_radix(digits, 16)
                    .map_err(|_| RpcRefusal::LogFilter("a block bound is not a quantity"))?,
            )
        }
    })
}

/// An `eth_getLogs` filter's shape: by block hash (bounded by construction)
/// or by range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogScope {
    /// `blockHash`: one block.
    BlockHash,
    /// `fromBlock`..=`toBlock`.
    Range(BlockBound, BlockBound),
}

/// Reads the filter of `eth_getLogs`' params.
pub fn log_scope(params: Option<&Value>) -> Result<LogScope, RpcRefusal> {
    let filter = match params {
        Some(Value::Array(items)) if items.len() == 1 => &items[0],
        _ => return Err(RpcRefusal::LogFilter("params must be one filter object")),
    };
    let Value::Object(filter) = filter else {
        return Err(RpcRefusal::LogFilter("params must be one filter object"));
    };
    if filter.get("blockHash").is_some_and(|h| !h.is_null()) {
        return Ok(LogScope::BlockHash);
    }
    Ok(LogScope::Range(block_bound(filter.get("fromBlock"))?, block_bound(filter.get("toBlock"))?))
}

/// Blocks in `from..=to` (0 when `to < from`), refused beyond `max`.
pub fn check_log_range(from: u64, to: u64, max: u64) -> Result<u64, RpcRefusal> {
    let blocks = if to < from { 0 } else { (to - from).saturating_add(1) };
    if blocks > max { Err(RpcRefusal::LogRange { blocks, max }) } else { Ok(blocks) }
}

/// Answers `RpcCall` requests through the exit's upstream.
pub struct RpcCallService {
    inner: Arc<Inner>,
}

struct Inner {
    upstream: Arc<EthUpstream>,
    allowed: Vec<&'static str>,
    max_log_blocks: u64,
    outcomes: ServiceOutcomes,
}

impl std::fmt::Debug for RpcCallService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcCallService")
            .field("methods", &self.inner.allowed.len())
            .field("max_log_blocks", &self.inner.max_log_blocks)
            .finish_non_exhaustive()
    }
}

/// How a request failed, before it becomes a [`ServiceError`]: with the
/// outcome it is counted under.
struct Refusal {
    outcome: &'static str,
    error: ServiceError,
}

impl From<RpcRefusal> for Refusal {
    fn from(r: RpcRefusal) -> Self {
        Refusal { outcome: r.outcome(), error: ServiceError::BadRequest(r.to_string()) }
    }
}

impl From<UpstreamError> for Refusal {
    fn from(e: UpstreamError) -> Self {
        Refusal { outcome: e.outcome(), error: e.into() }
    }
}

impl RpcCallService {
    /// A service for `cfg.methods` (each must be in [`RPC_METHODS`]) through
    /// `upstream`, counting into `metrics`.
    pub fn new(upstream: Arc<EthUpstream>, cfg: &RpcCallConfig, metrics: &Metrics) -> Result<Self, UnknownMethod> {
        let mut allowed = Vec::with_capacity(cfg.methods.len());
        for name in &cfg.methods {
            let m = builtin_method(name)?;
            if !allowed.contains(&m) {
                allowed.push(m);
            }
        }
        let outcomes = ServiceOutcomes::new(metrics, KIND, &OUTCOMES);
        Ok(RpcCallService {
            inner: Arc::new(Inner { upstream, allowed, max_log_blocks: cfg.max_log_blocks, outcomes }),
        })
    }

    /// The outcome counters (tests).
    pub fn outcomes(&self) -> &ServiceOutcomes {
        &self.inner.outcomes
    }
}

impl Inner {
    async fn serve(&self, chain_id: u64, json: &str, deadline: Instant) -> Result<Vec<u8>, Refusal> {
        let request = parse_request(json, &self.allowed)?;
        let exit_chain = self.upstream.chain_id(deadline).await?;
        if chain_id != exit_chain {
            return Err(Refusal {
                outcome: "refused_chain_id",
                error: ServiceError::BadRequest(format!("this exit serves chain {exit_chain}")),
            });
        }
        if request.method == "eth_getLogs"
            && let LogScope::Range(from, to) = log_scope(request.params.as_ref())?
        {
            let mut latest = None;
            let from = self.resolve(from, false, &mut latest, deadline).await?;
            let to = self.resolve(to, true, &mut latest, deadline).await?;
            check_log_range(from, to, self.max_log_blocks)?;
        }
        let answer = self.upstream.call(request.method, request.params.as_ref(), deadline).await?;
        self.outcomes.inc(if answer.result().is_some() { "ok" } else { "rpc_error" });
        Ok(answer.to_response(request.id.get()))
    }

    /// The number of `bound`: as an upper end (`upper`) a tag may be taken
    /// higher than it is, as a lower end never, so a range is never
    /// underestimated. `latest` is asked at most once per request.
    async fn resolve(
        &self,
        bound: BlockBound,
        upper: bool,
        latest: &mut Option<u64>,
        deadline: Instant,
    ) -> Result<u64, Refusal> {
        let head = match bound {
            BlockBound::Number(n) => return Ok(n),
            BlockBound::Earliest => return Ok(0),
            BlockBound::Safe | BlockBound::Finalized if !upper => {
                let tag = if bound == BlockBound::Safe { "safe" } else { "finalized" };
                return self.tagged_block_number(tag, deadline).await;
            }
            // latest, pending, and safe/finalized as an upper end (never above latest).
            _ => match *latest {
                Some(n) => n,
                None => {
                    let n = self.block_number(deadline).await?;
                    *latest = Some(n);
                    n
                }
            },
        };
        Ok(if bound == BlockBound::Pending { head.saturating_add(1) } else { head })
    }

    async fn block_number(&self, deadline: Instant) -> Result<u64, Refusal> {
        let answer = self.upstream.call::<()>("eth_blockNumber", None, deadline).await?;
        quantity(answer.result()).ok_or_else(|| resolution_failed("eth_blockNumber"))
    }

    async fn tagged_block_number(&self, tag: &'static str, deadline: Instant) -> Result<u64, Refusal> {
        let params = serde_json::json!([tag, false]);
        let answer = self.upstream.call("eth_getBlockByNumber", Some(&params), deadline).await?;
        let block: Option<serde_json::Map<String, Value>> =
            answer.result().and_then(|r| serde_json::from_str(r.get()).ok());
        let number = block.as_ref().and_then(|b| b.get("number")).and_then(Value::as_str).and_then(parse_quantity);
        number.ok_or_else(|| resolution_failed("a block tag"))
    }
}

fn resolution_failed(what: &'static str) -> Refusal {
    Refusal {
        outcome: "upstream_failed",
        error: ServiceError::Failed(format!("eth_getLogs: the exit's Ethereum upstream did not resolve {what}")),
    }
}

fn quantity(raw: Option<&RawValue>) -> Option<u64> {
    let text: String = serde_json::from_str(raw?.get()).ok()?;
    parse_quantity(&text)
}

fn parse_quantity(text: &str) -> Option<u64> {
    u64::from_str_radix(text.strip_prefix("0x")?, 16).ok()
}

impl ExitService for RpcCallService {
    fn name(&self) -> &'static str {
        "rpc_call"
    }

    fn serve(&self, ctx: RequestContext, request: Request) -> BoxFuture<'static, Result<Vec<u8>, ServiceError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let Request::RpcCall { chain_id, json } = request else {
                return Err(ServiceError::Unsupported(request.kind().name()));
            };
            inner.outcomes.inc("request");
            inner.serve(chain_id, &json, ctx.deadline).await.map_err(|r| {
                inner.outcomes.inc(r.outcome);
                r.error
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_parse_with_their_id_and_allowed_method_only() {
        let r = parse_request(r#"{"jsonrpc":"2.0","id":42,"method":"eth_blockNumber"}"#, &RPC_METHODS).unwrap();
        assert_eq!((r.id.get(), r.method, r.params), ("42", "eth_blockNumber", None));
        let r = parse_request(
            r#"{"jsonrpc":"2.0","id":"a","method":"eth_getBalance","params":["0x00","latest"]}"#,
            &RPC_METHODS,
        )
        .unwrap();
        assert_eq!((r.id.get(), r.params), (r#""a""#, Some(json!(["0x00", "latest"]))));
        let r =
            parse_request(r#"{"jsonrpc":"2.0","id":null,"method":"eth_chainId","params":[]}"#, &RPC_METHODS).unwrap();
        assert_eq!(r.id.get(), "null");

        for method in [
            "eth_sendTransaction",
            "eth_sendRawTransaction",
            "eth_accounts",
            "eth_sign",
            "personal_sign",
            "debug_traceTransaction",
            "anvil_setBalance",
            "admin_peers",
            "eth_getStorageAt",
            "ETH_CALL",
        ] {
            let json = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":[]}}"#);
            assert_eq!(parse_request(&json, &RPC_METHODS).unwrap_err(), RpcRefusal::Method, "{method}");
        }
        // An exit that offers fewer methods refuses the others.
        let only = ["eth_chainId"];
        assert_eq!(
            parse_request(r#"{"jsonrpc":"2.0","id":1,"method":"eth_call"}"#, &only).unwrap_err(),
            RpcRefusal::Method
        );
    }

    #[test]
    fn malformed_requests_and_batches_are_refused() {
        for (json, want) in [
            ("not json", RpcRefusal::Malformed("not JSON")),
            ("[]", RpcRefusal::Batch),
            (r#"[{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}]"#, RpcRefusal::Batch),
            ("3", RpcRefusal::Malformed("not an object")),
            (r#"{"id":1,"method":"eth_chainId"}"#, RpcRefusal::Malformed("\"jsonrpc\" is not \"2.0\"")),
            (
                r#"{"jsonrpc":"2.0","method":"eth_chainId"}"#,
                RpcRefusal::Malformed("no id (a notification gets no answer)"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":{},"method":"eth_chainId"}"#,
                RpcRefusal::Malformed("id is not a number, a string or null"),
            ),
            (r#"{"jsonrpc":"2.0","id":1}"#, RpcRefusal::Malformed("no method")),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":"x"}"#,
                RpcRefusal::Malformed("params is not an array or an object"),
            ),
        ] {
            assert_eq!(parse_request(json, &RPC_METHODS).unwrap_err(), want, "{json}");
        }
    }

    #[test]
    fn the_builtin_list_is_the_only_source_of_names() {
        assert_eq!(builtin_method("eth_call"), Ok("eth_call"));
        let e = builtin_method("eth_sendTransaction").unwrap_err();
        assert!(e.to_string().contains("eth_sendTransaction") && e.to_string().contains("eth_chainId"), "{e}");
        assert!(!RPC_METHODS.contains(&"eth_getStorageAt"));
        assert_eq!(RpcCallConfig::default().methods.len(), RPC_METHODS.len());
    }

    #[test]
    fn log_filters_are_read_as_a_block_hash_or_a_range() {
        let scope = |p: Value| log_scope(Some(&p));
        assert_eq!(scope(json!([{"blockHash": "0x00"}])), Ok(LogScope::BlockHash));
        assert_eq!(scope(json!([{}])), Ok(LogScope::Range(BlockBound::Latest, BlockBound::Latest)));
        assert_eq!(
            scope(json!([{"fromBlock": "0x10", "toBlock": "finalized"}])),
            Ok(LogScope::Range(BlockBound::Number(16), BlockBound::Finalized))
        );
        assert_eq!(
            scope(json!([{"fromBlock": "earliest", "toBlock": "pending", "address": "0x00"}])),
            Ok(LogScope::Range(BlockBound::Earliest, BlockBound::Pending))
        );
        assert_eq!(
            scope(json!([{"fromBlock": "safe", "toBlock": null}])),
            Ok(LogScope::Range(BlockBound::Safe, BlockBound::Latest))
        );
        for bad in [
            json!([]),
            json!({}),
            json!([{}, {}]),
            json!(["0x1"]),
            json!([{"fromBlock": 5}]),
            json!([{"fromBlock": "12"}]),
            json!([{"fromBlock": "0x"}]),
            json!([{"toBlock": "0xzz"}]),
            json!([{"toBlock": "0x10000000000000000"}]),
            json!([{"toBlock": "newest"}]),
        ] {
            assert!(matches!(scope(bad.clone()), Err(RpcRefusal::LogFilter(_))), "{bad}");
        }
        assert!(log_scope(None).is_err());
    }

    #[test]
    fn log_ranges_are_bounded() {
        assert_eq!(check_log_range(0, 9_999, 10_000), Ok(10_000));
        assert_eq!(check_log_range(5, 5, 1), Ok(1));
        assert_eq!(check_log_range(10, 5, 1), Ok(0), "an empty range costs nothing");
        assert_eq!(check_log_range(0, 10_000, 10_000), Err(RpcRefusal::LogRange { blocks: 10_001, max: 10_000 }));
        assert_eq!(check_log_range(0, u64::MAX, 10), Err(RpcRefusal::LogRange { blocks: u64::MAX, max: 10 }));
        let msg = RpcRefusal::LogRange { blocks: 10_001, max: 10_000 }.to_string();
        assert!(msg.contains("exit.rpc_max_log_blocks (10000)"), "{msg}");
    }
}
