//! Clients against an entry's shares, over real libp2p connections on
//! loopback: clients that claim replies and stop reading cannot pin more than
//! the client-link budget and are disconnected, while a client that reads is
//! served; a client flooding reply claims is told which it did not get, and
//! the other claimants still get theirs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use libp2p::PeerId;
use nox_client::echo_request;
use nox_net::p2p::{MAX_REPLY_CLAIMS, PeerKind};
use nox_net::raw_peer::{CLAIM_TIMEOUT, OnReceive, RawPeer, RawPeerError};
use nox_node::localnet::LocalNet;
use nox_protocol::fragment::MAX_SHARD_LEN;
use nox_protocol::sphinx::PACKET_LEN;

const POW_BITS: u8 = 4;
/// The client-link budget of the entry under test, in packets.
const BUDGET_PACKETS: usize = 64;

fn peer(net: &LocalNet, idx: usize) -> PeerId {
    net.nodes[idx].running.as_ref().unwrap().peer_id
}

fn metrics(net: &LocalNet, idx: usize) -> &nox_node::metrics::Metrics {
    &net.nodes[idx].running.as_ref().unwrap().metrics
}

/// A client that claims and never reads what the entry pushes.
async fn stalled_client(net: &LocalNet, gw: usize) -> RawPeer {
    let client = RawPeer::start_with(
        libp2p::identity::Keypair::generate_ed25519(),
        Vec::new(),
        PeerKind::Client,
        OnReceive::Stall,
    )
    .await
    .unwrap();
    let g = net.nodes[gw].running.as_ref().unwrap();
    client.connect(g.peer_id, g.listen_addrs.clone(), Duration::from_secs(10)).await.unwrap();
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_that_stop_reading_pin_at_most_the_budget_and_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let net = LocalNet::start_ready(dir.path(), [1, 1, 1], 7, |i, c| {
        if i == 0 {
            c.egress.client_queue_bytes = BUDGET_PACKETS * PACKET_LEN;
            c.egress.client_write_timeout_ms = 3_000;
        }
    })
    .await
    .unwrap();
    let (gw, mx, ex) = (net.layer(0)[0], net.layer(1)[0], net.layer(2)[0]);
    let gwp = peer(&net, gw);
    let (epoch, fwd) = net.route(&[gw, mx, ex], 0).unwrap();
    let (_, back) = net.route(&[mx, gw], 0).unwrap();

    // Four clients each ask for three echoes of 21 reply packets (11 data
    // shards, padded to 16, and 5 parity) and never read them: 252 packets
    // for a budget of 64.
    let data = vec![0x42u8; 11 * MAX_SHARD_LEN - 100];
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let client = stalled_client(&net, gw).await;
        for _ in 0..3 {
            let req = echo_request(epoch, &fwd, &back, 21, data.clone()).unwrap();
            client.claim_replies(gwp, req.surb_keys.iter().map(|k| k.surb_id()).collect()).await.unwrap();
            for (_, packet) in &req.packets {
                client.submit(gwp, packet, POW_BITS).await.unwrap();
            }
        }
        stalled.push(client);
    }
    let m = metrics(&net, gw);
    let pinned = m.queue_depth("client_links");
    let refused = || m.dropped_value("egress", "client_share_full") + m.dropped_value("egress", "client_budget_full");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut peak = 0;
    while refused() == 0 && Instant::now() < deadline {
        peak = peak.max(pinned.get());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused() > 0, "the stalled clients never reached their shares: {}", m.render());

    // Meanwhile a client that reads is served.
    let honest = net.client(gw).await.unwrap();
    let req = echo_request(epoch, &fwd, &back, 1, b"still served".to_vec()).unwrap();
    assert_eq!(
        req.round_trip(&honest, gwp, POW_BITS, Duration::from_secs(10)).await.ok().as_deref(),
        Some(&b"still served"[..])
    );

    // Every stalled client is disconnected (a write past the deadline, or a
    // share held without progress), and what was queued for them is let go.
    let cut_off = || {
        m.event("client_link", "disconnected_write_timeout").get()
            + m.event("client_link", "disconnected_stalled").get()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while (cut_off() < 4 || pinned.get() > 0) && Instant::now() < deadline {
        peak = peak.max(pinned.get());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(cut_off() >= 4, "{}", m.render());
    assert_eq!(pinned.get(), 0, "packets still pinned after the clients were cut off");
    // A client adds a packet only while it holds less than half of what the
    // others leave free, so together they stay below the budget: 32 + 16 +
    // 8 + 4 = 60 when they fill one after the other, a little more when a
    // client's packets leave for its socket buffer in between (and a later
    // client's half is then larger), never 64.
    assert!(peak > 0 && peak < BUDGET_PACKETS as i64, "peak {peak} packets pinned for a budget of {BUDGET_PACKETS}");
    assert!(m.dropped_value("egress", "client_write_timeout") > 0, "{}", m.render());

    // And the honest client is still served afterwards.
    let req = echo_request(epoch, &fwd, &back, 1, b"and after".to_vec()).unwrap();
    assert_eq!(
        req.round_trip(&honest, gwp, POW_BITS, Duration::from_secs(10)).await.ok().as_deref(),
        Some(&b"and after"[..])
    );
    for c in stalled {
        c.shutdown().await;
    }
    honest.shutdown().await;
    net.shutdown().await;
}

/// `n` distinct SURB ids marked with `tag`.
fn ids(tag: u8, n: usize) -> Vec<[u8; 32]> {
    (0..n as u32)
        .map(|i| {
            let mut id = [tag; 32];
            id[..4].copy_from_slice(&i.to_be_bytes());
            id
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_flood_is_answered_with_its_refusals_and_other_claimants_get_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let net = LocalNet::start_ready(dir.path(), [1, 1, 1], 7, |_, _| {}).await.unwrap();
    let (gw, mx, ex) = (net.layer(0)[0], net.layer(1)[0], net.layer(2)[0]);
    let gwp = peer(&net, gw);

    // One client claims as much as it can: four full requests. It holds its
    // share (1,024 by default) and is told, id by id, what it did not get.
    let flooder = net.client(gw).await.unwrap();
    let mut held = 0;
    for round in 0..4u8 {
        let claim = ids(round, MAX_REPLY_CLAIMS);
        let answer = flooder.claim_replies_answer(gwp, claim.clone(), CLAIM_TIMEOUT).await.unwrap();
        assert!(answer.refused.iter().all(|id| claim.contains(id)));
        held += answer.accepted;
    }
    assert_eq!(held, 1024);
    let err = flooder.claim_replies(gwp, ids(9, 5)).await.unwrap_err();
    assert!(matches!(err, RawPeerError::ClaimsRefused { refused: 5, claimed: 5, .. }), "{err}");
    // Claiming an id another claimant holds is refused too.
    let err = net.client(gw).await.unwrap().claim_replies(gwp, ids(0, 1)).await.unwrap_err();
    assert!(matches!(err, RawPeerError::ClaimsRefused { refused: 1, claimed: 1, .. }), "{err}");

    // Four more claimants get every claim, and their replies come back.
    let (epoch, fwd) = net.route(&[gw, mx, ex], 0).unwrap();
    let (_, back) = net.route(&[mx, gw], 0).unwrap();
    for n in 0..4u8 {
        let client = net.client(gw).await.unwrap();
        let claim = ids(100 + n, 200);
        let answer = client.claim_replies_answer(gwp, claim, CLAIM_TIMEOUT).await.unwrap();
        assert_eq!((answer.accepted, answer.refused.len()), (200, 0), "claimant {n}");
        let req = echo_request(epoch, &fwd, &back, 1, vec![n; 16]).unwrap();
        assert_eq!(req.round_trip(&client, gwp, POW_BITS, Duration::from_secs(10)).await.ok(), Some(vec![n; 16]));
        client.shutdown().await;
    }
    let m = metrics(&net, gw);
    assert!(m.event("reply_claim", "refused").get() >= 3 * 1024 + 6, "{}", m.render());
    flooder.shutdown().await;
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_whose_claims_are_refused_is_told_and_is_served_once_there_is_room() {
    use nox_client::{Client, ClientConfig, ClientError, StaticMember, TopologySource};
    let dir = tempfile::tempdir().unwrap();
    // A small claim table: 8 claims, at most 3 per claimant.
    let net = LocalNet::start_ready(dir.path(), [1, 1, 1], 7, |i, c| {
        if i == 0 {
            c.egress.reply_mailbox = 8;
            c.egress.reply_claims_per_peer = 3;
        }
    })
    .await
    .unwrap();
    let gw = net.layer(0)[0];
    let gwp = peer(&net, gw);
    // Greedy claimants take 3, 2, 1 and 1 of the 8 claims: what they leave
    // free is too little to share.
    let mut greedy = Vec::new();
    for (n, expect) in [3, 2, 1, 1].into_iter().enumerate() {
        let g = net.client(gw).await.unwrap();
        let answer = g.claim_replies_answer(gwp, ids(n as u8, 4), CLAIM_TIMEOUT).await.unwrap();
        assert_eq!(answer.accepted, expect, "greedy claimant {n}");
        greedy.push(g);
    }
    let members = net
        .nodes
        .iter()
        .map(|n| StaticMember {
            node_id: format!("0x{}", hex::encode(n.keys.node_id())),
            layer: n.config.node.layer,
            address: n.running.as_ref().unwrap().listen_addrs[0].to_string(),
        })
        .collect();
    let mut cfg = ClientConfig::new(TopologySource::Static(members));
    cfg.pow_bits = net.nodes[0].config.ingest.pow_bits;
    cfg.epoch_secs = net.nodes[0].config.network.epoch_secs;
    cfg.mean_delay = Duration::from_millis(1);
    cfg.attempt_timeout = Duration::from_secs(10);
    let client = Client::connect(cfg).await.unwrap();
    // Its request's only SURB would not be pushed: the request is not sent,
    // and the refusal says so instead of a timeout.
    match client.echo(b"no room".to_vec()).await {
        Err(ClientError::Entry(RawPeerError::ClaimsRefused { refused: 1, claimed: 1, .. })) => {}
        other => panic!("expected the entry's refusal, got {other:?}"),
    }
    // The greedy claimants leave (their claims go with them): the same client is served.
    for g in greedy {
        g.shutdown().await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.echo(b"room again".to_vec()).await {
            Ok(answer) => {
                assert_eq!(answer, b"room again");
                break;
            }
            Err(ClientError::Entry(RawPeerError::ClaimsRefused { .. })) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    client.shutdown().await;
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_reads_too_slowly_to_drain_its_share_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let net = LocalNet::start_ready(dir.path(), [1, 1, 1], 7, |i, c| {
        if i == 0 {
            c.egress.client_queue_bytes = BUDGET_PACKETS * PACKET_LEN;
            c.egress.client_write_timeout_ms = 1_500;
        }
    })
    .await
    .unwrap();
    let (gw, mx, ex) = (net.layer(0)[0], net.layer(1)[0], net.layer(2)[0]);
    let gwp = peer(&net, gw);
    let (epoch, fwd) = net.route(&[gw, mx, ex], 0).unwrap();
    let (_, back) = net.route(&[mx, gw], 0).unwrap();
    // Ten packets a second: each write finishes well within the deadline, but
    // a burst of 21 reply packets every half second keeps its queue at its
    // share (32 of the 64).
    let slow = RawPeer::start_with(
        libp2p::identity::Keypair::generate_ed25519(),
        Vec::new(),
        PeerKind::Client,
        OnReceive::Trickle(1024, Duration::from_millis(100)),
    )
    .await
    .unwrap();
    let g = net.nodes[gw].running.as_ref().unwrap();
    slow.connect(g.peer_id, g.listen_addrs.clone(), Duration::from_secs(10)).await.unwrap();
    let m = metrics(&net, gw);
    let stalled = m.event("client_link", "disconnected_stalled");
    let data = vec![0x17u8; 11 * MAX_SHARD_LEN - 100];
    let deadline = Instant::now() + Duration::from_secs(20);
    while stalled.get() == 0 && Instant::now() < deadline {
        let req = echo_request(epoch, &fwd, &back, 21, data.clone()).unwrap();
        if slow.claim_replies(gwp, req.surb_keys.iter().map(|k| k.surb_id()).collect()).await.is_err() {
            break;
        }
        for (_, packet) in &req.packets {
            let _ = slow.submit(gwp, packet, POW_BITS).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(stalled.get(), 1, "{}", m.render());
    assert!(slow.received() > 0, "the slow client did read some");
    let pinned = m.queue_depth("client_links");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pinned.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pinned.get(), 0, "its queue was let go");
    slow.shutdown().await;
    net.shutdown().await;
}
