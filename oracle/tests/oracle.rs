//! The oracle end to end, against local HTTP servers that answer in the
//! Binance, CoinGecko and Coinbase formats.
//!
//! The real APIs are out of reach here (tests talk to loopback only), so
//! each source is an axum server on 127.0.0.1:0 speaking the documented
//! request and response formats (`/api/v3/ticker/price?symbols=[…]`,
//! `/api/v3/simple/price?ids=…&vs_currencies=usd&include_last_updated_at=true`,
//! `/v2/prices/{pair}/spot`), told per test what to answer: prices, garbage,
//! an error status, or nothing in time. The network side is a real
//! `nox_net::p2p` peer on loopback. Intervals are 200 ms, timeouts about 1 s.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use ed25519_dalek::SigningKey;
use nox_config::ConfigFile;
use nox_oracle::config::{AssetEntry, OracleConfig};
use nox_oracle::http::HealthReport;
use nox_oracle::source::{Asset, Binance, Coinbase, Coingecko, PriceSource, SourceFailure, SourceId, SourceSettings};
use nox_oracle::{Oracle, PriceRound};
use nox_protocol::price::{ETH, PriceBook, SOURCE_BINANCE, SOURCE_COINBASE, SOURCE_COINGECKO, Trust};

// ---------------------------------------------------------------------------
// A fake source

/// What a fake source answers.
#[derive(Debug, Clone)]
enum Answer {
    /// Prices by the source's own name (`ETHUSDT`, `ethereum`, `ETH-USD`), as text.
    Prices(HashMap<String, String>),
    /// This status and body, whatever the request.
    Raw(u16, String),
    /// Nothing for this long.
    Slow(Duration),
}

#[derive(Debug)]
struct FakeState {
    answer: Answer,
    /// CoinGecko's `last_updated_at`; `None`: now.
    updated_at: Option<u64>,
    /// The last `x-cg-demo-api-key` header seen.
    api_key: Option<String>,
    requests: u64,
}

#[derive(Clone)]
struct Fake {
    addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

impl Fake {
    async fn start(answer: Answer) -> Fake {
        let state = Arc::new(Mutex::new(FakeState { answer, updated_at: None, api_key: None, requests: 0 }));
        let app = Router::new()
            .route("/api/v3/ticker/price", get(binance))
            .route("/api/v3/simple/price", get(coingecko))
            .route("/v2/prices/{pair}/spot", get(coinbase))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Fake { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, answer: Answer) {
        self.state.lock().unwrap().answer = answer;
    }
}

/// ETH and USDC at these prices, under every source's names.
fn prices(eth: &str, usdc: &str) -> Answer {
    let mut m = HashMap::new();
    for name in ["ETHUSDT", "ethereum", "ETH-USD"] {
        m.insert(name.to_string(), eth.to_string());
    }
    for name in ["USDCUSDT", "usd-coin", "USDC-USD"] {
        m.insert(name.to_string(), usdc.to_string());
    }
    Answer::Prices(m)
}

type Reply = (StatusCode, String);

/// The common part: count, wait, or answer raw; else the price table.
async fn prelude(state: &Arc<Mutex<FakeState>>) -> Result<HashMap<String, String>, Reply> {
    let answer = {
        let mut s = state.lock().unwrap();
        s.requests += 1;
        s.answer.clone()
    };
    match answer {
        Answer::Prices(p) => Ok(p),
        Answer::Raw(status, body) => Err((StatusCode::from_u16(status).unwrap(), body)),
        Answer::Slow(d) => {
            tokio::time::sleep(d).await;
            Err((StatusCode::OK, "[]".into()))
        }
    }
}

async fn binance(State(s): State<Arc<Mutex<FakeState>>>, Query(q): Query<HashMap<String, String>>) -> Reply {
    let table = match prelude(&s).await {
        Ok(t) => t,
        Err(reply) => return reply,
    };
    if let Some(one) = q.get("symbol") {
        return match table.get(one) {
            Some(p) => (StatusCode::OK, serde_json::json!({ "symbol": one, "price": p }).to_string()),
            None => (StatusCode::BAD_REQUEST, r#"{"code":-1121,"msg":"Invalid symbol."}"#.into()),
        };
    }
    let Some(Ok(symbols)) = q.get("symbols").map(|v| serde_json::from_str::<Vec<String>>(v)) else {
        return (
            StatusCode::BAD_REQUEST,
            r#"{"code":-1100,"msg":"Illegal characters found in parameter 'symbols'"}"#.into(),
        );
    };
    let mut out = Vec::new();
    for sym in symbols {
        match table.get(&sym) {
            Some(p) => out.push(serde_json::json!({ "symbol": sym, "price": p })),
            // Binance refuses the whole batch for one unknown symbol.
            None => return (StatusCode::BAD_REQUEST, r#"{"code":-1121,"msg":"Invalid symbol."}"#.into()),
        }
    }
    (StatusCode::OK, serde_json::Value::Array(out).to_string())
}

async fn coingecko(
    State(s): State<Arc<Mutex<FakeState>>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    s.lock().unwrap().api_key = headers.get("x-cg-demo-api-key").and_then(|v| v.to_str().ok()).map(str::to_string);
    let table = match prelude(&s).await {
        Ok(t) => t,
        Err(reply) => return reply,
    };
    if q.get("vs_currencies").map(String::as_str) != Some("usd")
        || q.get("include_last_updated_at").map(String::as_str) != Some("true")
    {
        return (StatusCode::BAD_REQUEST, r#"{"error":"missing vs_currencies"}"#.into());
    }
    let updated = s.lock().unwrap().updated_at.unwrap_or_else(now_secs);
    // Prices go out as the JSON number text they were given (CoinGecko sends numbers).
    let entries: Vec<String> = q
        .get("ids")
        .map(|ids| ids.split(',').collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|id| table.get(id).map(|p| format!(r#""{id}":{{"usd":{p},"last_updated_at":{updated}}}"#)))
        .collect();
    (StatusCode::OK, format!("{{{}}}", entries.join(",")))
}

async fn coinbase(State(s): State<Arc<Mutex<FakeState>>>, UrlPath(pair): UrlPath<String>) -> Reply {
    let table = match prelude(&s).await {
        Ok(t) => t,
        Err(reply) => return reply,
    };
    match table.get(&pair) {
        Some(p) => {
            let base = pair.split('-').next().unwrap_or_default();
            (
                StatusCode::OK,
                serde_json::json!({ "data": { "amount": p, "base": base, "currency": "USD" } }).to_string(),
            )
        }
        None => (StatusCode::NOT_FOUND, r#"{"errors":[{"id":"not_found","message":"Invalid currency"}]}"#.into()),
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

// ---------------------------------------------------------------------------
// Oracle set-up

const CHAIN: u64 = 31337;
const USDC: &str = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";

/// An address nobody listens on.
async fn closed_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

fn asset(symbol: &str, token: &str, decimals: u8, b: &str, g: &str, c: &str) -> AssetEntry {
    AssetEntry {
        symbol: symbol.into(),
        token: token.into(),
        decimals,
        binance: Some(b.into()),
        coingecko: Some(g.into()),
        coinbase: Some(c.into()),
    }
}

fn config(dir: &Path, binance: &str, coingecko: &str, coinbase: &str) -> OracleConfig {
    let mut c = OracleConfig::default();
    c.oracle.key_file = dir.join("oracle.key");
    c.oracle.state_dir = dir.join("state");
    c.oracle.chain_id = CHAIN;
    c.oracle.interval_ms = 200;
    c.p2p.listen = Vec::new();
    c.p2p.redial_secs = 1;
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.binance.url = binance.into();
    c.coingecko.url = coingecko.into();
    c.coinbase.url = coinbase.into();
    c.binance.timeout_ms = 1000;
    c.coingecko.timeout_ms = 1000;
    c.coinbase.timeout_ms = 1000;
    c.assets = vec![
        asset("ETH", "0x0000000000000000000000000000000000000000", 18, "ETHUSDT", "ethereum", "ETH-USD"),
        asset("USDC", USDC, 6, "USDCUSDT", "usd-coin", "USDC-USD"),
    ];
    c.validate().unwrap();
    c
}

fn key() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

/// Waits for a round with a number above `after`.
async fn next_round(oracle: &Oracle, after: u64) -> PriceRound {
    let mut rx = oracle.rounds();
    let r = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|r| r.as_ref().is_some_and(|r| r.round > after)))
        .await
        .expect("a round within 5 s")
        .unwrap()
        .clone();
    r.unwrap()
}

async fn http_get(url: String) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn three_sources(eth: [&str; 3]) -> [Fake; 3] {
    [
        Fake::start(prices(eth[0], "1.0001")).await,
        Fake::start(prices(eth[1], "1.0000")).await,
        Fake::start(prices(eth[2], "0.9999")).await,
    ]
}

// ---------------------------------------------------------------------------
// Sources, one by one

fn assets() -> Vec<Asset> {
    config(Path::new("/tmp"), "http://a", "http://b", "http://c").assets()
}

fn settings(url: &str, timeout_ms: u64) -> SourceSettings {
    SourceSettings { url: url.into(), timeout: Duration::from_millis(timeout_ms) }
}

#[tokio::test]
async fn test_each_source_reads_its_real_format_exactly() {
    let fake = Fake::start(prices("3012.34000000", "0.99990000")).await;
    let b = Binance::new(&settings(&fake.url(), 1000)).unwrap().fetch(&assets()).await.unwrap();
    assert_eq!(b.quotes.iter().map(|q| q.price).collect::<Vec<_>>(), vec![301_234_000_000, 99_990_000]);
    assert!(b.failures.is_empty());

    // CoinGecko sends numbers; 1e-5 must come out exact, and the key is sent.
    fake.set(prices("3012.34", "1e-5"));
    fake.state.lock().unwrap().updated_at = Some(1_732_900_000);
    let g =
        Coingecko::new(&settings(&fake.url(), 1000), Some("demo-key".into())).unwrap().fetch(&assets()).await.unwrap();
    assert_eq!(g.quotes.iter().map(|q| q.price).collect::<Vec<_>>(), vec![301_234_000_000, 1_000]);
    assert_eq!(g.quotes[0].updated_at, Some(1_732_900_000));
    assert_eq!(fake.state.lock().unwrap().api_key.as_deref(), Some("demo-key"));

    fake.set(prices("3012.34", "1.00"));
    let c = Coinbase::new(&settings(&fake.url(), 1000)).unwrap().fetch(&assets()).await.unwrap();
    assert_eq!(c.quotes.iter().map(|q| q.price).collect::<Vec<_>>(), vec![301_234_000_000, 100_000_000]);
}

#[tokio::test]
async fn test_revert_when_a_source_answers_garbage_the_error_is_typed_and_names_it() {
    let fake = Fake::start(Answer::Raw(200, "{not json".into())).await;
    let binance = Binance::new(&settings(&fake.url(), 1000)).unwrap();
    let gecko = Coingecko::new(&settings(&fake.url(), 1000), None).unwrap();
    let coinbase = Coinbase::new(&settings(&fake.url(), 1000)).unwrap();

    for source in [&binance as &dyn PriceSource, &gecko, &coinbase] {
        let e = source.fetch(&assets()).await.unwrap_err();
        assert_eq!(e.id, source.id());
        assert!(matches!(e.failure, SourceFailure::Garbage { .. }), "{e}");
        assert!(e.to_string().starts_with(source.id().name()), "{e}");
        assert!(e.to_string().contains("{not json"), "the excerpt is quoted: {e}");
    }

    // The wrong shape.
    fake.set(Answer::Raw(200, r#"{"symbol":"ETHUSDT"}"#.into()));
    assert!(matches!(binance.fetch(&assets()).await.unwrap_err().failure, SourceFailure::Garbage { .. }));

    // A price that is not a price: that asset fails, the other is priced.
    let mut table = match prices("NaN", "1.0") {
        Answer::Prices(t) => t,
        _ => unreachable!(),
    };
    fake.set(Answer::Prices(table.clone()));
    let f = binance.fetch(&assets()).await.unwrap();
    assert_eq!(f.quotes.len(), 1);
    assert!(
        matches!(&f.failures[0].failure, SourceFailure::BadPrice { symbol, .. } if symbol == "ETH"),
        "{:?}",
        f.failures
    );
    table.insert("ethereum".into(), "-3000.5".into());
    fake.set(Answer::Prices(table.clone()));
    let f = gecko.fetch(&assets()).await.unwrap();
    assert_eq!(f.failures[0].id, SourceId::Coingecko);
    assert!(f.failures[0].to_string().contains("negative"), "{}", f.failures[0]);

    // An error status, and a pair the source does not know.
    fake.set(Answer::Raw(503, "maintenance".into()));
    let e = binance.fetch(&assets()).await.unwrap_err();
    assert_eq!(e.failure, SourceFailure::Status { status: 503, excerpt: "maintenance".into() });
    table.remove("USDC-USD");
    table.insert("ETH-USD".into(), "3000".into());
    fake.set(Answer::Prices(table));
    let f = coinbase.fetch(&assets()).await.unwrap();
    assert!(matches!(&f.failures[0].failure, SourceFailure::Missing { symbol, .. } if symbol == "USDC"));
    // Binance refuses a batch with an unknown symbol; each is then asked alone.
    let mut table = match prices("3000", "1") {
        Answer::Prices(t) => t,
        _ => unreachable!(),
    };
    table.remove("USDCUSDT");
    fake.set(Answer::Prices(table));
    let f = binance.fetch(&assets()).await.unwrap();
    assert_eq!(f.quotes.len(), 1);
    assert_eq!(f.quotes[0].price, 300_000_000_000);
    assert!(matches!(&f.failures[0].failure, SourceFailure::Missing { symbol, .. } if symbol == "USDC"));
}

#[tokio::test]
async fn test_revert_when_a_source_is_down_or_slow_it_fails_within_its_timeout() {
    let down = closed_url().await;
    let e = Binance::new(&settings(&down, 1000)).unwrap().fetch(&assets()).await.unwrap_err();
    assert!(matches!(e.failure, SourceFailure::Unreachable(_)), "{e}");
    let e = Coinbase::new(&settings(&down, 1000)).unwrap().fetch(&assets()).await.unwrap_err();
    assert!(matches!(e.failure, SourceFailure::Unreachable(_)), "{e}");

    let slow = Fake::start(Answer::Slow(Duration::from_secs(3))).await;
    let started = std::time::Instant::now();
    let e = Coingecko::new(&settings(&slow.url(), 300), None).unwrap().fetch(&assets()).await.unwrap_err();
    assert_eq!(e.failure, SourceFailure::Timeout(300));
    assert!(started.elapsed() < Duration::from_secs(2));
}

// ---------------------------------------------------------------------------
// Rounds

#[tokio::test]
async fn test_a_source_down_leaves_two_that_still_publish() {
    let dir = tempfile::tempdir().unwrap();
    let [_, gecko, coinbase] = three_sources(["3000", "3000", "3002"]).await;
    let cfg = config(dir.path(), &closed_url().await, &gecko.url(), &coinbase.url());
    let oracle = Oracle::start_with_key(cfg, key()).await.unwrap();
    let round = next_round(&oracle, 0).await;
    let eth = round.quote(&ETH).unwrap();
    assert_eq!(eth.sources, SOURCE_COINGECKO | SOURCE_COINBASE);
    assert_eq!(eth.price, 300_100_000_000, "the midpoint of the two");
    assert_eq!(eth.price_decimals, 8);
    assert!(round.verify());
    assert!(oracle.metrics().source_errors_value(SourceId::Binance, "unreachable") >= 1);
    let (status, body) = http_get(format!("http://{}/health", oracle.http_addr)).await;
    let health: HealthReport = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(health.sources.get("binance"), Some(&false));
    assert_eq!(health.sources.get("coinbase"), Some(&true));
    oracle.shutdown().await;
}

#[tokio::test]
async fn test_garbage_from_one_source_still_publishes_from_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let [binance, gecko, coinbase] = three_sources(["3000", "3001", "3002"]).await;
    binance.set(Answer::Raw(200, r#"[{"symbol":"ETHUSDT","price":"NaN"}"#.into()));
    let cfg = config(dir.path(), &binance.url(), &gecko.url(), &coinbase.url());
    let oracle = Oracle::start_with_key(cfg, key()).await.unwrap();
    let round = next_round(&oracle, 0).await;
    assert_eq!(round.quote(&ETH).unwrap().sources, SOURCE_COINGECKO | SOURCE_COINBASE);
    assert!(oracle.metrics().source_errors_value(SourceId::Binance, "garbage") >= 1);
    // Now a negative price: that asset fails at Binance, the round goes on.
    binance.set(prices("-3000", "1"));
    let later = next_round(&oracle, round.round + 1).await;
    assert_eq!(later.quote(&ETH).unwrap().sources, SOURCE_COINGECKO | SOURCE_COINBASE);
    assert!(oracle.metrics().source_errors_value(SourceId::Binance, "bad_price") >= 1);
    oracle.shutdown().await;
}

#[tokio::test]
async fn test_a_disagreeing_source_is_discarded_and_the_others_set_the_price() {
    let dir = tempfile::tempdir().unwrap();
    // Coinbase is 10 % off; the limit is 2 %.
    let [binance, gecko, coinbase] = three_sources(["3000", "3002", "3300"]).await;
    let cfg = config(dir.path(), &binance.url(), &gecko.url(), &coinbase.url());
    let oracle = Oracle::start_with_key(cfg, key()).await.unwrap();
    let round = next_round(&oracle, 0).await;
    let eth = round.quote(&ETH).unwrap();
    assert_eq!(eth.sources, SOURCE_BINANCE | SOURCE_COINGECKO);
    assert_eq!(eth.price, 300_100_000_000, "the median of the two that agree");
    assert!(oracle.metrics().discarded_value(SourceId::Coinbase, "outlier") >= 1);
    let usdc = round.quotes.iter().find(|q| q.symbol == "USDC").unwrap();
    assert_eq!(usdc.sources, SOURCE_BINANCE | SOURCE_COINGECKO | SOURCE_COINBASE);
    let (_, text) = http_get(format!("http://{}/metrics", oracle.http_addr)).await;
    assert!(text.contains("nox_oracle_quotes_discarded_total{source=\"coinbase\",reason=\"outlier\"}"), "{text}");
    assert!(text.contains("nox_oracle_deviation_bps{asset=\"ETH\",source=\"coinbase\"} 992"), "{text}");
    oracle.shutdown().await;
}

#[tokio::test]
async fn test_a_stale_coingecko_price_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let [binance, gecko, coinbase] = three_sources(["3000", "3001", "3002"]).await;
    gecko.state.lock().unwrap().updated_at = Some(now_secs() - 600);
    let cfg = config(dir.path(), &binance.url(), &gecko.url(), &coinbase.url());
    let oracle = Oracle::start_with_key(cfg, key()).await.unwrap();
    let round = next_round(&oracle, 0).await;
    assert_eq!(round.quote(&ETH).unwrap().sources, SOURCE_BINANCE | SOURCE_COINBASE);
    assert!(oracle.metrics().discarded_value(SourceId::Coingecko, "stale") >= 1);
    oracle.shutdown().await;
}

#[tokio::test]
async fn test_revert_when_only_one_source_answers_nothing_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let gecko = Fake::start(prices("3000", "1")).await;
    let cfg = config(dir.path(), &closed_url().await, &gecko.url(), &closed_url().await);
    let oracle = Oracle::start_with_key(cfg, key()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while oracle.metrics().rounds_withheld_value("no_asset_priced") < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no withheld round counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(oracle.latest_round().is_none());
    assert_eq!(oracle.metrics().rounds_published_value(), 0);
    let (status, body) = http_get(format!("http://{}/health", oracle.http_addr)).await;
    assert_eq!(status, 503, "{body}");
    let health: HealthReport = serde_json::from_str(&body).unwrap();
    assert_eq!(health.last_round, None);
    let (_, text) = http_get(format!("http://{}/metrics", oracle.http_addr)).await;
    assert!(text.contains("nox_oracle_assets_withheld_total{asset=\"ETH\",reason=\"too_few_sources\"}"), "{text}");
    oracle.shutdown().await;
    assert!(!dir.path().join("state").join("round.json").exists(), "no round number was used");
}

#[tokio::test]
async fn test_a_published_round_is_accepted_by_a_price_book_trusting_the_oracle() {
    let dir = tempfile::tempdir().unwrap();
    let [binance, gecko, coinbase] = three_sources(["3000", "3001", "3002"]).await;
    let cfg = config(dir.path(), &binance.url(), &gecko.url(), &coinbase.url());
    let oracle = Oracle::start_with_key(cfg, key()).await.unwrap();
    let round = next_round(&oracle, 0).await;
    let mut book = PriceBook::new(Trust {
        chain_id: CHAIN,
        oracles: vec![oracle.public_key],
        threshold: 1,
        max_age_ms: 60_000,
        max_skew_ms: 5_000,
    })
    .unwrap();
    book.accept_bytes(&round.encode(), now_ms()).unwrap();
    let next = next_round(&oracle, round.round).await;
    book.accept_bytes(&next.encode(), now_ms()).unwrap();
    let eth = book.price(&ETH, now_ms()).unwrap();
    assert_eq!(eth.usd, 3001 * 10u128.pow(18));
    // 1 ETH in USDC base units at ETH 3001 and USDC 1.0000.
    let usdc: [u8; 20] = hex::decode(&USDC[2..]).unwrap().try_into().unwrap();
    assert_eq!(book.wei_to_token(10u128.pow(18), &usdc, now_ms()).unwrap(), 3_001_000_000);
    oracle.shutdown().await;
}

#[tokio::test]
async fn test_round_numbers_keep_increasing_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let [binance, gecko, coinbase] = three_sources(["3000", "3001", "3002"]).await;
    let cfg = config(dir.path(), &binance.url(), &gecko.url(), &coinbase.url());
    let key = key();
    nox_oracle::key_file::write(&cfg.oracle.key_file, &key).unwrap();
    let first = Oracle::start(cfg.clone()).await.unwrap();
    let before = next_round(&first, 1).await;
    first.shutdown().await;
    let stored = nox_oracle::round_store::RoundStore::open(&cfg.oracle.state_dir).unwrap().load().unwrap();
    assert!(stored.round >= before.round);

    let second = Oracle::start(cfg).await.unwrap();
    let after = next_round(&second, 0).await;
    assert_eq!(after.round, stored.round + 1);
    assert!(after.timestamp_ms >= before.timestamp_ms);
    assert_eq!(after.oracle, before.oracle);
    second.shutdown().await;
}

// ---------------------------------------------------------------------------
// The network

#[tokio::test]
async fn test_the_oracle_says_hello_and_its_rounds_arrive_on_the_price_topic() {
    use nox_net::p2p::{self, Command, ControlRequest, ControlResponse, Event, P2pConfig, PRICE_TOPIC, PeerKind};

    // A node stand-in: welcomes the oracle, hands over what arrives.
    let node_key = key();
    let (mut node, mut events, _swarm) = p2p::spawn(
        p2p::keypair_from_identity(&node_key).unwrap(),
        P2pConfig { listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], ..P2pConfig::default() },
    )
    .unwrap();
    let addr = node.wait_listening().await.remove(0);
    let (seen_tx, mut seen) = tokio::sync::mpsc::channel(64);
    let handle = node.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            let _ = seen_tx.send(format!("{ev:?}")).await;
            match ev {
                Event::Request { request: ControlRequest::Hello { kind, .. }, channel, .. } => {
                    let _ = seen_tx.send(format!("hello from {kind:?}")).await;
                    let response = ControlResponse::Welcome { kind: PeerKind::Oracle };
                    handle.command(Command::Respond { channel, response }).await.unwrap();
                }
                Event::Connected { peer } => {
                    let hello = ControlRequest::Hello { version: p2p::CONTROL_VERSION, kind: PeerKind::Node };
                    handle.command(Command::Request { peer, request: hello }).await.unwrap();
                }
                Event::Gossip { source, message_id, topic, data } => {
                    let round = PriceRound::decode(&data).ok().filter(|r| r.verify());
                    let ok = topic == PRICE_TOPIC && round.is_some();
                    handle.command(Command::Validate { message_id, source, accept: ok }).await.unwrap();
                    if let Some(r) = round.filter(|_| ok) {
                        let _ = seen_tx.send(format!("round {} by {}", r.round, hex::encode(r.oracle))).await;
                    }
                }
                _ => {}
            }
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let [binance, gecko, coinbase] = three_sources(["3000", "3001", "3002"]).await;
    let mut cfg = config(dir.path(), &binance.url(), &gecko.url(), &coinbase.url());
    cfg.p2p.bootstrap = vec![format!("{addr}/p2p/{}", node.peer_id)];
    cfg.validate().unwrap();
    let oracle = Oracle::start_with_key(cfg, key()).await.unwrap();
    let oracle_hex = hex::encode(oracle.public_key);

    let mut said_hello = false;
    let mut welcomed_us = false;
    let got_round = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(line) = seen.recv().await {
            said_hello |= line == "hello from Oracle";
            welcomed_us |= line.starts_with("Response") && line.contains("Welcome") && line.contains("Node");
            if line.starts_with("round ") && line.ends_with(&oracle_hex) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(said_hello, "the oracle introduced itself as an oracle");
    assert!(welcomed_us, "the oracle answered our hello with Welcome {{ Node }}");
    assert!(got_round, "a verified round arrived on {PRICE_TOPIC}");

    // GetPrices answers with the oracle's latest round.
    node.command(Command::Request { peer: oracle.peer_id, request: ControlRequest::GetPrices }).await.unwrap();
    let prices = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(line) = seen.recv().await {
            if line.starts_with("Response") && line.contains("Prices") {
                return line;
            }
        }
        String::new()
    })
    .await
    .unwrap();
    assert!(prices.contains("Prices(1 encoded)"), "one encoded round: {prices}");
    oracle.shutdown().await;
}

// ---------------------------------------------------------------------------
// The binary

#[test]
fn test_the_binary_makes_a_key_prints_it_and_explains_a_bad_config() {
    use std::process::Command;
    let bin = env!("CARGO_BIN_EXE_nox-oracle");
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("keys").join("oracle.key");

    let out = Command::new(bin).args(["keygen", "--key-file"]).arg(&key_file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(public.len(), 64);
    let again = Command::new(bin).args(["keygen", "--key-file"]).arg(&key_file).output().unwrap();
    assert_eq!(again.status.code(), Some(1), "never overwrites");

    let good = dir.path().join("good.toml");
    std::fs::write(&good, format!("[oracle]\nkey_file = {:?}\n", key_file.display().to_string())).unwrap();
    let out = Command::new(bin).args(["public-key", "--config"]).arg(&good).output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), public);
    let out = Command::new(bin).args(["check-config", "--config"]).arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[oracle]\nmax_deviation_bps = 9000\n[binance]\nurl = \"nope\"\n").unwrap();
    let out = Command::new(bin)
        .args(["check-config", "--config"])
        .arg(&bad)
        .env("NOX_ORACLE_COINBASE__TIMEOUT_MS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    for key in ["oracle.max_deviation_bps:", "binance.url:", "coinbase.timeout_ms:"] {
        assert!(stderr.contains(key), "{key} in {stderr}");
    }
}
