//! Cluster mode: every shard a Raft group run by `openraft`. This layer holds the groups' type configuration
//! ([`types`]), each shard's Raft log ([`log`]) and its state machine, the shard file ([`state`]), the cluster
//! port that connects the nodes ([`transport`]) and what nodes ask each other on it ([`service`]), the
//! replicated write path ([`writes`]) and linearizable reads ([`reads`]), and the node that runs them and forms
//! and keeps the cluster ([`runtime`]).

pub mod log;
pub mod reads;
pub mod runtime;
pub mod service;
pub mod state;
pub mod transport;
pub mod types;
pub mod writes;
