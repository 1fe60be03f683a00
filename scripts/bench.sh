#!/usr/bin/env bash
# HTTP benchmark of shale against a do-nothing actix-web "ceiling" (examples/ceiling.rs), with wrk.
#
# Usage: scripts/bench.sh
# Environment:
#   BENCH_SECONDS     length of each measured wrk run (default 10)
#   BENCH_RUNS        runs per measurement; the table shows medians (default 3)
#   BENCH_KEYS        keys k0..k{N-1} of 32 bytes preloaded into shale and the ceiling's moka cache (default 100000)
#   DURABILITY        shale's durability, immediate | eventual (default immediate)
#   SHALE_BENCH_DIR   where the temporary data dir goes (default: $TMPDIR or /tmp)
#   BENCH_EXDAAS      1 (default) also runs scripts/bench-exdaas.sh (ExDaas's ab load on POST /api) at the end; 0 skips
#
# Loads (each at -t2 -c256 and at -t1 -c50, random keys from a fixed per-thread seed):
#   GET  cached GET of preloaded keys; ceiling: /kvm (moka lookup) and /kv (fixed body)
#   PUT  PUT of a 32-byte value to a preloaded key (durable under DURABILITY=immediate); ceiling: read body, 204
#   MIX  90 % GET / 10 % PUT; ceiling: /kvm GET and /kv PUT
# shale and the ceiling run side by side (both idle when not measured) and are measured alternately, so a
# background load disturbs both alike. Ratios compare medians: GET and MIX against the ceiling's moka GET,
# PUT against the ceiling's PUT. Besides req/s, the table shows the server's CPU time per request (user + system
# time of the server process during the run, from /proc, divided by the requests wrk completed): on a machine
# shared with other work, or where wrk itself saturates the cores, this is the steadier measure of cost.
set -euo pipefail

cd "$(dirname "$0")/.."
BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_KEYS=${BENCH_KEYS:-100000}
export DURABILITY=${DURABILITY:-immediate}
TARGET_DIR=${CARGO_TARGET_DIR:-target}

# need, terminate
# shellcheck source=scripts/lib/common.sh
. scripts/lib/common.sh

PIDS=()
TMP=""
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        terminate "$pid"
    done
    if [[ -n "$TMP" ]]; then
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[bench] $*" >&2; }

need wrk wrk || { log "wrk is needed and could not be installed"; exit 1; }

log "building shale and the ceiling (release)"
cargo build --release --quiet --bin shale --example ceiling
SHALE_BIN=$TARGET_DIR/release/shale
CEILING_BIN=$TARGET_DIR/release/examples/ceiling

TMP=$(mktemp -d "${SHALE_BENCH_DIR:-${TMPDIR:-/tmp}}/shale-bench.XXXXXX")

# start NAME CMD...: starts a server, waits (30 s at most) for its `LISTENING addr` line; sets ADDR.
start() {
    local name=$1 i
    shift
    "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    PIDS+=($!)
    for ((i = 0; i < 300; i++)); do
        ADDR=$(sed -n 's/^LISTENING //p' "$TMP/$name.out" | head -n1)
        if [[ -n "$ADDR" ]]; then
            return 0
        fi
        if ! kill -0 "${PIDS[-1]}" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    log "$name did not start; its stderr:"
    cat "$TMP/$name.err" >&2
    exit 1
}

# ---- Lua scripts for wrk ----

cat >"$TMP/preload.lua" <<'EOF'
-- args: N, start. One thread PUTs k{start}..k{N-1}, then k0..k{N-1} over and over until the end of the run.
local i
function init(args)
  n = tonumber(args[1])
  -- Begin one key early: wrk builds one request to check the script and never sends it.
  i = math.max(tonumber(args[2]) - 1, 0)
  body = string.rep("v", 32)
end
function request()
  if i >= n then i = 0 end
  local k = i
  i = i + 1
  return wrk.format("PUT", "/kv/k" .. k, nil, body)
end
EOF

cat >"$TMP/load.lua" <<'EOF'
-- args: GET path prefix, PUT path prefix, PUT percentage, key count. Keys are random in k0..k{N-1}.
local next_id = 1
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end
function init(args)
  get_prefix = args[1]
  put_prefix = args[2]
  put_pct = tonumber(args[3])
  n = tonumber(args[4])
  math.randomseed(7919 * id + 17)
  body = string.rep("v", 32)
end
function request()
  local k = math.random(0, n - 1)
  if put_pct > 0 and math.random(100) <= put_pct then
    return wrk.format("PUT", put_prefix .. k, nil, body)
  end
  return wrk.format("GET", get_prefix .. k, nil, nil)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.1f %d %d %d %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout,
    summary.requests))
end
EOF

# ---- servers ----

log "starting shale (DURABILITY=$DURABILITY) on $TMP/data"
start shale env RESP_PORT=off "$SHALE_BIN" serve --port 0 --data-dir "$TMP/data"
SHALE=$ADDR
SHALE_PID=${PIDS[-1]}
for ((i = 0; ; i++)); do
    if curl -fs -o /dev/null "http://$SHALE/readyz"; then break; fi
    if ((i >= 600)); then
        log "shale not ready after 60 s; its stderr:"
        tail -n 20 "$TMP/shale.err" >&2
        exit 1
    fi
    sleep 0.1
done

log "starting the ceiling"
start ceiling "$CEILING_BIN" --port 0 --keys "$BENCH_KEYS"
CEILING=$ADDR
CEILING_PID=${PIDS[-1]}
log "shale at $SHALE, ceiling at $CEILING"

# list_keys: every key of shale's /kv, one a line, sorted (pages of 10,000 through GET /kv?after=).
list_keys() {
    local after="" page p
    for ((p = 0; p <= BENCH_KEYS / 10000 + 1; p++)); do
        page=$(curl -fsS "http://$SHALE/kv?limit=10000${after:+&after=$after}")
        grep -o '"[^"]*"' <<<"${page%%'"next"'*}" | sed '1d; s/"//g' || true
        after=$(sed -n 's/.*"next":"\([^"]*\)".*/\1/p' <<<"$page")
        [[ -n "$after" ]] || break
    done | LC_ALL=C sort
}

log "preloading $BENCH_KEYS keys into shale"
seq 0 $((BENCH_KEYS - 1)) | sed 's/^/k/' | LC_ALL=C sort >"$TMP/expected.txt"
printf 'v%.0s' {1..32} >"$TMP/value"
present=0
for ((round = 1; round <= 8; round++)); do
    list_keys | LC_ALL=C comm -13 - "$TMP/expected.txt" >"$TMP/missing.txt"
    missing=$(wc -l <"$TMP/missing.txt")
    present=$((BENCH_KEYS - missing))
    log "preload: $present of $BENCH_KEYS keys present"
    if ((missing == 0)); then
        break
    elif ((missing <= 2000)); then
        # A few stragglers (requests in flight when wrk stopped): PUT exactly those.
        timeout 120 xargs -P 16 -I{} curl -fsS -o /dev/null -X PUT --data-binary @"$TMP/value" "http://$SHALE/kv/{}" \
            <"$TMP/missing.txt"
    else
        # Keys go in order, so nearly all missing ones are past the present count.
        timeout 60 wrk -t1 -c64 -d10s --timeout 5s -s "$TMP/preload.lua" "http://$SHALE" -- "$BENCH_KEYS" \
            $((present > 1024 ? present - 1024 : 0)) >/dev/null
    fi
done
if ((present < BENCH_KEYS)); then
    log "preload incomplete"
    exit 1
fi
for k in 0 $((BENCH_KEYS / 2)) $((BENCH_KEYS - 1)); do
    curl -fsS -o /dev/null "http://$SHALE/kv/k$k"
    curl -fsS -o /dev/null "http://$CEILING/kvm/k$k"
done

CLK_TCK=$(getconf CLK_TCK)
# cpu_ticks PID: user + system time of a process so far, in clock ticks (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() {
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# measure PID ADDR THREADS CONNS SECONDS GET_PREFIX PUT_PREFIX PUT_PCT:
# prints "rps p50_us p99_us status_errors io_errors server_cpu_us_per_request".
measure() {
    local out line before after
    before=$(cpu_ticks "$1")
    out=$(timeout $(($5 + 30)) wrk -t"$3" -c"$4" -d"$5"s --timeout 5s -s "$TMP/load.lua" "http://$2" -- \
        "$6" "$7" "$8" "$BENCH_KEYS")
    after=$(cpu_ticks "$1")
    line=$(sed -n 's/^RESULT //p' <<<"$out")
    if [[ -z "$line" ]]; then
        log "wrk gave no result: $out"
        exit 1
    fi
    awk -v l="$line" -v t=$((after - before)) -v hz="$CLK_TCK" 'BEGIN {
        split(l, f, " "); printf "%s %s %s %s %s %.1f\n", f[1], f[2], f[3], f[4], f[5], t * 1e6 / hz / f[6] }'
}

log "warming up (3 s each)"
measure "$SHALE_PID" "$SHALE" 2 256 3 /kv/k /kv/k 10 >/dev/null
measure "$CEILING_PID" "$CEILING" 2 256 3 /kvm/k /kv/k 10 >/dev/null

# Each case: label | server | pid | addr | GET prefix | PUT prefix | PUT %.
CASES=(
    "GET|shale|$SHALE_PID|$SHALE|/kv/k|/kv/k|0"
    "GET|ceiling moka|$CEILING_PID|$CEILING|/kvm/k|/kv/k|0"
    "GET|ceiling fixed|$CEILING_PID|$CEILING|/kv/k|/kv/k|0"
    "PUT|shale|$SHALE_PID|$SHALE|/kv/k|/kv/k|100"
    "PUT|ceiling|$CEILING_PID|$CEILING|/kv/k|/kv/k|100"
    "MIX|shale|$SHALE_PID|$SHALE|/kv/k|/kv/k|10"
    "MIX|ceiling moka|$CEILING_PID|$CEILING|/kvm/k|/kv/k|10"
)
CONNS=("2 256" "1 50")

# median N...: the median of the arguments (mean of the middle two for an even count).
median() {
    printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
        if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

declare -A RPS P50 P99 ERR CPU
total=$((${#CASES[@]} * ${#CONNS[@]} * BENCH_RUNS))
n=0
for conns in "${CONNS[@]}"; do
    read -r threads c <<<"$conns"
    for ((run = 1; run <= BENCH_RUNS; run++)); do
        for case in "${CASES[@]}"; do
            IFS='|' read -r load server pid addr get put pct <<<"$case"
            n=$((n + 1))
            res=$(measure "$pid" "$addr" "$threads" "$c" "$BENCH_SECONDS" "$get" "$put" "$pct")
            read -r rps p50 p99 serr ierr cpu <<<"$res"
            log "[$n/$total] $load $server -t$threads -c$c run $run: $rps req/s, p50 $p50 us, p99 $p99 us," \
                "server CPU $cpu us/req, errors $serr status / $ierr io"
            key="$load|$server|$conns"
            RPS[$key]="${RPS[$key]:-} $rps"
            P50[$key]="${P50[$key]:-} $p50"
            P99[$key]="${P99[$key]:-} $p99"
            CPU[$key]="${CPU[$key]:-} $cpu"
            ERR[$key]=$((${ERR[$key]:-0} + serr + ierr))
        done
    done
done

ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }

echo
echo "shale $(git rev-parse --short HEAD 2>/dev/null || echo '?'), DURABILITY=$DURABILITY, $BENCH_KEYS keys of 32 bytes," \
    "wrk ${BENCH_SECONDS} s x $BENCH_RUNS runs (medians), $(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| load | server | wrk | req/s | p50 ms | p99 ms | errors | server CPU us/req | ratio req/s | ratio CPU |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
declare -A MED MEDCPU
for conns in "${CONNS[@]}"; do
    read -r threads c <<<"$conns"
    for case in "${CASES[@]}"; do
        IFS='|' read -r load server _ <<<"$case"
        key="$load|$server|$conns"
        # shellcheck disable=SC2086
        MED[$key]=$(median ${RPS[$key]})
        # shellcheck disable=SC2086
        MEDCPU[$key]=$(median ${CPU[$key]})
    done
    for case in "${CASES[@]}"; do
        IFS='|' read -r load server _ <<<"$case"
        key="$load|$server|$conns"
        ratio=""
        cpu_ratio=""
        if [[ $server == shale ]]; then
            base=$([[ $load == PUT ]] && echo "PUT|ceiling|$conns" || echo "$load|ceiling moka|$conns")
            ratio=$(awk -v a="${MED[$key]}" -v b="${MED[$base]}" 'BEGIN { printf "%.2fx", a / b }')
            # Requests per CPU-second of shale relative to the ceiling's.
            cpu_ratio=$(awk -v a="${MEDCPU[$key]}" -v b="${MEDCPU[$base]}" 'BEGIN { printf "%.2fx", b / a }')
        fi
        # shellcheck disable=SC2086
        printf '| %s | %s | -t%s -c%s | %.0f | %s | %s | %s | %.1f | %s | %s |\n' "$load" "$server" "$threads" "$c" \
            "${MED[$key]}" "$(ms "$(median ${P50[$key]})")" "$(ms "$(median ${P99[$key]})")" "${ERR[$key]}" \
            "${MEDCPU[$key]}" "$ratio" "$cpu_ratio"
    done
done

echo
c="2 256"
verdict() {
    awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { r = a / b; printf "%.2fx (target >= %.1fx): %s", r, t, (r >= t ? "MET" : "MISSED") }'
}
echo "Target, cached GET vs ceiling moka GET at -t2 -c256: $(verdict "${MED[GET|shale|$c]}" "${MED[GET|ceiling moka|$c]}" 0.6)"
echo "        cached GET vs ceiling fixed GET at -t2 -c256: $(verdict "${MED[GET|shale|$c]}" "${MED[GET|ceiling fixed|$c]}" 0.6)"
echo "Target, durable PUT vs ceiling PUT at -t2 -c256:    $(verdict "${MED[PUT|shale|$c]}" "${MED[PUT|ceiling|$c]}" 0.2)"
echo "Server CPU per request at -t2 -c256: GET ${MEDCPU[GET|shale|$c]} us (ceiling moka ${MEDCPU[GET|ceiling moka|$c]} us)," \
    "PUT ${MEDCPU[PUT|shale|$c]} us (ceiling ${MEDCPU[PUT|ceiling|$c]} us)"

# ExDaas's own benchmark (issue 3): ab against POST /api, shale and the ceiling side by side.
if [ "${BENCH_EXDAAS:-1}" = 1 ]; then
    echo
    "$(dirname "$0")/bench-exdaas.sh"
fi
