//! [`WalletError`]: everything a wallet operation can refuse or fail with.

use std::path::PathBuf;

use alloy_primitives::{Address, B256};
use nox_eth::rpc::EthError;

use super::reader::ReadError;

/// Why a wallet operation failed. The note values and assets named here are
/// the caller's own; none of these errors carries a key or a blinding.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// The wallet file (or its directory) could not be read or written.
    #[error("wallet file {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `create` was asked to overwrite an existing file.
    #[error("{0} already exists; open it, or choose another path")]
    AlreadyExists(PathBuf),
    /// The passphrase does not open this wallet.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The file does not start with the wallet magic.
    #[error("{0} is not a NOX wallet file")]
    NotAWallet(PathBuf),
    /// The file's format version is not one this build reads.
    #[error("wallet file version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The file's version.
        found: u16,
        /// The version this build reads and writes.
        supported: u16,
    },
    /// A version 1 file: a wallet of NoxPool v1, whose notes and tree this
    /// build can neither sync nor spend (v2 queues every leaf before a flush
    /// inserts it, and is another contract).
    #[error(
        "{0} is a version 1 wallet, made for NoxPool v1: this build follows NoxPool v2 only; spend or withdraw \
         its notes with the nox-client release that wrote it, then create a new wallet"
    )]
    PoolV1Wallet(PathBuf),
    /// The file is shorter than its header and authentication tag.
    #[error("the wallet file is truncated ({len} bytes)")]
    Truncated {
        /// Its length.
        len: usize,
    },
    /// The passphrase is right but the body does not authenticate or decode:
    /// the file was changed or damaged after it was written.
    #[error("the wallet file is corrupt: {0}")]
    Corrupt(String),
    /// Key-derivation parameters out of range (in the file or as given).
    #[error("key derivation parameters: {0}")]
    Kdf(String),
    /// The endpoint serves another chain than the wallet's.
    #[error("the endpoint serves chain {actual}, but the wallet is for chain {expected}")]
    WrongChain {
        /// The wallet's chain.
        expected: u64,
        /// The endpoint's.
        actual: u64,
    },
    /// A chain read failed.
    #[error("reading the pool: {0}")]
    Read(#[from] ReadError),
    /// A transaction (or the read around it) failed.
    #[error("{0}")]
    Eth(#[from] EthError),
    /// The pool's `Queued` events skip or repeat a leaf index.
    #[error("the pool's queued leaves are not contiguous: expected leaf {expected}, the log says {found}")]
    LeafGap {
        /// The next index the wallet expects (its tree's and queue's size).
        expected: u64,
        /// The index in the log.
        found: u64,
    },
    /// A `Flushed` event does not start at the local tree's size, or inserts
    /// leaves whose `Queued` the wallet has not seen.
    #[error(
        "a flush of leaves {first}..{} does not follow the local state ({inserted} leaves inserted, {queued} \
         inserted or queued)", first.saturating_add(*count)
    )]
    FlushGap {
        /// The flush's first leaf.
        first: u64,
        /// Leaves it inserted.
        count: u64,
        /// Leaves in the local tree.
        inserted: u64,
        /// Leaves in the local tree or queue.
        queued: u64,
    },
    /// A `Flushed` event's root is not the local tree's root after inserting
    /// those leaves from the local queue.
    #[error("after the flush of leaves {first}..{} the local root differs from the root the pool logged", first.saturating_add(*count))]
    RootMismatch {
        /// The flush's first leaf.
        first: u64,
        /// Leaves it inserted.
        count: u64,
    },
    /// After a sync the pool's leaf counters (`queueState`) at the synced
    /// block are not the wallet's: logs were missing or wrong.
    #[error(
        "at block {block} the pool has {pool_inserted} leaves inserted and {pool_queued} inserted or queued, \
         the wallet {inserted} and {queued}"
    )]
    LeafCountMismatch {
        /// The synced block.
        block: u64,
        /// The pool's `nextIndex`.
        pool_inserted: u64,
        /// The pool's next leaf index.
        pool_queued: u64,
        /// Leaves in the local tree.
        inserted: u64,
        /// Leaves in the local tree or queue.
        queued: u64,
    },
    /// After a sync the local root is not one the pool knows.
    #[error("the local root {root} is not a root the pool knows at block {block}")]
    UnknownRoot {
        /// The local root (hex).
        root: String,
        /// The synced block.
        block: u64,
    },
    /// A pool log of a known event does not decode.
    #[error("undecodable pool log: {0}")]
    UndecodableLog(String),
    /// The spendable notes of `asset` add up to less than `needed`.
    #[error("not enough {asset} in the wallet: {needed} needed, {spendable} spendable")]
    InsufficientBalance {
        /// Token (zero: ETH).
        asset: Address,
        /// Amount asked for.
        needed: u128,
        /// Sum of the spendable notes.
        spendable: u128,
    },
    /// Only notes queued in the pool (not yet inserted by a flush) would
    /// cover `needed`: wait for a flush by anyone (exits flush full segments),
    /// or insert them now with [`super::Wallet::insert_now`]
    /// ([`super::Wallet::ensure_spendable`] does it and syncs).
    #[error(
        "{needed} of {asset} needs a note still queued for insertion ({queued} queued); wait for a flush, or \
         insert it now"
    )]
    OnlyQueued {
        /// Token (zero: ETH).
        asset: Address,
        /// Amount asked for.
        needed: u128,
        /// Sum of the queued notes.
        queued: u128,
    },
    /// Only the change of a spend whose transaction the confirmed logs do not
    /// show yet would cover `needed`: sync again once it is confirmed (the
    /// change is then queued).
    #[error(
        "{needed} of {asset} needs a change note that is still pending ({pending} pending): its spend is not \
         confirmed yet; sync later"
    )]
    OnlyPendingChange {
        /// Token (zero: ETH).
        asset: Address,
        /// Amount asked for.
        needed: u128,
        /// Sum of the pending change notes.
        pending: u128,
    },
    /// Only a deposit the confirmed logs do not show queued yet would cover
    /// `needed`.
    #[error("{needed} of {asset} needs a deposit that is not confirmed yet ({unconfirmed} unconfirmed); sync later")]
    OnlyUnconfirmedDeposit {
        /// Token (zero: ETH).
        asset: Address,
        /// Amount asked for.
        needed: u128,
        /// Sum of the unconfirmed deposits.
        unconfirmed: u128,
    },
    /// The spendable notes add up to enough, but a spend takes one note and
    /// none is large enough.
    #[error("no single note of {asset} holds {needed} (the largest holds {largest}); a spend takes one note")]
    NoteTooSmall {
        /// Token (zero: ETH).
        asset: Address,
        /// Amount asked for.
        needed: u128,
        /// The largest spendable note.
        largest: u128,
    },
    /// No note of the wallet has this commitment (or nullifier).
    #[error("the wallet has no such note")]
    UnknownNote,
    /// The note is not in the state the operation needs.
    #[error("the note is {state}, not {needed}")]
    WrongState {
        /// Its state.
        state: &'static str,
        /// The state the operation needs.
        needed: &'static str,
    },
    /// The chain shows the note spent: it cannot be released.
    #[error("the chain shows this note spent (nullifier {0}); it cannot be released")]
    AlreadySpent(String),
    /// A spend's public value exceeds its note.
    #[error("a note of {value} cannot pay {public_value}")]
    ValueExceedsNote {
        /// The note's value.
        value: u128,
        /// The value asked to leave the pool.
        public_value: u128,
    },
    /// [`super::Wallet::insert_now`]: the wallet's synced queue does not hold
    /// every leaf the flush needs (the pool queued more than the confirmed
    /// logs show): sync once they are confirmed.
    #[error(
        "inserting leaves {from}..{to} needs every queued leaf, but the wallet has seen the pool's leaves up \
         to {seen} only (inserted {inserted}); sync once they are confirmed"
    )]
    QueueBehind {
        /// The pool's first leaf not inserted.
        from: u64,
        /// The end of the segment to insert (exclusive).
        to: u64,
        /// Leaves the wallet has seen inserted or queued.
        seen: u64,
        /// Leaves in the wallet's tree.
        inserted: u64,
    },
    /// [`super::Wallet::insert_now`]: the pool's latest state holds fewer
    /// leaves than the wallet has seen (the chain reorganised since the sync).
    #[error(
        "the pool's latest state ({pool_inserted} leaves inserted, {pool_queued} inserted or queued) is behind \
         the wallet's ({inserted}, {queued}); sync again"
    )]
    PoolBehind {
        /// The pool's `nextIndex`.
        pool_inserted: u64,
        /// The pool's next leaf index.
        pool_queued: u64,
        /// Leaves in the wallet's tree.
        inserted: u64,
        /// Leaves the wallet has seen inserted or queued.
        queued: u64,
    },
    /// A deposit of nothing.
    #[error("a deposit must carry a positive value")]
    ZeroValue,
    /// A transaction needs a client with a signer.
    #[error("the RPC client has no key to sign {0}")]
    NoSigner(&'static str),
    /// A deposit transaction was mined but reverted.
    #[error("{call} transaction {tx_hash} reverted")]
    Reverted {
        /// The call.
        call: &'static str,
        /// The transaction.
        tx_hash: B256,
    },
    /// The spend does not satisfy the circuit's rules (a wallet bug).
    #[error("spend: {0}")]
    Spend(#[from] nox_circuits::spend::SpendError),
    /// The local tree refused an insertion or a path.
    #[error("note tree: {0}")]
    Tree(#[from] nox_circuits::tree::TreeError),
    /// Key loading, setup or proving failed.
    #[error("prover: {0}")]
    Proof(#[from] nox_circuits::groth16::ProofError),
}
