//! The node's configuration: one TOML file (`nox.toml`), documented key by key
//! in `docs/configuration.md`, with environment overrides.
//!
//! The structs here are the single source of the keys and their defaults;
//! `node/nox.example.toml` and the documentation are tested against them.
//!
//! Loading is the shared engine of `nox-config`: [`load`] goes through three
//! steps, each with its own error, so that an operator learns what is wrong
//! and where:
//!
//! 1. The file is parsed and deserialized. A syntax error carries its line and
//!    column; an unknown key or a value of the wrong type carries its dotted
//!    path (`mix.max_delay_ms`, `topology.nodes[1].layer`) and its line.
//! 2. Environment variables `NOX_<SECTION>__<KEY>` override single keys; the
//!    environment wins over the file. A value is read as the type the key has
//!    in [`NodeConfig::default`] (integer, number, boolean, string, or a
//!    comma-separated list); an empty value unsets an optional key. A variable
//!    that names no key is an error, so that a typo is never silently ignored.
//!    `[[topology.nodes]]` can only be set in the file.
//! 3. [`NodeConfig::validate`] checks the values against each other and
//!    reports every problem at once, each with its dotted key.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use nox_config::{Checks, ConfigFile};
pub use nox_config::{ConfigError, Location, Problem};
use serde::{Deserialize, Serialize};

/// The whole node configuration (`nox run --config FILE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Identity, storage and role.
    pub node: NodeSection,
    /// Network parameters every node must agree on.
    pub network: NetworkSection,
    /// libp2p transport.
    pub p2p: P2pSection,
    /// NoxRegistry, the source of the topology and of admission.
    pub chain: ChainSection,
    /// Nodes known without a chain (a development mode; see [`TopologySection`]).
    pub topology: TopologySection,
    /// Ingest stage.
    pub ingest: IngestSection,
    /// Worker stage.
    pub workers: WorkersSection,
    /// Mix stage.
    pub mix: MixSection,
    /// Egress stage.
    pub egress: EgressSection,
    /// Replay cache.
    pub replay: ReplaySection,
    /// Cover traffic.
    pub cover: CoverSection,
    /// Exit stage (read on exits only).
    pub exit: ExitSection,
    /// Trusted price oracles (the node's price book).
    pub prices: PricesSection,
    /// HTTP endpoints.
    pub http: HttpSection,
    /// The optional SMTP entry (off by default).
    pub smtp_entry: crate::smtp_entry::SmtpEntrySection,
    /// Logging.
    pub log: LogSection,
}

/// A node's role in the topology (`relay` or `exit`): one definition for
/// the configuration, the descriptors and the registry.
pub use nox_protocol::Role;

/// `[node]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Directory holding `identity.key` and `wallet.key` (from `nox keygen`).
    pub keys_dir: PathBuf,
    /// Directory for the node's database (epoch keys, replay caches).
    pub data_dir: PathBuf,
    /// Relay or exit.
    pub role: Role,
    /// Layer 0 (entry), 1 (mix) or 2 (exit). Until the chain watcher assigns
    /// layers, the operator sets it; exits must be layer 2.
    pub layer: u8,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            keys_dir: PathBuf::from("./nox-keys"),
            data_dir: PathBuf::from("./nox-data"),
            role: Role::Relay,
            layer: 0,
        }
    }
}

/// `[network]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSection {
    /// Epoch length in seconds; epoch = unix time / epoch_secs.
    pub epoch_secs: u64,
    /// How long after an epoch change the previous epoch's key is still
    /// accepted, in seconds. Must be less than half an epoch.
    pub grace_secs: u64,
}

impl Default for NetworkSection {
    fn default() -> Self {
        NetworkSection { epoch_secs: nox_protocol::descriptor::DEFAULT_EPOCH_SECS, grace_secs: 600 }
    }
}

/// `[p2p]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct P2pSection {
    /// Multiaddrs to listen on.
    pub listen: Vec<String>,
    /// Multiaddrs other nodes should dial (published in descriptors). Empty:
    /// the listen addresses that are not unspecified (0.0.0.0).
    pub external_addresses: Vec<String>,
    /// Most connections at once.
    pub max_connections: u32,
    /// Most connections from one IPv4 /24 (or IPv6 /48).
    pub max_connections_per_subnet: u32,
    /// Seconds without traffic before an idle connection is closed.
    pub idle_timeout_secs: u64,
    /// Seconds a peer has to complete the control handshake.
    pub handshake_timeout_secs: u64,
    /// How links are secured: `tls` (TLS 1.3 offered first, Noise accepted)
    /// or `noise` (Noise only).
    pub security: nox_net::p2p::LinkSecurity,
    /// Relay packets to a next hop over a packet link (a direct TCP
    /// connection of fixed AES-256-GCM frames, set up over the libp2p link,
    /// `nox_net::packet_link`) when the hop offers one, and offer links to
    /// the nodes that relay here; `false`: `/nox/packet/1` streams only.
    pub packet_link: bool,
    /// Where packet links are accepted, as `IP:port`. Unset: the IP of the
    /// first `/ip4` or `/ip6` listen address, on a free port (fine where every
    /// port of the host is reachable; behind a firewall, set a fixed port and
    /// open it). Senders dial the host of this node's published addresses.
    pub packet_link_listen: Option<String>,
}

impl Default for P2pSection {
    fn default() -> Self {
        P2pSection {
            listen: vec!["/ip4/0.0.0.0/tcp/9000".to_string()],
            external_addresses: Vec::new(),
            max_connections: 1024,
            max_connections_per_subnet: 16,
            idle_timeout_secs: 120,
            handshake_timeout_secs: 10,
            security: nox_net::p2p::LinkSecurity::default(),
            packet_link: true,
            packet_link_listen: None,
        }
    }
}

/// `[chain]`: where NoxRegistry lives. With `rpc_url` or `rpc_urls` set the
/// registry is the only source of the topology and of admission (a peer must
/// be registered with at least the minimum stake); with neither the node runs
/// on `[[topology.nodes]]`, a development mode that checks no stake.
///
/// With several endpoints a registry view is accepted only when `rpc_quorum`
/// of them agree on it (block hash and view digest); every endpoint must be
/// `https://` unless its host is loopback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChainSection {
    /// Ethereum JSON-RPC endpoint (`https://`, or `http://` on a loopback
    /// host); unset: no chain. Shorthand for a one-element `rpc_urls`.
    pub rpc_url: Option<String>,
    /// Several independent endpoints, of which `rpc_quorum` must agree.
    pub rpc_urls: Vec<String>,
    /// How many of the endpoints must agree on a registry view; 0 = a
    /// majority. At least a majority, at most all of them.
    pub rpc_quorum: u64,
    /// Chain id the endpoint must report; checked at start and on every reconnect.
    pub chain_id: u64,
    /// NoxRegistry's address.
    pub registry: Option<String>,
    /// First block to read registry events from (the registry's deployment block).
    pub start_block: u64,
    /// Blocks a change must be buried under before the node acts on it.
    pub confirmations: u64,
    /// Milliseconds between polls of the endpoint.
    pub poll_interval_ms: u64,
    /// Most blocks asked for in one `eth_getLogs`.
    pub max_log_range: u64,
    /// Milliseconds one RPC request may take.
    pub rpc_timeout_ms: u64,
}

impl Default for ChainSection {
    fn default() -> Self {
        ChainSection {
            rpc_url: None,
            rpc_urls: Vec::new(),
            rpc_quorum: 0,
            chain_id: 1,
            registry: None,
            start_block: 0,
            confirmations: 2,
            poll_interval_ms: 2_000,
            max_log_range: 2_000,
            rpc_timeout_ms: 10_000,
        }
    }
}

impl ChainSection {
    /// Whether a chain is configured.
    pub fn enabled(&self) -> bool {
        !self.endpoints().is_empty()
    }

    /// The configured endpoints: `rpc_urls`, or `rpc_url` alone.
    pub fn endpoints(&self) -> Vec<String> {
        if self.rpc_urls.is_empty() { self.rpc_url.iter().cloned().collect() } else { self.rpc_urls.clone() }
    }

    /// The registry address, if set and valid (0x + 40 hex digits, not zero).
    pub fn registry_address(&self) -> Option<alloy_primitives::Address> {
        let text = self.registry.as_deref()?;
        let digits = text.strip_prefix("0x")?;
        if digits.len() != 40 {
            return None;
        }
        text.parse().ok().filter(|a: &alloy_primitives::Address| !a.is_zero())
    }
}

/// `[topology]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TopologySection {
    /// Statically known nodes (`[[topology.nodes]]`).
    pub nodes: Vec<StaticNode>,
}

/// One `[[topology.nodes]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticNode {
    /// The node id (Ed25519 identity public key), `0x` + 64 hex digits.
    pub node_id: String,
    /// Layer 0, 1 or 2.
    pub layer: u8,
    /// Multiaddrs to dial it on.
    pub addresses: Vec<String>,
}

/// `[ingest]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSection {
    /// Capacity of the queue from ingest to the workers, in packets.
    pub queue: usize,
    /// Sustained packets per second allowed from one node peer.
    pub node_rate: f64,
    /// Burst allowance for a node peer, in packets.
    pub node_burst: u32,
    /// Sustained packets per second allowed from one client peer.
    pub client_rate: f64,
    /// Burst allowance for a client peer, in packets.
    pub client_burst: u32,
    /// Leading zero bits a client's proof of work must have (0 disables it).
    pub pow_bits: u8,
    /// How long an accepted submission's proof is remembered, so that the
    /// same frame again is refused before any X25519, in seconds (at least
    /// half of it, so the default of two epochs covers the epoch a packet is
    /// usable in; see `pipeline::ingest::SeenSubmissions`).
    pub pow_seen_secs: u64,
    /// Most proofs remembered at once (two rotating sets of half each); when
    /// one set fills before half the window, it rotates early.
    pub pow_seen_max: usize,
}

impl Default for IngestSection {
    fn default() -> Self {
        IngestSection {
            queue: 4096,
            node_rate: 20_000.0,
            node_burst: 4096,
            client_rate: 100.0,
            client_burst: 200,
            pow_bits: 12,
            pow_seen_secs: 2 * nox_protocol::descriptor::DEFAULT_EPOCH_SECS,
            pow_seen_max: 1 << 22,
        }
    }
}

/// `[workers]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersSection {
    /// Worker threads; 0 = one per available core.
    pub threads: usize,
    /// Capacity of the queue from the workers to the mix stage, in packets.
    pub queue: usize,
}

impl Default for WorkersSection {
    fn default() -> Self {
        WorkersSection { threads: 0, queue: 4096 }
    }
}

/// `[mix]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixSection {
    /// Cap on the sender's per-hop delay, in milliseconds.
    pub max_delay_ms: u64,
    /// Most packets held at once (timer queue plus batch).
    pub capacity: usize,
    /// Batch window in milliseconds; 0 disables batching.
    pub batch_window_ms: u64,
    /// Floor of a sender's fair share of `capacity`, in packets: a node, the
    /// node's own traffic and the client tier each may hold
    /// `max(capacity / (groups holding packets + 1), min_share_per_peer)`.
    pub min_share_per_peer: usize,
}

impl Default for MixSection {
    fn default() -> Self {
        MixSection { max_delay_ms: 10_000, capacity: 65_536, batch_window_ms: 0, min_share_per_peer: 256 }
    }
}

/// `[egress]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressSection {
    /// Capacity of the queue from the mix stage to egress, in packets.
    pub queue: usize,
    /// Packets queued for one next hop before further ones are dropped.
    pub peer_queue: usize,
    /// Replies kept for clients that have not collected them.
    pub reply_mailbox: usize,
    /// Seconds an uncollected reply is kept.
    pub reply_ttl_secs: u64,
    /// Most reply claims one claimant (a client, or a node for its loops)
    /// holds at once; it also never holds more than half of the claim slots
    /// the others leave free.
    pub reply_claims_per_peer: usize,
    /// Bytes queued on all client links together (replies pushed to clients);
    /// one client gets at most half of what the others leave free, and at
    /// most `peer_queue` packets.
    pub client_queue_bytes: usize,
    /// Milliseconds a client link may take to write one packet, and its queue
    /// may stay at its share (never drained to half of it); past either, the
    /// client is disconnected and its queue dropped.
    pub client_write_timeout_ms: u64,
}

impl Default for EgressSection {
    fn default() -> Self {
        EgressSection {
            queue: 4096,
            peer_queue: 1024,
            reply_mailbox: 4096,
            reply_ttl_secs: 300,
            reply_claims_per_peer: 1024,
            client_queue_bytes: 64 << 20,
            client_write_timeout_ms: 10_000,
        }
    }
}

/// `[replay]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplaySection {
    /// Hold each packet until its replay tag is on disk, so that a crash
    /// cannot reopen a replay window.
    pub durable_before_forward: bool,
    /// Most tags remembered per epoch key; beyond it packets are refused, and
    /// before it a sender holding as many tags as there is room left is shed
    /// (`nox_node::replay`). 0 = what the worker threads process in an epoch
    /// at full speed, twice (`nox_node::replay::default_max_tags`).
    pub max_tags_per_epoch: usize,
    /// Memory an epoch key's replay cache may take, in MiB: the default cap
    /// is lowered to fit it, and an explicit `max_tags_per_epoch` must fit it
    /// (`nox_node::replay::MEMORY_BYTES_PER_TAG` a tag).
    pub max_memory_mib: u64,
    /// While tags keep arriving, start a commit at most this often
    /// (milliseconds); 0 commits again as soon as the last commit is done.
    pub commit_interval_ms: u64,
}

impl Default for ReplaySection {
    fn default() -> Self {
        ReplaySection {
            durable_before_forward: true,
            max_tags_per_epoch: 0,
            max_memory_mib: 4_864,
            commit_interval_ms: 2,
        }
    }
}

/// `[cover]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoverSection {
    /// Loop packets per second (Poisson); 0 disables.
    pub loop_rate: f64,
    /// Drop packets per second (Poisson); 0 disables.
    pub drop_rate: f64,
    /// Mean per-hop delay of cover packets, in milliseconds.
    pub mean_delay_ms: f64,
    /// Seconds after which an unreturned loop counts as lost.
    pub loop_timeout_secs: u64,
}

impl Default for CoverSection {
    fn default() -> Self {
        CoverSection { loop_rate: 0.5, drop_rate: 0.5, mean_delay_ms: 50.0, loop_timeout_secs: 60 }
    }
}

/// `[exit]`: the exit stage's bounds (read on exits only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExitSection {
    /// Whether the exit answers `Echo` requests.
    pub echo: bool,
    /// Capacity of the queue of client fragments into the exit stage, in packets.
    pub queue: usize,
    /// Requests served at once; beyond it a request is answered `Busy`.
    pub concurrency: usize,
    /// Milliseconds from a complete request to its answer; beyond it the answer is `Timeout`.
    pub request_timeout_ms: u64,
    /// Shard bytes the reassembler holds across incomplete messages.
    pub reassembly_max_bytes: usize,
    /// Incomplete messages the reassembler holds at once.
    pub reassembly_max_messages: usize,
    /// Data plus parity fragments one message may declare.
    pub reassembly_max_fragments: u16,
    /// Longest request message, in bytes.
    pub reassembly_max_message_bytes: u32,
    /// Seconds after its first fragment an incomplete message is dropped.
    pub reassembly_stale_secs: u64,
    /// The Ethereum JSON-RPC endpoint behind `RawBroadcast` and `RpcCall`
    /// (`http://` or `https://`); required when either is on.
    pub rpc_url: Option<String>,
    /// Whether the exit broadcasts user-signed transactions (`RawBroadcast`).
    pub raw_broadcast: bool,
    /// Whether the exit answers read-only JSON-RPC calls (`RpcCall`).
    pub rpc_call: bool,
    /// The JSON-RPC methods `RpcCall` offers, each from the built-in
    /// read-only list (`exit::rpc_call::RPC_METHODS`, also the default).
    pub rpc_methods: Vec<String>,
    /// The longest block range of an `eth_getLogs` filter.
    pub rpc_max_log_blocks: u64,
    /// The longest upstream answer read, in bytes.
    pub rpc_max_answer_bytes: usize,
    /// Milliseconds one upstream request may take (never past the request's deadline).
    pub upstream_timeout_ms: u64,
    /// Whether the exit makes HTTP requests (`Http`).
    pub http: bool,
    /// The longest HTTP answer body read, in bytes.
    pub http_max_bytes: usize,
    /// Milliseconds one HTTP request may take, redirects included.
    pub http_timeout_ms: u64,
    /// Redirects an HTTP request follows, each checked like the first URL.
    pub http_max_redirects: u32,
    /// Let HTTP requests reach loopback addresses (only loopback). For tests
    /// against local servers; never on a public exit.
    pub http_allow_loopback: bool,
    /// Answers kept by request id, so that a retried request is answered
    /// again instead of performed twice.
    pub reply_cache_entries: usize,
    /// Bytes of answers the reply cache and held answers take at most.
    pub reply_cache_bytes: usize,
    /// Seconds an answer stays in the cache, and a held answer waits for the
    /// SURBs it asked for.
    pub reply_cache_secs: u64,
    /// Longest answer an exit sends back (asking for more SURBs when the
    /// request carried too few); at most what 256 fragments carry.
    pub reply_max_bytes: usize,
    /// Whether the exit relays paid calls (`EthRequest`) through
    /// `NoxPool.relay` from its own wallet; needs `exit.rpc_url`,
    /// `exit.eth_wallet_key_file`, `exit.eth_pool` and `exit.eth_verifying_key`.
    pub eth_request: bool,
    /// A file holding the exit wallet's private key as hex (`0x` optional);
    /// must not be readable by group or others.
    pub eth_wallet_key_file: Option<String>,
    /// The NoxPool address the exit relays for.
    pub eth_pool: Option<String>,
    /// The spend circuit's verifying key (`spend.vk`, written by `nox-zk keys`).
    pub eth_verifying_key: Option<String>,
    /// Margin over the gas cost a fee must carry, in basis points (1000 = 10 %).
    pub eth_margin_bps: u16,
    /// The most gas a relayed call may ask for.
    pub eth_max_call_gas: u64,
    /// The highest max fee per gas the exit pays, in gwei.
    pub eth_max_fee_per_gas_gwei: u64,
    /// Seconds an `EthRequest` may take from its arrival to its answer
    /// (checks, simulation and inclusion); replaces `exit.request_timeout_ms`
    /// for this kind.
    pub eth_request_timeout_secs: u64,
    /// Seconds the exit waits for a relay's receipt before answering `NoReceipt`.
    pub eth_receipt_timeout_secs: u64,
    /// Seconds after which a pending transaction is re-sent with higher fees.
    pub eth_bump_after_secs: u64,
    /// Seconds between the exit's looks at the pool's queue: it flushes the
    /// closed segments of queued leaves (paid by the insertion bounty).
    pub eth_flush_every_secs: u64,
    /// Segments (of up to 32 leaves) one flush inserts at most.
    pub eth_flush_max_segments: usize,
    /// Also flush the open segment once its first leaf has waited this many
    /// seconds (0: never; the exit then pays more gas per leaf than the
    /// bounty covers).
    pub eth_flush_open_after_secs: u64,
    /// The nearest deadline the exit accepts on a paid call, in seconds from
    /// now: time to simulate, send and get the relay mined before the pool
    /// refuses it.
    pub eth_min_deadline_secs: u64,
    /// Paid calls served at once; beyond it a request is refused `Busy`.
    pub eth_max_in_flight: usize,
    /// ERC-20 tokens (addresses) the exit accepts fees in besides ETH, priced
    /// with the oracles of `[prices]`; needs `prices.oracle_keys` and
    /// `exit.eth_request`.
    pub eth_fee_tokens: Vec<String>,
    /// Whether the exit delivers mail (`Mail`): SMTP to the recipients' mail
    /// servers or `exit.mail_smarthost`, and NNTP posts when
    /// `exit.mail_nntp_server` is set (`crate::exit::mail`).
    pub mail: bool,
    /// The mail queue's redb file; unset: `mail-queue.redb` in `node.data_dir`.
    pub mail_queue_path: Option<String>,
    /// Most recipients (or newsgroups) one message may have.
    pub mail_max_recipients: usize,
    /// Longest message accepted, in bytes (after its padding is removed).
    pub mail_max_message_bytes: usize,
    /// Most messages the queue holds; beyond it mail is refused `Busy`.
    pub mail_max_queue_entries: usize,
    /// Most bytes of messages and recipients the queue holds; beyond it mail
    /// is refused `Busy`.
    pub mail_max_queue_bytes: u64,
    /// Most request ids of accepted mail remembered (for
    /// `exit.mail_lifetime_secs`) so that a retry is not queued twice; the
    /// soonest to expire are forgotten first beyond it.
    pub mail_max_accepted_ids: usize,
    /// The batch window, in seconds: accepted mail waits for the end of the
    /// current window (windows aligned on multiples of it), then each
    /// window's mail leaves in a random order.
    pub mail_batch_secs: u64,
    /// Messages delivered at once.
    pub mail_delivery_concurrency: usize,
    /// Seconds before the first retry of a message not yet delivered; each
    /// retry waits twice as long as the one before.
    pub mail_retry_min_secs: u64,
    /// The longest wait between two attempts, in seconds.
    pub mail_retry_max_secs: u64,
    /// Seconds after its acceptance a message not yet delivered is given up
    /// (and its request id forgotten).
    pub mail_lifetime_secs: u64,
    /// The envelope sender (`MAIL FROM`); unset: the null reverse path `<>`.
    pub mail_envelope_from: Option<String>,
    /// The name the exit greets mail servers with (`EHLO`).
    pub mail_helo: String,
    /// The port of the recipients' mail servers.
    pub mail_smtp_port: u16,
    /// DNS servers (`ip:port`) asked for MX records; empty: the system's
    /// (`/etc/resolv.conf`).
    pub mail_resolvers: Vec<String>,
    /// Send all SMTP mail through this relay (`host:port`) instead of the
    /// recipients' mail servers.
    pub mail_smarthost: Option<String>,
    /// TLS to the smarthost: `starttls` (required, certificate checked) or `none`.
    pub mail_smarthost_tls: SmarthostTls,
    /// PEM file of the certificate authorities the smarthost's certificate
    /// is checked against; unset: the Web PKI roots.
    pub mail_smarthost_ca_file: Option<String>,
    /// The user name the exit authenticates to the smarthost with.
    pub mail_smarthost_user: Option<String>,
    /// A file holding the smarthost password; must not be readable by group
    /// or others.
    pub mail_smarthost_password_file: Option<String>,
    /// The news server (`host:port`) `Mail` requests for newsgroups are
    /// posted to; unset: the exit does not post.
    pub mail_nntp_server: Option<String>,
    /// The user name the exit authenticates to the news server with.
    pub mail_nntp_user: Option<String>,
    /// A file holding the news server password; must not be readable by
    /// group or others.
    pub mail_nntp_password_file: Option<String>,
    /// Let mail reach loopback addresses (only loopback). For tests against
    /// local servers; never on a public exit.
    pub mail_allow_loopback: bool,
    /// Seconds a connection to a mail or news server may take to open.
    pub mail_connect_timeout_secs: u64,
    /// Seconds the exit waits for a server's reply to one command.
    pub mail_command_timeout_secs: u64,
    /// Seconds the exit waits for the reply to a message's data.
    pub mail_data_timeout_secs: u64,
}

/// TLS to the smarthost (`exit.mail_smarthost_tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmarthostTls {
    /// STARTTLS, required, with the certificate checked.
    #[default]
    Starttls,
    /// Plain SMTP (a relay on the same host or a trusted network).
    None,
}

impl Default for ExitSection {
    fn default() -> Self {
        let r = nox_protocol::fragment::ReassemblyLimits::default();
        ExitSection {
            echo: true,
            queue: 4096,
            concurrency: 256,
            request_timeout_ms: 30_000,
            reassembly_max_bytes: r.max_bytes,
            reassembly_max_messages: r.max_messages,
            reassembly_max_fragments: r.max_fragments_per_message,
            reassembly_max_message_bytes: r.max_message_len,
            reassembly_stale_secs: r.stale_after.as_secs(),
            rpc_url: None,
            raw_broadcast: false,
            rpc_call: false,
            rpc_methods: crate::exit::rpc_call::RPC_METHODS.iter().map(|m| m.to_string()).collect(),
            rpc_max_log_blocks: 10_000,
            rpc_max_answer_bytes: 8 << 20,
            upstream_timeout_ms: 10_000,
            http: false,
            http_max_bytes: 1 << 20,
            http_timeout_ms: 10_000,
            http_max_redirects: 5,
            http_allow_loopback: false,
            reply_cache_entries: 4096,
            reply_cache_bytes: 64 << 20,
            reply_cache_secs: 300,
            reply_max_bytes: crate::exit::max_reply_bytes(),
            eth_request: false,
            eth_wallet_key_file: None,
            eth_pool: None,
            eth_verifying_key: None,
            eth_margin_bps: 1000,
            eth_max_call_gas: 2_000_000,
            eth_max_fee_per_gas_gwei: 500,
            eth_request_timeout_secs: 120,
            eth_receipt_timeout_secs: 60,
            eth_bump_after_secs: 30,
            eth_flush_every_secs: 30,
            eth_flush_max_segments: 4,
            eth_flush_open_after_secs: 0,
            eth_min_deadline_secs: 60,
            eth_max_in_flight: 16,
            eth_fee_tokens: Vec::new(),
            mail: false,
            mail_queue_path: None,
            mail_max_recipients: 100,
            mail_max_message_bytes: nox_mail::bucket::MAX_MESSAGE_LEN,
            mail_max_queue_entries: 10_000,
            mail_max_queue_bytes: 1 << 30,
            mail_max_accepted_ids: 1_000_000,
            mail_batch_secs: 30,
            mail_delivery_concurrency: 8,
            mail_retry_min_secs: 60,
            mail_retry_max_secs: 3600,
            mail_lifetime_secs: 4 * 86_400,
            mail_envelope_from: None,
            mail_helo: "localhost".to_string(),
            mail_smtp_port: 25,
            mail_resolvers: Vec::new(),
            mail_smarthost: None,
            mail_smarthost_tls: SmarthostTls::Starttls,
            mail_smarthost_ca_file: None,
            mail_smarthost_user: None,
            mail_smarthost_password_file: None,
            mail_nntp_server: None,
            mail_nntp_user: None,
            mail_nntp_password_file: None,
            mail_allow_loopback: false,
            mail_connect_timeout_secs: 30,
            mail_command_timeout_secs: 300,
            mail_data_timeout_secs: 600,
        }
    }
}

impl ExitSection {
    /// `exit.eth_fee_tokens` as addresses, skipping any that does not parse
    /// (validation reports those).
    pub fn fee_token_addresses(&self) -> Vec<[u8; 20]> {
        self.eth_fee_tokens.iter().filter_map(|t| parse_address(t)).collect()
    }
}

/// `[prices]`: the oracles whose signed price rounds the node accepts,
/// relays and (on an exit) prices token fees with (`crate::prices`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PricesSection {
    /// Trusted oracle keys: Ed25519 public keys, 64 hex digits (`0x`
    /// optional). Empty: no price book; the node relays no price gossip and
    /// its exit takes fees in ETH only.
    pub oracle_keys: Vec<String>,
    /// Distinct oracles that must quote an asset before its price is used;
    /// 0 = a majority of the keys (n/2 + 1).
    pub threshold: usize,
    /// Seconds after which a round is too old to accept or to price with.
    pub max_age_secs: u64,
    /// Seconds a round's timestamp may be ahead of this node's clock.
    pub max_skew_secs: u64,
    /// The chain whose tokens the rounds price; 0 = `chain.chain_id`.
    pub chain_id: u64,
}

impl Default for PricesSection {
    fn default() -> Self {
        PricesSection { oracle_keys: Vec::new(), threshold: 0, max_age_secs: 120, max_skew_secs: 10, chain_id: 0 }
    }
}

/// `0x` + 40 hex digits as an address.
fn parse_address(text: &str) -> Option<[u8; 20]> {
    let digits = text.strip_prefix("0x")?;
    let mut a = [0u8; 20];
    (digits.len() == 40 && hex::decode_to_slice(digits, &mut a).is_ok()).then_some(a)
}

impl NodeConfig {
    /// The trust `[prices]` describes, or `None` without oracle keys (or
    /// with a section validation refuses).
    pub fn price_trust(&self) -> Option<nox_protocol::price::Trust> {
        let p = &self.prices;
        let chain_id = if p.chain_id == 0 { self.chain.chain_id } else { p.chain_id };
        p.settings().trust(chain_id).ok().flatten()
    }
}

impl PricesSection {
    /// The section as the rule shared with the client reads it.
    fn settings(&self) -> nox_protocol::price::TrustSettings<'_> {
        nox_protocol::price::TrustSettings {
            oracle_keys: &self.oracle_keys,
            threshold: self.threshold,
            max_age_secs: self.max_age_secs,
            max_skew_secs: self.max_skew_secs,
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Admin listener: `/health`, `/metrics`, `/topology`.
    pub listen: SocketAddr,
    /// Optional public listener serving only `/health` and `/topology`.
    pub public_listen: Option<SocketAddr>,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection { listen: SocketAddr::from(([127, 0, 0, 1], 9100)), public_listen: None }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A `tracing` filter, e.g. `info` or `nox_node=debug`.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection { level: "info".to_string(), format: LogFormat::Text }
    }
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

/// Prefix of every environment override: `NOX_<SECTION>__<KEY>`.
pub const ENV_PREFIX: &str = "NOX_";

/// Optional keys: absent from the serialized defaults (they are `None`), so an
/// environment override cannot learn their type there. Every one is a string.
const OPTIONAL_KEYS: &[(&str, &str)] = &[
    ("http", "public_listen"),
    ("chain", "rpc_url"),
    ("chain", "registry"),
    ("exit", "rpc_url"),
    ("exit", "eth_wallet_key_file"),
    ("exit", "eth_pool"),
    ("exit", "eth_verifying_key"),
    ("exit", "mail_queue_path"),
    ("exit", "mail_envelope_from"),
    ("exit", "mail_smarthost"),
    ("exit", "mail_smarthost_ca_file"),
    ("exit", "mail_smarthost_user"),
    ("exit", "mail_smarthost_password_file"),
    ("exit", "mail_nntp_server"),
    ("exit", "mail_nntp_user"),
    ("exit", "mail_nntp_password_file"),
];

/// Keys only the file can set (arrays of tables).
const FILE_ONLY_KEYS: &[(&str, &str)] = &[("topology", "nodes")];

/// Most redirects `exit.http_max_redirects` may allow.
pub const MAX_HTTP_REDIRECTS: u32 = 20;

/// Largest `mix.max_delay_ms`: delays travel as microseconds in a `u32`.
pub const MAX_DELAY_MS_LIMIT: u64 = u32::MAX as u64 / 1000;

/// Reads `path`, applies the process's `NOX_*` environment overrides and
/// validates the result.
pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
    nox_config::load(path)
}

/// [`load`] with the environment given as `(name, value)` pairs.
pub fn load_with_env<K: AsRef<OsStr>, V: AsRef<OsStr>>(
    path: &Path,
    env: impl IntoIterator<Item = (K, V)>,
) -> Result<NodeConfig, ConfigError> {
    nox_config::load_with_env(path, env)
}

/// Parses `text` as `nox.toml`, applies the `NOX_*` overrides found in `env`
/// (all variables, as `(name, value)` pairs: the whole list is needed to find
/// misspelt ones), and validates the result.
pub fn from_toml_str<K: AsRef<OsStr>, V: AsRef<OsStr>>(
    text: &str,
    env: impl IntoIterator<Item = (K, V)>,
) -> Result<NodeConfig, ConfigError> {
    nox_config::from_toml_str(text, env)
}

impl ConfigFile for NodeConfig {
    const ENV_PREFIX: &'static str = ENV_PREFIX;
    const OPTIONAL_KEYS: &'static [(&'static str, &'static str)] = OPTIONAL_KEYS;
    const FILE_ONLY_KEYS: &'static [(&'static str, &'static str)] = FILE_ONLY_KEYS;

    fn validate(&self) -> Result<(), Vec<Problem>> {
        NodeConfig::validate(self)
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

/// A `[[topology.nodes]]` node id that is not `0x` followed by 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a node id: expected 0x followed by 64 hex digits")]
pub struct NodeIdError(pub String);

impl StaticNode {
    /// The node id as bytes (the Ed25519 identity public key).
    pub fn id_bytes(&self) -> Result<[u8; 32], NodeIdError> {
        let invalid = || NodeIdError(self.node_id.clone());
        let digits = self.node_id.strip_prefix("0x").ok_or_else(invalid)?;
        if digits.len() != 64 {
            return Err(invalid());
        }
        let mut id = [0u8; 32];
        hex::decode_to_slice(digits, &mut id).map_err(|_| invalid())?;
        Ok(id)
    }
}

/// An `http://` or `https://` URL with a host.
fn check_http_url(c: &mut Checks, key: &str, url: &str) {
    match url.parse::<alloy::transports::http::reqwest::Url>() {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(_) => c.fail(key, format!("`{url}` is not an http:// or https:// URL")),
        Err(e) => c.fail(key, format!("`{url}` is not a URL: {e}")),
    }
}

/// A registry endpoint: an http(s) URL with a host, and TLS unless the host
/// is loopback (the rule of `nox_eth::rpc::check_transport`).
fn check_chain_url(c: &mut Checks, key: String, url: &str) {
    let mut probe = Checks::default();
    check_http_url(&mut probe, &key, url);
    if probe.finish().is_err() {
        check_http_url(c, &key, url);
    } else if let Err(e) = nox_eth::rpc::check_transport(url) {
        c.fail(key, e.to_string());
    }
}

/// A multiaddr that parses and is not empty.
fn check_multiaddr(c: &mut Checks, key: String, addr: &str) {
    match addr.parse::<libp2p::Multiaddr>() {
        Ok(parsed) if parsed.is_empty() => c.fail(key, "empty multiaddr; expected e.g. /ip4/1.2.3.4/tcp/9000"),
        Ok(_) => {}
        Err(e) => c.fail(key, format!("`{addr}` is not a multiaddr: {e}")),
    }
}

impl NodeConfig {
    /// Checks every value and their relations; returns every problem found,
    /// each with its dotted key (`p2p.listen[1]`) and the offending value.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut c = Checks::default();

        let node = &self.node;
        if node.layer > nox_protocol::descriptor::MAX_LAYER {
            c.fail("node.layer", format!("must be 0 (entry), 1 (mix) or 2 (exit), got {}", node.layer));
        } else if node.role == Role::Exit && node.layer != 2 {
            c.fail("node.role", format!("an exit must be in layer 2, but node.layer is {}", node.layer));
        } else if node.role == Role::Relay && node.layer == 2 {
            c.fail(
                "node.layer",
                "layer 2 is the exit layer, but node.role is \"relay\"; use layer 0 or 1, or role \"exit\"",
            );
        }

        let network = &self.network;
        c.at_least("network.epoch_secs", network.epoch_secs, 1);
        if network.epoch_secs >= 1 && network.grace_secs.saturating_mul(2) >= network.epoch_secs {
            c.fail(
                "network.grace_secs",
                format!(
                    "must be less than half of network.epoch_secs ({} s), got {}",
                    network.epoch_secs, network.grace_secs
                ),
            );
        }

        let p2p = &self.p2p;
        if p2p.listen.is_empty() {
            c.fail("p2p.listen", "at least one listen address is needed");
        }
        for (i, addr) in p2p.listen.iter().enumerate() {
            check_multiaddr(&mut c, format!("p2p.listen[{i}]"), addr);
        }
        for (i, addr) in p2p.external_addresses.iter().enumerate() {
            check_multiaddr(&mut c, format!("p2p.external_addresses[{i}]"), addr);
        }
        c.at_least("p2p.max_connections", p2p.max_connections, 1);
        c.at_least("p2p.max_connections_per_subnet", p2p.max_connections_per_subnet, 1);
        if p2p.max_connections >= 1 {
            c.at_most(
                "p2p.max_connections_per_subnet",
                p2p.max_connections_per_subnet,
                p2p.max_connections,
                " (p2p.max_connections)",
            );
        }
        c.at_least("p2p.idle_timeout_secs", p2p.idle_timeout_secs, 1);
        c.at_least("p2p.handshake_timeout_secs", p2p.handshake_timeout_secs, 1);
        if let Some(listen) = &p2p.packet_link_listen
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            c.fail("p2p.packet_link_listen", format!("`{listen}` is not an IP:port, e.g. 0.0.0.0:9001"));
        }

        let chain = &self.chain;
        c.rpc_endpoints("chain", chain.rpc_url.as_deref(), &chain.rpc_urls, check_chain_url);
        if chain.enabled() {
            let n = chain.endpoints().len();
            let quorum = usize::try_from(chain.rpc_quorum).unwrap_or(usize::MAX);
            if let Some(problem) = nox_eth::registry::follower::quorum_problem(quorum, n) {
                c.fail("chain.rpc_quorum", problem);
            }
            c.at_least("chain.chain_id", chain.chain_id, 1);
            match &chain.registry {
                None => c.fail("chain.registry", "required when chain.rpc_url or chain.rpc_urls is set"),
                Some(r) if chain.registry_address().is_none() => {
                    c.fail("chain.registry", format!("`{r}` is not an address (0x + 40 hex digits, not zero)"))
                }
                Some(_) => {}
            }
            c.at_least("chain.poll_interval_ms", chain.poll_interval_ms, 100);
            c.at_least("chain.max_log_range", chain.max_log_range, 1);
            c.at_least("chain.rpc_timeout_ms", chain.rpc_timeout_ms, 100);
            if !self.topology.nodes.is_empty() {
                c.fail(
                    "topology.nodes",
                    "must be empty when chain.rpc_url or chain.rpc_urls is set: the registry is the only source of \
                     the topology",
                );
            }
        }

        let mut ids: BTreeMap<[u8; 32], usize> = BTreeMap::new();
        for (i, n) in self.topology.nodes.iter().enumerate() {
            let key = format!("topology.nodes[{i}]");
            match n.id_bytes() {
                Err(e) => c.fail(format!("{key}.node_id"), e.to_string()),
                Ok(id) => {
                    if ed25519_dalek::VerifyingKey::from_bytes(&id).is_err() {
                        c.fail(format!("{key}.node_id"), format!("`{}` is not an Ed25519 public key", n.node_id));
                    }
                    if let Some(first) = ids.insert(id, i) {
                        c.fail(format!("{key}.node_id"), format!("`{}` is also topology.nodes[{first}]", n.node_id));
                    }
                }
            }
            if n.layer > nox_protocol::descriptor::MAX_LAYER {
                c.fail(format!("{key}.layer"), format!("must be 0, 1 or 2, got {}", n.layer));
            }
            if n.addresses.is_empty() {
                c.fail(format!("{key}.addresses"), "at least one address is needed");
            }
            for (j, addr) in n.addresses.iter().enumerate() {
                check_multiaddr(&mut c, format!("{key}.addresses[{j}]"), addr);
            }
        }

        let ingest = &self.ingest;
        c.at_least("ingest.queue", ingest.queue, 1);
        c.positive_rate("ingest.node_rate", ingest.node_rate);
        c.at_least("ingest.node_burst", ingest.node_burst, 1);
        c.positive_rate("ingest.client_rate", ingest.client_rate);
        c.at_least("ingest.client_burst", ingest.client_burst, 1);
        c.at_most("ingest.pow_bits", ingest.pow_bits, nox_protocol::pow::MAX_POW_BITS, "");
        c.at_least("ingest.pow_seen_secs", ingest.pow_seen_secs, 2);
        c.at_most("ingest.pow_seen_secs", ingest.pow_seen_secs, 86_400, "");
        c.at_least("ingest.pow_seen_max", ingest.pow_seen_max, 2);
        c.at_most("ingest.pow_seen_max", ingest.pow_seen_max, 1 << 24, "");

        c.at_least("workers.queue", self.workers.queue, 1);

        let mix = &self.mix;
        c.at_most(
            "mix.max_delay_ms",
            mix.max_delay_ms,
            MAX_DELAY_MS_LIMIT,
            " (delays travel as microseconds in a u32)",
        );
        c.at_least("mix.capacity", mix.capacity, 1);
        c.at_least("mix.min_share_per_peer", mix.min_share_per_peer, 1);

        let egress = &self.egress;
        c.at_least("egress.queue", egress.queue, 1);
        c.at_least("egress.peer_queue", egress.peer_queue, 1);
        c.at_least("egress.reply_mailbox", egress.reply_mailbox, 1);
        c.at_least("egress.reply_ttl_secs", egress.reply_ttl_secs, 1);
        c.at_least("egress.reply_claims_per_peer", egress.reply_claims_per_peer, 1);
        c.at_least("egress.client_queue_bytes", egress.client_queue_bytes, 2 * nox_protocol::sphinx::PACKET_LEN);
        c.at_least("egress.client_write_timeout_ms", egress.client_write_timeout_ms, 100);
        c.at_most("egress.client_write_timeout_ms", egress.client_write_timeout_ms, 600_000, " (ten minutes)");

        c.at_most("replay.commit_interval_ms", self.replay.commit_interval_ms, 1_000, " (one second)");
        c.at_least("replay.max_memory_mib", self.replay.max_memory_mib, 1);
        let within = crate::replay::tags_within_memory(self.replay.max_memory_mib);
        if self.replay.max_tags_per_epoch > within {
            c.fail(
                "replay.max_tags_per_epoch",
                format!(
                    "{} tags need about {} MiB, above replay.max_memory_mib ({} MiB holds at most {within})",
                    self.replay.max_tags_per_epoch,
                    (self.replay.max_tags_per_epoch as u64).saturating_mul(crate::replay::MEMORY_BYTES_PER_TAG) >> 20,
                    self.replay.max_memory_mib
                ),
            );
        }

        let cover = &self.cover;
        c.non_negative_rate("cover.loop_rate", cover.loop_rate);
        c.non_negative_rate("cover.drop_rate", cover.drop_rate);
        c.positive_rate("cover.mean_delay_ms", cover.mean_delay_ms);
        c.at_least("cover.loop_timeout_secs", cover.loop_timeout_secs, 1);

        let exit = &self.exit;
        c.at_least("exit.queue", exit.queue, 1);
        c.at_least("exit.concurrency", exit.concurrency, 1);
        c.at_least("exit.request_timeout_ms", exit.request_timeout_ms, 100);
        c.at_least("exit.reassembly_max_bytes", exit.reassembly_max_bytes, nox_protocol::sphinx::PAYLOAD_CAPACITY);
        c.at_least("exit.reassembly_max_messages", exit.reassembly_max_messages, 1);
        c.at_least("exit.reassembly_max_fragments", exit.reassembly_max_fragments, 1);
        c.at_least("exit.reassembly_max_message_bytes", exit.reassembly_max_message_bytes, 1);
        c.at_least("exit.reassembly_stale_secs", exit.reassembly_stale_secs, 1);
        match &exit.rpc_url {
            Some(url) => check_http_url(&mut c, "exit.rpc_url", url),
            None if exit.raw_broadcast || exit.rpc_call || exit.eth_request => c.fail(
                "exit.rpc_url",
                "required when exit.raw_broadcast, exit.rpc_call or exit.eth_request is on: \
                 the Ethereum JSON-RPC endpoint they use",
            ),
            None => {}
        }
        if exit.eth_request {
            for (key, value, what) in [
                ("exit.eth_wallet_key_file", &exit.eth_wallet_key_file, "the file of the wallet that sends relays"),
                ("exit.eth_pool", &exit.eth_pool, "the NoxPool address the exit relays for"),
                ("exit.eth_verifying_key", &exit.eth_verifying_key, "the spend circuit's verifying key (spend.vk)"),
            ] {
                if value.as_deref().is_none_or(str::is_empty) {
                    c.fail(key, format!("required when exit.eth_request is on: {what}"));
                }
            }
        }
        if let Some(pool) = &exit.eth_pool
            && pool.parse::<alloy_primitives::Address>().is_err()
        {
            c.fail("exit.eth_pool", format!("`{pool}` is not an address (0x followed by 40 hex digits)"));
        }
        c.at_most(
            "exit.eth_margin_bps",
            exit.eth_margin_bps,
            nox_protocol::descriptor::MAX_MARGIN_BPS,
            " (the most a descriptor may announce)",
        );
        c.at_least("exit.eth_max_call_gas", exit.eth_max_call_gas, 21_000);
        c.at_most("exit.eth_max_call_gas", exit.eth_max_call_gas, 25_000_000, " (below a block's gas limit)");
        c.at_least("exit.eth_max_fee_per_gas_gwei", exit.eth_max_fee_per_gas_gwei, 1);
        c.at_least("exit.eth_receipt_timeout_secs", exit.eth_receipt_timeout_secs, 1);
        if exit.eth_request_timeout_secs <= exit.eth_receipt_timeout_secs {
            c.fail(
                "exit.eth_request_timeout_secs",
                format!(
                    "must be longer than exit.eth_receipt_timeout_secs ({}): checks and simulation come first",
                    exit.eth_receipt_timeout_secs
                ),
            );
        }
        c.at_least("exit.eth_bump_after_secs", exit.eth_bump_after_secs, 1);
        c.at_least("exit.eth_flush_every_secs", exit.eth_flush_every_secs, 1);
        c.at_least("exit.eth_flush_max_segments", exit.eth_flush_max_segments, 1);
        c.at_most(
            "exit.eth_flush_max_segments",
            exit.eth_flush_max_segments,
            16,
            " (a segment costs about 1.2 M gas; one flush stays well below a block)",
        );
        c.at_least("exit.eth_min_deadline_secs", exit.eth_min_deadline_secs, 12);
        c.at_most("exit.eth_min_deadline_secs", exit.eth_min_deadline_secs, 3600, "");
        c.at_least("exit.eth_max_in_flight", exit.eth_max_in_flight, 1);
        let max_tokens = nox_protocol::descriptor::MAX_FEE_ASSETS - 1;
        if exit.eth_fee_tokens.len() > max_tokens {
            c.fail(
                "exit.eth_fee_tokens",
                format!(
                    "{} tokens, at most {max_tokens} (a fee policy lists at most {} assets, ETH included)",
                    exit.eth_fee_tokens.len(),
                    nox_protocol::descriptor::MAX_FEE_ASSETS
                ),
            );
        }
        let mut tokens: BTreeMap<[u8; 20], usize> = BTreeMap::new();
        for (i, t) in exit.eth_fee_tokens.iter().enumerate() {
            let key = format!("exit.eth_fee_tokens[{i}]");
            match parse_address(t) {
                None => c.fail(key, format!("`{t}` is not an address (0x followed by 40 hex digits)")),
                Some(a) if a == [0; 20] => {
                    c.fail(key, "the zero address is ETH, which an exit always accepts; list tokens only")
                }
                Some(a) => {
                    if let Some(first) = tokens.insert(a, i) {
                        c.fail(key, format!("`{t}` is also exit.eth_fee_tokens[{first}]"));
                    }
                }
            }
        }
        if !exit.eth_fee_tokens.is_empty() {
            if self.prices.oracle_keys.is_empty() {
                c.fail(
                    "exit.eth_fee_tokens",
                    "token fees need prices: set prices.oracle_keys to the oracles that price these tokens",
                );
            }
            if !exit.eth_request {
                c.fail("exit.eth_fee_tokens", "token fees are for paid calls: set exit.eth_request = true");
            }
        }
        for (i, method) in exit.rpc_methods.iter().enumerate() {
            if let Err(e) = crate::exit::rpc_call::builtin_method(method) {
                c.fail(format!("exit.rpc_methods[{i}]"), e.to_string());
            }
        }
        c.at_least("exit.rpc_max_log_blocks", exit.rpc_max_log_blocks, 1);
        c.at_least("exit.rpc_max_answer_bytes", exit.rpc_max_answer_bytes, 1024);
        c.at_least("exit.upstream_timeout_ms", exit.upstream_timeout_ms, 100);
        c.at_least("exit.http_max_bytes", exit.http_max_bytes, 1);
        c.at_least("exit.http_timeout_ms", exit.http_timeout_ms, 100);
        c.at_most("exit.http_max_redirects", exit.http_max_redirects, MAX_HTTP_REDIRECTS, "");
        c.at_least("exit.reply_cache_secs", exit.reply_cache_secs, 1);
        c.at_least("exit.reply_max_bytes", exit.reply_max_bytes, 1);
        c.at_most(
            "exit.reply_max_bytes",
            exit.reply_max_bytes,
            crate::exit::max_reply_bytes(),
            " (what 256 reply fragments carry)",
        );

        self.validate_mail(&mut c);
        self.validate_prices(&mut c);
        self.smtp_entry.check(&mut c);

        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            c.fail("log.level", format!("`{}` is not a tracing filter: {e}", self.log.level));
        }

        c.finish()
    }
}

impl NodeConfig {
    /// The mail exit's keys (`exit.mail_*`); the syntax rules are
    /// `crate::exit::mail`'s, shared with the service.
    fn validate_mail(&self, c: &mut Checks) {
        use crate::exit::mail::{config as mail_config, recipient};
        let exit = &self.exit;
        c.at_least("exit.mail_max_recipients", exit.mail_max_recipients, 1);
        c.at_most("exit.mail_max_recipients", exit.mail_max_recipients, mail_config::MAX_RECIPIENTS_LIMIT, "");
        c.at_least("exit.mail_max_message_bytes", exit.mail_max_message_bytes, 1);
        c.at_most(
            "exit.mail_max_message_bytes",
            exit.mail_max_message_bytes,
            nox_mail::bucket::MAX_MESSAGE_LEN,
            " (what the largest mail bucket holds)",
        );
        c.at_least("exit.mail_max_queue_entries", exit.mail_max_queue_entries, 1);
        if exit.mail_max_queue_bytes < exit.mail_max_message_bytes as u64 {
            c.fail(
                "exit.mail_max_queue_bytes",
                format!(
                    "must hold at least one message of exit.mail_max_message_bytes ({}), got {}",
                    exit.mail_max_message_bytes, exit.mail_max_queue_bytes
                ),
            );
        }
        c.at_least("exit.mail_max_accepted_ids", exit.mail_max_accepted_ids, 1);
        c.at_least("exit.mail_batch_secs", exit.mail_batch_secs, 1);
        c.at_most("exit.mail_batch_secs", exit.mail_batch_secs, 3600, " (one hour)");
        c.at_least("exit.mail_delivery_concurrency", exit.mail_delivery_concurrency, 1);
        c.at_most("exit.mail_delivery_concurrency", exit.mail_delivery_concurrency, 1024, "");
        c.at_least("exit.mail_retry_min_secs", exit.mail_retry_min_secs, 1);
        if exit.mail_retry_max_secs < exit.mail_retry_min_secs {
            c.fail(
                "exit.mail_retry_max_secs",
                format!(
                    "must be at least exit.mail_retry_min_secs ({}), got {}",
                    exit.mail_retry_min_secs, exit.mail_retry_max_secs
                ),
            );
        }
        c.at_least("exit.mail_lifetime_secs", exit.mail_lifetime_secs, 1);
        c.at_most("exit.mail_lifetime_secs", exit.mail_lifetime_secs, 30 * 86_400, " (30 days)");
        if let Some(from) = &exit.mail_envelope_from
            && let Err(e) = recipient::check_mailbox(from)
        {
            c.fail("exit.mail_envelope_from", format!("`{from}`: {e}"));
        }
        if let Err(e) = mail_config::check_helo(&exit.mail_helo) {
            c.fail("exit.mail_helo", format!("`{}`: {e}", exit.mail_helo));
        }
        c.at_least("exit.mail_smtp_port", exit.mail_smtp_port, 1);
        for (i, r) in exit.mail_resolvers.iter().enumerate() {
            if r.parse::<SocketAddr>().is_err() {
                c.fail(format!("exit.mail_resolvers[{i}]"), format!("`{r}` is not ip:port (e.g. 9.9.9.9:53)"));
            }
        }
        for (key, value) in
            [("exit.mail_smarthost", &exit.mail_smarthost), ("exit.mail_nntp_server", &exit.mail_nntp_server)]
        {
            if let Some(v) = value
                && let Err(e) = mail_config::HostPort::parse(v)
            {
                c.fail(key, e.to_string());
            }
        }
        let credentials = [
            (
                "exit.mail_smarthost",
                &exit.mail_smarthost,
                ("exit.mail_smarthost_user", &exit.mail_smarthost_user),
                ("exit.mail_smarthost_password_file", &exit.mail_smarthost_password_file),
            ),
            (
                "exit.mail_nntp_server",
                &exit.mail_nntp_server,
                ("exit.mail_nntp_user", &exit.mail_nntp_user),
                ("exit.mail_nntp_password_file", &exit.mail_nntp_password_file),
            ),
        ];
        for (server_key, server, (user_key, user), (file_key, file)) in credentials {
            match (user, file) {
                (Some(_), None) => c.fail(file_key, format!("required with {user_key}: the password's file")),
                (None, Some(_)) => c.fail(user_key, format!("required with {file_key}: the user name")),
                (Some(u), Some(_)) if u.is_empty() => c.fail(user_key, "an empty user name"),
                _ => {}
            }
            if (user.is_some() || file.is_some()) && server.is_none() {
                c.fail(if user.is_some() { user_key } else { file_key }, format!("only used with {server_key}"));
            }
            if let Some(path) = file
                && let Err(e) = mail_config::check_secret_file(Path::new(path))
            {
                c.fail(file_key, e);
            }
        }
        if exit.mail_smarthost.is_none() && exit.mail_smarthost_ca_file.is_some() {
            c.fail("exit.mail_smarthost_ca_file", "only used with exit.mail_smarthost");
        }
        if exit.mail_smarthost_tls == SmarthostTls::None && exit.mail_smarthost_ca_file.is_some() {
            c.fail("exit.mail_smarthost_ca_file", "only used with exit.mail_smarthost_tls = \"starttls\"");
        }
        if exit.mail_smarthost_tls == SmarthostTls::None && exit.mail_smarthost_user.is_some() {
            c.fail(
                "exit.mail_smarthost_user",
                "the password would cross the network in the clear: set exit.mail_smarthost_tls = \"starttls\"",
            );
        }
        if let Some(p) = &exit.mail_queue_path
            && p.is_empty()
        {
            c.fail("exit.mail_queue_path", "an empty path; leave it unset for mail-queue.redb in node.data_dir");
        }
        c.at_least("exit.mail_connect_timeout_secs", exit.mail_connect_timeout_secs, 1);
        c.at_least("exit.mail_command_timeout_secs", exit.mail_command_timeout_secs, 1);
        c.at_least("exit.mail_data_timeout_secs", exit.mail_data_timeout_secs, 1);
    }

    fn validate_prices(&self, c: &mut Checks) {
        let p = &self.prices;
        if let Err(problems) = p.settings().trust(p.chain_id) {
            for problem in problems {
                c.fail(problem.key, problem.message);
            }
        }
        let n = p.oracle_keys.len();
        if n > 0 && p.chain_id == 0 && !self.chain.enabled() {
            c.fail(
                "prices.chain_id",
                "required with prices.oracle_keys when there is no [chain] (chain.rpc_url): \
                 the chain whose tokens the oracles price",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toml::{Table, Value};

    const EXAMPLE: &str = include_str!("../nox.example.toml");
    const DOCS: &str = include_str!("../../docs/configuration.md");

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        from_toml_str(text, std::iter::empty::<(&str, &str)>())
    }

    fn with_env(text: &str, env: &[(&str, &str)]) -> Result<NodeConfig, ConfigError> {
        from_toml_str(text, env.iter().copied())
    }

    fn problems(result: Result<NodeConfig, ConfigError>) -> Vec<Problem> {
        match result {
            Err(ConfigError::Invalid(problems)) => problems,
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    fn problem_keys(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.key.as_str()).collect()
    }

    fn env_error(result: Result<NodeConfig, ConfigError>) -> (String, String) {
        match result {
            Err(ConfigError::Env { var, reason }) => (var, reason),
            other => panic!("expected an environment error, got {other:?}"),
        }
    }

    /// A valid node id: the Ed25519 public key of a fixed secret.
    fn node_id(seed: u8) -> String {
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key();
        format!("0x{}", hex::encode(key.to_bytes()))
    }

    fn default_table() -> Table {
        Table::try_from(NodeConfig::default()).unwrap()
    }

    /// Every (section, key) a file can set, optional keys included.
    fn all_keys() -> Vec<(String, String)> {
        nox_config::all_keys::<NodeConfig>()
    }

    #[test]
    fn defaults_validate() {
        assert_eq!(NodeConfig::default().validate(), Ok(()));
        assert_eq!(parse("").unwrap(), NodeConfig::default());
    }

    #[test]
    fn example_file_equals_defaults() {
        assert_eq!(parse(EXAMPLE).unwrap(), NodeConfig::default());
    }

    #[test]
    fn example_file_lists_every_key() {
        let example: Table = EXAMPLE.parse().unwrap();
        for (section, key) in all_keys() {
            let listed = example.get(&section).and_then(Value::as_table).is_some_and(|t| t.contains_key(&key));
            let commented =
                EXAMPLE.contains(&format!("# {key} = ")) || EXAMPLE.contains(&format!("# [[{section}.{key}]]"));
            assert!(listed || commented, "{section}.{key} is missing from nox.example.toml");
        }
    }

    #[test]
    fn docs_document_every_key() {
        for (section, key) in all_keys() {
            let heading = format!("### `[{section}]`");
            let start = DOCS.find(&heading).unwrap_or_else(|| panic!("docs lack {heading}"));
            let rest = &DOCS[start + heading.len()..];
            let table = &rest[..rest.find("\n#").unwrap_or(rest.len())];
            assert!(table.contains(&format!("| `{key}` |")), "docs lack {section}.{key} under {heading}");
        }
    }

    #[test]
    fn full_file_parses() {
        let (a, b) = (node_id(1), node_id(2));
        let text = format!(
            r#"
            [node]
            keys_dir = "/var/lib/nox/keys"
            data_dir = "/var/lib/nox/data"
            role = "exit"
            layer = 2

            [network]
            epoch_secs = 3600
            grace_secs = 300

            [p2p]
            listen = ["/ip4/0.0.0.0/tcp/9000", "/ip6/::/tcp/9000"]
            external_addresses = ["/dns4/exit.example.org/tcp/9000"]
            max_connections = 512
            max_connections_per_subnet = 8
            idle_timeout_secs = 60
            handshake_timeout_secs = 5

            [[topology.nodes]]
            node_id = "{a}"
            layer = 0
            addresses = ["/ip4/192.0.2.1/tcp/9000"]

            [[topology.nodes]]
            node_id = "{b}"
            layer = 1
            addresses = ["/ip4/192.0.2.2/tcp/9000", "/ip4/192.0.2.2/tcp/9001"]

            [ingest]
            queue = 1000
            node_rate = 5000
            node_burst = 100
            client_rate = 10.5
            client_burst = 20
            pow_bits = 0

            [workers]
            threads = 4
            queue = 2000

            [mix]
            max_delay_ms = 2000
            capacity = 1000
            batch_window_ms = 20

            [egress]
            queue = 3000
            peer_queue = 300
            reply_mailbox = 100
            reply_ttl_secs = 30

            [replay]
            durable_before_forward = false
            max_tags_per_epoch = 1000000
            commit_interval_ms = 5

            [cover]
            loop_rate = 0
            drop_rate = 1.5
            mean_delay_ms = 20.0
            loop_timeout_secs = 30

            [http]
            listen = "127.0.0.1:9200"
            public_listen = "0.0.0.0:9201"

            [log]
            level = "nox_node=debug,info"
            format = "json"
            "#
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.node.keys_dir, PathBuf::from("/var/lib/nox/keys"));
        assert_eq!((c.node.role, c.node.layer), (Role::Exit, 2));
        assert_eq!((c.network.epoch_secs, c.network.grace_secs), (3600, 300));
        assert_eq!(c.p2p.listen.len(), 2);
        assert_eq!(c.p2p.external_addresses, vec!["/dns4/exit.example.org/tcp/9000".to_string()]);
        assert_eq!(c.topology.nodes.len(), 2);
        assert_eq!(c.topology.nodes[1].addresses.len(), 2);
        assert_eq!(c.topology.nodes[0].id_bytes().unwrap().to_vec(), hex::decode(&a[2..]).unwrap());
        assert_eq!(c.ingest.node_rate, 5000.0, "an integer is accepted for a number");
        assert_eq!(c.ingest.client_rate, 10.5);
        assert_eq!(c.workers.threads, 4);
        assert_eq!(c.mix.batch_window_ms, 20);
        assert_eq!(c.egress.reply_ttl_secs, 30);
        assert!(!c.replay.durable_before_forward);
        assert_eq!(c.cover.loop_rate, 0.0);
        assert_eq!(c.http.public_listen, Some(SocketAddr::from(([0, 0, 0, 0], 9201))));
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn load_reads_a_file_and_names_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nox.toml");
        std::fs::write(&path, "[mix]\nmax_delay_ms = 1234\n").unwrap();
        let env = [("NOX_MIX__CAPACITY", "99")];
        let c = load_with_env(&path, env).unwrap();
        assert_eq!((c.mix.max_delay_ms, c.mix.capacity), (1234, 99));

        let missing = dir.path().join("absent.toml");
        let err = load_with_env(&missing, env).unwrap_err();
        assert!(matches!(&err, ConfigError::Read { path, .. } if *path == missing), "{err:?}");
        assert!(err.to_string().contains("absent.toml"), "{err}");
    }

    // --- file errors ---------------------------------------------------------

    #[test]
    fn syntax_error_has_line_and_column() {
        let err = parse("[mix]\nmax_delay_ms = = 3\n").unwrap_err();
        let ConfigError::Syntax { at, .. } = &err else { panic!("{err:?}") };
        assert_eq!(at.line, 2);
        assert!(err.to_string().contains("line 2, column"), "{err}");
    }

    #[test]
    fn unknown_file_key_is_rejected_with_its_dotted_path() {
        let err = parse("[mix]\ncapacity = 10\nmax_dely_ms = 3\n").unwrap_err();
        let ConfigError::UnknownKey { key, expected, at } = &err else { panic!("{err:?}") };
        assert_eq!(key, "mix.max_dely_ms");
        assert!(expected.contains("max_delay_ms"), "the message lists the valid keys: {expected}");
        assert_eq!(*at, Some(Location { line: 3, column: 1 }));
        assert!(err.to_string().starts_with("mix.max_dely_ms: unknown key (line 3, column 1)"), "{err}");

        let err = parse("[mixx]\nmax_delay_ms = 3\n").unwrap_err();
        assert!(matches!(&err, ConfigError::UnknownKey { key, .. } if key == "mixx"), "{err:?}");

        let text = format!("[[topology.nodes]]\nnode_id = \"{}\"\nlayer = 0\naddresses = []\nport = 1\n", node_id(1));
        let err = parse(&text).unwrap_err();
        assert!(matches!(&err, ConfigError::UnknownKey { key, .. } if key == "topology.nodes[0].port"), "{err:?}");
    }

    #[test]
    fn wrong_type_names_its_key_and_the_expected_type() {
        let err = parse("[mix]\nmax_delay_ms = \"soon\"\n").unwrap_err();
        let ConfigError::WrongType { key, expected, found, at } = &err else { panic!("{err:?}") };
        assert_eq!((key.as_str(), expected.as_str()), ("mix.max_delay_ms", "a non-negative integer"));
        assert!(found.contains("soon"), "{found}");
        assert_eq!(at.map(|a| a.line), Some(2));

        let err = parse("[p2p]\nlisten = \"/ip4/0.0.0.0/tcp/9000\"\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::WrongType { key, expected, .. } if key == "p2p.listen" && expected == "an array"),
            "{err:?}"
        );

        let err = parse("[replay]\ndurable_before_forward = \"yes\"\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::WrongType { key, .. } if key == "replay.durable_before_forward"),
            "{err:?}"
        );

        let err = parse("mix = 3\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::WrongType { key, expected, .. } if key == "mix" && expected == "a table"),
            "{err:?}"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, want) in [
            ("[node]\nrole = \"gateway\"\n", "node.role"),
            ("[node]\nlayer = 300\n", "node.layer"),
            ("[node]\nlayer = -1\n", "node.layer"),
            ("[http]\nlisten = \"localhost\"\n", "http.listen"),
            ("[http]\npublic_listen = \"0.0.0.0\"\n", "http.public_listen"),
            ("[log]\nformat = \"xml\"\n", "log.format"),
            ("[[topology.nodes]]\nlayer = 0\naddresses = []\n", "topology.nodes[0]"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(matches!(&err, ConfigError::BadValue { key, .. } if key == want), "{text:?}: {err:?}");
            assert!(err.to_string().starts_with(&format!("{want}: ")), "{err}");
        }
        let err = parse("[node]\nlayer = 300\n").unwrap_err();
        assert!(err.to_string().contains("from 0 to 255"), "{err}");
    }

    // --- environment overrides -----------------------------------------------

    #[test]
    fn env_integer_override_wins_over_the_file() {
        let c = with_env("[mix]\nmax_delay_ms = 100\n", &[("NOX_MIX__MAX_DELAY_MS", "250")]).unwrap();
        assert_eq!(c.mix.max_delay_ms, 250);
    }

    #[test]
    fn env_float_override() {
        let env = [("NOX_INGEST__CLIENT_RATE", "12.5"), ("NOX_COVER__LOOP_RATE", "2")];
        let c = with_env("", &env).unwrap();
        assert_eq!((c.ingest.client_rate, c.cover.loop_rate), (12.5, 2.0));
    }

    #[test]
    fn env_bool_override() {
        let c = with_env("", &[("NOX_REPLAY__DURABLE_BEFORE_FORWARD", "false")]).unwrap();
        assert!(!c.replay.durable_before_forward);
        let c =
            with_env("[replay]\ndurable_before_forward = false\n", &[("NOX_REPLAY__DURABLE_BEFORE_FORWARD", "TRUE")])
                .unwrap();
        assert!(c.replay.durable_before_forward);
    }

    #[test]
    fn env_string_override() {
        let env = [
            ("NOX_NODE__KEYS_DIR", "/var/lib/nox/keys"),
            ("NOX_NODE__ROLE", "exit"),
            ("NOX_NODE__LAYER", "2"),
            ("NOX_LOG__LEVEL", "nox_node=debug"),
        ];
        let c = with_env("", &env).unwrap();
        assert_eq!(c.node.keys_dir, PathBuf::from("/var/lib/nox/keys"));
        assert_eq!((c.node.role, c.node.layer), (Role::Exit, 2));
        assert_eq!(c.log.level, "nox_node=debug");
    }

    #[test]
    fn env_list_override_is_comma_separated() {
        let c = with_env("", &[("NOX_P2P__LISTEN", "/ip4/127.0.0.1/tcp/1, /ip4/127.0.0.1/tcp/2")]).unwrap();
        assert_eq!(c.p2p.listen, vec!["/ip4/127.0.0.1/tcp/1".to_string(), "/ip4/127.0.0.1/tcp/2".to_string()]);

        let file = "[p2p]\nexternal_addresses = [\"/ip4/192.0.2.1/tcp/9000\"]\n";
        let c = with_env(file, &[("NOX_P2P__EXTERNAL_ADDRESSES", "")]).unwrap();
        assert!(c.p2p.external_addresses.is_empty(), "an empty value is an empty list");
    }

    #[test]
    fn env_socket_addr_override() {
        let env = [("NOX_HTTP__LISTEN", "127.0.0.1:9200"), ("NOX_HTTP__PUBLIC_LISTEN", "0.0.0.0:9201")];
        let c = with_env("", &env).unwrap();
        assert_eq!(c.http.listen, SocketAddr::from(([127, 0, 0, 1], 9200)));
        assert_eq!(c.http.public_listen, Some(SocketAddr::from(([0, 0, 0, 0], 9201))));
    }

    #[test]
    fn env_empty_value_unsets_an_optional_key() {
        let file = "[http]\npublic_listen = \"0.0.0.0:9101\"\n";
        assert!(parse(file).unwrap().http.public_listen.is_some());
        let c = with_env(file, &[("NOX_HTTP__PUBLIC_LISTEN", "")]).unwrap();
        assert_eq!(c.http.public_listen, None);
    }

    #[test]
    fn every_key_can_be_set_from_the_environment_with_its_own_type() {
        let defaults = default_table();
        let mut env = Vec::new();
        for (section, table) in &defaults {
            for (key, value) in table.as_table().unwrap() {
                if FILE_ONLY_KEYS.contains(&(section.as_str(), key.as_str())) {
                    continue;
                }
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Array(items) => {
                        items.iter().map(|i| i.as_str().unwrap().to_string()).collect::<Vec<_>>().join(",")
                    }
                    other => other.to_string(),
                };
                env.push((format!("NOX_{}__{}", section.to_uppercase(), key.to_uppercase()), text, value.clone()));
            }
        }
        let overrides =
            nox_config::env_overrides::<NodeConfig, _, _>(env.iter().map(|(var, text, _)| (var, text))).unwrap();
        assert_eq!(overrides.len(), env.len());
        for o in overrides {
            let (_, _, want) = env.iter().find(|(var, _, _)| *var == o.var).unwrap();
            assert_eq!(o.value.as_ref(), Some(want), "{} is read as the key's type", o.var);
        }
        let vars: Vec<(&String, &String)> = env.iter().map(|(var, text, _)| (var, text)).collect();
        assert_eq!(from_toml_str("", vars).unwrap(), NodeConfig::default());
    }

    #[test]
    fn unknown_env_variable_is_rejected() {
        let (var, reason) = env_error(with_env("", &[("NOX_MIX__MAX_DELY_MS", "250")]));
        assert_eq!(var, "NOX_MIX__MAX_DELY_MS");
        assert!(reason.contains("no key `max_dely_ms` in [mix]") && reason.contains("max_delay_ms"), "{reason}");

        let (var, reason) = env_error(with_env("", &[("NOX_MIXX__MAX_DELAY_MS", "250")]));
        assert_eq!(var, "NOX_MIXX__MAX_DELAY_MS");
        assert!(reason.contains("no section [mixx]"), "{reason}");

        let (var, reason) = env_error(with_env("", &[("NOX_MIX_MAX_DELAY_MS", "250")]));
        assert_eq!(var, "NOX_MIX_MAX_DELAY_MS");
        assert!(reason.contains("two underscores"), "{reason}");
    }

    #[test]
    fn unrelated_env_variables_are_ignored() {
        let env = [("NOX_DEPLOYMENT", "{\"registry\":\"0x00\"}"), ("PATH", "/bin"), ("nox_mix__capacity", "0")];
        assert_eq!(with_env("", &env).unwrap(), NodeConfig::default());
    }

    #[test]
    fn topology_nodes_cannot_be_set_from_the_environment() {
        let (var, reason) = env_error(with_env("", &[("NOX_TOPOLOGY__NODES", "x")]));
        assert_eq!(var, "NOX_TOPOLOGY__NODES");
        assert!(reason.contains("[[topology.nodes]]"), "{reason}");
    }

    #[test]
    fn env_value_of_the_wrong_type_names_the_variable() {
        let (var, reason) = env_error(with_env("", &[("NOX_MIX__MAX_DELAY_MS", "soon")]));
        assert_eq!(var, "NOX_MIX__MAX_DELAY_MS");
        assert!(reason.contains("expected an integer"), "{reason}");

        let (var, reason) = env_error(with_env("", &[("NOX_NODE__LAYER", "300")]));
        assert_eq!(var, "NOX_NODE__LAYER");
        assert!(reason.contains("node.layer") && reason.contains("from 0 to 255"), "{reason}");

        let (var, _) = env_error(with_env("", &[("NOX_HTTP__LISTEN", "localhost")]));
        assert_eq!(var, "NOX_HTTP__LISTEN");

        let (var, _) = env_error(with_env("", &[("NOX_REPLAY__DURABLE_BEFORE_FORWARD", "yes")]));
        assert_eq!(var, "NOX_REPLAY__DURABLE_BEFORE_FORWARD");

        let (var, reason) = env_error(with_env("", &[("NOX_MIX__MAX_DELAY_MS", "")]));
        assert_eq!(var, "NOX_MIX__MAX_DELAY_MS");
        assert!(reason.contains("only optional keys can be unset"), "{reason}");
    }

    #[test]
    fn env_override_is_validated() {
        let p = problems(with_env("", &[("NOX_MIX__MAX_DELAY_MS", "5000000")]));
        assert_eq!(problem_keys(&p), ["mix.max_delay_ms"]);
        assert!(p[0].message.contains("5000000"), "{}", p[0]);
    }

    // --- validation ----------------------------------------------------------

    #[test]
    fn several_invalid_values_produce_several_problems() {
        let text = "[node]\nlayer = 7\n[mix]\nmax_delay_ms = 5000000\n[ingest]\npow_bits = 40\n[log]\nlevel = \"=\"\n";
        let err = parse(text).unwrap_err();
        let rendered = err.to_string();
        let p = problems(Err(err));
        assert_eq!(problem_keys(&p), ["node.layer", "ingest.pow_bits", "mix.max_delay_ms", "log.level"]);
        assert!(p[0].message.contains('7') && p[1].message.contains("40"), "{p:?}");
        assert!(rendered.contains("4 invalid value(s)") && rendered.contains("\n  mix.max_delay_ms: "), "{rendered}");
    }

    #[test]
    fn each_rule_names_its_key() {
        let (a, b) = (node_id(1), node_id(2));
        let cases = [
            ("[node]\nlayer = 3\n", "node.layer"),
            ("[node]\nrole = \"exit\"\nlayer = 1\n", "node.role"),
            ("[node]\nrole = \"relay\"\nlayer = 2\n", "node.layer"),
            ("[network]\nepoch_secs = 0\ngrace_secs = 0\n", "network.epoch_secs"),
            ("[network]\nepoch_secs = 1200\ngrace_secs = 600\n", "network.grace_secs"),
            ("[p2p]\nlisten = []\n", "p2p.listen"),
            ("[p2p]\nlisten = [\"/ip4/0.0.0.0/tcp/1\", \"0.0.0.0:9000\"]\n", "p2p.listen[1]"),
            ("[p2p]\nlisten = [\"\"]\n", "p2p.listen[0]"),
            ("[p2p]\nexternal_addresses = [\"/ip4/300.0.0.1/tcp/1\"]\n", "p2p.external_addresses[0]"),
            ("[p2p]\nmax_connections = 0\n", "p2p.max_connections"),
            ("[p2p]\nmax_connections_per_subnet = 0\n", "p2p.max_connections_per_subnet"),
            ("[p2p]\nmax_connections = 8\nmax_connections_per_subnet = 9\n", "p2p.max_connections_per_subnet"),
            ("[p2p]\nidle_timeout_secs = 0\n", "p2p.idle_timeout_secs"),
            ("[p2p]\nhandshake_timeout_secs = 0\n", "p2p.handshake_timeout_secs"),
            ("[p2p]\npacket_link_listen = \"localhost:9001\"\n", "p2p.packet_link_listen"),
            ("[p2p]\npacket_link_listen = \"/ip4/0.0.0.0/tcp/9001\"\n", "p2p.packet_link_listen"),
            ("[ingest]\nqueue = 0\n", "ingest.queue"),
            ("[ingest]\nnode_rate = 0.0\n", "ingest.node_rate"),
            ("[ingest]\nnode_rate = nan\n", "ingest.node_rate"),
            ("[ingest]\nclient_rate = inf\n", "ingest.client_rate"),
            ("[ingest]\nnode_burst = 0\n", "ingest.node_burst"),
            ("[ingest]\nclient_burst = 0\n", "ingest.client_burst"),
            ("[ingest]\npow_bits = 33\n", "ingest.pow_bits"),
            ("[ingest]\npow_seen_secs = 1\n", "ingest.pow_seen_secs"),
            ("[ingest]\npow_seen_secs = 86401\n", "ingest.pow_seen_secs"),
            ("[ingest]\npow_seen_max = 1\n", "ingest.pow_seen_max"),
            ("[ingest]\npow_seen_max = 16777217\n", "ingest.pow_seen_max"),
            ("[workers]\nqueue = 0\n", "workers.queue"),
            ("[mix]\nmax_delay_ms = 4294968\n", "mix.max_delay_ms"),
            ("[mix]\ncapacity = 0\n", "mix.capacity"),
            ("[egress]\nqueue = 0\n", "egress.queue"),
            ("[egress]\npeer_queue = 0\n", "egress.peer_queue"),
            ("[egress]\nreply_mailbox = 0\n", "egress.reply_mailbox"),
            ("[egress]\nreply_ttl_secs = 0\n", "egress.reply_ttl_secs"),
            ("[egress]\nreply_claims_per_peer = 0\n", "egress.reply_claims_per_peer"),
            ("[egress]\nclient_queue_bytes = 32768\n", "egress.client_queue_bytes"),
            ("[egress]\nclient_write_timeout_ms = 99\n", "egress.client_write_timeout_ms"),
            ("[egress]\nclient_write_timeout_ms = 600001\n", "egress.client_write_timeout_ms"),
            ("[mix]\nmin_share_per_peer = 0\n", "mix.min_share_per_peer"),
            ("[replay]\ncommit_interval_ms = 1001\n", "replay.commit_interval_ms"),
            ("[replay]\nmax_memory_mib = 0\n", "replay.max_memory_mib"),
            ("[replay]\nmax_memory_mib = 1\nmax_tags_per_epoch = 60000\n", "replay.max_tags_per_epoch"),
            ("[cover]\nloop_rate = -1.0\n", "cover.loop_rate"),
            ("[cover]\ndrop_rate = inf\n", "cover.drop_rate"),
            ("[cover]\nmean_delay_ms = 0.0\n", "cover.mean_delay_ms"),
            ("[cover]\nloop_timeout_secs = 0\n", "cover.loop_timeout_secs"),
            ("[exit]\nqueue = 0\n", "exit.queue"),
            ("[exit]\nconcurrency = 0\n", "exit.concurrency"),
            ("[exit]\nrequest_timeout_ms = 99\n", "exit.request_timeout_ms"),
            ("[exit]\nreassembly_max_bytes = 1000\n", "exit.reassembly_max_bytes"),
            ("[exit]\nreassembly_max_messages = 0\n", "exit.reassembly_max_messages"),
            ("[exit]\nreassembly_max_fragments = 0\n", "exit.reassembly_max_fragments"),
            ("[exit]\nreassembly_max_message_bytes = 0\n", "exit.reassembly_max_message_bytes"),
            ("[exit]\nreassembly_stale_secs = 0\n", "exit.reassembly_stale_secs"),
            ("[exit]\nraw_broadcast = true\n", "exit.rpc_url"),
            ("[exit]\nrpc_call = true\n", "exit.rpc_url"),
            ("[exit]\nrpc_url = \"ws://127.0.0.1:8545\"\n", "exit.rpc_url"),
            ("[exit]\nrpc_methods = [\"eth_call\", \"eth_sendTransaction\"]\n", "exit.rpc_methods[1]"),
            ("[exit]\nrpc_max_log_blocks = 0\n", "exit.rpc_max_log_blocks"),
            ("[exit]\nrpc_max_answer_bytes = 1023\n", "exit.rpc_max_answer_bytes"),
            ("[exit]\nupstream_timeout_ms = 99\n", "exit.upstream_timeout_ms"),
            ("[exit]\nhttp_max_bytes = 0\n", "exit.http_max_bytes"),
            ("[exit]\nhttp_timeout_ms = 99\n", "exit.http_timeout_ms"),
            ("[exit]\nhttp_max_redirects = 21\n", "exit.http_max_redirects"),
            ("[log]\nlevel = \"nox_node=loud\"\n", "log.level"),
        ];
        for (text, key) in cases {
            let p = problems(parse(text));
            assert_eq!(problem_keys(&p), [key], "{text:?}");
        }
        let node = |id: &str, layer: u8, addresses: &str| {
            format!("[[topology.nodes]]\nnode_id = \"{id}\"\nlayer = {layer}\naddresses = [{addresses}]\n")
        };
        let addr = "\"/ip4/192.0.2.1/tcp/9000\"";
        // About half of all y coordinates have no curve point.
        let not_a_point = (2u8..)
            .map(|y| {
                let mut bytes = [0u8; 32];
                bytes[0] = y;
                bytes
            })
            .find(|bytes| ed25519_dalek::VerifyingKey::from_bytes(bytes).is_err())
            .unwrap();
        let topology_cases = [
            (node("0x1234", 0, addr), "topology.nodes[0].node_id"),
            (node(&a[2..], 0, addr), "topology.nodes[0].node_id"),
            (node(&format!("0x{}", "zz".repeat(32)), 0, addr), "topology.nodes[0].node_id"),
            (node(&format!("0x{}", hex::encode(not_a_point)), 0, addr), "topology.nodes[0].node_id"),
            (node(&a, 3, addr), "topology.nodes[0].layer"),
            (node(&a, 0, ""), "topology.nodes[0].addresses"),
            (node(&a, 0, "\"/ip4/192.0.2.1/tcp/9000\", \"nowhere\""), "topology.nodes[0].addresses[1]"),
            (node(&a, 0, addr) + &node(&b, 1, addr) + &node(&a, 2, addr), "topology.nodes[2].node_id"),
        ];
        for (text, key) in topology_cases {
            let p = problems(parse(&text));
            assert_eq!(problem_keys(&p), [key], "{text:?}");
        }
        // Upper-case hex is the same id.
        let p = problems(parse(&(node(&a, 0, addr) + &node(&format!("0x{}", a[2..].to_uppercase()), 1, addr))));
        assert_eq!(problem_keys(&p), ["topology.nodes[1].node_id"]);
    }

    #[test]
    fn exit_services_are_configured_and_validated() {
        let c = NodeConfig::default();
        assert!(!c.exit.raw_broadcast && !c.exit.rpc_call && !c.exit.http && !c.exit.http_allow_loopback);
        assert_eq!(c.exit.rpc_url, None);
        assert_eq!(c.exit.rpc_methods.len(), crate::exit::rpc_call::RPC_METHODS.len());
        assert!(c.exit.rpc_methods.iter().any(|m| m == "eth_getLogs"));
        assert!(!c.exit.rpc_methods.iter().any(|m| m == "eth_getStorageAt"));

        let text = "[exit]\nrpc_url = \"http://127.0.0.1:8545\"\nraw_broadcast = true\nrpc_call = true\n\
                    rpc_methods = [\"eth_call\", \"eth_chainId\"]\nhttp = true\nhttp_max_redirects = 0\n";
        let c = parse(text).unwrap();
        assert_eq!(c.exit.rpc_url.as_deref(), Some("http://127.0.0.1:8545"));
        assert_eq!(c.exit.rpc_methods, ["eth_call", "eth_chainId"]);
        assert_eq!(c.exit.http_max_redirects, 0);

        // From the environment: a comma-separated list, an optional URL.
        let env = [
            ("NOX_EXIT__RPC_URL", "https://rpc.example.org/key"),
            ("NOX_EXIT__RPC_CALL", "true"),
            ("NOX_EXIT__RPC_METHODS", "eth_blockNumber, eth_getLogs"),
            ("NOX_EXIT__HTTP_ALLOW_LOOPBACK", "true"),
        ];
        let c = with_env("", &env).unwrap();
        assert_eq!(c.exit.rpc_methods, ["eth_blockNumber", "eth_getLogs"]);
        assert!(c.exit.rpc_call && c.exit.http_allow_loopback);
        assert!(
            problem_keys(&problems(with_env("[exit]\nrpc_call = true\n", &[("NOX_EXIT__RPC_URL", "")])))
                .contains(&"exit.rpc_url")
        );

        // A method that writes, signs or debugs is refused by name.
        for method in
            ["eth_sendTransaction", "eth_sendRawTransaction", "personal_sign", "debug_traceCall", "eth_getStorageAt"]
        {
            let p = problems(parse(&format!("[exit]\nrpc_methods = [\"{method}\"]\n")));
            assert_eq!(problem_keys(&p), ["exit.rpc_methods[0]"], "{method}");
            assert!(p[0].message.contains(method) && p[0].message.contains("not a read-only method"), "{}", p[0]);
        }
        let p = problems(parse("[exit]\nraw_broadcast = true\n"));
        assert!(p[0].message.contains("required when exit.raw_broadcast, exit.rpc_call"), "{}", p[0]);

        // Paid calls need their wallet, pool and key, and sane bounds.
        let p = problems(parse("[exit]\neth_request = true\n"));
        assert_eq!(
            problem_keys(&p),
            ["exit.rpc_url", "exit.eth_wallet_key_file", "exit.eth_pool", "exit.eth_verifying_key"]
        );
        let on = "[exit]\neth_request = true\nrpc_url = \"http://127.0.0.1:8545\"\n\
                  eth_wallet_key_file = \"/k\"\neth_verifying_key = \"/vk\"\n";
        let c = parse(&format!("{on}eth_pool = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n")).unwrap();
        assert!(c.exit.eth_request);
        let c = with_env(on, &[("NOX_EXIT__ETH_POOL", "0x5FbDB2315678afecb367f032d93F642f64180aa3")]).unwrap();
        assert_eq!(c.exit.eth_pool.as_deref(), Some("0x5FbDB2315678afecb367f032d93F642f64180aa3"));
        let p = problems(parse(&format!(
            "{on}eth_pool = \"0x12\"\neth_margin_bps = 10001\neth_receipt_timeout_secs = 200\neth_flush_max_segments = 0\n"
        )));
        assert_eq!(
            problem_keys(&p),
            ["exit.eth_pool", "exit.eth_margin_bps", "exit.eth_request_timeout_secs", "exit.eth_flush_max_segments"]
        );
    }

    #[test]
    fn mail_keys_are_configured_and_validated() {
        use std::os::unix::fs::PermissionsExt;
        let c = NodeConfig::default();
        assert!(!c.exit.mail && c.exit.mail_queue_path.is_none() && c.exit.mail_smarthost.is_none());
        assert_eq!((c.exit.mail_batch_secs, c.exit.mail_lifetime_secs, c.exit.mail_smtp_port), (30, 345_600, 25));
        assert_eq!((c.exit.mail_max_recipients, c.exit.mail_max_queue_entries), (100, 10_000));
        assert_eq!(c.exit.mail_smarthost_tls, SmarthostTls::Starttls);
        assert!(c.exit.mail_envelope_from.is_none());

        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private.pw");
        std::fs::write(&private, "pw\n").unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
        let open = dir.path().join("open.pw");
        std::fs::write(&open, "pw\n").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();

        let good = format!(
            "[exit]\nmail = true\nmail_smarthost = \"smtp.example.org:587\"\nmail_smarthost_user = \"exit\"\n\
             mail_smarthost_password_file = \"{}\"\nmail_nntp_server = \"[2001:db8::1]:119\"\n\
             mail_resolvers = [\"9.9.9.9:53\"]\nmail_envelope_from = \"bounces@exit.example.org\"\n\
             mail_helo = \"exit.example.org\"\nmail_smarthost_tls = \"starttls\"\n",
            private.display()
        );
        let c = parse(&good).unwrap();
        assert!(c.exit.mail);
        assert_eq!(c.exit.mail_smarthost.as_deref(), Some("smtp.example.org:587"));

        let cases: Vec<(String, Vec<&str>)> = vec![
            ("[exit]\nmail_batch_secs = 0\n".into(), vec!["exit.mail_batch_secs"]),
            ("[exit]\nmail_retry_min_secs = 120\nmail_retry_max_secs = 60\n".into(), vec!["exit.mail_retry_max_secs"]),
            ("[exit]\nmail_max_recipients = 0\n".into(), vec!["exit.mail_max_recipients"]),
            ("[exit]\nmail_max_message_bytes = 9000000\n".into(), vec!["exit.mail_max_message_bytes"]),
            ("[exit]\nmail_max_queue_bytes = 1000\n".into(), vec!["exit.mail_max_queue_bytes"]),
            ("[exit]\nmail_lifetime_secs = 0\n".into(), vec!["exit.mail_lifetime_secs"]),
            ("[exit]\nmail_delivery_concurrency = 0\n".into(), vec!["exit.mail_delivery_concurrency"]),
            ("[exit]\nmail_smtp_port = 0\n".into(), vec!["exit.mail_smtp_port"]),
            ("[exit]\nmail_smarthost = \"smtp.example.org\"\n".into(), vec!["exit.mail_smarthost"]),
            ("[exit]\nmail_nntp_server = \"news:0\"\n".into(), vec!["exit.mail_nntp_server"]),
            ("[exit]\nmail_resolvers = [\"9.9.9.9\"]\n".into(), vec!["exit.mail_resolvers[0]"]),
            ("[exit]\nmail_envelope_from = \"not an address\"\n".into(), vec!["exit.mail_envelope_from"]),
            ("[exit]\nmail_helo = \"two words\"\n".into(), vec!["exit.mail_helo"]),
            ("[exit]\nmail_queue_path = \"\"\n".into(), vec!["exit.mail_queue_path"]),
            (
                "[exit]\nmail_smarthost = \"a.example:25\"\nmail_smarthost_user = \"u\"\n".into(),
                vec!["exit.mail_smarthost_password_file"],
            ),
            (
                format!(
                    "[exit]\nmail_smarthost_user = \"u\"\nmail_smarthost_password_file = \"{}\"\n",
                    private.display()
                ),
                vec!["exit.mail_smarthost_user"],
            ),
            (
                format!(
                    "[exit]\nmail_smarthost = \"a.example:25\"\nmail_smarthost_user = \"u\"\n\
                     mail_smarthost_password_file = \"{}\"\n",
                    open.display()
                ),
                vec!["exit.mail_smarthost_password_file"],
            ),
            (
                "[exit]\nmail_nntp_server = \"news.example:119\"\nmail_nntp_user = \"u\"\n\
                 mail_nntp_password_file = \"/nonexistent/pw\"\n"
                    .into(),
                vec!["exit.mail_nntp_password_file"],
            ),
            (
                "[exit]\nmail_smarthost = \"a.example:25\"\nmail_smarthost_tls = \"none\"\n\
                 mail_smarthost_ca_file = \"/ca.pem\"\n"
                    .into(),
                vec!["exit.mail_smarthost_ca_file"],
            ),
        ];
        for (text, keys) in cases {
            let p = problems(parse(&text));
            assert_eq!(problem_keys(&p), keys, "{text}");
        }
        let err = parse("[exit]\nmail_smarthost_tls = \"maybe\"\n").unwrap_err();
        assert!(matches!(&err, ConfigError::BadValue { key, .. } if key == "exit.mail_smarthost_tls"), "{err:?}");
        let p = problems(parse(&format!(
            "[exit]\nmail_smarthost = \"a.example:25\"\nmail_smarthost_user = \"u\"\n\
             mail_smarthost_password_file = \"{}\"\n",
            open.display()
        )));
        assert!(p[0].message.contains("mode 644") && p[0].message.contains("chmod 600"), "{}", p[0]);

        // From the environment, like every other key.
        let env = [
            ("NOX_EXIT__MAIL", "true"),
            ("NOX_EXIT__MAIL_SMARTHOST", "relay.example.org:25"),
            ("NOX_EXIT__MAIL_SMARTHOST_TLS", "none"),
            ("NOX_EXIT__MAIL_RESOLVERS", "127.0.0.1:5353, [::1]:53"),
            ("NOX_EXIT__MAIL_BATCH_SECS", "5"),
        ];
        let c = with_env("", &env).unwrap();
        assert!(c.exit.mail);
        assert_eq!(c.exit.mail_smarthost_tls, SmarthostTls::None);
        assert_eq!(c.exit.mail_resolvers, ["127.0.0.1:5353", "[::1]:53"]);
        assert_eq!(c.exit.mail_batch_secs, 5);
    }

    #[test]
    fn prices_and_fee_tokens_are_configured_and_validated() {
        let c = NodeConfig::default();
        assert!(c.prices.oracle_keys.is_empty() && c.exit.eth_fee_tokens.is_empty());
        assert_eq!((c.prices.threshold, c.prices.max_age_secs, c.prices.max_skew_secs), (0, 120, 10));
        assert_eq!(c.price_trust(), None);

        let (a, b, k3) = (node_id(1), node_id(2), node_id(3));
        // Keys with or without 0x; threshold 0 = a majority; chain_id 0 = chain.chain_id.
        let chain = "[chain]\nrpc_url = \"http://127.0.0.1:8545\"\nchain_id = 31337\n\
                     registry = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n";
        let text = format!("{chain}[prices]\noracle_keys = [\"{a}\", \"{}\", \"{k3}\"]\n", &b[2..]);
        let t = parse(&text).unwrap().price_trust().unwrap();
        assert_eq!((t.chain_id, t.threshold, t.oracles.len()), (31337, 2, 3));
        assert_eq!((t.max_age_ms, t.max_skew_ms), (120_000, 10_000));
        assert_eq!(t.oracles[1].to_vec(), hex::decode(&b[2..]).unwrap());
        let t =
            parse(&format!("{text}threshold = 3\nchain_id = 5\nmax_age_secs = 30\n")).unwrap().price_trust().unwrap();
        assert_eq!((t.chain_id, t.threshold, t.max_age_ms), (5, 3, 30_000));
        nox_protocol::price::PriceBook::new(t).unwrap();

        let usdc = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";
        let exit = "[node]\nrole = \"exit\"\nlayer = 2\n[exit]\neth_request = true\n\
                    rpc_url = \"http://127.0.0.1:8545\"\neth_wallet_key_file = \"/k\"\neth_verifying_key = \"/vk\"\n\
                    eth_pool = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n";
        let prices = format!("[prices]\noracle_keys = [\"{a}\"]\nchain_id = 31337\n");
        let c = parse(&format!("{exit}eth_fee_tokens = [\"{usdc}\"]\n{prices}")).unwrap();
        assert_eq!(c.exit.fee_token_addresses(), vec![<[u8; 20]>::try_from(hex::decode(&usdc[2..]).unwrap()).unwrap()]);

        let not_a_point = (2u8..)
            .map(|y| {
                let mut bytes = [0u8; 32];
                bytes[0] = y;
                bytes
            })
            .find(|bytes| ed25519_dalek::VerifyingKey::from_bytes(bytes).is_err())
            .unwrap();
        let keys = |list: &str| format!("[prices]\nchain_id = 1\noracle_keys = [{list}]\n");
        let too_many: Vec<String> = (1..=17).map(|i| format!("\"{}\"", node_id(i))).collect();
        let zero = "0x0000000000000000000000000000000000000000";
        let cases = [
            (keys("\"0x1234\""), "prices.oracle_keys[0]"),
            (keys(&format!("\"{a}\", \"0x{}\"", "zz".repeat(32))), "prices.oracle_keys[1]"),
            (keys(&format!("\"{a}00\"")), "prices.oracle_keys[0]"),
            (keys(&format!("\"{}\"", hex::encode(not_a_point))), "prices.oracle_keys[0]"),
            (keys(&format!("\"{a}\", \"{b}\", \"{}\"", a.to_uppercase().replace("0X", ""))), "prices.oracle_keys[2]"),
            (keys(&too_many.join(", ")), "prices.oracle_keys"),
            (keys(&format!("\"{a}\"")) + "threshold = 2\n", "prices.threshold"),
            (keys(&format!("\"{a}\"")) + "max_age_secs = 0\n", "prices.max_age_secs"),
            (keys(&format!("\"{a}\"")) + "max_skew_secs = 3601\n", "prices.max_skew_secs"),
            (format!("[prices]\noracle_keys = [\"{a}\"]\n"), "prices.chain_id"),
            (format!("{exit}eth_fee_tokens = [\"0x12\"]\n{prices}"), "exit.eth_fee_tokens[0]"),
            (format!("{exit}eth_fee_tokens = [\"{zero}\"]\n{prices}"), "exit.eth_fee_tokens[0]"),
            (
                format!("{exit}eth_fee_tokens = [\"{usdc}\", \"{}\"]\n{prices}", usdc.to_lowercase()),
                "exit.eth_fee_tokens[1]",
            ),
            (format!("{exit}eth_fee_tokens = [\"{usdc}\"]\n"), "exit.eth_fee_tokens"),
            (
                format!(
                    "{}eth_fee_tokens = [\"{usdc}\"]\n{prices}",
                    exit.replace("eth_request = true", "eth_request = false")
                ),
                "exit.eth_fee_tokens",
            ),
        ];
        for (text, key) in cases {
            let p = problems(parse(&text));
            assert_eq!(problem_keys(&p), [key], "{text}");
        }
        let tokens: Vec<String> = (1..=16u8).map(|i| format!("\"0x{}\"", hex::encode([i; 20]))).collect();
        let p = problems(parse(&format!("{exit}eth_fee_tokens = [{}]\n{prices}", tokens.join(", "))));
        assert_eq!(problem_keys(&p), ["exit.eth_fee_tokens"]);
        assert!(p[0].message.contains("at most 15"), "{}", p[0]);

        // From the environment, like every other key: lists comma-separated.
        let env = [
            ("NOX_PRICES__ORACLE_KEYS", &*format!("{a}, {b}")),
            ("NOX_PRICES__THRESHOLD", "2"),
            ("NOX_PRICES__CHAIN_ID", "31337"),
            ("NOX_PRICES__MAX_AGE_SECS", "60"),
            ("NOX_PRICES__MAX_SKEW_SECS", "0"),
            ("NOX_EXIT__ETH_FEE_TOKENS", usdc),
        ];
        let c = with_env(exit, &env).unwrap();
        assert_eq!(c.prices.oracle_keys, [a.clone(), b.clone()]);
        assert_eq!(c.exit.eth_fee_tokens, [usdc]);
        let t = c.price_trust().unwrap();
        assert_eq!((t.threshold, t.chain_id, t.max_age_ms, t.max_skew_ms), (2, 31337, 60_000, 0));
        // An override is validated like the file.
        let p = problems(with_env(exit, &[("NOX_EXIT__ETH_FEE_TOKENS", usdc)]));
        assert_eq!(problem_keys(&p), ["exit.eth_fee_tokens"]);
        let (var, _) = env_error(with_env("", &[("NOX_PRICES__THRESHOLD", "many")]));
        assert_eq!(var, "NOX_PRICES__THRESHOLD");
    }

    #[test]
    fn grace_must_be_less_than_half_an_epoch() {
        assert!(parse("[network]\nepoch_secs = 1201\ngrace_secs = 600\n").is_ok());
        assert!(parse("[network]\nepoch_secs = 1200\ngrace_secs = 600\n").is_err());
        assert!(parse("[network]\nepoch_secs = 1\ngrace_secs = 0\n").is_ok());
    }

    #[test]
    fn max_delay_limit_fits_the_wire() {
        assert!(MAX_DELAY_MS_LIMIT * 1000 <= u64::from(u32::MAX));
        assert!((MAX_DELAY_MS_LIMIT + 1) * 1000 > u64::from(u32::MAX));
        assert!(parse(&format!("[mix]\nmax_delay_ms = {MAX_DELAY_MS_LIMIT}\n")).is_ok());
    }

    #[test]
    fn id_bytes_reads_0x_and_64_hex_digits() {
        let id = node_id(3);
        let node = StaticNode { node_id: id.clone(), layer: 0, addresses: vec![] };
        assert_eq!(node.id_bytes().unwrap().to_vec(), hex::decode(&id[2..]).unwrap());
        for bad in [&id[2..], "0x", &format!("{id}00"), &format!("0X{}", &id[2..]), &format!("0x{}", "g".repeat(64))] {
            let node = StaticNode { node_id: bad.to_string(), layer: 0, addresses: vec![] };
            assert_eq!(node.id_bytes(), Err(NodeIdError(bad.to_string())), "{bad}");
        }
    }

    #[test]
    fn chain_section_is_validated() {
        let good = "[chain]\nrpc_url = \"http://127.0.0.1:8545\"\nchain_id = 31337\nregistry = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n";
        let c = parse(good).unwrap();
        assert!(c.chain.enabled());
        assert_eq!(c.chain.registry_address().unwrap().to_string(), "0x5FbDB2315678afecb367f032d93F642f64180aa3");
        assert!(!NodeConfig::default().chain.enabled());

        let cases = [
            (
                "[chain]\nrpc_url = \"ws://127.0.0.1:8545\"\nregistry = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n",
                "chain.rpc_url",
            ),
            (
                "[chain]\nrpc_url = \"not a url\"\nregistry = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n",
                "chain.rpc_url",
            ),
            ("[chain]\nrpc_url = \"http://127.0.0.1:8545\"\n", "chain.registry"),
            ("[chain]\nrpc_url = \"http://127.0.0.1:8545\"\nregistry = \"0x1234\"\n", "chain.registry"),
            (
                "[chain]\nrpc_url = \"http://127.0.0.1:8545\"\nregistry = \"0x0000000000000000000000000000000000000000\"\n",
                "chain.registry",
            ),
            (
                "[chain]\nrpc_url = \"http://127.0.0.1:8545\"\nregistry = \"5FbDB2315678afecb367f032d93F642f64180aa3ab\"\n",
                "chain.registry",
            ),
            (&*format!("{good}chain_id = 0\n").replace("chain_id = 31337\n", ""), "chain.chain_id"),
            (&*format!("{good}poll_interval_ms = 5\n"), "chain.poll_interval_ms"),
            (&*format!("{good}max_log_range = 0\n"), "chain.max_log_range"),
            (&*format!("{good}rpc_timeout_ms = 1\n"), "chain.rpc_timeout_ms"),
        ];
        for (text, key) in cases {
            assert_eq!(problem_keys(&problems(parse(text))), [key], "{text}");
        }

        // The chain is the only source of the topology.
        let both = format!(
            "{good}\n[[topology.nodes]]\nnode_id = \"{}\"\nlayer = 0\naddresses = [\"/ip4/127.0.0.1/tcp/1\"]\n",
            node_id(1)
        );
        assert_eq!(problem_keys(&problems(parse(&both))), ["topology.nodes"]);

        // From the environment: set, then unset again with an empty value.
        let env = [
            ("NOX_CHAIN__RPC_URL", "http://127.0.0.1:8545"),
            ("NOX_CHAIN__REGISTRY", "0x5FbDB2315678afecb367f032d93F642f64180aa3"),
            ("NOX_CHAIN__CONFIRMATIONS", "0"),
        ];
        let c = with_env("", &env).unwrap();
        assert!(c.chain.enabled());
        assert_eq!(c.chain.confirmations, 0);
        let c = with_env(good, &[("NOX_CHAIN__RPC_URL", "")]).unwrap();
        assert!(!c.chain.enabled());
    }

    #[test]
    fn chain_endpoints_need_tls_off_loopback_and_a_workable_quorum() {
        let registry = "registry = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n";
        let with = |keys: &str| format!("[chain]\nchain_id = 31337\n{registry}{keys}");

        // TLS anywhere; plain http only on loopback.
        let c = parse(&with("rpc_url = \"https://rpc.example.org/v2/KEY\"\n")).unwrap();
        assert_eq!(c.chain.endpoints(), ["https://rpc.example.org/v2/KEY"]);
        for local in ["http://127.0.0.1:8545", "http://localhost:8545", "http://[::1]:8545"] {
            parse(&with(&format!("rpc_url = \"{local}\"\n"))).unwrap();
        }
        let p = problems(parse(&with("rpc_url = \"http://rpc.example.org/v2/KEY\"\n")));
        assert_eq!(problem_keys(&p), ["chain.rpc_url"]);
        assert!(p[0].message.contains("not encrypted") && p[0].message.contains("https://"), "{}", p[0].message);
        assert!(!p[0].message.contains("KEY"), "the message leaves the URL's path out: {}", p[0].message);
        let p = problems(parse(&with(
            "rpc_urls = [\"https://a.example.org\", \"http://10.1.2.3:8545\", \"https://b.example.org\"]\n",
        )));
        assert_eq!(problem_keys(&p), ["chain.rpc_urls[1]"]);

        // Several endpoints: a majority by default, any quorum from a majority to all.
        let three = "rpc_urls = [\"https://a.example.org\", \"https://b.example.org\", \"http://127.0.0.1:8545\"]\n";
        let c = parse(&with(three)).unwrap();
        assert!(c.chain.enabled());
        assert_eq!(c.chain.endpoints().len(), 3);
        assert_eq!(c.chain.rpc_quorum, 0);
        parse(&with(&format!("{three}rpc_quorum = 3\n"))).unwrap();
        for bad in [1, 4] {
            let p = problems(parse(&with(&format!("{three}rpc_quorum = {bad}\n"))));
            assert_eq!(problem_keys(&p), ["chain.rpc_quorum"], "quorum {bad}");
        }
        // One endpoint listed twice would count twice.
        let twice = "rpc_urls = [\"https://a.example.org\", \"https://b.example.org\", \"https://a.example.org\"]\n";
        assert_eq!(problem_keys(&problems(parse(&with(twice)))), ["chain.rpc_urls[2]"]);
        // Not both forms at once.
        let both = format!("{three}rpc_url = \"https://c.example.org\"\n");
        assert_eq!(problem_keys(&problems(parse(&with(&both)))), ["chain.rpc_urls"]);
        // A list from the environment.
        let env = [
            ("NOX_CHAIN__RPC_URLS", "https://a.example.org,https://b.example.org,http://127.0.0.1:8545"),
            ("NOX_CHAIN__RPC_QUORUM", "3"),
            ("NOX_CHAIN__REGISTRY", "0x5FbDB2315678afecb367f032d93F642f64180aa3"),
        ];
        let c = with_env("", &env).unwrap();
        assert_eq!(c.chain.endpoints().len(), 3);
        assert_eq!(c.chain.rpc_quorum, 3);
    }
}
