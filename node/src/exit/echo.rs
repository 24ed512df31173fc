//! `Echo`: the request's data, straight back. Diagnostics and latency
//! probes; also what `scripts/devnet` checks the path with before the
//! Ethereum services run.

use futures::future::BoxFuture;
use nox_protocol::payload::Request;

use super::service::{ExitService, RequestContext, ServiceError};

/// Answers `Echo` with its data; refuses every other kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoService;

impl ExitService for EchoService {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn serve(&self, ctx: RequestContext, request: Request) -> BoxFuture<'static, Result<Vec<u8>, ServiceError>> {
        Box::pin(async move {
            match request {
                Request::Echo { data } if data.len() > ctx.reply_budget => {
                    Err(ServiceError::ReplyTooLarge { needed: data.len(), budget: ctx.reply_budget })
                }
                Request::Echo { data } => Ok(data),
                other => Err(ServiceError::Unsupported(other.kind().name())),
            }
        })
    }
}
