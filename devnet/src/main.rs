//! `nox-devnet`: a whole NOX network on this machine.
//!
//! Starts anvil, deploys the contracts with the forge deploy script, funds,
//! stakes and registers the nodes (three per layer by default; the last layer
//! are exits), starts them as `nox run` processes (or in this process), waits
//! until every node has learnt the whole topology from NoxRegistry, and sends
//! a request through entry → mix → exit with its answer coming back through
//! SURBs. The exit serves echo requests; Ethereum requests and gas payment
//! arrive with the exit services.
//!
//! With `--keep-running` the network stays up until SIGINT or SIGTERM;
//! everything started is stopped on the way out.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use nox_devnet::{Devnet, DevnetOptions, Launch};

#[derive(Parser)]
#[command(name = "nox-devnet", version, about = "A whole local NOX network: anvil, contracts, staked nodes")]
struct Cli {
    /// Nodes per layer (entry, mix, exit).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=16))]
    per_layer: u8,
    /// Run the nodes in this process instead of as `nox run` processes.
    #[arg(long)]
    in_process: bool,
    /// Keep the network running until SIGINT or SIGTERM.
    #[arg(long)]
    keep_running: bool,
    /// Directory for the nodes' keys, configurations, databases and logs
    /// (default: a temporary directory, removed on exit).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let n = usize::from(cli.per_layer);
    let opts = DevnetOptions {
        per_layer: [n, n, n],
        launch: if cli.in_process { Launch::InProcess } else { Launch::Processes },
        dir: cli.dir.clone(),
        ..DevnetOptions::default()
    };
    let started = Instant::now();
    eprintln!("starting anvil, deploying, registering {} nodes ...", 3 * n);
    let net = Devnet::start(opts).await.context("bringing the devnet up")?;
    let summary = serde_json::json!({
        "rpc_url": net.rpc_url(),
        "chain_id": nox_devnet::anvil::CHAIN_ID,
        "contracts": {
            "registry": net.deployment.registry.to_string(),
            "token": net.deployment.token.to_string(),
            "pool": net.deployment.pool.to_string(),
        },
        "nodes": net.nodes.iter().map(|node| serde_json::json!({
            "index": node.index,
            "layer": node.layer(),
            "node_id": format!("0x{}", hex::encode(node.id().0)),
            "operator": node.operator().to_string(),
            "p2p": node.multiaddr,
            "http": node.http().to_string(),
        })).collect::<Vec<_>>(),
        "dir": net.dir().display().to_string(),
        "ready_after_ms": started.elapsed().as_millis() as u64,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);

    // One request through entry → mix → exit, answered through SURBs
    // exit → mix → entry.
    let (entry, mix, exit) = (net.layer(0)[0], net.layer(1)[0], net.layer(2)[0]);
    let request = net
        .echo(&[entry, mix, exit], &[exit, mix, entry], b"hello through the NOX devnet".to_vec())
        .await
        .context("building the request")?;
    let client = net.client(entry).await.context("connecting a client to the entry node")?;
    let pow_bits = net.nodes[entry].config.ingest.pow_bits;
    let sent = Instant::now();
    let answer = request
        .round_trip(&client, net.nodes[entry].peer_id, pow_bits, Duration::from_secs(30))
        .await
        .context("round trip through the devnet")?;
    println!(
        "{}",
        serde_json::json!({
            "round_trip": {
                "route": [entry, mix, exit],
                "answer": String::from_utf8_lossy(&answer),
                "ms": sent.elapsed().as_secs_f64() * 1e3,
            }
        })
    );

    if cli.keep_running {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        eprintln!("devnet running; stop with Ctrl-C");
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
    net.shutdown().await;
    Ok(())
}
