//! The mail queue behind the SMTP server, end to end: Python's `smtplib`
//! submits a message to `nox_mail::smtp::SmtpServer` whose `Spool` is a
//! `MailQueue`; the server and the queue are dropped without a shutdown,
//! and the reopened queue holds the message byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nox_client::mail::{KdfParams, MailQueue, QueueLimits};
use nox_mail::smtp::{SmtpConfig, SmtpServer};
use tokio::net::TcpListener;

const SCRIPT: &str = r#"
import smtplib, sys
message = sys.stdin.buffer.read()
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30) as s:
    s.ehlo("laptop")
    refused = s.sendmail("alice@example.org", ["bob@example.org", "carol@example.net"], message)
    assert not refused, refused
print("sent")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_mail_queue_smtplib_submits_and_the_reopened_queue_holds_the_message_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mail-queue.redb");
    let queue = MailQueue::open(&path, "pw", KdfParams::insecure_fast(), QueueLimits::default()).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let config = SmtpConfig { hostname: "gateway.test".into(), ..SmtpConfig::default() };
    let server = SmtpServer::new(config, Arc::new(queue));
    let task = tokio::spawn(server.serve(listener, std::future::pending::<()>()));

    // Lines starting with a dot (smtplib doubles them, the server undoes it),
    // 8-bit text, CRLF line ends.
    let message = b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: queued\r\n\r\n\
        .a line with a leading dot\r\n..two dots\r\n\xc3\xa9t\xc3\xa9\r\nend\r\n"
        .to_vec();
    let stdin = message.clone();
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(SCRIPT)
            .arg(port)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 is needed for the smtplib test");
        child.stdin.take().unwrap().write_all(&stdin).unwrap();
        child.wait_with_output().unwrap()
    });
    let output = tokio::time::timeout(Duration::from_secs(120), output).await.expect("smtplib hung").unwrap();
    assert!(output.status.success(), "smtplib failed: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.stdout, b"sent\n");

    // No shutdown: the server task is aborted, and the queue (its Spool) is
    // dropped with it.
    task.abort();
    let _ = task.await;

    let queue = MailQueue::open(&path, "pw", KdfParams::insecure_fast(), QueueLimits::default()).unwrap();
    let due = queue.due(SystemTime::now()).unwrap();
    assert!(due.corrupt.is_empty());
    assert_eq!(due.mail.len(), 1);
    let mail = &due.mail[0];
    assert_eq!(mail.envelope.data, message);
    assert_eq!(mail.envelope.rcpt_to, vec!["bob@example.org".to_string(), "carol@example.net".to_string()]);
    assert_eq!(mail.envelope.mail_from, None);
    assert_eq!(mail.attempts, 0);
}
