//! The SMTP client against servers it did not grow up with: aiosmtpd
//! (Python's SMTP server library, run from tests/support/smtp_sink.py) for
//! what a real mail exchanger or smarthost does — STARTTLS, AUTH, SIZE,
//! refused recipients — our own SMTP server for PIPELINING, and scripted
//! servers on raw sockets for what a broken or hostile one does. Every
//! delivered message is compared byte for byte with what the server stored.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nox_mail::deliver::{Credentials, RcptOutcome, SendError, SmtpClientConfig, SmtpTarget, TlsMode, send_mail};
use nox_mail::smtp::{Envelope, QueueId, SmtpConfig, SmtpServer, Spool, SpoolFuture};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(30);

fn config() -> SmtpClientConfig {
    SmtpClientConfig {
        helo: "exit.nox.test".to_string(),
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(10),
        data_timeout: Duration::from_secs(20),
        ..SmtpClientConfig::default()
    }
}

fn target(addr: SocketAddr) -> SmtpTarget {
    SmtpTarget { addr, name: "localhost".to_string() }
}

fn rcpts(list: &[&str]) -> Vec<String> {
    list.iter().map(|r| r.to_string()).collect()
}

fn message(body: &str) -> Vec<u8> {
    format!(
        "From: sender@nox.test\r\nTo: someone@sink.test\r\nSubject: test\r\nMessage-ID: <t1@nox.test>\r\n\r\n{body}"
    )
    .into_bytes()
}

// ---------------------------------------------------------------- aiosmtpd

#[derive(Default)]
struct SinkOptions {
    tls: Option<(PathBuf, PathBuf)>,
    auth: Option<(&'static str, &'static str)>,
    auth_clear: bool,
    login_only: bool,
    reject: Vec<&'static str>,
    defer: Vec<&'static str>,
    data_reply: Option<&'static str>,
    size_limit: Option<u64>,
}

/// A running smtp_sink.py, killed when dropped.
struct Sink {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    _child: Child,
}

/// A message as the sink stored it.
#[derive(Debug)]
struct Stored {
    from: String,
    options: Vec<String>,
    rcpts: Vec<String>,
    tls: bool,
    auth: Option<String>,
    data: Vec<u8>,
}

impl Sink {
    /// Starts a sink, or `None` where aiosmtpd is missing outside CI.
    async fn start(options: SinkOptions) -> Option<Sink> {
        if !support::tool_available("python3-aiosmtpd", support::aiosmtpd_present()) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = support::free_port();
        let mut command = Command::new("/usr/bin/python3");
        command
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py"))
            .arg("--port")
            .arg(port.to_string())
            .arg("--dir")
            .arg(dir.path());
        if let Some((cert, key)) = &options.tls {
            command.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        if let Some((user, password)) = options.auth {
            command.args(["--auth-user", user, "--auth-password", password]);
        }
        if options.auth_clear {
            command.arg("--auth-clear");
        }
        if options.login_only {
            command.arg("--login-only");
        }
        for prefix in &options.reject {
            command.args(["--reject", prefix]);
        }
        for prefix in &options.defer {
            command.args(["--defer", prefix]);
        }
        if let Some(reply) = options.data_reply {
            command.args(["--data-reply", reply]);
        }
        if let Some(limit) = options.size_limit {
            command.arg("--size-limit").arg(limit.to_string());
        }
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).kill_on_drop(true).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        tokio::time::timeout(WAIT, async {
            loop {
                match lines.next_line().await.unwrap() {
                    Some(line) if line == "READY" => break,
                    Some(_) => {}
                    None => panic!("smtp_sink.py exited before it was ready"),
                }
            }
        })
        .await
        .expect("smtp_sink.py ready in time");
        Some(Sink { addr: SocketAddr::from(([127, 0, 0, 1], port)), dir, _child: child })
    }

    fn messages(&self) -> Vec<Stored> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "msg"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|path| {
                let bytes = std::fs::read(path).unwrap();
                let split = bytes.windows(2).position(|w| w == b"\n\n").unwrap();
                let head = String::from_utf8(bytes[..split].to_vec()).unwrap();
                let mut stored = Stored {
                    from: String::new(),
                    options: vec![],
                    rcpts: vec![],
                    tls: false,
                    auth: None,
                    data: bytes[split + 2..].to_vec(),
                };
                for line in head.lines() {
                    let (key, value) = line.split_once(' ').unwrap_or((line, ""));
                    match key {
                        "FROM" => stored.from = value.to_string(),
                        "OPT" => stored.options.push(value.to_string()),
                        "RCPT" => stored.rcpts.push(value.to_string()),
                        "TLS" => stored.tls = value == "yes",
                        "AUTH" => stored.auth = (value != "-").then(|| value.to_string()),
                        _ => panic!("unknown line {line:?}"),
                    }
                }
                stored
            })
            .collect()
    }
}

/// A CA and a certificate it issued for `localhost`, as PEM files, and the
/// CA as trust roots.
struct Pki {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    roots: Arc<rustls::RootCertStore>,
}

fn new_pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "NOX test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    Pki { _dir: dir, cert: cert_path, key: key_path, roots: Arc::new(roots) }
}

#[tokio::test]
async fn test_plain_delivery_arrives_byte_for_byte() {
    let Some(sink) = Sink::start(SinkOptions::default()).await else { return };
    let data = message("Hello.\r\nSecond line.\r\n");
    let outcomes =
        send_mail(&config(), &target(sink.addr), "sender@nox.test", &rcpts(&["a@sink.test", "b@sink.test"]), &data)
            .await
            .unwrap();
    assert_eq!(outcomes, [RcptOutcome::Delivered, RcptOutcome::Delivered]);
    let stored = sink.messages();
    assert_eq!(stored.len(), 1);
    let m = &stored[0];
    assert_eq!(m.from, "sender@nox.test");
    assert_eq!(m.rcpts, ["a@sink.test", "b@sink.test"]);
    assert_eq!(m.data, data);
    assert!(!m.tls, "the sink offers no STARTTLS");
    assert_eq!(m.options, [format!("SIZE={}", data.len())]);
}

#[tokio::test]
async fn test_null_sender() {
    let Some(sink) = Sink::start(SinkOptions::default()).await else { return };
    let outcomes =
        send_mail(&config(), &target(sink.addr), "", &rcpts(&["a@sink.test"]), &message("bounce\r\n")).await.unwrap();
    assert_eq!(outcomes, [RcptOutcome::Delivered]);
    assert_eq!(sink.messages()[0].from, "<>");
}

#[tokio::test]
async fn test_eight_bit_message_is_announced() {
    let Some(sink) = Sink::start(SinkOptions::default()).await else { return };
    let data = message("Grüße aus Köln, 東京 too.\r\n");
    let outcomes =
        send_mail(&config(), &target(sink.addr), "sender@nox.test", &rcpts(&["a@sink.test"]), &data).await.unwrap();
    assert_eq!(outcomes, [RcptOutcome::Delivered]);
    let stored = sink.messages();
    assert_eq!(stored[0].data, data);
    assert!(stored[0].options.contains(&"BODY=8BITMIME".to_string()), "{:?}", stored[0].options);
}

#[tokio::test]
async fn test_five_mib_message() {
    let Some(sink) = Sink::start(SinkOptions::default()).await else { return };
    let mut body = String::new();
    let mut n = 0u64;
    while body.len() < 5 * 1024 * 1024 {
        body.push_str(&format!("{n:08} the quick brown fox jumps over the lazy dog, line after line\r\n"));
        n += 1;
    }
    let data = message(&body);
    let outcomes =
        send_mail(&config(), &target(sink.addr), "sender@nox.test", &rcpts(&["big@sink.test"]), &data).await.unwrap();
    assert_eq!(outcomes, [RcptOutcome::Delivered]);
    let stored = sink.messages();
    assert_eq!(stored[0].data.len(), data.len());
    assert!(stored[0].data == data, "the message arrived changed");
}

#[tokio::test]
async fn test_lines_starting_with_a_dot_arrive_intact() {
    let Some(sink) = Sink::start(SinkOptions::default()).await else { return };
    let data = message(".hidden\r\n.\r\n..two dots\r\nend\r\n.");
    let outcomes =
        send_mail(&config(), &target(sink.addr), "sender@nox.test", &rcpts(&["a@sink.test"]), &data).await.unwrap();
    assert_eq!(outcomes, [RcptOutcome::Delivered]);
    // The message lacked a final CRLF: it gets one, nothing else changes.
    let mut expected = data.clone();
    expected.extend_from_slice(b"\r\n");
    assert_eq!(sink.messages()[0].data, expected);
}

#[tokio::test]
async fn test_opportunistic_starttls() {
    let pki = new_pki();
    let Some(sink) =
        Sink::start(SinkOptions { tls: Some((pki.cert.clone(), pki.key.clone())), ..Default::default() }).await
    else {
        return;
    };
    // A certificate for another name and an unknown CA: opportunistic TLS
    // does not care.
    let target = SmtpTarget { addr: sink.addr, name: "mx.elsewhere.test".to_string() };
    let data = message("under TLS\r\n");
    let outcomes = send_mail(&config(), &target, "sender@nox.test", &rcpts(&["a@sink.test"]), &data).await.unwrap();
    assert_eq!(outcomes, [RcptOutcome::Delivered]);
    let stored = sink.messages();
    assert!(stored[0].tls);
    assert_eq!(stored[0].data, data);
}

#[tokio::test]
async fn test_required_tls_verifies_the_certificate() {
    let pki = new_pki();
    let Some(sink) =
        Sink::start(SinkOptions { tls: Some((pki.cert.clone(), pki.key.clone())), ..Default::default() }).await
    else {
        return;
    };
    let cfg = SmtpClientConfig { tls: TlsMode::Required { roots: Arc::clone(&pki.roots) }, ..config() };
    let outcomes = send_mail(&cfg, &target(sink.addr), "sender@nox.test", &rcpts(&["a@sink.test"]), &message("x\r\n"))
        .await
        .unwrap();
    assert_eq!(outcomes, [RcptOutcome::Delivered]);
    assert!(sink.messages()[0].tls);

    // The certificate names localhost, not this.
    let wrong = SmtpTarget { addr: sink.addr, name: "smarthost.example".to_string() };
    let err =
        send_mail(&cfg, &wrong, "sender@nox.test", &rcpts(&["a@sink.test"]), &message("x\r\n")).await.unwrap_err();
    assert!(matches!(&err, SendError::Transient(t) if t.contains("TLS")), "{err}");

    // Roots that did not issue it.
    let other = new_pki().roots;
    let cfg_other = SmtpClientConfig { tls: TlsMode::Required { roots: other }, ..config() };
    let err = send_mail(&cfg_other, &target(sink.addr), "sender@nox.test", &rcpts(&["a@sink.test"]), &message("x\r\n"))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Transient(_)), "{err}");
    assert_eq!(sink.messages().len(), 1, "nothing sent without verified TLS");
}

#[tokio::test]
async fn test_required_tls_not_offered_is_transient() {
    let Some(sink) = Sink::start(SinkOptions::default()).await else { return };
    let cfg = SmtpClientConfig { tls: TlsMode::Required { roots: new_pki().roots }, ..config() };
    let err = send_mail(&cfg, &target(sink.addr), "sender@nox.test", &rcpts(&["a@sink.test"]), &message("x\r\n"))
        .await
        .unwrap_err();
    assert!(matches!(&err, SendError::Transient(t) if t.contains("STARTTLS")), "{err}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn test_auth_plain_under_tls() {
    let pki = new_pki();
    let Some(sink) = Sink::start(SinkOptions {
        tls: Some((pki.cert.clone(), pki.key.clone())),
        auth: Some(("exit", "s3cret pass")),
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let credentials = Credentials { user: "exit".to_string(), password: "s3cret pass".to_string() };
    let cfg = SmtpClientConfig {
        tls: TlsMode::Required { roots: Arc::clone(&pki.roots) },
        auth: Some(credentials.clone()),
        ..config()
    };
    let outcomes = send_mail(&cfg, &target(sink.addr), "sender@nox.test", &rcpts(&["a@sink.test"]), &message("x\r\n"))
        .await
        .unwrap();
    assert_eq!(outcomes, [RcptOutcome::Delivered]);
    let stored = sink.messages();
    assert_eq!(stored[0].auth.as_deref(), Some("exit"));
    assert!(stored[0].tls);

    let wrong = SmtpClientConfig { auth: Some(Credentials { password: "wrong".to_string(), ..credentials }), ..cfg };
    let err = send_mail(&wrong, &target(sink.addr), "sender@nox.test", &rcpts(&["a@sink.test"]), &message("x\r\n"))
        .await
        .unwrap_err();
    assert!(matches!(&err, SendError::Permanent(t) if t.contains("535")), "{err}");
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test]
async fn test_auth_login_where_plain_is_not_offered() {
    let pki = new_pki();
    let Some(sink) = Sink::start(SinkOptions {
        tls: Some((pki.cert.clone(), pki.key.clone())),
        auth: Some(("exit", "pw")),
        login_only: true,
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let cfg = SmtpClientConfig {
        auth: Some(Credentials { user: "exit".to_string(), password: "pw".to_string() }),
        ..config()
    };
    let outcomes = send_mail(&cfg, &target(sink.addr), "sender@nox.test", &rcpts(&["a@sink.test"]), &message("x\r\n"))
        .await
        .unwrap();
    assert_eq!(outcomes, [RcptOutcome::Delivered]);
    assert_eq!(sink.messages()[0].auth.as_deref(), Some("exit"));
}

#[tokio::test]
async fn test_auth_in_clear_only_to_loopback() {
    let Some(sink) =
        Sink::start(SinkOptions { auth: Some(("exit", "pw")), auth_clear: true, ..Default::default() }).await
    else {
        return;
    };
    let cfg = SmtpClientConfig {
        tls: TlsMode::Off,
        auth: Some(Credentials { user: "exit".to_string(), password: "pw".to_string() }),
        ..config()
    };
    // The sink is on loopback: the password never leaves the machine.
    let outcomes = send_mail(&cfg, &target(sink.addr), "sender@nox.test", &rcpts(&["a@sink.test"]), &message("x\r\n"))
        .await
        .unwrap();
    assert_eq!(outcomes, [RcptOutcome::Delivered]);
    let stored = sink.messages();
    assert_eq!((stored[0].auth.as_deref(), stored[0].tls), (Some("exit"), false));
}

#[tokio::test]
async fn test_refused_and_deferred_recipients() {
    let Some(sink) =
        Sink::start(SinkOptions { reject: vec!["nobody"], defer: vec!["busy"], ..Default::default() }).await
    else {
        return;
    };
    let list = rcpts(&["ok@sink.test", "nobody@sink.test", "busy@sink.test", "also-ok@sink.test", "bad>@x"]);
    let outcomes = send_mail(&config(), &target(sink.addr), "sender@nox.test", &list, &message("x\r\n")).await.unwrap();
    assert_eq!(outcomes.len(), 5);
    assert_eq!(outcomes[0], RcptOutcome::Delivered);
    assert!(matches!(&outcomes[1], RcptOutcome::Permanent(t) if t.starts_with("550 5.1.1")), "{:?}", outcomes[1]);
    assert!(matches!(&outcomes[2], RcptOutcome::Transient(t) if t.starts_with("451 4.2.0")), "{:?}", outcomes[2]);
    assert_eq!(outcomes[3], RcptOutcome::Delivered);
    assert!(matches!(&outcomes[4], RcptOutcome::Permanent(_)), "{:?}", outcomes[4]);
    let stored = sink.messages();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].rcpts, ["ok@sink.test", "also-ok@sink.test"]);

    // Nobody accepted: no DATA, nothing stored.
    let outcomes =
        send_mail(&config(), &target(sink.addr), "sender@nox.test", &rcpts(&["nobody@x", "busy@x"]), &message("x\r\n"))
            .await
            .unwrap();
    assert!(matches!(outcomes[..], [RcptOutcome::Permanent(_), RcptOutcome::Transient(_)]), "{outcomes:?}");
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test]
async fn test_reply_after_the_final_dot_applies_to_accepted_recipients() {
    for (reply, permanent) in [("554 5.6.0 content refused", true), ("451 4.3.0 disk full", false)] {
        let Some(sink) =
            Sink::start(SinkOptions { reject: vec!["nobody"], data_reply: Some(reply), ..Default::default() }).await
        else {
            return;
        };
        let list = rcpts(&["a@sink.test", "nobody@sink.test", "b@sink.test"]);
        let outcomes =
            send_mail(&config(), &target(sink.addr), "sender@nox.test", &list, &message("x\r\n")).await.unwrap();
        let expected = if permanent {
            RcptOutcome::Permanent(reply.to_string())
        } else {
            RcptOutcome::Transient(reply.to_string())
        };
        assert_eq!(outcomes[0], expected);
        assert_eq!(outcomes[2], expected);
        assert!(matches!(&outcomes[1], RcptOutcome::Permanent(t) if t.starts_with("550")), "{outcomes:?}");
    }
}

#[tokio::test]
async fn test_message_over_the_advertised_size_is_permanent() {
    let Some(sink) = Sink::start(SinkOptions { size_limit: Some(1000), ..Default::default() }).await else { return };
    let data = message(&"0123456789 ".repeat(500));
    let err =
        send_mail(&config(), &target(sink.addr), "sender@nox.test", &rcpts(&["a@sink.test"]), &data).await.unwrap_err();
    assert!(matches!(&err, SendError::Permanent(t) if t.contains("SIZE")), "{err}");
    assert!(sink.messages().is_empty());
}

// ------------------------------------------------------ our own SMTP server

#[derive(Default)]
struct MemorySpool {
    messages: Mutex<Vec<Envelope>>,
}

impl Spool for MemorySpool {
    fn accept(&self, envelope: Envelope) -> SpoolFuture<'_> {
        Box::pin(async move {
            let mut messages = self.messages.lock().unwrap();
            messages.push(envelope);
            Ok(QueueId(format!("Q{}", messages.len())))
        })
    }
}

#[tokio::test]
async fn test_pipelined_recipients_to_our_own_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spool = Arc::new(MemorySpool::default());
    let server = SmtpServer::new(SmtpConfig::default(), spool.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    // More recipients than one pipelined group.
    let list: Vec<String> = (0..70).map(|i| format!("r{i}@nox.test")).collect();
    let data = message("pipelined\r\n.dot\r\n");
    let outcomes = send_mail(&config(), &target(addr), "sender@nox.test", &list, &data).await.unwrap();
    assert!(outcomes.iter().all(RcptOutcome::is_delivered), "{outcomes:?}");
    let messages = spool.messages.lock().unwrap().clone();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rcpt_to, list);
    assert_eq!(messages[0].data, data);
    let _ = stop.send(());
    serving.await.unwrap();
}

// ------------------------------------------------------- scripted servers

/// What a scripted server does with a command.
enum Act {
    Say(&'static str),
    SayAndClose(&'static str),
    Close,
}

/// A server that greets with `greeting` and answers each command line by
/// `script` (a message after `354` is read to its dot and answered as the
/// command `.`); it serves connections one after another and records every
/// command, per connection.
async fn scripted(
    greeting: &'static str,
    script: fn(&str) -> Act,
) -> (SocketAddr, Arc<Mutex<Vec<Vec<String>>>>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&log);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read);
            let index = {
                let mut log = recorded.lock().unwrap();
                log.push(Vec::new());
                log.len() - 1
            };
            if write.write_all(format!("{greeting}\r\n").as_bytes()).await.is_err() {
                continue;
            }
            let mut line = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                    break;
                }
                let command = line.trim_end().to_string();
                recorded.lock().unwrap()[index].push(command.clone());
                let act = script(&command);
                let (text, close) = match act {
                    Act::Say(text) => (text, false),
                    Act::SayAndClose(text) => (text, true),
                    Act::Close => break,
                };
                let _ = write.write_all(format!("{text}\r\n").as_bytes()).await;
                if close {
                    break;
                }
                if text.starts_with("354") {
                    // The message, to its lone dot.
                    loop {
                        line.clear();
                        if lines.read_line(&mut line).await.unwrap_or(0) == 0 || line == ".\r\n" {
                            break;
                        }
                    }
                    recorded.lock().unwrap()[index].push(".".to_string());
                    match script(".") {
                        Act::Say(text) => {
                            let _ = write.write_all(format!("{text}\r\n").as_bytes()).await;
                        }
                        Act::SayAndClose(_) | Act::Close => break,
                    }
                }
            }
        }
    });
    (addr, log, task)
}

/// A well-behaved server with the extensions given after `EHLO`.
fn obliging(command: &str) -> Act {
    let verb = command.split([' ', ':']).next().unwrap_or("").to_ascii_uppercase();
    match verb.as_str() {
        "EHLO" => Act::Say("250-fake.test\r\n250 8BITMIME"),
        "HELO" => Act::Say("250 fake.test"),
        "MAIL" | "RCPT" | "RSET" | "NOOP" => Act::Say("250 ok"),
        "DATA" => Act::Say("354 go ahead"),
        "." => Act::Say("250 queued"),
        "QUIT" => Act::SayAndClose("221 bye"),
        _ => Act::Say("502 unknown"),
    }
}

#[tokio::test]
async fn test_helo_when_ehlo_is_unknown() {
    let (addr, log, _task) = scripted("220 old.test SMTP", |command| {
        if command.starts_with("EHLO") { Act::Say("500 5.5.1 what?") } else { obliging(command) }
    })
    .await;
    let outcomes =
        send_mail(&config(), &target(addr), "sender@nox.test", &rcpts(&["a@x"]), &message("é\r\n")).await.unwrap();
    assert_eq!(outcomes, [RcptOutcome::Delivered]);
    let log = log.lock().unwrap()[0].clone();
    assert_eq!(log[..3], ["EHLO exit.nox.test", "HELO exit.nox.test", "MAIL FROM:<sender@nox.test>"]);
    assert_eq!(log.last().unwrap(), "QUIT");
}

#[tokio::test]
async fn test_greeting_failures_are_transient() {
    for greeting in ["421 4.3.2 busy", "554 5.7.1 no SMTP service here"] {
        let (addr, log, _task) = scripted(greeting, obliging).await;
        let err = send_mail(&config(), &target(addr), "s@x", &rcpts(&["a@x"]), &message("x\r\n")).await.unwrap_err();
        assert!(matches!(&err, SendError::Transient(t) if t.contains(&greeting[..3])), "{err}");
        assert!(!log.lock().unwrap()[0].iter().any(|c| c.starts_with("MAIL")));
    }
}

#[tokio::test]
async fn test_sender_refused_is_permanent() {
    let (addr, _log, _task) = scripted("220 fake", |command| {
        if command.starts_with("MAIL") { Act::Say("550 5.7.1 sender refused") } else { obliging(command) }
    })
    .await;
    let err = send_mail(&config(), &target(addr), "s@x", &rcpts(&["a@x"]), &message("x\r\n")).await.unwrap_err();
    assert_eq!(err, SendError::Permanent("MAIL FROM: 550 5.7.1 sender refused".to_string()));
    assert!(err.is_permanent());
}

#[tokio::test]
async fn test_421_among_recipients_ends_the_session() {
    let (addr, _log, _task) = scripted("220 fake", |command| {
        if command.starts_with("RCPT TO:<b@") { Act::SayAndClose("421 4.3.2 shutting down") } else { obliging(command) }
    })
    .await;
    let err = send_mail(&config(), &target(addr), "s@x", &rcpts(&["a@x", "b@x", "c@x"]), &message("x\r\n"))
        .await
        .unwrap_err();
    assert!(matches!(&err, SendError::Transient(t) if t.contains("421")), "{err}");
}

#[tokio::test]
async fn test_connection_lost_after_the_dot_is_transient_for_the_accepted() {
    let (addr, _log, _task) = scripted("220 fake", |command| match command {
        "." => Act::Close,
        c if c.starts_with("RCPT TO:<no@") => Act::Say("550 5.1.1 unknown"),
        c => obliging(c),
    })
    .await;
    let outcomes =
        send_mail(&config(), &target(addr), "s@x", &rcpts(&["a@x", "no@x"]), &message("x\r\n")).await.unwrap();
    assert!(matches!(&outcomes[0], RcptOutcome::Transient(_)), "{outcomes:?}");
    assert!(matches!(&outcomes[1], RcptOutcome::Permanent(_)), "{outcomes:?}");
}

#[tokio::test]
async fn test_failed_opportunistic_handshake_falls_back_to_clear() {
    let (addr, log, _task) = scripted("220 fake", |command| match command {
        "STARTTLS" => Act::SayAndClose("220 go ahead"),
        c if c.starts_with("EHLO") => Act::Say("250-fake.test\r\n250 STARTTLS"),
        c => obliging(c),
    })
    .await;
    let outcomes = send_mail(&config(), &target(addr), "s@x", &rcpts(&["a@x"]), &message("x\r\n")).await.unwrap();
    assert_eq!(outcomes, [RcptOutcome::Delivered]);
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 2, "a second connection: {log:?}");
    assert_eq!(log[0].last().unwrap(), "STARTTLS");
    assert!(!log[1].contains(&"STARTTLS".to_string()) && log[1].contains(&".".to_string()));
}

#[tokio::test]
async fn test_replies_injected_before_the_tls_handshake_end_the_session() {
    // The go-ahead and a forged reply in one write: the forged one would be
    // read as if it came under TLS.
    let (addr, log, _task) = scripted("220 fake", |command| match command {
        "STARTTLS" => Act::Say("220 go ahead\r\n250-forged\r\n250 AUTH PLAIN"),
        c if c.starts_with("EHLO") => Act::Say("250-fake.test\r\n250 STARTTLS"),
        c => obliging(c),
    })
    .await;
    let cfg = SmtpClientConfig { tls: TlsMode::Required { roots: new_pki().roots }, ..config() };
    let err = send_mail(&cfg, &target(addr), "s@x", &rcpts(&["a@x"]), &message("x\r\n")).await.unwrap_err();
    assert!(matches!(&err, SendError::Transient(t) if t.contains("in clear")), "{err}");
    assert!(!log.lock().unwrap()[0].iter().any(|c| c.starts_with("MAIL")));
}

#[tokio::test]
async fn test_connection_refused_is_transient() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let err = send_mail(&config(), &target(addr), "s@x", &rcpts(&["a@x"]), &message("x\r\n")).await.unwrap_err();
    assert!(matches!(&err, SendError::Transient(t) if t.starts_with("connect")), "{err}");
}

#[tokio::test]
async fn test_no_recipients_no_connection() {
    let addr = SocketAddr::from(([127, 0, 0, 1], 9));
    assert_eq!(send_mail(&config(), &target(addr), "s@x", &[], b"x").await, Ok(vec![]));
}

/// A hostile server: greets, then answers `EHLO` with continuation lines
/// for ever, or one line without end.
async fn hostile(endless_line: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else { return };
        let _ = stream.write_all(b"220 hostile\r\n").await;
        let mut buf = [0u8; 512];
        let _ = stream.read(&mut buf).await;
        let chunk: Vec<u8> =
            if endless_line { vec![b'x'; 64 * 1024] } else { b"250-AAAAAAAAAAAAAAAAAAAA\r\n".repeat(2000) };
        let _ = stream.write_all(b"250-").await;
        while stream.write_all(&chunk).await.is_ok() {}
    });
    addr
}

#[tokio::test]
async fn test_endless_reply_is_an_error_not_a_hang() {
    for endless_line in [false, true] {
        let addr = hostile(endless_line).await;
        let started = Instant::now();
        let result =
            tokio::time::timeout(WAIT, send_mail(&config(), &target(addr), "s@x", &rcpts(&["a@x"]), &message("x\r\n")))
                .await
                .expect("the client gives up by itself");
        let err = result.unwrap_err();
        assert!(matches!(&err, SendError::Transient(t) if t.contains("EHLO") && t.contains("malformed")), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }
}

#[tokio::test]
async fn test_silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _held = tokio::spawn(async move {
        let accepted = listener.accept().await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(accepted);
    });
    let cfg = SmtpClientConfig { command_timeout: Duration::from_millis(500), ..config() };
    let started = Instant::now();
    let err = send_mail(&cfg, &target(addr), "s@x", &rcpts(&["a@x"]), &message("x\r\n")).await.unwrap_err();
    assert!(matches!(&err, SendError::Transient(t) if t.contains("timed out")), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
