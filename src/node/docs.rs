//! Documents (`/api`, RESP `DOC.*`): where their ids come from and how one is stored.
//!
//! New ids are 1, 2, 3, ... and never reused: one more than the highest id ever stored or seen (found at
//! start-up from each shard's last document key; documents are keyed by their id as 8 big-endian bytes, so the
//! last key is the highest id). Each id is written create-only, so an id someone wrote explicitly meanwhile is
//! skipped, never overwritten.
//!
//! A single node counts in memory. A cluster's ids come from one replicated sequence, whichever node creates:
//! the counter [`DOC_ID_SEQUENCE`], incremented in the replicated apply (so a create that completes before
//! another begins gets the smaller id), moved past any id this node has seen stored.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::command::{Command, EtagMatch, Precondition, Space};
use crate::error::{Error, Result};
use crate::node::Node;
use crate::shard::ShardHandle;

/// The content type of every document.
pub const JSON: &str = "application/json";

/// The key of document `id`: its id as 8 big-endian bytes (so keys sort as ids do).
pub fn doc_key(id: u64) -> Bytes {
    Bytes::copy_from_slice(&id.to_be_bytes())
}

/// The counter that holds a cluster's last document id. A counter name no client can use (see
/// [`Node::check_key`]).
pub const DOC_ID_SEQUENCE: &[u8] = b"\0shale:doc-ids";

/// The next document id to hand out.
pub struct DocIds {
    next: AtomicU64,
}

impl DocIds {
    /// Ids after the highest document stored on `shards`.
    pub fn after_stored(shards: &[ShardHandle]) -> Result<DocIds> {
        let mut next = 1u64;
        for shard in shards {
            if let Some(last) = shard.store().last_key(Space::Doc)? {
                let id = u64::from_be_bytes(last.as_slice().try_into().unwrap_or([0; 8]));
                next = next.max(id.saturating_add(1));
            }
        }
        Ok(DocIds { next: AtomicU64::new(next) })
    }

    /// Reserves the next id (unique for the life of the process), or `None` once the id space is used up (an id
    /// of `u64::MAX - 1` or more was stored): the counter never wraps to 0.
    pub fn allocate(&self) -> Option<u64> {
        self.next.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_add(1)).ok()
    }

    /// The lowest id this node has not seen stored.
    fn floor(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    /// Records that document `id` exists, so allocation never hands it out.
    pub fn observe(&self, id: u64) {
        self.next.fetch_max(id.saturating_add(1), Ordering::AcqRel);
    }
}

impl Node {
    /// Stores `data` (compact JSON) as a new document under a fresh id and returns the id.
    pub async fn create_doc(&self, data: Bytes) -> Result<u64> {
        loop {
            let id = self.next_doc_id().await?;
            let cmd = Command::Put {
                space: Space::Doc,
                key: doc_key(id),
                value: data.clone(),
                content_type: Bytes::from_static(JSON.as_bytes()),
                precondition: Precondition { if_none_match: Some(EtagMatch::Any), ..Precondition::NONE },
                skip_if_unchanged: false,
            };
            match self.dispatch(cmd).await {
                Ok(_) => return Ok(id),
                Err(Error::PreconditionFailed(_)) => self.docs.observe(id),
                Err(e) => return Err(e),
            }
        }
    }

    /// The next id: from memory on a single node, from the replicated sequence on a cluster.
    async fn next_doc_id(&self) -> Result<u64> {
        let exhausted = || Error::InsufficientStorage("no document id is left to allocate".into());
        if !self.is_clustered() {
            return self.docs.allocate().ok_or_else(exhausted);
        }
        let add = |delta: i64| {
            let cmd = Command::CounterAdd { name: Bytes::from_static(DOC_ID_SEQUENCE), delta };
            let added = self.dispatch(cmd);
            async move {
                match added.await? {
                    crate::command::Reply::Counter(n) => u64::try_from(n).map_err(|_| exhausted()),
                    other => Err(Error::Internal(format!("the id sequence answered {other:?}"))),
                }
            }
        };
        let id = add(1).await?;
        let floor = self.docs.floor();
        if id >= floor {
            return Ok(id);
        }
        // Ids below `floor` are stored already (a data dir that predates the cluster, or ids written explicitly).
        add(i64::try_from(floor - id).map_err(|_| exhausted())?).await
    }

    /// Stores `data` (compact JSON) as document `id`, creating or replacing it. Rewriting the same document
    /// changes nothing: it is answered from the committed state without a commit.
    pub async fn put_doc(&self, id: u64, data: Bytes) -> Result<()> {
        self.docs.observe(id);
        if self.cache.get(Space::Doc, &id.to_be_bytes()).is_some_and(|r| r.value_ref() == &data[..]) {
            return Ok(());
        }
        let cmd = Command::Put {
            space: Space::Doc,
            key: doc_key(id),
            value: data,
            content_type: Bytes::from_static(JSON.as_bytes()),
            precondition: Precondition::NONE,
            skip_if_unchanged: true,
        };
        self.dispatch(cmd).await.map(drop)
    }
}
