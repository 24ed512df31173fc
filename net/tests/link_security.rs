//! Link security (`LinkSecurity`): a peer that offers TLS first and one that
//! speaks only Noise connect to each other, and packets cross either link.
//! Real libp2p connections on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use nox_net::p2p::{LinkSecurity, PeerKind};
use nox_net::raw_peer::{OnReceive, RawPeer};
use nox_protocol::sphinx::{PACKET_LEN, Packet};

fn free_addr() -> Multiaddr {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
}

async fn crosses(receiver_security: LinkSecurity, sender_security: LinkSecurity) {
    let receiver_key = Keypair::generate_ed25519();
    let receiver_id = PeerId::from(receiver_key.public());
    let addr = free_addr();
    let receiver =
        RawPeer::start_secured(receiver_key, vec![addr.clone()], PeerKind::Node, OnReceive::Keep(4), receiver_security)
            .await
            .unwrap();
    let sender = RawPeer::start_secured(
        Keypair::generate_ed25519(),
        vec![],
        PeerKind::Node,
        OnReceive::Keep(1),
        sender_security,
    )
    .await
    .unwrap();
    sender.connect(receiver_id, vec![addr], Duration::from_secs(10)).await.unwrap();
    let mut bytes = vec![0u8; PACKET_LEN];
    bytes[..5].copy_from_slice(b"hello");
    let packet = Packet::from_vec(bytes).unwrap();
    sender.send_packet(receiver_id, &packet).await.unwrap();
    let got = receiver.next_packet(Duration::from_secs(10)).await.expect("the packet crosses the link");
    assert_eq!(got.as_bytes(), packet.as_bytes(), "{receiver_security:?} <- {sender_security:?}");
    sender.shutdown().await;
    receiver.shutdown().await;
}

#[tokio::test]
async fn tls_and_noise_peers_connect_every_way() {
    for (receiver, sender) in [
        (LinkSecurity::Tls, LinkSecurity::Tls),
        (LinkSecurity::Tls, LinkSecurity::Noise),
        (LinkSecurity::Noise, LinkSecurity::Tls),
        (LinkSecurity::Noise, LinkSecurity::Noise),
    ] {
        crosses(receiver, sender).await;
    }
}
