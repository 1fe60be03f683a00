//! The HTTP side of [`Error`]: its status, and the JSON body `{"error": code, "message": text}` of `docs/api.md`
//! with `Retry-After` on 503 and `WWW-Authenticate` on 401.

use actix_web::http::StatusCode;

use crate::error::Error;

/// The HTTP status of `err`.
pub fn status(err: &Error) -> StatusCode {
    match err {
        Error::BadRequest(_) => StatusCode::BAD_REQUEST,
        Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        Error::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
        Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::KeyTooLong(_) => StatusCode::URI_TOO_LONG,
        Error::Unavailable(_) | Error::NoQuorum(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Conflict(_) => StatusCode::CONFLICT,
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
        409 => "conflict",
        414 => "key_too_long",
        503 => "unavailable",
        507 => "insufficient_storage",
        s if (400..500).contains(&s) => "bad_request",
        _ => "internal",
    }
}

impl actix_web::ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        status(self)
    }

    /// The JSON body, plus `Retry-After` on 503 and `WWW-Authenticate` on 401.
    fn error_response(&self) -> actix_web::HttpResponse {
        let mut res = actix_web::HttpResponse::build(status(self));
        match self {
            Error::Unavailable(_) | Error::NoQuorum(_) => {
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

/// The JSON error body.
pub fn json_body(code: &str, message: &str) -> String {
    serde_json::json!({ "error": code, "message": message }).to_string()
}
