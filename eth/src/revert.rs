//! Revert data in words: what a contract refused, with the error's fields.

use alloy_sol_types::{Panic, Revert, SolError, SolInterface};
use nox_protocol::contracts::{NoxRegistry, NoxTestToken};

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

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{Address, U256};

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
}
