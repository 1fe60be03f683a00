//! Observability, black-box over HTTP: an `X-Request-Id` on every answer (errors, 404s, 401s and 304s too), kept
//! when the client sends a usable one, unique when generated, and named in the request's log span; `/metrics`
//! is Prometheus text with every metric family shale exports, whose values move with the traffic, labelled by
//! route pattern and never by key; and a cache miss that read the disk moves the next misses to the blocking pool.
//! An operator must be able to trace one request and watch the load without the metrics leaking keys.
//!
//! The metrics recorder is process-wide, so the metrics tests run the real binary (a process of its own) and
//! assert exact deltas between two scrapes.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use common::{client, shard_files, temp_dir, wait_ready, BinaryServer, TestServer};
use reqwest::header::{HeaderValue, ETAG, IF_MATCH, IF_NONE_MATCH};
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use shale::Config;

const TOKEN: &str = "obs-rw";
const READ_TOKEN: &str = "obs-ro";

fn id_of(res: &reqwest::Response) -> String {
    let v =
        res.headers().get("x-request-id").unwrap_or_else(|| panic!("{} {}: no X-Request-Id", res.status(), res.url()));
    let id = v.to_str().expect("X-Request-Id is ASCII").to_string();
    assert!(!id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()), "X-Request-Id {id:?}");
    id
}

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let dir = temp_dir();
    let mut config = Config::for_test(dir.path());
    config.auth_token = vec![TOKEN.into()];
    config.auth_read_token = vec![READ_TOKEN.into()];
    config.max_value_bytes = 1024;
    config.max_key_bytes = 64;
    let server = TestServer::start(config);
    let http = client();
    let url = |p: &str| server.url(p);
    let rw = |r: RequestBuilder| r.bearer_auth(TOKEN);

    let created = rw(http.put(url("/kv/a"))).body("v1").send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let etag = created.headers()[ETAG].to_str().unwrap().to_string();
    let mut ids = vec![id_of(&created)];

    let requests: Vec<(RequestBuilder, StatusCode)> = vec![
        (http.get(url("/healthz")), StatusCode::OK),
        (http.get(url("/readyz")), StatusCode::OK),
        (rw(http.put(url("/kv/a"))).body("v2"), StatusCode::NO_CONTENT),
        (rw(http.get(url("/kv/a"))), StatusCode::OK),
        (rw(http.head(url("/kv/a"))), StatusCode::OK),
        (rw(http.get(url("/kv/a"))).header(IF_NONE_MATCH, "*"), StatusCode::NOT_MODIFIED),
        (rw(http.get(url("/kv/absent"))), StatusCode::NOT_FOUND),
        (rw(http.head(url("/kv/absent"))), StatusCode::NOT_FOUND),
        (rw(http.get(url("/no/such/route"))), StatusCode::NOT_FOUND),
        (rw(http.patch(url("/kv/a"))), StatusCode::METHOD_NOT_ALLOWED),
        (rw(http.get(url("/kv?limit=0"))), StatusCode::BAD_REQUEST),
        (rw(http.put(url("/kv/a"))).header(IF_MATCH, etag.as_str()), StatusCode::PRECONDITION_FAILED),
        (rw(http.put(url("/kv/big"))).body(vec![b'x'; 1025]), StatusCode::PAYLOAD_TOO_LARGE),
        (rw(http.put(url(&format!("/kv/{}", "k".repeat(65))))), StatusCode::URI_TOO_LONG),
        (rw(http.post(url("/api"))).body("{not json"), StatusCode::BAD_REQUEST),
        (http.get(url("/kv/a")), StatusCode::UNAUTHORIZED),
        (http.get(url("/kv/a")).bearer_auth("wrong"), StatusCode::UNAUTHORIZED),
        (http.put(url("/kv/a")).bearer_auth(READ_TOKEN).body("x"), StatusCode::FORBIDDEN),
        (rw(http.get(url("/metrics"))), StatusCode::OK),
        (rw(http.get(url("/openapi.json"))), StatusCode::OK),
    ];
    for (req, expected) in requests {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), expected, "{}", res.url());
        ids.push(id_of(&res));
    }
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "generated ids repeat: {ids:?}");
    server.stop();
}

#[tokio::test]
async fn a_usable_client_request_id_is_kept_and_an_unusable_one_replaced() {
    let dir = temp_dir();
    let mut config = Config::for_test(dir.path());
    config.auth_token = vec![TOKEN.into()];
    let server = TestServer::start(config);
    let http = client();

    let longest = "x".repeat(128);
    for sent in ["abc-123", "0f9a7c3e-5b6d-4e1f-8a2b-3c4d5e6f7a8b", "a", longest.as_str(), "!#$%&'*+-.^_`|~"] {
        for (req, status) in [
            (http.get(server.url("/healthz")), StatusCode::OK),
            (http.get(server.url("/kv/absent")).bearer_auth(TOKEN), StatusCode::NOT_FOUND),
            (http.get(server.url("/nowhere")).bearer_auth(TOKEN), StatusCode::NOT_FOUND),
            (http.get(server.url("/kv/absent")), StatusCode::UNAUTHORIZED),
            (http.delete(server.url("/healthz")), StatusCode::METHOD_NOT_ALLOWED),
        ] {
            let res = req.header("x-request-id", sent).send().await.unwrap();
            assert_eq!(res.status(), status);
            assert_eq!(id_of(&res), sent, "{}", res.url());
        }
    }
    let too_long = "y".repeat(129);
    for sent in [too_long.as_bytes(), b"has space", b"tab\there", b"", "caf\u{e9}".as_bytes()] {
        let value = HeaderValue::from_bytes(sent).expect("a header value the wire can carry");
        let res = http.get(server.url("/healthz")).header("x-request-id", value).send().await.unwrap();
        let got = id_of(&res);
        assert_ne!(got.as_bytes(), sent, "an unusable id {sent:?} must be replaced");
    }
    server.stop();
}

#[tokio::test]
async fn generated_request_ids_are_unique_under_concurrency() {
    let dir = temp_dir();
    let server = TestServer::start(Config::for_test(dir.path()));
    let http = client();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (http, url) = (http.clone(), server.url(&format!("/kv/k{t}")));
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..50 {
                let req = if i % 2 == 0 { http.get(&url) } else { http.put(&url).body("v") };
                ids.push(id_of(&req.send().await.unwrap()));
            }
            ids
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        for id in t.await.unwrap() {
            assert!(all.insert(id.clone()), "repeated id {id}");
        }
    }
    assert_eq!(all.len(), 400);
    server.stop();
}

#[tokio::test]
async fn the_request_id_names_the_log_span() {
    let dir = temp_dir();
    let s = BinaryServer::start(dir.path(), &[], &[("RUST_LOG", "shale=debug")]);
    wait_ready(&s.base()).await;
    let http = client();
    let res = http.put(s.url("/kv/logged")).header("x-request-id", "trace-me-4711").body("v").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = http.get(s.url("/kv/unlogged")).send().await.unwrap();
    let generated = id_of(&res);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(s.stderr().contains("trace-me-4711") && s.stderr().contains(&generated)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = s.stderr();
    let line = log.lines().find(|l| l.contains("trace-me-4711")).unwrap_or_else(|| panic!("id not logged:\n{log}"));
    assert!(line.contains("PUT") && line.contains("/kv/{key:.*}"), "the span names method and route: {line}");
    assert!(!line.contains("/kv/logged"), "the span names the route pattern, not the path: {line}");
    assert!(log.contains(&generated), "a generated id is logged too:\n{log}");
    s.terminate();
}

// ---- metrics ----

/// One sample: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed Prometheus text exposition: `# TYPE` lines and samples.
struct Exposition {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

fn parse_exposition(text: &str) -> Exposition {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample without a value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.find('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some(i) => (series[..i].to_string(), parse_labels(&series[i + 1..], line)),
        };
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "metric name {name:?} in {line}"
        );
        samples.push(Sample { name, labels, value });
    }
    Exposition { types, samples }
}

/// `k="v",k2="v2"}` -> map; values may hold `{`, `}`, `,` and escaped quotes.
fn parse_labels(mut s: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches(',');
        if let Some(rest) = s.strip_prefix('}') {
            assert!(rest.is_empty(), "trailing text after labels: {line}");
            return labels;
        }
        let eq = s.find("=\"").unwrap_or_else(|| panic!("malformed labels: {line}"));
        let key = s[..eq].to_string();
        let mut value = String::new();
        let mut chars = s[eq + 2..].char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("dangling escape: {line}"),
                },
                Some((i, '"')) => break eq + 2 + i + 1,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value: {line}"),
            }
        };
        labels.insert(key, value);
        s = &s[end..];
    }
}

impl Exposition {
    /// Sum of the samples of `name` whose labels include every pair of `with`.
    fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.matching(name, with).map(|s| s.value).sum()
    }

    fn matching<'a>(&'a self, name: &'a str, with: &'a [(&str, &str)]) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name && with.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    fn count(&self, name: &str, with: &[(&str, &str)]) -> usize {
        self.matching(name, with).count()
    }
}

async fn scrape(http: &Client, s: &BinaryServer) -> (String, Exposition) {
    let res = http.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain") && ct.contains("version=0.0.4"), "content type {ct}");
    let text = res.text().await.unwrap();
    let parsed = parse_exposition(&text);
    (text, parsed)
}

/// The metric families shale exports, with their Prometheus types.
const FAMILIES: [(&str, &str); 18] = [
    ("shale_http_requests_total", "counter"),
    ("shale_http_request_duration_seconds", "histogram"),
    ("shale_shard_queue_depth", "gauge"),
    ("shale_shard_batch_size", "histogram"),
    ("shale_shard_commit_seconds", "histogram"),
    ("shale_shard_commits_total", "counter"),
    ("shale_shard_fsyncs_total", "counter"),
    ("shale_shard_checkpoints_total", "counter"),
    ("shale_cache_requests_total", "counter"),
    ("shale_cache_miss_reads_total", "counter"),
    ("shale_cache_bytes", "gauge"),
    ("shale_cache_entries", "gauge"),
    ("shale_cache_capacity_bytes", "gauge"),
    ("shale_shard_keys", "gauge"),
    ("shale_shard_file_bytes", "gauge"),
    ("shale_shard_warmup_seconds", "gauge"),
    ("shale_uptime_seconds", "gauge"),
    ("shale_build_info", "gauge"),
];

const KV_ROUTE: (&str, &str) = ("route", "/kv/{key:.*}");

#[tokio::test]
async fn metrics_expose_every_family_and_move_with_the_traffic() {
    const N: usize = 20;
    const SHARDS: usize = 4;
    let dir = temp_dir();
    let s = BinaryServer::start(dir.path(), &["--shards", "4"], &[]);
    wait_ready(&s.base()).await;
    let http = client();

    let (_, before) = scrape(&http, &s).await;
    for family in
        ["shale_shard_queue_depth", "shale_shard_commits_total", "shale_shard_file_bytes", "shale_shard_warmup_seconds"]
    {
        let shards: BTreeSet<&String> = before.matching(family, &[]).filter_map(|s| s.labels.get("shard")).collect();
        assert_eq!(shards.len(), SHARDS, "{family} per shard: {shards:?}");
    }
    for space in ["kv", "docs", "counters"] {
        assert_eq!(before.count("shale_shard_keys", &[("space", space)]), SHARDS, "shale_shard_keys {space}");
    }
    assert!(before.count("shale_shard_batch_size_bucket", &[("shard", "0")]) > 1, "batch size buckets");
    assert!(before.matching("shale_shard_file_bytes", &[]).all(|s| s.value > 0.0));
    assert_eq!(before.sum("shale_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    assert_eq!(before.sum("shale_shard_keys", &[("space", "kv")]), 0.0);

    // Traffic: N creates, 2N hits, 5 misses, one unrouted path; keys and paths that must never become labels.
    for i in 0..N {
        let res = http.put(s.url(&format!("/kv/secret-key-{i}"))).body(format!("value {i}")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    for _ in 0..2 {
        for i in 0..N {
            let res = http.get(s.url(&format!("/kv/secret-key-{i}"))).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
        }
    }
    for i in 0..5 {
        let res = http.get(s.url(&format!("/kv/secret-absent-{i}"))).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
    let res = http.request(Method::GET, s.url("/secret-unrouted/path")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    for path in ["/counter/secret-counter/value", "/counter/secret-counter/consistent_value"] {
        assert_eq!(http.get(s.url(path)).send().await.unwrap().status(), StatusCode::OK);
    }

    let (text, after) = scrape(&http, &s).await;
    // (The cache counters appear with the first read, hence after the traffic.)
    for (family, kind) in FAMILIES {
        assert_eq!(after.types.get(family).map(String::as_str), Some(kind), "# TYPE of {family}");
    }
    let delta = |name: &str, with: &[(&str, &str)]| after.sum(name, with) - before.sum(name, with);
    let put = [KV_ROUTE, ("method", "PUT")];
    assert_eq!(delta("shale_http_requests_total", &[KV_ROUTE, ("method", "PUT"), ("status", "201")]), N as f64);
    assert_eq!(delta("shale_http_requests_total", &[KV_ROUTE, ("method", "GET"), ("status", "200")]), 2.0 * N as f64);
    assert_eq!(delta("shale_http_requests_total", &[KV_ROUTE, ("method", "GET"), ("status", "404")]), 5.0);
    assert_eq!(delta("shale_http_requests_total", &[("route", "unmatched"), ("status", "404")]), 1.0);
    // Each route pattern is its own label, also where two routes share a handler.
    for route in ["/counter/{name}/value", "/counter/{name}/consistent_value"] {
        assert_eq!(delta("shale_http_requests_total", &[("route", route), ("status", "200")]), 1.0, "{route}");
    }
    assert_eq!(delta("shale_http_request_duration_seconds_count", &put), N as f64);
    assert_eq!(
        delta("shale_http_request_duration_seconds_bucket", &[KV_ROUTE, ("method", "PUT"), ("le", "+Inf")]),
        N as f64
    );
    assert!(delta("shale_http_request_duration_seconds_sum", &put) > 0.0);
    // The latency histogram is per route: the GETs are counted apart from the PUTs.
    assert_eq!(
        delta("shale_http_request_duration_seconds_count", &[KV_ROUTE, ("method", "GET")]),
        2.0 * N as f64 + 5.0
    );

    // Every PUT is one write in some batch; each batch that changed something is one commit with one fsync of
    // the log (DURABILITY=immediate), and each checkpoint one more fsync. Reads the shards served (misses while
    // they held answered writes) change nothing and count in none of these.
    let commits = delta("shale_shard_commits_total", &[]);
    assert!((1.0..=N as f64).contains(&commits), "commits {commits}");
    assert_eq!(delta("shale_shard_fsyncs_total", &[]), commits + delta("shale_shard_checkpoints_total", &[]));
    assert_eq!(delta("shale_shard_batch_size_count", &[]), commits);
    assert_eq!(delta("shale_shard_batch_size_sum", &[]), N as f64);
    assert_eq!(delta("shale_shard_commit_seconds_count", &[]), commits);
    assert!(delta("shale_shard_commit_seconds_sum", &[]) > 0.0);

    // Cache: every read is one hit or one miss; absent keys and counters are misses; the writes filled the cache.
    let (hits, misses) = (
        delta("shale_cache_requests_total", &[("result", "hit")]),
        delta("shale_cache_requests_total", &[("result", "miss")]),
    );
    assert_eq!(hits + misses, 2.0 * N as f64 + 5.0 + 2.0, "hits {hits} misses {misses} (2 counter reads)");
    assert!(misses >= 5.0 + 2.0 && hits >= 1.0, "hits {hits} misses {misses}");
    let (inline, pooled, by_shard) = (
        delta("shale_cache_miss_reads_total", &[("path", "inline")]),
        delta("shale_cache_miss_reads_total", &[("path", "pool")]),
        delta("shale_cache_miss_reads_total", &[("path", "shard")]),
    );
    assert_eq!(
        inline + pooled + by_shard,
        misses,
        "every miss reads the file once: inline {inline}, pool {pooled}, by the shard {by_shard}"
    );
    assert_eq!(after.sum("shale_cache_entries", &[]), N as f64);
    assert!(after.sum("shale_cache_bytes", &[]) > before.sum("shale_cache_bytes", &[]));
    assert_eq!(after.sum("shale_shard_keys", &[("space", "kv")]), N as f64);
    assert_eq!(after.sum("shale_shard_queue_depth", &[]), 0.0, "nothing queued at rest");
    assert!(after.sum("shale_uptime_seconds", &[]) > before.sum("shale_uptime_seconds", &[]));

    // Labels name route patterns, never keys or raw paths.
    assert!(!text.contains("secret"), "a key or path leaked into a label:\n{text}");
    let routes: BTreeSet<&String> =
        after.matching("shale_http_requests_total", &[]).filter_map(|s| s.labels.get("route")).collect();
    for route in &routes {
        assert!(route.as_str() == "unmatched" || route.starts_with('/'), "route label {route}");
    }
    assert!(routes.contains(&"/readyz".to_string()) && routes.contains(&"/metrics".to_string()), "{routes:?}");

    let (status, _) = s.terminate();
    assert!(status.success());
}

#[test]
fn the_exposition_parser_handles_braces_and_escapes_in_label_values() {
    let e = parse_exposition(
        "# TYPE m counter\nm{route=\"/kv/{key:.*}\",x=\"a\\\"b,c}\"} 3\nm 1.5\n# HELP m text\nh_bucket{le=\"+Inf\"} 2\n",
    );
    assert_eq!(e.types["m"], "counter");
    assert_eq!(e.samples.len(), 3);
    assert_eq!(e.samples[0].labels["route"], "/kv/{key:.*}");
    assert_eq!(e.samples[0].labels["x"], "a\"b,c}");
    assert_eq!(e.sum("m", &[]), 4.5);
    assert_eq!(e.sum("h_bucket", &[("le", "+Inf")]), 2.0);
}

/// A miss whose read on the HTTP worker reached the disk sends the next misses to the blocking pool (see
/// `src/miss_reads.rs`). The data dir is under the build's target dir, on a disk-backed file system: on tmpfs no
/// read ever reaches a disk, and this test fails.
#[tokio::test]
async fn a_miss_that_read_the_disk_sends_the_next_misses_to_the_pool() {
    const KEYS: usize = 3000;
    let value = |i: usize| format!("{i:06}-").repeat(4096 / 7);
    let dir = tempfile::Builder::new().prefix("shale-miss-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // One shard, a 1 MiB cache (so redb's own page cache gets its floor of 1 MiB), 12 MiB of values.
    let args = ["--shards", "1", "--cache-bytes", "1048576"];
    let s = BinaryServer::start(dir.path(), &args, &[]);
    wait_ready(&s.base()).await;
    let http = client();
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(50) {
        let puts = chunk.iter().map(|&i| http.put(s.url(&format!("/kv/k{i}"))).body(value(i)).send());
        for res in futures_util::future::join_all(puts).await {
            assert_eq!(res.unwrap().status(), StatusCode::CREATED);
        }
    }
    // Restart (redb's page cache starts empty), then drop the file's pages from the OS page cache.
    let (status, _) = s.terminate();
    assert!(status.success());
    let s = BinaryServer::start(dir.path(), &args, &[]);
    wait_ready(&s.base()).await;
    for file in shard_files(dir.path()) {
        let f = std::fs::File::open(&file).unwrap();
        // SAFETY: a plain system call on an open descriptor.
        let rc = unsafe { libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(&f), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise on {}", file.display());
    }

    let (_, before) = scrape(&http, &s).await;
    let mut read = 0;
    let pooled = loop {
        // Sequential GETs: each miss finds the previous one's verdict.
        for i in (read..KEYS).take(100) {
            let res = http.get(s.url(&format!("/kv/k{i}"))).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "k{i}");
            assert_eq!(res.text().await.unwrap(), value(i), "k{i}");
        }
        read = (read + 100).min(KEYS);
        let (_, after) = scrape(&http, &s).await;
        let delta = |path| {
            let with = [("path", path)];
            after.sum("shale_cache_miss_reads_total", &with) - before.sum("shale_cache_miss_reads_total", &with)
        };
        if delta("pool") > 0.0 || read == KEYS {
            assert!(delta("inline") >= 1.0, "the first miss reads inline");
            break delta("pool");
        }
    };
    assert!(pooled > 0.0, "{KEYS} misses on a file evicted from the page cache never went to the pool");
    let (status, _) = s.terminate();
    assert!(status.success());
}

/// The recorder keeps every histogram sample until an upkeep folds them into the buckets; shale runs one every
/// few seconds (`src/metrics.rs`), so a server under steady load that nobody scrapes keeps a steady memory
/// footprint. Without it the process grows by about 16 bytes per request: some 5 MB over the 300,000 requests
/// below, twice the growth the test allows.
#[tokio::test]
async fn memory_stays_flat_under_load_when_nobody_scrapes() {
    use std::io::{Read, Write};
    let dir = temp_dir();
    let s = BinaryServer::start(dir.path(), &[], &[]);
    wait_ready(&s.base()).await;
    let rss_kb = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/PID/status").to_string();
        line.split_whitespace().nth(1).unwrap().parse::<i64>().unwrap()
    };
    // One keep-alive connection, GET /healthz pipelined 1000 at a time (so that no buffer grows with the load);
    // every answer has the same length (fixed-width request id and date), so a window is over when 1000 times
    // that many bytes came back.
    let mut conn = std::net::TcpStream::connect(s.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    conn.write_all(request).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let len = conn.read(&mut buf).unwrap();
    assert!(buf[..len].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..len]));
    let window = request.repeat(1000);
    let mut burst = |n: usize| {
        for _ in 0..n / 1000 {
            conn.write_all(&window).unwrap();
            let mut left = 1000 * len;
            while left > 0 {
                let got = conn.read(&mut buf).unwrap();
                assert!(got > 0, "the server closed the connection with {left} bytes of answers to come");
                left = left.checked_sub(got).expect("every answer is as long as the first");
            }
        }
    };
    burst(100_000); // buffers and the allocator reach their steady size
    tokio::time::sleep(shale::metrics::UPKEEP_INTERVAL + Duration::from_secs(1)).await;
    let before = rss_kb();
    for _ in 0..2 {
        burst(150_000);
        tokio::time::sleep(shale::metrics::UPKEEP_INTERVAL + Duration::from_secs(1)).await;
    }
    let grown = rss_kb() - before;
    eprintln!("RSS grew by {grown} kB over 300,000 requests without a scrape");
    assert!(grown < 2500, "RSS grew by {grown} kB over 300,000 requests without a scrape");
    let (status, _) = s.terminate();
    assert!(status.success());
}
