//! Forward secrecy at rest, tried as someone who takes the disk later would:
//! after the key ring has run through rotations, jumps and restarts, no byte
//! string of a retired epoch key — neither its secret nor its public key — may
//! be found in any file of the data directory, while the live keys still load.
//! Damaged or foreign files in the key directory stop the ring with an error
//! naming them, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nox_node::epoch::{EpochError, EpochKeyRing};
use nox_node::epoch_store::{EPOCH_KEYS_DIR, EpochStoreError, KEY_FILE_LEN, epoch_keys_dir};
use nox_node::store::{DATABASE_FILE, open_database};
use nox_protocol::descriptor::EpochClock;
use nox_protocol::sphinx::Parity;
use redb::{ReadableDatabase, TableDefinition, TableHandle};

const EPOCH: u64 = 10;
const GRACE: u64 = 3;

/// The secret and public bytes of one epoch key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Seen {
    secret: [u8; 32],
    public: [u8; 32],
}

struct Node {
    data: PathBuf,
    db: Option<Arc<redb::Database>>,
    ring: Option<EpochKeyRing>,
}

impl Node {
    /// Starts (or restarts) the node's storage at `now`, as `nox run` does.
    fn start(data: &Path, now: u64) -> Result<Node, EpochError> {
        let db = open_database(&data.join(DATABASE_FILE)).unwrap();
        let ring = EpochKeyRing::open(
            &epoch_keys_dir(data),
            EpochClock::new(EPOCH).unwrap(),
            GRACE,
            now,
            &mut rand::rngs::OsRng,
        )?;
        Ok(Node { data: data.to_owned(), db: Some(db), ring: Some(ring) })
    }

    fn ring(&mut self) -> &mut EpochKeyRing {
        self.ring.as_mut().unwrap()
    }

    fn stop(mut self) -> PathBuf {
        self.ring.take();
        self.db.take();
        self.data.clone()
    }

    /// Records the key of every epoch the ring holds at `now`.
    fn record(&mut self, now: u64, seen: &mut BTreeMap<u64, Seen>) {
        let ring = self.ring();
        for epoch in ring.live_epochs() {
            let (e, key) = ring.key_for(Parity::of_epoch(epoch), key_time(ring, epoch, now)).unwrap();
            assert_eq!(e, epoch);
            let s = Seen { secret: key.to_bytes(), public: key.public_key().0 };
            assert_eq!(*seen.entry(epoch).or_insert(s), s, "epoch {epoch}'s key changed");
        }
    }
}

/// A time at which `key_for` answers with `epoch`'s key: `now` for the current
/// epoch and the previous (inside the grace period); for next, a time after
/// the grace period within the current epoch.
fn key_time(ring: &EpochKeyRing, epoch: u64, now: u64) -> u64 {
    if epoch == ring.next_epoch() { ring.current_epoch() * EPOCH + GRACE } else { now }
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let t = entry.file_type().unwrap();
        if t.is_dir() {
            out.extend(files_under(&entry.path()));
        } else if t.is_file() {
            out.push(entry.path());
        }
    }
    out
}

/// The files under `dir` whose raw bytes contain `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|f| std::fs::read(f).unwrap().windows(needle.len()).any(|w| w == needle))
        .collect()
}

#[test]
fn no_retired_key_remains_anywhere_in_the_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut seen = BTreeMap::new();

    let mut node = Node::start(&data, 1005).unwrap();
    node.record(1005, &mut seen);
    // Epoch by epoch through the grace periods: 100 → 101 → 102 → 103.
    for now in [1010, 1012, 1013, 1020, 1021, 1023, 1030, 1031] {
        node.ring().rotate(now, &mut rand::rngs::OsRng).unwrap();
        node.record(now, &mut seen);
    }
    assert_eq!(node.ring().live_epochs(), vec![102, 103, 104]);
    // A restart inside the grace period, then one after it.
    let data = node.stop();
    let mut node = Node::start(&data, 1032).unwrap();
    node.record(1032, &mut seen);
    let data = node.stop();
    let mut node = Node::start(&data, 1034).unwrap();
    node.record(1034, &mut seen);
    assert_eq!(node.ring().live_epochs(), vec![103, 104]);
    // Down for a while, then a jump over several epochs.
    for now in [1040, 1070, 1071, 1075] {
        node.ring().rotate(now, &mut rand::rngs::OsRng).unwrap();
        node.record(now, &mut seen);
    }
    let live = node.ring().live_epochs();
    assert_eq!(live, vec![107, 108]);
    let data = node.stop();

    let retired: Vec<u64> = seen.keys().copied().filter(|e| !live.contains(e)).collect();
    // 106 was jumped over: never made, never on disk.
    assert_eq!(retired, (100..=105).collect::<Vec<_>>());
    for epoch in &retired {
        let s = seen[epoch];
        assert_eq!(files_holding(&data, &s.secret), Vec::<PathBuf>::new(), "secret of retired epoch {epoch}");
        assert_eq!(files_holding(&data, &s.public), Vec::<PathBuf>::new(), "public key of retired epoch {epoch}");
    }
    // The scan does see keys where they are: each live secret, in its file.
    for epoch in &live {
        let holding = files_holding(&data, &seen[epoch].secret);
        assert_eq!(holding, vec![data.join(EPOCH_KEYS_DIR).join(format!("{epoch}.key"))], "live epoch {epoch}");
    }
    assert!(files_under(&data).contains(&data.join(DATABASE_FILE)), "the database was scanned too");

    // The live keys come back after the restart.
    let mut node = Node::start(&data, 1075).unwrap();
    assert_eq!(node.ring().live_epochs(), live);
    node.record(1075, &mut seen);
}

/// The table older nodes kept their keys in.
const OLD_TABLE: TableDefinition<'static, u64, [u8; 32]> = TableDefinition::new("epoch_keys");

#[test]
fn keys_an_older_node_kept_in_the_database_move_out_and_are_then_wiped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let old: BTreeMap<u64, [u8; 32]> = (99..=101).map(|e| (e, [e as u8; 32])).collect();
    {
        let db = redb::Database::create(data.join(DATABASE_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(OLD_TABLE).unwrap();
            for (e, k) in &old {
                t.insert(e, k).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    for (e, k) in &old {
        assert_eq!(
            files_holding(&data, k),
            vec![data.join(DATABASE_FILE)],
            "the scan finds epoch {e} in the old table"
        );
    }

    // Restarted inside epoch 100's grace period: 99 is previous, 100 and 101
    // are the keys the node published before the upgrade.
    let mut node = Node::start(&data, 1001).unwrap();
    assert_eq!(node.ring().live_epochs(), vec![99, 100, 101]);
    for (e, k) in &old {
        let now = key_time(node.ring.as_ref().unwrap(), *e, 1001);
        assert_eq!(&node.ring().key_for(Parity::of_epoch(*e), now).unwrap().1.to_bytes(), k, "epoch {e}");
    }
    {
        let db = node.db.as_ref().unwrap();
        let txn = db.begin_read().unwrap();
        let tables: Vec<String> = txn.list_tables().unwrap().map(|t| t.name().to_owned()).collect();
        assert!(!tables.contains(&"epoch_keys".to_owned()), "{tables:?}");
    }

    // The ring moves on; the moved keys are retired from the key directory.
    for now in [1003, 1010, 1013, 1020, 1023] {
        node.ring().rotate(now, &mut rand::rngs::OsRng).unwrap();
    }
    assert_eq!(node.ring().live_epochs(), vec![102, 103]);
    let data = node.stop();
    let key_dir = data.join(EPOCH_KEYS_DIR);
    for (e, k) in &old {
        assert_eq!(files_holding(&key_dir, k), Vec::<PathBuf>::new(), "epoch {e}");
    }
    // What redb freed is not overwritten: say how much of the old keys the
    // compacted database file still holds (documented, not guaranteed either way).
    let left = old.values().filter(|k| !files_holding(&data, &k[..]).is_empty()).count();
    eprintln!("old keys still readable in the compacted database file: {left} of {}", old.len());
}

#[test]
fn damaged_and_foreign_key_files_stop_the_ring_with_a_named_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data = Node::start(&data, 1005).unwrap().stop();
    let key_dir = data.join(EPOCH_KEYS_DIR);
    let current = key_dir.join("100.key");
    let good = std::fs::read(&current).unwrap();
    assert_eq!(good.len(), KEY_FILE_LEN);

    // Truncated, as a full disk or a careless copy would leave it.
    std::fs::write(&current, &good[..KEY_FILE_LEN / 2]).unwrap();
    match Node::start(&data, 1006) {
        Err(EpochError::Store(EpochStoreError::Corrupt { path, reason })) => {
            assert_eq!(path, current);
            assert!(reason.contains("40 bytes"), "{reason}");
        }
        other => panic!("truncated key file: {:?}", other.map(|_| ())),
    }
    // One flipped bit in the secret.
    let mut flipped = good.clone();
    flipped[20] ^= 0x10;
    std::fs::write(&current, &flipped).unwrap();
    assert!(matches!(
        Node::start(&data, 1006).map(|_| ()),
        Err(EpochError::Store(EpochStoreError::Corrupt { path, .. })) if path == current
    ));
    // Epoch 101's file renamed to 100: the epoch inside does not match.
    std::fs::write(&current, std::fs::read(key_dir.join("101.key")).unwrap()).unwrap();
    assert!(matches!(Node::start(&data, 1006).map(|_| ()), Err(EpochError::Store(EpochStoreError::Corrupt { .. }))));
    std::fs::write(&current, &good).unwrap();

    // An operator's backup copy of a key is refused, not silently kept.
    let backup = key_dir.join("100.key.bak");
    std::fs::write(&backup, &good).unwrap();
    match Node::start(&data, 1006) {
        Err(e @ EpochError::Store(EpochStoreError::Foreign { .. })) => {
            assert!(e.to_string().contains("100.key.bak"), "{e}");
        }
        other => panic!("foreign file: {:?}", other.map(|_| ())),
    }
    std::fs::remove_file(&backup).unwrap();

    // Repaired, the node starts with the keys it had.
    let mut node = Node::start(&data, 1006).unwrap();
    assert_eq!(node.ring().key_for(Parity::of_epoch(100), 1006).unwrap().1.to_bytes()[..], good[16..48]);
}
