//! [`ServiceRouter`]: which service serves which request kind.
//!
//! An exit's services are registered here by kind at start-up: the node
//! builds its router from `[exit]` with [`ServiceRouter::from_config`] (or
//! takes the one `NodeOptions` carries); a request of a kind no service was
//! registered for is answered with `ReplyStatus::Unsupported` by the exit
//! stage, without reaching any service.
//!
//! [`ServiceRouter::from_config`] is also where an exit's Ethereum upstream
//! is met for the first time: when `exit.raw_broadcast` or `exit.rpc_call` is
//! on, it asks `eth_chainId` once; another chain than `chain.chain_id` (with
//! `[chain]` configured) is an error that stops the start, an upstream that
//! does not answer only a warning (the services answer `Failed` and look the
//! chain id up again on their next request).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nox_protocol::payload::RequestKind;

use super::echo::EchoService;
use super::http::{HttpConfig, HttpService, HttpSetupError};
use super::raw_broadcast::RawBroadcastService;
use super::rpc_call::{RpcCallConfig, RpcCallService, UnknownMethod};
use super::service::ExitService;
use super::upstream::{EthUpstream, UpstreamConfig, UpstreamError, UpstreamSetupError};
use crate::config::ExitSection;
use crate::metrics::Metrics;

/// Why the exit's services could not be built from `[exit]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExitSetupError {
    /// An Ethereum service is on without an upstream.
    #[error("exit.rpc_url is required when exit.raw_broadcast or exit.rpc_call is on")]
    MissingUpstream,
    /// The upstream cannot be used.
    #[error(transparent)]
    Upstream(#[from] UpstreamSetupError),
    /// A method outside the built-in list.
    #[error("exit.rpc_methods: {0}")]
    Method(#[from] UnknownMethod),
    /// The HTTP client cannot be built.
    #[error(transparent)]
    Http(#[from] HttpSetupError),
    /// The upstream serves another chain than `chain.chain_id`.
    #[error("{0}; check that exit.rpc_url points at the intended network")]
    WrongChain(UpstreamError),
}

/// Request kind → service.
#[derive(Clone, Default)]
pub struct ServiceRouter {
    services: BTreeMap<RequestKind, Arc<dyn ExitService>>,
}

impl std::fmt::Debug for ServiceRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.services.iter().map(|(k, s)| (k.name(), s.name()))).finish()
    }
}

impl ServiceRouter {
    /// No services.
    pub fn new() -> Self {
        ServiceRouter::default()
    }

    /// The default exit: echo only.
    pub fn echo_only() -> Self {
        ServiceRouter::new().with(RequestKind::Echo, Arc::new(EchoService))
    }

    /// The services `[exit]` enables: echo (`exit.echo`), `RawBroadcast`
    /// (`exit.raw_broadcast`) and `RpcCall` (`exit.rpc_call`) through one
    /// upstream at `exit.rpc_url`, `Http` (`exit.http`). `chain_id` is
    /// `chain.chain_id` when `[chain]` is configured: the chain the upstream
    /// must serve. Asks the upstream's chain id once when an Ethereum service
    /// is on (see the module docs). The services with state and a task of
    /// their own — `EthRequest` (`exit.eth_request`) and `Mail`
    /// (`exit.mail`, [`super::mail::MailExit`]) — are added by
    /// `crate::node::start`, which owns their tasks.
    pub async fn from_config(
        exit: &ExitSection,
        chain_id: Option<u64>,
        metrics: &Metrics,
    ) -> Result<ServiceRouter, ExitSetupError> {
        let mut router = ServiceRouter::new();
        if exit.echo {
            router = router.with(RequestKind::Echo, Arc::new(EchoService));
        }
        if exit.raw_broadcast || exit.rpc_call {
            let url = exit.rpc_url.clone().ok_or(ExitSetupError::MissingUpstream)?;
            let upstream = Arc::new(EthUpstream::new(UpstreamConfig {
                url,
                timeout: Duration::from_millis(exit.upstream_timeout_ms),
                max_answer_bytes: exit.rpc_max_answer_bytes,
                expected_chain_id: chain_id,
            })?);
            if exit.rpc_call {
                let cfg = RpcCallConfig { methods: exit.rpc_methods.clone(), max_log_blocks: exit.rpc_max_log_blocks };
                router =
                    router.with(RequestKind::RpcCall, Arc::new(RpcCallService::new(upstream.clone(), &cfg, metrics)?));
            }
            if exit.raw_broadcast {
                router = router
                    .with(RequestKind::RawBroadcast, Arc::new(RawBroadcastService::new(upstream.clone(), metrics)));
            }
            match upstream.check_at_start().await {
                Ok(Some(id)) => tracing::info!(chain_id = id, "exit: the Ethereum upstream answers"),
                Ok(None) => tracing::warn!(
                    "exit: the Ethereum upstream (exit.rpc_url) does not answer eth_chainId; \
                     RawBroadcast and RpcCall answer Failed until it does"
                ),
                Err(e) => return Err(ExitSetupError::WrongChain(e)),
            }
        }
        if exit.http {
            if exit.http_allow_loopback {
                tracing::warn!(
                    "exit.http_allow_loopback is on: Http requests may reach this host's loopback services; \
                     a setting for tests, never for a public exit"
                );
            }
            let cfg = HttpConfig {
                max_bytes: exit.http_max_bytes,
                timeout: Duration::from_millis(exit.http_timeout_ms),
                max_redirects: exit.http_max_redirects,
                allow_loopback: exit.http_allow_loopback,
            };
            router = router.with(RequestKind::Http, Arc::new(HttpService::new(cfg, metrics)?));
        }
        Ok(router)
    }

    /// Routes `kind` to `service` (replacing an earlier one).
    pub fn with(mut self, kind: RequestKind, service: Arc<dyn ExitService>) -> Self {
        self.services.insert(kind, service);
        self
    }

    /// Stops offering `kind`.
    pub fn without(mut self, kind: RequestKind) -> Self {
        self.services.remove(&kind);
        self
    }

    /// The service for `kind`.
    pub fn route(&self, kind: RequestKind) -> Option<&Arc<dyn ExitService>> {
        self.services.get(&kind)
    }

    /// The kinds offered.
    pub fn kinds(&self) -> Vec<RequestKind> {
        self.services.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_route_to_their_service_and_others_to_none() {
        let r = ServiceRouter::echo_only();
        assert_eq!(r.route(RequestKind::Echo).map(|s| s.name()), Some("echo"));
        assert!(r.route(RequestKind::EthRequest).is_none());
        assert_eq!(r.kinds(), vec![RequestKind::Echo]);
        assert!(r.without(RequestKind::Echo).kinds().is_empty());
    }

    #[tokio::test]
    async fn from_config_registers_what_exit_enables() {
        let m = Metrics::new();
        let r = ServiceRouter::from_config(&ExitSection::default(), None, &m).await.unwrap();
        assert_eq!(r.kinds(), vec![RequestKind::Echo], "echo only by default");

        let off = ExitSection { echo: false, ..ExitSection::default() };
        assert!(ServiceRouter::from_config(&off, None, &m).await.unwrap().kinds().is_empty());

        let http = ExitSection { http: true, ..ExitSection::default() };
        let r = ServiceRouter::from_config(&http, None, &m).await.unwrap();
        assert_eq!(r.kinds(), vec![RequestKind::Echo, RequestKind::Http]);
        assert_eq!(r.route(RequestKind::Http).map(|s| s.name()), Some("http"));

        let no_url = ExitSection { rpc_call: true, ..ExitSection::default() };
        assert_eq!(ServiceRouter::from_config(&no_url, None, &m).await.unwrap_err(), ExitSetupError::MissingUpstream);

        // A dead upstream does not stop the start.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let eth = ExitSection {
            rpc_url: Some(format!("http://127.0.0.1:{port}")),
            raw_broadcast: true,
            rpc_call: true,
            upstream_timeout_ms: 2_000,
            ..ExitSection::default()
        };
        let r = ServiceRouter::from_config(&eth, Some(1), &m).await.unwrap();
        assert_eq!(r.kinds(), vec![RequestKind::Echo, RequestKind::RawBroadcast, RequestKind::RpcCall]);

        let bad_method = ExitSection { rpc_methods: vec!["eth_sendTransaction".into()], ..eth };
        let e = ServiceRouter::from_config(&bad_method, None, &m).await.unwrap_err();
        assert!(matches!(&e, ExitSetupError::Method(u) if u.0 == "eth_sendTransaction"), "{e}");
    }
}
