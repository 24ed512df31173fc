//! Replay caches: one per epoch key, in memory for the check, on disk so that a
//! restart does not reopen a replay window.
//!
//! ## What flows in and out
//!
//! A worker thread (the worker stage) peels a header, gets the packet's
//! 16-byte replay tag and the epoch of the key it used, and calls
//! [`ReplayCache::check_and_insert`] before the expensive half of the hop. The answer is either a replay (drop the
//! packet), a refusal (the epoch is unknown, the cache is full, persistence is
//! behind or broken — drop it too: the cache *fails closed*), or a sequence
//! number. The tag is in memory at that point, so a second copy arriving a
//! microsecond later is already a replay; it reaches the disk a little later.
//! A node that forwards a packet before its tag is on disk could, after a crash,
//! accept the same packet again — so the mix stage holds the packet until
//! [`ReplayCache::durable_seq`] has passed its sequence number
//! ([`ReplayCache::wait_durable`]). The mixing delay is usually much longer than
//! a commit, so in practice this costs nothing.
//!
//! ## Layout
//!
//! In memory, tags are split over [`SHARDS`] mutex-protected maps by their first
//! byte, so worker threads rarely contend; each shard maps an epoch to its set
//! of tag *fingerprints*: the first 8 bytes of the 16-byte tag. Tags are
//! uniformly random (derived from the hop's shared secret), so a fresh packet
//! is mistaken for a replay only if its fingerprint equals one of the `n`
//! held, with probability `n / 2^64` — about 10^-11 at 2·10^8 tags, i.e. one
//! honest packet in a hundred billion refused as a replay; a real replay has
//! the same tag, hence the same fingerprint, and is always refused. This halves
//! the memory of a set of whole tags: between 10 and 21 bytes per tag with the
//! hash table's load factor, about 15 on average. A per-epoch atomic counter,
//! shared by the shards, enforces `max_tags_per_epoch` exactly. On disk, epoch
//! `e` has the append-only log `replay/<e>.log` in the data directory
//! ([`crate::replay_log`]: records of whole tags, each with a check, in a file
//! grown ahead in zeros so that a commit overwrites inside it). Lookups never
//! touch the disk (the in-memory sets answer them); the log is only read back
//! at start-up.
//!
//! ## Group commit
//!
//! One persister thread owns all writes. It sleeps until something is pending,
//! takes *everything* pending, appends it to the epochs' logs and syncs each log
//! it wrote (one `fdatasync` per epoch for the batch, not one per tag), then
//! publishes the highest sequence number of the batch as
//! [`ReplayCache::durable_seq`]. While a commit runs, the next batch accumulates.
//! Commits start at most once per `commit_interval` (`replay.commit_interval_ms`)
//! while tags keep arriving: a commit costs the node's CPU about the same
//! whether it carries one tag or a hundred, so under load this caps the commit
//! rate instead of letting it follow the disk. The first tag after an idle
//! spell is committed at once; the latency under load is at most one interval
//! plus one commit.
//!
//! The pending queue is bounded ([`MAX_PENDING`]). When it is full — the disk is
//! slower than the packet rate — `check_and_insert` blocks, which pushes back on
//! the workers and, through their bounded channels, on the network, for at most
//! [`ENQUEUE_WAIT`]; after that it refuses the packet with
//! [`ReplayError::Backlog`] rather than accept a tag it cannot persist. If a
//! commit ever fails, the cache stops accepting packets
//! ([`ReplayError::PersisterFailed`]): a node that cannot remember tags must not
//! mix.
//!
//! ## Capacity and fair shares
//!
//! `max_tags_per_epoch` bounds an epoch's tags (memory: about 15 bytes per tag,
//! disk: 16 bytes per tag). Its default ([`default_max_tags`]) is what the
//! node's worker threads can process in a whole epoch at the measured rate
//! ([`PACKETS_PER_SEC_PER_THREAD`]) times [`CAPACITY_MARGIN`], so processing
//! alone cannot fill it. Filling it anyway (a smaller configured cap, a faster
//! machine) must not stop the node for everyone, so the cap is shared: each
//! sender — every node peer, the node's own traffic, and the client tier as one
//! sender, since clients cost nothing to create — may add a tag only while it
//! holds fewer of the epoch's tags than the cache has room left
//! (`mine < max − total`). One sender alone is shed at half the cap
//! ([`ReplayError::ShareExceeded`], counted as `replay_share_exceeded`); `k`
//! flooders are each held near `max / (k + 1)`, and a sender with few tags is
//! served until the cache is truly full: the largest consumers are shed first,
//! never everyone at once while room is left. The per-sender counts live in
//! memory only: after a restart every sender starts from zero (the tags
//! themselves, and the total, are reloaded).
//!
//! ## Lifetime of an epoch's cache
//!
//! [`ReplayCache::open`] loads the logs of every epoch that still has a key
//! (the caller passes the epochs of all *stored* keys, not only the live ones:
//! a clock set back leaves keys for epochs ahead on disk, and they become live
//! again when the clock catches up) and deletes all others. When the epoch key
//! ring deletes a key, the caller calls [`ReplayCache::drop_epoch`]: the memory
//! is freed at once and the log is deleted by the persister, in order with
//! the pending inserts. A log is thus deleted only with its key. Tags never
//! leave the node and are never written to the node's log output.
//!
//! Nodes before the log directory kept the tags in the node database, as
//! tables `replay_<e>` of rows of whole tags. The first [`ReplayCache::open`]
//! given that database appends the tags of the epochs still kept to their
//! logs, makes them durable, and only then deletes every such table.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nox_protocol::crypto::kdf::REPLAY_TAG_LEN;
use redb::{ReadableTable, TableDefinition, TableHandle};

use crate::pipeline::Sender;
use crate::replay_log::{self, EpochLog, LogError};

/// A replay tag's bytes.
pub type Tag = replay_log::Tag;

/// Number of in-memory shards (tags are spread by their first byte).
pub const SHARDS: usize = 16;
/// Most inserts waiting for the persister; beyond it `check_and_insert` blocks.
pub const MAX_PENDING: usize = 65_536;
/// How long `check_and_insert` waits for room in a full queue before refusing.
pub const ENQUEUE_WAIT: Duration = Duration::from_secs(2);

/// Packets one worker thread processes per second (measured on one core,
/// `scripts/bench-relay`): the basis of [`default_max_tags`].
pub const PACKETS_PER_SEC_PER_THREAD: u64 = 5_500;
/// How many times a whole epoch at full speed the default cap holds. Two: so
/// that even one sender alone at the node's full speed for a whole epoch stays
/// within its share (half the cap, see the module docs).
pub const CAPACITY_MARGIN: u64 = 2;

/// The default `max_tags_per_epoch`: `threads × PACKETS_PER_SEC_PER_THREAD ×
/// epoch_secs × CAPACITY_MARGIN` (saturating). Two threads and 3-hour epochs
/// give 237.6 M tags: at the cap 4.5 GiB of memory (16 shards of 2^25 hash
/// buckets of 9 bytes) and 3.5 GiB of disk (16 bytes a tag); a whole epoch at
/// full speed, half the cap, takes 2.3 GiB and 1.8 GiB. That is per epoch
/// key; at most two keys hold a full epoch (the grace period keeps the
/// previous one).
pub fn default_max_tags(threads: usize, epoch_secs: u64) -> usize {
    let tags = (threads as u64)
        .saturating_mul(PACKETS_PER_SEC_PER_THREAD)
        .saturating_mul(epoch_secs)
        .saturating_mul(CAPACITY_MARGIN);
    usize::try_from(tags).unwrap_or(usize::MAX)
}

/// Memory one remembered tag may take at the cap, in bytes: its 8-byte
/// fingerprint and hash table control byte in a table that doubles as it
/// grows (a full table of 2^k buckets holds 7/8 of them), rounded up.
pub const MEMORY_BYTES_PER_TAG: u64 = 21;

/// Most tags an epoch key's cache may hold within `max_memory_mib` MiB of
/// memory ([`MEMORY_BYTES_PER_TAG`] each): the bound `replay.max_memory_mib`
/// puts on `max_tags_per_epoch`.
pub fn tags_within_memory(max_memory_mib: u64) -> usize {
    let tags = max_memory_mib.saturating_mul(1 << 20) / MEMORY_BYTES_PER_TAG;
    usize::try_from(tags).unwrap_or(usize::MAX)
}

/// The cap an epoch key's cache runs with: `max_tags_per_epoch`, or with 0
/// the speed-derived [`default_max_tags`] lowered to what `max_memory_mib`
/// holds (a many-core machine keeps the memory budget and sheds its heaviest
/// senders sooner rather than outgrowing its memory).
pub fn effective_max_tags(max_tags_per_epoch: usize, max_memory_mib: u64, threads: usize, epoch_secs: u64) -> usize {
    match max_tags_per_epoch {
        0 => default_max_tags(threads, epoch_secs).min(tags_within_memory(max_memory_mib)),
        n => n,
    }
}

/// The epochs whose replay tables [`ReplayCache::open`] must keep for `ring`:
/// every epoch with a stored key, live or kept for later (see "Lifetime of an
/// epoch's cache"), in increasing order.
pub fn epochs_to_keep(ring: &crate::epoch::EpochKeyRing) -> Result<Vec<u64>, crate::epoch::EpochError> {
    let mut epochs = ring.stored_epochs()?;
    epochs.extend(ring.live_epochs());
    epochs.sort_unstable();
    epochs.dedup();
    Ok(epochs)
}

/// The 64-bit fingerprint a tag is held by in memory (see the module docs).
fn fingerprint(tag: &Tag) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&tag[..8]);
    u64::from_le_bytes(b)
}

/// Whose share of an epoch's cap a tag counts against: each node peer, the
/// node itself, and all clients together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ShareKey {
    Local,
    Node(libp2p::PeerId),
    Clients,
}

impl From<Sender> for ShareKey {
    fn from(s: Sender) -> Self {
        match s {
            Sender::Local => ShareKey::Local,
            Sender::Node(p) => ShareKey::Node(p),
            Sender::Client(_) => ShareKey::Clients,
        }
    }
}

const TABLE_PREFIX: &str = "replay_";

/// An epoch's table in the node database of older nodes: row number → tags
/// end to end. Read once, by the migration in [`ReplayCache::open`].
fn log_table(name: &str) -> TableDefinition<'_, u64, &'static [u8]> {
    TableDefinition::new(name)
}

/// Replay cache errors.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The tag was seen before under this epoch key: the packet is a replay.
    #[error("replayed packet")]
    Replayed,
    /// The epoch's cache holds `max_tags_per_epoch` tags; new packets are refused
    /// until the key is retired.
    #[error("replay cache for epoch {epoch} is full")]
    Full {
        /// The epoch.
        epoch: u64,
    },
    /// The sender holds at least as many of the epoch's tags as the cache has
    /// room left: its packets are refused while others are still served.
    #[error("sender holds its share of the replay cache for epoch {epoch}")]
    ShareExceeded {
        /// The epoch.
        epoch: u64,
    },
    /// No cache for this epoch: the key is not live (never added, or retired).
    #[error("no replay cache for epoch {epoch}")]
    UnknownEpoch {
        /// The epoch.
        epoch: u64,
    },
    /// The persistence queue stayed full for [`ENQUEUE_WAIT`].
    #[error("replay persistence is {MAX_PENDING} tags behind; packet refused")]
    Backlog,
    /// The cache was shut down.
    #[error("replay cache is shut down")]
    Closed,
    /// A commit failed earlier; the cache refuses everything since.
    #[error("replay persistence failed, refusing packets: {reason}")]
    PersisterFailed {
        /// The database error, as text.
        reason: String,
    },
    /// Reading or writing an epoch's log failed, or a log is damaged.
    #[error("replay log: {0}")]
    Log(#[from] LogError),
    /// An operation on the old replay tables of the node database failed.
    #[error("replay database: {context}: {source}")]
    Database {
        /// What was being done.
        context: String,
        /// What redb said.
        source: redb::Error,
    },
    /// A row of an old replay table is not a whole number of tags.
    #[error("replay table {table}, row {row}: {len} bytes is not a whole number of tags")]
    Corrupt {
        /// The table.
        table: String,
        /// The row number.
        row: u64,
        /// The row's length in bytes.
        len: usize,
    },
    /// The persister thread could not be started.
    #[error("starting the replay persister thread: {0}")]
    Thread(std::io::Error),
}

fn db_err<E: Into<redb::Error>>(context: impl Into<String>) -> impl FnOnce(E) -> ReplayError {
    move |e| ReplayError::Database { context: context.into(), source: e.into() }
}

fn table_name(epoch: u64) -> String {
    format!("{TABLE_PREFIX}{epoch}")
}

/// The epoch of a table named exactly `replay_<epoch>` (canonical decimal).
fn table_epoch(name: &str) -> Option<u64> {
    let epoch: u64 = name.strip_prefix(TABLE_PREFIX)?.parse().ok()?;
    (table_name(epoch) == name).then_some(epoch)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something did, the data is
    // still a valid set of tags.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One epoch's tags within one shard, by fingerprint.
struct EpochShard {
    tags: HashSet<u64>,
    /// Tags of the epoch over all shards (shared by the epoch's entries).
    count: Arc<AtomicUsize>,
}

enum Op {
    Insert { epoch: u64, tag: Tag },
    DropEpoch { epoch: u64 },
}

struct Queue {
    ops: Vec<Op>,
    /// Slots promised to inserters that are checking their shard.
    reserved: usize,
    /// The last sequence number handed out.
    last_seq: u64,
    shutdown: bool,
    /// The persister is asleep waiting for work (inserters wake it only then).
    persister_waiting: bool,
    /// Tags each sender added to each epoch since the start (see the module
    /// docs); one entry per sender that added any, so bounded by the admitted
    /// nodes plus two.
    shares: HashMap<(u64, ShareKey), usize>,
}

struct Shared {
    /// The log directory.
    dir: PathBuf,
    max_tags_per_epoch: usize,
    commit_interval: Duration,
    shards: Vec<Mutex<HashMap<u64, EpochShard>>>,
    queue: Mutex<Queue>,
    /// Signalled when ops are queued or on shutdown (the persister waits).
    work: Condvar,
    /// Signalled when the queue empties (inserters wait for room).
    room: Condvar,
    durable_seq: AtomicU64,
    durable_lock: Mutex<()>,
    /// Signalled after every commit and on failure.
    durable_cv: Condvar,
    failed: OnceLock<String>,
    /// The persister has exited (drained after shutdown, or failed).
    stopped: AtomicBool,
}

/// The node's replay caches, one per live epoch key. Share it with `Arc`.
pub struct ReplayCache {
    shared: Arc<Shared>,
    persister: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayCache")
            .field("epochs", &self.epochs())
            .field("max_tags_per_epoch", &self.shared.max_tags_per_epoch)
            .field("durable_seq", &self.durable_seq())
            .finish_non_exhaustive()
    }
}

impl ReplayCache {
    /// Opens the log directory `dir` (created with mode 0700 if missing),
    /// moves the tags of `legacy`'s old replay tables into it (see the module
    /// docs), loads the logs of `epochs` into memory, deletes every other
    /// log, and starts the persister thread, which starts commits at most once
    /// per `commit_interval` while busy.
    ///
    /// `epochs` must list every epoch the node still has a key for (stored,
    /// not only live: see "Lifetime of an epoch's cache").
    pub fn open(
        dir: &Path,
        legacy: Option<&redb::Database>,
        max_tags_per_epoch: usize,
        commit_interval: Duration,
        epochs: &[u64],
    ) -> Result<Self, ReplayError> {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            max_tags_per_epoch,
            commit_interval,
            shards,
            queue: Mutex::new(Queue {
                ops: Vec::new(),
                reserved: 0,
                last_seq: 0,
                shutdown: false,
                persister_waiting: false,
                shares: HashMap::new(),
            }),
            work: Condvar::new(),
            room: Condvar::new(),
            durable_seq: AtomicU64::new(0),
            durable_lock: Mutex::new(()),
            durable_cv: Condvar::new(),
            failed: OnceLock::new(),
            stopped: AtomicBool::new(false),
        });
        for &epoch in epochs {
            shared.add_epoch(epoch);
        }
        if let Some(db) = legacy {
            migrate_tables(db, dir, epochs)?;
        }
        let logs = shared.load(epochs)?;
        let worker = shared.clone();
        let handle = std::thread::Builder::new()
            .name("nox-replay-persist".into())
            .spawn(move || worker.run_persister(logs))
            .map_err(ReplayError::Thread)?;
        Ok(ReplayCache { shared, persister: Mutex::new(Some(handle)) })
    }

    /// [`ReplayCache::check_and_insert_from`] for a packet of the node's own
    /// ([`Sender::Local`]).
    pub fn check_and_insert(&self, epoch: u64, tag: &Tag) -> Result<u64, ReplayError> {
        self.check_and_insert_from(epoch, tag, Sender::Local)
    }

    /// Records `tag` under `epoch`'s key, counted against `sender`'s share.
    /// Returns the tag's sequence number: it is on disk once
    /// [`ReplayCache::durable_seq`] reaches it.
    ///
    /// Refuses ([`ReplayError::Replayed`]) a tag seen before, refuses a sender
    /// over its share ([`ReplayError::ShareExceeded`]), and fails closed on an
    /// unknown epoch, a full cache, a persistence backlog or failure.
    pub fn check_and_insert_from(&self, epoch: u64, tag: &Tag, sender: Sender) -> Result<u64, ReplayError> {
        let s = &*self.shared;
        s.reserve_slot()?;
        let result = s.insert_reserved(epoch, tag, ShareKey::from(sender));
        if result.is_err() {
            let mut q = lock(&s.queue);
            q.reserved = q.reserved.saturating_sub(1);
            s.room.notify_one();
        }
        result
    }

    /// Starts a cache for `epoch` (its key became live). Does nothing if it
    /// exists.
    pub fn add_epoch(&self, epoch: u64) {
        self.shared.add_epoch(epoch);
    }

    /// Forgets `epoch` (its key was retired): frees the memory now and deletes
    /// the log in the persister's next commit. Returns the sequence number
    /// after which the log is gone ([`ReplayCache::wait_durable`]).
    pub fn drop_epoch(&self, epoch: u64) -> Result<u64, ReplayError> {
        let s = &*self.shared;
        for shard in &s.shards {
            lock(shard).remove(&epoch);
        }
        let mut q = lock(&s.queue);
        s.check_open(&q)?;
        q.shares.retain(|(e, _), _| *e != epoch);
        q.ops.push(Op::DropEpoch { epoch });
        q.last_seq += 1;
        if q.persister_waiting {
            s.work.notify_one();
        }
        Ok(q.last_seq)
    }

    /// Tags held for `epoch` (0 for an unknown epoch).
    pub fn len(&self, epoch: u64) -> usize {
        lock(&self.shared.shards[0]).get(&epoch).map_or(0, |e| e.count.load(Ordering::Relaxed))
    }

    /// The epochs with a cache, in increasing order.
    pub fn epochs(&self) -> Vec<u64> {
        let mut epochs: Vec<u64> = lock(&self.shared.shards[0]).keys().copied().collect();
        epochs.sort_unstable();
        epochs
    }

    /// Every sequence number up to this one is on disk.
    pub fn durable_seq(&self) -> u64 {
        self.shared.durable_seq.load(Ordering::Acquire)
    }

    /// Blocks until `seq` is on disk (`true`) or `timeout` passes, the persister
    /// failed, or the cache shut down (`false`).
    pub fn wait_durable(&self, seq: u64, timeout: Duration) -> bool {
        let s = &*self.shared;
        let deadline = Instant::now() + timeout;
        let mut guard = lock(&s.durable_lock);
        loop {
            if s.durable_seq.load(Ordering::Acquire) >= seq {
                return true;
            }
            let now = Instant::now();
            if s.stopped.load(Ordering::Acquire) || now >= deadline {
                return false;
            }
            guard = s.durable_cv.wait_timeout(guard, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Writes everything pending and stops the persister. Later inserts get
    /// [`ReplayError::Closed`]. Also runs on drop. Reports a persistence failure.
    pub fn shutdown(&self) -> Result<(), ReplayError> {
        {
            let mut q = lock(&self.shared.queue);
            q.shutdown = true;
            self.shared.work.notify_all();
            self.shared.room.notify_all();
        }
        let handle = lock(&self.persister).take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("replay persister thread panicked");
        }
        match self.shared.failed.get() {
            Some(reason) => Err(ReplayError::PersisterFailed { reason: reason.clone() }),
            None => Ok(()),
        }
    }
}

impl Drop for ReplayCache {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "replay cache shut down with unsaved tags");
        }
    }
}

impl Shared {
    fn check_open(&self, q: &Queue) -> Result<(), ReplayError> {
        if let Some(reason) = self.failed.get() {
            return Err(ReplayError::PersisterFailed { reason: reason.clone() });
        }
        if q.shutdown {
            return Err(ReplayError::Closed);
        }
        Ok(())
    }

    /// Waits (bounded) for a free slot in the pending queue and claims it.
    fn reserve_slot(&self) -> Result<(), ReplayError> {
        let deadline = Instant::now() + ENQUEUE_WAIT;
        let mut q = lock(&self.queue);
        loop {
            self.check_open(&q)?;
            if q.ops.len() + q.reserved < MAX_PENDING {
                q.reserved += 1;
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ReplayError::Backlog);
            }
            q = self.room.wait_timeout(q, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// The check and the insert, with a queue slot already claimed. The shard
    /// lock is held until the op is queued, so a concurrent `drop_epoch` queues
    /// its log's deletion after this insert. The epoch's count and the shares
    /// change only under the queue lock, which every insert takes anyway.
    fn insert_reserved(&self, epoch: u64, tag: &Tag, share: ShareKey) -> Result<u64, ReplayError> {
        let fp = fingerprint(tag);
        let mut shard = lock(&self.shards[usize::from(tag[0]) % SHARDS]);
        let entry = shard.get_mut(&epoch).ok_or(ReplayError::UnknownEpoch { epoch })?;
        if entry.tags.contains(&fp) {
            return Err(ReplayError::Replayed);
        }
        let mut q = lock(&self.queue);
        self.check_open(&q)?;
        let max = self.max_tags_per_epoch;
        let total = entry.count.load(Ordering::Acquire);
        if total >= max {
            return Err(ReplayError::Full { epoch });
        }
        let mine = q.shares.entry((epoch, share)).or_insert(0);
        if *mine >= max - total {
            return Err(ReplayError::ShareExceeded { epoch });
        }
        *mine += 1;
        entry.count.fetch_add(1, Ordering::AcqRel);
        entry.tags.insert(fp);
        q.reserved = q.reserved.saturating_sub(1);
        q.ops.push(Op::Insert { epoch, tag: *tag });
        q.last_seq += 1;
        if q.persister_waiting {
            self.work.notify_one();
        }
        Ok(q.last_seq)
    }

    fn add_epoch(&self, epoch: u64) {
        let count = Arc::new(AtomicUsize::new(0));
        for shard in &self.shards {
            if let Entry::Vacant(v) = lock(shard).entry(epoch) {
                v.insert(EpochShard { tags: HashSet::new(), count: count.clone() });
            }
        }
    }

    /// Startup: the logs of `epochs` into memory, other logs deleted. Returns
    /// the open logs, for the persister.
    fn load(&self, epochs: &[u64]) -> Result<HashMap<u64, EpochLog>, ReplayError> {
        let mut logs = HashMap::new();
        let mut loaded = 0usize;
        let mut deleted = 0usize;
        for (epoch, path) in replay_log::list(&self.dir)? {
            if !epochs.contains(&epoch) {
                replay_log::remove(&path)?;
                deleted += 1;
                continue;
            }
            let mut shards: Vec<_> = self.shards.iter().map(lock).collect();
            let log = EpochLog::open(&path, epoch, |tag| {
                if let Some(e) = shards[usize::from(tag[0]) % SHARDS].get_mut(&epoch)
                    && e.tags.insert(fingerprint(tag))
                {
                    e.count.fetch_add(1, Ordering::Relaxed);
                    loaded += 1;
                }
            })?;
            logs.insert(epoch, log);
        }
        tracing::info!(epochs = epochs.len(), loaded, deleted, "replay caches loaded");
        Ok(logs)
    }

    fn run_persister(&self, mut logs: HashMap<u64, EpochLog>) {
        /// Marks the persister stopped however it exits, and wakes every waiter.
        struct Stopped<'a>(&'a Shared);
        impl Drop for Stopped<'_> {
            fn drop(&mut self) {
                let s = self.0;
                let _guard = lock(&s.durable_lock);
                s.stopped.store(true, Ordering::Release);
                s.durable_cv.notify_all();
                s.room.notify_all();
            }
        }
        let _stopped = Stopped(self);
        let mut last_start: Option<Instant> = None;
        loop {
            let (ops, last_seq) = {
                let mut q = lock(&self.queue);
                while q.ops.is_empty() && !q.shutdown {
                    q.persister_waiting = true;
                    q = self.work.wait(q).unwrap_or_else(PoisonError::into_inner);
                }
                q.persister_waiting = false;
                if q.ops.is_empty() {
                    return; // shut down and drained
                }
                // Busy: let the batch grow until one interval after the last
                // commit started. After an idle spell this is already past.
                if let Some(due) = last_start.map(|t| t + self.commit_interval) {
                    loop {
                        let now = Instant::now();
                        if q.shutdown || now >= due {
                            break;
                        }
                        q = self.work.wait_timeout(q, due - now).unwrap_or_else(PoisonError::into_inner).0;
                    }
                }
                last_start = Some(Instant::now());
                let ops = std::mem::take(&mut q.ops);
                self.room.notify_all();
                (ops, q.last_seq)
            };
            match self.commit(ops, &mut logs) {
                Ok(()) => {
                    let _guard = lock(&self.durable_lock);
                    self.durable_seq.store(last_seq, Ordering::Release);
                    self.durable_cv.notify_all();
                }
                Err(e) => {
                    tracing::error!(error = %e, "replay commit failed; refusing packets from now on");
                    let _ = self.failed.set(e.to_string());
                    return;
                }
            }
        }
    }

    /// Makes one batch durable, in queue order: deletes the logs of dropped
    /// epochs, then appends each epoch's tags to its log (created on the
    /// epoch's first tag) and syncs it.
    fn commit(&self, ops: Vec<Op>, logs: &mut HashMap<u64, EpochLog>) -> Result<(), ReplayError> {
        let mut run: BTreeMap<u64, Vec<Tag>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Insert { epoch, tag } => run.entry(epoch).or_default().push(tag),
                // Tags queued for the epoch before its drop go with its log
                // (they are never written).
                Op::DropEpoch { epoch } => {
                    run.remove(&epoch);
                    match logs.remove(&epoch) {
                        Some(log) => log.remove()?,
                        None => replay_log::remove(&replay_log::log_path(&self.dir, epoch))?,
                    }
                }
            }
        }
        for (epoch, tags) in run {
            let log = log_of(logs, &self.dir, epoch)?;
            log.append(&tags)?;
            log.sync()?;
        }
        Ok(())
    }
}

/// `epoch`'s open log, created if it has none yet.
fn log_of<'a>(logs: &'a mut HashMap<u64, EpochLog>, dir: &Path, epoch: u64) -> Result<&'a mut EpochLog, ReplayError> {
    Ok(match logs.entry(epoch) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(v) => v.insert(EpochLog::create(dir, epoch)?),
    })
}

/// Moves the tags of the node database's old `replay_<epoch>` tables into the
/// logs in `dir` (for the epochs of `epochs`; the others are dead), syncs the
/// logs, and only then deletes every old replay table. Returns how many tags
/// moved; does nothing without such tables. A crash in between moves the same
/// tags again at the next start, which is harmless: a tag already held is not
/// counted twice.
fn migrate_tables(db: &redb::Database, dir: &Path, epochs: &[u64]) -> Result<usize, ReplayError> {
    use redb::ReadableDatabase;

    let names: Vec<String> = {
        let txn = db.begin_read().map_err(db_err("beginning a read transaction"))?;
        txn.list_tables()
            .map_err(db_err("listing tables"))?
            .map(|t| t.name().to_owned())
            .filter(|n| n.starts_with(TABLE_PREFIX))
            .collect()
    };
    if names.is_empty() {
        return Ok(0);
    }
    let existing: HashMap<u64, PathBuf> = replay_log::list(dir)?.into_iter().collect();
    let mut moved = 0usize;
    for name in &names {
        let Some(epoch) = table_epoch(name).filter(|e| epochs.contains(e)) else { continue };
        let mut log = match existing.get(&epoch) {
            Some(path) => EpochLog::open(path, epoch, |_| {})?,
            None => EpochLog::create(dir, epoch)?,
        };
        // Row by row (up to 4,096 tags each), so a large table is never held
        // in memory whole.
        let txn = db.begin_read().map_err(db_err("beginning a read transaction"))?;
        let table = txn.open_table(log_table(name)).map_err(db_err(format!("opening table {name}")))?;
        let mut tags: Vec<Tag> = Vec::new();
        for row in table.iter().map_err(db_err(format!("reading table {name}")))? {
            let (row, bytes) = row.map_err(db_err(format!("reading table {name}")))?;
            let bytes = bytes.value();
            if bytes.len() % REPLAY_TAG_LEN != 0 {
                return Err(ReplayError::Corrupt { table: name.clone(), row: row.value(), len: bytes.len() });
            }
            tags.clear();
            tags.extend(bytes.chunks_exact(REPLAY_TAG_LEN).map(|t| {
                let mut tag: Tag = [0; REPLAY_TAG_LEN];
                tag.copy_from_slice(t);
                tag
            }));
            log.append(&tags)?;
            moved += tags.len();
        }
        log.sync()?;
    }
    let mut txn = db.begin_write().map_err(db_err("beginning a write transaction"))?;
    txn.set_durability(redb::Durability::Immediate).map_err(db_err("setting durability"))?;
    for name in &names {
        txn.delete_table(log_table(name)).map_err(db_err(format!("deleting table {name}")))?;
    }
    txn.commit().map_err(db_err("committing"))?;
    tracing::info!(tables = names.len(), tags = moved, dir = %dir.display(), "moved replay tags out of the database");
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use redb::ReadableDatabase;

    use super::*;
    use crate::store::open_database;

    const WAIT: Duration = Duration::from_secs(10);
    const INTERVAL: Duration = Duration::from_millis(2);

    fn tag(n: u32) -> Tag {
        let mut t = [0u8; 16];
        t[..4].copy_from_slice(&n.to_be_bytes());
        t[4..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9).to_be_bytes());
        t[0] ^= t[7]; // spread over the shards
        t
    }

    /// The cache with its logs in `path`; returns the path too.
    fn open(path: &Path, max: usize, live: &[u64]) -> (PathBuf, ReplayCache) {
        let cache = ReplayCache::open(path, None, max, INTERVAL, live).unwrap();
        (path.to_owned(), cache)
    }

    /// The epochs with a log in `dir`.
    fn logs(dir: &Path) -> Vec<u64> {
        replay_log::list(dir).unwrap().into_iter().map(|(e, _)| e).collect()
    }

    /// The tags in epoch `epoch`'s log in `dir`.
    fn logged(dir: &Path, epoch: u64) -> Vec<Tag> {
        let mut out = Vec::new();
        EpochLog::open(&replay_log::log_path(dir, epoch), epoch, |t| out.push(*t)).unwrap();
        out
    }

    #[test]
    fn cache_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ReplayCache>();
    }

    #[test]
    fn table_names_round_trip_strictly() {
        assert_eq!(table_epoch(&table_name(42)), Some(42));
        assert_eq!(table_epoch("replay_042"), None);
        assert_eq!(table_epoch("replay_+42"), None);
        assert_eq!(table_epoch("replay_"), None);
        assert_eq!(table_epoch("epoch_keys"), None);
    }

    #[test]
    fn replay_is_detected_and_epochs_are_separate() {
        let dir = tempfile::tempdir().unwrap();
        let (_dir, cache) = open(&dir.path().join("replay"), 100, &[7, 8]);
        let s1 = cache.check_and_insert(7, &tag(1)).unwrap();
        assert!(matches!(cache.check_and_insert(7, &tag(1)), Err(ReplayError::Replayed)));
        let s2 = cache.check_and_insert(8, &tag(1)).unwrap();
        assert!(s2 > s1, "sequence numbers increase");
        assert!(matches!(cache.check_and_insert(9, &tag(1)), Err(ReplayError::UnknownEpoch { epoch: 9 })));
        assert_eq!((cache.len(7), cache.len(8), cache.len(9)), (1, 1, 0));
        assert_eq!(cache.epochs(), vec![7, 8]);
        assert!(cache.wait_durable(s2, WAIT));
        assert!(cache.durable_seq() >= s2);
    }

    #[test]
    fn tags_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        {
            let (_dir, cache) = open(&path, 100, &[7, 8]);
            let mut last = 0;
            for n in 0..50 {
                last = cache.check_and_insert(7, &tag(n)).unwrap();
            }
            last = last.max(cache.check_and_insert(8, &tag(1000)).unwrap());
            assert!(cache.wait_durable(last, WAIT));
        }
        let (_dir, cache) = open(&path, 100, &[7, 8]);
        assert_eq!(cache.len(7), 50);
        for n in 0..50 {
            assert!(matches!(cache.check_and_insert(7, &tag(n)), Err(ReplayError::Replayed)), "tag {n}");
        }
        assert!(matches!(cache.check_and_insert(8, &tag(1000)), Err(ReplayError::Replayed)));
        cache.check_and_insert(7, &tag(50)).unwrap();
    }

    #[test]
    fn shutdown_flushes_pending_tags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        {
            let (_dir, cache) = open(&path, 10_000, &[1]);
            for n in 0..5_000 {
                cache.check_and_insert(1, &tag(n)).unwrap();
            }
            cache.shutdown().unwrap();
            assert!(matches!(cache.check_and_insert(1, &tag(9_999)), Err(ReplayError::Closed)));
        }
        let (_dir, cache) = open(&path, 10_000, &[1]);
        assert_eq!(cache.len(1), 5_000);
    }

    #[test]
    fn commits_append_every_tag_to_its_epochs_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        let (logdir, cache) = open(&path, 100_000, &[1, 2]);
        // One batch of more than a record, then a second commit.
        let many = replay_log::TAGS_PER_RECORD as u32 + 10;
        for n in 0..many {
            cache.check_and_insert(1, &tag(n)).unwrap();
        }
        let seq = cache.check_and_insert(2, &tag(99_999)).unwrap();
        assert!(cache.wait_durable(seq, WAIT));
        let seq = cache.check_and_insert(1, &tag(99_998)).unwrap();
        assert!(cache.wait_durable(seq, WAIT));
        cache.shutdown().unwrap();
        drop(cache);
        let mut expected: Vec<Tag> = (0..many).map(tag).collect();
        expected.push(tag(99_998));
        assert_eq!(logged(&logdir, 1), expected, "in order, each once");
        assert_eq!(logged(&logdir, 2), vec![tag(99_999)]);
        let (_dir, cache) = open(&path, 100_000, &[1, 2]);
        assert_eq!(cache.len(1), expected.len());
        assert!(matches!(cache.check_and_insert(1, &tag(99_998)), Err(ReplayError::Replayed)));
    }

    #[test]
    fn busy_commits_wait_for_the_interval_and_shutdown_cuts_it_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        {
            let cache = ReplayCache::open(&path, None, 100, Duration::from_secs(1), &[1]).unwrap();
            // After an idle spell the first tag is committed at once ...
            let a = cache.check_and_insert(1, &tag(1)).unwrap();
            assert!(cache.wait_durable(a, WAIT));
            // ... the next one waits for one interval after that commit started.
            let b = cache.check_and_insert(1, &tag(2)).unwrap();
            assert!(cache.durable_seq() < b, "a second commit started within the interval");
            // Shutdown does not wait out the interval, and loses nothing.
            cache.shutdown().unwrap();
            assert_eq!(cache.durable_seq(), b);
        }
        let (_dir, cache) = open(&path, 100, &[1]);
        assert!(matches!(cache.check_and_insert(1, &tag(2)), Err(ReplayError::Replayed)));
    }

    /// Writes the old database table of `epoch` with `rows`.
    fn legacy_table(db: &redb::Database, epoch: u64, rows: &[&[u8]]) {
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(log_table(&table_name(epoch))).unwrap();
            for (i, row) in rows.iter().enumerate() {
                table.insert(i as u64, *row).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    fn table_names(db: &redb::Database) -> Vec<String> {
        let txn = db.begin_read().unwrap();
        let mut names: Vec<String> = txn.list_tables().unwrap().map(|t| t.name().to_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn tags_of_the_old_database_tables_move_to_the_logs() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("db")).unwrap();
        let logdir = dir.path().join("replay");
        let rows: Vec<u8> = (0..5).flat_map(tag).collect();
        legacy_table(&db, 5, &[&rows[..48], &rows[48..]]);
        legacy_table(&db, 3, &[&tag(9)]);
        {
            // A log from an interrupted migration already holds one of them.
            replay_log::list(&logdir).unwrap();
            let mut log = EpochLog::create(&logdir, 5).unwrap();
            log.append(&[tag(0)]).unwrap();
            log.sync().unwrap();
        }
        let cache = ReplayCache::open(&logdir, Some(&db), 100, INTERVAL, &[5, 6]).unwrap();
        assert_eq!(cache.len(5), 5, "each tag once");
        for n in 0..5 {
            assert!(matches!(cache.check_and_insert(5, &tag(n)), Err(ReplayError::Replayed)), "tag {n}");
        }
        assert!(table_names(&db).iter().all(|n| !n.starts_with(TABLE_PREFIX)), "{:?}", table_names(&db));
        assert_eq!(logs(&logdir), vec![5], "epoch 3 is dead: its tags are not kept");
        cache.shutdown().unwrap();
        drop(cache);
        // The next open has nothing to move and loses nothing.
        let cache = ReplayCache::open(&logdir, Some(&db), 100, INTERVAL, &[5, 6]).unwrap();
        assert_eq!(cache.len(5), 5);
    }

    #[test]
    fn a_torn_row_of_an_old_table_is_a_typed_error_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("db")).unwrap();
        legacy_table(&db, 5, &[&[1u8; 17]]);
        match ReplayCache::open(&dir.path().join("replay"), Some(&db), 10, INTERVAL, &[5]) {
            Err(ReplayError::Corrupt { table, row: 0, len: 17 }) => assert_eq!(table, "replay_5"),
            other => panic!("expected a corrupt-row error, got {other:?}"),
        }
        assert_eq!(table_names(&db), vec!["replay_5"], "nothing deleted");
    }

    #[test]
    fn a_damaged_log_is_a_typed_error_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(replay_log::log_path(&path, 4), b"NOTALOG!\0\0\0\0\0\0\0\x04").unwrap();
        match ReplayCache::open(&path, None, 10, INTERVAL, &[4]) {
            Err(ReplayError::Log(LogError::Corrupt { offset: 0, .. })) => {}
            other => panic!("expected a damaged-log error, got {other:?}"),
        }
    }

    #[test]
    fn drop_epoch_removes_memory_and_log() {
        let dir = tempfile::tempdir().unwrap();
        let (logdir, cache) = open(&dir.path().join("replay"), 100, &[3, 4]);
        cache.check_and_insert(3, &tag(1)).unwrap();
        let seq = cache.check_and_insert(4, &tag(1)).unwrap();
        assert!(cache.wait_durable(seq, WAIT));
        assert_eq!(logs(&logdir), vec![3, 4]);
        let seq = cache.drop_epoch(3).unwrap();
        assert!(matches!(cache.check_and_insert(3, &tag(2)), Err(ReplayError::UnknownEpoch { epoch: 3 })));
        assert!(cache.wait_durable(seq, WAIT));
        assert_eq!(logs(&logdir), vec![4]);
        assert_eq!(cache.epochs(), vec![4]);
        // A new epoch starts empty; adding twice is harmless.
        cache.add_epoch(5);
        cache.add_epoch(5);
        cache.check_and_insert(5, &tag(1)).unwrap();
        assert_eq!(cache.len(5), 1);
        // An epoch dropped with its tags still pending leaves no log.
        cache.add_epoch(6);
        cache.check_and_insert(6, &tag(1)).unwrap();
        let seq = cache.drop_epoch(6).unwrap();
        assert!(cache.wait_durable(seq, WAIT));
        assert_eq!(logs(&logdir), vec![4, 5]);
    }

    #[test]
    fn open_deletes_logs_of_dead_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        {
            let (_dir, cache) = open(&path, 100, &[1, 2, 3]);
            for e in 1..=3 {
                cache.check_and_insert(e, &tag(e as u32)).unwrap();
            }
            cache.shutdown().unwrap();
        }
        let (logdir, cache) = open(&path, 100, &[3, 4]);
        assert_eq!(logs(&logdir), vec![3]);
        assert_eq!(cache.epochs(), vec![3, 4]);
        assert_eq!((cache.len(1), cache.len(3)), (0, 1));
    }

    fn node() -> Sender {
        Sender::Node(libp2p::PeerId::random())
    }

    /// Inserts fresh tags from `sender` until one is refused; returns how many
    /// were taken and the refusal.
    fn flood(cache: &ReplayCache, epoch: u64, sender: Sender, next: &mut u32) -> (usize, ReplayError) {
        let mut taken = 0;
        loop {
            *next += 1;
            match cache.check_and_insert_from(epoch, &tag(*next), sender) {
                Ok(_) => taken += 1,
                Err(e) => return (taken, e),
            }
        }
    }

    #[test]
    fn full_cache_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (_dir, cache) = open(&dir.path().join("replay"), 10, &[1, 2]);
        let mut next = 0;
        // Senders one after the other, each until refused, fill it exactly.
        let mut total = 0;
        while total < 10 {
            let (taken, e) = flood(&cache, 1, node(), &mut next);
            assert!(taken > 0, "a sender with nothing held is served while room is left");
            total += taken;
            assert!(matches!(e, ReplayError::ShareExceeded { epoch: 1 } | ReplayError::Full { epoch: 1 }), "{e}");
        }
        assert_eq!(cache.len(1), 10);
        assert!(matches!(cache.check_and_insert_from(1, &tag(9_999), node()), Err(ReplayError::Full { epoch: 1 })));
        // Known tags are still replays, and other epochs are unaffected.
        assert!(matches!(cache.check_and_insert_from(1, &tag(1), node()), Err(ReplayError::Replayed)));
        cache.check_and_insert(2, &tag(10)).unwrap();
        assert_eq!(cache.len(1), 10);
    }

    /// A node floods one epoch's cache with fresh packets: it is shed at half
    /// the cap, and another node, the node's own traffic and clients are still
    /// served; a second flooder is shed in turn, and a sender with little in
    /// the cache is served until it is truly full.
    #[test]
    fn a_flooding_sender_is_shed_and_others_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let (_dir, cache) = open(&dir.path().join("replay"), 1_000, &[1]);
        let mut next = 0;
        let (a, b) = (node(), node());
        let (taken, e) = flood(&cache, 1, a, &mut next);
        assert_eq!(taken, 500);
        assert!(matches!(e, ReplayError::ShareExceeded { epoch: 1 }), "{e}");
        // Shed for good: its next fresh packet is refused too.
        assert!(matches!(cache.check_and_insert_from(1, &tag(100_000), a), Err(ReplayError::ShareExceeded { .. })));
        // Others are served.
        cache.check_and_insert(1, &tag(100_001)).unwrap();
        cache.check_and_insert_from(1, &tag(100_002), Sender::Client(libp2p::PeerId::random())).unwrap();
        let (taken, _) = flood(&cache, 1, b, &mut next);
        assert_eq!(taken, 249, "a second flooder stops where it holds what is left (501 + 2b < 1000)");
        for n in 0..100 {
            assert!(matches!(
                cache.check_and_insert_from(1, &tag(200_000 + n), a),
                Err(ReplayError::ShareExceeded { .. })
            ));
        }
        // Clients are one sender however many there are.
        let (taken, e) = flood(&cache, 1, Sender::Client(libp2p::PeerId::random()), &mut next);
        assert!(taken < 200 && matches!(e, ReplayError::ShareExceeded { .. }), "{taken} {e}");
        let c = cache.check_and_insert_from(1, &tag(300_000), Sender::Client(libp2p::PeerId::random()));
        assert!(matches!(c, Err(ReplayError::ShareExceeded { .. })), "{c:?}");
        // A node that has sent little is still served.
        cache.check_and_insert_from(1, &tag(300_001), node()).unwrap();
    }

    #[test]
    fn shares_are_per_epoch_and_dropped_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_dir, cache) = open(&dir.path().join("replay"), 100, &[1, 2]);
        let a = node();
        let mut next = 0;
        assert_eq!(flood(&cache, 1, a, &mut next).0, 50);
        // Another epoch's cache has its own shares.
        assert_eq!(flood(&cache, 2, a, &mut next).0, 50);
        cache.drop_epoch(1).unwrap();
        cache.add_epoch(1);
        assert_eq!(flood(&cache, 1, a, &mut next).0, 50, "a new cache for the epoch starts with no shares");
    }

    #[test]
    fn default_capacity_follows_threads_and_epoch_length() {
        assert_eq!(default_max_tags(2, 10_800), 2 * 5_500 * 10_800 * 2);
        assert_eq!(default_max_tags(1, 8), 88_000);
        assert_eq!(default_max_tags(usize::MAX, u64::MAX), usize::MAX);
    }

    #[test]
    fn the_memory_budget_bounds_the_default_cap() {
        // Two threads and 3-hour epochs fit the default 4,864 MiB.
        assert_eq!(effective_max_tags(0, 4_864, 2, 10_800), default_max_tags(2, 10_800));
        assert!(default_max_tags(2, 10_800) as u64 * MEMORY_BYTES_PER_TAG <= 4_864 << 20);
        // Sixteen threads would need eight times that: the budget wins.
        let capped = effective_max_tags(0, 4_864, 16, 10_800);
        assert_eq!(capped, tags_within_memory(4_864));
        assert!(capped < default_max_tags(16, 10_800));
        assert!(capped as u64 * MEMORY_BYTES_PER_TAG <= 4_864 << 20);
        // An explicit cap is taken as it is (check-config holds it to the budget).
        assert_eq!(effective_max_tags(1_000, 1, 16, 10_800), 1_000);
        assert_eq!(tags_within_memory(u64::MAX) as u64, u64::MAX / MEMORY_BYTES_PER_TAG);
    }

    #[test]
    fn fingerprints_are_the_first_eight_bytes() {
        let mut t = [0u8; 16];
        t[0] = 1;
        t[15] = 0xff;
        assert_eq!(fingerprint(&t), 1);
        // Tags that differ only after the eighth byte are one fingerprint: the
        // second is refused (the rate of this is n / 2^64 for random tags).
        let dir = tempfile::tempdir().unwrap();
        let (_dir, cache) = open(&dir.path().join("replay"), 100, &[1]);
        cache.check_and_insert(1, &t).unwrap();
        t[15] = 0;
        assert!(matches!(cache.check_and_insert(1, &t), Err(ReplayError::Replayed)));
    }

    /// The clock was ahead (epoch 50), then set back (epoch 10) across a
    /// restart: the ring keeps the keys of 50 and 51, so their logs stay,
    /// and when the clock catches up a packet seen at 50 is still a replay.
    #[test]
    fn logs_of_stored_future_epochs_survive_an_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay");
        {
            let (_dir, cache) = open(&path, 100, &[50, 51]);
            let seq = cache.check_and_insert(50, &tag(7)).unwrap();
            assert!(cache.wait_durable(seq, WAIT));
        }
        {
            // Back at epoch 10, with the keys of 50 and 51 still stored.
            let (logdir, cache) = open(&path, 100, &[10, 11, 50, 51]);
            assert_eq!(logs(&logdir), vec![50]);
            assert_eq!(cache.len(50), 1);
            cache.drop_epoch(10).unwrap();
            cache.shutdown().unwrap();
        }
        let (_dir, cache) = open(&path, 100, &[49, 50, 51]);
        assert!(matches!(cache.check_and_insert(50, &tag(7)), Err(ReplayError::Replayed)));
    }

    #[test]
    fn concurrent_inserts_admit_each_tag_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_dir, cache) = open(&dir.path().join("replay"), 1_000_000, &[1]);
        let cache = Arc::new(cache);
        const DISTINCT: u32 = 4_000;
        let results: Vec<(Vec<u32>, u64)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4u32)
                .map(|t| {
                    let cache = cache.clone();
                    s.spawn(move || {
                        // Every thread tries every tag, in a different order.
                        let mut won = Vec::new();
                        let mut max_seq = 0;
                        for i in 0..DISTINCT {
                            let n = (i + t * 997) % DISTINCT;
                            match cache.check_and_insert(1, &tag(n)) {
                                Ok(seq) => {
                                    won.push(n);
                                    max_seq = max_seq.max(seq);
                                }
                                Err(ReplayError::Replayed) => {}
                                Err(e) => panic!("unexpected {e}"),
                            }
                        }
                        (won, max_seq)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all: Vec<u32> = results.iter().flat_map(|(w, _)| w.iter().copied()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..DISTINCT).collect::<Vec<_>>(), "each tag admitted exactly once");
        assert_eq!(cache.len(1), DISTINCT as usize);
        let max = results.iter().map(|(_, s)| *s).max().unwrap();
        assert!(cache.wait_durable(max, WAIT));
    }

    #[test]
    fn failed_commit_makes_the_cache_refuse_everything() {
        let dir = tempfile::tempdir().unwrap();
        let (logdir, cache) = open(&dir.path().join("replay"), 100, &[1]);
        // A directory where epoch 2's log would be created: the commit fails.
        std::fs::create_dir(replay_log::log_path(&logdir, 2)).unwrap();
        cache.add_epoch(2);
        let seq = cache.check_and_insert(2, &tag(1)).unwrap();
        assert!(!cache.wait_durable(seq, WAIT));
        assert!(matches!(cache.check_and_insert(1, &tag(2)), Err(ReplayError::PersisterFailed { .. })));
        assert!(matches!(cache.shutdown(), Err(ReplayError::PersisterFailed { .. })));
    }

    #[test]
    fn wait_durable_times_out_for_a_future_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let (_dir, cache) = open(&dir.path().join("replay"), 10, &[1]);
        assert!(!cache.wait_durable(1_000, Duration::from_millis(50)));
        cache.shutdown().unwrap();
        assert!(!cache.wait_durable(1_000, WAIT), "returns at once after shutdown");
    }
}
