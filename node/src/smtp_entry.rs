//! The node's optional SMTP entry (`[smtp_entry]`, off by default): the node
//! accepts mail by SMTP and sends it into the mixnet itself, as a client
//! would.
//!
//! ## When to use it, and what it costs
//!
//! The recommended path is the user's own gateway (`nox-client smtp`): the
//! user's machine scrubs the message and wraps the packets, and no node
//! ever holds the message with its sender. This entry is for senders that
//! can only speak SMTP (a mail program on a machine that cannot run
//! `nox-client`), reaching the node over Tor or another anonymising link.
//! **The node running it learns each message in full, its recipients, and
//! the connection it came from** — what any mail server learns — before the
//! mixnet hides anything; from there on the message travels like any
//! client's. Use it only with a node you would trust as a mail relay.
//!
//! ## What it is made of
//!
//! The same parts as the user's gateway, from `nox_client::mail`: the SMTP
//! server of `nox_mail::smtp` with the `GatewaySpool` (recipients checked,
//! headers scrubbed, size checked, `250` only once the message is durably
//! queued), the sealed `MailQueue`, and the `MailSender`, which sends each
//! message as a `Mail` request through a `nox_client::Client` and deletes it
//! only on an exit's acknowledgement. The client enters the mixnet at this
//! node when the node is an entry, at a random entry otherwise. The queue is
//! sealed under a random key kept beside it (`smtp-entry.key`, 0600): that
//! protects a copy of the queue file alone, not a compromised machine.
//!
//! A queue that is full answers `452`; nothing accepted is dropped, and a
//! restart resumes sending what is queued.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nox_client::mail::{GatewaySpool, KdfParams, MailQueue, MailSender, QueueLimits, SenderConfig};
use nox_client::{Client, ClientConfig, StaticMember, TopologySource};
use nox_config::Checks;
use nox_mail::smtp::{SmtpAuth, SmtpConfig, SmtpServer, SmtpTls};
use nox_protocol::NodeId;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::config::NodeConfig;

/// The queue's file in `node.data_dir` unless `smtp_entry.queue_path`.
pub const QUEUE_FILE: &str = "smtp-entry-queue.redb";
/// The file of the key the queue is sealed under, beside the queue.
pub const KEY_FILE: &str = "smtp-entry.key";

/// `[smtp_entry]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpEntrySection {
    /// Whether the node accepts mail by SMTP and sends it into the mixnet.
    pub enabled: bool,
    /// Where it listens.
    pub listen: SocketAddr,
    /// The name in its greeting.
    pub hostname: String,
    /// The largest message taken, in bytes (advertised as `SIZE`).
    pub max_message_bytes: usize,
    /// The most recipients of one message.
    pub max_recipients: usize,
    /// SMTP sessions at once.
    pub max_sessions: usize,
    /// The queue's file; unset: `smtp-entry-queue.redb` in `node.data_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_path: Option<String>,
    /// Entries the queue holds before it answers `452`.
    pub max_queue_entries: usize,
    /// Sealed bytes the queue holds before it answers `452`.
    pub max_queue_bytes: u64,
    /// Seconds a message is tried before it is given up on.
    pub lifetime_secs: u64,
    /// Seconds before the second try; doubled for each further one.
    pub retry_min_secs: u64,
    /// The longest wait between tries.
    pub retry_max_secs: u64,
    /// Messages sent at once.
    pub concurrency: usize,
    /// A PEM certificate chain: `STARTTLS` is offered with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    /// The PEM private key of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    /// The user a sender must authenticate as; unset: anyone who reaches
    /// `listen` may send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_user: Option<String>,
    /// A file holding that user's password (first line; not readable by
    /// group or others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_password_file: Option<String>,
}

impl Default for SmtpEntrySection {
    fn default() -> Self {
        SmtpEntrySection {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 2525)),
            hostname: "localhost".into(),
            max_message_bytes: nox_mail::bucket::MAX_MESSAGE_LEN - 4096,
            max_recipients: 100,
            max_sessions: 64,
            queue_path: None,
            max_queue_entries: 10_000,
            max_queue_bytes: 1 << 30,
            lifetime_secs: 5 * 86_400,
            retry_min_secs: 60,
            retry_max_secs: 3_600,
            concurrency: 4,
            tls_cert: None,
            tls_key: None,
            auth_user: None,
            auth_password_file: None,
        }
    }
}

impl SmtpEntrySection {
    /// Checks every key (also when off, so that turning it on holds no
    /// surprise).
    pub fn check(&self, c: &mut Checks) {
        c.at_least("smtp_entry.max_sessions", self.max_sessions, 1);
        nox_client::mail::check_gateway(
            c,
            nox_client::mail::GatewayKeys {
                section: "smtp_entry",
                hostname: &self.hostname,
                max_message_bytes: self.max_message_bytes,
                max_recipients: self.max_recipients,
                max_queue_entries: self.max_queue_entries,
                max_queue_bytes: self.max_queue_bytes,
                lifetime_secs: self.lifetime_secs,
                retry_min_secs: self.retry_min_secs,
                retry_max_secs: self.retry_max_secs,
                concurrency: self.concurrency,
                tls: (self.tls_cert.is_some(), self.tls_key.is_some()),
                auth: (self.auth_user.as_deref(), self.auth_password_file.is_some()),
            },
        );
    }

    /// The queue's file for a node whose data lives in `data_dir`.
    pub fn queue_file(&self, data_dir: &Path) -> PathBuf {
        self.queue_path.as_ref().map_or_else(|| data_dir.join(QUEUE_FILE), PathBuf::from)
    }
}

/// Why the SMTP entry did not start. The node does not start either: an
/// operator who turned it on expects it to run.
#[derive(Debug, thiserror::Error)]
pub enum SmtpEntryError {
    /// The queue's key file could not be read or written.
    #[error("smtp_entry: the queue key {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The queue did not open.
    #[error("smtp_entry: the queue: {0}")]
    Queue(#[from] nox_client::mail::MailQueueError),
    /// TLS or the password could not be loaded.
    #[error("smtp_entry: {0}")]
    Setup(String),
    /// The listen address could not be bound.
    #[error("smtp_entry: binding {addr}: {source}")]
    Bind {
        /// `smtp_entry.listen`.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
}

/// A running SMTP entry: the server and the sender, stopped by
/// [`SmtpEntry::shutdown`].
#[derive(Debug)]
pub struct SmtpEntry {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The bound address.
    pub local_addr: SocketAddr,
}

impl SmtpEntry {
    /// Stops accepting (sessions finish their message), stops the sender
    /// (unsent mail stays queued) and waits for both.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The queue's passphrase: the key file's content, created with 32 random
/// bytes (hex, 0600) when missing.
fn queue_key(path: &Path) -> Result<String, SmtpEntryError> {
    let err = |reason: String| SmtpEntryError::Key { path: path.to_path_buf(), reason };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = text.trim().to_string();
            if key.len() < 32 {
                return Err(err("shorter than 32 characters".into()));
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
            let key = hex::encode(bytes);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| err(e.to_string()))?;
            f.write_all(format!("{key}\n").as_bytes()).map_err(|e| err(e.to_string()))?;
            f.sync_all().map_err(|e| err(e.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// The first line of a file group and others cannot read.
fn private_line(path: &str) -> Result<String, SmtpEntryError> {
    use std::os::unix::fs::PermissionsExt;
    let setup = |m: String| SmtpEntryError::Setup(format!("smtp_entry.auth_password_file {path}: {m}"));
    let meta = std::fs::metadata(path).map_err(|e| setup(e.to_string()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(setup("readable by group or others (chmod 600 it)".into()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| setup(e.to_string()))?;
    let line = text.lines().next().unwrap_or_default().to_string();
    if line.is_empty() {
        return Err(setup("empty".into()));
    }
    Ok(line)
}

/// The client configuration the entry sends with: the node's own view of
/// the members (its registry, or its static list), entering at `own` when
/// the node is an entry. A registry address that does not parse is
/// [`SmtpEntryError::Setup`] (`nox check-config` refuses it before).
pub fn client_config(node: &NodeConfig, own: NodeId, own_layer: u8) -> Result<ClientConfig, SmtpEntryError> {
    let c = &node.chain;
    let topology = match (&c.registry, c.endpoints()) {
        (Some(registry), urls) if !urls.is_empty() => match registry.parse() {
            Ok(registry) => TopologySource::Registry(nox_eth::registry::follower::FollowerConfig {
                rpc_urls: urls,
                quorum: usize::try_from(c.rpc_quorum).unwrap_or(usize::MAX),
                chain_id: c.chain_id,
                registry,
                start_block: c.start_block,
                confirmations: c.confirmations,
                max_log_range: c.max_log_range,
                rpc_timeout: Duration::from_millis(c.rpc_timeout_ms),
            }),
            Err(_) => {
                return Err(SmtpEntryError::Setup(format!("chain.registry `{registry}` is not an address")));
            }
        },
        _ => TopologySource::Static(
            node.topology
                .nodes
                .iter()
                .filter_map(|n| {
                    Some(StaticMember {
                        node_id: n.node_id.clone(),
                        layer: n.layer,
                        address: n.addresses.first()?.clone(),
                    })
                })
                .collect(),
        ),
    };
    let mut cfg = ClientConfig::new(topology);
    cfg.epoch_secs = node.network.epoch_secs;
    cfg.pow_bits = node.ingest.pow_bits;
    cfg.entry = (own_layer == nox_protocol::topology::ENTRY_LAYER).then_some(own);
    Ok(cfg)
}

/// Starts the SMTP entry of `node` (which must be enabled): opens the
/// queue, binds `listen`, serves, and connects its client in the background
/// (retrying while the network is not ready: mail is accepted and kept
/// meanwhile).
pub async fn start(node: &NodeConfig, own: NodeId, own_layer: u8) -> Result<SmtpEntry, SmtpEntryError> {
    let section = &node.smtp_entry;
    let client_cfg = client_config(node, own, own_layer)?;
    let queue_file = section.queue_file(&node.node.data_dir);
    if let Some(dir) = queue_file.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| SmtpEntryError::Key { path: dir.to_path_buf(), reason: e.to_string() })?;
    }
    let key_file = queue_file.with_file_name(KEY_FILE);
    let limits = QueueLimits { max_entries: section.max_queue_entries, max_bytes: section.max_queue_bytes };
    let queue = tokio::task::spawn_blocking(move || {
        let pass = queue_key(&key_file)?;
        Ok::<_, SmtpEntryError>(MailQueue::open(&queue_file, &pass, KdfParams::default(), limits)?)
    })
    .await
    .map_err(|e| SmtpEntryError::Setup(e.to_string()))??;

    let mut smtp = SmtpConfig {
        listen: section.listen,
        hostname: section.hostname.clone(),
        max_message_bytes: section.max_message_bytes,
        max_recipients: section.max_recipients,
        max_sessions: section.max_sessions,
        ..SmtpConfig::default()
    };
    if let (Some(cert), Some(key)) = (&section.tls_cert, &section.tls_key) {
        let tls = SmtpTls::from_pem_files(Path::new(cert), Path::new(key))
            .map_err(|e| SmtpEntryError::Setup(format!("smtp_entry.tls_cert/tls_key: {e}")))?;
        smtp = smtp.with_tls(tls);
    }
    if let (Some(user), Some(file)) = (&section.auth_user, &section.auth_password_file) {
        smtp = smtp.with_auth(SmtpAuth { username: user.clone(), password: private_line(file)? });
    }
    let listener = tokio::net::TcpListener::bind(section.listen)
        .await
        .map_err(|source| SmtpEntryError::Bind { addr: section.listen, source })?;
    let local_addr = listener.local_addr().map_err(|source| SmtpEntryError::Bind { addr: section.listen, source })?;
    if !local_addr.ip().is_loopback() && section.auth_user.is_none() {
        tracing::warn!(
            %local_addr,
            "smtp_entry listens beyond loopback without smtp_entry.auth_user: anyone who reaches it sends mail \
             through this node"
        );
    }

    let wake = Arc::new(Notify::new());
    let spool = GatewaySpool::new(queue.clone(), nox_mail::message::ScrubOptions::default(), Arc::clone(&wake));
    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let server = SmtpServer::new(smtp, Arc::new(spool));
    let mut tasks = vec![tokio::spawn(server.serve(listener, until_stopped(stopped.clone())))];

    let sender_cfg = SenderConfig {
        lifetime: Duration::from_secs(section.lifetime_secs),
        retry_min: Duration::from_secs(section.retry_min_secs),
        retry_max: Duration::from_secs(section.retry_max_secs),
        concurrency: section.concurrency,
        ..SenderConfig::default()
    };
    let mut rx = stopped.clone();
    tasks.push(tokio::spawn(async move {
        // Connect, retrying while the network is not ready (this node's own
        // listener may still be starting, the registry behind).
        let client = loop {
            let attempt = tokio::select! {
                c = Client::connect(client_cfg.clone()) => c,
                _ = rx.wait_for(|s| *s) => return,
            };
            match attempt {
                Ok(c) => break Arc::new(c),
                Err(e) => {
                    tracing::warn!(error = %e, "smtp_entry: the mixnet is not reachable yet; mail is kept, retrying in 5 s");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = rx.wait_for(|s| *s) => return,
                    }
                }
            }
        };
        tracing::info!("smtp_entry: connected; sending queued mail through the mixnet");
        let refresh_every = client.config().refresh_every;
        let refresher = {
            let client = Arc::clone(&client);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(refresh_every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(e) = client.refresh().await {
                        tracing::warn!(error = %e, "smtp_entry: refreshing the members failed");
                    }
                }
            })
        };
        let sender = MailSender::new(queue, Arc::clone(&client), sender_cfg, wake);
        sender.run(async move {
            let _ = rx.wait_for(|s| *s).await;
        })
        .await;
        refresher.abort();
        let _ = refresher.await;
        if let Ok(client) = Arc::try_unwrap(client) {
            client.shutdown().await;
        }
    }));
    tracing::info!(%local_addr, "smtp_entry: accepting mail for the mixnet");
    Ok(SmtpEntry { stop, tasks, local_addr })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn problems(section: SmtpEntrySection) -> Vec<String> {
        let mut c = Checks::default();
        section.check(&mut c);
        match c.finish() {
            Ok(()) => Vec::new(),
            Err(p) => p.into_iter().map(|p| p.key).collect(),
        }
    }

    #[test]
    fn the_defaults_pass_and_each_bad_value_is_named() {
        assert!(problems(SmtpEntrySection::default()).is_empty());
        let d = SmtpEntrySection::default;
        for (bad, key) in [
            (SmtpEntrySection { hostname: "a b".into(), ..d() }, "smtp_entry.hostname"),
            (SmtpEntrySection { max_message_bytes: 9_000_000, ..d() }, "smtp_entry.max_message_bytes"),
            (SmtpEntrySection { max_recipients: 0, ..d() }, "smtp_entry.max_recipients"),
            (SmtpEntrySection { max_sessions: 0, ..d() }, "smtp_entry.max_sessions"),
            (SmtpEntrySection { max_queue_bytes: 10, ..d() }, "smtp_entry.max_queue_bytes"),
            (SmtpEntrySection { lifetime_secs: 1, ..d() }, "smtp_entry.lifetime_secs"),
            (SmtpEntrySection { retry_min_secs: 10, retry_max_secs: 5, ..d() }, "smtp_entry.retry_max_secs"),
            (SmtpEntrySection { concurrency: 0, ..d() }, "smtp_entry.concurrency"),
            (SmtpEntrySection { tls_cert: Some("c.pem".into()), ..d() }, "smtp_entry.tls_key"),
            (SmtpEntrySection { auth_user: Some("u".into()), ..d() }, "smtp_entry.auth_password_file"),
            (SmtpEntrySection { auth_password_file: Some("p".into()), ..d() }, "smtp_entry.auth_user"),
        ] {
            assert_eq!(problems(bad), vec![key.to_string()]);
        }
    }

    #[test]
    fn the_client_follows_the_nodes_members_and_refuses_a_bad_registry() {
        let mut node = NodeConfig::default();
        node.chain.rpc_url = Some("http://127.0.0.1:8545".into());
        node.chain.registry = Some("0x5FbDB2315678afecb367f032d93F642f64180aa3".into());
        let own = NodeId([7; 32]);
        let cfg = client_config(&node, own, 0).unwrap();
        assert!(matches!(cfg.topology, TopologySource::Registry(_)));
        assert_eq!(cfg.entry, Some(own), "an entry node sends through itself");
        assert_eq!(client_config(&node, own, 1).unwrap().entry, None, "a mix node sends through any entry");
        node.chain.registry = Some("not an address".into());
        let e = client_config(&node, own, 0).unwrap_err();
        assert!(matches!(&e, SmtpEntryError::Setup(m) if m.contains("chain.registry")), "{e}");
    }

    #[test]
    fn the_queue_key_is_made_once_private_and_then_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let first = queue_key(&path).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(queue_key(&path).unwrap(), first, "the same key after a restart");
        std::fs::write(&path, "short\n").unwrap();
        assert!(matches!(queue_key(&path), Err(SmtpEntryError::Key { .. })));
    }

    #[test]
    fn a_readable_password_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = private_line(path.to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("readable by group or others"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(private_line(path.to_str().unwrap()).unwrap(), "secret");
    }
}
