//! The oracle's Prometheus metrics, rendered at `GET /metrics`.
//!
//! What an operator needs to see: whether each source answers (and since
//! when it does not, and how it fails), how far each source is from the
//! consensus per asset (a source drifting away shows here before it is
//! discarded), and what happened to each round (published, withheld and why,
//! quotes discarded, gossip that could not be sent). Every label value comes
//! from the configuration (source and asset names) or from a fixed list of
//! reasons, so the series are bounded. Prefix: `nox_oracle_`.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::aggregate::{Discard, Withheld};
use crate::source::{SourceFailure, SourceId};

type Label1 = [(&'static str, String); 1];
type Label2 = [(&'static str, String); 2];

/// Reasons a whole round is withheld.
pub const ROUND_WITHHELD_REASONS: [&str; 3] = ["no_asset_priced", "sign_failed", "state_write_failed"];

/// Reasons a publication fails.
pub const PUBLISH_FAILED_REASONS: [&str; 2] = ["no_peers", "network_stopped"];

/// The oracle's metrics; cheap to clone.
#[derive(Clone)]
pub struct OracleMetrics {
    registry: Arc<Registry>,
    source_up: Family<Label1, Gauge>,
    source_last_success: Family<Label1, Gauge>,
    source_errors: Family<Label2, Counter>,
    deviation: Family<Label2, Gauge<i64, AtomicI64>>,
    rounds_published: Counter,
    rounds_withheld: Family<Label1, Counter>,
    assets_withheld: Family<Label2, Counter>,
    quotes_discarded: Family<Label2, Counter>,
    publish_failed: Family<Label1, Counter>,
    last_round: Gauge,
    peers: Gauge,
}

impl std::fmt::Debug for OracleMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OracleMetrics")
    }
}

impl Default for OracleMetrics {
    fn default() -> Self {
        Self::new(&SourceId::ALL, &[])
    }
}

impl OracleMetrics {
    /// A registry with every family, pre-populated with zeros for `sources`
    /// and `assets` so that dashboards see every series from the start.
    pub fn new(sources: &[SourceId], assets: &[String]) -> Self {
        let mut registry = Registry::with_prefix("nox_oracle");
        let source_up = Family::<Label1, Gauge>::default();
        registry.register(
            "source_up",
            "Whether the source answered in the last round (1) or not (0)",
            source_up.clone(),
        );
        let source_last_success = Family::<Label1, Gauge>::default();
        registry.register(
            "source_last_success_seconds",
            "Unix time of the source's last answer with at least one price",
            source_last_success.clone(),
        );
        let source_errors = Family::<Label2, Counter>::default();
        registry.register(
            "source_errors",
            "Failed source requests or asset prices, by source and kind",
            source_errors.clone(),
        );
        let deviation = Family::<Label2, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "deviation_bps",
            "Last signed deviation of the source's price from the median of the fresh quotes, basis points",
            deviation.clone(),
        );
        let rounds_published = Counter::default();
        registry.register(
            "rounds_published",
            "Rounds signed, stored and handed to GossipSub",
            rounds_published.clone(),
        );
        let rounds_withheld = Family::<Label1, Counter>::default();
        registry.register("rounds_withheld", "Rounds not published, by reason", rounds_withheld.clone());
        let assets_withheld = Family::<Label2, Counter>::default();
        registry.register(
            "assets_withheld",
            "Assets left out of a round, by asset and reason",
            assets_withheld.clone(),
        );
        let quotes_discarded = Family::<Label2, Counter>::default();
        registry.register(
            "quotes_discarded",
            "Source quotes left out of the aggregation, by source and reason (outlier, stale)",
            quotes_discarded.clone(),
        );
        let publish_failed = Family::<Label1, Counter>::default();
        registry.register(
            "publish_failed",
            "Rounds that could not be gossiped (no connected peer, network stopped), by reason",
            publish_failed.clone(),
        );
        let last_round = Gauge::default();
        registry.register("last_round", "Number of the last published round", last_round.clone());
        let peers = Gauge::default();
        registry.register("peers", "Connected libp2p peers", peers.clone());

        let m = OracleMetrics {
            registry: Arc::new(registry),
            source_up,
            source_last_success,
            source_errors,
            deviation,
            rounds_published,
            rounds_withheld,
            assets_withheld,
            quotes_discarded,
            publish_failed,
            last_round,
            peers,
        };
        for s in sources {
            let _ = m.source_up.get_or_create(&[("source", s.name().to_string())]);
            let _ = m.source_last_success.get_or_create(&[("source", s.name().to_string())]);
            for kind in SourceFailure::LABELS {
                let _ = m.source_errors.get_or_create(&[("source", s.name().to_string()), ("kind", kind.to_string())]);
            }
            for reason in Discard::LABELS {
                let _ = m
                    .quotes_discarded
                    .get_or_create(&[("source", s.name().to_string()), ("reason", reason.to_string())]);
            }
        }
        for a in assets {
            for reason in Withheld::LABELS {
                let _ = m.assets_withheld.get_or_create(&[("asset", a.clone()), ("reason", reason.to_string())]);
            }
        }
        for reason in ROUND_WITHHELD_REASONS {
            let _ = m.rounds_withheld.get_or_create(&[("reason", reason.to_string())]);
        }
        for reason in PUBLISH_FAILED_REASONS {
            let _ = m.publish_failed.get_or_create(&[("reason", reason.to_string())]);
        }
        m
    }

    /// A source answered (`up`) or failed as a whole, at `now_secs`.
    pub fn source_status(&self, source: SourceId, up: bool, now_secs: u64) {
        let label = [("source", source.name().to_string())];
        self.source_up.get_or_create(&label).set(i64::from(up));
        if up {
            self.source_last_success.get_or_create(&label).set(i64::try_from(now_secs).unwrap_or(i64::MAX));
        }
    }

    /// One failure of `source`.
    pub fn source_error(&self, source: SourceId, failure: &SourceFailure) {
        self.source_errors
            .get_or_create(&[("source", source.name().to_string()), ("kind", failure.label().to_string())])
            .inc();
    }

    /// The deviation of `source` from the median for `asset`.
    pub fn deviation(&self, asset: &str, source: SourceId, bps: i64) {
        self.deviation.get_or_create(&[("asset", asset.to_string()), ("source", source.name().to_string())]).set(bps);
    }

    /// A discarded quote.
    pub fn discarded(&self, source: SourceId, why: &Discard) {
        self.quotes_discarded
            .get_or_create(&[("source", source.name().to_string()), ("reason", why.label().to_string())])
            .inc();
    }

    /// An asset left out of a round.
    pub fn asset_withheld(&self, asset: &str, why: &Withheld) {
        self.assets_withheld.get_or_create(&[("asset", asset.to_string()), ("reason", why.label().to_string())]).inc();
    }

    /// A round withheld (`reason` one of [`ROUND_WITHHELD_REASONS`]).
    pub fn round_withheld(&self, reason: &'static str) {
        self.rounds_withheld.get_or_create(&[("reason", reason.to_string())]).inc();
    }

    /// A round published.
    pub fn round_published(&self, round: u64) {
        self.rounds_published.inc();
        self.last_round.set(i64::try_from(round).unwrap_or(i64::MAX));
    }

    /// A publication that failed (`reason` one of [`PUBLISH_FAILED_REASONS`]).
    pub fn publish_failed(&self, reason: &'static str) {
        self.publish_failed.get_or_create(&[("reason", reason.to_string())]).inc();
    }

    /// The number of connected peers.
    pub fn set_peers(&self, n: usize) {
        self.peers.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Rounds published so far.
    pub fn rounds_published_value(&self) -> u64 {
        self.rounds_published.get()
    }

    /// Rounds withheld for `reason` so far.
    pub fn rounds_withheld_value(&self, reason: &'static str) -> u64 {
        self.rounds_withheld.get_or_create(&[("reason", reason.to_string())]).get()
    }

    /// Quotes of `source` discarded for `reason` (`outlier`, `stale`) so far.
    pub fn discarded_value(&self, source: SourceId, reason: &'static str) -> u64 {
        self.quotes_discarded
            .get_or_create(&[("source", source.name().to_string()), ("reason", reason.to_string())])
            .get()
    }

    /// Failures of `source` of `kind` so far.
    pub fn source_errors_value(&self, source: SourceId, kind: &'static str) -> u64 {
        self.source_errors.get_or_create(&[("source", source.name().to_string()), ("kind", kind.to_string())]).get()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_renders_from_the_start() {
        let m = OracleMetrics::new(&SourceId::ALL, &["ETH".to_string()]);
        m.deviation("ETH", SourceId::Binance, -12);
        m.round_published(3);
        let text = m.render();
        for name in [
            "nox_oracle_source_up{source=\"coinbase\"} 0",
            "nox_oracle_source_errors_total{source=\"binance\",kind=\"timeout\"} 0",
            "nox_oracle_deviation_bps{asset=\"ETH\",source=\"binance\"} -12",
            "nox_oracle_rounds_published_total 1",
            "nox_oracle_rounds_withheld_total{reason=\"no_asset_priced\"} 0",
            "nox_oracle_assets_withheld_total{asset=\"ETH\",reason=\"disagreement\"} 0",
            "nox_oracle_quotes_discarded_total{source=\"coingecko\",reason=\"stale\"} 0",
            "nox_oracle_publish_failed_total{reason=\"no_peers\"} 0",
            "nox_oracle_last_round 3",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
    }
}
