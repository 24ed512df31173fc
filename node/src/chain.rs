//! The chain watcher: NoxRegistry's events become the node's topology.
//!
//! The watcher polls the configured endpoint every `chain.poll_interval_ms`:
//!
//! 1. On (re)connection it checks the endpoint's chain id against
//!    `chain.chain_id`; a wrong chain is refused and nothing is read from it.
//! 2. It computes the confirmed head, `head - chain.confirmations`, and checks
//!    that the last block it processed is still on the chain (same number,
//!    same hash). If not, the chain reorganised below the confirmation depth:
//!    the view is rebuilt from the registry's own state at the confirmed head
//!    (`minStake`, `nodesPage`), counted as `chain/reorg`.
//! 3. It reads the registry's logs from the next unprocessed block to the
//!    confirmed head in ranges of at most `chain.max_log_range` blocks (halved
//!    when the endpoint refuses a range), folds them into a
//!    [`RegistryView`], and after every range persists the view, the next
//!    block and the last block's hash in one redb transaction — so a restarted
//!    node resumes where it stopped and knows the network before its endpoint
//!    answers.
//! 4. It compares the view's fingerprint (XOR of keccak256(operator) over the
//!    registered set) with the registry's `topologyFingerprint` at the same
//!    block. A mismatch is exported (`nox_chain{value="fingerprint_mismatch"}`
//!    = 1), logged, counted and repaired by rebuilding from the registry's
//!    state.
//! 5. It hands the active nodes (registered, stake ≥ `minStake`) to the
//!    [`Topology`]; nodes that left are disconnected and dropped from the
//!    admitted peers at once, new ones are dialled.
//!
//! An endpoint that goes away leaves the last confirmed view in place; the
//! watcher retries with a growing pause (up to 32 poll intervals) and carries
//! on from its stored progress when the endpoint answers again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use alloy::eips::BlockId;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::client::RpcClient;
use alloy::rpc::types::{Filter, Log, TransactionRequest};
use alloy::transports::http::reqwest;
use alloy_sol_types::{SolCall, SolEvent};
use libp2p::Multiaddr;
use nox_protocol::NodeId;
use nox_protocol::contracts::{EXIT_LAYER, NoxRegistry, topology_fingerprint};
use prometheus_client::metrics::gauge::Gauge;
use redb::{ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::config::ChainSection;
use crate::metrics::Metrics;
use crate::topology::{ChainMember, Topology};

/// The table holding the watcher's progress: one row, [`PROGRESS_KEY`].
const CHAIN_TABLE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("chain");
const PROGRESS_KEY: &str = "progress";

/// Page size of `nodesPage` when the view is rebuilt from the registry's state.
const SNAPSHOT_PAGE: u64 = 200;

/// Longest pause between retries, in poll intervals.
const MAX_BACKOFF_FACTOR: u32 = 32;

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The endpoint did not answer, or answered with an error.
    #[error("rpc: {0}")]
    Rpc(String),
    /// The endpoint serves another chain.
    #[error("the endpoint serves chain {actual}, but chain.chain_id is {expected}")]
    WrongChain {
        /// Configured.
        expected: u64,
        /// Reported.
        actual: u64,
    },
    /// A registry log or view that does not decode.
    #[error("undecodable registry data: {0}")]
    Decode(String),
    /// The database refused a read or a write.
    #[error("chain progress store: {0}")]
    Store(String),
    /// The endpoint URL does not parse (validated configurations never hit this).
    #[error("chain.rpc_url: {0}")]
    Url(String),
}

impl ChainError {
    fn rpc(e: impl std::fmt::Display) -> Self {
        ChainError::Rpc(e.to_string())
    }
}

/// One registered node, as the registry's events describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredNode {
    /// Identity key = node id.
    pub identity: B256,
    /// 0 relay, 1 exit (the registry's `Role`).
    pub role: u8,
    /// 0, 1 or 2.
    pub layer: u8,
    /// Active stake in token base units.
    pub stake: U256,
    /// The multiaddr it registered.
    pub multiaddr: String,
}

/// The registered set and the minimum stake, folded from registry events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryView {
    /// The registry's `minStake`.
    pub min_stake: U256,
    /// Registered nodes by operator address.
    pub nodes: BTreeMap<Address, RegisteredNode>,
}

impl RegistryView {
    /// Applies one registry log. Logs of events that do not change the
    /// topology are ignored; a log of a known event that does not decode is an
    /// error.
    pub fn apply(&mut self, log: &alloy::primitives::Log) -> Result<(), ChainError> {
        let Some(topic) = log.topics().first() else { return Ok(()) };
        let decode = |e: alloy_sol_types::Error| ChainError::Decode(e.to_string());
        match *topic {
            NoxRegistry::NodeRegistered::SIGNATURE_HASH => {
                let ev = NoxRegistry::NodeRegistered::decode_log_data(&log.data).map_err(decode)?;
                self.nodes.insert(
                    ev.operator,
                    RegisteredNode {
                        identity: ev.identityKey,
                        role: ev.role,
                        layer: ev.layer,
                        stake: ev.stake,
                        multiaddr: ev.multiaddr,
                    },
                );
            }
            NoxRegistry::StakeAdded::SIGNATURE_HASH => {
                let ev = NoxRegistry::StakeAdded::decode_log_data(&log.data).map_err(decode)?;
                if let Some(n) = self.nodes.get_mut(&ev.operator) {
                    n.stake = ev.newStake;
                }
            }
            NoxRegistry::NodeSlashed::SIGNATURE_HASH => {
                let ev = NoxRegistry::NodeSlashed::decode_log_data(&log.data).map_err(decode)?;
                // The registry takes a slash from the active stake first.
                if let Some(n) = self.nodes.get_mut(&ev.operator) {
                    n.stake = n.stake.saturating_sub(ev.amount);
                }
            }
            NoxRegistry::NodeRemoved::SIGNATURE_HASH => {
                let ev = NoxRegistry::NodeRemoved::decode_log_data(&log.data).map_err(decode)?;
                self.nodes.remove(&ev.operator);
            }
            NoxRegistry::MinStakeChanged::SIGNATURE_HASH => {
                let ev = NoxRegistry::MinStakeChanged::decode_log_data(&log.data).map_err(decode)?;
                self.min_stake = ev.newValue;
            }
            _ => {}
        }
        Ok(())
    }

    /// XOR of keccak256(operator) over the registered set: the registry's
    /// `topologyFingerprint` when the view is right.
    pub fn fingerprint(&self) -> B256 {
        topology_fingerprint(self.nodes.keys())
    }

    /// Nodes that belong in routes and may connect: registered with at least
    /// the minimum stake, with a usable identity key and a layer that matches
    /// their role.
    pub fn active_members(&self) -> Vec<ChainMember> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.stake >= self.min_stake)
            .filter(|(_, n)| (n.role == 1) == (n.layer == EXIT_LAYER) && n.layer <= EXIT_LAYER)
            .filter(|(_, n)| ed25519_dalek::VerifyingKey::from_bytes(&n.identity.0).is_ok())
            .map(|(operator, n)| ChainMember {
                id: NodeId(n.identity.0),
                layer: n.layer,
                addresses: n.multiaddr.parse::<Multiaddr>().ok().into_iter().collect(),
                operator: *operator,
                stake: n.stake,
                exit: n.role == 1,
            })
            .collect()
    }
}

/// What the watcher stores after every processed range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The chain the progress is about.
    pub chain_id: u64,
    /// The registry it is about.
    pub registry: Address,
    /// First block not yet processed.
    pub next_block: u64,
    /// The last processed block and its hash (none before the first range).
    pub last: Option<(u64, B256)>,
    /// The view after `last`.
    pub view: RegistryView,
}

/// Reads the stored progress, if it is about this chain and registry.
pub fn load_progress(db: &redb::Database, chain_id: u64, registry: Address) -> Result<Option<Progress>, ChainError> {
    let store = |e: &dyn std::fmt::Display| ChainError::Store(e.to_string());
    let tx = db.begin_read().map_err(|e| store(&e))?;
    let table = match tx.open_table(CHAIN_TABLE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(store(&e)),
    };
    let Some(row) = table.get(PROGRESS_KEY).map_err(|e| store(&e))? else { return Ok(None) };
    let progress: Progress = serde_json::from_slice(row.value()).map_err(|e| store(&e))?;
    Ok((progress.chain_id == chain_id && progress.registry == registry).then_some(progress))
}

/// Stores `progress` durably.
pub fn save_progress(db: &redb::Database, progress: &Progress) -> Result<(), ChainError> {
    let store = |e: &dyn std::fmt::Display| ChainError::Store(e.to_string());
    let bytes = serde_json::to_vec(progress).map_err(|e| store(&e))?;
    let tx = db.begin_write().map_err(|e| store(&e))?;
    {
        let mut table = tx.open_table(CHAIN_TABLE).map_err(|e| store(&e))?;
        table.insert(PROGRESS_KEY, bytes.as_slice()).map_err(|e| store(&e))?;
    }
    tx.commit().map_err(|e| store(&e))
}

/// What the watcher reports to the node after a poll that changed the view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologyChange {
    /// Nodes that joined.
    pub added: Vec<NodeId>,
    /// Nodes that left (unregistered, unstaked, slashed below the minimum).
    pub removed: Vec<NodeId>,
}

/// The watcher's settings, from `[chain]`.
#[derive(Debug, Clone)]
pub struct WatcherConfig {
    /// Endpoint.
    pub rpc_url: String,
    /// Expected chain id.
    pub chain_id: u64,
    /// NoxRegistry.
    pub registry: Address,
    /// First block of interest.
    pub start_block: u64,
    /// Confirmation depth.
    pub confirmations: u64,
    /// Pause between polls.
    pub poll_interval: Duration,
    /// Most blocks per log request.
    pub max_log_range: u64,
    /// Timeout of one request.
    pub rpc_timeout: Duration,
}

impl WatcherConfig {
    /// From a validated `[chain]` section; `None` when no chain is configured.
    pub fn from_section(c: &ChainSection) -> Option<Self> {
        Some(WatcherConfig {
            rpc_url: c.rpc_url.clone()?,
            chain_id: c.chain_id,
            registry: c.registry_address()?,
            start_block: c.start_block,
            confirmations: c.confirmations,
            poll_interval: Duration::from_millis(c.poll_interval_ms),
            max_log_range: c.max_log_range.max(1),
            rpc_timeout: Duration::from_millis(c.rpc_timeout_ms),
        })
    }
}

/// The `nox_chain` gauges.
#[derive(Debug, Clone)]
struct ChainGauges {
    synced_block: Gauge,
    head_block: Gauge,
    active_nodes: Gauge,
    fingerprint_mismatch: Gauge,
    rpc_up: Gauge,
}

impl ChainGauges {
    fn new(m: &Metrics) -> Self {
        ChainGauges {
            synced_block: m.chain("synced_block"),
            head_block: m.chain("head_block"),
            active_nodes: m.chain("active_nodes"),
            fingerprint_mismatch: m.chain("fingerprint_mismatch"),
            rpc_up: m.chain("rpc_up"),
        }
    }
}

/// Follows NoxRegistry and keeps a [`Topology`] equal to its active set.
pub struct ChainWatcher {
    cfg: WatcherConfig,
    provider: RootProvider,
    db: Arc<redb::Database>,
    topology: Arc<Topology>,
    metrics: Metrics,
    gauges: ChainGauges,
    progress: Progress,
    /// Whether the chain id was checked since the last failure.
    checked_chain: bool,
    /// This node: it stays in its own topology (its descriptors land there).
    self_id: NodeId,
}

impl std::fmt::Debug for ChainWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainWatcher").field("registry", &self.cfg.registry).finish_non_exhaustive()
    }
}

impl ChainWatcher {
    /// A watcher resuming from the progress stored in `db` (or starting at
    /// `start_block`). The stored view, if any, is applied to `topology` at
    /// once, before any request is made.
    pub fn new(
        cfg: WatcherConfig,
        db: Arc<redb::Database>,
        topology: Arc<Topology>,
        metrics: Metrics,
        self_id: NodeId,
    ) -> Result<(Self, TopologyChange), ChainError> {
        let url: reqwest::Url = cfg.rpc_url.parse().map_err(|e| ChainError::Url(format!("{e}")))?;
        let http = reqwest::Client::builder()
            .timeout(cfg.rpc_timeout)
            .connect_timeout(cfg.rpc_timeout)
            .build()
            .map_err(ChainError::rpc)?;
        let provider = RootProvider::new(RpcClient::new_http_with_client(http, url));
        let stored = load_progress(&db, cfg.chain_id, cfg.registry)?;
        let resumed = stored.is_some();
        let progress = stored.unwrap_or_else(|| Progress {
            chain_id: cfg.chain_id,
            registry: cfg.registry,
            next_block: cfg.start_block,
            last: None,
            view: RegistryView::default(),
        });
        let gauges = ChainGauges::new(&metrics);
        let w = ChainWatcher { cfg, provider, db, topology, metrics, gauges, progress, checked_chain: false, self_id };
        let change = if resumed { w.publish() } else { TopologyChange::default() };
        if resumed {
            tracing::info!(
                next_block = w.progress.next_block,
                nodes = w.progress.view.nodes.len(),
                "chain watcher resumes from stored progress"
            );
        }
        Ok((w, change))
    }

    /// The current view.
    pub fn view(&self) -> &RegistryView {
        &self.progress.view
    }

    /// The first block not yet processed.
    pub fn next_block(&self) -> u64 {
        self.progress.next_block
    }

    /// Polls until the task is dropped (or `changes` is closed), sending every
    /// topology change to `changes`.
    pub async fn run(mut self, changes: tokio::sync::mpsc::Sender<TopologyChange>) {
        let mut failures: u32 = 0;
        loop {
            match self.poll().await {
                Ok(change) => {
                    failures = 0;
                    if (!change.added.is_empty() || !change.removed.is_empty()) && changes.send(change).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.checked_chain = false;
                    self.gauges.rpc_up.set(0);
                    let outcome = match &e {
                        ChainError::WrongChain { .. } => "wrong_chain",
                        ChainError::Decode(_) => "undecodable",
                        ChainError::Store(_) => "store_error",
                        ChainError::Rpc(_) | ChainError::Url(_) => "rpc_error",
                    };
                    self.metrics.event("chain", outcome).inc();
                    // The first failure of a streak is a warning, the rest debug.
                    if failures == 1 {
                        tracing::warn!(error = %e, "chain watcher: poll failed; keeping the last confirmed topology");
                    } else {
                        tracing::debug!(error = %e, failures, "chain watcher: poll failed again");
                    }
                }
            }
            let factor = 1u32 << failures.min(5);
            tokio::time::sleep(self.cfg.poll_interval * factor.min(MAX_BACKOFF_FACTOR)).await;
        }
    }

    /// One poll: catch up to the confirmed head, check the fingerprint, and
    /// publish the active set. Returns what changed in the topology.
    pub async fn poll(&mut self) -> Result<TopologyChange, ChainError> {
        if !self.checked_chain {
            let actual = self.provider.get_chain_id().await.map_err(ChainError::rpc)?;
            if actual != self.cfg.chain_id {
                return Err(ChainError::WrongChain { expected: self.cfg.chain_id, actual });
            }
            self.checked_chain = true;
        }
        self.gauges.rpc_up.set(1);
        let head = self.provider.get_block_number().await.map_err(ChainError::rpc)?;
        self.gauges.head_block.set(i64::try_from(head).unwrap_or(i64::MAX));
        let safe = head.saturating_sub(self.cfg.confirmations);

        if self.reorganised(safe).await? {
            self.metrics.event("chain", "reorg").inc();
            tracing::warn!(
                safe,
                "chain reorganised below the confirmation depth; rebuilding from the registry's state"
            );
            self.rebuild_at(safe).await?;
        }

        let mut range = self.cfg.max_log_range;
        while self.progress.next_block <= safe {
            let from = self.progress.next_block;
            let to = safe.min(from.saturating_add(range - 1));
            let filter = Filter::new().address(self.cfg.registry).from_block(from).to_block(to);
            let missing = || ChainError::Rpc(format!("block {to} is missing"));
            let hash = self.block_hash(to).await?.ok_or_else(missing)?;
            let logs = match self.provider.get_logs(&filter).await {
                Ok(logs) => logs,
                // Endpoints cap ranges or result sizes with an error answer:
                // halve and retry. A transport failure is not the range's fault.
                Err(e) if range > 1 && e.as_error_resp().is_some() => {
                    tracing::debug!(error = %e, range, "eth_getLogs refused a range; halving it");
                    range = (range / 2).max(1);
                    continue;
                }
                Err(e) => return Err(ChainError::rpc(e)),
            };
            // The logs and the hash come from separate requests: if `to`
            // changed in between, the logs may be another branch's. Try again
            // at the next poll.
            if self.block_hash(to).await?.ok_or_else(missing)? != hash {
                return Err(ChainError::Rpc(format!("block {to} changed while its logs were read")));
            }
            let mut view = self.progress.view.clone();
            for log in ordered(logs) {
                view.apply(&log.inner)?;
            }
            self.progress.view = view;
            self.progress.next_block = to + 1;
            self.progress.last = Some((to, hash));
            self.save().await?;
        }
        if let Some((n, _)) = self.progress.last {
            self.gauges.synced_block.set(i64::try_from(n).unwrap_or(i64::MAX));
            self.check_fingerprint(n).await?;
        }
        Ok(self.publish())
    }

    /// Whether the last processed block is no longer on the chain.
    async fn reorganised(&self, safe: u64) -> Result<bool, ChainError> {
        let Some((n, hash)) = self.progress.last else { return Ok(false) };
        if n > safe {
            // The chain is now shorter than what was processed.
            return Ok(true);
        }
        Ok(self.block_hash(n).await? != Some(hash))
    }

    async fn block_hash(&self, n: u64) -> Result<Option<B256>, ChainError> {
        let block = self.provider.get_block_by_number(n.into()).await.map_err(ChainError::rpc)?;
        Ok(block.map(|b| b.header.hash))
    }

    /// Compares the view's fingerprint with the registry's at block `n`; on a
    /// mismatch, rebuilds the view from the registry's state at `n`.
    async fn check_fingerprint(&mut self, n: u64) -> Result<(), ChainError> {
        let out = self.call_at(NoxRegistry::topologyFingerprintCall {}.abi_encode(), n).await?;
        let on_chain = NoxRegistry::topologyFingerprintCall::abi_decode_returns(&out)
            .map_err(|e| ChainError::Decode(e.to_string()))?;
        if on_chain == self.progress.view.fingerprint() {
            self.gauges.fingerprint_mismatch.set(0);
            return Ok(());
        }
        self.gauges.fingerprint_mismatch.set(1);
        self.metrics.event("chain", "fingerprint_mismatch").inc();
        tracing::warn!(
            block = n,
            registry = %on_chain,
            local = %self.progress.view.fingerprint(),
            "topology fingerprint differs from the registry's; rebuilding from the registry's state"
        );
        self.rebuild_at(n).await?;
        if on_chain == self.progress.view.fingerprint() {
            self.gauges.fingerprint_mismatch.set(0);
        }
        Ok(())
    }

    /// Replaces the view with the registry's state at block `n`.
    async fn rebuild_at(&mut self, n: u64) -> Result<(), ChainError> {
        let decode = |e: alloy_sol_types::Error| ChainError::Decode(e.to_string());
        let min_stake = NoxRegistry::minStakeCall::abi_decode_returns(
            &self.call_at(NoxRegistry::minStakeCall {}.abi_encode(), n).await?,
        )
        .map_err(decode)?;
        let count = NoxRegistry::nodeCountCall::abi_decode_returns(
            &self.call_at(NoxRegistry::nodeCountCall {}.abi_encode(), n).await?,
        )
        .map_err(decode)?;
        // The pages are read up to the count the registry states, so an
        // endpoint that keeps answering full pages cannot keep the loop going.
        let count = u64::try_from(count).map_err(|_| ChainError::Decode(format!("nodeCount {count}")))?;
        let mut view = RegistryView { min_stake, nodes: BTreeMap::new() };
        let mut start = 0u64;
        while start < count {
            let call = NoxRegistry::nodesPageCall { start: U256::from(start), count: U256::from(SNAPSHOT_PAGE) };
            let page = NoxRegistry::nodesPageCall::abi_decode_returns(&self.call_at(call.abi_encode(), n).await?)
                .map_err(decode)?;
            let got = page.operators.len() as u64;
            if got > SNAPSHOT_PAGE || page.nodes.len() as u64 != got {
                return Err(ChainError::Decode(format!(
                    "nodesPage answered {got} operators for a page of {SNAPSHOT_PAGE}"
                )));
            }
            for (operator, node) in page.operators.into_iter().zip(page.nodes) {
                if node.registered {
                    view.nodes.insert(
                        operator,
                        RegisteredNode {
                            identity: node.identityKey,
                            role: node.role,
                            layer: node.layer,
                            stake: node.stake,
                            multiaddr: node.multiaddr,
                        },
                    );
                }
            }
            if got == 0 {
                break;
            }
            start += got;
        }
        let hash = self.block_hash(n).await?.ok_or_else(|| ChainError::Rpc(format!("block {n} is missing")))?;
        self.progress.view = view;
        self.progress.next_block = n + 1;
        self.progress.last = Some((n, hash));
        self.save().await
    }

    async fn call_at(&self, data: Vec<u8>, n: u64) -> Result<Bytes, ChainError> {
        let tx = TransactionRequest::default().to(self.cfg.registry).input(Bytes::from(data).into());
        self.provider.call(tx).block(BlockId::number(n)).await.map_err(ChainError::rpc)
    }

    async fn save(&self) -> Result<(), ChainError> {
        let (db, progress) = (self.db.clone(), self.progress.clone());
        tokio::task::spawn_blocking(move || save_progress(&db, &progress))
            .await
            .map_err(|e| ChainError::Store(e.to_string()))?
    }

    /// Gives the active set to the topology.
    fn publish(&self) -> TopologyChange {
        let members = self.progress.view.active_members();
        self.gauges.active_nodes.set(members.len() as i64);
        let change = self.topology.replace_members(members, Some(self.self_id));
        for _ in &change.added {
            self.metrics.event("chain", "node_added").inc();
        }
        for _ in &change.removed {
            self.metrics.event("chain", "node_removed").inc();
        }
        change
    }
}

/// Logs in chain order (block, then index in the block); removed logs (from
/// an orphaned block an endpoint still reports) are dropped.
fn ordered(mut logs: Vec<Log>) -> Vec<Log> {
    logs.retain(|l| !l.removed);
    logs.sort_by_key(|l| (l.block_number.unwrap_or(0), l.log_index.unwrap_or(0)));
    logs
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{LogData, address};

    fn log<E: SolEvent>(ev: &E) -> alloy::primitives::Log {
        alloy::primitives::Log { address: Address::ZERO, data: ev.encode_log_data() }
    }

    fn identity(seed: u8) -> B256 {
        B256::from(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key().to_bytes())
    }

    fn registered(op: Address, seed: u8, layer: u8, stake: u64) -> alloy::primitives::Log {
        log(&NoxRegistry::NodeRegistered {
            operator: op,
            identityKey: identity(seed),
            role: u8::from(layer == EXIT_LAYER),
            layer,
            stake: U256::from(stake),
            multiaddr: format!("/ip4/127.0.0.1/tcp/{}", 9000 + u16::from(seed)),
        })
    }

    #[test]
    fn view_follows_the_registry_events() {
        let (a, b, c) = (
            address!("00000000000000000000000000000000000000a1"),
            address!("00000000000000000000000000000000000000b2"),
            address!("00000000000000000000000000000000000000c3"),
        );
        let mut v = RegistryView::default();
        v.apply(&log(&NoxRegistry::MinStakeChanged { oldValue: U256::ZERO, newValue: U256::from(100) })).unwrap();
        for l in [registered(a, 1, 0, 100), registered(b, 2, 1, 150), registered(c, 3, 2, 500)] {
            v.apply(&l).unwrap();
        }
        assert_eq!(v.active_members().len(), 3);
        assert_eq!(v.fingerprint(), topology_fingerprint(&[a, b, c]));

        // Slashed below the minimum: still registered until NodeRemoved, but out of the active set.
        v.apply(&log(&NoxRegistry::NodeSlashed {
            operator: b,
            reporter: a,
            amount: U256::from(60),
            burnt: U256::from(30),
            reporterReward: U256::from(30),
        }))
        .unwrap();
        assert_eq!(v.nodes[&b].stake, U256::from(90));
        let ids: Vec<NodeId> = v.active_members().iter().map(|m| m.id).collect();
        assert!(!ids.contains(&NodeId(identity(2).0)));
        v.apply(&log(&NoxRegistry::NodeRemoved { operator: b, identityKey: identity(2) })).unwrap();
        assert_eq!(v.fingerprint(), topology_fingerprint(&[a, c]));

        // Stake added; a raised minimum drops a node from the active set without removing it.
        v.apply(&log(&NoxRegistry::StakeAdded { operator: a, amount: U256::from(50), newStake: U256::from(150) }))
            .unwrap();
        v.apply(&log(&NoxRegistry::MinStakeChanged { oldValue: U256::from(100), newValue: U256::from(200) })).unwrap();
        let members = v.active_members();
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].operator, c);
        assert!(members[0].exit);
        assert_eq!(v.nodes.len(), 2);
    }

    #[test]
    fn unusable_records_stay_out_of_routes() {
        let mut v = RegistryView { min_stake: U256::from(1), nodes: BTreeMap::new() };
        let op = Address::repeat_byte(1);
        // An identity key that is not an Ed25519 point.
        let mut bad = [0u8; 32];
        bad[31] = 0x80;
        bad[0] = 2;
        v.nodes.insert(
            op,
            RegisteredNode {
                identity: B256::from(bad),
                role: 0,
                layer: 0,
                stake: U256::from(5),
                multiaddr: "x".into(),
            },
        );
        // A relay claiming the exit layer.
        v.nodes.insert(
            Address::repeat_byte(2),
            RegisteredNode { identity: identity(9), role: 0, layer: 2, stake: U256::from(5), multiaddr: "x".into() },
        );
        // A good node with an unparsable multiaddr: routable by id, with no address to dial.
        v.nodes.insert(
            Address::repeat_byte(3),
            RegisteredNode {
                identity: identity(8),
                role: 0,
                layer: 1,
                stake: U256::from(5),
                multiaddr: "nowhere".into(),
            },
        );
        let m = v.active_members();
        if ed25519_dalek::VerifyingKey::from_bytes(&bad).is_err() {
            assert_eq!(m.len(), 1);
        }
        assert!(m.iter().all(|m| m.operator != Address::repeat_byte(2)));
        let good = m.iter().find(|m| m.operator == Address::repeat_byte(3)).unwrap();
        assert!(good.addresses.is_empty());
    }

    #[test]
    fn malformed_known_event_is_an_error_and_unknown_events_are_ignored() {
        let mut v = RegistryView::default();
        let bad = alloy::primitives::Log {
            address: Address::ZERO,
            data: LogData::new_unchecked(vec![NoxRegistry::NodeRegistered::SIGNATURE_HASH], vec![1, 2, 3].into()),
        };
        assert!(matches!(v.apply(&bad), Err(ChainError::Decode(_))));
        let other = alloy::primitives::Log {
            address: Address::ZERO,
            data: LogData::new_unchecked(vec![B256::repeat_byte(7)], Bytes::new()),
        };
        v.apply(&other).unwrap();
        assert_eq!(v, RegistryView::default());
    }

    #[test]
    fn progress_survives_reopening_and_is_scoped_to_chain_and_registry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        let registry = Address::repeat_byte(9);
        let mut view = RegistryView::default();
        view.apply(&registered(Address::repeat_byte(1), 1, 0, 10)).unwrap();
        let p = Progress { chain_id: 31337, registry, next_block: 42, last: Some((41, B256::repeat_byte(4))), view };
        {
            let db = crate::store::open_database(&path).unwrap();
            assert_eq!(load_progress(&db, 31337, registry).unwrap(), None);
            save_progress(&db, &p).unwrap();
        }
        let db = crate::store::open_database(&path).unwrap();
        assert_eq!(load_progress(&db, 31337, registry).unwrap(), Some(p));
        assert_eq!(load_progress(&db, 1, registry).unwrap(), None);
        assert_eq!(load_progress(&db, 31337, Address::repeat_byte(8)).unwrap(), None);
    }
}
