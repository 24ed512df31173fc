//! The mail exit's settings, read from `[exit]` (`exit.mail_*`), and the
//! syntax rules `nox check-config` shares with the start: `host:port`, the
//! `EHLO` name, secret files.
//!
//! [`MailExitConfig`] is what the queue, the service and the worker need;
//! [`NetworkConfig`] what the real deliverer ([`super::network`]) needs to
//! reach mail and news servers. Neither reads a file: secrets and
//! certificate authorities are read when the deliverer is built, so a bad
//! file stops the start with a [`MailSetupError`] that names it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::queue::{QueueError, QueueLimits};
use super::recipient::is_host_name;
use super::schedule::Schedule;
use crate::config::{ExitSection, SmarthostTls};

/// The queue file's name in `node.data_dir` when `exit.mail_queue_path` is unset.
pub const QUEUE_FILE: &str = "mail-queue.redb";

/// Most recipients `exit.mail_max_recipients` may allow (the wire's list
/// holds up to 65,535; an SMTP server takes 100 per transaction).
pub const MAX_RECIPIENTS_LIMIT: usize = 1000;

/// What a `Mail` request must satisfy before it is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptRules {
    /// Most recipients or newsgroups (`exit.mail_max_recipients`).
    pub max_recipients: usize,
    /// Longest message after its padding is removed (`exit.mail_max_message_bytes`).
    pub max_message_bytes: usize,
    /// Whether NNTP posts are offered (`exit.mail_nntp_server` is set).
    pub nntp: bool,
}

impl Default for AcceptRules {
    fn default() -> Self {
        AcceptRules { max_recipients: 100, max_message_bytes: nox_mail::bucket::MAX_MESSAGE_LEN, nntp: false }
    }
}

/// The queue, the service and the worker's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailExitConfig {
    /// The queue's redb file.
    pub queue_path: PathBuf,
    /// The queue's bounds.
    pub limits: QueueLimits,
    /// What is accepted.
    pub rules: AcceptRules,
    /// Batch window, retries and lifetime.
    pub schedule: Schedule,
    /// Messages delivered at once (`exit.mail_delivery_concurrency`).
    pub concurrency: usize,
    /// How long one attempt on one message may take, all its domains
    /// together: a connection, four commands' replies and the data's
    /// (`exit.mail_connect_timeout_secs`, `exit.mail_command_timeout_secs`,
    /// `exit.mail_data_timeout_secs`).
    pub attempt_timeout: Duration,
}

impl MailExitConfig {
    /// The settings `[exit]` describes, the queue in `data_dir` unless
    /// `exit.mail_queue_path` says otherwise.
    pub fn from_section(exit: &ExitSection, data_dir: &Path) -> MailExitConfig {
        MailExitConfig {
            queue_path: exit.mail_queue_path.as_ref().map_or_else(|| data_dir.join(QUEUE_FILE), PathBuf::from),
            limits: QueueLimits {
                max_entries: exit.mail_max_queue_entries,
                max_bytes: exit.mail_max_queue_bytes,
                max_accepted_ids: exit.mail_max_accepted_ids,
            },
            rules: AcceptRules {
                max_recipients: exit.mail_max_recipients,
                max_message_bytes: exit.mail_max_message_bytes,
                nntp: exit.mail_nntp_server.is_some(),
            },
            schedule: Schedule {
                batch: Duration::from_secs(exit.mail_batch_secs),
                retry_min: Duration::from_secs(exit.mail_retry_min_secs),
                retry_max: Duration::from_secs(exit.mail_retry_max_secs),
                lifetime: Duration::from_secs(exit.mail_lifetime_secs),
            },
            concurrency: exit.mail_delivery_concurrency,
            attempt_timeout: Duration::from_secs(
                exit.mail_connect_timeout_secs
                    .saturating_add(exit.mail_command_timeout_secs.saturating_mul(4))
                    .saturating_add(exit.mail_data_timeout_secs),
            ),
        }
    }
}

/// A user name and the file its password is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialFile {
    /// The user name.
    pub user: String,
    /// The password's file (mode 0600 or tighter).
    pub password_file: PathBuf,
}

/// The relay all SMTP mail goes through (`exit.mail_smarthost`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmarthostConfig {
    /// Where it listens.
    pub server: HostPort,
    /// STARTTLS required, or plain.
    pub tls: SmarthostTls,
    /// Certificate authorities to check it against; `None`: the Web PKI.
    pub ca_file: Option<PathBuf>,
    /// AUTH, if any.
    pub credentials: Option<CredentialFile>,
}

/// The news server (`exit.mail_nntp_server`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NntpServerConfig {
    /// Where it listens.
    pub server: HostPort,
    /// AUTHINFO, if any.
    pub credentials: Option<CredentialFile>,
}

/// Connection bounds for mail and news servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a connection (`exit.mail_connect_timeout_secs`).
    pub connect: Duration,
    /// One command's reply (`exit.mail_command_timeout_secs`).
    pub command: Duration,
    /// The reply to a message's data (`exit.mail_data_timeout_secs`).
    pub data: Duration,
}

/// What the real deliverer needs to reach mail and news servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// `MAIL FROM`; empty: the null reverse path.
    pub envelope_from: String,
    /// The `EHLO` name.
    pub helo: String,
    /// The port of recipients' mail servers (`exit.mail_smtp_port`).
    pub smtp_port: u16,
    /// DNS servers for MX lookups; empty: the system's.
    pub resolvers: Vec<SocketAddr>,
    /// Send everything through a relay instead.
    pub smarthost: Option<SmarthostConfig>,
    /// Where newsgroup posts go.
    pub nntp: Option<NntpServerConfig>,
    /// Let loopback addresses pass the address guard (tests only).
    pub allow_loopback: bool,
    /// Connection bounds.
    pub timeouts: Timeouts,
}

impl NetworkConfig {
    /// The settings `[exit]` describes. A key validation would refuse is a
    /// [`MailSetupError::Config`].
    pub fn from_section(exit: &ExitSection) -> Result<NetworkConfig, MailSetupError> {
        let bad = |key: &'static str, reason: String| MailSetupError::Config { key, reason };
        let resolvers = exit
            .mail_resolvers
            .iter()
            .map(|r| r.parse::<SocketAddr>().map_err(|_| bad("exit.mail_resolvers", format!("`{r}` is not ip:port"))))
            .collect::<Result<Vec<_>, _>>()?;
        let credentials = |user: &Option<String>, file: &Option<String>, key: &'static str| match (user, file) {
            (Some(user), Some(file)) => Ok(Some(CredentialFile { user: user.clone(), password_file: file.into() })),
            (None, None) => Ok(None),
            _ => Err(bad(key, "a user name and a password file go together".into())),
        };
        let smarthost = match &exit.mail_smarthost {
            Some(s) => Some(SmarthostConfig {
                server: HostPort::parse(s).map_err(|e| bad("exit.mail_smarthost", e.to_string()))?,
                tls: exit.mail_smarthost_tls,
                ca_file: exit.mail_smarthost_ca_file.as_ref().map(PathBuf::from),
                credentials: credentials(
                    &exit.mail_smarthost_user,
                    &exit.mail_smarthost_password_file,
                    "exit.mail_smarthost_user",
                )?,
            }),
            None => None,
        };
        let nntp = match &exit.mail_nntp_server {
            Some(s) => Some(NntpServerConfig {
                server: HostPort::parse(s).map_err(|e| bad("exit.mail_nntp_server", e.to_string()))?,
                credentials: credentials(&exit.mail_nntp_user, &exit.mail_nntp_password_file, "exit.mail_nntp_user")?,
            }),
            None => None,
        };
        Ok(NetworkConfig {
            envelope_from: exit.mail_envelope_from.clone().unwrap_or_default(),
            helo: exit.mail_helo.clone(),
            smtp_port: exit.mail_smtp_port,
            resolvers,
            smarthost,
            nntp,
            allow_loopback: exit.mail_allow_loopback,
            timeouts: Timeouts {
                connect: Duration::from_secs(exit.mail_connect_timeout_secs),
                command: Duration::from_secs(exit.mail_command_timeout_secs),
                data: Duration::from_secs(exit.mail_data_timeout_secs),
            },
        })
    }
}

/// Why the mail exit could not start.
#[derive(Debug, thiserror::Error)]
pub enum MailSetupError {
    /// A key validation refuses (the node was started without it).
    #[error("{key}: {reason}")]
    Config {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The queue file could not be opened.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A password file cannot be used.
    #[error("{}: {reason}", path.display())]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The smarthost's certificate authorities cannot be read.
    #[error("exit.mail_smarthost_ca_file {}: {reason}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The MX resolver could not be set up.
    #[error("exit.mail_resolvers: {0}")]
    Resolver(String),
}

/// A server given as `host:port` (`exit.mail_smarthost`, `exit.mail_nntp_server`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// A host name, or an address (IPv6 without its brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

/// A `host:port` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not host:port (a host name or address, then a port from 1 to 65535; IPv6 in brackets)")]
pub struct HostPortError(pub String);

impl HostPort {
    /// Parses `host:port`, `a.b.c.d:port` or `[v6]:port`.
    pub fn parse(text: &str) -> Result<HostPort, HostPortError> {
        let bad = || HostPortError(text.to_owned());
        let (host, port) = match text.strip_prefix('[') {
            Some(rest) => {
                let (v6, port) = rest.split_once("]:").ok_or_else(bad)?;
                v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
                (v6, port)
            }
            None => {
                let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
                if host.parse::<std::net::Ipv4Addr>().is_err() && !is_host_name(host, 1) {
                    return Err(bad());
                }
                (host, port)
            }
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 {
            return Err(bad());
        }
        Ok(HostPort { host: host.to_owned(), port })
    }

    /// The address, when the host is one.
    pub fn literal(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The host's addresses with the port: the literal, or what the system
    /// resolver answers.
    pub async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        if let Some(ip) = self.literal() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        Ok(tokio::net::lookup_host((self.host.as_str(), self.port)).await?.collect())
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.literal() {
            Some(IpAddr::V6(v6)) => write!(f, "[{v6}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// Checks an `EHLO` name: a host name (one label or more) or an address
/// literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`).
pub fn check_helo(name: &str) -> Result<(), &'static str> {
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        let ok = match inner.strip_prefix("IPv6:") {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => inner.parse::<std::net::Ipv4Addr>().is_ok(),
        };
        return if ok { Ok(()) } else { Err("not an address literal ([a.b.c.d] or [IPv6:…])") };
    }
    if is_host_name(name, 1) { Ok(()) } else { Err("not a host name or an address literal") }
}

/// Checks that `path` is a file that neither group nor others can read
/// (the rule of `exit.eth_wallet_key_file`); the problem in words.
pub fn check_secret_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} has mode {:o}; a password file must not be readable by group or others (chmod 600)",
            path.display(),
            mode & 0o777
        ));
    }
    Ok(())
}

/// Reads a password from `path`: [`check_secret_file`], then its first
/// line (a trailing line end is not part of it).
pub fn read_secret_file(path: &Path) -> Result<String, MailSetupError> {
    let bad = |reason: String| MailSetupError::SecretFile { path: path.to_owned(), reason };
    check_secret_file(path).map_err(bad)?;
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(bad("the file holds no password".into()));
    }
    Ok(line.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn host_port_forms() {
        let hp = |s: &str| HostPort::parse(s);
        assert_eq!(hp("smtp.example.org:587").unwrap(), HostPort { host: "smtp.example.org".into(), port: 587 });
        assert_eq!(hp("relay:25").unwrap().host, "relay");
        assert_eq!(hp("192.0.2.1:25").unwrap().literal(), Some("192.0.2.1".parse().unwrap()));
        let v6 = hp("[2001:db8::1]:119").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("2001:db8::1", 119));
        assert_eq!(v6.to_string(), "[2001:db8::1]:119");
        for bad in [
            "",
            "smtp.example.org",
            ":25",
            "smtp.example.org:0",
            "x:65536",
            "x:-1",
            "2001:db8::1:25",
            "[::1]",
            "a b:25",
        ] {
            assert_eq!(hp(bad), Err(HostPortError(bad.into())), "{bad:?}");
        }
    }

    #[test]
    fn helo_names() {
        for good in ["localhost", "exit.example.org", "[192.0.2.1]", "[IPv6:2001:db8::1]"] {
            assert_eq!(check_helo(good), Ok(()), "{good}");
        }
        for bad in ["", "a b", "[300.1.1.1]", "[2001:db8::1]", "exit..org", "-x"] {
            assert!(check_helo(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secret_files_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_secret_file(&path).unwrap_err();
        assert!(e.to_string().contains("mode 640") && !e.to_string().contains("s3cret"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&path).unwrap(), "s3cret");
        assert!(check_secret_file(&dir.path().join("absent")).is_err());
        assert!(check_secret_file(dir.path()).unwrap_err().contains("not a file"));
        std::fs::write(&path, "\n").unwrap();
        assert!(read_secret_file(&path).unwrap_err().to_string().contains("no password"));
    }

    #[test]
    fn from_section_puts_the_queue_in_the_data_dir() {
        let exit = ExitSection::default();
        let c = MailExitConfig::from_section(&exit, Path::new("/var/lib/nox"));
        assert_eq!(c.queue_path, Path::new("/var/lib/nox/mail-queue.redb"));
        assert_eq!(c.schedule.batch, Duration::from_secs(30));
        assert!(!c.rules.nntp);
        let exit = ExitSection {
            mail_queue_path: Some("/q.redb".into()),
            mail_nntp_server: Some("news.example.org:119".into()),
            ..ExitSection::default()
        };
        let c = MailExitConfig::from_section(&exit, Path::new("/var/lib/nox"));
        assert_eq!(c.queue_path, Path::new("/q.redb"));
        assert!(c.rules.nntp);
        let n = NetworkConfig::from_section(&exit).unwrap();
        assert_eq!(n.nntp.unwrap().server.port, 119);
        assert_eq!(n.helo, "localhost");
        let bad = ExitSection { mail_smarthost: Some("nope".into()), ..ExitSection::default() };
        assert!(matches!(
            NetworkConfig::from_section(&bad),
            Err(MailSetupError::Config { key: "exit.mail_smarthost", .. })
        ));
    }
}
