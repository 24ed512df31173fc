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
//! Bounds: at most `capacity` stored replies and `capacity` claims; both age
//! out after `ttl`, and a claimant's claims go when it disconnects. Claiming
//! an id the claimant already holds changes nothing, so repeating a claim
//! cannot grow anything.
//!
//! Shares. A claimant holds at most `per_claimant` claims, and a new claim is
//! taken only while the claimant would hold at most half of the slots the
//! other claimants leave free: one claimant alone takes at most half the
//! table, and every later claimant still finds room however greedy the earlier
//! ones were (k greedy claimants leave at least `capacity / 2^k` free). Each
//! claim is answered: [`ClaimOutcome`] names the ids refused, so a claimant
//! never believes a reply will be pushed when it will not. Stored replies have
//! no claimant to share by; a claimed reply never enters the store, so a
//! flood of unclaimed replies costs only replies that arrive before their
//! claim (the entry refuses new ones while the store is full).
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use nox_protocol::sphinx::Packet;

/// The default of `egress.reply_claims_per_peer`: most claims one claimant
/// holds at once, as many as one claim request may carry (and as many loops
/// as a node keeps in flight, `crate::cover::MAX_OUTSTANDING`).
pub const MAX_CLAIMS_PER_CLIENT: usize = nox_net::p2p::MAX_REPLY_CLAIMS;

/// What a claim got.
#[derive(Default)]
pub struct ClaimOutcome {
    /// Replies that were already waiting: their claims are consumed at once.
    pub ready: Vec<Packet>,
    /// Ids now held for the claimant (already held ones included), plus the
    /// ones answered from `ready`.
    pub accepted: usize,
    /// Ids refused: over the claimant's share, the table full, or held by
    /// another claimant. Their replies are not pushed.
    pub refused: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ClaimOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimOutcome")
            .field("ready", &self.ready.len())
            .field("accepted", &self.accepted)
            .field("refused", &self.refused.len())
            .finish()
    }
}

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
    per_claimant: usize,
    ttl: Duration,
}

impl std::fmt::Debug for ReplyMailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyMailbox").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

impl ReplyMailbox {
    /// A mailbox holding up to `capacity` replies and claims for `ttl`, at
    /// most [`MAX_CLAIMS_PER_CLIENT`] claims per claimant.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self::with_share(capacity, MAX_CLAIMS_PER_CLIENT, ttl)
    }

    /// A mailbox holding up to `capacity` replies and claims for `ttl`, at
    /// most `per_claimant` claims per claimant.
    pub fn with_share(capacity: usize, per_claimant: usize, ttl: Duration) -> Self {
        ReplyMailbox {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            per_claimant: per_claimant.max(1),
            ttl,
        }
    }

    /// Most claims `held_by_others` leave to one claimant: half of the free
    /// slots, within the per-claimant cap.
    fn share(&self, held_by_others: usize) -> usize {
        (self.capacity.saturating_sub(held_by_others) / 2).min(self.per_claimant)
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

    /// `client` claims `ids`: the replies already waiting for them, and
    /// which ids were accepted or refused (see [`ClaimOutcome`]).
    pub fn claim(&self, client: PeerId, ids: &[[u8; 32]]) -> ClaimOutcome {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.expire(&mut inner, now);
        let mut out = ClaimOutcome::default();
        for id in ids {
            if let Some((_, p)) = inner.stored.remove(id) {
                out.ready.push(p);
                out.accepted += 1;
                continue;
            }
            match inner.claims.get(id) {
                Some((holder, _)) if *holder == client => {
                    out.accepted += 1;
                    continue;
                }
                Some(_) => {
                    out.refused.push(*id);
                    continue;
                }
                None => {}
            }
            let held = inner.claims_per_client.get(&client).copied().unwrap_or(0);
            let others = inner.claims.len() - held;
            if held >= self.share(others) || inner.claims.len() >= self.capacity {
                out.refused.push(*id);
                continue;
            }
            inner.claims.insert(*id, (client, now));
            inner.claim_order.push_back((*id, now));
            *inner.claims_per_client.entry(client).or_insert(0) += 1;
            out.accepted += 1;
        }
        out
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
        assert!(mb.claim(c, &[[1; 32]]).ready.is_empty());
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
        let out = mb.claim(PeerId::random(), &[[1; 32], [9; 32]]);
        assert_eq!((out.ready.len(), out.accepted, out.refused.len()), (1, 2, 0));
        assert_eq!(mb.sizes(), (1, 1));
    }

    #[test]
    fn stored_replies_expire() {
        let mb = ReplyMailbox::new(2, Duration::from_millis(1));
        assert!(matches!(mb.deliver([1; 32], pkt()), Delivery::Stored));
        std::thread::sleep(Duration::from_millis(5));
        assert!(mb.claim(PeerId::random(), &[[1; 32]]).ready.is_empty());
    }

    /// `n` distinct ids, distinct for each `tag`.
    fn ids(tag: u8, n: usize) -> Vec<[u8; 32]> {
        (0..n as u32)
            .map(|i| {
                let mut id = [tag; 32];
                id[..4].copy_from_slice(&i.to_be_bytes());
                id
            })
            .collect()
    }

    #[test]
    fn greedy_claimants_leave_room_for_the_next_and_every_refusal_is_reported() {
        // The default shape: 4,096 claims, 1,024 per claimant. Before shares,
        // four claimants of 1,024 filled the table and a fifth's claims were
        // ignored while acknowledged.
        let mb = ReplyMailbox::new(4096, Duration::from_secs(60));
        let greedy: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        let mut held = 0;
        for (n, g) in greedy.iter().enumerate() {
            // Each floods: its whole share and then some, in several requests.
            for round in 0..3u8 {
                let batch = ids(n as u8 * 8 + round, MAX_CLAIMS_PER_CLIENT);
                let out = mb.claim(*g, &batch);
                assert_eq!(out.accepted + out.refused.len(), batch.len(), "every id is answered");
                held += out.accepted;
            }
            assert_eq!(held, mb.sizes().1);
            assert!(mb.sizes().1 < 4096, "claimant {n} filled the table");
        }
        // The first three got their 1,024; the fourth half of what they left.
        assert_eq!(mb.sizes().1, 3 * 1024 + 512);
        // Honest claimants each claim 40 ids: all accepted, pushed when their replies come.
        for tag in 100..104u8 {
            let honest = PeerId::random();
            let mine = ids(tag, 40);
            let out = mb.claim(honest, &mine);
            assert_eq!((out.accepted, out.refused.len()), (40, 0), "honest claimant {tag}");
            assert!(matches!(mb.deliver(mine[0], pkt()), Delivery::Push { client, .. } if client == honest));
        }
        // A greedy claimant's refused ids were really not taken: their replies are stored.
        let refused = mb.claim(greedy[0], &ids(200, 1)).refused;
        assert_eq!(refused.len(), 1);
        assert!(matches!(mb.deliver(refused[0], pkt()), Delivery::Stored));
    }

    #[test]
    fn an_id_held_by_another_claimant_is_refused_and_a_repeat_is_accepted() {
        let mb = ReplyMailbox::new(16, Duration::from_secs(60));
        let (a, b) = (PeerId::random(), PeerId::random());
        assert_eq!(mb.claim(a, &[[1; 32]]).accepted, 1);
        assert_eq!(mb.claim(a, &[[1; 32]]).accepted, 1, "a repeat is still held");
        let out = mb.claim(b, &[[1; 32], [2; 32]]);
        assert_eq!((out.accepted, out.refused), (1, vec![[1; 32]]));
        assert!(matches!(mb.deliver([1; 32], pkt()), Delivery::Push { client, .. } if client == a));
    }

    #[test]
    fn the_per_claimant_cap_holds_below_half_the_table() {
        let mb = ReplyMailbox::with_share(64, 5, Duration::from_secs(60));
        let c = PeerId::random();
        let out = mb.claim(c, &ids(1, 9));
        assert_eq!((out.accepted, out.refused.len()), (5, 4));
        // Claims consumed by their replies free the share again.
        for id in &ids(1, 2) {
            assert!(matches!(mb.deliver(*id, pkt()), Delivery::Push { .. }));
        }
        assert_eq!(mb.claim(c, &ids(2, 9)).accepted, 2);
    }
}
