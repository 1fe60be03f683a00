//! Operations beside the data path: the data dir's manifest, backup and restore, resharding.

pub mod backup;
pub mod manifest;
pub mod reshard;
