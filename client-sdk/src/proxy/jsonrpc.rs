//! JSON-RPC 2.0 as the proxy speaks it: reading one request object, writing
//! answers, and the error codes a wallet sees.
//!
//! The standard codes (`-32700` … `-32603`) keep their meaning. The proxy's
//! own failures — the mixnet's, or an exit's refusal — use `-32001` …
//! `-32007`, one code per thing a user can act on:
//!
//! | code | meaning | from |
//! |------|---------|------|
//! | `-32001` | no exit offers the service now | [`ClientError::NoExit`] |
//! | `-32002` | no answer after every attempt | [`ClientError::Timeout`] |
//! | `-32003` | the exit refused the request (method, chain, transaction, log range) | status `BadRequest`, `Refused`, `Unsupported` |
//! | `-32004` | the exit tried and failed (its upstream, its deadline, busy) | status `Failed`, `Timeout`, `Busy` |
//! | `-32005` | the NOX network is unreachable (registry, entry, routes, descriptors) | the other connection errors |
//! | `-32006` | the request or its answer is too large for the mixnet | [`ClientError::RequestTooLarge`], [`ClientError::ReplyTooLarge`] |
//! | `-32007` | the exit's answer is not a JSON-RPC response | [`ClientError::BadReply`], an unparsable answer |
//!
//! An exit's own JSON-RPC answer (a revert, `nonce too low`) is passed on as
//! the exit gave it, with the caller's `id` put back: the wallet sees what a
//! direct endpoint would have said.

use nox_protocol::payload::ReplyStatus;
use serde_json::{Map, Value, json};

use crate::client::ClientError;

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Not a JSON-RPC 2.0 request object, or an empty or oversized batch.
pub const INVALID_REQUEST: i64 = -32600;
/// A method the proxy does not serve (wallet methods included).
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Parameters the method cannot take (bad transaction hex).
pub const INVALID_PARAMS: i64 = -32602;
/// A failure inside the proxy.
pub const INTERNAL_ERROR: i64 = -32603;
/// No exit offers the request's kind.
pub const NO_EXIT: i64 = -32001;
/// No answer after every attempt.
pub const TIMEOUT: i64 = -32002;
/// The exit refused the request.
pub const EXIT_REFUSED: i64 = -32003;
/// The exit tried and failed.
pub const EXIT_FAILED: i64 = -32004;
/// The NOX network cannot be reached.
pub const NETWORK_UNAVAILABLE: i64 = -32005;
/// The request or its answer is too large.
pub const TOO_LARGE: i64 = -32006;
/// The exit's answer is not a JSON-RPC response.
pub const BAD_ANSWER: i64 = -32007;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("JSON-RPC error {code}: {message}")]
pub struct RpcError {
    /// The error code.
    pub code: i64,
    /// What happened, for the user.
    pub message: String,
}

impl RpcError {
    /// An error with `code` and `message`.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError { code, message: message.into() }
    }

    /// The JSON-RPC error for a request the mixnet could not complete.
    pub fn from_client(error: &ClientError) -> Self {
        let text = error.to_string();
        match error {
            ClientError::NoExit(kind) => RpcError::new(
                NO_EXIT,
                format!("no exit offers {kind}: no exit of the NOX network serves this kind of request now"),
            ),
            ClientError::Timeout { attempts, per_attempt } => RpcError::new(
                TIMEOUT,
                format!(
                    "timeout after {attempts} attempts: no answer through the mixnet within {:.1} s each",
                    per_attempt.as_secs_f64()
                ),
            ),
            ClientError::Status { status, message } => match status {
                ReplyStatus::BadRequest | ReplyStatus::Refused | ReplyStatus::Unsupported => {
                    RpcError::new(EXIT_REFUSED, format!("exit refused: {message}"))
                }
                ReplyStatus::Failed => RpcError::new(EXIT_FAILED, format!("exit failed: {message}")),
                ReplyStatus::Timeout => {
                    RpcError::new(EXIT_FAILED, format!("exit failed: its upstream did not answer in time: {message}"))
                }
                ReplyStatus::Busy => RpcError::new(EXIT_FAILED, format!("exit failed: busy, try again: {message}")),
                ReplyStatus::Ok | ReplyStatus::MoreSurbs => RpcError::new(BAD_ANSWER, text),
            },
            ClientError::Topology(_)
            | ClientError::StaticMember(_)
            | ClientError::NoEntry(_)
            | ClientError::Entry(_)
            | ClientError::NoRoute(_)
            | ClientError::NoDescriptors(_)
            | ClientError::QueueFull(_)
            | ClientError::Closed => RpcError::new(NETWORK_UNAVAILABLE, format!("NOX network unavailable: {text}")),
            ClientError::RequestTooLarge { .. } | ClientError::ReplyTooLarge { .. } => RpcError::new(TOO_LARGE, text),
            ClientError::BadReply(_) => RpcError::new(BAD_ANSWER, text),
            ClientError::Build(_) => RpcError::new(INTERNAL_ERROR, text),
        }
    }

    fn to_json(&self) -> Value {
        json!({ "code": self.code, "message": self.message })
    }
}

/// One JSON-RPC request object. `Debug` shows the method only: parameters
/// are the user's (addresses, transactions).
#[derive(Clone, PartialEq)]
pub struct Call {
    /// The caller's id; `None` for a notification (no `id` member).
    pub id: Option<Value>,
    /// The method.
    pub method: String,
    /// The parameters, an array or an object, when given.
    pub params: Option<Value>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call").field("method", &self.method).field("notification", &self.id.is_none()).finish()
    }
}

impl Call {
    /// Reads a request object. An invalid one is the error, with the id to
    /// answer it under (`null` when the id itself is missing or invalid).
    pub fn parse(value: Value) -> Result<Call, (Value, RpcError)> {
        let Value::Object(mut object) = value else {
            return Err((Value::Null, RpcError::new(INVALID_REQUEST, "invalid request: not a JSON object")));
        };
        let id = match object.remove("id") {
            None => None,
            Some(id @ (Value::Null | Value::Number(_) | Value::String(_))) => Some(id),
            Some(_) => {
                return Err((
                    Value::Null,
                    RpcError::new(INVALID_REQUEST, "invalid request: id must be a number, a string or null"),
                ));
            }
        };
        let answer_id = id.clone().unwrap_or(Value::Null);
        let invalid = |message: &str| Err((answer_id.clone(), RpcError::new(INVALID_REQUEST, message)));
        if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return invalid("invalid request: jsonrpc must be \"2.0\"");
        }
        let method = match object.remove("method") {
            Some(Value::String(m)) => m,
            _ => return invalid("invalid request: method must be a string"),
        };
        let params = match object.remove("params") {
            None => None,
            Some(p @ (Value::Array(_) | Value::Object(_))) => Some(p),
            Some(_) => return invalid("invalid request: params must be an array or an object"),
        };
        Ok(Call { id, method, params })
    }

    /// The request object as an exit receives it: `jsonrpc`, `method` and
    /// `params` only, under the fixed id 1 — the caller's id stays on this
    /// machine (a wallet's counter would link its requests at the exit).
    pub fn to_exit_json(&self) -> String {
        let mut object = Map::new();
        object.insert("jsonrpc".into(), Value::from("2.0"));
        object.insert("id".into(), Value::from(1));
        object.insert("method".into(), Value::from(self.method.clone()));
        if let Some(params) = &self.params {
            object.insert("params".into(), params.clone());
        }
        Value::Object(object).to_string()
    }
}

/// `{"jsonrpc":"2.0","id":…,"result":…}`
pub fn success(id: Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

/// `{"jsonrpc":"2.0","id":…,"error":{"code":…,"message":…}}`
pub fn failure(id: Value, error: &RpcError) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": error.to_json() })
}

/// The exit's answer bytes as a response to the caller: a JSON-RPC response
/// object (with `result` or `error`), its `id` replaced by `id`, everything
/// else as the exit gave it.
pub fn with_caller_id(answer: &[u8], id: Value) -> Result<Value, RpcError> {
    let bad = |why: &str| RpcError::new(BAD_ANSWER, format!("the exit's answer is not a JSON-RPC response: {why}"));
    let value: Value = serde_json::from_slice(answer).map_err(|e| bad(&format!("invalid JSON ({e})")))?;
    let Value::Object(mut object) = value else {
        return Err(bad("not a JSON object"));
    };
    if !object.contains_key("result") && !object.contains_key("error") {
        return Err(bad("neither result nor error"));
    }
    object.insert("id".into(), id);
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_object_parses_and_an_invalid_one_keeps_its_id_when_it_can() {
        let call = Call::parse(json!({"jsonrpc":"2.0","id":7,"method":"eth_blockNumber"})).unwrap();
        assert_eq!((call.id, call.method.as_str(), call.params), (Some(json!(7)), "eth_blockNumber", None));
        let call = Call::parse(json!({"jsonrpc":"2.0","method":"eth_chainId","params":[]})).unwrap();
        assert_eq!(call.id, None, "no id member: a notification");
        assert_eq!(Call::parse(json!({"jsonrpc":"2.0","id":null,"method":"m"})).unwrap().id, Some(Value::Null));

        for (bad, id) in [
            (json!([1]), Value::Null),
            (json!({"jsonrpc":"2.0","id":{"a":1},"method":"m"}), Value::Null),
            (json!({"jsonrpc":"1.0","id":"x","method":"m"}), json!("x")),
            (json!({"id":3,"method":"m"}), json!(3)),
            (json!({"jsonrpc":"2.0","id":4,"method":5}), json!(4)),
            (json!({"jsonrpc":"2.0","id":5,"method":"m","params":"bar"}), json!(5)),
        ] {
            let (answer_id, error) = Call::parse(bad.clone()).unwrap_err();
            assert_eq!((answer_id, error.code), (id, INVALID_REQUEST), "{bad}");
        }
    }

    #[test]
    fn the_exit_sees_no_caller_id_and_no_extra_members() {
        let call =
            Call::parse(json!({"jsonrpc":"2.0","id":991,"method":"eth_getBalance","params":["0xab","latest"],"x":1}))
                .unwrap();
        let sent: Value = serde_json::from_str(&call.to_exit_json()).unwrap();
        assert_eq!(sent, json!({"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0xab","latest"]}));
        assert_eq!(format!("{call:?}"), "Call { method: \"eth_getBalance\", notification: false }");
    }

    #[test]
    fn an_answer_gets_the_caller_id_back_and_keeps_the_rest() {
        let answer =
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":3,"message":"execution reverted","data":"0x08c379a0"}}"#;
        let v = with_caller_id(answer, json!("abc")).unwrap();
        assert_eq!(v["id"], json!("abc"));
        assert_eq!(v["error"]["data"], json!("0x08c379a0"));
        assert_eq!(with_caller_id(b"not json", json!(1)).unwrap_err().code, BAD_ANSWER);
        assert_eq!(with_caller_id(b"[1]", json!(1)).unwrap_err().code, BAD_ANSWER);
        assert_eq!(with_caller_id(br#"{"jsonrpc":"2.0","id":1}"#, json!(1)).unwrap_err().code, BAD_ANSWER);
    }
}
