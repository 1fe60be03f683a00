//! The Raft type configuration of the shard groups: what a log entry carries, what applying it answers, and how
//! a node is addressed.

use std::fmt;

use crate::command::{Command, Reply};
use crate::error::Error;

/// One write proposed to a shard's Raft group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Proposal {
    /// Identifies the request across retries and forwarding, so that it is applied at most once.
    pub request: u128,
    /// The write.
    pub command: Command,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request {:032x}", self.request)
    }
}

/// What applying an entry answered, the same on every replica: its command's outcome (`None` for an entry that
/// carries no command: a blank or membership entry).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applied(pub Option<Result<Reply, Error>>);

/// Where a node is reached.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct NodeAddr {
    /// `host:port` of its cluster port (`NODE_ADDR`).
    pub cluster: String,
    /// `host:port` of its HTTP API.
    pub api: String,
}

openraft::declare_raft_types!(
    /// The type configuration of every shard's Raft group.
    pub ShardRaft:
        D = Proposal,
        R = Applied,
        NodeId = u64,
        Node = NodeAddr,
);
