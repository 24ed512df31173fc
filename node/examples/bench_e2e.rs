//! End-to-end overhead of 3-hop delivery on a local 3-layer network.
//!
//! Starts three in-process nodes (entry, mix, exit) on loopback with their
//! default pipeline settings, connects a client to the entry node over real
//! libp2p, and sends single-packet requests through entry → mix → exit with
//! per-hop delays sampled by the sender (exponential, mean `--mean-delay-us`,
//! default 1,000 µs). The exit's service stamps each arrival. For every message
//!
//! ```text
//! overhead = (arrival − send) − (sum of the three sampled delays)
//! ```
//!
//! which is what the network adds beyond the mixing the sender asked for:
//! transport, the cryptography at three hops, queueing, timer precision and the
//! wait for replay tags to be durable. The send time is taken after the proof
//! of work is solved, just before the packet is written.
//!
//! Prints `e2e_overhead_ms_p50=<…> e2e_overhead_ms_p99=<…>` plus the settings.
//!
//! Run: `scripts/bench-e2e` (or `cargo run --release -p nox-node --example bench_e2e -- [--messages N]
//! [--mean-delay-us U] [--durable true|false]`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use nox_client::echo_request;
use nox_net::p2p::PeerKind;
use nox_net::raw_peer::RawPeer;
use nox_node::exit::{ExitService, RequestContext, ServiceError, ServiceRouter};
use nox_node::localnet::LocalNet;
use nox_node::node::NodeOptions;
use nox_protocol::payload::{Request, RequestKind};
use rand::Rng;

struct Stamp(flume::Sender<(u64, Instant)>);

impl ExitService for Stamp {
    fn name(&self) -> &'static str {
        "stamp"
    }

    fn serve(&self, _ctx: RequestContext, request: Request) -> BoxFuture<'static, Result<Vec<u8>, ServiceError>> {
        let now = Instant::now();
        if let Request::Echo { data } = &request
            && data.len() >= 8
        {
            let mut b = [0u8; 8];
            b.copy_from_slice(&data[..8]);
            let _ = self.0.send((u64::from_be_bytes(b), now));
        }
        Box::pin(async { Ok(Vec::new()) })
    }
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_string())
}

fn pct(v: &[f64], p: f64) -> f64 {
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let messages: usize = arg("--messages", "400").parse().unwrap();
    let mean_us: f64 = arg("--mean-delay-us", "1000").parse().unwrap();
    let durable: bool = arg("--durable", "true").parse().unwrap();
    let dir = tempfile::tempdir_in(".").unwrap();
    let (tx, rx) = flume::unbounded();
    let services = ServiceRouter::new().with(RequestKind::Echo, Arc::new(Stamp(tx)));
    let opts = NodeOptions { exit_services: Some(services), ..NodeOptions::default() };
    let net = LocalNet::start(dir.path(), [1, 1, 1], 42, opts, |_, c| {
        c.replay.durable_before_forward = durable;
    })
    .await
    .unwrap();
    assert!(net.wait_ready(Duration::from_secs(20)).await);
    let (gw, mx, ex) = (net.layer(0)[0], net.layer(1)[0], net.layer(2)[0]);
    let gateway = net.nodes[gw].running.as_ref().unwrap();
    let pow_bits = net.nodes[gw].config.ingest.pow_bits;
    let client =
        RawPeer::start(libp2p::identity::Keypair::generate_ed25519(), vec![], PeerKind::Client, 16).await.unwrap();
    client.connect(gateway.peer_id, gateway.listen_addrs.clone(), Duration::from_secs(10)).await.unwrap();
    let gw_peer = gateway.peer_id;

    let mut rng = rand::thread_rng();
    let mut sent = std::collections::HashMap::new();
    let warmup = 20;
    for seq in 0..(messages + warmup) as u64 {
        let delays: Vec<u32> = (0..3)
            .map(|_| {
                let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
                (-u.ln() * mean_us) as u32
            })
            .collect();
        let mut route = Vec::new();
        let mut epoch = 0;
        for (i, idx) in [gw, mx, ex].into_iter().enumerate() {
            let (e, hop) = net.hop(gw, idx, delays[i]).unwrap();
            epoch = e;
            route.push(hop);
        }
        let req = echo_request(epoch, &route, &route[..1], 0, seq.to_be_bytes().to_vec()).unwrap();
        let (_, packet) = &req.packets[0];
        let nonce = nox_protocol::pow::solve(packet, pow_bits, rng.r#gen());
        let delay_sum_ms = delays.iter().map(|d| f64::from(*d)).sum::<f64>() / 1000.0;
        let t0 = Instant::now();
        client.submit_with_nonce(gw_peer, packet, nonce).await.unwrap();
        sent.insert(seq, (t0, delay_sum_ms));
        // Keep the network lightly loaded: this measures latency, not throughput.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut overhead = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while overhead.len() + warmup < sent.len() && Instant::now() < deadline {
        let Ok((seq, at)) = rx.recv_timeout(Duration::from_millis(500)) else { continue };
        if let Some((t0, delay_ms)) = sent.get(&seq)
            && seq >= warmup as u64
        {
            overhead.push(at.duration_since(*t0).as_secs_f64() * 1000.0 - delay_ms);
        }
    }
    let lost = messages - overhead.len();
    overhead.sort_by(|a, b| a.total_cmp(b));
    println!(
        "e2e_overhead_ms_p50={:.3} e2e_overhead_ms_p99={:.3} messages={} lost={} mean_delay_us={} durable_before_forward={}",
        pct(&overhead, 0.5),
        pct(&overhead, 0.99),
        overhead.len(),
        lost,
        mean_us,
        durable
    );
    client.shutdown().await;
    net.shutdown().await;
}
