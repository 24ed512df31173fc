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
//! Equivocation: a node on record that signs two different mix keys for one
//! epoch could hand key A to some clients and key B to others and tell them
//! apart. The first time both reach this view (over gossip, in a
//! `GetDescriptors` answer, or one of each), both signatures are checked and
//! the pair is kept as evidence ([`Equivocation`]); the node's descriptor for
//! that epoch is dropped and every later one refused (`excluded`), so it
//! drops out of routes, cover traffic and `/topology` for the epoch. A forged
//! second descriptor fails its signature check first and changes nothing.
//! The evidence is served on `/equivocations` and, with the held descriptors,
//! in `GetDescriptors` answers, so peers and clients that ask learn it too.
//! It is held in memory only (a restarted node learns it again from its
//! peers), at most [`MAX_EQUIVOCATIONS`] pieces beyond the live epochs' (see
//! there).
//!
//! Invariant: every descriptor held here verified under its node id, names a
//! node on record, is for the current or the next epoch (older ones are
//! pruned at each rotation), and is not for a node and epoch with evidence of
//! equivocation.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use alloy_primitives::{Address, U256};
use libp2p::Multiaddr;
use nox_net::topology_doc::{DescriptorEntry, NodeEntry};
use nox_protocol::NodeId;
use nox_protocol::crypto::x25519::MixPublicKey;
use nox_protocol::descriptor::{DescriptorError, Equivocation, MAX_EQUIVOCATIONS, MixDescriptor};
use nox_protocol::route::RouteSet;
use serde::{Deserialize, Serialize};

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
    /// It verifies, but the node already signed another mix key for that
    /// epoch: both are now kept as evidence and the node is excluded for the
    /// epoch. Gossip passes this one on, so that every node holding the
    /// other learns it.
    #[error("node {node_id:?} signed two mix keys for epoch {epoch}: excluded for that epoch")]
    Equivocation {
        /// The node.
        node_id: NodeId,
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
            DescriptorRejection::Equivocation { .. } => "equivocation",
            DescriptorRejection::Excluded { .. } => "excluded",
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

/// One piece of equivocation evidence as `/equivocations` serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EquivocationEntry {
    /// The node (`0x` + 64 hex digits).
    pub node_id: String,
    /// The epoch it signed two keys for.
    pub epoch: u64,
    /// The two mix keys (`0x` + 64 hex digits), ascending.
    pub mix_keys: [String; 2],
    /// The two signed descriptors (`0x` + hex of the wire encoding), in the
    /// order of `mix_keys`: anyone can verify them again.
    pub descriptors: [String; 2],
}

impl EquivocationEntry {
    /// The entry of `e`.
    pub fn of(e: &Equivocation) -> Self {
        let hex0x = |b: &[u8]| format!("0x{}", hex::encode(b));
        let [a, b] = e.descriptors();
        EquivocationEntry {
            node_id: hex0x(&e.node_id().0),
            epoch: e.epoch(),
            mix_keys: [hex0x(&a.mix_key.0), hex0x(&b.mix_key.0)],
            descriptors: [hex0x(&a.encode()), hex0x(&b.encode())],
        }
    }

    /// The evidence, decoded and checked again (both signatures, one node,
    /// one epoch, two keys): what a reader that does not trust the serving
    /// node does. `None` if it does not hold.
    pub fn verified(&self) -> Option<Equivocation> {
        let decode = |h: &str| MixDescriptor::decode(&hex::decode(h.strip_prefix("0x")?).ok()?).ok();
        let e = Equivocation::new(decode(&self.descriptors[0])?, decode(&self.descriptors[1])?).ok()?;
        (EquivocationEntry::of(&e) == *self).then_some(e)
    }
}

/// The `/equivocations` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EquivocationDocument {
    /// Every piece of evidence held, by epoch then node id.
    pub equivocations: Vec<EquivocationEntry>,
}

/// The node's topology view. Shared behind an `Arc`; every method takes `&self`.
#[derive(Debug, Default)]
pub struct Topology {
    nodes: RwLock<HashMap<NodeId, NodeRecord>>,
    /// Evidence of equivocation by (epoch, node): a node with an entry for an
    /// epoch is excluded for it. Outlives the node's record.
    equivocations: RwLock<BTreeMap<(u64, NodeId), Equivocation>>,
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
    /// record, layer, an excluded node, an exact repeat) come before the
    /// signature. A verified descriptor whose mix key differs from the one
    /// held for its node and epoch is [`DescriptorRejection::Equivocation`]:
    /// the held one is dropped, both are kept as evidence, and the node is
    /// refused for that epoch from then on.
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
            if self.is_excluded(&d.node_id, d.epoch) {
                return Err(DescriptorRejection::Excluded { epoch: d.epoch });
            }
            if rec.descriptors.get(&d.epoch) == Some(&d) {
                return Ok(false);
            }
        }
        d.verify().map_err(|_| DescriptorRejection::BadSignature)?;
        // Lock order everywhere: nodes, then equivocations.
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        let mut evidence = self.equivocations.write().unwrap_or_else(|e| e.into_inner());
        // Looked up again: the record may have changed while the signature was checked.
        let rec = nodes.get_mut(&d.node_id).ok_or(DescriptorRejection::UnknownNode)?;
        if evidence.contains_key(&(d.epoch, d.node_id)) {
            return Err(DescriptorRejection::Excluded { epoch: d.epoch });
        }
        match rec.descriptors.get(&d.epoch) {
            Some(existing) if existing.mix_key == d.mix_key => Ok(false),
            Some(existing) => {
                let epoch = d.epoch;
                // Both verified under the same node id (the held one when it
                // was taken); `Equivocation::new` checks them again, so the
                // evidence stands on its own.
                match Equivocation::new(existing.clone(), d) {
                    Ok(e) => {
                        let node_id = e.node_id();
                        rec.descriptors.remove(&epoch);
                        evidence.insert((epoch, node_id), e);
                        evict_past(&mut evidence, current_epoch);
                        Err(DescriptorRejection::Equivocation { node_id, epoch })
                    }
                    // Unreachable with a verified pair; refused as forged all the same.
                    Err(_) => Err(DescriptorRejection::BadSignature),
                }
            }
            None => {
                rec.descriptors.insert(d.epoch, d);
                Ok(true)
            }
        }
    }

    /// Whether `id` is excluded for `epoch` (it signed two mix keys for it).
    pub fn is_excluded(&self, id: &NodeId, epoch: u64) -> bool {
        self.equivocations.read().unwrap_or_else(|e| e.into_inner()).contains_key(&(epoch, *id))
    }

    /// How many nodes are excluded for `current_epoch` or a later one.
    pub fn excluded_nodes(&self, current_epoch: u64) -> usize {
        let evidence = self.equivocations.read().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<NodeId> = evidence.range((current_epoch, NodeId([0; 32]))..).map(|((_, id), _)| *id).collect();
        ids.sort_unstable_by_key(|id| id.0);
        ids.dedup();
        ids.len()
    }

    /// Every piece of equivocation evidence held, by epoch then node id.
    pub fn equivocations(&self) -> Vec<Equivocation> {
        self.equivocations.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// The `/equivocations` document.
    pub fn equivocation_document(&self) -> EquivocationDocument {
        let evidence = self.equivocations.read().unwrap_or_else(|e| e.into_inner());
        EquivocationDocument { equivocations: evidence.values().map(EquivocationEntry::of).collect() }
    }

    /// Drops descriptors for epochs before `current_epoch`, and evidence of
    /// past epochs beyond [`MAX_EQUIVOCATIONS`] pieces.
    pub fn prune(&self, current_epoch: u64) {
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        for rec in nodes.values_mut() {
            rec.descriptors.retain(|e, _| *e >= current_epoch);
        }
        evict_past(&mut self.equivocations.write().unwrap_or_else(|e| e.into_inner()), current_epoch);
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

    /// Every held descriptor, encoded, followed by both descriptors of each
    /// piece of evidence for `current_epoch` or later: what `GetDescriptors`
    /// answers. A reader that takes them in order finds the equivocation
    /// itself (the pair verifies on its own), so a peer or a client that asks
    /// learns it without trusting this node.
    pub fn encoded_descriptors(&self, current_epoch: u64) -> Vec<Vec<u8>> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        let evidence = self.equivocations.read().unwrap_or_else(|e| e.into_inner());
        let held = nodes.values().flat_map(|r| r.descriptors.values().map(MixDescriptor::encode));
        let proofs = evidence
            .range((current_epoch, NodeId([0; 32]))..)
            .flat_map(|(_, e)| e.descriptors().iter().map(MixDescriptor::encode));
        held.chain(proofs).collect()
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

/// Keeps the evidence within [`MAX_EQUIVOCATIONS`] pieces by dropping the
/// oldest past epochs' first; evidence for `current_epoch` and later is never
/// dropped (it is what excludes a node, at most two pieces per node on record).
fn evict_past(evidence: &mut BTreeMap<(u64, NodeId), Equivocation>, current_epoch: u64) {
    while evidence.len() > MAX_EQUIVOCATIONS {
        match evidence.first_key_value() {
            Some((&(epoch, id), _)) if epoch < current_epoch => {
                evidence.remove(&(epoch, id));
            }
            _ => break,
        }
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

    fn relay_descriptor(identity: &ed25519_dalek::SigningKey, epoch: u64, key: u8) -> MixDescriptor {
        use nox_protocol::descriptor::ROLE_RELAY;
        MixDescriptor::sign(identity, epoch, MixPublicKey([key; 32]), 1, ROLE_RELAY, Vec::new()).unwrap()
    }

    #[test]
    fn two_keys_for_one_epoch_exclude_the_node_and_keep_the_evidence() {
        let topo = Topology::new();
        let liar = ed25519_dalek::SigningKey::from_bytes(&[0x41; 32]);
        let honest = ed25519_dalek::SigningKey::from_bytes(&[0x42; 32]);
        let (liar_id, honest_id) = (NodeId(liar.verifying_key().to_bytes()), NodeId(honest.verifying_key().to_bytes()));
        topo.add_static(liar_id, 1, Vec::new());
        topo.add_static(honest_id, 1, Vec::new());
        let a = relay_descriptor(&liar, 7, 0xa0);
        assert!(matches!(topo.accept_descriptor(a.clone(), 7), Ok(true)));
        assert!(matches!(topo.accept_descriptor(relay_descriptor(&liar, 8, 0xa1), 7), Ok(true)));
        let h = relay_descriptor(&honest, 7, 0xc0);
        assert!(matches!(topo.accept_descriptor(h.clone(), 7), Ok(true)));

        // Re-sent unchanged, or re-signed with the same key and new addresses:
        // a duplicate, never an equivocation.
        assert!(matches!(topo.accept_descriptor_bytes(&a.encode(), 7), Ok(false)));
        let moved = MixDescriptor::sign(&liar, 7, a.mix_key, 1, 0, vec!["/ip4/192.0.2.9/tcp/1".into()]).unwrap();
        assert!(matches!(topo.accept_descriptor(moved, 7), Ok(false)));

        // Forged second keys in the honest node's name: its own descriptor
        // with the key swapped, and a stranger's signature under its id.
        let mut swapped = h.clone();
        swapped.mix_key = MixPublicKey([0xc1; 32]);
        assert!(matches!(topo.accept_descriptor(swapped, 7), Err(DescriptorRejection::BadSignature)));
        let mut stolen = relay_descriptor(&liar, 7, 0xc2).encode();
        stolen[1..33].copy_from_slice(&honest_id.0);
        assert!(matches!(topo.accept_descriptor_bytes(&stolen, 7), Err(DescriptorRejection::BadSignature)));
        assert!(topo.equivocations().is_empty());
        assert_eq!(topo.mix_key(&honest_id, 7), Some(h.mix_key));

        // The liar signs a second key for epoch 7.
        let b = relay_descriptor(&liar, 7, 0xb0);
        let r = topo.accept_descriptor_bytes(&b.encode(), 7);
        assert!(
            matches!(r, Err(DescriptorRejection::Equivocation { node_id, epoch: 7 }) if node_id == liar_id),
            "{r:?}"
        );
        assert_eq!(topo.mix_key(&liar_id, 7), None, "the first key must go too");
        assert!(topo.is_excluded(&liar_id, 7) && !topo.is_excluded(&liar_id, 8));
        assert_eq!(topo.route_set(7).layer(1), &[(honest_id, h.mix_key)]);
        assert_eq!(topo.mix_key(&liar_id, 8), Some(MixPublicKey([0xa1; 32])), "epoch 8 is judged on its own");
        for again in [&a, &b] {
            let r = topo.accept_descriptor(again.clone(), 7);
            assert!(matches!(r, Err(DescriptorRejection::Excluded { epoch: 7 })), "{r:?}");
        }
        assert_eq!(topo.excluded_nodes(7), 1);
        assert_eq!(topo.excluded_nodes(8), 0);
        let doc = topo.equivocation_document();
        assert_eq!(doc.equivocations.len(), 1);
        let proof = doc.equivocations[0].verified().unwrap();
        assert!(proof.contains(&a) && proof.contains(&b));
        // An entry edited by the serving node does not verify.
        let mut edited = doc.equivocations[0].clone();
        edited.epoch = 8;
        assert!(edited.verified().is_none());

        // GetDescriptors: the held descriptors, then both of the evidence; a
        // fresh view fed with the answer finds the equivocation itself.
        let answer = topo.encoded_descriptors(7);
        assert_eq!(answer.len(), 2 + 2, "{} descriptors", answer.len());
        let fresh = Topology::new();
        fresh.add_static(liar_id, 1, Vec::new());
        fresh.add_static(honest_id, 1, Vec::new());
        let outcomes: Vec<&'static str> =
            answer.iter().filter_map(|b| fresh.accept_descriptor_bytes(b, 7).err().map(|e| e.label())).collect();
        assert_eq!(outcomes, vec!["equivocation"]);
        assert!(fresh.is_excluded(&liar_id, 7) && fresh.route_set(7).layer(1).len() == 1);
        assert_eq!(topo.encoded_descriptors(8).len(), 2, "past evidence is not handed out");

        // Leaving and rejoining the registry does not lift the exclusion.
        let rejoin = |layer| ChainMember { id: liar_id, layer, ..member(1, layer) };
        topo.replace_members(vec![], None);
        topo.replace_members(vec![rejoin(1)], None);
        assert!(matches!(topo.accept_descriptor(a, 7), Err(DescriptorRejection::Excluded { .. })));
    }

    #[test]
    fn past_evidence_is_bounded_and_live_evidence_kept() {
        let topo = Topology::new();
        let liar = ed25519_dalek::SigningKey::from_bytes(&[0x43; 32]);
        let id = NodeId(liar.verifying_key().to_bytes());
        topo.add_static(id, 1, Vec::new());
        let n = MAX_EQUIVOCATIONS as u64 + 3;
        for epoch in 0..n {
            assert!(topo.accept_descriptor(relay_descriptor(&liar, epoch, 1), epoch).is_ok());
            let r = topo.accept_descriptor(relay_descriptor(&liar, epoch, 2), epoch);
            assert!(matches!(r, Err(DescriptorRejection::Equivocation { .. })), "epoch {epoch}: {r:?}");
        }
        let held = topo.equivocations();
        assert_eq!(held.len(), MAX_EQUIVOCATIONS);
        assert_eq!(held.first().map(Equivocation::epoch), Some(3), "the oldest epochs went first");
        assert!(topo.is_excluded(&id, n - 1), "the live epoch's evidence stays");
        topo.prune(n);
        assert_eq!(topo.equivocations().len(), MAX_EQUIVOCATIONS);
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
