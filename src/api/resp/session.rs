//! What one RESP connection remembers between commands, and what all connections share.
//!
//! A [`Session`] is owned by its connection task alone: handlers get `&mut Session` and never lock. The
//! [`Shared`] part (node, configuration, tokens, SCAN cursors, client counters) is behind an `Arc`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::api::auth::{Access, Tokens};
use crate::config::Config;
use crate::node::reads::Consistency;
use crate::node::Node;
use crate::placement::ShardId;

use super::frame::{Frame, Proto};
use super::parse::Kind;

/// How long an unused SCAN cursor is remembered.
pub const CURSOR_IDLE: Duration = Duration::from_secs(600);
/// Most SCAN cursors remembered at once (the least recently used are forgotten first).
pub const MAX_CURSORS: u64 = 100_000;

/// Where an unfinished SCAN resumes.
#[derive(Debug, Clone)]
pub struct ScanCursor {
    /// The last key returned; the next page starts strictly after it.
    pub after: Bytes,
}

/// State shared by every RESP connection.
pub struct Shared {
    /// The one data path (same node, shards and cache as HTTP).
    pub node: Arc<Node>,
    /// The server's configuration.
    pub config: Config,
    /// Bearer tokens; `AUTH` presents one.
    pub tokens: Tokens,
    /// SCAN cursors by id (ids are below 2^53, so every client library can hold them as a number), with the time
    /// each was last used. Bounded: the least useful are evicted first.
    cursors: quick_cache::sync::Cache<u64, (ScanCursor, Instant)>,
    next_cursor: AtomicU64,
    next_client_id: AtomicU64,
    /// Open RESP connections.
    pub clients: AtomicUsize,
    /// When the listener started (INFO uptime).
    pub started: Instant,
    /// The bound RESP port (INFO, CONFIG GET port).
    pub port: u16,
}

impl Shared {
    /// Shared state over `node`.
    pub fn new(node: Arc<Node>, config: Config, port: u16) -> Shared {
        let tokens = Tokens::new(&config.auth_token, &config.auth_read_token);
        let cursors = quick_cache::sync::Cache::new(MAX_CURSORS as usize);
        // Cursor ids start at a process-specific offset, so a cursor from before a restart is (almost surely)
        // unknown rather than silently resuming somewhere else.
        let seed = u64::from(std::process::id()) << 20 ^ started_nanos();
        Shared {
            node,
            config,
            tokens,
            cursors,
            next_cursor: AtomicU64::new(seed % (1 << 40) + 1),
            next_client_id: AtomicU64::new(1),
            clients: AtomicUsize::new(0),
            started: Instant::now(),
            port,
        }
    }

    /// Remembers `cursor` and returns its id: never 0 (which means "done"), always below 2^53.
    pub fn save_cursor(&self, cursor: ScanCursor) -> u64 {
        let id = self.next_cursor.fetch_add(1, Ordering::Relaxed) % ((1 << 53) - 1) + 1;
        self.cursors.insert(id, (cursor, Instant::now()));
        id
    }

    /// The cursor `id`, unless it is unknown or older than [`CURSOR_IDLE`]. A cursor can be used again (a
    /// client retrying a page gets the same page); it is forgotten by age or when the table is full.
    pub fn cursor(&self, id: u64) -> Option<ScanCursor> {
        let (cursor, saved) = self.cursors.get(&id)?;
        if saved.elapsed() > CURSOR_IDLE {
            self.cursors.remove(&id);
            return None;
        }
        Some(cursor)
    }

    /// A new client id (CLIENT ID, HELLO).
    pub fn new_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }
}

fn started_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos().into())
}

/// A `MULTI` being queued.
#[derive(Debug, Default)]
pub struct Multi {
    /// The queued commands, each as sent.
    pub queued: Vec<Vec<Bytes>>,
    /// A command was refused while queueing: `EXEC` answers `EXECABORT`.
    pub failed: bool,
    /// The shard every queued key belongs to (None until a keyed command is queued).
    pub shard: Option<ShardId>,
}

/// One connection's state.
pub struct Session {
    /// What every connection shares.
    pub shared: Arc<Shared>,
    /// This client's id.
    pub id: u64,
    /// RESP2 until `HELLO 3`.
    pub proto: Proto,
    /// What the presented token allows; `None` before `AUTH` when tokens are configured.
    pub access: Option<Access>,
    /// `CLIENT SETNAME`.
    pub name: Option<Bytes>,
    /// `MULTI` in progress.
    pub multi: Option<Multi>,
    /// Set by `QUIT`: answer, then close and ignore the rest of the pipeline.
    pub quitting: bool,
    /// How the command being handled was framed (D-Boutique verbs answer plain text to inline requests).
    pub request_kind: Kind,
    /// `READONLY` (stale reads of the local replica) or `READWRITE` (linearizable, the default).
    pub consistency: Consistency,
}

impl Session {
    /// A new connection's state: authenticated at once when no token is configured.
    pub fn new(shared: Arc<Shared>) -> Session {
        let access = if shared.tokens.enabled() { None } else { Some(Access::ReadWrite) };
        let id = shared.new_client_id();
        Session {
            shared,
            id,
            proto: Proto::Resp2,
            access,
            name: None,
            multi: None,
            quitting: false,
            request_kind: Kind::Array,
            consistency: Consistency::Linearizable,
        }
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.shared.node
    }

    /// Whether the connection may run commands beyond `AUTH`/`HELLO`/`QUIT`.
    pub fn authenticated(&self) -> bool {
        self.access.is_some()
    }

    /// Checks `token` (`AUTH`, `HELLO ... AUTH`): `+OK` and the granted access, or Redis's refusal.
    pub fn authenticate(&mut self, token: &[u8]) -> Frame {
        if !self.shared.tokens.enabled() {
            return Frame::error(
                "ERR AUTH <password> called without any password configured for the default user. \
                 Are you sure your configuration is correct?",
            );
        }
        match self.shared.tokens.access_of(token) {
            Some(access) => {
                self.access = Some(access);
                Frame::ok()
            }
            None => Frame::wrongpass(),
        }
    }
}
