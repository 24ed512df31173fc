//! Private calls: a contract call performed by an exit and paid from a
//! shielded note, so that neither the exit, nor the chain, nor the network
//! can tie it to the user's funding address or IP.
//!
//! [`Client::private_call`] does, in this order:
//!
//! 1. **chooses the exit first**: the proof names the exit's wallet as the
//!    payment's recipient, so the exit is fixed before anything is proven.
//!    Candidates are the exits whose signed descriptor offers `EthRequest`
//!    with a [`FeePolicy`] for the wallet's chain and pool that accepts the
//!    asset;
//! 2. **reads the chain's fees anonymously**: the latest block's base fee and
//!    the priority fee, as two `RpcCall`s through the mixnet ([`ChainFees`]);
//!    for a fee in a token, at the same time, the entry's signed price rounds,
//!    checked against the call's own oracle keys ([`Client::price_book`]);
//! 3. **computes the fee** ([`crate::fee`]): the relay's cost in wei,
//!    `(RELAY_OVERHEAD_GAS + call_gas) × (2 × base fee + priority fee)` plus
//!    the insertion bounty the exit sends for the change note
//!    (`insertion_bounty(base fee)`), then in the fee's asset with the exit's
//!    margin (a token: converted at the oracles' median prices as the exit
//!    converts it, plus the call's slippage headroom), rounded up. The exit's
//!    own check uses the gas it simulates (never more than that bound) at the
//!    same price, so an honest exit accepts it. The caller's cap (`max_fee`)
//!    is in wei: a token fee is compared at its worth in wei at the book's
//!    prices;
//! 4. **selects a note** and builds the spend: the deadline (now +
//!    [`PrivateCall::deadline_secs`]) and the execution hash exactly as
//!    NoxPool computes it (chain, pool, target, gas, deadline, calldata), the
//!    change back to the wallet's owner; the wallet records the note as
//!    spending, with the deadline, *before* the proof leaves it;
//! 5. **proves** (Groth16, on a blocking thread);
//! 6. **sends** an `EthRequest` carrying the deadline to that exit, every
//!    attempt to the same exit, and waits for the answer within the call's
//!    timeout (the exit simulates, sends, and waits for inclusion before it
//!    answers);
//! 7. the answer is the relay transaction's [`EthReceipt`] or an
//!    [`EthRefusal`]. A refusal means the exit sent nothing (except
//!    `NoReceipt`, which carries the hash of what it sent): the note is
//!    released for the next call — unless the exit says the note is already
//!    spent or being spent, which the chain settles. An exit that asks for a higher fee than
//!    computed (`FeeTooLow`, in the asset's units) is tried once more at its
//!    price (a token: plus the slippage headroom) if that is within the
//!    caller's `max_fee`. An exit that has no fresh price for the token
//!    (`NoPrice`) is [`CallError::ExitHasNoPrice`]; one that finds the
//!    deadline past or too near to get the relay mined (`Expired`) is
//!    [`CallError::DeadlineTooNear`], with the earliest deadline it accepts;
//!    in both cases the note is free again.
//!
//! **The deadline** bounds how long a proof is worth anything: the pool
//! refuses the relay in any block after it, so an exit cannot hold the proof
//! and use it later, and a note whose fate is unknown — a timeout, or a
//! `no_receipt` / `nullifier_pending` refusal — need not stay *spending*
//! forever: the wallet's sync releases it once a confirmed block past the
//! deadline shows its nullifier unspent ([`crate::wallet::Wallet::sync`]).
//! Until then only the chain can tell whether the exit sent it: the sync
//! marks the note spent when it sees the `Relayed` event or the nullifier.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::Address;
use nox_circuits::pool::Execution;
use nox_protocol::NodeId;
use nox_protocol::answer::{EthReceipt, EthRefusal, EthRefusalCode};
use nox_protocol::descriptor::FeePolicy;
use nox_protocol::payload::{ReplyStatus, Request};
use nox_protocol::price::{NoPrice, Trust};
use rand::seq::SliceRandom;

use crate::client::{Client, ClientError, Progress};
pub use crate::fee::{
    ChainFees, DEFAULT_PRICE_SLIPPAGE_BPS, Fee, FeeError, RELAY_OVERHEAD_GAS, TokenPricing, fee_for_call,
};
use crate::fee::{add_bps, check_accepted, fee_in, fee_of_amount, relay_cost_wei};
use crate::prices::{PriceTally, Prices, PricesError, unix_ms};
use crate::wallet::{Prover, Wallet, WalletError};

/// Default wait for a private call's answer, per attempt: simulation,
/// sending, inclusion and both ways through the mixnet.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(90);

/// Default time from building a private call's proof to its deadline, in
/// seconds (`wallet.call_deadline_secs`): long enough for the answer's wait
/// and a few blocks of congestion, short enough that a note whose spend's
/// fate is unknown is released within minutes.
pub const DEFAULT_CALL_DEADLINE_SECS: u64 = 600;

/// A contract call to make privately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateCall {
    /// The contract called.
    pub target: Address,
    /// The call data.
    pub calldata: Vec<u8>,
    /// Gas the call is given, exactly (the pool's executor enforces it).
    pub call_gas: u64,
    /// The asset the fee is paid in (`Address::ZERO`: ETH): the note spent
    /// is of this asset, and the exit must list it in its fee policy.
    pub asset: Address,
    /// The oracles whose signed prices convert the cost into a token
    /// (the `[prices]` section: [`crate::config::ClientFile::price_trust`]);
    /// required for a token fee, unused for ETH. Its chain must be the
    /// wallet's.
    pub prices: Option<Trust>,
    /// Headroom added to a token fee (and to a token `fee_too_low` retry)
    /// for prices that move between the client's view and the exit's, in
    /// basis points.
    pub price_slippage_bps: u16,
    /// The most the caller pays, in wei; a token fee counts at its worth in
    /// wei at the oracles' prices. `None` takes the computed fee whatever it is.
    pub max_fee: Option<u128>,
    /// Pay even if the exit's simulation sees the call fail.
    pub allow_failure: bool,
    /// The exit to use; a random paying exit when `None`.
    pub exit: Option<NodeId>,
    /// Wait per attempt.
    pub timeout: Duration,
    /// Seconds from the proof's construction to its deadline, the last Unix
    /// time at which the pool accepts the relay (bound in the execution
    /// hash). Exits refuse a deadline too near to get the relay mined
    /// (`exit.eth_min_deadline_secs`, 60 s by default).
    pub deadline_secs: u64,
}

impl PrivateCall {
    /// A call of `target` with `calldata` and `call_gas`, paid in ETH, with
    /// the defaults.
    pub fn new(target: Address, calldata: Vec<u8>, call_gas: u64) -> Self {
        PrivateCall {
            target,
            calldata,
            call_gas,
            asset: Address::ZERO,
            prices: None,
            price_slippage_bps: DEFAULT_PRICE_SLIPPAGE_BPS,
            max_fee: None,
            allow_failure: false,
            exit: None,
            timeout: DEFAULT_CALL_TIMEOUT,
            deadline_secs: DEFAULT_CALL_DEADLINE_SECS,
        }
    }

    /// The same call with its fee paid in `token`, priced by the oracles of
    /// `prices` (their rounds come from the client's entry, checked against
    /// these keys).
    pub fn paid_in(mut self, token: Address, prices: Trust) -> Self {
        self.asset = token;
        self.prices = Some(prices);
        self
    }
}

/// Where the time of a private call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallTimings {
    /// Reading the fees through the mixnet (and the token prices from the
    /// entry, at the same time).
    pub fees_ms: u64,
    /// Building the spend and proving it.
    pub prove_ms: u64,
    /// From sending the request to its answer (mixnet both ways, simulation
    /// and inclusion included).
    pub round_trip_ms: u64,
    /// The exit's simulation, as it reports it.
    pub simulate_ms: u64,
    /// The exit's wait for inclusion, as it reports it.
    pub inclusion_ms: u64,
}

impl CallTimings {
    /// The round trip without the exit's simulation and inclusion wait: what
    /// the mixnet and the exit's checks cost.
    pub fn mixnet_ms(&self) -> u64 {
        self.round_trip_ms.saturating_sub(self.simulate_ms + self.inclusion_ms)
    }
}

/// A private call that was performed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    /// The exit that performed it.
    pub exit: NodeId,
    /// Its wallet: the transaction's `from`.
    pub exit_wallet: Address,
    /// The relay transaction as mined.
    pub receipt: EthReceipt,
    /// The asset the fee was paid in (`Address::ZERO`: ETH).
    pub asset: Address,
    /// The fee paid in the asset's base units (the spend's public value).
    pub fee: u128,
    /// What the fee was worth in wei at the client's prices (the fee itself
    /// for ETH).
    pub fee_wei: u128,
    /// The asset's decimals (18 for ETH).
    pub fee_decimals: u8,
    /// The spent note's nullifier (`0x` hex).
    pub nullifier: String,
    /// Where the time went.
    pub timings: CallTimings,
}

/// What a private call reports while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallProgress {
    /// The exit is chosen.
    ExitChosen {
        /// Its node id.
        exit: NodeId,
        /// Its wallet.
        wallet: Address,
    },
    /// The token prices are read: what became of the entry's rounds.
    Prices(PriceTally),
    /// The fee is computed.
    Fee {
        /// The fee: asset, amount, worth in wei.
        fee: Fee,
        /// The gas price it assumes, in wei.
        gas_price: u128,
    },
    /// The proof is built.
    Proved {
        /// Milliseconds it took.
        ms: u64,
    },
    /// The request went out.
    Sent {
        /// Attempt (from 1).
        attempt: u32,
    },
    /// The exit refused at one fee and is tried again at its price.
    Repricing {
        /// The fee the exit asks, in the asset's base units.
        required: u128,
        /// The fee offered now (a token: `required` plus the slippage).
        fee: Fee,
    },
}

/// Why a private call was not performed (or its outcome is unknown).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No exit performs paid calls for this wallet's chain, pool and asset.
    #[error("no exit performs paid calls for chain {chain_id}, pool {pool} in asset {asset}")]
    NoPayingExit {
        /// The wallet's chain.
        chain_id: u64,
        /// The wallet's pool.
        pool: Address,
        /// The asset.
        asset: Address,
    },
    /// The requested exit does not perform paid calls for this wallet.
    #[error("exit {0:?} does not perform paid calls for this wallet's chain and pool")]
    ExitNotPaying(NodeId),
    /// The wallet could not pay (no note large enough, only pending change, …).
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// The mixnet request failed (no answer, no route, …). After a timeout
    /// the exit may have sent the transaction: the note stays marked spending.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The chain's fees could not be read through the mixnet.
    #[error("reading the chain's fees: {0}")]
    Fees(String),
    /// The fee is above the caller's limit.
    #[error("the fee of {fee} wei ({amount} of {}) exceeds the limit of {max} wei", crate::fee::asset_label(*asset))]
    FeeAboveMax {
        /// The fee's worth in wei.
        fee: u128,
        /// The limit, in wei.
        max: u128,
        /// The asset.
        asset: Address,
        /// The fee in the asset's base units.
        amount: u128,
    },
    /// No fee can be computed in the asset: the exit does not list it, or no
    /// oracle keys are configured for a token. Nothing was proven.
    #[error(transparent)]
    Fee(FeeError),
    /// The prices could not be read from the entry, or the trust
    /// configuration cannot work. Nothing was proven.
    #[error(transparent)]
    Prices(#[from] PricesError),
    /// The price trust names another chain than the wallet's.
    #[error("the price oracles are configured for chain {prices}, the wallet is for chain {wallet}")]
    PricesChain {
        /// The trust's chain.
        prices: u64,
        /// The wallet's.
        wallet: u64,
    },
    /// The client's checked rounds do not price the asset (or ETH). Nothing
    /// was proven.
    #[error("no price for {}: {reason} ({tally})", crate::fee::asset_label(*asset))]
    NoPrice {
        /// The asset.
        asset: Address,
        /// What the book lacks.
        reason: NoPrice,
        /// What became of the rounds the entry offered.
        tally: PriceTally,
    },
    /// The exit accepts the token but has no fresh price for it now
    /// (`no_price`); it sent nothing and the note is free again.
    #[error("the exit has no fresh price for the fee's token: {}", .0.message)]
    ExitHasNoPrice(EthRefusal),
    /// The exit finds the call's deadline past, or too near to get the relay
    /// mined before it (`expired`); it sent nothing and the note is free
    /// again. A deadline in the past means this machine's clock is behind.
    #[error(
        "the exit refused the deadline {deadline} (Unix seconds) as too near{}; raise wallet.call_deadline_secs, \
         or check this machine's clock", match earliest { Some(t) => format!(": it accepts {t} or later"), None => String::new() }
    )]
    DeadlineTooNear {
        /// The call's deadline.
        deadline: u64,
        /// The earliest deadline the exit accepts now, as it says.
        earliest: Option<u64>,
        /// The refusal.
        refusal: EthRefusal,
    },
    /// The exit refused; it sent nothing (unless the code is `NoReceipt`).
    #[error("the exit refused the call: {0}")]
    Refused(EthRefusal),
    /// The exit's answer does not decode.
    #[error("the exit's answer does not decode: {0}")]
    BadAnswer(String),
}

fn address(bytes: &[u8; 20]) -> Address {
    Address::from(*bytes)
}

impl Client {
    /// Reads the latest block's base fee and the suggested priority fee
    /// through the mixnet (`eth_getBlockByNumber`, `eth_maxPriorityFeePerGas`
    /// as `RpcCall`s, sent side by side).
    pub async fn chain_fees(&self, chain_id: u64) -> Result<ChainFees, CallError> {
        let block = self.rpc(chain_id, "eth_getBlockByNumber", serde_json::json!(["latest", false]));
        let tip = self.rpc(chain_id, "eth_maxPriorityFeePerGas", serde_json::json!([]));
        let (block, tip) = tokio::join!(block, tip);
        let base_fee = block?
            .get("baseFeePerGas")
            .and_then(|v| v.as_str())
            .and_then(parse_quantity)
            .ok_or_else(|| CallError::Fees("the latest block has no baseFeePerGas".into()))?;
        let priority_fee = tip?
            .as_str()
            .and_then(parse_quantity)
            .ok_or_else(|| CallError::Fees("eth_maxPriorityFeePerGas is not a quantity".into()))?;
        Ok(ChainFees { base_fee, priority_fee })
    }

    /// One JSON-RPC read through the mixnet; the `result`, or the error.
    pub async fn rpc(
        &self,
        chain_id: u64,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, CallError> {
        let json = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
        let answer = self.call(Request::RpcCall { chain_id, json }).await?;
        let mut v: serde_json::Value = serde_json::from_slice(&answer)
            .map_err(|e| CallError::Fees(format!("{method}: the answer is not JSON: {e}")))?;
        if let Some(err) = v.get("error") {
            return Err(CallError::Fees(format!("{method}: {err}")));
        }
        Ok(v.get_mut("result").map(serde_json::Value::take).unwrap_or(serde_json::Value::Null))
    }

    /// Performs `call` through an exit, paid from `wallet` (see the module
    /// docs for the steps and what each failure leaves behind).
    pub async fn private_call(
        &self,
        wallet: &mut Wallet,
        prover: &Arc<Prover>,
        call: &PrivateCall,
        mut progress: impl FnMut(CallProgress),
    ) -> Result<CallOutcome, CallError> {
        let (chain_id, pool) = (wallet.chain_id(), wallet.pool());
        let (exit, policy) = self.choose_paying_exit(chain_id, pool, call)?;
        let exit_wallet = address(&policy.wallet);
        let trust = call.token_trust(&policy, chain_id)?;
        progress(CallProgress::ExitChosen { exit, wallet: exit_wallet });

        let t = Instant::now();
        let (fees, prices) = match trust {
            None => (self.chain_fees(chain_id).await?, None),
            Some(trust) => {
                let (fees, prices) = tokio::join!(self.chain_fees(chain_id), self.price_book(trust));
                let prices = prices?;
                progress(CallProgress::Prices(prices.tally.clone()));
                (fees?, Some(prices))
            }
        };
        let mut timings = CallTimings { fees_ms: t.elapsed().as_millis() as u64, ..CallTimings::default() };
        let mut fee = call.fee(&policy, relay_cost_wei(&fees, call.call_gas), prices.as_ref())?;
        progress(CallProgress::Fee { fee, gas_price: fees.gas_price() });

        let mut repriced = false;
        loop {
            call.check_cap(&fee)?;
            let note = wallet.select(call.asset, fee.amount)?;
            let t = Instant::now();
            let deadline = (unix_ms() / 1_000).saturating_add(call.deadline_secs);
            let execution_hash = nox_circuits::pool::execution_hash(&Execution {
                chain_id,
                pool: pool.as_ref(),
                target: call.target.as_ref(),
                call_gas: call.call_gas,
                deadline,
                data: &call.calldata,
            });
            let prepared = wallet.prepare_spend(&note, fee.amount, exit_wallet, execution_hash, Some(deadline))?;
            let nullifier = prepared.nullifier;
            let payment = {
                let (prover, prepared) = (prover.clone(), prepared.clone());
                match tokio::task::spawn_blocking(move || prover.prove(&prepared)).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(e)) => {
                        wallet.release(nullifier)?;
                        return Err(e.into());
                    }
                    Err(e) => {
                        wallet.release(nullifier)?;
                        return Err(CallError::BadAnswer(format!("the prover stopped: {e}")));
                    }
                }
            };
            timings.prove_ms = t.elapsed().as_millis() as u64;
            progress(CallProgress::Proved { ms: timings.prove_ms });

            let request = Request::EthRequest {
                chain_id,
                target: call.target.into_array(),
                call_gas: call.call_gas,
                deadline,
                allow_failure: call.allow_failure,
                calldata: call.calldata.clone(),
                payment: Box::new(payment),
            };
            let t = Instant::now();
            let reply = self
                .request_to(exit, request, call.timeout, |p| {
                    if let Progress::Sent { attempt, .. } = p {
                        progress(CallProgress::Sent { attempt });
                    }
                })
                .await?;
            timings.round_trip_ms = t.elapsed().as_millis() as u64;
            if reply.status == ReplyStatus::Ok {
                let receipt = EthReceipt::decode(&reply.data).map_err(|e| CallError::BadAnswer(e.to_string()))?;
                timings.simulate_ms = u64::from(receipt.simulate_us) / 1_000;
                timings.inclusion_ms = u64::from(receipt.inclusion_ms);
                return Ok(CallOutcome {
                    exit,
                    exit_wallet,
                    receipt,
                    asset: fee.asset,
                    fee: fee.amount,
                    fee_wei: fee.wei,
                    fee_decimals: fee.decimals,
                    nullifier: nox_circuits::field::to_hex(&nullifier),
                    timings,
                });
            }
            let refusal = EthRefusal::decode(&reply.data)
                .map_err(|e| CallError::BadAnswer(format!("{} answer: {e}", reply.status.label())))?;
            if !leaves_note_spending(refusal.code) {
                // Nothing was sent: the note is free again.
                wallet.release(nullifier)?;
            }
            if refusal.code == EthRefusalCode::NoPrice {
                return Err(CallError::ExitHasNoPrice(refusal));
            }
            if refusal.code == EthRefusalCode::Expired {
                return Err(CallError::DeadlineTooNear { deadline, earliest: earliest_deadline(&refusal), refusal });
            }
            match refusal.required_fee() {
                Some(required) if !repriced && required > fee.amount => {
                    repriced = true;
                    fee = call.repriced_fee(required, prices.as_ref())?;
                    progress(CallProgress::Repricing { required, fee });
                }
                _ => return Err(CallError::Refused(refusal)),
            }
        }
    }

    /// A paying exit for the wallet's chain and pool: the one the call names
    /// (whatever assets it lists: [`Client::private_call`] says which it
    /// lacks), or a random one among those that list the call's asset.
    fn choose_paying_exit(
        &self,
        chain_id: u64,
        pool: Address,
        call: &PrivateCall,
    ) -> Result<(NodeId, FeePolicy), CallError> {
        let fits = |p: &FeePolicy| p.chain_id == chain_id && address(&p.pool) == pool;
        let exits: Vec<(NodeId, FeePolicy)> = self.paying_exits().into_iter().filter(|(_, p)| fits(p)).collect();
        match call.exit {
            Some(id) => exits.into_iter().find(|(e, _)| *e == id).ok_or(CallError::ExitNotPaying(id)),
            None => {
                let takes: Vec<&(NodeId, FeePolicy)> =
                    exits.iter().filter(|(_, p)| p.accepts(&call.asset.0.0)).collect();
                takes.choose(&mut rand::thread_rng()).map(|e| (*e).clone()).ok_or(CallError::NoPayingExit {
                    chain_id,
                    pool,
                    asset: call.asset,
                })
            }
        }
    }
}

impl PrivateCall {
    /// The trust that prices this call's fee at an exit with `policy`, for
    /// the wallet's `chain_id`: `None` for ETH. Checked before anything is
    /// read or proven: the exit lists the asset, and a token has oracles of
    /// the wallet's chain to price it.
    pub fn token_trust(&self, policy: &FeePolicy, chain_id: u64) -> Result<Option<&Trust>, CallError> {
        check_accepted(policy, self.asset).map_err(CallError::Fee)?;
        if self.asset.is_zero() {
            return Ok(None);
        }
        match &self.prices {
            None => Err(CallError::Fee(FeeError::NoPricing { asset: self.asset })),
            Some(t) if t.chain_id != chain_id => Err(CallError::PricesChain { prices: t.chain_id, wallet: chain_id }),
            Some(t) => Ok(Some(t)),
        }
    }

    /// The fee this call offers an exit with `policy` for a relay costing
    /// `cost_wei` ([`crate::fee::fee_in`]; a token priced by `prices`, read
    /// now, with the call's slippage). A missing price says what became of
    /// the entry's rounds.
    pub fn fee(&self, policy: &FeePolicy, cost_wei: u128, prices: Option<&Prices>) -> Result<Fee, CallError> {
        let pricing = prices.map(|p| p.pricing_now(self.price_slippage_bps));
        fee_in(policy, cost_wei, self.asset, pricing.as_ref()).map_err(|e| fee_error(e, prices))
    }

    /// What this call offers after a `fee_too_low` naming `required` (in the
    /// asset's base units): that in ETH; in a token, plus the slippage
    /// headroom (the exit's prices may move again while the proof is rebuilt).
    pub fn repriced_fee(&self, required: u128, prices: Option<&Prices>) -> Result<Fee, CallError> {
        let amount = if self.asset.is_zero() { required } else { add_bps(required, self.price_slippage_bps) };
        let pricing = prices.map(|p| p.pricing_now(self.price_slippage_bps));
        fee_of_amount(amount, self.asset, pricing.as_ref()).map_err(|e| fee_error(e, prices))
    }

    /// [`CallError::FeeAboveMax`] when `fee` is worth more wei than the
    /// call's `max_fee`.
    pub fn check_cap(&self, fee: &Fee) -> Result<(), CallError> {
        match self.max_fee {
            Some(max) if fee.wei > max => {
                Err(CallError::FeeAboveMax { fee: fee.wei, max, asset: fee.asset, amount: fee.amount })
            }
            _ => Ok(()),
        }
    }
}

/// A fee error as the call reports it: a missing price with the tally of
/// the entry's rounds.
fn fee_error(e: FeeError, prices: Option<&Prices>) -> CallError {
    match (e, prices) {
        (FeeError::NoPrice { asset, reason }, Some(p)) => CallError::NoPrice { asset, reason, tally: p.tally.clone() },
        (e, _) => CallError::Fee(e),
    }
}

/// Whether a refusal leaves the note *spending*: the exit sent something it
/// cannot vouch for (`NoReceipt`), or the note is already being spent or
/// spent (`NullifierPending`, `NullifierSpent`) — the wallet's next sync
/// learns its fate from the chain. Any other refusal means nothing of this
/// note left the exit.
pub fn leaves_note_spending(code: EthRefusalCode) -> bool {
    matches!(code, EthRefusalCode::NoReceipt | EthRefusalCode::NullifierPending | EthRefusalCode::NullifierSpent)
}

/// The earliest deadline an `expired` refusal says the exit accepts (its
/// detail: Unix seconds, 8 bytes big-endian).
pub fn earliest_deadline(refusal: &EthRefusal) -> Option<u64> {
    match (refusal.code, <[u8; 8]>::try_from(refusal.detail.as_slice())) {
        (EthRefusalCode::Expired, Ok(b)) => Some(u64::from_be_bytes(b)),
        _ => None,
    }
}

/// A JSON-RPC quantity (`0x`-prefixed hex) as a `u128`.
pub fn parse_quantity(s: &str) -> Option<u128> {
    let digits = s.strip_prefix("0x")?;
    if digits.is_empty() || digits.len() > 32 {
        return None;
    }
    u128::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prices::{book_from_rounds, unix_ms};
    use ed25519_dalek::SigningKey;
    use nox_protocol::price::{ETH, PriceRound, Quote, SOURCE_COINBASE, SOURCE_KRAKEN};

    const CHAIN: u64 = 31337;
    const USDC: Address = Address::repeat_byte(0xa0);

    fn policy(margin_bps: u16, assets: &[Address]) -> FeePolicy {
        FeePolicy {
            wallet: [1; 20],
            pool: [2; 20],
            chain_id: CHAIN,
            margin_bps,
            assets: assets.iter().map(|a| a.0.0).collect(),
        }
    }

    fn oracle(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i; 32])
    }

    fn trust(n: u8, threshold: usize) -> Trust {
        Trust {
            chain_id: CHAIN,
            oracles: (1..=n).map(|i| oracle(i).verifying_key().to_bytes()).collect(),
            threshold,
            max_age_ms: 120_000,
            max_skew_ms: 10_000,
        }
    }

    /// A round of oracle `i` taken `age_ms` ago: ETH at 2000 USD, USDC at 1 USD.
    fn round(i: u8, age_ms: u64) -> Vec<u8> {
        let q = |symbol: &str, token: [u8; 20], token_decimals, price| Quote {
            symbol: symbol.into(),
            token,
            token_decimals,
            price,
            price_decimals: 8,
            sources: SOURCE_COINBASE | SOURCE_KRAKEN,
        };
        let quotes = vec![q("ETH", ETH, 18, 2000_0000_0000), q("USDC", USDC.0.0, 6, 1_0000_0000)];
        PriceRound::sign(&oracle(i), CHAIN, 1, unix_ms() - age_ms, quotes).unwrap().encode()
    }

    fn prices(t: Trust, rounds: &[Vec<u8>]) -> Prices {
        book_from_rounds(t, rounds, unix_ms()).unwrap()
    }

    fn usdc_call(slippage_bps: u16, max_fee: Option<u128>) -> PrivateCall {
        let mut call = PrivateCall::new(Address::repeat_byte(9), vec![], 100_000).paid_in(USDC, trust(3, 2));
        call.price_slippage_bps = slippage_bps;
        call.max_fee = max_fee;
        call
    }

    #[test]
    fn a_call_is_paid_in_eth_unless_told_a_token_and_its_oracles() {
        let eth = PrivateCall::new(Address::repeat_byte(9), vec![], 100_000);
        assert_eq!((eth.asset, eth.prices.is_none(), eth.price_slippage_bps), (Address::ZERO, true, 100));
        assert_eq!(eth.token_trust(&policy(0, &[Address::ZERO]), CHAIN).unwrap(), None);
        let call = usdc_call(100, None);
        assert_eq!(call.token_trust(&policy(0, &[Address::ZERO, USDC]), CHAIN).unwrap(), Some(&trust(3, 2)));
    }

    #[test]
    fn a_token_is_checked_before_anything_is_read_or_proven() {
        let call = usdc_call(100, None);
        let err = call.token_trust(&policy(0, &[Address::ZERO]), CHAIN).unwrap_err();
        assert!(matches!(err, CallError::Fee(FeeError::AssetNotAccepted { asset, .. }) if asset == USDC), "{err}");
        assert!(err.to_string().contains("lists ETH"), "{err}");
        let unpriced = PrivateCall { prices: None, ..call.clone() };
        let err = unpriced.token_trust(&policy(0, &[USDC]), CHAIN).unwrap_err();
        assert!(matches!(err, CallError::Fee(FeeError::NoPricing { .. })), "{err}");
        let err = call.token_trust(&policy(0, &[USDC]), 1).unwrap_err();
        assert!(matches!(err, CallError::PricesChain { prices: CHAIN, wallet: 1 }), "{err}");
    }

    #[test]
    fn a_token_fee_is_the_cost_at_the_oracles_median_with_margin_and_slippage() {
        let p = prices(trust(3, 2), &[round(1, 0), round(2, 1_000)]);
        // 0.001 ETH at 2000 USD: 2 USDC; +10 % margin; +1 % slippage.
        let fee = usdc_call(100, None).fee(&policy(1_000, &[USDC]), 10u128.pow(15), Some(&p)).unwrap();
        assert_eq!((fee.asset, fee.amount, fee.decimals), (USDC, 2_222_000, 6));
        assert_eq!(fee.wei, 1_111_000_000_000_000);
        // ETH: the cost with the margin, whatever the book.
        let eth = PrivateCall::new(Address::ZERO, vec![], 1);
        let fee = eth.fee(&policy(1_000, &[Address::ZERO]), 10u128.pow(15), Some(&p)).unwrap();
        assert_eq!((fee.amount, fee.wei), (1_100_000_000_000_000, 1_100_000_000_000_000));
    }

    #[test]
    fn a_missing_price_says_what_became_of_the_entrys_rounds() {
        let call = usdc_call(100, None);
        let usdc = policy(0, &[USDC]);
        // One fresh trusted round, one stale, one from a stranger: one oracle of two.
        let p = prices(trust(3, 2), &[round(1, 0), round(2, 200_000), round(7, 0)]);
        let err = call.fee(&usdc, 10u128.pow(15), Some(&p)).unwrap_err();
        let CallError::NoPrice { asset, reason, tally } = &err else { panic!("{err}") };
        assert_eq!((*asset, reason), (USDC, &NoPrice::TooFewOracles { fresh: 1, threshold: 2 }));
        assert_eq!((tally.offered, tally.accepted), (3, 1));
        assert_eq!(
            err.to_string(),
            format!(
                "no price for {USDC}: 1 fresh oracle quotes for the asset, 2 required (the entry offered 3 price \
                 rounds, 1 accepted, refused: 1 stale, 1 unknown_oracle)"
            )
        );
        // Nothing offered at all (an entry that does not serve prices yet).
        let err = call.fee(&usdc, 1, Some(&prices(trust(1, 1), &[]))).unwrap_err();
        assert!(err.to_string().contains("the entry offered 0 price rounds"), "{err}");
    }

    #[test]
    fn the_cap_is_in_wei_whatever_the_asset() {
        let p = prices(trust(1, 1), &[round(1, 0)]);
        let usdc = policy(0, &[USDC]);
        // 2 USDC (2,000,000 base units) is worth 0.001 ETH.
        let cost = 10u128.pow(15);
        let fee = usdc_call(0, None).fee(&usdc, cost, Some(&p)).unwrap();
        assert_eq!((fee.amount, fee.wei), (2_000_000, cost));
        assert!(usdc_call(0, Some(cost)).check_cap(&fee).is_ok());
        // A cap far above the amount in base units, below its worth in wei.
        let err = usdc_call(0, Some(cost - 1)).check_cap(&fee).unwrap_err();
        assert!(
            matches!(err, CallError::FeeAboveMax { fee, max, asset, amount: 2_000_000 } if fee == cost && max == cost - 1 && asset == USDC),
            "{err}"
        );
        let eth = PrivateCall { max_fee: Some(10), ..PrivateCall::new(Address::ZERO, vec![], 1) };
        assert!(eth.check_cap(&Fee { asset: Address::ZERO, amount: 11, wei: 11, decimals: 18 }).is_err());
    }

    #[test]
    fn a_fee_too_low_retry_is_in_the_assets_units() {
        let p = prices(trust(1, 1), &[round(1, 0)]);
        // The exit asks 3 USDC: offered with 1 % headroom, valued in wei.
        let fee = usdc_call(100, None).repriced_fee(3_000_000, Some(&p)).unwrap();
        assert_eq!((fee.asset, fee.amount, fee.wei), (USDC, 3_030_000, 1_515_000_000_000_000));
        // ETH: exactly what the exit asks.
        let eth = PrivateCall::new(Address::ZERO, vec![], 1);
        assert_eq!(eth.repriced_fee(12_345, None).unwrap().amount, 12_345);
    }

    #[test]
    fn only_refusals_that_may_have_spent_the_note_keep_it() {
        let kept: Vec<EthRefusalCode> = EthRefusalCode::ALL.into_iter().filter(|c| leaves_note_spending(*c)).collect();
        assert_eq!(kept, [EthRefusalCode::NullifierSpent, EthRefusalCode::NullifierPending, EthRefusalCode::NoReceipt]);
        // An exit without a price for the token sent nothing: the note is free again.
        assert!(!leaves_note_spending(EthRefusalCode::NoPrice));
    }

    #[test]
    fn an_expired_refusal_frees_the_note_and_says_the_earliest_deadline() {
        assert!(!leaves_note_spending(EthRefusalCode::Expired));
        let mut refusal = EthRefusal::new(EthRefusalCode::Expired, "the deadline is too near");
        refusal.detail = 1_800_000_060u64.to_be_bytes().to_vec();
        assert_eq!(earliest_deadline(&refusal), Some(1_800_000_060));
        let err = CallError::DeadlineTooNear { deadline: 1_800_000_000, earliest: Some(1_800_000_060), refusal };
        assert!(err.to_string().contains("it accepts 1800000060 or later"), "{err}");
        // Another code, or a detail of another length, says nothing.
        let mut other = EthRefusal::new(EthRefusalCode::FeeTooLow, "");
        other.detail = 5u64.to_be_bytes().to_vec();
        assert_eq!(earliest_deadline(&other), None);
        assert_eq!(earliest_deadline(&EthRefusal::new(EthRefusalCode::Expired, "")), None);
        assert_eq!(PrivateCall::new(Address::ZERO, vec![], 1).deadline_secs, DEFAULT_CALL_DEADLINE_SECS);
    }

    #[test]
    fn quantities_parse_strictly() {
        assert_eq!(parse_quantity("0x0"), Some(0));
        assert_eq!(parse_quantity("0x3b9aca00"), Some(1_000_000_000));
        assert_eq!(parse_quantity("3b9aca00"), None);
        assert_eq!(parse_quantity("0x"), None);
        assert_eq!(parse_quantity("0xzz"), None);
        assert_eq!(parse_quantity(&format!("0x1{}", "0".repeat(32))), None);
    }

    #[test]
    fn timings_subtract_the_exits_own_waits() {
        let t = CallTimings { round_trip_ms: 1_200, simulate_ms: 30, inclusion_ms: 1_000, ..CallTimings::default() };
        assert_eq!(t.mixnet_ms(), 170);
        assert_eq!(CallTimings { round_trip_ms: 5, inclusion_ms: 9, ..t }.mixnet_ms(), 0);
    }
}
