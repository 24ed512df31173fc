//! Decimal price text → fixed-point integer, exactly.
//!
//! Every source answers with a decimal: Binance and Coinbase as a JSON string
//! (`"3012.34000000"`), CoinGecko as a JSON number (`3012.34`, `1e-5`). A
//! signed round carries integers ([`PRICE_DECIMALS`] decimals), and two
//! oracles fetching the same source must sign the same integer, so the text
//! is converted digit by digit: no `f64` on the way, no binary rounding.
//! Digits beyond [`PRICE_DECIMALS`] are cut off (rounding toward zero).
//!
//! What is not a usable price is refused with its reason: anything that is
//! not a plain decimal (`NaN`, `Infinity`, hex, empty), negative values,
//! values that are zero at [`PRICE_DECIMALS`] decimals, and values above
//! [`MAX_PRICE_USD`] dollars per token, which no asset this oracle prices can
//! be worth and which a broken source might send.

/// Decimals of every price this oracle signs.
pub const PRICE_DECIMALS: u8 = 8;
/// The largest price accepted, in whole US dollars per token.
pub const MAX_PRICE_USD: u128 = 1_000_000_000_000;
/// Most significant digits looked at (u128 holds 38).
const MAX_DIGITS: usize = 38;
/// Exponents beyond this are refused rather than computed.
const MAX_EXPONENT: i64 = 400;

/// Why a price text is not a price.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceTextError {
    /// Not a plain decimal number.
    #[error("not a decimal number")]
    NotANumber,
    /// A minus sign.
    #[error("negative price")]
    Negative,
    /// Zero, or below 10^-8.
    #[error("zero price (or below 10^-{PRICE_DECIMALS})")]
    Zero,
    /// Above [`MAX_PRICE_USD`].
    #[error("absurd price (above {MAX_PRICE_USD} USD)")]
    Absurd,
}

/// `text` as an integer with [`PRICE_DECIMALS`] decimals (see the module docs).
pub fn parse_price(text: &str) -> Result<u128, PriceTextError> {
    let max = MAX_PRICE_USD * 10u128.pow(u32::from(PRICE_DECIMALS));
    let value = parse_fixed(text, PRICE_DECIMALS)?;
    if value == 0 {
        return Err(PriceTextError::Zero);
    }
    if value > max {
        return Err(PriceTextError::Absurd);
    }
    Ok(value)
}

/// `text` × 10^`decimals`, truncated; `Absurd` when it does not fit a u128.
fn parse_fixed(text: &str, decimals: u8) -> Result<u128, PriceTextError> {
    let text = text.trim();
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], parse_exponent(&body[at + 1..])?),
        None => (body, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty()) || !all_digits(int_part) || !all_digits(frac_part) {
        return Err(PriceTextError::NotANumber);
    }
    if negative {
        // "-0" is still not a price; say "negative", the more telling reason.
        return Err(PriceTextError::Negative);
    }
    // The number is digits × 10^(exponent − fraction length); shift by the decimals.
    let digits: String = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Ok(0);
    }
    let frac_len = i64::try_from(frac_part.len()).map_err(|_| PriceTextError::NotANumber)?;
    let shift = exponent - frac_len + i64::from(decimals);
    let kept = if shift >= 0 {
        digits
    } else {
        let drop = usize::try_from(-shift).unwrap_or(usize::MAX);
        if drop >= digits.len() {
            return Ok(0);
        }
        &digits[..digits.len() - drop]
    };
    if kept.len() > MAX_DIGITS {
        return Err(PriceTextError::Absurd);
    }
    let mut value: u128 = 0;
    for b in kept.bytes() {
        value =
            value.checked_mul(10).and_then(|v| v.checked_add(u128::from(b - b'0'))).ok_or(PriceTextError::Absurd)?;
    }
    if shift > 0 {
        let factor = u32::try_from(shift).ok().and_then(|s| 10u128.checked_pow(s)).ok_or(PriceTextError::Absurd)?;
        value = value.checked_mul(factor).ok_or(PriceTextError::Absurd)?;
    }
    Ok(value)
}

fn parse_exponent(text: &str) -> Result<i64, PriceTextError> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PriceTextError::NotANumber);
    }
    let digits = digits.trim_start_matches('0');
    // Beyond MAX_EXPONENT the value is 0 or absurd either way; cap without overflow.
    let magnitude = if digits.len() > 4 { MAX_EXPONENT + 1 } else { digits.parse::<i64>().unwrap_or(0) };
    let magnitude = magnitude.min(MAX_EXPONENT + 1);
    Ok(if negative { -magnitude } else { magnitude })
}

/// `value` (with [`PRICE_DECIMALS`] decimals) as decimal text, for logs.
pub fn format_price(value: u128) -> String {
    let scale = 10u128.pow(u32::from(PRICE_DECIMALS));
    let frac = format!("{:0width$}", value % scale, width = usize::from(PRICE_DECIMALS));
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() { format!("{}", value / scale) } else { format!("{}.{frac}", value / scale) }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn plain_and_exponent_forms_parse_exactly() {
        assert_eq!(parse_price("3012.34000000"), Ok(301_234_000_000));
        assert_eq!(parse_price("3012.34"), Ok(301_234_000_000));
        assert_eq!(parse_price("0.99990000"), Ok(99_990_000));
        assert_eq!(parse_price("1"), Ok(100_000_000));
        assert_eq!(parse_price("1.").unwrap(), 100_000_000);
        assert_eq!(parse_price(".5").unwrap(), 50_000_000);
        assert_eq!(parse_price("1e-5"), Ok(1_000));
        assert_eq!(parse_price("1.5E+3"), Ok(150_000_000_000));
        assert_eq!(parse_price("2.5e2"), Ok(25_000_000_000));
        // 0.1 has no exact f64; here it is exactly 10^7.
        assert_eq!(parse_price("0.1"), Ok(10_000_000));
        // Digits beyond 8 decimals are cut off.
        assert_eq!(parse_price("1.123456789"), Ok(112_345_678));
        assert_eq!(parse_price("97123.456789012345678901234567890"), Ok(9_712_345_678_901));
    }

    #[test]
    fn garbage_is_refused_with_its_reason() {
        for bad in ["", "NaN", "nan", "Infinity", "inf", "0x10", "1,5", "1.2.3", "e5", "1e", "1e+", "--1", " ", "."] {
            assert_eq!(parse_price(bad), Err(PriceTextError::NotANumber), "{bad:?}");
        }
        assert_eq!(parse_price("-3000"), Err(PriceTextError::Negative));
        assert_eq!(parse_price("-0"), Err(PriceTextError::Negative));
        assert_eq!(parse_price("0"), Err(PriceTextError::Zero));
        assert_eq!(parse_price("0.000000001"), Err(PriceTextError::Zero));
        assert_eq!(parse_price("1e-400000000"), Err(PriceTextError::Zero));
        assert_eq!(parse_price("1e13"), Err(PriceTextError::Absurd));
        assert_eq!(parse_price("1e99999999999"), Err(PriceTextError::Absurd));
        assert_eq!(parse_price(&"9".repeat(60)), Err(PriceTextError::Absurd));
        assert_eq!(parse_price("1000000000000"), Ok(MAX_PRICE_USD * 100_000_000));
    }

    #[test]
    fn formats_for_logs() {
        assert_eq!(format_price(301_234_000_000), "3012.34");
        assert_eq!(format_price(100_000_000), "1");
        assert_eq!(format_price(1), "0.00000001");
    }

    proptest! {
        #[test]
        fn formatted_prices_parse_back(v in 1u128..=MAX_PRICE_USD * 100_000_000) {
            prop_assert_eq!(parse_price(&format_price(v)), Ok(v));
        }

        #[test]
        fn an_exponent_moves_the_point(int in 1u64..1_000_000, frac in 0u32..100_000_000, e in -3i32..4) {
            // x·10^e at 8 decimals is x at 8 + e decimals.
            let sci = parse_fixed(&format!("{int}.{frac:08}e{e}"), PRICE_DECIMALS);
            let plain = parse_fixed(&format!("{int}.{frac:08}"), (i32::from(PRICE_DECIMALS) + e) as u8);
            prop_assert_eq!(sci, plain);
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,40}") {
            let _ = parse_price(&s);
        }
    }
}
