//! [`Wallet::sync`]: the local tree, the pool's queue and the notes' states
//! brought up to the pool's confirmed head (the discipline is in the parent
//! module's docs).
//!
//! NoxPool v2 logs a leaf twice: `Queued(index, commitment, bounty)` when a
//! deposit or a spend's change gets its index, and `Flushed(first, count,
//! root)` when a flush inserts leaves `first .. first + count` into the tree.
//! The wallet keeps the queued leaves it has seen, with their bounties
//! (contiguous from its tree's size), and inserts them from there when their
//! `Flushed` arrives, so it never needs to read a flush's calldata.
//!
//! Each range's logs are decoded and checked (queued indexes contiguous from
//! the wallet's tree and queue, each flush starting at the tree's size and
//! covering only leaves seen queued) before anything is applied, so a bad
//! answer leaves the wallet as it was. A flushed root that differs from the
//! local root after that flush, a leaf index below what the wallet holds, a
//! final root the pool does not know, or leaf counters at the synced block
//! other than the wallet's, means the local state went wrong: it is dropped
//! at once (every note loses its leaf index), the error is returned, and the
//! next sync starts over from the pool's deployment block.
//!
//! At the end, the notes whose spend is out (*spending*) are looked up by
//! nullifier at the synced block: spent, or — for a relay whose deadline
//! that block's timestamp has passed — released, since the pool refuses the
//! proof from then on.

use std::collections::HashMap;

use alloy::rpc::types::Log;
use alloy_primitives::U256;
use alloy_sol_types::SolEvent;
use ark_bn254::Fr;
use nox_circuits::tree::{MerkleTree, TREE_DEPTH};
use nox_protocol::contracts::NoxPool;

use super::notes::Stage;
use super::reader::{PoolReader, ReadError};
use super::{QueuedLeaf, SyncProgress, Wallet, WalletError, fr_to_u256, u256_to_fr};

/// What one sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    /// The endpoint's head.
    pub head: u64,
    /// The last processed block after the sync (none before the pool's
    /// deployment block is confirmed).
    pub synced: Option<u64>,
    /// The first block this sync read (the stored progress, or the pool's
    /// deployment block after a rebuild).
    pub from_block: u64,
    /// Blocks whose logs this sync read.
    pub blocks_read: u64,
    /// Whether a reorganisation below the confirmed head (or a tree that
    /// disagreed with the pool) forced a rebuild from the deployment block.
    pub reorganised: bool,
    /// Leaves seen queued.
    pub leaves_queued: u64,
    /// Leaves added to the local tree (flushed).
    pub leaves_added: u64,
    /// The wallet's notes seen queued (given their leaf index).
    pub notes_found: u64,
    /// The wallet's notes seen inserted (spendable from now on).
    pub notes_inserted: u64,
    /// The wallet's notes seen spent.
    pub notes_spent: u64,
    /// Spending notes released because their spend's deadline passed with
    /// the nullifier unspent.
    pub notes_released: u64,
}

/// A pool event the sync folds in.
enum PoolEvent {
    Queued { index: u64, commitment: Fr, bounty: U256 },
    Flushed { first: u64, count: u64, root: Fr },
    Spent { nullifier: Fr },
}

fn decode(log: &Log) -> Result<Option<PoolEvent>, WalletError> {
    let Some(topic) = log.topics().first() else { return Ok(None) };
    let bad = |e: alloy_sol_types::Error| WalletError::UndecodableLog(e.to_string());
    let field = |u: U256, what: &str| {
        u256_to_fr(u).ok_or_else(|| WalletError::UndecodableLog(format!("{what} is not a field element")))
    };
    let index =
        |u: U256, what: &str| u64::try_from(u).map_err(|_| WalletError::UndecodableLog(format!("{what} beyond u64")));
    Ok(Some(match *topic {
        NoxPool::Queued::SIGNATURE_HASH => {
            let ev = NoxPool::Queued::decode_log(&log.inner).map_err(bad)?;
            PoolEvent::Queued {
                index: index(ev.leafIndex, "a leaf index")?,
                commitment: field(ev.commitment, "a commitment")?,
                bounty: ev.bounty,
            }
        }
        NoxPool::Flushed::SIGNATURE_HASH => {
            let ev = NoxPool::Flushed::decode_log(&log.inner).map_err(bad)?;
            PoolEvent::Flushed {
                first: index(ev.firstIndex, "a flush's first leaf")?,
                count: index(ev.count, "a flush's leaf count")?,
                root: field(ev.root, "a root")?,
            }
        }
        NoxPool::Withdrawn::SIGNATURE_HASH => {
            let ev = NoxPool::Withdrawn::decode_log(&log.inner).map_err(bad)?;
            PoolEvent::Spent { nullifier: field(ev.nullifier, "a nullifier")? }
        }
        NoxPool::Relayed::SIGNATURE_HASH => {
            let ev = NoxPool::Relayed::decode_log(&log.inner).map_err(bad)?;
            PoolEvent::Spent { nullifier: field(ev.nullifier, "a nullifier")? }
        }
        _ => return Ok(None),
    }))
}

/// Logs in chain order, without removed ones.
fn ordered(mut logs: Vec<Log>) -> Vec<Log> {
    logs.retain(|l| !l.removed);
    logs.sort_by_key(|l| (l.block_number.unwrap_or(0), l.log_index.unwrap_or(0)));
    logs
}

impl Wallet {
    /// Catches up with the pool's confirmed head (`head - confirmations`)
    /// through `reader`, and saves. See the module docs.
    pub async fn sync(&mut self, reader: &dyn PoolReader, confirmations: u64) -> Result<SyncReport, WalletError> {
        let actual = reader.chain_id().await?;
        if actual != self.chain_id {
            return Err(WalletError::WrongChain { expected: self.chain_id, actual });
        }
        let head = reader.block_number().await?;
        let safe = head.saturating_sub(confirmations);
        let reorganised = self.needs_rebuild
            || match self.progress.last {
                // A chain now shorter than what was processed, or another block there.
                Some((n, hash)) => n > head || reader.block_hash(n).await? != Some(hash),
                None => false,
            };
        if reorganised {
            tracing::warn!("the pool's chain reorganised below the confirmed head; rebuilding the wallet's tree");
            self.rebuild();
        }
        let mut report = SyncReport {
            head,
            synced: None,
            from_block: self.progress.next_block,
            blocks_read: 0,
            reorganised,
            leaves_queued: 0,
            leaves_added: 0,
            notes_found: 0,
            notes_inserted: 0,
            notes_spent: 0,
            notes_released: 0,
        };

        let mut range = self.max_log_range.max(1);
        while self.progress.next_block <= safe {
            let from = self.progress.next_block;
            let to = safe.min(from.saturating_add(range - 1));
            let missing = || ReadError::Answer(format!("block {to} is missing"));
            let hash = reader.block_hash(to).await?.ok_or_else(missing)?;
            let logs = match reader.logs(self.pool, from, to).await {
                Ok(logs) => logs,
                // Endpoints cap ranges with an error answer: halve and retry.
                Err(e) if range > 1 && e.is_error_answer() => {
                    tracing::debug!(range, "eth_getLogs refused a range; halving it");
                    range = (range / 2).max(1);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            // The logs and the hash come from separate requests: if `to`
            // changed in between, the logs may be another branch's.
            if reader.block_hash(to).await?.ok_or_else(missing)? != hash {
                return Err(ReadError::Answer(format!("block {to} changed while its logs were read")).into());
            }
            let changed = self.apply(&ordered(logs), &mut report)?;
            self.progress = SyncProgress { next_block: to + 1, last: Some((to, hash)) };
            report.blocks_read += to - from + 1;
            if changed {
                self.save()?;
            }
        }

        if let Some((n, _)) = self.progress.last {
            self.check_against_pool(reader, n).await?;
            self.settle_spends(reader, n, &mut report).await?;
        }
        report.synced = self.progress.last.map(|(n, _)| n);
        self.save()?;
        Ok(report)
    }

    /// The local root must be one the pool knows at block `n`, and the
    /// pool's leaf counters there the wallet's; otherwise the local state is
    /// dropped (see the module docs).
    async fn check_against_pool(&mut self, reader: &dyn PoolReader, n: u64) -> Result<(), WalletError> {
        let root = self.tree.root();
        if !reader.known_root(self.pool, fr_to_u256(root), n).await? {
            self.distrust_tree();
            return Err(WalletError::UnknownRoot { root: nox_circuits::field::to_hex(&root), block: n });
        }
        let pool = reader.queue_state(self.pool, n).await?;
        let (inserted, queued) = (self.tree.len(), self.tree.len() + self.queued_count());
        if (pool.inserted, pool.queued) != (inserted, queued) {
            // A log the endpoint left out (or made up): the ranges that had
            // it are behind the progress, so only a rebuild reads it again.
            self.distrust_tree();
            return Err(WalletError::LeafCountMismatch {
                block: n,
                pool_inserted: pool.inserted,
                pool_queued: pool.queued,
                inserted,
                queued,
            });
        }
        Ok(())
    }

    /// Looks up the nullifier of every *spending* note at block `n`: spent,
    /// or released when the spend expired unspent (see the module docs).
    /// The logs show every spend; asking also catches a spend whose log this
    /// endpoint left out.
    async fn settle_spends(
        &mut self,
        reader: &dyn PoolReader,
        n: u64,
        report: &mut SyncReport,
    ) -> Result<(), WalletError> {
        let spending: Vec<(Fr, Option<u64>)> = self
            .notes
            .iter()
            .filter_map(|note| match note.stage {
                Stage::Spending { nullifier, expires, .. } => Some((nullifier.0, expires)),
                _ => None,
            })
            .collect();
        let mut timestamp = None;
        for (nullifier, expires) in spending {
            if reader.nullifier_spent(self.pool, fr_to_u256(nullifier), n).await? {
                if self.mark_spent(nullifier) {
                    report.notes_spent += 1;
                }
                continue;
            }
            let Some(deadline) = expires else { continue };
            let at = match timestamp {
                Some(t) => t,
                None => {
                    let t = reader
                        .block_timestamp(n)
                        .await?
                        .ok_or_else(|| ReadError::Answer(format!("block {n} is missing")))?;
                    *timestamp.insert(t)
                }
            };
            // Block `n` is past the deadline and its state shows the
            // nullifier unspent: every later block is past it too, and the
            // pool refuses the relay there.
            if at > deadline
                && let Some(i) = self.notes.iter().position(|note| note.spend_nullifier() == Some(nullifier))
            {
                self.unspend(i, nullifier);
                report.notes_released += 1;
            }
        }
        Ok(())
    }

    /// Forgets the tree, the queue and every leaf index; the next range
    /// starts at the pool's deployment block.
    fn rebuild(&mut self) {
        self.tree = MerkleTree::new(TREE_DEPTH);
        self.leaves.clear();
        self.queue.clear();
        self.progress = SyncProgress { next_block: self.pool_start_block, last: None };
        self.needs_rebuild = false;
        for n in &mut self.notes {
            n.leaf = None;
            n.stage = match n.stage {
                Stage::Spendable | Stage::Queued | Stage::Unconfirmed => Stage::Unconfirmed,
                // The proof is out: never offer the note again unless released.
                Stage::Spending { nullifier, change, expires } | Stage::Spent { nullifier, change, expires } => {
                    Stage::Spending { nullifier, change, expires }
                }
            };
        }
    }

    /// The local state disagrees with the pool: start over now (so that a
    /// save in between stores nothing inconsistent), and report it as a
    /// rebuild at the next sync.
    fn distrust_tree(&mut self) {
        self.rebuild();
        self.needs_rebuild = true;
    }

    /// Checks one range's events against the wallet's tree and queue, in
    /// order, before any is applied.
    fn check_order(&mut self, events: &[PoolEvent]) -> Result<(), WalletError> {
        let mut inserted = self.tree.len();
        let mut queued = inserted + self.queued_count();
        for ev in events {
            match *ev {
                PoolEvent::Queued { index, .. } => {
                    if index != queued {
                        if index < queued {
                            // The pool has fewer leaves than the wallet: it is not this tree.
                            self.distrust_tree();
                        }
                        return Err(WalletError::LeafGap { expected: queued, found: index });
                    }
                    queued += 1;
                }
                PoolEvent::Flushed { first, count, .. } => {
                    let end = first.checked_add(count);
                    if first != inserted || count == 0 || end.is_none_or(|end| end > queued) {
                        if first < inserted {
                            // A flush of leaves the wallet holds inserted: not this tree.
                            self.distrust_tree();
                        }
                        return Err(WalletError::FlushGap { first, count, inserted, queued });
                    }
                    inserted += count;
                }
                PoolEvent::Spent { .. } => {}
            }
        }
        Ok(())
    }

    /// Folds one range's logs in; returns whether anything changed.
    fn apply(&mut self, logs: &[Log], report: &mut SyncReport) -> Result<bool, WalletError> {
        let mut events = Vec::with_capacity(logs.len());
        for log in logs {
            if let Some(ev) = decode(log)? {
                events.push(ev);
            }
        }
        self.check_order(&events)?;
        if events.is_empty() {
            return Ok(false);
        }
        // Commitments of notes waiting for a leaf, and nullifiers of notes with one.
        let mut waiting: HashMap<Fr, Vec<usize>> = HashMap::new();
        let mut by_nullifier: HashMap<Fr, usize> = HashMap::new();
        for (i, n) in self.notes.iter().enumerate() {
            match n.leaf {
                None => waiting.entry(n.commitment.0).or_default().push(i),
                Some(_) => {
                    if let Some(nf) = n.nullifier(&self.sk) {
                        by_nullifier.insert(nf, i);
                    }
                }
            }
            if let Some(nf) = n.spend_nullifier() {
                by_nullifier.insert(nf, i);
            }
        }
        for ev in events {
            match ev {
                PoolEvent::Queued { index, commitment, bounty } => {
                    self.queue.push(QueuedLeaf { leaf: commitment, bounty });
                    report.leaves_queued += 1;
                    let Some(found) = waiting.get_mut(&commitment).and_then(|v| (!v.is_empty()).then(|| v.remove(0)))
                    else {
                        continue;
                    };
                    let n = &mut self.notes[found];
                    n.leaf = Some(index);
                    if n.stage == Stage::Unconfirmed {
                        n.stage = Stage::Queued;
                    }
                    report.notes_found += 1;
                    if let Some(nf) = n.nullifier(&self.sk) {
                        by_nullifier.insert(nf, found);
                    }
                }
                PoolEvent::Flushed { first, count, root } => {
                    // check_order: the queue holds `count` leaves from `first`.
                    let batch: Vec<QueuedLeaf> = self.queue.drain(..count as usize).collect();
                    for q in batch {
                        self.tree.insert(q.leaf)?;
                        self.leaves.push(q.leaf);
                    }
                    report.leaves_added += count;
                    if self.tree.root() != root {
                        self.distrust_tree();
                        return Err(WalletError::RootMismatch { first, count });
                    }
                    for n in &mut self.notes {
                        if n.stage == Stage::Queued && n.leaf.is_some_and(|l| l >= first && l - first < count) {
                            n.stage = Stage::Spendable;
                            report.notes_inserted += 1;
                        }
                    }
                }
                PoolEvent::Spent { nullifier } => {
                    if by_nullifier.contains_key(&nullifier) && self.mark_spent(nullifier) {
                        report.notes_spent += 1;
                    }
                }
            }
        }
        Ok(true)
    }
}
