//! [`RegistryView`]: NoxRegistry's registered set and minimum stake, folded
//! from its events, and the active set it gives the topology.
//!
//! The fold is pure: the [`crate::registry::follower`] feeds it confirmed logs in
//! chain order; a client and a node fold the same events into the same view.

use std::collections::BTreeMap;

use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::SolEvent;
use nox_protocol::contracts::{NoxRegistry, topology_fingerprint};
use nox_protocol::{NodeId, Role};
use serde::{Deserialize, Serialize};

/// A registry log of a known event that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable registry log: {0}")]
pub struct UndecodableLog(pub String);

/// A node of the active set: registered with at least the minimum stake, a
/// usable identity key and a layer its role allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveNode {
    /// Node id (the registered identity key).
    pub id: NodeId,
    /// Layer.
    pub layer: u8,
    /// Relay or exit.
    pub role: Role,
    /// The multiaddr it registered (not checked here: a node with an
    /// unparsable one is routable by id but cannot be dialled).
    pub multiaddr: String,
    /// The operator's address.
    pub operator: Address,
    /// Active stake in token base units.
    pub stake: U256,
}

/// One registered node, as the registry's events describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredNode {
    /// Identity key = node id.
    pub identity: B256,
    /// 0 relay, 1 exit (the registry's `Role`).
    pub role: u8,
    /// 0, 1 or 2.
    pub layer: u8,
    /// Active stake in token base units.
    pub stake: U256,
    /// The multiaddr it registered.
    pub multiaddr: String,
}

/// The registered set and the minimum stake, folded from registry events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryView {
    /// The registry's `minStake`.
    pub min_stake: U256,
    /// Registered nodes by operator address.
    pub nodes: BTreeMap<Address, RegisteredNode>,
}

impl RegistryView {
    /// Applies one registry log. Logs of events that do not change the
    /// topology are ignored; a log of a known event that does not decode is an
    /// error.
    pub fn apply(&mut self, log: &alloy_primitives::Log) -> Result<(), UndecodableLog> {
        let Some(topic) = log.topics().first() else { return Ok(()) };
        let decode = |e: alloy_sol_types::Error| UndecodableLog(e.to_string());
        match *topic {
            NoxRegistry::NodeRegistered::SIGNATURE_HASH => {
                let ev = NoxRegistry::NodeRegistered::decode_log_data(&log.data).map_err(decode)?;
                self.nodes.insert(
                    ev.operator,
                    RegisteredNode {
                        identity: ev.identityKey,
                        role: ev.role,
                        layer: ev.layer,
                        stake: ev.stake,
                        multiaddr: ev.multiaddr,
                    },
                );
            }
            NoxRegistry::StakeAdded::SIGNATURE_HASH => {
                let ev = NoxRegistry::StakeAdded::decode_log_data(&log.data).map_err(decode)?;
                if let Some(n) = self.nodes.get_mut(&ev.operator) {
                    n.stake = ev.newStake;
                }
            }
            NoxRegistry::NodeSlashed::SIGNATURE_HASH => {
                let ev = NoxRegistry::NodeSlashed::decode_log_data(&log.data).map_err(decode)?;
                // The registry takes a slash from the active stake first.
                if let Some(n) = self.nodes.get_mut(&ev.operator) {
                    n.stake = n.stake.saturating_sub(ev.amount);
                }
            }
            NoxRegistry::NodeRemoved::SIGNATURE_HASH => {
                let ev = NoxRegistry::NodeRemoved::decode_log_data(&log.data).map_err(decode)?;
                self.nodes.remove(&ev.operator);
            }
            NoxRegistry::MinStakeChanged::SIGNATURE_HASH => {
                let ev = NoxRegistry::MinStakeChanged::decode_log_data(&log.data).map_err(decode)?;
                self.min_stake = ev.newValue;
            }
            _ => {}
        }
        Ok(())
    }

    /// XOR of keccak256(operator) over the registered set: the registry's
    /// `topologyFingerprint` when the view is right.
    pub fn fingerprint(&self) -> B256 {
        topology_fingerprint(self.nodes.keys())
    }

    /// keccak256 of the whole view — the minimum stake and every registered
    /// node with all its fields, in operator order. Two views are equal
    /// exactly when their digests are (barring a keccak collision); unlike
    /// [`RegistryView::fingerprint`], which covers only the operators, it
    /// changes when an identity key, stake, layer, role or multiaddr does.
    /// Followers reading several endpoints compare it.
    pub fn digest(&self) -> B256 {
        let mut bytes = Vec::with_capacity(32 + self.nodes.len() * 128);
        bytes.extend_from_slice(&self.min_stake.to_be_bytes::<32>());
        bytes.extend_from_slice(&(self.nodes.len() as u64).to_be_bytes());
        for (operator, n) in &self.nodes {
            bytes.extend_from_slice(operator.as_slice());
            bytes.extend_from_slice(n.identity.as_slice());
            bytes.push(n.role);
            bytes.push(n.layer);
            bytes.extend_from_slice(&n.stake.to_be_bytes::<32>());
            bytes.extend_from_slice(&(n.multiaddr.len() as u64).to_be_bytes());
            bytes.extend_from_slice(n.multiaddr.as_bytes());
        }
        alloy_primitives::keccak256(bytes)
    }

    /// Nodes that belong in routes and may connect: registered with at least
    /// the minimum stake, with a usable identity key and a layer that matches
    /// their role.
    pub fn active_members(&self) -> Vec<ActiveNode> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.stake >= self.min_stake)
            .filter_map(|(operator, n)| {
                let role = Role::from_code(n.role)?;
                if !role.allows_layer(n.layer) {
                    return None;
                }
                ed25519_dalek::VerifyingKey::from_bytes(&n.identity.0).ok()?;
                Some(ActiveNode {
                    id: NodeId(n.identity.0),
                    layer: n.layer,
                    role,
                    multiaddr: n.multiaddr.clone(),
                    operator: *operator,
                    stake: n.stake,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{Bytes, LogData, address};
    use alloy_sol_types::SolEvent;
    use nox_protocol::contracts::{EXIT_LAYER, topology_fingerprint};

    fn log<E: SolEvent>(ev: &E) -> alloy_primitives::Log {
        alloy_primitives::Log { address: Address::ZERO, data: ev.encode_log_data() }
    }

    fn identity(seed: u8) -> B256 {
        B256::from(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key().to_bytes())
    }

    fn registered(op: Address, seed: u8, layer: u8, stake: u64) -> alloy_primitives::Log {
        log(&NoxRegistry::NodeRegistered {
            operator: op,
            identityKey: identity(seed),
            role: u8::from(layer == EXIT_LAYER),
            layer,
            stake: U256::from(stake),
            multiaddr: format!("/ip4/127.0.0.1/tcp/{}", 9000 + u16::from(seed)),
        })
    }

    #[test]
    fn view_follows_the_registry_events() {
        let (a, b, c) = (
            address!("00000000000000000000000000000000000000a1"),
            address!("00000000000000000000000000000000000000b2"),
            address!("00000000000000000000000000000000000000c3"),
        );
        let mut v = RegistryView::default();
        v.apply(&log(&NoxRegistry::MinStakeChanged { oldValue: U256::ZERO, newValue: U256::from(100) })).unwrap();
        for l in [registered(a, 1, 0, 100), registered(b, 2, 1, 150), registered(c, 3, 2, 500)] {
            v.apply(&l).unwrap();
        }
        assert_eq!(v.active_members().len(), 3);
        assert_eq!(v.fingerprint(), topology_fingerprint(&[a, b, c]));

        // Slashed below the minimum: still registered until NodeRemoved, but out of the active set.
        v.apply(&log(&NoxRegistry::NodeSlashed {
            operator: b,
            reporter: a,
            amount: U256::from(60),
            burnt: U256::from(30),
            reporterReward: U256::from(30),
        }))
        .unwrap();
        assert_eq!(v.nodes[&b].stake, U256::from(90));
        let ids: Vec<NodeId> = v.active_members().iter().map(|m| m.id).collect();
        assert!(!ids.contains(&NodeId(identity(2).0)));
        v.apply(&log(&NoxRegistry::NodeRemoved { operator: b, identityKey: identity(2) })).unwrap();
        assert_eq!(v.fingerprint(), topology_fingerprint(&[a, c]));

        // Stake added; a raised minimum drops a node from the active set without removing it.
        v.apply(&log(&NoxRegistry::StakeAdded { operator: a, amount: U256::from(50), newStake: U256::from(150) }))
            .unwrap();
        v.apply(&log(&NoxRegistry::MinStakeChanged { oldValue: U256::from(100), newValue: U256::from(200) })).unwrap();
        let members = v.active_members();
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].operator, c);
        assert_eq!(members[0].role, Role::Exit);
        assert_eq!(v.nodes.len(), 2);
    }

    #[test]
    fn the_digest_covers_every_field_the_fingerprint_does_not() {
        let op = Address::repeat_byte(1);
        let mut v = RegistryView::default();
        v.apply(&registered(op, 1, 0, 100)).unwrap();
        let base = v.digest();
        assert_eq!(base, v.clone().digest());
        let changes: [fn(&mut RegistryView); 6] = [
            |v| v.nodes.get_mut(&Address::repeat_byte(1)).unwrap().identity = identity(2),
            |v| v.nodes.get_mut(&Address::repeat_byte(1)).unwrap().role = 1,
            |v| v.nodes.get_mut(&Address::repeat_byte(1)).unwrap().layer = 1,
            |v| v.nodes.get_mut(&Address::repeat_byte(1)).unwrap().stake = U256::from(101),
            |v| v.nodes.get_mut(&Address::repeat_byte(1)).unwrap().multiaddr.push('0'),
            |v| v.min_stake = U256::from(1),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut other = v.clone();
            change(&mut other);
            assert_eq!(other.fingerprint(), v.fingerprint(), "change {i} keeps the operator set");
            assert_ne!(other.digest(), base, "change {i} shows in the digest");
        }
        // A multiaddr's bytes cannot move into the next field unnoticed.
        let mut a = RegistryView::default();
        a.apply(&registered(op, 1, 0, 100)).unwrap();
        a.apply(&registered(Address::repeat_byte(2), 2, 1, 100)).unwrap();
        let mut b = a.clone();
        b.nodes.get_mut(&op).unwrap().multiaddr.push('x');
        assert_ne!(a.digest(), b.digest());
        assert_ne!(RegistryView::default().digest(), base);
    }

    #[test]
    fn unusable_records_stay_out_of_routes() {
        let mut v = RegistryView { min_stake: U256::from(1), nodes: BTreeMap::new() };
        let op = Address::repeat_byte(1);
        // An identity key that is not an Ed25519 point.
        let mut bad = [0u8; 32];
        bad[31] = 0x80;
        bad[0] = 2;
        v.nodes.insert(
            op,
            RegisteredNode {
                identity: B256::from(bad),
                role: 0,
                layer: 0,
                stake: U256::from(5),
                multiaddr: "x".into(),
            },
        );
        // A relay claiming the exit layer.
        v.nodes.insert(
            Address::repeat_byte(2),
            RegisteredNode { identity: identity(9), role: 0, layer: 2, stake: U256::from(5), multiaddr: "x".into() },
        );
        // A good node with an unparsable multiaddr: routable by id, with no address to dial.
        v.nodes.insert(
            Address::repeat_byte(3),
            RegisteredNode {
                identity: identity(8),
                role: 0,
                layer: 1,
                stake: U256::from(5),
                multiaddr: "nowhere".into(),
            },
        );
        let m = v.active_members();
        if ed25519_dalek::VerifyingKey::from_bytes(&bad).is_err() {
            assert_eq!(m.len(), 1);
        }
        assert!(m.iter().all(|m| m.operator != Address::repeat_byte(2)));
        let good = m.iter().find(|m| m.operator == Address::repeat_byte(3)).unwrap();
        assert_eq!(good.multiaddr, "nowhere", "the multiaddr is the node's to parse");
    }

    #[test]
    fn malformed_known_event_is_an_error_and_unknown_events_are_ignored() {
        let mut v = RegistryView::default();
        let bad = alloy_primitives::Log {
            address: Address::ZERO,
            data: LogData::new_unchecked(vec![NoxRegistry::NodeRegistered::SIGNATURE_HASH], vec![1, 2, 3].into()),
        };
        assert!(v.apply(&bad).is_err());
        let other = alloy_primitives::Log {
            address: Address::ZERO,
            data: LogData::new_unchecked(vec![B256::repeat_byte(7)], Bytes::new()),
        };
        v.apply(&other).unwrap();
        assert_eq!(v, RegistryView::default());
    }
}
