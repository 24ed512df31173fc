//! Connection caps: a total, and per source network (IPv4 /24, IPv6 /48).
//!
//! One operator with one address block must not be able to fill a node's
//! connection table. Inbound connections over either cap are denied before any
//! protocol runs on them; outbound connections (this node dialling a next hop)
//! count towards the total but are never refused.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::multiaddr::Protocol;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    dummy,
};
use libp2p::{Multiaddr, PeerId};
use prometheus_client::metrics::counter::Counter;

/// Why an inbound connection was refused.
#[derive(Debug, thiserror::Error)]
pub enum LimitExceeded {
    /// The node holds its maximum number of connections.
    #[error("connection limit {0} reached")]
    Total(u32),
    /// The remote's subnet holds its maximum number of connections.
    #[error("per-subnet connection limit {0} reached")]
    Subnet(u32),
}

/// A network key: the /24 of an IPv4 address or the /48 of an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subnet {
    /// First three octets.
    V4([u8; 3]),
    /// First six octets.
    V6([u8; 6]),
}

impl Subnet {
    /// The subnet of the first IP component of `addr`, if it has one.
    pub fn of(addr: &Multiaddr) -> Option<Subnet> {
        addr.iter().find_map(|p| match p {
            Protocol::Ip4(ip) => Some(Subnet::of_ip(IpAddr::V4(ip))),
            Protocol::Ip6(ip) => Some(Subnet::of_ip(IpAddr::V6(ip))),
            _ => None,
        })
    }

    /// The subnet of an IP address.
    pub fn of_ip(ip: IpAddr) -> Subnet {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                Subnet::V4([o[0], o[1], o[2]])
            }
            IpAddr::V6(v6) => {
                let o = v6.octets();
                Subnet::V6([o[0], o[1], o[2], o[3], o[4], o[5]])
            }
        }
    }
}

/// Counters the caps bump when they refuse a connection, one per cap.
#[derive(Debug, Clone, Default)]
pub struct DeniedCounters {
    /// Refused because the node holds `max_connections` connections.
    pub total: Counter,
    /// Refused because the remote's /24 (/48) holds `max_connections_per_subnet`.
    pub subnet: Counter,
}

/// The behaviour enforcing the caps (no protocol of its own).
#[derive(Debug)]
pub struct ConnectionCaps {
    max_total: u32,
    max_per_subnet: u32,
    established: HashMap<ConnectionId, Option<Subnet>>,
    per_subnet: HashMap<Subnet, u32>,
    denied: DeniedCounters,
}

impl ConnectionCaps {
    /// Caps of `max_total` connections and `max_per_subnet` inbound ones per
    /// subnet; refusals are counted in `denied`.
    pub fn new(max_total: u32, max_per_subnet: u32, denied: DeniedCounters) -> Self {
        ConnectionCaps { max_total, max_per_subnet, established: HashMap::new(), per_subnet: HashMap::new(), denied }
    }

    /// Connections refused so far (both caps).
    pub fn denied(&self) -> u64 {
        self.denied.total.get() + self.denied.subnet.get()
    }

    fn check(&mut self, remote: &Multiaddr) -> Result<(), ConnectionDenied> {
        if self.established.len() as u64 >= u64::from(self.max_total) {
            self.denied.total.inc();
            return Err(ConnectionDenied::new(LimitExceeded::Total(self.max_total)));
        }
        if let Some(net) = Subnet::of(remote)
            && self.per_subnet.get(&net).copied().unwrap_or(0) >= self.max_per_subnet
        {
            self.denied.subnet.inc();
            return Err(ConnectionDenied::new(LimitExceeded::Subnet(self.max_per_subnet)));
        }
        Ok(())
    }
}

impl NetworkBehaviour for ConnectionCaps {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        _id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.check(remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        // Re-check: several connections from one subnet may have been pending at once.
        self.check(remote)?;
        let net = Subnet::of(remote);
        if let Some(n) = net {
            *self.per_subnet.entry(n).or_insert(0) += 1;
        }
        self.established.insert(id, net);
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.established.insert(id, None);
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        if let FromSwarm::ConnectionClosed(c) = event
            && let Some(Some(net)) = self.established.remove(&c.connection_id)
            && let Some(n) = self.per_subnet.get_mut(&net)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_subnet.remove(&net);
            }
        }
    }

    fn on_connection_handler_event(&mut self, _peer: PeerId, _id: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_group_by_24_and_48() {
        let a: Multiaddr = "/ip4/10.1.2.3/tcp/1".parse().unwrap();
        let b: Multiaddr = "/ip4/10.1.2.200/tcp/9".parse().unwrap();
        let c: Multiaddr = "/ip4/10.1.3.3/tcp/1".parse().unwrap();
        assert_eq!(Subnet::of(&a), Subnet::of(&b));
        assert_ne!(Subnet::of(&a), Subnet::of(&c));
        let d: Multiaddr = "/ip6/2001:db8:1::1/tcp/1".parse().unwrap();
        let e: Multiaddr = "/ip6/2001:db8:1:ffff::1/tcp/1".parse().unwrap();
        assert_eq!(Subnet::of(&d), Subnet::of(&e));
    }

    #[test]
    fn inbound_over_the_subnet_cap_is_denied_and_freed_on_close() {
        let mut caps = ConnectionCaps::new(100, 2, DeniedCounters::default());
        let remote: Multiaddr = "/ip4/192.0.2.7/tcp/4000".parse().unwrap();
        let local: Multiaddr = "/ip4/127.0.0.1/tcp/9000".parse().unwrap();
        let ids: Vec<ConnectionId> = (0..3).map(|_| ConnectionId::new_unchecked(rand::random())).collect();
        let peer = PeerId::random();
        assert!(caps.handle_established_inbound_connection(ids[0], peer, &local, &remote).is_ok());
        assert!(caps.handle_established_inbound_connection(ids[1], peer, &local, &remote).is_ok());
        assert!(caps.handle_pending_inbound_connection(ids[2], &local, &remote).is_err());
        let other: Multiaddr = "/ip4/198.51.100.1/tcp/1".parse().unwrap();
        assert!(caps.handle_pending_inbound_connection(ids[2], &local, &other).is_ok());
        assert_eq!((caps.denied.subnet.get(), caps.denied.total.get()), (1, 0));
    }

    #[test]
    fn total_cap_counts_outbound_connections() {
        let mut caps = ConnectionCaps::new(1, 10, DeniedCounters::default());
        let addr: Multiaddr = "/ip4/192.0.2.7/tcp/4000".parse().unwrap();
        let id = ConnectionId::new_unchecked(1);
        assert!(
            caps.handle_established_outbound_connection(id, PeerId::random(), &addr, Endpoint::Dialer, PortUse::New)
                .is_ok()
        );
        assert!(caps.handle_pending_inbound_connection(ConnectionId::new_unchecked(2), &addr, &addr).is_err());
        assert_eq!((caps.denied.total.get(), caps.denied.subnet.get()), (1, 0));
        assert_eq!(caps.denied(), 1);
    }
}
