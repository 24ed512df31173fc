//! `nox_client::Client` against a real local network: the client learns the
//! members from a static list and the keys from its entry's descriptors,
//! draws its own routes and delays, and gets whole answers back — large ones
//! through SURB top-ups, retried ones without the exit performing them twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use nox_client::{Client, ClientConfig, ClientError, Progress, RouteShape, StaticMember, TopologySource};
use nox_node::exit::{EchoService, ExitService, RequestContext, ServiceError, ServiceRouter};
use nox_node::localnet::LocalNet;
use nox_node::node::NodeOptions;
use nox_protocol::payload::{ReplyStatus, Request, RequestKind};

/// Answers an `RpcCall` whose JSON is `"<length>,<pause ms>"` with that
/// many bytes after that pause; counts the calls it performs.
struct Sized {
    calls: Arc<AtomicUsize>,
}

impl ExitService for Sized {
    fn name(&self) -> &'static str {
        "sized"
    }

    fn serve(&self, _ctx: RequestContext, request: Request) -> BoxFuture<'static, Result<Vec<u8>, ServiceError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let Request::RpcCall { json, .. } = request else { return Err(ServiceError::BadRequest("kind".into())) };
            let (n, pause) = json.split_once(',').ok_or_else(|| ServiceError::BadRequest("length,pause".into()))?;
            let n: usize = n.parse().map_err(|_| ServiceError::BadRequest("length".into()))?;
            let pause: u64 = pause.parse().map_err(|_| ServiceError::BadRequest("pause".into()))?;
            tokio::time::sleep(Duration::from_millis(pause)).await;
            Ok((0..n).map(|i| (i % 251) as u8).collect())
        })
    }
}

fn members(net: &LocalNet) -> Vec<StaticMember> {
    net.nodes
        .iter()
        .map(|n| {
            let r = n.running.as_ref().unwrap();
            StaticMember {
                node_id: format!("0x{}", hex::encode(n.keys.node_id())),
                layer: n.config.node.layer,
                address: r.listen_addrs[0].to_string(),
            }
        })
        .collect()
}

fn config(net: &LocalNet) -> ClientConfig {
    let mut c = ClientConfig::new(TopologySource::Static(members(net)));
    c.pow_bits = net.nodes[0].config.ingest.pow_bits;
    c.epoch_secs = net.nodes[0].config.network.epoch_secs;
    c.mean_delay = Duration::from_millis(1);
    c.attempt_timeout = Duration::from_secs(10);
    c
}

fn rpc(len: usize, pause_ms: u64) -> Request {
    Request::RpcCall { chain_id: 1, json: format!("{len},{pause_ms}") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_client_routes_itself_tops_up_large_answers_and_retries_without_repeating() {
    nox_node::localnet::init_test_logging();
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let services = ServiceRouter::new()
        .with(RequestKind::Echo, Arc::new(EchoService))
        .with(RequestKind::RpcCall, Arc::new(Sized { calls: calls.clone() }));
    let opts = NodeOptions { exit_services: Some(services), ..NodeOptions::default() };
    let net = LocalNet::start(dir.path(), [1, 2, 1], 31, opts, |_, _| {}).await.unwrap();
    assert!(net.wait_ready(Duration::from_secs(20)).await);

    // Members from the list, keys from the entry: the exit's signed services route.
    let client = Client::connect(config(&net)).await.unwrap();
    assert!(client.offers(RequestKind::RpcCall) && client.offers(RequestKind::Echo));
    assert_eq!(
        client.echo(b"through routes the client drew".to_vec()).await.unwrap(),
        b"through routes the client drew"
    );

    // No exit offers Http: a typed error before anything is sent.
    let http =
        Request::Http { method: "GET".into(), url: "https://example.org/".into(), headers: vec![], body: vec![] };
    assert!(matches!(client.call(http).await, Err(ClientError::NoExit("http"))));

    // 1 MiB back for a request that carried 2 SURBs: the exit holds the
    // answer, asks for more, and it arrives whole.
    let mut topped = 0;
    let big = client
        .call_with_progress(rpc(1 << 20, 0), |p| {
            if let Progress::ToppedUp { surbs } = p {
                topped += surbs;
            }
        })
        .await
        .unwrap();
    assert_eq!(big.len(), 1 << 20);
    assert!(big.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8), "the answer arrives intact");
    assert!(topped > 30, "1 MiB needs dozens of SURBs beyond the request's 2: {topped}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // An answer slower than the first attempt's wait: the retry (same id,
    // fresh route and SURBs) reaches the same exit, which answers it without
    // performing the request again.
    let mut patient = config(&net);
    patient.attempt_timeout = Duration::from_millis(1_500);
    patient.attempts = 3;
    let retrying = Client::connect(patient).await.unwrap();
    let mut attempts = 0;
    let slow = retrying
        .call_with_progress(rpc(10, 2_500), |p| {
            if let Progress::Sent { attempt, .. } = p {
                attempts = attempt;
            }
        })
        .await
        .unwrap();
    assert_eq!(slow.len(), 10);
    assert!(attempts >= 2, "the first attempt timed out: {attempts}");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "performed once for both attempts");

    // Free routes of 3–6 hops reach the same exit.
    let mut free = config(&net);
    free.route = RouteShape::Free(5);
    let free = Client::connect(free).await.unwrap();
    assert_eq!(free.echo(b"free".to_vec()).await.unwrap(), b"free");

    // A refusal is typed with its status.
    match client.call(Request::RpcCall { chain_id: 1, json: "garbage".into() }).await {
        Err(ClientError::Status { status: ReplyStatus::BadRequest, message }) => assert!(message.contains("length")),
        other => panic!("expected a BadRequest answer, got {other:?}"),
    }

    for c in [client, retrying, free] {
        c.shutdown().await;
    }
    net.shutdown().await;
}
