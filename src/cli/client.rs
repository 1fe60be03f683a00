//! A blocking HTTP client for the routes of `docs/api.md` that the command line uses.
//!
//! Each method is one route; "absent" is a normal answer (`Ok(None)`), and every failure is an [`Error`]
//! that says, in one line, whether the server could not be reached or what the server said.

use std::fmt;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use ureq::http::{Response, Uri};
use ureq::{Agent, Body};

/// The server `shale cli` and the one-shot commands talk to when neither `--url` nor `SHALE_URL` is set.
pub const DEFAULT_URL: &str = "http://127.0.0.1:4000";
/// How long to wait for a TCP connection before calling the server unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one whole request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer body read into memory (far above the server's largest value).
const MAX_ANSWER_BYTES: u64 = 1 << 30;
/// Keys asked for per listing page.
const LIST_PAGE: usize = 1000;

/// Characters escaped in a key: everything but RFC 3986 unreserved characters and `/` (a key may hold `/`).
const KEY_CHARS: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');
/// Characters escaped in one path segment (a counter name) or a query value: `/` too.
const SEGMENT_CHARS: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Why a request failed.
#[derive(Debug)]
pub enum Error {
    /// The URL or an argument cannot be sent (a usage error).
    Usage(String),
    /// No answer from the server: refused, unknown host, timed out, connection dropped.
    Unreachable { url: String, reason: String },
    /// The server answered with an error status.
    Server { status: u16, code: Option<String>, message: String },
    /// The server answered something the contract does not allow.
    Protocol(String),
    /// A local read or write failed: the value from stdin, or the answer to stdout.
    Io(std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) | Error::Protocol(m) => f.write_str(m),
            Error::Unreachable { url, reason } => write!(f, "cannot reach the shale server at {url}: {reason}"),
            Error::Server { status, code: Some(code), message } => write!(f, "{message} ({status} {code})"),
            Error::Server { status, code: None, message } => write!(f, "{message} ({status})"),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

/// One page of `GET /kv?prefix=..`.
#[derive(Debug, Deserialize)]
struct KeyPage {
    keys: Vec<String>,
    next: Option<String>,
}

/// The answer of `POST /api` and `GET /api?id=`.
#[derive(Debug, Deserialize)]
pub struct Document {
    /// The document id.
    pub id: u64,
    /// The document; `null` when `GET /api?id=` found none.
    pub data: serde_json::Value,
}

/// The error body of `docs/api.md`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: String,
    message: String,
}

/// A connection setting for one server: base URL, bearer token and an HTTP agent (which keeps connections alive).
pub struct Client {
    agent: Agent,
    /// `http://host:port` plus any path prefix, without a trailing `/`.
    base: String,
    /// The `Authorization` header value, when a token is set.
    auth: Option<String>,
}

impl Client {
    /// A client for `url` (see [`Client::with_ca`]) that trusts the Mozilla roots for `https://`, sending `token`
    /// as a bearer token when given (the first of a comma-separated list, as `AUTH_TOKEN` may hold several).
    ///
    /// # Errors
    /// [`Error::Usage`] for another scheme, or a URL that does not parse.
    pub fn new(url: &str, token: Option<&str>) -> Result<Client, Error> {
        Client::with_ca(url, token, None)
    }

    /// A client for `url` (`http://` or `https://`; a bare `host:port` means `http://`), sending `token` as a
    /// bearer token. For `https://`, the server certificate is checked against the PEM certificates in `ca`
    /// when given (e.g. a self-signed server), else against the Mozilla roots.
    pub fn with_ca(url: &str, token: Option<&str>, ca: Option<&std::path::Path>) -> Result<Client, Error> {
        let url = url.trim();
        let lower = url.to_ascii_lowercase();
        let (scheme, rest) = if lower.starts_with("http://") {
            ("http", &url["http://".len()..])
        } else if lower.starts_with("https://") {
            ("https", &url["https://".len()..])
        } else if url.contains("://") {
            return Err(Error::Usage(format!("{url}: only http:// and https:// URLs are supported")));
        } else {
            ("http", url)
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.starts_with('/') {
            return Err(Error::Usage(format!("{url} names no server; use a URL like {DEFAULT_URL}")));
        }
        let base = format!("{scheme}://{rest}");
        let uri: Uri = base.parse().map_err(|e| Error::Usage(format!("{url} is not a valid URL: {e}")))?;
        if uri.host().is_none_or(str::is_empty) || uri.query().is_some() {
            return Err(Error::Usage(format!("{url} is not a server URL like http://127.0.0.1:4000")));
        }
        let token = token.and_then(|t| t.split(',').map(str::trim).find(|t| !t.is_empty()));
        let mut tls = ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls);
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).map_err(|e| Error::Usage(format!("--ca {}: {e}", ca.display())))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::Usage(format!("--ca {}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(Error::Usage(format!("--ca {}: no PEM certificate in the file", ca.display())));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let agent = Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .max_redirects(0)
            .build()
            .into();
        Ok(Client { agent, base, auth: token.map(|t| format!("Bearer {t}")) })
    }

    /// The base URL, as requests use it.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `host:port` of the server, for a prompt.
    pub fn authority(&self) -> &str {
        let rest = self.base.split_once("://").map_or(self.base.as_str(), |(_, r)| r);
        rest.split('/').next().unwrap_or(rest)
    }

    // ---- key-value ----

    /// `GET /kv/{key}`: the value, or `None` when the key is absent.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let mut resp = self.call(self.agent.get(self.kv_url(key)?))?;
        match resp.status().as_u16() {
            200 => Ok(Some(read_body(&mut resp, &self.base)?)),
            404 => Ok(None),
            _ => Err(self.failure(resp)),
        }
    }

    /// `PUT /kv/{key}`: store `value` (with `content_type`, else the server's default).
    pub fn put(&self, key: &str, value: &[u8], content_type: Option<&str>) -> Result<(), Error> {
        let mut req = self.agent.put(self.kv_url(key)?);
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        let resp = self.send(req, value)?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            _ => Err(self.failure(resp)),
        }
    }

    /// `DELETE /kv/{key}`: `false` when the key was absent.
    pub fn delete(&self, key: &str) -> Result<bool, Error> {
        let resp = self.call(self.agent.delete(self.kv_url(key)?))?;
        match resp.status().as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(self.failure(resp)),
        }
    }

    /// Every key starting with `prefix`, in byte order, handed to `each` one page at a time (so a large listing
    /// is printed as it arrives). Follows `next` until the last page.
    pub fn for_each_key_page(
        &self,
        prefix: Option<&str>,
        mut each: impl FnMut(&[String]) -> std::io::Result<()>,
    ) -> Result<(), Error> {
        let mut after: Option<String> = None;
        loop {
            let mut url = format!("{}/kv?limit={LIST_PAGE}", self.base);
            if let Some(p) = prefix.filter(|p| !p.is_empty()) {
                url.push_str("&prefix=");
                url.extend(utf8_percent_encode(p, SEGMENT_CHARS));
            }
            if let Some(a) = &after {
                url.push_str("&after=");
                url.extend(utf8_percent_encode(a, SEGMENT_CHARS));
            }
            let mut resp = self.call(self.agent.get(&url))?;
            if resp.status().as_u16() != 200 {
                return Err(self.failure(resp));
            }
            let page: KeyPage = read_json(&mut resp, &self.base)?;
            each(&page.keys).map_err(Error::Io)?;
            match page.next {
                None => return Ok(()),
                // A `next` that does not move forward would loop for ever.
                Some(next) if after.as_ref().is_some_and(|a| next <= *a) => {
                    return Err(Error::Protocol(format!("the server's listing did not advance past {next:?}")))
                }
                Some(next) => after = Some(next),
            }
        }
    }

    // ---- counters ----

    /// `POST /counter/{name}` with the decimal `delta`.
    pub fn incr(&self, name: &str, delta: i64) -> Result<(), Error> {
        let url = self.counter_url(name, "")?;
        let resp = self.send(self.agent.post(url).header("Content-Type", "text/plain"), delta.to_string())?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            _ => Err(self.failure(resp)),
        }
    }

    /// `GET /counter/{name}/value`.
    pub fn count(&self, name: &str) -> Result<i64, Error> {
        let mut resp = self.call(self.agent.get(self.counter_url(name, "/value")?))?;
        if resp.status().as_u16() != 200 {
            return Err(self.failure(resp));
        }
        let body = read_body(&mut resp, &self.base)?;
        let text = String::from_utf8_lossy(&body);
        text.trim().parse().map_err(|_| Error::Protocol(format!("the counter value is not a number: {text:?}")))
    }

    // ---- documents ----

    /// `GET /api?id={id}`: the document, or `None` when the server holds none with that id.
    pub fn doc_get(&self, id: u64) -> Result<Option<serde_json::Value>, Error> {
        let mut resp = self.call(self.agent.get(format!("{}/api?id={id}", self.base)))?;
        match resp.status().as_u16() {
            200 => match read_json::<Document>(&mut resp, &self.base)?.data {
                serde_json::Value::Null => Ok(None),
                data => Ok(Some(data)),
            },
            404 => Ok(None),
            _ => Err(self.failure(resp)),
        }
    }

    /// `POST /api`: create a document (`id` `None`) or replace one; returns its id.
    pub fn doc_put(&self, id: Option<u64>, data: &serde_json::Value) -> Result<u64, Error> {
        let body = serde_json::json!({ "id": id, "data": data }).to_string();
        let req = self.agent.post(format!("{}/api", self.base)).header("Content-Type", "application/json");
        let mut resp = self.send(req, body)?;
        if resp.status().as_u16() != 200 {
            return Err(self.failure(resp));
        }
        Ok(read_json::<Document>(&mut resp, &self.base)?.id)
    }

    // ---- operations ----

    /// `POST /admin/backup {"path": out}`: the server writes a consistent backup into `out` (a directory on the
    /// server's machine); returns the server's JSON report.
    pub fn backup(&self, out: &std::path::Path) -> Result<serde_json::Value, Error> {
        let body = serde_json::json!({ "path": out }).to_string();
        let req = self.agent.post(format!("{}/admin/backup", self.base)).header("Content-Type", "application/json");
        let mut resp = self.send(req, body)?;
        if resp.status().as_u16() != 200 {
            return Err(self.failure(resp));
        }
        read_json::<serde_json::Value>(&mut resp, &self.base)
    }

    /// `POST /cluster/init`: forms a cluster with the server as its first node; its id and replica count.
    pub fn cluster_init(&self) -> Result<serde_json::Value, Error> {
        let req = self.agent.post(format!("{}/cluster/init", self.base));
        let mut resp = self.send(req, String::new())?;
        if resp.status().as_u16() != 200 {
            return Err(self.failure(resp));
        }
        read_json::<serde_json::Value>(&mut resp, &self.base)
    }

    /// `GET /cluster/status`: the server's view of the cluster.
    pub fn cluster_status(&self) -> Result<serde_json::Value, Error> {
        let mut resp = self.call(self.agent.get(format!("{}/cluster/status", self.base)))?;
        if resp.status().as_u16() != 200 {
            return Err(self.failure(resp));
        }
        read_json::<serde_json::Value>(&mut resp, &self.base)
    }

    /// `DELETE /cluster/nodes/{id}`: takes a node out of the cluster.
    pub fn cluster_remove(&self, node: &str) -> Result<(), Error> {
        let url = format!("{}/cluster/nodes/{}", self.base, utf8_percent_encode(node, SEGMENT_CHARS));
        let resp = self.call(self.agent.delete(url))?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            _ => Err(self.failure(resp)),
        }
    }

    /// `GET /healthz`: `Ok` when the server answers at all.
    pub fn ping(&self) -> Result<(), Error> {
        let resp = self.call(self.agent.get(format!("{}/healthz", self.base)))?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            _ => Err(self.failure(resp)),
        }
    }

    // ---- plumbing ----

    fn kv_url(&self, key: &str) -> Result<String, Error> {
        if key.is_empty() {
            return Err(Error::Usage("the key is empty".into()));
        }
        Ok(format!("{}/kv/{}", self.base, utf8_percent_encode(key, KEY_CHARS)))
    }

    fn counter_url(&self, name: &str, suffix: &str) -> Result<String, Error> {
        if name.is_empty() {
            return Err(Error::Usage("the counter name is empty".into()));
        }
        Ok(format!("{}/counter/{}{suffix}", self.base, utf8_percent_encode(name, SEGMENT_CHARS)))
    }

    /// Adds the bearer token, when there is one.
    fn authorized<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.auth {
            Some(auth) => req.header("Authorization", auth),
            None => req,
        }
    }

    /// Sends a body-less request with the bearer token.
    fn call(&self, req: ureq::RequestBuilder<ureq::typestate::WithoutBody>) -> Result<Response<Body>, Error> {
        self.authorized(req).call().map_err(|e| self.transport(e))
    }

    /// Sends a request with a body and the bearer token.
    fn send(
        &self,
        req: ureq::RequestBuilder<ureq::typestate::WithBody>,
        body: impl ureq::AsSendBody,
    ) -> Result<Response<Body>, Error> {
        self.authorized(req).send(body).map_err(|e| self.transport(e))
    }

    /// A transport error as a one-line [`Error`].
    fn transport(&self, e: ureq::Error) -> Error {
        transport_error(e, &self.base)
    }

    /// An error answer as an [`Error::Server`], with the message of the JSON body when there is one.
    fn failure(&self, mut resp: Response<Body>) -> Error {
        let status = resp.status().as_u16();
        let body = resp.body_mut().with_config().limit(64 * 1024).read_to_vec().unwrap_or_default();
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => Error::Server { status, code: Some(e.error), message: e.message },
            Err(_) => {
                let text = String::from_utf8_lossy(&body).trim().to_string();
                let message = if text.is_empty() {
                    resp.status().canonical_reason().unwrap_or("the server answered an error").to_string()
                } else {
                    text
                };
                Error::Server { status, code: None, message }
            }
        }
    }
}

fn transport_error(e: ureq::Error, base: &str) -> Error {
    let reason = match e {
        ureq::Error::Io(io) => io.to_string(),
        ureq::Error::ConnectionFailed => "the connection failed".into(),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::BadUri(m) => return Error::Usage(format!("bad URL: {m}")),
        other => return Error::Protocol(format!("talking to {base}: {other}")),
    };
    Error::Unreachable { url: base.to_string(), reason }
}

fn read_body(resp: &mut Response<Body>, base: &str) -> Result<Vec<u8>, Error> {
    resp.body_mut().with_config().limit(MAX_ANSWER_BYTES).read_to_vec().map_err(|e| transport_error(e, base))
}

fn read_json<T: serde::de::DeserializeOwned>(resp: &mut Response<Body>, base: &str) -> Result<T, Error> {
    let body = read_body(resp, base)?;
    serde_json::from_slice(&body)
        .map_err(|e| Error::Protocol(format!("the server's answer is not the expected JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = Client::new("http://127.0.0.1:4000/", None).unwrap();
        assert_eq!(c.url(), "http://127.0.0.1:4000");
        assert_eq!(c.authority(), "127.0.0.1:4000");
        let c = Client::new("localhost:9", None).unwrap();
        assert_eq!(c.url(), "http://localhost:9");
        let c = Client::new("HTTP://h:1/base", Some(" ,tok, other")).unwrap();
        assert_eq!(c.authority(), "h:1");
        assert_eq!(c.auth.as_deref(), Some("Bearer tok"));
        assert_eq!(Client::new("https://h:1/", None).unwrap().url(), "https://h:1");
        assert_eq!(Client::new("https://h:1", None).unwrap().authority(), "h:1");
        assert!(
            matches!(Client::with_ca("https://h:1", None, Some(std::path::Path::new("/nonexistent.pem"))), Err(Error::Usage(m)) if m.contains("--ca"))
        );
        assert!(matches!(Client::new("ftp://h", None), Err(Error::Usage(_))));
        assert!(matches!(Client::new("http://", None), Err(Error::Usage(_))));
    }

    #[test]
    fn keys_keep_slashes_and_escape_the_rest() {
        let c = Client::new("http://h:1", None).unwrap();
        assert_eq!(c.kv_url("shopping/milk").unwrap(), "http://h:1/kv/shopping/milk");
        assert_eq!(c.kv_url("my key?#%+é").unwrap(), "http://h:1/kv/my%20key%3F%23%25%2B%C3%A9");
        assert_eq!(c.counter_url("a/b", "/value").unwrap(), "http://h:1/counter/a%2Fb/value");
        assert!(matches!(c.kv_url(""), Err(Error::Usage(_))));
    }
}
