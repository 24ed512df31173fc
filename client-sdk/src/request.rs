//! One request and its answer: envelope, SURBs, packets, submission, reply.
//!
//! [`build_request`] wraps a request in an envelope carrying SURBs over the
//! reply route (which ends at the entry node that will hold the replies),
//! fragments it and builds one Sphinx packet per fragment over the forward
//! route (which ends at the exit). [`PreparedRequest::round_trip`] claims the
//! SURB ids at the entry node, submits the packets with proof of work, and
//! waits for the reply's fragments: each is opened with its SURB's keys —
//! which authenticates it end to end: only the exit that received the SURB
//! could have produced a body that opens — reassembled, and decoded as a
//! [`Reply`] for this request.

use std::time::{Duration, Instant};

use libp2p::PeerId;
use nox_net::raw_peer::{RawPeer, RawPeerError};
use nox_protocol::NodeId;
use nox_protocol::fragment::{Fragmenter, Reassembled, Reassembler, ReassemblyLimits};
use nox_protocol::payload::{Envelope, EnvelopeError, Reply, ReplyStatus, Request};
use nox_protocol::sphinx::{Hop, Packet, PacketBuilder, SurbKeys};
use rand::RngCore;

/// A request built for a route, with the keys to open its replies. `Debug`
/// shows the packet count only.
pub struct PreparedRequest {
    /// The request id the reply must carry.
    pub request_id: [u8; 16],
    /// First hop and packet, one per fragment.
    pub packets: Vec<(NodeId, Packet)>,
    /// SURB keys, one per SURB, by SURB id.
    pub surb_keys: Vec<SurbKeys>,
}

impl std::fmt::Debug for PreparedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedRequest").field("packets", &self.packets.len()).finish_non_exhaustive()
    }
}

/// Errors building a request.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Packet or SURB construction failed.
    #[error(transparent)]
    Sphinx(#[from] nox_protocol::SphinxError),
    /// Fragmenting failed.
    #[error(transparent)]
    Fragment(#[from] nox_protocol::fragment::FragmentError),
    /// Encoding failed.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

/// Why a round trip produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// Claiming the SURBs or submitting a packet failed.
    #[error(transparent)]
    Transport(#[from] RawPeerError),
    /// No complete reply before the deadline.
    #[error("no reply within the timeout")]
    Timeout,
    /// The reassembled reply does not decode.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The reply answers another request.
    #[error("reply for another request")]
    WrongRequest,
    /// The exit answered with an error status.
    #[error("exit answered {status:?}: {message}")]
    Status {
        /// The status.
        status: ReplyStatus,
        /// The exit's explanation.
        message: String,
    },
}

/// Builds `request` over `route` (its last hop is the exit), carrying `surbs`
/// SURBs over `surb_route` (its last hop is the entry node that delivers the
/// replies), for packets of `epoch`.
pub fn build_request(
    epoch: u64,
    route: &[Hop],
    surb_route: &[Hop],
    surbs: usize,
    request: Request,
) -> Result<PreparedRequest, RequestError> {
    let mut rng = rand::rngs::OsRng;
    let builder = PacketBuilder::new(epoch);
    let mut keys = Vec::with_capacity(surbs);
    let mut list = Vec::with_capacity(surbs);
    for _ in 0..surbs {
        let mut id = [0u8; 32];
        rng.fill_bytes(&mut id);
        let (s, k) = builder.surb(surb_route, id, &mut rng)?;
        list.push(s);
        keys.push(k);
    }
    let mut request_id = [0u8; 16];
    rng.fill_bytes(&mut request_id);
    let msg = Envelope { request_id, surbs: list, request }.encode()?;
    let mut message_id = [0u8; 16];
    rng.fill_bytes(&mut message_id);
    let mut packets = Vec::new();
    for f in Fragmenter::default().split(&msg, message_id)? {
        packets.push(builder.forward(route, &f, &mut rng)?);
    }
    Ok(PreparedRequest { request_id, packets, surb_keys: keys })
}

/// [`build_request`] of an `Echo` of `data`.
pub fn echo_request(
    epoch: u64,
    route: &[Hop],
    surb_route: &[Hop],
    surbs: usize,
    data: Vec<u8>,
) -> Result<PreparedRequest, RequestError> {
    build_request(epoch, route, surb_route, surbs, Request::Echo { data })
}

impl PreparedRequest {
    /// Claims the request's SURB ids at `gateway`, submits its packets with
    /// proofs of `pow_bits`, and waits up to `timeout` for the answer's data.
    pub async fn round_trip(
        &self,
        client: &RawPeer,
        gateway: PeerId,
        pow_bits: u8,
        timeout: Duration,
    ) -> Result<Vec<u8>, ReplyError> {
        client.claim_replies(gateway, self.surb_keys.iter().map(SurbKeys::surb_id).collect()).await?;
        for (_, packet) in &self.packets {
            client.submit(gateway, packet, pow_bits).await?;
        }
        let reply = self.await_reply(client, timeout).await?;
        match reply.status {
            ReplyStatus::Ok => Ok(reply.data),
            status => Err(ReplyError::Status { status, message: String::from_utf8_lossy(&reply.data).into_owned() }),
        }
    }

    /// Waits up to `timeout` for the reply, opening each received packet with
    /// this request's SURB keys (packets no key opens are someone else's).
    pub async fn await_reply(&self, client: &RawPeer, timeout: Duration) -> Result<Reply, ReplyError> {
        let mut reassembler = Reassembler::new(ReassemblyLimits::default());
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let Some(packet) = client.next_packet(Duration::from_millis(200)).await else { continue };
            let Some(fragment) = self.surb_keys.iter().find_map(|k| k.open(packet.body()).ok()) else { continue };
            if let Ok(Reassembled::Complete(msg)) = reassembler.insert(&fragment, Instant::now()) {
                let reply = Reply::decode(&msg)?;
                if reply.request_id != self.request_id {
                    return Err(ReplyError::WrongRequest);
                }
                return Ok(reply);
            }
        }
        Err(ReplyError::Timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nox_protocol::crypto::x25519::MixSecretKey;
    use nox_protocol::sphinx::Processed;

    #[test]
    fn a_request_reaches_the_exit_whole_and_its_surbs_open_the_reply() {
        let mut rng = rand::rngs::OsRng;
        let keys: Vec<MixSecretKey> = (0..3).map(|_| MixSecretKey::generate(&mut rng)).collect();
        let hops: Vec<Hop> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Hop { id: NodeId([i as u8 + 1; 32]), key: k.public_key(), delay_us: 0 })
            .collect();
        let back = [hops[2], hops[1], hops[0]];
        let req = echo_request(1, &hops, &back, 2, b"ping".to_vec()).unwrap();
        assert_eq!(req.packets.len(), 1);
        assert_eq!(req.surb_keys.len(), 2);
        // Peel the packet through the three hops: the exit gets the envelope.
        let mut packet = req.packets[0].1.clone();
        let mut payload = None;
        for k in &keys {
            let peeled = packet.peel_header(k).unwrap();
            match peeled.finish(packet).unwrap() {
                Processed::Forward { packet: p, .. } => packet = p,
                Processed::Final { payload: p, .. } => {
                    payload = Some(p);
                    break;
                }
                Processed::Reply { .. } => panic!("not a reply"),
            }
        }
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let Ok(Reassembled::Complete(msg)) = r.insert(payload.unwrap().as_bytes(), Instant::now()) else {
            panic!("one fragment is the whole message")
        };
        let env = Envelope::decode(&msg).unwrap();
        assert_eq!(env.request_id, req.request_id);
        assert_eq!(env.request, Request::Echo { data: b"ping".to_vec() });
        assert_eq!(env.surbs.len(), 2);
    }
}
