//! The node's X25519 mix keys, one per epoch.
//!
//! ## What this module owns
//!
//! [`EpochKeyRing`] holds the secret keys a node may need to peel a packet
//! *now*:
//!
//! * **current** — the key of the epoch `unix time / epoch length` is in;
//! * **next** — the following epoch's key. Its descriptor is published one epoch
//!   ahead, so clients have it before the epoch starts, and a client whose clock
//!   runs a little fast may already use it;
//! * **previous** — the last epoch's key, only during the first `grace_secs` of
//!   the current epoch, for packets built just before the boundary or still in
//!   flight through the mix delays.
//!
//! A Sphinx header says which key it was made for only by the epoch's parity.
//! `previous` and `next` share a parity, so [`EpochKeyRing::key_for`] resolves it
//! by time: the previous key inside the grace period, the next key after it.
//! This is why the grace period must be shorter than an epoch.
//!
//! ## Persistence and forward secrecy
//!
//! The secrets live in the key directory of the data directory
//! ([`crate::epoch_store`]: one file per epoch), not in the node database: redb
//! never overwrites a deleted row, a key file is overwritten with zeros before
//! it is unlinked. A restarted node must keep the keys it already published, or
//! every client holding its descriptors would build packets it cannot open.
//! Every new key is durable (file and directory flushed) *before* the in-memory
//! ring changes, so a descriptor is never published for a key that is not yet
//! on disk.
//!
//! [`EpochKeyRing::rotate`] (called periodically by the node) moves the ring
//! forward and retires keys: a retired [`MixSecretKey`] is dropped, which
//! zeroizes it, and its file is wiped. The [`Rotation`] it returns lists the
//! retired epochs so the caller drops their replay caches too — the cache is per
//! epoch key, so it stays bounded. After a long downtime the ring jumps straight
//! to the right epoch and wipes everything older than the previous epoch.
//! Keys of epochs *after* next (left behind by a clock that jumped backwards)
//! stay on disk: they may already be published, and become next in due time.

use std::path::Path;

use ed25519_dalek::SigningKey;
use nox_protocol::crypto::x25519::MixSecretKey;
use nox_protocol::descriptor::{DescriptorError, EpochClock, FeePolicy, MixDescriptor};
use nox_protocol::sphinx::Parity;
use rand_core::{CryptoRng, RngCore};

use crate::epoch_store::{EpochKeyStore, EpochStoreError};

/// Seconds since the Unix epoch by the wall clock (0 if the clock is before
/// 1970): what every epoch decision in the node is taken against.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Epoch key errors.
#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    /// The grace period is as long as an epoch or longer, so the previous and
    /// the next key (same parity) would both be acceptable at once.
    #[error("grace period of {grace_secs} s must be shorter than the epoch length of {epoch_secs} s")]
    GraceTooLong {
        /// The configured grace period.
        grace_secs: u64,
        /// The epoch length.
        epoch_secs: u64,
    },
    /// The clock is so far in the future that the next epoch number overflows.
    #[error("unix time {now_unix} is beyond the last representable epoch")]
    ClockOutOfRange {
        /// The time given.
        now_unix: u64,
    },
    /// Reading, writing or wiping a key file failed.
    #[error("epoch key store: {0}")]
    Store(#[from] EpochStoreError),
    /// Signing a descriptor failed (its fields break the descriptor limits).
    #[error("signing the epoch descriptor: {0}")]
    Descriptor(#[from] DescriptorError),
}

/// What one [`EpochKeyRing::rotate`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    /// The new current epoch, if the current epoch changed.
    pub new_current: Option<u64>,
    /// The new next epoch, if it changed: publish its descriptor.
    pub new_next: Option<u64>,
    /// Epochs whose keys were zeroized and deleted, in increasing order: drop
    /// their replay caches.
    pub retired: Vec<u64>,
}

impl Rotation {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.new_current.is_none() && self.new_next.is_none() && self.retired.is_empty()
    }
}

struct EpochKey {
    epoch: u64,
    secret: MixSecretKey,
}

/// The node's live mix keys: previous (during the grace period), current, next.
pub struct EpochKeyRing {
    store: EpochKeyStore,
    clock: EpochClock,
    grace_secs: u64,
    previous: Option<EpochKey>,
    current: EpochKey,
    next: EpochKey,
    /// Epochs whose files a failed rotation already wiped: reported as retired
    /// by the next rotation that succeeds.
    wiped_unreported: Vec<u64>,
}

impl std::fmt::Debug for EpochKeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochKeyRing")
            .field("previous", &self.previous.as_ref().map(|k| k.epoch))
            .field("current", &self.current.epoch)
            .field("next", &self.next.epoch)
            .field("grace_secs", &self.grace_secs)
            .finish_non_exhaustive()
    }
}

/// The ring [`settle`] arrived at, and the epochs it retired.
struct Settled {
    previous: Option<EpochKey>,
    current: EpochKey,
    next: EpochKey,
    retired: Vec<u64>,
}

impl EpochKeyRing {
    /// Loads the keys for `now_unix` from the key directory `key_dir` (see
    /// [`crate::epoch_store::epoch_keys_dir`]; created if missing), generating
    /// (and persisting) the current and next keys if they are missing, and
    /// wiping keys older than the previous epoch (or the previous one too, after
    /// its grace period).
    pub fn open(
        key_dir: &Path,
        clock: EpochClock,
        grace_secs: u64,
        now_unix: u64,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Self, EpochError> {
        if grace_secs >= clock.epoch_secs() {
            return Err(EpochError::GraceTooLong { grace_secs, epoch_secs: clock.epoch_secs() });
        }
        let target = clock.epoch_at(now_unix);
        let keep_previous = clock.secs_into_epoch(now_unix) < grace_secs;
        let store = EpochKeyStore::open(key_dir)?;
        let mut wiped = Vec::new();
        let s = settle(&store, Vec::new(), &mut wiped, target, keep_previous, now_unix, rng)?;
        tracing::info!(
            current = s.current.epoch,
            next = s.next.epoch,
            previous = ?s.previous.as_ref().map(|k| k.epoch),
            retired = s.retired.len(),
            "epoch keys loaded"
        );
        Ok(EpochKeyRing {
            store,
            clock,
            grace_secs,
            previous: s.previous,
            current: s.current,
            next: s.next,
            wiped_unreported: Vec::new(),
        })
    }

    /// The current epoch (as of the last [`EpochKeyRing::open`] or
    /// [`EpochKeyRing::rotate`]).
    pub fn current_epoch(&self) -> u64 {
        self.current.epoch
    }

    /// The next epoch, whose key is already published.
    pub fn next_epoch(&self) -> u64 {
        self.next.epoch
    }

    /// The previous epoch, while its key is still held.
    pub fn previous_epoch(&self) -> Option<u64> {
        self.previous.as_ref().map(|k| k.epoch)
    }

    /// Every epoch whose key is held, in increasing order: the epochs that need a
    /// replay cache.
    pub fn live_epochs(&self) -> Vec<u64> {
        self.held().map(|k| k.epoch).collect()
    }

    /// Every epoch with a key on disk, in increasing order: the held ones and
    /// any kept for later (keys of epochs after next, left by a clock that
    /// stepped back). Reads the key directory.
    pub fn stored_epochs(&self) -> Result<Vec<u64>, EpochError> {
        Ok(self.store.epochs()?.into_iter().collect())
    }

    /// The clock the ring runs on.
    pub fn clock(&self) -> EpochClock {
        self.clock
    }

    /// The key a packet whose header carries `parity` must be peeled with at
    /// `now_unix`, and its epoch (the replay cache to check):
    ///
    /// * the current key if the parity is the current epoch's;
    /// * otherwise the previous key, if it is still held and `now_unix` is less
    ///   than `grace_secs` after the start of the current epoch;
    /// * otherwise the next key.
    ///
    /// `None` if the ring is stale — `now_unix` is two or more epochs past the
    /// current one because [`EpochKeyRing::rotate`] has not run — so that no
    /// packet is opened with a key that should have been retired.
    pub fn key_for(&self, parity: Parity, now_unix: u64) -> Option<(u64, &MixSecretKey)> {
        if self.clock.epoch_at(now_unix) > self.next.epoch {
            return None;
        }
        let key = if parity == Parity::of_epoch(self.current.epoch) {
            &self.current
        } else {
            match &self.previous {
                Some(prev) if now_unix < self.clock.start_of(self.current.epoch).saturating_add(self.grace_secs) => {
                    prev
                }
                _ => &self.next,
            }
        };
        Some((key.epoch, &key.secret))
    }

    /// Moves the ring to `now_unix`: on an epoch change, current becomes previous
    /// and next becomes current, and a new next key is generated (or loaded, if an
    /// earlier run already made it) and persisted; once the grace period is over
    /// the previous key is zeroized and its file wiped. Jumps over several epochs
    /// land directly on the right ring. A clock that went backwards changes
    /// nothing.
    ///
    /// On error the ring in memory is unchanged; keys already written stay on
    /// disk (they are found and reused by the retry), files already wiped stay
    /// wiped (and are reported by the rotation that succeeds).
    pub fn rotate(&mut self, now_unix: u64, rng: &mut (impl RngCore + CryptoRng)) -> Result<Rotation, EpochError> {
        let now_epoch = self.clock.epoch_at(now_unix);
        if now_epoch < self.current.epoch {
            tracing::warn!(now_epoch, current = self.current.epoch, "clock is behind the current epoch; keys kept");
            return Ok(Rotation::default());
        }
        if !self.rotation_due(now_unix) {
            return Ok(Rotation::default());
        }
        let keep_previous = self.clock.secs_into_epoch(now_unix) < self.grace_secs;
        let (old_current, old_next) = (self.current.epoch, self.next.epoch);
        // Only a settled ring, its new keys durable, replaces the held keys.
        let held = self.held().map(|k| EpochKey { epoch: k.epoch, secret: k.secret.clone() }).collect();
        let s = settle(&self.store, held, &mut self.wiped_unreported, now_epoch, keep_previous, now_unix, rng)?;
        self.previous = s.previous;
        self.current = s.current;
        self.next = s.next;
        let rotation = Rotation {
            new_current: (self.current.epoch != old_current).then_some(self.current.epoch),
            new_next: (self.next.epoch != old_next).then_some(self.next.epoch),
            retired: s.retired,
        };
        tracing::info!(
            current = self.current.epoch,
            next = self.next.epoch,
            previous = ?self.previous_epoch(),
            retired = ?rotation.retired,
            "epoch keys rotated"
        );
        Ok(rotation)
    }

    /// Whether [`EpochKeyRing::rotate`] would change anything at `now_unix`: a
    /// new epoch has begun, or the previous key's grace period is over. Cheap,
    /// so callers can ask under a read lock and take the write lock only then.
    pub fn rotation_due(&self, now_unix: u64) -> bool {
        let now_epoch = self.clock.epoch_at(now_unix);
        let keep_previous = self.clock.secs_into_epoch(now_unix) < self.grace_secs;
        now_epoch > self.current.epoch || (!keep_previous && self.previous.is_some())
    }

    /// Signed descriptors for the current and the next epoch, in that order;
    /// an exit lists its `services` (`RequestKind::mask_of`) and, if it
    /// relays paid calls, its `fee_policy`; a relay passes 0 and `None`.
    pub fn descriptors(
        &self,
        identity: &SigningKey,
        layer: u8,
        role: u8,
        services: u16,
        addresses: &[String],
        fee_policy: Option<&FeePolicy>,
    ) -> Result<Vec<MixDescriptor>, EpochError> {
        [&self.current, &self.next]
            .into_iter()
            .map(|k| {
                let key = k.secret.public_key();
                MixDescriptor::sign_exit(
                    identity,
                    k.epoch,
                    key,
                    layer,
                    role,
                    services,
                    addresses.to_vec(),
                    fee_policy.cloned(),
                )
                .map_err(EpochError::from)
            })
            .collect()
    }

    fn held(&self) -> impl Iterator<Item = &EpochKey> {
        self.previous.iter().chain([&self.current, &self.next])
    }
}

/// Makes `target` current and `target + 1` next (reusing held keys, else stored
/// ones, else fresh ones written durably), keeps `target - 1` as previous if
/// `keep_previous` and the key exists, then wipes every stored key older than
/// what is kept. Returns the ring and the retired epochs: held keys not kept,
/// and every file wiped now or by an earlier failed call (`wiped`, drained on
/// success).
///
/// New keys are written before anything is wiped, so an error leaves every key
/// the caller still holds on disk.
fn settle(
    store: &EpochKeyStore,
    held: Vec<EpochKey>,
    wiped: &mut Vec<u64>,
    target: u64,
    keep_previous: bool,
    now_unix: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Settled, EpochError> {
    let next_epoch = target.checked_add(1).ok_or(EpochError::ClockOutOfRange { now_unix })?;
    let previous_epoch = target.checked_sub(1).filter(|_| keep_previous);
    let oldest_kept = previous_epoch.unwrap_or(target);

    let stored = store.epochs()?;
    let previous = match previous_epoch {
        Some(epoch) => lookup(store, &held, epoch)?,
        None => None,
    };
    let current = lookup_or_create(store, &held, target, rng)?;
    let next = lookup_or_create(store, &held, next_epoch, rng)?;
    for epoch in stored.range(..oldest_kept) {
        store.wipe(*epoch)?;
        wiped.push(*epoch);
    }

    let mut retired: Vec<u64> = held.iter().map(|k| k.epoch).filter(|e| *e < oldest_kept).collect();
    retired.append(wiped);
    // `held`, and with it every retired secret, is dropped here and zeroized.
    drop(held);
    retired.sort_unstable();
    retired.dedup();
    Ok(Settled { previous, current, next, retired })
}

/// The key of `epoch` from the held ones, else from the store.
fn lookup(store: &EpochKeyStore, held: &[EpochKey], epoch: u64) -> Result<Option<EpochKey>, EpochError> {
    if let Some(k) = held.iter().find(|k| k.epoch == epoch) {
        return Ok(Some(EpochKey { epoch, secret: k.secret.clone() }));
    }
    Ok(store.load(epoch)?.map(|secret| EpochKey { epoch, secret }))
}

/// [`lookup`], or a fresh key, durable in the store before it is returned.
fn lookup_or_create(
    store: &EpochKeyStore,
    held: &[EpochKey],
    epoch: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<EpochKey, EpochError> {
    if let Some(key) = lookup(store, held, epoch)? {
        return Ok(key);
    }
    let secret = MixSecretKey::generate(rng);
    store.store(epoch, &secret)?;
    Ok(EpochKey { epoch, secret })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use nox_protocol::crypto::x25519::MixPublicKey;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    const EPOCH: u64 = 10;
    const GRACE: u64 = 3;

    struct Fixture {
        _dir: tempfile::TempDir,
        key_dir: std::path::PathBuf,
        rng: ChaCha20Rng,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let key_dir = crate::epoch_store::epoch_keys_dir(dir.path());
            Fixture { _dir: dir, key_dir, rng: ChaCha20Rng::seed_from_u64(7) }
        }

        /// The key directory, as a restarted node finds it.
        fn dir(&self) -> std::path::PathBuf {
            self.key_dir.clone()
        }

        fn ring(&mut self, dir: &Path, now: u64) -> EpochKeyRing {
            EpochKeyRing::open(dir, EpochClock::new(EPOCH).unwrap(), GRACE, now, &mut self.rng).unwrap()
        }
    }

    fn stored(dir: &Path) -> BTreeSet<u64> {
        EpochKeyStore::open(dir).unwrap().epochs().unwrap()
    }

    fn public(ring: &EpochKeyRing, parity: Parity, now: u64) -> (u64, MixPublicKey) {
        let (epoch, key) = ring.key_for(parity, now).unwrap();
        (epoch, key.public_key())
    }

    #[test]
    fn open_generates_and_persists_current_and_next() {
        let mut f = Fixture::new();
        let dir = f.dir();
        let ring = f.ring(&dir, 105);
        assert_eq!((ring.previous_epoch(), ring.current_epoch(), ring.next_epoch()), (None, 10, 11));
        assert_eq!(ring.live_epochs(), vec![10, 11]);
        assert_eq!(stored(&dir), BTreeSet::from([10, 11]));
        assert!(matches!(
            EpochKeyRing::open(&dir, EpochClock::new(EPOCH).unwrap(), EPOCH, 105, &mut f.rng),
            Err(EpochError::GraceTooLong { grace_secs: 10, epoch_secs: 10 })
        ));
    }

    #[test]
    fn rotation_order_and_grace_boundary() {
        let mut f = Fixture::new();
        let dir = f.dir();
        let mut ring = f.ring(&dir, 105);
        let k10 = public(&ring, Parity::of_epoch(10), 105).1;
        let k11 = public(&ring, Parity::of_epoch(11), 105).1;
        assert_ne!(k10, k11);
        assert!(ring.rotate(109, &mut f.rng).unwrap().is_empty());

        // Epoch 11 starts: 10 becomes previous, 11 current, 12 is new.
        let r = ring.rotate(110, &mut f.rng).unwrap();
        assert_eq!(r, Rotation { new_current: Some(11), new_next: Some(12), retired: vec![] });
        assert_eq!((ring.previous_epoch(), ring.current_epoch(), ring.next_epoch()), (Some(10), 11, 12));
        assert_eq!(stored(&dir), BTreeSet::from([10, 11, 12]));
        assert_eq!(public(&ring, Parity::of_epoch(11), 110), (11, k11), "next became current");
        let k12 = ring.descriptors(&SigningKey::from_bytes(&[1; 32]), 0, 0, 0, &[], None).unwrap()[1].mix_key;

        // Even parity (10 and 12): previous strictly inside the grace period,
        // next from its last second on.
        let even = Parity::of_epoch(10);
        assert_eq!(public(&ring, even, 110), (10, k10));
        assert_eq!(public(&ring, even, 112), (10, k10));
        assert_eq!(public(&ring, even, 113), (12, k12));
        assert!(ring.rotate(112, &mut f.rng).unwrap().is_empty());
        assert_eq!(ring.previous_epoch(), Some(10));

        // The grace period ends exactly at start + grace: the key is retired.
        let r = ring.rotate(113, &mut f.rng).unwrap();
        assert_eq!(r, Rotation { new_current: None, new_next: None, retired: vec![10] });
        assert_eq!(ring.previous_epoch(), None);
        assert_eq!(stored(&dir), BTreeSet::from([11, 12]));
        assert_eq!(public(&ring, even, 113), (12, k12));
        assert!(ring.rotate(119, &mut f.rng).unwrap().is_empty());
    }

    #[test]
    fn parity_selection_around_the_boundary() {
        let mut f = Fixture::new();
        let dir = f.dir();
        let mut ring = f.ring(&dir, 119);
        let (p11, p12) = (Parity::of_epoch(11), Parity::of_epoch(12));
        assert_ne!(p11, p12);
        // Last second of epoch 11: its own parity → 11; the other → next (12),
        // which a client with a fast clock may already use.
        assert_eq!(public(&ring, p11, 119).0, 11);
        assert_eq!(public(&ring, p12, 119).0, 12);
        ring.rotate(120, &mut f.rng).unwrap();
        // First seconds of epoch 12: 12's parity → 12; 11's parity → previous
        // until the grace period ends, then 13.
        assert_eq!(public(&ring, p12, 120).0, 12);
        assert_eq!(public(&ring, p11, 120).0, 11);
        assert_eq!(public(&ring, p11, 122).0, 11);
        assert_eq!(public(&ring, p11, 123).0, 13);
        // A ring that was not rotated for two epochs refuses to answer.
        assert!(ring.key_for(p11, 139).is_some());
        assert!(ring.key_for(p11, 140).is_none());
    }

    #[test]
    fn jump_over_several_epochs_deletes_old_keys() {
        let mut f = Fixture::new();
        let dir = f.dir();
        let mut ring = f.ring(&dir, 105);
        ring.rotate(110, &mut f.rng).unwrap();
        assert_eq!(ring.live_epochs(), vec![10, 11, 12]);

        // Two epochs later, inside the grace period: the old next (12) is kept as
        // previous, 10 and 11 go.
        let k12 = public(&ring, Parity::of_epoch(12), 119).1;
        let r = ring.rotate(130, &mut f.rng).unwrap();
        assert_eq!(r, Rotation { new_current: Some(13), new_next: Some(14), retired: vec![10, 11] });
        assert_eq!(ring.live_epochs(), vec![12, 13, 14]);
        assert_eq!(public(&ring, Parity::of_epoch(12), 130), (12, k12));

        // Down for a long time: straight to epoch 100, nothing old survives.
        let r = ring.rotate(1001, &mut f.rng).unwrap();
        assert_eq!(r, Rotation { new_current: Some(100), new_next: Some(101), retired: vec![12, 13, 14] });
        assert_eq!(ring.live_epochs(), vec![100, 101]);
        assert_eq!(stored(&dir), BTreeSet::from([100, 101]));

        // A clock that steps back changes nothing.
        assert!(ring.rotate(500, &mut f.rng).unwrap().is_empty());
        assert_eq!(ring.live_epochs(), vec![100, 101]);
    }

    #[test]
    fn keys_survive_reopen_and_retired_keys_stay_gone() {
        let mut f = Fixture::new();
        let (k10, k11) = {
            let dir = f.dir();
            let ring = f.ring(&dir, 105);
            (public(&ring, Parity::of_epoch(10), 105).1, public(&ring, Parity::of_epoch(11), 105).1)
        };
        // Same epoch after a restart: the published keys come back.
        {
            let dir = f.dir();
            let ring = f.ring(&dir, 108);
            assert_eq!(public(&ring, Parity::of_epoch(10), 108), (10, k10));
            assert_eq!(public(&ring, Parity::of_epoch(11), 108), (11, k11));
        }
        // Restart inside the next epoch's grace period: 10 is kept as previous.
        let k12 = {
            let dir = f.dir();
            let ring = f.ring(&dir, 111);
            assert_eq!(ring.live_epochs(), vec![10, 11, 12]);
            assert_eq!(public(&ring, Parity::of_epoch(10), 111), (10, k10));
            assert_eq!(public(&ring, Parity::of_epoch(11), 111), (11, k11));
            public(&ring, Parity::of_epoch(12), 113).1
        };
        // Restart after the grace period: 10 is deleted on open, 12 comes back.
        let dir = f.dir();
        let ring = f.ring(&dir, 113);
        assert_eq!(ring.live_epochs(), vec![11, 12]);
        assert_eq!(public(&ring, Parity::of_epoch(12), 113), (12, k12));
        assert_eq!(stored(&dir), BTreeSet::from([11, 12]));
        drop(ring);
        drop(dir);
        let dir = f.dir();
        assert!(!stored(&dir).contains(&10));
    }

    #[test]
    fn future_keys_from_a_clock_that_stepped_back_are_kept_and_reused() {
        let mut f = Fixture::new();
        let dir = f.dir();
        let k51 = {
            let ring = f.ring(&dir, 505);
            public(&ring, Parity::of_epoch(51), 505).1
        };
        // The clock was wrong; the node restarts at epoch 10. Keys 50 and 51 are
        // published and not yet used: they stay on disk.
        let mut ring = f.ring(&dir, 105);
        assert_eq!(stored(&dir), BTreeSet::from([10, 11, 50, 51]));
        assert_eq!(ring.stored_epochs().unwrap(), vec![10, 11, 50, 51]);
        assert_eq!(ring.live_epochs(), vec![10, 11]);
        ring.rotate(505, &mut f.rng).unwrap();
        assert_eq!(public(&ring, Parity::of_epoch(51), 505), (51, k51));
    }

    #[test]
    fn descriptors_cover_current_and_next_and_verify() {
        let mut f = Fixture::new();
        let dir = f.dir();
        let ring = f.ring(&dir, 105);
        let identity = SigningKey::from_bytes(&[9; 32]);
        let addrs = vec!["/ip4/127.0.0.1/tcp/9000".to_owned()];
        let ds = ring.descriptors(&identity, 1, 0, 0, &addrs, None).unwrap();
        assert_eq!(ds.iter().map(|d| d.epoch).collect::<Vec<_>>(), vec![10, 11]);
        for d in &ds {
            d.verify().unwrap();
            assert_eq!(d.mix_key, public(&ring, Parity::of_epoch(d.epoch), 105).1);
            assert_eq!(d.addresses, addrs);
        }
        assert!(matches!(ring.descriptors(&identity, 7, 0, 0, &addrs, None), Err(EpochError::Descriptor(_))));
    }
}
