//! Price rounds on a network in one process, on loopback: an oracle peer
//! (real libp2p, a trusted key) publishes signed rounds on `nox/prices/1`;
//! nodes admit it, check every round against their price book, relay only
//! the rounds they accepted, and hand them to clients that ask (`GetPrices`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use nox_net::p2p::{self, Command, PRICE_TOPIC, PeerKind};
use nox_net::raw_peer::{RawPeer, RawPeerError};
use nox_node::localnet::{LocalNet, eventually};
use nox_node::metrics::Metrics;
use nox_protocol::price::{ETH, PriceRound, Quote, SOURCE_BINANCE, SOURCE_COINGECKO};

const CHAIN: u64 = 31337;
const USDC: [u8; 20] = [0xa0; 20];
const WAIT: Duration = Duration::from_secs(20);

fn oracle_key() -> SigningKey {
    SigningKey::from_bytes(&[0x0c; 32])
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn round(key: &SigningKey, n: u64, timestamp_ms: u64) -> Vec<u8> {
    let q = |symbol: &str, token, token_decimals, price| Quote {
        symbol: symbol.into(),
        token,
        token_decimals,
        price,
        price_decimals: 8,
        sources: SOURCE_BINANCE | SOURCE_COINGECKO,
    };
    let quotes = vec![q("ETH", ETH, 18, 2500_0000_0000), q("USDC", USDC, 6, 1_0000_0000)];
    PriceRound::sign(key, CHAIN, n, timestamp_ms, quotes).unwrap().encode()
}

fn price(m: &Metrics, outcome: &'static str) -> u64 {
    m.event("price", outcome).get()
}

/// Publishes `data` from `oracle` until `done` holds: the first publications
/// may find no subscribed peer yet (GossipSub learns subscriptions after the
/// connection), and a publication that reached a peer is not repeated by
/// GossipSub (the same bytes are a duplicate).
async fn publish_until(oracle: &RawPeer, data: &[u8], done: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        oracle.p2p.command(Command::Publish { topic: PRICE_TOPIC, data: data.to_vec() }).await.unwrap();
        if eventually(Duration::from_millis(400), &done).await {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oracle_rounds_are_checked_relayed_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = format!("0x{}", hex::encode(oracle_key().verifying_key().to_bytes()));
    // A second trusted key that never publishes: the threshold is 1 of 2.
    let other = hex::encode(SigningKey::from_bytes(&[0x0d; 32]).verifying_key().to_bytes());
    // Nodes 0 and 1 trust the oracle; node 2 trusts no oracle.
    let net = LocalNet::start_ready(dir.path(), [2, 1, 0], 11, |i, c| {
        if i < 2 {
            c.prices.oracle_keys = vec![trusted.clone(), other.clone()];
            c.prices.threshold = 1;
            c.prices.chain_id = CHAIN;
        }
    })
    .await
    .unwrap();
    let node = |i: usize| net.nodes[i].running.as_ref().unwrap();
    let (n0, n1, n2) = (node(0), node(1), node(2));

    // The oracle says hello as an oracle and is welcomed; it is counted, and
    // gets no packets (it is in nobody's topology).
    let oracle =
        RawPeer::start(p2p::keypair_from_identity(&oracle_key()).unwrap(), vec![], PeerKind::Oracle, 1).await.unwrap();
    oracle.connect(n0.peer_id, n0.listen_addrs.clone(), WAIT).await.unwrap();
    assert!(eventually(WAIT, || n0.metrics.render().contains("nox_peers{tier=\"oracle\"} 1")).await);

    // A peer claiming to be an oracle with a key nobody trusts is refused at the handshake.
    let impostor =
        RawPeer::start(libp2p::identity::Keypair::generate_ed25519(), vec![], PeerKind::Oracle, 1).await.unwrap();
    match impostor.connect(n0.peer_id, n0.listen_addrs.clone(), WAIT).await {
        Err(RawPeerError::Refused { reason, .. }) => assert!(reason.contains("unknown oracle"), "{reason}"),
        other => panic!("an untrusted oracle was not refused: {other:?}"),
    }
    assert_eq!(n0.metrics.event("handshake", "unknown_oracle").get(), 1);
    impostor.shutdown().await;

    // A valid round: accepted by node 0, relayed by GossipSub to node 1 (not
    // connected to the oracle), dropped by node 2, which trusts no oracle.
    let t = now_ms();
    let valid = round(&oracle_key(), 10, t);
    assert!(publish_until(&oracle, &valid, || price(&n0.metrics, "accepted") == 1).await);
    assert!(eventually(WAIT, || price(&n1.metrics, "accepted") == 1).await, "node 1 never got the round");
    assert!(eventually(WAIT, || price(&n2.metrics, "no_trust") >= 1).await, "node 2 never saw the round");
    assert_eq!(price(&n2.metrics, "accepted"), 0);

    // GetPrices: the round, from the node the oracle published to and from
    // the node it was relayed to; nothing from the node without a book.
    let client = net.client(0).await.unwrap();
    assert_eq!(client.price_rounds(n0.peer_id, WAIT).await.unwrap(), vec![valid.clone()]);
    client.connect(n1.peer_id, n1.listen_addrs.clone(), WAIT).await.unwrap();
    assert_eq!(client.price_rounds(n1.peer_id, WAIT).await.unwrap(), vec![valid.clone()]);
    // 1 ETH at 2500 USD is 2500 USDC.
    assert_eq!(n0.prices.wei_to_token(10u128.pow(18), &USDC), Ok(2_500_000_000));
    assert!(n2.prices.wei_to_token(1, &USDC).is_err());

    // Bad rounds, each refused by node 0 under its reason and never relayed.
    let mut forged = round(&oracle_key(), 11, t + 1);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let untrusted = SigningKey::from_bytes(&[0x0e; 32]);
    let bad: [(&str, Vec<u8>); 5] = [
        ("bad_signature", forged),
        // The same round number again, with other bytes (GossipSub drops identical ones itself).
        ("replayed", round(&oracle_key(), 10, t + 2)),
        ("out_of_order", round(&oracle_key(), 9, t + 3)),
        // A minute ahead of the node's clock: beyond prices.max_skew_secs.
        ("future", round(&oracle_key(), 12, t + 60_000)),
        ("unknown_oracle", round(&untrusted, 1, t)),
    ];
    for (label, bytes) in &bad {
        assert!(publish_until(&oracle, bytes, || price(&n0.metrics, label) == 1).await, "{label} not counted");
    }
    // Nothing was relayed: node 1 holds the one valid round and refused nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (label, _) in &bad {
        assert_eq!(price(&n1.metrics, label), 0, "node 1 saw a {label} round");
    }
    assert_eq!(price(&n0.metrics, "accepted"), 1);
    assert_eq!(price(&n1.metrics, "accepted"), 1);
    assert_eq!(client.price_rounds(n0.peer_id, WAIT).await.unwrap(), vec![valid]);

    // The next round replaces the oracle's last one everywhere.
    let next = round(&oracle_key(), 13, now_ms());
    assert!(publish_until(&oracle, &next, || price(&n0.metrics, "accepted") == 2).await);
    assert!(eventually(WAIT, || price(&n1.metrics, "accepted") == 2).await);
    assert_eq!(client.price_rounds(n1.peer_id, WAIT).await.unwrap(), vec![next]);

    client.shutdown().await;
    oracle.shutdown().await;
    net.shutdown().await;
}

/// A node that starts after a round was published asks its peers for their
/// rounds when they welcome it, and can price at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_starts_late_fetches_the_rounds_its_peers_hold() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = hex::encode(oracle_key().verifying_key().to_bytes());
    let mut net = LocalNet::start_ready(dir.path(), [2, 0, 0], 12, |_, c| {
        c.prices.oracle_keys = vec![trusted.clone()];
        c.prices.chain_id = CHAIN;
    })
    .await
    .unwrap();
    net.stop_node(1).await;
    let n0 = net.nodes[0].running.as_ref().unwrap();
    let (peer0, addrs0, metrics0) = (n0.peer_id, n0.listen_addrs.clone(), n0.metrics.clone());
    let oracle =
        RawPeer::start(p2p::keypair_from_identity(&oracle_key()).unwrap(), vec![], PeerKind::Oracle, 1).await.unwrap();
    oracle.connect(peer0, addrs0, WAIT).await.unwrap();
    let valid = round(&oracle_key(), 1, now_ms());
    assert!(publish_until(&oracle, &valid, || price(&metrics0, "accepted") == 1).await);
    // Past GossipSub's message cache (5 heartbeats of 1 s), so node 1 cannot
    // learn the round from gossip (IHAVE/IWANT): only by asking.
    tokio::time::sleep(Duration::from_secs(6)).await;

    net.start_node(1).await.unwrap();
    let n1 = net.nodes[1].running.as_ref().unwrap();
    assert!(eventually(WAIT, || price(&n1.metrics, "accepted") == 1).await, "node 1 did not fetch the round");
    assert_eq!(n1.prices.wei_to_token(10u128.pow(18), &USDC), Ok(2_500_000_000));
    oracle.shutdown().await;
    net.shutdown().await;
}
