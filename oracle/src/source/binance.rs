//! Binance's spot ticker: one request for every asset.
//!
//! `GET {base}/api/v3/ticker/price?symbols=["ETHUSDT","USDCUSDT"]` (the JSON
//! array URL-encoded) answers `[{"symbol":"ETHUSDT","price":"3012.34000000"},…]`.
//! The pairs are against USDT, which is taken as one US dollar: the
//! aggregation's deviation check against the USD sources catches a USDT
//! de-peg beyond `max_deviation_bps`. Binance refuses the whole request
//! (HTTP 400) when one symbol is unknown, so a wrong symbol in the
//! configuration shows up as a status failure of the source, not of one asset.
//! Binance gives no update time: its ticker is live.

use futures::future::join_all;
use serde::Deserialize;

use super::{
    Asset, Endpoint, Fetched, PriceSource, SourceError, SourceFailure, SourceId, SourceSettings, query_escape,
    quote_of, shape_error,
};

/// Binance's spot ticker.
#[derive(Debug, Clone)]
pub struct Binance {
    endpoint: Endpoint,
}

#[derive(Deserialize)]
struct Ticker {
    symbol: String,
    price: String,
}

impl Binance {
    /// A source at `settings.url` (normally `https://api.binance.com`).
    pub fn new(settings: &SourceSettings) -> Result<Self, SourceError> {
        Ok(Binance { endpoint: Endpoint::new(SourceId::Binance, settings)? })
    }
}

#[async_trait::async_trait]
impl PriceSource for Binance {
    fn id(&self) -> SourceId {
        SourceId::Binance
    }

    async fn fetch(&self, assets: &[Asset]) -> Result<Fetched, SourceError> {
        let wanted: Vec<(&Asset, &str)> =
            assets.iter().filter_map(|a| a.name_at(SourceId::Binance).map(|n| (a, n))).collect();
        if wanted.is_empty() {
            return Ok(Fetched::default());
        }
        let names: Vec<&str> = wanted.iter().map(|(_, n)| *n).collect();
        let symbols = serde_json::to_string(&names).unwrap_or_default();
        let path = format!("/api/v3/ticker/price?symbols={}", query_escape(&symbols));
        let tickers: Vec<Ticker> = match self.endpoint.get(&path, &[]).await {
            Ok(body) => serde_json::from_slice(&body).map_err(|e| self.endpoint.error(shape_error(&e, &body)))?,
            // One unknown symbol fails the batch: ask each alone.
            Err(SourceFailure::Status { status: 400, .. }) if names.len() > 1 => {
                return Ok(self.one_by_one(&wanted).await);
            }
            Err(f) => return Err(self.endpoint.error(f)),
        };
        let mut fetched = Fetched::default();
        for (asset, name) in wanted {
            let result = match tickers.iter().find(|t| t.symbol == name) {
                Some(t) => quote_of(&asset.symbol, &t.price, None),
                None => Err(SourceFailure::Missing { symbol: asset.symbol.clone(), name: name.to_string() }),
            };
            match result {
                Ok(q) => fetched.quotes.push(q),
                Err(f) => fetched.failures.push(self.endpoint.error(f)),
            }
        }
        Ok(fetched)
    }
}

impl Binance {
    /// Every symbol in its own request; a 400 is that symbol missing.
    async fn one_by_one(&self, wanted: &[(&Asset, &str)]) -> Fetched {
        let one = |asset: &Asset, name: &str| {
            let path = format!("/api/v3/ticker/price?symbol={}", query_escape(name));
            let (symbol, name) = (asset.symbol.clone(), name.to_string());
            async move {
                match self.endpoint.get(&path, &[]).await {
                    Ok(body) => match serde_json::from_slice::<Ticker>(&body) {
                        Ok(t) if t.symbol == name => quote_of(&symbol, &t.price, None),
                        Ok(_) => Err(SourceFailure::Missing { symbol, name }),
                        Err(e) => Err(shape_error(&e, &body)),
                    },
                    Err(SourceFailure::Status { status: 400, .. }) => Err(SourceFailure::Missing { symbol, name }),
                    Err(f) => Err(f),
                }
            }
        };
        let results = join_all(wanted.iter().map(|(asset, name)| one(asset, name))).await;
        let mut fetched = Fetched::default();
        for result in results {
            match result {
                Ok(q) => fetched.quotes.push(q),
                Err(f) => fetched.failures.push(self.endpoint.error(f)),
            }
        }
        fetched
    }
}
