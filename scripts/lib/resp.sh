# shellcheck shell=bash
# Shell functions shared by the RESP test scripts (redis-tcl-suite.sh, resp-clients.sh). Source it, do not run it:
#
#   . "$(dirname "$0")/lib/resp.sh"
#   resp_init NAME         cd to the repo root, make $RESP_TMP, install the EXIT trap that stops what was started
#
# Servers started here (resp_start_redis, resp_start_shale) listen on loopback only, live in $RESP_TMP, and are
# stopped by their PID (SIGTERM, then SIGKILL after 30 s) when the script exits. Every wait is bounded.
#
# Environment read here:
#   SHALE_BIN   a shale binary to use instead of building target/debug/shale from this tree

RESP_TMP=""
RESP_PIDS=()

resp_log() { echo "[$RESP_NAME $(date +%H:%M:%S)] $*" >&2; }
resp_die() {
    resp_log "$*"
    exit 2
}

# shellcheck disable=SC2317  # called by the EXIT trap
resp_cleanup() {
    local pid
    for pid in "${RESP_PIDS[@]}"; do
        terminate "$pid"
    done
    if [[ -n "$RESP_TMP" && -d "$RESP_TMP" ]]; then rm -rf "$RESP_TMP"; fi
}

# resp_init NAME: common start of every script.
resp_init() {
    RESP_NAME=$1
    cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
    RESP_TMP=$(mktemp -d "${TMPDIR:-/tmp}/shale-$RESP_NAME.XXXXXX")
    trap resp_cleanup EXIT
    trap 'exit 130' INT TERM
}

# need, terminate: see lib/common.sh.
# shellcheck source=scripts/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# resp_free_port: a TCP port free on 127.0.0.1 right now.
resp_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# resp_call HOST PORT LINE: sends LINE as an inline command and prints the first line of the reply without its
# CR (nothing when the connection fails or no reply comes within 3 s).
resp_call() {
    # shellcheck disable=SC2016  # $0..$2 are the inner shell's arguments
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "%s\r\n" "$2" >&3
        IFS= read -r line <&3 && printf "%s\n" "$line"' "$1" "$2" "$3" 2>/dev/null | tr -d '\r' || true
}

# resp_wait HOST PORT SECONDS [PID]: waits until an inline PING answers +PONG; fails after SECONDS, or at once when
# PID (the server) has exited.
resp_wait() {
    local host=$1 port=$2 limit=$3 pid=${4:-} i
    for ((i = 0; i < limit * 10; i++)); do
        [[ $(resp_call "$host" "$port" PING) == "+PONG" ]] && return 0
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        sleep 0.1
    done
    return 1
}

# shellcheck disable=SC2034  # RESP_HOST and RESP_PORT are for the sourcing script
# resp_start_redis: starts the installed redis-server on a free loopback port, without persistence
# (--save '' --appendonly no), in its own dir under $RESP_TMP. Sets RESP_HOST and RESP_PORT.
resp_start_redis() {
    need redis-server redis-server || resp_die "redis-server is missing and could not be installed"
    local port dir pid
    port=$(resp_free_port)
    dir=$RESP_TMP/redis
    mkdir -p "$dir"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save '' --appendonly no --daemonize no \
        --logfile "$dir/redis.log" >/dev/null 2>&1 &
    pid=$!
    RESP_PIDS+=("$pid")
    resp_wait 127.0.0.1 "$port" 30 "$pid" || resp_die "redis-server did not answer PING: $(tail -5 "$dir/redis.log")"
    RESP_HOST=127.0.0.1
    RESP_PORT=$port
    resp_log "started $(redis-server --version | cut -d' ' -f1-3) as PID $pid on 127.0.0.1:$port"
}

# shellcheck disable=SC2034  # RESP_HOST, RESP_PORT and SHALE_URL are for the sourcing script
# resp_start_shale [NAME=VALUE...]: starts shale with its HTTP API on a free loopback port and its RESP listener
# on another one (--resp-port), a fresh data dir under $RESP_TMP, and the given extra environment. Builds
# target/debug/shale unless SHALE_BIN is set. Sets RESP_HOST, RESP_PORT and SHALE_URL. A shale without the RESP
# listener rejects --resp-port at once; that ends the script with a message instead of a wait.
resp_start_shale() {
    local bin=${SHALE_BIN:-} port dir pid addr="" i
    if [[ -z "$bin" ]]; then
        resp_log "building shale (debug)"
        cargo build --quiet --bin shale || resp_die "cargo build failed"
        bin=${CARGO_TARGET_DIR:-target}/debug/shale
    fi
    bin=$(realpath "$bin") || resp_die "no shale binary at $bin"
    port=$(resp_free_port)
    dir=$RESP_TMP/shale
    mkdir -p "$dir"
    : >"$dir/stdout"
    : >"$dir/stderr"
    # Run from the temp dir, so that nothing the server writes can land in the work tree.
    # The caller's shale settings do not leak in: defaults (4 shards, immediate durability) plus the given ones.
    (cd "$dir" && exec env -u AUTH_TOKEN -u AUTH_READ_TOKEN -u TLS_CERT -u TLS_KEY -u HOST -u PORT -u DATA_DIR \
        -u SHARD_LIMIT -u DURABILITY -u CACHE_BYTES -u MAX_VALUE_BYTES -u RESP_PORT -u RESP_ALLOW_FLUSH \
        RUST_LOG="${RUST_LOG:-warn}" "$@" "$bin" serve --host 127.0.0.1 --port 0 --resp-port "$port" \
        --data-dir "$dir/data" --backup-dir "$dir/backups" >>"$dir/stdout" 2>>"$dir/stderr") &
    pid=$!
    RESP_PIDS+=("$pid")
    for ((i = 0; i < 600; i++)); do
        addr=$(sed -n 's/^LISTENING //p' "$dir/stdout" | head -n1)
        [[ -n "$addr" ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z "$addr" ]]; then
        if grep -q -- "--resp-port" "$dir/stderr"; then
            resp_die "this shale build has no RESP listener (it rejects --resp-port: $(head -n1 "$dir/stderr"))"
        fi
        resp_die "shale did not print LISTENING within 60 s; its stderr: $(tail -n 20 "$dir/stderr")"
    fi
    resp_wait 127.0.0.1 "$port" 30 "$pid" ||
        resp_die "shale serves HTTP on $addr but its RESP port $port did not answer PING within 30 s"
    RESP_HOST=127.0.0.1
    RESP_PORT=$port
    SHALE_URL=http://$addr
    resp_log "started shale ($bin) as PID $pid: HTTP $SHALE_URL, RESP 127.0.0.1:$port"
}
