//! Feeds a stream of arbitrary fragments to a reassembler with small limits and
//! checks that it stays within them and never panics.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use nox_protocol::fragment::{ReassemblyLimits, Reassembler};

fuzz_target!(|data: &[u8]| {
    let limits = ReassemblyLimits {
        max_bytes: 64 * 1024,
        max_messages: 8,
        max_fragments_per_message: 40,
        max_message_len: 256 * 1024,
        stale_after: Duration::from_secs(5),
        completed_memory: 16,
    };
    let mut r = Reassembler::new(limits);
    let start = Instant::now();
    // Input: records of [len u8][advance-seconds u8][bytes…].
    let mut rest = data;
    let mut now = start;
    while rest.len() >= 2 {
        let len = usize::from(rest[0]) * 4;
        now += Duration::from_secs(u64::from(rest[1] % 8));
        rest = &rest[2..];
        let take = len.min(rest.len());
        let (frag, tail) = rest.split_at(take);
        rest = tail;
        let _ = r.insert(frag, now);
        assert!(r.pending_bytes() <= limits.max_bytes);
        assert!(r.pending_messages() <= limits.max_messages);
    }
    r.expire(now + Duration::from_secs(10));
    assert_eq!(r.pending_messages(), 0);
    assert_eq!(r.pending_bytes(), 0);
});
