//! Three replicas of one shard, each with its own data dir, shard worker, Raft log, state machine and cluster port,
//! under real Raft (openraft) in one process, talking over TCP on loopback through the cluster transport. They
//! elect a leader; a write is answered with the outcome decided in the replicated apply (a failed precondition
//! too), identically on every replica; a replica that was down while the leader's log was purged catches up from a
//! snapshot sent in chunks after a restart; and a node that does not know the cluster secret is refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::Config;
use shale::cluster::log::RaftLog;
use shale::cluster::service::Identity;
use shale::cluster::state::ShardState;
use shale::cluster::transport::{serve, Groups, Peers, Security};
use shale::cluster::types::{Applied, NodeAddr, Proposal, ShardRaft};
use shale::command::{Command, EtagMatch, Precondition, Reply, Space};
use shale::engine::durability::Log;
use shale::engine::store::Store;
use shale::error::Error;
use shale::placement::ShardId;
use shale::shard::cache::Cache;
use shale::shard::{Readiness, ShardHandle, ShardOptions};
use tokio::net::TcpListener;

type Raft = openraft::Raft<ShardRaft, ShardState>;

// ---- replicas ----

struct Replica {
    raft: Raft,
    handle: ShardHandle,
    worker: std::thread::JoinHandle<()>,
    /// Its cluster port.
    addr: SocketAddr,
    serving: tokio::task::JoinHandle<()>,
    /// The last entry its shard file and cache hold.
    applied: tokio::sync::watch::Receiver<Option<u64>>,
}

/// Waits until `replica`'s shard file and cache hold entry `index`.
async fn applied(replica: &Replica, index: u64) {
    let mut applied = replica.applied.clone();
    tokio::time::timeout(WAIT.unwrap(), applied.wait_for(|a| a.is_some_and(|a| a >= index)))
        .await
        .expect("applied in time")
        .expect("the state machine runs");
}

/// Starts (or restarts) replica `id` on `dir`, its cluster port at `addr` (any free port when `None`).
async fn start(id: u64, dir: &Path, addr: Option<SocketAddr>, secret: &[u8]) -> Replica {
    start_with(id, dir, addr, secret, None).await
}

/// [`start`], its cluster port speaking TLS with `tls` when given.
async fn start_with(
    id: u64,
    dir: &Path,
    addr: Option<SocketAddr>,
    secret: &[u8],
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Replica {
    let store = Store::open(dir.join("shard-0.redb"), ShardId(0), 1 << 20, Log::Off).expect("the shard file");
    let readiness = Readiness::new(1);
    let options = ShardOptions::from_config(&shale::Config::for_test(dir));
    let (handle, worker) =
        shale::shard::spawn(Arc::new(store), Cache::new(1 << 20), options, readiness.clone()).expect("a worker");
    while !readiness.is_ready() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let log = RaftLog::open(&dir.join("raft"), 1).expect("the Raft log").remove(0);
    let snapshots = dir.join("shard-0.snapshots");
    let state = ShardState::new(handle.clone(), snapshots.clone()).expect("the snapshot dir");
    let applied = state.applied();
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        max_in_snapshot_log_to_keep: 0,
        snapshot_policy: openraft::SnapshotPolicy::Never,
        // Small chunks, so a snapshot crosses the connection in several.
        snapshot_max_chunk_size: 4096,
        ..Default::default()
    };
    let config = Arc::new(config.validate().expect("a valid config"));
    let secret: Arc<[u8]> = secret.into();
    let security = Security::new(secret.clone(), tls);
    let peers = Peers::new(id, security.clone(), None);
    let raft = Raft::new(id, config, peers.network(0), log, state).await.expect("a Raft node");
    let listener = TcpListener::bind(addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap())).await.expect("a port");
    let addr = listener.local_addr().unwrap();
    let groups = Groups::new(Identity::new(id, NodeAddr::default(), None));
    groups.insert(0, raft.clone(), snapshots);
    let serving = tokio::spawn(serve(listener, groups, security));
    Replica { raft, handle, worker, addr, serving, applied }
}

/// Stops a replica: its cluster port closed, its Raft tasks ended, its worker joined (so its files can be opened
/// again).
async fn stop(replica: Replica) {
    replica.serving.abort();
    let _ = replica.serving.await;
    replica.raft.shutdown().await.expect("shutdown");
    drop(replica.raft);
    drop(replica.handle);
    tokio::task::spawn_blocking(move || replica.worker.join().expect("the worker exits cleanly"))
        .await
        .expect("joined");
}

fn members(replicas: &BTreeMap<u64, Replica>) -> BTreeMap<u64, NodeAddr> {
    replicas.iter().map(|(id, r)| (*id, NodeAddr { cluster: r.addr.to_string(), api: String::new() })).collect()
}

fn put(key: &str, value: &str, precondition: Precondition) -> Command {
    Command::kv_put(key.as_bytes(), value.as_bytes(), precondition)
}

fn value(replica: &Replica, key: &str) -> Option<(Vec<u8>, u64)> {
    replica.handle.store().settle().unwrap();
    replica.handle.store().get(Space::Kv, key.as_bytes()).unwrap().map(|r| (r.value().to_vec(), r.rev()))
}

const WAIT: Option<Duration> = Some(Duration::from_secs(20));
const SECRET: &[u8] = b"the cluster secret";

/// Proposes `command` through `raft`, retrying while the leader is not yet sure of its majority (openraft answers
/// `ForwardToLeader` without a leader until a quorum acknowledged it): what the node's write path will do within
/// `REQUEST_TIMEOUT_MS`.
async fn write(raft: &Raft, label: u128, command: Command) -> openraft::raft::ClientWriteResponse<ShardRaft> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match raft.client_write(Proposal { command: command.clone() }).await {
            Ok(w) => return w,
            Err(e) if std::time::Instant::now() < deadline && e.forward_to_leader().is_some() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("write {label}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_agree_and_a_restarted_one_catches_up_from_a_snapshot() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut replicas = BTreeMap::new();
    for (i, dir) in dirs.iter().enumerate() {
        replicas.insert(i as u64 + 1, start(i as u64 + 1, dir.path(), None, SECRET).await);
    }
    replicas[&1].raft.initialize(members(&replicas)).await.expect("initialized");
    let metrics = replicas[&1].raft.wait(WAIT).metrics(|m| m.current_leader.is_some(), "a leader").await.unwrap();
    let leader = metrics.current_leader.unwrap();

    // A write, and a compare-and-set that fails: both outcomes are decided in the apply.
    let created = write(&replicas[&leader].raft, 1, put("k", "one", Precondition::NONE)).await;
    let Applied(Some(Ok(Reply::Stored { created: true, rev }))) = created.data else { panic!("{:?}", created.data) };
    let if_absent = Precondition { if_none_match: Some(EtagMatch::Any), ..Precondition::NONE };
    let refused = write(&replicas[&leader].raft, 2, put("k", "two", if_absent)).await;
    assert!(matches!(refused.data, Applied(Some(Err(Error::PreconditionFailed(_))))), "{:?}", refused.data);
    for r in replicas.values() {
        applied(r, refused.log_id.index).await;
        assert_eq!(value(r, "k"), Some((b"one".to_vec(), rev)), "the same record, revision included, everywhere");
    }

    // A follower goes down; the others go on, and the leader's log is purged below a snapshot.
    let down = (1..=3).find(|id| *id != leader).unwrap();
    let replica = replicas.remove(&down).unwrap();
    let down_addr = replica.addr;
    stop(replica).await;
    let mut last = refused.log_id.index;
    for i in 0..20u64 {
        let w =
            write(&replicas[&leader].raft, 10 + u128::from(i), put(&format!("k{i}"), "v", Precondition::NONE)).await;
        last = w.log_id.index;
    }
    replicas[&leader].raft.trigger().snapshot().await.unwrap();
    replicas[&leader]
        .raft
        .wait(WAIT)
        .metrics(|m| m.snapshot.is_some_and(|s| s.index >= last), "a snapshot of every write")
        .await
        .unwrap();
    replicas[&leader].raft.trigger().purge_log(last).await.unwrap();
    replicas[&leader]
        .raft
        .wait(WAIT)
        .metrics(|m| m.purged.is_some_and(|p| p.index >= last), "the log purged")
        .await
        .unwrap();

    // Back up: the entries it missed are gone from the leader's log, so it gets the snapshot.
    let back = start(down, dirs[down as usize - 1].path(), Some(down_addr), SECRET).await;
    applied(&back, last).await;
    let installed = std::fs::read_dir(dirs[down as usize - 1].path().join("shard-0.snapshots"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("snapshot-"))
        .count();
    assert_eq!(installed, 1, "it caught up by installing the leader's snapshot");
    for i in 0..20u64 {
        let key = format!("k{i}");
        assert_eq!(value(&back, &key), value(&replicas[&leader], &key), "{key}");
    }
    assert_eq!(value(&back, "k"), Some((b"one".to_vec(), rev)));
    replicas.insert(down, back);
    for (_, r) in std::mem::take(&mut replicas) {
        stop(r).await;
    }
}

/// A self-signed certificate of its own for each node (the secret, not the certificate, authenticates peers).
fn node_certificate(dir: &Path) -> Arc<rustls::ServerConfig> {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, signing_key.serialize_pem()).unwrap();
    Arc::new(shale::api::tls::server_config(&c, &k).expect("a server config"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_agree_over_tls_and_a_node_without_the_secret_is_refused_there_too() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut replicas = BTreeMap::new();
    for (i, dir) in dirs.iter().take(3).enumerate() {
        let id = i as u64 + 1;
        replicas.insert(id, start_with(id, dir.path(), None, SECRET, Some(node_certificate(dir.path()))).await);
    }
    replicas[&1].raft.initialize(members(&replicas)).await.expect("initialized");
    let leader = replicas[&1].raft.wait(WAIT).metrics(|m| m.current_leader.is_some(), "a leader").await.unwrap();
    let leader = leader.current_leader.unwrap();
    let w = write(&replicas[&leader].raft, 1, put("k", "over tls", Precondition::NONE)).await;
    for r in replicas.values() {
        applied(r, w.log_id.index).await;
        assert_eq!(value(r, "k").map(|(v, _)| v), Some(b"over tls".to_vec()));
    }
    // The port speaks TLS: a plain connection gets no challenge (the node waits for a TLS ClientHello).
    {
        use tokio::io::AsyncReadExt;
        let mut plain = tokio::net::TcpStream::connect(replicas[&1].addr).await.unwrap();
        let mut buf = [0u8; 4];
        let got = tokio::time::timeout(Duration::from_millis(300), plain.read(&mut buf)).await;
        assert!(!matches!(got, Ok(Ok(n)) if n > 0), "a plain-text challenge on a TLS port: {got:?}");
    }
    // A node with TLS but another secret cannot join: added as a learner, it never receives the entries.
    let outsider = start_with(4, dirs[3].path(), None, b"another secret", Some(node_certificate(dirs[3].path()))).await;
    let node = NodeAddr { cluster: outsider.addr.to_string(), api: String::new() };
    replicas[&leader].raft.add_learner(4, node, false).await.expect("a learner entry");
    let caught =
        outsider.raft.wait(Some(Duration::from_secs(3))).applied_index_at_least(Some(w.log_id.index), "x").await;
    assert!(caught.is_err(), "a node without the secret received the log");
    stop(outsider).await;
    for (_, r) in replicas {
        stop(r).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_know_the_secret_is_refused() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut replicas = BTreeMap::new();
    replicas.insert(1, start(1, dirs[0].path(), None, SECRET).await);
    replicas.insert(2, start(2, dirs[1].path(), None, b"another secret").await);
    replicas[&1].raft.initialize(members(&replicas)).await.expect("initialized");
    // Two voters: a leader needs both, and neither accepts the other's connections.
    let waited =
        replicas[&1].raft.wait(Some(Duration::from_secs(3))).metrics(|m| m.current_leader.is_some(), "a leader").await;
    assert!(waited.is_err(), "a leader was elected across a refused connection: {waited:?}");
    for (_, r) in replicas {
        stop(r).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_has_not_proven_the_secret_cannot_make_the_node_read_a_large_frame() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let replica = start(1, dir.path(), None, SECRET).await;
    let mut conn = tokio::net::TcpStream::connect(replica.addr).await.unwrap();
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).await.expect("the challenge's length");
    let mut challenge = vec![0u8; u32::from_le_bytes(len) as usize];
    conn.read_exact(&mut challenge).await.expect("the challenge");
    // A hello that claims to be 32 MiB long (a size a proven peer may send): the node closes the connection
    // instead of waiting for it.
    conn.write_all(&(32u32 << 20).to_le_bytes()).await.unwrap();
    let mut rest = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(500), conn.read(&mut rest)).await.expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "the connection stayed open: {read:?}");
    stop(replica).await;
}
