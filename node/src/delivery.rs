//! The delivery stage: what happens to a payload at its last hop, on every
//! node.
//!
//! A final payload is one of three things:
//! * drop cover ([`nox_protocol::cover`]) from a node or a client: counted
//!   (`exit/cover_received`) and discarded. (A node's loops do not end here:
//!   they are echo requests, served by the exit stage and answered through a
//!   SURB, see [`crate::cover`].)
//! * a fragment of a client message (or of a node's loop, which looks the
//!   same): handed to the exit stage ([`crate::exit`]) on an exit node; a
//!   relay (layers 0 and 1) never expects one and drops it (`exit/not_exit`);
//! * nothing else: a payload is cover or a fragment by its first byte, and
//!   the exit stage's reassembler refuses what is neither.
//!
//! The stage is cheap (one byte) so it runs inline on the one task that reads
//! the final-payload queue.

use nox_protocol::cover;
use nox_protocol::sphinx::Payload;
use prometheus_client::metrics::counter::Counter;

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
    pub async fn run(input: flume::Receiver<Payload>, fragments: Fragments, m: &Metrics) {
        let cover_received: Counter = m.packets("exit", "cover_received");
        let not_exit: Counter = m.dropped("exit", "not_exit");
        let queue_full: Counter = m.dropped("exit", "exit_queue_full");
        while let Ok(payload) = input.recv_async().await {
            if cover::is_cover(payload.as_bytes()) {
                cover_received.inc();
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
