//! [`PoolReader`]: the few chain reads a wallet's sync needs, behind one
//! object-safe trait, so that the same sync runs over a direct JSON-RPC
//! endpoint ([`EthClient`] implements it here) or anonymously through the
//! mixnet (each read one `RpcCall`). Every method names its JSON-RPC
//! equivalent; an implementation must answer exactly what that request
//! answers.
//!
//! Errors are a [`ReadError`], which tells an error *answer* (the endpoint
//! refused this request: a log range too large, a block it does not have)
//! from no answer at all. The sync halves a log range only on the former.

use alloy::providers::Provider;
use alloy::rpc::types::{Filter, Log};
use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::SolEvent;
use nox_eth::rpc::{EthClient, EthError};
use nox_protocol::contracts::NoxPool;

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The endpoint answered with an error, or with something that does not
    /// decode. A smaller request may succeed.
    #[error("error answer: {0}")]
    Answer(String),
    /// No answer: unreachable, timed out, the mixnet lost the request.
    #[error("no answer: {0}")]
    Unavailable(String),
}

impl ReadError {
    /// Whether the endpoint answered (with an error) rather than not at all.
    pub fn is_error_answer(&self) -> bool {
        matches!(self, ReadError::Answer(_))
    }
}

impl From<EthError> for ReadError {
    fn from(e: EthError) -> Self {
        match e {
            EthError::Unreachable { .. } | EthError::ReceiptTimeout { .. } => ReadError::Unavailable(e.to_string()),
            _ => ReadError::Answer(e.to_string()),
        }
    }
}

/// The pool's leaf counters (`NoxPool.queueState`), as the wallet uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueState {
    /// Leaves in the tree (`nextIndex`): the next flush starts here.
    pub inserted: u64,
    /// Leaves in the tree or queued: the next leaf's index.
    pub queued: u64,
    /// The open segment's first leaf (the segment still filling, which ends
    /// at `queued`; closed segments end at multiples of `BATCH`).
    pub open_start: u64,
}

impl QueueState {
    /// The counters of a `queueState()` answer; an index beyond `u64` is an
    /// error answer.
    pub fn from_call(r: &NoxPool::queueStateReturn) -> Result<QueueState, ReadError> {
        let index = |u: U256, what: &str| {
            u64::try_from(u).map_err(|_| ReadError::Answer(format!("queueState: {what} {u} is beyond u64")))
        };
        Ok(QueueState {
            inserted: index(r.inserted, "inserted")?,
            queued: index(r.queued, "queued")?,
            open_start: index(r.openStart, "openStart")?,
        })
    }
}

/// The chain reads of a wallet sync. Object-safe (`&dyn PoolReader`); the
/// futures are `Send`.
#[async_trait::async_trait]
pub trait PoolReader: Send + Sync {
    /// `eth_chainId`.
    async fn chain_id(&self) -> Result<u64, ReadError>;

    /// `eth_blockNumber`.
    async fn block_number(&self) -> Result<u64, ReadError>;

    /// `eth_getBlockByNumber(n, false)`'s `hash`; `None` when the endpoint
    /// has no block `n` (a `null` answer).
    async fn block_hash(&self, number: u64) -> Result<Option<B256>, ReadError>;

    /// `eth_getBlockByNumber(n, false)`'s `timestamp`; `None` when the
    /// endpoint has no block `n`.
    async fn block_timestamp(&self, number: u64) -> Result<Option<u64>, ReadError>;

    /// `eth_getLogs({address: pool, fromBlock: from, toBlock: to})`, both
    /// ends included. The sync reads `Queued`, `Flushed`, `Withdrawn` and
    /// `Relayed` and ignores every other log, so an implementation may
    /// filter on those topics ([`pool_topics`]; this one does) or not.
    async fn logs(&self, pool: Address, from: u64, to: u64) -> Result<Vec<Log>, ReadError>;

    /// `eth_call` of `NoxPool.knownRoots(root)` at block `block`.
    async fn known_root(&self, pool: Address, root: U256, block: u64) -> Result<bool, ReadError>;

    /// `eth_call` of `NoxPool.queueState()` at block `block`.
    async fn queue_state(&self, pool: Address, block: u64) -> Result<QueueState, ReadError>;

    /// `eth_call` of `NoxPool.nullifierSpent(nullifier)` at block `block`.
    async fn nullifier_spent(&self, pool: Address, nullifier: U256, block: u64) -> Result<bool, ReadError>;
}

/// The topics of the pool events the sync reads (`Queued`, `Flushed`,
/// `Withdrawn`, `Relayed`), for an `eth_getLogs` filter.
pub fn pool_topics() -> [B256; 4] {
    [
        NoxPool::Queued::SIGNATURE_HASH,
        NoxPool::Flushed::SIGNATURE_HASH,
        NoxPool::Withdrawn::SIGNATURE_HASH,
        NoxPool::Relayed::SIGNATURE_HASH,
    ]
}

#[async_trait::async_trait]
impl PoolReader for EthClient {
    async fn chain_id(&self) -> Result<u64, ReadError> {
        Ok(EthClient::chain_id(self).await?)
    }

    async fn block_number(&self) -> Result<u64, ReadError> {
        Ok(EthClient::block_number(self).await?)
    }

    async fn block_hash(&self, number: u64) -> Result<Option<B256>, ReadError> {
        Ok(EthClient::block_hash(self, number).await?)
    }

    async fn block_timestamp(&self, number: u64) -> Result<Option<u64>, ReadError> {
        let block = self
            .provider()
            .get_block_by_number(number.into())
            .await
            .map_err(|e| self.rpc_error("eth_getBlockByNumber", e))?;
        Ok(block.map(|b| b.header.timestamp))
    }

    async fn logs(&self, pool: Address, from: u64, to: u64) -> Result<Vec<Log>, ReadError> {
        let filter = Filter::new().address(pool).event_signature(pool_topics().to_vec()).from_block(from).to_block(to);
        Ok(EthClient::logs(self, &filter).await?)
    }

    async fn known_root(&self, pool: Address, root: U256, block: u64) -> Result<bool, ReadError> {
        Ok(self.view_at("NoxPool", pool, NoxPool::knownRootsCall { root }, block).await?)
    }

    async fn queue_state(&self, pool: Address, block: u64) -> Result<QueueState, ReadError> {
        QueueState::from_call(&self.view_at("NoxPool", pool, NoxPool::queueStateCall {}, block).await?)
    }

    async fn nullifier_spent(&self, pool: Address, nullifier: U256, block: u64) -> Result<bool, ReadError> {
        Ok(self.view_at("NoxPool", pool, NoxPool::nullifierSpentCall { nullifier }, block).await?)
    }
}
