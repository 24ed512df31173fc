//! # nox-oracle
//!
//! The price oracle. Exit nodes price their fees in tokens, and clients must
//! compute the same fee, so both need the same USD prices; an oracle fetches
//! them from public APIs, agrees on one price per asset and publishes a
//! signed [`PriceRound`] on the `nox/prices/1` GossipSub topic every interval.
//! Nodes accept rounds only from the oracle keys they are configured with
//! (`nox_protocol::price::PriceBook`), and use the median over several
//! oracles, so one oracle — or one source behind it — cannot set a price.
//!
//! ## Flow
//!
//! ```text
//!  Binance ─┐                         ┌── round.json (durable first)
//!  CoinGecko ┼─ source::PriceSource ─ aggregate ─ sign ─┤
//!  Coinbase ─┘   (HTTP, typed errors)  (median,         └── GossipSub nox/prices/1
//!                                       outliers,            + GetPrices answers
//!                                       staleness)
//! ```
//!
//! | module | owns |
//! |---|---|
//! | [`source`] | the three public APIs behind [`source::PriceSource`], their formats, timeouts and typed failures |
//! | [`fixed_point`] | decimal text → exact fixed-point integers (never through `f64`) |
//! | [`aggregate`] | the per-asset rule: fresh quotes, median, outliers, at least two sources |
//! | `rounds` | the loop: fetch → aggregate → sign → store → publish |
//! | [`round_store`] | the round counter on disk, so rounds keep increasing across restarts |
//! | `network` | the libp2p peer: bootstrap dials, handshake, answers, no relaying |
//! | [`key_file`] | the Ed25519 key that signs rounds and is the libp2p identity |
//! | [`config`] | `nox-oracle.toml` through `nox-config` |
//! | [`metrics`], [`http`] | `/metrics` and `/health` |
//!
//! The binary (`src/main.rs`) is a thin shell over [`Oracle`]; the devnet can
//! run an oracle in-process with [`Oracle::start_with_key`] or [`run`].

#![warn(missing_docs)]

pub mod aggregate;
pub mod config;
pub mod fixed_point;
pub mod http;
pub mod key_file;
pub mod metrics;
mod network;
pub mod round_store;
mod rounds;
pub mod source;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use libp2p::{Multiaddr, PeerId};
use nox_net::p2p::{self, P2pConfig, P2pError};
pub use nox_protocol::price::PriceRound;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::config::OracleConfig;
use crate::key_file::KeyFileError;
use crate::metrics::OracleMetrics;
use crate::round_store::{RoundStore, RoundStoreError};
use crate::source::{Binance, Coinbase, Coingecko, PriceSource, SourceError, SourceId};

/// Why the oracle could not start.
#[derive(Debug, thiserror::Error)]
pub enum OracleError {
    /// The key file could not be loaded.
    #[error("oracle key: {0}")]
    Key(#[from] KeyFileError),
    /// The round state could not be read or its directory created.
    #[error("round state: {0}")]
    State(#[from] RoundStoreError),
    /// A source's HTTP client could not be built.
    #[error("price source: {0}")]
    Source(#[from] SourceError),
    /// The libp2p swarm could not start.
    #[error("libp2p: {0}")]
    P2p(#[from] P2pError),
    /// The HTTP listener could not be bound.
    #[error("HTTP listener {addr}: {source}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// Fewer than two sources to ask.
    #[error("{0} price source(s); at least two are needed")]
    TooFewSources(usize),
}

/// A running oracle. Dropping it without [`Oracle::shutdown`] aborts its tasks.
#[derive(Debug)]
pub struct Oracle {
    /// The libp2p peer id (of the signing key).
    pub peer_id: PeerId,
    /// The Ed25519 public key that signs the rounds.
    pub public_key: [u8; 32],
    /// Where `/health` and `/metrics` are served.
    pub http_addr: SocketAddr,
    /// The libp2p listen addresses (empty when `[p2p] listen` is).
    pub p2p_addrs: Vec<Multiaddr>,
    metrics: OracleMetrics,
    latest: watch::Receiver<Option<PriceRound>>,
    stop: watch::Sender<bool>,
    /// Round loop and HTTP server (stop on the signal), then the network
    /// task and the swarm (aborted).
    tasks: Vec<JoinHandle<()>>,
}

impl Oracle {
    /// Starts an oracle with the key of `oracle.key_file`.
    pub async fn start(cfg: OracleConfig) -> Result<Self, OracleError> {
        let key = key_file::load(&cfg.oracle.key_file)?;
        Self::start_with_key(cfg, key).await
    }

    /// Starts an oracle with `key`, asking the sources `cfg` enables.
    pub async fn start_with_key(cfg: OracleConfig, key: SigningKey) -> Result<Self, OracleError> {
        let sources = sources_of(&cfg)?;
        Self::start_with_sources(cfg, key, sources).await
    }

    /// Starts an oracle with `key` and the given sources (at least two; the
    /// `[binance]`, `[coingecko]`, `[coinbase]` sections are not read).
    pub async fn start_with_sources(
        cfg: OracleConfig,
        key: SigningKey,
        sources: Vec<Box<dyn PriceSource>>,
    ) -> Result<Self, OracleError> {
        if sources.len() < 2 {
            return Err(OracleError::TooFewSources(sources.len()));
        }
        let store = RoundStore::open(&cfg.oracle.state_dir)?;
        let last = store.load()?;
        let assets = cfg.assets();
        let symbols: Vec<String> = assets.iter().map(|a| a.symbol.clone()).collect();
        let ids: Vec<SourceId> = sources.iter().map(|s| s.id()).collect();
        let metrics = OracleMetrics::new(&ids, &symbols);
        let public_key = key.verifying_key().to_bytes();

        let listen = cfg.listen_addrs();
        let keypair = p2p::keypair_from_identity(&key)?;
        let (mut handle, events, swarm) =
            p2p::spawn(keypair, P2pConfig { listen: listen.clone(), ..P2pConfig::default() })?;
        let p2p_addrs = if listen.is_empty() {
            Vec::new()
        } else {
            tokio::time::timeout(Duration::from_secs(5), handle.wait_listening()).await.unwrap_or_default()
        };
        let peer_id = handle.peer_id;

        let (stop, stop_rx) = watch::channel(false);
        let (latest_tx, latest) = watch::channel(None);
        let peers = Arc::new(AtomicUsize::new(0));
        let status: rounds::SourceStatus = Arc::new(Mutex::new(BTreeMap::new()));

        let http_state = http::HttpState {
            oracle_key: hex::encode(public_key),
            interval: cfg.interval(),
            latest: latest.clone(),
            status: status.clone(),
            peers: peers.clone(),
            metrics: metrics.clone(),
        };
        let (http_addr, http_task) = match http::serve(cfg.http.listen, http_state, stop_rx.clone()).await {
            Ok(bound) => bound,
            Err(source) => {
                swarm.abort();
                return Err(OracleError::Http { addr: cfg.http.listen, source });
            }
        };

        let network = network::NetworkTask {
            handle: handle.clone(),
            events,
            bootstrap: cfg.bootstrap_peers(),
            redial: Duration::from_secs(cfg.p2p.redial_secs.max(1)),
            latest: latest.clone(),
            peers: peers.clone(),
            metrics: metrics.clone(),
        };
        let network_task = tokio::spawn(network.run());
        let round_loop = rounds::RoundLoop {
            key,
            chain_id: cfg.oracle.chain_id,
            interval: cfg.interval(),
            rules: cfg.rules(),
            assets,
            sources,
            store,
            last,
            latest: latest_tx,
            network: handle,
            peers,
            status,
            metrics: metrics.clone(),
            log_state: rounds::LogOnChange::default(),
        };
        let round_task = tokio::spawn(round_loop.run(stop_rx));
        tracing::info!(
            oracle_key = %hex::encode(public_key),
            %peer_id,
            http = %http_addr,
            last_round = last.round,
            "oracle started"
        );
        Ok(Oracle {
            peer_id,
            public_key,
            http_addr,
            p2p_addrs,
            metrics,
            latest,
            stop,
            tasks: vec![round_task, http_task, network_task, swarm],
        })
    }

    /// The last round signed since start.
    pub fn latest_round(&self) -> Option<PriceRound> {
        self.latest.borrow().clone()
    }

    /// A receiver that sees every newly signed round.
    pub fn rounds(&self) -> watch::Receiver<Option<PriceRound>> {
        self.latest.clone()
    }

    /// The metrics.
    pub fn metrics(&self) -> &OracleMetrics {
        &self.metrics
    }

    /// Stops the rounds (a round in progress is abandoned before it is
    /// signed or after it is stored, never in between), the HTTP server and
    /// the network, and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let mut tasks = std::mem::take(&mut self.tasks);
        // The round loop and the HTTP server stop on the signal.
        for t in tasks.drain(..2) {
            let _ = t.await;
        }
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        tracing::info!("oracle stopped");
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Runs an oracle with `cfg` (key from `oracle.key_file`) until `stop` completes.
pub async fn run(cfg: OracleConfig, stop: impl Future<Output = ()>) -> Result<(), OracleError> {
    let oracle = Oracle::start(cfg).await?;
    stop.await;
    oracle.shutdown().await;
    Ok(())
}

/// The sources `cfg` enables, in bit order.
pub fn sources_of(cfg: &OracleConfig) -> Result<Vec<Box<dyn PriceSource>>, SourceError> {
    let mut sources: Vec<Box<dyn PriceSource>> = Vec::new();
    for id in cfg.enabled_sources() {
        let settings = cfg.source_settings(id);
        sources.push(match id {
            SourceId::Binance => Box::new(Binance::new(&settings)?),
            SourceId::Coingecko => Box::new(Coingecko::new(&settings, cfg.coingecko.api_key.clone())?),
            SourceId::Coinbase => Box::new(Coinbase::new(&settings)?),
        });
    }
    Ok(sources)
}
