//! Protocol-neutral commands and replies: what the HTTP layer (and later RESP and the cluster) asks of a shard.
//!
//! A write is parsed once into a [`Command`] carrying everything the shard needs to decide it inside its write
//! transaction: the precondition, the counter delta. That makes conditional writes and increments atomic without
//! any lock outside the shard thread.

use bytes::Bytes;

/// A keyspace: each is its own redb table and its own slice of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Space {
    /// Raw key-values of `/kv`.
    Kv = 0,
    /// ExDaas-style JSON documents of `/api`, keyed by the big-endian u64 id.
    Doc = 1,
    /// dist_counter-style counters of `/counter`; the value is an i64, little-endian.
    Counter = 2,
}

impl Space {
    /// Every space, in table order.
    pub const ALL: [Space; 3] = [Space::Kv, Space::Doc, Space::Counter];
}

/// Which ETags an `If-Match` / `If-None-Match` header names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtagMatch {
    /// `*`: any current record.
    Any,
    /// A list of revisions (ETags shale did not issue parse to nothing, so they match nothing).
    Revs(Vec<u64>),
}

impl EtagMatch {
    /// Whether the current record (revision, or None when absent) is named by this header.
    pub fn matches(&self, current: Option<u64>) -> bool {
        match self {
            EtagMatch::Any => current.is_some(),
            EtagMatch::Revs(revs) => current.is_some_and(|c| revs.contains(&c)),
        }
    }
}

/// A condition on the current record, checked inside the shard's write transaction (so it is atomic).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Precondition {
    /// `If-Match`: the current record must be named (412 when absent).
    pub if_match: Option<EtagMatch>,
    /// `If-None-Match`: the current record must not be named (`*` = create-only).
    pub if_none_match: Option<EtagMatch>,
}

impl Precondition {
    /// No condition.
    pub const NONE: Precondition = Precondition { if_match: None, if_none_match: None };

    /// Whether a record with revision `current` (None = absent) satisfies this condition.
    pub fn holds(&self, current: Option<u64>) -> bool {
        self.if_match.as_ref().is_none_or(|m| m.matches(current))
            && self.if_none_match.as_ref().is_none_or(|m| !m.matches(current))
    }
}

/// A write, applied by the shard that owns its key.
#[derive(Debug, Clone)]
pub enum Command {
    /// Store `value` under `key`.
    Put {
        /// Keyspace.
        space: Space,
        /// Raw key bytes.
        key: Bytes,
        /// Value bytes.
        value: Bytes,
        /// Content type to store (empty = default).
        content_type: Bytes,
        /// Condition on the current record.
        precondition: Precondition,
        /// Skip the write when the stored value and type are already these bytes (documents).
        skip_if_unchanged: bool,
    },
    /// Remove `key`.
    Delete {
        /// Keyspace.
        space: Space,
        /// Raw key bytes.
        key: Bytes,
        /// Condition on the current record.
        precondition: Precondition,
    },
    /// Add `delta` to the counter `name` (absent = 0); fails without change on i64 overflow.
    CounterAdd {
        /// Counter name.
        name: Bytes,
        /// Signed amount to add.
        delta: i64,
    },
}

impl Command {
    /// The key that decides which shard applies this command.
    pub fn key(&self) -> &[u8] {
        match self {
            Command::Put { key, .. } | Command::Delete { key, .. } => key,
            Command::CounterAdd { name, .. } => name,
        }
    }

    /// Bytes of payload this command adds to a batch (for the batch byte cap).
    pub fn weight(&self) -> usize {
        match self {
            Command::Put { key, value, .. } => key.len() + value.len(),
            Command::Delete { key, .. } => key.len(),
            Command::CounterAdd { name, .. } => name.len() + 8,
        }
    }
}

/// What a successful command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A put stored its value; `created` when the key was absent before.
    Stored {
        /// The key did not exist before.
        created: bool,
        /// Revision of the stored record (the new ETag).
        rev: u64,
    },
    /// A put found the same value already stored and wrote nothing.
    Unchanged {
        /// Revision of the stored record.
        rev: u64,
    },
    /// A delete removed the key.
    Deleted,
    /// A counter's value after the add.
    Counter(i64),
}
