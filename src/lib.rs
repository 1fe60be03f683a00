//! shale: a persistent, self-sharding key-value database served over HTTP and the Redis protocol.
//!
//! # Layers
//! The modules are layers; each imports only its own layer or those below it (`tests/layers.rs` fails
//! otherwise). From the bottom up:
//! - The vocabulary every layer shares: [`command`] (protocol-neutral commands and replies), [`record`] (the stored
//!   value), [`placement`] (key -> shard), [`error`] (the one error type, no protocol in it), [`config`], plus
//!   [`sched`], [`fault`], [`random`] and [`metrics`].
//! - [`engine`]: one shard's storage: its redb file ([`engine::store`]), the command logic applied inside a write
//!   transaction ([`engine::apply`]), the write-ahead log ([`engine::wal`]) and the durability policy
//!   ([`engine::durability`]). No threads, no sockets.
//! - [`shard`]: one worker thread per shard that batches writes, applies them through the engine, updates the
//!   [`shard::cache`] and answers; its [`shard::ShardHandle`] is how the node reaches it.
//! - [`node`]: the one entry point of every protocol: placement, the one read path and read-your-writes rule
//!   ([`node::reads`]), and the write seam ([`node::writes`]: where a shard's writes go).
//! - [`cluster`]: cluster mode's Raft groups, one per shard (so far their type configuration and each shard's
//!   Raft storage, its log and its state machine, and the cluster port between nodes; no server start uses them
//!   yet).
//! - [`ops`]: the manifest of the data dir, backup and restore, resharding.
//! - [`api`]: the edges: HTTP ([`api::http`]) and RESP ([`api::resp`]), each mapping requests to commands and
//!   errors to its own answers.
//! - [`server`] (start-up order and teardown) and [`cli`] (the client commands).
//!
//! A durable PUT: `api::http::kv` -> [`node::Node::dispatch`] -> [`node::writes::ShardWrites`] -> the shard
//! worker -> [`engine::store::Store::apply_batch`] -> [`engine::apply::apply_one`] per command -> one log frame and
//! one fdatasync -> the cache -> the answer. `docs/design.md` describes the data path, the on-disk layout and the
//! durability and cache rules; `docs/api.md` is the contract.

pub mod api;
pub mod cli;
pub mod cluster;
pub mod command;
pub mod config;
pub mod engine;
pub mod error;
pub mod fault;
pub mod metrics;
pub mod node;
pub mod ops;
pub mod placement;
pub mod random;
pub mod record;
pub mod sched;
pub mod server;
pub mod shard;

pub use config::Config;
pub use error::Error;
