//! Where mail for a domain goes (RFC 5321 §5.1): its MX records in order of
//! preference, each host with its addresses; the domain itself when it has
//! no MX; nowhere when it publishes a null MX (RFC 7505) or does not exist.
//!
//! Lookups go to the configured name servers (or the system's), over UDP
//! with TCP for truncated answers, by hickory-resolver. Everything kept is
//! bounded: at most [`MAX_MX_HOSTS`] hosts with at most
//! [`MAX_ADDRS_PER_FAMILY`] addresses of each family.
//!
//! Errors never carry the domain (it is the recipient's): the caller knows
//! which domain it asked about.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::RData;
use rand::seq::SliceRandom;
use rand::{CryptoRng, RngCore};
use tokio::task::JoinSet;
use tracing::debug;

/// The most MX hosts returned (RFC 5321 §5.1 asks senders to try several;
/// Postfix tries 5 addresses by default).
pub const MAX_MX_HOSTS: usize = 10;
/// The most addresses of each family (IPv4, IPv6) kept per host.
pub const MAX_ADDRS_PER_FAMILY: usize = 8;
/// The longest domain name, without the root dot (RFC 1035 §2.3.4: 255
/// octets on the wire).
const MAX_DOMAIN: usize = 253;
/// The longest label (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;

/// A mail exchanger for a domain: try them in the order given, and each
/// host's addresses in order (IPv4 first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailHost {
    /// The host's name, lowercase, without the root dot: the TLS server
    /// name to use. For a domain literal, the address as text.
    pub name: String,
    /// The MX preference (lower first); 0 for an implicit MX or a literal.
    pub preference: u16,
    /// The host's addresses; never empty.
    pub addrs: Vec<IpAddr>,
}

/// Why no mail host came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Try again later: the name server failed (`SERVFAIL`, `REFUSED`), did
    /// not answer in time, or could not be reached.
    #[error("DNS lookup failed, try later: {0}")]
    Transient(String),
    /// The domain takes no mail: it does not exist (`NXDOMAIN`), publishes a
    /// null MX, has neither MX nor address, or is not a valid domain.
    #[error("no mail host: {0}")]
    NoMailHost(String),
}

impl ResolveError {
    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, ResolveError::NoMailHost(_))
    }
}

/// Why an [`MxResolver`] could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ResolverSetupError {
    /// The system's resolver configuration (`/etc/resolv.conf`) could not
    /// be read.
    #[error("cannot read the system's DNS configuration: {0}")]
    SystemConfig(String),
    /// The resolver refused the configuration.
    #[error("cannot set up the DNS resolver: {0}")]
    Build(String),
}

/// Finds the mail hosts of a domain.
#[derive(Clone)]
pub struct MxResolver {
    resolver: TokioResolver,
    timeout: Duration,
}

impl std::fmt::Debug for MxResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MxResolver").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl MxResolver {
    /// A resolver asking `nameservers` (UDP, TCP for truncated answers), or
    /// the system's (`/etc/resolv.conf`) if the slice is empty. `timeout`
    /// bounds each step of [`MxResolver::mail_hosts`] — the MX lookup, then
    /// the hosts' addresses — so an answer or an error comes within twice
    /// that. `/etc/hosts` is never consulted.
    pub fn new(nameservers: &[SocketAddr], timeout: Duration) -> Result<Self, ResolverSetupError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if nameservers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| ResolverSetupError::SystemConfig(e.to_string()))?
        } else {
            let servers = nameservers
                .iter()
                .map(|server| {
                    let mut config = NameServerConfig::udp_and_tcp(server.ip());
                    for connection in &mut config.connections {
                        connection.port = server.port();
                    }
                    config
                })
                .collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let options: &mut ResolverOpts = builder.options_mut();
        // Three tries within the step's bound.
        options.timeout = (timeout / 3).max(Duration::from_millis(200));
        options.attempts = 2;
        options.use_hosts_file = ResolveHosts::Never;
        let resolver = builder.build().map_err(|e| ResolverSetupError::Build(e.to_string()))?;
        Ok(MxResolver { resolver, timeout })
    }

    /// The mail hosts of `domain` (the part of an address after the `@`),
    /// in the order to try them.
    pub async fn mail_hosts(&self, domain: &str) -> Result<Vec<MailHost>, ResolveError> {
        let fqdn = match parse_domain(domain)? {
            MailDomain::Literal(ip) => {
                return Ok(vec![MailHost { name: ip.to_string(), preference: 0, addrs: vec![ip] }]);
            }
            MailDomain::Name(fqdn) => fqdn,
        };
        let mx = tokio::time::timeout(self.timeout, self.resolver.mx_lookup(fqdn.as_str()))
            .await
            .unwrap_or(Err(NetError::Timeout));
        let records: Vec<(u16, String)> = match mx {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::MX(mx) => Some((mx.preference, name_text(&mx.exchange.to_ascii()))),
                    _ => None,
                })
                .collect(),
            Err(e) if e.is_nx_domain() => return Err(ResolveError::NoMailHost("the domain does not exist".into())),
            Err(e) if e.is_no_records_found() => Vec::new(),
            Err(e) => return Err(ResolveError::Transient(describe(&e))),
        };
        if records.is_empty() {
            // RFC 5321 §5.1: no MX, the domain itself is the implicit MX.
            let addrs = self.addresses(fqdn).await?;
            if addrs.is_empty() {
                return Err(ResolveError::NoMailHost("no MX record and no address".into()));
            }
            debug!(hosts = 1, "mail host by implicit MX");
            return Ok(vec![MailHost { name: name_text(domain), preference: 0, addrs }]);
        }
        let ordered = order_mx(records, &mut rand::rngs::OsRng)?;
        let hosts = self.resolve_hosts(ordered).await?;
        debug!(hosts = hosts.len(), "mail hosts by MX");
        Ok(hosts)
    }

    /// Each host's addresses, all looked up at once within the timeout;
    /// hosts without an address are left out.
    async fn resolve_hosts(&self, ordered: Vec<(u16, String)>) -> Result<Vec<MailHost>, ResolveError> {
        let mut lookups = JoinSet::new();
        for (index, (_, name)) in ordered.iter().enumerate() {
            let this = self.clone();
            let fqdn = format!("{name}.");
            lookups.spawn(async move { (index, this.addresses(fqdn).await) });
        }
        let mut found: Vec<Option<Vec<IpAddr>>> = vec![None; ordered.len()];
        let mut failure = None;
        while let Some(joined) = lookups.join_next().await {
            match joined {
                Ok((index, Ok(addrs))) => found[index] = Some(addrs),
                Ok((_, Err(e))) => failure = Some(e),
                Err(_) => failure = Some(ResolveError::Transient("address lookup task failed".into())),
            }
        }
        let hosts: Vec<MailHost> = ordered
            .into_iter()
            .zip(found)
            .filter_map(|((preference, name), addrs)| {
                addrs.filter(|a| !a.is_empty()).map(|addrs| MailHost { name, preference, addrs })
            })
            .collect();
        match (hosts.is_empty(), failure) {
            (false, _) => Ok(hosts),
            (true, Some(failure)) => Err(failure),
            (true, None) => Err(ResolveError::NoMailHost("no MX host has an address".into())),
        }
    }

    /// The A and AAAA records of `fqdn`, both asked at once: IPv4 first.
    /// Empty if the name has neither (or does not exist); an error only if
    /// neither could be asked and one failed for a reason worth retrying.
    async fn addresses(&self, fqdn: String) -> Result<Vec<IpAddr>, ResolveError> {
        let lookups =
            async { tokio::join!(self.resolver.ipv4_lookup(fqdn.as_str()), self.resolver.ipv6_lookup(fqdn.as_str())) };
        let (v4, v6) = tokio::time::timeout(self.timeout, lookups)
            .await
            .map_err(|_| ResolveError::Transient(describe(&NetError::Timeout)))?;
        let mut addrs = Vec::new();
        let mut failure = None;
        for lookup in [v4, v6] {
            match lookup {
                Ok(lookup) => addrs.extend(
                    lookup
                        .answers()
                        .iter()
                        .filter_map(|record| match &record.data {
                            RData::A(a) => Some(IpAddr::V4(a.0)),
                            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                            _ => None,
                        })
                        .take(MAX_ADDRS_PER_FAMILY),
                ),
                Err(e) if e.is_no_records_found() => {}
                Err(e) => failure = Some(ResolveError::Transient(describe(&e))),
            }
        }
        match failure {
            Some(failure) if addrs.is_empty() => Err(failure),
            _ => Ok(addrs),
        }
    }
}

/// What follows the `@`: a name to look up, or an address literal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MailDomain {
    /// Lowercase, with the root dot (so that no search domain is tried).
    Name(String),
    Literal(IpAddr),
}

/// Checks a mail domain (RFC 5321 §4.1.2): a domain literal `[192.0.2.1]`
/// or `[IPv6:2001:db8::1]`, or a host name — at most 253 octets, labels of
/// 1 to 63 letters, digits and hyphens not at either end, a top label not
/// all digits. One trailing dot is allowed.
fn parse_domain(domain: &str) -> Result<MailDomain, ResolveError> {
    let invalid = || ResolveError::NoMailHost("invalid domain".into());
    if let Some(literal) = domain.strip_prefix('[') {
        let literal = literal.strip_suffix(']').ok_or_else(invalid)?;
        let ip = match literal.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
                IpAddr::V6(literal[5..].parse::<Ipv6Addr>().map_err(|_| invalid())?)
            }
            _ => IpAddr::V4(literal.parse::<Ipv4Addr>().map_err(|_| invalid())?),
        };
        return Ok(MailDomain::Literal(ip));
    }
    let name = domain.strip_suffix('.').unwrap_or(domain);
    if name.is_empty() || name.len() > MAX_DOMAIN {
        return Err(invalid());
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= MAX_LABEL
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if !name.split('.').all(label_ok) {
        return Err(invalid());
    }
    if name.rsplit('.').next().is_some_and(|top| top.bytes().all(|b| b.is_ascii_digit())) {
        return Err(invalid());
    }
    Ok(MailDomain::Name(format!("{}.", name.to_ascii_lowercase())))
}

/// A DNS name as [`MailHost::name`] gives it: lowercase, no root dot.
fn name_text(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Orders MX records (preference, host) for delivery: lowest preference
/// first, equal preferences in random order (RFC 5321 §5.1), each host
/// once, at most [`MAX_MX_HOSTS`]. A null MX (RFC 7505: the host is the
/// root, `""` here) means the domain takes no mail; one mixed with real
/// hosts is ignored.
fn order_mx<R: RngCore + CryptoRng>(
    mut records: Vec<(u16, String)>,
    rng: &mut R,
) -> Result<Vec<(u16, String)>, ResolveError> {
    if !records.is_empty() && records.iter().all(|(_, host)| host.is_empty()) {
        return Err(ResolveError::NoMailHost("the domain publishes a null MX: it accepts no mail".into()));
    }
    records.retain(|(_, host)| !host.is_empty());
    records.shuffle(rng);
    // Stable: equal preferences keep their shuffled order.
    records.sort_by_key(|(preference, _)| *preference);
    let mut seen = std::collections::HashSet::new();
    records.retain(|(_, host)| seen.insert(host.clone()));
    records.truncate(MAX_MX_HOSTS);
    Ok(records)
}

/// A DNS failure in words, without the name asked about.
fn describe(error: &NetError) -> String {
    match error {
        NetError::Timeout => "the name server did not answer in time".to_string(),
        NetError::Dns(DnsError::ResponseCode(code)) => format!("the name server answered {code}"),
        NetError::Io(e) => format!("cannot reach the name server: {}", e.kind()),
        NetError::NoConnections => "no name server reachable".to_string(),
        _ => "the DNS lookup failed".to_string(),
    }
}

/// The domain of an address: what follows its last `@`, or `None` if there
/// is no `@` or nothing after it. Compare domains case-insensitively.
pub fn domain_of(address: &str) -> Option<&str> {
    address.rsplit_once('@').map(|(_, domain)| domain).filter(|domain| !domain.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn records(list: &[(u16, &str)]) -> Vec<(u16, String)> {
        list.iter().map(|(p, h)| (*p, h.to_string())).collect()
    }

    #[test]
    fn test_domain_of() {
        assert_eq!(domain_of("user@example.org"), Some("example.org"));
        assert_eq!(domain_of("\"a@b\"@Example.ORG"), Some("Example.ORG"));
        assert_eq!(domain_of("user@[192.0.2.1]"), Some("[192.0.2.1]"));
        assert_eq!(domain_of("user"), None);
        assert_eq!(domain_of("user@"), None);
    }

    #[test]
    fn test_domains_and_literals() {
        assert_eq!(parse_domain("Example.ORG"), Ok(MailDomain::Name("example.org.".into())));
        assert_eq!(parse_domain("example.org."), Ok(MailDomain::Name("example.org.".into())));
        assert_eq!(parse_domain("xn--bcher-kva.example"), Ok(MailDomain::Name("xn--bcher-kva.example.".into())));
        assert_eq!(parse_domain("[192.0.2.1]"), Ok(MailDomain::Literal("192.0.2.1".parse().unwrap())));
        assert_eq!(parse_domain("[IPv6:2001:db8::1]"), Ok(MailDomain::Literal("2001:db8::1".parse().unwrap())));
        assert_eq!(parse_domain("[ipv6:::1]"), Ok(MailDomain::Literal("::1".parse().unwrap())));
        let long_label = format!("{}.example", "a".repeat(64));
        let long_name = format!("{}example", "abcdefghi.".repeat(25));
        for bad in [
            "",
            ".",
            "a..b",
            "-a.example",
            "a-.example",
            "a_b.example",
            "a b.example",
            "bücher.example",
            "192.0.2.1",
            "[192.0.2.1",
            "[300.0.0.1]",
            "[IPv6:192.0.2.1]",
            "[2001:db8::1]",
            "[tag:stuff]",
            &long_label,
            &long_name,
        ] {
            assert_eq!(parse_domain(bad), Err(ResolveError::NoMailHost("invalid domain".into())), "{bad:?}");
        }
    }

    #[test]
    fn test_mx_order_by_preference() {
        let mut rng = StdRng::seed_from_u64(1);
        let got = order_mx(records(&[(20, "b"), (10, "a"), (30, "c"), (10, "a")]), &mut rng).unwrap();
        assert_eq!(got, records(&[(10, "a"), (20, "b"), (30, "c")]));
    }

    #[test]
    fn test_equal_preferences_are_shuffled() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..64 {
            let got = order_mx(records(&[(10, "a"), (10, "b"), (10, "c"), (5, "z")]), &mut rng).unwrap();
            assert_eq!(got[0], (5, "z".to_string()));
            firsts.insert(got[1].1.clone());
        }
        assert_eq!(firsts.len(), 3, "{firsts:?}");
    }

    #[test]
    fn test_null_mx() {
        let mut rng = StdRng::seed_from_u64(1);
        assert!(matches!(order_mx(records(&[(0, "")]), &mut rng), Err(ResolveError::NoMailHost(_))));
        // Mixed with a real host, the null MX is ignored.
        assert_eq!(order_mx(records(&[(0, ""), (10, "a")]), &mut rng).unwrap(), records(&[(10, "a")]));
    }

    #[test]
    fn test_host_count_is_bounded() {
        let mut rng = StdRng::seed_from_u64(1);
        let many: Vec<(u16, String)> = (0..50).map(|i| (i, format!("mx{i}"))).collect();
        assert_eq!(order_mx(many, &mut rng).unwrap().len(), MAX_MX_HOSTS);
    }

    #[test]
    fn test_names_as_given() {
        assert_eq!(name_text("MX1.Example.ORG."), "mx1.example.org");
        assert_eq!(name_text("."), "");
    }

    #[test]
    fn test_setup_needs_no_runtime() {
        assert!(MxResolver::new(&["127.0.0.1:5353".parse().unwrap()], Duration::from_secs(1)).is_ok());
    }
}
