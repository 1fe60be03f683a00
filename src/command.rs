//! Protocol-neutral commands and replies: what the HTTP layer (and later RESP and the cluster) asks of a shard.
//!
//! A write is parsed once into a [`Command`] carrying everything the shard needs to decide it inside its write
//! transaction: the precondition, the counter delta. That makes conditional writes and increments atomic without
//! any lock outside the shard thread.

use bytes::Bytes;

use crate::error::Error;

/// A keyspace: each is its own redb table and its own slice of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum Space {
    /// Raw key-values of `/kv`.
    Kv = 0,
    /// ExDaas-style JSON documents of `/api`, keyed by the big-endian u64 id.
    Doc = 1,
    /// dist_counter-style counters of `/counter`; the value is an i64, little-endian.
    Counter = 2,
    /// D-Boutique buckets registered by RESP `CREATE bucket` (the value is empty). Keys of a bucket live in `Kv`
    /// as `bucket/key`.
    Bucket = 3,
}

impl Space {
    /// Every space, in table order.
    pub const ALL: [Space; 4] = [Space::Kv, Space::Doc, Space::Counter, Space::Bucket];
}

/// Which ETags an `If-Match` / `If-None-Match` header names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Precondition {
    /// `If-Match`: the current record must be named (412 when absent).
    pub if_match: Option<EtagMatch>,
    /// `If-None-Match`: the current record must not be named (`*` = create-only).
    pub if_none_match: Option<EtagMatch>,
}

impl Precondition {
    /// No condition.
    pub const NONE: Precondition = Precondition { if_match: None, if_none_match: None };

    /// The error of a write whose condition did not hold, saying which one.
    pub fn failure(&self) -> Error {
        Error::PreconditionFailed(match (&self.if_match, &self.if_none_match) {
            (_, Some(EtagMatch::Any)) => "the key already exists (If-None-Match: *)".into(),
            (Some(EtagMatch::Any), _) => "the key does not exist (If-Match: *)".into(),
            (Some(_), _) => "the current ETag does not match If-Match".into(),
            _ => "the current ETag matches If-None-Match".into(),
        })
    }

    /// Whether this is no condition at all (every record, and no record, satisfies it).
    pub fn is_none(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }

    /// Whether a record with revision `current` (None = absent) satisfies this condition.
    pub fn holds(&self, current: Option<u64>) -> bool {
        self.if_match.as_ref().is_none_or(|m| m.matches(current))
            && self.if_none_match.as_ref().is_none_or(|m| !m.matches(current))
    }
}

/// A write, applied by the shard that owns its key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Redis `SET`: store `value` under a `/kv` key when `cond` holds; answers [`Reply::Set`].
    Set {
        /// Raw key bytes.
        key: Bytes,
        /// Value bytes (stored with the default content type).
        value: Bytes,
        /// `NX` / `XX`.
        cond: SetCond,
        /// `GET`: answer the value the key held before (whether or not the write happened).
        get_old: bool,
    },
    /// Redis `INCRBY` on a `/kv` value: the value must be a decimal i64 in Redis's strict form (absent = 0); the
    /// sum is stored back as decimal ASCII. Fails without change when the value is not such a number or on overflow.
    KvIncr {
        /// Raw key bytes.
        key: Bytes,
        /// Signed amount to add.
        delta: i64,
    },
    /// Reads `key` inside the shard's write transaction, after every write queued before it, and answers after
    /// that batch committed: a read that must see the caller's own pipelined writes (RESP read-your-writes,
    /// `GET` inside `MULTI`). Changes nothing.
    Read {
        /// Keyspace.
        space: Space,
        /// Raw key bytes.
        key: Bytes,
    },
    /// Commands applied in order inside one write transaction, so they commit (or fail) together: `MULTI`/`EXEC`.
    /// Invariant: every key belongs to the same shard (the caller checks; the shard does not route).
    Batch(Vec<Command>),
    /// Removes every record of `space` from the shard it is sent to (`FLUSHDB`); answers [`Reply::Cleared`].
    Clear {
        /// Keyspace.
        space: Space,
    },
    /// `command`, applied at most once per `request` within [`IDEMPOTENCY_WINDOW_MS`]: the shard records the
    /// outcome under `request` in the same transaction, and a later command with the same `request` (a retry)
    /// is answered that outcome and changes nothing. Answers [`Reply::Idempotent`] either way. Placed by
    /// `command`'s key, so a retry reaches the shard holding the record.
    Idempotent {
        /// The request's id (see [`request_id`]).
        request: u128,
        /// Wall-clock milliseconds since the Unix epoch when the receiving node built this command. Expiry is
        /// decided from it, not from the applying node's clock, so every replica of a log expires the same
        /// records.
        at_ms: u64,
        /// The write.
        command: Box<Command>,
    },
}

/// How long an [`Command::Idempotent`] request's outcome is kept: a command whose `at_ms` is at most this much
/// after the recorded one's is answered the recorded outcome.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 10 * 60 * 1000;

/// A stable 128-bit id of a request made of `parts` (an idempotency key, a method, a path): the first 16 bytes
/// of SHA-256 over the parts, each preceded by its length, so that no two lists of parts share an encoding.
pub fn request_id(parts: &[&[u8]]) -> u128 {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    u128::from_be_bytes(digest[..16].try_into().expect("SHA-256 has 32 bytes"))
}

/// When a [`Command::Set`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SetCond {
    /// Always.
    Always,
    /// `NX`: only when the key is absent.
    IfAbsent,
    /// `XX`: only when the key exists.
    IfPresent,
}

impl SetCond {
    /// Whether a key that `exists` may be written.
    pub fn holds(self, exists: bool) -> bool {
        match self {
            SetCond::Always => true,
            SetCond::IfAbsent => !exists,
            SetCond::IfPresent => exists,
        }
    }
}

impl Command {
    /// A put of `value` under `key` in `/kv`, with no content type, under `precondition`.
    pub fn kv_put(key: &[u8], value: &[u8], precondition: Precondition) -> Command {
        Command::Put {
            space: Space::Kv,
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            content_type: Bytes::new(),
            precondition,
            skip_if_unchanged: false,
        }
    }

    /// The key that decides which shard applies this command.
    ///
    /// A [`Command::Batch`] is placed by its first command; a [`Command::Clear`] has no key (it is sent to a shard
    /// by number) and answers the empty slice.
    pub fn key(&self) -> &[u8] {
        match self {
            Command::Put { key, .. }
            | Command::Delete { key, .. }
            | Command::Set { key, .. }
            | Command::KvIncr { key, .. }
            | Command::Read { key, .. } => key,
            Command::CounterAdd { name, .. } => name,
            Command::Batch(cmds) => cmds.first().map_or(&[], |c| c.key()),
            Command::Clear { .. } => &[],
            Command::Idempotent { command, .. } => command.key(),
        }
    }

    /// The keyspace this command touches (a batch: its first command's).
    pub fn space(&self) -> Space {
        match self {
            Command::Put { space, .. } | Command::Delete { space, .. } | Command::Read { space, .. } => *space,
            Command::Clear { space } => *space,
            Command::Set { .. } | Command::KvIncr { .. } => Space::Kv,
            Command::CounterAdd { .. } => Space::Counter,
            Command::Batch(cmds) => cmds.first().map_or(Space::Kv, |c| c.space()),
            Command::Idempotent { command, .. } => command.space(),
        }
    }

    /// Calls `f` on the space and key of every record this command may change (for cache invalidation after a
    /// failed transaction). A clear names no key: it is reported as `None`.
    pub fn for_each_key(&self, f: &mut impl FnMut(Space, Option<&[u8]>)) {
        match self {
            Command::Batch(cmds) => cmds.iter().for_each(|c| c.for_each_key(f)),
            Command::Clear { space } => f(*space, None),
            Command::Read { .. } => {}
            Command::Idempotent { command, .. } => command.for_each_key(f),
            c => f(c.space(), Some(c.key())),
        }
    }

    /// Bytes of payload this command adds to a batch (for the batch byte cap).
    pub fn weight(&self) -> usize {
        match self {
            Command::Put { key, value, .. } => key.len() + value.len(),
            Command::Delete { key, .. } => key.len(),
            Command::CounterAdd { name, .. } => name.len() + 8,
            Command::Set { key, value, .. } => key.len() + value.len(),
            Command::KvIncr { key, .. } | Command::Read { key, .. } => key.len() + 20,
            Command::Batch(cmds) => cmds.iter().map(Command::weight).sum(),
            Command::Clear { .. } => 0,
            Command::Idempotent { command, .. } => command.weight() + 24,
        }
    }
}

/// What a successful command did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// A counter's value after the add (also a `/kv` value after [`Command::KvIncr`]).
    Counter(i64),
    /// What a [`Command::Set`] did.
    Set {
        /// The value was stored (false: `NX`/`XX` did not hold).
        written: bool,
        /// With `get_old`: the value before the command (None = the key was absent).
        old: Option<Bytes>,
    },
    /// The record a [`Command::Read`] found.
    Value(Option<crate::record::Record>),
    /// Each command's outcome of a [`Command::Batch`], in order.
    Batch(Vec<Result<Reply, crate::error::Error>>),
    /// How many records a [`Command::Clear`] removed.
    Cleared(u64),
    /// What a [`Command::Idempotent`] answered: its command's outcome, the first time or recorded.
    Idempotent {
        /// The key the outcome belongs to: the first attempt's command's key (a retry's command may name
        /// another, as a document create does with a newly allocated id).
        key: Bytes,
        /// The command's outcome (its own failure included: a retry gets the same error).
        outcome: Box<Result<Reply, crate::error::Error>>,
        /// The outcome was recorded by an earlier command with the same request; this one changed nothing.
        replayed: bool,
    },
}

impl Reply {
    /// The outcome this reply stands for: a [`Reply::Idempotent`]'s command's outcome, any other reply itself.
    pub fn into_outcome(self) -> Result<Reply, crate::error::Error> {
        match self {
            Reply::Idempotent { outcome, .. } => *outcome,
            other => Ok(other),
        }
    }
}

/// Parses a decimal i64 exactly as strictly as Redis's `string2ll`: an optional `-`, then digits without a
/// leading zero (except `0` itself), nothing else. So `+5`, `05`, `-0`, ` 1`, `1 ` and the empty string are not
/// integers (Rust's `i64::from_str` would accept `+5` and `007`).
pub fn parse_i64_strict(b: &[u8]) -> Option<i64> {
    let (negative, digits) = match b {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, b),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    // Accumulate towards the negative side, which holds i64::MIN.
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if negative {
        Some(n)
    } else {
        n.checked_neg()
    }
}

/// The failure of an increment whose stored value or argument is not a 64-bit integer in its strict decimal
/// form (the text Redis clients expect).
pub const NOT_AN_INTEGER: &str = "value is not an integer or out of range";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_stable_and_tell_their_parts_apart() {
        // Recorded ids outlive a process (and, on a cluster, one version of it): the hash must never change.
        assert_eq!(request_id(&[b"key-1", b"PUT", b"/kv/a"]), 0x039713c0aa27509c9b0a2a6631e8bda3);
        assert_ne!(request_id(&[b"ab", b"c"]), request_id(&[b"a", b"bc"]));
        assert_ne!(request_id(&[b"key-1", b"PUT", b"/kv/a"]), request_id(&[b"key-1", b"PUT", b"/kv/b"]));
    }

    #[test]
    fn strict_integers_follow_redis() {
        for (text, want) in [
            ("0", Some(0)),
            ("5", Some(5)),
            ("-5", Some(-5)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("+5", None),
            ("05", None),
            ("-0", None),
            ("-", None),
            ("", None),
            (" 1", None),
            ("1 ", None),
            ("1a", None),
            ("0x10", None),
            ("99999999999999999999999", None),
        ] {
            assert_eq!(parse_i64_strict(text.as_bytes()), want, "{text:?}");
        }
    }
}
