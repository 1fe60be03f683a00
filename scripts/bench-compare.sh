#!/usr/bin/env bash
# shale side by side with the stores users would pick instead, in one run on this machine.
#
# Usage: scripts/bench-compare.sh > table.md        (progress on stderr, the table on stdout)
#
# Systems (each on loopback, its own temp data dir, all started first, stopped by PID at exit):
#   ceiling          examples/ceiling.rs: actix-web doing nothing (GET: a moka lookup on /kvm; PUT: read body, 204);
#                    "PUT durable": /kvd, each PUT's key and body group-committed to one of 4 log files (one write
#                    and one fdatasync per group, as shale's 4 shards do) before the 204, and nothing else: what
#                    any durable store of this shape can do on this machine
#   ceiling, 1 writer  the same durable ceiling with ONE log file and writer (context for the durable-PUT target against etcd: the
#                    fewest fdatasyncs a group commit can do here)
#   shale immediate  DURABILITY=immediate (a 2xx PUT is fsynced)
#   shale eventual   DURABILITY=eventual (fsynced within FLUSH_INTERVAL_MS, default 1 s)
#   shale uncached   DURABILITY=immediate with CACHE_BYTES a quarter of the data set's cache weight
#   shale 1 shard    DURABILITY=immediate SHARD_LIMIT=1 (context: PUT -c256 only; the default is 4 shards)
#   redis always     redis-server --appendonly yes --appendfsync always --save ""   (measured with redis-benchmark)
#   redis everysec   redis-server --appendonly yes --appendfsync everysec --save ""
#   etcd             etcd-server from apt, one member, through its JSON gateway (POST /v3/kv/put, /v3/kv/range)
# Loads: BENCH_KEYS keys (default 100000), 32-byte values, uniform random keys, all preloaded:
#   GET  -c256   cached GET (shale uncached: the data set is 4x its cache budget)
#   PUT  -c256   PUT replacing a preloaded key
#   GET  -c64, PUT -c64   the same at 64 connections, for the latency targets
#   MIX  -c256 and -c64   with BENCH_MIX=1 only: 90 % GET / 10 % PUT on the ceiling (moka GET, PUT /kv) and on
#                         shale immediate and eventual
# HTTP systems with wrk -t2; Redis with redis-benchmark --threads 2 -P 1 at the same connection counts, -n sized
# to last about BENCH_SECONDS. Runs are interleaved (run 1 of every system and load, then run 2, ...) so a
# background load disturbs all alike; the table shows medians of BENCH_RUNS runs. Besides req/s and latency it
# shows the server's CPU time per request: user + system time of the server process over the run (from
# /proc/PID/stat) divided by the requests answered. On a machine shared with other work, or where the load
# generator itself saturates the cores, that is the steadier measure of cost.
# With NO_ETCD=1 NO_REDIS=1 BENCH_RESP=0 it is shale against the ceiling alone.
#
# Environment: BENCH_SECONDS (10), BENCH_RUNS (3), BENCH_KEYS (100000), SHALE_BIN / CEILING_BIN (prebuilt
# binaries; default: build release from this tree), NO_ETCD=1 (skip etcd), NO_REDIS=1 (skip Redis), BENCH_MIX=1
# (add the MIX rows), BENCH_RESP=0|only and BENCH_RESP_N (the RESP section at the end: redis-benchmark against
# Redis and shale's RESP port; see resp_section below).
set -euo pipefail

# shellcheck source=scripts/lib/bench.sh
. "$(dirname "$0")/lib/bench.sh"
bench_init compare

KEYS=${BENCH_KEYS:-100000}
VALUE=32
WARM_SECONDS=3

# ==== RESP section ================================================================================================
# redis-benchmark against Redis appendfsync always, Redis appendfsync everysec and shale's RESP listener, each
# started fresh for this section (own temp dir, empty, stopped by PID at its end; in a full run the HTTP systems
# above are stopped first, their table already printed):
#   redis-benchmark -h 127.0.0.1 -p PORT -t ping,set,get,incr,mset -n N -r 100000 -d 32 -c {50,256} -P {1,16} --csv
# BENCH_RUNS runs, interleaved (run 1 of every system and setting, then run 2, ...); the table shows medians of
# req/s and of p50/p99 (redis-benchmark 7.0.15's --csv columns: test, rps, avg, min, p50, p95, p99, max, in ms).
# shale runs with DURABILITY=immediate (a reply leaves after fsync, like Redis always). Targets: durable SET >= 0.7x
# Redis always at -c50 -P1; GET >= 0.8x Redis always at -P16.
# BENCH_RESP=0 skips the section; BENCH_RESP=only runs it alone (nothing above). BENCH_RESP_N sets N (100000).
# A shale without the RESP listener (it rejects --resp-port), or whose RESP port does not answer PING within 30 s,
# is reported and its rows are left empty; every redis-benchmark run is bounded by `timeout`.
resp_section() {
    local n=${BENCH_RESP_N:-100000} tests=ping,set,get,incr,mset mode port pid i run sys c p csv rc key t
    local systems=() shale_note="" pids
    if ! need redis-benchmark redis-tools || ! need redis-server redis-server; then
        log "RESP section skipped: redis-benchmark/redis-server could not be installed"
        return 0
    fi
    # The HTTP part's servers are done; stop them so they take no CPU or page cache from this section.
    pids=("${PIDS[@]}")
    for pid in "${pids[@]}"; do stop_pid "$pid"; done

    declare -gA RESP_PORT_OF=() RESP_PID_OF=()
    for mode in always everysec; do
        port=$(free_port)
        mkdir -p "$TMP/resp-redis-$mode"
        start_plain "resp-redis-$mode" redis-server --bind 127.0.0.1 --port "$port" --dir "$TMP/resp-redis-$mode" \
            --appendonly yes --appendfsync "$mode" --save "" --daemonize no --logfile ""
        for ((i = 0; i < 300; i++)); do
            [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && break
            sleep 0.1
        done
        [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] ||
            die "redis ($mode) did not start: $(tail -5 "$TMP/resp-redis-$mode.log")"
        RESP_PORT_OF[redis-$mode]=$port
        RESP_PID_OF[redis-$mode]=$LAST_PID
        systems+=("redis-$mode")
    done
    port=$(free_port)
    start_plain shale-resp env -u AUTH_TOKEN -u AUTH_READ_TOKEN -u TLS_CERT -u TLS_KEY -u HOST -u PORT -u DATA_DIR \
        -u SHARD_LIMIT -u CACHE_BYTES -u FLUSH_INTERVAL_MS -u HTTP_WORKERS -u RESP_PORT RUST_LOG=warn \
        DURABILITY=immediate "$SHALE_BIN" serve --port 0 --resp-port "$port" --data-dir "$TMP/shale-resp"
    pid=$LAST_PID
    for ((i = 0; i < 600; i++)); do
        grep -qs '^LISTENING ' "$TMP/shale-resp.log" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if grep -qs -- "unexpected argument '--resp-port'" "$TMP/shale-resp.log"; then
        shale_note="this shale build has no RESP listener (it rejects --resp-port)"
    elif ! grep -qs '^LISTENING ' "$TMP/shale-resp.log"; then
        shale_note="shale did not start: $(tail -n 3 "$TMP/shale-resp.log" | tr '\n' ' ')"
    else
        for ((i = 0; i < 300; i++)); do
            [[ $(timeout 2 redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && break
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if [[ $(timeout 2 redis-cli -p "$port" ping 2>/dev/null) == PONG ]]; then
            RESP_PORT_OF[shale]=$port
            RESP_PID_OF[shale]=$pid
            systems+=(shale)
        else
            shale_note="shale's RESP port $port did not answer PING within 30 s"
        fi
    fi
    if [[ -n "$shale_note" ]]; then
        log "RESP: $shale_note; shale rows left empty"
        stop_pid "$pid"
    fi

    declare -gA RESP_RPS=() RESP_P50=() RESP_P99=() RESP_FAIL=()
    local loads=() total=$((${#systems[@]} * 4 * BENCH_RUNS)) done_runs=0
    for ((run = 1; run <= BENCH_RUNS; run++)); do
        loads+=("$(loadavg)")
        for sys in "${systems[@]}"; do
            for c in 50 256; do
                for p in 1 16; do
                    done_runs=$((done_runs + 1))
                    [[ -n "${RESP_FAIL[$sys|$c|$p]:-}" ]] && continue
                    rc=0
                    csv=$(timeout $((120 + n / 500)) redis-benchmark -h 127.0.0.1 -p "${RESP_PORT_OF[$sys]}" \
                        -t "$tests" -n "$n" -r 100000 -d 32 -c "$c" -P "$p" --csv 2>&1) || rc=$?
                    if ((rc != 0)); then
                        # redis-benchmark stops at the first error reply (exit 1) or was stopped by timeout (124);
                        # the tests it finished before are kept, the later runs of this setting are not made.
                        RESP_FAIL[$sys|$c|$p]="redis-benchmark exit $rc$( ((rc != 124)) || echo " (timeout)"):
                            $(grep -m1 -iE 'error|could not|refused' <<<"$csv" || tail -n 1 <<<"$csv")"
                        RESP_FAIL[$sys|$c|$p]=$(tr -s ' \n' ' ' <<<"${RESP_FAIL[$sys|$c|$p]}")
                        log "RESP [$done_runs/$total] $sys -c$c -P$p: ${RESP_FAIL[$sys|$c|$p]}"
                    fi
                    # Lines: "SET","71234.57","0.650","0.120","0.607","0.911","1.199","5.407"
                    while IFS='|' read -r t rps p50 p99; do
                        key="$sys|$t|$c|$p"
                        RESP_RPS[$key]="${RESP_RPS[$key]:-} $rps"
                        RESP_P50[$key]="${RESP_P50[$key]:-} $p50"
                        RESP_P99[$key]="${RESP_P99[$key]:-} $p99"
                    done < <(awk -F'","' 'NF == 8 && $2 ~ /^[0-9.]+$/ { gsub(/"/, ""); split($0, f, ",");
                        sub(/ \(.*/, "", f[1]); print f[1] "|" f[2] "|" f[5] "|" f[7] }' <<<"$csv")
                    log "RESP [$done_runs/$total] $sys -c$c -P$p:" "$(awk -F'","' 'NF == 8 && $2 ~ /^[0-9.]+$/ { gsub(/"/, "")
                        split($0, f, ","); printf "%s %.0f/s  ", f[1], f[2] }' <<<"$csv")"
                done
            done
        done
    done
    loads+=("$(loadavg)")
    for sys in "${systems[@]}"; do stop_pid "${RESP_PID_OF[$sys]}"; done

    # ---- table ----
    # cell SYS TEST C P: "req/s (p50 / p99 ms)", or why it is empty.
    cell() {
        local k="$1|$2|$3|$4"
        if [[ -n "${RESP_RPS[$k]:-}" ]]; then
            # shellcheck disable=SC2086
            printf '%.0f (%s / %s)' "$(median ${RESP_RPS[$k]})" "$(median ${RESP_P50[$k]})" \
                "$(median ${RESP_P99[$k]})"
        elif [[ -n "${RESP_FAIL[$1|$3|$4]:-}" ]]; then
            printf 'failed'
        else
            printf -- '-'
        fi
    }
    med() {
        # shellcheck disable=SC2086
        if [[ -n "${RESP_RPS[$1]:-}" ]]; then median ${RESP_RPS[$1]}; fi
    }
    # resp_ratio KEY BASE_KEY: the ratio of the medians, "-" when either is missing.
    resp_ratio() {
        local x y
        x=$(med "$1")
        y=$(med "$2")
        if [[ -n "$x" && -n "$y" ]]; then ratio "$x" "$y"; else printf -- '-'; fi
    }
    echo
    echo "## RESP: redis-benchmark -t $tests -n $n -r 100000 -d 32 --csv, medians of $BENCH_RUNS runs"
    echo "shale: $(describe_bin), DURABILITY=immediate; $(redis-server --version | cut -d' ' -f1-3); $(machine)"
    echo "load average at the start of each run and at the end: $(printf '%s; ' "${loads[@]}")"
    echo
    echo "Cells: req/s (p50 / p99 ms)."
    echo
    echo "| test | -c | -P | Redis appendfsync always | Redis appendfsync everysec | shale | shale / Redis always |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for c in 50 256; do
        for p in 1 16; do
            for t in PING_INLINE PING_MBULK SET GET INCR MSET; do
                printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$c" "$p" \
                    "$(cell redis-always "$t" "$c" "$p")" "$(cell redis-everysec "$t" "$c" "$p")" \
                    "$(cell shale "$t" "$c" "$p")" \
                    "$(resp_ratio "shale|$t|$c|$p" "redis-always|$t|$c|$p")"
            done
        done
    done
    echo
    echo "MSET is 10 keys per request. Runs that failed:"
    local any=0
    for key in "${!RESP_FAIL[@]}"; do
        IFS='|' read -r sys c p <<<"$key"
        echo "- $sys -c$c -P$p: ${RESP_FAIL[$key]}"
        any=1
    done
    ((any)) || echo "- none"
    [[ -z "$shale_note" ]] || echo "- shale: $shale_note"
    echo
    # resp_verdict NAME SHALE_KEY REDIS_KEY TARGET
    resp_verdict() {
        local a b
        a=$(med "$2")
        b=$(med "$3")
        if [[ -z "$a" || -z "$b" ]]; then
            echo "- $1: not measured${shale_note:+ ($shale_note)}"
            return
        fi
        awk -v n="$1" -v a="$a" -v b="$b" -v t="$4" 'BEGIN { r = a / b
            printf "- %s: %.0f / %.0f = %.2fx (target >= %.2gx): %s\n", n, a, b, r, t,
                (r >= t ? "MET" : sprintf("NOT MET (%.0f%% short)", (1 - r / t) * 100)) }'
    }
    echo "Targets:"
    resp_verdict "durable SET -c50 -P1, shale vs Redis always" "shale|SET|50|1" "redis-always|SET|50|1" 0.7
    resp_verdict "GET -c50 -P16, shale vs Redis always" "shale|GET|50|16" "redis-always|GET|50|16" 0.8
    resp_verdict "GET -c256 -P16, shale vs Redis always" "shale|GET|256|16" "redis-always|GET|256|16" 0.8
}
if [[ ${BENCH_RESP:-1} == only ]]; then
    build_bins shale
    resp_section
    exit 0
fi
# ==== end of the RESP section's definition; it runs at the end of this script ======================================


need wrk wrk || die "wrk is needed"
HAVE_REDIS=1
if [[ -n "${NO_REDIS:-}" ]]; then
    HAVE_REDIS=0
elif ! need redis-server redis-server || ! need redis-benchmark redis-tools; then
    HAVE_REDIS=0
    log "redis-server could not be installed: Redis rows skipped"
fi
etcd_check
build_bins ceiling
write_lua
write_etcd_lua

# shale's cache charges key + 1 + record (10-byte header + value) + 48 per entry; the uncached instance gets a
# quarter of what the whole data set weighs.
DATA_WEIGHT=$(awk -v n="$KEYS" -v v="$VALUE" 'BEGIN { for (i = 0; i < n; i++) s += 1 + length("k" i) + 10 + v + 48; printf "%d", s }')
UNCACHED_CACHE_BYTES=$((DATA_WEIGHT / 4))

# ---- start everything ----
shale_env=(env -u AUTH_TOKEN -u AUTH_READ_TOKEN -u TLS_CERT -u TLS_KEY -u HOST -u PORT -u DATA_DIR -u SHARD_LIMIT
    -u CACHE_BYTES -u FLUSH_INTERVAL_MS -u HTTP_WORKERS RESP_PORT=off RUST_LOG=warn)
# URL and PID_OF: each system's address and server process (the one whose CPU time is measured).
declare -A URL PID_OF
mkdir -p "$TMP/ceiling-logs"
start ceiling "$CEILING_BIN" --port 0 --keys "$KEYS" --log-dir "$TMP/ceiling-logs" --log-writers 4
URL[ceiling]=$ADDR PID_OF[ceiling]=$LAST_PID
mkdir -p "$TMP/ceiling1-logs"
start ceiling1 "$CEILING_BIN" --port 0 --keys 0 --log-dir "$TMP/ceiling1-logs" --log-writers 1
URL[ceiling1]=$ADDR PID_OF[ceiling1]=$LAST_PID
start shale-imm "${shale_env[@]}" DURABILITY=immediate "$SHALE_BIN" serve --port 0 --data-dir "$TMP/shale-imm"
URL[shale-imm]=$ADDR PID_OF[shale-imm]=$LAST_PID
start shale-ev "${shale_env[@]}" DURABILITY=eventual "$SHALE_BIN" serve --port 0 --data-dir "$TMP/shale-ev"
URL[shale-ev]=$ADDR PID_OF[shale-ev]=$LAST_PID
start shale-unc "${shale_env[@]}" DURABILITY=immediate CACHE_BYTES="$UNCACHED_CACHE_BYTES" "$SHALE_BIN" serve \
    --port 0 --data-dir "$TMP/shale-unc"
URL[shale-unc]=$ADDR PID_OF[shale-unc]=$LAST_PID
start shale-one "${shale_env[@]}" DURABILITY=immediate SHARD_LIMIT=1 "$SHALE_BIN" serve --port 0 \
    --data-dir "$TMP/shale-one"
URL[shale-one]=$ADDR PID_OF[shale-one]=$LAST_PID
for s in shale-imm shale-ev shale-unc shale-one; do wait_http "http://${URL[$s]}/readyz"; done

declare -A RPORT
if ((HAVE_REDIS)); then
    for mode in always everysec; do
        port=$(free_port)
        mkdir -p "$TMP/redis-$mode"
        start_plain "redis-$mode" redis-server --bind 127.0.0.1 --port "$port" --dir "$TMP/redis-$mode" \
            --appendonly yes --appendfsync "$mode" --save "" --daemonize no --logfile ""
        RPORT[$mode]=$port
        PID_OF[redis-$mode]=$LAST_PID
        for ((i = 0; i < 300; i++)); do
            [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && break
            sleep 0.1
        done
        [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] || die "redis ($mode) did not start: $(tail -5 "$TMP/redis-$mode.log")"
    done
fi
if ((HAVE_ETCD)); then
    cport=$(free_port)
    pport=$(free_port)
    start_plain etcd etcd --name bench --data-dir "$TMP/etcd" --logger zap --log-level warn \
        --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
        --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
        --initial-cluster "bench=http://127.0.0.1:$pport"
    URL[etcd]=127.0.0.1:$cport
    PID_OF[etcd]=$LAST_PID
    wait_http "http://${URL[etcd]}/health"
fi
log "ceiling ${URL[ceiling]} (one log writer ${URL[ceiling1]}), shale immediate ${URL[shale-imm]}" \
    "(one shard ${URL[shale-one]}), eventual ${URL[shale-ev]}, uncached ${URL[shale-unc]} (CACHE_BYTES=$UNCACHED_CACHE_BYTES, data weighs $DATA_WEIGHT)," \
    "redis ${RPORT[always]:-none}/${RPORT[everysec]:-none}, etcd ${URL[etcd]:-none}"

# ---- preload ----
for s in shale-imm shale-ev shale-unc shale-one; do
    log "preloading $KEYS keys into $s"
    shale_load "${URL[$s]}" "$KEYS" "$VALUE"
done
if ((HAVE_REDIS)); then
    # The keys redis-benchmark -r uses: key:%012d.
    awk -v n="$KEYS" -v v="$VALUE" 'BEGIN { val = sprintf("%" v "s", ""); gsub(/ /, "v", val)
        for (i = 0; i < n; i++) { k = sprintf("key:%012d", i)
            printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, v, val } }' >"$TMP/redis.resp"
    for mode in always everysec; do
        log "preloading $KEYS keys into redis ($mode)"
        timeout 300 redis-cli -p "${RPORT[$mode]}" --pipe <"$TMP/redis.resp" >"$TMP/redis-pipe.out" 2>&1 ||
            die "redis preload failed: $(cat "$TMP/redis-pipe.out")"
        got=$(redis-cli -p "${RPORT[$mode]}" dbsize)
        [[ $got == "$KEYS" ]] || die "redis ($mode) has $got keys, expected $KEYS"
    done
fi
if ((HAVE_ETCD)); then etcd_load "${URL[etcd]}" "$KEYS" "$VALUE" etcd; fi

# ---- measurement ----
# measure SYSTEM LOAD CONNS SECONDS: prints "rps p50_us p99_us status_errors io_errors requests" (requests: req/s x
# SECONDS for wrk, -n for redis-benchmark, which counts no errors: "-" for those).
declare -A REDIS_N
measure() {
    local sys=$1 load=$2 c=$3 s=$4 res test n csv
    case $sys in
    ceiling | ceiling1)
        case $load in
        GET) res=$(wrk_run load.lua 2 "$c" "$s" "http://${URL[$sys]}" /kvm/k /kv/k 0 "$KEYS" "$VALUE") ;;
        GET-fixed) res=$(wrk_run load.lua 2 "$c" "$s" "http://${URL[$sys]}" /kv/k /kv/k 0 "$KEYS" "$VALUE") ;;
        PUT) res=$(wrk_run load.lua 2 "$c" "$s" "http://${URL[$sys]}" /kvm/k /kv/k 100 "$KEYS" "$VALUE") ;;
        PUT-durable) res=$(wrk_run load.lua 2 "$c" "$s" "http://${URL[$sys]}" /kvm/k /kvd/k 100 "$KEYS" "$VALUE") ;;
        MIX) res=$(wrk_run load.lua 2 "$c" "$s" "http://${URL[$sys]}" /kvm/k /kv/k 10 "$KEYS" "$VALUE") ;;
        esac
        ;;
    shale-*)
        local pct=0
        [[ $load == PUT ]] && pct=100
        [[ $load == MIX ]] && pct=10
        res=$(wrk_run load.lua 2 "$c" "$s" "http://${URL[$sys]}" /kv/k /kv/k "$pct" "$KEYS" "$VALUE")
        ;;
    etcd)
        local mode=get
        [[ $load == PUT ]] && mode=put
        res=$(wrk_run etcd.lua 2 "$c" "$s" "http://${URL[etcd]}" "$mode" "$KEYS" "$VALUE")
        ;;
    redis-*)
        test=GET
        [[ $load == PUT ]] && test=SET
        # -n sized so that the run lasts about $s seconds (from the rate of the warm-up run).
        n=${REDIS_N[$sys|$load|$c]:-20000}
        n=$(awk -v n="$n" -v s="$s" -v w="$WARM_SECONDS" 'BEGIN { printf "%d", n * s / w }')
        csv=$(timeout $((s * 4 + 60)) redis-benchmark -h 127.0.0.1 -p "${RPORT[${sys#redis-}]}" -t "${test,,}" \
            -r "$KEYS" -d "$VALUE" -n "$n" -c "$c" --threads 2 -P 1 --csv 2>&1) || die "redis-benchmark failed: $csv"
        res=$(awk -F'","' -v t="\"$test" -v n="$n" '$1 == t { gsub(/"/, "", $0); split($0, f, ",");
            printf "%s %.0f %.0f - - %d\n", f[2], f[5] * 1000, f[7] * 1000, n }' <<<"$csv")
        [[ -n "$res" ]] || die "no $test line from redis-benchmark: $csv"
        echo "$res"
        return
        ;;
    esac
    echo "$res $(awk -v r="${res%% *}" -v s="$s" 'BEGIN { printf "%.0f", r * s }')"
}
# warm SYSTEM LOAD CONNS: a short run; for Redis it also sizes -n for the measured runs.
warm() {
    local sys=$1 load=$2 c=$3 res
    if [[ $sys == redis-* ]]; then
        res=$(measure "$sys" "$load" "$c" "$WARM_SECONDS")
        REDIS_N[$sys|$load|$c]=$(awk -v r="${res%% *}" -v w="$WARM_SECONDS" 'BEGIN { printf "%d", r * w }')
    else
        measure "$sys" "$load" "$c" "$WARM_SECONDS" >/dev/null
    fi
}

# Each case: system|load|connections.
CASES=()
for c in 256 64; do
    CASES+=("ceiling|GET|$c")
    [[ $c == 256 ]] && CASES+=("ceiling|GET-fixed|$c")
    CASES+=("ceiling|PUT|$c" "shale-imm|GET|$c" "shale-imm|PUT|$c" "shale-ev|GET|$c" "shale-ev|PUT|$c")
    [[ $c == 256 ]] && CASES+=("shale-unc|GET|$c")
    if ((HAVE_REDIS)); then CASES+=("redis-always|GET|$c" "redis-always|PUT|$c" "redis-everysec|GET|$c" "redis-everysec|PUT|$c"); fi
    if ((HAVE_ETCD)); then CASES+=("etcd|GET|$c" "etcd|PUT|$c"); fi
    # Context rows go last in their group (and the MIX rows after them), so that every target row follows the same
    # case whichever optional rows run.
    CASES+=("ceiling|PUT-durable|$c")
    [[ $c == 256 ]] && CASES+=("ceiling1|PUT-durable|$c" "shale-one|PUT|$c")
    if [[ ${BENCH_MIX:-0} == 1 ]]; then CASES+=("ceiling|MIX|$c" "shale-imm|MIX|$c" "shale-ev|MIX|$c"); fi
done

log "warming up (${WARM_SECONDS} s per case, ${#CASES[@]} cases)"
for case in "${CASES[@]}"; do
    IFS='|' read -r sys load c <<<"$case"
    warm "$sys" "$load" "$c"
done
# For shale uncached: the cache hit ratio over its measured runs, and how its misses read the file (on the HTTP
# worker, or on the blocking pool once such reads reach the disk), from its /metrics.
hits0=$(shale_metric "${URL[shale-unc]}" shale_cache_requests_total 'result="hit"')
miss0=$(shale_metric "${URL[shale-unc]}" shale_cache_requests_total 'result="miss"')
pool0=$(shale_metric "${URL[shale-unc]}" shale_cache_miss_reads_total 'path="pool"')

declare -A RPS P50 P99 ERR CPU
LOADS=()
total=$((${#CASES[@]} * BENCH_RUNS))
n=0
for ((run = 1; run <= BENCH_RUNS; run++)); do
    LOADS+=("$(loadavg)")
    log "run $run of $BENCH_RUNS, load average $(loadavg)"
    for case in "${CASES[@]}"; do
        IFS='|' read -r sys load c <<<"$case"
        n=$((n + 1))
        t0=$(cpu_ticks "${PID_OF[$sys]}")
        read -r rps p50 p99 serr ierr reqs <<<"$(measure "$sys" "$load" "$c" "$BENCH_SECONDS")"
        t1=$(cpu_ticks "${PID_OF[$sys]}")
        cpu=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v r="$reqs" 'BEGIN { if (r > 0) printf "%.1f", d * 1e6 / hz / r; else print "nan" }')
        log "[$n/$total] $sys $load -c$c: $rps req/s, p50 $p50 us, p99 $p99 us, errors ${serr}/${ierr}," \
            "server CPU $cpu us/req"
        RPS[$case]="${RPS[$case]:-} $rps"
        CPU[$case]="${CPU[$case]:-} $cpu"
        P50[$case]="${P50[$case]:-} $p50"
        P99[$case]="${P99[$case]:-} $p99"
        if [[ $serr == - ]]; then ERR[$case]=-; else ERR[$case]=$((${ERR[$case]:-0} + serr + ierr)); fi
    done
done
LOADS+=("$(loadavg)")
hits=$(($(shale_metric "${URL[shale-unc]}" shale_cache_requests_total 'result="hit"') - hits0))
misses=$(($(shale_metric "${URL[shale-unc]}" shale_cache_requests_total 'result="miss"') - miss0))
pooled=$(($(shale_metric "${URL[shale-unc]}" shale_cache_miss_reads_total 'path="pool"') - pool0))

# ---- table ----
declare -A MED MP50 MP99 MCPU
for case in "${CASES[@]}"; do
    # shellcheck disable=SC2086
    MED[$case]=$(median ${RPS[$case]})
    # shellcheck disable=SC2086
    MP50[$case]=$(median ${P50[$case]})
    # shellcheck disable=SC2086
    MP99[$case]=$(median ${P99[$case]})
    # shellcheck disable=SC2086
    MCPU[$case]=$(median ${CPU[$case]})
done
label() {
    case $1 in
    ceiling) echo "ceiling (actix + moka)" ;;
    ceiling1) echo "ceiling (actix), one log writer" ;;
    shale-imm) echo "shale immediate" ;;
    shale-ev) echo "shale eventual" ;;
    shale-unc) echo "shale immediate, uncached" ;;
    shale-one) echo "shale immediate, SHARD_LIMIT=1" ;;
    redis-always) echo "Redis appendfsync always" ;;
    redis-everysec) echo "Redis appendfsync everysec" ;;
    etcd) echo "etcd (JSON gateway)" ;;
    esac
}
loadlabel() {
    case "$1|$2" in
    ceiling\|GET) echo "GET (moka)" ;;
    ceiling\|GET-fixed) echo "GET (fixed body)" ;;
    ceiling\|PUT-durable) echo "PUT durable (group-commit log, 4 writers)" ;;
    ceiling\|MIX) echo "MIX (moka GET, 10 % PUT)" ;;
    *\|MIX) echo "MIX (90 % GET, 10 % PUT)" ;;
    ceiling1\|PUT-durable) echo "PUT durable (group-commit log, 1 writer)" ;;
    shale-unc\|GET) echo "GET uncached" ;;
    redis-*\|PUT) echo "SET" ;;
    etcd\|PUT) echo "PUT (POST /v3/kv/put)" ;;
    etcd\|GET) echo "GET (POST /v3/kv/range)" ;;
    *) echo "$2" ;;
    esac
}
# The Redis row a shale row is compared with: immediate with always, eventual with everysec.
redis_peer() {
    case $1 in
    shale-imm) echo redis-always ;;
    shale-ev) echo redis-everysec ;;
    esac
}

echo "shale: $(describe_bin); $(machine)"
echo "$KEYS keys, $VALUE-byte values, uniform random keys; ${BENCH_SECONDS} s x $BENCH_RUNS runs, medians;" \
    "load average at the start of each run and at the end: $(printf '%s; ' "${LOADS[@]}")"
echo
echo "| system | load | conns | req/s | p50 ms | p99 ms | errors | server CPU us/req | x ceiling | x Redis |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for case in "${CASES[@]}"; do
    IFS='|' read -r sys load c <<<"$case"
    base="ceiling|GET|$c"
    [[ $load == PUT ]] && base="ceiling|PUT|$c"
    [[ $load == MIX ]] && base="ceiling|MIX|$c"
    xc=$(ratio "${MED[$case]}" "${MED[$base]}")
    [[ $sys == ceiling* ]] && xc=""
    xr=""
    peer=$(redis_peer "$sys")
    if [[ -n $peer && -n "${MED[$peer|$load|$c]:-}" ]]; then xr=$(ratio "${MED[$case]}" "${MED[$peer|$load|$c]}"); fi
    printf '| %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %s |\n' "$(label "$sys")" "$(loadlabel "$sys" "$load")" \
        "$c" "${MED[$case]}" "$(ms "${MP50[$case]}")" "$(ms "${MP99[$case]}")" "${ERR[$case]}" "${MCPU[$case]}" "$xc" "$xr"
done
[[ -n "$ETCD_NOTE" ]] && echo "| etcd | - | - | - | - | - | - | - | - | $ETCD_NOTE |"
echo
echo "shale uncached: CACHE_BYTES=$UNCACHED_CACHE_BYTES for a data set weighing $DATA_WEIGHT bytes in cache terms" \
    "($(ratio "$DATA_WEIGHT" "$UNCACHED_CACHE_BYTES")x); cache hit ratio over its runs: $(ratio "$hits" $((hits + misses)))" \
    "($hits hits, $misses misses); misses read on the blocking pool: $pooled."
echo "Redis: redis-benchmark --threads 2 -P 1 -r $KEYS -d $VALUE (p50/p99 from its --csv); errors are not counted there."
echo "Server CPU us/req: user + system CPU time of the server process over each run divided by its requests" \
    "(req/s x seconds; redis-benchmark's -n), median of the runs; the load generators' CPU is not in it."
echo

# ---- targets ----
# verdict NAME VALUE BASE TARGET [le]: "NAME: value/base = 0.42x (target >= 0.3x): MET".
verdict() {
    local name=$1 a=$2 b=$3 t=$4
    if [[ -z "$a" || -z "$b" ]]; then
        echo "- $name: not measured"
        return
    fi
    awk -v n="$name" -v a="$a" -v b="$b" -v t="$t" 'BEGIN { r = a / b
        printf "- %s: %.0f / %.0f = %.2fx (target >= %.2gx): %s\n", n, a, b, r, t, (r >= t ? "MET" : sprintf("NOT MET (%.0f%% short)", (1 - r / t) * 100)) }'
}
latency() {
    local name=$1 us=$2 t_ms=$3
    awk -v n="$name" -v us="$us" -v t="$t_ms" 'BEGIN { v = us / 1000
        printf "- %s: %.2f ms (target <= %g ms): %s\n", n, v, t, (v <= t ? "MET" : sprintf("NOT MET (%.1fx the target)", v / t)) }'
}
echo "Targets (-c256 unless said):"
verdict "cached GET vs ceiling moka GET" "${MED[shale-imm|GET|256]}" "${MED[ceiling|GET|256]}" 0.85
verdict "cached GET vs Redis GET (appendfsync always instance)" "${MED[shale-imm|GET|256]}" "${MED[redis-always|GET|256]:-}" 0.75
verdict "immediate PUT vs ceiling PUT" "${MED[shale-imm|PUT|256]}" "${MED[ceiling|PUT|256]}" 0.3
verdict "immediate PUT vs Redis appendfsync always SET" "${MED[shale-imm|PUT|256]}" "${MED[redis-always|PUT|256]:-}" 0.5
verdict "immediate PUT vs etcd put" "${MED[shale-imm|PUT|256]}" "${MED[etcd|PUT|256]:-}" 8
verdict "eventual PUT vs ceiling PUT" "${MED[shale-ev|PUT|256]}" "${MED[ceiling|PUT|256]}" 0.6
verdict "uncached GET vs ceiling moka GET" "${MED[shale-unc|GET|256]}" "${MED[ceiling|GET|256]}" 0.4
latency "p99 immediate PUT at -c64" "${MP99[shale-imm|PUT|64]}" 10
latency "p99 cached GET at -c64" "${MP99[shale-imm|GET|64]}" 2
echo
echo "Context (no target): what a durable store of shale's shape can do here, and how close shale comes:"
ratio_line() { echo "- $1: $(ratio "$2" "$3")x"; }
ratio_line "the durable ceiling's PUT vs etcd put (shale's target against etcd is 8x)" "${MED[ceiling|PUT-durable|256]}" "${MED[etcd|PUT|256]:-}"
ratio_line "immediate PUT vs the durable ceiling's PUT" "${MED[shale-imm|PUT|256]}" "${MED[ceiling|PUT-durable|256]}"
ratio_line "the durable ceiling with one log writer vs etcd put" "${MED[ceiling1|PUT-durable|256]}" "${MED[etcd|PUT|256]:-}"
ratio_line "immediate PUT with SHARD_LIMIT=1 vs etcd put" "${MED[shale-one|PUT|256]}" "${MED[etcd|PUT|256]:-}"

# ==== RESP section, defined above ================================================================================
if [[ ${BENCH_RESP:-1} != 0 ]]; then resp_section; fi
