//! [`MixnetReader`]: the wallet's chain reads ([`PoolReader`]) as `RpcCall`s
//! through the mixnet, so the endpoint that answers them — the exit's — never
//! learns which machine follows the pool, and an observer of the user's link
//! sees only mixnet packets.
//!
//! Each read is one JSON-RPC request carried by [`Client::rpc`]: an error
//! object, an exit's refusal or an answer that does not decode is an *error
//! answer* (a smaller log range may pass); no answer at all (timeouts, no
//! route, no exit) is *unavailable*, and the sync keeps its progress for the
//! next attempt.

use alloy::rpc::types::Log;
use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::SolCall;
use async_trait::async_trait;
use nox_protocol::contracts::NoxPool;
use serde_json::{Value, json};

use crate::client::{Client, ClientError};
use crate::private::{CallError, parse_quantity};
use crate::wallet::{PoolReader, QueueState, ReadError};

/// Pool reads through the mixnet for the chain `chain_id`.
#[derive(Debug, Clone, Copy)]
pub struct MixnetReader<'a> {
    client: &'a Client,
    chain_id: u64,
}

impl<'a> MixnetReader<'a> {
    /// Reads for `chain_id` through `client`.
    pub fn new(client: &'a Client, chain_id: u64) -> Self {
        MixnetReader { client, chain_id }
    }

    async fn rpc(&self, method: &str, params: Value) -> Result<Value, ReadError> {
        self.client.rpc(self.chain_id, method, params).await.map_err(|e| match e {
            CallError::Client(
                e @ (ClientError::Timeout { .. }
                | ClientError::NoExit(_)
                | ClientError::NoRoute(_)
                | ClientError::NoDescriptors(_)
                | ClientError::Entry(_)
                | ClientError::Closed
                | ClientError::QueueFull(_)),
            ) => ReadError::Unavailable(format!("{method}: {e}")),
            other => ReadError::Answer(format!("{method}: {other}")),
        })
    }

    async fn view<C: SolCall>(&self, pool: Address, call: C, block: u64) -> Result<C::Return, ReadError> {
        let params = json!([{"to": pool, "data": format!("0x{}", hex::encode(call.abi_encode()))}, quantity(block)]);
        let result = self.rpc("eth_call", params).await?;
        let text = result.as_str().ok_or_else(|| ReadError::Answer("eth_call: the result is not a string".into()))?;
        let bytes = hex::decode(text.trim_start_matches("0x"))
            .map_err(|e| ReadError::Answer(format!("eth_call: the result is not hex: {e}")))?;
        C::abi_decode_returns(&bytes).map_err(|e| ReadError::Answer(format!("eth_call: {e}")))
    }
}

fn quantity(n: u64) -> String {
    format!("{n:#x}")
}

fn number(v: &Value, what: &str) -> Result<u64, ReadError> {
    v.as_str()
        .and_then(parse_quantity)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| ReadError::Answer(format!("{what}: not a quantity: {v}")))
}

#[async_trait]
impl PoolReader for MixnetReader<'_> {
    async fn chain_id(&self) -> Result<u64, ReadError> {
        number(&self.rpc("eth_chainId", json!([])).await?, "eth_chainId")
    }

    async fn block_number(&self) -> Result<u64, ReadError> {
        number(&self.rpc("eth_blockNumber", json!([])).await?, "eth_blockNumber")
    }

    async fn block_hash(&self, n: u64) -> Result<Option<B256>, ReadError> {
        let block = self.rpc("eth_getBlockByNumber", json!([quantity(n), false])).await?;
        if block.is_null() {
            return Ok(None);
        }
        block
            .get("hash")
            .and_then(Value::as_str)
            .and_then(|h| h.parse().ok())
            .map(Some)
            .ok_or_else(|| ReadError::Answer(format!("eth_getBlockByNumber: block {n} has no hash")))
    }

    async fn block_timestamp(&self, n: u64) -> Result<Option<u64>, ReadError> {
        let block = self.rpc("eth_getBlockByNumber", json!([quantity(n), false])).await?;
        if block.is_null() {
            return Ok(None);
        }
        let timestamp = block
            .get("timestamp")
            .ok_or_else(|| ReadError::Answer(format!("eth_getBlockByNumber: block {n} has no timestamp")))?;
        number(timestamp, "eth_getBlockByNumber's timestamp").map(Some)
    }

    async fn logs(&self, pool: Address, from: u64, to: u64) -> Result<Vec<Log>, ReadError> {
        let topics: Vec<B256> = crate::wallet::pool_topics().to_vec();
        let filter =
            json!([{"address": pool, "fromBlock": quantity(from), "toBlock": quantity(to), "topics": [topics]}]);
        let logs = self.rpc("eth_getLogs", filter).await?;
        serde_json::from_value(logs).map_err(|e| ReadError::Answer(format!("eth_getLogs: {e}")))
    }

    async fn known_root(&self, pool: Address, root: U256, block: u64) -> Result<bool, ReadError> {
        self.view(pool, NoxPool::knownRootsCall { root }, block).await
    }

    async fn queue_state(&self, pool: Address, block: u64) -> Result<QueueState, ReadError> {
        QueueState::from_call(&self.view(pool, NoxPool::queueStateCall {}, block).await?)
    }

    async fn nullifier_spent(&self, pool: Address, nullifier: U256, block: u64) -> Result<bool, ReadError> {
        self.view(pool, NoxPool::nullifierSpentCall { nullifier }, block).await
    }
}
