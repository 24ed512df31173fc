#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A relay network of separate `nox run` processes on loopback, driven the way
//! an operator and a client would: keys from `nox keygen`, one TOML file per
//! node, readiness and metrics over HTTP, a client that only knows the gateway,
//! SIGKILL of one mix node, and SIGTERM for a clean stop.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use nox_client::echo_request;
use nox_net::p2p::{PeerKind, peer_id_of};
use nox_net::raw_peer::RawPeer;
use nox_net::topology_doc::TopologyDocument;
use nox_protocol::NodeId;
use nox_protocol::descriptor::MixDescriptor;
use nox_protocol::sphinx::Hop;

const POW_BITS: u8 = 4;
const NOX: &str = env!("CARGO_BIN_EXE_nox");

/// One `nox run` process and what the test knows about it.
struct NodeProcess {
    name: String,
    id: NodeId,
    layer: u8,
    p2p_port: u16,
    http_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl NodeProcess {
    fn peer_id(&self) -> PeerId {
        peer_id_of(&self.id).unwrap()
    }

    fn multiaddr(&self) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{}", self.p2p_port).parse().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("process running").id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The network. Dropping it (also while a test panics) kills and reaps every
/// process that is still running, then removes the directory.
struct ProcessNet {
    nodes: Vec<NodeProcess>,
    _dir: tempfile::TempDir,
}

impl Drop for ProcessNet {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!("----- log of {} -----\n{}", node.name, node.log_text());
            }
        }
    }
}

/// `nox keygen --dir DIR`; returns the node id it prints.
fn keygen(dir: &Path) -> NodeId {
    let out = Command::new(NOX).arg("keygen").arg("--dir").arg(dir).output().unwrap();
    assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hex_id = json["node_id"].as_str().unwrap().strip_prefix("0x").unwrap();
    NodeId(hex::decode(hex_id).unwrap().try_into().unwrap())
}

/// `n` distinct free TCP ports on loopback (all bound at once, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

fn config_text(node: &NodeProcess, dir: &Path, all: &[NodeProcess]) -> String {
    let role = if node.layer == 2 { "exit" } else { "relay" };
    let mut text = format!(
        r#"[node]
keys_dir = "{keys}"
data_dir = "{data}"
role = "{role}"
layer = {layer}

[p2p]
listen = ["/ip4/127.0.0.1/tcp/{p2p}"]
max_connections_per_subnet = 64
handshake_timeout_secs = 5

[ingest]
pow_bits = {POW_BITS}

[workers]
threads = 1

[cover]
loop_rate = 0.0
drop_rate = 0.0

[http]
listen = "127.0.0.1:{http}"

[log]
level = "info"
format = "text"
"#,
        keys = dir.join("keys").display(),
        data = dir.join("data").display(),
        layer = node.layer,
        p2p = node.p2p_port,
        http = node.http_port,
    );
    for other in all.iter().filter(|o| o.id != node.id) {
        text.push_str(&format!(
            "\n[[topology.nodes]]\nnode_id = \"0x{}\"\nlayer = {}\naddresses = [\"{}\"]\n",
            hex::encode(other.id.0),
            other.layer,
            other.multiaddr()
        ));
    }
    text
}

impl ProcessNet {
    /// Generates keys and a configuration for one node per entry of `layers`
    /// and starts them all.
    fn start(layers: &[u8]) -> ProcessNet {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(2 * layers.len());
        let mut nodes = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            let ndir = dir.path().join(format!("node{i}"));
            let id = keygen(&ndir.join("keys"));
            nodes.push(NodeProcess {
                name: format!("node{i} (layer {layer})"),
                id,
                layer: *layer,
                p2p_port: ports[2 * i],
                http_port: ports[2 * i + 1],
                config: ndir.join("nox.toml"),
                log: ndir.join("nox.log"),
                child: None,
            });
        }
        for (i, node) in nodes.iter().enumerate() {
            let text = config_text(node, &dir.path().join(format!("node{i}")), &nodes);
            std::fs::write(&node.config, text).unwrap();
        }
        let mut net = ProcessNet { nodes, _dir: dir };
        for i in 0..net.nodes.len() {
            net.spawn(i);
        }
        net
    }

    /// Starts `nox run` for node `i`, appending to its log.
    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "{} is already running", node.name);
        let log = File::options().create(true).append(true).open(&node.log).unwrap();
        let mut command = Command::new(NOX);
        command.arg("run").arg("--config").arg(&node.config);
        // Only the file configures the node.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("NOX_") {
                command.env_remove(name);
            }
        }
        let child = command.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
        node.child = Some(child);
    }

    /// Waits until every node answers `/health` and every node's `/topology`
    /// holds a current-epoch descriptor of every node.
    async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let ids: Vec<String> = self.nodes.iter().map(|n| format!("0x{}", hex::encode(n.id.0))).collect();
        for (i, id) in ids.iter().enumerate() {
            loop {
                self.assert_running(i);
                if let Some(health) = get_json(self.nodes[i].url("/health")).await {
                    assert_eq!(health["status"], "ok");
                    assert_eq!(health["node_id"].as_str(), Some(id.as_str()));
                    break;
                }
                assert!(Instant::now() < deadline, "{} did not answer /health", self.nodes[i].name);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        for i in 0..self.nodes.len() {
            loop {
                self.assert_running(i);
                let topology = get_topology(self.nodes[i].url("/topology")).await;
                if topology.as_ref().is_some_and(|t| knows_current_descriptors(t, &ids)) {
                    break;
                }
                assert!(Instant::now() < deadline, "{} lacks current descriptors: {topology:?}", self.nodes[i].name);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    fn assert_running(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(status) = node.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!("{} exited early with {status}:\n{}", node.name, node.log_text());
        }
    }

    /// Sends SIGKILL and reaps the process.
    fn kill(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().expect("process running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends `SIG{name}` (`TERM`, `INT`) and waits up to `timeout` for the
    /// process to exit.
    async fn stop(&mut self, i: usize, name: &str, timeout: Duration) -> ExitStatus {
        let pid = self.nodes[i].pid();
        let sent = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().unwrap();
        assert!(sent.success(), "kill -{name} {pid}");
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.nodes[i].child.as_mut().expect("process running");
            if let Some(status) = child.try_wait().unwrap() {
                self.nodes[i].child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "{} still running {timeout:?} after SIG{name}", self.nodes[i].name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether a `/topology` answer holds, for every id in `ids`, a descriptor of
/// the current epoch.
fn knows_current_descriptors(topology: &TopologyDocument, ids: &[String]) -> bool {
    let current = topology.epoch.current;
    ids.iter().all(|id| {
        topology.nodes.iter().any(|n| format!("0x{}", hex::encode(n.node_id)) == *id && n.mix_key(current).is_some())
    })
}

/// GET `url`: the body of a 200 answer, `None` on any failure.
async fn get_text(url: String) -> Option<String> {
    tokio::task::spawn_blocking(move || {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
        agent.get(&url).call().ok()?.into_string().ok()
    })
    .await
    .unwrap()
}

async fn get_json(url: String) -> Option<serde_json::Value> {
    serde_json::from_str(&get_text(url).await?).ok()
}

/// GET a `/topology` document, `None` on any failure.
async fn get_topology(url: String) -> Option<TopologyDocument> {
    TopologyDocument::from_json(&get_text(url).await?).ok()
}

/// The hop through `id` for `epoch`, from the verified descriptors.
fn hop(descriptors: &[MixDescriptor], id: NodeId, epoch: u64, delay_us: u32) -> Hop {
    let d = descriptors
        .iter()
        .find(|d| d.node_id == id && d.epoch == epoch)
        .unwrap_or_else(|| panic!("no descriptor of {} for epoch {epoch}", hex::encode(id.0)));
    Hop { id, key: d.mix_key, delay_us }
}

/// The longest run of hex digits in `text`.
fn longest_hex_run(text: &str) -> usize {
    text.split(|c: char| !c.is_ascii_hexdigit()).map(str::len).max().unwrap_or(0)
}

/// Polls the exit's `/metrics` until `line` appears; returns the last text.
async fn metrics_with(node: &NodeProcess, line: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = get_text(node.url("/metrics")).await.unwrap_or_default();
        if text.lines().any(|l| l == line) || Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_relay_echo_requests_survive_a_killed_mix_node_and_stop_on_sigterm() {
    let started = Instant::now();
    // node0: entry (the client's gateway), node1 and node2: mix, node3: exit.
    let mut net = ProcessNet::start(&[0, 1, 1, 2]);
    let (gw, m0, m1, ex) = (0, 1, 2, 3);
    net.wait_ready(Duration::from_secs(20)).await;
    eprintln!("network ready after {:?}", started.elapsed());

    let client =
        RawPeer::start(libp2p::identity::Keypair::generate_ed25519(), vec![], PeerKind::Client, 1024).await.unwrap();
    let gateway = net.nodes[gw].peer_id();
    client.connect(gateway, vec![net.nodes[gw].multiaddr()], Duration::from_secs(10)).await.unwrap();
    let descriptors = client.descriptors(gateway, Duration::from_secs(5)).await.unwrap();
    let epoch = get_topology(net.nodes[gw].url("/topology")).await.unwrap().epoch.current;
    let ids: Vec<NodeId> = net.nodes.iter().map(|n| n.id).collect();
    let route = |via: &[usize]| -> Vec<Hop> { via.iter().map(|i| hop(&descriptors, ids[*i], epoch, 500)).collect() };

    // Through the first mix node, there and back.
    let (fwd, back) = (route(&[gw, m0, ex]), route(&[m0, gw]));
    let req = echo_request(epoch, &fwd, &back, 1, b"across processes".to_vec()).unwrap();
    let reply = req.round_trip(&client, gateway, POW_BITS, Duration::from_secs(10)).await.ok();
    assert_eq!(reply.as_deref(), Some(&b"across processes"[..]));
    eprintln!("first reply after {:?}", started.elapsed());

    // The exit counted the request; no node's metrics name a node, a peer or
    // an address.
    let served = r#"nox_packets_total{stage="exit",outcome="served"} 1"#;
    let text = metrics_with(&net.nodes[ex], served, Duration::from_secs(5)).await;
    assert!(text.lines().any(|l| l == served), "{text}");
    let client_peer = client.p2p.peer_id.to_string();
    for node in &net.nodes {
        let text = get_text(node.url("/metrics")).await.unwrap();
        assert!(longest_hex_run(&text) < 16, "{}: hex in metrics:\n{text}", node.name);
        for n in &net.nodes {
            assert!(!text.contains(&hex::encode(n.id.0)), "{}: a node id in metrics", node.name);
            assert!(!text.contains(&n.peer_id().to_string()), "{}: a peer id in metrics", node.name);
        }
        assert!(!text.contains(&client_peer), "{}: the client's peer id in metrics", node.name);
        assert!(!text.contains("127.0.0.1") && !text.contains("/ip4/"), "{}: an address in metrics", node.name);
    }

    // SIGKILL the first mix node: a request routed through the second one is
    // still answered, and the gateway still serves /health.
    net.kill(m0);
    let (fwd, back) = (route(&[gw, m1, ex]), route(&[m1, gw]));
    let req = echo_request(epoch, &fwd, &back, 1, b"still here".to_vec()).unwrap();
    let reply = req.round_trip(&client, gateway, POW_BITS, Duration::from_secs(10)).await.ok();
    assert_eq!(reply.as_deref(), Some(&b"still here"[..]));
    let health = get_json(net.nodes[gw].url("/health")).await.expect("gateway /health after the kill");
    assert_eq!(health["status"], "ok");
    client.shutdown().await;
    eprintln!("second reply after {:?}", started.elapsed());

    // SIGTERM the others: each stops cleanly, with exit code 0, within 10 s.
    for i in [gw, m1, ex] {
        let status = net.stop(i, "TERM", Duration::from_secs(10)).await;
        assert!(status.success(), "{} exited with {status}:\n{}", net.nodes[i].name, net.nodes[i].log_text());
    }
    eprintln!("all stopped after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stops_on_sigint_and_starts_again_on_its_data() {
    let mut net = ProcessNet::start(&[0]);
    net.wait_ready(Duration::from_secs(10)).await;
    let status = net.stop(0, "INT", Duration::from_secs(10)).await;
    assert!(status.success(), "exited with {status}:\n{}", net.nodes[0].log_text());
    assert!(net.nodes[0].log_text().contains("stopped"), "{}", net.nodes[0].log_text());
    // The database was released and is whole: the same node starts on it.
    net.spawn(0);
    net.wait_ready(Duration::from_secs(10)).await;
    let status = net.stop(0, "TERM", Duration::from_secs(10)).await;
    assert!(status.success(), "exited with {status}:\n{}", net.nodes[0].log_text());
}

#[test]
fn run_without_keys_says_how_to_make_them() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("no-keys");
    let config = dir.path().join("nox.toml");
    let text = format!(
        "[node]\nkeys_dir = \"{}\"\ndata_dir = \"{}\"\n[p2p]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n[http]\nlisten = \"127.0.0.1:0\"\n",
        keys.display(),
        dir.path().join("data").display()
    );
    std::fs::write(&config, text).unwrap();
    let out = Command::new(NOX).arg("run").arg("--config").arg(&config).env("RUST_BACKTRACE", "0").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("nox keygen --dir {}", keys.display())), "{stderr}");
    assert!(!dir.path().join("data").exists(), "nothing is created without keys");
}

#[test]
fn run_with_an_invalid_config_exits_2_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("nox.toml");
    std::fs::write(&config, "[node]\nlayer = 7\n[mix]\nmax_delay_ms = 5000000\n").unwrap();
    let out = Command::new(NOX).arg("run").arg("--config").arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("node.layer") && stderr.contains("mix.max_delay_ms"), "{stderr}");
}
