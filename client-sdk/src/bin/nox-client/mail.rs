//! `nox-client smtp` and `nox-client mail …`: the local SMTP gateway, and
//! what its queue holds.
//!
//! The queue's passphrase comes from `--passphrase-file` or
//! `NOX_MAIL_PASSPHRASE`, as the wallet's does; `mail queue` needs none
//! (the schedule is kept in the clear).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Subcommand};
use nox_client::config::ClientFile;
use nox_client::mail::{EntryInfo, EntryState, GatewaySpool, KdfParams, MailId, MailQueue, MailQueueError, MailSender};
use nox_mail::smtp::{SmtpAuth, SmtpConfig, SmtpServer, SmtpTls};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

use super::{connect_retrying, first_signal, refresh, shutdown_client};

/// `nox-client smtp`'s arguments.
#[derive(Args)]
pub(crate) struct SmtpArgs {
    /// The configuration file (`nox-client.toml`).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// A file holding the queue's passphrase (first line); default: the
    /// NOX_MAIL_PASSPHRASE environment variable.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Accept a non-loopback [mail].listen address.
    #[arg(long)]
    pub allow_remote: bool,
}

/// `nox-client mail …`
#[derive(Subcommand)]
pub(crate) enum MailCommand {
    /// Print what the outgoing queue holds, as JSON lines: id, state,
    /// attempts, accepted, next attempt, sealed bytes. No content, and no
    /// passphrase needed; while `nox-client smtp` runs, its last snapshot.
    Queue {
        /// The configuration file (`nox-client.toml`).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Delete one entry unsent (an expired one, or one no longer wanted).
    /// Needs the passphrase and the gateway stopped.
    Discard {
        /// The configuration file (`nox-client.toml`).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// A file holding the queue's passphrase (first line); default:
        /// NOX_MAIL_PASSPHRASE.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// The entry's id, as `mail queue` and the `250 … queued as` reply show it.
        id: String,
    },
}

impl MailCommand {
    /// The configuration file named.
    pub(crate) fn config(&self) -> &PathBuf {
        match self {
            MailCommand::Queue { config } | MailCommand::Discard { config, .. } => config,
        }
    }
}

fn passphrase(file: Option<&Path>) -> anyhow::Result<String> {
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the passphrase from {}", path.display()))?;
            Ok(text.lines().next().unwrap_or_default().to_string())
        }
        None => std::env::var("NOX_MAIL_PASSPHRASE")
            .context("no passphrase: set NOX_MAIL_PASSPHRASE or pass --passphrase-file FILE"),
    }
}

/// The snapshot of the schedule a running gateway keeps beside its queue.
fn snapshot_path(queue: &Path) -> PathBuf {
    let mut name = queue.file_name().unwrap_or_default().to_os_string();
    name.push(".status");
    queue.with_file_name(name)
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn entry_json(i: &EntryInfo) -> serde_json::Value {
    serde_json::json!({
        "id": i.id.to_string(),
        "state": match i.state { EntryState::Waiting => "waiting", EntryState::Expired => "expired" },
        "attempts": i.attempts,
        "accepted_ms": ms(i.created),
        "next_attempt_ms": ms(i.next_attempt),
        "bytes": i.bytes,
    })
}

/// Writes the schedule to the snapshot file (0600, replaced atomically).
fn write_snapshot(queue: &MailQueue, path: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let list = queue.list()?;
    let mut text = String::new();
    for i in &list {
        text.push_str(&entry_json(i).to_string());
        text.push('\n');
    }
    let tmp = path.with_extension("status.tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub(crate) async fn mail_main(cfg: ClientFile, command: MailCommand) -> anyhow::Result<()> {
    let path = cfg.mail.queue.clone();
    match command {
        MailCommand::Queue { .. } => {
            let list = tokio::task::spawn_blocking({
                let path = path.clone();
                move || MailQueue::read_schedule(&path)
            })
            .await?;
            match list {
                Ok(list) => {
                    for i in &list {
                        println!("{}", entry_json(i));
                    }
                    Ok(())
                }
                Err(MailQueueError::Busy(_)) => {
                    let snapshot = snapshot_path(&path);
                    let text = std::fs::read_to_string(&snapshot).with_context(|| {
                        format!(
                            "the queue is held by a running gateway, and its snapshot {} is missing",
                            snapshot.display()
                        )
                    })?;
                    print!("{text}");
                    Ok(())
                }
                Err(MailQueueError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    eprintln!("no mail queue at {} (nothing was ever queued)", path.display());
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
        MailCommand::Discard { passphrase_file, id, .. } => {
            let id: MailId = id.parse().map_err(|_| anyhow::anyhow!("`{id}` is not an entry id (16 hex digits)"))?;
            let pass = passphrase(passphrase_file.as_deref())?;
            let limits = cfg.mail.queue_limits();
            tokio::task::spawn_blocking(move || {
                let queue = MailQueue::open(&path, &pass, KdfParams::default(), limits)?;
                queue.discard(id)?;
                Ok::<_, MailQueueError>(())
            })
            .await??;
            println!("discarded {id}");
            Ok(())
        }
    }
}

/// The SMTP server's configuration from `[mail]`.
fn smtp_config(cfg: &ClientFile) -> anyhow::Result<SmtpConfig> {
    let m = &cfg.mail;
    let mut smtp = SmtpConfig {
        listen: m.listen,
        hostname: m.hostname.clone(),
        max_message_bytes: m.max_message_bytes,
        max_recipients: m.max_recipients,
        ..SmtpConfig::default()
    };
    if let (Some(cert), Some(key)) = (&m.tls_cert, &m.tls_key) {
        smtp = smtp.with_tls(SmtpTls::from_pem_files(cert, key).context("loading mail.tls_cert and mail.tls_key")?);
    }
    if let (Some(user), Some(file)) = (&m.auth_user, &m.auth_password_file) {
        let password = read_private_line(file).context("mail.auth_password_file")?;
        smtp = smtp.with_auth(SmtpAuth { username: user.clone(), password });
    }
    Ok(smtp)
}

/// The first line of a file that group and others cannot read.
fn read_private_line(file: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        anyhow::bail!("{} is readable by group or others (chmod 600 it)", file.display());
    }
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let line = text.lines().next().unwrap_or_default().to_string();
    if line.is_empty() {
        anyhow::bail!("{} is empty", file.display());
    }
    Ok(line)
}

/// `nox-client smtp`: the gateway until SIGINT or SIGTERM.
pub(crate) async fn smtp_main(mut cfg: ClientFile, args: SmtpArgs) -> anyhow::Result<()> {
    let listen = cfg.mail.listen;
    if !cfg.mail.listen_is_loopback() && !args.allow_remote {
        anyhow::bail!(
            "mail.listen {listen} is not a loopback address: whoever reaches the gateway sends mail as this user; \
             listen on 127.0.0.1, or pass --allow-remote if the address is reachable only by the user (and set \
             mail.auth_user and TLS)"
        );
    }
    let smtp = smtp_config(&cfg)?;
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;

    // The queue first: mail is accepted (and kept) even while the network
    // is still out of reach.
    let pass = passphrase(args.passphrase_file.as_deref())?;
    let (path, limits) = (cfg.mail.queue.clone(), cfg.mail.queue_limits());
    let queue = tokio::task::spawn_blocking(move || MailQueue::open(&path, &pass, KdfParams::default(), limits))
        .await?
        .with_context(|| format!("opening the mail queue {}", cfg.mail.queue.display()))?;
    // The schedule's snapshot from the start, network or not: `mail queue`
    // reads it while this process holds the queue's file.
    let snapshot = snapshot_path(&cfg.mail.queue);
    let (q, p) = (queue.clone(), snapshot.clone());
    tokio::task::spawn_blocking(move || write_snapshot(&q, &p))
        .await?
        .with_context(|| format!("writing the queue snapshot {}", snapshot.display()))?;
    let snapshots = tokio::spawn({
        let queue = queue.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let (q, p) = (queue.clone(), snapshot.clone());
                match tokio::task::spawn_blocking(move || write_snapshot(&q, &p)).await {
                    Ok(Err(e)) => tracing::warn!(error = %e, "writing the queue snapshot failed"),
                    Err(e) => tracing::warn!(error = %e, "the snapshot writer stopped"),
                    Ok(Ok(())) => {}
                }
            }
        }
    });
    let wake = Arc::new(Notify::new());
    let spool = GatewaySpool::new(queue.clone(), cfg.mail.scrub_options(), Arc::clone(&wake));
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding mail.listen {listen}"))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let server = SmtpServer::new(smtp, Arc::new(spool));
    let mut serving = tokio::spawn(server.serve(listener, stopped(stop_rx.clone())));
    tracing::info!(listen = %listen, "nox-client smtp: accepting mail; stop with SIGINT or SIGTERM");

    // Mail goes out one message at a time as the user sends it: cover
    // traffic is the proxy's business, not the gateway's.
    cfg.cover.enabled = false;
    let client_cfg = cfg.mail_client_config().context("building the client's configuration")?;
    let client = tokio::select! {
        // Every 5 s for as long as the network is out of reach: the gateway
        // keeps taking mail meanwhile.
        client = connect_retrying(
            &cfg, client_cfg, None, Duration::from_secs(5), "; mail is accepted and kept",
        ) => client.map(Arc::new),
        which = first_signal(&mut interrupt, &mut terminate) => {
            tracing::info!(signal = which, "stopping before the network was reached; queued mail stays queued");
            let _ = stop_tx.send(true);
            let _ = serving.await;
            snapshots.abort();
            return Ok(());
        }
    };
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            let _ = stop_tx.send(true);
            let _ = serving.await;
            snapshots.abort();
            return Err(e);
        }
    };
    let refresher = tokio::spawn(refresh(Arc::clone(&client), client.config().refresh_every));
    let sender = MailSender::new(queue.clone(), Arc::clone(&client), cfg.mail.sender_config(), Arc::clone(&wake));
    let sending = tokio::spawn(sender.run(stopped(stop_rx.clone())));
    tracing::info!("nox-client smtp: connected; sending queued mail through the mixnet");

    let served = tokio::select! {
        which = first_signal(&mut interrupt, &mut terminate) => {
            tracing::info!(signal = which, "stopping: sessions finish their message; unsent mail stays queued");
            let _ = stop_tx.send(true);
            (&mut serving).await
        }
        served = &mut serving => served,
    };
    let _ = stop_tx.send(true);
    let _ = sending.await;
    snapshots.abort();
    refresher.abort();
    let _ = refresher.await;
    shutdown_client(client).await;
    served.context("the SMTP server task")?;
    tracing::info!("stopped");
    Ok(())
}
