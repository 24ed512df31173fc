//! End-to-end tests on a whole devnet: anvil, the contracts deployed by the
//! forge script, staked nodes registered in NoxRegistry that learn the
//! topology only from the chain. Needs `npm ci` (scripts/test runs it first).
//!
//! The tests run one at a time (each brings up its own chain and nodes; two
//! 2-core machines' worth of nodes at once would only make them slower).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use alloy_primitives::U256;
use nox_client::ReplyError;
use nox_devnet::{Devnet, DevnetOptions, Launch};
use nox_net::p2p::PeerKind;
use nox_net::raw_peer::RawPeer;
use nox_protocol::NodeId;
use nox_protocol::contracts::topology_fingerprint;

/// Held by each test for its whole run (tokio's mutex: each test has its own runtime).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The value of one exact series (`name{labels}`) in Prometheus text, 0 if absent.
fn series(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

fn opts(per_layer: [usize; 3]) -> DevnetOptions {
    nox_node::localnet::init_test_logging();
    DevnetOptions { per_layer, ..DevnetOptions::default() }
}

/// Sends one echo request from a fresh client through `via`, answered back
/// through `back`, and returns the answer or why there was none.
async fn echo(net: &Devnet, via: &[usize], back: &[usize], timeout: Duration) -> Result<Vec<u8>, ReplyError> {
    let request = net.echo(via, back, b"ping".to_vec()).await.unwrap();
    let client = net.client(via[0]).await.unwrap();
    let gw = &net.nodes[via[0]];
    request.round_trip(&client, gw.peer_id, gw.config.ingest.pow_bits, timeout).await
}

fn process_alive(pid: u32) -> bool {
    // Zombies are reaped by the devnet; a live process has a /proc entry that is not a zombie.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Nine `nox run` processes with no `[[topology.nodes]]` find each other
/// through NoxRegistry alone, agree with its fingerprint, carry a request
/// entry → mix → exit, and leave no process behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_find_each_other_only_through_the_chain() {
    let _g = SERIAL.lock().await;
    let net = Devnet::start(DevnetOptions { launch: Launch::Processes, ..opts([3, 3, 3]) }).await.unwrap();
    assert_eq!(net.nodes.len(), 9);
    for n in &net.nodes {
        assert!(n.config.topology.nodes.is_empty(), "node {} was told about peers", n.index);
        assert!(n.config.chain.enabled());
    }

    // Every node's view: the nine registered nodes, with the registry's stake and operator.
    let operators: Vec<_> = net.nodes.iter().map(|n| n.operator()).collect();
    assert_eq!(net.registry_fingerprint().await.unwrap(), topology_fingerprint(&operators));
    for n in &net.nodes {
        let topo = net.topology_of(n.index).await.unwrap();
        assert_eq!(topo.nodes.len(), 9, "node {} sees {} nodes", n.index, topo.nodes.len());
        for m in &net.nodes {
            let rec = topo.node(&m.id()).unwrap();
            assert_eq!(rec.operator, Some(m.operator()));
            assert_eq!(rec.stake, Some(U256::from(10u64).pow(U256::from(21u64))));
            assert_eq!(rec.layer, m.layer());
            assert_eq!(rec.addresses[0], m.multiaddr);
        }
        let metrics = net.metrics_of(n.index).await.unwrap();
        assert_eq!(series(&metrics, "nox_chain{value=\"fingerprint_mismatch\"}"), 0.0);
        assert_eq!(series(&metrics, "nox_chain{value=\"active_nodes\"}"), 9.0);
        assert_eq!(series(&metrics, "nox_chain{value=\"rpc_up\"}"), 1.0);
    }

    let (e, m, x) = (net.layer(0)[1], net.layer(1)[2], net.layer(2)[0]);
    let answer = echo(&net, &[e, m, x], &[x, m, e], Duration::from_secs(20)).await.unwrap();
    assert_eq!(answer, b"ping");

    let pids: Vec<u32> = net.nodes.iter().filter_map(|n| n.pid()).chain([net.anvil.pid()]).collect();
    assert_eq!(pids.len(), 10);
    net.shutdown().await;
    for pid in pids {
        assert!(!process_alive(pid), "process {pid} outlived the devnet");
    }
}

/// A mix node registered while the network runs is picked up by everyone and
/// carries traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_registered_while_running_receives_traffic() {
    let _g = SERIAL.lock().await;
    let mut net = Devnet::start(opts([1, 1, 1])).await.unwrap();
    let new = net.prepare_node(1).unwrap();
    net.register(new).await.unwrap();
    net.start_node(new).await.unwrap();
    net.wait_converged(Duration::from_secs(30)).await.unwrap();

    let before = net.nodes[new].running().unwrap().metrics.packets_value("worker", "forward");
    let (e, x) = (net.layer(0)[0], net.layer(2)[0]);
    let answer = echo(&net, &[e, new, x], &[x, new, e], Duration::from_secs(20)).await.unwrap();
    assert_eq!(answer, b"ping");
    let after = net.nodes[new].running().unwrap().metrics.packets_value("worker", "forward");
    assert!(after >= before + 2, "the new node forwarded the request and its reply ({before} → {after})");
    net.shutdown().await;
}

/// A node slashed below the minimum stake leaves every route and connection
/// within a poll interval: a packet routed through it is refused at the hop
/// before, and it processes nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slashed_node_stops_receiving_traffic() {
    let _g = SERIAL.lock().await;
    let mut net = Devnet::start(opts([1, 2, 1])).await.unwrap();
    let (e, x) = (net.layer(0)[0], net.layer(2)[0]);
    let (bad, good) = (net.layer(1)[0], net.layer(1)[1]);
    assert_eq!(echo(&net, &[e, bad, x], &[x, bad, e], Duration::from_secs(20)).await.unwrap(), b"ping");

    // The request is built while the entry still holds the node's key.
    let request = net.echo(&[e, bad, x], &[x, good, e], b"late".to_vec()).await.unwrap();
    let bad_id = net.nodes[bad].id();
    net.slash(bad).await.unwrap();
    let slashed_at = Instant::now();
    for viewer in [e, good, x] {
        net.wait_view(viewer, Duration::from_secs(5), |v| v.iter().all(|(id, _)| *id != bad_id)).await.unwrap();
    }
    // poll_interval_ms is 250: a few intervals at most, even on a loaded machine.
    assert!(slashed_at.elapsed() < Duration::from_secs(5));

    let entry = net.nodes[e].running().unwrap();
    let refused_before = entry.metrics.dropped_value("egress", "bad_next_hop");
    let forwarded_before = net.nodes[bad].running().unwrap().metrics.packets_value("worker", "forward");
    let client = net.client(e).await.unwrap();
    let gw = &net.nodes[e];
    let outcome = request.round_trip(&client, gw.peer_id, gw.config.ingest.pow_bits, Duration::from_secs(3)).await;
    assert!(matches!(outcome, Err(ReplyError::Timeout)), "{outcome:?}");
    let entry = net.nodes[e].running().unwrap();
    assert!(
        entry.metrics.dropped_value("egress", "bad_next_hop") > refused_before,
        "the entry refused the hop: {}",
        entry.metrics.render()
    );
    assert_eq!(net.nodes[bad].running().unwrap().metrics.packets_value("worker", "forward"), forwarded_before);
    // The slashed node may still try: nobody admits it any more.
    let peers = net.nodes[e].running().unwrap().metrics.render();
    assert_eq!(series(&peers, "nox_chain{value=\"active_nodes\"}"), 3.0);

    // The rest of the network carries on.
    assert_eq!(echo(&net, &[e, good, x], &[x, good, e], Duration::from_secs(20)).await.unwrap(), b"ping");
    net.shutdown().await;
}

/// A libp2p peer whose identity is not registered is refused at the
/// handshake, and nothing it sends is processed — neither as a node nor over
/// the node packet protocol; a full `nox` node that is not registered is not
/// let in either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_peer_cannot_get_a_packet_through() {
    let _g = SERIAL.lock().await;
    let mut net = Devnet::start(opts([1, 1, 1])).await.unwrap();
    let (e, m, x) = (net.layer(0)[0], net.layer(1)[0], net.layer(2)[0]);
    let request = net.echo(&[e, m, x], &[x, m, e], b"sneak".to_vec()).await.unwrap();
    let entry_addr = net.nodes[e].multiaddr.parse().unwrap();

    let intruder =
        RawPeer::start(libp2p::identity::Keypair::generate_ed25519(), Vec::new(), PeerKind::Node, 64).await.unwrap();
    let refused = intruder.connect(net.nodes[e].peer_id, vec![entry_addr], Duration::from_secs(5)).await;
    assert!(refused.is_err(), "an unregistered node was welcomed");
    for (_, packet) in &request.packets {
        // The send may fail (the entry closes the connection) or be dropped: either way nothing is processed.
        let _ = intruder.send_packet(net.nodes[e].peer_id, packet).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let entry = net.nodes[e].running().unwrap();
    assert_eq!(entry.metrics.packets_value("worker", "forward"), 0);
    let text = entry.metrics.render();
    assert!(series(&text, "nox_events_total{kind=\"handshake\",outcome=\"unknown_node\"}") >= 1.0, "{text}");
    assert_eq!(net.nodes[x].running().unwrap().metrics.packets_value("exit", "served"), 0);

    // A real node with keys nobody registered: it reads the chain and dials
    // everyone, and everyone refuses it.
    let outsider = net.prepare_node(1).unwrap();
    net.start_node(outsider).await.unwrap();
    let out_id: NodeId = net.nodes[outsider].id();
    tokio::time::sleep(Duration::from_secs(4)).await;
    for idx in [e, m, x] {
        let r = net.nodes[idx].running().unwrap();
        assert!(!r.topology.contains(&out_id), "node {idx} took the outsider in");
        let text = r.metrics.render();
        assert!(series(&text, "nox_events_total{kind=\"handshake\",outcome=\"unknown_node\"}") >= 1.0);
        assert_eq!(series(&text, "nox_peers{tier=\"node\"}"), 2.0, "node {idx} admitted only its two registered peers");
    }
    net.shutdown().await;
}

/// A node stopped and started again resumes from its stored chain progress
/// (it knows the network before its endpoint answers) and its replay caches
/// (a packet it already processed is refused), then catches up with what
/// happened on chain while it was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_resumes_from_stored_progress_and_replay_caches() {
    let _g = SERIAL.lock().await;
    let mut net = Devnet::start(opts([1, 1, 1])).await.unwrap();
    let (e, m, x) = (net.layer(0)[0], net.layer(1)[0], net.layer(2)[0]);
    let request = net.echo(&[e, m, x], &[x, m, e], b"once".to_vec()).await.unwrap();
    let client = net.client(e).await.unwrap();
    let (peer, bits) = (net.nodes[e].peer_id, net.nodes[e].config.ingest.pow_bits);
    assert_eq!(request.round_trip(&client, peer, bits, Duration::from_secs(20)).await.unwrap(), b"once");
    drop(client);

    // Restart the entry with its endpoint unreachable.
    net.stop_node(e).await;
    let live_url = net.nodes[e].config.chain.rpc_url.clone();
    let dead_port = nox_devnet::anvil::free_port().unwrap();
    net.nodes[e].config.chain.rpc_url = Some(format!("http://127.0.0.1:{dead_port}"));
    net.start_node(e).await.unwrap();
    let ids: Vec<NodeId> = [e, m, x].iter().map(|i| net.nodes[*i].id()).collect();
    {
        let r = net.nodes[e].running().unwrap();
        for id in &ids {
            assert!(r.topology.contains(id), "the stored chain view is back before any RPC answer");
        }
    }
    // The same packets again: the entry's replay cache, reloaded from disk, refuses them.
    net.wait_converged(Duration::from_secs(20)).await.unwrap();
    let client = net.client(e).await.unwrap();
    for (_, packet) in &request.packets {
        client.submit(peer, packet, bits).await.unwrap();
    }
    let r = net.nodes[e].running().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while r.metrics.dropped_value("worker", "replay") < request.packets.len() as u64 {
        assert!(Instant::now() < deadline, "the replayed packets were not refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(r.metrics.packets_value("worker", "forward"), 0, "nothing replayed went on");
    let text = r.metrics.render();
    assert_eq!(series(&text, "nox_chain{value=\"rpc_up\"}"), 0.0);

    // While the entry is cut off from the chain a node joins; back on the
    // live endpoint, the entry catches up from where it stopped.
    let joiner = net.prepare_node(1).unwrap();
    net.register(joiner).await.unwrap();
    net.stop_node(e).await;
    net.nodes[e].config.chain.rpc_url = live_url;
    net.start_node(e).await.unwrap();
    net.start_node(joiner).await.unwrap();
    net.wait_converged(Duration::from_secs(30)).await.unwrap();
    let r = net.nodes[e].running().unwrap();
    assert!(r.topology.contains(&net.nodes[joiner].id()));
    net.shutdown().await;
}

/// A test that panics while its devnet runs leaves nothing behind: the
/// devnet's drop kills anvil and every node process with its process group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_test_leaves_no_process_behind() {
    let _g = SERIAL.lock().await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let net = Devnet::start(DevnetOptions { launch: Launch::Processes, ..opts([1, 1, 1]) }).await.unwrap();
        let pids: Vec<u32> = net.nodes.iter().filter_map(|n| n.pid()).chain([net.anvil.pid()]).collect();
        tx.send(pids).unwrap();
        panic!("a failing assertion while the devnet runs");
    });
    let pids = rx.await.unwrap();
    assert_eq!(pids.len(), 4);
    assert!(task.await.unwrap_err().is_panic());
    for pid in pids {
        assert!(!process_alive(pid), "process {pid} outlived a panicking test");
    }
}
