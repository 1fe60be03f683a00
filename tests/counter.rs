//! `/counter` (dist_counter-compatible counters), black-box against the real `shale` binary: decimal
//! increments, values as text, exact sums under concurrency, i64 overflow and malformed bodies answered 400
//! with the value unchanged, and acknowledged increments surviving `kill -9`.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use reqwest::{Client, StatusCode};
use serde_json::Value;

use common::{client, temp_dir, BinaryServer};

/// Shards the binary runs with.
const SHARDS: u32 = 4;

// ---- the real binary, killed on drop ----

/// `shale --port 0 --shards 4 --durability immediate --data-dir dir`, once `/readyz` answers 200.
async fn start(dir: &Path) -> BinaryServer {
    let shards = SHARDS.to_string();
    let server = BinaryServer::start(dir, &["--shards", &shards, "--durability", "immediate"], &[("RUST_LOG", "warn")]);
    common::wait_ready(&server.base()).await;
    server
}

// ---- requests ----

/// `POST /counter/{name}` with `body`; returns status and body text.
async fn add_raw(http: &Client, s: &BinaryServer, name: &str, body: impl Into<reqwest::Body>) -> (StatusCode, String) {
    let res = http.post(s.url(&format!("/counter/{name}"))).body(body).send().await.expect("POST failed");
    let status = res.status();
    (status, res.text().await.expect("reading the body"))
}

/// An increment that must answer 204 with no body.
async fn add(http: &Client, s: &BinaryServer, name: &str, delta: i64) {
    let (status, body) = add_raw(http, s, name, delta.to_string()).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "POST /counter/{name} {delta}: {body}");
    assert!(body.is_empty(), "a 204 has no body: {body:?}");
}

/// `GET /counter/{name}/{route}` (`value` or `consistent_value`): must be 200 text/plain; returns the number.
async fn value_at(http: &Client, s: &BinaryServer, name: &str, route: &str) -> i64 {
    let res = http.get(s.url(&format!("/counter/{name}/{route}"))).send().await.expect("GET failed");
    assert_eq!(res.status(), StatusCode::OK, "GET /counter/{name}/{route}");
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain"), "content type {ct}");
    let text = res.text().await.unwrap();
    text.parse().unwrap_or_else(|_| panic!("GET /counter/{name}/{route} is not a decimal: {text:?}"))
}

/// The value, read through both routes, which must agree on a single node.
async fn value(http: &Client, s: &BinaryServer, name: &str) -> i64 {
    let v = value_at(http, s, name, "value").await;
    assert_eq!(value_at(http, s, name, "consistent_value").await, v, "value and consistent_value of {name}");
    v
}

fn assert_json_error(status: StatusCode, body: &str, want: StatusCode, code: &str, what: &str) {
    assert_eq!(status, want, "{what}: {body}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: error body is not JSON: {body}"));
    assert_eq!(v["error"], code, "{what}: {body}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
}

// ---- tests ----

#[tokio::test]
async fn increments_add_up_and_read_as_text() {
    let dir = temp_dir();
    let s = start(dir.path()).await;
    let http = client();
    add(&http, &s, "hits", 2).await;
    assert_eq!(value(&http, &s, "hits").await, 2);
    add(&http, &s, "hits", -3).await;
    assert_eq!(value(&http, &s, "hits").await, -1);
    // The exact body dist_counter clients read.
    let text = http.get(s.url("/counter/hits/value")).send().await.unwrap().text().await.unwrap();
    assert_eq!(text, "-1");
    // Surrounding whitespace (a trailing newline from `echo`) and a plus sign are accepted; zero is a no-op.
    for (body, want) in [("10\n", 9), (" +1 ", 10), ("0", 10), ("-0", 10)] {
        let (status, text) = add_raw(&http, &s, "hits", body).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body:?}: {text}");
        assert_eq!(value(&http, &s, "hits").await, want, "after {body:?}");
    }
    // Counters are independent of each other.
    add(&http, &s, "other", 100).await;
    assert_eq!(value(&http, &s, "other").await, 100);
    assert_eq!(value(&http, &s, "hits").await, 10);
}

#[tokio::test]
async fn never_written_counters_are_zero() {
    let dir = temp_dir();
    let s = start(dir.path()).await;
    let http = client();
    for name in ["never", "a%20b", "%E2%98%83", "1"] {
        assert_eq!(value(&http, &s, name).await, 0, "{name}");
    }
    // Percent-encoded names are decoded: both spellings are one counter.
    add(&http, &s, "a%20b", 5).await;
    assert_eq!(value(&http, &s, "a%20b").await, 5);
    assert_eq!(value(&http, &s, "a%20%62").await, 5);
    // A counter named 1 is not document 1 and not the key 1.
    add(&http, &s, "1", 7).await;
    let doc: Value = http.get(s.url("/api?id=1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc, serde_json::json!({"id": 1, "data": null}));
    assert_eq!(http.get(s.url("/kv/1")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn routes_outside_the_contract_are_json_errors() {
    let dir = temp_dir();
    let s = start(dir.path()).await;
    let http = client();
    let cases = [
        (reqwest::Method::GET, "/counter", StatusCode::NOT_FOUND, "not_found"),
        (reqwest::Method::GET, "/counter/", StatusCode::NOT_FOUND, "not_found"),
        (reqwest::Method::GET, "/counter/c/other", StatusCode::NOT_FOUND, "not_found"),
        (reqwest::Method::GET, "/counter/c", StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (reqwest::Method::PUT, "/counter/c", StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (reqwest::Method::DELETE, "/counter/c", StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (reqwest::Method::POST, "/counter/c/value", StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (reqwest::Method::POST, "/counter/c/consistent_value", StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    ];
    for (method, path, want, code) in cases {
        let res = http.request(method.clone(), s.url(path)).body("1").send().await.unwrap();
        let status = res.status();
        assert_json_error(status, &res.text().await.unwrap(), want, code, &format!("{method} {path}"));
    }
    assert_eq!(value(&http, &s, "c").await, 0, "none of those wrote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_increments_give_a_thousand() {
    let dir = temp_dir();
    let s = start(dir.path()).await;
    let http = client();
    let statuses: Vec<StatusCode> = stream::iter(0..1000)
        .map(|_| {
            let (http, s) = (&http, &s);
            async move { add_raw(http, s, "concurrent", "1").await.0 }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    assert!(statuses.iter().all(|&st| st == StatusCode::NO_CONTENT), "every increment answered 204");
    assert_eq!(value(&http, &s, "concurrent").await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mixed_increments_on_several_counters_are_exact() {
    let dir = temp_dir();
    let s = start(dir.path()).await;
    let http = client();
    // 1200 requests over 4 counters, 64 in flight: counter k gets +k 200 times and -1 100 times.
    let work: Vec<(String, i64)> =
        (0..300).flat_map(|i| (1..=4i64).map(move |k| (format!("mix-{k}"), if i % 3 == 2 { -1 } else { k }))).collect();
    stream::iter(work)
        .map(|(name, delta)| {
            let (http, s) = (&http, &s);
            async move { add(http, s, &name, delta).await }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    for k in 1..=4i64 {
        assert_eq!(value(&http, &s, &format!("mix-{k}")).await, 200 * k - 100, "mix-{k}");
    }
}

#[tokio::test]
async fn overflow_is_400_and_keeps_the_value() {
    let dir = temp_dir();
    let s = start(dir.path()).await;
    let http = client();
    add(&http, &s, "max", i64::MAX).await;
    assert_eq!(value(&http, &s, "max").await, i64::MAX);
    for delta in ["1", "9223372036854775807"] {
        let (status, body) = add_raw(&http, &s, "max", delta).await;
        assert_json_error(status, &body, StatusCode::BAD_REQUEST, "bad_request", &format!("MAX + {delta}"));
        assert_eq!(value(&http, &s, "max").await, i64::MAX, "after MAX + {delta}");
    }
    add(&http, &s, "max", -1).await;
    assert_eq!(value(&http, &s, "max").await, i64::MAX - 1);

    add(&http, &s, "min", i64::MIN).await;
    assert_eq!(value(&http, &s, "min").await, i64::MIN);
    for delta in ["-1", "-9223372036854775808"] {
        let (status, body) = add_raw(&http, &s, "min", delta).await;
        assert_json_error(status, &body, StatusCode::BAD_REQUEST, "bad_request", &format!("MIN + {delta}"));
        assert_eq!(value(&http, &s, "min").await, i64::MIN, "after MIN + {delta}");
    }
    add(&http, &s, "min", 1).await;
    assert_eq!(value(&http, &s, "min").await, i64::MIN + 1);
}

#[tokio::test]
async fn bodies_that_are_not_an_i64_are_400_and_keep_the_value() {
    let dir = temp_dir();
    let s = start(dir.path()).await;
    let http = client();
    add(&http, &s, "c", 5).await;
    let bodies: Vec<Vec<u8>> = [
        "abc",
        "1.5",
        "",
        " ",
        "1e3",
        "99999999999999999999",
        "9223372036854775808",
        "-9223372036854775809",
        "--1",
        "+-1",
        "-",
        "+",
        "1 2",
        "0x10",
        "１",
        "1_000",
        "\"1\"",
        "[1]",
        "{\"delta\": 1}",
        "null",
        "true",
    ]
    .iter()
    .map(|b| b.as_bytes().to_vec())
    .chain([vec![0xff, b'1'], vec![b'1', 0], b"1".repeat(65), format!("{:>100}", "1").into_bytes()])
    .collect();
    for body in bodies {
        let what = format!("POST /counter/c {:?}", String::from_utf8_lossy(&body));
        let (status, text) = add_raw(&http, &s, "c", body).await;
        assert_json_error(status, &text, StatusCode::BAD_REQUEST, "bad_request", &what);
        assert_eq!(value(&http, &s, "c").await, 5, "after {what}");
    }
    // A large body is refused too, without storing anything.
    let (status, text) = add_raw(&http, &s, "c", vec![b'1'; 200_000]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a 200 kB body: {text}");
    assert_eq!(value(&http, &s, "c").await, 5);
}

#[tokio::test]
async fn acknowledged_increments_survive_kill_9() {
    let dir = temp_dir();
    let http = client();
    let s = start(dir.path()).await;
    for _ in 0..25 {
        add(&http, &s, "durable", 2).await;
    }
    add(&http, &s, "durable", -7).await;
    add(&http, &s, "other", i64::MIN).await;
    s.kill9();

    let s = start(dir.path()).await;
    assert_eq!(value(&http, &s, "durable").await, 43);
    assert_eq!(value(&http, &s, "other").await, i64::MIN);
    add(&http, &s, "durable", 1).await;
    s.kill9();

    let s = start(dir.path()).await;
    assert_eq!(value(&http, &s, "durable").await, 44);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_acknowledged_before_a_kill_9_mid_load_are_kept() {
    let dir = temp_dir();
    let http = client();
    let s = start(dir.path()).await;
    let sent = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let load = {
        let (http, url, sent, acked) = (http.clone(), s.url("/counter/crash"), sent.clone(), acked.clone());
        tokio::spawn(async move {
            // +1 until the server dies (at most 20000), 32 in flight.
            stream::iter(0..20_000)
                .map(|_| {
                    let (http, url, sent) = (http.clone(), url.clone(), sent.clone());
                    async move {
                        sent.fetch_add(1, Ordering::SeqCst);
                        let res = http.post(&url).body("1").send().await;
                        res.is_ok_and(|r| r.status() == StatusCode::NO_CONTENT)
                    }
                })
                .buffer_unordered(32)
                .take_while(|&ok| std::future::ready(ok))
                .for_each(|_| {
                    acked.fetch_add(1, Ordering::SeqCst);
                    std::future::ready(())
                })
                .await;
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < 300 {
        assert!(Instant::now() < deadline, "the load made no progress");
        assert!(!load.is_finished(), "the load stopped before the kill");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    s.kill9();
    tokio::time::timeout(Duration::from_secs(60), load).await.expect("the load ends once the server is gone").unwrap();
    let (sent, acked) = (sent.load(Ordering::SeqCst), acked.load(Ordering::SeqCst));

    let s = start(dir.path()).await;
    let v = value(&http, &s, "crash").await as u64;
    // Every acknowledged increment is there; the ones cut off by the kill may or may not be.
    assert!((acked..=sent).contains(&v), "acknowledged {acked}, sent {sent}, value after kill -9 {v}");
}
