//! What the local SMTP gateway does with a submitted message before it is
//! queued ([`GatewaySpool`]), and what a queued message becomes when it is
//! sent ([`mail_request`]).
//!
//! ## Where a message goes
//!
//! The envelope's recipients say it. An ordinary address (`local@domain`)
//! is mail, delivered by the exit over SMTP to the domain's mail servers. An
//! address at [`NEWSGROUP_DOMAIN`] names a newsgroup to post to:
//! `comp.lang.rust@news.nox.invalid` posts to `comp.lang.rust` through the
//! exit's news server (NNTP). One message is either mail or news: a message
//! with both kinds of recipient is refused (`554 5.6.0`), and the mail
//! program sends it twice.
//!
//! ## What is checked before `250`
//!
//! Everything that would make the message fail later, so that the user's
//! mail program hears of it while it still holds the message:
//! recipients that do not parse, a header that does not parse
//! ([`nox_mail::message::scrub`]'s errors, which name a line number and
//! never content), and a scrubbed message larger than the largest size
//! bucket ([`nox_mail::bucket::MAX_MESSAGE_LEN`], `552 5.3.4`). What is
//! queued is the scrubbed message: the identifying headers never reach the
//! disk.

use std::sync::Arc;
use std::time::SystemTime;

use nox_mail::bucket::{self, BUCKET_SIZES, MAX_MESSAGE_LEN, RECIPIENTS_ROOM};
use nox_mail::message::{MessageError, ScrubOptions, scrub};
use nox_mail::smtp::{Envelope, Spool, SpoolError, SpoolFuture};
use nox_protocol::payload::{MailTransport, Request};
use tokio::sync::Notify;

use super::entry::QueuedMail;
use super::queue::MailQueue;

/// The domain of newsgroup recipients: `<group>@news.nox.invalid` posts to
/// `<group>`. Under `.invalid` (RFC 2606), so it never names a real host.
pub const NEWSGROUP_DOMAIN: &str = "news.nox.invalid";

/// The longest newsgroup name taken (RFC 5536 §3.1.4 recommends at most 80).
pub const MAX_NEWSGROUP_LEN: usize = 80;

/// The longest address taken (RFC 5321 §4.5.3.1.3: a path of 256 octets).
pub const MAX_ADDRESS_LEN: usize = 254;

/// Where a message goes: mail to addresses, or a post to newsgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// SMTP delivery to these addresses.
    Mail(Vec<String>),
    /// An NNTP post to these newsgroups.
    News(Vec<String>),
}

impl Destination {
    /// The `Mail` request's transport.
    pub fn transport(&self) -> MailTransport {
        match self {
            Destination::Mail(_) => MailTransport::Smtp,
            Destination::News(_) => MailTransport::Nntp,
        }
    }

    /// The request's recipients: addresses, or newsgroup names.
    pub fn recipients(&self) -> &[String] {
        match self {
            Destination::Mail(r) | Destination::News(r) => r,
        }
    }
}

/// Why a submitted message cannot be sent as it is. The texts name the
/// problem (and a recipient's position), never an address or content: they
/// are what the SMTP client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmissionError {
    /// No recipients (the SMTP server never hands over such an envelope).
    #[error("no recipients")]
    NoRecipients,
    /// Mail and newsgroup recipients in one message.
    #[error("recipients mix mail and newsgroups (@{NEWSGROUP_DOMAIN}): send them as two messages")]
    MixedDestinations,
    /// A recipient that is not `local@domain`.
    #[error("recipient {0} is not an address (local@domain, ASCII, at most {MAX_ADDRESS_LEN} bytes)")]
    BadAddress(usize),
    /// A newsgroup name that is not one.
    #[error(
        "recipient {0} is not a newsgroup name (lowercase letters, digits, `+-_`, dot-separated, at most \
         {MAX_NEWSGROUP_LEN} bytes)"
    )]
    BadNewsgroup(usize),
    /// So many recipients that the request would not fit the mixnet's
    /// largest message together with a message this large.
    #[error("too many recipients for a message this large: {bytes} bytes of recipients, room for {room}")]
    RecipientsTooLong {
        /// Bytes the recipients take in the request.
        bytes: usize,
        /// Room left for them.
        room: usize,
    },
    /// The header does not parse.
    #[error("{0}")]
    Message(#[from] MessageError),
    /// The scrubbed message is larger than the largest bucket.
    #[error("the message is {bytes} bytes; the largest the mixnet carries is {max}")]
    TooLarge {
        /// Its size, scrubbed.
        bytes: usize,
        /// [`MAX_MESSAGE_LEN`].
        max: usize,
    },
}

/// Where `recipients` send a message (see the module docs).
pub fn destination(recipients: &[String]) -> Result<Destination, SubmissionError> {
    let mut mail = Vec::new();
    let mut news = Vec::new();
    for (i, r) in recipients.iter().enumerate() {
        let position = i + 1;
        let Some((local, domain)) = r.rsplit_once('@') else {
            return Err(SubmissionError::BadAddress(position));
        };
        if domain.eq_ignore_ascii_case(NEWSGROUP_DOMAIN) {
            let group = local.to_ascii_lowercase();
            if !is_newsgroup(&group) {
                return Err(SubmissionError::BadNewsgroup(position));
            }
            news.push(group);
        } else {
            if !is_address(local, domain) {
                return Err(SubmissionError::BadAddress(position));
            }
            mail.push(r.clone());
        }
    }
    match (mail.is_empty(), news.is_empty()) {
        (true, true) => Err(SubmissionError::NoRecipients),
        (false, false) => Err(SubmissionError::MixedDestinations),
        (false, true) => Ok(Destination::Mail(mail)),
        (true, false) => {
            news.dedup();
            Ok(Destination::News(news))
        }
    }
}

/// `local@domain` as SMTP carries it: printable ASCII, a local part, and a
/// domain of dot-separated labels or an address literal.
fn is_address(local: &str, domain: &str) -> bool {
    let len = local.len() + 1 + domain.len();
    if local.is_empty() || domain.is_empty() || len > MAX_ADDRESS_LEN {
        return false;
    }
    let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    if !printable(local) || !printable(domain) {
        return false;
    }
    if domain.starts_with('[') {
        return domain.ends_with(']') && domain.len() > 2;
    }
    domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    })
}

/// A newsgroup name (RFC 5536 §3.1.4, lowercase as the convention is).
fn is_newsgroup(group: &str) -> bool {
    !group.is_empty()
        && group.len() <= MAX_NEWSGROUP_LEN
        && group.split('.').all(|c| {
            !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-_".contains(&b))
        })
}

/// Bytes `recipients` take in a `Mail` request (a length before each).
fn recipients_len(recipients: &[String]) -> usize {
    recipients.iter().map(|r| 4 + r.len()).sum()
}

/// Checks a submission and returns the message to queue: scrubbed, and
/// known to fit a bucket with its recipients.
pub fn prepare(
    recipients: &[String],
    data: &[u8],
    options: &ScrubOptions,
    now: SystemTime,
) -> Result<(Destination, Vec<u8>), SubmissionError> {
    let destination = destination(recipients)?;
    let scrubbed = scrub(data, options, now)?.into_bytes();
    let size = bucket::bucket_for(scrubbed.len())
        .map_err(|_| SubmissionError::TooLarge { bytes: scrubbed.len(), max: MAX_MESSAGE_LEN })?;
    // Recipients beyond the reserved room push the request into the next
    // fragment bucket; past the largest there is none.
    let bytes = recipients_len(destination.recipients());
    if bytes > RECIPIENTS_ROOM && size == BUCKET_SIZES[BUCKET_SIZES.len() - 1] {
        return Err(SubmissionError::RecipientsTooLong { bytes, room: RECIPIENTS_ROOM });
    }
    Ok((destination, scrubbed))
}

/// The `Mail` request a queued message is sent as: its destination, and
/// the (already scrubbed) message padded into its bucket.
pub fn mail_request(mail: &QueuedMail) -> Result<Request, SubmissionError> {
    let destination = destination(&mail.envelope.rcpt_to)?;
    let message = bucket::pad(&mail.envelope.data)
        .map_err(|_| SubmissionError::TooLarge { bytes: mail.envelope.data.len(), max: MAX_MESSAGE_LEN })?;
    Ok(Request::Mail { transport: destination.transport(), recipients: destination.recipients().to_vec(), message })
}

/// The gateway's [`Spool`]: checks and scrubs a submission
/// ([`prepare`]), refuses what could never be sent (`554 5.6.0`, or `552`
/// when too large), queues the rest durably in the [`MailQueue`], and
/// wakes the sender.
#[derive(Debug, Clone)]
pub struct GatewaySpool {
    queue: MailQueue,
    options: Arc<ScrubOptions>,
    wake: Arc<Notify>,
}

impl GatewaySpool {
    /// A spool into `queue` that scrubs with `options` and notifies `wake`
    /// after each accepted message.
    pub fn new(queue: MailQueue, options: ScrubOptions, wake: Arc<Notify>) -> Self {
        GatewaySpool { queue, options: Arc::new(options), wake }
    }
}

impl Spool for GatewaySpool {
    fn accept(&self, envelope: Envelope) -> SpoolFuture<'_> {
        Box::pin(async move {
            let options = Arc::clone(&self.options);
            let prepared = tokio::task::spawn_blocking(move || {
                prepare(&envelope.rcpt_to, &envelope.data, &options, SystemTime::now())
                    .map(|(_, data)| Envelope { data, ..envelope })
            })
            .await
            .map_err(|e| SpoolError::Failed(format!("the message check stopped: {e}")))?;
            let envelope = match prepared {
                Ok(envelope) => envelope,
                Err(SubmissionError::TooLarge { .. }) => return Err(SpoolError::TooLarge),
                Err(e) => return Err(SpoolError::Rejected(e.to_string())),
            };
            let id = self.queue.accept(envelope).await?;
            self.wake.notify_one();
            Ok(id)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn recipients_say_mail_or_news_and_never_both() {
        assert_eq!(
            destination(&strings(&["bob@example.net", "carol@[192.0.2.1]"])),
            Ok(Destination::Mail(strings(&["bob@example.net", "carol@[192.0.2.1]"])))
        );
        let news = destination(&strings(&["Local.Test@News.Nox.Invalid", "alt.test@news.nox.invalid"])).unwrap();
        assert_eq!(news, Destination::News(strings(&["local.test", "alt.test"])));
        assert_eq!(news.transport(), MailTransport::Nntp);
        assert_eq!(
            destination(&strings(&["bob@example.net", "local.test@news.nox.invalid"])),
            Err(SubmissionError::MixedDestinations)
        );
        assert_eq!(destination(&[]), Err(SubmissionError::NoRecipients));
    }

    #[test]
    fn malformed_recipients_are_named_by_position_only() {
        for (bad, err) in [
            ("nobody", SubmissionError::BadAddress(2)),
            ("bob@", SubmissionError::BadAddress(2)),
            ("bob@exa mple.net", SubmissionError::BadAddress(2)),
            ("bob@-example.net", SubmissionError::BadAddress(2)),
            ("bob@example..net", SubmissionError::BadAddress(2)),
            ("bob\r\n@example.net", SubmissionError::BadAddress(2)),
            ("b\u{f6}b@example.net", SubmissionError::BadAddress(2)),
            ("..x@news.nox.invalid", SubmissionError::BadNewsgroup(2)),
            ("a b@news.nox.invalid", SubmissionError::BadNewsgroup(2)),
        ] {
            let first = if bad.ends_with("news.nox.invalid") { "ok.group@news.nox.invalid" } else { "a@b.example" };
            let e = destination(&strings(&[first, bad])).unwrap_err();
            assert_eq!(e, err, "{bad:?}");
            assert!(!e.to_string().contains(bad), "{e}");
        }
        let long = format!("{}@example.net", "a".repeat(250));
        assert_eq!(destination(&[long]), Err(SubmissionError::BadAddress(1)));
        let long_group = format!("{}@news.nox.invalid", "a".repeat(81));
        assert_eq!(destination(&[long_group]), Err(SubmissionError::BadNewsgroup(1)));
    }

    #[test]
    fn prepare_scrubs_and_refuses_what_cannot_travel() {
        let raw = b"From: a@b.example\r\nReceived: from laptop.home\r\nX-Mailer: M 1.0\r\nSubject: hi\r\n\r\nbody\r\n";
        let (dest, data) =
            prepare(&strings(&["bob@example.net"]), raw, &ScrubOptions::default(), SystemTime::now()).unwrap();
        assert_eq!(dest, Destination::Mail(strings(&["bob@example.net"])));
        let text = String::from_utf8(data).unwrap();
        assert!(!text.contains("laptop") && !text.contains("X-Mailer") && text.ends_with("\r\n\r\nbody\r\n"), "{text}");

        let bad_header = b"From a@b.example\r\n\r\nbody\r\n";
        let e = prepare(&strings(&["bob@example.net"]), bad_header, &ScrubOptions::default(), SystemTime::now())
            .unwrap_err();
        assert!(matches!(e, SubmissionError::Message(_)), "{e:?}");

        let huge = [b"Subject: x\r\n\r\n".as_slice(), &vec![b'a'; MAX_MESSAGE_LEN]].concat();
        let e = prepare(&strings(&["bob@example.net"]), &huge, &ScrubOptions::default(), SystemTime::now()).err();
        assert!(matches!(e, Some(SubmissionError::TooLarge { .. })), "{e:?}");

        // Many recipients are fine for a small message (they take the next
        // bucket), not with one in the largest bucket.
        let many: Vec<String> = (0..200).map(|i| format!("recipient{i:04}@example.net")).collect();
        assert!(recipients_len(&many) > RECIPIENTS_ROOM);
        assert!(prepare(&many, raw, &ScrubOptions::default(), SystemTime::now()).is_ok());
        let big = [b"Subject: x\r\n\r\n".as_slice(), &vec![b'a'; BUCKET_SIZES[7] + 10]].concat();
        let e = prepare(&many, &big, &ScrubOptions::default(), SystemTime::now()).err();
        assert!(matches!(e, Some(SubmissionError::RecipientsTooLong { .. })), "{e:?}");
        assert!(prepare(&many[..10], &big, &ScrubOptions::default(), SystemTime::now()).is_ok());
    }
}
