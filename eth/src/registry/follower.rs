//! [`RegistryFollower`]: keeps a [`RegistryView`] equal to NoxRegistry's
//! state at the confirmed head, for anyone who routes by the registry — the
//! node's chain watcher and, with the same code, a client.
//!
//! The follower reads the registry from one or more endpoints
//! (`rpc_urls`) and accepts a new view only when a quorum of them
//! (`quorum`, by default a majority) agree on it: one endpoint that lies —
//! drops a registration, swaps an identity key, invents a block — cannot
//! change the topology. Every endpoint must use TLS unless it is on a
//! loopback host ([`crate::rpc::check_transport`]). Endpoints are named by
//! their index (`RPC endpoint #1`) in errors and logs, never by their URL,
//! which may carry an API key.
//!
//! Each [`RegistryFollower::poll`]:
//!
//! 1. asks every endpoint for its head (checking its chain id first, on
//!    (re)connection; an endpoint on another chain does not count). The
//!    confirmed head is the `quorum`-th highest head minus `confirmations`,
//!    a block at least a quorum of endpoints have;
//! 2. advances the agreed progress towards the confirmed head in rounds of at
//!    most [`ROUND_RANGES`] log ranges. In a round every endpoint, starting
//!    from the agreed progress, independently:
//!    * checks that the last agreed block is still on its chain (same number,
//!      same hash); if not, the chain reorganised below the confirmation
//!      depth and its view is rebuilt from the registry's own state at the
//!      round's target (`minStake`, `nodeCount`, `nodesPage`);
//!    * reads the registry's logs up to the round's target in ranges of at
//!      most `max_log_range` blocks (halved when the endpoint answers a range
//!      with an error; a transport failure is not the range's fault) and
//!      folds them into its view;
//!    * compares its view's fingerprint with the registry's
//!      `topologyFingerprint` at the target; a mismatch is repaired by a
//!      rebuild, and reported;
//! 3. groups the endpoints' outcomes by (block number and hash at the
//!    target, [`RegistryView::digest`] of the view). A group of at least
//!    `quorum` endpoints is the new agreed progress, saved through the
//!    [`ProgressStore`] — so a restarted follower resumes where it stopped
//!    and knows the network before its endpoints answer. Without such a group
//!    the round fails with [`FollowError::NoQuorum`], naming which endpoints
//!    failed and which disagreed; an endpoint that is down counts as not
//!    agreeing. Endpoints that answered but disagreed with an accepted view
//!    are reported in [`PollReport::dissenting`].
//!
//! A failed poll leaves the agreed view as it was; the next poll checks the
//! chain ids again and carries on from the stored progress. With a single
//! endpoint (and a quorum of one) a failure is that endpoint's own error.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::rpc::types::{Filter, Log};
use alloy_primitives::{Address, B256, U256};
use nox_protocol::contracts::NoxRegistry;
use serde::{Deserialize, Serialize};

use super::view::{RegisteredNode, RegistryView, UndecodableLog};
use crate::rpc::{EthClient, EthError, check_transport};

/// Page size of `nodesPage` when the view is rebuilt from the registry's state.
pub const SNAPSHOT_PAGE: u64 = 200;

/// Why a poll failed.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// Fewer than the quorum of endpoints agreed on a view; the last agreed
    /// view stays.
    #[error("{0}")]
    NoQuorum(QuorumFailure),
    /// The quorum setting cannot work with the configured endpoints.
    #[error("chain quorum: {0}")]
    Quorum(String),
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
            FollowError::NoQuorum(_) => "disagreement",
            FollowError::Quorum(_) => "bad_quorum",
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
    /// Endpoints: `https://`, or `http://` on a loopback host. At least one.
    pub rpc_urls: Vec<String>,
    /// How many endpoints must agree on a view; 0 means a majority
    /// (`rpc_urls.len() / 2 + 1`). At least a majority, at most all.
    pub quorum: usize,
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

impl FollowerConfig {
    /// How many endpoints must agree: `quorum`, or a majority when it is 0.
    pub fn quorum_needed(&self) -> usize {
        effective_quorum(self.quorum, self.rpc_urls.len())
    }
}

/// `quorum`, or a majority of `endpoints` when it is 0.
pub fn effective_quorum(quorum: usize, endpoints: usize) -> usize {
    if quorum == 0 { endpoints / 2 + 1 } else { quorum }
}

/// Why a quorum setting cannot work with `endpoints` endpoints: below a
/// majority two disagreeing groups could both reach it; above the count it
/// can never be reached. `None` when it is fine (0 means a majority).
pub fn quorum_problem(quorum: usize, endpoints: usize) -> Option<String> {
    let majority = endpoints / 2 + 1;
    if endpoints == 0 {
        Some("no endpoint is configured".into())
    } else if quorum != 0 && quorum < majority {
        Some(format!(
            "{quorum} is less than a majority of the {endpoints} endpoints ({majority}): two disagreeing groups \
             could both reach it"
        ))
    } else if quorum > endpoints {
        Some(format!("{quorum} is more than the {endpoints} configured endpoints: it could never be reached"))
    } else {
        None
    }
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollReport {
    /// The confirmed head's source: the `quorum`-th highest head the
    /// endpoints reported.
    pub head: u64,
    /// The last processed block.
    pub synced: Option<u64>,
    /// Whether a reorganisation below the confirmation depth forced a rebuild.
    pub reorganised: bool,
    /// The fingerprint check.
    pub fingerprint: FingerprintCheck,
    /// How many endpoints agreed on the accepted view (in its last round).
    pub agreeing: usize,
    /// Endpoints (by index) that answered but disagreed with the accepted
    /// view in some round of the poll.
    pub dissenting: Vec<usize>,
    /// Endpoints (by index) that failed in some round of the poll.
    pub failed: Vec<usize>,
}

/// One endpoint that did not agree with a round's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointFailure {
    /// Its index in `rpc_urls`.
    pub index: usize,
    /// A short label ([`FollowError::label`], or `disagreed`).
    pub label: &'static str,
    /// What happened, without the endpoint's URL.
    pub reason: String,
}

/// A round in which no view had a quorum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no quorum on the registry view at block {target}: {needed} of {endpoints} RPC endpoints must agree, \
     the largest group was {largest}; {}",
    describe(.failures)
)]
pub struct QuorumFailure {
    /// The block the round was to reach.
    pub target: u64,
    /// The quorum.
    pub needed: usize,
    /// Configured endpoints.
    pub endpoints: usize,
    /// The largest group of endpoints that agreed.
    pub largest: usize,
    /// Every endpoint outside that group: failed, or answered otherwise.
    pub failures: Vec<EndpointFailure>,
}

fn describe(failures: &[EndpointFailure]) -> String {
    let parts: Vec<String> = failures.iter().map(|f| format!("#{} {}: {}", f.index, f.label, f.reason)).collect();
    parts.join("; ")
}

/// The label endpoint `index` carries in errors and logs instead of its URL.
pub fn endpoint_label(index: usize) -> String {
    format!("RPC endpoint #{index}")
}

/// One endpoint's outcome of a round.
#[derive(Debug, Clone)]
struct Outcome {
    progress: Progress,
    reorganised: bool,
    fingerprint: FingerprintCheck,
}

impl Outcome {
    /// What endpoints must agree on: the last block (number and hash), the
    /// next block and the view.
    fn key(&self) -> (Option<(u64, B256)>, u64, B256) {
        (self.progress.last, self.progress.next_block, self.progress.view.digest())
    }
}

/// Highest head an endpoint may report (2^48: at one block a second, nine
/// million years); a higher one is an endpoint failure.
pub const MAX_HEAD: u64 = 1 << 48;

/// Most log ranges one round reads before the endpoints' views are compared
/// and the agreed progress saved.
pub const ROUND_RANGES: u64 = 16;

/// Follows NoxRegistry; see the module docs.
pub struct RegistryFollower {
    cfg: FollowerConfig,
    endpoints: Vec<Endpoint>,
    quorum: usize,
    store: Arc<dyn ProgressStore>,
    progress: Progress,
}

impl std::fmt::Debug for RegistryFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryFollower")
            .field("registry", &self.cfg.registry)
            .field("endpoints", &self.endpoints.len())
            .field("quorum", &self.quorum)
            .finish_non_exhaustive()
    }
}

impl RegistryFollower {
    /// A follower resuming from `store` (or starting at `start_block`).
    /// Sends nothing; returns whether stored progress was found. Refuses an
    /// endpoint that is not TLS or loopback, and a quorum that cannot work.
    pub fn new(cfg: FollowerConfig, store: Arc<dyn ProgressStore>) -> Result<(Self, bool), FollowError> {
        if let Some(reason) = quorum_problem(cfg.quorum, cfg.rpc_urls.len()) {
            return Err(FollowError::Quorum(reason));
        }
        let mut endpoints = Vec::with_capacity(cfg.rpc_urls.len());
        for (index, url) in cfg.rpc_urls.iter().enumerate() {
            let label = endpoint_label(index);
            let relabel = |e: EthError| match e {
                EthError::InvalidUrl { reason, .. } => EthError::InvalidUrl { url: label.clone(), reason },
                other => other,
            };
            check_transport(url).map_err(relabel)?;
            let client = EthClient::new(url, cfg.rpc_timeout, None).map_err(relabel)?.with_label(label.clone());
            endpoints.push(Endpoint { client, checked_chain: false });
        }
        let stored = store.load(cfg.chain_id, cfg.registry).map_err(FollowError::Store)?;
        let resumed = stored.is_some();
        let progress = stored.unwrap_or_else(|| Progress {
            chain_id: cfg.chain_id,
            registry: cfg.registry,
            next_block: cfg.start_block,
            last: None,
            view: RegistryView::default(),
        });
        let quorum = cfg.quorum_needed();
        Ok((RegistryFollower { cfg, endpoints, quorum, store, progress }, resumed))
    }

    /// The current (last agreed) view.
    pub fn view(&self) -> &RegistryView {
        &self.progress.view
    }

    /// The first block not yet processed.
    pub fn next_block(&self) -> u64 {
        self.progress.next_block
    }

    /// How many endpoints must agree.
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// How many endpoints are configured.
    pub fn endpoints(&self) -> usize {
        self.endpoints.len()
    }

    /// Makes the next poll check the chain ids again (after a failure).
    pub fn reconnect(&mut self) {
        for e in &mut self.endpoints {
            e.checked_chain = false;
        }
    }

    /// One poll: catch up to the confirmed head on a quorum's word and check
    /// the fingerprint.
    pub async fn poll(&mut self) -> Result<PollReport, FollowError> {
        // 1. Heads (and chain ids), from every endpoint at once.
        let mut asked = tokio::task::JoinSet::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let (client, check, chain_id) = (e.client.clone(), !e.checked_chain, self.cfg.chain_id);
            asked.spawn(async move { (i, head_of(&client, check, chain_id).await) });
        }
        let mut heads: Vec<(usize, u64)> = Vec::new();
        let mut failures: Vec<(usize, FollowError)> = Vec::new();
        while let Some(joined) = asked.join_next().await {
            let (i, result) = joined.map_err(|e| FollowError::Store(format!("an RPC task failed: {e}")))?;
            match result {
                Ok(head) => {
                    self.endpoints[i].checked_chain = true;
                    heads.push((i, head));
                }
                Err(e) => failures.push((i, e)),
            }
        }
        failures.sort_by_key(|(i, _)| *i);
        if heads.len() < self.quorum {
            return Err(self.refuse(self.progress.next_block, heads.len(), failures, Vec::new()));
        }
        let mut sorted: Vec<u64> = heads.iter().map(|(_, h)| *h).collect();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let head = sorted[self.quorum - 1];
        let safe = head.saturating_sub(self.cfg.confirmations);

        // 2. Rounds towards the confirmed head.
        let round_blocks = self.cfg.max_log_range.max(1).saturating_mul(ROUND_RANGES);
        let mut report = PollReport {
            head,
            synced: None,
            reorganised: false,
            fingerprint: FingerprintCheck::NotChecked,
            agreeing: 0,
            dissenting: Vec::new(),
            failed: failures.iter().map(|(i, _)| *i).collect(),
        };
        let answering: Vec<usize> = heads.iter().map(|(i, _)| *i).collect();
        loop {
            let target = safe.min(self.progress.next_block.saturating_add(round_blocks - 1));
            let agreed = self.round(&answering, target, &failures).await?;
            report.reorganised |= agreed.outcome.reorganised;
            report.fingerprint = agreed.outcome.fingerprint;
            report.agreeing = agreed.agreeing;
            for i in agreed.dissenting {
                if !report.dissenting.contains(&i) {
                    report.dissenting.push(i);
                }
            }
            for i in agreed.failed {
                if !report.failed.contains(&i) {
                    report.failed.push(i);
                }
            }
            self.progress = agreed.outcome.progress;
            self.save().await?;
            if target >= safe {
                break;
            }
        }
        report.synced = self.progress.last.map(|(n, _)| n);
        report.dissenting.sort_unstable();
        report.failed.sort_unstable();
        Ok(report)
    }

    /// One round: every answering endpoint advances a copy of the agreed
    /// progress to `target`; the outcome a quorum shares is returned.
    async fn round(
        &self,
        answering: &[usize],
        target: u64,
        earlier: &[(usize, FollowError)],
    ) -> Result<Agreed, FollowError> {
        let mut asked = tokio::task::JoinSet::new();
        for &i in answering {
            let (client, cfg, start) = (self.endpoints[i].client.clone(), self.cfg.clone(), self.progress.clone());
            asked.spawn(async move { (i, advance(&client, &cfg, start, target).await) });
        }
        let mut outcomes: Vec<(usize, Outcome)> = Vec::new();
        let mut failures: Vec<(usize, FollowError)> = Vec::new();
        while let Some(joined) = asked.join_next().await {
            let (i, result) = joined.map_err(|e| FollowError::Store(format!("an RPC task failed: {e}")))?;
            match result {
                Ok(outcome) => outcomes.push((i, outcome)),
                Err(e) => failures.push((i, e)),
            }
        }
        outcomes.sort_by_key(|(i, _)| *i);
        // Groups of endpoints with the same outcome, largest first (ties: the
        // group whose first endpoint comes first).
        let mut groups: Vec<(Vec<usize>, Outcome)> = Vec::new();
        for (i, outcome) in outcomes {
            match groups.iter_mut().find(|(_, o)| o.key() == outcome.key()) {
                Some((members, _)) => members.push(i),
                None => groups.push((vec![i], outcome)),
            }
        }
        groups.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0[0].cmp(&b.0[0])));
        let largest = groups.first().map_or(0, |(m, _)| m.len());
        let dissenting: Vec<usize> = groups.iter().skip(1).flat_map(|(m, _)| m.iter().copied()).collect();
        if largest < self.quorum {
            let mut listed = failures;
            listed.extend(earlier.iter().cloned());
            return Err(self.refuse(target, largest, listed, dissenting));
        }
        let failed: Vec<usize> = failures.iter().map(|(i, _)| *i).collect();
        let (members, outcome) = groups.swap_remove(0);
        if !dissenting.is_empty() || !failed.is_empty() {
            tracing::debug!(
                block = target,
                agreeing = ?members,
                dissenting = ?dissenting,
                failed = ?failed,
                "chain: RPC endpoints disagree; following the quorum"
            );
        }
        Ok(Agreed { outcome, agreeing: members.len(), dissenting, failed })
    }

    /// The error of a round without a quorum; with one endpoint, its own error.
    fn refuse(
        &self,
        target: u64,
        largest: usize,
        mut failures: Vec<(usize, FollowError)>,
        dissenting: Vec<usize>,
    ) -> FollowError {
        if self.endpoints.len() == 1 && failures.len() == 1 {
            return failures.remove(0).1;
        }
        let mut listed: Vec<EndpointFailure> = failures
            .into_iter()
            .map(|(index, e)| EndpointFailure { index, label: e.label(), reason: e.to_string() })
            .collect();
        for index in dissenting {
            listed.push(EndpointFailure {
                index,
                label: "disagreed",
                reason: "answered a different block hash or view".into(),
            });
        }
        listed.sort_by_key(|f| f.index);
        FollowError::NoQuorum(QuorumFailure {
            target,
            needed: self.quorum,
            endpoints: self.endpoints.len(),
            largest,
            failures: listed,
        })
    }

    async fn save(&self) -> Result<(), FollowError> {
        let (store, progress) = (self.store.clone(), self.progress.clone());
        tokio::task::spawn_blocking(move || store.save(&progress))
            .await
            .map_err(|e| FollowError::Store(e.to_string()))?
            .map_err(FollowError::Store)
    }
}

/// A round's accepted outcome.
#[derive(Debug)]
struct Agreed {
    outcome: Outcome,
    agreeing: usize,
    dissenting: Vec<usize>,
    failed: Vec<usize>,
}

/// One configured endpoint.
#[derive(Debug)]
struct Endpoint {
    client: EthClient,
    checked_chain: bool,
}

/// The endpoint's head, after checking its chain id when `check_chain`.
async fn head_of(client: &EthClient, check_chain: bool, chain_id: u64) -> Result<u64, FollowError> {
    if check_chain {
        let actual = client.chain_id().await?;
        if actual != chain_id {
            return Err(FollowError::WrongChain { expected: chain_id, actual });
        }
    }
    let head = client.block_number().await?;
    // Blocks are numbered from 0 one every few seconds: a head this high is
    // a lie, and would leave no block after it to count on.
    if head > MAX_HEAD {
        return Err(client.failed("eth_blockNumber", format!("implausible head {head}")).into());
    }
    Ok(head)
}

/// One endpoint's view of the registry at `target`, starting from `start`
/// (the agreed progress): reorg check, logs, fingerprint check.
async fn advance(
    client: &EthClient,
    cfg: &FollowerConfig,
    start: Progress,
    target: u64,
) -> Result<Outcome, FollowError> {
    let mut p = start;
    let reorganised = reorganised(client, &p, target).await?;
    if reorganised {
        tracing::warn!(
            block = target,
            endpoint = client.label(),
            "chain reorganised below the confirmation depth; rebuilding from the registry's state"
        );
        rebuild_at(client, cfg, &mut p, target).await?;
    }

    let mut range = cfg.max_log_range.max(1);
    while p.next_block <= target {
        let from = p.next_block;
        let to = target.min(from.saturating_add(range - 1));
        let filter = Filter::new().address(cfg.registry).from_block(from).to_block(to);
        let missing = || client.failed("eth_getBlockByNumber", format!("block {to} is missing"));
        let hash = client.block_hash(to).await?.ok_or_else(missing)?;
        let logs = match client.logs(&filter).await {
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
        if client.block_hash(to).await?.ok_or_else(missing)? != hash {
            return Err(client.failed("eth_getLogs", format!("block {to} changed while its logs were read")).into());
        }
        for log in ordered(logs) {
            p.view.apply(&log.inner)?;
        }
        p.next_block = to.saturating_add(1);
        p.last = Some((to, hash));
    }
    let fingerprint = match p.last.map(|(n, _)| n) {
        Some(n) => check_fingerprint(client, cfg, &mut p, n).await?,
        None => FingerprintCheck::NotChecked,
    };
    Ok(Outcome { progress: p, reorganised, fingerprint })
}

/// Whether the last processed block is no longer on the endpoint's chain.
async fn reorganised(client: &EthClient, p: &Progress, safe: u64) -> Result<bool, FollowError> {
    let Some((n, hash)) = p.last else { return Ok(false) };
    if n > safe {
        // The chain is now shorter than what was processed.
        return Ok(true);
    }
    Ok(client.block_hash(n).await? != Some(hash))
}

/// Compares the view's fingerprint with the registry's at block `n`; on a
/// mismatch, rebuilds the view from the registry's state at `n`.
async fn check_fingerprint(
    client: &EthClient,
    cfg: &FollowerConfig,
    p: &mut Progress,
    n: u64,
) -> Result<FingerprintCheck, FollowError> {
    let on_chain = registry_at(client, cfg, NoxRegistry::topologyFingerprintCall {}, n).await?;
    if on_chain == p.view.fingerprint() {
        return Ok(FingerprintCheck::Matched);
    }
    tracing::warn!(
        block = n,
        registry = %on_chain,
        local = %p.view.fingerprint(),
        "topology fingerprint differs from the registry's; rebuilding from the registry's state"
    );
    rebuild_at(client, cfg, p, n).await?;
    Ok(if on_chain == p.view.fingerprint() { FingerprintCheck::Repaired } else { FingerprintCheck::Mismatched })
}

async fn registry_at<C: alloy_sol_types::SolCall>(
    client: &EthClient,
    cfg: &FollowerConfig,
    call: C,
    n: u64,
) -> Result<C::Return, FollowError> {
    client.view_at("NoxRegistry", cfg.registry, call, n).await.map_err(|e| match e {
        // An answer that does not decode is the registry's data, not the endpoint's failure.
        EthError::Undecodable { request, reason, .. } => FollowError::Decode(format!("{request}: {reason}")),
        other => FollowError::Rpc(other),
    })
}

/// Replaces the view with the registry's state at block `n`.
async fn rebuild_at(client: &EthClient, cfg: &FollowerConfig, p: &mut Progress, n: u64) -> Result<(), FollowError> {
    let min_stake = registry_at(client, cfg, NoxRegistry::minStakeCall {}, n).await?;
    let count = registry_at(client, cfg, NoxRegistry::nodeCountCall {}, n).await?;
    // The pages are read up to the count the registry states, so an
    // endpoint that keeps answering full pages cannot keep the loop going.
    let count = u64::try_from(count).map_err(|_| FollowError::Decode(format!("nodeCount {count}")))?;
    let mut view = RegistryView { min_stake, nodes: BTreeMap::new() };
    let mut start = 0u64;
    while start < count {
        let call = NoxRegistry::nodesPageCall { start: U256::from(start), count: U256::from(SNAPSHOT_PAGE) };
        let page = registry_at(client, cfg, call, n).await?;
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
    let hash = client
        .block_hash(n)
        .await?
        .ok_or_else(|| client.failed("eth_getBlockByNumber", format!("block {n} is missing")))?;
    p.view = view;
    p.next_block = n.saturating_add(1);
    p.last = Some((n, hash));
    Ok(())
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
        let (mut f, resumed) =
            RegistryFollower::new(config(&["http://127.0.0.1:9"], 0), Arc::new(MemoryProgress::default())).unwrap();
        assert!(!resumed);
        let e = f.poll().await.unwrap_err();
        assert_eq!(e.label(), "rpc_error");
        assert_eq!(f.view(), &RegistryView::default());
    }

    fn config(urls: &[&str], quorum: usize) -> FollowerConfig {
        FollowerConfig {
            rpc_urls: urls.iter().map(|u| u.to_string()).collect(),
            quorum,
            chain_id: 31337,
            registry: Address::repeat_byte(1),
            start_block: 0,
            confirmations: 0,
            max_log_range: 10,
            rpc_timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn a_quorum_is_a_majority_at_least_and_all_at_most() {
        assert_eq!(effective_quorum(0, 1), 1);
        assert_eq!(effective_quorum(0, 2), 2);
        assert_eq!(effective_quorum(0, 3), 2);
        assert_eq!(effective_quorum(0, 4), 3);
        assert_eq!(effective_quorum(3, 3), 3);
        assert_eq!(quorum_problem(0, 3), None);
        assert_eq!(quorum_problem(2, 3), None);
        assert_eq!(quorum_problem(3, 3), None);
        assert!(quorum_problem(1, 3).unwrap().contains("less than a majority"));
        assert!(quorum_problem(2, 4).unwrap().contains("less than a majority"));
        assert!(quorum_problem(4, 3).unwrap().contains("never be reached"));
        assert!(quorum_problem(0, 0).is_some());
        let store = || Arc::new(MemoryProgress::default());
        for (urls, quorum) in
            [(&["http://127.0.0.1:9"][..], 2), (&["http://127.0.0.1:9", "http://127.0.0.1:10"][..], 1)]
        {
            let e = RegistryFollower::new(config(urls, quorum), store()).unwrap_err();
            assert_eq!(e.label(), "bad_quorum", "{e}");
        }
        let e = RegistryFollower::new(config(&[], 0), store()).unwrap_err();
        assert_eq!(e.label(), "bad_quorum", "{e}");
    }

    #[test]
    fn a_plain_http_endpoint_off_loopback_is_refused_without_its_url() {
        let cfg = config(&["https://rpc.example.org/KEY", "http://127.0.0.1:8545", "http://rpc.example.net/KEY"], 0);
        let e = RegistryFollower::new(cfg, Arc::new(MemoryProgress::default())).unwrap_err();
        assert!(matches!(&e, FollowError::Rpc(EthError::Insecure { host }) if host == "rpc.example.net"), "{e}");
        assert!(!e.to_string().contains("KEY"), "{e}");
        let cfg = config(&["https://rpc.example.org/KEY", "nonsense KEY"], 0);
        let e = RegistryFollower::new(cfg, Arc::new(MemoryProgress::default())).unwrap_err();
        assert!(matches!(&e, FollowError::Rpc(EthError::InvalidUrl { url, .. }) if url == "RPC endpoint #1"), "{e}");
        assert!(!e.to_string().contains("KEY"), "{e}");
    }

    /// A one-request JSON-RPC endpoint on loopback that answers every
    /// request with `result`.
    async fn answering(result: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let id = req.split("\"id\":").nth(1).and_then(|r| r.split([',', '}']).next()).unwrap_or("0");
                    let body = format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{result}}}");
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn an_endpoint_claiming_an_endless_chain_fails_without_a_loop() {
        // An endpoint that answers u64::MAX to everything; its chain id is
        // taken as checked, so the head is the first thing asked.
        let url = answering("\"0xffffffffffffffff\"").await;
        let (mut f, _) = RegistryFollower::new(config(&[&url], 1), Arc::new(MemoryProgress::default())).unwrap();
        f.endpoints[0].checked_chain = true;
        let e = tokio::time::timeout(Duration::from_secs(5), f.poll()).await.expect("no endless loop").unwrap_err();
        assert_eq!(e.label(), "rpc_error", "{e}");
        assert!(e.to_string().contains("implausible head"), "{e}");
        assert_eq!(f.next_block(), 0);
    }

    #[tokio::test]
    async fn dead_endpoints_leave_no_quorum_and_are_named_by_index() {
        let cfg = config(&["http://127.0.0.1:9/KEY", "http://127.0.0.1:9/KEY", "http://127.0.0.1:9/KEY"], 0);
        let (mut f, _) = RegistryFollower::new(cfg, Arc::new(MemoryProgress::default())).unwrap();
        assert_eq!((f.quorum(), f.endpoints()), (2, 3));
        let e = f.poll().await.unwrap_err();
        assert_eq!(e.label(), "disagreement");
        let FollowError::NoQuorum(q) = &e else { panic!("{e}") };
        assert_eq!((q.needed, q.endpoints, q.largest), (2, 3, 0));
        assert_eq!(
            q.failures.iter().map(|f| (f.index, f.label)).collect::<Vec<_>>(),
            [(0, "rpc_error"), (1, "rpc_error"), (2, "rpc_error")]
        );
        let text = e.to_string();
        assert!(text.contains("RPC endpoint #2") && !text.contains("KEY") && !text.contains("127.0.0.1"), "{text}");
        assert_eq!(f.view(), &RegistryView::default());
    }
}
