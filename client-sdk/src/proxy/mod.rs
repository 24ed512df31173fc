//! The local Ethereum JSON-RPC proxy: a wallet or `cast` points its RPC URL
//! at it, and every request it forwards travels through the mixnet.
//!
//! ```text
//!  wallet ── POST / (one request or a batch) ──► handle_body
//!                                                  │ parse, bound (max_body_bytes → 413, max_batch)
//!                                                  ▼
//!                                  each request: methods::action
//!        eth_chainId / net_version ──► answered here
//!        wallet methods, others    ──► JSON-RPC error
//!        eth_sendRawTransaction    ──► Backend::call(RawBroadcast) ─┐  batch members
//!        read methods              ──► Backend::call(RpcCall)     ─┤  concurrently
//!                                                                   ▼
//!                        the exit's JSON-RPC response, the caller's id put back
//! ```
//!
//! **What owns what.** The proxy owns the HTTP framing and the JSON-RPC
//! rules ([`jsonrpc`]), and the method policy ([`methods`]); the mixnet is
//! behind [`Backend`] — [`Client`] in the binary, a fake in the tests. One
//! `Client` serves every request: one entry connection, one directory.
//!
//! **What the proxy spends and what it keeps.** Each forwarded request is a
//! mixnet request: the exit learns the question (a balance of an address, a
//! transaction), never who asked; the entry learns that this machine sends
//! requests, never what. The caller's JSON-RPC `id` never leaves the machine
//! (the exit sees id 1). Keys never enter the proxy: signing methods are
//! refused, and a wallet sends what it signed with `eth_sendRawTransaction`.
//! Anyone who can reach the listener spends the user's anonymity (and can
//! time the user's requests), so the binary listens on loopback only unless
//! told otherwise. Nothing identifying is logged: method names at debug level
//! at most, never parameters, addresses or transaction hashes.
//!
//! **Invariants.** Every request gets an answer with its id (an error when it
//! fails), except notifications, which get none; an HTTP answer always
//! carries a JSON-RPC body, except the `204` for a batch of notifications.

pub mod jsonrpc;
pub mod methods;
pub mod progress;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use nox_protocol::payload::{ReplyStatus, Request};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::client::{Client, ClientError, Progress};
use jsonrpc::{Call, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, RpcError};
use methods::Action;
use progress::WaitReport;

/// A progress callback for one request.
pub type ProgressSink = Box<dyn FnMut(Progress) + Send>;

/// What [`Backend::call`] returns.
pub type BackendFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, ClientError>> + Send + 'a>>;

/// Where the proxy's requests go: the mixnet through a [`Client`], or a test
/// double. The contract is [`Client::call_with_progress`]'s: the answer's
/// data when the exit answered `Ok`, [`ClientError::Status`] for any other
/// status, another [`ClientError`] when no answer came.
pub trait Backend: Send + Sync {
    /// Sends `request` and waits for its answer, reporting to `progress`.
    fn call(&self, request: Request, progress: ProgressSink) -> BackendFuture<'_>;
}

impl Backend for Client {
    fn call(&self, request: Request, progress: ProgressSink) -> BackendFuture<'_> {
        Box::pin(self.call_with_progress(request, progress))
    }
}

/// The proxy's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The chain every request names; `eth_chainId` and `net_version` are
    /// answered with it.
    pub chain_id: u64,
    /// Most requests in one batch.
    pub max_batch: usize,
    /// Longest request body, in bytes (longer: HTTP 413).
    pub max_body_bytes: usize,
    /// Print a line on stderr while a request waits longer than 2 s.
    pub progress: bool,
}

impl ProxyConfig {
    /// The defaults of `[proxy]` for requests naming `chain_id`.
    pub fn new(chain_id: u64) -> Self {
        ProxyConfig { chain_id, max_batch: 100, max_body_bytes: 1 << 20, progress: false }
    }
}

/// Serves the proxy on `listener` until `shutdown` completes, then stops
/// accepting and returns once the requests in flight are answered.
pub async fn serve(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    cfg: ProxyConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(backend, cfg)).with_graceful_shutdown(shutdown).await
}

/// The proxy's HTTP routes: `POST /`; anything else is answered with a
/// JSON-RPC error body (404 or 405).
pub fn router(backend: Arc<dyn Backend>, cfg: ProxyConfig) -> Router {
    let limit = cfg.max_body_bytes;
    let proxy = Arc::new(Proxy { backend, cfg });
    Router::new()
        .route("/", post(rpc).fallback(wrong_method))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(proxy)
}

async fn rpc(State(proxy): State<Arc<Proxy>>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let message = format!("request body exceeds proxy.max_body_bytes ({} bytes)", proxy.cfg.max_body_bytes);
            return json(
                StatusCode::PAYLOAD_TOO_LARGE,
                jsonrpc::failure(Value::Null, &RpcError::new(INVALID_REQUEST, message)),
            );
        }
        Err(rejection) => {
            let error = RpcError::new(INVALID_REQUEST, format!("unreadable request body: {}", rejection.body_text()));
            return json(rejection.status(), jsonrpc::failure(Value::Null, &error));
        }
    };
    match handle_body(proxy.backend.as_ref(), &proxy.cfg, &body).await {
        Some(answer) => json(StatusCode::OK, answer),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn wrong_method() -> Response {
    let error = RpcError::new(INVALID_REQUEST, "send JSON-RPC requests with POST");
    json(StatusCode::METHOD_NOT_ALLOWED, jsonrpc::failure(Value::Null, &error))
}

async fn not_found() -> Response {
    let error = RpcError::new(METHOD_NOT_FOUND, "the proxy answers POST / only");
    json(StatusCode::NOT_FOUND, jsonrpc::failure(Value::Null, &error))
}

fn json(status: StatusCode, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

struct Proxy {
    backend: Arc<dyn Backend>,
    cfg: ProxyConfig,
}

/// The answer to a request body: one response, an array of responses for a
/// batch, or `None` when every request was a notification.
pub async fn handle_body(backend: &dyn Backend, cfg: &ProxyConfig, body: &[u8]) -> Option<Value> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Some(jsonrpc::failure(Value::Null, &RpcError::new(PARSE_ERROR, format!("parse error: {e}")))),
    };
    match value {
        Value::Array(items) if items.is_empty() => {
            Some(jsonrpc::failure(Value::Null, &RpcError::new(INVALID_REQUEST, "invalid request: empty batch")))
        }
        Value::Array(items) if items.len() > cfg.max_batch => {
            let message = format!(
                "invalid request: batch of {} requests exceeds proxy.max_batch ({})",
                items.len(),
                cfg.max_batch
            );
            Some(jsonrpc::failure(Value::Null, &RpcError::new(INVALID_REQUEST, message)))
        }
        Value::Array(items) => {
            let answers = futures::future::join_all(items.into_iter().map(|item| answer(backend, cfg, item))).await;
            let answers: Vec<Value> = answers.into_iter().flatten().collect();
            (!answers.is_empty()).then_some(Value::Array(answers))
        }
        single => answer(backend, cfg, single).await,
    }
}

/// The response to one request object; `None` for a notification.
pub async fn answer(backend: &dyn Backend, cfg: &ProxyConfig, request: Value) -> Option<Value> {
    let call = match Call::parse(request) {
        Ok(call) => call,
        Err((id, error)) => return Some(jsonrpc::failure(id, &error)),
    };
    let action = methods::action(&call, cfg.chain_id);
    let Some(id) = call.id else {
        // A notification: nothing is answered. A read has no effect, so it
        // is not sent; a transaction is.
        if let Action::Send { request, read_only: false } = action {
            tracing::debug!(method = %call.method, "notification through the mixnet");
            let _ = send(backend, cfg, request).await;
        }
        return None;
    };
    Some(match action {
        Action::Local(result) => jsonrpc::success(id, result),
        Action::Refuse(error) => jsonrpc::failure(id, &error),
        Action::Send { request, .. } => {
            tracing::debug!(method = %call.method, "request through the mixnet");
            match send(backend, cfg, request).await {
                Ok(answer) => jsonrpc::with_caller_id(&answer, id.clone()).unwrap_or_else(|e| jsonrpc::failure(id, &e)),
                Err(e) => jsonrpc::failure(id, &RpcError::from_client(&e)),
            }
        }
    })
}

async fn send(backend: &dyn Backend, cfg: &ProxyConfig, request: Request) -> Result<Vec<u8>, ClientError> {
    if cfg.progress {
        let report = WaitReport::start();
        backend.call(request, Box::new(report.sink())).await
    } else {
        backend.call(request, Box::new(|_| {})).await
    }
}

/// Why the chain id could not be learned from the network.
#[derive(Debug, thiserror::Error)]
pub enum ChainIdError {
    /// The request got no usable answer.
    #[error("asking the network for eth_chainId: {0}")]
    Network(#[from] ClientError),
    /// The exit answered something that is not a chain id.
    #[error("the exit's answer to eth_chainId is not a chain id: {0}")]
    Answer(String),
}

/// Asks an exit for its chain's id with one `eth_chainId` through the
/// mixnet, naming `guess` as the request's chain. An exit refuses a request
/// for another chain than its own, saying which one it serves ("this exit
/// serves chain N"); then the question is asked again for that chain, so
/// the id returned is always one an exit answered `eth_chainId` with.
pub async fn learn_chain_id(backend: &dyn Backend, guess: u64) -> Result<u64, ChainIdError> {
    let ask = |chain_id: u64| {
        let json = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#.to_string();
        backend.call(Request::RpcCall { chain_id, json }, Box::new(|_| {}))
    };
    let answer = match ask(guess).await {
        Ok(answer) => answer,
        Err(ClientError::Status { status: ReplyStatus::BadRequest, message }) => match served_chain(&message) {
            Some(chain_id) => ask(chain_id).await?,
            None => return Err(ClientError::Status { status: ReplyStatus::BadRequest, message }.into()),
        },
        Err(e) => return Err(e.into()),
    };
    let response: Value =
        serde_json::from_slice(&answer).map_err(|e| ChainIdError::Answer(format!("invalid JSON ({e})")))?;
    let result = response.get("result").and_then(Value::as_str);
    let chain_id = result.and_then(|r| r.strip_prefix("0x")).and_then(|d| u64::from_str_radix(d, 16).ok());
    match chain_id {
        Some(id) if id > 0 => Ok(id),
        _ => Err(ChainIdError::Answer(response.to_string())),
    }
}

/// N in an exit's "this exit serves chain N".
fn served_chain(message: &str) -> Option<u64> {
    let rest = &message[message.find("serves chain ")? + "serves chain ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests;
