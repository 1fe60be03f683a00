//! One shard's storage: its redb file, the command logic applied inside a write transaction, and the
//! write-ahead log. No threads, no sockets, no HTTP: the shard worker above drives it.

pub mod store;
pub mod wal;
