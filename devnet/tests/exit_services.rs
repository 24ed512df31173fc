//! The exit's Ethereum and HTTP services, called directly (`serve(ctx,
//! request)`, no mixnet): `RpcCall` and `RawBroadcast` against a real anvil,
//! `Http` against a small HTTP server this test runs on loopback. What a
//! client would notice: answers are the upstream's JSON-RPC response objects
//! with the client's id, an upstream error ("nonce too low") arrives as that
//! JSON-RPC error, refusals are `BadRequest`/`Refused` with a reason, a dead
//! upstream is `Failed` (and is asked again once it answers), and the exit
//! never reaches a private or metadata address, however the URL or a redirect
//! names it.
//!
//! One anvil for the whole file (one test function with sections). Needs
//! `npm ci` to have run (scripts/test does it first).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope, TxLegacy};
use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, B256, TxKind, U256};
use alloy::providers::Provider;
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use nox_devnet::anvil::{Anvil, CHAIN_ID, DEPLOYER_KEY};
use nox_eth::EthClient;
use nox_node::config::ExitSection;
use nox_node::exit::http::HttpAnswer;
use nox_node::exit::{
    EthUpstream, ExitService, ExitSetupError, HttpConfig, HttpService, RawBroadcastService, RequestContext,
    RpcCallConfig, RpcCallService, ServiceError, ServiceRouter, UpstreamConfig,
};
use nox_node::metrics::Metrics;
use nox_protocol::payload::{Request, RequestKind};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn ctx(kind: RequestKind) -> RequestContext {
    RequestContext {
        request_id: [7; 16],
        kind,
        reply_budget: 1 << 20,
        deadline: Instant::now() + Duration::from_secs(30),
    }
}

fn upstream(url: &str, max_answer_bytes: usize) -> Arc<EthUpstream> {
    Arc::new(
        EthUpstream::new(UpstreamConfig {
            url: url.to_string(),
            timeout: Duration::from_secs(10),
            max_answer_bytes,
            expected_chain_id: Some(CHAIN_ID),
        })
        .unwrap(),
    )
}

async fn rpc(service: &RpcCallService, chain_id: u64, request: Value) -> Result<Value, ServiceError> {
    let request = Request::RpcCall { chain_id, json: request.to_string() };
    let data = service.serve(ctx(RequestKind::RpcCall), request).await?;
    Ok(serde_json::from_slice(&data).expect("the answer is JSON"))
}

fn call(id: Value, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn bad_request(r: Result<impl std::fmt::Debug, ServiceError>) -> String {
    match r {
        Err(ServiceError::BadRequest(m)) => m,
        other => panic!("expected BadRequest, got {other:?}"),
    }
}

fn signer() -> PrivateKeySigner {
    DEPLOYER_KEY.parse().unwrap()
}

fn transfer(chain_id: u64, nonce: u64, to: Address) -> Vec<u8> {
    let tx = TxEip1559 {
        chain_id,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: 20_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: TxKind::Call(to),
        value: U256::from(12_345),
        ..Default::default()
    };
    let sig = signer().sign_hash_sync(&tx.signature_hash()).unwrap();
    TxEnvelope::from(tx.into_signed(sig)).encoded_2718()
}

async fn broadcast(service: &RawBroadcastService, chain_id: u64, raw_tx: Vec<u8>) -> Result<Value, ServiceError> {
    let data = service.serve(ctx(RequestKind::RawBroadcast), Request::RawBroadcast { chain_id, raw_tx }).await?;
    Ok(serde_json::from_slice(&data).expect("the answer is JSON"))
}

#[tokio::test]
async fn ethereum_services_against_anvil() {
    let anvil = tokio::task::spawn_blocking(|| {
        Anvil::start(&nox_devnet::repo_root(), None).expect("start anvil (run `npm ci`)")
    })
    .await
    .unwrap();
    let url = anvil.url();
    let metrics = Metrics::new();
    let up = upstream(&url, 8 << 20);
    assert_eq!(up.check_at_start().await, Ok(Some(CHAIN_ID)));
    let rpc_call = RpcCallService::new(up.clone(), &RpcCallConfig::default(), &metrics).unwrap();
    let raw = RawBroadcastService::new(up.clone(), &metrics);
    let eth = EthClient::new(&url, Duration::from_secs(10), None).unwrap();

    // The router from [exit]: the upstream's chain is checked at start.
    let section = ExitSection {
        rpc_url: Some(url.clone()),
        rpc_call: true,
        raw_broadcast: true,
        http: true,
        ..ExitSection::default()
    };
    let router = ServiceRouter::from_config(&section, Some(CHAIN_ID), &metrics).await.unwrap();
    let kinds = [RequestKind::Echo, RequestKind::RawBroadcast, RequestKind::RpcCall, RequestKind::Http];
    assert_eq!(router.kinds(), kinds);
    let e = ServiceRouter::from_config(&section, Some(1), &metrics).await.unwrap_err();
    assert!(matches!(e, ExitSetupError::WrongChain(_)), "{e}");
    assert!(e.to_string().contains("serves chain 31337, but chain.chain_id is 1"), "{e}");

    // --- RpcCall: answers are JSON-RPC response objects with the caller's id.
    let a = rpc(&rpc_call, CHAIN_ID, call(json!(7), "eth_chainId", json!([]))).await.unwrap();
    assert_eq!(a, json!({"jsonrpc": "2.0", "id": 7, "result": "0x7a69"}));
    let a = rpc(&rpc_call, CHAIN_ID, call(json!("my-id"), "eth_blockNumber", json!([]))).await.unwrap();
    assert_eq!(a["id"], "my-id");
    let head = u64::from_str_radix(a["result"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(head, eth.block_number().await.unwrap());
    let sender = signer().address();
    let a = rpc(&rpc_call, CHAIN_ID, call(json!(null), "eth_getBalance", json!([sender, "latest"]))).await.unwrap();
    assert_eq!(a["id"], Value::Null);
    let balance = U256::from_str_radix(a["result"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(balance, eth.balance(sender).await.unwrap());
    assert!(balance > U256::ZERO);

    // An error the upstream answers is passed on as that JSON-RPC error.
    let a =
        rpc(&rpc_call, CHAIN_ID, call(json!(3), "eth_getBalance", json!(["not an address", "latest"]))).await.unwrap();
    assert_eq!(a["id"], 3);
    assert!(a["error"]["message"].is_string() && a.get("result").is_none(), "{a}");

    // Another chain, and methods outside the allowlist, never reach the upstream.
    let m = bad_request(rpc(&rpc_call, 1, call(json!(1), "eth_chainId", json!([]))).await);
    assert!(m.contains("this exit serves chain 31337"), "{m}");
    for method in ["eth_sendTransaction", "eth_accounts", "personal_sign", "debug_traceTransaction", "anvil_setBalance"]
    {
        let m = bad_request(rpc(&rpc_call, CHAIN_ID, call(json!(1), method, json!([]))).await);
        assert!(m.contains("method not offered"), "{method}: {m}");
    }
    let m = bad_request(rpc(&rpc_call, CHAIN_ID, json!([call(json!(1), "eth_chainId", json!([]))])).await);
    assert!(m.contains("batch"), "{m}");

    // --- RawBroadcast: a real signed transfer lands on chain.
    let to = Address::repeat_byte(0x42);
    let nonce = eth.provider().get_transaction_count(sender).await.unwrap();
    let tx = transfer(CHAIN_ID, nonce, to);
    let a = broadcast(&raw, CHAIN_ID, tx.clone()).await.unwrap();
    assert_eq!(a["id"], 1);
    let hash: B256 = a["result"].as_str().unwrap().parse().unwrap();
    let receipt = eth.wait_receipt("transfer", hash).await.unwrap();
    assert!(receipt.status());
    assert_eq!(eth.balance(to).await.unwrap(), U256::from(12_345));

    // The same transaction again: the upstream's "nonce too low" comes back as its JSON-RPC error.
    let a = broadcast(&raw, CHAIN_ID, tx).await.unwrap();
    let message = a["error"]["message"].as_str().unwrap_or_default().to_lowercase();
    assert!(a.get("result").is_none() && message.contains("nonce"), "{a}");

    // Refused before the upstream: another chain, no chain, garbage.
    let m = bad_request(broadcast(&raw, CHAIN_ID, transfer(1, nonce + 1, to)).await);
    assert!(m.contains("signed for another chain than 31337"), "{m}");
    let m = bad_request(broadcast(&raw, 1, transfer(1, nonce + 1, to)).await);
    assert!(m.contains("this exit serves chain 31337"), "{m}");
    let legacy = TxLegacy {
        chain_id: None,
        nonce: nonce + 1,
        gas_price: 20_000_000_000,
        gas_limit: 21_000,
        to: TxKind::Call(to),
        value: U256::from(1),
        ..Default::default()
    };
    let sig = signer().sign_hash_sync(&legacy.signature_hash()).unwrap();
    let m = bad_request(broadcast(&raw, CHAIN_ID, TxEnvelope::from(legacy.into_signed(sig)).encoded_2718()).await);
    assert!(m.contains("pre-EIP-155"), "{m}");
    for garbage in [vec![], vec![0x02, 0xff, 0x00], b"0xdeadbeef".to_vec()] {
        let m = bad_request(broadcast(&raw, CHAIN_ID, garbage).await);
        assert!(m.contains("does not decode"), "{m}");
    }
    assert_eq!(eth.provider().get_transaction_count(sender).await.unwrap(), nonce + 1, "nothing else was sent");
    let o = raw.outcomes();
    assert_eq!(
        (o.get("request"), o.get("ok"), o.get("rpc_error"), o.get("refused_chain_id"), o.get("refused_bad_tx")),
        (8, 1, 1, 2, 4)
    );

    // The receipt through RpcCall too.
    let a = rpc(&rpc_call, CHAIN_ID, call(json!(9), "eth_getTransactionReceipt", json!([hash]))).await.unwrap();
    assert_eq!(a["result"]["status"], "0x1");

    // --- eth_getLogs: a block hash or a bounded range.
    let _: Value = eth.provider().raw_request("anvil_mine".into(), (20u64,)).await.unwrap();
    let a = rpc(
        &rpc_call,
        CHAIN_ID,
        call(json!(1), "eth_getLogs", json!([{"fromBlock": "earliest", "toBlock": "latest"}])),
    )
    .await
    .unwrap();
    assert!(a["result"].is_array(), "{a}");
    let a =
        rpc(&rpc_call, CHAIN_ID, call(json!(1), "eth_getLogs", json!([{"blockHash": receipt.block_hash.unwrap()}])))
            .await
            .unwrap();
    assert!(a["result"].is_array(), "{a}");
    let m = bad_request(
        rpc(&rpc_call, CHAIN_ID, call(json!(1), "eth_getLogs", json!([{"fromBlock": "0x0", "toBlock": "0x2710"}])))
            .await,
    );
    assert!(m.contains("10001 blocks exceeds exit.rpc_max_log_blocks (10000)"), "{m}");
    // With a small bound, tags are resolved against the chain (head ≥ 21 now).
    let short =
        RpcCallService::new(up.clone(), &RpcCallConfig { max_log_blocks: 10, ..Default::default() }, &metrics).unwrap();
    for (filter, bounded) in [
        (json!({"fromBlock": "earliest"}), false),
        (json!({"fromBlock": "0x1", "toBlock": "pending"}), false),
        (json!({}), true),
        (json!({"fromBlock": "latest", "toBlock": "pending"}), true),
    ] {
        let r = rpc(&short, CHAIN_ID, call(json!(1), "eth_getLogs", json!([filter.clone()]))).await;
        if bounded {
            assert!(r.unwrap()["result"].is_array(), "{filter}");
        } else {
            let m = bad_request(r);
            assert!(m.contains("exceeds exit.rpc_max_log_blocks (10)"), "{filter}: {m}");
        }
    }
    // `finalized` as the lower end is its block's number, as the upstream says.
    let finalized: Value =
        eth.provider().raw_request("eth_getBlockByNumber".into(), ("finalized", false)).await.unwrap();
    let finalized = u64::from_str_radix(finalized["number"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    let head = eth.block_number().await.unwrap();
    let r = rpc(&short, CHAIN_ID, call(json!(1), "eth_getLogs", json!([{"fromBlock": "finalized"}]))).await;
    if head - finalized < 10 {
        assert!(r.unwrap()["result"].is_array());
    } else {
        let m = bad_request(r);
        assert!(m.contains(&format!("over {} blocks", head - finalized + 1)), "{m}");
    }

    // --- The answer cap: a block is longer than 300 bytes.
    let capped = RpcCallService::new(upstream(&url, 300), &RpcCallConfig::default(), &metrics).unwrap();
    let m = bad_request(rpc(&capped, CHAIN_ID, call(json!(1), "eth_getBlockByNumber", json!(["latest", true]))).await);
    assert!(m.contains("exceeds exit.rpc_max_answer_bytes (300)"), "{m}");
    assert!(rpc(&capped, CHAIN_ID, call(json!(1), "eth_blockNumber", json!([]))).await.is_ok());

    let o = rpc_call.outcomes();
    assert_eq!(o.get("refused_method"), 5);
    assert_eq!(o.get("refused_chain_id"), 1);
    // (Services on one registry share their counters.)
    assert!(o.get("ok") >= 6 && o.get("rpc_error") == 1, "{}", metrics.render());
    assert_eq!(capped.outcomes().get("refused_too_large"), 1);
    let text = metrics.render();
    assert!(text.contains(r#"nox_events_total{kind="exit_rpc_call",outcome="refused_log_range"} "#), "{text}");
    drop(anvil);
}

/// A JSON-RPC server on `listener` answering `eth_chainId` with anvil's chain
/// and `eth_blockNumber` with 0x10; records the ids it was sent.
async fn fake_upstream(listener: TcpListener, ids: Arc<Mutex<Vec<Value>>>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { return };
        let ids = ids.clone();
        tokio::spawn(async move {
            let Some((_, _, _, body)) = read_request(&mut stream).await else { return };
            let req: Value = serde_json::from_slice(&body).unwrap_or_default();
            ids.lock().unwrap().push(req["id"].clone());
            let result = match req["method"].as_str() {
                Some("eth_chainId") => json!(format!("{CHAIN_ID:#x}")),
                _ => json!("0x10"),
            };
            let answer = json!({"jsonrpc": "2.0", "id": req["id"], "result": result}).to_string();
            respond(&mut stream, "200 OK", &[("content-type", "application/json")], answer.as_bytes()).await;
        });
    }
}

#[tokio::test]
async fn a_dead_upstream_fails_and_is_asked_again_once_it_answers() {
    let metrics = Metrics::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let up = upstream(&format!("http://127.0.0.1:{port}"), 1 << 20);
    assert_eq!(up.check_at_start().await, Ok(None), "a dead upstream does not stop the start");
    let rpc_call = RpcCallService::new(up.clone(), &RpcCallConfig::default(), &metrics).unwrap();
    let raw = RawBroadcastService::new(up.clone(), &metrics);

    let r = rpc(&rpc_call, CHAIN_ID, call(json!(1), "eth_blockNumber", json!([]))).await;
    assert!(matches!(&r, Err(ServiceError::Failed(m)) if m.contains("unreachable")), "{r:?}");
    let r = broadcast(&raw, CHAIN_ID, transfer(CHAIN_ID, 0, Address::ZERO)).await;
    assert!(matches!(&r, Err(ServiceError::Failed(m)) if m.contains("unreachable")), "{r:?}");
    assert_eq!(rpc_call.outcomes().get("upstream_failed"), 1);
    assert_eq!(raw.outcomes().get("upstream_failed"), 1);
    // What the exit refuses by itself needs no upstream.
    let m = bad_request(broadcast(&raw, CHAIN_ID, vec![0xde, 0xad]).await);
    assert!(m.contains("does not decode"), "{m}");
    let m = bad_request(rpc(&rpc_call, CHAIN_ID, call(json!(1), "eth_sendTransaction", json!([]))).await);
    assert!(m.contains("method not offered"), "{m}");

    // The upstream comes up: the chain id is looked up again, and the caller's id never reaches it.
    let ids = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let server = tokio::spawn(fake_upstream(listener, ids.clone()));
    let a = rpc(&rpc_call, CHAIN_ID, call(json!(123_456), "eth_blockNumber", json!([]))).await.unwrap();
    assert_eq!(a, json!({"jsonrpc": "2.0", "id": 123_456, "result": "0x10"}));
    assert_eq!(up.known_chain_id(), Some(CHAIN_ID));
    let seen = ids.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "eth_chainId, then the call: {seen:?}");
    assert!(seen.iter().all(|id| id.is_u64() && *id != json!(123_456)), "fresh ids upstream: {seen:?}");
    server.abort();
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// Reads one HTTP/1.1 request: method, path, headers (lower-case names), body.
async fn read_request(stream: &mut TcpStream) -> Option<(String, String, Vec<(String, String)>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap_or(0));
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((method, path, headers, body))
}

async fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, &str)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
}

/// A small HTTP server on 127.0.0.1; counts the connections it accepts.
async fn http_server() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Some((method, path, headers, body)) = read_request(&mut stream).await else { return };
                let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
                match path.as_str() {
                    "/hello" => respond(&mut stream, "200 OK", &[("x-test", "1")], b"hello").await,
                    "/echo" => {
                        // What arrived: the method, the Host header, whether hop-by-hop ones got through.
                        let seen = json!({
                            "method": method,
                            "host": header("host"),
                            "secret": header("x-secret"),
                            "keep_alive": header("keep-alive"),
                            "custom": header("x-custom"),
                            "body": String::from_utf8_lossy(&body),
                        });
                        respond(
                            &mut stream,
                            "200 OK",
                            &[("content-type", "application/json")],
                            seen.to_string().as_bytes(),
                        )
                        .await
                    }
                    "/declared-big" => respond(&mut stream, "200 OK", &[], &vec![b'x'; 5000]).await,
                    "/undeclared-big" => {
                        // No length: the body runs until the connection closes.
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n").await;
                        for _ in 0..100 {
                            if stream.write_all(&[b'y'; 1000]).await.is_err() {
                                break;
                            }
                        }
                        let _ = stream.shutdown().await;
                    }
                    "/to-hello" => respond(&mut stream, "302 Found", &[("location", "/hello")], b"").await,
                    "/post-see-other" => respond(&mut stream, "303 See Other", &[("location", "/echo")], b"").await,
                    "/to-private" => respond(&mut stream, "302 Found", &[("location", "http://10.0.0.1/")], b"").await,
                    "/to-metadata" => {
                        respond(
                            &mut stream,
                            "307 Temporary Redirect",
                            &[("location", "http://169.254.169.254/latest/meta-data/")],
                            b"",
                        )
                        .await
                    }
                    "/to-decimal-metadata" => {
                        respond(&mut stream, "301 Moved Permanently", &[("location", "http://2852039166/")], b"").await
                    }
                    "/loop" => respond(&mut stream, "302 Found", &[("location", "/loop")], b"").await,
                    _ => respond(&mut stream, "404 Not Found", &[], b"no").await,
                }
            });
        }
    });
    (base, connections, task)
}

async fn fetch(
    service: &HttpService,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpAnswer, ServiceError> {
    let request = Request::Http {
        method: method.into(),
        url: url.into(),
        headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        body: body.to_vec(),
    };
    let data = service.serve(ctx(RequestKind::Http), request).await?;
    Ok(HttpAnswer::decode(&data).expect("the answer decodes"))
}

fn header<'a>(a: &'a HttpAnswer, name: &str) -> Option<&'a [u8]> {
    a.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
}

#[tokio::test]
async fn http_service_against_a_local_server() {
    let (base, connections, server) = http_server().await;
    let metrics = Metrics::new();
    let cfg = HttpConfig { max_bytes: 4096, max_redirects: 3, allow_loopback: true, ..HttpConfig::default() };
    let http = HttpService::new(cfg, &metrics).unwrap();

    // GET, with the server's status, headers and body.
    let a = fetch(&http, "GET", &format!("{base}/hello"), &[], b"").await.unwrap();
    assert_eq!((a.status, a.body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(header(&a, "x-test"), Some(&b"1"[..]));
    assert_eq!(header(&a, "connection"), None, "hop-by-hop headers are not passed back");
    let a = fetch(&http, "GET", &format!("{base}/nowhere"), &[], b"").await.unwrap();
    assert_eq!(a.status, 404, "an HTTP error status is an answer");

    // POST: the body arrives; Host comes from the URL; hop-by-hop headers are dropped.
    let headers = [
        ("Host", "evil.example"),
        ("Connection", "X-Secret"),
        ("X-Secret", "s"),
        ("Keep-Alive", "timeout=1"),
        ("X-Custom", "kept"),
        ("Content-Type", "text/plain"),
    ];
    let a = fetch(&http, "POST", &format!("{base}/echo"), &headers, b"payload").await.unwrap();
    let seen: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body"], "payload");
    assert_eq!(seen["host"], base.trim_start_matches("http://"));
    assert_eq!((seen["secret"].clone(), seen["keep_alive"].clone()), (Value::Null, Value::Null));
    assert_eq!(seen["custom"], "kept");

    // Redirects: followed and checked; a 303 after POST continues as a bodiless GET.
    let a = fetch(&http, "GET", &format!("{base}/to-hello"), &[], b"").await.unwrap();
    assert_eq!((a.status, a.body.as_slice()), (200, &b"hello"[..]));
    let a = fetch(&http, "POST", &format!("{base}/post-see-other"), &[], b"payload").await.unwrap();
    let seen: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!((seen["method"].as_str(), seen["body"].as_str()), (Some("GET"), Some("")));
    let r = fetch(&http, "GET", &format!("{base}/loop"), &[], b"").await;
    assert!(matches!(&r, Err(ServiceError::Failed(m)) if m.contains("more than 3 redirects")), "{r:?}");

    // Loopback is allowed here, private and metadata addresses never, however a redirect names them.
    for (path, class) in
        [("/to-private", "private"), ("/to-metadata", "cloud metadata"), ("/to-decimal-metadata", "cloud metadata")]
    {
        let r = fetch(&http, "GET", &format!("{base}{path}"), &[], b"").await;
        assert!(matches!(&r, Err(ServiceError::Refused(m)) if m.contains(class)), "{path}: {r:?}");
    }
    assert_eq!(http.outcomes().get("refused_ssrf_private"), 1);
    assert_eq!(http.outcomes().get("refused_ssrf_metadata"), 2);

    // The size cap, whether the server announces the length or not.
    let m = bad_request(fetch(&http, "GET", &format!("{base}/declared-big"), &[], b"").await);
    assert_eq!(m, "answer of 5000 bytes exceeds exit.http_max_bytes (4096)");
    let m = bad_request(fetch(&http, "GET", &format!("{base}/undeclared-big"), &[], b"").await);
    assert!(m.contains("answer of more than 4096 bytes exceeds exit.http_max_bytes"), "{m}");

    // Other methods and schemes are refused.
    let m = bad_request(fetch(&http, "DELETE", &format!("{base}/hello"), &[], b"").await);
    assert!(m.contains("GET and POST"), "{m}");
    let m = bad_request(fetch(&http, "GET", "file:///etc/passwd", &[], b"").await);
    assert!(m.contains("http://"), "{m}");

    // A production exit (loopback not allowed) never connects to the server.
    let strict = HttpService::new(HttpConfig::default(), &metrics).unwrap();
    let before = connections.load(Ordering::SeqCst);
    let port = base.rsplit(':').next().unwrap();
    for url in [
        format!("{base}/hello"),
        format!("http://localhost:{port}/hello"),
        format!("http://2130706433:{port}/hello"),
        format!("http://[::ffff:127.0.0.1]:{port}/hello"),
    ] {
        let r = fetch(&strict, "GET", &url, &[], b"").await;
        assert!(matches!(&r, Err(ServiceError::Refused(m)) if m.contains("loopback")), "{url}: {r:?}");
    }
    assert_eq!(connections.load(Ordering::SeqCst), before, "no connection reached the server");
    assert_eq!(strict.outcomes().get("refused_ssrf_loopback"), 4);
    server.abort();
}
