//! Misbehaviour a test can switch on in one node (`test-harness` only).
//!
//! Loop cover exists to catch nodes that forward some traffic and silently
//! drop the rest. To test that it does, a node must misbehave the way a
//! malicious one would: accept what it is given, count nothing, pass nothing
//! on. These switches are set per node through
//! [`crate::node::NodeOptions::faults`] when the node starts; they are not
//! configuration keys, and a build without the `test-harness` feature has
//! neither the type nor the checks.

/// The faults a node shows; all off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// An entry that drops what is submitted to it on `/nox/submit/1` (by
    /// clients and nodes alike, which it cannot tell apart by content) after
    /// checking it, while still forwarding every packet from other nodes.
    pub drop_submissions: bool,
    /// A node that drops every payload for which it is the final hop (an exit
    /// that relays but serves nothing), while still forwarding every packet
    /// and reply.
    pub drop_finals: bool,
    /// An exit that stops right after it broadcasts a paid call's relay
    /// transaction, as if its process died there: the transaction is in its
    /// ledger and on the wire, nothing after it is recorded, the request gets
    /// `Failed`, and no further transaction is sent until the node restarts.
    pub exit_crash_after_broadcast: bool,
}
