//! Per-service outcome counters: `nox_events_total{kind="exit_<service>",
//! outcome=…}`.
//!
//! Each service counts every request (`request`) and how it ended, from a
//! fixed set of outcomes it declares at start-up (`ok`, `rpc_error`,
//! `refused_method`, `refused_ssrf_private`, `upstream_failed`, …), so the
//! label set is bounded and no label ever derives from a request's content.
//! The counters are created once, when the service is built; counting is an
//! atomic increment.

use prometheus_client::metrics::counter::Counter;

use crate::metrics::Metrics;

/// One service's outcome counters.
#[derive(Clone)]
pub struct ServiceOutcomes {
    kind: &'static str,
    counters: Vec<(&'static str, Counter)>,
    metrics: Metrics,
}

impl std::fmt::Debug for ServiceOutcomes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceOutcomes").field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl ServiceOutcomes {
    /// The counters of `kind` (`exit_rpc_call`, …) for each of `outcomes`.
    pub fn new(metrics: &Metrics, kind: &'static str, outcomes: &[&'static str]) -> Self {
        let counters = outcomes.iter().map(|o| (*o, metrics.event(kind, o))).collect();
        ServiceOutcomes { kind, counters, metrics: metrics.clone() }
    }

    /// Counts one `outcome`.
    pub fn inc(&self, outcome: &'static str) {
        match self.counters.iter().find(|(o, _)| *o == outcome) {
            Some((_, c)) => {
                c.inc();
            }
            // An outcome the service did not declare (still a fixed string).
            None => {
                self.metrics.event(self.kind, outcome).inc();
            }
        }
    }

    /// The value of one outcome's counter (tests).
    pub fn get(&self, outcome: &'static str) -> u64 {
        self.metrics.event(self.kind, outcome).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_count_under_their_kind() {
        let m = Metrics::new();
        let o = ServiceOutcomes::new(&m, "exit_test", &["request", "ok"]);
        o.inc("request");
        o.inc("request");
        o.inc("ok");
        o.inc("undeclared");
        assert_eq!((o.get("request"), o.get("ok"), o.get("undeclared")), (2, 1, 1));
        let text = m.render();
        assert!(text.contains("nox_events_total{kind=\"exit_test\",outcome=\"request\"} 2"), "{text}");
    }
}
