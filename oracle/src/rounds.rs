//! The round loop: fetch → aggregate → sign → store → publish, every interval.
//!
//! One round, in order:
//!
//! 1. **Fetch** every source at once; each has its own timeout, so a round
//!    takes at most the slowest source's timeout. A failed source is logged,
//!    counted and marked down; the others carry on.
//! 2. **Aggregate** each asset over the quotes of this round only
//!    ([`crate::aggregate`]); nothing is carried over from earlier rounds, so
//!    a price is never older than the round that signs it (plus CoinGecko's
//!    own `max_quote_age_secs`).
//! 3. If no asset has a price the round is **withheld**: nothing is signed,
//!    the round number is not used, `rounds_withheld{no_asset_priced}` moves.
//! 4. **Sign** the priced assets as the next round: number = last + 1,
//!    timestamp = now (never before the last round's, so that a clock stepping
//!    back does not make nodes call the round out of order).
//! 5. **Store** the round number ([`crate::round_store`]) — durable before
//!    published: if the write fails the round is dropped unpublished.
//! 6. **Publish** on `nox/prices/1`, and keep it as the answer to `GetPrices`.
//!    With no connected peer GossipSub cannot publish; that is counted
//!    (`publish_failed{no_peers}`) and the loop goes on.
//!
//! Logs stay quiet in a long outage: a failing source, a withheld asset or a
//! withheld round is logged at warn level when it starts (or its reason
//! changes) and when it ends; the rounds in between log at debug level. The
//! counters move every round.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use futures::future::join_all;
use nox_net::p2p::{Command, P2pHandle, PRICE_TOPIC};
use nox_protocol::price::{PriceRound, Quote};
use tokio::sync::watch;

use crate::aggregate::{AggregationRules, Observation, aggregate};
use crate::fixed_point::{PRICE_DECIMALS, format_price};
use crate::metrics::OracleMetrics;
use crate::round_store::{LastRound, RoundStore};
use crate::source::{Asset, PriceSource, SourceId};

/// Which sources answered in the last round.
pub(crate) type SourceStatus = Arc<Mutex<BTreeMap<SourceId, bool>>>;

/// Everything one round needs.
pub(crate) struct RoundLoop {
    pub key: SigningKey,
    pub chain_id: u64,
    pub interval: Duration,
    pub rules: AggregationRules,
    pub assets: Vec<Asset>,
    pub sources: Vec<Box<dyn PriceSource>>,
    pub store: RoundStore,
    pub last: LastRound,
    pub latest: watch::Sender<Option<PriceRound>>,
    pub network: P2pHandle,
    pub peers: Arc<AtomicUsize>,
    pub status: SourceStatus,
    pub metrics: OracleMetrics,
    pub log_state: LogOnChange,
}

/// The last logged state of each source, asset and of the rounds, so that a
/// condition is logged when it starts and ends, not every round.
#[derive(Debug, Default)]
pub(crate) struct LogOnChange(HashMap<String, &'static str>);

impl LogOnChange {
    /// Records `state` for `key`; returns the previous state if it differs.
    fn change(&mut self, key: String, state: &'static str) -> Option<&'static str> {
        match self.0.insert(key, state) {
            Some(previous) if previous == state => None,
            previous => Some(previous.unwrap_or("new")),
        }
    }
}

const OK: &str = "ok";

impl std::fmt::Debug for RoundLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundLoop").field("chain_id", &self.chain_id).field("last", &self.last).finish_non_exhaustive()
    }
}

/// What became of one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RoundOutcome {
    /// Signed, stored and handed to the network.
    Published(u64),
    /// Not published (a `rounds_withheld` reason).
    Withheld(&'static str),
}

impl RoundLoop {
    /// Runs a round every interval (the first at once) until `stop` turns true.
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            tokio::select! {
                _ = self.round() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// One round (see the module docs).
    pub(crate) async fn round(&mut self) -> RoundOutcome {
        let fetches = join_all(self.sources.iter().map(|s| s.fetch(&self.assets))).await;
        let now_ms = unix_ms();
        let now_secs = now_ms / 1000;
        let mut observations: BTreeMap<&str, Vec<Observation>> = BTreeMap::new();
        for (source, fetched) in self.sources.iter().zip(fetches) {
            let id = source.id();
            match fetched {
                Ok(fetched) => {
                    let up = !fetched.quotes.is_empty();
                    self.set_status(id, up, now_secs);
                    if up && self.log_state.change(id.to_string(), OK).is_some_and(|was| was != "new") {
                        tracing::info!(source = %id, "source answers again");
                    }
                    let mut failing: Vec<String> = Vec::new();
                    for failure in &fetched.failures {
                        self.metrics.source_error(id, &failure.failure);
                        let key = format!("{id}/{}", failure_asset(&failure.failure).unwrap_or_default());
                        failing.push(key.clone());
                        if self.log_state.change(key, failure.failure.label()).is_some() {
                            tracing::warn!(error = %failure, "source could not price an asset");
                        } else {
                            tracing::debug!(error = %failure, "source still cannot price an asset");
                        }
                    }
                    for asset in &self.assets {
                        let key = format!("{id}/{}", asset.symbol);
                        if !failing.contains(&key) && fetched.quotes.iter().any(|q| q.symbol == asset.symbol) {
                            self.log_state.change(key, OK);
                        }
                    }
                    for q in fetched.quotes {
                        if let Some(asset) = self.assets.iter().find(|a| a.symbol == q.symbol) {
                            observations.entry(asset.symbol.as_str()).or_default().push(Observation {
                                source: id,
                                price: q.price,
                                updated_at: q.updated_at,
                            });
                        }
                    }
                }
                Err(error) => {
                    self.set_status(id, false, now_secs);
                    self.metrics.source_error(id, &error.failure);
                    if self.log_state.change(id.to_string(), error.failure.label()).is_some() {
                        tracing::warn!(%error, "source failed");
                    } else {
                        tracing::debug!(%error, "source still failing");
                    }
                }
            }
        }

        let mut quotes = Vec::new();
        for asset in &self.assets {
            let seen = observations.get(asset.symbol.as_str()).map(Vec::as_slice).unwrap_or_default();
            let outcome = aggregate(seen, &self.rules, now_secs);
            for (source, bps) in &outcome.deviations {
                self.metrics.deviation(&asset.symbol, *source, *bps);
            }
            for (source, why) in &outcome.discarded {
                tracing::info!(asset = %asset.symbol, %source, reason = ?why, "quote discarded");
                self.metrics.discarded(*source, why);
            }
            match outcome.result {
                Ok(agreed) => {
                    if self.log_state.change(format!("asset/{}", asset.symbol), OK).is_some_and(|was| was != "new") {
                        tracing::info!(asset = %asset.symbol, "asset priced again");
                    }
                    tracing::debug!(asset = %asset.symbol, price = %format_price(agreed.price), sources = agreed.sources, "priced");
                    quotes.push(Quote {
                        symbol: asset.symbol.clone(),
                        token: asset.token,
                        token_decimals: asset.decimals,
                        price: agreed.price,
                        price_decimals: PRICE_DECIMALS,
                        sources: agreed.sources,
                    });
                }
                Err(why) => {
                    if self.log_state.change(format!("asset/{}", asset.symbol), why.label()).is_some() {
                        tracing::warn!(asset = %asset.symbol, reason = %why, "asset withheld");
                    } else {
                        tracing::debug!(asset = %asset.symbol, reason = %why, "asset still withheld");
                    }
                    self.metrics.asset_withheld(&asset.symbol, &why);
                }
            }
        }
        if quotes.is_empty() {
            if self.log_state.change("round".into(), "withheld").is_some() {
                tracing::warn!("no asset could be priced; rounds withheld until one can");
            } else {
                tracing::debug!("no asset could be priced; round withheld");
            }
            self.metrics.round_withheld("no_asset_priced");
            return RoundOutcome::Withheld("no_asset_priced");
        }

        let next = LastRound { round: self.last.round + 1, timestamp_ms: now_ms.max(self.last.timestamp_ms) };
        let signed = match PriceRound::sign(&self.key, self.chain_id, next.round, next.timestamp_ms, quotes) {
            Ok(r) => r,
            Err(error) => {
                tracing::error!(%error, "cannot sign the round; withheld");
                self.metrics.round_withheld("sign_failed");
                return RoundOutcome::Withheld("sign_failed");
            }
        };
        if let Err(error) = self.store.store(next) {
            tracing::error!(%error, "cannot store the round number; round withheld");
            self.metrics.round_withheld("state_write_failed");
            return RoundOutcome::Withheld("state_write_failed");
        }
        self.last = next;
        if self.log_state.change("round".into(), OK) == Some("withheld") {
            tracing::info!("rounds published again");
        }
        let data = signed.encode();
        let assets = signed.quotes.len();
        self.latest.send_replace(Some(signed));
        self.metrics.round_published(next.round);
        let peers = self.peers.load(Ordering::Relaxed);
        if peers == 0 {
            self.metrics.publish_failed("no_peers");
        }
        if self.network.command(Command::Publish { topic: PRICE_TOPIC, data }).await.is_err() {
            self.metrics.publish_failed("network_stopped");
            tracing::error!(round = next.round, "the libp2p task has stopped; round not gossiped");
        } else {
            tracing::info!(round = next.round, assets, peers, "round published");
        }
        RoundOutcome::Published(next.round)
    }

    fn set_status(&self, id: SourceId, up: bool, now_secs: u64) {
        self.metrics.source_status(id, up, now_secs);
        self.status.lock().unwrap_or_else(|e| e.into_inner()).insert(id, up);
    }
}

/// The asset a per-asset failure is about.
fn failure_asset(f: &crate::source::SourceFailure) -> Option<String> {
    use crate::source::SourceFailure::{BadPrice, Missing};
    match f {
        BadPrice { symbol, .. } | Missing { symbol, .. } => Some(symbol.clone()),
        _ => None,
    }
}

/// Unix time in milliseconds (0 before 1970).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_is_logged_when_it_starts_changes_and_ends() {
        let mut log = LogOnChange::default();
        assert_eq!(log.change("binance".into(), "timeout"), Some("new"));
        assert_eq!(log.change("binance".into(), "timeout"), None, "the same failure again is quiet");
        assert_eq!(log.change("binance".into(), "status"), Some("timeout"));
        assert_eq!(log.change("binance".into(), OK), Some("status"));
        assert_eq!(log.change("binance".into(), OK), None);
    }
}
