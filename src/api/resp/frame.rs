//! Reply frames and their RESP2 / RESP3 encoder.
//!
//! A [`Frame`] is built by the command code, never parsed from a client, so it nests at most a few levels; the
//! encoder still walks it with an explicit stack rather than recursion. The protocol version only changes nil
//! (`$-1` vs `_`), maps (flat array vs `%`) and verbatim strings (bulk vs `=`).
//!
//! Simple strings and errors are one line on the wire: CR and LF in their text are written as spaces (Redis does
//! the same for error texts), so a reply can never break the framing.
//!
//! The standard error texts are constructors here ([`Frame::wrong_arity`], [`Frame::unknown_command`], ...); each
//! was read off the wire from redis-server 7.0.15 (see the tests).

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

/// The protocol a connection speaks: RESP2 until `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proto {
    /// RESP2 (the default).
    #[default]
    Resp2,
    /// RESP3 (after `HELLO 3`).
    Resp3,
}

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `+text`. CR/LF in the text are sent as spaces.
    Simple(Cow<'static, str>),
    /// `-text`: the full text without the leading `-`, code first (`ERR syntax error`, `WRONGTYPE ...`). CR/LF
    /// in the text are sent as spaces.
    Error(Cow<'static, str>),
    /// `:n`.
    Integer(i64),
    /// `$len` + bytes.
    Bulk(Bytes),
    /// Nil: RESP2 `$-1`, RESP3 `_`.
    Null,
    /// `*n` + elements.
    Array(Vec<Frame>),
    /// RESP3 `%n` + key, value pairs; RESP2 a flat array of 2n elements.
    Map(Vec<(Frame, Frame)>),
    /// Text such as INFO: RESP3 `=len` + `txt:` + text; RESP2 a bulk string.
    Verbatim(String),
    /// Bytes written as they are, in both protocols: D-Boutique's plain-text replies (`OK\r\n`).
    Raw(Bytes),
}

impl Frame {
    /// `+OK`.
    pub fn ok() -> Frame {
        Frame::Simple(Cow::Borrowed("OK"))
    }

    /// A simple string.
    pub fn simple(text: impl Into<Cow<'static, str>>) -> Frame {
        Frame::Simple(text.into())
    }

    /// An error from its full text, code first: `Frame::error("ERR syntax error")`.
    pub fn error(text: impl Into<Cow<'static, str>>) -> Frame {
        Frame::Error(text.into())
    }

    /// A bulk string.
    pub fn bulk(data: impl Into<Bytes>) -> Frame {
        Frame::Bulk(data.into())
    }

    /// True for [`Frame::Error`].
    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error(_))
    }

    /// `-ERR Protocol error: <msg>`: the reply to a [`super::parse::ParseError::Protocol`], sent before closing.
    pub fn protocol_error(msg: &str) -> Frame {
        Frame::Error(format!("ERR Protocol error: {msg}").into())
    }

    /// `-ERR wrong number of arguments for '<name>' command`, the name lower-cased; for a subcommand pass
    /// `container|sub` (Redis: `'client|setname'`).
    pub fn wrong_arity(name: &str) -> Frame {
        Frame::Error(format!("ERR wrong number of arguments for '{}' command", name.to_ascii_lowercase()).into())
    }

    /// `-ERR unknown command 'FOO', with args beginning with: 'a' 'b' ` (note the trailing space), as Redis 7.0
    /// writes it: the name as sent, cut at 128 bytes; arguments are added while the list is under 128 bytes, each
    /// cut to the room left. Bytes that are not UTF-8 are shown as U+FFFD (Redis sends them raw).
    pub fn unknown_command(name: &[u8], args: &[Bytes]) -> Frame {
        const CAP: usize = 128;
        let mut list: Vec<u8> = Vec::new();
        for arg in args {
            if list.len() >= CAP {
                break;
            }
            let room = CAP - list.len();
            list.push(b'\'');
            list.extend_from_slice(&arg[..arg.len().min(room)]);
            list.extend_from_slice(b"' ");
        }
        let name = String::from_utf8_lossy(&name[..name.len().min(CAP)]);
        let list = String::from_utf8_lossy(&list);
        Frame::Error(format!("ERR unknown command '{name}', with args beginning with: {list}").into())
    }

    /// `-ERR unknown subcommand 'foo'. Try CLIENT HELP.`: the subcommand as sent (cut at 128 bytes), the
    /// container command upper-cased.
    pub fn unknown_subcommand(container: &[u8], sub: &[u8]) -> Frame {
        let sub = String::from_utf8_lossy(&sub[..sub.len().min(128)]);
        let container = String::from_utf8_lossy(container).to_ascii_uppercase();
        Frame::Error(format!("ERR unknown subcommand '{sub}'. Try {container} HELP.").into())
    }

    /// `-ERR syntax error`.
    pub fn syntax_error() -> Frame {
        Frame::Error(Cow::Borrowed("ERR syntax error"))
    }

    /// `-ERR value is not an integer or out of range` (argument or stored value not an `i64`).
    pub fn not_integer() -> Frame {
        Frame::Error(Cow::Borrowed("ERR value is not an integer or out of range"))
    }

    /// `-NOAUTH Authentication required.`
    pub fn noauth() -> Frame {
        Frame::Error(Cow::Borrowed("NOAUTH Authentication required."))
    }

    /// `-WRONGPASS invalid username-password pair or user is disabled.`
    pub fn wrongpass() -> Frame {
        Frame::Error(Cow::Borrowed("WRONGPASS invalid username-password pair or user is disabled."))
    }

    /// Appends the encoding of this frame in `proto` to `out`. Iterative: the depth of the frame does not use
    /// stack.
    pub fn encode(&self, proto: Proto, out: &mut BytesMut) {
        // Frames still to write, the next one last.
        let mut todo: Vec<&Frame> = Vec::new();
        let mut next = Some(self);
        while let Some(frame) = next {
            match frame {
                Frame::Simple(text) => put_line(out, b'+', text),
                Frame::Error(text) => put_line(out, b'-', text),
                Frame::Integer(n) => put_int(out, b':', *n),
                Frame::Bulk(data) => put_bulk(out, b'$', b"", data),
                Frame::Null => match proto {
                    Proto::Resp2 => out.put_slice(b"$-1\r\n"),
                    Proto::Resp3 => out.put_slice(b"_\r\n"),
                },
                Frame::Array(items) => {
                    put_len(out, b'*', items.len());
                    todo.extend(items.iter().rev());
                }
                Frame::Map(pairs) => {
                    match proto {
                        Proto::Resp2 => put_len(out, b'*', pairs.len().saturating_mul(2)),
                        Proto::Resp3 => put_len(out, b'%', pairs.len()),
                    }
                    for (key, value) in pairs.iter().rev() {
                        todo.push(value);
                        todo.push(key);
                    }
                }
                Frame::Verbatim(text) => match proto {
                    Proto::Resp2 => put_bulk(out, b'$', b"", text.as_bytes()),
                    Proto::Resp3 => put_bulk(out, b'=', b"txt:", text.as_bytes()),
                },
                Frame::Raw(data) => out.put_slice(data),
            }
            next = todo.pop();
        }
    }
}

/// `<kind><text>\r\n` with CR and LF in `text` written as spaces.
fn put_line(out: &mut BytesMut, kind: u8, text: &str) {
    out.reserve(text.len() + 3);
    out.put_u8(kind);
    let bytes = text.as_bytes();
    if bytes.iter().any(|&b| b == b'\r' || b == b'\n') {
        out.extend(bytes.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    } else {
        out.put_slice(bytes);
    }
    out.put_slice(b"\r\n");
}

/// `<kind><len of prefix + data>\r\n<prefix><data>\r\n`.
fn put_bulk(out: &mut BytesMut, kind: u8, prefix: &[u8], data: &[u8]) {
    let len = prefix.len() + data.len();
    out.reserve(len + 24);
    put_len(out, kind, len);
    out.put_slice(prefix);
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

fn put_len(out: &mut BytesMut, kind: u8, n: usize) {
    put_decimal(out, kind, false, n as u64);
}

fn put_int(out: &mut BytesMut, kind: u8, n: i64) {
    put_decimal(out, kind, n < 0, n.unsigned_abs());
}

/// `<kind>[-]<digits>\r\n` without going through `fmt`.
fn put_decimal(out: &mut BytesMut, kind: u8, negative: bool, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.reserve(24);
    out.put_u8(kind);
    if negative {
        out.put_u8(b'-');
    }
    out.put_slice(&digits[at..]);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    //! Texts marked "(redis)" were read off the wire from redis-server 7.0.15 on loopback (2026-11-21), as were
    //! the RESP3 shapes of nil, `%` maps and `=` verbatim INFO (after `HELLO 3`).
    use super::*;

    fn enc(frame: &Frame, proto: Proto) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame.encode(proto, &mut out);
        out.to_vec()
    }

    fn both(frame: &Frame) -> (Vec<u8>, Vec<u8>) {
        (enc(frame, Proto::Resp2), enc(frame, Proto::Resp3))
    }

    fn same(frame: &Frame, want: &[u8]) {
        assert_eq!(both(frame), (want.to_vec(), want.to_vec()), "{frame:?}");
    }

    #[test]
    fn scalars() {
        same(&Frame::ok(), b"+OK\r\n");
        same(&Frame::simple("PONG"), b"+PONG\r\n");
        same(&Frame::simple(String::from("string")), b"+string\r\n");
        same(&Frame::error("ERR syntax error"), b"-ERR syntax error\r\n");
        same(&Frame::Integer(0), b":0\r\n");
        same(&Frame::Integer(42), b":42\r\n");
        same(&Frame::Integer(-7), b":-7\r\n");
        same(&Frame::Integer(i64::MAX), b":9223372036854775807\r\n");
        same(&Frame::Integer(i64::MIN), b":-9223372036854775808\r\n");
        same(&Frame::bulk(&b"a\r\nb"[..]), b"$4\r\na\r\nb\r\n");
        same(&Frame::bulk(Bytes::new()), b"$0\r\n\r\n");
        same(&Frame::bulk(vec![0u8, 255]), b"$2\r\n\x00\xff\r\n");
        same(&Frame::Raw(Bytes::from_static(b"v\r\nOK\r\n")), b"v\r\nOK\r\n");
        same(&Frame::Raw(Bytes::new()), b"");
    }

    #[test]
    fn protocol_dependent_scalars() {
        assert_eq!(both(&Frame::Null), (b"$-1\r\n".to_vec(), b"_\r\n".to_vec()));
        let info = Frame::Verbatim("# Server\r\nredis_version:7.0.0\r\n".to_owned());
        assert_eq!(
            both(&info),
            (
                b"$31\r\n# Server\r\nredis_version:7.0.0\r\n\r\n".to_vec(),
                b"=35\r\ntxt:# Server\r\nredis_version:7.0.0\r\n\r\n".to_vec()
            )
        );
    }

    #[test]
    fn aggregates() {
        // MGET a nokey (redis, both protocols).
        let mget = Frame::Array(vec![Frame::bulk("1"), Frame::Null]);
        assert_eq!(both(&mget), (b"*2\r\n$1\r\n1\r\n$-1\r\n".to_vec(), b"*2\r\n$1\r\n1\r\n_\r\n".to_vec()));
        same(&Frame::Array(vec![]), b"*0\r\n");
        let map =
            Frame::Map(vec![(Frame::bulk("proto"), Frame::Integer(3)), (Frame::bulk("modules"), Frame::Array(vec![]))]);
        assert_eq!(
            both(&map),
            (
                b"*4\r\n$5\r\nproto\r\n:3\r\n$7\r\nmodules\r\n*0\r\n".to_vec(),
                b"%2\r\n$5\r\nproto\r\n:3\r\n$7\r\nmodules\r\n*0\r\n".to_vec()
            )
        );
        assert_eq!(both(&Frame::Map(vec![])), (b"*0\r\n".to_vec(), b"%0\r\n".to_vec()));
        // Nesting keeps order: [[1, [nil]], {k: v}, "x"].
        let nested = Frame::Array(vec![
            Frame::Array(vec![Frame::Integer(1), Frame::Array(vec![Frame::Null])]),
            Frame::Map(vec![(Frame::simple("k"), Frame::bulk("v"))]),
            Frame::bulk("x"),
        ]);
        assert_eq!(
            both(&nested),
            (
                b"*3\r\n*2\r\n:1\r\n*1\r\n$-1\r\n*2\r\n+k\r\n$1\r\nv\r\n$1\r\nx\r\n".to_vec(),
                b"*3\r\n*2\r\n:1\r\n*1\r\n_\r\n%1\r\n+k\r\n$1\r\nv\r\n$1\r\nx\r\n".to_vec()
            )
        );
    }

    #[test]
    fn encoding_appends() {
        let mut out = BytesMut::from(&b"+OK\r\n"[..]);
        Frame::Integer(1).encode(Proto::Resp2, &mut out);
        assert_eq!(&out[..], b"+OK\r\n:1\r\n");
    }

    #[test]
    fn line_texts_never_contain_cr_or_lf() {
        same(&Frame::error("ERR a\r\nb\nc\rd"), b"-ERR a  b c d\r\n");
        same(&Frame::simple("x\ny"), b"+x y\r\n");
        // (redis) `*1\r\n\r\n` -> "-ERR Protocol error: expected '$', got ' '".
        same(&Frame::protocol_error("expected '$', got '\r'"), b"-ERR Protocol error: expected '$', got ' '\r\n");
    }

    #[test]
    fn standard_error_texts_match_redis() {
        // Every expected string below is a redis-server 7.0.15 reply (redis).
        let cases: Vec<(Frame, String)> = [
            (Frame::protocol_error("invalid bulk length"), "ERR Protocol error: invalid bulk length"),
            (Frame::wrong_arity("GET"), "ERR wrong number of arguments for 'get' command"),
            (Frame::wrong_arity("client|setname"), "ERR wrong number of arguments for 'client|setname' command"),
            (Frame::syntax_error(), "ERR syntax error"),
            (Frame::not_integer(), "ERR value is not an integer or out of range"),
            (Frame::noauth(), "NOAUTH Authentication required."),
            (Frame::wrongpass(), "WRONGPASS invalid username-password pair or user is disabled."),
            (Frame::unknown_subcommand(b"client", b"foo"), "ERR unknown subcommand 'foo'. Try CLIENT HELP."),
            (Frame::unknown_subcommand(b"CONFIG", b"foo"), "ERR unknown subcommand 'foo'. Try CONFIG HELP."),
            (
                Frame::unknown_subcommand(b"CLIENT", &[b'x'; 200]),
                &format!("ERR unknown subcommand '{}'. Try CLIENT HELP.", "x".repeat(128)),
            ),
        ]
        .into_iter()
        .map(|(f, t): (Frame, &str)| (f, t.to_owned()))
        .collect();
        for (frame, want) in cases {
            assert_eq!(frame, Frame::Error(want.clone().into()));
            same(&frame, format!("-{want}\r\n").as_bytes());
        }
    }

    #[test]
    fn unknown_command_texts_match_redis() {
        let b = |s: &str| Bytes::from(s.to_owned());
        let unknown = |name: &[u8], args: &[Bytes]| match Frame::unknown_command(name, args) {
            Frame::Error(text) => text.into_owned(),
            other => panic!("not an error: {other:?}"),
        };
        // (redis) all of these.
        assert_eq!(unknown(b"FOO", &[b("a"), b("b")]), "ERR unknown command 'FOO', with args beginning with: 'a' 'b' ");
        assert_eq!(unknown(b"FOO", &[]), "ERR unknown command 'FOO', with args beginning with: ");
        assert_eq!(unknown(b"foo", &[b("A")]), "ERR unknown command 'foo', with args beginning with: 'A' ");
        let a200 = "a".repeat(200);
        assert_eq!(
            unknown(b"FOO", &[b(&a200), b("b")]),
            format!("ERR unknown command 'FOO', with args beginning with: '{}' ", "a".repeat(128))
        );
        assert_eq!(
            unknown(b"FOO", &[b(&"a".repeat(100)), b(&"b".repeat(100)), b("c")]),
            format!("ERR unknown command 'FOO', with args beginning with: '{}' '{}' ", "a".repeat(100), "b".repeat(25))
        );
        assert_eq!(
            unknown(b"FOO", &[b(&"a".repeat(126)), b("b"), b("c")]),
            format!("ERR unknown command 'FOO', with args beginning with: '{}' ", "a".repeat(126))
        );
        assert_eq!(
            unknown("F".repeat(200).as_bytes(), &[b("x")]),
            format!("ERR unknown command '{}', with args beginning with: 'x' ", "F".repeat(128))
        );
        // (redis) CR LF inside an argument come out as spaces.
        let frame = Frame::unknown_command(b"FOO", &[b("a\r\nb")]);
        same(&frame, b"-ERR unknown command 'FOO', with args beginning with: 'a  b' \r\n");
        // Not UTF-8: replaced (Redis would send the raw byte).
        assert_eq!(
            unknown(b"FOO", &[Bytes::from_static(b"\xc3\xa9\xff")]),
            "ERR unknown command 'FOO', with args beginning with: '\u{e9}\u{fffd}' "
        );
    }

    #[test]
    fn is_error_only_for_errors() {
        assert!(Frame::syntax_error().is_error());
        assert!(!Frame::ok().is_error());
        assert!(!Frame::Raw(Bytes::from_static(b"-ERR x\r\n")).is_error());
    }

    #[test]
    fn deep_frames_encode_without_recursion() {
        // Not something commands build, but the encoder must not depend on depth.
        let mut frame = Frame::Null;
        for _ in 0..10_000 {
            frame = Frame::Array(vec![frame]);
        }
        let worker = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut out = BytesMut::new();
                frame.encode(Proto::Resp3, &mut out);
                // Dropping a deeply nested Vec is recursive in std: leak it on purpose in this test.
                std::mem::forget(frame);
                out.len()
            })
            .expect("spawn test thread");
        assert_eq!(worker.join().expect("encoder thread must not crash"), 10_000 * 4 + 3);
    }
}
