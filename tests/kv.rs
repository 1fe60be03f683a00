//! The `/kv` and health routes of `docs/api.md`, black-box over HTTP against an in-process server: every status
//! code, the JSON error bodies, ETags and preconditions, key and value limits, and listings across shards.

mod common;

use std::collections::BTreeSet;

use common::{client, temp_dir, TestServer};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::Value;
use shale::Config;

const MIB: usize = 1024 * 1024;

/// A running server with its temp dir (kept alive as long as the server).
struct Env {
    server: TestServer,
    http: Client,
    _dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = temp_dir();
        let server = TestServer::start(Config::for_test(dir.path()));
        Env { server, http: client(), _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    async fn req(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Response {
        let mut r = self.http.request(method, self.url(path));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.body(b);
        }
        r.send().await.expect("request failed")
    }

    async fn put(&self, key_path: &str, body: impl Into<Vec<u8>>, headers: &[(&str, &str)]) -> Response {
        self.req(Method::PUT, &format!("/kv/{key_path}"), headers, Some(body.into())).await
    }

    async fn get(&self, key_path: &str, headers: &[(&str, &str)]) -> Response {
        self.req(Method::GET, &format!("/kv/{key_path}"), headers, None).await
    }

    async fn head(&self, key_path: &str, headers: &[(&str, &str)]) -> Response {
        self.req(Method::HEAD, &format!("/kv/{key_path}"), headers, None).await
    }

    async fn delete(&self, key_path: &str, headers: &[(&str, &str)]) -> Response {
        self.req(Method::DELETE, &format!("/kv/{key_path}"), headers, None).await
    }

    /// PUT that must succeed with `want` (201 or 204); returns the ETag.
    async fn put_ok(&self, key_path: &str, body: impl Into<Vec<u8>>, headers: &[(&str, &str)], want: u16) -> String {
        let res = self.put(key_path, body, headers).await;
        assert_eq!(res.status().as_u16(), want, "PUT /kv/{key_path}");
        let etag = etag(&res);
        assert!(res.bytes().await.unwrap().is_empty(), "a {want} answer to PUT has no body");
        etag
    }

    /// GET that must answer 200; returns (body, content type, etag).
    async fn get_ok(&self, key_path: &str) -> (Vec<u8>, String, String) {
        let res = self.get(key_path, &[]).await;
        assert_eq!(res.status(), StatusCode::OK, "GET /kv/{key_path}");
        let ct = header(&res, CONTENT_TYPE.as_str());
        let tag = etag(&res);
        (res.bytes().await.unwrap().to_vec(), ct, tag)
    }

    async fn list(&self, query: &str) -> (Vec<String>, Option<String>) {
        let res = self.req(Method::GET, &format!("/kv?{query}"), &[], None).await;
        assert_eq!(res.status(), StatusCode::OK, "GET /kv?{query}");
        assert!(header(&res, "content-type").starts_with("application/json"));
        let body: Value = res.json().await.unwrap();
        let keys = body["keys"].as_array().expect("keys is an array");
        let keys = keys.iter().map(|k| k.as_str().expect("a key is a string").to_string()).collect();
        let next = match &body["next"] {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => panic!("next is neither null nor a string: {other}"),
        };
        assert_eq!(body.as_object().unwrap().len(), 2, "only keys and next: {body}");
        (keys, next)
    }
}

fn header(res: &Response, name: &str) -> String {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {} answer", res.status()))
        .to_str()
        .unwrap()
        .to_string()
}

/// The ETag of an answer; asserts it is strong (`"..."`, no `W/`).
fn etag(res: &Response) -> String {
    let tag = header(res, ETAG.as_str());
    assert!(tag.len() >= 3 && tag.starts_with('"') && tag.ends_with('"'), "strong ETag expected, got {tag}");
    tag
}

/// Asserts a `docs/api.md` error answer: the status, a JSON body with the code and a non-empty message.
async fn assert_error(res: Response, status: u16, code: &str) {
    assert_eq!(res.status().as_u16(), status, "status of {}", res.url());
    let ct = header(&res, CONTENT_TYPE.as_str());
    assert!(ct.starts_with("application/json"), "JSON error body expected, Content-Type is {ct}");
    let body: Value = res.json().await.expect("error body is JSON");
    assert_eq!(body["error"], code, "error code in {body}");
    let message = body["message"].as_str().expect("message is a string");
    assert!(!message.is_empty(), "message is empty in {body}");
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

// ---- PUT / GET / HEAD ----

#[tokio::test]
async fn put_creates_then_replaces_with_new_etags() {
    let env = Env::new();
    let first = env.put_ok("greeting", "hello", &[], 201).await;
    let (body, _, tag) = env.get_ok("greeting").await;
    assert_eq!(body, b"hello");
    assert_eq!(tag, first, "GET shows the ETag PUT returned");

    let second = env.put_ok("greeting", "world", &[], 204).await;
    assert_ne!(first, second, "a new value gets a new ETag");
    let (body, _, tag) = env.get_ok("greeting").await;
    assert_eq!(body, b"world");
    assert_eq!(tag, second);
}

#[tokio::test]
async fn content_type_is_stored_or_defaults_to_octet_stream() {
    let env = Env::new();
    env.put_ok("typed", "{\"a\":1}", &[("content-type", "application/json; charset=utf-8")], 201).await;
    let (_, ct, _) = env.get_ok("typed").await;
    assert_eq!(ct, "application/json; charset=utf-8");

    env.put_ok("untyped", "raw", &[], 201).await;
    let (_, ct, _) = env.get_ok("untyped").await;
    assert_eq!(ct, "application/octet-stream");

    // Replacing without a Content-Type falls back to the default again.
    env.put_ok("typed", "x", &[], 204).await;
    let (_, ct, _) = env.get_ok("typed").await;
    assert_eq!(ct, "application/octet-stream");
}

#[tokio::test]
async fn etag_changes_when_value_or_content_type_changes() {
    let env = Env::new();
    let a = env.put_ok("k", "same", &[("content-type", "text/plain")], 201).await;
    let b = env.put_ok("k", "same", &[("content-type", "text/csv")], 204).await;
    assert_ne!(a, b, "a new content type gets a new ETag");
    let c = env.put_ok("k", "other", &[("content-type", "text/csv")], 204).await;
    assert_ne!(b, c, "a new value gets a new ETag");
    assert_ne!(a, c);
    let (body, ct, tag) = env.get_ok("k").await;
    assert_eq!((body.as_slice(), ct.as_str(), tag.as_str()), (&b"other"[..], "text/csv", c.as_str()));
}

#[tokio::test]
async fn head_has_the_get_status_and_headers_without_body() {
    let env = Env::new();
    let tag = env.put_ok("h", "twelve bytes", &[("content-type", "text/plain")], 201).await;
    let res = env.head("h", &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(etag(&res), tag);
    assert_eq!(header(&res, "content-type"), "text/plain");
    assert_eq!(header(&res, CONTENT_LENGTH.as_str()), "12");
    assert!(res.bytes().await.unwrap().is_empty(), "HEAD has no body");

    let res = env.head("h", &[("if-none-match", &tag)]).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert!(res.bytes().await.unwrap().is_empty());

    let res = env.head("absent", &[]).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(res.bytes().await.unwrap().is_empty(), "HEAD 404 has no body");
}

#[tokio::test]
async fn get_of_absent_key_is_404_json() {
    let env = Env::new();
    assert_error(env.get("nothing-here", &[]).await, 404, "not_found").await;
}

// ---- conditional requests ----

#[tokio::test]
async fn if_none_match_on_get_gives_304() {
    let env = Env::new();
    let tag = env.put_ok("c", "v1", &[], 201).await;
    let inner = tag.trim_matches('"').to_string();

    let res = env.get("c", &[(IF_NONE_MATCH.as_str(), &tag)]).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(etag(&res), tag, "304 carries the ETag");
    assert!(res.bytes().await.unwrap().is_empty(), "304 has no body");

    // Weak comparison for If-None-Match: W/ matches; a list matches if any member does; * matches any value.
    for value in [format!("W/\"{inner}\""), format!("\"nope\", {tag}"), format!("W/\"0\", W/{tag}"), "*".into()] {
        let res = env.get("c", &[(IF_NONE_MATCH.as_str(), &value)]).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "If-None-Match: {value}");
        assert!(res.bytes().await.unwrap().is_empty());
    }

    // Not matching: the full answer.
    let res = env.get("c", &[(IF_NONE_MATCH.as_str(), "\"ffffffff\", W/\"fffffffe\"")]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap(), "v1");

    // After a change the old ETag no longer matches.
    let new = env.put_ok("c", "v2", &[], 204).await;
    let res = env.get("c", &[(IF_NONE_MATCH.as_str(), &tag)]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(etag(&res), new);
    assert_eq!(res.bytes().await.unwrap(), "v2");
}

#[tokio::test]
async fn if_match_on_put() {
    let env = Env::new();
    let tag = env.put_ok("m", "v1", &[], 201).await;

    // Mismatch: 412, nothing changes.
    assert_error(env.put("m", "bad", &[(IF_MATCH.as_str(), "\"123456789\"")]).await, 412, "precondition_failed").await;
    // If-Match is a strong comparison: a weak tag never matches.
    let weak = format!("W/{tag}");
    assert_error(env.put("m", "bad", &[(IF_MATCH.as_str(), &weak)]).await, 412, "precondition_failed").await;
    let (body, _, now) = env.get_ok("m").await;
    assert_eq!((body.as_slice(), now.as_str()), (&b"v1"[..], tag.as_str()), "a failed precondition changes nothing");

    // Match (alone and in a list): 204 with a new ETag.
    let tag2 = env.put_ok("m", "v2", &[(IF_MATCH.as_str(), &tag)], 204).await;
    assert_ne!(tag2, tag);
    let list = format!("\"abc\", {tag2}");
    let tag3 = env.put_ok("m", "v3", &[(IF_MATCH.as_str(), &list)], 204).await;
    // The old ETag is stale now.
    assert_error(env.put("m", "bad", &[(IF_MATCH.as_str(), &tag)]).await, 412, "precondition_failed").await;
    // `*` on an existing key: replaces.
    let tag4 = env.put_ok("m", "v4", &[(IF_MATCH.as_str(), "*")], 204).await;
    assert!(![&tag, &tag2, &tag3].contains(&&tag4));
    assert_eq!(env.get_ok("m").await.0, b"v4");

    // On an absent key, If-Match (a tag or `*`) is 412 and nothing is created.
    assert_error(env.put("absent", "x", &[(IF_MATCH.as_str(), "*")]).await, 412, "precondition_failed").await;
    assert_error(env.put("absent", "x", &[(IF_MATCH.as_str(), &tag4)]).await, 412, "precondition_failed").await;
    assert_error(env.get("absent", &[]).await, 404, "not_found").await;
}

#[tokio::test]
async fn if_none_match_star_is_create_only() {
    let env = Env::new();
    let tag = env.put_ok("once", "first", &[(IF_NONE_MATCH.as_str(), "*")], 201).await;
    assert_error(env.put("once", "second", &[(IF_NONE_MATCH.as_str(), "*")]).await, 412, "precondition_failed").await;
    let (body, _, now) = env.get_ok("once").await;
    assert_eq!(body, b"first");
    assert_eq!(now, tag);
    // After a delete, create-only succeeds again.
    assert_eq!(env.delete("once", &[]).await.status(), StatusCode::NO_CONTENT);
    env.put_ok("once", "third", &[(IF_NONE_MATCH.as_str(), "*")], 201).await;
}

#[tokio::test]
async fn delete_with_and_without_if_match() {
    let env = Env::new();
    let tag = env.put_ok("d", "v", &[], 201).await;

    assert_error(env.delete("d", &[(IF_MATCH.as_str(), "\"999999\"")]).await, 412, "precondition_failed").await;
    assert_eq!(env.get_ok("d").await.0, b"v", "a failed If-Match keeps the key");

    let res = env.delete("d", &[(IF_MATCH.as_str(), &tag)]).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(res.bytes().await.unwrap().is_empty());
    assert_error(env.get("d", &[]).await, 404, "not_found").await;
    assert_error(env.delete("d", &[]).await, 404, "not_found").await;
    // If-Match on an absent key: 412.
    assert_error(env.delete("d", &[(IF_MATCH.as_str(), "*")]).await, 412, "precondition_failed").await;
    assert_error(env.delete("d", &[(IF_MATCH.as_str(), &tag)]).await, 412, "precondition_failed").await;

    env.put_ok("d", "again", &[], 201).await;
    assert_eq!(env.delete("d", &[(IF_MATCH.as_str(), "*")]).await.status(), StatusCode::NO_CONTENT);
    assert_error(env.get("d", &[]).await, 404, "not_found").await;
}

// ---- keys ----

#[tokio::test]
async fn keys_with_slashes_unicode_and_plus() {
    let env = Env::new();
    env.put_ok("shopping/milk", "1", &[], 201).await;
    env.put_ok("shopping/bread/white", "2", &[], 201).await;
    assert_eq!(env.get_ok("shopping/milk").await.0, b"1");
    assert_eq!(env.get_ok("shopping/bread/white").await.0, b"2");
    assert_error(env.get("shopping", &[]).await, 404, "not_found").await;

    // %2F and / are the same key.
    assert_eq!(env.get_ok("shopping%2Fmilk").await.0, b"1");
    env.put_ok("a%2Fb", "enc", &[], 201).await;
    assert_eq!(env.get_ok("a/b").await.0, b"enc");
    env.put_ok("a/b", "plain", &[], 204).await;
    assert_eq!(env.get_ok("a%2fb").await.0, b"plain");

    // Unicode keys travel as percent-encoded UTF-8.
    let unicode = "ключ/日本語/🦀";
    env.put_ok(&enc(unicode), "utf8", &[], 201).await;
    assert_eq!(env.get_ok(&enc(unicode)).await.0, b"utf8");

    // `+` is a plus, not a space.
    env.put_ok("a+b", "plus", &[], 201).await;
    assert_error(env.get("a%20b", &[]).await, 404, "not_found").await;
    assert_eq!(env.get_ok("a%2Bb").await.0, b"plus");
    env.put_ok("a%20b", "space", &[], 201).await;
    assert_eq!(env.get_ok("a+b").await.0, b"plus");

    let (keys, next) = env.list("").await;
    assert_eq!(next, None);
    let want: BTreeSet<&str> =
        ["shopping/milk", "shopping/bread/white", "a/b", unicode, "a+b", "a b"].into_iter().collect();
    assert_eq!(keys.iter().map(String::as_str).collect::<BTreeSet<_>>(), want);
}

#[tokio::test]
async fn key_length_limit_is_bytes_after_decoding() {
    let env = Env::new();
    let max = "k".repeat(1024);
    env.put_ok(&max, "ok", &[], 201).await;
    assert_eq!(env.get_ok(&max).await.0, b"ok");

    let long = "k".repeat(1025);
    assert_error(env.put(&long, "no", &[]).await, 414, "key_too_long").await;
    assert_error(env.get(&long, &[]).await, 414, "key_too_long").await;
    assert_error(env.delete(&long, &[]).await, 414, "key_too_long").await;

    // 512 two-byte characters are 1024 bytes (6 bytes each on the wire as %C3%A9): fine. One more byte: 414.
    let two_byte = "é".repeat(512);
    env.put_ok(&enc(&two_byte), "ok", &[], 201).await;
    assert_eq!(env.get_ok(&enc(&two_byte)).await.0, b"ok");
    let over = format!("{two_byte}x");
    assert_error(env.put(&enc(&over), "no", &[]).await, 414, "key_too_long").await;

    let (keys, _) = env.list("").await;
    assert_eq!(keys.len(), 2, "nothing stored by the refused PUTs");
}

#[tokio::test]
async fn empty_and_non_utf8_keys_are_400() {
    let env = Env::new();
    for method in [Method::PUT, Method::GET, Method::DELETE] {
        let body = (method == Method::PUT).then(|| b"v".to_vec());
        assert_error(env.req(method.clone(), "/kv/", &[], body.clone()).await, 400, "bad_request").await;
        for bad in ["%FF", "ok%C3%28", "%C0%80"] {
            let res = env.req(method.clone(), &format!("/kv/{bad}"), &[], body.clone()).await;
            assert_error(res, 400, "bad_request").await;
        }
    }
    let res = env.head("%FF", &[]).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.bytes().await.unwrap().is_empty());
    assert_eq!(env.list("").await.0, Vec::<String>::new(), "nothing stored");
}

// ---- values ----

#[tokio::test]
async fn value_size_limit_is_inclusive_and_refusals_store_nothing() {
    let env = Env::new();
    let max: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
    env.put_ok("big", max.clone(), &[], 201).await;
    let (body, _, _) = env.get_ok("big").await;
    assert!(body == max, "1 MiB value round-trips");

    let over = vec![7u8; MIB + 1];
    assert_error(env.put("new", over.clone(), &[]).await, 413, "payload_too_large").await;
    assert_error(env.get("new", &[]).await, 404, "not_found").await;

    env.put_ok("old", "small", &[], 201).await;
    assert_error(env.put("old", over, &[]).await, 413, "payload_too_large").await;
    assert_eq!(env.get_ok("old").await.0, b"small", "a refused PUT keeps the old value");
}

#[tokio::test]
async fn binary_and_empty_values_round_trip() {
    let env = Env::new();
    let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    env.put_ok("bin", all.clone(), &[], 201).await;
    assert_eq!(env.get_ok("bin").await.0, all);

    let tag = env.put_ok("empty", Vec::new(), &[("content-type", "text/plain")], 201).await;
    let res = env.get("empty", &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(etag(&res), tag);
    assert_eq!(header(&res, "content-type"), "text/plain");
    assert_eq!(header(&res, CONTENT_LENGTH.as_str()), "0");
    assert!(res.bytes().await.unwrap().is_empty());

    // An empty value is a value: replacing it is 204, deleting it 204.
    env.put_ok("empty", Vec::new(), &[], 204).await;
    assert_eq!(env.delete("empty", &[]).await.status(), StatusCode::NO_CONTENT);
}

// ---- listing ----

/// Writes `keys` with a few concurrent clients (each value is its key).
async fn put_all(env: &Env, keys: &[String]) {
    let chunks: Vec<Vec<String>> = keys.chunks(keys.len().div_ceil(8).max(1)).map(|c| c.to_vec()).collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let http = env.http.clone();
        let base = env.server.base();
        tasks.push(tokio::spawn(async move {
            for k in chunk {
                let res = http.put(format!("{base}/kv/{}", enc(&k))).body(k.clone()).send().await.unwrap();
                assert_eq!(res.status(), StatusCode::CREATED, "PUT {k}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn listing_orders_filters_and_pages_across_shards() {
    let env = Env::new();
    assert_eq!(env.list("").await, (vec![], None), "empty store");

    let mut keys: Vec<String> = (0..60).map(|i| format!("list/{i:03}")).collect();
    keys.extend((0..20).map(|i| format!("other/{i}")));
    keys.extend(["list".into(), "lisu".into(), "list/".into(), "list/zé".into(), "li".into()]);
    // The keys cover every shard, so the order checked below is a merge across shards.
    let shards: BTreeSet<u32> = keys.iter().map(|k| shale::placement::shard_for(k.as_bytes(), 4).0).collect();
    assert_eq!(shards.len(), 4, "test keys span all 4 shards");
    put_all(&env, &keys).await;

    let mut sorted = keys.clone();
    sorted.sort(); // byte order of UTF-8 strings
    let (all, next) = env.list("").await;
    assert_eq!(all, sorted, "every key, in ascending byte order");
    assert_eq!(next, None);

    let want: Vec<String> = sorted.iter().filter(|k| k.starts_with("list/")).cloned().collect();
    assert_eq!(want.len(), 62);
    let (got, next) = env.list(&format!("prefix={}", enc("list/"))).await;
    assert_eq!(got, want, "prefix filter");
    assert_eq!(next, None);

    // `after` is strictly after.
    let (got, _) = env.list(&format!("prefix={}&after={}", enc("list/"), enc("list/010"))).await;
    let strictly_after: Vec<String> = want.iter().filter(|k| k.as_str() > "list/010").cloned().collect();
    assert_eq!(strictly_after.len(), 50);
    assert_eq!(got, strictly_after);
    // `after` before the prefix range and after it.
    let (got, _) = env.list(&format!("prefix={}&after=a", enc("list/"))).await;
    assert_eq!(got, want);
    let (got, next) = env.list(&format!("prefix={}&after=z", enc("list/"))).await;
    assert_eq!((got, next), (vec![], None));

    // Pages of 7 until next is null give every key once, in order.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    for page in 0.. {
        assert!(page < 20, "pagination does not end");
        let q = match &after {
            None => format!("prefix={}&limit=7", enc("list/")),
            Some(a) => format!("prefix={}&limit=7&after={}", enc("list/"), enc(a)),
        };
        let (got, next) = env.list(&q).await;
        assert!(got.len() <= 7);
        match next {
            Some(n) => {
                assert_eq!(got.len(), 7, "a page with a next is full");
                assert_eq!(Some(&n), got.last(), "next is the after of the next page");
                paged.extend(got);
                after = Some(n);
            }
            None => {
                paged.extend(got);
                break;
            }
        }
    }
    assert_eq!(paged, want);

    // A page that holds exactly the last key: next is null (there is nothing after it).
    let (got, next) = env.list("prefix=other&limit=20").await;
    assert_eq!((got.len(), next), (20, None));
    let (got, next) = env.list("prefix=other&limit=19").await;
    assert_eq!(got.len(), 19);
    assert_eq!(next.as_ref(), got.last());
}

#[tokio::test]
async fn listing_limit_bounds_and_default() {
    let env = Env::new();
    for bad in ["0", "10001", "abc", "-1", "1.5", ""] {
        let res = env.req(Method::GET, &format!("/kv?limit={bad}"), &[], None).await;
        assert_error(res, 400, "bad_request").await;
    }
    let keys: Vec<String> = (0..1003).map(|i| format!("d{i:05}")).collect();
    put_all(&env, &keys).await;

    let (page, next) = env.list("").await;
    assert_eq!(page.len(), 1000, "default limit is 1000");
    assert_eq!(page[..], keys[..1000]);
    assert_eq!(next.as_deref(), Some("d00999"));
    let (rest, next) = env.list("after=d00999").await;
    assert_eq!(rest[..], keys[1000..]);
    assert_eq!(next, None);

    let (all, next) = env.list("limit=10000").await;
    assert_eq!((all.len(), next), (1003, None), "limit 10000 is allowed");
    let (one, next) = env.list("limit=1").await;
    assert_eq!((one, next.as_deref()), (vec!["d00000".to_string()], Some("d00000")));
}

// ---- routes and health ----

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_json() {
    let env = Env::new();
    for path in ["/nope", "/kvx", "/kv2/a", "/"] {
        assert_error(env.req(Method::GET, path, &[], None).await, 404, "not_found").await;
    }
    let cases = [
        (Method::POST, "/kv/a"),
        (Method::PATCH, "/kv/a"),
        (Method::PUT, "/kv"),
        (Method::DELETE, "/kv"),
        (Method::POST, "/healthz"),
        (Method::DELETE, "/readyz"),
        (Method::PUT, "/ping"),
    ];
    for (method, path) in cases {
        let body = Some(b"x".to_vec());
        assert_error(env.req(method, path, &[], body).await, 405, "method_not_allowed").await;
    }
    assert_error(env.get("a", &[]).await, 404, "not_found").await;
}

#[tokio::test]
async fn health_endpoints() {
    let env = Env::new();
    for path in ["/healthz", "/readyz"] {
        let res = env.req(Method::GET, path, &[], None).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert!(header(&res, "content-type").starts_with("text/plain"), "{path} is text/plain");
        assert_eq!(res.text().await.unwrap(), "ok\n");
    }
    let res = env.req(Method::GET, "/ping", &[], None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(header(&res, "content-type").starts_with("application/json"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "OK"}));
}
