//! The chain watcher against a real chain: anvil from `node_modules/.bin`, the
//! contracts deployed by the devnet's forge script, nodes registered with
//! `nox_eth::registry::operator` from funded wallets, and a [`ChainWatcher`] polled by
//! hand (never its loop) so that every step is deterministic. The tests check
//! what a node operator would see: who is in the topology, the `nox_chain`
//! gauges and `nox_events_total{kind="chain"}` counters, and the stored
//! progress a restarted node resumes from — through confirmations, a reorg,
//! 1-block log ranges, an endpoint that goes away, a wrong chain, a restart,
//! a slash and an unstake — and, with several endpoints and a quorum, lying
//! endpoints: a JSON-RPC proxy in front of anvil that rewrites
//! `eth_getLogs` (another identity key for a registered node) or
//! `eth_getBlockByNumber` (another block hash).
//!
//! Needs `npm ci` to have run (scripts/test does it first).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy_sol_types::SolCall;
use nox_devnet::anvil::{Anvil, DEPLOYER_KEY};
use nox_devnet::deploy::{DeployParams, Deployment};
use nox_eth::registry::FollowerConfig;
use nox_eth::registry::operator::{self, RegistryTarget};
use nox_net::topology_doc::NodeEntry;
use nox_node::chain::{ChainError, ChainWatcher, RegisteredNode, RegistryView, WatcherConfig};
use nox_node::config::Role;
use nox_node::keys::NodeKeys;
use nox_node::metrics::Metrics;
use nox_node::topology::Topology;
use nox_node::topology::TopologyChange;
use nox_protocol::NodeId;
use nox_protocol::contracts::{NoxRegistry, NoxTestToken};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

const CHAIN_ID: u64 = 31337;

// ---------------------------------------------------------------------------
// The chain
// ---------------------------------------------------------------------------

/// A fresh anvil with the contracts deployed, and the deployer's provider.
struct Chain {
    anvil: Anvil,
    deployment: Deployment,
    /// Signs with the deployer (registry admin, token minter) key.
    deployer: DynProvider,
}

impl Chain {
    async fn start() -> Chain {
        let (anvil, deployment) = tokio::task::spawn_blocking(|| {
            let root = nox_devnet::repo_root();
            let anvil = Anvil::start(&root, None).expect("start anvil (run `npm ci`)");
            let deployment = nox_devnet::deploy::deploy(&root, &anvil.url(), DEPLOYER_KEY, &DeployParams::default())
                .expect("deploy the contracts");
            (anvil, deployment)
        })
        .await
        .unwrap();
        let signer: PrivateKeySigner = DEPLOYER_KEY.parse().unwrap();
        // Nonces are read from the chain for every transaction: a cached
        // nonce would be wrong after `evm_revert`.
        let deployer = ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(EthereumWallet::from(signer))
            .connect_http(anvil.url().parse().unwrap())
            .erased();
        Chain { anvil, deployment, deployer }
    }

    fn url(&self) -> String {
        self.anvil.url()
    }

    fn target(&self) -> RegistryTarget {
        RegistryTarget { rpc_url: self.url(), chain_id: CHAIN_ID, registry: self.deployment.registry }
    }

    /// A watcher configuration for this chain's registry, reached at `rpc_url`.
    fn config(&self, rpc_url: String, confirmations: u64, max_log_range: u64) -> WatcherConfig {
        self.config_quorum(vec![rpc_url], 0, confirmations, max_log_range)
    }

    /// A watcher configuration reading from every one of `rpc_urls`, of which
    /// `quorum` (0: a majority) must agree.
    fn config_quorum(
        &self,
        rpc_urls: Vec<String>,
        quorum: usize,
        confirmations: u64,
        max_log_range: u64,
    ) -> WatcherConfig {
        WatcherConfig {
            follower: FollowerConfig {
                rpc_urls,
                quorum,
                chain_id: CHAIN_ID,
                registry: self.deployment.registry,
                start_block: 0,
                confirmations,
                max_log_range,
                rpc_timeout: Duration::from_secs(1),
            },
            poll_interval: Duration::from_millis(100),
        }
    }

    async fn head(&self) -> u64 {
        self.deployer.get_block_number().await.unwrap()
    }

    /// Mines `n` empty blocks.
    async fn mine(&self, n: u64) {
        for _ in 0..n {
            self.deployer.raw_request::<_, String>("evm_mine".into(), ()).await.unwrap();
        }
    }

    async fn snapshot(&self) -> U256 {
        self.deployer.raw_request::<_, U256>("evm_snapshot".into(), ()).await.unwrap()
    }

    async fn revert_to(&self, id: U256) {
        assert!(self.deployer.raw_request::<_, bool>("evm_revert".into(), (id,)).await.unwrap(), "evm_revert {id}");
    }

    /// Sends a deployer transaction and requires it to succeed.
    async fn send(&self, to: Address, data: Vec<u8>) {
        let tx = TransactionRequest::default().to(to).input(Bytes::from(data).into());
        let hash = *self.deployer.send_transaction(tx).await.unwrap().tx_hash();
        // Automine: the receipt is there at once, or after a few milliseconds.
        let deadline = Instant::now() + Duration::from_secs(10);
        let receipt = loop {
            if let Some(r) = self.deployer.get_transaction_receipt(hash).await.unwrap() {
                break r;
            }
            assert!(Instant::now() < deadline, "no receipt for {hash}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(receipt.status(), "deployer transaction to {to} reverted");
    }

    async fn registry_call<C: SolCall>(&self, call: C) -> C::Return {
        let tx =
            TransactionRequest::default().to(self.deployment.registry).input(Bytes::from(call.abi_encode()).into());
        C::abi_decode_returns(&self.deployer.call(tx).await.unwrap()).unwrap()
    }

    /// The registry's own state, independent of any event: what the
    /// watcher's view must equal.
    async fn registry_state(&self) -> RegistryView {
        let min_stake = self.registry_call(NoxRegistry::minStakeCall {}).await;
        let page =
            self.registry_call(NoxRegistry::nodesPageCall { start: U256::ZERO, count: U256::from(1000u64) }).await;
        let nodes = page
            .operators
            .into_iter()
            .zip(page.nodes)
            .map(|(operator, n)| {
                assert!(n.registered);
                let node = RegisteredNode {
                    identity: n.identityKey,
                    role: n.role,
                    layer: n.layer,
                    stake: n.stake,
                    multiaddr: n.multiaddr,
                };
                (operator, node)
            })
            .collect();
        RegistryView { min_stake, nodes }
    }

    async fn fingerprint(&self) -> B256 {
        self.registry_call(NoxRegistry::topologyFingerprintCall {}).await
    }

    /// A new node: fresh keys, 100 ETH and the minimum stake in tokens for its
    /// wallet, registered as `role` with the minimum stake.
    async fn register(&self, role: Role, port: u16) -> Node {
        let keys = NodeKeys::generate(&mut rand::rngs::OsRng);
        let operator = keys.wallet_address();
        let wei = U256::from(100u64) * U256::from(10u64).pow(U256::from(18u64));
        self.deployer.raw_request::<_, serde_json::Value>("anvil_setBalance".into(), (operator, wei)).await.unwrap();
        let stake = DeployParams::default().min_stake;
        self.send(self.deployment.token, NoxTestToken::mintCall { to: operator, amount: stake }.abi_encode()).await;
        let multiaddr = format!("/ip4/127.0.0.1/tcp/{port}");
        let registered = operator::register(&self.target(), &keys.operator(), role, &multiaddr, None)
            .await
            .expect("register the node");
        assert_eq!(registered.stake, stake);
        Node { id: NodeId(keys.node_id()), operator, keys, stake }
    }

    /// Slashes `amount` from `operator`; the deployer grants itself the
    /// slasher role first.
    async fn slash(&self, operator: Address, amount: U256) {
        let registry = self.deployment.registry;
        let role = keccak256("NOX_SLASHER");
        let admin = self.deployment.admin;
        self.send(registry, NoxRegistry::grantRoleCall { role, account: admin }.abi_encode()).await;
        let reporter = Address::repeat_byte(0x42);
        self.send(registry, NoxRegistry::slashCall { operator, amount, reporter }.abi_encode()).await;
    }
}

/// A registered node.
struct Node {
    id: NodeId,
    operator: Address,
    keys: NodeKeys,
    stake: U256,
}

// ---------------------------------------------------------------------------
// The watcher
// ---------------------------------------------------------------------------

/// A watcher with the topology and metrics it feeds, and what `new` applied.
struct Watched {
    watcher: ChainWatcher,
    topology: Arc<Topology>,
    metrics: Metrics,
    initial: TopologyChange,
}

/// A node's own id, distinct from every registered one.
fn self_id() -> NodeId {
    NodeId([0xee; 32])
}

fn database_path(dir: &Path) -> PathBuf {
    dir.join("node.redb")
}

/// A watcher with a fresh topology and metrics, on the database in `dir`
/// (opened now, closed when the watcher is dropped).
fn watch(cfg: WatcherConfig, dir: &Path) -> Watched {
    let db = nox_node::store::open_database(&database_path(dir)).unwrap();
    let topology = Arc::new(Topology::new());
    let metrics = Metrics::new();
    let (watcher, initial) = ChainWatcher::new(cfg, db, topology.clone(), metrics.clone(), self_id()).unwrap();
    Watched { watcher, topology, metrics, initial }
}

impl Watched {
    async fn poll(&mut self) -> TopologyChange {
        self.watcher.poll().await.unwrap_or_else(|e| panic!("poll: {e}"))
    }

    /// `nox_chain{value="<what>"}`.
    fn gauge(&self, what: &str) -> i64 {
        sample(&self.metrics.render(), &format!("nox_chain{{value=\"{what}\"}}"))
    }

    /// `nox_events_total{kind="chain",outcome="<outcome>"}` (0 when never counted).
    fn events(&self, outcome: &str) -> i64 {
        sample(&self.metrics.render(), &format!("nox_events_total{{kind=\"chain\",outcome=\"{outcome}\"}}"))
    }

    /// The topology's record of `node`, as `/topology` lists it.
    fn record(&self, node: &Node) -> NodeEntry {
        let entries = self.topology.entries();
        entries.into_iter().find(|r| r.node_id == node.id.0).unwrap_or_else(|| {
            panic!("{} is not in the topology", hex::encode(node.id.0));
        })
    }
}

/// The value of one series in a Prometheus text exposition (0 if absent).
fn sample(text: &str, series: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse::<f64>().unwrap() as i64)
        .unwrap_or(0)
}

fn sorted(mut ids: Vec<NodeId>) -> Vec<NodeId> {
    ids.sort_by_key(|id| id.0);
    ids
}

// ---------------------------------------------------------------------------
// A TCP proxy that can be switched off and on
// ---------------------------------------------------------------------------

/// Forwards a fixed loopback port to `upstream`. Switched off, its listener
/// is closed and every live connection dropped; switched on again, it listens
/// on the same port.
struct Proxy {
    port: u16,
    upstream: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(forward(listener, upstream));
        Proxy { port, upstream, task: Some(task) }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn off(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // Once the task is gone, so are its listener and connections.
            assert!(task.await.unwrap_err().is_cancelled());
        }
    }

    async fn on(&mut self) {
        assert!(self.task.is_none(), "the proxy is on already");
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 1], self.port))).unwrap();
        let listener = socket.listen(64).unwrap();
        self.task = Some(tokio::spawn(forward(listener, self.upstream)));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Accepts connections and pipes each to `upstream`; the connections live in
/// a [`JoinSet`] owned by this task, so aborting the task drops them all.
async fn forward(listener: TcpListener, upstream: SocketAddr) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((mut inbound, _)) = accepted else { continue };
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// A registration enters the topology only once it is `confirmations` deep.
#[tokio::test]
async fn test_node_joins_once_confirmed() {
    let chain = Chain::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut w = watch(chain.config(chain.url(), 2, 1000), dir.path());

    let node = chain.register(Role::Relay, 9001).await;
    let change = w.poll().await;
    assert_eq!(change, TopologyChange::default());
    assert!(!w.topology.contains(&node.id), "registered in the last block: not yet confirmed");
    assert_eq!(w.gauge("active_nodes"), 0);
    let head = chain.head().await;
    assert_eq!(w.gauge("head_block"), head as i64);
    assert_eq!(w.gauge("synced_block"), (head - 2) as i64);
    assert_eq!(w.watcher.next_block(), head - 1);

    chain.mine(2).await;
    let change = w.poll().await;
    assert_eq!(change.added, vec![node.id]);
    assert!(change.removed.is_empty());
    assert!(w.topology.contains(&node.id));
    assert_eq!(w.gauge("active_nodes"), 1);
    assert_eq!(w.gauge("fingerprint_mismatch"), 0);
    assert_eq!(w.gauge("rpc_up"), 1);
    assert_eq!(w.gauge("synced_block"), head as i64);
    assert_eq!(w.events("node_added"), 1);
    assert_eq!(w.events("fingerprint_mismatch"), 0);
    let record = w.record(&node);
    assert_eq!(record.operator, Some(node.operator));
    assert_eq!(record.stake, Some(node.stake));
    assert_eq!(record.exit, Some(false));
    assert_eq!(record.addresses, vec!["/ip4/127.0.0.1/tcp/9001".to_string()]);
    assert_eq!(record.layer, chain.registry_call(NoxRegistry::layerOfCall { operator: node.operator }).await);
    assert_eq!(w.watcher.view(), &chain.registry_state().await);
}

/// A registration undone by a reorg (the chain reverted and regrown with
/// other blocks) leaves the topology at the next poll.
#[tokio::test]
async fn test_reorg_drops_an_orphaned_registration() {
    let chain = Chain::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut w = watch(chain.config(chain.url(), 0, 1000), dir.path());

    let stays = chain.register(Role::Exit, 9001).await;
    w.poll().await;
    let snapshot = chain.snapshot().await;
    let head_before = chain.head().await;
    let orphan = chain.register(Role::Relay, 9002).await;
    let change = w.poll().await;
    assert_eq!(change.added, vec![orphan.id]);
    assert!(w.topology.contains(&orphan.id) && w.topology.contains(&stays.id));
    let synced = chain.head().await;

    chain.revert_to(snapshot).await;
    assert_eq!(chain.head().await, head_before);
    // As long as before, with other blocks: the watcher's last block is still
    // there by number, not by hash.
    chain.mine(synced - head_before).await;
    assert_eq!(chain.head().await, synced);

    let change = w.poll().await;
    assert_eq!(w.events("reorg"), 1);
    // Caught as a reorg, not left for the fingerprint check to repair.
    assert_eq!(w.events("fingerprint_mismatch"), 0);
    assert_eq!(change, TopologyChange { added: vec![], removed: vec![orphan.id] });
    assert!(!w.topology.contains(&orphan.id));
    assert!(w.topology.contains(&stays.id));
    assert_eq!(w.gauge("active_nodes"), 1);
    assert_eq!(w.watcher.view(), &chain.registry_state().await);
    assert_eq!(w.watcher.view().fingerprint(), chain.fingerprint().await);
    assert_eq!(w.gauge("fingerprint_mismatch"), 0);
    assert_eq!(w.watcher.next_block(), synced + 1);

    // The rebuilt view goes on from there: nothing more to undo.
    chain.mine(1).await;
    assert_eq!(w.poll().await, TopologyChange::default());
    assert_eq!(w.events("reorg"), 1);

    // A chain that comes back shorter than what was processed is a reorg too.
    let snapshot = chain.snapshot().await;
    let short_head = chain.head().await;
    let orphan = chain.register(Role::Relay, 9003).await;
    assert_eq!(w.poll().await.added, vec![orphan.id]);
    chain.revert_to(snapshot).await;
    let change = w.poll().await;
    assert_eq!(w.events("reorg"), 2);
    assert_eq!(change.removed, vec![orphan.id]);
    assert!(w.topology.contains(&stays.id));
    assert_eq!(w.watcher.next_block(), short_head + 1);
    assert_eq!(w.watcher.view(), &chain.registry_state().await);
}

/// With one block per log request, one poll still catches up over a long
/// stretch of chain, and the events alone give the registry's fingerprint.
#[tokio::test]
async fn test_one_block_ranges_catch_up_in_one_poll() {
    let chain = Chain::start().await;
    let mut nodes = Vec::new();
    for (i, role) in [Role::Relay, Role::Exit, Role::Relay, Role::Relay].into_iter().enumerate() {
        nodes.push(chain.register(role, 9001 + i as u16).await);
        chain.mine(5).await;
    }
    let head = chain.head().await;
    assert!(head > 30, "a long stretch of blocks: {head}");

    let dir = tempfile::tempdir().unwrap();
    let mut w = watch(chain.config(chain.url(), 0, 1), dir.path());
    let change = w.poll().await;
    assert_eq!(change.added, sorted(nodes.iter().map(|n| n.id).collect()));
    assert_eq!(w.watcher.next_block(), head + 1);
    assert_eq!(w.gauge("synced_block"), head as i64);
    assert_eq!(w.watcher.view().fingerprint(), chain.fingerprint().await);
    // Folded from events, not repaired from the registry's state.
    assert_eq!(w.events("fingerprint_mismatch"), 0);
    assert_eq!(w.events("reorg"), 0);
    assert_eq!(w.watcher.view(), &chain.registry_state().await);
    assert_eq!(w.gauge("active_nodes"), 4);
}

/// An endpoint that goes away leaves the last view in place; when it comes
/// back the watcher catches up with what happened meanwhile.
#[tokio::test]
async fn test_endpoint_outage_keeps_the_view_and_recovers() {
    let chain = Chain::start().await;
    let upstream = SocketAddr::from(([127, 0, 0, 1], chain.anvil.port()));
    let mut proxy = Proxy::start(upstream).await;
    let dir = tempfile::tempdir().unwrap();
    let mut w = watch(chain.config(proxy.url(), 0, 1000), dir.path());

    let first = chain.register(Role::Relay, 9001).await;
    assert_eq!(w.poll().await.added, vec![first.id]);
    let synced = w.watcher.next_block();

    proxy.off().await;
    let started = Instant::now();
    match w.watcher.poll().await {
        Err(ChainError::Rpc(_)) => {}
        other => panic!("poll with the endpoint gone: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "failed within the timeout: {:?}", started.elapsed());
    assert!(w.topology.contains(&first.id), "the last view stays");
    assert_eq!(w.gauge("active_nodes"), 1);
    assert_eq!(w.watcher.next_block(), synced);

    let second = chain.register(Role::Exit, 9002).await;
    match w.watcher.poll().await {
        Err(ChainError::Rpc(_)) => {}
        other => panic!("poll with the endpoint still gone: {other:?}"),
    }
    assert!(!w.topology.contains(&second.id));

    proxy.on().await;
    let change = w.poll().await;
    assert_eq!(change, TopologyChange { added: vec![second.id], removed: vec![] });
    assert!(w.topology.contains(&first.id) && w.topology.contains(&second.id));
    assert_eq!(w.gauge("active_nodes"), 2);
    assert_eq!(w.gauge("rpc_up"), 1);
    assert_eq!(w.watcher.next_block(), chain.head().await + 1);
    assert_eq!(w.watcher.view(), &chain.registry_state().await);
}

/// An endpoint serving another chain is refused before anything is read.
#[tokio::test]
async fn test_wrong_chain_is_refused() {
    let chain = Chain::start().await;
    chain.register(Role::Relay, 9001).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = chain.config(chain.url(), 0, 1000);
    cfg.follower.chain_id = 1;
    let mut w = watch(cfg, dir.path());

    for _ in 0..2 {
        match w.watcher.poll().await {
            Err(ChainError::WrongChain { expected: 1, actual: CHAIN_ID }) => {}
            other => panic!("poll on the wrong chain: {other:?}"),
        }
    }
    assert!(w.topology.node_ids().is_empty());
    assert_eq!(w.watcher.view(), &RegistryView::default());
    assert_eq!(w.watcher.next_block(), 0);
    assert_eq!(w.gauge("active_nodes"), 0);
    assert_eq!(w.gauge("synced_block"), 0);
    drop(w);
    let db = nox_node::store::open_database(&database_path(dir.path())).unwrap();
    assert_eq!(nox_node::chain::load_progress(&db, 1, chain.deployment.registry).unwrap(), None);
    assert_eq!(nox_node::chain::load_progress(&db, CHAIN_ID, chain.deployment.registry).unwrap(), None);
}

/// A restarted node knows the network from its stored progress before its
/// endpoint answers, and carries on from where it stopped.
#[tokio::test]
async fn test_restart_resumes_from_stored_progress() {
    let chain = Chain::start().await;
    let kept = chain.register(Role::Relay, 9001).await;
    let slashed = chain.register(Role::Exit, 9002).await;
    let all = sorted(vec![kept.id, slashed.id]);
    let dir = tempfile::tempdir().unwrap();

    let (stopped_at, view) = {
        let mut w = watch(chain.config(chain.url(), 0, 1000), dir.path());
        assert_eq!(w.poll().await.added, all);
        (w.watcher.next_block(), w.watcher.view().clone())
    };
    assert_eq!(stopped_at, chain.head().await + 1);

    // Restart with a dead endpoint: the stored view is the topology at once.
    let dead = format!("http://127.0.0.1:{}", nox_devnet::anvil::free_port().unwrap());
    let mut w = watch(chain.config(dead, 0, 1000), dir.path());
    assert_eq!(w.initial, TopologyChange { added: all.clone(), removed: vec![] });
    assert!(w.topology.contains(&kept.id) && w.topology.contains(&slashed.id));
    assert_eq!(w.watcher.next_block(), stopped_at);
    assert_eq!(w.watcher.view(), &view);
    assert_eq!(w.gauge("active_nodes"), 2);
    assert!(matches!(w.watcher.poll().await, Err(ChainError::Rpc(_))));
    assert!(w.topology.contains(&kept.id) && w.topology.contains(&slashed.id));
    drop(w);

    // Meanwhile one node is slashed below the minimum stake.
    chain.slash(slashed.operator, slashed.stake / U256::from(2u8)).await;
    let mut w = watch(chain.config(chain.url(), 0, 1000), dir.path());
    assert_eq!(w.initial.added, all);
    let change = w.poll().await;
    assert_eq!(change, TopologyChange { added: vec![], removed: vec![slashed.id] });
    assert!(w.topology.contains(&kept.id));
    assert!(!w.topology.contains(&slashed.id));
    assert_eq!(w.gauge("active_nodes"), 1);
    assert_eq!(w.events("node_removed"), 1);
    assert_eq!(w.events("fingerprint_mismatch"), 0);
    assert_eq!(w.events("reorg"), 0);
    assert_eq!(w.watcher.view(), &chain.registry_state().await);
}

/// A node whose operator asks to unstake leaves the topology at the next poll.
#[tokio::test]
async fn test_unstake_request_leaves_the_topology() {
    let chain = Chain::start().await;
    let leaving = chain.register(Role::Relay, 9001).await;
    let staying = chain.register(Role::Relay, 9002).await;
    let dir = tempfile::tempdir().unwrap();
    let mut w = watch(chain.config(chain.url(), 0, 1000), dir.path());
    assert_eq!(w.poll().await.added, sorted(vec![leaving.id, staying.id]));

    let unstake = operator::request_unstake(&chain.target(), &leaving.keys.operator()).await.expect("requestUnstake");
    assert_eq!(unstake.amount, leaving.stake);
    let change = w.poll().await;
    assert_eq!(change, TopologyChange { added: vec![], removed: vec![leaving.id] });
    assert!(!w.topology.contains(&leaving.id));
    assert!(w.topology.contains(&staying.id));
    assert_eq!(w.gauge("active_nodes"), 1);
    assert_eq!(w.watcher.view(), &chain.registry_state().await);
    assert_eq!(w.watcher.view().fingerprint(), chain.fingerprint().await);
}

// ---------------------------------------------------------------------------
// A JSON-RPC proxy that can lie
// ---------------------------------------------------------------------------

/// What a [`LyingProxy`] does to the answers it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Lie {
    /// Forwards every answer as it is.
    None = 0,
    /// Puts its own identity key into every `NodeRegistered` log of
    /// `eth_getLogs`: the operator set (and so the registry's fingerprint)
    /// is unchanged, the node's key is the attacker's.
    SwapIdentity = 1,
    /// Answers `eth_getBlockByNumber` with another hash for every block.
    OtherBlockHash = 2,
    /// Answers nothing: every request gets HTTP 503, as from an endpoint
    /// behind a load balancer whose backend is down.
    Down = 3,
}

/// An HTTP JSON-RPC endpoint on loopback that forwards every request to
/// anvil and rewrites some answers, as set by [`LyingProxy::lie`].
struct LyingProxy {
    port: u16,
    mode: Arc<std::sync::atomic::AtomicU8>,
    task: JoinHandle<()>,
}

/// The identity key a lying endpoint puts in place of the registered one.
fn attacker_identity() -> B256 {
    B256::from(ed25519_dalek::SigningKey::from_bytes(&[0xa7; 32]).verifying_key().to_bytes())
}

impl LyingProxy {
    async fn start(upstream: String) -> LyingProxy {
        use axum::extract::State;
        type Shared = (Arc<std::sync::atomic::AtomicU8>, String, alloy::transports::http::reqwest::Client);
        async fn handle(
            State((mode, upstream, http)): State<Shared>,
            body: axum::body::Bytes,
        ) -> axum::response::Response {
            use axum::response::IntoResponse;
            if mode.load(std::sync::atomic::Ordering::SeqCst) == Lie::Down as u8 {
                return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            let request: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => return axum::http::StatusCode::BAD_REQUEST.into_response(),
            };
            let forwarded =
                http.post(&upstream).header("content-type", "application/json").body(body.to_vec()).send().await;
            let Ok(forwarded) = forwarded else { return axum::http::StatusCode::BAD_GATEWAY.into_response() };
            let Ok(bytes) = forwarded.bytes().await else { return axum::http::StatusCode::BAD_GATEWAY.into_response() };
            let Ok(mut answer) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                return axum::http::StatusCode::BAD_GATEWAY.into_response();
            };
            let lie = mode.load(std::sync::atomic::Ordering::SeqCst);
            match (&request, &mut answer) {
                (serde_json::Value::Array(requests), serde_json::Value::Array(answers)) => {
                    for (q, a) in requests.iter().zip(answers.iter_mut()) {
                        rewrite(lie, q, a);
                    }
                }
                (q, a) => rewrite(lie, q, a),
            }
            ([(axum::http::header::CONTENT_TYPE, "application/json")], answer.to_string()).into_response()
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(std::sync::atomic::AtomicU8::new(Lie::None as u8));
        let state: Shared = (mode.clone(), upstream, alloy::transports::http::reqwest::Client::new());
        let router = axum::Router::new().route("/", axum::routing::post(handle)).with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        LyingProxy { port, mode, task }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn lie(&self, lie: Lie) {
        self.mode.store(lie as u8, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for LyingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Rewrites the answer `a` to the request `q` as `lie` says.
fn rewrite(lie: u8, q: &serde_json::Value, a: &mut serde_json::Value) {
    let method = q.get("method").and_then(|m| m.as_str()).unwrap_or_default();
    let Some(result) = a.get_mut("result") else { return };
    if lie == Lie::SwapIdentity as u8 && method == "eth_getLogs" {
        let registered = format!("{:#x}", <NoxRegistry::NodeRegistered as alloy_sol_types::SolEvent>::SIGNATURE_HASH);
        for log in result.as_array_mut().into_iter().flatten() {
            let Some(topics) = log.get_mut("topics").and_then(|t| t.as_array_mut()) else { continue };
            if topics.first().and_then(|t| t.as_str()) == Some(registered.as_str()) && topics.len() > 2 {
                topics[2] = serde_json::Value::String(format!("{:#x}", attacker_identity()));
            }
        }
    }
    if lie == Lie::OtherBlockHash as u8
        && method == "eth_getBlockByNumber"
        && let Some(hash) = result.get_mut("hash")
    {
        let real: B256 = hash.as_str().and_then(|h| h.parse().ok()).unwrap_or_default();
        *hash = serde_json::Value::String(format!("{:#x}", keccak256(real)));
    }
}

/// `nox_chain{value="rpc_agreeing"}` and the chain events a quorum test reads.
fn quorum_counts(w: &Watched) -> (i64, i64, i64) {
    (w.gauge("rpc_agreeing"), w.events("endpoint_disagreed"), w.events("disagreement"))
}

/// One endpoint that lies among two honest ones is outvoted: the topology
/// follows the honest answers, whichever lie it tells, and each dissent is
/// counted.
#[tokio::test]
async fn test_a_lying_endpoint_among_honest_ones_is_outvoted() {
    let chain = Chain::start().await;
    let honest = LyingProxy::start(chain.url()).await;
    let liar = LyingProxy::start(chain.url()).await;
    liar.lie(Lie::SwapIdentity);
    let dir = tempfile::tempdir().unwrap();
    // The liar comes first: following the first endpoint would follow it.
    let urls = vec![liar.url(), chain.url(), honest.url()];
    let mut w = watch(chain.config_quorum(urls, 0, 0, 1000), dir.path());
    assert_eq!(w.watcher.view(), &RegistryView::default());

    // The liar's own follower sees another identity key for the node: the
    // registry's fingerprint does not catch it (the operators are the same),
    // the quorum does.
    let first = chain.register(Role::Relay, 9001).await;
    let change = w.poll().await;
    assert_eq!(change, TopologyChange { added: vec![first.id], removed: vec![] });
    assert!(!w.topology.contains(&NodeId(attacker_identity().0)));
    assert_eq!(w.watcher.view(), &chain.registry_state().await);
    assert_eq!(quorum_counts(&w), (2, 1, 0));
    assert_eq!(w.events("fingerprint_mismatch"), 0);

    // Another lie: a block hash that is not the chain's.
    liar.lie(Lie::OtherBlockHash);
    let second = chain.register(Role::Exit, 9002).await;
    let change = w.poll().await;
    assert_eq!(change, TopologyChange { added: vec![second.id], removed: vec![] });
    assert_eq!(w.watcher.view(), &chain.registry_state().await);
    assert_eq!(w.watcher.next_block(), chain.head().await + 1);
    assert_eq!(quorum_counts(&w), (2, 2, 0));
    // The real hash is what was stored: the liar's is no reorg to the others.
    assert_eq!(w.events("reorg"), 0);

    // Honest again: all three agree.
    liar.lie(Lie::None);
    chain.mine(1).await;
    assert_eq!(w.poll().await, TopologyChange::default());
    assert_eq!(quorum_counts(&w), (3, 2, 0));
    assert_eq!(w.gauge("rpc_up"), 1);

    // One endpoint down: it does not agree, the two others still make a quorum.
    honest.lie(Lie::Down);
    let third = chain.register(Role::Relay, 9003).await;
    assert_eq!(w.poll().await.added, vec![third.id]);
    assert_eq!(quorum_counts(&w), (2, 2, 0));
    assert_eq!(w.events("endpoint_failed"), 1);
    assert_eq!(w.watcher.view(), &chain.registry_state().await);
}

/// With two of three endpoints lying (each its own way), or two of three
/// down, no view has a quorum: the node keeps its last agreed view, counts
/// the disagreement and names the endpoints by index, never by URL.
#[tokio::test]
async fn test_without_a_quorum_the_last_agreed_view_stays() {
    let chain = Chain::start().await;
    let a = LyingProxy::start(chain.url()).await;
    let b = LyingProxy::start(chain.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let urls = vec![chain.url(), a.url(), b.url()];
    let mut w = watch(chain.config_quorum(urls.clone(), 2, 0, 1000), dir.path());

    let first = chain.register(Role::Relay, 9001).await;
    assert_eq!(w.poll().await.added, vec![first.id]);
    let agreed = (w.watcher.view().clone(), w.watcher.next_block());
    assert_eq!(quorum_counts(&w), (3, 0, 0));

    a.lie(Lie::SwapIdentity);
    b.lie(Lie::OtherBlockHash);
    let second = chain.register(Role::Exit, 9002).await;
    for round in 1..=2 {
        let e = match w.watcher.poll().await {
            Err(ChainError::NoQuorum(q)) => q,
            other => panic!("poll with two liars: {other:?}"),
        };
        assert_eq!((e.needed, e.endpoints, e.largest), (2, 3, 1));
        let named: Vec<(usize, &str)> = e.failures.iter().map(|f| (f.index, f.label)).collect();
        assert_eq!(named, [(1, "disagreed"), (2, "disagreed")]);
        let text = ChainError::NoQuorum(e).to_string();
        assert!(!text.contains("127.0.0.1") && !text.contains("http"), "no URL in: {text}");
        assert!(!w.topology.contains(&second.id), "no quorum: the registration waits");
        assert!(w.topology.contains(&first.id), "the last agreed view stays");
        assert_eq!((w.watcher.view().clone(), w.watcher.next_block()), agreed);
        assert_eq!(w.events("disagreement"), round);
        assert_eq!(w.gauge("rpc_up"), 0);
        assert_eq!(w.gauge("active_nodes"), 1);
    }

    // One of them honest again: a quorum of two.
    b.lie(Lie::None);
    let change = w.poll().await;
    assert_eq!(change, TopologyChange { added: vec![second.id], removed: vec![] });
    assert_eq!(w.watcher.view(), &chain.registry_state().await);
    assert_eq!(quorum_counts(&w), (2, 1, 2));
    drop(w);

    // Two of three endpoints down: nothing new is accepted, and the node
    // restarted on them keeps the stored agreed view.
    let dead = || format!("http://127.0.0.1:{}", nox_devnet::anvil::free_port().unwrap());
    let mut w = watch(chain.config_quorum(vec![dead(), chain.url(), dead()], 0, 0, 1000), dir.path());
    assert_eq!(w.initial.added, sorted(vec![first.id, second.id]));
    let third = chain.register(Role::Relay, 9003).await;
    let e = match w.watcher.poll().await {
        Err(ChainError::NoQuorum(q)) => q,
        other => panic!("poll with two endpoints down: {other:?}"),
    };
    let named: Vec<(usize, &str)> = e.failures.iter().map(|f| (f.index, f.label)).collect();
    assert_eq!(named, [(0, "rpc_error"), (2, "rpc_error")]);
    assert!(!w.topology.contains(&third.id));
    assert!(w.topology.contains(&first.id) && w.topology.contains(&second.id));
    assert_eq!(w.events("disagreement"), 1);
}
