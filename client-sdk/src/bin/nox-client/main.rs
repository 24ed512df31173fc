//! `nox-client`: requests through the NOX mixnet from the command line, and
//! the local Ethereum JSON-RPC proxy a wallet points at.
//!
//! * `nox-client proxy --config FILE` serves `nox_client::proxy` on
//!   `[proxy].listen` until SIGINT or SIGTERM, with one `Client`;
//! * `nox-client echo --config FILE [TEXT]` sends one echo and prints
//!   `{"answer":…,"ms":…}`;
//! * `nox-client rpc --config FILE METHOD [PARAMS…]` sends one JSON-RPC call
//!   through the same method policy as the proxy and prints its result;
//! * `nox-client wallet new|deposit|balance|withdraw|insert --config FILE`
//!   manages the shielded wallet ([`wallet`]);
//! * `nox-client call --config FILE TARGET SIGNATURE [ARGS…] [--fee-token
//!   TOKEN]` makes a private call paid from the wallet (in ETH, or in a token
//!   priced by the `[prices]` oracles) and prints its receipt;
//! * `nox-client smtp --config FILE` runs the local SMTP gateway on
//!   `[mail].listen`: mail programs submit there, messages are scrubbed,
//!   queued sealed, and sent through the mixnet until an exit acknowledges
//!   them ([`mail`]); `nox-client mail queue|discard` shows and prunes the
//!   queue;
//! * `nox-client check-config --config FILE` explains what is wrong with a
//!   configuration.
//!
//! Exit codes: 0 done, 1 failed (the reason on stderr), 2 invalid
//! configuration. Logs go to stderr; stdout carries only the command's result.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use nox_client::config::{self, ClientFile};
use nox_client::proxy::{self, Backend};
use nox_client::{Client, ClientError};
use serde_json::Value;
use tokio::signal::unix::{Signal, SignalKind, signal};

mod mail;
mod wallet;

#[derive(Parser)]
#[command(
    name = "nox-client",
    version,
    about = "NOX client: requests through the mixnet, and a local Ethereum JSON-RPC proxy"
)]
struct Cli {
    /// A `tracing` filter for the log on stderr (default: `info` for the
    /// proxy, `warn` otherwise).
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Ethereum JSON-RPC proxy on [proxy].listen until SIGINT or SIGTERM.
    ///
    /// Connects to the network (retrying while it is not ready), learns the
    /// chain id from it unless [proxy].chain_id is set, then answers POST /
    /// with single requests and batches. Listens on loopback only unless
    /// --allow-remote: whoever reaches the proxy spends the user's anonymity.
    Proxy {
        /// The configuration file (`nox-client.toml`).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Accept a non-loopback [proxy].listen address.
        #[arg(long)]
        allow_remote: bool,
        /// Connection attempts before giving up (2 s apart).
        #[arg(long, value_name = "N", default_value_t = 30)]
        connect_tries: u32,
    },
    /// Send one echo through the mixnet and print {"answer":…,"ms":…}.
    Echo {
        /// The configuration file (`nox-client.toml`).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The text to echo.
        #[arg(default_value = "hello through NOX")]
        text: String,
    },
    /// Send one JSON-RPC call through the mixnet and print its result as JSON.
    ///
    /// Each parameter is a JSON value ('"0xabc…"', 'true', '{"to":"0x…"}'); a
    /// word that is not JSON is taken as a string (0xabc…, latest).
    Rpc {
        /// The configuration file (`nox-client.toml`).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The method, e.g. eth_blockNumber.
        method: String,
        /// The parameters, in order.
        params: Vec<String>,
    },
    /// The shielded wallet: create it, deposit, see the balance, withdraw, insert queued notes.
    Wallet {
        #[command(subcommand)]
        command: wallet::WalletCommand,
    },
    /// A private call: performed by an exit, paid from the wallet with a proof.
    ///
    /// The fee is paid in ETH, or with --fee-token in a token the exit lists,
    /// converted at the prices of the oracles in [prices] (their signed
    /// rounds come from the entry and are checked against those keys).
    /// Prints the relay transaction's hash, block, sender (the exit's wallet),
    /// whether the call succeeded, the gas, the fee (its asset, amount and
    /// worth in wei) and where the time went.
    Call {
        #[command(flatten)]
        call: wallet::CallArgs,
    },
    /// Run the local SMTP gateway on [mail].listen until SIGINT or SIGTERM.
    ///
    /// A mail program submits to it (SMTP, 127.0.0.1:2525 by default);
    /// each message is scrubbed of identifying headers, kept in the sealed
    /// queue ([mail].queue) before the `250`, and sent through the mixnet
    /// until an exit acknowledges it. Recipients `<group>@news.nox.invalid`
    /// post to a newsgroup instead.
    Smtp {
        #[command(flatten)]
        args: mail::SmtpArgs,
    },
    /// The outgoing mail queue: list it, discard an entry.
    Mail {
        #[command(subcommand)]
        command: mail::MailCommand,
    },
    /// Take the entry's descriptors and print, as JSON, every node caught
    /// signing two mix keys for one epoch: node id, epoch and both signed
    /// descriptors (hex), which anyone can verify again. Such a node is left
    /// out of this client's routes in that epoch.
    Equivocations {
        /// The configuration file (`nox-client.toml`).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a configuration file, with its NOX_CLIENT_* environment overrides.
    ///
    /// Prints `ok: FILE` and a summary, or every problem as `<key>: <message>`
    /// on stderr and exits with code 2.
    CheckConfig {
        /// The configuration file (`nox-client.toml`).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// Exit code for a configuration that does not load.
const INVALID_CONFIG: i32 = 2;

fn main() {
    let cli = Cli::parse();
    let (file, default_log) = match &cli.command {
        Command::Proxy { config, .. } => (config, "info"),
        Command::Wallet { command } => (command.config(), "warn"),
        Command::Call { call } => (&call.secrets.config, "warn"),
        Command::Smtp { args } => (&args.config, "info"),
        Command::Mail { command } => (command.config(), "warn"),
        Command::Echo { config, .. }
        | Command::Rpc { config, .. }
        | Command::Equivocations { config }
        | Command::CheckConfig { config } => (config, "warn"),
    };
    let Some(cfg) = load_config(file) else {
        std::process::exit(INVALID_CONFIG);
    };
    let outcome = match cli.command {
        Command::CheckConfig { config } => {
            check_config(&config, &cfg);
            Ok(())
        }
        command => init_logging(cli.log.as_deref().unwrap_or(default_log)).and_then(|()| run(command, cfg)),
    };
    if let Err(error) = outcome {
        eprintln!("error: {}", error_text(&error));
        std::process::exit(1);
    }
}

/// Loads `file` with its overrides; on failure prints every problem on
/// stderr and returns `None`.
fn load_config(file: &Path) -> Option<ClientFile> {
    config::load(file).map_err(|error| eprintln!("{}", nox_config::report(file, &error))).ok()
}

fn check_config(file: &Path, cfg: &ClientFile) {
    println!("ok: {}", file.display());
    println!("topology: {}", cfg.topology_summary());
    match &cfg.network.entry {
        Some(entry) => println!("entry: {entry}"),
        None => println!("entry: a random member of layer 0"),
    }
    let shape = match cfg.routes.shape {
        config::ShapeKind::Stratified => "stratified (entry, mix, exit)".to_string(),
        config::ShapeKind::Free => format!("free, {} hops", cfg.routes.hops),
    };
    println!("routes: {shape}, mean delay {} ms per hop", cfg.routes.mean_delay_ms);
    println!(
        "requests: {} attempt(s) of {} ms, answers up to {} bytes",
        cfg.requests.attempts, cfg.requests.attempt_timeout_ms, cfg.requests.max_reply_bytes
    );
    let chain = match cfg.proxy.chain_id {
        Some(id) => format!("chain {id}, answered locally"),
        None => "chain asked of the network at start".to_string(),
    };
    let remote = if cfg.proxy.listen_is_loopback() { "" } else { " (not loopback: needs --allow-remote)" };
    println!("proxy: {}{remote}, {chain}", cfg.proxy.listen);
    let p = &cfg.prices;
    if p.oracle_keys.is_empty() {
        println!("prices: no oracle keys (fees in ETH only)");
    } else {
        println!(
            "prices: {} oracle key(s), threshold {}, stale after {} s, fees in tokens with {} bps of headroom",
            p.oracle_keys.len(),
            p.effective_threshold(),
            p.max_age_secs,
            cfg.wallet.price_slippage_bps
        );
    }
}

/// Installs the `tracing` subscriber: `filter` on stderr.
fn init_logging(filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("--log `{filter}` is not a tracing filter"))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}

fn run(command: Command, cfg: ClientFile) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("nox-client")
        .build()
        .context("starting the tokio runtime")?;
    let outcome = runtime.block_on(async move {
        match command {
            Command::Proxy { allow_remote, connect_tries, .. } => proxy_main(cfg, allow_remote, connect_tries).await,
            Command::Echo { text, .. } => echo_main(cfg, text).await,
            Command::Rpc { method, params, .. } => rpc_main(cfg, method, params).await,
            Command::Equivocations { .. } => equivocations_main(cfg).await,
            Command::Wallet { command } => wallet::wallet_main(cfg, command).await,
            Command::Call { call } => wallet::call_main(cfg, call).await,
            Command::Smtp { args } => mail::smtp_main(cfg, args).await,
            Command::Mail { command } => mail::mail_main(cfg, command).await,
            Command::CheckConfig { .. } => Ok(()),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    outcome
}

/// `error` and its causes joined with `: `, leaving out a cause whose text
/// the line already holds.
fn error_text(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Connects a client, trying `tries` times 2 s apart while the network is not
/// ready (no member, no entry, no descriptors yet).
async fn connect(cfg: &ClientFile, tries: u32) -> anyhow::Result<Client> {
    let client_cfg = cfg.to_client_config().context("building the client's configuration")?;
    connect_retrying(cfg, client_cfg, Some(tries), Duration::from_secs(2), "").await
}

/// Connects with `client_cfg`, trying again `pause` apart while the network
/// is not ready, at most `tries` times (`None`: until it is); `waiting` is
/// added to the warning of each failed try. A configuration that can never
/// work fails at once.
async fn connect_retrying(
    cfg: &ClientFile,
    client_cfg: nox_client::ClientConfig,
    tries: Option<u32>,
    pause: Duration,
    waiting: &str,
) -> anyhow::Result<Client> {
    let mut attempt = 1;
    loop {
        match Client::connect(client_cfg.clone()).await {
            Ok(client) => return Ok(client),
            Err(e) if tries.is_none_or(|t| attempt < t) && not_ready(&e) => {
                tracing::warn!(
                    attempt,
                    error = %e,
                    "the NOX network ({}) is out of reach{waiting}; retrying in {pause:?}",
                    cfg.topology_summary()
                );
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("connecting to the NOX network ({}) after {attempt} attempt(s)", cfg.topology_summary())
                });
            }
        }
    }
}

/// A node id as `--exit` takes it.
fn parse_node_id(text: &str) -> anyhow::Result<nox_protocol::NodeId> {
    config::parse_node_id(text).map_err(anyhow::Error::msg)
}

/// Errors a later attempt may not meet: the network is starting or the
/// endpoint is briefly away. A bad static member will not get better.
fn not_ready(e: &ClientError) -> bool {
    !matches!(e, ClientError::StaticMember(_) | ClientError::Closed)
}

/// The chain the proxy's requests name: configured, or asked of the network.
async fn chain_id(cfg: &ClientFile, backend: &dyn Backend) -> anyhow::Result<u64> {
    match cfg.proxy.chain_id {
        Some(id) => Ok(id),
        None => {
            let id = proxy::learn_chain_id(backend, cfg.topology.chain_id)
                .await
                .context("learning the chain id from the network (set proxy.chain_id to skip this)")?;
            tracing::info!(chain_id = id, "the network's exits serve chain {id}");
            Ok(id)
        }
    }
}

async fn proxy_main(cfg: ClientFile, allow_remote: bool, connect_tries: u32) -> anyhow::Result<()> {
    let listen: SocketAddr = cfg.proxy.listen;
    if !cfg.proxy.listen_is_loopback() && !allow_remote {
        anyhow::bail!(
            "proxy.listen {listen} is not a loopback address: whoever reaches the proxy sends requests as this \
             user, spending the user's anonymity and seeing when the user's requests go out; listen on 127.0.0.1, \
             or pass --allow-remote if the address is reachable only by the user"
        );
    }
    // Signals first, so that one during the start is not lost; the port
    // next, so that a port in use fails before the network is contacted.
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding proxy.listen {listen}"))?;
    let client = tokio::select! {
        client = connect(&cfg, connect_tries.max(1)) => Arc::new(client?),
        which = first_signal(&mut interrupt, &mut terminate) => {
            tracing::info!(signal = which, "stopped before the network was reached");
            return Ok(());
        }
    };
    let chain_id = tokio::select! {
        id = chain_id(&cfg, client.as_ref()) => id,
        which = first_signal(&mut interrupt, &mut terminate) => {
            tracing::info!(signal = which, "stopped before the chain id was known");
            shutdown_client(client).await;
            return Ok(());
        }
    };
    let chain_id = match chain_id {
        Ok(id) => id,
        Err(e) => {
            shutdown_client(client).await;
            return Err(e);
        }
    };
    let refresher = tokio::spawn(refresh(client.clone(), client.config().refresh_every));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let backend: Arc<dyn Backend> = client.clone();
    let mut server = tokio::spawn(proxy::serve(listener, backend, cfg.proxy_config(chain_id), async move {
        let _ = stopped.await;
    }));
    tracing::info!(listen = %listen, chain_id, "nox-client proxy ready; stop with SIGINT or SIGTERM");
    let served = tokio::select! {
        which = first_signal(&mut interrupt, &mut terminate) => {
            tracing::info!(signal = which, "stopping: answering the requests in flight; a second signal exits at once");
            let _ = stop.send(());
            tokio::select! {
                served = &mut server => served,
                which = first_signal(&mut interrupt, &mut terminate) => {
                    server.abort();
                    refresher.abort();
                    anyhow::bail!("second {which}: exited before the requests in flight were answered");
                }
            }
        }
        served = &mut server => served,
    };
    refresher.abort();
    let _ = refresher.await;
    shutdown_client(client).await;
    served.context("the proxy task")?.context("serving the proxy")?;
    tracing::info!("stopped");
    Ok(())
}

/// Takes the members and descriptors again every `every` (next epoch's keys,
/// nodes that joined or left).
async fn refresh(client: Arc<Client>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = client.refresh().await {
            tracing::warn!(error = %e, "refreshing the members and descriptors failed; trying again later");
        }
    }
}

async fn shutdown_client(client: Arc<Client>) {
    if let Ok(client) = Arc::try_unwrap(client) {
        client.shutdown().await;
    }
}

async fn first_signal(interrupt: &mut Signal, terminate: &mut Signal) -> &'static str {
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

async fn echo_main(mut cfg: ClientFile, text: String) -> anyhow::Result<()> {
    // One request: no cover stream around it (see docs: the link shows it).
    cfg.cover.enabled = false;
    let client = connect(&cfg, 1).await?;
    let started = Instant::now();
    let answer = {
        let report = proxy::progress::WaitReport::start();
        client.call_with_progress(nox_protocol::payload::Request::Echo { data: text.into_bytes() }, report.sink()).await
    };
    let ms = started.elapsed().as_millis();
    client.shutdown().await;
    let answer = answer.context("echo through the mixnet")?;
    let out = serde_json::json!({ "answer": String::from_utf8_lossy(&answer), "ms": ms });
    println!("{out}");
    Ok(())
}

async fn equivocations_main(mut cfg: ClientFile) -> anyhow::Result<()> {
    cfg.cover.enabled = false;
    // Connecting takes the entry's descriptors, evidence included.
    let client = connect(&cfg, 1).await?;
    let evidence = client.equivocations();
    client.shutdown().await;
    let list: Vec<Value> = evidence
        .iter()
        .map(|e| {
            let [a, b] = e.descriptors();
            serde_json::json!({
                "node_id": hex::encode(e.node_id().0),
                "epoch": e.epoch(),
                "descriptors": [hex::encode(a.encode()), hex::encode(b.encode())],
            })
        })
        .collect();
    println!("{}", Value::Array(list));
    Ok(())
}

/// A command-line parameter: JSON if it parses, else a string.
fn param(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

async fn rpc_main(mut cfg: ClientFile, method: String, params: Vec<String>) -> anyhow::Result<()> {
    cfg.cover.enabled = false;
    let client = connect(&cfg, 1).await?;
    let outcome = async {
        let chain_id = chain_id(&cfg, &client).await?;
        let mut proxy_cfg = cfg.proxy_config(chain_id);
        proxy_cfg.progress = true;
        let params: Vec<Value> = params.iter().map(|p| param(p)).collect();
        let request = serde_json::json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        let response =
            proxy::answer(&client, &proxy_cfg, request).await.context("the call got no response (a notification)")?;
        if let Some(result) = response.get("result") {
            println!("{result}");
            return Ok(());
        }
        let code = response.pointer("/error/code").and_then(Value::as_i64).unwrap_or_default();
        let message = response.pointer("/error/message").and_then(Value::as_str).unwrap_or("no message");
        let data = response.pointer("/error/data").map(|d| format!(" (data: {d})")).unwrap_or_default();
        anyhow::bail!("{method}: JSON-RPC error {code}: {message}{data}")
    }
    .await;
    client.shutdown().await;
    outcome
}
