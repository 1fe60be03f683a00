#!/usr/bin/env bash
# Before/after of one change: two shale binaries side by side, interleaved runs.
#
# Usage: BEFORE_BIN=/path/to/old/shale [AFTER_BIN=target/release/shale] scripts/bench-ab.sh > table.md
#        (progress on stderr, the table on stdout; AFTER_BIN defaults to a release build of this tree)
#
# Both binaries run at once (DURABILITY=immediate, defaults otherwise), each on its own temp data dir, preloaded
# with BENCH_KEYS keys (default 100000) of 32 bytes; each is stopped by PID at the end. Cases, each BENCH_RUNS
# times (default 3), before and after in turn so a background load disturbs both alike:
#   HTTP PUT at -c256 and -c64   wrk -t2, uniform random keys among the preloaded ones (BENCH_SECONDS, default 8)
#   HTTP GET at -c256            the same, reading (every key is cached)
#   RESP SET at -c50 -P1 and -c256 -P16   redis-benchmark -t set -r 100000 -d 32 -n BENCH_RESP_N (default 60000)
# The table gives medians of req/s, p50 and p99, and of the server's CPU time per request (user + system from
# /proc/PID/stat over the run: the steadiest figure on a shared machine), and the after/before ratio of req/s.
# BENCH_CASES picks cases (default "put-c256 put-c64 get-c256 set-c50-P1 set-c256-P16"); BENCH_ENV adds settings to
# both servers' environment (e.g. BENCH_ENV="CACHE_BYTES=2400000" for reads that mostly miss the cache).
# BENCH_EVICT=MS drops the server's shard files from the OS page cache every MS milliseconds during each run
# (posix_fadvise DONTNEED), so that reads missing shale's cache also miss memory and wait for the disk; each run's
# log line then says how many misses read on the blocking pool.
set -euo pipefail

# shellcheck source=scripts/lib/bench.sh
. "$(dirname "$0")/lib/bench.sh"
bench_init ab

KEYS=${BENCH_KEYS:-100000}
SECONDS_PER_RUN=${BENCH_SECONDS:-8}
RUNS=${BENCH_RUNS:-3}
RESP_N=${BENCH_RESP_N:-60000}
[[ -n "${BEFORE_BIN:-}" && -x "$BEFORE_BIN" ]] || die "set BEFORE_BIN to the shale binary to compare against"
need wrk wrk || die "wrk is needed"
need redis-benchmark redis-tools || die "redis-benchmark is needed"
if [[ -z "${AFTER_BIN:-}" ]]; then
    build_bins shale
    AFTER_BIN=$SHALE_BIN
fi
write_lua

declare -A ADDR_OF=() PID_OF=() RESP_OF=()
for side in before after; do
    bin=$BEFORE_BIN
    [[ $side == after ]] && bin=$AFTER_BIN
    port=$(free_port)
    # shellcheck disable=SC2086 # BENCH_ENV is a list of VAR=value words
    start "$side" env -u DURABILITY -u SHARD_LIMIT -u CACHE_BYTES -u AUTH_TOKEN RESP_PORT="$port" RUST_LOG=warn \
        ${BENCH_ENV:-} "$bin" serve --port 0 --data-dir "$TMP/$side"
    ADDR_OF[$side]=$ADDR PID_OF[$side]=$LAST_PID RESP_OF[$side]=$port
    wait_http "http://$ADDR/readyz"
    log "$side: $bin on $ADDR (RESP $port); loading $KEYS keys"
    shale_load "$ADDR" "$KEYS" 32
done

# evict DIR MS SECONDS: drops DIR's shard files from the page cache every MS ms for SECONDS s (in the background).
evict() {
    python3 - "$@" <<'PY' &
import glob, os, sys, time
data_dir, every, seconds = sys.argv[1], float(sys.argv[2]) / 1000, float(sys.argv[3])
end = time.monotonic() + seconds
while time.monotonic() < end:
    for path in glob.glob(os.path.join(data_dir, "shard-*.redb")):
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    time.sleep(every)
PY
    EVICTOR=$!
}

# run_case SIDE CASE: one run; prints "rps p50_us p99_us cpu_us_per_req".
run_case() {
    local side=$1 case=$2 addr=${ADDR_OF[$1]} pid=${PID_OF[$1]} t0 t1 rps p50 p99 line c p pool0=""
    if [[ -n "${BENCH_EVICT:-}" ]]; then
        pool0=$(shale_metric "$addr" shale_cache_miss_reads_total 'path="pool"')
        evict "$TMP/$side" "$BENCH_EVICT" "$SECONDS_PER_RUN"
    fi
    t0=$(cpu_ticks "$pid")
    case $case in
    put-c* | get-c*)
        c=${case#*-c}
        p=100
        [[ $case == get-* ]] && p=0
        read -r rps p50 p99 _ _ <<<"$(wrk_run load.lua 2 "$c" "$SECONDS_PER_RUN" "http://$addr" /kv/k /kv/k "$p" "$KEYS" 32)"
        ;;
    set-c*)
        c=${case#set-c}
        p=${c#*-P}
        c=${c%-P*}
        line=$(timeout 300 redis-benchmark -p "${RESP_OF[$side]}" -t set -n "$RESP_N" -r 100000 -d 32 -c "$c" -P "$p" \
            --csv -q 2>/dev/null | tail -n1) || die "redis-benchmark failed against $side"
        IFS=, read -r _ rps _ _ p50 _ p99 _ <<<"${line//\"/}"
        p50=$(awk -v v="$p50" 'BEGIN { print v * 1000 }')
        p99=$(awk -v v="$p99" 'BEGIN { print v * 1000 }')
        ;;
    esac
    t1=$(cpu_ticks "$pid")
    if [[ -n "$pool0" ]]; then
        wait "$EVICTOR" || true
        log "$side $case: $(($(shale_metric "$addr" shale_cache_miss_reads_total 'path="pool"') - pool0)) misses read on the pool"
    fi
    echo "$rps $p50 $p99 $(awk -v d=$((t1 - t0)) -v tick="$CLK_TCK" -v rps="$rps" -v s="$SECONDS_PER_RUN" -v n="$RESP_N" \
        -v resp="${case%%-*}" 'BEGIN { reqs = (resp == "set") ? n : rps * s; printf "%.1f", d * 1e6 / tick / reqs }')"
}

read -r -a CASES <<<"${BENCH_CASES:-put-c256 put-c64 get-c256 set-c50-P1 set-c256-P16}"
declare -A RESULTS=()
for side in before after; do
    for case in "${CASES[@]}"; do run_case "$side" "$case" >/dev/null; done # warm-up
done
for ((run = 1; run <= RUNS; run++)); do
    for case in "${CASES[@]}"; do
        for side in before after; do
            r=$(run_case "$side" "$case")
            log "run $run $case $side: $r"
            RESULTS[$side.$case]+="$r"$'\n'
        done
    done
done

# med I SIDE.CASE: the median of column I of the case's runs.
med() {
    # shellcheck disable=SC2046 # one number per line
    median $(awk -v i="$1" 'NF { print $i }' <<<"${RESULTS[$2]}")
}
echo "before: $BEFORE_BIN; after: $AFTER_BIN; $(machine); $RUNS runs, medians; load average now $(loadavg)"
echo
echo "| case | before req/s | after req/s | after / before | before p50 / p99 ms | after p50 / p99 ms | before CPU us/req | after CPU us/req |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for case in "${CASES[@]}"; do
    b=$(med 1 "before.$case") a=$(med 1 "after.$case")
    echo "| $case | ${b%.*} | ${a%.*} | $(ratio "$a" "$b") | $(ms "$(med 2 "before.$case")") / $(ms "$(med 3 "before.$case")") |" \
        "$(ms "$(med 2 "after.$case")") / $(ms "$(med 3 "after.$case")") | $(med 4 "before.$case") | $(med 4 "after.$case") |"
done
