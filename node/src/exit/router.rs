//! [`ServiceRouter`]: which service serves which request kind.
//!
//! An exit's services are registered here by kind at start-up (`NodeOptions`
//! carries the router); a request of a kind no service was registered for is
//! answered with `ReplyStatus::Unsupported` by the exit stage, without
//! reaching any service.

use std::collections::BTreeMap;
use std::sync::Arc;

use nox_protocol::payload::RequestKind;

use super::echo::EchoService;
use super::service::ExitService;

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
}
