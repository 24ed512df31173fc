//! The node's view of the network: who exists, in which layer, on which
//! addresses, and with which mix key in which epoch.
//!
//! Two sources feed it. The nodes (id, layer, addresses) come from
//! NoxRegistry's active set through the chain watcher
//! ([`Topology::replace_members`]) or, without a chain, from
//! `[[topology.nodes]]` ([`Topology::add_static`]); signed descriptors received
//! over GossipSub or on request add each node's epoch keys. A descriptor cannot
//! add a node: one from an identity not on record is refused (`unknown_node`),
//! so nobody joins the routes, the admitted tier or `/topology` by signing its
//! own descriptor. Everything downstream — admission, egress dialling a next
//! hop, cover traffic picking a route, `/topology` — reads only this type.
//!
//! Invariant: every descriptor held here verified under its node id, names a
//! node on record, and is for the current or the next epoch (older ones are
//! pruned at each rotation).

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use alloy_primitives::{Address, U256};
use libp2p::Multiaddr;
use nox_net::topology_doc::{DescriptorEntry, NodeEntry};
use nox_protocol::NodeId;
use nox_protocol::crypto::x25519::MixPublicKey;
use nox_protocol::descriptor::{DescriptorError, MixDescriptor};
use nox_protocol::route::RouteSet;

/// Why a descriptor was refused.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorRejection {
    /// It does not decode.
    #[error("malformed descriptor: {0}")]
    Malformed(DescriptorError),
    /// The signature does not verify under the node id it names.
    #[error("descriptor signature does not verify")]
    BadSignature,
    /// It is for an epoch that is already over.
    #[error("stale descriptor for epoch {epoch} (current {current})")]
    Stale {
        /// Epoch the descriptor is for.
        epoch: u64,
        /// Our current epoch.
        current: u64,
    },
    /// It is for an epoch more than one ahead.
    #[error("future descriptor for epoch {epoch} (current {current})")]
    Future {
        /// Epoch the descriptor is for.
        epoch: u64,
        /// Our current epoch.
        current: u64,
    },
    /// The identity it names is not on record (the registry, or `[[topology.nodes]]`).
    #[error("descriptor from a node that is not on record")]
    UnknownNode,
    /// A known node announced a different layer than the one on record.
    #[error("descriptor layer {claimed} disagrees with recorded layer {recorded}")]
    LayerMismatch {
        /// Layer in the descriptor.
        claimed: u8,
        /// Layer on record.
        recorded: u8,
    },
    /// A different descriptor for the same node and epoch is already held:
    /// a node has exactly one key per epoch.
    #[error("conflicting descriptor for an epoch already announced")]
    Conflict,
}

impl DescriptorRejection {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            DescriptorRejection::Malformed(_) => "malformed",
            DescriptorRejection::BadSignature => "bad_signature",
            DescriptorRejection::Stale { .. } => "stale",
            DescriptorRejection::Future { .. } => "future",
            DescriptorRejection::UnknownNode => "unknown_node",
            DescriptorRejection::LayerMismatch { .. } => "layer_mismatch",
            DescriptorRejection::Conflict => "conflict",
        }
    }
}

/// What the node knows about one other node.
#[derive(Debug, Clone)]
pub struct NodeRecord {
    /// Layer 0, 1 or 2.
    pub layer: u8,
    /// Addresses to dial.
    pub addresses: Vec<Multiaddr>,
    /// Verified descriptors by epoch.
    pub descriptors: BTreeMap<u64, MixDescriptor>,
    /// Its registry record, when the topology comes from the chain.
    pub chain: Option<ChainInfo>,
}

/// A node's NoxRegistry record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    /// The operator's address.
    pub operator: Address,
    /// Active stake, in token base units.
    pub stake: U256,
    /// Registered as an exit.
    pub exit: bool,
}

/// A node of the registry's active set, as the chain watcher hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainMember {
    /// Node id (the registered identity key).
    pub id: NodeId,
    /// Layer.
    pub layer: u8,
    /// Its registered multiaddr, if it parses.
    pub addresses: Vec<Multiaddr>,
    /// The operator's address.
    pub operator: Address,
    /// Active stake.
    pub stake: U256,
    /// Registered as an exit.
    pub exit: bool,
}

/// Who joined and who left when the topology was replaced
/// ([`Topology::replace_members`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologyChange {
    /// Nodes that joined.
    pub added: Vec<NodeId>,
    /// Nodes that left (unregistered, unstaked, slashed below the minimum).
    pub removed: Vec<NodeId>,
}

/// The node's topology view. Shared behind an `Arc`; every method takes `&self`.
#[derive(Debug, Default)]
pub struct Topology {
    nodes: RwLock<HashMap<NodeId, NodeRecord>>,
    /// Bumped whenever a node leaves, so that holders of per-node state
    /// (egress links) notice without a lookup per packet.
    removals: AtomicU64,
}

impl Topology {
    /// An empty view.
    pub fn new() -> Self {
        Topology::default()
    }

    /// Adds or updates a node known without the registry (`[[topology.nodes]]`, `LocalNet`).
    pub fn add_static(&self, id: NodeId, layer: u8, addresses: Vec<Multiaddr>) {
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        let rec = nodes.entry(id).or_insert_with(|| NodeRecord {
            layer,
            addresses: Vec::new(),
            descriptors: BTreeMap::new(),
            chain: None,
        });
        rec.layer = layer;
        rec.addresses = addresses;
    }

    /// Makes the registry's active set the topology: members that are new
    /// are added, records not among `members` are dropped with their
    /// descriptors (except `keep`, this node itself), and a member whose
    /// layer changed starts over without descriptors. Returns who joined and
    /// who left.
    pub fn replace_members(&self, members: Vec<ChainMember>, keep: Option<NodeId>) -> TopologyChange {
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        let mut change = TopologyChange::default();
        let incoming: HashMap<NodeId, ChainMember> = members.into_iter().map(|m| (m.id, m)).collect();
        nodes.retain(|id, _| {
            let stays = incoming.contains_key(id) || Some(*id) == keep;
            if !stays {
                change.removed.push(*id);
            }
            stays
        });
        for (id, m) in incoming {
            let info = ChainInfo { operator: m.operator, stake: m.stake, exit: m.exit };
            match nodes.get_mut(&id) {
                Some(rec) => {
                    if rec.layer != m.layer {
                        rec.descriptors.clear();
                        rec.layer = m.layer;
                    }
                    rec.addresses = m.addresses;
                    rec.chain = Some(info);
                }
                None => {
                    change.added.push(id);
                    nodes.insert(
                        id,
                        NodeRecord {
                            layer: m.layer,
                            addresses: m.addresses,
                            descriptors: BTreeMap::new(),
                            chain: Some(info),
                        },
                    );
                }
            }
        }
        change.added.sort_by_key(|id| id.0);
        change.removed.sort_by_key(|id| id.0);
        if !change.removed.is_empty() {
            self.removals.fetch_add(1, Ordering::Release);
        }
        change
    }

    /// How many times nodes have left; changes whenever one does.
    pub fn removals(&self) -> u64 {
        self.removals.load(Ordering::Acquire)
    }

    /// Verifies and records an encoded descriptor. Returns `true` when it was
    /// new (and so worth passing on), `false` for a duplicate.
    pub fn accept_descriptor_bytes(&self, bytes: &[u8], current_epoch: u64) -> Result<bool, DescriptorRejection> {
        let d = MixDescriptor::decode(bytes).map_err(DescriptorRejection::Malformed)?;
        self.accept_descriptor(d, current_epoch)
    }

    /// Verifies and records a descriptor. The cheap checks (epoch, identity on
    /// record, layer, an exact repeat) come before the signature.
    pub fn accept_descriptor(&self, d: MixDescriptor, current_epoch: u64) -> Result<bool, DescriptorRejection> {
        if d.epoch < current_epoch {
            return Err(DescriptorRejection::Stale { epoch: d.epoch, current: current_epoch });
        }
        if d.epoch > current_epoch.saturating_add(1) {
            return Err(DescriptorRejection::Future { epoch: d.epoch, current: current_epoch });
        }
        {
            let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
            let rec = nodes.get(&d.node_id).ok_or(DescriptorRejection::UnknownNode)?;
            if rec.layer != d.layer {
                return Err(DescriptorRejection::LayerMismatch { claimed: d.layer, recorded: rec.layer });
            }
            if rec.descriptors.get(&d.epoch) == Some(&d) {
                return Ok(false);
            }
        }
        d.verify().map_err(|_| DescriptorRejection::BadSignature)?;
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        // Looked up again: the record may have changed while the signature was checked.
        let rec = nodes.get_mut(&d.node_id).ok_or(DescriptorRejection::UnknownNode)?;
        match rec.descriptors.get(&d.epoch) {
            Some(existing) if existing.mix_key == d.mix_key => Ok(false),
            Some(_) => Err(DescriptorRejection::Conflict),
            None => {
                rec.descriptors.insert(d.epoch, d);
                Ok(true)
            }
        }
    }

    /// Drops descriptors for epochs before `current_epoch`.
    pub fn prune(&self, current_epoch: u64) {
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        for rec in nodes.values_mut() {
            rec.descriptors.retain(|e, _| *e >= current_epoch);
        }
    }

    /// Whether the node is known at all.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.nodes.read().unwrap_or_else(|e| e.into_inner()).contains_key(id)
    }

    /// Addresses to dial the node on.
    pub fn addresses(&self, id: &NodeId) -> Vec<Multiaddr> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner()).get(id).map(|r| r.addresses.clone()).unwrap_or_default()
    }

    /// The node's mix key for `epoch`, if its descriptor is held.
    pub fn mix_key(&self, id: &NodeId, epoch: u64) -> Option<MixPublicKey> {
        self.nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .and_then(|r| r.descriptors.get(&epoch))
            .map(|d| d.mix_key)
    }

    /// The nodes whose key for `epoch` is known, by layer, with that key:
    /// what routes for a packet of `epoch` are chosen from.
    pub fn route_set(&self, epoch: u64) -> RouteSet {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        let mut set = RouteSet::new();
        for (id, r) in nodes.iter() {
            if let Some(d) = r.descriptors.get(&epoch) {
                // A layer beyond the last cannot be recorded (the registry and
                // the configuration refuse it); such a record is skipped. An
                // exit's services come from its signed descriptor.
                if set.insert(r.layer, *id, d.mix_key).is_ok() && d.services != 0 {
                    set.set_services(*id, d.services);
                }
            }
        }
        set
    }

    /// Every node id known, with its layer.
    pub fn node_ids(&self) -> Vec<(NodeId, u8)> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner()).iter().map(|(id, r)| (*id, r.layer)).collect()
    }

    /// Every held descriptor, encoded (for `GetDescriptors` and `/topology`).
    pub fn encoded_descriptors(&self) -> Vec<Vec<u8>> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        nodes.values().flat_map(|r| r.descriptors.values().map(MixDescriptor::encode)).collect()
    }

    /// Every node, as the `/topology` document lists it (sorted by node id).
    pub fn entries(&self) -> Vec<NodeEntry> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<NodeEntry> = nodes
            .iter()
            .map(|(id, r)| NodeEntry {
                node_id: id.0,
                layer: r.layer,
                addresses: r.addresses.iter().map(|a| a.to_string()).collect(),
                operator: r.chain.as_ref().map(|c| c.operator),
                stake: r.chain.as_ref().map(|c| c.stake),
                exit: r.chain.as_ref().map(|c| c.exit),
                descriptors: r
                    .descriptors
                    .values()
                    .map(|d| DescriptorEntry { epoch: d.epoch, mix_key: d.mix_key.0, encoded: d.encode() })
                    .collect(),
            })
            .collect();
        list.sort_by_key(|n| n.node_id);
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(seed: u8, layer: u8) -> ChainMember {
        ChainMember {
            id: NodeId([seed; 32]),
            layer,
            addresses: vec!["/ip4/127.0.0.1/tcp/9000".parse().unwrap()],
            operator: Address::repeat_byte(seed),
            stake: U256::from(seed),
            exit: layer == 2,
        }
    }

    #[test]
    fn replace_members_reports_joins_and_leaves_and_keeps_self() {
        let topo = Topology::new();
        let me = NodeId([0xee; 32]);
        topo.add_static(me, 0, Vec::new());
        let change = topo.replace_members(vec![member(1, 0), member(2, 1), member(3, 2)], Some(me));
        assert_eq!(change.added, vec![NodeId([1; 32]), NodeId([2; 32]), NodeId([3; 32])]);
        assert!(change.removed.is_empty());
        assert!(topo.contains(&me));

        // Node 2 slashed out, node 4 joins, node 1 moved (cannot in practice, but
        // a changed layer must not keep the old layer's descriptors).
        let change = topo.replace_members(vec![member(1, 1), member(3, 2), member(4, 0)], Some(me));
        assert_eq!(change.added, vec![NodeId([4; 32])]);
        assert_eq!(change.removed, vec![NodeId([2; 32])]);
        assert_eq!(topo.removals(), 1, "a removal is announced");
        assert!(!topo.contains(&NodeId([2; 32])));
        assert!(topo.contains(&me), "this node stays in its own view");
        let entries = topo.entries();
        let three = entries.iter().find(|n| n.layer == 2).unwrap();
        assert_eq!(three.stake, Some(U256::from(3u8)));
        assert_eq!(three.exit, Some(true));
        assert_eq!(three.operator, Some(Address::repeat_byte(3)));

        // An empty registry leaves only this node.
        let change = topo.replace_members(Vec::new(), Some(me));
        assert_eq!(change.removed.len(), 3);
        assert_eq!(topo.node_ids(), vec![(me, 0)]);
    }

    #[test]
    fn the_route_set_carries_each_exits_signed_services() {
        use nox_protocol::crypto::x25519::MixSecretKey;
        use nox_protocol::descriptor::{ROLE_EXIT, ROLE_RELAY};
        use nox_protocol::payload::RequestKind;
        let topo = Topology::new();
        let mut rng = rand::rngs::OsRng;
        let mut ids = Vec::new();
        for (layer, role, services) in [
            (0, ROLE_RELAY, 0),
            (1, ROLE_RELAY, 0),
            (2, ROLE_EXIT, RequestKind::mask_of(&[RequestKind::Echo])),
            (2, ROLE_EXIT, RequestKind::mask_of(&[RequestKind::RpcCall])),
        ] {
            let identity = ed25519_dalek::SigningKey::generate(&mut rng);
            let id = NodeId(identity.verifying_key().to_bytes());
            topo.add_static(id, layer, Vec::new());
            let key = MixSecretKey::generate(&mut rng).public_key();
            let d = MixDescriptor::sign_with_services(&identity, 7, key, layer, role, services, Vec::new()).unwrap();
            assert!(matches!(topo.accept_descriptor(d, 7), Ok(true)));
            ids.push(id);
        }
        let set = topo.route_set(7);
        assert_eq!(set.exits_offering(RequestKind::Echo), vec![ids[2]]);
        assert_eq!(set.exits_offering(RequestKind::RpcCall), vec![ids[3]]);
        assert!(topo.route_set(8).exits_offering(RequestKind::Echo).is_empty(), "no descriptor for that epoch");
    }
}
