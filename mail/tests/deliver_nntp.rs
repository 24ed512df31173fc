//! NNTP posting against INN, the news server most sites run (on
//! 127.0.0.1:119, with the group `local.test`): an article posted, then read
//! back over NNTP as a reader would. Scripted servers on raw sockets for the
//! refusals INN is not easily made to give.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nox_mail::deliver::{Credentials, NntpConfig, PostError, post_article};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

const INN: &str = "127.0.0.1:119";
const GROUP: &str = "local.test";
const CTLINND: &str = "/usr/lib/news/bin/ctlinnd";

fn config() -> NntpConfig {
    NntpConfig { auth: None, connect_timeout: Duration::from_secs(5), command_timeout: Duration::from_secs(10) }
}

/// A reader's side of NNTP, for reading back what was posted.
struct Reader {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
}

impl Reader {
    async fn connect() -> Reader {
        let (read, write) = TcpStream::connect(INN).await.unwrap().into_split();
        let mut reader = Reader { read: BufReader::new(read), write };
        let greeting = reader.line().await;
        assert!(greeting.starts_with("20"), "{greeting}");
        let mode = reader.command("MODE READER").await;
        assert!(mode.starts_with("20"), "{mode}");
        reader
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(10), self.read.read_line(&mut line)).await.unwrap().unwrap();
        line.trim_end_matches(['\r', '\n']).to_string()
    }

    async fn command(&mut self, command: &str) -> String {
        self.write.write_all(format!("{command}\r\n").as_bytes()).await.unwrap();
        self.line().await
    }

    /// A multi-line block up to its lone dot, dot-unstuffed.
    async fn block(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            if line == "." {
                return lines;
            }
            lines.push(line.strip_prefix('.').map(str::to_string).unwrap_or(line));
        }
    }
}

/// Whether INN answers on 127.0.0.1:119 with the group `local.test`. If it
/// is installed but not running, it is started (`/etc/init.d/inn2 start`);
/// if the group is missing, it is created (`ctlinnd newgroup`). Absent:
/// skipped, or a failure on CI.
async fn inn_ready() -> bool {
    if TcpStream::connect(INN).await.is_err() {
        let installed = Path::new("/etc/init.d/inn2").exists();
        if !support::tool_available("INN (Debian: inn2)", installed) {
            return false;
        }
        eprintln!("INN is installed but does not answer on {INN}: running /etc/init.d/inn2 start");
        let status = std::process::Command::new("/etc/init.d/inn2").arg("start").status();
        let started = Instant::now();
        while TcpStream::connect(INN).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "INN does not answer on {INN} after /etc/init.d/inn2 start ({status:?})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut reader = Reader::connect().await;
    let group = reader.command(&format!("GROUP {GROUP}")).await;
    if group.starts_with("411") {
        eprintln!("INN has no group {GROUP}: creating it with ctlinnd newgroup");
        let status = std::process::Command::new(CTLINND).args(["newgroup", GROUP, "y"]).status().unwrap();
        assert!(status.success(), "ctlinnd newgroup {GROUP} failed: {status}");
    }
    let _ = reader.command("QUIT").await;
    true
}

fn unique() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{nanos:x}.{}", std::process::id())
}

#[tokio::test]
async fn test_post_to_inn_and_read_it_back() {
    if !inn_ready().await {
        return;
    }
    let id = unique();
    let message_id = format!("<nox-{id}@nox.test>");
    let body = [
        "Posted by the NOX news client.".to_string(),
        ".a line that starts with a dot".to_string(),
        "..and one with two".to_string(),
        ".".to_string(),
        format!("unique {id}"),
    ];
    let article = format!(
        "From: NOX test <nox-test@nox.test>\r\nNewsgroups: {GROUP}\r\nSubject: NOX delivery test {id}\r\nMessage-ID: {message_id}\r\n\r\n{}\r\n",
        body.join("\r\n")
    );
    post_article(&config(), INN.parse().unwrap(), article.as_bytes()).await.unwrap();

    let mut reader = Reader::connect().await;
    let group = reader.command(&format!("GROUP {GROUP}")).await;
    assert!(group.starts_with("211"), "{group}");
    let started = Instant::now();
    let status = loop {
        let status = reader.command(&format!("ARTICLE {message_id}")).await;
        if status.starts_with("220") || started.elapsed() > Duration::from_secs(10) {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.starts_with("220"), "{status}");
    let lines = reader.block().await;
    let blank = lines.iter().position(String::is_empty).unwrap();
    let headers = &lines[..blank];
    assert!(headers.contains(&format!("Subject: NOX delivery test {id}")), "{headers:?}");
    assert!(headers.iter().any(|h| h.starts_with("Newsgroups: ") && h.contains(GROUP)), "{headers:?}");
    assert_eq!(&lines[blank + 1..], &body[..]);
    let _ = reader.command("QUIT").await;

    // The same Message-ID again: INN refuses a duplicate for good.
    let err = post_article(&config(), INN.parse().unwrap(), article.as_bytes()).await.unwrap_err();
    assert!(err.is_permanent(), "{err}");
}

/// What a scripted server answers to a command.
type Script = fn(&str) -> Option<&'static str>;

/// A news server that greets with `greeting` and answers each command by
/// `script` (`None`: hangs up); after a `340` it reads the article to its
/// dot and answers the command `.`. Records the commands.
async fn scripted(greeting: &'static str, script: Script) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&log);
    tokio::spawn(async move {
        let Ok((stream, _)) = listener.accept().await else { return };
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        let _ = write.write_all(format!("{greeting}\r\n").as_bytes()).await;
        let mut line = String::new();
        loop {
            line.clear();
            if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let command = line.trim_end().to_string();
            recorded.lock().unwrap().push(command.clone());
            let Some(reply) = script(&command) else { return };
            let _ = write.write_all(format!("{reply}\r\n").as_bytes()).await;
            if reply.starts_with("340") {
                loop {
                    line.clear();
                    if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line == ".\r\n" {
                        break;
                    }
                }
                recorded.lock().unwrap().push(".".to_string());
                let Some(reply) = script(".") else { return };
                let _ = write.write_all(format!("{reply}\r\n").as_bytes()).await;
            }
        }
    });
    (addr, log)
}

/// A server that takes articles.
fn obliging(command: &str) -> Option<&'static str> {
    Some(match command.split(' ').next().unwrap_or("") {
        "MODE" => "200 reader ready, posting allowed",
        "POST" => "340 send it",
        "." => "240 article received",
        "AUTHINFO" if command.starts_with("AUTHINFO USER") => "381 password please",
        "AUTHINFO" if command == "AUTHINFO PASS right" => "281 welcome",
        "AUTHINFO" => "481 no",
        "QUIT" => "205 bye",
        _ => "500 what?",
    })
}

const ARTICLE: &[u8] = b"From: a@nox.test\r\nNewsgroups: local.test\r\nSubject: x\r\n\r\nbody\r\n";

#[tokio::test]
async fn test_scripted_server_takes_an_article() {
    let (addr, log) = scripted("200 news ready", obliging).await;
    post_article(&config(), addr, ARTICLE).await.unwrap();
    assert_eq!(*log.lock().unwrap(), ["MODE READER", "POST", ".", "QUIT"]);
}

#[tokio::test]
async fn test_mode_reader_unknown_is_ignored() {
    let (addr, _log) =
        scripted("200 reader only", |c| if c == "MODE READER" { Some("501 unknown") } else { obliging(c) }).await;
    post_article(&config(), addr, ARTICLE).await.unwrap();
}

#[tokio::test]
async fn test_article_refused_is_permanent() {
    let (addr, _log) =
        scripted("200 news ready", |c| if c == "." { Some("441 437 Unwanted newsgroup") } else { obliging(c) }).await;
    let err = post_article(&config(), addr, ARTICLE).await.unwrap_err();
    assert_eq!(err, PostError::Permanent("end of article: 441 437 Unwanted newsgroup".to_string()));
}

#[tokio::test]
async fn test_no_posting_greeting_is_permanent() {
    let (addr, log) = scripted("201 news ready, no posting", |c| {
        if c == "MODE READER" { Some("201 still no posting") } else { obliging(c) }
    })
    .await;
    let err = post_article(&config(), addr, ARTICLE).await.unwrap_err();
    assert!(matches!(&err, PostError::Permanent(t) if t.contains("201")), "{err}");
    assert!(!log.lock().unwrap().contains(&"POST".to_string()));
}

#[tokio::test]
async fn test_posting_not_allowed_is_permanent() {
    let (addr, _log) =
        scripted("200 ready", |c| if c == "POST" { Some("440 posting not permitted") } else { obliging(c) }).await;
    let err = post_article(&config(), addr, ARTICLE).await.unwrap_err();
    assert!(matches!(&err, PostError::Permanent(t) if t.contains("440")), "{err}");
}

#[tokio::test]
async fn test_service_unavailable_is_transient() {
    let (addr, _log) = scripted("400 too busy, come back later", obliging).await;
    let err = post_article(&config(), addr, ARTICLE).await.unwrap_err();
    assert!(matches!(&err, PostError::Transient(t) if t.contains("400")), "{err}");
    assert!(!err.is_permanent());
}

/// Answers `POST` with `480` until the right password came.
fn wants_authentication(command: &str) -> Option<&'static str> {
    static AUTHENTICATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if command == "AUTHINFO PASS right" {
        AUTHENTICATED.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    if command == "POST" && !AUTHENTICATED.load(std::sync::atomic::Ordering::SeqCst) {
        return Some("480 authentication required");
    }
    obliging(command)
}

#[tokio::test]
async fn test_authinfo_when_configured() {
    let (addr, log) = scripted("200 ready", wants_authentication).await;
    let cfg = NntpConfig { auth: Some(Credentials { user: "poster".into(), password: "right".into() }), ..config() };
    post_article(&cfg, addr, ARTICLE).await.unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        ["MODE READER", "AUTHINFO USER poster", "AUTHINFO PASS right", "POST", ".", "QUIT"]
    );
}

#[tokio::test]
async fn test_authinfo_lifts_a_no_posting_greeting() {
    let (addr, log) = scripted("201 ready, log in to post", |c| {
        if c == "MODE READER" { Some("201 log in to post") } else { obliging(c) }
    })
    .await;
    let cfg = NntpConfig { auth: Some(Credentials { user: "poster".into(), password: "right".into() }), ..config() };
    post_article(&cfg, addr, ARTICLE).await.unwrap();
    assert_eq!(log.lock().unwrap()[..4], ["MODE READER", "AUTHINFO USER poster", "AUTHINFO PASS right", "POST"]);
}

#[tokio::test]
async fn test_authentication_failures_are_permanent() {
    // Required, and no credentials configured.
    let (addr, _log) =
        scripted("200 ready", |c| if c == "POST" { Some("480 authentication required") } else { obliging(c) }).await;
    let err = post_article(&config(), addr, ARTICLE).await.unwrap_err();
    assert!(matches!(&err, PostError::Permanent(t) if t.contains("480")), "{err}");
    // The wrong password.
    let (addr, _log) = scripted("200 ready", obliging).await;
    let cfg = NntpConfig { auth: Some(Credentials { user: "poster".into(), password: "wrong".into() }), ..config() };
    let err = post_article(&cfg, addr, ARTICLE).await.unwrap_err();
    assert!(matches!(&err, PostError::Permanent(t) if t.contains("481")), "{err}");
}

#[tokio::test]
async fn test_connection_refused_and_lost_are_transient() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let err = post_article(&config(), addr, ARTICLE).await.unwrap_err();
    assert!(matches!(&err, PostError::Transient(t) if t.starts_with("connect")), "{err}");
    // The server hangs up after the article, before its verdict.
    let (addr, _log) = scripted("200 ready", |c| if c == "." { None } else { obliging(c) }).await;
    let err = post_article(&config(), addr, ARTICLE).await.unwrap_err();
    assert!(matches!(err, PostError::Transient(_)), "{err}");
}
