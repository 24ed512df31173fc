//! The SMTP client (RFC 5321) that hands a message to a recipient's mail
//! exchanger or to a smarthost: one connection, one transaction, an
//! outcome per recipient.
//!
//! The order of a session: greeting `220`; `EHLO` (`HELO` if the server
//! answers `EHLO` with `5xx`); `STARTTLS` as [`TlsMode`] asks, then `EHLO`
//! again; `AUTH PLAIN` (or `AUTH LOGIN` where only that is offered) when
//! [`SmtpClientConfig::auth`] is set; `MAIL FROM` with `SIZE=` and
//! `BODY=8BITMIME` where they apply; a `RCPT TO` per recipient (pipelined in
//! groups where the server offers PIPELINING); `DATA` if a recipient was
//! accepted; the message, dot-stuffed; `QUIT`.
//!
//! Which failures end the session ([`SendError`]) and which belong to one
//! recipient ([`RcptOutcome`]): everything up to and including the `RCPT`
//! replies that makes the transaction impossible is a [`SendError`]; once
//! the recipients are known, a failure at `DATA`, while sending, or in the
//! reply after the final dot becomes the outcome of every accepted
//! recipient, and the refused ones keep their own.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;
use tracing::debug;

use super::connection::{Connection, ReadError, dot_stuff};
use super::reply::Reply;

/// The longest address used in `MAIL FROM` or `RCPT TO` (RFC 5321
/// §4.5.3.1.3: a path of 256 octets).
const MAX_ADDRESS: usize = 256;
/// Commands written at once to a server that offers PIPELINING.
const PIPELINE_GROUP: usize = 32;
/// The longest wait for the `QUIT` reply and the close.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// What became of one recipient.
///
/// The texts are the server's reply, code first (`550 5.1.1 user
/// unknown`), or, for a recipient refused before it was sent, why. A
/// server may quote the address in its reply: treat the text like the
/// address, never log it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome {
    /// The server took responsibility for the message to this recipient
    /// (`250` after the final dot).
    Delivered,
    /// Not delivered this time; try again later.
    Transient(String),
    /// Not delivered, and it never will be: bounce.
    Permanent(String),
}

impl RcptOutcome {
    /// Whether the message reached the server for this recipient.
    pub fn is_delivered(&self) -> bool {
        matches!(self, RcptOutcome::Delivered)
    }
}

/// Whether and how the session goes under TLS (`STARTTLS`, RFC 3207).
#[derive(Debug, Clone)]
pub enum TlsMode {
    /// Never: the whole session in clear.
    Off,
    /// `STARTTLS` when the server offers it, with any certificate (RFC 7435
    /// opportunistic security, what delivery to an MX does: an MX's
    /// certificate rarely names it). Encrypts against a passive observer,
    /// not an active one. If the handshake fails, the message goes in clear
    /// on a new connection — unless credentials are configured, which never
    /// go in clear.
    Opportunistic,
    /// `STARTTLS` must be offered and the certificate verify against
    /// `roots` for [`SmtpTarget::name`]; otherwise nothing is sent (for a
    /// smarthost).
    Required {
        /// The trust anchors the server's certificate must chain to.
        roots: Arc<RootCertStore>,
    },
}

/// An account on the server (a smarthost), for `AUTH`, or for NNTP's
/// `AUTHINFO`. `Debug` prints the user, not the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (SASL authentication identity).
    pub user: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}

/// How the SMTP client behaves. `Default` gives the values documented on
/// each field.
#[derive(Debug, Clone)]
pub struct SmtpClientConfig {
    /// The name we give in `EHLO`/`HELO`. Default `localhost`.
    pub helo: String,
    /// `STARTTLS` or not. Default [`TlsMode::Opportunistic`].
    pub tls: TlsMode,
    /// The account for `AUTH`, if the server needs one. Default none. Sent
    /// only under TLS, or to a server on loopback.
    pub auth: Option<Credentials>,
    /// The longest wait for the TCP connection. Default 30 s.
    pub connect_timeout: Duration,
    /// The longest wait for each reply but the last, for the TLS handshake,
    /// and for each 64 KiB of the message to be written. Default 300 s
    /// (RFC 5321 §4.5.3.2 gives 5 minutes for the greeting, 3 to 5 for the
    /// others).
    pub command_timeout: Duration,
    /// The longest wait for the reply after the final dot. Default 600 s
    /// (RFC 5321 §4.5.3.2.6: 10 minutes).
    pub data_timeout: Duration,
}

impl Default for SmtpClientConfig {
    fn default() -> Self {
        SmtpClientConfig {
            helo: "localhost".to_string(),
            tls: TlsMode::Opportunistic,
            auth: None,
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
        }
    }
}

/// The server to deliver to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpTarget {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The server's host name: the TLS server name (SNI), and the name its
    /// certificate must carry under [`TlsMode::Required`].
    pub name: String,
}

/// Why a session ended before any recipient had an outcome of its own.
/// The text names the step and, where the server answered, its reply; a
/// reply may quote an address, so do not log it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Try again later (perhaps at another MX): no connection, a timeout,
    /// a `4xx` or `421`, TLS required but not available, a server that
    /// breaks the protocol.
    #[error("delivery failed, try later: {0}")]
    Transient(String),
    /// Never deliverable this way: `5xx` to `MAIL FROM`, a message over
    /// the server's `SIZE`, `AUTH` refused, an address that cannot be put
    /// on the wire, credentials that would go in clear.
    #[error("delivery failed for good: {0}")]
    Permanent(String),
}

impl SendError {
    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::Permanent(_))
    }
}

/// Delivers `data` — an RFC 5322 message with CRLF line ends, not
/// dot-stuffed — from `mail_from` (empty for the null reverse path `<>`) to
/// each of `rcpts` at `target`, and returns one outcome per recipient, in
/// order. No recipients: nothing to do, no connection.
pub async fn send_mail(
    cfg: &SmtpClientConfig,
    target: &SmtpTarget,
    mail_from: &str,
    rcpts: &[String],
    data: &[u8],
) -> Result<Vec<RcptOutcome>, SendError> {
    if rcpts.is_empty() {
        return Ok(Vec::new());
    }
    if !usable_helo(&cfg.helo) {
        return Err(SendError::Permanent("the configured HELO name is not a single printable word".to_string()));
    }
    if !usable_address(mail_from) {
        return Err(SendError::Permanent("the sender address cannot be put in MAIL FROM".to_string()));
    }
    let wire = dot_stuff(data);
    let job = Job { mail_from, rcpts, wire: &wire, eight_bit: !data.is_ascii() };
    let result = match attempt(cfg, &cfg.tls, target, &job).await {
        Err(Failure::Handshake(_))
            if matches!(cfg.tls, TlsMode::Opportunistic) && (cfg.auth.is_none() || is_loopback(target.addr.ip())) =>
        {
            debug!("opportunistic TLS handshake failed; delivering in clear on a new connection");
            attempt(cfg, &TlsMode::Off, target, &job).await
        }
        other => other,
    };
    match result {
        Ok(outcomes) => {
            let delivered = outcomes.iter().filter(|o| o.is_delivered()).count();
            let permanent = outcomes.iter().filter(|o| matches!(o, RcptOutcome::Permanent(_))).count();
            debug!(recipients = outcomes.len(), delivered, permanent, "SMTP transaction ended");
            Ok(outcomes)
        }
        Err(Failure::Send(e)) => {
            debug!(permanent = e.is_permanent(), "SMTP session failed");
            Err(e)
        }
        Err(Failure::Handshake(why)) => Err(SendError::Transient(why)),
    }
}

/// What one transaction carries.
struct Job<'a> {
    mail_from: &'a str,
    rcpts: &'a [String],
    /// The message dot-stuffed, with its final `.` line.
    wire: &'a [u8],
    eight_bit: bool,
}

/// A session's failure: a [`SendError`], or a failed TLS handshake, which
/// [`TlsMode::Opportunistic`] answers with a second try in clear.
#[derive(Debug)]
enum Failure {
    Send(SendError),
    Handshake(String),
}

fn transient(text: String) -> Failure {
    Failure::Send(SendError::Transient(text))
}

fn permanent(text: String) -> Failure {
    Failure::Send(SendError::Permanent(text))
}

/// A negative (or unexpected) reply at `step` as a session failure:
/// `5xx` permanent where `permanent_5xx`, everything else transient.
fn refused(step: &str, reply: &Reply, permanent_5xx: bool) -> Failure {
    let text = format!("{step}: {}", reply.summary());
    if permanent_5xx && reply.is_permanent() { permanent(text) } else { transient(text) }
}

/// One connection, one transaction.
async fn attempt(
    cfg: &SmtpClientConfig,
    tls: &TlsMode,
    target: &SmtpTarget,
    job: &Job<'_>,
) -> Result<Vec<RcptOutcome>, Failure> {
    let conn =
        Connection::connect(target.addr, cfg.connect_timeout).await.map_err(|e| transient(format!("connect: {e}")))?;
    let mut session = Session { conn, cfg, broken: false };
    let result = session.run(tls, target, job).await;
    session.quit().await;
    result
}

struct Session<'a> {
    conn: Connection,
    cfg: &'a SmtpClientConfig,
    /// The connection failed or the server broke the protocol: no `QUIT`.
    broken: bool,
}

impl Session<'_> {
    async fn run(&mut self, tls: &TlsMode, target: &SmtpTarget, job: &Job<'_>) -> Result<Vec<RcptOutcome>, Failure> {
        let greeting = self.reply("greeting", self.cfg.command_timeout).await?;
        if greeting.code != 220 {
            return Err(refused("greeting", &greeting, false));
        }
        let mut extensions = self.hello().await?;
        match tls {
            TlsMode::Off => {}
            TlsMode::Opportunistic => {
                if extensions.starttls {
                    let name = ServerName::try_from(target.name.clone())
                        .unwrap_or_else(|_| ServerName::IpAddress(target.addr.ip().into()));
                    if self.start_tls(opportunistic_tls()?, name).await?.is_ok() {
                        extensions = self.hello().await?;
                    }
                }
            }
            TlsMode::Required { roots } => {
                if !extensions.starttls {
                    return Err(transient("STARTTLS: required, but the server does not offer it".to_string()));
                }
                let name = ServerName::try_from(target.name.clone())
                    .map_err(|_| permanent("STARTTLS: the target's name is not a valid TLS server name".to_string()))?;
                if let Err(reply) = self.start_tls(verified_tls(Arc::clone(roots))?, name).await? {
                    return Err(refused("STARTTLS", &reply, false));
                }
                extensions = self.hello().await?;
            }
        }
        if let Some(credentials) = &self.cfg.auth {
            if !credentials_allowed(self.conn.is_tls(), target.addr.ip()) {
                return Err(permanent("AUTH: refusing to send credentials in clear".to_string()));
            }
            self.authenticate(credentials, &extensions).await?;
        }
        self.transaction(job, &extensions).await
    }

    /// `MAIL`, `RCPT`s, and `DATA` if anyone was accepted.
    async fn transaction(&mut self, job: &Job<'_>, extensions: &Extensions) -> Result<Vec<RcptOutcome>, Failure> {
        // The exact size on the wire, the final dot line excluded.
        let size = job.wire.len().saturating_sub(3) as u64;
        if let Some(limit) = extensions.size.filter(|&limit| limit > 0 && size > limit) {
            return Err(permanent(format!("SIZE: the message of {size} bytes is over the server's limit of {limit}")));
        }
        let utf8 = !job.mail_from.is_ascii() || job.rcpts.iter().any(|r| !r.is_ascii());
        if !job.mail_from.is_ascii() && !extensions.smtputf8 {
            return Err(permanent("MAIL FROM: the sender address needs SMTPUTF8, which the server lacks".to_string()));
        }
        let mut mail = format!("MAIL FROM:<{}>", job.mail_from);
        if extensions.size.is_some() {
            mail.push_str(&format!(" SIZE={size}"));
        }
        if job.eight_bit && extensions.eight_bit_mime {
            mail.push_str(" BODY=8BITMIME");
        }
        if utf8 && extensions.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        mail.push_str("\r\n");

        // Recipients decided before anything is sent keep their outcome;
        // the others get one from their RCPT reply, or after DATA.
        let mut outcomes: Vec<Option<RcptOutcome>> = job
            .rcpts
            .iter()
            .map(|rcpt| {
                if !usable_address(rcpt) || rcpt.is_empty() {
                    Some(RcptOutcome::Permanent("the recipient address cannot be put in RCPT TO".to_string()))
                } else if !rcpt.is_ascii() && !extensions.smtputf8 {
                    Some(RcptOutcome::Permanent("the recipient address needs SMTPUTF8, which the server lacks".into()))
                } else {
                    None
                }
            })
            .collect();
        let mut commands: Vec<(String, Option<usize>)> = vec![(mail, None)];
        commands.extend(
            outcomes
                .iter()
                .enumerate()
                .filter(|(_, outcome)| outcome.is_none())
                .map(|(i, _)| (format!("RCPT TO:<{}>\r\n", job.rcpts[i]), Some(i))),
        );
        let group = if extensions.pipelining { PIPELINE_GROUP } else { 1 };
        let mut accepted = Vec::new();
        for batch in commands.chunks(group) {
            let text: String = batch.iter().map(|(command, _)| command.as_str()).collect();
            self.send(text.as_bytes(), "MAIL/RCPT").await?;
            for (_, rcpt) in batch {
                let step = if rcpt.is_some() { "RCPT TO" } else { "MAIL FROM" };
                let reply = self.reply(step, self.cfg.command_timeout).await?;
                if reply.code == 421 {
                    return Err(refused(step, &reply, false));
                }
                match rcpt {
                    None if reply.is_positive() => {}
                    None => return Err(refused(step, &reply, true)),
                    Some(i) if reply.is_positive() => accepted.push(*i),
                    Some(i) if reply.is_permanent() => outcomes[*i] = Some(RcptOutcome::Permanent(reply.summary())),
                    Some(i) => outcomes[*i] = Some(RcptOutcome::Transient(reply.summary())),
                }
            }
        }

        if !accepted.is_empty() {
            let end = match self.transfer(job.wire).await {
                Ok(reply) if reply.is_positive() => RcptOutcome::Delivered,
                Ok(reply) if reply.is_permanent() => RcptOutcome::Permanent(reply.summary()),
                Ok(reply) => RcptOutcome::Transient(reply.summary()),
                Err(Failure::Send(SendError::Permanent(text))) => RcptOutcome::Permanent(text),
                Err(Failure::Send(SendError::Transient(text)) | Failure::Handshake(text)) => {
                    RcptOutcome::Transient(text)
                }
            };
            for i in accepted {
                outcomes[i] = Some(end.clone());
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| RcptOutcome::Transient("no reply to RCPT TO".to_string())))
            .collect())
    }

    /// `DATA`, the message, and the reply after the final dot (or the
    /// negative reply to `DATA`).
    async fn transfer(&mut self, wire: &[u8]) -> Result<Reply, Failure> {
        self.send(b"DATA\r\n", "DATA").await?;
        let reply = self.reply("DATA", self.cfg.command_timeout).await?;
        if reply.code != 354 {
            return if reply.is_positive() { Err(refused("DATA", &reply, false)) } else { Ok(reply) };
        }
        if let Err(e) = self.conn.send_block(wire, self.cfg.command_timeout).await {
            self.broken = true;
            return Err(transient(format!("sending the message: {e}")));
        }
        self.reply("end of data", self.cfg.data_timeout).await
    }

    /// `EHLO`, or `HELO` where the server does not know `EHLO`.
    async fn hello(&mut self) -> Result<Extensions, Failure> {
        self.send(format!("EHLO {}\r\n", self.cfg.helo).as_bytes(), "EHLO").await?;
        let reply = self.reply("EHLO", self.cfg.command_timeout).await?;
        if reply.is_positive() {
            return Ok(Extensions::parse(&reply));
        }
        if !reply.is_permanent() {
            return Err(refused("EHLO", &reply, false));
        }
        self.send(format!("HELO {}\r\n", self.cfg.helo).as_bytes(), "HELO").await?;
        let reply = self.reply("HELO", self.cfg.command_timeout).await?;
        if reply.is_positive() { Ok(Extensions::default()) } else { Err(refused("HELO", &reply, false)) }
    }

    /// `STARTTLS` and the handshake. `Ok(Err(reply))`: the server refused,
    /// and the session goes on in clear.
    async fn start_tls(
        &mut self,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Result<(), Reply>, Failure> {
        self.send(b"STARTTLS\r\n", "STARTTLS").await?;
        let reply = self.reply("STARTTLS", self.cfg.command_timeout).await?;
        if reply.code == 421 {
            return Err(refused("STARTTLS", &reply, false));
        }
        if reply.code != 220 {
            return Ok(Err(reply));
        }
        let connector = TlsConnector::from(config);
        if let Err(e) = self.conn.start_tls(&connector, name, self.cfg.command_timeout).await {
            self.broken = true;
            return Err(Failure::Handshake(format!("STARTTLS: TLS handshake failed: {e}")));
        }
        Ok(Ok(()))
    }

    /// `AUTH PLAIN` (RFC 4616), or `AUTH LOGIN` where only that is offered.
    async fn authenticate(&mut self, credentials: &Credentials, extensions: &Extensions) -> Result<(), Failure> {
        let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let reply = if extensions.auth_plain {
            let mut token = Vec::with_capacity(credentials.user.len() + credentials.password.len() + 2);
            token.push(0);
            token.extend_from_slice(credentials.user.as_bytes());
            token.push(0);
            token.extend_from_slice(credentials.password.as_bytes());
            self.command(&format!("AUTH PLAIN {}", encode(&token)), "AUTH").await?
        } else if extensions.auth_login {
            let reply = self.command("AUTH LOGIN", "AUTH").await?;
            if reply.code != 334 {
                return Err(refused("AUTH", &reply, true));
            }
            let reply = self.command(&encode(credentials.user.as_bytes()), "AUTH").await?;
            if reply.code != 334 {
                return Err(refused("AUTH", &reply, true));
            }
            self.command(&encode(credentials.password.as_bytes()), "AUTH").await?
        } else {
            return Err(permanent("AUTH: the server offers neither PLAIN nor LOGIN".to_string()));
        };
        if reply.is_positive() { Ok(()) } else { Err(refused("AUTH", &reply, true)) }
    }

    /// Sends one command line (CRLF added) and reads its reply.
    async fn command(&mut self, line: &str, step: &str) -> Result<Reply, Failure> {
        self.send(format!("{line}\r\n").as_bytes(), step).await?;
        self.reply(step, self.cfg.command_timeout).await
    }

    async fn send(&mut self, bytes: &[u8], step: &str) -> Result<(), Failure> {
        self.conn.send(bytes, self.cfg.command_timeout).await.map_err(|e| {
            self.broken = true;
            transient(format!("{step}: {e}"))
        })
    }

    async fn reply(&mut self, step: &str, timeout: Duration) -> Result<Reply, Failure> {
        self.conn.read_reply(timeout, false).await.map_err(|e: ReadError| {
            self.broken = true;
            transient(format!("{step}: {e}"))
        })
    }

    /// `QUIT` and close, unless the connection is already broken; bounded
    /// by [`QUIT_TIMEOUT`].
    async fn quit(&mut self) {
        let timeout = QUIT_TIMEOUT.min(self.cfg.command_timeout);
        if !self.broken && self.conn.send(b"QUIT\r\n", timeout).await.is_ok() {
            let _ = self.conn.read_reply(timeout, false).await;
        }
        self.conn.close(timeout).await;
    }
}

/// What the server's `EHLO` reply offers, of what we use.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Extensions {
    pub(crate) starttls: bool,
    /// `SIZE`, with its limit (0: none stated).
    pub(crate) size: Option<u64>,
    pub(crate) eight_bit_mime: bool,
    pub(crate) pipelining: bool,
    pub(crate) smtputf8: bool,
    pub(crate) auth_plain: bool,
    pub(crate) auth_login: bool,
}

impl Extensions {
    /// Reads the keywords of an `EHLO` reply (every line but the first,
    /// which is the server's name), case-insensitively. `AUTH=...` is the
    /// pre-standard form some servers still send.
    pub(crate) fn parse(reply: &Reply) -> Self {
        let mut extensions = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else { continue };
            let keyword = keyword.to_ascii_uppercase();
            let (keyword, first_param) = match keyword.split_once('=') {
                Some(("AUTH", mechanism)) => ("AUTH", Some(mechanism.to_string())),
                _ => (keyword.as_str(), None),
            };
            match keyword {
                "STARTTLS" => extensions.starttls = true,
                "SIZE" => extensions.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => extensions.eight_bit_mime = true,
                "PIPELINING" => extensions.pipelining = true,
                "SMTPUTF8" => extensions.smtputf8 = true,
                "AUTH" => {
                    for mechanism in first_param.into_iter().chain(words.map(str::to_string)) {
                        match mechanism.to_ascii_uppercase().as_str() {
                            "PLAIN" => extensions.auth_plain = true,
                            "LOGIN" => extensions.auth_login = true,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        extensions
    }
}

/// Whether `address` can go between `<` and `>` on a command line: short
/// enough, and nothing that would end the path or the line.
fn usable_address(address: &str) -> bool {
    address.len() <= MAX_ADDRESS && !address.chars().any(|c| c.is_control() || c == '<' || c == '>')
}

/// Whether `helo` is one printable ASCII word.
fn usable_helo(helo: &str) -> bool {
    !helo.is_empty() && helo.len() <= 255 && helo.bytes().all(|b| b.is_ascii_graphic())
}

/// Whether credentials may be sent on a connection to `server`: under TLS,
/// or to this machine, where they never cross a network.
fn credentials_allowed(tls: bool, server: IpAddr) -> bool {
    tls || is_loopback(server)
}

/// Whether `ip` is this machine (IPv4-mapped loopback included).
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// TLS that accepts any certificate (but still checks the handshake's
/// signatures with it), for [`TlsMode::Opportunistic`].
fn opportunistic_tls() -> Result<Arc<ClientConfig>, Failure> {
    let provider = provider();
    let verifier = AnyCertificate { algorithms: provider.signature_verification_algorithms };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| transient(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// TLS that verifies the server's certificate against `roots`, for
/// [`TlsMode::Required`].
fn verified_tls(roots: Arc<RootCertStore>) -> Result<Arc<ClientConfig>, Failure> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| transient(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The certificate check of opportunistic TLS: none. The server proves it
/// holds the key of the certificate it sent, nothing more.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ehlo(lines: &[&str]) -> Extensions {
        Extensions::parse(&Reply { code: 250, lines: lines.iter().map(|l| l.to_string()).collect() })
    }

    #[test]
    fn test_extensions() {
        let got = ehlo(&[
            "mx.example greets you",
            "PIPELINING",
            "size 10240000",
            "8BITMIME",
            "STARTTLS",
            "AUTH LOGIN CRAM-MD5",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
        ]);
        assert_eq!(
            got,
            Extensions {
                starttls: true,
                size: Some(10_240_000),
                eight_bit_mime: true,
                pipelining: true,
                smtputf8: true,
                auth_plain: false,
                auth_login: true,
            }
        );
        assert_eq!(ehlo(&["mx", "SIZE"]).size, Some(0));
        assert!(ehlo(&["mx", "AUTH=PLAIN LOGIN"]).auth_plain);
        // The first line is the server's name, not a keyword.
        assert!(!ehlo(&["STARTTLS"]).starttls);
        assert_eq!(ehlo(&["mx"]), Extensions::default());
    }

    #[test]
    fn test_addresses_that_cannot_go_on_the_wire() {
        assert!(usable_address("user@example.org"));
        assert!(usable_address(""));
        assert!(usable_address("\"john doe\"@example.org"));
        assert!(!usable_address("a@b>\r\nRCPT TO:<c@d"));
        assert!(!usable_address("a@b> SIZE=1"));
        assert!(!usable_address(&format!("{}@b", "a".repeat(300))));
        assert!(usable_helo("exit.example.net") && !usable_helo("two words") && !usable_helo(""));
    }

    #[test]
    fn test_loopback() {
        assert!(is_loopback("127.0.0.1".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn test_credentials_debug_hides_the_password() {
        let credentials = Credentials { user: "exit".to_string(), password: "hunter2".to_string() };
        let printed = format!("{credentials:?}");
        assert!(printed.contains("exit") && !printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn test_errors_classify() {
        assert!(SendError::Permanent("x".into()).is_permanent());
        assert!(!SendError::Transient("x".into()).is_permanent());
        let reply = Reply { code: 550, lines: vec!["no".into()] };
        assert!(
            matches!(refused("MAIL FROM", &reply, true), Failure::Send(SendError::Permanent(t)) if t == "MAIL FROM: 550 no")
        );
        assert!(matches!(refused("greeting", &reply, false), Failure::Send(SendError::Transient(_))));
    }

    #[test]
    fn test_credentials_go_in_clear_only_to_loopback() {
        assert!(credentials_allowed(true, "192.0.2.1".parse().unwrap()));
        assert!(credentials_allowed(false, "127.0.0.1".parse().unwrap()));
        assert!(!credentials_allowed(false, "192.0.2.1".parse().unwrap()));
        assert!(!credentials_allowed(false, "2001:db8::1".parse().unwrap()));
    }
}
