//! `nox`: the NOX relay node.
//!
//! * `nox keygen` writes the node's identity and wallet keys;
//! * `nox check-config FILE` explains what is wrong with a configuration;
//! * `nox run --config FILE` runs the node until SIGINT or SIGTERM, then stops
//!   it cleanly (the replay caches are flushed to disk before the process exits);
//! * `nox register`, `nox status`, `nox unstake` and `nox withdraw-stake`
//!   (`--config FILE`) stake and register the node in NoxRegistry, show its
//!   record, and take the stake back; the transactions are
//!   `nox_eth::registry::operator`'s, the command-line side is [`registry`];
//!   this file maps their results to JSON on stdout and their errors to
//!   `error: …` on stderr with exit code 1.

mod registry;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use nox_eth::amount::TokenAmount;
use nox_node::config::{self, LogFormat, NodeConfig};
use nox_node::keys::{IDENTITY_FILE, KeyError, NodeKeys, WALLET_FILE};
use nox_node::node::{self, NodeOptions};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(name = "nox", version, about = "NOX mix network relay node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the node's identity (Ed25519) and wallet (secp256k1) keys.
    ///
    /// Writes `identity.key` and `wallet.key` (mode 0600) into DIR and prints the
    /// node id and wallet address as JSON.
    Keygen {
        /// Directory for the key files (created with mode 0700).
        #[arg(long, default_value = "./nox-keys")]
        dir: PathBuf,
        /// Replace existing key files (their keys are lost).
        #[arg(long)]
        force: bool,
    },
    /// Check a configuration file, with its NOX_* environment overrides.
    ///
    /// Prints `ok: FILE` and a summary, or every problem as `<key>: <message>`
    /// on stderr and exits with code 2.
    CheckConfig {
        /// The configuration file (`nox.toml`).
        file: PathBuf,
    },
    /// Run the node until SIGINT or SIGTERM.
    ///
    /// Loads and checks the configuration (exit code 2 if it is invalid, with
    /// the same messages as `check-config`), loads the keys from
    /// `node.keys_dir`, starts the node and, on SIGINT or SIGTERM, stops it and
    /// flushes its replay caches before exiting with code 0.
    Run {
        /// The configuration file (`nox.toml`).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Stake and register this node in NoxRegistry ([chain] of the config).
    ///
    /// Checks first what the registry would refuse (already registered,
    /// pending unstake, node id taken, stake below the minimum, too few tokens
    /// or no ETH, node.layer not the layer the registry assigns), then
    /// approves the stake token if needed and registers. Prints the result as
    /// JSON.
    Register {
        /// The configuration file (`nox.toml`).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Stake in whole tokens, up to 18 decimals (`1000`, `1000.5`);
        /// default: the registry's minimum stake.
        #[arg(long, value_name = "TOKENS")]
        stake: Option<TokenAmount>,
        /// The multiaddr other nodes dial; default: the first of
        /// p2p.external_addresses, else the first specific p2p.listen address.
        #[arg(long, value_name = "ADDR")]
        multiaddr: Option<String>,
    },
    /// Show this node's registry record, the wallet's funds and the epoch keys
    /// the running node has published, as JSON.
    Status {
        /// The configuration file (`nox.toml`).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Leave the network: the node leaves the topology at once and its stake
    /// can be withdrawn after the registry's unstake delay.
    Unstake {
        /// The configuration file (`nox.toml`).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Withdraw the stake once the unstake delay is over.
    WithdrawStake {
        /// The configuration file (`nox.toml`).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// The registry commands, once their configuration file is known.
enum OperatorCommand {
    Register { stake: Option<TokenAmount>, multiaddr: Option<String> },
    Status,
    Unstake,
    WithdrawStake,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Keygen { dir, force } => {
            let keys = NodeKeys::generate(&mut rand_core::OsRng);
            keys.write(&dir, force).with_context(|| format!("writing keys into {}", dir.display()))?;
            let out = serde_json::json!({
                "node_id": format!("0x{}", hex::encode(keys.node_id())),
                "wallet_address": keys.wallet_address().to_string(),
                "identity_key_file": dir.join(IDENTITY_FILE),
                "wallet_key_file": dir.join(WALLET_FILE),
            });
            println!("{out}");
        }
        Command::CheckConfig { file } => {
            let Some(config) = load_config(&file) else {
                std::process::exit(INVALID_CONFIG);
            };
            println!("ok: {}", file.display());
            print_summary(&config);
        }
        Command::Run { config } => {
            let Some(config) = load_config(&config) else {
                std::process::exit(INVALID_CONFIG);
            };
            run(config)?;
        }
        Command::Register { config, stake, multiaddr } => {
            operator_main(&config, OperatorCommand::Register { stake, multiaddr })
        }
        Command::Status { config } => operator_main(&config, OperatorCommand::Status),
        Command::Unstake { config } => operator_main(&config, OperatorCommand::Unstake),
        Command::WithdrawStake { config } => operator_main(&config, OperatorCommand::WithdrawStake),
    }
    Ok(())
}

/// Runs a registry command and exits: 0 with its JSON result on stdout, 1
/// with `error: …` on stderr, 2 if the configuration does not load.
fn operator_main(file: &Path, command: OperatorCommand) -> ! {
    let Some(config) = load_config(file) else {
        std::process::exit(INVALID_CONFIG);
    };
    match run_operator(&config, command) {
        Ok(json) => {
            println!("{json}");
            std::process::exit(0)
        }
        Err(error) => {
            eprintln!("error: {}", error_text(&error));
            std::process::exit(1)
        }
    }
}

/// `error` and its causes joined with `: `, leaving out a cause whose text the
/// line already holds (an I/O error's message is often repeated by its source).
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

/// The registry command's result as one line of JSON.
fn run_operator(config: &NodeConfig, command: OperatorCommand) -> anyhow::Result<String> {
    // A missing chain is the first thing to say, before the keys are looked for.
    registry::target(&config.chain)?;
    let keys = load_keys(&config.node.keys_dir)?;
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
    runtime.block_on(async {
        let json = match command {
            OperatorCommand::Register { stake, multiaddr } => {
                serde_json::to_string(&registry::register(config, &keys, stake, multiaddr).await?)
            }
            OperatorCommand::Status => serde_json::to_string(&registry::status(config, &keys).await?),
            OperatorCommand::Unstake => serde_json::to_string(&registry::unstake(config, &keys).await?),
            OperatorCommand::WithdrawStake => serde_json::to_string(&registry::withdraw_stake(config, &keys).await?),
        };
        json.context("encoding the result as JSON")
    })
}

/// Loads the node keys from `node.keys_dir`, saying how to create them if
/// they are missing.
fn load_keys(keys_dir: &Path) -> anyhow::Result<NodeKeys> {
    NodeKeys::load(keys_dir).map_err(|error| {
        let missing = matches!(&error, KeyError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound);
        let dir = keys_dir.display();
        let context = if missing {
            format!("no node keys in {dir} (node.keys_dir); generate them with `nox keygen --dir {dir}`")
        } else {
            format!("loading the node keys from {dir} (node.keys_dir)")
        };
        anyhow::Error::new(error).context(context)
    })
}

/// Exit code of `nox check-config`, `nox run` and the registry commands for a
/// configuration that does not load.
const INVALID_CONFIG: i32 = 2;

/// Loads `file` with its environment overrides; on failure prints every
/// problem on stderr and returns `None`.
fn load_config(file: &Path) -> Option<NodeConfig> {
    config::load(file).map_err(|error| eprintln!("{}", nox_config::report(file, &error))).ok()
}

/// `nox run`: starts the node and stops it on SIGINT or SIGTERM.
fn run(config: NodeConfig) -> anyhow::Result<()> {
    let keys = load_keys(&config.node.keys_dir)?;
    init_logging(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("nox")
        .build()
        .context("starting the tokio runtime")?;
    let outcome = runtime.block_on(async move {
        // Registered before the node starts, so that a signal arriving during
        // start-up is not lost (and does not kill the process uncleanly).
        let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let data_dir = config.node.data_dir.clone();
        let node = node::start(config, keys, NodeOptions::default())
            .await
            .with_context(|| format!("starting the node (data in {})", data_dir.display()))?;
        let listen: Vec<String> = node.listen_addrs.iter().map(|a| a.to_string()).collect();
        let public_http = node.public_http_addr.map(|a| a.to_string()).unwrap_or_else(|| "none".to_string());
        tracing::info!(
            node_id = %format!("0x{}", hex::encode(node.node_id.0)),
            layer = node.layer,
            p2p = %listen.join(","),
            http = %node.http_addr,
            public_http = %public_http,
            "nox running; stop with SIGINT or SIGTERM"
        );
        let which = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = which, "stopping; a second SIGINT or SIGTERM exits at once");
        tokio::select! {
            () = node.shutdown() => {}
            _ = interrupt.recv() => anyhow::bail!("second SIGINT: exited before the node had stopped"),
            _ = terminate.recv() => anyhow::bail!("second SIGTERM: exited before the node had stopped"),
        }
        tracing::info!("stopped");
        anyhow::Ok(())
    });
    // Stragglers the node spawned are not waited for beyond this: the replay
    // caches were flushed by `shutdown` above.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    outcome
}

/// Installs the global `tracing` subscriber from `[log]`.
fn init_logging(config: &NodeConfig) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .with_context(|| format!("log.level `{}` is not a tracing filter", config.log.level))?;
    // Colours only on a terminal: a log file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    let installed = match config.log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}

fn print_summary(config: &NodeConfig) {
    let role = match config.node.role {
        config::Role::Relay => "relay",
        config::Role::Exit => "exit",
    };
    println!("role: {role}, layer {}", config.node.layer);
    println!("p2p listen: {}", config.p2p.listen.join(", "));
    if !config.p2p.external_addresses.is_empty() {
        println!("p2p external: {}", config.p2p.external_addresses.join(", "));
    }
    match config.http.public_listen {
        Some(public) => println!("http listen: {} (public: {public})", config.http.listen),
        None => println!("http listen: {}", config.http.listen),
    }
    // Endpoints are counted, not printed: their URLs may carry API keys.
    match (config.chain.enabled(), &config.chain.registry) {
        (true, Some(registry)) => println!(
            "topology: NoxRegistry {registry} on chain {} via {} RPC endpoint(s), quorum {} \
             (confirmations {}, poll every {} ms)",
            config.chain.chain_id,
            config.chain.endpoints().len(),
            nox_eth::registry::follower::effective_quorum(
                usize::try_from(config.chain.rpc_quorum).unwrap_or(usize::MAX),
                config.chain.endpoints().len()
            ),
            config.chain.confirmations,
            config.chain.poll_interval_ms
        ),
        _ => println!("topology: {} static nodes (no chain: stake is not checked)", config.topology.nodes.len()),
    }
}
