//! A local chain: anvil from `node_modules/.bin`, on a free loopback port, in
//! its own process group, killed with its whole group when dropped (also when
//! the owner panics).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::DevnetError;

/// anvil's first default account (the deployer and registry admin), from its
/// well-known development mnemonic. Never holds anything outside a devnet.
pub const DEPLOYER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// Chain id anvil reports by default.
pub const CHAIN_ID: u64 = 31337;

/// A running anvil.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    port: u16,
}

impl Anvil {
    /// Starts anvil from `<root>/node_modules/.bin/anvil`. Without
    /// `block_time` it mines a block per transaction (automine); with it, a
    /// block every `block_time` as well.
    pub fn start(root: &Path, block_time: Option<Duration>) -> Result<Anvil, DevnetError> {
        let bin = root.join("node_modules/.bin/anvil");
        if !bin.exists() {
            return Err(DevnetError::MissingTool(format!("{} (run `npm ci`)", bin.display())));
        }
        // A port probed free can be taken before anvil binds it (tests start
        // chains side by side): anvil then exits, and another port is tried.
        for _ in 0..5 {
            let port = free_port()?;
            let mut cmd = Command::new(&bin);
            cmd.args(["--host", "127.0.0.1", "--port", &port.to_string(), "--silent"]);
            cmd.args(["--chain-id", &CHAIN_ID.to_string()]);
            if let Some(t) = block_time {
                cmd.args(["--block-time", &format!("{}", t.as_secs_f64())]);
            }
            let child = cmd
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| DevnetError::Spawn { what: "anvil", source: e })?;
            let mut anvil = Anvil { child, port };
            if anvil.wait_ready(Duration::from_secs(30))? {
                return Ok(anvil);
            }
            anvil.kill();
        }
        Err(DevnetError::Timeout("anvil to bind a free port (five tries)"))
    }

    /// The JSON-RPC URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id (also the process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until this anvil answers `eth_chainId` with [`CHAIN_ID`]:
    /// `Ok(true)` when it does, `Ok(false)` when the process exited first
    /// (its port was taken).
    fn wait_ready(&mut self, limit: Duration) -> Result<bool, DevnetError> {
        let deadline = Instant::now() + limit;
        loop {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return Ok(false);
            }
            if chain_id_answer(self.port).is_some_and(|id| id == CHAIN_ID) {
                // Still ours: a process that lost the port race has exited by now.
                return Ok(!matches!(self.child.try_wait(), Ok(Some(_))));
            }
            if Instant::now() > deadline {
                return Err(DevnetError::Timeout("anvil to answer eth_chainId"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the whole process group now.
    pub fn kill(&mut self) {
        kill_group(&mut self.child);
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGKILLs `child`'s process group (it was started as a group leader), then
/// reaps the child.
pub(crate) fn kill_group(child: &mut Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill").args(["-KILL", "--", &group]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts `bin args…` in its own process group with stdout and stderr
/// appended to `log` (what `nox run` and `nox-oracle run` are started with).
pub(crate) fn spawn_logged(
    bin: &std::path::Path,
    args: &[&std::ffi::OsStr],
    log: &std::path::Path,
    what: &'static str,
) -> Result<Child, DevnetError> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| DevnetError::Spawn { what: "log file", source: e })?;
    let err = out.try_clone().map_err(|e| DevnetError::Spawn { what: "log file", source: e })?;
    Command::new(bin)
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| DevnetError::Spawn { what, source: e })
}

/// SIGTERM to `child`, up to 10 s for it to exit, then SIGKILL to its group.
pub(crate) async fn stop_child(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    kill_group(&mut child);
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16, DevnetError> {
    use rand::Rng;
    // Ports handed out by this process: never the same one twice, even once
    // its first user is gone (several devnets run side by side in one test
    // binary, and a port probed and released is free again at once).
    static TAKEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    // Below Linux's default ephemeral range (32768–60999): the source port of
    // an outgoing connection (a dial, an RPC call) is never taken from here, so
    // nothing else grabs a probed port before its server binds it.
    let mut rng = rand::thread_rng();
    for _ in 0..1_000 {
        let port = rng.gen_range(PROBE_PORTS);
        if !taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port);
            return Ok(port);
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| DevnetError::Spawn { what: "port probe", source: e })?;
    let port = l.local_addr().map(|a| a.port()).map_err(|e| DevnetError::Spawn { what: "port probe", source: e })?;
    taken.insert(port);
    Ok(port)
}

/// Where [`free_port`] looks first: below the kernel's ephemeral ports.
const PROBE_PORTS: std::ops::Range<u16> = 20_000..32_768;

/// `eth_chainId` over a bare HTTP/1.1 request to 127.0.0.1:`port` (no client
/// library needed before the chain is up).
fn chain_id_answer(port: u16) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#;
    let req = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let hex = resp.split("\"result\":\"0x").nth(1)?.split('"').next()?;
    u64::from_str_radix(hex, 16).ok()
}
