//! The one error type of shale. Each variant is an error code of `docs/api.md`; every layer returns it, and
//! each protocol maps it at its edge (`api::http::error`: status, headers and JSON body; `api::resp::commands`:
//! Redis error text).
//!
//! Storage failures are classified by their type ([`StorageFailure`]), never by their message: a full disk is
//! [`Error::InsufficientStorage`], a handle that redb closed after a failed write is [`Error::Unavailable`] (the
//! shard is reopening it), anything else [`Error::Internal`].

/// Everything that can go wrong while serving a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Error {
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// No or an unknown bearer token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A read-only token tried to write (403).
    #[error("{0}")]
    Forbidden(String),
    /// The key or route does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not with this method (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// An `If-Match` / `If-None-Match` precondition failed (412).
    #[error("{0}")]
    PreconditionFailed(String),
    /// The body is larger than MAX_VALUE_BYTES (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The key is longer than MAX_KEY_BYTES (414).
    #[error("{0}")]
    KeyTooLong(String),
    /// A shard queue is full or the store is not serving; retry later (503).
    #[error("{0}")]
    Unavailable(String),
    /// The disk is full; the write was not stored (507).
    #[error("{0}")]
    InsufficientStorage(String),
    /// A server-side fault; the write was not stored (500).
    #[error("{0}")]
    Internal(String),
    /// The request conflicts with the server's state (409): a cluster initialised twice.
    #[error("{0}")]
    Conflict(String),
    /// A cluster shard has no leader or no majority within `REQUEST_TIMEOUT_MS` (503 `unavailable`, RESP
    /// `TRYAGAIN`): a write may or may not have been applied, as its message says.
    #[error("{0}")]
    NoQuorum(String),
}

impl Error {
    /// The stable code of `docs/api.md`, the `error` field of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::PreconditionFailed(_) => "precondition_failed",
            Error::PayloadTooLarge(_) => "payload_too_large",
            Error::KeyTooLong(_) => "key_too_long",
            Error::Unavailable(_) | Error::NoQuorum(_) => "unavailable",
            Error::Conflict(_) => "conflict",
            Error::InsufficientStorage(_) => "insufficient_storage",
            Error::Internal(_) => "internal",
        }
    }

    /// A storage-layer failure with its context: a full disk (507), a shard reopening its file after a failed
    /// write (503), or another fault (500).
    pub fn storage(context: &str, err: impl StorageFailure) -> Error {
        match err.class() {
            StorageClass::Full => Error::InsufficientStorage(format!("{context}: disk full ({err})")),
            StorageClass::Reopening => {
                Error::Unavailable(format!("{context}: the shard is reopening its file after a failed write ({err})"))
            }
            StorageClass::Other => Error::Internal(format!("{context}: {err}")),
        }
    }
}

/// What a storage failure means for the request that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageClass {
    /// The file system has no room (ENOSPC) or the quota is used up (EDQUOT).
    Full,
    /// redb refuses the handle after an earlier failed write, or it was closed: the shard is reopening it.
    Reopening,
    /// Any other fault.
    Other,
}

/// A failure of the storage layer (redb, the log's file), classified by its type.
pub trait StorageFailure: std::fmt::Display {
    /// What the failure means.
    fn class(&self) -> StorageClass;
}

impl StorageFailure for std::io::Error {
    fn class(&self) -> StorageClass {
        /// EDQUOT: std has no `ErrorKind` of its own for it.
        const EDQUOT: i32 = 122;
        if self.kind() == std::io::ErrorKind::StorageFull || self.raw_os_error() == Some(EDQUOT) {
            return StorageClass::Full;
        }
        // An error wrapped around an OS error (redb and std wrap some) carries its class.
        match self.get_ref().and_then(|inner| inner.downcast_ref::<std::io::Error>()) {
            Some(inner) => inner.class(),
            None => StorageClass::Other,
        }
    }
}

impl StorageFailure for redb::StorageError {
    fn class(&self) -> StorageClass {
        match self {
            redb::StorageError::Io(e) => e.class(),
            redb::StorageError::PreviousIo | redb::StorageError::DatabaseClosed => StorageClass::Reopening,
            _ => StorageClass::Other,
        }
    }
}

impl StorageFailure for redb::Error {
    fn class(&self) -> StorageClass {
        match self {
            redb::Error::Io(e) => e.class(),
            redb::Error::PreviousIo | redb::Error::DatabaseClosed => StorageClass::Reopening,
            _ => StorageClass::Other,
        }
    }
}

impl StorageFailure for redb::DatabaseError {
    fn class(&self) -> StorageClass {
        match self {
            redb::DatabaseError::Storage(e) => e.class(),
            _ => StorageClass::Other,
        }
    }
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
