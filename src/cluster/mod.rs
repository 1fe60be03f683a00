//! Cluster mode: every shard a Raft group run by `openraft`. This layer holds the groups' type configuration
//! ([`types`]), each shard's Raft log ([`log`]) and its state machine, the shard file ([`state`]), and the
//! cluster port that connects the nodes ([`transport`]).

pub mod log;
pub mod state;
pub mod transport;
pub mod types;
