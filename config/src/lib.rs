//! # nox-config
//!
//! The configuration engine every NOX binary shares (`nox`, `nox-client`,
//! `nox-oracle`): one TOML file, environment overrides, and errors that say
//! what is wrong and where. Each binary owns its schema — a `serde` struct
//! whose `Default` is the single source of its keys and defaults — and
//! implements [`ConfigFile`] for it; this crate knows nothing of any section.
//!
//! [`load`] goes through three steps, each with its own error:
//!
//! 1. The file is parsed and deserialized. A syntax error carries its line and
//!    column; an unknown key or a value of the wrong type carries its dotted
//!    path (`mix.max_delay_ms`, `topology.nodes[1].layer`) and its line.
//! 2. Environment variables `<PREFIX><SECTION>__<KEY>` override single keys;
//!    the environment wins over the file. A value is read as the type the key
//!    has in the defaults (integer, number, boolean, string, or a
//!    comma-separated list); an empty value unsets an optional key. A variable
//!    that names no key is an error, so that a typo is never silently ignored.
//!    Keys listed in [`ConfigFile::FILE_ONLY_KEYS`] can only be set in the file.
//! 3. [`ConfigFile::validate`] checks the values against each other and
//!    reports every problem at once, each with its dotted key ([`Checks`]
//!    collects them).

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use toml::Table;
pub use toml::Value;

/// A binary's configuration schema.
pub trait ConfigFile: Serialize + DeserializeOwned + Default {
    /// Prefix of every environment override, e.g. `NOX_`: `NOX_<SECTION>__<KEY>`.
    const ENV_PREFIX: &'static str;
    /// Optional keys as `(section, key)`: absent from the serialized defaults
    /// (they are `None`), so an override cannot learn their type there. Every
    /// one is a string.
    const OPTIONAL_KEYS: &'static [(&'static str, &'static str)];
    /// Keys only the file can set (arrays of tables), as `(section, key)`.
    const FILE_ONLY_KEYS: &'static [(&'static str, &'static str)];

    /// Checks every value and their relations; returns every problem found.
    fn validate(&self) -> Result<(), Vec<Problem>>;
}

/// What a binary prints on stderr when `file` did not load: the error, or
/// for an invalid configuration the count and every problem, one a line.
pub fn report(file: &Path, error: &ConfigError) -> String {
    match error {
        ConfigError::Invalid(problems) => {
            let mut text = format!("{}: {} invalid value(s)", file.display(), problems.len());
            for problem in problems {
                text.push('\n');
                text.push_str(&problem.to_string());
            }
            text
        }
        other => format!("{}: {other}", file.display()),
    }
}

/// Reads `path`, applies the process's overrides and validates the result.
pub fn load<C: ConfigFile>(path: &Path) -> Result<C, ConfigError> {
    load_with_env(path, std::env::vars_os())
}

/// [`load`] with the environment given as `(name, value)` pairs.
pub fn load_with_env<C: ConfigFile, K: AsRef<OsStr>, V: AsRef<OsStr>>(
    path: &Path,
    env: impl IntoIterator<Item = (K, V)>,
) -> Result<C, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| ConfigError::Read { path: path.to_path_buf(), error: error.to_string() })?;
    from_toml_str(&text, env)
}

/// Parses `text`, applies the overrides found in `env` (all variables, as
/// `(name, value)` pairs: the whole list is needed to find misspelt ones), and
/// validates the result.
pub fn from_toml_str<C: ConfigFile, K: AsRef<OsStr>, V: AsRef<OsStr>>(
    text: &str,
    env: impl IntoIterator<Item = (K, V)>,
) -> Result<C, ConfigError> {
    let document = toml::de::Deserializer::parse(text).map_err(|e| syntax_error(&e, text))?;
    let from_file: C = serde_path_to_error::deserialize(document).map_err(|e| {
        let at = e.inner().span().map(|span| Location::of(text, span.start));
        shape_error(e.path().to_string(), e.inner(), at)
    })?;

    let overrides = env_overrides::<C, _, _>(env)?;
    let config = if overrides.is_empty() {
        from_file
    } else {
        let mut table: Table = text.parse().map_err(|e| syntax_error(&e, text))?;
        for o in &overrides {
            let section = table.entry(o.section.clone()).or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(section) = section {
                match &o.value {
                    Some(value) => section.insert(o.key.clone(), value.clone()),
                    None => section.remove(&o.key),
                };
            }
        }
        serde_path_to_error::deserialize(table).map_err(|e| {
            let path = e.path().to_string();
            let error = shape_error(path.clone(), e.inner(), None);
            match overrides.iter().find(|o| o.covers(&path)) {
                Some(o) => ConfigError::Env { var: o.var.clone(), reason: error.to_string() },
                None => error,
            }
        })?
    };
    config.validate().map_err(ConfigError::Invalid)?;
    Ok(config)
}

/// Every `(section, key)` a file of schema `C` can set, optional keys
/// included: for tests that check an example file or the documentation.
pub fn all_keys<C: ConfigFile>() -> Vec<(String, String)> {
    let mut keys = Vec::new();
    if let Ok(table) = Table::try_from(C::default()) {
        for (section, value) in table {
            if let Some(t) = value.as_table() {
                keys.extend(t.keys().map(|k| (section.clone(), k.clone())));
            }
        }
    }
    keys.extend(C::OPTIONAL_KEYS.iter().map(|(s, k)| (s.to_string(), k.to_string())));
    keys
}

/// Collects problems while a schema's `validate` walks its sections.
#[derive(Debug, Default)]
pub struct Checks(Vec<Problem>);

impl Checks {
    /// Records a problem with `key`.
    pub fn fail(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { key: key.into(), message: message.into() });
    }

    /// A section's RPC endpoints, given as `<section>.rpc_url` (one) or
    /// `<section>.rpc_urls` (several), never both: `check_url` judges each,
    /// and a URL listed twice is refused (it would count twice towards a
    /// quorum).
    pub fn rpc_endpoints(
        &mut self,
        section: &str,
        one: Option<&str>,
        many: &[String],
        check_url: impl Fn(&mut Checks, String, &str),
    ) {
        if one.is_some() && !many.is_empty() {
            self.fail(
                format!("{section}.rpc_urls"),
                format!("set either {section}.rpc_url (one endpoint) or {section}.rpc_urls, not both"),
            );
        }
        if let Some(url) = one {
            check_url(self, format!("{section}.rpc_url"), url);
        }
        for (i, url) in many.iter().enumerate() {
            check_url(self, format!("{section}.rpc_urls[{i}]"), url);
            if let Some(first) = many[..i].iter().position(|u| u == url) {
                self.fail(
                    format!("{section}.rpc_urls[{i}]"),
                    format!("is also {section}.rpc_urls[{first}]: one endpoint would count twice towards the quorum"),
                );
            }
        }
    }

    /// `value` must be at least `min`.
    pub fn at_least<T: PartialOrd + fmt::Display>(&mut self, key: &str, value: T, min: T) {
        if value < min {
            self.fail(key, format!("must be at least {min}, got {value}"));
        }
    }

    /// `value` must be at most `max`; `why` follows the limit in the message.
    pub fn at_most<T: PartialOrd + fmt::Display>(&mut self, key: &str, value: T, max: T, why: &str) {
        if value > max {
            self.fail(key, format!("must be at most {max}{why}, got {value}"));
        }
    }

    /// A finite number greater than 0.
    pub fn positive_rate(&mut self, key: &str, value: f64) {
        if !(value.is_finite() && value > 0.0) {
            self.fail(key, format!("must be a finite number greater than 0, got {value}"));
        }
    }

    /// A finite number, 0 or more.
    pub fn non_negative_rate(&mut self, key: &str, value: f64) {
        if !(value.is_finite() && value >= 0.0) {
            self.fail(key, format!("must be a finite number, 0 or more, got {value}"));
        }
    }

    /// `Ok` when nothing was recorded, else every problem in order.
    pub fn finish(self) -> Result<(), Vec<Problem>> {
        if self.0.is_empty() { Ok(()) } else { Err(self.0) }
    }
}

/// What is wrong with a configuration, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {error}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        error: String,
    },
    /// The file is not valid TOML.
    #[error("TOML syntax error at {at}: {message}")]
    Syntax {
        /// Where the parser stopped.
        at: Location,
        /// The parser's message.
        message: String,
    },
    /// A key that the configuration does not have (a typo, or a key of
    /// another section).
    #[error("{key}: unknown key{}{}", in_file(.at), hint(.expected))]
    UnknownKey {
        /// Dotted path, e.g. `mix.max_dely_ms`.
        key: String,
        /// The keys that would have been accepted there.
        expected: String,
        /// Its place in the file.
        at: Option<Location>,
    },
    /// A value of the wrong type.
    #[error("{key}: expected {expected}, found {found}{}", in_file(.at))]
    WrongType {
        /// Dotted path, e.g. `mix.max_delay_ms`.
        key: String,
        /// The type the key takes.
        expected: String,
        /// The value given.
        found: String,
        /// Its place in the file.
        at: Option<Location>,
    },
    /// A value of the right type that the key cannot take (out of range,
    /// not an address, not one of the allowed words, a missing key).
    #[error("{key}: {message}{}", in_file(.at))]
    BadValue {
        /// Dotted path, e.g. `http.listen`.
        key: String,
        /// What is wrong with it.
        message: String,
        /// Its place in the file.
        at: Option<Location>,
    },
    /// An environment override that cannot be applied.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// The variable's name.
        var: String,
        /// Why it cannot be applied.
        reason: String,
    },
    /// Values that parse but do not make a working node; every problem found.
    #[error("{}", problem_list(.0))]
    Invalid(Vec<Problem>),
}

/// A line and column (both from 1) in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl Location {
    fn of(text: &str, offset: usize) -> Location {
        let before = text.get(..offset).unwrap_or(text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |l| l.chars().count()) + 1;
        Location { line: before.matches('\n').count() + 1, column }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// One thing [`ConfigFile::validate`] found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the key, e.g. `p2p.listen[1]`.
    pub key: String,
    /// What is wrong, with the offending value.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

fn in_file(at: &Option<Location>) -> String {
    at.map(|at| format!(" ({at})")).unwrap_or_default()
}

fn hint(expected: &str) -> String {
    if expected.is_empty() { String::new() } else { format!("; {expected}") }
}

fn problem_list(problems: &[Problem]) -> String {
    let mut out = format!("{} invalid value(s):", problems.len());
    for p in problems {
        out.push_str(&format!("\n  {p}"));
    }
    out
}

fn syntax_error(e: &toml::de::Error, text: &str) -> ConfigError {
    let at = Location::of(text, e.span().map_or(0, |s| s.start));
    ConfigError::Syntax { at, message: e.message().trim().to_string() }
}

/// Turns a deserialization error at `key` into the variant that says what is
/// wrong in an operator's terms.
fn shape_error(key: String, e: &toml::de::Error, at: Option<Location>) -> ConfigError {
    let key = if key == "." { "(top level)".to_string() } else { key };
    let message = e.message().trim();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let expected = rest.split_once("`, ").map_or("", |(_, expected)| expected).to_string();
        return ConfigError::UnknownKey { key, expected, at };
    }
    if let Some((found, expected)) = message.strip_prefix("invalid type: ").and_then(|m| m.rsplit_once(", expected ")) {
        let found = match found {
            "map" => "a table".to_string(),
            "sequence" => "an array".to_string(),
            other => other.to_string(),
        };
        return ConfigError::WrongType { key, expected: describe_expected(expected), found, at };
    }
    if message == "wanted string or table" {
        return ConfigError::WrongType { key, expected: "a string".into(), found: "another type".into(), at };
    }
    if let Some((found, expected)) = message.strip_prefix("invalid value: ").and_then(|m| m.rsplit_once(", expected "))
    {
        let message = format!("{found} is out of range; expected {}", describe_expected(expected));
        return ConfigError::BadValue { key, message, at };
    }
    let message = match message.strip_prefix("missing field ") {
        Some(field) => format!("missing key {field}"),
        None => message.to_string(),
    };
    ConfigError::BadValue { key, message, at }
}

/// serde's name of an expected type, in the configuration's terms.
fn describe_expected(serde_name: &str) -> String {
    match serde_name {
        "u8" => "an integer from 0 to 255",
        "u16" => "an integer from 0 to 65535",
        "u32" => "an integer from 0 to 4294967295",
        "u64" | "usize" => "a non-negative integer",
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer",
        "f32" | "f64" => "a number",
        "a boolean" => "a boolean (true or false)",
        "a string" | "string only" | "path string" => "a string",
        "a sequence" => "an array",
        "socket address" => "a socket address string such as \"127.0.0.1:9100\"",
        s if s.starts_with("struct ") || s == "a map" => "a table",
        s => s,
    }
    .to_string()
}

/// One `<PREFIX><SECTION>__<KEY>` variable, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvOverride {
    /// The variable's name.
    pub var: String,
    /// The section it overrides.
    pub section: String,
    /// The key it overrides.
    pub key: String,
    /// The value, read as the key's type; `None` unsets an optional key.
    pub value: Option<Value>,
}

impl EnvOverride {
    /// Whether a deserialization error at `path` concerns this override.
    fn covers(&self, path: &str) -> bool {
        let own = format!("{}.{}", self.section, self.key);
        path == own || path.strip_prefix(&own).is_some_and(|rest| rest.starts_with(['.', '[']))
    }
}

/// Finds and types the overrides of schema `C` in `env`, in variable order.
pub fn env_overrides<C: ConfigFile, K: AsRef<OsStr>, V: AsRef<OsStr>>(
    env: impl IntoIterator<Item = (K, V)>,
) -> Result<Vec<EnvOverride>, ConfigError> {
    let prefix = C::ENV_PREFIX;
    let defaults = Table::try_from(C::default()).map_err(|e| ConfigError::BadValue {
        key: "(defaults)".into(),
        message: e.to_string(),
        at: None,
    })?;
    let mut found: BTreeMap<(String, String), EnvOverride> = BTreeMap::new();
    let mut vars: Vec<(String, Option<String>)> = Vec::new();
    for (name, value) in env {
        let (name, value) = (name.as_ref(), value.as_ref());
        let Some(name) = name.to_str() else {
            if name.to_string_lossy().starts_with(prefix) {
                let var = name.to_string_lossy().into_owned();
                return Err(ConfigError::Env { var, reason: "the name is not valid UTF-8".into() });
            }
            continue;
        };
        if name.starts_with(prefix) {
            vars.push((name.to_string(), value.to_str().map(str::to_string)));
        }
    }
    vars.sort();
    for (var, value) in vars {
        let env_error = |reason: String| ConfigError::Env { var: var.clone(), reason };
        let rest = var.get(prefix.len()..).unwrap_or_default();
        let Some((section, key)) = rest.split_once("__") else {
            // Not of the override form (e.g. `NOX_DEPLOYMENT`), unless it starts
            // with a section name: then it is a misspelt override.
            let lower = rest.to_ascii_lowercase();
            if let Some(section) = defaults.keys().find(|s| lower == **s || lower.starts_with(&format!("{s}_"))) {
                let upper = section.to_ascii_uppercase();
                return Err(env_error(format!(
                    "looks like an override of [{section}], but section and key must be separated by two \
                     underscores: {prefix}{upper}__<KEY>"
                )));
            }
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let Some(value) = value else {
            return Err(env_error("the value is not valid UTF-8".into()));
        };
        let Some(Value::Table(section_defaults)) = defaults.get(&section) else {
            let sections: Vec<&str> = defaults.keys().map(String::as_str).collect();
            return Err(env_error(format!("no section [{section}]; sections: {}", sections.join(", "))));
        };
        if C::FILE_ONLY_KEYS.contains(&(section.as_str(), key.as_str())) {
            return Err(env_error(format!(
                "{section}.{key} cannot be set from the environment; list it as [[{section}.{key}]] in the file"
            )));
        }
        let default = section_defaults.get(&key);
        let optional = C::OPTIONAL_KEYS.contains(&(section.as_str(), key.as_str()));
        if default.is_none() && !optional {
            let mut keys: Vec<&str> = section_defaults.keys().map(String::as_str).collect();
            keys.extend(C::OPTIONAL_KEYS.iter().filter(|(s, _)| *s == section).map(|(_, k)| *k));
            keys.sort_unstable();
            return Err(env_error(format!("no key `{key}` in [{section}]; keys: {}", keys.join(", "))));
        }
        let value = env_value(default, &value).map_err(|reason| env_error(format!("{section}.{key}: {reason}")))?;
        let slot = (section.clone(), key.clone());
        if let Some(earlier) = found.get(&slot) {
            return Err(env_error(format!("sets {section}.{key}, which {} already sets", earlier.var)));
        }
        found.insert(slot, EnvOverride { var, section, key, value });
    }
    Ok(found.into_values().collect())
}

/// Reads `raw` as the type of `default` (`None`: an optional string key).
fn env_value(default: Option<&Value>, raw: &str) -> Result<Option<Value>, String> {
    match default {
        None if raw.is_empty() => Ok(None),
        None => Ok(Some(Value::String(raw.to_string()))),
        Some(Value::Array(items)) => {
            let element = items.first().unwrap_or(&Value::String(String::new())).clone();
            let parsed: Result<Vec<Value>, String> = raw
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| scalar(&element, item))
                .collect();
            Ok(Some(Value::Array(parsed?)))
        }
        Some(_) if raw.is_empty() => Err("empty value; only optional keys can be unset".into()),
        Some(kind) => scalar(kind, raw).map(Some),
    }
}

fn scalar(kind: &Value, raw: &str) -> Result<Value, String> {
    let trimmed = raw.trim();
    match kind {
        Value::Integer(_) => {
            trimmed.parse().map(Value::Integer).map_err(|_| format!("expected an integer, got `{raw}`"))
        }
        Value::Float(_) => trimmed.parse().map(Value::Float).map_err(|_| format!("expected a number, got `{raw}`")),
        Value::Boolean(_) => match trimmed.to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Boolean(true)),
            "false" => Ok(Value::Boolean(false)),
            _ => Err(format!("expected true or false, got `{raw}`")),
        },
        Value::String(_) => Ok(Value::String(raw.to_string())),
        Value::Datetime(_) | Value::Array(_) | Value::Table(_) => {
            Err("this key is a table or nested array; it can only be set in the file".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Demo {
        server: Server,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Server {
        port: u16,
        rate: f64,
        hosts: Vec<String>,
        token: Option<String>,
    }

    impl Default for Server {
        fn default() -> Self {
            Server { port: 80, rate: 1.5, hosts: vec!["a".into()], token: None }
        }
    }

    impl ConfigFile for Demo {
        const ENV_PREFIX: &'static str = "DEMO_";
        const OPTIONAL_KEYS: &'static [(&'static str, &'static str)] = &[("server", "token")];
        const FILE_ONLY_KEYS: &'static [(&'static str, &'static str)] = &[];

        fn validate(&self) -> Result<(), Vec<Problem>> {
            let mut c = Checks::default();
            c.at_least("server.port", self.server.port, 1);
            c.positive_rate("server.rate", self.server.rate);
            c.finish()
        }
    }

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Demo, ConfigError> {
        from_toml_str(text, env.iter().copied())
    }

    #[test]
    fn a_schema_loads_with_its_own_prefix_and_keys() {
        let d = parse("[server]\nport = 8080\n", &[("DEMO_SERVER__HOSTS", "x, y"), ("NOX_SERVER__PORT", "1")]).unwrap();
        assert_eq!(d.server.port, 8080, "another binary's prefix is not ours");
        assert_eq!(d.server.hosts, vec!["x".to_string(), "y".to_string()]);
        let d = parse("", &[("DEMO_SERVER__TOKEN", "secret"), ("DEMO_SERVER__RATE", "2")]).unwrap();
        assert_eq!((d.server.token.as_deref(), d.server.rate), (Some("secret"), 2.0));
        assert_eq!(all_keys::<Demo>().len(), 4);
    }

    #[test]
    fn each_failure_says_where() {
        assert!(matches!(parse("[server\n", &[]), Err(ConfigError::Syntax { at: Location { line: 1, .. }, .. })));
        match parse("[server]\nprot = 1\n", &[]) {
            Err(ConfigError::UnknownKey { key, expected, at: Some(Location { line: 2, .. }) }) => {
                assert_eq!(key, "server.prot");
                assert!(expected.contains("port"), "{expected}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse("[server]\nport = \"x\"\n", &[]), Err(ConfigError::WrongType { .. })));
        match parse("", &[("DEMO_SERVER__PORT", "eighty")]) {
            Err(ConfigError::Env { var, .. }) => assert_eq!(var, "DEMO_SERVER__PORT"),
            other => panic!("{other:?}"),
        }
        match parse("", &[("DEMO_SERVR__PORT", "1")]) {
            Err(ConfigError::Env { reason, .. }) => assert!(reason.contains("no section [servr]"), "{reason}"),
            other => panic!("{other:?}"),
        }
        match parse("[server]\nport = 0\nrate = -1.0\n", &[]) {
            Err(ConfigError::Invalid(problems)) => {
                let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
                assert_eq!(keys, vec!["server.port", "server.rate"]);
            }
            other => panic!("{other:?}"),
        }
    }
}
