//! `nox`: the NOX relay node.
//!
//! Implemented so far: `nox keygen` and `nox check-config`. Running a node
//! (`nox run`) arrives with the relay pipeline.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use nox_node::config::{self, ConfigError, NodeConfig};
use nox_node::keys::{IDENTITY_FILE, NodeKeys, WALLET_FILE};

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
            if let Err(code) = check_config(&file) {
                std::process::exit(code);
            }
        }
    }
    Ok(())
}

/// Exit code of `nox check-config` for a configuration that does not load.
const INVALID_CONFIG: i32 = 2;

/// `nox check-config FILE`: a summary on stdout, or every problem on stderr.
fn check_config(file: &Path) -> Result<(), i32> {
    match config::load(file) {
        Ok(config) => {
            println!("ok: {}", file.display());
            print_summary(&config);
            Ok(())
        }
        Err(ConfigError::Invalid(problems)) => {
            eprintln!("{}: {} invalid value(s)", file.display(), problems.len());
            for problem in problems {
                eprintln!("{problem}");
            }
            Err(INVALID_CONFIG)
        }
        Err(error) => {
            eprintln!("{}: {error}", file.display());
            Err(INVALID_CONFIG)
        }
    }
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
    println!("static nodes: {}", config.topology.nodes.len());
}
