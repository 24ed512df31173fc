//! `Http`: an HTTP request made by the exit on the client's behalf, so the
//! server learns what was asked but not who asked — and, through the guard of
//! [`super::ssrf`], never reaches anything behind the exit.
//!
//! [`HttpService`] owns the request from the client's method, URL, headers
//! and body to an [`HttpAnswer`]:
//!
//! * **Methods** `GET` and `POST` only; **URLs** `http://` and `https://`
//!   only, with a host. Anything else is `BadRequest`.
//! * **Addresses**: an address literal in the URL is checked by
//!   [`SsrfPolicy::check`]; a host name is resolved once by the HTTP client's
//!   only resolver, [`GuardedResolver`], which refuses the name if any of its
//!   addresses is forbidden and otherwise hands the client exactly the
//!   addresses it checked, so the connection goes to a checked address and no
//!   second lookup can answer differently. Connections are not pooled: every
//!   request, and every redirect hop, resolves and is checked afresh, and no
//!   connection carries two clients' requests. A forbidden address is
//!   `Refused`, counted by its class (`refused_ssrf_private`, …).
//! * **Redirects** are followed by the service, not the client library, up to
//!   `exit.http_max_redirects`, each hop's URL checked as the first was. A
//!   301/302 after a `POST`, and every 303, continue as a `GET` without a
//!   body; a hop to another origin drops `Authorization`, `Cookie` and
//!   `Proxy-Authorization`.
//! * **Headers**: hop-by-hop headers (and any a `Connection` header names),
//!   `Host` and `Content-Length` are dropped from the request — the client
//!   library sets `Host` from the URL and the length from the body. The exit
//!   keeps no cookie jar: a `Cookie` the client sends is the client's, and a
//!   `Set-Cookie` in the answer goes back to the client, never stored here.
//!   No proxy from the environment is used.
//! * **Bounds**: the whole exchange, redirects included, within
//!   `exit.http_timeout_ms` and never past the request's deadline; the answer's
//!   body read chunk by chunk up to `exit.http_max_bytes` (beyond it the
//!   request is refused, `BadRequest`, "answer of N bytes exceeds
//!   exit.http_max_bytes"); its headers bounded by the HTTP client's own
//!   limits. Whether the answer fits the SURBs is the exit stage's check.
//!
//! `exit.http_allow_loopback` lets the guard pass loopback addresses (only
//! loopback, never private ranges): a setting for tests against local servers,
//! which the node warns about at start.
//!
//! Counted as `nox_events_total{kind="exit_http",outcome}`: `request`, `ok`,
//! `bad_request`, `refused_method`, `refused_ssrf_<class>` (one per
//! [`AddressClass`]), `no_address`, `too_many_redirects`, `refused_too_large`,
//! `upstream_failed`, `upstream_timeout`, `timeout`. Nothing about a request
//! (URL, host, address) is logged, and refusal messages name the address
//! class, never the address.
//!
//! ## The answer
//!
//! [`HttpAnswer`] is the data of an `Ok` reply to an `Http` request, in the
//! layout of `docs/protocol.md` §4.5 (big-endian):
//!
//! ```text
//! status u16 ‖ header count u16 ‖ count × (name u32-len ‖ name, value u32-len ‖ value) ‖ body u32-len ‖ body
//! ```
//!
//! Header names are lower-case UTF-8; values are bytes. The encoder and
//! decoder live in `nox_protocol::answer`, which clients decode with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
pub use nox_protocol::answer::{HttpAnswer, HttpAnswerError};
use nox_protocol::payload::Request;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};

use super::capped_body::{BodyError, read_capped};
use super::outcomes::ServiceOutcomes;
use super::service::{ExitService, RequestContext, ServiceError};
use super::ssrf::{AddressClass, GuardedResolver, SsrfError, SsrfPolicy, literal_ip, ssrf_refusal};
use crate::metrics::Metrics;

/// The metrics kind.
pub const KIND: &str = "exit_http";

// ---------------------------------------------------------------------------
// The answer
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------

/// `Http` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// The longest answer body (`exit.http_max_bytes`).
    pub max_bytes: usize,
    /// The whole exchange, redirects included (`exit.http_timeout_ms`).
    pub timeout: Duration,
    /// Redirects followed (`exit.http_max_redirects`).
    pub max_redirects: u32,
    /// Allow loopback addresses (`exit.http_allow_loopback`; tests only).
    pub allow_loopback: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { max_bytes: 1 << 20, timeout: Duration::from_secs(10), max_redirects: 5, allow_loopback: false }
    }
}

/// Why the service did not answer with an [`HttpAnswer`], with the outcome
/// it is counted under.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpRefusal {
    /// A method other than GET and POST.
    #[error("only GET and POST are offered")]
    Method,
    /// Not an absolute http(s) URL with a host.
    #[error("{0}")]
    Url(&'static str),
    /// A header that is not a valid HTTP header.
    #[error("request header {0} is not a valid HTTP header")]
    Header(usize),
    /// A forbidden address, or a host that does not resolve.
    #[error("{0}")]
    Address(SsrfError),
    /// More redirects than `exit.http_max_redirects`.
    #[error("more than {0} redirects (exit.http_max_redirects)")]
    TooManyRedirects(u32),
    /// A body longer than `exit.http_max_bytes`.
    #[error("{}", too_large_message(*.len, *.cap))]
    TooLarge {
        /// Its announced length, when the server said.
        len: Option<u64>,
        /// `exit.http_max_bytes`.
        cap: usize,
    },
    /// The server could not be reached, or the exchange broke.
    #[error("{0}")]
    Failed(&'static str),
    /// `exit.http_timeout_ms` passed.
    #[error("no answer within {0} ms (exit.http_timeout_ms)")]
    TimedOut(u128),
    /// The request's deadline passed first.
    #[error("no answer before the request's deadline")]
    Deadline,
}

fn too_large_message(len: Option<u64>, cap: usize) -> String {
    match len {
        Some(n) => format!("answer of {n} bytes exceeds exit.http_max_bytes ({cap})"),
        None => format!("answer of more than {cap} bytes exceeds exit.http_max_bytes ({cap})"),
    }
}

impl HttpRefusal {
    /// The metrics outcome.
    pub fn outcome(&self) -> &'static str {
        match self {
            HttpRefusal::Method => "refused_method",
            HttpRefusal::Url(_) | HttpRefusal::Header(_) => "bad_request",
            HttpRefusal::Address(SsrfError::Forbidden(class)) => class.refusal_outcome(),
            HttpRefusal::Address(_) => "no_address",
            HttpRefusal::TooManyRedirects(_) => "too_many_redirects",
            HttpRefusal::TooLarge { .. } => "refused_too_large",
            HttpRefusal::Failed(_) => "upstream_failed",
            HttpRefusal::TimedOut(_) => "upstream_timeout",
            HttpRefusal::Deadline => "timeout",
        }
    }
}

impl From<HttpRefusal> for ServiceError {
    fn from(r: HttpRefusal) -> Self {
        match r {
            HttpRefusal::Method | HttpRefusal::Url(_) | HttpRefusal::Header(_) | HttpRefusal::TooLarge { .. } => {
                ServiceError::BadRequest(r.to_string())
            }
            HttpRefusal::Address(SsrfError::Forbidden(_)) => ServiceError::Refused(r.to_string()),
            HttpRefusal::Deadline => ServiceError::Timeout,
            _ => ServiceError::Failed(r.to_string()),
        }
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Request headers dropped besides the hop-by-hop ones: `upgrade`, and `host`
/// and `content-length`, which the client library sets.
const DROPPED_REQUEST_HEADERS: [&str; 3] = ["upgrade", "host", "content-length"];

/// The request's headers as they leave the exit: valid, without hop-by-hop
/// headers, `Host` or `Content-Length`.
pub fn request_headers(headers: &[(String, String)]) -> Result<HeaderMap, HttpRefusal> {
    let mut parsed = Vec::with_capacity(headers.len());
    for (i, (name, value)) in headers.iter().enumerate() {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| HttpRefusal::Header(i))?;
        let value = HeaderValue::from_str(value).map_err(|_| HttpRefusal::Header(i))?;
        parsed.push((name, value));
    }
    // Headers a Connection header names are hop-by-hop too.
    let named: Vec<String> = parsed
        .iter()
        .filter(|(n, _)| *n == header::CONNECTION)
        .filter_map(|(_, v)| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    let mut map = HeaderMap::with_capacity(parsed.len());
    for (name, value) in parsed {
        if HOP_BY_HOP.contains(&name.as_str())
            || DROPPED_REQUEST_HEADERS.contains(&name.as_str())
            || named.iter().any(|n| n == name.as_str())
        {
            continue;
        }
        map.append(name, value);
    }
    Ok(map)
}

fn answer_headers(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .filter(|(n, _)| !HOP_BY_HOP.contains(&n.as_str()) && *n != header::UPGRADE)
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

/// Requires an http(s) URL with a host, and checks an address literal.
fn check_url(url: &Url, policy: &SsrfPolicy) -> Result<(), HttpRefusal> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(HttpRefusal::Url("only http:// and https:// URLs are fetched"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(HttpRefusal::Url("the URL has no host"));
    }
    if let Some(ip) = literal_ip(url) {
        policy.check(ip).map_err(HttpRefusal::Address)?;
    }
    Ok(())
}

fn send_failure(e: &reqwest::Error) -> HttpRefusal {
    match ssrf_refusal(e) {
        Some(refusal) => HttpRefusal::Address(refusal),
        None if e.is_connect() => HttpRefusal::Failed("could not connect to the server"),
        None => HttpRefusal::Failed("the exchange with the server failed"),
    }
}

/// Answers `Http` requests.
pub struct HttpService {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    policy: SsrfPolicy,
    cfg: HttpConfig,
    outcomes: ServiceOutcomes,
}

impl std::fmt::Debug for HttpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpService").field("cfg", &self.inner.cfg).finish_non_exhaustive()
    }
}

/// The HTTP client could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the exit's HTTP client: {0}")]
pub struct HttpSetupError(pub String);

impl HttpService {
    /// A service with `cfg`'s bounds, counting into `metrics`.
    pub fn new(cfg: HttpConfig, metrics: &Metrics) -> Result<Self, HttpSetupError> {
        let policy = SsrfPolicy { allow_loopback: cfg.allow_loopback };
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(GuardedResolver { policy })
            .pool_max_idle_per_host(0)
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|e| HttpSetupError(e.to_string()))?;
        let mut outcomes: Vec<&'static str> = vec![
            "request",
            "ok",
            "bad_request",
            "refused_method",
            "no_address",
            "too_many_redirects",
            "refused_too_large",
            "upstream_failed",
            "upstream_timeout",
            "timeout",
        ];
        outcomes.extend(AddressClass::ALL.iter().filter(|c| **c != AddressClass::Public).map(|c| c.refusal_outcome()));
        let outcomes = ServiceOutcomes::new(metrics, KIND, &outcomes);
        Ok(HttpService { inner: Arc::new(Inner { client, policy, cfg, outcomes }) })
    }

    /// The outcome counters (tests).
    pub fn outcomes(&self) -> &ServiceOutcomes {
        &self.inner.outcomes
    }
}

impl Inner {
    async fn fetch(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        deadline: Instant,
    ) -> Result<HttpAnswer, HttpRefusal> {
        let method = match method {
            "GET" => Method::GET,
            "POST" => Method::POST,
            _ => return Err(HttpRefusal::Method),
        };
        let url = Url::parse(url).map_err(|_| HttpRefusal::Url("not an absolute URL"))?;
        let headers = request_headers(headers)?;
        let left = deadline.saturating_duration_since(Instant::now());
        let (limit, elapsed) = if left < self.cfg.timeout {
            (left, HttpRefusal::Deadline)
        } else {
            (self.cfg.timeout, HttpRefusal::TimedOut(self.cfg.timeout.as_millis()))
        };
        tokio::time::timeout(limit, self.exchange(method, url, headers, body)).await.unwrap_or(Err(elapsed))
    }

    /// The request and its redirects.
    async fn exchange(
        &self,
        mut method: Method,
        mut url: Url,
        mut headers: HeaderMap,
        mut body: Vec<u8>,
    ) -> Result<HttpAnswer, HttpRefusal> {
        let mut redirects = 0;
        loop {
            check_url(&url, &self.policy)?;
            let mut request = self.client.request(method.clone(), url.clone()).headers(headers.clone());
            if method == Method::POST || !body.is_empty() {
                request = request.body(body.clone());
            }
            let response = request.send().await.map_err(|e| send_failure(&e))?;
            let status = response.status();
            let next = status
                .is_redirection()
                .then(|| response.headers().get(header::LOCATION))
                .flatten()
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok());
            let Some(next) = next else {
                let answer_headers = answer_headers(response.headers());
                let body = read_capped(response, self.cfg.max_bytes).await.map_err(|e| match e {
                    BodyError::TooLarge { len, cap } => HttpRefusal::TooLarge { len, cap },
                    BodyError::Transport(_) => HttpRefusal::Failed("the server's answer broke off"),
                })?;
                return Ok(HttpAnswer { status: status.as_u16(), headers: answer_headers, body });
            };
            if redirects == self.cfg.max_redirects {
                return Err(HttpRefusal::TooManyRedirects(self.cfg.max_redirects));
            }
            redirects += 1;
            let to_get = status == StatusCode::SEE_OTHER
                || (method == Method::POST && matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND));
            if to_get {
                method = Method::GET;
                body.clear();
                headers.remove(header::CONTENT_TYPE);
            }
            if next.origin() != url.origin() {
                for h in [header::AUTHORIZATION, header::COOKIE, header::PROXY_AUTHORIZATION] {
                    headers.remove(h);
                }
            }
            url = next;
        }
    }
}

impl ExitService for HttpService {
    fn name(&self) -> &'static str {
        "http"
    }

    fn serve(&self, ctx: RequestContext, request: Request) -> BoxFuture<'static, Result<Vec<u8>, ServiceError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let Request::Http { method, url, headers, body } = request else {
                return Err(ServiceError::Unsupported(request.kind().name()));
            };
            inner.outcomes.inc("request");
            let outcome = inner.fetch(&method, &url, &headers, body, ctx.deadline).await;
            match outcome.and_then(|a| a.encode().map_err(|_| HttpRefusal::Failed("the answer does not encode"))) {
                Ok(data) => {
                    inner.outcomes.inc("ok");
                    Ok(data)
                }
                Err(r) => {
                    inner.outcomes.inc(r.outcome());
                    Err(r.into())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nox_protocol::payload::RequestKind;

    fn ctx() -> RequestContext {
        RequestContext {
            request_id: [0; 16],
            kind: RequestKind::Http,
            reply_budget: 1 << 20,
            deadline: Instant::now() + Duration::from_secs(10),
        }
    }

    fn get(url: &str) -> Request {
        Request::Http { method: "GET".into(), url: url.into(), headers: vec![], body: vec![] }
    }

    #[test]
    fn hop_by_hop_host_and_length_headers_are_dropped() {
        let h = |pairs: &[(&str, &str)]| pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect::<Vec<_>>();
        let map = request_headers(&h(&[
            ("Accept", "text/html"),
            ("Host", "elsewhere.example"),
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "999"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic eA=="),
            ("TE", "trailers"),
            ("Cookie", "a=b"),
            ("X-Custom", "kept"),
        ]))
        .unwrap();
        let mut names: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "cookie", "x-custom"]);
        assert_eq!(request_headers(&h(&[("ok", "1"), ("bad name", "x")])).unwrap_err(), HttpRefusal::Header(1));
        assert_eq!(request_headers(&h(&[("x", "line\nbreak")])).unwrap_err(), HttpRefusal::Header(0));
    }

    #[tokio::test]
    async fn methods_schemes_and_forbidden_addresses_are_refused_before_any_connection() {
        let metrics = Metrics::new();
        let s = HttpService::new(HttpConfig::default(), &metrics).unwrap();
        let put =
            Request::Http { method: "PUT".into(), url: "http://example.org/".into(), headers: vec![], body: vec![] };
        assert!(matches!(s.serve(ctx(), put).await, Err(ServiceError::BadRequest(m)) if m.contains("GET and POST")));
        for url in ["ftp://example.org/", "file:///etc/passwd", "not a url", "data:text/plain,hi"] {
            assert!(matches!(s.serve(ctx(), get(url)).await, Err(ServiceError::BadRequest(_))), "{url}");
        }
        for (url, outcome) in [
            ("http://127.0.0.1:1/", "refused_ssrf_loopback"),
            ("http://2130706433/", "refused_ssrf_loopback"),
            ("http://0x7f.1/", "refused_ssrf_loopback"),
            ("http://[::1]/", "refused_ssrf_loopback"),
            ("http://[::ffff:10.0.0.1]/", "refused_ssrf_private"),
            ("http://192.168.1.1/", "refused_ssrf_private"),
            ("https://169.254.169.254/latest/meta-data/", "refused_ssrf_metadata"),
            ("http://[fd00:ec2::254]/", "refused_ssrf_metadata"),
            ("http://100.64.1.1/", "refused_ssrf_shared"),
            ("http://0.0.0.0:8080/", "refused_ssrf_unspecified"),
            ("http://[64:ff9b::7f00:1]/", "refused_ssrf_loopback"),
            ("http://[2002:a00:1::]/", "refused_ssrf_private"),
            ("http://localhost:1/", "refused_ssrf_loopback"),
        ] {
            let before = s.outcomes().get(outcome);
            let e = s.serve(ctx(), get(url)).await.unwrap_err();
            assert!(matches!(&e, ServiceError::Refused(m) if m.contains("does not connect to")), "{url}: {e}");
            assert!(!e.to_string().contains("127.0.0.1") && !e.to_string().contains("localhost"), "{e}");
            assert_eq!(s.outcomes().get(outcome), before + 1, "{url}");
        }
        assert_eq!(s.outcomes().get("request"), 18);
        let text = metrics.render();
        assert!(text.contains(r#"nox_events_total{kind="exit_http",outcome="refused_ssrf_loopback"} 6"#), "{text}");
    }

    #[tokio::test]
    async fn loopback_allowed_is_loopback_only() {
        let cfg = HttpConfig { allow_loopback: true, ..HttpConfig::default() };
        let s = HttpService::new(cfg, &Metrics::new()).unwrap();
        // Loopback passes the guard (and fails to connect: nothing listens on port 1).
        let e = s.serve(ctx(), get("http://127.0.0.1:1/")).await.unwrap_err();
        assert!(matches!(&e, ServiceError::Failed(m) if m.contains("could not connect")), "{e}");
        for url in ["http://10.0.0.1/", "http://169.254.169.254/", "http://[fd00::1]/"] {
            assert!(matches!(s.serve(ctx(), get(url)).await, Err(ServiceError::Refused(_))), "{url}");
        }
    }
}
