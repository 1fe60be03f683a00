//! Server configuration: every setting of `docs/api.md` as a flag with an environment fallback (the flag wins).
//!
//! Parsed once by clap in `main.rs`, validated by [`Config::validate`] before anything touches the data dir.
//! Defaults are the named constants below, chosen so that `shale` alone serves a laptop.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::sched::ThreadScheduling;

/// Default bind address: loopback only, so a fresh install is not reachable from the network.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Default HTTP port.
pub const DEFAULT_PORT: u16 = 4000;
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default directory of backups taken without an explicit path.
pub const DEFAULT_BACKUP_DIR: &str = "./backups";
/// Default shard count: one redb file and one writer thread per shard.
pub const DEFAULT_SHARDS: u32 = 4;
/// Default cache budget in bytes of keys plus values (256 MiB).
pub const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;
/// Default largest value (1 MiB).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Default longest key (1 KiB).
pub const DEFAULT_MAX_KEY_BYTES: usize = 1024;
/// Default longest time between durable commits under `DURABILITY=eventual`.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 1000;
/// Most write requests one shard queues before answering 503.
pub const DEFAULT_QUEUE_DEPTH: usize = 4096;
/// Most requests one shard applies in one write transaction.
pub const DEFAULT_MAX_BATCH: usize = 512;
/// Most value bytes one shard applies in one write transaction (a request larger than this is a batch alone).
pub const DEFAULT_MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Default node-to-node port in cluster mode.
pub const DEFAULT_CLUSTER_PORT: u16 = 4100;
/// Default copies of every shard in a cluster.
pub const DEFAULT_REPLICAS: u32 = 3;
/// Default Raft log entries between two snapshots of a shard (a snapshot copies the shard file).
pub const DEFAULT_RAFT_SNAPSHOT_ENTRIES: u64 = 100_000;
/// Default longest wait for a leader or a majority before a request answers 503.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5000;

/// Default most open RESP connections (Redis's `maxclients` default).
pub const DEFAULT_RESP_MAX_CLIENTS: usize = 10_000;

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    /// Acknowledged only after its shard's write-ahead log is fsynced.
    Immediate,
    /// Acknowledged once written to the log (a crash of the process loses nothing); the log is fsynced at least
    /// every flush interval (a power loss loses at most that window).
    Eventual,
}

/// Every setting of `shale serve`.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to bind.
    #[arg(long, env = "HOST", default_value = DEFAULT_HOST)]
    pub host: String,
    /// HTTP port (0 picks a free port; the chosen address is logged and printed as `LISTENING <addr>`).
    #[arg(long, env = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Where the shard files and the manifest live.
    #[arg(long, env = "DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Number of shards (1..=1024); a data dir with another count is resharded to this one at start-up.
    #[arg(long = "shards", env = "SHARD_LIMIT", default_value_t = DEFAULT_SHARDS,
          value_parser = clap::value_parser!(u32).range(1..=crate::placement::PARTITIONS as i64))]
    pub shards: u32,
    /// In-memory cache budget, in bytes of keys plus values.
    #[arg(long, env = "CACHE_BYTES", default_value_t = DEFAULT_CACHE_BYTES)]
    pub cache_bytes: u64,
    /// `immediate`: acknowledge after fsync; `eventual`: acknowledge once written (safe from a crash of the
    /// process), fsync at least every flush interval.
    #[arg(long, env = "DURABILITY", value_enum, default_value_t = Durability::Immediate)]
    pub durability: Durability,
    /// Larger values get 413.
    #[arg(long, env = "MAX_VALUE_BYTES", default_value_t = DEFAULT_MAX_VALUE_BYTES,
          value_parser = parse_positive_usize)]
    pub max_value_bytes: usize,
    /// Longer keys get 414.
    #[arg(long, env = "MAX_KEY_BYTES", default_value_t = DEFAULT_MAX_KEY_BYTES,
          value_parser = parse_positive_usize)]
    pub max_key_bytes: usize,
    /// In milliseconds, with `eventual`: the longest time between fsyncs of the log (what a power loss may lose).
    /// Unused with `immediate`, where each write's log frame is fsynced.
    #[arg(long, env = "FLUSH_INTERVAL_MS", default_value_t = DEFAULT_FLUSH_INTERVAL_MS,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub flush_interval_ms: u64,
    /// Read-write bearer token(s), comma-separated.
    #[arg(long, env = "AUTH_TOKEN", value_delimiter = ',', hide_env_values = true)]
    pub auth_token: Vec<String>,
    /// Read-only bearer token(s), comma-separated.
    #[arg(long, env = "AUTH_READ_TOKEN", value_delimiter = ',', hide_env_values = true)]
    pub auth_read_token: Vec<String>,
    /// PEM certificate chain; with --tls-key, serve HTTPS.
    #[arg(long, env = "TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key; with --tls-cert, serve HTTPS.
    #[arg(long, env = "TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Where `POST /admin/backup` writes backups when the request names no path.
    #[arg(long, env = "BACKUP_DIR", default_value = DEFAULT_BACKUP_DIR)]
    pub backup_dir: PathBuf,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "HTTP_WORKERS")]
    pub http_workers: Option<usize>,
    /// Write requests one shard may queue before answering 503.
    #[arg(long, env = "SHARD_QUEUE_DEPTH", default_value_t = DEFAULT_QUEUE_DEPTH,
          value_parser = parse_positive_usize)]
    pub queue_depth: usize,
    /// Most requests one shard applies in one write transaction.
    #[arg(long, env = "MAX_BATCH", default_value_t = DEFAULT_MAX_BATCH, value_parser = parse_positive_usize)]
    pub max_batch: usize,
    /// Redis-protocol (RESP2/RESP3, inline) port on the same host; `0` or `off` disables the listener.
    #[arg(long, env = "RESP_PORT", default_value = "6380", value_parser = parse_resp_port)]
    pub resp_port: RespPort,
    /// Allow `FLUSHDB` / `FLUSHALL` over RESP (they delete every key; off by default).
    #[arg(long, env = "RESP_ALLOW_FLUSH", value_parser = clap::builder::BoolishValueParser::new(),
          default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub resp_allow_flush: bool,
    /// Most open RESP connections (Redis's `maxclients`); past it a new client gets Redis's error and is closed.
    #[arg(long, env = "RESP_MAX_CLIENTS", default_value_t = DEFAULT_RESP_MAX_CLIENTS, value_parser = parse_positive_usize)]
    pub resp_max_clients: usize,
    /// Scheduling policy of shale's threads: `batch` (SCHED_BATCH: they do not preempt each other on wake-up)
    /// or `inherit` (keep the policy shale was started with).
    #[arg(long, env = "THREAD_SCHEDULING", value_enum, default_value_t = ThreadScheduling::Batch)]
    pub thread_scheduling: ThreadScheduling,
    /// `host:port` where other nodes reach this node's cluster port; set = cluster mode.
    #[arg(long, env = "NODE_ADDR")]
    pub node_addr: Option<String>,
    /// Node-to-node port on `HOST` (cluster mode).
    #[arg(long, env = "CLUSTER_PORT", default_value_t = DEFAULT_CLUSTER_PORT)]
    pub cluster_port: u16,
    /// Comma-separated cluster addresses (`host:port`) of the nodes to join; the same list may be given to every
    /// node, itself included.
    #[arg(long, env = "JOIN", value_delimiter = ',')]
    pub join: Vec<String>,
    /// Copies of every shard, fixed by `shale cluster init`.
    #[arg(long, env = "REPLICAS", default_value_t = DEFAULT_REPLICAS,
          value_parser = clap::value_parser!(u32).range(1..=7))]
    pub replicas: u32,
    /// The secret every node-to-node connection proves; required in cluster mode unless `HOST`, `NODE_ADDR` and
    /// every `JOIN` address are loopback.
    #[arg(long, env = "CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Longest wait, in milliseconds, for a shard's leader or majority before 503 `unavailable`.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = DEFAULT_REQUEST_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub request_timeout_ms: u64,
    /// Raft log entries after which a shard snapshots its file, so the log below can be dropped (a snapshot
    /// copies the file; a follower too far behind gets the copy).
    #[arg(long, env = "RAFT_SNAPSHOT_ENTRIES", default_value_t = DEFAULT_RAFT_SNAPSHOT_ENTRIES,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub raft_snapshot_entries: u64,
}

/// Where the RESP listener binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespPort {
    /// No RESP listener.
    Off,
    /// This port (never 0: `RESP_PORT=0` means [`RespPort::Off`]).
    Port(u16),
    /// Any free port (tests; the bound address is reported by the server).
    Any,
}

/// Parses `RESP_PORT`: a port, or `0` / `off` to disable the listener.
pub fn parse_resp_port(s: &str) -> Result<RespPort, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(RespPort::Off);
    }
    match s.parse::<u16>() {
        Ok(0) => Ok(RespPort::Off),
        Ok(p) => Ok(RespPort::Port(p)),
        Err(_) => Err(format!("expected a port number, 0 or off, got {s:?}")),
    }
}

fn parse_positive_usize(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be greater than 0".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a positive integer: {e}")),
    }
}

/// A configuration that cannot be served, with a message for a person.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// A configuration for tests: port 0 on loopback, the given data dir, small limits, everything else default.
    pub fn for_test(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            host: DEFAULT_HOST.into(),
            port: 0,
            backup_dir: std::env::temp_dir().join("shale-test-backups"),
            data_dir: data_dir.into(),
            shards: DEFAULT_SHARDS,
            cache_bytes: 16 * 1024 * 1024,
            durability: Durability::Immediate,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            flush_interval_ms: DEFAULT_FLUSH_INTERVAL_MS,
            auth_token: Vec::new(),
            auth_read_token: Vec::new(),
            tls_cert: None,
            tls_key: None,
            http_workers: Some(2),
            queue_depth: DEFAULT_QUEUE_DEPTH,
            max_batch: DEFAULT_MAX_BATCH,
            resp_port: RespPort::Off,
            resp_allow_flush: false,
            resp_max_clients: DEFAULT_RESP_MAX_CLIENTS,
            // The test process's threads keep their policy; the binary's default is tested in tests/binary.rs.
            thread_scheduling: ThreadScheduling::Inherit,
            node_addr: None,
            cluster_port: DEFAULT_CLUSTER_PORT,
            join: Vec::new(),
            replicas: DEFAULT_REPLICAS,
            cluster_secret: None,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            raft_snapshot_entries: DEFAULT_RAFT_SNAPSHOT_ENTRIES,
        }
    }

    /// Checks what clap cannot check field by field. Called once at start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.shards == 0 || self.shards > crate::placement::PARTITIONS {
            return Err(ConfigError(format!(
                "SHARD_LIMIT must be between 1 and {}, got {}",
                crate::placement::PARTITIONS,
                self.shards
            )));
        }
        if self.max_value_bytes > 512 * 1024 * 1024 {
            return Err(ConfigError(format!(
                "MAX_VALUE_BYTES must be at most 536870912 (512 MiB), got {}",
                self.max_value_bytes
            )));
        }
        if self.max_key_bytes > 64 * 1024 {
            return Err(ConfigError(format!("MAX_KEY_BYTES must be at most 65536, got {}", self.max_key_bytes)));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError("TLS needs both --tls-cert and --tls-key".into()));
        }
        if self.auth_token.iter().chain(&self.auth_read_token).any(|t| t.trim().is_empty()) {
            return Err(ConfigError("AUTH_TOKEN / AUTH_READ_TOKEN must not contain empty tokens".into()));
        }
        if let Some(addr) = &self.node_addr {
            if split_host_port(addr).is_none() {
                return Err(ConfigError(format!("NODE_ADDR must be host:port, got {addr:?}")));
            }
            if let Some(bad) = self.join.iter().find(|a| split_host_port(a).is_none()) {
                return Err(ConfigError(format!("JOIN must list host:port addresses, got {bad:?}")));
            }
            let secret = self.cluster_secret.as_deref().unwrap_or("");
            let local = is_loopback(&self.host)
                && std::iter::once(addr)
                    .chain(&self.join)
                    .all(|a| split_host_port(a).is_some_and(|(h, _)| is_loopback(h)));
            if secret.trim().is_empty() && !local {
                return Err(ConfigError(
                    "CLUSTER_SECRET is required in cluster mode unless HOST, NODE_ADDR and every JOIN address are loopback"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// Whether this node runs in cluster mode (`NODE_ADDR` set).
    pub fn clustered(&self) -> bool {
        self.node_addr.is_some()
    }

    /// The longest wait for a leader or a majority.
    pub fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.request_timeout_ms)
    }

    /// The flush interval as a `Duration`.
    pub fn flush_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.flush_interval_ms)
    }
}

/// `host` and `port` of a `host:port` address (`[v6]:port` too).
pub fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

/// Whether `host` is a loopback name or address.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
