//! # nox-devnet
//!
//! A whole NOX network on one machine: anvil from `node_modules/.bin`, the
//! contracts deployed by the forge deploy script, N staked and registered
//! nodes that learn the topology only from NoxRegistry, run in-process or as
//! `nox run` processes. Used by `scripts/devnet` and by the end-to-end tests
//! in `devnet/tests/`.
//!
//! Everything started here is stopped when its handle is dropped, also when a
//! test panics: processes run in their own process groups and are killed
//! with them.

#![warn(missing_docs)]

pub mod anvil;
pub mod deploy;
pub mod network;
pub mod oracles;
pub mod price_apis;
pub mod wallet_side;
pub mod zk;

pub use network::{Devnet, DevnetNode, DevnetOptions, ExitTweak, Launch};
pub use wallet_side::{ProxyHandle, ShieldedUser, cast, start_proxy};

use std::path::{Path, PathBuf};
use std::process::Command;

/// What can go wrong while bringing a devnet up.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    /// A tool from `node_modules/.bin` or the `nox` binary is missing.
    #[error("missing tool: {0}")]
    MissingTool(String),
    /// A process or listener could not be started.
    #[error("starting {what}: {source}")]
    Spawn {
        /// What was being started.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The deploy script failed.
    #[error("deploying the contracts: {0}")]
    Deploy(String),
    /// An oracle failed to start or to configure.
    #[error("oracle: {0}")]
    Oracle(String),
    /// A chain request failed.
    #[error("chain: {0}")]
    Chain(String),
    /// A node failed to start or to configure.
    #[error("node {index}: {reason}")]
    Node {
        /// Index of the node in the devnet.
        index: usize,
        /// Why.
        reason: String,
    },
    /// Something did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The development spend keys could not be made or written.
    #[error("spend keys: {0}")]
    Zk(String),
    /// The mixnet client failed.
    #[error("client: {0}")]
    Client(String),
    /// A tool (cast) ran and failed.
    #[error("{tool} failed: {stderr}")]
    Tool {
        /// The command.
        tool: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// The sum of the samples of `name` in a Prometheus text exposition whose
/// labels include every one of `labels` (`kind="price"`, …); a sample without
/// labels counts when `labels` is empty.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> u64 {
    let (with_labels, without) = (format!("{name}{{"), format!("{name} "));
    text.lines()
        .filter(|l| (l.starts_with(&with_labels) || l.starts_with(&without)) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The repository root (the workspace this crate was built in).
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

/// The `nox` binary of the build this code belongs to: next to the running
/// executable (`cargo test --workspace` builds it there), or else built now
/// with cargo.
pub fn nox_binary() -> Result<PathBuf, DevnetError> {
    if let Ok(exe) = std::env::current_exe() {
        // target/<profile>/deps/<test> or target/<profile>/<binary>
        for dir in exe.ancestors().skip(1).take(2) {
            let bin = dir.join("nox");
            if bin.is_file() {
                return fresh(bin);
            }
        }
    }
    cargo_build("nox-node", "nox")
}

/// The `nox-client` binary of this checkout, built (or brought up to date)
/// with cargo first, in the profile of the running executable.
pub fn nox_client_binary() -> Result<PathBuf, DevnetError> {
    cargo_build("nox-client", "nox-client")
}

/// The `nox-oracle` binary of this checkout, built (or brought up to date)
/// with cargo first, in the profile of the running executable.
pub fn nox_oracle_binary() -> Result<PathBuf, DevnetError> {
    cargo_build("nox-oracle", "nox-oracle")
}

/// Builds (or brings up to date) `bin` of `package` with cargo, in the
/// profile of the running executable, and returns its path.
fn cargo_build(package: &str, bin: &str) -> Result<PathBuf, DevnetError> {
    let root = repo_root();
    let release = cfg!(not(debug_assertions));
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(&root).args(["build", "--quiet", "-p", package, "--bin", bin]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().map_err(|e| DevnetError::Spawn { what: "cargo build", source: e })?;
    if !status.success() {
        return Err(DevnetError::MissingTool(format!("`cargo build -p {package} --bin {bin}` failed")));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let path = target.join(if release { "release" } else { "debug" }).join(bin);
    if path.is_file() {
        Ok(path)
    } else {
        Err(DevnetError::MissingTool(format!("{} after building it", path.display())))
    }
}

/// `bin` if it is newer than every source it is built from; a binary older
/// than an edited source would run code the tests do not mean to test.
fn fresh(bin: PathBuf) -> Result<PathBuf, DevnetError> {
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let root = repo_root();
    let newest = ["node/src", "protocol/src", "node/Cargo.toml", "protocol/Cargo.toml", "Cargo.lock"]
        .iter()
        .filter_map(|p| newest_mtime(&root.join(p)))
        .max();
    match (built, newest) {
        (Some(b), Some(n)) if n > b => Err(DevnetError::MissingTool(format!(
            "{} is older than the node's sources: run `cargo build -p nox-node --bin nox` (cargo test --workspace builds it)",
            bin.display()
        ))),
        _ => Ok(bin),
    }
}

/// The latest modification time of `path` or of any file below it.
fn newest_mtime(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path).ok()?.filter_map(|e| e.ok()).filter_map(|e| newest_mtime(&e.path())).max()
}
