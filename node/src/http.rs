//! The HTTP API (axum).
//!
//! | route        | listener        | body                                                      |
//! |--------------|-----------------|-----------------------------------------------------------|
//! | `/health`    | admin, public   | `{"status":"ok","node_id":…,"epoch":…,"peers":{…}}`        |
//! | `/metrics`   | admin           | Prometheus text format                                    |
//! | `/topology`  | admin, public   | a `nox_net::topology_doc::TopologyDocument`: every node this node knows, with its descriptors |
//! | `/equivocations` | admin, public | a `crate::topology::EquivocationDocument`: each node that signed two mix keys for one epoch, with both signed descriptors |
//!
//! The admin listener binds to `http.listen` (loopback by default); the
//! optional public listener serves only `/health`, `/topology` and
//! `/equivocations` (evidence anyone may check and act on). Nothing
//! here is per packet: metrics are aggregate counters, and no endpoint reports
//! a packet's timing, a route or a client's address.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use nox_net::topology_doc::{EpochWindow, TopologyDocument};
use nox_protocol::NodeId;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::epoch::EpochKeyRing;
use crate::metrics::Metrics;
use crate::peers::PeerTable;
use crate::topology::{EquivocationDocument, Topology};

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    /// This node.
    pub node_id: NodeId,
    /// Its layer.
    pub layer: u8,
    /// Metrics.
    pub metrics: Metrics,
    /// Topology.
    pub topology: Arc<Topology>,
    /// Peers.
    pub peers: Arc<PeerTable>,
    /// Epoch keys (for the epoch numbers only).
    pub keys: Arc<RwLock<EpochKeyRing>>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiState")
    }
}

fn health_body(s: &ApiState) -> serde_json::Value {
    let epoch = s.keys.read().unwrap_or_else(|e| e.into_inner()).current_epoch();
    serde_json::json!({
        "status": "ok",
        "node_id": format!("0x{}", hex::encode(s.node_id.0)),
        "layer": s.layer,
        "epoch": epoch,
    })
}

/// Admin `/health`: also the peer counts by tier.
async fn health(State(s): State<ApiState>) -> Json<serde_json::Value> {
    let c = s.peers.counts();
    let mut body = health_body(&s);
    body["peers"] = serde_json::json!({ "node": c.nodes, "client": c.clients, "oracle": c.oracles });
    Json(body)
}

/// Public `/health`: no peer counts. Polled from outside, the number of
/// connected clients would show when each client comes and goes.
async fn public_health(State(s): State<ApiState>) -> Json<serde_json::Value> {
    Json(health_body(&s))
}

async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    // Exclusions end with their epoch: the gauge is brought up to date here
    // rather than at every rotation.
    let current = s.keys.read().unwrap_or_else(|e| e.into_inner()).current_epoch();
    s.metrics.equivocating_nodes().set(s.topology.excluded_nodes(current) as i64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render())
}

/// Evidence of equivocation: public, since it accuses only by signatures
/// anyone can check.
async fn equivocations(State(s): State<ApiState>) -> Json<EquivocationDocument> {
    Json(s.topology.equivocation_document())
}

async fn topology(State(s): State<ApiState>) -> Json<TopologyDocument> {
    let (current, next) = {
        let ring = s.keys.read().unwrap_or_else(|e| e.into_inner());
        (ring.current_epoch(), ring.next_epoch())
    };
    Json(TopologyDocument {
        node_id: s.node_id.0,
        layer: s.layer,
        epoch: EpochWindow { current, next },
        nodes: s.topology.entries(),
    })
}

/// The admin router.
pub fn admin_router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/topology", get(topology))
        .route("/equivocations", get(equivocations))
        .with_state(state)
}

/// The public router.
pub fn public_router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(public_health))
        .route("/topology", get(topology))
        .route("/equivocations", get(equivocations))
        .with_state(state)
}

/// A running listener.
#[derive(Debug)]
pub struct HttpServer {
    /// The bound address.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

/// How long [`HttpServer::stop`] lets open connections finish.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl HttpServer {
    /// Stops accepting, closes idle keep-alive connections, lets requests in
    /// progress finish (up to 2 s), and returns once no connection holds the
    /// API's state — so the node's database is released with it.
    pub async fn stop(self) {
        let HttpServer { mut task, stop, .. } = self;
        let _ = stop.send(());
        if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Binds `addr` and serves `router` until [`HttpServer::stop`].
pub async fn serve(addr: SocketAddr, router: Router) -> std::io::Result<HttpServer> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(HttpServer { addr: local, task, stop })
}
