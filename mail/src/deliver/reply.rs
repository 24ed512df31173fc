//! Server replies as the SMTP (RFC 5321 §4.2) and NNTP (RFC 3977 §3.2)
//! clients read them: a three-digit code, then a space and text on the last
//! line, or a hyphen and text on each line before it (SMTP only; an NNTP
//! status line is always a single, final line).
//!
//! Pure: lines go in one at a time (without their line end), a whole reply
//! comes out. A server decides how much it sends, so everything kept is
//! bounded — at most [`MAX_REPLY_LINES`] lines of at most
//! [`MAX_REPLY_LINE`] bytes — and a reply beyond that is an error, never a
//! bigger buffer. Text is kept lossily as UTF-8 with control characters
//! replaced, so that it can go into an error message or a bounce as it is.

/// The longest reply line taken, line end excluded. RFC 5321 §4.5.3.1.5
/// allows 512 bytes with the CRLF and RFC 3977 §3.1 the same; real servers
/// stay well below, so this is lenient.
pub(crate) const MAX_REPLY_LINE: usize = 2048;
/// The most lines in one reply. An `EHLO` answer has one per extension,
/// about twenty on the busiest servers.
pub(crate) const MAX_REPLY_LINES: usize = 128;
/// The longest text of a reply in [`Reply::summary`].
const MAX_SUMMARY: usize = 512;

/// Why a reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReplyError {
    /// A line that does not begin with three digits, the first 1 to 5.
    #[error("reply line without a status code")]
    NoCode,
    /// The code is followed by something other than a space, a hyphen or
    /// the end of the line.
    #[error("reply line with a bad separator after the code")]
    BadSeparator,
    /// A continuation line carries a code other than the first line's.
    #[error("reply lines with different codes ({first} then {then})")]
    CodeChanged {
        /// The first line's code.
        first: u16,
        /// The code that differs.
        then: u16,
    },
    /// More lines than [`MAX_REPLY_LINES`].
    #[error("reply of more than {MAX_REPLY_LINES} lines")]
    TooManyLines,
    /// A line longer than [`MAX_REPLY_LINE`].
    #[error("reply line of more than {MAX_REPLY_LINE} bytes")]
    LineTooLong,
}

/// One line of a reply, as parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplyLine<'a> {
    /// The three-digit code.
    pub(crate) code: u16,
    /// Whether more lines follow (`250-...`).
    pub(crate) more: bool,
    /// What follows the separator.
    pub(crate) text: &'a [u8],
}

/// Parses one reply line, given without its line end.
pub(crate) fn parse_line(line: &[u8]) -> Result<ReplyLine<'_>, ReplyError> {
    if line.len() > MAX_REPLY_LINE {
        return Err(ReplyError::LineTooLong);
    }
    let Some((digits, rest)) = line.split_first_chunk::<3>() else {
        return Err(ReplyError::NoCode);
    };
    if !matches!(digits[0], b'1'..=b'5') || !digits[1].is_ascii_digit() || !digits[2].is_ascii_digit() {
        return Err(ReplyError::NoCode);
    }
    let code = digits.iter().fold(0u16, |code, d| code * 10 + u16::from(d - b'0'));
    let (more, text) = match rest.split_first() {
        None => (false, &[][..]),
        Some((b' ', text)) => (false, text),
        Some((b'-', text)) => (true, text),
        Some(_) => return Err(ReplyError::BadSeparator),
    };
    Ok(ReplyLine { code, more, text })
}

/// A whole reply: its code and the text of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The three-digit code.
    pub(crate) code: u16,
    /// The text of each line, lossily decoded, control characters replaced.
    pub(crate) lines: Vec<String>,
}

impl Reply {
    /// `2xx`: the command succeeded.
    pub(crate) fn is_positive(&self) -> bool {
        self.code / 100 == 2
    }

    /// `4xx`: failed, try again later.
    pub(crate) fn is_transient(&self) -> bool {
        self.code / 100 == 4
    }

    /// `5xx`: failed for good.
    pub(crate) fn is_permanent(&self) -> bool {
        self.code / 100 == 5
    }

    /// The code and the text of every line on one line (`451 4.3.0 try
    /// later`), at most 512 characters of text.
    pub(crate) fn summary(&self) -> String {
        let mut out = self.code.to_string();
        let mut room = MAX_SUMMARY;
        for (i, line) in self.lines.iter().enumerate() {
            if room == 0 {
                break;
            }
            out.push_str(if i == 0 { " " } else { " / " });
            for c in line.chars().take(room) {
                out.push(c);
                room -= 1;
            }
        }
        out
    }
}

/// Collects the lines of one reply.
#[derive(Debug, Default)]
pub(crate) struct ReplyBuilder {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyBuilder {
    /// Takes the next line (without its line end); returns the reply once
    /// its last line came. `single_line` (NNTP) takes every line as the
    /// last.
    pub(crate) fn push(&mut self, line: &[u8], single_line: bool) -> Result<Option<Reply>, ReplyError> {
        let parsed = parse_line(line)?;
        let first = *self.code.get_or_insert(parsed.code);
        if parsed.code != first {
            return Err(ReplyError::CodeChanged { first, then: parsed.code });
        }
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines);
        }
        self.lines.push(clean_text(parsed.text));
        if parsed.more && !single_line {
            return Ok(None);
        }
        self.code = None;
        Ok(Some(Reply { code: first, lines: std::mem::take(&mut self.lines) }))
    }
}

/// Text from a server, safe to print: lossy UTF-8, control characters
/// replaced by `?`.
fn clean_text(text: &[u8]) -> String {
    String::from_utf8_lossy(text).chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read(lines: &[&[u8]]) -> Result<Option<Reply>, ReplyError> {
        let mut builder = ReplyBuilder::default();
        let mut last = Ok(None);
        for line in lines {
            last = builder.push(line, false);
            if !matches!(last, Ok(None)) {
                break;
            }
        }
        last
    }

    #[test]
    fn test_single_and_multi_line_replies() {
        let reply = read(&[b"250 ok"]).unwrap().unwrap();
        assert_eq!((reply.code, reply.lines), (250, vec!["ok".to_string()]));
        let reply = read(&[b"250-mx.example", b"250-SIZE 1000", b"250 8BITMIME"]).unwrap().unwrap();
        assert_eq!(reply.code, 250);
        assert_eq!(reply.lines, ["mx.example", "SIZE 1000", "8BITMIME"]);
        assert_eq!(reply.summary(), "250 mx.example / SIZE 1000 / 8BITMIME");
        // A bare code is a complete reply (RFC 5321 §4.2: the text is optional).
        let reply = read(&[b"354"]).unwrap().unwrap();
        assert_eq!((reply.code, reply.lines.len()), (354, 1));
        assert!(read(&[b"250-first"]).unwrap().is_none());
    }

    #[test]
    fn test_classes() {
        let reply = |code| Reply { code, lines: vec![] };
        assert!(reply(250).is_positive() && !reply(250).is_transient());
        assert!(reply(451).is_transient() && !reply(451).is_permanent());
        assert!(reply(550).is_permanent() && !reply(354).is_positive());
    }

    #[test]
    fn test_malformed_lines() {
        assert_eq!(parse_line(b"25"), Err(ReplyError::NoCode));
        assert_eq!(parse_line(b"abc ok"), Err(ReplyError::NoCode));
        assert_eq!(parse_line(b"650 ok"), Err(ReplyError::NoCode));
        assert_eq!(parse_line(b"250ok"), Err(ReplyError::BadSeparator));
        assert_eq!(parse_line(&[b'2'; MAX_REPLY_LINE + 1]), Err(ReplyError::LineTooLong));
        assert_eq!(read(&[b"250-a", b"550 b"]), Err(ReplyError::CodeChanged { first: 250, then: 550 }));
    }

    #[test]
    fn test_line_count_is_bounded() {
        let mut builder = ReplyBuilder::default();
        for _ in 0..MAX_REPLY_LINES {
            assert_eq!(builder.push(b"250-x", false), Ok(None));
        }
        assert_eq!(builder.push(b"250-x", false), Err(ReplyError::TooManyLines));
    }

    #[test]
    fn test_nntp_takes_each_line_as_final() {
        let mut builder = ReplyBuilder::default();
        let reply = builder.push(b"200-odd but final", true).unwrap().unwrap();
        assert_eq!(reply.code, 200);
    }

    #[test]
    fn test_text_is_cleaned_and_summary_bounded() {
        let reply = read(&[b"550 bad\x1b[31m \xff user"]).unwrap().unwrap();
        assert_eq!(reply.lines[0], "bad?[31m \u{fffd} user");
        let long = format!("250 {}", "x".repeat(2000));
        let mut lines: Vec<&[u8]> = vec![b"250-a"; 3];
        lines.push(long.as_bytes());
        let reply = read(&lines).unwrap().unwrap();
        assert!(reply.summary().chars().count() <= 3 + MAX_SUMMARY + 3 * 4);
    }

    proptest! {
        #[test]
        fn parse_never_panics(line in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_line(&line);
        }

        #[test]
        fn reply_round_trip(code in 200u16..600, texts in proptest::collection::vec("[ -~]{0,40}", 1..10)) {
            let mut builder = ReplyBuilder::default();
            let last = texts.len() - 1;
            for (i, text) in texts.iter().enumerate() {
                let line = format!("{code}{}{text}", if i == last { ' ' } else { '-' });
                let got = builder.push(line.as_bytes(), false).unwrap();
                if i == last {
                    let reply = got.unwrap();
                    prop_assert_eq!(reply.code, code);
                    prop_assert_eq!(&reply.lines, &texts);
                } else {
                    prop_assert!(got.is_none());
                }
            }
        }

        #[test]
        fn builder_is_bounded(lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 0..200)) {
            let mut builder = ReplyBuilder::default();
            for line in &lines {
                match builder.push(line, false) {
                    Ok(Some(reply)) => prop_assert!(reply.lines.len() <= MAX_REPLY_LINES),
                    Ok(None) => prop_assert!(builder.lines.len() <= MAX_REPLY_LINES),
                    Err(_) => break,
                }
            }
        }
    }
}
