//! [`RegistryFollower`]: keeps a [`RegistryView`] equal to NoxRegistry's
//! state at the confirmed head, for anyone who routes by the registry — the
//! node's chain watcher and, with the same code, a client.
//!
//! Each [`RegistryFollower::poll`]:
//!
//! 1. on (re)connection checks the endpoint's chain id; a wrong chain is
//!    refused and nothing is read from it;
//! 2. computes the confirmed head, `head - confirmations`, and checks that
//!    the last block it processed is still on the chain (same number, same
//!    hash). If not, the chain reorganised below the confirmation depth: the
//!    view is rebuilt from the registry's own state at the confirmed head
//!    (`minStake`, `nodeCount`, `nodesPage`);
//! 3. reads the registry's logs from the next unprocessed block to the
//!    confirmed head in ranges of at most `max_log_range` blocks (halved when
//!    the endpoint answers a range with an error; a transport failure is not
//!    the range's fault), folds them into the view, and after every range
//!    saves the progress (view, next block, last block's hash) through its
//!    [`ProgressStore`] — so a restarted follower resumes where it stopped and
//!    knows the network before its endpoint answers;
//! 4. compares the view's fingerprint with the registry's
//!    `topologyFingerprint` at the same block; a mismatch is repaired by a
//!    rebuild, and reported.
//!
//! A failed poll leaves the view as it was; the next poll checks the chain id
//! again and carries on from the stored progress.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::rpc::types::{Filter, Log};
use alloy_primitives::{Address, B256, U256};
use nox_protocol::contracts::NoxRegistry;
use serde::{Deserialize, Serialize};

use super::view::{RegisteredNode, RegistryView, UndecodableLog};
use crate::rpc::{EthClient, EthError};

/// Page size of `nodesPage` when the view is rebuilt from the registry's state.
pub const SNAPSHOT_PAGE: u64 = 200;

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The endpoint did not answer, or answered with an error.
    #[error("rpc: {0}")]
    Rpc(#[from] EthError),
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
    /// The progress store refused a read or a write.
    #[error("chain progress store: {0}")]
    Store(String),
}

impl From<UndecodableLog> for FollowError {
    fn from(e: UndecodableLog) -> Self {
        FollowError::Decode(e.0)
    }
}

impl FollowError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            FollowError::WrongChain { .. } => "wrong_chain",
            FollowError::Decode(_) => "undecodable",
            FollowError::Store(_) => "store_error",
            FollowError::Rpc(_) => "rpc_error",
        }
    }
}

/// What the follower stores after every processed range.
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

/// Where a follower keeps its progress. `save` must be durable when it
/// returns; both may block (the follower calls them off the async runtime).
pub trait ProgressStore: Send + Sync + 'static {
    /// The stored progress about `chain_id` and `registry`, if any.
    fn load(&self, chain_id: u64, registry: Address) -> Result<Option<Progress>, String>;
    /// Stores `progress`.
    fn save(&self, progress: &Progress) -> Result<(), String>;
}

/// A [`ProgressStore`] in memory (a follower that starts from
/// `start_block` every time it is created).
#[derive(Debug, Default)]
pub struct MemoryProgress(Mutex<Option<Progress>>);

impl ProgressStore for MemoryProgress {
    fn load(&self, chain_id: u64, registry: Address) -> Result<Option<Progress>, String> {
        let stored = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Ok(stored.filter(|p| p.chain_id == chain_id && p.registry == registry))
    }

    fn save(&self, progress: &Progress) -> Result<(), String> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(progress.clone());
        Ok(())
    }
}

/// The follower's settings.
#[derive(Debug, Clone)]
pub struct FollowerConfig {
    /// Endpoint.
    pub rpc_url: String,
    /// Expected chain id.
    pub chain_id: u64,
    /// NoxRegistry.
    pub registry: Address,
    /// First block of interest (the registry's deployment block).
    pub start_block: u64,
    /// Confirmation depth.
    pub confirmations: u64,
    /// Most blocks per log request.
    pub max_log_range: u64,
    /// Timeout of one request.
    pub rpc_timeout: Duration,
}

/// How the fingerprint check of a poll turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FingerprintCheck {
    /// Nothing processed yet: nothing to compare.
    NotChecked,
    /// The view's fingerprint is the registry's.
    Matched,
    /// It was not; a rebuild made it so.
    Repaired,
    /// It was not, and still is not after a rebuild.
    Mismatched,
}

/// What one successful poll saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollReport {
    /// The endpoint's head.
    pub head: u64,
    /// The last processed block.
    pub synced: Option<u64>,
    /// Whether a reorganisation below the confirmation depth forced a rebuild.
    pub reorganised: bool,
    /// The fingerprint check.
    pub fingerprint: FingerprintCheck,
}

/// Follows NoxRegistry; see the module docs.
pub struct RegistryFollower {
    cfg: FollowerConfig,
    client: EthClient,
    store: Arc<dyn ProgressStore>,
    progress: Progress,
    checked_chain: bool,
}

impl std::fmt::Debug for RegistryFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryFollower").field("registry", &self.cfg.registry).finish_non_exhaustive()
    }
}

impl RegistryFollower {
    /// A follower resuming from `store` (or starting at `start_block`).
    /// Sends nothing; returns whether stored progress was found.
    pub fn new(cfg: FollowerConfig, store: Arc<dyn ProgressStore>) -> Result<(Self, bool), FollowError> {
        let client = EthClient::new(&cfg.rpc_url, cfg.rpc_timeout, None)?;
        let stored = store.load(cfg.chain_id, cfg.registry).map_err(FollowError::Store)?;
        let resumed = stored.is_some();
        let progress = stored.unwrap_or_else(|| Progress {
            chain_id: cfg.chain_id,
            registry: cfg.registry,
            next_block: cfg.start_block,
            last: None,
            view: RegistryView::default(),
        });
        Ok((RegistryFollower { cfg, client, store, progress, checked_chain: false }, resumed))
    }

    /// The current view.
    pub fn view(&self) -> &RegistryView {
        &self.progress.view
    }

    /// The first block not yet processed.
    pub fn next_block(&self) -> u64 {
        self.progress.next_block
    }

    /// Makes the next poll check the chain id again (after a failure).
    pub fn reconnect(&mut self) {
        self.checked_chain = false;
    }

    /// One poll: catch up to the confirmed head and check the fingerprint.
    pub async fn poll(&mut self) -> Result<PollReport, FollowError> {
        if !self.checked_chain {
            let actual = self.client.chain_id().await?;
            if actual != self.cfg.chain_id {
                return Err(FollowError::WrongChain { expected: self.cfg.chain_id, actual });
            }
            self.checked_chain = true;
        }
        let head = self.client.block_number().await?;
        let safe = head.saturating_sub(self.cfg.confirmations);

        let reorganised = self.reorganised(safe).await?;
        if reorganised {
            tracing::warn!(
                safe,
                "chain reorganised below the confirmation depth; rebuilding from the registry's state"
            );
            self.rebuild_at(safe).await?;
        }

        let mut range = self.cfg.max_log_range.max(1);
        while self.progress.next_block <= safe {
            let from = self.progress.next_block;
            let to = safe.min(from.saturating_add(range - 1));
            let filter = Filter::new().address(self.cfg.registry).from_block(from).to_block(to);
            let missing = || self.client.failed("eth_getBlockByNumber", format!("block {to} is missing"));
            let hash = self.client.block_hash(to).await?.ok_or_else(missing)?;
            let logs = match self.client.logs(&filter).await {
                Ok(logs) => logs,
                // Endpoints cap ranges or result sizes with an error answer:
                // halve and retry. A transport failure is not the range's fault.
                Err(e) if range > 1 && e.is_error_answer() => {
                    tracing::debug!(error = %e, range, "eth_getLogs refused a range; halving it");
                    range = (range / 2).max(1);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            // The logs and the hash come from separate requests: if `to`
            // changed in between, the logs may be another branch's. Try again
            // at the next poll.
            if self.client.block_hash(to).await?.ok_or_else(missing)? != hash {
                return Err(self
                    .client
                    .failed("eth_getLogs", format!("block {to} changed while its logs were read"))
                    .into());
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
        let synced = self.progress.last.map(|(n, _)| n);
        let fingerprint = match synced {
            Some(n) => self.check_fingerprint(n).await?,
            None => FingerprintCheck::NotChecked,
        };
        Ok(PollReport { head, synced, reorganised, fingerprint })
    }

    /// Whether the last processed block is no longer on the chain.
    async fn reorganised(&self, safe: u64) -> Result<bool, FollowError> {
        let Some((n, hash)) = self.progress.last else { return Ok(false) };
        if n > safe {
            // The chain is now shorter than what was processed.
            return Ok(true);
        }
        Ok(self.client.block_hash(n).await? != Some(hash))
    }

    /// Compares the view's fingerprint with the registry's at block `n`; on a
    /// mismatch, rebuilds the view from the registry's state at `n`.
    async fn check_fingerprint(&mut self, n: u64) -> Result<FingerprintCheck, FollowError> {
        let on_chain = self.registry_at(NoxRegistry::topologyFingerprintCall {}, n).await?;
        if on_chain == self.progress.view.fingerprint() {
            return Ok(FingerprintCheck::Matched);
        }
        tracing::warn!(
            block = n,
            registry = %on_chain,
            local = %self.progress.view.fingerprint(),
            "topology fingerprint differs from the registry's; rebuilding from the registry's state"
        );
        self.rebuild_at(n).await?;
        Ok(if on_chain == self.progress.view.fingerprint() {
            FingerprintCheck::Repaired
        } else {
            FingerprintCheck::Mismatched
        })
    }

    async fn registry_at<C: alloy_sol_types::SolCall>(&self, call: C, n: u64) -> Result<C::Return, FollowError> {
        self.client.view_at("NoxRegistry", self.cfg.registry, call, n).await.map_err(|e| match e {
            // An answer that does not decode is the registry's data, not the endpoint's failure.
            EthError::Undecodable { request, reason, .. } => FollowError::Decode(format!("{request}: {reason}")),
            other => FollowError::Rpc(other),
        })
    }

    /// Replaces the view with the registry's state at block `n`.
    async fn rebuild_at(&mut self, n: u64) -> Result<(), FollowError> {
        let min_stake = self.registry_at(NoxRegistry::minStakeCall {}, n).await?;
        let count = self.registry_at(NoxRegistry::nodeCountCall {}, n).await?;
        // The pages are read up to the count the registry states, so an
        // endpoint that keeps answering full pages cannot keep the loop going.
        let count = u64::try_from(count).map_err(|_| FollowError::Decode(format!("nodeCount {count}")))?;
        let mut view = RegistryView { min_stake, nodes: BTreeMap::new() };
        let mut start = 0u64;
        while start < count {
            let call = NoxRegistry::nodesPageCall { start: U256::from(start), count: U256::from(SNAPSHOT_PAGE) };
            let page = self.registry_at(call, n).await?;
            let got = page.operators.len() as u64;
            if got > SNAPSHOT_PAGE || page.nodes.len() as u64 != got {
                return Err(FollowError::Decode(format!(
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
        let hash = self
            .client
            .block_hash(n)
            .await?
            .ok_or_else(|| self.client.failed("eth_getBlockByNumber", format!("block {n} is missing")))?;
        self.progress.view = view;
        self.progress.next_block = n + 1;
        self.progress.last = Some((n, hash));
        self.save().await
    }

    async fn save(&self) -> Result<(), FollowError> {
        let (store, progress) = (self.store.clone(), self.progress.clone());
        tokio::task::spawn_blocking(move || store.save(&progress))
            .await
            .map_err(|e| FollowError::Store(e.to_string()))?
            .map_err(FollowError::Store)
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

    #[test]
    fn memory_progress_is_scoped_to_chain_and_registry() {
        let store = MemoryProgress::default();
        let registry = Address::repeat_byte(9);
        let p = Progress { chain_id: 31337, registry, next_block: 42, last: None, view: RegistryView::default() };
        store.save(&p).unwrap();
        assert_eq!(store.load(31337, registry).unwrap(), Some(p));
        assert_eq!(store.load(1, registry).unwrap(), None);
        assert_eq!(store.load(31337, Address::repeat_byte(8)).unwrap(), None);
    }

    #[tokio::test]
    async fn a_dead_endpoint_fails_the_poll_and_keeps_the_view() {
        let cfg = FollowerConfig {
            rpc_url: "http://127.0.0.1:9".into(),
            chain_id: 31337,
            registry: Address::repeat_byte(1),
            start_block: 0,
            confirmations: 0,
            max_log_range: 10,
            rpc_timeout: Duration::from_secs(2),
        };
        let (mut f, resumed) = RegistryFollower::new(cfg, Arc::new(MemoryProgress::default())).unwrap();
        assert!(!resumed);
        let e = f.poll().await.unwrap_err();
        assert_eq!(e.label(), "rpc_error");
        assert_eq!(f.view(), &RegistryView::default());
    }
}
