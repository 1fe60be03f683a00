//! Server lifecycle: start-up in a logged order, and teardown in the reverse one.
//!
//! Start: validate config, load the TLS certificate and bind the RESP port (so those fail before the data dir is
//! touched) -> manifest (resharding when needed) -> open every shard file in parallel -> spawn the shard workers
//! (each warms its part of the cache, then reports ready) -> bind HTTP, then serve RESP (`resp`). `/healthz`
//! answers at once; `/readyz` answers 200 once every shard is warm.
//!
//! Stop: stop accepting and finish in-flight requests -> drop the node (the last shard senders) -> each
//! worker drains and commits its queue and closes its file -> join every worker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{web, HttpServer};

use crate::api::auth::Tokens;
use crate::api::http::{self, AppState};
use crate::cluster::runtime::{Cluster, ClusterConfig};
use crate::cluster::service::Identity;
use crate::cluster::types::{raft_node_id, ClusterId, NodeAddr};
use crate::command::Space;
use crate::config::Config;
use crate::engine::durability::Log;
use crate::engine::schema::shard_file;
use crate::engine::store::Store;
use crate::node::Node;
use crate::ops::manifest::{self, ClusterRecord};
use crate::placement::ShardId;
use crate::shard::cache::Cache;
use crate::shard::{self, Readiness, ShardOptions};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A bad setting.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The data dir's layout cannot be served.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// A resharding failed (the data dir still holds one complete layout).
    #[error(transparent)]
    Reshard(#[from] crate::ops::reshard::ReshardError),
    /// A shard file cannot be opened.
    #[error("{0}")]
    Store(crate::error::Error),
    /// The address cannot be bound, or a thread cannot be spawned.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

// ---- connection limits (slow and hostile clients; `tests/hostile.rs`) ----

/// Time a client has to send a complete request head, from connecting or from the end of its previous request;
/// then it gets 408 and the connection is closed. Bounds slowloris clients that trickle header bytes.
pub const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a closing connection has to finish its shutdown before it is dropped.
pub const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an idle keep-alive connection stays open between requests.
pub const KEEP_ALIVE: Duration = Duration::from_secs(75);
/// Open connections per HTTP worker; past it the worker stops accepting until one closes.
pub const MAX_CONNECTIONS_PER_WORKER: usize = 10_000;
/// Connections the kernel queues before they are accepted.
pub const BACKLOG: u32 = 2048;
pub use crate::api::http::MAX_HEADER_BYTES;

/// A started server.
pub struct RunningServer {
    addr: SocketAddr,
    handle: ServerHandle,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
    node: Arc<Node>,
    workers: Vec<JoinHandle<()>>,
    resp: Option<crate::api::resp::RespServer>,
    cluster: Option<Arc<Cluster>>,
}

/// Starts shale with `config`. Must be called inside an actix system (`actix_web::rt::System`).
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    config.validate()?;
    // First: every thread started from here on inherits the policy.
    crate::sched::apply(config.thread_scheduling);
    // Load the certificate before touching the data dir, so a bad file fails fast and changes nothing.
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        crate::api::tls::server_config(cert, key)?;
    }
    // Likewise the RESP port: a taken port fails here, before the data dir is opened.
    let resp_listener = crate::api::resp::RespServer::bind(&config)?;
    crate::metrics::init();
    let started = Instant::now();
    let m = manifest::open_or_create(&config.data_dir, config.shards)?;
    check_cluster_layout(&config, &m)?;
    let m = crate::ops::reshard::reconcile(&config.data_dir, m, config.shards)?;
    tracing::info!(data_dir = %config.data_dir.display(), shards = m.shards, node_id = %m.node_id, "data dir opened");

    // redb's own page cache: a share of the budget per file (its default is 1 GiB per database).
    let redb_cache = (config.cache_bytes / 4 / u64::from(config.shards)).clamp(1 << 20, 1 << 30) as usize;
    let stores = open_stores(&config, redb_cache)?;

    let cache = Cache::new(config.cache_bytes);
    // Size the cache's tables once for what the files hold, before the shard workers all fill them at once.
    let mut stored = 0u64;
    for store in &stores {
        for space in Space::ALL {
            stored += store.len(space).map_err(StartError::Store)?;
        }
    }
    cache.reserve(stored);
    let readiness = Readiness::new(stores.len());
    let options = ShardOptions::from_config(&config);
    let mut handles = Vec::new();
    let mut workers = Vec::new();
    for store in stores {
        let (handle, join) = shard::spawn(store, cache.clone(), options.clone(), readiness.clone())?;
        handles.push(handle);
        workers.push(join);
    }
    let node = Node::new(handles.clone(), cache, readiness, config.max_key_bytes).map_err(StartError::Store)?;
    // The HTTP port is bound before the cluster starts, so the address peers are told is the bound one.
    let http_listeners = bind_http(&config.host, config.port).await?;
    let addr = http_listeners[0].local_addr()?;
    let (node, cluster) = match &config.node_addr {
        None => (node, None),
        Some(node_addr) => {
            let cluster = start_cluster(&config, &m, node_addr, addr, &handles)?;
            let node = node.clustered(cluster.writes(config.queue_depth), cluster.linearize());
            (node, Some(Arc::new(cluster)))
        }
    };
    drop(handles);
    let node = Arc::new(node);

    let state = web::Data::new(AppState {
        node: node.clone(),
        auth: Tokens::new(&config.auth_token, &config.auth_read_token),
        config: config.clone(),
        cluster: cluster.clone(),
    });
    if !state.auth.enabled() && !crate::config::is_loopback(&config.host) {
        tracing::warn!(host = %config.host, "listening on a non-loopback address with no AUTH_TOKEN: anyone who can reach it can read and write");
    }
    let scheduling = config.thread_scheduling;
    // actix calls this factory on each worker thread as it starts it.
    let mut server = HttpServer::new(move || {
        crate::sched::apply_http_worker(scheduling);
        http::app(state.clone())
    })
    .disable_signals()
    .shutdown_timeout(30)
    .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
    .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
    .keep_alive(KEEP_ALIVE)
    .max_connections(MAX_CONNECTIONS_PER_WORKER)
    .backlog(BACKLOG);
    if let Some(n) = config.http_workers {
        server = server.workers(n.max(1));
    }
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(crate::api::tls::server_config(cert, key)?),
        _ => None,
    };
    for listener in http_listeners {
        server = match &tls {
            Some(tls) => server.listen_rustls_0_23(listener, tls.clone())?,
            None => server.listen(listener)?,
        };
    }
    let resp = match resp_listener {
        Some(listener) => Some(crate::api::resp::RespServer::start(listener, &config, node.clone())?),
        None => None,
    };
    let server = server.run();
    let handle = server.handle();
    let serving = actix_web::rt::spawn(server);
    let scheme = if config.tls_cert.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, ms = started.elapsed().as_millis() as u64, "listening");
    Ok(RunningServer { addr, handle, serving, node, workers, resp, cluster })
}

/// Binds the HTTP port on every address `host` resolves to, as actix's own `bind` does (address reuse, a
/// [`BACKLOG`] of pending connections), before the server runs, so its address is known to the cluster.
async fn bind_http(host: &str, port: u16) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::new();
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        listeners.push(socket.listen(BACKLOG)?.into_std()?);
    }
    if listeners.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host} resolves to no address")));
    }
    Ok(listeners)
}

/// Refuses a data dir whose cluster membership does not match the mode it is started in, and the resharding of
/// a cluster's data dir.
fn check_cluster_layout(config: &Config, m: &manifest::Manifest) -> Result<(), StartError> {
    let refuse = |message: String| Err(StartError::Config(crate::config::ConfigError(message)));
    match (&m.cluster, config.clustered()) {
        (Some(c), false) => refuse(format!(
            "this data dir belongs to cluster {}: start it with NODE_ADDR, or restore a backup of it into an empty              data dir to run it as a single node",
            c.id
        )),
        (_, true) if m.shards != config.shards || m.reshard.is_some() => refuse(format!(
            "SHARD_LIMIT is {}, but this data dir has {} shards: resharding a cluster node is not supported; start              it with SHARD_LIMIT={}",
            config.shards, m.shards, m.shards
        )),
        _ => Ok(()),
    }
}

/// Starts this node's Raft groups and cluster port.
fn start_cluster(
    config: &Config,
    m: &manifest::Manifest,
    node_addr: &str,
    api: SocketAddr,
    shards: &[crate::shard::ShardHandle],
) -> Result<Cluster, StartError> {
    let node = raft_node_id(&m.node_id).ok_or_else(|| {
        StartError::Config(crate::config::ConfigError(format!("the manifest's node id {:?} is not hex", m.node_id)))
    })?;
    let cluster = m.cluster.as_ref().map(|c| ClusterId { id: c.id.clone(), replicas: c.replicas });
    let identity = Identity::new(node, NodeAddr { cluster: node_addr.to_string(), api: api.to_string() }, cluster);
    let data_dir = config.data_dir.clone();
    let record = Box::new(move |c: &ClusterId| {
        manifest::record_cluster(&data_dir, ClusterRecord { id: c.id.clone(), replicas: c.replicas })
            .map_err(|e| std::io::Error::other(e.to_string()))
    });
    let config = ClusterConfig {
        identity,
        listen: format!("{}:{}", config.host, config.cluster_port),
        join: config.join.clone(),
        replicas: config.replicas,
        secret: config.cluster_secret.clone().unwrap_or_default().into_bytes(),
        tls: match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(crate::api::tls::server_config(cert, key)?)),
            _ => None,
        },
        timeout: config.request_timeout(),
        data_dir: config.data_dir.clone(),
        queue_depth: config.queue_depth,
        snapshot_entries: config.raft_snapshot_entries,
        record,
    };
    // On a thread of its own: the cluster's runtime cannot be built or blocked on inside the caller's.
    let cluster = std::thread::scope(|scope| {
        scope.spawn(|| Cluster::start(config, shards)).join().expect("starting the cluster does not panic")
    })?;
    tracing::info!(node = format!("{node:016x}"), cluster_port = %cluster.addr(), %node_addr, "cluster mode");
    Ok(cluster)
}

/// Opens every shard file on its own thread (a file that needs repair after a crash takes a while).
fn open_stores(config: &Config, redb_cache: usize) -> Result<Vec<Arc<Store>>, StartError> {
    std::thread::scope(|scope| {
        let opening: Vec<_> = (0..config.shards)
            .map(|i| {
                let path = shard_file(&config.data_dir, ShardId(i));
                // A cluster's shard file is its Raft group's state machine: the Raft log is its write-ahead log.
                let log = if config.clustered() { Log::Off } else { Log::for_durability(config.durability) };
                scope.spawn(move || Store::open(path, ShardId(i), redb_cache, log))
            })
            .collect();
        opening
            .into_iter()
            .map(|t| t.join().expect("opening a shard does not panic").map(Arc::new).map_err(StartError::Store))
            .collect()
    })
}

impl RunningServer {
    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The RESP listener's address, when it is on.
    pub fn resp_addr(&self) -> Option<SocketAddr> {
        self.resp.as_ref().map(|r| r.addr())
    }

    /// The node, for in-process inspection.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Waits until every shard is warm (or `timeout` passes).
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.node.readiness().is_ready() {
            if Instant::now() > deadline {
                return false;
            }
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Graceful stop: finish in-flight requests, commit every queued write, close every file.
    pub async fn stop(self) {
        let RunningServer { handle, serving, node, workers, resp, cluster, .. } = self;
        node.readiness().set_stopping();
        handle.stop(true).await;
        let _ = serving.await;
        if let Some(resp) = resp {
            let _ = tokio::task::spawn_blocking(move || resp.stop()).await;
        }
        // Raft stops before the shards it applies to.
        if let Some(cluster) = cluster {
            match Arc::try_unwrap(cluster) {
                Ok(cluster) => {
                    let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
                }
                Err(_) => tracing::error!("the cluster is still referenced after shutdown"),
            }
        }
        // The App instances are gone; our clone of the node holds the last shard senders.
        let mut node = node;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Arc::try_unwrap(node) {
                Ok(r) => {
                    drop(r);
                    break;
                }
                Err(still) if Instant::now() < deadline => {
                    node = still;
                    actix_web::rt::time::sleep(Duration::from_millis(5)).await;
                }
                Err(_) => {
                    tracing::error!("node still referenced after shutdown; shards may not close cleanly");
                    break;
                }
            }
        }
        for w in workers {
            if w.join().is_err() {
                tracing::error!("a shard worker panicked");
            }
        }
        tracing::info!("shutdown complete");
    }
}

/// Runs until `shutdown` resolves, then stops gracefully. Prints `LISTENING <addr>` on stdout once bound.
pub async fn run(config: Config, shutdown: impl std::future::Future<Output = ()>) -> Result<(), StartError> {
    let server = start(config).await?;
    println!("LISTENING {}", server.addr());
    if let Some(resp) = server.resp_addr() {
        println!("RESP LISTENING {resp}");
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    shutdown.await;
    tracing::info!("shutdown requested");
    server.stop().await;
    Ok(())
}
