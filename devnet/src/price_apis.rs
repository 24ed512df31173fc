//! Local stand-ins for the public price APIs the oracles read.
//!
//! The devnet has no internet, so Binance, CoinGecko and Coinbase are out of
//! reach; each is replaced by a real HTTP server on loopback that answers the
//! same requests in the same JSON format as the real API:
//!
//! * Binance spot ticker: `GET /api/v3/ticker/price?symbols=["ETHUSDT",…]`
//!   (or `?symbol=ETHUSDT`) → `[{"symbol":"ETHUSDT","price":"3000.00000000"}]`;
//! * CoinGecko simple price:
//!   `GET /api/v3/simple/price?ids=ethereum,…&vs_currencies=usd&include_last_updated_at=true`
//!   → `{"ethereum":{"usd":3000.0,"last_updated_at":1764547200}}`;
//! * Coinbase spot: `GET /v2/prices/ETH-USD/spot`
//!   → `{"data":{"amount":"3000.00","base":"ETH","currency":"USD"}}`.
//!
//! Tests steer each one ([`PriceApis::set`]): answer normally, fail with 503,
//! answer garbage, or quote a price off by a factor, so that outages,
//! corrupted answers and disagreeing sources can be staged against a real
//! oracle process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::DevnetError;

/// The three sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// Binance.
    Binance,
    /// CoinGecko.
    CoinGecko,
    /// Coinbase.
    Coinbase,
}

impl Api {
    /// All three.
    pub const ALL: [Api; 3] = [Api::Binance, Api::CoinGecko, Api::Coinbase];
}

/// How a source answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    /// Correct prices.
    Up,
    /// HTTP 503 to every request.
    Down,
    /// A 200 whose body is not the API's format.
    Garbage,
    /// Every price multiplied by this factor.
    Off(f64),
}

/// One asset as the sources name it, and its true price in US dollars.
#[derive(Debug, Clone)]
pub struct ApiAsset {
    /// Binance symbol (`ETHUSDT`).
    pub binance: String,
    /// CoinGecko id (`ethereum`).
    pub coingecko: String,
    /// Coinbase pair (`ETH-USD`).
    pub coinbase: String,
    /// US dollars per whole token.
    pub usd: f64,
}

#[derive(Debug)]
struct Shared {
    assets: Vec<ApiAsset>,
    behaviour: HashMap<Api, Behaviour>,
}

type Ctx = Arc<Mutex<Shared>>;

/// The running servers; dropping it stops them.
#[derive(Debug)]
pub struct PriceApis {
    urls: HashMap<Api, String>,
    shared: Ctx,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for PriceApis {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl PriceApis {
    /// Starts one server per source on 127.0.0.1, all quoting `assets`.
    pub async fn start(assets: Vec<ApiAsset>) -> Result<PriceApis, DevnetError> {
        let shared: Ctx =
            Arc::new(Mutex::new(Shared { assets, behaviour: Api::ALL.iter().map(|a| (*a, Behaviour::Up)).collect() }));
        let mut urls = HashMap::new();
        let mut tasks = Vec::new();
        for api in Api::ALL {
            let app = match api {
                Api::Binance => axum::Router::new().route("/api/v3/ticker/price", get(binance)),
                Api::CoinGecko => axum::Router::new().route("/api/v3/simple/price", get(coingecko)),
                Api::Coinbase => axum::Router::new().route("/v2/prices/{pair}/spot", get(coinbase)),
            }
            .with_state(shared.clone());
            let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .map_err(|e| DevnetError::Spawn { what: "price API server", source: e })?;
            let addr = listener.local_addr().map_err(|e| DevnetError::Spawn { what: "price API server", source: e })?;
            urls.insert(api, format!("http://{addr}"));
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }));
        }
        Ok(PriceApis { urls, shared, tasks })
    }

    /// The base URL of `api` (what an oracle's `sources.<name>.url` is set to).
    pub fn url(&self, api: Api) -> &str {
        self.urls.get(&api).map(String::as_str).unwrap_or_default()
    }

    /// Makes `api` answer as `behaviour` from now on.
    pub fn set(&self, api: Api, behaviour: Behaviour) {
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).behaviour.insert(api, behaviour);
    }

    /// Sets the true price of the asset whose CoinGecko id is `coingecko`.
    pub fn set_price(&self, coingecko: &str, usd: f64) {
        let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        for a in s.assets.iter_mut().filter(|a| a.coingecko == coingecko) {
            a.usd = usd;
        }
    }
}

/// The quotes `api` gives now, or the failure it answers with.
fn quotes(ctx: &Ctx, api: Api) -> Result<Vec<(ApiAsset, f64)>, Box<Response>> {
    let s = ctx.lock().unwrap_or_else(|e| e.into_inner());
    let factor = match s.behaviour.get(&api).copied().unwrap_or(Behaviour::Up) {
        Behaviour::Up => 1.0,
        Behaviour::Off(f) => f,
        Behaviour::Down => {
            return Err(Box::new((StatusCode::SERVICE_UNAVAILABLE, "service unavailable").into_response()));
        }
        Behaviour::Garbage => return Err(Box::new((StatusCode::OK, "<html>maintenance</html>").into_response())),
    };
    Ok(s.assets.iter().map(|a| (a.clone(), a.usd * factor)).collect())
}

async fn binance(State(ctx): State<Ctx>, Query(q): Query<HashMap<String, String>>) -> Response {
    let quotes = match quotes(&ctx, Api::Binance) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let wanted: Vec<String> = match (q.get("symbols"), q.get("symbol")) {
        (Some(list), _) => match serde_json::from_str(list) {
            Ok(v) => v,
            Err(_) => return binance_error(-1100, "Illegal characters found in parameter 'symbols'"),
        },
        (None, Some(one)) => vec![one.clone()],
        (None, None) => quotes.iter().map(|(a, _)| a.binance.clone()).collect(),
    };
    let mut out = Vec::new();
    for sym in &wanted {
        match quotes.iter().find(|(a, _)| &a.binance == sym) {
            Some((_, usd)) => out.push(serde_json::json!({ "symbol": sym, "price": format!("{usd:.8}") })),
            // The real API refuses the whole request for one unknown symbol.
            None => return binance_error(-1121, "Invalid symbol."),
        }
    }
    axum::Json(serde_json::Value::Array(out)).into_response()
}

fn binance_error(code: i64, msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({ "code": code, "msg": msg }))).into_response()
}

async fn coingecko(State(ctx): State<Ctx>, Query(q): Query<HashMap<String, String>>) -> Response {
    let quotes = match quotes(&ctx, Api::CoinGecko) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let with_time = q.get("include_last_updated_at").is_some_and(|v| v == "true");
    let mut out = serde_json::Map::new();
    for id in q.get("ids").map(String::as_str).unwrap_or_default().split(',') {
        // Unknown ids are left out, as the real API does.
        if let Some((_, usd)) = quotes.iter().find(|(a, _)| a.coingecko == id) {
            let mut entry = serde_json::Map::new();
            entry.insert("usd".into(), serde_json::json!(usd));
            if with_time {
                entry.insert("last_updated_at".into(), serde_json::json!(now));
            }
            out.insert(id.to_string(), serde_json::Value::Object(entry));
        }
    }
    axum::Json(serde_json::Value::Object(out)).into_response()
}

async fn coinbase(State(ctx): State<Ctx>, Path(pair): Path<String>) -> Response {
    let quotes = match quotes(&ctx, Api::Coinbase) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    match quotes.iter().find(|(a, _)| a.coinbase == pair) {
        Some((_, usd)) => {
            let (base, currency) = pair.split_once('-').unwrap_or((pair.as_str(), "USD"));
            axum::Json(serde_json::json!({
                "data": { "amount": format!("{usd:.2}"), "base": base, "currency": currency }
            }))
            .into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "errors": [{ "id": "not_found", "message": "Invalid currency" }] })),
        )
            .into_response(),
    }
}
