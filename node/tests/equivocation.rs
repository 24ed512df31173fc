//! Equivocating mix keys on a real in-process network: a registered node signs
//! two mix keys for one epoch, as a node that wants to tell its clients apart
//! would, and a forger tries to make an honest node look like one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use nox_client::{Client, ClientConfig, DescriptorRejected, Directory, StaticMember, TopologySource};
use nox_net::p2p::{Command, DESCRIPTOR_TOPIC};
use nox_net::raw_peer::RawPeer;
use nox_node::localnet::{LocalNet, eventually};
use nox_node::node::RunningNode;
use nox_node::topology::{DescriptorRejection, EquivocationDocument};
use nox_protocol::crypto::x25519::MixSecretKey;
use nox_protocol::descriptor::MixDescriptor;

fn running(net: &LocalNet, idx: usize) -> &RunningNode {
    net.nodes[idx].running.as_ref().unwrap()
}

/// `GET url`: status and body.
async fn get(url: String) -> (u16, String) {
    tokio::task::spawn_blocking(move || match ureq::get(&url).timeout(Duration::from_secs(5)).call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {url}: {e}"),
    })
    .await
    .unwrap()
}

async fn equivocations(base: String) -> EquivocationDocument {
    let (status, body) = get(format!("{base}/equivocations")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not an EquivocationDocument ({e}): {body}"))
}

/// Gossips `data` from `peer` until `done` holds (publishing fails until the
/// subscriptions are exchanged; GossipSub sends the same bytes only once).
async fn gossip_until(peer: &RawPeer, data: &[u8], mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        let _ = peer.p2p.command(Command::Publish { topic: DESCRIPTOR_TOPIC, data: data.to_vec() }).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    true
}

/// A client's directory of the network's three nodes, fed with what
/// `GetDescriptors` at the entry answers.
async fn client_directory(
    net: &LocalNet,
    peer: &RawPeer,
    gw: usize,
    epoch: u64,
) -> (Directory, Vec<DescriptorRejected>) {
    let members: Vec<StaticMember> = net
        .nodes
        .iter()
        .map(|n| StaticMember {
            node_id: format!("0x{}", hex::encode(n.id().0)),
            layer: n.config.node.layer,
            address: "/ip4/127.0.0.1/tcp/1".into(),
        })
        .collect();
    let mut dir = Directory::from_static(&members).unwrap();
    let answer = peer.descriptors(running(net, gw).peer_id, Duration::from_secs(5)).await.unwrap();
    let refused = answer.into_iter().filter_map(|d| dir.accept(d, epoch).err()).collect();
    (dir, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_signs_two_keys_for_one_epoch_is_excluded_and_the_evidence_exported() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let net = LocalNet::start_ready(dir.path(), [1, 1, 1], 23, |i, c| {
        if i == 0 {
            c.http.public_listen = Some("127.0.0.1:0".parse().unwrap());
        }
    })
    .await
    .unwrap();
    let (gw, mx, ex) = (net.layer(0)[0], net.layer(1)[0], net.layer(2)[0]);
    let g = running(&net, gw);
    let epoch = g.keys.read().unwrap().current_epoch();
    let victim = net.nodes[mx].id();
    let held = |i: usize| running(&net, i).topology.mix_key(&victim, epoch);
    let first_key = held(gw).expect("the mix node's key is known");
    let counted = |i: usize, outcome: &'static str| running(&net, i).metrics.event("descriptor", outcome).get();
    // The mix node's descriptor as it published it.
    let entry = g.topology.entries().into_iter().find(|n| n.node_id == victim.0).unwrap();
    let a = entry.descriptors.iter().find(|d| d.epoch == epoch).unwrap().verified().unwrap();
    let peer = net.client(gw).await.unwrap();

    // 1. A forger gossips a second key in the mix node's name, signed by
    //    another identity. It is a bad signature, not evidence: nothing changes.
    let forger = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let other_key = MixSecretKey::generate(&mut rand::rngs::OsRng).public_key();
    let mut forged = MixDescriptor::sign(&forger, epoch, other_key, 1, a.role, a.addresses.clone()).unwrap().encode();
    forged[1..33].copy_from_slice(&victim.0);
    assert!(gossip_until(&peer, &forged, || counted(gw, "bad_signature") == 1).await, "forgery not seen");
    // The mix node's own descriptor again (an honest re-publication): a duplicate.
    assert!(matches!(g.topology.accept_descriptor(a.clone(), epoch), Ok(false)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in [gw, mx, ex] {
        assert_eq!(held(i), Some(first_key), "node {i}: the honest key must stay");
        assert_eq!(counted(i, "equivocation"), 0, "node {i}");
        assert!(!running(&net, i).topology.is_excluded(&victim, epoch));
    }
    assert!(equivocations(format!("http://{}", g.http_addr)).await.equivocations.is_empty());

    // 2. The mix node itself signs a second key for the same epoch and hands
    //    it out (here: gossips it to the entry).
    let second_key = MixSecretKey::generate(&mut rand::rngs::OsRng).public_key();
    let identity = &net.nodes[mx].keys.identity;
    let b = MixDescriptor::sign(identity, epoch, second_key, a.layer, a.role, a.addresses.clone()).unwrap();
    assert!(gossip_until(&peer, &b.encode(), || counted(gw, "equivocation") == 1).await, "equivocation not seen");

    // The entry routes through neither key in that epoch, the node's other
    // epoch and the other nodes are untouched.
    assert_eq!(held(gw), None, "the first key must be dropped too");
    assert!(g.topology.is_excluded(&victim, epoch));
    let set = g.topology.route_set(epoch);
    assert!(set.layer(1).is_empty(), "the equivocating node is still routable");
    assert_eq!((set.layer(0).len(), set.layer(2).len()), (1, 1));
    assert!(g.topology.mix_key(&victim, epoch + 1).is_some(), "its next epoch is not affected");
    assert!(
        matches!(g.topology.accept_descriptor(a.clone(), epoch), Err(DescriptorRejection::Excluded { epoch: e }) if e == epoch)
    );
    assert!(g.topology.entries().iter().all(|n| n.node_id != victim.0 || n.epochs() == vec![epoch + 1]));

    // The entry passed the second key on: the exit, which held the first,
    // finds the equivocation itself (and so does the mix node's own view).
    assert!(
        eventually(Duration::from_secs(10), || [mx, ex]
            .iter()
            .all(|&i| running(&net, i).topology.is_excluded(&victim, epoch) && held(i).is_none()))
        .await,
        "the evidence did not reach the other nodes"
    );

    // The evidence, on the admin and the public listener: both signed
    // descriptors, which verify again on the reader's side.
    for base in [format!("http://{}", g.http_addr), format!("http://{}", g.public_http_addr.unwrap())] {
        let doc = equivocations(base.clone()).await;
        assert_eq!(doc.equivocations.len(), 1, "{base}: {doc:?}");
        let e = &doc.equivocations[0];
        assert_eq!(e.node_id, format!("0x{}", hex::encode(victim.0)));
        assert_eq!(e.epoch, epoch);
        let proof = e.verified().expect("the evidence verifies");
        assert!(proof.contains(&a) && proof.contains(&b));
        let mut keys = [format!("0x{}", hex::encode(first_key.0)), format!("0x{}", hex::encode(second_key.0))];
        keys.sort();
        assert_eq!(e.mix_keys, keys);
    }
    let (_, metrics) = get(format!("http://{}/metrics", g.http_addr)).await;
    for line in ["nox_events_total{kind=\"descriptor\",outcome=\"equivocation\"} 1", "\nnox_equivocating_nodes 1\n"] {
        assert!(metrics.contains(line), "{line:?} missing:\n{metrics}");
    }

    // A client that asks the entry for descriptors gets the evidence with
    // them and excludes the node for that epoch on its own checks.
    let (client_dir, refused) = client_directory(&net, &peer, gw, epoch).await;
    assert_eq!(refused, vec![DescriptorRejected::Equivocation { epoch }]);
    assert!(client_dir.is_excluded(&victim, epoch));
    assert_eq!(client_dir.equivocations().count(), 1);
    let routes = client_dir.route_set(epoch);
    assert!(routes.layer(1).is_empty());
    assert_eq!((routes.layer(0).len(), routes.layer(2).len()), (1, 1));
    assert_eq!(client_dir.route_set(epoch + 1).layer(1).len(), 1);

    // The same through `Client`, the library a dApp uses (and `nox-client
    // equivocations` prints): connecting takes the entry's descriptors, and
    // the evidence comes with them.
    let statics: Vec<StaticMember> = net
        .nodes
        .iter()
        .map(|n| StaticMember {
            node_id: format!("0x{}", hex::encode(n.id().0)),
            layer: n.config.node.layer,
            address: n.running.as_ref().unwrap().listen_addrs[0].to_string(),
        })
        .collect();
    let mut cfg = ClientConfig::new(TopologySource::Static(statics));
    cfg.pow_bits = net.nodes[gw].config.ingest.pow_bits;
    cfg.epoch_secs = net.nodes[gw].config.network.epoch_secs;
    let client = Client::connect(cfg).await.unwrap();
    let held = client.equivocations();
    assert_eq!(held.len(), 1, "the client holds no evidence");
    assert_eq!((held[0].node_id(), held[0].epoch()), (victim, epoch));
    assert!(held[0].contains(&a) && held[0].contains(&b));
    client.shutdown().await;

    peer.shutdown().await;
    net.shutdown().await;
    eprintln!("equivocation test took {:?}", started.elapsed());
}
