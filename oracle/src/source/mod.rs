//! Price sources: one public API each, behind [`PriceSource`].
//!
//! A source is asked once per round for every configured asset and answers
//! with what it could price. The trait is the boundary between the outside
//! world (HTTP, JSON in three formats, rate limits, outages) and the
//! aggregation, which sees only [`SourceQuote`]s: a price as an exact
//! fixed-point integer ([`crate::fixed_point`]) and, when the source says
//! so, when it last changed.
//!
//! Failures are typed and name the source ([`SourceError`]): the whole
//! request can fail (unreachable, timeout, an HTTP error status, a body that is
//! not the documented shape), or one asset inside an otherwise good answer
//! (missing symbol, a price that is not a price). The first kind is `Err` of
//! [`PriceSource::fetch`]; the second is listed in [`Fetched::failures`] next
//! to the quotes that did arrive, so one bad symbol does not cost the others.
//!
//! Each source enforces its own timeout over the whole exchange (connect,
//! headers and body) and reads at most [`MAX_BODY`] bytes, so a slow or
//! hostile endpoint cannot hold a round up or fill memory.

mod binance;
mod coinbase;
mod coingecko;

use std::fmt;
use std::time::Duration;

pub use self::binance::Binance;
pub use self::coinbase::Coinbase;
pub use self::coingecko::Coingecko;
use crate::fixed_point::PriceTextError;

/// Most bytes of a source's answer that are read.
pub const MAX_BODY: usize = 256 * 1024;
/// Characters of a bad body quoted in an error.
const EXCERPT_CHARS: usize = 80;

/// Which public API a quote came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceId {
    /// Binance's spot ticker (USDT pairs, taken as USD).
    Binance,
    /// CoinGecko's simple price.
    Coingecko,
    /// Coinbase's spot price.
    Coinbase,
}

impl SourceId {
    /// Every source, in the order of their bits.
    pub const ALL: [SourceId; 3] = [SourceId::Binance, SourceId::Coingecko, SourceId::Coinbase];

    /// The source's bit in a signed quote (`nox_protocol::price::SOURCE_*`).
    pub fn bit(self) -> u16 {
        use nox_protocol::price::{SOURCE_BINANCE, SOURCE_COINBASE, SOURCE_COINGECKO};
        match self {
            SourceId::Binance => SOURCE_BINANCE,
            SourceId::Coingecko => SOURCE_COINGECKO,
            SourceId::Coinbase => SOURCE_COINBASE,
        }
    }

    /// Lower-case name, as in the configuration sections and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            SourceId::Binance => "binance",
            SourceId::Coingecko => "coingecko",
            SourceId::Coinbase => "coinbase",
        }
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One asset the oracle prices, and its name at each source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// The symbol signed in the round (`ETH`).
    pub symbol: String,
    /// The token on the oracle's chain; zero for ETH.
    pub token: [u8; 20],
    /// The token's decimals.
    pub decimals: u8,
    /// Binance pair (`ETHUSDT`).
    pub binance: Option<String>,
    /// CoinGecko coin id (`ethereum`).
    pub coingecko: Option<String>,
    /// Coinbase pair (`ETH-USD`).
    pub coinbase: Option<String>,
}

impl Asset {
    /// The asset's name at `source`, if it is listed there.
    pub fn name_at(&self, source: SourceId) -> Option<&str> {
        match source {
            SourceId::Binance => self.binance.as_deref(),
            SourceId::Coingecko => self.coingecko.as_deref(),
            SourceId::Coinbase => self.coinbase.as_deref(),
        }
        .filter(|s| !s.is_empty())
    }
}

/// A source's price for one asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceQuote {
    /// The asset's symbol ([`Asset::symbol`]).
    pub symbol: String,
    /// US dollars per whole token, [`crate::fixed_point::PRICE_DECIMALS`] decimals.
    pub price: u128,
    /// When the source last updated the price (unix seconds), if it says.
    pub updated_at: Option<u64>,
}

/// What a source answered in one round.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// The prices it gave.
    pub quotes: Vec<SourceQuote>,
    /// The assets it could not price, each with its reason.
    pub failures: Vec<SourceError>,
}

/// A source failed, as a whole or for one asset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{id}: {failure}")]
pub struct SourceError {
    /// The source.
    pub id: SourceId,
    /// What went wrong.
    pub failure: SourceFailure,
}

/// What went wrong with a source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceFailure {
    /// No connection (refused, DNS, TLS).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No complete answer within the source's timeout.
    #[error("no answer within {0} ms")]
    Timeout(u64),
    /// An HTTP error status.
    #[error("HTTP status {status}: {excerpt:?}")]
    Status {
        /// The status code.
        status: u16,
        /// The start of the body.
        excerpt: String,
    },
    /// A body that is not the documented format.
    #[error("unexpected answer ({reason}): {excerpt:?}")]
    Garbage {
        /// What is wrong with it.
        reason: String,
        /// The start of the body (or the offending value).
        excerpt: String,
    },
    /// A price that is not a usable price.
    #[error("bad price for {symbol}: {reason} ({text:?})")]
    BadPrice {
        /// The asset.
        symbol: String,
        /// Why.
        reason: PriceTextError,
        /// The text received (shortened).
        text: String,
    },
    /// The answer has no price for an asset.
    #[error("no price for {symbol} (asked as {name:?})")]
    Missing {
        /// The asset.
        symbol: String,
        /// Its name at the source.
        name: String,
    },
}

impl SourceFailure {
    /// Every label, for metrics.
    pub const LABELS: [&'static str; 6] = ["unreachable", "timeout", "status", "garbage", "bad_price", "missing"];

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SourceFailure::Unreachable(_) => "unreachable",
            SourceFailure::Timeout(_) => "timeout",
            SourceFailure::Status { .. } => "status",
            SourceFailure::Garbage { .. } => "garbage",
            SourceFailure::BadPrice { .. } => "bad_price",
            SourceFailure::Missing { .. } => "missing",
        }
    }
}

/// A public price API.
#[async_trait::async_trait]
pub trait PriceSource: Send + Sync + fmt::Debug {
    /// Which source this is.
    fn id(&self) -> SourceId;

    /// Asks for every asset of `assets` that the source lists (assets without
    /// a name at this source are skipped, not failures).
    async fn fetch(&self, assets: &[Asset]) -> Result<Fetched, SourceError>;
}

/// Where a source is and how long it may take.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Base URL (`https://api.binance.com`), without a trailing slash.
    pub url: String,
    /// Timeout of one request, connect to last byte.
    pub timeout: Duration,
}

/// The HTTP side every source shares: a client, a base URL, a timeout.
#[derive(Debug, Clone)]
struct Endpoint {
    id: SourceId,
    client: reqwest::Client,
    base: String,
    timeout: Duration,
}

impl Endpoint {
    fn new(id: SourceId, settings: &SourceSettings) -> Result<Self, SourceError> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("nox-oracle/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| SourceError { id, failure: SourceFailure::Unreachable(format!("HTTP client: {e}")) })?;
        Ok(Endpoint { id, client, base: settings.url.trim_end_matches('/').to_string(), timeout: settings.timeout })
    }

    fn error(&self, failure: SourceFailure) -> SourceError {
        SourceError { id: self.id, failure }
    }

    /// GETs `path_and_query` (appended to the base URL) and returns the body
    /// of a success status, at most [`MAX_BODY`] bytes.
    async fn get(&self, path_and_query: &str, headers: &[(&'static str, &str)]) -> Result<Vec<u8>, SourceFailure> {
        let url = format!("{}{path_and_query}", self.base);
        let timeout_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        let exchange = async {
            let mut request = self.client.get(&url).header("accept", "application/json");
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let mut response = request.send().await.map_err(|e| transport_failure(&e, timeout_ms))?;
            let status = response.status();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| transport_failure(&e, timeout_ms))? {
                let room = MAX_BODY.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= MAX_BODY {
                    if status.is_success() {
                        return Err(SourceFailure::Garbage {
                            reason: format!("answer larger than {MAX_BODY} bytes"),
                            excerpt: excerpt(&body),
                        });
                    }
                    break;
                }
            }
            if !status.is_success() {
                return Err(SourceFailure::Status { status: status.as_u16(), excerpt: excerpt(&body) });
            }
            Ok(body)
        };
        tokio::time::timeout(self.timeout, exchange).await.unwrap_or(Err(SourceFailure::Timeout(timeout_ms)))
    }
}

fn transport_failure(e: &reqwest::Error, timeout_ms: u64) -> SourceFailure {
    if e.is_timeout() {
        return SourceFailure::Timeout(timeout_ms);
    }
    // reqwest's Display stops at the outermost layer ("error sending request");
    // the causes say what happened ("Connection refused").
    let mut reason = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !reason.contains(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        cause = c.source();
    }
    SourceFailure::Unreachable(reason)
}

/// The start of `body`, printable, for an error message.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(EXCERPT_CHARS).collect();
    if text.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    out
}

/// A garbage failure for a body that did not deserialize.
fn shape_error(e: &serde_json::Error, body: &[u8]) -> SourceFailure {
    SourceFailure::Garbage { reason: format!("not the documented JSON: {e}"), excerpt: excerpt(body) }
}

/// Parses a price text for `symbol` into a quote, or the failure that says why not.
fn quote_of(symbol: &str, text: &str, updated_at: Option<u64>) -> Result<SourceQuote, SourceFailure> {
    match crate::fixed_point::parse_price(text) {
        Ok(price) => Ok(SourceQuote { symbol: symbol.to_string(), price, updated_at }),
        Err(reason) => {
            Err(SourceFailure::BadPrice { symbol: symbol.to_string(), reason, text: excerpt(text.as_bytes()) })
        }
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_bits() {
        let bits: Vec<u16> = SourceId::ALL.iter().map(|s| s.bit()).collect();
        assert_eq!(bits, vec![1, 2, 4]);
        assert_eq!(SourceId::Coingecko.to_string(), "coingecko");
        let e = SourceError { id: SourceId::Binance, failure: SourceFailure::Timeout(5000) };
        assert_eq!(e.to_string(), "binance: no answer within 5000 ms");
    }

    #[test]
    fn escapes_queries_and_shortens_excerpts() {
        assert_eq!(query_escape("[\"ETHUSDT\",\"USDCUSDT\"]"), "%5B%22ETHUSDT%22%2C%22USDCUSDT%22%5D");
        assert_eq!(query_escape("usd-coin"), "usd-coin");
        let long = "x".repeat(200);
        assert_eq!(excerpt(long.as_bytes()).chars().count(), EXCERPT_CHARS + 1);
        assert_eq!(excerpt(b"{}"), "{}");
    }
}
