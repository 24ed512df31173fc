//! The main job on a whole devnet: a user's shielded wallet pays an exit for a
//! contract call with a spend proof, through the mixnet, and nothing on chain
//! points back to the user.
//!
//! One devnet for the file (bringing one up costs seconds): one test walks
//! through the library's cases in order (the call lands; the user's address
//! is nowhere in the transaction; a spent note is not offered again; a refused
//! call sends nothing and frees the note; the change is queued by the relay,
//! spendable once a flush inserts it, and pays the next call; a deadline the
//! exit finds too near is refused and frees the note), and one drives the
//! `nox-client` binary (`wallet new`, `deposit --insert-now`, `balance`,
//! `call`, `call --insert-now`) as a user would, against a second devnet.
//!
//! NoxPool v2 queues every new note until a flush inserts it, and exits flush
//! only full segments of 32 leaves, which these few notes never fill: the
//! user inserts its own notes from its funding account (a test's shortcut for
//! change notes; a private user waits for a flush by anyone).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy_sol_types::SolCall;
use nox_client::private::{CallError, PrivateCall};
use nox_client::wallet::{KdfParams, PoolReader, WalletError};
use nox_devnet::{Devnet, DevnetOptions};
use nox_eth::EthClient;
use nox_protocol::answer::EthRefusalCode;
use nox_protocol::contracts::NoxCounter;
use serde_json::Value;

/// anvil's account #2: funds the user's deposits (#4–#9 are the exits' wallets).
const FUNDING_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";

fn eth(net: &Devnet) -> EthClient {
    EthClient::new(&net.rpc_url(), Duration::from_secs(10), None).unwrap()
}

async fn count(net: &Devnet) -> U256 {
    eth(net).view("NoxCounter", net.deployment.counter, NoxCounter::countCall {}).await.unwrap()
}

async fn nonce(net: &Devnet, who: Address) -> u64 {
    eth(net).provider().get_transaction_count(who).await.unwrap()
}

/// Every byte string of a transaction and its receipt a chain observer sees:
/// sender, recipient, input, log addresses, topics and data.
async fn public_bytes(net: &Devnet, tx: B256) -> (Address, Vec<Vec<u8>>) {
    let p = eth(net);
    let sent = p.provider().get_transaction_by_hash(tx).await.unwrap().unwrap();
    let receipt = p.provider().get_transaction_receipt(tx).await.unwrap().unwrap();
    let mut seen = vec![alloy::consensus::Transaction::input(&sent).to_vec()];
    if let Some(to) = alloy::consensus::Transaction::to(&sent) {
        seen.push(to.to_vec());
    }
    for log in receipt.inner.logs() {
        seen.push(log.address().to_vec());
        seen.extend(log.topics().iter().map(|t| t.to_vec()));
        seen.push(log.data().data.to_vec());
    }
    (sent.inner.signer(), seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_call_is_paid_from_a_note_and_names_only_the_exit() {
    let net = Devnet::start(DevnetOptions::default()).await.unwrap();
    let client = net.mixnet_client(Duration::from_millis(1)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let deposit = 10u128.pow(17);
    let mut user = net
        .shielded_user(&dir.path().join("wallet.bin"), KdfParams::insecure_fast(), FUNDING_KEY, deposit, &client)
        .await
        .unwrap();
    let counter = net.deployment.counter;
    let increment = PrivateCall::new(counter, NoxCounter::incrementCall {}.abi_encode(), 100_000);

    // 1. The call lands: the counter moves, the sender is the exit's wallet,
    //    and the user's funding address appears nowhere in the transaction.
    let before = count(&net).await;
    let done = client.private_call(&mut user.wallet, &user.prover, &increment, |_| {}).await.unwrap();
    assert_eq!(count(&net).await, before + U256::from(1));
    assert!(done.receipt.tx_success && done.receipt.call_success);
    assert!(done.fee > 0 && done.fee < deposit);
    let exits: Vec<Address> = net.exit_wallets().into_iter().map(|(_, a)| a).collect();
    assert!(exits.contains(&done.exit_wallet));
    let (from, seen) = public_bytes(&net, B256::from(done.receipt.tx_hash)).await;
    assert_eq!(from, done.exit_wallet);
    let user_address = user.funding.to_vec();
    for bytes in &seen {
        assert!(
            !bytes.windows(20).any(|w| w == user_address.as_slice()),
            "the user's address appears in the relay transaction"
        );
    }
    let last = eth(&net).view("NoxCounter", counter, NoxCounter::lastCallerCall {}).await.unwrap();
    assert_ne!(last, user.funding, "the target saw the user's address");

    // 2. The spent note is not offered again; its change is queued by the
    //    relay (it has its leaf index) but not in the tree yet.
    user.wallet.sync(&eth(&net) as &dyn PoolReader, 0).await.unwrap();
    let change = deposit - done.fee;
    assert!(
        matches!(user.wallet.select(Address::ZERO, 1), Err(WalletError::OnlyQueued { queued, .. }) if queued == change),
        "{:?}",
        user.wallet.balances()
    );
    assert!(user.wallet.select(Address::ZERO, deposit).is_err(), "the spent deposit is offered again");

    // 3. Inserted (one flush of the open segment, from the funding account),
    //    the change is spendable.
    user.wait_spendable(&client, Address::ZERO, change).await.unwrap();
    let balance = user.wallet.balances().into_iter().find(|b| b.asset == Address::ZERO).unwrap();
    assert_eq!((balance.spendable, balance.queued), (change, 0));

    // 4. A call that fails, asked for success only: refused with the revert
    //    data, nothing sent (the exit's nonce is unchanged), the note freed.
    let fail = PrivateCall::new(counter, NoxCounter::failCall { reason: "no".into() }.abi_encode(), 100_000);
    let nonces: Vec<u64> = futures_nonces(&net, &exits).await;
    let refused = client.private_call(&mut user.wallet, &user.prover, &fail, |_| {}).await.unwrap_err();
    let CallError::Refused(refusal) = refused else { panic!("expected a refusal, got {refused}") };
    assert_eq!(refusal.code, EthRefusalCode::CallFails);
    assert!(!refusal.detail.is_empty(), "the refusal carries the revert data");
    assert_eq!(futures_nonces(&net, &exits).await, nonces, "an exit sent a transaction for a refused call");
    assert!(user.wallet.select(Address::ZERO, change).is_ok(), "the refused call's note was not released");

    // 5. A deadline nearer than the exit accepts (exit.eth_min_deadline_secs,
    //    60 s by default) is refused `expired` before anything is sent; the
    //    note is free again.
    let hasty = PrivateCall { deadline_secs: 5, ..increment.clone() };
    let nonces = futures_nonces(&net, &exits).await;
    match client.private_call(&mut user.wallet, &user.prover, &hasty, |_| {}).await {
        Err(CallError::DeadlineTooNear { deadline, earliest: Some(earliest), .. }) => assert!(earliest > deadline),
        other => panic!("expected DeadlineTooNear, got {other:?}"),
    }
    assert_eq!(futures_nonces(&net, &exits).await, nonces, "an exit sent a transaction for an expired call");
    assert!(user.wallet.select(Address::ZERO, change).is_ok(), "the expired call's note was not released");

    // 6. The change pays the next call.
    let again = client.private_call(&mut user.wallet, &user.prover, &increment, |_| {}).await.unwrap();
    assert!(again.receipt.call_success);
    assert_eq!(count(&net).await, before + U256::from(2));

    // 7. The wallet file holds all of it: reopened, the same notes.
    let path = user.wallet.path().to_path_buf();
    let notes = user.wallet.notes().len();
    drop(user);
    let reopened = nox_client::wallet::Wallet::open(&path, "devnet user").unwrap();
    assert_eq!(reopened.notes().len(), notes);

    client.shutdown().await;
    net.shutdown().await;
}

async fn futures_nonces(net: &Devnet, exits: &[Address]) -> Vec<u64> {
    let mut out = Vec::new();
    for e in exits {
        out.push(nonce(net, *e).await);
    }
    out
}

/// Runs `nox-client ARGS` with the wallet's passphrase and the funding key in
/// its environment; returns stdout as JSON, or panics with stderr.
async fn nox_client(args: &[&str], config: &Path) -> Value {
    let bin = nox_devnet::nox_client_binary().unwrap();
    let out = tokio::process::Command::new(bin)
        .args(args)
        .arg("--config")
        .arg(config)
        .env("NOX_WALLET_PASSPHRASE", "a user's passphrase")
        .env("NOX_FUNDING_KEY", FUNDING_KEY)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "nox-client {args:?} failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("nox-client {args:?} printed {stdout}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_command_line_makes_a_private_call() {
    let net = Devnet::start(DevnetOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = net.client_file();
    cfg.wallet.path = dir.path().join("wallet.bin");
    cfg.wallet.pool = Some(net.pool().to_string());
    cfg.wallet.rpc_url = Some(net.rpc_url());
    cfg.wallet.confirmations = 0;
    cfg.wallet.proving_keys = Some(net.keys_dir().to_path_buf());
    let config = dir.path().join("nox-client.toml");
    std::fs::write(&config, toml::to_string(&cfg).unwrap()).unwrap();

    let created = nox_client(&["wallet", "new"], &config).await;
    assert_eq!(created["pool"].as_str().unwrap().to_lowercase(), net.pool().to_string().to_lowercase());
    // The deposit pays its insertion bounty and is queued; --insert-now
    // flushes it from the same funding key.
    let deposit = nox_client(&["wallet", "deposit", "--amount", "0.2", "--insert-now"], &config).await;
    assert_eq!(deposit["value"], "200000000000000000");
    assert_ne!(deposit["bounty_wei"], "0", "{deposit}");
    assert_eq!(deposit["leaf"], 0, "{deposit}");
    assert_eq!((deposit["insert"]["first"].as_u64(), deposit["insert"]["count"].as_u64()), (Some(0), Some(1)));
    let balance = nox_client(&["wallet", "balance"], &config).await;
    assert_eq!(balance["balances"][0]["spendable"], "200000000000000000", "{balance}");
    assert_eq!(balance["queued_leaves"], 0, "{balance}");

    let before = count(&net).await;
    let counter = net.deployment.counter.to_string();
    let call = nox_client(&["call", &counter, "incrementBy(uint256)", "7", "--gas", "100000"], &config).await;
    assert_eq!(count(&net).await, before + U256::from(7));
    assert_eq!(call["call_success"], true);
    let from: Address = call["from"].as_str().unwrap().parse().unwrap();
    assert!(net.exit_wallets().into_iter().any(|(_, a)| a == from), "{call}");
    let funding: alloy::signers::local::PrivateKeySigner = FUNDING_KEY.parse().unwrap();
    assert_ne!(from, funding.address());

    // The next call can only be paid by the first one's change, which the
    // relay queued: with --insert-now the command inserts it from the funding
    // key (exits would wait for a full segment), then pays with it.
    let second = nox_client(&["call", &counter, "increment()", "--insert-now"], &config).await;
    assert_eq!(second["call_success"], true, "{second}");
    assert_eq!(count(&net).await, before + U256::from(8));

    // A wrong passphrase is refused with a clear error, and nothing changes.
    let bin = nox_devnet::nox_client_binary().unwrap();
    let out = std::process::Command::new(bin)
        .args(["wallet", "balance", "--config"])
        .arg(&config)
        .env("NOX_WALLET_PASSPHRASE", "not it")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));

    net.shutdown().await;
}
