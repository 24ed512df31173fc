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
    /// The pool's `Inserted` events skip or repeat a leaf index.
    #[error("the pool's leaves are not contiguous: expected leaf {expected}, the log says {found}")]
    LeafGap {
        /// The next index the local tree expects.
        expected: u64,
        /// The index in the log.
        found: u64,
    },
    /// An `Inserted` event's root is not the local tree's root after that leaf.
    #[error("after leaf {index} the local root differs from the root the pool logged")]
    RootMismatch {
        /// The leaf.
        index: u64,
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
    /// Only a change note waiting for `flush` would cover `needed`: run
    /// [`super::Wallet::flush_own`] and sync (or [`super::Wallet::ensure_spendable`]).
    #[error("{needed} of {asset} needs a change note that is still pending ({pending} pending); flush it first")]
    OnlyPendingChange {
        /// Token (zero: ETH).
        asset: Address,
        /// Amount asked for.
        needed: u128,
        /// Sum of the pending change notes.
        pending: u128,
    },
    /// Only a deposit that is not yet confirmed would cover `needed`.
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
