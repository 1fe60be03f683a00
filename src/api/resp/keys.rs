//! Keyspace commands: DEL, EXISTS, TYPE, DBSIZE, KEYS, SCAN, FLUSHDB, FLUSHALL.
//!
//! Listings use the node's k-way merge of sorted per-shard ranges, so `SCAN` returns keys in byte order, each
//! key present for the whole iteration exactly once. A cursor is a decimal number below 2^53 naming the last key
//! returned (kept in [`Shared::cursors`](super::session::Shared)); a glob whose start is literal (`user:*`) scans
//! only that prefix's range, other globs filter pages (an empty page with a non-zero cursor is legal, as in Redis).

use bytes::Bytes;

use crate::command::{parse_i64_strict, Command, Reply, Space};
use crate::placement::ShardId;
use crate::try_frame;

use super::frame::Frame;
use super::plan::{check_key, error_frame, unexpected, Plan};
use super::session::{ScanCursor, Session};

/// Most keys `KEYS` answers; past it the client is pointed to `SCAN`.
pub const KEYS_CAP: usize = 10_000;
/// `SCAN`'s default and largest page size (`COUNT` is a hint in Redis; here it is the page size).
pub const SCAN_DEFAULT: usize = 10;
/// Largest `SCAN` page.
pub const SCAN_MAX: usize = 1000;

/// `DEL key...`: the number of keys removed.
pub fn del(session: &mut Session, args: &[Bytes]) -> Plan {
    for key in &args[1..] {
        try_frame!(check_key(session, key));
    }
    let cmds = args[1..]
        .iter()
        .map(|k| Command::Delete { space: Space::Kv, key: k.clone(), precondition: Default::default() })
        .collect();
    Plan::Ops(
        cmds,
        Box::new(|outs| {
            let mut removed = 0;
            for out in outs {
                match out {
                    Ok(Reply::Deleted) => removed += 1,
                    Err(crate::error::Error::NotFound(_)) => {}
                    Ok(other) => return unexpected(other),
                    Err(e) => return error_frame(&e),
                }
            }
            Frame::Integer(removed)
        }),
    )
}

/// `EXISTS key...`: how many of the keys exist (a key named twice counts twice).
pub fn exists(session: &mut Session, args: &[Bytes]) -> Plan {
    for key in &args[1..] {
        try_frame!(check_key(session, key));
    }
    let cmds = args[1..].iter().map(|k| Command::Read { space: Space::Kv, key: k.clone() }).collect();
    Plan::Ops(
        cmds,
        Box::new(|outs| {
            let mut n = 0;
            for out in outs {
                match out {
                    Ok(Reply::Value(rec)) => n += i64::from(rec.is_some()),
                    Ok(other) => return unexpected(other),
                    Err(e) => return error_frame(&e),
                }
            }
            Frame::Integer(n)
        }),
    )
}

/// `TYPE key`: `string` or `none` (every shale value is a string to Redis clients).
pub fn type_of(session: &mut Session, args: &[Bytes]) -> Plan {
    try_frame!(check_key(session, &args[1]));
    Plan::one(Command::Read { space: Space::Kv, key: args[1].clone() }, |out| match out {
        Ok(Reply::Value(Some(_))) => Frame::simple("string"),
        Ok(Reply::Value(None)) => Frame::simple("none"),
        Ok(other) => unexpected(other),
        Err(e) => error_frame(&e),
    })
}

/// `DBSIZE`: the number of `/kv` keys, from each shard's B-tree length (constant time, never a scan).
pub fn dbsize(session: &mut Session, _args: &[Bytes]) -> Plan {
    let node = session.shared.node.clone();
    let consistency = session.consistency;
    Plan::Task(Box::pin(async move {
        match node.count(Space::Kv, consistency).await {
            Ok(n) => Frame::Integer(n as i64),
            Err(e) => error_frame(&e),
        }
    }))
}

/// `KEYS pattern`: every matching key, up to [`KEYS_CAP`].
pub fn keys(session: &mut Session, args: &[Bytes]) -> Plan {
    let node = session.shared.node.clone();
    let pattern = args[1].clone();
    let consistency = session.consistency;
    Plan::Task(Box::pin(async move {
        let prefix = Bytes::copy_from_slice(literal_prefix(&pattern));
        let mut after = None;
        let mut found = Vec::new();
        loop {
            let (page, next) = match node.list(Space::Kv, prefix.clone(), after, SCAN_MAX, consistency).await {
                Ok(p) => p,
                Err(e) => return error_frame(&e),
            };
            found.extend(page.into_iter().filter(|k| glob_match(&pattern, k)).map(Frame::Bulk));
            if found.len() > KEYS_CAP {
                return Frame::error(format!(
                    "ERR more than {KEYS_CAP} keys match; use SCAN with MATCH and COUNT to iterate them"
                ));
            }
            match next {
                Some(n) => after = Some(n),
                None => return Frame::Array(found),
            }
        }
    }))
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`.
pub fn scan(session: &mut Session, args: &[Bytes]) -> Plan {
    let Some(cursor) = std::str::from_utf8(&args[1]).ok().and_then(|s| s.parse::<u64>().ok()) else {
        return Plan::Now(Frame::error("ERR invalid cursor"));
    };
    let mut pattern: Option<Bytes> = None;
    let mut count = SCAN_DEFAULT;
    let mut strings = true;
    let mut i = 2;
    while i < args.len() {
        let Some(value) = args.get(i + 1) else { return Plan::Now(Frame::syntax_error()) };
        match &args[i].to_ascii_uppercase()[..] {
            b"MATCH" => pattern = Some(value.clone()),
            b"COUNT" => match parse_i64_strict(value) {
                Some(n) if n >= 1 => count = (n as usize).min(SCAN_MAX),
                Some(_) => return Plan::Now(Frame::syntax_error()),
                None => return Plan::Now(Frame::not_integer()),
            },
            b"TYPE" => strings = value.eq_ignore_ascii_case(b"string"),
            _ => return Plan::Now(Frame::syntax_error()),
        }
        i += 2;
    }
    let after = match cursor {
        0 => None,
        id => match session.shared.cursor(id) {
            Some(c) => Some(c.after),
            None => return Plan::Now(Frame::error("ERR invalid cursor")),
        },
    };
    let shared = session.shared.clone();
    let consistency = session.consistency;
    Plan::Task(Box::pin(async move {
        let prefix = pattern.as_deref().map_or(&[][..], literal_prefix);
        let listed = shared.node.list(Space::Kv, Bytes::copy_from_slice(prefix), after, count, consistency).await;
        let (page, next) = match listed {
            Ok(p) => p,
            Err(e) => return error_frame(&e),
        };
        let next_cursor = next.map_or(0, |after| shared.save_cursor(ScanCursor { after }));
        let keys = page
            .into_iter()
            .filter(|k| strings && pattern.as_ref().is_none_or(|p| glob_match(p, k)))
            .map(Frame::Bulk)
            .collect();
        Frame::Array(vec![Frame::bulk(next_cursor.to_string()), Frame::Array(keys)])
    }))
}

/// `FLUSHDB [ASYNC|SYNC]`: removes every `/kv` key (only with `RESP_ALLOW_FLUSH=1`).
pub fn flushdb(session: &mut Session, args: &[Bytes]) -> Plan {
    flush(session, args, "flushdb", &[Space::Kv, Space::Bucket])
}

/// `FLUSHALL [ASYNC|SYNC]`: removes every key, document and counter (only with `RESP_ALLOW_FLUSH=1`).
pub fn flushall(session: &mut Session, args: &[Bytes]) -> Plan {
    flush(session, args, "flushall", &Space::ALL)
}

fn flush(session: &Session, args: &[Bytes], name: &'static str, spaces: &'static [Space]) -> Plan {
    match args.get(1).map(|a| a.to_ascii_uppercase()) {
        None => {}
        Some(m) if (m == b"ASYNC" || m == b"SYNC") && args.len() == 2 => {}
        Some(_) => return Plan::Now(Frame::syntax_error()),
    }
    if !session.shared.config.resp_allow_flush {
        return Plan::Now(Frame::error(format!(
            "ERR {} is disabled: it deletes every key; start shale with RESP_ALLOW_FLUSH=1 to allow it",
            name.to_ascii_uppercase()
        )));
    }
    let node = session.shared.node.clone();
    Plan::Task(Box::pin(async move {
        for shard in 0..node.shard_count() {
            for &space in spaces {
                if let Err(e) = node.dispatch_to(ShardId(shard), Command::Clear { space }).await {
                    return error_frame(&e);
                }
            }
        }
        Frame::ok()
    }))
}

/// The literal start of a glob: the bytes before its first special character.
pub fn literal_prefix(pattern: &[u8]) -> &[u8] {
    let end = pattern.iter().position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\')).unwrap_or(pattern.len());
    &pattern[..end]
}

/// Redis's glob (`stringmatchlen`): `*`, `?`, `[abc]`, `[^a-z]`, and `\x` for a literal `x`. Iterative: the
/// last `*` is remembered and retried one byte further on a mismatch, so matching is never exponential.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(1),
            Some(b'[') => match class_match(&pattern[p..], text[t]) {
                (true, len) => Some(len),
                (false, _) => None,
            },
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == text[t]).then_some(2),
            Some(&c) => (c == text[t]).then_some(1),
            None => None,
        };
        match step {
            Some(len) => {
                p += len;
                t += 1;
            }
            None => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&b| b == b'*')
}

/// Matches one byte against the class at the start of `pattern` (`[...]`): whether it matched and the class's
/// length in the pattern. An unterminated class runs to the end of the pattern, as in Redis.
fn class_match(pattern: &[u8], c: u8) -> (bool, usize) {
    let mut i = 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut hit = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            hit |= pattern[i + 1] == c;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (lo, hi) = (pattern[i].min(pattern[i + 2]), pattern[i].max(pattern[i + 2]));
            hit |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            hit |= pattern[i] == c;
            i += 1;
        }
    }
    let len = (i + 1).min(pattern.len());
    (hit != negate, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_redis() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "anything", true),
            ("user:*", "user:42", true),
            ("user:*", "use", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[a-b]llo", "hcllo", false),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("*a*b*c*", "xxaxxbxxcxx", true),
            ("*a*b*c*", "xxaxxcxxbxx", false),
            ("a*", "ba", false),
            ("**", "x", true),
        ];
        for &(p, t, want) in cases {
            assert_eq!(glob_match(p.as_bytes(), t.as_bytes()), want, "{p:?} vs {t:?}");
        }
        // Never exponential: a pathological pattern finishes at once.
        let p = "a*".repeat(30) + "b";
        assert!(!glob_match(p.as_bytes(), "a".repeat(60).as_bytes()));
    }

    #[test]
    fn literal_prefixes() {
        assert_eq!(literal_prefix(b"user:*"), b"user:");
        assert_eq!(literal_prefix(b"*x"), b"");
        assert_eq!(literal_prefix(b"ab?c"), b"ab");
        assert_eq!(literal_prefix(b"plain"), b"plain");
    }
}
