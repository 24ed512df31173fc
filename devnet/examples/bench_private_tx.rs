//! What a private, proof-paid call costs: time on the user's machine and
//! through the network, and gas on chain.
//!
//! Brings up a devnet of nine staked nodes (three per layer, in this
//! process; the exits perform paid calls), a `nox_client::Client` with a 1 ms
//! mean per-hop delay and no cover, and a shielded wallet holding `--calls`
//! notes (one deposit each, so that no call waits for the change of the one
//! before). Then `--calls` private calls of `NoxCounter.increment()`, one at a
//! time, each timed in parts:
//!
//! * `prove_ms` — building the spend and the Groth16 proof on this machine;
//! * `rtt_ms` — from sending the `EthRequest` to its answer: the mixnet both
//!   ways, the exit's checks and proof verification, its `eth_simulateV1`,
//!   sending the transaction and waiting for its receipt (anvil mines at once);
//! * `simulate_ms` — the exit's simulation, as it reports it;
//! * `total_ms` — the whole call: fees read through the mixnet, proof, round trip.
//!
//! Gas: `gas_relay` is the relay transaction's gas (median), and
//! `gas_flush_per_note` one `flush` of all the calls' change notes (queued by
//! the relays) divided by their number: the wallet inserts them from its
//! funding address at the end (`Wallet::insert_now`); exits flush full
//! segments on a cadence, which the devnet sets long so that this flush finds
//! them queued. `gas_all_in` is their sum, a private transaction's gas
//! including its share of inserting its change note (the goal: < 350 k). The
//! deposits are inserted the same way before the calls.
//!
//! Prints one line: `prove_ms_p50= rtt_ms_p50= rtt_ms_p99= simulate_ms_p50=
//! total_ms_p50= gas_relay= gas_flush_per_note= gas_all_in= …`. Goals: round trip without
//! the proof p50 < 50 ms, total with it p50 < 600 ms. Anchor: the system NOX
//! replaces reports about 170 ms median for a DeFi round trip and about 10 M
//! gas per proof-paid transaction.
//!
//! Run: `scripts/bench-private-tx [--calls N] [--mean-delay-ms D]`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/mod.rs"]
mod common;

use common::{arg, percentile};
use std::time::{Duration, Instant};

use alloy_sol_types::SolCall;
use nox_client::private::PrivateCall;
use nox_client::wallet::{KdfParams, PoolReader};
use nox_devnet::{Devnet, DevnetOptions, Launch};
use nox_protocol::contracts::NoxCounter;

/// anvil's account #3 (#4–#9 are the exits' wallets).
const FUNDING_KEY: &str = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6";

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let calls = arg("--calls", 20.0).max(1.0) as usize;
    let mean_delay = Duration::from_secs_f64(arg("--mean-delay-ms", 1.0) / 1000.0);
    let opts = DevnetOptions {
        per_layer: [3, 3, 3],
        launch: Launch::InProcess,
        exit_flush_every_secs: 3600,
        ..DevnetOptions::default()
    };
    let net = Devnet::start(opts).await.unwrap();
    let client = net.mixnet_client(mean_delay).await.unwrap();
    let path = net.dir().join("bench-wallet.bin");
    let note = 10u128.pow(17);
    let mut user = net.shielded_user(&path, KdfParams::insecure_fast(), FUNDING_KEY, note, &client).await.unwrap();
    // One note per call: a call's change waits for a flush, the next call
    // takes a fresh note.
    let eth = nox_eth::EthClient::new(
        &net.rpc_url(),
        Duration::from_secs(10),
        Some(FUNDING_KEY.parse::<alloy::signers::local::PrivateKeySigner>().unwrap()),
    )
    .unwrap();
    for _ in 1..calls {
        user.wallet.deposit_eth(&eth, note).await.unwrap();
    }
    if calls > 1 {
        user.wallet.insert_now(&eth, 0).await.unwrap().expect("the deposits were queued");
    }
    user.wallet.sync(&eth as &dyn PoolReader, 0).await.unwrap();

    let increment = NoxCounter::incrementCall {}.abi_encode();
    let call = PrivateCall::new(net.deployment.counter, increment, 100_000);
    let (mut prove, mut rtt, mut simulate, mut total, mut gas) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..calls {
        let t = Instant::now();
        let done = client.private_call(&mut user.wallet, &user.prover, &call, |_| {}).await.unwrap();
        total.push(t.elapsed().as_secs_f64() * 1e3);
        prove.push(done.timings.prove_ms as f64);
        rtt.push(done.timings.round_trip_ms as f64);
        simulate.push(done.timings.simulate_ms as f64);
        gas.push(done.receipt.gas_used as f64);
        assert!(done.receipt.call_success);
    }
    let flush = user.wallet.insert_now(&eth, 0).await.unwrap().expect("the change notes were queued");
    assert_eq!(flush.count, calls as u64, "only the calls' change notes were queued");
    let receipt = eth.wait_receipt("flush", flush.tx_hash).await.unwrap();
    let per_note = receipt.gas_used as f64 / flush.count as f64;
    for v in [&mut prove, &mut rtt, &mut simulate, &mut total, &mut gas] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "prove_ms_p50={:.0} rtt_ms_p50={:.1} rtt_ms_p99={:.1} simulate_ms_p50={:.1} total_ms_p50={:.0} \
         gas_relay={:.0} gas_flush_per_note={:.0} gas_all_in={:.0} flushed_notes={} calls={calls} nodes=9 \
         mean_delay_ms={} goal_rtt_ms_p50<50 goal_total_ms_p50<600 goal_gas_all_in<350000 anchor_rtt_ms_p50~170 \
         anchor_gas~10000000",
        percentile(&prove, 0.5),
        percentile(&rtt, 0.5),
        percentile(&rtt, 0.99),
        percentile(&simulate, 0.5),
        percentile(&total, 0.5),
        percentile(&gas, 0.5),
        per_note,
        percentile(&gas, 0.5) + per_note,
        flush.count,
        mean_delay.as_secs_f64() * 1e3,
    );
    client.shutdown().await;
    net.shutdown().await;
}
