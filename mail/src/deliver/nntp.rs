//! Posting an article to a news server: RFC 3977 (NNTP) `POST`, with
//! RFC 4643 `AUTHINFO USER`/`PASS` where the server wants an account.
//!
//! The order of a session: greeting `200` (posting allowed) or `201` (not);
//! `MODE READER`, which a server that is both a transit and a reading
//! server (INN) answers by handing over to its reader and greeting again;
//! `AUTHINFO` when configured; `POST`, `340`, the article dot-stuffed,
//! `240`; `QUIT`. A `480` to `POST` (authentication required) is final:
//! without credentials there is nothing to offer, and with them they were
//! just given.
//!
//! NNTP here has no TLS: `AUTHINFO` crosses the network in clear, so give
//! credentials only for a server on this machine or a trusted network.

use std::net::SocketAddr;
use std::time::Duration;

use tracing::debug;

use super::Credentials;
use super::connection::{Connection, dot_stuff};
use super::reply::Reply;

/// The longest wait for the `QUIT` reply and the close.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// How the NNTP client behaves. `Default` gives the values documented on
/// each field.
#[derive(Debug, Clone)]
pub struct NntpConfig {
    /// The account for `AUTHINFO USER`/`PASS`. Default none.
    pub auth: Option<Credentials>,
    /// The longest wait for the TCP connection. Default 30 s.
    pub connect_timeout: Duration,
    /// The longest wait for each reply, and for each 64 KiB of the article
    /// to be written. Default 120 s.
    pub command_timeout: Duration,
}

impl Default for NntpConfig {
    fn default() -> Self {
        NntpConfig { auth: None, connect_timeout: Duration::from_secs(30), command_timeout: Duration::from_secs(120) }
    }
}

/// Why an article was not posted. The text names the step and, where the
/// server answered, its reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    /// Try again later: no connection, a timeout, a `4xx` such as `400`
    /// (service going away), a server that breaks the protocol.
    #[error("posting failed, try later: {0}")]
    Transient(String),
    /// Never postable this way: posting not allowed (`201`, `440`), the
    /// article refused (`441`), authentication refused (`481`, `482`) or
    /// required but not configured (`480`), any `5xx`.
    #[error("posting failed for good: {0}")]
    Permanent(String),
}

impl PostError {
    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, PostError::Permanent(_))
    }
}

/// Posts `article` — an RFC 5536 article with CRLF line ends, headers
/// (`Newsgroups`, `From`, `Subject`, ...) included, not dot-stuffed — to
/// the news server at `addr`.
pub async fn post_article(cfg: &NntpConfig, addr: SocketAddr, article: &[u8]) -> Result<(), PostError> {
    if let Some(credentials) = &cfg.auth
        && !credentials_fit(credentials)
    {
        return Err(PostError::Permanent("AUTHINFO: the credentials hold a line break or NUL".to_string()));
    }
    let conn = Connection::connect(addr, cfg.connect_timeout)
        .await
        .map_err(|e| PostError::Transient(format!("connect: {e}")))?;
    let mut session = Session { conn, cfg, broken: false };
    let result = session.run(article).await;
    session.quit().await;
    debug!(
        posted = result.is_ok(),
        permanent = result.as_ref().is_err_and(PostError::is_permanent),
        "NNTP session ended"
    );
    result
}

struct Session<'a> {
    conn: Connection,
    cfg: &'a NntpConfig,
    /// The connection failed or the server broke the protocol: no `QUIT`.
    broken: bool,
}

impl Session<'_> {
    async fn run(&mut self, article: &[u8]) -> Result<(), PostError> {
        let greeting = self.reply("greeting").await?;
        let mut may_post = match greeting.code {
            200 => true,
            201 => false,
            _ => return Err(refused("greeting", &greeting)),
        };
        let reply = self.command("MODE READER", "MODE READER").await?;
        match reply.code {
            200 => may_post = true,
            201 => may_post = false,
            // A server that is only a reader may not know MODE READER.
            _ if reply.is_permanent() => {}
            _ => return Err(refused("MODE READER", &reply)),
        }
        let mut authenticated = false;
        if let Some(credentials) = &self.cfg.auth {
            self.authenticate(credentials).await?;
            authenticated = true;
        }
        // After AUTHINFO the server may allow posting (RFC 4643 §2.2):
        // only POST tells.
        if !may_post && !authenticated {
            return Err(PostError::Permanent("the server does not allow posting (201)".to_string()));
        }
        let reply = self.command("POST", "POST").await?;
        if reply.code == 480 {
            let why = if authenticated { "refused after AUTHINFO" } else { "authentication required, none configured" };
            return Err(PostError::Permanent(format!("POST: {why}: {}", reply.summary())));
        }
        if reply.code != 340 {
            return Err(refused("POST", &reply));
        }
        if let Err(e) = self.conn.send_block(&dot_stuff(article), self.cfg.command_timeout).await {
            self.broken = true;
            return Err(PostError::Transient(format!("sending the article: {e}")));
        }
        let reply = self.reply("end of article").await?;
        if reply.code == 240 { Ok(()) } else { Err(refused("end of article", &reply)) }
    }

    /// `AUTHINFO USER`, then `PASS` if the server asks for it (`381`).
    async fn authenticate(&mut self, credentials: &Credentials) -> Result<(), PostError> {
        let reply = self.command(&format!("AUTHINFO USER {}", credentials.user), "AUTHINFO").await?;
        let reply = match reply.code {
            281 => return Ok(()),
            381 => self.command(&format!("AUTHINFO PASS {}", credentials.password), "AUTHINFO").await?,
            _ => return Err(refused("AUTHINFO", &reply)),
        };
        if reply.code == 281 { Ok(()) } else { Err(refused("AUTHINFO", &reply)) }
    }

    async fn command(&mut self, line: &str, step: &str) -> Result<Reply, PostError> {
        if let Err(e) = self.conn.send(format!("{line}\r\n").as_bytes(), self.cfg.command_timeout).await {
            self.broken = true;
            return Err(PostError::Transient(format!("{step}: {e}")));
        }
        self.reply(step).await
    }

    async fn reply(&mut self, step: &str) -> Result<Reply, PostError> {
        self.conn.read_reply(self.cfg.command_timeout, true).await.map_err(|e| {
            self.broken = true;
            PostError::Transient(format!("{step}: {e}"))
        })
    }

    async fn quit(&mut self) {
        let timeout = QUIT_TIMEOUT.min(self.cfg.command_timeout);
        if !self.broken && self.conn.send(b"QUIT\r\n", timeout).await.is_ok() {
            let _ = self.conn.read_reply(timeout, true).await;
        }
        self.conn.close(timeout).await;
    }
}

/// An unexpected reply at `step`: `4xx` transient, everything else — `5xx`,
/// `201`, `440`, `441`, `481`, `482`, codes out of place — permanent, as
/// retrying the same article the same way gets the same answer. `400` and
/// the other `4xx` say the service is unavailable for now.
fn refused(step: &str, reply: &Reply) -> PostError {
    let text = format!("{step}: {}", reply.summary());
    match reply.code {
        440 | 441 | 480..=482 => PostError::Permanent(text),
        _ if reply.is_transient() => PostError::Transient(text),
        _ if reply.is_permanent() || reply.is_positive() => PostError::Permanent(text),
        _ => PostError::Transient(text),
    }
}

/// Whether the credentials can go on an `AUTHINFO` line.
fn credentials_fit(credentials: &Credentials) -> bool {
    let fits = |s: &str| !s.is_empty() && !s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
    fits(&credentials.user) && fits(&credentials.password)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16) -> Reply {
        Reply { code, lines: vec!["text".into()] }
    }

    #[test]
    fn test_refusals_classify() {
        for code in [440, 441, 480, 481, 482, 500, 502, 201] {
            assert!(refused("POST", &reply(code)).is_permanent(), "{code}");
        }
        for code in [400, 403, 411, 100] {
            assert!(!refused("POST", &reply(code)).is_permanent(), "{code}");
        }
        assert_eq!(refused("POST", &reply(441)), PostError::Permanent("POST: 441 text".into()));
    }

    #[test]
    fn test_credentials_with_line_breaks_are_refused() {
        let credentials = |user: &str, password: &str| Credentials { user: user.into(), password: password.into() };
        assert!(credentials_fit(&credentials("news", "pass word")));
        assert!(!credentials_fit(&credentials("news\r\nPOST", "x")));
        assert!(!credentials_fit(&credentials("news", "")));
    }
}
