//! The Raft type configuration of the shard groups: what a log entry carries, what applying it answers, and how
//! a node is addressed.

use std::fmt;

use crate::command::{Command, Reply};
use crate::error::Error;

/// One write proposed to a shard's Raft group. A write is proposed again only when no leader took it, so an
/// entry needs no id of its own to be applied once; a client's retries are deduplicated by
/// `Command::Idempotent`, decided in the apply like any command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Proposal {
    /// The write.
    pub command: Command,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a write of a {}-byte key", self.command.key().len())
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

/// The cluster a node belongs to, recorded in every member's manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterId {
    /// Random, made by `shale cluster init`.
    pub id: String,
    /// Copies of every shard.
    pub replicas: u32,
}

/// The Raft node id of a node: the first 64 bits of its manifest's random 128-bit node id (hex). `None` when the
/// id is not hex or is zero.
pub fn raft_node_id(manifest_node_id: &str) -> Option<u64> {
    let head = manifest_node_id.get(..16)?;
    u64::from_str_radix(head, 16).ok().filter(|&id| id != 0)
}
