//! The oracle's configuration: one TOML file (`nox-oracle.toml`), documented
//! key by key in `docs/configuration.md` (section `nox-oracle`).
//!
//! The structs here are the single source of the keys and their defaults. The
//! defaults point at the real public APIs and price ETH, USDC, DAI and WBTC on
//! Ethereum mainnet, so a file that only names the key file works.
//! Loading is `nox-config`'s: syntax and shape errors with their dotted key
//! and line, environment overrides `NOX_ORACLE_<SECTION>__<KEY>` (e.g.
//! `NOX_ORACLE_BINANCE__URL`, `NOX_ORACLE_ORACLE__INTERVAL_MS`), then
//! [`OracleConfig::validate`], which reports every problem at once. The
//! sources are top-level sections (`[binance]`, not `[sources.binance]`) so
//! that each of their keys has an override; `[[assets]]` is file-only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use nox_config::{Checks, ConfigFile};
pub use nox_config::{ConfigError, Problem};
use serde::{Deserialize, Serialize};

use crate::aggregate::AggregationRules;
use crate::source::{Asset, SourceId, SourceSettings};

/// The whole oracle configuration (`nox-oracle run --config FILE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OracleConfig {
    /// Key, state, chain and aggregation.
    pub oracle: OracleSection,
    /// libp2p: where to listen, whom to dial.
    pub p2p: P2pSection,
    /// `/health` and `/metrics`.
    pub http: HttpSection,
    /// Binance's spot ticker.
    pub binance: BinanceSection,
    /// CoinGecko's simple price.
    pub coingecko: CoingeckoSection,
    /// Coinbase's spot price.
    pub coinbase: CoinbaseSection,
    /// Logging.
    pub log: LogSection,
    /// The assets priced (file only; default ETH, USDC, DAI, WBTC on mainnet).
    pub assets: Vec<AssetEntry>,
}

impl Default for OracleConfig {
    fn default() -> Self {
        OracleConfig {
            oracle: OracleSection::default(),
            p2p: P2pSection::default(),
            http: HttpSection::default(),
            binance: BinanceSection::default(),
            coingecko: CoingeckoSection::default(),
            coinbase: CoinbaseSection::default(),
            log: LogSection::default(),
            assets: default_assets(),
        }
    }
}

/// `[oracle]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OracleSection {
    /// The Ed25519 key file (from `nox-oracle keygen`): signs the rounds and is
    /// the libp2p identity.
    pub key_file: PathBuf,
    /// Directory of the round counter (`round.json`).
    pub state_dir: PathBuf,
    /// The chain whose tokens are priced.
    pub chain_id: u64,
    /// Milliseconds between rounds.
    pub interval_ms: u64,
    /// Most distance of a source from the median, basis points.
    pub max_deviation_bps: u32,
    /// Fewest agreeing sources for an asset to be published (≥ 2).
    pub min_sources: usize,
    /// Oldest update time a source may report (CoinGecko), seconds.
    pub max_quote_age_secs: u64,
}

impl Default for OracleSection {
    fn default() -> Self {
        OracleSection {
            key_file: PathBuf::from("./nox-oracle.key"),
            state_dir: PathBuf::from("./nox-oracle-data"),
            chain_id: 1,
            interval_ms: 30_000,
            max_deviation_bps: 200,
            min_sources: 2,
            max_quote_age_secs: 120,
        }
    }
}

/// `[p2p]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct P2pSection {
    /// Multiaddrs to listen on (may be empty: the oracle only dials out).
    pub listen: Vec<String>,
    /// Nodes to dial and stay connected to: `/ip4/…/tcp/…/p2p/<peer id>`.
    pub bootstrap: Vec<String>,
    /// Seconds between attempts to re-dial bootstrap nodes not connected.
    pub redial_secs: u64,
}

impl Default for P2pSection {
    fn default() -> Self {
        P2pSection { listen: vec!["/ip4/0.0.0.0/tcp/9110".to_string()], bootstrap: Vec::new(), redial_secs: 5 }
    }
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Address of `/health` and `/metrics`.
    pub listen: SocketAddr,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection { listen: SocketAddr::from(([127, 0, 0, 1], 9190)) }
    }
}

/// `[binance]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BinanceSection {
    /// Ask this source.
    pub enabled: bool,
    /// Base URL.
    pub url: String,
    /// Milliseconds a request may take, connect to last byte.
    pub timeout_ms: u64,
}

impl Default for BinanceSection {
    fn default() -> Self {
        BinanceSection { enabled: true, url: "https://api.binance.com".into(), timeout_ms: 5_000 }
    }
}

/// `[coingecko]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoingeckoSection {
    /// Ask this source.
    pub enabled: bool,
    /// Base URL (`https://pro-api.coingecko.com` with a pro key).
    pub url: String,
    /// Milliseconds a request may take, connect to last byte.
    pub timeout_ms: u64,
    /// Sent as `x-cg-demo-api-key`; unset: none.
    pub api_key: Option<String>,
}

impl Default for CoingeckoSection {
    fn default() -> Self {
        CoingeckoSection { enabled: true, url: "https://api.coingecko.com".into(), timeout_ms: 5_000, api_key: None }
    }
}

/// `[coinbase]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoinbaseSection {
    /// Ask this source.
    pub enabled: bool,
    /// Base URL.
    pub url: String,
    /// Milliseconds a request may take, connect to last byte.
    pub timeout_ms: u64,
}

impl Default for CoinbaseSection {
    fn default() -> Self {
        CoinbaseSection { enabled: true, url: "https://api.coinbase.com".into(), timeout_ms: 5_000 }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A `tracing` filter.
    pub level: String,
    /// Line format.
    pub format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection { level: "info".into(), format: LogFormat::Text }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[[assets]]`: one asset and its name at each source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetEntry {
    /// Symbol signed in the round: 1–16 of A–Z, 0–9.
    pub symbol: String,
    /// Token address on `oracle.chain_id` (`0x` + 40 hex digits); zero for ETH.
    pub token: String,
    /// The token's decimals (≤ 36).
    pub decimals: u8,
    /// Binance pair against USDT (`ETHUSDT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binance: Option<String>,
    /// CoinGecko coin id (`ethereum`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coingecko: Option<String>,
    /// Coinbase pair against USD (`ETH-USD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coinbase: Option<String>,
}

fn asset(symbol: &str, token: &str, decimals: u8, binance: &str, coingecko: &str, coinbase: &str) -> AssetEntry {
    AssetEntry {
        symbol: symbol.into(),
        token: token.into(),
        decimals,
        binance: Some(binance.into()),
        coingecko: Some(coingecko.into()),
        coinbase: Some(coinbase.into()),
    }
}

/// ETH, USDC, DAI and WBTC on Ethereum mainnet.
pub fn default_assets() -> Vec<AssetEntry> {
    vec![
        asset("ETH", "0x0000000000000000000000000000000000000000", 18, "ETHUSDT", "ethereum", "ETH-USD"),
        asset("USDC", "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", 6, "USDCUSDT", "usd-coin", "USDC-USD"),
        asset("DAI", "0x6B175474E89094C44Da98b954EedeAC495271d0F", 18, "DAIUSDT", "dai", "DAI-USD"),
        asset("WBTC", "0x2260FAC5E5542a773Aa44fBC71E7C76a0F0e7a38", 8, "WBTCUSDT", "wrapped-bitcoin", "WBTC-USD"),
    ]
}

impl ConfigFile for OracleConfig {
    const ENV_PREFIX: &'static str = "NOX_ORACLE_";
    const OPTIONAL_KEYS: &'static [(&'static str, &'static str)] = &[("coingecko", "api_key")];
    const FILE_ONLY_KEYS: &'static [(&'static str, &'static str)] = &[];

    fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut c = Checks::default();
        self.check_oracle(&mut c);
        self.check_p2p(&mut c);
        self.check_sources(&mut c);
        self.check_assets(&mut c);
        if self.log.level.trim().is_empty() {
            c.fail("log.level", "must be a tracing filter such as \"info\"");
        }
        c.finish()
    }
}

/// Reads `path` with the process's `NOX_ORACLE_*` overrides and validates it.
pub fn load(path: &Path) -> Result<OracleConfig, ConfigError> {
    nox_config::load(path)
}

/// Parses `text` with the overrides in `env` (tests, embedding).
pub fn from_toml_str<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
    text: &str,
    env: impl IntoIterator<Item = (K, V)>,
) -> Result<OracleConfig, ConfigError> {
    nox_config::from_toml_str(text, env)
}

impl OracleConfig {
    fn check_oracle(&self, c: &mut Checks) {
        let o = &self.oracle;
        if o.key_file.as_os_str().is_empty() {
            c.fail("oracle.key_file", "must name a file");
        }
        if o.state_dir.as_os_str().is_empty() {
            c.fail("oracle.state_dir", "must name a directory");
        }
        c.at_least("oracle.chain_id", o.chain_id, 1);
        c.at_least("oracle.interval_ms", o.interval_ms, 100);
        c.at_most("oracle.interval_ms", o.interval_ms, 86_400_000, " (one day)");
        c.at_least("oracle.max_deviation_bps", o.max_deviation_bps, 1);
        c.at_most("oracle.max_deviation_bps", o.max_deviation_bps, 5_000, " (50 %)");
        if o.min_sources < 2 {
            c.fail(
                "oracle.min_sources",
                format!("must be at least 2 (one source is never published), got {}", o.min_sources),
            );
        }
        let enabled = self.enabled_sources();
        if enabled.len() < o.min_sources.max(2) {
            let names: Vec<&str> = enabled.iter().map(|s| s.name()).collect();
            c.fail(
                "oracle.min_sources",
                format!(
                    "{} source(s) enabled ({}), at least {} needed: enable more of binance, coingecko, coinbase",
                    enabled.len(),
                    if names.is_empty() { "none".to_string() } else { names.join(", ") },
                    o.min_sources.max(2)
                ),
            );
        }
        c.at_least("oracle.max_quote_age_secs", o.max_quote_age_secs, 1);
    }

    fn check_p2p(&self, c: &mut Checks) {
        for (i, addr) in self.p2p.listen.iter().enumerate() {
            if let Err(e) = addr.parse::<Multiaddr>() {
                c.fail(format!("p2p.listen[{i}]"), format!("{addr:?} is not a multiaddr: {e}"));
            }
        }
        for (i, addr) in self.p2p.bootstrap.iter().enumerate() {
            if let Err(message) = parse_bootstrap(addr) {
                c.fail(format!("p2p.bootstrap[{i}]"), message);
            }
        }
        c.at_least("p2p.redial_secs", self.p2p.redial_secs, 1);
    }

    fn check_sources(&self, c: &mut Checks) {
        for id in SourceId::ALL {
            let (enabled, url, timeout_ms) = self.source_fields(id);
            let name = id.name();
            if !enabled {
                continue;
            }
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    if u.query().is_some() || u.fragment().is_some() {
                        c.fail(format!("{name}.url"), format!("{url:?} must be a base URL without query or fragment"));
                    }
                }
                Ok(_) => c.fail(format!("{name}.url"), format!("{url:?} is not an http:// or https:// URL")),
                Err(e) => c.fail(format!("{name}.url"), format!("{url:?} is not a URL: {e}")),
            }
            c.at_least(&format!("{name}.timeout_ms"), timeout_ms, 1);
            c.at_most(&format!("{name}.timeout_ms"), timeout_ms, 60_000, "");
        }
    }

    fn check_assets(&self, c: &mut Checks) {
        use nox_protocol::price::{MAX_DECIMALS, MAX_QUOTES, MAX_SYMBOL_LEN};
        if self.assets.is_empty() || self.assets.len() > MAX_QUOTES {
            c.fail("assets", format!("{} assets, expected 1..={MAX_QUOTES}", self.assets.len()));
        }
        let enabled = self.enabled_sources();
        for (i, a) in self.assets.iter().enumerate() {
            let key = |k: &str| format!("assets[{i}].{k}");
            let s = a.symbol.as_bytes();
            if s.is_empty()
                || s.len() > MAX_SYMBOL_LEN
                || !s.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            {
                c.fail(key("symbol"), format!("{:?} is not 1..={MAX_SYMBOL_LEN} characters of A-Z and 0-9", a.symbol));
            } else if self.assets[..i].iter().any(|b| b.symbol == a.symbol) {
                c.fail(key("symbol"), format!("{} is listed twice", a.symbol));
            }
            match parse_token(&a.token) {
                Some(token) => {
                    if self.assets[..i].iter().any(|b| parse_token(&b.token) == Some(token)) {
                        c.fail(key("token"), format!("{} is listed twice", a.token));
                    }
                }
                None => c.fail(key("token"), format!("{:?} is not 0x followed by 40 hex digits", a.token)),
            }
            c.at_most(&key("decimals"), a.decimals, MAX_DECIMALS, "");
            for id in SourceId::ALL {
                let name = match id {
                    SourceId::Binance => &a.binance,
                    SourceId::Coingecko => &a.coingecko,
                    SourceId::Coinbase => &a.coinbase,
                };
                if let Some(n) = name {
                    let ok = !n.is_empty()
                        && n.len() <= 64
                        && n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                    if !ok {
                        c.fail(key(id.name()), format!("{n:?} must be 1..=64 of A-Z, a-z, 0-9, '-', '_', '.'"));
                    }
                }
            }
            let listed = enabled.iter().filter(|id| a.to_asset_names().name_at(**id).is_some()).count();
            let required = self.oracle.min_sources.max(2);
            if listed < required {
                c.fail(
                    format!("assets[{i}]"),
                    format!(
                        "{} has a name at {listed} enabled source(s); at least {required} needed (set binance, \
                         coingecko or coinbase)",
                        a.symbol
                    ),
                );
            }
        }
    }

    /// The enabled sources, in bit order.
    pub fn enabled_sources(&self) -> Vec<SourceId> {
        SourceId::ALL.into_iter().filter(|id| self.source_fields(*id).0).collect()
    }

    fn source_fields(&self, id: SourceId) -> (bool, &str, u64) {
        match id {
            SourceId::Binance => (self.binance.enabled, &self.binance.url, self.binance.timeout_ms),
            SourceId::Coingecko => (self.coingecko.enabled, &self.coingecko.url, self.coingecko.timeout_ms),
            SourceId::Coinbase => (self.coinbase.enabled, &self.coinbase.url, self.coinbase.timeout_ms),
        }
    }

    /// Where source `id` is and how long it may take.
    pub fn source_settings(&self, id: SourceId) -> SourceSettings {
        let (_, url, timeout_ms) = self.source_fields(id);
        SourceSettings { url: url.to_string(), timeout: Duration::from_millis(timeout_ms) }
    }

    /// The assets, typed (entries that do not validate are left out; a
    /// loaded configuration has none).
    pub fn assets(&self) -> Vec<Asset> {
        self.assets
            .iter()
            .filter_map(|a| {
                let token = parse_token(&a.token)?;
                Some(Asset { token, ..a.to_asset_names() })
            })
            .collect()
    }

    /// The aggregation rules of `[oracle]`.
    pub fn rules(&self) -> AggregationRules {
        AggregationRules {
            max_deviation_bps: self.oracle.max_deviation_bps,
            min_sources: self.oracle.min_sources,
            max_quote_age_secs: self.oracle.max_quote_age_secs,
        }
    }

    /// The round interval.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.oracle.interval_ms)
    }

    /// The listen addresses, parsed (invalid ones are left out; a loaded
    /// configuration has none).
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.p2p.listen.iter().filter_map(|a| a.parse().ok()).collect()
    }

    /// The bootstrap nodes as (peer id, address) (invalid ones are left out).
    pub fn bootstrap_peers(&self) -> Vec<(libp2p::PeerId, Multiaddr)> {
        self.p2p.bootstrap.iter().filter_map(|a| parse_bootstrap(a).ok()).collect()
    }
}

impl AssetEntry {
    /// The source names of this entry, with a zero token.
    fn to_asset_names(&self) -> Asset {
        Asset {
            symbol: self.symbol.clone(),
            token: [0; 20],
            decimals: self.decimals,
            binance: self.binance.clone(),
            coingecko: self.coingecko.clone(),
            coinbase: self.coinbase.clone(),
        }
    }
}

/// `0x` + 40 hex digits (any case).
fn parse_token(text: &str) -> Option<[u8; 20]> {
    let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X"))?;
    let mut out = [0u8; 20];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

/// A bootstrap multiaddr ending in `/p2p/<peer id>`, split.
pub fn parse_bootstrap(text: &str) -> Result<(libp2p::PeerId, Multiaddr), String> {
    let mut addr: Multiaddr = text.parse().map_err(|e| format!("{text:?} is not a multiaddr: {e}"))?;
    match addr.pop() {
        Some(Protocol::P2p(peer)) if !addr.is_empty() => Ok((peer, addr)),
        _ => Err(format!(
            "{text:?} must be an address followed by /p2p/<peer id>, e.g. /ip4/10.0.0.1/tcp/9000/p2p/12D3Koo…"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OracleConfig, ConfigError> {
        from_toml_str(text, std::iter::empty::<(&str, &str)>())
    }

    fn problem_keys(text: &str) -> Vec<String> {
        match parse(text) {
            Err(ConfigError::Invalid(problems)) => problems.into_iter().map(|p| p.key).collect(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn the_defaults_are_valid_and_point_at_the_real_apis() {
        let c = parse("").unwrap();
        assert_eq!(c, OracleConfig::default());
        assert_eq!(c.binance.url, "https://api.binance.com");
        assert_eq!(c.assets().len(), 4);
        assert_eq!(c.assets()[0].token, nox_protocol::price::ETH);
        assert_eq!(c.enabled_sources(), SourceId::ALL.to_vec());
    }

    #[test]
    fn the_example_file_is_the_defaults_and_lists_every_key() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("nox-oracle.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(parse(&text).unwrap(), OracleConfig::default());
        // Every key of every section appears (the optional api_key commented out).
        for (section, key) in nox_config::all_keys::<OracleConfig>() {
            if section == "assets" {
                continue;
            }
            assert!(
                text.contains(&format!("\n{key} = ")) || text.contains(&format!("# {key} = ")),
                "{section}.{key} is not in nox-oracle.example.toml"
            );
        }
    }

    #[test]
    fn environment_overrides_use_the_oracle_prefix() {
        let env = [
            ("NOX_ORACLE_BINANCE__URL", "http://127.0.0.1:1"),
            ("NOX_ORACLE_ORACLE__INTERVAL_MS", "200"),
            ("NOX_ORACLE_COINGECKO__API_KEY", "k"),
            ("NOX_ORACLE_P2P__BOOTSTRAP", ""),
        ];
        let c = from_toml_str("", env).unwrap();
        assert_eq!((c.binance.url.as_str(), c.oracle.interval_ms), ("http://127.0.0.1:1", 200));
        assert_eq!(c.coingecko.api_key.as_deref(), Some("k"));
        assert!(matches!(from_toml_str("", [("NOX_ORACLE_BINANCE__URLS", "x")]), Err(ConfigError::Env { .. })));
    }

    #[test]
    fn every_problem_is_reported_with_its_dotted_key() {
        let keys = problem_keys(
            r#"
[oracle]
max_deviation_bps = 0
min_sources = 1
interval_ms = 5
[p2p]
listen = ["nonsense"]
bootstrap = ["/ip4/127.0.0.1/tcp/1"]
[binance]
url = "ftp://example.com"
[coinbase]
enabled = false
[coingecko]
timeout_ms = 0

[[assets]]
symbol = "eth"
token = "0x00"
decimals = 40
binance = "ETH USDT"

[[assets]]
symbol = "USDC"
token = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
decimals = 6
binance = "USDCUSDT"
coingecko = "usd-coin"

[[assets]]
symbol = "USDC"
token = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
decimals = 6
binance = "USDCUSDT"
coinbase = "USDC-USD"
"#,
        );
        for want in [
            "oracle.max_deviation_bps",
            "oracle.min_sources",
            "oracle.interval_ms",
            "p2p.listen[0]",
            "p2p.bootstrap[0]",
            "binance.url",
            "coingecko.timeout_ms",
            "assets[0].symbol",
            "assets[0].token",
            "assets[0].decimals",
            "assets[0].binance",
            "assets[0]",
            "assets[2].symbol",
            "assets[2].token",
            // USDC's coinbase name does not count: coinbase is disabled.
            "assets[2]",
        ] {
            assert!(keys.contains(&want.to_string()), "{want} missing from {keys:?}");
        }
        assert!(!keys.contains(&"assets[1]".to_string()), "{keys:?}");
    }

    #[test]
    fn one_enabled_source_is_refused() {
        let keys = problem_keys("[binance]\nenabled = false\n[coinbase]\nenabled = false\n");
        assert!(keys.contains(&"oracle.min_sources".to_string()), "{keys:?}");
    }

    #[test]
    fn shape_errors_carry_the_key() {
        match parse("[[assets]]\nsymbol = \"ETH\"\ndecimals = 18\n") {
            Err(ConfigError::BadValue { key, message, .. }) => {
                assert!(key.starts_with("assets"), "{key}");
                assert!(message.contains("token"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse("[oracle]\nintervl_ms = 1\n"), Err(ConfigError::UnknownKey { .. })));
    }

    #[test]
    fn every_key_is_documented_with_its_section() {
        let docs = include_str!("../../docs/configuration.md");
        let ours = docs.split("\n## nox-oracle\n").nth(1).expect("a nox-oracle section");
        for (section, key) in nox_config::all_keys::<OracleConfig>() {
            assert!(ours.contains(&format!("`[{section}]`")), "[{section}] undocumented");
            assert!(ours.contains(&format!("| `{key}`")), "{section}.{key} undocumented");
        }
        for key in ["symbol", "token", "decimals", "binance", "coingecko", "coinbase"] {
            assert!(ours.contains(&format!("| `{key}` |")), "assets.{key} undocumented");
        }
    }

    #[test]
    fn bootstrap_addresses_split_into_peer_and_address() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let peer = nox_net::p2p::keypair_from_identity(&key).map(|k| k.public().to_peer_id()).unwrap();
        let (p, a) = parse_bootstrap(&format!("/ip4/127.0.0.1/tcp/9000/p2p/{peer}")).unwrap();
        assert_eq!((p, a.to_string()), (peer, "/ip4/127.0.0.1/tcp/9000".to_string()));
        assert!(parse_bootstrap(&format!("/p2p/{peer}")).is_err());
    }
}
