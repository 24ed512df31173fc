//! The operator's side of NoxRegistry: joining the network, checking on a
//! node, and leaving it (`nox register`, `nox status`, `nox unstake`,
//! `nox withdraw-stake`).
//!
//! Each command is one async function over a [`ChainTarget`] (endpoint, chain
//! id, registry) and the node's [`NodeKeys`]: the wallet key signs, the
//! identity key's public half is the node id registered as `identityKey`.
//!
//! Every function first checks that the endpoint serves the configured chain
//! and that the registry address holds a contract. Before sending anything it
//! reads the registry's state and refuses, with a typed [`OperatorError`]
//! carrying the figures, what the contract would refuse anyway (already
//! registered, identity key taken, stake below the minimum, not enough tokens,
//! unstake delay not over, …): an operator learns what is wrong without paying
//! for a reverted transaction. What still reverts (a pause, a race with
//! another transaction) is decoded with the contracts' error types into
//! [`OperatorError::Reverted`].
//!
//! Amounts are token base units (`U256`); [`TokenAmount`] reads the whole
//! tokens an operator types (`1000`, `1000.5`) and converts them with the
//! token's `decimals()`. The result structs serialize to one JSON object with
//! amounts as decimal strings.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{BlockNumberOrTag, TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::http::reqwest;
use alloy::transports::{RpcError, TransportErrorKind};
use alloy_sol_types::{Panic, Revert, SolCall, SolError, SolInterface};
use nox_protocol::contracts::{EXIT_LAYER, NoxRegistry, NoxTestToken, relay_layer};
use serde::{Serialize, Serializer};

use crate::config::{ChainSection, P2pSection, Role};
use crate::keys::NodeKeys;

/// How long one JSON-RPC request may take.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a sent transaction may take to be mined.
pub const RECEIPT_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the local node's admin API may take to answer `GET /topology`.
pub const NODE_API_TIMEOUT: Duration = Duration::from_secs(2);
/// Most fractional digits `--stake` accepts.
pub const MAX_DECIMALS: u8 = 18;
/// Longest multiaddr the registry accepts, in bytes (`MAX_MULTIADDR_LEN`).
pub const MAX_MULTIADDR_LEN: usize = 256;

const RECEIPT_POLL: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why an operator command failed. Each variant carries the figures an
/// operator needs to act on it; amounts are in token base units and printed
/// in tokens as well.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// `chain.rpc_url` is not set.
    #[error("no chain configured: chain.rpc_url is not set; set chain.rpc_url, chain.chain_id and chain.registry")]
    NoChain,
    /// `chain.rpc_url` does not parse as a URL.
    #[error("chain.rpc_url `{url}` is not a URL: {reason}")]
    InvalidRpcUrl {
        /// The configured value.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// `chain.registry` is not a non-zero address.
    #[error("chain.registry `{0}` is not a non-zero 0x address")]
    InvalidRegistry(String),
    /// The endpoint did not answer (refused, unreachable, timed out, not an
    /// RPC endpoint).
    #[error("cannot reach the RPC endpoint at {url}: {reason}")]
    Rpc {
        /// The endpoint.
        url: String,
        /// What the transport said.
        reason: String,
    },
    /// The endpoint answered a request with an error or with something that
    /// does not decode.
    #[error("the RPC endpoint at {url} failed {request}: {reason}")]
    RpcFailed {
        /// The endpoint.
        url: String,
        /// The request, e.g. `eth_call NoxRegistry.getNode(address)`.
        request: String,
        /// The error.
        reason: String,
    },
    /// The endpoint serves another chain than `chain.chain_id`.
    #[error(
        "the RPC endpoint reports chain id {actual}, but chain.chain_id is {expected}; \
         check that chain.rpc_url points at the intended network"
    )]
    WrongChain {
        /// `chain.chain_id`.
        expected: u64,
        /// What `eth_chainId` returned.
        actual: u64,
    },
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
    /// `register`: another operator registered this node id.
    #[error(
        "node id {node_id} (the identity key in node.keys_dir) is already registered by operator {holder}; \
         a node id can be registered once"
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
    /// The wallet cannot pay for gas.
    #[error("wallet {operator} has {balance} wei, not enough ETH to pay for gas; send ETH to it")]
    NoGasFunds {
        /// The wallet.
        operator: Address,
        /// Its ETH balance in wei.
        balance: U256,
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
    /// A transaction (or its gas estimate) reverted.
    #[error("{call} reverted: {reason}")]
    Reverted {
        /// The contract call, e.g. `NoxRegistry.register`.
        call: &'static str,
        /// The decoded error with its fields, or the raw revert data.
        reason: String,
    },
    /// A sent transaction was not mined in time.
    #[error(
        "{call} transaction {tx_hash} was not mined within {} s; it may still be: check with `nox status`",
        RECEIPT_TIMEOUT.as_secs()
    )]
    ReceiptTimeout {
        /// The contract call.
        call: &'static str,
        /// The transaction.
        tx_hash: B256,
    },
    /// The multiaddr to register is not one the registry (or a peer) accepts.
    #[error("multiaddr `{multiaddr}`: {reason}")]
    InvalidMultiaddr {
        /// The multiaddr.
        multiaddr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No multiaddr given and none in the configuration that peers could dial.
    #[error(
        "no multiaddr to register: p2p.external_addresses is empty and p2p.listen has no specific address; \
         set p2p.external_addresses or pass --multiaddr"
    )]
    NoMultiaddr,
    /// The configured layer is not the one the registry will assign.
    #[error(
        "the registry places a {role} run from wallet {operator} in layer {assigned}, but node.layer is {configured}; \
         set node.layer = {assigned} (the node refuses to start on that mismatch)",
        role = role_name(*role)
    )]
    LayerMismatch {
        /// The wallet.
        operator: Address,
        /// `node.role`.
        role: Role,
        /// `node.layer`.
        configured: u8,
        /// The registry's layer: 2 for an exit, `relay_layer(wallet)` for a relay.
        assigned: u8,
    },
    /// A token amount that does not read or does not fit.
    #[error("--stake: {0}")]
    Amount(#[from] AmountError),
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Relay => "relay",
        Role::Exit => "exit",
    }
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

/// `amount` base units as tokens, with the base units beside them:
/// `1000.5 tokens (1000500000000000000000 base units)`.
fn tokens(amount: U256, decimals: u8) -> String {
    format!("{} tokens ({amount} base units)", format_token_amount(amount, decimals))
}

// ---------------------------------------------------------------------------
// Token amounts
// ---------------------------------------------------------------------------

/// Why a token amount does not read or does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not a plain decimal number.
    #[error("`{0}` is not a token amount: expected whole tokens with up to 18 decimals, such as 1000 or 1000.5")]
    Malformed(String),
    /// More fractional digits than the token (or [`MAX_DECIMALS`]) has.
    #[error("`{input}` has more than {max} decimals")]
    TooPrecise {
        /// The amount as typed.
        input: String,
        /// Most fractional digits allowed.
        max: u8,
    },
    /// Beyond 2^256 - 1 base units.
    #[error("`{0}` is too large")]
    TooLarge(String),
}

/// A token amount as an operator types it: whole tokens with up to
/// [`MAX_DECIMALS`] decimals (`1000`, `1000.5`, `0.000000000000000001`).
/// No sign, exponent, separators or leading/trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAmount {
    input: String,
    whole: U256,
    /// Fractional digits without trailing zeros.
    fraction: String,
}

impl FromStr for TokenAmount {
    type Err = AmountError;

    fn from_str(s: &str) -> Result<Self, AmountError> {
        let malformed = || AmountError::Malformed(s.to_string());
        let (whole, fraction) = match s.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (s, None),
        };
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
            return Err(malformed());
        }
        let fraction = fraction.unwrap_or("").trim_end_matches('0');
        if fraction.len() > usize::from(MAX_DECIMALS) {
            return Err(AmountError::TooPrecise { input: s.to_string(), max: MAX_DECIMALS });
        }
        let whole = U256::from_str_radix(whole, 10).map_err(|_| AmountError::TooLarge(s.to_string()))?;
        Ok(TokenAmount { input: s.to_string(), whole, fraction: fraction.to_string() })
    }
}

impl fmt::Display for TokenAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.input)
    }
}

impl TokenAmount {
    /// The amount in base units of a token with `decimals` decimals.
    pub fn to_base_units(&self, decimals: u8) -> Result<U256, AmountError> {
        if self.fraction.len() > usize::from(decimals) {
            return Err(AmountError::TooPrecise { input: self.input.clone(), max: decimals });
        }
        let too_large = || AmountError::TooLarge(self.input.clone());
        let scale = U256::from(10u8).checked_pow(U256::from(decimals)).ok_or_else(too_large)?;
        let mut fraction = self.fraction.clone();
        fraction.extend(std::iter::repeat_n('0', usize::from(decimals) - self.fraction.len()));
        let fraction = if fraction.is_empty() {
            U256::ZERO
        } else {
            U256::from_str_radix(&fraction, 10).map_err(|_| too_large())?
        };
        self.whole.checked_mul(scale).and_then(|w| w.checked_add(fraction)).ok_or_else(too_large)
    }
}

/// `amount` base units of a token with `decimals` decimals, as tokens:
/// `1000`, `1000.5`, `0.000000000000000001`.
pub fn format_token_amount(amount: U256, decimals: u8) -> String {
    let Some(scale) = U256::from(10u8).checked_pow(U256::from(decimals)) else {
        return amount.to_string();
    };
    let (whole, fraction) = amount.div_rem(scale);
    if fraction.is_zero() {
        return whole.to_string();
    }
    let digits = format!("{fraction:0>width$}", width = usize::from(decimals));
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

// ---------------------------------------------------------------------------
// Configuration-derived inputs
// ---------------------------------------------------------------------------

/// Where the registry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainTarget {
    /// JSON-RPC endpoint.
    pub rpc_url: String,
    /// Chain id the endpoint must report.
    pub chain_id: u64,
    /// NoxRegistry's address.
    pub registry: Address,
}

impl ChainTarget {
    /// The target `[chain]` describes; an error if `chain.rpc_url` is unset or
    /// `chain.registry` is not a non-zero address.
    pub fn from_config(c: &ChainSection) -> Result<Self, OperatorError> {
        // `chain.rpc_url` and `chain.registry` are optional keys (unset = no chain).
        let Some(rpc_url) = c.rpc_url.clone().filter(|url| !url.is_empty()) else {
            return Err(OperatorError::NoChain);
        };
        let registry = c
            .registry_address()
            .ok_or_else(|| OperatorError::InvalidRegistry(c.registry.clone().unwrap_or_default()))?;
        Ok(ChainTarget { rpc_url, chain_id: c.chain_id, registry })
    }
}

/// The registry's `Role` value for `role`.
fn registry_role(role: Role) -> u8 {
    match role {
        Role::Relay => 0,
        Role::Exit => 1,
    }
}

fn role_from_registry(role: u8) -> Option<Role> {
    match role {
        0 => Some(Role::Relay),
        1 => Some(Role::Exit),
        _ => None,
    }
}

/// The layer the registry assigns to a `role` node registered from
/// `operator`: 2 for an exit, `relay_layer(operator)` for a relay.
pub fn assigned_layer(role: Role, operator: Address) -> u8 {
    match role {
        Role::Exit => EXIT_LAYER,
        Role::Relay => relay_layer(operator),
    }
}

/// Checks that `node.layer` (`configured`) is the layer the registry will
/// assign; the node refuses to start otherwise.
pub fn check_layer(role: Role, configured: u8, operator: Address) -> Result<(), OperatorError> {
    let assigned = assigned_layer(role, operator);
    if assigned == configured {
        Ok(())
    } else {
        Err(OperatorError::LayerMismatch { operator, role, configured, assigned })
    }
}

/// The multiaddr to register when none is given: the first of
/// `p2p.external_addresses`, else the first `p2p.listen` address that names a
/// specific host (not `0.0.0.0` or `::`) and port (not 0).
pub fn default_multiaddr(p2p: &P2pSection) -> Result<String, OperatorError> {
    if let Some(first) = p2p.external_addresses.first() {
        return Ok(first.clone());
    }
    p2p.listen.iter().find(|a| is_dialable(a)).cloned().ok_or(OperatorError::NoMultiaddr)
}

fn is_dialable(addr: &str) -> bool {
    let Ok(ma) = addr.parse::<libp2p::Multiaddr>() else { return false };
    ma.iter().all(|p| {
        use libp2p::multiaddr::Protocol;
        match p {
            Protocol::Ip4(ip) => !ip.is_unspecified(),
            Protocol::Ip6(ip) => !ip.is_unspecified(),
            Protocol::Tcp(port) | Protocol::Udp(port) => port != 0,
            _ => true,
        }
    })
}

/// Checks `multiaddr` the way the registry and peers will read it.
fn check_multiaddr(multiaddr: &str) -> Result<(), OperatorError> {
    let invalid = |reason: String| OperatorError::InvalidMultiaddr { multiaddr: multiaddr.to_string(), reason };
    if multiaddr.is_empty() {
        return Err(invalid("empty".to_string()));
    }
    if multiaddr.len() > MAX_MULTIADDR_LEN {
        return Err(invalid(format!("{} bytes; the registry accepts at most {MAX_MULTIADDR_LEN}", multiaddr.len())));
    }
    multiaddr.parse::<libp2p::Multiaddr>().map_err(|e| invalid(format!("not a multiaddr: {e}")))?;
    if !is_dialable(multiaddr) {
        return Err(invalid("other nodes cannot dial an unspecified address (0.0.0.0, ::) or port 0".to_string()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

fn decimal<S: Serializer>(v: &U256, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// `nox register`: the node is registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registered {
    /// The `register` transaction.
    pub tx_hash: B256,
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

/// What the local node's admin API says about this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeApi {
    /// Not asked (no address given).
    Skipped,
    /// It answered `GET /topology`.
    Reachable,
    /// It did not answer, or not with a topology.
    Unreachable,
}

/// `nox status`: the node's record in the registry and the wallet's funds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
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
    /// The registered layer; for an unregistered wallet, the layer it would
    /// get as a relay.
    pub layer: u8,
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
    /// Whether the local node's admin API answered.
    pub node_api: NodeApi,
    /// Epochs for which the local node knows a descriptor (published epoch
    /// key) of this node id; none unless the API answered.
    pub epoch_keys_published: Option<Vec<u64>>,
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

/// Registers this node: `approve` (if the allowance is short) and
/// `register(node id, multiaddr, role, stake)`. `stake` defaults to the
/// registry's `minStake`. Refuses before sending anything if the wallet is
/// registered or has an unstake pending, the node id is taken, the stake is
/// below the minimum, the wallet lacks the tokens or any ETH.
pub async fn register(
    t: &ChainTarget,
    keys: &NodeKeys,
    role: Role,
    multiaddr: &str,
    stake: Option<U256>,
) -> Result<Registered, OperatorError> {
    check_multiaddr(multiaddr)?;
    let chain = Chain::connect(t, keys).await?;
    let operator = chain.operator;
    let node_id = B256::from(keys.node_id());
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
    let holder = chain.registry_view(NoxRegistry::operatorOfIdentityCall { identityKey: node_id }).await?;
    if !holder.is_zero() {
        return Err(OperatorError::IdentityTaken { node_id, holder });
    }
    let min_stake = chain.registry_view(NoxRegistry::minStakeCall {}).await?;
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
        return Err(OperatorError::NoGasFunds { operator, balance: eth });
    }

    let allowance =
        chain.view("token", token, NoxTestToken::allowanceCall { owner: operator, spender: t.registry }).await?;
    let approve_tx_hash = if allowance < stake {
        let approve = NoxTestToken::approveCall { spender: t.registry, value: stake };
        Some(chain.transact("token.approve", token, approve.abi_encode()).await?.transaction_hash)
    } else {
        None
    };
    let call = NoxRegistry::registerCall {
        identityKey: node_id,
        multiaddr: multiaddr.to_string(),
        role: registry_role(role),
        amount: stake,
    };
    let receipt = chain.transact("NoxRegistry.register", t.registry, call.abi_encode()).await?;
    let layer = receipt
        .decoded_log::<NoxRegistry::NodeRegistered>()
        .map(|log| log.data.layer)
        .unwrap_or_else(|| assigned_layer(role, operator));
    let token_balance = chain.token_balance(token).await?;
    Ok(Registered {
        tx_hash: receipt.transaction_hash,
        approve_tx_hash,
        operator,
        node_id,
        role,
        layer,
        multiaddr: multiaddr.to_string(),
        stake,
        min_stake,
        token,
        token_decimals: decimals,
        token_balance,
    })
}

/// The node's record, the wallet's funds and, if `node_api` (the node's
/// admin listener, `http.listen`) is given, the epochs for which the running
/// node knows this node's descriptor. An unreachable node API is reported in
/// the result, not as an error.
pub async fn status(
    t: &ChainTarget,
    keys: &NodeKeys,
    node_api: Option<SocketAddr>,
) -> Result<NodeStatus, OperatorError> {
    let chain = Chain::connect(t, keys).await?;
    let operator = chain.operator;
    let node_id = B256::from(keys.node_id());
    let token = chain.stake_token().await?;
    let token_decimals = chain.decimals(token).await?;
    let node = chain.node().await?;
    let active = chain.registry_view(NoxRegistry::isActiveCall { operator }).await?;
    let min_stake = chain.registry_view(NoxRegistry::minStakeCall {}).await?;
    let unstake_delay_secs = chain.registry_view(NoxRegistry::unstakeDelayCall {}).await?;
    let token_balance = chain.token_balance(token).await?;
    let eth_balance = chain.eth_balance().await?;

    let (role, layer, multiaddr, registered_node_id) = if node.registered {
        let role = role_from_registry(node.role).ok_or_else(|| {
            chain.failed("eth_call NoxRegistry.getNode(address)", format!("unknown role value {}", node.role))
        })?;
        let other_id = (node.identityKey != node_id).then_some(node.identityKey);
        (Some(role), node.layer, Some(node.multiaddr.clone()), other_id)
    } else {
        (None, relay_layer(operator), None, None)
    };
    let (node_api, epoch_keys_published) = match node_api {
        None => (NodeApi::Skipped, None),
        Some(addr) => match published_epochs(addr, &node_id).await {
            Some(epochs) => (NodeApi::Reachable, Some(epochs)),
            None => (NodeApi::Unreachable, None),
        },
    };
    Ok(NodeStatus {
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
        unstake_available_at: (!node.pendingUnstake.is_zero()).then_some(node.unstakeAvailableAt),
        unstake_delay_secs,
        token,
        token_decimals,
        token_balance,
        eth_balance,
        node_api,
        epoch_keys_published,
    })
}

/// Leaves the network (`requestUnstake`): the node drops out of the topology
/// at once; its stake can be withdrawn after the registry's unstake delay.
pub async fn request_unstake(t: &ChainTarget, keys: &NodeKeys) -> Result<UnstakeRequested, OperatorError> {
    let chain = Chain::connect(t, keys).await?;
    let operator = chain.operator;
    let node = chain.node().await?;
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
    chain.require_gas().await?;
    let call = NoxRegistry::requestUnstakeCall {};
    let receipt = chain.transact("NoxRegistry.requestUnstake", t.registry, call.abi_encode()).await?;
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
pub async fn withdraw_stake(t: &ChainTarget, keys: &NodeKeys) -> Result<Withdrawn, OperatorError> {
    let chain = Chain::connect(t, keys).await?;
    let operator = chain.operator;
    let node = chain.node().await?;
    if node.pendingUnstake.is_zero() {
        return Err(OperatorError::NoPendingUnstake { operator });
    }
    let now = chain.latest_timestamp().await?;
    if now < node.unstakeAvailableAt {
        return Err(OperatorError::UnstakeDelayNotOver { available_at: node.unstakeAvailableAt, now });
    }
    chain.require_gas().await?;
    let call = NoxRegistry::executeUnstakeCall {};
    let receipt = chain.transact("NoxRegistry.executeUnstake", t.registry, call.abi_encode()).await?;
    let amount =
        receipt.decoded_log::<NoxRegistry::Unstaked>().map(|log| log.data.amount).unwrap_or(node.pendingUnstake);
    let token_balance = chain.token_balance(chain.stake_token().await?).await?;
    Ok(Withdrawn { tx_hash: receipt.transaction_hash, operator, amount, token_balance })
}

/// The stake token's `decimals()`, for converting `--stake`.
pub async fn stake_token_decimals(t: &ChainTarget, keys: &NodeKeys) -> Result<u8, OperatorError> {
    let chain = Chain::connect(t, keys).await?;
    chain.decimals(chain.stake_token().await?).await
}

// ---------------------------------------------------------------------------
// The chain connection
// ---------------------------------------------------------------------------

/// A provider signing with the node's wallet, on an endpoint checked to serve
/// the configured chain and to hold the registry.
struct Chain {
    provider: DynProvider,
    url: String,
    registry: Address,
    operator: Address,
}

impl Chain {
    async fn connect(t: &ChainTarget, keys: &NodeKeys) -> Result<Chain, OperatorError> {
        let url = t
            .rpc_url
            .parse::<reqwest::Url>()
            .map_err(|e| OperatorError::InvalidRpcUrl { url: t.rpc_url.clone(), reason: e.to_string() })?;
        let client = reqwest::Client::builder()
            .timeout(RPC_TIMEOUT)
            .build()
            .map_err(|e| OperatorError::Rpc { url: t.rpc_url.clone(), reason: error_chain(&e) })?;
        let wallet = EthereumWallet::from(PrivateKeySigner::from_signing_key(keys.wallet.clone()));
        let provider = ProviderBuilder::new().wallet(wallet).connect_reqwest(client, url).erased();
        let chain = Chain { provider, url: t.rpc_url.clone(), registry: t.registry, operator: keys.wallet_address() };

        let actual = chain.provider.get_chain_id().await.map_err(|e| chain.rpc_error("eth_chainId", e))?;
        if actual != t.chain_id {
            return Err(OperatorError::WrongChain { expected: t.chain_id, actual });
        }
        let code = chain.provider.get_code_at(t.registry).await.map_err(|e| chain.rpc_error("eth_getCode", e))?;
        if code.is_empty() {
            return Err(OperatorError::NoRegistry { registry: t.registry, chain_id: actual });
        }
        Ok(chain)
    }

    fn failed(&self, request: impl Into<String>, reason: impl Into<String>) -> OperatorError {
        OperatorError::RpcFailed { url: self.url.clone(), request: request.into(), reason: reason.into() }
    }

    /// A transport failure is [`OperatorError::Rpc`]; an error answer is
    /// [`OperatorError::RpcFailed`].
    fn rpc_error(&self, request: &str, e: RpcError<TransportErrorKind>) -> OperatorError {
        match e {
            RpcError::Transport(kind) => OperatorError::Rpc { url: self.url.clone(), reason: transport_reason(&kind) },
            RpcError::ErrorResp(p) => self.failed(request, format!("{} (code {})", p.message, p.code)),
            RpcError::NullResp => self.failed(request, "null answer"),
            other => self.failed(request, error_chain(&other)),
        }
    }

    /// `eth_call` of a view on `contract` (`name` labels it in errors).
    async fn view<C: SolCall>(&self, name: &str, contract: Address, call: C) -> Result<C::Return, OperatorError> {
        let request = format!("eth_call {name}.{}", C::SIGNATURE);
        let tx = TransactionRequest::default().with_to(contract).with_input(call.abi_encode());
        let out = self.provider.call(tx).await.map_err(|e| self.rpc_error(&request, e))?;
        C::abi_decode_returns(&out)
            .map_err(|e| self.failed(&request, format!("the answer ({} bytes) does not decode: {e}", out.len())))
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
        self.provider.get_balance(self.operator).await.map_err(|e| self.rpc_error("eth_getBalance", e))
    }

    async fn require_gas(&self) -> Result<(), OperatorError> {
        let balance = self.eth_balance().await?;
        if balance.is_zero() {
            return Err(OperatorError::NoGasFunds { operator: self.operator, balance });
        }
        Ok(())
    }

    async fn latest_timestamp(&self) -> Result<u64, OperatorError> {
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .map_err(|e| self.rpc_error("eth_getBlockByNumber", e))?
            .ok_or_else(|| self.failed("eth_getBlockByNumber", "no latest block"))?;
        Ok(block.header.timestamp)
    }

    /// Sends `data` to `to` from the wallet, waits for the receipt and
    /// requires success. A revert, at the gas estimate or on chain, becomes
    /// [`OperatorError::Reverted`] with the decoded error.
    async fn transact(
        &self,
        call: &'static str,
        to: Address,
        data: Vec<u8>,
    ) -> Result<TransactionReceipt, OperatorError> {
        let tx = TransactionRequest::default().with_from(self.operator).with_to(to).with_input(data);
        let pending = match self.provider.send_transaction(tx.clone()).await {
            Ok(pending) => pending,
            Err(RpcError::ErrorResp(p)) => {
                if let Some(data) = p.as_revert_data() {
                    return Err(OperatorError::Reverted { call, reason: describe_revert(&data) });
                }
                if p.message.contains("revert") {
                    return Err(OperatorError::Reverted { call, reason: format!("{} (no revert data)", p.message) });
                }
                if p.message.contains("insufficient funds") {
                    let balance = self.eth_balance().await?;
                    return Err(OperatorError::NoGasFunds { operator: self.operator, balance });
                }
                return Err(self.failed(format!("sending {call}"), format!("{} (code {})", p.message, p.code)));
            }
            Err(e) => return Err(self.rpc_error(&format!("sending {call}"), e)),
        };
        let tx_hash = *pending.tx_hash();
        let receipt = self.wait_receipt(call, tx_hash).await?;
        if receipt.status() {
            return Ok(receipt);
        }
        // Mined but reverted: replay it to learn why.
        let reason = match self.provider.call(tx).await {
            Err(RpcError::ErrorResp(p)) => match p.as_revert_data() {
                Some(data) => describe_revert(&data),
                None => p.message.to_string(),
            },
            Err(e) => format!("and replaying it failed: {}", error_chain(&e)),
            Ok(_) => "on chain, but a replay on the latest state succeeds; the state changed in between".to_string(),
        };
        Err(OperatorError::Reverted { call, reason: format!("{reason} (transaction {tx_hash})") })
    }

    async fn wait_receipt(&self, call: &'static str, tx_hash: B256) -> Result<TransactionReceipt, OperatorError> {
        let deadline = tokio::time::Instant::now() + RECEIPT_TIMEOUT;
        loop {
            let receipt = self
                .provider
                .get_transaction_receipt(tx_hash)
                .await
                .map_err(|e| self.rpc_error("eth_getTransactionReceipt", e))?;
            if let Some(receipt) = receipt {
                return Ok(receipt);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(OperatorError::ReceiptTimeout { call, tx_hash });
            }
            tokio::time::sleep(RECEIPT_POLL).await;
        }
    }
}

/// What a transport failure was, in words: a timeout says so, anything else is
/// the error's chain of causes.
fn transport_reason(kind: &TransportErrorKind) -> String {
    if let TransportErrorKind::Custom(inner) = kind {
        if let Some(e) = inner.downcast_ref::<reqwest::Error>()
            && e.is_timeout()
        {
            return format!("no answer within {} s", RPC_TIMEOUT.as_secs());
        }
        return error_chain(inner.as_ref());
    }
    error_chain(kind)
}

/// `e` and its sources, joined with `: `, without repeats.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// Revert data in words: a NoxRegistry or token custom error with its fields,
/// `Error(string)`, `Panic(uint256)`, or the raw hex if none of those decodes.
pub fn describe_revert(data: &[u8]) -> String {
    if let Ok(e) = NoxRegistry::NoxRegistryErrors::abi_decode(data) {
        return describe_registry_error(&e);
    }
    if let Ok(e) = NoxTestToken::NoxTestTokenErrors::abi_decode(data) {
        return describe_token_error(&e);
    }
    if let Ok(r) = Revert::abi_decode(data) {
        return format!("Error(\"{}\")", r.reason);
    }
    if let Ok(p) = Panic::abi_decode(data) {
        return format!("Panic(0x{:x})", p.code);
    }
    if data.is_empty() {
        return "no revert data".to_string();
    }
    format!("revert data 0x{} does not decode as a NoxRegistry or token error", hex::encode(data))
}

fn describe_registry_error(e: &NoxRegistry::NoxRegistryErrors) -> String {
    use NoxRegistry::NoxRegistryErrors as E;
    match e {
        E::AlreadyRegistered(x) => format!("AlreadyRegistered(operator: {})", x.operator),
        E::NotRegistered(x) => format!("NotRegistered(operator: {})", x.operator),
        E::InsufficientStake(x) => format!("InsufficientStake(provided: {}, required: {})", x.provided, x.required),
        E::ZeroIdentityKey(_) => "ZeroIdentityKey()".to_string(),
        E::IdentityKeyTaken(x) => {
            format!("IdentityKeyTaken(identityKey: {}, operator: {})", x.identityKey, x.operator)
        }
        E::InvalidMultiaddr(_) => "InvalidMultiaddr()".to_string(),
        E::UnstakePending(x) => format!("UnstakePending(operator: {})", x.operator),
        E::NoPendingUnstake(x) => format!("NoPendingUnstake(operator: {})", x.operator),
        E::UnstakeDelayNotOver(x) => {
            format!("UnstakeDelayNotOver(availableAt: {}, nowTs: {})", x.availableAt, x.nowTs)
        }
        E::ZeroAmount(_) => "ZeroAmount()".to_string(),
        E::EnforcedPause(_) => "EnforcedPause(): the registry is paused".to_string(),
        E::SafeERC20FailedOperation(x) => format!("SafeERC20FailedOperation(token: {})", x.token),
        other => format!("{other:?}"),
    }
}

fn describe_token_error(e: &NoxTestToken::NoxTestTokenErrors) -> String {
    use NoxTestToken::NoxTestTokenErrors as E;
    match e {
        E::ERC20InsufficientBalance(x) => {
            format!("ERC20InsufficientBalance(sender: {}, balance: {}, needed: {})", x.sender, x.balance, x.needed)
        }
        E::ERC20InsufficientAllowance(x) => format!(
            "ERC20InsufficientAllowance(spender: {}, allowance: {}, needed: {})",
            x.spender, x.allowance, x.needed
        ),
        other => format!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------
// The local node's admin API
// ---------------------------------------------------------------------------

/// Epochs for which the node at `addr` (its admin listener) holds a
/// descriptor of `node_id`, from `GET /topology`; `None` if it does not
/// answer with a topology within [`NODE_API_TIMEOUT`].
async fn published_epochs(addr: SocketAddr, node_id: &B256) -> Option<Vec<u64>> {
    let addr = loopback_if_unspecified(addr);
    let client = reqwest::Client::builder().timeout(NODE_API_TIMEOUT).build().ok()?;
    let response = client.get(format!("http://{addr}/topology")).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body: serde_json::Value = serde_json::from_str(&response.text().await.ok()?).ok()?;
    epochs_in_topology(&body, node_id)
}

/// A listener bound to `0.0.0.0` or `::` is reached on loopback.
fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port()),
        _ => addr,
    }
}

/// The epochs of `node_id`'s descriptors in a `/topology` answer: an array of
/// `{node_id, layer, addresses, descriptors: [{epoch, ..}]}`, or an object
/// holding that array as `nodes`. `None` if the JSON has neither shape.
fn epochs_in_topology(body: &serde_json::Value, node_id: &B256) -> Option<Vec<u64>> {
    let nodes = match body {
        serde_json::Value::Array(nodes) => nodes,
        serde_json::Value::Object(map) => map.get("nodes")?.as_array()?,
        _ => return None,
    };
    let wanted = hex_id(node_id);
    let mut epochs: Vec<u64> = nodes
        .iter()
        .filter(|n| n.get("node_id").and_then(|v| v.as_str()).is_some_and(|id| id.eq_ignore_ascii_case(&wanted)))
        .filter_map(|n| n.get("descriptors")?.as_array())
        .flatten()
        .filter_map(|d| d.get("epoch")?.as_u64())
        .collect();
    epochs.sort_unstable();
    epochs.dedup();
    Some(epochs)
}

/// A node id as the node's API writes it: `0x` + 64 lowercase hex digits.
fn hex_id(node_id: &B256) -> String {
    format!("0x{}", hex::encode(node_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(s: &str, decimals: u8) -> Result<U256, AmountError> {
        s.parse::<TokenAmount>()?.to_base_units(decimals)
    }

    fn e18(n: u64) -> U256 {
        U256::from(n) * U256::from(10u64).pow(U256::from(18u64))
    }

    #[test]
    fn whole_and_fractional_tokens_convert_to_base_units() {
        assert_eq!(units("1000", 18), Ok(e18(1000)));
        assert_eq!(units("1000.5", 18), Ok(e18(1000) + e18(1) / U256::from(2u8)));
        assert_eq!(units("0.000000000000000001", 18), Ok(U256::from(1u8)));
        assert_eq!(units("1.50", 6), Ok(U256::from(1_500_000u64)), "trailing zeros do not count as precision");
        assert_eq!(units("7", 0), Ok(U256::from(7u8)));
        assert_eq!(units("0", 18), Ok(U256::ZERO));
        assert_eq!(units("007.0", 2), Ok(U256::from(700u16)));
    }

    #[test]
    fn malformed_amounts_are_refused() {
        for bad in ["", " 1", "1 ", "-1", "+1", "1e3", "1,000", "1_000", ".5", "5.", "1.2.3", "0x10", "ten", "1.-5"] {
            assert_eq!(bad.parse::<TokenAmount>(), Err(AmountError::Malformed(bad.to_string())), "{bad:?}");
        }
        let message = "1e3".parse::<TokenAmount>().unwrap_err().to_string();
        assert!(message.contains("such as 1000 or 1000.5"), "{message}");
    }

    #[test]
    fn too_many_decimals_or_too_large_are_refused() {
        let nineteen = "0.0000000000000000001";
        assert_eq!(
            nineteen.parse::<TokenAmount>(),
            Err(AmountError::TooPrecise { input: nineteen.to_string(), max: 18 })
        );
        assert_eq!(units("1.001", 2), Err(AmountError::TooPrecise { input: "1.001".to_string(), max: 2 }));
        let max = U256::MAX.to_string();
        assert_eq!(units(&max, 0), Ok(U256::MAX));
        assert_eq!(units(&max, 1), Err(AmountError::TooLarge(max.clone())));
        let beyond = format!("{max}0");
        assert_eq!(beyond.parse::<TokenAmount>(), Err(AmountError::TooLarge(beyond.clone())));
    }

    #[test]
    fn base_units_format_as_tokens() {
        assert_eq!(format_token_amount(e18(1000), 18), "1000");
        assert_eq!(format_token_amount(e18(1000) + e18(1) / U256::from(2u8), 18), "1000.5");
        assert_eq!(format_token_amount(U256::from(1u8), 18), "0.000000000000000001");
        assert_eq!(format_token_amount(U256::from(42u8), 0), "42");
        for s in ["1000", "1000.5", "0.000000000000000001", "123456789.123456789"] {
            assert_eq!(format_token_amount(units(s, 18).unwrap(), 18), s, "round trip of {s}");
        }
    }

    #[test]
    fn default_multiaddr_prefers_external_then_specific_listen() {
        let mut p2p = P2pSection::default();
        assert!(matches!(default_multiaddr(&p2p), Err(OperatorError::NoMultiaddr)), "0.0.0.0 only");
        p2p.listen = vec!["/ip6/::/tcp/9000".into(), "/ip4/127.0.0.1/tcp/0".into(), "/ip4/10.0.0.5/tcp/9000".into()];
        assert_eq!(default_multiaddr(&p2p).unwrap(), "/ip4/10.0.0.5/tcp/9000");
        p2p.external_addresses = vec!["/dns4/nox.example.org/tcp/9000".into()];
        assert_eq!(default_multiaddr(&p2p).unwrap(), "/dns4/nox.example.org/tcp/9000");
    }

    #[test]
    fn multiaddrs_are_checked_before_sending() {
        assert!(check_multiaddr("/ip4/203.0.113.7/tcp/9000").is_ok());
        for bad in ["", "not-a-multiaddr", "/ip4/0.0.0.0/tcp/9000", "/ip4/1.2.3.4/tcp/0"] {
            assert!(matches!(check_multiaddr(bad), Err(OperatorError::InvalidMultiaddr { .. })), "{bad:?}");
        }
        let long = format!("/dns4/{}/tcp/9000", "a".repeat(250));
        assert!(matches!(check_multiaddr(&long), Err(OperatorError::InvalidMultiaddr { .. })));
    }

    #[test]
    fn layer_check_names_the_layer_to_set() {
        let operator = Address::repeat_byte(7);
        let assigned = relay_layer(operator);
        assert!(check_layer(Role::Relay, assigned, operator).is_ok());
        let message = check_layer(Role::Relay, 1 - assigned, operator).unwrap_err().to_string();
        assert!(message.contains(&format!("set node.layer = {assigned}")), "{message}");
        assert!(check_layer(Role::Exit, EXIT_LAYER, operator).is_ok());
        assert!(check_layer(Role::Exit, 0, operator).is_err());
    }

    #[test]
    fn registry_reverts_decode_with_their_fields() {
        let operator = Address::repeat_byte(0x11);
        let data = NoxRegistry::AlreadyRegistered { operator }.abi_encode();
        assert_eq!(describe_revert(&data), format!("AlreadyRegistered(operator: {operator})"));
        let data = NoxRegistry::InsufficientStake { provided: U256::from(5u8), required: U256::from(9u8) }.abi_encode();
        assert_eq!(describe_revert(&data), "InsufficientStake(provided: 5, required: 9)");
        let data = NoxRegistry::EnforcedPause {}.abi_encode();
        assert!(describe_revert(&data).starts_with("EnforcedPause()"));
        let data = Revert::from("nope").abi_encode();
        assert_eq!(describe_revert(&data), "Error(\"nope\")");
        assert_eq!(
            describe_revert(&[0xde, 0xad, 0xbe, 0xef]),
            "revert data 0xdeadbeef does not decode as a NoxRegistry or token error"
        );
    }

    #[test]
    fn topology_epochs_for_one_node() {
        let me = B256::repeat_byte(0xab);
        let other = B256::repeat_byte(0xcd);
        let nodes = serde_json::json!([
            { "node_id": hex_id(&me), "layer": 0, "addresses": [], "descriptors": [{ "epoch": 8 }, { "epoch": 7 }] },
            { "node_id": hex_id(&other), "layer": 1, "addresses": [], "descriptors": [{ "epoch": 9 }] },
        ]);
        assert_eq!(epochs_in_topology(&nodes, &me), Some(vec![7, 8]));
        let wrapped = serde_json::json!({ "node_id": hex_id(&me), "nodes": nodes });
        assert_eq!(epochs_in_topology(&wrapped, &me), Some(vec![7, 8]));
        assert_eq!(epochs_in_topology(&wrapped, &B256::ZERO), Some(vec![]));
        assert_eq!(epochs_in_topology(&serde_json::json!("up"), &me), None);
    }
}
