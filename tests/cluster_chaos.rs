//! Linearizability of a three-node cluster under faults: concurrent HTTP clients spread over every node read,
//! write, compare-and-set (`If-Match`) and increment a few shared keys while a fault is injected (kill -9 of the
//! leader of the keys' shard and its restart, SIGSTOP of that leader past the election timeout, kill -9 of a
//! follower, a partition cutting that leader off from the other nodes, then healed), and write unique keys on
//! the side. Each round's history goes through the checker
//! (`common/linearizability.rs`), and every acknowledged unique write must be on every replica afterwards.
//!
//! `cargo test` runs one round of each fault; `scripts/cluster-chaos.sh` runs many (`CHAOS_ROUNDS`) and prints
//! `histories N, operations M, linearizable N, acknowledged lost 0`. (Three nodes and the clients share this
//! machine's cores.)

#[path = "common/cluster.rs"]
mod cluster_harness;
mod common;
#[path = "common/http_history.rs"]
mod http_history;
#[path = "common/linearizability.rs"]
#[allow(dead_code)] // the checker's own tests use the rest
mod linearizability;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_harness::TestCluster;
use linearizability::{check, Event};

const ENV: &[(&str, &str)] = &[("SHARD_LIMIT", "2"), ("REQUEST_TIMEOUT_MS", "3000")];
const CLIENTS: u64 = 6;
const OPS_PER_CLIENT: u64 = 70;

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillLeader,
    StopLeader,
    KillFollower,
    /// Cuts the leader off from the other nodes, then heals (needs iptables; skipped without it).
    PartitionLeader,
}

/// What one round found.
struct Round {
    operations: usize,
    linearizable: bool,
    lost: usize,
}

async fn round(fault: Fault, seed: u64) -> Round {
    let mut c = TestCluster::start(3, ENV);
    c.init(0).await;
    c.wait_voters(0, &[0, 1, 2]).await;
    let bases: Vec<String> = (0..3).map(|i| c.node(i).base()).collect();
    let started = Instant::now();
    let history = Arc::new(Mutex::new(Vec::<Event>::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let client = http_history::Client {
                bases: bases.clone(),
                id: seed * 100 + id + 1,
                ops: OPS_PER_CLIENT,
                counter_read: "consistent_value",
                faults: true,
            };
            tokio::spawn(client.run(started, history.clone()))
        })
        .collect();
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let side = {
        let (acked, bases) = (acked.clone(), bases.clone());
        tokio::spawn(async move {
            let http = common::client();
            for n in 0..400u64 {
                let (key, value) = (format!("u{seed}-{n}"), format!("{n}"));
                let url = format!("{}/kv/{key}", bases[n as usize % bases.len()]);
                if http.put(url).body(value.clone()).send().await.is_ok_and(|r| r.status().is_success()) {
                    acked.lock().unwrap().insert(key, value);
                }
            }
        })
    };

    // The registers' shard: the fault hits its leader (or a follower of it).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let shard = shale::placement::shard_for(http_history::REGISTERS[0].as_bytes(), 2).0 as usize;
    let leader = c.leader(1, shard).await;
    match fault {
        Fault::KillLeader => {
            c.kill9(leader);
            tokio::time::sleep(Duration::from_millis(2500)).await;
            c.start_node(leader);
        }
        Fault::StopLeader => {
            c.node(leader).signal("STOP");
            tokio::time::sleep(Duration::from_millis(3500)).await;
            c.node(leader).signal("CONT");
        }
        Fault::PartitionLeader => match c.isolate(leader) {
            Some(cut) => {
                tokio::time::sleep(Duration::from_millis(2500)).await;
                // The cut-off node cannot confirm a read; the majority side goes on.
                let http = common::client();
                let isolated = http.get(c.url(leader, "/kv/r0")).send().await.expect("a GET");
                assert_eq!(isolated.status(), 503, "a linearizable read on the cut-off node");
                let other = (leader + 1) % 3;
                let deadline = Instant::now() + Duration::from_secs(20);
                while !http.put(c.url(other, "/kv/side")).body("x").send().await.is_ok_and(|r| r.status().is_success())
                {
                    assert!(Instant::now() < deadline, "the majority side never acknowledged a write");
                }
                drop(cut);
            }
            None => eprintln!("no iptables here: the partition round runs without a partition"),
        },
        Fault::KillFollower => {
            let follower = (leader + 1) % 3;
            c.kill9(follower);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            c.start_node(follower);
        }
    }
    for client in clients {
        client.await.expect("a client");
    }
    side.await.expect("the unique writer");
    c.wait_voters(0, &[0, 1, 2]).await;
    c.wait_converged().await;

    let history = history.lock().unwrap().clone();
    let linearizable = match check(&history) {
        Ok(()) => true,
        Err(v) => {
            eprintln!("{fault:?} round {seed}: not linearizable: {v:?}");
            false
        }
    };
    let acked = acked.lock().unwrap().clone();
    let mut lost = 0;
    for i in 0..3 {
        let held: BTreeMap<_, _> = c.contents(i).await.into_iter().collect();
        lost += acked.iter().filter(|(k, v)| held.get(*k) != Some(v)).count();
    }
    Round { operations: history.len(), linearizable, lost }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_under_faults_are_linearizable_and_lose_no_acknowledged_write() {
    let rounds: u64 = std::env::var("CHAOS_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
    let (mut histories, mut operations, mut linearizable, mut lost) = (0, 0, 0, 0);
    for r in 0..rounds {
        for fault in [Fault::KillLeader, Fault::StopLeader, Fault::KillFollower, Fault::PartitionLeader] {
            let found = round(fault, r).await;
            histories += 1;
            operations += found.operations;
            linearizable += usize::from(found.linearizable);
            lost += found.lost;
        }
    }
    println!("histories {histories}, operations {operations}, linearizable {linearizable}, acknowledged lost {lost}");
    assert_eq!(linearizable, histories, "every history is linearizable");
    assert_eq!(lost, 0, "no acknowledged write is lost");
}
