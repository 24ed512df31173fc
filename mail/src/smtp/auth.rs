//! `AUTH`: SASL PLAIN (RFC 4616) and LOGIN against the single configured
//! user, and the rule for when `AUTH` is offered at all.
//!
//! Credentials cross the connection in base64, that is in clear: where TLS
//! is configured, `AUTH` is offered only once `STARTTLS` is on, except on a
//! loopback connection, which never leaves the machine.

use subtle::ConstantTimeEq;

use super::config::SmtpAuth;

/// The mechanisms we implement, in the order `EHLO` advertises them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mechanism {
    Plain,
    Login,
}

impl Mechanism {
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "PLAIN" => Some(Mechanism::Plain),
            "LOGIN" => Some(Mechanism::Login),
            _ => None,
        }
    }
}

/// The `334` challenges of LOGIN: base64 of `Username:` and `Password:`.
pub(crate) const LOGIN_USERNAME_PROMPT: &str = "VXNlcm5hbWU6";
pub(crate) const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// Whether `AUTH` may be used on this connection now: always under TLS;
/// in clear only where no TLS is configured (the operator's choice) or the
/// connection is over loopback.
pub(crate) fn permitted(tls_configured: bool, tls_active: bool, loopback: bool) -> bool {
    tls_active || loopback || !tls_configured
}

/// Checks a PLAIN response: `authzid NUL authcid NUL password`, where the
/// authorization identity is empty or the user itself.
pub(crate) fn check_plain(response: &[u8], auth: &SmtpAuth) -> bool {
    let mut parts = response.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let authzid_ok = authzid.is_empty() || authzid == authcid;
    credentials_match(authcid, password, auth) && authzid_ok
}

/// Checks LOGIN's user name and password.
pub(crate) fn check_login(username: &[u8], password: &[u8], auth: &SmtpAuth) -> bool {
    credentials_match(username, password, auth)
}

/// Compares both fields in time independent of where they differ.
fn credentials_match(username: &[u8], password: &[u8], auth: &SmtpAuth) -> bool {
    let user_ok = username.ct_eq(auth.username.as_bytes());
    let password_ok = password.ct_eq(auth.password.as_bytes());
    (user_ok & password_ok).into()
}

/// Decodes a SASL response: standard base64 (RFC 4648 §4), padding
/// optional; `=` alone is the empty response (RFC 4954 §4).
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    if text == "=" {
        return Some(Vec::new());
    }
    let bytes = text.as_bytes();
    let data = bytes.strip_suffix(b"==").or_else(|| bytes.strip_suffix(b"=")).unwrap_or(bytes);
    if (data.len() != bytes.len() && !bytes.len().is_multiple_of(4)) || data.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in data {
        let value = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn user() -> SmtpAuth {
        SmtpAuth { username: "alice".into(), password: "s3cret".into() }
    }

    /// Standard base64 (the AUTH exchanges' encoding).
    fn encode_base64(data: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    #[test]
    fn test_base64_vectors() {
        // RFC 4648 §10.
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(decode_base64(encoded).as_deref(), Some(plain.as_bytes()), "{encoded}");
            assert_eq!(encode_base64(plain.as_bytes()), encoded);
        }
        assert_eq!(decode_base64("Zg").as_deref(), Some(&b"f"[..]));
        assert_eq!(decode_base64("=").as_deref(), Some(&b""[..]));
        assert_eq!(decode_base64(LOGIN_USERNAME_PROMPT).as_deref(), Some(&b"Username:"[..]));
        assert_eq!(decode_base64(LOGIN_PASSWORD_PROMPT).as_deref(), Some(&b"Password:"[..]));
        assert_eq!(decode_base64("Z"), None);
        assert_eq!(decode_base64("Zg="), None);
        assert_eq!(decode_base64("Zm9v!"), None);
        assert_eq!(decode_base64("Zm 9v"), None);
    }

    #[test]
    fn test_plain_accepts_only_the_user() {
        assert!(check_plain(b"\0alice\0s3cret", &user()));
        assert!(check_plain(b"alice\0alice\0s3cret", &user()));
        assert!(!check_plain(b"bob\0alice\0s3cret", &user()));
        assert!(!check_plain(b"\0alice\0s3cre", &user()));
        assert!(!check_plain(b"\0alicE\0s3cret", &user()));
        assert!(!check_plain(b"\0alice\0s3cret\0", &user()));
        assert!(!check_plain(b"alice\0s3cret", &user()));
        assert!(check_login(b"alice", b"s3cret", &user()));
        assert!(!check_login(b"alice", b"", &user()));
    }

    #[test]
    fn test_auth_in_clear_only_without_tls_or_on_loopback() {
        assert!(permitted(false, false, false));
        assert!(!permitted(true, false, false));
        assert!(permitted(true, false, true));
        assert!(permitted(true, true, false));
    }

    proptest! {
        #[test]
        fn base64_round_trip(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let encoded = encode_base64(&data);
            prop_assert_eq!(decode_base64(&encoded), Some(data.clone()));
            prop_assert_eq!(decode_base64(encoded.trim_end_matches('=')), Some(data));
        }
    }
}
