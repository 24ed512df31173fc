//! [`NetworkDeliverer`]: the [`MailDeliverer`] that reaches real servers,
//! through `nox_mail::deliver`.
//!
//! **SMTP, direct** (no `exit.mail_smarthost`): the domain's mail hosts from
//! [`MxResolver`] (`exit.mail_resolvers`, or the system's), in RFC 5321
//! order; each host's addresses in turn, at `exit.mail_smtp_port`, with
//! opportunistic STARTTLS. Every address goes through the exit's address
//! guard ([`SsrfPolicy`]) first: a recipient's domain is the client's
//! choice, and its MX could point at the exit's own network. A forbidden
//! address is skipped and counted
//! (`nox_events_total{kind="exit_mail",outcome="refused_ssrf_<class>"}`);
//! a domain whose hosts are all forbidden is refused for good. The first
//! session that ends with outcomes for the recipients ends the attempt; a
//! session that fails for now moves on to the next address.
//!
//! **SMTP, smarthost**: every domain goes to `exit.mail_smarthost`, with
//! STARTTLS required and its certificate checked against the Web PKI roots
//! or `exit.mail_smarthost_ca_file` (or plain SMTP with
//! `exit.mail_smarthost_tls = "none"`), and `AUTH` when
//! `exit.mail_smarthost_user` is set. The smarthost is the operator's
//! choice, not a client's: its addresses are not guarded.
//!
//! **NNTP**: the article to `exit.mail_nntp_server`, its addresses guarded
//! like an MX's (the operator names it, but it is reached for anonymous
//! clients all the same).
//!
//! The envelope sender is `exit.mail_envelope_from`, by default the null
//! reverse path `<>`: nobody can return a bounce to an anonymous sender, and
//! a null sender tells the receiving server not to try.
//!
//! Nothing is logged per message: the server's replies (which may quote an
//! address) are dropped once classified.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use nox_mail::deliver::{
    Credentials, MxResolver, NntpConfig, PostError, RcptOutcome, ResolveError, SendError, SmtpClientConfig, SmtpTarget,
    TlsMode, post_article, send_mail,
};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::config::{CredentialFile, HostPort, MailSetupError, NetworkConfig, read_secret_file};
use super::deliverer::{MailDeliverer, Outcome};
use crate::config::SmarthostTls;
use crate::exit::outcomes::ServiceOutcomes;
use crate::exit::ssrf::{AddressClass, SsrfPolicy};
use crate::metrics::Metrics;

/// The metrics kind of the deliverer's address refusals.
pub const KIND: &str = "exit_mail";

/// Addresses tried for one domain in one attempt, across its mail hosts in
/// order (Postfix's default is 5): a domain with many unreachable hosts
/// costs a bounded time per attempt; the next attempt starts again at the
/// first.
pub const MAX_TARGETS_PER_ATTEMPT: usize = 5;

/// Where SMTP mail goes.
enum Route {
    /// The recipients' mail hosts.
    Mx { resolver: Box<MxResolver>, port: u16 },
    /// One relay for everything.
    Smarthost { server: HostPort },
}

/// Delivers through `nox_mail::deliver` (see the module docs).
pub struct NetworkDeliverer {
    route: Route,
    smtp: SmtpClientConfig,
    envelope_from: String,
    nntp: Option<(HostPort, NntpConfig)>,
    policy: SsrfPolicy,
    outcomes: ServiceOutcomes,
}

impl std::fmt::Debug for NetworkDeliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let route = match self.route {
            Route::Mx { .. } => "mx",
            Route::Smarthost { .. } => "smarthost",
        };
        f.debug_struct("NetworkDeliverer").field("route", &route).finish_non_exhaustive()
    }
}

fn credentials(c: &Option<CredentialFile>) -> Result<Option<Credentials>, MailSetupError> {
    c.as_ref()
        .map(|c| Ok(Credentials { user: c.user.clone(), password: read_secret_file(&c.password_file)? }))
        .transpose()
}

/// The trust anchors for the smarthost: `ca_file`'s certificates, or the
/// Web PKI's.
fn roots(ca_file: Option<&std::path::Path>) -> Result<RootCertStore, MailSetupError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        None => {
            roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
        }
        Some(path) => {
            let bad = |reason: String| MailSetupError::CaFile { path: path.to_owned(), reason };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(bad("no usable certificate in the file".into()));
            }
        }
    }
    Ok(roots)
}

impl NetworkDeliverer {
    /// A deliverer for `cfg`: reads the password files and the CA file, and
    /// sets up the MX resolver. Counts into `metrics`.
    pub fn new(cfg: &NetworkConfig, metrics: &Metrics) -> Result<NetworkDeliverer, MailSetupError> {
        let t = cfg.timeouts;
        let mut smtp = SmtpClientConfig {
            helo: cfg.helo.clone(),
            tls: TlsMode::Opportunistic,
            auth: None,
            connect_timeout: t.connect,
            command_timeout: t.command,
            data_timeout: t.data,
        };
        let route = match &cfg.smarthost {
            Some(s) => {
                smtp.tls = match s.tls {
                    SmarthostTls::Starttls => TlsMode::Required { roots: Arc::new(roots(s.ca_file.as_deref())?) },
                    SmarthostTls::None => TlsMode::Off,
                };
                smtp.auth = credentials(&s.credentials)?;
                Route::Smarthost { server: s.server.clone() }
            }
            None => {
                let resolver =
                    MxResolver::new(&cfg.resolvers, t.connect).map_err(|e| MailSetupError::Resolver(e.to_string()))?;
                Route::Mx { resolver: Box::new(resolver), port: cfg.smtp_port }
            }
        };
        let nntp = match &cfg.nntp {
            Some(n) => Some((
                n.server.clone(),
                NntpConfig {
                    auth: credentials(&n.credentials)?,
                    connect_timeout: t.connect,
                    command_timeout: t.command,
                },
            )),
            None => None,
        };
        let refusals: Vec<&'static str> =
            AddressClass::ALL.iter().filter(|c| **c != AddressClass::Public).map(|c| c.refusal_outcome()).collect();
        Ok(NetworkDeliverer {
            route,
            smtp,
            envelope_from: cfg.envelope_from.clone(),
            nntp,
            policy: SsrfPolicy { allow_loopback: cfg.allow_loopback },
            outcomes: ServiceOutcomes::new(metrics, KIND, &refusals),
        })
    }

    /// Whether the guard lets `addr` through (a refusal is counted).
    fn allowed(&self, addr: SocketAddr) -> bool {
        match self.policy.check(addr.ip()) {
            Ok(()) => true,
            Err(crate::exit::ssrf::SsrfError::Forbidden(class)) => {
                self.outcomes.inc(class.refusal_outcome());
                false
            }
            Err(_) => false,
        }
    }

    /// One session per target until one ends with outcomes; `None` if every
    /// session failed for now, all `Permanent` if one failed for good.
    async fn send_to(
        &self,
        targets: impl IntoIterator<Item = SmtpTarget>,
        rcpts: &[String],
        message: &[u8],
    ) -> Option<Vec<Outcome>> {
        for target in targets {
            match send_mail(&self.smtp, &target, &self.envelope_from, rcpts, message).await {
                Ok(outcomes) => return Some(outcomes.iter().map(outcome).collect()),
                Err(SendError::Permanent(_)) => return Some(vec![Outcome::Permanent; rcpts.len()]),
                Err(SendError::Transient(_)) => continue,
            }
        }
        None
    }

    async fn send_direct(
        &self,
        resolver: &MxResolver,
        port: u16,
        domain: &str,
        rcpts: &[String],
        message: &[u8],
    ) -> Vec<Outcome> {
        let hosts = match resolver.mail_hosts(domain).await {
            Ok(hosts) => hosts,
            Err(ResolveError::Transient(_)) => return vec![Outcome::Transient; rcpts.len()],
            Err(ResolveError::NoMailHost(_)) => return vec![Outcome::Permanent; rcpts.len()],
        };
        let mut targets = Vec::new();
        for host in hosts {
            for ip in host.addrs {
                let addr = SocketAddr::new(ip, port);
                if self.allowed(addr) {
                    targets.push(SmtpTarget { addr, name: host.name.clone() });
                }
            }
        }
        targets.truncate(MAX_TARGETS_PER_ATTEMPT);
        if targets.is_empty() {
            // Mail hosts only where the exit does not connect: never deliverable.
            return vec![Outcome::Permanent; rcpts.len()];
        }
        self.send_to(targets, rcpts, message).await.unwrap_or_else(|| vec![Outcome::Transient; rcpts.len()])
    }

    async fn send_smarthost(&self, server: &HostPort, rcpts: &[String], message: &[u8]) -> Vec<Outcome> {
        let Ok(addrs) = server.resolve().await else { return vec![Outcome::Transient; rcpts.len()] };
        let targets =
            addrs.into_iter().take(MAX_TARGETS_PER_ATTEMPT).map(|addr| SmtpTarget { addr, name: server.host.clone() });
        self.send_to(targets, rcpts, message).await.unwrap_or_else(|| vec![Outcome::Transient; rcpts.len()])
    }

    async fn post_article(&self, article: &[u8]) -> Outcome {
        // Entries queued while posting was configured: refused for good now.
        let Some((server, cfg)) = &self.nntp else { return Outcome::Permanent };
        let Ok(addrs) = server.resolve().await else { return Outcome::Transient };
        let allowed: Vec<SocketAddr> =
            addrs.into_iter().filter(|a| self.allowed(*a)).take(MAX_TARGETS_PER_ATTEMPT).collect();
        if allowed.is_empty() {
            return Outcome::Permanent;
        }
        for addr in allowed {
            match post_article(cfg, addr, article).await {
                Ok(()) => return Outcome::Delivered,
                Err(PostError::Permanent(_)) => return Outcome::Permanent,
                Err(PostError::Transient(_)) => continue,
            }
        }
        Outcome::Transient
    }
}

fn outcome(o: &RcptOutcome) -> Outcome {
    match o {
        RcptOutcome::Delivered => Outcome::Delivered,
        RcptOutcome::Transient(_) => Outcome::Transient,
        RcptOutcome::Permanent(_) => Outcome::Permanent,
    }
}

impl MailDeliverer for NetworkDeliverer {
    fn send<'a>(&'a self, domain: &'a str, recipients: &'a [String], message: &'a [u8]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            match &self.route {
                Route::Mx { resolver, port } => self.send_direct(resolver, *port, domain, recipients, message).await,
                Route::Smarthost { server } => self.send_smarthost(server, recipients, message).await,
            }
        })
    }

    fn post<'a>(&'a self, article: &'a [u8]) -> BoxFuture<'a, Outcome> {
        Box::pin(self.post_article(article))
    }
}
