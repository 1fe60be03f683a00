//! The cluster port: one TCP connection from each node to each peer, shared by all the shards' Raft groups, whose
//! frames name the shard.
//!
//! # Connection
//! Plain TCP, or TLS with the node's `TLS_CERT`/`TLS_KEY` when they are set. Frames are `[length: u32 LE]
//! [postcard body]`, at most [`MAX_FRAME`] bytes. Both sides prove `CLUSTER_SECRET`: the accepting node sends a
//! random challenge; the connecting node answers with its node id, HMAC-SHA256(secret, "client" ‖ challenge ‖
//! binding) and a challenge of its own; the accepting node answers HMAC-SHA256(secret, "server" ‖ that
//! challenge ‖ binding). Under TLS the binding is keying material exported from the TLS session (RFC 5705), so a
//! proof is good for that session only: a man in the middle, who holds two sessions, cannot relay it. That is
//! why a TLS client accepts any certificate here: the secret, not a certificate authority, authenticates peers.
//! A wrong proof closes the connection (and is logged) before any frame reaches a Raft group. Then the connecting
//! node sends requests, each with an id and a shard, and the accepting node answers each one when its group has,
//! in any order (one task per request, so a slow snapshot install never holds up heartbeats).
//!
//! # Requests
//! AppendEntries, Vote and PreVote carry openraft's own messages. A snapshot travels as chunks of
//! `snapshot_max_chunk_size` bytes written to a file next to the receiving shard's snapshots, then a last request
//! with the vote and the snapshot's metadata, on which the receiver installs it.
//!
//! A request fails as `Unreachable` (openraft backs off and retries) when the peer cannot be reached, the
//! connection breaks, or no answer comes within the time openraft allows the request.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use hmac::{Hmac, Mac};
use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::OptionalSend;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::cluster::service::{self, Identity, Request, Response};
pub use crate::cluster::state::Group;
use crate::cluster::state::SnapshotFile;
use crate::cluster::types::{NodeAddr, ShardRaft};

/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 64 << 20;
/// The largest handshake frame: a peer that has not proven the secret never makes this node allocate more.
const MAX_HANDSHAKE_FRAME: usize = 256;
/// Most frames written with one system call.
const WRITE_FRAMES: usize = 256;
/// Bytes read from a connection at once (frames are parsed out of them).
const READ_BUFFER: usize = 64 << 10;
/// How long a connection attempt or a handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

// ---- frames ----

#[derive(serde::Serialize, serde::Deserialize)]
enum Frame {
    Challenge([u8; 32]),
    Hello { node: u64, proof: [u8; 32], challenge: [u8; 32] },
    Welcome { proof: [u8; 32] },
    Request { id: u64, shard: u32, rpc: Rpc },
    Response { id: u64, reply: Result<Reply, String> },
}

#[derive(serde::Serialize, serde::Deserialize)]
enum Rpc {
    Append(AppendEntriesRequest<ShardRaft>),
    Vote(VoteRequest<ShardRaft>),
    PreVote(VoteRequest<ShardRaft>),
    /// Bytes of snapshot transfer `transfer` at `offset`.
    SnapshotChunk {
        transfer: u64,
        offset: u64,
        data: Vec<u8>,
    },
    /// The whole snapshot has been sent: install it.
    SnapshotDone {
        transfer: u64,
        vote: VoteOf<ShardRaft>,
        meta: SnapshotMetaOf<ShardRaft>,
    },
    /// A request of shale's own ([`service`]).
    Service(Request),
}

#[derive(serde::Serialize, serde::Deserialize)]
enum Reply {
    Append(AppendEntriesResponse<ShardRaft>),
    Vote(VoteResponse<ShardRaft>),
    Chunk,
    Snapshot(SnapshotResponse<ShardRaft>),
    Service(Response),
}

/// Appends `frame`, its length first, to `out`.
fn encode_frame(frame: &Frame, out: &mut Vec<u8>) -> io::Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    if let Err(e) = postcard::to_io(frame, &mut *out) {
        out.truncate(start);
        return Err(io::Error::other(format!("encoding a frame: {e}")));
    }
    let len = out.len() - start - 4;
    if len > MAX_FRAME {
        out.truncate(start);
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("a {len} byte frame")));
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

async fn write_frame(w: &mut Writer, frame: &Frame) -> io::Result<()> {
    let mut out = Vec::new();
    encode_frame(frame, &mut out)?;
    w.write_all(&out).await
}

/// Writes the frames queued on `rx` until the queue closes or a write fails: everything queued at once goes out
/// with one write, so the shards' messages to a peer share its system calls and its wake-ups.
async fn write_frames(mut w: Writer, mut rx: mpsc::UnboundedReceiver<Frame>) {
    let mut frames = Vec::new();
    let mut out = Vec::new();
    while rx.recv_many(&mut frames, WRITE_FRAMES).await > 0 {
        out.clear();
        for frame in frames.drain(..) {
            if let Err(e) = encode_frame(&frame, &mut out) {
                tracing::error!(error = %e, "a frame for the cluster port could not be encoded");
            }
        }
        if w.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Reads one frame of at most `max` bytes.
async fn read_frame(r: &mut Reader, max: usize) -> io::Result<Frame> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    postcard::from_bytes(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("a bad frame: {e}")))
}

/// HMAC-SHA256(`secret`, `role` ‖ `challenge` ‖ `binding`).
fn proof(secret: &[u8], role: &[u8], challenge: &[u8; 32], binding: &[u8; 32]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(role);
    mac.update(challenge);
    mac.update(binding);
    mac.finalize().into_bytes().into()
}

fn proven(given: &[u8; 32], expected: &[u8; 32]) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(&given[..], &expected[..]))
}

fn random_challenge() -> io::Result<[u8; 32]> {
    crate::random::os_bytes::<32>().ok_or_else(|| io::Error::other("no randomness for a challenge"))
}

// ---- streams ----

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// The label of the keying material a TLS session exports for the proofs.
const BINDING_LABEL: &[u8] = b"EXPORTER-shale-cluster-port";

/// How the cluster port's connections are secured: the secret both sides prove, and TLS when it is on.
#[derive(Clone)]
pub struct Security {
    secret: Arc<[u8]>,
    tls: Option<(tokio_rustls::TlsAcceptor, tokio_rustls::TlsConnector)>,
}

impl Security {
    /// Proving `secret`, over TLS with `server` (this node's certificate) when it is given.
    pub fn new(secret: Arc<[u8]>, server: Option<Arc<rustls::ServerConfig>>) -> Security {
        let tls = server.map(|server| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let client = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            (tokio_rustls::TlsAcceptor::from(server), tokio_rustls::TlsConnector::from(Arc::new(client)))
        });
        Security { secret, tls }
    }

    /// The accepting side of a new connection: its halves and the session's binding.
    async fn accept(&self, stream: TcpStream) -> io::Result<(Reader, Writer, [u8; 32])> {
        stream.set_nodelay(true)?;
        match &self.tls {
            None => plain(stream),
            Some((acceptor, _)) => {
                let tls = acceptor.accept(stream).await?;
                let binding = export(tls.get_ref().1)?;
                let (r, w) = tokio::io::split(tls);
                Ok((Box::new(BufReader::with_capacity(READ_BUFFER, r)), Box::new(w), binding))
            }
        }
    }

    /// The connecting side of a new connection.
    async fn connect(&self, stream: TcpStream) -> io::Result<(Reader, Writer, [u8; 32])> {
        stream.set_nodelay(true)?;
        match &self.tls {
            None => plain(stream),
            Some((_, connector)) => {
                let name = rustls::pki_types::ServerName::try_from("shale-node").expect("a valid name");
                let tls = connector.connect(name, stream).await?;
                let binding = export(tls.get_ref().1)?;
                let (r, w) = tokio::io::split(tls);
                Ok((Box::new(BufReader::with_capacity(READ_BUFFER, r)), Box::new(w), binding))
            }
        }
    }
}

fn plain(stream: TcpStream) -> io::Result<(Reader, Writer, [u8; 32])> {
    let (r, w) = stream.into_split();
    Ok((Box::new(BufReader::with_capacity(READ_BUFFER, r)), Box::new(w), [0; 32]))
}

fn export<D>(session: &rustls::ConnectionCommon<D>) -> io::Result<[u8; 32]> {
    session.export_keying_material([0u8; 32], BINDING_LABEL, None).map_err(io::Error::other)
}

/// Accepts any server certificate, checking only that the server holds its key: peers are authenticated by the
/// secret bound to the session (see the module's doc), not by a certificate authority.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// ---- the accepting side ----

/// The Raft groups of this node, by shard, with the folder where each keeps its snapshots, and who the node is.
#[derive(Clone)]
pub struct Groups {
    inner: Arc<RwLock<HashMap<u32, (Group, PathBuf)>>>,
    identity: Arc<Identity>,
}

impl Groups {
    /// No groups yet, on the node `identity` describes.
    pub fn new(identity: Arc<Identity>) -> Groups {
        Groups { inner: Arc::default(), identity }
    }

    /// Serves shard `shard`'s group, which keeps its snapshots in `snapshots`.
    pub fn insert(&self, shard: u32, group: Group, snapshots: PathBuf) {
        self.inner.write().expect("groups lock").insert(shard, (group, snapshots));
    }

    /// Stops serving shard `shard`.
    pub fn remove(&self, shard: u32) {
        self.inner.write().expect("groups lock").remove(&shard);
    }

    fn get(&self, shard: u32) -> Option<(Group, PathBuf)> {
        self.inner.read().expect("groups lock").get(&shard).cloned()
    }
}

/// Accepts cluster connections on `listener` until the task is dropped, serving `groups` to peers that prove
/// the secret of `security`. Dropping it also closes every connection it accepted.
pub async fn serve(listener: TcpListener, groups: Groups, security: Security) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a cluster connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (groups, security) = (groups.clone(), security.clone());
        connections.spawn(async move {
            if let Err(e) = serve_connection(stream, peer, groups, security).await {
                tracing::debug!(%peer, error = %e, "cluster connection closed");
            }
        });
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, groups: Groups, security: Security) -> io::Result<()> {
    let (mut r, mut w, binding) =
        tokio::time::timeout(CONNECT_TIMEOUT, security.accept(stream)).await.map_err(|_| timed_out())??;
    let secret = &security.secret;
    let challenge = random_challenge()?;
    write_frame(&mut w, &Frame::Challenge(challenge)).await?;
    let hello = tokio::time::timeout(CONNECT_TIMEOUT, read_frame(&mut r, MAX_HANDSHAKE_FRAME))
        .await
        .map_err(|_| timed_out())??;
    let Frame::Hello { node, proof: given, challenge: theirs } = hello else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "no hello"));
    };
    if !proven(&given, &proof(secret, b"client", &challenge, &binding)) {
        tracing::warn!(%peer, node, "refused a cluster connection: it does not know CLUSTER_SECRET");
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, "bad cluster secret"));
    }
    write_frame(&mut w, &Frame::Welcome { proof: proof(secret, b"server", &theirs, &binding) }).await?;
    // Answers go out through one writer task, in the order they are ready.
    let (tx, rx) = mpsc::unbounded_channel::<Frame>();
    let writer = tokio::spawn(write_frames(w, rx));
    let incoming = Arc::new(Mutex::new(HashMap::<u64, PathBuf>::new()));
    let mut requests = tokio::task::JoinSet::new();
    let result = loop {
        let frame = match read_frame(&mut r, MAX_FRAME).await {
            Ok(f) => f,
            Err(e) => break Err(e),
        };
        let Frame::Request { id, shard, rpc } = frame else {
            break Err(io::Error::new(io::ErrorKind::InvalidData, "not a request"));
        };
        if let Rpc::Service(Request::Write(proposals)) = rpc {
            // Proposed before the next frame is read, so writes forwarded over one connection keep their order.
            let pending = match groups.get(shard) {
                Some((group, _)) => Ok(service::propose(&group, proposals).await),
                None => Err(format!("no shard {shard} here")),
            };
            let tx = tx.clone();
            requests.spawn(async move {
                let reply = match pending {
                    Ok(pending) => Ok(Reply::Service(Response::Written(pending.await))),
                    Err(e) => Err(e),
                };
                let _ = tx.send(Frame::Response { id, reply });
            });
            while requests.try_join_next().is_some() {}
            continue;
        }
        let (groups, tx, incoming) = (groups.clone(), tx.clone(), incoming.clone());
        requests.spawn(async move {
            let reply = answer(&groups, node, shard, rpc, &incoming).await;
            let _ = tx.send(Frame::Response { id, reply });
        });
        while requests.try_join_next().is_some() {}
    };
    requests.abort_all();
    drop(tx);
    let _ = writer.await;
    for (_, path) in incoming.lock().expect("incoming lock").drain() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Hands one request to its shard's group.
async fn answer(
    groups: &Groups,
    peer: u64,
    shard: u32,
    rpc: Rpc,
    incoming: &Mutex<HashMap<u64, PathBuf>>,
) -> Result<Reply, String> {
    if let Rpc::Service(Request::Info) = rpc {
        return Ok(Reply::Service(Response::Info(groups.identity.info())));
    }
    let (group, snapshots) = groups.get(shard).ok_or_else(|| format!("no shard {shard} here"))?;
    match rpc {
        Rpc::Service(request) => Ok(Reply::Service(service::answer(&group, &groups.identity, request).await)),
        Rpc::Append(req) => group.append_entries(req).await.map(Reply::Append).map_err(|e| e.to_string()),
        Rpc::Vote(req) => group.vote(req).await.map(Reply::Vote).map_err(|e| e.to_string()),
        Rpc::PreVote(req) => group.pre_vote(req).await.map(Reply::Vote).map_err(|e| e.to_string()),
        Rpc::SnapshotChunk { transfer, offset, data } => {
            let path = incoming
                .lock()
                .expect("incoming lock")
                .entry(transfer)
                .or_insert_with(|| snapshots.join(format!("receiving-{peer}-{shard}-{transfer}.redb")))
                .clone();
            tokio::task::spawn_blocking(move || write_at(&path, offset, &data))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            Ok(Reply::Chunk)
        }
        Rpc::SnapshotDone { transfer, vote, meta } => {
            let path = incoming.lock().expect("incoming lock").remove(&transfer).ok_or("no snapshot was received")?;
            let snapshot = SnapshotOf::<ShardRaft, SnapshotFile> { meta, snapshot: SnapshotFile(path.clone()) };
            let installed = group.install_full_snapshot(vote, snapshot).await.map_err(|e| e.to_string());
            let _ = std::fs::remove_file(&path);
            installed.map(Reply::Snapshot)
        }
    }
}

/// Writes a received chunk (not synced: the install copies the whole file and makes the copy durable).
fn write_at(path: &std::path::Path, offset: u64, data: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().create(true).write(true).truncate(offset == 0).open(path)?;
    f.write_all_at(data, offset)
}

// ---- the connecting side ----

/// This node's connections to its peers, one per peer, shared by every shard's group.
pub struct Peers {
    node: u64,
    security: Security,
    /// The local address connections are made from (`HOST`, when it names one address).
    source: Option<std::net::IpAddr>,
    /// By the peer's cluster address.
    connections: Mutex<HashMap<String, Arc<Connection>>>,
    next_transfer: AtomicU64,
}

impl Peers {
    /// The connections of node `node`, secured by `security`, made from `source` (any local address when
    /// `None`).
    pub fn new(node: u64, security: Security, source: Option<std::net::IpAddr>) -> Arc<Peers> {
        let connections = Mutex::new(HashMap::new());
        Arc::new(Peers { node, security, source, connections, next_transfer: AtomicU64::new(1) })
    }

    /// The network of shard `shard`'s group.
    pub fn network(self: &Arc<Self>, shard: u32) -> ShardNetwork {
        ShardNetwork { shard, peers: self.clone() }
    }

    /// The live connection to the node at `addr`, connecting (and proving the secret) when there is none.
    async fn connection(&self, addr: &str) -> Result<Arc<Connection>, Unreachable<ShardRaft>> {
        if let Some(c) = self.connections.lock().expect("connections lock").get(addr) {
            if !c.closed() {
                return Ok(c.clone());
            }
        }
        let c = tokio::time::timeout(CONNECT_TIMEOUT, Connection::open(addr, self.source, self.node, &self.security))
            .await
            .map_err(|_| Unreachable::from_string(format!("connecting to {addr} timed out")))?
            .map_err(|e| Unreachable::from_string(format!("connecting to {addr}: {e}")))?;
        let c = Arc::new(c);
        self.connections.lock().expect("connections lock").insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Sends `request` about shard `shard` to the node at `addr` and waits up to `ttl` for its answer.
    pub async fn ask(&self, addr: &str, shard: u32, request: Request, ttl: Duration) -> io::Result<Response> {
        let answer = self.send(addr, shard, request).await?;
        match tokio::time::timeout(ttl, answer).await {
            Ok(answer) => answer,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("{addr} did not answer within {ttl:?}"))),
        }
    }

    /// Sends `request` about shard `shard` to the node at `addr` now, so requests sent one after another to one
    /// node arrive in that order; the returned future is its answer.
    pub async fn send(
        &self,
        addr: &str,
        shard: u32,
        request: Request,
    ) -> io::Result<BoxFuture<'static, io::Result<Response>>> {
        let c = self.connection(addr).await.map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e.to_string()))?;
        let answer = c.start(shard, Rpc::Service(request))?;
        Ok(Box::pin(async move {
            match answer.await {
                Ok(Ok(Reply::Service(response))) => Ok(response),
                Ok(Ok(_)) => Err(io::Error::new(io::ErrorKind::InvalidData, "the peer answered another request")),
                Ok(Err(remote)) => Err(io::Error::other(remote)),
                Err(_) => Err(io::Error::new(io::ErrorKind::BrokenPipe, "the connection broke")),
            }
        }))
    }

    async fn call(
        &self,
        target: u64,
        node: &NodeAddr,
        shard: u32,
        rpc: Rpc,
        ttl: Duration,
    ) -> Result<Reply, Unreachable<ShardRaft>> {
        let c = self.connection(&node.cluster).await?;
        match tokio::time::timeout(ttl, c.call(shard, rpc)).await {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(remote))) => Err(Unreachable::from_string(format!("node {target}: {remote}"))),
            Ok(Err(e)) => Err(Unreachable::from_string(format!("node {target}: {e}"))),
            Err(_) => Err(Unreachable::from_string(format!("node {target} did not answer within {ttl:?}"))),
        }
    }
}

/// One authenticated connection to a peer: requests go out through a writer task, answers come back through a
/// reader task that hands each to its caller.
/// The calls waiting for their answers, by request id.
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Reply, String>>>>>;

struct Connection {
    tx: mpsc::UnboundedSender<Frame>,
    pending: Pending,
    next_id: AtomicU64,
    /// The reader saw the connection end: the next call connects again.
    broken: Arc<std::sync::atomic::AtomicBool>,
}

impl Connection {
    async fn open(
        addr: &str,
        source: Option<std::net::IpAddr>,
        node: u64,
        security: &Security,
    ) -> io::Result<Connection> {
        let stream = match source {
            None => TcpStream::connect(addr).await?,
            Some(ip) => {
                let target =
                    tokio::net::lookup_host(addr).await?.find(|t| t.is_ipv4() == ip.is_ipv4()).ok_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, format!("{addr} has no address like {ip}"))
                    })?;
                let socket =
                    if ip.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(target).await?
            }
        };
        let (mut r, mut w, binding) = security.connect(stream).await?;
        let secret = &security.secret;
        let Frame::Challenge(challenge) = read_frame(&mut r, MAX_HANDSHAKE_FRAME).await? else {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "no challenge"));
        };
        let ours = random_challenge()?;
        let hello = Frame::Hello { node, proof: proof(secret, b"client", &challenge, &binding), challenge: ours };
        write_frame(&mut w, &hello).await?;
        // The peer proves the secret too, before anything it says is believed.
        let Frame::Welcome { proof: given } = read_frame(&mut r, MAX_HANDSHAKE_FRAME).await? else {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "no welcome"));
        };
        if !proven(&given, &proof(secret, b"server", &ours, &binding)) {
            tracing::warn!(%addr, "refused a cluster peer: it does not know CLUSTER_SECRET");
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "the peer does not know the cluster secret"));
        }
        let (tx, rx) = mpsc::unbounded_channel::<Frame>();
        tokio::spawn(write_frames(w, rx));
        let pending: Pending = Arc::default();
        let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (answers, ended) = (pending.clone(), broken.clone());
        tokio::spawn(async move {
            while let Ok(Frame::Response { id, reply }) = read_frame(&mut r, MAX_FRAME).await {
                if let Some(caller) = answers.lock().expect("pending lock").remove(&id) {
                    let _ = caller.send(reply);
                }
            }
            // The connection broke (or was refused): it is not used again, and every call still waiting fails now.
            ended.store(true, Ordering::Release);
            answers.lock().expect("pending lock").clear();
        });
        Ok(Connection { tx, pending, next_id: AtomicU64::new(1), broken })
    }

    fn closed(&self) -> bool {
        self.broken.load(Ordering::Acquire) || self.tx.is_closed()
    }

    async fn call(&self, shard: u32, rpc: Rpc) -> io::Result<Result<Reply, String>> {
        self.start(shard, rpc)?.await.map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the connection broke"))
    }

    /// Queues `rpc` on the connection now; the receiver gets its answer.
    fn start(&self, shard: u32, rpc: Rpc) -> io::Result<oneshot::Receiver<Result<Reply, String>>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, answer) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, done);
        if self.closed() {
            // The reader may have cleared the calls just before this one was added.
            self.pending.lock().expect("pending lock").remove(&id);
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the connection is closed"));
        }
        if self.tx.send(Frame::Request { id, shard, rpc }).is_err() {
            self.pending.lock().expect("pending lock").remove(&id);
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the connection is closed"));
        }
        Ok(answer)
    }
}

/// The network of one shard's group: openraft asks it for a client per peer.
pub struct ShardNetwork {
    shard: u32,
    peers: Arc<Peers>,
}

impl RaftNetworkFactory<ShardRaft> for ShardNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &NodeAddr) -> PeerClient {
        PeerClient { shard: self.shard, target, node: node.clone(), peers: self.peers.clone() }
    }
}

/// Shard `shard`'s requests to peer `target`.
pub struct PeerClient {
    shard: u32,
    target: u64,
    node: NodeAddr,
    peers: Arc<Peers>,
}

impl PeerClient {
    async fn call(&self, rpc: Rpc, ttl: Duration) -> Result<Reply, Unreachable<ShardRaft>> {
        self.peers.call(self.target, &self.node, self.shard, rpc, ttl).await
    }

    /// Sends `rpc` within the time openraft allows it and takes the answer `pick` expects.
    async fn ask<T>(
        &self,
        rpc: Rpc,
        option: &RPCOption,
        pick: impl FnOnce(Reply) -> Option<T>,
    ) -> Result<T, RPCError<ShardRaft>> {
        let reply = self.call(rpc, option.hard_ttl()).await.map_err(RPCError::Unreachable)?;
        pick(reply).ok_or_else(|| RPCError::Unreachable(unexpected()))
    }
}

fn vote_reply(reply: Reply) -> Option<VoteResponse<ShardRaft>> {
    match reply {
        Reply::Vote(r) => Some(r),
        _ => None,
    }
}

fn unexpected() -> Unreachable<ShardRaft> {
    Unreachable::from_string("the peer answered another kind of request")
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the handshake timed out")
}

impl RaftNetworkV2<ShardRaft> for PeerClient {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<ShardRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<ShardRaft>, RPCError<ShardRaft>> {
        self.ask(Rpc::Append(rpc), &option, |reply| match reply {
            Reply::Append(r) => Some(r),
            _ => None,
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<ShardRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<ShardRaft>, RPCError<ShardRaft>> {
        self.ask(Rpc::Vote(rpc), &option, vote_reply).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<ShardRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<ShardRaft>, RPCError<ShardRaft>> {
        self.ask(Rpc::PreVote(rpc), &option, vote_reply).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<ShardRaft>,
        snapshot: SnapshotOf<ShardRaft, SnapshotFile>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<ShardRaft>, StreamingError<ShardRaft>> {
        let transfer = self.peers.next_transfer.fetch_add(1, Ordering::Relaxed);
        let chunk = option.snapshot_chunk_size().unwrap_or(1 << 20).clamp(4096, MAX_FRAME / 2);
        // Each chunk may take the time openraft allows a snapshot request: a transfer is as long as it needs.
        let ttl = option.hard_ttl().max(Duration::from_secs(5));
        let path = snapshot.snapshot.0.clone();
        let len = std::fs::metadata(&path).map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?.len();
        let mut offset = 0u64;
        loop {
            let (p, at) = (path.clone(), offset);
            let data = tokio::task::spawn_blocking(move || read_at(&p, at, chunk))
                .await
                .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?
                .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
            let n = data.len() as u64;
            match self.call(Rpc::SnapshotChunk { transfer, offset, data }, ttl).await {
                Ok(Reply::Chunk) => {}
                Ok(_) => return Err(StreamingError::Unreachable(unexpected())),
                Err(e) => return Err(StreamingError::Unreachable(e)),
            }
            offset += n;
            if offset >= len || n == 0 {
                break;
            }
        }
        match self.call(Rpc::SnapshotDone { transfer, vote, meta: snapshot.meta }, ttl).await {
            Ok(Reply::Snapshot(r)) => {
                metrics::counter!("shale_raft_snapshots_sent_total", "shard" => self.shard.to_string()).increment(1);
                Ok(r)
            }
            Ok(_) => Err(StreamingError::Unreachable(unexpected())),
            Err(e) => Err(StreamingError::Unreachable(e)),
        }
    }
}

fn read_at(path: &std::path::Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let n = f.read_at(&mut buf[filled..], offset + filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf)
}
