//! The outgoing side of a mail exit: finding where a domain's mail goes
//! ([`MxResolver`]), handing a message to that server or to a smarthost
//! ([`send_mail`]), and posting an article to a news server
//! ([`post_article`]). Our own code on tokio; TLS by rustls, DNS by
//! hickory-resolver.
//!
//! ## What flows in and out
//!
//! The exit's queue (in the node) owns every message and decides when to
//! try, where, and when to give up. It hands this module one attempt at a
//! time and gets back a typed outcome that says whether trying again can
//! help:
//!
//! * [`MxResolver::mail_hosts`]: a domain in, its [`MailHost`]s out, in the
//!   order to try them, or a [`ResolveError`] — `Transient` (the DNS
//!   failed) or `NoMailHost` (the domain takes no mail: bounce);
//! * [`send_mail`]: a message, a sender and recipients in, one
//!   [`RcptOutcome`] per recipient out (`Delivered`, `Transient`,
//!   `Permanent`), or a [`SendError`] when the session failed as a whole;
//! * [`post_article`]: an article in, `Ok` or a [`PostError`].
//!
//! Nothing here stores or retries: one call, one connection.
//!
//! ## Transient or permanent
//!
//! | what happened | SMTP | NNTP |
//! |---|---|---|
//! | no connection, timeout, connection lost, reply malformed or too long | transient | transient |
//! | greeting other than `220` / `200`,`201`; `421` at any point | transient | `4xx` transient, `5xx`, `201` permanent |
//! | TLS required but not offered, refused, or the certificate does not verify | transient | — |
//! | `5xx` to `MAIL FROM`, message over the server's `SIZE`, `AUTH` refused (`535`), credentials that would go in clear | permanent | — |
//! | `4xx` / `5xx` to `RCPT TO` | that recipient transient / permanent | — |
//! | `4xx` / `5xx` to `DATA` or after the final dot, or the connection lost there | every accepted recipient transient / permanent (lost: transient) | — |
//! | posting not allowed (`201`, `440`), article refused (`441`), auth refused (`481`, `482`), auth required and not configured (`480`) | — | permanent |
//!
//! A connection lost after the final dot and before the reply may still
//! have delivered the message; the recipient comes back transient, and a
//! retry may deliver it twice (RFC 1047), which is the safe side.
//!
//! ## Bounds
//!
//! | what | bound | beyond it |
//! |---|---|---|
//! | a reply line | 2,048 bytes (RFC: 512) | the session fails, transient |
//! | lines in one reply | 128 | the session fails, transient |
//! | the wait for a reply | [`SmtpClientConfig::command_timeout`] (300 s), after the final dot [`SmtpClientConfig::data_timeout`] (600 s); NNTP [`NntpConfig::command_timeout`] (120 s) — for the whole reply, however slowly it trickles | transient |
//! | each 64 KiB of a message written | the command timeout | transient |
//! | the TCP connection | `connect_timeout` (30 s) | transient |
//! | commands pipelined at once | 32 (`MAIL` + `RCPT`s, where PIPELINING is offered) | the next group waits for the replies |
//! | MX hosts returned | 10, with at most 8 IPv4 and 8 IPv6 addresses each | the rest unused |
//! | a DNS step (MX, then the hosts' addresses) | the resolver's `timeout` | transient |
//!
//! Memory: what a hostile server can make a session hold is one reply
//! (128 lines of 2 KiB) and one read buffer. The message itself is held
//! once more, dot-stuffed, while it is sent.
//!
//! ## TLS
//!
//! [`TlsMode::Opportunistic`] (RFC 7435, what delivery to an MX does):
//! `STARTTLS` if offered, any certificate; a failed handshake is retried
//! in clear on a new connection (without credentials, which never go in
//! clear). [`TlsMode::Required`] (a smarthost): `STARTTLS` must succeed
//! and the certificate verify for [`SmtpTarget::name`]. Bytes the server
//! sends in clear after its `220` to `STARTTLS` end the session. Credentials
//! go only under TLS or to a server on loopback.
//!
//! ## Line ends and 8-bit data
//!
//! A message goes on the wire with every line end CRLF — a bare LF or CR
//! becomes one, so that no server reads the message's lines differently
//! from us (SMTP smuggling) — and each line starting with a dot gets
//! another (RFC 5321 §4.5.2). A message with 8-bit bytes is announced as
//! `BODY=8BITMIME` where the server offers it, and sent as it is where it
//! does not (no conversion to quoted-printable). Addresses beyond ASCII need
//! the server's `SMTPUTF8`.
//!
//! ## What is never logged
//!
//! Addresses (the server's, senders, recipients, domains), user names and
//! passwords, message and article content. This module logs counts only:
//! recipients delivered and refused, hosts found. The texts of the errors
//! and outcomes carry the server's reply, which may quote an address: the
//! caller treats them like the address.

mod connection;
mod mx;
mod nntp;
mod reply;
mod smtp_client;

pub use mx::{MAX_ADDRS_PER_FAMILY, MAX_MX_HOSTS, MailHost, MxResolver, ResolveError, ResolverSetupError, domain_of};
pub use nntp::{NntpConfig, PostError, post_article};
pub use smtp_client::{Credentials, RcptOutcome, SendError, SmtpClientConfig, SmtpTarget, TlsMode, send_mail};
