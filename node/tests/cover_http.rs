//! Cover traffic, the HTTP API and descriptor validation on real in-process
//! networks: what an operator sees on `/metrics`, `/health` and `/topology`,
//! what those never show, and how forged or badly timed descriptors fare.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nox_client::echo_request;
use nox_net::p2p::{Command, DESCRIPTOR_TOPIC};
use nox_node::config::NodeConfig;
use nox_node::localnet::{LocalNet, eventually};
use nox_node::node::RunningNode;
use nox_node::topology::DescriptorRejection;
use nox_protocol::crypto::x25519::MixSecretKey;
use nox_protocol::descriptor::MixDescriptor;

const POW_BITS: u8 = 4;

async fn net(dir: &std::path::Path, per_layer: [usize; 3], tweak: impl Fn(usize, &mut NodeConfig)) -> LocalNet {
    LocalNet::start_ready(dir, per_layer, 23, tweak).await.unwrap()
}

fn running(net: &LocalNet, idx: usize) -> &RunningNode {
    net.nodes[idx].running.as_ref().unwrap()
}

/// `GET url`: status and body (error statuses are answers too).
async fn get(url: String) -> (u16, String) {
    tokio::task::spawn_blocking(move || match ureq::get(&url).timeout(Duration::from_secs(5)).call() {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {url}: {e}"),
    })
    .await
    .unwrap()
}

async fn get_json(url: String) -> serde_json::Value {
    let (status, body) = get(url.clone()).await;
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"))
}

const LAYERS: [&str; 3] = ["0", "1", "2"];

/// On a healthy 2-2-2 network every node's loops — echo requests submitted to
/// an entry, served by an exit, answered through a SURB back to that entry —
/// come home, and every layer reads 1.0. Then a mix node dies: loops through
/// it are lost, and layer 1's reliability falls on every survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loops_come_home_and_a_dead_mix_node_shows_in_loop_reliability() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut net = net(dir.path(), [2, 2, 2], |_, c| {
        c.cover.loop_rate = 5.0;
        c.cover.drop_rate = 5.0;
        c.cover.mean_delay_ms = 5.0;
        c.cover.loop_timeout_secs = 5;
    })
    .await;
    let all: Vec<usize> = (0..net.nodes.len()).collect();

    // Past one loop timeout, so that lost loops would already be counted.
    let healthy = |net: &LocalNet| {
        all.iter().all(|&i| {
            let r = running(net, i);
            let m = &r.metrics;
            m.packets_value("cover", "loop_sent") > 0
                && m.packets_value("cover", "drop_sent") > 0
                && m.packets_value("cover", "loop_returned") > 0
                && (r.layer != 2 || m.packets_value("exit", "cover_received") > 0)
        })
    };
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(eventually(Duration::from_secs(10), || healthy(&net)).await, "cover traffic did not flow");
    let returned: u64 = all.iter().map(|&i| running(&net, i).metrics.packets_value("cover", "loop_returned")).sum();
    for &i in &all {
        let r = running(&net, i);
        for layer in LAYERS {
            let reliability = r.metrics.loop_reliability(layer).get();
            assert_eq!(reliability, 1.0, "node {i} (layer {}): loops through layer {layer}", r.layer);
        }
        // Loops are requests: no relay is ever the final hop of one.
        assert_eq!(r.metrics.dropped_value("exit", "not_exit"), 0, "node {i}");
        assert_eq!(r.metrics.packets_value("cover", "loop_late"), 0, "node {i}");
    }
    // Every loop that came home entered at an entry through the submit path
    // and was served by an exit's echo service as a final payload.
    let sum = |layer: u8, stage: &'static str, outcome: &'static str| -> u64 {
        net.layer(layer).iter().map(|&i| running(&net, i).metrics.packets_value(stage, outcome)).sum()
    };
    assert!(sum(0, "ingest", "submitted") >= returned, "entries took fewer submissions than loops came home");
    assert!(sum(2, "exit", "served") >= returned, "exits served fewer echoes than loops came home");
    assert!(sum(2, "worker", "final") >= returned);
    for i in net.layer(0) {
        assert!(running(&net, i).metrics.packets_value("ingest", "submitted") > 0, "entry {i} took no submission");
    }
    for i in net.layer(2) {
        assert!(running(&net, i).metrics.packets_value("exit", "served") > 0, "exit {i} served no loop");
    }
    // Nothing was dropped, except cover the node could not route before it
    // knew the others' keys (and the exits' services), and (rarely, on a
    // loaded machine) a packet on a link that failed while the network was
    // still connecting.
    for &i in &all {
        let m = &running(&net, i).metrics;
        let tolerated = m.dropped_value("cover", "no_route")
            + m.dropped_value("cover", "no_echo_exit")
            + m.dropped_value("egress", "link_failed");
        assert_eq!(m.total_dropped() - tolerated, 0, "node {i}:\n{}", m.render());
    }

    // A layer-1 node dies. Loops that picked it, on the way out or back (3 in
    // 4 of the entries' and exits' loops, every loop of the other mix, which
    // prefers a mix other than itself), do not come back; after the loop
    // timeout they count as lost and the reliability of layer 1 falls.
    let dead = net.layer(1)[0];
    let watchers: Vec<usize> = all.iter().copied().filter(|i| *i != dead).collect();
    let lost_before: Vec<u64> =
        watchers.iter().map(|&i| running(&net, i).metrics.packets_value("cover", "loop_lost")).collect();
    net.stop_node(dead).await;
    let degraded = |net: &LocalNet| {
        watchers.iter().zip(&lost_before).all(|(&i, before)| {
            let m = &running(net, i).metrics;
            m.packets_value("cover", "loop_lost") > *before && m.loop_reliability("1").get() < 0.9
        })
    };
    assert!(eventually(Duration::from_secs(20), || degraded(&net)).await, "lost loops were not noticed");
    for &i in &watchers {
        let m = &running(&net, i).metrics;
        eprintln!(
            "node {i}: loops lost {} (before {}), reliability of layers 0/1/2 now {:.2}/{:.2}/{:.2}",
            m.packets_value("cover", "loop_lost"),
            lost_before[watchers.iter().position(|w| *w == i).unwrap()],
            m.loop_reliability("0").get(),
            m.loop_reliability("1").get(),
            m.loop_reliability("2").get(),
        );
    }
    net.shutdown().await;
    eprintln!("cover test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_endpoints_report_state_but_nothing_about_users() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let net = net(dir.path(), [1, 1, 1], |i, c| {
        c.cover.loop_rate = 2.0;
        c.cover.mean_delay_ms = 5.0;
        if i == 0 {
            c.http.public_listen = Some("127.0.0.1:0".parse().unwrap());
        }
    })
    .await;
    let (gw, mx, ex) = (net.layer(0)[0], net.layer(1)[0], net.layer(2)[0]);
    let gwp = running(&net, gw).peer_id;

    // Traffic first: a client with a few requests and their SURBs.
    let client = net.client(gw).await.unwrap();
    let submitted_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let mut secrets: Vec<String> = vec![client.p2p.peer_id.to_string()];
    for i in 0..3u8 {
        let (epoch, fwd) = net.route(&[gw, mx, ex], 1000).unwrap();
        let (_, back) = net.route(&[mx, gw], 1000).unwrap();
        let req = echo_request(epoch, &fwd, &back, 2, vec![i; 100]).unwrap();
        secrets.extend(req.surb_keys.iter().map(|k| hex::encode(k.surb_id())));
        secrets.push(hex::encode(req.request_id));
        assert_eq!(req.round_trip(&client, gwp, POW_BITS, Duration::from_secs(10)).await.ok(), Some(vec![i; 100]));
    }
    // Loops have come home (so the reliability gauge has samples).
    assert!(
        eventually(Duration::from_secs(10), || (0..3)
            .all(|i| running(&net, i).metrics.packets_value("cover", "loop_returned") > 0))
        .await
    );

    let mut bodies = Vec::new();
    for i in [gw, mx, ex] {
        let r = running(&net, i);
        let base = format!("http://{}", r.http_addr);
        let epoch = r.keys.read().unwrap().current_epoch();

        // /health: status, epoch, peers per tier.
        let health = get_json(format!("{base}/health")).await;
        assert_eq!(health["status"], "ok", "{health}");
        assert_eq!(health["epoch"], epoch, "{health}");
        assert_eq!(health["layer"], r.layer, "{health}");
        assert_eq!(health["node_id"], format!("0x{}", hex::encode(net.nodes[i].id().0)), "{health}");
        assert_eq!(health["peers"]["node"], 2, "node {i}: {health}");
        assert_eq!(health["peers"]["client"], u64::from(i == gw), "node {i}: {health}");

        // /metrics: Prometheus text with every family an operator dashboards.
        // Peer gauges are refreshed once a second.
        let mut metrics = String::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        while !metrics.contains("nox_peers{tier=\"node\"} 2") && Instant::now() < deadline {
            let (status, text) = get(format!("{base}/metrics")).await;
            assert_eq!(status, 200);
            metrics = text;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (family, kind) in [
            ("nox_packets", "counter"),
            ("nox_dropped", "counter"),
            ("nox_events", "counter"),
            ("nox_queue_depth", "gauge"),
            ("nox_epoch", "gauge"),
            ("nox_peers", "gauge"),
            ("nox_loop_reliability", "gauge"),
        ] {
            assert!(metrics.contains(&format!("# TYPE {family} {kind}")), "node {i}: no {family}:\n{metrics}");
        }
        assert!(metrics.contains(&format!("\nnox_epoch {epoch}\n")), "{metrics}");
        assert!(metrics.contains("nox_peers{tier=\"node\"} 2"), "{metrics}");
        assert!(metrics.contains("nox_packets_total{stage=\"worker\",outcome=\"forward\"}"), "{metrics}");
        assert!(metrics.contains("nox_dropped_total{stage=\"worker\",reason=\"replay\"} 0"), "{metrics}");
        assert!(metrics.contains("nox_queue_depth{queue=\"mix_held\"}"), "{metrics}");
        assert!(metrics.contains("nox_loop_reliability{layer="), "{metrics}");
        if i == gw {
            assert!(metrics.contains("nox_peers{tier=\"client\"} 1"), "{metrics}");
        }

        // /topology: the epochs and every node with its current and next descriptors.
        let topology = get_json(format!("{base}/topology")).await;
        assert_eq!(topology["epoch"]["current"], epoch);
        assert_eq!(topology["epoch"]["next"], epoch + 1);
        let nodes = topology["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3, "{topology}");
        for n in &net.nodes {
            let id = format!("0x{}", hex::encode(n.id().0));
            let entry = nodes.iter().find(|e| e["node_id"] == id).unwrap_or_else(|| panic!("{id} missing"));
            assert_eq!(entry["layer"], n.config.node.layer);
            let epochs: Vec<u64> =
                entry["descriptors"].as_array().unwrap().iter().map(|d| d["epoch"].as_u64().unwrap()).collect();
            assert_eq!(epochs, vec![epoch, epoch + 1], "{id}");
            // Each descriptor is there in its signed encoding, and verifies.
            for d in entry["descriptors"].as_array().unwrap() {
                let bytes = hex::decode(d["encoded"].as_str().unwrap().trim_start_matches("0x")).unwrap();
                MixDescriptor::decode(&bytes).unwrap().verify().unwrap();
            }
        }
        bodies.extend([health.to_string(), metrics, topology.to_string()]);
    }

    // The public listener serves /health and /topology, never /metrics.
    let public = format!("http://{}", running(&net, gw).public_http_addr.expect("public listener"));
    let health = get_json(format!("{public}/health")).await;
    assert_eq!(health["status"], "ok");
    assert!(health.get("peers").is_none(), "public /health shows no peer counts: {health}");
    let topology = get_json(format!("{public}/topology")).await;
    assert_eq!(topology["nodes"].as_array().unwrap().len(), 3);
    let (status, _) = get(format!("{public}/metrics")).await;
    assert_eq!(status, 404);
    bodies.extend([health.to_string(), topology.to_string()]);

    // Nothing a user did is visible: not the client's peer id, not a SURB id or
    // request id, not the time a packet was handled (a unix time in seconds
    // from then until now; in ms or µs it starts with the same digits).
    let secs = submitted_at.as_secs();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let times: Vec<String> = (secs.saturating_sub(5)..=now + 5).map(|t| t.to_string()).collect();
    for body in &bodies {
        for s in &secrets {
            assert!(!body.contains(s.as_str()), "an HTTP body contains {s}:\n{body}");
        }
        for t in &times {
            assert!(!body.contains(t.as_str()), "an HTTP body contains a timestamp ({t}):\n{body}");
        }
    }
    client.shutdown().await;
    net.shutdown().await;
    eprintln!("http test took {:?}", started.elapsed());
}

/// A descriptor signed by a fresh identity key.
fn signed(epoch: u64, layer: u8) -> MixDescriptor {
    let identity = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let mix_key = MixSecretKey::generate(&mut rand::rngs::OsRng).public_key();
    MixDescriptor::sign(&identity, epoch, mix_key, layer, 0, vec!["/ip4/127.0.0.1/tcp/9".into()]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_stale_future_and_unknown_descriptors_are_rejected_and_counted() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let net = net(dir.path(), [1, 1, 1], |_, _| {}).await;
    let (gw, mx) = (net.layer(0)[0], net.layer(1)[0]);
    let g = running(&net, gw);
    let epoch = g.keys.read().unwrap().current_epoch();
    let victim = net.nodes[mx].id();
    let real_key = g.topology.mix_key(&victim, epoch).unwrap();

    // Forged: a well-formed descriptor naming the mix node, signed by someone else.
    let mut forged = signed(epoch, 1).encode();
    forged[1..33].copy_from_slice(&victim.0);
    let stale = signed(epoch - 1, 1).encode();
    let future = signed(epoch + 2, 1).encode();
    // Well formed and validly signed, for the current epoch, by an identity no
    // topology lists: it must not make its signer a node.
    let unknown = signed(epoch, 1).encode();

    // Directly against the topology view.
    let t = &g.topology;
    assert!(matches!(t.accept_descriptor_bytes(&forged, epoch), Err(DescriptorRejection::BadSignature)));
    assert!(matches!(t.accept_descriptor_bytes(&stale, epoch), Err(DescriptorRejection::Stale { .. })));
    assert!(matches!(t.accept_descriptor_bytes(&future, epoch), Err(DescriptorRejection::Future { .. })));
    assert!(matches!(t.accept_descriptor_bytes(&unknown, epoch), Err(DescriptorRejection::UnknownNode)));

    // End to end: a connected peer gossips them to the entry node.
    let peer = net.client(gw).await.unwrap();
    let outcomes = ["bad_signature", "stale", "future", "unknown_node"];
    let counted = |outcome: &'static str| g.metrics.event("descriptor", outcome).get();
    let deadline = Instant::now() + Duration::from_secs(15);
    while outcomes.iter().any(|o| counted(o) == 0) && Instant::now() < deadline {
        // Publishing fails until the subscriptions are exchanged; a repeat of
        // a message that went out is a GossipSub duplicate and is not sent.
        for data in [&forged, &stale, &future, &unknown] {
            peer.p2p.command(Command::Publish { topic: DESCRIPTOR_TOPIC, data: data.clone() }).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for o in outcomes {
        assert_eq!(counted(o), 1, "descriptor outcome {o}:\n{}", g.metrics.render());
    }
    let (_, metrics) = get(format!("http://{}/metrics", g.http_addr)).await;
    for o in outcomes {
        let line = format!("nox_events_total{{kind=\"descriptor\",outcome=\"{o}\"}} 1");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }

    // None of them changed what the network routes with, here or further on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in &net.nodes {
        let r = n.running.as_ref().unwrap();
        assert_eq!(r.topology.mix_key(&victim, epoch), Some(real_key));
        assert_eq!(r.topology.node_ids().len(), 3, "a rejected descriptor added a node");
    }
    // The other nodes never saw the rejected messages: the entry did not pass them on.
    for i in [mx, net.layer(2)[0]] {
        for o in outcomes {
            assert_eq!(running(&net, i).metrics.event("descriptor", o).get(), 0, "node {i}: {o}");
        }
    }
    peer.shutdown().await;
    net.shutdown().await;
    eprintln!("descriptor test took {:?}", started.elapsed());
}
