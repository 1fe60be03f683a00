#!/usr/bin/env bash
# Benchmarks shale's ExDaas-compatible /api with ExDaas's own load: ApacheBench, 50,000 POSTs, 500 connections,
# keep-alive. Builds release, starts shale (DURABILITY=immediate) on a temp dir, and measures:
#   1. POST /api with scripts/lib/exdaas-doc.json ("id": null): every request creates a new document (an id
#      allocation, a create-only write, an fsync shared by the batch);
#   2. the same body with a fixed "id": 1, as ExDaas's own bench posts: the first request writes, every later one
#      finds the same document in the cache and answers without touching the disk;
#   3. the ceiling server (examples/ceiling.rs, actix doing nothing) with the same body, when it exists: POST /api
#      (which echoes the body) if it has that route, otherwise PUT /kv/bench (same body, different route, labelled).
# Prints req/s of each and its ratio to ExDaas's published figure for its own bench (EXDAAS_RPS below). Every
# server it starts is stopped by PID; temp dirs are removed.
#
# Usage: scripts/bench-exdaas.sh            N=50000 C=500 by default; N=... C=... to change.
set -euo pipefail

cd "$(dirname "$0")/.."
N=${N:-50000}
C=${C:-500}
EXDAAS_RPS=12900
DATA=scripts/lib/exdaas-doc.json
START_TIMEOUT_S=60

if ! command -v ab >/dev/null; then
    echo "ab not found: installing apache2-utils" >&2
    apt-get install -y apache2-utils >/dev/null || { apt-get update >/dev/null && apt-get install -y apache2-utils >/dev/null; }
fi
# 500 client sockets plus as many server-side ones.
ulimit -n 4096 2>/dev/null || echo "warning: could not raise the open-file limit (now $(ulimit -n))" >&2

WORK=$(mktemp -d -t shale-bench-XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

HAVE_CEILING=0
if [[ -f examples/ceiling.rs ]]; then HAVE_CEILING=1; fi

echo "building release..." >&2
if ((HAVE_CEILING)); then
    cargo build --release --quiet --bin shale --example ceiling
else
    cargo build --release --quiet --bin shale
fi
TARGET=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
TARGET=${TARGET:-target}

# start NAME CMD... : runs CMD in the background (stdout to $WORK/NAME.out), waits for its LISTENING line, and
# sets ADDR. The PID goes to PIDS for the trap.
start() {
    local name=$1
    shift
    "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    local pid=$!
    for _ in $(seq $((START_TIMEOUT_S * 10))); do
        ADDR=$(sed -n 's/^LISTENING //p' "$WORK/$name.out" | head -n1)
        [[ -n $ADDR ]] && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$WORK/$name.err" >&2; echo "$name exited before listening" >&2; exit 1; }
        sleep 0.1
    done
    echo "$name printed no LISTENING line in ${START_TIMEOUT_S}s" >&2
    exit 1
}

wait_ready() {
    for _ in $(seq $((START_TIMEOUT_S * 10))); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$1/readyz") == 200 ]] && return 0
        sleep 0.1
    done
    echo "http://$1/readyz not 200 after ${START_TIMEOUT_S}s" >&2
    exit 1
}

stop_last() {
    local pid=${PIDS[-1]}
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset 'PIDS[-1]'
}

start_shale() {
    mkdir -p "$WORK/$1"
    start "$1" env -u AUTH_TOKEN -u AUTH_READ_TOKEN -u TLS_CERT -u TLS_KEY -u HOST \
        DURABILITY=immediate RUST_LOG=warn RESP_PORT=off "$TARGET/release/shale" --port 0 --data-dir "$WORK/$1"
    wait_ready "$ADDR"
}

# bench LABEL ab-args... : runs ab, prints a summary line, sets RPS.
bench() {
    local label=$1
    shift
    local log
    log="$WORK/ab-$(echo "$label" | tr -c 'a-zA-Z0-9\n' '_').log"
    ab -q -n "$N" -c "$C" -k "$@" >"$log" 2>&1 || { cat "$log" >&2; echo "ab failed for $label" >&2; exit 1; }
    RPS=$(sed -n 's/^Requests per second: *\([0-9.]*\).*/\1/p' "$log")
    local complete failed non2xx length keepalive p50 p99
    complete=$(sed -n 's/^Complete requests: *\([0-9]*\).*/\1/p' "$log")
    keepalive=$(sed -n 's/^Keep-Alive requests: *\([0-9]*\).*/\1/p' "$log")
    failed=$(sed -n 's/^Failed requests: *\([0-9]*\).*/\1/p' "$log")
    # ab counts a response whose length differs from the first one as failed ("Length"): ids of growing width do.
    length=$(sed -n 's/^ *(Connect:.*Length: \([0-9]*\).*/\1/p' "$log")
    non2xx=$(sed -n 's/^Non-2xx responses: *\([0-9]*\).*/\1/p' "$log")
    p50=$(awk '$1 == "50%" {print $2}' "$log")
    p99=$(awk '$1 == "99%" {print $2}' "$log")
    printf '%-56s %7.0f req/s  p50 %3s ms  p99 %4s ms\n' "$label" "$RPS" "$p50" "$p99"
    printf '    complete %s, keep-alive %s, non-2xx %s, failed %s (length differs from the first answer: %s)\n' \
        "$complete" "${keepalive:-0}" "${non2xx:-0}" "${failed:-0}" "${length:-0}"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "ab -n $N -c $C -k, body $(wc -c <"$DATA" | tr -d ' ') bytes ($DATA); $(nproc) cores" >&2
echo

# 1. New documents: "id": null.
start_shale shale-new
URL="http://$ADDR/api"
bench "shale POST /api, id null (new doc each request)" -p "$DATA" -T application/json "$URL"
NEW_RPS=$RPS
LAST=$(curl -s -X POST -H 'content-type: application/json' -d '{"id": null, "data": 0}' "$URL" \
    | sed -n 's/^{"id":\([0-9]*\),.*/\1/p')
echo "  documents created: the next id allocated afterwards is $LAST"
stop_last

# 2. The same document again and again: "id": 1.
FIXED="$WORK/bench.fixed.json"
sed 's/"id": *null/"id": 1/' "$DATA" >"$FIXED"
grep -q '"id": 1' "$FIXED" || { echo "could not make the fixed-id body from $DATA" >&2; exit 1; }
start_shale shale-fixed
bench "shale POST /api, id 1 (unchanged doc, no disk write)" -p "$FIXED" -T application/json "http://$ADDR/api"
FIXED_RPS=$RPS
stop_last

# 3. The ceiling.
CEIL_RPS=""
if ((HAVE_CEILING)); then
    start ceiling "$TARGET/release/examples/ceiling" --port 0
    if grep -q '"/api"' examples/ceiling.rs; then
        bench "ceiling POST /api (echoes the body; no parse, no store)" -p "$DATA" -T application/json "http://$ADDR/api"
        CEIL_LABEL="ceiling POST /api"
    else
        bench "ceiling PUT /kv/bench (same body; it has no POST /api)" -u "$DATA" -T application/json \
            "http://$ADDR/kv/bench"
        CEIL_LABEL="ceiling PUT /kv/bench (not the same route)"
    fi
    CEIL_RPS=$RPS
    stop_last
fi

echo
echo "ExDaas published: $EXDAAS_RPS req/s (its bench posts a fixed id)"
echo "shale, id null:  $(ratio "$NEW_RPS" "$EXDAAS_RPS") x ExDaas"
echo "shale, id 1:     $(ratio "$FIXED_RPS" "$EXDAAS_RPS") x ExDaas"
if [[ -n $CEIL_RPS ]]; then
    echo "shale / $CEIL_LABEL: id null $(ratio "$NEW_RPS" "$CEIL_RPS"), id 1 $(ratio "$FIXED_RPS" "$CEIL_RPS")"
else
    echo "ceiling ratio unavailable: no examples/ceiling.rs"
fi
