//! [`Wallet::sync`]: the local tree and the notes' states brought up to the
//! pool's confirmed head (the discipline is in the parent module's docs).
//!
//! Each range's logs are decoded and checked (leaf indexes contiguous from
//! the local tree's size) before anything is applied, so a bad answer leaves
//! the wallet as it was. A logged root that differs from the local root
//! after its leaf, a leaf index below the local tree's size, or a final root
//! the pool does not know, means the local tree went wrong: it is dropped at
//! once (every note loses its leaf index), the error is returned, and the
//! next sync starts over from the pool's deployment block.

use std::collections::HashMap;

use alloy::rpc::types::Log;
use alloy_primitives::U256;
use alloy_sol_types::SolEvent;
use ark_bn254::Fr;
use nox_circuits::tree::{MerkleTree, TREE_DEPTH};
use nox_protocol::contracts::NoxPool;

use super::notes::{Stage, StoredNote};
use super::reader::{PoolReader, ReadError};
use super::{SyncProgress, Wallet, WalletError, fr_to_u256, u256_to_fr};

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
    /// Leaves added to the local tree.
    pub leaves_added: u64,
    /// The wallet's notes found in the tree.
    pub notes_found: u64,
    /// The wallet's notes seen spent.
    pub notes_spent: u64,
}

/// A pool event the sync folds in.
enum PoolEvent {
    Inserted { commitment: Fr, index: u64, root: Fr },
    Spent { nullifier: Fr },
}

fn decode(log: &Log) -> Result<Option<PoolEvent>, WalletError> {
    let Some(topic) = log.topics().first() else { return Ok(None) };
    let bad = |e: alloy_sol_types::Error| WalletError::UndecodableLog(e.to_string());
    let field = |u: U256, what: &str| {
        u256_to_fr(u).ok_or_else(|| WalletError::UndecodableLog(format!("{what} is not a field element")))
    };
    Ok(Some(match *topic {
        NoxPool::Inserted::SIGNATURE_HASH => {
            let ev = NoxPool::Inserted::decode_log(&log.inner).map_err(bad)?;
            let index =
                u64::try_from(ev.leafIndex).map_err(|_| WalletError::UndecodableLog("leaf index beyond u64".into()))?;
            PoolEvent::Inserted {
                commitment: field(ev.commitment, "a commitment")?,
                index,
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
            leaves_added: 0,
            notes_found: 0,
            notes_spent: 0,
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
            let root = self.tree.root();
            if !reader.known_root(self.pool, fr_to_u256(root), n).await? {
                self.distrust_tree();
                return Err(WalletError::UnknownRoot { root: nox_circuits::field::to_hex(&root), block: n });
            }
            // The logs show every spend; asking for the notes whose proof is
            // out also catches a spend whose log this endpoint left out.
            let spending: Vec<Fr> = self
                .notes
                .iter()
                .filter(|note| matches!(note.stage, Stage::Spending { .. }))
                .filter_map(StoredNote::spend_nullifier)
                .collect();
            for nullifier in spending {
                if !reader.nullifier_state(self.pool, fr_to_u256(nullifier), n).await?.is_zero()
                    && self.mark_spent(nullifier)
                {
                    report.notes_spent += 1;
                }
            }
        }
        report.synced = self.progress.last.map(|(n, _)| n);
        self.save()?;
        Ok(report)
    }

    /// Forgets the tree and every leaf index; the next range starts at the
    /// pool's deployment block.
    fn rebuild(&mut self) {
        self.tree = MerkleTree::new(TREE_DEPTH);
        self.leaves.clear();
        self.progress = SyncProgress { next_block: self.pool_start_block, last: None };
        self.needs_rebuild = false;
        for n in &mut self.notes {
            n.leaf = None;
            n.stage = match n.stage {
                Stage::Spendable | Stage::Unconfirmed => Stage::Unconfirmed,
                // The proof is out: never offer the note again unless released.
                Stage::Spending { nullifier, change } | Stage::Spent { nullifier, change } => {
                    Stage::Spending { nullifier, change }
                }
            };
        }
    }

    /// The local tree disagrees with the pool: start over now (so that a
    /// save in between stores nothing inconsistent), and report it as a
    /// rebuild at the next sync.
    fn distrust_tree(&mut self) {
        self.rebuild();
        self.needs_rebuild = true;
    }

    /// Folds one range's logs in; returns whether anything changed.
    fn apply(&mut self, logs: &[Log], report: &mut SyncReport) -> Result<bool, WalletError> {
        let mut events = Vec::with_capacity(logs.len());
        let mut expected = self.tree.len();
        for log in logs {
            let Some(ev) = decode(log)? else { continue };
            if let PoolEvent::Inserted { index, .. } = ev {
                if index != expected {
                    if index < expected {
                        // The pool has fewer leaves than the local tree: it is not this tree.
                        self.distrust_tree();
                    }
                    return Err(WalletError::LeafGap { expected, found: index });
                }
                expected += 1;
            }
            events.push(ev);
        }
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
                PoolEvent::Inserted { commitment, index, root } => {
                    self.tree.insert(commitment)?;
                    self.leaves.push(commitment);
                    report.leaves_added += 1;
                    if self.tree.root() != root {
                        self.distrust_tree();
                        return Err(WalletError::RootMismatch { index });
                    }
                    let Some(found) = waiting.get_mut(&commitment).and_then(|v| (!v.is_empty()).then(|| v.remove(0)))
                    else {
                        continue;
                    };
                    let n = &mut self.notes[found];
                    n.leaf = Some(index);
                    if n.stage == Stage::Unconfirmed {
                        n.stage = Stage::Spendable;
                    }
                    report.notes_found += 1;
                    if let Some(nf) = n.nullifier(&self.sk) {
                        by_nullifier.insert(nf, found);
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
