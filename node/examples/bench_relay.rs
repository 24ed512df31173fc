//! Sustained throughput of one relay node over real connections on loopback.
//!
//! The node under test is a separate `nox run` process pinned to
//! `--node-cores` (taskset), a layer-1 relay with one worker thread per core
//! and mixing on: every packet carries a sender-chosen delay (exponential,
//! mean `--mean-delay-us`, default 200 µs). This process, pinned elsewhere by
//! `scripts/bench-relay`, plays the previous hop (a load generator, admitted
//! as a layer-0 node) and the next hop (a sink, admitted as a layer-2 node, on
//! its own thread and runtime so the generator cannot starve it): it pre-builds
//! every packet before the clock starts, then writes them as fast as the
//! receiver's backpressure allows and counts what the sink receives. The
//! generator and the sink speak packet links (`nox_net::packet_link`) and fall
//! back to `/nox/packet/1` streams like a node.
//!
//! Phases:
//! 0. transport references — the same generator and sink with a
//!    transport-only forwarder in the node's place (this binary with
//!    `--forwarder`, pinned to the same cores), Sphinx taken out: over libp2p
//!    streams (TCP + Noise or TLS + Yamux in and out: `transport_us`), then
//!    over packet links (`--links`: `link_us`), each its CPU time per packet.
//! 1. the baseline node: `p2p.packet_link = false`, every packet on libp2p
//!    streams, as before packet links existed. Saturation, then paced.
//! 2. the node as configured by default, relaying on packet links.
//!
//! Each node run has a warm-up before the clock starts: 50 packets, so links
//! are up, then a burst of `--packets` at full speed, as large as the
//! measured one, so that what is measured is a running node's steady state:
//! a node's first burst takes the packet buffers that fill its queues fresh
//! from the kernel (page faults and zeroing), later ones reuse them, and a
//! smaller warm-up fills the queues less deep than the measured burst does;
//! then:
//! * saturation — `--bursts` bursts (3) of `--packets` fresh packets each;
//!   per burst, the sink's receive rate over its middle 80 % and the node's
//!   CPU time per packet relayed (Sphinx, link and pipeline); `relay_pps`
//!   (the baseline's `stream_relay_pps`), `node_us` and `node_cpu` (the share
//!   of its cores the node used) are the medians over the bursts;
//! * paced — packets offered at 90 % of that rate; the node must drop nothing
//!   (its `nox_dropped_total` is read from `/metrics` after each phase).
//!
//! The floor's parts (`per_hop_us` from the `hop_cost` example, the AEAD
//! costs and `tcp_us`) are measured on the node's cores before each burst
//! of either node and once after the last, and each is the median of those
//! runs: a slow or a fast spell of the machine then moves the reference as
//! it moves the node.
//!
//! Prints `relay_pps`, `stream_relay_pps`, `pps_gain = relay_pps /
//! stream_relay_pps`, `ceiling_pps = node_cores × 1e6 / per_hop_us`,
//! `ratio = relay_pps / ceiling_pps`, the drops, `node_us` and
//! `stream_node_us`, `transport_us` and `link_us`, `transport_cap =
//! per_hop_us / (per_hop_us + link_us)` (the ratio a node would reach if
//! Sphinx and the link were all it did), `noise_aead_us` (one
//! ChaCha20-Poly1305 seal and open of a packet with ring, the Noise link's
//! encryption alone) and `best_aead_us` (the faster of AES-256-GCM and
//! ChaCha20-Poly1305 from aws-lc: the cheapest authenticated encryption this
//! machine offers, so that a slow link cipher cannot hide in the floor),
//! each the median of the `--aead-cost` runs on the node's cores; `tcp_us`
//! (the CPU time per packet of a plain TCP forwarder on the node's cores:
//! kernel send and receive with no encryption or framing); `floor_us =
//! per_hop_us + best_aead_us + tcp_us`, what no authenticated TCP relay can go
//! below here; and `floor_ratio = node_us / floor_us` (the baseline's
//! `stream_floor_ratio`), how far the node is above it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use nox_net::p2p::{self, PeerKind};
use nox_net::raw_peer::{OnReceive, RawPeer};
use nox_node::config::{NodeConfig, Role, StaticNode};
use nox_node::keys::NodeKeys;
use nox_node::metrics::sum_family;
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

fn addr(port: u16) -> Multiaddr {
    format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
}

/// A child process killed when dropped.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn metrics(http: &str) -> String {
    ureq::get(&format!("http://{http}/metrics")).call().map(|r| r.into_string().unwrap_or_default()).unwrap_or_default()
}

/// CPU time of process `pid` so far: the sum over its threads of the
/// nanosecond run time the scheduler keeps (`/proc/<pid>/task/*/schedstat`).
fn cpu_time(pid: u32) -> Duration {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        ns += stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Duration::from_nanos(ns)
}

/// Context switches of each thread of process `pid` so far, summed by
/// thread name: (name, voluntary, involuntary).
fn switches(pid: u32) -> Vec<(String, u64, u64)> {
    let mut by_name: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let field = |key: &str| {
            status.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().to_string()).unwrap_or_default()
        };
        let e = by_name.entry(field("Name:")).or_default();
        e.0 += field("voluntary_ctxt_switches:").parse::<u64>().unwrap_or(0);
        e.1 += field("nonvoluntary_ctxt_switches:").parse::<u64>().unwrap_or(0);
    }
    by_name.into_iter().map(|(n, (v, i))| (n, v, i)).collect()
}

fn examples_dir() -> PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().to_path_buf()
}

/// One run of `hop_cost` pinned to `cores`: its `per_hop_us`.
fn hop_cost(cores: &str) -> f64 {
    let out = Command::new("taskset")
        .args(["-c", cores])
        .arg(examples_dir().join("hop_cost"))
        .output()
        .expect("running hop_cost (build it with `cargo build --release -p nox-protocol --example hop_cost`)");
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("per_hop_us="))
        .and_then(|v| v.parse().ok())
        .expect("hop_cost printed per_hop_us");
    eprintln!("hop_cost on core(s) {cores}: per_hop_us={v:.1}");
    v
}

/// `--aead-cost`: the median time of sealing and then opening one packet
/// (one open on the way in and one seal on the way out: what a link's
/// encryption costs per relayed packet, at the least) with
/// * ChaCha20-Poly1305 from ring, the implementation the Noise link uses
///   here (through snow): `noise_aead_us`;
/// * AES-256-GCM and ChaCha20-Poly1305 from aws-lc: the cheapest
///   authenticated encryption this machine offers is the faster of the two,
///   `best_aead_us`, whatever cipher the transport happens to use.
fn aead_cost() {
    fn median<F: FnMut(&mut Vec<u8>, u64)>(mut round: F) -> f64 {
        let mut buf = vec![0u8; nox_protocol::sphinx::PACKET_LEN + 16];
        let mut samples = Vec::with_capacity(3000);
        for i in 0..3000u64 {
            buf.truncate(nox_protocol::sphinx::PACKET_LEN);
            let t = Instant::now();
            round(&mut buf, i);
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        samples.sort_by(f64::total_cmp);
        samples[samples.len() / 2]
    }
    let nonce_bytes = |i: u64| {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&i.to_le_bytes());
        n
    };
    let noise = {
        use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[7u8; 32]).unwrap());
        median(|buf, i| {
            let tag = key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce_bytes(i)), Aad::empty(), buf);
            buf.extend_from_slice(tag.unwrap().as_ref());
            std::hint::black_box(
                key.open_in_place(Nonce::assume_unique_for_key(nonce_bytes(i)), Aad::empty(), buf).unwrap(),
            );
        })
    };
    let aws = |alg: &'static aws_lc_rs::aead::Algorithm| {
        use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(alg, &[7u8; 32]).unwrap());
        median(|buf, i| {
            let tag = key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce_bytes(i)), Aad::empty(), buf);
            buf.extend_from_slice(tag.unwrap().as_ref());
            std::hint::black_box(
                key.open_in_place(Nonce::assume_unique_for_key(nonce_bytes(i)), Aad::empty(), buf).unwrap(),
            );
        })
    };
    let aes_gcm = aws(&aws_lc_rs::aead::AES_256_GCM);
    let chacha = aws(&aws_lc_rs::aead::CHACHA20_POLY1305);
    println!("noise_aead_us={noise:.1} aes256gcm_us={aes_gcm:.1} chacha20poly1305_us={chacha:.1}");
}

/// Runs this binary with `--aead-cost` pinned to `cores`: the Noise link's
/// cipher (`noise_aead_us`) and the cheapest one (`best_aead_us`).
fn aead_reference(cores: &str) -> (f64, f64) {
    let out =
        Command::new("taskset").args(["-c", cores]).arg(std::env::current_exe().unwrap()).arg("--aead-cost").output();
    let text = String::from_utf8_lossy(&out.unwrap().stdout).to_string();
    let value = |name: &str| -> f64 {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    let (aes, chacha) = (value("aes256gcm_us"), value("chacha20poly1305_us"));
    (value("noise_aead_us"), aes.min(chacha))
}

/// `--tcp-forwarder --port P --next-port Q`: plain TCP, no encryption and no
/// multiplexing: accept one connection on `P`, connect to `Q`, and copy
/// packet-sized frames from one to the other until the input ends.
fn tcp_forwarder() {
    use std::io::{Read, Write};
    let listener = TcpListener::bind(("127.0.0.1", arg("--port", "0").parse::<u16>().unwrap())).unwrap();
    println!("ready");
    let (mut input, _) = listener.accept().unwrap();
    let mut output =
        std::net::TcpStream::connect(("127.0.0.1", arg("--next-port", "0").parse::<u16>().unwrap())).unwrap();
    input.set_nodelay(true).unwrap();
    output.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; nox_protocol::sphinx::PACKET_LEN];
    while input.read_exact(&mut buf).is_ok() {
        output.write_all(&buf).unwrap();
    }
}

/// CPU time per packet of a plain-TCP forwarder pinned to `cores`, fed and
/// drained from this process (the kernel's share of relaying a packet).
fn tcp_reference(cores: &str, packets: usize) -> f64 {
    use std::io::{BufRead, Read, Write};
    let (port, next_port) = (free_port(), free_port());
    let sink = TcpListener::bind(("127.0.0.1", next_port)).unwrap();
    let mut fwd = Proc(
        Command::new("taskset")
            .args(["-c", cores])
            .arg(std::env::current_exe().unwrap())
            .args(["--tcp-forwarder", "--port", &port.to_string(), "--next-port", &next_port.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(fwd.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let mut out = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    out.set_nodelay(true).unwrap();
    let (mut input, _) = sink.accept().unwrap();
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0usize;
        while let Ok(n) = input.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    let packet = vec![0x5au8; nox_protocol::sphinx::PACKET_LEN];
    let cpu0 = cpu_time(fwd.0.id());
    for _ in 0..packets {
        out.write_all(&packet).unwrap();
    }
    drop(out);
    let total = drain.join().unwrap();
    let cpu = cpu_time(fwd.0.id()) - cpu0;
    assert_eq!(total, packets * nox_protocol::sphinx::PACKET_LEN, "plain TCP forwarder lost bytes");
    let _ = fwd.0.wait();
    cpu.as_secs_f64() * 1e6 / packets as f64
}

/// Transport-only forwarder: `--forwarder --key HEX --port P --next-key HEX --next-port P`.
async fn forwarder() {
    let key = ed25519_dalek::SigningKey::from_bytes(&hex::decode(arg("--key", "")).unwrap().try_into().unwrap());
    let next_key =
        ed25519_dalek::VerifyingKey::from_bytes(&hex::decode(arg("--next-key", "")).unwrap().try_into().unwrap())
            .unwrap();
    let next = p2p::peer_id_of(&NodeId(next_key.to_bytes())).unwrap();
    let port: u16 = arg("--port", "0").parse().unwrap();
    let next_port: u16 = arg("--next-port", "0").parse().unwrap();
    let peer = RawPeer::start_linked(
        p2p::keypair_from_identity(&key).unwrap(),
        vec![addr(port)],
        PeerKind::Node,
        OnReceive::Forward(next),
        security(),
        std::env::args().any(|a| a == "--links"),
    )
    .await
    .unwrap();
    peer.connect(next, vec![addr(next_port)], Duration::from_secs(10)).await.unwrap();
    println!("ready");
    std::future::pending::<()>().await;
}

/// The sink, on its own OS thread and runtime. Returns its received counter
/// and a sender that stops it.
fn start_sink(key: &ed25519_dalek::SigningKey, port: u16) -> (Arc<AtomicU64>, tokio::sync::oneshot::Sender<()>) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let keypair = p2p::keypair_from_identity(key).unwrap();
    std::thread::Builder::new()
        .name("sink".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let sink = RawPeer::start_linked(
                    keypair,
                    vec![addr(port)],
                    PeerKind::Node,
                    OnReceive::Keep(1),
                    security(),
                    true,
                )
                .await
                .unwrap();
                ready_tx.send(sink.received_counter()).unwrap();
                let _ = stop_rx.await;
                sink.shutdown().await;
            });
        })
        .unwrap();
    (ready_rx.recv().unwrap(), stop_tx)
}

/// Writes `load` to `to` as fast as it accepts, and returns the sink's rate
/// over the middle 80 % of the run (0 if it never got there) and the packets
/// that arrived. Stops waiting once the sink has seen nothing new for 3 s.
async fn saturate(generator: &RawPeer, to: PeerId, load: &[Packet], sink: &AtomicU64) -> (f64, u64) {
    let before = sink.load(Ordering::Relaxed);
    let n = load.len() as u64;
    let (lo, hi) = (before + n / 10, before + n * 9 / 10);
    let sender = async {
        for p in load {
            generator.send_packet(to, p).await.unwrap();
        }
    };
    let watcher = async {
        let (mut t_lo, mut t_hi) = (None, None);
        let (mut last, mut last_change) = (before, Instant::now());
        loop {
            let r = sink.load(Ordering::Relaxed);
            let now = Instant::now();
            if r != last {
                (last, last_change) = (r, now);
            }
            if t_lo.is_none() && r >= lo {
                t_lo = Some(now);
            }
            if t_hi.is_none() && r >= hi {
                t_hi = Some(now);
            }
            if r >= before + n || now.duration_since(last_change) > Duration::from_secs(3) {
                break;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        (t_lo, t_hi)
    };
    let ((), (t_lo, t_hi)) = tokio::join!(sender, watcher);
    let rate = match (t_lo, t_hi) {
        (Some(a), Some(b)) => (hi - lo) as f64 / b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    (rate, sink.load(Ordering::Relaxed) - before)
}

/// `--security noise|tls` (default `noise`, the node's default): how the
/// generator's, the forwarder's, the node's and the sink's links are
/// secured (`p2p.security`).
fn security() -> p2p::LinkSecurity {
    match arg("--security", "noise").as_str() {
        "noise" => p2p::LinkSecurity::Noise,
        "tls" => p2p::LinkSecurity::Tls,
        other => panic!("--security {other}: tls or noise"),
    }
}

fn median(v: &[f64]) -> f64 {
    assert!(!v.is_empty(), "median of nothing");
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The floor's parts, measured on the node's cores beside each measured
/// burst (and once more after the last), so that a slow or fast spell of
/// the machine shows in the reference as in the node; each is used as the
/// median of its runs.
#[derive(Default)]
struct Refs {
    hop: Vec<f64>,
    noise_aead: Vec<f64>,
    best_aead: Vec<f64>,
    tcp: Vec<f64>,
}

impl Refs {
    fn measure(&mut self, cores: &str) {
        self.hop.push(hop_cost(cores));
        let (noise, best) = aead_reference(cores);
        self.noise_aead.push(noise);
        self.best_aead.push(best);
        self.tcp.push(tcp_reference(cores, 20_000));
    }
}

/// The transport-only forwarder (`--forwarder`, with `--links` on packet
/// links in and out) pinned to `cores` in the node's place: its CPU time per
/// packet forwarded from the generator to the sink.
async fn transport_reference(
    cores: &str,
    links: bool,
    generator: &RawPeer,
    sink_key: &ed25519_dalek::SigningKey,
    sink_port: u16,
    sink: &AtomicU64,
    filler: &[Packet],
) -> f64 {
    let fwd_key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let fwd_port = free_port();
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", cores])
        .arg(std::env::current_exe().unwrap())
        .args(["--forwarder", "--key", &hex::encode(fwd_key.to_bytes())])
        .args(["--security", &arg("--security", "noise")])
        .args(["--port", &fwd_port.to_string(), "--next-port", &sink_port.to_string()])
        .args(["--next-key", &hex::encode(sink_key.verifying_key().to_bytes())])
        .stdout(std::process::Stdio::piped());
    if links {
        cmd.arg("--links");
    }
    let mut fwd = Proc(cmd.spawn().unwrap());
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(fwd.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "forwarder did not start");
    }
    let fwd_peer = p2p::peer_id_of(&NodeId(fwd_key.verifying_key().to_bytes())).unwrap();
    generator.connect(fwd_peer, vec![addr(fwd_port)], Duration::from_secs(10)).await.unwrap();
    let fwd_cpu0 = cpu_time(fwd.0.id());
    let t0 = Instant::now();
    let (forward_pps, forwarded) = saturate(generator, fwd_peer, filler, sink).await;
    let fwd_cpu = cpu_time(fwd.0.id()) - fwd_cpu0;
    let n_cores = cores.split(',').count();
    let fwd_share = fwd_cpu.as_secs_f64() / t0.elapsed().as_secs_f64() / n_cores as f64;
    generator.close_streams(fwd_peer).await;
    drop(fwd);
    // CPU time per packet, not cores / rate: the forwarder may be held back by
    // the generator and sink rather than by its own core.
    let us = fwd_cpu.as_secs_f64() * 1e6 / forwarded.max(1) as f64;
    eprintln!(
        "transport reference ({}): {forwarded}/{} forwarded, {forward_pps:.0} pps, forwarder cpu {fwd_share:.2}, \
         {us:.1} µs of CPU per packet",
        if links { "packet link" } else { "libp2p stream" },
        filler.len()
    );
    us
}

/// What one run of the node measured.
struct NodeRun {
    relay_pps: f64,
    node_us: f64,
    /// Each measured burst's `node_us`; `node_us` is their median.
    burst_us: Vec<f64>,
    node_cpu: f64,
    drops_saturated: u64,
    drops_paced: u64,
    paced_rate: f64,
    paced_delivered: u64,
    paced_n: usize,
    links_opened: u64,
    links_accepted: u64,
}

/// Starts the node pinned to `node_cores` (packet links on or off), saturates
/// it from `generator` towards the sink, then paces it at 90 % of the rate it
/// sustained.
/// The generator and the sink around the node under test: each key and port,
/// and the sink's received counter.
struct Around<'a> {
    generator: &'a RawPeer,
    generator_peer: (&'a ed25519_dalek::SigningKey, u16),
    sink_peer: (&'a ed25519_dalek::SigningKey, u16),
    sink: &'a AtomicU64,
}

async fn node_run(
    links: bool,
    node_cores: &str,
    packets: usize,
    mean_us: f64,
    around: &Around<'_>,
    refs: &mut Refs,
) -> NodeRun {
    let Around { generator, generator_peer, sink_peer, sink } = *around;
    let n_cores = node_cores.split(',').count();
    let dir = tempfile::tempdir_in(".").unwrap();
    let node_keys = NodeKeys::generate(&mut rand::rngs::OsRng);
    let keys_dir = dir.path().join("keys");
    node_keys.write(&keys_dir, false).unwrap();
    let (node_port, http_port) = (free_port(), free_port());
    let (gen_key, gen_port) = generator_peer;
    let (sink_key, sink_port) = sink_peer;
    let mut cfg = NodeConfig::default();
    cfg.node.keys_dir = keys_dir;
    cfg.node.data_dir = dir.path().join("data");
    cfg.node.layer = 1;
    cfg.node.role = Role::Relay;
    cfg.p2p.listen = vec![addr(node_port).to_string()];
    cfg.p2p.packet_link = links;
    cfg.http.listen = format!("127.0.0.1:{http_port}").parse().unwrap();
    cfg.workers.threads = n_cores;
    cfg.p2p.security = security();
    cfg.ingest.node_rate = 1e6;
    cfg.ingest.node_burst = 1_000_000;
    cfg.cover.loop_rate = 0.0;
    cfg.cover.drop_rate = 0.0;
    cfg.log.level = "warn".into();
    // `--replay-commit-ms N`: the replay persister's commit interval, to
    // measure its share (the node's default otherwise).
    if let Ok(ms) = arg("--replay-commit-ms", "").parse() {
        cfg.replay.commit_interval_ms = ms;
    }
    // `--ingest-queue N`: the node's ingest queue (how deep packets wait for
    // the workers at saturation).
    if let Ok(n) = arg("--ingest-queue", "").parse() {
        cfg.ingest.queue = n;
    }
    let id_hex = |k: &ed25519_dalek::SigningKey| format!("0x{}", hex::encode(k.verifying_key().to_bytes()));
    cfg.topology.nodes = vec![
        StaticNode { node_id: id_hex(gen_key), layer: 0, addresses: vec![addr(gen_port).to_string()] },
        StaticNode { node_id: id_hex(sink_key), layer: 2, addresses: vec![addr(sink_port).to_string()] },
    ];
    let cfg_path = dir.path().join("node.toml");
    std::fs::write(&cfg_path, toml::to_string(&cfg).unwrap()).unwrap();
    let nox = examples_dir().parent().unwrap().join("nox");
    let node = Proc(
        Command::new("taskset")
            .args(["-c", node_cores])
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
    let node_peer = p2p::peer_id_of(&NodeId(node_keys.node_id())).unwrap();
    generator.connect(node_peer, vec![addr(node_port)], Duration::from_secs(10)).await.unwrap();
    let descriptors = generator.descriptors(node_peer, Duration::from_secs(10)).await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let epoch = now / cfg.network.epoch_secs;
    let mix_key = descriptors
        .iter()
        .find(|d| d.epoch == epoch && d.node_id == NodeId(node_keys.node_id()))
        .expect("current descriptor")
        .mix_key;
    let sink_mix = MixSecretKey::generate(&mut rand::rngs::OsRng).public_key();

    let build = |n: usize| -> Vec<Packet> {
        let mut rng = rand::thread_rng();
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
    eprintln!(
        "packet links {}: node pid {}, building {packets} packets ...",
        if links { "on" } else { "off" },
        node.0.id()
    );
    // Warm-up: the node's link to the sink is set up, and a few packets
    // cross, before the clock starts.
    let before = sink.load(Ordering::Relaxed);
    for p in build(50) {
        generator.send_packet(node_peer, &p).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.load(Ordering::Relaxed) - before < 50 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A burst at full speed, to reach the steady state (see the module docs).
    let warm = build(packets);
    let (_, warmed) = saturate(generator, node_peer, &warm, sink).await;
    drop(warm);
    eprintln!("packet links {}: warm-up burst {warmed}/{packets} delivered", if links { "on" } else { "off" });

    // Saturation: `--bursts` bursts, each of fresh packets and each beside
    // a measurement of the floor's parts on the node's cores.
    let bursts = arg("--bursts", "3").parse::<usize>().unwrap().max(1);
    let switches0 = switches(node.0.id());
    let (mut burst_us, mut burst_pps, mut burst_cpu) = (Vec::new(), Vec::new(), Vec::new());
    let (mut received_1, mut total_time) = (0, Duration::ZERO);
    for _ in 0..bursts {
        let load = build(packets);
        refs.measure(node_cores);
        let node_cpu0 = cpu_time(node.0.id());
        let t0 = Instant::now();
        let (pps, received) = saturate(generator, node_peer, &load, sink).await;
        let node_cpu_time = cpu_time(node.0.id()) - node_cpu0;
        let elapsed = t0.elapsed();
        let us = node_cpu_time.as_secs_f64() * 1e6 / received.max(1) as f64;
        eprintln!(
            "packet links {}: burst {received}/{packets} delivered, {pps:.0} pps, {us:.1} µs per packet",
            if links { "on" } else { "off" }
        );
        burst_us.push(us);
        burst_pps.push(pps);
        burst_cpu.push(node_cpu_time.as_secs_f64() / elapsed.as_secs_f64() / n_cores as f64);
        received_1 += received;
        total_time += elapsed;
    }
    // Context switches per packet relayed, by thread: what the pipeline's
    // hand-offs cost beside the work itself.
    let per_packet: Vec<String> = switches(node.0.id())
        .into_iter()
        .map(|(name, v, i)| {
            let (v0, i0) =
                switches0.iter().find(|(n, _, _)| *n == name).map(|(_, v0, i0)| (*v0, *i0)).unwrap_or((0, 0));
            let n = received_1.max(1) as f64;
            format!("{name} {:.2}+{:.2}", (v - v0) as f64 / n, (i - i0) as f64 / n)
        })
        .collect();
    eprintln!(
        "packet links {}: context switches per packet (voluntary+involuntary): {}",
        if links { "on" } else { "off" },
        per_packet.join(", ")
    );
    let (node_us, relay_pps, node_cpu) = (median(&burst_us), median(&burst_pps), median(&burst_cpu));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = metrics(&http);
    let drops_saturated = sum_family(&text, "nox_dropped_total");
    for line in text.lines().filter(|l| l.starts_with("nox_dropped_total") && !l.ends_with(" 0")) {
        eprintln!("saturation: {line}");
    }

    // Paced at 90 % of the sustained rate.
    let paced_n = packets / 2;
    let load = build(paced_n);
    let rate = relay_pps * 0.9;
    let before = sink.load(Ordering::Relaxed);
    let t0 = Instant::now();
    for (i, p) in load.iter().enumerate() {
        let due = t0 + Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        generator.send_packet(node_peer, p).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.load(Ordering::Relaxed) - before < paced_n as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let text = metrics(&http);
    let drops_total = sum_family(&text, "nox_dropped_total");
    let link_events = |outcome: &str| -> u64 {
        text.lines()
            .filter(|l| {
                l.starts_with("nox_events_total")
                    && l.contains("kind=\"packet_link\"")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let (links_opened, links_accepted) = (link_events("opened"), link_events("accepted"));
    eprintln!(
        "packet links {}: {links_opened} opened to the sink, {links_accepted} accepted from the generator, \
         {} fallbacks to a stream",
        if links { "on" } else { "off" },
        link_events("fallback")
    );
    let received_2 = sink.load(Ordering::Relaxed) - before;
    eprintln!(
        "packet links {}: saturation {received_1}/{} delivered in {:.2}s, node cpu {node_cpu:.2}, \
         {node_us:.1} µs per packet (median of bursts), node drops {drops_saturated}; paced at {rate:.0} pps: \
         {received_2}/{paced_n} delivered, node drops {}",
        if links { "on" } else { "off" },
        packets * bursts,
        total_time.as_secs_f64(),
        drops_total - drops_saturated,
    );
    generator.close_streams(node_peer).await;
    drop(node);
    NodeRun {
        relay_pps,
        node_us,
        burst_us,
        node_cpu,
        drops_saturated,
        drops_paced: drops_total - drops_saturated,
        paced_rate: rate,
        paced_delivered: received_2,
        paced_n,
        links_opened,
        links_accepted,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--forwarder") {
        forwarder().await;
        return;
    }
    if std::env::args().any(|a| a == "--tcp-forwarder") {
        tcp_forwarder();
        return;
    }
    if std::env::args().any(|a| a == "--aead-cost") {
        aead_cost();
        return;
    }
    let node_cores: String = arg("--node-cores", "0");
    let packets: usize = arg("--packets", "24000").parse().unwrap();
    let mean_us: f64 = arg("--mean-delay-us", "200").parse().unwrap();
    let n_cores = node_cores.split(',').count();
    let mut refs = Refs::default();

    let mut rng = rand::thread_rng();
    let gen_key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let sink_key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let (gen_port, sink_port) = (free_port(), free_port());

    let (sink, stop_sink) = start_sink(&sink_key, sink_port);
    let generator = RawPeer::start_linked(
        p2p::keypair_from_identity(&gen_key).unwrap(),
        vec![addr(gen_port)],
        PeerKind::Node,
        OnReceive::Keep(1),
        security(),
        true,
    )
    .await
    .unwrap();

    // Transport references: forwarders with no Sphinx in the node's place.
    let filler: Vec<Packet> = (0..packets.min(8_000))
        .map(|i| {
            let mut b = vec![0u8; nox_protocol::sphinx::PACKET_LEN];
            rng.fill(&mut b[..]);
            b[0] = i as u8;
            Packet::from_vec(b).unwrap()
        })
        .collect();
    let transport_us = transport_reference(&node_cores, false, &generator, &sink_key, sink_port, &sink, &filler).await;
    let link_us = transport_reference(&node_cores, true, &generator, &sink_key, sink_port, &sink, &filler).await;
    drop(filler);

    // The node: first on libp2p streams only (the baseline), then with
    // packet links.
    let around = Around {
        generator: &generator,
        generator_peer: (&gen_key, gen_port),
        sink_peer: (&sink_key, sink_port),
        sink: &sink,
    };
    let base = node_run(false, &node_cores, packets, mean_us, &around, &mut refs).await;
    let run = node_run(true, &node_cores, packets, mean_us, &around, &mut refs).await;
    assert_eq!(base.links_opened, 0, "the baseline node opened packet links");
    assert!(run.links_opened > 0 && run.links_accepted > 0, "the node relayed without packet links");
    refs.measure(&node_cores);

    let per_hop_us = median(&refs.hop);
    let noise_aead_us = median(&refs.noise_aead);
    let best_aead_us = median(&refs.best_aead);
    let tcp_us = median(&refs.tcp);
    let list = |v: &[f64]| v.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(" ");
    eprintln!(
        "references on the node's cores, {} runs: per_hop_us {}; best_aead_us {}; tcp_us {}",
        refs.hop.len(),
        list(&refs.hop),
        list(&refs.best_aead),
        list(&refs.tcp)
    );
    eprintln!("node_us by burst: links on {}; baseline {}", list(&run.burst_us), list(&base.burst_us));
    // What no authenticated TCP link can go below on this machine: the
    // Sphinx hop, the cheapest AEAD over the packet (in and out), and the
    // kernel's TCP.
    let floor_us = per_hop_us + best_aead_us + tcp_us;
    let ceiling = n_cores as f64 * 1e6 / per_hop_us;
    println!(
        "security={} relay_pps={:.0} stream_relay_pps={:.0} pps_gain={:.2} ceiling_pps={ceiling:.0} ratio={:.3} \
         drops={} node_cores={n_cores} per_hop_us={per_hop_us:.1} node_cpu={:.2} node_us={:.1} stream_node_us={:.1} \
         paced_pps={:.0} paced_delivered={}/{} paced_drops={} stream_paced_drops={} transport_us={transport_us:.1} \
         link_us={link_us:.1} transport_cap={:.3} noise_aead_us={noise_aead_us:.1} best_aead_us={best_aead_us:.1} \
         tcp_us={tcp_us:.1} floor_us={floor_us:.1} floor_ratio={:.3} stream_floor_ratio={:.3}",
        arg("--security", "noise"),
        run.relay_pps,
        base.relay_pps,
        run.relay_pps / base.relay_pps.max(1.0),
        run.relay_pps / ceiling,
        run.drops_saturated + run.drops_paced,
        run.node_cpu,
        run.node_us,
        base.node_us,
        run.paced_rate,
        run.paced_delivered,
        run.paced_n,
        run.drops_paced,
        base.drops_paced,
        per_hop_us / (per_hop_us + link_us),
        run.node_us / floor_us,
        base.node_us / floor_us,
    );
    generator.shutdown().await;
    let _ = stop_sink.send(());
}
