//! The `nox-client` configuration: one TOML file (`nox-client.toml`),
//! documented key by key in `docs/configuration.md` ("nox-client"), with
//! `NOX_CLIENT_<SECTION>__<KEY>` environment overrides.
//!
//! The structs here are the single source of the keys and their defaults;
//! `client-sdk/nox-client.example.toml` and the documentation are tested
//! against them. Loading is `nox-config`'s engine (syntax, unknown keys and
//! wrong types with their dotted path and line; overrides typed by the
//! defaults; every validation problem at once).
//!
//! What flows out: [`ClientFile::to_client_config`] gives the library's
//! [`ClientConfig`] (topology source, routes, retries, SURB budget), and
//! [`ClientFile::proxy_config`] the local JSON-RPC proxy's bounds once its
//! chain id is known. The devnet and tests build a `ClientFile` in code (or
//! parse one with [`from_toml_str`]) to run the same paths as the binary.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use alloy_primitives::Address;
use nox_config::{Checks, ConfigFile};
pub use nox_config::{ConfigError, Location, Problem};
use nox_protocol::NodeId;
use nox_protocol::price::Trust;
use nox_protocol::route::{MAX_FREE_HOPS, MIN_FREE_HOPS};
use nox_protocol::topology::{ENTRY_LAYER, EXIT_LAYER, MAX_LAYER, MIX_LAYER};
use serde::{Deserialize, Serialize};

use crate::budget::SurbBudget;
use crate::client::{ClientConfig, RouteShape, TopologySource};
use crate::cover::CoverRates;
use crate::directory::StaticMember;
use crate::proxy::ProxyConfig;

/// Prefix of every environment override: `NOX_CLIENT_<SECTION>__<KEY>`.
pub const ENV_PREFIX: &str = "NOX_CLIENT_";

/// Optional keys: absent from the serialized defaults, so an override reads
/// them as strings (`proxy.chain_id` accepts a string of digits for that).
const OPTIONAL_KEYS: &[(&str, &str)] = &[
    ("network", "entry"),
    ("topology", "rpc_url"),
    ("topology", "registry"),
    ("proxy", "chain_id"),
    ("wallet", "pool"),
    ("wallet", "rpc_url"),
    ("wallet", "proving_keys"),
    ("wallet", "max_fee_wei"),
];

/// Keys only the file can set (arrays of tables).
const FILE_ONLY_KEYS: &[(&str, &str)] = &[("topology", "nodes")];

/// Most attempts `requests.attempts` allows: each one spends a route and SURBs.
pub const MAX_ATTEMPTS: u32 = 10;

/// Largest `routes.mean_delay_ms`: a node holds a packet at most its
/// `mix.max_delay_ms` (10 000 ms by default) and drops longer delays.
pub const MAX_MEAN_DELAY_MS: f64 = 10_000.0;

/// Smallest `wallet.call_deadline_secs`: exits refuse a deadline nearer than
/// their `exit.eth_min_deadline_secs` (60 s by default) as `expired`.
pub const MIN_CALL_DEADLINE_SECS: u64 = 60;

/// Largest `wallet.call_deadline_secs` (one day).
pub const MAX_CALL_DEADLINE_SECS: u64 = 86_400;

/// Most requests `proxy.max_batch` allows in one batch.
pub const MAX_BATCH_LIMIT: usize = 10_000;

/// The whole client configuration (`nox-client … --config FILE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClientFile {
    /// Network parameters and the entry node.
    pub network: NetworkSection,
    /// Where the members come from.
    pub topology: TopologySection,
    /// Route shape and delays.
    pub routes: RoutesSection,
    /// Timeouts, retries and the answer bound.
    pub requests: RequestsSection,
    /// SURBs per request kind.
    pub surbs: SurbBudget,
    /// The local JSON-RPC proxy (`nox-client proxy`).
    pub proxy: ProxySection,
    /// Client cover traffic of the long-running proxy (one-shot commands
    /// send none).
    pub cover: CoverRates,
    /// The shielded wallet and private calls (`nox-client wallet …`, `call`).
    pub wallet: WalletSection,
    /// The price oracles trusted for fees paid in a token.
    pub prices: PricesSection,
    /// The local SMTP gateway and its outgoing queue (`nox-client smtp`).
    pub mail: MailSection,
}

/// `[mail]`: the local SMTP gateway (`nox-client smtp`), its queue and how
/// it sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailSection {
    /// The outgoing queue's file (redb, sealed under the passphrase).
    pub queue: std::path::PathBuf,
    /// Where the gateway listens (loopback unless `--allow-remote`).
    pub listen: SocketAddr,
    /// The name in the gateway's greeting.
    pub hostname: String,
    /// The largest message taken, in bytes (advertised as `SIZE`); at most
    /// what the largest size bucket holds.
    pub max_message_bytes: usize,
    /// The most recipients of one message.
    pub max_recipients: usize,
    /// Entries the queue holds before it answers `452`.
    pub max_queue_entries: usize,
    /// Sealed bytes the queue holds before it answers `452`.
    pub max_queue_bytes: u64,
    /// Seconds a message is tried before it is given up on.
    pub lifetime_secs: u64,
    /// Seconds before the second try; doubled for each further one.
    pub retry_min_secs: u64,
    /// The longest wait between tries, in seconds.
    pub retry_max_secs: u64,
    /// Messages sent at once.
    pub concurrency: usize,
    /// The route shape for mail (`stratified` or `free`); unset: `[routes]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<ShapeKind>,
    /// Hops of a free mail route (3–6); unset: `routes.hops`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hops: Option<usize>,
    /// Keep the `Reply-To` header (removed by default).
    pub keep_reply_to: bool,
    /// The domain of the `Message-ID`s the gateway writes.
    pub message_id_domain: String,
    /// A PEM certificate chain: `STARTTLS` is offered with it (and
    /// `mail.tls_key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of `mail.tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<std::path::PathBuf>,
    /// The user a mail program must authenticate as (`AUTH PLAIN`/`LOGIN`);
    /// unset: no authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_user: Option<String>,
    /// A file holding that user's password (first line; not readable by
    /// group or others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_password_file: Option<std::path::PathBuf>,
}

impl Default for MailSection {
    fn default() -> Self {
        MailSection {
            queue: "nox-mail-queue.redb".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 2525)),
            hostname: "localhost".into(),
            max_message_bytes: DEFAULT_MAIL_MAX_MESSAGE_BYTES,
            max_recipients: 100,
            max_queue_entries: 1000,
            max_queue_bytes: 256 * 1024 * 1024,
            lifetime_secs: 5 * 86_400,
            retry_min_secs: 60,
            retry_max_secs: 3_600,
            concurrency: 2,
            route: None,
            hops: None,
            keep_reply_to: false,
            message_id_domain: nox_mail::message::DEFAULT_MESSAGE_ID_DOMAIN.into(),
            tls_cert: None,
            tls_key: None,
            auth_user: None,
            auth_password_file: None,
        }
    }
}

/// `mail.max_message_bytes` by default: the largest bucket's message less
/// room for what scrubbing may add (a new `Message-ID` and `Date`).
pub const DEFAULT_MAIL_MAX_MESSAGE_BYTES: usize = nox_mail::bucket::MAX_MESSAGE_LEN - 4096;

impl MailSection {
    /// Whether `listen` is a loopback address.
    pub fn listen_is_loopback(&self) -> bool {
        self.listen.ip().is_loopback()
    }

    /// The sender's pacing.
    pub fn sender_config(&self) -> crate::mail::SenderConfig {
        crate::mail::SenderConfig {
            lifetime: Duration::from_secs(self.lifetime_secs),
            retry_min: Duration::from_secs(self.retry_min_secs),
            retry_max: Duration::from_secs(self.retry_max_secs),
            concurrency: self.concurrency,
            ..crate::mail::SenderConfig::default()
        }
    }

    /// The queue's bounds.
    pub fn queue_limits(&self) -> crate::mail::QueueLimits {
        crate::mail::QueueLimits { max_entries: self.max_queue_entries, max_bytes: self.max_queue_bytes }
    }

    /// The scrubbing options.
    pub fn scrub_options(&self) -> nox_mail::message::ScrubOptions {
        nox_mail::message::ScrubOptions::default()
            .with_keep_reply_to(self.keep_reply_to)
            .with_message_id_domain(self.message_id_domain.clone())
    }

    fn check(&self, c: &mut Checks) {
        if self.queue.as_os_str().is_empty() {
            c.fail("mail.queue", "must name a file");
        }
        crate::mail::check_gateway(
            c,
            crate::mail::GatewayKeys {
                section: "mail",
                hostname: &self.hostname,
                max_message_bytes: self.max_message_bytes,
                max_recipients: self.max_recipients,
                max_queue_entries: self.max_queue_entries,
                max_queue_bytes: self.max_queue_bytes,
                lifetime_secs: self.lifetime_secs,
                retry_min_secs: self.retry_min_secs,
                retry_max_secs: self.retry_max_secs,
                concurrency: self.concurrency,
                tls: (self.tls_cert.is_some(), self.tls_key.is_some()),
                auth: (self.auth_user.as_deref(), self.auth_password_file.is_some()),
            },
        );
        if let Some(hops) = self.hops
            && !(MIN_FREE_HOPS..=MAX_FREE_HOPS).contains(&hops)
        {
            c.fail("mail.hops", format!("must be from {MIN_FREE_HOPS} to {MAX_FREE_HOPS}, got {hops}"));
        }
        if let Err(e) = self.scrub_options().validate() {
            c.fail("mail.message_id_domain", e.to_string());
        }
    }
}

/// Where the wallet's notes are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyncVia {
    /// `RpcCall`s through the mixnet: the endpoint never sees the user's IP.
    #[default]
    Mixnet,
    /// `wallet.rpc_url` directly (faster; the endpoint sees who reads the pool).
    Direct,
}

/// `[wallet]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalletSection {
    /// The encrypted wallet file.
    pub path: std::path::PathBuf,
    /// NoxPool's address.
    pub pool: Option<String>,
    /// The block NoxPool was deployed in (the note tree is read from there).
    pub pool_start_block: u64,
    /// An Ethereum endpoint for what is public anyway: deposits, direct
    /// withdrawals and flushes, sent from the funding key. Also the reads when
    /// `sync` is `direct`.
    pub rpc_url: Option<String>,
    /// `mixnet` or `direct`: how the pool's events are read.
    pub sync: SyncVia,
    /// Blocks a pool event must be buried under before the wallet uses it.
    pub confirmations: u64,
    /// Directory holding `spend.pk` and `spend.vk`; unset: the development
    /// keys (local chains only, chain id 31337).
    pub proving_keys: Option<std::path::PathBuf>,
    /// Milliseconds a private call waits for its answer (inclusion included).
    pub call_timeout_ms: u64,
    /// Seconds from a private call's proof to its deadline, after which the
    /// pool refuses the relay (and the wallet may release an unspent note).
    pub call_deadline_secs: u64,
    /// The most a private call pays, in wei; unset: the computed fee, whatever it is.
    pub max_fee_wei: Option<String>,
    /// Headroom added to a fee paid in a token, in basis points, for prices
    /// that move between the client's view and the exit's.
    pub price_slippage_bps: u16,
}

impl Default for WalletSection {
    fn default() -> Self {
        WalletSection {
            path: std::path::PathBuf::from("nox-wallet.bin"),
            pool: None,
            pool_start_block: 0,
            rpc_url: None,
            sync: SyncVia::Mixnet,
            confirmations: 2,
            proving_keys: None,
            call_timeout_ms: 90_000,
            call_deadline_secs: crate::private::DEFAULT_CALL_DEADLINE_SECS,
            max_fee_wei: None,
            price_slippage_bps: crate::fee::DEFAULT_PRICE_SLIPPAGE_BPS,
        }
    }
}

impl WalletSection {
    /// `wallet.pool` as an address, or why the wallet cannot be used.
    pub fn pool_address(&self) -> Result<Address, String> {
        let text = self.pool.as_deref().ok_or("wallet.pool is not set (NoxPool's address)")?;
        parse_registry(text).ok_or_else(|| format!("wallet.pool `{text}` is not an address (0x + 40 hex digits)"))
    }

    /// `wallet.max_fee_wei` as a number.
    pub fn max_fee(&self) -> Result<Option<u128>, String> {
        self.max_fee_wei
            .as_deref()
            .map(|t| t.trim().parse::<u128>().map_err(|_| format!("wallet.max_fee_wei `{t}` is not an amount in wei")))
            .transpose()
    }
}

/// `[prices]`: the oracles whose signed rounds price a fee paid in a token.
/// The chain is `topology.chain_id` (the wallet's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PricesSection {
    /// Trusted oracle keys: Ed25519 public keys, 64 hex digits (`0x` optional).
    pub oracle_keys: Vec<String>,
    /// Distinct oracles that must quote an asset before its price is used;
    /// 0: a majority of `oracle_keys` (n / 2 + 1).
    pub threshold: usize,
    /// Seconds after which a round is stale.
    pub max_age_secs: u64,
    /// Seconds a round's timestamp may be ahead of this machine's clock.
    pub max_skew_secs: u64,
}

impl Default for PricesSection {
    fn default() -> Self {
        PricesSection { oracle_keys: Vec::new(), threshold: 0, max_age_secs: 120, max_skew_secs: 10 }
    }
}

impl PricesSection {
    /// The threshold in force: `threshold`, or a majority when it is 0.
    pub fn effective_threshold(&self) -> usize {
        if self.threshold == 0 { nox_protocol::price::majority(self.oracle_keys.len()) } else { self.threshold }
    }

    /// The trust of a price book for `chain_id`, `None` when no oracle key
    /// is configured; an invalid section is every problem, with its key
    /// (the rule the node's `[prices]` follows too:
    /// [`nox_protocol::price::TrustSettings`]).
    pub fn trust(&self, chain_id: u64) -> Result<Option<Trust>, Vec<Problem>> {
        let mut c = Checks::default();
        let trust = self.check(&mut c, chain_id);
        c.finish()?;
        Ok(trust)
    }

    fn check(&self, c: &mut Checks, chain_id: u64) -> Option<Trust> {
        let settings = nox_protocol::price::TrustSettings {
            oracle_keys: &self.oracle_keys,
            threshold: self.threshold,
            max_age_secs: self.max_age_secs,
            max_skew_secs: self.max_skew_secs,
        };
        match settings.trust(chain_id) {
            Ok(trust) => trust,
            Err(problems) => {
                for p in problems {
                    c.fail(p.key, p.message);
                }
                None
            }
        }
    }
}

/// `[network]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSection {
    /// The network's epoch length in seconds (the nodes' `network.epoch_secs`).
    pub epoch_secs: u64,
    /// The entry node's id (`0x` + 64 hex digits); unset: a random member of layer 0.
    pub entry: Option<String>,
    /// Proof-of-work bits the entry requires (its `ingest.pow_bits`).
    pub pow_bits: u8,
    /// Milliseconds to dial the entry and for each control request.
    pub connect_timeout_ms: u64,
    /// Packets per second submitted to the entry at most (cover off); below
    /// the entry's `ingest.client_rate`.
    pub submit_rate: f64,
    /// Packets submitted at once before `submit_rate` applies; below the
    /// entry's `ingest.client_burst`.
    pub submit_burst: u32,
}

impl Default for NetworkSection {
    fn default() -> Self {
        NetworkSection {
            epoch_secs: nox_protocol::descriptor::DEFAULT_EPOCH_SECS,
            entry: None,
            pow_bits: 12,
            connect_timeout_ms: 10_000,
            submit_rate: 80.0,
            submit_burst: 150,
        }
    }
}

/// Where the client learns the members: `registry` or `static`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// NoxRegistry, read from `rpc_url`.
    #[default]
    Registry,
    /// `[[topology.nodes]]` (development networks without a chain).
    Static,
}

/// `[topology]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopologySection {
    /// `registry` or `static`.
    pub source: SourceKind,
    /// Ethereum JSON-RPC endpoint holding NoxRegistry (registry source):
    /// `https://`, or `http://` on a loopback host. Shorthand for a
    /// one-element `rpc_urls`.
    pub rpc_url: Option<String>,
    /// Several independent endpoints, of which `rpc_quorum` must agree on
    /// the registry view.
    pub rpc_urls: Vec<String>,
    /// How many of the endpoints must agree; 0 = a majority.
    pub rpc_quorum: u64,
    /// Chain id the endpoint must report.
    pub chain_id: u64,
    /// NoxRegistry's address.
    pub registry: Option<String>,
    /// First block to read registry events from.
    pub start_block: u64,
    /// Blocks a registry change must be buried under.
    pub confirmations: u64,
    /// Most blocks per `eth_getLogs`.
    pub max_log_range: u64,
    /// Milliseconds one registry RPC request may take.
    pub rpc_timeout_ms: u64,
    /// Seconds between refreshes of the members and descriptors (the proxy).
    pub refresh_secs: u64,
    /// The members of a static topology (`[[topology.nodes]]`).
    pub nodes: Vec<StaticMember>,
}

impl Default for TopologySection {
    fn default() -> Self {
        TopologySection {
            source: SourceKind::Registry,
            rpc_url: None,
            rpc_urls: Vec::new(),
            rpc_quorum: 0,
            chain_id: 1,
            registry: None,
            start_block: 0,
            confirmations: 2,
            max_log_range: 2_000,
            rpc_timeout_ms: 10_000,
            refresh_secs: 60,
            nodes: Vec::new(),
        }
    }
}

/// Route shapes: `stratified` or `free`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ShapeKind {
    /// Entry → mix → exit.
    #[default]
    Stratified,
    /// `routes.hops` hops: the entry, any nodes, the exit.
    Free,
}

/// `[routes]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutesSection {
    /// `stratified` or `free`.
    pub shape: ShapeKind,
    /// Hops of a free route (3–6).
    pub hops: usize,
    /// Mean of the exponential per-hop delay, in milliseconds.
    pub mean_delay_ms: f64,
}

impl Default for RoutesSection {
    fn default() -> Self {
        RoutesSection { shape: ShapeKind::Stratified, hops: 4, mean_delay_ms: 50.0 }
    }
}

/// `[requests]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestsSection {
    /// Milliseconds one attempt waits for its answer.
    pub attempt_timeout_ms: u64,
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// Longest answer reassembled, in bytes.
    pub max_reply_bytes: usize,
}

impl Default for RequestsSection {
    fn default() -> Self {
        RequestsSection { attempt_timeout_ms: 20_000, attempts: 3, max_reply_bytes: 8 << 20 }
    }
}

/// `[proxy]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    /// Where the JSON-RPC proxy listens (loopback unless `--allow-remote`).
    pub listen: SocketAddr,
    /// The chain every request names, answered locally for `eth_chainId` and
    /// `net_version`; unset: asked of the network once at start.
    #[serde(deserialize_with = "u64_or_digits", skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<u64>,
    /// Most requests in one batch.
    pub max_batch: usize,
    /// Longest request body, in bytes.
    pub max_body_bytes: usize,
    /// Print a line on stderr while a request waits longer than 2 s.
    pub progress: bool,
}

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            listen: SocketAddr::from(([127, 0, 0, 1], 8545)),
            chain_id: None,
            max_batch: 100,
            max_body_bytes: 1 << 20,
            progress: false,
        }
    }
}

impl ProxySection {
    /// Whether `listen` is a loopback address (the proxy refuses others
    /// unless told `--allow-remote`).
    pub fn listen_is_loopback(&self) -> bool {
        self.listen.ip().is_loopback()
    }
}

/// `proxy.chain_id` from the file (an integer) or an override (digits).
fn u64_or_digits<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Text(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Int(n)) => Ok(Some(n)),
        Some(Raw::Text(t)) => {
            t.trim().parse().map(Some).map_err(|_| {
                serde::de::Error::custom(format!("`{t}` is not a chain id: expected a non-negative integer"))
            })
        }
    }
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

/// Reads `path`, applies the process's `NOX_CLIENT_*` overrides and validates.
pub fn load(path: &Path) -> Result<ClientFile, ConfigError> {
    nox_config::load(path)
}

/// [`load`] with the environment given as `(name, value)` pairs.
pub fn load_with_env<K: AsRef<OsStr>, V: AsRef<OsStr>>(
    path: &Path,
    env: impl IntoIterator<Item = (K, V)>,
) -> Result<ClientFile, ConfigError> {
    nox_config::load_with_env(path, env)
}

/// Parses `text` as `nox-client.toml`, applies the `NOX_CLIENT_*` overrides
/// found in `env` and validates the result.
pub fn from_toml_str<K: AsRef<OsStr>, V: AsRef<OsStr>>(
    text: &str,
    env: impl IntoIterator<Item = (K, V)>,
) -> Result<ClientFile, ConfigError> {
    nox_config::from_toml_str(text, env)
}

impl ConfigFile for ClientFile {
    const ENV_PREFIX: &'static str = ENV_PREFIX;
    const OPTIONAL_KEYS: &'static [(&'static str, &'static str)] = OPTIONAL_KEYS;
    const FILE_ONLY_KEYS: &'static [(&'static str, &'static str)] = FILE_ONLY_KEYS;

    fn validate(&self) -> Result<(), Vec<Problem>> {
        ClientFile::validate(self)
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

/// `0x` + 64 hex digits that are an Ed25519 public key, or why not.
pub fn parse_node_id(text: &str) -> Result<NodeId, String> {
    let digits = text.strip_prefix("0x").filter(|d| d.len() == 64);
    let mut id = [0u8; 32];
    match digits.map(|d| hex::decode_to_slice(d, &mut id)) {
        Some(Ok(())) => {}
        _ => return Err(format!("`{text}` is not a node id: expected 0x followed by 64 hex digits")),
    }
    let id = NodeId(id);
    nox_net::p2p::peer_id_of(&id).map_err(|_| format!("`{text}` is not an Ed25519 public key"))?;
    Ok(id)
}

/// `0x` + 40 hex digits, not zero.
fn parse_registry(text: &str) -> Option<Address> {
    let digits = text.strip_prefix("0x")?;
    if digits.len() != 40 {
        return None;
    }
    text.parse().ok().filter(|a: &Address| !a.is_zero())
}

/// `http://host…` or `https://host…`.
fn check_http_url(c: &mut Checks, key: &str, url: &str) {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or_default());
    match host {
        Some(h) if !h.is_empty() && !h.starts_with(':') && !h.contains(char::is_whitespace) => {}
        _ => c.fail(key, format!("`{url}` is not an http:// or https:// URL with a host")),
    }
}

/// A registry endpoint: an http(s) URL with a host, and TLS unless the host
/// is loopback (the rule of `nox_eth::rpc::check_transport`).
fn check_registry_url(c: &mut Checks, key: String, url: &str) {
    let mut probe = Checks::default();
    check_http_url(&mut probe, &key, url);
    if probe.finish().is_err() {
        check_http_url(c, &key, url);
    } else if let Err(e) = nox_eth::rpc::check_transport(url) {
        c.fail(key, e.to_string());
    }
}

impl TopologySection {
    /// The registry endpoints: `rpc_urls`, or `rpc_url` alone.
    pub fn endpoints(&self) -> Vec<String> {
        if self.rpc_urls.is_empty() { self.rpc_url.iter().cloned().collect() } else { self.rpc_urls.clone() }
    }
}

impl ClientFile {
    /// Checks every value and their relations; returns every problem found,
    /// each with its dotted key and the offending value.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut c = Checks::default();

        let network = &self.network;
        c.at_least("network.epoch_secs", network.epoch_secs, 1);
        c.at_most("network.pow_bits", network.pow_bits, nox_protocol::pow::MAX_POW_BITS, "");
        c.at_least("network.connect_timeout_ms", network.connect_timeout_ms, 100);
        c.positive_rate("network.submit_rate", network.submit_rate);
        c.at_least("network.submit_burst", network.submit_burst, 1);
        let entry = match network.entry.as_deref().map(parse_node_id) {
            Some(Err(e)) => {
                c.fail("network.entry", e);
                None
            }
            Some(Ok(id)) => Some(id),
            None => None,
        };

        let t = &self.topology;
        match t.source {
            SourceKind::Registry => {
                if t.rpc_url.is_none() && t.rpc_urls.is_empty() {
                    c.fail("topology.rpc_url", "required (or topology.rpc_urls) when topology.source is \"registry\"");
                }
                c.rpc_endpoints("topology", t.rpc_url.as_deref(), &t.rpc_urls, check_registry_url);
                let n = t.endpoints().len();
                if n > 0 {
                    let quorum = usize::try_from(t.rpc_quorum).unwrap_or(usize::MAX);
                    if let Some(problem) = nox_eth::registry::follower::quorum_problem(quorum, n) {
                        c.fail("topology.rpc_quorum", problem);
                    }
                }
                match &t.registry {
                    None => c.fail("topology.registry", "required when topology.source is \"registry\""),
                    Some(r) if parse_registry(r).is_none() => {
                        c.fail("topology.registry", format!("`{r}` is not an address (0x + 40 hex digits, not zero)"))
                    }
                    Some(_) => {}
                }
                c.at_least("topology.chain_id", t.chain_id, 1);
                c.at_least("topology.max_log_range", t.max_log_range, 1);
                c.at_least("topology.rpc_timeout_ms", t.rpc_timeout_ms, 100);
                if !t.nodes.is_empty() {
                    c.fail(
                        "topology.nodes",
                        "must be empty when topology.source is \"registry\": the registry is the only source of \
                         the members",
                    );
                }
            }
            SourceKind::Static => self.check_static(&mut c, entry),
        }
        c.at_least("topology.refresh_secs", t.refresh_secs, 1);

        let routes = &self.routes;
        if !(MIN_FREE_HOPS..=MAX_FREE_HOPS).contains(&routes.hops) {
            c.fail("routes.hops", format!("must be from {MIN_FREE_HOPS} to {MAX_FREE_HOPS}, got {}", routes.hops));
        }
        c.non_negative_rate("routes.mean_delay_ms", routes.mean_delay_ms);
        c.at_most(
            "routes.mean_delay_ms",
            routes.mean_delay_ms,
            MAX_MEAN_DELAY_MS,
            " (nodes drop packets delayed past their mix.max_delay_ms)",
        );

        let requests = &self.requests;
        c.at_least("requests.attempt_timeout_ms", requests.attempt_timeout_ms, 100);
        c.at_least("requests.attempts", requests.attempts, 1);
        c.at_most("requests.attempts", requests.attempts, MAX_ATTEMPTS, "");
        c.at_least("requests.max_reply_bytes", requests.max_reply_bytes, 1024);

        let s = &self.surbs;
        for (key, n) in [
            ("surbs.rpc_call", s.rpc_call),
            ("surbs.raw_broadcast", s.raw_broadcast),
            ("surbs.http", s.http),
            ("surbs.eth_request", s.eth_request),
            ("surbs.mail", s.mail),
        ] {
            c.at_least(key, n, 1);
            c.at_most(key, n, nox_protocol::payload::MAX_SURBS, " (SURBs one request can carry)");
        }

        let proxy = &self.proxy;
        if proxy.chain_id == Some(0) {
            c.fail("proxy.chain_id", "must be at least 1, got 0");
        }
        c.at_least("proxy.max_batch", proxy.max_batch, 1);
        c.at_most("proxy.max_batch", proxy.max_batch, MAX_BATCH_LIMIT, "");
        c.at_least("proxy.max_body_bytes", proxy.max_body_bytes, 1024);

        let wallet = &self.wallet;
        if wallet.path.as_os_str().is_empty() {
            c.fail("wallet.path", "must name a file");
        }
        if wallet.pool.is_some()
            && let Err(e) = wallet.pool_address()
        {
            c.fail("wallet.pool", e);
        }
        if let Some(url) = &wallet.rpc_url {
            check_http_url(&mut c, "wallet.rpc_url", url);
        }
        if wallet.sync == SyncVia::Direct && wallet.rpc_url.is_none() {
            c.fail("wallet.rpc_url", "required when wallet.sync is \"direct\"");
        }
        c.at_least("wallet.call_timeout_ms", wallet.call_timeout_ms, 1_000);
        c.at_least("wallet.call_deadline_secs", wallet.call_deadline_secs, MIN_CALL_DEADLINE_SECS);
        c.at_most(
            "wallet.call_deadline_secs",
            wallet.call_deadline_secs,
            MAX_CALL_DEADLINE_SECS,
            " (a note whose spend's fate is unknown stays spending until the deadline)",
        );
        if wallet.call_deadline_secs.saturating_mul(1_000) <= wallet.call_timeout_ms {
            c.fail(
                "wallet.call_deadline_secs",
                format!(
                    "must be longer than wallet.call_timeout_ms ({} ms): the relay must be able to land before its \
                     deadline while the call waits for it, got {} s",
                    wallet.call_timeout_ms, wallet.call_deadline_secs
                ),
            );
        }
        if let Err(e) = wallet.max_fee() {
            c.fail("wallet.max_fee_wei", e);
        }
        c.at_most("wallet.price_slippage_bps", wallet.price_slippage_bps, crate::fee::MAX_PRICE_SLIPPAGE_BPS, "");

        self.prices.check(&mut c, self.topology.chain_id);
        self.mail.check(&mut c);

        let cover = &self.cover;
        if cover.enabled {
            c.positive_rate("cover.payload", cover.payload);
        }
        c.non_negative_rate("cover.loops", cover.loops);
        c.non_negative_rate("cover.drops", cover.drops);
        c.at_least("cover.loop_timeout_secs", cover.loop_timeout.as_secs_f64(), 1.0);
        c.at_least("cover.queue", cover.queue, 1);

        c.finish()
    }

    /// `[[topology.nodes]]`: well-formed, distinct, every layer present, the
    /// configured entry among layer 0.
    fn check_static(&self, c: &mut Checks, entry: Option<NodeId>) {
        let t = &self.topology;
        if t.rpc_url.is_some() || !t.rpc_urls.is_empty() || t.registry.is_some() {
            c.fail(
                "topology.source",
                "is \"static\", but topology.rpc_url, topology.rpc_urls or topology.registry is set; use source = \"registry\" to \
                 follow NoxRegistry",
            );
        }
        if t.nodes.is_empty() {
            c.fail("topology.nodes", "a static topology needs its members as [[topology.nodes]]");
            return;
        }
        let mut ids: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut layers = [false; MAX_LAYER as usize + 1];
        for (i, n) in t.nodes.iter().enumerate() {
            let key = format!("topology.nodes[{i}]");
            match parse_node_id(&n.node_id) {
                Err(e) => c.fail(format!("{key}.node_id"), e),
                Ok(id) => {
                    if let Some(first) = ids.insert(id, i) {
                        c.fail(format!("{key}.node_id"), format!("`{}` is also topology.nodes[{first}]", n.node_id));
                    }
                }
            }
            match layers.get_mut(usize::from(n.layer)) {
                Some(seen) => *seen = true,
                None => c.fail(format!("{key}.layer"), format!("must be 0, 1 or 2, got {}", n.layer)),
            }
            match n.address.parse::<libp2p::Multiaddr>() {
                Ok(a) if a.is_empty() => {
                    c.fail(format!("{key}.address"), "empty multiaddr; expected e.g. /ip4/1.2.3.4/tcp/9000")
                }
                Ok(_) => {}
                Err(e) => c.fail(format!("{key}.address"), format!("`{}` is not a multiaddr: {e}", n.address)),
            }
        }
        for (layer, name) in [(ENTRY_LAYER, "entry"), (MIX_LAYER, "mix"), (EXIT_LAYER, "exit")] {
            if !layers[usize::from(layer)] {
                c.fail("topology.nodes", format!("no node in layer {layer} ({name}); routes need every layer"));
            }
        }
        if let Some(entry) = entry {
            let in_layer0 =
                ids.iter().any(|(id, i)| *id == entry && t.nodes.get(*i).is_some_and(|n| n.layer == ENTRY_LAYER));
            if !in_layer0 {
                c.fail("network.entry", "is not a [[topology.nodes]] member of layer 0");
            }
        }
    }

    /// The library's [`ClientConfig`]; the configuration is validated first,
    /// and its problems are the error.
    pub fn to_client_config(&self) -> Result<ClientConfig, ConfigError> {
        self.validate().map_err(ConfigError::Invalid)?;
        let invalid =
            |key: &str, message: &str| ConfigError::Invalid(vec![Problem { key: key.into(), message: message.into() }]);
        let t = &self.topology;
        let topology = match t.source {
            SourceKind::Static => TopologySource::Static(t.nodes.clone()),
            SourceKind::Registry => {
                let rpc_urls = Some(t.endpoints())
                    .filter(|e| !e.is_empty())
                    .ok_or_else(|| invalid("topology.rpc_url", "required"))?;
                let registry = t
                    .registry
                    .as_deref()
                    .and_then(parse_registry)
                    .ok_or_else(|| invalid("topology.registry", "required"))?;
                TopologySource::Registry(nox_eth::registry::follower::FollowerConfig {
                    rpc_urls,
                    quorum: usize::try_from(t.rpc_quorum).unwrap_or(usize::MAX),
                    chain_id: t.chain_id,
                    registry,
                    start_block: t.start_block,
                    confirmations: t.confirmations,
                    max_log_range: t.max_log_range,
                    rpc_timeout: Duration::from_millis(t.rpc_timeout_ms),
                })
            }
        };
        let entry = match self.network.entry.as_deref() {
            Some(text) => Some(parse_node_id(text).map_err(|e| invalid("network.entry", &e))?),
            None => None,
        };
        let mut cfg = ClientConfig::new(topology);
        cfg.epoch_secs = self.network.epoch_secs;
        cfg.entry = entry;
        cfg.pow_bits = self.network.pow_bits;
        cfg.connect_timeout = Duration::from_millis(self.network.connect_timeout_ms);
        cfg.refresh_every = Duration::from_secs(t.refresh_secs);
        cfg.route = match self.routes.shape {
            ShapeKind::Stratified => RouteShape::Stratified,
            ShapeKind::Free => RouteShape::Free(self.routes.hops),
        };
        cfg.mean_delay = Duration::from_secs_f64(self.routes.mean_delay_ms / 1000.0);
        cfg.attempt_timeout = Duration::from_millis(self.requests.attempt_timeout_ms);
        cfg.cover = self.cover;
        cfg.submit_rate = self.network.submit_rate;
        cfg.submit_burst = self.network.submit_burst;
        cfg.attempts = self.requests.attempts;
        cfg.max_reply_bytes = self.requests.max_reply_bytes;
        cfg.surbs = self.surbs.clone();
        Ok(cfg)
    }

    /// The client configuration of the mail gateway: [`Self::to_client_config`]
    /// with `mail.route` and `mail.hops` in place of `[routes]` where set.
    pub fn mail_client_config(&self) -> Result<ClientConfig, ConfigError> {
        let mut cfg = self.to_client_config()?;
        let hops = self.mail.hops.unwrap_or(self.routes.hops);
        cfg.route = match self.mail.route.unwrap_or(self.routes.shape) {
            ShapeKind::Stratified => RouteShape::Stratified,
            ShapeKind::Free => RouteShape::Free(hops),
        };
        Ok(cfg)
    }

    /// The `[prices]` trust for the wallet's chain (`topology.chain_id`);
    /// `None` when no oracle key is set (fees in tokens cannot be priced).
    pub fn price_trust(&self) -> Result<Option<Trust>, ConfigError> {
        self.prices.trust(self.topology.chain_id).map_err(ConfigError::Invalid)
    }

    /// The proxy's settings for requests naming `chain_id` (the configured
    /// `proxy.chain_id`, or the one the network answered).
    pub fn proxy_config(&self, chain_id: u64) -> ProxyConfig {
        ProxyConfig {
            chain_id,
            max_batch: self.proxy.max_batch,
            max_body_bytes: self.proxy.max_body_bytes,
            progress: self.proxy.progress,
        }
    }

    /// A one-line description of where the members come from, for
    /// `check-config` and the proxy's start line (never the endpoint's URL,
    /// which may carry an API key).
    pub fn topology_summary(&self) -> String {
        let t = &self.topology;
        match t.source {
            SourceKind::Registry => format!(
                "NoxRegistry {} on chain {} (confirmations {})",
                t.registry.as_deref().unwrap_or("(unset)"),
                t.chain_id,
                t.confirmations
            ),
            SourceKind::Static => format!("{} static nodes (no chain: stake is not checked)", t.nodes.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toml::{Table, Value};

    const EXAMPLE: &str = include_str!("../nox-client.example.toml");
    const DOCS: &str = include_str!("../../docs/configuration.md");
    const REGISTRY: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

    /// The smallest valid file: the registry's endpoint and address.
    fn registry_file() -> String {
        format!("[topology]\nrpc_url = \"http://127.0.0.1:8545\"\nregistry = \"{REGISTRY}\"\n")
    }

    fn parse(text: &str) -> Result<ClientFile, ConfigError> {
        from_toml_str(text, std::iter::empty::<(&str, &str)>())
    }

    fn with_env(text: &str, env: &[(&str, &str)]) -> Result<ClientFile, ConfigError> {
        from_toml_str(text, env.iter().copied())
    }

    fn problem_keys(result: Result<ClientFile, ConfigError>) -> Vec<String> {
        match result {
            Err(ConfigError::Invalid(problems)) => problems.into_iter().map(|p| p.key).collect(),
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    /// A valid node id: the Ed25519 public key of a fixed secret.
    fn node_id(seed: u8) -> String {
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key();
        format!("0x{}", hex::encode(key.to_bytes()))
    }

    /// A static topology with one node per layer.
    fn static_file() -> String {
        let mut text = String::from("[topology]\nsource = \"static\"\n");
        for layer in 0..3u8 {
            text.push_str(&format!(
                "[[topology.nodes]]\nnode_id = \"{}\"\nlayer = {layer}\naddress = \"/ip4/127.0.0.1/tcp/{}\"\n",
                node_id(layer + 1),
                9000 + u16::from(layer)
            ));
        }
        text
    }

    #[test]
    fn defaults_need_only_where_the_members_come_from() {
        assert_eq!(problem_keys(parse("")), vec!["topology.rpc_url", "topology.registry"]);
        let c = parse(&registry_file()).unwrap();
        let mut expected = ClientFile::default();
        expected.topology.rpc_url = Some("http://127.0.0.1:8545".into());
        expected.topology.registry = Some(REGISTRY.into());
        assert_eq!(c, expected);
        assert_eq!((c.proxy.listen.to_string(), c.proxy.chain_id), ("127.0.0.1:8545".to_string(), None));
        assert_eq!((c.routes.hops, c.routes.mean_delay_ms, c.requests.attempts), (4, 50.0, 3));
        assert_eq!((c.network.epoch_secs, c.network.pow_bits, c.proxy.max_body_bytes), (10800, 12, 1 << 20));
    }

    #[test]
    fn a_configuration_round_trips_through_toml() {
        for text in [registry_file(), static_file() + "[proxy]\nchain_id = 31337\nprogress = true\n"] {
            let c = parse(&text).unwrap();
            let written = toml::to_string(&c).unwrap();
            assert_eq!(parse(&written).unwrap(), c, "{written}");
        }
    }

    #[test]
    fn the_example_file_is_the_defaults_with_a_registry() {
        let example = parse(EXAMPLE).unwrap();
        let mut expected = ClientFile::default();
        expected.topology.rpc_url = example.topology.rpc_url.clone();
        expected.topology.registry = Some(REGISTRY.into());
        assert_eq!(example, expected);
    }

    #[test]
    fn the_example_file_lists_every_key() {
        let example: Table = EXAMPLE.parse().unwrap();
        for (section, key) in nox_config::all_keys::<ClientFile>() {
            let listed = example.get(&section).and_then(Value::as_table).is_some_and(|t| t.contains_key(&key));
            let commented =
                EXAMPLE.contains(&format!("# {key} = ")) || EXAMPLE.contains(&format!("# [[{section}.{key}]]"));
            assert!(listed || commented, "{section}.{key} is missing from nox-client.example.toml");
        }
    }

    #[test]
    fn the_docs_document_every_key() {
        let part = &DOCS[DOCS.find("## nox-client").expect("docs lack the nox-client part")..];
        let part = &part[..part[3..].find("\n## ").map_or(part.len(), |i| i + 3)];
        for (section, key) in nox_config::all_keys::<ClientFile>() {
            let heading = format!("### `[{section}]`");
            let start = part.find(&heading).unwrap_or_else(|| panic!("the nox-client docs lack {heading}"));
            let rest = &part[start + heading.len()..];
            let table = &rest[..rest.find("\n#").unwrap_or(rest.len())];
            assert!(table.contains(&format!("| `{key}` |")), "the nox-client docs lack {section}.{key}");
        }
    }

    #[test]
    fn file_errors_name_their_key_and_line() {
        let err = parse("[proxy]\nmax_batch = 3\nmax_bach = 4\n").unwrap_err();
        let ConfigError::UnknownKey { key, at, .. } = &err else { panic!("{err:?}") };
        assert_eq!((key.as_str(), at.map(|a| a.line)), ("proxy.max_bach", Some(3)));
        let err = parse("[routes]\nshape = \"loop\"\n").unwrap_err();
        assert!(matches!(&err, ConfigError::BadValue { key, .. } if key == "routes.shape"), "{err:?}");
        let err = parse("[topology]\nsource = \"dns\"\n").unwrap_err();
        assert!(matches!(&err, ConfigError::BadValue { key, .. } if key == "topology.source"), "{err:?}");
        let err = parse("[proxy]\nlisten = \"localhost\"\n").unwrap_err();
        assert!(matches!(&err, ConfigError::BadValue { key, .. } if key == "proxy.listen"), "{err:?}");
        let err = parse("[proxy]\nchain_id = \"mainnet\"\n").unwrap_err();
        assert!(err.to_string().contains("proxy.chain_id"), "{err}");
        let err = parse("[surbs]\nrpc_cal = 3\n").unwrap_err();
        assert!(matches!(&err, ConfigError::UnknownKey { key, .. } if key == "surbs.rpc_cal"), "{err:?}");
        let err = parse("[[topology.nodes]]\nnode_id = \"0x01\"\nlayer = 0\naddresses = []\n").unwrap_err();
        assert!(matches!(&err, ConfigError::UnknownKey { key, .. } if key == "topology.nodes[0].addresses"), "{err:?}");
    }

    #[test]
    fn mail_routes_and_pacing_come_from_mail_where_set() {
        let c = parse(&registry_file()).unwrap();
        assert_eq!((c.mail.listen.to_string(), c.mail.lifetime_secs), ("127.0.0.1:2525".to_string(), 432_000));
        assert_eq!(c.mail_client_config().unwrap().route, RouteShape::Stratified, "[routes] when [mail] is silent");
        let c = parse(&(registry_file() + "[routes]\nhops = 3\n[mail]\nroute = \"free\"\nhops = 5\n")).unwrap();
        assert_eq!(c.mail_client_config().unwrap().route, RouteShape::Free(5));
        assert_eq!(c.to_client_config().unwrap().route, RouteShape::Stratified, "other requests keep [routes]");
        let c = parse(&(registry_file() + "[routes]\nhops = 3\n[mail]\nroute = \"free\"\n")).unwrap();
        assert_eq!(c.mail_client_config().unwrap().route, RouteShape::Free(3));
        let s = c.mail.sender_config();
        assert_eq!((s.retry_min.as_secs(), s.retry_max.as_secs(), s.concurrency), (60, 3600, 2));
    }

    #[test]
    fn environment_overrides_win_and_are_typed_by_the_defaults() {
        let env = [
            ("NOX_CLIENT_PROXY__CHAIN_ID", "31337"),
            ("NOX_CLIENT_PROXY__LISTEN", "127.0.0.1:8546"),
            ("NOX_CLIENT_PROXY__PROGRESS", "true"),
            ("NOX_CLIENT_ROUTES__SHAPE", "free"),
            ("NOX_CLIENT_ROUTES__MEAN_DELAY_MS", "12.5"),
            ("NOX_CLIENT_SURBS__RPC_CALL", "6"),
            ("NOX_CLIENT_NETWORK__ENTRY", &node_id(1)),
            ("NOX_DEPLOYMENT", "{}"),
        ];
        let c = with_env(&(static_file() + "[proxy]\nchain_id = 1\n"), &env).unwrap();
        assert_eq!(c.proxy.chain_id, Some(31337), "the environment wins over the file");
        assert_eq!((c.proxy.listen.port(), c.proxy.progress), (8546, true));
        assert_eq!((c.routes.shape, c.routes.mean_delay_ms, c.surbs.rpc_call), (ShapeKind::Free, 12.5, 6));
        assert_eq!(c.network.entry, Some(node_id(1)));

        let c =
            with_env(&(registry_file() + "[proxy]\nchain_id = 5\n"), &[("NOX_CLIENT_PROXY__CHAIN_ID", "")]).unwrap();
        assert_eq!(c.proxy.chain_id, None, "an empty value unsets an optional key");
        let c = with_env(
            "",
            &[("NOX_CLIENT_TOPOLOGY__RPC_URL", "https://rpc.example.org"), ("NOX_CLIENT_TOPOLOGY__REGISTRY", REGISTRY)],
        )
        .unwrap();
        assert_eq!(c.topology.rpc_url.as_deref(), Some("https://rpc.example.org"));

        for (var, value, says) in [
            ("NOX_CLIENT_PROXY__CHAIN_ID", "mainnet", "not a chain id"),
            ("NOX_CLIENT_PROXY__MAX_BACH", "3", "no key `max_bach` in [proxy]"),
            ("NOX_CLIENT_PROXI__LISTEN", "127.0.0.1:1", "no section [proxi]"),
            ("NOX_CLIENT_TOPOLOGY__NODES", "x", "cannot be set from the environment"),
            ("NOX_CLIENT_REQUESTS__ATTEMPTS", "many", "expected an integer"),
        ] {
            match with_env(&registry_file(), &[(var, value)]) {
                Err(ConfigError::Env { var: named, reason }) => {
                    assert_eq!(named, var);
                    assert!(reason.contains(says), "{var}: {reason}");
                }
                other => panic!("{var}: {other:?}"),
            }
        }
        assert_eq!(problem_keys(with_env(&registry_file(), &[("NOX_CLIENT_ROUTES__HOPS", "9")])), vec!["routes.hops"]);
    }

    #[test]
    fn load_reads_a_file_with_its_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nox-client.toml");
        std::fs::write(&path, registry_file()).unwrap();
        let c = load_with_env(&path, [("NOX_CLIENT_REQUESTS__ATTEMPTS", "1")]).unwrap();
        assert_eq!(c.requests.attempts, 1);
        let missing = dir.path().join("absent.toml");
        assert!(matches!(load_with_env(&missing, [("A", "B")]), Err(ConfigError::Read { .. })));
    }

    #[test]
    fn each_rule_names_its_key() {
        let reg = registry_file();
        for (text, key) in [
            (format!("{reg}[network]\nepoch_secs = 0\n"), "network.epoch_secs"),
            (format!("{reg}[network]\npow_bits = 33\n"), "network.pow_bits"),
            (format!("{reg}[network]\nconnect_timeout_ms = 10\n"), "network.connect_timeout_ms"),
            (format!("{reg}[network]\nentry = \"0x1234\"\n"), "network.entry"),
            // y = 2 is on no point of the curve: hex digits, but not a key.
            (format!("{reg}[network]\nentry = \"0x02{}\"\n", "00".repeat(31)), "network.entry"),
            (
                "[topology]\nrpc_url = \"ftp://x\"\nregistry = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n".into(),
                "topology.rpc_url",
            ),
            ("[topology]\nrpc_url = \"https://x\"\nregistry = \"0x00\"\n".into(), "topology.registry"),
            (
                format!("[topology]\nrpc_url = \"https://x\"\nregistry = \"0x{}\"\n", "0".repeat(40)),
                "topology.registry",
            ),
            (
                "[topology]\nrpc_url = \"http://x\"\nregistry = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n"
                    .into(),
                "topology.rpc_url",
            ),
            (
                format!(
                    "[topology]\nrpc_urls = [\"https://a\", \"http://10.0.0.2:8545\", \"https://c\"]\nregistry = \"{REGISTRY}\"\n"
                ),
                "topology.rpc_urls[1]",
            ),
            (
                format!("[topology]\nrpc_urls = [\"https://a\", \"https://a\"]\nregistry = \"{REGISTRY}\"\n"),
                "topology.rpc_urls[1]",
            ),
            (
                format!(
                    "[topology]\nrpc_urls = [\"https://a\", \"https://b\", \"https://c\"]\nrpc_quorum = 1\nregistry = \"{REGISTRY}\"\n"
                ),
                "topology.rpc_quorum",
            ),
            (format!("{reg}rpc_urls = [\"https://a\"]\n"), "topology.rpc_urls"),
            (format!("{reg}chain_id = 0\n"), "topology.chain_id"),
            (format!("{reg}max_log_range = 0\n"), "topology.max_log_range"),
            (format!("{reg}rpc_timeout_ms = 5\n"), "topology.rpc_timeout_ms"),
            (format!("{reg}refresh_secs = 0\n"), "topology.refresh_secs"),
            (
                format!(
                    "{reg}[[topology.nodes]]\nnode_id = \"{}\"\nlayer = 0\naddress = \"/ip4/127.0.0.1/tcp/1\"\n",
                    node_id(1)
                ),
                "topology.nodes",
            ),
            ("[topology]\nsource = \"static\"\n".into(), "topology.nodes"),
            (
                static_file().replace("source = \"static\"", "source = \"static\"\nregistry = \"0x01\""),
                "topology.source",
            ),
            (static_file().replace(&node_id(2), &node_id(1)), "topology.nodes[1].node_id"),
            (static_file().replace(&node_id(3), "0xabc"), "topology.nodes[2].node_id"),
            (
                format!(
                    "{}[[topology.nodes]]\nnode_id = \"{}\"\nlayer = 3\naddress = \"/ip4/127.0.0.1/tcp/1\"\n",
                    static_file(),
                    node_id(9)
                ),
                "topology.nodes[3].layer",
            ),
            (static_file().replace("layer = 2", "layer = 1"), "topology.nodes"),
            (static_file().replace("/ip4/127.0.0.1/tcp/9001", "127.0.0.1:9001"), "topology.nodes[1].address"),
            (format!("{}[network]\nentry = \"{}\"\n", static_file(), node_id(2)), "network.entry"),
            (format!("{reg}[routes]\nhops = 2\n"), "routes.hops"),
            (format!("{reg}[routes]\nhops = 7\n"), "routes.hops"),
            (format!("{reg}[routes]\nmean_delay_ms = -1.0\n"), "routes.mean_delay_ms"),
            (format!("{reg}[routes]\nmean_delay_ms = 20000.0\n"), "routes.mean_delay_ms"),
            (format!("{reg}[requests]\nattempt_timeout_ms = 1\n"), "requests.attempt_timeout_ms"),
            (format!("{reg}[requests]\nattempts = 0\n"), "requests.attempts"),
            (format!("{reg}[requests]\nattempts = 11\n"), "requests.attempts"),
            (format!("{reg}[requests]\nmax_reply_bytes = 10\n"), "requests.max_reply_bytes"),
            (format!("{reg}[surbs]\nrpc_call = 0\n"), "surbs.rpc_call"),
            (format!("{reg}[surbs]\nhttp = 256\n"), "surbs.http"),
            (format!("{reg}[proxy]\nchain_id = 0\n"), "proxy.chain_id"),
            (format!("{reg}[proxy]\nmax_batch = 0\n"), "proxy.max_batch"),
            (format!("{reg}[proxy]\nmax_batch = 10001\n"), "proxy.max_batch"),
            (format!("{reg}[proxy]\nmax_body_bytes = 100\n"), "proxy.max_body_bytes"),
            (format!("{reg}[mail]\nmax_message_bytes = 9000000\n"), "mail.max_message_bytes"),
            (format!("{reg}[mail]\nretry_min_secs = 600\nretry_max_secs = 60\n"), "mail.retry_max_secs"),
            (format!("{reg}[mail]\nhops = 7\n"), "mail.hops"),
            (format!("{reg}[mail]\nhostname = \"a b\"\n"), "mail.hostname"),
            (format!("{reg}[mail]\nmessage_id_domain = \"not a domain\"\n"), "mail.message_id_domain"),
            (format!("{reg}[mail]\ntls_cert = \"c.pem\"\n"), "mail.tls_key"),
            (format!("{reg}[mail]\nauth_user = \"me\"\n"), "mail.auth_password_file"),
            (format!("{reg}[mail]\nconcurrency = 0\n"), "mail.concurrency"),
        ] {
            let keys = problem_keys(parse(&text));
            assert_eq!(keys, vec![key.to_string()], "{text}");
        }
        let many = format!("{reg}[routes]\nhops = 9\n[proxy]\nmax_batch = 0\n");
        assert_eq!(problem_keys(parse(&many)), vec!["routes.hops", "proxy.max_batch"], "every problem at once");
    }

    #[test]
    fn the_library_config_follows_the_file() {
        let text = format!(
            "{}[network]\nentry = \"{}\"\npow_bits = 4\n[routes]\nshape = \"free\"\nhops = 5\nmean_delay_ms = 2.5\n\
             [requests]\nattempt_timeout_ms = 1500\nattempts = 2\n[surbs]\nrpc_call = 3\n",
            static_file(),
            node_id(1)
        );
        let c = parse(&text).unwrap().to_client_config().unwrap();
        let TopologySource::Static(nodes) = &c.topology else { panic!("{:?}", c.topology) };
        assert_eq!(nodes.len(), 3);
        assert_eq!(c.entry.map(|e| format!("0x{}", hex::encode(e.0))), Some(node_id(1)));
        assert_eq!((c.pow_bits, c.route, c.mean_delay), (4, RouteShape::Free(5), Duration::from_micros(2500)));
        assert_eq!((c.attempt_timeout, c.attempts, c.surbs.rpc_call), (Duration::from_millis(1500), 2, 3));

        let c = parse(&registry_file()).unwrap().to_client_config().unwrap();
        let TopologySource::Registry(f) = &c.topology else { panic!("{:?}", c.topology) };
        assert_eq!(
            (f.rpc_urls.as_slice(), f.chain_id, f.confirmations),
            (&["http://127.0.0.1:8545".to_string()][..], 1, 2)
        );
        assert_eq!(f.registry.to_string(), REGISTRY);
        assert_eq!((c.route, c.entry), (RouteShape::Stratified, None));

        let three = format!(
            "[topology]\nrpc_urls = [\"https://a.example.org\", \"http://127.0.0.1:8545\", \"https://c.example.org\"]\n\
             registry = \"{REGISTRY}\"\n"
        );
        let c = parse(&three).unwrap().to_client_config().unwrap();
        let TopologySource::Registry(f) = &c.topology else { panic!("{:?}", c.topology) };
        assert_eq!((f.rpc_urls.len(), f.quorum_needed()), (3, 2));

        let invalid = ClientFile::default().to_client_config().unwrap_err();
        assert!(matches!(invalid, ConfigError::Invalid(p) if p.len() == 2));

        let p = parse(&registry_file()).unwrap().proxy_config(31337);
        assert_eq!(p, ProxyConfig::new(31337));
    }

    #[test]
    fn prices_give_the_trust_of_the_wallets_chain() {
        let reg = registry_file();
        let c = parse(&reg).unwrap();
        assert_eq!(c.prices, PricesSection::default());
        assert_eq!(c.price_trust().unwrap(), None, "no oracle keys: ETH fees only");
        let (a, b, k) = (node_id(1), node_id(2), node_id(3));
        let text = format!(
            "{reg}chain_id = 31337\n[prices]\noracle_keys = [\"{a}\", \"{}\", \"{k}\"]\nmax_age_secs = 60\n",
            &b[2..]
        );
        let trust = parse(&text).unwrap().price_trust().unwrap().unwrap();
        assert_eq!((trust.chain_id, trust.oracles.len()), (31337, 3));
        assert_eq!(trust.oracles[1].to_vec(), hex::decode(&b[2..]).unwrap(), "0x is optional");
        assert_eq!((trust.threshold, trust.max_age_ms, trust.max_skew_ms), (2, 60_000, 10_000), "0: a majority");
        assert!(nox_protocol::price::PriceBook::new(trust).is_ok());
        let c = parse(&format!("{reg}[prices]\noracle_keys = [\"{a}\"]\nthreshold = 1\n")).unwrap();
        assert_eq!(c.price_trust().unwrap().unwrap().threshold, 1);
        assert_eq!(
            PricesSection { oracle_keys: vec![a.clone(); 4], ..PricesSection::default() }.effective_threshold(),
            3
        );

        let env =
            [("NOX_CLIENT_PRICES__ORACLE_KEYS", format!("{a}, {b}")), ("NOX_CLIENT_PRICES__THRESHOLD", "2".into())];
        let c = from_toml_str(&reg, env.iter().map(|(k, v)| (*k, v.as_str()))).unwrap();
        assert_eq!(c.prices.oracle_keys, vec![a.clone(), b.clone()]);
        assert_eq!(c.price_trust().unwrap().unwrap().threshold, 2);
        let c = with_env(&reg, &[("NOX_CLIENT_WALLET__PRICE_SLIPPAGE_BPS", "250")]).unwrap();
        assert_eq!(c.wallet.price_slippage_bps, 250);
        assert_eq!(parse(&reg).unwrap().wallet.call_deadline_secs, 600);
        let c = with_env(&reg, &[("NOX_CLIENT_WALLET__CALL_DEADLINE_SECS", "120")]).unwrap();
        assert_eq!(c.wallet.call_deadline_secs, 120);
    }

    #[test]
    fn each_prices_rule_names_its_key() {
        let reg = registry_file();
        let a = node_id(1);
        let not_a_point = format!("0x02{}", "00".repeat(31));
        for (text, keys) in [
            (format!("{reg}[prices]\noracle_keys = [\"{a}\", \"0x1234\"]\n"), vec!["prices.oracle_keys[1]"]),
            (format!("{reg}[prices]\noracle_keys = [\"{not_a_point}\"]\n"), vec!["prices.oracle_keys[0]"]),
            (format!("{reg}[prices]\noracle_keys = [\"{a}\", \"{a}\"]\n"), vec!["prices.oracle_keys[1]"]),
            (
                format!("{reg}[prices]\noracle_keys = [\"x\", \"{a}\", \"{}\"]\n", &a[2..]),
                vec!["prices.oracle_keys[0]", "prices.oracle_keys[2]"],
            ),
            (format!("{reg}[prices]\noracle_keys = [\"{a}\"]\nthreshold = 2\n"), vec!["prices.threshold"]),
            (format!("{reg}[prices]\nthreshold = 1\n"), vec!["prices.threshold"]),
            (format!("{reg}[prices]\nmax_age_secs = 0\n"), vec!["prices.max_age_secs"]),
            (format!("{reg}[prices]\nmax_age_secs = 86401\n"), vec!["prices.max_age_secs"]),
            (format!("{reg}[prices]\nmax_skew_secs = 3601\n"), vec!["prices.max_skew_secs"]),
            (format!("{reg}[wallet]\nprice_slippage_bps = 10001\n"), vec!["wallet.price_slippage_bps"]),
            (
                format!("{reg}[wallet]\ncall_deadline_secs = 59\ncall_timeout_ms = 1000\n"),
                vec!["wallet.call_deadline_secs"],
            ),
            (format!("{reg}[wallet]\ncall_deadline_secs = 86401\n"), vec!["wallet.call_deadline_secs"]),
            (
                format!("{reg}[wallet]\ncall_deadline_secs = 90\ncall_timeout_ms = 90000\n"),
                vec!["wallet.call_deadline_secs"],
            ),
        ] {
            assert_eq!(problem_keys(parse(&text)), keys, "{text}");
        }
        let many: Vec<String> = (1..=17).map(node_id).collect();
        let text = format!("{reg}[prices]\noracle_keys = {many:?}\n");
        assert_eq!(problem_keys(parse(&text)), vec!["prices.oracle_keys"]);
        let bad = PricesSection { oracle_keys: vec!["xyz".into()], ..PricesSection::default() };
        let dup = PricesSection { oracle_keys: vec!["x".into(), a.clone(), a.clone()], ..PricesSection::default() };
        let problems = dup.trust(1).unwrap_err();
        assert!(problems[1].message.ends_with("is also prices.oracle_keys[1]"), "{}", problems[1].message);
        let problems = bad.trust(1).unwrap_err();
        assert_eq!(problems[0].key, "prices.oracle_keys[0]");
        assert!(problems[0].message.contains("64 hex digits"), "{}", problems[0].message);
    }

    #[test]
    fn only_loopback_listeners_count_as_local() {
        let mut p = ProxySection::default();
        assert!(p.listen_is_loopback());
        p.listen = "[::1]:8545".parse().unwrap();
        assert!(p.listen_is_loopback());
        p.listen = "0.0.0.0:8545".parse().unwrap();
        assert!(!p.listen_is_loopback());
        p.listen = "192.168.1.2:8545".parse().unwrap();
        assert!(!p.listen_is_loopback());
    }
}
