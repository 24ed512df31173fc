//! The SMTP submission server against clients: Python's `smtplib` stands
//! for a user's mail client (it is what many scripts and tools submit
//! with, and speaks ESMTP the way Thunderbird or mutt do: EHLO, SIZE,
//! 8BITMIME, AUTH, STARTTLS), raw sockets for what a careless or hostile
//! client does. Every message is checked byte for byte in an in-memory
//! spool.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nox_mail::smtp::{
    Envelope, QueueId, Refusal, SmtpAuth, SmtpConfig, SmtpServer, SmtpStats, SmtpTls, Spool, SpoolError, SpoolFuture,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(20);

/// A spool that keeps messages in memory, or refuses them all with the
/// error it is told to.
#[derive(Default)]
struct MemorySpool {
    messages: Mutex<Vec<Envelope>>,
    refuse_with: Mutex<Option<SpoolError>>,
}

impl MemorySpool {
    fn messages(&self) -> Vec<Envelope> {
        self.messages.lock().unwrap().clone()
    }

    fn refuse_with(&self, error: Option<SpoolError>) {
        *self.refuse_with.lock().unwrap() = error;
    }
}

impl Spool for MemorySpool {
    fn accept(&self, envelope: Envelope) -> SpoolFuture<'_> {
        Box::pin(async move {
            if let Some(error) = self.refuse_with.lock().unwrap().clone() {
                return Err(error);
            }
            let mut messages = self.messages.lock().unwrap();
            messages.push(envelope);
            Ok(QueueId(format!("Q{}", messages.len())))
        })
    }
}

struct TestServer {
    addr: SocketAddr,
    spool: Arc<MemorySpool>,
    stats: Arc<SmtpStats>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    async fn start(config: SmtpConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spool = Arc::new(MemorySpool::default());
        let server = SmtpServer::new(config, spool.clone());
        let stats = server.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        TestServer { addr, spool, stats, stop: Some(stop), task }
    }

    async fn client(&self) -> RawClient {
        let mut client = RawClient::connect(self.addr).await;
        client.expect(220).await;
        client
    }

    fn port(&self) -> String {
        self.addr.port().to_string()
    }

    /// Signals shutdown and waits for `serve` to return.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, &mut self.task).await.unwrap().unwrap();
    }
}

fn config() -> SmtpConfig {
    SmtpConfig { hostname: "gateway.test".into(), ..SmtpConfig::default() }
}

fn alice() -> SmtpAuth {
    SmtpAuth { username: "alice".into(), password: "correct horse".into() }
}

/// One reply: its code and its lines' texts.
#[derive(Debug)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// A client that writes exactly what it is told to.
struct RawClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl RawClient {
    async fn connect(addr: SocketAddr) -> Self {
        let (reader, writer) = TcpStream::connect(addr).await.unwrap().into_split();
        RawClient { reader: BufReader::new(reader), writer }
    }

    async fn send(&mut self, text: &str) {
        self.send_bytes(text.as_bytes()).await;
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
    }

    async fn reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n =
                tokio::time::timeout(WAIT, self.reader.read_line(&mut line)).await.expect("no reply in time").unwrap();
            assert!(n > 0, "connection closed; replies so far: {lines:?}");
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let code: u16 = line[..3].parse().unwrap();
            let last = line.as_bytes()[3] == b' ';
            lines.push(line[4..line.len() - 2].to_string());
            if last {
                return Reply { code, lines };
            }
        }
    }

    /// Reads a reply and checks its code; returns its text.
    async fn expect(&mut self, code: u16) -> String {
        let reply = self.reply().await;
        assert_eq!(reply.code, code, "expected {code}, got {reply:?}");
        reply.text()
    }

    /// Sends a command and checks the reply's code.
    async fn command(&mut self, line: &str, code: u16) -> String {
        self.send(&format!("{line}\r\n")).await;
        self.expect(code).await
    }

    /// Whether the server closed the connection (with nothing more to say).
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match tokio::time::timeout(WAIT, self.reader.read_to_end(&mut rest)).await {
            Ok(Ok(_)) => rest.is_empty(),
            Ok(Err(_)) => true,
            Err(_) => false,
        }
    }
}

/// Runs a Python script (`python3 -c`) with `args`, feeding it `stdin`;
/// returns what it printed, and fails the test with its stderr if it failed.
async fn python(script: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 is needed for the smtplib tests");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("smtplib did not finish in time")
        .unwrap();
    assert!(output.status.success(), "smtplib failed: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// The message smtplib sends: its lines starting with a dot are doubled on
/// the wire, and must come out single.
const PLAIN_MESSAGE: &[u8] = b"From: alice@example.org\r\n\
To: bob@example.net, carol@example.com\r\n\
Subject: hello\r\n\
\r\n\
Hello Bob and Carol.\r\n\
.a line that starts with a dot\r\n\
.\r\n\
..two dots\r\n\
Bye.\r\n";

#[tokio::test]
async fn test_smtplib_sends_a_plain_message() {
    let server = TestServer::start(config()).await;
    let script = r#"
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=30)
refused = s.sendmail('alice@example.org', ['bob@example.net', 'carol@example.com'], sys.stdin.buffer.read())
assert refused == {}, refused
s.quit()
"#;
    python(script, &[&server.port()], PLAIN_MESSAGE).await;
    let messages = server.spool.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.mail_from, "alice@example.org");
    assert_eq!(message.rcpt_to, ["bob@example.net", "carol@example.com"]);
    assert_eq!(message.data, PLAIN_MESSAGE);
    assert!(!message.authenticated);
    assert_eq!(server.stats.messages_accepted(), 1);
    assert_eq!(server.stats.sessions(), 1);
    server.stop().await;
}

#[tokio::test]
async fn test_smtplib_sends_an_8bit_message() {
    let server = TestServer::start(config()).await;
    // An 8-bit UTF-8 body, as a mail client sends it to a server that
    // advertises 8BITMIME.
    let script = r#"
import smtplib, sys, email.policy
from email.message import EmailMessage
m = EmailMessage()
m['From'] = 'juergen@example.org'
m['To'] = 'zoe@example.net'
m['Subject'] = 'Grüße'
m.set_content('Grüße aus Köln, ☃ und 日本語.\n', cte='8bit')
data = m.as_bytes(policy=email.policy.SMTP)
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=30)
s.ehlo()
assert s.has_extn('8bitmime')
s.sendmail('juergen@example.org', ['zoe@example.net'], data, mail_options=['BODY=8BITMIME'])
s.quit()
sys.stdout.buffer.write(data)
"#;
    let sent = python(script, &[&server.port()], b"").await;
    let messages = server.spool.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].data, sent);
    let body = "Grüße aus Köln, ☃ und 日本語.".as_bytes();
    assert!(contains(&messages[0].data, body), "the 8-bit body arrived intact");
    server.stop().await;
}

#[tokio::test]
async fn test_smtplib_sends_a_multipart_message_with_a_5mib_attachment() {
    let server = TestServer::start(config()).await;
    let script = r#"
import smtplib, sys, random, email.policy
from email.message import EmailMessage
m = EmailMessage()
m['From'] = 'alice@example.org'
m['To'] = 'bob@example.net'
m['Subject'] = 'the report'
m.set_content('Hi Bob,\n\nthe report is attached.\n.\n.a line that starts with a dot\n')
m.add_attachment(random.Random(18).randbytes(5 * 1024 * 1024), maintype='application',
                 subtype='octet-stream', filename='report.bin')
data = m.as_bytes(policy=email.policy.SMTP)
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=60)
s.sendmail('alice@example.org', ['bob@example.net'], data)
s.quit()
sys.stdout.buffer.write(data)
"#;
    let sent = python(script, &[&server.port()], b"").await;
    assert!(sent.len() > 5 * 1024 * 1024 * 4 / 3, "base64 of 5 MiB: {} bytes", sent.len());
    let messages = server.spool.messages();
    assert_eq!(messages.len(), 1);
    let data = &messages[0].data;
    assert_eq!(data.len(), sent.len());
    assert!(*data == sent, "the spool holds exactly the bytes smtplib sent");
    assert!(contains(data, b"Content-Type: multipart/mixed"));
    assert!(contains(data, b"\r\n.\r\n"), "a lone dot line, unstuffed");
    assert!(contains(data, b"\r\n.a line"), "a leading dot, unstuffed");
    server.stop().await;
}

#[tokio::test]
async fn test_smtplib_authenticates_with_plain_and_login() {
    let server = TestServer::start(config().with_auth(alice())).await;
    let script = r#"
import smtplib, sys
port = int(sys.argv[1])
s = smtplib.SMTP('127.0.0.1', port, timeout=30)
s.ehlo()
assert s.has_extn('auth') and 'PLAIN' in s.esmtp_features['auth'], s.esmtp_features
try:
    s.sendmail('alice@example.org', ['bob@example.net'], b'Subject: before AUTH\r\n\r\nno\r\n')
    raise SystemExit('sent without AUTH')
except smtplib.SMTPSenderRefused as e:
    assert e.smtp_code == 530, e
try:
    s.login('alice', 'wrong')
    raise SystemExit('logged in with a wrong password')
except smtplib.SMTPAuthenticationError as e:
    assert e.smtp_code == 535, e
s.login('alice', 'correct horse')  # AUTH PLAIN, smtplib's choice
s.sendmail('alice@example.org', ['bob@example.net'], b'Subject: by PLAIN\r\n\r\nhi\r\n')
s.quit()
s = smtplib.SMTP('127.0.0.1', port, timeout=30)
s.ehlo()
s.user, s.password = 'alice', 'correct horse'
s.auth('LOGIN', s.auth_login, initial_response_ok=False)
s.sendmail('alice@example.org', ['bob@example.net'], b'Subject: by LOGIN\r\n\r\nhi\r\n')
s.quit()
"#;
    python(script, &[&server.port()], b"").await;
    let messages = server.spool.messages();
    assert_eq!(messages.len(), 2);
    assert!(messages.iter().all(|m| m.authenticated));
    assert_eq!(messages[0].data, b"Subject: by PLAIN\r\n\r\nhi\r\n");
    assert_eq!(messages[1].data, b"Subject: by LOGIN\r\n\r\nhi\r\n");
    assert_eq!(server.stats.refused(Refusal::AuthRequired), 1);
    // smtplib's login tries each mechanism offered before it gives up.
    assert_eq!(server.stats.refused(Refusal::AuthFailed), 2);
    server.stop().await;
}

#[tokio::test]
async fn test_smtplib_sends_over_starttls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path, _) = self_signed(dir.path());
    let tls = SmtpTls::from_pem_files(&cert_path, &key_path).unwrap();
    let server = TestServer::start(config().with_tls(tls).with_auth(alice())).await;
    // smtplib checks the server's certificate against the one we made.
    let script = r#"
import smtplib, ssl, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=30)
s.ehlo()
assert s.has_extn('starttls'), s.esmtp_features
s.starttls(context=ssl.create_default_context(cafile=sys.argv[2]))
s.ehlo()
assert not s.has_extn('starttls'), 'STARTTLS offered twice'
s.login('alice', 'correct horse')
s.sendmail('alice@example.org', ['bob@example.net'], b'Subject: over TLS\r\n\r\nsecret\r\n')
print(s.sock.version())
s.quit()
"#;
    let version = python(script, &[&server.port(), cert_path.to_str().unwrap()], b"").await;
    assert!(String::from_utf8_lossy(&version).starts_with("TLSv1."), "{version:?}");
    let messages = server.spool.messages();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].authenticated);
    assert_eq!(messages[0].data, b"Subject: over TLS\r\n\r\nsecret\r\n");
    server.stop().await;
}

/// A certificate for `localhost` and `127.0.0.1`, in PEM files under `dir`;
/// returns the paths and the certificate's DER.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    (cert_path, key_path, cert.der().to_vec())
}

#[tokio::test]
async fn test_commands_sent_in_clear_after_starttls_are_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path, cert_der) = self_signed(dir.path());
    let tls = SmtpTls::from_pem_files(&cert_path, &key_path).unwrap();
    let server = TestServer::start(config().with_tls(tls)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut greeting = [0u8; 512];
    let n = stream.read(&mut greeting).await.unwrap();
    assert!(greeting[..n].starts_with(b"220 "));
    // A man in the middle appends a command to the client's STARTTLS; it
    // must not be taken as said under TLS.
    stream.write_all(b"EHLO client.test\r\nSTARTTLS\r\nMAIL FROM:<mallory@example.org>\r\n").await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await.unwrap();
        if line.starts_with("220 ") {
            break;
        }
        assert!(line.starts_with("250"), "{line}");
    }
    assert!(reader.buffer().is_empty(), "nothing after the STARTTLS go-ahead");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(cert_der)).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, reader.into_inner()).await.unwrap();
    let (reader, mut writer) = tokio::io::split(tls);
    let mut reader = BufReader::new(reader);
    // Under TLS the session starts afresh: no greeting yet, no transaction.
    writer.write_all(b"RCPT TO:<bob@example.net>\r\nEHLO client.test\r\n").await.unwrap();
    line.clear();
    reader.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("503 5.5.1 send MAIL first"), "the injected MAIL was dropped: {line}");
    let mut ehlo = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await.unwrap();
        ehlo.push_str(&line);
        if line.as_bytes()[3] == b' ' {
            break;
        }
    }
    assert!(ehlo.starts_with("250-gateway.test") && !ehlo.contains("STARTTLS"), "{ehlo}");
    server.stop().await;
}

#[tokio::test]
async fn test_tls_setup_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let error = SmtpTls::from_pem_files(&missing, &missing).unwrap_err().to_string();
    assert!(error.contains("missing.pem"), "{error}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let error = SmtpTls::from_pem_files(&empty, &empty).unwrap_err().to_string();
    assert!(error.contains("no certificate in"), "{error}");
}

#[tokio::test]
async fn test_pipelined_commands_are_answered_in_order() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    client
        .send(
            "EHLO client.test\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n\
             RCPT TO:<not an address>\r\nRCPT TO:<carol@example.com>\r\nDATA\r\n",
        )
        .await;
    let ehlo = client.expect(250).await;
    assert!(ehlo.contains("PIPELINING") && ehlo.contains("ENHANCEDSTATUSCODES"), "{ehlo}");
    assert!(ehlo.contains("SIZE 33554432") && ehlo.contains("8BITMIME"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"), "{ehlo}");
    assert!(client.expect(250).await.starts_with("2.1.0"));
    assert!(client.expect(250).await.starts_with("2.1.5"));
    assert!(client.expect(501).await.starts_with("5.1.3"));
    assert!(client.expect(250).await.starts_with("2.1.5"));
    client.expect(354).await;
    // The message, its end, and the next transaction in one write too.
    client.send("Subject: pipelined\r\n\r\nbody\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n").await;
    assert_eq!(client.expect(250).await, "2.0.0 queued as Q1");
    client.expect(250).await;
    client.expect(250).await;
    client.expect(354).await;
    client.send("second\r\n.\r\nQUIT\r\n").await;
    assert_eq!(client.expect(250).await, "2.0.0 queued as Q2");
    client.expect(221).await;
    assert!(client.closed().await);
    let messages = server.spool.messages();
    assert_eq!(messages[0].rcpt_to, ["bob@example.net", "carol@example.com"]);
    assert_eq!(messages[0].data, b"Subject: pipelined\r\n\r\nbody\r\n");
    assert_eq!(messages[1].mail_from, "", "the null sender");
    assert_eq!(messages[1].data, b"second\r\n");
    server.stop().await;
}

#[tokio::test]
async fn test_oversize_message_is_read_to_its_end_then_refused() {
    let server = TestServer::start(SmtpConfig { max_message_bytes: 1000, ..config() }).await;
    let mut client = server.client().await;
    assert!(client.command("EHLO client.test", 250).await.contains("SIZE 1000"));
    client.command("MAIL FROM:<alice@example.org>", 250).await;
    client.command("RCPT TO:<bob@example.net>", 250).await;
    client.command("DATA", 354).await;
    for _ in 0..30 {
        client.send(&format!("{}\r\n", "x".repeat(98))).await;
    }
    // Lines that look like commands are still message: the server reads
    // to the end before it answers.
    client.send("RSET\r\nQUIT\r\n.\r\n").await;
    assert!(client.expect(552).await.starts_with("5.3.4"));
    // The session goes on, in a fresh state; exactly at the limit is fine.
    client.command("RCPT TO:<bob@example.net>", 503).await;
    client.command("MAIL FROM:<alice@example.org> SIZE=1000", 250).await;
    client.command("RCPT TO:<bob@example.net>", 250).await;
    client.command("DATA", 354).await;
    let exact = format!("{}\r\n", "y".repeat(998));
    client.send(&format!("{exact}.\r\n")).await;
    client.expect(250).await;
    let messages = server.spool.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].data, exact.as_bytes());
    assert_eq!(server.stats.refused(Refusal::MessageTooLarge), 1);
    server.stop().await;
}

#[tokio::test]
async fn test_declared_size_over_the_limit_is_refused_at_mail() {
    let server = TestServer::start(SmtpConfig { max_message_bytes: 1000, ..config() }).await;
    let mut client = server.client().await;
    client.command("EHLO client.test", 250).await;
    let refused = client.command("MAIL FROM:<alice@example.org> SIZE=1001", 552).await;
    assert!(refused.starts_with("5.3.4"), "{refused}");
    client.command("MAIL FROM:<alice@example.org> SIZE=99999999999999999999999", 552).await;
    client.command("MAIL FROM:<alice@example.org> SIZE=1000", 250).await;
    assert_eq!(server.stats.refused(Refusal::MessageTooLarge), 2);
    server.stop().await;
}

#[tokio::test]
async fn test_too_many_recipients_are_refused_one_by_one() {
    let server = TestServer::start(SmtpConfig { max_recipients: 2, ..config() }).await;
    let mut client = server.client().await;
    client.command("EHLO client.test", 250).await;
    client.command("MAIL FROM:<alice@example.org>", 250).await;
    client.command("RCPT TO:<r1@example.net>", 250).await;
    client.command("RCPT TO:<r2@example.net>", 250).await;
    assert!(client.command("RCPT TO:<r3@example.net>", 452).await.starts_with("4.5.3"));
    client.command("RCPT TO:<r4@example.net>", 452).await;
    client.command("DATA", 354).await;
    client.send("hello\r\n.\r\n").await;
    client.expect(250).await;
    assert_eq!(server.spool.messages()[0].rcpt_to, ["r1@example.net", "r2@example.net"]);
    assert_eq!(server.stats.refused(Refusal::TooManyRecipients), 2);
    server.stop().await;
}

/// Sends one message and returns the reply to its end.
async fn send_message(client: &mut RawClient) -> Reply {
    client.command("MAIL FROM:<alice@example.org>", 250).await;
    client.command("RCPT TO:<bob@example.net>", 250).await;
    client.command("DATA", 354).await;
    client.send("Subject: x\r\n\r\nbody\r\n.\r\n").await;
    client.reply().await
}

#[tokio::test]
async fn test_a_spool_that_cannot_keep_the_message_never_gets_a_250() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    client.command("EHLO client.test", 250).await;
    server.spool.refuse_with(Some(SpoolError::Full));
    let reply = send_message(&mut client).await;
    assert_eq!((reply.code, reply.text()), (452, "4.3.1 queue full, try later".to_string()));
    server.spool.refuse_with(Some(SpoolError::Failed("disk on fire".into())));
    let reply = send_message(&mut client).await;
    assert_eq!(reply.code, 451);
    assert!(reply.text().starts_with("4.3.0") && !reply.text().contains("fire"), "{reply:?}");
    server.spool.refuse_with(Some(SpoolError::TooLarge));
    let reply = send_message(&mut client).await;
    assert_eq!(reply.code, 552);
    server.spool.refuse_with(Some(SpoolError::Rejected("the header's line 3 is malformed\r\n250 ok".into())));
    let reply = send_message(&mut client).await;
    assert_eq!(reply.code, 554);
    assert_eq!(
        reply.text(),
        "5.6.0 message refused: the header's line 3 is malformed250 ok",
        "one line, no CRLF injected"
    );
    assert!(server.spool.messages().is_empty());
    assert_eq!(server.stats.messages_accepted(), 0);
    // Once the spool has room again, the client's retry goes through.
    server.spool.refuse_with(None);
    assert_eq!(send_message(&mut client).await.code, 250);
    assert_eq!(server.spool.messages().len(), 1);
    assert_eq!(server.stats.refused(Refusal::SpoolFull), 1);
    assert_eq!(server.stats.refused(Refusal::SpoolFailed), 1);
    assert_eq!(server.stats.refused(Refusal::MessageTooLarge), 1);
    assert_eq!(server.stats.refused(Refusal::SpoolRejected), 1);
    server.stop().await;
}

#[tokio::test]
async fn test_commands_out_of_sequence_get_503() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    client.command("MAIL FROM:<alice@example.org>", 503).await;
    client.command("HELO client.test", 250).await;
    client.command("RCPT TO:<bob@example.net>", 503).await;
    client.command("DATA", 503).await;
    client.command("MAIL FROM:<alice@example.org>", 250).await;
    client.command("MAIL FROM:<alice@example.org>", 503).await;
    client.command("DATA", 503).await;
    client.command("RSET", 250).await;
    client.command("RCPT TO:<bob@example.net>", 503).await;
    client.command("STARTTLS", 502).await;
    client.command("AUTH PLAIN", 502).await;
    assert_eq!(server.stats.refused(Refusal::Sequence), 6);
    assert!(server.spool.messages().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn test_bad_syntax_and_unknown_commands() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    client.command("EHLO", 501).await;
    client.command("EHLO client.test", 250).await;
    assert!(client.command("MAIL FROM:alice@example.org", 501).await.starts_with("5.1.7"));
    assert!(client.command("MAIL FROM:<alice@@example.org>", 501).await.starts_with("5.1.7"));
    client.command("MAIL FROM:<alice@example.org> SIZE=big", 501).await;
    client.command("MAIL FROM:<alice@example.org> BODY=BINARYMIME", 501).await;
    assert!(client.command("MAIL FROM:<alice@example.org> SMTPUTF8", 555).await.starts_with("5.5.4"));
    client.command("MAIL FROM:<alice@example.org> BODY=8BITMIME", 250).await;
    assert!(client.command("RCPT TO:<bob>", 501).await.starts_with("5.1.3"));
    client.command("RCPT TO:<postmaster>", 250).await;
    client.command("DATA now", 501).await;
    client.command("RSET", 250).await;
    client.command("HELLO", 500).await;
    client.command("EXPN staff", 502).await;
    client.command("BDAT 100 LAST", 502).await;
    client.command("VRFY bob", 252).await;
    assert!(client.command("HELP", 214).await.contains("EHLO"));
    client.command("NOOP", 250).await;
    client.send_bytes(b"\x00\xff\xfe garbage\r\n").await;
    client.expect(500).await;
    client.command("QUIT", 221).await;
    assert_eq!(server.stats.refused(Refusal::Syntax), 8);
    assert_eq!(server.stats.refused(Refusal::UnknownCommand), 4);
    server.stop().await;
}

#[tokio::test]
async fn test_lines_too_long() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    client.command("EHLO client.test", 250).await;
    // A command line of 600 bytes, beyond RFC 5321's 512.
    let long = format!("NOOP {}", "x".repeat(595));
    assert!(client.command(&long, 500).await.starts_with("5.5.2"));
    // A huge one is discarded as it arrives, and the session goes on.
    let huge = format!("MAIL FROM:<{}@example.org>", "x".repeat(1_000_000));
    client.command(&huge, 500).await;
    client.command("NOOP", 250).await;
    // A 5,000-byte text line is over RFC 5321's 1,000 but within our
    // lenient bound; a 20,000-byte one is not.
    let long_line = "z".repeat(5000);
    client.command("MAIL FROM:<alice@example.org>", 250).await;
    client.command("RCPT TO:<bob@example.net>", 250).await;
    client.command("DATA", 354).await;
    client.send(&format!("{long_line}\r\n.\r\n")).await;
    client.expect(250).await;
    client.command("MAIL FROM:<alice@example.org>", 250).await;
    client.command("RCPT TO:<bob@example.net>", 250).await;
    client.command("DATA", 354).await;
    client.send(&format!("before\r\n{}\r\nafter\r\n.\r\n", "w".repeat(20_000))).await;
    assert!(client.expect(552).await.starts_with("5.3.4"));
    client.command("NOOP", 250).await;
    let messages = server.spool.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].data, format!("{long_line}\r\n").as_bytes());
    assert_eq!(server.stats.refused(Refusal::CommandLineTooLong), 2);
    assert_eq!(server.stats.refused(Refusal::TextLineTooLong), 1);
    server.stop().await;
}

#[tokio::test]
async fn test_a_message_ends_only_at_crlf_dot_crlf() {
    let server = TestServer::start(config()).await;
    let mut client = server.client().await;
    client.command("EHLO client.test", 250).await;
    client.command("MAIL FROM:<alice@example.org>", 250).await;
    client.command("RCPT TO:<bob@example.net>", 250).await;
    client.command("DATA", 354).await;
    // A dot line after or before a bare LF is content (no smuggled second
    // message); bare LFs become CRLF; a bare CR is content.
    client.send_bytes(b"one\r\n.\nMAIL FROM:<mallory@example.org>\r\ntwo\n.\r\nthree\rfour\r\n..five\r\n.\r\n").await;
    client.expect(250).await;
    client.command("NOOP", 250).await;
    let messages = server.spool.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].data,
        b"one\r\n.\r\nMAIL FROM:<mallory@example.org>\r\ntwo\r\n.\r\nthree\rfour\r\n.five\r\n"
    );
    server.stop().await;
}

/// Standard base64 (the AUTH exchanges' encoding).
fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[tokio::test]
async fn test_auth_is_required_before_mail() {
    let server = TestServer::start(config().with_auth(alice())).await;
    let mut client = server.client().await;
    client.command("AUTH PLAIN", 503).await;
    // Over loopback AUTH is offered without TLS.
    assert!(client.command("EHLO client.test", 250).await.contains("AUTH PLAIN LOGIN"));
    assert!(client.command("MAIL FROM:<alice@example.org>", 530).await.starts_with("5.7.0"));
    let wrong = base64(b"\0alice\0battery staple");
    assert!(client.command(&format!("AUTH PLAIN {wrong}"), 535).await.starts_with("5.7.8"));
    client.command("AUTH CRAM-MD5", 504).await;
    client.command("AUTH PLAIN", 334).await;
    client.command("*", 501).await;
    client.command("AUTH PLAIN not-base64!", 501).await;
    // LOGIN, step by step.
    assert_eq!(client.command("AUTH LOGIN", 334).await, "VXNlcm5hbWU6");
    assert_eq!(client.command(&base64(b"alice"), 334).await, "UGFzc3dvcmQ6");
    assert!(client.command(&base64(b"correct horse"), 235).await.starts_with("2.7.0"));
    client.command("AUTH PLAIN", 503).await;
    client.command("MAIL FROM:<alice@example.org>", 250).await;
    // PLAIN with its response after the challenge, in a second session.
    let mut second = server.client().await;
    second.command("EHLO client.test", 250).await;
    second.command("AUTH PLAIN", 334).await;
    second.command(&base64(b"\0alice\0correct horse"), 235).await;
    assert_eq!(send_message(&mut second).await.code, 250);
    assert!(server.spool.messages()[0].authenticated);
    assert_eq!(server.stats.refused(Refusal::AuthRequired), 1);
    server.stop().await;
}

#[tokio::test]
async fn test_repeated_auth_failures_close_the_session() {
    let server = TestServer::start(config().with_auth(alice())).await;
    let mut client = server.client().await;
    client.command("EHLO client.test", 250).await;
    let wrong = format!("AUTH PLAIN {}", base64(b"\0alice\0guess"));
    client.command(&wrong, 535).await;
    client.command(&wrong, 535).await;
    assert!(client.command(&wrong, 421).await.starts_with("4.7.0"));
    assert!(client.closed().await);
    assert_eq!(server.stats.refused(Refusal::AuthFailed), 3);
    server.stop().await;
}

#[tokio::test]
async fn test_idle_client_is_disconnected() {
    let server = TestServer::start(SmtpConfig { command_timeout: Duration::from_millis(300), ..config() }).await;
    let mut client = server.client().await;
    client.command("EHLO client.test", 250).await;
    let started = std::time::Instant::now();
    assert!(client.expect(421).await.starts_with("4.4.2"));
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(client.closed().await);
    assert_eq!(server.stats.refused(Refusal::Timeout), 1);
    server.stop().await;
}

#[tokio::test]
async fn test_sessions_beyond_the_limit_get_421() {
    let server = TestServer::start(SmtpConfig { max_sessions: 2, ..config() }).await;
    let mut first = server.client().await;
    let _second = server.client().await;
    let mut third = RawClient::connect(server.addr).await;
    assert!(third.expect(421).await.starts_with("4.3.2"));
    assert!(third.closed().await);
    assert_eq!(server.stats.refused(Refusal::SessionLimit), 1);
    // A session that ends frees its place.
    first.command("QUIT", 221).await;
    assert!(first.closed().await);
    let mut admitted = false;
    for _ in 0..50 {
        let mut next = RawClient::connect(server.addr).await;
        if next.reply().await.code == 220 {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted, "a place freed by QUIT is given to the next client");
    server.stop().await;
}

#[tokio::test]
async fn test_shutdown_lets_the_message_in_progress_finish() {
    let server = TestServer::start(config()).await;
    let mut idle = server.client().await;
    let mut busy = server.client().await;
    busy.command("EHLO client.test", 250).await;
    busy.command("MAIL FROM:<alice@example.org>", 250).await;
    busy.command("RCPT TO:<bob@example.net>", 250).await;
    busy.command("DATA", 354).await;
    busy.send("Subject: in flight\r\n\r\n").await;
    let TestServer { addr, spool, stats, mut stop, task } = server;
    let _ = stop.take().unwrap().send(());
    // The idle session is told at once.
    assert!(idle.expect(421).await.starts_with("4.3.2"));
    assert!(idle.closed().await);
    // The busy one finishes its message, gets its 250, then the 421.
    busy.send("still here\r\n.\r\n").await;
    busy.expect(250).await;
    busy.expect(421).await;
    assert!(busy.closed().await);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "no longer listening");
    assert_eq!(spool.messages()[0].data, b"Subject: in flight\r\n\r\nstill here\r\n");
    assert_eq!(stats.messages_accepted(), 1);
}
