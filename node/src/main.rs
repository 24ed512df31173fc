//! `nox`: the NOX relay node.
//!
//! Implemented so far: `nox keygen`. Running a node (`nox run`) and checking a
//! configuration (`nox check-config`) arrive with the relay pipeline.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
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
    }
    Ok(())
}
