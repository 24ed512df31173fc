//! The node's view of the network: who exists, in which layer, on which
//! addresses, and with which mix key in which epoch.
//!
//! Two sources feed it. `[[topology.nodes]]` in the configuration names the
//! nodes (id, layer, addresses); signed descriptors received over GossipSub or
//! on request add each named node's epoch keys. A descriptor cannot add a node:
//! one from an identity not on record is refused (`unknown_node`), so nobody
//! joins the routes, the admitted tier or `/topology` by signing its own
//! descriptor. The chain watcher replaces the static list with NoxRegistry's
//! records; everything downstream — egress dialling a next hop, cover traffic
//! picking a route, `/topology` — reads only this type, so that change stays
//! local.
//!
//! Invariant: every descriptor held here verified under its node id, names a
//! node on record, and is for the current or the next epoch (older ones are
//! pruned at each rotation).

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use libp2p::Multiaddr;
use nox_protocol::NodeId;
use nox_protocol::crypto::x25519::MixPublicKey;
use nox_protocol::descriptor::{DescriptorError, MixDescriptor};

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
    /// The identity it names is not on record (configuration, later the chain).
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
}

/// The node's topology view. Shared behind an `Arc`; every method takes `&self`.
#[derive(Debug, Default)]
pub struct Topology {
    nodes: RwLock<HashMap<NodeId, NodeRecord>>,
}

impl Topology {
    /// An empty view.
    pub fn new() -> Self {
        Topology::default()
    }

    /// Adds or updates a node known from configuration (or, later, the chain).
    pub fn add_static(&self, id: NodeId, layer: u8, addresses: Vec<Multiaddr>) {
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        let rec = nodes.entry(id).or_insert_with(|| NodeRecord {
            layer,
            addresses: Vec::new(),
            descriptors: BTreeMap::new(),
        });
        rec.layer = layer;
        rec.addresses = addresses;
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

    /// Nodes of `layer` whose key for `epoch` is known, with that key.
    pub fn layer_members(&self, layer: u8, epoch: u64) -> Vec<(NodeId, MixPublicKey)> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(NodeId, MixPublicKey)> = nodes
            .iter()
            .filter(|(_, r)| r.layer == layer)
            .filter_map(|(id, r)| r.descriptors.get(&epoch).map(|d| (*id, d.mix_key)))
            .collect();
        out.sort_by_key(|a| a.0.0);
        out
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

    /// A JSON description for `GET /topology`.
    pub fn to_json(&self) -> serde_json::Value {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<serde_json::Value> = nodes
            .iter()
            .map(|(id, r)| {
                serde_json::json!({
                    "node_id": format!("0x{}", hex::encode(id.0)),
                    "layer": r.layer,
                    "addresses": r.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "descriptors": r.descriptors.values().map(|d| serde_json::json!({
                        "epoch": d.epoch,
                        "mix_key": format!("0x{}", hex::encode(d.mix_key.0)),
                        "encoded": format!("0x{}", hex::encode(d.encode())),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        list.sort_by(|a, b| a["node_id"].as_str().cmp(&b["node_id"].as_str()));
        serde_json::Value::Array(list)
    }
}
