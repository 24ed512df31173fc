//! Prometheus metrics.
//!
//! One registry per node, rendered in the Prometheus text format at
//! `GET /metrics`. Every stage takes its counters from here once, at start-up,
//! and then increments plain atomics; nothing on the packet path takes a lock
//! for metrics.
//!
//! What is exported is aggregate by construction: counts per stage and reason,
//! queue depths, the epoch, peer counts per tier and loop reliability per layer.
//! No metric carries a label derived from a packet, a route, a client address or
//! a time of arrival, so nothing here can link a user's packets.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels2 = [(&'static str, &'static str); 2];
type Labels1 = [(&'static str, &'static str); 1];

/// The node's metrics. Cheap to clone (everything inside is shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    packets: Family<Labels2, Counter>,
    dropped: Family<Labels2, Counter>,
    queue_depth: Family<Labels1, Gauge>,
    peers: Family<Labels1, Gauge>,
    loop_reliability: Family<Labels1, Gauge<f64, AtomicU64>>,
    events: Family<Labels2, Counter>,
    epoch: Gauge,
    pending_durable: Gauge,
    chain: Family<Labels1, Gauge>,
    equivocating_nodes: Gauge,
    mail: MailMetrics,
}

/// The mail exit's counters and gauges (`nox_exit_mail_*`,
/// `crate::exit::mail`). Counts only: no label derives from a message, an
/// address or a request id. Cheap to clone.
#[derive(Clone)]
pub struct MailMetrics {
    /// Messages accepted into the queue (`nox_exit_mail_accepted_total`).
    pub accepted: Counter,
    /// Requests whose id was already accepted, answered again without a
    /// second entry (`nox_exit_mail_duplicate_total`).
    pub duplicate: Counter,
    refused: Family<Labels1, Counter>,
    /// Recipients a server accepted the message for (`nox_exit_mail_delivered_total`).
    pub delivered: Counter,
    /// Recipients whose attempt failed for now and will be retried
    /// (`nox_exit_mail_deferred_total`), one per recipient and attempt.
    pub deferred: Counter,
    /// Recipients refused for good, and articles refused for good
    /// (`nox_exit_mail_bounced_total`).
    pub bounced: Counter,
    /// Messages given up past `exit.mail_lifetime_secs` with recipients
    /// left (`nox_exit_mail_expired_total`).
    pub expired: Counter,
    /// Articles the news server accepted (`nox_exit_mail_posted_total`).
    pub posted: Counter,
    /// Entries in the queue (`nox_exit_mail_queue_entries`).
    pub queue_entries: Gauge,
    /// Bytes of messages and recipients in the queue (`nox_exit_mail_queue_bytes`).
    pub queue_bytes: Gauge,
}

impl std::fmt::Debug for MailMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MailMetrics")
    }
}

impl MailMetrics {
    fn register(registry: &mut Registry) -> Self {
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let accepted = counter(registry, "exit_mail_accepted", "Mail exit: messages accepted into the queue");
        let duplicate = counter(
            registry,
            "exit_mail_duplicate",
            "Mail exit: requests whose id was already accepted, answered without queueing again",
        );
        let refused = Family::<Labels1, Counter>::default();
        registry.register("exit_mail_refused", "Mail exit: requests refused, by reason", refused.clone());
        let delivered = counter(registry, "exit_mail_delivered", "Mail exit: recipients delivered to");
        let deferred =
            counter(registry, "exit_mail_deferred", "Mail exit: recipients whose attempt failed for now (retried)");
        let bounced =
            counter(registry, "exit_mail_bounced", "Mail exit: recipients and articles refused for good (dropped)");
        let expired =
            counter(registry, "exit_mail_expired", "Mail exit: messages given up past exit.mail_lifetime_secs");
        let posted = counter(registry, "exit_mail_posted", "Mail exit: articles the news server accepted");
        let queue_entries = Gauge::default();
        registry.register("exit_mail_queue_entries", "Mail exit: entries in the queue", queue_entries.clone());
        let queue_bytes = Gauge::default();
        registry.register(
            "exit_mail_queue_bytes",
            "Mail exit: bytes of messages and recipients in the queue",
            queue_bytes.clone(),
        );
        MailMetrics {
            accepted,
            duplicate,
            refused,
            delivered,
            deferred,
            bounced,
            expired,
            posted,
            queue_entries,
            queue_bytes,
        }
    }

    /// The counter of requests refused for `reason`
    /// (`nox_exit_mail_refused_total{reason}`; a fixed set of reasons).
    pub fn refused(&self, reason: &'static str) -> Counter {
        self.refused.get_or_create(&[("reason", reason)]).clone()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every NOX metric family registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("nox");
        let packets = Family::<Labels2, Counter>::default();
        registry.register("packets", "Packets handled, by stage and outcome", packets.clone());
        let dropped = Family::<Labels2, Counter>::default();
        registry.register("dropped", "Packets dropped, by stage and reason", dropped.clone());
        let queue_depth = Family::<Labels1, Gauge>::default();
        registry.register("queue_depth", "Packets waiting in each bounded queue", queue_depth.clone());
        let peers = Family::<Labels1, Gauge>::default();
        registry.register("peers", "Connected and admitted peers, by tier", peers.clone());
        let loop_reliability = Family::<Labels1, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "loop_reliability",
            "Share of this node's recent loops that came back, by layer: the worst node of the layer with enough loops through it (else all loops)",
            loop_reliability.clone(),
        );
        let events = Family::<Labels2, Counter>::default();
        registry.register(
            "events",
            "Control-plane events (handshakes, descriptors, rotations), by kind and outcome",
            events.clone(),
        );
        let epoch = Gauge::default();
        registry.register("epoch", "Current epoch number", epoch.clone());
        let pending_durable = Gauge::default();
        registry.register(
            "replay_pending_durable",
            "Packets held because their replay tag is not yet on disk",
            pending_durable.clone(),
        );
        let chain = Family::<Labels1, Gauge>::default();
        registry.register(
            "chain",
            "Chain watcher: synced_block, head_block, active_nodes, rpc_up (0/1), fingerprint_mismatch (1 while the registry's topology fingerprint differs from this node's view)",
            chain.clone(),
        );
        let equivocating_nodes = Gauge::default();
        registry.register(
            "equivocating_nodes",
            "Nodes excluded from routing in the current or next epoch because they signed two mix keys for one epoch (evidence on /equivocations)",
            equivocating_nodes.clone(),
        );
        let mail = MailMetrics::register(&mut registry);
        Metrics {
            mail,
            registry: Arc::new(registry),
            equivocating_nodes,
            chain,
            packets,
            dropped,
            queue_depth,
            peers,
            loop_reliability,
            events,
            epoch,
            pending_durable,
        }
    }

    /// The counter of packets that left `stage` with `outcome`.
    pub fn packets(&self, stage: &'static str, outcome: &'static str) -> Counter {
        self.packets.get_or_create(&[("stage", stage), ("outcome", outcome)]).clone()
    }

    /// The counter of packets `stage` dropped for `reason`.
    pub fn dropped(&self, stage: &'static str, reason: &'static str) -> Counter {
        self.dropped.get_or_create(&[("stage", stage), ("reason", reason)]).clone()
    }

    /// The counter of control-plane `kind` events with `outcome`.
    pub fn event(&self, kind: &'static str, outcome: &'static str) -> Counter {
        self.events.get_or_create(&[("kind", kind), ("outcome", outcome)]).clone()
    }

    /// The gauge of the queue called `name`.
    pub fn queue_depth(&self, name: &'static str) -> Gauge {
        self.queue_depth.get_or_create(&[("queue", name)]).clone()
    }

    /// The gauge of admitted peers of `tier`.
    pub fn peers(&self, tier: &'static str) -> Gauge {
        self.peers.get_or_create(&[("tier", tier)]).clone()
    }

    /// The loop-reliability gauge of `layer` ("0", "1", "2").
    pub fn loop_reliability(&self, layer: &'static str) -> Gauge<f64, AtomicU64> {
        self.loop_reliability.get_or_create(&[("layer", layer)]).clone()
    }

    /// The chain-watcher gauge `what`.
    pub fn chain(&self, what: &'static str) -> Gauge {
        self.chain.get_or_create(&[("value", what)]).clone()
    }

    /// The gauge of nodes excluded for equivocation (`nox_equivocating_nodes`).
    pub fn equivocating_nodes(&self) -> Gauge {
        self.equivocating_nodes.clone()
    }

    /// The mail exit's counters and gauges.
    pub fn mail(&self) -> MailMetrics {
        self.mail.clone()
    }

    /// The current-epoch gauge.
    pub fn epoch(&self) -> Gauge {
        self.epoch.clone()
    }

    /// The gauge of packets waiting for their replay tag to be durable.
    pub fn pending_durable(&self) -> Gauge {
        self.pending_durable.clone()
    }

    /// Sum of the drop counters of every stage and reason (tests and benches).
    pub fn total_dropped(&self) -> u64 {
        let text = self.render();
        sum_family(&text, "nox_dropped_total")
    }

    /// The value of one `nox_dropped_total` series (0 when never incremented).
    pub fn dropped_value(&self, stage: &'static str, reason: &'static str) -> u64 {
        self.dropped(stage, reason).get()
    }

    /// The value of one `nox_packets_total` series.
    pub fn packets_value(&self, stage: &'static str, outcome: &'static str) -> u64 {
        self.packets(stage, outcome).get()
    }

    /// The value of one `nox_events_total` series (0 when never incremented).
    pub fn event_value(&self, kind: &'static str, outcome: &'static str) -> u64 {
        self.event(kind, outcome).get()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Sums every sample of a counter family in a text exposition.
pub fn sum_family(text: &str, family: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(family) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_with_labels_and_sum() {
        let m = Metrics::new();
        m.dropped("ingest", "rate_limited").inc_by(3);
        m.dropped("worker", "replay").inc();
        m.packets("worker", "forward").inc();
        m.epoch().set(42);
        let text = m.render();
        assert!(text.contains("nox_dropped_total{stage=\"ingest\",reason=\"rate_limited\"} 3"), "{text}");
        assert!(text.contains("nox_epoch 42"), "{text}");
        assert_eq!(m.total_dropped(), 4);
        assert_eq!(m.dropped_value("worker", "replay"), 1);
    }
}
