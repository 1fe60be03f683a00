//! The Redis-protocol listener: RESP2, RESP3 and inline commands on their own port (`RESP_PORT`, default 6380),
//! served by the same node, shard workers and cache as HTTP.
//!
//! Read along the data path: [`parse`] (bytes -> requests, with Redis's limits) -> [`conn`] (one task per
//! connection: eager dispatch, ordered replies, read-your-writes, MULTI) -> [`commands`] (the one static table)
//! -> the handlers ([`strings`], [`keys`], [`admin`], [`counters_docs`], [`dboutique`]) which plan protocol-neutral
//! [`Command`](crate::command::Command)s -> [`frame`] (replies -> bytes).
//!
//! The listener runs on its own tokio runtime in its own thread, so RESP load and HTTP load share the shards but
//! not an event loop.

pub mod admin;
pub mod commands;
pub mod conn;
pub mod counters_docs;
pub mod dboutique;
pub mod frame;
pub mod keys;
pub mod parse;
pub mod plan;
pub mod session;
pub mod strings;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::config::{Config, RespPort};
use crate::node::Node;

use session::Shared;

/// How long a stopping listener lets connections send their pending replies.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running RESP listener.
pub struct RespServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: JoinHandle<()>,
}

impl RespServer {
    /// Binds the RESP port of `config` (None when it is off). Called before the data dir is touched, so a taken
    /// port fails the start-up without opening anything.
    pub fn bind(config: &Config) -> std::io::Result<Option<std::net::TcpListener>> {
        let port = match config.resp_port {
            RespPort::Off => return Ok(None),
            RespPort::Port(p) => p,
            RespPort::Any => 0,
        };
        let listener = std::net::TcpListener::bind((config.host.as_str(), port)).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot bind the RESP port {}:{port}: {e} (set RESP_PORT to another port, or to off)",
                    config.host
                ),
            )
        })?;
        listener.set_nonblocking(true)?;
        Ok(Some(listener))
    }

    /// Serves the bound `listener` on a new thread, with TLS when `config` has a certificate.
    pub fn start(listener: std::net::TcpListener, config: &Config, node: Arc<Node>) -> std::io::Result<RespServer> {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                let tls = crate::api::tls::server_config(cert, key).map_err(std::io::Error::other)?;
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))
            }
            _ => None,
        };
        let addr = listener.local_addr()?;
        let workers =
            config.http_workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name("resp")
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared::new(node, config.clone(), addr.port()));
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new().name("resp-listener".into()).spawn(move || {
            runtime.block_on(accept_loop(listener, shared, tls, stopped));
            runtime.shutdown_timeout(STOP_GRACE);
        })?;
        tracing::info!(%addr, tls = config.tls_cert.is_some(), "RESP listening");
        Ok(RespServer { addr, stop, thread })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets connections send their pending replies (up to a few seconds), and waits for the
    /// listener's thread. Writes already queued on a shard are committed by the shard either way.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        if self.thread.join().is_err() {
            tracing::error!("the RESP listener thread panicked");
        }
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stopped: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve the RESP port");
            return;
        }
    };
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => break,
        };
        let (mut socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "RESP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let _ = socket.set_nodelay(true);
        // Counted here, before the connection's task runs, so a burst of accepts cannot pass the limit.
        if shared.clients.fetch_add(1, Ordering::Relaxed) >= shared.config.resp_max_clients {
            shared.clients.fetch_sub(1, Ordering::Relaxed);
            connections.spawn(async move {
                let _ = socket.write_all(b"-ERR max number of clients reached\r\n").await;
            });
            continue;
        }
        let (shared, stopped, tls) = (shared.clone(), stopped.clone(), tls.clone());
        connections.spawn(async move {
            let served = match tls {
                Some(acceptor) => match acceptor.accept(socket).await {
                    Ok(stream) => conn::serve(stream, shared.clone(), stopped).await,
                    Err(e) => Err(e),
                },
                None => conn::serve(socket, shared.clone(), stopped).await,
            };
            shared.clients.fetch_sub(1, Ordering::Relaxed);
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "RESP connection ended with an error");
            }
        });
    }
    // Connections saw the stop too: they send what is pending and close. Wait for them, within the grace time.
    let _ = tokio::time::timeout(STOP_GRACE, async { while connections.join_next().await.is_some() {} }).await;
}
