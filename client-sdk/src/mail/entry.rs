//! What one queue entry is: its id, the sealed part (the envelope and the
//! message, encoded here before sealing) and the schedule kept in the clear.
//!
//! The sealed plaintext, all integers big-endian:
//!
//! ```text
//! size  field
//!    1  layout version, 1
//!    8  id (must equal the key the entry is stored under)
//!    1  1 if MAIL FROM was kept, else 0
//!  4+n  MAIL FROM (length, bytes), only if kept
//!    4  number of recipients
//!  4+n  each recipient (length, bytes)
//!    …  the message, to the end
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

const LAYOUT: u8 = 1;

/// A queue entry's name: 64 random bits, printed as 16 hex digits (what the
/// SMTP server quotes in `250 2.0.0 queued as <id>`). Random, not a
/// counter: an id tells nothing about how much mail the user sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailId(pub u64);

impl fmt::Display for MailId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for MailId {
    type Err = std::num::ParseIntError;

    /// The 16 hex digits [`MailId`]'s `Display` prints.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(MailId)
    }
}

/// Where an entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    /// Waiting for its next attempt (or for the exit's acknowledgement).
    Waiting,
    /// Given up by [`super::MailQueue::give_up_expired`]: never due again,
    /// kept (and counted against the limits) until the user discards it.
    Expired,
}

impl EntryState {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            EntryState::Waiting => 0,
            EntryState::Expired => 1,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<EntryState> {
        match b {
            0 => Some(EntryState::Waiting),
            1 => Some(EntryState::Expired),
            _ => None,
        }
    }
}

/// What is sealed: the envelope as the queue keeps it and the message.
///
/// `Debug` prints only counts, never addresses or content.
#[derive(Clone, PartialEq, Eq)]
pub struct QueuedEnvelope {
    /// The reverse path of `MAIL FROM` (empty for `<>`), only if the queue
    /// was told to keep it ([`super::MailQueue::keep_mail_from`]).
    pub mail_from: Option<String>,
    /// The recipients, in the order given. Never empty.
    pub rcpt_to: Vec<String>,
    /// The message, byte-exact as the SMTP server handed it over.
    pub data: Vec<u8>,
}

impl fmt::Debug for QueuedEnvelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuedEnvelope")
            .field("mail_from_kept", &self.mail_from.is_some())
            .field("recipients", &self.rcpt_to.len())
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// A due entry, opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMail {
    /// Its id.
    pub id: MailId,
    /// The envelope and the message.
    pub envelope: QueuedEnvelope,
    /// When the queue accepted it.
    pub created: SystemTime,
    /// Attempts so far ([`super::MailQueue::mark_attempt`]).
    pub attempts: u32,
}

/// An entry as `nox-client mail queue` will show it: no content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// Its id.
    pub id: MailId,
    /// Bytes it takes sealed (what the byte limit counts).
    pub bytes: u64,
    /// When the queue accepted it.
    pub created: SystemTime,
    /// Attempts so far.
    pub attempts: u32,
    /// When it is next due.
    pub next_attempt: SystemTime,
    /// Waiting or given up.
    pub state: EntryState,
}

/// The clear part of an entry, as stored: `(created ms, next attempt ms,
/// attempts, state, sealed bytes)`.
pub(crate) type ScheduleRow = (u64, u64, u32, u8, u64);

/// `t` in milliseconds since the Unix epoch (0 before it, saturating).
pub(crate) fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// The inverse of [`to_ms`].
pub(crate) fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The sealed plaintext of `envelope` under `id`.
pub(crate) fn encode(id: MailId, envelope: &QueuedEnvelope) -> Zeroizing<Vec<u8>> {
    let from_len = envelope.mail_from.as_ref().map_or(0, |f| 4 + f.len());
    let rcpt_len: usize = envelope.rcpt_to.iter().map(|r| 4 + r.len()).sum();
    let mut out = Zeroizing::new(Vec::with_capacity(14 + from_len + 4 + rcpt_len + envelope.data.len()));
    out.push(LAYOUT);
    out.extend_from_slice(&id.0.to_be_bytes());
    let put = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    match &envelope.mail_from {
        Some(from) => {
            out.push(1);
            put(&mut out, from.as_bytes());
        }
        None => out.push(0),
    }
    out.extend_from_slice(&(envelope.rcpt_to.len() as u32).to_be_bytes());
    for rcpt in &envelope.rcpt_to {
        put(&mut out, rcpt.as_bytes());
    }
    out.extend_from_slice(&envelope.data);
    out
}

/// The inverse of [`encode`]: the id inside and the envelope, or what is
/// wrong with `bytes`.
pub(crate) fn decode(bytes: &[u8]) -> Result<(MailId, QueuedEnvelope), &'static str> {
    let mut r = Reader(bytes);
    if r.take(1)? != [LAYOUT] {
        return Err("unknown entry layout");
    }
    let id = MailId(u64::from_be_bytes(r.array()?));
    let mail_from = match r.take(1)? {
        [0] => None,
        [1] => Some(r.string()?),
        _ => return Err("bad MAIL FROM flag"),
    };
    let count = u32::from_be_bytes(r.array()?);
    // Each recipient takes at least its 4-byte length: a count beyond that is a lie.
    if count as usize > r.0.len() / 4 {
        return Err("more recipients than bytes");
    }
    let rcpt_to = (0..count).map(|_| r.string()).collect::<Result<Vec<_>, _>>()?;
    Ok((id, QueuedEnvelope { mail_from, rcpt_to, data: r.0.to_vec() }))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("truncated entry");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn string(&mut self) -> Result<String, &'static str> {
        let len = u32::from_be_bytes(self.array()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| "an address is not UTF-8")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_envelope_round_trips(
            id in any::<u64>(),
            mail_from in proptest::option::of(".{0,40}"),
            rcpt_to in proptest::collection::vec(".{0,40}", 1..5),
            data in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let envelope = QueuedEnvelope { mail_from, rcpt_to, data };
            let bytes = encode(MailId(id), &envelope);
            prop_assert_eq!(decode(&bytes).unwrap(), (MailId(id), envelope));
        }

        #[test]
        fn any_bytes_decode_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn ids_print_and_parse_as_16_hex_digits() {
        let id = MailId(0x00ab_cdef_0123_4567);
        assert_eq!(id.to_string(), "00abcdef01234567");
        assert_eq!("00abcdef01234567".parse::<MailId>().unwrap(), id);
    }

    #[test]
    fn debug_prints_no_address_and_no_content() {
        let envelope = QueuedEnvelope {
            mail_from: Some("alice@example.org".into()),
            rcpt_to: vec!["bob@example.org".into()],
            data: b"Subject: secret\r\n\r\nhello\r\n".to_vec(),
        };
        let printed = format!("{envelope:?}");
        assert!(!printed.contains("example.org") && !printed.contains("secret"), "{printed}");
    }
}
