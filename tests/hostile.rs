//! Slow and hostile clients, against the real binary over raw TCP: a few bad clients must not starve the others
//! or exhaust the server. Idle connections and slowloris requests do not slow down other clients and are shed
//! after the client request timeout; a huge header gets 431; a body longer than its Content-Length is cut there
//! and the rest is answered as a (bad) next request; a Content-Length over MAX_VALUE_BYTES gets 413 before any
//! body byte is sent.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{temp_dir, BinaryServer};
use shale::server::{CLIENT_REQUEST_TIMEOUT, MAX_HEADER_BYTES};

/// Idle connections the test opens: a thousand idle clients must not hold the server up.
const IDLE: usize = 1000;
/// Slowloris connections: they send a request head one header at a time and never finish it.
const SLOWLORIS: usize = 20;
/// The slowest answer a well-behaved client may get meanwhile (generous: a debug build on a busy machine).
const QUICK: Duration = Duration::from_secs(2);

/// One HTTP/1.1 response read from a raw connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Reads one response (head, then a Content-Length body) from `s`; `None` on EOF before a full head.
fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Answer> {
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading a response: {e}"),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad head {head:?}"));
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < end + len {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading a body: {e}"),
        }
    }
    let body = buf[end..(end + len).min(buf.len())].to_vec();
    buf.drain(..(end + len).min(buf.len()));
    Some(Answer { status, head, body })
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connecting");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Sends `request` on a fresh connection and reads one answer.
fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut s = connect(addr);
    s.write_all(request).unwrap();
    read_answer(&mut s, &mut Vec::new()).expect("an answer before the connection closed")
}

/// Whether the server closed `s` (EOF or reset), reading at most until `deadline`. Bytes it sends first (a 408
/// answer) are skipped.
fn closed_by_server(mut s: &TcpStream, deadline: Instant) -> bool {
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true, // reset
        }
    }
}

/// The soft limit of open files of this process (from /proc; the server child inherits it).
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[test]
fn idle_connections_and_slowloris_do_not_stop_the_server_from_answering_others() {
    let limit = open_files_limit().unwrap_or(1024);
    // The server needs one descriptor per connection plus its own (files, pipes, epoll): keep 200 spare.
    let idle = IDLE.min(limit.saturating_sub(SLOWLORIS + 200));
    if idle < IDLE {
        println!("RLIMIT_NOFILE is {limit}: opening {idle} idle connections instead of {IDLE}");
    }
    let dir = temp_dir();
    let server = BinaryServer::start(dir.path(), &[], &[]);
    let addr = server.addr;

    let idlers: Vec<TcpStream> = (0..idle).map(|_| connect(addr)).collect();
    let mut slow: Vec<TcpStream> = (0..SLOWLORIS)
        .map(|i| {
            let mut s = connect(addr);
            s.write_all(format!("PUT /kv/slow{i} HTTP/1.1\r\nHost: x\r\n").as_bytes()).unwrap();
            s
        })
        .collect();
    let opened = Instant::now();

    // Others are served quickly meanwhile, while the slowloris clients keep trickling headers.
    let mut latencies = Vec::new();
    for i in 0..40 {
        for (j, s) in slow.iter_mut().enumerate() {
            let _ = s.write_all(format!("X-Trickle-{i}: {j}\r\n").as_bytes());
        }
        let started = Instant::now();
        let put = format!("PUT /kv/polite{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(exchange(addr, put.as_bytes()).status, 201);
        let got = exchange(addr, format!("GET /kv/polite{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!((got.status, &got.body[..]), (200, &b"ok"[..]));
        latencies.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(25)); // pace the trickle: the slowloris clients stay busy
    }
    latencies.sort();
    let (median, max) = (latencies[latencies.len() / 2], latencies[latencies.len() - 1]);
    println!(
        "{idle} idle + {SLOWLORIS} slowloris connections: PUT+GET of another client took median {median:?}, max {max:?}"
    );
    assert!(max < QUICK, "a PUT+GET took {max:?} next to idle and slowloris connections");

    // The server sheds them once the client request timeout has passed (408, then close).
    let deadline = opened + CLIENT_REQUEST_TIMEOUT + Duration::from_secs(10);
    let slow_closed = slow.iter().filter(|s| closed_by_server(s, deadline)).count();
    let idle_closed = idlers.iter().take(50).filter(|s| closed_by_server(s, deadline)).count();
    println!(
        "closed by the server {:?} after opening: {slow_closed}/{SLOWLORIS} slowloris, {idle_closed}/50 idle sampled",
        opened.elapsed()
    );
    assert_eq!(slow_closed, SLOWLORIS, "slowloris connections must be dropped after the client request timeout");
    assert_eq!(idle_closed, 50, "idle connections that never send a request must be dropped");
    drop(idlers);
    assert_eq!(exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
}

#[test]
fn a_huge_header_gets_431() {
    let dir = temp_dir();
    let server = BinaryServer::start(dir.path(), &[], &[]);
    // Over shale's limit (JSON error from shale), and over actix's own 128 KiB head buffer (empty 431 from actix).
    for size in [64 << 10, 200 << 10] {
        let req =
            format!("PUT /kv/huge HTTP/1.1\r\nHost: x\r\nX-Huge: {}\r\nContent-Length: 1\r\n\r\nv", "a".repeat(size));
        let answer = exchange(server.addr, req.as_bytes());
        assert_eq!(answer.status, 431, "a {size}-byte header: {}", answer.head);
        if size < 128 << 10 {
            let json: serde_json::Value = serde_json::from_slice(&answer.body).expect("a JSON error body");
            assert_eq!(json["error"], "bad_request");
            assert!(json["message"].as_str().unwrap().contains(&MAX_HEADER_BYTES.to_string()), "{json}");
        }
    }
    // Many headers that add up: the same. A header just under the limit is fine.
    let many: String = (0..90).map(|i| format!("X-Many-{i}: {}\r\n", "b".repeat(400))).collect();
    let answer = exchange(server.addr, format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes());
    assert_eq!(answer.status, 431);
    let fits = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fits: {}\r\n\r\n", "c".repeat(MAX_HEADER_BYTES - 100));
    assert_eq!(exchange(server.addr, fits.as_bytes()).status, 200);
    let absent = exchange(server.addr, b"GET /kv/huge HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(absent.status, 404, "nothing was stored by the refused request");
}

/// HTTP/1.1 delimits a body by its Content-Length: bytes after it are the next request on the connection. So
/// `hello` is stored, and the extra bytes, not being a request line, get 400 and the connection is closed.
#[test]
fn a_body_longer_than_its_content_length_is_cut_and_the_rest_answered_400() {
    let dir = temp_dir();
    let server = BinaryServer::start(dir.path(), &[], &[]);
    let mut s = connect(server.addr);
    s.write_all(b"PUT /kv/extra HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello, and some more bytes\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let first = read_answer(&mut s, &mut buf).expect("an answer to the PUT");
    assert_eq!(first.status, 201, "{}", first.head);
    let second = read_answer(&mut s, &mut buf).expect("an answer to the extra bytes");
    assert_eq!(second.status, 400, "{}", second.head);
    assert!(closed_by_server(&s, Instant::now() + Duration::from_secs(5)), "the connection must be closed");
    let got = exchange(server.addr, b"GET /kv/extra HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((got.status, &got.body[..]), (200, &b"hello"[..]));
}

#[test]
fn a_content_length_over_the_limit_gets_413_before_the_body_is_sent() {
    let dir = temp_dir();
    let server = BinaryServer::start(dir.path(), &["--max-value-bytes", "1024"], &[]);
    for declared in [1025usize, 100 << 20, 1 << 40] {
        let mut s = connect(server.addr);
        let started = Instant::now();
        // The head only: the client waits for the verdict before sending a byte of the body.
        s.write_all(format!("PUT /kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n").as_bytes())
            .unwrap();
        let answer = read_answer(&mut s, &mut Vec::new()).expect("an answer without the body");
        assert_eq!(answer.status, 413, "Content-Length {declared}: {}", answer.head);
        assert!(started.elapsed() < QUICK, "the 413 took {:?}", started.elapsed());
        let json: serde_json::Value = serde_json::from_slice(&answer.body).expect("a JSON error body");
        assert_eq!(json["error"], "payload_too_large");
    }
    // A chunked body that grows past the limit: 413 as well, and nothing stored.
    let mut s = connect(server.addr);
    s.write_all(b"PUT /kv/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    for _ in 0..3 {
        let _ = s.write_all(format!("200\r\n{}\r\n", "z".repeat(512)).as_bytes());
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let answer = read_answer(&mut s, &mut Vec::new()).expect("an answer to the chunked PUT");
    assert_eq!(answer.status, 413, "{}", answer.head);
    assert_eq!(exchange(server.addr, b"GET /kv/big HTTP/1.1\r\nHost: x\r\n\r\n").status, 404);
}
