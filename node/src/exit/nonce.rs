//! The exit wallet's transactions: nonces that are never reused or skipped,
//! across crashes.
//!
//! An exit that relays paid calls sends transactions from its own wallet
//! (`NoxPool.relay`, and `NoxPool.flush` of the change notes it relayed).
//! Each needs the next nonce. Asking the upstream (`eth_getTransactionCount`)
//! every time is wrong twice over: two requests served at once would get the
//! same nonce, and an exit that crashes after sending but before noting what
//! it sent would not know, after the restart, whether a nullifier it holds is
//! already being spent by a transaction of its own.
//!
//! So the nonces live in the node's database (table `exit_txs`, nonce →
//! [`TxRecord`]; table `exit_tx_meta`: the wallet and the next nonce).
//!
//! ## The invariant: durable before broadcast
//!
//! [`TxSender::submit`] takes the next nonce, signs the transaction locally
//! (EIP-1559, alloy's `PrivateKeySigner`), and records the signed bytes, the
//! hash, the purpose (a relay's nullifier, a flush's nullifiers) and the fees
//! together with the next nonce in one write transaction with
//! `Durability::Immediate` — and only then broadcasts. A crash at any point
//! therefore leaves one of two states: nothing recorded and nothing sent (the
//! nonce is still free), or recorded and maybe sent (the restart re-sends the
//! same bytes, which is harmless if they were already sent). Sends happen one
//! at a time (a lock around take-record-broadcast), so an upstream's
//! definite refusal of nonce N ("insufficient funds") is known before N+1 is
//! taken, and N is given back ([`TxLedger::release`]) instead of leaving a gap.
//!
//! ## States of a transaction
//!
//! ```text
//!   recorded (Pending) ──broadcast──► Pending ──receipt──► Mined { block, success }
//!        │ upstream refuses it                │ a later nonce is mined and no
//!        ▼ (before any later nonce exists)    ▼ hash of ours has a receipt
//!   released (row deleted, nonce reused)   Dropped (someone else used the nonce)
//! ```
//!
//! A `Pending` transaction not mined after `exit.eth_bump_after_secs` is
//! signed again with the same nonce and fees raised by [`BUMP_PERCENT`] %
//! (the replacement rule of geth and reth asks for 10 %), capped at
//! `exit.eth_max_fee_per_gas_gwei`; at the cap it is only re-sent. Every hash
//! a nonce was sent under is kept: whichever version is mined counts.
//!
//! ## Restart: reconciliation with the chain
//!
//! [`TxSender::reconcile`] runs before the first submission. For each
//! `Pending` record: a receipt for one of its hashes makes it `Mined`; a
//! nonce below the chain's `latest` count without any receipt of ours makes it
//! `Dropped` (the wallet sent something else with that nonce); any other is
//! broadcast again, byte for byte. The next nonce becomes the larger of the
//! chain's `pending` count and one past the highest still-pending record, so
//! a nonce is neither reused while ours may still be mined nor skipped.
//!
//! The chain side is the [`ChainPort`] trait: the exit's upstream in the node,
//! a scripted chain in the unit tests below.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::{Decodable2718, Encodable2718};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, Bytes, Log, TxKind, U256};
use futures::future::BoxFuture;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// nonce → a [`TxRecord`] as JSON.
const TXS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("exit_txs");
/// `wallet` → 20 bytes; `next_nonce` → 8 bytes big-endian.
const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("exit_tx_meta");

/// How much a stuck transaction's fees rise per re-signing, in percent.
pub const BUMP_PERCENT: u128 = 20;
/// Finished records kept (for answering a retried request from its record).
pub const KEEP_FINISHED: usize = 4096;

/// What a transaction is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxPurpose {
    /// `NoxPool.relay` of a paid call.
    Relay(RelayInfo),
    /// `NoxPool.flush` of the queued leaves `first_index` to
    /// `first_index + count - 1`. (Records of the first pool's flushes, which
    /// listed nullifiers, read with both fields 0.)
    Flush {
        /// The first leaf inserted.
        #[serde(default)]
        first_index: u64,
        /// Leaves inserted.
        #[serde(default)]
        count: u64,
    },
}

/// What a relay's answer needs besides the receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayInfo {
    /// The spent note's nullifier.
    pub nullifier: [u8; 32],
    /// keccak256 of the request's payment, target, gas, flags and calldata:
    /// the same request again has the same digest.
    pub request_digest: [u8; 32],
    /// The fee (the spend's public value).
    pub fee: u128,
    /// The fee's asset.
    pub asset: [u8; 20],
    /// How long the simulation took, µs.
    pub simulate_us: u32,
    /// The call's revert data in the simulation (empty if it succeeded).
    pub revert_data: Vec<u8>,
}

/// Where a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxState {
    /// Recorded, maybe broadcast, not known to be mined.
    Pending,
    /// Mined (one of its hashes has a receipt).
    Mined {
        /// The block.
        block: u64,
        /// The receipt's status.
        success: bool,
        /// Gas used.
        gas_used: u64,
    },
    /// Its nonce was used by another transaction of the wallet.
    Dropped,
}

/// One nonce's transaction, as recorded before it is broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRecord {
    /// The nonce.
    pub nonce: u64,
    /// What it does.
    pub purpose: TxPurpose,
    /// The latest signed version, EIP-2718 bytes.
    pub raw: Vec<u8>,
    /// Every hash this nonce was signed under, the latest last.
    pub hashes: Vec<[u8; 32]>,
    /// Max fee per gas of the latest version, wei.
    pub max_fee_per_gas: u128,
    /// Priority fee of the latest version, wei.
    pub max_priority_fee_per_gas: u128,
    /// Where it stands.
    pub state: TxState,
    /// Unix ms of the first broadcast attempt.
    pub first_sent_ms: u64,
    /// Unix ms of the latest broadcast attempt.
    pub last_sent_ms: u64,
}

impl TxRecord {
    /// The latest hash.
    pub fn hash(&self) -> [u8; 32] {
        self.hashes.last().copied().unwrap_or_default()
    }

    /// The relay's details, if it is a relay.
    pub fn relay(&self) -> Option<&RelayInfo> {
        match &self.purpose {
            TxPurpose::Relay(r) => Some(r),
            TxPurpose::Flush { .. } => None,
        }
    }
}

/// The ledger's database failed.
#[derive(Debug, thiserror::Error)]
#[error("exit transaction ledger: {context}: {reason}")]
pub struct LedgerError {
    context: &'static str,
    reason: String,
}

fn db_err<E: std::fmt::Display>(context: &'static str) -> impl FnOnce(E) -> LedgerError {
    move |e| LedgerError { context, reason: e.to_string() }
}

/// The recorded transactions of one wallet (see the module docs), held in
/// memory and written through to the database.
pub struct TxLedger {
    db: Arc<redb::Database>,
    next_nonce: u64,
    txs: BTreeMap<u64, TxRecord>,
}

impl std::fmt::Debug for TxLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxLedger").field("next_nonce", &self.next_nonce).field("txs", &self.txs.len()).finish()
    }
}

impl TxLedger {
    /// Loads the ledger of `wallet`. A ledger of another wallet (the key was
    /// changed) is cleared: its nonces mean nothing for this one.
    pub fn open(db: Arc<redb::Database>, wallet: Address) -> Result<Self, LedgerError> {
        let txn = db.begin_write().map_err(db_err("beginning a write"))?;
        let mut txs = BTreeMap::new();
        let mut next_nonce = 0;
        {
            let mut meta = txn.open_table(META).map_err(db_err("opening exit_tx_meta"))?;
            let mut table = txn.open_table(TXS).map_err(db_err("opening exit_txs"))?;
            let stored = meta.get("wallet").map_err(db_err("reading the wallet"))?.map(|v| v.value().to_vec());
            if stored.as_deref() != Some(wallet.as_slice()) {
                if stored.is_some() {
                    tracing::warn!("exit: the wallet changed; its transaction ledger starts afresh");
                }
                table.retain(|_, _| false).map_err(db_err("clearing exit_txs"))?;
                meta.insert("wallet", wallet.as_slice()).map_err(db_err("writing the wallet"))?;
                meta.insert("next_nonce", 0u64.to_be_bytes().as_slice()).map_err(db_err("writing the nonce"))?;
            } else {
                let n = meta.get("next_nonce").map_err(db_err("reading the nonce"))?;
                next_nonce = n.and_then(|v| <[u8; 8]>::try_from(v.value()).ok()).map(u64::from_be_bytes).unwrap_or(0);
                for row in table.iter().map_err(db_err("listing exit_txs"))? {
                    let (_, v) = row.map_err(db_err("reading exit_txs"))?;
                    let rec: TxRecord = serde_json::from_slice(v.value()).map_err(db_err("decoding a record"))?;
                    txs.insert(rec.nonce, rec);
                }
            }
        }
        txn.commit().map_err(db_err("committing"))?;
        Ok(TxLedger { db, next_nonce, txs })
    }

    /// The nonce the next transaction takes.
    pub fn next_nonce(&self) -> u64 {
        self.next_nonce
    }

    /// The record of `nonce`.
    pub fn get(&self, nonce: u64) -> Option<&TxRecord> {
        self.txs.get(&nonce)
    }

    /// Every record, by nonce.
    pub fn records(&self) -> impl Iterator<Item = &TxRecord> {
        self.txs.values()
    }

    /// The latest relay of `nullifier` that was not dropped.
    pub fn relay_of(&self, nullifier: &[u8; 32]) -> Option<&TxRecord> {
        self.txs
            .values()
            .rev()
            .find(|r| r.state != TxState::Dropped && r.relay().is_some_and(|i| &i.nullifier == nullifier))
    }

    fn write(&self, records: &[&TxRecord], next_nonce: u64, delete: Option<u64>) -> Result<(), LedgerError> {
        let mut txn = self.db.begin_write().map_err(db_err("beginning a write"))?;
        txn.set_durability(redb::Durability::Immediate).map_err(db_err("setting durability"))?;
        {
            let mut table = txn.open_table(TXS).map_err(db_err("opening exit_txs"))?;
            for r in records {
                let bytes = serde_json::to_vec(r).map_err(db_err("encoding a record"))?;
                table.insert(r.nonce, bytes.as_slice()).map_err(db_err("writing a record"))?;
            }
            if let Some(n) = delete {
                table.remove(n).map_err(db_err("deleting a record"))?;
            }
            let mut meta = txn.open_table(META).map_err(db_err("opening exit_tx_meta"))?;
            meta.insert("next_nonce", next_nonce.to_be_bytes().as_slice()).map_err(db_err("writing the nonce"))?;
        }
        txn.commit().map_err(db_err("committing"))
    }

    /// Records a new transaction with the next nonce, and moves the next
    /// nonce past it, durably.
    pub fn record_new(&mut self, rec: TxRecord) -> Result<(), LedgerError> {
        if rec.nonce != self.next_nonce {
            return Err(LedgerError { context: "recording", reason: format!("nonce {} is not the next", rec.nonce) });
        }
        self.write(&[&rec], rec.nonce + 1, None)?;
        self.next_nonce = rec.nonce + 1;
        self.txs.insert(rec.nonce, rec);
        Ok(())
    }

    /// Stores a changed record durably.
    pub fn update(&mut self, rec: TxRecord) -> Result<(), LedgerError> {
        self.write(&[&rec], self.next_nonce, None)?;
        self.txs.insert(rec.nonce, rec);
        Ok(())
    }

    /// Gives back the newest nonce, whose transaction the upstream refused
    /// (nothing was sent under it).
    pub fn release(&mut self, nonce: u64) -> Result<(), LedgerError> {
        if nonce + 1 != self.next_nonce {
            return Err(LedgerError { context: "releasing", reason: format!("nonce {nonce} is not the newest") });
        }
        self.write(&[], nonce, Some(nonce))?;
        self.next_nonce = nonce;
        self.txs.remove(&nonce);
        Ok(())
    }

    /// Sets the next nonce (reconciliation).
    pub fn set_next_nonce(&mut self, next: u64) -> Result<(), LedgerError> {
        self.write(&[], next, None)?;
        self.next_nonce = next;
        Ok(())
    }

    /// Forgets the oldest finished records beyond [`KEEP_FINISHED`].
    pub fn prune(&mut self) -> Result<(), LedgerError> {
        let finished: Vec<u64> = self.txs.values().filter(|r| r.state != TxState::Pending).map(|r| r.nonce).collect();
        let Some(excess) = finished.len().checked_sub(KEEP_FINISHED).filter(|n| *n > 0) else { return Ok(()) };
        let txn = self.db.begin_write().map_err(db_err("beginning a write"))?;
        {
            let mut table = txn.open_table(TXS).map_err(db_err("opening exit_txs"))?;
            for n in &finished[..excess] {
                table.remove(n).map_err(db_err("deleting a record"))?;
            }
        }
        txn.commit().map_err(db_err("committing"))?;
        for n in &finished[..excess] {
            self.txs.remove(n);
        }
        Ok(())
    }

    /// Reads the stored next nonce back from the database (tests).
    pub fn stored_next_nonce(&self) -> Result<u64, LedgerError> {
        let txn = self.db.begin_read().map_err(db_err("beginning a read"))?;
        let meta = txn.open_table(META).map_err(db_err("opening exit_tx_meta"))?;
        let n = meta.get("next_nonce").map_err(db_err("reading the nonce"))?;
        Ok(n.and_then(|v| <[u8; 8]>::try_from(v.value()).ok()).map(u64::from_be_bytes).unwrap_or(0))
    }
}

/// A mined transaction as the sender needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinedTx {
    /// The hash that was mined.
    pub hash: [u8; 32],
    /// Its block.
    pub block: u64,
    /// The receipt's status.
    pub success: bool,
    /// Gas used.
    pub gas_used: u64,
    /// Price paid per gas, wei.
    pub effective_gas_price: u128,
    /// Its logs.
    pub logs: Vec<Log>,
}

/// Why a broadcast did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The upstream answered with a refusal: the transaction is not in its pool.
    #[error("the upstream refused the transaction: {0}")]
    Refused(String),
    /// No answer: it may or may not have arrived.
    #[error("the upstream did not answer: {0}")]
    Unknown(String),
}

/// The chain, as [`TxSender`] talks to it.
pub trait ChainPort: Send + Sync + 'static {
    /// `eth_getTransactionCount(wallet, latest|pending)`.
    fn nonce(&self, wallet: Address, pending: bool) -> BoxFuture<'_, Result<u64, String>>;
    /// `eth_sendRawTransaction`; "already known" counts as sent.
    fn send_raw(&self, raw: Vec<u8>) -> BoxFuture<'_, Result<(), SendError>>;
    /// The receipt of `hash`, if it is mined.
    fn receipt(&self, hash: [u8; 32]) -> BoxFuture<'_, Result<Option<MinedTx>, String>>;
}

/// Why [`TxSender::submit`] sent nothing.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The upstream refused the transaction (its nonce was given back).
    #[error(transparent)]
    Refused(SendError),
    /// The ledger could not record it (nothing was sent).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Signing failed.
    #[error("signing: {0}")]
    Sign(String),
    /// The ledger has not been reconciled with the chain yet.
    #[error("the exit's transaction ledger is not reconciled with the chain yet")]
    NotReady,
    /// The node is stopping (or a test fault stopped the sender).
    #[error("the exit is stopping")]
    Stopped,
}

/// A transaction to sign.
#[derive(Debug, Clone)]
pub struct Unsigned {
    /// Callee.
    pub to: Address,
    /// Wei sent with the call.
    pub value: u128,
    /// Call data.
    pub data: Vec<u8>,
    /// Gas limit.
    pub gas_limit: u64,
    /// Max fee per gas, wei.
    pub max_fee_per_gas: u128,
    /// Priority fee per gas, wei.
    pub max_priority_fee_per_gas: u128,
}

/// Settings of a [`TxSender`].
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// The chain id transactions are signed for.
    pub chain_id: u64,
    /// A pending transaction older than this is re-signed with higher fees.
    pub bump_after: Duration,
    /// The highest max fee per gas, wei.
    pub max_fee_per_gas: u128,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Signs, records and sends the wallet's transactions (see the module docs).
pub struct TxSender {
    ledger: Mutex<TxLedger>,
    send: tokio::sync::Mutex<()>,
    port: Arc<dyn ChainPort>,
    signer: PrivateKeySigner,
    cfg: SenderConfig,
    reconciled: AtomicBool,
    /// Set when the node stops, or by a test fault ("crash"): nothing more is
    /// written or sent.
    stopped: Arc<AtomicBool>,
}

impl std::fmt::Debug for TxSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxSender").field("wallet", &self.signer.address()).finish_non_exhaustive()
    }
}

impl TxSender {
    /// A sender for `signer`'s wallet over `ledger`; `stopped` is the node's
    /// stop flag.
    pub fn new(
        ledger: TxLedger,
        port: Arc<dyn ChainPort>,
        signer: PrivateKeySigner,
        cfg: SenderConfig,
        stopped: Arc<AtomicBool>,
    ) -> Self {
        TxSender {
            ledger: Mutex::new(ledger),
            send: tokio::sync::Mutex::new(()),
            port,
            signer,
            cfg,
            reconciled: AtomicBool::new(false),
            stopped,
        }
    }

    /// The wallet.
    pub fn wallet(&self) -> Address {
        self.signer.address()
    }

    /// The settings.
    pub fn config(&self) -> &SenderConfig {
        &self.cfg
    }

    /// Runs `f` on the ledger.
    pub fn with_ledger<T>(&self, f: impl FnOnce(&mut TxLedger) -> T) -> T {
        let mut l = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut l)
    }

    /// Whether [`TxSender::reconcile`] has succeeded.
    pub fn is_reconciled(&self) -> bool {
        self.reconciled.load(Ordering::SeqCst)
    }

    /// Whether the sender was stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Stops the sender: nothing more is recorded or sent (the test fault
    /// "crash after broadcast" uses it).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    fn sign(&self, nonce: u64, tx: &Unsigned) -> Result<(Vec<u8>, [u8; 32]), SubmitError> {
        let t = TxEip1559 {
            chain_id: self.cfg.chain_id,
            nonce,
            gas_limit: tx.gas_limit,
            max_fee_per_gas: tx.max_fee_per_gas,
            max_priority_fee_per_gas: tx.max_priority_fee_per_gas,
            to: TxKind::Call(tx.to),
            value: U256::from(tx.value),
            input: Bytes::from(tx.data.clone()),
            ..Default::default()
        };
        let sig = self.signer.sign_hash_sync(&t.signature_hash()).map_err(|e| SubmitError::Sign(e.to_string()))?;
        let env = TxEnvelope::from(t.into_signed(sig));
        Ok((env.encoded_2718(), env.tx_hash().0))
    }

    /// Brings the ledger in line with the chain (see the module docs).
    pub async fn reconcile(&self) -> Result<(), String> {
        let _one = self.send.lock().await;
        let wallet = self.wallet();
        let latest = self.port.nonce(wallet, false).await?;
        let chain_pending = self.port.nonce(wallet, true).await?;
        let pending: Vec<TxRecord> =
            self.with_ledger(|l| l.records().filter(|r| r.state == TxState::Pending).cloned().collect());
        let mut highest_pending = None;
        for mut rec in pending {
            if let Some(m) = self.find_receipt(&rec).await? {
                rec.state = TxState::Mined { block: m.block, success: m.success, gas_used: m.gas_used };
            } else if rec.nonce < latest {
                rec.state = TxState::Dropped;
            } else {
                match self.port.send_raw(rec.raw.clone()).await {
                    Ok(()) | Err(SendError::Unknown(_)) => {}
                    Err(SendError::Refused(reason)) => {
                        // A refusal now may mean it was mined in between.
                        if let Some(m) = self.find_receipt(&rec).await? {
                            rec.state = TxState::Mined { block: m.block, success: m.success, gas_used: m.gas_used };
                        } else {
                            tracing::warn!(nonce = rec.nonce, %reason, "exit: a recorded transaction is refused again");
                        }
                    }
                }
                rec.last_sent_ms = now_ms();
                if rec.state == TxState::Pending {
                    highest_pending = Some(rec.nonce);
                }
            }
            self.with_ledger(|l| l.update(rec)).map_err(|e| e.to_string())?;
        }
        let next = chain_pending.max(latest).max(highest_pending.map_or(0, |n| n + 1));
        let stored = self.with_ledger(|l| l.next_nonce());
        if next != stored {
            tracing::info!(stored, next, "exit: next nonce reconciled with the chain");
            self.with_ledger(|l| l.set_next_nonce(next)).map_err(|e| e.to_string())?;
        }
        self.reconciled.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn find_receipt(&self, rec: &TxRecord) -> Result<Option<MinedTx>, String> {
        for h in rec.hashes.iter().rev() {
            if let Some(m) = self.port.receipt(*h).await? {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    /// Takes the next nonce, signs `tx`, records it durably, then
    /// broadcasts it. `purpose` is checked under the send lock by `dedup`:
    /// an existing record it returns is answered instead of sending.
    pub async fn submit(
        &self,
        tx: Unsigned,
        purpose: TxPurpose,
        dedup: impl FnOnce(&TxLedger) -> Option<TxRecord>,
    ) -> Result<Submitted, SubmitError> {
        if !self.is_reconciled() {
            return Err(SubmitError::NotReady);
        }
        let _one = self.send.lock().await;
        if self.is_stopped() {
            return Err(SubmitError::Stopped);
        }
        if let Some(existing) = self.with_ledger(|l| dedup(l)) {
            return Ok(Submitted::Existing(existing));
        }
        let nonce = self.with_ledger(|l| l.next_nonce());
        let (raw, hash) = self.sign(nonce, &tx)?;
        let now = now_ms();
        let rec = TxRecord {
            nonce,
            purpose,
            raw: raw.clone(),
            hashes: vec![hash],
            max_fee_per_gas: tx.max_fee_per_gas,
            max_priority_fee_per_gas: tx.max_priority_fee_per_gas,
            state: TxState::Pending,
            first_sent_ms: now,
            last_sent_ms: now,
        };
        self.with_ledger(|l| l.record_new(rec.clone()))?;
        match self.port.send_raw(raw).await {
            Ok(()) => Ok(Submitted::New(rec)),
            Err(SendError::Unknown(reason)) => {
                // It may have arrived: keep it; the maintenance re-sends it.
                tracing::warn!(%reason, "exit: broadcast unconfirmed; the transaction will be re-sent");
                Ok(Submitted::New(rec))
            }
            Err(e @ SendError::Refused(_)) => {
                self.with_ledger(|l| l.release(nonce))?;
                Err(SubmitError::Refused(e))
            }
        }
    }

    /// Polls the receipt of `nonce`'s transaction until it is mined or
    /// `deadline` passes (or the sender stops); records what it finds.
    pub async fn wait_mined(&self, nonce: u64, deadline: tokio::time::Instant) -> Option<(TxRecord, MinedTx)> {
        // Start close (a chain that mines on arrival answers within
        // milliseconds) and back off to RECEIPT_POLL.
        let mut pause = RECEIPT_POLL_FIRST;
        loop {
            let rec = self.with_ledger(|l| l.get(nonce).cloned())?;
            if let Ok(Some(m)) = self.find_receipt(&rec).await {
                let rec = self.mark_mined(rec, &m);
                return Some((rec, m));
            }
            if rec.state == TxState::Dropped || self.is_stopped() || tokio::time::Instant::now() + pause >= deadline {
                return None;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RECEIPT_POLL);
        }
    }

    fn mark_mined(&self, mut rec: TxRecord, m: &MinedTx) -> TxRecord {
        let state = TxState::Mined { block: m.block, success: m.success, gas_used: m.gas_used };
        if rec.state != state && !self.is_stopped() {
            rec.state = state;
            if let Err(e) = self.with_ledger(|l| l.update(rec.clone())) {
                tracing::warn!(error = %e, "exit: recording a mined transaction");
            }
        }
        rec
    }

    /// One maintenance round over the pending transactions: mined ones are
    /// recorded, lost ones marked dropped, stuck ones re-signed with higher
    /// fees (or re-sent at the cap). `fees` is the current (max fee, priority
    /// fee) the exit would pay now. Returns the transactions found mined.
    pub async fn tick(&self, fees: Option<(u128, u128)>) -> Vec<(TxRecord, MinedTx)> {
        let mut mined = Vec::new();
        if !self.is_reconciled() || self.is_stopped() {
            return mined;
        }
        let _one = self.send.lock().await;
        let pending: Vec<TxRecord> =
            self.with_ledger(|l| l.records().filter(|r| r.state == TxState::Pending).cloned().collect());
        let latest = if pending.is_empty() { None } else { self.port.nonce(self.wallet(), false).await.ok() };
        for mut rec in pending {
            if self.is_stopped() {
                break;
            }
            match self.find_receipt(&rec).await {
                Ok(Some(m)) => {
                    let rec = self.mark_mined(rec, &m);
                    mined.push((rec, m));
                    continue;
                }
                Ok(None) => {}
                Err(_) => continue,
            }
            if latest.is_some_and(|l| rec.nonce < l) {
                rec.state = TxState::Dropped;
                tracing::warn!(nonce = rec.nonce, "exit: a transaction's nonce was used by another one");
                let _ = self.with_ledger(|l| l.update(rec));
                continue;
            }
            if now_ms().saturating_sub(rec.last_sent_ms) < self.cfg.bump_after.as_millis() as u64 {
                continue;
            }
            if let Err(e) = self.bump(&mut rec, fees).await {
                tracing::warn!(error = %e, "exit: re-sending a stuck transaction");
            }
        }
        let _ = self.with_ledger(|l| l.prune());
        mined
    }

    /// Re-signs `rec` with higher fees (recorded before it is sent), or
    /// re-sends it as it is when the fees are at the cap.
    async fn bump(&self, rec: &mut TxRecord, fees: Option<(u128, u128)>) -> Result<(), String> {
        let env = TxEnvelope::decode_2718_exact(rec.raw.as_slice()).map_err(|e| e.to_string())?;
        let TxEnvelope::Eip1559(signed) = env else { return Err("not an EIP-1559 transaction".into()) };
        let old = signed.tx();
        let (now_max, now_prio) = fees.unwrap_or((0, 0));
        let bumped = |x: u128| x + (x * BUMP_PERCENT).div_ceil(100);
        let max_fee = bumped(old.max_fee_per_gas).max(now_max).min(self.cfg.max_fee_per_gas);
        let prio = bumped(old.max_priority_fee_per_gas).max(now_prio).min(max_fee);
        if max_fee >= bumped(old.max_fee_per_gas) && prio >= bumped(old.max_priority_fee_per_gas) {
            let tx = Unsigned {
                to: old.to.to().copied().unwrap_or_default(),
                value: u128::try_from(old.value).unwrap_or(u128::MAX),
                data: old.input.to_vec(),
                gas_limit: old.gas_limit,
                max_fee_per_gas: max_fee,
                max_priority_fee_per_gas: prio,
            };
            let (raw, hash) = self.sign(rec.nonce, &tx).map_err(|e| e.to_string())?;
            rec.raw = raw;
            rec.hashes.push(hash);
            rec.max_fee_per_gas = max_fee;
            rec.max_priority_fee_per_gas = prio;
        }
        rec.last_sent_ms = now_ms();
        self.with_ledger(|l| l.update(rec.clone())).map_err(|e| e.to_string())?;
        match self.port.send_raw(rec.raw.clone()).await {
            Ok(()) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// What [`TxSender::submit`] did.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// Recorded and broadcast under a new nonce.
    New(TxRecord),
    /// The deduplication found this record: nothing was sent.
    Existing(TxRecord),
}

/// The longest pause between two receipt polls.
pub const RECEIPT_POLL: Duration = Duration::from_millis(200);
/// The first pause before asking for a receipt again; it doubles up to
/// [`RECEIPT_POLL`].
pub const RECEIPT_POLL_FIRST: Duration = Duration::from_millis(2);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A scripted chain: a mempool keyed by nonce and a list of mined
    /// transactions, mined on demand.
    #[derive(Default)]
    struct FakeChain {
        state: Mutex<Fake>,
    }

    #[derive(Default)]
    struct Fake {
        mined_nonce: u64,
        pool: BTreeMap<u64, [u8; 32]>,
        mined: HashMap<[u8; 32], u64>,
        sent: Vec<(u64, [u8; 32])>,
        refuse_next: Option<String>,
        unreachable: bool,
    }

    impl FakeChain {
        fn mine(&self) {
            let mut s = self.state.lock().unwrap();
            while let Some(h) = s.pool.get(&s.mined_nonce).copied() {
                let n = s.mined_nonce;
                s.mined.insert(h, n + 1);
                s.pool.remove(&n);
                s.mined_nonce += 1;
            }
        }
        fn sent(&self) -> Vec<(u64, [u8; 32])> {
            self.state.lock().unwrap().sent.clone()
        }
    }

    impl ChainPort for FakeChain {
        fn nonce(&self, _: Address, pending: bool) -> BoxFuture<'_, Result<u64, String>> {
            let s = self.state.lock().unwrap();
            let n = if pending { s.mined_nonce + s.pool.len() as u64 } else { s.mined_nonce };
            Box::pin(async move { Ok(n) })
        }
        fn send_raw(&self, raw: Vec<u8>) -> BoxFuture<'_, Result<(), SendError>> {
            let mut s = self.state.lock().unwrap();
            let r = if s.unreachable {
                Err(SendError::Unknown("down".into()))
            } else if let Some(why) = s.refuse_next.take() {
                Err(SendError::Refused(why))
            } else {
                let env = TxEnvelope::decode_2718_exact(raw.as_slice()).unwrap();
                let nonce = match &env {
                    TxEnvelope::Eip1559(t) => t.tx().nonce,
                    _ => unreachable!(),
                };
                if nonce < s.mined_nonce {
                    Err(SendError::Refused("nonce too low".into()))
                } else {
                    s.pool.insert(nonce, env.tx_hash().0);
                    s.sent.push((nonce, env.tx_hash().0));
                    Ok(())
                }
            };
            Box::pin(async move { r })
        }
        fn receipt(&self, hash: [u8; 32]) -> BoxFuture<'_, Result<Option<MinedTx>, String>> {
            let s = self.state.lock().unwrap();
            let r = s.mined.get(&hash).map(|b| MinedTx {
                hash,
                block: *b,
                success: true,
                gas_used: 21_000,
                effective_gas_price: 1,
                logs: vec![],
            });
            Box::pin(async move { Ok(r) })
        }
    }

    fn signer() -> PrivateKeySigner {
        "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6".parse().unwrap()
    }

    fn sender(db: &Arc<redb::Database>, chain: &Arc<FakeChain>) -> TxSender {
        let ledger = TxLedger::open(db.clone(), signer().address()).unwrap();
        let cfg = SenderConfig { chain_id: 31337, bump_after: Duration::from_millis(0), max_fee_per_gas: 100 };
        TxSender::new(ledger, chain.clone(), signer(), cfg, Arc::new(AtomicBool::new(false)))
    }

    fn tx() -> Unsigned {
        Unsigned {
            to: Address::repeat_byte(9),
            value: 7,
            data: vec![1, 2, 3],
            gas_limit: 50_000,
            max_fee_per_gas: 10,
            max_priority_fee_per_gas: 1,
        }
    }

    fn relay(n: u8) -> TxPurpose {
        TxPurpose::Relay(RelayInfo {
            nullifier: [n; 32],
            request_digest: [n; 32],
            fee: 1,
            asset: [0; 20],
            simulate_us: 0,
            revert_data: vec![],
        })
    }

    fn db(dir: &tempfile::TempDir) -> Arc<redb::Database> {
        crate::store::open_database(&dir.path().join("node.redb")).unwrap()
    }

    #[tokio::test]
    async fn nonces_are_consecutive_and_recorded_before_they_are_sent() {
        let dir = tempfile::tempdir().unwrap();
        let chain = Arc::new(FakeChain::default());
        let db = db(&dir);
        let s = sender(&db, &chain);
        assert!(matches!(s.submit(tx(), relay(1), |_| None).await, Err(SubmitError::NotReady)));
        s.reconcile().await.unwrap();
        for i in 0..3u8 {
            let Submitted::New(rec) = s.submit(tx(), relay(i), |_| None).await.unwrap() else { panic!() };
            assert_eq!(rec.nonce, u64::from(i));
            // On disk before the call returned, with the next nonce past it.
            assert_eq!(s.with_ledger(|l| l.stored_next_nonce().unwrap()), u64::from(i) + 1);
        }
        assert_eq!(chain.sent().iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![0, 1, 2]);
        // The same nullifier is answered from its record, without a send.
        let again = s.submit(tx(), relay(1), |l| l.relay_of(&[1; 32]).cloned()).await.unwrap();
        assert!(matches!(again, Submitted::Existing(r) if r.nonce == 1));
        assert_eq!(chain.sent().len(), 3);

        // A refused transaction gives its nonce back: the next one reuses it.
        chain.state.lock().unwrap().refuse_next = Some("insufficient funds".into());
        assert!(matches!(s.submit(tx(), relay(7), |_| None).await, Err(SubmitError::Refused(_))));
        assert_eq!(s.with_ledger(|l| l.stored_next_nonce().unwrap()), 3);
        let Submitted::New(rec) = s.submit(tx(), relay(8), |_| None).await.unwrap() else { panic!() };
        assert_eq!(rec.nonce, 3);

        chain.mine();
        let mined = s.tick(None).await;
        assert_eq!(mined.len(), 4);
        assert!(s.with_ledger(|l| l.records().all(|r| matches!(r.state, TxState::Mined { .. }))));
    }

    #[tokio::test]
    async fn a_crash_after_recording_neither_reuses_nor_skips_a_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let chain = Arc::new(FakeChain::default());
        let db = db(&dir);
        {
            let s = sender(&db, &chain);
            s.reconcile().await.unwrap();
            s.submit(tx(), relay(1), |_| None).await.unwrap();
            // Recorded, but the upstream never got it (the process died in between).
            chain.state.lock().unwrap().unreachable = true;
            s.submit(tx(), relay(2), |_| None).await.unwrap();
            chain.state.lock().unwrap().unreachable = false;
        }
        chain.mine();
        assert_eq!(chain.sent().len(), 1);
        // Restart: nonce 0 is found mined, nonce 1 is sent again byte for byte.
        let s = sender(&db, &chain);
        s.reconcile().await.unwrap();
        let sent = chain.sent();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].0, 1);
        assert_eq!(s.with_ledger(|l| l.get(1).unwrap().hash()), sent[1].1);
        assert!(matches!(s.with_ledger(|l| l.get(0).unwrap().state), TxState::Mined { .. }));
        assert_eq!(s.with_ledger(|l| l.next_nonce()), 2);
        let Submitted::New(rec) = s.submit(tx(), relay(3), |_| None).await.unwrap() else { panic!() };
        assert_eq!(rec.nonce, 2, "neither reused nor skipped");
        // The restarted exit still knows nullifier 2 is being spent by its nonce 1.
        assert_eq!(s.with_ledger(|l| l.relay_of(&[2; 32]).map(|r| r.nonce)), Some(1));
    }

    #[tokio::test]
    async fn reconciliation_follows_the_chain_and_drops_what_it_lost() {
        let dir = tempfile::tempdir().unwrap();
        let chain = Arc::new(FakeChain::default());
        let db = db(&dir);
        {
            let s = sender(&db, &chain);
            s.reconcile().await.unwrap();
            chain.state.lock().unwrap().unreachable = true;
            s.submit(tx(), relay(1), |_| None).await.unwrap();
        }
        // Meanwhile the wallet's nonces 0..5 were used elsewhere.
        chain.state.lock().unwrap().unreachable = false;
        chain.state.lock().unwrap().mined_nonce = 5;
        let s = sender(&db, &chain);
        s.reconcile().await.unwrap();
        assert_eq!(s.with_ledger(|l| l.get(0).unwrap().state), TxState::Dropped);
        assert_eq!(s.with_ledger(|l| l.relay_of(&[1; 32]).map(|r| r.nonce)), None);
        assert_eq!(s.with_ledger(|l| l.next_nonce()), 5);
        let Submitted::New(rec) = s.submit(tx(), relay(2), |_| None).await.unwrap() else { panic!() };
        assert_eq!(rec.nonce, 5);
    }

    #[tokio::test]
    async fn a_stuck_transaction_is_re_signed_with_higher_fees_under_its_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let chain = Arc::new(FakeChain::default());
        let db = db(&dir);
        let s = sender(&db, &chain);
        s.reconcile().await.unwrap();
        s.submit(tx(), relay(1), |_| None).await.unwrap();
        assert!(s.tick(Some((5, 1))).await.is_empty());
        let rec = s.with_ledger(|l| l.get(0).cloned().unwrap());
        assert_eq!(rec.hashes.len(), 2);
        assert_eq!((rec.max_fee_per_gas, rec.max_priority_fee_per_gas), (12, 2));
        // The re-signed transaction still sends the value (a relay's insertion bounty).
        let TxEnvelope::Eip1559(signed) = TxEnvelope::decode_2718_exact(rec.raw.as_slice()).unwrap() else {
            panic!("not EIP-1559")
        };
        assert_eq!(signed.tx().value, U256::from(7u8));
        assert_eq!(chain.sent().last().unwrap(), &(0, rec.hash()));
        chain.mine();
        let mined = s.tick(None).await;
        assert_eq!(mined.len(), 1);
        assert_eq!(mined[0].1.hash, rec.hash());
    }

    #[test]
    fn a_record_of_the_first_pools_flush_still_reads() {
        let old = r#"{"Flush":{"nullifiers":[[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]]}}"#;
        let p: TxPurpose = serde_json::from_str(old).unwrap();
        assert_eq!(p, TxPurpose::Flush { first_index: 0, count: 0 });
        let relay = r#"{"Relay":{"nullifier":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],
            "request_digest":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],
            "fee":1,"asset":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],"simulate_us":0,"revert_data":[],"flushed":true}}"#;
        assert!(matches!(serde_json::from_str::<TxPurpose>(relay).unwrap(), TxPurpose::Relay(_)));
    }

    #[test]
    fn another_wallet_starts_a_fresh_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(&dir);
        let mut l = TxLedger::open(db.clone(), Address::repeat_byte(1)).unwrap();
        l.set_next_nonce(9).unwrap();
        drop(l);
        assert_eq!(TxLedger::open(db.clone(), Address::repeat_byte(1)).unwrap().next_nonce(), 9);
        assert_eq!(TxLedger::open(db, Address::repeat_byte(2)).unwrap().next_nonce(), 0);
    }
}
