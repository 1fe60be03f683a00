#!/usr/bin/env bash
# Memory: shale's resident memory with MEMORY_KEYS (default 1,000,000) cached 100-byte values, against
# the payload (key bytes + value bytes).
#
# Usage: scripts/bench-memory.sh > table.md          (progress on stderr, the table on stdout)
#
# Starts shale on a fresh data dir (4 shards, CACHE_BYTES 256 MiB = the default, which holds all of them:
# each entry is charged the memory it takes), reads VmRSS / VmHWM from /proc/PID/status:
#   1. empty, ready;
#   2. after PUTting k0..k{N-1} with wrk (DURABILITY=eventual: the values go into the cache after each commit,
#      as under immediate; only the fsync differs);
#   3. after a clean restart (SIGTERM, start with DURABILITY=immediate), once /readyz is 200: the cache warm-up
#      filled the cache from the files, with no write path allocations around.
# Checks every key is cached (shale_cache_entries). Target: RSS <= 2.5x the payload after the warm-up.
# Environment: MEMORY_KEYS, MEMORY_CACHE_BYTES (default 268435456), SHALE_BIN.
set -euo pipefail

# shellcheck source=scripts/lib/bench.sh
. "$(dirname "$0")/lib/bench.sh"
bench_init memory

KEYS=${MEMORY_KEYS:-1000000}
CACHE=${MEMORY_CACHE_BYTES:-268435456}
VALUE=100
TARGET=2.5

need wrk wrk || die "wrk is needed"
build_bins shale
write_lua
DATA=$TMP/data
shale_env=(env -u AUTH_TOKEN -u AUTH_READ_TOKEN -u TLS_CERT -u TLS_KEY -u HOST -u PORT -u DATA_DIR -u SHARD_LIMIT
    -u FLUSH_INTERVAL_MS -u HTTP_WORKERS -u DURABILITY RESP_PORT=off RUST_LOG=warn CACHE_BYTES="$CACHE")

PAYLOAD=$(awk -v n="$KEYS" -v v="$VALUE" 'BEGIN { for (i = 0; i < n; i++) s += length("k" i) + v; printf "%d", s }')
kib() { sed -n "s/^$1:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$2/status"; }
ROWS=()
# sample LABEL PID ADDR: one table row.
sample() {
    local rss hwm entries weighted
    rss=$(kib VmRSS "$2")
    hwm=$(kib VmHWM "$2")
    entries=$(shale_metric "$3" shale_cache_entries)
    weighted=$(shale_metric "$3" shale_cache_bytes)
    ROWS+=("$(awk -v l="$1" -v r="$rss" -v h="$hwm" -v p="$PAYLOAD" -v e="$entries" -v w="$weighted" 'BEGIN {
        printf "| %s | %.1f | %.1f | %.2fx | %.2fx | %d | %.1f |", l, r / 1024, h / 1024, r * 1024 / p, h * 1024 / p, e, w / 1048576 }')")
    log "${ROWS[-1]}"
    LAST_RSS=$rss
    LAST_ENTRIES=$entries
}

start mem "${shale_env[@]}" DURABILITY=eventual "$SHALE_BIN" serve --port 0 --data-dir "$DATA"
wait_http "http://$ADDR/readyz"
sleep 1
sample "empty, ready" "$LAST_PID" "$ADDR"
log "loading $KEYS keys of $VALUE bytes"
shale_load "$ADDR" "$KEYS" "$VALUE"
sleep 2
sample "after PUT of every key" "$LAST_PID" "$ADDR"
stop_pid "$LAST_PID" TERM

start mem2 "${shale_env[@]}" DURABILITY=immediate "$SHALE_BIN" serve --port 0 --data-dir "$DATA"
wait_http "http://$ADDR/readyz" 120
sleep 2
sample "after a clean restart and warm-up" "$LAST_PID" "$ADDR"
keys=$(shale_metric "$ADDR" shale_shard_keys 'space="kv"')
[[ "$keys" == "$KEYS" ]] || die "shale has $keys keys, expected $KEYS"
stop_pid "$LAST_PID" TERM

echo "shale: $(describe_bin); $(machine)"
echo "$KEYS keys k0..k{N-1} of $VALUE bytes: payload $PAYLOAD bytes ($(awk -v p="$PAYLOAD" 'BEGIN { printf "%.1f MiB", p / 1048576 }'))," \
    "CACHE_BYTES=$CACHE, 4 shards, redb page cache CACHE_BYTES/4 split between the shards; load average $(loadavg)"
echo
echo "| state | VmRSS MiB | VmHWM MiB | RSS / payload | HWM / payload | cache entries | cache charge MiB |"
echo "|---|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
echo
[[ "$LAST_ENTRIES" == "$KEYS" ]] || echo "Warning: only $LAST_ENTRIES of $KEYS keys are cached after the warm-up."
awk -v r="$LAST_RSS" -v p="$PAYLOAD" -v t="$TARGET" 'BEGIN { x = r * 1024 / p
    printf "Target: RSS with every value cached <= %gx the payload: %.2fx after the warm-up: %s\n", t, x, (x <= t ? "MET" : sprintf("NOT MET (%.0f%% over)", (x / t - 1) * 100)) }'
