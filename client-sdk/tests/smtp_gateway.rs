//! `nox-client smtp` as a user runs it, with no NOX network at all: the
//! real binary, Python's `smtplib` as the mail program, and a static
//! topology whose nodes do not exist (loopback ports nobody listens on).
//!
//! The gateway must take mail while the network is out of reach: each
//! message is checked, scrubbed and sealed into the queue before the `250`,
//! stays there across a SIGTERM and a restart, and is shown by `nox-client
//! mail queue` (from the running gateway's snapshot, or from the file) and
//! removed by `nox-client mail discard`. What cannot be sent is refused with
//! the SMTP code a mail program acts on, and a gateway that should not start
//! (a remote address, a wrong passphrase, a bad configuration) says why.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nox_client::mail::{KdfParams, MailId, MailQueue, QueueLimits};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_nox-client");
const PASS: &str = "a passphrase for the gateway's queue";

/// Submits the messages of the plan file named by its argument in one SMTP
/// session, with `smtplib`'s own commands, and
/// prints every reply as JSON: `[{"mail": [code, text], "rcpt": [[code,
/// text], …], "data": [code, text] | null}, …]`. `DATA` is sent only when
/// a recipient was taken.
const SMTP_SCRIPT: &str = r#"
import json, smtplib, sys
plan = json.load(open(sys.argv[1]))
def reply(r):
    return [r[0], r[1].decode("utf-8", "replace")]
out = []
with smtplib.SMTP("127.0.0.1", plan["port"], timeout=30) as s:
    s.ehlo("laptop.home")
    for m in plan["messages"]:
        t = {"mail": reply(s.mail(m["from"], m["options"])), "rcpt": [], "data": None}
        if t["mail"][0] == 250:
            t["rcpt"] = [reply(s.rcpt(r)) for r in m["to"]]
            if any(code == 250 for code, _ in t["rcpt"]):
                try:
                    t["data"] = reply(s.data(bytes.fromhex(m["data"])))
                except smtplib.SMTPDataError as e:
                    t["data"] = [e.smtp_code, e.smtp_error.decode("utf-8", "replace")]
        s.rset()
        out.append(t)
print(json.dumps(out))
"#;

/// A loopback port free when asked (nobody listens on it afterwards).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A valid node id (an ed25519 public key) for `seed`.
fn node_id(seed: u8) -> String {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key();
    format!("0x{}", hex::encode(key.to_bytes()))
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// A temporary directory with a client configuration: a static topology of
/// three nodes (one per layer) that do not exist, fast-failing connection
/// attempts, and a `[mail]` section with `mail_extra` appended.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    queue: PathBuf,
    port: u16,
}

impl Setup {
    fn new(mail_extra: &str) -> Setup {
        Setup::with_listen(mail_extra, None)
    }

    fn with_listen(mail_extra: &str, listen: Option<&str>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let queue = dir.path().join("mail-queue.redb");
        let port = free_port();
        let listen = listen.map_or_else(|| format!("127.0.0.1:{port}"), str::to_string);
        let mut text = String::from("[network]\nconnect_timeout_ms = 200\n\n[topology]\nsource = \"static\"\n");
        for layer in 0..3u8 {
            text.push_str(&format!(
                "[[topology.nodes]]\nnode_id = \"{}\"\nlayer = {layer}\naddress = \"/ip4/127.0.0.1/tcp/{}\"\n",
                node_id(layer + 1),
                free_port()
            ));
        }
        text.push_str("\n[requests]\nattempt_timeout_ms = 200\nattempts = 1\n");
        text.push_str(&format!(
            "\n[mail]\nqueue = {}\nlisten = {}\nhostname = \"gateway.test\"\n",
            toml_string(&queue.to_string_lossy()),
            toml_string(&listen),
        ));
        // Retries soon after the first try, unless the test sets them.
        if !mail_extra.contains("retry_") {
            text.push_str("retry_min_secs = 1\nretry_max_secs = 2\n");
        }
        text.push_str(mail_extra);
        text.push('\n');
        let config = dir.path().join("nox-client.toml");
        std::fs::write(&config, text).unwrap();
        Setup { dir, config, queue, port }
    }

    fn snapshot(&self) -> PathBuf {
        self.dir.path().join("mail-queue.redb.status")
    }

    fn passphrase_file(&self, pass: &str) -> PathBuf {
        let path = self.dir.path().join("passphrase");
        std::fs::write(&path, format!("{pass}\n")).unwrap();
        path
    }

    /// `nox-client ARGS --config FILE`, with no passphrase in the environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args).arg("--config").arg(&self.config).env_remove("NOX_MAIL_PASSPHRASE");
        for (key, _) in std::env::vars() {
            if key.starts_with("NOX_CLIENT_") {
                cmd.env_remove(key);
            }
        }
        cmd
    }

    /// Runs a command that ends by itself, within `limit`.
    fn run(&self, cmd: Command, limit: Duration) -> Finished {
        let mut proc = Proc::spawn(cmd, self.dir.path());
        let status =
            proc.wait_timeout(limit).unwrap_or_else(|| panic!("{cmd:?} did not end in {limit:?}", cmd = proc.what));
        Finished { status, stdout: proc.stdout(), stderr: proc.stderr() }
    }

    /// `nox-client mail queue`, parsed, with no passphrase anywhere.
    fn mail_queue(&self) -> Vec<Value> {
        let done = self.run(self.command(&["mail", "queue"]), Duration::from_secs(20));
        assert!(done.status.success(), "mail queue failed: {}", done.stderr);
        done.stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }

    /// `mail queue` until `ready` holds for its list (the running gateway
    /// rewrites its snapshot every 2 s); the last list.
    fn mail_queue_until(&self, limit: Duration, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let list = self.mail_queue();
            if ready(&list) || start.elapsed() > limit {
                return list;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn discard(&self, id: &str) -> Finished {
        let file = self.passphrase_file(PASS);
        let mut cmd = self.command(&["mail", "discard"]);
        cmd.arg("--passphrase-file").arg(file).arg(id);
        self.run(cmd, Duration::from_secs(30))
    }

    /// Starts `nox-client smtp` with the passphrase in NOX_MAIL_PASSPHRASE
    /// and waits until it takes connections.
    fn start_gateway(&self) -> Gateway {
        let mut cmd = self.command(&["smtp"]);
        cmd.env("NOX_MAIL_PASSPHRASE", PASS);
        let mut proc = Proc::spawn(cmd, self.dir.path());
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = proc.try_wait() {
                panic!("the gateway exited ({status}) before listening: {}", proc.stderr());
            }
            assert!(start.elapsed() < Duration::from_secs(30), "the gateway did not listen: {}", proc.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
        Gateway { proc, port: self.port, dir: self.dir.path().to_path_buf() }
    }

    /// Opens the queue as the gateway left it (the stored KDF parameters
    /// are used whatever is passed).
    fn open_queue(&self) -> MailQueue {
        MailQueue::open(&self.queue, PASS, KdfParams::insecure_fast(), QueueLimits::default()).unwrap()
    }
}

struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// A child process, killed and reaped when dropped; its output goes to
/// files so that a chatty process never blocks on a full pipe.
struct Proc {
    child: Child,
    what: String,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, dir: &Path) -> Proc {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let (out, err) = (dir.join(format!("proc-{n}.out")), dir.join(format!("proc-{n}.err")));
        let what = format!("{cmd:?}");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        Proc { child, what, out, err }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A running `nox-client smtp`.
struct Gateway {
    proc: Proc,
    port: u16,
    /// Where the plans and outputs of submissions go.
    dir: PathBuf,
}

impl Gateway {
    /// SIGTERM; the exit status within `limit`, and the log.
    fn terminate(mut self, limit: Duration) -> (ExitStatus, String) {
        let pid = self.proc.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid} failed");
        let status = self
            .proc
            .wait_timeout(limit)
            .unwrap_or_else(|| panic!("the gateway did not exit within {limit:?} of SIGTERM: {}", self.proc.stderr()));
        (status, self.proc.stderr())
    }

    fn submit(&self, messages: &[Submission]) -> Vec<Transaction> {
        submit(self.port, &self.dir, messages)
    }
}

/// One message for [`SMTP_SCRIPT`].
struct Submission {
    to: Vec<&'static str>,
    data: Vec<u8>,
    /// `MAIL FROM` parameters (`SIZE=n`).
    options: Vec<&'static str>,
}

impl Submission {
    fn new(to: &[&'static str], data: &[u8]) -> Submission {
        Submission { to: to.to_vec(), data: data.to_vec(), options: Vec::new() }
    }
}

/// The replies to one [`Submission`].
#[derive(Debug)]
struct Transaction {
    mail: (u64, String),
    rcpt: Vec<(u64, String)>,
    data: Option<(u64, String)>,
}

impl Transaction {
    /// The id of `250 2.0.0 queued as <id>`, or a panic naming the reply.
    fn queued_id(&self) -> String {
        let (code, text) = self.data.clone().unwrap_or_else(|| panic!("no DATA: {self:?}"));
        assert_eq!(code, 250, "{self:?}");
        let id = text.strip_prefix("2.0.0 queued as ").unwrap_or_else(|| panic!("{text}")).to_string();
        assert!(id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        id
    }

    /// The `DATA` reply's code and text (it must have been sent).
    fn data(&self) -> (u64, String) {
        self.data.clone().unwrap_or_else(|| panic!("no DATA: {self:?}"))
    }
}

fn reply(value: &Value) -> (u64, String) {
    (value[0].as_u64().unwrap(), value[1].as_str().unwrap().to_string())
}

/// Runs [`SMTP_SCRIPT`] against `port`, its files in `dir`.
fn submit(port: u16, dir: &Path, messages: &[Submission]) -> Vec<Transaction> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let plan = json!({
        "port": port,
        "messages": messages.iter().map(|m| json!({
            "from": "alice@example.org",
            "to": m.to,
            "data": hex::encode(&m.data),
            "options": m.options,
        })).collect::<Vec<_>>(),
    });
    let file = dir.join(format!("plan-{}.json", NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&file, plan.to_string()).unwrap();
    let mut python = Command::new("python3");
    python.arg("-c").arg(SMTP_SCRIPT).arg(&file);
    let mut proc = Proc::spawn(python, dir);
    let status = proc.wait_timeout(Duration::from_secs(60)).expect("smtplib did not finish in 60 s");
    assert!(status.success(), "smtplib failed (is python3 installed?): {}", proc.stderr());
    let replies: Vec<Value> = serde_json::from_str(&proc.stdout()).unwrap();
    replies
        .iter()
        .map(|t| Transaction {
            mail: reply(&t["mail"]),
            rcpt: t["rcpt"].as_array().unwrap().iter().map(reply).collect(),
            data: (!t["data"].is_null()).then(|| reply(&t["data"])),
        })
        .collect()
}

fn ids(list: &[Value]) -> Vec<String> {
    list.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
}

fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

const SIMPLE: &[u8] =
    b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: hello\r\n\r\nkept while the network is away\r\n";

#[test]
fn test_smtp_gateway_keeps_mail_while_the_network_is_unreachable_across_sigterm_and_restart_until_discarded() {
    let setup = Setup::new("");
    let before = now_ms();
    let gateway = setup.start_gateway();

    let replies = gateway.submit(&[Submission::new(&["bob@example.org"], SIMPLE)]);
    assert_eq!(replies[0].mail.0, 250);
    assert_eq!(replies[0].rcpt, vec![(250, "2.1.5 recipient ok".to_string())]);
    let id = replies[0].queued_id();

    // While the gateway holds the file: the snapshot, without a passphrase.
    let list = setup.mail_queue_until(Duration::from_secs(6), |l| ids(l) == [id.as_str()]);
    assert_eq!(ids(&list), [id.as_str()], "the running gateway's snapshot: {list:?}");
    let entry = &list[0];
    assert_eq!(entry["state"], "waiting");
    assert_eq!(entry["attempts"], 0, "the network was never reached");
    let accepted = entry["accepted_ms"].as_u64().unwrap();
    assert!(accepted >= before && accepted <= now_ms(), "{entry}");
    assert!(entry["next_attempt_ms"].as_u64().unwrap() >= accepted, "{entry}");
    assert!(entry["bytes"].as_u64().unwrap() > SIMPLE.len() as u64 / 2, "{entry}");

    // Discarding needs the gateway stopped: refused (the entry is still
    // listed below).
    let refused = setup.discard(&id);
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    assert!(refused.stderr.contains("open in another process"), "{}", refused.stderr);
    assert!(refused.stderr.contains("nox-client smtp"), "{}", refused.stderr);

    let (status, log) = gateway.terminate(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "SIGTERM ends the gateway cleanly: {log}");
    assert!(log.contains("out of reach; mail is accepted and kept"), "the network was never reached: {log}");

    // Stopped: read from the file itself (the snapshot removed to be sure).
    std::fs::remove_file(setup.snapshot()).unwrap();
    let list = setup.mail_queue();
    assert_eq!(ids(&list), [id.as_str()], "{list:?}");
    assert_eq!(list[0]["accepted_ms"].as_u64(), Some(accepted));

    // A restarted gateway keeps the entry and shows it at once.
    let gateway = setup.start_gateway();
    let list = setup.mail_queue();
    assert_eq!(ids(&list), [id.as_str()], "after a restart: {list:?}");
    assert_eq!(gateway.terminate(Duration::from_secs(5)).0.code(), Some(0));

    let done = setup.discard(&id);
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(done.stdout.trim(), format!("discarded {id}"));
    assert!(setup.mail_queue().is_empty());
    let again = setup.discard(&id);
    assert_eq!(again.status.code(), Some(1));
    assert!(again.stderr.contains("no entry"), "{}", again.stderr);
}

#[test]
fn test_smtp_gateway_answers_452_when_the_queue_is_full_and_keeps_what_it_holds() {
    let setup = Setup::new("max_queue_entries = 2");
    let gateway = setup.start_gateway();
    let message = |n: u8| [SIMPLE, &[b'0' + n, b'\r', b'\n']].concat();
    let replies = gateway.submit(&[
        Submission::new(&["bob@example.org"], &message(1)),
        Submission::new(&["bob@example.org"], &message(2)),
        Submission::new(&["bob@example.org"], &message(3)),
    ]);
    let kept = vec![replies[0].queued_id(), replies[1].queued_id()];
    assert_eq!(replies[2].data(), (452, "4.3.1 queue full, try later".to_string()));

    let list = setup.mail_queue_until(Duration::from_secs(6), |l| l.len() == 2);
    let mut listed = ids(&list);
    listed.sort();
    let mut expected = kept.clone();
    expected.sort();
    assert_eq!(listed, expected, "the running gateway's snapshot: {list:?}");

    assert_eq!(gateway.terminate(Duration::from_secs(5)).0.code(), Some(0));
    let mut listed = ids(&setup.mail_queue());
    listed.sort();
    assert_eq!(listed, expected, "from the file");
}

#[test]
fn test_smtp_gateway_refuses_what_it_cannot_send_with_the_codes_a_mail_program_acts_on() {
    let setup = Setup::new("max_message_bytes = 2048\nmax_recipients = 2");
    let gateway = setup.start_gateway();
    let oversize = [SIMPLE, &[b'x'; 70][..], b"\r\n"].concat().repeat(40);
    let declared_large = Submission { options: vec!["SIZE=4096"], ..Submission::new(&["bob@example.org"], SIMPLE) };
    let replies = gateway.submit(&[
        // The third recipient is one too many; the message goes to two.
        Submission::new(&["bob@example.org", "carol@example.net", "dave@example.com"], SIMPLE),
        Submission::new(&["bob@example.org"], &oversize),
        declared_large,
        Submission::new(&["bob@example.org"], b"Not a header\r\n\r\nbody\r\n"),
        Submission::new(&["bob@example.org", "comp.test@news.nox.invalid"], SIMPLE),
        Submission::new(&["nobody"], SIMPLE),
        Submission::new(&["postmaster"], SIMPLE),
    ]);
    assert_eq!(replies.len(), 7);

    let [ok, too_many] = [&replies[0].rcpt[..2], &replies[0].rcpt[2..]];
    assert!(ok.iter().all(|r| r.0 == 250), "{:?}", replies[0]);
    assert_eq!(too_many, [(452, "4.5.3 too many recipients".to_string())]);
    let id = replies[0].queued_id();

    assert_eq!(replies[1].data(), (552, "5.3.4 message exceeds the maximum size of 2048 bytes".to_string()));
    assert_eq!(replies[2].mail, (552, "5.3.4 message exceeds the maximum size of 2048 bytes".to_string()));
    assert_eq!(replies[2].data, None);

    let (code, text) = replies[3].data();
    assert_eq!(code, 554, "{text}");
    assert!(text.starts_with("5.6.0 message refused: header line 1"), "{text}");

    let (code, text) = replies[4].data();
    assert_eq!(code, 554, "{text}");
    assert!(text.starts_with("5.6.0 ") && text.contains("mix mail and newsgroups"), "{text}");

    // Without `@`: refused at RCPT as bad syntax, except `postmaster`, which
    // SMTP takes (RFC 5321 §4.5.1) and the gateway, having no local
    // mailbox to deliver it to, refuses at DATA.
    assert_eq!(replies[5].rcpt, vec![(501, "5.1.3 bad recipient address syntax".to_string())]);
    assert_eq!(replies[5].data, None);
    assert_eq!(replies[6].rcpt, vec![(250, "2.1.5 recipient ok".to_string())]);
    let (code, text) = replies[6].data();
    assert_eq!(
        (code, text.as_str()),
        (554, "5.6.0 message refused: recipient 1 is not an address (local@domain, ASCII, at most 254 bytes)")
    );

    // Only the first message was queued, to its two recipients.
    assert_eq!(gateway.terminate(Duration::from_secs(5)).0.code(), Some(0));
    assert_eq!(ids(&setup.mail_queue()), [id.as_str()]);
    let mail = setup.open_queue().get(id.parse::<MailId>().unwrap()).unwrap();
    assert_eq!(mail.envelope.rcpt_to, ["bob@example.org", "carol@example.net"]);
}

#[test]
fn test_smtp_gateway_stores_the_message_scrubbed_and_sealed() {
    let setup = Setup::new("");
    let gateway = setup.start_gateway();
    let header = "Received: from laptop.home (laptop.home [192.168.1.23])\r\n\tby mail.example.org; Tue, 01 Dec 2026 08:17:43 +0100\r\n\
        From: Alice <alice@example.org>\r\n\
        To: Bob <bob@example.net>\r\n\
        Subject: scrubbed and sealed\r\n\
        Message-ID: <20261201081742.4242@laptop.home>\r\n\
        Date: Tue, 01 Dec 2026 08:17:42 +0100\r\n\
        X-Mailer: LaptopMail 9.1\r\n\
        User-Agent: LaptopMail/9.1 (X11; Linux x86_64)\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=utf-8\r\n";
    // Leading dots (smtplib doubles them, the server undoes it), 8-bit text,
    // trailing blanks, an empty line.
    let body: &[u8] =
        b"The body text only the recipient reads: marmalade-7f3a9c.\r\n.one dot\r\n..two dots\r\n\xc3\xa9t\xc3\xa9  \r\n\r\nend\r\n";
    let message = [header.as_bytes(), b"\r\n", body].concat();
    let replies = gateway.submit(&[Submission::new(&["bob@example.net"], &message)]);
    let id = replies[0].queued_id();
    assert_eq!(gateway.terminate(Duration::from_secs(5)).0.code(), Some(0));

    let queue = setup.open_queue();
    let due = queue.due(SystemTime::now()).unwrap();
    assert!(due.corrupt.is_empty());
    assert_eq!(due.mail.len(), 1, "never sent, so due");
    let mail = &due.mail[0];
    assert_eq!(mail.id.to_string(), id);
    assert_eq!(mail.attempts, 0);
    assert_eq!(mail.envelope.rcpt_to, ["bob@example.net"]);
    assert_eq!(mail.envelope.mail_from, None, "MAIL FROM is not kept");
    assert_eq!(queue.get(mail.id).unwrap().envelope.data, mail.envelope.data);

    let data = &mail.envelope.data;
    let split = data.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(&data[split..], body, "the body byte for byte");
    let stored = String::from_utf8(data[..split].to_vec()).unwrap();
    let lines: Vec<&str> = stored.split("\r\n").filter(|l| !l.is_empty()).collect();
    for gone in ["Received:", "X-Mailer:", "User-Agent:"] {
        assert!(!lines.iter().any(|l| l.starts_with(gone)), "{gone} kept: {stored}");
    }
    for leak in ["laptop", "192.168.1.23", "LaptopMail", "by mail.example.org"] {
        assert!(!stored.contains(leak), "{leak} kept: {stored}");
    }
    for kept in [
        "From: Alice <alice@example.org>",
        "To: Bob <bob@example.net>",
        "Subject: scrubbed and sealed",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ] {
        assert!(lines.contains(&kept), "{kept} missing: {stored}");
    }
    let field = |name: &str| -> Vec<String> {
        lines.iter().filter_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).collect()
    };
    assert_eq!(field("Date:"), ["Tue, 01 Dec 2026 07:00:00 +0000"], "the hour, in UTC: {stored}");
    let message_id = field("Message-ID:");
    assert_eq!(message_id.len(), 1, "{stored}");
    assert!(message_id[0].starts_with('<') && message_id[0].ends_with("@nox.invalid>"), "{stored}");
    drop(queue);

    // Sealed at rest: neither the body, nor a header, nor a recipient is in
    // the queue's file or in the snapshot beside it.
    let file = std::fs::read(&setup.queue).unwrap();
    let snapshot = std::fs::read(setup.snapshot()).unwrap();
    for plain in [&b"marmalade-7f3a9c"[..], b"scrubbed and sealed", b"bob@example.net", b"alice@example.org"] {
        assert!(!contains(&file, plain), "{} in the queue file", String::from_utf8_lossy(plain));
        assert!(!contains(&snapshot, plain), "{} in the snapshot", String::from_utf8_lossy(plain));
    }
}

#[test]
fn test_smtp_gateway_refuses_to_start_on_a_remote_address_or_with_a_wrong_passphrase() {
    // A non-loopback address without --allow-remote: refused before the
    // queue is even created.
    let setup = Setup::with_listen("", Some("0.0.0.0:2525"));
    let mut cmd = setup.command(&["smtp"]);
    cmd.env("NOX_MAIL_PASSPHRASE", PASS);
    let done = setup.run(cmd, Duration::from_secs(20));
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    assert!(done.stderr.contains("mail.listen 0.0.0.0:2525 is not a loopback address"), "{}", done.stderr);
    assert!(done.stderr.contains("--allow-remote"), "{}", done.stderr);
    assert!(!setup.queue.exists());

    // An existing queue and the wrong passphrase.
    let setup = Setup::new("");
    drop(MailQueue::open(&setup.queue, PASS, KdfParams::insecure_fast(), QueueLimits::default()).unwrap());
    let mut cmd = setup.command(&["smtp"]);
    cmd.env("NOX_MAIL_PASSPHRASE", "not the passphrase");
    let done = setup.run(cmd, Duration::from_secs(20));
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    assert!(done.stderr.contains("wrong passphrase"), "{}", done.stderr);
    assert!(TcpStream::connect(("127.0.0.1", setup.port)).is_err(), "nothing listens");

    // No passphrase at all.
    let done = setup.run(setup.command(&["smtp"]), Duration::from_secs(20));
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    assert!(done.stderr.contains("NOX_MAIL_PASSPHRASE"), "{}", done.stderr);
}

#[test]
fn test_check_config_reports_mail_retry_max_below_retry_min() {
    let setup = Setup::new("");
    let done = setup.run(setup.command(&["check-config"]), Duration::from_secs(20));
    assert!(done.status.success(), "{}", done.stderr);
    assert!(done.stdout.starts_with("ok: "), "{}", done.stdout);

    let setup = Setup::new("retry_min_secs = 600\nretry_max_secs = 60");
    let done = setup.run(setup.command(&["check-config"]), Duration::from_secs(20));
    assert_eq!(done.status.code(), Some(2), "{}", done.stderr);
    assert!(done.stderr.contains("mail.retry_max_secs"), "{}", done.stderr);
    assert!(done.stderr.contains("must be at least mail.retry_min_secs (600), got 60"), "{}", done.stderr);
}
