//! A whole mix network in one process, on loopback: N real nodes (real
//! libp2p connections, real databases in a directory, real HTTP listeners)
//! with a static topology. Requests are built and answered with `nox-client`.
//!
//! A test harness, compiled only with the `test-harness` feature (the node's
//! own tests, `scripts/bench-e2e`, `scripts/bench-relay` and `nox-devnet`
//! enable it); it is not part of the relay's library.
//! The chain-backed network (NoxRegistry on anvil, on-chain admission) is
//! `nox-devnet`; this harness exercises the relay without a chain.

use std::path::Path;
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use nox_protocol::NodeId;
use nox_protocol::crypto::x25519::MixPublicKey;
use nox_protocol::sphinx::Hop;

use crate::config::{NodeConfig, Role, StaticNode};
use crate::keys::NodeKeys;
use crate::node::{self, NodeError, NodeOptions, RunningNode};
use nox_net::p2p::PeerKind;
use nox_net::raw_peer::{RawPeer, RawPeerError};

/// One member of the network.
pub struct LocalNode {
    /// Its keys.
    pub keys: NodeKeys,
    /// Its configuration (ports fixed after the first start).
    pub config: NodeConfig,
    /// The running node, unless stopped.
    pub running: Option<RunningNode>,
}

impl std::fmt::Debug for LocalNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNode").field("layer", &self.config.node.layer).finish_non_exhaustive()
    }
}

impl LocalNode {
    /// The node id.
    pub fn id(&self) -> NodeId {
        NodeId(self.keys.node_id())
    }
}

/// The network.
#[derive(Debug)]
pub struct LocalNet {
    /// Members, layer 0 first.
    pub nodes: Vec<LocalNode>,
    /// Each member's options, by index.
    opts: Vec<NodeOptions>,
}

fn keys_from_seed(seed: u64) -> NodeKeys {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    NodeKeys::generate(&mut rng)
}

/// Logs of in-process nodes in tests, filtered by `NOX_TEST_LOG` (for
/// example `NOX_TEST_LOG=nox_node=debug`); silent by default. Safe to call
/// more than once.
pub fn init_test_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("NOX_TEST_LOG"))
        .with_test_writer()
        .try_init();
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes; whether it held.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The default configuration of a local-network node: loopback, ephemeral
/// ports, no cover traffic, light PoW, short handshake timeout.
pub fn base_config(dir: &Path, layer: u8) -> NodeConfig {
    let mut c = NodeConfig::default();
    c.node.layer = layer;
    c.node.role = if layer == 2 { Role::Exit } else { Role::Relay };
    c.node.data_dir = dir.join("data");
    c.node.keys_dir = dir.join("keys");
    c.p2p.listen = vec!["/ip4/127.0.0.1/tcp/0".to_string()];
    c.p2p.max_connections_per_subnet = 1024;
    c.p2p.handshake_timeout_secs = 5;
    c.http.listen = "127.0.0.1:0".parse().unwrap_or(c.http.listen);
    c.cover.loop_rate = 0.0;
    c.cover.drop_rate = 0.0;
    c.ingest.pow_bits = 4;
    c.workers.threads = 1;
    c
}

impl LocalNet {
    /// Starts `per_layer[l]` nodes in each layer under `dir`. `tweak` may
    /// change each node's configuration (index, config) before its start.
    pub async fn start(
        dir: &Path,
        per_layer: [usize; 3],
        seed: u64,
        opts: NodeOptions,
        tweak: impl Fn(usize, &mut NodeConfig),
    ) -> Result<LocalNet, NodeError> {
        LocalNet::start_each(dir, per_layer, seed, |_| opts.clone(), tweak).await
    }

    /// [`LocalNet::start`] with options per node (index → options): a test
    /// gives one node a fault (`NodeOptions::faults`) or another service.
    pub async fn start_each(
        dir: &Path,
        per_layer: [usize; 3],
        seed: u64,
        opts: impl Fn(usize) -> NodeOptions,
        tweak: impl Fn(usize, &mut NodeConfig),
    ) -> Result<LocalNet, NodeError> {
        let mut nodes = Vec::new();
        let mut i = 0usize;
        for (layer, n) in per_layer.iter().enumerate() {
            for _ in 0..*n {
                let ndir = dir.join(format!("node{i}"));
                let mut config = base_config(&ndir, layer as u8);
                tweak(i, &mut config);
                nodes.push(LocalNode {
                    keys: keys_from_seed(seed.wrapping_mul(1000).wrapping_add(i as u64)),
                    config,
                    running: None,
                });
                i += 1;
            }
        }
        let opts = (0..nodes.len()).map(opts).collect();
        let mut net = LocalNet { nodes, opts };
        for idx in 0..net.nodes.len() {
            // First start: nobody knows anybody yet; `introduce` connects them.
            net.launch(idx, Vec::new()).await?;
        }
        net.introduce().await;
        Ok(net)
    }

    /// [`LocalNet::start`] with default options, after [`init_test_logging`],
    /// waiting until every node holds every other node's current descriptor.
    pub async fn start_ready(
        dir: &Path,
        per_layer: [usize; 3],
        seed: u64,
        tweak: impl Fn(usize, &mut NodeConfig),
    ) -> Result<LocalNet, NodeError> {
        init_test_logging();
        let net = LocalNet::start(dir, per_layer, seed, NodeOptions::default(), tweak).await?;
        if !net.wait_ready(Duration::from_secs(20)).await {
            return Err(NodeError::Config("descriptors did not propagate within 20 s".into()));
        }
        Ok(net)
    }

    /// Starts (or restarts) node `idx` with its stored keys, configuration and data.
    pub async fn start_node(&mut self, idx: usize) -> Result<(), NodeError> {
        let statics = self.statics(idx);
        self.launch(idx, statics).await
    }

    async fn launch(&mut self, idx: usize, statics: Vec<StaticNode>) -> Result<(), NodeError> {
        let n = &mut self.nodes[idx];
        let mut cfg = n.config.clone();
        cfg.topology.nodes = statics;
        let opts = self.opts.get(idx).cloned().unwrap_or_default();
        let running = node::start(cfg, n.keys.clone(), opts).await?;
        // Keep the ports: a restart comes back where the others expect it.
        if let Some(a) = running.listen_addrs.first() {
            n.config.p2p.listen = vec![a.to_string()];
        }
        n.config.http.listen = running.http_addr;
        n.running = Some(running);
        Ok(())
    }

    fn statics(&self, except: usize) -> Vec<StaticNode> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| *i != except && n.running.is_some())
            .map(|(_, n)| StaticNode {
                node_id: format!("0x{}", hex::encode(n.keys.node_id())),
                layer: n.config.node.layer,
                addresses: n
                    .running
                    .as_ref()
                    .map(|r| r.listen_addrs.iter().map(|a| a.to_string()).collect())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Tells every running node about every other running node and connects them.
    pub async fn introduce(&self) {
        let members: Vec<(NodeId, u8, Vec<Multiaddr>)> = self
            .nodes
            .iter()
            .filter_map(|n| n.running.as_ref().map(|r| (n.id(), n.config.node.layer, r.listen_addrs.clone())))
            .collect();
        for n in &self.nodes {
            if let Some(r) = &n.running {
                for (id, layer, addrs) in &members {
                    if *id != n.id() {
                        r.topology.add_static(*id, *layer, addrs.clone());
                    }
                }
            }
        }
        for n in &self.nodes {
            if let Some(r) = &n.running {
                for (id, layer, addrs) in &members {
                    if *id != n.id() {
                        r.add_node(*id, *layer, addrs.clone()).await;
                    }
                }
            }
        }
    }

    /// Stops node `idx` (its data stays).
    pub async fn stop_node(&mut self, idx: usize) {
        if let Some(r) = self.nodes[idx].running.take() {
            r.shutdown().await;
        }
    }

    /// Stops every node.
    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i).await;
        }
    }

    /// Waits until every running node holds a current-epoch descriptor of
    /// every running node. `false` on timeout.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.ready() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn ready(&self) -> bool {
        let running: Vec<&LocalNode> = self.nodes.iter().filter(|n| n.running.is_some()).collect();
        running.iter().all(|n| {
            let Some(r) = &n.running else { return false };
            let epoch = r.keys.read().unwrap_or_else(|e| e.into_inner()).current_epoch();
            running.iter().all(|m| r.topology.mix_key(&m.id(), epoch).is_some())
        })
    }

    /// Indices of the running nodes of `layer`.
    pub fn layer(&self, layer: u8) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].config.node.layer == layer && self.nodes[*i].running.is_some())
            .collect()
    }

    /// A route through the nodes `via` with `delay_us` at every hop, under the
    /// keys of the current epoch as node 0 sees them; `None` while a key is unknown.
    pub fn route(&self, via: &[usize], delay_us: u32) -> Option<(u64, Vec<Hop>)> {
        let r = self.nodes[0].running.as_ref()?;
        let epoch = r.keys.read().unwrap_or_else(|e| e.into_inner()).current_epoch();
        let ids: Vec<NodeId> = via.iter().map(|i| self.nodes[*i].id()).collect();
        r.topology.route_set(epoch).explicit(&ids, delay_us).ok().map(|hops| (epoch, hops))
    }

    /// A client connected to (and welcomed by) node `gateway`.
    pub async fn client(&self, gateway: usize) -> Result<RawPeer, RawPeerError> {
        let client =
            RawPeer::start(libp2p::identity::Keypair::generate_ed25519(), Vec::new(), PeerKind::Client, 1024).await?;
        if let Some(g) = &self.nodes[gateway].running {
            client.connect(g.peer_id, g.listen_addrs.clone(), Duration::from_secs(10)).await?;
        }
        Ok(client)
    }

    /// The current epoch and each node's key for it, as seen by node `viewer`.
    pub fn hop(&self, viewer: usize, idx: usize, delay_us: u32) -> Option<(u64, Hop)> {
        let r = self.nodes[viewer].running.as_ref()?;
        let epoch = r.keys.read().unwrap_or_else(|e| e.into_inner()).current_epoch();
        let id = self.nodes[idx].id();
        let key: MixPublicKey = r.topology.mix_key(&id, epoch)?;
        Some((epoch, Hop { id, key, delay_us }))
    }
}
