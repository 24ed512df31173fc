//! Loop cover against nodes that drop only what looks like client traffic:
//! an entry that discards what is submitted to it, and an exit that discards
//! the final payloads it should serve, both forwarding everything else. A
//! node's loops are client-shaped requests, so they are lost with the
//! clients' traffic, and the loop reliability of the faulty node's layer
//! falls — to the faulty node's own ratio, below that of the healthy layer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use nox_node::faults::Faults;
use nox_node::localnet::{LocalNet, eventually};
use nox_node::node::{NodeOptions, RunningNode};

const LAYERS: [&str; 3] = ["0", "1", "2"];

fn running(net: &LocalNet, idx: usize) -> &RunningNode {
    net.nodes[idx].running.as_ref().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_entry_dropping_submissions_and_an_exit_dropping_finals_show_in_their_layers() {
    let started = Instant::now();
    nox_node::localnet::init_test_logging();
    let dir = tempfile::tempdir().unwrap();
    // Nodes 0, 1 are entries, 2, 3 mixes, 4, 5 exits: entry 1 and exit 5 misbehave.
    let (bad_entry, bad_exit) = (1usize, 5usize);
    let options = |i: usize| NodeOptions {
        faults: Faults { drop_submissions: i == bad_entry, drop_finals: i == bad_exit, ..Faults::default() },
        ..NodeOptions::default()
    };
    let net = LocalNet::start_each(dir.path(), [2, 2, 2], 31, options, |_, c| {
        c.cover.loop_rate = 10.0;
        c.cover.drop_rate = 2.0;
        c.cover.mean_delay_ms = 2.0;
        c.cover.loop_timeout_secs = 2;
    })
    .await
    .unwrap();
    assert!(net.wait_ready(Duration::from_secs(20)).await, "descriptors did not propagate");
    assert_eq!((net.layer(0), net.layer(2)), (vec![0, bad_entry], vec![4, bad_exit]));

    // The mix nodes use both entries and both exits (and, preferring a mix
    // other than themselves, the other mix). A loop comes back only through
    // the good entry and the good exit, one in four; a loop through a faulty
    // node never does. Each layer reads its worst node's return ratio: 0 for
    // the faulty entry's and exit's layers, about 1/4 for the mix layer. A
    // gauge at 0 while loops did come back is a node with enough loops
    // through it that lost them all.
    //
    // Every other healthy node sees it too, without naming it: the healthy
    // entry's loops all go to the faulty one (the only other entry), the
    // healthy exit's all to the faulty exit, so each loses every loop.
    let mixes = net.layer(1);
    let named = |net: &LocalNet| {
        let mixes_name_both = mixes.iter().all(|&i| {
            let m = &running(net, i).metrics;
            m.packets_value("cover", "loop_returned") > 0
                && m.packets_value("cover", "loop_lost") > 0
                && m.loop_reliability("0").get() == 0.0
                && m.loop_reliability("2").get() == 0.0
                && m.loop_reliability("1").get() > 0.0
        });
        let others_notice = [0, 4].iter().all(|&i| {
            let m = &running(net, i).metrics;
            m.packets_value("cover", "loop_lost") > 0 && LAYERS.iter().all(|l| m.loop_reliability(l).get() < 1.0)
        });
        mixes_name_both && others_notice
    };
    let ok = eventually(Duration::from_secs(30), || named(&net)).await;
    for i in 0..net.nodes.len() {
        let m = &running(&net, i).metrics;
        eprintln!(
            "node {i}: loops sent {} returned {} lost {}, reliability of layers 0/1/2 {:.2}/{:.2}/{:.2}",
            m.packets_value("cover", "loop_sent"),
            m.packets_value("cover", "loop_returned"),
            m.packets_value("cover", "loop_lost"),
            m.loop_reliability("0").get(),
            m.loop_reliability("1").get(),
            m.loop_reliability("2").get(),
        );
    }
    assert!(ok, "the faulty entry and exit did not show in the loop reliability");

    // The faulty nodes misbehaved quietly: the entry took submissions and
    // counted nothing dropped for them; the exit served nothing.
    let entry = &running(&net, bad_entry).metrics;
    assert!(entry.packets_value("ingest", "submitted") > 0);
    let tolerated = entry.dropped_value("cover", "no_route")
        + entry.dropped_value("cover", "no_echo_exit")
        + entry.dropped_value("egress", "link_failed");
    assert_eq!(entry.total_dropped() - tolerated, 0, "{}", entry.render());
    assert_eq!(running(&net, bad_exit).metrics.packets_value("exit", "served"), 0);
    assert!(running(&net, 4).metrics.packets_value("exit", "served") > 0);
    net.shutdown().await;
    eprintln!("cover faults test took {:?}", started.elapsed());
}
