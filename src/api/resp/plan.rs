//! What a RESP command handler answers, and the replies the handlers share.
//!
//! A handler never touches the network or the disk: it parses its arguments and answers a [`Plan`]: a reply now,
//! commands for the shards with a function that turns their outcomes into the reply, or a task off the data path.
//! The connection (`conn.rs`) runs plans, which is where pipelining, read-your-writes and `MULTI` live.

use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::command::{Command, Reply};
use crate::error::Error;
use crate::record::Record;

use super::frame::Frame;
use super::session::Session;

/// Turns the outcomes of a plan's commands (in order) into its reply.
pub type Finish = Box<dyn FnOnce(Vec<Result<Reply, Error>>) -> Frame + Send>;

/// What a command asks the connection to do.
pub enum Plan {
    /// Answer this now.
    Now(Frame),
    /// Send these commands to their shards (reads as [`Command::Read`]); `Finish` turns their outcomes into the
    /// reply. Every command of one plan is routed by its own key.
    Ops(Vec<Command>, Finish),
    /// Work that is not one shard command (listing, counting, flushing): run on the connection's task.
    Task(BoxFuture<'static, Frame>),
    /// Answer this, then close the connection and ignore the rest of the pipeline (`QUIT`).
    Close(Frame),
}

impl Plan {
    /// A plan of one command whose single outcome `finish` maps.
    pub fn one(cmd: Command, finish: impl FnOnce(Result<Reply, Error>) -> Frame + Send + 'static) -> Plan {
        Plan::Ops(vec![cmd], Box::new(move |mut out| finish(out.pop().unwrap_or_else(|| Err(lost())))))
    }
}

fn lost() -> Error {
    Error::Internal("a command's outcome was lost".into())
}

/// A handler: parses `args` (the name first) and plans the command.
pub type Handler = fn(&mut Session, &[Bytes]) -> Plan;

/// The RESP error for a failed command: Redis's code and text where one applies, else `ERR` and shale's text.
pub fn error_frame(e: &Error) -> Frame {
    match e {
        Error::Unauthorized(_) => Frame::noauth(),
        Error::Forbidden(m) => Frame::error(format!("NOPERM {m}")),
        Error::Unavailable(m) => Frame::error(format!("BUSY {m}")),
        Error::NoQuorum(m) => Frame::error(format!("TRYAGAIN {m}")),
        e => Frame::error(format!("ERR {e}")),
    }
}

/// A stored record as a bulk string, or nil.
pub fn value_frame(rec: Option<Record>) -> Frame {
    rec.map_or(Frame::Null, |r| Frame::Bulk(r.value()))
}

/// The reply of a read: the value, or the error.
pub fn read_frame(out: Result<Reply, Error>) -> Frame {
    match out {
        Ok(Reply::Value(rec)) => value_frame(rec),
        Ok(other) => unexpected(other),
        Err(e) => error_frame(&e),
    }
}

/// A reply kind a handler did not ask for (a bug): an error, never a panic.
pub fn unexpected(reply: Reply) -> Frame {
    Frame::error(format!("ERR internal: unexpected reply {reply:?}"))
}

/// Checks a key against the limits HTTP applies (1..=MAX_KEY_BYTES).
pub fn check_key(session: &Session, key: &[u8]) -> Result<(), Frame> {
    session.node().check_key(key, "key").map_err(|e| error_frame(&e))
}

/// Checks a value against MAX_VALUE_BYTES.
pub fn check_value(session: &Session, value: &[u8]) -> Result<(), Frame> {
    let max = session.shared.config.max_value_bytes;
    if value.len() > max {
        return Err(Frame::error(format!("ERR the value is {} bytes; MAX_VALUE_BYTES is {max}", value.len())));
    }
    Ok(())
}

/// Unwraps a checked argument or returns its error frame as the plan.
#[macro_export]
macro_rules! try_frame {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(frame) => return $crate::api::resp::plan::Plan::Now(frame),
        }
    };
}

/// The reply of a command answering an integer.
pub fn integer_frame(out: Result<Reply, Error>) -> Frame {
    match out {
        Ok(Reply::Counter(n)) => Frame::Integer(n),
        Ok(other) => unexpected(other),
        Err(e) => error_frame(&e),
    }
}
