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

// ---- the sender -------------------------------------------------------------

mod sender_tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use futures::future::BoxFuture;
    use nox_protocol::payload::{MailTransport, Reply, ReplyStatus, Request};
    use tokio::sync::Notify;

    use super::*;
    use crate::client::ClientError;
    use crate::mail::sender::try_once;

    /// Stands in for the mixnet: answers each `send` with the next scripted
    /// outcome (an acknowledgement when the script is empty) and records
    /// what it was given.
    #[derive(Default)]
    struct Scripted {
        script: Mutex<VecDeque<Result<ReplyStatus, ()>>>,
        seen: Mutex<Vec<([u8; 16], Request)>>,
    }

    impl Scripted {
        fn with(script: impl IntoIterator<Item = Result<ReplyStatus, ()>>) -> Arc<Self> {
            Arc::new(Scripted { script: Mutex::new(script.into_iter().collect()), seen: Mutex::default() })
        }
        fn seen(&self) -> Vec<([u8; 16], Request)> {
            self.seen.lock().unwrap().clone()
        }
    }

    impl MailCarrier for Scripted {
        fn send(&self, request_id: [u8; 16], request: Request) -> BoxFuture<'_, Result<Reply, ClientError>> {
            self.seen.lock().unwrap().push((request_id, request));
            let next = self.script.lock().unwrap().pop_front().unwrap_or(Ok(ReplyStatus::Ok));
            Box::pin(async move {
                match next {
                    Ok(status) => Ok(Reply { request_id, status, data: b"queued".to_vec() }),
                    Err(()) => Err(ClientError::Timeout { attempts: 3, per_attempt: Duration::from_millis(1) }),
                }
            })
        }
    }

    fn fast() -> SenderConfig {
        SenderConfig {
            retry_min: Duration::from_millis(20),
            retry_max: Duration::from_millis(80),
            idle_poll: Duration::from_millis(50),
            ..SenderConfig::default()
        }
    }

    #[test]
    fn test_backoff_doubles_from_the_minimum_to_the_maximum() {
        let c = SenderConfig::default();
        let secs: Vec<u64> = (1..=9).map(|n| c.backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert_eq!(c.backoff(u32::MAX).as_secs(), 3600);
    }

    #[tokio::test]
    async fn test_an_entry_leaves_only_on_an_acknowledgement_under_one_request_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = queue_path(&dir);
        let queue = open(&path, QueueLimits::default());
        let id = queue.enqueue(&envelope("hello"), SystemTime::now()).unwrap();
        let carrier = Scripted::with([Err(()), Ok(ReplyStatus::Busy), Ok(ReplyStatus::Ok)]);
        let stats = SenderStats::default();
        let config = fast();

        let mail = queue.get(id).unwrap();
        assert!(matches!(try_once(&queue, &*carrier, &config, &stats, mail).await, TryOutcome::Retry(_)));
        let info = queue.list().unwrap()[0].clone();
        assert_eq!(info.attempts, 1);
        assert!(info.next_attempt > SystemTime::now(), "the next try waits its backoff");
        assert!(queue.due(SystemTime::now()).unwrap().mail.is_empty());

        let mail = queue.get(id).unwrap();
        let busy = try_once(&queue, &*carrier, &config, &stats, mail).await;
        assert!(matches!(&busy, TryOutcome::Retry(why) if why.contains("busy")), "{busy:?}");
        assert_eq!(queue.list().unwrap().len(), 1, "Busy is no acknowledgement");

        // A crash between tries: the queue reopens and the id stays the same.
        drop(queue);
        let queue = open(&path, QueueLimits::default());
        let mail = queue.get(id).unwrap();
        assert_eq!(try_once(&queue, &*carrier, &config, &stats, mail).await, TryOutcome::Acknowledged);
        assert!(queue.list().unwrap().is_empty(), "acknowledged: deleted");

        let seen = carrier.seen();
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|(rid, _)| *rid == seen[0].0), "every try carries the entry's one request id");
        assert_ne!(seen[0].0[..8], id.0.to_be_bytes(), "the request id is not the entry id");
        let Request::Mail { transport, recipients, message } = &seen[0].1 else { panic!("not a Mail request") };
        assert_eq!(*transport, MailTransport::Smtp);
        assert_eq!(recipients, &vec!["bob@example.org".to_string(), "carol@example.net".to_string()]);
        assert_eq!(message.len(), nox_mail::bucket::BUCKET_SIZES[0], "padded to its bucket");
        assert_eq!(nox_mail::bucket::unpad(message).unwrap(), envelope("hello").data.as_slice());
        assert_eq!((stats.tries(), stats.failed_tries(), stats.acknowledged()), (3, 2, 1));
    }

    #[tokio::test]
    async fn test_request_ids_differ_between_entries_and_queues() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(&dir.path().join("a.redb"), QueueLimits::default());
        let b = open(&dir.path().join("b.redb"), QueueLimits::default());
        let (x, y) = (MailId(1), MailId(2));
        assert_ne!(a.request_id(x), a.request_id(y));
        assert_ne!(a.request_id(x), b.request_id(x), "another passphrase salt, another id");
        assert_eq!(a.request_id(x), a.request_id(x));
    }

    #[tokio::test]
    async fn test_an_exit_refusal_gives_up_and_keeps_the_entry_visible() {
        let dir = tempfile::tempdir().unwrap();
        let queue = open(&queue_path(&dir), QueueLimits::default());
        let id = queue.enqueue(&envelope("x"), SystemTime::now()).unwrap();
        let carrier = Scripted::with([Ok(ReplyStatus::BadRequest)]);
        let stats = SenderStats::default();
        let mail = queue.get(id).unwrap();
        assert!(matches!(try_once(&queue, &*carrier, &fast(), &stats, mail).await, TryOutcome::Refused(_)));
        let list = queue.list().unwrap();
        assert_eq!((list.len(), list[0].state), (1, EntryState::Expired));
        assert!(queue.due(SystemTime::now() + Duration::from_secs(86_400)).unwrap().mail.is_empty());
        assert_eq!(stats.refused(), 1);
    }

    #[tokio::test]
    async fn test_the_loop_empties_the_queue_through_failures_and_gives_up_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let queue = open(&queue_path(&dir), QueueLimits::default());
        let now = SystemTime::now();
        for i in 0..5 {
            queue.enqueue(&envelope(&format!("message {i}")), now).unwrap();
        }
        // Accepted six days ago: past the default five-day lifetime.
        let old = queue.enqueue(&envelope("old"), now - Duration::from_secs(6 * 86_400)).unwrap();
        // Every other try fails.
        let carrier = Scripted::with((0..5).flat_map(|_| [Err(()), Ok(ReplyStatus::Ok)]));
        let wake = Arc::new(Notify::new());
        let sender = MailSender::new(queue.clone(), Arc::clone(&carrier), fast(), Arc::clone(&wake));
        let stats = sender.stats();
        let stop = Arc::new(Notify::new());
        let run = tokio::spawn({
            let stop = Arc::clone(&stop);
            async move { sender.run(async move { stop.notified().await }).await }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while stats.acknowledged() < 5 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.notify_one();
        run.await.unwrap();
        assert_eq!(stats.acknowledged(), 5);
        assert_eq!(stats.expired(), 1);
        let left = queue.list().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].id, left[0].state), (old, EntryState::Expired));
        assert!(carrier.seen().iter().all(|(rid, _)| *rid != queue.request_id(old)), "the expired entry is never sent");
    }

    #[tokio::test]
    async fn test_the_gateway_spool_queues_the_scrubbed_message_and_wakes_the_sender() {
        let dir = tempfile::tempdir().unwrap();
        let queue = open(&queue_path(&dir), QueueLimits::default());
        let wake = Arc::new(Notify::new());
        let spool = GatewaySpool::new(queue.clone(), nox_mail::message::ScrubOptions::default(), Arc::clone(&wake));
        let mut env = envelope("secret body");
        env.data = b"Received: from laptop.home.example\r\nSubject: s\r\n\r\nsecret body\r\n".to_vec();
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        spool.accept(env.clone()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(1), woken).await.expect("the sender is woken");
        let due = queue.due(SystemTime::now()).unwrap();
        let stored = String::from_utf8(due.mail[0].envelope.data.clone()).unwrap();
        assert!(!stored.contains("laptop"), "scrubbed before it is stored: {stored}");
        assert!(stored.contains("Message-ID: <") && stored.ends_with("\r\n\r\nsecret body\r\n"), "{stored}");

        env.rcpt_to.push("local.test@news.nox.invalid".into());
        assert!(matches!(spool.accept(env.clone()).await, Err(SpoolError::Rejected(_))));
        env.rcpt_to.truncate(1);
        env.data = b"Not a header\r\n\r\nbody\r\n".to_vec();
        assert!(matches!(spool.accept(env).await, Err(SpoolError::Rejected(_))));
        assert_eq!(queue.list().unwrap().len(), 1, "refused messages are not queued");
    }

    #[test]
    fn test_the_schedule_reads_without_the_passphrase_but_not_while_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = queue_path(&dir);
        {
            let queue = open(&path, QueueLimits::default());
            queue.enqueue(&envelope("x"), t(0)).unwrap();
            let e = MailQueue::read_schedule(&path).unwrap_err();
            assert!(matches!(e, MailQueueError::Busy(_)), "{e:?}");
            let e = MailQueue::open(&path, PW, KdfParams::insecure_fast(), QueueLimits::default()).unwrap_err();
            assert!(matches!(e, MailQueueError::Busy(_)), "{e:?}");
        }
        let list = MailQueue::read_schedule(&path).unwrap();
        assert_eq!((list.len(), list[0].created), (1, t(0)));
        let e = MailQueue::read_schedule(&dir.path().join("none.redb")).unwrap_err();
        assert!(matches!(e, MailQueueError::Io { .. }), "{e:?}");
    }
}
