//! Tests of the packet link: setup through tickets, the listener's limits,
//! and what the reader makes of frames altered, replayed, reordered, split or
//! cut short on the wire (the hostile frames written by hand over raw TCP).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use libp2p::{Multiaddr, PeerId};
use nox_protocol::sphinx::PACKET_LEN;
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::*;

/// Bound on any single step that should complete at once on loopback.
const STEP: Duration = Duration::from_secs(1);

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn hosts() -> Vec<String> {
    vec!["127.0.0.1".to_string()]
}

async fn bind(cfg: ListenerConfig) -> (LinkListener, mpsc::Receiver<(PeerId, LinkReader)>, ListenerMetrics) {
    let metrics = ListenerMetrics::default();
    let (listener, rx) = LinkListener::bind(local(), cfg, metrics.clone(), 8).await.unwrap();
    (listener, rx, metrics)
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: timed out"),
    }
}

/// Waits (briefly) until `cond` holds: counters are bumped by listener tasks
/// that may finish just after the effect a test observes.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!("{what}: never held");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn next_link(rx: &mut mpsc::Receiver<(PeerId, LinkReader)>) -> (PeerId, LinkReader) {
    within("a link on the channel", rx.recv()).await.expect("the listener's channel is open")
}

fn random_packet() -> Box<[u8; PACKET_LEN]> {
    let mut p = Box::new([0u8; PACKET_LEN]);
    rand::thread_rng().fill_bytes(&mut p[..]);
    p
}

fn secret_of(offer: &Offer) -> [u8; 32] {
    offer.encode()[3..].try_into().unwrap()
}

/// Frame `n` of the link keyed by `secret`, sealed independently of the
/// module's own writer: AES-256-GCM under BLAKE3 `derive_key(KEY_CONTEXT, S)`,
/// nonce 4 zero bytes and `n` big-endian, tag after the ciphertext.
fn seal(secret: &[u8; 32], n: u64, packet: &[u8; PACKET_LEN]) -> Vec<u8> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &blake3::derive_key(KEY_CONTEXT, secret)).unwrap());
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&n.to_be_bytes());
    let mut buf = packet.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf).unwrap();
    assert_eq!(buf.len(), FRAME_LEN);
    buf
}

/// A raw TCP connection that completes the sender's half of the handshake by
/// hand, checking the receiver's confirmation.
async fn raw_link(addr: SocketAddr, secret: &[u8; 32]) -> TcpStream {
    let mut s = within("raw connect", TcpStream::connect(addr)).await.unwrap();
    within("raw ticket id", s.write_all(&short(ID_CONTEXT, secret))).await.unwrap();
    let mut confirm = [0u8; 16];
    within("raw confirmation", s.read_exact(&mut confirm)).await.unwrap();
    assert_eq!(confirm, short(CONFIRM_CONTEXT, secret), "the receiver confirms with confirm(S)");
    s
}

/// A raw link already handed to the owner: the sender's stream and the reader.
async fn raw_pair(cfg: ListenerConfig) -> (TcpStream, LinkReader, [u8; 32], LinkListener, ListenerMetrics) {
    let (listener, mut rx, metrics) = bind(cfg).await;
    let peer = PeerId::random();
    let offer = listener.offer(peer).unwrap();
    let secret = secret_of(&offer);
    let stream = raw_link(listener.local_addr(), &secret).await;
    let (got, reader) = next_link(&mut rx).await;
    assert_eq!(got, peer);
    (stream, reader, secret, listener, metrics)
}

/// Whether the listener closed `s`: a read returns end of file or an error
/// (a reset) rather than waiting.
async fn closed_by_listener(s: &mut TcpStream, within_: Duration) -> bool {
    let mut b = [0u8; 1];
    matches!(tokio::time::timeout(within_, s.read(&mut b)).await, Ok(Ok(0)) | Ok(Err(_)))
}

// 1. Round trip.

#[tokio::test]
async fn packets_arrive_in_order_and_intact_for_the_offered_peer() {
    let (listener, mut rx, metrics) = bind(ListenerConfig::default()).await;
    let other = PeerId::random();
    let peer = PeerId::random();
    // An offer to someone else outstanding: the channel must name the peer
    // whose ticket the writer presented, not any peer.
    let _other_offer = listener.offer(other).unwrap();
    let offer = listener.offer(peer).unwrap();
    let mut writer = within("connect", LinkWriter::connect(&hosts(), &offer)).await.unwrap();
    let (got, mut reader) = next_link(&mut rx).await;
    assert_eq!(got, peer);
    eventually("accepted = 1", || metrics.accepted.get() == 1).await;

    let packets: Vec<Box<[u8; PACKET_LEN]>> = (0..100).map(|_| random_packet()).collect();
    let distinct: std::collections::HashSet<&[u8]> = packets.iter().map(|p| &p[..]).collect();
    assert_eq!(distinct.len(), 100);

    let sent = packets.clone();
    let send = tokio::spawn(async move {
        for (i, p) in sent.iter().enumerate() {
            match i % 4 {
                0 => writer.send(p).await.unwrap(),
                1 | 2 => writer.queue(p).await.unwrap(),
                _ => {
                    writer.queue(p).await.unwrap();
                    writer.flush().await.unwrap();
                }
            }
        }
        writer.close().await.unwrap();
    });
    for (i, p) in packets.iter().enumerate() {
        let got = if i % 2 == 0 {
            within("next_frame", reader.next_frame()).await.unwrap()
        } else {
            within("next_packet", reader.next_packet()).await.unwrap().as_bytes().to_vec()
        };
        assert_eq!(got.len(), PACKET_LEN);
        assert!(got[..] == p[..], "packet {i} differs");
    }
    within("sender", send).await.unwrap();
    assert!(matches!(within("end", reader.next_frame()).await, Err(LinkError::Closed)));
    assert_eq!(metrics.accepted.get(), 1);
    assert_eq!(metrics.unknown_ticket.get(), 0);
    assert_eq!(metrics.busy.get(), 0);
}

#[tokio::test]
async fn queue_flushes_by_itself_when_the_batch_is_full() {
    let (listener, mut rx, _metrics) = bind(ListenerConfig::default()).await;
    let offer = listener.offer(PeerId::random()).unwrap();
    let mut writer = within("connect", LinkWriter::connect(&hosts(), &offer)).await.unwrap();
    let (_, mut reader) = next_link(&mut rx).await;

    let n = 3 * WRITE_BATCH + 3;
    let packets: Vec<Box<[u8; PACKET_LEN]>> = (0..n).map(|_| random_packet()).collect();
    for p in &packets {
        within("queue", writer.queue(p)).await.unwrap();
    }
    // Without any flush, the full batches have gone out already.
    for (i, p) in packets.iter().take(3 * WRITE_BATCH).enumerate() {
        let got = within("auto-flushed frame", reader.next_frame()).await.unwrap();
        assert!(got[..] == p[..], "packet {i} differs");
    }
    // The last three are still in the writer's buffer.
    let pending = tokio::time::timeout(Duration::from_millis(100), reader.next_frame()).await;
    assert!(pending.is_err(), "a frame arrived that was never flushed");
    within("flush", writer.flush()).await.unwrap();
    for (i, p) in packets.iter().enumerate().skip(3 * WRITE_BATCH) {
        let got = within("flushed frame", reader.next_frame()).await.unwrap();
        assert!(got[..] == p[..], "packet {i} differs");
    }
    // A flush with nothing queued writes nothing.
    within("empty flush", writer.flush()).await.unwrap();
    drop(writer);
    assert!(matches!(within("end", reader.next_frame()).await, Err(LinkError::Closed)));
}

#[tokio::test]
async fn the_writer_frames_match_the_specified_wire_format() {
    // The writer's frame n is exactly AES-256-GCM(derive_key(KEY_CONTEXT, S),
    // nonce n) of the packet, tag appended: read off a raw listener socket.
    let raw = tokio::net::TcpListener::bind(local()).await.unwrap();
    let offer = offer_for_port(raw.local_addr().unwrap().port());
    let secret = secret_of(&offer);

    let receiver = tokio::spawn(async move {
        let (mut s, _) = raw.accept().await.unwrap();
        let mut id = [0u8; 16];
        s.read_exact(&mut id).await.unwrap();
        assert_eq!(id, short(ID_CONTEXT, &secret));
        s.write_all(&short(CONFIRM_CONTEXT, &secret)).await.unwrap();
        let mut frames = vec![0u8; 2 * FRAME_LEN];
        s.read_exact(&mut frames).await.unwrap();
        frames
    });
    let mut writer = within("connect", LinkWriter::connect(&hosts(), &offer)).await.unwrap();
    let (p0, p1) = (random_packet(), random_packet());
    writer.send(&p0).await.unwrap();
    writer.send(&p1).await.unwrap();
    let frames = within("raw receiver", receiver).await.unwrap();
    assert_eq!(frames[..FRAME_LEN], seal(&secret, 0, &p0)[..]);
    assert_eq!(frames[FRAME_LEN..], seal(&secret, 1, &p1)[..]);
    // The ciphertext is not the packet.
    assert_ne!(frames[..PACKET_LEN], p0[..]);
}

#[tokio::test]
async fn a_receiver_that_does_not_confirm_is_refused() {
    // A listener on the offered port that answers the ticket id with anything
    // but confirm(S) — the id echoed, random bytes, a short answer, nothing —
    // is not the receiver the offer came from.
    for answer in ["echo", "random", "short", "none"] {
        let raw = tokio::net::TcpListener::bind(local()).await.unwrap();
        let offer = offer_for_port(raw.local_addr().unwrap().port());
        let receiver = tokio::spawn(async move {
            let (mut s, _) = raw.accept().await.unwrap();
            let mut id = [0u8; 16];
            s.read_exact(&mut id).await.unwrap();
            match answer {
                "echo" => s.write_all(&id).await.unwrap(),
                "random" => {
                    let mut junk = [0u8; 16];
                    rand::thread_rng().fill_bytes(&mut junk);
                    s.write_all(&junk).await.unwrap();
                }
                "short" => s.write_all(&id[..8]).await.unwrap(),
                _ => {}
            }
            s.shutdown().await.unwrap();
        });
        let got = within("connect", LinkWriter::connect(&hosts(), &offer)).await;
        assert!(matches!(got, Err(LinkError::NotConfirmed)), "{answer}: {got:?}");
        within("raw receiver", receiver).await.unwrap();
    }
}

// 2. Offers.

#[tokio::test]
async fn offers_encode_and_decode() {
    let (listener, _rx, _metrics) = bind(ListenerConfig::default()).await;
    let offer = listener.offer(PeerId::random()).unwrap();
    assert_eq!(offer.port, listener.local_addr().port());
    let bytes = offer.encode();
    assert_eq!(bytes.len(), OFFER_LEN);
    assert_eq!(bytes[0], OFFER_VERSION);
    assert_eq!(u16::from_be_bytes([bytes[1], bytes[2]]), offer.port);
    let back = Offer::decode(&bytes[..]).unwrap();
    assert_eq!(back.port, offer.port);
    assert_eq!(back.encode()[..], bytes[..]);
    // Two offers carry different secrets.
    let again = listener.offer(PeerId::random()).unwrap();
    assert_ne!(again.encode()[3..], bytes[3..]);
    // The secret stays out of Debug.
    let shown = format!("{offer:?}");
    assert!(shown.contains(&offer.port.to_string()));
    assert!(shown.contains("redacted"));
    assert!(!shown.contains(&hex::encode(&bytes[3..])));
    assert!(!shown.contains(&format!("{:?}", &bytes[3..])));

    for len in [0, 1, OFFER_LEN - 1, OFFER_LEN + 1, 2 * OFFER_LEN] {
        let buf = vec![OFFER_VERSION; len];
        assert!(matches!(Offer::decode(&buf), Err(LinkError::BadOffer(n)) if n == len), "length {len}");
    }
    for version in [0u8, 2, 0xff] {
        let mut buf = *bytes;
        buf[0] = version;
        assert!(matches!(Offer::decode(&buf), Err(LinkError::UnknownVersion(v)) if v == version));
    }
}

// 3–5. Tickets.

#[tokio::test]
async fn a_ticket_is_good_for_one_link() {
    let (listener, mut rx, metrics) = bind(ListenerConfig::default()).await;
    let offer = listener.offer(PeerId::random()).unwrap();
    let _first = within("first connect", LinkWriter::connect(&hosts(), &offer)).await.unwrap();
    let _link = next_link(&mut rx).await;
    let second = within("second connect", LinkWriter::connect(&hosts(), &offer)).await;
    assert!(matches!(second, Err(LinkError::NotConfirmed)), "{second:?}");
    assert_eq!(metrics.unknown_ticket.get(), 1);
    eventually("accepted = 1", || metrics.accepted.get() == 1).await;
    assert_eq!(metrics.accepted.get(), 1);
    assert!(rx.try_recv().is_err(), "the refused connection reached the owner");
}

#[tokio::test]
async fn a_made_up_offer_is_refused() {
    let (listener, mut rx, metrics) = bind(ListenerConfig::default()).await;
    // A real ticket is outstanding; a guessed secret must not match it.
    let _real = listener.offer(PeerId::random()).unwrap();
    let mut bytes = [0u8; OFFER_LEN];
    bytes[0] = OFFER_VERSION;
    bytes[1..3].copy_from_slice(&listener.local_addr().port().to_be_bytes());
    rand::thread_rng().fill_bytes(&mut bytes[3..]);
    let forged = Offer::decode(&bytes).unwrap();
    let got = within("connect", LinkWriter::connect(&hosts(), &forged)).await;
    assert!(matches!(got, Err(LinkError::NotConfirmed)), "{got:?}");
    assert_eq!(metrics.unknown_ticket.get(), 1);
    assert_eq!(metrics.accepted.get(), 0);
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn a_raw_connection_presenting_a_wrong_or_partial_id_is_closed() {
    let (listener, _rx, metrics) = bind(ListenerConfig::default()).await;
    let _real = listener.offer(PeerId::random()).unwrap();
    let mut s = TcpStream::connect(listener.local_addr()).await.unwrap();
    let mut id = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut id);
    s.write_all(&id).await.unwrap();
    assert!(closed_by_listener(&mut s, STEP).await);
    assert_eq!(metrics.unknown_ticket.get(), 1);

    // Half an id, then end of file: not a timeout, a connection without a ticket.
    let mut s = TcpStream::connect(listener.local_addr()).await.unwrap();
    s.write_all(&id[..8]).await.unwrap();
    s.shutdown().await.unwrap();
    assert!(closed_by_listener(&mut s, STEP).await);
    eventually("unknown_ticket = 2", || metrics.unknown_ticket.get() == 2).await;
    assert_eq!(metrics.handshake_timeout.get(), 0);
}

#[tokio::test]
async fn an_expired_ticket_is_refused() {
    let cfg = ListenerConfig { ticket_ttl: Duration::from_millis(50), ..ListenerConfig::default() };
    let (listener, mut rx, metrics) = bind(cfg).await;
    let offer = listener.offer(PeerId::random()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = within("connect", LinkWriter::connect(&hosts(), &offer)).await;
    assert!(matches!(got, Err(LinkError::NotConfirmed)), "{got:?}");
    assert_eq!(metrics.unknown_ticket.get(), 1);
    assert!(rx.try_recv().is_err());
    // A fresh offer within its lifetime works.
    let fresh = listener.offer(PeerId::random()).unwrap();
    within("connect", LinkWriter::connect(&hosts(), &fresh)).await.unwrap();
    next_link(&mut rx).await;
}

// 6. Offer caps.

#[tokio::test]
async fn offers_per_peer_are_capped() {
    let (listener, mut rx, metrics) = bind(ListenerConfig::default()).await;
    let peer = PeerId::random();
    let first = listener.offer(peer).unwrap();
    let _second = listener.offer(peer).unwrap();
    assert!(matches!(listener.offer(peer), Err(LinkError::TooManyOffers)));
    assert_eq!(metrics.offers_refused.get(), 1);
    assert!(matches!(listener.offer(peer), Err(LinkError::TooManyOffers)));
    assert_eq!(metrics.offers_refused.get(), 2);
    // Another peer is not held back by this one's share.
    listener.offer(PeerId::random()).unwrap();
    // Using a ticket frees the peer's slot.
    within("connect", LinkWriter::connect(&hosts(), &first)).await.unwrap();
    next_link(&mut rx).await;
    listener.offer(peer).unwrap();
    assert!(matches!(listener.offer(peer), Err(LinkError::TooManyOffers)));
    assert_eq!(metrics.offers_refused.get(), 3);
}

#[tokio::test]
async fn offers_over_all_peers_are_capped() {
    let cfg = ListenerConfig { max_tickets: 5, ..ListenerConfig::default() };
    let (listener, _rx, metrics) = bind(cfg).await;
    let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
    listener.offer(peers[0]).unwrap();
    listener.offer(peers[0]).unwrap();
    listener.offer(peers[1]).unwrap();
    listener.offer(peers[1]).unwrap();
    listener.offer(peers[2]).unwrap();
    // Five outstanding: a peer holding none is refused too.
    assert!(matches!(listener.offer(peers[3]), Err(LinkError::TooManyOffers)));
    assert!(matches!(listener.offer(peers[2]), Err(LinkError::TooManyOffers)));
    assert_eq!(metrics.offers_refused.get(), 2);
}

#[tokio::test]
async fn expired_tickets_free_their_slots() {
    let cfg = ListenerConfig { max_tickets: 2, ticket_ttl: Duration::from_millis(50), ..ListenerConfig::default() };
    let (listener, _rx, metrics) = bind(cfg).await;
    let peer = PeerId::random();
    listener.offer(peer).unwrap();
    listener.offer(peer).unwrap();
    assert!(matches!(listener.offer(peer), Err(LinkError::TooManyOffers)));
    assert!(matches!(listener.offer(PeerId::random()), Err(LinkError::TooManyOffers)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    listener.offer(peer).unwrap();
    listener.offer(PeerId::random()).unwrap();
    assert_eq!(metrics.offers_refused.get(), 2);
}

// 7–8. Handshake limits.

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let cfg = ListenerConfig { handshake_timeout: Duration::from_millis(100), ..ListenerConfig::default() };
    let (listener, _rx, metrics) = bind(cfg).await;
    let mut s = TcpStream::connect(listener.local_addr()).await.unwrap();
    let started = tokio::time::Instant::now();
    assert!(closed_by_listener(&mut s, STEP).await, "the listener kept a silent connection");
    assert!(started.elapsed() >= Duration::from_millis(80), "closed before the timeout: {:?}", started.elapsed());
    assert_eq!(metrics.handshake_timeout.get(), 1);
    assert_eq!(metrics.unknown_ticket.get(), 0);
}

#[tokio::test]
async fn handshakes_under_way_are_capped() {
    let cfg = ListenerConfig {
        max_handshakes: 2,
        handshake_timeout: Duration::from_millis(300),
        ..ListenerConfig::default()
    };
    let (listener, mut rx, metrics) = bind(cfg).await;
    let peer = PeerId::random();
    let offer = listener.offer(peer).unwrap();
    let addr = listener.local_addr();
    let mut idle1 = TcpStream::connect(addr).await.unwrap();
    let mut idle2 = TcpStream::connect(addr).await.unwrap();
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert!(closed_by_listener(&mut third, Duration::from_millis(200)).await, "the third handshake was let in");
    assert_eq!(metrics.busy.get(), 1);
    assert_eq!(metrics.handshake_timeout.get(), 0);

    // A real writer meanwhile is turned away too, without burning its ticket.
    let early = within("connect while busy", LinkWriter::connect(&hosts(), &offer)).await;
    assert!(matches!(early, Err(LinkError::NotConfirmed | LinkError::Unreachable(_))), "{early:?}");
    assert_eq!(metrics.busy.get(), 2);
    assert_eq!(metrics.unknown_ticket.get(), 0);

    // Once the idle ones time out, the same offer gets through.
    assert!(closed_by_listener(&mut idle1, STEP).await);
    assert!(closed_by_listener(&mut idle2, STEP).await);
    eventually("handshake_timeout = 2", || metrics.handshake_timeout.get() == 2).await;
    let mut writer = within("connect", LinkWriter::connect(&hosts(), &offer)).await.unwrap();
    let (got, mut reader) = next_link(&mut rx).await;
    assert_eq!(got, peer);
    let p = random_packet();
    writer.send(&p).await.unwrap();
    assert!(within("frame", reader.next_frame()).await.unwrap()[..] == p[..]);
    eventually("accepted = 1", || metrics.accepted.get() == 1).await;
}

#[tokio::test]
async fn links_beyond_the_owners_backlog_are_closed_as_busy() {
    let metrics = ListenerMetrics::default();
    let (listener, mut rx) = LinkListener::bind(local(), ListenerConfig::default(), metrics.clone(), 1).await.unwrap();
    let a = listener.offer(PeerId::random()).unwrap();
    let b = listener.offer(PeerId::random()).unwrap();
    let _wa = within("connect a", LinkWriter::connect(&hosts(), &a)).await.unwrap();
    eventually("accepted = 1", || metrics.accepted.get() == 1).await;
    // The owner has not taken the first link: the second is dropped.
    let wb = within("connect b", LinkWriter::connect(&hosts(), &b)).await;
    eventually("busy = 1", || metrics.busy.get() == 1).await;
    assert_eq!(metrics.accepted.get(), 1);
    next_link(&mut rx).await;
    assert!(rx.try_recv().is_err());
    // Today the handshake completes before the owner's queue is consulted, so
    // the writer is confirmed and learns of the refusal only when its writes
    // fail; a listener that checked first would answer NotConfirmed. Either
    // way, nothing the writer sends may look like a working link for long.
    match wb {
        Ok(mut wb) => {
            let p = random_packet();
            let mut failed = false;
            for _ in 0..64 {
                if tokio::time::timeout(STEP, wb.send(&p)).await.map(|r| r.is_err()).unwrap_or(true) {
                    failed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            assert!(failed, "a writer whose link the owner refused kept writing");
        }
        Err(e) => assert!(matches!(e, LinkError::NotConfirmed), "{e:?}"),
    }
}

// 9. Tampering, replay, reordering, truncation.

#[tokio::test]
async fn a_frame_of_random_bytes_is_tampered() {
    let (mut s, mut reader, _, _l, _m) = raw_pair(ListenerConfig::default()).await;
    let mut junk = vec![0u8; FRAME_LEN];
    rand::thread_rng().fill_bytes(&mut junk);
    s.write_all(&junk).await.unwrap();
    assert!(matches!(within("read", reader.next_frame()).await, Err(LinkError::Tampered)));
}

#[tokio::test]
async fn a_flipped_bit_is_tampered() {
    for at in [0, PACKET_LEN / 2, PACKET_LEN - 1, PACKET_LEN, FRAME_LEN - 1] {
        let (mut s, mut reader, secret, _l, _m) = raw_pair(ListenerConfig::default()).await;
        let mut frame = seal(&secret, 0, &random_packet());
        frame[at] ^= 0x01;
        s.write_all(&frame).await.unwrap();
        assert!(matches!(within("read", reader.next_packet()).await, Err(LinkError::Tampered)), "bit at {at}");
    }
}

#[tokio::test]
async fn a_frame_under_another_links_key_is_tampered() {
    let (mut s, mut reader, _, _l, _m) = raw_pair(ListenerConfig::default()).await;
    let mut other = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut other);
    s.write_all(&seal(&other, 0, &random_packet())).await.unwrap();
    assert!(matches!(within("read", reader.next_frame()).await, Err(LinkError::Tampered)));
}

#[tokio::test]
async fn a_replayed_frame_is_tampered() {
    let (mut s, mut reader, secret, _l, _m) = raw_pair(ListenerConfig::default()).await;
    let p = random_packet();
    let frame = seal(&secret, 0, &p);
    s.write_all(&frame).await.unwrap();
    s.write_all(&frame).await.unwrap();
    let first = within("first", reader.next_frame()).await.unwrap();
    assert!(first[..] == p[..]);
    assert!(matches!(within("replay", reader.next_frame()).await, Err(LinkError::Tampered)));
}

#[tokio::test]
async fn reordered_frames_are_tampered() {
    let (mut s, mut reader, secret, _l, _m) = raw_pair(ListenerConfig::default()).await;
    let (p0, p1) = (random_packet(), random_packet());
    s.write_all(&seal(&secret, 1, &p1)).await.unwrap();
    s.write_all(&seal(&secret, 0, &p0)).await.unwrap();
    assert!(matches!(within("read", reader.next_frame()).await, Err(LinkError::Tampered)));
}

#[tokio::test]
async fn a_dropped_frame_is_tampered() {
    let (mut s, mut reader, secret, _l, _m) = raw_pair(ListenerConfig::default()).await;
    let (p0, p2) = (random_packet(), random_packet());
    s.write_all(&seal(&secret, 0, &p0)).await.unwrap();
    s.write_all(&seal(&secret, 2, &p2)).await.unwrap();
    assert!(within("frame 0", reader.next_frame()).await.unwrap()[..] == p0[..]);
    assert!(matches!(within("frame 2 as 1", reader.next_frame()).await, Err(LinkError::Tampered)));
}

#[tokio::test]
async fn a_link_cut_inside_a_frame_is_truncated() {
    let (mut s, mut reader, secret, _l, _m) = raw_pair(ListenerConfig::default()).await;
    let frame = seal(&secret, 0, &random_packet());
    s.write_all(&frame[..FRAME_LEN / 2]).await.unwrap();
    s.shutdown().await.unwrap();
    let got = within("read", reader.next_frame()).await;
    assert!(matches!(got, Err(LinkError::Truncated(n)) if n == FRAME_LEN / 2), "{got:?}");
}

#[tokio::test]
async fn a_link_cut_inside_a_later_frame_is_truncated() {
    // Whole frames, then part of one, in one write: the reader's buffer holds
    // the part after the whole frames and reports only its length.
    let (mut s, mut reader, secret, _l, _m) = raw_pair(ListenerConfig::default()).await;
    let packets: Vec<_> = (0..5).map(|_| random_packet()).collect();
    let mut bytes = Vec::new();
    for (n, p) in packets.iter().enumerate() {
        bytes.extend_from_slice(&seal(&secret, n as u64, p));
    }
    bytes.extend_from_slice(&seal(&secret, 5, &random_packet())[..1234]);
    s.write_all(&bytes).await.unwrap();
    s.shutdown().await.unwrap();
    for p in &packets {
        assert!(within("frame", reader.next_frame()).await.unwrap()[..] == p[..]);
    }
    let got = within("read", reader.next_frame()).await;
    assert!(matches!(got, Err(LinkError::Truncated(1234))), "{got:?}");
}

#[tokio::test]
async fn a_link_closed_between_frames_is_closed() {
    let (mut s, mut reader, secret, _l, _m) = raw_pair(ListenerConfig::default()).await;
    let p = random_packet();
    s.write_all(&seal(&secret, 0, &p)).await.unwrap();
    s.shutdown().await.unwrap();
    assert!(within("frame", reader.next_frame()).await.unwrap()[..] == p[..]);
    assert!(matches!(within("end", reader.next_frame()).await, Err(LinkError::Closed)));

    // And with no frame at all.
    let (mut s, mut reader, _, _l, _m) = raw_pair(ListenerConfig::default()).await;
    s.shutdown().await.unwrap();
    assert!(matches!(within("end", reader.next_frame()).await, Err(LinkError::Closed)));
}

// 10. Framing over TCP's segmentation.

#[tokio::test]
async fn a_frame_split_over_many_writes_decodes() {
    let (mut s, mut reader, secret, _l, _m) = raw_pair(ListenerConfig::default()).await;
    let (p0, p1) = (random_packet(), random_packet());
    let mut bytes = seal(&secret, 0, &p0);
    bytes.extend_from_slice(&seal(&secret, 1, &p1));
    let write = tokio::spawn(async move {
        for piece in bytes.chunks(1000) {
            s.write_all(piece).await.unwrap();
            s.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        s
    });
    assert!(within("frame 0", reader.next_frame()).await.unwrap()[..] == p0[..]);
    assert!(within("frame 1", reader.next_frame()).await.unwrap()[..] == p1[..]);
    let mut s = within("writer", write).await.unwrap();
    s.shutdown().await.unwrap();
    assert!(matches!(within("end", reader.next_frame()).await, Err(LinkError::Closed)));
}

#[tokio::test]
async fn frames_in_one_write_decode_each() {
    for count in [3usize, 2 * READ_FRAMES + 1] {
        let (mut s, mut reader, secret, _l, _m) = raw_pair(ListenerConfig::default()).await;
        let packets: Vec<_> = (0..count).map(|_| random_packet()).collect();
        let mut bytes = Vec::with_capacity(count * FRAME_LEN);
        for (n, p) in packets.iter().enumerate() {
            bytes.extend_from_slice(&seal(&secret, n as u64, p));
        }
        let write = tokio::spawn(async move {
            s.write_all(&bytes).await.unwrap();
            s.shutdown().await.unwrap();
            s
        });
        for (i, p) in packets.iter().enumerate() {
            let got = within("frame", reader.next_packet()).await.unwrap();
            assert!(got.as_bytes()[..] == p[..], "frame {i} of {count}");
        }
        assert!(matches!(within("end", reader.next_frame()).await, Err(LinkError::Closed)));
        within("writer", write).await.unwrap();
    }
}

#[tokio::test]
async fn frames_straddling_writes_decode() {
    // One and a half frames per write: every read leaves a partial frame the
    // reader has to carry to the front of its buffer.
    let (mut s, mut reader, secret, _l, _m) = raw_pair(ListenerConfig::default()).await;
    let packets: Vec<_> = (0..7).map(|_| random_packet()).collect();
    let mut bytes = Vec::new();
    for (n, p) in packets.iter().enumerate() {
        bytes.extend_from_slice(&seal(&secret, n as u64, p));
    }
    let write = tokio::spawn(async move {
        for piece in bytes.chunks(FRAME_LEN + FRAME_LEN / 2) {
            s.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        s.shutdown().await.unwrap();
        s
    });
    for (i, p) in packets.iter().enumerate() {
        assert!(within("frame", reader.next_frame()).await.unwrap()[..] == p[..], "frame {i}");
    }
    assert!(matches!(within("end", reader.next_frame()).await, Err(LinkError::Closed)));
    within("writer", write).await.unwrap();
}

// 11. Hosts.

#[test]
fn hosts_of_takes_each_host_once_in_order() {
    let peer = PeerId::random();
    let addrs: Vec<Multiaddr> = [
        "/ip4/192.0.2.7/tcp/4001".to_string(),
        format!("/p2p/{peer}"),
        "/ip6/2001:db8::1/tcp/4001".to_string(),
        "/dns4/relay.example.org/tcp/4001".to_string(),
        "/ip4/192.0.2.7/udp/4001/quic-v1".to_string(),
        "/dns/any.example.org/tcp/4001".to_string(),
        "/dns6/six.example.org/tcp/4001".to_string(),
        format!("/ip4/198.51.100.1/tcp/4001/p2p/{peer}"),
        "/dns4/relay.example.org/tcp/5001".to_string(),
        "/ip6/2001:db8::1/tcp/4002".to_string(),
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    assert_eq!(
        hosts_of(&addrs),
        vec!["192.0.2.7", "2001:db8::1", "relay.example.org", "any.example.org", "six.example.org", "198.51.100.1"]
    );
    assert!(hosts_of(&[]).is_empty());
    assert!(hosts_of(&[format!("/p2p/{peer}").parse().unwrap()]).is_empty());
}

// 12. Dialling.

async fn dead_port() -> u16 {
    let l = tokio::net::TcpListener::bind(local()).await.unwrap();
    l.local_addr().unwrap().port()
}

fn offer_for_port(port: u16) -> Offer {
    let mut bytes = [0u8; OFFER_LEN];
    bytes[0] = OFFER_VERSION;
    bytes[1..3].copy_from_slice(&port.to_be_bytes());
    rand::thread_rng().fill_bytes(&mut bytes[3..]);
    Offer::decode(&bytes).unwrap()
}

#[tokio::test]
async fn connect_with_no_host_answering_is_unreachable() {
    let offer = offer_for_port(dead_port().await);
    let got = within("connect", LinkWriter::connect(&hosts(), &offer)).await;
    assert!(matches!(&got, Err(LinkError::Unreachable(why)) if why.starts_with("127.0.0.1")), "{got:?}");
    let got = within("connect", LinkWriter::connect(&[], &offer)).await;
    assert!(matches!(got, Err(LinkError::Unreachable(_))), "{got:?}");
}

#[tokio::test]
async fn connect_tries_the_next_host() {
    // The listener is on 127.0.0.1 only: ::1 refuses (or has no route), and
    // the writer moves on to the next host.
    let (listener, mut rx, _metrics) = bind(ListenerConfig::default()).await;
    let peer = PeerId::random();
    let offer = listener.offer(peer).unwrap();
    let hosts = vec!["::1".to_string(), "127.0.0.1".to_string()];
    within("connect", LinkWriter::connect(&hosts, &offer)).await.unwrap();
    assert_eq!(next_link(&mut rx).await.0, peer);
}

#[test]
fn first_ip_is_the_first_ip_address_listened_on() {
    let addrs: Vec<Multiaddr> = ["/dns4/node.example/tcp/9000", "/ip6/::1/tcp/9000", "/ip4/127.0.0.1/tcp/9000"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(first_ip(&addrs), Some("::1".parse().unwrap()));
    assert_eq!(first_ip(&addrs[2..]), Some("127.0.0.1".parse().unwrap()));
    assert_eq!(first_ip(&addrs[..1]), None, "a DNS name is not an address to bind");
    assert_eq!(first_ip(&[]), None);
}
