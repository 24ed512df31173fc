//! Scrubbing a submitted message: what leaves, what stays, what is rewritten,
//! and typed errors for headers that are not RFC 5322.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nox_mail::message::{
    DROP_LIST, DateRewrite, DropReason, FieldMatch, MAX_LINE_LEN, MessageError, ScrubOptions, ScrubbedMessage, scrub,
    scrub_with_rng,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// 2025-07-01 12:34:56 UTC.
const NOW: u64 = 1_751_373_296;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn run(raw: &[u8]) -> ScrubbedMessage {
    scrub(raw, &ScrubOptions::default(), now()).unwrap()
}

/// (header, body) of a scrubbed message.
fn split(m: &ScrubbedMessage) -> (String, Vec<u8>) {
    let bytes = m.as_bytes();
    let at = bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("a blank line");
    (String::from_utf8(bytes[..at + 2].to_vec()).unwrap(), bytes[at + 4..].to_vec())
}

/// The header without its Message-ID line, and that line's value.
fn without_message_id(header: &str) -> (String, String) {
    let mut rest = String::new();
    let mut id = None;
    for line in header.split_inclusive("\r\n") {
        match line.strip_prefix("Message-ID: ") {
            Some(v) => {
                assert!(id.is_none(), "two Message-IDs in {header}");
                id = Some(v.trim_end().to_owned());
            }
            None => rest.push_str(line),
        }
    }
    (rest, id.expect("a Message-ID"))
}

fn assert_message_id(id: &str, domain: &str) {
    let inner = id.strip_prefix('<').and_then(|s| s.strip_suffix('>')).expect("angle brackets");
    let (local, right) = inner.split_once('@').expect("an @");
    assert_eq!(right, domain);
    assert_eq!(local.len(), 32, "{local}");
    assert!(local.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{local}");
}

const THUNDERBIRD: &str = "Return-Path: <alice@home.example>\r\n\
Received: from [192.168.1.20] (dsl-203-0-113-7.isp.example [203.0.113.7])\r\n\
\tby smtp.home.example (Postfix) with ESMTPSA id 4bXk2\r\n\
\tfor <bob@example.org>; Tue, 01 Jul 2025 14:34:56 +0200 (CEST)\r\n\
Delivered-To: alice@home.example\r\n\
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=home.example;\r\n\
\x20s=mail; h=from:to:subject; bh=abc=;\r\n\
\x20b=XYZ=\r\n\
ARC-Seal: i=1; a=rsa-sha256; cv=none; d=home.example\r\n\
Message-ID: <6d3f0a1e-4b2c-8e9f-aaaa-workstation@home.example>\r\n\
Date: Tue, 1 Jul 2025 14:34:56 +0200\r\n\
MIME-Version: 1.0\r\n\
User-Agent: Mozilla Thunderbird 128.0\r\n\
From: Anonymous <anon@nox.example>\r\n\
Sender: Alice <alice@home.example>\r\n\
Reply-To: alice@home.example\r\n\
To: Bob <bob@example.org>\r\n\
Cc: carol@example.org,\r\n\
\x20dave@example.org\r\n\
Bcc: eve@example.org\r\n\
Subject: =?UTF-8?Q?Caf=C3=A9?= plans\r\n\
In-Reply-To: <earlier@example.org>\r\n\
References: <first@example.org>\r\n\
\t<earlier@example.org>\r\n\
X-Mailer: Thunderbird\r\n\
X-Originating-IP: [203.0.113.7]\r\n\
Organization: Somewhere\r\n\
Content-Type: multipart/mixed;\r\n\
\x20boundary=\"------------b0und4ry\"\r\n\
\r\n";

const BODY: &[u8] = b"This is a multi-part message in MIME format.\r\n\
--------------b0und4ry\r\n\
Content-Type: text/plain; charset=ISO-8859-1\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Caf\xe9 at 10?\r\n\
Received: this line is body text, not a header\r\n\
From the body, not a header.\r\n\
.\r\n\
--------------b0und4ry\r\n\
Content-Type: application/octet-stream; name=\"blob.bin\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4\r\n\
OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ub3Bx\r\n\
--------------b0und4ry--\r\n";

fn thunderbird() -> Vec<u8> {
    [THUNDERBIRD.as_bytes(), BODY].concat()
}

#[test]
fn test_scrub_keeps_what_the_user_wrote_and_removes_the_rest() {
    let out = scrub_with_rng(&thunderbird(), &ScrubOptions::default(), now(), &mut StdRng::seed_from_u64(1)).unwrap();
    let (header, body) = split(&out);
    let (header, id) = without_message_id(&header);
    assert_eq!(
        header,
        "Date: Tue, 01 Jul 2025 12:00:00 +0000\r\n\
MIME-Version: 1.0\r\n\
From: Anonymous <anon@nox.example>\r\n\
To: Bob <bob@example.org>\r\n\
Cc: carol@example.org,\r\n\
\x20dave@example.org\r\n\
Subject: =?UTF-8?Q?Caf=C3=A9?= plans\r\n\
In-Reply-To: <earlier@example.org>\r\n\
References: <first@example.org>\r\n\
\t<earlier@example.org>\r\n\
Organization: Somewhere\r\n\
Content-Type: multipart/mixed;\r\n\
\x20boundary=\"------------b0und4ry\"\r\n"
    );
    assert_message_id(&id, "nox.invalid");
    assert_eq!(body, BODY, "the body is untouched");
    // The new Message-ID takes the old one's place, before Date.
    let text = String::from_utf8_lossy(out.as_bytes()).into_owned();
    assert!(text.starts_with("Message-ID: <"), "{text}");
    for leak in ["203.0.113.7", "home.example", "alice", "Thunderbird", "eve@", "workstation", "+0200"] {
        assert!(!text.contains(leak) || String::from_utf8_lossy(BODY).contains(leak), "{leak} leaks: {text}");
    }
}

#[test]
fn test_scrub_counts_removed_fields_per_reason() {
    let out = run(&thunderbird());
    let r = out.report();
    let expected = [
        (DropReason::Trace, 3),
        (DropReason::Extension, 2),
        (DropReason::Client, 1),
        (DropReason::ReplyTo, 1),
        (DropReason::Signature, 2),
        (DropReason::Sender, 1),
        (DropReason::Bcc, 1),
        (DropReason::MessageId, 1),
        (DropReason::ExtraDate, 0),
    ];
    assert_eq!(r.iter().collect::<Vec<_>>(), expected);
    assert_eq!(r.removed_total(), 12);
    assert_eq!(r.date, DateRewrite::Coarsened);
    let labels: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
    assert_eq!(
        labels,
        ["trace", "extension", "client", "reply_to", "signature", "sender", "bcc", "message_id", "extra_date"]
    );
}

#[test]
fn test_scrub_keeps_reply_to_when_asked() {
    let options = ScrubOptions::default().with_keep_reply_to(true);
    let out = scrub(&thunderbird(), &options, now()).unwrap();
    let (header, _) = split(&out);
    assert!(header.contains("\r\nReply-To: alice@home.example\r\n"), "{header}");
    assert_eq!(out.report().removed(DropReason::ReplyTo), 0);
}

#[test]
fn test_options_default() {
    let o = ScrubOptions::default();
    assert!(!o.keep_reply_to);
    assert_eq!(o.message_id_domain, "nox.invalid");
}

#[test]
fn test_message_id_is_fresh_random_hex_at_the_configured_domain() {
    let raw = b"From: a@example.org\r\nMessage-ID: <x@host>\r\n\r\nhi\r\n";
    let options = ScrubOptions::default().with_message_id_domain("mail.example.net");
    let ids: Vec<String> = (0..3)
        .map(|_| {
            let (header, _) = split(&scrub(raw, &options, now()).unwrap());
            without_message_id(&header).1
        })
        .collect();
    for id in &ids {
        assert_message_id(id, "mail.example.net");
    }
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2], "{ids:?}");
}

#[test]
fn test_message_id_added_when_missing_and_duplicates_collapse() {
    let (header, _) = split(&run(b"From: a@example.org\r\n\r\n"));
    assert_eq!(header.matches("Message-ID: ").count(), 1);
    let out = run(b"Message-ID: <1@a>\r\nFrom: a@example.org\r\nmessage-id: <2@b>\r\n\r\n");
    let (header, _) = split(&out);
    assert_eq!(header.to_ascii_lowercase().matches("message-id: ").count(), 1, "{header}");
    assert!(header.starts_with("Message-ID: <"), "in the first one's place: {header}");
    assert_eq!(out.report().removed(DropReason::MessageId), 2);
}

#[test]
fn test_invalid_message_id_domain_is_refused() {
    let options = ScrubOptions::default().with_message_id_domain("bad domain>");
    assert_eq!(
        scrub(b"From: a@example.org\r\n\r\n", &options, now()).unwrap_err(),
        MessageError::InvalidMessageIdDomain("bad domain>".to_owned())
    );
}

fn date_line(raw: &str) -> (String, DateRewrite) {
    let out = run(raw.as_bytes());
    let (header, _) = split(&out);
    let dates: Vec<&str> = header.split("\r\n").filter(|l| l.starts_with("Date: ")).collect();
    assert_eq!(dates.len(), 1, "{header}");
    (dates[0].to_owned(), out.report().date)
}

#[test]
fn test_date_is_coarsened_to_the_hour_in_utc() {
    let cases = [
        ("Date: Tue, 1 Jul 2025 14:59:59 +0200\r\n", "Date: Tue, 01 Jul 2025 12:00:00 +0000"),
        ("Date: Mon, 30 Jun 2025 23:30:00 -0100\r\n", "Date: Tue, 01 Jul 2025 00:00:00 +0000"),
        ("Date: Sat, 1 Mar 2025 00:10:00 +0100\r\n", "Date: Fri, 28 Feb 2025 23:00:00 +0000"),
        ("Date: Thu, 29 Feb 2024 16:00:00 EST\r\n", "Date: Thu, 29 Feb 2024 21:00:00 +0000"),
        ("Date: 1 Jul 25 12:34 GMT\r\n", "Date: Tue, 01 Jul 2025 12:00:00 +0000"),
        ("date:  Tue,\r\n 1 Jul 2025\r\n\t12:34:56 +0000 (UTC)\r\n", "Date: Tue, 01 Jul 2025 12:00:00 +0000"),
        ("Date : Wed, 31 Dec 1969 23:59:59 +0000\r\n", "Date: Wed, 31 Dec 1969 23:00:00 +0000"),
    ];
    for (field, want) in cases {
        assert_eq!(
            date_line(&format!("From: a@example.org\r\n{field}\r\n")),
            (want.to_owned(), DateRewrite::Coarsened)
        );
    }
}

#[test]
fn test_unparsable_or_missing_date_becomes_the_current_hour() {
    let hour = "Date: Tue, 01 Jul 2025 12:00:00 +0000".to_owned();
    for bad in
        ["Date: yesterday\r\n", "Date:\r\n", "Date: 2025-07-01T12:34:56Z\r\n", "Date: Tue, 31 Jun 2025 1:00 +0000\r\n"]
    {
        assert_eq!(date_line(&format!("From: a@example.org\r\n{bad}\r\n")), (hour.clone(), DateRewrite::Unparsable));
    }
    assert_eq!(date_line("From: a@example.org\r\n\r\n"), (hour, DateRewrite::Missing));
    // A clock before 1970 reads as 1970 rather than failing.
    let out = scrub(b"From: a@example.org\r\n\r\n", &ScrubOptions::default(), UNIX_EPOCH - Duration::from_secs(5));
    assert!(split(&out.unwrap()).0.contains("Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n"));
}

#[test]
fn test_a_second_date_is_dropped() {
    let out = run(
        b"Date: Tue, 1 Jul 2025 09:00:00 +0000\r\nFrom: a@example.org\r\nDate: Wed, 2 Jul 2025 09:00:00 +0000\r\n\r\n",
    );
    let (header, _) = split(&out);
    assert!(header.starts_with("Date: Tue, 01 Jul 2025 09:00:00 +0000\r\nFrom: a@example.org\r\n"), "{header}");
    assert_eq!(header.matches("Date: ").count(), 1);
    assert_eq!(out.report().removed(DropReason::ExtraDate), 1);
}

#[test]
fn test_continuation_lines_leave_with_their_field() {
    let raw = b"Received: from laptop\r\n\tby relay (203.0.113.7)\r\n    with ESMTP\r\nX-Trace:\r\n abcdef\r\n\tghijkl\r\nSubject: kept\r\n folded\r\n\r\nbody\r\n";
    let (header, body) = split(&run(raw));
    let (header, _) = without_message_id(&header);
    assert_eq!(header, "Subject: kept\r\n folded\r\nDate: Tue, 01 Jul 2025 12:00:00 +0000\r\n");
    assert_eq!(body, b"body\r\n");
}

#[test]
fn test_field_names_match_without_case() {
    let raw = b"rEcEiVeD: x\r\nx-mAiLeR: y\r\nuser-agent: z\r\nBCC: w\r\nsender: v\r\ndkim-signature: u\r\narc-message-signature: t\r\nSubject: s\r\n\r\n";
    let out = run(raw);
    let (header, _) = split(&out);
    let (header, _) = without_message_id(&header);
    assert_eq!(header, "Subject: s\r\nDate: Tue, 01 Jul 2025 12:00:00 +0000\r\n");
    assert_eq!(out.report().removed_total(), 7);
}

#[test]
fn test_fields_off_the_drop_list_are_kept() {
    let raw = "From: a@example.org\r\nNewsgroups: alt.test\r\nContent-Transfer-Encoding: 8bit\r\nXref-Like: x\r\nX: not a prefix match\r\nSubject: Grüße\r\n\r\n";
    let (header, _) = split(&run(raw.as_bytes()));
    for kept in [
        "Newsgroups: alt.test",
        "Content-Transfer-Encoding: 8bit",
        "Xref-Like: x",
        "X: not a prefix match",
        "Subject: Grüße",
    ] {
        assert!(header.contains(&format!("{kept}\r\n")), "{kept} in {header}");
    }
}

#[test]
fn test_drop_list_names_what_the_issue_asks() {
    let dropped = |name: &str| {
        DROP_LIST.iter().any(|r| match r.field {
            FieldMatch::Name(n) => n.eq_ignore_ascii_case(name),
            FieldMatch::Prefix(p) => name.to_ascii_lowercase().starts_with(&p.to_ascii_lowercase()),
        })
    };
    for name in [
        "Received",
        "X-Anything",
        "X-Originating-IP",
        "User-Agent",
        "Reply-To",
        "Return-Path",
        "Delivered-To",
        "DKIM-Signature",
        "ARC-Authentication-Results",
        "Sender",
        "Bcc",
        "Message-ID",
    ] {
        assert!(dropped(name), "{name}");
    }
    for name in [
        "From",
        "To",
        "Cc",
        "Subject",
        "MIME-Version",
        "Content-Type",
        "In-Reply-To",
        "References",
        "Newsgroups",
        "Date",
    ] {
        assert!(!dropped(name), "{name}");
    }
}

#[test]
fn test_lf_line_ends_become_crlf() {
    let crlf = thunderbird();
    let lf: Vec<u8> = String::from_utf8_lossy(&crlf).replace("\r\n", "\n").into_bytes();
    let crlf = String::from_utf8_lossy(&crlf).into_owned().into_bytes();
    let a = scrub_with_rng(&crlf, &ScrubOptions::default(), now(), &mut StdRng::seed_from_u64(7)).unwrap();
    let b = scrub_with_rng(&lf, &ScrubOptions::default(), now(), &mut StdRng::seed_from_u64(7)).unwrap();
    assert_eq!(a, b);
    // Mixed line ends, a bare LF at the very start of the body, and a bare CR
    // in the body (left alone).
    let out = run(b"Subject: s\nFrom: a@example.org\r\n\n\nline\r\nnext\nend\rx");
    let (header, body) = split(&out);
    assert!(header.starts_with("Subject: s\r\nFrom: a@example.org\r\n"), "{header}");
    assert_eq!(body, b"\r\nline\r\nnext\r\nend\rx");
}

#[test]
fn test_eight_bit_and_binary_looking_bodies_are_kept_exactly() {
    let mut body: Vec<u8> = (0u8..=255).filter(|b| *b != b'\n' && *b != b'\r').collect();
    body.extend_from_slice(b"\r\n\x00\x01\xff\xfe NUL and high bytes are the body's business\r\n");
    body.extend_from_slice(&[b'a'; 5000]);
    let raw = [b"From: a@example.org\r\nContent-Type: application/octet-stream\r\n\r\n".as_slice(), &body].concat();
    assert_eq!(split(&run(&raw)).1, body);
}

#[test]
fn test_header_only_messages() {
    for raw in [
        &b"From: a@example.org\r\nSubject: s\r\n\r\n"[..],
        b"From: a@example.org\r\nSubject: s\r\n",
        b"From: a@example.org\nSubject: s",
    ] {
        let out = run(raw);
        let text = String::from_utf8(out.as_bytes().to_vec()).unwrap();
        assert!(text.starts_with("From: a@example.org\r\nSubject: s\r\nDate: "), "{text}");
        assert!(text.ends_with(">\r\n\r\n"), "a header and an empty body: {text:?}");
    }
    // No header fields at all: only a body.
    let (header, body) = split(&run(b"\r\njust a body\r\n"));
    assert!(header.starts_with("Date: "), "{header}");
    assert_eq!(body, b"just a body\r\n");
}

#[test]
fn test_malformed_headers_are_typed_errors() {
    let long = format!("Subject: {}\r\n\r\n", "a".repeat(MAX_LINE_LEN - 9 + 1));
    let fits = format!("Subject: {}\r\n\r\n", "a".repeat(MAX_LINE_LEN - 9));
    assert!(scrub(fits.as_bytes(), &ScrubOptions::default(), now()).is_ok());
    let cases: Vec<(Vec<u8>, MessageError)> = vec![
        (b"".to_vec(), MessageError::Empty),
        (b"From: a\r\nSubject: a\0b\r\n\r\n".to_vec(), MessageError::Nul { line: 2 }),
        (b"From: a\r\nSubject: a\rb\r\n\r\n".to_vec(), MessageError::BareCarriageReturn { line: 2 }),
        (b"From: a\r\nSubject: ab\r".to_vec(), MessageError::BareCarriageReturn { line: 2 }),
        (long.into_bytes(), MessageError::LineTooLong { line: 1, len: MAX_LINE_LEN + 1 }),
        (b" folded\r\nFrom: a\r\n\r\n".to_vec(), MessageError::ContinuationWithoutField { line: 1 }),
        (
            b"From a@example.org Tue Jul  1 12:00:00 2025\nFrom: a\n\n".to_vec(),
            MessageError::MalformedField { line: 1 },
        ),
        (b"From: a\nSubject: s\nno colon here\n\nbody".to_vec(), MessageError::MalformedField { line: 3 }),
        (b"From: a\n: empty name\n\n".to_vec(), MessageError::MalformedField { line: 2 }),
        (b"From: a\nSub ject: s\n\n".to_vec(), MessageError::MalformedField { line: 2 }),
        ("From: a\nSübject: s\n\n".as_bytes().to_vec(), MessageError::MalformedField { line: 2 }),
    ];
    for (raw, want) in cases {
        assert_eq!(
            scrub(&raw, &ScrubOptions::default(), now()).unwrap_err(),
            want,
            "{:?}",
            String::from_utf8_lossy(&raw)
        );
    }
}

#[test]
fn test_the_body_is_not_parsed() {
    // What would be errors in the header is the body's own affair.
    let body = [b"a\0b\rc\r\n".as_slice(), &[b'x'; 5000], b"\r\n continuation-looking\r\n"].concat();
    let raw = [b"From: a@example.org\r\n\r\n".as_slice(), &body].concat();
    assert_eq!(split(&run(&raw)).1, body);
}

#[test]
fn test_debug_shows_no_content() {
    let out = run(&thunderbird());
    let debug = format!("{out:?}");
    assert!(debug.contains("len"), "{debug}");
    for secret in ["bob", "Caf", "anon", "nox.invalid"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    let err = scrub(b"From: secret\0\r\n\r\n", &ScrubOptions::default(), now()).unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
}

/// Header field names the property test draws from: dropped, kept, and
/// case variants.
const NAMES: [&str; 16] = [
    "From",
    "To",
    "Subject",
    "Received",
    "X-Mailer",
    "x-originating-ip",
    "Reply-To",
    "Content-Type",
    "References",
    "Message-ID",
    "Date",
    "BCC",
    "Sender",
    "ARC-Seal",
    "Comments",
    "Newsgroups",
];

fn field() -> impl Strategy<Value = (usize, String, Vec<String>)> {
    (0..NAMES.len(), "[ -~]{0,40}", prop::collection::vec("[ \t][ -~]{0,30}", 0..3))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn fuzz_scrub_never_panics(raw in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = scrub(&raw, &ScrubOptions::default(), now());
    }

    #[test]
    fn fuzz_scrub_never_panics_on_header_like_input(
        raw in prop::collection::vec(prop::sample::select(b"ab: \t\r\n\0(),+-0123456789DateJulGMX".to_vec()), 0..400)
    ) {
        let _ = scrub(&raw, &ScrubOptions::default(), now());
    }

    /// Whatever the fields, their folding and the line ends: exactly one
    /// Message-ID and one Date come out, nothing on the drop list does, every
    /// other field keeps its lines and its order, and the body is the body.
    #[test]
    fn fuzz_scrubbed_header_keeps_exactly_the_kept_fields(
        fields in prop::collection::vec(field(), 0..12),
        body in prop::collection::vec(any::<u8>(), 0..300),
        lf in any::<bool>(),
    ) {
        let eol = if lf { "\n" } else { "\r\n" };
        let mut raw = String::new();
        let mut kept = String::new();
        for (name, value, folds) in &fields {
            let name = NAMES[*name];
            let mut text = format!("{name}:{value}{eol}");
            let mut crlf = format!("{name}:{value}\r\n");
            for f in folds {
                text.push_str(&format!("{f}{eol}"));
                crlf.push_str(&format!("{f}\r\n"));
            }
            raw.push_str(&text);
            let lower = name.to_ascii_lowercase();
            let dropped = lower == "date"
                || DROP_LIST.iter().any(|r| match r.field {
                    FieldMatch::Name(n) => n.eq_ignore_ascii_case(name),
                    FieldMatch::Prefix(p) => lower.starts_with(&p.to_ascii_lowercase()),
                });
            if !dropped {
                kept.push_str(&crlf);
            }
        }
        raw.push_str(eol);
        let raw = [raw.as_bytes(), &body].concat();
        let out = scrub(&raw, &ScrubOptions::default(), now()).unwrap();
        let (header, out_body) = split(&out);
        let (header, id) = without_message_id(&header);
        assert_message_id(&id, "nox.invalid");
        let mut date = 0;
        let mut rest = String::new();
        for line in header.split_inclusive("\r\n") {
            if line.starts_with("Date: ") { date += 1 } else { rest.push_str(line) }
        }
        prop_assert_eq!(date, 1);
        prop_assert_eq!(rest, kept);
        let mut want = Vec::new();
        for (i, b) in body.iter().enumerate() {
            if *b == b'\n' && (i == 0 || body[i - 1] != b'\r') { want.push(b'\r') }
            want.push(*b);
        }
        prop_assert_eq!(out_body, want);

        // Scrubbing again changes nothing but the Message-ID.
        let again = scrub(out.as_bytes(), &ScrubOptions::default(), now()).unwrap();
        let strip = |m: &ScrubbedMessage| {
            let (h, b) = split(m);
            (without_message_id(&h).0, b)
        };
        prop_assert_eq!(strip(&again), strip(&out));
    }
}
