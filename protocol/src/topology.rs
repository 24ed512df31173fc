//! Who may stand where in the network: roles, layers and the rule that maps
//! an operator to its layer. One definition for every party — the node's
//! configuration, its descriptors, NoxRegistry's `role` field, the operator
//! commands and the client's route choice all read it from here.
//!
//! | role  | registry / descriptor code | layer                                                 |
//! |-------|----------------------------|-------------------------------------------------------|
//! | relay | 0                          | [`relay_layer`] of the operator and of the hash of    |
//! |       |                            | the block that mined its commitment: 0 entry, 1 mix   |
//! | exit  | 1                          | [`EXIT_LAYER`] (2)                                    |
//!
//! A relay's layer is known only once its registration commitment is mined;
//! from then on the registry's record is the authority, and the node's
//! `node.layer` must repeat it (peers refuse descriptors claiming another).

use alloy_primitives::{Address, B256};

pub use crate::contracts::{EXIT_LAYER, relay_layer};

/// Highest layer (0 = entry, 1 = mix, 2 = exit).
pub const MAX_LAYER: u8 = 2;
/// Layer of entry nodes: the only layer that admits clients.
pub const ENTRY_LAYER: u8 = 0;
/// Layer of mix nodes.
pub const MIX_LAYER: u8 = 1;

/// A node's role in the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Role {
    /// A mixing relay (layer 0 or 1).
    #[default]
    Relay,
    /// An exit (layer 2): executes requests.
    Exit,
}

impl Role {
    /// The role's code in NoxRegistry (`Role` enum) and in descriptors.
    pub const fn code(self) -> u8 {
        match self {
            Role::Relay => 0,
            Role::Exit => 1,
        }
    }

    /// The role of a registry or descriptor code; `None` for an unknown one.
    pub const fn from_code(code: u8) -> Option<Role> {
        match code {
            0 => Some(Role::Relay),
            1 => Some(Role::Exit),
            _ => None,
        }
    }

    /// `relay` or `exit`, as configuration files and command output say it.
    pub const fn name(self) -> &'static str {
        match self {
            Role::Relay => "relay",
            Role::Exit => "exit",
        }
    }

    /// Whether a node of this role may stand in `layer`.
    pub const fn allows_layer(self, layer: u8) -> bool {
        match self {
            Role::Relay => layer < EXIT_LAYER,
            Role::Exit => layer == EXIT_LAYER,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The layer NoxRegistry assigns to a `role` node registered from
/// `operator` whose commitment was mined in the block of hash `seed`:
/// [`EXIT_LAYER`] for an exit, [`relay_layer`] for a relay.
pub fn assigned_layer(role: Role, operator: Address, seed: B256) -> u8 {
    match role {
        Role::Exit => EXIT_LAYER,
        Role::Relay => relay_layer(operator, seed),
    }
}

/// A configured layer that is not the one the registry assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the registry placed the {role} run from wallet {operator} in layer {assigned}, but node.layer is {configured}; \
     set node.layer = {assigned} (peers refuse descriptors that claim another layer)"
)]
pub struct LayerMismatch {
    /// The wallet.
    pub operator: Address,
    /// The node's role.
    pub role: Role,
    /// The configured layer.
    pub configured: u8,
    /// The registry's layer.
    pub assigned: u8,
}

/// Checks that `configured` is `recorded`, the layer the registry assigned to
/// the `role` node run from `operator`.
pub fn check_layer(role: Role, configured: u8, operator: Address, recorded: u8) -> Result<(), LayerMismatch> {
    if recorded == configured { Ok(()) } else { Err(LayerMismatch { operator, role, configured, assigned: recorded }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_refused() {
        for role in [Role::Relay, Role::Exit] {
            assert_eq!(Role::from_code(role.code()), Some(role));
        }
        assert_eq!(Role::from_code(2), None);
        assert_eq!(Role::Exit.to_string(), "exit");
    }

    #[test]
    fn layers_follow_the_role() {
        assert!(Role::Relay.allows_layer(ENTRY_LAYER) && Role::Relay.allows_layer(MIX_LAYER));
        assert!(!Role::Relay.allows_layer(EXIT_LAYER) && Role::Exit.allows_layer(EXIT_LAYER));
        assert!(!Role::Exit.allows_layer(0));
    }

    #[test]
    fn layer_check_names_the_layer_to_set() {
        let operator = Address::repeat_byte(7);
        let assigned = assigned_layer(Role::Relay, operator, B256::repeat_byte(9));
        assert!(check_layer(Role::Relay, assigned, operator, assigned).is_ok());
        let message = check_layer(Role::Relay, 1 - assigned, operator, assigned).unwrap_err().to_string();
        assert!(message.contains(&format!("set node.layer = {assigned}")), "{message}");
        let exit = assigned_layer(Role::Exit, operator, B256::repeat_byte(9));
        assert_eq!(exit, EXIT_LAYER);
        assert!(check_layer(Role::Exit, 0, operator, exit).is_err());
    }
}
