//! [`Directory`]: who is in the network, as a client may believe it.
//!
//! Membership comes from a source the client trusts — NoxRegistry, followed
//! with `nox_eth`'s [`RegistryFollower`] (the same event folding,
//! confirmations and reorg handling as the node), or a static list in
//! development. Keys come from the entry node: every signed descriptor it
//! hands over is checked here before it can be routed through — signed by
//! the identity it names, that identity a member, for the layer the member
//! holds, for the current or the next epoch. The entry cannot add a node,
//! move one to another layer, or keep a stale key alive; it can only withhold
//! descriptors, which shows as a smaller route set.
//!
//! A member that signs two mix keys for one epoch (an equivocation: it could
//! tell the clients holding key A from those holding key B) is excluded for
//! that epoch as soon as both reach the directory — the first key as much as
//! the second — and the pair is kept as evidence ([`Directory::equivocations`]),
//! checked signature by signature, so a forged second descriptor proves
//! nothing. Entry nodes hand over the evidence they hold with their
//! descriptors; the directory needs no trust in them to act on it.
//!
//! [`RegistryFollower`]: nox_eth::registry::follower::RegistryFollower

use std::collections::BTreeMap;

use nox_eth::registry::view::RegistryView;
use nox_protocol::NodeId;
use nox_protocol::descriptor::{Equivocation, FeePolicy, MAX_EQUIVOCATIONS, MixDescriptor, ROLE_EXIT};
use nox_protocol::payload::RequestKind;
use nox_protocol::route::RouteSet;

/// A member of the network: where it sits and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// 0 entry, 1 mix, 2 exit.
    pub layer: u8,
    /// A libp2p multiaddr to dial it on.
    pub address: String,
}

/// A member as a static topology lists it (development networks without a
/// chain).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticMember {
    /// The node id (`0x` + 64 hex digits).
    pub node_id: String,
    /// Its layer.
    pub layer: u8,
    /// Its multiaddr.
    pub address: String,
}

/// Why a descriptor was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorRejected {
    /// The signature does not verify under the node id it names.
    #[error("the descriptor's signature does not verify")]
    BadSignature,
    /// The node id is not a member.
    #[error("the descriptor's node is not registered")]
    NotMember,
    /// The descriptor names another layer than the member holds.
    #[error("the descriptor names layer {claimed}, the node holds layer {held}")]
    WrongLayer {
        /// Layer in the descriptor.
        claimed: u8,
        /// Layer of the member.
        held: u8,
    },
    /// Neither the current nor the next epoch.
    #[error("the descriptor is for epoch {epoch}, not {current} or the next")]
    WrongEpoch {
        /// Its epoch.
        epoch: u64,
        /// The client's current epoch.
        current: u64,
    },
    /// A relay claims services, or a node of the exit layer is not an exit.
    #[error("the descriptor's role does not match its layer")]
    WrongRole,
    /// It verifies, but the node already signed another mix key for that
    /// epoch: the pair is kept as evidence and the node is excluded for it.
    #[error("the node signed two mix keys for epoch {epoch}: excluded for that epoch")]
    Equivocation {
        /// The epoch.
        epoch: u64,
    },
    /// The node is excluded for that epoch (it equivocated).
    #[error("the node is excluded for epoch {epoch}: it signed two mix keys for it")]
    Excluded {
        /// The epoch.
        epoch: u64,
    },
}

/// A static member list that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("static member {index}: {reason}")]
pub struct BadStaticMember {
    /// Position in the list.
    pub index: usize,
    /// What is wrong.
    pub reason: String,
}

/// Members and their verified descriptors.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    members: BTreeMap<NodeId, Member>,
    /// By node, by epoch.
    descriptors: BTreeMap<NodeId, BTreeMap<u64, MixDescriptor>>,
    /// Evidence by (epoch, node): that node is excluded for that epoch.
    equivocations: BTreeMap<(u64, NodeId), Equivocation>,
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Self {
        Directory::default()
    }

    /// Members from a static list.
    pub fn from_static(list: &[StaticMember]) -> Result<Self, BadStaticMember> {
        let mut d = Directory::new();
        for (index, m) in list.iter().enumerate() {
            let bad = |reason: String| BadStaticMember { index, reason };
            let digits = m.node_id.strip_prefix("0x").unwrap_or(&m.node_id);
            let mut id = [0u8; 32];
            hex::decode_to_slice(digits, &mut id).map_err(|e| bad(format!("node_id: {e}")))?;
            if m.layer > nox_protocol::topology::MAX_LAYER {
                return Err(bad(format!("layer {} does not exist", m.layer)));
            }
            d.members.insert(NodeId(id), Member { layer: m.layer, address: m.address.clone() });
        }
        Ok(d)
    }

    /// Replaces the members with NoxRegistry's active ones, keeping the
    /// descriptors of those that stay (at the same layer).
    pub fn set_members_from_registry(&mut self, view: &RegistryView) {
        let members: BTreeMap<NodeId, Member> = view
            .active_members()
            .into_iter()
            .map(|n| (n.id, Member { layer: n.layer, address: n.multiaddr }))
            .collect();
        self.descriptors.retain(|id, ds| {
            members.get(id).is_some_and(|m| {
                ds.retain(|_, d| d.layer == m.layer);
                !ds.is_empty()
            })
        });
        self.members = members;
    }

    /// The members.
    pub fn members(&self) -> &BTreeMap<NodeId, Member> {
        &self.members
    }

    /// The members of `layer`.
    pub fn layer(&self, layer: u8) -> Vec<(NodeId, Member)> {
        self.members.iter().filter(|(_, m)| m.layer == layer).map(|(id, m)| (*id, m.clone())).collect()
    }

    /// Takes `d` if it passes every check; `current` is the client's epoch.
    /// Epochs before `current` are forgotten. A verified descriptor whose mix
    /// key differs from the one held for its node and epoch is
    /// [`DescriptorRejected::Equivocation`]: the held one is dropped too.
    pub fn accept(&mut self, d: MixDescriptor, current: u64) -> Result<(), DescriptorRejected> {
        let member = self.members.get(&d.node_id).ok_or(DescriptorRejected::NotMember)?;
        if d.layer != member.layer {
            return Err(DescriptorRejected::WrongLayer { claimed: d.layer, held: member.layer });
        }
        if d.epoch != current && d.epoch != current.saturating_add(1) {
            return Err(DescriptorRejected::WrongEpoch { epoch: d.epoch, current });
        }
        let exit_layer = d.layer == nox_protocol::topology::EXIT_LAYER;
        if exit_layer != (d.role == ROLE_EXIT) {
            return Err(DescriptorRejected::WrongRole);
        }
        if self.is_excluded(&d.node_id, d.epoch) {
            return Err(DescriptorRejected::Excluded { epoch: d.epoch });
        }
        d.verify().map_err(|_| DescriptorRejected::BadSignature)?;
        let held = self.descriptors.entry(d.node_id).or_default();
        held.retain(|e, _| *e >= current);
        match held.get(&d.epoch) {
            Some(existing) if existing.mix_key != d.mix_key => {
                let epoch = d.epoch;
                // Both verified; `Equivocation::new` checks them again so the
                // evidence stands on its own.
                let e = Equivocation::new(existing.clone(), d).map_err(|_| DescriptorRejected::BadSignature)?;
                held.remove(&epoch);
                self.equivocations.insert((epoch, e.node_id()), e);
                self.evict_past_evidence(current);
                Err(DescriptorRejected::Equivocation { epoch })
            }
            _ => {
                held.insert(d.epoch, d);
                Ok(())
            }
        }
    }

    /// Whether `id` is excluded for `epoch` (it signed two mix keys for it).
    pub fn is_excluded(&self, id: &NodeId, epoch: u64) -> bool {
        self.equivocations.contains_key(&(epoch, *id))
    }

    /// Every piece of equivocation evidence held, by epoch then node id:
    /// both signed descriptors of each, which anyone can verify again.
    pub fn equivocations(&self) -> impl Iterator<Item = &Equivocation> {
        self.equivocations.values()
    }

    /// Keeps the evidence within [`MAX_EQUIVOCATIONS`] pieces, dropping the
    /// oldest past epochs' first; the current and later epochs' evidence
    /// (what excludes a node, at most two per member) stays.
    fn evict_past_evidence(&mut self, current: u64) {
        while self.equivocations.len() > MAX_EQUIVOCATIONS {
            match self.equivocations.first_key_value() {
                Some((&(epoch, id), _)) if epoch < current => {
                    self.equivocations.remove(&(epoch, id));
                }
                _ => break,
            }
        }
    }

    /// Epochs with at least one descriptor.
    pub fn epochs(&self) -> Vec<u64> {
        let mut e: Vec<u64> = self.descriptors.values().flat_map(|ds| ds.keys().copied()).collect();
        e.sort_unstable();
        e.dedup();
        e
    }

    /// The exits of `epoch` that perform paid calls: those whose verified
    /// descriptor offers `EthRequest` and carries a fee policy.
    pub fn fee_policies(&self, epoch: u64) -> Vec<(NodeId, FeePolicy)> {
        self.descriptors
            .iter()
            .filter_map(|(id, ds)| {
                let d = ds.get(&epoch)?;
                let policy = d.fee_policy.clone().filter(|_| d.offers(RequestKind::EthRequest))?;
                Some((*id, policy))
            })
            .collect()
    }

    /// What routes for packets of `epoch` are drawn from: members with a
    /// verified descriptor for `epoch`, exits with the services they sign.
    pub fn route_set(&self, epoch: u64) -> RouteSet {
        let mut set = RouteSet::new();
        for (id, ds) in &self.descriptors {
            let Some(d) = ds.get(&epoch) else { continue };
            if set.insert(d.layer, *id, d.mix_key).is_ok() && d.services != 0 {
                set.set_services(*id, d.services);
            }
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{Address, B256, U256};
    use ed25519_dalek::SigningKey;
    use nox_eth::registry::view::RegisteredNode;
    use nox_protocol::crypto::x25519::MixPublicKey;
    use nox_protocol::descriptor::ROLE_RELAY;
    use nox_protocol::payload::RequestKind;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn registry(nodes: &[(u8, u8, u8)]) -> RegistryView {
        let mut v = RegistryView { min_stake: U256::from(1), ..RegistryView::default() };
        for (seed, layer, role) in nodes {
            v.nodes.insert(
                Address::repeat_byte(*seed),
                RegisteredNode {
                    identity: B256::from(key(*seed).verifying_key().to_bytes()),
                    role: *role,
                    layer: *layer,
                    stake: U256::from(5),
                    multiaddr: format!("/ip4/127.0.0.1/tcp/{}", 7000 + u16::from(*seed)),
                },
            );
        }
        v
    }

    #[test]
    fn only_members_descriptors_for_their_layer_and_epoch_are_routed() {
        let mut d = Directory::new();
        d.set_members_from_registry(&registry(&[(1, 0, 0), (2, 1, 0), (3, 2, 1)]));
        let mk = MixPublicKey([7; 32]);
        let rpc = RequestKind::mask_of(&[RequestKind::RpcCall]);
        let exit = MixDescriptor::sign_with_services(&key(3), 10, mk, 2, ROLE_EXIT, rpc, vec![]).unwrap();
        d.accept(MixDescriptor::sign(&key(1), 10, mk, 0, ROLE_RELAY, vec![]).unwrap(), 10).unwrap();
        d.accept(MixDescriptor::sign(&key(2), 11, mk, 1, ROLE_RELAY, vec![]).unwrap(), 10).unwrap();
        d.accept(exit.clone(), 10).unwrap();
        // A stranger, a moved node, a stale and a far-future key are refused.
        let stranger = MixDescriptor::sign(&key(9), 10, mk, 1, ROLE_RELAY, vec![]).unwrap();
        assert_eq!(d.accept(stranger, 10), Err(DescriptorRejected::NotMember));
        let moved = MixDescriptor::sign(&key(2), 10, mk, 0, ROLE_RELAY, vec![]).unwrap();
        assert_eq!(d.accept(moved, 10), Err(DescriptorRejected::WrongLayer { claimed: 0, held: 1 }));
        let stale = MixDescriptor::sign(&key(1), 9, mk, 0, ROLE_RELAY, vec![]).unwrap();
        assert_eq!(d.accept(stale, 10), Err(DescriptorRejected::WrongEpoch { epoch: 9, current: 10 }));
        let far = MixDescriptor::sign(&key(1), 12, mk, 0, ROLE_RELAY, vec![]).unwrap();
        assert!(matches!(d.accept(far, 10), Err(DescriptorRejected::WrongEpoch { .. })));
        // A forged one (services widened after signing) is refused.
        let mut forged = exit.clone();
        forged.services |= RequestKind::Http.bit();
        assert_eq!(d.accept(forged, 10), Err(DescriptorRejected::BadSignature));

        let set = d.route_set(10);
        assert_eq!((set.layer(0).len(), set.layer(1).len(), set.layer(2).len()), (1, 0, 1));
        assert_eq!(set.exits_offering(RequestKind::RpcCall), vec![exit.node_id]);
        assert!(set.exits_offering(RequestKind::Http).is_empty());
        assert_eq!(d.route_set(11).layer(1).len(), 1);
        assert_eq!(d.epochs(), vec![10, 11]);

        // A node that leaves the registry leaves the routes.
        d.set_members_from_registry(&registry(&[(1, 0, 0), (2, 1, 0)]));
        assert!(d.route_set(10).layer(2).is_empty());
    }

    #[test]
    fn a_member_that_signs_two_keys_for_one_epoch_is_excluded_and_a_forgery_changes_nothing() {
        let mut d = Directory::new();
        d.set_members_from_registry(&registry(&[(1, 0, 0), (2, 1, 0), (3, 2, 1)]));
        let sign = |seed: u8, epoch: u64, mix: u8, layer: u8, role: u8| {
            MixDescriptor::sign(&key(seed), epoch, MixPublicKey([mix; 32]), layer, role, vec![]).unwrap()
        };
        let a = sign(2, 10, 0xa0, 1, ROLE_RELAY);
        d.accept(sign(1, 10, 1, 0, ROLE_RELAY), 10).unwrap();
        d.accept(a.clone(), 10).unwrap();
        d.accept(sign(2, 11, 0xa1, 1, ROLE_RELAY), 10).unwrap();
        d.accept(sign(3, 10, 3, 2, ROLE_EXIT), 10).unwrap();

        // The same descriptor again is no equivocation.
        d.accept(a.clone(), 10).unwrap();
        assert_eq!(d.equivocations().count(), 0);

        // Forged: the mix node's id on a descriptor someone else signed, and
        // its own descriptor with the key swapped. Neither proves anything.
        let mut stolen = sign(9, 10, 0xb0, 1, ROLE_RELAY);
        stolen.node_id = a.node_id;
        assert_eq!(d.accept(stolen, 10), Err(DescriptorRejected::BadSignature));
        let mut swapped = a.clone();
        swapped.mix_key = MixPublicKey([0xb0; 32]);
        assert_eq!(d.accept(swapped, 10), Err(DescriptorRejected::BadSignature));
        assert_eq!(d.equivocations().count(), 0);
        assert_eq!(d.route_set(10).layer(1), vec![(a.node_id, a.mix_key)]);

        // The mix node signs a second key for epoch 10: neither key is routed
        // in epoch 10, the pair is kept, and any later descriptor for 10 is refused.
        let b = sign(2, 10, 0xb0, 1, ROLE_RELAY);
        assert_eq!(d.accept(b.clone(), 10), Err(DescriptorRejected::Equivocation { epoch: 10 }));
        assert!(d.route_set(10).layer(1).is_empty(), "the first key must go too");
        assert_eq!(d.accept(a.clone(), 10), Err(DescriptorRejected::Excluded { epoch: 10 }));
        assert_eq!(d.accept(b.clone(), 10), Err(DescriptorRejected::Excluded { epoch: 10 }));
        assert!(d.is_excluded(&a.node_id, 10) && !d.is_excluded(&a.node_id, 11));
        let evidence: Vec<&Equivocation> = d.equivocations().collect();
        assert_eq!(evidence.len(), 1);
        assert_eq!((evidence[0].node_id(), evidence[0].epoch()), (a.node_id, 10));
        assert!(evidence[0].contains(&a) && evidence[0].contains(&b));
        // Only that node and that epoch: the others still route, and it does in 11.
        let set = d.route_set(10);
        assert_eq!((set.layer(0).len(), set.layer(2).len()), (1, 1));
        assert_eq!(d.route_set(11).layer(1).len(), 1);
        // A registry refresh does not lift the exclusion.
        d.set_members_from_registry(&registry(&[(1, 0, 0), (2, 1, 0), (3, 2, 1)]));
        assert_eq!(d.accept(a, 10), Err(DescriptorRejected::Excluded { epoch: 10 }));
    }

    #[test]
    fn a_static_list_parses_or_says_which_entry_is_wrong() {
        let good = StaticMember { node_id: format!("0x{}", "11".repeat(32)), layer: 1, address: "/ip4/1.2.3.4".into() };
        let d = Directory::from_static(std::slice::from_ref(&good)).unwrap();
        assert_eq!(d.layer(1).len(), 1);
        let bad = StaticMember { node_id: "0x1234".into(), ..good.clone() };
        assert_eq!(Directory::from_static(&[good.clone(), bad]).unwrap_err().index, 1);
        let deep = StaticMember { layer: 3, ..good };
        assert!(Directory::from_static(&[deep]).unwrap_err().reason.contains("layer 3"));
    }
}
