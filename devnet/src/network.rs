//! A staked network on anvil: operators funded, registered through
//! `nox_eth::registry::operator` (the code behind `nox register`), nodes started with a
//! `[chain]` section and no `[[topology.nodes]]`, so that they find each other
//! only through NoxRegistry.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use alloy_sol_types::SolCall;
use libp2p::PeerId;
use nox_client::{PreparedRequest, echo_request};
use nox_eth::EthClient;
use nox_eth::registry::operator::{self, RegistryTarget};
use nox_net::p2p::PeerKind;
use nox_net::raw_peer::RawPeer;
use nox_net::topology_doc::TopologyDocument;
use nox_node::config::{NodeConfig, Role};
use nox_node::faults::Faults;
use nox_node::keys::NodeKeys;
use nox_node::localnet::base_config;
use nox_node::node::{NodeOptions, RunningNode};
use nox_protocol::NodeId;
use nox_protocol::contracts::{NoxRegistry, NoxTestToken};
use nox_protocol::crypto::x25519::MixPublicKey;
use nox_protocol::sphinx::Hop;

use crate::DevnetError;
use crate::anvil::{Anvil, CHAIN_ID, DEPLOYER_KEY, free_port, kill_group, spawn_logged, stop_child};
use crate::deploy::{DeployParams, Deployment, deploy};

/// How the nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// In this process, on the caller's tokio runtime.
    InProcess,
    /// As `nox run --config FILE` processes, each in its own process group.
    Processes,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct DevnetOptions {
    /// Nodes per layer: entry, mix, exit.
    pub per_layer: [usize; 3],
    /// How nodes run.
    pub launch: Launch,
    /// `chain.poll_interval_ms` of every node.
    pub poll_interval_ms: u64,
    /// `chain.confirmations` of every node (anvil mines a block per transaction).
    pub confirmations: u64,
    /// `network.epoch_secs`.
    pub epoch_secs: u64,
    /// Loop and drop cover rates of every node (packets per second).
    pub cover_rate: f64,
    /// `log.level` of process nodes.
    pub log_level: String,
    /// Where node directories go; a fresh temporary directory if `None`.
    pub dir: Option<PathBuf>,
    /// The exits' upstream Ethereum RPC (`exit.rpc_url`); the devnet's anvil if `None`.
    pub exit_upstream: Option<String>,
    /// Whether exits offer `Http` fetches (`exit.http`; loopback stays refused).
    pub exit_http: bool,
    /// `exit.eth_flush_every_secs` of every exit (paid calls are always on).
    pub exit_flush_every_secs: u64,
    /// `exit.eth_flush_open_after_secs` of every exit (0: exits flush closed
    /// segments only).
    pub exit_flush_open_after_secs: u64,
    /// Price oracles (0: none, and exits take fees in ETH only). With
    /// oracles, every node trusts their keys with a majority threshold and
    /// every exit also takes fees in the deployment's NoxTestDollar.
    pub oracles: usize,
    /// `oracle.interval_ms` of every oracle.
    pub oracle_interval_ms: u64,
    /// `prices.max_age_secs` of every node.
    pub price_max_age_secs: u64,
    /// Changes every exit's `[exit]` after the devnet set it (mail delivery,
    /// say); `None`: none.
    pub exit_tweak: Option<ExitTweak>,
}

/// A change to every exit's `[exit]` section ([`DevnetOptions::exit_tweak`]).
#[derive(Clone)]
pub struct ExitTweak(pub std::sync::Arc<dyn Fn(&mut nox_node::config::ExitSection) + Send + Sync>);

impl std::fmt::Debug for ExitTweak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExitTweak(..)")
    }
}

impl Default for DevnetOptions {
    fn default() -> Self {
        DevnetOptions {
            per_layer: [3, 3, 3],
            launch: Launch::InProcess,
            poll_interval_ms: 250,
            confirmations: 0,
            epoch_secs: 3 * 3600,
            cover_rate: 0.0,
            log_level: "info".into(),
            dir: None,
            exit_upstream: None,
            exit_http: false,
            exit_flush_every_secs: 5,
            exit_flush_open_after_secs: 0,
            oracles: 0,
            oracle_interval_ms: 1_000,
            price_max_age_secs: 30,
            exit_tweak: None,
        }
    }
}

enum Runner {
    Stopped,
    InProcess(Box<RunningNode>),
    Process(Child),
}

/// One node of the devnet.
pub struct DevnetNode {
    /// Position in [`Devnet::nodes`].
    pub index: usize,
    /// Its keys (identity = node id, wallet = operator).
    pub keys: NodeKeys,
    /// Its configuration (also written to `config_path`).
    pub config: NodeConfig,
    /// `nox.toml` of the node.
    pub config_path: PathBuf,
    /// The multiaddr it registered.
    pub multiaddr: String,
    /// Its libp2p peer id.
    pub peer_id: PeerId,
    /// Whether it is registered (nodes prepared for a test may not be).
    pub registered: bool,
    /// An exit's wallet for paid calls (`exit.eth_wallet_key_file`): one of
    /// anvil's default accounts #9 down to #4, then fresh keys, funded.
    pub exit_wallet: Option<PrivateKeySigner>,
    /// Test faults the node starts with when it runs in-process.
    pub faults: Faults,
    runner: Runner,
}

impl std::fmt::Debug for DevnetNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevnetNode")
            .field("index", &self.index)
            .field("layer", &self.config.node.layer)
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

impl DevnetNode {
    /// The node id.
    pub fn id(&self) -> NodeId {
        NodeId(self.keys.node_id())
    }

    /// Layer.
    pub fn layer(&self) -> u8 {
        self.config.node.layer
    }

    /// The operator's address.
    pub fn operator(&self) -> Address {
        self.keys.wallet_address()
    }

    /// The address of an exit's paid-call wallet (the recipient its spend
    /// proofs must name).
    pub fn exit_wallet_address(&self) -> Option<Address> {
        self.exit_wallet.as_ref().map(PrivateKeySigner::address)
    }

    /// Admin HTTP address (`/health`, `/metrics`, `/topology`).
    pub fn http(&self) -> SocketAddr {
        self.config.http.listen
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        !matches!(self.runner, Runner::Stopped)
    }

    /// The in-process node, if it runs in this process.
    pub fn running(&self) -> Option<&RunningNode> {
        match &self.runner {
            Runner::InProcess(r) => Some(r),
            _ => None,
        }
    }

    /// The process id, if it runs as a process.
    pub fn pid(&self) -> Option<u32> {
        match &self.runner {
            Runner::Process(c) => Some(c.id()),
            _ => None,
        }
    }
}

/// A running devnet. Dropping it kills every process it started (anvil and
/// process nodes) with its process group; [`Devnet::shutdown`] stops the
/// nodes cleanly first.
#[derive(Debug)]
pub struct Devnet {
    /// The chain.
    pub anvil: Anvil,
    /// The contracts.
    pub deployment: Deployment,
    /// The nodes, in registration order.
    pub nodes: Vec<DevnetNode>,
    opts: DevnetOptions,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    http: alloy::transports::http::reqwest::Client,
    slasher_ready: bool,
    keys_dir: PathBuf,
    /// The price oracles ([`DevnetOptions::oracles`]).
    pub oracles: Vec<crate::oracles::DevnetOracle>,
    pub(crate) price_apis: Option<crate::price_apis::PriceApis>,
}

impl Devnet {
    /// Starts anvil, deploys, funds and registers `per_layer` nodes (a relay's
    /// wallet is drawn again until its commitment puts it in the wanted
    /// layer, see [`Devnet::register`]), starts
    /// them and waits until every node sees every other with its current
    /// epoch key.
    pub async fn start(opts: DevnetOptions) -> Result<Devnet, DevnetError> {
        let root = crate::repo_root();
        let (dir, tmp) = match &opts.dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| DevnetError::Spawn { what: "devnet directory", source: e })?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("nox-devnet-")
                    .tempdir()
                    .map_err(|e| DevnetError::Spawn { what: "devnet directory", source: e })?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let anvil = Anvil::start(&root, None)?;
        let url = anvil.url();
        let deployment = {
            let (root, url) = (root.clone(), url.clone());
            tokio::task::spawn_blocking(move || deploy(&root, &url, DEPLOYER_KEY, &DeployParams::default()))
                .await
                .map_err(|e| DevnetError::Deploy(e.to_string()))??
        };
        let http = alloy::transports::http::reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| DevnetError::Chain(e.to_string()))?;
        let keys_dir = dir.join("zk");
        {
            let keys_dir = keys_dir.clone();
            tokio::task::spawn_blocking(move || crate::zk::write_dev_keys(&keys_dir))
                .await
                .map_err(|e| DevnetError::Zk(e.to_string()))??;
        }
        let mut net = Devnet {
            anvil,
            deployment,
            nodes: Vec::new(),
            opts,
            dir,
            _tmp: tmp,
            http,
            slasher_ready: false,
            keys_dir,
            oracles: Vec::new(),
            price_apis: None,
        };
        net.prepare_oracles(net.opts.oracles).await?;
        let layers: Vec<u8> =
            net.opts.per_layer.iter().enumerate().flat_map(|(l, n)| std::iter::repeat_n(l as u8, *n)).collect();
        for layer in layers {
            let idx = net.prepare_node(layer)?;
            net.register(idx).await?;
        }
        for idx in 0..net.nodes.len() {
            net.start_node(idx).await?;
        }
        net.wait_converged(Duration::from_secs(60)).await?;
        for idx in 0..net.oracles.len() {
            net.start_oracle(idx).await?;
        }
        net.wait_prices(Duration::from_secs(60)).await?;
        Ok(net)
    }

    /// The options the devnet was started with.
    pub fn options(&self) -> &DevnetOptions {
        &self.opts
    }

    pub(crate) fn http_client(&self) -> &alloy::transports::http::reqwest::Client {
        &self.http
    }

    /// The JSON-RPC URL of the chain.
    pub fn rpc_url(&self) -> String {
        self.anvil.url()
    }

    /// The chain target nodes are configured with.
    pub fn target(&self) -> RegistryTarget {
        RegistryTarget { rpc_url: self.rpc_url(), chain_id: CHAIN_ID, registry: self.deployment.registry }
    }

    /// Where node directories live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory holding the development spend keys (`spend.pk`,
    /// `spend.vk`; [`crate::zk`]): exits verify with its `spend.vk`, a
    /// client proves with its `spend.pk`. The deployed SpendVerifier is made
    /// from the same keys.
    pub fn keys_dir(&self) -> &Path {
        &self.keys_dir
    }

    /// The NoxPool exits relay for.
    pub fn pool(&self) -> Address {
        self.deployment.pool
    }

    /// The exits' paid-call wallets, by node index.
    pub fn exit_wallets(&self) -> Vec<(usize, Address)> {
        self.nodes.iter().filter_map(|n| n.exit_wallet_address().map(|a| (n.index, a))).collect()
    }

    /// Sets the test faults node `idx` starts with (in-process only); takes
    /// effect at its next start.
    pub fn set_faults(&mut self, idx: usize, faults: Faults) {
        self.nodes[idx].faults = faults;
    }

    /// Creates keys, directory and configuration for a new node of `layer`,
    /// and funds its wallet (ETH and stake tokens); does not register or
    /// start it. Returns its index.
    pub fn prepare_node(&mut self, layer: u8) -> Result<usize, DevnetError> {
        let index = self.nodes.len();
        let keys = NodeKeys::generate(&mut rand::rngs::OsRng);
        let ndir = self.dir.join(format!("node{index}"));
        let mut config = base_config(&ndir, layer);
        let mut exit_wallet = None;
        let p2p_port = free_port()?;
        let http_port = free_port()?;
        let multiaddr = format!("/ip4/127.0.0.1/tcp/{p2p_port}");
        config.p2p.listen = vec![multiaddr.clone()];
        config.http.listen = SocketAddr::from(([127, 0, 0, 1], http_port));
        config.network.epoch_secs = self.opts.epoch_secs;
        config.network.grace_secs = (self.opts.epoch_secs / 4).min(config.network.grace_secs);
        config.cover.loop_rate = self.opts.cover_rate;
        config.cover.drop_rate = self.opts.cover_rate;
        config.chain.rpc_url = Some(self.rpc_url());
        config.chain.chain_id = CHAIN_ID;
        config.chain.registry = Some(self.deployment.registry.to_string());
        config.chain.confirmations = self.opts.confirmations;
        config.chain.poll_interval_ms = self.opts.poll_interval_ms;
        config.chain.rpc_timeout_ms = 2_000;
        if layer == 2 {
            // Exits serve the Ethereum RPC services against the devnet's anvil.
            config.exit.rpc_url = Some(self.opts.exit_upstream.clone().unwrap_or_else(|| self.rpc_url()));
            config.exit.rpc_call = true;
            config.exit.raw_broadcast = true;
            config.exit.http = self.opts.exit_http;
            // Paid calls: a funded wallet of its own, the deployed pool and the dev keys.
            let exits_before = self.nodes.iter().filter(|n| n.exit_wallet.is_some()).count();
            let signer = match EXIT_WALLET_KEYS.get(exits_before) {
                Some(k) => k.parse().map_err(|e| DevnetError::Node { index, reason: format!("{e}") })?,
                None => PrivateKeySigner::random(),
            };
            let key_file = ndir.join("exit-wallet.key");
            write_private(&key_file, &format!("0x{}\n", hex::encode(signer.to_bytes())))
                .map_err(|e| DevnetError::Node { index, reason: format!("exit wallet key: {e}") })?;
            config.exit.eth_request = true;
            config.exit.eth_wallet_key_file = Some(key_file.display().to_string());
            config.exit.eth_pool = Some(self.deployment.pool.to_string());
            config.exit.eth_verifying_key =
                Some(self.keys_dir.join(nox_circuits::groth16::VERIFYING_KEY_FILE).display().to_string());
            config.exit.eth_margin_bps = 1000;
            config.exit.eth_flush_every_secs = self.opts.exit_flush_every_secs;
            config.exit.eth_flush_open_after_secs = self.opts.exit_flush_open_after_secs;
            if !self.oracles.is_empty() {
                config.exit.eth_fee_tokens = vec![self.deployment.fee_token.to_string()];
            }
            exit_wallet = Some(signer);
            if let Some(tweak) = &self.opts.exit_tweak {
                (tweak.0)(&mut config.exit);
            }
        }
        // Every node checks and relays the oracles' rounds; entries serve
        // them to clients, exits price token fees with them.
        config.prices.oracle_keys = self.oracles.iter().map(|o| o.public_key_hex()).collect();
        config.prices.max_age_secs = self.opts.price_max_age_secs;
        config.log.level = self.opts.log_level.clone();
        keys.write(&config.node.keys_dir, true).map_err(|e| DevnetError::Node { index, reason: e.to_string() })?;
        let config_path = ndir.join("nox.toml");
        let text = toml::to_string(&config).map_err(|e| DevnetError::Node { index, reason: e.to_string() })?;
        std::fs::write(&config_path, text).map_err(|e| DevnetError::Node { index, reason: e.to_string() })?;
        let peer_id = nox_net::p2p::peer_id_of(&NodeId(keys.node_id()))
            .map_err(|e| DevnetError::Node { index, reason: e.to_string() })?;
        self.nodes.push(DevnetNode {
            index,
            keys,
            config,
            config_path,
            multiaddr,
            peer_id,
            registered: false,
            exit_wallet,
            faults: Faults::default(),
            runner: Runner::Stopped,
        });
        Ok(index)
    }

    /// A `nox-client` configuration for this devnet: its epoch and proof of
    /// work, members from its NoxRegistry without confirmations, and 1 ms of
    /// mean delay per hop; the caller adds what its command needs.
    pub fn client_file(&self) -> nox_client::config::ClientFile {
        let mut cfg = nox_client::config::ClientFile::default();
        cfg.network.epoch_secs = self.nodes[0].config.network.epoch_secs;
        cfg.network.pow_bits = self.nodes[0].config.ingest.pow_bits;
        cfg.topology.rpc_url = Some(self.rpc_url());
        cfg.topology.chain_id = CHAIN_ID;
        cfg.topology.registry = Some(self.deployment.registry.to_string());
        cfg.topology.confirmations = 0;
        cfg.routes.mean_delay_ms = 1.0;
        cfg
    }

    /// An RPC client that signs with the deployer (registry admin) key.
    fn deployer(&self) -> Result<EthClient, DevnetError> {
        let signer: PrivateKeySigner = DEPLOYER_KEY.parse().map_err(|e| DevnetError::Chain(format!("{e}")))?;
        EthClient::new(&self.rpc_url(), Duration::from_secs(10), Some(signer))
            .map_err(|e| DevnetError::Chain(e.to_string()))
    }

    async fn deployer_send(&self, to: Address, data: Vec<u8>) -> Result<(), DevnetError> {
        self.deployer()?
            .transact("devnet deployer transaction", to, data)
            .await
            .map(|_| ())
            .map_err(|e| DevnetError::Chain(e.to_string()))
    }

    /// Gives `who` 100 ETH and `tokens` stake-token base units.
    pub async fn fund(&self, who: Address, tokens: U256) -> Result<(), DevnetError> {
        let p = self.deployer()?;
        let wei = U256::from(100u64) * U256::from(10u64).pow(U256::from(18u64));
        p.provider()
            .raw_request::<_, serde_json::Value>("anvil_setBalance".into(), (who, wei))
            .await
            .map_err(|e| DevnetError::Chain(e.to_string()))?;
        self.deployer_send(self.deployment.token, NoxTestToken::mintCall { to: who, amount: tokens }.abi_encode()).await
    }

    /// Mints `amount` base units of the fee token (NoxTestDollar, six
    /// decimals) to `who`.
    pub async fn mint_fee_token(&self, who: Address, amount: U256) -> Result<(), DevnetError> {
        // NoxTestDollar's `mint(address,uint256)` has NoxTestToken's selector.
        self.deployer_send(self.deployment.fee_token, NoxTestToken::mintCall { to: who, amount }.abi_encode()).await
    }

    /// Funds and registers node `idx` with the minimum stake, in the layer
    /// its configuration names. A relay's layer is fixed by the hash of the
    /// block that mines its commitment; when that is not the wanted layer the
    /// devnet gives the commitment up (its stake waits out the unstake delay
    /// in the abandoned wallet) and commits again from a fresh wallet, as any
    /// operator could at the same price.
    pub async fn register(&mut self, idx: usize) -> Result<(), DevnetError> {
        /// Tries before giving up: each lands in the wanted layer with
        /// probability 1/2.
        const MAX_TRIES: usize = 64;
        let min = DeployParams::default().min_stake;
        let target = self.target();
        let failed = |reason: String| DevnetError::Node { index: idx, reason };
        if let Some(wallet) = self.nodes[idx].exit_wallet_address() {
            self.fund(wallet, U256::ZERO).await?;
        }
        for _ in 0..MAX_TRIES {
            self.fund(self.nodes[idx].operator(), min).await?;
            let n = &self.nodes[idx];
            let (op, role, wanted) = (n.keys.operator(), n.config.node.role, n.config.node.layer);
            operator::commit_registration(&target, &op, Some(min)).await.map_err(|e| failed(format!("commit: {e}")))?;
            self.deployer()?
                .provider()
                .raw_request::<_, serde_json::Value>("evm_mine".into(), ())
                .await
                .map_err(|e| DevnetError::Chain(format!("evm_mine: {e}")))?;
            let layer = operator::commitment_layer(&target, &op).await.map_err(|e| failed(format!("layer: {e}")))?;
            if role == nox_protocol::Role::Exit || layer == Some(wanted) {
                operator::reveal_registration(&target, &op, role, &self.nodes[idx].multiaddr)
                    .await
                    .map_err(|e| failed(format!("register: {e}")))?;
                self.nodes[idx].registered = true;
                return Ok(());
            }
            operator::request_unstake(&target, &op).await.map_err(|e| failed(format!("cancel: {e}")))?;
            let n = &mut self.nodes[idx];
            n.keys.wallet = NodeKeys::generate(&mut rand::rngs::OsRng).wallet;
            n.keys.write(&n.config.node.keys_dir, true).map_err(|e| failed(e.to_string()))?;
        }
        Err(failed(format!("no commitment in {MAX_TRIES} put the relay in layer {}", self.nodes[idx].layer())))
    }

    /// Slashes node `idx`'s whole stake (the deployer grants itself the
    /// slasher role first), which removes it from the registry.
    pub async fn slash(&mut self, idx: usize) -> Result<(), DevnetError> {
        let registry = self.deployment.registry;
        let deployer = self.deployment.admin;
        if !self.slasher_ready {
            let role = alloy::primitives::keccak256("NOX_SLASHER");
            self.deployer_send(registry, NoxRegistry::grantRoleCall { role, account: deployer }.abi_encode()).await?;
            self.slasher_ready = true;
        }
        let operator = self.nodes[idx].operator();
        let reporter = Address::repeat_byte(0x42);
        let amount = DeployParams::default().min_stake;
        self.deployer_send(registry, NoxRegistry::slashCall { operator, amount, reporter }.abi_encode()).await
    }

    /// Starts (or restarts) node `idx` as [`DevnetOptions::launch`] says.
    pub async fn start_node(&mut self, idx: usize) -> Result<(), DevnetError> {
        let launch = self.opts.launch;
        self.start_node_as(idx, launch).await
    }

    /// Starts (or restarts) node `idx` in-process or as a process.
    pub async fn start_node_as(&mut self, idx: usize, launch: Launch) -> Result<(), DevnetError> {
        if self.nodes[idx].is_running() {
            return Ok(());
        }
        let n = &mut self.nodes[idx];
        n.runner = match launch {
            Launch::InProcess => {
                let opts = NodeOptions { faults: n.faults, ..NodeOptions::default() };
                let running = nox_node::node::start(n.config.clone(), n.keys.clone(), opts)
                    .await
                    .map_err(|e| DevnetError::Node { index: idx, reason: e.to_string() })?;
                Runner::InProcess(Box::new(running))
            }
            Launch::Processes => {
                let bin = crate::nox_binary()?;
                let log = n.config_path.with_file_name("nox.log");
                let args = [std::ffi::OsStr::new("run"), "--config".as_ref(), n.config_path.as_os_str()];
                let child = spawn_logged(&bin, &args, &log, "nox run")?;
                Runner::Process(child)
            }
        };
        self.wait_health(idx, Duration::from_secs(30)).await
    }

    async fn wait_health(&mut self, idx: usize, limit: Duration) -> Result<(), DevnetError> {
        let deadline = Instant::now() + limit;
        let url = format!("http://{}/health", self.nodes[idx].http());
        loop {
            if let Runner::Process(child) = &mut self.nodes[idx].runner
                && let Ok(Some(status)) = child.try_wait()
            {
                self.nodes[idx].runner = Runner::Stopped;
                let log = self.nodes[idx].config_path.with_file_name("nox.log");
                return Err(DevnetError::Node {
                    index: idx,
                    reason: format!("nox run exited with {status}; see {}", log.display()),
                });
            }
            if self.http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(DevnetError::Timeout("a node's /health"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops node `idx`: an in-process node shuts down, a process gets
    /// SIGTERM (and SIGKILL if it has not exited within 10 s).
    pub async fn stop_node(&mut self, idx: usize) {
        match std::mem::replace(&mut self.nodes[idx].runner, Runner::Stopped) {
            Runner::Stopped => {}
            Runner::InProcess(r) => r.shutdown().await,
            Runner::Process(child) => stop_child(child).await,
        }
    }

    /// Kills node `idx` at once: a process gets SIGKILL (no shutdown of any
    /// kind); an in-process node, which cannot be killed alone, shuts down.
    pub async fn kill_node(&mut self, idx: usize) {
        match std::mem::replace(&mut self.nodes[idx].runner, Runner::Stopped) {
            Runner::Stopped => {}
            Runner::InProcess(r) => r.shutdown().await,
            Runner::Process(mut child) => {
                let _ = child.kill();
                let _ = tokio::task::spawn_blocking(move || child.wait()).await;
            }
        }
    }

    /// Stops every node cleanly, then anvil.
    pub async fn shutdown(mut self) {
        for idx in 0..self.oracles.len() {
            self.stop_oracle(idx).await;
        }
        for idx in 0..self.nodes.len() {
            self.stop_node(idx).await;
        }
        self.anvil.kill();
    }

    /// `GET /topology` of node `idx`.
    pub async fn topology_of(&self, idx: usize) -> Result<TopologyDocument, DevnetError> {
        let text = self.get_text(idx, "/topology").await?;
        TopologyDocument::from_json(&text)
            .map_err(|e| DevnetError::Node { index: idx, reason: format!("/topology: {e}") })
    }

    /// `GET /metrics` of node `idx`.
    pub async fn metrics_of(&self, idx: usize) -> Result<String, DevnetError> {
        self.get_text(idx, "/metrics").await
    }

    async fn get_text(&self, idx: usize, path: &str) -> Result<String, DevnetError> {
        let url = format!("http://{}{path}", self.nodes[idx].http());
        let resp =
            self.http.get(&url).send().await.map_err(|e| DevnetError::Node { index: idx, reason: e.to_string() })?;
        resp.text().await.map_err(|e| DevnetError::Node { index: idx, reason: e.to_string() })
    }

    /// The node ids in node `viewer`'s topology with their current-epoch
    /// mix key (`None` while no descriptor is held).
    pub async fn view_of(&self, viewer: usize) -> Result<Vec<(NodeId, Option<MixPublicKey>)>, DevnetError> {
        Ok(self.epoch_view_of(viewer).await?.1)
    }

    /// [`Devnet::view_of`] with the epoch the viewer is in (its own clock).
    async fn epoch_view_of(&self, viewer: usize) -> Result<(u64, Vec<(NodeId, Option<MixPublicKey>)>), DevnetError> {
        let doc = self.topology_of(viewer).await?;
        let epoch = doc.epoch.current;
        Ok((epoch, doc.nodes.iter().map(|n| (n.id(), n.mix_key(epoch))).collect()))
    }

    /// Waits until every running node holds exactly the registered nodes
    /// that run, each with its current epoch key.
    pub async fn wait_converged(&self, limit: Duration) -> Result<(), DevnetError> {
        let deadline = Instant::now() + limit;
        loop {
            if self.converged().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(DevnetError::Timeout("every node to see the whole registered topology"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn converged(&self) -> bool {
        let mut want: Vec<NodeId> =
            self.nodes.iter().filter(|n| n.registered && n.is_running()).map(DevnetNode::id).collect();
        want.sort_by_key(|id| id.0);
        for n in self.nodes.iter().filter(|n| n.registered && n.is_running()) {
            let Ok(view) = self.view_of(n.index).await else { return false };
            let mut have: Vec<NodeId> = view.iter().filter(|(_, k)| k.is_some()).map(|(id, _)| *id).collect();
            have.sort_by_key(|id| id.0);
            if have != want {
                return false;
            }
        }
        true
    }

    /// Waits until `pred` holds for node `viewer`'s view.
    pub async fn wait_view(
        &self,
        viewer: usize,
        limit: Duration,
        pred: impl Fn(&[(NodeId, Option<MixPublicKey>)]) -> bool,
    ) -> Result<(), DevnetError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(v) = self.view_of(viewer).await
                && pred(&v)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(DevnetError::Timeout("a node's view of the topology"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Hops over the nodes `via`, with the keys node `viewer` holds for the
    /// current epoch (verified descriptors from its `/topology`).
    pub async fn route(&self, viewer: usize, via: &[usize], delay_us: u32) -> Result<(u64, Vec<Hop>), DevnetError> {
        let doc = self.topology_of(viewer).await?;
        let epoch = doc.epoch.current;
        let ids: Vec<NodeId> = via.iter().map(|i| self.nodes[*i].id()).collect();
        let hops = doc.route_set(epoch).explicit(&ids, delay_us).map_err(|e| {
            let index = match e {
                nox_protocol::route::RouteError::UnknownHop(i) => via.get(i).copied().unwrap_or(viewer),
                _ => viewer,
            };
            DevnetError::Node { index, reason: format!("no current key in the viewer's topology: {e}") }
        })?;
        Ok((epoch, hops))
    }

    /// An echo request from a client at gateway `via[0]` through `via`, with
    /// `surbs` SURBs back through `back` (which must end at the gateway).
    pub async fn echo(&self, via: &[usize], back: &[usize], data: Vec<u8>) -> Result<PreparedRequest, DevnetError> {
        let (epoch, route) = self.route(via[0], via, 1_000).await?;
        let (_, surb_route) = self.route(via[0], back, 1_000).await?;
        echo_request(epoch, &route, &surb_route, 2, data)
            .map_err(|e| DevnetError::Node { index: via[0], reason: e.to_string() })
    }

    /// A client connected to (and welcomed by) node `gateway`.
    pub async fn client(&self, gateway: usize) -> Result<RawPeer, DevnetError> {
        let err = |e: nox_net::raw_peer::RawPeerError| DevnetError::Node { index: gateway, reason: e.to_string() };
        let client = RawPeer::start(libp2p::identity::Keypair::generate_ed25519(), Vec::new(), PeerKind::Client, 1024)
            .await
            .map_err(err)?;
        let n = &self.nodes[gateway];
        let addr = n
            .multiaddr
            .parse()
            .map_err(|e: libp2p::multiaddr::Error| DevnetError::Node { index: gateway, reason: e.to_string() })?;
        client.connect(n.peer_id, vec![addr], Duration::from_secs(10)).await.map_err(err)?;
        Ok(client)
    }

    /// Indices of the registered nodes of `layer`.
    pub fn layer(&self, layer: u8) -> Vec<usize> {
        self.nodes.iter().filter(|n| n.registered && n.layer() == layer).map(|n| n.index).collect()
    }

    /// The registry's topology fingerprint.
    pub async fn registry_fingerprint(&self) -> Result<B256, DevnetError> {
        self.deployer()?
            .view("NoxRegistry", self.deployment.registry, NoxRegistry::topologyFingerprintCall {})
            .await
            .map_err(|e| DevnetError::Chain(e.to_string()))
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        for o in &mut self.oracles {
            o.kill_now();
        }
        for n in &mut self.nodes {
            if let Runner::Process(child) = &mut n.runner {
                kill_group(child);
            }
            n.runner = Runner::Stopped;
        }
        self.anvil.kill();
    }
}

/// anvil's default accounts #9 down to #4: the exits' paid-call wallets, in
/// order (the deployer is #0; #1 to #3 are left to tests and wallets).
pub const EXIT_WALLET_KEYS: [&str; 6] = [
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
];

/// Writes `text` to a new file readable by its owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())
}

/// A node's role from its layer.
pub fn role_of(layer: u8) -> Role {
    if layer == 2 { Role::Exit } else { Role::Relay }
}
