//! Which JSON-RPC methods the proxy serves, and how: the one place that
//! decides what leaves this machine.
//!
//! * `eth_sendRawTransaction` → [`Request::RawBroadcast`]: the transaction the
//!   wallet signed, as bytes; the exit broadcasts it from its own address.
//! * [`READ_METHODS`] → [`Request::RpcCall`]: the request object, re-written
//!   with `jsonrpc`, `method` and `params` only and a fixed id.
//! * `eth_chainId` and `net_version` → answered here from the proxy's chain id.
//! * [`WALLET_METHODS`] (and `eth_signTypedData*`, `personal_*`) → refused:
//!   they need the user's key, which stays in the wallet.
//! * anything else → refused as not supported through NOX.
//!
//! [`READ_METHODS`] is the exits' built-in list (`exit.rpc_methods`' default):
//! a method outside it could never be answered, so it is refused here without
//! spending a request.

use nox_protocol::payload::Request;
use serde_json::Value;

use super::jsonrpc::{Call, INVALID_PARAMS, METHOD_NOT_FOUND, RpcError};

/// The read-only methods sent to an exit as `RpcCall` (the protocol's list,
/// the same an exit checks against).
pub use nox_protocol::payload::RPC_READ_METHODS as READ_METHODS;

/// Methods that need the user's key or accounts: a wallet's job.
pub const WALLET_METHODS: [&str; 7] = [
    "eth_sendTransaction",
    "eth_accounts",
    "eth_requestAccounts",
    "eth_sign",
    "eth_signTransaction",
    "personal_sign",
    "eth_signTypedData",
];

/// What the proxy does with a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answer here with this result.
    Local(Value),
    /// Send this request through the mixnet; the answer is the exit's
    /// JSON-RPC response. `read_only` requests have no effect, so a
    /// notification of one is not sent at all.
    Send {
        /// The request.
        request: Request,
        /// Whether the request only reads.
        read_only: bool,
    },
    /// Answer with this error.
    Refuse(RpcError),
}

/// Whether `method` needs a key the proxy never holds.
pub fn is_wallet_method(method: &str) -> bool {
    WALLET_METHODS.contains(&method) || method.starts_with("eth_signTypedData") || method.starts_with("personal_")
}

/// What to do with `call` for a proxy whose requests name `chain_id`.
pub fn action(call: &Call, chain_id: u64) -> Action {
    let method = call.method.as_str();
    match method {
        "eth_chainId" => Action::Local(Value::from(format!("{chain_id:#x}"))),
        "net_version" => Action::Local(Value::from(chain_id.to_string())),
        "eth_sendRawTransaction" => match raw_transaction(call.params.as_ref()) {
            Ok(raw_tx) => Action::Send { request: Request::RawBroadcast { chain_id, raw_tx }, read_only: false },
            Err(e) => Action::Refuse(e),
        },
        m if READ_METHODS.contains(&m) => {
            Action::Send { request: Request::RpcCall { chain_id, json: call.to_exit_json() }, read_only: true }
        }
        m if is_wallet_method(m) => Action::Refuse(RpcError::new(
            METHOD_NOT_FOUND,
            format!(
                "signing stays in the wallet: {m} needs the user's key or accounts (nox-client never holds keys); \
                 sign in the wallet and send the signed transaction with eth_sendRawTransaction"
            ),
        )),
        m => Action::Refuse(RpcError::new(METHOD_NOT_FOUND, format!("method not supported through NOX: {m}"))),
    }
}

/// `params[0]` of `eth_sendRawTransaction`: the signed transaction as
/// `0x`-prefixed hex, not empty.
fn raw_transaction(params: Option<&Value>) -> Result<Vec<u8>, RpcError> {
    let invalid = |why: &str| {
        RpcError::new(
            INVALID_PARAMS,
            format!("invalid params: eth_sendRawTransaction takes [\"0x<signed transaction>\"]: {why}"),
        )
    };
    let first = match params {
        Some(Value::Array(items)) if items.len() == 1 => &items[0],
        Some(Value::Array(items)) => return Err(invalid(&format!("got {} parameters", items.len()))),
        _ => return Err(invalid("params must be an array")),
    };
    let text = first.as_str().ok_or_else(|| invalid("params[0] is not a string"))?;
    let digits = text.strip_prefix("0x").ok_or_else(|| invalid("params[0] does not start with 0x"))?;
    if digits.is_empty() {
        return Err(invalid("params[0] is empty"));
    }
    hex::decode(digits).map_err(|e| invalid(&format!("params[0] is not hex ({e})")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn call(method: &str, params: Value) -> Call {
        Call { id: Some(json!(1)), method: method.into(), params: Some(params) }
    }

    #[test]
    fn each_method_goes_where_the_policy_says() {
        assert_eq!(action(&call("eth_chainId", json!([])), 31337), Action::Local(json!("0x7a69")));
        assert_eq!(action(&call("net_version", json!([])), 31337), Action::Local(json!("31337")));
        match action(&call("eth_sendRawTransaction", json!(["0x02f8"])), 5) {
            Action::Send { request: Request::RawBroadcast { chain_id: 5, raw_tx }, read_only: false } => {
                assert_eq!(raw_tx, vec![0x02, 0xf8])
            }
            other => panic!("{other:?}"),
        }
        for m in READ_METHODS.iter().filter(|m| !matches!(**m, "eth_chainId" | "net_version")) {
            match action(&call(m, json!([])), 5) {
                Action::Send { request: Request::RpcCall { chain_id: 5, json }, read_only: true } => {
                    assert!(json.contains(&format!("\"method\":\"{m}\"")), "{json}")
                }
                other => panic!("{m}: {other:?}"),
            }
        }
        for m in WALLET_METHODS.into_iter().chain(["eth_signTypedData_v4", "personal_unlockAccount"]) {
            let Action::Refuse(e) = action(&call(m, json!([])), 5) else { panic!("{m} is not refused") };
            assert_eq!(e.code, METHOD_NOT_FOUND);
            assert!(e.message.starts_with("signing stays in the wallet"), "{}", e.message);
            assert!(e.message.contains("never holds keys"), "{}", e.message);
        }
        for m in ["debug_traceTransaction", "anvil_mine", "eth_subscribe", "admin_peers"] {
            let Action::Refuse(e) = action(&call(m, json!([])), 5) else { panic!("{m} is not refused") };
            assert_eq!((e.code, e.message), (METHOD_NOT_FOUND, format!("method not supported through NOX: {m}")));
        }
    }

    #[test]
    fn a_raw_transaction_must_be_one_nonempty_0x_hex_string() {
        for params in [
            json!(["02f8"]),
            json!(["0x"]),
            json!(["0xzz"]),
            json!(["0x123"]),
            json!([1]),
            json!([]),
            json!(["0x01", "0x02"]),
            json!({"tx":"0x01"}),
        ] {
            let Action::Refuse(e) = action(&call("eth_sendRawTransaction", params.clone()), 1) else {
                panic!("{params} is accepted")
            };
            assert_eq!(e.code, INVALID_PARAMS, "{params}");
        }
        let none = Call { id: Some(json!(1)), method: "eth_sendRawTransaction".into(), params: None };
        assert!(matches!(action(&none, 1), Action::Refuse(RpcError { code: INVALID_PARAMS, .. })));
    }
}
