//! Anonymous mail end to end: a real mail client (Python's smtplib) submits
//! to `nox-client smtp`, the gateway sends the message through a devnet's
//! mixnet, the exit delivers it by SMTP to the recipient domain's mail
//! exchanger found in DNS, or posts it to a newsgroup by NNTP.
//!
//! What stands for what, all real programs on loopback:
//! * the user's mail program: Python's `smtplib`;
//! * the recipient's mail exchanger: an aiosmtpd server (Debian's
//!   python3-aiosmtpd; `mail/tests/support/smtp_sink.py`), which stores each
//!   message it accepts as a file;
//! * the DNS the exit asks for MX records: dnsmasq (Debian's dnsmasq-base),
//!   serving `example.test MX 10 mx.example.test` and `mx.example.test A
//!   127.0.0.1` (the exit's `mail_allow_loopback` lets it deliver there;
//!   its `mail_smtp_port` is the sink's port, since port 25 is not ours);
//! * the news server: INN (Debian's inn2) on 127.0.0.1:119, with its
//!   default group `local.test`; scripts/test installs and starts it.
//!
//! One devnet for the file (one test function with sections): mail with a
//! 5 MiB attachment, 8-bit text and MIME parts arrives scrubbed with its body
//! byte-exact; a news post appears in the group; a gateway killed after its
//! `250` and an exit killed after its acknowledgement lose nothing.
//!
//! Needs `cargo build -p nox-node --bin nox -p nox-client --bin nox-client`
//! and `npm ci` first (scripts/test does both).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nox_devnet::{Devnet, DevnetOptions, ExitTweak, Launch};
use rand::RngCore;

const PASSPHRASE: &str = "a mail user's passphrase";

/// Whether a tool this test runs is here. Missing on CI (`CI=true`, where
/// scripts/test installs it) is a failure; elsewhere the test is skipped.
fn tool(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{what} is missing, and CI=true: scripts/test installs it");
    eprintln!("SKIP: {what} is not installed here; this test needs it (scripts/test installs it)");
    false
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

fn wait_port(port: u16, what: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The aiosmtpd sink on `port`, storing into `inbox`.
fn start_sink(port: u16, inbox: &Path) -> Proc {
    let script = nox_devnet::repo_root().join("mail/tests/support/smtp_sink.py");
    let child = Command::new("/usr/bin/python3")
        .arg(script)
        .args(["--port", &port.to_string(), "--dir"])
        .arg(inbox)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    wait_port(port, "the aiosmtpd sink", Duration::from_secs(20));
    proc
}

/// The messages the sink holds: (envelope head, message bytes).
fn inbox(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "msg"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).unwrap();
            let split = bytes.windows(2).position(|w| w == b"\n\n").unwrap();
            (String::from_utf8_lossy(&bytes[..split]).into_owned(), bytes[split + 2..].to_vec())
        })
        .collect()
}

/// Waits for a message whose text holds `marker`; returns every such one.
async fn arrived(dir: &Path, marker: &str, limit: Duration) -> Vec<(String, Vec<u8>)> {
    let deadline = Instant::now() + limit;
    loop {
        let found: Vec<_> =
            inbox(dir).into_iter().filter(|(_, m)| String::from_utf8_lossy(m).contains(marker)).collect();
        if !found.is_empty() {
            return found;
        }
        assert!(Instant::now() < deadline, "no message with {marker} arrived within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Submits `message` with Python's smtplib to the gateway on `port`;
/// returns smtplib's outcome line (`OK <reply>` or the exception).
fn submit(port: u16, rcpts: &[&str], message: &[u8]) -> String {
    let script = r#"
import smtplib, sys
port, rcpts, path = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
data = open(path, "rb").read()
try:
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as s:
        s.ehlo("laptop.home.example")
        s.mail("alice@example.org", ["SIZE=%d" % len(data)])
        for r in rcpts:
            code, text = s.rcpt(r)
            if code != 250:
                print("RCPT %d %s" % (code, text.decode())); sys.exit(0)
        code, text = s.data(data)
        print("OK %d %s" % (code, text.decode()))
except smtplib.SMTPResponseException as e:
    print("ERR %d %s" % (e.smtp_code, e.smtp_error.decode()))
"#;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), message).unwrap();
    let out = Command::new("python3")
        .args(["-c", script, &port.to_string(), &rcpts.join(",")])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "smtplib: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The header block of a message, and its body.
fn split_message(m: &[u8]) -> (String, &[u8]) {
    let at = m.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    (String::from_utf8_lossy(&m[..at + 2]).into_owned(), &m[at + 4..])
}

/// A message as a mail program writes it, with the fields that give its
/// user away, a multipart body with 8-bit text and an attachment of
/// `attachment` random bytes.
fn message(subject: &str, to: &str, attachment: usize) -> (Vec<u8>, Vec<u8>) {
    use base64::Engine;
    let mut head = String::new();
    head.push_str("Received: from laptop.home.example (laptop.home.example [192.168.1.20])\r\n");
    head.push_str("\tby smtp.isp.example with ESMTPSA id 4F2A; Tue, 1 Dec 2026 08:31:12 +0100\r\n");
    head.push_str("X-Mailer: ExampleMail 9.1 (laptop build)\r\n");
    head.push_str("User-Agent: Mozilla/5.0 (X11; Linux x86_64) Thunderbird/140.0\r\n");
    head.push_str("Message-ID: <1234.5678@laptop.home.example>\r\n");
    head.push_str("Date: Tue, 1 Dec 2026 08:31:12 +0100\r\n");
    head.push_str("From: Alice <alice@example.org>\r\n");
    head.push_str(&format!("To: {to}\r\n"));
    head.push_str(&format!("Subject: {subject}\r\n"));
    head.push_str("MIME-Version: 1.0\r\n");
    head.push_str("Content-Type: multipart/mixed; boundary=\"nox-boundary\"\r\n\r\n");
    let mut body = Vec::new();
    body.extend_from_slice(b"--nox-boundary\r\nContent-Type: text/plain; charset=utf-8\r\n");
    body.extend_from_slice(b"Content-Transfer-Encoding: 8bit\r\n\r\n");
    body.extend_from_slice("Grüße aus dem Mixnet — ½ € ✓\r\n".as_bytes());
    body.extend_from_slice(b".a line that starts with a dot\r\n.\r\nand one that is only a dot, above\r\n");
    if attachment > 0 {
        let mut bytes = vec![0u8; attachment];
        rand::thread_rng().fill_bytes(&mut bytes);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        body.extend_from_slice(b"--nox-boundary\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\n");
        body.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n\r\n");
        for line in b64.as_bytes().chunks(76) {
            body.extend_from_slice(line);
            body.extend_from_slice(b"\r\n");
        }
    }
    body.extend_from_slice(b"--nox-boundary--\r\n");
    let mut full = head.into_bytes();
    full.extend_from_slice(&body);
    (full, body)
}

/// Checks that `head` (a delivered header block) kept what the user wrote
/// and lost what gave them away.
fn assert_scrubbed(head: &str, subject: &str) {
    for gone in ["Received:", "X-Mailer:", "User-Agent:", "laptop", "192.168.1.20", "+0100", "08:31:12"] {
        assert!(!head.contains(gone), "{gone} survived:\n{head}");
    }
    assert!(head.contains(&format!("Subject: {subject}\r\n")), "{head}");
    assert!(head.contains("From: Alice <alice@example.org>\r\n"), "{head}");
    let id = head.lines().find(|l| l.starts_with("Message-ID: ")).expect("a Message-ID");
    assert!(id.ends_with("@nox.invalid>"), "{id}");
    let date = head.lines().find(|l| l.starts_with("Date: ")).expect("a Date");
    assert!(date.ends_with(":00:00 +0000"), "coarsened to the hour, in UTC: {date}");
}

/// The gateway process: `nox-client smtp`, its log in `log`.
fn start_gateway(config: &Path, port: u16, log: &Path) -> Proc {
    let bin = nox_devnet::nox_client_binary().unwrap();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let child = Command::new(bin)
        .args(["--log", "info,nox_client=debug", "smtp", "--config"])
        .arg(config)
        .env("NOX_MAIL_PASSPHRASE", PASSPHRASE)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let proc = Proc(child);
    wait_port(port, "nox-client smtp", Duration::from_secs(60));
    proc
}

/// `nox-client mail queue`'s lines.
fn queue_lines(config: &Path) -> Vec<serde_json::Value> {
    let bin = nox_devnet::nox_client_binary().unwrap();
    let out = Command::new(bin).args(["mail", "queue", "--config"]).arg(config).output().unwrap();
    assert!(out.status.success(), "mail queue: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// One NNTP exchange with INN: the article numbers of `group` whose Subject
/// holds `marker`, and the first such article's text.
fn find_news(group: &str, marker: &str) -> Option<String> {
    let stream = TcpStream::connect(("127.0.0.1", 119)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    let mut read_line = |r: &mut BufReader<TcpStream>| {
        line.clear();
        r.read_line(&mut line).unwrap();
        line.trim_end().to_string()
    };
    let greeting = read_line(&mut r);
    assert!(greeting.starts_with("20"), "{greeting}");
    w.write_all(b"MODE READER\r\n").unwrap();
    read_line(&mut r);
    w.write_all(format!("GROUP {group}\r\n").as_bytes()).unwrap();
    let g = read_line(&mut r);
    let parts: Vec<&str> = g.split_whitespace().collect();
    assert_eq!(parts.first(), Some(&"211"), "{g}");
    let (low, high) = (parts[2], parts[3]);
    w.write_all(format!("XHDR Subject {low}-{high}\r\n").as_bytes()).unwrap();
    let head = read_line(&mut r);
    let mut number = None;
    if head.starts_with("221") {
        loop {
            let l = read_line(&mut r);
            if l == "." {
                break;
            }
            if l.contains(marker) && number.is_none() {
                number = l.split_whitespace().next().map(str::to_string);
            }
        }
    }
    let n = number?;
    w.write_all(format!("ARTICLE {n}\r\n").as_bytes()).unwrap();
    let a = read_line(&mut r);
    assert!(a.starts_with("220"), "{a}");
    let mut text = String::new();
    loop {
        let l = read_line(&mut r);
        if l == "." {
            break;
        }
        text.push_str(l.strip_prefix('.').unwrap_or(&l));
        text.push('\n');
    }
    let _ = w.write_all(b"QUIT\r\n");
    Some(text)
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_and_news_cross_the_mixnet_and_nothing_accepted_is_lost() {
    if !tool("aiosmtpd (python3-aiosmtpd)", Path::new("/usr/lib/python3/dist-packages/aiosmtpd").exists())
        || !tool("dnsmasq (dnsmasq-base)", Path::new("/usr/sbin/dnsmasq").exists())
    {
        return;
    }
    let news =
        tool("INN on 127.0.0.1:119 (inn2, started by scripts/test)", TcpStream::connect(("127.0.0.1", 119)).is_ok());
    let dir = tempfile::tempdir().unwrap();
    let inbox_dir = dir.path().join("inbox");
    std::fs::create_dir(&inbox_dir).unwrap();
    let sink_port = free_port();
    let mut sink = Some(start_sink(sink_port, &inbox_dir));
    let dns_port = free_port();
    let _dns = Proc(
        Command::new("/usr/sbin/dnsmasq")
            .args([
                "--no-daemon",
                "--port",
                &dns_port.to_string(),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--user=root",
                "--mx-host=example.test,mx.example.test,10",
                "--host-record=mx.example.test,127.0.0.1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let tweak = ExitTweak(Arc::new(move |exit| {
        exit.mail = true;
        exit.mail_resolvers = vec![format!("127.0.0.1:{dns_port}")];
        exit.mail_smtp_port = sink_port;
        exit.mail_allow_loopback = true;
        exit.mail_batch_secs = 2;
        exit.mail_retry_min_secs = 1;
        exit.mail_retry_max_secs = 2;
        exit.mail_nntp_server = Some("127.0.0.1:119".into());
    }));
    let opts = DevnetOptions {
        per_layer: [1, 1, 1],
        launch: Launch::Processes,
        exit_tweak: Some(tweak),
        ..Default::default()
    };
    let mut net = Devnet::start(opts).await.unwrap();
    let exit = net.nodes.iter().position(|n| n.layer() == 2).unwrap();

    let gateway_port = free_port();
    let mut cfg = net.client_file();
    cfg.requests.attempt_timeout_ms = 8_000;
    cfg.mail.queue = dir.path().join("mail-queue.redb");
    cfg.mail.listen = SocketAddr::from(([127, 0, 0, 1], gateway_port));
    cfg.mail.retry_min_secs = 1;
    cfg.mail.retry_max_secs = 2;
    let config = dir.path().join("nox-client.toml");
    std::fs::write(&config, toml::to_string(&cfg).unwrap()).unwrap();
    let log = dir.path().join("gateway.log");
    let gateway = start_gateway(&config, gateway_port, &log);

    // 1. Mail with a 5 MiB attachment, 8-bit text and MIME parts.
    let subject = format!("through NOX {:016x}", rand::random::<u64>());
    let (raw, body) = message(&subject, "Bob <bob@example.test>", 5 << 20);
    let started = Instant::now();
    let outcome = submit(gateway_port, &["bob@example.test"], &raw);
    assert!(outcome.starts_with("OK 250 2.0.0 queued as "), "{outcome}");
    let got = arrived(&inbox_dir, &subject, Duration::from_secs(180)).await;
    eprintln!("a {} byte message arrived in {:?}", raw.len(), started.elapsed());
    assert_eq!(got.len(), 1, "delivered once");
    let (envelope, delivered) = &got[0];
    assert!(
        envelope.contains("FROM <>"),
        "the null reverse path: nobody can bounce to an anonymous sender\n{envelope}"
    );
    assert!(envelope.contains("RCPT bob@example.test"), "{envelope}");
    let (head, delivered_body) = split_message(delivered);
    assert_scrubbed(&head, &subject);
    assert!(
        delivered_body == body.as_slice(),
        "the body arrives byte for byte ({} vs {} bytes)",
        delivered_body.len(),
        body.len()
    );
    // The gateway's queue empties once the exit acknowledged.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !queue_lines(&config).is_empty() {
        assert!(Instant::now() < deadline, "the acknowledged entry is still queued");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // 2. A news post.
    if news {
        let subject = format!("news through NOX {:016x}", rand::random::<u64>());
        let (raw, _) = message(&subject, "local.test@news.nox.invalid", 0);
        let outcome = submit(gateway_port, &["local.test@news.nox.invalid"], &raw);
        assert!(outcome.starts_with("OK 250"), "{outcome}");
        let deadline = Instant::now() + Duration::from_secs(120);
        let article = loop {
            if let Some(a) = find_news("local.test", &subject) {
                break a;
            }
            assert!(Instant::now() < deadline, "the post did not appear in local.test");
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert!(article.contains("Newsgroups: local.test"), "{article}");
        assert!(article.contains("Grüße aus dem Mixnet"), "{article}");
        for gone in ["X-Mailer", "User-Agent", "laptop", "192.168.1.20"] {
            assert!(!article.contains(gone), "{gone} survived:\n{article}");
        }
    }

    // 3. A gateway killed after its 250 loses nothing: with the exit down,
    // the message can only wait in the gateway's queue.
    net.kill_node(exit).await;
    let subject = format!("kept by the gateway {:016x}", rand::random::<u64>());
    let (raw, _) = message(&subject, "bob@example.test", 1000);
    let outcome = submit(gateway_port, &["bob@example.test"], &raw);
    assert!(outcome.starts_with("OK 250"), "{outcome}");
    drop(gateway); // SIGKILL
    let queued = queue_lines(&config);
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0]["state"], "waiting");
    net.start_node_as(exit, Launch::Processes).await.unwrap();
    let gateway = start_gateway(&config, gateway_port, &log);
    let got = arrived(&inbox_dir, &subject, Duration::from_secs(180)).await;
    assert_eq!(got.len(), 1, "delivered once");

    // 4. An exit killed after its acknowledgement loses nothing: with the
    // mail exchanger down the exit keeps deferring the message, then dies;
    // after its restart it delivers from its queue.
    drop(sink.take());
    let subject = format!("kept by the exit {:016x}", rand::random::<u64>());
    let (raw, _) = message(&subject, "bob@example.test", 1000);
    let outcome = submit(gateway_port, &["bob@example.test"], &raw);
    assert!(outcome.starts_with("OK 250"), "{outcome}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if queue_lines(&config).is_empty() {
            break; // acknowledged: now only the exit has it
        }
        assert!(Instant::now() < deadline, "the exit never acknowledged");
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // a delivery attempt or two fail
    net.kill_node(exit).await;
    let _sink = start_sink(sink_port, &inbox_dir);
    net.start_node_as(exit, Launch::Processes).await.unwrap();
    let got = arrived(&inbox_dir, &subject, Duration::from_secs(120)).await;
    assert_eq!(got.len(), 1, "delivered once, after the restart");
    // The sink stores the message before the exit records the outcome.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = net.metrics_of(exit).await.unwrap();
        let delivered = nox_devnet::metric_sum(&metrics, "nox_exit_mail_delivered_total", &[]);
        let queued = nox_devnet::metric_sum(&metrics, "nox_exit_mail_queue_entries", &[]);
        if delivered >= 1 && queued == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the restarted exit never recorded the delivery:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 5. The node's SMTP entry: a mail program hands the message to the
    // entry node itself, which sends it through the mixnet.
    let entry = net.nodes.iter().position(|n| n.layer() == 0).unwrap();
    let entry_port = free_port();
    net.stop_node(entry).await;
    {
        let node = &mut net.nodes[entry];
        node.config.smtp_entry.enabled = true;
        node.config.smtp_entry.listen = SocketAddr::from(([127, 0, 0, 1], entry_port));
        node.config.smtp_entry.retry_min_secs = 1;
        node.config.smtp_entry.retry_max_secs = 2;
        std::fs::write(&node.config_path, toml::to_string(&node.config).unwrap()).unwrap();
    }
    net.start_node_as(entry, Launch::Processes).await.unwrap();
    wait_port(entry_port, "the node's SMTP entry", Duration::from_secs(30));
    let subject = format!("through the entry node {:016x}", rand::random::<u64>());
    let (raw, body) = message(&subject, "bob@example.test", 1000);
    let outcome = submit(entry_port, &["bob@example.test"], &raw);
    assert!(outcome.starts_with("OK 250 2.0.0 queued as "), "{outcome}");
    let got = arrived(&inbox_dir, &subject, Duration::from_secs(120)).await;
    assert_eq!(got.len(), 1, "delivered once");
    let (head, delivered_body) = split_message(&got[0].1);
    assert_scrubbed(&head, &subject);
    assert!(delivered_body == body.as_slice());
    let data_dir = &net.nodes[entry].config.node.data_dir;
    assert!(data_dir.join("smtp-entry-queue.redb").exists() && data_dir.join("smtp-entry.key").exists());
    let bad = submit(entry_port, &["bob@example.test", "local.test@news.nox.invalid"], &raw);
    assert!(bad.contains(" 554 5.6.0 "), "mail and news in one message are refused: {bad}");

    drop(gateway);
    net.shutdown().await;
}
