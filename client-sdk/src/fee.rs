//! What a private call pays: its cost in wei, and the fee an exit accepts
//! for it in any asset its signed [`FeePolicy`] lists.
//!
//! Two functions hold the whole rule, and both the ETH and the token branch
//! of [`crate::Client::private_call`] go through them:
//!
//! * [`relay_cost_wei`]: `(RELAY_OVERHEAD_GAS + call gas) × (2 × base fee +
//!   priority fee) + insertion_bounty(base fee)`: the most the relay
//!   transaction can cost the exit (its own check uses the gas it simulates,
//!   never more than that bound, at the same price per gas), plus the
//!   insertion bounty it sends as the relay's `msg.value` for the change
//!   note NoxPool v2 queues (`2 × base fee × POOL_INSERT_GAS_PER_LEAF`,
//!   [`nox_protocol::contracts::insertion_bounty`]);
//! * [`fee_in`]: that cost in the fee's asset with the exit's margin. In ETH,
//!   `policy.fee_for(cost)`. In a token, `policy.fee_for(book.wei_to_token(
//!   cost, token, now))` (the exit's own formula, from the same signed
//!   oracle rounds, rounded up at each step), plus the caller's slippage
//!   headroom in basis points for a price that moves between the client's
//!   view and the exit's. The [`Fee`] also carries what the amount is worth
//!   in wei at the book's prices: the caller's cap (`max_fee`) stays in wei
//!   whatever the asset.
//!
//! The price book comes from [`crate::prices`]: rounds the entry hands over,
//! checked against the client's own oracle keys.

use alloy_primitives::Address;
use nox_protocol::contracts::insertion_bounty;
use nox_protocol::descriptor::FeePolicy;
use nox_protocol::price::{ETH, NoPrice, PriceBook, convert};

/// Gas of a `NoxPool.relay` transaction besides the call's own gas: the
/// intrinsic cost and calldata, the deadline and execution-hash checks, the
/// Groth16 verification, the nullifier write, queueing the change note, the
/// payment and the event, with headroom. The v2 relay is about 305 k
/// (`scripts/bench-private-tx` prints `gas_relay`).
pub const RELAY_OVERHEAD_GAS: u64 = 330_000;

/// Default headroom added to a token fee for price movement between the
/// client's and the exit's view of the oracles, in basis points (1 %).
pub const DEFAULT_PRICE_SLIPPAGE_BPS: u16 = 100;

/// Highest slippage headroom a call may add, in basis points (100 %).
pub const MAX_PRICE_SLIPPAGE_BPS: u16 = 10_000;

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

/// What a relay of a call with `call_gas` costs the exit at `fees`, in wei:
/// `(RELAY_OVERHEAD_GAS + call_gas) × gas price` for the transaction plus
/// the change note's insertion bounty the exit sends with it,
/// `insertion_bounty(base fee)` (saturating).
pub fn relay_cost_wei(fees: &ChainFees, call_gas: u64) -> u128 {
    let gas = u128::from(RELAY_OVERHEAD_GAS) + u128::from(call_gas);
    gas.saturating_mul(fees.gas_price()).saturating_add(insertion_bounty(fees.base_fee))
}

/// The ETH fee a client offers an exit with `policy` for a call of
/// `call_gas` at `fees`: [`relay_cost_wei`] plus the margin.
pub fn fee_for_call(policy: &FeePolicy, fees: &ChainFees, call_gas: u64) -> u128 {
    policy.fee_for(relay_cost_wei(fees, call_gas))
}

/// Prices for a fee in a token: the checked book, the time to read it at,
/// and the headroom to add.
#[derive(Debug, Clone, Copy)]
pub struct TokenPricing<'a> {
    /// The book of checked oracle rounds.
    pub book: &'a PriceBook,
    /// Unix milliseconds the prices are read at.
    pub now_ms: u64,
    /// Headroom added to the token fee, in basis points.
    pub slippage_bps: u16,
}

/// A fee in one asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fee {
    /// The asset paid (`Address::ZERO`: ETH).
    pub asset: Address,
    /// In the asset's base units: the spend's public value.
    pub amount: u128,
    /// What `amount` is worth in wei at the book's prices (rounded up);
    /// `amount` itself for ETH. The caller's cap compares with this.
    pub wei: u128,
    /// The asset's decimals (18 for ETH; a token's as its oracles quote it),
    /// for showing `amount` in whole units.
    pub decimals: u8,
}

/// Why no fee can be computed in an asset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeeError {
    /// The exit's signed policy does not list the asset.
    #[error("the exit does not accept {asset} as payment (its policy lists {accepted})")]
    AssetNotAccepted {
        /// The asset asked for.
        asset: Address,
        /// What the policy lists, for the message.
        accepted: String,
    },
    /// A token fee without a price book: no oracle keys are configured.
    #[error("a fee in {asset} needs token prices, but no oracle keys are configured ([prices] oracle_keys)")]
    NoPricing {
        /// The token.
        asset: Address,
    },
    /// The book has no price for the token (or for ETH).
    #[error("no price for {asset}: {reason}")]
    NoPrice {
        /// The token.
        asset: Address,
        /// What the book lacks.
        reason: NoPrice,
    },
}

/// `x` plus `bps` basis points of it, rounded up (saturating).
pub fn add_bps(x: u128, bps: u16) -> u128 {
    let m = u128::from(bps);
    let extra = (x / 10_000).saturating_mul(m) + ((x % 10_000) * m).div_ceil(10_000);
    x.saturating_add(extra)
}

/// The fee an exit with `policy` accepts for a relay costing `cost_wei`,
/// in `asset` (see the module docs). A token needs `pricing`; ETH ignores it.
pub fn fee_in(
    policy: &FeePolicy,
    cost_wei: u128,
    asset: Address,
    pricing: Option<&TokenPricing<'_>>,
) -> Result<Fee, FeeError> {
    check_accepted(policy, asset)?;
    if asset.0.0 == ETH {
        return Ok(eth_fee(policy.fee_for(cost_wei)));
    }
    let pricing = pricing.ok_or(FeeError::NoPricing { asset })?;
    let no_price = |reason| FeeError::NoPrice { asset, reason };
    let base = policy.fee_in(&asset.0.0, cost_wei, Some(pricing.book), pricing.now_ms).map_err(no_price)?;
    token_fee(add_bps(base, pricing.slippage_bps), asset, pricing)
}

/// Whether the exit's signed `policy` lists `asset`; if not, the error
/// names what it lists.
pub fn check_accepted(policy: &FeePolicy, asset: Address) -> Result<(), FeeError> {
    if policy.accepts(&asset.0.0) {
        return Ok(());
    }
    let accepted: Vec<String> = policy.assets.iter().map(|a| asset_label(Address::from(*a))).collect();
    Err(FeeError::AssetNotAccepted { asset, accepted: accepted.join(", ") })
}

/// A fee of `amount` base units of `asset`, with its worth in wei at the
/// book's prices (for an amount the exit named: `fee_too_low`'s minimum).
pub fn fee_of_amount(amount: u128, asset: Address, pricing: Option<&TokenPricing<'_>>) -> Result<Fee, FeeError> {
    if asset.0.0 == ETH {
        return Ok(eth_fee(amount));
    }
    token_fee(amount, asset, pricing.ok_or(FeeError::NoPricing { asset })?)
}

fn token_fee(amount: u128, asset: Address, pricing: &TokenPricing<'_>) -> Result<Fee, FeeError> {
    let no_price = |reason| FeeError::NoPrice { asset, reason };
    let token = pricing.book.price(&asset.0.0, pricing.now_ms).map_err(no_price)?;
    let eth = pricing.book.price(&ETH, pricing.now_ms).map_err(no_price)?;
    // `convert` turns units of its first price's asset into the second's.
    let wei = convert(amount, &token, &eth).map_err(no_price)?;
    Ok(Fee { asset, amount, wei, decimals: token.token_decimals })
}

fn eth_fee(amount: u128) -> Fee {
    Fee { asset: Address::ZERO, amount, wei: amount, decimals: 18 }
}

/// `ETH` for the zero address, else the address.
pub fn asset_label(asset: Address) -> String {
    if asset.is_zero() { "ETH".to_string() } else { asset.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use nox_protocol::price::{PriceRound, Quote, SOURCE_BINANCE, SOURCE_COINGECKO, Trust};

    const NOW: u64 = 1_800_000_000_000;
    const USDC: Address = Address::repeat_byte(0xa0);

    fn policy(margin_bps: u16, assets: &[Address]) -> FeePolicy {
        FeePolicy {
            wallet: [1; 20],
            pool: [2; 20],
            chain_id: 31337,
            margin_bps,
            assets: assets.iter().map(|a| a.0.0).collect(),
        }
    }

    fn quote(symbol: &str, token: Address, decimals: u8, usd_8: u128) -> Quote {
        Quote {
            symbol: symbol.into(),
            token: token.0.0,
            token_decimals: decimals,
            price: usd_8,
            price_decimals: 8,
            sources: SOURCE_BINANCE | SOURCE_COINGECKO,
        }
    }

    /// A book trusting oracles 1..=n with `threshold`, holding one round of
    /// each of `signers` at `at`: ETH at 3000 USD, USDC at 1 USD.
    fn book(n: u8, threshold: usize, signers: &[u8], at: u64) -> PriceBook {
        let key = |i: u8| SigningKey::from_bytes(&[i; 32]);
        let trust = Trust {
            chain_id: 31337,
            oracles: (1..=n).map(|i| key(i).verifying_key().to_bytes()).collect(),
            threshold,
            max_age_ms: 120_000,
            max_skew_ms: 10_000,
        };
        let mut book = PriceBook::new(trust).unwrap();
        for &i in signers {
            let quotes = vec![quote("ETH", Address::ZERO, 18, 3000_0000_0000), quote("USDC", USDC, 6, 1_0000_0000)];
            book.accept(PriceRound::sign(&key(i), 31337, 1, at, quotes).unwrap(), at).unwrap();
        }
        book
    }

    fn pricing(book: &PriceBook, slippage_bps: u16) -> TokenPricing<'_> {
        TokenPricing { book, now_ms: NOW, slippage_bps }
    }

    #[test]
    fn the_cost_covers_overhead_call_gas_and_the_insertion_bounty_at_twice_the_base_fee() {
        let fees = ChainFees { base_fee: 1_000_000_000, priority_fee: 1 };
        assert_eq!(fees.gas_price(), 2_000_000_001);
        // The change note's bounty: 2 × base fee × 40,000 gas, sent by the exit.
        let bounty = 2 * 1_000_000_000 * u128::from(nox_protocol::contracts::POOL_INSERT_GAS_PER_LEAF);
        assert_eq!(bounty, 80_000_000_000_000);
        let cost = u128::from(RELAY_OVERHEAD_GAS + 100_000) * 2_000_000_001 + bounty;
        assert_eq!(relay_cost_wei(&fees, 100_000), cost);
        // The bounty follows the base fee only, not the priority fee.
        let tipped = ChainFees { priority_fee: 1_000_000_001, ..fees };
        assert_eq!(relay_cost_wei(&tipped, 0), u128::from(RELAY_OVERHEAD_GAS) * 3_000_000_001 + bounty);
        assert_eq!(relay_cost_wei(&ChainFees { base_fee: 0, priority_fee: 7 }, 0), u128::from(RELAY_OVERHEAD_GAS) * 7);
        assert_eq!(fee_for_call(&policy(0, &[Address::ZERO]), &fees, 100_000), cost);
        assert_eq!(fee_for_call(&policy(1_000, &[Address::ZERO]), &fees, 100_000), cost + cost.div_ceil(10));
        // More gas or a higher base fee never lowers the cost.
        assert!(relay_cost_wei(&fees, 100_001) > relay_cost_wei(&fees, 100_000));
        let dearer = ChainFees { base_fee: 1_000_000_001, ..fees };
        assert!(relay_cost_wei(&dearer, 100_000) > relay_cost_wei(&fees, 100_000));
        let huge = ChainFees { base_fee: u128::MAX, priority_fee: u128::MAX };
        assert_eq!(relay_cost_wei(&huge, 1), u128::MAX);
    }

    #[test]
    fn an_eth_fee_is_the_cost_with_the_margin_and_needs_no_prices() {
        let p = policy(1_000, &[Address::ZERO, USDC]);
        let fee = fee_in(&p, 1_000_000, Address::ZERO, None).unwrap();
        assert_eq!(fee, Fee { asset: Address::ZERO, amount: 1_100_000, wei: 1_100_000, decimals: 18 });
        // A book changes nothing for ETH, nor does slippage.
        let b = book(1, 1, &[1], NOW);
        assert_eq!(fee_in(&p, 1_000_000, Address::ZERO, Some(&pricing(&b, 500))).unwrap(), fee);
    }

    #[test]
    fn a_token_fee_is_the_exits_formula_plus_slippage_rounded_up() {
        let b = book(3, 2, &[1, 2], NOW);
        let p = policy(1_000, &[Address::ZERO, USDC]);
        // 0.001 ETH at 3000 USD = 3 USDC = 3,000,000 base units; +10 % margin.
        let cost = 10u128.pow(15);
        let exits = p.fee_for(b.wei_to_token(cost, &USDC.0.0, NOW).unwrap());
        assert_eq!(exits, 3_300_000);
        let fee = fee_in(&p, cost, USDC, Some(&pricing(&b, 0))).unwrap();
        assert_eq!((fee.asset, fee.amount), (USDC, exits));
        // Its worth in wei: 3.3 USDC at 3000 USD per ETH.
        assert_eq!((fee.wei, fee.decimals), (1_100_000_000_000_000, 6));
        // 1 % slippage on top.
        let fee = fee_in(&p, cost, USDC, Some(&pricing(&b, 100))).unwrap();
        assert_eq!(fee.amount, 3_333_000);
        assert_eq!(fee.wei, 1_111_000_000_000_000);
        // A cost below one base unit still pays one, and slippage rounds up.
        let fee = fee_in(&policy(0, &[USDC]), 1, USDC, Some(&pricing(&b, 100))).unwrap();
        assert_eq!(fee.amount, 2, "1 base unit, plus 1 % of it rounded up");
        assert_eq!(add_bps(10_001, 1), 10_003);
        assert_eq!(add_bps(u128::MAX, 1), u128::MAX);
    }

    #[test]
    fn a_token_the_exit_does_not_list_is_refused_before_anything_else() {
        let b = book(1, 1, &[1], NOW);
        let eth_only = policy(0, &[Address::ZERO]);
        let err = fee_in(&eth_only, 1_000, USDC, Some(&pricing(&b, 0))).unwrap_err();
        assert_eq!(err, FeeError::AssetNotAccepted { asset: USDC, accepted: "ETH".into() });
        let usdc_only = policy(0, &[USDC]);
        assert!(matches!(fee_in(&usdc_only, 1_000, Address::ZERO, None), Err(FeeError::AssetNotAccepted { .. })));
    }

    #[test]
    fn a_token_fee_needs_a_fresh_price_from_the_threshold_of_oracles() {
        let p = policy(0, &[USDC]);
        assert_eq!(fee_in(&p, 1_000, USDC, None).unwrap_err(), FeeError::NoPricing { asset: USDC });
        // Below the threshold.
        let few = book(3, 2, &[1], NOW);
        assert_eq!(
            fee_in(&p, 1_000, USDC, Some(&pricing(&few, 0))).unwrap_err(),
            FeeError::NoPrice { asset: USDC, reason: NoPrice::TooFewOracles { fresh: 1, threshold: 2 } }
        );
        // Fresh when taken, stale by the time of the call.
        let old = book(1, 1, &[1], NOW - 120_001);
        let err = fee_in(&p, 1_000, USDC, Some(&TokenPricing { book: &old, now_ms: NOW, slippage_bps: 0 }));
        assert!(matches!(err, Err(FeeError::NoPrice { reason: NoPrice::TooFewOracles { fresh: 0, .. }, .. })));
        // A token the oracles do not quote.
        let other = Address::repeat_byte(7);
        let b = book(1, 1, &[1], NOW);
        let err = fee_in(&policy(0, &[other]), 1_000, other, Some(&pricing(&b, 0))).unwrap_err();
        assert!(matches!(err, FeeError::NoPrice { asset, .. } if asset == other));
    }

    #[test]
    fn an_amount_the_exit_names_is_valued_in_wei_at_the_same_prices() {
        let b = book(1, 1, &[1], NOW);
        assert_eq!(
            fee_of_amount(5, Address::ZERO, None).unwrap(),
            Fee { asset: Address::ZERO, amount: 5, wei: 5, decimals: 18 }
        );
        // 3 USDC = 0.001 ETH.
        assert_eq!(fee_of_amount(3_000_000, USDC, Some(&pricing(&b, 0))).unwrap().wei, 10u128.pow(15));
        assert_eq!(fee_of_amount(3_000_000, USDC, None).unwrap_err(), FeeError::NoPricing { asset: USDC });
    }
}
