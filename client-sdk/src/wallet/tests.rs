//! Wallet state transitions without a chain: [`FakePool`] plays a pool's
//! blocks and logs behind [`PoolReader`] (reorganisations, ranges refused,
//! gaps and roots the pool does not know included).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use alloy::rpc::types::Log;
use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_sol_types::SolEvent;
use ark_bn254::Fr;
use nox_circuits::note::commitment_from_secret;
use nox_circuits::tree::{MerkleTree, TREE_DEPTH};
use nox_protocol::contracts::NoxPool;

use super::*;

const CHAIN: u64 = 31337;
const POOL: Address = Address::repeat_byte(0x50);
const ETH: Address = Address::ZERO;

/// One block: its hash and its pool logs.
#[derive(Clone)]
struct Block {
    hash: B256,
    logs: Vec<alloy_primitives::Log>,
}

#[derive(Clone)]
struct Chain {
    blocks: Vec<Block>,
    tree: MerkleTree,
    /// Root → the first block it was known at.
    roots: HashMap<U256, u64>,
    nullifiers: HashMap<U256, U256>,
    fork: u64,
}

/// A pool on a fake chain. Block 0 is the deployment.
struct FakePool {
    chain: Mutex<Chain>,
    /// `eth_getLogs` over more blocks than this is an error answer.
    max_range: Mutex<u64>,
    /// Ranges asked for, in order.
    asked: Mutex<Vec<(u64, u64)>>,
    /// Answer `knownRoots` with false.
    forget_roots: Mutex<bool>,
    /// Logs not shown (by nullifier topic).
    hidden: Mutex<HashSet<B256>>,
}

impl FakePool {
    fn new() -> FakePool {
        let tree = MerkleTree::new(TREE_DEPTH);
        let mut roots = HashMap::new();
        roots.insert(fr_to_u256(tree.root()), 0);
        let chain = Chain { blocks: vec![], tree, roots, nullifiers: HashMap::new(), fork: 0 };
        let pool = FakePool {
            chain: Mutex::new(chain),
            max_range: Mutex::new(u64::MAX),
            asked: Mutex::new(vec![]),
            forget_roots: Mutex::new(false),
            hidden: Mutex::new(HashSet::new()),
        };
        pool.mine(vec![]);
        pool
    }

    fn mine(&self, logs: Vec<alloy_primitives::Log>) -> u64 {
        let mut c = self.chain.lock().unwrap();
        let n = c.blocks.len() as u64;
        let hash = keccak256([n.to_be_bytes(), c.fork.to_be_bytes()].concat());
        c.blocks.push(Block { hash, logs });
        n
    }

    fn mine_empty(&self, count: u64) {
        for _ in 0..count {
            self.mine(vec![]);
        }
    }

    fn insert_log(&self, commitment: Fr) -> alloy_primitives::Log {
        let mut c = self.chain.lock().unwrap();
        let index = c.tree.insert(commitment).unwrap();
        let root = fr_to_u256(c.tree.root());
        let at = c.blocks.len() as u64;
        c.roots.entry(root).or_insert(at);
        let ev = NoxPool::Inserted { commitment: fr_to_u256(commitment), leafIndex: U256::from(index), root };
        alloy_primitives::Log { address: POOL, data: ev.encode_log_data() }
    }

    /// A deposit of `value` ETH with `secret`, in a block of its own.
    fn deposit(&self, value: u128, secret: Fr) -> u64 {
        let log = self.insert_log(commitment_from_secret(Fr::from(0u64), Fr::from(value), secret));
        self.mine(vec![log])
    }

    /// The pool's `withdraw`: the nullifier spent, the change pending.
    fn withdraw(&self, p: &PreparedSpend) -> u64 {
        let nf = fr_to_u256(p.nullifier);
        let change = fr_to_u256(p.public.change_commitment);
        self.chain.lock().unwrap().nullifiers.insert(nf, change);
        let ev = NoxPool::Withdrawn {
            nullifier: nf,
            recipient: Address::repeat_byte(9),
            asset: U256::ZERO,
            value: U256::from(p.spend.public_value),
            changeCommitment: change,
        };
        self.mine(vec![alloy_primitives::Log { address: POOL, data: ev.encode_log_data() }])
    }

    /// The pool's `flush` of one spend.
    fn flush(&self, nullifier: Fr) -> u64 {
        let nf = fr_to_u256(nullifier);
        let change = self.chain.lock().unwrap().nullifiers.insert(nf, U256::from(1u8)).unwrap();
        let log = self.insert_log(u256_to_fr(change).unwrap());
        self.mine(vec![log])
    }

    /// Drops the blocks from `n` on, as a reorganisation does (the tree and
    /// roots go back to what they were before block `n`).
    fn reorg_to(&self, n: u64) {
        let mut c = self.chain.lock().unwrap();
        c.blocks.truncate(n as usize);
        c.fork += 1;
        let mut tree = MerkleTree::new(TREE_DEPTH);
        for b in &c.blocks {
            for l in &b.logs {
                if let Ok(ev) = NoxPool::Inserted::decode_log_data(&l.data) {
                    tree.insert(u256_to_fr(ev.commitment).unwrap()).unwrap();
                }
            }
        }
        c.tree = tree;
        c.roots.retain(|_, at| *at < n);
        c.nullifiers.clear();
    }

    fn head(&self) -> u64 {
        self.chain.lock().unwrap().blocks.len() as u64 - 1
    }
}

#[async_trait::async_trait]
impl PoolReader for FakePool {
    async fn chain_id(&self) -> Result<u64, ReadError> {
        Ok(CHAIN)
    }

    async fn block_number(&self) -> Result<u64, ReadError> {
        Ok(self.head())
    }

    async fn block_hash(&self, number: u64) -> Result<Option<B256>, ReadError> {
        Ok(self.chain.lock().unwrap().blocks.get(number as usize).map(|b| b.hash))
    }

    async fn logs(&self, pool: Address, from: u64, to: u64) -> Result<Vec<Log>, ReadError> {
        assert_eq!(pool, POOL);
        self.asked.lock().unwrap().push((from, to));
        if to - from + 1 > *self.max_range.lock().unwrap() {
            return Err(ReadError::Answer("query returned more than 10000 results".into()));
        }
        let c = self.chain.lock().unwrap();
        let hidden = self.hidden.lock().unwrap();
        let mut out = Vec::new();
        for n in from..=to.min(c.blocks.len() as u64 - 1) {
            let b = &c.blocks[n as usize];
            for (i, l) in b.logs.iter().enumerate() {
                if l.topics().get(1).is_some_and(|t| hidden.contains(t)) {
                    continue;
                }
                out.push(Log {
                    inner: l.clone(),
                    block_number: Some(n),
                    block_hash: Some(b.hash),
                    log_index: Some(i as u64),
                    ..Log::default()
                });
            }
        }
        Ok(out)
    }

    async fn known_root(&self, _pool: Address, root: U256, block: u64) -> Result<bool, ReadError> {
        if *self.forget_roots.lock().unwrap() {
            return Ok(false);
        }
        Ok(self.chain.lock().unwrap().roots.get(&root).is_some_and(|at| *at <= block))
    }

    async fn nullifier_state(&self, _pool: Address, nullifier: U256, _block: u64) -> Result<U256, ReadError> {
        Ok(self.chain.lock().unwrap().nullifiers.get(&nullifier).copied().unwrap_or_default())
    }
}

fn new_wallet(dir: &tempfile::TempDir) -> Wallet {
    Wallet::create(&dir.path().join("w.nox"), "pw", CHAIN, POOL, 0, KdfParams::insecure_fast()).unwrap()
}

/// A deposit note recorded by the wallet and its deposit mined by the pool.
fn deposit(w: &mut Wallet, pool: &FakePool, value: u128) -> Fr {
    let (commitment, secret) = w.new_deposit_note(ETH, value);
    w.save().unwrap();
    pool.deposit(value, secret);
    commitment
}

fn state_of(w: &Wallet, commitment: Fr) -> NoteState {
    w.notes().iter().find(|n| n.commitment == commitment).unwrap().state
}

#[tokio::test]
async fn the_file_survives_a_reopen_and_refuses_a_wrong_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FakePool::new();
    let mut w = new_wallet(&dir);
    let path = w.path().to_path_buf();
    let c = deposit(&mut w, &pool, 1_000);
    pool.mine_empty(3);
    w.sync(&pool, 0).await.unwrap();
    let (owner, root, notes) = (w.owner(), w.root(), w.notes());
    drop(w);

    let w = Wallet::open(&path, "pw").unwrap();
    assert_eq!((w.owner(), w.root(), w.notes()), (owner, root, notes));
    assert_eq!(state_of(&w, c), NoteState::Spendable);
    assert_eq!(w.kdf(), KdfParams::insecure_fast());
    assert_eq!(w.synced_block(), Some(pool.head()));
    assert!(!format!("{w:?}").contains(&nox_circuits::field::to_hex(&w.sk.0)));

    assert!(matches!(Wallet::open(&path, "wrong"), Err(WalletError::WrongPassphrase)));
    assert!(matches!(
        Wallet::create(&path, "pw", CHAIN, POOL, 0, KdfParams::insecure_fast()),
        Err(WalletError::AlreadyExists(_))
    ));
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(Wallet::open(&path, "pw"), Err(WalletError::Corrupt(_))));
    std::fs::write(&path, &bytes[..40]).unwrap();
    assert!(matches!(Wallet::open(&path, "pw"), Err(WalletError::Truncated { .. })));
}

#[tokio::test]
async fn a_note_goes_from_deposit_to_spent_and_its_change_to_spendable() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FakePool::new();
    let mut w = new_wallet(&dir);
    let c = deposit(&mut w, &pool, 1_000);
    assert_eq!(state_of(&w, c), NoteState::Deposited);
    assert!(matches!(w.select(ETH, 10), Err(WalletError::OnlyUnconfirmedDeposit { .. })));

    // Two confirmations: not yet, then found.
    w.sync(&pool, 2).await.unwrap();
    assert_eq!(state_of(&w, c), NoteState::Deposited);
    pool.mine_empty(2);
    let report = w.sync(&pool, 2).await.unwrap();
    assert_eq!((report.notes_found, report.leaves_added), (1, 1));
    assert_eq!(state_of(&w, c), NoteState::Spendable);
    let b = w.balances();
    assert_eq!(b[0].spendable, 1_000);

    // Prepared: spending, with its change pending, and saved before it is handed out.
    let selected = w.select(ETH, 300).unwrap();
    let p = w.prepare_spend(&selected, 300, Address::repeat_byte(9), Fr::from(5u64)).unwrap();
    assert_eq!(p.root, w.root());
    assert_eq!(p.change.value, 700);
    assert!(!format!("{p:?}").contains("700"));
    let reopened = Wallet::open(w.path(), "pw").unwrap();
    assert_eq!(state_of(&reopened, c), NoteState::Spending);
    assert_eq!(
        reopened.balances()[0],
        Balance { asset: ETH, spendable: 0, pending_change: 700, unconfirmed_deposits: 0, spending: 1_000 }
    );
    assert!(matches!(w.select(ETH, 300), Err(WalletError::OnlyPendingChange { pending: 700, .. })));
    assert!(matches!(
        w.prepare_spend(&selected, 300, Address::ZERO, Fr::from(0u64)),
        Err(WalletError::WrongState { needed: "spendable", .. })
    ));

    // Refused with nothing sent: released, the change dropped; built again.
    w.release(p.nullifier).unwrap();
    assert_eq!(state_of(&w, c), NoteState::Spendable);
    assert_eq!(w.notes().len(), 1);
    let p = w.prepare_spend(&w.select(ETH, 300).unwrap(), 300, Address::repeat_byte(9), Fr::from(5u64)).unwrap();

    // On chain: spent; the change pending until flushed.
    pool.withdraw(&p);
    let report = w.sync(&pool, 0).await.unwrap();
    assert_eq!(report.notes_spent, 1);
    assert_eq!(state_of(&w, c), NoteState::Spent);
    assert!(matches!(w.release(p.nullifier), Err(WalletError::AlreadySpent(_))));
    let change = p.public.change_commitment;
    assert_eq!(state_of(&w, change), NoteState::Pending);
    assert_eq!(w.pending_change_parents(), vec![p.nullifier]);
    pool.flush(p.nullifier);
    w.sync(&pool, 0).await.unwrap();
    assert_eq!(state_of(&w, change), NoteState::Spendable);
    assert!(w.pending_change_parents().is_empty());
    assert_eq!(w.select(ETH, 700).unwrap().commitment, change);
    assert_eq!(w.balances()[0].spendable, 700);
}

#[tokio::test]
async fn a_spend_the_logs_leave_out_is_found_by_its_nullifier() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FakePool::new();
    let mut w = new_wallet(&dir);
    let c = deposit(&mut w, &pool, 50);
    w.sync(&pool, 0).await.unwrap();
    let p = w.prepare_spend(&w.select(ETH, 50).unwrap(), 50, Address::repeat_byte(9), Fr::from(1u64)).unwrap();
    // Spent whole: no change note is kept.
    assert_eq!(w.notes().len(), 1);
    pool.hidden.lock().unwrap().insert(B256::from(fr_to_u256(p.nullifier)));
    pool.withdraw(&p);
    let report = w.sync(&pool, 0).await.unwrap();
    assert_eq!(report.notes_spent, 1);
    assert_eq!(state_of(&w, c), NoteState::Spent);
}

#[tokio::test]
async fn release_checked_asks_the_chain_first() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FakePool::new();
    let mut w = new_wallet(&dir);
    let c = deposit(&mut w, &pool, 50);
    w.sync(&pool, 0).await.unwrap();
    let p = w.prepare_spend(&w.select(ETH, 20).unwrap(), 20, Address::repeat_byte(9), Fr::from(1u64)).unwrap();
    pool.withdraw(&p);
    // Not synced yet: the local view would allow it; the chain does not.
    assert!(matches!(w.release_checked(&pool, p.nullifier).await, Err(WalletError::AlreadySpent(_))));
    assert_eq!(state_of(&w, c), NoteState::Spent);
}

#[tokio::test]
async fn a_reorganisation_rebuilds_the_tree_and_the_deposit_waits_again() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FakePool::new();
    let mut w = new_wallet(&dir);
    let keep = deposit(&mut w, &pool, 10);
    let at = pool.head() + 1;
    let lost = deposit(&mut w, &pool, 20);
    pool.mine_empty(2);
    w.sync(&pool, 1).await.unwrap();
    assert_eq!(state_of(&w, lost), NoteState::Spendable);

    pool.reorg_to(at);
    pool.mine_empty(5);
    let report = w.sync(&pool, 1).await.unwrap();
    assert!(report.reorganised);
    assert_eq!(report.from_block, 0);
    assert_eq!(state_of(&w, keep), NoteState::Spendable);
    assert_eq!(state_of(&w, lost), NoteState::Deposited);
    assert_eq!(w.leaf_count(), 1);
    assert!(matches!(w.select(ETH, 20), Err(WalletError::OnlyUnconfirmedDeposit { .. })));

    // The lost deposit is forgotten; a new one works.
    w.forget_deposit(lost).unwrap();
    let again = deposit(&mut w, &pool, 20);
    let report = w.sync(&pool, 0).await.unwrap();
    assert!(!report.reorganised);
    assert_eq!(state_of(&w, again), NoteState::Spendable);
    assert_eq!(w.select(ETH, 20).unwrap().leaf_index, 1);
}

#[tokio::test]
async fn a_spent_note_reorganised_away_is_spending_not_spendable() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FakePool::new();
    let mut w = new_wallet(&dir);
    let c = deposit(&mut w, &pool, 100);
    w.sync(&pool, 0).await.unwrap();
    let p = w.prepare_spend(&w.select(ETH, 40).unwrap(), 40, Address::repeat_byte(9), Fr::from(1u64)).unwrap();
    let spent_at = pool.withdraw(&p);
    w.sync(&pool, 0).await.unwrap();
    assert_eq!(state_of(&w, c), NoteState::Spent);
    pool.reorg_to(spent_at);
    pool.mine_empty(2);
    assert!(w.sync(&pool, 0).await.unwrap().reorganised);
    assert_eq!(state_of(&w, c), NoteState::Spending);
    // The chain no longer shows it: it can be released.
    w.release_checked(&pool, p.nullifier).await.unwrap();
    assert_eq!(state_of(&w, c), NoteState::Spendable);
}

#[tokio::test]
async fn ranges_are_halved_on_an_error_answer_and_progress_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FakePool::new();
    let mut w = new_wallet(&dir);
    w.set_max_log_range(64);
    pool.mine_empty(40);
    deposit(&mut w, &pool, 5);
    pool.mine_empty(40);
    *pool.max_range.lock().unwrap() = 10;
    let report = w.sync(&pool, 0).await.unwrap();
    assert_eq!((report.from_block, report.blocks_read), (0, pool.head() + 1));
    let asked = pool.asked.lock().unwrap().clone();
    assert!(asked.iter().filter(|(f, t)| t - f < 10).count() >= 8, "{asked:?}");
    assert_eq!(w.leaf_count(), 1);

    pool.mine_empty(3);
    let path = w.path().to_path_buf();
    drop(w);
    let mut w = Wallet::open(&path, "pw").unwrap();
    let report = w.sync(&pool, 0).await.unwrap();
    assert_eq!((report.from_block, report.blocks_read, report.reorganised), (pool.head() - 2, 3, false));
}

#[tokio::test]
async fn a_gap_in_the_leaves_and_an_unknown_root_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FakePool::new();
    let mut w = new_wallet(&dir);
    deposit(&mut w, &pool, 5);
    // A log the endpoint drops: leaf 0 is hidden, leaf 1 arrives first.
    let first = pool.chain.lock().unwrap().blocks[1].logs[0].topics()[1];
    pool.hidden.lock().unwrap().insert(first);
    deposit(&mut w, &pool, 6);
    assert!(matches!(w.sync(&pool, 0).await, Err(WalletError::LeafGap { expected: 0, found: 1 })));
    assert_eq!(w.leaf_count(), 0);
    pool.hidden.lock().unwrap().clear();
    w.sync(&pool, 0).await.unwrap();
    assert_eq!(w.leaf_count(), 2);

    *pool.forget_roots.lock().unwrap() = true;
    assert!(matches!(w.sync(&pool, 0).await, Err(WalletError::UnknownRoot { .. })));
    // The tree is dropped at once: a save now stores nothing inconsistent.
    assert_eq!(w.leaf_count(), 0);
    assert!(w.select(ETH, 5).is_err());
    w.save().unwrap();
    *pool.forget_roots.lock().unwrap() = false;
    // The next sync starts over, and agrees again.
    let report = w.sync(&pool, 0).await.unwrap();
    assert!(report.reorganised);
    assert_eq!(w.balances()[0].spendable, 11);
}

#[tokio::test]
async fn a_wrong_chain_is_refused() {
    struct Other(FakePool);
    #[async_trait::async_trait]
    impl PoolReader for Other {
        async fn chain_id(&self) -> Result<u64, ReadError> {
            Ok(1)
        }
        async fn block_number(&self) -> Result<u64, ReadError> {
            self.0.block_number().await
        }
        async fn block_hash(&self, n: u64) -> Result<Option<B256>, ReadError> {
            self.0.block_hash(n).await
        }
        async fn logs(&self, p: Address, f: u64, t: u64) -> Result<Vec<Log>, ReadError> {
            self.0.logs(p, f, t).await
        }
        async fn known_root(&self, p: Address, r: U256, b: u64) -> Result<bool, ReadError> {
            self.0.known_root(p, r, b).await
        }
        async fn nullifier_state(&self, p: Address, n: U256, b: u64) -> Result<U256, ReadError> {
            self.0.nullifier_state(p, n, b).await
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut w = new_wallet(&dir);
    assert!(matches!(
        w.sync(&Other(FakePool::new()), 0).await,
        Err(WalletError::WrongChain { expected: CHAIN, actual: 1 })
    ));
}

#[test]
fn a_sync_can_run_on_another_task() {
    fn assert_send<T: Send>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let mut w = new_wallet(&dir);
    let pool = FakePool::new();
    let reader: &dyn PoolReader = &pool;
    let fut = w.sync(reader, 0);
    assert_send(&fut);
}
