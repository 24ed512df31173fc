//! Sustained throughput of one relay node over real libp2p connections.
//!
//! The node under test is a separate `nox run` process pinned to
//! `--node-cores` (taskset), a layer-1 relay with one worker thread per core
//! and mixing on: every packet carries a sender-chosen delay (exponential,
//! mean `--mean-delay-us`, default 200 µs). This process, pinned elsewhere by
//! `scripts/bench-relay`, plays the previous hop (a load generator, admitted
//! as a layer-0 node) and the next hop (a sink, admitted as a layer-2 node):
//! it pre-builds every packet before the clock starts, then writes them as fast
//! as the node's backpressure allows and counts what the sink receives.
//!
//! Two phases:
//! 1. saturation — `relay_pps` is the sink's receive rate over the middle 80 %
//!    of the run;
//! 2. paced — packets offered at 90 % of `relay_pps`; the node must drop
//!    nothing (its `nox_dropped_total` is read from `/metrics` after each phase).
//!
//! Prints `relay_pps=<…> ceiling_pps=<node_cores × 1e6 / per_hop_us> ratio=<relay/ceiling> drops=<…>`,
//! where `per_hop_us` is passed in by the script, measured in the same run on
//! the node's core.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nox_node::config::{NodeConfig, Role, StaticNode};
use nox_node::keys::NodeKeys;
use nox_node::metrics::sum_family;
use nox_node::p2p::{self, PeerKind};
use nox_node::raw_peer::RawPeer;
use nox_protocol::NodeId;
use nox_protocol::crypto::x25519::MixSecretKey;
use nox_protocol::sphinx::{Hop, Packet, PacketBuilder};
use rand::Rng;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_string())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Node(Child);
impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn metrics(http: &str) -> String {
    ureq::get(&format!("http://{http}/metrics")).call().map(|r| r.into_string().unwrap_or_default()).unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let node_cores: String = arg("--node-cores", "0");
    let per_hop_us: f64 = arg("--per-hop-us", "0").parse().unwrap();
    let packets: usize = arg("--packets", "24000").parse().unwrap();
    let mean_us: f64 = arg("--mean-delay-us", "200").parse().unwrap();
    let n_cores = node_cores.split(',').count();
    let dir = tempfile::tempdir_in(".").unwrap();

    let mut rng = rand::thread_rng();
    let node_keys = NodeKeys::generate(&mut rand::rngs::OsRng);
    let keys_dir = dir.path().join("keys");
    node_keys.write(&keys_dir, false).unwrap();
    let gen_key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let sink_key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let (node_port, gen_port, sink_port, http_port) = (free_port(), free_port(), free_port(), free_port());
    let addr = |p: u16| format!("/ip4/127.0.0.1/tcp/{p}");

    let mut cfg = NodeConfig::default();
    cfg.node.keys_dir = keys_dir;
    cfg.node.data_dir = dir.path().join("data");
    cfg.node.layer = 1;
    cfg.node.role = Role::Relay;
    cfg.p2p.listen = vec![addr(node_port)];
    cfg.http.listen = format!("127.0.0.1:{http_port}").parse().unwrap();
    cfg.workers.threads = n_cores;
    cfg.ingest.node_rate = 1e6;
    cfg.ingest.node_burst = 1_000_000;
    cfg.cover.loop_rate = 0.0;
    cfg.cover.drop_rate = 0.0;
    cfg.log.level = "warn".into();
    let id_hex = |k: &ed25519_dalek::SigningKey| format!("0x{}", hex::encode(k.verifying_key().to_bytes()));
    cfg.topology.nodes = vec![
        StaticNode { node_id: id_hex(&gen_key), layer: 0, addresses: vec![addr(gen_port)] },
        StaticNode { node_id: id_hex(&sink_key), layer: 2, addresses: vec![addr(sink_port)] },
    ];
    let cfg_path = dir.path().join("node.toml");
    std::fs::write(&cfg_path, toml::to_string(&cfg).unwrap()).unwrap();

    let nox = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("nox");
    let _node = Node(
        Command::new("taskset")
            .args(["-c", &node_cores])
            .arg(&nox)
            .args(["run", "--config"])
            .arg(&cfg_path)
            .spawn()
            .expect("starting the node (build it with `cargo build --release -p nox-node`)"),
    );
    let http = format!("127.0.0.1:{http_port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while ureq::get(&format!("http://{http}/health")).call().is_err() {
        assert!(Instant::now() < deadline, "node did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let sink = RawPeer::start(
        p2p::keypair_from_identity(&sink_key).unwrap(),
        vec![addr(sink_port).parse().unwrap()],
        PeerKind::Node,
        1,
    )
    .await
    .unwrap();
    let generator = RawPeer::start(
        p2p::keypair_from_identity(&gen_key).unwrap(),
        vec![addr(gen_port).parse().unwrap()],
        PeerKind::Node,
        1,
    )
    .await
    .unwrap();
    let node_peer = p2p::peer_id_of(&NodeId(node_keys.node_id())).unwrap();
    generator.connect(node_peer, vec![addr(node_port).parse().unwrap()], Duration::from_secs(10)).await.unwrap();
    let descriptors = generator.descriptors(node_peer, Duration::from_secs(10)).await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let epoch = now / cfg.network.epoch_secs;
    let mix_key = descriptors
        .iter()
        .find(|d| d.epoch == epoch && d.node_id == NodeId(node_keys.node_id()))
        .expect("current descriptor")
        .mix_key;
    let sink_mix = MixSecretKey::generate(&mut rand::rngs::OsRng).public_key();

    let build = |n: usize, rng: &mut rand::rngs::ThreadRng| -> Vec<Packet> {
        let builder = PacketBuilder::new(epoch);
        (0..n)
            .map(|_| {
                let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
                let route = [
                    Hop { id: NodeId(node_keys.node_id()), key: mix_key, delay_us: (-u.ln() * mean_us) as u32 },
                    Hop { id: NodeId(sink_key.verifying_key().to_bytes()), key: sink_mix, delay_us: 0 },
                ];
                builder.forward(&route, b"bench", &mut rand::rngs::OsRng).unwrap().1
            })
            .collect()
    };
    eprintln!("building {packets} packets ...");
    let load = build(packets, &mut rng);

    // Phase 1: saturation.
    let before = sink.received();
    let start = Instant::now();
    let sender = {
        let g = &generator;
        async move {
            for p in &load {
                g.send_packet(node_peer, p).await.unwrap();
            }
        }
    };
    let target = before + packets as u64;
    let lo = before + (packets as u64) / 10;
    let hi = before + (packets as u64) * 9 / 10;
    let watcher = async {
        let (mut t_lo, mut t_hi) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(120);
        while sink.received() < target && Instant::now() < deadline {
            let r = sink.received();
            if t_lo.is_none() && r >= lo {
                t_lo = Some(Instant::now());
            }
            if t_hi.is_none() && r >= hi {
                t_hi = Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        (t_lo, t_hi)
    };
    let ((), (t_lo, t_hi)) = tokio::join!(sender, watcher);
    let total_time = start.elapsed();
    let relay_pps = match (t_lo, t_hi) {
        (Some(a), Some(b)) => (hi - lo) as f64 / b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = metrics(&http);
    let drops_saturated = sum_family(&text, "nox_dropped_total");
    for line in text.lines().filter(|l| l.starts_with("nox_dropped_total") && !l.ends_with(" 0")) {
        eprintln!("saturation: {line}");
    }
    let received_1 = sink.received() - before;

    // Phase 2: paced at 90 % of the sustained rate.
    let paced_n = packets / 2;
    let load = build(paced_n, &mut rng);
    let rate = relay_pps * 0.9;
    let before = sink.received();
    let t0 = Instant::now();
    for (i, p) in load.iter().enumerate() {
        let due = t0 + Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        generator.send_packet(node_peer, p).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.received() - before < paced_n as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let text = metrics(&http);
    let drops_total = sum_family(&text, "nox_dropped_total");
    let received_2 = sink.received() - before;

    let ceiling = n_cores as f64 * 1e6 / per_hop_us;
    eprintln!(
        "saturation: {received_1}/{packets} delivered in {:.2}s, node drops {drops_saturated}; paced at {rate:.0} pps: {received_2}/{paced_n} delivered",
        total_time.as_secs_f64()
    );
    println!(
        "relay_pps={relay_pps:.0} ceiling_pps={ceiling:.0} ratio={:.3} drops={} node_cores={n_cores} per_hop_us={per_hop_us:.1} paced_pps={rate:.0} paced_delivered={received_2}/{paced_n}",
        relay_pps / ceiling,
        drops_total
    );
    generator.shutdown().await;
    sink.shutdown().await;
}
