//! One asset's price from its sources' quotes: pure functions, no I/O.
//!
//! The rule, per asset and round:
//!
//! 1. Keep the **fresh** quotes: every quote was fetched this round, and a
//!    quote that carries the source's own update time (CoinGecko's
//!    `last_updated_at`) must be at most `max_quote_age_secs` old. Older ones
//!    are discarded as `stale`.
//! 2. Take the **median** of the fresh quotes; record each source's deviation
//!    from it (for the metrics, whatever happens next).
//! 3. Discard the quotes further than `max_deviation_bps` from that median as
//!    `outlier`s.
//! 4. If at least `min_sources` quotes remain, the price is the median of the
//!    remaining ones and the signed quote names exactly their sources;
//!    otherwise the asset is **withheld** with a typed reason ([`Withheld`]).
//!
//! `min_sources` is at least two (the configuration refuses less, and
//! `PriceRound::sign` refuses a quote with one source bit): one source alone
//! is never published, because nothing would check it. With three sources,
//! one wrong source is out-voted; with two that disagree both are dropped
//! (each is half the gap from their midpoint) and nothing is published, which
//! is the safe answer to "we cannot tell who is right".
//!
//! The median of an even count is the mean of the middle two, rounded down.
//! Everything is integer arithmetic on fixed-point prices.

use crate::source::SourceId;

/// The aggregation's parameters (`[oracle]` of the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggregationRules {
    /// Most distance from the median, in basis points of the median.
    pub max_deviation_bps: u32,
    /// Fewest agreeing sources for a price (≥ 2).
    pub min_sources: usize,
    /// Oldest update time a source may report, in seconds.
    pub max_quote_age_secs: u64,
}

/// One source's quote of one asset, as the aggregation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The source.
    pub source: SourceId,
    /// Fixed-point price (all observations of an asset share the decimals).
    pub price: u128,
    /// The source's own update time (unix seconds), if it gives one.
    pub updated_at: Option<u64>,
}

/// Why a quote took no part in the price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// Its update time is older than `max_quote_age_secs`.
    Stale {
        /// Seconds since the source's update.
        age_secs: u64,
    },
    /// Further from the median than `max_deviation_bps`.
    Outlier {
        /// Its distance from the median, basis points.
        deviation_bps: u64,
    },
}

impl Discard {
    /// Every label, for metrics.
    pub const LABELS: [&'static str; 2] = ["stale", "outlier"];

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Discard::Stale { .. } => "stale",
            Discard::Outlier { .. } => "outlier",
        }
    }
}

/// Why an asset has no price this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Withheld {
    /// No source had a fresh quote.
    #[error("no fresh quote from any source")]
    NoQuotes,
    /// Fewer fresh quotes than `min_sources`.
    #[error("{fresh} fresh quote(s), {required} sources required")]
    TooFewSources {
        /// Fresh quotes.
        fresh: usize,
        /// `min_sources`.
        required: usize,
    },
    /// Enough fresh quotes, but too few within `max_deviation_bps` of their median.
    #[error("sources disagree: {agreeing} of {fresh} within the deviation limit, {required} required")]
    Disagreement {
        /// Fresh quotes.
        fresh: usize,
        /// Quotes within the limit.
        agreeing: usize,
        /// `min_sources`.
        required: usize,
    },
}

impl Withheld {
    /// Every label, for metrics.
    pub const LABELS: [&'static str; 3] = ["no_quotes", "too_few_sources", "disagreement"];

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Withheld::NoQuotes => "no_quotes",
            Withheld::TooFewSources { .. } => "too_few_sources",
            Withheld::Disagreement { .. } => "disagreement",
        }
    }
}

/// An agreed price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The median of the agreeing quotes.
    pub price: u128,
    /// The agreeing sources (`SOURCE_*` bits).
    pub sources: u16,
}

/// Everything the aggregation of one asset found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetOutcome {
    /// The price, or why there is none.
    pub result: Result<Agreed, Withheld>,
    /// Each fresh source's signed deviation from the median of the fresh
    /// quotes, basis points (positive: above the median).
    pub deviations: Vec<(SourceId, i64)>,
    /// The quotes left out, and why.
    pub discarded: Vec<(SourceId, Discard)>,
}

/// Aggregates one asset's observations at `now_secs` (see the module docs).
pub fn aggregate(observations: &[Observation], rules: &AggregationRules, now_secs: u64) -> AssetOutcome {
    let mut discarded = Vec::new();
    let mut fresh: Vec<Observation> = Vec::with_capacity(observations.len());
    for o in observations {
        match o.updated_at {
            Some(t) if now_secs.saturating_sub(t) > rules.max_quote_age_secs => {
                discarded.push((o.source, Discard::Stale { age_secs: now_secs.saturating_sub(t) }));
            }
            _ => fresh.push(*o),
        }
    }
    let mut prices: Vec<u128> = fresh.iter().map(|o| o.price).collect();
    let Some(mid) = median(&mut prices) else {
        return AssetOutcome { result: Err(Withheld::NoQuotes), deviations: Vec::new(), discarded };
    };
    let deviations: Vec<(SourceId, i64)> =
        fresh.iter().map(|o| (o.source, signed_deviation_bps(o.price, mid))).collect();
    if fresh.len() < rules.min_sources {
        let result = Err(Withheld::TooFewSources { fresh: fresh.len(), required: rules.min_sources });
        return AssetOutcome { result, deviations, discarded };
    }
    let mut agreeing = Vec::with_capacity(fresh.len());
    for o in &fresh {
        let deviation_bps = deviation_bps(o.price, mid);
        if deviation_bps > u64::from(rules.max_deviation_bps) {
            discarded.push((o.source, Discard::Outlier { deviation_bps }));
        } else {
            agreeing.push(*o);
        }
    }
    if agreeing.len() < rules.min_sources {
        let result =
            Err(Withheld::Disagreement { fresh: fresh.len(), agreeing: agreeing.len(), required: rules.min_sources });
        return AssetOutcome { result, deviations, discarded };
    }
    let mut kept: Vec<u128> = agreeing.iter().map(|o| o.price).collect();
    let price = median(&mut kept).unwrap_or(mid);
    let sources = agreeing.iter().fold(0u16, |bits, o| bits | o.source.bit());
    AssetOutcome { result: Ok(Agreed { price, sources }), deviations, discarded }
}

/// The median (mean of the middle two for an even count, rounded down);
/// sorts `values`.
pub fn median(values: &mut [u128]) -> Option<u128> {
    values.sort_unstable();
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => {
            let (a, b) = (values[n / 2 - 1], values[n / 2]);
            // a ≤ b: a + (b − a)/2 never overflows.
            Some(a + (b - a) / 2)
        }
    }
}

/// |price − median| in basis points of the median (saturating; a zero median is
/// as far from everything as can be).
pub fn deviation_bps(price: u128, median: u128) -> u64 {
    if median == 0 {
        return u64::MAX;
    }
    let diff = price.abs_diff(median);
    let bps = diff.saturating_mul(10_000) / median;
    u64::try_from(bps).unwrap_or(u64::MAX)
}

fn signed_deviation_bps(price: u128, median: u128) -> i64 {
    let magnitude = i64::try_from(deviation_bps(price, median)).unwrap_or(i64::MAX);
    if price < median { -magnitude } else { magnitude }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const RULES: AggregationRules =
        AggregationRules { max_deviation_bps: 200, min_sources: 2, max_quote_age_secs: 120 };
    const NOW: u64 = 1_800_000_000;

    fn obs(source: SourceId, price: u128) -> Observation {
        Observation { source, price, updated_at: None }
    }

    use SourceId::{Binance, Coinbase, Coingecko};

    #[test]
    fn three_agreeing_sources_give_their_median() {
        let out = aggregate(&[obs(Binance, 3000), obs(Coingecko, 3010), obs(Coinbase, 3005)], &RULES, NOW);
        assert_eq!(out.result, Ok(Agreed { price: 3005, sources: 0b111 }));
        assert!(out.discarded.is_empty());
        assert_eq!(out.deviations, vec![(Binance, -16), (Coingecko, 16), (Coinbase, 0)]);
    }

    #[test]
    fn an_outlier_is_discarded_and_the_rest_decide() {
        let out = aggregate(&[obs(Binance, 3000), obs(Coingecko, 3500), obs(Coinbase, 3010)], &RULES, NOW);
        assert_eq!(out.result, Ok(Agreed { price: 3005, sources: Binance.bit() | Coinbase.bit() }));
        assert_eq!(out.discarded, vec![(Coingecko, Discard::Outlier { deviation_bps: 1627 })]);
    }

    #[test]
    fn a_stale_quote_is_discarded() {
        let mut cg = obs(Coingecko, 3000);
        cg.updated_at = Some(NOW - 121);
        let out = aggregate(&[obs(Binance, 3000), cg, obs(Coinbase, 3002)], &RULES, NOW);
        assert_eq!(out.result, Ok(Agreed { price: 3001, sources: Binance.bit() | Coinbase.bit() }));
        assert_eq!(out.discarded, vec![(Coingecko, Discard::Stale { age_secs: 121 })]);
        cg.updated_at = Some(NOW - 120);
        let out = aggregate(&[obs(Binance, 3000), cg], &RULES, NOW);
        assert_eq!(out.result.map(|a| a.sources), Ok(0b11));
    }

    #[test]
    fn a_single_source_is_never_enough() {
        assert_eq!(aggregate(&[], &RULES, NOW).result, Err(Withheld::NoQuotes));
        assert_eq!(
            aggregate(&[obs(Binance, 3000)], &RULES, NOW).result,
            Err(Withheld::TooFewSources { fresh: 1, required: 2 })
        );
        // Two sources 10 % apart: neither can be trusted over the other.
        let out = aggregate(&[obs(Binance, 3000), obs(Coinbase, 3300)], &RULES, NOW);
        assert_eq!(out.result, Err(Withheld::Disagreement { fresh: 2, agreeing: 0, required: 2 }));
        assert_eq!(out.discarded.len(), 2);
    }

    #[test]
    fn medians_and_deviations() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [5]), Some(5));
        assert_eq!(median(&mut [4, 1]), Some(2));
        assert_eq!(median(&mut [u128::MAX, u128::MAX - 1]), Some(u128::MAX - 1));
        assert_eq!(deviation_bps(102, 100), 200);
        assert_eq!(deviation_bps(98, 100), 200);
        assert_eq!(deviation_bps(1, 0), u64::MAX);
    }

    proptest! {
        #[test]
        fn a_published_price_lies_within_its_agreeing_quotes(
            prices in proptest::collection::vec(1u128..10u128.pow(20), 0..=3),
            bps in 1u32..=5000,
            min in 2usize..4,
        ) {
            let observations: Vec<Observation> =
                prices.iter().zip(SourceId::ALL).map(|(p, s)| obs(s, *p)).collect();
            let rules = AggregationRules { max_deviation_bps: bps, min_sources: min, max_quote_age_secs: 120 };
            let out = aggregate(&observations, &rules, NOW);
            match out.result {
                Ok(agreed) => {
                    let used: Vec<u128> =
                        observations.iter().filter(|o| agreed.sources & o.source.bit() != 0).map(|o| o.price).collect();
                    prop_assert!(used.len() >= min);
                    prop_assert_eq!(used.len() + out.discarded.len(), observations.len());
                    let (lo, hi) = (used.iter().min().copied(), used.iter().max().copied());
                    prop_assert!(lo <= Some(agreed.price) && Some(agreed.price) <= hi);
                }
                Err(_) => prop_assert!(observations.len() - out.discarded.len() < min),
            }
        }

        #[test]
        fn every_kept_quote_is_within_the_limit_of_the_first_median(
            prices in proptest::collection::vec(1u128..10u128.pow(20), 2..6),
            bps in 1u32..=5000,
        ) {
            let observations: Vec<Observation> = prices.iter().map(|p| obs(Binance, *p)).collect();
            let rules = AggregationRules { max_deviation_bps: bps, min_sources: 2, max_quote_age_secs: 120 };
            let out = aggregate(&observations, &rules, NOW);
            let mut all = prices.clone();
            let mid = median(&mut all).unwrap_or(0);
            let outliers = prices.iter().filter(|p| deviation_bps(**p, mid) > u64::from(bps)).count();
            prop_assert_eq!(out.discarded.len(), outliers);
            prop_assert_eq!(out.deviations.len(), prices.len());
        }
    }
}
