//! The settings a mail gateway has wherever it runs — `[mail]` of the
//! client, `[smtp_entry]` of a node — and their one set of checks.

use nox_config::Checks;

/// A gateway's settings as its configuration section holds them, for
/// [`check_gateway`].
#[derive(Debug, Clone, Copy)]
pub struct GatewayKeys<'a> {
    /// The section's name (`mail`, `smtp_entry`), the prefix of every key.
    pub section: &'a str,
    /// `hostname`.
    pub hostname: &'a str,
    /// `max_message_bytes`.
    pub max_message_bytes: usize,
    /// `max_recipients`.
    pub max_recipients: usize,
    /// `max_queue_entries`.
    pub max_queue_entries: usize,
    /// `max_queue_bytes`.
    pub max_queue_bytes: u64,
    /// `lifetime_secs`.
    pub lifetime_secs: u64,
    /// `retry_min_secs`.
    pub retry_min_secs: u64,
    /// `retry_max_secs`.
    pub retry_max_secs: u64,
    /// `concurrency`.
    pub concurrency: usize,
    /// Whether `tls_cert` and `tls_key` are set.
    pub tls: (bool, bool),
    /// `auth_user`, and whether `auth_password_file` is set.
    pub auth: (Option<&'a str>, bool),
}

/// The most recipients a gateway may be configured to take.
pub const MAX_RECIPIENTS_LIMIT: usize = 1000;
/// The most messages a gateway may be configured to send at once.
pub const MAX_CONCURRENCY: usize = 64;

/// Checks a gateway's settings, naming each problem `<section>.<key>`.
pub fn check_gateway(c: &mut Checks, k: GatewayKeys<'_>) {
    let key = |name: &str| format!("{}.{name}", k.section);
    if k.hostname.is_empty() || !k.hostname.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b)) {
        c.fail(key("hostname"), format!("must be a host name (letters, digits, `-`, `.`), got `{}`", k.hostname));
    }
    c.at_least(&key("max_message_bytes"), k.max_message_bytes, 1024);
    c.at_most(
        &key("max_message_bytes"),
        k.max_message_bytes,
        nox_mail::bucket::MAX_MESSAGE_LEN,
        " (the largest message the mixnet carries)",
    );
    c.at_least(&key("max_recipients"), k.max_recipients, 1);
    c.at_most(&key("max_recipients"), k.max_recipients, MAX_RECIPIENTS_LIMIT, "");
    c.at_least(&key("max_queue_entries"), k.max_queue_entries, 1);
    c.at_least(&key("max_queue_bytes"), k.max_queue_bytes, 1 << 20);
    c.at_least(&key("lifetime_secs"), k.lifetime_secs, 60);
    c.at_least(&key("retry_min_secs"), k.retry_min_secs, 1);
    if k.retry_max_secs < k.retry_min_secs {
        c.fail(
            key("retry_max_secs"),
            format!("must be at least {} ({}), got {}", key("retry_min_secs"), k.retry_min_secs, k.retry_max_secs),
        );
    }
    c.at_least(&key("concurrency"), k.concurrency, 1);
    c.at_most(&key("concurrency"), k.concurrency, MAX_CONCURRENCY, "");
    match k.tls {
        (true, false) => c.fail(key("tls_key"), format!("required with {}", key("tls_cert"))),
        (false, true) => c.fail(key("tls_cert"), format!("required with {}", key("tls_key"))),
        _ => {}
    }
    match k.auth {
        (Some(""), _) => c.fail(key("auth_user"), "must not be empty"),
        (Some(_), false) => c.fail(key("auth_password_file"), format!("required with {}", key("auth_user"))),
        (None, true) => c.fail(key("auth_user"), format!("required with {}", key("auth_password_file"))),
        _ => {}
    }
}
