//! `/health` and `/metrics`.
//!
//! `/health` answers one typed document, [`HealthReport`], with 200 while
//! the oracle is doing its job — a round was signed within the last three
//! intervals — and 503 otherwise (every source down, sources disagreeing,
//! the state directory unwritable: the metrics say which). `/metrics` is the
//! Prometheus text of [`crate::metrics`]. Nothing here is secret or linked
//! to a user; the listener defaults to loopback anyway.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use nox_protocol::price::PriceRound;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::metrics::OracleMetrics;
use crate::rounds::{SourceStatus, unix_ms};

/// How many intervals may pass without a round before `/health` says 503.
pub const HEALTHY_INTERVALS: u64 = 3;

/// The `/health` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// A round was signed within [`HEALTHY_INTERVALS`] intervals.
    pub healthy: bool,
    /// The oracle's public key (hex), as nodes list it.
    pub oracle_key: String,
    /// The last round's number, if one was signed since start.
    pub last_round: Option<u64>,
    /// Milliseconds since the last round's timestamp.
    pub last_round_age_ms: Option<u64>,
    /// The round interval, milliseconds.
    pub interval_ms: u64,
    /// Per source: whether it answered with prices in the last round.
    pub sources: BTreeMap<String, bool>,
    /// Connected libp2p peers.
    pub peers: usize,
}

/// What the HTTP server reads.
#[derive(Clone)]
pub(crate) struct HttpState {
    pub oracle_key: String,
    pub interval: Duration,
    pub latest: watch::Receiver<Option<PriceRound>>,
    pub status: SourceStatus,
    pub peers: Arc<AtomicUsize>,
    pub metrics: OracleMetrics,
}

/// Binds `addr` and serves until `stop` turns true; returns the bound address
/// and the server task.
pub(crate) async fn serve(
    addr: SocketAddr,
    state: HttpState,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new().route("/health", get(health)).route("/metrics", get(metrics)).with_state(state);
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(%error, "HTTP server failed");
        }
    });
    Ok((bound, task))
}

async fn health(State(s): State<HttpState>) -> impl IntoResponse {
    let now = unix_ms();
    let last = s.latest.borrow().as_ref().map(|r| (r.round, now.saturating_sub(r.timestamp_ms)));
    let interval_ms = u64::try_from(s.interval.as_millis()).unwrap_or(u64::MAX);
    let healthy = last.is_some_and(|(_, age)| age <= interval_ms.saturating_mul(HEALTHY_INTERVALS));
    let sources = s
        .status
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(id, up)| (id.name().to_string(), *up))
        .collect();
    let report = HealthReport {
        healthy,
        oracle_key: s.oracle_key.clone(),
        last_round: last.map(|(r, _)| r),
        last_round_age_ms: last.map(|(_, a)| a),
        interval_ms,
        sources,
        peers: s.peers.load(Ordering::Relaxed),
    };
    let code = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(report))
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render())
}
