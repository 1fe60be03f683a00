//! Cluster mode: every shard a Raft group run by `openraft`. This layer holds the groups' type configuration
//! ([`types`]) and each shard's Raft log ([`log`]).

pub mod log;
pub mod types;
