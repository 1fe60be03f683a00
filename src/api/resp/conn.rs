//! One RESP connection: parse, dispatch eagerly, answer in order.
//!
//! # Rules
//! - Each command is dispatched as soon as it is parsed: its shard commands go onto their shard queues at once
//!   (so the order of one connection's commands on one key is the shard's FIFO order), and its reply future joins
//!   a `FuturesOrdered`. Replies leave in request order, whatever order the shards finish in.
//! - Reads take the node's one read path (`node::reads`): the cache, or on a miss the shard's file. A read of a
//!   shard on which this connection has writes in flight goes through that shard's queue, after them
//!   ([`Command::Read`], served inside the write transaction); a reply leaves only after its batch is durable, and
//!   the cache only ever holds durable records, so no connection ever sees a write that could still be lost.
//! - A [`Plan::Task`] (listing, counting, D-Boutique verbs, documents) is a barrier: every earlier reply is sent
//!   first, then the task runs alone. Tasks are rare, and this keeps them ordered with the commands around them.
//! - Backpressure: at most [`MAX_IN_FLIGHT`] commands wait for replies, and at most about [`MAX_UNSENT`] bytes of
//!   replies wait in memory (past it they are written out, which waits for the client to read); while either is
//!   full the socket is not read, so TCP pushes back on the client. A full shard queue makes the connection wait, not fail.
//! - A protocol error sends the earlier replies, then `-ERR Protocol error: ...`, then closes. `POST` or `Host:`
//!   (an HTTP request sent to this port) closes at once without a reply.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::{self, BoxFuture, FutureExt};
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::api::auth::Access;
use crate::command::{Command, Reply};
use crate::error::Error;
use crate::node::reads::{InFlight, Read};
use crate::placement::ShardId;

use super::commands::{lookup, Spec, NOAUTH, NO_MULTI, WRITE};
use super::dboutique;
use super::frame::{Frame, Proto};
use super::parse::{Kind, Limits, ParseError, Parser, Request};
use super::plan::{error_frame, Plan};
use super::session::{Multi, Session, Shared};

/// Most commands of one connection waiting for their replies.
pub const MAX_IN_FLIGHT: usize = 1024;
/// Reply bytes held before they are written to the socket (a reply larger than this is written on its own).
pub const MAX_UNSENT: usize = 4 * 1024 * 1024;
/// How long a command waits for room in a full shard queue before failing with `BUSY`.
pub const QUEUE_PATIENCE: Duration = Duration::from_secs(10);
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

type PendingReply = BoxFuture<'static, (Frame, Proto)>;

/// What the connection does with one parsed command.
enum Step {
    /// A reply known now (no allocation when nothing is waiting before it: it is encoded at once).
    Now(Frame),
    /// A reply to queue behind the earlier ones.
    Reply(BoxFuture<'static, Frame>),
    /// Send every earlier reply, then run this alone.
    Barrier(BoxFuture<'static, Frame>),
}

fn ready(frame: Frame) -> Step {
    Step::Now(frame)
}

/// The outcome of one shard command: known at dispatch (a cache hit, a refused send) or awaited.
enum Wait {
    Ready(Result<Reply, Error>),
    Later(BoxFuture<'static, Result<Reply, Error>>),
}

/// Serves one connection until the client leaves, sends QUIT or a protocol error, or the server stops.
pub async fn serve<S>(mut stream: S, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let in_flight = InFlight::new(shared.node.shard_count());
    let mut conn = Conn { session: Session::new(shared), in_flight };
    let mut parser = Parser::new(Limits::default());
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut wbuf = BytesMut::new();
    let mut pending: FuturesOrdered<PendingReply> = FuturesOrdered::new();
    let mut closing = false;
    loop {
        // 1. Dispatch every complete command while there is room.
        // Invariant: `parsed_all` is true only when the parser found no complete command left in `rbuf`; a loop
        // stopped by a limit leaves commands there that no read will announce.
        let mut parsed_all = false;
        while !closing && pending.len() < MAX_IN_FLIGHT {
            if wbuf.len() >= MAX_UNSENT {
                break;
            }
            let req = match parser.next(&mut rbuf, conn.session.authenticated()) {
                Ok(Some(req)) => req,
                Ok(None) => {
                    parsed_all = true;
                    break;
                }
                Err(ParseError::Protocol(msg)) => {
                    push(&mut pending, future::ready(Frame::protocol_error(&msg)).boxed(), conn.session.proto);
                    closing = true;
                    break;
                }
                Err(ParseError::Security) => {
                    tracing::warn!("an HTTP request (POST or Host:) reached the RESP port; closing the connection");
                    return Ok(());
                }
            };
            match conn.step(req).await {
                // Nothing waits before it: straight to the output buffer (the common case of cached reads).
                Step::Now(frame) if pending.is_empty() => frame.encode(conn.session.proto, &mut wbuf),
                Step::Now(frame) => push(&mut pending, future::ready(frame).boxed(), conn.session.proto),
                Step::Reply(fut) => push(&mut pending, fut, conn.session.proto),
                Step::Barrier(task) => {
                    drain(&mut pending, &mut wbuf, &mut stream).await?;
                    let proto = conn.session.proto;
                    task.await.encode(proto, &mut wbuf);
                }
            }
            if conn.session.quitting {
                closing = true;
            }
        }
        // 2. Send what is ready, in order.
        while let Some(Some((frame, proto))) = pending.next().now_or_never() {
            frame.encode(proto, &mut wbuf);
            flush_if_full(&mut wbuf, &mut stream).await?;
        }
        if !wbuf.is_empty() {
            stream.write_all(&wbuf).await?;
            wbuf.clear();
        }
        if closing && pending.is_empty() {
            let _ = stream.shutdown().await;
            return Ok(());
        }
        // Dispatch stopped at a limit (replies in flight or unsent bytes) that step 2 freed: parse on before
        // waiting, since the commands left in the buffer may be all the client sends.
        if !closing && !parsed_all && pending.len() < MAX_IN_FLIGHT {
            continue;
        }
        // 3. Wait for input, a reply, or shutdown.
        let can_read = !closing && pending.len() < MAX_IN_FLIGHT;
        if can_read && rbuf.capacity() - rbuf.len() < READ_CHUNK / 2 {
            rbuf.reserve(READ_CHUNK);
        }
        tokio::select! {
            read = stream.read_buf(&mut rbuf), if can_read => {
                if read? == 0 {
                    // The client is gone: nobody will read the replies still pending.
                    return Ok(());
                }
            }
            Some((frame, proto)) = pending.next(), if !pending.is_empty() => frame.encode(proto, &mut wbuf),
            _ = shutdown.changed(), if !closing => closing = true,
        }
    }
}

fn push(pending: &mut FuturesOrdered<PendingReply>, fut: BoxFuture<'static, Frame>, proto: Proto) {
    pending.push_back(fut.map(move |f| (f, proto)).boxed());
}

/// Encodes every pending reply, in order, writing out whenever [`MAX_UNSENT`] bytes have piled up.
async fn drain<S: AsyncWrite + Unpin>(
    pending: &mut FuturesOrdered<PendingReply>,
    wbuf: &mut BytesMut,
    stream: &mut S,
) -> std::io::Result<()> {
    while let Some((frame, proto)) = pending.next().await {
        frame.encode(proto, wbuf);
        flush_if_full(wbuf, stream).await?;
    }
    Ok(())
}

/// Writes the buffer out once it holds [`MAX_UNSENT`] bytes (this waits for the client to read).
async fn flush_if_full<S: AsyncWrite + Unpin>(wbuf: &mut BytesMut, stream: &mut S) -> std::io::Result<()> {
    if wbuf.len() >= MAX_UNSENT {
        stream.write_all(wbuf).await?;
        wbuf.clear();
    }
    Ok(())
}

struct Conn {
    session: Session,
    /// This connection's writes in flight per shard (read-your-writes; see `node::reads`).
    in_flight: InFlight,
}

impl Conn {
    async fn step(&mut self, req: Request) -> Step {
        self.session.request_kind = req.kind;
        let args = req.args;
        if req.kind == Kind::Inline && dboutique::is_verb(&args) && !dboutique::arity_ok(&args) {
            return ready(dboutique::not_implemented());
        }
        let spec = lookup(&args[0]);
        // D-Boutique's `GET bucket key` shares its name with Redis's one-key GET (the table's `get`).
        if dboutique::is_verb(&args) && &args[0][..] == b"GET" && self.session.multi.is_none() {
            if let Some(spec) = spec {
                if let Err(refusal) = self.check_access(spec) {
                    return ready(refusal);
                }
            }
            let plan = dboutique::get(&mut self.session, &args);
            return self.run(plan).await;
        }
        let name = spec.map(|s| s.name);
        if self.session.multi.is_some() && !matches!(name, Some("exec" | "discard" | "multi" | "quit")) {
            return ready(self.queue(spec, args));
        }
        let Some(spec) = spec else {
            return ready(Frame::unknown_command(&args[0], &args[1..]));
        };
        if let Err(refusal) = self.admit(spec, &args) {
            return ready(refusal);
        }
        match spec.name {
            "exec" if self.session.multi.is_some() => return self.exec().await,
            "discard" if self.session.multi.is_some() => {
                self.session.multi = None;
                return ready(Frame::ok());
            }
            "multi" if self.session.multi.is_some() => return ready(Frame::error("ERR MULTI calls can not be nested")),
            _ => {}
        }
        let plan = (spec.handler)(&mut self.session, &args);
        self.run(plan).await
    }

    /// The checks every command passes before its handler: arity, authentication, write permission.
    fn admit(&self, spec: &Spec, args: &[Bytes]) -> Result<(), Frame> {
        if !spec.arity_ok(args.len()) {
            return Err(Frame::wrong_arity(spec.name));
        }
        self.check_access(spec)
    }

    /// Authentication and write permission.
    fn check_access(&self, spec: &Spec) -> Result<(), Frame> {
        match self.session.access {
            None if spec.flags & NOAUTH == 0 => Err(Frame::noauth()),
            Some(Access::ReadOnly) if spec.flags & WRITE != 0 => Err(Frame::error(format!(
                "NOPERM this user has no permissions to run the '{}' command (read-only token)",
                spec.name
            ))),
            _ => Ok(()),
        }
    }

    /// Queues a command inside MULTI, or refuses it (and dooms the EXEC) as Redis Cluster would.
    fn queue(&mut self, spec: Option<&'static Spec>, args: Vec<Bytes>) -> Frame {
        let refusal = match spec {
            None => Some(Frame::unknown_command(&args[0], &args[1..])),
            Some(spec) => match self.admit(spec, &args) {
                Err(refusal) => Some(refusal),
                Ok(()) if spec.flags & NO_MULTI != 0 => {
                    Some(Frame::error(format!("ERR '{}' is not allowed inside MULTI on shale", spec.name)))
                }
                Ok(()) => self.same_shard(spec, &args).err(),
            },
        };
        let multi = self.session.multi.as_mut().expect("queue runs inside MULTI");
        match refusal {
            Some(frame) => {
                multi.failed = true;
                frame
            }
            None => {
                multi.queued.push(args);
                Frame::simple("QUEUED")
            }
        }
    }

    /// Checks that every key of a queued command lives on the transaction's shard.
    fn same_shard(&mut self, spec: &Spec, args: &[Bytes]) -> Result<(), Frame> {
        let node = self.session.shared.node.clone();
        let multi: &mut Multi = self.session.multi.as_mut().expect("inside MULTI");
        for key in spec.keys(args) {
            let shard = node.shard_for(key);
            match multi.shard {
                None => multi.shard = Some(shard),
                Some(s) if s == shard => {}
                Some(_) => return Err(Frame::error("CROSSSLOT Keys in request don't hash to the same slot")),
            }
        }
        Ok(())
    }

    /// EXEC: every queued command's shard commands in ONE [`Command::Batch`], so they commit together.
    async fn exec(&mut self) -> Step {
        let multi = self.session.multi.take().expect("exec runs inside MULTI");
        if multi.failed {
            return ready(Frame::error("EXECABORT Transaction discarded because of previous errors."));
        }
        let mut frames: Vec<Option<Frame>> = Vec::with_capacity(multi.queued.len());
        let mut batch: Vec<Command> = Vec::new();
        let mut parts = Vec::new();
        for args in &multi.queued {
            let spec = lookup(&args[0]).expect("only known commands are queued");
            match (spec.handler)(&mut self.session, args) {
                Plan::Now(frame) | Plan::Close(frame) => frames.push(Some(frame)),
                Plan::Ops(cmds, finish) => {
                    parts.push((frames.len(), batch.len()..batch.len() + cmds.len(), finish));
                    batch.extend(cmds);
                    frames.push(None);
                }
                Plan::Task(_) => frames.push(Some(Frame::error("ERR internal: a task was queued in MULTI"))),
            }
        }
        if batch.is_empty() {
            return ready(Frame::Array(frames.into_iter().flatten().collect()));
        }
        let shard = self.session.shared.node.shard_for(batch[0].key());
        let wait = self.send(shard, Command::Batch(batch)).await;
        Step::Reply(
            async move {
                let outcome = match wait {
                    Wait::Ready(out) => out,
                    Wait::Later(fut) => fut.await,
                };
                let outs = match outcome {
                    Ok(Reply::Batch(outs)) => outs,
                    Ok(other) => return super::plan::unexpected(other),
                    Err(e) => return error_frame(&e),
                };
                for (slot, range, finish) in parts {
                    frames[slot] = Some(finish(outs[range].to_vec()));
                }
                Frame::Array(frames.into_iter().flatten().collect())
            }
            .boxed(),
        )
    }

    async fn run(&mut self, plan: Plan) -> Step {
        match plan {
            Plan::Now(frame) | Plan::Close(frame) => ready(frame),
            Plan::Task(task) => Step::Barrier(task),
            Plan::Ops(cmds, finish) => {
                let mut waits = Vec::with_capacity(cmds.len());
                for cmd in cmds {
                    waits.push(self.dispatch(cmd).await);
                }
                if waits.iter().all(|w| matches!(w, Wait::Ready(_))) {
                    let outs = waits.into_iter().map(|w| match w {
                        Wait::Ready(out) => out,
                        Wait::Later(_) => unreachable!("all ready"),
                    });
                    return Step::Now(finish(outs.collect()));
                }
                Step::Reply(
                    async move {
                        let mut outs = Vec::with_capacity(waits.len());
                        for w in waits {
                            outs.push(match w {
                                Wait::Ready(out) => out,
                                Wait::Later(fut) => fut.await,
                            });
                        }
                        finish(outs)
                    }
                    .boxed(),
                )
            }
        }
    }

    /// Starts one shard command; the returned future is its outcome.
    async fn dispatch(&mut self, cmd: Command) -> Wait {
        if let Command::Read { space, key } = cmd {
            let node = self.session.shared.node.clone();
            return match node.read_after(space, key, self.session.consistency, &self.in_flight, QUEUE_PATIENCE).await {
                Read::Ready(out) => Wait::Ready(out.map(Reply::Value)),
                Read::Later(fut) => Wait::Later(fut.map(|out| out.map(Reply::Value)).boxed()),
            };
        }
        let shard = self.session.shared.node.shard_for(cmd.key());
        self.send(shard, cmd).await
    }

    /// Queues the write `cmd` on `shard` (waiting for room), counting it as in flight until it is answered.
    async fn send(&mut self, shard: ShardId, cmd: Command) -> Wait {
        match self.session.shared.node.submit_patiently(shard, cmd, QUEUE_PATIENCE).await {
            Ok(answer) => Wait::Later(self.in_flight.track(shard, answer)),
            Err(e) => Wait::Ready(Err(e)),
        }
    }
}
