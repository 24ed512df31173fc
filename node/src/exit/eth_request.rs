//! `EthRequest`: a user's contract call, paid with a shielded note and sent
//! by the exit as `NoxPool.relay` from its own wallet.
//!
//! The user never signs a transaction: the request carries the call (target,
//! gas, calldata) and a Groth16 spend proof whose public inputs name this
//! exit's wallet as recipient and bind the exact call (the execution hash).
//! The exit pays the gas and is paid the spend's public value by the pool in
//! the same transaction. Everything the exit pays for must therefore be
//! checked *before* it sends: a relay that reverts costs the exit gas and
//! pays it nothing.
//!
//! ## The checks, in order (docs/protocol.md, "Paid calls at the exit")
//!
//! Each failure is an [`EthRefusal`] — its code, words and detail — sent as
//! the reply's data, and nothing is sent on chain:
//!
//! 1. the request's chain is the exit's (`WrongChain`); the payment's ranges
//!    and the proof's points (`Malformed`);
//! 2. the deadline leaves at least `exit.eth_min_deadline_secs` (`Expired`,
//!    detail: the earliest deadline accepted now); the recipient is this
//!    exit's wallet (`WrongRecipient`); the execution hash is this call's,
//!    deadline included (`WrongExecution`); the call's gas is within
//!    `exit.eth_max_call_gas` (`GasAboveCap`); the asset is one the fee
//!    policy lists, ETH or a token of `exit.eth_fee_tokens`
//!    (`AssetNotAccepted`); a token must have a fresh price in the node's
//!    [`PriceFeed`] now, and so must ETH (`NoPrice`, status `Busy`: checked
//!    here, before the chain is asked or the proof verified, so a request the
//!    exit cannot price costs it nothing);
//! 3. a request with the nullifier of a transaction the exit already sent is
//!    answered with that transaction (see "Deduplication");
//! 4. the pool knows the root (`UnknownRoot`); the nullifier is unspent on
//!    chain (`NullifierSpent`) and not being relayed by this exit for another
//!    request (`NullifierPending`);
//! 5. the proof verifies, natively, against the verifying key prepared at
//!    start (`BadProof`);
//! 6. `eth_simulateV1` of the exact relay transaction from the exit's wallet
//!    at the latest block: it must not revert (`SimulationReverted`); the
//!    `Relayed` event's `success` flag says whether the user's call
//!    succeeded — a failing call is relayed only with `allow_failure`
//!    (`CallFails`, with the call's revert data from an `eth_call` from the
//!    pool's executor);
//! 7. the fee covers the cost with the margin (`FeeTooLow`, detail: the
//!    lowest fee accepted, in the asset's base units). Cost = simulated gas
//!    used × the max fee per gas the exit signs, `min(2 × base fee of the
//!    latest block + priority fee, exit.eth_max_fee_per_gas_gwei)` — the most
//!    the transaction can cost at the simulated gas, in wei — plus the change
//!    note's insertion bounty the relay sends as its value
//!    (`nox_protocol::contracts::insertion_bounty`, 2 × base fee × 40,000
//!    gas); the fee must be
//!    at least `FeePolicy::fee_in`: `FeePolicy::fee_for(cost)` = cost × (1 +
//!    margin) for ETH, and for a token `fee_for(PriceBook::wei_to_token(cost))`
//!    — the cost converted at the median of the fresh trusted oracle quotes,
//!    rounded up. A price gone stale since step 2 is `NoPrice` here;
//! 8. the transaction goes through the [`super::nonce::TxSender`] (recorded
//!    durably before it is broadcast) and the answer is the
//!    [`EthReceipt`] once it is mined, or `NoReceipt` with its hash after
//!    `exit.eth_receipt_timeout_secs`.
//!
//! Upstream failures on the way are `Upstream`; more than
//! `exit.eth_max_in_flight` paid calls at once, or a base fee above the
//! exit's cap, are `Busy`. Statuses: `BadRequest` for `WrongChain` and
//! `Malformed`, `Failed` for `Upstream` and `NoReceipt`, `Busy` for `Busy`
//! and `NoPrice`, `Refused` for every other code.
//!
//! ## Deduplication
//!
//! A client that retries over another route sends the same payment under a
//! new request id, which the [`super::ReplyBook`] does not recognise. The
//! nullifier does: a request whose payment, call and flags are identical to
//! one being served waits for that one's answer; one identical to a request
//! whose transaction is in the ledger is answered with that transaction's
//! receipt (waiting for it if it is still pending) — also after a restart.
//! The same nullifier with another call is `NullifierPending` (or `Spent`).
//!
//! ## Flush
//!
//! A relay queues its change note in the pool; queued leaves enter the tree
//! in batches (`NoxPool.flush`, docs/protocol.md §11.4), and each prepaid its
//! share in the pool's insertion bounty, which pays whoever flushes. Every
//! `exit.eth_flush_every_secs` the exit reads the pool's queue and, when a
//! closed segment (32 leaves) waits, flushes up to
//! `exit.eth_flush_max_segments` of them — whoever's leaves they hold —
//! through the same nonce ledger; with `exit.eth_flush_open_after_secs` set
//! it also flushes the open segment once its first leaf has waited that long.
//! The leaves
//! and their bounties come from the pool's `Queued` logs (see
//! [`super::pool_queue`]).
//! Nothing is sent while one of its flushes is pending. Counted as
//! `nox_events_total{kind="exit_eth_flush"}`: `flushes`, `leaves`,
//! `gas_used`, `bounty_gwei`, `raced` (someone else flushed first),
//! `missing_leaves`, `failed`.
//!
//! Counted as `nox_events_total{kind="exit_eth_request",outcome}`: `request`,
//! `ok`, `duplicate`, `gas_used` (summed), and one outcome per refusal code
//! (`EthRefusalCode::label`). Nothing about a request (target, nullifier,
//! hash) is logged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::eips::BlockNumberOrTag;
use alloy::network::TransactionBuilder;
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::{RpcError, TransportErrorKind};
use alloy_primitives::{Address, B256, Bytes, Log, U256, keccak256};
use alloy_sol_types::{SolCall, SolError, SolEvent, SolInterface};
use ark_bn254::{Bn254, Fr};
use ark_groth16::PreparedVerifyingKey;
use futures::future::BoxFuture;
use nox_eth::EthClient;
use nox_protocol::answer::{EthReceipt, EthRefusal, EthRefusalCode};
use nox_protocol::contracts::NoxPool;
use nox_protocol::descriptor::FeePolicy;
use nox_protocol::payload::{ReplyStatus, Request};
use nox_protocol::payment::GasPayment;
use nox_protocol::price::{ETH, NoPrice};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::nonce::{
    ChainPort, LedgerError, MinedTx, RelayInfo, SendError, SenderConfig, SubmitError, Submitted, TxLedger, TxPurpose,
    TxRecord, TxSender, TxState, Unsigned,
};
use super::outcomes::ServiceOutcomes;
use super::pool_queue::QueueState;
use super::service::{ExitService, RequestContext, ServiceError};
use crate::config::ExitSection;
use crate::metrics::Metrics;
use crate::prices::PriceFeed;

/// The metrics kind of requests.
pub const KIND: &str = "exit_eth_request";
/// The metrics kind of flushes.
pub const FLUSH_KIND: &str = "exit_eth_flush";
/// Blocks one `eth_getLogs` of the flusher spans at most.
const FLUSH_LOG_WINDOW: u64 = 5_000;
/// Gas the simulation gives the relay beyond the call's own gas (proof
/// verification, the pool's bookkeeping, the payment).
const SIMULATION_OVERHEAD_GAS: u64 = 2_000_000;
/// How often the ledger's pending transactions are looked at.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(1);

/// Settings of the service (`[exit]`, `eth_*`).
#[derive(Debug, Clone)]
pub struct EthRequestConfig {
    /// `exit.rpc_url`.
    pub rpc_url: String,
    /// `exit.upstream_timeout_ms`.
    pub rpc_timeout: Duration,
    /// `chain.chain_id` when `[chain]` is configured.
    pub expected_chain_id: Option<u64>,
    /// `exit.eth_pool`.
    pub pool: Address,
    /// `exit.eth_wallet_key_file`.
    pub wallet_key_file: PathBuf,
    /// `exit.eth_verifying_key`.
    pub verifying_key: PathBuf,
    /// `exit.eth_margin_bps`.
    pub margin_bps: u16,
    /// `exit.eth_max_call_gas`.
    pub max_call_gas: u64,
    /// `exit.eth_max_fee_per_gas_gwei`, in wei.
    pub max_fee_per_gas: u128,
    /// `exit.eth_receipt_timeout_secs`.
    pub receipt_timeout: Duration,
    /// `exit.eth_bump_after_secs`.
    pub bump_after: Duration,
    /// `exit.eth_flush_every_secs`.
    pub flush_every: Duration,
    /// `exit.eth_flush_max_segments`.
    pub flush_max_segments: usize,
    /// `exit.eth_flush_open_after_secs` (zero: never).
    pub flush_open_after: Duration,
    /// `exit.eth_min_deadline_secs`.
    pub min_deadline: Duration,
    /// `exit.eth_max_in_flight`.
    pub max_in_flight: usize,
    /// `exit.eth_fee_tokens`: the tokens accepted besides ETH.
    pub fee_tokens: Vec<[u8; 20]>,
}

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum EthSetupError {
    /// A required key is unset.
    #[error("{0} is required when exit.eth_request is on")]
    Missing(&'static str),
    /// `exit.eth_pool` is not an address.
    #[error("exit.eth_pool `{0}` is not an address")]
    BadPool(String),
    /// The wallet key file cannot be used.
    #[error("exit.eth_wallet_key_file {path}: {reason}")]
    WalletKey {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The verifying key does not load.
    #[error("exit.eth_verifying_key {path}: {reason}")]
    VerifyingKey {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The upstream failed at start.
    #[error("exit.rpc_url: {0}")]
    Upstream(String),
    /// The upstream serves another chain.
    #[error("the exit's upstream serves chain {actual}, but chain.chain_id is {expected}")]
    WrongChain {
        /// `chain.chain_id`.
        expected: u64,
        /// `eth_chainId`.
        actual: u64,
    },
    /// Nothing is deployed at `exit.eth_pool`.
    #[error("exit.eth_pool {0} has no code on the upstream's chain")]
    NoPoolCode(Address),
    /// The ledger does not open.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// `exit.eth_fee_tokens` without a price book.
    #[error("exit.eth_fee_tokens needs prices.oracle_keys: token fees are priced by the oracles")]
    NoPriceBook,
    /// The price book prices another chain than the exit relays on.
    #[error("[prices] prices chain {prices}, but the exit relays on chain {exit}; set prices.chain_id = {exit}")]
    PriceChain {
        /// The book's chain.
        prices: u64,
        /// The exit's.
        exit: u64,
    },
}

impl EthRequestConfig {
    /// The settings `[exit]` gives, if `exit.eth_request` is on.
    pub fn from_section(exit: &ExitSection, chain_id: Option<u64>) -> Result<Option<Self>, EthSetupError> {
        if !exit.eth_request {
            return Ok(None);
        }
        let rpc_url = exit.rpc_url.clone().ok_or(EthSetupError::Missing("exit.rpc_url"))?;
        let key = exit.eth_wallet_key_file.clone().ok_or(EthSetupError::Missing("exit.eth_wallet_key_file"))?;
        let pool = exit.eth_pool.clone().ok_or(EthSetupError::Missing("exit.eth_pool"))?;
        let vk = exit.eth_verifying_key.clone().ok_or(EthSetupError::Missing("exit.eth_verifying_key"))?;
        Ok(Some(EthRequestConfig {
            rpc_url,
            rpc_timeout: Duration::from_millis(exit.upstream_timeout_ms),
            expected_chain_id: chain_id,
            pool: pool.parse().map_err(|_| EthSetupError::BadPool(pool.clone()))?,
            wallet_key_file: key.into(),
            verifying_key: vk.into(),
            margin_bps: exit.eth_margin_bps,
            max_call_gas: exit.eth_max_call_gas,
            max_fee_per_gas: u128::from(exit.eth_max_fee_per_gas_gwei) * 1_000_000_000,
            receipt_timeout: Duration::from_secs(exit.eth_receipt_timeout_secs),
            bump_after: Duration::from_secs(exit.eth_bump_after_secs),
            flush_every: Duration::from_secs(exit.eth_flush_every_secs),
            flush_max_segments: exit.eth_flush_max_segments,
            flush_open_after: Duration::from_secs(exit.eth_flush_open_after_secs),
            min_deadline: Duration::from_secs(exit.eth_min_deadline_secs),
            max_in_flight: exit.eth_max_in_flight,
            fee_tokens: exit.fee_token_addresses(),
        }))
    }
}

/// Reads a hex private key from `path`, refusing a file readable by group or others.
pub fn read_wallet_key(path: &Path) -> Result<PrivateKeySigner, EthSetupError> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |reason: String| EthSetupError::WalletKey { path: path.to_owned(), reason };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(bad(format!("mode {:o} lets others read the key; chmod 600 it", mode & 0o777)));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let hex = text.trim();
    let hex = hex.strip_prefix("0x").unwrap_or(hex);
    hex.parse::<PrivateKeySigner>().map_err(|_| bad("not a hex secp256k1 private key".into()))
}

/// The exit's upstream as the transaction sender sees it.
struct RpcPort {
    eth: EthClient,
}

impl ChainPort for RpcPort {
    fn nonce(&self, wallet: Address, pending: bool) -> BoxFuture<'_, Result<u64, String>> {
        Box::pin(async move {
            let q = self.eth.provider().get_transaction_count(wallet);
            let q = if pending { q.pending() } else { q.latest() };
            q.await.map_err(|e| self.eth.rpc_error("eth_getTransactionCount", e).to_string())
        })
    }

    fn send_raw(&self, raw: Vec<u8>) -> BoxFuture<'_, Result<(), SendError>> {
        Box::pin(async move {
            match self.eth.provider().send_raw_transaction(&raw).await {
                Ok(_) => Ok(()),
                Err(RpcError::ErrorResp(p)) => {
                    let m = p.message.to_lowercase();
                    if m.contains("already known") || m.contains("known transaction") || m.contains("already imported")
                    {
                        Ok(())
                    } else {
                        Err(SendError::Refused(format!("{} (code {})", p.message, p.code)))
                    }
                }
                Err(e) => Err(SendError::Unknown(self.eth.rpc_error("eth_sendRawTransaction", e).to_string())),
            }
        })
    }

    fn receipt(&self, hash: [u8; 32]) -> BoxFuture<'_, Result<Option<MinedTx>, String>> {
        Box::pin(async move {
            let r = self
                .eth
                .provider()
                .get_transaction_receipt(B256::from(hash))
                .await
                .map_err(|e| self.eth.rpc_error("eth_getTransactionReceipt", e).to_string())?;
            Ok(r.and_then(|r| {
                // A receipt without a block is not mined yet.
                Some(MinedTx {
                    hash,
                    block: r.block_number?,
                    success: r.status(),
                    gas_used: r.gas_used,
                    effective_gas_price: r.effective_gas_price,
                    logs: r.inner.logs().iter().map(|l| l.inner.clone()).collect(),
                })
            }))
        })
    }
}

/// What a served request waits on when a copy of it is already being served.
type Answer = Result<Vec<u8>, ServiceError>;

struct Serving {
    digest: [u8; 32],
    answer: watch::Receiver<Option<Answer>>,
}

struct FlushCounters {
    flushes: Counter,
    leaves: Counter,
    gas_used: Counter,
    bounty_gwei: Counter,
    raced: Counter,
    missing_leaves: Counter,
    failed: Counter,
}

struct Inner {
    cfg: EthRequestConfig,
    eth: EthClient,
    chain_id: u64,
    /// `NoxPool.executor()`, looked up once.
    executor: tokio::sync::OnceCell<Address>,
    pvk: PreparedVerifyingKey<Bn254>,
    sender: Arc<TxSender>,
    policy: FeePolicy,
    prices: Arc<PriceFeed>,
    slots: Arc<Semaphore>,
    serving: Mutex<HashMap<[u8; 32], Serving>>,
    outcomes: ServiceOutcomes,
    gas_used: Counter,
    flush: FlushCounters,
    crash_after_broadcast: AtomicBool,
}

/// Relays paid calls (see the module docs).
#[derive(Clone)]
pub struct EthRequestService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EthRequestService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthRequestService").field("wallet", &self.inner.sender.wallet()).finish_non_exhaustive()
    }
}

fn refusal(code: EthRefusalCode, message: impl Into<String>) -> EthRefusal {
    EthRefusal::new(code, message)
}

/// The reply status of a refusal code.
pub fn status_of(code: EthRefusalCode) -> ReplyStatus {
    match code {
        EthRefusalCode::WrongChain | EthRefusalCode::Malformed => ReplyStatus::BadRequest,
        EthRefusalCode::Upstream | EthRefusalCode::NoReceipt => ReplyStatus::Failed,
        EthRefusalCode::Busy | EthRefusalCode::NoPrice => ReplyStatus::Busy,
        _ => ReplyStatus::Refused,
    }
}

impl From<EthRefusal> for ServiceError {
    fn from(r: EthRefusal) -> Self {
        let status = status_of(r.code);
        match r.encode() {
            Ok(data) => ServiceError::Typed { status, data },
            Err(e) => ServiceError::Failed(e.to_string()),
        }
    }
}

fn word(x: &[u8; 32]) -> U256 {
    U256::from_be_bytes(*x)
}

fn no_price(e: NoPrice) -> EthRefusal {
    refusal(
        EthRefusalCode::NoPrice,
        format!("this exit cannot price the fee's token now ({e}); retry later or pay in ETH"),
    )
}

fn upstream(e: impl std::fmt::Display) -> EthRefusal {
    tracing::debug!(error = %e, "exit: eth_request upstream failure");
    refusal(EthRefusalCode::Upstream, "the exit's Ethereum upstream failed; nothing was sent")
}

/// The simulated relay.
struct Simulation {
    gas_used: u64,
    call_success: bool,
    elapsed_us: u32,
}

/// The request's parts the service uses, taken out of [`Request::EthRequest`].
struct Call {
    chain_id: u64,
    target: [u8; 20],
    call_gas: u64,
    deadline: u64,
    allow_failure: bool,
    calldata: Vec<u8>,
    payment: GasPayment,
}

impl Call {
    fn digest(&self) -> [u8; 32] {
        let mut bytes = Vec::with_capacity(600 + self.calldata.len());
        bytes.extend_from_slice(&self.payment.encode());
        bytes.extend_from_slice(&self.chain_id.to_be_bytes());
        bytes.extend_from_slice(&self.target);
        bytes.extend_from_slice(&self.call_gas.to_be_bytes());
        bytes.extend_from_slice(&self.deadline.to_be_bytes());
        bytes.push(u8::from(self.allow_failure));
        bytes.extend_from_slice(&self.calldata);
        keccak256(bytes).0
    }

    fn relay_data(&self) -> Vec<u8> {
        let (proof, inputs) = nox_protocol::contracts::pool_spend(&self.payment);
        NoxPool::relayCall {
            proof,
            inputs,
            target: Address::from(self.target),
            callGas: U256::from(self.call_gas),
            deadline: U256::from(self.deadline),
            data: Bytes::from(self.calldata.clone()),
        }
        .abi_encode()
    }
}

/// Removes a request's entry from the map of requests being served when it
/// ends (also when its future is dropped at the deadline).
struct ServingGuard<'a> {
    inner: &'a Inner,
    nullifier: [u8; 32],
    tx: watch::Sender<Option<Answer>>,
}

impl Drop for ServingGuard<'_> {
    fn drop(&mut self) {
        self.inner.serving.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.nullifier);
    }
}

impl EthRequestService {
    /// Loads the wallet and the verifying key, checks the upstream (chain id,
    /// pool code, wallet funds), opens the ledger in `db`, and starts the
    /// maintenance task (reconciliation, re-sending, flushes), which ends
    /// when `stop` is set or its handle is aborted. Token fees are priced
    /// with `prices`, which must price the exit's chain when
    /// `cfg.fee_tokens` is not empty.
    pub async fn start(
        cfg: EthRequestConfig,
        db: Arc<redb::Database>,
        prices: Arc<PriceFeed>,
        metrics: &Metrics,
        stop: Arc<AtomicBool>,
    ) -> Result<(Self, JoinHandle<()>), EthSetupError> {
        let signer = read_wallet_key(&cfg.wallet_key_file)?;
        let wallet = signer.address();
        let vk = {
            let path = cfg.verifying_key.clone();
            tokio::task::spawn_blocking(move || nox_circuits::groth16::read_verifying_key(&path))
                .await
                .map_err(|e| EthSetupError::VerifyingKey { path: cfg.verifying_key.clone(), reason: e.to_string() })?
                .map_err(|e| EthSetupError::VerifyingKey { path: cfg.verifying_key.clone(), reason: e.to_string() })?
        };
        let pvk = nox_circuits::groth16::prepare(&vk);
        let eth =
            EthClient::new(&cfg.rpc_url, cfg.rpc_timeout, None).map_err(|e| EthSetupError::Upstream(e.to_string()))?;
        // An upstream that does not answer yet stops the start only if the
        // chain id cannot be known otherwise (`chain.chain_id`): the
        // descriptor's fee policy names it.
        let chain_id = match (eth.chain_id().await, cfg.expected_chain_id) {
            (Ok(actual), Some(expected)) if actual != expected => {
                return Err(EthSetupError::WrongChain { expected, actual });
            }
            (Ok(actual), _) => actual,
            (Err(e), Some(expected)) => {
                tracing::warn!(error = %e, "exit: the upstream does not answer yet; paid calls wait for it");
                expected
            }
            (Err(e), None) => return Err(EthSetupError::Upstream(e.to_string())),
        };
        if !cfg.fee_tokens.is_empty() {
            match prices.trust() {
                None => return Err(EthSetupError::NoPriceBook),
                Some(t) if t.chain_id != chain_id => {
                    return Err(EthSetupError::PriceChain { prices: t.chain_id, exit: chain_id });
                }
                Some(_) => {}
            }
        }
        match eth.code_at(cfg.pool).await {
            Ok(code) if code.is_empty() => return Err(EthSetupError::NoPoolCode(cfg.pool)),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "exit: cannot check the pool's code yet"),
        }
        let executor = tokio::sync::OnceCell::new();
        if let Ok(a) = eth.view("NoxPool", cfg.pool, NoxPool::executorCall {}).await {
            let _ = executor.set(a);
        }
        match eth.balance(wallet).await {
            Ok(b) if b.is_zero() => tracing::warn!(
                %wallet,
                "exit: the eth_request wallet holds no ETH; every relay will fail until it is funded"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "exit: cannot read the eth_request wallet's balance"),
        }
        let ledger = TxLedger::open(db, wallet)?;
        let port: Arc<dyn ChainPort> = Arc::new(RpcPort { eth: eth.clone() });
        let sender_cfg = SenderConfig { chain_id, bump_after: cfg.bump_after, max_fee_per_gas: cfg.max_fee_per_gas };
        let sender = Arc::new(TxSender::new(ledger, port, signer, sender_cfg, stop.clone()));
        let policy = FeePolicy {
            wallet: wallet.0.0,
            pool: cfg.pool.0.0,
            chain_id,
            margin_bps: cfg.margin_bps,
            assets: std::iter::once(ETH).chain(cfg.fee_tokens.iter().copied()).collect(),
        };
        let mut outcomes: Vec<&'static str> = vec!["request", "ok", "duplicate"];
        outcomes.extend(EthRefusalCode::ALL.iter().map(|c| c.label()));
        let inner = Arc::new(Inner {
            slots: Arc::new(Semaphore::new(cfg.max_in_flight.max(1))),
            cfg,
            eth,
            chain_id,
            executor,
            pvk,
            sender,
            policy,
            prices,
            serving: Mutex::new(HashMap::new()),
            outcomes: ServiceOutcomes::new(metrics, KIND, &outcomes),
            gas_used: metrics.event(KIND, "gas_used"),
            flush: FlushCounters {
                flushes: metrics.event(FLUSH_KIND, "flushes"),
                leaves: metrics.event(FLUSH_KIND, "leaves"),
                gas_used: metrics.event(FLUSH_KIND, "gas_used"),
                bounty_gwei: metrics.event(FLUSH_KIND, "bounty_gwei"),
                raced: metrics.event(FLUSH_KIND, "raced"),
                missing_leaves: metrics.event(FLUSH_KIND, "missing_leaves"),
                failed: metrics.event(FLUSH_KIND, "failed"),
            },
            crash_after_broadcast: AtomicBool::new(false),
        });
        tracing::info!(%wallet, chain_id, "exit: paid calls (EthRequest) on");
        let task = tokio::spawn(maintain(inner.clone(), stop));
        Ok((EthRequestService { inner }, task))
    }

    /// The fee policy the exit's descriptors carry.
    pub fn fee_policy(&self) -> FeePolicy {
        self.inner.policy.clone()
    }

    /// The exit's wallet.
    pub fn wallet(&self) -> Address {
        self.inner.sender.wallet()
    }

    /// The transaction sender (tests and metrics).
    pub fn sender(&self) -> &Arc<TxSender> {
        &self.inner.sender
    }

    /// Test fault: stop after the next relay's broadcast (see
    /// [`crate::faults::Faults::exit_crash_after_broadcast`]).
    #[cfg(feature = "test-harness")]
    pub fn crash_after_broadcast(&self) {
        self.inner.crash_after_broadcast.store(true, Ordering::SeqCst);
    }
}

impl ExitService for EthRequestService {
    fn name(&self) -> &'static str {
        "eth_request"
    }

    fn serve(&self, ctx: RequestContext, request: Request) -> BoxFuture<'static, Result<Vec<u8>, ServiceError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let Request::EthRequest { chain_id, target, call_gas, deadline, allow_failure, calldata, payment } =
                request
            else {
                return Err(ServiceError::BadRequest("not an EthRequest".into()));
            };
            inner.outcomes.inc("request");
            let call = Call { chain_id, target, call_gas, deadline, allow_failure, calldata, payment: *payment };
            let result = inner.serve(call, ctx.deadline).await;
            match &result {
                Ok(_) => inner.outcomes.inc("ok"),
                Err(r) => inner.outcomes.inc(r.code.label()),
            }
            result.map_err(ServiceError::from)
        })
    }
}

impl Inner {
    async fn serve(&self, call: Call, deadline: Instant) -> Result<Vec<u8>, EthRefusal> {
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            return Err(refusal(EthRefusalCode::Busy, "the exit is at its limit of paid calls in flight"));
        };
        if !self.sender.is_reconciled() {
            return Err(refusal(EthRefusalCode::Busy, "the exit's wallet is not reconciled with the chain yet"));
        }
        // 1. Chain, shape.
        if call.chain_id != self.chain_id {
            return Err(refusal(EthRefusalCode::WrongChain, format!("this exit serves chain {}", self.chain_id)));
        }
        call.payment.check().map_err(|e| refusal(EthRefusalCode::Malformed, e.to_string()))?;
        let proof = nox_circuits::groth16::decode_proof(&call.payment.proof)
            .map_err(|e| refusal(EthRefusalCode::Malformed, e.to_string()))?;
        let public = public_inputs(&call.payment)
            .ok_or_else(|| refusal(EthRefusalCode::Malformed, "a public input is not a BN254 scalar-field element"))?;
        // 2. What only this exit and this call can be.
        let earliest = unix_now().saturating_add(self.cfg.min_deadline.as_secs());
        if call.deadline < earliest {
            let mut r = refusal(
                EthRefusalCode::Expired,
                format!(
                    "the deadline is past or less than {} s away: too near to get the relay mined",
                    self.cfg.min_deadline.as_secs()
                ),
            );
            r.detail = earliest.to_be_bytes().to_vec();
            return Err(r);
        }
        let inputs = &call.payment.inputs;
        if inputs.recipient_address() != Some(self.policy.wallet) {
            return Err(refusal(EthRefusalCode::WrongRecipient, "the payment names another recipient than this exit"));
        }
        let expected = nox_circuits::pool::execution_hash(&nox_circuits::pool::Execution {
            chain_id: self.chain_id,
            pool: &self.policy.pool,
            target: &call.target,
            call_gas: call.call_gas,
            deadline: call.deadline,
            data: &call.calldata,
        });
        if public.execution_hash != expected {
            return Err(refusal(
                EthRefusalCode::WrongExecution,
                "the execution hash is not this call's (chain, pool, target, gas, deadline, calldata)",
            ));
        }
        if call.call_gas > self.cfg.max_call_gas {
            return Err(refusal(
                EthRefusalCode::GasAboveCap,
                format!("call gas above this exit's cap of {}", self.cfg.max_call_gas),
            ));
        }
        let asset = inputs.asset_address().unwrap_or_default();
        if !self.policy.accepts(&asset) {
            let what =
                if self.policy.assets.len() == 1 { "in ETH only" } else { "in ETH and the tokens of its fee policy" };
            return Err(refusal(EthRefusalCode::AssetNotAccepted, format!("this exit takes fees {what}")));
        }
        self.prices.check_priced(&asset).map_err(no_price)?;
        // 3. The same payment again.
        let nullifier = inputs.nullifier;
        let digest = call.digest();
        let guard = match self.claim(nullifier, digest) {
            Claim::Wait(mut rx) => {
                self.outcomes.inc("duplicate");
                return wait_for_copy(&mut rx).await;
            }
            Claim::Pending => {
                return Err(refusal(
                    EthRefusalCode::NullifierPending,
                    "this exit is relaying another request that spends the same note",
                ));
            }
            Claim::Serve(guard) => guard,
        };
        let existing = self.sender.with_ledger(|l| l.relay_of(&nullifier).cloned());
        let answer = match existing {
            Some(rec) if rec.relay().is_some_and(|r| r.request_digest == digest) => {
                self.outcomes.inc("duplicate");
                self.answer_from_record(rec, deadline, false).await
            }
            Some(rec) if rec.state == TxState::Pending => Err(refusal(
                EthRefusalCode::NullifierPending,
                "this exit is relaying another request that spends the same note",
            )),
            _ => self.relay(&call, &public, &proof, digest, deadline).await,
        };
        let _ = guard.tx.send(Some(answer.clone().map_err(ServiceError::from)));
        drop(guard);
        answer
    }

    fn claim(&self, nullifier: [u8; 32], digest: [u8; 32]) -> Claim<'_> {
        let mut serving = self.serving.lock().unwrap_or_else(|e| e.into_inner());
        match serving.get(&nullifier) {
            Some(s) if s.digest == digest => Claim::Wait(s.answer.clone()),
            Some(_) => Claim::Pending,
            None => {
                let (tx, rx) = watch::channel(None);
                serving.insert(nullifier, Serving { digest, answer: rx });
                Claim::Serve(ServingGuard { inner: self, nullifier, tx })
            }
        }
    }

    /// Steps 4 to 8 of the module docs.
    async fn relay(
        &self,
        call: &Call,
        public: &nox_circuits::spend::PublicInputs,
        proof: &ark_groth16::Proof<Bn254>,
        digest: [u8; 32],
        deadline: Instant,
    ) -> Result<Vec<u8>, EthRefusal> {
        let pool = self.cfg.pool;
        let inputs = &call.payment.inputs;
        // 4. Chain state.
        let known = self
            .eth
            .view("NoxPool", pool, NoxPool::knownRootsCall { root: word(&inputs.root) })
            .await
            .map_err(upstream)?;
        if !known {
            return Err(refusal(EthRefusalCode::UnknownRoot, "the pool has never had this root"));
        }
        let spent = self
            .eth
            .view("NoxPool", pool, NoxPool::nullifierSpentCall { nullifier: word(&inputs.nullifier) })
            .await
            .map_err(upstream)?;
        if spent {
            return Err(refusal(EthRefusalCode::NullifierSpent, "the note was already spent"));
        }
        // 5. The proof, off the async threads.
        let ok = {
            let (pvk, public, proof) = (self.pvk.clone(), *public, proof.clone());
            tokio::task::spawn_blocking(move || nox_circuits::groth16::verify(&pvk, &public, &proof))
                .await
                .unwrap_or(false)
        };
        if !ok {
            return Err(refusal(EthRefusalCode::BadProof, "the spend proof does not verify"));
        }
        // 6. Fees now, then the exact transaction, simulated.
        let Fees { max_fee, prio, base } = self.fees().await?;
        let bounty = nox_protocol::contracts::insertion_bounty(base);
        let data = call.relay_data();
        let sim = self.simulate(&data, bounty, call.call_gas, max_fee, prio).await?;
        let mut revert_data = Vec::new();
        if !sim.call_success {
            revert_data = self.call_revert_data(call).await;
            if !call.allow_failure {
                let mut r = refusal(EthRefusalCode::CallFails, "the call fails in the exit's simulation");
                r.detail = revert_data;
                return Err(r);
            }
        }
        // 7. Price.
        let fee = inputs.public_value().unwrap_or(0);
        let cost = u128::from(sim.gas_used).saturating_mul(max_fee).saturating_add(bounty);
        let asset = inputs.asset_address().unwrap_or_default();
        let now = self.prices.now_ms();
        let required = self.prices.with_book(|book| self.policy.fee_in(&asset, cost, book, now)).map_err(no_price)?;
        if fee < required {
            let unit = if asset == ETH { "wei" } else { "the token's base units, at the oracles' price" };
            let mut r = refusal(
                EthRefusalCode::FeeTooLow,
                format!(
                    "the fee does not cover the gas cost with this exit's margin of {} bps (lowest fee in the detail, in {unit})",
                    self.policy.margin_bps
                ),
            );
            r.detail = required.to_be_bytes().to_vec();
            return Err(r);
        }
        // 8. Send, then wait.
        let gas_limit = (sim.gas_used.saturating_mul(5) / 4)
            .saturating_add(call.call_gas.saturating_mul(64) / 63)
            .saturating_add(10_000)
            .min(30_000_000);
        let info = RelayInfo {
            nullifier: inputs.nullifier,
            request_digest: digest,
            fee,
            asset: inputs.asset_address().unwrap_or_default(),
            simulate_us: sim.elapsed_us,
            revert_data,
        };
        let tx = Unsigned {
            to: pool,
            value: bounty,
            data,
            gas_limit,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: prio,
        };
        let nullifier = inputs.nullifier;
        let submitted = self
            .sender
            .submit(tx, TxPurpose::Relay(info), |l| {
                l.relay_of(&nullifier).filter(|r| r.state != TxState::Dropped).cloned()
            })
            .await;
        let rec = match submitted {
            Ok(Submitted::New(rec)) => rec,
            Ok(Submitted::Existing(rec)) if rec.relay().is_some_and(|r| r.request_digest == digest) => rec,
            Ok(Submitted::Existing(_)) => {
                return Err(refusal(
                    EthRefusalCode::NullifierPending,
                    "this exit is relaying another request that spends the same note",
                ));
            }
            Err(SubmitError::Refused(e)) => {
                tracing::warn!(error = %e, "exit: the upstream refused a relay transaction");
                return Err(refusal(
                    EthRefusalCode::Upstream,
                    "the exit's upstream refused the transaction; nothing was sent",
                ));
            }
            Err(SubmitError::NotReady) => {
                return Err(refusal(EthRefusalCode::Busy, "the exit's wallet is not reconciled with the chain yet"));
            }
            Err(e) => {
                tracing::warn!(error = %e, "exit: a relay transaction was not sent");
                return Err(refusal(EthRefusalCode::Upstream, "the exit could not send the transaction"));
            }
        };
        if self.crash_after_broadcast.load(Ordering::SeqCst) {
            self.sender.stop();
            return Err(refusal(EthRefusalCode::Upstream, "test fault: the exit stopped after the broadcast"));
        }
        self.answer_from_record(rec, deadline, true).await
    }

    /// Waits for `rec` to be mined (within the receipt bound and the
    /// request's deadline) and answers with its receipt, or `NoReceipt`;
    /// `count_gas` for the request that sent it (not for its repeats).
    async fn answer_from_record(
        &self,
        rec: TxRecord,
        deadline: Instant,
        count_gas: bool,
    ) -> Result<Vec<u8>, EthRefusal> {
        let started = Instant::now();
        let until = deadline.min(started + self.cfg.receipt_timeout);
        let hash = rec.hash();
        let Some((rec, m)) = self.sender.wait_mined(rec.nonce, tokio::time::Instant::from_std(until)).await else {
            let mut r = refusal(EthRefusalCode::NoReceipt, "the transaction was sent but is not mined yet");
            r.detail = hash.to_vec();
            return Err(r);
        };
        let Some(info) = rec.relay() else {
            return Err(refusal(EthRefusalCode::Upstream, "the ledger holds another transaction under this nonce"));
        };
        if count_gas {
            self.gas_used.inc_by(m.gas_used);
        }
        let call_success = relayed_success(&m.logs, self.cfg.pool).unwrap_or(false);
        let inclusion_ms = rec_inclusion_ms(&rec);
        let receipt = EthReceipt {
            tx_hash: m.hash,
            block_number: m.block,
            tx_success: m.success,
            gas_used: m.gas_used,
            effective_gas_price: m.effective_gas_price,
            call_success,
            asset: info.asset,
            fee: info.fee,
            simulate_us: info.simulate_us,
            inclusion_ms,
            revert_data: info.revert_data.clone(),
        };
        receipt.encode().map_err(|e| refusal(EthRefusalCode::Upstream, e.to_string()))
    }

    /// The fees the exit signs now, or `Busy` when the base fee is above the
    /// cap.
    async fn fees(&self) -> Result<Fees, EthRefusal> {
        let (base, prio) = current_fees(&self.eth).await.map_err(upstream)?;
        let cap = self.cfg.max_fee_per_gas;
        if base.saturating_add(prio) > cap {
            return Err(refusal(EthRefusalCode::Busy, "gas is priced above this exit's cap; try later"));
        }
        Ok(Fees { max_fee: base.saturating_mul(2).saturating_add(prio).min(cap), prio, base })
    }

    async fn simulate(
        &self,
        data: &[u8],
        value: u128,
        call_gas: u64,
        max_fee: u128,
        prio: u128,
    ) -> Result<Simulation, EthRefusal> {
        let gas = call_gas.saturating_mul(64) / 63 + SIMULATION_OVERHEAD_GAS;
        let params = serde_json::json!([
            {
                "blockStateCalls": [{
                    "calls": [{
                        "from": self.sender.wallet(),
                        "to": self.cfg.pool,
                        "value": format!("0x{value:x}"),
                        "data": format!("0x{}", hex::encode(data)),
                        "gas": format!("0x{gas:x}"),
                        "maxFeePerGas": format!("0x{max_fee:x}"),
                        "maxPriorityFeePerGas": format!("0x{prio:x}"),
                    }]
                }],
                "validation": false,
            },
            "latest"
        ]);
        let started = Instant::now();
        let answer: serde_json::Value = self
            .eth
            .provider()
            .raw_request("eth_simulateV1".into(), params)
            .await
            .map_err(|e: RpcError<TransportErrorKind>| upstream(self.eth.rpc_error("eth_simulateV1", e)))?;
        let elapsed_us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        let c = &answer[0]["calls"][0];
        let hex_u64 =
            |v: &serde_json::Value| v.as_str().and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok());
        let status = hex_u64(&c["status"]).ok_or_else(|| upstream("eth_simulateV1: no call status"))?;
        let gas_used = hex_u64(&c["gasUsed"]).ok_or_else(|| upstream("eth_simulateV1: no gasUsed"))?;
        if status != 1 {
            let ret = c["returnData"].as_str().and_then(|s| hex::decode(s.trim_start_matches("0x")).ok());
            let why = ret.as_deref().map(describe_pool_revert).unwrap_or_else(|| "no revert data".into());
            return Err(refusal(EthRefusalCode::SimulationReverted, format!("the relay transaction reverts: {why}")));
        }
        let logs: Vec<Log> = c["logs"].as_array().map(|a| a.iter().filter_map(json_log).collect()).unwrap_or_default();
        let call_success = relayed_success(&logs, self.cfg.pool)
            .ok_or_else(|| upstream("eth_simulateV1: the relay emits no Relayed event"))?;
        Ok(Simulation { gas_used, call_success, elapsed_us })
    }

    /// The user's call's revert data, from an `eth_call` as the pool's
    /// executor makes it (empty if it does not revert there).
    async fn call_revert_data(&self, call: &Call) -> Vec<u8> {
        let pool = self.cfg.pool;
        let executor = self.executor.get_or_try_init(|| self.eth.view("NoxPool", pool, NoxPool::executorCall {})).await;
        let Ok(executor) = executor else { return Vec::new() };
        let tx = TransactionRequest::default()
            .with_from(*executor)
            .with_to(Address::from(call.target))
            .with_gas_limit(call.call_gas)
            .with_input(call.calldata.clone());
        match self.eth.provider().call(tx).await {
            Err(RpcError::ErrorResp(p)) => p.as_revert_data().map(|d| d.to_vec()).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// One flush round (see the module docs).
    async fn flush_round(&self) {
        let flushing = self.sender.with_ledger(|l| {
            l.records().any(|r| r.state == TxState::Pending && matches!(r.purpose, TxPurpose::Flush { .. }))
        });
        if flushing {
            return;
        }
        let pool = self.cfg.pool;
        let Ok(state) = self.eth.view("NoxPool", pool, NoxPool::queueStateCall {}).await else { return };
        let queue = QueueState::from(&state);
        let plan = queue.plan(self.cfg.flush_max_segments, !self.cfg.flush_open_after.is_zero());
        let Some(first) = plan.first() else { return };
        let Ok(first_block) = self
            .eth
            .view("NoxPool", pool, NoxPool::segmentCall { start: U256::from(first.start) })
            .await
            .map(|s| u64::try_from(s.firstBlock).unwrap_or(u64::MAX))
        else {
            return;
        };
        let (start, end) = (first.start, plan.last().map_or(first.end, |s| s.end));
        let mut leaves =
            match super::pool_queue::queued_leaves(&self.eth, pool, start, end, first_block, FLUSH_LOG_WINDOW).await {
                Ok(Some(leaves)) => leaves,
                Ok(None) => {
                    self.flush.missing_leaves.inc();
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "exit: reading the pool's queued leaves");
                    return;
                }
            };
        // The open segment goes in only once its first leaf has waited long enough.
        if let Some(open) = plan.last().filter(|s| s.open)
            && !self.waited(leaves.blocks[(open.start - start) as usize]).await
        {
            leaves.truncate((open.start - start) as usize);
            if leaves.leaves.is_empty() {
                return;
            }
        }
        let count = leaves.leaves.len() as u64;
        let data = NoxPool::flushCall { leaves: leaves.leaves, bounties: leaves.bounties }.abi_encode();
        let req = TransactionRequest::default().with_from(self.sender.wallet()).with_to(pool).with_input(data.clone());
        let gas = match self.eth.provider().estimate_gas(req).await {
            Ok(g) => g,
            Err(RpcError::ErrorResp(p)) => {
                let raced = p.as_revert_data().is_some_and(|d| {
                    d.starts_with(&NoxPool::NothingPending::SELECTOR) || d.starts_with(&NoxPool::WrongLeaves::SELECTOR)
                });
                let counter = if raced { &self.flush.raced } else { &self.flush.failed };
                counter.inc();
                return;
            }
            Err(_) => return,
        };
        let Ok(fees) = self.fees().await else { return };
        let tx = Unsigned {
            to: pool,
            value: 0,
            data,
            gas_limit: gas.saturating_mul(5) / 4,
            max_fee_per_gas: fees.max_fee,
            max_priority_fee_per_gas: fees.prio,
        };
        if let Err(e) = self.sender.submit(tx, TxPurpose::Flush { first_index: start, count }, |_| None).await {
            self.flush.failed.inc();
            tracing::warn!(error = %e, "exit: a flush was not sent");
        }
    }

    /// Whether a leaf queued in `block` has waited `exit.eth_flush_open_after_secs`
    /// by the chain's clock.
    async fn waited(&self, block: u64) -> bool {
        let queued = self.eth.provider().get_block_by_number(BlockNumberOrTag::Number(block)).await;
        let (Ok(Some(queued)), Ok(now)) = (queued, self.eth.latest_timestamp().await) else { return false };
        now.saturating_sub(queued.header.timestamp) >= self.cfg.flush_open_after.as_secs()
    }

    /// Acts on transactions the maintenance found mined.
    fn on_mined(&self, mined: Vec<(TxRecord, MinedTx)>) {
        for (rec, m) in mined {
            if let TxPurpose::Flush { count, .. } = &rec.purpose {
                if m.success {
                    self.flush.flushes.inc();
                    self.flush.leaves.inc_by(*count);
                    self.flush.gas_used.inc_by(m.gas_used);
                    let paid = flushed_bounty(&m.logs, self.cfg.pool).unwrap_or(0);
                    self.flush.bounty_gwei.inc_by(u64::try_from(paid / 1_000_000_000).unwrap_or(u64::MAX));
                } else {
                    self.flush.failed.inc();
                }
            }
        }
    }
}

/// The fees the exit signs a transaction with, and the base fee they come
/// from, wei.
#[derive(Debug, Clone, Copy)]
struct Fees {
    max_fee: u128,
    prio: u128,
    base: u128,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

enum Claim<'a> {
    Serve(ServingGuard<'a>),
    Wait(watch::Receiver<Option<Answer>>),
    Pending,
}

async fn wait_for_copy(rx: &mut watch::Receiver<Option<Answer>>) -> Result<Vec<u8>, EthRefusal> {
    loop {
        if let Some(answer) = rx.borrow().clone() {
            return answer.map_err(|e| match e {
                ServiceError::Typed { data, .. } => EthRefusal::decode(&data)
                    .unwrap_or_else(|_| refusal(EthRefusalCode::Upstream, "the first copy failed")),
                other => refusal(EthRefusalCode::Upstream, other.to_string()),
            });
        }
        if rx.changed().await.is_err() {
            return Err(refusal(EthRefusalCode::Busy, "the first copy of this request ended without an answer; retry"));
        }
    }
}

fn rec_inclusion_ms(rec: &TxRecord) -> u32 {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    u32::try_from(now.saturating_sub(rec.first_sent_ms)).unwrap_or(u32::MAX)
}

/// (base fee of the latest block, priority fee the upstream suggests), wei.
async fn current_fees(eth: &EthClient) -> Result<(u128, u128), nox_eth::EthError> {
    let block = eth
        .provider()
        .get_block_by_number(BlockNumberOrTag::Latest)
        .await
        .map_err(|e| eth.rpc_error("eth_getBlockByNumber", e))?
        .ok_or_else(|| eth.failed("eth_getBlockByNumber", "no latest block"))?;
    let base = u128::from(block.header.base_fee_per_gas.unwrap_or(0));
    let prio = eth
        .provider()
        .get_max_priority_fee_per_gas()
        .await
        .map_err(|e| eth.rpc_error("eth_maxPriorityFeePerGas", e))?;
    Ok((base, prio))
}

/// The spend's public inputs as field elements.
fn public_inputs(p: &GasPayment) -> Option<nox_circuits::spend::PublicInputs> {
    use nox_circuits::field::from_be32;
    let i = &p.inputs;
    Some(nox_circuits::spend::PublicInputs {
        root: from_be32::<Fr>(&i.root)?,
        nullifier: from_be32(&i.nullifier)?,
        change_commitment: from_be32(&i.change_commitment)?,
        asset: from_be32(&i.asset)?,
        public_value: from_be32(&i.public_value)?,
        recipient: from_be32(&i.recipient)?,
        execution_hash: from_be32(&i.execution_hash)?,
    })
}

/// The bounty the pool's `Flushed` event among `logs` paid, wei.
pub fn flushed_bounty(logs: &[Log], pool: Address) -> Option<u128> {
    logs.iter()
        .filter(|l| l.address == pool && l.topics().first() == Some(&NoxPool::Flushed::SIGNATURE_HASH))
        .find_map(|l| NoxPool::Flushed::decode_raw_log(l.topics().iter().copied(), &l.data.data).ok())
        .map(|e| u128::try_from(e.bountyPaid).unwrap_or(u128::MAX))
}

/// The `success` flag of the pool's `Relayed` event among `logs`.
pub fn relayed_success(logs: &[Log], pool: Address) -> Option<bool> {
    logs.iter()
        .filter(|l| l.address == pool && l.topics().first() == Some(&NoxPool::Relayed::SIGNATURE_HASH))
        .find_map(|l| NoxPool::Relayed::decode_raw_log(l.topics().iter().copied(), &l.data.data).ok())
        .map(|e| e.success)
}

fn json_log(v: &serde_json::Value) -> Option<Log> {
    let address: Address = v["address"].as_str()?.parse().ok()?;
    let topics: Vec<B256> = v["topics"].as_array()?.iter().filter_map(|t| t.as_str()?.parse().ok()).collect();
    let data = hex::decode(v["data"].as_str()?.trim_start_matches("0x")).ok()?;
    Some(Log::new_unchecked(address, topics, Bytes::from(data)))
}

/// A NoxPool custom error in words, or the raw hex.
fn describe_pool_revert(data: &[u8]) -> String {
    match NoxPool::NoxPoolErrors::abi_decode(data) {
        Ok(e) => format!("{e:?}"),
        Err(_) => nox_eth::revert::describe_revert(data),
    }
}

/// The maintenance task: reconciliation first, then every second a look at
/// the pending transactions, and a flush every `exit.eth_flush_every_secs`.
async fn maintain(inner: Arc<Inner>, stop: Arc<AtomicBool>) {
    let mut last_flush = Instant::now();
    while !stop.load(Ordering::SeqCst) && !inner.sender.is_stopped() {
        if !inner.sender.is_reconciled() {
            if let Err(e) = inner.sender.reconcile().await {
                tracing::warn!(error = %e, "exit: reconciling the wallet's transactions with the chain; retrying");
            }
        } else {
            let fees = inner.fees().await.ok().map(|f| (f.max_fee, f.prio));
            let mined = inner.sender.tick(fees).await;
            inner.on_mined(mined);
            if last_flush.elapsed() >= inner.cfg.flush_every {
                last_flush = Instant::now();
                inner.flush_round().await;
            }
        }
        tokio::time::sleep(MAINTENANCE_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_their_statuses() {
        for code in EthRefusalCode::ALL {
            let want = match code {
                EthRefusalCode::WrongChain | EthRefusalCode::Malformed => ReplyStatus::BadRequest,
                EthRefusalCode::Upstream | EthRefusalCode::NoReceipt => ReplyStatus::Failed,
                EthRefusalCode::Busy | EthRefusalCode::NoPrice => ReplyStatus::Busy,
                _ => ReplyStatus::Refused,
            };
            let e = ServiceError::from(EthRefusal::new(code, "why"));
            assert_eq!(e.status(), want, "{code:?}");
            assert_eq!(EthRefusal::decode(&e.reply_data()).unwrap().code, code);
        }
    }

    mod fees {
        use ed25519_dalek::SigningKey;
        use nox_protocol::price::{NO_BOOK, PriceBook, PriceRound, Quote, SOURCE_BINANCE, SOURCE_COINGECKO, Trust};

        use super::*;

        const USDC: [u8; 20] = [0xa0; 20];
        const NOW: u64 = 1_800_000_000_000;

        fn policy() -> FeePolicy {
            FeePolicy { wallet: [1; 20], pool: [2; 20], chain_id: 31337, margin_bps: 1000, assets: vec![ETH, USDC] }
        }

        /// A book with one oracle quoting ETH at 2000 USD and USDC at 1 USD at `NOW`.
        fn book() -> PriceBook {
            let key = SigningKey::from_bytes(&[1; 32]);
            let trust = Trust {
                chain_id: 31337,
                oracles: vec![key.verifying_key().to_bytes()],
                threshold: 1,
                max_age_ms: 60_000,
                max_skew_ms: 5_000,
            };
            let q = |symbol: &str, token, token_decimals, price| Quote {
                symbol: symbol.into(),
                token,
                token_decimals,
                price,
                price_decimals: 8,
                sources: SOURCE_BINANCE | SOURCE_COINGECKO,
            };
            let quotes = vec![q("ETH", ETH, 18, 2000_0000_0000), q("USDC", USDC, 6, 1_0000_0000)];
            let mut book = PriceBook::new(trust).unwrap();
            book.accept(PriceRound::sign(&key, 31337, 1, NOW, quotes).unwrap(), NOW).unwrap();
            book
        }

        #[test]
        fn eth_fees_are_the_cost_with_the_margin_with_or_without_a_book() {
            let cost = 300_000u128 * 2_000_000_000; // 300k gas at 2 gwei
            assert_eq!(policy().fee_in(&ETH, cost, None, NOW), Ok(cost * 11 / 10));
            assert_eq!(policy().fee_in(&ETH, cost, Some(&book()), NOW + 10_000_000), Ok(cost * 11 / 10));
        }

        #[test]
        fn token_fees_are_the_converted_cost_with_the_margin() {
            // 0.0006 ETH at 2000 USD = 1.2 USDC = 1,200,000 base units; + 10 %.
            let cost = 600_000_000_000_000u128;
            assert_eq!(policy().fee_in(&USDC, cost, Some(&book()), NOW), Ok(1_320_000));
            // Rounded up: one wei costs a whole base unit, and the margin rounds up too.
            assert_eq!(policy().fee_in(&USDC, 1, Some(&book()), NOW), Ok(2));
        }

        #[test]
        fn a_token_without_a_fresh_price_has_no_fee() {
            let cost = 10u128.pow(15);
            assert_eq!(policy().fee_in(&USDC, cost, None, NOW), Err(NO_BOOK));
            // Stale: older than the book's staleness limit.
            assert!(matches!(
                policy().fee_in(&USDC, cost, Some(&book()), NOW + 60_001),
                Err(NoPrice::TooFewOracles { fresh: 0, threshold: 1 })
            ));
            // A token no oracle quotes.
            assert!(policy().fee_in(&[0xbb; 20], cost, Some(&book()), NOW).is_err());
            // The refusal a client sees: `no_price`, status Busy.
            let r = no_price(NO_BOOK);
            assert_eq!(r.code, EthRefusalCode::NoPrice);
            assert_eq!(ServiceError::from(r).status(), ReplyStatus::Busy);
        }
    }

    #[test]
    fn a_world_readable_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(read_wallet_key(&path), Err(EthSetupError::WalletKey { .. })));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = read_wallet_key(&path).unwrap();
        assert_eq!(s.address(), "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720".parse::<Address>().unwrap());
    }
}
