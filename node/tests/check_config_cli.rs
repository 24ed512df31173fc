//! `nox check-config` as an operator runs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs `nox check-config FILE` with only the given `NOX_*` variables set.
fn check_config(file: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nox"));
    command.arg("check-config").arg(file);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("NOX_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied()).output().expect("run nox")
}

fn write(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("nox.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const GOOD: &str = r#"
[node]
role = "exit"
layer = 2

[p2p]
listen = ["/ip4/0.0.0.0/tcp/9000", "/ip4/0.0.0.0/tcp/9001"]

[http]
listen = "127.0.0.1:9200"
"#;

#[test]
fn a_good_file_is_ok_and_summarised() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), GOOD);
    let out = check_config(&path, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with(&format!("ok: {}\n", path.display())), "{text}");
    assert!(text.contains("role: exit, layer 2"), "{text}");
    assert!(text.contains("/ip4/0.0.0.0/tcp/9000, /ip4/0.0.0.0/tcp/9001"), "{text}");
    assert!(text.contains("http listen: 127.0.0.1:9200"), "{text}");
    assert!(text.contains("topology: 0 static nodes (no chain: stake is not checked)"), "{text}");

    // With a chain, the summary names the registry and counts its endpoints
    // (their URLs may carry API keys: they are not printed).
    let env = [
        ("NOX_CHAIN__RPC_URL", "http://127.0.0.1:8545/KEY"),
        ("NOX_CHAIN__CHAIN_ID", "31337"),
        ("NOX_CHAIN__REGISTRY", "0x5FbDB2315678afecb367f032d93F642f64180aa3"),
    ];
    let out = check_config(&path, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "topology: NoxRegistry 0x5FbDB2315678afecb367f032d93F642f64180aa3 on chain 31337 via 1 RPC endpoint(s), \
             quorum 1"
        ),
        "{text}"
    );
    assert!(!text.contains("KEY"), "{text}");
    let env = [
        ("NOX_CHAIN__RPC_URLS", "https://a.example.org/KEY,https://b.example.org,http://127.0.0.1:8545"),
        ("NOX_CHAIN__CHAIN_ID", "31337"),
        ("NOX_CHAIN__REGISTRY", "0x5FbDB2315678afecb367f032d93F642f64180aa3"),
    ];
    let out = check_config(&path, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("on chain 31337 via 3 RPC endpoint(s), quorum 2"), "{text}");
    assert!(!text.contains("KEY"), "{text}");
}

#[test]
fn a_plain_http_registry_endpoint_off_loopback_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), GOOD);
    let env = [
        ("NOX_CHAIN__RPC_URLS", "https://a.example.org,http://rpc.example.net/KEY,http://127.0.0.1:8545"),
        ("NOX_CHAIN__CHAIN_ID", "31337"),
        ("NOX_CHAIN__REGISTRY", "0x5FbDB2315678afecb367f032d93F642f64180aa3"),
    ];
    let out = check_config(&path, &env);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.starts_with("chain.rpc_urls[1]: ") && l.contains("rpc.example.net") && l.contains("https://")),
        "{err}"
    );
    assert!(!err.contains("KEY"), "{err}");
    assert!(stdout(&out).is_empty());
}

#[test]
fn the_example_file_is_ok() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("nox.example.toml");
    let out = check_config(&example, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "[mix]\nmax_dely_ms = 250\n");
    let out = check_config(&path, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("mix.max_dely_ms: unknown key (line 2, column 1)"), "{err}");
    assert!(err.contains("max_delay_ms"), "the valid keys are listed: {err}");
}

#[test]
fn every_invalid_value_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "[mix]\nmax_delay_ms = 5000000\n\n[p2p]\nlisten = [\"0.0.0.0:9000\"]\n");
    let out = check_config(&path, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.iter().any(|l| l.starts_with("p2p.listen[0]: ") && l.contains("0.0.0.0:9000")), "{err}");
    assert!(lines.iter().any(|l| l.starts_with("mix.max_delay_ms: ") && l.contains("5000000")), "{err}");
    assert!(stdout(&out).is_empty());
}

#[test]
fn an_env_override_can_make_a_valid_file_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), GOOD);
    let out = check_config(&path, &[("NOX_NODE__LAYER", "1")]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.lines().any(|l| l.starts_with("node.role: ") && l.contains("layer 2")), "{err}");
}

#[test]
fn a_misspelt_env_override_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), GOOD);
    let out = check_config(&path, &[("NOX_MIX__MAX_DELY_MS", "250")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("NOX_MIX__MAX_DELY_MS"), "{}", stderr(&out));
}

#[test]
fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = check_config(&dir.path().join("absent.toml"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read") && stderr(&out).contains("absent.toml"), "{}", stderr(&out));
}
