#!/usr/bin/env bash
# Restart: how long shale takes to serve again after a crash with a large data set.
#
# Usage: scripts/bench-restart.sh > table.md         (progress on stderr, the table on stdout)
#
# 1. Loads RESTART_KEYS keys (default 1,000,000) of 100-byte values (k0..k{N-1}) into a fresh data dir with
#    wrk (DURABILITY=eventual to load fast, then SIGTERM: a clean close makes everything durable).
# 2. Starts shale (defaults: DURABILITY=immediate, 4 shards, 256 MiB cache) and checks it has every key.
# 3. RESTART_RUNS times (default 3): SIGKILL, start again, and time from the exec to the `LISTENING` line (the
#    shard files are open, redb's repair done) and to the first `/readyz` 200 (every shard's cache warm), and the
#    CPU time the process used until then (user + system, from /proc: unlike the wall times it hardly moves
#    with the load of a shared machine).
#    Also times one restart after a clean SIGTERM, for comparison.
# Polls every 5 ms or so (each poll spawns curl), so times are good to about 10-20 ms. The OS page cache is
# warm (the files were just written); a cold-cache restart reads the files from disk first.
# Target: ready in <= 2 s after SIGKILL. Environment: RESTART_KEYS, RESTART_RUNS, SHALE_BIN.
set -euo pipefail

# shellcheck source=scripts/lib/bench.sh
. "$(dirname "$0")/lib/bench.sh"
bench_init restart

KEYS=${RESTART_KEYS:-1000000}
RUNS=${RESTART_RUNS:-3}
VALUE=100
TARGET_S=2

need wrk wrk || die "wrk is needed"
build_bins shale
write_lua
DATA=$TMP/data
shale_env=(env -u AUTH_TOKEN -u AUTH_READ_TOKEN -u TLS_CERT -u TLS_KEY -u HOST -u PORT -u DATA_DIR -u SHARD_LIMIT
    -u CACHE_BYTES -u FLUSH_INTERVAL_MS -u HTTP_WORKERS -u DURABILITY RESP_PORT=off RUST_LOG=info)

log "loading $KEYS keys of $VALUE bytes (DURABILITY=eventual)"
start load "${shale_env[@]}" DURABILITY=eventual "$SHALE_BIN" serve --port 0 --data-dir "$DATA"
wait_http "http://$ADDR/readyz"
t0=$(date +%s)
shale_load "$ADDR" "$KEYS" "$VALUE"
log "loaded in $(($(date +%s) - t0)) s; SIGTERM"
stop_pid "$LAST_PID" TERM
DATA_BYTES=$(du -sb "$DATA" | cut -f1)

# cpu_ms PID: user + system CPU time of PID so far, in ms.
cpu_ms() { awk -v t="$(cpu_ticks "$1")" -v hz="$CLK_TCK" 'BEGIN { printf "%d", t * 1000 / hz }'; }

# timed_start NAME: starts shale on $DATA, polls until /readyz is 200 (120 s at most); sets T_LISTEN_MS and
# T_READY_MS (from just before the exec), T_CPU_MS (the process's CPU time when it was first ready), ADDR and
# LAST_PID.
timed_start() {
    local name=$1 t0 now i
    : >"$TMP/$name.out"
    : >"$TMP/$name.err"
    t0=$(date +%s%N)
    "${shale_env[@]}" "$SHALE_BIN" serve --port 0 --data-dir "$DATA" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    T_LISTEN_MS=""
    T_READY_MS=""
    T_CPU_MS=""
    ADDR=""
    for ((i = 0; i < 24000; i++)); do
        now=$(date +%s%N)
        if [[ -z "$ADDR" ]]; then
            ADDR=$(sed -n 's/^LISTENING //p' "$TMP/$name.out" | head -n1)
            if [[ -n "$ADDR" ]]; then T_LISTEN_MS=$(((now - t0) / 1000000)); fi
        fi
        if [[ -n "$ADDR" ]] && [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$ADDR/readyz") == 200 ]]; then
            T_READY_MS=$((($(date +%s%N) - t0) / 1000000))
            T_CPU_MS=$(cpu_ms "$LAST_PID")
            return 0
        fi
        kill -0 "$LAST_PID" 2>/dev/null || die "shale exited during start: $(tail -n 20 "$TMP/$name.err")"
        sleep 0.005
    done
    die "shale not ready after 120 s"
}

# The shard log lines say what the start spent its time on.
start_details() {
    local warm
    warm=$(sed -n 's/.*shard cache warmed.*ms[=:" ]*\([0-9]*\).*/\1/p' "$TMP/$1.err" | sort -n | tail -n1)
    echo "slowest shard warm-up ${warm:-?} ms, cache entries $(shale_metric "$ADDR" shale_cache_entries)"
}

timed_start check
keys=$(shale_metric "$ADDR" shale_shard_keys 'space="kv"')
[[ "$keys" == "$KEYS" ]] || die "after the load shale has $keys keys, expected $KEYS"
log "clean restart: LISTENING after $T_LISTEN_MS ms, ready after $T_READY_MS ms, CPU $T_CPU_MS ms ($(start_details check)); $keys keys"
CLEAN_LISTEN=$T_LISTEN_MS
CLEAN_READY=$T_READY_MS
CLEAN_CPU=$T_CPU_MS
CLEAN_DETAILS=$(start_details check)

LISTEN=()
READY=()
CPU=()
DETAILS=()
LOADS=()
for ((run = 1; run <= RUNS; run++)); do
    # Let the warm-up's allocations settle, then crash it.
    sleep 1
    LOADS+=("$(loadavg)")
    stop_pid "$LAST_PID" KILL
    timed_start "run$run"
    LISTEN+=("$T_LISTEN_MS")
    READY+=("$T_READY_MS")
    CPU+=("$T_CPU_MS")
    DETAILS+=("$(start_details "run$run")")
    log "after SIGKILL, run $run: LISTENING after $T_LISTEN_MS ms, ready after $T_READY_MS ms, CPU $T_CPU_MS ms (${DETAILS[-1]}), load average $(loadavg)"
done
keys=$(shale_metric "$ADDR" shale_shard_keys 'space="kv"')
[[ "$keys" == "$KEYS" ]] || die "after the restarts shale has $keys keys, expected $KEYS"
stop_pid "$LAST_PID" TERM

med_ready=$(median "${READY[@]}")
echo "shale: $(describe_bin); $(machine)"
echo "$KEYS keys of $VALUE bytes, data dir $(awk -v b="$DATA_BYTES" 'BEGIN { printf "%.0f MiB", b / 1048576 }');" \
    "defaults (4 shards, DURABILITY=immediate, CACHE_BYTES 256 MiB); OS page cache warm;" \
    "load average before each SIGKILL: $(printf '%s; ' "${LOADS[@]}")"
echo
echo "| start | exec to LISTENING ms | exec to /readyz 200 ms | CPU ms until ready | notes |"
echo "|---|---:|---:|---:|---|"
echo "| after SIGTERM (clean close) | $CLEAN_LISTEN | $CLEAN_READY | $CLEAN_CPU | $CLEAN_DETAILS |"
for ((run = 1; run <= RUNS; run++)); do
    echo "| after SIGKILL, run $run | ${LISTEN[run - 1]} | ${READY[run - 1]} | ${CPU[run - 1]} | ${DETAILS[run - 1]} |"
done
echo "| **after SIGKILL, median** | **$(median "${LISTEN[@]}")** | **$med_ready** | **$(median "${CPU[@]}")** | |"
echo
awk -v r="$med_ready" -v t="$TARGET_S" 'BEGIN { s = r / 1000
    printf "Target: ready in <= %g s after SIGKILL: median %.2f s: %s\n", t, s, (s <= t ? "MET" : sprintf("NOT MET (%.1fx the target)", s / t)) }'
