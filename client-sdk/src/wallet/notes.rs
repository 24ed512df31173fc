//! The wallet's notes, their life cycle, balances and note selection.
//!
//! ```text
//!  deposit sent ──┐
//!                 ├─Queued─▶ queued ──Flushed─▶ spendable ──prepare_spend─▶ spending ──Withdrawn/Relayed─▶ spent
//!  pending change ┘                                 ▲                          │   (or nullifierSpent(n))
//!  (of a spend)                                     └──release, or deadline────┘
//!                                                      passed and unspent
//! ```
//!
//! NoxPool v2 queues every new leaf: a note gets its leaf index from a
//! `Queued` log (the wallet then knows its nullifier) and is in the tree, so
//! spendable, only once a `Flushed` log has inserted that index. A queued
//! note cannot be spent: no root the pool knows contains it.
//!
//! A note is *spending* from the moment the wallet builds a spend of it,
//! before the proof leaves the wallet, so that a crash after the proof was
//! sent can never offer the note again (a second spend would only fail, but
//! it would cost the fee). Only [`super::Wallet::release`] puts it back,
//! when the caller knows nothing was sent, or the sync once the spend's
//! deadline (a relay's, recorded with the note) has passed at a confirmed
//! block whose state shows the nullifier unspent: the pool refuses that
//! proof from then on.
//!
//! A reorganisation below the confirmed head clears every leaf index: notes
//! go back to *deposit sent* / *pending* until the rebuilt tree finds them
//! again, and a *spent* note becomes *spending* (its proof is out; the chain
//! will say again whether it landed).

use alloy_primitives::{Address, B256};
use ark_bn254::Fr;
use nox_circuits::note::{Note, SpendingKey, address_to_fr, nullifier};
use serde::{Deserialize, Serialize};

use super::error::WalletError;

/// A field element stored as `0x`-prefixed big-endian hex.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct FieldHex(pub(crate) Fr);

impl std::fmt::Debug for FieldHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FieldHex(..)")
    }
}

impl Serialize for FieldHex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&nox_circuits::field::to_hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for FieldHex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        nox_circuits::field::from_hex(&s)
            .map(FieldHex)
            .ok_or_else(|| serde::de::Error::custom("not a BN254 scalar in hex"))
    }
}

/// Where a note state stands (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoteState {
    /// A deposit was sent; the confirmed logs do not show it queued yet.
    Deposited,
    /// The change of one of the wallet's spends; the confirmed logs do not
    /// show it queued yet.
    Pending,
    /// Queued in the pool with its leaf index; waits for a flush to insert it.
    Queued,
    /// In the tree, not spent: can be selected.
    Spendable,
    /// A spend of it was built and may have been sent.
    Spending,
    /// The chain shows its nullifier.
    Spent,
}

impl NoteState {
    /// The state's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            NoteState::Deposited => "deposit sent",
            NoteState::Pending => "pending change",
            NoteState::Queued => "queued",
            NoteState::Spendable => "spendable",
            NoteState::Spending => "spending",
            NoteState::Spent => "spent",
        }
    }
}

/// How a note came into the wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Origin {
    /// A deposit (its transaction, once sent).
    Deposit {
        /// The deposit transaction.
        tx: Option<B256>,
    },
    /// The change of the spend with this nullifier.
    Change {
        /// The spent note's nullifier.
        parent: FieldHex,
    },
}

/// Where a note is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Stage {
    /// Not seen queued in the confirmed logs (yet, or no longer after a
    /// reorganisation).
    Unconfirmed,
    /// Has its leaf index (a confirmed `Queued`), not yet inserted.
    Queued,
    /// In the tree, unspent.
    Spendable,
    /// A spend was built: its nullifier, its change note's commitment (none
    /// for a change of zero) and the Unix time after which the pool refuses
    /// it (a relay's deadline; none for a withdrawal, which never expires).
    Spending { nullifier: FieldHex, change: Option<FieldHex>, expires: Option<u64> },
    /// The chain shows the nullifier (the spend's fields kept, so that a
    /// reorganisation can make it *spending* again).
    Spent { nullifier: FieldHex, change: Option<FieldHex>, expires: Option<u64> },
}

/// One note as the wallet file keeps it.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct StoredNote {
    pub(crate) asset: Address,
    pub(crate) value: u128,
    pub(crate) blinding: FieldHex,
    pub(crate) origin: Origin,
    pub(crate) stage: Stage,
    /// Its leaf index, from a confirmed `Queued` (in the tree once flushed).
    pub(crate) leaf: Option<u64>,
    /// Its commitment (derived; kept to match logs without hashing).
    pub(crate) commitment: FieldHex,
}

impl std::fmt::Debug for StoredNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredNote").field("state", &self.state()).finish_non_exhaustive()
    }
}

impl StoredNote {
    /// A new, unconfirmed note of `value` for `owner`.
    pub(crate) fn new(asset: Address, value: u128, owner: Fr, origin: Origin) -> StoredNote {
        let note = Note::new(asset_fr(asset), value, owner, &mut rand::rngs::OsRng);
        StoredNote {
            asset,
            value,
            blinding: FieldHex(note.blinding),
            origin,
            stage: Stage::Unconfirmed,
            leaf: None,
            commitment: FieldHex(note.commitment()),
        }
    }

    /// The circuit's note.
    pub(crate) fn note(&self, owner: Fr) -> Note {
        Note { asset: asset_fr(self.asset), value: self.value, owner, blinding: self.blinding.0 }
    }

    pub(crate) fn state(&self) -> NoteState {
        match (self.stage, self.origin) {
            (Stage::Unconfirmed, Origin::Deposit { .. }) => NoteState::Deposited,
            (Stage::Unconfirmed, Origin::Change { .. }) => NoteState::Pending,
            (Stage::Queued, _) => NoteState::Queued,
            (Stage::Spendable, _) => NoteState::Spendable,
            (Stage::Spending { .. }, _) => NoteState::Spending,
            (Stage::Spent { .. }, _) => NoteState::Spent,
        }
    }

    /// The nullifier at its current leaf.
    pub(crate) fn nullifier(&self, sk: &SpendingKey) -> Option<Fr> {
        self.leaf.map(|leaf| nullifier(sk, self.commitment.0, leaf))
    }

    /// The nullifier its spend revealed or will reveal.
    pub(crate) fn spend_nullifier(&self) -> Option<Fr> {
        match self.stage {
            Stage::Spending { nullifier, .. } | Stage::Spent { nullifier, .. } => Some(nullifier.0),
            _ => None,
        }
    }

    /// The public view of it.
    pub(crate) fn info(&self) -> NoteInfo {
        NoteInfo {
            asset: self.asset,
            value: self.value,
            state: self.state(),
            leaf_index: self.leaf,
            commitment: self.commitment.0,
            deposit_tx: match self.origin {
                Origin::Deposit { tx } => tx,
                Origin::Change { .. } => None,
            },
        }
    }
}

/// An asset's address as the circuit's field element (0 for ETH).
pub(crate) fn asset_fr(asset: Address) -> Fr {
    address_to_fr(&asset.0.0)
}

/// A note, for listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteInfo {
    /// Token (zero: ETH).
    pub asset: Address,
    /// Value in the token's smallest unit.
    pub value: u128,
    /// Where it stands.
    pub state: NoteState,
    /// Its leaf index, once a confirmed `Queued` gave it one.
    pub leaf_index: Option<u64>,
    /// Its commitment.
    pub commitment: Fr,
    /// The deposit transaction, for a deposit.
    pub deposit_tx: Option<B256>,
}

/// One asset's sums, by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Balance {
    /// Token (zero: ETH).
    pub asset: Address,
    /// Spendable notes.
    pub spendable: u128,
    /// Change notes of sent spends, not yet seen queued.
    pub pending_change: u128,
    /// Deposits sent, not yet seen queued.
    pub unconfirmed_deposits: u128,
    /// Notes queued in the pool, waiting for a flush to insert them.
    pub queued: u128,
    /// Notes whose spend was built and not yet seen on chain.
    pub spending: u128,
}

/// The note chosen for a spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectedNote {
    /// Token (zero: ETH).
    pub asset: Address,
    /// Its value.
    pub value: u128,
    /// Its leaf.
    pub leaf_index: u64,
    /// Its commitment.
    pub commitment: Fr,
}

/// Sums per asset, in first-seen order.
pub(crate) fn balances(notes: &[StoredNote]) -> Vec<Balance> {
    let mut out: Vec<Balance> = Vec::new();
    for n in notes {
        let i = match out.iter().position(|b| b.asset == n.asset) {
            Some(i) => i,
            None => {
                out.push(Balance { asset: n.asset, ..Balance::default() });
                out.len() - 1
            }
        };
        let b = &mut out[i];
        let slot = match n.state() {
            NoteState::Spendable => &mut b.spendable,
            NoteState::Pending => &mut b.pending_change,
            NoteState::Deposited => &mut b.unconfirmed_deposits,
            NoteState::Queued => &mut b.queued,
            NoteState::Spending => &mut b.spending,
            NoteState::Spent => continue,
        };
        *slot = slot.saturating_add(n.value);
    }
    out
}

/// The smallest spendable note of `asset` worth at least `amount`, or why
/// there is none.
pub(crate) fn select(notes: &[StoredNote], asset: Address, amount: u128) -> Result<SelectedNote, WalletError> {
    let of_asset = || notes.iter().filter(move |n| n.asset == asset);
    let best = of_asset()
        .filter(|n| n.state() == NoteState::Spendable && n.value >= amount)
        .filter_map(|n| n.leaf.map(|leaf| (n, leaf)))
        .min_by_key(|(n, leaf)| (n.value, *leaf));
    if let Some((n, leaf)) = best {
        return Ok(SelectedNote { asset, value: n.value, leaf_index: leaf, commitment: n.commitment.0 });
    }
    let sum =
        |state: NoteState| of_asset().filter(|n| n.state() == state).fold(0u128, |acc, n| acc.saturating_add(n.value));
    let covers = |state: NoteState| of_asset().any(|n| n.state() == state && n.value >= amount);
    let spendable = sum(NoteState::Spendable);
    if spendable >= amount && spendable > 0 {
        let largest = of_asset().filter(|n| n.state() == NoteState::Spendable).map(|n| n.value).max().unwrap_or(0);
        return Err(WalletError::NoteTooSmall { asset, needed: amount, largest });
    }
    if covers(NoteState::Queued) {
        return Err(WalletError::OnlyQueued { asset, needed: amount, queued: sum(NoteState::Queued) });
    }
    if covers(NoteState::Pending) {
        return Err(WalletError::OnlyPendingChange { asset, needed: amount, pending: sum(NoteState::Pending) });
    }
    if covers(NoteState::Deposited) {
        return Err(WalletError::OnlyUnconfirmedDeposit {
            asset,
            needed: amount,
            unconfirmed: sum(NoteState::Deposited),
        });
    }
    Err(WalletError::InsufficientBalance { asset, needed: amount, spendable })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn note(asset: Address, value: u128, stage: Stage, origin: Origin, leaf: Option<u64>) -> StoredNote {
        let mut n = StoredNote::new(asset, value, Fr::from(7u64), origin);
        n.stage = stage;
        n.leaf = leaf;
        n
    }

    const DEPOSIT: Origin = Origin::Deposit { tx: None };
    const ETH: Address = Address::ZERO;

    #[test]
    fn select_takes_the_smallest_note_that_covers_the_amount() {
        let notes = vec![
            note(ETH, 50, Stage::Spendable, DEPOSIT, Some(0)),
            note(ETH, 20, Stage::Spendable, DEPOSIT, Some(1)),
            note(ETH, 30, Stage::Spendable, DEPOSIT, Some(2)),
            note(Address::repeat_byte(1), 25, Stage::Spendable, DEPOSIT, Some(3)),
            note(ETH, 26, Stage::Unconfirmed, DEPOSIT, None),
        ];
        assert_eq!(select(&notes, ETH, 25).unwrap().leaf_index, 2);
        assert_eq!(select(&notes, ETH, 30).unwrap().value, 30);
        assert_eq!(select(&notes, ETH, 31).unwrap().value, 50);
        assert_eq!(select(&notes, Address::repeat_byte(1), 25).unwrap().leaf_index, 3);
    }

    #[test]
    fn select_pays_a_fee_only_from_a_note_of_its_asset() {
        let usdc = Address::repeat_byte(0xa0);
        let notes = vec![
            note(ETH, 1_000_000, Stage::Spendable, DEPOSIT, Some(0)),
            note(usdc, 3_000, Stage::Spendable, DEPOSIT, Some(1)),
            note(usdc, 5_000, Stage::Spendable, DEPOSIT, Some(2)),
        ];
        let n = select(&notes, usdc, 3_001).unwrap();
        assert_eq!((n.asset, n.value, n.leaf_index), (usdc, 5_000, 2));
        // A large ETH note never pays a token fee, nor token notes an ETH fee.
        assert!(matches!(
            select(&notes, usdc, 8_000),
            Err(WalletError::NoteTooSmall { asset, needed: 8_000, largest: 5_000 }) if asset == usdc
        ));
        assert!(matches!(
            select(&notes, usdc, 9_000),
            Err(WalletError::InsufficientBalance { asset, spendable: 8_000, .. }) if asset == usdc
        ));
        assert_eq!(select(&notes, ETH, 2_000).unwrap().leaf_index, 0);
        assert!(matches!(
            select(&notes, ETH, 1_000_001),
            Err(WalletError::InsufficientBalance { spendable: 1_000_000, .. })
        ));
    }

    #[test]
    fn select_says_why_nothing_fits() {
        let change = Origin::Change { parent: FieldHex(Fr::from(1u64)) };
        let notes = vec![
            note(ETH, 40, Stage::Spendable, DEPOSIT, Some(0)),
            note(ETH, 30, Stage::Spendable, DEPOSIT, Some(1)),
            note(ETH, 100, Stage::Unconfirmed, change, None),
            note(ETH, 500, Stage::Unconfirmed, DEPOSIT, None),
            note(
                ETH,
                1000,
                Stage::Spending { nullifier: FieldHex(Fr::from(2u64)), change: None, expires: Some(9) },
                DEPOSIT,
                Some(2),
            ),
            note(ETH, 200, Stage::Queued, change, Some(3)),
        ];
        assert!(matches!(select(&notes, ETH, 60), Err(WalletError::NoteTooSmall { needed: 60, largest: 40, .. })));
        // A queued note has its leaf index, but no root holds it yet.
        assert!(matches!(select(&notes, ETH, 150), Err(WalletError::OnlyQueued { needed: 150, queued: 200, .. })));
        assert!(matches!(select(&notes, ETH, 90), Err(WalletError::OnlyQueued { needed: 90, queued: 200, .. })));
        assert!(matches!(
            select(&notes[..4], ETH, 90),
            Err(WalletError::OnlyPendingChange { needed: 90, pending: 100, .. })
        ));
        assert!(matches!(
            select(&notes, ETH, 400),
            Err(WalletError::OnlyUnconfirmedDeposit { needed: 400, unconfirmed: 500, .. })
        ));
        // The spending note is not offered, whatever its value.
        assert!(matches!(
            select(&notes, ETH, 900),
            Err(WalletError::InsufficientBalance { needed: 900, spendable: 70, .. })
        ));
        assert!(matches!(
            select(&notes, Address::repeat_byte(9), 1),
            Err(WalletError::InsufficientBalance { spendable: 0, .. })
        ));
    }

    #[test]
    fn balances_sum_each_state_per_asset() {
        let token = Address::repeat_byte(2);
        let notes = vec![
            note(ETH, 10, Stage::Spendable, DEPOSIT, Some(0)),
            note(ETH, 5, Stage::Spendable, DEPOSIT, Some(1)),
            note(token, 7, Stage::Unconfirmed, DEPOSIT, None),
            note(ETH, 3, Stage::Unconfirmed, Origin::Change { parent: FieldHex(Fr::from(1u64)) }, None),
            note(
                ETH,
                100,
                Stage::Spent { nullifier: FieldHex(Fr::from(1u64)), change: None, expires: None },
                DEPOSIT,
                Some(2),
            ),
            note(
                ETH,
                9,
                Stage::Spending { nullifier: FieldHex(Fr::from(3u64)), change: None, expires: None },
                DEPOSIT,
                Some(3),
            ),
            note(token, 4, Stage::Queued, DEPOSIT, Some(4)),
        ];
        let b = balances(&notes);
        assert_eq!(
            b,
            vec![
                Balance {
                    asset: ETH,
                    spendable: 15,
                    pending_change: 3,
                    unconfirmed_deposits: 0,
                    queued: 0,
                    spending: 9
                },
                Balance {
                    asset: token,
                    spendable: 0,
                    pending_change: 0,
                    unconfirmed_deposits: 7,
                    queued: 4,
                    spending: 0
                },
            ]
        );
    }

    #[test]
    fn stored_notes_round_trip_through_json() {
        let n = note(ETH, u128::MAX, Stage::Spendable, Origin::Deposit { tx: Some(B256::repeat_byte(3)) }, Some(9));
        let back: StoredNote = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
        assert_eq!(back.info(), n.info());
        assert!(back.blinding == n.blinding);
        assert!(!format!("{n:?}").contains(&nox_circuits::field::to_hex(&n.blinding.0)));
    }
}
