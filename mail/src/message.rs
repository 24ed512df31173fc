//! What a submitted message becomes before it enters the mixnet.
//!
//! A mail program writes more about its user than the user typed: the hosts
//! and addresses the message passed (`Received`), the program and its version
//! (`User-Agent`, `X-Mailer`), the machine's name in `Message-ID`, the local
//! time zone and the second of sending in `Date`. The mixnet hides who sent a
//! message; these fields would tell the recipient anyway. [`scrub`] takes the
//! message as submitted (RFC 5322 bytes) and returns what the exit will
//! deliver:
//!
//! * every field on [`DROP_LIST`] is removed, with its continuation lines
//!   (`Reply-To` only unless [`ScrubOptions::keep_reply_to`]);
//! * `Message-ID` is written anew: `<32 hex digits of a CSPRNG@domain>`,
//!   [`ScrubOptions::message_id_domain`] (default [`DEFAULT_MESSAGE_ID_DOMAIN`]);
//! * `Date` is the sender's date coarsened to the hour, in UTC (`+0000`); a date
//!   that does not parse, or none, becomes the hour of `now` — the clock is the
//!   caller's argument;
//! * every other field (`From`, `To`, `Cc`, `Subject`, `MIME-Version`,
//!   `Content-*`, `In-Reply-To`, `References`, `Newsgroups`, …) is kept as it
//!   was written, folding included, in its place.
//!
//! ## What crosses the edges
//!
//! In: the message bytes, with CRLF or bare LF line ends, 8-bit bodies allowed.
//! Out: a [`ScrubbedMessage`] whose lines all end in CRLF (RFC 5322), and a
//! [`ScrubReport`] with how many fields were removed for each [`DropReason`] —
//! counts only, so a caller can export them as metrics without content.
//!
//! The envelope's recipients (SMTP `RCPT TO`, or the newsgroups to post to) are
//! not read from the message and not written into it: they travel beside it in
//! the `Mail` request. That is why `Bcc` is removed — its recipients are the
//! envelope's business, and the field would show them to everyone.
//!
//! ## Invariants
//!
//! * Only the header block is parsed. The body is kept byte for byte, except
//!   that a line feed without a carriage return before it becomes CRLF; a
//!   message submitted with CRLF line ends keeps its body exactly. What the
//!   body's lines hold and how long they are is the transport's business
//!   (the SMTP server already bounds its lines).
//! * The output has exactly one `Message-ID` and one `Date`.
//! * A malformed header (a NUL, a bare carriage return, a line over
//!   [`MAX_LINE_LEN`] bytes, a line that is neither a field nor a
//!   continuation) is a typed [`MessageError`] that names the line number and
//!   never the content; nothing here panics on any input.
//!
//! What this does not hide: the body (MIME boundaries and the order of fields
//! can still hint at the mail program), and what the user chose to write in
//! `From`, `Subject` or the text.

use std::fmt;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::{CryptoRng, RngCore};

/// The longest line RFC 5322 allows (section 2.1.1), without its CRLF.
pub const MAX_LINE_LEN: usize = 998;

/// The `Message-ID` domain when none is configured: `.invalid` is reserved
/// (RFC 2606), so it names no host.
pub const DEFAULT_MESSAGE_ID_DOMAIN: &str = "nox.invalid";

/// Longest `Message-ID` domain accepted (the longest DNS name).
pub const MAX_MESSAGE_ID_DOMAIN_LEN: usize = 253;

/// Why a header field is removed; the label a caller counts it under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Where the message went before: relays, their addresses and times
    /// (`Received`, `Return-Path`, `Delivered-To`, the results of checks by
    /// receiving servers, a resent block, a news article's posting path).
    Trace,
    /// An `X-` field: private extensions, which mail programs and servers
    /// fill with their names, versions and the sender's address
    /// (`X-Mailer`, `X-Originating-IP`).
    Extension,
    /// The mail program describing itself (`User-Agent`, Outlook's
    /// `Thread-Index`, which carries a timestamp).
    Client,
    /// `Reply-To`, which commonly names the sender's real mailbox.
    ReplyTo,
    /// A signature by the sender's domain (`DKIM-Signature`, `ARC-*`):
    /// it names the domain, and scrubbing breaks it anyway.
    Signature,
    /// `Sender`: the mailbox that actually submitted the message.
    Sender,
    /// `Bcc`: hidden recipients (the envelope carries them).
    Bcc,
    /// The sender's `Message-ID` (it names the sender's host); a new one
    /// replaces it.
    MessageId,
    /// A `Date` field after the first (RFC 5322 allows one).
    ExtraDate,
}

impl DropReason {
    /// Every reason, in the order [`ScrubReport::iter`] gives them.
    pub const ALL: [DropReason; 9] = [
        DropReason::Trace,
        DropReason::Extension,
        DropReason::Client,
        DropReason::ReplyTo,
        DropReason::Signature,
        DropReason::Sender,
        DropReason::Bcc,
        DropReason::MessageId,
        DropReason::ExtraDate,
    ];

    /// A short lower-case label, fit for a metric.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Trace => "trace",
            DropReason::Extension => "extension",
            DropReason::Client => "client",
            DropReason::ReplyTo => "reply_to",
            DropReason::Signature => "signature",
            DropReason::Sender => "sender",
            DropReason::Bcc => "bcc",
            DropReason::MessageId => "message_id",
            DropReason::ExtraDate => "extra_date",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Which field names a [`DropRule`] matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldMatch {
    /// Exactly this name (ASCII case-insensitive).
    Name(&'static str),
    /// Every name that starts with this prefix (ASCII case-insensitive).
    Prefix(&'static str),
}

impl FieldMatch {
    fn matches(self, name: &[u8]) -> bool {
        match self {
            FieldMatch::Name(n) => name.eq_ignore_ascii_case(n.as_bytes()),
            FieldMatch::Prefix(p) => name.len() >= p.len() && name[..p.len()].eq_ignore_ascii_case(p.as_bytes()),
        }
    }
}

/// One entry of [`DROP_LIST`]: the fields it matches and why they go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropRule {
    /// The field names removed.
    pub field: FieldMatch,
    /// The reason they are counted under.
    pub reason: DropReason,
}

const fn rule(field: FieldMatch, reason: DropReason) -> DropRule {
    DropRule { field, reason }
}

/// The header fields [`scrub`] removes, with their continuation lines. Names
/// compare ASCII case-insensitively; the first matching rule gives the reason.
///
/// `Reply-To` is kept when [`ScrubOptions::keep_reply_to`] is set. A new
/// `Message-ID` replaces the removed ones; `Date` is not on the list because it
/// is rewritten from its own value (a second `Date` is counted as
/// [`DropReason::ExtraDate`]).
pub const DROP_LIST: [DropRule; 21] = [
    // Trace: RFC 5322 §3.6.7, and what receiving servers add.
    rule(FieldMatch::Name("Received"), DropReason::Trace),
    rule(FieldMatch::Name("Return-Path"), DropReason::Trace),
    rule(FieldMatch::Name("Delivered-To"), DropReason::Trace),
    rule(FieldMatch::Name("Received-SPF"), DropReason::Trace),
    rule(FieldMatch::Name("Authentication-Results"), DropReason::Trace),
    // A resent block (RFC 5322 §3.6.6) is an earlier submission's trace: its
    // exact date, its host's message id, its sender.
    rule(FieldMatch::Prefix("Resent-"), DropReason::Trace),
    // A news article's path and the injecting server's notes (RFC 5536):
    // the posting host, the injection time. The news server adds its own.
    rule(FieldMatch::Name("Path"), DropReason::Trace),
    rule(FieldMatch::Name("NNTP-Posting-Host"), DropReason::Trace),
    rule(FieldMatch::Name("NNTP-Posting-Date"), DropReason::Trace),
    rule(FieldMatch::Name("Injection-Info"), DropReason::Trace),
    rule(FieldMatch::Name("Injection-Date"), DropReason::Trace),
    rule(FieldMatch::Name("Xref"), DropReason::Trace),
    // Private extensions, X-Originating-IP and X-Mailer among them.
    rule(FieldMatch::Prefix("X-"), DropReason::Extension),
    rule(FieldMatch::Name("User-Agent"), DropReason::Client),
    rule(FieldMatch::Name("Thread-Index"), DropReason::Client),
    rule(FieldMatch::Name("Reply-To"), DropReason::ReplyTo),
    rule(FieldMatch::Name("DKIM-Signature"), DropReason::Signature),
    rule(FieldMatch::Prefix("ARC-"), DropReason::Signature),
    rule(FieldMatch::Name("Sender"), DropReason::Sender),
    rule(FieldMatch::Name("Bcc"), DropReason::Bcc),
    rule(FieldMatch::Name("Message-ID"), DropReason::MessageId),
];

/// How [`scrub`] treats what the options can change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubOptions {
    /// Keep `Reply-To` (default: removed, see [`DropReason::ReplyTo`]).
    pub keep_reply_to: bool,
    /// The right-hand side of generated `Message-ID`s: a dot-atom
    /// (default [`DEFAULT_MESSAGE_ID_DOMAIN`]).
    pub message_id_domain: String,
}

impl Default for ScrubOptions {
    fn default() -> Self {
        ScrubOptions { keep_reply_to: false, message_id_domain: DEFAULT_MESSAGE_ID_DOMAIN.to_owned() }
    }
}

impl ScrubOptions {
    /// Keeps `Reply-To` or not.
    pub fn with_keep_reply_to(mut self, keep: bool) -> Self {
        self.keep_reply_to = keep;
        self
    }

    /// Sets the domain of generated `Message-ID`s.
    pub fn with_message_id_domain(mut self, domain: impl Into<String>) -> Self {
        self.message_id_domain = domain.into();
        self
    }

    /// Checks the options: the domain must be a dot-atom (RFC 5322 `id-right`)
    /// of at most [`MAX_MESSAGE_ID_DOMAIN_LEN`] bytes.
    pub fn validate(&self) -> Result<(), MessageError> {
        let domain = self.message_id_domain.as_bytes();
        let ok = !domain.is_empty()
            && domain.len() <= MAX_MESSAGE_ID_DOMAIN_LEN
            && domain.split(|b| *b == b'.').all(|label| !label.is_empty() && label.iter().all(|b| is_atext(*b)));
        if ok { Ok(()) } else { Err(MessageError::InvalidMessageIdDomain(self.message_id_domain.clone())) }
    }

    fn drops(&self, name: &[u8]) -> Option<DropReason> {
        let reason = DROP_LIST.iter().find(|r| r.field.matches(name))?.reason;
        (!(reason == DropReason::ReplyTo && self.keep_reply_to)).then_some(reason)
    }
}

/// What happened to the message's `Date`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DateRewrite {
    /// The sender's date, coarsened to the hour in UTC.
    #[default]
    Coarsened,
    /// The date did not parse; the hour of `now` replaced it.
    Unparsable,
    /// There was no `Date`; the hour of `now` was added.
    Missing,
}

impl DateRewrite {
    /// A short lower-case label, fit for a metric.
    pub const fn name(self) -> &'static str {
        match self {
            DateRewrite::Coarsened => "coarsened",
            DateRewrite::Unparsable => "unparsable",
            DateRewrite::Missing => "missing",
        }
    }
}

/// What [`scrub`] changed, without any content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScrubReport {
    removed: [u32; DropReason::ALL.len()],
    /// What became of `Date`.
    pub date: DateRewrite,
}

impl ScrubReport {
    /// Fields removed for `reason` (a field with continuation lines counts once).
    pub fn removed(&self, reason: DropReason) -> u32 {
        self.removed[reason.index()]
    }

    /// Fields removed for any reason.
    pub fn removed_total(&self) -> u32 {
        self.removed.iter().fold(0u32, |a, b| a.saturating_add(*b))
    }

    /// Every reason with its count, zeros included.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u32)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.removed(*r)))
    }

    fn count(&mut self, reason: DropReason) {
        let n = &mut self.removed[reason.index()];
        *n = n.saturating_add(1);
    }
}

/// A scrubbed message: RFC 5322 bytes with CRLF line ends, ready to pad
/// ([`crate::bucket::pad`]). `Debug` shows its length and the report only.
#[derive(Clone, PartialEq, Eq)]
pub struct ScrubbedMessage {
    bytes: Vec<u8>,
    report: ScrubReport,
}

impl ScrubbedMessage {
    /// The message.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The message, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// What was removed and how `Date` was rewritten.
    pub fn report(&self) -> &ScrubReport {
        &self.report
    }
}

impl fmt::Debug for ScrubbedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrubbedMessage").field("len", &self.bytes.len()).field("report", &self.report).finish()
    }
}

/// Why a message could not be scrubbed. Lines are numbered from 1 and the
/// error never carries the message's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// No bytes at all.
    #[error("the message is empty")]
    Empty,
    /// A NUL byte in the header block.
    #[error("header line {line}: a NUL byte")]
    Nul {
        /// The line number.
        line: usize,
    },
    /// A carriage return not followed by a line feed in the header block.
    #[error("header line {line}: a carriage return without a line feed")]
    BareCarriageReturn {
        /// The line number.
        line: usize,
    },
    /// A header line longer than [`MAX_LINE_LEN`].
    #[error("header line {line}: {len} bytes, more than the {MAX_LINE_LEN} RFC 5322 allows")]
    LineTooLong {
        /// The line number.
        line: usize,
        /// Its length without the line end.
        len: usize,
    },
    /// A continuation line (starting with a space or a tab) before any field.
    #[error("header line {line}: a continuation line with no field before it")]
    ContinuationWithoutField {
        /// The line number.
        line: usize,
    },
    /// A header line that is not `name: value` (a name of printable ASCII
    /// without a colon, then a colon).
    #[error("header line {line}: not a header field")]
    MalformedField {
        /// The line number.
        line: usize,
    },
    /// [`ScrubOptions::message_id_domain`] is not a dot-atom.
    #[error("Message-ID domain {0:?} is not a dot-atom of at most {MAX_MESSAGE_ID_DOMAIN_LEN} bytes")]
    InvalidMessageIdDomain(String),
}

/// Scrubs `raw` (see the module docs), with a `Message-ID` from the operating
/// system's CSPRNG. `now` is the clock that dates a message without a usable
/// `Date`.
pub fn scrub(raw: &[u8], options: &ScrubOptions, now: SystemTime) -> Result<ScrubbedMessage, MessageError> {
    scrub_with_rng(raw, options, now, &mut rand::rngs::OsRng)
}

/// [`scrub`] drawing the `Message-ID` from `rng`.
pub fn scrub_with_rng<R: RngCore + CryptoRng>(
    raw: &[u8],
    options: &ScrubOptions,
    now: SystemTime,
    rng: &mut R,
) -> Result<ScrubbedMessage, MessageError> {
    options.validate()?;
    let parsed = parse(raw)?;
    let mut report = ScrubReport::default();
    let mut out = Vec::with_capacity(raw.len() + 128);
    let mut wrote_id = false;
    let mut wrote_date = false;

    for field in &parsed.fields {
        if field.name.eq_ignore_ascii_case(b"Date") {
            if wrote_date {
                report.count(DropReason::ExtraDate);
                continue;
            }
            let (time, outcome) = match parse_date(&field.value()) {
                Some(t) => (t, DateRewrite::Coarsened),
                None => (unix_seconds(now), DateRewrite::Unparsable),
            };
            report.date = outcome;
            write_date(&mut out, time);
            wrote_date = true;
            continue;
        }
        if let Some(reason) = options.drops(field.name) {
            report.count(reason);
            // The new Message-ID takes the place of the first old one.
            if reason == DropReason::MessageId && !wrote_id {
                write_message_id(&mut out, &options.message_id_domain, rng);
                wrote_id = true;
            }
            continue;
        }
        for line in &field.lines {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    if !wrote_date {
        report.date = DateRewrite::Missing;
        write_date(&mut out, unix_seconds(now));
    }
    if !wrote_id {
        write_message_id(&mut out, &options.message_id_domain, rng);
    }
    out.extend_from_slice(b"\r\n");
    push_body(&mut out, parsed.body);
    Ok(ScrubbedMessage { bytes: out, report })
}

/// One header field: its name (trailing blanks trimmed, for the obsolete
/// `Name : value`) and its physical lines without their line ends.
struct Field<'a> {
    name: &'a [u8],
    lines: Vec<&'a [u8]>,
}

impl Field<'_> {
    /// The unfolded value: everything after the first colon, continuation
    /// lines joined without their line breaks (RFC 5322 §2.2.3).
    fn value(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for (i, line) in self.lines.iter().enumerate() {
            if i == 0 {
                let colon = line.iter().position(|b| *b == b':').map_or(line.len(), |p| p + 1);
                v.extend_from_slice(&line[colon..]);
            } else {
                v.extend_from_slice(line);
            }
        }
        v
    }
}

struct Parsed<'a> {
    fields: Vec<Field<'a>>,
    /// Everything after the blank line; empty without one.
    body: &'a [u8],
}

/// Splits the header block into fields and finds the body. A line ends at a
/// line feed, with or without a carriage return before it; the block ends at
/// the first empty line, or with the input.
fn parse(raw: &[u8]) -> Result<Parsed<'_>, MessageError> {
    if raw.is_empty() {
        return Err(MessageError::Empty);
    }
    let mut fields: Vec<Field<'_>> = Vec::new();
    let mut pos = 0;
    let mut number = 0;
    while pos < raw.len() {
        number += 1;
        let rest = &raw[pos..];
        let (mut line, advance) = match rest.iter().position(|b| *b == b'\n') {
            Some(lf) => (&rest[..lf], lf + 1),
            None => (rest, rest.len()),
        };
        // Only a CR right before the LF is part of the line end.
        if advance > line.len()
            && let [head @ .., b'\r'] = line
        {
            line = head;
        }
        pos += advance;
        if line.is_empty() {
            return Ok(Parsed { fields, body: &raw[pos..] });
        }
        if line.len() > MAX_LINE_LEN {
            return Err(MessageError::LineTooLong { line: number, len: line.len() });
        }
        if line.contains(&0) {
            return Err(MessageError::Nul { line: number });
        }
        if line.contains(&b'\r') {
            return Err(MessageError::BareCarriageReturn { line: number });
        }
        if line[0] == b' ' || line[0] == b'\t' {
            match fields.last_mut() {
                Some(field) => field.lines.push(line),
                None => return Err(MessageError::ContinuationWithoutField { line: number }),
            }
        } else {
            let name = field_name(line).ok_or(MessageError::MalformedField { line: number })?;
            fields.push(Field { name, lines: vec![line] });
        }
    }
    Ok(Parsed { fields, body: &[] })
}

/// The name of a field's first line: printable ASCII other than the colon
/// (RFC 5322 `ftext`), then optional blanks (obsolete syntax), then a colon.
fn field_name(line: &[u8]) -> Option<&[u8]> {
    let colon = line.iter().position(|b| *b == b':')?;
    let mut name = &line[..colon];
    while let [head @ .., b' ' | b'\t'] = name {
        name = head;
    }
    let ftext = |b: &u8| (33..=126).contains(b);
    (!name.is_empty() && name.iter().all(ftext)).then_some(name)
}

/// Appends the body with every bare LF turned into CRLF, nothing else changed.
fn push_body(out: &mut Vec<u8>, body: &[u8]) {
    let mut start = 0;
    for (i, b) in body.iter().enumerate() {
        if *b == b'\n' && (i == 0 || body[i - 1] != b'\r') {
            out.extend_from_slice(&body[start..i]);
            out.push(b'\r');
            start = i;
        }
    }
    out.extend_from_slice(&body[start..]);
}

/// RFC 5322 `atext`.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

fn write_message_id<R: RngCore + CryptoRng>(out: &mut Vec<u8>, domain: &str, rng: &mut R) {
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    let mut line = String::with_capacity(48 + domain.len());
    line.push_str("Message-ID: <");
    for b in id {
        let _ = write!(line, "{b:02x}");
    }
    let _ = write!(line, "@{domain}>\r\n");
    out.extend_from_slice(line.as_bytes());
}

fn write_date(out: &mut Vec<u8>, unix: i64) {
    out.extend_from_slice(b"Date: ");
    out.extend_from_slice(format_date(unix.div_euclid(3600) * 3600).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Seconds since the Unix epoch; a clock before 1970 reads as 1970.
fn unix_seconds(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2))
}

const DAY_NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTH_NAMES: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Formats Unix seconds as an RFC 5322 date in UTC: `Tue, 01 Jul 2025 14:00:00 +0000`.
fn format_date(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // 1 January 1970 was a Thursday.
    let weekday = DAY_NAMES[(days + 4).rem_euclid(7) as usize];
    let month = MONTH_NAMES[(month - 1) as usize];
    format!("{weekday}, {day:02} {month} {year:04} {:02}:{:02}:{:02} +0000", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (`month` 1–12).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Count years from March, so that the leap day ends the year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month 1–12, day 1–31).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses an RFC 5322 `date-time` (an unfolded field value) to Unix seconds
/// in UTC. Accepts the obsolete forms that are easy to read: comments
/// anywhere, no day of the week, two- and three-digit years (RFC 5322 §4.3),
/// no seconds, the named zones of RFC 822 (UT, GMT, EST … PDT) and military
/// letters (read as `-0000`, as §4.3 says), and words after the zone.
/// `None` for anything else.
fn parse_date(value: &[u8]) -> Option<i64> {
    let text = strip_comments(value)?;
    let mut tokens = text.split(|b| b.is_ascii_whitespace() || *b == b',').filter(|t| !t.is_empty()).peekable();

    if tokens.peek()?.iter().all(u8::is_ascii_alphabetic) {
        let name = tokens.next()?;
        if !DAY_NAMES.iter().any(|d| name_matches(name, d)) {
            return None;
        }
    }
    let day = number(tokens.next()?, 1, 2)?;
    let month_token = tokens.next()?;
    let month = MONTH_NAMES.iter().position(|m| name_matches(month_token, m))? as i64 + 1;
    let year_token = tokens.next()?;
    let year = match (number(year_token, 2, 4)?, year_token.len()) {
        (y, 2) if y < 50 => 2000 + y,
        (y, 2 | 3) => 1900 + y,
        (y, _) => y,
    };
    let mut clock = tokens.next()?.split(|b| *b == b':');
    let hour = number(clock.next()?, 1, 2)?;
    let minute = number(clock.next()?, 1, 2)?;
    let second = match clock.next() {
        Some(s) => number(s, 1, 2)?,
        None => 0,
    };
    if clock.next().is_some() {
        return None;
    }
    let offset = zone_offset(tokens.next()?)?;

    let valid =
        year >= 1900 && (1..=days_in_month(year, month)).contains(&day) && hour <= 23 && minute <= 59 && second <= 60;
    valid.then(|| days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Seconds east of UTC.
fn zone_offset(token: &[u8]) -> Option<i64> {
    if let [sign @ (b'+' | b'-'), digits @ ..] = token {
        if digits.len() != 4 {
            return None;
        }
        let hours = number(&digits[..2], 2, 2)?;
        let minutes = number(&digits[2..], 2, 2)?;
        if minutes > 59 {
            return None;
        }
        let offset = hours * 3600 + minutes * 60;
        return Some(if *sign == b'-' { -offset } else { offset });
    }
    let hours = match token.to_ascii_uppercase().as_slice() {
        b"UT" | b"GMT" | b"UTC" | b"Z" => 0,
        b"EDT" => -4,
        b"EST" | b"CDT" => -5,
        b"CST" | b"MDT" => -6,
        b"MST" | b"PDT" => -7,
        b"PST" => -8,
        // Military zones: RFC 822 had their signs backwards, so RFC 5322
        // §4.3 reads them as an unknown zone, -0000.
        [letter] if letter.is_ascii_alphabetic() && *letter != b'J' => 0,
        _ => return None,
    };
    Some(hours * 3600)
}

/// Whether `token` is `short` (a three-letter name) or a longer spelling that
/// begins with it (`Tuesday`, `July`), ignoring case.
fn name_matches(token: &[u8], short: &str) -> bool {
    token.len() >= short.len()
        && token.iter().all(u8::is_ascii_alphabetic)
        && token[..short.len()].eq_ignore_ascii_case(short.as_bytes())
}

/// An unsigned decimal of `min..=max` digits.
fn number(token: &[u8], min: usize, max: usize) -> Option<i64> {
    if !(min..=max).contains(&token.len()) || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(token.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
}

/// The value with every comment (nested parentheses, backslash escapes)
/// replaced by a space; `None` if a parenthesis is unbalanced.
fn strip_comments(value: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(value.len());
    let mut depth = 0usize;
    let mut escaped = false;
    for b in value {
        if depth > 0 {
            match (escaped, *b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'(') => depth += 1,
                (false, b')') => {
                    depth -= 1;
                    if depth == 0 {
                        out.push(b' ');
                    }
                }
                _ => {}
            }
        } else {
            match *b {
                b'(' => depth = 1,
                b')' => return None,
                _ => out.push(*b),
            }
        }
    }
    (depth == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> Option<i64> {
        parse_date(s.as_bytes())
    }

    /// 2025-07-01 12:34:56 UTC.
    const T: i64 = 1_751_373_296;

    #[test]
    fn test_parse_date_current_form() {
        assert_eq!(date(" Tue, 01 Jul 2025 12:34:56 +0000"), Some(T));
        assert_eq!(date("Tue, 1 Jul 2025 14:34:56 +0200"), Some(T));
        assert_eq!(date("Tue, 1 Jul 2025 08:04:56 -0430"), Some(T));
    }

    #[test]
    fn test_parse_date_obsolete_forms() {
        assert_eq!(date("1 Jul 2025 12:34:56 GMT"), Some(T), "no day of week, named zone");
        assert_eq!(date("Tue , 01 Jul 25 12:34:56 UT"), Some(T), "two-digit year");
        assert_eq!(date("Tuesday, 1 July 2025 05:34:56 PDT"), Some(T), "long names, US zone");
        assert_eq!(date("Tue, 1 Jul 2025 12:34 +0000"), Some(T - 56), "no seconds");
        assert_eq!(date("Tue, 1 Jul 2025 12:34:56 +0000 (UTC)"), Some(T), "comment after the zone");
        assert_eq!(date("(sent) Tue, (x (nested)) 1 Jul 2025 12:34:56 +0000"), Some(T), "comments anywhere");
        assert_eq!(date("Tue, 1 Jul 2025 12:34:56 Z"), Some(T), "military zone");
        assert_eq!(date("Tue, 1 Jul 2025 12:34:56 +0000 CEST"), Some(T), "a word after the zone");
        assert_eq!(date("tue, 1 jul 2025 12:34:56 +0000"), Some(T), "lower case");
        assert_eq!(date("Thu, 1 Jan 70 00:00:00 +0000"), Some(0), "1970 from a two-digit year");
        assert_eq!(date("Sat, 1 Jan 100 00:00:00 +0000"), Some(days_from_civil(2000, 1, 1) * 86_400));
    }

    #[test]
    fn test_parse_date_refuses_what_is_not_a_date() {
        for bad in [
            "",
            "yesterday",
            "2025-07-01T12:34:56Z",
            "Tue Jul  1 12:34:56 2025",
            "Tue, 31 Jun 2025 12:00:00 +0000",
            "Tue, 29 Feb 2025 12:00:00 +0000",
            "Tue, 1 Jul 2025 24:00:00 +0000",
            "Tue, 1 Jul 2025 12:60:00 +0000",
            "Tue, 1 Jul 2025 12:00:00",
            "Tue, 1 Jul 2025 12:00:00 +00",
            "Tue, 1 Jul 2025 12:00:00 +0060",
            "Tue, 1 Jul 2025 12:00:00 J",
            "Tue, 1 Jul 2025 12:00:00 (unclosed +0000",
            "Tue, 1 Jul 2025 12:00:00 ) +0000",
            "Xyz, 1 Jul 2025 12:00:00 +0000",
            "Tue, 1 Foo 2025 12:00:00 +0000",
            "Tue, 1 Jul 1899 12:00:00 +0000",
            "Tue, 1 Jul 99999 12:00:00 +0000",
            "Tue, 1 Jul 2025 12:00:00:00 +0000",
        ] {
            assert_eq!(date(bad), None, "{bad:?}");
        }
        assert!(date("Thu, 29 Feb 2024 12:00:00 +0000").is_some(), "a leap day");
    }

    #[test]
    fn test_format_date_round_trips_with_parse() {
        assert_eq!(format_date(T / 3600 * 3600), "Tue, 01 Jul 2025 12:00:00 +0000");
        assert_eq!(format_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        for t in [0, 951_782_400, 1_709_164_800, T, 4_102_444_799, 253_402_300_799] {
            assert_eq!(date(&format_date(t)), Some(t), "{t}");
        }
    }

    /// `t` written in a zone `offset` minutes east of UTC.
    fn in_zone(t: i64, offset: i64) -> String {
        let local = format_date(t + offset * 60);
        let sign = if offset < 0 { '-' } else { '+' };
        format!("{} {sign}{:02}{:02}", &local[..local.len() - 6], offset.abs() / 60, offset.abs() % 60)
    }

    proptest::proptest! {
        #[test]
        fn date_round_trips_through_any_zone(
            t in -2_208_988_800i64..253_402_300_800,
            offset in -(99 * 60 + 59)..=(99 * 60 + 59i64),
        ) {
            let text = in_zone(t, offset);
            let parsed = date(&text);
            // 1 January 1900 local is the earliest a date may say.
            if t + offset * 60 >= -2_208_988_800 && t + offset * 60 < 253_402_300_800 {
                proptest::prop_assert_eq!(parsed, Some(t), "{}", text);
            }
        }

        #[test]
        fn parse_date_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            let _ = parse_date(&bytes);
        }
    }

    #[test]
    fn test_civil_days_agree() {
        for days in -800_000..800_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            assert!((1..=days_in_month(y, m)).contains(&d));
        }
    }

    #[test]
    fn test_options_validate_domain() {
        assert!(ScrubOptions::default().validate().is_ok());
        for good in ["example.org", "a", "mail-1.example", "x_y.z"] {
            assert!(ScrubOptions::default().with_message_id_domain(good).validate().is_ok(), "{good}");
        }
        for bad in ["", ".", "a..b", ".a", "a.", "a b", "a>b", "a@b", "é.example", &"a".repeat(254)] {
            assert_eq!(
                ScrubOptions::default().with_message_id_domain(bad).validate(),
                Err(MessageError::InvalidMessageIdDomain(bad.to_owned())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn test_field_name() {
        assert_eq!(field_name(b"Subject: x"), Some(&b"Subject"[..]));
        assert_eq!(field_name(b"Subject \t: x"), Some(&b"Subject"[..]));
        assert_eq!(field_name(b"Subject:"), Some(&b"Subject"[..]));
        assert_eq!(field_name(b": x"), None);
        assert_eq!(field_name(b"No colon"), None);
        assert_eq!(field_name(b"From me@example.org Tue Jul  1 12:00:00 2025"), None);
        assert_eq!(field_name("Sübject: x".as_bytes()), None);
    }

    #[test]
    fn test_drop_list_reasons() {
        let o = ScrubOptions::default();
        assert_eq!(o.drops(b"received"), Some(DropReason::Trace));
        assert_eq!(o.drops(b"X-Originating-IP"), Some(DropReason::Extension));
        assert_eq!(o.drops(b"x-mailer"), Some(DropReason::Extension));
        assert_eq!(o.drops(b"ARC-Seal"), Some(DropReason::Signature));
        assert_eq!(o.drops(b"Resent-Date"), Some(DropReason::Trace));
        assert_eq!(o.drops(b"REPLY-TO"), Some(DropReason::ReplyTo));
        assert_eq!(o.clone().with_keep_reply_to(true).drops(b"Reply-To"), None);
        for kept in ["From", "To", "Cc", "Subject", "Content-Type", "References", "Newsgroups", "Xfoo", "Senders"] {
            assert_eq!(o.drops(kept.as_bytes()), None, "{kept}");
        }
    }
}
