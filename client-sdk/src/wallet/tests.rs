//! Wallet state transitions without a chain: [`FakePool`] plays a NoxPool
//! v2's blocks and logs behind [`PoolReader`] — leaves queued, then inserted
//! by flushes of whole segments — with reorganisations, ranges refused, logs
//! left out, roots lied about and roots the pool does not know.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use alloy::rpc::types::Log;
use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_sol_types::{SolCall, SolEvent};
use ark_bn254::Fr;
use nox_circuits::note::commitment_from_secret;
use nox_circuits::tree::{MerkleTree, TREE_DEPTH};
use nox_protocol::contracts::{NoxPool, POOL_BATCH, POOL_INSERT_GAS_PER_LEAF, insertion_bounty};

use super::*;

const CHAIN: u64 = 31337;
const POOL: Address = Address::repeat_byte(0x50);
const ETH: Address = Address::ZERO;
/// The first block's timestamp; each block is 12 s later.
const GENESIS_TIME: u64 = 1_800_000_000;

/// One block: its hash, its time and its pool logs.
#[derive(Clone)]
struct Block {
    hash: B256,
    timestamp: u64,
    logs: Vec<alloy_primitives::Log>,
}

/// The pool's state, replayed from the logs of blocks `..=n`.
#[derive(Clone)]
struct PoolState {
    tree: MerkleTree,
    queue: Vec<Fr>,
    open_start: u64,
}

impl PoolState {
    fn new() -> PoolState {
        PoolState { tree: MerkleTree::new(TREE_DEPTH), queue: vec![], open_start: 0 }
    }

    fn queued(&self) -> u64 {
        self.tree.len() + self.queue.len() as u64
    }

    fn fold(&mut self, log: &alloy_primitives::Log) {
        if let Ok(ev) = NoxPool::Queued::decode_log_data(&log.data) {
            assert_eq!(ev.leafIndex, U256::from(self.queued()));
            self.queue.push(u256_to_fr(ev.commitment).unwrap());
            if self.queued().is_multiple_of(POOL_BATCH) {
                self.open_start = self.queued();
            }
        } else if let Ok(ev) = NoxPool::Flushed::decode_log_data(&log.data) {
            let count = ev.count.to::<usize>();
            for leaf in self.queue.drain(..count) {
                self.tree.insert(leaf).unwrap();
            }
            self.open_start = self.open_start.max(self.tree.len());
        }
    }
}

#[derive(Clone)]
struct Chain {
    blocks: Vec<Block>,
    /// The state after the last block.
    state: PoolState,
    /// Root → the first block it was known at.
    roots: HashMap<U256, u64>,
    /// Nullifier → the block that spent it.
    spent: HashMap<U256, u64>,
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
    /// Logs not shown (by their first indexed topic).
    hidden: Mutex<HashSet<B256>>,
    /// `Flushed` logs shown with this root instead of theirs.
    lie_root: Mutex<Option<U256>>,
}

impl FakePool {
    fn new() -> FakePool {
        let state = PoolState::new();
        let mut roots = HashMap::new();
        roots.insert(fr_to_u256(state.tree.root()), 0);
        let chain = Chain { blocks: vec![], state, roots, spent: HashMap::new(), fork: 0 };
        let pool = FakePool {
            chain: Mutex::new(chain),
            max_range: Mutex::new(u64::MAX),
            asked: Mutex::new(vec![]),
            forget_roots: Mutex::new(false),
            hidden: Mutex::new(HashSet::new()),
            lie_root: Mutex::new(None),
        };
        pool.mine(vec![]);
        pool
    }

    fn mine(&self, logs: Vec<alloy_primitives::Log>) -> u64 {
        let mut c = self.chain.lock().unwrap();
        let n = c.blocks.len() as u64;
        let hash = keccak256([n.to_be_bytes(), c.fork.to_be_bytes()].concat());
        for l in &logs {
            c.state.fold(l);
        }
        let root = fr_to_u256(c.state.tree.root());
        c.roots.entry(root).or_insert(n);
        c.blocks.push(Block { hash, timestamp: GENESIS_TIME + 12 * n, logs });
        n
    }

    fn mine_empty(&self, count: u64) {
        for _ in 0..count {
            self.mine(vec![]);
        }
    }

    fn log(ev: &impl SolEvent) -> alloy_primitives::Log {
        alloy_primitives::Log { address: POOL, data: ev.encode_log_data() }
    }

    /// The `Queued` log of the next leaf (to be mined in the next block),
    /// with the bounty [`bounty_of`] its index.
    fn queued_log(&self, commitment: Fr, extra: u64) -> alloy_primitives::Log {
        let index = self.chain.lock().unwrap().state.queued() + extra;
        Self::log(&NoxPool::Queued {
            leafIndex: U256::from(index),
            commitment: fr_to_u256(commitment),
            bounty: bounty_of(index),
        })
    }

    /// A deposit of `value` ETH with `secret`, in a block of its own.
    fn deposit(&self, value: u128, secret: Fr) -> u64 {
        let log = self.queued_log(commitment_from_secret(Fr::from(0u64), Fr::from(value), secret), 0);
        self.mine(vec![log])
    }

    /// Someone else's deposits: `count` leaves, in one block.
    fn others(&self, count: u64) -> u64 {
        let logs = (0..count).map(|i| self.queued_log(Fr::from(1_000_000 + i), i)).collect();
        self.mine(logs)
    }

    /// The pool's `withdraw` (or `relay`): the change queued, the nullifier spent.
    fn spend(&self, p: &PreparedSpend, relayed: bool) -> u64 {
        let nf = fr_to_u256(p.nullifier);
        let change = fr_to_u256(p.public.change_commitment);
        let queued = self.queued_log(p.public.change_commitment, 0);
        let spent = if relayed {
            Self::log(&NoxPool::Relayed { nullifier: nf, relayer: Address::repeat_byte(9), success: true })
        } else {
            Self::log(&NoxPool::Withdrawn {
                nullifier: nf,
                recipient: Address::repeat_byte(9),
                asset: U256::ZERO,
                value: U256::from(p.spend.public_value),
                changeCommitment: change,
            })
        };
        let n = self.mine(vec![queued, spent]);
        self.chain.lock().unwrap().spent.insert(nf, n);
        n
    }

    /// A flush of the first `count` queued leaves.
    fn flush(&self, count: u64) -> u64 {
        let (first, root) = {
            let c = self.chain.lock().unwrap();
            let mut state = c.state.clone();
            let first = state.tree.len();
            for leaf in state.queue.drain(..count as usize) {
                state.tree.insert(leaf).unwrap();
            }
            (first, fr_to_u256(state.tree.root()))
        };
        self.mine(vec![Self::log(&NoxPool::Flushed {
            firstIndex: U256::from(first),
            count: U256::from(count),
            root,
            flusher: Address::repeat_byte(8),
            bountyPaid: U256::ZERO,
        })])
    }

    /// A flush of every queued leaf.
    fn flush_all(&self) -> u64 {
        let count = self.chain.lock().unwrap().state.queue.len() as u64;
        self.flush(count)
    }

    /// The state after block `n`.
    fn state_at(&self, n: u64) -> PoolState {
        let c = self.chain.lock().unwrap();
        let mut state = PoolState::new();
        for b in &c.blocks[..=n as usize] {
            for l in &b.logs {
                state.fold(l);
            }
        }
        state
    }

    fn queue_state_now(&self) -> QueueState {
        let s = &self.chain.lock().unwrap().state;
        QueueState { inserted: s.tree.len(), queued: s.queued(), open_start: s.open_start }
    }

    /// Drops the blocks from `n` on, as a reorganisation does.
    fn reorg_to(&self, n: u64) {
        let state = self.state_at(n - 1);
        let mut c = self.chain.lock().unwrap();
        c.blocks.truncate(n as usize);
        c.fork += 1;
        c.state = state;
        c.roots.retain(|_, at| *at < n);
        c.spent.retain(|_, at| *at < n);
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

    async fn block_timestamp(&self, number: u64) -> Result<Option<u64>, ReadError> {
        Ok(self.chain.lock().unwrap().blocks.get(number as usize).map(|b| b.timestamp))
    }

    async fn logs(&self, pool: Address, from: u64, to: u64) -> Result<Vec<Log>, ReadError> {
        assert_eq!(pool, POOL);
        self.asked.lock().unwrap().push((from, to));
        if to - from + 1 > *self.max_range.lock().unwrap() {
            return Err(ReadError::Answer("query returned more than 10000 results".into()));
        }
        let c = self.chain.lock().unwrap();
        let hidden = self.hidden.lock().unwrap();
        let lie = *self.lie_root.lock().unwrap();
        let mut out = Vec::new();
        for n in from..=to.min(c.blocks.len() as u64 - 1) {
            let b = &c.blocks[n as usize];
            for (i, l) in b.logs.iter().enumerate() {
                if l.topics().get(1).is_some_and(|t| hidden.contains(t)) {
                    continue;
                }
                let mut inner = l.clone();
                if let (Some(root), Ok(mut ev)) = (lie, NoxPool::Flushed::decode_log_data(&l.data)) {
                    ev.root = root;
                    inner = Self::log(&ev);
                }
                out.push(Log {
                    inner,
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

    async fn queue_state(&self, _pool: Address, block: u64) -> Result<QueueState, ReadError> {
        let s = self.state_at(block);
        Ok(QueueState { inserted: s.tree.len(), queued: s.queued(), open_start: s.open_start })
    }

    async fn nullifier_spent(&self, _pool: Address, nullifier: U256, block: u64) -> Result<bool, ReadError> {
        Ok(self.chain.lock().unwrap().spent.get(&nullifier).is_some_and(|at| *at <= block))
    }
}

/// The bounty the fake pool's leaf `index` prepaid (each leaf's differs).
fn bounty_of(index: u64) -> U256 {
    U256::from(80_000_000_000_000u64 + index)
}

fn new_wallet(dir: &tempfile::TempDir) -> Wallet {
    Wallet::create(&dir.path().join("w.nox"), "pw", CHAIN, POOL, 0, KdfParams::insecure_fast()).unwrap()
}

/// A deposit note recorded by the wallet and its deposit mined (queued) by the pool.
fn deposit(w: &mut Wallet, pool: &FakePool, value: u128) -> Fr {
    let (commitment, secret) = w.new_deposit_note(ETH, value);
    w.save().unwrap();
    pool.deposit(value, secret);
    commitment
}

/// A deposit queued and flushed at once, as by an eager flusher.
fn inserted_deposit(w: &mut Wallet, pool: &FakePool, value: u128) -> Fr {
    let c = deposit(w, pool, value);
    pool.flush_all();
    c
}

fn state_of(w: &Wallet, commitment: Fr) -> NoteState {
    w.notes().iter().find(|n| n.commitment == commitment).unwrap().state
}

fn leaf_of(w: &Wallet, commitment: Fr) -> Option<u64> {
    w.notes().iter().find(|n| n.commitment == commitment).unwrap().leaf_index
}

fn spend(w: &mut Wallet, amount: u128, expires: Option<u64>) -> PreparedSpend {
    let note = w.select(ETH, amount).unwrap();
    w.prepare_spend(&note, amount, Address::repeat_byte(9), Fr::from(5u64), expires).unwrap()
}

#[tokio::test]
async fn the_file_survives_a_reopen_and_refuses_a_wrong_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FakePool::new();
    let mut w = new_wallet(&dir);
    let path = w.path().to_path_buf();
    let c = inserted_deposit(&mut w, &pool, 1_000);
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
    // A wallet of NoxPool v1 says so.
    bytes[8..10].copy_from_slice(&1u16.to_be_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(Wallet::open(&path, "pw"), Err(WalletError::PoolV1Wallet(_))));
}

#[tokio::test]
async fn a_queued_note_is_spendable_only_once_flushed_and_its_change_too() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FakePool::new();
    let mut w = new_wallet(&dir);
    pool.others(3);
    let c = deposit(&mut w, &pool, 1_000);
    assert_eq!(state_of(&w, c), NoteState::Deposited);
    assert!(matches!(w.select(ETH, 10), Err(WalletError::OnlyUnconfirmedDeposit { .. })));

    // Two confirmations: not yet, then queued with its index — but not spendable.
    w.sync(&pool, 2).await.unwrap();
    assert_eq!(state_of(&w, c), NoteState::Deposited);
    pool.mine_empty(2);
    let report = w.sync(&pool, 2).await.unwrap();
    assert_eq!((report.notes_found, report.leaves_queued, report.leaves_added), (1, 4, 0));
    assert_eq!(state_of(&w, c), NoteState::Queued);
    assert_eq!(leaf_of(&w, c), Some(3));
    assert_eq!((w.leaf_count(), w.queued_count()), (0, 4));
    assert!(matches!(w.select(ETH, 10), Err(WalletError::OnlyQueued { queued: 1_000, .. })));
    assert_eq!(w.balances()[0].queued, 1_000);
    // A queued note has no path: it cannot be spent even when named.
    let named = SelectedNote { asset: ETH, value: 1_000, leaf_index: 3, commitment: c };
    assert!(matches!(
        w.prepare_spend(&named, 1, Address::ZERO, Fr::from(0u64), None),
        Err(WalletError::WrongState { needed: "spendable", .. })
    ));

    // A flush of the first two leaves leaves it queued; the rest inserts it.
    pool.flush(2);
    let report = w.sync(&pool, 0).await.unwrap();
    assert_eq!((report.leaves_added, report.notes_inserted), (2, 0));
    assert_eq!(state_of(&w, c), NoteState::Queued);
    pool.flush(2);
    let report = w.sync(&pool, 0).await.unwrap();
    assert_eq!((report.leaves_added, report.notes_inserted), (2, 1));
    assert_eq!(state_of(&w, c), NoteState::Spendable);
    assert_eq!((w.leaf_count(), w.queued_count()), (4, 0));
    assert_eq!(w.balances()[0].spendable, 1_000);

    // Prepared: spending, with its change pending, and saved before it is handed out.
    let p = spend(&mut w, 300, None);
    assert_eq!(p.root, w.root());
    assert_eq!(p.change.value, 700);
    assert!(!format!("{p:?}").contains("700"));
    let reopened = Wallet::open(w.path(), "pw").unwrap();
    assert_eq!(state_of(&reopened, c), NoteState::Spending);
    assert_eq!(
        reopened.balances()[0],
        Balance { asset: ETH, spendable: 0, pending_change: 700, unconfirmed_deposits: 0, queued: 0, spending: 1_000 }
    );
    assert!(matches!(w.select(ETH, 300), Err(WalletError::OnlyPendingChange { pending: 700, .. })));

    // Refused with nothing sent: released, the change dropped; built again.
    w.release(p.nullifier).unwrap();
    assert_eq!(state_of(&w, c), NoteState::Spendable);
    assert_eq!(w.notes().len(), 1);
    let p = spend(&mut w, 300, None);

    // On chain: spent, and the change queued by the same transaction.
    pool.spend(&p, false);
    let report = w.sync(&pool, 0).await.unwrap();
    assert_eq!((report.notes_spent, report.notes_found), (1, 1));
    assert_eq!(state_of(&w, c), NoteState::Spent);
    assert!(matches!(w.release(p.nullifier), Err(WalletError::AlreadySpent(_))));
    let change = p.public.change_commitment;
    assert_eq!(state_of(&w, change), NoteState::Queued);
    assert!(matches!(w.select(ETH, 700), Err(WalletError::OnlyQueued { queued: 700, .. })));
    pool.flush_all();
    w.sync(&pool, 0).await.unwrap();
    assert_eq!(state_of(&w, change), NoteState::Spendable);
    assert_eq!(w.select(ETH, 700).unwrap().commitment, change);
    assert_eq!(w.balances()[0].spendable, 700);
}

#[tokio::test]
async fn the_queue_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FakePool::new();
    let mut w = new_wallet(&dir);
    pool.others(2);
    pool.flush_all();
    let c = deposit(&mut w, &pool, 50);
    pool.others(3);
    w.sync(&pool, 0).await.unwrap();
    assert_eq!((w.leaf_count(), w.queued_count()), (2, 4));
    let path = w.path().to_path_buf();
    let before = w.insertion_batch(&pool.queue_state_now()).unwrap().unwrap();
    assert_eq!(before.bounties, (2..6).map(bounty_of).collect::<Vec<_>>());
    drop(w);

    let mut w = Wallet::open(&path, "pw").unwrap();
    assert_eq!((w.leaf_count(), w.queued_count()), (2, 4));
    assert_eq!(state_of(&w, c), NoteState::Queued);
    assert_eq!(w.insertion_batch(&pool.queue_state_now()).unwrap().unwrap(), before);
    // The queued leaves are the pool's: the next flush inserts them with its root.
    pool.flush_all();
    let report = w.sync(&pool, 0).await.unwrap();
    assert_eq!((report.leaves_added, report.notes_inserted, report.reorganised), (4, 1, false));
    assert_eq!(state_of(&w, c), NoteState::Spendable);
    assert_eq!(w.queued_count(), 0);
}

#[tokio::test]
async fn insertion_takes_the_leaves_from_the_pools_next_index_through_the_notes_segment() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FakePool::new();
    let mut w = new_wallet(&dir);
    // Nothing of the wallet's is queued: nothing to insert.
    pool.others(5);
    w.sync(&pool, 0).await.unwrap();
    assert_eq!(w.insertion_batch(&pool.queue_state_now()).unwrap(), None);

    // An early flush of the open segment [0, 5): the next segment is [5, 32).
    pool.flush_all();
    pool.others(3);
    let ours = deposit(&mut w, &pool, 10);
    assert_eq!(pool.queue_state_now().open_start, 5);
    pool.others(40);
    let state = pool.queue_state_now();
    assert_eq!((state.inserted, state.queued, state.open_start), (5, 49, 32));
    w.sync(&pool, 0).await.unwrap();
    assert_eq!(leaf_of(&w, ours), Some(8));
    let batch = w.insertion_batch(&state).unwrap().unwrap();
    // [5, 32): the closed segment holding leaf 8, and nothing of the open one,
    // each leaf with the bounty its Queued log named.
    assert_eq!((batch.first, batch.leaves.len()), (5, 27));
    assert_eq!(batch.leaves[3], ours);
    assert_eq!(batch.bounties, (5..32).map(bounty_of).collect::<Vec<_>>());
    assert_eq!(flush_end(8, &state), POOL_BATCH);
    let call = NoxPool::flushCall::abi_decode(&batch.call().abi_encode()).unwrap();
    assert_eq!((call.leaves[3], call.bounties[3]), (fr_to_u256(ours), bounty_of(8)));

    // A change note in the open segment: everything up to the last queued leaf.
    let change = deposit(&mut w, &pool, 20);
    let state = pool.queue_state_now();
    w.sync(&pool, 0).await.unwrap();
    assert_eq!(leaf_of(&w, change), Some(49));
    assert_eq!(flush_end(49, &state), 50);
    let batch = w.insertion_batch(&state).unwrap().unwrap();
    assert_eq!((batch.first, batch.leaves.len()), (5, 45));
    assert_eq!(batch.leaves.last(), Some(&change));

    // Someone flushes [5, 32) after the wallet's sync: the leaves start at the
    // pool's next index, taken from the wallet's queue.
    pool.flush(27);
    let state = pool.queue_state_now();
    assert_eq!(state.inserted, 32);
    let batch = w.insertion_batch(&state).unwrap().unwrap();
    assert_eq!((batch.first, batch.leaves.len(), batch.leaves.last()), (32, 18, Some(&change)));
    assert_eq!(batch.bounties[0], bounty_of(32));

    // The pool queued a leaf the wallet has not seen, in the note's segment.
    pool.others(1);
    let state = pool.queue_state_now();
    assert!(matches!(
        w.insertion_batch(&state),
        Err(WalletError::QueueBehind { from: 32, to: 51, seen: 50, inserted: 5 })
    ));
    // After a sync the flush covers it too.
    w.sync(&pool, 0).await.unwrap();
    assert_eq!(w.insertion_batch(&state).unwrap().unwrap().leaves.len(), 19);
    // The latest state behind the wallet's (a reorganisation since): refused.
    let behind = QueueState { inserted: 32, queued: 40, open_start: 32 };
    assert!(matches!(w.insertion_batch(&behind), Err(WalletError::PoolBehind { pool_queued: 40, .. })));
    // Once the pool inserted them, nothing is left to insert.
    pool.flush_all();
    w.sync(&pool, 0).await.unwrap();
    assert_eq!(state_of(&w, ours), NoteState::Spendable);
    assert_eq!(w.insertion_batch(&pool.queue_state_now()).unwrap(), None);
}

#[test]
fn a_deposit_sends_the_insertion_bounty_with_its_value() {
    let bounty = insertion_bounty(7_000_000_000);
    assert_eq!(bounty, 2 * 7_000_000_000 * u128::from(POOL_INSERT_GAS_PER_LEAF));
    let secret = U256::from(42u64);
    let (call, data, value) = chain::deposit_call(ETH, 10u128.pow(18), secret, bounty);
    assert_eq!((call, value), ("NoxPool.deposit", 10u128.pow(18) + bounty));
    let decoded = NoxPool::depositCall::abi_decode(&data).unwrap();
    assert_eq!((decoded.value, decoded.secret), (U256::from(10u128.pow(18)), secret));
    // A token deposit sends the bounty alone.
    let token = Address::repeat_byte(0xa0);
    let (call, data, value) = chain::deposit_call(token, 500, secret, bounty);
    assert_eq!((call, value), ("NoxPool.depositERC20", bounty));
    let decoded = NoxPool::depositERC20Call::abi_decode(&data).unwrap();
    assert_eq!((decoded.token, decoded.amount, decoded.secret), (token, U256::from(500u64), secret));
}

#[tokio::test]
async fn a_flushed_root_that_differs_rebuilds_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FakePool::new();
    let mut w = new_wallet(&dir);
    let c = deposit(&mut w, &pool, 5);
    w.sync(&pool, 0).await.unwrap();
    pool.flush_all();
    *pool.lie_root.lock().unwrap() = Some(U256::from(12345u64));
    assert!(matches!(w.sync(&pool, 0).await, Err(WalletError::RootMismatch { first: 0, count: 1 })));
    // Dropped at once: no leaf, no queue, the note waits again.
    assert_eq!((w.leaf_count(), w.queued_count()), (0, 0));
    assert_eq!(state_of(&w, c), NoteState::Deposited);
    *pool.lie_root.lock().unwrap() = None;
    let report = w.sync(&pool, 0).await.unwrap();
    assert!(report.reorganised);
    assert_eq!(report.from_block, 0);
    assert_eq!(state_of(&w, c), NoteState::Spendable);
}

#[tokio::test]
async fn a_flush_of_leaves_not_seen_queued_is_refused_and_a_missing_log_rebuilds() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FakePool::new();
    let mut w = new_wallet(&dir);
    deposit(&mut w, &pool, 5);
    deposit(&mut w, &pool, 6);
    pool.flush_all();
    // The endpoint leaves out leaf 1's Queued log: the flush of two leaves
    // covers a leaf the wallet never saw.
    let second = B256::from(U256::from(1u64));
    pool.hidden.lock().unwrap().insert(second);
    assert!(matches!(
        w.sync(&pool, 0).await,
        Err(WalletError::FlushGap { first: 0, count: 2, inserted: 0, queued: 1 })
    ));
    pool.hidden.lock().unwrap().clear();
    w.sync(&pool, 0).await.unwrap();
    assert_eq!(w.leaf_count(), 2);

    // A trailing log left out in a range with nothing after it: the pool's
    // counters at the synced block tell, and the wallet starts over.
    let c = deposit(&mut w, &pool, 7);
    pool.hidden.lock().unwrap().insert(B256::from(U256::from(2u64)));
    let err = w.sync(&pool, 0).await.unwrap_err();
    assert!(
        matches!(err, WalletError::LeafCountMismatch { pool_queued: 3, queued: 2, pool_inserted: 2, inserted: 2, .. }),
        "{err:?}"
    );
    assert_eq!(w.leaf_count(), 0);
    pool.hidden.lock().unwrap().clear();
    assert!(w.sync(&pool, 0).await.unwrap().reorganised);
    assert_eq!(state_of(&w, c), NoteState::Queued);
    assert_eq!((w.leaf_count(), w.queued_count()), (2, 1));
}

#[tokio::test]
async fn a_spend_the_logs_leave_out_is_found_by_its_nullifier() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FakePool::new();
    let mut w = new_wallet(&dir);
    let c = inserted_deposit(&mut w, &pool, 50);
    w.sync(&pool, 0).await.unwrap();
    let p = spend(&mut w, 50, None);
    // Spent whole: no change note is kept.
    assert_eq!(w.notes().len(), 1);
    pool.hidden.lock().unwrap().insert(B256::from(fr_to_u256(p.nullifier)));
    pool.spend(&p, false);
    let report = w.sync(&pool, 0).await.unwrap();
    assert_eq!(report.notes_spent, 1);
    assert_eq!(state_of(&w, c), NoteState::Spent);
}

#[tokio::test]
async fn release_checked_asks_the_chain_first() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FakePool::new();
    let mut w = new_wallet(&dir);
    let c = inserted_deposit(&mut w, &pool, 50);
    w.sync(&pool, 0).await.unwrap();
    let p = spend(&mut w, 20, None);
    pool.spend(&p, false);
    // Not synced yet: the local view would allow it; the chain does not.
    assert!(matches!(w.release_checked(&pool, p.nullifier).await, Err(WalletError::AlreadySpent(_))));
    assert_eq!(state_of(&w, c), NoteState::Spent);
}

#[tokio::test]
async fn a_relay_past_its_deadline_and_unspent_frees_the_note() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FakePool::new();
    let mut w = new_wallet(&dir);
    let c = inserted_deposit(&mut w, &pool, 100);
    w.sync(&pool, 0).await.unwrap();
    // A relay whose fate is unknown (a timeout, `no_receipt`): spending,
    // with the deadline of its execution hash.
    let next_block_time = GENESIS_TIME + 12 * (pool.head() + 1);
    let deadline = next_block_time + 24;
    let p = spend(&mut w, 40, Some(deadline));
    assert_eq!(w.notes().len(), 2);
    // Up to the deadline the pool could still take it: the note stays spending.
    pool.mine_empty(3);
    assert_eq!(GENESIS_TIME + 12 * pool.head(), deadline);
    let report = w.sync(&pool, 0).await.unwrap();
    assert_eq!(report.notes_released, 0);
    assert_eq!(state_of(&w, c), NoteState::Spending);
    // Confirmed past it, nullifier unspent: released, the change dropped.
    pool.mine_empty(1);
    w.sync(&pool, 1).await.unwrap();
    assert_eq!(state_of(&w, c), NoteState::Spending, "the block past the deadline is not confirmed yet");
    pool.mine_empty(1);
    let report = w.sync(&pool, 1).await.unwrap();
    assert_eq!(report.notes_released, 1);
    assert_eq!(state_of(&w, c), NoteState::Spendable);
    assert_eq!(w.notes().len(), 1);
    // The release is saved.
    assert_eq!(state_of(&Wallet::open(w.path(), "pw").unwrap(), c), NoteState::Spendable);

    // A relay that landed before its deadline is spent, not released.
    let deadline = GENESIS_TIME + 12 * (pool.head() + 1);
    let p2 = spend(&mut w, 40, Some(deadline));
    assert_eq!(p2.nullifier, p.nullifier, "the same note, the same nullifier");
    pool.hidden.lock().unwrap().insert(B256::from(fr_to_u256(p2.nullifier)));
    pool.spend(&p2, true);
    pool.mine_empty(3);
    let report = w.sync(&pool, 0).await.unwrap();
    assert_eq!((report.notes_spent, report.notes_released), (1, 0));
    assert_eq!(state_of(&w, c), NoteState::Spent);
    assert_eq!(state_of(&w, p2.public.change_commitment), NoteState::Queued);

    // A withdrawal has no deadline: never released by the sync.
    pool.flush_all();
    w.sync(&pool, 0).await.unwrap();
    let p3 = spend(&mut w, 10, None);
    pool.mine_empty(100);
    assert_eq!(w.sync(&pool, 0).await.unwrap().notes_released, 0);
    assert!(w.notes().iter().any(|n| n.commitment == p2.public.change_commitment && n.state == NoteState::Spending));
    w.release_checked(&pool, p3.nullifier).await.unwrap();
}

#[tokio::test]
async fn a_reorganisation_rebuilds_the_tree_and_the_notes_wait_again() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FakePool::new();
    let mut w = new_wallet(&dir);
    let keep = inserted_deposit(&mut w, &pool, 10);
    let at = pool.head() + 1;
    let lost = deposit(&mut w, &pool, 20);
    let flushed_at = pool.flush_all();
    pool.mine_empty(2);
    w.sync(&pool, 1).await.unwrap();
    assert_eq!(state_of(&w, lost), NoteState::Spendable);

    // The flush is reorganised away: the deposit is queued again.
    pool.reorg_to(flushed_at);
    pool.mine_empty(5);
    let report = w.sync(&pool, 1).await.unwrap();
    assert!(report.reorganised);
    assert_eq!(report.from_block, 0);
    assert_eq!(state_of(&w, keep), NoteState::Spendable);
    assert_eq!(state_of(&w, lost), NoteState::Queued);
    assert_eq!((w.leaf_count(), w.queued_count()), (1, 1));

    // The deposit too: it waits as sent.
    pool.reorg_to(at);
    pool.mine_empty(5);
    assert!(w.sync(&pool, 1).await.unwrap().reorganised);
    assert_eq!(state_of(&w, lost), NoteState::Deposited);
    assert_eq!((w.leaf_count(), w.queued_count()), (1, 0));
    assert!(matches!(w.select(ETH, 20), Err(WalletError::OnlyUnconfirmedDeposit { .. })));

    // The lost deposit is forgotten; a new one works.
    w.forget_deposit(lost).unwrap();
    let again = inserted_deposit(&mut w, &pool, 20);
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
    let c = inserted_deposit(&mut w, &pool, 100);
    w.sync(&pool, 0).await.unwrap();
    let p = spend(&mut w, 40, None);
    let spent_at = pool.spend(&p, false);
    w.sync(&pool, 0).await.unwrap();
    assert_eq!(state_of(&w, c), NoteState::Spent);
    pool.reorg_to(spent_at);
    pool.mine_empty(2);
    assert!(w.sync(&pool, 0).await.unwrap().reorganised);
    assert_eq!(state_of(&w, c), NoteState::Spending);
    assert_eq!(state_of(&w, p.public.change_commitment), NoteState::Pending);
    // The chain no longer shows it: it can be released.
    w.release_checked(&pool, p.nullifier).await.unwrap();
    assert_eq!(state_of(&w, c), NoteState::Spendable);
    assert_eq!(w.notes().len(), 1);
}

#[tokio::test]
async fn ranges_are_halved_on_an_error_answer_and_progress_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FakePool::new();
    let mut w = new_wallet(&dir);
    w.set_max_log_range(64);
    pool.mine_empty(40);
    deposit(&mut w, &pool, 5);
    pool.mine_empty(20);
    pool.flush_all();
    pool.mine_empty(20);
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
async fn a_gap_in_the_queue_and_an_unknown_root_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FakePool::new();
    let mut w = new_wallet(&dir);
    deposit(&mut w, &pool, 5);
    // A log the endpoint drops: leaf 0 is hidden, leaf 1 arrives first.
    pool.hidden.lock().unwrap().insert(B256::from(U256::ZERO));
    deposit(&mut w, &pool, 6);
    assert!(matches!(w.sync(&pool, 0).await, Err(WalletError::LeafGap { expected: 0, found: 1 })));
    assert_eq!(w.queued_count(), 0);
    pool.hidden.lock().unwrap().clear();
    pool.flush_all();
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
        async fn block_timestamp(&self, n: u64) -> Result<Option<u64>, ReadError> {
            self.0.block_timestamp(n).await
        }
        async fn logs(&self, p: Address, f: u64, t: u64) -> Result<Vec<Log>, ReadError> {
            self.0.logs(p, f, t).await
        }
        async fn known_root(&self, p: Address, r: U256, b: u64) -> Result<bool, ReadError> {
            self.0.known_root(p, r, b).await
        }
        async fn queue_state(&self, p: Address, b: u64) -> Result<QueueState, ReadError> {
            self.0.queue_state(p, b).await
        }
        async fn nullifier_spent(&self, p: Address, n: U256, b: u64) -> Result<bool, ReadError> {
            self.0.nullifier_spent(p, n, b).await
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
