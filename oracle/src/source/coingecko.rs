//! CoinGecko's simple price: one request for every asset.
//!
//! `GET {base}/api/v3/simple/price?ids=ethereum,usd-coin&vs_currencies=usd&include_last_updated_at=true`
//! answers `{"ethereum":{"usd":3012.34,"last_updated_at":1732900000},…}`.
//! Prices are JSON numbers; their text is taken as it is (never read as an
//! `f64`), so `3012.34` and `1e-5` become exact fixed-point integers. An id
//! CoinGecko does not know is simply absent from the answer (an asset
//! missing). `last_updated_at` is passed on: CoinGecko caches, and the
//! aggregation drops a price older than `max_quote_age_secs`. The optional
//! API key is sent as `x-cg-demo-api-key`.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    Asset, Endpoint, Fetched, PriceSource, SourceError, SourceFailure, SourceId, SourceSettings, query_escape,
    quote_of, shape_error,
};

/// CoinGecko's simple price.
#[derive(Clone)]
pub struct Coingecko {
    endpoint: Endpoint,
    api_key: Option<String>,
}

impl std::fmt::Debug for Coingecko {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coingecko")
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key.as_ref().map(|_| "(set)"))
            .finish()
    }
}

#[derive(Deserialize)]
struct Coin {
    usd: Option<Box<RawValue>>,
    last_updated_at: Option<u64>,
}

impl Coingecko {
    /// A source at `settings.url` (normally `https://api.coingecko.com`),
    /// sending `api_key` if given.
    pub fn new(settings: &SourceSettings, api_key: Option<String>) -> Result<Self, SourceError> {
        let api_key = api_key.filter(|k| !k.is_empty());
        Ok(Coingecko { endpoint: Endpoint::new(SourceId::Coingecko, settings)?, api_key })
    }
}

#[async_trait::async_trait]
impl PriceSource for Coingecko {
    fn id(&self) -> SourceId {
        SourceId::Coingecko
    }

    async fn fetch(&self, assets: &[Asset]) -> Result<Fetched, SourceError> {
        let wanted: Vec<(&Asset, &str)> =
            assets.iter().filter_map(|a| a.name_at(SourceId::Coingecko).map(|n| (a, n))).collect();
        if wanted.is_empty() {
            return Ok(Fetched::default());
        }
        let ids: Vec<String> = wanted.iter().map(|(_, id)| query_escape(id)).collect();
        let path = format!("/api/v3/simple/price?ids={}&vs_currencies=usd&include_last_updated_at=true", ids.join(","));
        let headers: Vec<(&'static str, &str)> =
            self.api_key.as_deref().map(|k| ("x-cg-demo-api-key", k)).into_iter().collect();
        let body = self.endpoint.get(&path, &headers).await.map_err(|f| self.endpoint.error(f))?;
        let coins: HashMap<String, Coin> =
            serde_json::from_slice(&body).map_err(|e| self.endpoint.error(shape_error(&e, &body)))?;
        let mut fetched = Fetched::default();
        for (asset, id) in wanted {
            let missing = || SourceFailure::Missing { symbol: asset.symbol.clone(), name: id.to_string() };
            let result = match coins.get(id).and_then(|c| c.usd.as_ref().map(|p| (p, c.last_updated_at))) {
                // A number's own text; a string (some proxies re-encode) is read the same way.
                Some((price, updated)) => {
                    let text = price.get();
                    quote_of(
                        &asset.symbol,
                        text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text),
                        updated,
                    )
                }
                None => Err(missing()),
            };
            match result {
                Ok(q) => fetched.quotes.push(q),
                Err(f) => fetched.failures.push(self.endpoint.error(f)),
            }
        }
        Ok(fetched)
    }
}
