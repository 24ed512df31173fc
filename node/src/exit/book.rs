//! [`ReplyBook`]: what the exit remembers about requests by id, so that a
//! retried request is answered instead of performed twice, and an answer
//! larger than its request's SURBs waits for more.
//!
//! ```text
//!              serve                       SURBs short
//!  (none) ──► InFlight { surbs } ──────────────────────────► Held { reply, surbs, needed }
//!                 │ answer fits                                   │ SurbTopUp / repeat adds SURBs
//!                 ▼                                               ▼ enough
//!             Answered { reply } ◄────────────────────────────────┘
//! ```
//!
//! * A repeat of an **in-flight** request replaces the SURBs the answer will
//!   use with the repeat's (the client retried because the first ones did not
//!   bring an answer back; it holds the keys of both).
//! * A repeat of an **answered** request is answered again from the book over
//!   its own SURBs.
//! * A **held** answer takes the SURBs of a `SurbTopUp` (or of a repeat) for its
//!   request id, and leaves once it has as many as its fragments.
//!
//! Bounds: `exit.reply_cache_entries` entries, `exit.reply_cache_bytes` bytes
//! of answers (held and answered), each entry forgotten after
//! `exit.reply_cache_secs`. When full, the oldest answered or held entries go
//! first (counted `exit/book_evicted`); in-flight entries are bounded by
//! `exit.concurrency` and never evicted. What the book holds is the answer
//! and the SURBs only: it learns nothing about the client that the request
//! did not already carry, and it forgets it after the TTL.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use nox_protocol::payload::{REQUEST_ID_LEN, Reply};
use nox_protocol::sphinx::surb::Surb;

/// A request id.
pub type RequestId = [u8; REQUEST_ID_LEN];

/// Bounds of the book (`[exit]`).
#[derive(Debug, Clone, Copy)]
pub struct BookLimits {
    /// Entries at most.
    pub entries: usize,
    /// Bytes of answers at most.
    pub bytes: usize,
    /// How long an entry lives.
    pub ttl: Duration,
}

enum Entry {
    InFlight { surbs: Vec<Surb> },
    Held { reply: Reply, surbs: Vec<Surb>, fragments: usize },
    Answered { reply: Reply },
}

struct Slot {
    entry: Entry,
    since: Instant,
}

/// What to do with a request that arrived.
pub enum Arrival {
    /// First sight: serve it (the book now holds it in flight with its SURBs).
    Serve,
    /// Already being served: its answer will use the new SURBs.
    InFlight,
    /// Answered before: send this answer again over the repeat's SURBs.
    Answered(Reply, Vec<Surb>),
    /// A held answer now has enough SURBs: send it over these.
    Release(Reply, Vec<Surb>),
    /// A held answer took the SURBs but still needs `more`.
    StillShort {
        /// SURBs still missing.
        more: usize,
    },
    /// A top-up for a request the book does not hold (answered long ago,
    /// evicted, or never seen).
    Unknown,
}

impl std::fmt::Debug for Arrival {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The answer is user content: only the variant shows.
        let name = match self {
            Arrival::Serve => "Serve",
            Arrival::InFlight => "InFlight",
            Arrival::Answered(..) => "Answered",
            Arrival::Release(..) => "Release",
            Arrival::StillShort { .. } => "StillShort",
            Arrival::Unknown => "Unknown",
        };
        f.write_str(name)
    }
}

/// Requests by id: in flight, held for SURBs, answered.
pub struct ReplyBook {
    limits: BookLimits,
    slots: HashMap<RequestId, Slot>,
    /// Insertion order, for expiry and eviction (ids may be stale).
    order: VecDeque<(RequestId, Instant)>,
    bytes: usize,
    evicted: u64,
}

impl std::fmt::Debug for ReplyBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyBook").field("entries", &self.slots.len()).field("bytes", &self.bytes).finish()
    }
}

impl ReplyBook {
    /// An empty book.
    pub fn new(limits: BookLimits) -> Self {
        ReplyBook { limits, slots: HashMap::new(), order: VecDeque::new(), bytes: 0, evicted: 0 }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the book is empty.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Bytes of answers held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries evicted for room since the last call.
    pub fn take_evicted(&mut self) -> u64 {
        std::mem::take(&mut self.evicted)
    }

    /// A request (not a top-up) with `surbs` arrived.
    pub fn arrive(&mut self, id: RequestId, surbs: Vec<Surb>, now: Instant) -> Arrival {
        self.expire(now);
        match self.slots.get_mut(&id).map(|s| &mut s.entry) {
            None => {
                self.make_room(0);
                self.slots.insert(id, Slot { entry: Entry::InFlight { surbs }, since: now });
                self.order.push_back((id, now));
                Arrival::Serve
            }
            Some(Entry::InFlight { surbs: held }) => {
                if !surbs.is_empty() {
                    *held = surbs;
                }
                Arrival::InFlight
            }
            Some(Entry::Answered { reply }) => Arrival::Answered(reply.clone(), surbs),
            Some(Entry::Held { .. }) => self.top_up(id, surbs, now),
        }
    }

    /// A `SurbTopUp` for `id` arrived with `surbs`.
    pub fn top_up(&mut self, id: RequestId, surbs: Vec<Surb>, now: Instant) -> Arrival {
        self.expire(now);
        let Some(slot) = self.slots.get_mut(&id) else { return Arrival::Unknown };
        let Entry::Held { surbs: held, fragments, .. } = &mut slot.entry else { return Arrival::Unknown };
        held.extend(surbs);
        if held.len() < *fragments {
            return Arrival::StillShort { more: *fragments - held.len() };
        }
        let surbs = std::mem::take(held);
        let Some(Slot { entry: Entry::Held { reply, .. }, .. }) = self.slots.remove(&id) else {
            return Arrival::Unknown;
        };
        self.bytes = self.bytes.saturating_sub(reply.data.len());
        self.insert_answered(id, reply.clone(), now);
        Arrival::Release(reply, surbs)
    }

    /// The service answered `id`: returns the SURBs to send it over (empty
    /// if the entry was evicted or expired meanwhile, or the request carried none).
    pub fn take_surbs(&mut self, id: &RequestId) -> Vec<Surb> {
        match self.slots.get_mut(id).map(|s| &mut s.entry) {
            Some(Entry::InFlight { surbs }) => std::mem::take(surbs),
            _ => Vec::new(),
        }
    }

    /// `id` was answered with `reply` (sent whole): kept for repeats.
    pub fn answered(&mut self, id: RequestId, reply: Reply, now: Instant) {
        self.slots.remove(&id);
        self.insert_answered(id, reply, now);
    }

    /// `id`'s `reply` needs `fragments` SURBs and has `surbs` of them: held
    /// for the rest. Returns whether it could be held (false: too large for
    /// the book).
    pub fn hold(&mut self, id: RequestId, reply: Reply, surbs: Vec<Surb>, fragments: usize, now: Instant) -> bool {
        self.slots.remove(&id);
        let size = reply.data.len();
        if size > self.limits.bytes {
            return false;
        }
        self.make_room(size);
        self.bytes += size;
        self.slots.insert(id, Slot { entry: Entry::Held { reply, surbs, fragments }, since: now });
        self.order.push_back((id, now));
        true
    }

    /// `id` is forgotten (a `Busy` answer: a retry should be served afresh).
    pub fn forget(&mut self, id: &RequestId) {
        if let Some(slot) = self.slots.remove(id) {
            self.bytes = self.bytes.saturating_sub(slot.size());
        }
    }

    fn insert_answered(&mut self, id: RequestId, reply: Reply, now: Instant) {
        let size = reply.data.len();
        if size > self.limits.bytes {
            return;
        }
        self.make_room(size);
        self.bytes += size;
        self.slots.insert(id, Slot { entry: Entry::Answered { reply }, since: now });
        self.order.push_back((id, now));
    }

    /// Drops entries older than the TTL.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(id, at)) = self.order.front() {
            if now.saturating_duration_since(at) < self.limits.ttl {
                break;
            }
            self.order.pop_front();
            // The id may have been re-inserted later: only its own slot goes.
            if self.slots.get(&id).is_some_and(|s| s.since == at)
                && let Some(slot) = self.slots.remove(&id)
            {
                self.bytes = self.bytes.saturating_sub(slot.size());
            }
        }
    }

    /// Evicts the oldest answered or held entries until one more entry of
    /// `size` bytes fits.
    fn make_room(&mut self, size: usize) {
        let mut skipped = VecDeque::new();
        while self.slots.len() + 1 > self.limits.entries.max(1) || self.bytes + size > self.limits.bytes {
            let Some((id, at)) = self.order.pop_front() else { break };
            match self.slots.get(&id) {
                Some(s) if s.since == at => {
                    if matches!(s.entry, Entry::InFlight { .. }) {
                        skipped.push_back((id, at));
                        continue;
                    }
                    if let Some(slot) = self.slots.remove(&id) {
                        self.bytes = self.bytes.saturating_sub(slot.size());
                        self.evicted += 1;
                    }
                }
                _ => {}
            }
        }
        while let Some(e) = skipped.pop_back() {
            self.order.push_front(e);
        }
    }
}

impl Slot {
    fn size(&self) -> usize {
        match &self.entry {
            Entry::InFlight { .. } => 0,
            Entry::Held { reply, .. } | Entry::Answered { reply } => reply.data.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::reply::test_surbs as surbs;
    use nox_protocol::payload::ReplyStatus;

    fn reply(id: RequestId, len: usize) -> Reply {
        Reply { request_id: id, status: ReplyStatus::Ok, data: vec![1; len] }
    }

    fn book(entries: usize, bytes: usize) -> ReplyBook {
        ReplyBook::new(BookLimits { entries, bytes, ttl: Duration::from_secs(60) })
    }

    #[test]
    fn a_repeat_is_served_once_and_answered_from_the_book() {
        let mut b = book(8, 1 << 20);
        let now = Instant::now();
        assert!(matches!(b.arrive([1; 16], surbs(1), now), Arrival::Serve));
        // A retry while in flight: its SURBs replace the first ones.
        assert!(matches!(b.arrive([1; 16], surbs(2), now), Arrival::InFlight));
        assert_eq!(b.take_surbs(&[1; 16]).len(), 2);
        b.answered([1; 16], reply([1; 16], 10), now);
        let Arrival::Answered(r, s) = b.arrive([1; 16], surbs(1), now) else { panic!("answered from the book") };
        assert_eq!((r.data.len(), s.len()), (10, 1));
        // After the TTL the id is new again.
        assert!(matches!(b.arrive([1; 16], surbs(1), now + Duration::from_secs(61)), Arrival::Serve));
    }

    #[test]
    fn a_held_answer_leaves_once_topped_up_to_its_fragment_count() {
        let mut b = book(8, 1 << 20);
        let now = Instant::now();
        assert!(matches!(b.arrive([2; 16], surbs(1), now), Arrival::Serve));
        assert!(b.hold([2; 16], reply([2; 16], 100), surbs(2), 5, now));
        assert!(matches!(b.top_up([2; 16], surbs(2), now), Arrival::StillShort { more: 1 }));
        let Arrival::Release(r, s) = b.top_up([2; 16], surbs(1), now) else { panic!("released") };
        assert_eq!((r.data.len(), s.len()), (100, 5));
        // Released answers stay answerable for a repeat.
        assert!(matches!(b.arrive([2; 16], surbs(1), now), Arrival::Answered(..)));
        assert!(matches!(b.top_up([9; 16], surbs(1), now), Arrival::Unknown));
    }

    #[test]
    fn bounds_evict_the_oldest_answers_but_never_requests_in_flight() {
        let mut b = book(3, 100);
        let now = Instant::now();
        assert!(matches!(b.arrive([1; 16], vec![], now), Arrival::Serve));
        b.answered([2; 16], reply([2; 16], 60), now);
        b.answered([3; 16], reply([3; 16], 60), now);
        // 120 bytes > 100: the oldest answer went.
        assert_eq!((b.len(), b.bytes(), b.take_evicted()), (2, 60, 1));
        assert!(matches!(b.arrive([2; 16], vec![], now), Arrival::Serve));
        // Full of in-flight entries and one answer: the answer goes, in-flight stay.
        assert!(matches!(b.arrive([4; 16], vec![], now), Arrival::Serve));
        assert_eq!(b.len(), 3);
        assert!(matches!(b.arrive([1; 16], vec![], now), Arrival::InFlight));
        // An answer larger than the whole budget is not kept.
        b.answered([5; 16], reply([5; 16], 101), now);
        assert!(!b.hold([6; 16], reply([6; 16], 101), vec![], 2, now));
        assert!(b.bytes() <= 100);
    }
}
