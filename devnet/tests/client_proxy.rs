//! A wallet's view of NOX on a whole devnet: `cast` (from node_modules) and an
//! alloy provider pointed at the local JSON-RPC proxy, every call crossing
//! entry → mix → exit to the exits' RPC services on anvil and coming back
//! through SURBs.
//!
//! One devnet for the file (bringing one up costs seconds): one test walks
//! through the cases in order. The exits' upstream is a forwarding HTTP
//! server in this test in front of anvil, which counts the calls it passes
//! (so a retried request can be shown to reach anvil once), can slow one
//! marked call down, and can play dead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use nox_client::{Client, ClientError};
use nox_devnet::{Devnet, DevnetOptions, cast, start_proxy};
use nox_eth::EthClient;
use nox_protocol::payload::{ReplyStatus, Request};
use serde_json::{Value, json};

/// anvil's account #1 (the deployer is #0).
const USER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
/// `eth_getBalance` of this address is held back by the upstream.
const SLOW_ADDRESS: &str = "0x00000000000000000000000000000000000051d0";
/// `eth_getBalance` of this address is held back the first time only.
const SLOW_ONCE_ADDRESS: &str = "0x00000000000000000000000000000000000051d1";

/// What the forwarding upstream saw and does.
#[derive(Default)]
struct Upstream {
    calls: Mutex<HashMap<String, usize>>,
    slow_calls: Mutex<usize>,
    slow_once_seen: AtomicBool,
    dead: AtomicBool,
}

/// Serves `upstream` on a loopback port in front of the anvil whose URL is
/// in `anvil` at the time of each call (the devnet starts after this
/// forwarder, whose URL its exits need); returns the forwarder's URL.
async fn forwarder(anvil: Arc<Mutex<String>>, upstream: Arc<Upstream>, slow: Duration) -> String {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let http = alloy::transports::http::reqwest::Client::new();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (upstream, http) = (upstream.clone(), http.clone());
            let anvil = anvil.lock().unwrap().clone();
            async move {
                if upstream.dead.load(Ordering::SeqCst) {
                    return (axum::http::StatusCode::BAD_GATEWAY, b"upstream down".to_vec());
                }
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let method = v["method"].as_str().unwrap_or("?").to_owned();
                *upstream.calls.lock().unwrap().entry(method.clone()).or_default() += 1;
                if method == "eth_getBalance" && v["params"][0].as_str() == Some(SLOW_ADDRESS) {
                    *upstream.slow_calls.lock().unwrap() += 1;
                    tokio::time::sleep(slow).await;
                }
                if method == "eth_getBalance"
                    && v["params"][0].as_str() == Some(SLOW_ONCE_ADDRESS)
                    && !upstream.slow_once_seen.swap(true, Ordering::SeqCst)
                {
                    tokio::time::sleep(slow).await;
                }
                let answer = http.post(&anvil).header("content-type", "application/json").body(body).send().await;
                match answer {
                    Ok(a) => (axum::http::StatusCode::OK, a.bytes().await.map(|b| b.to_vec()).unwrap_or_default()),
                    Err(_) => (axum::http::StatusCode::BAD_GATEWAY, b"anvil unreachable".to_vec()),
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// POSTs a JSON-RPC body to `url`.
fn post(url: &str, body: &Value) -> Value {
    ureq::post(url).send_json(body.clone()).unwrap().into_json().unwrap()
}

/// `bytes` of calldata to an account whose code logs its calldata (LOG0).
async fn emit_logs(net: &Devnet, total: usize) -> (Address, u64, u64) {
    // CALLDATASIZE PUSH1 0 PUSH1 0 CALLDATACOPY CALLDATASIZE PUSH1 0 LOG0 STOP
    let logger = Address::repeat_byte(0x4c);
    let code = "0x366000600037366000a000";
    post(&net.rpc_url(), &json!({"jsonrpc":"2.0","id":1,"method":"anvil_setCode","params":[logger.to_string(), code]}));
    let signer: PrivateKeySigner = USER_KEY.parse().unwrap();
    let eth = EthClient::new(&net.rpc_url(), Duration::from_secs(10), Some(signer)).unwrap();
    let from = eth.block_number().await.unwrap() + 1;
    let chunk = 100_000;
    for i in 0..total.div_ceil(chunk) {
        let data: Vec<u8> = (0..chunk).map(|j| ((i * chunk + j) % 253) as u8 | 1).collect();
        eth.transact("log", logger, data).await.unwrap();
    }
    (logger, from, eth.block_number().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallets_and_cast_use_the_mixnet_through_the_proxy() {
    nox_node::localnet::init_test_logging();
    let target = Arc::new(Mutex::new(String::new()));
    let upstream = Arc::new(Upstream::default());
    let forwarder_url = forwarder(target.clone(), upstream.clone(), Duration::from_millis(2_500)).await;
    let opts = DevnetOptions {
        per_layer: [1, 2, 2],
        exit_upstream: Some(forwarder_url),
        exit_http: true,
        ..DevnetOptions::default()
    };
    let net = Devnet::start(opts).await.unwrap();
    *target.lock().unwrap() = net.rpc_url();

    let mut cfg = net.client_config(Duration::from_millis(2));
    cfg.attempt_timeout = Duration::from_secs(8);
    let client = Arc::new(Client::connect(cfg).await.unwrap());
    let proxy = start_proxy(client.clone()).await.unwrap();
    let url = proxy.url.clone();

    // --- cast: a signed transfer, then reads of it, all through the proxy.
    let to = PrivateKeySigner::random().address().to_string();
    let sent = cast(&["send", "--json", "--rpc-url", &url, "--private-key", USER_KEY, &to, "--value", "1ether"]).await;
    let receipt: Value = serde_json::from_str(&sent.unwrap()).unwrap();
    let hash = receipt["transactionHash"].as_str().unwrap().to_owned();
    assert_eq!(cast(&["balance", "--rpc-url", &url, &to]).await.unwrap(), "1000000000000000000");
    let status = cast(&["receipt", "--rpc-url", &url, &hash, "status"]).await.unwrap();
    assert!(status == "true" || status.starts_with("1"), "receipt status {status}");
    // The same transfer as anvil itself has it.
    assert_eq!(cast(&["balance", "--rpc-url", &net.rpc_url(), &to]).await.unwrap(), "1000000000000000000");
    let registry = net.deployment.registry.to_string();
    let min_stake = cast(&["call", "--rpc-url", &url, &registry, "minStake()(uint256)"]).await.unwrap();
    let direct = cast(&["call", "--rpc-url", &net.rpc_url(), &registry, "minStake()(uint256)"]).await.unwrap();
    assert_eq!(min_stake, direct);
    assert!(upstream.calls.lock().unwrap().get("eth_sendRawTransaction").copied().unwrap_or(0) >= 1);

    // --- an alloy provider pointed at the proxy.
    let provider = ProviderBuilder::new().connect_http(url.parse().unwrap());
    assert_eq!(provider.get_chain_id().await.unwrap(), nox_devnet::anvil::CHAIN_ID);
    let head = provider.get_block_number().await.unwrap();
    assert!(head >= receipt["blockNumber"].as_str().map(|b| u64::from_str_radix(&b[2..], 16).unwrap()).unwrap());
    assert_eq!(provider.get_balance(to.parse().unwrap()).await.unwrap(), U256::from(10u64).pow(U256::from(18)));

    // --- a 1 MiB eth_getLogs answer arrives whole (two SURBs carried, the rest topped up).
    let (logger, from, until) = emit_logs(&net, 600_000).await;
    let filter =
        json!({"address": logger.to_string(), "fromBlock": format!("{from:#x}"), "toBlock": format!("{until:#x}")});
    let body = json!({"jsonrpc":"2.0","id":7,"method":"eth_getLogs","params":[filter]});
    let through = post(&url, &body);
    let direct = post(&net.rpc_url(), &body);
    assert_eq!(through["result"], direct["result"], "the answer through the mixnet is anvil's");
    let size = serde_json::to_vec(&through).unwrap().len();
    assert!(size >= 1 << 20, "the answer is at least 1 MiB: {size}");

    // --- a request retried after its first attempt timed out reaches anvil once.
    let mut patient = net.client_config(Duration::from_millis(2));
    patient.attempt_timeout = Duration::from_millis(1_500);
    let retrying = Client::connect(patient).await.unwrap();
    let slow = json!({"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":[SLOW_ADDRESS, "latest"]}).to_string();
    let answer = retrying.call(Request::RpcCall { chain_id: nox_devnet::anvil::CHAIN_ID, json: slow }).await.unwrap();
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["result"], "0x0");
    assert_eq!(*upstream.slow_calls.lock().unwrap(), 1, "two attempts, one call upstream");

    // --- refusals are clear JSON-RPC errors; nothing crashes.
    for method in ["eth_sendTransaction", "eth_accounts", "eth_sign", "personal_sign"] {
        let r = post(&url, &json!({"jsonrpc":"2.0","id":2,"method":method,"params":[]}));
        assert!(r["error"]["message"].as_str().unwrap().contains("wallet"), "{method}: {r}");
    }
    let r = post(&url, &json!({"jsonrpc":"2.0","id":3,"method":"debug_traceTransaction","params":[hash]}));
    assert_eq!(r["error"]["code"], -32601, "{r}");
    // The exit's own allowlist, asked directly through the client.
    let traced = json!({"jsonrpc":"2.0","id":1,"method":"debug_traceTransaction","params":[hash]}).to_string();
    let refused = client.call(Request::RpcCall { chain_id: nox_devnet::anvil::CHAIN_ID, json: traced }).await;
    assert!(matches!(refused, Err(ClientError::Status { status: ReplyStatus::BadRequest, .. })), "{refused:?}");
    // A request for another chain.
    let other = json!({"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}).to_string();
    let wrong = client.call(Request::RpcCall { chain_id: 1, json: other }).await;
    assert!(matches!(wrong, Err(ClientError::Status { status: ReplyStatus::BadRequest, .. })), "{wrong:?}");
    // A malformed raw transaction.
    let r = post(&url, &json!({"jsonrpc":"2.0","id":4,"method":"eth_sendRawTransaction","params":["0xdeadbeef"]}));
    assert!(r["error"].is_object(), "{r}");
    // An SSRF attempt on the exit's own machine.
    for target in
        ["http://127.0.0.1:1/", "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://10.0.0.1/"]
    {
        let fetch = Request::Http { method: "GET".into(), url: target.into(), headers: vec![], body: vec![] };
        match client.call(fetch).await {
            Err(ClientError::Status { status, message }) => {
                assert!(
                    matches!(status, ReplyStatus::Refused | ReplyStatus::BadRequest),
                    "{target}: {status:?} {message}"
                )
            }
            other => panic!("{target}: {other:?}"),
        }
    }
    // A dead upstream: a clear error, and service again once it is back.
    upstream.dead.store(true, Ordering::SeqCst);
    let r = post(&url, &json!({"jsonrpc":"2.0","id":5,"method":"eth_blockNumber","params":[]}));
    assert!(r["error"].is_object(), "{r}");
    upstream.dead.store(false, Ordering::SeqCst);
    let r = post(&url, &json!({"jsonrpc":"2.0","id":6,"method":"eth_blockNumber","params":[]}));
    assert!(r["result"].is_string(), "{r}");
    // Each exit counted what it refused or failed, by a fixed outcome label.
    let mut refusals = 0.0;
    for exit in net.layer(2) {
        let m = net.metrics_of(exit).await.unwrap();
        refusals += m
            .lines()
            .filter(|l| l.starts_with("nox_events_total{kind=\"exit_"))
            .filter(|l| !["\"request\"", "\"ok\"", "\"rpc_error\""].iter().any(|o| l.contains(&format!("outcome={o}"))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    assert!(refusals >= 5.0, "refusals and failures counted: {refusals}");

    // --- an exit killed mid-request: the client's retries move to the other exit.
    let exits = net.layer(2);
    let requests_at = |text: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with("nox_events_total{kind=\"exit_rpc_call\",outcome=\"request\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let mut before = Vec::new();
    for e in &exits {
        before.push(requests_at(&net.metrics_of(*e).await.unwrap()));
    }
    let mut quick = net.client_config(Duration::from_millis(2));
    quick.attempt_timeout = Duration::from_millis(1_500);
    let quick = Arc::new(Client::connect(quick).await.unwrap());
    let slow =
        json!({"jsonrpc":"2.0","id":9,"method":"eth_getBalance","params":[SLOW_ONCE_ADDRESS, "latest"]}).to_string();
    let pending = {
        let quick = quick.clone();
        tokio::spawn(
            async move { quick.call(Request::RpcCall { chain_id: nox_devnet::anvil::CHAIN_ID, json: slow }).await },
        )
    };
    // Find the exit serving it (its request counter moved) while the upstream holds the answer back.
    let serving = 'found: loop {
        for (i, e) in exits.iter().enumerate() {
            if requests_at(&net.metrics_of(*e).await.unwrap()) > before[i] {
                break 'found *e;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut net = net;
    net.stop_node(serving).await;
    let answer = pending.await.unwrap().expect("answered by the other exit after the retries");
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["result"], "0x0");
    if let Ok(q) = Arc::try_unwrap(quick) {
        q.shutdown().await;
    }

    proxy.stop().await;
    retrying.shutdown().await;
    if let Ok(c) = Arc::try_unwrap(client) {
        c.shutdown().await;
    }
    net.shutdown().await;
}
