//! The operator's side of NoxRegistry: joining the network, checking on a
//! node, and leaving it. `nox register`, `nox status`, `nox unstake` and
//! `nox withdraw-stake` are these functions; the devnet registers its nodes
//! with them.
//!
//! Joining is a commitment and a reveal (docs/protocol.md, "NoxRegistry"):
//! [`commit_registration`] stakes and commits to a hash of the node id, the
//! wallet and a salt; [`reveal_registration`], in a later block, names the
//! node id and gets the layer the commitment's block hash gives. The salt is
//! derived from the wallet's key, the chain and the node id, so an
//! interrupted `nox register` resumes with the same commitment. [`register`]
//! does both.
//!
//! Each function first checks that the endpoint serves the configured chain
//! and that the registry address holds a contract. Before sending anything it
//! reads the registry's state and refuses, with a typed [`OperatorError`]
//! carrying the figures, what the contract would refuse anyway (already
//! registered, identity key taken, stake below the minimum, not enough tokens,
//! unstake delay not over, …): an operator learns what is wrong without paying
//! for a reverted transaction. What still reverts (a pause, a race with
//! another transaction) is decoded with the contracts' error types into
//! [`EthError::Reverted`].
//!
//! The result structs serialize to one JSON object with amounts as decimal
//! strings.

use std::time::Duration;

use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_sol_types::SolCall;
use nox_protocol::Role;
use nox_protocol::contracts::{NoxRegistry, NoxTestToken, registration_commitment};
use serde::{Serialize, Serializer};

use crate::amount::{MAX_DECIMALS, tokens};
use crate::rpc::{EthClient, EthError};

/// How long one JSON-RPC request may take.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest multiaddr the registry accepts, in bytes (`MAX_MULTIADDR_LEN`).
pub const MAX_MULTIADDR_LEN: usize = 256;
/// Blocks after its own in which a commitment can be revealed
/// (`COMMITMENT_WINDOW`).
pub const COMMITMENT_WINDOW: u64 = 256;
/// How long [`reveal_registration`] waits for the block after the
/// commitment's before giving up (a later `nox register` resumes).
pub const NEXT_BLOCK_TIMEOUT: Duration = Duration::from_secs(300);
/// The local development chain (anvil), which mines only when asked: there
/// [`reveal_registration`] asks for the next block (`evm_mine`) instead of
/// waiting for it.
pub const DEVNET_CHAIN_ID: u64 = 31337;

/// Where the registry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryTarget {
    /// JSON-RPC endpoint.
    pub rpc_url: String,
    /// Chain id the endpoint must report.
    pub chain_id: u64,
    /// NoxRegistry's address.
    pub registry: Address,
}

/// Who acts: the operator's wallet (it signs and holds the stake) and the
/// node id it registers as `identityKey`.
#[derive(Clone)]
pub struct Operator {
    /// The wallet.
    pub wallet: PrivateKeySigner,
    /// The node's identity key.
    pub node_id: B256,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator").field("wallet", &self.wallet.address()).field("node_id", &self.node_id).finish()
    }
}

/// Why an operator command failed. Each variant carries the figures an
/// operator needs to act on it; amounts are in token base units and printed
/// in tokens as well.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// No contract code at `chain.registry`.
    #[error("there is no contract at chain.registry {registry} on chain {chain_id}; is it this network's NoxRegistry?")]
    NoRegistry {
        /// `chain.registry`.
        registry: Address,
        /// The chain.
        chain_id: u64,
    },
    /// `register`: the wallet is registered already.
    #[error(
        "wallet {operator} is already registered (node id {node_id}, layer {layer}, stake {}); \
         `nox status` shows its record",
        tokens(*stake, *decimals)
    )]
    AlreadyRegistered {
        /// The wallet.
        operator: Address,
        /// The identity key it registered.
        node_id: B256,
        /// Its layer.
        layer: u8,
        /// Its active stake.
        stake: U256,
        /// The token's decimals.
        decimals: u8,
    },
    /// `register`: the wallet's previous stake is still waiting to be withdrawn.
    #[error(
        "wallet {operator} has an unstake of {} pending, withdrawable from unix time {available_at}; \
         run `nox withdraw-stake` once the delay is over, then register again",
        tokens(*amount, *decimals)
    )]
    UnstakePending {
        /// The wallet.
        operator: Address,
        /// The pending amount.
        amount: U256,
        /// Unix time from which it can be withdrawn.
        available_at: u64,
        /// The token's decimals.
        decimals: u8,
    },
    /// `register`: another operator registered this node id (it holds the
    /// key, registered or not, with an older commitment).
    #[error(
        "node id {node_id} (the identity key in node.keys_dir) is already registered by operator {holder}; \
         a node id belongs to the wallet that first registered it"
    )]
    IdentityTaken {
        /// The node id.
        node_id: B256,
        /// The operator holding it.
        holder: Address,
    },
    /// `register`: the stake is below the registry's `minStake`.
    #[error(
        "a stake of {} is below the registry's minimum stake of {}",
        tokens(*stake, *decimals),
        tokens(*min, *decimals)
    )]
    BelowMinimumStake {
        /// The stake asked for.
        stake: U256,
        /// `minStake`.
        min: U256,
        /// The token's decimals.
        decimals: u8,
    },
    /// `register`: the wallet holds fewer stake tokens than the stake.
    #[error(
        "wallet {operator} holds {} of the stake token {token}, but the stake is {}",
        tokens(*have, *decimals),
        tokens(*need, *decimals)
    )]
    InsufficientBalance {
        /// The wallet.
        operator: Address,
        /// The stake token.
        token: Address,
        /// Its balance.
        have: U256,
        /// The stake.
        need: U256,
        /// The token's decimals.
        decimals: u8,
    },
    /// `register`: the wallet has a commitment pending for another node id
    /// (or another chain or registry's salt).
    #[error(
        "wallet {operator} has a registration commitment of {} pending for another node id; \
         `nox unstake` cancels it (the stake is withdrawable after the unstake delay)",
        tokens(*amount, *decimals)
    )]
    OtherCommitment {
        /// The wallet.
        operator: Address,
        /// The stake it holds.
        amount: U256,
        /// The token's decimals.
        decimals: u8,
    },
    /// `register`: the commitment can no longer be revealed.
    #[error(
        "the registration commitment of wallet {operator} could be revealed until block {last_block} and the chain \
         is past it; `nox unstake` cancels it (the stake is withdrawable after the unstake delay)"
    )]
    CommitmentExpired {
        /// The wallet.
        operator: Address,
        /// The last block in which it could be revealed.
        last_block: u64,
    },
    /// `register`: no block came after the commitment's in time.
    #[error(
        "the registration commitment is in block {commit_block}, but no later block came within {waited_secs} s; \
         run `nox register` again: it reveals the same commitment"
    )]
    NoNextBlock {
        /// The commitment's block.
        commit_block: u64,
        /// How long it waited.
        waited_secs: u64,
    },
    /// `register`: the registry is paused (registrations and stake additions stop).
    #[error("NoxRegistry at {registry} is paused: it takes no registrations until its admin unpauses it")]
    RegistryPaused {
        /// The registry.
        registry: Address,
    },
    /// `unstake`: the wallet is not registered.
    #[error("wallet {operator} is not registered{}", pending_note(*pending, *available_at, *decimals))]
    NotRegistered {
        /// The wallet.
        operator: Address,
        /// Its pending unstake (zero if none).
        pending: U256,
        /// When the pending unstake becomes withdrawable (zero if none).
        available_at: u64,
        /// The token's decimals.
        decimals: u8,
    },
    /// `withdraw-stake`: nothing to withdraw.
    #[error("wallet {operator} has no pending unstake; `nox unstake` starts one")]
    NoPendingUnstake {
        /// The wallet.
        operator: Address,
    },
    /// `withdraw-stake`: the unstake delay is not over.
    #[error(
        "the unstake delay is not over: the stake can be withdrawn from unix time {available_at}, \
         the chain's time is {now} ({} s to go)",
        available_at.saturating_sub(*now)
    )]
    UnstakeDelayNotOver {
        /// Unix time from which the stake can be withdrawn.
        available_at: u64,
        /// The latest block's timestamp.
        now: u64,
    },
    /// The multiaddr is one the registry refuses (empty or too long).
    #[error("multiaddr `{multiaddr}`: {reason}")]
    InvalidMultiaddr {
        /// The multiaddr.
        multiaddr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The endpoint failed, a transaction reverted or was not mined, or the
    /// wallet cannot pay for gas.
    #[error(transparent)]
    Eth(#[from] EthError),
}

fn pending_note(pending: U256, available_at: u64, decimals: u8) -> String {
    if pending.is_zero() {
        String::new()
    } else {
        format!(
            "; its unstake of {} is pending, withdrawable from unix time {available_at} (`nox withdraw-stake`)",
            tokens(pending, decimals)
        )
    }
}

/// What the registry itself refuses of a multiaddr: empty or longer than
/// [`MAX_MULTIADDR_LEN`]. (Whether peers can dial it is the caller's check.)
pub fn check_multiaddr_length(multiaddr: &str) -> Result<(), OperatorError> {
    let invalid = |reason: String| OperatorError::InvalidMultiaddr { multiaddr: multiaddr.to_string(), reason };
    if multiaddr.is_empty() {
        return Err(invalid("empty".to_string()));
    }
    if multiaddr.len() > MAX_MULTIADDR_LEN {
        return Err(invalid(format!("{} bytes; the registry accepts at most {MAX_MULTIADDR_LEN}", multiaddr.len())));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

fn decimal<S: Serializer>(v: &U256, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The first step of `nox register`: the stake is held by a commitment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Committed {
    /// The `commit` transaction; `None` when the commitment was there already.
    pub tx_hash: Option<B256>,
    /// The `approve` transaction, if the allowance had to be raised.
    pub approve_tx_hash: Option<B256>,
    /// The commitment.
    pub commitment: B256,
    /// The block that mined it.
    pub block: u64,
    /// The stake it holds, in token base units.
    #[serde(serialize_with = "decimal")]
    pub stake: U256,
    /// The registry's `minStake`.
    #[serde(serialize_with = "decimal")]
    pub min_stake: U256,
    /// The stake token.
    pub token: Address,
    /// Its decimals.
    pub token_decimals: u8,
}

/// `nox register`: the node is registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registered {
    /// The `register` transaction.
    pub tx_hash: B256,
    /// The `commit` transaction; `None` when an earlier run sent it.
    pub commit_tx_hash: Option<B256>,
    /// The `approve` transaction, if the allowance had to be raised.
    pub approve_tx_hash: Option<B256>,
    /// The wallet.
    pub operator: Address,
    /// The node id registered as `identityKey`.
    pub node_id: B256,
    /// Relay or exit.
    pub role: Role,
    /// The layer the registry assigned.
    pub layer: u8,
    /// The registered multiaddr.
    pub multiaddr: String,
    /// The stake, in token base units.
    #[serde(serialize_with = "decimal")]
    pub stake: U256,
    /// The registry's `minStake`.
    #[serde(serialize_with = "decimal")]
    pub min_stake: U256,
    /// The stake token.
    pub token: Address,
    /// Its decimals.
    pub token_decimals: u8,
    /// The wallet's token balance after staking.
    #[serde(serialize_with = "decimal")]
    pub token_balance: U256,
}

/// A node's record in the registry and its wallet's funds (`nox status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistryStatus {
    /// The wallet.
    pub operator: Address,
    /// This node's id (from the identity key).
    pub node_id: B256,
    /// Whether the wallet is registered (part of the topology).
    pub registered: bool,
    /// Registered with at least the minimum stake (`isActive`).
    pub active: bool,
    /// The registered role (none while unregistered).
    pub role: Option<Role>,
    /// The registered layer; for an unregistered wallet with a commitment
    /// that can be revealed, the layer it gives a relay; otherwise none (a
    /// relay's layer is fixed only once its commitment is mined).
    pub layer: Option<u8>,
    /// The registered multiaddr.
    pub multiaddr: Option<String>,
    /// The identity key the wallet registered, when it is not this node's id.
    pub registered_node_id: Option<B256>,
    /// Active stake, in token base units.
    #[serde(serialize_with = "decimal")]
    pub stake: U256,
    /// The registry's `minStake`.
    #[serde(serialize_with = "decimal")]
    pub min_stake: U256,
    /// Stake waiting for the unstake delay.
    #[serde(serialize_with = "decimal")]
    pub pending_unstake: U256,
    /// Stake held by a registration commitment not yet revealed.
    #[serde(serialize_with = "decimal")]
    pub committed_stake: U256,
    /// Unix time from which the pending unstake can be withdrawn.
    pub unstake_available_at: Option<u64>,
    /// The registry's `unstakeDelay`, in seconds.
    pub unstake_delay_secs: u64,
    /// The stake token.
    pub token: Address,
    /// Its decimals.
    pub token_decimals: u8,
    /// The wallet's token balance.
    #[serde(serialize_with = "decimal")]
    pub token_balance: U256,
    /// The wallet's ETH balance, in wei.
    #[serde(serialize_with = "decimal")]
    pub eth_balance: U256,
}

/// `nox unstake`: the node left the topology; its stake waits for the delay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnstakeRequested {
    /// The `requestUnstake` transaction.
    pub tx_hash: B256,
    /// The wallet.
    pub operator: Address,
    /// The amount that became pending, in token base units.
    #[serde(serialize_with = "decimal")]
    pub amount: U256,
    /// Unix time from which `nox withdraw-stake` can withdraw it.
    pub available_at: u64,
}

/// `nox withdraw-stake`: the pending unstake is back in the wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Withdrawn {
    /// The `executeUnstake` transaction.
    pub tx_hash: B256,
    /// The wallet.
    pub operator: Address,
    /// The amount withdrawn, in token base units.
    #[serde(serialize_with = "decimal")]
    pub amount: U256,
    /// The wallet's token balance afterwards.
    #[serde(serialize_with = "decimal")]
    pub token_balance: U256,
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/// Registers this node: [`commit_registration`] (with `approve` if the
/// allowance is short), then [`reveal_registration`] once a later block is
/// mined. `stake` defaults to the registry's `minStake`; a commitment left
/// by an interrupted run is revealed with the stake it holds. Refuses before
/// sending anything if the wallet is registered or has an unstake pending,
/// the node id is taken, the stake is below the minimum, the wallet lacks the
/// tokens or any ETH.
pub async fn register(
    t: &RegistryTarget,
    op: &Operator,
    role: Role,
    multiaddr: &str,
    stake: Option<U256>,
) -> Result<Registered, OperatorError> {
    check_multiaddr_length(multiaddr)?;
    let committed = commit_registration(t, op, stake).await?;
    let mut registered = reveal_registration(t, op, role, multiaddr).await?;
    registered.commit_tx_hash = committed.tx_hash;
    registered.approve_tx_hash = committed.approve_tx_hash;
    Ok(registered)
}

/// The salt of this operator's commitment: secret (it is derived from the
/// wallet's key) and the same on every run for one chain, registry, wallet
/// and node id.
pub fn registration_salt(t: &RegistryTarget, op: &Operator) -> B256 {
    let mut input = Vec::with_capacity(128);
    input.extend_from_slice(b"NOX registration salt v1");
    input.extend_from_slice(&t.chain_id.to_be_bytes());
    input.extend_from_slice(t.registry.as_slice());
    input.extend_from_slice(op.wallet.to_bytes().as_slice());
    input.extend_from_slice(op.node_id.as_slice());
    keccak256(&input)
}

/// The first step of joining: stakes `stake` (default `minStake`) under a
/// commitment to this node id (`approve` first if the allowance is short).
/// If the wallet's pending commitment is this node's already, returns it
/// without sending anything.
pub async fn commit_registration(
    t: &RegistryTarget,
    op: &Operator,
    stake: Option<U256>,
) -> Result<Committed, OperatorError> {
    let chain = Chain::connect(t, op).await?;
    let operator = chain.operator;
    let node_id = op.node_id;
    let token = chain.stake_token().await?;
    let decimals = chain.decimals(token).await?;

    let node = chain.node().await?;
    if node.registered {
        return Err(OperatorError::AlreadyRegistered {
            operator,
            node_id: node.identityKey,
            layer: node.layer,
            stake: node.stake,
            decimals,
        });
    }
    if !node.pendingUnstake.is_zero() {
        return Err(OperatorError::UnstakePending {
            operator,
            amount: node.pendingUnstake,
            available_at: node.unstakeAvailableAt,
            decimals,
        });
    }
    let claim = chain.registry_view(NoxRegistry::identityClaimsCall { identityKey: node_id }).await?;
    if !claim.operator.is_zero() && claim.operator != operator {
        return Err(OperatorError::IdentityTaken { node_id, holder: claim.operator });
    }
    let min_stake = chain.registry_view(NoxRegistry::minStakeCall {}).await?;
    let commitment = registration_commitment(node_id, operator, registration_salt(t, op));
    let pending = chain.registry_view(NoxRegistry::commitmentsCall { operator }).await?;
    if !pending.hash.is_zero() {
        if pending.hash != commitment {
            return Err(OperatorError::OtherCommitment { operator, amount: pending.amount, decimals });
        }
        return Ok(Committed {
            tx_hash: None,
            approve_tx_hash: None,
            commitment,
            block: pending.blockNumber,
            stake: pending.amount,
            min_stake,
            token,
            token_decimals: decimals,
        });
    }
    let stake = stake.unwrap_or(min_stake);
    if stake < min_stake {
        return Err(OperatorError::BelowMinimumStake { stake, min: min_stake, decimals });
    }
    let balance = chain.token_balance(token).await?;
    if balance < stake {
        return Err(OperatorError::InsufficientBalance { operator, token, have: balance, need: stake, decimals });
    }
    let eth = chain.eth_balance().await?;
    if chain.registry_view(NoxRegistry::pausedCall {}).await? {
        return Err(OperatorError::RegistryPaused { registry: t.registry });
    }
    if eth.is_zero() {
        return Err(EthError::NoGasFunds { sender: operator, balance: eth }.into());
    }

    let allowance =
        chain.view("token", token, NoxTestToken::allowanceCall { owner: operator, spender: t.registry }).await?;
    let approve_tx_hash = if allowance < stake {
        let approve = NoxTestToken::approveCall { spender: t.registry, value: stake };
        Some(chain.client.transact("token.approve", token, approve.abi_encode()).await?.transaction_hash)
    } else {
        None
    };
    let call = NoxRegistry::commitCall { commitment, amount: stake };
    let receipt = chain.client.transact("NoxRegistry.commit", t.registry, call.abi_encode()).await?;
    let block = match receipt.decoded_log::<NoxRegistry::RegistrationCommitted>() {
        Some(log) => log.data.blockNumber,
        None => chain.registry_view(NoxRegistry::commitmentsCall { operator }).await?.blockNumber,
    };
    Ok(Committed {
        tx_hash: Some(receipt.transaction_hash),
        approve_tx_hash,
        commitment,
        block,
        stake,
        min_stake,
        token,
        token_decimals: decimals,
    })
}

/// The second step of joining: waits (up to [`NEXT_BLOCK_TIMEOUT`]) for a
/// block after the commitment's, then reveals this node id as `role` at
/// `multiaddr`. The layer is the registry's, read from its event.
pub async fn reveal_registration(
    t: &RegistryTarget,
    op: &Operator,
    role: Role,
    multiaddr: &str,
) -> Result<Registered, OperatorError> {
    check_multiaddr_length(multiaddr)?;
    let chain = Chain::connect(t, op).await?;
    let operator = chain.operator;
    let node_id = op.node_id;
    let token = chain.stake_token().await?;
    let decimals = chain.decimals(token).await?;
    let pending = chain.registry_view(NoxRegistry::commitmentsCall { operator }).await?;
    let salt = registration_salt(t, op);
    if pending.hash != registration_commitment(node_id, operator, salt) {
        let node = chain.node().await?;
        if node.registered {
            return Err(OperatorError::AlreadyRegistered {
                operator,
                node_id: node.identityKey,
                layer: node.layer,
                stake: node.stake,
                decimals,
            });
        }
        return Err(OperatorError::OtherCommitment { operator, amount: pending.amount, decimals });
    }
    let claim = chain.registry_view(NoxRegistry::identityClaimsCall { identityKey: node_id }).await?;
    if !claim.operator.is_zero() && claim.operator != operator && claim.commitBlock <= pending.blockNumber {
        return Err(OperatorError::IdentityTaken { node_id, holder: claim.operator });
    }
    chain.wait_block_after(pending.blockNumber).await?;
    let last_block = pending.blockNumber + COMMITMENT_WINDOW;
    if chain.client.block_number().await? > last_block {
        return Err(OperatorError::CommitmentExpired { operator, last_block });
    }
    if chain.registry_view(NoxRegistry::pausedCall {}).await? {
        return Err(OperatorError::RegistryPaused { registry: t.registry });
    }
    let min_stake = chain.registry_view(NoxRegistry::minStakeCall {}).await?;
    if pending.amount < min_stake {
        return Err(OperatorError::BelowMinimumStake { stake: pending.amount, min: min_stake, decimals });
    }
    chain.client.require_gas().await?;
    let call =
        NoxRegistry::registerCall { identityKey: node_id, multiaddr: multiaddr.to_string(), role: role.code(), salt };
    let receipt = chain.client.transact("NoxRegistry.register", t.registry, call.abi_encode()).await?;
    let layer = match receipt.decoded_log::<NoxRegistry::NodeRegistered>() {
        Some(log) => log.data.layer,
        None => chain.node().await?.layer,
    };
    let token_balance = chain.token_balance(token).await?;
    Ok(Registered {
        tx_hash: receipt.transaction_hash,
        commit_tx_hash: None,
        approve_tx_hash: None,
        operator,
        node_id,
        role,
        layer,
        multiaddr: multiaddr.to_string(),
        stake: pending.amount,
        min_stake,
        token,
        token_decimals: decimals,
        token_balance,
    })
}

/// The layer a relay revealed now under the wallet's pending commitment
/// would get (`commitmentLayer`); `None` without a commitment that can be
/// revealed now.
pub async fn commitment_layer(t: &RegistryTarget, op: &Operator) -> Result<Option<u8>, OperatorError> {
    let chain = Chain::connect(t, op).await?;
    chain.commitment_layer().await
}

/// The node's record in the registry and the wallet's funds.
pub async fn status(t: &RegistryTarget, op: &Operator) -> Result<RegistryStatus, OperatorError> {
    let chain = Chain::connect(t, op).await?;
    let operator = chain.operator;
    let node_id = op.node_id;
    let token = chain.stake_token().await?;
    let token_decimals = chain.decimals(token).await?;
    let node = chain.node().await?;
    let active = chain.registry_view(NoxRegistry::isActiveCall { operator }).await?;
    let min_stake = chain.registry_view(NoxRegistry::minStakeCall {}).await?;
    let unstake_delay_secs = chain.registry_view(NoxRegistry::unstakeDelayCall {}).await?;
    let token_balance = chain.token_balance(token).await?;
    let eth_balance = chain.eth_balance().await?;

    let committed = chain.registry_view(NoxRegistry::commitmentsCall { operator }).await?;
    let (role, layer, multiaddr, registered_node_id) = if node.registered {
        let role = Role::from_code(node.role).ok_or_else(|| {
            chain.client.failed("eth_call NoxRegistry.getNode(address)", format!("unknown role value {}", node.role))
        })?;
        let other_id = (node.identityKey != node_id).then_some(node.identityKey);
        (Some(role), Some(node.layer), Some(node.multiaddr.clone()), other_id)
    } else {
        (None, chain.commitment_layer().await?, None, None)
    };
    Ok(RegistryStatus {
        operator,
        node_id,
        registered: node.registered,
        active,
        role,
        layer,
        multiaddr,
        registered_node_id,
        stake: node.stake,
        min_stake,
        pending_unstake: node.pendingUnstake,
        committed_stake: committed.amount,
        unstake_available_at: (!node.pendingUnstake.is_zero()).then_some(node.unstakeAvailableAt),
        unstake_delay_secs,
        token,
        token_decimals,
        token_balance,
        eth_balance,
    })
}

/// Leaves the network (`requestUnstake`): the node drops out of the topology
/// at once; its stake can be withdrawn after the registry's unstake delay.
/// A wallet with a commitment not yet revealed gives it up instead
/// (`cancelCommitment`), with the same delay.
pub async fn request_unstake(t: &RegistryTarget, op: &Operator) -> Result<UnstakeRequested, OperatorError> {
    let chain = Chain::connect(t, op).await?;
    let operator = chain.operator;
    let node = chain.node().await?;
    let committed = chain.registry_view(NoxRegistry::commitmentsCall { operator }).await?;
    if !node.registered && !committed.hash.is_zero() {
        chain.client.require_gas().await?;
        let call = NoxRegistry::cancelCommitmentCall {};
        let receipt = chain.client.transact("NoxRegistry.cancelCommitment", t.registry, call.abi_encode()).await?;
        let (amount, available_at) = match receipt.decoded_log::<NoxRegistry::UnstakeRequested>() {
            Some(log) => (log.data.amount, log.data.availableAt),
            None => {
                let after = chain.node().await?;
                (after.pendingUnstake, after.unstakeAvailableAt)
            }
        };
        return Ok(UnstakeRequested { tx_hash: receipt.transaction_hash, operator, amount, available_at });
    }
    if !node.registered {
        let decimals = if node.pendingUnstake.is_zero() {
            MAX_DECIMALS
        } else {
            chain.decimals(chain.stake_token().await?).await?
        };
        return Err(OperatorError::NotRegistered {
            operator,
            pending: node.pendingUnstake,
            available_at: node.unstakeAvailableAt,
            decimals,
        });
    }
    chain.client.require_gas().await?;
    let call = NoxRegistry::requestUnstakeCall {};
    let receipt = chain.client.transact("NoxRegistry.requestUnstake", t.registry, call.abi_encode()).await?;
    let (amount, available_at) = match receipt.decoded_log::<NoxRegistry::UnstakeRequested>() {
        Some(log) => (log.data.amount, log.data.availableAt),
        None => {
            let after = chain.node().await?;
            (after.pendingUnstake, after.unstakeAvailableAt)
        }
    };
    Ok(UnstakeRequested { tx_hash: receipt.transaction_hash, operator, amount, available_at })
}

/// Withdraws the pending unstake (`executeUnstake`) once the delay is over,
/// judged by the latest block's timestamp.
pub async fn withdraw_stake(t: &RegistryTarget, op: &Operator) -> Result<Withdrawn, OperatorError> {
    let chain = Chain::connect(t, op).await?;
    let operator = chain.operator;
    let node = chain.node().await?;
    if node.pendingUnstake.is_zero() {
        return Err(OperatorError::NoPendingUnstake { operator });
    }
    let now = chain.client.latest_timestamp().await?;
    if now < node.unstakeAvailableAt {
        return Err(OperatorError::UnstakeDelayNotOver { available_at: node.unstakeAvailableAt, now });
    }
    chain.client.require_gas().await?;
    let call = NoxRegistry::executeUnstakeCall {};
    let receipt = chain.client.transact("NoxRegistry.executeUnstake", t.registry, call.abi_encode()).await?;
    let amount =
        receipt.decoded_log::<NoxRegistry::Unstaked>().map(|log| log.data.amount).unwrap_or(node.pendingUnstake);
    let token_balance = chain.token_balance(chain.stake_token().await?).await?;
    Ok(Withdrawn { tx_hash: receipt.transaction_hash, operator, amount, token_balance })
}

/// The stake token's `decimals()`, for converting `--stake`.
pub async fn stake_token_decimals(t: &RegistryTarget, op: &Operator) -> Result<u8, OperatorError> {
    let chain = Chain::connect(t, op).await?;
    chain.decimals(chain.stake_token().await?).await
}

// ---------------------------------------------------------------------------
// The chain connection
// ---------------------------------------------------------------------------

/// A client signing with the operator's wallet, on an endpoint checked to
/// serve the configured chain and to hold the registry.
struct Chain {
    client: EthClient,
    registry: Address,
    operator: Address,
    chain_id: u64,
}

impl Chain {
    async fn connect(t: &RegistryTarget, op: &Operator) -> Result<Chain, OperatorError> {
        let client = EthClient::connect(&t.rpc_url, t.chain_id, RPC_TIMEOUT, Some(op.wallet.clone())).await?;
        let code = client.code_at(t.registry).await?;
        if code.is_empty() {
            return Err(OperatorError::NoRegistry { registry: t.registry, chain_id: t.chain_id });
        }
        Ok(Chain { client, registry: t.registry, operator: op.wallet.address(), chain_id: t.chain_id })
    }

    async fn view<C: SolCall>(&self, name: &str, contract: Address, call: C) -> Result<C::Return, OperatorError> {
        Ok(self.client.view(name, contract, call).await?)
    }

    async fn registry_view<C: SolCall>(&self, call: C) -> Result<C::Return, OperatorError> {
        self.view("NoxRegistry", self.registry, call).await
    }

    async fn node(&self) -> Result<NoxRegistry::Node, OperatorError> {
        self.registry_view(NoxRegistry::getNodeCall { operator: self.operator }).await
    }

    async fn stake_token(&self) -> Result<Address, OperatorError> {
        self.registry_view(NoxRegistry::stakeTokenCall {}).await
    }

    async fn decimals(&self, token: Address) -> Result<u8, OperatorError> {
        self.view("token", token, NoxTestToken::decimalsCall {}).await
    }

    async fn token_balance(&self, token: Address) -> Result<U256, OperatorError> {
        self.view("token", token, NoxTestToken::balanceOfCall { account: self.operator }).await
    }

    async fn eth_balance(&self) -> Result<U256, OperatorError> {
        Ok(self.client.balance(self.operator).await?)
    }

    async fn commitment_layer(&self) -> Result<Option<u8>, OperatorError> {
        let c = self.registry_view(NoxRegistry::commitmentsCall { operator: self.operator }).await?;
        if c.hash.is_zero() {
            return Ok(None);
        }
        let head = self.client.block_number().await?;
        if head <= c.blockNumber || head > c.blockNumber + COMMITMENT_WINDOW {
            return Ok(None);
        }
        Ok(Some(self.registry_view(NoxRegistry::commitmentLayerCall { operator: self.operator }).await?))
    }

    /// Waits until the chain's head is past `block`. On the development
    /// chain, which mines on demand, asks for a block instead.
    async fn wait_block_after(&self, block: u64) -> Result<(), OperatorError> {
        let started = tokio::time::Instant::now();
        let mut asked = false;
        loop {
            if self.client.block_number().await? > block {
                return Ok(());
            }
            let waited = started.elapsed();
            if waited >= NEXT_BLOCK_TIMEOUT {
                return Err(OperatorError::NoNextBlock { commit_block: block, waited_secs: waited.as_secs() });
            }
            if !asked && self.chain_id == DEVNET_CHAIN_ID && waited >= Duration::from_millis(500) {
                let mined: Result<serde_json::Value, _> =
                    self.client.provider().raw_request("evm_mine".into(), ()).await;
                mined.map_err(|e| self.client.rpc_error("evm_mine", e))?;
                asked = true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_salt_is_secret_and_stable() {
        let target = |chain_id| RegistryTarget {
            rpc_url: "http://127.0.0.1:8545".into(),
            chain_id,
            registry: Address::repeat_byte(7),
        };
        let op = |key: u8, node: u8| Operator {
            wallet: PrivateKeySigner::from_bytes(&B256::repeat_byte(key)).unwrap(),
            node_id: B256::repeat_byte(node),
        };
        let salt = registration_salt(&target(1), &op(1, 1));
        assert_eq!(salt, registration_salt(&target(1), &op(1, 1)), "an interrupted run finds its commitment");
        assert_ne!(salt, registration_salt(&target(2), &op(1, 1)), "per chain");
        assert_ne!(salt, registration_salt(&target(1), &op(2, 1)), "per wallet key");
        assert_ne!(salt, registration_salt(&target(1), &op(1, 2)), "per node id");
    }

    #[test]
    fn the_registry_refuses_empty_and_long_multiaddrs() {
        assert!(check_multiaddr_length("/ip4/203.0.113.7/tcp/9000").is_ok());
        assert!(matches!(check_multiaddr_length(""), Err(OperatorError::InvalidMultiaddr { .. })));
        let long = format!("/dns4/{}/tcp/9000", "a".repeat(250));
        assert!(matches!(check_multiaddr_length(&long), Err(OperatorError::InvalidMultiaddr { .. })));
    }
}
