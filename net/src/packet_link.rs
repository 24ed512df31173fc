//! The packet link: a plain TCP connection between two admitted nodes that
//! carries nothing but packets, one way, in fixed-size frames sealed with
//! AES-256-GCM — the relay's data plane beside libp2p's control plane.
//!
//! Why: a packet on a libp2p stream is cut into Noise frames, multiplexed by
//! Yamux and copied through each layer's buffers; on the bench that costs
//! more than the Sphinx hop itself. The link does one thing per packet: one
//! AEAD pass into (or out of) a reused buffer, and one `read`/`write` for
//! several packets at a time.
//!
//! How a link is set up (sender A relays to receiver B; both already hold an
//! authenticated libp2p connection on which B admitted A as a node):
//!
//! ```text
//! A ──/nox/packet-link/1 stream (libp2p, Noise or TLS)──► B   B: secret S ← OsRng, ticket id(S) → A's peer id
//! A ◄──────────── Offer { version 1, port, S } ──────────── B
//! A ──TCP connect to B's topology host : port──────────────► B
//! A ──────────── id(S) (16 bytes) ──────────────────────────► B   B takes the ticket (one use, short-lived)
//! A ◄─────────── confirm(S) (16 bytes) ────────────────────── B
//! A ──── frame 0, frame 1, … (PACKET_LEN + 16 bytes each) ──► B
//! ```
//!
//! `id`, `confirm` and the AES-256-GCM key are BLAKE3 `derive_key` outputs
//! of S under distinct contexts, so the cleartext id and confirmation tell an
//! observer nothing about the key. S travels only inside the libp2p link,
//! which proved B's (and A's) identity and is forward-secret; a TCP
//! connection that presents a ticket id is therefore A's, and whatever reads
//! A's frames holds S, i.e. is B. Frame `n` is sealed under the nonce `n`
//! (a 96-bit big-endian counter): a frame replayed, dropped or reordered on
//! the wire fails authentication, and the receiver closes the link.
//!
//! Every frame is the same size and every packet, cover or not, is one
//! frame: the link shows an observer what a libp2p link shows — a sequence of
//! equal-sized, encrypted packets — minus the framing.
//!
//! What the receiver bounds: tickets outstanding (a few per peer and
//! [`ListenerConfig::max_tickets`] in all, each living
//! [`ListenerConfig::ticket_ttl`]), connections that have not yet presented
//! a ticket ([`ListenerConfig::max_handshakes`], each given
//! [`ListenerConfig::handshake_timeout`]), and, through its owner, links per
//! peer. A link carries only what the owner's ingest accepts from the peer
//! the ticket was issued to; while ingest waits, the reader stops reading and
//! TCP's window pushes back on the sender.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use nox_protocol::sphinx::{PACKET_LEN, Packet};
use prometheus_client::metrics::counter::Counter;
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use zeroize::Zeroizing;

/// The libp2p protocol on which a sender asks a receiver for a packet link.
pub const PACKET_LINK_PROTOCOL: StreamProtocol = StreamProtocol::new("/nox/packet-link/1");
/// Version byte of an [`Offer`].
pub const OFFER_VERSION: u8 = 1;
/// Bytes of an encoded [`Offer`]: version, port, secret.
pub const OFFER_LEN: usize = 1 + 2 + 32;
/// Bytes of the AEAD tag after each packet.
pub const TAG_LEN: usize = 16;
/// Bytes of one frame on the link: a sealed packet and its tag.
pub const FRAME_LEN: usize = PACKET_LEN + TAG_LEN;
/// Bytes of the ticket id a sender presents, and of the receiver's confirmation.
const ID_LEN: usize = 16;
/// Frames a writer seals before it writes them out (one `write` for a burst).
pub const WRITE_BATCH: usize = 8;
/// Frames a reader's buffer holds (one `read` for a burst).
const READ_FRAMES: usize = 4;
/// Tickets one peer may hold at once (one link, and one for a reconnection).
const TICKETS_PER_PEER: usize = 2;

const ID_CONTEXT: &str = "NOX packet link 1 ticket id";
const CONFIRM_CONTEXT: &str = "NOX packet link 1 confirmation";
const KEY_CONTEXT: &str = "NOX packet link 1 AES-256-GCM key";

/// Why a packet link could not be offered, set up or read.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The socket failed.
    #[error("packet link i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The offer is not [`OFFER_LEN`] bytes.
    #[error("a packet link offer is {OFFER_LEN} bytes, not {0}")]
    BadOffer(usize),
    /// The offer is of a version this peer does not speak.
    #[error("packet link offer of version {0}; this peer speaks {OFFER_VERSION}")]
    UnknownVersion(u8),
    /// The receiver closed the connection, or answered with something else
    /// than the confirmation of the ticket (unknown, used or expired ticket).
    #[error("the receiver did not confirm the packet link")]
    NotConfirmed,
    /// None of the receiver's addresses could be dialled.
    #[error("no address of the receiver accepted the packet link: {0}")]
    Unreachable(String),
    /// A frame failed authentication: altered, replayed, reordered or not
    /// sealed with this link's key.
    #[error("a packet link frame failed authentication")]
    Tampered,
    /// The sender closed the link between frames.
    #[error("the packet link closed")]
    Closed,
    /// The sender closed the link inside a frame.
    #[error("the packet link closed inside a frame ({0} of {FRAME_LEN} bytes)")]
    Truncated(usize),
    /// The peer (or the listener) holds as many outstanding offers as it may.
    #[error("too many packet link offers outstanding")]
    TooManyOffers,
}

/// What a receiver tells a sender: where to connect, and the link's secret.
pub struct Offer {
    /// The receiver's packet link port (on the host of its published addresses).
    pub port: u16,
    secret: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Offer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Offer {{ port: {}, secret: <redacted> }}", self.port)
    }
}

impl Offer {
    /// The wire form: version, port (big-endian), secret.
    pub fn encode(&self) -> Zeroizing<[u8; OFFER_LEN]> {
        let mut out = Zeroizing::new([0u8; OFFER_LEN]);
        out[0] = OFFER_VERSION;
        out[1..3].copy_from_slice(&self.port.to_be_bytes());
        out[3..].copy_from_slice(&self.secret[..]);
        out
    }

    /// What the sender presents on the TCP connection: the ticket's id.
    pub fn ticket_id(&self) -> [u8; 16] {
        short(ID_CONTEXT, &self.secret)
    }

    /// What the receiver answers a presented ticket with.
    pub fn confirmation(&self) -> [u8; 16] {
        short(CONFIRM_CONTEXT, &self.secret)
    }

    /// Reads the wire form.
    pub fn decode(bytes: &[u8]) -> Result<Offer, LinkError> {
        if bytes.len() != OFFER_LEN {
            return Err(LinkError::BadOffer(bytes.len()));
        }
        if bytes[0] != OFFER_VERSION {
            return Err(LinkError::UnknownVersion(bytes[0]));
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&bytes[3..]);
        Ok(Offer { port: u16::from_be_bytes([bytes[1], bytes[2]]), secret })
    }
}

fn derive(context: &str, secret: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(blake3::derive_key(context, secret))
}

fn short(context: &str, secret: &[u8; 32]) -> [u8; ID_LEN] {
    let mut out = [0u8; ID_LEN];
    out.copy_from_slice(&derive(context, secret)[..ID_LEN]);
    out
}

fn link_key(secret: &[u8; 32]) -> LessSafeKey {
    // 32 bytes is AES-256-GCM's key length: this cannot fail.
    #[allow(clippy::expect_used)]
    let key = UnboundKey::new(&AES_256_GCM, &derive(KEY_CONTEXT, secret)[..]).expect("a 32-byte AES-256 key");
    LessSafeKey::new(key)
}

fn nonce(n: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

/// Counters a listener keeps (each a `nox_events_total{kind="packet_link"}`
/// outcome at a node).
#[derive(Debug, Clone, Default)]
pub struct ListenerMetrics {
    /// Links set up.
    pub accepted: Counter,
    /// Connections that presented no known, unexpired ticket.
    pub unknown_ticket: Counter,
    /// Connections that presented nothing within the handshake timeout.
    pub handshake_timeout: Counter,
    /// Connections closed at once: too many handshakes under way, or the
    /// owner not taking new links.
    pub busy: Counter,
    /// Offers refused: the peer, or the listener, holds its share of tickets.
    pub offers_refused: Counter,
}

/// Limits of a [`LinkListener`].
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Tickets outstanding at once, over every peer.
    pub max_tickets: usize,
    /// How long an offer's ticket may be presented.
    pub ticket_ttl: Duration,
    /// Connections that have not presented a ticket yet, at once.
    pub max_handshakes: usize,
    /// How long a connection has to present its ticket.
    pub handshake_timeout: Duration,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            max_tickets: 1024,
            ticket_ttl: Duration::from_secs(10),
            max_handshakes: 64,
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

struct Ticket {
    peer: PeerId,
    secret: Zeroizing<[u8; 32]>,
    expires: Instant,
}

/// The receiving side: a TCP listener, the tickets it has offered, and the
/// links set up on it (handed to the owner through the channel
/// [`LinkListener::bind`] returns).
pub struct LinkListener {
    local: SocketAddr,
    tickets: Arc<Mutex<HashMap<[u8; ID_LEN], Ticket>>>,
    cfg: ListenerConfig,
    metrics: ListenerMetrics,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for LinkListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkListener").field("local", &self.local).finish_non_exhaustive()
    }
}

impl Drop for LinkListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LinkListener {
    /// Listens on `addr` (port 0: any free port). Links set up on it arrive,
    /// with the peer their ticket was offered to, on the returned channel
    /// (at most `backlog` waiting; more are closed as `busy`).
    pub async fn bind(
        addr: SocketAddr,
        cfg: ListenerConfig,
        metrics: ListenerMetrics,
        backlog: usize,
    ) -> Result<(LinkListener, mpsc::Receiver<(PeerId, LinkReader)>), LinkError> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let tickets: Arc<Mutex<HashMap<[u8; ID_LEN], Ticket>>> = Arc::default();
        let (tx, rx) = mpsc::channel(backlog.max(1));
        let task = tokio::spawn(accept_loop(listener, tickets.clone(), cfg.clone(), metrics.clone(), tx));
        Ok((LinkListener { local, tickets, cfg, metrics, task }, rx))
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// A new offer for `peer`, whose ticket the listener accepts once within
    /// the ticket lifetime. The caller has checked that `peer` may relay to
    /// this node.
    pub fn offer(&self, peer: PeerId) -> Result<Offer, LinkError> {
        let now = Instant::now();
        let mut tickets = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        tickets.retain(|_, t| t.expires > now);
        let held = tickets.values().filter(|t| t.peer == peer).count();
        if held >= TICKETS_PER_PEER || tickets.len() >= self.cfg.max_tickets {
            self.metrics.offers_refused.inc();
            return Err(LinkError::TooManyOffers);
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut secret[..]);
        let id = short(ID_CONTEXT, &secret);
        tickets.insert(id, Ticket { peer, secret: secret.clone(), expires: now + self.cfg.ticket_ttl });
        Ok(Offer { port: self.local.port(), secret })
    }
}

async fn accept_loop(
    listener: TcpListener,
    tickets: Arc<Mutex<HashMap<[u8; ID_LEN], Ticket>>>,
    cfg: ListenerConfig,
    metrics: ListenerMetrics,
    tx: mpsc::Sender<(PeerId, LinkReader)>,
) {
    let handshakes = Arc::new(Semaphore::new(cfg.max_handshakes.max(1)));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: wait rather than spin.
                tracing::debug!(error = %e, "packet link accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            metrics.busy.inc();
            continue;
        };
        let (tickets, metrics, tx) = (tickets.clone(), metrics.clone(), tx.clone());
        let timeout = cfg.handshake_timeout;
        tokio::spawn(async move {
            handshake(stream, &tickets, timeout, &metrics, &tx).await;
            drop(permit);
        });
    }
}

/// The receiver's half of setting up a link: read the ticket id, take the
/// ticket, make room for the link with the owner, confirm, hand it over. A
/// link the owner has no room for is closed before it is confirmed, so its
/// sender learns at once ([`LinkError::NotConfirmed`]).
async fn handshake(
    stream: TcpStream,
    tickets: &Mutex<HashMap<[u8; ID_LEN], Ticket>>,
    timeout: Duration,
    metrics: &ListenerMetrics,
    owner: &mpsc::Sender<(PeerId, LinkReader)>,
) {
    if let Some((slot, peer, reader)) = confirm(stream, tickets, timeout, metrics, owner).await {
        metrics.accepted.inc();
        slot.send((peer, reader));
    }
}

/// A link's place in the owner's channel, reserved before it is confirmed.
type Slot<'a> = mpsc::Permit<'a, (PeerId, LinkReader)>;

async fn confirm<'a>(
    mut stream: TcpStream,
    tickets: &Mutex<HashMap<[u8; ID_LEN], Ticket>>,
    timeout: Duration,
    metrics: &ListenerMetrics,
    owner: &'a mpsc::Sender<(PeerId, LinkReader)>,
) -> Option<(Slot<'a>, PeerId, LinkReader)> {
    let mut id = [0u8; ID_LEN];
    match tokio::time::timeout(timeout, stream.read_exact(&mut id)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => {
            metrics.unknown_ticket.inc();
            return None;
        }
        Err(_) => {
            metrics.handshake_timeout.inc();
            return None;
        }
    }
    let ticket = {
        let mut tickets = tickets.lock().unwrap_or_else(|e| e.into_inner());
        tickets.remove(&id).filter(|t| t.expires > Instant::now())
    };
    let Some(ticket) = ticket else {
        metrics.unknown_ticket.inc();
        return None;
    };
    let Ok(slot) = owner.try_reserve() else {
        metrics.busy.inc();
        return None;
    };
    let confirmation = short(CONFIRM_CONTEXT, &ticket.secret);
    match tokio::time::timeout(timeout, stream.write_all(&confirmation)).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return None,
        Err(_) => {
            metrics.handshake_timeout.inc();
            return None;
        }
    }
    let _ = stream.set_nodelay(true);
    Some((slot, ticket.peer, LinkReader::new(stream, &ticket.secret)))
}

/// Packet buffers given back once their packet is written, for the next
/// packet a link reader decrypts: a relay then neither allocates nor zeroes
/// 32 KiB per packet. Bounded; a buffer beyond the bound is freed.
#[derive(Debug)]
pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    max: usize,
}

impl BufferPool {
    /// A pool keeping at most `max` buffers.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(BufferPool { free: Mutex::new(Vec::with_capacity(max)), max })
    }

    /// A buffer of [`PACKET_LEN`] bytes (a used one's contents are
    /// overwritten whole by the next decryption).
    pub fn take(&self) -> Vec<u8> {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_else(|| vec![0u8; PACKET_LEN])
    }

    /// Gives back a packet's buffer.
    pub fn put(&self, packet: Packet) {
        let buf: Box<[u8]> = packet.into_boxed();
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < self.max {
            free.push(Vec::from(buf));
        }
    }
}

/// The receiving end of one link: yields the packets in the order sent.
pub struct LinkReader {
    stream: TcpStream,
    pool: Option<Arc<BufferPool>>,
    key: LessSafeKey,
    next: u64,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl std::fmt::Debug for LinkReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkReader").field("frames", &self.next).finish_non_exhaustive()
    }
}

impl LinkReader {
    fn new(stream: TcpStream, secret: &[u8; 32]) -> Self {
        LinkReader {
            stream,
            pool: None,
            key: link_key(secret),
            next: 0,
            buf: vec![0u8; READ_FRAMES * FRAME_LEN],
            start: 0,
            end: 0,
        }
    }

    /// Decrypts packets into buffers from `pool` rather than new ones.
    pub fn use_pool(&mut self, pool: Arc<BufferPool>) {
        self.pool = Some(pool);
    }

    /// The next packet's bytes ([`PACKET_LEN`] of them), decrypted out of
    /// the read buffer into a buffer of its own. After an error the link is
    /// unusable: the caller drops it.
    pub async fn next_frame(&mut self) -> Result<Vec<u8>, LinkError> {
        loop {
            if self.end - self.start >= FRAME_LEN {
                let frame = &self.buf[self.start..self.start + FRAME_LEN];
                let (sealed, tag) = frame.split_at(PACKET_LEN);
                let mut out = match &self.pool {
                    Some(pool) => pool.take(),
                    None => vec![0u8; PACKET_LEN],
                };
                self.key
                    .open_separate_gather(nonce(self.next), Aad::empty(), sealed, tag, &mut out)
                    .map_err(|_| LinkError::Tampered)?;
                self.next += 1;
                self.start += FRAME_LEN;
                return Ok(out);
            }
            if self.start > 0 {
                // A partial frame moves to the front; whole frames never do.
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = self.stream.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Err(if self.end == 0 { LinkError::Closed } else { LinkError::Truncated(self.end) });
            }
            self.end += n;
        }
    }

    /// Whether a whole frame is already buffered: the next
    /// [`LinkReader::next_frame`] returns without reading the socket.
    pub fn buffered(&self) -> bool {
        self.end - self.start >= FRAME_LEN
    }

    /// The next packet.
    pub async fn next_packet(&mut self) -> Result<Packet, LinkError> {
        let frame = self.next_frame().await?;
        // `next_frame` yields exactly PACKET_LEN bytes.
        Packet::from_vec(frame).map_err(|_| LinkError::Tampered)
    }
}

/// The sending end of one link.
pub struct LinkWriter {
    stream: TcpStream,
    key: LessSafeKey,
    next: u64,
    buf: Vec<u8>,
    filled: usize,
}

impl std::fmt::Debug for LinkWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkWriter").field("frames", &self.next).finish_non_exhaustive()
    }
}

/// The IP of the first `/ip4` or `/ip6` address in `addrs`: where a peer
/// listening there accepts packet links unless told otherwise.
pub fn first_ip(addrs: &[Multiaddr]) -> Option<std::net::IpAddr> {
    addrs.iter().find_map(|a| {
        a.iter().find_map(|p| match p {
            Protocol::Ip4(ip) => Some(std::net::IpAddr::V4(ip)),
            Protocol::Ip6(ip) => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        })
    })
}

/// The hosts (IP addresses or DNS names) of `addrs`, each once, in order.
pub fn hosts_of(addrs: &[Multiaddr]) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    for a in addrs {
        let host = a.iter().find_map(|p| match p {
            Protocol::Ip4(ip) => Some(ip.to_string()),
            Protocol::Ip6(ip) => Some(ip.to_string()),
            Protocol::Dns(h) | Protocol::Dns4(h) | Protocol::Dns6(h) => Some(h.to_string()),
            _ => None,
        });
        if let Some(h) = host
            && !hosts.contains(&h)
        {
            hosts.push(h);
        }
    }
    hosts
}

impl LinkWriter {
    /// Connects to the receiver at `offer.port` on the first of `hosts` that
    /// answers, presents the offer's ticket and waits for the confirmation.
    /// The caller bounds the time (`tokio::time::timeout`).
    pub async fn connect(hosts: &[String], offer: &Offer) -> Result<LinkWriter, LinkError> {
        let mut last = String::from("no address");
        for host in hosts {
            match Self::connect_to(host, offer).await {
                Ok(w) => return Ok(w),
                Err(LinkError::Io(e)) => last = format!("{host}: {e}"),
                Err(e) => return Err(e),
            }
        }
        Err(LinkError::Unreachable(last))
    }

    async fn connect_to(host: &str, offer: &Offer) -> Result<LinkWriter, LinkError> {
        let mut stream = TcpStream::connect((host, offer.port)).await?;
        stream.set_nodelay(true)?;
        stream.write_all(&offer.ticket_id()).await?;
        let mut confirm = [0u8; ID_LEN];
        if stream.read_exact(&mut confirm).await.is_err() || confirm != offer.confirmation() {
            return Err(LinkError::NotConfirmed);
        }
        Ok(LinkWriter {
            stream,
            key: link_key(&offer.secret),
            next: 0,
            buf: vec![0u8; WRITE_BATCH * FRAME_LEN],
            filled: 0,
        })
    }

    /// Seals `packet` into the write buffer; it goes out with the next
    /// [`LinkWriter::flush`]. Flushes first when the buffer holds
    /// [`WRITE_BATCH`] frames.
    pub async fn queue(&mut self, packet: &[u8; PACKET_LEN]) -> Result<(), LinkError> {
        if self.filled == self.buf.len() {
            self.flush().await?;
        }
        let frame = &mut self.buf[self.filled..self.filled + FRAME_LEN];
        let (sealed, tag) = frame.split_at_mut(PACKET_LEN);
        self.key
            .seal_out_of_place_scatter(nonce(self.next), Aad::empty(), packet, sealed, &[], tag)
            .map_err(|_| LinkError::Io(std::io::Error::other("AES-256-GCM sealing failed")))?;
        self.next += 1;
        self.filled += FRAME_LEN;
        Ok(())
    }

    /// Writes out every sealed frame.
    pub async fn flush(&mut self) -> Result<(), LinkError> {
        if self.filled > 0 {
            self.stream.write_all(&self.buf[..self.filled]).await?;
            self.filled = 0;
        }
        Ok(())
    }

    /// Seals and writes one packet.
    pub async fn send(&mut self, packet: &[u8; PACKET_LEN]) -> Result<(), LinkError> {
        self.queue(packet).await?;
        self.flush().await
    }

    /// Writes what is queued and closes the link.
    pub async fn close(mut self) -> Result<(), LinkError> {
        self.flush().await?;
        self.stream.shutdown().await?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "packet_link_tests.rs"]
mod tests;

/// Asks `peer` (connected, and admitting us as a node) for a packet link on
/// [`PACKET_LINK_PROTOCOL`] and sets it up at the first of `hosts` (the
/// hosts of the peer's published addresses) that answers. A peer without
/// links answers the protocol request with an error at once; a peer that
/// does not admit us closes the stream without an offer. The caller bounds
/// the time.
pub async fn request_link(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    hosts: &[String],
) -> Result<LinkWriter, LinkError> {
    let mut stream = control
        .open_stream(peer, PACKET_LINK_PROTOCOL)
        .await
        .map_err(|e| LinkError::Unreachable(format!("no packet link protocol: {e}")))?;
    let mut encoded = Zeroizing::new([0u8; OFFER_LEN]);
    stream.read_exact(&mut encoded[..]).await.map_err(|_| LinkError::NotConfirmed)?;
    let offer = Offer::decode(&encoded[..])?;
    let _ = stream.close().await;
    LinkWriter::connect(hosts, &offer).await
}

/// Answers one [`PACKET_LINK_PROTOCOL`] request from `peer` with a new offer
/// of `listener`'s (the caller has checked that `peer` may relay here); a
/// refused offer closes the stream with nothing written.
pub async fn serve_offer(listener: &LinkListener, peer: PeerId, mut stream: libp2p::Stream) {
    if let Ok(offer) = listener.offer(peer) {
        let _ = stream.write_all(&offer.encode()[..]).await;
    }
    let _ = stream.close().await;
}

/// Where a sender's packets go: a libp2p stream (`/nox/packet/1` or
/// `/nox/submit/1`), or a packet link.
pub enum PacketOut {
    /// A libp2p stream: frames written as they are.
    Stream(libp2p::Stream),
    /// A packet link: packets sealed into its buffer, written in bursts.
    Link(LinkWriter),
}

impl std::fmt::Debug for PacketOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PacketOut::Stream(_) => "PacketOut::Stream",
            PacketOut::Link(_) => "PacketOut::Link",
        })
    }
}

fn io_error(e: LinkError) -> std::io::Error {
    match e {
        LinkError::Io(e) => e,
        other => std::io::Error::other(other),
    }
}

impl PacketOut {
    /// Writes one packet (on a link: seals it into the buffer, which goes
    /// out when full or at [`PacketOut::flush`]).
    pub async fn write_packet(&mut self, packet: &[u8; PACKET_LEN]) -> std::io::Result<()> {
        match self {
            PacketOut::Stream(s) => s.write_all(packet).await,
            PacketOut::Link(l) => l.queue(packet).await.map_err(io_error),
        }
    }

    /// Writes bytes as they are: a submission frame, or test garbage. A
    /// packet link carries packets only, so this is refused there.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            PacketOut::Stream(s) => s.write_all(bytes).await,
            PacketOut::Link(_) => {
                Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "a packet link carries whole packets only"))
            }
        }
    }

    /// Writes out what is buffered.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            PacketOut::Stream(s) => s.flush().await,
            PacketOut::Link(l) => l.flush().await.map_err(io_error),
        }
    }

    /// Flushes and closes.
    pub async fn close(self) {
        match self {
            PacketOut::Stream(mut s) => {
                let _ = s.close().await;
            }
            PacketOut::Link(l) => {
                let _ = l.close().await;
            }
        }
    }
}
