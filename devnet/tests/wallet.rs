//! The shielded wallet (`nox_client::wallet`) against a real chain: anvil
//! from `node_modules/.bin` and the contracts deployed by the devnet's forge
//! script, no mixnet nodes. The wallet syncs straight from the endpoint
//! (`EthClient` is a `PoolReader`); deposits, forced insertions and
//! withdrawals are signed by anvil's first account, which also holds the
//! NoxTestToken supply. NoxPool v2 queues every note until a flush inserts
//! it; no exit runs here, so the wallet inserts its own (`insert_now`).
//!
//! Needs `npm ci` to have run (scripts/test does it first).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, U256};
use nox_client::wallet::{KdfParams, NoteState, Prover, Wallet, WalletError};
use nox_devnet::anvil::{Anvil, DEPLOYER_KEY};
use nox_devnet::deploy::Deployment;
use nox_eth::rpc::EthClient;
use nox_protocol::contracts::{NoxPool, NoxTestToken};
use serde_json::{Value, json};

const ETH: Address = Address::ZERO;
const ONE_ETH: u128 = 1_000_000_000_000_000_000;
const CHAIN_ID: u64 = nox_devnet::anvil::CHAIN_ID;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The development prover, set up once for the whole file.
fn prover() -> &'static Prover {
    static PROVER: OnceLock<Prover> = OnceLock::new();
    PROVER.get_or_init(|| {
        let t = Instant::now();
        let p = Prover::development().expect("development setup");
        eprintln!("dev_setup(TREE_DEPTH): {:.1} s", t.elapsed().as_secs_f64());
        p
    })
}

struct Chain {
    anvil: Anvil,
    deployment: Deployment,
    eth: EthClient,
    dir: tempfile::TempDir,
}

impl Chain {
    fn start() -> Chain {
        let anvil = Anvil::start(&repo_root(), None).expect("start anvil");
        let deployment =
            nox_devnet::deploy::deploy(&repo_root(), &anvil.url(), DEPLOYER_KEY, &Default::default()).expect("deploy");
        let signer: PrivateKeySigner = DEPLOYER_KEY.parse().unwrap();
        let eth = EthClient::new(&anvil.url(), Duration::from_secs(10), Some(signer)).unwrap();
        Chain { anvil, deployment, eth, dir: tempfile::tempdir().unwrap() }
    }

    /// Another client with the same signer.
    fn fresh_client(&self) -> EthClient {
        let signer: PrivateKeySigner = DEPLOYER_KEY.parse().unwrap();
        EthClient::new(&self.anvil.url(), Duration::from_secs(10), Some(signer)).unwrap()
    }

    fn wallet(&self, name: &str) -> Wallet {
        let path = self.dir.path().join(name);
        Wallet::create(&path, "passphrase", CHAIN_ID, self.deployment.pool, 0, KdfParams::insecure_fast()).unwrap()
    }

    fn rpc(&self, method: &str, params: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let resp: Value = ureq::post(&self.anvil.url()).send_json(body).unwrap().into_json().unwrap();
        assert!(resp.get("error").is_none(), "{method}: {resp}");
        resp["result"].clone()
    }

    fn mine(&self, blocks: u64) {
        for _ in 0..blocks {
            self.rpc("evm_mine", json!([]));
        }
    }

    /// Whether the pool knows `root` (at the latest block).
    async fn known_root(&self, root: ark_bn254::Fr) -> bool {
        let call = NoxPool::knownRootsCall { root: fr_to_u256(root) };
        self.eth.view("NoxPool", self.deployment.pool, call).await.unwrap()
    }

    async fn token_balance(&self, who: Address) -> U256 {
        self.eth.view("token", self.deployment.token, NoxTestToken::balanceOfCall { account: who }).await.unwrap()
    }
}

fn fr_to_u256(f: ark_bn254::Fr) -> U256 {
    nox_circuits::field::to_hex(&f).parse().unwrap()
}

fn state_of(w: &Wallet, commitment: ark_bn254::Fr) -> NoteState {
    w.notes().iter().find(|n| n.commitment == commitment).unwrap().state
}

/// ETH and ERC-20 deposits pay their insertion bounty and are queued once
/// confirmed; a forced insertion (paid that bounty back) makes them
/// spendable; the wallet file survives a restart, queue included, and the
/// next sync resumes from its stored progress.
#[tokio::test]
async fn deposits_are_queued_then_inserted_and_the_wallet_resumes_after_a_restart() {
    let chain = Chain::start();
    let token = chain.deployment.token;
    let pool = chain.deployment.pool;

    // The default parameters, timed once (the rest of the file uses cheap ones).
    let t = Instant::now();
    let default_path = chain.dir.path().join("default.nox");
    Wallet::create(&default_path, "pw", CHAIN_ID, pool, 0, KdfParams::default()).unwrap();
    eprintln!("argon2id m=64 MiB t=3 p=1, create: {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    let t = Instant::now();
    Wallet::open(&default_path, "pw").unwrap();
    eprintln!("argon2id m=64 MiB t=3 p=1, open: {:.0} ms", t.elapsed().as_secs_f64() * 1e3);

    let mut w = chain.wallet("w.nox");
    let eth_deposit = w.deposit_eth(&chain.eth, ONE_ETH).await.unwrap();
    let token_deposit = w.deposit_erc20(&chain.eth, token, 500).await.unwrap();
    assert_eq!(w.notes().iter().filter(|n| n.deposit_tx.is_some()).count(), 2);
    assert_eq!(chain.token_balance(pool).await, U256::from(500u64));
    // Each deposit sent its insertion bounty, at least the pool's minimum.
    assert_eq!((eth_deposit.leaf_index, token_deposit.leaf_index), (Some(0), Some(1)));
    assert!(eth_deposit.bounty > 0 && token_deposit.bounty > 0);
    let minimum: U256 = chain.eth.view("NoxPool", pool, NoxPool::insertionBountyCall {}).await.unwrap();
    assert!(U256::from(token_deposit.bounty) >= minimum);
    let bounties = eth_deposit.bounty + token_deposit.bounty;
    assert_eq!(chain.eth.balance(pool).await.unwrap(), U256::from(ONE_ETH + bounties));

    // One confirmation: the second deposit's block is not confirmed yet.
    let report = w.sync(&chain.eth, 1).await.unwrap();
    assert_eq!(report.from_block, 0);
    assert_eq!(state_of(&w, eth_deposit.commitment), NoteState::Queued);
    assert_eq!(state_of(&w, token_deposit.commitment), NoteState::Deposited);
    assert!(matches!(w.select(token, 500), Err(WalletError::OnlyUnconfirmedDeposit { .. })));
    assert!(matches!(w.select(ETH, 1), Err(WalletError::OnlyQueued { queued: ONE_ETH, .. })));
    chain.mine(1);
    w.sync(&chain.eth, 1).await.unwrap();
    assert_eq!(state_of(&w, token_deposit.commitment), NoteState::Queued);
    assert_eq!((w.leaf_count(), w.queued_count()), (0, 2));

    // The queue survives a restart.
    let path = w.path().to_path_buf();
    drop(w);
    let mut w = Wallet::open(&path, "passphrase").unwrap();
    assert_eq!((w.leaf_count(), w.queued_count()), (0, 2));

    // Inserting both: one flush of the open segment, paid both bounties.
    let funder = chain.eth.sender().unwrap();
    let insertion = w.insert_now(&chain.eth, 1).await.unwrap().expect("two notes were queued");
    assert_eq!((insertion.first, insertion.count, insertion.bounty_paid), (0, 2, bounties));
    let receipt = chain.eth.wait_receipt("flush", insertion.tx_hash).await.unwrap();
    assert_eq!(receipt.from, funder);
    assert_eq!(chain.eth.balance(pool).await.unwrap(), U256::from(ONE_ETH));
    // Spendable once the flush is confirmed.
    w.sync(&chain.eth, 1).await.unwrap();
    assert_eq!(state_of(&w, eth_deposit.commitment), NoteState::Queued);
    chain.mine(1);
    let report = w.sync(&chain.eth, 1).await.unwrap();
    assert_eq!((report.leaves_added, report.notes_inserted), (2, 2));
    assert!(w.insert_now(&chain.eth, 1).await.unwrap().is_none(), "nothing left to insert");

    let balances = w.balances();
    let of = |asset: Address| *balances.iter().find(|b| b.asset == asset).unwrap();
    assert_eq!((of(ETH).spendable, of(ETH).unconfirmed_deposits, of(ETH).queued), (ONE_ETH, 0, 0));
    assert_eq!(of(token).spendable, 500);
    assert_eq!(w.select(token, 200).unwrap().value, 500);
    assert!(chain.known_root(w.root()).await);
    let synced = w.synced_block().unwrap();

    // A restart: the same notes, and the sync reads only the new blocks.
    let (notes, owner) = (w.notes(), w.owner());
    drop(w);
    chain.mine(4);
    let mut w = Wallet::open(&path, "passphrase").unwrap();
    assert_eq!((w.notes(), w.owner()), (notes, owner));
    let report = w.sync(&chain.eth, 1).await.unwrap();
    assert_eq!(report.from_block, synced + 1);
    assert_eq!(report.blocks_read, 4);
    assert!(!report.reorganised);
    assert_eq!(report.leaves_added, 0);
    assert!(matches!(Wallet::open(&path, "wrong"), Err(WalletError::WrongPassphrase)));
}

/// A deposit reorganised away (anvil's snapshot and revert, then other
/// blocks) is seen as such: the tree is rebuilt, the note waits again and
/// is not offered; a new deposit works.
#[tokio::test]
async fn a_reorganised_deposit_is_not_spendable_and_a_new_one_is() {
    let chain = Chain::start();
    let mut w = chain.wallet("w.nox");
    let kept = w.deposit_eth(&chain.eth, ONE_ETH).await.unwrap();
    w.insert_now(&chain.eth, 0).await.unwrap().unwrap();
    w.sync(&chain.eth, 0).await.unwrap();

    let snapshot = chain.rpc("evm_snapshot", json!([]));
    let lost = w.deposit_eth(&chain.eth, 2 * ONE_ETH).await.unwrap();
    w.insert_now(&chain.eth, 0).await.unwrap().unwrap();
    w.sync(&chain.eth, 0).await.unwrap();
    assert_eq!(state_of(&w, lost.commitment), NoteState::Spendable);
    assert_eq!(w.leaf_count(), 2);

    assert_eq!(chain.rpc("evm_revert", json!([snapshot])), json!(true));
    chain.mine(3);
    let report = w.sync(&chain.eth, 0).await.unwrap();
    assert!(report.reorganised, "{report:?}");
    assert_eq!(report.from_block, 0);
    assert_eq!(w.leaf_count(), 1);
    assert_eq!(state_of(&w, kept.commitment), NoteState::Spendable);
    assert_eq!(state_of(&w, lost.commitment), NoteState::Deposited);
    assert!(matches!(w.select(ETH, 2 * ONE_ETH), Err(WalletError::OnlyUnconfirmedDeposit { .. })));
    assert!(chain.known_root(w.root()).await);

    // Nothing will mine the lost deposit again: forget it and deposit anew
    // (with a fresh client: the first one's nonce cache still counts the lost
    // transaction).
    w.forget_deposit(lost.commitment).unwrap();
    let eth = chain.fresh_client();
    let again = w.deposit_eth(&eth, 2 * ONE_ETH).await.unwrap();
    let insertion = w.insert_now(&eth, 0).await.unwrap().unwrap();
    assert_eq!((insertion.first, insertion.count), (1, 1));
    let report = w.sync(&chain.eth, 0).await.unwrap();
    assert!(!report.reorganised);
    assert_eq!(state_of(&w, again.commitment), NoteState::Spendable);
    assert_eq!(w.select(ETH, 2 * ONE_ETH).unwrap().leaf_index, 1);
    assert!(chain.known_root(w.root()).await);
}

/// A direct withdrawal pays its recipient and queues its change; the spent
/// note is not offered again; the change is spendable once inserted.
#[tokio::test]
async fn a_direct_withdrawal_pays_and_its_change_returns_after_an_insertion() {
    let chain = Chain::start();
    let prover = prover();
    let mut w = chain.wallet("w.nox");
    let deposit = w.deposit_eth(&chain.eth, ONE_ETH).await.unwrap();
    w.insert_now(&chain.eth, 0).await.unwrap().unwrap();
    w.sync(&chain.eth, 0).await.unwrap();

    let recipient = Address::repeat_byte(0x77);
    let amount = 3 * ONE_ETH / 10;
    let t = Instant::now();
    let withdrawal = w.withdraw_direct(&chain.eth, prover, recipient, ETH, amount).await.unwrap();
    eprintln!("withdraw_direct (prove + send + mine): {:.2} s", t.elapsed().as_secs_f64());
    assert_eq!(chain.eth.balance(recipient).await.unwrap(), U256::from(amount));
    assert_eq!(withdrawal.change, ONE_ETH - amount);
    assert_eq!(state_of(&w, deposit.commitment), NoteState::Spending);
    assert!(matches!(w.select(ETH, amount), Err(WalletError::OnlyPendingChange { .. })));

    // The withdrawal spent the note and queued the change (paying its bounty).
    let report = w.sync(&chain.eth, 0).await.unwrap();
    assert_eq!((report.notes_spent, report.notes_found), (1, 1));
    assert_eq!(state_of(&w, deposit.commitment), NoteState::Spent);
    assert!(matches!(w.release(withdrawal.nullifier), Err(WalletError::AlreadySpent(_))));
    let balance = w.balances()[0];
    assert_eq!((balance.spendable, balance.queued), (0, ONE_ETH - amount));
    assert!(matches!(w.select(ETH, 1), Err(WalletError::OnlyQueued { .. })));

    // The change comes back through a forced insertion (here through ensure_spendable).
    let selected = w.ensure_spendable(&chain.eth, &chain.eth, ETH, amount, 0, Duration::from_secs(10)).await.unwrap();
    assert_eq!(selected.value, ONE_ETH - amount);
    let balance = w.balances()[0];
    assert_eq!((balance.spendable, balance.queued), (ONE_ETH - amount, 0));
    assert!(chain.known_root(w.root()).await);
    assert!(w.insert_now(&chain.eth, 0).await.unwrap().is_none(), "nothing left to insert");

    // The change note spends like any other, and its own change too.
    let t = Instant::now();
    let second = w.withdraw_direct(&chain.eth, prover, recipient, ETH, ONE_ETH / 10).await.unwrap();
    eprintln!("second withdraw_direct: {:.2} s", t.elapsed().as_secs_f64());
    assert_eq!(chain.eth.balance(recipient).await.unwrap(), U256::from(amount + ONE_ETH / 10));
    assert_eq!(second.change, ONE_ETH - amount - ONE_ETH / 10);
    let insertion = w.insert_now(&chain.eth, 0).await.unwrap().unwrap();
    assert_eq!((insertion.first, insertion.count), (2, 1));
    w.sync(&chain.eth, 0).await.unwrap();
    assert_eq!(w.balances()[0].spendable, ONE_ETH - amount - ONE_ETH / 10);
    assert!(chain.known_root(w.root()).await);
}

/// An ERC-20 note withdraws the token, and a withdrawal the pool refuses
/// (the note was already spent by another copy of the wallet) is not left
/// spending.
#[tokio::test]
async fn a_token_withdrawal_and_a_refused_double_spend() {
    let chain = Chain::start();
    let prover = prover();
    let token = chain.deployment.token;
    let mut w = chain.wallet("w.nox");
    w.deposit_erc20(&chain.eth, token, 1_000).await.unwrap();
    w.insert_now(&chain.eth, 0).await.unwrap().unwrap();
    w.sync(&chain.eth, 0).await.unwrap();
    // A copy of the file from before the spend.
    let copy_path = chain.dir.path().join("copy.nox");
    std::fs::copy(w.path(), &copy_path).unwrap();

    let recipient = Address::repeat_byte(0x66);
    w.withdraw_direct(&chain.eth, prover, recipient, token, 400).await.unwrap();
    assert_eq!(chain.token_balance(recipient).await, U256::from(400u64));

    // The stale copy offers the note, the pool refuses it, and the copy
    // learns from the chain that it is spent.
    let mut stale = Wallet::open(&copy_path, "passphrase").unwrap();
    let err = stale.withdraw_direct(&chain.eth, prover, recipient, token, 400).await.unwrap_err();
    assert!(matches!(err, WalletError::Eth(nox_eth::rpc::EthError::Reverted { .. })), "{err}");
    assert_eq!(stale.notes()[0].state, NoteState::Spent);
    assert_eq!(chain.token_balance(recipient).await, U256::from(400u64));
}
