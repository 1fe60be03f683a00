//! Bearer-token access control.
//!
//! When no token is configured every request passes. Otherwise every route but `/healthz` and `/readyz` needs
//! `Authorization: Bearer <token>`: a read-write token may do anything; a read-only token may GET/HEAD only
//! (403 otherwise), and never `/admin/*`. Tokens are compared in constant time.

use actix_web::http::Method;
use subtle::ConstantTimeEq;

use crate::error::Error;

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    read_write: Vec<Vec<u8>>,
    read_only: Vec<Vec<u8>>,
}

/// What a request's credentials allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anything.
    ReadWrite,
    /// GET and HEAD only.
    ReadOnly,
}

impl Tokens {
    /// Tokens from the configuration (already split on commas by clap; blanks trimmed).
    pub fn new(read_write: &[String], read_only: &[String]) -> Tokens {
        let clean = |v: &[String]| v.iter().map(|t| t.trim().as_bytes().to_vec()).filter(|t| !t.is_empty()).collect();
        Tokens { read_write: clean(read_write), read_only: clean(read_only) }
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        !self.read_write.is_empty() || !self.read_only.is_empty()
    }

    /// The access a presented token grants, comparing against every token in constant time.
    pub fn access_of(&self, presented: &[u8]) -> Option<Access> {
        let any =
            |list: &[Vec<u8>]| list.iter().fold(false, |found, t| found | bool::from(t.as_slice().ct_eq(presented)));
        if any(&self.read_write) {
            Some(Access::ReadWrite)
        } else if any(&self.read_only) {
            Some(Access::ReadOnly)
        } else {
            None
        }
    }

    /// Decides a request: `Ok` to serve it, or the 401/403 error.
    pub fn check(&self, method: &Method, path: &str, authorization: Option<&[u8]>) -> Result<(), Error> {
        if !self.enabled() || path == "/healthz" || path == "/readyz" {
            return Ok(());
        }
        let token = authorization
            .and_then(|h| h.strip_prefix(b"Bearer ").or_else(|| h.strip_prefix(b"bearer ")))
            .map(|t| t.trim_ascii());
        let Some(token) = token else {
            return Err(Error::Unauthorized("missing bearer token (Authorization: Bearer <token>)".into()));
        };
        match self.access_of(token) {
            None => Err(Error::Unauthorized("unknown bearer token".into())),
            Some(Access::ReadWrite) => Ok(()),
            Some(Access::ReadOnly) => {
                let reads = *method == Method::GET || *method == Method::HEAD;
                if reads && !path.starts_with("/admin/") {
                    Ok(())
                } else {
                    Err(Error::Forbidden("this token is read-only".into()))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let t = Tokens::new(&["rw1".into(), "rw2".into()], &["ro".into()]);
        let get = Method::GET;
        let put = Method::PUT;
        assert!(t.check(&get, "/healthz", None).is_ok());
        assert!(matches!(t.check(&get, "/kv/a", None), Err(Error::Unauthorized(_))));
        assert!(matches!(t.check(&get, "/kv/a", Some(b"Bearer nope")), Err(Error::Unauthorized(_))));
        assert!(t.check(&put, "/kv/a", Some(b"Bearer rw2")).is_ok());
        assert!(t.check(&get, "/kv/a", Some(b"Bearer ro")).is_ok());
        assert!(matches!(t.check(&put, "/kv/a", Some(b"Bearer ro")), Err(Error::Forbidden(_))));
        assert!(matches!(t.check(&get, "/admin/x", Some(b"Bearer ro")), Err(Error::Forbidden(_))));
        assert!(Tokens::new(&[], &[]).check(&put, "/kv/a", None).is_ok());
    }
}
