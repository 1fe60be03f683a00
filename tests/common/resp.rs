//! A minimal blocking RESP client for the end-to-end tests of the Redis listener (`tests/resp.rs`).
//!
//! It sends raw bytes (so tests can send anything: arrays, inline lines, broken frames) and reads one reply frame
//! at a time. Every read has a timeout: a server that never answers fails the test instead of hanging it. The
//! reply parser keeps RESP2 nil (`$-1`) and RESP3 null (`_`) apart, so a test can tell which protocol answered.
#![allow(dead_code)] // each test uses a different part of this module

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long one read may wait for bytes before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Deepest reply nesting the parser accepts (shale's replies nest two or three levels).
const MAX_DEPTH: usize = 8;

/// One reply frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    /// `+text`.
    Simple(String),
    /// `-text` (code first, without the `-`).
    Error(String),
    /// `:n`.
    Int(i64),
    /// `$len` + bytes.
    Bulk(Vec<u8>),
    /// RESP2 nil: `$-1` or `*-1`.
    Nil,
    /// RESP3 null: `_`.
    Null,
    /// `*n` + elements.
    Array(Vec<Resp>),
    /// RESP3 `%n` + key, value pairs.
    Map(Vec<(Resp, Resp)>),
    /// RESP3 `,` double, as its text.
    Double(String),
    /// RESP3 `#t` / `#f`.
    Bool(bool),
    /// RESP3 `(` big number, as its text.
    BigNumber(String),
    /// RESP3 `=len` + `fmt:` + text: the format and the text.
    Verbatim(String, Vec<u8>),
}

impl Resp {
    /// `+OK`.
    pub fn ok() -> Resp {
        Resp::Simple("OK".into())
    }

    /// A simple string.
    pub fn simple(s: &str) -> Resp {
        Resp::Simple(s.into())
    }

    /// A bulk string.
    pub fn bulk(s: impl AsRef<[u8]>) -> Resp {
        Resp::Bulk(s.as_ref().to_vec())
    }

    /// An error with this full text (code first).
    pub fn err(s: &str) -> Resp {
        Resp::Error(s.into())
    }

    /// The text of an error reply, if it is one.
    pub fn error_text(&self) -> Option<&str> {
        match self {
            Resp::Error(e) => Some(e),
            _ => None,
        }
    }

    /// The bytes of a bulk, simple or verbatim string.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Resp::Bulk(b) | Resp::Verbatim(_, b) => Some(b),
            Resp::Simple(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// A string reply as UTF-8 text (lossy); panics on other kinds.
    pub fn text(&self) -> String {
        match self.bytes() {
            Some(b) => String::from_utf8_lossy(b).into_owned(),
            None => panic!("expected a string reply, got {self:?}"),
        }
    }

    /// The elements of an array reply; panics on other kinds.
    pub fn array(&self) -> &[Resp] {
        match self {
            Resp::Array(items) => items,
            other => panic!("expected an array reply, got {other:?}"),
        }
    }
}

/// A RESP array of bulk strings: how clients send a command.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// [`encode`] for text arguments.
pub fn command(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode(&args)
}

/// Parses one frame at the start of `buf`: the frame and its length, `Ok(None)` when incomplete.
pub fn parse(buf: &[u8]) -> Result<Option<(Resp, usize)>, String> {
    parse_at(buf, 0, 0)
}

/// The line starting at `at` (without CRLF) and the offset after its CRLF.
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], at + end + 2))
}

fn number(text: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| format!("not a number in a reply header: {:?}", String::from_utf8_lossy(text)))
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Resp, usize)>, String> {
    if depth > MAX_DEPTH {
        return Err("reply nested too deeply".into());
    }
    let Some((head, next)) = line(buf, at) else { return Ok(None) };
    let Some((&kind, body)) = head.split_first() else { return Err("empty reply line".into()) };
    let text = || String::from_utf8_lossy(body).into_owned();
    let frame = match kind {
        b'+' => Resp::Simple(text()),
        b'-' => Resp::Error(text()),
        b':' => Resp::Int(number(body)?),
        b',' => Resp::Double(text()),
        b'(' => Resp::BigNumber(text()),
        b'_' if body.is_empty() => Resp::Null,
        b'#' => match body {
            b"t" => Resp::Bool(true),
            b"f" => Resp::Bool(false),
            _ => return Err(format!("bad boolean {:?}", text())),
        },
        b'$' | b'=' => {
            let len = number(body)?;
            if len == -1 && kind == b'$' {
                return Ok(Some((Resp::Nil, next)));
            }
            let len = usize::try_from(len).map_err(|_| format!("bad bulk length {len}"))?;
            let Some(data) = buf.get(next..next + len) else { return Ok(None) };
            match buf.get(next + len..next + len + 2) {
                None => return Ok(None),
                Some(b"\r\n") => {}
                Some(_) => return Err("a bulk string is not followed by CRLF".into()),
            }
            let end = next + len + 2;
            if kind == b'$' {
                return Ok(Some((Resp::Bulk(data.to_vec()), end)));
            }
            if data.len() < 4 || data[3] != b':' {
                return Err("a verbatim string without its format".into());
            }
            let format = String::from_utf8_lossy(&data[..3]).into_owned();
            return Ok(Some((Resp::Verbatim(format, data[4..].to_vec()), end)));
        }
        b'*' | b'%' => {
            let n = number(body)?;
            if n == -1 && kind == b'*' {
                return Ok(Some((Resp::Nil, next)));
            }
            let n = usize::try_from(n).map_err(|_| format!("bad aggregate length {n}"))?;
            let items = if kind == b'%' { n * 2 } else { n };
            let mut parsed = Vec::with_capacity(items.min(1 << 16));
            let mut pos = next;
            for _ in 0..items {
                match parse_at(buf, pos, depth + 1)? {
                    Some((item, end)) => {
                        parsed.push(item);
                        pos = end;
                    }
                    None => return Ok(None),
                }
            }
            let frame = if kind == b'*' {
                Resp::Array(parsed)
            } else {
                let mut pairs = Vec::with_capacity(n);
                let mut it = parsed.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                Resp::Map(pairs)
            };
            return Ok(Some((frame, pos)));
        }
        _ => return Err(format!("unknown reply type byte {:?} in {:?}", kind as char, String::from_utf8_lossy(head))),
    };
    Ok(Some((frame, next)))
}

/// A connection to a RESP server over any byte stream (plain TCP, or TLS in `tests/resp.rs`).
pub struct RespClient<S: Read + Write = TcpStream> {
    stream: S,
    /// Bytes received and not yet consumed, from `pos` on.
    buf: Vec<u8>,
    pos: usize,
}

impl RespClient<TcpStream> {
    /// Connects over TCP with [`READ_TIMEOUT`] on reads and writes.
    pub fn connect(addr: SocketAddr) -> RespClient<TcpStream> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connecting to the RESP port {addr}: {e}"));
        stream.set_read_timeout(Some(READ_TIMEOUT)).expect("setting the read timeout");
        stream.set_write_timeout(Some(READ_TIMEOUT)).expect("setting the write timeout");
        stream.set_nodelay(true).expect("setting TCP_NODELAY");
        RespClient::over(stream)
    }

    /// A second handle on the socket, to write a large pipeline from another thread while this one reads.
    pub fn writer(&self) -> TcpStream {
        self.stream.try_clone().expect("cloning the socket")
    }
}

impl<S: Read + Write> RespClient<S> {
    /// A client over an established stream (its timeouts are the caller's business).
    pub fn over(stream: S) -> RespClient<S> {
        RespClient { stream, buf: Vec::new(), pos: 0 }
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("writing to the RESP server");
        self.stream.flush().expect("flushing to the RESP server");
    }

    /// Sends one command as an array of bulk strings and reads its reply.
    pub fn cmd(&mut self, args: &[&str]) -> Resp {
        self.send(&command(args));
        self.read()
    }

    /// [`RespClient::cmd`] with binary arguments.
    pub fn cmd_bytes(&mut self, args: &[&[u8]]) -> Resp {
        self.send(&encode(args));
        self.read()
    }

    /// Reads more bytes; `Ok(0)` at end of stream. A timeout panics.
    fn fill(&mut self) -> std::io::Result<usize> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "no reply from the RESP server within {READ_TIMEOUT:?}; unconsumed bytes: {:?}",
                    String::from_utf8_lossy(&self.buf[self.pos..])
                )
            }
            Err(e) => Err(e),
        }
    }

    /// Reads one reply frame. Panics on a timeout, a closed connection or a malformed frame.
    pub fn read(&mut self) -> Resp {
        self.read_or_closed().expect("the server closed the connection before replying")
    }

    /// Reads one reply frame, or `None` when the server closed the connection (or reset it) between two frames.
    /// Panics on a timeout, a close in the middle of a frame, or a malformed frame.
    pub fn read_or_closed(&mut self) -> Option<Resp> {
        loop {
            match parse(&self.buf[self.pos..]) {
                Ok(Some((frame, used))) => {
                    self.pos += used;
                    return Some(frame);
                }
                Ok(None) => {}
                Err(e) => panic!("malformed reply ({e}): {:?}", String::from_utf8_lossy(&self.buf[self.pos..])),
            }
            let closed = match self.fill() {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => true,
                Err(e) => panic!("reading a reply: {e}"),
            };
            if closed {
                assert_eq!(self.pos, self.buf.len(), "the server closed the connection in the middle of a reply");
                return None;
            }
        }
    }

    /// Reads `n` replies in order.
    pub fn read_n(&mut self, n: usize) -> Vec<Resp> {
        (0..n).map(|_| self.read()).collect()
    }

    /// Reads exactly `expected.len()` bytes and checks they are `expected` (plain-text replies).
    pub fn expect_raw(&mut self, expected: &[u8]) {
        while self.buf.len() - self.pos < expected.len() {
            match self.fill() {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => panic!("reading a plain-text reply: {e}"),
            }
        }
        let have = &self.buf[self.pos..(self.pos + expected.len()).min(self.buf.len())];
        assert_eq!(
            String::from_utf8_lossy(have),
            String::from_utf8_lossy(expected),
            "plain-text reply (further bytes: {:?})",
            String::from_utf8_lossy(&self.buf[self.pos + have.len()..])
        );
        self.pos += expected.len();
    }

    /// Checks that the server closes the connection without sending anything more. A reset counts as closed.
    pub fn expect_closed(&mut self) {
        loop {
            assert!(
                self.pos == self.buf.len(),
                "expected the connection to close, but got more bytes: {:?}",
                String::from_utf8_lossy(&self.buf[self.pos..])
            );
            match self.fill() {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => return,
                Err(e) => panic!("reading while waiting for the close: {e}"),
            }
        }
    }

    /// The underlying stream.
    pub fn stream(&mut self) -> &mut S {
        &mut self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_reply_kind_and_waits_for_partial_ones() {
        let input: &[u8] = b"*7\r\n+OK\r\n-ERR x\r\n:-5\r\n$3\r\na\r\n\r\n$-1\r\n_\r\n%1\r\n$1\r\nk\r\n#t\r\n";
        let (frame, used) = parse(input).unwrap().unwrap();
        assert_eq!(used, input.len());
        assert_eq!(
            frame,
            Resp::Array(vec![
                Resp::ok(),
                Resp::err("ERR x"),
                Resp::Int(-5),
                Resp::bulk("a\r\n"),
                Resp::Nil,
                Resp::Null,
                Resp::Map(vec![(Resp::bulk("k"), Resp::Bool(true))]),
            ])
        );
        for cut in 0..input.len() {
            assert_eq!(parse(&input[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (v, _) = parse(b"=7\r\ntxt:a:b\r\n").unwrap().unwrap();
        assert_eq!(v, Resp::Verbatim("txt".into(), b"a:b".to_vec()));
        assert!(parse(b"$2\r\nabcd").is_err());
        assert!(parse(b"?x\r\n").is_err());
    }
}
