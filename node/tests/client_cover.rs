//! Client cover traffic (Loopix) against a real local network: what the
//! entry node receives from a client with cover on is the same stream busy or
//! idle, and the client's loops — echo requests answered through SURBs, like
//! any request — come back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use nox_client::{Client, ClientConfig, CoverRates, StaticMember, TopologySource};
use nox_node::localnet::LocalNet;
use nox_node::node::NodeOptions;

fn config(net: &LocalNet, cover: CoverRates) -> ClientConfig {
    let members = net
        .nodes
        .iter()
        .map(|n| StaticMember {
            node_id: format!("0x{}", hex::encode(n.keys.node_id())),
            layer: n.config.node.layer,
            address: n.running.as_ref().unwrap().listen_addrs[0].to_string(),
        })
        .collect();
    let mut c = ClientConfig::new(TopologySource::Static(members));
    c.pow_bits = net.nodes[0].config.ingest.pow_bits;
    c.epoch_secs = net.nodes[0].config.network.epoch_secs;
    c.mean_delay = Duration::from_millis(1);
    c.cover = cover;
    c
}

/// Packets the entry accepted from clients during `window`, while `work` runs.
async fn submitted_during<F: std::future::Future<Output = ()>>(net: &LocalNet, window: Duration, work: F) -> u64 {
    let m = &net.nodes[0].running.as_ref().unwrap().metrics;
    let before = m.packets_value("ingest", "submitted");
    tokio::select! {
        _ = tokio::time::sleep(window) => {}
        _ = work => panic!("the work outlasts the window"),
    }
    m.packets_value("ingest", "submitted") - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_entry_sees_the_same_rate_whether_the_client_is_busy_or_idle() {
    nox_node::localnet::init_test_logging();
    let dir = tempfile::tempdir().unwrap();
    let net = LocalNet::start(dir.path(), [1, 1, 1], 41, NodeOptions::default(), |_, _| {}).await.unwrap();
    assert!(net.wait_ready(Duration::from_secs(20)).await);
    let rates = CoverRates {
        enabled: true,
        payload: 20.0,
        loops: 2.0,
        drops: 2.0,
        loop_timeout: Duration::from_secs(10),
        queue: 1024,
    };
    let client = Client::connect(config(&net, rates)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let window = Duration::from_secs(5);
    let idle = submitted_during(&net, window, std::future::pending()).await;
    let busy = submitted_during(&net, window, async {
        // About 5 real requests a second, well under λP = 20.
        loop {
            assert_eq!(client.echo(b"real".to_vec()).await.unwrap(), b"real");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let real = client.cover_stats().real.load(std::sync::atomic::Ordering::Relaxed);
    assert!(real >= 10, "real requests went out in payload ticks: {real}");

    // Both windows are Poisson counts of mean (λP + λL + λD) × 5 s = 120
    // (sd ≈ 11); real packets took payload ticks instead of adding to them.
    let expected = 24.0 * window.as_secs_f64();
    for (name, n) in [("idle", idle), ("busy", busy)] {
        let z = (n as f64 - expected) / expected.sqrt();
        assert!(z.abs() < 4.5, "{name}: {n} packets in {window:?}, expected about {expected} (z = {z:.1})");
    }
    let diff = (idle as f64 - busy as f64) / (2.0 * expected).sqrt();
    assert!(diff.abs() < 4.5, "idle {idle} vs busy {busy}: the rate depends on activity (z = {diff:.1})");

    // The loops went entry → mix → exit as echo requests and came back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = client.cover_stats();
    assert!(stats.sent.load(std::sync::atomic::Ordering::Relaxed) >= 5);
    assert_eq!(stats.reliability(), Some(1.0), "every finished loop returned");

    client.shutdown().await;
    net.shutdown().await;
}
