#![allow(dead_code)] // each test file uses a different part of this module
//! Real `shale` processes forming a cluster on loopback: start, init, find a shard's leader, kill, stop, restart.
//! Every wait is bounded in time.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{client, temp_dir, BinaryServer, Shale};

/// How long a cluster may take to form, elect or catch up before a test gives up.
pub const SETTLE: Duration = Duration::from_secs(60);

/// A free TCP port on loopback address `ip` (bound, then released).
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0)).expect("a free port").local_addr().unwrap().port()
}

/// Node `i`'s own loopback address, so that rules on addresses can cut it off (the test talks from 127.0.0.1).
fn node_ip(i: usize) -> String {
    format!("127.0.0.{}", 10 + i)
}

/// Nodes of one cluster, each a `shale` process with its own data dir and cluster port.
pub struct TestCluster {
    /// The running process of each node (`None` while it is down).
    pub nodes: Vec<Option<BinaryServer>>,
    dirs: Vec<tempfile::TempDir>,
    /// Each node's `NODE_ADDR`.
    pub cluster_addrs: Vec<String>,
    join: String,
    env: Vec<(String, String)>,
}

impl TestCluster {
    /// `n` nodes whose `JOIN` lists all of them, with `env` added to each (not started).
    pub fn new(n: usize, env: &[(&str, &str)]) -> TestCluster {
        let cluster_addrs: Vec<String> = (0..n).map(|i| format!("{}:{}", node_ip(i), free_port(&node_ip(i)))).collect();
        TestCluster {
            nodes: (0..n).map(|_| None).collect(),
            dirs: (0..n).map(|_| temp_dir()).collect(),
            join: cluster_addrs.join(","),
            cluster_addrs,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    /// Starts `n` nodes.
    pub fn start(n: usize, env: &[(&str, &str)]) -> TestCluster {
        let mut c = TestCluster::new(n, env);
        for i in 0..n {
            c.start_node(i);
        }
        c
    }

    /// Adds a node with a fresh data dir whose `JOIN` lists the first nodes (not started); its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        self.cluster_addrs.push(format!("{}:{}", node_ip(i), free_port(&node_ip(i))));
        self.dirs.push(temp_dir());
        self.nodes.push(None);
        self.nodes.len() - 1
    }

    /// Starts (or restarts, on its data dir) node `i`.
    pub fn start_node(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is running");
        let addr = &self.cluster_addrs[i];
        let port = addr.rsplit_once(':').unwrap().1;
        let mut s = Shale::serve(self.dirs[i].path())
            .env("HOST", node_ip(i))
            .env("NODE_ADDR", addr)
            .env("CLUSTER_PORT", port)
            .env("JOIN", &self.join)
            .env("RUST_LOG", "info,openraft=warn");
        for (k, v) in &self.env {
            s = s.env(k, v);
        }
        self.nodes[i] = Some(s.start());
    }

    /// Node `i`'s process.
    pub fn node(&self, i: usize) -> &BinaryServer {
        self.nodes[i].as_ref().unwrap_or_else(|| panic!("node {i} is down"))
    }

    /// `http://node-i` followed by `path`.
    pub fn url(&self, i: usize, path: &str) -> String {
        self.node(i).url(path)
    }

    /// Node `i`'s data dir.
    pub fn dir(&self, i: usize) -> &std::path::Path {
        self.dirs[i].path()
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill9(&mut self, i: usize) {
        self.nodes[i].take().unwrap_or_else(|| panic!("node {i} is down")).kill9();
    }

    /// `POST /cluster/init` on node `i`.
    pub async fn init(&self, i: usize) {
        let res = client().post(self.url(i, "/cluster/init")).send().await.expect("init");
        assert_eq!(res.status(), 200, "init: {}", res.text().await.unwrap_or_default());
    }

    /// `GET /cluster/status` of node `i`.
    pub async fn status(&self, i: usize) -> Value {
        let res = client().get(self.url(i, "/cluster/status")).send().await.expect("status");
        assert_eq!(res.status(), 200);
        res.json().await.expect("status JSON")
    }

    /// The index of the node whose id is `id` in `status`.
    fn index_of(&self, status: &Value, id: &str) -> Option<usize> {
        let node = status["nodes"].as_array()?.iter().find(|n| n["id"] == id)?;
        self.cluster_addrs.iter().position(|a| *a == node["cluster_addr"].as_str().unwrap_or(""))
    }

    /// Waits until node `via` sees every shard led, with voters exactly the nodes `voters` and every node
    /// ready.
    pub async fn wait_voters(&self, via: usize, voters: &[usize]) {
        let deadline = Instant::now() + SETTLE;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            last = self.status(via).await;
            let ok = last["shards"].as_array().is_some_and(|shards| {
                shards.iter().all(|s| {
                    let mut found: Vec<usize> = s["voters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| self.index_of(&last, v.as_str().unwrap_or("")))
                        .collect();
                    found.sort();
                    s["leader"].is_string() && found == voters
                })
            });
            if ok && self.all_ready(voters).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("voters never became {voters:?}; last status: {last:#}");
    }

    async fn all_ready(&self, nodes: &[usize]) -> bool {
        for &i in nodes {
            match client().get(self.url(i, "/readyz")).send().await {
                Ok(r) if r.status() == 200 => {}
                _ => return false,
            }
        }
        true
    }

    /// The index of the node leading `shard`, as node `via` sees it (waiting for one).
    pub async fn leader(&self, via: usize, shard: usize) -> usize {
        let deadline = Instant::now() + SETTLE;
        while Instant::now() < deadline {
            let status = self.status(via).await;
            if let Some(id) = status["shards"][shard]["leader"].as_str() {
                if let Some(i) = self.index_of(&status, id) {
                    return i;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("shard {shard} has no leader");
    }

    /// Waits until every running node has applied the same last entry of every shard.
    pub async fn wait_converged(&self) {
        let deadline = Instant::now() + SETTLE;
        let running: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].is_some()).collect();
        while Instant::now() < deadline {
            let mut applied = Vec::new();
            for &i in &running {
                let s = self.status(i).await;
                let per: Vec<(u64, u64)> = s["shards"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| (s["applied"].as_u64().unwrap_or(0), s["committed"].as_u64().unwrap_or(0)))
                    .collect();
                applied.push(per);
            }
            let first = &applied[0];
            if applied.iter().all(|a| a.iter().map(|x| x.0).eq(first.iter().map(|x| x.0)))
                && first.iter().all(|(a, c)| a == c)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the replicas did not converge");
    }

    /// Every `/kv` key and value of node `i`'s replica (a stale listing and stale reads).
    pub async fn contents(&self, i: usize) -> Vec<(String, String)> {
        let c = client();
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let url = self.url(i, &format!("/kv?consistency=stale&limit=1000&after={after}"));
            let page: Value = c.get(url).send().await.expect("list").json().await.expect("list JSON");
            for k in page["keys"].as_array().into_iter().flatten() {
                let k = k.as_str().unwrap().to_string();
                let v = c.get(self.url(i, &format!("/kv/{k}?consistency=stale"))).send().await.unwrap();
                assert_eq!(v.status(), 200, "key {k} listed but not readable on node {i}");
                out.push((k, v.text().await.unwrap()));
            }
            match page["next"].as_str() {
                Some(next) => after = next.to_string(),
                None => return out,
            }
        }
    }
}

/// Rules that drop every packet between one node and the others, removed on drop (the heal).
pub struct Partition {
    rules: Vec<Vec<String>>,
}

impl TestCluster {
    /// Cuts node `i` off from every other node (each direction dropped by iptables), leaving the test's own
    /// connections to it alone. `None` when iptables cannot be used here (not root, no iptables).
    pub fn isolate(&self, i: usize) -> Option<Partition> {
        let usable = std::process::Command::new("iptables").args(["-L", "INPUT", "-n"]).output();
        if !usable.is_ok_and(|o| o.status.success()) {
            return None;
        }
        let mut rules = Vec::new();
        for j in (0..self.nodes.len()).filter(|&j| j != i) {
            for (from, to) in [(node_ip(i), node_ip(j)), (node_ip(j), node_ip(i))] {
                let rule: Vec<String> = [
                    "INPUT",
                    "-s",
                    &from,
                    "-d",
                    &to,
                    "-j",
                    "DROP",
                    "-m",
                    "comment",
                    "--comment",
                    "shale-test-partition",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                let added = std::process::Command::new("iptables").arg("-I").args(&rule).status();
                assert!(added.is_ok_and(|s| s.success()), "iptables -I {rule:?}");
                rules.push(rule);
            }
        }
        Some(Partition { rules })
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        for rule in &self.rules {
            let _ = std::process::Command::new("iptables").arg("-D").args(rule).status();
        }
    }
}
