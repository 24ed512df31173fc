//! What a `Mail` request must be before it is queued, and what it becomes.
//!
//! [`prepare`] checks, in this order: the transport is offered (SMTP
//! whenever mail is on; NNTP only with `exit.mail_nntp_server`); 1 to
//! `exit.mail_max_recipients` recipients, each a mailbox (SMTP) or a
//! newsgroup name (NNTP) by [`super::recipient`]'s rules (repeats, ASCII
//! case ignored, are dropped); the padding ([`nox_mail::bucket::unpad`]);
//! the message's length (`exit.mail_max_message_bytes`). Then it scrubs the
//! message again ([`nox_mail::message::scrub`]): the exit does not trust a
//! client to have done it. A news article also gets its `Newsgroups` field
//! written from the request's recipients (replacing any the message had),
//! and `From: Anonymous <nobody@nox.invalid>` and `Subject: (none)` if it
//! lacks them (news servers refuse articles without them).
//!
//! A refusal is a [`MailRefusal`]: a typed reason, its metric label, and the
//! [`ServiceError`] the client receives, none of which repeats the request.

use std::time::SystemTime;

use nox_mail::bucket::{BucketError, unpad};
use nox_mail::message::{MessageError, ScrubOptions, scrub};
use nox_protocol::payload::MailTransport;

use super::config::AcceptRules;
use super::queue::NewMail;
use super::recipient::{RecipientError, check_mailbox, check_newsgroup};
use crate::exit::service::ServiceError;

/// The `From` an article without one is given.
pub const ANONYMOUS_FROM: &str = "Anonymous <nobody@nox.invalid>";

/// The `Subject` an article without one is given.
pub const NO_SUBJECT: &str = "(none)";

/// Longest header line written when folding `Newsgroups`.
const FOLD_AT: usize = 78;

/// Why a `Mail` request is not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailRefusal {
    /// NNTP without `exit.mail_nntp_server`.
    #[error("this exit does not post to newsgroups")]
    NntpOff,
    /// No recipient.
    #[error("the request names no recipient")]
    NoRecipients,
    /// More than `exit.mail_max_recipients`.
    #[error("{count} recipients, more than this exit's {max}")]
    TooManyRecipients {
        /// How many.
        count: usize,
        /// `exit.mail_max_recipients`.
        max: usize,
    },
    /// A recipient that is not a mailbox or newsgroup name.
    #[error("recipient {index}: {error}")]
    Recipient {
        /// Its position in the list, from 0.
        index: usize,
        /// What is wrong with it.
        error: RecipientError,
    },
    /// The padding does not unpad.
    #[error("message padding: {0}")]
    Padding(BucketError),
    /// Longer than `exit.mail_max_message_bytes`.
    #[error("a message of {len} bytes, more than this exit's {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// `exit.mail_max_message_bytes`.
        max: usize,
    },
    /// The header does not parse.
    #[error("message: {0}")]
    Malformed(MessageError),
    /// The queue is full.
    #[error("the mail queue is full")]
    QueueFull,
    /// The queue could not be written.
    #[error("the mail queue could not store the message")]
    Storage,
}

impl MailRefusal {
    /// The label it is counted under (`nox_exit_mail_refused_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            MailRefusal::NntpOff => "nntp_off",
            MailRefusal::NoRecipients | MailRefusal::TooManyRecipients { .. } => "recipients",
            MailRefusal::Recipient { error: RecipientError::Newsgroup, .. } => "newsgroup",
            MailRefusal::Recipient { .. } => "address",
            MailRefusal::Padding(_) => "padding",
            MailRefusal::TooLarge { .. } => "too_large",
            MailRefusal::Malformed(_) => "malformed",
            MailRefusal::QueueFull => "queue_full",
            MailRefusal::Storage => "storage",
        }
    }

    /// Every label, for registering the counters at start.
    pub const REASONS: [&'static str; 9] = [
        "nntp_off",
        "recipients",
        "address",
        "newsgroup",
        "padding",
        "too_large",
        "malformed",
        "queue_full",
        "storage",
    ];
}

impl From<MailRefusal> for ServiceError {
    fn from(r: MailRefusal) -> Self {
        match r {
            MailRefusal::NntpOff => ServiceError::Refused(r.to_string()),
            MailRefusal::QueueFull => ServiceError::Busy(r.to_string()),
            MailRefusal::Storage => ServiceError::Failed(r.to_string()),
            _ => ServiceError::BadRequest(r.to_string()),
        }
    }
}

/// Checks a `Mail` request and returns what the queue stores (see the
/// module docs). `now` dates a message without a usable `Date`.
pub fn prepare(
    rules: &AcceptRules,
    transport: MailTransport,
    recipients: Vec<String>,
    padded: &[u8],
    now: SystemTime,
) -> Result<NewMail, MailRefusal> {
    if transport == MailTransport::Nntp && !rules.nntp {
        return Err(MailRefusal::NntpOff);
    }
    if recipients.is_empty() {
        return Err(MailRefusal::NoRecipients);
    }
    if recipients.len() > rules.max_recipients {
        return Err(MailRefusal::TooManyRecipients { count: recipients.len(), max: rules.max_recipients });
    }
    let mut unique: Vec<String> = Vec::with_capacity(recipients.len());
    for (index, r) in recipients.into_iter().enumerate() {
        let checked = match transport {
            MailTransport::Smtp => check_mailbox(&r),
            MailTransport::Nntp => check_newsgroup(&r),
        };
        checked.map_err(|error| MailRefusal::Recipient { index, error })?;
        if !unique.iter().any(|u| u.eq_ignore_ascii_case(&r)) {
            unique.push(r);
        }
    }
    let message = unpad(padded).map_err(MailRefusal::Padding)?;
    if message.len() > rules.max_message_bytes {
        return Err(MailRefusal::TooLarge { len: message.len(), max: rules.max_message_bytes });
    }
    let scrubbed = scrub(message, &ScrubOptions::default(), now).map_err(MailRefusal::Malformed)?.into_bytes();
    let message = match transport {
        MailTransport::Smtp => scrubbed,
        MailTransport::Nntp => article(&scrubbed, &unique),
    };
    Ok(NewMail { transport, recipients: unique, message })
}

/// A scrubbed message as a news article for `groups`: every `Newsgroups`
/// field replaced by one naming `groups` (folded after a comma where a line
/// would pass 78 bytes), `From` and `Subject` added if missing, at the
/// end of the header. `scrubbed` is [`scrub`]'s output: CRLF lines, fields
/// and continuation lines, a blank line before the body.
pub fn article(scrubbed: &[u8], groups: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(scrubbed.len() + 64 + groups.iter().map(|g| g.len() + 3).sum::<usize>());
    let (mut has_from, mut has_subject, mut skipping) = (false, false, false);
    let mut rest = scrubbed;
    loop {
        let (line, next) = match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => (&rest[..i], &rest[i + 2..]),
            None => (rest, &rest[rest.len()..]),
        };
        if line.is_empty() {
            rest = next;
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if !skipping {
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            }
        } else {
            let name = line.iter().position(|b| *b == b':').map_or(line, |c| &line[..c]);
            let name = name.trim_ascii_end();
            skipping = name.eq_ignore_ascii_case(b"Newsgroups");
            has_from |= name.eq_ignore_ascii_case(b"From");
            has_subject |= name.eq_ignore_ascii_case(b"Subject");
            if !skipping {
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            }
        }
        rest = next;
        if rest.is_empty() {
            break;
        }
    }
    let mut field = String::from("Newsgroups: ");
    let mut line_len = field.len();
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            field.push(',');
            line_len += 1;
            if line_len + g.len() > FOLD_AT {
                field.push_str("\r\n ");
                line_len = 1;
            }
        }
        field.push_str(g);
        line_len += g.len();
    }
    field.push_str("\r\n");
    out.extend_from_slice(field.as_bytes());
    if !has_from {
        out.extend_from_slice(format!("From: {ANONYMOUS_FROM}\r\n").as_bytes());
    }
    if !has_subject {
        out.extend_from_slice(format!("Subject: {NO_SUBJECT}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nox_mail::bucket::pad;

    fn rules() -> AcceptRules {
        AcceptRules { max_recipients: 3, max_message_bytes: 1000, nntp: true }
    }

    const MSG: &[u8] = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\nX-Mailer: Thing 1.0\r\n\
        Received: from host (1.2.3.4)\r\nMessage-ID: <1@host.example>\r\n\r\nbody\r\n";

    fn smtp(recipients: &[&str], padded: &[u8]) -> Result<NewMail, MailRefusal> {
        let r = recipients.iter().map(|s| s.to_string()).collect();
        prepare(&rules(), MailTransport::Smtp, r, padded, SystemTime::now())
    }

    #[test]
    fn a_good_request_is_scrubbed_again() {
        let m = smtp(&["b@example.org", "B@Example.org", "c@example.net"], &pad(MSG).unwrap()).unwrap();
        assert_eq!(m.recipients, ["b@example.org", "c@example.net"], "repeats dropped");
        let text = String::from_utf8(m.message).unwrap();
        assert!(text.contains("Subject: hi\r\n") && text.ends_with("\r\n\r\nbody\r\n"), "{text}");
        for gone in ["X-Mailer", "Received", "1@host.example"] {
            assert!(!text.contains(gone), "{gone} left in {text}");
        }
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason_and_no_content() {
        let padded = pad(MSG).unwrap();
        let cases: Vec<(Result<NewMail, MailRefusal>, &str)> = vec![
            (smtp(&[], &padded), "recipients"),
            (smtp(&["a@example.org"; 4], &padded), "recipients"),
            (smtp(&["a@example.org", "secret-name"], &padded), "address"),
            (smtp(&["a@example.org"], &padded[..padded.len() - 1]), "padding"),
            (smtp(&["a@example.org"], &pad(&[b'x'; 1001]).unwrap()), "too_large"),
            (smtp(&["a@example.org"], &pad(b"secret-header-line\r\n\r\nx").unwrap()), "malformed"),
        ];
        for (result, reason) in cases {
            let e = result.unwrap_err();
            assert_eq!(e.reason(), reason, "{e}");
            assert!(MailRefusal::REASONS.contains(&e.reason()));
            let se = ServiceError::from(e.clone());
            assert!(matches!(se, ServiceError::BadRequest(_)), "{se:?}");
            assert!(!se.to_string().contains("secret"), "{se}");
        }
        let mut tampered = padded.clone();
        *tampered.last_mut().unwrap() = 1;
        assert_eq!(smtp(&["a@example.org"], &tampered).unwrap_err().reason(), "padding");
        let off = AcceptRules { nntp: false, ..rules() };
        let e = prepare(&off, MailTransport::Nntp, vec!["alt.test".into()], &padded, SystemTime::now()).unwrap_err();
        assert!(matches!(ServiceError::from(e), ServiceError::Refused(_)));
        let e = prepare(&rules(), MailTransport::Nntp, vec!["a@example.org".into()], &padded, SystemTime::now())
            .unwrap_err();
        assert_eq!(e.reason(), "newsgroup");
    }

    #[test]
    fn an_article_names_its_groups_and_has_from_and_subject() {
        let msg = b"Newsgroups: elsewhere.secret\r\n ,folded.too\r\nTo: x@example.org\r\n\r\nbody\r\n";
        let groups = vec!["alt.test".to_string(), "alt.test2".to_string()];
        let m = prepare(&rules(), MailTransport::Nntp, groups, &pad(msg).unwrap(), SystemTime::now()).unwrap();
        let text = String::from_utf8(m.message).unwrap();
        assert!(!text.contains("elsewhere") && !text.contains("folded"), "{text}");
        assert!(text.contains("Newsgroups: alt.test,alt.test2\r\n"), "{text}");
        assert!(text.contains(&format!("From: {ANONYMOUS_FROM}\r\n")), "{text}");
        assert!(text.contains("Subject: (none)\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nbody\r\n"), "{text}");

        let kept = article(b"From: me@example.org\r\nSubject: s\r\n\r\nb", &["a.b".to_string()]);
        assert_eq!(kept, b"From: me@example.org\r\nSubject: s\r\nNewsgroups: a.b\r\n\r\nb");
    }

    #[test]
    fn a_long_newsgroups_field_is_folded() {
        let groups: Vec<String> = (0..40).map(|i| format!("comp.lang.group{i:02}")).collect();
        let a = String::from_utf8(article(b"Subject: s\r\n\r\n", &groups)).unwrap();
        let field_start = a.find("Newsgroups: ").unwrap();
        let field_end = a[field_start..].find("\r\nFrom").unwrap() + field_start;
        let field = &a[field_start..field_end];
        assert!(field.lines().all(|l| l.trim_end().len() <= FOLD_AT), "{field}");
        let unfolded: String = field.replace("\r\n ", "");
        assert_eq!(unfolded, format!("Newsgroups: {}", groups.join(",")));
    }
}
