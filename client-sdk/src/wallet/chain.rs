//! The wallet's own transactions, sent directly over JSON-RPC and signed by
//! the caller's [`EthClient`]: deposits (public by nature: they are funded
//! from the caller's address), `flush` of its pending change notes, and a
//! direct withdrawal.
//!
//! A deposit's note is recorded and saved *before* its transaction is sent,
//! then again with the transaction hash, so a crash after sending cannot lose
//! the note: the sync finds it in the tree by its commitment. A deposit the
//! endpoint refuses outright, or that reverts, is forgotten.
//!
//! **Privacy.** Everything here links the signing address to the pool. A
//! deposit shows an address putting a value in; `flush_own` shows an address
//! flushing *these* nullifiers, which ties it to the spends that revealed
//! them (a withdrawal's recipient, a relayed call): flush from an address
//! that is not otherwise yours, or leave flushing to anyone who flushes
//! everyone's pending notes. `withdraw_direct` shows the sender and the
//! recipient; through the mixnet an exit submits it instead.

use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::transports::RpcError;
use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::SolCall;
use ark_bn254::Fr;
use nox_circuits::pool::withdrawal_hash;
use nox_eth::rpc::{EthClient, EthError};
use nox_protocol::contracts::{NoxPool, NoxTestToken};

use super::notes::{FieldHex, Origin, Stage, StoredNote};
use super::reader::PoolReader;
use super::{Prover, SelectedNote, Wallet, WalletError, fr_to_u256};

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
}

/// A `flush` of the wallet's pending change notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushReceipt {
    /// The transaction.
    pub tx_hash: B256,
    /// Its block.
    pub block: Option<u64>,
    /// The spends whose change notes it inserted, by nullifier.
    pub nullifiers: Vec<Fr>,
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
    /// The change note's value (pending until flushed).
    pub change: u128,
}

impl Wallet {
    async fn check_chain(&self, eth: &EthClient) -> Result<Address, WalletError> {
        let actual = eth.chain_id().await?;
        if actual != self.chain_id {
            return Err(WalletError::WrongChain { expected: self.chain_id, actual });
        }
        eth.sender().ok_or(WalletError::NoSigner("a pool transaction"))
    }

    /// Deposits `value` wei as a new note (`NoxPool.deposit(secret)`, paid by
    /// `eth`'s signer). The note is spendable once a sync finds it.
    pub async fn deposit_eth(&mut self, eth: &EthClient, value: u128) -> Result<Deposit, WalletError> {
        if value == 0 {
            return Err(WalletError::ZeroValue);
        }
        let sender = self.check_chain(eth).await?;
        self.deposit(eth, sender, Address::ZERO, value).await
    }

    /// Deposits `amount` of `token`: `approve(pool, amount)`, then
    /// `NoxPool.depositERC20`. Tokens that take a fee on transfer are not
    /// supported (the pool would commit to less than the note says).
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
        let (commitment, secret) = self.new_deposit_note(asset, value);
        let secret = fr_to_u256(secret);
        let (call, data, tx_value): (&'static str, Vec<u8>, U256) = if asset == Address::ZERO {
            ("NoxPool.deposit", NoxPool::depositCall { secret }.abi_encode(), U256::from(value))
        } else {
            let data = NoxPool::depositERC20Call { token: asset, amount: U256::from(value), secret }.abi_encode();
            ("NoxPool.depositERC20", data, U256::ZERO)
        };
        if let Err(e) = self.save() {
            self.notes.retain(|n| n.commitment.0 != commitment);
            return Err(e);
        }
        let tx =
            TransactionRequest::default().with_from(sender).with_to(self.pool).with_input(data).with_value(tx_value);
        let pending = match eth.provider().send_transaction(tx).await {
            Ok(pending) => pending,
            Err(e) => {
                let refused = matches!(e, RpcError::ErrorResp(_));
                let err = eth.rpc_error(&format!("sending {call}"), e);
                if refused {
                    // Refused (a revert at the gas estimate, no funds): nothing was sent.
                    self.forget_note(commitment)?;
                }
                return Err(err.into());
            }
        };
        let tx_hash = *pending.tx_hash();
        if let Some(n) = self.notes.iter_mut().find(|n| n.commitment.0 == commitment) {
            n.origin = Origin::Deposit { tx: Some(tx_hash) };
        }
        self.save()?;
        let receipt = eth.wait_receipt(call, tx_hash).await?;
        if !receipt.status() {
            self.forget_note(commitment)?;
            return Err(WalletError::Reverted { call, tx_hash });
        }
        Ok(Deposit { tx_hash, block: receipt.block_number, commitment, asset, value })
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
        if n.state() != super::NoteState::Deposited {
            return Err(WalletError::WrongState { state: n.state().name(), needed: "deposit sent" });
        }
        self.forget_note(commitment)
    }

    /// Nullifiers of this wallet's spends whose (kept) change note is still
    /// pending.
    pub(crate) fn pending_change_parents(&self) -> Vec<Fr> {
        self.notes
            .iter()
            .filter_map(|n| match n.stage {
                Stage::Spending { nullifier, change: Some(c) } | Stage::Spent { nullifier, change: Some(c) } => {
                    let pending = self.notes.iter().any(|m| {
                        m.commitment == c
                            && m.stage == Stage::Unconfirmed
                            && matches!(m.origin, Origin::Change { parent } if parent == FieldHex(nullifier.0))
                    });
                    pending.then_some(nullifier.0)
                }
                _ => None,
            })
            .collect()
    }

    /// Sends `NoxPool.flush` for this wallet's spends whose change note the
    /// pool holds pending (`nullifiers(n)` above 1); `None` when there is
    /// none. The change notes become spendable at the next sync that sees
    /// their `Inserted`. See the module docs on what this reveals.
    pub async fn flush_own(&mut self, eth: &EthClient) -> Result<Option<FlushReceipt>, WalletError> {
        self.check_chain(eth).await?;
        let mut spent = Vec::new();
        let mut flushed = Vec::new();
        for nullifier in self.pending_change_parents() {
            let state =
                eth.view("NoxPool", self.pool, NoxPool::nullifiersCall { nullifier: fr_to_u256(nullifier) }).await?;
            if state > U256::from(1u8) {
                spent.push(fr_to_u256(nullifier));
                flushed.push(nullifier);
            }
        }
        if spent.is_empty() {
            return Ok(None);
        }
        let receipt = eth.transact("NoxPool.flush", self.pool, NoxPool::flushCall { spent }.abi_encode()).await?;
        Ok(Some(FlushReceipt { tx_hash: receipt.transaction_hash, block: receipt.block_number, nullifiers: flushed }))
    }

    /// A note of `asset` worth at least `amount`, flushing this wallet's
    /// pending change and syncing (every second, for up to `wait`) when a
    /// pending change note is the only obstacle.
    pub async fn ensure_spendable(
        &mut self,
        eth: &EthClient,
        reader: &dyn PoolReader,
        asset: Address,
        amount: u128,
        confirmations: u64,
        wait: Duration,
    ) -> Result<SelectedNote, WalletError> {
        match self.select(asset, amount) {
            Err(WalletError::OnlyPendingChange { .. }) => {}
            other => return other,
        }
        self.flush_own(eth).await?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.sync(reader, confirmations).await?;
            match self.select(asset, amount) {
                Err(WalletError::OnlyPendingChange { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                other => return other,
            }
        }
    }

    /// Withdraws `amount` of `asset` to `to` with a proof sent directly to
    /// `NoxPool.withdraw` from `eth`'s signer. The spent note becomes
    /// *spending* (then *spent* at the next sync); the rest is a pending
    /// change note. If the transaction is refused or reverts and the chain
    /// does not show the note spent, the note is released.
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
        let hash = withdrawal_hash(self.chain_id, &self.pool.0.0);
        let prepared = self.prepare_spend(&selected, amount, to, hash)?;
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
        match eth.transact("NoxPool.withdraw", self.pool, data).await {
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
