//! NoxPool's queue of leaves as a flusher sees it (docs/protocol.md §11.4).
//!
//! Leaves wait in segments that end at multiples of [`POOL_BATCH`]; the
//! segment still filling is the open one. A flush inserts whole segments
//! from the first leaf not yet in the tree, so the plan of a flush is a run
//! of consecutive segments from there: the closed ones first, then the open
//! one if it is due. The leaves themselves are not in the pool's storage,
//! only a hash chain of them and their bounties: a flusher reads both back
//! from the `Queued` logs, which are indexed by leaf index.

use alloy::rpc::types::Filter;
use alloy_primitives::{Address, U256};
use alloy_sol_types::SolEvent;
use nox_eth::{EthClient, EthError};
use nox_protocol::contracts::{NoxPool, POOL_BATCH};

/// `NoxPool.queueState()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueState {
    /// Leaves in the tree.
    pub inserted: u64,
    /// Leaves in the tree or queued.
    pub queued: u64,
    /// First leaf of the open segment.
    pub open_start: u64,
    /// A block no leaf of the open segment was queued before.
    pub open_block: u64,
}

impl From<&NoxPool::queueStateReturn> for QueueState {
    fn from(r: &NoxPool::queueStateReturn) -> Self {
        let n = |u: U256| u64::try_from(u).unwrap_or(u64::MAX);
        QueueState {
            inserted: n(r.inserted),
            queued: n(r.queued),
            open_start: n(r.openStart),
            open_block: n(r.openBlock),
        }
    }
}

/// A run of queued leaves a flush may insert together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// First leaf.
    pub start: u64,
    /// One past the last leaf.
    pub end: u64,
    /// Whether it is the open segment.
    pub open: bool,
}

impl QueueState {
    /// The segments the next flush covers: up to `max_segments` closed ones
    /// from the first leaf not in the tree, then the open one if
    /// `include_open` and the run reached it. Empty when nothing is due.
    pub fn plan(&self, max_segments: usize, include_open: bool) -> Vec<Segment> {
        let mut out = Vec::new();
        let mut pos = self.inserted;
        while pos < self.queued && out.len() < max_segments {
            if pos == self.open_start {
                if include_open {
                    out.push(Segment { start: pos, end: self.queued, open: true });
                }
                break;
            }
            let end = (pos / POOL_BATCH + 1) * POOL_BATCH;
            out.push(Segment { start: pos, end, open: false });
            pos = end;
        }
        out
    }
}

/// Queued leaves and the bounties their insertion pays, in leaf order: what
/// `NoxPool.flush` takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueuedLeaves {
    /// The leaves.
    pub leaves: Vec<U256>,
    /// Their bounties, wei.
    pub bounties: Vec<U256>,
    /// The block each was queued in.
    pub blocks: Vec<u64>,
}

impl QueuedLeaves {
    /// Keeps the first `len` leaves.
    pub fn truncate(&mut self, len: usize) {
        self.leaves.truncate(len);
        self.bounties.truncate(len);
        self.blocks.truncate(len);
    }
}

/// The queued leaves `start..end` from the pool's `Queued` logs, read from
/// `from_block` on in windows of `window` blocks; `None` if some are not
/// found up to the latest block (an upstream that lost logs, or a pool at
/// another address).
pub async fn queued_leaves(
    eth: &EthClient,
    pool: Address,
    start: u64,
    end: u64,
    from_block: u64,
    window: u64,
) -> Result<Option<QueuedLeaves>, EthError> {
    let want = usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX);
    let mut leaves: Vec<Option<(U256, U256, u64)>> = vec![None; want];
    let mut found = 0;
    let latest = eth.block_number().await?;
    let mut from = from_block;
    while from <= latest && found < want {
        let to = from.saturating_add(window.max(1) - 1).min(latest);
        let filter =
            Filter::new().address(pool).event_signature(NoxPool::Queued::SIGNATURE_HASH).from_block(from).to_block(to);
        for log in eth.logs(&filter).await? {
            let Ok(ev) = NoxPool::Queued::decode_log(&log.inner) else { continue };
            let Ok(index) = u64::try_from(ev.leafIndex) else { continue };
            if (start..end).contains(&index) {
                let slot = &mut leaves[(index - start) as usize];
                if slot.is_none() {
                    found += 1;
                }
                *slot = Some((ev.commitment, ev.bounty, log.block_number.unwrap_or(to)));
            }
        }
        from = to + 1;
    }
    Ok(leaves.into_iter().collect::<Option<Vec<_>>>().map(|found| QueuedLeaves {
        leaves: found.iter().map(|(l, _, _)| *l).collect(),
        bounties: found.iter().map(|(_, b, _)| *b).collect(),
        blocks: found.iter().map(|(_, _, n)| *n).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(inserted: u64, queued: u64, open_start: u64) -> QueueState {
        QueueState { inserted, queued, open_start, open_block: 0 }
    }

    #[test]
    fn nothing_queued_plans_nothing() {
        assert!(q(64, 64, 64).plan(4, true).is_empty());
    }

    #[test]
    fn closed_segments_come_first_and_the_open_one_only_when_due() {
        let s = q(0, 70, 64);
        assert_eq!(
            s.plan(4, false),
            vec![Segment { start: 0, end: 32, open: false }, Segment { start: 32, end: 64, open: false }]
        );
        assert_eq!(s.plan(4, true).last(), Some(&Segment { start: 64, end: 70, open: true }));
        assert_eq!(s.plan(1, true), vec![Segment { start: 0, end: 32, open: false }]);
    }

    #[test]
    fn an_early_flush_leaves_an_unaligned_closed_segment() {
        // Leaves 0..5 were flushed while open; 5..32 then closed.
        let s = q(5, 40, 32);
        assert_eq!(s.plan(4, false), vec![Segment { start: 5, end: 32, open: false }]);
        assert_eq!(s.plan(4, true)[1], Segment { start: 32, end: 40, open: true });
    }

    #[test]
    fn only_an_open_segment_waits() {
        let s = q(32, 33, 32);
        assert!(s.plan(4, false).is_empty());
        assert_eq!(s.plan(4, true), vec![Segment { start: 32, end: 33, open: true }]);
    }
}
