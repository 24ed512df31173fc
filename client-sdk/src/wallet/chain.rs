//! The wallet's own transactions, sent directly over JSON-RPC and signed by
//! the caller's [`EthClient`]: deposits (public by nature: they are funded
//! from the caller's address), a forced insertion of its queued notes
//! ([`Wallet::insert_now`]), and a direct withdrawal.
//!
//! **Insertion bounty.** NoxPool v2 queues every new leaf and makes the
//! transaction that queues it prepay its insertion: `msg.value` carries at
//! least `insertionBounty()` (`block.basefee × INSERT_GAS_PER_LEAF`) on top of
//! an ETH deposit's value, as the whole `msg.value` of a token deposit and of
//! a withdrawal (for its change note). The wallet sends
//! [`insertion_bounty`] of the latest base fee, twice the pool's minimum at
//! that fee: room for the base fee to rise before inclusion. The pool records
//! the whole amount as that leaf's bounty (in its `Queued` log) and pays it
//! to whoever flushes the leaf — the wallet itself, if it inserts its own.
//!
//! A deposit's note is recorded and saved *before* its transaction is sent,
//! then again with the transaction hash, so a crash after sending cannot lose
//! the note: the sync finds it queued by its commitment. A deposit the
//! endpoint refuses outright, or that reverts, is forgotten.
//!
//! **Forced insertion and what it reveals.** A queued note is spendable only
//! once a `flush` has inserted it. Exits flush closed segments (32 leaves,
//! paid by the bounty) on their own; a lone leaf can wait in the open segment
//! until it fills. [`Wallet::insert_now`] flushes the pool's pending segments
//! from `nextIndex()` through the segment holding the wallet's last queued
//! note, from the caller's address, and is paid the bounty of the leaves it
//! inserts. Flushing the *open* segment early from an address shows that its
//! owner cares about one of that segment's leaves. Right after one's own
//! deposit from the same address this reveals nothing new (the deposit
//! already tied the address to its leaf); for a change note — the change of
//! a private call — it ties the address to that segment's spends, so prefer
//! waiting for a flush by anyone, or insert from an address that is not
//! otherwise yours. [`Wallet::ensure_spendable`] inserts only when a queued
//! note is the only one that can pay.
//!
//! Everything else here links the signing address to the pool too: a
//! deposit shows an address putting a value in; `withdraw_direct` shows the
//! sender and the recipient (through the mixnet an exit submits it instead).

use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::providers::Provider;
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::transports::RpcError;
use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::{SolCall, SolEvent};
use ark_bn254::Fr;
use nox_circuits::pool::withdrawal_hash;
use nox_eth::revert::describe_revert;
use nox_eth::rpc::{EthClient, EthError};
use nox_protocol::contracts::{NoxPool, NoxTestToken, POOL_BATCH, insertion_bounty};

use super::notes::{Origin, Stage, StoredNote};
use super::reader::{PoolReader, QueueState};
use super::{NoteState, Prover, SelectedNote, Wallet, WalletError, fr_to_u256};

/// A deposit that was mined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deposit {
    /// The transaction.
    pub tx_hash: B256,
    /// Its block.
    pub block: Option<u64>,
    /// The note's commitment.
    pub commitment: Fr,
    /// Token (zero: ETH).
    pub asset: Address,
    /// Value.
    pub value: u128,
    /// The insertion bounty sent with it, in wei.
    pub bounty: u128,
    /// The leaf index its receipt's `Queued` log gives (the note is queued
    /// in the wallet once a sync sees that log confirmed).
    pub leaf_index: Option<u64>,
}

/// What a forced insertion sends: `NoxPool.flush(leaves, bounties)` of the
/// queued leaves from `first` on, with the bounty each one's `Queued` log
/// names (the pool checks both against its chain of the queue, and pays the
/// sender the bounties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushBatch {
    /// The first leaf's index (the pool's `nextIndex()`).
    pub first: u64,
    /// The leaves, in index order.
    pub leaves: Vec<Fr>,
    /// Their bounties, in wei.
    pub bounties: Vec<U256>,
}

impl FlushBatch {
    /// The `flush` call.
    pub fn call(&self) -> NoxPool::flushCall {
        NoxPool::flushCall {
            leaves: self.leaves.iter().map(|l| fr_to_u256(*l)).collect(),
            bounties: self.bounties.clone(),
        }
    }
}

/// A forced insertion: the `flush` sent by [`Wallet::insert_now`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insertion {
    /// The transaction.
    pub tx_hash: B256,
    /// Its block.
    pub block: Option<u64>,
    /// The first leaf inserted.
    pub first: u64,
    /// Leaves inserted.
    pub count: u64,
    /// The bounty the pool paid the sender for them, in wei.
    pub bounty_paid: u128,
}

/// A direct withdrawal that was mined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Withdrawal {
    /// The transaction.
    pub tx_hash: B256,
    /// Its block.
    pub block: Option<u64>,
    /// The spent note's nullifier.
    pub nullifier: Fr,
    /// Value paid to the recipient.
    pub amount: u128,
    /// The change note's value (queued, spendable once flushed).
    pub change: u128,
}

/// The end (exclusive) of the segment holding queued leaf `last`, given the
/// pool's counters: the next multiple of `BATCH` for a closed segment, the
/// last queued leaf for the open one (which never crosses a multiple of
/// `BATCH`, so the smaller of the two is right either way).
pub fn flush_end(last: u64, state: &QueueState) -> u64 {
    (last / POOL_BATCH).saturating_add(1).saturating_mul(POOL_BATCH).min(state.queued)
}

/// The pool call of a deposit of `value` of `asset` with `secret`, and the
/// `msg.value` it sends: `deposit(value, secret)` with `value + bounty` for
/// ETH, `depositERC20(token, amount, secret)` with `bounty` for a token.
pub(crate) fn deposit_call(asset: Address, value: u128, secret: U256, bounty: u128) -> (&'static str, Vec<u8>, u128) {
    if asset == Address::ZERO {
        let data = NoxPool::depositCall { value: U256::from(value), secret }.abi_encode();
        ("NoxPool.deposit", data, value.saturating_add(bounty))
    } else {
        let data = NoxPool::depositERC20Call { token: asset, amount: U256::from(value), secret }.abi_encode();
        ("NoxPool.depositERC20", data, bounty)
    }
}

/// How a transaction to the pool ended badly.
enum SendFailure {
    /// The endpoint refused it (a revert at the gas estimate, no funds):
    /// nothing was sent.
    Refused(EthError),
    /// It was mined and reverted.
    Reverted(EthError),
    /// No answer: it may have been sent.
    Unknown(EthError),
}

impl SendFailure {
    fn into_error(self) -> EthError {
        match self {
            SendFailure::Refused(e) | SendFailure::Reverted(e) | SendFailure::Unknown(e) => e,
        }
    }
}

/// The latest block's base fee, in wei.
async fn latest_base_fee(eth: &EthClient) -> Result<u128, EthError> {
    let block = eth
        .provider()
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .map_err(|e| eth.rpc_error("eth_getBlockByNumber", e))?
        .ok_or_else(|| eth.failed("eth_getBlockByNumber", "no latest block"))?;
    block
        .header
        .base_fee_per_gas
        .map(u128::from)
        .ok_or_else(|| eth.failed("eth_getBlockByNumber", "the latest block has no base fee (NoxPool needs EIP-1559)"))
}

/// Sends `data` with `value` wei from `sender` to `to`; returns the hash once
/// the endpoint took it.
async fn send(
    eth: &EthClient,
    sender: Address,
    to: Address,
    call: &'static str,
    data: Vec<u8>,
    value: u128,
) -> Result<B256, SendFailure> {
    let tx = TransactionRequest::default().with_from(sender).with_to(to).with_input(data).with_value(U256::from(value));
    match eth.provider().send_transaction(tx).await {
        Ok(pending) => Ok(*pending.tx_hash()),
        Err(RpcError::ErrorResp(p)) => {
            let reason = match p.as_revert_data() {
                Some(data) => describe_revert(&data),
                None => format!("{} (code {})", p.message, p.code),
            };
            Err(SendFailure::Refused(EthError::Reverted { call, reason }))
        }
        Err(e) => Err(SendFailure::Unknown(eth.rpc_error(&format!("sending {call}"), e))),
    }
}

/// Waits for `tx_hash`'s receipt and requires success.
async fn mined(eth: &EthClient, call: &'static str, tx_hash: B256) -> Result<TransactionReceipt, SendFailure> {
    let receipt = eth.wait_receipt(call, tx_hash).await.map_err(SendFailure::Unknown)?;
    if !receipt.status() {
        return Err(SendFailure::Reverted(EthError::Reverted { call, reason: format!("transaction {tx_hash}") }));
    }
    Ok(receipt)
}

/// The pool's logs of type `E` in `receipt`.
fn pool_logs<E: SolEvent>(receipt: &TransactionReceipt, pool: Address) -> impl Iterator<Item = E> + '_ {
    receipt
        .inner
        .logs()
        .iter()
        .filter(move |l| l.address() == pool)
        .filter_map(|l| E::decode_log(&l.inner).ok().map(|e| e.data))
}

impl Wallet {
    async fn check_chain(&self, eth: &EthClient) -> Result<Address, WalletError> {
        let actual = eth.chain_id().await?;
        if actual != self.chain_id {
            return Err(WalletError::WrongChain { expected: self.chain_id, actual });
        }
        eth.sender().ok_or(WalletError::NoSigner("a pool transaction"))
    }

    /// Deposits `value` wei as a new note (`NoxPool.deposit(value, secret)`,
    /// paid by `eth`'s signer, with the insertion bounty on top). The note is
    /// queued once a sync sees its `Queued` log, and spendable once a flush
    /// inserts it ([`Wallet::insert_now`] forces that).
    pub async fn deposit_eth(&mut self, eth: &EthClient, value: u128) -> Result<Deposit, WalletError> {
        if value == 0 {
            return Err(WalletError::ZeroValue);
        }
        let sender = self.check_chain(eth).await?;
        self.deposit(eth, sender, Address::ZERO, value).await
    }

    /// Deposits `amount` of `token`: `approve(pool, amount)`, then
    /// `NoxPool.depositERC20` with the insertion bounty as its value. Tokens
    /// that take a fee on transfer are not supported (the pool would commit
    /// to less than the note says).
    pub async fn deposit_erc20(
        &mut self,
        eth: &EthClient,
        token: Address,
        amount: u128,
    ) -> Result<Deposit, WalletError> {
        if amount == 0 {
            return Err(WalletError::ZeroValue);
        }
        if token == Address::ZERO {
            return Err(WalletError::Eth(eth.failed("depositERC20", "the token address is zero; use deposit_eth")));
        }
        let sender = self.check_chain(eth).await?;
        let approve = NoxTestToken::approveCall { spender: self.pool, value: U256::from(amount) };
        eth.transact("token.approve", token, approve.abi_encode()).await?;
        self.deposit(eth, sender, token, amount).await
    }

    async fn deposit(
        &mut self,
        eth: &EthClient,
        sender: Address,
        asset: Address,
        value: u128,
    ) -> Result<Deposit, WalletError> {
        let bounty = insertion_bounty(latest_base_fee(eth).await?);
        let (commitment, secret) = self.new_deposit_note(asset, value);
        let secret = fr_to_u256(secret);
        let (call, data, tx_value) = deposit_call(asset, value, secret, bounty);
        if let Err(e) = self.save() {
            self.notes.retain(|n| n.commitment.0 != commitment);
            return Err(e);
        }
        let tx_hash = match send(eth, sender, self.pool, call, data, tx_value).await {
            Ok(hash) => hash,
            Err(SendFailure::Refused(e)) => {
                // Nothing was sent.
                self.forget_note(commitment)?;
                return Err(e.into());
            }
            Err(other) => return Err(other.into_error().into()),
        };
        if let Some(n) = self.notes.iter_mut().find(|n| n.commitment.0 == commitment) {
            n.origin = Origin::Deposit { tx: Some(tx_hash) };
        }
        self.save()?;
        let receipt = match mined(eth, call, tx_hash).await {
            Ok(r) => r,
            Err(SendFailure::Reverted(_)) => {
                self.forget_note(commitment)?;
                return Err(WalletError::Reverted { call, tx_hash });
            }
            Err(other) => return Err(other.into_error().into()),
        };
        let commitment_word = fr_to_u256(commitment);
        let leaf_index = pool_logs::<NoxPool::Queued>(&receipt, self.pool)
            .find(|q| q.commitment == commitment_word)
            .and_then(|q| u64::try_from(q.leafIndex).ok());
        Ok(Deposit { tx_hash, block: receipt.block_number, commitment, asset, value, bounty, leaf_index })
    }

    /// Records a new deposit note of `value` (not saved): its commitment and
    /// the `secret` the pool's deposit takes.
    pub(crate) fn new_deposit_note(&mut self, asset: Address, value: u128) -> (Fr, Fr) {
        let note = StoredNote::new(asset, value, self.owner, Origin::Deposit { tx: None });
        let out = (note.commitment.0, note.note(self.owner).secret());
        self.notes.push(note);
        out
    }

    /// Drops a note that never reached the chain, and saves.
    fn forget_note(&mut self, commitment: Fr) -> Result<(), WalletError> {
        self.notes.retain(|n| !(n.commitment.0 == commitment && n.stage == Stage::Unconfirmed));
        self.save()
    }

    /// Forgets a deposit whose transaction will not be mined (dropped, or
    /// reorganised away and not re-sent): only a note still *deposit sent*.
    pub fn forget_deposit(&mut self, commitment: Fr) -> Result<(), WalletError> {
        let n = self.notes.iter().find(|n| n.commitment.0 == commitment).ok_or(WalletError::UnknownNote)?;
        if n.state() != NoteState::Deposited {
            return Err(WalletError::WrongState { state: n.state().name(), needed: "deposit sent" });
        }
        self.forget_note(commitment)
    }

    /// What a forced insertion sends when the pool's counters are `state`:
    /// the pool's queued leaves from `state.inserted` through the end of the
    /// segment holding the wallet's last queued note ([`flush_end`]), with
    /// their bounties, taken from the wallet's synced queue. `None` when no
    /// note of the wallet waits (none queued, or the pool inserted them
    /// already).
    pub fn insertion_batch(&self, state: &QueueState) -> Result<Option<FlushBatch>, WalletError> {
        let Some(last) = self
            .notes
            .iter()
            .filter(|n| n.stage == Stage::Queued)
            .filter_map(|n| n.leaf)
            .filter(|l| *l >= state.inserted)
            .max()
        else {
            return Ok(None);
        };
        let seen = self.tree.len() + self.queued_count();
        if state.inserted < self.tree.len() || state.queued <= last {
            // The latest state has fewer leaves than the confirmed logs did.
            return Err(WalletError::PoolBehind {
                pool_inserted: state.inserted,
                pool_queued: state.queued,
                inserted: self.tree.len(),
                queued: seen,
            });
        }
        let end = flush_end(last, state);
        let queued = self.queued_leaves(state.inserted, end).ok_or(WalletError::QueueBehind {
            from: state.inserted,
            to: end,
            seen,
            inserted: self.tree.len(),
        })?;
        Ok(Some(FlushBatch {
            first: state.inserted,
            leaves: queued.iter().map(|q| q.leaf).collect(),
            bounties: queued.iter().map(|q| q.bounty).collect(),
        }))
    }

    /// Inserts the wallet's queued notes now: syncs through `eth` (with
    /// `confirmations`), reads the pool's counters at its latest block, and
    /// sends `NoxPool.flush` with [`Wallet::insertion_batch`] from `eth`'s
    /// signer, which the pool pays those leaves' bounties. `None` when no
    /// note of the wallet is queued, or when another flush inserted them
    /// first (this one then reverts, costing its gas). The notes become spendable at the next
    /// sync that sees the `Flushed` log confirmed. See the module docs on
    /// what this reveals.
    pub async fn insert_now(&mut self, eth: &EthClient, confirmations: u64) -> Result<Option<Insertion>, WalletError> {
        self.check_chain(eth).await?;
        self.sync(eth, confirmations).await?;
        let state = self.pool_queue(eth).await?;
        let Some(batch) = self.insertion_batch(&state)? else { return Ok(None) };
        let data = batch.call().abi_encode();
        let receipt = match eth.transact("NoxPool.flush", self.pool, data).await {
            Ok(r) => r,
            Err(e @ EthError::Reverted { .. }) => {
                // Someone flushed first (`WrongLeaves`, `NothingPending`):
                // done if that inserted the wallet's notes.
                let now = self.pool_queue(eth).await?;
                if now.inserted > state.inserted && matches!(self.insertion_batch(&now), Ok(None)) {
                    return Ok(None);
                }
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let flushed = pool_logs::<NoxPool::Flushed>(&receipt, self.pool).next();
        Ok(Some(Insertion {
            tx_hash: receipt.transaction_hash,
            block: receipt.block_number,
            first: batch.first,
            count: batch.leaves.len() as u64,
            bounty_paid: flushed.map_or(0, |f| f.bountyPaid.saturating_to()),
        }))
    }

    /// The pool's counters at the latest block.
    async fn pool_queue(&self, eth: &EthClient) -> Result<QueueState, WalletError> {
        Ok(QueueState::from_call(&eth.view("NoxPool", self.pool, NoxPool::queueStateCall {}).await?)?)
    }

    /// A note of `asset` worth at least `amount`, syncing (every second, for
    /// up to `wait`) while only notes on their way can pay, and inserting the
    /// wallet's queued notes once ([`Wallet::insert_now`], from `eth`'s
    /// signer) when a queued note is the only one that can.
    pub async fn ensure_spendable(
        &mut self,
        eth: &EthClient,
        reader: &dyn PoolReader,
        asset: Address,
        amount: u128,
        confirmations: u64,
        wait: Duration,
    ) -> Result<SelectedNote, WalletError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut inserted = false;
        loop {
            match self.select(asset, amount) {
                Err(WalletError::OnlyQueued { .. }) if !inserted => {
                    inserted = true;
                    self.insert_now(eth, confirmations).await?;
                }
                Err(
                    WalletError::OnlyQueued { .. }
                    | WalletError::OnlyPendingChange { .. }
                    | WalletError::OnlyUnconfirmedDeposit { .. },
                ) if tokio::time::Instant::now() < deadline => {}
                other => return other,
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.sync(reader, confirmations).await?;
        }
    }

    /// Withdraws `amount` of `asset` to `to` with a proof sent directly to
    /// `NoxPool.withdraw` from `eth`'s signer, with the change note's
    /// insertion bounty. The spent note becomes *spending* (then *spent* at
    /// the next sync); the rest is a change note, queued by the withdrawal.
    /// If the transaction is refused or reverts and the chain does not show
    /// the note spent, the note is released.
    pub async fn withdraw_direct(
        &mut self,
        eth: &EthClient,
        prover: &Prover,
        to: Address,
        asset: Address,
        amount: u128,
    ) -> Result<Withdrawal, WalletError> {
        self.check_chain(eth).await?;
        let selected = self.select(asset, amount)?;
        let bounty = insertion_bounty(latest_base_fee(eth).await?);
        let hash = withdrawal_hash(self.chain_id, &self.pool.0.0);
        let prepared = self.prepare_spend(&selected, amount, to, hash, None)?;
        let nullifier = prepared.nullifier;
        let payment = match prover.prove(&prepared) {
            Ok(p) => p,
            Err(e) => {
                self.release(nullifier)?;
                return Err(e);
            }
        };
        let (proof, inputs) = nox_protocol::contracts::pool_spend(&payment);
        let data = NoxPool::withdrawCall { proof, inputs }.abi_encode();
        match eth.transact_with_value("NoxPool.withdraw", self.pool, data, U256::from(bounty)).await {
            Ok(receipt) => Ok(Withdrawal {
                tx_hash: receipt.transaction_hash,
                block: receipt.block_number,
                nullifier,
                amount,
                change: prepared.change.value,
            }),
            Err(e @ EthError::Reverted { .. }) => {
                match self.release_checked(eth, nullifier).await {
                    Ok(()) | Err(WalletError::AlreadySpent(_)) => {}
                    Err(release) => {
                        tracing::warn!(error = %release, "could not release a note after a refused withdrawal")
                    }
                }
                Err(e.into())
            }
            // No answer: it may have been sent. The note stays spending.
            Err(e) => Err(e.into()),
        }
    }
}
