//! One SMTP session: the state machine of RFC 5321 §4.1.4 over a
//! [`Connection`], from the `220` greeting to `QUIT`.
//!
//! The state is small: whether the client greeted (`EHLO`/`HELO`), whether
//! it authenticated, and the open transaction (`MAIL` and its `RCPT`s).
//! `DATA` ends the transaction whatever the outcome; `STARTTLS` forgets
//! everything the client said in clear (RFC 3207 §4.2).

use std::net::IpAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::warn;

use super::auth::{self, Mechanism};
use super::command::{self, Command, CommandError, MailFrom};
use super::config::SmtpConfig;
use super::connection::{Connection, ReadError};
use super::spool::{Envelope, Spool, SpoolError};
use super::stats::{Refusal, SmtpStats};

/// The longest `AUTH` line or SASL response, CRLF included (RFC 4954 §4).
const AUTH_LINE_MAX: usize = 12_288;

/// What every session of one server shares.
pub(crate) struct Shared {
    pub(crate) config: SmtpConfig,
    pub(crate) spool: Arc<dyn Spool>,
    pub(crate) stats: Arc<SmtpStats>,
    pub(crate) tls: Option<TlsAcceptor>,
}

/// How a session ended, for the debug log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionEnd {
    Quit,
    ClientClosed,
    Timeout,
    ShuttingDown,
    AuthFailures,
    TlsFailed,
    Io(std::io::ErrorKind),
}

/// What the session does after a command.
enum Next {
    Continue,
    Close(SessionEnd),
}

/// Why no SASL response came.
enum SaslFailure {
    Cancelled,
    Undecodable,
    Closed(SessionEnd),
}

struct Transaction {
    mail_from: String,
    rcpt_to: Vec<String>,
}

pub(crate) struct Session {
    shared: Arc<Shared>,
    conn: Connection,
    loopback: bool,
    shutdown: watch::Receiver<bool>,
    greeted: bool,
    authenticated: bool,
    auth_failures: u32,
    transaction: Option<Transaction>,
}

impl Session {
    pub(crate) fn new(shared: Arc<Shared>, stream: TcpStream, shutdown: watch::Receiver<bool>) -> Self {
        let loopback = stream.local_addr().is_ok_and(|addr| is_loopback(addr.ip()));
        // Replies are batched by the connection; each batch should leave at once.
        let _ = stream.set_nodelay(true);
        let conn = Connection::new(stream, shared.config.data_timeout);
        Session {
            shared,
            conn,
            loopback,
            shutdown,
            greeted: false,
            authenticated: false,
            auth_failures: 0,
            transaction: None,
        }
    }

    /// Serves the client until it quits, fails, or the server shuts down.
    pub(crate) async fn run(mut self) -> SessionEnd {
        self.shared.stats.session_opened();
        let greeting = format!("220 {} ESMTP", self.shared.config.hostname);
        self.conn.reply(&greeting);
        let end = loop {
            if let Next::Close(end) = self.step().await {
                break end;
            }
        };
        self.conn.close().await;
        end
    }

    /// Reads and answers one command.
    async fn step(&mut self) -> Next {
        if *self.shutdown.borrow() {
            return self.shutting_down();
        }
        let timeout = self.shared.config.command_timeout;
        let read = tokio::select! {
            read = self.conn.read_line(AUTH_LINE_MAX - 2, timeout) => {
                read.map(|line| (line.bytes.to_vec(), line.too_long))
            }
            _ = self.shutdown.changed() => return self.shutting_down(),
        };
        let (line, too_long) = match read {
            Ok(line) => line,
            Err(e) => return Next::Close(self.read_failed(e)),
        };
        let is_auth = line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"AUTH ");
        if too_long || (!is_auth && line.len() + 2 > self.shared.config.max_command_line) {
            let limit = self.shared.config.max_command_line;
            return self.refuse(Refusal::CommandLineTooLong, &format!("500 5.5.2 line too long (limit {limit} bytes)"));
        }
        match command::parse(&line) {
            Ok(command) => self.execute(command).await,
            Err(e) => {
                let reason = match e {
                    CommandError::Unrecognized | CommandError::NotImplemented => Refusal::UnknownCommand,
                    _ => Refusal::Syntax,
                };
                self.refuse(reason, &e.reply())
            }
        }
    }

    async fn execute(&mut self, command: Command) -> Next {
        match command {
            Command::Ehlo => {
                self.greeted = true;
                self.transaction = None;
                self.ehlo();
            }
            Command::Helo => {
                self.greeted = true;
                self.transaction = None;
                let reply = format!("250 {}", self.shared.config.hostname);
                self.conn.reply(&reply);
            }
            Command::Mail(mail) => return self.mail(mail),
            Command::Rcpt(path) => return self.rcpt(path),
            Command::Data => return self.data().await,
            Command::Rset => {
                self.transaction = None;
                self.conn.reply("250 2.0.0 reset");
            }
            Command::Noop => self.conn.reply("250 2.0.0 ok"),
            Command::Vrfy => {
                self.conn.reply("252 2.5.0 cannot verify, but will accept the message and try to deliver it")
            }
            Command::Help => {
                self.conn.reply("214 2.0.0 commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS AUTH")
            }
            Command::Quit => {
                self.conn.reply("221 2.0.0 closing connection");
                return Next::Close(SessionEnd::Quit);
            }
            Command::StartTls => return self.start_tls().await,
            Command::Auth { mechanism, initial } => return self.authenticate(&mechanism, initial).await,
        }
        Next::Continue
    }

    fn ehlo(&mut self) {
        let config = &self.shared.config;
        let mut lines = vec![
            config.hostname.clone(),
            format!("SIZE {}", config.max_message_bytes),
            "8BITMIME".to_string(),
            "PIPELINING".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
        ];
        if self.shared.tls.is_some() && !self.conn.is_tls() {
            lines.push("STARTTLS".to_string());
        }
        if config.auth.is_some() && self.auth_permitted() {
            lines.push("AUTH PLAIN LOGIN".to_string());
        }
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let separator = if i == last { ' ' } else { '-' };
            self.conn.reply(&format!("250{separator}{line}"));
        }
    }

    fn mail(&mut self, mail: MailFrom) -> Next {
        if !self.greeted {
            return self.refuse(Refusal::Sequence, "503 5.5.1 send EHLO or HELO first");
        }
        if self.shared.config.auth.is_some() && !self.authenticated {
            return self.refuse(Refusal::AuthRequired, "530 5.7.0 authentication required");
        }
        if self.transaction.is_some() {
            return self.refuse(Refusal::Sequence, "503 5.5.1 sender already given");
        }
        let max = self.shared.config.max_message_bytes;
        if mail.size.is_some_and(|size| size > max as u64) {
            return self.refuse(Refusal::MessageTooLarge, &too_large(max));
        }
        self.transaction = Some(Transaction { mail_from: mail.path, rcpt_to: Vec::new() });
        self.conn.reply("250 2.1.0 sender ok");
        Next::Continue
    }

    fn rcpt(&mut self, path: String) -> Next {
        let max = self.shared.config.max_recipients;
        let Some(transaction) = &mut self.transaction else {
            return self.refuse(Refusal::Sequence, "503 5.5.1 send MAIL first");
        };
        if transaction.rcpt_to.len() >= max {
            return self.refuse(Refusal::TooManyRecipients, "452 4.5.3 too many recipients");
        }
        transaction.rcpt_to.push(path);
        self.conn.reply("250 2.1.5 recipient ok");
        Next::Continue
    }

    /// `DATA`: reads the message to its end whatever happens (so the
    /// client's next command is not taken from its message), then hands it
    /// to the spool and answers with the spool's verdict.
    async fn data(&mut self) -> Next {
        match &self.transaction {
            None => return self.refuse(Refusal::Sequence, "503 5.5.1 send MAIL first"),
            Some(transaction) if transaction.rcpt_to.is_empty() => {
                return self.refuse(Refusal::Sequence, "503 5.5.1 send RCPT first");
            }
            Some(_) => {}
        }
        let Some(transaction) = self.transaction.take() else {
            return Next::Continue;
        };
        self.conn.reply("354 end data with <CR><LF>.<CR><LF>");
        let shared = Arc::clone(&self.shared);
        let config = &shared.config;
        let max = config.max_message_bytes;
        let max_line = config.max_text_line.saturating_sub(2);
        let mut data = Vec::new();
        let mut oversize = false;
        let mut long_line = false;
        // The end is `.` alone on a line, after a CRLF and before one: a
        // bare LF around the dot does not end the message (SMTP smuggling).
        let mut after_crlf = true;
        loop {
            let line = match self.conn.read_line(max_line, config.data_timeout).await {
                Ok(line) => line,
                Err(e) => return Next::Close(self.read_failed(e)),
            };
            if after_crlf && line.crlf && !line.too_long && line.bytes == b"." {
                break;
            }
            after_crlf = line.crlf;
            if line.too_long {
                long_line = true;
                data = Vec::new();
            }
            if oversize || long_line {
                continue;
            }
            // Transparency (RFC 5321 §4.5.2): a leading dot was doubled.
            let content = match line.bytes {
                [b'.', rest @ ..] if !rest.is_empty() => rest,
                all => all,
            };
            if data.len() + content.len() + 2 > max {
                oversize = true;
                data = Vec::new();
                continue;
            }
            data.extend_from_slice(content);
            data.extend_from_slice(b"\r\n");
        }
        if long_line {
            let limit = config.max_text_line;
            return self
                .refuse(Refusal::TextLineTooLong, &format!("552 5.3.4 message has a line longer than {limit} bytes"));
        }
        if oversize {
            return self.refuse(Refusal::MessageTooLarge, &too_large(max));
        }
        let envelope = Envelope {
            mail_from: transaction.mail_from,
            rcpt_to: transaction.rcpt_to,
            data,
            authenticated: self.authenticated,
        };
        match shared.spool.accept(envelope).await {
            Ok(id) => {
                shared.stats.message_accepted();
                let id: String = id.0.chars().filter(char::is_ascii_graphic).take(64).collect();
                self.conn.reply(&format!("250 2.0.0 queued as {id}"));
                Next::Continue
            }
            Err(SpoolError::Full) => self.refuse(Refusal::SpoolFull, "452 4.3.1 queue full, try later"),
            Err(SpoolError::TooLarge) => {
                self.refuse(Refusal::MessageTooLarge, "552 5.3.4 message too large for the queue")
            }
            Err(SpoolError::Rejected(why)) => {
                let why: String = why.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(200).collect();
                self.refuse(Refusal::SpoolRejected, &format!("554 5.6.0 message refused: {why}"))
            }
            Err(SpoolError::Failed(why)) => {
                warn!(error = %why, "the mail spool failed to keep a message; answered 451");
                self.refuse(Refusal::SpoolFailed, "451 4.3.0 local error, try later")
            }
        }
    }

    async fn start_tls(&mut self) -> Next {
        let Some(acceptor) = self.shared.tls.clone() else {
            return self.refuse(Refusal::UnknownCommand, "502 5.5.1 STARTTLS not available");
        };
        if self.conn.is_tls() {
            return self.refuse(Refusal::Sequence, "503 5.5.1 TLS already active");
        }
        if !self.greeted {
            return self.refuse(Refusal::Sequence, "503 5.5.1 send EHLO first");
        }
        self.conn.reply("220 2.0.0 ready to start TLS");
        if self.conn.start_tls(&acceptor, self.shared.config.data_timeout).await.is_err() {
            self.shared.stats.refuse(Refusal::TlsFailed);
            return Next::Close(SessionEnd::TlsFailed);
        }
        self.greeted = false;
        self.authenticated = false;
        self.transaction = None;
        Next::Continue
    }

    fn auth_permitted(&self) -> bool {
        auth::permitted(self.shared.tls.is_some(), self.conn.is_tls(), self.loopback)
    }

    async fn authenticate(&mut self, mechanism: &str, initial: Option<String>) -> Next {
        let shared = Arc::clone(&self.shared);
        let Some(user) = &shared.config.auth else {
            return self.refuse(Refusal::UnknownCommand, "502 5.5.1 AUTH not available");
        };
        if !self.greeted {
            return self.refuse(Refusal::Sequence, "503 5.5.1 send EHLO first");
        }
        if self.authenticated {
            return self.refuse(Refusal::Sequence, "503 5.5.1 already authenticated");
        }
        if self.transaction.is_some() {
            return self.refuse(Refusal::Sequence, "503 5.5.1 AUTH not permitted during a mail transaction");
        }
        if !self.auth_permitted() {
            return self.refuse(Refusal::EncryptionRequired, "538 5.7.11 encryption required: STARTTLS first");
        }
        let Some(mechanism) = Mechanism::from_name(mechanism) else {
            return self.refuse(Refusal::Syntax, "504 5.5.4 unrecognized authentication mechanism");
        };
        let accepted = match mechanism {
            Mechanism::Plain => {
                let response = match initial {
                    Some(text) => decode_response(text.as_bytes()),
                    None => self.sasl_response("334 ").await,
                };
                match response {
                    Ok(response) => auth::check_plain(&response, user),
                    Err(failure) => return self.sasl_failed(failure),
                }
            }
            Mechanism::Login => {
                let username = match initial {
                    Some(text) => decode_response(text.as_bytes()),
                    None => self.sasl_response(&format!("334 {}", auth::LOGIN_USERNAME_PROMPT)).await,
                };
                let username = match username {
                    Ok(username) => username,
                    Err(failure) => return self.sasl_failed(failure),
                };
                match self.sasl_response(&format!("334 {}", auth::LOGIN_PASSWORD_PROMPT)).await {
                    Ok(password) => auth::check_login(&username, &password, user),
                    Err(failure) => return self.sasl_failed(failure),
                }
            }
        };
        if accepted {
            self.authenticated = true;
            self.conn.reply("235 2.7.0 authentication succeeded");
            return Next::Continue;
        }
        self.auth_failures += 1;
        if self.auth_failures >= shared.config.max_auth_failures {
            self.shared.stats.refuse(Refusal::AuthFailed);
            self.conn.reply("421 4.7.0 too many failed authentication attempts, closing connection");
            return Next::Close(SessionEnd::AuthFailures);
        }
        self.refuse(Refusal::AuthFailed, "535 5.7.8 authentication credentials invalid")
    }

    /// Sends a `334` challenge and reads the client's answer.
    async fn sasl_response(&mut self, challenge: &str) -> Result<Vec<u8>, SaslFailure> {
        self.conn.reply(challenge);
        let timeout = self.shared.config.data_timeout;
        let read = self.conn.read_line(AUTH_LINE_MAX - 2, timeout).await;
        match read {
            Ok(line) if line.too_long => Err(SaslFailure::Undecodable),
            Ok(line) => decode_response(line.bytes),
            Err(e) => Err(SaslFailure::Closed(self.read_failed(e))),
        }
    }

    fn sasl_failed(&mut self, failure: SaslFailure) -> Next {
        match failure {
            SaslFailure::Closed(end) => Next::Close(end),
            SaslFailure::Cancelled => self.refuse(Refusal::AuthFailed, "501 5.7.0 authentication cancelled"),
            SaslFailure::Undecodable => self.refuse(Refusal::AuthFailed, "501 5.5.2 cannot decode the response"),
        }
    }

    /// Answers a refusal and counts it; the session goes on.
    fn refuse(&mut self, reason: Refusal, reply: &str) -> Next {
        self.shared.stats.refuse(reason);
        self.conn.reply(reply);
        Next::Continue
    }

    fn shutting_down(&mut self) -> Next {
        let reply = format!("421 4.3.2 {} shutting down, try later", self.shared.config.hostname);
        self.conn.reply(&reply);
        Next::Close(SessionEnd::ShuttingDown)
    }

    fn read_failed(&mut self, e: ReadError) -> SessionEnd {
        match e {
            ReadError::Eof => SessionEnd::ClientClosed,
            ReadError::Io(e) => SessionEnd::Io(e.kind()),
            ReadError::Timeout => {
                self.shared.stats.refuse(Refusal::Timeout);
                let reply = format!("421 4.4.2 {} timeout, closing connection", self.shared.config.hostname);
                self.conn.reply(&reply);
                SessionEnd::Timeout
            }
        }
    }
}

/// A SASL response line: base64, or `*` to cancel (RFC 4954 §4).
fn decode_response(text: &[u8]) -> Result<Vec<u8>, SaslFailure> {
    if text == b"*" {
        return Err(SaslFailure::Cancelled);
    }
    std::str::from_utf8(text).ok().and_then(auth::decode_base64).ok_or(SaslFailure::Undecodable)
}

fn too_large(max: usize) -> String {
    format!("552 5.3.4 message exceeds the maximum size of {max} bytes")
}

/// Loopback, including IPv4 loopback mapped into IPv6 (`::ffff:127.0.0.1`).
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(v6.is_loopback(), |v4| v4.is_loopback()),
    }
}
