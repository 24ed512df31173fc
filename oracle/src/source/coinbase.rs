//! Coinbase's spot price: one request per asset, all at once.
//!
//! `GET {base}/v2/prices/ETH-USD/spot` answers
//! `{"data":{"amount":"3012.34","base":"ETH","currency":"USD"}}`. A pair
//! Coinbase does not know is a 404, counted as that asset missing; the source
//! as a whole fails only when no asset got an answer at all (every request
//! failed, and not merely because a pair is unknown or a price is bad). The answer must be in
//! USD. Coinbase gives no update time: its spot price is live.

use futures::future::join_all;
use serde::Deserialize;

use super::{Asset, Endpoint, Fetched, PriceSource, SourceError, SourceFailure, SourceId, SourceSettings, quote_of};

/// Coinbase's spot price.
#[derive(Debug, Clone)]
pub struct Coinbase {
    endpoint: Endpoint,
}

#[derive(Deserialize)]
struct Answer {
    data: Spot,
}

#[derive(Deserialize)]
struct Spot {
    amount: String,
    currency: String,
}

impl Coinbase {
    /// A source at `settings.url` (normally `https://api.coinbase.com`).
    pub fn new(settings: &SourceSettings) -> Result<Self, SourceError> {
        Ok(Coinbase { endpoint: Endpoint::new(SourceId::Coinbase, settings)? })
    }

    async fn one(&self, asset: &Asset, pair: &str) -> Result<super::SourceQuote, SourceFailure> {
        let missing = || SourceFailure::Missing { symbol: asset.symbol.clone(), name: pair.to_string() };
        let body = match self.endpoint.get(&format!("/v2/prices/{pair}/spot"), &[]).await {
            Err(SourceFailure::Status { status: 404, .. }) => return Err(missing()),
            other => other?,
        };
        let answer: Answer = serde_json::from_slice(&body).map_err(|e| super::shape_error(&e, &body))?;
        if answer.data.currency != "USD" {
            return Err(SourceFailure::Garbage {
                reason: format!("{pair} is quoted in {:?}, not USD", answer.data.currency),
                excerpt: super::excerpt(&body),
            });
        }
        quote_of(&asset.symbol, &answer.data.amount, None)
    }
}

#[async_trait::async_trait]
impl PriceSource for Coinbase {
    fn id(&self) -> SourceId {
        SourceId::Coinbase
    }

    async fn fetch(&self, assets: &[Asset]) -> Result<Fetched, SourceError> {
        let wanted: Vec<(&Asset, &str)> =
            assets.iter().filter_map(|a| a.name_at(SourceId::Coinbase).map(|n| (a, n))).collect();
        let results = join_all(wanted.iter().map(|(asset, pair)| self.one(asset, pair))).await;
        let mut fetched = Fetched::default();
        let mut source_wide = None;
        for result in results {
            match result {
                Ok(q) => fetched.quotes.push(q),
                Err(f) => {
                    // A missing pair or a bad price is about one asset; anything
                    // else (down, timing out, refusing, answering garbage) is
                    // about the source.
                    if !matches!(f, SourceFailure::Missing { .. } | SourceFailure::BadPrice { .. }) {
                        source_wide.get_or_insert_with(|| f.clone());
                    }
                    fetched.failures.push(self.endpoint.error(f));
                }
            }
        }
        // Nothing priced, and not only for reasons of single assets: the source failed.
        if fetched.quotes.is_empty()
            && fetched.failures.len() == wanted.len()
            && let Some(f) = source_wide
        {
            return Err(self.endpoint.error(f));
        }
        Ok(fetched)
    }
}
