//! The node's price feed: the book of oracle price rounds it accepts, relays
//! and, on an exit, prices token fees with.
//!
//! Oracles publish signed [`PriceRound`](nox_protocol::price::PriceRound)s on
//! the `nox/prices/1` GossipSub topic. The node trusts the oracle keys of
//! `[prices]` with a threshold (`k` of `n`): a round is accepted only when it
//! is for the configured chain, signed by a trusted key, neither dated ahead of
//! this node's clock by more than `max_skew_secs` nor older than
//! `max_age_secs`, and newer than the last round accepted from the same
//! oracle. An asset has a price only while at least `k` distinct trusted
//! oracles quote it freshly, and the price is the median of their quotes, so
//! fewer than `k` compromised oracles cannot move it outside the honest ones'
//! range. The rules themselves are pure and live in
//! [`nox_protocol::price`]; this module owns one
//! [`PriceBook`] behind a lock, the clock, and the counters.
//!
//! What flows in: gossip bytes from the control plane
//! ([`PriceFeed::accept_gossip`]; GossipSub relays a round only when this
//! returns true) and the answers of peers asked with `GetPrices`. What flows
//! out: the latest accepted round of each oracle ([`PriceFeed::encoded_rounds`],
//! the answer to `GetPrices`) and conversions of a gas cost in wei into a
//! token ([`PriceFeed::wei_to_token`], the exit's fee check).
//!
//! Without oracle keys there is no book: every round is refused (`no_trust`),
//! nothing is relayed, and only ETH can be priced.
//!
//! Counted as `nox_events_total{kind="price",outcome}`: `accepted`, one
//! outcome per [`PriceRejection::LABELS`], and `no_trust`; the control plane
//! adds `not_admitted` for gossip forwarded by a peer it has not admitted.

use std::sync::{Arc, RwLock};

use nox_protocol::price::{ETH, NO_BOOK, NoPrice, Price, PriceBook, PriceRejection, Trust, TrustError};
use prometheus_client::metrics::counter::Counter;

use crate::metrics::Metrics;

/// The metrics kind of price rounds.
pub const KIND: &str = "price";

/// The clock the feed judges rounds by: unix milliseconds.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock in unix milliseconds.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    })
}

/// Why the feed did not take a round.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedRejection {
    /// The node trusts no oracle (`prices.oracle_keys` is empty).
    #[error("this node trusts no price oracle")]
    NoTrust,
    /// The book refused it.
    #[error(transparent)]
    Rejected(#[from] PriceRejection),
}

impl FeedRejection {
    /// The metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            FeedRejection::NoTrust => "no_trust",
            FeedRejection::Rejected(r) => r.label(),
        }
    }
}

struct Counters {
    accepted: Counter,
    no_trust: Counter,
    rejected: Vec<(&'static str, Counter)>,
}

impl Counters {
    fn new(metrics: &Metrics) -> Self {
        Counters {
            accepted: metrics.event(KIND, "accepted"),
            no_trust: metrics.event(KIND, "no_trust"),
            rejected: PriceRejection::LABELS.iter().map(|l| (*l, metrics.event(KIND, l))).collect(),
        }
    }

    fn count(&self, r: &FeedRejection) {
        match r {
            FeedRejection::NoTrust => {
                self.no_trust.inc();
            }
            FeedRejection::Rejected(r) => {
                if let Some((_, c)) = self.rejected.iter().find(|(l, _)| *l == r.label()) {
                    c.inc();
                }
            }
        };
    }
}

/// The node's price book (see the module docs). Shared behind an `Arc`.
pub struct PriceFeed {
    book: Option<RwLock<PriceBook>>,
    clock: Clock,
    counters: Counters,
}

impl std::fmt::Debug for PriceFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriceFeed").field("trust", &self.trust()).finish_non_exhaustive()
    }
}

impl PriceFeed {
    /// A feed trusting `trust` (`None`: no book), judging time by the system
    /// clock, counting into `metrics`.
    pub fn new(trust: Option<Trust>, metrics: &Metrics) -> Result<Self, TrustError> {
        Self::with_clock(trust, metrics, system_clock())
    }

    /// [`PriceFeed::new`] with another clock (tests).
    pub fn with_clock(trust: Option<Trust>, metrics: &Metrics, clock: Clock) -> Result<Self, TrustError> {
        let book = trust.map(PriceBook::new).transpose()?.map(RwLock::new);
        Ok(PriceFeed { book, clock, counters: Counters::new(metrics) })
    }

    /// Whether the node trusts any oracle.
    pub fn enabled(&self) -> bool {
        self.book.is_some()
    }

    /// The trust configuration, if any.
    pub fn trust(&self) -> Option<Trust> {
        self.with_book(|b| b.map(|b| b.trust().clone()))
    }

    /// Whether `key` is a trusted oracle key (admission of oracle peers).
    pub fn is_oracle(&self, key: &[u8; 32]) -> bool {
        self.with_book(|b| b.is_some_and(|b| b.trust().oracles.contains(key)))
    }

    /// The feed's clock, unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// Runs `f` on the book (`None` without trust) under the read lock.
    pub fn with_book<R>(&self, f: impl FnOnce(Option<&PriceBook>) -> R) -> R {
        match &self.book {
            Some(lock) => f(Some(&lock.read().unwrap_or_else(|e| e.into_inner()))),
            None => f(None),
        }
    }

    /// Checks an encoded round and keeps it if it passes; counts the outcome.
    pub fn accept(&self, bytes: &[u8]) -> Result<(), FeedRejection> {
        self.accept_counted(bytes, true)
    }

    /// [`PriceFeed::accept`] for a round in a peer's answer to `GetPrices`:
    /// the same checks, but a round the book already holds (`replayed`) is the
    /// usual answer and is not counted.
    pub fn accept_fetched(&self, bytes: &[u8]) -> Result<(), FeedRejection> {
        self.accept_counted(bytes, false)
    }

    fn accept_counted(&self, bytes: &[u8], count_replay: bool) -> Result<(), FeedRejection> {
        let r = match &self.book {
            None => Err(FeedRejection::NoTrust),
            Some(lock) => {
                let now = self.now_ms();
                lock.write().unwrap_or_else(|e| e.into_inner()).accept_bytes(bytes, now).map_err(FeedRejection::from)
            }
        };
        match &r {
            Ok(()) => {
                self.counters.accepted.inc();
            }
            Err(FeedRejection::Rejected(PriceRejection::Replayed(_))) if !count_replay => {}
            Err(e) => {
                tracing::debug!(reason = e.label(), "price round refused");
                self.counters.count(e);
            }
        }
        r
    }

    /// [`PriceFeed::accept`] for a gossip message: whether GossipSub may relay it.
    pub fn accept_gossip(&self, bytes: &[u8]) -> bool {
        self.accept(bytes).is_ok()
    }

    /// The latest accepted round of every oracle, encoded, ordered by key
    /// (the answer to `GetPrices`; empty without trust).
    pub fn encoded_rounds(&self) -> Vec<Vec<u8>> {
        self.with_book(|b| b.map(PriceBook::encoded_rounds).unwrap_or_default())
    }

    /// The price of `token` now. Without trust only ETH's absence is
    /// reported: every asset has no price.
    pub fn price(&self, token: &[u8; 20]) -> Result<Price, NoPrice> {
        let now = self.now_ms();
        self.with_book(|b| b.ok_or(NO_BOOK)?.price(token, now))
    }

    /// `wei` in base units of `token` at the book's prices now, rounded up;
    /// ETH is `wei` itself, with or without a book.
    pub fn wei_to_token(&self, wei: u128, token: &[u8; 20]) -> Result<u128, NoPrice> {
        if token == &ETH {
            return Ok(wei);
        }
        let now = self.now_ms();
        self.with_book(|b| b.ok_or(NO_BOOK)?.wei_to_token(wei, token, now))
    }

    /// Whether a fee in `token` can be priced now (ETH and the token both
    /// have a price).
    pub fn check_priced(&self, token: &[u8; 20]) -> Result<(), NoPrice> {
        self.wei_to_token(0, token).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use ed25519_dalek::SigningKey;
    use nox_protocol::price::{PriceRound, Quote, SOURCE_BINANCE, SOURCE_COINGECKO};

    use super::*;

    const USDC: [u8; 20] = [0xa0; 20];
    const NOW: u64 = 1_800_000_000_000;
    const CHAIN: u64 = 31337;

    fn key(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i; 32])
    }

    fn quotes(eth_usd: u128) -> Vec<Quote> {
        let q = |symbol: &str, token, token_decimals, price| Quote {
            symbol: symbol.into(),
            token,
            token_decimals,
            price,
            price_decimals: 8,
            sources: SOURCE_BINANCE | SOURCE_COINGECKO,
        };
        vec![q("ETH", ETH, 18, eth_usd), q("USDC", USDC, 6, 1_0000_0000)]
    }

    fn round(k: u8, chain: u64, n: u64, t: u64) -> Vec<u8> {
        PriceRound::sign(&key(k), chain, n, t, quotes(3000_0000_0000)).unwrap().encode()
    }

    fn feed(n: u8, k: usize) -> (PriceFeed, Metrics, Arc<AtomicU64>) {
        let trust = Trust {
            chain_id: CHAIN,
            oracles: (1..=n).map(|i| key(i).verifying_key().to_bytes()).collect(),
            threshold: k,
            max_age_ms: 60_000,
            max_skew_ms: 5_000,
        };
        let metrics = Metrics::new();
        let now = Arc::new(AtomicU64::new(NOW));
        let clock = now.clone();
        let f = PriceFeed::with_clock(Some(trust), &metrics, Arc::new(move || clock.load(Ordering::SeqCst))).unwrap();
        (f, metrics, now)
    }

    fn count(m: &Metrics, outcome: &'static str) -> u64 {
        m.event(KIND, outcome).get()
    }

    #[test]
    fn each_bad_round_is_refused_and_counted_under_its_reason() {
        let (f, m, _) = feed(2, 1);
        // Every outcome is exported from the start, at zero.
        let text = m.render();
        for outcome in PriceRejection::LABELS.iter().chain(&["accepted", "no_trust"]) {
            assert!(text.contains(&format!("kind=\"price\",outcome=\"{outcome}\"")), "{outcome}: {text}");
        }
        assert!(f.accept_gossip(&round(1, CHAIN, 5, NOW)));
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not a round".to_vec(), "malformed"),
            (round(2, 1, 1, NOW), "wrong_chain"),
            (round(9, CHAIN, 1, NOW), "unknown_oracle"),
            (round(2, CHAIN, 1, NOW + 5_001), "future"),
            (round(2, CHAIN, 1, NOW - 60_001), "stale"),
            (round(1, CHAIN, 5, NOW), "replayed"),
            (round(1, CHAIN, 4, NOW), "out_of_order"),
        ];
        for (bytes, label) in cases {
            assert_eq!(f.accept(&bytes).unwrap_err().label(), label);
            assert!(!f.accept_gossip(&bytes));
            assert_eq!(count(&m, label), 2, "{label}");
        }
        // A trusted key over another oracle's round: the signature fails.
        let mut forged = round(2, CHAIN, 1, NOW);
        forged[1..33].copy_from_slice(&key(1).verifying_key().to_bytes());
        assert_eq!(f.accept(&forged).unwrap_err().label(), "bad_signature");
        assert_eq!(count(&m, "bad_signature"), 1);
        assert_eq!(count(&m, "accepted"), 1);
        assert_eq!(count(&m, "no_trust"), 0);
        assert_eq!(f.encoded_rounds(), vec![round(1, CHAIN, 5, NOW)]);
    }

    #[test]
    fn without_keys_everything_is_refused_as_no_trust() {
        let m = Metrics::new();
        let f = PriceFeed::new(None, &m).unwrap();
        assert!(!f.enabled());
        assert_eq!(f.accept(&round(1, CHAIN, 1, f.now_ms())), Err(FeedRejection::NoTrust));
        assert!(!f.accept_gossip(b"garbage"));
        assert_eq!(count(&m, "no_trust"), 2);
        assert_eq!(count(&m, "malformed"), 0);
        assert!(f.encoded_rounds().is_empty());
        assert!(!f.is_oracle(&key(1).verifying_key().to_bytes()));
        assert_eq!(f.wei_to_token(7, &ETH), Ok(7));
        assert_eq!(f.wei_to_token(7, &USDC), Err(NO_BOOK));
        assert!(f.check_priced(&USDC).is_err());
    }

    #[test]
    fn prices_need_the_threshold_and_go_stale_with_the_clock() {
        let (f, _, now) = feed(3, 2);
        assert!(f.is_oracle(&key(3).verifying_key().to_bytes()));
        assert!(!f.is_oracle(&key(4).verifying_key().to_bytes()));
        f.accept(&round(1, CHAIN, 1, NOW)).unwrap();
        assert!(matches!(f.check_priced(&USDC), Err(NoPrice::TooFewOracles { fresh: 1, threshold: 2 })));
        f.accept(&round(2, CHAIN, 1, NOW)).unwrap();
        f.check_priced(&USDC).unwrap();
        // 1 ETH at 3000 USD = 3000 USDC = 3e9 base units.
        assert_eq!(f.wei_to_token(10u128.pow(18), &USDC), Ok(3_000_000_000));
        assert_eq!(f.price(&ETH).unwrap().oracles, 2);
        now.store(NOW + 60_001, Ordering::SeqCst);
        assert!(matches!(f.wei_to_token(1, &USDC), Err(NoPrice::TooFewOracles { fresh: 0, .. })));
        // ETH needs no price.
        assert_eq!(f.wei_to_token(1, &ETH), Ok(1));
    }
}
