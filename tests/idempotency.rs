//! `Idempotency-Key`, black-box over HTTP: a write carrying the header is applied at most once per key (and
//! method and path), and a retry is answered exactly what the first attempt was (status, ETag, body, document
//! id), whatever happened in between. On a single node (an in-process server), across a restart too; on a
//! cluster of three real processes, when the retry reaches another node after the leader was killed. A malformed
//! key is 400. (Expiry after the window is tested in `engine::store` with explicit times.)

#[path = "common/cluster.rs"]
mod cluster_harness;
mod common;

use std::time::{Duration, Instant};

use cluster_harness::TestCluster;
use common::{client, temp_dir, TestServer};
use reqwest::header::{ETAG, IF_MATCH};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use shale::command::Space;
use shale::node::reads::Consistency;
use shale::Config;

/// A running server with its temp dir (kept alive as long as the server).
struct Env {
    server: TestServer,
    http: Client,
    dir: tempfile::TempDir,
}

/// What a client sees of an answer.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: StatusCode,
    etag: Option<String>,
    body: String,
}

/// `method url` with `body` and `headers`, and an `Idempotency-Key` header when `key` is given.
async fn send(
    http: &Client,
    method: Method,
    url: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut req = http.request(method, url).body(body.to_string());
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = req.send().await.expect("request failed");
    let status = res.status();
    let etag = res.headers().get(ETAG).map(|v| v.to_str().unwrap().to_string());
    Answer { status, etag, body: res.text().await.expect("reading the body") }
}

impl Env {
    fn new() -> Env {
        let dir = temp_dir();
        let server = TestServer::start(Config::for_test(dir.path()));
        Env { server, http: client(), dir }
    }

    /// The same data dir served again after a graceful stop.
    fn restart(self) -> Env {
        let Env { server, http, dir } = self;
        server.stop();
        let server = TestServer::start(Config::for_test(dir.path()));
        Env { server, http, dir }
    }

    /// `method path` with `body`, and an `Idempotency-Key` header when `key` is given.
    async fn send(&self, method: Method, path: &str, key: Option<&str>, body: &str) -> Answer {
        self.send_with(method, path, key, &[], body).await
    }

    async fn send_with(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        send(&self.http, method, &self.server.url(path), key, headers, body).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None, "").await
    }

    async fn counter(&self, name: &str) -> i64 {
        self.get(&format!("/counter/{name}/consistent_value")).await.body.parse().unwrap()
    }

    async fn documents(&self) -> u64 {
        self.server.node().count(Space::Doc, Consistency::Linearizable).await.unwrap()
    }
}

#[tokio::test]
async fn a_retried_write_is_not_applied_again_and_is_answered_the_first_answer() {
    let env = Env::new();
    let first = env.send(Method::PUT, "/kv/k", Some("put-1"), "first").await;
    assert_eq!(first.status, StatusCode::CREATED);
    // Another client changes the value; the retry neither overwrites it nor answers 204 with a new ETag.
    let other = env.send(Method::PUT, "/kv/k", None, "other").await;
    assert_eq!(other.status, StatusCode::NO_CONTENT);
    assert_ne!(other.etag, first.etag);
    for _ in 0..3 {
        assert_eq!(env.send(Method::PUT, "/kv/k", Some("put-1"), "first").await, first);
    }
    assert_eq!(env.get("/kv/k").await.body, "other");

    // A failure is answered again too, though the retry's condition would hold now.
    let etag = other.etag.clone().unwrap();
    let failed = env.send_with(Method::PUT, "/kv/k", Some("put-2"), &[(IF_MATCH.as_str(), "\"99\"")], "x").await;
    assert_eq!(failed.status, StatusCode::PRECONDITION_FAILED);
    let retry = env.send_with(Method::PUT, "/kv/k", Some("put-2"), &[(IF_MATCH.as_str(), &etag)], "x").await;
    assert_eq!(retry, failed);
    assert_eq!(env.get("/kv/k").await.body, "other");

    // A delete retried after the key was written again does not delete it again.
    let deleted = env.send(Method::DELETE, "/kv/k", Some("delete-1"), "").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(env.send(Method::PUT, "/kv/k", None, "back").await.status, StatusCode::CREATED);
    assert_eq!(env.send(Method::DELETE, "/kv/k", Some("delete-1"), "").await, deleted);
    assert_eq!(env.get("/kv/k").await.body, "back");
}

#[tokio::test]
async fn a_counter_increment_retried_three_times_counts_once() {
    let env = Env::new();
    for _ in 0..4 {
        let answer = env.send(Method::POST, "/counter/c", Some("add-1"), "5").await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
    }
    assert_eq!(env.counter("c").await, 5);
    // Concurrent retries of another increment: still once.
    let adds = (0..8).map(|_| env.send(Method::POST, "/counter/c", Some("add-2"), "2"));
    for answer in futures_util::future::join_all(adds).await {
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
    }
    assert_eq!(env.counter("c").await, 7);
    // A request without a key is applied each time.
    env.send(Method::POST, "/counter/c", None, "1").await;
    env.send(Method::POST, "/counter/c", None, "1").await;
    assert_eq!(env.counter("c").await, 9);
}

#[tokio::test]
async fn a_document_create_retried_answers_the_first_id_and_creates_one_document() {
    let env = Env::new();
    let body = json!({"id": null, "data": {"n": 1}}).to_string();
    let first = env.send(Method::POST, "/api", Some("create-1"), &body).await;
    assert_eq!(first.status, StatusCode::OK);
    let id = serde_json::from_str::<Value>(&first.body).unwrap()["id"].as_u64().unwrap();
    for _ in 0..3 {
        assert_eq!(env.send(Method::POST, "/api", Some("create-1"), &body).await, first);
    }
    assert_eq!(env.documents().await, 1);
    // Concurrent attempts of another create: one document, one id for all.
    let creates = (0..8).map(|_| env.send(Method::POST, "/api", Some("create-2"), &body));
    let answers = futures_util::future::join_all(creates).await;
    assert!(answers.iter().all(|a| a == &answers[0] && a.status == StatusCode::OK), "{answers:?}");
    assert_ne!(answers[0], first);
    assert_eq!(env.documents().await, 2);
    // Creates without a key still get ids of their own, none of them the retried ones.
    let plain = env.send(Method::POST, "/api", None, &body).await;
    let plain_id = serde_json::from_str::<Value>(&plain.body).unwrap()["id"].as_u64().unwrap();
    assert_ne!(plain_id, id);
    assert_eq!(env.documents().await, 3);

    // An update with an explicit id, retried after another client changed the document.
    let update = json!({"id": id, "data": {"n": 2}}).to_string();
    let updated = env.send(Method::POST, "/api", Some("update-1"), &update).await;
    assert_eq!(updated.status, StatusCode::OK);
    env.send(Method::POST, "/api", None, &json!({"id": id, "data": {"n": 3}}).to_string()).await;
    assert_eq!(env.send(Method::POST, "/api", Some("update-1"), &update).await, updated);
    let stored: Value = serde_json::from_str(&env.get(&format!("/api?id={id}")).await.body).unwrap();
    assert_eq!(stored["data"], json!({"n": 3}));
}

#[tokio::test]
async fn one_key_on_another_path_or_method_is_another_request() {
    let env = Env::new();
    // Keys of one shard, whose records share a table: only the path tells the requests apart.
    let shards = Config::for_test(env.dir.path()).shards;
    let shard_of = |key: &str| shale::placement::shard_for(key.as_bytes(), shards);
    let b = (0..).map(|i| format!("b{i}")).find(|k| shard_of(k) == shard_of("a")).unwrap();
    assert_eq!(env.send(Method::PUT, "/kv/a", Some("shared"), "1").await.status, StatusCode::CREATED);
    assert_eq!(env.send(Method::PUT, &format!("/kv/{b}"), Some("shared"), "1").await.status, StatusCode::CREATED);
    assert_eq!(env.get(&format!("/kv/{b}")).await.status, StatusCode::OK);
    assert_eq!(env.send(Method::POST, "/counter/a", Some("shared"), "1").await.status, StatusCode::NO_CONTENT);
    assert_eq!(env.counter("a").await, 1);
    // The same path with another method.
    assert_eq!(env.send(Method::DELETE, "/kv/a", Some("shared"), "").await.status, StatusCode::NO_CONTENT);
    assert_eq!(env.get("/kv/a").await.status, StatusCode::NOT_FOUND);
    // Another key on the same path is another request.
    assert_eq!(env.send(Method::PUT, &format!("/kv/{b}"), Some("other"), "2").await.status, StatusCode::NO_CONTENT);
    assert_eq!(env.get(&format!("/kv/{b}")).await.body, "2");
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_refused_and_stores_nothing() {
    let env = Env::new();
    let too_long = "k".repeat(256);
    for bad in ["", "has space", "tab\there", too_long.as_str()] {
        let answer = env.send(Method::PUT, "/kv/k", Some(bad), "1").await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad:?}");
        let body: Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(body["error"], "bad_request");
        assert!(body["message"].as_str().unwrap().contains("Idempotency-Key"), "{body}");
    }
    let res = client()
        .post(env.server.url("/counter/c"))
        .header("idempotency-key", "one")
        .header("idempotency-key", "two")
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let non_ascii = client()
        .put(env.server.url("/kv/k"))
        .header("idempotency-key", reqwest::header::HeaderValue::from_bytes(b"caf\xe9").unwrap())
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(non_ascii.status(), StatusCode::BAD_REQUEST);
    assert_eq!(env.get("/kv/k").await.status, StatusCode::NOT_FOUND);
    assert_eq!(env.counter("c").await, 0);
    // The longest key accepted.
    let longest = "k".repeat(255);
    assert_eq!(env.send(Method::PUT, "/kv/k", Some(&longest), "1").await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn a_retry_after_a_restart_is_answered_the_first_answer() {
    let env = Env::new();
    let first = env.send(Method::PUT, "/kv/k", Some("put-1"), "first").await;
    env.send(Method::PUT, "/kv/k", None, "other").await;
    env.send(Method::POST, "/counter/c", Some("add-1"), "5").await;
    let env = env.restart();
    assert_eq!(env.send(Method::PUT, "/kv/k", Some("put-1"), "first").await, first);
    assert_eq!(env.get("/kv/k").await.body, "other");
    env.send(Method::POST, "/counter/c", Some("add-1"), "5").await;
    assert_eq!(env.counter("c").await, 5);
}

// ---- a cluster ----

const SHARDS: u32 = 2;
const CLUSTER_ENV: &[(&str, &str)] = &[("SHARD_LIMIT", "2"), ("REQUEST_TIMEOUT_MS", "3000")];

/// `method url` sent again while the answer is 503 (no leader yet, or the write's fate unknown), for 30 s at most.
async fn send_until_served(http: &Client, method: Method, url: &str, key: Option<&str>, body: &str) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = send(http, method.clone(), url, key, &[], body).await;
        if answer.status != StatusCode::SERVICE_UNAVAILABLE || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_retry_on_another_node_after_the_leader_died_is_answered_the_first_answer() {
    let mut c = TestCluster::start(3, CLUSTER_ENV);
    c.init(0).await;
    c.wait_voters(0, &[0, 1, 2]).await;
    let http = client();
    // One shard holds the key, the counter and the create's records (a keyed create's ids are allocated in the
    // shard of its request: see `Node::create_doc`), so killing its leader moves all three.
    let shard_of = |bytes: &[u8]| shale::placement::shard_for(bytes, SHARDS);
    let create_key = "create-1";
    let home = shard_of(&shale::command::request_id(&[create_key.as_bytes(), b"POST", b"/api"]).to_be_bytes());
    let name = (0..).map(|i| format!("k{i}")).find(|k| shard_of(k.as_bytes()) == home).unwrap();
    let kv = format!("/kv/{name}");
    let counter = format!("/counter/{name}");
    let leader = c.leader(0, home.0 as usize).await;
    let doc = json!({"id": null, "data": {"n": 1}}).to_string();

    let put = send_until_served(&http, Method::PUT, &c.url(leader, &kv), Some("put-1"), "first").await;
    assert_eq!(put.status, StatusCode::CREATED);
    let add = send_until_served(&http, Method::POST, &c.url(leader, &counter), Some("add-1"), "5").await;
    assert_eq!(add.status, StatusCode::NO_CONTENT);
    let created = send_until_served(&http, Method::POST, &c.url(leader, "/api"), Some(create_key), &doc).await;
    assert_eq!(created.status, StatusCode::OK);

    c.kill9(leader);
    let other = (leader + 1) % 3;
    let changed = send_until_served(&http, Method::PUT, &c.url(other, &kv), None, "other").await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT);
    assert_ne!(c.leader(other, home.0 as usize).await, leader);
    // The records were in the replicated entries: the new leader answers the retries from them.
    for node in [other, (leader + 2) % 3] {
        assert_eq!(send_until_served(&http, Method::PUT, &c.url(node, &kv), Some("put-1"), "first").await, put);
        assert_eq!(send_until_served(&http, Method::POST, &c.url(node, &counter), Some("add-1"), "5").await, add);
        assert_eq!(send_until_served(&http, Method::POST, &c.url(node, "/api"), Some(create_key), &doc).await, created);
    }
    let value = send_until_served(&http, Method::GET, &c.url(other, &kv), None, "").await;
    assert_eq!(value.body, "other");
    let value_url = c.url(other, &format!("{counter}/consistent_value"));
    assert_eq!(send_until_served(&http, Method::GET, &value_url, None, "").await.body, "5");
    // The killed node comes back with the records in its own log and file.
    c.start_node(leader);
    c.wait_voters(other, &[0, 1, 2]).await;
    assert_eq!(send_until_served(&http, Method::PUT, &c.url(leader, &kv), Some("put-1"), "first").await, put);
}
