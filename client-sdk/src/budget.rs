//! [`SurbBudget`]: how many SURBs a request carries for its answer.
//!
//! A SURB costs the request 507 bytes and carries one reply fragment (about
//! 32 KiB of answer less the Reed–Solomon parity). Too few and a large answer
//! waits a round trip for a top-up (the exit asks with `MoreSurbs`); too many
//! and every request grows. The budget is per request kind: what that kind's
//! answers usually need. An echo carries what its own data needs.

use nox_protocol::fragment::Fragmenter;
use nox_protocol::payload::{REPLY_HEADER_LEN, Request, RequestKind};

/// SURBs per request kind.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SurbBudget {
    /// `RpcCall` (a block, a receipt, a page of logs).
    pub rpc_call: usize,
    /// `RawBroadcast` (a transaction hash).
    pub raw_broadcast: usize,
    /// `Http` (a small page).
    pub http: usize,
    /// `EthRequest` (a receipt).
    pub eth_request: usize,
    /// `Mail` (an acknowledgement).
    pub mail: usize,
}

impl Default for SurbBudget {
    fn default() -> Self {
        SurbBudget { rpc_call: 2, raw_broadcast: 1, http: 4, eth_request: 1, mail: 1 }
    }
}

/// SURBs whose fragments carry an answer of `bytes`.
pub fn surbs_for_answer(bytes: usize) -> usize {
    Fragmenter::default()
        .fragment_count(bytes + REPLY_HEADER_LEN)
        .unwrap_or(usize::from(nox_protocol::fragment::DEFAULT_BUCKETS[8]))
}

impl SurbBudget {
    /// SURBs to attach to `request` (at least 1).
    pub fn for_request(&self, request: &Request) -> usize {
        let n = match request {
            Request::Echo { data } => surbs_for_answer(data.len()),
            other => match other.kind() {
                RequestKind::RpcCall => self.rpc_call,
                RequestKind::RawBroadcast => self.raw_broadcast,
                RequestKind::Http => self.http,
                RequestKind::EthRequest => self.eth_request,
                RequestKind::Mail => self.mail,
                RequestKind::Echo | RequestKind::SurbTopUp => 1,
            },
        };
        n.clamp(1, nox_protocol::payload::MAX_SURBS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_carries_the_surbs_its_data_needs_and_other_kinds_their_budget() {
        let b = SurbBudget::default();
        assert_eq!(b.for_request(&Request::Echo { data: vec![1; 10] }), 1);
        let big = Request::Echo { data: vec![1; 200_000] };
        let n = b.for_request(&big);
        assert!(n > 6, "200 kB need several fragments with parity: {n}");
        let rpc = Request::RpcCall { chain_id: 1, json: "{}".into() };
        assert_eq!(b.for_request(&rpc), 2);
        let none = SurbBudget { rpc_call: 0, ..b };
        assert_eq!(none.for_request(&rpc), 1, "never zero: every request wants its answer");
    }
}
