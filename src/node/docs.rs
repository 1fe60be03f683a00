//! Documents (`/api`, RESP `DOC.*`): where their ids come from and how one is stored.
//!
//! New ids are 1, 2, 3, ... and never reused: the node hands out one more than the highest id ever stored or
//! seen (found at start-up from each shard's last document key; documents are keyed by their id as 8 big-endian
//! bytes, so the last key is the highest id). Each id is written create-only, so an id someone wrote explicitly
//! meanwhile is skipped, never overwritten.

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

    /// Records that document `id` exists, so allocation never hands it out.
    pub fn observe(&self, id: u64) {
        self.next.fetch_max(id.saturating_add(1), Ordering::AcqRel);
    }
}

impl Node {
    /// Stores `data` (compact JSON) as a new document under a fresh id and returns the id.
    pub async fn create_doc(&self, data: Bytes) -> Result<u64> {
        loop {
            let Some(id) = self.docs.allocate() else {
                return Err(Error::InsufficientStorage("no document id is left to allocate".into()));
            };
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
                Err(Error::PreconditionFailed(_)) => continue,
                Err(e) => return Err(e),
            }
        }
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
