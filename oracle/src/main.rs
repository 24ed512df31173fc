//! `nox-oracle`: the NOX price oracle.
//!
//! * `nox-oracle keygen --key-file FILE` creates the oracle's Ed25519 key
//!   (mode 0600, never overwritten) and prints its public key, the value
//!   nodes list in `[prices] oracle_keys`;
//! * `nox-oracle public-key --config FILE` prints that public key again;
//! * `nox-oracle check-config --config FILE` explains what is wrong with a
//!   configuration (exit code 2);
//! * `nox-oracle run --config FILE` runs the oracle until SIGINT or SIGTERM.
//!
//! The work is the library's ([`nox_oracle::Oracle`]); this file maps
//! commands to it and errors to `error: …` on stderr.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use nox_oracle::config::{self, LogFormat, OracleConfig};
use nox_oracle::key_file;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(name = "nox-oracle", version, about = "NOX price oracle: fetches, aggregates, signs and gossips prices")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the oracle key file (mode 0600) and print its public key.
    ///
    /// Refuses to replace an existing file: nodes trust the public key, and a
    /// new key would need every node's configuration changed.
    Keygen {
        /// The key file to create (its directory is created with mode 0700).
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
    },
    /// Print the public key of `oracle.key_file` (hex, for `[prices] oracle_keys`).
    PublicKey {
        /// The configuration file (`nox-oracle.toml`).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a configuration file, with its NOX_ORACLE_* environment overrides.
    ///
    /// Prints `ok: FILE` and a summary, or every problem as `<key>: <message>`
    /// on stderr and exits with code 2.
    CheckConfig {
        /// The configuration file (`nox-oracle.toml`).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run the oracle until SIGINT or SIGTERM.
    Run {
        /// The configuration file (`nox-oracle.toml`).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// Exit code for a configuration that does not load.
const INVALID_CONFIG: i32 = 2;

fn main() {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Keygen { key_file } => keygen(&key_file),
        Command::PublicKey { config } => {
            let config = load_config_or_exit(&config);
            load_key(&config).map(|key| println!("{}", key_file::public_key_hex(&key)))
        }
        Command::CheckConfig { config: file } => {
            let config = load_config_or_exit(&file);
            println!("ok: {}", file.display());
            print_summary(&config);
            Ok(())
        }
        Command::Run { config } => run(load_config_or_exit(&config)),
    };
    if let Err(error) = outcome {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn keygen(path: &Path) -> anyhow::Result<()> {
    let key = key_file::generate(path).with_context(|| format!("creating the oracle key {}", path.display()))?;
    println!("{}", key_file::public_key_hex(&key));
    eprintln!(
        "wrote {}; put the public key above in every node's [prices] oracle_keys, and set oracle.key_file to this file",
        path.display()
    );
    Ok(())
}

/// Loads `file` with its environment overrides, or prints every problem and exits 2.
fn load_config_or_exit(file: &Path) -> OracleConfig {
    match config::load(file) {
        Ok(c) => c,
        Err(error) => {
            eprintln!("{}", nox_config::report(file, &error));
            std::process::exit(INVALID_CONFIG);
        }
    }
}

fn load_key(config: &OracleConfig) -> anyhow::Result<ed25519_dalek::SigningKey> {
    let path = &config.oracle.key_file;
    key_file::load(path).map_err(|error| {
        let context = if error.is_missing() {
            format!(
                "no oracle key at {} (oracle.key_file); create it with `nox-oracle keygen --key-file {}`",
                path.display(),
                path.display()
            )
        } else {
            format!("loading the oracle key {} (oracle.key_file)", path.display())
        };
        anyhow::Error::new(error).context(context)
    })
}

fn print_summary(config: &OracleConfig) {
    let sources: Vec<&str> = config.enabled_sources().iter().map(|s| s.name()).collect();
    let assets: Vec<&str> = config.assets.iter().map(|a| a.symbol.as_str()).collect();
    println!("chain id: {}", config.oracle.chain_id);
    println!("interval: {} ms", config.oracle.interval_ms);
    println!("sources: {}", sources.join(", "));
    println!("assets: {}", assets.join(", "));
    println!("bootstrap nodes: {}", config.p2p.bootstrap.len());
    println!("http: {}", config.http.listen);
}

fn run(config: OracleConfig) -> anyhow::Result<()> {
    let key = load_key(&config)?;
    init_logging(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("nox-oracle")
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let state_dir = config.oracle.state_dir.clone();
        let oracle = nox_oracle::Oracle::start_with_key(config, key)
            .await
            .with_context(|| format!("starting the oracle (state in {})", state_dir.display()))?;
        tracing::info!(http = %oracle.http_addr, "nox-oracle running; stop with SIGINT or SIGTERM");
        let which = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = which, "stopping");
        oracle.shutdown().await;
        Ok(())
    })
}

fn init_logging(config: &OracleConfig) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .with_context(|| format!("log.level `{}` is not a tracing filter", config.log.level))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    let installed = match config.log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}
