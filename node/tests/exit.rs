//! The exit stage through a real network: a request of each outcome crosses
//! entry → mix → exit on loopback and its answer comes back through SURBs with
//! the status a client can act on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use nox_client::{ReplyError, build_request, echo_request};
use nox_node::exit::{EchoService, ExitService, RequestContext, ServiceError, ServiceRouter};
use nox_node::localnet::LocalNet;
use nox_node::node::NodeOptions;
use nox_protocol::payload::{ReplyStatus, Request, RequestKind};

const POW_BITS: u8 = 4;

/// Answers after ten seconds: far past the test's request deadline.
struct Slow;

impl ExitService for Slow {
    fn name(&self) -> &'static str {
        "slow"
    }

    fn serve(&self, _ctx: RequestContext, _request: Request) -> BoxFuture<'static, Result<Vec<u8>, ServiceError>> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok(b"too late".to_vec())
        })
    }
}

/// Refuses with a reason, and reports the budget it was given.
struct Refuser;

impl ExitService for Refuser {
    fn name(&self) -> &'static str {
        "refuser"
    }

    fn serve(&self, ctx: RequestContext, _request: Request) -> BoxFuture<'static, Result<Vec<u8>, ServiceError>> {
        Box::pin(async move { Err(ServiceError::Refused(format!("budget {}", ctx.reply_budget))) })
    }
}

fn status_of(r: Result<Vec<u8>, ReplyError>) -> (ReplyStatus, String) {
    match r {
        Ok(data) => (ReplyStatus::Ok, String::from_utf8_lossy(&data).into_owned()),
        Err(ReplyError::Status { status, message }) => (status, message),
        Err(e) => panic!("no reply: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_request_gets_a_typed_answer() {
    nox_node::localnet::init_test_logging();
    let dir = tempfile::tempdir().unwrap();
    let services = ServiceRouter::new()
        .with(RequestKind::Echo, Arc::new(EchoService))
        .with(RequestKind::RpcCall, Arc::new(Slow))
        .with(RequestKind::Http, Arc::new(Refuser));
    let opts = NodeOptions { exit_services: Some(services), ..NodeOptions::default() };
    let net = LocalNet::start(dir.path(), [1, 1, 1], 11, opts, |_, c| {
        c.exit.concurrency = 1;
        c.exit.request_timeout_ms = 1_500;
    })
    .await
    .unwrap();
    assert!(net.wait_ready(Duration::from_secs(20)).await);
    let (gw, mx, ex) = (net.layer(0)[0], net.layer(1)[0], net.layer(2)[0]);
    let gateway = net.nodes[gw].running.as_ref().unwrap().peer_id;
    let (epoch, fwd) = net.route(&[gw, mx, ex], 0).unwrap();
    let (_, back) = net.route(&[mx, gw], 0).unwrap();
    let timeout = Duration::from_secs(15);

    // Served.
    let client = net.client(gw).await.unwrap();
    let req = echo_request(epoch, &fwd, &back, 1, b"hello".to_vec()).unwrap();
    assert_eq!(status_of(req.round_trip(&client, gateway, POW_BITS, timeout).await), (ReplyStatus::Ok, "hello".into()));

    // A kind this exit does not offer.
    let rpc_less = Request::RawBroadcast { chain_id: 1, raw_tx: vec![1, 2, 3] };
    let req = build_request(epoch, &fwd, &back, 1, rpc_less).unwrap();
    let (status, message) = status_of(req.round_trip(&client, gateway, POW_BITS, timeout).await);
    assert_eq!(status, ReplyStatus::Unsupported);
    assert!(message.contains("raw_broadcast"), "{message}");

    // A refusal carries its reason; the service saw the exit's answer limit
    // (exit.reply_max_bytes: SURBs beyond the request's are asked for).
    let http = Request::Http { method: "GET".into(), url: "http://127.0.0.1/".into(), headers: vec![], body: vec![] };
    let req = build_request(epoch, &fwd, &back, 1, http).unwrap();
    let (status, message) = status_of(req.round_trip(&client, gateway, POW_BITS, timeout).await);
    assert_eq!(status, ReplyStatus::Refused);
    let limit: usize = message.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(limit, nox_node::config::ExitSection::default().reply_max_bytes);
    let budget = nox_node::exit::reply::reply_budget(1);

    // An echo longer than its one SURB can carry back is held, and the exit
    // asks for the SURBs it lacks (nox_client::Client sends them).
    let req = echo_request(epoch, &fwd, &back, 1, vec![7; 3 * budget]).unwrap();
    let reply = {
        client.claim_replies(gateway, req.surb_keys.iter().map(|k| k.surb_id()).collect()).await.unwrap();
        for (_, p) in &req.packets {
            client.submit(gateway, p, POW_BITS).await.unwrap();
        }
        req.await_reply(&client, timeout).await.unwrap()
    };
    assert_eq!(reply.status, ReplyStatus::MoreSurbs);
    let needed = reply.surbs_needed().unwrap();
    assert!((4..=8).contains(&needed), "three packets of data, the envelope's bytes and their parity: {needed}");

    // The one service slot is taken by a slow request: the next is Busy at
    // once, and the slow one is answered Timeout at the deadline.
    let slow_client = net.client(gw).await.unwrap();
    let rpc = Request::RpcCall { chain_id: 1, json: "{}".into() };
    let slow = build_request(epoch, &fwd, &back, 1, rpc).unwrap();
    let slow_answer = tokio::spawn(async move {
        let r = slow.round_trip(&slow_client, gateway, POW_BITS, Duration::from_secs(15)).await;
        slow_client.shutdown().await;
        r
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let req = echo_request(epoch, &fwd, &back, 1, b"second".to_vec()).unwrap();
    assert_eq!(status_of(req.round_trip(&client, gateway, POW_BITS, timeout).await).0, ReplyStatus::Busy);
    assert_eq!(status_of(slow_answer.await.unwrap()).0, ReplyStatus::Timeout);

    // The slot is free again.
    let req = echo_request(epoch, &fwd, &back, 1, b"third".to_vec()).unwrap();
    assert_eq!(status_of(req.round_trip(&client, gateway, POW_BITS, timeout).await), (ReplyStatus::Ok, "third".into()));

    let m = &net.nodes[ex].running.as_ref().unwrap().metrics;
    assert_eq!(m.dropped_value("exit", "busy"), 1);
    // hello, the held long echo and third.
    assert_eq!(m.packets_value("exit", "served"), 3);
    assert_eq!(m.packets_value("exit", "held_for_surbs"), 1);
    client.shutdown().await;
    net.shutdown().await;
}
