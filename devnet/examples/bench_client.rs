//! What the mixnet adds to a wallet's JSON-RPC call, beyond the mixing delays
//! the client asked for.
//!
//! Brings up a devnet of nine staked nodes (three per layer, in this process),
//! a `nox_client::Client` that learns them from NoxRegistry with a 1 ms mean
//! per-hop delay and no cover traffic (cover makes a request wait for a
//! payload tick, which is the point of cover, not a cost of the network), and
//! the JSON-RPC proxy in front of it. Then, over HTTP like a wallet:
//!
//! * `eth_blockNumber` through the proxy, `--requests` times, one at a time:
//!   the round trip, and the delays the client sampled for that request's
//!   forward route and the SURB route its answer came back on;
//! * the same call straight to anvil, as many times.
//!
//! ```text
//! overhead = round trip − sampled delays
//! ```
//!
//! is what NOX adds: the proxy, proof of work, Sphinx at five hops, the
//! transport, the exit's call to its upstream (the direct call's time), timer
//! precision. Prints one line:
//! `rpc_rtt_ms_p50= rpc_rtt_ms_p99= sampled_delay_ms_p50= overhead_ms_p50=
//! overhead_ms_p99= direct_rpc_ms_p50= …`. Goal: overhead p50 < 10 ms. Anchor:
//! the system NOX replaces reports about 100 ms median at 1 ms delays.
//!
//! Run: `scripts/bench-client [--requests N] [--mean-delay-ms D]`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/mod.rs"]
mod common;

use common::{arg, percentile};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nox_client::proxy::{Backend, BackendFuture, ProgressSink};
use nox_client::{Client, Progress};
use nox_devnet::{Devnet, DevnetOptions, Launch, start_proxy};
use nox_protocol::payload::Request;

/// The client, noting the sampled delays of each answered request.
struct Timed {
    client: Arc<Client>,
    sampled_us: Arc<Mutex<Option<u64>>>,
}

impl Backend for Timed {
    fn call(&self, request: Request, mut progress: ProgressSink) -> BackendFuture<'_> {
        let sampled = self.sampled_us.clone();
        Box::pin(self.client.call_with_progress(request, move |p| {
            if let Progress::Answered { forward_delay_us, reply_delay_us } = p {
                *sampled.lock().unwrap() = Some(forward_delay_us + reply_delay_us);
            }
            progress(p)
        }))
    }
}

async fn post(http: &alloy::transports::http::reqwest::Client, url: &str) -> Duration {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#;
    let started = Instant::now();
    let answer = http.post(url).header("content-type", "application/json").body(body).send().await.unwrap();
    let text = answer.text().await.unwrap();
    let elapsed = started.elapsed();
    assert!(text.contains("\"result\""), "no result: {text}");
    elapsed
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let requests = arg("--requests", 200.0) as usize;
    let mean_delay = Duration::from_secs_f64(arg("--mean-delay-ms", 1.0) / 1000.0);
    let opts = DevnetOptions { per_layer: [3, 3, 3], launch: Launch::InProcess, ..DevnetOptions::default() };
    let net = Devnet::start(opts).await.unwrap();
    let client = Arc::new(net.mixnet_client(mean_delay).await.unwrap());
    let sampled_us = Arc::new(Mutex::new(None));
    let backend = Arc::new(Timed { client: client.clone(), sampled_us: sampled_us.clone() });
    let proxy = start_proxy(backend).await.unwrap();
    let http = alloy::transports::http::reqwest::Client::new();

    for _ in 0..20 {
        post(&http, &proxy.url).await;
    }
    let (mut rtt, mut sampled, mut overhead) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..requests {
        *sampled_us.lock().unwrap() = None;
        let took = post(&http, &proxy.url).await.as_secs_f64() * 1e3;
        let delays = sampled_us.lock().unwrap().take().expect("the client reported the sampled delays") as f64 / 1e3;
        rtt.push(took);
        sampled.push(delays);
        overhead.push(took - delays);
    }
    let mut direct = Vec::new();
    for _ in 0..requests {
        direct.push(post(&http, &net.rpc_url()).await.as_secs_f64() * 1e3);
    }
    for v in [&mut rtt, &mut sampled, &mut overhead, &mut direct] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "rpc_rtt_ms_p50={:.2} rpc_rtt_ms_p99={:.2} sampled_delay_ms_p50={:.2} overhead_ms_p50={:.2} \
         overhead_ms_p99={:.2} direct_rpc_ms_p50={:.3} requests={requests} nodes=9 hops=3+2 mean_delay_ms={} \
         goal_overhead_ms_p50<10 anchor_rtt_ms_p50~100",
        percentile(&rtt, 0.5),
        percentile(&rtt, 0.99),
        percentile(&sampled, 0.5),
        percentile(&overhead, 0.5),
        percentile(&overhead, 0.99),
        percentile(&direct, 0.5),
        mean_delay.as_secs_f64() * 1e3,
    );
    proxy.stop().await;
    if let Ok(c) = Arc::try_unwrap(client) {
        c.shutdown().await;
    }
    net.shutdown().await;
}
