# shellcheck shell=bash
# Shell functions shared by the benchmark scripts (scripts/bench-*.sh). Source it, do not run it:
#
#   . "$(dirname "$0")/lib/bench.sh"
#   bench_init NAME        # cd to the repo root, make $TMP, install the EXIT trap that stops every server
#
# Servers started with `start`/`start_soft`/`start_plain` (and wrk_load's wrk) are stopped by PID (SIGTERM, then
# SIGKILL after 30 s) when the script exits, and $TMP (their data dirs) is removed. Every wait is bounded.
#
# Environment read here:
#   BENCH_SECONDS   length of each measured run (default 10)
#   BENCH_RUNS      runs per measurement; tables show medians (default 3)
#   SHALE_BIN       a shale binary to use instead of building target/release/shale from this tree
#   CEILING_BIN     the same for the ceiling (examples/ceiling.rs)
#   SHALE_BENCH_DIR where the temporary dir goes (default: $TMPDIR or /tmp)

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_RUNS=${BENCH_RUNS:-3}
PIDS=()
TMP=""

log() { echo "[$BENCH_NAME $(date +%H:%M:%S)] $*" >&2; }
die() {
    log "$*"
    exit 1
}

bench_cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid" TERM
    done
    if [[ -n "$TMP" && -d "$TMP" ]]; then
        rm -rf "$TMP"
    fi
}

# bench_init NAME: common start of every script.
bench_init() {
    BENCH_NAME=$1
    cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
    TMP=$(mktemp -d "${SHALE_BENCH_DIR:-${TMPDIR:-/tmp}}/shale-$BENCH_NAME.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    # 256+ client sockets, as many server-side ones.
    ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true
}

# need, terminate: see lib/common.sh.
# shellcheck source=scripts/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# build_bins shale|ceiling: sets SHALE_BIN (and CEILING_BIN with "ceiling"), building release from this tree
# unless they are set.
build_bins() {
    local want_ceiling=""
    [[ $1 == ceiling ]] && want_ceiling=1
    if [[ -n "${SHALE_BIN:-}" && (-z "$want_ceiling" || -n "${CEILING_BIN:-}") ]]; then
        log "using SHALE_BIN=$SHALE_BIN${want_ceiling:+ CEILING_BIN=$CEILING_BIN}"
        return 0
    fi
    log "building release from this tree"
    if [[ -n "$want_ceiling" ]]; then
        cargo build --release --quiet --bin shale --example ceiling || die "build failed"
    else
        cargo build --release --quiet --bin shale || die "build failed"
    fi
    local target=${CARGO_TARGET_DIR:-target}
    SHALE_BIN=${SHALE_BIN:-$target/release/shale}
    CEILING_BIN=${CEILING_BIN:-$target/release/examples/ceiling}
}

# describe_bin: which code SHALE_BIN is (a commit, and whether the tree had uncommitted changes to src/).
describe_bin() {
    local rev dirty=""
    rev=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
    if [[ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]]; then
        dirty=" (tree has uncommitted src changes)"
    fi
    if [[ -n "${SHALE_BIN_LABEL:-}" ]]; then
        echo "$SHALE_BIN_LABEL"
    elif [[ "$SHALE_BIN" == */target/release/shale || "$SHALE_BIN" == target/release/shale ]]; then
        echo "this tree at $rev$dirty"
    else
        echo "$SHALE_BIN"
    fi
}

# cpu_ticks PID: user + system CPU time of PID so far, in clock ticks (fields 14 and 15 of /proc/PID/stat, counted
# after the command name, which may hold spaces). CLK_TCK ticks make a second.
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
# shellcheck disable=SC2034  # for the sourcing scripts
CLK_TCK=$(getconf CLK_TCK)

machine() {
    echo "$(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# free_port: a TCP port free on 127.0.0.1 right now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# start_soft NAME CMD...: runs CMD in the background (stdout $TMP/NAME.out, stderr $TMP/NAME.err), waits (60 s at
# most) for its `LISTENING addr` line; sets ADDR and LAST_PID. Returns 1 when no such line came (CMD may still run).
start_soft() {
    local name=$1 i
    shift
    # Created here: the child opens its redirections only once it runs, which may be after the first poll.
    : >"$TMP/$name.out"
    : >"$TMP/$name.err"
    "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    for ((i = 0; i < 6000; i++)); do
        ADDR=$(sed -n 's/^LISTENING //p' "$TMP/$name.out" | head -n1)
        [[ -n "$ADDR" ]] && return 0
        kill -0 "$LAST_PID" 2>/dev/null || break
        sleep 0.01
    done
    return 1
}

# start NAME CMD...: start_soft, but exits (with CMD's stderr) when CMD prints no `LISTENING addr` line.
start() {
    start_soft "$@" && return 0
    log "$1 did not print LISTENING; its stderr:"
    tail -n 20 "$TMP/$1.err" >&2
    exit 1
}

# start_plain NAME CMD...: runs CMD in the background (output to $TMP/NAME.log); sets LAST_PID.
start_plain() {
    local name=$1
    shift
    "$@" >"$TMP/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# wait_http URL [SECONDS]: waits until URL answers 200 (default 60 s), or exits.
wait_http() {
    local url=$1 limit=${2:-60} i
    for ((i = 0; i < limit * 20; i++)); do
        if [[ $(curl -s -o /dev/null -w '%{http_code}' "$url") == 200 ]]; then return 0; fi
        sleep 0.05
    done
    die "$url not 200 after $limit s"
}

# stop_pid PID [SIGNAL]: sends SIGNAL (default TERM), waits up to 30 s, then SIGKILL; forgets the PID.
stop_pid() {
    local pid=$1 p keep=()
    terminate "$pid" "${2:-TERM}"
    for p in "${PIDS[@]}"; do
        [[ "$p" == "$pid" ]] || keep+=("$p")
    done
    PIDS=("${keep[@]}")
}

# median N...: the median of the arguments (mean of the middle two for an even count).
median() {
    printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
        if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "nan" && b != "nan") printf "%.2f", a / b; else print "-" }'; }
ms() { awk -v us="$1" 'BEGIN { if (us == "nan") print "-"; else printf "%.2f", us / 1000 }'; }

# shale_metric ADDR NAME [LABEL]: the sum of metric NAME from /metrics over its label sets (those containing the
# text LABEL, e.g. 'result="hit"', when given); 0 when absent.
shale_metric() {
    curl -fsS "http://$1/metrics" | awk -v m="$2" -v l="${3:-}" '($1 == m || index($1, m "{") == 1) && index($1, l) {
        s += $NF } END { printf "%.0f\n", s }'
}

# ---- wrk Lua scripts, written into $TMP by write_lua and write_etcd_lua ----

# lua_thread_ids FIRST: a setup() that gives each thread a global `id`, FIRST for the first thread, then +1 each.
lua_thread_ids() {
    cat <<EOF
local next_id = $1
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end
EOF
}

# lua_result_done: a done() that prints "RESULT rps p50_us p99_us status_errors io_errors" (what wrk_run reads).
lua_result_done() {
    cat <<'EOF'
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.1f %d %d %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
EOF
}

write_lua() {
    # load.lua: args GET prefix, PUT prefix, PUT percentage, key count, value bytes. Keys are uniform random in
    # 0..N-1 from a fixed per-thread seed. Prints "RESULT rps p50_us p99_us status_errors io_errors".
    {
        lua_thread_ids 1
        cat <<'EOF'
function init(args)
  get_prefix = args[1]
  put_prefix = args[2]
  put_pct = tonumber(args[3])
  n = tonumber(args[4])
  body = string.rep("v", tonumber(args[5] or 32))
  math.randomseed(7919 * id + 17)
end
function request()
  local k = math.random(0, n - 1)
  if put_pct > 0 and math.random(100) <= put_pct then
    return wrk.format("PUT", put_prefix .. k, nil, body)
  end
  return wrk.format("GET", get_prefix .. k, nil, nil)
end
EOF
        lua_result_done
    } >"$TMP/load.lua"

    # seqput.lua: args key prefix (path), key count N, value bytes, done file, thread count T. Thread t of T PUTs
    # keys t-1, t-1+T, ... once each; once every one of its PUTs has been answered it appends a line to the done
    # file and stops (wrk itself runs until its -d or a SIGINT, which shale_load sends once every thread is done).
    # Requests after a thread's share are GET /healthz, not counted: they answer 200, a PUT never does.
    # Prints "SEQPUT ok failed" summed over the threads.
    cat >"$TMP/seqput.lua" <<'EOF'
local threads = {}
local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  thread:set("ok", 0)
  thread:set("failed", 0)
  table.insert(threads, thread)
  next_id = next_id + 1
end
function init(args)
  prefix = args[1]
  n = tonumber(args[2])
  body = string.rep("v", tonumber(args[3]))
  done_file = args[4]
  step = tonumber(args[5])
  i = id
  mine = 0
  for k = id, n - 1, step do mine = mine + 1 end
  answered = 0
  ok = 0
  failed = 0
  first = true
end
function request()
  -- wrk builds one request per thread before the run to check the script, and never sends it.
  if first then
    first = false
    return wrk.format("GET", "/healthz")
  end
  if i < n then
    local k = i
    i = i + step
    return wrk.format("PUT", prefix .. k, nil, body)
  end
  return wrk.format("GET", "/healthz")
end
function response(status, headers, rbody)
  -- /healthz answers 200; a PUT answers 201 or 204 (or an error), never 200.
  if status == 200 then return end
  answered = answered + 1
  if status >= 200 and status < 300 then ok = ok + 1 else failed = failed + 1 end
  if answered == mine then
    wrk.thread:set("ok", ok)
    wrk.thread:set("failed", failed)
    local f = io.open(done_file, "a")
    f:write("done\n")
    f:close()
    wrk.thread:stop()
  end
end
function done(summary, latency, requests)
  local o, f = 0, 0
  for _, t in ipairs(threads) do o = o + t:get("ok"); f = f + t:get("failed") end
  io.write(string.format("SEQPUT %d %d\n", o, f))
end
EOF
}

# wrk_run SCRIPT THREADS CONNS SECONDS URL ARGS...: runs wrk with a Lua script from $TMP; prints its RESULT line
# ("rps p50_us p99_us status_errors io_errors"), or exits when wrk gives none.
wrk_run() {
    local script=$1 t=$2 c=$3 s=$4 url=$5 out line
    shift 5
    out=$(timeout $((s + 30)) wrk -t"$t" -c"$c" -d"$s"s --timeout 5s -s "$TMP/$script" "$url" -- "$@" 2>&1) || true
    line=$(sed -n 's/^RESULT //p' <<<"$out")
    [[ -n "$line" ]] || die "wrk gave no result for $url: $out"
    echo "$line"
}

# wrk_load NAME CONNS SECONDS URL ARGS...: starts wrk -t2 -cCONNS with $TMP/NAME.lua against URL for at most SECONDS
# (output in $TMP/NAME.out; script args: ARGS, then the done file $TMP/NAME.done and the thread count 2) and waits
# until both threads have written their line to the done file, or wrk has ended, or SECONDS have passed. Sets
# WRK_PID; wrk runs on until the caller stops it with `stop_pid "$WRK_PID" INT` (it prints its summary then).
wrk_load() {
    local name=$1 conns=$2 s=$3 url=$4 i
    shift 4
    : >"$TMP/$name.done"
    wrk -t2 -c"$conns" -d"$s"s --timeout 10s -s "$TMP/$name.lua" "$url" -- \
        "$@" "$TMP/$name.done" 2 >"$TMP/$name.out" 2>&1 &
    WRK_PID=$!
    PIDS+=("$WRK_PID")
    for ((i = 0; i < s * 10; i++)); do
        (($(wc -l <"$TMP/$name.done") >= 2)) && break
        kill -0 "$WRK_PID" 2>/dev/null || break
        sleep 0.1
    done
}

# shale_load ADDR N VALUE_BYTES [CONNS]: PUTs /kv/k0..k{N-1} (VALUE_BYTES each) with wrk -t2, in rounds (at most
# 5, 300 s each) until a round stored every key. Logs each round's rate.
shale_load() {
    local addr=$1 n=$2 bytes=$3 conns=${4:-256} round ok failed t0 t1
    for ((round = 1; round <= 5; round++)); do
        t0=$(date +%s%N)
        wrk_load seqput "$conns" 300 "http://$addr" /kv/k "$n" "$bytes"
        t1=$(date +%s%N)
        stop_pid "$WRK_PID" INT
        read -r ok failed <<<"$(sed -n 's/^SEQPUT //p' "$TMP/seqput.out")"
        log "load round $round: ${ok:-?} of $n PUTs ok, ${failed:-?} failed, $(awk -v n="${ok:-0}" -v ns=$((t1 - t0)) \
            'BEGIN { printf "%.1f s, %.0f PUT/s", ns / 1e9, n / (ns / 1e9) }')"
        if [[ "${ok:-0}" == "$n" && "${failed:-1}" == 0 ]]; then return 0; fi
    done
    die "could not load $n keys: $(cat "$TMP/seqput.out")"
}

# ---- etcd (etcd-server from apt), driven through its JSON gateway -----------------------------------------------

# etcd_check: sets HAVE_ETCD (1: measure etcd, installing etcd-server when etcd is missing; 0: not) and ETCD_NOTE
# (why not, for the table). NO_ETCD=1 skips etcd.
# shellcheck disable=SC2034  # for the sourcing scripts
etcd_check() {
    HAVE_ETCD=1
    ETCD_NOTE=""
    if [[ -n "${NO_ETCD:-}" ]]; then
        HAVE_ETCD=0
        ETCD_NOTE="etcd skipped (NO_ETCD set)"
    elif ! need etcd etcd-server; then
        HAVE_ETCD=0
        ETCD_NOTE="etcd not measured: apt-get install etcd-server failed here"
        log "$ETCD_NOTE"
    fi
}

# lua_b64: b64(s), the base64 of the string s (the gateway takes keys and values in base64).
lua_b64() {
    cat <<'EOF'
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  local out = {}
  for p = 1, #s, 3 do
    local a, b, c = s:byte(p, p + 2)
    local v = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1, c2, c3, c4 = math.floor(v / 262144) % 64, math.floor(v / 4096) % 64, math.floor(v / 64) % 64, v % 64
    out[#out + 1] = alphabet:sub(c1 + 1, c1 + 1) .. alphabet:sub(c2 + 1, c2 + 1) ..
      (b and alphabet:sub(c3 + 1, c3 + 1) or "=") .. (c and alphabet:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end
EOF
}

write_etcd_lua() {
    # etcd.lua: args mode (put | get: a linearizable range | sget: a serializable range), key count, value bytes:
    # random keys k0..k{N-1} from load.lua's per-thread seeds; load.lua's RESULT line.
    {
        lua_b64
        lua_thread_ids 1
        cat <<'EOF'
function init(args)
  mode = args[1]
  n = tonumber(args[2])
  value = b64(string.rep("v", tonumber(args[3])))
  math.randomseed(7919 * id + 17)
  headers = { ["Content-Type"] = "application/json" }
end
function request()
  local k = b64("k" .. math.random(0, n - 1))
  if mode == "put" then
    return wrk.format("POST", "/v3/kv/put", headers, '{"key":"' .. k .. '","value":"' .. value .. '"}')
  elseif mode == "sget" then
    return wrk.format("POST", "/v3/kv/range", headers, '{"key":"' .. k .. '","serializable":true}')
  end
  return wrk.format("POST", "/v3/kv/range", headers, '{"key":"' .. k .. '"}')
end
EOF
        lua_result_done
    } >"$TMP/etcd.lua"

    # etcdload.lua: args key count, value bytes, done file, threads: thread t PUTs k(t-1), k(t-1+T), ... once each,
    # then writes a line to the done file and repeats its last key until stopped (SIGINT from etcd_load).
    {
        lua_b64
        lua_thread_ids 0
        cat <<'EOF'
function init(args)
  n = tonumber(args[1])
  value = b64(string.rep("v", tonumber(args[2])))
  done_file = args[3]
  step = tonumber(args[4])
  i = id
  last = id
  headers = { ["Content-Type"] = "application/json" }
  first = true
end
function request()
  if first then
    first = false
    return wrk.format("POST", "/v3/kv/range", headers, '{"key":"' .. b64("k0") .. '"}')
  end
  if i < n then
    last = i
    i = i + step
    if i >= n then
      local f = io.open(done_file, "a")
      f:write("done\n")
      f:close()
    end
  end
  return wrk.format("POST", "/v3/kv/put", headers, '{"key":"' .. b64("k" .. last) .. '","value":"' .. value .. '"}')
end
EOF
    } >"$TMP/etcdload.lua"
}

# etcd_count ADDR: how many keys of the form k... etcd at ADDR holds (a count_only range over [k, l)).
etcd_count() {
    curl -fsS --max-time 10 -X POST -H 'Content-Type: application/json' "http://$1/v3/kv/range" \
        -d "{\"key\":\"$(printf k | base64)\",\"range_end\":\"$(printf l | base64)\",\"count_only\":true}" |
        sed -n 's/.*"count":"\([0-9]*\)".*/\1/p'
}

# etcd_load ADDR N VALUE_BYTES NAME: PUTs k0..k{N-1} (VALUE_BYTES each) into etcd at ADDR (NAME in the log) with
# etcdload.lua, wrk -t2 -c256, in rounds (at most 3, 600 s each) until etcd counts N keys; exits otherwise.
# Needs write_etcd_lua.
etcd_load() {
    local addr=$1 n=$2 bytes=$3 name=$4 round got t0
    for ((round = 1; round <= 3; round++)); do
        log "preloading $n keys into $name, round $round"
        t0=$(date +%s)
        wrk_load etcdload 256 600 "http://$addr" "$n" "$bytes"
        # The last PUTs are still on their way when a thread writes its line.
        sleep 1
        stop_pid "$WRK_PID" INT
        got=$(etcd_count "$addr" || true)
        log "etcd has ${got:-?} keys after $(($(date +%s) - t0)) s"
        [[ "${got:-0}" == "$n" ]] && return 0
    done
    die "could not preload etcd"
}
