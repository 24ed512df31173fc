//! The shielded wallet: a spending key, the notes it owns, and the pool's
//! note tree, in one passphrase-encrypted file.
//!
//! **What it owns.** One [`SpendingKey`] (notes are addressed to
//! `owner = Poseidon(sk)`), the wallet's notes with their states
//! ([`notes`]), a copy of `NoxPool`'s Merkle tree, from which it takes the
//! Merkle paths of its spends, and the pool's *queue*: the leaves the pool
//! has given an index (`Queued`) but not yet inserted (`Flushed`), with the
//! bounty each prepaid (a flush names them), in index order from the tree's
//! size on. No Ethereum key is stored: deposits,
//! forced insertions and direct withdrawals are signed by the
//! [`EthClient`](nox_eth::EthClient) the caller passes.
//!
//! **The file** ([`file`](mod@file)): header in the clear (magic, version, argon2id
//! parameters, salt, passphrase check, nonce), bound as associated data to an
//! XChaCha20-Poly1305-sealed body: the key, the notes, the sync progress, the
//! tree's leaves and the queued leaves. The leaves are public, but they are
//! kept inside the sealed body rather than in a plain cache next to it: one
//! file, one atomic write, no way for the tree, the queue and the progress to
//! disagree after a crash, and the sync position (which tells when the wallet
//! was last used) is not left in the clear. The cost is 32 bytes per leaf
//! re-encrypted at each save (1 M leaves: 32 MiB) and, at `open`, the tree
//! rebuilt from its leaves (20 Poseidon hashes per leaf).
//!
//! **The sync** ([`Wallet::sync`], `sync.rs`) follows the pool with the
//! registry follower's discipline (`nox_eth::registry::follower`): a
//! confirmed head `head - confirmations`; the last processed block and its
//! hash checked at every sync, a mismatch meaning a reorganisation below the
//! confirmed head and a rebuild from the pool's deployment block; log ranges
//! of at most [`MAX_LOG_RANGE`] blocks, halved when the endpoint answers one
//! with an error; progress saved after every range that changed something,
//! so a sync resumes where the last one stopped. A `Queued` log appends to
//! the queue (indexes must follow each other); a `Flushed(first, count,
//! root)` moves the queue's first `count` leaves into the tree (it must start
//! at the tree's size) and the local root must then be `root`. At the end the
//! local root must be one the pool knows at the synced block, and the pool's
//! leaf counters there must be the wallet's. The chain is read through
//! [`PoolReader`], implemented for [`EthClient`](nox_eth::EthClient) and
//! implementable over the mixnet, so a private caller's reads need not show
//! its interest in the pool to an RPC provider.
//!
//! **Spends.** [`Wallet::select`] picks one inserted note (the circuit
//! spends one), [`Wallet::prepare_spend`] records it as *spending* (with the
//! spend's deadline, if any) and its change as *pending*, saves, and only then
//! returns the [`PreparedSpend`] a [`Prover`] turns into the pool's proof and
//! inputs. Deposits are recorded before their transaction is sent. A queued
//! note waits for a flush by anyone, or [`Wallet::insert_now`] flushes it
//! (`chain.rs` says what that reveals).

mod chain;
mod error;
pub mod file;
pub mod notes;
mod prover;
pub mod reader;
mod sync;

use std::path::{Path, PathBuf};

use alloy_primitives::{Address, B256, U256};
use ark_bn254::Fr;
use ark_ff::{BigInteger, PrimeField};
use nox_circuits::note::{Note, SpendingKey, address_to_fr, nullifier};
use nox_circuits::spend::{PublicInputs, Spend};
use nox_circuits::tree::{MerkleTree, TREE_DEPTH};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

pub use chain::{Deposit, FlushBatch, Insertion, Withdrawal, flush_end};
pub use error::WalletError;
use file::FileKey;
pub use file::KdfParams;
pub use notes::{Balance, NoteInfo, NoteState, SelectedNote};
use notes::{FieldHex, Origin, Stage, StoredNote};
pub use prover::Prover;
pub use reader::{PoolReader, QueueState, ReadError, pool_topics};
pub use sync::SyncReport;

/// Most blocks per `eth_getLogs` by default (halved on an error answer).
pub const MAX_LOG_RANGE: u64 = 10_000;

/// Where the sync stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SyncProgress {
    /// First block not yet processed.
    pub(crate) next_block: u64,
    /// The last processed block and its hash.
    pub(crate) last: Option<(u64, B256)>,
}

/// The sealed body's JSON part. The tree's `leaves` follow it in binary, 32
/// bytes each, then the `queued` leaves (indexes `leaves`, `leaves + 1`, …),
/// 64 bytes each: the leaf, then its bounty (a `uint256`, big-endian).
#[derive(Serialize, Deserialize)]
struct Body {
    spending_key: FieldHex,
    chain_id: u64,
    pool: Address,
    pool_start_block: u64,
    notes: Vec<StoredNote>,
    progress: SyncProgress,
    leaves: u64,
    queued: u64,
}

/// A leaf the pool queued, and the bounty its `Queued` log names (what a
/// flush of it must pass and is paid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueuedLeaf {
    pub(crate) leaf: Fr,
    pub(crate) bounty: U256,
}

/// A spend built from one of the wallet's notes, recorded as *spending*
/// before it was returned. `Debug` prints nothing of it.
#[derive(Clone)]
pub struct PreparedSpend {
    /// The spend: key, note, path, change, recipient, execution hash.
    pub spend: Spend,
    /// The spent note's nullifier.
    pub nullifier: Fr,
    /// The root the path leads to (the local tree's).
    pub root: Fr,
    /// The change note (value 0 when the note is spent whole; such a change
    /// is not kept).
    pub change: Note,
    /// The spend's public inputs, in the circuit's order.
    pub public: PublicInputs,
}

impl std::fmt::Debug for PreparedSpend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PreparedSpend(<redacted>)")
    }
}

/// An open wallet (see the module docs). `Debug` shows its chain and pool only.
pub struct Wallet {
    path: PathBuf,
    key: FileKey,
    sk: SpendingKey,
    owner: Fr,
    chain_id: u64,
    pool: Address,
    pool_start_block: u64,
    notes: Vec<StoredNote>,
    tree: MerkleTree,
    leaves: Vec<Fr>,
    /// Leaves queued in the pool and not yet inserted, from index
    /// `tree.len()` on, as the confirmed logs show them.
    queue: Vec<QueuedLeaf>,
    progress: SyncProgress,
    max_log_range: u64,
    /// The local tree disagreed with the pool: the next sync starts over.
    needs_rebuild: bool,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet").field("chain_id", &self.chain_id).field("pool", &self.pool).finish_non_exhaustive()
    }
}

impl Drop for Wallet {
    fn drop(&mut self) {
        self.sk.0.zeroize();
        for n in &mut self.notes {
            n.blinding.0.zeroize();
        }
    }
}

/// `f` as a `uint256`.
pub(crate) fn fr_to_u256(f: Fr) -> U256 {
    U256::from_be_slice(&f.into_bigint().to_bytes_be())
}

/// `f` as 32 big-endian bytes.
pub(crate) fn fr_to_be32(f: Fr) -> [u8; 32] {
    fr_to_u256(f).to_be_bytes::<32>()
}

/// A `uint256` as a field element, if it is below the modulus.
pub(crate) fn u256_to_fr(u: U256) -> Option<Fr> {
    nox_circuits::field::from_be32(&u.to_be_bytes::<32>())
}

impl Wallet {
    /// Creates a wallet file at `path` (which must not exist) with a fresh
    /// spending key, for `pool` on `chain_id`, whose tree the sync reads from
    /// `pool_start_block` (the pool's deployment block).
    pub fn create(
        path: &Path,
        passphrase: &str,
        chain_id: u64,
        pool: Address,
        pool_start_block: u64,
        kdf: KdfParams,
    ) -> Result<Wallet, WalletError> {
        if path.exists() {
            return Err(WalletError::AlreadyExists(path.to_path_buf()));
        }
        let key = FileKey::create(passphrase, kdf)?;
        let sk = SpendingKey::random(&mut rand::rngs::OsRng);
        let wallet = Wallet {
            path: path.to_path_buf(),
            key,
            owner: sk.owner(),
            sk,
            chain_id,
            pool,
            pool_start_block,
            notes: Vec::new(),
            tree: MerkleTree::new(TREE_DEPTH),
            leaves: Vec::new(),
            queue: Vec::new(),
            progress: SyncProgress { next_block: pool_start_block, last: None },
            max_log_range: MAX_LOG_RANGE,
            needs_rebuild: false,
        };
        wallet.save()?;
        Ok(wallet)
    }

    /// Opens the wallet file at `path`.
    pub fn open(path: &Path, passphrase: &str) -> Result<Wallet, WalletError> {
        let bytes = file::read(path)?;
        let (key, body) = FileKey::open(path, &bytes, passphrase)?;
        let corrupt = |what: String| WalletError::Corrupt(what);
        let json_len = body
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| corrupt("no body".into()))?;
        let json = body.get(4..4 + json_len).ok_or_else(|| corrupt("the body is shorter than its length".into()))?;
        let parsed: Body = serde_json::from_slice(json).map_err(|e| corrupt(format!("body: {e}")))?;
        let leaf_bytes = &body[4 + json_len..];
        let bytes = parsed.leaves.checked_mul(32).and_then(|t| parsed.queued.checked_mul(64)?.checked_add(t));
        if bytes != Some(leaf_bytes.len() as u64) {
            return Err(corrupt(format!(
                "{} leaf bytes for {} leaves and {} queued",
                leaf_bytes.len(),
                parsed.leaves,
                parsed.queued
            )));
        }
        let field = |chunk: &[u8]| {
            let mut word = [0u8; 32];
            word.copy_from_slice(chunk);
            nox_circuits::field::from_be32(&word).ok_or_else(|| corrupt("a leaf out of the field".into()))
        };
        let (tree_bytes, queue_bytes) = leaf_bytes.split_at(parsed.leaves as usize * 32);
        let mut tree = MerkleTree::new(TREE_DEPTH);
        let mut leaves = Vec::with_capacity(parsed.leaves as usize);
        for chunk in tree_bytes.chunks_exact(32) {
            let leaf = field(chunk)?;
            tree.insert(leaf)?;
            leaves.push(leaf);
        }
        let queue = queue_bytes
            .chunks_exact(64)
            .map(|c| Ok(QueuedLeaf { leaf: field(&c[..32])?, bounty: U256::from_be_slice(&c[32..]) }))
            .collect::<Result<Vec<_>, WalletError>>()?;
        let sk = SpendingKey(parsed.spending_key.0);
        Ok(Wallet {
            path: path.to_path_buf(),
            key,
            owner: sk.owner(),
            sk,
            chain_id: parsed.chain_id,
            pool: parsed.pool,
            pool_start_block: parsed.pool_start_block,
            notes: parsed.notes,
            tree,
            leaves,
            queue,
            progress: parsed.progress,
            max_log_range: MAX_LOG_RANGE,
            needs_rebuild: false,
        })
    }

    /// Writes the wallet file atomically (see [`file`](mod@file)).
    pub fn save(&self) -> Result<(), WalletError> {
        let body = Body {
            spending_key: FieldHex(self.sk.0),
            chain_id: self.chain_id,
            pool: self.pool,
            pool_start_block: self.pool_start_block,
            notes: self.notes.clone(),
            progress: self.progress,
            leaves: self.leaves.len() as u64,
            queued: self.queue.len() as u64,
        };
        let json = Zeroizing::new(serde_json::to_vec(&body).map_err(|e| WalletError::Corrupt(e.to_string()))?);
        drop(body);
        let json_len = u32::try_from(json.len()).map_err(|_| WalletError::Corrupt("the body exceeds 4 GiB".into()))?;
        let words = self.leaves.len() + 2 * self.queue.len();
        let mut plain = Zeroizing::new(Vec::with_capacity(4 + json.len() + 32 * words));
        plain.extend_from_slice(&json_len.to_be_bytes());
        plain.extend_from_slice(&json);
        for leaf in &self.leaves {
            plain.extend_from_slice(&fr_to_be32(*leaf));
        }
        for q in &self.queue {
            plain.extend_from_slice(&fr_to_be32(q.leaf));
            plain.extend_from_slice(&q.bounty.to_be_bytes::<32>());
        }
        file::write_atomic(&self.path, &self.key.seal(&plain)?)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's key-derivation parameters.
    pub fn kdf(&self) -> KdfParams {
        self.key.kdf()
    }

    /// The chain the wallet is for.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The pool the wallet is for.
    pub fn pool(&self) -> Address {
        self.pool
    }

    /// `Poseidon(sk)`: what a payer puts in a note for this wallet.
    pub fn owner(&self) -> Fr {
        self.owner
    }

    /// The local tree's root.
    pub fn root(&self) -> Fr {
        self.tree.root()
    }

    /// Leaves in the local tree.
    pub fn leaf_count(&self) -> u64 {
        self.tree.len()
    }

    /// Leaves the wallet has seen queued and not yet inserted (indexes
    /// [`Wallet::leaf_count`] on).
    pub fn queued_count(&self) -> u64 {
        self.queue.len() as u64
    }

    /// The queued leaves from index `from` to `to` (exclusive), if the wallet
    /// has seen them all and none is inserted in its tree.
    fn queued_leaves(&self, from: u64, to: u64) -> Option<&[QueuedLeaf]> {
        let start = usize::try_from(from.checked_sub(self.tree.len())?).ok()?;
        let end = usize::try_from(to.checked_sub(self.tree.len())?).ok()?;
        self.queue.get(start..end)
    }

    /// The last block the sync processed, if any.
    pub fn synced_block(&self) -> Option<u64> {
        self.progress.last.map(|(n, _)| n)
    }

    /// Sets the largest log range a sync asks for (at least 1).
    pub fn set_max_log_range(&mut self, blocks: u64) {
        self.max_log_range = blocks.max(1);
    }

    /// Sums per asset, by state.
    pub fn balances(&self) -> Vec<Balance> {
        notes::balances(&self.notes)
    }

    /// Every note, for listing (spent ones included).
    pub fn notes(&self) -> Vec<NoteInfo> {
        self.notes.iter().map(StoredNote::info).collect()
    }

    /// The smallest spendable note of `asset` worth at least `amount` (the
    /// circuit spends one note), or the typed reason there is none.
    pub fn select(&self, asset: Address, amount: u128) -> Result<SelectedNote, WalletError> {
        notes::select(&self.notes, asset, amount)
    }

    fn note_index(&self, commitment: Fr, leaf: u64) -> Result<usize, WalletError> {
        self.notes
            .iter()
            .position(|n| n.commitment.0 == commitment && n.leaf == Some(leaf))
            .ok_or(WalletError::UnknownNote)
    }

    /// Builds the spend of `note` paying `public_value` to `recipient`, bound
    /// to `execution_hash`, with the rest as a change note to this wallet
    /// (fresh blinding). Records the note as *spending* and the change as
    /// *pending*, and saves, before returning: if the save fails, nothing is
    /// recorded and no spend is returned. `expires` is the Unix time after
    /// which the pool refuses the spend (the deadline a relay's execution
    /// hash binds; `None` for a withdrawal): once a confirmed block past it
    /// shows the nullifier unspent, the sync releases the note.
    pub fn prepare_spend(
        &mut self,
        note: &SelectedNote,
        public_value: u128,
        recipient: Address,
        execution_hash: Fr,
        expires: Option<u64>,
    ) -> Result<PreparedSpend, WalletError> {
        let i = self.note_index(note.commitment, note.leaf_index)?;
        let stored = &self.notes[i];
        if stored.state() != NoteState::Spendable || note.leaf_index >= self.tree.len() {
            return Err(WalletError::WrongState { state: stored.state().name(), needed: "spendable" });
        }
        let leaf = note.leaf_index;
        let change_value = stored
            .value
            .checked_sub(public_value)
            .ok_or(WalletError::ValueExceedsNote { value: stored.value, public_value })?;
        let spent_nullifier = nullifier(&self.sk, stored.commitment.0, leaf);
        let change = StoredNote::new(
            stored.asset,
            change_value,
            self.owner,
            Origin::Change { parent: FieldHex(spent_nullifier) },
        );
        let spend = Spend {
            sk: self.sk.clone(),
            note: stored.note(self.owner),
            index: leaf,
            path: self.tree.path(leaf)?,
            public_value,
            change: change.note(self.owner),
            recipient: address_to_fr(&recipient.0.0),
            execution_hash,
        };
        let (public, _witness) = spend.inputs(TREE_DEPTH)?;
        let kept_change = (change_value > 0).then_some(change.commitment);
        let before = self.notes[i].stage;
        self.notes[i].stage = Stage::Spending { nullifier: FieldHex(spent_nullifier), change: kept_change, expires };
        if kept_change.is_some() {
            self.notes.push(change.clone());
        }
        if let Err(e) = self.save() {
            self.notes[i].stage = before;
            if kept_change.is_some() {
                self.notes.pop();
            }
            return Err(e);
        }
        Ok(PreparedSpend {
            nullifier: public.nullifier,
            root: public.root,
            change: change.note(self.owner),
            public,
            spend,
        })
    }

    /// Puts the *spending* note with this nullifier back to *spendable* and
    /// drops its change note, for a spend that was refused with nothing sent.
    /// Refused if the synced chain already shows the note spent; use
    /// [`Wallet::release_checked`] to ask the chain first. Saves.
    pub fn release(&mut self, nullifier: Fr) -> Result<(), WalletError> {
        let i =
            self.notes.iter().position(|n| n.spend_nullifier() == Some(nullifier)).ok_or(WalletError::UnknownNote)?;
        match self.notes[i].state() {
            NoteState::Spending => {}
            NoteState::Spent => return Err(WalletError::AlreadySpent(nox_circuits::field::to_hex(&nullifier))),
            other => return Err(WalletError::WrongState { state: other.name(), needed: "spending" }),
        }
        self.unspend(i, nullifier);
        self.save()
    }

    /// Puts the note at `i` back to where its leaf stands (spendable,
    /// queued or unconfirmed) and drops the change of its spend revealing
    /// `nullifier` (never queued: the spend did not happen).
    fn unspend(&mut self, i: usize, nullifier: Fr) {
        self.notes[i].stage = self.resting_stage(self.notes[i].leaf);
        self.notes.retain(|c| {
            !(matches!(c.origin, Origin::Change { parent } if parent.0 == nullifier) && c.stage == Stage::Unconfirmed)
        });
    }

    /// The stage of an unspent note with this leaf index: spendable in the
    /// tree, queued beyond it, unconfirmed without one.
    fn resting_stage(&self, leaf: Option<u64>) -> Stage {
        match leaf {
            Some(l) if l < self.tree.len() => Stage::Spendable,
            Some(_) => Stage::Queued,
            None => Stage::Unconfirmed,
        }
    }

    /// [`Wallet::release`] after asking the chain (`nullifierSpent(n)` at its
    /// head): a note the chain shows spent is marked *spent* instead, and
    /// [`WalletError::AlreadySpent`] returned.
    pub async fn release_checked(&mut self, reader: &dyn PoolReader, nullifier: Fr) -> Result<(), WalletError> {
        let head = reader.block_number().await?;
        if reader.nullifier_spent(self.pool, fr_to_u256(nullifier), head).await? {
            self.mark_spent(nullifier);
            self.save()?;
            return Err(WalletError::AlreadySpent(nox_circuits::field::to_hex(&nullifier)));
        }
        self.release(nullifier)
    }

    /// Marks the note whose spend revealed `nullifier` spent; returns whether
    /// one changed.
    fn mark_spent(&mut self, spent: Fr) -> bool {
        let sk = &self.sk;
        let Some(n) = self.notes.iter_mut().find(|n| {
            n.spend_nullifier() == Some(spent) || (n.stage == Stage::Spendable && n.nullifier(sk) == Some(spent))
        }) else {
            return false;
        };
        match n.stage {
            Stage::Spent { .. } => false,
            Stage::Spending { nullifier, change, expires } => {
                n.stage = Stage::Spent { nullifier, change, expires };
                true
            }
            _ => {
                n.stage = Stage::Spent { nullifier: FieldHex(spent), change: None, expires: None };
                true
            }
        }
    }
}

#[cfg(test)]
mod tests;
