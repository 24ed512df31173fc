//! One peer floods a node's bounded stages while another is served, on a real
//! four-node network (two entries, one mix node, one exit) over loopback.
//!
//! The flooder is a client that submits valid packets as fast as its entry
//! takes them; to the mix node the flood arrives from one peer, its entry.
//! An honest client's echo requests go through the other entry and must keep
//! coming back while the mix node sheds the flooding entry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use libp2p::PeerId;
use nox_client::echo_request;
use nox_node::config::NodeConfig;
use nox_node::localnet::LocalNet;
use nox_protocol::sphinx::{Hop, PacketBuilder};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

const POW_BITS: u8 = 4;

fn peer(net: &LocalNet, idx: usize) -> PeerId {
    net.nodes[idx].running.as_ref().unwrap().peer_id
}

fn dropped(net: &LocalNet, idx: usize, stage: &'static str, reason: &'static str) -> u64 {
    net.nodes[idx].running.as_ref().unwrap().metrics.dropped_value(stage, reason)
}

/// Layers [2, 1, 1]: entries 0 and 1, mix node 2, exit 3. `mix_tweak`
/// configures the mix node; the flooder's entry takes submissions fast.
async fn net(dir: &std::path::Path, mix_tweak: impl Fn(&mut NodeConfig)) -> LocalNet {
    LocalNet::start_ready(dir, [2, 1, 1], 7, move |i, c| {
        if c.node.layer == 1 {
            mix_tweak(c);
        }
        if i == 0 {
            c.ingest.client_rate = 100_000.0;
            c.ingest.client_burst = 100_000;
        }
    })
    .await
    .unwrap()
}

/// Submits `n` fresh packets through `entry`, the mix node and the exit,
/// holding each at the mix node for `mix_delay_us`.
async fn flood(net: &LocalNet, entry: usize, mix: usize, exit: usize, mix_delay_us: u32, n: usize) {
    let flooder = net.client(entry).await.unwrap();
    let hop = |idx, delay| -> (u64, Hop) { net.hop(entry, idx, delay).unwrap() };
    let (epoch, first) = hop(entry, 0);
    let route = [first, hop(mix, mix_delay_us).1, hop(exit, 0).1];
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for i in 0..n {
        let (_, packet) = PacketBuilder::new(epoch).forward(&route, &i.to_be_bytes(), &mut rng).unwrap();
        flooder.submit(peer(net, entry), &packet, POW_BITS).await.unwrap();
    }
    // Keep the connection until the last packet has left the entry.
    tokio::time::sleep(Duration::from_millis(500)).await;
    flooder.shutdown().await;
}

/// The honest client's echo requests through `entry` come back, `n` of them.
async fn served(net: &LocalNet, entry: usize, mix: usize, exit: usize, n: u8) {
    let honest = net.client(entry).await.unwrap();
    let (epoch, fwd) = net.route(&[entry, mix, exit], 0).unwrap();
    let (_, back) = net.route(&[mix, entry], 0).unwrap();
    for i in 0..n {
        let req = echo_request(epoch, &fwd, &back, 1, vec![i; 10]).unwrap();
        let answer = req.round_trip(&honest, peer(net, entry), POW_BITS, Duration::from_secs(10)).await;
        assert_eq!(answer.ok(), Some(vec![i; 10]), "echo {i} through the other entry was not served");
    }
    honest.shutdown().await;
}

async fn wait_for(net: &LocalNet, idx: usize, stage: &'static str, reason: &'static str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    while dropped(net, idx, stage, reason) < at_least && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    dropped(net, idx, stage, reason)
}

/// The mix node remembers at most 200 tags per epoch. The flooding entry is
/// shed once it holds half of them; the other entry's packets, and the exit's
/// replies, are still processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_filling_the_replay_cache_is_shed_while_another_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let net = net(dir.path(), |c| c.replay.max_tags_per_epoch = 200).await;
    let (e0, e1, mx, ex) = (net.layer(0)[0], net.layer(0)[1], net.layer(1)[0], net.layer(2)[0]);
    flood(&net, e0, mx, ex, 0, 300).await;
    let shed = wait_for(&net, mx, "worker", "replay_share_exceeded", 200).await;
    assert_eq!(shed, 200, "the flooding entry got 100 of 200 tags, the rest of its 300 packets was shed");
    served(&net, e1, mx, ex, 5).await;
    assert_eq!(dropped(&net, mx, "worker", "replay_cache_full"), 0);
    net.shutdown().await;
}

/// The mix node holds at most 64 packets. The flood asks for a minute's delay
/// at the mix node, which would hold every slot; the flooding entry gets half
/// and the other entry's packets (delay 0) still pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_flooding_the_mix_with_long_delays_does_not_starve_another() {
    let dir = tempfile::tempdir().unwrap();
    let net = net(dir.path(), |c| {
        c.mix.capacity = 64;
        c.mix.min_share_per_peer = 1;
        c.mix.max_delay_ms = 60_000;
    })
    .await;
    let (e0, e1, mx, ex) = (net.layer(0)[0], net.layer(0)[1], net.layer(1)[0], net.layer(2)[0]);
    flood(&net, e0, mx, ex, 60_000_000, 200).await;
    let shed = wait_for(&net, mx, "mix", "share_exceeded", 200 - 32).await;
    assert_eq!(shed, 200 - 32, "the flooding entry holds half the mix, the rest is shed");
    served(&net, e1, mx, ex, 5).await;
    assert_eq!(dropped(&net, mx, "mix", "mix_full"), 0);
    net.shutdown().await;
}
