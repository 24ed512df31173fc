//! `nox register`, `nox status`, `nox unstake`, `nox withdraw-stake`: the
//! command-line side of the registry transactions in
//! `nox_eth::registry::operator`.
//!
//! What is here is what only the command line knows: where the target and
//! the keys come from (`[chain]`, `node.keys_dir`), which multiaddr to
//! register when none is given and whether peers could dial it, the
//! registered layer compared with `node.layer` (a relay's layer is known only
//! once its commitment is mined), the typed `--stake` amount, and — for
//! `status` — what the running node's admin API says about its published
//! epoch keys.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use alloy::transports::http::reqwest;
use alloy_primitives::B256;
use nox_eth::amount::{AmountError, TokenAmount};
use nox_eth::registry::operator::{self, OperatorError, RegistryStatus, RegistryTarget};
use nox_net::topology_doc::TopologyDocument;
use nox_node::config::{ChainSection, NodeConfig, P2pSection};
use nox_node::keys::NodeKeys;
use nox_protocol::topology::check_layer;
use serde::Serialize;

/// How long the local node's admin API may take to answer `GET /topology`.
pub(crate) const NODE_API_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a registry command could not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegistryCommandError {
    /// Neither `chain.rpc_url` nor `chain.rpc_urls` is set.
    #[error(
        "no chain configured: neither chain.rpc_url nor chain.rpc_urls is set; set chain.rpc_url, chain.chain_id \
         and chain.registry"
    )]
    NoChain,
    /// `chain.registry` is not a non-zero address.
    #[error("chain.registry `{0}` is not a non-zero 0x address")]
    InvalidRegistry(String),
    /// The multiaddr to register is not one peers could dial (what the
    /// registry itself refuses is [`OperatorError::InvalidMultiaddr`]).
    #[error("multiaddr `{multiaddr}`: {reason}")]
    InvalidMultiaddr {
        /// The multiaddr.
        multiaddr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No multiaddr given and none in the configuration that peers could dial.
    #[error(
        "no multiaddr to register: p2p.external_addresses is empty and p2p.listen has no specific address; \
         set p2p.external_addresses or pass --multiaddr"
    )]
    NoMultiaddr,
    /// `--stake` does not read or does not fit.
    #[error("--stake: {0}")]
    Amount(#[from] AmountError),
    /// The registry transaction failed or was refused.
    #[error(transparent)]
    Operator(#[from] OperatorError),
}

/// What `nox status` prints: the registry record, and what the local node's
/// admin API says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct NodeStatus {
    /// The registry record and the wallet's funds.
    #[serde(flatten)]
    pub(crate) registry: RegistryStatus,
    /// Whether the local node's admin API answered.
    pub(crate) node_api: NodeApi,
    /// Epochs for which the local node knows a descriptor (published epoch
    /// key) of this node id; none unless the API answered.
    pub(crate) epoch_keys_published: Option<Vec<u64>>,
}

/// What the local node's admin API says about this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum NodeApi {
    /// It answered `GET /topology`.
    Reachable,
    /// It did not answer, or not with a topology.
    Unreachable,
}

/// What `nox register` prints: the registration, and whether `node.layer`
/// repeats the layer the registry gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RegisterOutcome {
    /// The registration.
    #[serde(flatten)]
    pub(crate) registered: operator::Registered,
    /// `node.layer` in the configuration.
    pub(crate) configured_layer: u8,
    /// What to change when `node.layer` is not the registered layer (peers
    /// refuse descriptors that claim another layer); none when it is.
    pub(crate) layer_mismatch: Option<String>,
}

/// The target `[chain]` describes.
pub(crate) fn target(c: &ChainSection) -> Result<RegistryTarget, RegistryCommandError> {
    // `chain.rpc_url` and `chain.registry` are optional keys (unset = no
    // chain). With several endpoints the commands use the first: a
    // transaction needs one endpoint, and its receipt is checked on it.
    let Some(rpc_url) = c.endpoints().into_iter().find(|url| !url.is_empty()) else {
        return Err(RegistryCommandError::NoChain);
    };
    let registry = c
        .registry_address()
        .ok_or_else(|| RegistryCommandError::InvalidRegistry(c.registry.clone().unwrap_or_default()))?;
    Ok(RegistryTarget { rpc_url, chain_id: c.chain_id, registry })
}

/// `nox register`: commits and reveals (`nox_eth::registry::operator::register`),
/// then compares the layer the registry gave with `node.layer`.
pub(crate) async fn register(
    config: &NodeConfig,
    keys: &NodeKeys,
    stake: Option<TokenAmount>,
    multiaddr: Option<String>,
) -> Result<RegisterOutcome, RegistryCommandError> {
    let t = target(&config.chain)?;
    let op = keys.operator();
    let role = config.node.role;
    let multiaddr = match multiaddr {
        Some(m) => m,
        None => default_multiaddr(&config.p2p)?,
    };
    check_multiaddr(&multiaddr)?;
    let stake = match stake {
        Some(tokens) => {
            let decimals = operator::stake_token_decimals(&t, &op).await?;
            Some(tokens.to_base_units(decimals)?)
        }
        None => None,
    };
    let registered = operator::register(&t, &op, role, &multiaddr, stake).await?;
    let configured_layer = config.node.layer;
    let layer_mismatch =
        check_layer(role, configured_layer, registered.operator, registered.layer).err().map(|e| e.to_string());
    Ok(RegisterOutcome { registered, configured_layer, layer_mismatch })
}

/// `nox status`: the registry record, and the epochs for which the running
/// node (its admin listener, `http.listen`) knows this node's descriptor. An
/// unreachable node API is reported in the result, not as an error.
pub(crate) async fn status(config: &NodeConfig, keys: &NodeKeys) -> Result<NodeStatus, RegistryCommandError> {
    let t = target(&config.chain)?;
    let op = keys.operator();
    let registry = operator::status(&t, &op).await?;
    let (node_api, epoch_keys_published) = match published_epochs(config.http.listen, &op.node_id).await {
        Some(epochs) => (NodeApi::Reachable, Some(epochs)),
        None => (NodeApi::Unreachable, None),
    };
    Ok(NodeStatus { registry, node_api, epoch_keys_published })
}

/// `nox unstake`.
pub(crate) async fn unstake(
    config: &NodeConfig,
    keys: &NodeKeys,
) -> Result<operator::UnstakeRequested, RegistryCommandError> {
    Ok(operator::request_unstake(&target(&config.chain)?, &keys.operator()).await?)
}

/// `nox withdraw-stake`.
pub(crate) async fn withdraw_stake(
    config: &NodeConfig,
    keys: &NodeKeys,
) -> Result<operator::Withdrawn, RegistryCommandError> {
    Ok(operator::withdraw_stake(&target(&config.chain)?, &keys.operator()).await?)
}

/// The multiaddr to register when none is given: the first of
/// `p2p.external_addresses`, else the first `p2p.listen` address that names a
/// specific host (not `0.0.0.0` or `::`) and port (not 0).
pub(crate) fn default_multiaddr(p2p: &P2pSection) -> Result<String, RegistryCommandError> {
    if let Some(first) = p2p.external_addresses.first() {
        return Ok(first.clone());
    }
    p2p.listen.iter().find(|a| is_dialable(a)).cloned().ok_or(RegistryCommandError::NoMultiaddr)
}

fn is_dialable(addr: &str) -> bool {
    let Ok(ma) = addr.parse::<libp2p::Multiaddr>() else { return false };
    ma.iter().all(|p| {
        use libp2p::multiaddr::Protocol;
        match p {
            Protocol::Ip4(ip) => !ip.is_unspecified(),
            Protocol::Ip6(ip) => !ip.is_unspecified(),
            Protocol::Tcp(port) | Protocol::Udp(port) => port != 0,
            _ => true,
        }
    })
}

/// Checks `multiaddr` the way the registry and peers will read it.
fn check_multiaddr(multiaddr: &str) -> Result<(), RegistryCommandError> {
    let invalid = |reason: String| RegistryCommandError::InvalidMultiaddr { multiaddr: multiaddr.to_string(), reason };
    operator::check_multiaddr_length(multiaddr)?;
    multiaddr.parse::<libp2p::Multiaddr>().map_err(|e| invalid(format!("not a multiaddr: {e}")))?;
    if !is_dialable(multiaddr) {
        return Err(invalid("other nodes cannot dial an unspecified address (0.0.0.0, ::) or port 0".to_string()));
    }
    Ok(())
}

/// Epochs for which the node at `addr` (its admin listener) holds a
/// descriptor of `node_id`, from `GET /topology`; `None` if it does not
/// answer with a topology document within [`NODE_API_TIMEOUT`].
async fn published_epochs(addr: SocketAddr, node_id: &B256) -> Option<Vec<u64>> {
    let addr = loopback_if_unspecified(addr);
    let client = reqwest::Client::builder().timeout(NODE_API_TIMEOUT).build().ok()?;
    let response = client.get(format!("http://{addr}/topology")).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let doc = TopologyDocument::from_json(&response.text().await.ok()?).ok()?;
    Some(epochs_in(&doc, node_id))
}

/// The epochs of `node_id`'s descriptors in a topology document.
fn epochs_in(doc: &TopologyDocument, node_id: &B256) -> Vec<u64> {
    doc.node(&nox_protocol::NodeId(node_id.0)).map(|n| n.epochs()).unwrap_or_default()
}

/// A listener bound to `0.0.0.0` or `::` is reached on loopback.
fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port()),
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nox_net::topology_doc::{DescriptorEntry, EpochWindow, NodeEntry};

    #[test]
    fn default_multiaddr_prefers_external_then_specific_listen() {
        let mut p2p = P2pSection::default();
        assert!(matches!(default_multiaddr(&p2p), Err(RegistryCommandError::NoMultiaddr)), "0.0.0.0 only");
        p2p.listen = vec!["/ip6/::/tcp/9000".into(), "/ip4/127.0.0.1/tcp/0".into(), "/ip4/10.0.0.5/tcp/9000".into()];
        assert_eq!(default_multiaddr(&p2p).unwrap(), "/ip4/10.0.0.5/tcp/9000");
        p2p.external_addresses = vec!["/dns4/nox.example.org/tcp/9000".into()];
        assert_eq!(default_multiaddr(&p2p).unwrap(), "/dns4/nox.example.org/tcp/9000");
    }

    #[test]
    fn multiaddrs_are_checked_before_sending() {
        assert!(check_multiaddr("/ip4/203.0.113.7/tcp/9000").is_ok());
        for bad in ["not-a-multiaddr", "/ip4/0.0.0.0/tcp/9000", "/ip4/1.2.3.4/tcp/0"] {
            assert!(matches!(check_multiaddr(bad), Err(RegistryCommandError::InvalidMultiaddr { .. })), "{bad:?}");
        }
        // What the registry itself refuses is the registry transaction's check.
        let long = format!("/dns4/{}/tcp/9000", "a".repeat(250));
        for bad in ["", long.as_str()] {
            let e = check_multiaddr(bad).unwrap_err();
            assert!(matches!(e, RegistryCommandError::Operator(OperatorError::InvalidMultiaddr { .. })), "{bad:?}");
        }
    }

    #[test]
    fn the_commands_use_rpc_url_or_the_first_of_rpc_urls() {
        let mut c = ChainSection {
            registry: Some("0x5FbDB2315678afecb367f032d93F642f64180aa3".into()),
            ..ChainSection::default()
        };
        assert!(matches!(target(&c), Err(RegistryCommandError::NoChain)));
        c.rpc_urls = vec!["https://a.example.org".into(), "https://b.example.org".into()];
        assert_eq!(target(&c).unwrap().rpc_url, "https://a.example.org");
        c.rpc_urls.clear();
        c.rpc_url = Some("http://127.0.0.1:8545".into());
        assert_eq!(target(&c).unwrap().rpc_url, "http://127.0.0.1:8545");
    }

    #[test]
    fn topology_epochs_for_one_node() {
        let me = B256::repeat_byte(0xab);
        let entry = |id: B256, epochs: &[u64]| NodeEntry {
            node_id: id.0,
            layer: 0,
            addresses: vec![],
            operator: None,
            stake: None,
            exit: None,
            descriptors: epochs
                .iter()
                .map(|e| DescriptorEntry { epoch: *e, mix_key: [0; 32], encoded: vec![] })
                .collect(),
        };
        let doc = TopologyDocument {
            node_id: me.0,
            layer: 0,
            epoch: EpochWindow { current: 7, next: 8 },
            nodes: vec![entry(me, &[8, 7]), entry(B256::repeat_byte(0xcd), &[9])],
        };
        assert_eq!(epochs_in(&doc, &me), vec![7, 8]);
        assert_eq!(epochs_in(&doc, &B256::ZERO), Vec::<u64>::new());
    }
}
