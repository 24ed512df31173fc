//! Paid calls on a whole devnet: a user deposits ETH into NoxPool, proves a
//! spend that pays an exit and binds a call of NoxCounter, and sends the
//! `EthRequest` through entry → mix → exit with `nox_client::Client`. What
//! the user notices: the call lands, sent by the exit's wallet, and the
//! answer is its receipt; each request the exit must not pay for gets its
//! typed refusal and the exit sends nothing (its wallet's nonce does not
//! move); the same payment sent twice is one transaction; an exit that dies
//! right after broadcasting comes back without sending it again and with
//! the next nonce; a proof past its deadline is refused before anything is
//! sent; the exit flushes a closed segment of 32 queued leaves by itself
//! (paid by the bounty), and the open one once it has waited
//! `exit.eth_flush_open_after_secs`.
//!
//! Requests are built here from the circuits (deposit, the user's own flush
//! of the open segment that holds the deposit, local mirror of the tree from
//! the pool's `Queued` events, Spend, Groth16 proof with the devnet's
//! development keys), not with the client's wallet.
//!
//! One devnet for the file: one test walks through the cases in order.
//! Needs `npm ci` (anvil, forge).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolError, SolEvent};
use ark_bn254::Fr;
use nox_circuits::field::{from_be32, to_hex};
use nox_circuits::note::{Note, SpendingKey, address_to_fr};
use nox_circuits::pool::{Execution, execution_hash};
use nox_circuits::spend::Spend;
use nox_circuits::tree::{MerkleTree, TREE_DEPTH};
use nox_client::Client;
use nox_client::wallet::Prover;
use nox_devnet::anvil::{CHAIN_ID, DEPLOYER_KEY};
use nox_devnet::{Devnet, DevnetOptions};
use nox_eth::EthClient;
use nox_node::faults::Faults;
use nox_protocol::NodeId;
use nox_protocol::answer::{EthReceipt, EthRefusal, EthRefusalCode};
use nox_protocol::contracts::{NoxCounter, NoxPool, NoxTestToken};
use nox_protocol::payload::{ReplyStatus, Request};
use nox_protocol::payment::GasPayment;

/// anvil's account #2: the depositing user.
const USER_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
const ETH: u128 = 1_000_000_000_000_000_000;
const CALL_GAS: u64 = 100_000;
/// The proofs' deadline: far enough for every retry of the walk-through.
const DEADLINE_SECS: u64 = 3600;

fn word(f: Fr) -> [u8; 32] {
    hex::decode(&to_hex(&f)[2..]).unwrap().try_into().unwrap()
}

fn fr_of(u: U256) -> Fr {
    from_be32(&u.to_be_bytes::<32>()).unwrap()
}

struct User {
    eth: EthClient,
    deployer: EthClient,
    pool: Address,
    token: Address,
    prover: Prover,
}

/// A deposited note the user can spend.
#[derive(Clone)]
struct Owned {
    sk: SpendingKey,
    note: Note,
    index: u64,
}

impl User {
    async fn new(net: &Devnet) -> User {
        let signer: PrivateKeySigner = USER_KEY.parse().unwrap();
        let eth = EthClient::new(&net.rpc_url(), Duration::from_secs(10), Some(signer)).unwrap();
        let deployer =
            EthClient::new(&net.rpc_url(), Duration::from_secs(10), Some(DEPLOYER_KEY.parse().unwrap())).unwrap();
        let prover = Prover::from_keys(nox_devnet::zk::dev_keys().unwrap().clone());
        User { eth, deployer, pool: net.pool(), token: net.deployment.token, prover }
    }

    /// The insertion bounty to send with a queueing call.
    async fn bounty(&self) -> U256 {
        let bounty: U256 = self.eth.view("NoxPool", self.pool, NoxPool::insertionBountyCall {}).await.unwrap();
        bounty * U256::from(2)
    }

    /// Deposits `value` wei as a fresh note, queued (not yet spendable).
    async fn queue_eth(&self, value: u128) -> Owned {
        let sk = SpendingKey::random(&mut rand::rngs::OsRng);
        let note = Note::new(Fr::from(0u64), value, sk.owner(), &mut rand::rngs::OsRng);
        let data = NoxPool::depositCall { value: U256::from(value), secret: U256::from_be_bytes(word(note.secret())) }
            .abi_encode();
        let tx = TransactionRequest::default()
            .with_from(self.eth.sender().unwrap())
            .with_to(self.pool)
            .with_value(U256::from(value) + self.bounty().await)
            .with_input(data);
        let receipt = self.eth.provider().send_transaction(tx).await.unwrap().get_receipt().await.unwrap();
        assert!(receipt.status());
        self.owned(sk, note, &receipt).await
    }

    /// Deposits `value` wei as a fresh note and inserts it at once (the
    /// depositor's own flush of the open segment: a deposit is public anyway).
    async fn deposit_eth(&self, value: u128) -> Owned {
        let owned = self.queue_eth(value).await;
        self.insert_all().await;
        owned
    }

    /// Every leaf queued so far with its bounty, by index, from the `Queued` logs.
    async fn queued(&self) -> Vec<(U256, U256)> {
        let filter = Filter::new().address(self.pool).event_signature(NoxPool::Queued::SIGNATURE_HASH).from_block(0);
        let mut leaves: Vec<(u64, (U256, U256))> = self
            .eth
            .logs(&filter)
            .await
            .unwrap()
            .iter()
            .map(|l| NoxPool::Queued::decode_log(&l.inner).unwrap())
            .map(|e| (e.leafIndex.to::<u64>(), (e.commitment, e.bounty)))
            .collect();
        leaves.sort();
        leaves.iter().enumerate().for_each(|(i, (index, _))| assert_eq!(*index, i as u64, "contiguous"));
        leaves.into_iter().map(|(_, leaf)| leaf).collect()
    }

    /// Flushes every queued leaf (the closed segments and the open one).
    async fn insert_all(&self) {
        let next: U256 = self.eth.view("NoxPool", self.pool, NoxPool::nextIndexCall {}).await.unwrap();
        let (leaves, bounties) = self.queued().await.split_off(next.to::<usize>()).into_iter().unzip();
        let flush = NoxPool::flushCall { leaves, bounties };
        if flush.leaves.is_empty() {
            return;
        }
        let flush = flush.abi_encode();
        self.eth.transact("NoxPool.flush", self.pool, flush).await.unwrap();
    }

    /// Deposits `value` of the test token (the deployer holds it) as a fresh note.
    async fn deposit_token(&self, value: u128) -> Owned {
        let sk = SpendingKey::random(&mut rand::rngs::OsRng);
        let asset = address_to_fr(&self.token.0.0);
        let note = Note::new(asset, value, sk.owner(), &mut rand::rngs::OsRng);
        let me = self.deployer.sender().unwrap();
        let mint = NoxTestToken::mintCall { to: me, amount: U256::from(value) }.abi_encode();
        self.deployer.transact("mint", self.token, mint).await.unwrap();
        let approve = NoxTestToken::approveCall { spender: self.pool, value: U256::from(value) }.abi_encode();
        self.deployer.transact("approve", self.token, approve).await.unwrap();
        let deposit = NoxPool::depositERC20Call {
            token: self.token,
            amount: U256::from(value),
            secret: U256::from_be_bytes(word(note.secret())),
        }
        .abi_encode();
        let bounty = self.bounty().await;
        let receipt = self.deployer.transact_with_value("depositERC20", self.pool, deposit, bounty).await.unwrap();
        let owned = self.owned(sk, note, &receipt).await;
        self.insert_all().await;
        owned
    }

    async fn owned(&self, sk: SpendingKey, note: Note, receipt: &alloy::rpc::types::TransactionReceipt) -> Owned {
        let commitment = U256::from_be_bytes(word(note.commitment()));
        let index = receipt
            .inner
            .logs()
            .iter()
            .filter_map(|l| NoxPool::Queued::decode_log(&l.inner).ok())
            .find(|e| e.commitment == commitment)
            .map(|e| e.leafIndex.to::<u64>())
            .expect("the deposit queues its commitment");
        Owned { sk, note, index }
    }

    /// The pool's tree: its inserted leaves, mirrored from the `Queued`
    /// events; its root is the pool's current root.
    async fn tree(&self) -> MerkleTree {
        let next: U256 = self.eth.view("NoxPool", self.pool, NoxPool::nextIndexCall {}).await.unwrap();
        let mut tree = MerkleTree::new(TREE_DEPTH);
        for (c, _) in self.queued().await.into_iter().take(next.to::<usize>()) {
            tree.insert(fr_of(c)).unwrap();
        }
        let root: U256 = self.eth.view("NoxPool", self.pool, NoxPool::currentRootCall {}).await.unwrap();
        assert_eq!(U256::from_be_bytes(word(tree.root())), root, "the mirror has the pool's root");
        tree
    }

    /// A proof spending `owned` that pays `fee` to `recipient` for the call
    /// `(target, call_gas, data)`, against `tree`.
    fn pay(&self, tree: &MerkleTree, owned: &Owned, fee: u128, recipient: Address, exec: Fr) -> GasPayment {
        let change = Note::new(owned.note.asset, owned.note.value - fee, owned.sk.owner(), &mut rand::rngs::OsRng);
        let spend = Spend {
            sk: owned.sk.clone(),
            note: owned.note,
            index: owned.index,
            path: tree.path(owned.index).unwrap(),
            public_value: fee,
            change,
            recipient: address_to_fr(&recipient.0.0),
            execution_hash: exec,
        };
        self.prover.prove_spend(&spend).unwrap()
    }
}

/// A call of `target` with `data`, paid from `owned`.
struct PaidCall {
    target: Address,
    data: Vec<u8>,
    deadline: u64,
    allow_failure: bool,
    payment: GasPayment,
}

impl PaidCall {
    fn request(&self) -> Request {
        Request::EthRequest {
            chain_id: CHAIN_ID,
            target: self.target.0.0,
            call_gas: CALL_GAS,
            deadline: self.deadline,
            allow_failure: self.allow_failure,
            calldata: self.data.clone(),
            payment: Box::new(self.payment.clone()),
        }
    }
}

fn exec_hash(pool: Address, target: Address, data: &[u8], deadline: u64) -> Fr {
    execution_hash(&Execution {
        chain_id: CHAIN_ID,
        pool: &pool.0.0,
        target: &target.0.0,
        call_gas: CALL_GAS,
        deadline,
        data,
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

async fn send(client: &Client, exit: NodeId, request: Request) -> nox_protocol::payload::Reply {
    client.request_to(exit, request, Duration::from_secs(60), |_| {}).await.unwrap()
}

/// Waits until `exit` answers an echo through the mixnet (after its restart,
/// the other nodes reconnect to it).
async fn wait_reachable(client: &Client, exit: NodeId) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let echo = Request::Echo { data: b"up?".to_vec() };
        if let Ok(r) = client.request_to(exit, echo, Duration::from_secs(3), |_| {}).await
            && r.status == ReplyStatus::Ok
        {
            return;
        }
        assert!(Instant::now() < deadline, "the restarted exit is not reachable");
    }
}

async fn nonce_of(eth: &EthClient, who: Address) -> u64 {
    eth.provider().get_transaction_count(who).await.unwrap()
}

async fn counter(eth: &EthClient, counter: Address) -> U256 {
    eth.view("NoxCounter", counter, NoxCounter::countCall {}).await.unwrap()
}

fn refusal(reply: &nox_protocol::payload::Reply) -> EthRefusal {
    EthRefusal::decode(&reply.data).unwrap_or_else(|e| panic!("{:?}: not an EthRefusal: {e}", reply.status))
}

/// Sends `call` and expects `code` with `status`, and no transaction.
async fn expect_refusal(
    client: &Client,
    exit: NodeId,
    eth: &EthClient,
    wallet: Address,
    call: &PaidCall,
    code: EthRefusalCode,
    status: ReplyStatus,
) -> EthRefusal {
    let before = nonce_of(eth, wallet).await;
    let reply = send(client, exit, call.request()).await;
    let r = refusal(&reply);
    assert_eq!((r.code, reply.status), (code, status), "{r}");
    assert_eq!(nonce_of(eth, wallet).await, before, "{code:?}: the exit sent a transaction");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_calls_through_the_mixnet() {
    nox_node::localnet::init_test_logging();
    let opts = DevnetOptions { per_layer: [1, 1, 1], exit_flush_every_secs: 3600, ..DevnetOptions::default() };
    let mut net = Devnet::start(opts).await.unwrap();
    let exit_idx = net.layer(2)[0];
    let exit = net.nodes[exit_idx].id();
    let wallet = net.nodes[exit_idx].exit_wallet_address().unwrap();
    let pool = net.pool();
    let target = net.deployment.counter;
    let user = User::new(&net).await;
    let eth = &user.eth;

    let mut cfg = net.client_config(Duration::from_millis(2));
    cfg.attempts = 1;
    let client = Client::connect(cfg.clone()).await.unwrap();
    // The exit announces its fee policy.
    let policies = client.paying_exits();
    let (_, policy) = policies.iter().find(|(id, _)| *id == exit).expect("the exit signs a fee policy");
    assert_eq!(
        (policy.wallet, policy.pool, policy.chain_id, policy.margin_bps),
        (wallet.0.0, pool.0.0, CHAIN_ID, 1000)
    );

    let increment = NoxCounter::incrementCall {}.abi_encode();
    let fee = ETH / 100;
    let deadline = unix_now() + DEADLINE_SECS;
    let paid = |owned: &Owned, tree: &MerkleTree, fee: u128, recipient: Address, data: &[u8], bound: &[u8]| PaidCall {
        target,
        data: data.to_vec(),
        deadline,
        allow_failure: false,
        payment: user.pay(tree, owned, fee, recipient, exec_hash(pool, target, bound, deadline)),
    };

    // --- The happy path: the call lands, from the exit's wallet.
    let note = user.deposit_eth(ETH).await;
    let tree = user.tree().await;
    let happy = paid(&note, &tree, fee, wallet, &increment, &increment);
    let count = counter(eth, target).await;
    let nonce = nonce_of(eth, wallet).await;
    let started = Instant::now();
    let reply = send(&client, exit, happy.request()).await;
    let took = started.elapsed();
    assert_eq!(reply.status, ReplyStatus::Ok, "{}", String::from_utf8_lossy(&reply.data));
    let receipt = EthReceipt::decode(&reply.data).unwrap();
    assert!(receipt.tx_success && receipt.call_success, "{receipt:?}");
    assert_eq!((receipt.fee, receipt.asset), (fee, [0; 20]));
    assert_eq!(counter(eth, target).await, count + U256::from(1));
    assert_eq!(nonce_of(eth, wallet).await, nonce + 1);
    let tx = eth.provider().get_transaction_by_hash(B256::from(receipt.tx_hash)).await.unwrap().unwrap();
    assert_eq!(tx.inner.signer(), wallet, "the exit's wallet sends the relay");
    let last_caller: Address = eth.view("NoxCounter", target, NoxCounter::lastCallerCall {}).await.unwrap();
    assert_eq!(last_caller, net.deployment.executor, "the counter sees the pool's executor");
    println!(
        "MEASURE relay of NoxCounter.increment: gas_used={} simulate_us={} inclusion_ms={} round_trip_ms={}",
        receipt.gas_used,
        receipt.simulate_us,
        receipt.inclusion_ms,
        took.as_millis()
    );

    // --- The same payment again (a retry over another route, another request id):
    // answered with the same transaction, nothing sent.
    let again = send(&client, exit, happy.request()).await;
    assert_eq!(again.status, ReplyStatus::Ok);
    assert_eq!(EthReceipt::decode(&again.data).unwrap().tx_hash, receipt.tx_hash);
    assert_eq!(nonce_of(eth, wallet).await, nonce + 1);

    // --- Two copies at once: one transaction.
    let note2 = user.deposit_eth(ETH).await;
    let tree = user.tree().await;
    let twice = paid(&note2, &tree, fee, wallet, &increment, &increment);
    let nonce = nonce_of(eth, wallet).await;
    let (a, b) = tokio::join!(send(&client, exit, twice.request()), send(&client, exit, twice.request()));
    assert_eq!((a.status, b.status), (ReplyStatus::Ok, ReplyStatus::Ok), "{}", String::from_utf8_lossy(&b.data));
    assert_eq!(EthReceipt::decode(&a.data).unwrap().tx_hash, EthReceipt::decode(&b.data).unwrap().tx_hash);
    assert_eq!(nonce_of(eth, wallet).await, nonce + 1, "one transaction for two copies");

    // --- Refusals, each with its code and nothing sent.
    let fresh = user.deposit_eth(ETH).await;
    let tree = user.tree().await;
    // A proof that does not verify: another public value than the one proven.
    let mut bogus = paid(&fresh, &tree, fee, wallet, &increment, &increment);
    bogus.payment.inputs.public_value = word(Fr::from(fee + 1));
    expect_refusal(&client, exit, eth, wallet, &bogus, EthRefusalCode::BadProof, ReplyStatus::Refused).await;
    let other = PrivateKeySigner::random().address();
    let wrong_recipient = paid(&fresh, &tree, fee, other, &increment, &increment);
    let code = EthRefusalCode::WrongRecipient;
    expect_refusal(&client, exit, eth, wallet, &wrong_recipient, code, ReplyStatus::Refused).await;
    let by = NoxCounter::incrementByCall { by: U256::from(5) }.abi_encode();
    let wrong_exec = paid(&fresh, &tree, fee, wallet, &increment, &by);
    let code = EthRefusalCode::WrongExecution;
    expect_refusal(&client, exit, eth, wallet, &wrong_exec, code, ReplyStatus::Refused).await;
    let mut fake = user.tree().await;
    fake.insert(Fr::from(12345u64)).unwrap();
    let unknown_root = paid(&fresh, &fake, fee, wallet, &increment, &increment);
    let code = EthRefusalCode::UnknownRoot;
    expect_refusal(&client, exit, eth, wallet, &unknown_root, code, ReplyStatus::Refused).await;
    // The happy path's note under another request (allow_failure set): spent.
    let spent =
        PaidCall { target, data: increment.clone(), deadline, allow_failure: true, payment: happy.payment.clone() };
    let code = EthRefusalCode::NullifierSpent;
    expect_refusal(&client, exit, eth, wallet, &spent, code, ReplyStatus::Refused).await;
    // The relay itself reverts (a zero target).
    let zero = PaidCall {
        target: Address::ZERO,
        data: increment.clone(),
        deadline,
        allow_failure: false,
        payment: user.pay(&tree, &fresh, fee, wallet, exec_hash(pool, Address::ZERO, &increment, deadline)),
    };
    let code = EthRefusalCode::SimulationReverted;
    expect_refusal(&client, exit, eth, wallet, &zero, code, ReplyStatus::Refused).await;
    // The call fails and the request asked for success only.
    let fail = NoxCounter::failCall { reason: "no".into() }.abi_encode();
    let failing = paid(&fresh, &tree, fee, wallet, &fail, &fail);
    let code = EthRefusalCode::CallFails;
    let r = expect_refusal(&client, exit, eth, wallet, &failing, code, ReplyStatus::Refused).await;
    assert_eq!(r.detail.get(..4), Some(NoxCounter::Refused::SELECTOR.as_slice()), "the call's revert data");
    // A proof whose deadline has passed, or is too near to be mined in time:
    // refused before anything is sent, with the earliest deadline accepted.
    let soon = unix_now() + 5;
    let expiring = PaidCall {
        deadline: soon,
        payment: user.pay(&tree, &fresh, fee, wallet, exec_hash(pool, target, &increment, soon)),
        ..paid(&fresh, &tree, fee, wallet, &increment, &increment)
    };
    let code = EthRefusalCode::Expired;
    let r = expect_refusal(&client, exit, eth, wallet, &expiring, code, ReplyStatus::Refused).await;
    let earliest = u64::from_be_bytes(r.detail.as_slice().try_into().expect("the earliest deadline, 8 bytes"));
    assert!(earliest > soon, "{r}");
    // A deadline other than the proof's.
    let moved = PaidCall { deadline: deadline + 1, ..paid(&fresh, &tree, fee, wallet, &increment, &increment) };
    let code = EthRefusalCode::WrongExecution;
    expect_refusal(&client, exit, eth, wallet, &moved, code, ReplyStatus::Refused).await;
    // A fee below the cost with the margin.
    let cheap = paid(&fresh, &tree, 1_000, wallet, &increment, &increment);
    let code = EthRefusalCode::FeeTooLow;
    let r = expect_refusal(&client, exit, eth, wallet, &cheap, code, ReplyStatus::Refused).await;
    let required = r.required_fee().unwrap();
    assert!(required > 1_000 && required < fee, "required fee {required}");
    println!("MEASURE lowest fee accepted for NoxCounter.increment: {required} wei");
    // A token payment to an exit whose policy lists only ETH (this devnet has
    // no oracles, so its exits take no token: tests/token_fees.rs has them).
    let token_note = user.deposit_token(10u128.pow(20)).await;
    let tree = user.tree().await;
    let token = paid(&token_note, &tree, 10u128.pow(18), wallet, &increment, &increment);
    let code = EthRefusalCode::AssetNotAccepted;
    let r = expect_refusal(&client, exit, eth, wallet, &token, code, ReplyStatus::Refused).await;
    assert!(r.message.contains("ETH only"), "{r}");
    // Another chain.
    let mut wrong_chain = paid(&fresh, &tree, fee, wallet, &increment, &increment).request();
    if let Request::EthRequest { chain_id, .. } = &mut wrong_chain {
        *chain_id = 1;
    }
    let before = nonce_of(eth, wallet).await;
    let reply = send(&client, exit, wrong_chain).await;
    assert_eq!((refusal(&reply).code, reply.status), (EthRefusalCode::WrongChain, ReplyStatus::BadRequest));
    assert_eq!(nonce_of(eth, wallet).await, before);
    // A failing call with allow_failure is relayed: the fee is paid, the call is not.
    let allowed = PaidCall { allow_failure: true, ..paid(&fresh, &tree, fee, wallet, &fail, &fail) };
    let reply = send(&client, exit, allowed.request()).await;
    assert_eq!(reply.status, ReplyStatus::Ok, "{}", String::from_utf8_lossy(&reply.data));
    let r = EthReceipt::decode(&reply.data).unwrap();
    assert!(r.tx_success && !r.call_success, "{r:?}");
    assert_eq!(r.revert_data.get(..4), Some(NoxCounter::Refused::SELECTOR.as_slice()));

    let metrics = net.metrics_of(exit_idx).await.unwrap();
    assert!(metrics.contains("kind=\"exit_eth_request\",outcome=\"fee_too_low\"} 1"), "{metrics}");

    // --- An exit that dies right after broadcasting.
    client.shutdown().await;
    net.stop_node(exit_idx).await;
    net.set_faults(exit_idx, Faults { exit_crash_after_broadcast: true, ..Faults::default() });
    net.start_node(exit_idx).await.unwrap();
    net.wait_converged(Duration::from_secs(60)).await.unwrap();
    let client = Client::connect(cfg.clone()).await.unwrap();
    wait_reachable(&client, exit).await;
    let note3 = user.deposit_eth(ETH).await;
    let tree = user.tree().await;
    let crashed = paid(&note3, &tree, fee, wallet, &increment, &increment);
    let nonce = nonce_of(eth, wallet).await;
    let count = counter(eth, target).await;
    let reply = send(&client, exit, crashed.request()).await;
    assert_ne!(reply.status, ReplyStatus::Ok);
    // The broadcast got out (anvil mines it at once); nothing after it was recorded.
    assert_eq!(nonce_of(eth, wallet).await, nonce + 1);
    assert_eq!(counter(eth, target).await, count + U256::from(1));
    client.shutdown().await;
    net.stop_node(exit_idx).await;
    net.set_faults(exit_idx, Faults::default());
    net.start_node(exit_idx).await.unwrap();
    net.wait_converged(Duration::from_secs(60)).await.unwrap();
    let client = Client::connect(cfg).await.unwrap();
    wait_reachable(&client, exit).await;
    // The retry is answered with the transaction sent before the crash.
    let reply = send(&client, exit, crashed.request()).await;
    assert_eq!(reply.status, ReplyStatus::Ok, "{}", String::from_utf8_lossy(&reply.data));
    let first = EthReceipt::decode(&reply.data).unwrap();
    assert_eq!(nonce_of(eth, wallet).await, nonce + 1, "no second transaction after the restart");
    assert_eq!(counter(eth, target).await, count + U256::from(1));
    let first_tx = eth.provider().get_transaction_by_hash(B256::from(first.tx_hash)).await.unwrap().unwrap();
    // The next request takes the next nonce.
    let note4 = user.deposit_eth(ETH).await;
    let tree = user.tree().await;
    let next = paid(&note4, &tree, fee, wallet, &increment, &increment);
    let reply = send(&client, exit, next.request()).await;
    assert_eq!(reply.status, ReplyStatus::Ok, "{}", String::from_utf8_lossy(&reply.data));
    let r = EthReceipt::decode(&reply.data).unwrap();
    let next_tx = eth.provider().get_transaction_by_hash(B256::from(r.tx_hash)).await.unwrap().unwrap();
    use alloy::consensus::Transaction as _;
    assert_eq!(next_tx.inner.nonce(), first_tx.inner.nonce() + 1, "neither reused nor skipped");
    assert_eq!(nonce_of(eth, wallet).await, nonce + 2);

    // --- Flush (off until now, so that the nonces above count relays only).
    // The change notes of the relays wait in the open segment. Queue deposits
    // until a segment of 32 closes: the exit flushes it by itself, paid by
    // the bounty every queued leaf prepaid, and leaves the open one alone.
    let change = U256::from_be_bytes(happy.payment.inputs.change_commitment);
    let change_index =
        user.queued().await.iter().position(|(c, _)| *c == change).expect("the change note is queued") as u64;
    let mut queued = user.queued().await.len() as u64;
    while !queued.is_multiple_of(32) {
        user.queue_eth(ETH / 1000).await;
        queued += 1;
    }
    let extra = user.queue_eth(ETH / 1000).await;
    client.shutdown().await;
    net.stop_node(exit_idx).await;
    net.nodes[exit_idx].config.exit.eth_flush_every_secs = 1;
    net.start_node(exit_idx).await.unwrap();
    let next_index = || async { eth.view("NoxPool", pool, NoxPool::nextIndexCall {}).await.unwrap().to::<u64>() };
    let deadline_at = Instant::now() + Duration::from_secs(60);
    while next_index().await < queued {
        assert!(Instant::now() < deadline_at, "the exit did not flush the closed segment");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(change_index < queued, "the relay's change note was in the closed segment");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(next_index().await, queued, "the open segment waits (exit.eth_flush_open_after_secs = 0)");
    // Counted once the exit sees its flush mined.
    let value = |metrics: &str, outcome: &str| -> u64 {
        let key = format!("nox_events_total{{kind=\"exit_eth_flush\",outcome=\"{outcome}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    let metrics = loop {
        let metrics = net.metrics_of(exit_idx).await.unwrap();
        if value(&metrics, "flushes") >= 1 {
            break metrics;
        }
        assert!(Instant::now() < deadline_at, "the flush was not counted: {metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (flushes, leaves, gas) = (value(&metrics, "flushes"), value(&metrics, "leaves"), value(&metrics, "gas_used"));
    assert!(leaves >= 1 && value(&metrics, "bounty_gwei") > 0, "{metrics}");
    println!(
        "MEASURE exit flush of a closed segment: flushes={flushes} leaves={leaves} gas_used={gas} gas_per_leaf={} bounty_gwei={}",
        gas / leaves.max(1),
        value(&metrics, "bounty_gwei")
    );
    // With exit.eth_flush_open_after_secs, the open segment goes in too.
    net.stop_node(exit_idx).await;
    net.nodes[exit_idx].config.exit.eth_flush_open_after_secs = 1;
    net.start_node(exit_idx).await.unwrap();
    while next_index().await <= extra.index {
        assert!(Instant::now() < deadline_at + Duration::from_secs(60), "the exit did not flush the open segment");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    user.tree().await;

    net.shutdown().await;
}
