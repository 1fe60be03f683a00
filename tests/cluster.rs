//! Three (or four) real `shale` processes forming a cluster on loopback, under the faults a cluster is for:
//! forming it and every API on every node, `kill -9` of each shard's leader under write load, `SIGSTOP` of a
//! leader past the election timeout, the loss of a majority, a restart after the log was purged (snapshot path),
//! and a dead node removed and replaced. After each: every acknowledged write on every replica, counters exact,
//! replicas identical. (Three nodes and the test share this machine's cores.)

#[path = "common/cluster.rs"]
mod cluster_harness;
mod common;
#[path = "common/resp.rs"]
mod resp_client;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_harness::TestCluster;
use common::client;

/// Settings every test cluster shares: two shards, a short request timeout.
const ENV: &[(&str, &str)] = &[("SHARD_LIMIT", "2"), ("REQUEST_TIMEOUT_MS", "3000")];

async fn put(url: String, value: &str) -> reqwest::StatusCode {
    match client().put(url).body(value.to_string()).send().await {
        Ok(r) => r.status(),
        Err(_) => reqwest::StatusCode::BAD_GATEWAY,
    }
}

/// PUTs until it is acknowledged (a client honouring 503's Retry-After while a new leader is elected).
async fn put_eventually(url: String, value: &str) -> reqwest::StatusCode {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = put(url.clone(), value).await;
        if status != 503 || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(url: String) -> (u16, String) {
    let r = client().get(url).send().await.expect("a GET");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_forms_and_every_node_serves_every_api() {
    let c = TestCluster::start(3, ENV);
    // Before init: not ready, data routes refused with the way out.
    let (status, body) = get(c.url(0, "/readyz")).await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = get(c.url(1, "/kv/a")).await;
    assert_eq!(status, 503);
    assert!(body.contains("shale cluster init"), "{body}");
    assert_eq!(put(c.url(2, "/kv/a"), "x").await, 503);

    c.init(0).await;
    let again = client().post(c.url(1, "/cluster/init")).send().await.unwrap();
    assert_eq!(again.status(), 409, "a second init is refused");
    c.wait_voters(0, &[0, 1, 2]).await;

    // Writes through every node; linearizable reads on every node see them all.
    for i in 0..3 {
        assert_eq!(put(c.url(i, &format!("/kv/k{i}")), &format!("v{i}")).await, 201);
    }
    for i in 0..3 {
        for k in 0..3 {
            assert_eq!(get(c.url(i, &format!("/kv/k{k}"))).await, (200, format!("v{k}")), "node {i} key {k}");
        }
    }
    // A compare-and-set decided in the replicated apply, whichever node takes it.
    let etag = client().get(c.url(1, "/kv/k0")).send().await.unwrap().headers()["etag"].clone();
    let stale_cas = client().put(c.url(2, "/kv/k0")).header("if-match", "\"999\"").body("no").send().await.unwrap();
    assert_eq!(stale_cas.status(), 412);
    let cas = client().put(c.url(2, "/kv/k0")).header("if-match", etag).body("w0").send().await.unwrap();
    assert_eq!(cas.status(), 204);
    assert_eq!(get(c.url(0, "/kv/k0")).await, (200, "w0".to_string()));

    // Counters: increments through two nodes, the consistent value through the third.
    for i in 0..2 {
        let r = client().post(c.url(i, "/counter/hits")).body("5").send().await.unwrap();
        assert_eq!(r.status(), 204);
    }
    assert_eq!(get(c.url(2, "/counter/hits/consistent_value")).await, (200, "10".to_string()));

    // Document ids: one sequence, whichever node creates.
    let mut ids = Vec::new();
    for i in [2, 0, 1] {
        let r = client().post(c.url(i, "/api")).json(&serde_json::json!({"data": {"n": i}})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        ids.push(r.json::<serde_json::Value>().await.unwrap()["id"].as_u64().unwrap());
    }
    assert_eq!(ids, [1, 2, 3], "ids one after another, from every node");

    // A stale read is served by the local replica; a bad consistency is a 400.
    c.wait_converged().await;
    assert_eq!(get(c.url(2, "/kv/k1?consistency=stale")).await, (200, "v1".to_string()));
    assert_eq!(get(c.url(2, "/kv/k1?consistency=sometimes")).await.0, 400);
    let listed: serde_json::Value = client().get(c.url(1, "/kv")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["keys"], serde_json::json!(["k0", "k1", "k2"]));

    // Per-shard Raft metrics on every node; exactly one node leads each shard.
    let mut leaders = 0;
    for i in 0..3 {
        let (status, text) = get(c.url(i, "/metrics")).await;
        assert_eq!(status, 200);
        for name in
            ["shale_raft_term", "shale_raft_commit_index", "shale_raft_applied_index", "shale_raft_append_seconds"]
        {
            assert!(text.contains(name), "node {i} has no {name}");
        }
        leaders += text.lines().filter(|l| l.starts_with("shale_raft_is_leader{shard=\"0\"} 1")).count();
    }
    assert_eq!(leaders, 1, "one leader of shard 0");

    // A backup of a cluster node holds its replicas; restored, it is a single node with the same records.
    let backups = common::temp_dir();
    let out = backups.path().join("b");
    let r = client().post(c.url(2, "/admin/backup")).json(&serde_json::json!({ "path": out })).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let restored = backups.path().join("restored");
    let done = common::Shale::bare()
        .args(["restore", "--from", out.to_str().unwrap(), "--data-dir", restored.to_str().unwrap()])
        .run(Duration::from_secs(30));
    assert!(done.status.success(), "{}", done.stderr);
    let single = common::Shale::serve(&restored).env("SHARD_LIMIT", "2").start();
    assert_eq!(get(single.url("/kv/k1")).await, (200, "v1".to_string()));
    assert_eq!(get(single.url("/counter/hits/value")).await, (200, "10".to_string()));
}

/// Writers that send unique keys and counter increments round-robin to the nodes that are up, recording what
/// was acknowledged.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<String, String>>>,
    increments: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(urls: Arc<Mutex<Vec<String>>>, writers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let increments = Arc::new(AtomicU64::new(0));
        let tasks = (0..writers)
            .map(|w| {
                let (stop, acked, increments, urls) = (stop.clone(), acked.clone(), increments.clone(), urls.clone());
                tokio::spawn(async move {
                    let c = client();
                    let mut n = 0u64;
                    let deadline = Instant::now() + Duration::from_secs(120);
                    while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
                        let base = {
                            let urls = urls.lock().unwrap();
                            urls[(n as usize + w) % urls.len()].clone()
                        };
                        n += 1;
                        let (key, value) = (format!("w{w}-{n}"), format!("value {w} {n}"));
                        let sent = c.put(format!("{base}/kv/{key}")).body(value.clone()).send().await;
                        if sent.is_ok_and(|r| r.status().is_success()) {
                            acked.lock().unwrap().insert(key, value);
                        }
                        let added = c.post(format!("{base}/counter/total")).body("1").send().await;
                        if added.is_ok_and(|r| r.status().is_success()) {
                            increments.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                })
            })
            .collect();
        Load { stop, acked, increments, tasks }
    }

    async fn stop(self) -> (BTreeMap<String, String>, u64) {
        self.stop.store(true, Ordering::Release);
        for t in self.tasks {
            t.await.expect("a writer");
        }
        let acked = self.acked.lock().unwrap().clone();
        (acked, self.increments.load(Ordering::Acquire))
    }
}

/// Every acknowledged write is on every running replica, the replicas hold the same records, and the counter
/// counts every acknowledged increment (and no more than were sent: an unacknowledged one may have applied).
async fn check_nothing_lost(c: &TestCluster, acked: &BTreeMap<String, String>, increments: u64, sent_at_most: u64) {
    c.wait_converged().await;
    let running: Vec<usize> = (0..c.nodes.len()).filter(|&i| c.nodes[i].is_some()).collect();
    let first = c.contents(running[0]).await;
    for &i in &running {
        let contents = c.contents(i).await;
        assert_eq!(contents.len(), first.len(), "node {i} holds as many records as node {}", running[0]);
        assert!(contents == first, "node {i}'s replica differs from node {}'s", running[0]);
        let map: BTreeMap<_, _> = contents.into_iter().collect();
        let lost: Vec<_> = acked.iter().filter(|(k, v)| map.get(*k) != Some(v)).map(|(k, _)| k.clone()).collect();
        assert!(lost.is_empty(), "node {i} lost {} acknowledged writes: {:?}", lost.len(), &lost[..lost.len().min(5)]);
        let (status, total) = get(c.url(i, "/counter/total/consistent_value")).await;
        assert_eq!(status, 200);
        let total: u64 = total.parse().unwrap();
        assert!(total >= increments && total <= sent_at_most, "counter {total}, acknowledged {increments}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_every_shards_leader_under_load_loses_no_acknowledged_write() {
    let mut c = TestCluster::start(3, ENV);
    c.init(0).await;
    c.wait_voters(0, &[0, 1, 2]).await;
    let urls = Arc::new(Mutex::new((0..3).map(|i| c.node(i).base()).collect::<Vec<_>>()));
    for shard in 0..2 {
        let load = Load::start(urls.clone(), 4);
        tokio::time::sleep(Duration::from_millis(800)).await;
        let leader = c.leader((shard + 1) % 3, shard).await;
        let survivor = (leader + 1) % 3;
        urls.lock().unwrap().retain(|u| *u != c.node(leader).base());
        c.kill9(leader);
        // The survivors elect a new leader and keep acknowledging writes.
        let before = load.acked.lock().unwrap().len();
        let deadline = Instant::now() + Duration::from_secs(20);
        while load.acked.lock().unwrap().len() < before + 50 {
            assert!(Instant::now() < deadline, "no write acknowledged after the leader of shard {shard} died");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (acked, increments) = load.stop().await;
        c.start_node(leader);
        *urls.lock().unwrap() = (0..3).map(|i| c.node(i).base()).collect();
        c.wait_voters(survivor, &[0, 1, 2]).await;
        check_nothing_lost(&c, &acked, increments, u64::MAX).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_is_replaced_and_a_minority_refuses_linearizable_operations() {
    let mut c = TestCluster::start(3, ENV);
    c.init(0).await;
    c.wait_voters(0, &[0, 1, 2]).await;
    assert_eq!(put(c.url(0, "/kv/before"), "1").await, 201);
    let leader = c.leader(1, 0).await;
    let other = (leader + 1) % 3;

    // SIGSTOP past the election timeout: the others elect a leader and go on.
    c.node(leader).signal("STOP");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let key = format!("/kv/during{}", Instant::now().elapsed().as_nanos());
        if put(c.url(other, &key), "2").await.is_success() {
            break;
        }
        assert!(Instant::now() < deadline, "no write acknowledged while the leader was stopped");
    }
    assert_eq!(put(c.url(other, "/kv/during"), "2").await, 201);
    c.node(leader).signal("CONT");
    // The old leader steps down and its linearizable read sees the write it missed.
    assert_eq!(get(c.url(leader, "/kv/during")).await, (200, "2".to_string()));
    c.wait_converged().await;

    // Two of three down: the last node refuses writes and linearizable reads within the timeout, still answers
    // stale reads from its replica.
    let last = 2;
    c.kill9(0);
    c.kill9(1);
    let started = Instant::now();
    let r = client().put(c.url(last, "/kv/after")).body("3").send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let refusal = r.text().await.unwrap();
    let never_applied = refusal.contains("was not applied");
    assert!(never_applied || refusal.contains("may still be applied"), "the refusal says which: {refusal}");
    let r = client().get(c.url(last, "/kv/before")).send().await.unwrap();
    assert_eq!(r.status(), 503, "no linearizable read without a majority");
    assert!(r.text().await.unwrap().contains("consistency=stale"));
    assert!(started.elapsed() < Duration::from_secs(10), "answered within the request timeouts");
    assert_eq!(get(c.url(last, "/kv/before?consistency=stale")).await, (200, "1".to_string()));
    assert_eq!(get(c.url(last, "/counter/none/value")).await, (200, "0".to_string()));

    // The majority is back: a write refused as never applied stays absent (one that reached the leader may
    // commit now, as in etcd), and writes go on.
    c.start_node(0);
    c.start_node(1);
    c.wait_voters(last, &[0, 1, 2]).await;
    let (status, value) = get(c.url(0, "/kv/after")).await;
    if never_applied {
        assert_eq!(status, 404);
    } else {
        assert!(status == 404 || (status, value.as_str()) == (200, "3"), "{status} {value}");
    }
    // 201, or 204 when the refused write committed after all.
    assert!(put_eventually(c.url(last, "/kv/after"), "4").await.is_success());
    assert_eq!(get(c.url(1, "/kv/after")).await, (200, "4".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_after_the_log_was_purged_catches_up_from_a_snapshot() {
    let env = [ENV, &[("RAFT_SNAPSHOT_ENTRIES", "50")]].concat();
    let mut c = TestCluster::start(3, &env);
    c.init(0).await;
    c.wait_voters(0, &[0, 1, 2]).await;
    c.kill9(2);
    let mut acked = BTreeMap::new();
    for n in 0..400 {
        let (k, v) = (format!("p{n}"), format!("v{n}"));
        assert_eq!(put(c.url(n % 2, &format!("/kv/{k}")), &v).await, 201);
        acked.insert(k, v);
    }
    // The leaders snapshotted and dropped the log the stopped node would need.
    let status = c.status(0).await;
    for s in status["shards"].as_array().unwrap() {
        assert!(s["snapshot"].as_u64().unwrap_or(0) > 50, "shard {} snapshotted: {s}", s["shard"]);
    }
    c.start_node(2);
    c.wait_voters(2, &[0, 1, 2]).await;
    check_nothing_lost(&c, &acked, 0, 0).await;
    let snapshots = std::fs::read_dir(c.dir(2).join("shard-0.snapshots")).unwrap().count();
    assert!(snapshots >= 1, "the restarted node installed a snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_removed_and_a_fresh_one_takes_its_place() {
    let mut c = TestCluster::start(3, ENV);
    c.init(0).await;
    c.wait_voters(0, &[0, 1, 2]).await;
    assert_eq!(put(c.url(1, "/kv/one"), "1").await, 201);
    let status = c.status(0).await;
    let dead_id =
        status["nodes"].as_array().unwrap().iter().find(|n| n["cluster_addr"] == c.cluster_addrs[2].as_str()).unwrap()
            ["id"]
            .as_str()
            .unwrap()
            .to_string();
    c.kill9(2);

    // A fresh node joins as a standby learner; removing the dead one makes it a voter.
    let fresh = c.add_node();
    c.start_node(fresh);
    let removed = client().delete(c.url(0, &format!("/cluster/nodes/{dead_id}"))).send().await.unwrap();
    assert_eq!(removed.status(), 204, "{}", removed.text().await.unwrap_or_default());
    c.wait_voters(0, &[0, 1, fresh]).await;
    let unknown = client().delete(c.url(0, &format!("/cluster/nodes/{dead_id}"))).send().await.unwrap();
    assert_eq!(unknown.status(), 404);

    assert_eq!(put(c.url(fresh, "/kv/two"), "2").await, 201);
    assert_eq!(get(c.url(fresh, "/kv/one")).await, (200, "1".to_string()));
    c.kill9(0);
    // The fresh node and node 1 are a majority on their own.
    assert_eq!(put_eventually(c.url(1, "/kv/three"), "3").await, 201);
    assert_eq!(get(c.url(fresh, "/kv/three")).await, (200, "3".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_nodes_data_dir_becomes_the_first_node_of_a_cluster() {
    let mut c = TestCluster::new(3, ENV);
    // A single node with data: keys and documents.
    let single = common::Shale::serve(c.dir(0)).env("SHARD_LIMIT", "2").start();
    for n in 0..50 {
        let r = client().put(single.url(&format!("/kv/old{n}"))).body(format!("{n}")).send().await.unwrap();
        assert_eq!(r.status(), 201);
    }
    for _ in 0..3 {
        let r = client().post(single.url("/api")).json(&serde_json::json!({"data": {}})).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let (status, _) = single.terminate();
    assert!(status.success());

    // The same data dir as a cluster's first node: every record reaches the nodes that join.
    for i in 0..3 {
        c.start_node(i);
    }
    c.init(0).await;
    c.wait_voters(0, &[0, 1, 2]).await;
    c.wait_converged().await;
    for i in 1..3 {
        let held = c.contents(i).await;
        assert_eq!(held.len(), 50, "node {i} holds every record of the single node");
        assert_eq!(get(c.url(i, "/kv/old49")).await, (200, "49".to_string()));
    }
    let r = client().post(c.url(2, "/api")).json(&serde_json::json!({"data": {}})).send().await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["id"], 4, "ids go on after the single node's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_nodes_data_dir_refuses_resharding_and_single_node_mode() {
    let mut c = TestCluster::start(3, ENV);
    c.init(0).await;
    c.wait_voters(0, &[0, 1, 2]).await;
    c.kill9(2);
    let resharded = common::Shale::serve(c.dir(2))
        .env("NODE_ADDR", &c.cluster_addrs[2])
        .env("CLUSTER_PORT", c.cluster_addrs[2].rsplit_once(':').unwrap().1)
        .env("HOST", c.cluster_addrs[2].rsplit_once(':').unwrap().0)
        .env("SHARD_LIMIT", "3")
        .try_start()
        .err()
        .expect("a cluster node does not start with another shard count");
    assert!(resharded.stderr.contains("resharding a cluster node is not supported"), "{}", resharded.stderr);
    let single = common::Shale::serve(c.dir(2)).env("SHARD_LIMIT", "2").try_start().err().expect("no single node");
    assert!(single.stderr.contains("belongs to cluster"), "{}", single.stderr);
    // Refused before anything changed: it still rejoins.
    c.start_node(2);
    c.wait_voters(0, &[0, 1, 2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_protocol_on_a_cluster_reads_linearizably_or_readonly_and_says_tryagain_without_a_majority() {
    // Each node has its own loopback address, so one RESP port number serves them all.
    let port = cluster_harness::free_port("127.0.0.10").to_string();
    let env = [ENV, &[("RESP_PORT", port.as_str())]].concat();
    let mut c = TestCluster::start(3, &env);
    c.init(0).await;
    c.wait_voters(0, &[0, 1, 2]).await;
    let resp = |i: usize| {
        let ip = c.node(i).addr.ip();
        resp_client::RespClient::connect(std::net::SocketAddr::new(ip, port.parse().unwrap()))
    };
    let (mut one, mut two) = (resp(1), resp(2));
    assert_eq!(one.cmd(&["SET", "r", "1"]), resp_client::Resp::ok());
    assert_eq!(two.cmd(&["GET", "r"]), resp_client::Resp::bulk("1"), "a linearizable read on another node");
    assert_eq!(two.cmd(&["READONLY"]), resp_client::Resp::ok());
    c.wait_converged().await;
    assert_eq!(two.cmd(&["GET", "r"]), resp_client::Resp::bulk("1"));
    assert_eq!(two.cmd(&["READWRITE"]), resp_client::Resp::ok());
    assert_eq!(two.cmd(&["MULTI"]), resp_client::Resp::ok());
    two.cmd(&["SET", "{t}a", "x"]);
    two.cmd(&["SET", "{t}b", "y"]);
    let exec = two.cmd(&["EXEC"]);
    assert_eq!(exec.array().len(), 2, "{exec:?}");
    assert_eq!(
        one.cmd(&["MGET", "{t}a", "{t}b"]).array(),
        [resp_client::Resp::bulk("x"), resp_client::Resp::bulk("y")]
    );

    // Two of three down: writes and linearizable reads answer TRYAGAIN; READONLY reads still answer.
    drop(one);
    c.kill9(0);
    c.kill9(1);
    let refused = two.cmd(&["SET", "r", "2"]);
    assert!(refused.error_text().is_some_and(|e| e.starts_with("TRYAGAIN")), "{refused:?}");
    let refused = two.cmd(&["GET", "r"]);
    assert!(refused.error_text().is_some_and(|e| e.starts_with("TRYAGAIN")), "{refused:?}");
    assert_eq!(two.cmd(&["READONLY"]), resp_client::Resp::ok());
    assert_eq!(two.cmd(&["GET", "r"]), resp_client::Resp::bulk("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_every_node_at_once_loses_no_acknowledged_write() {
    let mut c = TestCluster::start(3, ENV);
    c.init(0).await;
    c.wait_voters(0, &[0, 1, 2]).await;
    let urls = Arc::new(Mutex::new((0..3).map(|i| c.node(i).base()).collect::<Vec<_>>()));
    let load = Load::start(urls, 4);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..3 {
        c.kill9(i);
    }
    let (acked, increments) = load.stop().await;
    assert!(acked.len() > 20, "the load was acknowledged before the kill ({} writes)", acked.len());
    for i in 0..3 {
        c.start_node(i);
    }
    c.wait_voters(0, &[0, 1, 2]).await;
    check_nothing_lost(&c, &acked, increments, u64::MAX).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_that_miss_the_cache_see_applied_writes_not_yet_committed_to_the_shard_file() {
    // No cache: every read goes to the shard, whose applied entries wait in a held transaction for up to a second.
    let env = [ENV, &[("CACHE_BYTES", "0")]].concat();
    let c = TestCluster::start(3, &env);
    c.init(0).await;
    c.wait_voters(0, &[0, 1, 2]).await;
    for round in 0..20 {
        let key = format!("/kv/m{}", round % 5);
        let value = format!("v{round}");
        assert_eq!(put(c.url(round % 3, &key), &value).await.as_u16() / 100, 2, "round {round}");
        for i in 0..3 {
            assert_eq!(
                get(c.url(i, &key)).await,
                (200, value.clone()),
                "a linearizable read on node {i}, round {round}"
            );
        }
    }
}
