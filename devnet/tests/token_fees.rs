//! Private calls paid in a token, priced by the network's own oracles.
//!
//! One devnet for the file: two oracles (in-process, the `nox-oracle` code)
//! read three local HTTP servers that answer in the Binance, CoinGecko and
//! Coinbase formats — the real APIs are out of reach here — and publish
//! signed rounds to every node; every exit takes fees in ETH and in the
//! deployment's NoxTestDollar (tUSD, six decimals). One test walks through
//! what a user and an operator would see, in order:
//!
//! 1. a call paid in tUSD lands, and the exit is paid the fee in tUSD at the
//!    oracles' price;
//! 2. one source quoting far off is thrown out, and one answering garbage is
//!    ignored: the next call is priced as before;
//! 3. with all but one source down the oracles publish nothing; once the
//!    last rounds are stale the client refuses to price a token fee, and an
//!    exit asked by a client that trusts stale rounds refuses with `no_price`
//!    and sends nothing (the note stays spendable);
//! 4. with the sources back, token calls work again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy_sol_types::SolCall;
use nox_client::private::{CallError, PrivateCall};
use nox_client::wallet::KdfParams;
use nox_devnet::price_apis::{Api, Behaviour};
use nox_devnet::{Devnet, DevnetOptions, metric_sum};
use nox_eth::EthClient;
use nox_protocol::answer::EthRefusalCode;
use nox_protocol::contracts::{NoxCounter, NoxTestToken};

/// anvil's account #1: funds this file's user (#4–#9 are the exits' wallets).
const FUNDING_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
/// 20 tUSD.
const TOKEN_DEPOSIT: u128 = 20_000_000;

fn eth(net: &Devnet) -> EthClient {
    EthClient::new(&net.rpc_url(), Duration::from_secs(10), None).unwrap()
}

async fn count(net: &Devnet) -> U256 {
    eth(net).view("NoxCounter", net.deployment.counter, NoxCounter::countCall {}).await.unwrap()
}

async fn token_balance(net: &Devnet, who: Address) -> U256 {
    eth(net).view("tUSD", net.deployment.fee_token, NoxTestToken::balanceOfCall { account: who }).await.unwrap()
}

/// `nox_events_total{kind="exit_eth_request",outcome="no_price"}` summed over the exits.
async fn exit_no_price_refusals(net: &Devnet) -> u64 {
    let mut n = 0;
    for idx in net.layer(2) {
        let text = net.metrics_of(idx).await.unwrap();
        n += metric_sum(&text, "nox_events_total", &["kind=\"exit_eth_request\"", "outcome=\"no_price\""]);
    }
    n
}

async fn oracle_metrics(net: &Devnet, idx: usize) -> String {
    reqwest_text(&format!("http://{}/metrics", net.oracles[idx].http())).await
}

/// Waits until the change of the last call is a spendable tUSD note again
/// (inserted from the user's funding account: exits flush only full
/// segments of queued leaves).
async fn wait_change(net: &Devnet, user: &mut nox_devnet::ShieldedUser, client: &nox_client::Client) {
    user.wait_spendable(client, net.deployment.fee_token, 1).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn token_fees_follow_the_oracles_and_stop_when_prices_go_stale() {
    let opts = DevnetOptions {
        oracles: 2,
        oracle_interval_ms: 500,
        price_max_age_secs: 4,
        exit_flush_every_secs: 2,
        ..DevnetOptions::default()
    };
    let mut net = Devnet::start(opts).await.unwrap();
    let trust = net.price_trust().unwrap();
    assert_eq!((trust.oracles.len(), trust.threshold), (2, 2));
    let client = net.mixnet_client(Duration::from_millis(1)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut user = net
        .shielded_user(&dir.path().join("wallet.bin"), KdfParams::insecure_fast(), FUNDING_KEY, 10u128.pow(15), &client)
        .await
        .unwrap();
    net.deposit_fee_token(&mut user, TOKEN_DEPOSIT, &client).await.unwrap();
    let token = net.deployment.fee_token;
    let call = || {
        PrivateCall::new(net.deployment.counter, NoxCounter::incrementCall {}.abi_encode(), 100_000)
            .paid_in(token, trust.clone())
    };

    // 1. A call paid in tUSD lands; the exit's wallet receives the fee in tUSD.
    let wallets: Vec<Address> = net.exit_wallets().into_iter().map(|(_, a)| a).collect();
    let mut before = Vec::new();
    for w in &wallets {
        before.push(token_balance(&net, *w).await);
    }
    let counted = count(&net).await;
    let done = client.private_call(&mut user.wallet, &user.prover, &call(), |_| {}).await.unwrap();
    assert!(done.receipt.tx_success && done.receipt.call_success);
    assert_eq!(count(&net).await, counted + U256::from(1));
    assert_eq!(Address::from(done.receipt.asset), token);
    assert_eq!(done.asset, token);
    assert_eq!(done.receipt.fee, done.fee);
    let mut gained = U256::ZERO;
    for (w, b) in wallets.iter().zip(&before) {
        gained += token_balance(&net, *w).await - *b;
    }
    assert_eq!(gained, U256::from(done.fee), "the exit is paid exactly the fee, in tUSD");
    // At 3,000 USD per ETH and 1 USD per tUSD, one base unit (1e-6 tUSD)
    // is worth 1e-6 / 3000 ETH = 1e18 / 3e9 wei; the fee's stated worth in
    // wei agrees within the rounding of one base unit.
    let per_unit = 10u128.pow(18) / 3_000_000_000;
    assert!(done.fee_wei.abs_diff(done.fee * per_unit) <= per_unit, "{} vs {}", done.fee_wei, done.fee * per_unit);
    let first_fee = done.fee;

    // 2. A source far off is discarded, one answering garbage is ignored:
    //    the median of the agreeing sources keeps the price where it was.
    let apis = net.price_apis().unwrap();
    apis.set(Api::Coinbase, Behaviour::Off(1.5));
    apis.set(Api::CoinGecko, Behaviour::Garbage);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // With the garbage source out, Binance and Coinbase are the only quotes
    // and disagree by 50 %: nothing agrees, so the oracles withhold. Put
    // CoinGecko back: two of three agree and Coinbase is the outlier.
    apis.set(Api::CoinGecko, Behaviour::Up);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for idx in 0..net.oracles.len() {
        let m = oracle_metrics(&net, idx).await;
        assert!(
            metric_sum(&m, "nox_oracle_quotes_discarded_total", &["source=\"coinbase\"", "reason=\"outlier\""]) > 0,
            "{m}"
        );
        assert!(metric_sum(&m, "nox_oracle_source_errors_total", &["source=\"coingecko\""]) > 0, "{m}");
    }
    wait_change(&net, &mut user, &client).await;
    let done = client.private_call(&mut user.wallet, &user.prover, &call(), |_| {}).await.unwrap();
    assert!(done.receipt.call_success);
    // Gas and base fee move a little between calls; a price 50 % off would
    // move the fee by a third.
    let ratio = done.fee as f64 / first_fee as f64;
    assert!((0.8..1.25).contains(&ratio), "fee {} after {first_fee}", done.fee);

    // 3. All but one source down: no round is published, prices go stale.
    wait_change(&net, &mut user, &client).await;
    apis.set(Api::Coinbase, Behaviour::Down);
    apis.set(Api::CoinGecko, Behaviour::Down);
    tokio::time::sleep(Duration::from_secs(trust.max_age_ms / 1000 + 2)).await;
    for idx in 0..net.oracles.len() {
        let m = oracle_metrics(&net, idx).await;
        assert!(metric_sum(&m, "nox_oracle_rounds_withheld_total", &["reason=\"no_asset_priced\""]) > 0, "{m}");
    }
    //    The client checks the rounds its entry serves against its own
    //    trust: all stale, so it refuses before proving anything.
    match client.private_call(&mut user.wallet, &user.prover, &call(), |_| {}).await {
        Err(CallError::NoPrice { .. }) => {}
        other => panic!("expected NoPrice, got {other:?}"),
    }
    //    A client that trusts rounds of any age prices the fee and asks;
    //    the exit's own book is stale, so it refuses and sends nothing.
    let mut lenient = trust.clone();
    lenient.max_age_ms = 3_600_000;
    let refusals = exit_no_price_refusals(&net).await;
    let counted = count(&net).await;
    let lenient_call = PrivateCall::new(net.deployment.counter, NoxCounter::incrementCall {}.abi_encode(), 100_000)
        .paid_in(token, lenient);
    match client.private_call(&mut user.wallet, &user.prover, &lenient_call, |_| {}).await {
        Err(CallError::ExitHasNoPrice(r)) => assert_eq!(r.code, EthRefusalCode::NoPrice),
        other => panic!("expected the exit's no_price, got {other:?}"),
    }
    assert_eq!(count(&net).await, counted, "nothing was sent");
    assert!(exit_no_price_refusals(&net).await > refusals);
    assert!(user.wallet.select(token, 1).is_ok(), "the note is spendable again");

    // 4. Sources back: the next rounds price tUSD again.
    apis.set(Api::Coinbase, Behaviour::Up);
    apis.set(Api::CoinGecko, Behaviour::Up);
    net.wait_prices(Duration::from_secs(30)).await.unwrap();
    let done = client.private_call(&mut user.wallet, &user.prover, &call(), |_| {}).await.unwrap();
    assert!(done.receipt.call_success);

    client.shutdown().await;
    for idx in 0..net.oracles.len() {
        net.stop_oracle(idx).await;
    }
    net.shutdown().await;
}

async fn reqwest_text(url: &str) -> String {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || match ureq::get(&url).call() {
        Ok(r) => r.into_string().unwrap_or_default(),
        Err(_) => String::new(),
    })
    .await
    .unwrap()
}
