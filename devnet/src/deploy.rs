//! The contracts, deployed by `contracts/script/Deploy.s.sol` through forge:
//! the same script an operator of a real deployment runs.

use std::path::Path;
use std::process::Command;

use alloy::primitives::{Address, U256};

use crate::DevnetError;

/// Addresses printed by the deploy script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deployment {
    /// The staking token (a NoxTestToken minted to the deployer).
    pub token: Address,
    /// NoxRegistry.
    pub registry: Address,
    /// NoxPool.
    pub pool: Address,
    /// NoxPool's executor (the `msg.sender` of relayed calls).
    pub executor: Address,
    /// The registry's admin (the deployer).
    pub admin: Address,
    /// NoxCounter, the demonstration target of private calls (local chains only).
    pub counter: Address,
    /// NoxTestDollar (tUSD, six decimals), the token fees are paid in on local
    /// chains; 1e9 tUSD minted to the deployer.
    pub fee_token: Address,
}

/// Parameters of the deploy script.
#[derive(Debug, Clone)]
pub struct DeployParams {
    /// Minimum stake, in token base units.
    pub min_stake: U256,
    /// Seconds between `requestUnstake` and `executeUnstake` (at least 60:
    /// the devnet's chain id, 31337, is the only one allowed under a day).
    pub unstake_delay_secs: u64,
}

impl Default for DeployParams {
    fn default() -> Self {
        DeployParams {
            min_stake: U256::from(1_000u64) * U256::from(10u64).pow(U256::from(18u64)),
            unstake_delay_secs: 60,
        }
    }
}

/// Runs the deploy script against `rpc_url` with `deployer_key` and returns
/// the deployment.
pub fn deploy(
    root: &Path,
    rpc_url: &str,
    deployer_key: &str,
    params: &DeployParams,
) -> Result<Deployment, DevnetError> {
    let forge = root.join("node_modules/.bin/forge");
    if !forge.exists() {
        return Err(DevnetError::MissingTool(format!("{} (run `npm ci`)", forge.display())));
    }
    // One forge at a time in this process: on a fresh checkout the first
    // run compiles the contracts into `out/` and `cache/`, and parallel tests
    // would compile into them side by side.
    static FORGE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = FORGE.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(&forge)
        .current_dir(root)
        .args(["script", "contracts/script/Deploy.s.sol", "--rpc-url", rpc_url, "--broadcast", "--private-key"])
        .arg(deployer_key)
        .env("MIN_STAKE", params.min_stake.to_string())
        .env("UNSTAKE_DELAY", params.unstake_delay_secs.to_string())
        .output()
        .map_err(|e| DevnetError::Spawn { what: "forge script", source: e })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(DevnetError::Deploy(format!(
            "forge script failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let line = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("NOX_DEPLOYMENT="))
        .ok_or_else(|| DevnetError::Deploy(format!("no NOX_DEPLOYMENT line in forge's output:\n{stdout}")))?;
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| DevnetError::Deploy(format!("deployment JSON: {e}")))?;
    let addr = |k: &str| -> Result<Address, DevnetError> {
        v[k].as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| DevnetError::Deploy(format!("deployment JSON lacks `{k}`: {line}")))
    };
    Ok(Deployment {
        token: addr("token")?,
        registry: addr("registry")?,
        pool: addr("pool")?,
        executor: addr("executor")?,
        admin: addr("admin")?,
        counter: addr("counter")?,
        fee_token: addr("feeToken")?,
    })
}
