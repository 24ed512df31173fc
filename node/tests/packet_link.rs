//! Packet links between real nodes on loopback (`nox_net::packet_link`,
//! protocol §10.5): the nodes of a network relay over links, a node with
//! links off still interoperates, offers go only to peers admitted as nodes,
//! a tampered frame ends its link (and nothing else), a ticket is good once,
//! and a link's frames that are not Sphinx packets die at the workers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures::AsyncReadExt as _;
use libp2p::PeerId;
use nox_client::echo_request;
use nox_net::p2p::{self, PeerKind};
use nox_net::packet_link::{self, FRAME_LEN, LinkError, LinkWriter, OFFER_LEN, Offer, PACKET_LINK_PROTOCOL};
use nox_net::raw_peer::RawPeer;
use nox_node::config::NodeConfig;
use nox_node::localnet::LocalNet;
use nox_protocol::sphinx::PACKET_LEN;
use rand::RngCore;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const POW_BITS: u8 = 4;
const WAIT: Duration = Duration::from_secs(10);

/// Layers [1, 1, 1]: entry 0, mix node 1, exit 2.
async fn net(dir: &std::path::Path, tweak: impl Fn(usize, &mut NodeConfig)) -> LocalNet {
    LocalNet::start_ready(dir, [1, 1, 1], 7, tweak).await.unwrap()
}

fn peer(net: &LocalNet, idx: usize) -> PeerId {
    net.nodes[idx].running.as_ref().unwrap().peer_id
}

fn metrics(net: &LocalNet, idx: usize) -> &nox_node::metrics::Metrics {
    &net.nodes[idx].running.as_ref().unwrap().metrics
}

fn link_event(net: &LocalNet, idx: usize, outcome: &'static str) -> u64 {
    metrics(net, idx).event_value("packet_link", outcome)
}

fn dropped(net: &LocalNet, idx: usize, stage: &'static str, reason: &'static str) -> u64 {
    metrics(net, idx).dropped_value(stage, reason)
}

/// Packets the workers of node `idx` dropped as not Sphinx packets of theirs.
fn worker_rejects(net: &LocalNet, idx: usize) -> u64 {
    ["no_epoch_key", "bad_mac", "malformed"].iter().map(|r| dropped(net, idx, "worker", r)).sum()
}

/// Polls `cond` every 20 ms for up to `WAIT`; whether it held.
async fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// An echo request from a fresh client through entry, mix node and exit,
/// and back through the mix node; asserts the answer.
async fn echo(net: &LocalNet, data: &[u8]) {
    let (gw, mx, ex) = (net.layer(0)[0], net.layer(1)[0], net.layer(2)[0]);
    let client = net.client(gw).await.unwrap();
    let (epoch, fwd) = net.route(&[gw, mx, ex], 0).unwrap();
    let (_, back) = net.route(&[mx, gw], 0).unwrap();
    let req = echo_request(epoch, &fwd, &back, 1, data.to_vec()).unwrap();
    let answer = req.round_trip(&client, peer(net, gw), POW_BITS, WAIT).await;
    assert_eq!(answer.ok().as_deref(), Some(data));
    client.shutdown().await;
}

/// A raw peer that node `idx` admits as a node: its identity is put into
/// that node's topology before it says hello.
async fn admitted_node(net: &LocalNet, idx: usize) -> RawPeer {
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let id = p2p::node_id_of(&keypair.public().to_peer_id()).unwrap();
    let running = net.nodes[idx].running.as_ref().unwrap();
    running.topology.add_static(id, 1, Vec::new());
    let raw = RawPeer::start(keypair, Vec::new(), PeerKind::Node, 16).await.unwrap();
    raw.connect(running.peer_id, running.listen_addrs.clone(), WAIT).await.unwrap();
    raw
}

/// Asks `node` for a packet link at 127.0.0.1.
async fn request_link(raw: &RawPeer, node: PeerId) -> Result<LinkWriter, LinkError> {
    let hosts = ["127.0.0.1".to_string()];
    tokio::time::timeout(WAIT, packet_link::request_link(&mut raw.p2p.streams.clone(), node, &hosts))
        .await
        .expect("link request timed out")
}

/// Asks `node` for an offer by hand and reads it; `None` when the node
/// closes the stream without one.
async fn ask_offer(raw: &RawPeer, node: PeerId) -> Option<Offer> {
    let mut stream = raw.p2p.streams.clone().open_stream(node, PACKET_LINK_PROTOCOL).await.unwrap();
    let mut encoded = [0u8; OFFER_LEN];
    match tokio::time::timeout(WAIT, stream.read_exact(&mut encoded)).await.expect("offer timed out") {
        Ok(()) => Some(Offer::decode(&encoded).unwrap()),
        Err(_) => None,
    }
}

/// Connects to the node's link port and presents `ticket`; the 16 bytes it
/// answers with, or `None` when it closes the connection instead.
async fn present(port: u16, ticket: [u8; 16]) -> (TcpStream, Option<[u8; 16]>) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(&ticket).await.unwrap();
    let mut answer = [0u8; 16];
    let read = tokio::time::timeout(WAIT, tcp.read_exact(&mut answer)).await.expect("no answer to a ticket");
    (tcp, read.ok().map(|_| answer))
}

/// Whether the node has closed `tcp`: a read ends (0 bytes or an error).
async fn closed(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(tokio::time::timeout(WAIT, tcp.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

/// Sends a fresh echo request (first hop: the entry) on `link`, as a node
/// relaying it would, and waits for its answer at a client that claimed the
/// reply at the entry.
async fn echo_over_link(net: &LocalNet, link: &mut LinkWriter, data: &[u8]) {
    let (gw, mx, ex) = (net.layer(0)[0], net.layer(1)[0], net.layer(2)[0]);
    let client = net.client(gw).await.unwrap();
    let (epoch, fwd) = net.route(&[gw, mx, ex], 0).unwrap();
    let (_, back) = net.route(&[mx, gw], 0).unwrap();
    let req = echo_request(epoch, &fwd, &back, 1, data.to_vec()).unwrap();
    client.claim_replies(peer(net, gw), req.surb_keys.iter().map(|k| k.surb_id()).collect()).await.unwrap();
    for (_, packet) in &req.packets {
        link.send(packet.as_bytes()).await.unwrap();
    }
    let reply = req.await_reply(&client, WAIT).await.unwrap();
    assert_eq!(reply.data, data);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_relay_over_packet_links() {
    let dir = tempfile::tempdir().unwrap();
    let net = net(dir.path(), |_, _| {}).await;
    let (gw, mx, ex) = (net.layer(0)[0], net.layer(1)[0], net.layer(2)[0]);
    echo(&net, b"over links").await;

    let render = |i| metrics(&net, i).render();
    // Entry → mix node, mix node → exit and (the reply) → entry, exit → mix node.
    for (i, name) in [(gw, "entry"), (mx, "mix node"), (ex, "exit")] {
        assert!(link_event(&net, i, "opened") > 0, "the {name} opened no link: {}", render(i));
        assert!(link_event(&net, i, "accepted") > 0, "the {name} accepted no link: {}", render(i));
        assert_eq!(link_event(&net, i, "fallback"), 0, "the {name} fell back: {}", render(i));
        for outcome in ["unknown_ticket", "handshake_timeout", "busy", "offers_refused"] {
            assert_eq!(link_event(&net, i, outcome), 0, "{outcome} at the {name}");
        }
        assert_eq!(metrics(&net, i).total_dropped(), 0, "the {name} dropped: {}", render(i));
    }
    // A second request reuses the links.
    let opened: Vec<u64> = [gw, mx, ex].iter().map(|&i| link_event(&net, i, "opened")).collect();
    echo(&net, b"again").await;
    let again: Vec<u64> = [gw, mx, ex].iter().map(|&i| link_event(&net, i, "opened")).collect();
    assert_eq!(opened, again, "links were opened anew");
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_links_off_is_relayed_to_on_streams() {
    let dir = tempfile::tempdir().unwrap();
    let net = net(dir.path(), |_, c| {
        if c.node.layer == 1 {
            c.p2p.packet_link = false;
        }
    })
    .await;
    let (gw, mx, ex) = (net.layer(0)[0], net.layer(1)[0], net.layer(2)[0]);
    echo(&net, b"mixed").await;

    let render = |i| metrics(&net, i).render();
    // The entry and the exit asked the mix node for a link and fell back.
    for (i, name) in [(gw, "entry"), (ex, "exit")] {
        assert!(link_event(&net, i, "fallback") >= 1, "the {name} did not fall back: {}", render(i));
        assert_eq!(link_event(&net, i, "opened"), 0, "the {name} opened a link: {}", render(i));
        // The mix node relayed to them on streams.
        assert_eq!(link_event(&net, i, "accepted"), 0, "the {name} accepted a link: {}", render(i));
    }
    // The mix node neither asks for links nor offers them.
    for outcome in ["opened", "fallback", "accepted"] {
        assert_eq!(link_event(&net, mx, outcome), 0, "{outcome} at the mix node: {}", render(mx));
    }
    for i in [gw, mx, ex] {
        assert_eq!(metrics(&net, i).total_dropped(), 0, "node {i} dropped: {}", render(i));
    }
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn links_are_offered_to_admitted_nodes_only() {
    let dir = tempfile::tempdir().unwrap();
    let net = net(dir.path(), |_, _| {}).await;
    let gw = net.layer(0)[0];
    let gwp = peer(&net, gw);

    // A peer admitted as a node gets a link, and the entry relays what it
    // sends on it.
    let node = admitted_node(&net, gw).await;
    let accepted = link_event(&net, gw, "accepted");
    let mut link = request_link(&node, gwp).await.expect("an admitted node gets a link");
    assert!(wait_for(|| link_event(&net, gw, "accepted") == accepted + 1).await);
    echo_over_link(&net, &mut link, b"from a raw node").await;

    // A client is not offered one: the stream closes with nothing written.
    // (The echo's reply came to the entry on the mix node's link.)
    let accepted = link_event(&net, gw, "accepted");
    let client = net.client(gw).await.unwrap();
    let refused = request_link(&client, gwp).await;
    assert!(matches!(refused, Err(LinkError::NotConfirmed)), "{refused:?}");
    assert!(wait_for(|| link_event(&net, gw, "offer_not_admitted") == 1).await);
    assert_eq!(dropped(&net, gw, "ingest", "stream_not_admitted"), 0, "not a packet stream");
    assert_eq!(link_event(&net, gw, "accepted"), accepted);
    assert_eq!(link_event(&net, gw, "offers_refused"), 0, "the client got no ticket to be refused");

    link.close().await.unwrap();
    node.shutdown().await;
    client.shutdown().await;
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tampered_frame_ends_its_link_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let net = net(dir.path(), |_, _| {}).await;
    let gw = net.layer(0)[0];
    let gwp = peer(&net, gw);
    let node = admitted_node(&net, gw).await;

    // The handshake by hand: offer, ticket, confirmation.
    let offer = ask_offer(&node, gwp).await.expect("an admitted node gets an offer");
    let (mut tcp, confirmation) = present(offer.port, offer.ticket_id()).await;
    assert_eq!(confirmation, Some(offer.confirmation()));
    assert!(wait_for(|| link_event(&net, gw, "accepted") >= 1).await);

    // One frame not sealed under the link's key.
    let mut frame = vec![0u8; FRAME_LEN];
    rand::rngs::OsRng.fill_bytes(&mut frame);
    tcp.write_all(&frame).await.unwrap();
    assert!(wait_for(|| dropped(&net, gw, "ingest", "link_tampered") == 1).await);
    assert!(closed(&mut tcp).await, "the node kept the tampered link open");
    assert_eq!(worker_rejects(&net, gw), 0, "the tampered frame reached the workers");

    // The entry keeps relaying: for the same peer on a new link, and for clients.
    let mut link = request_link(&node, gwp).await.expect("a new link after a tampered one");
    echo_over_link(&net, &mut link, b"after tampering").await;
    echo(&net, b"still relaying").await;
    assert_eq!(dropped(&net, gw, "ingest", "link_tampered"), 1);

    link.close().await.unwrap();
    node.shutdown().await;
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tickets_are_good_once_and_unknown_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let net = net(dir.path(), |_, _| {}).await;
    let gw = net.layer(0)[0];
    let gwp = peer(&net, gw);
    let node = admitted_node(&net, gw).await;
    let offer = ask_offer(&node, gwp).await.expect("an admitted node gets an offer");

    // A ticket the node never issued.
    let mut forged = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut forged);
    let (mut tcp, answer) = present(offer.port, forged).await;
    assert_eq!(answer, None, "an unknown ticket was confirmed");
    assert!(closed(&mut tcp).await);
    assert!(wait_for(|| link_event(&net, gw, "unknown_ticket") == 1).await);

    // The real one, once: confirmed. Twice: refused.
    let (mut first, answer) = present(offer.port, offer.ticket_id()).await;
    assert_eq!(answer, Some(offer.confirmation()));
    let (mut second, answer) = present(offer.port, offer.ticket_id()).await;
    assert_eq!(answer, None, "a ticket was confirmed twice");
    assert!(closed(&mut second).await);
    assert!(wait_for(|| link_event(&net, gw, "unknown_ticket") == 2).await);
    assert!(wait_for(|| link_event(&net, gw, "accepted") == 1).await);

    // The first link is still the node's: a frame sealed under another key ends it.
    let mut frame = vec![0u8; FRAME_LEN];
    rand::rngs::OsRng.fill_bytes(&mut frame);
    first.write_all(&frame).await.unwrap();
    assert!(wait_for(|| dropped(&net, gw, "ingest", "link_tampered") == 1).await);
    assert!(closed(&mut first).await);

    // A peer holds two unused tickets at most: a third offer is refused,
    // with the stream closed.
    let hoarder = admitted_node(&net, gw).await;
    assert!(ask_offer(&hoarder, gwp).await.is_some());
    assert!(ask_offer(&hoarder, gwp).await.is_some());
    assert!(ask_offer(&hoarder, gwp).await.is_none(), "a third outstanding ticket was offered");
    assert!(wait_for(|| link_event(&net, gw, "offers_refused") == 1).await);

    // The node keeps running.
    echo(&net, b"tickets").await;
    let mut link = request_link(&node, gwp).await.expect("a link after the refusals");
    echo_over_link(&net, &mut link, b"a fresh ticket").await;
    assert_eq!(link_event(&net, gw, "unknown_ticket"), 2);

    link.close().await.unwrap();
    node.shutdown().await;
    hoarder.shutdown().await;
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frames_that_are_not_sphinx_packets_are_dropped_by_the_workers() {
    const GARBAGE: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let net = net(dir.path(), |_, _| {}).await;
    let gw = net.layer(0)[0];
    let gwp = peer(&net, gw);
    let node = admitted_node(&net, gw).await;
    let mut link = request_link(&node, gwp).await.expect("an admitted node gets a link");

    // Authentic frames, random packets.
    let before = worker_rejects(&net, gw);
    assert_eq!(before, 0);
    for _ in 0..GARBAGE {
        let mut packet = [0u8; PACKET_LEN];
        rand::rngs::OsRng.fill_bytes(&mut packet);
        link.send(&packet).await.unwrap();
    }
    assert!(wait_for(|| worker_rejects(&net, gw) == GARBAGE).await, "{}", metrics(&net, gw).render());
    // Dropped at the workers, nowhere else: not as a broken link.
    assert_eq!(metrics(&net, gw).total_dropped(), GARBAGE, "{}", metrics(&net, gw).render());

    // The link is still read: a real packet on it goes through.
    echo_over_link(&net, &mut link, b"after garbage").await;
    assert_eq!(worker_rejects(&net, gw), GARBAGE);

    link.close().await.unwrap();
    node.shutdown().await;
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_packet_link_port_in_use_stops_the_start_with_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let started = LocalNet::start_ready(dir.path(), [1, 1, 1], 7, |i, cfg| {
        if i == 0 {
            cfg.p2p.packet_link_listen = Some(addr.clone());
        }
    })
    .await;
    match started {
        Err(nox_node::node::NodeError::Config(msg)) => {
            assert!(msg.contains("p2p.packet_link_listen") && msg.contains(&addr), "{msg}")
        }
        Err(other) => panic!("not a configuration error: {other}"),
        Ok(_) => panic!("a node started on a packet link port already in use"),
    }
}
