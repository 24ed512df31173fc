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
//! holds a registered, staked identity key.

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
}

impl StaticAdmission {
    /// A policy over `topology`.
    pub fn new(topology: Arc<Topology>, accept_clients: bool) -> Self {
        StaticAdmission { topology, accept_clients }
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
            PeerKind::Oracle => Err(Refusal::UnknownOracle),
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
        let closed = StaticAdmission::new(topo, false);
        assert_eq!(closed.admit(None, CONTROL_VERSION, PeerKind::Client), Err(Refusal::ClientsNotAccepted));
    }
}
