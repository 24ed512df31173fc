//! The exit's guard against server-side request forgery: which addresses the
//! HTTP service may connect to.
//!
//! An exit fetches URLs chosen by anonymous clients. Without a guard, a
//! client could make the exit reach what only the exit can reach: its own
//! loopback services (the admin HTTP listener, an Ethereum node's RPC), its
//! private network, a cloud provider's metadata service (credentials), or
//! addresses that are not meant to be routed at all. This module owns the one
//! rule for every address the HTTP service connects to:
//!
//! * [`classify`] puts an address in an [`AddressClass`]: `Public`, or one of
//!   a fixed set of forbidden classes (loopback, private, shared CGNAT space,
//!   link-local, multicast, unspecified, broadcast, documentation, other
//!   reserved ranges, IPv6 unique-local, cloud metadata). IPv6 forms that
//!   embed an IPv4 address — IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
//!   `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16` — are classified by
//!   the IPv4 address they carry; every IPv6 address outside global unicast
//!   (`2000::/3`) is reserved, and so are the IETF protocol ranges inside it
//!   (`2001::/23`: Teredo, ORCHID, …).
//! * [`SsrfPolicy::check`] refuses every forbidden class; the only exception
//!   is loopback under `exit.http_allow_loopback`, a test-only setting.
//! * [`SsrfPolicy::resolve`] resolves a host name once and refuses it if
//!   **any** of its addresses is forbidden (a name that mixes a public and a
//!   private address is refused, not filtered: a rebinding attack relies on
//!   the one that would be tried). The HTTP service connects only to the
//!   addresses this returned ([`GuardedResolver`] is the HTTP client's only
//!   resolver, so there is no second lookup that could answer differently),
//!   and an address literal in a URL — in whatever form the URL parser
//!   normalises, such as `http://2130706433/` or `http://0x7f.1/` — goes
//!   through [`SsrfPolicy::check`] before any connection.
//!
//! What it does not do: restrict ports, or look inside what a public address
//! forwards to. An exit operator who runs services on public addresses they
//! do not want reached must firewall them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Where an address points, as far as the exit is concerned. Every class but
/// [`AddressClass::Public`] is refused (loopback only unless allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// Globally routable.
    Public,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`) and IPv6 site-local `fec0::/10`.
    Private,
    /// Carrier-grade NAT shared space `100.64.0.0/10`.
    SharedCgnat,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `0.0.0.0`, `::`.
    Unspecified,
    /// `255.255.255.255`.
    Broadcast,
    /// TEST-NET-1/2/3 (`192.0.2/24`, `198.51.100/24`, `203.0.113/24`),
    /// `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// Other special-purpose space: `0/8`, `192.0.0/24`, `192.88.99/24`,
    /// `198.18/15`, `240/4`; IPv6 outside `2000::/3`, `2001::/23`,
    /// `5f00::/16`, `64:ff9b:1::/48`.
    Reserved,
    /// IPv6 unique-local `fc00::/7`.
    UniqueLocal,
    /// A cloud metadata service: `169.254.169.254`, `fd00:ec2::254`,
    /// `100.100.100.200`, `168.63.129.16`.
    Metadata,
}

impl AddressClass {
    /// Every class, `Public` first.
    pub const ALL: [AddressClass; 12] = [
        AddressClass::Public,
        AddressClass::Loopback,
        AddressClass::Private,
        AddressClass::SharedCgnat,
        AddressClass::LinkLocal,
        AddressClass::Multicast,
        AddressClass::Unspecified,
        AddressClass::Broadcast,
        AddressClass::Documentation,
        AddressClass::Reserved,
        AddressClass::UniqueLocal,
        AddressClass::Metadata,
    ];

    /// The class's name, for messages.
    pub const fn name(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::SharedCgnat => "shared (CGNAT)",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Multicast => "multicast",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Documentation => "documentation",
            AddressClass::Reserved => "reserved",
            AddressClass::UniqueLocal => "unique-local",
            AddressClass::Metadata => "cloud metadata",
        }
    }

    /// The metrics outcome of a refusal for this class
    /// (`nox_events_total{kind="exit_http",outcome=…}`): a fixed set.
    pub const fn refusal_outcome(self) -> &'static str {
        match self {
            AddressClass::Public => "refused_ssrf_public",
            AddressClass::Loopback => "refused_ssrf_loopback",
            AddressClass::Private => "refused_ssrf_private",
            AddressClass::SharedCgnat => "refused_ssrf_shared",
            AddressClass::LinkLocal => "refused_ssrf_link_local",
            AddressClass::Multicast => "refused_ssrf_multicast",
            AddressClass::Unspecified => "refused_ssrf_unspecified",
            AddressClass::Broadcast => "refused_ssrf_broadcast",
            AddressClass::Documentation => "refused_ssrf_documentation",
            AddressClass::Reserved => "refused_ssrf_reserved",
            AddressClass::UniqueLocal => "refused_ssrf_unique_local",
            AddressClass::Metadata => "refused_ssrf_metadata",
        }
    }
}

/// The class of `ip`.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

/// The IPv4 class of `ip`.
pub fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    const METADATA: [[u8; 4]; 3] = [[169, 254, 169, 254], [100, 100, 100, 200], [168, 63, 129, 16]];
    if METADATA.contains(&ip.octets()) {
        return AddressClass::Metadata;
    }
    let ranges: [([u8; 4], u32, AddressClass); 16] = [
        ([0, 0, 0, 0], 32, AddressClass::Unspecified),
        ([0, 0, 0, 0], 8, AddressClass::Reserved),
        ([127, 0, 0, 0], 8, AddressClass::Loopback),
        ([10, 0, 0, 0], 8, AddressClass::Private),
        ([172, 16, 0, 0], 12, AddressClass::Private),
        ([192, 168, 0, 0], 16, AddressClass::Private),
        ([100, 64, 0, 0], 10, AddressClass::SharedCgnat),
        ([169, 254, 0, 0], 16, AddressClass::LinkLocal),
        ([224, 0, 0, 0], 4, AddressClass::Multicast),
        ([255, 255, 255, 255], 32, AddressClass::Broadcast),
        ([192, 0, 2, 0], 24, AddressClass::Documentation),
        ([198, 51, 100, 0], 24, AddressClass::Documentation),
        ([203, 0, 113, 0], 24, AddressClass::Documentation),
        ([192, 0, 0, 0], 24, AddressClass::Reserved),
        ([198, 18, 0, 0], 15, AddressClass::Reserved),
        ([192, 88, 99, 0], 24, AddressClass::Reserved),
    ];
    if let Some((_, _, class)) = ranges.iter().find(|(net, prefix, _)| in_v4(ip, *net, *prefix)) {
        return *class;
    }
    // 240/4 after the broadcast address, which it contains.
    if in_v4(ip, [240, 0, 0, 0], 4) {
        return AddressClass::Reserved;
    }
    AddressClass::Public
}

/// The IPv6 class of `ip`; an embedded IPv4 address decides for the forms
/// that carry one.
pub fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if ip == Ipv6Addr::UNSPECIFIED {
        return AddressClass::Unspecified;
    }
    if ip == Ipv6Addr::LOCALHOST {
        return AddressClass::Loopback;
    }
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        return AddressClass::Metadata;
    }
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    let ranges: [([u16; 8], u32, AddressClass); 9] = [
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, AddressClass::LinkLocal),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, AddressClass::Private),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, AddressClass::UniqueLocal),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, AddressClass::Multicast),
        ([0x2001, 0x0db8, 0, 0, 0, 0, 0, 0], 32, AddressClass::Documentation),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, AddressClass::Documentation),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, AddressClass::Reserved),
        ([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, AddressClass::Reserved),
        ([0x0064, 0xff9b, 0x0001, 0, 0, 0, 0, 0], 48, AddressClass::Reserved),
    ];
    if let Some((_, _, class)) = ranges.iter().find(|(net, prefix, _)| in_v6(ip, *net, *prefix)) {
        return *class;
    }
    // Only 2000::/3 is allocated for global unicast.
    if !in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
        return AddressClass::Reserved;
    }
    AddressClass::Public
}

/// The IPv4 address an IPv6 address carries: IPv4-mapped (`::ffff:0:0/96`),
/// IPv4-compatible (`::/96`), NAT64 (`64:ff9b::/96`), 6to4 (`2002::/16`,
/// bits 16–47).
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low = Ipv4Addr::from(bits as u32);
    if in_v6(ip, [0, 0, 0, 0, 0, 0xffff, 0, 0], 96)
        || in_v6(ip, [0, 0, 0, 0, 0, 0, 0, 0], 96)
        || in_v6(ip, [0x0064, 0xff9b, 0, 0, 0, 0, 0, 0], 96)
    {
        return Some(low);
    }
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

/// Why an address or a host is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    /// An address of a forbidden class.
    #[error("the exit does not connect to {} addresses", .0.name())]
    Forbidden(AddressClass),
    /// The host name has no address.
    #[error("the host name does not resolve")]
    NoAddress,
    /// The lookup failed.
    #[error("the host name could not be resolved")]
    Lookup,
}

/// Which addresses the HTTP service may connect to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SsrfPolicy {
    /// Allow loopback addresses (`exit.http_allow_loopback`; tests only).
    pub allow_loopback: bool,
}

impl SsrfPolicy {
    /// The policy of a production exit: public addresses only.
    pub const STRICT: SsrfPolicy = SsrfPolicy { allow_loopback: false };

    /// Refuses `ip` unless it is public (or loopback, when allowed).
    pub fn check(&self, ip: IpAddr) -> Result<(), SsrfError> {
        match classify(ip) {
            AddressClass::Public => Ok(()),
            AddressClass::Loopback if self.allow_loopback => Ok(()),
            class => Err(SsrfError::Forbidden(class)),
        }
    }

    /// Resolves `host` (a name, not an address literal) and returns its
    /// addresses, with port 0, if every one of them passes
    /// [`SsrfPolicy::check`]; the first that does not refuses the whole name.
    pub async fn resolve(&self, host: &str) -> Result<Vec<SocketAddr>, SsrfError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await.map_err(|_| SsrfError::Lookup)?.collect();
        if addrs.is_empty() {
            return Err(SsrfError::NoAddress);
        }
        for a in &addrs {
            self.check(a.ip())?;
        }
        Ok(addrs)
    }
}

/// The HTTP client's resolver: [`SsrfPolicy::resolve`], so the client
/// connects only to addresses that were checked, from the one lookup that
/// checked them. A refusal reaches the caller as an [`SsrfError`] in the
/// client error's source chain ([`ssrf_refusal`] finds it).
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    /// The policy every resolved address must pass.
    pub policy: SsrfPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = policy.resolve(&host).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The address a URL names literally (`http://192.0.2.1/`, `http://[::1]/`,
/// or a shortcut form such as `http://2130706433/` that the URL parser has
/// normalised to dotted form); `None` for a host name.
pub fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    bare.parse().ok()
}

/// The [`SsrfError`] somewhere in `e`'s source chain, if any.
pub fn ssrf_refusal(e: &(dyn std::error::Error + 'static)) -> Option<SsrfError> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(s) = err.downcast_ref::<SsrfError>() {
            return Some(s.clone());
        }
        next = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressClass::*;

    fn v4(s: &str) -> AddressClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn ipv4_classes() {
        for (addr, class) in [
            ("8.8.8.8", Public),
            ("1.1.1.1", Public),
            ("93.184.216.34", Public),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Reserved),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.0.0.1", Private),
            ("10.255.255.255", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("172.32.0.1", Public),
            ("172.15.255.255", Public),
            ("192.168.1.1", Private),
            ("100.64.0.1", SharedCgnat),
            ("100.127.255.255", SharedCgnat),
            ("100.128.0.1", Public),
            ("169.254.1.1", LinkLocal),
            ("169.254.169.254", Metadata),
            ("100.100.100.200", Metadata),
            ("168.63.129.16", Metadata),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("255.255.255.255", Broadcast),
            ("240.0.0.1", Reserved),
            ("250.1.2.3", Reserved),
            ("192.0.0.8", Reserved),
            ("192.0.2.1", Documentation),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
            ("198.18.0.1", Reserved),
            ("198.19.255.255", Reserved),
            ("198.20.0.1", Public),
            ("192.88.99.1", Reserved),
        ] {
            assert_eq!(v4(addr), class, "{addr}");
        }
    }

    #[test]
    fn ipv6_classes() {
        for (addr, class) in [
            ("2606:4700:4700::1111", Public),
            ("2a00:1450:4001:80b::200e", Public),
            ("::", Unspecified),
            ("::1", Loopback),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fec0::1", Private),
            ("fc00::1", UniqueLocal),
            ("fd12:3456::1", UniqueLocal),
            ("fd00:ec2::254", Metadata),
            ("ff02::1", Multicast),
            ("ff0e::1", Multicast),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("2001::1", Reserved),
            ("2001:10::1", Reserved),
            ("2001:200::1", Public),
            ("5f00::1", Reserved),
            ("100::1", Reserved),
            ("4000::1", Reserved),
            ("64:ff9b:1::1", Reserved),
        ] {
            assert_eq!(v4(addr), class, "{addr}");
        }
    }

    #[test]
    fn ipv6_forms_with_an_embedded_ipv4_are_classified_by_it() {
        for (addr, class) in [
            // IPv4-mapped
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:10.1.2.3", Private),
            ("::ffff:169.254.169.254", Metadata),
            ("::ffff:8.8.8.8", Public),
            // IPv4-compatible
            ("::127.0.0.1", Loopback),
            ("::192.168.0.1", Private),
            ("::8.8.8.8", Public),
            // NAT64
            ("64:ff9b::127.0.0.1", Loopback),
            ("64:ff9b::a9fe:a9fe", Metadata),
            ("64:ff9b::8.8.8.8", Public),
            // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD
            ("2002:7f00:1::1", Loopback),
            ("2002:c0a8:101::1", Private),
            ("2002:a9fe:a9fe::", Metadata),
            ("2002:808:808::1", Public),
        ] {
            assert_eq!(v4(addr), class, "{addr}");
        }
        assert_eq!(embedded_v4("2002:c0a8:0101::".parse().unwrap()), Some(Ipv4Addr::new(192, 168, 1, 1)));
        assert_eq!(embedded_v4("2606:4700::1".parse().unwrap()), None);
    }

    #[test]
    fn the_policy_refuses_everything_but_public_and_allowed_loopback() {
        for class in AddressClass::ALL {
            assert!(!class.name().is_empty() && class.refusal_outcome().starts_with("refused_ssrf_"));
        }
        let strict = SsrfPolicy::STRICT;
        let loopback = SsrfPolicy { allow_loopback: true };
        assert_eq!(strict.check("8.8.8.8".parse().unwrap()), Ok(()));
        assert_eq!(strict.check("127.0.0.1".parse().unwrap()), Err(SsrfError::Forbidden(Loopback)));
        assert_eq!(strict.check("::1".parse().unwrap()), Err(SsrfError::Forbidden(Loopback)));
        assert_eq!(loopback.check("127.0.0.1".parse().unwrap()), Ok(()));
        assert_eq!(loopback.check("::1".parse().unwrap()), Ok(()));
        assert_eq!(loopback.check("::ffff:127.0.0.1".parse().unwrap()), Ok(()));
        // Loopback only: private ranges stay refused.
        for addr in ["10.0.0.1", "192.168.1.1", "169.254.169.254", "fd00::1", "0.0.0.0", "100.64.0.1"] {
            assert!(matches!(loopback.check(addr.parse().unwrap()), Err(SsrfError::Forbidden(_))), "{addr}");
        }
    }

    #[test]
    fn literal_urls_in_shortcut_forms_normalise_to_the_address_checked() {
        for url in [
            "http://2130706433/",
            "http://0x7f000001/",
            "http://017700000001/",
            "http://127.1/",
            "http://0x7f.0.0.1/",
            "http://[::ffff:7f00:1]/",
            "http://[::ffff:127.0.0.1]:8080/",
        ] {
            let ip = literal_ip(&reqwest::Url::parse(url).unwrap()).unwrap_or_else(|| panic!("{url}"));
            assert_eq!(SsrfPolicy::STRICT.check(ip), Err(SsrfError::Forbidden(Loopback)), "{url}");
        }
        let metadata = literal_ip(&reqwest::Url::parse("http://2852039166/").unwrap()).unwrap();
        assert_eq!(classify(metadata), Metadata);
        assert_eq!(literal_ip(&reqwest::Url::parse("http://example.org/").unwrap()), None);
    }

    #[tokio::test]
    async fn a_name_is_refused_when_it_resolves_to_a_forbidden_address() {
        let e = SsrfPolicy::STRICT.resolve("localhost").await.unwrap_err();
        assert_eq!(e, SsrfError::Forbidden(Loopback));
        let addrs = SsrfPolicy { allow_loopback: true }.resolve("localhost").await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 0), "{addrs:?}");
        assert!(SsrfPolicy::STRICT.resolve("no-such-host.invalid").await.is_err());
    }

    #[test]
    fn a_refusal_is_found_in_an_error_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] SsrfError);
        let e = Outer(SsrfError::Forbidden(Metadata));
        assert_eq!(ssrf_refusal(&e), Some(SsrfError::Forbidden(Metadata)));
        assert_eq!(ssrf_refusal(&std::io::Error::other("x")), None);
    }
}
