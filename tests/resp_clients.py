"""End-to-end tests of a RESP server with redis-py: shale's RESP listener, or redis-server 7.0.15 to prove the
tests themselves.

Run by ``scripts/resp-clients.sh`` (which makes the venv with pinned redis-py and pytest). Environment:

- ``RESP_HOST``, ``RESP_PORT``: the server (default 127.0.0.1:6380).
- ``SHALE_URL``: shale's HTTP base URL (``http://127.0.0.1:4000``). When set, the tests that check that HTTP and
  RESP see the same data run; without it they are skipped (as against real Redis).
- ``TARGET``: ``shale`` or ``redis``: whose expectations apply where the two differ on purpose (SET with an expiry,
  MULTI across shards, SELECT 1, D-Boutique verbs, read-only CONFIG values). Default: ``shale`` when ``SHALE_URL``
  is set, else ``redis``.
- ``SHALE_TOKEN``: a bearer token, sent as ``Authorization`` over HTTP and as the AUTH password over RESP.

Every test works on keys under its own random prefix and never flushes the database, so the server may hold other
data (DBSIZE is checked by difference). Every socket has a timeout, so no test can hang.
"""

import asyncio
import os
import socket
import urllib.error
import urllib.request
import uuid

import pytest
import redis
import redis.asyncio

HOST = os.environ.get("RESP_HOST", "127.0.0.1")
PORT = int(os.environ.get("RESP_PORT", "6380"))
SHALE_URL = os.environ.get("SHALE_URL", "").rstrip("/")
TARGET = os.environ.get("TARGET", "shale" if SHALE_URL else "redis")
TOKEN = os.environ.get("SHALE_TOKEN") or None
TIMEOUT = 10.0

assert TARGET in ("shale", "redis"), f"TARGET must be shale or redis, not {TARGET!r}"
ON_SHALE = TARGET == "shale"
shale_only = pytest.mark.skipif(not ON_SHALE, reason="a shale behaviour (TARGET=shale)")
needs_http = pytest.mark.skipif(not SHALE_URL, reason="SHALE_URL is not set")

NOT_AN_INTEGER = "value is not an integer or out of range"
OVERFLOW = "increment or decrement would overflow"
I64_MAX = 2**63 - 1
I64_MIN = -(2**63)


def client(protocol: int = 2) -> redis.Redis:
    """A redis-py client; bytes replies, so values compare exactly."""
    return redis.Redis(
        host=HOST, port=PORT, protocol=protocol, password=TOKEN, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
    )


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def r(request):
    """A client for each protocol version: RESP2, and RESP3 (redis-py sends HELLO 3 and fails if it errors)."""
    c = client(request.param)
    yield c
    c.close()


@pytest.fixture
def r2():
    c = client(2)
    yield c
    c.close()


@pytest.fixture
def ns() -> str:
    """A key prefix no other test (or earlier run) uses."""
    return f"t{uuid.uuid4().hex[:12]}:"


# ---- a raw connection, for exact wire bytes, inline commands and D-Boutique's plain-text replies ----


class Raw:
    """One TCP connection speaking bytes; reads whole RESP replies or plain lines."""

    def __init__(self):
        self.sock = socket.create_connection((HOST, PORT), timeout=TIMEOUT)
        self.file = self.sock.makefile("rb")
        if TOKEN:
            self.send(b"AUTH", TOKEN.encode())
            assert self.reply() == b"+OK\r\n"

    def close(self):
        self.file.close()
        self.sock.close()

    def write(self, data: bytes):
        self.sock.sendall(data)

    def send(self, *args: bytes):
        """Sends one command as an array of bulk strings."""
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.write(b"".join(out))

    def line(self) -> bytes:
        """One line with its CRLF; b'' at end of stream."""
        return self.file.readline()

    def reply(self) -> bytes:
        """The raw bytes of one whole RESP2/RESP3 reply (aggregates included)."""
        head = self.line()
        assert head.endswith(b"\r\n"), f"incomplete reply line {head!r}"
        kind, rest = head[:1], head[1:-2]
        if kind in b"+-:_,#(":
            return head
        if kind in b"$=!":
            n = int(rest)
            return head if n < 0 else head + self.file.read(n + 2)
        if kind in b"*~>%|":
            n = int(rest)
            count = 0 if n < 0 else n * (2 if kind in b"%|" else 1)
            return head + b"".join(self.reply() for _ in range(count))
        raise AssertionError(f"unknown reply type {head!r}")

    def call(self, *args: bytes) -> bytes:
        self.send(*args)
        return self.reply()

    def at_eof(self) -> bool:
        """True when the server closed the connection (nothing more to read)."""
        return self.file.read(1) == b""


@pytest.fixture
def raw():
    c = Raw()
    yield c
    c.close()


def b(s: str) -> bytes:
    return s.encode()


def text(v) -> str:
    """redis-py decodes some replies (CLIENT GETNAME, CONFIG GET) itself, depending on the protocol: compare as str."""
    return v.decode() if isinstance(v, bytes) else v


def text_dict(d: dict) -> dict:
    return {text(k): text(v) for k, v in d.items()}


# ---- HTTP (stdlib only) ----


def http(method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(SHALE_URL + path, data=body, method=method)
    if TOKEN:
        req.add_header("Authorization", f"Bearer {TOKEN}")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ---- connection, PING, ECHO, HELLO ----


def test_ping_echo(r):
    assert r.ping() is True
    assert r.echo("a b\r\nc") == b"a b\r\nc"
    with pytest.raises(redis.ResponseError, match=r"^wrong number of arguments for 'ping' command$"):
        r.execute_command("PING", "x", "y", "z")


def test_hello_resp2(r2):
    reply = r2.execute_command("HELLO", "2")
    assert isinstance(reply, list)
    fields = dict(zip(reply[0::2], reply[1::2]))
    assert {b"server", b"version", b"proto", b"id", b"mode", b"role", b"modules"} <= set(fields)
    assert fields[b"proto"] == 2


def test_hello_resp3():
    c = client(3)  # redis-py has already sent HELLO 3 on this connection
    try:
        reply = c.execute_command("HELLO", "3")
        assert isinstance(reply, dict), "HELLO 3 answers a map"
        assert {b"server", b"version", b"proto", b"id", b"mode", b"role", b"modules"} <= set(reply)
        assert reply[b"proto"] == 3
        assert c.get("missing-" + uuid.uuid4().hex) is None
    finally:
        c.close()


def test_hello_unsupported_version(raw):
    assert raw.call(b"HELLO", b"4") == b"-NOPROTO unsupported protocol version\r\n"
    assert raw.call(b"PING") == b"+PONG\r\n"


def test_nil_is_resp2_or_resp3_null(raw, ns):
    assert raw.call(b"GET", b(ns + "missing")) == b"$-1\r\n"
    assert raw.call(b"HELLO", b"3").startswith(b"%")
    assert raw.call(b"GET", b(ns + "missing")) == b"_\r\n"
    assert raw.call(b"HELLO", b"2").startswith(b"*")
    assert raw.call(b"GET", b(ns + "missing")) == b"$-1\r\n"


# ---- strings ----


def test_set_get_delete_exists(r, ns):
    k, k2, missing = ns + "k", ns + "k2", ns + "missing"
    assert r.set(k, b"v\x00\xff binary") is True
    assert r.get(k) == b"v\x00\xff binary"
    assert r.set(k, b"") is True
    assert r.get(k) == b""
    assert r.get(missing) is None
    r.set(k2, "x")
    assert r.exists(k) == 1
    assert r.exists(k, k, missing, k2) == 3, "EXISTS counts a key once per mention"
    assert r.delete(k, k2, missing) == 2
    assert r.delete(k) == 0
    assert r.exists(k, k2) == 0
    assert r.get(k) is None


def test_mget_mset(r, ns):
    keys = [f"{ns}{i}" for i in range(20)]  # spread over every shard
    assert r.mset({k: f"v{i}" for i, k in enumerate(keys)}) is True
    assert r.mget(keys + [ns + "missing"]) == [f"v{i}".encode() for i in range(20)] + [None]
    assert r.mget(ns + "missing") == [None]
    with pytest.raises(redis.ResponseError, match=r"^wrong number of arguments for 'mset' command$"):
        r.execute_command("MSET", keys[0], "a", keys[1])
    assert r.get(keys[0]) == b"v0", "a refused MSET wrote nothing"


def test_incr_decr(r, ns):
    k = ns + "n"
    assert r.incr(k) == 1  # redis-py sends INCRBY k 1
    assert r.execute_command("INCR", k) == 2
    assert r.incrby(k, 10) == 12
    assert r.decr(k) == 11
    assert r.execute_command("DECR", k) == 10
    assert r.decrby(k, 15) == -5
    assert r.get(k) == b"-5", "INCR stores the value as ASCII, GET returns it"
    r.set(k, "100")
    assert r.incr(k) == 101
    r.set(k, "17179869184")
    assert r.incrby(k, 17179869184) == 34359738368
    assert r.decrby(ns + "fresh", 3) == -3


@pytest.mark.parametrize("value", ["abc", " 1", "1 ", "+5", "05", "-0", "", "1.5", "9223372036854775808"])
def test_incr_rejects_non_integers(r, ns, value):
    """Integers are parsed as strictly as Redis's string2ll, for stored values..."""
    k = ns + "n"
    r.set(k, value)
    for call in (lambda: r.execute_command("INCR", k), lambda: r.incrby(k, 1), lambda: r.decrby(k, 1)):
        with pytest.raises(redis.ResponseError, match=rf"^{NOT_AN_INTEGER}$"):
            call()
    assert r.get(k) == value.encode(), "a failed INCR leaves the value as it was"


@pytest.mark.parametrize("arg", ["+5", "05", " 1", "", "x", "1e3", "9223372036854775808"])
def test_incrby_rejects_non_integer_arguments(r, ns, arg):
    """... and for arguments alike."""
    with pytest.raises(redis.ResponseError, match=rf"^{NOT_AN_INTEGER}$"):
        r.execute_command("INCRBY", ns + "n", arg)
    with pytest.raises(redis.ResponseError, match=rf"^{NOT_AN_INTEGER}$"):
        r.execute_command("DECRBY", ns + "n", arg)
    assert r.exists(ns + "n") == 0


def test_incr_overflow(r, ns):
    k = ns + "n"
    r.set(k, str(I64_MAX))
    with pytest.raises(redis.ResponseError, match=rf"^{OVERFLOW}$"):
        r.incr(k)
    with pytest.raises(redis.ResponseError, match=rf"^{OVERFLOW}$"):
        r.decrby(k, -1)
    assert r.get(k) == str(I64_MAX).encode()
    r.set(k, str(I64_MIN))
    with pytest.raises(redis.ResponseError, match=rf"^{OVERFLOW}$"):
        r.decr(k)
    with pytest.raises(redis.ResponseError, match=rf"^{OVERFLOW}$"):
        r.incrby(k, -1)
    r.set(k, "0")
    with pytest.raises(redis.ResponseError, match=r"^decrement would overflow$"):
        r.execute_command("DECRBY", k, str(I64_MIN))
    assert r.incrby(k, I64_MAX) == I64_MAX
    assert r.get(k) == str(I64_MAX).encode()


def test_error_texts_on_the_wire(raw, ns):
    assert raw.call(b"PING", b"hello") == b"$5\r\nhello\r\n"
    assert raw.call(b"GET") == b"-ERR wrong number of arguments for 'get' command\r\n"
    assert raw.call(b"FOO", b"a", b"b") == b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n"
    raw.call(b"SET", b(ns + "n"), b"x")
    assert raw.call(b"INCR", b(ns + "n")) == b"-ERR value is not an integer or out of range\r\n"
    assert raw.call(b"SET", b(ns + "k"), b"v", b"NX", b"XX") == b"-ERR syntax error\r\n"
    assert raw.call(b"SET", b(ns + "k"), b"v", b"BOGUS") == b"-ERR syntax error\r\n"
    assert raw.call(b"PING") == b"+PONG\r\n", "errors leave the connection usable"


def test_set_nx_xx_get(r, ns):
    k = ns + "k"
    assert r.set(k, "1", xx=True) is None, "XX on a missing key sets nothing"
    assert r.get(k) is None
    assert r.set(k, "1", nx=True) is True
    assert r.set(k, "2", nx=True) is None
    assert r.get(k) == b"1"
    assert r.set(k, "3", xx=True) is True
    assert r.get(k) == b"3"
    assert r.set(k, "4", get=True) == b"3", "SET ... GET answers the old value"
    assert r.get(k) == b"4"
    assert r.set(ns + "new", "x", get=True) is None
    assert r.get(ns + "new") == b"x"
    assert r.set(k, "5", xx=True, get=True) == b"4"
    assert r.set(ns + "none", "5", xx=True, get=True) is None
    assert r.exists(ns + "none") == 0
    assert r.set(k, "6", nx=True, get=True) == b"5", "NX GET on an existing key answers it and sets nothing"
    assert r.get(k) == b"5"
    with pytest.raises(redis.ResponseError, match=r"^syntax error$"):
        r.execute_command("SET", k, "v", "NX", "XX")
    assert r.get(k) == b"5"


@pytest.mark.parametrize(
    "option", [("EX", "10"), ("PX", "10000"), ("EXAT", "4102444800"), ("PXAT", "4102444800000")], ids=lambda o: o[0]
)
def test_set_with_expiry_option(r, ns, option):
    """shale has no TTL yet: an expiry option is an error, and the value is not written (never silently dropped).
    Redis sets the value with its expiry."""
    k = ns + "k"
    r.set(k, "old")
    if ON_SHALE:
        with pytest.raises(redis.ResponseError):
            r.execute_command("SET", k, "new", *option)
        assert r.get(k) == b"old"
    else:
        assert r.execute_command("SET", k, "new", *option) in (True, b"OK")
        assert r.get(k) == b"new"
        assert 0 < r.ttl(k) <= (10 if option[0] in ("EX", "PX") else 4102444800)


def test_type_and_dbsize(r, ns):
    keys = [f"{ns}{i}" for i in range(5)]
    before = r.dbsize()
    assert r.type(keys[0]) == b"none"
    for k in keys:
        r.set(k, "v")
    assert r.type(keys[0]) == b"string"
    assert r.dbsize() == before + 5
    r.set(keys[0], "overwrite")
    assert r.dbsize() == before + 5, "overwriting a key does not count it twice"
    r.delete(*keys)
    assert r.dbsize() == before


def test_keys_pattern(r, ns):
    mine = sorted(f"{ns}k{i}".encode() for i in range(12))
    for k in mine:
        r.set(k, "v")
    r.set(ns.rstrip(":") + "-other", "v")
    assert sorted(r.keys(ns + "*")) == mine
    assert sorted(r.keys(ns + "k1*")) == sorted(k for k in mine if k.startswith(b(ns + "k1")))
    assert r.keys(ns + "nothing*") == []


def test_scan_iter_returns_each_key_once(r, ns):
    """SCAN with a literal-prefix MATCH: every key under the prefix comes back, none from elsewhere. On shale each
    exactly once (its cursor names the last key returned); Redis only promises at least once."""
    mine = {f"{ns}{i:04d}".encode() for i in range(300)}
    with r.pipeline(transaction=False) as p:
        for k in mine:
            p.set(k, "v")
        for i in range(50):
            p.set(f"{ns.rstrip(':')}x{i}", "v")  # same leading characters, outside the MATCH prefix
        p.execute()
    seen = list(r.scan_iter(match=ns + "*", count=25))
    assert set(seen) == mine
    if ON_SHALE:
        assert len(seen) == len(mine), "a key present throughout comes back exactly once"


def test_scan_cursor_is_decimal(raw, ns):
    for i in range(30):
        raw.call(b"SET", b(f"{ns}{i}"), b"v")
    cursor, pages, found = b"0", 0, 0
    while True:
        reply = raw.call(b"SCAN", cursor, b"MATCH", b(ns + "*"), b"COUNT", b"100")
        lines = reply.split(b"\r\n")
        assert lines[0] == b"*2" and lines[1].startswith(b"$"), reply
        cursor = lines[2]
        assert cursor.isdigit() and int(cursor) < 2**53, f"cursor {cursor!r} must be a decimal below 2^53"
        found += int(lines[3][1:])
        pages += 1
        if cursor == b"0" or pages > 100_000:
            break
    assert cursor == b"0"
    assert found >= 30
    assert raw.call(b"SCAN", b"abc") == b"-ERR invalid cursor\r\n"


# ---- pipelines and transactions ----


def test_pipeline_read_your_writes(r, ns):
    """A pipeline without MULTI: SET k v; GET k in one write returns v (read-your-writes), every round."""
    for i in range(50):
        k, c = f"{ns}k{i}", f"{ns}c{i}"
        with r.pipeline(transaction=False) as p:
            p.set(k, f"v{i}").get(k).incr(c).incr(c).get(c).delete(k).get(k).exists(k, c)
            assert p.execute() == [True, f"v{i}".encode(), 1, 2, b"2", 1, None, 1]


def test_pipeline_transaction_with_hash_tag(r, ns):
    """redis-py's default pipeline() is MULTI ... EXEC; keys sharing a {tag} live on one shard, so it works there."""
    a, bb, c = f"{{{ns}u}}:a", f"{{{ns}u}}:b", f"{{{ns}u}}:c"
    with r.pipeline() as p:
        p.set(a, "1").set(bb, "2").incr(c).mget(a, bb, c).get(a)
        assert p.execute() == [True, True, 1, [b"1", b"2", b"1"], b"1"]
    assert r.mget(a, bb, c) == [b"1", b"2", b"1"]


def test_multi_across_shards(r2, ns):
    """On shale a transaction whose keys live on different shards is refused with -CROSSSLOT and writes nothing.
    32 untagged keys: with the default 4 shards they cannot all land on one. Redis (standalone) runs it."""
    keys = [f"{ns}{i}" for i in range(32)]
    p = r2.pipeline()
    for k in keys:
        p.set(k, "v")
    if ON_SHALE:
        with pytest.raises(redis.ResponseError, match="hash to the same slot"):
            p.execute()
        assert r2.exists(*keys) == 0, "a refused transaction writes nothing"
    else:
        assert p.execute() == [True] * len(keys)
    assert r2.ping() is True


def test_multi_exec_errors(raw, ns):
    k = b(ns + "k")
    assert raw.call(b"EXEC") == b"-ERR EXEC without MULTI\r\n"
    assert raw.call(b"DISCARD") == b"-ERR DISCARD without MULTI\r\n"
    assert raw.call(b"MULTI") == b"+OK\r\n"
    assert raw.call(b"MULTI") == b"-ERR MULTI calls can not be nested\r\n"
    assert raw.call(b"SET", k, b"1") == b"+QUEUED\r\n"
    assert raw.call(b"DISCARD") == b"+OK\r\n"
    assert raw.call(b"GET", k) == b"$-1\r\n", "DISCARD drops the queued commands"
    assert raw.call(b"MULTI") == b"+OK\r\n"
    assert raw.call(b"SET", k, b"1") == b"+QUEUED\r\n"
    assert raw.call(b"GET") == b"-ERR wrong number of arguments for 'get' command\r\n"
    assert raw.call(b"EXEC") == b"-EXECABORT Transaction discarded because of previous errors.\r\n"
    assert raw.call(b"GET", k) == b"$-1\r\n", "a queue-time error aborts the whole transaction"
    assert raw.call(b"MULTI") == b"+OK\r\n"
    assert raw.call(b"SET", k, b"x") == b"+QUEUED\r\n"
    assert raw.call(b"INCR", k) == b"+QUEUED\r\n"
    assert raw.call(b"GET", k) == b"+QUEUED\r\n"
    assert raw.call(b"EXEC") == (
        b"*3\r\n+OK\r\n-ERR value is not an integer or out of range\r\n$1\r\nx\r\n"
    ), "an execution error fails that command alone"


def test_async_pipelines(ns):
    """redis.asyncio: a pipeline without MULTI (read-your-writes) and a MULTI pipeline on one {tag}, RESP2 and 3."""

    async def run(protocol: int):
        c = redis.asyncio.Redis(host=HOST, port=PORT, protocol=protocol, password=TOKEN, socket_timeout=TIMEOUT)
        try:
            k = f"{ns}{protocol}"
            async with c.pipeline(transaction=False) as p:
                p.set(k, "a").get(k).incrby(k + "n", 5).get(k + "n")
                assert await p.execute() == [True, b"a", 5, b"5"]
            t = f"{{{ns}async{protocol}}}"
            async with c.pipeline(transaction=True) as p:
                p.set(t + "x", "1").incr(t + "x").get(t + "x")
                assert await p.execute() == [True, 2, b"2"]
            # Concurrent pipelines on one pool: each sees its own writes.
            async def one(i: int):
                async with c.pipeline(transaction=False) as p:
                    p.set(f"{k}:{i}", i).get(f"{k}:{i}")
                    return await p.execute()

            results = await asyncio.gather(*(one(i) for i in range(20)))
            assert results == [[True, str(i).encode()] for i in range(20)]
        finally:
            await c.aclose()

    asyncio.run(asyncio.wait_for(run(2), 60))
    asyncio.run(asyncio.wait_for(run(3), 60))


# ---- server and connection commands ----


def test_select(r2):
    assert r2.execute_command("SELECT", "0") is True
    with pytest.raises(redis.ResponseError, match=rf"^{NOT_AN_INTEGER}$"):
        r2.execute_command("SELECT", "zero")
    if ON_SHALE:
        with pytest.raises(redis.ResponseError, match=r"^DB index is out of range$"):
            r2.execute_command("SELECT", "1")


def test_client_name_and_id(r):
    assert isinstance(r.client_id(), int)
    assert r.client_getname() is None
    assert r.client_setname("resp-test") is True
    assert text(r.client_getname()) == "resp-test"
    with pytest.raises(
        redis.ResponseError, match=r"^Client names cannot contain spaces, newlines or special characters\.$"
    ):
        r.client_setname("two words")
    with pytest.raises(redis.ResponseError, match=r"^unknown subcommand 'FOO'\. Try CLIENT HELP\.$"):
        r.execute_command("CLIENT", "FOO")


def test_config_get(r):
    assert r.config_get("nonexistent-option-xyz") == {}
    appendonly = text_dict(r.config_get("appendonly"))
    assert set(appendonly) == {"appendonly"} and appendonly["appendonly"] in ("yes", "no")
    both = text_dict(r.config_get("save", "appendonly"))
    assert set(both) == {"save", "appendonly"}
    if ON_SHALE:
        # Read-only answers: durable like appendfsync always, one database.
        got = text_dict(r.config_get("*"))
        assert got["appendonly"] == "yes"
        assert got["appendfsync"] == "always"
        assert got["save"] == ""
        assert got["databases"] == "1"


def test_command_count_and_info(r2):
    assert r2.command_count() > 0
    conn = r2.connection_pool.get_connection()
    try:
        conn.send_command("COMMAND", "INFO", "get", "set", "no-such-command")
        info = conn.read_response()
    finally:
        r2.connection_pool.release(conn)
    assert info[0][:2] == [b"get", 2]
    assert info[1][:2] == [b"set", -3]
    assert info[2] is None


def test_info(r):
    info = r.info()
    assert "redis_version" in info
    if ON_SHALE:
        assert "shale_version" in info
    assert "redis_version" in r.info("server")


# ---- inline commands and the wire ----


def test_inline_commands(raw, ns):
    raw.write(b"PING\r\n")
    assert raw.reply() == b"+PONG\r\n"
    raw.write(b'SET "' + b(ns) + b'a b" "x\\x41y\\r\\n"\r\nGET "' + b(ns) + b'a b"\r\n')
    assert raw.reply() == b"+OK\r\n"
    assert raw.reply() == b"$5\r\nxAy\r\n\r\n"
    raw.write(b"ECHO 'it''s'\r\n")  # a closing quote must be followed by a space or the end
    assert raw.reply().startswith(b"-ERR Protocol error: unbalanced quotes")
    assert raw.at_eof(), "a protocol error closes the connection"


def test_pipelined_inline_and_array_commands(raw, ns):
    k = b(ns + "k")
    raw.write(b"SET " + k + b" xyzk\r\nGET " + k + b"\r\nPING\r\n*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k))
    assert [raw.reply() for _ in range(4)] == [b"+OK\r\n", b"$4\r\nxyzk\r\n", b"+PONG\r\n", b"$4\r\nxyzk\r\n"]


def test_command_split_at_every_byte(raw, ns):
    k = b(ns + "k")
    data = b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k, len(k), k)
    raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(data)):
        raw.write(data[i : i + 1])
    assert raw.reply() == b"+OK\r\n"
    assert raw.reply() == b"$5\r\nhello\r\n"


def test_quit_drops_the_rest_of_the_pipeline(raw):
    raw.write(b"PING\r\nQUIT\r\nPING\r\n")
    assert raw.reply() == b"+PONG\r\n"
    assert raw.reply() == b"+OK\r\n"
    assert raw.at_eof()


def test_protocol_errors_close_the_connection():
    for data, text in [
        (b"*3000000000\r\n", b"invalid multibulk length"),
        (b"*1\r\nfoo\r\n", b"expected '$', got 'f'"),
        (b"*2\r\n$3\r\nGET\r\n$-10\r\n", b"invalid bulk length"),
    ]:
        c = Raw()
        try:
            c.write(data)
            assert c.reply() == b"-ERR Protocol error: " + text + b"\r\n"
            assert c.at_eof()
        finally:
            c.close()


# ---- D-Boutique's verbs (shale only) ----


@shale_only
def test_dboutique_inline_session(raw, ns):
    """A telnet session of D-Boutique's verbs: plain-text replies; Redis inline commands still work alongside."""
    bucket = b(ns.rstrip(":"))

    def say(line: bytes) -> bytes:
        raw.write(line + b"\r\n")
        return raw.line()

    assert say(b"CREATE " + bucket) == b"OK\r\n"
    assert say(b"CREATE " + bucket) == b"OK\r\n", "CREATE is idempotent"
    assert say(b"PUT " + bucket + b" milk 3") == b"OK\r\n"
    assert say(b"GET " + bucket + b" milk") == b"3\r\n"
    assert raw.line() == b"OK\r\n"
    assert say(b"PUT " + bucket + b" milk 4") == b"OK\r\n"
    assert say(b"GET " + bucket + b" milk") == b"4\r\n"
    assert raw.line() == b"OK\r\n"
    assert say(b"DELETE " + bucket + b" milk") == b"OK\r\n"
    assert say(b"GET " + bucket + b" milk") == b"\r\n", "a missing key: an empty line, then OK"
    assert raw.line() == b"OK\r\n"
    assert say(b"GET " + bucket + b"-never-created milk") == b"NOT FOUND\r\n"
    # A D-Boutique-only verb in a shape D-Boutique does not know.
    assert say(b"PUT " + bucket + b" milk") == b"COMMAND NOT IMPLEMENTED\r\n"
    assert say(b"DELETE " + bucket) == b"COMMAND NOT IMPLEMENTED\r\n"
    # Inline commands that are not D-Boutique verbs keep Redis's inline semantics, on the same connection.
    assert say(b"PING") == b"+PONG\r\n"
    raw.write(b"FROB " + bucket + b" milk\r\n")
    assert raw.reply() == b"-ERR unknown command 'FROB', with args beginning with: '" + bucket + b"' 'milk' \r\n"
    raw.write(b"GET " + bucket + b"/gone\r\n")  # one argument: Redis GET of the key bucket/gone
    assert raw.reply() == b"$-1\r\n"


@shale_only
def test_dboutique_verbs_as_arrays_answer_resp(r2, ns):
    bucket = ns.rstrip(":")
    assert r2.execute_command("CREATE", bucket) in (True, b"OK")
    assert r2.execute_command("PUT", bucket, "k", "v 1") in (True, b"OK")
    assert r2.execute_command("GET", bucket, "k") == b"v 1"
    assert r2.get(f"{bucket}/k") == b"v 1", "PUT b k v writes the key b/k"
    assert r2.execute_command("DELETE", bucket, "k") in (True, b"OK", 1)
    assert r2.get(f"{bucket}/k") is None


# ---- HTTP and RESP see the same data (shale with SHALE_URL) ----


@needs_http
def test_http_put_then_resp_get(r2, raw, ns):
    bucket = ns.rstrip(":")
    assert http("PUT", f"/kv/{bucket}/k", b"from http")[0] in (200, 201, 204)
    assert r2.get(f"{bucket}/k") == b"from http"
    raw.write(b"CREATE " + b(bucket) + b"\r\n")
    assert raw.line() == b"OK\r\n"
    raw.write(b"GET " + b(bucket) + b" k\r\n")
    assert raw.line() == b"from http\r\n"
    assert raw.line() == b"OK\r\n"


@needs_http
def test_resp_writes_then_http_get(r2, raw, ns):
    bucket = ns.rstrip(":")
    assert r2.set(f"{bucket}/k", b"from resp \x00\xff") is True
    assert http("GET", f"/kv/{bucket}/k") == (200, b"from resp \x00\xff")
    assert r2.incr(f"{bucket}/n") == 1
    assert r2.incrby(f"{bucket}/n", 2) == 3
    assert http("GET", f"/kv/{bucket}/n") == (200, b"3")
    raw.write(b"CREATE " + b(bucket) + b"\r\n")
    assert raw.line() == b"OK\r\n"
    raw.write(b"PUT " + b(bucket) + b" d dboutique\r\n")
    assert raw.line() == b"OK\r\n"
    assert http("GET", f"/kv/{bucket}/d") == (200, b"dboutique")
    assert r2.delete(f"{bucket}/k") == 1
    assert http("GET", f"/kv/{bucket}/k")[0] == 404
    assert http("PUT", f"/kv/{bucket}/n", b"41")[0] in (200, 201, 204)
    assert r2.incr(f"{bucket}/n") == 42, "INCR works on a value written over HTTP"
