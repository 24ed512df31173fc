//! Command lines → [`Command`]s: the syntax of RFC 5321 §4.1 and of the
//! extensions we advertise, pure (no state, no I/O). Which command is
//! allowed *when* is the session's business.
//!
//! Lenient where real clients differ from the RFC without harm (lower-case
//! verbs and parameters, a space after `FROM:`, trailing blanks, source
//! routes, which are dropped); strict on what reaches the spool (addresses
//! are ASCII, bracketed, with a local part and a domain of the RFC's
//! characters and lengths).

/// One parsed command. Arguments the server does not use (the `EHLO`
/// domain, `NOOP`'s and `VRFY`'s) are checked and dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Ehlo,
    Helo,
    Mail(MailFrom),
    /// `RCPT TO:<path>`: the forward path without brackets.
    Rcpt(String),
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
    /// `AUTH mechanism [initial-response]`, the mechanism in upper case.
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
}

/// `MAIL FROM:<path> [SIZE=n] [BODY=7BIT|8BITMIME] [AUTH=...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MailFrom {
    /// The reverse path without brackets; empty for `<>`.
    pub(crate) path: String,
    /// The size the client declared (RFC 1870), saturated at `u64::MAX`.
    pub(crate) size: Option<u64>,
}

/// A command line the server refuses, with the reply it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommandError {
    /// Not an SMTP command.
    Unrecognized,
    /// An SMTP command this server does not implement (`EXPN`, `BDAT`, ...).
    NotImplemented,
    /// A known command with bad arguments; the text says what is expected.
    Syntax(&'static str),
    /// `MAIL FROM:` with a malformed address.
    BadSender,
    /// `RCPT TO:` with a malformed address.
    BadRecipient,
    /// A `MAIL` or `RCPT` parameter we did not advertise.
    UnknownParameter,
}

impl CommandError {
    /// The reply line, without CRLF.
    pub(crate) fn reply(self) -> String {
        match self {
            CommandError::Unrecognized => "500 5.5.1 command unrecognized".to_string(),
            CommandError::NotImplemented => "502 5.5.1 command not implemented".to_string(),
            CommandError::Syntax(expected) => format!("501 5.5.4 syntax: {expected}"),
            CommandError::BadSender => "501 5.1.7 bad sender address syntax".to_string(),
            CommandError::BadRecipient => "501 5.1.3 bad recipient address syntax".to_string(),
            CommandError::UnknownParameter => "555 5.5.4 parameter not recognized".to_string(),
        }
    }
}

/// The longest mailbox (local part, `@`, domain): a path is at most 256
/// bytes with its brackets (RFC 5321 §4.5.3.1.3).
const MAX_MAILBOX: usize = 254;
/// The longest local part (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL_PART: usize = 64;
/// The longest domain (RFC 5321 §4.5.3.1.2).
const MAX_DOMAIN: usize = 255;

/// Parses one command line, its CRLF already removed.
pub(crate) fn parse(line: &[u8]) -> Result<Command, CommandError> {
    let line = trim_end(line);
    let (verb, rest) = match line.iter().position(|&b| b == b' ') {
        Some(space) => (&line[..space], &line[space + 1..]),
        None => (line, &[][..]),
    };
    if verb.is_empty() || verb.len() > 8 || !verb.iter().all(u8::is_ascii_alphabetic) {
        return Err(CommandError::Unrecognized);
    }
    let verb = verb.to_ascii_uppercase();
    let args = || std::str::from_utf8(rest).map(str::trim_start);
    let no_args = |command: Command| {
        if rest.iter().all(|&b| b == b' ' || b == b'\t') {
            Ok(command)
        } else {
            Err(CommandError::Syntax("this command takes no arguments"))
        }
    };
    match verb.as_slice() {
        b"EHLO" | b"HELO" => {
            let domain = args().map_err(|_| CommandError::Syntax("EHLO domain"))?;
            let domain = domain.split_ascii_whitespace().next().unwrap_or("");
            if domain.is_empty() || !domain.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(CommandError::Syntax("EHLO domain"));
            }
            Ok(if verb.as_slice() == b"EHLO" { Command::Ehlo } else { Command::Helo })
        }
        b"MAIL" => parse_mail(args().map_err(|_| CommandError::BadSender)?),
        b"RCPT" => parse_rcpt(args().map_err(|_| CommandError::BadRecipient)?),
        b"DATA" => no_args(Command::Data),
        b"RSET" => no_args(Command::Rset),
        b"QUIT" => no_args(Command::Quit),
        b"STARTTLS" => no_args(Command::StartTls),
        b"NOOP" => Ok(Command::Noop),
        b"VRFY" => Ok(Command::Vrfy),
        b"HELP" => Ok(Command::Help),
        b"AUTH" => parse_auth(args().map_err(|_| CommandError::Syntax(AUTH_SYNTAX))?),
        b"EXPN" | b"TURN" | b"ETRN" | b"ATRN" | b"BDAT" | b"SEND" | b"SOML" | b"SAML" => {
            Err(CommandError::NotImplemented)
        }
        _ => Err(CommandError::Unrecognized),
    }
}

const MAIL_SYNTAX: &str = "MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME]";
const RCPT_SYNTAX: &str = "RCPT TO:<address>";
const AUTH_SYNTAX: &str = "AUTH mechanism [initial-response]";

fn parse_mail(args: &str) -> Result<Command, CommandError> {
    let after = strip_prefix_ignore_case(args, "FROM:").ok_or(CommandError::Syntax(MAIL_SYNTAX))?;
    let (path, params) = split_path(after.trim_start()).ok_or(CommandError::BadSender)?;
    let path = if path.is_empty() { String::new() } else { mailbox(path, false).ok_or(CommandError::BadSender)? };
    let mut size = None;
    for param in params.split_ascii_whitespace() {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        if key.eq_ignore_ascii_case("SIZE") {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(CommandError::Syntax("SIZE=<number of bytes>"));
            }
            // Only digits: a parse error is an overflow.
            size = Some(value.parse::<u64>().unwrap_or(u64::MAX));
        } else if key.eq_ignore_ascii_case("BODY") {
            if !(value.eq_ignore_ascii_case("7BIT") || value.eq_ignore_ascii_case("8BITMIME")) {
                return Err(CommandError::Syntax("BODY=7BIT or BODY=8BITMIME"));
            }
        } else if key.eq_ignore_ascii_case("AUTH") {
            // RFC 4954 §5: the submitter's identity as a relay saw it;
            // meaningless for a submission server, ignored.
        } else {
            return Err(CommandError::UnknownParameter);
        }
    }
    Ok(Command::Mail(MailFrom { path, size }))
}

fn parse_rcpt(args: &str) -> Result<Command, CommandError> {
    let after = strip_prefix_ignore_case(args, "TO:").ok_or(CommandError::Syntax(RCPT_SYNTAX))?;
    let (path, params) = split_path(after.trim_start()).ok_or(CommandError::BadRecipient)?;
    let path = mailbox(path, true).ok_or(CommandError::BadRecipient)?;
    if params.split_ascii_whitespace().next().is_some() {
        return Err(CommandError::UnknownParameter);
    }
    Ok(Command::Rcpt(path))
}

fn parse_auth(args: &str) -> Result<Command, CommandError> {
    let mut words = args.split_ascii_whitespace();
    let mechanism = words.next().ok_or(CommandError::Syntax(AUTH_SYNTAX))?;
    let initial = words.next().map(str::to_string);
    let valid = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if words.next().is_some() || mechanism.len() > 20 || !mechanism.bytes().all(valid) {
        return Err(CommandError::Syntax(AUTH_SYNTAX));
    }
    Ok(Command::Auth { mechanism: mechanism.to_ascii_uppercase(), initial })
}

/// Splits `<path> params` into the text between the brackets and the rest,
/// minding quoted local parts (which may hold `>`).
fn split_path(s: &str) -> Option<(&str, &str)> {
    let inner = s.strip_prefix('<')?;
    let bytes = inner.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'>' if !quoted => {
                let rest = &inner[i + 1..];
                if !rest.is_empty() && !rest.starts_with(' ') {
                    return None;
                }
                return Some((&inner[..i], rest));
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Checks a path's mailbox (RFC 5321 §4.1.2) and returns it without a
/// source route. `postmaster` alone is a valid recipient (§4.5.1).
fn mailbox(path: &str, recipient: bool) -> Option<String> {
    if !path.is_ascii() {
        return None;
    }
    // A source route, `@a,@b:user@c`, is obsolete; RFC 5321 §3.3 says to
    // ignore it.
    let path = if path.starts_with('@') {
        let (route, rest) = path.split_once(':')?;
        if !route.split(',').all(|hop| hop.strip_prefix('@').is_some_and(is_domain)) {
            return None;
        }
        rest
    } else {
        path
    };
    if recipient && path.eq_ignore_ascii_case("postmaster") {
        return Some(path.to_string());
    }
    let (local, domain) = path.rsplit_once('@')?;
    let local_ok = local.len() <= MAX_LOCAL_PART && (is_dot_string(local) || is_quoted_string(local));
    if path.len() > MAX_MAILBOX || !local_ok || !(is_domain(domain) || is_address_literal(domain)) {
        return None;
    }
    Some(path.to_string())
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// Atoms separated by dots (RFC 5321 `Dot-string`).
fn is_dot_string(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(|atom| !atom.is_empty() && atom.bytes().all(is_atext))
}

/// A `Quoted-string`: printable ASCII between quotes, `\` escaping.
fn is_quoted_string(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return false;
    };
    let mut bytes = inner.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => match bytes.next() {
                Some(escaped) if (b' '..=b'~').contains(&escaped) => {}
                _ => return false,
            },
            b'"' => return false,
            b' '..=b'~' => {}
            _ => return false,
        }
    }
    true
}

/// Dot-separated labels of letters, digits, `-` (and `_`, which real
/// names carry).
fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_DOMAIN
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `[192.0.2.1]`, `[IPv6:...]`: printable ASCII between brackets.
fn is_address_literal(s: &str) -> bool {
    s.strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .is_some_and(|inner| !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_graphic() && !b"[]\\".contains(&b)))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

fn trim_end(line: &[u8]) -> &[u8] {
    let end = line.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(0, |i| i + 1);
    &line[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mail(path: &str, size: Option<u64>) -> Result<Command, CommandError> {
        Ok(Command::Mail(MailFrom { path: path.to_string(), size }))
    }

    #[test]
    fn test_mail_from_forms() {
        assert_eq!(parse(b"MAIL FROM:<a@b.example>"), mail("a@b.example", None));
        // smtplib's own spelling: lower-case verb and parameter.
        assert_eq!(parse(b"mail FROM:<a@b.example> size=42"), mail("a@b.example", Some(42)));
        assert_eq!(parse(b"MAIL FROM: <a@b.example>  "), mail("a@b.example", None));
        assert_eq!(parse(b"MAIL FROM:<>"), mail("", None));
        assert_eq!(parse(b"MAIL FROM:<a@b.example> BODY=8BITMIME SIZE=7 AUTH=<>"), mail("a@b.example", Some(7)));
        assert_eq!(parse(b"MAIL FROM:<@relay.example:a@b.example>"), mail("a@b.example", None));
        assert_eq!(parse(b"MAIL FROM:<\"a >b\"@[192.0.2.1]>"), mail("\"a >b\"@[192.0.2.1]", None));
        assert_eq!(parse(b"MAIL FROM:<a@b.example> SIZE=99999999999999999999999"), mail("a@b.example", Some(u64::MAX)));
    }

    #[test]
    fn test_malformed_mail_from_is_refused() {
        assert_eq!(parse(b"MAIL FROM:a@b.example"), Err(CommandError::BadSender));
        assert_eq!(parse(b"MAIL FROM:<a@b.example"), Err(CommandError::BadSender));
        assert_eq!(parse(b"MAIL FROM:<a b@c.example>"), Err(CommandError::BadSender));
        assert_eq!(parse(b"MAIL FROM:<a@>"), Err(CommandError::BadSender));
        assert_eq!(parse(b"MAIL FROM:<a..b@c.example>"), Err(CommandError::BadSender));
        assert_eq!(parse(b"MAIL FROM:<a@b.example>x"), Err(CommandError::BadSender));
        assert_eq!(parse("MAIL FROM:<ä@b.example>".as_bytes()), Err(CommandError::BadSender));
        assert_eq!(parse(b"MAIL FROM:<postmaster>"), Err(CommandError::BadSender));
        assert!(matches!(parse(b"MAIL TO:<a@b.example>"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse(b"MAIL FROM:<a@b.example> SIZE=x"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse(b"MAIL FROM:<a@b.example> BODY=BINARYMIME"), Err(CommandError::Syntax(_))));
        assert_eq!(parse(b"MAIL FROM:<a@b.example> SMTPUTF8"), Err(CommandError::UnknownParameter));
        let long_local = format!("MAIL FROM:<{}@b.example>", "a".repeat(65));
        assert_eq!(parse(long_local.as_bytes()), Err(CommandError::BadSender));
    }

    #[test]
    fn test_rcpt_to() {
        assert_eq!(parse(b"RCPT TO:<c@d.example>"), Ok(Command::Rcpt("c@d.example".into())));
        assert_eq!(parse(b"rcpt to:<Postmaster>"), Ok(Command::Rcpt("Postmaster".into())));
        assert_eq!(parse(b"RCPT TO:<>"), Err(CommandError::BadRecipient));
        assert_eq!(parse(b"RCPT TO:<c@d.example> NOTIFY=NEVER"), Err(CommandError::UnknownParameter));
        assert!(matches!(parse(b"RCPT FROM:<c@d.example>"), Err(CommandError::Syntax(_))));
    }

    #[test]
    fn test_other_commands() {
        assert_eq!(parse(b"EHLO client.example"), Ok(Command::Ehlo));
        assert_eq!(parse(b"helo [127.0.0.1]"), Ok(Command::Helo));
        assert!(matches!(parse(b"EHLO"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse(b"EHLO   "), Err(CommandError::Syntax(_))));
        assert_eq!(parse(b"DATA"), Ok(Command::Data));
        assert!(matches!(parse(b"DATA now"), Err(CommandError::Syntax(_))));
        assert_eq!(parse(b"NOOP anything"), Ok(Command::Noop));
        assert_eq!(parse(b"VRFY someone"), Ok(Command::Vrfy));
        assert_eq!(parse(b"starttls"), Ok(Command::StartTls));
        assert_eq!(
            parse(b"AUTH plain AGEAYg=="),
            Ok(Command::Auth { mechanism: "PLAIN".into(), initial: Some("AGEAYg==".into()) })
        );
        assert!(matches!(parse(b"AUTH"), Err(CommandError::Syntax(_))));
        assert_eq!(parse(b"EXPN list"), Err(CommandError::NotImplemented));
        assert_eq!(parse(b"BDAT 10 LAST"), Err(CommandError::NotImplemented));
        assert_eq!(parse(b"FOO"), Err(CommandError::Unrecognized));
        assert_eq!(parse(b""), Err(CommandError::Unrecognized));
        assert_eq!(parse(b"\xff\xfe"), Err(CommandError::Unrecognized));
    }

    proptest! {
        #[test]
        fn parse_never_panics(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&line);
        }

        #[test]
        fn mail_from_round_trip(
            local in "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\\.[a-zA-Z0-9_-]{1,10}){0,2}",
            domain in "[a-z0-9-]{1,20}(\\.[a-z0-9-]{1,10}){0,3}",
            size in any::<u64>(),
        ) {
            let address = format!("{local}@{domain}");
            let line = format!("MAIL FROM:<{address}> SIZE={size}");
            prop_assert_eq!(parse(line.as_bytes()), mail(&address, Some(size)));
            let line = format!("RCPT TO:<{address}>");
            prop_assert_eq!(parse(line.as_bytes()), Ok(Command::Rcpt(address)));
        }
    }
}
