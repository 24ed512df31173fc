//! NoxRegistry on a real chain: starts anvil from `node_modules/.bin`, deploys
//! with the same forge script the devnet uses, registers three nodes through
//! JSON-RPC (commitment, then reveal in a later block), reads the
//! `NodeRegistered` events back with the Rust bindings, and checks the
//! contract's commitment and layer formulas and topology fingerprint against
//! the Rust implementations (the layer on 1,024 addresses and seeds).
//!
//! Needs `npm ci` to have run (scripts/test does it first).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, U256, keccak256};
use alloy_sol_types::{SolCall, SolEvent};
use nox_devnet::anvil::DEPLOYER_KEY;
use nox_protocol::contracts::{
    EXIT_LAYER, NoxPool, NoxRegistry, NoxTestToken, registration_commitment, relay_layer, topology_fingerprint,
};
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// anvil from `node_modules/.bin` in its own process group, killed with its
/// group when dropped (also when the test panics).
fn start_anvil() -> nox_devnet::anvil::Anvil {
    nox_devnet::anvil::Anvil::start(&repo_root(), None).expect("start anvil")
}

fn rpc_raw(url: &str, method: &str, params: Value) -> Result<Value, String> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let resp: Value =
        ureq::post(url).send_json(body).map_err(|e| e.to_string())?.into_json().map_err(|e| e.to_string())?;
    if let Some(err) = resp.get("error") {
        return Err(format!("{method}: {err}"));
    }
    Ok(resp["result"].clone())
}

fn rpc(url: &str, method: &str, params: Value) -> Value {
    rpc_raw(url, method, params).unwrap_or_else(|e| panic!("{e}"))
}

fn hex_bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap().trim_start_matches("0x")).unwrap()
}

/// Sends a transaction from an unlocked anvil account and requires success.
fn send(url: &str, from: Address, to: Address, data: Vec<u8>) {
    send_value(url, from, to, data, U256::ZERO);
}

/// Like `send`, with `value` wei attached.
fn send_value(url: &str, from: Address, to: Address, data: Vec<u8>, value: U256) {
    let hash = rpc(
        url,
        "eth_sendTransaction",
        json!([{ "from": from, "to": to, "data": format!("0x{}", hex::encode(data)), "value": format!("{value:#x}") }]),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let receipt = loop {
        let r = rpc(url, "eth_getTransactionReceipt", json!([hash]));
        if !r.is_null() {
            break r;
        }
        assert!(Instant::now() < deadline, "no receipt within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(receipt["status"], "0x1", "transaction reverted: {receipt}");
}

fn call(url: &str, to: Address, data: Vec<u8>) -> Vec<u8> {
    hex_bytes(&rpc(url, "eth_call", json!([{ "to": to, "data": format!("0x{}", hex::encode(data)) }, "latest"])))
}

/// Deploys with `contracts/script/Deploy.s.sol` (through the devnet's
/// deploy, which runs one forge at a time).
fn deploy_all(url: &str) -> nox_devnet::deploy::Deployment {
    nox_devnet::deploy::deploy(&repo_root(), url, DEPLOYER_KEY, &Default::default()).expect("deploy")
}

/// Deploys and returns (token, registry).
fn deploy(url: &str) -> (Address, Address) {
    let d = deploy_all(url);
    (d.token, d.registry)
}

fn selector(signature: &str) -> Vec<u8> {
    keccak256(signature.as_bytes())[..4].to_vec()
}

/// The deploy script's NoxPool on a real chain (its Poseidon libraries deployed
/// and linked by forge): deposits move its root exactly as the Rust tree moves.
#[test]
fn pool_on_anvil_tracks_the_rust_tree() {
    use ark_bn254::Fr;
    use nox_circuits::field::to_hex as fr_to_hex;
    use nox_circuits::note::commitment_from_secret;
    use nox_circuits::tree::{MerkleTree, TREE_DEPTH};

    let anvil = start_anvil();
    let url = &anvil.url();
    let d = deploy_all(url);
    let pool = d.pool;
    let from: Address = rpc(url, "eth_accounts", json!([])).as_array().unwrap()[1].as_str().unwrap().parse().unwrap();
    let root = || format!("0x{}", hex::encode(call(url, pool, selector("currentRoot()"))));

    let mut tree = MerkleTree::new(TREE_DEPTH);
    let empty = fr_to_hex(&tree.root());
    assert_eq!(root(), empty, "empty root");
    // Deposits queue their notes with a bounty (twice the pool's minimum
    // now); the root moves only when a flush inserts them.
    let bounty = U256::from_be_slice(&call(url, pool, selector("insertionBounty()"))) * U256::from(2u8);
    let mut queued = Vec::new();
    for (value, secret) in [(1_000_000_000_000_000_000u64, 7u64), (5, 8), (123_456_789, 9)] {
        let data = NoxPool::depositCall { value: U256::from(value), secret: U256::from(secret) }.abi_encode();
        send_value(url, from, pool, data, U256::from(value) + bounty);
        let leaf = commitment_from_secret(Fr::from(0u64), Fr::from(value), Fr::from(secret));
        queued.push((U256::from_str_radix(&fr_to_hex(&leaf)[2..], 16).unwrap(), bounty));
        assert_eq!(root(), empty, "a queued note is not in the root yet");
        tree.insert(leaf).unwrap();
    }
    // The three form the open segment: one flush inserts them, and the root is Rust's.
    let (leaves, bounties) = queued.into_iter().unzip();
    send(url, from, pool, NoxPool::flushCall { leaves, bounties }.abi_encode());
    assert_eq!(root(), fr_to_hex(&tree.root()), "root after flushing the three deposits");
    let executor = call(url, pool, selector("executor()"));
    assert_eq!(&executor[12..], d.executor.as_slice());
}

#[test]
fn registry_on_anvil_matches_the_rust_view() {
    let anvil = start_anvil();
    let url = &anvil.url();
    let (token, registry) = deploy(url);
    let accounts: Vec<Address> = rpc(url, "eth_accounts", json!([]))
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().parse().unwrap())
        .collect();
    let deployer = accounts[0];
    let stake = U256::from(1000u64) * U256::from(10u64).pow(U256::from(18u64));

    // Three operators: two relays and an exit. Each commits (with the stake),
    // then reveals in a later block.
    let operators = &accounts[1..4];
    let mut commit_blocks = Vec::new();
    for (i, op) in operators.iter().enumerate() {
        send(url, deployer, token, NoxTestToken::mintCall { to: *op, amount: stake }.abi_encode());
        send(url, *op, token, NoxTestToken::approveCall { spender: registry, value: stake }.abi_encode());
        let (key, salt) = (B256::repeat_byte(i as u8 + 1), B256::repeat_byte(0x50 + i as u8));
        let commitment = registration_commitment(key, *op, salt);
        let on_chain =
            call(url, registry, NoxRegistry::commitmentOfCall { identityKey: key, operator: *op, salt }.abi_encode());
        assert_eq!(B256::from_slice(&on_chain), commitment, "commitment formula");
        send(url, *op, registry, NoxRegistry::commitCall { commitment, amount: stake }.abi_encode());
        commit_blocks.push(
            u64::from_str_radix(rpc(url, "eth_blockNumber", json!([])).as_str().unwrap().trim_start_matches("0x"), 16)
                .unwrap(),
        );
        let register = NoxRegistry::registerCall {
            identityKey: key,
            multiaddr: format!("/ip4/127.0.0.1/tcp/{}", 9000 + i),
            role: if i == 2 { 1 } else { 0 },
            salt,
        };
        send(url, *op, registry, register.abi_encode());
    }

    // Events, decoded with the bindings.
    let logs = rpc(
        url,
        "eth_getLogs",
        json!([{ "address": registry, "fromBlock": "0x0", "toBlock": "latest", "topics": [NoxRegistry::NodeRegistered::SIGNATURE_HASH] }]),
    );
    let events: Vec<NoxRegistry::NodeRegistered> = logs
        .as_array()
        .unwrap()
        .iter()
        .map(|log| {
            let topics: Vec<B256> =
                log["topics"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().parse().unwrap()).collect();
            NoxRegistry::NodeRegistered::decode_raw_log(topics, &hex_bytes(&log["data"])).unwrap()
        })
        .collect();
    assert_eq!(events.len(), 3);
    for (i, (ev, op)) in events.iter().zip(operators).enumerate() {
        assert_eq!(ev.operator, *op);
        assert_eq!(ev.identityKey, B256::repeat_byte(i as u8 + 1));
        assert_eq!(ev.stake, stake);
        assert_eq!(ev.multiaddr, format!("/ip4/127.0.0.1/tcp/{}", 9000 + i));
        let block = rpc(url, "eth_getBlockByNumber", json!([format!("{:#x}", commit_blocks[i]), false]));
        let seed: B256 = block["hash"].as_str().unwrap().parse().unwrap();
        let expected_layer = if i == 2 { EXIT_LAYER } else { relay_layer(*op, seed) };
        assert_eq!(ev.layer, expected_layer, "layer of operator {i}");
    }

    // The fingerprint and the paged view agree with the Rust computation.
    let fp = call(url, registry, NoxRegistry::topologyFingerprintCall {}.abi_encode());
    assert_eq!(B256::from_slice(&fp), topology_fingerprint(operators));
    let page = NoxRegistry::nodesPageCall::abi_decode_returns(&call(
        url,
        registry,
        NoxRegistry::nodesPageCall { start: U256::ZERO, count: U256::from(10u64) }.abi_encode(),
    ))
    .unwrap();
    assert_eq!(page.operators, operators.to_vec());

    // The layer formula on 1,024 addresses and seeds: contract (eth_call) == Rust.
    let mut seen = [0usize; 2];
    for i in 0u32..1024 {
        let addr = Address::from_slice(&keccak256(i.to_be_bytes())[12..]);
        let seed = keccak256((i + 1).to_be_bytes());
        let out = call(url, registry, NoxRegistry::relayLayerCall { operator: addr, seed }.abi_encode());
        let on_chain = NoxRegistry::relayLayerCall::abi_decode_returns(&out).unwrap();
        assert_eq!(on_chain, relay_layer(addr, seed), "layer of {addr}");
        seen[usize::from(on_chain)] += 1;
    }
    assert!(seen[0] > 400 && seen[1] > 400, "layers are balanced: {seen:?}");
}

/// The ABIs the Rust bindings are generated from are the ones forge prints for
/// the contracts as they are now.
#[test]
fn committed_abis_match_the_contracts() {
    let root = repo_root();
    for name in ["NoxRegistry", "NoxTestToken", "NoxPool", "NoxCounter"] {
        let out = Command::new(root.join("node_modules/.bin/forge"))
            .current_dir(&root)
            .args(["inspect", name, "abi", "--json"])
            .output()
            .expect("run forge inspect");
        assert!(out.status.success(), "forge inspect {name}: {}", String::from_utf8_lossy(&out.stderr));
        let current: Value = serde_json::from_slice(&out.stdout).expect("forge ABI JSON");
        let committed: Value =
            serde_json::from_str(&std::fs::read_to_string(root.join(format!("protocol/abi/{name}.json"))).unwrap())
                .expect("committed ABI JSON");
        assert!(
            current == committed,
            "protocol/abi/{name}.json is stale: regenerate with `node_modules/.bin/forge inspect {name} abi --json > protocol/abi/{name}.json`"
        );
    }
}
