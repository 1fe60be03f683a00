//! The write seam: where a shard's writes go. Every write of every protocol reaches its shard through
//! [`ShardWrites`]; on a single node that is the local shard worker's queue ([`ShardHandle`]), and a replicated
//! shard is one more implementation of the same trait. Queued at the call, answered on a oneshot receiver.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::command::{Command, Reply};
use crate::error::{Error, Result};
use crate::placement::ShardId;
use crate::shard::{Refusal, ShardHandle};

/// Where a write's outcome arrives.
pub type Answer = oneshot::Receiver<Result<Reply>>;

/// Where the writes of one shard go.
pub trait ShardWrites: Send + Sync {
    /// The shard.
    fn shard(&self) -> ShardId;
    /// Queues `cmd` without waiting: the receiver of its outcome, or why it was not taken (a full queue gives
    /// the command back).
    fn try_submit(&self, cmd: Command) -> std::result::Result<Answer, Refusal>;
}

impl ShardWrites for ShardHandle {
    fn shard(&self) -> ShardId {
        self.id()
    }

    fn try_submit(&self, cmd: Command) -> std::result::Result<Answer, Refusal> {
        ShardHandle::try_submit(self, cmd)
    }
}

/// Queues `cmd` at once, or fails with `Unavailable` (HTTP answers 503 with `Retry-After`): an HTTP worker never
/// waits for room.
pub fn submit_now(to: &dyn ShardWrites, cmd: Command) -> Result<Answer> {
    to.try_submit(cmd).map_err(|refusal| refused(to.shard(), &refusal))
}

/// Queues `cmd`, waiting (asynchronously, up to `patience`) while the shard's queue is full: the backpressure of
/// a RESP connection, which holds the client instead of failing its command. Returns the receiver of the outcome,
/// so the caller can queue more before awaiting (a pipeline keeps its order per shard).
pub async fn submit_patiently(to: &dyn ShardWrites, cmd: Command, patience: Duration) -> Result<Answer> {
    let deadline = Instant::now() + patience;
    let mut pause = Duration::from_micros(50);
    let mut cmd = cmd;
    loop {
        match to.try_submit(cmd) {
            Ok(answer) => return Ok(answer),
            Err(Refusal::Full(back)) if Instant::now() < deadline => {
                cmd = *back;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(5));
            }
            Err(refusal) => return Err(refused(to.shard(), &refusal)),
        }
    }
}

/// The outcome of an answer whose sender went away.
pub async fn outcome(answer: Answer) -> Result<Reply> {
    answer.await.unwrap_or_else(|_| Err(Error::Internal("the shard stopped before answering".into())))
}

fn refused(shard: ShardId, refusal: &Refusal) -> Error {
    match refusal {
        Refusal::Full(_) => Error::Unavailable(format!("shard {shard} is overloaded; retry")),
        Refusal::Stopped => Error::Unavailable(format!("shard {shard} is not running")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::command::Space;

    /// A shard whose queue stays full for its first `full_for` attempts.
    struct Busy {
        full_for: usize,
        tries: AtomicUsize,
    }

    impl ShardWrites for Busy {
        fn shard(&self) -> ShardId {
            ShardId(0)
        }

        fn try_submit(&self, cmd: Command) -> std::result::Result<Answer, Refusal> {
            if self.tries.fetch_add(1, Ordering::AcqRel) < self.full_for {
                return Err(Refusal::Full(Box::new(cmd)));
            }
            Ok(oneshot::channel().1)
        }
    }

    fn clear() -> Command {
        Command::Clear { space: Space::Kv }
    }

    #[tokio::test]
    async fn a_patient_submit_waits_for_room_then_gives_up_as_unavailable() {
        let full = Busy { full_for: usize::MAX, tries: AtomicUsize::new(0) };
        assert!(matches!(submit_now(&full, clear()), Err(Error::Unavailable(_))), "the plain submit refuses at once");
        assert_eq!(full.tries.load(Ordering::Acquire), 1);

        let started = Instant::now();
        let err = submit_patiently(&full, clear(), Duration::from_millis(150)).await.expect_err("queue stays full");
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
        assert!(started.elapsed() >= Duration::from_millis(150), "gave up after {:?}", started.elapsed());

        let busy = Busy { full_for: 5, tries: AtomicUsize::new(0) };
        assert!(submit_patiently(&busy, clear(), Duration::from_secs(5)).await.is_ok(), "the command waited for room");
        assert_eq!(busy.tries.load(Ordering::Acquire), 6);
    }
}
