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

    fn serve(&self, _ctx: RequestContext, request: Request) -> BoxFuture<'static, Result<Vec<u8>, ServiceError>> {
        // An echo longer than the reply budget is refused by the exit stage.
        Box::pin(async move {
            match request {
                Request::Echo { data } => Ok(data),
                other => Err(ServiceError::Unsupported(other.kind().name())),
            }
        })
    }
}
