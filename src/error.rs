//! The one error type of shale. Each variant is an error code of API.md and knows its HTTP status;
//! `http::error_body` renders it as the JSON body `{"error": code, "message": text}`.

use actix_web::http::StatusCode;

/// Everything that can go wrong while serving a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
}

impl Error {
    /// The stable code of API.md, used as the `error` field.
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
            Error::Unavailable(_) => "unavailable",
            Error::InsufficientStorage(_) => "insufficient_storage",
            Error::Internal(_) => "internal",
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::KeyTooLong(_) => StatusCode::URI_TOO_LONG,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error code for an HTTP status, for errors produced outside our handlers (actix's own).
    pub fn code_for_status(status: StatusCode) -> &'static str {
        match status.as_u16() {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            405 => "method_not_allowed",
            412 => "precondition_failed",
            413 => "payload_too_large",
            414 => "key_too_long",
            503 => "unavailable",
            507 => "insufficient_storage",
            s if (400..500).contains(&s) => "bad_request",
            _ => "internal",
        }
    }

    /// Maps a storage-layer failure, telling a full disk (507) and a shard that is reopening its file after a
    /// failed write (503; redb answers "Previous I/O error" on the old handle until then) from other faults (500).
    /// redb keeps the `std::io::Error` text, which ends in `(os error N)`: 28 is ENOSPC, 122 EDQUOT.
    pub fn storage(context: &str, err: impl std::fmt::Display) -> Error {
        let text = err.to_string();
        let lower = text.to_ascii_lowercase();
        if lower.contains("no space left")
            || lower.contains("disk quota")
            || lower.contains("storage full")
            || lower.contains("(os error 28)")
            || lower.contains("(os error 122)")
        {
            Error::InsufficientStorage(format!("{context}: disk full ({text})"))
        } else if lower.contains("previous i/o error") || lower.contains("database has been closed") {
            Error::Unavailable(format!("{context}: the shard is reopening its file after a failed write ({text})"))
        } else {
            Error::Internal(format!("{context}: {text}"))
        }
    }
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl actix_web::ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    /// The JSON body of API.md, plus `Retry-After` on 503 and `WWW-Authenticate` on 401.
    fn error_response(&self) -> actix_web::HttpResponse {
        let mut res = actix_web::HttpResponse::build(self.status());
        match self {
            Error::Unavailable(_) => {
                res.insert_header(("Retry-After", "1"));
            }
            Error::Unauthorized(_) => {
                res.insert_header(("WWW-Authenticate", "Bearer realm=\"shale\""));
            }
            _ => {}
        }
        res.content_type("application/json").body(json_body(self.code(), &self.to_string()))
    }
}

/// The JSON error body of API.md.
pub fn json_body(code: &str, message: &str) -> String {
    serde_json::json!({ "error": code, "message": message }).to_string()
}
