//! The devnet's price oracles.
//!
//! A devnet with [`DevnetOptions::oracles`](crate::DevnetOptions) > 0 prices
//! its fee token like a real network: [`PriceApis`] stands in for Binance,
//! CoinGecko and Coinbase on loopback (the real APIs are out of reach here),
//! and each oracle — `nox-oracle run` as a process, or the same code
//! in-process — reads all three, signs a round every interval and publishes
//! it to every node it dials. Every node trusts the oracles' keys with a
//! majority threshold (`[prices]`), and every exit takes fees in ETH and in
//! the deployment's NoxTestDollar (`exit.eth_fee_tokens`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use nox_oracle::config::AssetEntry;
use nox_oracle::{Oracle, OracleConfig};

use crate::DevnetError;
use crate::anvil::{CHAIN_ID, free_port, kill_group, spawn_logged, stop_child};
use crate::network::{Devnet, Launch};
use crate::price_apis::{Api, ApiAsset, PriceApis};

/// The true prices the local APIs start with: ETH at 3,000 US dollars, the
/// test dollar at one.
pub const ETH_USD: f64 = 3000.0;
/// See [`ETH_USD`].
pub const TUSD_USD: f64 = 1.0;

/// The assets as each local API names them.
pub fn api_assets() -> Vec<ApiAsset> {
    vec![
        ApiAsset { binance: "ETHUSDT".into(), coingecko: "ethereum".into(), coinbase: "ETH-USD".into(), usd: ETH_USD },
        ApiAsset {
            binance: "TUSDUSDT".into(),
            coingecko: "nox-test-dollar".into(),
            coinbase: "TUSD-USD".into(),
            usd: TUSD_USD,
        },
    ]
}

enum Runner {
    Stopped,
    InProcess(Box<Oracle>),
    Process(Child),
}

/// One oracle of the devnet.
pub struct DevnetOracle {
    /// Position in [`Devnet::oracles`].
    pub index: usize,
    /// Its signing key (also its libp2p identity).
    pub key: SigningKey,
    /// Its configuration (also written to `config_path`).
    pub config: OracleConfig,
    /// `nox-oracle.toml`.
    pub config_path: PathBuf,
    runner: Runner,
}

impl std::fmt::Debug for DevnetOracle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevnetOracle").field("index", &self.index).finish_non_exhaustive()
    }
}

impl DevnetOracle {
    /// The public key nodes trust, as `[prices] oracle_keys` lists it.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// Where its `/health` and `/metrics` are.
    pub fn http(&self) -> SocketAddr {
        self.config.http.listen
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        !matches!(self.runner, Runner::Stopped)
    }

    /// Kills a process oracle's group at once (the devnet is being dropped);
    /// an in-process oracle stops with its tasks.
    pub(crate) fn kill_now(&mut self) {
        if let Runner::Process(child) = &mut self.runner {
            kill_group(child);
        }
        self.runner = Runner::Stopped;
    }
}

impl Devnet {
    /// Starts the local price APIs and makes `count` oracle keys and
    /// configurations (started later by [`Devnet::start_oracle`], once the
    /// nodes they dial are up).
    pub(crate) async fn prepare_oracles(&mut self, count: usize) -> Result<(), DevnetError> {
        if count == 0 {
            return Ok(());
        }
        let apis = PriceApis::start(api_assets()).await?;
        for index in 0..count {
            let dir = self.dir().join(format!("oracle{index}"));
            std::fs::create_dir_all(&dir).map_err(|e| DevnetError::Spawn { what: "oracle directory", source: e })?;
            let key_file = dir.join("oracle.key");
            let key = nox_oracle::key_file::generate(&key_file).map_err(|e| DevnetError::Oracle(e.to_string()))?;
            let mut cfg = OracleConfig::default();
            cfg.oracle.key_file = key_file;
            cfg.oracle.state_dir = dir.join("state");
            cfg.oracle.chain_id = CHAIN_ID;
            cfg.oracle.interval_ms = self.options().oracle_interval_ms;
            cfg.p2p.listen = Vec::new();
            cfg.p2p.redial_secs = 1;
            cfg.http.listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            cfg.binance.url = apis.url(Api::Binance).to_string();
            cfg.coingecko.url = apis.url(Api::CoinGecko).to_string();
            cfg.coinbase.url = apis.url(Api::Coinbase).to_string();
            for timeout in [&mut cfg.binance.timeout_ms, &mut cfg.coingecko.timeout_ms, &mut cfg.coinbase.timeout_ms] {
                *timeout = 1_000;
            }
            cfg.log.level = self.options().log_level.clone();
            cfg.assets = vec![
                AssetEntry {
                    symbol: "ETH".into(),
                    token: alloy::primitives::Address::ZERO.to_string(),
                    decimals: 18,
                    binance: Some("ETHUSDT".into()),
                    coingecko: Some("ethereum".into()),
                    coinbase: Some("ETH-USD".into()),
                },
                AssetEntry {
                    symbol: "TUSD".into(),
                    token: self.deployment.fee_token.to_string(),
                    decimals: 6,
                    binance: Some("TUSDUSDT".into()),
                    coingecko: Some("nox-test-dollar".into()),
                    coinbase: Some("TUSD-USD".into()),
                },
            ];
            let config_path = dir.join("nox-oracle.toml");
            self.oracles.push(DevnetOracle { index, key, config: cfg, config_path, runner: Runner::Stopped });
        }
        self.price_apis = Some(apis);
        Ok(())
    }

    /// The local price APIs (when the devnet has oracles).
    pub fn price_apis(&self) -> Option<&PriceApis> {
        self.price_apis.as_ref()
    }

    /// Starts oracle `idx`, dialing every registered node, as the devnet's
    /// launch mode says, and waits for its `/health` endpoint to answer.
    pub async fn start_oracle(&mut self, idx: usize) -> Result<(), DevnetError> {
        if self.oracles[idx].is_running() {
            return Ok(());
        }
        let bootstrap: Vec<String> =
            self.nodes.iter().filter(|n| n.registered).map(|n| format!("{}/p2p/{}", n.multiaddr, n.peer_id)).collect();
        let launch = self.options().launch;
        let o = &mut self.oracles[idx];
        o.config.p2p.bootstrap = bootstrap;
        let text = toml::to_string(&o.config).map_err(|e| DevnetError::Oracle(e.to_string()))?;
        std::fs::write(&o.config_path, text).map_err(|e| DevnetError::Spawn { what: "oracle config", source: e })?;
        o.runner = match launch {
            Launch::InProcess => {
                let oracle = Oracle::start_with_key(o.config.clone(), o.key.clone())
                    .await
                    .map_err(|e| DevnetError::Oracle(e.to_string()))?;
                Runner::InProcess(Box::new(oracle))
            }
            Launch::Processes => {
                let bin = crate::nox_oracle_binary()?;
                let log = o.config_path.with_file_name("nox-oracle.log");
                let args = [std::ffi::OsStr::new("run"), "--config".as_ref(), o.config_path.as_os_str()];
                let child = spawn_logged(&bin, &args, &log, "nox-oracle run")?;
                Runner::Process(child)
            }
        };
        let url = format!("http://{}/metrics", self.oracles[idx].http());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Runner::Process(child) = &mut self.oracles[idx].runner
                && let Ok(Some(status)) = child.try_wait()
            {
                self.oracles[idx].runner = Runner::Stopped;
                return Err(DevnetError::Oracle(format!("nox-oracle run exited with {status}")));
            }
            if self.http_client().get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(DevnetError::Timeout("an oracle's /metrics"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops oracle `idx` (SIGTERM, then SIGKILL, for a process).
    pub async fn stop_oracle(&mut self, idx: usize) {
        match std::mem::replace(&mut self.oracles[idx].runner, Runner::Stopped) {
            Runner::Stopped => {}
            Runner::InProcess(o) => o.shutdown().await,
            Runner::Process(child) => stop_child(child).await,
        }
    }

    /// The trust every node of this devnet is configured with.
    pub fn price_trust(&self) -> Option<nox_protocol::price::Trust> {
        if self.oracles.is_empty() {
            return None;
        }
        let oracles: Vec<[u8; 32]> = self.oracles.iter().map(|o| o.key.verifying_key().to_bytes()).collect();
        Some(nox_protocol::price::Trust {
            chain_id: CHAIN_ID,
            threshold: nox_protocol::price::majority(oracles.len()),
            oracles,
            max_age_ms: self.options().price_max_age_secs * 1000,
            max_skew_ms: 10_000,
        })
    }

    /// Waits until the network prices the fee token: every entry node
    /// serves rounds that price it under the devnet's trust (checked as a
    /// client checks its entry's `GetPrices` answer), and every exit has
    /// accepted at least as many rounds as there are oracles (exits take no
    /// clients, so their book is seen through their metrics).
    pub async fn wait_prices(&self, limit: Duration) -> Result<(), DevnetError> {
        let Some(trust) = self.price_trust() else { return Ok(()) };
        let deadline = Instant::now() + limit;
        for idx in self.layer(0) {
            let peer = self.client(idx).await?;
            let node = self.nodes[idx].peer_id;
            loop {
                let rounds = peer.price_rounds(node, Duration::from_secs(2)).await.unwrap_or_default();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let mut book = nox_protocol::price::PriceBook::new(trust.clone())
                    .map_err(|e| DevnetError::Oracle(e.to_string()))?;
                for r in &rounds {
                    let _ = book.accept_bytes(r, now);
                }
                if book.wei_to_token(1, &self.deployment.fee_token.0.0, now).is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    peer.shutdown().await;
                    return Err(DevnetError::Timeout("every entry to price the fee token"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peer.shutdown().await;
        }
        let want = self.oracles.len() as u64;
        for idx in self.layer(2) {
            while accepted_rounds(&self.metrics_of(idx).await.unwrap_or_default()) < want {
                if Instant::now() > deadline {
                    return Err(DevnetError::Timeout("every exit to accept the oracles' rounds"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

/// `nox_events_total{kind="price",outcome="accepted"}` in a node's metrics.
pub fn accepted_rounds(metrics: &str) -> u64 {
    crate::metric_sum(metrics, "nox_events_total", &["kind=\"price\"", "outcome=\"accepted\""])
}
