//! Linearizable reads on any replica, by read index (Raft's ReadIndex, not a lease: no assumption about clocks).
//!
//! The shard's leader confirms with a heartbeat round that a majority still follows it and answers the log
//! position up to which it has committed; the replica that serves the read waits until its own state machine has
//! applied that far, then reads its cache or file. Every write acknowledged before the read began is at or below
//! that position, so the read sees it. A follower asks its leader over the cluster port (one hop) and reads
//! locally; the leader asks itself. Without a majority the leader cannot confirm, and the read fails with
//! `NoQuorum` within the request timeout: never a stale value presented as linearizable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use crate::cluster::service::{self, leader_of, Refused, Request, Response};
use crate::cluster::writes::{not_initialised, Route};
use crate::error::{Error, Result};
use crate::node::reads::Linearize;
use crate::placement::ShardId;

/// How often a read waiting for a leader looks again.
const LEADER_POLL: Duration = Duration::from_millis(20);

/// The read index of every local replica.
pub struct ReadIndexes {
    routes: Vec<Route>,
}

impl ReadIndexes {
    /// Over the route of each shard, in shard order.
    pub fn new(routes: Vec<Route>) -> Arc<ReadIndexes> {
        Arc::new(ReadIndexes { routes })
    }
}

impl Linearize for ReadIndexes {
    fn linearize(&self, shard: ShardId) -> BoxFuture<'static, Result<()>> {
        let route = self.routes.get(shard.0 as usize).cloned();
        Box::pin(async move {
            let route = route.ok_or_else(|| Error::Internal(format!("no shard {shard}")))?;
            caught_up(shard, &route).await
        })
    }

    fn local(&self) -> Result<()> {
        match self.routes.first() {
            Some(route) if !(route.initialised)() => Err(not_initialised()),
            _ => Ok(()),
        }
    }
}

/// Waits until the local replica of `shard` has applied everything its leader had committed when asked.
async fn caught_up(shard: ShardId, route: &Route) -> Result<()> {
    let deadline = Instant::now() + route.timeout;
    let late = || {
        Error::NoQuorum(format!(
            "shard {shard}: no leader confirmed a majority within {} ms, so a linearizable read cannot be served \
             (add ?consistency=stale to read this replica as it is)",
            route.timeout.as_millis()
        ))
    };
    loop {
        if !(route.initialised)() {
            return Err(not_initialised());
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(late());
        }
        let index = match leader_of(&route.group) {
            Some((id, _)) if id == *route.group.node_id() => {
                tokio::time::timeout(remaining, service::read_index(&route.group)).await.ok()
            }
            Some((_, addr)) => match route.peers.ask(&addr.cluster, shard.0, Request::ReadIndex, remaining).await {
                Ok(Response::ReadIndex(index)) => Some(index),
                Ok(_) => Some(Err(Refused::Failed("the leader answered another request".into()))),
                Err(_) => None,
            },
            None => None,
        };
        match index {
            Some(Ok((_, read))) => return applied(route, read, deadline, late).await,
            Some(Err(Refused::Failed(why))) => {
                tracing::debug!(%shard, %why, "a read index was refused");
            }
            Some(Err(_)) | None => {}
        }
        tokio::time::sleep(LEADER_POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// Waits until the local replica has applied up to `read` (its worker's applied index, which moves only once the
/// file and cache hold the entry).
async fn applied(route: &Route, read: service::ReadIndex, deadline: Instant, late: impl Fn() -> Error) -> Result<()> {
    let mut applied = route.applied.clone();
    let index = read.index();
    let reached =
        match tokio::time::timeout_at(deadline.into(), applied.wait_for(|a| a.is_some_and(|a| a >= index))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::Unavailable("the shard's state machine stopped".into())),
            Err(_) => Err(late()),
        };
    reached
}
