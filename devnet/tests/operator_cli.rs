//! The operator commands (`nox register`, `nox status`, `nox unstake`,
//! `nox withdraw-stake`) as an operator runs them: the real `nox` binary
//! against anvil with the contracts deployed by the forge deploy script, a
//! fresh wallet funded with ETH and stake tokens, keys and a config file in a
//! temporary directory. Each test checks exit codes, messages and the
//! registry's and token's state on chain.
//!
//! Needs `npm ci` to have run (scripts/test does it first).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use alloy_sol_types::SolCall;
use nox_devnet::anvil::{Anvil, CHAIN_ID, DEPLOYER_KEY};
use nox_devnet::deploy::Deployment;
use nox_eth::registry::operator::{self as registry_operator, RegistryTarget};
use nox_node::keys::NodeKeys;
use nox_protocol::contracts::{NoxRegistry, NoxTestToken};
use serde_json::{Value, json};
use tempfile::TempDir;

/// 1,000 tokens of 18 decimals: the deploy script's default minimum stake.
fn tokens(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18u64))
}

// ---------------------------------------------------------------- the chain

/// anvil with the contracts deployed.
struct Chain {
    anvil: Anvil,
    deployment: Deployment,
}

impl Chain {
    fn start() -> Chain {
        let root = nox_devnet::repo_root();
        let anvil = Anvil::start(&root, None).expect("start anvil (run `npm ci` first)");
        let deployment =
            nox_devnet::deploy::deploy(&root, &anvil.url(), DEPLOYER_KEY, &Default::default()).expect("deploy");
        Chain { anvil, deployment }
    }

    fn url(&self) -> String {
        self.anvil.url()
    }

    fn rpc(&self, method: &str, params: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let resp: Value = ureq::post(&self.url()).send_json(body).unwrap().into_json().unwrap();
        assert!(resp.get("error").is_none(), "{method}: {resp}");
        resp["result"].clone()
    }

    /// A transaction from the deployer (anvil's unlocked account 0), required
    /// to succeed.
    fn send_as_deployer(&self, to: Address, data: Vec<u8>) {
        let tx = json!([{ "from": self.deployment.admin, "to": to, "data": format!("0x{}", hex::encode(data)) }]);
        let hash = self.rpc("eth_sendTransaction", tx);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let receipt = self.rpc("eth_getTransactionReceipt", json!([hash]));
            if !receipt.is_null() {
                assert_eq!(receipt["status"], "0x1", "deployer transaction reverted: {receipt}");
                return;
            }
            assert!(Instant::now() < deadline, "no receipt within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn view<C: SolCall>(&self, to: Address, call: C) -> C::Return {
        let out = self
            .rpc("eth_call", json!([{ "to": to, "data": format!("0x{}", hex::encode(call.abi_encode())) }, "latest"]));
        let bytes = hex::decode(out.as_str().unwrap().trim_start_matches("0x")).unwrap();
        C::abi_decode_returns(&bytes).unwrap()
    }

    fn node(&self, operator: Address) -> NoxRegistry::Node {
        self.view(self.deployment.registry, NoxRegistry::getNodeCall { operator })
    }

    fn token_balance(&self, account: Address) -> U256 {
        self.view(self.deployment.token, NoxTestToken::balanceOfCall { account })
    }

    fn mint(&self, to: Address, amount: U256) {
        self.send_as_deployer(self.deployment.token, NoxTestToken::mintCall { to, amount }.abi_encode());
    }

    fn set_eth(&self, account: Address, wei: U256) {
        self.rpc("anvil_setBalance", json!([account, format!("{wei:#x}")]));
    }

    /// Moves the chain's clock forward and mines a block at the new time.
    fn advance_time(&self, secs: u64) {
        self.rpc("evm_increaseTime", json!([secs]));
        self.rpc("evm_mine", json!([]));
    }
}

// ---------------------------------------------------------------- an operator

/// What goes into one config file.
#[derive(Clone)]
struct Settings {
    rpc_url: String,
    chain_id: u64,
    registry: Address,
    layer: u8,
    /// The admin listener `nox status` asks for published epoch keys.
    http: SocketAddr,
}

/// A node's keys and config files in a temporary directory.
struct Operator {
    dir: TempDir,
    keys: NodeKeys,
    p2p_port: u16,
}

static CONFIGS: AtomicUsize = AtomicUsize::new(0);

impl Operator {
    fn new() -> Operator {
        Operator::with_keys(NodeKeys::generate(&mut rand::rngs::OsRng))
    }

    fn with_keys(keys: NodeKeys) -> Operator {
        let dir = tempfile::tempdir().unwrap();
        keys.write(&dir.path().join("keys"), false).unwrap();
        Operator { dir, keys, p2p_port: nox_devnet::anvil::free_port().unwrap() }
    }

    /// A fresh operator holding `eth` wei and `stake_tokens` tokens.
    fn funded(chain: &Chain, eth: U256, stake_tokens: U256) -> Operator {
        let op = Operator::new();
        op.fund(chain, eth, stake_tokens);
        op
    }

    fn fund(&self, chain: &Chain, eth: U256, stake_tokens: U256) {
        chain.set_eth(self.wallet(), eth);
        if !stake_tokens.is_zero() {
            chain.mint(self.wallet(), stake_tokens);
        }
    }

    fn wallet(&self) -> Address {
        self.keys.wallet_address()
    }

    fn node_id(&self) -> String {
        format!("0x{}", hex::encode(self.keys.node_id()))
    }

    /// Settings that fit this operator on `chain`: the right chain id, and
    /// layer 0 (a relay's layer is known only once its commitment is mined).
    fn settings(&self, chain: &Chain) -> Settings {
        Settings {
            rpc_url: chain.url(),
            chain_id: CHAIN_ID,
            registry: chain.deployment.registry,
            layer: 0,
            http: closed_port_addr(),
        }
    }

    /// Runs the first step of `nox register` alone (as a run interrupted
    /// after its commitment would leave it).
    fn commit_only(&self, chain: &Chain) {
        let target = RegistryTarget { rpc_url: chain.url(), chain_id: CHAIN_ID, registry: chain.deployment.registry };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(registry_operator::commit_registration(&target, &self.keys.operator(), None)).unwrap();
    }

    fn write_config(&self, s: &Settings) -> PathBuf {
        let path = self.dir.path().join(format!("nox-{}.toml", CONFIGS.fetch_add(1, Ordering::Relaxed)));
        let text = format!(
            r#"[node]
keys_dir = "{keys}"
data_dir = "{data}"
role = "relay"
layer = {layer}

[p2p]
listen = ["/ip4/127.0.0.1/tcp/{port}"]

[chain]
rpc_url = "{rpc}"
chain_id = {chain_id}
registry = "{registry}"

[http]
listen = "{http}"
"#,
            keys = self.dir.path().join("keys").display(),
            data = self.dir.path().join("data").display(),
            layer = s.layer,
            port = self.p2p_port,
            rpc = s.rpc_url,
            chain_id = s.chain_id,
            registry = s.registry,
            http = s.http,
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs `nox <command> --config <config> <extra…>`.
    fn nox(&self, command: &str, config: &Path, extra: &[&str]) -> Outcome {
        nox(&[&[command, "--config", config.to_str().unwrap()], extra].concat())
    }
}

/// An address nothing listens on (a port that was free a moment ago).
fn closed_port_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], nox_devnet::anvil::free_port().unwrap()))
}

// ---------------------------------------------------------------- the binary

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// The JSON result of a command that must have succeeded.
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "expected success; stdout: {}\nstderr: {}", self.stdout, self.stderr);
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }

    /// A refusal: exit code 1 and `error: …` on stderr containing every part.
    fn refused(&self, parts: &[&str]) {
        assert_eq!(self.code, 1, "expected exit code 1; stdout: {}\nstderr: {}", self.stdout, self.stderr);
        assert!(self.stdout.is_empty(), "nothing on stdout on failure: {}", self.stdout);
        assert!(self.stderr.starts_with("error: "), "stderr: {}", self.stderr);
        for part in parts {
            assert!(self.stderr.contains(part), "stderr lacks `{part}`: {}", self.stderr);
        }
    }
}

fn nox(args: &[&str]) -> Outcome {
    let mut cmd = Command::new(nox_devnet::nox_binary().unwrap());
    cmd.args(args);
    // The test's own NOX_* variables must not override the config files.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("NOX_") {
            cmd.env_remove(name);
        }
    }
    let out = cmd.output().unwrap();
    let outcome = Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    // Shown when a test fails (or with --nocapture).
    println!("$ nox {} -> {}\n{}{}", args.join(" "), outcome.code, outcome.stdout, outcome.stderr);
    outcome
}

fn u256(v: &Value) -> U256 {
    v.as_str().unwrap_or_else(|| panic!("not a decimal string: {v}")).parse().unwrap()
}

/// A stand-in for a running node's admin listener: answers every request with
/// `body` as JSON.
fn fake_node_api(body: Value) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let body = body.to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    addr
}

// ---------------------------------------------------------------- tests

/// register → status → unstake → withdraw-stake, with every refusal an
/// operator meets on the way.
#[test]
fn test_register_status_unstake_withdraw() {
    let chain = Chain::start();
    let min = tokens(1000);
    let op = Operator::funded(&chain, tokens(10), min);
    let settings = op.settings(&chain);
    let config = op.write_config(&settings);

    // Before registering: no layer yet, its tokens, no record.
    let st = op.nox("status", &config, &[]).json();
    assert_eq!(st["registered"], false);
    assert_eq!(st["active"], false);
    assert_eq!(st["layer"], Value::Null);
    assert_eq!(u256(&st["committed_stake"]), U256::ZERO);
    assert_eq!(u256(&st["token_balance"]), min);
    assert_eq!(u256(&st["min_stake"]), min);
    assert_eq!(st["node_api"], "unreachable");

    // Register with the default stake (the minimum) and the listen address:
    // a commitment, then the reveal; the layer is the registry's.
    let reg = op.nox("register", &config, &[]).json();
    assert_eq!(u256(&reg["stake"]), min);
    assert_eq!(reg["node_id"], op.node_id());
    assert_eq!(reg["role"], "relay");
    assert!(reg["commit_tx_hash"].is_string(), "{reg}");
    let node = chain.node(op.wallet());
    assert!(node.registered);
    assert_eq!(node.stake, min);
    assert_eq!(reg["layer"], node.layer);
    assert_eq!(reg["configured_layer"], 0);
    if node.layer == 0 {
        assert_eq!(reg["layer_mismatch"], Value::Null);
    } else {
        let hint = reg["layer_mismatch"].as_str().unwrap();
        assert!(hint.contains("set node.layer = 1"), "{hint}");
    }
    assert_eq!(node.multiaddr, format!("/ip4/127.0.0.1/tcp/{}", op.p2p_port));
    assert_eq!(format!("0x{}", hex::encode(node.identityKey)), op.node_id());
    assert_eq!(chain.token_balance(op.wallet()), U256::ZERO, "the stake left the wallet");

    // Status, with a node API that knows two epoch keys of this node.
    let descriptor = |epoch| json!({ "epoch": epoch, "mix_key": format!("0x{}", "22".repeat(32)), "encoded": "0x" });
    let api = fake_node_api(json!({
        "node_id": op.node_id(),
        "layer": node.layer,
        "epoch": { "current": 41, "next": 42 },
        "nodes": [
            { "node_id": op.node_id(), "layer": node.layer, "addresses": [], "operator": null, "stake": null,
              "exit": null, "descriptors": [descriptor(41), descriptor(42)] },
            { "node_id": format!("0x{}", "11".repeat(32)), "layer": 1, "addresses": [], "operator": null,
              "stake": null, "exit": null, "descriptors": [descriptor(43)] },
        ],
    }));
    let with_api = op.write_config(&Settings { http: api, ..settings.clone() });
    let st = op.nox("status", &with_api, &[]).json();
    assert_eq!(st["registered"], true);
    assert_eq!(st["active"], true);
    assert_eq!(st["role"], "relay");
    assert_eq!(st["layer"], node.layer);
    assert_eq!(u256(&st["stake"]), min);
    assert_eq!(u256(&st["pending_unstake"]), U256::ZERO);
    assert_eq!(st["node_api"], "reachable");
    assert_eq!(st["epoch_keys_published"], json!([41, 42]));

    // Registering twice, withdrawing before unstaking.
    op.nox("register", &config, &[]).refused(&["already registered", &op.wallet().to_string()]);
    op.nox("withdraw-stake", &config, &[]).refused(&["no pending unstake"]);

    // Unstake: out of the topology, the stake pending.
    let un = op.nox("unstake", &config, &[]).json();
    assert_eq!(u256(&un["amount"]), min);
    let available_at = un["available_at"].as_u64().unwrap();
    let node = chain.node(op.wallet());
    assert!(!node.registered);
    assert_eq!(node.pendingUnstake, min);
    assert_eq!(node.unstakeAvailableAt, available_at);
    let st = op.nox("status", &config, &[]).json();
    assert_eq!(st["registered"], false);
    assert_eq!(st["active"], false);
    assert_eq!(u256(&st["pending_unstake"]), min);
    assert_eq!(st["unstake_available_at"], available_at);

    // While the unstake is pending: no second unstake, no new registration,
    // no withdrawal before the delay.
    op.nox("unstake", &config, &[]).refused(&["is not registered", "1000 tokens", "pending"]);
    op.nox("register", &config, &[]).refused(&["unstake of 1000 tokens", &available_at.to_string()]);
    op.nox("withdraw-stake", &config, &[]).refused(&["unstake delay is not over", &available_at.to_string()]);
    assert_eq!(chain.node(op.wallet()).pendingUnstake, min, "nothing was withdrawn");

    // After the delay the stake comes back.
    chain.advance_time(61);
    let wd = op.nox("withdraw-stake", &config, &[]).json();
    assert_eq!(u256(&wd["amount"]), min);
    assert_eq!(u256(&wd["token_balance"]), min);
    assert_eq!(chain.token_balance(op.wallet()), min);
    let node = chain.node(op.wallet());
    assert_eq!(node.pendingUnstake, U256::ZERO);
    assert!(!node.registered);
    op.nox("withdraw-stake", &config, &[]).refused(&["no pending unstake"]);
}

/// Everything `nox register` refuses before sending a transaction, a stake
/// in fractional tokens, and a revert decoded from the registry's errors.
#[test]
fn test_register_refusals() {
    let chain = Chain::start();
    let eth = tokens(10);

    // Too few tokens for the default stake.
    let poor = Operator::funded(&chain, eth, tokens(999));
    let config = poor.write_config(&poor.settings(&chain));
    poor.nox("register", &config, &[]).refused(&[
        "holds 999 tokens",
        "the stake is 1000 tokens",
        &chain.deployment.token.to_string(),
    ]);
    assert!(!chain.node(poor.wallet()).registered);
    assert_eq!(chain.token_balance(poor.wallet()), tokens(999), "nothing was spent");

    // Below the minimum, a malformed amount, then a fractional stake.
    let op = Operator::funded(&chain, eth, tokens(2000));
    let config = op.write_config(&op.settings(&chain));
    op.nox("register", &config, &["--stake", "500"])
        .refused(&["500 tokens", "below the registry's minimum stake of 1000 tokens"]);
    let malformed = op.nox("register", &config, &["--stake", "1e3"]);
    assert_eq!(malformed.code, 2, "a malformed flag is a usage error: {}", malformed.stderr);
    assert!(malformed.stderr.contains("not a token amount"), "{}", malformed.stderr);
    let too_precise = op.nox("register", &config, &["--stake", "0.0000000000000000001"]);
    assert_eq!(too_precise.code, 2, "{}", too_precise.stderr);
    assert!(too_precise.stderr.contains("more than 18 decimals"), "{}", too_precise.stderr);
    assert!(!chain.node(op.wallet()).registered);
    let reg =
        op.nox("register", &config, &["--stake", "1000.5", "--multiaddr", "/dns4/nox.example.org/tcp/9000"]).json();
    let stake = tokens(1000) + tokens(1) / U256::from(2u8);
    assert_eq!(u256(&reg["stake"]), stake);
    let node = chain.node(op.wallet());
    assert_eq!(node.stake, stake);
    assert_eq!(node.multiaddr, "/dns4/nox.example.org/tcp/9000");
    assert_eq!(chain.token_balance(op.wallet()), tokens(2000) - stake);

    // Another wallet with the same identity key.
    let other_wallet = NodeKeys::generate(&mut rand::rngs::OsRng).wallet;
    let twin = Operator::with_keys(NodeKeys { identity: op.keys.identity.clone(), wallet: other_wallet });
    twin.fund(&chain, eth, tokens(1000));
    let config = twin.write_config(&twin.settings(&chain));
    twin.nox("register", &config, &[]).refused(&["already registered by operator", &op.wallet().to_string()]);

    // Tokens but no ETH for gas.
    let dry = Operator::funded(&chain, U256::ZERO, tokens(1000));
    let config = dry.write_config(&dry.settings(&chain));
    dry.nox("register", &config, &[]).refused(&["not enough ETH to pay for gas"]);

    // A config for another chain.
    let config = dry.write_config(&Settings { chain_id: 1, ..dry.settings(&chain) });
    for command in ["register", "status", "unstake", "withdraw-stake"] {
        dry.nox(command, &config, &[]).refused(&["reports chain id 31337, but chain.chain_id is 1"]);
    }

    // The registry paused: refused before any transaction (no approval is spent).
    chain.send_as_deployer(chain.deployment.registry, NoxRegistry::pauseCall {}.abi_encode());
    let late = Operator::funded(&chain, eth, tokens(1000));
    let config = late.write_config(&late.settings(&chain));
    late.nox("register", &config, &[]).refused(&["is paused: it takes no registrations"]);
    assert!(!chain.node(late.wallet()).registered);
    assert_eq!(chain.token_balance(late.wallet()), tokens(1000));
}

/// A run interrupted after its commitment: `nox status` shows the stake
/// committed and the layer it gives, `nox register` reveals the same
/// commitment without a second one; `nox unstake` gives a commitment up; a
/// commitment for another node id is named, not overwritten.
#[test]
fn test_commitment_resumed_or_cancelled() {
    let chain = Chain::start();
    let min = tokens(1000);

    let op = Operator::funded(&chain, tokens(10), min);
    let config = op.write_config(&op.settings(&chain));
    op.commit_only(&chain);
    assert_eq!(chain.token_balance(op.wallet()), U256::ZERO, "the commitment holds the stake");
    chain.rpc("evm_mine", json!([]));
    let st = op.nox("status", &config, &[]).json();
    assert_eq!(st["registered"], false);
    assert_eq!(u256(&st["committed_stake"]), min);
    let layer = st["layer"].as_u64().expect("a revealable commitment has a layer");
    let reg = op.nox("register", &config, &[]).json();
    assert_eq!(reg["commit_tx_hash"], Value::Null, "no second commitment");
    assert_eq!(reg["layer"], layer);
    let node = chain.node(op.wallet());
    assert!(node.registered);
    assert_eq!(u64::from(node.layer), layer);

    // The same wallet committed for another node id: named, left alone.
    let other = Operator::funded(&chain, tokens(10), min);
    let config = other.write_config(&other.settings(&chain));
    let twin = Operator::with_keys(NodeKeys {
        identity: NodeKeys::generate(&mut rand::rngs::OsRng).identity,
        wallet: other.keys.wallet.clone(),
    });
    twin.commit_only(&chain);
    other
        .nox("register", &config, &[])
        .refused(&["registration commitment of 1000 tokens", "pending for another node id"]);

    // `nox unstake` gives it up: the stake waits for the unstake delay.
    let un = other.nox("unstake", &config, &[]).json();
    assert_eq!(u256(&un["amount"]), min);
    let node = chain.node(other.wallet());
    assert!(!node.registered);
    assert_eq!(node.pendingUnstake, min);
    other.nox("register", &config, &[]).refused(&["unstake of 1000 tokens"]);
    chain.advance_time(61);
    assert_eq!(u256(&other.nox("withdraw-stake", &config, &[]).json()["amount"]), min);
}

/// Failures that need no chain: a dead endpoint, missing keys, a config that
/// does not load or has no chain.
#[test]
fn test_without_a_chain() {
    let op = Operator::new();
    let dead = format!("http://{}", closed_port_addr());
    let settings = Settings {
        rpc_url: dead.clone(),
        chain_id: CHAIN_ID,
        registry: Address::repeat_byte(0x42),
        layer: 0,
        http: closed_port_addr(),
    };
    let config = op.write_config(&settings);
    for command in ["register", "status", "unstake", "withdraw-stake"] {
        let started = Instant::now();
        op.nox(command, &config, &[]).refused(&[&format!("cannot reach the RPC endpoint at {dead}")]);
        assert!(started.elapsed() < Duration::from_secs(15), "{command} gave up quickly");
    }

    // No keys in node.keys_dir.
    std::fs::remove_dir_all(op.dir.path().join("keys")).unwrap();
    op.nox("status", &config, &[]).refused(&["no node keys in", "nox keygen --dir"]);

    // A config that does not load: exit code 2, as `nox run`.
    let broken = op.dir.path().join("broken.toml");
    std::fs::write(&broken, "[chain]\nrpc_urll = \"http://127.0.0.1:1\"\n").unwrap();
    let out = nox(&["status", "--config", broken.to_str().unwrap()]);
    assert_eq!(out.code, 2, "stderr: {}", out.stderr);
    assert!(out.stderr.contains("rpc_urll"), "{}", out.stderr);

    // No [chain] at all.
    let no_chain = op.dir.path().join("no-chain.toml");
    std::fs::write(&no_chain, "[node]\nkeys_dir = \"/nonexistent\"\n").unwrap();
    nox(&["unstake", "--config", no_chain.to_str().unwrap()]).refused(&["no chain configured", "chain.rpc_url"]);
}
