//! Bearer-token access control, black-box over HTTP: 401 with `WWW-Authenticate: Bearer` and a JSON body when
//! the token is missing or wrong; several read-write tokens; read-only tokens limited to GET/HEAD (403 for
//! writes, for POST commands and for `/admin`); `/healthz` and `/readyz` open; `/metrics` and `/openapi.json`
//! readable with a read token; tokens from `AUTH_TOKEN`/`AUTH_READ_TOKEN` and flags of the real binary; the
//! start-up warning on a non-loopback bind without a token.

mod common;

use std::time::{Duration, Instant};

use common::{client, temp_dir, wait_ready, BinaryServer, Shale, TestServer};
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use shale::Config;

const RW1: &str = "rw-token-one";
const RW2: &str = "rw-token-two";
const RO: &str = "ro-token";

/// An in-process server with two read-write tokens and one read-only token.
struct Env {
    server: TestServer,
    http: Client,
    _dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = temp_dir();
        let mut config = Config::for_test(dir.path());
        config.auth_token = vec![RW1.into(), RW2.into()];
        config.auth_read_token = vec![RO.into()];
        Env { server: TestServer::start(config), http: client(), _dir: dir }
    }

    /// Sends `method path` with `Authorization: <authorization>` (none if `None`) and `body`.
    async fn call(&self, method: Method, path: &str, authorization: Option<&str>, body: &str) -> Answer {
        let mut req = self.http.request(method, self.server.url(path)).body(body.to_string());
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        Answer::of(req.send().await.expect("request"), path).await
    }

    async fn with(&self, method: Method, path: &str, token: &str, body: &str) -> Answer {
        self.call(method, path, Some(&format!("Bearer {token}")), body).await
    }
}

/// What came back.
struct Answer {
    status: StatusCode,
    www_authenticate: Option<String>,
    request_id: Option<String>,
    body: String,
    what: String,
}

impl Answer {
    async fn of(res: reqwest::Response, path: &str) -> Answer {
        let header = |name: &str| res.headers().get(name).map(|v| v.to_str().expect("ASCII header").to_string());
        let (status, www_authenticate, request_id) = (res.status(), header("www-authenticate"), header("x-request-id"));
        let body = res.text().await.expect("body");
        Answer { status, www_authenticate, request_id, what: format!("{path} -> {status} {body}"), body }
    }

    /// Asserts a JSON error with `code` and `status`.
    fn is_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{}", self.what);
        let v: Value = serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{}: not JSON: {e}", self.what));
        assert_eq!(v["error"], code, "{}", self.what);
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", self.what);
        assert!(self.request_id.is_some(), "{}: X-Request-Id", self.what);
    }

    /// Asserts a 401 with the bearer challenge.
    fn is_unauthorized(&self) {
        self.is_error(StatusCode::UNAUTHORIZED, "unauthorized");
        let challenge =
            self.www_authenticate.as_deref().unwrap_or_else(|| panic!("{}: no WWW-Authenticate", self.what));
        assert!(challenge.starts_with("Bearer"), "{}: WWW-Authenticate: {challenge}", self.what);
    }

    fn is_forbidden(&self) {
        self.is_error(StatusCode::FORBIDDEN, "forbidden");
        assert!(self.www_authenticate.is_none(), "{}: 403 carries no challenge", self.what);
    }
}

#[tokio::test]
async fn a_missing_or_wrong_token_gets_401_with_a_bearer_challenge() {
    let env = Env::new();
    let wrong = [
        None,
        Some("Bearer".to_string()),
        Some("Bearer ".to_string()),
        Some("Bearer nope".to_string()),
        Some(format!("Basic {RW1}")),
        Some(RW1.to_string()),
        // A prefix, an extension and another case of a real token are different tokens.
        Some(format!("Bearer {}", &RW1[..RW1.len() - 1])),
        Some(format!("Bearer {RW1}x")),
        Some(format!("Bearer {}", RW1.to_uppercase())),
    ];
    for (method, path) in [
        (Method::GET, "/kv/a"),
        (Method::HEAD, "/kv/a"),
        (Method::PUT, "/kv/a"),
        (Method::GET, "/kv"),
        (Method::POST, "/api"),
        (Method::GET, "/metrics"),
        (Method::GET, "/openapi.json"),
        (Method::GET, "/ping"),
        (Method::POST, "/admin/backup"),
        // Even a path with no route is refused before it is looked up.
        (Method::GET, "/no/such/route"),
    ] {
        for auth in &wrong {
            let a = env.call(method.clone(), path, auth.as_deref(), "v").await;
            if method == Method::HEAD {
                assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.what);
                assert!(a.www_authenticate.is_some_and(|c| c.starts_with("Bearer")), "HEAD {path}");
            } else {
                a.is_unauthorized();
            }
        }
    }
    // Nothing was written by the refused PUTs.
    assert_eq!(env.with(Method::GET, "/kv/a", RW1, "").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_read_write_token_may_do_everything() {
    let env = Env::new();
    assert_eq!(env.with(Method::PUT, "/kv/a", RW1, "one").await.status, StatusCode::CREATED);
    assert_eq!(env.with(Method::PUT, "/kv/a", RW2, "two").await.status, StatusCode::NO_CONTENT);
    let got = env.with(Method::GET, "/kv/a", RW1, "").await;
    assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "two"));
    // The scheme name is case-insensitive (RFC 7235).
    let lower = env.call(Method::GET, "/kv/a", Some(&format!("bearer {RW2}")), "").await;
    assert_eq!(lower.status, StatusCode::OK, "{}", lower.what);
    assert_eq!(env.with(Method::POST, "/counter/c", RW2, "3").await.status, StatusCode::NO_CONTENT);
    assert_eq!(env.with(Method::POST, "/api", RW1, r#"{"id": 4, "data": 1}"#).await.status, StatusCode::OK);
    // Access is granted: the relative path is refused by the handler, not by access control.
    env.with(Method::POST, "/admin/backup", RW2, r#"{"path": "relative"}"#)
        .await
        .is_error(StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(env.with(Method::DELETE, "/kv/a", RW2, "").await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_read_token_reads_and_lists_but_never_writes() {
    let env = Env::new();
    assert_eq!(env.with(Method::PUT, "/kv/k", RW1, "stored").await.status, StatusCode::CREATED);
    assert_eq!(env.with(Method::POST, "/api", RW1, r#"{"id": 9, "data": {"a": 1}}"#).await.status, StatusCode::OK);
    assert_eq!(env.with(Method::POST, "/counter/c", RW1, "5").await.status, StatusCode::NO_CONTENT);

    // Reads.
    let got = env.with(Method::GET, "/kv/k", RO, "").await;
    assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "stored"));
    assert_eq!(env.with(Method::HEAD, "/kv/k", RO, "").await.status, StatusCode::OK);
    assert_eq!(env.with(Method::GET, "/kv/absent", RO, "").await.status, StatusCode::NOT_FOUND);
    let list = env.with(Method::GET, "/kv?prefix=k", RO, "").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(serde_json::from_str::<Value>(&list.body).unwrap()["keys"], serde_json::json!(["k"]));
    let doc = env.with(Method::GET, "/api?id=9", RO, "").await;
    assert_eq!(serde_json::from_str::<Value>(&doc.body).unwrap()["data"], serde_json::json!({"a": 1}));
    let cmd = env.with(Method::GET, "/api/cmd?id=9&cmd[query]=ONLY&cmd[keys][]=a", RO, "").await;
    assert_eq!(cmd.status, StatusCode::OK, "{}", cmd.what);
    assert_eq!(env.with(Method::GET, "/counter/c/value", RO, "").await.body, "5");
    assert_eq!(env.with(Method::GET, "/counter/c/consistent_value", RO, "").await.body, "5");
    for path in ["/ping", "/metrics", "/openapi.json"] {
        assert_eq!(env.with(Method::GET, path, RO, "").await.status, StatusCode::OK, "{path}");
    }

    // Writes, POST commands and /admin are refused, whatever the route would answer.
    for (method, path, body) in [
        (Method::PUT, "/kv/k", "overwritten"),
        (Method::PUT, "/kv/new", "x"),
        (Method::DELETE, "/kv/k", ""),
        (Method::POST, "/api", r#"{"id": 9, "data": "overwritten"}"#),
        (Method::POST, "/api", r#"{"id": null, "data": 1}"#),
        (Method::POST, "/api/cmd", r#"{"id": 9, "cmd": {"query": "ONLY", "keys": ["a"]}}"#),
        (Method::POST, "/counter/c", "1"),
        (Method::POST, "/admin/backup", ""),
        (Method::GET, "/admin/backup", ""),
        (Method::PATCH, "/kv/k", "x"),
    ] {
        env.with(method, path, RO, body).await.is_forbidden();
    }
    // ... and changed nothing.
    assert_eq!(env.with(Method::GET, "/kv/k", RO, "").await.body, "stored");
    assert_eq!(env.with(Method::GET, "/kv/new", RO, "").await.status, StatusCode::NOT_FOUND);
    let doc = env.with(Method::GET, "/api?id=9", RO, "").await;
    assert_eq!(serde_json::from_str::<Value>(&doc.body).unwrap()["data"], serde_json::json!({"a": 1}));
    assert_eq!(env.with(Method::GET, "/api?id=10", RO, "").await.body, r#"{"id":10,"data":null}"#);
    assert_eq!(env.with(Method::GET, "/counter/c/value", RO, "").await.body, "5");
}

#[tokio::test]
async fn health_and_readiness_need_no_token_but_metrics_need_read_access() {
    let env = Env::new();
    for path in ["/healthz", "/readyz"] {
        for auth in [None, Some("Bearer wrong"), Some("garbage")] {
            let a = env.call(Method::GET, path, auth, "").await;
            assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "ok\n"), "{path} with {auth:?}");
        }
    }
    env.call(Method::GET, "/metrics", None, "").await.is_unauthorized();
    env.call(Method::GET, "/metrics", Some("Bearer wrong"), "").await.is_unauthorized();
    for token in [RO, RW1] {
        let m = env.with(Method::GET, "/metrics", token, "").await;
        assert_eq!(m.status, StatusCode::OK);
        assert!(m.body.contains("shale_http_requests_total"), "{}", m.what);
    }
    // The exemption is for those exact paths only.
    env.call(Method::GET, "/healthz/x", None, "").await.is_unauthorized();
    env.call(Method::GET, "/readyzz", None, "").await.is_unauthorized();
}

#[tokio::test]
async fn no_token_configured_means_open_access() {
    let dir = temp_dir();
    let server = TestServer::start(Config::for_test(dir.path()));
    let http = client();
    let res = http.put(server.url("/kv/open")).body("v").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = http.get(server.url("/metrics")).bearer_auth("anything").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    server.stop();
}

/// `status` of `method url` with an optional bearer token.
async fn status_of(http: &Client, method: Method, url: &str, token: Option<&str>) -> StatusCode {
    let mut req = http.request(method, url).body("v");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("request").status()
}

#[tokio::test]
async fn the_binary_takes_comma_separated_tokens_from_the_environment_and_flags() {
    let http = client();

    let dir = temp_dir();
    let s = BinaryServer::start(dir.path(), &[], &[("AUTH_TOKEN", "a-1,b-2"), ("AUTH_READ_TOKEN", "r-1, r-2")]);
    wait_ready(&s.base()).await;
    assert_eq!(status_of(&http, Method::PUT, &s.url("/kv/x"), Some("a-1")).await, StatusCode::CREATED);
    assert_eq!(status_of(&http, Method::PUT, &s.url("/kv/x"), Some("b-2")).await, StatusCode::NO_CONTENT);
    for ro in ["r-1", "r-2"] {
        assert_eq!(status_of(&http, Method::GET, &s.url("/kv/x"), Some(ro)).await, StatusCode::OK);
        assert_eq!(status_of(&http, Method::PUT, &s.url("/kv/x"), Some(ro)).await, StatusCode::FORBIDDEN);
    }
    for bad in [None, Some("a-1,b-2"), Some("c-3")] {
        assert_eq!(status_of(&http, Method::GET, &s.url("/kv/x"), bad).await, StatusCode::UNAUTHORIZED, "{bad:?}");
    }
    let (status, _) = s.terminate();
    assert!(status.success());

    // The flag wins over the environment.
    let dir = temp_dir();
    let s = BinaryServer::start(dir.path(), &["--auth-token", "flag-1,flag-2"], &[("AUTH_TOKEN", "env-1")]);
    wait_ready(&s.base()).await;
    assert_eq!(status_of(&http, Method::PUT, &s.url("/kv/x"), Some("flag-2")).await, StatusCode::CREATED);
    assert_eq!(status_of(&http, Method::PUT, &s.url("/kv/x"), Some("env-1")).await, StatusCode::UNAUTHORIZED);
    let (status, _) = s.terminate();
    assert!(status.success());
}

#[test]
fn an_empty_token_in_the_list_is_a_start_up_error() {
    let dir = temp_dir();
    let out = Shale::serve(dir.path()).env("AUTH_TOKEN", "good,,other").run(Duration::from_secs(30));
    assert!(!out.status.success(), "started with an empty token: {}", out.stderr);
    assert!(out.stderr.contains("empty"), "{}", out.stderr);
}

/// Polls the server's stderr for `needle` for at most 10 s.
fn stderr_eventually_contains(s: &BinaryServer, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if s.stderr().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[tokio::test]
async fn a_non_loopback_bind_without_a_token_logs_a_warning() {
    let dir = temp_dir();
    let open = BinaryServer::start(dir.path(), &["--host", "0.0.0.0"], &[]);
    // The test talks to it over loopback only.
    let base = format!("http://127.0.0.1:{}", open.addr.port());
    wait_ready(&base).await;
    assert!(stderr_eventually_contains(&open, "no AUTH_TOKEN"), "no warning:\n{}", open.stderr());
    let warning = open.stderr().lines().find(|l| l.contains("no AUTH_TOKEN")).unwrap().to_string();
    assert!(warning.contains("WARN"), "{warning}");
    let (status, _) = open.terminate();
    assert!(status.success());

    // With a token, or on loopback, there is nothing to warn about.
    for (args, envs) in [(vec!["--host", "0.0.0.0"], vec![("AUTH_TOKEN", "t")]), (vec!["--host", "127.0.0.1"], vec![])]
    {
        let dir = temp_dir();
        let s = BinaryServer::start(dir.path(), &args, &envs);
        wait_ready(&format!("http://127.0.0.1:{}", s.addr.port())).await;
        let (status, stderr) = s.terminate();
        assert!(status.success());
        assert!(stderr.contains("shutdown complete"), "{stderr}");
        assert!(!stderr.contains("no AUTH_TOKEN"), "{args:?} {envs:?}:\n{stderr}");
    }
}
