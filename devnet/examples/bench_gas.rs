//! What NoxPool costs in gas, as whole transactions on a real chain: anvil,
//! the contracts deployed by the forge deploy script, every figure read from
//! a mined transaction's receipt (intrinsic gas, calldata and refunds
//! included).
//!
//! * `deposit_gas` — `deposit` of an ETH note, median over two segments of
//!   deposits (one in 32 also closes its segment);
//! * `insert_gas_per_leaf_bN` — one `flush` of N queued leaves divided by N:
//!   N = 1 and 8 from the open segment, 32 an aligned closed segment (the
//!   second one measured, the tree's words already in use);
//! * `relay_gas` — `relay` of a proof-paid call that does nothing (to an
//!   address without code, with 30,000 gas: the relay's own cost, not the
//!   user's action), sent by the relayer itself, the second of two (its
//!   account and the pool's words already in use);
//! * `private_tx_all_in_gas` = `relay_gas + insert_gas_per_leaf_b32`, a
//!   private transaction with its share of inserting its change note;
//!   `deposit_all_in_gas` = `deposit_gas + insert_gas_per_leaf_b32`.
//!
//! The reference, measured in the same run: inserting one leaf at a time
//! (`insert_gas_per_leaf_b1`), what every deposit and change note cost before
//! batching, and `private_tx_unbatched_gas = relay_gas +
//! insert_gas_per_leaf_b1`. Goals (docs/protocol.md §11.7): private
//! transaction all-in < 350 k, deposit all-in < 150 k, relay < 300 k.
//! Anchors from outside (not measured here): the system NOX replaces reports
//! about 10 M gas per proof-paid transaction; Tornado-style pools about 1 M
//! per deposit.
//!
//! Run: `scripts/bench-gas`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolEvent};
use ark_bn254::Fr;
use nox_circuits::field::{from_be32, to_hex};
use nox_circuits::note::{Note, SpendingKey, address_to_fr};
use nox_circuits::pool::{Execution, execution_hash};
use nox_circuits::spend::Spend;
use nox_circuits::tree::{MerkleTree, TREE_DEPTH};
use nox_client::wallet::Prover;
use nox_devnet::anvil::{Anvil, CHAIN_ID, DEPLOYER_KEY};
use nox_devnet::deploy::{DeployParams, deploy};
use nox_eth::EthClient;
use nox_protocol::contracts::{NoxPool, pool_spend};

/// anvil's account #2: the depositor.
const USER_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
/// anvil's account #3: the relayer.
const RELAYER_KEY: &str = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6";
const NOTE: u128 = 10u128.pow(17);
const CALL_GAS: u64 = 30_000;

fn word(f: Fr) -> [u8; 32] {
    hex::decode(&to_hex(&f)[2..]).unwrap().try_into().unwrap()
}

struct Bench {
    eth: EthClient,
    relayer: EthClient,
    pool: Address,
    /// Every queued leaf with its bounty, in leaf order.
    queued: Vec<(U256, U256)>,
    /// Leaves inserted.
    inserted: usize,
    /// The notes deposited, by leaf index.
    notes: Vec<(SpendingKey, Note)>,
    prover: Prover,
}

impl Bench {
    async fn send(&self, eth: &EthClient, data: Vec<u8>, value: U256) -> TransactionReceipt {
        let tx = TransactionRequest::default()
            .with_from(eth.sender().unwrap())
            .with_to(self.pool)
            .with_value(value)
            .with_input(data);
        let receipt = eth.provider().send_transaction(tx).await.unwrap().get_receipt().await.unwrap();
        assert!(receipt.status(), "a pool transaction reverted");
        receipt
    }

    fn note_queued(&mut self, receipt: &TransactionReceipt) {
        for log in receipt.inner.logs() {
            if let Ok(e) = NoxPool::Queued::decode_log(&log.inner) {
                assert_eq!(e.leafIndex.to::<usize>(), self.queued.len(), "leaves queue in order");
                self.queued.push((e.commitment, e.bounty));
            }
        }
    }

    async fn bounty(&self) -> U256 {
        let b: U256 = self.eth.view("NoxPool", self.pool, NoxPool::insertionBountyCall {}).await.unwrap();
        b * U256::from(2)
    }

    /// Deposits one ETH note; returns the transaction's gas.
    async fn deposit(&mut self) -> u64 {
        let sk = SpendingKey::random(&mut rand::rngs::OsRng);
        let note = Note::new(Fr::from(0u64), NOTE, sk.owner(), &mut rand::rngs::OsRng);
        let data = NoxPool::depositCall { value: U256::from(NOTE), secret: U256::from_be_bytes(word(note.secret())) }
            .abi_encode();
        let value = U256::from(NOTE) + self.bounty().await;
        let receipt = self.send(&self.eth, data, value).await;
        self.note_queued(&receipt);
        self.notes.push((sk, note));
        receipt.gas_used
    }

    /// Flushes every queued leaf; returns the transaction's gas and the leaves.
    async fn flush_all(&mut self) -> (u64, usize) {
        let (leaves, bounties): (Vec<U256>, Vec<U256>) = self.queued[self.inserted..].iter().copied().unzip();
        let n = leaves.len();
        let receipt = self.send(&self.eth, NoxPool::flushCall { leaves, bounties }.abi_encode(), U256::ZERO).await;
        self.inserted += n;
        (receipt.gas_used, n)
    }

    /// Deposits until the queue ends at a multiple of 32, and flushes.
    async fn align(&mut self) {
        while !self.queued.len().is_multiple_of(32) {
            self.deposit().await;
        }
        if self.inserted < self.queued.len() {
            self.flush_all().await;
        }
    }

    /// Relays a do-nothing call to `target` paid from the note at `index`;
    /// returns the gas.
    async fn relay(&mut self, index: usize, target: Address) -> u64 {
        let mut tree = MerkleTree::new(TREE_DEPTH);
        for (leaf, _) in &self.queued[..self.inserted] {
            tree.insert(from_be32(&leaf.to_be_bytes::<32>()).unwrap()).unwrap();
        }
        let (sk, note) = self.notes[index].clone();
        let relayer = self.relayer.sender().unwrap();
        let data = Vec::new();
        let deadline = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
        let exec = execution_hash(&Execution {
            chain_id: CHAIN_ID,
            pool: &self.pool.0.0,
            target: &target.0.0,
            call_gas: CALL_GAS,
            deadline,
            data: &data,
        });
        let fee = NOTE / 100;
        let spend = Spend {
            sk: sk.clone(),
            note,
            index: index as u64,
            path: tree.path(index as u64).unwrap(),
            public_value: fee,
            change: Note::new(note.asset, note.value - fee, sk.owner(), &mut rand::rngs::OsRng),
            recipient: address_to_fr(&relayer.0.0),
            execution_hash: exec,
        };
        let payment = self.prover.prove_spend(&spend).unwrap();
        let (proof, inputs) = pool_spend(&payment);
        let call = NoxPool::relayCall {
            proof,
            inputs,
            target,
            callGas: U256::from(CALL_GAS),
            deadline: U256::from(deadline),
            data: data.into(),
        };
        let bounty = self.bounty().await;
        let receipt = self.send(&self.relayer, call.abi_encode(), bounty).await;
        self.note_queued(&receipt);
        receipt.gas_used
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let root = nox_devnet::repo_root();
    let anvil = Anvil::start(&root, None).unwrap();
    let deployment = deploy(&root, &anvil.url(), DEPLOYER_KEY, &DeployParams::default()).unwrap();
    let client = |key: &str| {
        EthClient::new(&anvil.url(), Duration::from_secs(10), Some(key.parse::<PrivateKeySigner>().unwrap())).unwrap()
    };
    let mut b = Bench {
        eth: client(USER_KEY),
        relayer: client(RELAYER_KEY),
        pool: deployment.pool,
        queued: Vec::new(),
        inserted: 0,
        notes: Vec::new(),
        prover: Prover::from_keys(nox_devnet::zk::dev_keys().unwrap().clone()),
    };
    // Queue states before anything: a first batch, so later figures are steady.
    b.deposit().await;
    b.flush_all().await;
    b.align().await;
    // Deposits: two full segments.
    let mut deposits = Vec::new();
    for _ in 0..64 {
        deposits.push(b.deposit().await);
    }
    b.flush_all().await;
    // Batches of 1 and 8 from the open segment, then two aligned segments of 32.
    b.deposit().await;
    let (g1, _) = b.flush_all().await;
    for _ in 0..8 {
        b.deposit().await;
    }
    let (g8, n8) = b.flush_all().await;
    b.align().await;
    let mut g32 = 0;
    for _ in 0..2 {
        for _ in 0..32 {
            b.deposit().await;
        }
        let (g, n) = b.flush_all().await;
        assert_eq!(n, 32);
        g32 = g;
    }
    // Relays of a call to an address without code: the second one counts.
    let nothing = Address::repeat_byte(0x77);
    assert!(b.eth.code_at(nothing).await.unwrap().is_empty());
    let first = b.relay(1, nothing).await;
    let relay = b.relay(2, nothing).await;
    let spent = Filter::new().address(b.pool).event_signature(NoxPool::Relayed::SIGNATURE_HASH).from_block(0);
    assert_eq!(b.eth.logs(&spent).await.unwrap().len(), 2, "both relays landed");

    let deposit = median(deposits);
    let (b1, b8, b32) = (g1, g8 / n8 as u64, g32 / 32);
    println!(
        "deposit_gas={deposit} deposit_all_in_gas={} relay_gas={relay} insert_gas_per_leaf_b1={b1} \
         insert_gas_per_leaf_b8={b8} insert_gas_per_leaf_b32={b32} private_tx_all_in_gas={} \
         reference_private_tx_unbatched_gas={} batching_gain={:.1}x first_relay_gas={first}",
        deposit + b32,
        relay + b32,
        relay + b1,
        (relay + b1) as f64 / (relay + b32) as f64,
    );
    println!(
        "goals: private_tx_all_in < 350000 ({}), deposit_all_in < 150000 ({}), relay < 300000 ({}); \
         anchors (not measured here): ~10,000,000 gas per proof-paid transaction in the system NOX replaces, \
         ~1,000,000 per Tornado-style deposit",
        if relay + b32 < 350_000 { "met" } else { "NOT met" },
        if deposit + b32 < 150_000 { "met" } else { "NOT met" },
        if relay < 300_000 { "met" } else { "NOT met" },
    );
}
