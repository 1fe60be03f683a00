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
//!
//! A create carrying a request id (a client's idempotency key) takes its ids among those one shard stores, the
//! request's home shard, where its outcome is recorded, and the ids it passes over are never handed out (gaps):
//! see [`Node::create_doc`].

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::command::{request_id, Command, EtagMatch, Precondition, Reply, Space};
use crate::error::{Error, Result};
use crate::node::{idempotent, Node};
use crate::placement::ShardId;
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

    /// Reserves the next `wanted` id (unique for the life of the process; the ids passed over are never handed
    /// out), or `None` once the id space is used up (an id of `u64::MAX - 1` or more was stored): the counter
    /// never wraps to 0.
    pub fn allocate(&self, wanted: impl Fn(u64) -> bool) -> Option<u64> {
        let next = |n: u64| first_id(n, &wanted);
        let before = self.next.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| next(n)?.checked_add(1)).ok()?;
        next(before)
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
    ///
    /// With a `request` id (a client's idempotency key), a retry answers the first attempt's id and creates
    /// nothing. Each attempt allocates an id of its own, so the record must be found by the request, not by the
    /// id: every id of such a create is allocated among those stored in the request's home shard, and each try
    /// of the create-only write is recorded there under an id derived from the request and the try's number
    /// (a try that met an explicitly written id is recorded as that failure, and the next try has another
    /// number, so a retry goes through the same tries and ends where the first attempt did).
    pub async fn create_doc(&self, data: Bytes, request: Option<u128>) -> Result<u64> {
        let home = request.map(|r| self.shard_for(&r.to_be_bytes()));
        for attempt in 0u32.. {
            let mut id = self.next_doc_id(home).await?;
            let put = create_only(id, data.clone());
            let outcome = match request {
                None => self.dispatch(put).await,
                Some(request) => {
                    let attempt = request_id(&[&request.to_be_bytes(), &attempt.to_be_bytes()]);
                    match self.dispatch(idempotent(attempt, put)).await? {
                        // The key is the id the first attempt wrote (or tried), whatever this one allocated.
                        Reply::Idempotent { key, outcome, .. } => {
                            id = id_of(&key)?;
                            *outcome
                        }
                        other => Err(Error::Internal(format!("an idempotent write answered {other:?}"))),
                    }
                }
            };
            match outcome {
                Ok(_) => return Ok(id),
                Err(Error::PreconditionFailed(_)) => self.docs.observe(id),
                Err(e) => return Err(e),
            }
        }
        Err(Error::Internal("every id tried for the new document was written meanwhile".into()))
    }

    /// The next id: from memory on a single node, from the replicated sequence on a cluster; with `home`, the
    /// next such id stored in that shard (the ids passed over are never handed out).
    async fn next_doc_id(&self, home: Option<ShardId>) -> Result<u64> {
        let exhausted = || Error::InsufficientStorage("no document id is left to allocate".into());
        let wanted = |id: u64| home.is_none_or(|shard| self.shard_for(&id.to_be_bytes()) == shard);
        if !self.is_clustered() {
            return self.docs.allocate(wanted).ok_or_else(exhausted);
        }
        let add = |delta: i64| {
            let cmd = Command::CounterAdd { name: Bytes::from_static(DOC_ID_SEQUENCE), delta };
            let added = self.dispatch(cmd);
            async move {
                match added.await? {
                    Reply::Counter(n) => u64::try_from(n).map_err(|_| exhausted()),
                    other => Err(Error::Internal(format!("the id sequence answered {other:?}"))),
                }
            }
        };
        let mut id = add(1).await?;
        loop {
            // Ids below the floor are stored already (a data dir that predates the cluster, or ids written
            // explicitly); ids outside `home` are passed over.
            let target = first_id(id.max(self.docs.floor()), wanted).ok_or_else(exhausted)?;
            if target == id {
                return Ok(id);
            }
            // Moves the sequence to `target`, unless other creates moved it meanwhile (then look again).
            id = add(i64::try_from(target - id).map_err(|_| exhausted())?).await?;
        }
    }

    /// Stores `data` (compact JSON) as document `id`, creating or replacing it. Rewriting the same document
    /// changes nothing: it is answered from the committed state without a commit (without a `request` id: with
    /// one, the write goes to the shard, which records its outcome for a retry, as [`Node::dispatch_once`]).
    pub async fn put_doc(&self, id: u64, data: Bytes, request: Option<u128>) -> Result<()> {
        self.docs.observe(id);
        if request.is_none()
            && self.cache.get(Space::Doc, &id.to_be_bytes()).is_some_and(|r| r.value_ref() == &data[..])
        {
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
        self.dispatch_once(cmd, request).await.map(drop)
    }
}

/// The create-only write of a new document `id`: it never overwrites a document written meanwhile.
fn create_only(id: u64, data: Bytes) -> Command {
    Command::Put {
        space: Space::Doc,
        key: doc_key(id),
        value: data,
        content_type: Bytes::from_static(JSON.as_bytes()),
        precondition: Precondition { if_none_match: Some(EtagMatch::Any), ..Precondition::NONE },
        skip_if_unchanged: false,
    }
}

/// The id of the document stored under `key` (see [`doc_key`]).
fn id_of(key: &[u8]) -> Result<u64> {
    let bytes = key.try_into().map_err(|_| Error::Internal(format!("{key:?} is not a document key")))?;
    Ok(u64::from_be_bytes(bytes))
}

/// The most ids [`first_id`] looks at: far more than it takes to meet every shard of any shard count.
const ID_SEARCH: usize = 1 << 20;

/// The first id from `from` on that is `wanted`, below `u64::MAX` (which is never handed out).
fn first_id(from: u64, wanted: impl Fn(u64) -> bool) -> Option<u64> {
    (from..u64::MAX).take(ID_SEARCH).find(|&id| wanted(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_takes_the_next_wanted_id_and_never_hands_out_those_it_passed() {
        let ids = DocIds { next: AtomicU64::new(1) };
        assert_eq!(ids.allocate(|_| true), Some(1));
        assert_eq!(ids.allocate(|id| id % 5 == 0), Some(5));
        assert_eq!(ids.allocate(|_| true), Some(6), "2, 3 and 4 were passed over");
        ids.observe(u64::MAX - 2);
        assert_eq!(ids.allocate(|id| id == u64::MAX), None, "u64::MAX is never handed out");
        assert_eq!(ids.allocate(|_| true), Some(u64::MAX - 1));
        assert_eq!(ids.allocate(|_| true), None);
    }
}
