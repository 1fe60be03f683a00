//! One shard's storage: its redb file, the command logic applied inside a write transaction, and the
//! write-ahead log. No threads, no sockets, no HTTP: the shard worker above drives it.

pub mod apply;
pub mod change;
pub mod compact;
pub mod copy;
pub mod durability;
pub mod held;
pub mod open;
pub mod requests;
pub mod room;
pub mod schema;
pub mod store;
pub mod wal;

use crate::error::Error;
use crate::placement::ShardId;

/// Maps a redb failure of shard `shard` while doing `what` (see [`Error::storage`]).
pub(crate) fn storage(shard: ShardId, what: &str) -> impl Fn(redb::Error) -> Error + '_ {
    move |e| Error::storage(&format!("shard {shard}: {what}"), e)
}
