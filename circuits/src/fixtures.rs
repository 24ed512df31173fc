//! Proof fixtures for the forge tests of `NoxPool` (`contracts/test/NoxPool.t.sol`).
//!
//! The scenario is fixed and deterministic (seeded randomness, development
//! keys), so regenerating gives the same bytes: the forge test deploys the
//! token, the pool and the call target from fixed deployer accounts (their
//! addresses follow from the deployers' nonces, not from the code), makes
//! the deposits listed here, checks each root against the one computed here,
//! then submits the proofs.

use alloy_primitives::{Address, keccak256};
use ark_bn254::Fr;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde_json::{Value, json};

use crate::groth16::{Keys, ProofError, prove};
use crate::note::{Note, SpendingKey, address_to_fr};
use crate::pool::execution_hash;
use crate::poseidon::fr_to_hex;
use crate::solidity::proof_words;
use crate::spend::{Spend, SpendCircuit};
use crate::tree::{MerkleTree, TREE_DEPTH};

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

/// The address of the contract `deployer` creates with `nonce` (below 128):
/// keccak256(rlp([deployer, nonce]))[12..].
pub fn create_address(deployer: &Address, nonce: u8) -> Address {
    assert!(nonce < 0x80, "single-byte nonces only");
    let mut rlp = vec![0xd6, 0x94];
    rlp.extend_from_slice(deployer.as_slice());
    rlp.push(if nonce == 0 { 0x80 } else { nonce });
    Address::from_slice(&keccak256(&rlp)[12..])
}

const ETHER: u128 = 1_000_000_000_000_000_000;

fn word(f: &Fr) -> Value {
    Value::String(fr_to_hex(f))
}

fn uint(v: u128) -> Value {
    Value::String(format!("0x{v:x}"))
}

fn spend_json(keys: &Keys, spend: &Spend, rng: &mut ChaCha20Rng, data: &[u8]) -> Result<Value, ProofError> {
    let (public, witness) = spend.inputs(TREE_DEPTH).map_err(|e| ProofError::Snark(format!("fixture spend: {e}")))?;
    let proof = prove(keys, SpendCircuit::new(TREE_DEPTH, public, witness), rng)?;
    Ok(json!({
        "proof": proof_words(&proof).to_vec(),
        "inputs": public.to_vec().iter().map(word).collect::<Vec<_>>(),
        "data": format!("0x{}", hex::encode(data)),
        "changeCommitment": word(&public.change_commitment),
    }))
}

/// The fixtures as JSON, proved with `keys` (the development keys for the
/// committed file).
pub fn generate(keys: &Keys) -> Result<Value, ProofError> {
    let mut rng = ChaCha20Rng::seed_from_u64(0x6e6f78);
    let pool = create_address(&POOL_DEPLOYER, 0);
    let token = create_address(&TOKEN_DEPLOYER, 0);
    let target = create_address(&TARGET_DEPLOYER, 0);
    let noop = create_address(&NOOP_DEPLOYER, 0);
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
        tree.insert(note.commitment()).map_err(|e| ProofError::Snark(e.to_string()))?;
        deposits.push(json!({
            "asset": word(&note.asset),
            "value": uint(note.value),
            "secret": word(&note.secret()),
            "commitment": word(&note.commitment()),
            "rootAfter": word(&tree.root()),
        }));
    }
    let path = |i: u64| tree.path(i).map_err(|e| ProofError::Snark(e.to_string()));

    // ping(uint256) with 42: what the relayed calls do.
    let mut data = keccak256(b"ping(uint256)")[..4].to_vec();
    let mut arg = [0u8; 32];
    arg[31] = 42;
    data.extend_from_slice(&arg);

    let relay_eth = Spend {
        sk: alice.clone(),
        note: notes[0],
        index: 0,
        path: path(0)?,
        public_value: ETHER / 100,
        change: Note::new(eth, ETHER - ETHER / 100, alice.owner(), &mut rng),
        recipient: address_to_fr(&RELAYER.0.0),
        execution_hash: execution_hash(CHAIN_ID, &pool.0.0, &target.0.0, &data),
    };
    let relay_token = Spend {
        sk: bob.clone(),
        note: notes[1],
        index: 1,
        path: path(1)?,
        public_value: 5 * ETHER,
        change: Note::new(tok, 995 * ETHER, bob.owner(), &mut rng),
        recipient: address_to_fr(&RELAYER.0.0),
        execution_hash: execution_hash(CHAIN_ID, &pool.0.0, &target.0.0, &data),
    };
    // noop(): a call that does nothing, so that the relay's own gas shows.
    let noop_data = keccak256(b"noop()")[..4].to_vec();
    let relay_noop = Spend {
        sk: alice.clone(),
        note: notes[3],
        index: 3,
        path: path(3)?,
        public_value: ETHER / 100,
        change: Note::new(eth, ETHER - ETHER / 100, alice.owner(), &mut rng),
        recipient: address_to_fr(&RELAYER.0.0),
        execution_hash: execution_hash(CHAIN_ID, &pool.0.0, &noop.0.0, &noop_data),
    };
    let withdraw = Spend {
        sk: bob.clone(),
        note: notes[2],
        index: 2,
        path: path(2)?,
        public_value: ETHER / 2,
        change: Note::new(eth, 2 * ETHER - ETHER / 2, bob.owner(), &mut rng),
        recipient: address_to_fr(&RECIPIENT.0.0),
        execution_hash: execution_hash(CHAIN_ID, &pool.0.0, &[0u8; 20], &[]),
    };
    Ok(json!({
        "comment": "Generated by `cargo run -p nox-circuits --bin nox-zk -- fixtures`. Do not edit.",
        "chainId": CHAIN_ID,
        "pool": pool.to_string(),
        "token": token.to_string(),
        "target": target.to_string(),
        "noop": noop.to_string(),
        "relayer": RELAYER.to_string(),
        "recipient": RECIPIENT.to_string(),
        "deposits": deposits,
        "relayEth": spend_json(keys, &relay_eth, &mut rng, &data)?,
        "relayToken": spend_json(keys, &relay_token, &mut rng, &data)?,
        "withdraw": spend_json(keys, &withdraw, &mut rng, &[])?,
        "relayNoop": spend_json(keys, &relay_noop, &mut rng, &noop_data)?,
    }))
}

/// The fixtures as the committed file's text (pretty JSON and a newline).
pub fn generate_text(keys: &Keys) -> Result<String, ProofError> {
    let v = generate(keys)?;
    Ok(format!("{}\n", serde_json::to_string_pretty(&v).map_err(|e| ProofError::Snark(e.to_string()))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_addresses_follow_the_rlp_rule() {
        // A widely published example: the first contract of 0x6ac7…5ae0.
        let deployer: Address = "0x6ac7ea33f8831ea9dcc53393aaa88b25a785dbf0".parse().unwrap();
        assert_eq!(
            create_address(&deployer, 0),
            "0xcd234a471b72ba2f1ccf0a70fcaba648a5eecd8d".parse::<Address>().unwrap()
        );
        assert_eq!(
            create_address(&deployer, 1),
            "0x343c43a37d37dff08ae8c4a11544c718abb4fcf8".parse::<Address>().unwrap()
        );
    }
}
