//! The delivery stage: what happens to a payload at its last hop, on every
//! node.
//!
//! A final payload is one of three things:
//! * cover ([`nox_protocol::cover`]): a loop of this node's coming home
//!   (`exit/loop_returned`, fed to [`CoverState`] for loop reliability), or
//!   another node's drop (`exit/cover_received`) — counted, then discarded;
//! * a fragment of a client message: handed to the exit stage
//!   ([`crate::exit`]) on an exit node; a relay (layers 0 and 1) never
//!   expects one and drops it (`exit/not_exit`);
//! * nothing else: a payload is cover or a fragment by its first byte, and
//!   the exit stage's reassembler refuses what is neither.
//!
//! The stage is cheap (one byte and, for cover, one map lookup) so it runs
//! inline on the one task that reads the final-payload queue.

use std::sync::Arc;

use nox_protocol::cover;
use nox_protocol::sphinx::Payload;
use prometheus_client::metrics::counter::Counter;

use crate::cover::CoverState;
use crate::metrics::Metrics;

/// Where the delivery stage sends a client fragment.
#[derive(Debug)]
pub enum Fragments {
    /// This node is an exit: fragments go to the exit stage, dropped as
    /// `exit/exit_queue_full` while its queue is full.
    Exit(flume::Sender<Payload>),
    /// This node is a relay: fragments are dropped as `exit/not_exit`.
    Relay,
}

/// The delivery stage.
#[derive(Debug)]
pub struct DeliveryStage;

impl DeliveryStage {
    /// Runs until `input` closes.
    pub async fn run(input: flume::Receiver<Payload>, fragments: Fragments, cover: Arc<CoverState>, m: &Metrics) {
        let loop_returned: Counter = m.packets("exit", "loop_returned");
        let cover_received: Counter = m.packets("exit", "cover_received");
        let not_exit: Counter = m.dropped("exit", "not_exit");
        let queue_full: Counter = m.dropped("exit", "exit_queue_full");
        while let Ok(payload) = input.recv_async().await {
            let bytes = payload.as_bytes();
            if cover::is_cover(bytes) {
                if cover.loop_returned(bytes) {
                    loop_returned.inc();
                } else {
                    cover_received.inc();
                }
                continue;
            }
            match &fragments {
                Fragments::Relay => {
                    not_exit.inc();
                }
                Fragments::Exit(exit) => {
                    if exit.try_send(payload).is_err() {
                        queue_full.inc();
                    }
                }
            }
        }
    }
}
