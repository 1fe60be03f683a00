//! D-Boutique's verbs: `CREATE bucket`, `PUT bucket key value`, `GET bucket key`, `DELETE bucket key`.
//!
//! The key is `bucket/key`, the same `/kv` key HTTP uses (`GET /kv/bucket/key`). A bucket exists once
//! `CREATE`d (recorded in the `buckets` space, idempotent) or while any key lives under `bucket/` (so data
//! written over HTTP is reachable too). Sent inline (telnet), the verbs answer D-Boutique's plain text: `OK`, the
//! value then `OK`, `NOT FOUND` for an unknown bucket, `COMMAND NOT IMPLEMENTED` for a malformed verb. Sent as
//! RESP arrays (`redis-cli PUT b k v`) they answer RESP: `+OK`, a bulk or nil, `-NOTFOUND ...`.

use std::future::Future;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::command::{Command, Precondition, SetCond, Space};
use crate::error::Error;
use crate::node::reads::Consistency;
use crate::node::Node;
use crate::try_frame;

use super::frame::Frame;
use super::parse::Kind;
use super::plan::{check_key, check_value, error_frame, Plan};
use super::session::Session;

/// D-Boutique's verbs, upper-case only (as the original server), when sent inline.
pub fn is_verb(args: &[Bytes]) -> bool {
    match &args[0][..] {
        b"CREATE" | b"PUT" | b"DELETE" => true,
        b"GET" => args.len() == 3,
        _ => false,
    }
}

/// Whether a verb has its number of words (`CREATE b`, `PUT b k v`, `GET b k`, `DELETE b k`).
pub fn arity_ok(args: &[Bytes]) -> bool {
    match &args[0][..] {
        b"CREATE" => args.len() == 2,
        b"PUT" => args.len() == 4,
        _ => args.len() == 3,
    }
}

/// The plain-text reply to an inline verb with the wrong number of words.
pub fn not_implemented() -> Frame {
    Frame::Raw(Bytes::from_static(b"COMMAND NOT IMPLEMENTED\r\n"))
}

/// How a verb's outcome is written: plain text (inline) or RESP.
#[derive(Clone, Copy)]
struct Style(Kind);

impl Style {
    fn ok(self) -> Frame {
        match self.0 {
            Kind::Inline => Frame::Raw(Bytes::from_static(b"OK\r\n")),
            Kind::Array => Frame::ok(),
        }
    }

    fn value(self, value: Option<Bytes>) -> Frame {
        match (self.0, value) {
            (Kind::Inline, v) => {
                let v = v.unwrap_or_default();
                let mut out = BytesMut::with_capacity(v.len() + 6);
                out.put_slice(&v);
                out.put_slice(b"\r\nOK\r\n");
                Frame::Raw(out.freeze())
            }
            (Kind::Array, v) => v.map_or(Frame::Null, Frame::Bulk),
        }
    }

    fn not_found(self, bucket: &[u8]) -> Frame {
        match self.0 {
            Kind::Inline => Frame::Raw(Bytes::from_static(b"NOT FOUND\r\n")),
            Kind::Array => Frame::error(format!(
                "NOTFOUND bucket '{}' does not exist; CREATE it first",
                String::from_utf8_lossy(bucket)
            )),
        }
    }

    fn error(self, e: &Error) -> Frame {
        match self.0 {
            Kind::Inline => Frame::Raw(Bytes::from(format!("ERROR {e}\r\n").replace(['\r', '\n'], " ") + "\r\n")),
            Kind::Array => error_frame(e),
        }
    }
}

fn bucket_key(bucket: &[u8], key: &[u8]) -> Bytes {
    let mut k = BytesMut::with_capacity(bucket.len() + 1 + key.len());
    k.put_slice(bucket);
    k.put_u8(b'/');
    k.put_slice(key);
    k.freeze()
}

/// Whether `bucket` exists: created, or holding at least one key.
async fn bucket_exists(node: &Arc<Node>, bucket: &Bytes, consistency: Consistency) -> Result<bool, Error> {
    if node.read_with(Space::Bucket, bucket.clone(), consistency).outcome().await?.is_some() {
        return Ok(true);
    }
    let prefix = bucket_key(bucket, b"");
    let (keys, _) = node.list(Space::Kv, prefix, None, 1, consistency).await?;
    Ok(!keys.is_empty())
}

/// Checks a bucket name: a non-empty key without `/`.
fn check_bucket(session: &Session, bucket: &[u8]) -> Result<(), Frame> {
    check_key(session, bucket)?;
    if bucket.contains(&b'/') {
        return Err(Frame::error("ERR a bucket name cannot contain '/'"));
    }
    Ok(())
}

/// `CREATE bucket`.
pub fn create(session: &mut Session, args: &[Bytes]) -> Plan {
    try_frame!(check_bucket(session, &args[1]));
    let style = Style(session.request_kind);
    let cmd = Command::Put {
        space: Space::Bucket,
        key: args[1].clone(),
        value: Bytes::new(),
        content_type: Bytes::new(),
        precondition: Precondition::NONE,
        skip_if_unchanged: true,
    };
    Plan::one(cmd, move |out| match out {
        Ok(_) => style.ok(),
        Err(e) => style.error(&e),
    })
}

/// Plans a verb on `bucket/key`: checks the names, then (as a task) answers `NOT FOUND` unless the bucket exists,
/// else runs `verb` with the node, the key and how to answer.
fn in_bucket<F, Fut>(session: &Session, args: &[Bytes], verb: F) -> Plan
where
    F: FnOnce(Arc<Node>, Bytes, Style) -> Fut + Send + 'static,
    Fut: Future<Output = Frame> + Send + 'static,
{
    let key = bucket_key(&args[1], &args[2]);
    try_frame!(check_bucket(session, &args[1]));
    try_frame!(check_key(session, &key));
    let style = Style(session.request_kind);
    let (node, bucket, consistency) = (session.shared.node.clone(), args[1].clone(), session.consistency);
    Plan::Task(Box::pin(async move {
        match bucket_exists(&node, &bucket, consistency).await {
            Ok(true) => verb(node, key, style).await,
            Ok(false) => style.not_found(&bucket),
            Err(e) => style.error(&e),
        }
    }))
}

/// `PUT bucket key value`.
pub fn put(session: &mut Session, args: &[Bytes]) -> Plan {
    try_frame!(check_value(session, &args[3]));
    let value = args[3].clone();
    in_bucket(session, args, |node, key, style| async move {
        match node.dispatch(Command::Set { key, value, cond: SetCond::Always, get_old: false }).await {
            Ok(_) => style.ok(),
            Err(e) => style.error(&e),
        }
    })
}

/// `GET bucket key` (three words; `GET key` is Redis's GET).
pub fn get(session: &mut Session, args: &[Bytes]) -> Plan {
    in_bucket(session, args, |node, key, style| async move {
        match node.get(Space::Kv, key).await {
            Ok(rec) => style.value(rec.map(|r| r.value())),
            Err(e) => style.error(&e),
        }
    })
}

/// `DELETE bucket key` (`OK` whether or not the key existed, as D-Boutique).
pub fn delete(session: &mut Session, args: &[Bytes]) -> Plan {
    in_bucket(session, args, |node, key, style| async move {
        let cmd = Command::Delete { space: Space::Kv, key, precondition: Precondition::NONE };
        match node.dispatch(cmd).await {
            Ok(_) | Err(Error::NotFound(_)) => style.ok(),
            Err(e) => style.error(&e),
        }
    })
}
