#!/usr/bin/env bash
# Scaling: durable PUT throughput against the shard count.
#
# Usage: scripts/bench-scaling.sh > table.md         (progress on stderr, the table on stdout)
#
# One shale per shard count in SCALING_SHARDS (default "1 2 4 8 16"), each DURABILITY=immediate on its own fresh
# data dir (the shard count is fixed per data dir), all started first and preloaded with BENCH_KEYS keys (default
# 100000) of 32 bytes. Then PUTs of 32-byte values to uniform random preloaded keys, wrk -t2 -c256, BENCH_SECONDS
# (10) x BENCH_RUNS (3), interleaved (run 1 of every shard count, then run 2, ...); the table shows medians and,
# from /metrics over the measured runs, the mean requests per commit and fsyncs per second.
# Environment: SCALING_SHARDS, SCALING_CONNS (256), BENCH_SECONDS, BENCH_RUNS, BENCH_KEYS, SHALE_BIN.
set -euo pipefail

# shellcheck source=scripts/lib/bench.sh
. "$(dirname "$0")/lib/bench.sh"
bench_init scaling

KEYS=${BENCH_KEYS:-100000}
CONNS=${SCALING_CONNS:-256}
read -r -a SHARDS <<<"${SCALING_SHARDS:-1 2 4 8 16}"
VALUE=32

need wrk wrk || die "wrk is needed"
build_bins shale
write_lua
shale_env=(env -u AUTH_TOKEN -u AUTH_READ_TOKEN -u TLS_CERT -u TLS_KEY -u HOST -u PORT -u DATA_DIR -u SHARD_LIMIT
    -u CACHE_BYTES -u FLUSH_INTERVAL_MS -u HTTP_WORKERS RESP_PORT=off RUST_LOG=warn DURABILITY=immediate)

declare -A URL
for s in "${SHARDS[@]}"; do
    start "shards$s" "${shale_env[@]}" "$SHALE_BIN" serve --port 0 --shards "$s" --data-dir "$TMP/shards$s"
    URL[$s]=$ADDR
    wait_http "http://$ADDR/readyz"
    log "preloading $KEYS keys into the $s-shard server"
    shale_load "$ADDR" "$KEYS" "$VALUE"
done

log "warming up (3 s each)"
for s in "${SHARDS[@]}"; do
    wrk_run load.lua 2 "$CONNS" 3 "http://${URL[$s]}" /kv/k /kv/k 100 "$KEYS" "$VALUE" >/dev/null
done

declare -A RPS P50 P99 ERR COMMITS0 BATCH0 FSYNC0
for s in "${SHARDS[@]}"; do
    COMMITS0[$s]=$(shale_metric "${URL[$s]}" shale_shard_batch_size_count)
    BATCH0[$s]=$(shale_metric "${URL[$s]}" shale_shard_batch_size_sum)
    FSYNC0[$s]=$(shale_metric "${URL[$s]}" shale_shard_fsyncs_total)
done
LOADS=()
for ((run = 1; run <= BENCH_RUNS; run++)); do
    LOADS+=("$(loadavg)")
    for s in "${SHARDS[@]}"; do
        read -r rps p50 p99 serr ierr <<<"$(wrk_run load.lua 2 "$CONNS" "$BENCH_SECONDS" "http://${URL[$s]}" /kv/k /kv/k 100 "$KEYS" "$VALUE")"
        log "run $run, $s shards: $rps PUT/s, p50 $p50 us, p99 $p99 us, errors $serr/$ierr, load average $(loadavg)"
        RPS[$s]="${RPS[$s]:-} $rps"
        P50[$s]="${P50[$s]:-} $p50"
        P99[$s]="${P99[$s]:-} $p99"
        ERR[$s]=$((${ERR[$s]:-0} + serr + ierr))
    done
done
LOADS+=("$(loadavg)")

echo "shale: $(describe_bin); $(machine)"
echo "DURABILITY=immediate, PUT of $VALUE-byte values to $KEYS preloaded keys, uniform random; wrk -t2 -c$CONNS," \
    "${BENCH_SECONDS} s x $BENCH_RUNS runs interleaved, medians; load average at the start of each run and at the end: $(printf '%s; ' "${LOADS[@]}")"
echo
echo "| SHARD_LIMIT | PUT/s | p50 ms | p99 ms | errors | requests per commit | fsyncs/s | x 1 shard |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
declare -A MED
best=""
for s in "${SHARDS[@]}"; do
    # shellcheck disable=SC2086
    MED[$s]=$(median ${RPS[$s]})
    if [[ -z "$best" ]] || awk -v a="${MED[$s]}" -v b="${MED[$best]}" 'BEGIN { exit !(a > b) }'; then best=$s; fi
done
for s in "${SHARDS[@]}"; do
    commits=$(($(shale_metric "${URL[$s]}" shale_shard_batch_size_count) - COMMITS0[$s]))
    reqs=$(($(shale_metric "${URL[$s]}" shale_shard_batch_size_sum) - BATCH0[$s]))
    fsyncs=$(($(shale_metric "${URL[$s]}" shale_shard_fsyncs_total) - FSYNC0[$s]))
    # shellcheck disable=SC2086
    printf '| %s | %.0f | %s | %s | %s | %s | %.0f | %s |\n' "$s" "${MED[$s]}" "$(ms "$(median ${P50[$s]})")" \
        "$(ms "$(median ${P99[$s]})")" "${ERR[$s]}" "$(ratio "$reqs" "$commits")" \
        "$(awk -v f="$fsyncs" -v t=$((BENCH_SECONDS * BENCH_RUNS)) 'BEGIN { print f / t }')" \
        "$(ratio "${MED[$s]}" "${MED[${SHARDS[0]}]}")"
done
echo
echo "Highest median: SHARD_LIMIT=$best ($(printf '%.0f' "${MED[$best]}") PUT/s)."
