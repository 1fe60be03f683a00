//! shale: a persistent, self-sharding key-value database served over HTTP.
//!
//! # Layout
//! The modules follow one write from the socket to the disk:
//! - [`http`]: actix-web routes; each handler turns a request into a [`command::Command`] or a read.
//! - [`node`]: key -> shard ([`placement`]), write dispatch, cached reads (a miss reads where [`miss_reads`]
//!   says), merged listings.
//! - [`shard`]: one OS thread per shard; batches writes, commits once per batch, updates the [`cache`], answers.
//! - [`store`]: one redb file per shard; tables, reads and the batch transaction; values are [`record`]s.
//! - [`wal`]: the shard file's write-ahead log under `DURABILITY=immediate` (one fdatasync per batch).
//! - [`server`]: start-up (config, [`manifest`], stores, shards, HTTP) and graceful teardown; [`sched`]: the
//!   scheduling policy of every thread it starts.
//! - [`config`] and [`error`]: every setting of API.md, and every error code of API.md.
//!
//! Around the data path:
//! - [`reshard`]: moves every record to its new shard when `SHARD_LIMIT` changes, crash-safe at every step.
//! - [`backup`]: consistent online backup (a rendezvous of all shard workers), restore, compaction.
//! - [`metrics`] (Prometheus `/metrics`), [`tls`] (HTTPS with rustls), [`fault`] (named crash points for tests).
//! - [`cli`]: `shale cli` and the one-shot client commands, over HTTP.
//! - [`resp`]: the Redis-protocol listener (RESP2/RESP3/inline) on the same node.
//!
//! `docs/design.md` describes the data path, the on-disk layout and the durability and cache rules.

pub mod api;
pub mod cli;
pub mod command;
pub mod config;
pub mod engine;
pub mod error;
pub mod fault;
pub mod metrics;
pub mod node;
pub mod ops;
pub mod placement;
pub mod record;
pub mod sched;
pub mod server;
pub mod shard;

pub use config::Config;
pub use error::Error;
