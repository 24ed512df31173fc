//! `nox-devnet`: a whole NOX network on this machine.
//!
//! Starts anvil, deploys the contracts with the forge deploy script, funds,
//! stakes and registers the nodes (three per layer by default; the last layer
//! are exits), starts them as `nox run` processes (or in this process), waits
//! until every node has learnt the whole topology from NoxRegistry, and sends
//! a request through entry → mix → exit with its answer coming back through
//! SURBs. Then the user's side: a mixnet client that learns the network from
//! NoxRegistry, the local JSON-RPC proxy in front of it, and `cast` sending a
//! signed transfer through the proxy and reading it back (the exits' RPC
//! services broadcast and read on anvil). Last, the main job: a user deposits
//! ETH into NoxPool from one address, and a private call — `NoxCounter.
//! increment()`, paid from the shielded note with a spend proof — goes
//! through the mixnet to an exit, which simulates it, sends it from its own
//! wallet and answers with the receipt. The devnet prints the transaction,
//! shows that its sender is the exit's wallet and not the user's, reads the
//! counter back, and exits non-zero if the effect is not on chain. Then the
//! same call paid in a token: two `nox-oracle` processes read local servers
//! that answer in the Binance, CoinGecko and Coinbase formats (the real APIs
//! are out of reach here) and publish signed prices to every node; the user
//! deposits test dollars (tUSD) and the exit is paid its fee in tUSD at the
//! oracles' price.
//!
//! With `--keep-running` the network stays up until SIGINT or SIGTERM;
//! everything started is stopped on the way out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use nox_devnet::{Devnet, DevnetOptions, Launch, cast, start_proxy};

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
    /// Price oracles (their keys are trusted by every node with a majority
    /// threshold); 0 leaves out the token-paid call.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=8))]
    oracles: u8,
    /// Directory for the nodes' keys, configurations, databases and logs
    /// (default: a temporary directory, removed on exit).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

/// anvil's account #1: the user who sends the transfer (the deployer is #0).
const USER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

/// anvil's account #2: the address that funds the user's shielded deposit (#4–#9 are the exits' wallets).
const FUNDING_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";

/// The user's tUSD deposit: 100 tUSD (six decimals).
const TOKEN_DEPOSIT: u128 = 100_000_000;

/// Gas the private call gives `NoxCounter.increment()`.
const CALL_GAS: u64 = 100_000;

/// A private call: deposit 1 ETH into NoxPool from the funding address, then
/// `NoxCounter.increment()` through the mixnet, paid from the note; then, if
/// the devnet has oracles, 100 tUSD deposited and the same call paid in tUSD.
async fn private_calls(net: &Devnet) -> anyhow::Result<(serde_json::Value, Option<serde_json::Value>)> {
    use alloy::primitives::{Address, U256};
    use alloy_sol_types::SolCall;
    use nox_client::private::PrivateCall;
    use nox_protocol::contracts::{NoxCounter, NoxTestToken};

    let eth = nox_eth::EthClient::new(&net.rpc_url(), Duration::from_secs(10), None)?;
    let counter = net.deployment.counter;
    let client = net.mixnet_client(Duration::from_millis(1)).await.context("connecting the client")?;
    let outcome = async {
        let path = net.dir().join("user-wallet.bin");
        let t = Instant::now();
        let mut user = net
            .shielded_user(&path, nox_client::wallet::KdfParams::default(), FUNDING_KEY, 10u128.pow(18), &client)
            .await
            .context("funding the user's shielded wallet")?;
        let deposit_ms = t.elapsed().as_millis() as u64;
        let before = eth.view("NoxCounter", counter, NoxCounter::countCall {}).await?;
        let call = PrivateCall::new(counter, NoxCounter::incrementCall {}.abi_encode(), CALL_GAS);
        let t = Instant::now();
        let done = client
            .private_call(&mut user.wallet, &user.prover, &call, |p| eprintln!("private call: {p:?}"))
            .await
            .context("the private call")?;
        let eth_call = check_call(net, &eth, &done, &user, before, deposit_ms, t.elapsed().as_millis() as u64).await?;
        let Some(trust) = net.price_trust() else { return Ok((eth_call, None)) };

        // The same call paid in tUSD, at the oracles' prices.
        let token = net.deployment.fee_token;
        let t = Instant::now();
        net.deposit_fee_token(&mut user, TOKEN_DEPOSIT, &client).await.context("depositing tUSD")?;
        let token_deposit_ms = t.elapsed().as_millis() as u64;
        let prices = client.price_book(&trust).await.context("the entry's price rounds")?;
        let now = prices.fetched_ms;
        let usd = |a: &Address| prices.book.price(&a.0.0, now).map(|p| p.usd as f64 / 1e18).unwrap_or(f64::NAN);
        let (eth_usd, token_usd) = (usd(&Address::ZERO), usd(&token));
        let exit_balances = |who: Vec<Address>| {
            let eth = eth.clone();
            async move {
                let mut total = U256::ZERO;
                for w in who {
                    total += eth.view("tUSD", token, NoxTestToken::balanceOfCall { account: w }).await?;
                }
                anyhow::Ok(total)
            }
        };
        let wallets: Vec<Address> = net.exit_wallets().into_iter().map(|(_, a)| a).collect();
        let exits_before = exit_balances(wallets.clone()).await?;
        let before = eth.view("NoxCounter", counter, NoxCounter::countCall {}).await?;
        let call = call.paid_in(token, trust.clone());
        let t = Instant::now();
        let done = client
            .private_call(&mut user.wallet, &user.prover, &call, |p| eprintln!("token-paid call: {p:?}"))
            .await
            .context("the token-paid private call")?;
        let mut token_call =
            check_call(net, &eth, &done, &user, before, token_deposit_ms, t.elapsed().as_millis() as u64).await?;
        let exits_after = exit_balances(wallets).await?;
        anyhow::ensure!(
            exits_after - exits_before == U256::from(done.fee),
            "the exits' tUSD grew by {}, the fee was {}",
            exits_after - exits_before,
            done.fee
        );
        token_call["fee_asset"] = serde_json::json!(token.to_string());
        token_call["fee_tusd_base_units"] = serde_json::json!(done.fee.to_string());
        token_call["fee_tusd"] = serde_json::json!(done.fee as f64 / 1e6);
        token_call["exit_received_tusd_base_units"] = serde_json::json!((exits_after - exits_before).to_string());
        token_call["oracle_prices_usd"] = serde_json::json!({ "ETH": eth_usd, "TUSD": token_usd });
        token_call["oracle_keys"] =
            serde_json::json!(net.oracles.iter().map(|o| o.public_key_hex()).collect::<Vec<_>>());
        token_call["price_threshold"] = serde_json::json!(trust.threshold);
        Ok((eth_call, Some(token_call)))
    }
    .await;
    client.shutdown().await;
    outcome
}

/// Checks a private call's effect on chain and describes it.
async fn check_call(
    net: &Devnet,
    eth: &nox_eth::EthClient,
    done: &nox_client::private::CallOutcome,
    user: &nox_devnet::ShieldedUser,
    before: alloy::primitives::U256,
    deposit_ms: u64,
    total_ms: u64,
) -> anyhow::Result<serde_json::Value> {
    use alloy::primitives::{Address, U256};
    use alloy::providers::Provider;
    use nox_protocol::contracts::{NoxCounter, NoxPool};
    let counter = net.deployment.counter;
    let after = eth.view("NoxCounter", counter, NoxCounter::countCall {}).await?;
    let last_caller = eth.view("NoxCounter", counter, NoxCounter::lastCallerCall {}).await?;
    let executor = eth.view("NoxPool", net.deployment.pool, NoxPool::executorCall {}).await?;
    let tx = alloy::primitives::B256::from(done.receipt.tx_hash);
    let sent = eth
        .provider()
        .get_transaction_by_hash(tx)
        .await
        .context("reading the relay transaction")?
        .context("the relay transaction is not on chain")?;
    let from: Address = sent.inner.signer();
    anyhow::ensure!(after == before + U256::from(1), "the counter went from {before} to {after}, not up by one");
    anyhow::ensure!(done.receipt.call_success, "the relayed call failed on chain");
    anyhow::ensure!(from == done.exit_wallet, "the transaction was sent by {from}, not the exit's wallet");
    anyhow::ensure!(from != user.funding, "the transaction was sent by the user's funding address");
    Ok(serde_json::json!({
        "tx_hash": tx.to_string(),
        "block": done.receipt.block_number,
        "from": from.to_string(),
        "exit_wallet": done.exit_wallet.to_string(),
        "user_funding_address": user.funding.to_string(),
        "from_is_user": from == user.funding,
        "target": counter.to_string(),
        "counter_before": before.to_string(),
        "counter_after": after.to_string(),
        "counter_last_caller": last_caller.to_string(),
        "pool_executor": executor.to_string(),
        "fee_wei": done.fee_wei.to_string(),
        "gas_used": done.receipt.gas_used,
        "effective_gas_price_wei": done.receipt.effective_gas_price.to_string(),
        "ms": {
            "deposit_and_sync": deposit_ms,
            "fees_through_mixnet": done.timings.fees_ms,
            "prove": done.timings.prove_ms,
            "round_trip": done.timings.round_trip_ms,
            "mixnet_and_checks": done.timings.mixnet_ms(),
            "simulate": done.timings.simulate_ms,
            "inclusion": done.timings.inclusion_ms,
            "total": total_ms,
        },
    }))
}

/// Connects a mixnet client through a registered entry, serves the JSON-RPC
/// proxy in front of it, and has `cast` send 1 ETH to a fresh address through
/// it and read the balance and receipt back through it.
async fn private_transfer(net: &Devnet) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let client = Arc::new(net.mixnet_client(Duration::from_millis(5)).await.context("connecting the client")?);
    let proxy = start_proxy(client.clone()).await?;
    let url = proxy.url.clone();
    let url = url.as_str();
    let to = alloy::signers::local::PrivateKeySigner::random().address().to_string();
    let block = cast(&["block-number", "--rpc-url", url]).await?;
    let sent = Instant::now();
    let receipt =
        cast(&["send", "--json", "--rpc-url", url, "--private-key", USER_KEY, &to, "--value", "1ether"]).await?;
    let send_ms = sent.elapsed().as_secs_f64() * 1e3;
    let receipt: serde_json::Value = serde_json::from_str(&receipt).context("cast send's receipt")?;
    let hash = receipt["transactionHash"].as_str().unwrap_or_default().to_owned();
    let balance = cast(&["balance", "--rpc-url", url, &to]).await?;
    let status = cast(&["receipt", "--rpc-url", url, &hash, "status"]).await?;
    proxy.stop().await;
    if let Ok(client) = Arc::try_unwrap(client) {
        client.shutdown().await;
    }
    anyhow::ensure!(balance == "1000000000000000000", "the recipient holds {balance} wei, not 1 ETH");
    Ok(serde_json::json!({
        "proxy": url,
        "block_number_before": block,
        "to": to,
        "tx_hash": hash,
        "block": receipt["blockNumber"],
        "status": status,
        "recipient_balance_wei": balance,
        "cast_send_ms": send_ms,
        "total_ms": started.elapsed().as_secs_f64() * 1e3,
    }))
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
        oracles: usize::from(cli.oracles),
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
            "counter": net.deployment.counter.to_string(),
            "fee_token_tusd": net.deployment.fee_token.to_string(),
        },
        "oracles": net.oracles.iter().map(|o| serde_json::json!({
            "public_key": o.public_key_hex(),
            "http": o.http().to_string(),
        })).collect::<Vec<_>>(),
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

    // A wallet's view: cast, pointed at the local proxy, sends a signed
    // transfer and reads it back; every call leaves through the mixnet.
    let transfer = private_transfer(&net).await.context("cast through the NOX proxy")?;
    println!("{}", serde_json::json!({ "cast_through_proxy": transfer }));

    // The main job: a private, proof-paid call from a shielded wallet.
    let call = private_calls(&net).await;
    match &call {
        Ok((call, token_call)) => {
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "private_call": call }))?);
            if let Some(t) = token_call {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "private_call_paid_in_tusd": t }))?);
            }
        }
        Err(e) => eprintln!("the private call failed: {e:#}"),
    }
    if call.is_err() && !cli.keep_running {
        net.shutdown().await;
        anyhow::bail!("the private call's effect is not on chain");
    }

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
