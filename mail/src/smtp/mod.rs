//! The SMTP submission server (RFC 5321) that both ends of a user's mail
//! run: the client's local gateway (`nox-client smtp`), where the user's
//! mail client submits, and a node's optional SMTP entry. Our own code on
//! tokio; TLS by rustls.
//!
//! ## What flows in and out
//!
//! A caller binds a [`tokio::net::TcpListener`] (at [`SmtpConfig::listen`])
//! and runs [`SmtpServer::serve`] on it until its shutdown future resolves.
//! Each connection becomes a session (`session.rs`), which parses commands
//! (`command.rs`, pure), answers them, and for each message hands an
//! [`Envelope`] — reverse path, recipients, the dot-unstuffed bytes with
//! CRLF line ends, and whether the client authenticated — to the caller's
//! [`Spool`]. What the spool does with it (scrub, pad, send into the mixnet)
//! is not this module's business.
//!
//! ## Durable before 250
//!
//! `250` after `DATA` is a promise: the client deletes its copy. So the
//! server answers `250 2.0.0 queued as <id>` only after [`Spool::accept`]
//! returned `Ok`, and the spool returns `Ok` only once the message survives
//! a crash. Every other outcome is an error reply, and the client keeps the
//! message: a full spool is `452 4.3.1` (try later), never a silent drop. A
//! shutdown never cuts an `accept` short: a session that is storing a
//! message finishes and answers before it closes; one still receiving
//! a message gets [`SmtpConfig::shutdown_grace`] to finish, and is otherwise
//! dropped unanswered — the client, having no `250`, sends it again later.
//!
//! ## Bounds
//!
//! | what | bound | config | beyond it |
//! |---|---|---|---|
//! | sessions at once | 64 | `max_sessions` | `421 4.3.2`, connection closed |
//! | message size (after dot-unstuffing) | 32 MiB | `max_message_bytes` | declared at `MAIL ... SIZE=`: `552 5.3.4` at once; in `DATA`: read to the end, then `552 5.3.4` |
//! | recipients per message | 100 | `max_recipients` | `452 4.5.3` for each further `RCPT` |
//! | command line | 512 bytes (`AUTH`: 12,288) | `max_command_line` | `500 5.5.2`, the line discarded as it arrives |
//! | message line | 16 KiB (RFC: 1,000) | `max_text_line` | read to the end, then `552 5.3.4` |
//! | wait for a command | 300 s | `command_timeout` | `421 4.4.2`, closed |
//! | wait within `DATA`, `AUTH`, TLS, or for the client to read | 180 s | `data_timeout` | `421 4.4.2` (or just closed), closed |
//! | failed `AUTH` per session | 3 | `max_auth_failures` | `421 4.7.0`, closed |
//!
//! Memory: a session holds at most one message, so the server holds at most
//! `max_sessions × max_message_bytes` of mail (2 GiB with the defaults;
//! lower either for a small machine), plus per session one line of input
//! (at most `max_text_line` + 16 KiB) and 16 KiB of replies.
//!
//! ## Replies
//!
//! | reply | when |
//! |---|---|
//! | `220 <hostname> ESMTP` | greeting |
//! | `250` | `EHLO` (with `SIZE`, `8BITMIME`, `PIPELINING`, `ENHANCEDSTATUSCODES`, and `STARTTLS`, `AUTH PLAIN LOGIN` when offered), `HELO`, `MAIL` (2.1.0), `RCPT` (2.1.5), `RSET`, `NOOP` (2.0.0) |
//! | `250 2.0.0 queued as <id>` | the spool took the message (only then) |
//! | `354` | `DATA`: send the message |
//! | `214 2.0.0`, `252 2.5.0`, `221 2.0.0` | `HELP`, `VRFY` (never verifies), `QUIT` |
//! | `220 2.0.0`, `235 2.7.0`, `334` | `STARTTLS` go-ahead, `AUTH` succeeded, `AUTH` challenge |
//! | `421 4.3.2` / `4.4.2` / `4.7.0` | too many sessions or shutting down / timeout / too many failed `AUTH` — then the connection closes |
//! | `451 4.3.0` | the spool failed ([`SpoolError::Failed`]) |
//! | `452 4.3.1` | the spool is full ([`SpoolError::Full`]) |
//! | `452 4.5.3` | too many recipients |
//! | `500 5.5.1` / `500 5.5.2` | unknown command / command line too long |
//! | `501 5.5.4`, `5.1.7`, `5.1.3`, `5.5.2`, `5.7.0` | bad arguments, sender, recipient, SASL response, `AUTH` cancelled |
//! | `502 5.5.1` | `EXPN`, `TURN`, `ETRN`, `BDAT`, ...; `STARTTLS` or `AUTH` when not configured |
//! | `503 5.5.1` | out of sequence: `MAIL` before `EHLO`/`HELO` or inside a transaction, `RCPT` before `MAIL`, `DATA` before an accepted `RCPT`, `AUTH` twice or inside a transaction |
//! | `504 5.5.4` | an `AUTH` mechanism other than `PLAIN` and `LOGIN` |
//! | `530 5.7.0` | `MAIL` before `AUTH` where authentication is configured |
//! | `535 5.7.8` | wrong credentials |
//! | `538 5.7.11` | `AUTH` in clear where TLS is configured (loopback excepted) |
//! | `552 5.3.4` | message or line too large, or [`SpoolError::TooLarge`] |
//! | `554 5.6.0` | the spool refused the message as it is ([`SpoolError::Rejected`]) |
//! | `555 5.5.4` | a `MAIL`/`RCPT` parameter we did not advertise |
//!
//! ## Line ends and the end of a message
//!
//! Lines end in CRLF; a bare LF is taken as a line end too (mail clients
//! that send one mean it) and stored as CRLF. A bare CR is content. The
//! message ends only at `<CRLF>.<CRLF>`: a dot line with a bare LF on
//! either side is content, so a message cannot smuggle a second one past
//! a server that reads line ends differently. A leading dot is removed from
//! each line that has more after it (RFC 5321 §4.5.2).
//!
//! ## PIPELINING
//!
//! Commands are answered strictly in order, and replies are written in one
//! batch when the input buffer holds no further complete command (RFC 2920
//! §3.1), so a client that sends `MAIL`, `RCPT`s and `DATA` in one write
//! reads their answers in order, in one read. Input pipelined after
//! `STARTTLS` is discarded (it came in clear).
//!
//! ## Authentication and TLS
//!
//! With [`SmtpConfig::auth`] set, `MAIL` is refused (`530 5.7.0`) until the
//! client authenticates as the single configured user with `AUTH PLAIN` or
//! `AUTH LOGIN`. With [`SmtpConfig::tls`] set, `STARTTLS` is offered, and
//! `AUTH` is offered and accepted only under TLS — except on a loopback
//! connection, where the password never leaves the machine.
//!
//! ## What is never logged
//!
//! Addresses (the client's IP and port, `EHLO` names, senders, recipients),
//! user names and passwords, message content and per-message sizes or
//! timings. The server logs its own listening address, a session's end as
//! a kind (`Quit`, `Timeout`, ...), and spool failures as the spool words
//! them; everything else is counted in [`SmtpStats`], by [`Refusal`] reason.

mod auth;
mod command;
mod config;
mod connection;
mod session;
mod spool;
mod stats;

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

pub use config::{SmtpAuth, SmtpConfig, SmtpTls, TlsSetupError};
pub use spool::{Envelope, QueueId, Spool, SpoolError, SpoolFuture};
pub use stats::{Refusal, SmtpStats};

use session::{Session, Shared};

/// What a connection beyond `max_sessions` is told before it is closed.
const SESSION_LIMIT_REPLY: &[u8] = b"421 4.3.2 too many sessions, try later\r\n";
/// The pause after a failed `accept` (out of file descriptors, say), so
/// that the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// An SMTP submission server: a configuration, a spool, and counters.
#[derive(Debug, Clone)]
pub struct SmtpServer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("config", &self.config).finish_non_exhaustive()
    }
}

impl SmtpServer {
    /// A server that hands accepted messages to `spool`.
    pub fn new(config: SmtpConfig, spool: Arc<dyn Spool>) -> Self {
        let tls = config.tls.as_ref().map(|tls| TlsAcceptor::from(Arc::clone(&tls.config)));
        SmtpServer { shared: Arc::new(Shared { config, spool, stats: Arc::new(SmtpStats::default()), tls }) }
    }

    /// The server's counters, live.
    pub fn stats(&self) -> Arc<SmtpStats> {
        Arc::clone(&self.shared.stats)
    }

    /// Serves connections from `listener` until `shutdown` resolves. Then it
    /// stops accepting, tells idle sessions `421 4.3.2`, lets the others
    /// finish their message for up to `shutdown_grace`, drops what is left,
    /// and returns.
    pub async fn serve<F>(self, listener: TcpListener, shutdown: F)
    where
        F: Future<Output = ()>,
    {
        let config = &self.shared.config;
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, tls = config.tls.is_some(), auth = config.auth.is_some(), "SMTP server listening");
            if config.auth.is_some() && config.tls.is_none() && !addr.ip().is_loopback() {
                warn!(%addr, "SMTP AUTH is accepted in clear on a listener other than loopback: configure TLS");
            }
        }
        let (stop, stopped) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(config.max_sessions));
        let mut sessions = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    // The peer's address is neither kept nor logged.
                    Ok((stream, _)) => match Arc::clone(&permits).try_acquire_owned() {
                        Ok(permit) => {
                            let session = Session::new(Arc::clone(&self.shared), stream, stopped.clone());
                            sessions.spawn(async move {
                                let end = session.run().await;
                                debug!(?end, "SMTP session ended");
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            self.shared.stats.refuse(Refusal::SessionLimit);
                            refuse_over_limit(stream);
                        }
                    },
                    Err(e) => {
                        warn!(error = %e, "SMTP accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
        drop(listener);
        let _ = stop.send(true);
        let drain = async { while sessions.join_next().await.is_some() {} };
        if tokio::time::timeout(config.shutdown_grace, drain).await.is_err() {
            warn!(sessions = sessions.len(), "SMTP sessions still busy after the shutdown grace; dropped unanswered");
            sessions.shutdown().await;
        }
        info!("SMTP server stopped");
    }
}

/// Tells a connection over the session limit `421` and closes it, without
/// a task: a fresh socket's send buffer is empty, so a non-blocking write of
/// one line goes through at once (and if it does not, the client sees the
/// connection close, which means the same).
fn refuse_over_limit(stream: TcpStream) {
    if let Ok(stream) = stream.into_std() {
        let _ = (&stream).write(SESSION_LIMIT_REPLY);
    }
}
