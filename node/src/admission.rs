//! Who may send us packets: the admission policy behind the handshake.
//!
//! Every connection starts with `Hello { version, kind }`. The transport has
//! already proven, through Noise, that the remote holds the private key of its
//! peer id, i.e. of its node id; the policy decides whether that identity may
//! use the node, and at which tier. Rate limits and proof-of-work depend on the
//! tier: nodes relay at high rates, clients submit at low rates and pay a PoW.
//!
//! [`StaticAdmission`] admits as nodes the identities the topology holds. With
//! a chain, the chain watcher keeps the topology equal to NoxRegistry's active
//! set (registered, stake ≥ `minStake`), so a node is admitted only when it
//! holds a registered, staked identity key. Oracles are not registered: a
//! peer that says hello as an oracle is admitted (at the gossip-only oracle
//! tier) when its identity is one of the trusted oracle keys of `[prices]`
//! ([`StaticAdmission::with_oracles`]), so only those can publish price
//! rounds into the node directly; they never send or receive packets.

use std::sync::Arc;

use nox_protocol::NodeId;

use crate::topology::Topology;
use nox_net::p2p::{CONTROL_VERSION, PeerKind};

/// Why a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It speaks another control-protocol version.
    #[error("unsupported control protocol version {0}")]
    Version(u16),
    /// It claims to be a node but is not in the topology.
    #[error("unknown node")]
    UnknownNode,
    /// This node does not take client submissions.
    #[error("this node does not accept clients")]
    ClientsNotAccepted,
    /// It claims to be an oracle but its key is not a trusted oracle key.
    #[error("unknown oracle")]
    UnknownOracle,
    /// The peer id is not an Ed25519 key, so it cannot be a NOX identity.
    #[error("peer id is not an Ed25519 identity")]
    NotAnIdentity,
}

impl Refusal {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Version(_) => "version",
            Refusal::UnknownNode => "unknown_node",
            Refusal::ClientsNotAccepted => "clients_not_accepted",
            Refusal::NotAnIdentity => "not_an_identity",
            Refusal::UnknownOracle => "unknown_oracle",
        }
    }
}

/// An admission policy.
pub trait Admission: Send + Sync + 'static {
    /// Decides on a peer that said hello. `id` is `None` when the peer id does
    /// not carry an Ed25519 key.
    fn admit(&self, id: Option<&NodeId>, version: u16, kind: PeerKind) -> Result<PeerKind, Refusal>;
}

/// Admits the nodes the topology knows as nodes, and (when enabled) anyone
/// else as a client.
#[derive(Debug, Clone)]
pub struct StaticAdmission {
    topology: Arc<Topology>,
    accept_clients: bool,
    oracles: Vec<NodeId>,
}

impl StaticAdmission {
    /// A policy over `topology`, admitting no oracle.
    pub fn new(topology: Arc<Topology>, accept_clients: bool) -> Self {
        StaticAdmission { topology, accept_clients, oracles: Vec::new() }
    }

    /// Admits peers whose identity is one of `oracles` at the oracle tier.
    pub fn with_oracles(mut self, oracles: impl IntoIterator<Item = [u8; 32]>) -> Self {
        self.oracles = oracles.into_iter().map(NodeId).collect();
        self
    }
}

impl Admission for StaticAdmission {
    fn admit(&self, id: Option<&NodeId>, version: u16, kind: PeerKind) -> Result<PeerKind, Refusal> {
        if version != CONTROL_VERSION {
            return Err(Refusal::Version(version));
        }
        match kind {
            PeerKind::Node => {
                let id = id.ok_or(Refusal::NotAnIdentity)?;
                if self.topology.contains(id) { Ok(PeerKind::Node) } else { Err(Refusal::UnknownNode) }
            }
            PeerKind::Client if self.accept_clients => Ok(PeerKind::Client),
            PeerKind::Client => Err(Refusal::ClientsNotAccepted),
            PeerKind::Oracle => {
                let id = id.ok_or(Refusal::NotAnIdentity)?;
                if self.oracles.contains(id) { Ok(PeerKind::Oracle) } else { Err(Refusal::UnknownOracle) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_policy() {
        let topo = Arc::new(Topology::new());
        let known = NodeId([1; 32]);
        topo.add_static(known, 1, Vec::new());
        let p = StaticAdmission::new(topo.clone(), true);
        assert_eq!(p.admit(Some(&known), CONTROL_VERSION, PeerKind::Node), Ok(PeerKind::Node));
        assert_eq!(p.admit(Some(&NodeId([2; 32])), CONTROL_VERSION, PeerKind::Node), Err(Refusal::UnknownNode));
        assert_eq!(p.admit(None, CONTROL_VERSION, PeerKind::Client), Ok(PeerKind::Client));
        assert_eq!(p.admit(Some(&known), 99, PeerKind::Node), Err(Refusal::Version(99)));
        assert_eq!(p.admit(Some(&known), CONTROL_VERSION, PeerKind::Oracle), Err(Refusal::UnknownOracle));
        let closed = StaticAdmission::new(topo, false);
        assert_eq!(closed.admit(None, CONTROL_VERSION, PeerKind::Client), Err(Refusal::ClientsNotAccepted));
    }

    #[test]
    fn only_trusted_oracle_keys_are_admitted_as_oracles() {
        let topo = Arc::new(Topology::new());
        let node = NodeId([1; 32]);
        topo.add_static(node, 1, Vec::new());
        let oracle = NodeId([7; 32]);
        let p = StaticAdmission::new(topo, false).with_oracles([oracle.0]);
        assert_eq!(p.admit(Some(&oracle), CONTROL_VERSION, PeerKind::Oracle), Ok(PeerKind::Oracle));
        assert_eq!(p.admit(Some(&NodeId([8; 32])), CONTROL_VERSION, PeerKind::Oracle), Err(Refusal::UnknownOracle));
        assert_eq!(p.admit(None, CONTROL_VERSION, PeerKind::Oracle), Err(Refusal::NotAnIdentity));
        // A node's key is no oracle key, and an oracle's key is no node's.
        assert_eq!(p.admit(Some(&node), CONTROL_VERSION, PeerKind::Oracle), Err(Refusal::UnknownOracle));
        assert_eq!(p.admit(Some(&oracle), CONTROL_VERSION, PeerKind::Node), Err(Refusal::UnknownNode));
    }
}
