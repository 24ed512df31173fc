//! The mail exit as a client and an operator meet it: `Mail` requests through
//! `MailService::serve`, the durable queue, the batch window and the worker's
//! retries, first with a fake deliverer (and a clock the test sets), then
//! with the real one against real programs on loopback: an aiosmtpd server
//! (Debian's python3-aiosmtpd; nox-mail's `tests/support/smtp_sink.py`) as the
//! recipient's mail exchanger, found through dnsmasq (Debian's
//! dnsmasq-base). Those are skipped where the programs are missing, unless
//! `CI=true`. Last, `nox check-config` on the `exit.mail_*` keys.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use nox_mail::bucket::pad;
use nox_node::config::ExitSection;
use nox_node::exit::mail::schedule::unix_ms;
use nox_node::exit::mail::{
    ACK, AcceptRules, DeliveryWorker, MailClock, MailDeliverer, MailExit, MailExitConfig, MailQueue, MailService,
    Outcome, QueueLimits, Schedule,
};
use nox_node::exit::{ExitService, RequestContext, ServiceError};
use nox_node::metrics::Metrics;
use nox_protocol::payload::{MailTransport, Request, RequestKind};

// ---------------------------------------------------------------------------
// A fake deliverer and a settable clock
// ---------------------------------------------------------------------------

/// One call the worker made.
#[derive(Debug, Clone)]
struct Call {
    domain: String,
    recipients: Vec<String>,
    message: Vec<u8>,
    at_ms: u64,
}

type Script = dyn Fn(&str, usize) -> Outcome + Send + Sync;

/// Records every call; answers each recipient by `script(recipient, how
/// many times it was tried before)`.
struct Fake {
    calls: Mutex<Vec<Call>>,
    script: Box<Script>,
    clock: MailClock,
}

impl Fake {
    fn new(clock: MailClock, script: impl Fn(&str, usize) -> Outcome + Send + Sync + 'static) -> Arc<Fake> {
        Arc::new(Fake { calls: Mutex::new(Vec::new()), script: Box::new(script), clock })
    }

    fn delivering(clock: MailClock) -> Arc<Fake> {
        Fake::new(clock, |_, _| Outcome::Delivered)
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn tries(&self, recipient: &str) -> usize {
        self.calls().iter().filter(|c| c.recipients.iter().any(|r| r == recipient)).count()
    }
}

impl MailDeliverer for Fake {
    fn send<'a>(&'a self, domain: &'a str, recipients: &'a [String], message: &'a [u8]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let outcomes = recipients.iter().map(|r| (self.script)(r, self.tries(r))).collect();
            self.calls.lock().unwrap().push(Call {
                domain: domain.to_owned(),
                recipients: recipients.to_vec(),
                message: message.to_vec(),
                at_ms: self.clock.now_ms(),
            });
            outcomes
        })
    }

    fn post<'a>(&'a self, article: &'a [u8]) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let outcome = (self.script)("news", self.tries("news"));
            self.calls.lock().unwrap().push(Call {
                domain: String::new(),
                recipients: vec!["news".into()],
                message: article.to_vec(),
                at_ms: self.clock.now_ms(),
            });
            outcome
        })
    }
}

/// A clock the test moves.
#[derive(Clone)]
struct Time(Arc<AtomicU64>);

impl Time {
    fn at(ms: u64) -> Time {
        Time(Arc::new(AtomicU64::new(ms)))
    }
    fn clock(&self) -> MailClock {
        let t = self.0.clone();
        MailClock::from_fn(move || t.load(Ordering::SeqCst))
    }
    fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Windows of 10 s, retries after 20 s doubling to 80 s, a lifetime of 200 s.
fn schedule() -> Schedule {
    Schedule {
        batch: Duration::from_secs(10),
        retry_min: Duration::from_secs(20),
        retry_max: Duration::from_secs(80),
        lifetime: Duration::from_secs(200),
    }
}

fn rules() -> AcceptRules {
    AcceptRules { max_recipients: 5, max_message_bytes: 100_000, nntp: true }
}

/// A service and a worker over one queue, on a clock the test sets, the
/// worker delivering one message at a time (so that the order of calls is
/// the order the window drew).
struct Exit {
    service: MailService,
    worker: DeliveryWorker,
    metrics: Metrics,
}

fn exit_at(path: &Path, limits: QueueLimits, time: &Time, deliverer: Arc<dyn MailDeliverer>) -> Exit {
    let metrics = Metrics::new();
    let queue = MailQueue::open(path, limits).unwrap();
    let service = MailService::new(queue.clone(), rules(), schedule(), time.clock(), metrics.mail());
    let worker = DeliveryWorker::new(queue, deliverer, schedule(), 1, time.clock(), metrics.mail());
    Exit { service, worker, metrics }
}

fn ctx(id: u8) -> RequestContext {
    RequestContext {
        request_id: [id; 16],
        kind: RequestKind::Mail,
        reply_budget: 1 << 20,
        deadline: Instant::now() + Duration::from_secs(30),
    }
}

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: Someone <someone@example.org>\r\nTo: friend@example.net\r\nSubject: {subject}\r\n\
         X-Mailer: Mailer 9.1 (sender-host.local)\r\nReceived: from sender-host.local ([10.1.2.3])\r\n\
         Message-ID: <1234@sender-host.local>\r\nDate: Tue, 1 Jul 2025 14:34:56 +0200\r\n\r\nHello.\r\n"
    )
    .into_bytes()
}

fn mail(recipients: &[&str], subject: &str) -> Request {
    Request::Mail {
        transport: MailTransport::Smtp,
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        message: pad(&message(subject)).unwrap(),
    }
}

fn subject_of(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or("").to_owned()
}

fn metric(m: &Metrics, line: &str) -> u64 {
    let text = m.render();
    text.lines()
        .find(|l| l.starts_with(line) && l[line.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

const T0: u64 = 1_750_000_000_000;

// ---------------------------------------------------------------------------
// Accepting
// ---------------------------------------------------------------------------

#[tokio::test]
async fn accepted_mail_is_on_disk_before_the_ack() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mail-queue.redb");
    let time = Time::at(T0);
    let exit = exit_at(&path, QueueLimits::default(), &time, Fake::delivering(time.clock()));
    let answer = exit.service.serve(ctx(1), mail(&["friend@example.net"], "one")).await.unwrap();
    assert_eq!(answer, ACK);
    assert_eq!(metric(&exit.metrics, "nox_exit_mail_accepted_total"), 1);
    assert_eq!(metric(&exit.metrics, "nox_exit_mail_queue_entries"), 1);
    drop(exit);

    // What the ack promised is in the file, scrubbed, due at the window's end.
    let queue = MailQueue::open(&path, QueueLimits::default()).unwrap();
    assert_eq!(queue.totals().entries, 1);
    let due = schedule().due_after_accept(T0);
    assert!(queue.due(due - 1, &HashSet::new()).unwrap().is_empty());
    let id = queue.due(due, &HashSet::new()).unwrap()[0];
    let entry = queue.load(id).unwrap().unwrap().unwrap();
    assert_eq!(entry.recipients, ["friend@example.net"]);
    let text = String::from_utf8(entry.message).unwrap();
    for gone in ["X-Mailer", "Received", "sender-host", "10.1.2.3", "+0200"] {
        assert!(!text.contains(gone), "{gone} in {text}");
    }
    assert!(text.contains("Subject: one\r\n") && text.ends_with("\r\n\r\nHello.\r\n"), "{text}");
}

#[tokio::test]
async fn a_retry_with_the_same_id_is_answered_and_queued_once() {
    let dir = tempfile::tempdir().unwrap();
    let time = Time::at(T0);
    let fake = Fake::delivering(time.clock());
    let exit = exit_at(&dir.path().join("q.redb"), QueueLimits::default(), &time, fake.clone());
    for _ in 0..3 {
        assert_eq!(exit.service.serve(ctx(7), mail(&["friend@example.net"], "once")).await.unwrap(), ACK);
    }
    assert_eq!(exit.service.queue().totals().entries, 1);
    assert_eq!(metric(&exit.metrics, "nox_exit_mail_accepted_total"), 1);
    assert_eq!(metric(&exit.metrics, "nox_exit_mail_duplicate_total"), 2);
    // Still a duplicate after delivery: the id outlives the entry.
    time.set(schedule().due_after_accept(T0));
    exit.worker.run_window(time.now()).await;
    assert_eq!(fake.calls().len(), 1);
    assert_eq!(exit.service.serve(ctx(7), mail(&["friend@example.net"], "once")).await.unwrap(), ACK);
    exit.worker.run_window(schedule().window_end_after(time.now())).await;
    assert_eq!(fake.calls().len(), 1, "delivered once");
}

#[tokio::test]
async fn a_full_queue_answers_busy_and_keeps_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let time = Time::at(T0);
    let fake = Fake::delivering(time.clock());
    let limits = QueueLimits { max_entries: 3, max_bytes: 1 << 20, max_accepted_ids: 100 };
    let exit = exit_at(&dir.path().join("q.redb"), limits, &time, fake.clone());
    for i in 0..3 {
        exit.service.serve(ctx(i), mail(&["friend@example.net"], &format!("m{i}"))).await.unwrap();
    }
    let e = exit.service.serve(ctx(9), mail(&["friend@example.net"], "m9")).await.unwrap_err();
    assert!(matches!(&e, ServiceError::Busy(m) if m.contains("full")), "{e:?}");
    assert_eq!(metric(&exit.metrics, "nox_exit_mail_refused_total{reason=\"queue_full\"}"), 1);
    // A retry of an accepted request is still answered.
    assert_eq!(exit.service.serve(ctx(1), mail(&["friend@example.net"], "m1")).await.unwrap(), ACK);
    time.set(schedule().due_after_accept(T0));
    exit.worker.run_window(time.now()).await;
    let mut delivered: Vec<String> = fake.calls().iter().map(|c| subject_of(&c.message)).collect();
    delivered.sort();
    assert_eq!(delivered, ["m0", "m1", "m2"], "the earlier entries are intact");
    // Room again.
    assert_eq!(exit.service.serve(ctx(9), mail(&["friend@example.net"], "m9")).await.unwrap(), ACK);
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_reason_and_nothing_queued() {
    let dir = tempfile::tempdir().unwrap();
    let time = Time::at(T0);
    let exit = exit_at(&dir.path().join("q.redb"), QueueLimits::default(), &time, Fake::delivering(time.clock()));
    let padded = pad(&message("x")).unwrap();
    let with = |recipients: &[&str], message: Vec<u8>| Request::Mail {
        transport: MailTransport::Smtp,
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        message,
    };
    let cases = [
        (with(&[], padded.clone()), "recipients"),
        (with(&["a@example.org"; 6], padded.clone()), "recipients"),
        (with(&["private-person"], padded.clone()), "address"),
        (with(&["a@[127.0.0.1]"], padded.clone()), "address"),
        (with(&["a@example.org\r\nRCPT TO:<b@example.org>"], padded.clone()), "address"),
        (with(&["a@example.org"], padded[..padded.len() - 3].to_vec()), "padding"),
        (with(&["a@example.org"], message("unpadded")), "padding"),
        (with(&["a@example.org"], pad(&vec![b'x'; 100_001]).unwrap()), "too_large"),
        (with(&["a@example.org"], pad(b"private words without a colon\r\n\r\n").unwrap()), "malformed"),
        (
            Request::Mail {
                transport: MailTransport::Nntp,
                recipients: vec!["Not.A.Group".into()],
                message: padded.clone(),
            },
            "newsgroup",
        ),
    ];
    for (request, reason) in cases {
        let e = exit.service.serve(ctx(1), request).await.unwrap_err();
        assert!(matches!(&e, ServiceError::BadRequest(_)), "{reason}: {e:?}");
        for secret in ["private", "127.0.0.1", "RCPT", "Not.A.Group"] {
            assert!(!e.to_string().contains(secret), "{reason}: {e}");
        }
        let line = format!("nox_exit_mail_refused_total{{reason=\"{reason}\"}}");
        assert!(metric(&exit.metrics, &line) >= 1, "{line}");
    }
    assert_eq!(exit.service.queue().totals().entries, 0);
    assert_eq!(exit.service.queue().totals().accepted_ids, 0);
    // Not a Mail request at all.
    let e = exit.service.serve(ctx(1), Request::Echo { data: vec![] }).await.unwrap_err();
    assert!(matches!(e, ServiceError::Unsupported(_)));
}

#[tokio::test]
async fn news_is_refused_without_a_server_and_posted_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let time = Time::at(T0);
    let metrics = Metrics::new();
    let queue = MailQueue::open(&dir.path().join("q.redb"), QueueLimits::default()).unwrap();
    let off = AcceptRules { nntp: false, ..rules() };
    let service = MailService::new(queue.clone(), off, schedule(), time.clock(), metrics.mail());
    let post = |groups: &[&str]| Request::Mail {
        transport: MailTransport::Nntp,
        recipients: groups.iter().map(|g| g.to_string()).collect(),
        message: pad(b"Newsgroups: other.group\r\n\r\nA post.\r\n").unwrap(),
    };
    let e = service.serve(ctx(1), post(&["alt.test"])).await.unwrap_err();
    assert!(matches!(&e, ServiceError::Refused(m) if m.contains("newsgroups")), "{e:?}");

    let fake = Fake::delivering(time.clock());
    let service = MailService::new(queue.clone(), rules(), schedule(), time.clock(), metrics.mail());
    let worker = DeliveryWorker::new(queue, fake.clone(), schedule(), 1, time.clock(), metrics.mail());
    assert_eq!(service.serve(ctx(2), post(&["alt.test", "local.test"])).await.unwrap(), ACK);
    time.set(schedule().due_after_accept(T0));
    worker.run_window(time.now()).await;
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    let article = String::from_utf8(calls[0].message.clone()).unwrap();
    assert!(article.contains("Newsgroups: alt.test,local.test\r\n") && !article.contains("other.group"), "{article}");
    assert!(article.contains("From: Anonymous <nobody@nox.invalid>\r\n"), "{article}");
    assert!(article.contains("Subject: (none)\r\n"), "{article}");
    assert_eq!(metric(&metrics, "nox_exit_mail_posted_total"), 1);
    assert_eq!(service.queue().totals().entries, 0);
}

// ---------------------------------------------------------------------------
// The batch window
// ---------------------------------------------------------------------------

#[tokio::test]
async fn each_window_delivers_in_a_shuffled_order_and_nothing_before_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let time = Time::at(T0);
    let fake = Fake::delivering(time.clock());
    let exit = exit_at(&dir.path().join("q.redb"), QueueLimits::default(), &time, fake.clone());
    let s = schedule();
    const N: usize = 8;
    let mut reordered = 0;
    for window in 0..6u8 {
        let start = s.window_end_after(time.now());
        let mut arrival = Vec::new();
        for i in 0..N {
            // Arrivals spread over the window.
            time.set(start + (i as u64) * 1_000);
            let subject = format!("w{window}m{i}");
            let id = window * 16 + i as u8;
            exit.service.serve(ctx(id), mail(&["friend@example.net"], &subject)).await.unwrap();
            arrival.push(subject);
        }
        let end = s.window_end_after(time.now());
        // Until the window ends nothing leaves.
        let before = fake.calls().len();
        time.set(end - 1);
        exit.worker.run_window(end - 1).await;
        assert_eq!(fake.calls().len(), before, "nothing is delivered before the window ends");
        time.set(end);
        exit.worker.run_window(end).await;
        let calls = fake.calls();
        let order: Vec<String> = calls[before..].iter().map(|c| subject_of(&c.message)).collect();
        assert_eq!(order.len(), N);
        assert!(calls[before..].iter().all(|c| c.at_ms >= end));
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, arrival, "the whole window, once each");
        if order != arrival {
            reordered += 1;
        }
    }
    // Each window keeps its arrival order with probability 1/8!: six in a
    // row would be a 1 in 10^27 event.
    assert!(reordered > 0, "no window was shuffled");
}

#[tokio::test]
async fn the_running_worker_waits_for_the_window_by_the_wall_clock() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let fake = Fake::delivering(MailClock::system());
    let cfg = MailExitConfig {
        queue_path: dir.path().join("q.redb"),
        limits: QueueLimits::default(),
        rules: rules(),
        schedule: Schedule { batch: Duration::from_millis(700), ..schedule() },
        concurrency: 4,
        attempt_timeout: Duration::from_secs(60),
    };
    let exit = MailExit::start(&cfg, fake.clone(), MailClock::system(), &metrics).unwrap();
    let mut dues = Vec::new();
    for i in 0..4u8 {
        let accepted = unix_ms(SystemTime::now());
        exit.service.serve(ctx(i), mail(&["friend@example.net"], &format!("m{i}"))).await.unwrap();
        dues.push((format!("m{i}"), cfg.schedule.due_after_accept(accepted)));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.calls().len() < 4 {
        assert!(Instant::now() < deadline, "not delivered: {:?}", fake.calls().len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for call in fake.calls() {
        let subject = subject_of(&call.message);
        let (_, due) = dues.iter().find(|(s, _)| *s == subject).unwrap();
        // The service's clock read `accepted` or later: its window ends at `due` or later.
        assert!(call.at_ms >= *due, "{subject} left {} ms before its window ended", due - call.at_ms);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while exit.service.queue().totals().entries > 0 {
        assert!(Instant::now() < deadline, "entries left after delivery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&metrics, "nox_exit_mail_delivered_total"), 4);
    exit.worker.abort();
}

// ---------------------------------------------------------------------------
// Outcomes
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_deferred_recipient_is_retried_with_backoff_and_then_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let time = Time::at(T0);
    // b@ is deferred twice, then accepted; a@ at once.
    let fake = Fake::new(time.clock(), |r, tries| match (r, tries) {
        ("b@example.org", 0 | 1) => Outcome::Transient,
        _ => Outcome::Delivered,
    });
    let exit = exit_at(&dir.path().join("q.redb"), QueueLimits::default(), &time, fake.clone());
    exit.service.serve(ctx(1), mail(&["a@example.org", "b@example.org"], "retry")).await.unwrap();
    let s = schedule();
    let first = s.due_after_accept(T0);
    time.set(first);
    exit.worker.run_window(first).await;
    assert_eq!(fake.calls().len(), 1, "one transaction for the domain");
    assert_eq!(fake.calls()[0].recipients, ["a@example.org", "b@example.org"]);
    let queue = exit.service.queue();
    assert_eq!(queue.totals().entries, 1);

    // Not again before the backoff (20 s), then only the deferred recipient.
    let second = s.next_attempt(T0, 1, first).unwrap();
    assert!(second >= first + 20_000);
    exit.worker.run_window(second - s.batch.as_millis() as u64).await;
    assert_eq!(fake.calls().len(), 1);
    time.set(second);
    exit.worker.run_window(second).await;
    assert_eq!(fake.calls()[1].recipients, ["b@example.org"]);
    // The wait doubles.
    let third = s.next_attempt(T0, 2, second).unwrap();
    assert!(third >= second + 40_000);
    time.set(third);
    exit.worker.run_window(third).await;
    assert_eq!(fake.calls().len(), 3);
    assert_eq!(queue.totals().entries, 0, "removed once no recipient is left");
    assert_eq!(metric(&exit.metrics, "nox_exit_mail_delivered_total"), 2);
    assert_eq!(metric(&exit.metrics, "nox_exit_mail_deferred_total"), 2);
    assert_eq!(metric(&exit.metrics, "nox_exit_mail_queue_entries"), 0);
}

#[tokio::test]
async fn recipients_are_grouped_by_domain_and_a_permanent_refusal_removes() {
    let dir = tempfile::tempdir().unwrap();
    let time = Time::at(T0);
    let fake =
        Fake::new(time.clock(), |r, _| if r.starts_with("nobody") { Outcome::Permanent } else { Outcome::Delivered });
    let exit = exit_at(&dir.path().join("q.redb"), QueueLimits::default(), &time, fake.clone());
    let to = ["a@Example.ORG", "nobody@example.net", "b@example.org"];
    exit.service.serve(ctx(1), mail(&to, "groups")).await.unwrap();
    time.set(schedule().due_after_accept(T0));
    exit.worker.run_window(time.now()).await;
    let mut calls: Vec<(String, Vec<String>)> = fake.calls().into_iter().map(|c| (c.domain, c.recipients)).collect();
    calls.sort();
    assert_eq!(
        calls,
        [
            ("example.net".to_string(), vec!["nobody@example.net".to_string()]),
            ("example.org".to_string(), vec!["a@Example.ORG".to_string(), "b@example.org".to_string()]),
        ]
    );
    assert_eq!(exit.service.queue().totals().entries, 0);
    assert_eq!(metric(&exit.metrics, "nox_exit_mail_bounced_total"), 1);
    assert_eq!(metric(&exit.metrics, "nox_exit_mail_delivered_total"), 2);
}

#[tokio::test]
async fn mail_never_delivered_is_given_up_at_the_end_of_its_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let time = Time::at(T0);
    let fake = Fake::new(time.clock(), |_, _| Outcome::Transient);
    let exit = exit_at(&dir.path().join("q.redb"), QueueLimits::default(), &time, fake.clone());
    exit.service.serve(ctx(1), mail(&["a@example.org"], "doomed")).await.unwrap();
    let s = schedule();
    let mut at = s.due_after_accept(T0);
    let mut attempts = 0;
    while exit.service.queue().totals().entries > 0 {
        time.set(at);
        exit.worker.run_window(at).await;
        attempts += 1;
        assert!(attempts < 40, "never given up");
        at = s.window_end_after(at);
    }
    // 20 s, 40 s, 80 s, 80 s … within 200 s: a handful of attempts, the last at the lifetime's end.
    let calls = fake.calls();
    assert!((4..=6).contains(&calls.len()), "{} attempts", calls.len());
    let last = calls.last().unwrap().at_ms;
    assert!((T0 + 200_000..T0 + 210_000).contains(&last), "{}", last - T0);
    assert_eq!(metric(&exit.metrics, "nox_exit_mail_expired_total"), 1);
    assert_eq!(metric(&exit.metrics, "nox_exit_mail_deferred_total"), calls.len() as u64);
    // The request id is forgotten with it.
    assert!(!exit.service.queue().is_accepted([1; 16], time.now()).unwrap());
}

/// A server that accepts the connection and never answers.
struct Silent;

impl MailDeliverer for Silent {
    fn send<'a>(&'a self, _: &'a str, _: &'a [String], _: &'a [u8]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(futures::future::pending())
    }

    fn post<'a>(&'a self, _: &'a [u8]) -> BoxFuture<'a, Outcome> {
        Box::pin(futures::future::pending())
    }
}

#[tokio::test]
async fn a_server_that_never_answers_holds_a_slot_for_one_attempt_timeout_only() {
    let dir = tempfile::tempdir().unwrap();
    let time = Time::at(T0);
    let metrics = Metrics::new();
    let queue = MailQueue::open(&dir.path().join("q.redb"), QueueLimits::default()).unwrap();
    let service = MailService::new(queue.clone(), rules(), schedule(), time.clock(), metrics.mail());
    let worker = DeliveryWorker::new(queue, Arc::new(Silent), schedule(), 1, time.clock(), metrics.mail())
        .with_attempt_timeout(Duration::from_millis(300));
    // Three domains: the first uses up the attempt, the others are deferred with it.
    service.serve(ctx(1), mail(&["a@one.example", "b@two.example", "c@three.example"], "slow")).await.unwrap();
    time.set(schedule().due_after_accept(T0));
    let started = Instant::now();
    worker.run_window(time.now()).await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(metric(&metrics, "nox_exit_mail_deferred_total"), 3);
    assert_eq!(service.queue().totals().entries, 1, "kept for the next attempt");
}

// ---------------------------------------------------------------------------
// Restart
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_restart_resumes_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.redb");
    let time = Time::at(T0);
    // First run: b@ is deferred, everything else delivered; two messages
    // are accepted and not yet due when the exit stops.
    let first =
        Fake::new(time.clock(), |r, _| if r == "b@example.org" { Outcome::Transient } else { Outcome::Delivered });
    let exit = exit_at(&path, QueueLimits::default(), &time, first.clone());
    exit.service.serve(ctx(1), mail(&["a@example.org", "b@example.org"], "partly")).await.unwrap();
    time.set(schedule().due_after_accept(T0));
    exit.worker.run_window(time.now()).await;
    assert_eq!(first.calls().len(), 1);
    time.set(time.now() + 3_000);
    exit.service.serve(ctx(2), mail(&["c@example.org"], "later-1")).await.unwrap();
    exit.service.serve(ctx(3), mail(&["d@example.net"], "later-2")).await.unwrap();
    drop(exit);

    // Second run, on the same file: what was left is delivered, the rest not again.
    let second = Fake::delivering(time.clock());
    let exit = exit_at(&path, QueueLimits::default(), &time, second.clone());
    assert_eq!(exit.service.queue().totals().entries, 3);
    assert_eq!(exit.service.serve(ctx(2), mail(&["c@example.org"], "later-1")).await.unwrap(), ACK);
    assert_eq!(exit.service.queue().totals().entries, 3, "the id survived the restart");
    let s = schedule();
    let mut at = s.window_end_after(time.now());
    while exit.service.queue().totals().entries > 0 {
        time.set(at);
        exit.worker.run_window(at).await;
        at = s.window_end_after(at);
        assert!(at < T0 + 300_000, "entries left");
    }
    let mut got: Vec<(String, Vec<String>)> =
        second.calls().into_iter().map(|c| (subject_of(&c.message), c.recipients)).collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("later-1".to_string(), vec!["c@example.org".to_string()]),
            ("later-2".to_string(), vec!["d@example.net".to_string()]),
            ("partly".to_string(), vec!["b@example.org".to_string()]),
        ]
    );
}

#[tokio::test]
async fn a_stopped_mail_exit_releases_its_queue_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let never = Fake::new(MailClock::system(), |_, _| Outcome::Transient);
    let cfg = MailExitConfig {
        queue_path: dir.path().join("q.redb"),
        limits: QueueLimits::default(),
        rules: rules(),
        schedule: schedule(),
        concurrency: 2,
        attempt_timeout: Duration::from_secs(60),
    };
    let exit = MailExit::start(&cfg, never, MailClock::system(), &metrics).unwrap();
    exit.service.serve(ctx(1), mail(&["a@example.org"], "kept")).await.unwrap();
    let MailExit { service, worker } = exit;
    worker.abort();
    let _ = worker.await;
    drop(service);
    let again = MailExit::start(&cfg, Fake::delivering(MailClock::system()), MailClock::system(), &metrics).unwrap();
    assert_eq!(again.service.queue().totals().entries, 1);
    again.worker.abort();
}

// ---------------------------------------------------------------------------
// The real deliverer: aiosmtpd found through dnsmasq
// ---------------------------------------------------------------------------

const DNSMASQ: &str = "/usr/sbin/dnsmasq";

fn sink_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../mail/tests/support/smtp_sink.py")
}

/// Whether `what` is here; missing on CI (`CI=true`) is a failure.
fn tool(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{what} is missing, and CI=true: scripts/test installs it");
    eprintln!("SKIP: {what} is not installed here; this test needs it (scripts/test installs it)");
    false
}

fn real_tools() -> bool {
    let aiosmtpd = Command::new("/usr/bin/python3")
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    tool("python3-aiosmtpd", aiosmtpd)
        && tool("dnsmasq (Debian: dnsmasq-base)", Path::new(DNSMASQ).exists())
        && tool("mail/tests/support/smtp_sink.py", sink_script().exists())
}

fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_ok() {
            return port;
        }
    }
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// dnsmasq on `port`: `example.test` and `dead.test` have their MX on 127.0.0.1.
fn start_dns(port: u16) -> Proc {
    let child = Command::new(DNSMASQ)
        .args([
            "--no-daemon",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--user=root",
            "--local=/test/",
            "--pid-file=",
            "--mx-host=example.test,mx.example.test,10",
            "--host-record=mx.example.test,127.0.0.1",
            "--mx-host=dead.test,mx.dead.test,10",
            "--host-record=mx.dead.test,127.0.0.1",
        ])
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    wait_port(port, "dnsmasq");
    proc
}

fn start_sink(port: u16, inbox: &Path) -> Proc {
    let child = Command::new("/usr/bin/python3")
        .arg(sink_script())
        .arg(format!("--port={port}"))
        .arg(format!("--dir={}", inbox.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    wait_port(port, "the aiosmtpd sink");
    proc
}

fn real_exit(data_dir: &Path, dns_port: u16, smtp_port: u16, lifetime_secs: u64) -> ExitSection {
    ExitSection {
        mail: true,
        mail_resolvers: vec![format!("127.0.0.1:{dns_port}")],
        mail_smtp_port: smtp_port,
        mail_allow_loopback: true,
        mail_batch_secs: 1,
        mail_retry_min_secs: 1,
        mail_retry_max_secs: 1,
        mail_lifetime_secs: lifetime_secs,
        mail_connect_timeout_secs: 2,
        mail_command_timeout_secs: 5,
        mail_data_timeout_secs: 5,
        mail_queue_path: Some(data_dir.join("mail-queue.redb").display().to_string()),
        ..ExitSection::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_through_serve_arrives_scrubbed_at_the_mx() {
    if !real_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let (dns_port, smtp_port) = (free_port(), free_port());
    let _dns = start_dns(dns_port);
    let _sink = start_sink(smtp_port, &inbox);
    let metrics = Metrics::new();
    let exit = MailExit::from_section(&real_exit(dir.path(), dns_port, smtp_port, 60), dir.path(), &metrics).unwrap();

    let request = mail(&["friend@example.test", "Other@EXAMPLE.test"], "through the exit");
    assert_eq!(exit.service.serve(ctx(1), request).await.unwrap(), ACK);

    let deadline = Instant::now() + Duration::from_secs(20);
    let file = loop {
        let found: Vec<PathBuf> = std::fs::read_dir(&inbox)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "msg"))
            .collect();
        if let Some(f) = found.first() {
            break f.clone();
        }
        assert!(Instant::now() < deadline, "nothing arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stored = String::from_utf8(std::fs::read(&file).unwrap()).unwrap();
    let (envelope, body) = stored.split_once("\n\n").unwrap();
    assert!(envelope.lines().any(|l| l == "FROM <>"), "the null reverse path: {envelope}");
    assert!(
        envelope.contains("RCPT friend@example.test") && envelope.contains("RCPT Other@EXAMPLE.test"),
        "{envelope}"
    );
    assert!(body.contains("Subject: through the exit\r\n") && body.ends_with("\r\n\r\nHello.\r\n"), "{body}");
    assert!(body.contains("Date: Tue, 01 Jul 2025 12:00:00 +0000\r\n"), "{body}");
    for gone in ["X-Mailer", "Received", "sender-host", "10.1.2.3"] {
        assert!(!body.contains(gone), "{gone} in {body}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while exit.service.queue().totals().entries > 0 {
        assert!(Instant::now() < deadline, "the entry was not removed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&metrics, "nox_exit_mail_delivered_total"), 2);
    exit.worker.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_mx_is_retried_then_given_up() {
    if !real_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dns_port = free_port();
    // Nothing listens here.
    let dead_port = free_port();
    let _dns = start_dns(dns_port);
    let metrics = Metrics::new();
    let exit = MailExit::from_section(&real_exit(dir.path(), dns_port, dead_port, 4), dir.path(), &metrics).unwrap();
    assert_eq!(exit.service.serve(ctx(1), mail(&["someone@dead.test"], "lost")).await.unwrap(), ACK);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&metrics, "nox_exit_mail_expired_total") == 0 {
        assert!(Instant::now() < deadline, "never given up:\n{}", metrics.render());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metric(&metrics, "nox_exit_mail_deferred_total") >= 2, "retried: {}", metrics.render());
    assert_eq!(metric(&metrics, "nox_exit_mail_delivered_total"), 0);
    assert_eq!(exit.service.queue().totals().entries, 0);
    exit.worker.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mx_on_loopback_is_refused_without_the_test_setting() {
    if !real_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let (dns_port, smtp_port) = (free_port(), free_port());
    let _dns = start_dns(dns_port);
    let _sink = start_sink(smtp_port, &inbox);
    let metrics = Metrics::new();
    let section = ExitSection { mail_allow_loopback: false, ..real_exit(dir.path(), dns_port, smtp_port, 60) };
    let exit = MailExit::from_section(&section, dir.path(), &metrics).unwrap();
    assert_eq!(exit.service.serve(ctx(1), mail(&["friend@example.test"], "inward")).await.unwrap(), ACK);
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&metrics, "nox_exit_mail_bounced_total") == 0 {
        assert!(Instant::now() < deadline, "not refused:\n{}", metrics.render());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = r#"nox_events_total{kind="exit_mail",outcome="refused_ssrf_loopback"}"#;
    assert_eq!(metric(&metrics, refused), 1);
    assert_eq!(std::fs::read_dir(&inbox).unwrap().count(), 0, "nothing reached the loopback server");
    exit.worker.abort();
}

// ---------------------------------------------------------------------------
// In a node
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_node_with_mail_on_keeps_its_queue_in_the_data_dir_across_restarts() {
    use nox_node::keys::NodeKeys;
    use nox_node::node::{NodeError, NodeOptions, start};
    let dir = tempfile::tempdir().unwrap();
    let keys = NodeKeys::generate(&mut rand::rngs::OsRng);
    let mut cfg = nox_node::localnet::base_config(dir.path(), 2);
    cfg.exit.mail = true;
    cfg.exit.mail_resolvers = vec!["127.0.0.1:9".into()];
    let node = start(cfg.clone(), keys.clone(), NodeOptions::default()).await.unwrap();
    assert!(cfg.node.data_dir.join("mail-queue.redb").exists());
    assert!(node.metrics.render().contains("nox_exit_mail_queue_entries 0"));
    node.shutdown().await;
    let node = start(cfg.clone(), keys.clone(), NodeOptions::default()).await.expect("the queue was released");
    node.shutdown().await;

    // A password file others can read stops the start, naming it.
    use std::os::unix::fs::PermissionsExt;
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    cfg.exit.mail_smarthost = Some("127.0.0.1:2525".into());
    cfg.exit.mail_smarthost_user = Some("exit".into());
    cfg.exit.mail_smarthost_password_file = Some(pw.display().to_string());
    let e = start(cfg, keys, NodeOptions::default()).await.unwrap_err();
    assert!(matches!(&e, NodeError::Mail(_)), "{e}");
    assert!(e.to_string().contains("chmod 600") && !e.to_string().contains("secret\n"), "{e}");
}

// ---------------------------------------------------------------------------
// nox check-config
// ---------------------------------------------------------------------------

fn check_config(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nox.toml");
    std::fs::write(&path, text).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_nox"));
    command.arg("check-config").arg(&path);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("NOX_") {
            command.env_remove(name);
        }
    }
    let out = command.output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

const EXIT: &str = "[node]\nrole = \"exit\"\nlayer = 2\n\n[exit]\nmail = true\n";

#[test]
fn check_config_accepts_a_mail_exit_and_names_each_bad_mail_key() {
    let (code, err) = check_config(EXIT);
    assert_eq!(code, Some(0), "{err}");

    let (code, err) = check_config(&format!(
        "{EXIT}mail_batch_secs = 0\nmail_retry_min_secs = 600\nmail_retry_max_secs = 60\n\
         mail_smarthost = \"smtp.example.org\"\nmail_nntp_server = \"news.example.org:0\"\n\
         mail_resolvers = [\"127.0.0.1\"]\nmail_envelope_from = \"nobody\"\n"
    ));
    assert_eq!(code, Some(2));
    for key in [
        "exit.mail_batch_secs: ",
        "exit.mail_retry_max_secs: ",
        "exit.mail_smarthost: ",
        "exit.mail_nntp_server: ",
        "exit.mail_resolvers[0]: ",
        "exit.mail_envelope_from: ",
    ] {
        assert!(err.lines().any(|l| l.starts_with(key)), "{key} missing from:\n{err}");
    }
}

#[test]
fn check_config_refuses_a_password_file_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("smarthost.pw");
    std::fs::write(&pw, "hunter2\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!(
        "{EXIT}mail_smarthost = \"smtp.example.org:587\"\nmail_smarthost_user = \"exit\"\n\
         mail_smarthost_password_file = \"{}\"\n",
        pw.display()
    );
    let (code, err) = check_config(&text);
    assert_eq!(code, Some(2));
    assert!(
        err.lines().any(|l| l.starts_with("exit.mail_smarthost_password_file: ") && l.contains("chmod 600")),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, err) = check_config(&text);
    assert_eq!(code, Some(0), "{err}");
}
