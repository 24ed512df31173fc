//! What a `Mail` request may name as its recipients: mailboxes for SMTP,
//! newsgroups for NNTP. One rule for the service and for `nox check-config`
//! (`exit.mail_envelope_from`).
//!
//! Mailboxes are the plain form `local@domain` of RFC 5321 §4.1.2: a
//! dot-atom local part of at most 64 bytes, a domain of host-name labels
//! (letters, digits, hyphens) with at least two labels, not all digits at
//! the top, 254 bytes in all. Quoted local parts, address literals
//! (`user@[192.0.2.1]`, which would skip the MX lookup and the address
//! guard's view of the name) and non-ASCII addresses are refused.
//!
//! Newsgroup names are lower-case `[a-z0-9+_-]` components joined by dots,
//! none empty, at most 80 bytes (RFC 5536 §3.1.4 allows more; news servers
//! do not).
//!
//! Errors say what is wrong, never the address.

/// Longest mailbox (RFC 5321 §4.5.3.1.3 path less its brackets).
pub const MAX_MAILBOX_LEN: usize = 254;
/// Longest local part (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_LEN: usize = 64;
/// Longest domain (RFC 5321 §4.5.3.1.2 less the root).
pub const MAX_DOMAIN_LEN: usize = 253;
/// Longest newsgroup name accepted.
pub const MAX_NEWSGROUP_LEN: usize = 80;

/// Why a recipient is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecipientError {
    /// Not `local@domain` with exactly one `@`.
    #[error("not of the form local@domain")]
    NotAMailbox,
    /// Longer than [`MAX_MAILBOX_LEN`].
    #[error("longer than {MAX_MAILBOX_LEN} bytes")]
    MailboxTooLong,
    /// The local part is empty, too long, or not a dot-atom.
    #[error("the local part is not a dot-atom of 1 to {MAX_LOCAL_LEN} bytes")]
    LocalPart,
    /// The domain is not a host name of two or more labels.
    #[error("the domain is not a host name of two or more labels")]
    Domain,
    /// Not a newsgroup name.
    #[error(
        "not a newsgroup name (lower-case a-z 0-9 + _ - components joined by dots, at most {MAX_NEWSGROUP_LEN} bytes)"
    )]
    Newsgroup,
}

/// RFC 5322 `atext`.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// Checks `address` as a mailbox (see the module docs).
pub fn check_mailbox(address: &str) -> Result<(), RecipientError> {
    if address.len() > MAX_MAILBOX_LEN {
        return Err(RecipientError::MailboxTooLong);
    }
    let (local, domain) = address.split_once('@').ok_or(RecipientError::NotAMailbox)?;
    if domain.contains('@') {
        return Err(RecipientError::NotAMailbox);
    }
    let dot_atom = !local.is_empty()
        && local.len() <= MAX_LOCAL_LEN
        && local.split('.').all(|atom| !atom.is_empty() && atom.bytes().all(is_atext));
    if !dot_atom {
        return Err(RecipientError::LocalPart);
    }
    if is_host_name(domain, 2) { Ok(()) } else { Err(RecipientError::Domain) }
}

/// Whether `name` is a host name of at least `min_labels` labels: letters,
/// digits and inner hyphens, 1 to 63 bytes each, at most 253 in all, the
/// last label not all digits (a dotted IPv4 address is no host name).
pub fn is_host_name(name: &str, min_labels: usize) -> bool {
    if name.is_empty() || name.len() > MAX_DOMAIN_LEN {
        return false;
    }
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let top_ok = labels.last().is_some_and(|t| !t.bytes().all(|b| b.is_ascii_digit()));
    labels.len() >= min_labels && labels.iter().all(label_ok) && top_ok
}

/// Checks `name` as a newsgroup name (see the module docs).
pub fn check_newsgroup(name: &str) -> Result<(), RecipientError> {
    let component_ok = |c: &str| {
        !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+_-".contains(&b))
    };
    if name.len() <= MAX_NEWSGROUP_LEN && name.split('.').all(component_ok) {
        Ok(())
    } else {
        Err(RecipientError::Newsgroup)
    }
}

/// The domain of a checked mailbox, in lower case (the key recipients are
/// grouped by: one SMTP transaction per domain).
pub fn domain_key(mailbox: &str) -> String {
    mailbox.rsplit_once('@').map_or(mailbox, |(_, d)| d).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailboxes_of_the_plain_form_pass() {
        for good in [
            "alice@example.org",
            "a.b+tag@mail.example.co.uk",
            "x_y-z!#$%&'*/=?^`{|}~@ex-ample.org",
            "1@x1.y2",
            &format!("{}@example.org", "a".repeat(64)),
        ] {
            assert_eq!(check_mailbox(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn mailboxes_not_of_the_plain_form_are_refused() {
        let long_domain = format!("a@{}.org", vec!["b".repeat(63); 4].join("."));
        for (bad, why) in [
            ("", RecipientError::NotAMailbox),
            ("alice", RecipientError::NotAMailbox),
            ("a@b@example.org", RecipientError::NotAMailbox),
            ("@example.org", RecipientError::LocalPart),
            (".a@example.org", RecipientError::LocalPart),
            ("a..b@example.org", RecipientError::LocalPart),
            ("a.@example.org", RecipientError::LocalPart),
            ("\"a b\"@example.org", RecipientError::LocalPart),
            ("a b@example.org", RecipientError::LocalPart),
            ("a\r\nRCPT TO:<x@y.z>@example.org", RecipientError::NotAMailbox),
            ("a\r\nDATA@example.org", RecipientError::LocalPart),
            ("<a>@example.org", RecipientError::LocalPart),
            ("é@example.org", RecipientError::LocalPart),
            (&format!("{}@example.org", "a".repeat(65)), RecipientError::LocalPart),
            ("a@", RecipientError::Domain),
            ("a@localhost", RecipientError::Domain),
            ("a@[192.0.2.1]", RecipientError::Domain),
            ("a@192.0.2.1", RecipientError::Domain),
            ("a@-x.org", RecipientError::Domain),
            ("a@x-.org", RecipientError::Domain),
            ("a@x..org", RecipientError::Domain),
            ("a@x.org.", RecipientError::Domain),
            ("a@ex_ample.org", RecipientError::Domain),
            ("a@exämple.org", RecipientError::Domain),
            (&long_domain, RecipientError::MailboxTooLong),
        ] {
            assert_eq!(check_mailbox(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn newsgroup_names() {
        for good in ["alt.test", "comp.lang.rust", "a", "x+y_z-1.b2", &"a".repeat(80)] {
            assert_eq!(check_newsgroup(good), Ok(()), "{good}");
        }
        for bad in ["", "Alt.test", "alt..test", ".alt", "alt.", "alt test", "alt,test", "alt.tést", &"a".repeat(81)] {
            assert_eq!(check_newsgroup(bad), Err(RecipientError::Newsgroup), "{bad:?}");
        }
    }

    #[test]
    fn domains_group_case_insensitively() {
        assert_eq!(domain_key("Alice@Example.ORG"), "example.org");
        assert_eq!(domain_key("bob@example.org"), "example.org");
    }
}
