//! The reply mailbox: where a SURB route ends.
//!
//! A SURB's last hop is the entry node its client is connected to; the routing
//! block names only the SURB id. The client claims its ids
//! (`SubscribeReplies`), and a reply for a claimed id is pushed to that client
//! at once; a reply that arrives first is kept until it is claimed or its TTL
//! runs out. A node claims the replies to its loop cover the same way
//! (`crate::cover`): to the mailbox, a claimant is a peer id, and a node is
//! held to the same share as a client. The node learns that *some* reply reached *this* client — which it
//! could tell anyway by watching its own link to the client — but not from
//! where, and not what: the body is encrypted to the client's SURB keys.
//!
//! Bounds: at most `capacity` stored replies and `capacity` claims, of which
//! one client holds at most [`MAX_CLAIMS_PER_CLIENT`]; both age out after
//! `ttl`, and a client's claims go when it disconnects. Claiming an id that is
//! already claimed changes nothing, so repeating a claim cannot grow anything.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use nox_protocol::sphinx::Packet;

/// Most claims one client holds at once (one claim request carries at most
/// this many too), so that no client can take the whole mailbox.
pub const MAX_CLAIMS_PER_CLIENT: usize = nox_net::p2p::MAX_REPLY_CLAIMS;

/// What to do with a reply.
pub enum Delivery {
    /// Send it to the client now.
    Push {
        /// The client's peer id.
        client: PeerId,
        /// The packet.
        packet: Packet,
    },
    /// Kept until claimed.
    Stored,
    /// The mailbox is full; the reply is dropped.
    Full,
    /// A reply for this SURB id is already waiting (a SURB is single-use);
    /// this one is dropped.
    Duplicate,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Delivery::Push { .. } => "Delivery::Push",
            Delivery::Stored => "Delivery::Stored",
            Delivery::Full => "Delivery::Full",
            Delivery::Duplicate => "Delivery::Duplicate",
        })
    }
}

#[derive(Default)]
struct Inner {
    stored: HashMap<[u8; 32], (Instant, Packet)>,
    stored_order: VecDeque<([u8; 32], Instant)>,
    claims: HashMap<[u8; 32], (PeerId, Instant)>,
    claim_order: VecDeque<([u8; 32], Instant)>,
    claims_per_client: HashMap<PeerId, usize>,
}

impl Inner {
    /// Removes the claim on `id`, keeping the per-client count.
    fn remove_claim(&mut self, id: &[u8; 32]) -> Option<PeerId> {
        let (client, _) = self.claims.remove(id)?;
        if let std::collections::hash_map::Entry::Occupied(mut n) = self.claims_per_client.entry(client) {
            *n.get_mut() -= 1;
            if *n.get() == 0 {
                n.remove();
            }
        }
        Some(client)
    }
}

/// The mailbox. Shared behind an `Arc`.
pub struct ReplyMailbox {
    inner: Mutex<Inner>,
    capacity: usize,
    ttl: Duration,
}

impl std::fmt::Debug for ReplyMailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyMailbox").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

impl ReplyMailbox {
    /// A mailbox holding up to `capacity` replies and claims for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        ReplyMailbox { inner: Mutex::new(Inner::default()), capacity: capacity.max(1), ttl }
    }

    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some((id, at)) = inner.stored_order.front().copied() {
            if now.duration_since(at) < self.ttl {
                break;
            }
            inner.stored_order.pop_front();
            if inner.stored.get(&id).is_some_and(|(t, _)| *t == at) {
                inner.stored.remove(&id);
            }
        }
        while let Some((id, at)) = inner.claim_order.front().copied() {
            if now.duration_since(at) < self.ttl {
                break;
            }
            inner.claim_order.pop_front();
            if inner.claims.get(&id).is_some_and(|(_, t)| *t == at) {
                inner.remove_claim(&id);
            }
        }
    }

    /// A reply for `surb_id` arrived. It is marked with its SURB id
    /// (`nox_protocol::sphinx::surb::mark_delivered`) so that its client
    /// finds the keys that open it at once.
    pub fn deliver(&self, surb_id: [u8; 32], mut packet: Packet) -> Delivery {
        nox_protocol::sphinx::surb::mark_delivered(&mut packet, surb_id);
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.expire(&mut inner, now);
        // A SURB is single-use: the claim is consumed by its reply.
        if let Some(client) = inner.remove_claim(&surb_id) {
            return Delivery::Push { client, packet };
        }
        if inner.stored.contains_key(&surb_id) {
            return Delivery::Duplicate;
        }
        if inner.stored.len() >= self.capacity {
            return Delivery::Full;
        }
        inner.stored.insert(surb_id, (now, packet));
        inner.stored_order.push_back((surb_id, now));
        Delivery::Stored
    }

    /// `client` claims `ids`; returns the replies already waiting for them.
    pub fn claim(&self, client: PeerId, ids: &[[u8; 32]]) -> Vec<Packet> {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.expire(&mut inner, now);
        let mut ready = Vec::new();
        for id in ids {
            if let Some((_, p)) = inner.stored.remove(id) {
                ready.push(p);
                continue;
            }
            let held = inner.claims_per_client.get(&client).copied().unwrap_or(0);
            if inner.claims.contains_key(id) || inner.claims.len() >= self.capacity || held >= MAX_CLAIMS_PER_CLIENT {
                continue;
            }
            inner.claims.insert(*id, (client, now));
            inner.claim_order.push_back((*id, now));
            *inner.claims_per_client.entry(client).or_insert(0) += 1;
        }
        ready
    }

    /// Forgets every claim of a client that disconnected.
    pub fn forget_client(&self, client: &PeerId) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.claims_per_client.remove(client).is_none() {
            return;
        }
        inner.claims.retain(|_, (c, _)| c != client);
        let Inner { claims, claim_order, .. } = &mut *inner;
        claim_order.retain(|(id, _)| claims.contains_key(id));
    }

    /// Stored replies and claims: (stored, claims).
    pub fn sizes(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (inner.stored.len(), inner.claims.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nox_protocol::sphinx::PACKET_LEN;

    fn pkt() -> Packet {
        Packet::from_vec(vec![0; PACKET_LEN]).unwrap()
    }

    #[test]
    fn claim_then_reply_pushes_once() {
        let mb = ReplyMailbox::new(4, Duration::from_secs(60));
        let c = PeerId::random();
        assert!(mb.claim(c, &[[1; 32]]).is_empty());
        assert!(matches!(mb.deliver([1; 32], pkt()), Delivery::Push { client, .. } if client == c));
        // Single use: a second reply for the same id is stored, not pushed.
        assert!(matches!(mb.deliver([1; 32], pkt()), Delivery::Stored));
        // A third, while the second waits, is a duplicate.
        assert!(matches!(mb.deliver([1; 32], pkt()), Delivery::Duplicate));
    }

    #[test]
    fn repeated_claims_grow_nothing_and_one_client_cannot_take_every_slot() {
        let mb = ReplyMailbox::new(MAX_CLAIMS_PER_CLIENT * 2, Duration::from_secs(60));
        let (greedy, other) = (PeerId::random(), PeerId::random());
        for _ in 0..50 {
            mb.claim(greedy, &[[7; 32]; 100]);
        }
        {
            let inner = mb.inner.lock().unwrap();
            assert_eq!((inner.claims.len(), inner.claim_order.len()), (1, 1));
        }
        let ids: Vec<[u8; 32]> = (0..MAX_CLAIMS_PER_CLIENT as u32 * 2)
            .map(|n| {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&n.to_be_bytes());
                id[31] = 1;
                id
            })
            .collect();
        mb.claim(greedy, &ids);
        assert_eq!(mb.sizes().1, MAX_CLAIMS_PER_CLIENT, "one client holds at most its share");
        mb.claim(other, &[[8; 32]]);
        assert_eq!(mb.sizes().1, MAX_CLAIMS_PER_CLIENT + 1, "another client still gets a slot");
        mb.forget_client(&greedy);
        let inner = mb.inner.lock().unwrap();
        assert_eq!((inner.claims.len(), inner.claim_order.len(), inner.claims_per_client.len()), (1, 1, 1));
    }

    #[test]
    fn reply_then_claim_hands_it_over_and_capacity_holds() {
        let mb = ReplyMailbox::new(2, Duration::from_secs(60));
        assert!(matches!(mb.deliver([1; 32], pkt()), Delivery::Stored));
        assert!(matches!(mb.deliver([2; 32], pkt()), Delivery::Stored));
        assert!(matches!(mb.deliver([3; 32], pkt()), Delivery::Full));
        assert_eq!(mb.claim(PeerId::random(), &[[1; 32], [9; 32]]).len(), 1);
        assert_eq!(mb.sizes(), (1, 1));
    }

    #[test]
    fn stored_replies_expire() {
        let mb = ReplyMailbox::new(2, Duration::from_millis(1));
        assert!(matches!(mb.deliver([1; 32], pkt()), Delivery::Stored));
        std::thread::sleep(Duration::from_millis(5));
        assert!(mb.claim(PeerId::random(), &[[1; 32]]).is_empty());
    }
}
