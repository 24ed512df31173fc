//! A clock set back across a restart, then forward again: a packet this node
//! peeled before the clock went back is still refused as a replay when the
//! clock catches up. The node's key ring keeps the keys of the epochs ahead
//! (they may be published); their replay logs must stay with them.
//!
//! The ring and the cache are opened as `node::start` opens them (the epochs
//! of [`epochs_to_keep`]), and the packet goes through the worker's steps:
//! the key the parity names, `peel_header`, the replay tag.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nox_node::epoch::EpochKeyRing;
use nox_node::epoch_store::epoch_keys_dir;
use nox_node::replay::{ReplayCache, ReplayError, epochs_to_keep};
use nox_node::replay_log::replay_dir;
use nox_node::store::open_database;
use nox_protocol::NodeId;
use nox_protocol::descriptor::EpochClock;
use nox_protocol::sphinx::{Hop, Packet, PacketBuilder, Parity};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

const EPOCH_SECS: u64 = 3_600;
const GRACE_SECS: u64 = 600;
/// Where the clock was first: well into epoch 50 (past the grace period).
const AHEAD: u64 = 50 * EPOCH_SECS + 1_000;
/// Where it was set back to.
const BACK: u64 = 10 * EPOCH_SECS + 1_000;

/// The node as `node::start` opens it at `now`: the key ring, then the replay
/// cache with the logs of every stored key.
fn open_node(dir: &Path, now: u64, rng: &mut ChaCha20Rng) -> (Arc<redb::Database>, EpochKeyRing, ReplayCache) {
    let db = open_database(&dir.join("db")).unwrap();
    let clock = EpochClock::new(EPOCH_SECS).unwrap();
    let ring = EpochKeyRing::open(&epoch_keys_dir(dir), clock, GRACE_SECS, now, rng).unwrap();
    let cache = ReplayCache::open(
        &replay_dir(dir),
        Some(&db),
        1_000,
        Duration::from_millis(2),
        &epochs_to_keep(&ring).unwrap(),
    )
    .unwrap();
    (db, ring, cache)
}

/// The worker's replay check for `packet` at `now`: `None` if no key opens it.
fn check(ring: &EpochKeyRing, cache: &ReplayCache, packet: &Packet, now: u64) -> Option<Result<u64, ReplayError>> {
    let (epoch, key) = ring.key_for(packet.parity(), now)?;
    let peeled = packet.peel_header(key).ok()?;
    Some(cache.check_and_insert(epoch, &peeled.replay_tag().0))
}

#[test]
fn a_clock_set_back_across_a_restart_does_not_reopen_replays() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(5);

    // The clock is ahead: a client builds a packet for this node's key of
    // epoch 50, and the node processes it.
    let packet = {
        let (_db, ring, cache) = open_node(dir.path(), AHEAD, &mut rng);
        let (epoch, key) = ring.key_for(Parity::of_epoch(50), AHEAD).unwrap();
        assert_eq!(epoch, 50);
        let hop = Hop { id: NodeId([7; 32]), key: key.public_key(), delay_us: 0 };
        let (_, packet) = PacketBuilder::new(50).forward(&[hop], b"once", &mut rng).unwrap();
        let seq = check(&ring, &cache, &packet, AHEAD).unwrap().unwrap();
        assert!(cache.wait_durable(seq, Duration::from_secs(10)));
        assert!(matches!(check(&ring, &cache, &packet, AHEAD), Some(Err(ReplayError::Replayed))));
        cache.shutdown().unwrap();
        packet
    };

    // The clock is set back to epoch 10 and the node restarts: the keys of 50
    // and 51 stay stored, and so does epoch 50's replay log.
    let (db, mut ring, cache) = open_node(dir.path(), BACK, &mut rng);
    assert_eq!(ring.current_epoch(), 10);
    assert!(ring.stored_epochs().unwrap().contains(&50));
    assert_eq!(cache.len(50), 1, "the log of a stored key was kept");

    // The clock catches up while the node runs: the ring moves to epoch 50,
    // reusing the stored key, and the node drops the caches of the keys it
    // retired (as the control task does).
    let rotation = ring.rotate(AHEAD, &mut rng).unwrap();
    assert_eq!(rotation.new_current, Some(50));
    for e in rotation.new_current.iter().chain(&rotation.new_next) {
        cache.add_epoch(*e);
    }
    for e in &rotation.retired {
        cache.drop_epoch(*e).unwrap();
    }
    let replayed = check(&ring, &cache, &packet, AHEAD);
    assert!(matches!(replayed, Some(Err(ReplayError::Replayed))), "the old packet was accepted again: {replayed:?}");
    cache.shutdown().unwrap();
    drop((cache, ring, db));

    // And after another restart at the right time.
    let (_db, ring, cache) = open_node(dir.path(), AHEAD, &mut rng);
    assert!(matches!(check(&ring, &cache, &packet, AHEAD), Some(Err(ReplayError::Replayed))));
}
