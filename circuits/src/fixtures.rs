//! Proof fixtures for the forge tests of `NoxPool` (`contracts/test/NoxPool.t.sol`).
//!
//! The scenario is fixed and deterministic (seeded randomness, development
//! keys), so regenerating gives the same bytes: the forge test deploys the
//! token, the pool and the call target from fixed deployer accounts (their
//! addresses follow from the deployers' nonces, not from the code), makes
//! the deposits listed here, checks each root against the one computed here,
//! then submits the proofs.

use alloy_primitives::{Address, U256, keccak256};
use ark_bn254::Fr;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde_json::{Value, json};

use crate::field::to_hex;
use crate::groth16::{Keys, ProofError, prove};
use crate::note::{Note, SpendingKey, address_to_fr};
use crate::pool::{Execution, execution_hash, withdrawal_hash};
use crate::solidity::proof_words;
use crate::spend::{Spend, SpendCircuit, SpendError};
use crate::tree::{MerkleTree, TREE_DEPTH, TreeError};

/// Chain id of forge tests.
pub const CHAIN_ID: u64 = 31337;
/// Deploys the pool with its first transaction.
pub const POOL_DEPLOYER: Address = Address::new(addr(0x9001));
/// Deploys the test token with its first transaction.
pub const TOKEN_DEPLOYER: Address = Address::new(addr(0x7001));
/// Deploys the relay target with its first transaction.
pub const TARGET_DEPLOYER: Address = Address::new(addr(0x7a59));
/// Deploys the no-op target (the gas measurement's call) with its first transaction.
pub const NOOP_DEPLOYER: Address = Address::new(addr(0x0009));
/// The exit node that relays.
pub const RELAYER: Address = Address::new(addr(0x5e1a));
/// The withdrawal's recipient.
pub const RECIPIENT: Address = Address::new(addr(0xbeef));

const fn addr(n: u16) -> [u8; 20] {
    let mut a = [0u8; 20];
    a[18] = (n >> 8) as u8;
    a[19] = n as u8;
    a
}

/// The relays' deadline (a Unix time in 2033): the forge tests move the clock
/// past it to see a relay refused.
pub const DEADLINE: u64 = 2_000_000_000;
/// Gas the relayed ping must be given (it writes three storage words).
pub const PING_GAS: u64 = 100_000;
/// Gas the relayed no-op must be given (the reentrancy test puts a contract that
/// tries four calls at its address).
pub const NOOP_GAS: u64 = 200_000;

const ETHER: u128 = 1_000_000_000_000_000_000;

fn word(f: &Fr) -> Value {
    Value::String(to_hex(f))
}

fn uint(v: u128) -> Value {
    Value::String(format!("0x{v:x}"))
}

/// Why the fixtures could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// Proving failed.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// A spend of the scenario is not valid.
    #[error("fixture spend: {0}")]
    Spend(#[from] SpendError),
    /// The scenario's tree refused a leaf or a path.
    #[error("fixture tree: {0}")]
    Tree(#[from] TreeError),
    /// The JSON could not be written.
    #[error("fixture JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn spend_json(
    keys: &Keys,
    spend: &Spend,
    rng: &mut ChaCha20Rng,
    data: &[u8],
    call_gas: u64,
) -> Result<Value, FixtureError> {
    let (public, witness) = spend.inputs(TREE_DEPTH)?;
    let proof = prove(keys, SpendCircuit::new(TREE_DEPTH, public, witness), rng)?;
    Ok(json!({
        "proof": proof_words(&proof).to_vec(),
        "inputs": public.to_vec().iter().map(word).collect::<Vec<_>>(),
        "data": format!("0x{}", hex::encode(data)),
        "callGas": call_gas,
        "changeCommitment": word(&public.change_commitment),
    }))
}

/// The fixtures as JSON, proved with `keys` (the development keys for the
/// committed file).
pub fn generate(keys: &Keys) -> Result<Value, FixtureError> {
    let mut rng = ChaCha20Rng::seed_from_u64(0x6e6f78);
    let pool = POOL_DEPLOYER.create(0);
    let token = TOKEN_DEPLOYER.create(0);
    let target = TARGET_DEPLOYER.create(0);
    let noop = NOOP_DEPLOYER.create(0);
    let (eth, tok) = (Fr::from(0u64), address_to_fr(&token.0.0));

    let alice = SpendingKey::random(&mut rng);
    let bob = SpendingKey::random(&mut rng);
    let notes = [
        Note::new(eth, ETHER, alice.owner(), &mut rng),
        Note::new(tok, 1_000 * ETHER, bob.owner(), &mut rng),
        Note::new(eth, 2 * ETHER, bob.owner(), &mut rng),
        Note::new(eth, ETHER, alice.owner(), &mut rng),
    ];
    let mut tree = MerkleTree::new(TREE_DEPTH);
    let mut deposits = Vec::new();
    for note in &notes {
        tree.insert(note.commitment())?;
        deposits.push(json!({
            "asset": word(&note.asset),
            "value": uint(note.value),
            "secret": word(&note.secret()),
            "commitment": word(&note.commitment()),
            "rootAfter": word(&tree.root()),
        }));
    }
    // Spends the note at leaf `index`: `public_value` to `payee`, bound to
    // `call`, the change (the rest) back to the note's owner.
    let mut spend = |sk: &SpendingKey, index: u64, public_value: u128, payee: Address, call: Fr| {
        let note = notes[index as usize];
        Ok::<_, FixtureError>(Spend {
            sk: sk.clone(),
            note,
            index,
            path: tree.path(index)?,
            public_value,
            change: Note::new(note.asset, note.value - public_value, note.owner, &mut rng),
            recipient: address_to_fr(&payee.0.0),
            execution_hash: call,
        })
    };
    let relay_hash = |to: &Address, call_gas: u64, data: &[u8]| {
        execution_hash(&Execution {
            chain_id: CHAIN_ID,
            pool: &pool.0.0,
            target: &to.0.0,
            call_gas,
            deadline: DEADLINE,
            data,
        })
    };
    // ping(uint256) with 42: what the relayed calls do; noop(): a call that
    // does nothing, so that the relay's own gas shows.
    let mut ping = keccak256(b"ping(uint256)")[..4].to_vec();
    ping.extend_from_slice(&U256::from(42).to_be_bytes::<32>());
    let noop_data = keccak256(b"noop()")[..4].to_vec();

    let relay_eth = spend(&alice, 0, ETHER / 100, RELAYER, relay_hash(&target, PING_GAS, &ping))?;
    let relay_token = spend(&bob, 1, 5 * ETHER, RELAYER, relay_hash(&target, PING_GAS, &ping))?;
    let relay_noop = spend(&alice, 3, ETHER / 100, RELAYER, relay_hash(&noop, NOOP_GAS, &noop_data))?;
    let withdraw = spend(&bob, 2, ETHER / 2, RECIPIENT, withdrawal_hash(CHAIN_ID, &pool.0.0))?;
    Ok(json!({
        "comment": "Generated by `cargo run -p nox-circuits --bin nox-zk -- fixtures`. Do not edit.",
        "chainId": CHAIN_ID,
        "pool": pool.to_string(),
        "token": token.to_string(),
        "target": target.to_string(),
        "noop": noop.to_string(),
        "relayer": RELAYER.to_string(),
        "recipient": RECIPIENT.to_string(),
        "deadline": DEADLINE,
        "deposits": deposits,
        "relayEth": spend_json(keys, &relay_eth, &mut rng, &ping, PING_GAS)?,
        "relayToken": spend_json(keys, &relay_token, &mut rng, &ping, PING_GAS)?,
        "withdraw": spend_json(keys, &withdraw, &mut rng, &[], 0)?,
        "relayNoop": spend_json(keys, &relay_noop, &mut rng, &noop_data, NOOP_GAS)?,
    }))
}

/// The fixtures as the committed file's text (pretty JSON and a newline).
pub fn generate_text(keys: &Keys) -> Result<String, FixtureError> {
    Ok(format!("{}\n", serde_json::to_string_pretty(&generate(keys)?)?))
}
