//! The edges: the HTTP API and the Redis protocol, with the authentication and TLS both share.

pub mod auth;
pub mod http;
pub mod resp;
pub mod tls;
