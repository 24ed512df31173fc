//! What an SMTP server is configured with: limits, timeouts, and the optional
//! authentication and TLS.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The SMTP server's configuration. `Default` gives the values documented on
/// each field; change them with struct update syntax or the `with_` methods.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Where the server should listen. The caller binds it and hands the
    /// [`tokio::net::TcpListener`] to [`crate::smtp::SmtpServer::serve`].
    /// Default `127.0.0.1:2525`.
    pub listen: SocketAddr,
    /// The name in the `220` greeting and the `EHLO` answer. Default
    /// `localhost`.
    pub hostname: String,
    /// The largest message taken, in bytes after dot-unstuffing, CRLF line
    /// ends included; advertised as `SIZE`. Default 32 MiB.
    pub max_message_bytes: usize,
    /// The most recipients of one message; `RCPT` beyond it gets
    /// `452 4.5.3`. Default 100 (RFC 5321 §4.5.3.1.8's minimum).
    pub max_recipients: usize,
    /// The most sessions served at once; a connection beyond it is answered
    /// `421 4.3.2` and closed. Default 64.
    pub max_sessions: usize,
    /// The longest command line, CRLF included. Default 512 (RFC 5321
    /// §4.5.3.1.4). `AUTH` lines may be longer (up to 12,288 bytes, RFC
    /// 4954 §4).
    pub max_command_line: usize,
    /// The longest line of a message, CRLF included. RFC 5321 §4.5.3.1.6
    /// says 1,000; mail clients exceed it (long HTML lines), so the default
    /// is lenient: 16 KiB. A message with a longer line is read to its end
    /// and refused with `552 5.3.4`.
    pub max_text_line: usize,
    /// The longest wait for the next command; an idle client is answered
    /// `421 4.4.2` and disconnected. Default 300 s (RFC 5321 §4.5.3.2.7).
    pub command_timeout: Duration,
    /// The longest wait for the next bytes within `DATA`, an `AUTH` exchange
    /// or the TLS handshake, and for the client to take our replies.
    /// Default 180 s.
    pub data_timeout: Duration,
    /// After the shutdown signal, how long sessions get to finish the
    /// message they are receiving before they are dropped (unanswered, so
    /// the client keeps the message). Default 30 s.
    pub shutdown_grace: Duration,
    /// The failed `AUTH` attempts after which a session is closed: the
    /// failure that reaches this count is answered `421 4.7.0` instead of
    /// `535`. Default 3.
    pub max_auth_failures: u32,
    /// The single local user, if authentication is required. Default none:
    /// any client may submit.
    pub auth: Option<SmtpAuth>,
    /// TLS for `STARTTLS`, if offered. Default none.
    pub tls: Option<SmtpTls>,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 2525)),
            hostname: "localhost".to_string(),
            max_message_bytes: 32 * 1024 * 1024,
            max_recipients: 100,
            max_sessions: 64,
            max_command_line: 512,
            max_text_line: 16 * 1024,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            shutdown_grace: Duration::from_secs(30),
            max_auth_failures: 3,
            auth: None,
            tls: None,
        }
    }
}

impl SmtpConfig {
    /// Requires `AUTH` as `auth`'s user before `MAIL`.
    pub fn with_auth(mut self, auth: SmtpAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Offers `STARTTLS` with `tls`.
    pub fn with_tls(mut self, tls: SmtpTls) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// The single local user allowed to submit (`AUTH PLAIN` or `AUTH LOGIN`).
/// `Debug` prints neither the name nor the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpAuth {
    /// The user name (SASL authentication identity).
    pub username: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for SmtpAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpAuth").finish_non_exhaustive()
    }
}

/// The TLS side of `STARTTLS`: a rustls server configuration.
#[derive(Clone)]
pub struct SmtpTls {
    pub(crate) config: Arc<ServerConfig>,
}

impl fmt::Debug for SmtpTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpTls").finish_non_exhaustive()
    }
}

impl SmtpTls {
    /// Loads a certificate chain (leaf first) and its private key (PKCS#8,
    /// PKCS#1 or SEC1) from PEM files; TLS 1.2 and 1.3 with rustls' safe
    /// defaults and the aws-lc-rs provider.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsSetupError> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|source| TlsSetupError::Certificate { path: cert.to_path_buf(), source })?;
        if chain.is_empty() {
            return Err(TlsSetupError::NoCertificate { path: cert.to_path_buf() });
        }
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|source| TlsSetupError::Key { path: key.to_path_buf(), source })?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key_der))
            .map_err(|source| TlsSetupError::Rustls { cert: cert.to_path_buf(), key: key.to_path_buf(), source })?;
        Ok(SmtpTls { config: Arc::new(config) })
    }

    /// Uses a rustls configuration built elsewhere.
    pub fn from_server_config(config: Arc<ServerConfig>) -> Self {
        SmtpTls { config }
    }
}

/// Why [`SmtpTls::from_pem_files`] failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The certificate file could not be read or parsed.
    #[error("cannot read the TLS certificate {path}: {source}")]
    Certificate {
        /// The certificate file.
        path: PathBuf,
        /// What went wrong.
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("no certificate in {path}")]
    NoCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// The key file could not be read, or holds no private key.
    #[error("cannot read the TLS private key {path}: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the pair (the key does not match the certificate, an
    /// unsupported key type).
    #[error("TLS certificate {cert} with key {key}: {source}")]
    Rustls {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
}
