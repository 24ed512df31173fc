#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nox_mail::smtp::{Envelope, Spool, SpoolError};
use redb::{Database, ReadableDatabase, ReadableTable};

use super::queue::{SCHEDULE, SEALED};
use super::*;

const PW: &str = "correct horse";

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn envelope(body: &str) -> Envelope {
    Envelope {
        mail_from: "alice@example.org".into(),
        rcpt_to: vec!["bob@example.org".into(), "carol@example.net".into()],
        data: format!("Subject: test\r\n\r\n{body}\r\n").into_bytes(),
        authenticated: true,
    }
}

fn open(path: &Path, limits: QueueLimits) -> MailQueue {
    MailQueue::open(path, PW, KdfParams::insecure_fast(), limits).unwrap()
}

fn queue_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("mail-queue.redb")
}

#[test]
fn test_an_accepted_message_survives_a_crash_and_opens_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = queue_path(&dir);
    let sent = envelope("hello\r\n.leading dot\r\n\u{e9}t\u{e9}");
    let id = {
        let queue = open(&path, QueueLimits::default());
        queue.enqueue(&sent, t(0)).unwrap()
        // Dropped with no shutdown of any kind.
    };
    let queue = open(&path, QueueLimits::default());
    let due = queue.due(t(0)).unwrap();
    assert!(due.corrupt.is_empty());
    assert_eq!(due.mail.len(), 1);
    let mail = &due.mail[0];
    assert_eq!(mail.id, id);
    assert_eq!(mail.envelope.data, sent.data);
    assert_eq!(mail.envelope.rcpt_to, sent.rcpt_to);
    assert_eq!(mail.envelope.mail_from, None, "MAIL FROM is not kept unless asked");
    assert_eq!((mail.created, mail.attempts), (t(0), 0));
    assert_eq!(queue.get(id).unwrap(), *mail);
}

#[test]
fn test_mail_from_is_kept_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&queue_path(&dir), QueueLimits::default()).keep_mail_from(true);
    let id = queue.enqueue(&envelope("x"), t(0)).unwrap();
    assert_eq!(queue.get(id).unwrap().envelope.mail_from.as_deref(), Some("alice@example.org"));
}

#[test]
fn test_revert_when_the_passphrase_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = queue_path(&dir);
    open(&path, QueueLimits::default()).enqueue(&envelope("x"), t(0)).unwrap();
    let err = MailQueue::open(&path, "battery staple", KdfParams::insecure_fast(), QueueLimits::default()).unwrap_err();
    assert!(matches!(err, MailQueueError::WrongPassphrase), "{err:?}");
    // The right one still opens it, with the parameters it was created with.
    let queue = MailQueue::open(&path, PW, KdfParams::default(), QueueLimits::default()).unwrap();
    assert_eq!(queue.list().unwrap().len(), 1);
}

#[test]
fn test_the_file_holds_no_plaintext_of_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = queue_path(&dir);
    let marker = "MARKER-5c1e0d7a-the-secret-body";
    {
        let queue = open(&path, QueueLimits::default()).keep_mail_from(true);
        let mut sent = envelope(marker);
        sent.mail_from = "sender-marker-77@example.org".into();
        sent.rcpt_to = vec!["rcpt-marker-99@example.org".into()];
        queue.enqueue(&sent, t(0)).unwrap();
    }
    let raw = std::fs::read(&path).unwrap();
    for needle in [marker, "sender-marker-77", "rcpt-marker-99", "example.org", "Subject: test"] {
        assert!(!raw.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle:?} is in the file in clear");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn test_revert_when_the_entry_limit_is_reached_and_nothing_accepted_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = queue_path(&dir);
    let limits = QueueLimits { max_entries: 3, ..QueueLimits::default() };
    let queue = open(&path, limits);
    let ids: Vec<_> = (0..3).map(|i| queue.enqueue(&envelope(&format!("m{i}")), t(i)).unwrap()).collect();
    let err = queue.enqueue(&envelope("one too many"), t(9)).unwrap_err();
    assert!(matches!(err, MailQueueError::Full { entries: 3, .. }), "{err:?}");
    drop(queue);
    // The limit holds across a restart, and the three are all there.
    let queue = open(&path, limits);
    assert!(matches!(queue.enqueue(&envelope("still full"), t(9)), Err(MailQueueError::Full { .. })));
    let mut found: Vec<_> = queue.due(t(10)).unwrap().mail.into_iter().map(|m| m.id).collect();
    let mut ids = ids;
    found.sort();
    ids.sort();
    assert_eq!(found, ids);
    // Acknowledging one makes room for one.
    queue.acknowledge(ids[0]).unwrap();
    queue.enqueue(&envelope("now it fits"), t(11)).unwrap();
}

#[test]
fn test_revert_when_the_byte_limit_is_reached_and_nothing_accepted_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = queue_path(&dir);
    let body = "b".repeat(1000);
    let probe = open(&dir.path().join("probe.redb"), QueueLimits::default());
    probe.enqueue(&envelope(&body), t(0)).unwrap();
    let one = probe.list().unwrap()[0].bytes;
    let limits = QueueLimits { max_entries: 100, max_bytes: 2 * one + one / 2 };
    let queue = open(&path, limits);
    queue.enqueue(&envelope(&body), t(0)).unwrap();
    queue.enqueue(&envelope(&body), t(1)).unwrap();
    let err = queue.enqueue(&envelope(&body), t(2)).unwrap_err();
    assert!(matches!(err, MailQueueError::Full { entries: 2, bytes } if bytes == 2 * one), "{err:?}");
    // A message that could never fit is TooLarge, not Full.
    let huge = envelope(&"h".repeat(3 * one as usize));
    assert!(matches!(queue.enqueue(&huge, t(3)), Err(MailQueueError::TooLarge { .. })));
    drop(queue);
    let queue = open(&path, limits);
    assert_eq!(queue.due(t(5)).unwrap().mail.len(), 2);
    assert!(matches!(queue.enqueue(&envelope(&body), t(2)), Err(MailQueueError::Full { .. })));
}

#[test]
fn test_acknowledge_deletes_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = queue_path(&dir);
    let queue = open(&path, QueueLimits::default());
    let gone = queue.enqueue(&envelope("delivered"), t(0)).unwrap();
    let kept = queue.enqueue(&envelope("not yet"), t(0)).unwrap();
    queue.acknowledge(gone).unwrap();
    assert!(matches!(queue.acknowledge(gone), Err(MailQueueError::UnknownEntry(id)) if id == gone));
    assert!(matches!(queue.get(gone), Err(MailQueueError::UnknownEntry(_))));
    drop(queue);
    let queue = open(&path, QueueLimits::default());
    let ids: Vec<_> = queue.list().unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(ids, vec![kept]);
}

#[test]
fn test_attempts_schedule_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&queue_path(&dir), QueueLimits::default());
    let old = queue.enqueue(&envelope("old"), t(0)).unwrap();
    let new = queue.enqueue(&envelope("new"), t(100)).unwrap();
    assert_eq!(queue.due(t(50)).unwrap().mail.len(), 1);
    queue.mark_attempt(old, t(200)).unwrap();
    let due: Vec<_> = queue.due(t(150)).unwrap().mail.into_iter().map(|m| m.id).collect();
    assert_eq!(due, vec![new]);
    let due = queue.due(t(200)).unwrap().mail;
    assert_eq!(due.iter().map(|m| (m.id, m.attempts)).collect::<Vec<_>>(), vec![(new, 0), (old, 1)]);

    let expired = queue.give_up_expired(t(1000), Duration::from_secs(950)).unwrap();
    assert_eq!(expired.iter().map(|i| (i.id, i.state)).collect::<Vec<_>>(), vec![(old, EntryState::Expired)]);
    assert!(queue.give_up_expired(t(1000), Duration::from_secs(950)).unwrap().is_empty());
    let due: Vec<_> = queue.due(t(5000)).unwrap().mail.into_iter().map(|m| m.id).collect();
    assert_eq!(due, vec![new], "an expired entry is never due");
    let list = queue.list().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[0].id, list[0].attempts, list[0].next_attempt, list[0].state),
        (old, 1, t(200), EntryState::Expired)
    );
    assert_eq!((list[1].id, list[1].created, list[1].state), (new, t(100), EntryState::Waiting));
    queue.discard(old).unwrap();
    assert_eq!(queue.list().unwrap().len(), 1);
}

/// Changes the stored bytes of `id` with `change`, behind the queue's back.
fn tamper(path: &Path, id: MailId, change: impl FnOnce(&mut Vec<u8>)) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut sealed = txn.open_table(SEALED).unwrap();
        let mut record = sealed.get(id.0).unwrap().unwrap().value().to_vec();
        change(&mut record);
        sealed.insert(id.0, record.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn test_a_tampered_entry_is_reported_and_the_others_still_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = queue_path(&dir);
    let (bad, good) = {
        let queue = open(&path, QueueLimits::default());
        (queue.enqueue(&envelope("bad"), t(0)).unwrap(), queue.enqueue(&envelope("good"), t(0)).unwrap())
    };
    tamper(&path, bad, |r| {
        let last = r.len() - 20;
        r[last] ^= 0x01;
    });
    let queue = open(&path, QueueLimits::default());
    let due = queue.due(t(1)).unwrap();
    assert_eq!(due.corrupt, vec![bad]);
    assert_eq!(due.mail.iter().map(|m| m.id).collect::<Vec<_>>(), vec![good]);
    let err = queue.get(bad).unwrap_err();
    assert!(matches!(err, MailQueueError::CorruptEntry { id, .. } if id == bad), "{err:?}");
    assert!(err.to_string().contains(&bad.to_string()), "{err}");
    // A corrupt entry can be discarded.
    queue.discard(bad).unwrap();
    assert!(queue.due(t(1)).unwrap().corrupt.is_empty());
}

#[test]
fn test_entries_cannot_be_swapped_or_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = queue_path(&dir);
    let (a, b) = {
        let queue = open(&path, QueueLimits::default());
        (queue.enqueue(&envelope("a"), t(0)).unwrap(), queue.enqueue(&envelope("b"), t(0)).unwrap())
    };
    let db = Database::create(&path).unwrap();
    let record_b = {
        let txn = db.begin_read().unwrap();
        txn.open_table(SEALED).unwrap().get(b.0).unwrap().unwrap().value().to_vec()
    };
    drop(db);
    tamper(&path, a, |r| *r = record_b.clone());
    tamper(&path, b, |r| r.truncate(10));
    let queue = open(&path, QueueLimits::default());
    let mut corrupt = queue.due(t(1)).unwrap().corrupt;
    corrupt.sort();
    let mut both = vec![a, b];
    both.sort();
    assert_eq!(corrupt, both);
}

#[test]
fn test_the_schedule_is_all_there_is_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let path = queue_path(&dir);
    let id = open(&path, QueueLimits::default()).enqueue(&envelope("x"), t(7)).unwrap();
    let db = Database::create(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let row = txn.open_table(SCHEDULE).unwrap().get(id.0).unwrap().unwrap().value();
    let ms = 1_000 * (1_700_000_000 + 7);
    assert_eq!((row.0, row.1, row.2, row.3), (ms, ms, 0, 0));
}

#[tokio::test]
async fn test_the_spool_answers_full_and_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(&queue_path(&dir), QueueLimits { max_entries: 1, max_bytes: 4096 });
    let id = queue.accept(envelope("first")).await.unwrap();
    assert_eq!(id.0.len(), 16);
    assert_eq!(queue.accept(envelope("second")).await, Err(SpoolError::Full));
    assert_eq!(queue.accept(envelope(&"z".repeat(5000))).await, Err(SpoolError::TooLarge));
    assert_eq!(queue.list().unwrap()[0].id.to_string(), id.0);
}
