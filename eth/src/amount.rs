//! Token amounts as people type and read them: whole tokens with up to 18
//! decimals (`1000`, `1000.5`), converted with the token's `decimals()`.

use std::fmt;
use std::str::FromStr;

use alloy_primitives::U256;

/// Most fractional digits a typed amount may have.
pub const MAX_DECIMALS: u8 = 18;

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

/// `amount` base units as tokens with the base units beside them:
/// `1000.5 tokens (1000500000000000000000 base units)`.
pub fn tokens(amount: U256, decimals: u8) -> String {
    format!("{} tokens ({amount} base units)", format_token_amount(amount, decimals))
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
}
