//! The chain watcher: NoxRegistry's events become the node's topology.
//!
//! The following itself — chain-id check, confirmation depth, log ranges,
//! reorgs, the fingerprint check, resumable progress — is
//! `nox_eth::registry::RegistryFollower`, the same code a client runs. This
//! module gives it what is the node's:
//!
//! * a [`ProgressStore`] in the node's redb database (table `chain`), so a
//!   restarted node resumes where it stopped and applies the stored view
//!   before its endpoint answers;
//! * the [`Topology`]: after every poll the active set (stake ≥ `minStake`, a
//!   usable identity, a layer its role allows) replaces the node records;
//!   nodes that left are reported (the node disconnects them at once) and new
//!   ones too (it dials them);
//! * the `nox_chain` gauges and `chain/*` events: `reorg`,
//!   `fingerprint_mismatch`, `node_added`, `node_removed`, and one per failure
//!   kind (`rpc_error`, `wrong_chain`, `undecodable`, `store_error`,
//!   `disagreement` — fewer than `chain.rpc_quorum` endpoints agreed, so the
//!   view was refused);
//! * with several endpoints (`chain.rpc_urls`): `chain/endpoint_disagreed`
//!   once per endpoint and poll that answered otherwise than the accepted
//!   quorum, `chain/endpoint_failed` once per endpoint and poll that did not
//!   answer while the others reached a quorum, the gauge `rpc_agreeing`
//!   (endpoints in the accepted group), and a warning naming the dissenting
//!   and failed endpoints by index — never by URL, which may carry an API
//!   key — whenever those sets change;
//! * the poll loop: every `chain.poll_interval_ms`, with a pause that grows
//!   (up to 32 intervals) while the endpoint fails; the last confirmed view
//!   stays in place meanwhile.

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;
use nox_eth::registry::{ActiveNode, FingerprintCheck, FollowerConfig, Progress, ProgressStore, RegistryFollower};
use nox_protocol::NodeId;
use nox_protocol::Role;
use prometheus_client::metrics::gauge::Gauge;
use redb::{ReadableDatabase, TableDefinition};

pub use nox_eth::registry::FollowError as ChainError;
pub use nox_eth::registry::{RegisteredNode, RegistryView};

use crate::config::ChainSection;
use crate::metrics::Metrics;
use crate::topology::{ChainMember, Topology, TopologyChange};

/// The table holding the watcher's progress: one row, [`PROGRESS_KEY`].
const CHAIN_TABLE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("chain");
const PROGRESS_KEY: &str = "progress";

/// Longest pause between retries, in poll intervals.
const MAX_BACKOFF_FACTOR: u32 = 32;

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

/// The follower's progress in the node's database.
#[derive(Debug, Clone)]
pub struct RedbProgress(pub Arc<redb::Database>);

impl ProgressStore for RedbProgress {
    fn load(&self, chain_id: u64, registry: Address) -> Result<Option<Progress>, String> {
        load_progress(&self.0, chain_id, registry).map_err(|e| e.to_string())
    }

    fn save(&self, progress: &Progress) -> Result<(), String> {
        save_progress(&self.0, progress).map_err(|e| e.to_string())
    }
}

/// The watcher's settings, from `[chain]`: what the follower needs, and how
/// often to poll.
#[derive(Debug, Clone)]
pub struct WatcherConfig {
    /// Endpoints and quorum, chain, registry, start block, confirmations, log
    /// range, timeout.
    pub follower: FollowerConfig,
    /// Pause between polls.
    pub poll_interval: Duration,
}

impl WatcherConfig {
    /// From a validated `[chain]` section; `None` when no chain is configured.
    pub fn from_section(c: &ChainSection) -> Option<Self> {
        Some(WatcherConfig {
            follower: FollowerConfig {
                rpc_urls: Some(c.endpoints()).filter(|e| !e.is_empty())?,
                quorum: usize::try_from(c.rpc_quorum).unwrap_or(usize::MAX),
                chain_id: c.chain_id,
                registry: c.registry_address()?,
                start_block: c.start_block,
                confirmations: c.confirmations,
                max_log_range: c.max_log_range.max(1),
                rpc_timeout: Duration::from_millis(c.rpc_timeout_ms),
            },
            poll_interval: Duration::from_millis(c.poll_interval_ms),
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
    rpc_agreeing: Gauge,
}

impl ChainGauges {
    fn new(m: &Metrics) -> Self {
        ChainGauges {
            synced_block: m.chain("synced_block"),
            head_block: m.chain("head_block"),
            active_nodes: m.chain("active_nodes"),
            fingerprint_mismatch: m.chain("fingerprint_mismatch"),
            rpc_up: m.chain("rpc_up"),
            rpc_agreeing: m.chain("rpc_agreeing"),
        }
    }
}

/// Follows NoxRegistry and keeps a [`Topology`] equal to its active set.
pub struct ChainWatcher {
    cfg: WatcherConfig,
    follower: RegistryFollower,
    topology: Arc<Topology>,
    metrics: Metrics,
    gauges: ChainGauges,
    /// This node: it stays in its own topology (its descriptors land there).
    self_id: NodeId,
    /// The endpoints that disagreed, and that failed, at the last poll
    /// (logged when either changes).
    dissenting: (Vec<usize>, Vec<usize>),
}

impl std::fmt::Debug for ChainWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainWatcher").field("registry", &self.cfg.follower.registry).finish_non_exhaustive()
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
        let (follower, resumed) = RegistryFollower::new(cfg.follower.clone(), Arc::new(RedbProgress(db)))?;
        let gauges = ChainGauges::new(&metrics);
        let w =
            ChainWatcher { cfg, follower, topology, metrics, gauges, self_id, dissenting: (Vec::new(), Vec::new()) };
        let change = if resumed { w.publish() } else { TopologyChange::default() };
        if resumed {
            tracing::info!(
                next_block = w.follower.next_block(),
                nodes = w.follower.view().nodes.len(),
                "chain watcher resumes from stored progress"
            );
        }
        Ok((w, change))
    }

    /// The current view.
    pub fn view(&self) -> &RegistryView {
        self.follower.view()
    }

    /// The first block not yet processed.
    pub fn next_block(&self) -> u64 {
        self.follower.next_block()
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
        let report = match self.follower.poll().await {
            Ok(report) => report,
            Err(e) => {
                self.follower.reconnect();
                self.gauges.rpc_up.set(0);
                self.gauges.rpc_agreeing.set(0);
                self.metrics.event("chain", e.label()).inc();
                return Err(e);
            }
        };
        self.gauges.rpc_up.set(1);
        self.gauges.rpc_agreeing.set(i64::try_from(report.agreeing).unwrap_or(i64::MAX));
        for _ in &report.dissenting {
            self.metrics.event("chain", "endpoint_disagreed").inc();
        }
        for _ in &report.failed {
            self.metrics.event("chain", "endpoint_failed").inc();
        }
        let outliers = (report.dissenting.clone(), report.failed.clone());
        if outliers != self.dissenting {
            if !report.dissenting.is_empty() || !report.failed.is_empty() {
                tracing::warn!(
                    dissenting = ?report.dissenting,
                    failed = ?report.failed,
                    agreeing = report.agreeing,
                    quorum = self.follower.quorum(),
                    endpoints = self.follower.endpoints(),
                    "chain: RPC endpoints (by index in chain.rpc_urls) answered otherwise than the quorum \
                     or not at all; following the quorum"
                );
            }
            self.dissenting = outliers;
        }
        self.gauges.head_block.set(i64::try_from(report.head).unwrap_or(i64::MAX));
        if report.reorganised {
            self.metrics.event("chain", "reorg").inc();
        }
        if let Some(n) = report.synced {
            self.gauges.synced_block.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        match report.fingerprint {
            FingerprintCheck::NotChecked => {}
            FingerprintCheck::Matched => {
                self.gauges.fingerprint_mismatch.set(0);
            }
            FingerprintCheck::Repaired => {
                self.metrics.event("chain", "fingerprint_mismatch").inc();
                self.gauges.fingerprint_mismatch.set(0);
            }
            FingerprintCheck::Mismatched => {
                self.metrics.event("chain", "fingerprint_mismatch").inc();
                self.gauges.fingerprint_mismatch.set(1);
            }
        }
        Ok(self.publish())
    }

    /// Gives the active set to the topology.
    fn publish(&self) -> TopologyChange {
        let members: Vec<ChainMember> = self.follower.view().active_members().into_iter().map(member).collect();
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

/// An active node as the topology holds it: its multiaddr parsed (one that
/// does not parse leaves the node routable by id but not dialable).
fn member(n: ActiveNode) -> ChainMember {
    ChainMember {
        id: n.id,
        layer: n.layer,
        addresses: n.multiaddr.parse().ok().into_iter().collect(),
        operator: n.operator,
        stake: n.stake,
        exit: n.role == Role::Exit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{B256, U256};
    use nox_protocol::contracts::NoxRegistry;

    fn identity(seed: u8) -> B256 {
        B256::from(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key().to_bytes())
    }

    fn registered(op: Address, seed: u8, layer: u8, stake: u64) -> alloy_primitives::Log {
        use alloy_sol_types::SolEvent;
        let ev = NoxRegistry::NodeRegistered {
            operator: op,
            identityKey: identity(seed),
            role: u8::from(layer == 2),
            layer,
            stake: U256::from(stake),
            multiaddr: format!("/ip4/127.0.0.1/tcp/{}", 9000 + u16::from(seed)),
        };
        alloy_primitives::Log { address: Address::ZERO, data: ev.encode_log_data() }
    }

    #[test]
    fn an_unparsable_multiaddr_leaves_a_member_without_addresses() {
        let m = member(ActiveNode {
            id: NodeId([1; 32]),
            layer: 2,
            role: Role::Exit,
            multiaddr: "nowhere".into(),
            operator: Address::repeat_byte(1),
            stake: U256::from(1u8),
        });
        assert!(m.addresses.is_empty() && m.exit);
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
