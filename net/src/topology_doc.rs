//! The `/topology` document: what a node serves about the network it sees,
//! and what every reader — the operator's `nox status`, the devnet, a client
//! bootstrapping from its entry node — parses. One typed document, serialised
//! by the server and parsed by every reader; no reader looks up string keys.
//!
//! ```json
//! {
//!   "node_id": "0x…64 hex…",           // the serving node
//!   "layer": 0,
//!   "epoch": { "current": 1234, "next": 1235 },
//!   "nodes": [
//!     { "node_id": "0x…", "layer": 1, "addresses": ["/ip4/…/tcp/…"],
//!       "operator": "0x…40 hex…" | null, "stake": "1000000000000000000000" | null, "exit": false | null,
//!       "descriptors": [ { "epoch": 1234, "mix_key": "0x…", "encoded": "0x…" } ] }
//!   ]
//! }
//! ```
//!
//! `operator`, `stake` (decimal token base units) and `exit` are the node's
//! NoxRegistry record, `null` when the topology is static. `encoded` is the
//! signed descriptor (`nox_protocol::descriptor`): a reader that must not trust
//! the serving node verifies it ([`DescriptorEntry::verified`]).

use alloy_primitives::{Address, U256};
use nox_protocol::NodeId;
use nox_protocol::crypto::x25519::MixPublicKey;
use nox_protocol::descriptor::MixDescriptor;
use nox_protocol::route::RouteSet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The whole document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyDocument {
    /// The serving node.
    #[serde(with = "hex32")]
    pub node_id: [u8; 32],
    /// Its layer.
    pub layer: u8,
    /// The serving node's epochs.
    pub epoch: EpochWindow,
    /// Every node it knows, itself included, sorted by node id.
    pub nodes: Vec<NodeEntry>,
}

/// The serving node's current and next epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochWindow {
    /// Current epoch.
    pub current: u64,
    /// Next epoch (whose keys are published ahead).
    pub next: u64,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Node id (Ed25519 identity key).
    #[serde(with = "hex32")]
    pub node_id: [u8; 32],
    /// Layer.
    pub layer: u8,
    /// Multiaddrs to dial it on.
    pub addresses: Vec<String>,
    /// Its operator, when the topology comes from the registry.
    pub operator: Option<Address>,
    /// Its active stake in token base units, when the topology comes from the registry.
    #[serde(with = "decimal")]
    pub stake: Option<U256>,
    /// Whether it registered as an exit, when the topology comes from the registry.
    pub exit: Option<bool>,
    /// Its descriptors for the current and next epoch, as held by the serving node.
    pub descriptors: Vec<DescriptorEntry>,
}

/// One descriptor of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptorEntry {
    /// The epoch it publishes a key for.
    pub epoch: u64,
    /// That key.
    #[serde(with = "hex32")]
    pub mix_key: [u8; 32],
    /// The signed descriptor.
    #[serde(with = "hex_bytes")]
    pub encoded: Vec<u8>,
}

impl DescriptorEntry {
    /// The descriptor, decoded and verified under the node id it names;
    /// `None` if it does not decode, does not verify or disagrees with
    /// `epoch`/`mix_key`.
    pub fn verified(&self) -> Option<MixDescriptor> {
        let d = MixDescriptor::decode(&self.encoded).ok()?;
        d.verify().ok()?;
        (d.epoch == self.epoch && d.mix_key.0 == self.mix_key).then_some(d)
    }
}

impl NodeEntry {
    /// The node id.
    pub fn id(&self) -> NodeId {
        NodeId(self.node_id)
    }

    /// The mix key the serving node holds for `epoch`, unverified.
    pub fn mix_key(&self, epoch: u64) -> Option<MixPublicKey> {
        self.descriptors.iter().find(|d| d.epoch == epoch).map(|d| MixPublicKey(d.mix_key))
    }

    /// The epochs of the held descriptors, ascending.
    pub fn epochs(&self) -> Vec<u64> {
        let mut e: Vec<u64> = self.descriptors.iter().map(|d| d.epoch).collect();
        e.sort_unstable();
        e.dedup();
        e
    }
}

impl TopologyDocument {
    /// Parses a document.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The entry of `id`.
    pub fn node(&self, id: &NodeId) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.node_id == id.0)
    }

    /// What routes for packets of `epoch` can be drawn from: every node with
    /// a descriptor for `epoch` that verifies under its node id and names the
    /// node's layer. (A client that does not trust the serving node also checks
    /// the node ids against the registry.)
    pub fn route_set(&self, epoch: u64) -> RouteSet {
        let mut set = RouteSet::new();
        for n in &self.nodes {
            let verified = n
                .descriptors
                .iter()
                .filter(|d| d.epoch == epoch)
                .filter_map(DescriptorEntry::verified)
                .find(|d| d.node_id.0 == n.node_id && d.layer == n.layer);
            if let Some(d) = verified {
                // A layer that does not exist cannot be routed through.
                if set.insert(n.layer, d.node_id, d.mix_key).is_ok() && d.services != 0 {
                    set.set_services(d.node_id, d.services);
                }
            }
        }
        set
    }
}

/// `0x` + 64 hex digits.
mod hex32 {
    use super::*;

    pub(super) fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("0x{}", hex::encode(v)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let digits = text.strip_prefix("0x").ok_or_else(|| serde::de::Error::custom("expected 0x + 64 hex digits"))?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(digits, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

/// `0x` + hex digits.
mod hex_bytes {
    use super::*;

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("0x{}", hex::encode(v)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        let digits = text.strip_prefix("0x").ok_or_else(|| serde::de::Error::custom("expected 0x + hex digits"))?;
        hex::decode(digits).map_err(serde::de::Error::custom)
    }
}

/// An optional `U256` as a decimal string.
mod decimal {
    use super::*;

    pub(super) fn serialize<S: Serializer>(v: &Option<U256>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<U256>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| U256::from_str_radix(&t, 10).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_round_trips_in_its_documented_shape() {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let d = MixDescriptor::sign(&sk, 7, MixPublicKey([9; 32]), 1, 0, vec!["/ip4/127.0.0.1/tcp/1".into()])
            .expect("descriptor");
        let doc = TopologyDocument {
            node_id: [1; 32],
            layer: 0,
            epoch: EpochWindow { current: 7, next: 8 },
            nodes: vec![NodeEntry {
                node_id: sk.verifying_key().to_bytes(),
                layer: 1,
                addresses: vec!["/ip4/127.0.0.1/tcp/1".into()],
                operator: Some(Address::repeat_byte(0xab)),
                stake: Some(U256::from(1000u64)),
                exit: Some(false),
                descriptors: vec![DescriptorEntry { epoch: 7, mix_key: [9; 32], encoded: d.encode() }],
            }],
        };
        let json = serde_json::to_value(&doc).expect("json");
        assert_eq!(json["epoch"]["next"], 8);
        assert_eq!(json["nodes"][0]["stake"], "1000");
        assert!(json["node_id"].as_str().is_some_and(|s| s.starts_with("0x") && s.len() == 66));
        let back = TopologyDocument::from_json(&json.to_string()).expect("parse");
        assert_eq!(back, doc);
        let entry = back.node(&NodeId(sk.verifying_key().to_bytes())).expect("node");
        assert_eq!(entry.mix_key(7), Some(MixPublicKey([9; 32])));
        assert!(entry.descriptors[0].verified().is_some());
        let mut forged = entry.descriptors[0].clone();
        forged.mix_key = [8; 32];
        assert!(forged.verified().is_none(), "a key that is not the signed one is refused");
        let set = back.route_set(7);
        assert_eq!(set.key_of(&entry.id()), Some(MixPublicKey([9; 32])));
        assert!(back.route_set(8).layer(1).is_empty(), "no descriptor for epoch 8");
        let mut lying = back.clone();
        lying.nodes[0].layer = 0;
        assert!(lying.route_set(7).layer(0).is_empty(), "a layer the descriptor does not sign is not routed");
    }

    #[test]
    fn malformed_documents_are_errors() {
        assert!(TopologyDocument::from_json("[]").is_err());
        assert!(
            TopologyDocument::from_json(r#"{"node_id":"12","layer":0,"epoch":{"current":1,"next":2},"nodes":[]}"#)
                .is_err()
        );
    }
}
