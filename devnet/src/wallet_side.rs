//! The user's side of the devnet: a [`nox_client::Client`] that learns the
//! network from NoxRegistry on the devnet's anvil, the local JSON-RPC proxy
//! in front of it ([`ProxyHandle`]), and `cast` from `node_modules/.bin`
//! pointed at that proxy — what a dApp user runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nox_client::proxy::{Backend, ProxyConfig};
use nox_client::{Client, ClientConfig, TopologySource};
use nox_eth::registry::follower::FollowerConfig;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::DevnetError;
use crate::anvil::CHAIN_ID;
use crate::network::Devnet;

/// A proxy serving on loopback, stopped by [`ProxyHandle::stop`] (or when dropped).
#[derive(Debug)]
pub struct ProxyHandle {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl ProxyHandle {
    /// Stops accepting, lets requests in flight finish, and returns.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl Devnet {
    /// A client's configuration for this devnet: members from NoxRegistry,
    /// the nodes' epoch length and proof of work, `mean_delay` per hop.
    pub fn client_config(&self, mean_delay: Duration) -> ClientConfig {
        let follower = FollowerConfig {
            rpc_urls: vec![self.rpc_url()],
            quorum: 0,
            chain_id: CHAIN_ID,
            registry: self.deployment.registry,
            start_block: 0,
            confirmations: 0,
            max_log_range: 10_000,
            rpc_timeout: Duration::from_secs(5),
        };
        let mut cfg = ClientConfig::new(TopologySource::Registry(follower));
        if let Some(n) = self.nodes.first() {
            cfg.epoch_secs = n.config.network.epoch_secs;
            cfg.pow_bits = n.config.ingest.pow_bits;
        }
        cfg.mean_delay = mean_delay;
        cfg
    }

    /// A client connected through a random registered entry.
    pub async fn mixnet_client(&self, mean_delay: Duration) -> Result<Client, DevnetError> {
        Client::connect(self.client_config(mean_delay)).await.map_err(|e| DevnetError::Client(e.to_string()))
    }
}

/// Serves the JSON-RPC proxy for `backend` on a free loopback port.
pub async fn start_proxy(backend: Arc<dyn Backend>) -> Result<ProxyHandle, DevnetError> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| DevnetError::Spawn { what: "proxy listener", source: e })?;
    let addr = listener.local_addr().map_err(|e| DevnetError::Spawn { what: "proxy listener", source: e })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(nox_client::proxy::serve(listener, backend, ProxyConfig::new(CHAIN_ID), async {
        let _ = stopped.await;
    }));
    Ok(ProxyHandle { url: format!("http://{addr}"), stop: Some(stop), task: Some(task) })
}

/// `node_modules/.bin/cast`.
pub fn cast_binary() -> Result<PathBuf, DevnetError> {
    let p = crate::repo_root().join("node_modules/.bin/cast");
    if p.exists() { Ok(p) } else { Err(DevnetError::MissingTool(format!("{} (run npm ci)", p.display()))) }
}

/// Runs `cast ARGS` and returns its trimmed stdout, or its stderr as the error.
pub async fn cast(args: &[&str]) -> Result<String, DevnetError> {
    let out = tokio::process::Command::new(cast_binary()?)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| DevnetError::Spawn { what: "cast", source: e })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(DevnetError::Tool {
            tool: format!("cast {}", args.first().copied().unwrap_or_default()),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// A devnet user holding shielded funds: a wallet, the prover for the
/// devnet's spend keys, and the funding account its deposits came from.
pub struct ShieldedUser {
    /// The wallet (its file is in the devnet's directory unless told otherwise).
    pub wallet: nox_client::wallet::Wallet,
    /// Proves with the devnet's `spend.pk`.
    pub prover: Arc<nox_client::wallet::Prover>,
    /// The address that funded the deposits (public on chain).
    pub funding: alloy::primitives::Address,
    /// The funding account's direct RPC client: deposits and forced
    /// insertions are sent from it.
    pub eth: nox_eth::EthClient,
}

impl std::fmt::Debug for ShieldedUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShieldedUser").field("funding", &self.funding).finish_non_exhaustive()
    }
}

/// How long a devnet user waits for a note to become spendable.
const SPENDABLE_WAIT: Duration = Duration::from_secs(60);

impl ShieldedUser {
    /// Syncs through `client` (the mixnet) until a note of `asset` worth
    /// `amount` is spendable. NoxPool v2 queues every new note until a flush
    /// inserts it, and exits flush only full segments of 32 leaves, which a
    /// devnet's few notes never fill: when only queued notes could pay, the
    /// wallet inserts them from the funding account (`Wallet::ensure_spendable`
    /// → `insert_now`). After a deposit from that account this reveals
    /// nothing new; for a change note it links the account to the spend (a
    /// test's shortcut; a private user waits for a flush by anyone).
    pub async fn wait_spendable(
        &mut self,
        client: &Client,
        asset: alloy::primitives::Address,
        amount: u128,
    ) -> Result<(), DevnetError> {
        use nox_client::chain_reader::MixnetReader;
        use nox_client::wallet::PoolReader;
        let chain = |e: &dyn std::fmt::Display| DevnetError::Chain(e.to_string());
        let reader = MixnetReader::new(client, CHAIN_ID);
        self.wallet.sync(&reader as &dyn PoolReader, 0).await.map_err(|e| chain(&e))?;
        match self.wallet.ensure_spendable(&self.eth, &reader, asset, amount, 0, SPENDABLE_WAIT).await {
            Ok(_) => Ok(()),
            Err(
                nox_client::wallet::WalletError::OnlyQueued { .. }
                | nox_client::wallet::WalletError::OnlyPendingChange { .. }
                | nox_client::wallet::WalletError::OnlyUnconfirmedDeposit { .. },
            ) => Err(DevnetError::Timeout("a note to become spendable")),
            Err(e) => Err(chain(&e)),
        }
    }
}

impl Devnet {
    /// Creates a wallet at `path`, deposits `deposit_wei` into NoxPool from
    /// `funding_key` (an anvil account), inserts the note from that account
    /// and syncs through `client` (the mixnet) until it is spendable.
    pub async fn shielded_user(
        &self,
        path: &std::path::Path,
        kdf: nox_client::wallet::KdfParams,
        funding_key: &str,
        deposit_wei: u128,
        client: &Client,
    ) -> Result<ShieldedUser, DevnetError> {
        use nox_client::wallet::{Prover, Wallet};
        let chain = |e: &dyn std::fmt::Display| DevnetError::Chain(e.to_string());
        let signer: alloy::signers::local::PrivateKeySigner = funding_key.parse().map_err(|e| chain(&e))?;
        let funding = signer.address();
        let mut wallet = Wallet::create(path, "devnet user", CHAIN_ID, self.pool(), 0, kdf).map_err(|e| chain(&e))?;
        let eth =
            nox_eth::EthClient::new(&self.rpc_url(), Duration::from_secs(10), Some(signer)).map_err(|e| chain(&e))?;
        wallet.deposit_eth(&eth, deposit_wei).await.map_err(|e| chain(&e))?;
        let keys = self.keys_dir().to_path_buf();
        let prover = tokio::task::spawn_blocking(move || Prover::load(&keys))
            .await
            .map_err(|e| DevnetError::Zk(e.to_string()))?
            .map_err(|e| DevnetError::Zk(e.to_string()))?;
        let mut user = ShieldedUser { wallet, prover: Arc::new(prover), funding, eth };
        user.wait_spendable(client, alloy::primitives::Address::ZERO, deposit_wei).await?;
        Ok(user)
    }

    /// Mints `amount` of the fee token (tUSD base units) to `user`'s funding
    /// account, deposits it into NoxPool as a token note, inserts it, and
    /// syncs through `client` until the note is spendable.
    pub async fn deposit_fee_token(
        &self,
        user: &mut ShieldedUser,
        amount: u128,
        client: &Client,
    ) -> Result<(), DevnetError> {
        let chain = |e: &dyn std::fmt::Display| DevnetError::Chain(e.to_string());
        let token = self.deployment.fee_token;
        self.mint_fee_token(user.funding, alloy::primitives::U256::from(amount)).await?;
        user.wallet.deposit_erc20(&user.eth, token, amount).await.map_err(|e| chain(&e))?;
        user.wait_spendable(client, token, amount).await
    }
}
