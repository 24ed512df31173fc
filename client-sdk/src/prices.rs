//! Token prices for fees: the signed oracle rounds the client's entry holds,
//! each checked against the client's own trusted oracle keys.
//!
//! The entry is asked for the latest round of each oracle it follows
//! (`ControlRequest::GetPrices`, [`nox_net::raw_peer::RawPeer::price_rounds`]).
//! Its word counts for nothing: every round goes into a fresh
//! [`PriceBook`] built from the client's [`Trust`] (its `[prices]` keys,
//! threshold and freshness limits), which checks the chain, the key, the
//! signature and the age, and keeps only what passes. An entry can withhold
//! rounds (the call then fails with [`PriceTally`] saying how many were
//! offered) but cannot forge, replay an old one, or push a price through
//! fewer than `threshold` oracles. The entry learns that this client asked
//! for prices, not which asset nor which call follows.
//!
//! [`book_from_rounds`] is the pure part (tested without a network);
//! [`crate::Client::price_book`] fetches and calls it.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use nox_protocol::price::{MAX_ORACLES, PriceBook, Trust, TrustError};

use crate::client::{Client, ClientError};
use crate::fee::TokenPricing;

/// What became of the rounds an entry offered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceTally {
    /// Rounds the entry sent.
    pub offered: usize,
    /// Rounds the book took.
    pub accepted: usize,
    /// Rounds refused, by [`nox_protocol::price::PriceRejection::label`].
    pub refused: BTreeMap<&'static str, usize>,
}

impl std::fmt::Display for PriceTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the entry offered {} price rounds, {} accepted", self.offered, self.accepted)?;
        if !self.refused.is_empty() {
            let reasons: Vec<String> = self.refused.iter().map(|(r, n)| format!("{n} {r}")).collect();
            write!(f, ", refused: {}", reasons.join(", "))?;
        }
        Ok(())
    }
}

/// A price book filled from an entry's rounds, and what happened to them.
#[derive(Debug, Clone)]
pub struct Prices {
    /// The checked rounds.
    pub book: PriceBook,
    /// Offered, accepted and refused rounds.
    pub tally: PriceTally,
    /// When the rounds were checked, unix milliseconds.
    pub fetched_ms: u64,
}

impl Prices {
    /// The book read at this machine's current time, with `slippage_bps` of
    /// headroom: what [`crate::fee::fee_in`] takes for a token.
    pub fn pricing_now(&self, slippage_bps: u16) -> TokenPricing<'_> {
        TokenPricing { book: &self.book, now_ms: unix_ms(), slippage_bps }
    }
}

/// Why no price book could be built.
#[derive(Debug, thiserror::Error)]
pub enum PricesError {
    /// The configured trust cannot work (no keys, a bad threshold, …).
    #[error("the price trust configuration: {0}")]
    Trust(#[from] TrustError),
    /// The entry did not answer the price request.
    #[error("asking the entry for price rounds: {0}")]
    Entry(#[from] ClientError),
}

/// A fresh book for `trust`, fed every round in `rounds` as checked at
/// `now_ms`; the rounds it refuses are counted by reason.
pub fn book_from_rounds(trust: Trust, rounds: &[Vec<u8>], now_ms: u64) -> Result<Prices, TrustError> {
    let mut book = PriceBook::new(trust)?;
    let mut tally = PriceTally { offered: rounds.len(), ..PriceTally::default() };
    for (i, round) in rounds.iter().enumerate() {
        // A node holds one round per oracle it trusts, at most MAX_ORACLES:
        // an answer beyond that is not checked (each check may verify a
        // signature).
        if i >= MAX_ORACLES {
            *tally.refused.entry("beyond_limit").or_default() += 1;
            continue;
        }
        match book.accept_bytes(round, now_ms) {
            Ok(()) => tally.accepted += 1,
            Err(why) => *tally.refused.entry(why.label()).or_default() += 1,
        }
    }
    Ok(Prices { book, tally, fetched_ms: now_ms })
}

/// Unix milliseconds by this machine's clock.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Client {
    /// Asks the entry for its latest price rounds and keeps those `trust`
    /// accepts (see the module docs). A book that prices nothing is not an
    /// error here: the caller asks it for the asset it needs, and shows the
    /// tally when it has no price.
    pub async fn price_book(&self, trust: &Trust) -> Result<Prices, PricesError> {
        trust.check()?;
        let rounds = self.price_rounds().await?;
        Ok(book_from_rounds(trust.clone(), &rounds, unix_ms())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::Address;
    use ed25519_dalek::SigningKey;
    use nox_protocol::price::{ETH, NoPrice, PriceRound, Quote, SOURCE_BINANCE, SOURCE_KRAKEN};

    const NOW: u64 = 1_800_000_000_000;
    const DAI: Address = Address::repeat_byte(0xda);

    fn key(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i; 32])
    }

    fn trust(n: u8, threshold: usize) -> Trust {
        Trust {
            chain_id: 31337,
            oracles: (1..=n).map(|i| key(i).verifying_key().to_bytes()).collect(),
            threshold,
            max_age_ms: 120_000,
            max_skew_ms: 10_000,
        }
    }

    fn round(signer: u8, chain: u64, at: u64) -> Vec<u8> {
        let q = |symbol: &str, token: [u8; 20], decimals, price| Quote {
            symbol: String::from(symbol),
            token,
            token_decimals: decimals,
            price,
            price_decimals: 8,
            sources: SOURCE_BINANCE | SOURCE_KRAKEN,
        };
        let quotes = vec![q("ETH", ETH, 18, 3000_0000_0000), q("DAI", DAI.0.0, 18, 1_0000_0000)];
        PriceRound::sign(&key(signer), chain, 1, at, quotes).unwrap().encode()
    }

    #[test]
    fn an_answer_longer_than_any_node_keeps_is_cut_at_the_limit() {
        let mut rounds = vec![b"junk".to_vec(); MAX_ORACLES];
        rounds.push(round(1, 31337, NOW));
        let prices = book_from_rounds(trust(1, 1), &rounds, NOW).unwrap();
        assert_eq!((prices.tally.offered, prices.tally.accepted), (MAX_ORACLES + 1, 0));
        assert_eq!(prices.tally.refused.get("beyond_limit"), Some(&1));
        assert_eq!(prices.tally.refused.get("malformed"), Some(&MAX_ORACLES));
    }

    #[test]
    fn only_rounds_of_trusted_oracles_count_and_refusals_are_tallied() {
        let rounds = vec![
            round(1, 31337, NOW),
            round(2, 31337, NOW - 1_000),
            round(9, 31337, NOW),           // not ours
            round(3, 1, NOW),               // another chain
            round(3, 31337, NOW - 200_000), // stale
            b"junk".to_vec(),
        ];
        let prices = book_from_rounds(trust(3, 2), &rounds, NOW).unwrap();
        assert_eq!((prices.tally.offered, prices.tally.accepted), (6, 2));
        let refused: Vec<(&str, usize)> = prices.tally.refused.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(refused, [("malformed", 1), ("stale", 1), ("unknown_oracle", 1), ("wrong_chain", 1)]);
        assert_eq!(prices.book.wei_to_token(10u128.pow(18), &DAI.0.0, NOW).unwrap(), 3000 * 10u128.pow(18));
        assert_eq!(
            prices.tally.to_string(),
            "the entry offered 6 price rounds, 2 accepted, refused: 1 malformed, 1 stale, 1 unknown_oracle, \
             1 wrong_chain"
        );
    }

    #[test]
    fn an_entry_cannot_pass_a_price_below_the_threshold() {
        // One trusted oracle's round, offered three times: one oracle still.
        let rounds = vec![round(1, 31337, NOW), round(1, 31337, NOW), round(1, 31337, NOW)];
        let prices = book_from_rounds(trust(3, 2), &rounds, NOW).unwrap();
        assert_eq!(prices.tally.refused.get("replayed"), Some(&2));
        assert_eq!(prices.book.price(&DAI.0.0, NOW).unwrap_err(), NoPrice::TooFewOracles { fresh: 1, threshold: 2 });
        // Nothing offered: an empty book and a tally that says so.
        let empty = book_from_rounds(trust(1, 1), &[], NOW).unwrap();
        assert_eq!(empty.tally.to_string(), "the entry offered 0 price rounds, 0 accepted");
        assert!(book_from_rounds(trust(0, 0), &[], NOW).is_err());
    }
}
