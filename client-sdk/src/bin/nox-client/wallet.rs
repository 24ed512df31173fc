//! `nox-client wallet …` and `nox-client call …`: the shielded wallet and
//! private calls from the command line.
//!
//! The passphrase comes from `--passphrase-file` or `NOX_WALLET_PASSPHRASE`;
//! the funding key of deposits, direct withdrawals and forced insertions
//! from `--key-file` or `NOX_FUNDING_KEY` (hex). Results go to stdout as one
//! JSON object; progress (the proof, the wait) to stderr.
//!
//! NoxPool v2 queues every new note and inserts it with a later `flush`: a
//! deposit is spendable only once inserted. `wallet deposit --insert-now`
//! and `wallet insert` flush the wallet's queued notes from the funding key
//! (`Wallet::insert_now`); `call` waits for a flush by anyone, or inserts
//! with `--insert-now`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::signers::local::PrivateKeySigner;
use alloy_dyn_abi::{DynSolType, DynSolValue, JsonAbiExt};
use alloy_json_abi::Function;
use alloy_primitives::{Address, U256};
use anyhow::{Context, bail};
use clap::Subcommand;
use nox_client::Client;
use nox_client::chain_reader::MixnetReader;
use nox_client::config::{ClientFile, SyncVia};
use nox_client::private::{CallError, CallProgress, Fee, PrivateCall};
use nox_client::wallet::{Insertion, KdfParams, NoteState, PoolReader, Prover, Wallet, WalletError};
use nox_eth::EthClient;
use nox_eth::amount::{TokenAmount, format_token_amount};
use serde_json::{Value, json};

/// Chain id of local development chains: the only one the development
/// proving keys are accepted on.
const LOCAL_CHAIN_ID: u64 = 31337;

/// Timeout of one direct RPC request.
const RPC_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the wallet's secrets come from.
#[derive(clap::Args, Clone)]
pub(crate) struct Secrets {
    /// The configuration file (`nox-client.toml`).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// A file holding the wallet's passphrase (first line); default: the
    /// NOX_WALLET_PASSPHRASE environment variable.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

/// The funding key of public transactions.
#[derive(clap::Args, Clone)]
pub(crate) struct Funding {
    /// A file holding the hex private key that pays deposits, direct
    /// withdrawals and forced insertions; default: the NOX_FUNDING_KEY
    /// environment variable.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

/// `nox-client wallet …`
#[derive(Subcommand)]
pub(crate) enum WalletCommand {
    /// Create a wallet at [wallet].path (refuses to overwrite one).
    New {
        #[command(flatten)]
        secrets: Secrets,
    },
    /// Deposit ETH (or a token with --token) into NoxPool from the funding key.
    ///
    /// The transaction also pays the note's insertion bounty (twice the
    /// pool's minimum at the latest base fee). The note is queued; it is
    /// spendable once a flush inserts it: by anyone, or at once with
    /// --insert-now.
    Deposit {
        /// The amount in whole units (0.5, 100).
        #[arg(long)]
        amount: String,
        /// The ERC-20 token to deposit (approved and deposited in two transactions).
        #[arg(long, value_name = "ADDRESS")]
        token: Option<Address>,
        /// Token decimals (ETH: 18).
        #[arg(long, default_value_t = 18)]
        decimals: u8,
        /// Then insert the note from the funding key (flush its segment, once
        /// wallet.confirmations blocks confirm the deposit). This reveals
        /// nothing the deposit did not: the same address made the note.
        #[arg(long)]
        insert_now: bool,
        /// Seconds --insert-now waits for the deposit to be confirmed.
        #[arg(long, value_name = "SECS", default_value_t = 120)]
        insert_wait: u64,
        #[command(flatten)]
        secrets: Secrets,
        #[command(flatten)]
        funding: Funding,
    },
    /// Sync with the pool and print the balances and notes.
    Balance {
        #[command(flatten)]
        secrets: Secrets,
    },
    /// Withdraw from the pool to a public address, sent from the funding key.
    Withdraw {
        /// The recipient.
        #[arg(long, value_name = "ADDRESS")]
        to: Address,
        /// The amount in whole units.
        #[arg(long)]
        amount: String,
        /// The token withdrawn (default: ETH).
        #[arg(long, value_name = "ADDRESS")]
        token: Option<Address>,
        /// Token decimals (ETH: 18).
        #[arg(long, default_value_t = 18)]
        decimals: u8,
        #[command(flatten)]
        secrets: Secrets,
        #[command(flatten)]
        funding: Funding,
    },
    /// Insert this wallet's queued notes now: flush the pool's segments up to
    /// the one holding its last queued note, from the funding key.
    ///
    /// The pool pays the sender the bounty of the leaves inserted. Flushing a
    /// segment early shows that the sender cares about one of its notes: for
    /// a deposit from the same address that reveals nothing new, for change
    /// notes it links that address to the spends that made them (exits flush
    /// full segments on their own).
    Insert {
        #[command(flatten)]
        secrets: Secrets,
        #[command(flatten)]
        funding: Funding,
    },
}

impl WalletCommand {
    /// The configuration file the command names.
    pub(crate) fn config(&self) -> &PathBuf {
        match self {
            WalletCommand::New { secrets }
            | WalletCommand::Deposit { secrets, .. }
            | WalletCommand::Balance { secrets }
            | WalletCommand::Withdraw { secrets, .. }
            | WalletCommand::Insert { secrets, .. } => &secrets.config,
        }
    }
}

/// `nox-client call …`
#[derive(clap::Args)]
pub(crate) struct CallArgs {
    /// The contract to call.
    pub target: Address,
    /// The function, as cast takes it: `increment()`, `transfer(address,uint256)`.
    pub signature: String,
    /// The arguments, in order, as cast takes them (after `--` when one
    /// starts with a hyphen, such as a negative number).
    pub args: Vec<String>,
    /// Gas the call is given.
    #[arg(long, default_value_t = 200_000)]
    pub gas: u64,
    /// Pay even if the exit's simulation sees the call fail.
    #[arg(long)]
    pub allow_failure: bool,
    /// The exit to use (node id); default: a random exit that performs paid
    /// calls and accepts the fee's asset.
    #[arg(long, value_name = "NODE_ID")]
    pub exit: Option<String>,
    /// Pay the fee in this ERC-20 token (the wallet spends a note of it)
    /// instead of ETH. The exit must list the token, and [prices] must name
    /// the oracles that price it; the fee is the cost in wei converted at
    /// their median price, with the exit's margin and
    /// wallet.price_slippage_bps of headroom. wallet.max_fee_wei still caps
    /// its worth in wei.
    #[arg(long, value_name = "TOKEN")]
    pub fee_token: Option<Address>,
    /// Seconds from the proof to its deadline, after which the pool refuses
    /// the relay; default: wallet.call_deadline_secs.
    #[arg(long, value_name = "SECS")]
    pub deadline: Option<u64>,
    /// When only queued notes can pay, insert them at once from the funding
    /// key instead of waiting for a flush by anyone (for a change note this
    /// links that address to the spend that made it).
    #[arg(long)]
    pub insert_now: bool,
    /// Seconds to wait for notes on their way (unconfirmed, queued) before
    /// giving up.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub insert_wait: u64,
    #[command(flatten)]
    pub funding: Funding,
    #[command(flatten)]
    pub secrets: Secrets,
}

fn passphrase(secrets: &Secrets) -> anyhow::Result<String> {
    match &secrets.passphrase_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the passphrase from {}", path.display()))?;
            Ok(text.lines().next().unwrap_or_default().to_string())
        }
        None => std::env::var("NOX_WALLET_PASSPHRASE")
            .context("no passphrase: set NOX_WALLET_PASSPHRASE or pass --passphrase-file FILE"),
    }
}

fn funding_key(funding: &Funding) -> anyhow::Result<PrivateKeySigner> {
    let text = match &funding.key_file {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        None => std::env::var("NOX_FUNDING_KEY")
            .context("no funding key: set NOX_FUNDING_KEY or pass --key-file FILE (a hex private key)")?,
    };
    text.trim().parse::<PrivateKeySigner>().map_err(|_| anyhow::anyhow!("the funding key is not a hex private key"))
}

fn open(cfg: &ClientFile, secrets: &Secrets) -> anyhow::Result<Wallet> {
    let path = &cfg.wallet.path;
    let wallet = Wallet::open(path, &passphrase(secrets)?).with_context(|| format!("opening {}", path.display()))?;
    let pool = cfg.wallet.pool_address().map_err(anyhow::Error::msg)?;
    if wallet.pool() != pool || wallet.chain_id() != cfg.topology.chain_id {
        bail!(
            "{} is a wallet for pool {} on chain {}, but the configuration names pool {pool} on chain {}",
            path.display(),
            wallet.pool(),
            wallet.chain_id(),
            cfg.topology.chain_id
        );
    }
    Ok(wallet)
}

fn direct(cfg: &ClientFile, signer: Option<PrivateKeySigner>) -> anyhow::Result<EthClient> {
    let url = cfg.wallet.rpc_url.as_deref().context("wallet.rpc_url is not set (needed for this command)")?;
    EthClient::new(url, RPC_TIMEOUT, signer).context("wallet.rpc_url")
}

/// The proving keys: `wallet.proving_keys`, or the development keys on a local chain.
pub(crate) fn prover(cfg: &ClientFile) -> anyhow::Result<Prover> {
    match &cfg.wallet.proving_keys {
        Some(dir) => Prover::load(dir).with_context(|| format!("loading the proving keys from {}", dir.display())),
        None if cfg.topology.chain_id == LOCAL_CHAIN_ID => {
            eprintln!("preparing the development proving keys (local chain only; a few seconds)…");
            Prover::development().context("the development proving keys")
        }
        None => bail!(
            "wallet.proving_keys is not set: the development keys are only for chain {LOCAL_CHAIN_ID}, \
             and chain {} needs the keys its pool's verifier was made from",
            cfg.topology.chain_id
        ),
    }
}

fn amount(text: &str, decimals: u8) -> anyhow::Result<u128> {
    let parsed: TokenAmount = text.parse().with_context(|| format!("--amount {text}"))?;
    let units = parsed.to_base_units(decimals).with_context(|| format!("--amount {text}"))?;
    u128::try_from(units).map_err(|_| anyhow::anyhow!("--amount {text} exceeds what a note holds (2^128 - 1)"))
}

fn balances_json(wallet: &Wallet) -> Value {
    let balances: Vec<Value> = wallet
        .balances()
        .iter()
        .map(|b| {
            json!({
                "asset": asset_name(b.asset),
                "spendable": b.spendable.to_string(),
                "pending_change": b.pending_change.to_string(),
                "unconfirmed": b.unconfirmed_deposits.to_string(),
                "queued": b.queued.to_string(),
                "spending": b.spending.to_string(),
                "spendable_eth": b.asset.is_zero().then(|| format_token_amount(U256::from(b.spendable), 18)),
            })
        })
        .collect();
    let notes: Vec<Value> = wallet
        .notes()
        .iter()
        .map(|n| {
            json!({
                "asset": asset_name(n.asset),
                "value": n.value.to_string(),
                "state": n.state.name(),
                "leaf": n.leaf_index,
            })
        })
        .collect();
    json!({
        "synced_block": wallet.synced_block(),
        "leaves": wallet.leaf_count(),
        "queued_leaves": wallet.queued_count(),
        "balances": balances,
        "notes": notes,
    })
}

fn asset_name(asset: Address) -> String {
    nox_client::fee::asset_label(asset)
}

/// Syncs `wallet` as `wallet.sync` says: through the mixnet (connecting a
/// client) or directly.
async fn sync(cfg: &ClientFile, wallet: &mut Wallet, client: Option<&Client>) -> anyhow::Result<()> {
    let confirmations = cfg.wallet.confirmations;
    let report = match (cfg.wallet.sync, client) {
        (SyncVia::Mixnet, Some(client)) => {
            let reader = MixnetReader::new(client, wallet.chain_id());
            wallet.sync(&reader as &dyn PoolReader, confirmations).await
        }
        (SyncVia::Mixnet, None) => {
            let client = crate::connect(cfg, 1).await?;
            let reader = MixnetReader::new(&client, wallet.chain_id());
            let r = wallet.sync(&reader as &dyn PoolReader, confirmations).await;
            client.shutdown().await;
            r
        }
        (SyncVia::Direct, _) => {
            let eth = direct(cfg, None)?;
            wallet.sync(&eth as &dyn PoolReader, confirmations).await
        }
    };
    report.context("syncing the wallet with the pool")?;
    Ok(())
}

pub(crate) async fn wallet_main(mut cfg: ClientFile, command: WalletCommand) -> anyhow::Result<()> {
    cfg.cover.enabled = false;
    match command {
        WalletCommand::New { secrets } => {
            let pool = cfg.wallet.pool_address().map_err(anyhow::Error::msg)?;
            let path = &cfg.wallet.path;
            let wallet = Wallet::create(
                path,
                &passphrase(&secrets)?,
                cfg.topology.chain_id,
                pool,
                cfg.wallet.pool_start_block,
                KdfParams::default(),
            )
            .with_context(|| format!("creating {}", path.display()))?;
            println!(
                "{}",
                json!({ "wallet": path.display().to_string(), "chain_id": wallet.chain_id(), "pool": wallet.pool() })
            );
        }
        WalletCommand::Deposit { amount: text, token, decimals, insert_now, insert_wait, secrets, funding } => {
            let mut wallet = open(&cfg, &secrets)?;
            let eth = direct(&cfg, Some(funding_key(&funding)?))?;
            let value = amount(&text, decimals)?;
            let deposit = match token {
                None => wallet.deposit_eth(&eth, value).await,
                Some(token) => wallet.deposit_erc20(&eth, token, value).await,
            }
            .context("depositing")?;
            let insertion = if insert_now {
                insert_deposit(&cfg, &mut wallet, &eth, deposit.commitment, Duration::from_secs(insert_wait)).await?
            } else {
                None
            };
            println!(
                "{}",
                json!({
                    "tx": deposit.tx_hash.to_string(),
                    "asset": asset_name(token.unwrap_or(Address::ZERO)),
                    "value": value.to_string(),
                    "bounty_wei": deposit.bounty.to_string(),
                    "leaf": deposit.leaf_index,
                    "from": eth.sender().map(|a| a.to_string()),
                    "insert": insertion.as_ref().map(insertion_json),
                })
            );
        }
        WalletCommand::Balance { secrets } => {
            let mut wallet = open(&cfg, &secrets)?;
            sync(&cfg, &mut wallet, None).await?;
            println!("{}", balances_json(&wallet));
        }
        WalletCommand::Withdraw { to, amount: text, token, decimals, secrets, funding } => {
            let mut wallet = open(&cfg, &secrets)?;
            sync(&cfg, &mut wallet, None).await?;
            let prover = prover(&cfg)?;
            let eth = direct(&cfg, Some(funding_key(&funding)?))?;
            let value = amount(&text, decimals)?;
            let w = wallet
                .withdraw_direct(&eth, &prover, to, token.unwrap_or(Address::ZERO), value)
                .await
                .context("withdrawing")?;
            println!("{}", json!({ "tx": w.tx_hash.to_string(), "to": to, "value": value.to_string() }));
        }
        WalletCommand::Insert { secrets, funding } => {
            let mut wallet = open(&cfg, &secrets)?;
            let eth = direct(&cfg, Some(funding_key(&funding)?))?;
            let insertion = wallet.insert_now(&eth, cfg.wallet.confirmations).await.context("inserting")?;
            match insertion {
                Some(i) => println!("{}", insertion_json(&i)),
                None => println!("{}", json!({ "tx": null, "count": 0 })),
            }
        }
    }
    Ok(())
}

fn insertion_json(i: &Insertion) -> Value {
    json!({
        "tx": i.tx_hash.to_string(),
        "block": i.block,
        "first": i.first,
        "count": i.count,
        "bounty_paid_wei": i.bounty_paid.to_string(),
    })
}

/// `deposit --insert-now`: waits (every 2 s, up to `wait`) for the deposit
/// to be confirmed queued, then inserts it; `None` when someone else
/// inserted it first.
async fn insert_deposit(
    cfg: &ClientFile,
    wallet: &mut Wallet,
    eth: &EthClient,
    commitment: ark_bn254::Fr,
    wait: Duration,
) -> anyhow::Result<Option<Insertion>> {
    let until = Instant::now() + wait;
    loop {
        if let Some(i) = wallet.insert_now(eth, cfg.wallet.confirmations).await.context("inserting the deposit")? {
            return Ok(Some(i));
        }
        let state = wallet.notes().iter().find(|n| n.commitment == commitment).map(|n| n.state);
        if state != Some(NoteState::Deposited) {
            return Ok(None);
        }
        if Instant::now() >= until {
            bail!(
                "the deposit is not confirmed after {} s (wallet.confirmations = {}); insert it later with \
                 `nox-client wallet insert`",
                wait.as_secs(),
                cfg.wallet.confirmations
            );
        }
        eprintln!("waiting for the deposit to be confirmed before inserting it…");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Encodes `signature` with `args` as cast does: `increment()`,
/// `transfer(address,uint256) 0xab… 5`.
pub(crate) fn encode_call(signature: &str, args: &[String]) -> anyhow::Result<Vec<u8>> {
    let function = Function::parse(signature).with_context(|| format!("`{signature}` is not a function signature"))?;
    if function.inputs.len() != args.len() {
        bail!("{signature} takes {} argument(s), {} given", function.inputs.len(), args.len());
    }
    let values = function
        .inputs
        .iter()
        .zip(args)
        .map(|(param, arg)| {
            let ty: DynSolType = param.selector_type().parse().with_context(|| format!("type {}", param.ty))?;
            ty.coerce_str(arg).with_context(|| format!("`{arg}` is not a {}", param.ty))
        })
        .collect::<anyhow::Result<Vec<DynSolValue>>>()?;
    function.abi_encode_input(&values).with_context(|| format!("encoding the arguments of {signature}"))
}

pub(crate) async fn call_main(mut cfg: ClientFile, call: CallArgs) -> anyhow::Result<()> {
    cfg.cover.enabled = false;
    let calldata = encode_call(&call.signature, &call.args)?;
    let mut wallet = open(&cfg, &call.secrets)?;
    let prover = Arc::new(prover(&cfg)?);
    let client = crate::connect(&cfg, 1).await?;
    let outcome = async {
        sync(&cfg, &mut wallet, Some(&client)).await?;
        let mut request = PrivateCall::new(call.target, calldata, call.gas);
        request.allow_failure = call.allow_failure;
        request.timeout = Duration::from_millis(cfg.wallet.call_timeout_ms);
        request.deadline_secs = call.deadline.unwrap_or(cfg.wallet.call_deadline_secs);
        let (min, max) = (nox_client::config::MIN_CALL_DEADLINE_SECS, nox_client::config::MAX_CALL_DEADLINE_SECS);
        if !(min..=max).contains(&request.deadline_secs) {
            bail!("--deadline must be from {min} to {max} seconds, got {}", request.deadline_secs);
        }
        request.max_fee = cfg.wallet.max_fee().map_err(anyhow::Error::msg)?;
        request.price_slippage_bps = cfg.wallet.price_slippage_bps;
        if let Some(token) = call.fee_token.filter(|t| !t.is_zero()) {
            let trust = cfg.price_trust()?.context(
                "--fee-token needs the oracles that price the token: set [prices] oracle_keys (and threshold)",
            )?;
            request = request.paid_in(token, trust);
        }
        if let Some(exit) = &call.exit {
            request.exit = Some(crate::parse_node_id(exit)?);
        }
        let started = Instant::now();
        let mut waited = false;
        let outcome = loop {
            match client.private_call(&mut wallet, &prover, &request, report_progress).await {
                Err(CallError::Wallet(
                    e @ (WalletError::OnlyQueued { .. }
                    | WalletError::OnlyPendingChange { .. }
                    | WalletError::OnlyUnconfirmedDeposit { .. }),
                )) if !waited => {
                    waited = true;
                    eprintln!("{e}");
                    notes_on_their_way(&cfg, &call, &mut wallet, &client, request.asset).await?;
                }
                other => break other.context("the private call")?,
            }
        };
        let r = &outcome.receipt;
        println!(
            "{}",
            json!({
                "tx": format!("0x{}", hex::encode(r.tx_hash)),
                "block": r.block_number,
                "from": outcome.exit_wallet,
                "tx_success": r.tx_success,
                "call_success": r.call_success,
                "revert_data": (!r.revert_data.is_empty()).then(|| format!("0x{}", hex::encode(&r.revert_data))),
                "gas_used": r.gas_used,
                "fee_asset": asset_name(outcome.asset),
                "fee": outcome.fee.to_string(),
                "fee_units": format_token_amount(U256::from(outcome.fee), outcome.fee_decimals),
                "fee_wei": outcome.fee_wei.to_string(),
                "ms": {
                    "total": started.elapsed().as_millis() as u64,
                    "fees": outcome.timings.fees_ms,
                    "prove": outcome.timings.prove_ms,
                    "round_trip": outcome.timings.round_trip_ms,
                    "simulate": outcome.timings.simulate_ms,
                    "inclusion": outcome.timings.inclusion_ms,
                },
            })
        );
        Ok(())
    }
    .await;
    client.shutdown().await;
    outcome
}

/// Only notes on their way (unconfirmed, queued) can pay: waits for them,
/// syncing every 2 s, until the spendable balance of `asset` grows or
/// nothing is on its way; with `--insert-now`, inserts the queued notes from
/// the funding key first. Exits flush full segments of queued leaves on
/// their own; a lone note can wait in the open segment until it fills.
async fn notes_on_their_way(
    cfg: &ClientFile,
    call: &CallArgs,
    wallet: &mut Wallet,
    client: &Client,
    asset: Address,
) -> anyhow::Result<()> {
    let balance = |w: &Wallet| w.balances().into_iter().find(|b| b.asset == asset).unwrap_or_default();
    let before = balance(wallet).spendable;
    let until = Instant::now() + Duration::from_secs(call.insert_wait);
    let mut inserted = false;
    eprintln!("waiting up to {} s for the notes on their way into the pool's tree", call.insert_wait);
    loop {
        let b = balance(wallet);
        if b.spendable > before || b.queued + b.pending_change + b.unconfirmed_deposits == 0 {
            return Ok(());
        }
        if call.insert_now && !inserted && b.queued > 0 {
            inserted = true;
            eprintln!("inserting the wallet's queued notes now from the funding key");
            let eth = direct(cfg, Some(funding_key(&call.funding)?))?;
            match wallet.insert_now(&eth, cfg.wallet.confirmations).await.context("inserting the queued notes")? {
                Some(i) => eprintln!("inserted leaves {}..{} (tx {})", i.first, i.first + i.count, i.tx_hash),
                None => eprintln!("nothing of this wallet was queued on chain; syncing"),
            }
        }
        if Instant::now() >= until {
            bail!(
                "the only notes large enough are still on their way into the pool's tree after {} s (queued notes \
                 wait for a flush: exits flush full segments of {} leaves); try again later, or pass --insert-now to \
                 insert them from the funding key (which, for a change note, links that address to the spend \
                 that made it)",
                call.insert_wait,
                nox_protocol::contracts::POOL_BATCH
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        sync(cfg, wallet, Some(client)).await?;
    }
}

fn report_progress(p: CallProgress) {
    match p {
        CallProgress::ExitChosen { wallet, .. } => eprintln!("exit chosen: pays from {wallet}"),
        CallProgress::Prices(tally) => eprintln!("prices: {tally}"),
        CallProgress::Fee { fee, gas_price } => eprintln!("fee: {} (gas at {gas_price} wei)", show_fee(&fee)),
        CallProgress::Proved { ms } => eprintln!("proof built in {ms} ms"),
        CallProgress::Sent { attempt } => {
            eprintln!("sent through the mixnet (attempt {attempt}); waiting for inclusion…")
        }
        CallProgress::Repricing { required, fee } => eprintln!(
            "the exit asks {} base units of {}; proving again at {}",
            required,
            asset_name(fee.asset),
            show_fee(&fee)
        ),
    }
}

/// `0.0011 ETH`, or `3.333 of 0xA0b8… (worth 0.0011 ETH)`.
fn show_fee(fee: &Fee) -> String {
    let amount = format_token_amount(U256::from(fee.amount), fee.decimals);
    if fee.asset.is_zero() {
        format!("{amount} ETH")
    } else {
        format!("{amount} of {} (worth {} ETH)", fee.asset, format_token_amount(U256::from(fee.wei), 18))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_encode_as_cast_does() {
        assert_eq!(hex::encode(encode_call("increment()", &[]).unwrap()), "d09de08a");
        let data = encode_call("incrementBy(uint256)", &["5".into()]).unwrap();
        assert_eq!(hex::encode(&data[..4]), "03df179c");
        assert_eq!(data[35], 5);
        assert!(encode_call("incrementBy(uint256)", &[]).is_err());
        assert!(encode_call("incrementBy(uint256)", &["x".into()]).is_err());
        assert!(encode_call("not a signature", &[]).is_err());
    }

    #[test]
    fn amounts_are_whole_units() {
        assert_eq!(amount("0.5", 18).unwrap(), 500_000_000_000_000_000);
        assert_eq!(amount("2", 6).unwrap(), 2_000_000);
        assert!(amount("-1", 18).is_err());
        assert!(amount("0.0000001", 6).is_err());
    }

    #[test]
    fn a_passphrase_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p");
        std::fs::write(&file, "correct horse\nignored\n").unwrap();
        let secrets = Secrets { config: PathBuf::new(), passphrase_file: Some(file) };
        assert_eq!(passphrase(&secrets).unwrap(), "correct horse");
    }
}
