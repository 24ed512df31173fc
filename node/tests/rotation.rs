//! A mix-key rotation in the middle of traffic, on a real three-node network
//! with eight-second epochs: nothing built for the old or the new epoch is lost
//! within the grace period, and after it the old key and its replay cache are
//! gone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::PeerId;
use nox_client::{PreparedRequest as EchoRequest, echo_request};
use nox_net::p2p::PeerKind;
use nox_net::raw_peer::RawPeer;
use nox_net::topology_doc::TopologyDocument;
use nox_node::localnet::LocalNet;
use nox_protocol::descriptor::EpochClock;
use nox_protocol::fragment::{Reassembled, Reassembler, ReassemblyLimits};
use nox_protocol::payload::{Reply, ReplyStatus};
use nox_protocol::sphinx::Hop;

const POW_BITS: u8 = 4;
const EPOCH_SECS: u64 = 8;
const GRACE_SECS: u64 = 2;

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Sleeps until the unix clock reads `at` (seconds).
async fn sleep_until_unix(at: f64) {
    let now = unix_now();
    if at > now {
        tokio::time::sleep(Duration::from_secs_f64(at - now)).await;
    }
}

/// The route `via` with each node's key for `epoch`, as node `viewer` knows it.
fn route(net: &LocalNet, viewer: usize, via: &[usize], epoch: u64) -> Vec<Hop> {
    let topology = &net.nodes[viewer].running.as_ref().unwrap().topology;
    via.iter()
        .map(|i| {
            let id = net.nodes[*i].id();
            let key = topology
                .mix_key(&id, epoch)
                .unwrap_or_else(|| panic!("node {viewer} does not know node {i}'s key for epoch {epoch}"));
            Hop { id, key, delay_us: 0 }
        })
        .collect()
}

/// Every running node knows every running node's key for `epoch`.
fn keys_everywhere(net: &LocalNet, epoch: u64) -> bool {
    net.nodes
        .iter()
        .filter_map(|n| n.running.as_ref())
        .all(|r| net.nodes.iter().all(|m| r.topology.mix_key(&m.id(), epoch).is_some()))
}

/// Requests in flight, by name, waiting for their replies.
#[derive(Default)]
struct Outstanding {
    requests: Vec<(String, EchoRequest)>,
}

/// Claims the request's replies and submits its packets.
async fn send(client: &RawPeer, gateway: PeerId, req: &EchoRequest) {
    client.claim_replies(gateway, req.surb_keys.iter().map(|k| k.surb_id()).collect()).await.unwrap();
    for (_, p) in &req.packets {
        client.submit(gateway, p, POW_BITS).await.unwrap();
    }
}

/// Receives replies until every request in `outstanding` is answered with its
/// own data or `deadline` passes; returns the names of the answered ones.
async fn collect(client: &RawPeer, outstanding: &Mutex<Outstanding>, deadline: Instant) -> HashSet<String> {
    let mut answered = HashSet::new();
    let mut reassembler = Reassembler::new(ReassemblyLimits::default());
    while Instant::now() < deadline {
        if answered.len() == outstanding.lock().unwrap().requests.len() {
            break;
        }
        let Some(packet) = client.next_packet(Duration::from_millis(100)).await else { continue };
        let out = outstanding.lock().unwrap();
        let Some(fragment) =
            out.requests.iter().flat_map(|(_, r)| r.surb_keys.iter()).find_map(|k| k.open(packet.body()).ok())
        else {
            continue;
        };
        if let Ok(Reassembled::Complete(msg)) = reassembler.insert(&fragment, Instant::now()) {
            let reply = Reply::decode(&msg).unwrap();
            let (name, _) = out.requests.iter().find(|(_, r)| r.request_id == reply.request_id).expect("known request");
            assert_eq!(reply.status, ReplyStatus::Ok, "reply to {name}: {reply:?}");
            assert_eq!(reply.data, name.as_bytes(), "reply to {name}");
            answered.insert(name.clone());
        }
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_rotation_in_the_middle_of_traffic_loses_nothing_within_the_grace_period() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let net = LocalNet::start_ready(dir.path(), [1, 1, 1], 11, |_, c| {
        c.network.epoch_secs = EPOCH_SECS;
        c.network.grace_secs = GRACE_SECS;
    })
    .await
    .unwrap();
    let (gw, mx, ex) = (net.layer(0)[0], net.layer(1)[0], net.layer(2)[0]);
    let gwp = net.nodes[gw].running.as_ref().unwrap().peer_id;
    let client = Arc::new(
        RawPeer::start(libp2p::identity::Keypair::generate_ed25519(), vec![], PeerKind::Client, 4096).await.unwrap(),
    );
    {
        let g = net.nodes[gw].running.as_ref().unwrap();
        client.connect(g.peer_id, g.listen_addrs.clone(), Duration::from_secs(10)).await.unwrap();
    }

    // The boundary under test: the next one at least 3.5 s away, so that
    // everything before it fits.
    let clock = EpochClock::new(EPOCH_SECS).unwrap();
    let mut e = clock.epoch_at(unix_now() as u64);
    while clock.start_of(e + 1) as f64 - unix_now() < 3.5 {
        e += 1;
    }
    let boundary = clock.start_of(e + 1) as f64;
    sleep_until_unix(boundary - 3.0).await;
    assert_eq!(clock.epoch_at(unix_now() as u64), e);

    // Next epoch's keys are published one epoch ahead: every node already
    // holds every node's key for e + 1.
    let deadline = Instant::now() + Duration::from_secs(1);
    while !keys_everywhere(&net, e + 1) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(keys_everywhere(&net, e + 1), "next epoch's keys are not known to every node before the boundary");

    let build = |epoch: u64, name: &str| {
        let fwd = route(&net, gw, &[gw, mx, ex], epoch);
        let back = route(&net, gw, &[mx, gw], epoch);
        echo_request(epoch, &fwd, &back, 1, name.as_bytes().to_vec()).unwrap()
    };
    let outstanding = Arc::new(Mutex::new(Outstanding::default()));

    // Built with epoch e's keys now, held until just after the boundary.
    let held: Vec<(String, EchoRequest)> =
        (0..3).map(|i| format!("held-{i}")).map(|n| (n.clone(), build(e, &n))).collect();
    // Built with epoch e's keys now, held until after the grace period.
    let late = build(e, "late");
    // Built with epoch e + 1's keys and sent before the boundary.
    for i in 0..3 {
        let name = format!("early-{i}");
        let req = build(e + 1, &name);
        send(&client, gwp, &req).await;
        outstanding.lock().unwrap().requests.push((name, req));
    }

    // A steady stream from 2 s before to 1.5 s after the boundary, each
    // request built with the keys of the epoch the unix clock is in.
    sleep_until_unix(boundary - 2.0).await;
    let stream = {
        let client = client.clone();
        let outstanding = outstanding.clone();
        let topology = net.nodes[gw].running.as_ref().unwrap().topology.clone();
        let ids = [net.nodes[gw].id(), net.nodes[mx].id(), net.nodes[ex].id()];
        tokio::spawn(async move {
            let mut n = 0;
            while unix_now() < boundary + 1.5 {
                let epoch = clock.epoch_at(unix_now() as u64);
                let hop = |i: usize| Hop {
                    id: ids[i],
                    key: topology.mix_key(&ids[i], epoch).expect("key of the epoch in progress"),
                    delay_us: 0,
                };
                let name = format!("stream-{n}-epoch-{}", epoch - e);
                let req =
                    echo_request(epoch, &[hop(0), hop(1), hop(2)], &[hop(1), hop(0)], 1, name.clone().into()).unwrap();
                send(&client, gwp, &req).await;
                outstanding.lock().unwrap().requests.push((name, req));
                n += 1;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            n
        })
    };

    // Just after the boundary, inside the grace period: the held requests.
    sleep_until_unix(boundary + 0.3).await;
    assert_eq!(clock.epoch_at(unix_now() as u64), e + 1);
    for (name, req) in held {
        send(&client, gwp, &req).await;
        outstanding.lock().unwrap().requests.push((name, req));
    }
    let streamed = stream.await.unwrap();
    assert!(streamed >= 15, "only {streamed} stream requests were sent");

    let answered = collect(&client, &outstanding, Instant::now() + Duration::from_secs(5)).await;
    let names: Vec<String> = outstanding.lock().unwrap().requests.iter().map(|(n, _)| n.clone()).collect();
    let missing: Vec<&String> = names.iter().filter(|n| !answered.contains(*n)).collect();
    assert!(missing.is_empty(), "no reply to {missing:?} (of {})", names.len());
    assert!(names.iter().any(|n| n.ends_with("epoch-0")) && names.iter().any(|n| n.ends_with("epoch-1")));
    for i in 0..net.nodes.len() {
        assert_eq!(net.nodes[i].running.as_ref().unwrap().metrics.total_dropped(), 0, "node {i} dropped packets");
    }

    // After the grace period (and the next rotation tick), epoch e's key is
    // retired: a packet built for e is opened with e + 2's key (same parity),
    // fails its MAC and is dropped.
    sleep_until_unix(boundary + GRACE_SECS as f64 + 1.2).await;
    let gw_node = net.nodes[gw].running.as_ref().unwrap();
    send(&client, gwp, &late).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while gw_node.metrics.dropped_value("worker", "bad_mac") == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gw_node.metrics.dropped_value("worker", "bad_mac"), 1, "{}", gw_node.metrics.render());
    assert_eq!(gw_node.metrics.dropped_value("worker", "no_epoch_key"), 0);
    outstanding.lock().unwrap().requests = vec![("late".to_string(), late)];
    assert!(collect(&client, &outstanding, Instant::now() + Duration::from_millis(500)).await.is_empty());

    // The retired epoch's replay cache is gone on every node; the caches of
    // the new current and next epochs are there.
    for (i, n) in net.nodes.iter().enumerate() {
        let r = n.running.as_ref().unwrap();
        assert_eq!(r.replay.epochs(), vec![e + 1, e + 2], "node {i}");
        let ring = r.keys.read().unwrap();
        assert_eq!((ring.previous_epoch(), ring.current_epoch(), ring.next_epoch()), (None, e + 1, e + 2));
    }

    // /topology shows every node's descriptors for the new current and next epochs.
    for (i, n) in net.nodes.iter().enumerate() {
        let url = format!("http://{}/topology", n.running.as_ref().unwrap().http_addr);
        let expected: Vec<String> = net.nodes.iter().map(|m| format!("0x{}", hex::encode(m.id().0))).collect();
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let url = url.clone();
            let text = tokio::task::spawn_blocking(move || ureq::get(&url).call().unwrap().into_string().unwrap())
                .await
                .unwrap();
            let body = TopologyDocument::from_json(&text).unwrap();
            assert_eq!(body.epoch.current, e + 1, "node {i}: {text}");
            assert_eq!(body.epoch.next, e + 2, "node {i}: {text}");
            let complete = expected.iter().all(|id| {
                body.nodes.iter().any(|node| {
                    format!("0x{}", hex::encode(node.node_id)) == *id && node.epochs() == vec![e + 1, e + 2]
                })
            });
            if complete {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i}: /topology lacks descriptors for {} and {}: {text}",
                e + 1,
                e + 2
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(unix_now() < boundary + EPOCH_SECS as f64, "the checks ran into the following epoch");

    Arc::into_inner(client).unwrap().shutdown().await;
    net.shutdown().await;
    eprintln!("rotation test took {:?}", started.elapsed());
}
