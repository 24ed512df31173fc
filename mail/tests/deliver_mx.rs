//! MX resolution against a real name server: dnsmasq on loopback, serving
//! a made-up `.test` zone of MX, A and AAAA records, answering NXDOMAIN for
//! every other name in it. And the step after: delivering to the host the
//! lookup found.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nox_mail::deliver::{
    MailHost, MxResolver, RcptOutcome, ResolveError, SmtpClientConfig, SmtpTarget, TlsMode, domain_of, send_mail,
};
use nox_mail::smtp::{Envelope, QueueId, SmtpConfig, SmtpServer, Spool, SpoolFuture};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

const DNSMASQ: &str = "/usr/sbin/dnsmasq";
const TIMEOUT: Duration = Duration::from_secs(2);

/// A running dnsmasq with the test zone, killed when dropped.
struct NameServer {
    addr: SocketAddr,
    _child: Child,
}

impl NameServer {
    /// Starts dnsmasq, or `None` where it is missing outside CI.
    async fn start() -> Option<NameServer> {
        if !support::tool_available("dnsmasq (Debian: dnsmasq-base)", Path::new(DNSMASQ).exists()) {
            return None;
        }
        let port = support::free_port();
        let records = [
            // Three preferences, listed out of order.
            "--mx-host=pref.test,mx-b.pref.test,20",
            "--mx-host=pref.test,mx-a.pref.test,10",
            "--mx-host=pref.test,mx-c.pref.test,30",
            "--host-record=mx-a.pref.test,192.0.2.1,2001:db8::1",
            "--host-record=mx-b.pref.test,192.0.2.2",
            "--host-record=mx-c.pref.test,2001:db8::3",
            // Four hosts of one preference.
            "--mx-host=equal.test,mx1.equal.test,10",
            "--mx-host=equal.test,mx2.equal.test,10",
            "--mx-host=equal.test,mx3.equal.test,10",
            "--mx-host=equal.test,mx4.equal.test,10",
            "--host-record=mx1.equal.test,192.0.2.11",
            "--host-record=mx2.equal.test,192.0.2.12",
            "--host-record=mx3.equal.test,192.0.2.13",
            "--host-record=mx4.equal.test,192.0.2.14",
            // No MX, an address: the implicit MX.
            "--host-record=aonly.test,192.0.2.50",
            // RFC 7505: takes no mail.
            "--mx-host=nullmx.test,.,0",
            // An MX whose host has no address.
            "--mx-host=dangling.test,nowhere.dangling.test,10",
            // One MX that resolves, one that does not.
            "--mx-host=half.test,nowhere.half.test,5",
            "--mx-host=half.test,mx.half.test,10",
            "--host-record=mx.half.test,192.0.2.60",
            // An MX on this machine, for delivery.
            "--mx-host=local.test,mail.local.test,10",
            "--host-record=mail.local.test,127.0.0.1",
        ];
        let child = Command::new(DNSMASQ)
            .args([
                "--no-daemon",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--user=root",
                "--local=/test/",
                "--pid-file=",
            ])
            .arg(format!("--port={port}"))
            .args(records)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // dnsmasq serves TCP on the same port: once it accepts, it answers.
        let started = Instant::now();
        while TcpStream::connect(addr).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "dnsmasq did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(NameServer { addr, _child: child })
    }

    fn resolver(&self) -> MxResolver {
        MxResolver::new(&[self.addr], TIMEOUT).unwrap()
    }
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|ip| ip.parse().unwrap()).collect()
}

#[tokio::test]
async fn test_mx_hosts_in_preference_order_with_their_addresses() {
    let Some(dns) = NameServer::start().await else { return };
    let hosts = dns.resolver().mail_hosts("pref.test").await.unwrap();
    assert_eq!(
        hosts,
        [
            MailHost { name: "mx-a.pref.test".into(), preference: 10, addrs: ips(&["192.0.2.1", "2001:db8::1"]) },
            MailHost { name: "mx-b.pref.test".into(), preference: 20, addrs: ips(&["192.0.2.2"]) },
            MailHost { name: "mx-c.pref.test".into(), preference: 30, addrs: ips(&["2001:db8::3"]) },
        ]
    );
    // Case and a trailing dot do not matter.
    assert_eq!(dns.resolver().mail_hosts("PREF.Test.").await.unwrap(), hosts);
}

#[tokio::test]
async fn test_equal_preferences_come_in_varying_order() {
    let Some(dns) = NameServer::start().await else { return };
    let resolver = dns.resolver();
    let mut firsts = HashSet::new();
    for _ in 0..40 {
        let hosts = resolver.mail_hosts("equal.test").await.unwrap();
        assert_eq!(hosts.len(), 4);
        assert!(hosts.iter().all(|h| h.preference == 10));
        firsts.insert(hosts[0].name.clone());
    }
    // Each of four hosts comes first with probability 1/4: all 40 tries
    // giving the same first host would happen with probability 4^-39.
    assert!(firsts.len() > 1, "{firsts:?}");
}

#[tokio::test]
async fn test_no_mx_means_the_domain_itself() {
    let Some(dns) = NameServer::start().await else { return };
    let hosts = dns.resolver().mail_hosts("aonly.test").await.unwrap();
    assert_eq!(hosts, [MailHost { name: "aonly.test".into(), preference: 0, addrs: ips(&["192.0.2.50"]) }]);
}

#[tokio::test]
async fn test_domains_that_take_no_mail() {
    let Some(dns) = NameServer::start().await else { return };
    let resolver = dns.resolver();
    for (domain, why) in [
        ("nullmx.test", "null MX"),
        ("nx.test", "does not exist"),
        ("dangling.test", "no MX host has an address"),
        ("bad..domain", "invalid domain"),
        ("-x.test", "invalid domain"),
    ] {
        let err = resolver.mail_hosts(domain).await.unwrap_err();
        assert!(err.is_permanent(), "{domain}: {err}");
        assert!(matches!(&err, ResolveError::NoMailHost(t) if t.contains(why)), "{domain}: {err}");
        assert!(!err.to_string().contains(domain), "the error names the domain: {err}");
    }
}

#[tokio::test]
async fn test_mx_without_address_is_skipped() {
    let Some(dns) = NameServer::start().await else { return };
    let hosts = dns.resolver().mail_hosts("half.test").await.unwrap();
    assert_eq!(hosts, [MailHost { name: "mx.half.test".into(), preference: 10, addrs: ips(&["192.0.2.60"]) }]);
}

#[tokio::test]
async fn test_dead_name_server_is_transient_within_the_timeout() {
    // A UDP and TCP port nobody listens on.
    let dead = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let resolver = MxResolver::new(&[dead], Duration::from_secs(1)).unwrap();
    let started = Instant::now();
    let err = resolver.mail_hosts("example.test").await.unwrap_err();
    assert!(matches!(err, ResolveError::Transient(_)), "{err}");
    assert!(!err.is_permanent());
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    // A server that takes the query and never answers: the timeout.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let resolver = MxResolver::new(&[silent.local_addr().unwrap()], Duration::from_secs(1)).unwrap();
    let started = Instant::now();
    let err = resolver.mail_hosts("example.test").await.unwrap_err();
    assert!(matches!(err, ResolveError::Transient(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn test_domain_literal_needs_no_lookup() {
    // The name server is dead: a literal must not ask it.
    let dead = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let resolver = MxResolver::new(&[dead], TIMEOUT).unwrap();
    assert_eq!(
        resolver.mail_hosts("[192.0.2.7]").await.unwrap(),
        [MailHost { name: "192.0.2.7".into(), preference: 0, addrs: ips(&["192.0.2.7"]) }]
    );
    assert_eq!(
        resolver.mail_hosts("[IPv6:2001:db8::7]").await.unwrap(),
        [MailHost { name: "2001:db8::7".into(), preference: 0, addrs: ips(&["2001:db8::7"]) }]
    );
    assert!(resolver.mail_hosts("[999.0.0.1]").await.unwrap_err().is_permanent());
}

#[tokio::test]
async fn test_system_configuration() {
    if !Path::new("/etc/resolv.conf").exists() {
        eprintln!("SKIP: no /etc/resolv.conf on this machine");
        return;
    }
    MxResolver::new(&[], TIMEOUT).unwrap();
}

#[derive(Default)]
struct MemorySpool {
    messages: Mutex<Vec<Envelope>>,
}

impl Spool for MemorySpool {
    fn accept(&self, envelope: Envelope) -> SpoolFuture<'_> {
        Box::pin(async move {
            self.messages.lock().unwrap().push(envelope);
            Ok(QueueId("Q".into()))
        })
    }
}

#[tokio::test]
async fn test_lookup_then_delivery() {
    let Some(dns) = NameServer::start().await else { return };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let spool = Arc::new(MemorySpool::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(SmtpServer::new(SmtpConfig::default(), spool.clone()).serve(listener, async {
        let _ = stopped.await;
    }));

    let recipient = "someone@Local.Test".to_string();
    let domain = domain_of(&recipient).unwrap();
    let hosts = dns.resolver().mail_hosts(domain).await.unwrap();
    assert_eq!(hosts[0].name, "mail.local.test");
    let target = SmtpTarget { addr: SocketAddr::new(hosts[0].addrs[0], port), name: hosts[0].name.clone() };
    let cfg = SmtpClientConfig { tls: TlsMode::Opportunistic, ..SmtpClientConfig::default() };
    let data = b"From: a@nox.test\r\nSubject: via MX\r\n\r\nhello\r\n".to_vec();
    let outcomes = send_mail(&cfg, &target, "a@nox.test", std::slice::from_ref(&recipient), &data).await.unwrap();
    assert_eq!(outcomes, [RcptOutcome::Delivered]);
    assert_eq!(spool.messages.lock().unwrap()[0].data, data);
    let _ = stop.send(());
    serving.await.unwrap();
}
