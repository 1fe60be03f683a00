//! `/api` (ExDaas-compatible documents) and `/ping`, black-box against the real `shale` binary: id allocation
//! (sequential, parallel, never reused across `kill -9`), explicit ids, every JSON type, the `ONLY` and
//! `FILTER_BOOL` commands over GET (nested query parameters) and POST, and a 400 JSON error for every
//! malformed input.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use common::{client, temp_dir, BinaryServer};

/// Shards the binary runs with (and that `shard_of` assumes).
const SHARDS: u32 = 4;

// ---- the real binary, killed on drop ----

/// `shale --port 0 --shards 4 --durability immediate --data-dir dir`, once `/readyz` answers 200.
async fn start(dir: &Path) -> BinaryServer {
    let shards = SHARDS.to_string();
    let server = BinaryServer::start(dir, &["--shards", &shards, "--durability", "immediate"], &[("RUST_LOG", "warn")]);
    common::wait_ready(&server.base()).await;
    server
}

/// The shard that stores document `id`.
fn shard_of(id: u64) -> u32 {
    shale::placement::shard_for(&id.to_be_bytes(), SHARDS).0
}

// ---- requests ----

/// `POST path` with a raw body; returns status and body text.
async fn post_raw(http: &Client, s: &BinaryServer, path: &str, body: &str) -> (StatusCode, String) {
    let res = http
        .post(s.url(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST failed");
    let status = res.status();
    (status, res.text().await.expect("reading the body"))
}

async fn get_raw(http: &Client, s: &BinaryServer, path: &str) -> (StatusCode, String) {
    let res = http.get(s.url(path)).send().await.expect("GET failed");
    let status = res.status();
    (status, res.text().await.expect("reading the body"))
}

/// `POST /api` that must answer 200 with `{"id": .., "data": <data>}`; returns the id.
async fn create(http: &Client, s: &BinaryServer, id: Value, data: &Value) -> u64 {
    let (status, body) = post_raw(http, s, "/api", &json!({"id": id, "data": data}).to_string()).await;
    assert_eq!(status, StatusCode::OK, "POST /api: {body}");
    let v: Value = serde_json::from_str(&body).expect("the answer is JSON");
    assert_eq!(v["data"], *data, "POST /api echoes the data");
    v["id"].as_u64().unwrap_or_else(|| panic!("id is a positive integer: {body}"))
}

/// `GET /api?id=N` that must answer 200; returns `data`.
async fn read(http: &Client, s: &BinaryServer, id: u64) -> Value {
    let (status, body) = get_raw(http, s, &format!("/api?id={id}")).await;
    assert_eq!(status, StatusCode::OK, "GET /api?id={id}: {body}");
    let v: Value = serde_json::from_str(&body).expect("the answer is JSON");
    assert_eq!(v["id"], json!(id), "GET /api?id={id} answers its id: {body}");
    v["data"].clone()
}

/// Asserts a 400 with the JSON error body of `docs/api.md`.
fn assert_bad_request(status: StatusCode, body: &str, what: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: error body is not JSON: {body}"));
    assert_eq!(v["error"], "bad_request", "{what}: {body}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
}

// ---- tests ----

#[tokio::test]
async fn ping_answers_status_ok() {
    let dir = temp_dir();
    let s = start(dir.path()).await;
    let res = client().get(s.url("/ping")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    assert_eq!(res.text().await.unwrap(), r#"{"status":"OK"}"#);
}

#[tokio::test]
async fn null_ids_are_allocated_1_2_3_and_read_back() {
    let dir = temp_dir();
    let s = start(dir.path()).await;
    let http = client();
    for want in 1..=3u64 {
        let data = json!({"n": want});
        let (status, body) = post_raw(&http, &s, "/api", &json!({"id": null, "data": data}).to_string()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, format!(r#"{{"id":{want},"data":{{"n":{want}}}}}"#));
    }
    // A body without "id" is a create too.
    assert_eq!(create(&http, &s, Value::Null, &json!("x")).await, 4);
    let (status, body) = post_raw(&http, &s, "/api", r#"{"data": "no id key"}"#).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"id":5,"data":"no id key"}"#));
    for id in 1..=3u64 {
        let (status, body) = get_raw(&http, &s, &format!("/api?id={id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, format!(r#"{{"id":{id},"data":{{"n":{id}}}}}"#));
    }
    let (status, body) = get_raw(&http, &s, "/api?id=424242").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"id":424242,"data":null}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_creates_get_exactly_1_to_n() {
    const N: u64 = 300;
    let dir = temp_dir();
    let s = start(dir.path()).await;
    let http = client();
    let ids: Vec<(u64, u64)> = stream::iter(0..N)
        .map(|i| {
            let (http, s) = (&http, &s);
            async move { (i, create(http, s, Value::Null, &json!({"i": i, "tag": "parallel"})).await) }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let set: BTreeSet<u64> = ids.iter().map(|&(_, id)| id).collect();
    assert_eq!(set.len() as u64, N, "every create got a distinct id");
    assert_eq!(set, (1..=N).collect::<BTreeSet<_>>(), "no crash happened, so the ids are exactly 1..=N");
    let shards: BTreeSet<u32> = set.iter().map(|&id| shard_of(id)).collect();
    assert_eq!(shards.len() as u32, SHARDS, "the documents landed in every shard");
    for (i, id) in ids {
        assert_eq!(read(&http, &s, id).await, json!({"i": i, "tag": "parallel"}), "document {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_never_overwrites_explicit_ids_written_concurrently() {
    let dir = temp_dir();
    let s = start(dir.path()).await;
    let http = client();
    // Explicit writes of ids 1..=60 race with 120 null-id creates.
    let work: Vec<Option<u64>> = (1..=60).map(Some).chain((0..120).map(|_| None)).collect();
    let created: Vec<(usize, u64)> = stream::iter(work.into_iter().enumerate())
        .map(|(i, explicit)| {
            let (http, s) = (&http, &s);
            async move {
                match explicit {
                    Some(id) => {
                        assert_eq!(create(http, s, json!(id), &json!({"explicit": id})).await, id);
                        None
                    }
                    None => Some((i, create(http, s, Value::Null, &json!({"auto": i})).await)),
                }
            }
        })
        .buffer_unordered(40)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    for id in 1..=60u64 {
        assert_eq!(read(&http, &s, id).await, json!({"explicit": id}), "explicit document {id}");
    }
    let ids: BTreeSet<u64> = created.iter().map(|&(_, id)| id).collect();
    assert_eq!(ids.len(), created.len(), "allocated ids are distinct");
    for (i, id) in created {
        if id > 60 {
            assert_eq!(read(&http, &s, id).await, json!({"auto": i}), "allocated document {id}");
        }
    }
}

#[tokio::test]
async fn explicit_ids_create_and_replace() {
    let dir = temp_dir();
    let s = start(dir.path()).await;
    let http = client();
    let (status, body) = post_raw(&http, &s, "/api", r#"{"id": 7, "data": {"v": 1}}"#).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"id":7,"data":{"v":1}}"#));
    assert_eq!(read(&http, &s, 7).await, json!({"v": 1}));
    // A digit string is the same id; this replaces document 7.
    let (status, body) = post_raw(&http, &s, "/api", r#"{"id": "7", "data": [2]}"#).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"id":7,"data":[2]}"#));
    assert_eq!(read(&http, &s, 7).await, json!([2]));
    // Posting the unchanged document again is still a 200 with the document.
    let (status, body) = post_raw(&http, &s, "/api", r#"{"id": 7, "data": [2]}"#).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"id":7,"data":[2]}"#));
    // New ids go above every explicit id.
    assert_eq!(create(&http, &s, Value::Null, &json!("first")).await, 8);
    assert_eq!(create(&http, &s, json!(1000), &json!("thousand")).await, 1000);
    let next = create(&http, &s, Value::Null, &json!("after")).await;
    assert!(next > 1000, "a null-id create after id 1000 got {next}");
    // An explicit id below the allocator does not move it back.
    assert_eq!(create(&http, &s, json!(3), &json!("three")).await, 3);
    let after = create(&http, &s, Value::Null, &json!("after 3")).await;
    assert!(after > next, "{after} after {next}");
    assert_eq!(read(&http, &s, 1000).await, json!("thousand"));
    assert_eq!(read(&http, &s, 3).await, json!("three"));
    // Extra top-level fields are ignored.
    let (status, body) = post_raw(&http, &s, "/api", r#"{"id": 9, "data": 1, "extra": true}"#).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"id":9,"data":1}"#));
}

#[tokio::test]
async fn every_json_type_round_trips_with_key_order() {
    let dir = temp_dir();
    let s = start(dir.path()).await;
    let http = client();
    // Compact JSON texts, which the server must echo and return byte for byte.
    let texts = [
        r#"{"zeta":1,"alpha":{"y":[1,2,{"b":null,"a":true}],"x":"é\"\\\n"},"mid":-2.5}"#,
        r#"[3,"two",{"one":1},[],{},null,false]"#,
        r#""a plain string with ☃ and \"quotes\"""#,
        "12345678901234567890",
        "-42",
        "1.5",
        "0",
        "true",
        "false",
        "null",
        r#"{}"#,
        r#"[]"#,
        r#""""#,
    ];
    for (i, text) in texts.iter().enumerate() {
        // Once with an allocated id, once with an explicit one.
        let (status, body) = post_raw(&http, &s, "/api", &format!(r#"{{"id":null,"data":{text}}}"#)).await;
        assert_eq!(status, StatusCode::OK, "{text}: {body}");
        let id: u64 = serde_json::from_str::<Value>(&body).unwrap()["id"].as_u64().unwrap();
        assert_eq!(body, format!(r#"{{"id":{id},"data":{text}}}"#));
        let explicit = 10_000 + i as u64;
        let (status, body) = post_raw(&http, &s, "/api", &format!(r#"{{"data":{text},"id":{explicit}}}"#)).await;
        assert_eq!((status, body), (StatusCode::OK, format!(r#"{{"id":{explicit},"data":{text}}}"#)));
        for id in [id, explicit] {
            let (status, body) = get_raw(&http, &s, &format!("/api?id={id}")).await;
            assert_eq!((status, body), (StatusCode::OK, format!(r#"{{"id":{id},"data":{text}}}"#)), "{text}");
        }
    }
    // Pretty-printed input comes back compact, same keys in the same order.
    let (status, body) =
        post_raw(&http, &s, "/api", "{ \"id\" : 77 ,\n \"data\" : { \"b\" : 1 , \"a\" : [ 2 ] } }").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"id":77,"data":{"b":1,"a":[2]}}"#));
}

/// The document the command tests query.
fn colors_doc() -> Value {
    json!({
        "a": 1,
        "b": {"nested": "x"},
        "name": "palette",
        "colors": [
            {"name": "sky", "is_blue": true},
            {"name": "sun", "is_blue": false},
            {"name": "sea", "is_blue": true},
            {"name": "grass"},
            {"name": "ink", "is_blue": "true"}
        ]
    })
}

fn blue() -> Value {
    json!([{"name": "sky", "is_blue": true}, {"name": "sea", "is_blue": true}])
}

#[tokio::test]
async fn commands_over_get_and_post() {
    let dir = temp_dir();
    let s = start(dir.path()).await;
    let http = client();
    let id = create(&http, &s, Value::Null, &colors_doc()).await;

    let get_json = |path: String| {
        let (http, s) = (&http, &s);
        async move {
            let (status, body) = get_raw(http, s, &path).await;
            assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
            serde_json::from_str::<Value>(&body).expect("JSON answer")
        }
    };
    let post_json = |body: Value| {
        let (http, s) = (&http, &s);
        async move {
            let (status, text) = post_raw(http, s, "/api/cmd", &body.to_string()).await;
            assert_eq!(status, StatusCode::OK, "POST /api/cmd {body}: {text}");
            serde_json::from_str::<Value>(&text).expect("JSON answer")
        }
    };

    // ONLY, plain brackets and percent-encoded brackets.
    let only = json!({"values": [1, null, {"nested": "x"}]});
    assert_eq!(
        get_json(format!("/api/cmd?id={id}&cmd[query]=ONLY&cmd[keys][]=a&cmd[keys][]=zz&cmd[keys][]=b")).await,
        only
    );
    assert_eq!(
        get_json(format!(
            "/api/cmd?id={id}&cmd%5Bquery%5D=ONLY&cmd%5Bkeys%5D%5B%5D=a&cmd%5Bkeys%5D%5B%5D=zz&cmd%5Bkeys%5D%5B%5D=b"
        ))
        .await,
        only
    );
    assert_eq!(
        get_json(format!("/api/cmd?cmd[keys][]=name&cmd[query]=ONLY&id={id}")).await,
        json!({"values": ["palette"]})
    );
    assert_eq!(post_json(json!({"id": id, "cmd": {"query": "ONLY", "keys": ["a", "zz", "b"]}})).await, only);
    assert_eq!(
        post_json(json!({"id": id.to_string(), "cmd": {"query": "ONLY", "keys": []}})).await,
        json!({"values": []})
    );

    // FILTER_BOOL keeps the elements whose field is exactly `true`, in order.
    assert_eq!(
        get_json(format!("/api/cmd?id={id}&cmd[query]=FILTER_BOOL&cmd[keys][key]=colors&cmd[keys][by]=is_blue")).await,
        blue()
    );
    assert_eq!(
        get_json(format!(
            "/api/cmd?id={id}&cmd%5Bquery%5D=FILTER_BOOL&cmd%5Bkeys%5D%5Bkey%5D=colors&cmd%5Bkeys%5D%5Bby%5D=is_blue"
        ))
        .await,
        blue()
    );
    assert_eq!(
        post_json(json!({"id": id, "cmd": {"query": "FILTER_BOOL", "keys": {"key": "colors", "by": "is_blue"}}})).await,
        blue()
    );
    assert_eq!(
        post_json(json!({"id": id, "cmd": {"query": "FILTER_BOOL", "keys": {"key": "colors", "by": "nobody"}}})).await,
        json!([])
    );

    // A document that does not exist: ONLY gives nulls.
    assert_eq!(get_json("/api/cmd?id=999999&cmd[query]=ONLY&cmd[keys][]=a".into()).await, json!({"values": [null]}));
}

#[tokio::test]
async fn unknown_query_is_the_exact_exdaas_error() {
    let dir = temp_dir();
    let s = start(dir.path()).await;
    let http = client();
    let id = create(&http, &s, Value::Null, &colors_doc()).await;
    let want = r#"{"error":"bad_request","message":"NOPE not supported"}"#;
    let (status, body) = get_raw(&http, &s, &format!("/api/cmd?id={id}&cmd[query]=NOPE&cmd[keys][]=a")).await;
    assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, want));
    let (status, body) =
        post_raw(&http, &s, "/api/cmd", &json!({"id": id, "cmd": {"query": "NOPE"}}).to_string()).await;
    assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, want));
    // Also for a document that does not exist.
    let (status, body) = get_raw(&http, &s, "/api/cmd?id=5555&cmd[query]=NOPE").await;
    assert_eq!((status, body.as_str()), (StatusCode::BAD_REQUEST, want));
}

#[tokio::test]
async fn malformed_document_writes_are_400_and_store_nothing() {
    let dir = temp_dir();
    let s = start(dir.path()).await;
    let http = client();
    let bodies = [
        "",
        "not json",
        r#"{"id": null, "data": 1"#,
        r#"{"id": null, "data": 1} trailing"#,
        "[1, 2]",
        r#""a string""#,
        "42",
        "null",
        "{}",
        r#"{"id": null}"#,
        r#"{"id": 5}"#,
        r#"{"id": 0, "data": 1}"#,
        r#"{"id": -1, "data": 1}"#,
        r#"{"id": 1.5, "data": 1}"#,
        r#"{"id": 2.5e0, "data": 1}"#,
        r#"{"id": "abc", "data": 1}"#,
        r#"{"id": "", "data": 1}"#,
        r#"{"id": "0", "data": 1}"#,
        r#"{"id": "-3", "data": 1}"#,
        r#"{"id": " 7", "data": 1}"#,
        r#"{"id": "7a", "data": 1}"#,
        r#"{"id": "1.5", "data": 1}"#,
        r#"{"id": true, "data": 1}"#,
        r#"{"id": false, "data": 1}"#,
        r#"{"id": [7], "data": 1}"#,
        r#"{"id": {"n": 7}, "data": 1}"#,
        r#"{"id": 99999999999999999999, "data": 1}"#,
        r#"{"id": "99999999999999999999", "data": 1}"#,
        r#"{"id": 1e400, "data": 1}"#,
    ];
    for body in bodies {
        let (status, text) = post_raw(&http, &s, "/api", body).await;
        assert_bad_request(status, &text, &format!("POST /api {body:?}"));
    }
    // Not valid UTF-8.
    let res = http.post(s.url("/api")).body(vec![b'{', 0xff, 0xfe, b'}']).send().await.unwrap();
    let status = res.status();
    assert_bad_request(status, &res.text().await.unwrap(), "POST /api with invalid UTF-8");
    // Nothing was stored: the first allocation is still id 1, and id 7 is empty.
    assert_eq!(create(&http, &s, Value::Null, &json!("first")).await, 1);
    assert_eq!(read(&http, &s, 7).await, Value::Null);
    assert_eq!(read(&http, &s, 5).await, Value::Null);
}

#[tokio::test]
async fn malformed_reads_and_commands_are_400() {
    let dir = temp_dir();
    let s = start(dir.path()).await;
    let http = client();
    let id = create(&http, &s, Value::Null, &colors_doc()).await;
    let gets = [
        "/api".to_string(),
        "/api?id=".into(),
        "/api?id=0".into(),
        "/api?id=-1".into(),
        "/api?id=1.5".into(),
        "/api?id=abc".into(),
        "/api?id=99999999999999999999".into(),
        "/api?ids=1".into(),
        "/api/cmd".into(),
        format!("/api/cmd?id={id}"),
        "/api/cmd?cmd[query]=ONLY&cmd[keys][]=a".into(),
        format!("/api/cmd?id={id}&cmd[keys][]=a"),
        "/api/cmd?id=0&cmd[query]=ONLY&cmd[keys][]=a".into(),
        "/api/cmd?id=abc&cmd[query]=ONLY&cmd[keys][]=a".into(),
        format!("/api/cmd?id={id}&cmd[query]=ONLY"),
        format!("/api/cmd?id={id}&cmd[query]=ONLY&cmd[keys]=a"),
        format!("/api/cmd?id={id}&cmd[query]=ONLY&cmd[keys][x]=a"),
        format!("/api/cmd?id={id}&cmd[query=ONLY&cmd[keys][]=a"),
        format!("/api/cmd?id={id}&cmd[query][]=ONLY&cmd[keys][]=a"),
        format!("/api/cmd?id={id}&cmd[query]=ONLY&cmd[keys][]=a&cmd[keys][k]=b"),
        format!("/api/cmd?id={id}&cmd[query]=FILTER_BOOL&cmd[keys][key]=a&cmd[keys][by]=is_blue"),
        format!("/api/cmd?id={id}&cmd[query]=FILTER_BOOL&cmd[keys][key]=name&cmd[keys][by]=is_blue"),
        format!("/api/cmd?id={id}&cmd[query]=FILTER_BOOL&cmd[keys][key]=b&cmd[keys][by]=is_blue"),
        format!("/api/cmd?id={id}&cmd[query]=FILTER_BOOL&cmd[keys][key]=colors"),
        format!("/api/cmd?id={id}&cmd[query]=FILTER_BOOL&cmd[keys][]=colors"),
        format!("/api/cmd?id={id}&cmd[query]=FILTER_BOOL"),
        format!("/api/cmd?id={id}&a[b][c][d][e][f]=deep&cmd[query]=ONLY&cmd[keys][]=a"),
    ];
    for path in &gets {
        let (status, body) = get_raw(&http, &s, path).await;
        assert_bad_request(status, &body, &format!("GET {path}"));
    }
    let posts = [
        "".to_string(),
        "not json".into(),
        "[1]".into(),
        r#""ONLY""#.into(),
        "{}".into(),
        json!({"cmd": {"query": "ONLY", "keys": ["a"]}}).to_string(),
        json!({"id": id}).to_string(),
        json!({"id": id, "cmd": {"keys": ["a"]}}).to_string(),
        json!({"id": id, "cmd": "ONLY"}).to_string(),
        json!({"id": id, "cmd": {"query": 1, "keys": ["a"]}}).to_string(),
        json!({"id": 0, "cmd": {"query": "ONLY", "keys": ["a"]}}).to_string(),
        json!({"id": -1, "cmd": {"query": "ONLY", "keys": ["a"]}}).to_string(),
        json!({"id": 1.5, "cmd": {"query": "ONLY", "keys": ["a"]}}).to_string(),
        json!({"id": "abc", "cmd": {"query": "ONLY", "keys": ["a"]}}).to_string(),
        json!({"id": true, "cmd": {"query": "ONLY", "keys": ["a"]}}).to_string(),
        json!({"id": null, "cmd": {"query": "ONLY", "keys": ["a"]}}).to_string(),
        json!({"id": id, "cmd": {"query": "ONLY", "keys": "a"}}).to_string(),
        json!({"id": id, "cmd": {"query": "ONLY"}}).to_string(),
        json!({"id": id, "cmd": {"query": "ONLY", "keys": [1, 2]}}).to_string(),
        json!({"id": id, "cmd": {"query": "ONLY", "keys": {"key": "a"}}}).to_string(),
        json!({"id": id, "cmd": {"query": "FILTER_BOOL", "keys": {"key": "a", "by": "is_blue"}}}).to_string(),
        json!({"id": id, "cmd": {"query": "FILTER_BOOL", "keys": {"key": "b", "by": "is_blue"}}}).to_string(),
        json!({"id": id, "cmd": {"query": "FILTER_BOOL", "keys": {"key": "colors"}}}).to_string(),
        json!({"id": id, "cmd": {"query": "FILTER_BOOL", "keys": ["colors", "is_blue"]}}).to_string(),
        json!({"id": id, "cmd": {"query": "FILTER_BOOL", "keys": {"key": 1, "by": 2}}}).to_string(),
    ];
    for body in &posts {
        let (status, text) = post_raw(&http, &s, "/api/cmd", body).await;
        assert_bad_request(status, &text, &format!("POST /api/cmd {body}"));
    }
    // Wrong methods are 405 with a JSON body; the document is untouched.
    for path in ["/api", "/api/cmd"] {
        let res = http.put(s.url(path)).body("{}").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "PUT {path}");
        let v: Value = res.json().await.expect("JSON error body");
        assert_eq!(v["error"], "method_not_allowed");
    }
    assert_eq!(read(&http, &s, id).await, colors_doc());
}

#[tokio::test]
async fn documents_and_ids_survive_kill_9() {
    let dir = temp_dir();
    let http = client();
    let s = start(dir.path()).await;
    for i in 1..=20u64 {
        assert_eq!(create(&http, &s, Value::Null, &json!({"i": i})).await, i);
    }
    assert_eq!(create(&http, &s, json!(500), &json!("explicit")).await, 500);
    assert_eq!(create(&http, &s, json!(3), &json!("replaced")).await, 3);
    s.kill9();

    let s = start(dir.path()).await;
    for i in 1..=20u64 {
        let want = if i == 3 { json!("replaced") } else { json!({"i": i}) };
        assert_eq!(read(&http, &s, i).await, want, "document {i} after kill -9");
    }
    assert_eq!(read(&http, &s, 500).await, json!("explicit"));
    let next = create(&http, &s, Value::Null, &json!("after restart")).await;
    assert!(next > 500, "the first id after the restart is {next}");
    s.kill9();

    // And again: the id handed out after the first restart is not reused after a second one.
    let s = start(dir.path()).await;
    assert_eq!(read(&http, &s, next).await, json!("after restart"));
    let again = create(&http, &s, Value::Null, &json!("second restart")).await;
    assert!(again > next, "{again} after {next}");
}

#[tokio::test]
async fn the_highest_id_in_any_shard_is_never_reused_after_kill_9() {
    let http = client();
    for shard in 0..SHARDS {
        let dir = temp_dir();
        let s = start(dir.path()).await;
        // Low allocated ids spread over the shards, then the highest id, explicit, in `shard`.
        for i in 1..=8u64 {
            assert_eq!(create(&http, &s, Value::Null, &json!(i)).await, i);
        }
        let high = (2_000..3_000).find(|&id| shard_of(id) == shard).expect("some id of the range lands in the shard");
        assert_eq!(create(&http, &s, json!(high), &json!("high")).await, high);
        s.kill9();

        let s = start(dir.path()).await;
        let next = create(&http, &s, Value::Null, &json!("next")).await;
        assert!(next > high, "shard {shard}: the highest id is {high}, the next allocation {next}");
        assert_eq!(read(&http, &s, high).await, json!("high"));
        s.kill9();

        // An allocated (not explicit) highest id, which may live in any shard, is not reused either.
        let s = start(dir.path()).await;
        let after = create(&http, &s, Value::Null, &json!("after")).await;
        assert!(after > next, "shard {shard}: {after} after {next}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_acknowledged_before_a_kill_9_mid_load_are_never_reused() {
    let dir = temp_dir();
    let http = client();
    let s = start(dir.path()).await;
    let acked: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let load = {
        let (http, base, acked, count) = (http.clone(), s.url("/api"), acked.clone(), count.clone());
        tokio::spawn(async move {
            // Creates until the server dies (at most 5000), 32 in flight.
            stream::iter(0..5000u64)
                .map(|i| {
                    let (http, base) = (http.clone(), base.clone());
                    async move {
                        let body = json!({"id": null, "data": {"i": i}}).to_string();
                        let res = http.post(&base).header("content-type", "application/json").body(body).send().await;
                        let res = res.ok()?;
                        if res.status() != StatusCode::OK {
                            return None;
                        }
                        let v: Value = res.json().await.ok()?;
                        Some((i, v["id"].as_u64()?))
                    }
                })
                .buffer_unordered(32)
                .take_while(|r| std::future::ready(r.is_some()))
                .for_each(|r| {
                    acked.lock().unwrap().extend(r);
                    count.fetch_add(1, Ordering::Relaxed);
                    std::future::ready(())
                })
                .await;
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while count.load(Ordering::Relaxed) < 200 {
        assert!(Instant::now() < deadline, "the load made no progress");
        assert!(!load.is_finished(), "the load stopped before the kill");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    s.kill9();
    tokio::time::timeout(Duration::from_secs(60), load).await.expect("the load ends once the server is gone").unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 200);
    let max = acked.iter().map(|&(_, id)| id).max().unwrap();

    let s = start(dir.path()).await;
    for &(i, id) in &acked {
        assert_eq!(read(&http, &s, id).await, json!({"i": i}), "acknowledged document {id}");
    }
    let next = create(&http, &s, Value::Null, &json!("after the crash")).await;
    assert!(next > max, "acknowledged ids went up to {max}; the first id after kill -9 is {next}");
}

#[tokio::test]
async fn explicit_ids_stop_at_2_pow_53_so_allocation_is_never_exhausted() {
    // An explicit id at the end of the u64 range would push the allocator past it: the next null-id create would
    // wrap to id 0, or, capped, every later create would fail. Explicit ids stop at 2^53-1, far below the end of
    // the allocator's range, so allocation always has room.
    let max = shale::api::http::docs::MAX_WRITABLE_DOC_ID;
    let dir = temp_dir();
    let http = client();
    let s = start(dir.path()).await;
    for too_big in [json!(max + 1), json!(u64::MAX), json!((max + 1).to_string()), json!(u64::MAX.to_string())] {
        let body = json!({"id": too_big, "data": 1}).to_string();
        let (status, text) = post_raw(&http, &s, "/api", &body).await;
        assert_bad_request(status, &text, &format!("POST /api {body}"));
    }
    assert_eq!(create(&http, &s, json!(max), &json!("max")).await, max);
    assert_eq!(create(&http, &s, json!(null), &json!("next")).await, max + 1);
    s.kill9();

    let s = start(dir.path()).await;
    assert_eq!(read(&http, &s, max).await, json!("max"));
    assert_eq!(read(&http, &s, max + 1).await, json!("next"), "reads accept ids past the explicit limit");
    assert_eq!(create(&http, &s, json!(null), &json!("after restart")).await, max + 2);
    assert_eq!(read(&http, &s, 1).await, Value::Null);
}
