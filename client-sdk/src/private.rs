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
//! 3. **computes the fee** ([`fee_for_call`]): `(RELAY_OVERHEAD_GAS +
//!    call_gas) × (2 × base fee + priority fee)`, plus the exit's margin,
//!    rounded up — the exit's own check uses the gas it simulates (never more
//!    than that bound) at the same price, so an honest exit accepts it;
//! 4. **selects a note** and builds the spend: the execution hash exactly as
//!    NoxPool computes it (chain, pool, target, gas, calldata), the change back
//!    to the wallet's owner; the wallet records the note as spending *before*
//!    the proof leaves it;
//! 5. **proves** (Groth16, on a blocking thread);
//! 6. **sends** an `EthRequest` to that exit, every attempt to the same exit,
//!    and waits for the answer within the call's timeout (the exit simulates,
//!    sends, and waits for inclusion before it answers);
//! 7. the answer is the relay transaction's [`EthReceipt`] or an
//!    [`EthRefusal`]. A refusal means the exit sent nothing (except
//!    `NoReceipt`, which carries the hash of what it sent): the note is
//!    released for the next call — unless the exit says the note is already
//!    spent or being spent, which the next sync settles. An exit that asks for a higher fee than
//!    computed (`FeeTooLow`) is tried once more at its price if that is within
//!    the caller's `max_fee`.
//!
//! A timeout leaves the note marked spending: the exit may have sent the
//! transaction, and only the chain can tell (the wallet's next sync sees the
//! `Relayed` event, or [`crate::wallet::Wallet::release`] frees the note once
//! the chain shows it unspent).

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::Address;
use nox_protocol::NodeId;
use nox_protocol::answer::{EthReceipt, EthRefusal, EthRefusalCode};
use nox_protocol::descriptor::FeePolicy;
use nox_protocol::payload::{ReplyStatus, Request};
use rand::seq::SliceRandom;

use crate::client::{Client, ClientError, Progress};
use crate::wallet::{Prover, Wallet, WalletError};

/// Gas of a `NoxPool.relay` transaction besides the call's own gas: the
/// intrinsic cost and calldata, the Groth16 verification, the nullifier
/// write, the payment and the event, with headroom. Measured at about 297 k
/// on the devnet (`scripts/bench-private-tx` prints `gas_relay`).
pub const RELAY_OVERHEAD_GAS: u64 = 330_000;

/// Default wait for a private call's answer, per attempt: simulation,
/// sending, inclusion and both ways through the mixnet.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(90);

/// A contract call to make privately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateCall {
    /// The contract called.
    pub target: Address,
    /// The call data.
    pub calldata: Vec<u8>,
    /// Gas the call is given, exactly (the pool's executor enforces it).
    pub call_gas: u64,
    /// The asset paid with (`Address::ZERO`: ETH).
    pub asset: Address,
    /// The most the caller pays; `None` takes the computed fee whatever it is.
    pub max_fee: Option<u128>,
    /// Pay even if the exit's simulation sees the call fail.
    pub allow_failure: bool,
    /// The exit to use; a random paying exit when `None`.
    pub exit: Option<NodeId>,
    /// Wait per attempt.
    pub timeout: Duration,
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
            max_fee: None,
            allow_failure: false,
            exit: None,
            timeout: DEFAULT_CALL_TIMEOUT,
        }
    }
}

/// Where the time of a private call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallTimings {
    /// Reading the fees through the mixnet.
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
    /// The fee paid (the spend's public value).
    pub fee: u128,
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
    /// The fee is computed.
    Fee {
        /// The fee, in the asset's base units.
        fee: u128,
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
        /// The fee the exit asks.
        required: u128,
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
    #[error("exit {0:?} does not perform paid calls for this wallet's chain, pool and asset")]
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
    #[error("the fee of {fee} exceeds the limit of {max}")]
    FeeAboveMax {
        /// The fee.
        fee: u128,
        /// The limit.
        max: u128,
    },
    /// The exit refused; it sent nothing (unless the code is `NoReceipt`).
    #[error("the exit refused the call: {0}")]
    Refused(EthRefusal),
    /// The exit's answer does not decode.
    #[error("the exit's answer does not decode: {0}")]
    BadAnswer(String),
}

/// The fees of the chain's latest block, in wei.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainFees {
    /// The latest block's base fee.
    pub base_fee: u128,
    /// The priority fee the chain's node suggests.
    pub priority_fee: u128,
}

impl ChainFees {
    /// The price per gas both the client and an exit count a relay's cost
    /// at: twice the base fee (room for six full blocks of increases) plus
    /// the priority fee.
    pub fn gas_price(&self) -> u128 {
        self.base_fee.saturating_mul(2).saturating_add(self.priority_fee)
    }
}

/// The fee a client offers an exit with `policy` for a call of `call_gas` at
/// `fees`: `(RELAY_OVERHEAD_GAS + call_gas) × gas price`, plus the margin.
pub fn fee_for_call(policy: &FeePolicy, fees: &ChainFees, call_gas: u64) -> u128 {
    let gas = u128::from(RELAY_OVERHEAD_GAS) + u128::from(call_gas);
    policy.fee_for(gas.saturating_mul(fees.gas_price()))
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
        progress(CallProgress::ExitChosen { exit, wallet: exit_wallet });

        let t = Instant::now();
        let fees = self.chain_fees(chain_id).await?;
        let mut timings = CallTimings { fees_ms: t.elapsed().as_millis() as u64, ..CallTimings::default() };
        let mut fee = fee_for_call(&policy, &fees, call.call_gas);
        progress(CallProgress::Fee { fee, gas_price: fees.gas_price() });

        let execution_hash = nox_circuits::pool::execution_hash(
            chain_id,
            pool.as_ref(),
            call.target.as_ref(),
            call.call_gas,
            &call.calldata,
        );
        let mut repriced = false;
        loop {
            if let Some(max) = call.max_fee.filter(|m| fee > *m) {
                return Err(CallError::FeeAboveMax { fee, max });
            }
            let note = wallet.select(call.asset, fee)?;
            let t = Instant::now();
            let prepared = wallet.prepare_spend(&note, fee, exit_wallet, execution_hash)?;
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
                    fee,
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
            match refusal.required_fee() {
                Some(required) if !repriced && required > fee => {
                    repriced = true;
                    fee = required;
                    progress(CallProgress::Repricing { required });
                }
                _ => return Err(CallError::Refused(refusal)),
            }
        }
    }

    fn choose_paying_exit(
        &self,
        chain_id: u64,
        pool: Address,
        call: &PrivateCall,
    ) -> Result<(NodeId, FeePolicy), CallError> {
        let fits = |p: &FeePolicy| p.chain_id == chain_id && address(&p.pool) == pool && p.accepts(&call.asset.0.0);
        let exits: Vec<(NodeId, FeePolicy)> = self.paying_exits().into_iter().filter(|(_, p)| fits(p)).collect();
        match call.exit {
            Some(id) => exits.into_iter().find(|(e, _)| *e == id).ok_or(CallError::ExitNotPaying(id)),
            None => exits.choose(&mut rand::thread_rng()).cloned().ok_or(CallError::NoPayingExit {
                chain_id,
                pool,
                asset: call.asset,
            }),
        }
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

    fn policy(margin_bps: u16) -> FeePolicy {
        FeePolicy { wallet: [1; 20], pool: [2; 20], chain_id: 31337, margin_bps, assets: vec![[0; 20]] }
    }

    #[test]
    fn the_fee_covers_overhead_and_call_gas_at_twice_the_base_fee_with_the_margin() {
        let fees = ChainFees { base_fee: 1_000_000_000, priority_fee: 1 };
        assert_eq!(fees.gas_price(), 2_000_000_001);
        let cost = u128::from(RELAY_OVERHEAD_GAS + 100_000) * 2_000_000_001;
        assert_eq!(fee_for_call(&policy(0), &fees, 100_000), cost);
        assert_eq!(fee_for_call(&policy(1_000), &fees, 100_000), cost + cost.div_ceil(10));
        // More gas, a higher base fee or a higher margin never lowers the fee.
        assert!(fee_for_call(&policy(1_000), &fees, 100_001) > fee_for_call(&policy(1_000), &fees, 100_000));
        let dearer = ChainFees { base_fee: 1_000_000_001, ..fees };
        assert!(fee_for_call(&policy(1_000), &dearer, 100_000) > fee_for_call(&policy(1_000), &fees, 100_000));
    }

    #[test]
    fn only_refusals_that_may_have_spent_the_note_keep_it() {
        let kept: Vec<EthRefusalCode> = EthRefusalCode::ALL.into_iter().filter(|c| leaves_note_spending(*c)).collect();
        assert_eq!(kept, [EthRefusalCode::NullifierSpent, EthRefusalCode::NullifierPending, EthRefusalCode::NoReceipt]);
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
