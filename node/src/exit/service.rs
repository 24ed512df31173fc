//! The boundary between the exit stage and what an exit offers.
//!
//! An [`ExitService`] gets one decoded request with its [`RequestContext`] —
//! who it answers (the request id), how much the answer may hold (the
//! exit's answer limit), and when the answer is no longer
//! wanted (the deadline) — and returns the answer's bytes or a typed
//! [`ServiceError`], whose [`ReplyStatus`] the client receives with the
//! explanation. The exit stage owns everything around it: reassembly,
//! concurrency, the deadline (a service that overruns it is answered with
//! [`ReplyStatus::Timeout`]), and the reply's encoding into SURB packets.

use std::time::Instant;

use futures::future::BoxFuture;
use nox_protocol::payload::{ReplyStatus, Request, RequestKind};

/// What a service knows about the request it serves. `Debug` shows the kind
/// and the budget only.
#[derive(Clone)]
pub struct RequestContext {
    /// The request's id (the reply carries it back).
    pub request_id: [u8; 16],
    /// The request's kind.
    pub kind: RequestKind,
    /// The longest answer the exit sends back (`exit.reply_max_bytes`; the
    /// exit asks the client for SURBs beyond those the request carried). A
    /// longer answer is replaced by `BadRequest`; a service should refuse or
    /// trim before doing the work.
    pub reply_budget: usize,
    /// When the exit stops waiting for the answer.
    pub deadline: Instant,
}

impl std::fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestContext")
            .field("kind", &self.kind)
            .field("reply_budget", &self.reply_budget)
            .finish_non_exhaustive()
    }
}

/// Why a service did not answer with data. The message goes back to the
/// client as the reply's data: it must say what failed without repeating the
/// request's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// This exit does not offer the request's kind.
    #[error("this exit does not offer {0}")]
    Unsupported(&'static str),
    /// The request is malformed for the service.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The exit declines (payment, policy).
    #[error("refused: {0}")]
    Refused(String),
    /// The service tried and failed.
    #[error("failed: {0}")]
    Failed(String),
    /// The answer did not come before the deadline.
    #[error("no answer before the deadline")]
    Timeout,
    /// The service is at its limit.
    #[error("busy: {0}")]
    Busy(String),
    /// The answer is longer than the request's SURBs can carry.
    #[error("the answer needs {needed} bytes, but the request's SURBs carry {budget}")]
    ReplyTooLarge {
        /// The answer's length.
        needed: usize,
        /// The reply budget.
        budget: usize,
    },
    /// A service whose failures have a layout of their own (an `EthRequest`'s
    /// `EthRefusal`): `data` is the reply's data as it is, with `status`.
    #[error("answered {}", status.label())]
    Typed {
        /// The reply's status (not `Ok`).
        status: ReplyStatus,
        /// The reply's data.
        data: Vec<u8>,
    },
}

impl ServiceError {
    /// The status the client receives.
    pub fn status(&self) -> ReplyStatus {
        match self {
            ServiceError::Unsupported(_) => ReplyStatus::Unsupported,
            ServiceError::BadRequest(_) | ServiceError::ReplyTooLarge { .. } => ReplyStatus::BadRequest,
            ServiceError::Refused(_) => ReplyStatus::Refused,
            ServiceError::Failed(_) => ReplyStatus::Failed,
            ServiceError::Timeout => ReplyStatus::Timeout,
            ServiceError::Busy(_) => ReplyStatus::Busy,
            ServiceError::Typed { status, .. } => *status,
        }
    }

    /// The reply's data: the explanation in words, or a typed service's
    /// bytes as they are.
    pub fn reply_data(&self) -> Vec<u8> {
        match self {
            ServiceError::Typed { data, .. } => data.clone(),
            other => other.to_string().into_bytes(),
        }
    }
}

/// A service an exit offers for one or more request kinds. Implementations
/// live beside this module ([`super::echo::EchoService`]); the
/// [`super::router::ServiceRouter`] maps kinds to them.
pub trait ExitService: Send + Sync + 'static {
    /// The service's name, for logs and metrics.
    fn name(&self) -> &'static str;

    /// Serves one request. The future may be dropped at the deadline.
    fn serve(&self, ctx: RequestContext, request: Request) -> BoxFuture<'static, Result<Vec<u8>, ServiceError>>;
}
