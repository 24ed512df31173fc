//! The proxy over a real loopback HTTP server (requests sent with `ureq`, so
//! the framing, status codes and bodies are what a wallet gets), with the
//! mixnet replaced by [`FakeExit`]: a unit-test double of [`Backend`] that
//! answers like the exit's `RpcCall` and `RawBroadcast` services and records
//! what it was sent. Whole-network runs of the proxy belong in
//! `devnet/tests/`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::jsonrpc::*;
use super::*;

/// Answers by method, as an exit would (see each arm), and records every
/// request it gets.
#[derive(Default)]
struct FakeExit {
    seen: Mutex<Vec<Request>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

const EXIT_CHAIN: u64 = 31337;

impl FakeExit {
    fn seen(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }

    /// The JSON-RPC request objects the exit received, parsed.
    fn seen_json(&self) -> Vec<Value> {
        self.seen()
            .into_iter()
            .filter_map(|r| match r {
                Request::RpcCall { json, .. } => Some(serde_json::from_str(&json).unwrap()),
                _ => None,
            })
            .collect()
    }

    async fn answer(&self, request: Request) -> Result<Vec<u8>, ClientError> {
        let ok = |result: Value| Ok(json!({"jsonrpc":"2.0","id":1,"result":result}).to_string().into_bytes());
        let status = |status, message: &str| Err(ClientError::Status { status, message: message.into() });
        match request {
            Request::RawBroadcast { chain_id, raw_tx } if chain_id == EXIT_CHAIN => {
                ok(json!(format!("0x{}", hex::encode([raw_tx.len() as u8; 32]))))
            }
            Request::RawBroadcast { .. } => status(ReplyStatus::BadRequest, "this exit serves chain 31337"),
            Request::RpcCall { chain_id, json } => {
                let call: Value = serde_json::from_str(&json).unwrap();
                if chain_id != EXIT_CHAIN {
                    return status(ReplyStatus::BadRequest, &format!("this exit serves chain {EXIT_CHAIN}"));
                }
                match call["method"].as_str().unwrap() {
                    "eth_chainId" => ok(json!("0x7a69")),
                    "eth_blockNumber" => ok(json!("0x10")),
                    "eth_feeHistory" => {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        ok(json!({"oldestBlock":"0x1","gasUsedRatio":[0.5]}))
                    }
                    "eth_call" => Ok(br#"{"jsonrpc":"2.0","id":1,"error":{"code":3,"message":"execution reverted","data":"0x08c379a0"}}"#.to_vec()),
                    "eth_getBalance" => status(ReplyStatus::BadRequest, "eth_getLogs range of 20000 blocks exceeds 10000"),
                    "eth_getLogs" => Err(ClientError::Timeout { attempts: 3, per_attempt: Duration::from_secs(20) }),
                    "eth_gasPrice" => Err(ClientError::NoExit("rpc_call")),
                    "eth_estimateGas" => status(ReplyStatus::Failed, "the upstream did not answer"),
                    "eth_getTransactionCount" => Err(ClientError::Topology("registry endpoint unreachable".into())),
                    "eth_getBlockByNumber" => Err(ClientError::ReplyTooLarge { needed: 300 }),
                    "eth_getCode" => Ok(b"<html>not json-rpc</html>".to_vec()),
                    other => panic!("the fake exit got {other}"),
                }
            }
            Request::Echo { data } => Ok(data),
            other => panic!("the fake exit got {other:?}"),
        }
    }
}

impl Backend for FakeExit {
    fn call(&self, request: Request, mut progress: ProgressSink) -> BackendFuture<'_> {
        Box::pin(async move {
            self.seen.lock().unwrap().push(request.clone());
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            progress(Progress::Sent { attempt: 1, packets: 1 });
            let answer = self.answer(request).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            answer
        })
    }
}

/// A proxy serving on a loopback port.
struct Running {
    url: String,
    exit: Arc<FakeExit>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(cfg: ProxyConfig) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let exit = Arc::new(FakeExit::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, exit.clone(), cfg, async move {
            let _ = stopped.await;
        }));
        Running { url, exit, stop, task }
    }

    /// POSTs `body`; the status and the body.
    async fn post(&self, body: impl Into<String>) -> (u16, String) {
        http(ureq::post(&self.url).set("Content-Type", "application/json"), Some(body.into())).await
    }

    /// POSTs `body` and parses the JSON answer (status 200).
    async fn rpc(&self, body: Value) -> Value {
        let (status, text) = self.post(body.to_string()).await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task).await.unwrap().unwrap().unwrap();
    }
}

async fn http(request: ureq::Request, body: Option<String>) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let sent = match body {
            Some(b) => request.send_string(&b),
            None => request.call(),
        };
        match sent {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            Err(e) => panic!("{e}"),
        }
    })
    .await
    .unwrap()
}

fn call(id: Value, method: &str, params: Value) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":method,"params":params})
}

fn error_of(answer: &Value) -> (i64, String) {
    (answer["error"]["code"].as_i64().unwrap(), answer["error"]["message"].as_str().unwrap().to_string())
}

fn cfg() -> ProxyConfig {
    ProxyConfig::new(EXIT_CHAIN)
}

#[tokio::test]
async fn test_a_read_goes_through_the_exit_and_comes_back_with_the_callers_id() {
    let p = Running::start(cfg()).await;
    for id in [json!(7), json!("wallet-42"), json!(12345678901234u64), Value::Null] {
        let answer = p.rpc(call(id.clone(), "eth_blockNumber", json!([]))).await;
        assert_eq!(answer, json!({"jsonrpc":"2.0","id":id,"result":"0x10"}));
    }
    // The exit's own error answer (a revert) is passed on as it came.
    let answer = p.rpc(call(json!(9), "eth_call", json!([{"to":"0x01","data":"0x"}, "latest"]))).await;
    assert_eq!(
        answer,
        json!({"jsonrpc":"2.0","id":9,"error":{"code":3,"message":"execution reverted","data":"0x08c379a0"}})
    );
    // The exit saw the method and params under id 1, never the caller's ids.
    let sent = p.exit.seen_json();
    assert_eq!(sent.len(), 5);
    assert!(sent.iter().all(|s| s["id"] == json!(1)), "{sent:?}");
    assert_eq!(
        sent[4],
        json!({"jsonrpc":"2.0","id":1,"method":"eth_call","params":[{"to":"0x01","data":"0x"},"latest"]})
    );
    assert!(
        p.exit.seen().iter().all(|r| matches!(r, Request::RpcCall { chain_id: EXIT_CHAIN, .. })),
        "every request names the proxy's chain"
    );
    p.stop().await;
}

#[tokio::test]
async fn test_chain_id_and_net_version_are_answered_locally() {
    let p = Running::start(cfg()).await;
    assert_eq!(p.rpc(call(json!(1), "eth_chainId", json!([]))).await["result"], json!("0x7a69"));
    assert_eq!(p.rpc(call(json!(2), "net_version", json!([]))).await["result"], json!("31337"));
    assert!(p.exit.seen().is_empty(), "nothing went through the mixnet");
    p.stop().await;
}

#[tokio::test]
async fn test_a_signed_transaction_is_broadcast_as_bytes() {
    let p = Running::start(cfg()).await;
    let answer = p.rpc(call(json!(3), "eth_sendRawTransaction", json!(["0x02f86c0a"]))).await;
    assert_eq!(answer["id"], json!(3));
    assert_eq!(answer["result"], json!(format!("0x{}", "04".repeat(32))));
    assert_eq!(
        p.exit.seen(),
        vec![Request::RawBroadcast { chain_id: EXIT_CHAIN, raw_tx: vec![0x02, 0xf8, 0x6c, 0x0a] }]
    );

    for params in [json!(["0x02zz"]), json!(["02f8"]), json!([]), json!(["0x"])] {
        let answer = p.rpc(call(json!(4), "eth_sendRawTransaction", params.clone())).await;
        let (code, message) = error_of(&answer);
        assert_eq!((answer["id"].clone(), code), (json!(4), INVALID_PARAMS), "{params}: {message}");
    }
    assert_eq!(p.exit.seen().len(), 1, "bad hex never leaves the machine");
    p.stop().await;
}

#[tokio::test]
async fn test_wallet_methods_are_refused_because_keys_stay_in_the_wallet() {
    let p = Running::start(cfg()).await;
    for method in [
        "eth_sendTransaction",
        "eth_accounts",
        "eth_requestAccounts",
        "eth_sign",
        "personal_sign",
        "eth_signTypedData_v4",
        "eth_signTransaction",
    ] {
        let answer = p.rpc(call(json!(method), method, json!([]))).await;
        let (code, message) = error_of(&answer);
        assert_eq!((answer["id"].clone(), code), (json!(method), METHOD_NOT_FOUND));
        assert!(message.starts_with(&format!("signing stays in the wallet: {method}")), "{message}");
        assert!(message.contains("(nox-client never holds keys)"), "{message}");
        assert!(answer.get("result").is_none());
    }
    assert!(p.exit.seen().is_empty());
    p.stop().await;
}

#[tokio::test]
async fn test_unknown_methods_are_refused_without_a_request() {
    let p = Running::start(cfg()).await;
    for method in ["debug_traceTransaction", "anvil_setBalance", "eth_subscribe", "eth_newFilter"] {
        let answer = p.rpc(call(json!(1), method, json!([]))).await;
        assert_eq!(error_of(&answer), (METHOD_NOT_FOUND, format!("method not supported through NOX: {method}")));
    }
    assert!(p.exit.seen().is_empty());
    p.stop().await;
}

#[tokio::test]
async fn test_each_client_error_becomes_its_own_json_rpc_error() {
    let p = Running::start(cfg()).await;
    for (method, code, says) in [
        ("eth_gasPrice", NO_EXIT, "no exit offers rpc_call"),
        ("eth_getLogs", TIMEOUT, "timeout after 3 attempts"),
        ("eth_getBalance", EXIT_REFUSED, "exit refused: eth_getLogs range of 20000 blocks exceeds 10000"),
        ("eth_estimateGas", EXIT_FAILED, "exit failed: the upstream did not answer"),
        (
            "eth_getTransactionCount",
            NETWORK_UNAVAILABLE,
            "NOX network unavailable: topology: registry endpoint unreachable",
        ),
        ("eth_getBlockByNumber", TOO_LARGE, "300 more SURBs"),
        ("eth_getCode", BAD_ANSWER, "the exit's answer is not a JSON-RPC response"),
    ] {
        let answer = p.rpc(call(json!(method), method, json!([]))).await;
        let (got, message) = error_of(&answer);
        assert_eq!((answer["id"].clone(), got), (json!(method), code), "{method}: {message}");
        assert!(message.contains(says), "{method}: {message}");
        assert_eq!(answer["jsonrpc"], json!("2.0"));
    }
    p.stop().await;
}

#[tokio::test]
async fn test_a_batch_is_answered_in_order_with_its_members_sent_concurrently() {
    let p = Running::start(cfg()).await;
    let mut batch: Vec<Value> =
        (0..5).map(|i| call(json!(i), "eth_feeHistory", json!(["0x1", "latest", []]))).collect();
    batch.push(call(json!("c"), "eth_chainId", json!([])));
    batch.push(call(json!("s"), "eth_sign", json!([])));
    batch.push(json!(42));
    let started = Instant::now();
    let answer = p.rpc(Value::Array(batch)).await;
    let elapsed = started.elapsed();
    let answers = answer.as_array().unwrap();
    assert_eq!(answers.len(), 8);
    for (i, a) in answers.iter().take(5).enumerate() {
        assert_eq!((a["id"].clone(), a["result"]["oldestBlock"].clone()), (json!(i), json!("0x1")));
    }
    assert_eq!(answers[5]["result"], json!("0x7a69"));
    assert_eq!(error_of(&answers[6]).0, METHOD_NOT_FOUND);
    assert_eq!((answers[7]["id"].clone(), error_of(&answers[7]).0), (Value::Null, INVALID_REQUEST));
    assert_eq!(p.exit.most_in_flight.load(Ordering::SeqCst), 5, "each member is its own mixnet request, at once");
    assert!(elapsed < Duration::from_millis(1200), "five 300 ms requests took {elapsed:?}");
    p.stop().await;
}

#[tokio::test]
async fn test_empty_and_oversized_batches_are_invalid_requests() {
    let mut c = cfg();
    c.max_batch = 3;
    let p = Running::start(c).await;
    let answer = p.rpc(json!([])).await;
    assert_eq!(answer["id"], Value::Null);
    assert_eq!(error_of(&answer), (INVALID_REQUEST, "invalid request: empty batch".to_string()));
    let batch: Vec<Value> = (0..4).map(|i| call(json!(i), "eth_blockNumber", json!([]))).collect();
    let answer = p.rpc(Value::Array(batch)).await;
    let (code, message) = error_of(&answer);
    assert_eq!(code, INVALID_REQUEST);
    assert!(message.contains("batch of 4 requests exceeds proxy.max_batch (3)"), "{message}");
    assert!(p.exit.seen().is_empty(), "nothing of a refused batch is sent");
    p.stop().await;
}

#[tokio::test]
async fn test_notifications_get_no_answer_and_only_transactions_are_sent() {
    let p = Running::start(cfg()).await;
    let read = json!({"jsonrpc":"2.0","method":"eth_blockNumber","params":[]});
    let tx = json!({"jsonrpc":"2.0","method":"eth_sendRawTransaction","params":["0x01"]});
    let unknown = json!({"jsonrpc":"2.0","method":"eth_sign","params":[]});

    let (status, body) = p.post(read.to_string()).await;
    assert_eq!((status, body.as_str()), (204, ""), "a notification has no answer");
    assert!(p.exit.seen().is_empty(), "a read notification has no effect, so it is not sent");

    let (status, body) = p.post(Value::Array(vec![read.clone(), tx.clone(), unknown]).to_string()).await;
    assert_eq!((status, body.as_str()), (204, ""), "a batch of notifications has no answer");
    assert_eq!(p.exit.seen(), vec![Request::RawBroadcast { chain_id: EXIT_CHAIN, raw_tx: vec![1] }]);

    let answer = p.rpc(json!([read, call(json!(5), "eth_blockNumber", json!([]))])).await;
    assert_eq!(answer, json!([{"jsonrpc":"2.0","id":5,"result":"0x10"}]), "only the request with an id is answered");
    p.stop().await;
}

#[tokio::test]
async fn test_malformed_bodies_get_json_rpc_errors() {
    let p = Running::start(cfg()).await;
    let (status, body) = p.post("{\"jsonrpc\":\"2.0\",").await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((answer["id"].clone(), error_of(&answer).0), (Value::Null, PARSE_ERROR));

    let answer = p.rpc(json!({"jsonrpc":"2.0","id":3,"method":"eth_blockNumber","params":"x"})).await;
    assert_eq!((answer["id"].clone(), error_of(&answer).0), (json!(3), INVALID_REQUEST));
    let answer = p.rpc(json!("eth_blockNumber")).await;
    assert_eq!((answer["id"].clone(), error_of(&answer).0), (Value::Null, INVALID_REQUEST));
    p.stop().await;
}

#[tokio::test]
async fn test_a_body_over_the_limit_is_413_with_a_json_rpc_error() {
    let mut c = cfg();
    c.max_body_bytes = 2048;
    let p = Running::start(c).await;
    let big = call(json!(1), "eth_call", json!([{"data": format!("0x{}", "ab".repeat(2048))}, "latest"]));
    let (status, body) = p.post(big.to_string()).await;
    assert_eq!(status, 413);
    let answer: Value = serde_json::from_str(&body).unwrap();
    let (code, message) = error_of(&answer);
    assert_eq!(code, INVALID_REQUEST);
    assert!(message.contains("exceeds proxy.max_body_bytes (2048 bytes)"), "{message}");
    assert!(p.exit.seen().is_empty());

    // Just under the limit is served.
    let fits = call(json!(2), "eth_blockNumber", json!([]));
    assert_eq!(p.rpc(fits).await["result"], json!("0x10"));
    p.stop().await;
}

#[tokio::test]
async fn test_other_paths_and_http_methods_get_json_rpc_errors() {
    let p = Running::start(cfg()).await;
    let (status, body) = http(ureq::get(&p.url), None).await;
    assert_eq!(status, 405);
    assert_eq!(error_of(&serde_json::from_str(&body).unwrap()).0, INVALID_REQUEST);
    let (status, body) = http(ureq::post(&format!("{}admin", p.url)), Some("{}".into())).await;
    assert_eq!(status, 404);
    assert_eq!(error_of(&serde_json::from_str(&body).unwrap()).0, METHOD_NOT_FOUND);
    p.stop().await;
}

#[tokio::test]
async fn test_the_chain_id_is_learned_from_an_exit_even_from_a_wrong_guess() {
    let exit = FakeExit::default();
    assert_eq!(learn_chain_id(&exit, EXIT_CHAIN).await.unwrap(), EXIT_CHAIN);
    assert_eq!(exit.seen().len(), 1, "a right guess is asked once");

    let exit = FakeExit::default();
    assert_eq!(learn_chain_id(&exit, 1).await.unwrap(), EXIT_CHAIN);
    let chains: Vec<u64> = exit
        .seen()
        .iter()
        .map(|r| match r {
            Request::RpcCall { chain_id, .. } => *chain_id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(chains, vec![1, EXIT_CHAIN], "asked again for the chain the exit named");

    struct Mute;
    impl Backend for Mute {
        fn call(&self, _: Request, _: ProgressSink) -> BackendFuture<'_> {
            Box::pin(async { Err(ClientError::NoExit("rpc_call")) })
        }
    }
    assert!(matches!(learn_chain_id(&Mute, 1).await, Err(ChainIdError::Network(ClientError::NoExit(_)))));
}

#[tokio::test]
async fn test_with_progress_on_the_answers_are_the_same() {
    let mut c = cfg();
    c.progress = true;
    let p = Running::start(c).await;
    assert_eq!(p.rpc(call(json!(1), "eth_blockNumber", json!([]))).await["result"], json!("0x10"));
    p.stop().await;
}
