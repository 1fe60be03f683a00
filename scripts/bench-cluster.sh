#!/usr/bin/env bash
# A 3-node shale cluster side by side with a 3-member etcd, a single shale node and the replicated durable
# ceiling, in one run on this machine.
#
# Usage: scripts/bench-cluster.sh > cluster.md          (progress on stderr, the table on stdout)
#        DURATION=3 BENCH_RUNS=1 NO_SHALE_CLUSTER=1 scripts/bench-cluster.sh     (a short run without the cluster)
#
# Systems (all on 127.0.0.1, each with its own temp data dirs, all started first, stopped by PID at exit):
#   replicated ceiling  examples/replicated_ceiling.rs, three processes: the leader's PUT /kv/{key} is appended to
#                       its log (group commit, one write and one fdatasync per batch) and streamed to two followers
#                       that do the same and ack; 204 once the leader's fdatasync and one follower's ack cover it.
#                       No Raft, no state machine: the most a server that replicates and fsyncs before it answers
#                       can do here.
#   etcd x3             etcd-server from apt, three members, through member 1's JSON gateway (POST /v3/kv/put,
#                       /v3/kv/range; a range is linearizable unless "serializable": true), as bench-compare.sh
#                       drives its single member.
#   shale x1            target/release/shale, DURABILITY=immediate (a 2xx PUT was fdatasynced).
#   shale x3            three target/release/shale nodes (NODE_ADDR, CLUSTER_PORT, JOIN of all three, REPLICAS=3,
#                       DURABILITY=immediate), formed by `shale cluster init` against node 1 and ready once
#                       /readyz answers 200 on all three; every load goes to node 1. Skipped, with the reason,
#                       when a node does not start, init fails, or a node is not ready within 120 s.
# Loads (wrk -t2, keep-alive, the Lua scripts of scripts/lib/bench.sh, etcd's as bench-compare.sh drives it):
#   BENCH_KEYS keys (default 100000) preloaded into etcd and both shales, 32-byte values, uniform random keys:
#   PUT -c256, PUT -c64    durable PUT replacing a preloaded key (etcd: put); the -c64 row gives the p99
#   GET -c256              shale x1: cached GET; shale x3: linearizable GET (plain GET /kv/{key});
#                          etcd: linearizable range
#   GET stale -c256        shale x3: GET /kv/{key}?consistency=stale; etcd: serializable range
# Then, once every load has run: the time from kill -9 of the leader of shard 0 (shale x3; from GET
# /cluster/status) and of etcd's leader, to the first write acknowledged by a surviving node (a PUT started every
# ~20 ms, overlapping, each given up after 2 s; at most 30 s). Runs are interleaved (run 1 of every case, then run 2, ...), each case warmed up first; the table
# shows medians of BENCH_RUNS runs, and the server CPU per request summed over a system's processes.
#
# Environment: DURATION (seconds per measured run; default BENCH_SECONDS, 10), BENCH_RUNS (3), BENCH_KEYS (100000),
# SHALE_BIN / RCEILING_BIN (prebuilt binaries; default: build release from this tree), NO_ETCD=1 (skip etcd),
# NO_SHALE_CLUSTER=1 (skip the 3-node shale).
set -euo pipefail

BENCH_SECONDS=${DURATION:-${BENCH_SECONDS:-10}}
# shellcheck source=scripts/lib/bench.sh
. "$(dirname "$0")/lib/bench.sh"
bench_init cluster
DURATION=$BENCH_SECONDS

KEYS=${BENCH_KEYS:-100000}
VALUE=32
WARM_SECONDS=$((DURATION < 3 ? DURATION : 3))
# A key of partition 0 (the top 10 bits of its XXH3-64 are zero), so of shard 0 whatever SHARD_LIMIT is (see
# src/placement.rs): the failover PUTs need the shard whose leader is killed.
FAILOVER_KEY=failover-1959
FAILOVER_SECONDS=30
FAILOVER_ATTEMPT_SECONDS=2

# ---- shale cluster: which node leads shard 0 ---------------------------------------------------------------------
# cluster_leader_of_shard0 URL: prints the cluster address (a NODE_ADDR, host:port) of the node that leads shard 0
# according to URL/cluster/status, or nothing. The shape it reads (adjust here when /cluster/status differs):
#   {"nodes": [{"id": "<node id>", "cluster_addr": "<NODE_ADDR>", "api_addr": ..., ...}, ...],
#    "shards": [{"shard": 0, "leader": "<node id>" | null, ...}, ...]}
# Also accepted: "shards" and "nodes" as objects keyed by shard number / node id; a shard's number in "id"; the
# leader as a node id, a NODE_ADDR, or an object with "id" and/or an address; a node's address in "cluster_addr",
# "node_addr", "addr" or "address", its id in "id" or "node_id".
cluster_leader_of_shard0() {
    curl -fsS --max-time 5 "$1/cluster/status" 2>/dev/null | python3 -c '
import json, sys

ADDR_KEYS = ("cluster_addr", "node_addr", "addr", "address")
ID_KEYS = ("id", "node_id")


def field(obj, keys):
    if isinstance(obj, dict):
        for k in keys:
            if obj.get(k) is not None:
                return obj[k]
    return None


def listed(value, key_name):
    """A list of objects; an object keyed by id becomes a list with the key under key_name."""
    if isinstance(value, dict):
        return [dict(v, **{key_name: k}) if isinstance(v, dict) else {key_name: k, "leader": v} for k, v in value.items()]
    return value if isinstance(value, list) else []


status = json.load(sys.stdin)
shards = listed(status.get("shards"), "shard")
shard0 = next((s for s in shards if str(field(s, ("shard", "id"))) == "0"), None)
leader = field(shard0, ("leader", "leader_id", "leader_node"))
if isinstance(leader, dict):
    leader = field(leader, ADDR_KEYS) or field(leader, ID_KEYS)
if leader is None:
    sys.exit(0)
for node in listed(status.get("nodes"), "id"):
    if str(field(node, ID_KEYS)) == str(leader) and field(node, ADDR_KEYS):
        print(field(node, ADDR_KEYS))
        sys.exit(0)
if isinstance(leader, str) and ":" in leader:
    print(leader)
' 2>/dev/null || true
}

# ---- functions ---------------------------------------------------------------------------------------------------
# free_ports N: N distinct TCP ports free on 127.0.0.1 right now (all bound at once, then released).
free_ports() {
    python3 -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# first_ack_ms T0_NS CMD...: from T0_NS (date +%s%N) on, starts CMD (which prints an HTTP status, and gives up
# after FAILOVER_ATTEMPT_SECONDS) in the background every ~20 ms until one attempt answers 2xx or FAILOVER_SECONDS
# have passed; prints the milliseconds from T0_NS to the first 2xx answer, or "none". Attempts overlap, so one
# stuck on the dead leader does not hold back the next.
first_ack_ms() {
    local t0=$1 acks pids=() first
    shift
    acks=$(mktemp "$TMP/acks.XXXXXX")
    while (($(date +%s%N) - t0 < FAILOVER_SECONDS * 1000000000)) && [[ ! -s "$acks" ]]; do
        (if [[ $("$@" 2>/dev/null) == 2[0-9][0-9] ]]; then date +%s%N >>"$acks"; fi) &
        pids+=("$!")
        sleep 0.02
    done
    wait "${pids[@]}" 2>/dev/null || true
    first=$(sort -n "$acks" | head -n1)
    if [[ -n "$first" ]]; then echo $(((first - t0) / 1000000)); else echo none; fi
}

# rat A B: A / B to two decimals, "-" when either is missing.
rat() {
    if [[ -n "${1:-}" && -n "${2:-}" && $1 != nan && $2 != nan ]]; then ratio "$1" "$2"; else printf -- '-'; fi
}

# ---- binaries and tools ------------------------------------------------------------------------------------------
need wrk wrk || die "wrk is needed"
etcd_check
HAVE_CLUSTER=1
CLUSTER_NOTE=""
if [[ -n "${NO_SHALE_CLUSTER:-}" ]]; then
    HAVE_CLUSTER=0
    CLUSTER_NOTE="3-node shale skipped (NO_SHALE_CLUSTER set)"
fi

target=${CARGO_TARGET_DIR:-target}
build=()
[[ -n "${SHALE_BIN:-}" ]] || build+=(--bin shale)
[[ -n "${RCEILING_BIN:-}" ]] || build+=(--example replicated_ceiling)
if ((${#build[@]})); then
    log "building release from this tree (${build[*]})"
    cargo build --release --quiet "${build[@]}" || die "build failed"
fi
SHALE_BIN=${SHALE_BIN:-$target/release/shale}
RCEILING_BIN=${RCEILING_BIN:-$target/release/examples/replicated_ceiling}
write_lua
# stale.lua: load.lua with ?consistency=stale after every GET's key.
sed 's/return wrk.format("GET", get_prefix .. k, nil, nil)/return wrk.format("GET", get_prefix .. k .. "?consistency=stale", nil, nil)/' \
    "$TMP/load.lua" >"$TMP/stale.lua"
grep -q 'consistency=stale' "$TMP/stale.lua" || die "could not derive stale.lua from load.lua"
# etcd.lua (mode sget: a serializable range) and etcdload.lua.
write_etcd_lua

# ---- start everything ----
shale_env=(env -u AUTH_TOKEN -u AUTH_READ_TOKEN -u TLS_CERT -u TLS_KEY -u HOST -u PORT -u DATA_DIR -u SHARD_LIMIT
    -u CACHE_BYTES -u FLUSH_INTERVAL_MS -u HTTP_WORKERS -u NODE_ADDR -u CLUSTER_PORT -u JOIN -u REPLICAS
    -u CLUSTER_SECRET -u REQUEST_TIMEOUT_MS RESP_PORT=off RUST_LOG=warn)
# URL: the address each system's loads go to; PIDS_OF: all its processes (their CPU time is summed).
declare -A URL PIDS_OF

start rc-follower1 "$RCEILING_BIN" --role follower --peer-port 0 --log-dir "$TMP/rc-follower1"
rc_f1=$ADDR rc_pids=$LAST_PID
start rc-follower2 "$RCEILING_BIN" --role follower --peer-port 0 --log-dir "$TMP/rc-follower2"
rc_f2=$ADDR rc_pids="$rc_pids $LAST_PID"
start rc-leader "$RCEILING_BIN" --role leader --port 0 --followers "$rc_f1,$rc_f2" --log-dir "$TMP/rc-leader"
URL[rceil]=$ADDR PIDS_OF[rceil]="$LAST_PID $rc_pids"

start shale1 "${shale_env[@]}" DURABILITY=immediate "$SHALE_BIN" serve --port 0 --data-dir "$TMP/shale1"
URL[shale1]=$ADDR PIDS_OF[shale1]=$LAST_PID
wait_http "http://${URL[shale1]}/readyz"

declare -a ETCD_URL ETCD_PID
if ((HAVE_ETCD)); then
    read -r -a ports <<<"$(free_ports 6)"
    members=""
    for i in 1 2 3; do members+="${members:+,}e$i=http://127.0.0.1:${ports[i + 2]}"; done
    for i in 1 2 3; do
        cport=${ports[i - 1]} pport=${ports[i + 2]}
        start_plain "etcd$i" etcd --name "e$i" --data-dir "$TMP/etcd$i" --logger zap --log-level warn \
            --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
            --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
            --initial-cluster "$members" --initial-cluster-state new --initial-cluster-token shale-bench-cluster
        ETCD_URL[i]=127.0.0.1:$cport ETCD_PID[i]=$LAST_PID
    done
    for i in 1 2 3; do wait_http "http://${ETCD_URL[i]}/health"; done
    URL[etcd3]=${ETCD_URL[1]} PIDS_OF[etcd3]="${ETCD_PID[*]}"
fi

declare -a CPORT HPORT NODE_PID
stop_cluster() {
    local pid
    for pid in "${NODE_PID[@]}"; do stop_pid "$pid"; done
    HAVE_CLUSTER=0
}
# start_cluster: starts three nodes, runs `shale cluster init`, waits for /readyz on all three; on failure sets
# CLUSTER_NOTE, stops the nodes and returns 1.
start_cluster() {
    local i join="" out rc=0 deadline
    read -r -a ports <<<"$(free_ports 6)"
    for i in 1 2 3; do
        CPORT[i]=${ports[i - 1]} HPORT[i]=${ports[i + 2]}
        join+="${join:+,}127.0.0.1:${CPORT[i]}"
    done
    for i in 1 2 3; do
        if ! start_soft "shale3-$i" "${shale_env[@]}" NODE_ADDR="127.0.0.1:${CPORT[i]}" CLUSTER_PORT="${CPORT[i]}" \
            HOST=127.0.0.1 PORT="${HPORT[i]}" DATA_DIR="$TMP/shale3-$i" JOIN="$join" REPLICAS=3 \
            DURABILITY=immediate "$SHALE_BIN" serve; then
            NODE_PID[i]=$LAST_PID
            CLUSTER_NOTE="node $i did not start: $(tail -n 3 "$TMP/shale3-$i.err" | tr '\n' ' ')"
            return 1
        fi
        NODE_PID[i]=$LAST_PID
    done
    out=$(timeout 60 "$SHALE_BIN" cluster init --url "http://127.0.0.1:${HPORT[1]}" 2>&1) || rc=$?
    if ((rc != 0)); then
        CLUSTER_NOTE="\`shale cluster init\` failed (exit $rc): $(head -n 3 <<<"$out" | tr '\n' ' ')"
        return 1
    fi
    log "shale cluster init: $(head -n 1 <<<"$out")"
    deadline=$((SECONDS + 120))
    for i in 1 2 3; do
        until [[ $(curl -s -o /dev/null --max-time 2 -w '%{http_code}' "http://127.0.0.1:${HPORT[i]}/readyz") == 200 ]]; do
            if ((SECONDS >= deadline)) || ! kill -0 "${NODE_PID[i]}" 2>/dev/null; then
                CLUSTER_NOTE="node $i not ready (/readyz not 200) within 120 s of init"
                return 1
            fi
            sleep 0.1
        done
    done
}
if ((HAVE_CLUSTER)); then
    if start_cluster; then
        URL[shale3]=127.0.0.1:${HPORT[1]} PIDS_OF[shale3]="${NODE_PID[*]}"
    else
        CLUSTER_NOTE="3-node shale skipped: $CLUSTER_NOTE"
        log "$CLUSTER_NOTE"
        stop_cluster
    fi
fi
log "replicated ceiling ${URL[rceil]}, shale ${URL[shale1]}, etcd ${ETCD_URL[*]:-none}, shale cluster ${URL[shale3]:-none}"

# ---- preload ----
log "preloading $KEYS keys into shale x1"
shale_load "${URL[shale1]}" "$KEYS" "$VALUE"
if ((HAVE_CLUSTER)); then
    log "preloading $KEYS keys into shale x3 (node 1)"
    # In a subshell: a failed load skips the cluster instead of ending the run.
    if ! (shale_load "${URL[shale3]}" "$KEYS" "$VALUE"); then
        CLUSTER_NOTE="3-node shale skipped: could not preload $KEYS keys: $(tail -n 2 "$TMP/seqput.out" | tr '\n' ' ')"
        log "$CLUSTER_NOTE"
        stop_cluster
    fi
fi
if ((HAVE_ETCD)); then etcd_load "${URL[etcd3]}" "$KEYS" "$VALUE" "etcd x3"; fi

# ---- measurement ----
# measure SYSTEM LOAD CONNS SECONDS: prints "rps p50_us p99_us status_errors io_errors".
measure() {
    local sys=$1 load=$2 c=$3 s=$4 url="http://${URL[$1]}"
    case "$sys|$load" in
    rceil\|PUT) wrk_run load.lua 2 "$c" "$s" "$url" /kv/k /kv/k 100 "$KEYS" "$VALUE" ;;
    shale*\|PUT) wrk_run load.lua 2 "$c" "$s" "$url" /kv/k /kv/k 100 "$KEYS" "$VALUE" ;;
    shale*\|GET) wrk_run load.lua 2 "$c" "$s" "$url" /kv/k /kv/k 0 "$KEYS" "$VALUE" ;;
    shale3\|GET-stale) wrk_run stale.lua 2 "$c" "$s" "$url" /kv/k /kv/k 0 "$KEYS" "$VALUE" ;;
    etcd3\|PUT) wrk_run etcd.lua 2 "$c" "$s" "$url" put "$KEYS" "$VALUE" ;;
    etcd3\|GET) wrk_run etcd.lua 2 "$c" "$s" "$url" get "$KEYS" "$VALUE" ;;
    etcd3\|GET-stale) wrk_run etcd.lua 2 "$c" "$s" "$url" sget "$KEYS" "$VALUE" ;;
    *) die "no load $load for $sys" ;;
    esac
}
# sys_ticks SYSTEM: CPU ticks of all its processes so far.
sys_ticks() {
    local pid sum=0 t
    for pid in ${PIDS_OF[$1]}; do
        t=$(cpu_ticks "$pid" 2>/dev/null) || t=0
        sum=$((sum + ${t:-0}))
    done
    echo "$sum"
}

# Each case: system|load|connections.
CASES=("rceil|PUT|256" "rceil|PUT|64")
if ((HAVE_ETCD)); then CASES+=("etcd3|PUT|256" "etcd3|PUT|64" "etcd3|GET|256" "etcd3|GET-stale|256"); fi
CASES+=("shale1|PUT|256" "shale1|PUT|64" "shale1|GET|256")
if ((HAVE_CLUSTER)); then CASES+=("shale3|PUT|256" "shale3|PUT|64" "shale3|GET|256" "shale3|GET-stale|256"); fi

log "warming up (${WARM_SECONDS} s per case, ${#CASES[@]} cases)"
for case in "${CASES[@]}"; do
    IFS='|' read -r sys load c <<<"$case"
    # In a subshell: a warm-up without a result is reported by wrk_run and the run goes on.
    (measure "$sys" "$load" "$c" "$WARM_SECONDS" >/dev/null) || true
done

declare -A RPS P50 P99 ERR CPU FAILED
LOADS=()
total=$((${#CASES[@]} * BENCH_RUNS))
n=0
for ((run = 1; run <= BENCH_RUNS; run++)); do
    LOADS+=("$(loadavg)")
    log "run $run of $BENCH_RUNS, load average $(loadavg)"
    for case in "${CASES[@]}"; do
        IFS='|' read -r sys load c <<<"$case"
        n=$((n + 1))
        t0=$(sys_ticks "$sys")
        read -r rps p50 p99 serr ierr <<<"$(measure "$sys" "$load" "$c" "$DURATION")"
        t1=$(sys_ticks "$sys")
        if [[ -z "${rps:-}" ]]; then
            log "[$n/$total] $sys $load -c$c: no result from wrk; this run is left out"
            FAILED[$case]=$((${FAILED[$case]:-0} + 1))
            continue
        fi
        cpu=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v r="$rps" -v s="$DURATION" \
            'BEGIN { if (r > 0) printf "%.1f", d * 1e6 / hz / (r * s); else print "nan" }')
        log "[$n/$total] $sys $load -c$c: $rps req/s, p50 $p50 us, p99 $p99 us, errors $serr/$ierr, CPU $cpu us/req"
        RPS[$case]="${RPS[$case]:-} $rps"
        P50[$case]="${P50[$case]:-} $p50"
        P99[$case]="${P99[$case]:-} $p99"
        CPU[$case]="${CPU[$case]:-} $cpu"
        ERR[$case]=$((${ERR[$case]:-0} + serr + ierr))
    done
done
LOADS+=("$(loadavg)")

# ---- failover: kill -9 a leader, time the next acknowledged write ----
# FAILOVER[SYSTEM]: the milliseconds (or "-" when not measured, "none" when no write was acknowledged);
# FAILOVER_NOTE[SYSTEM]: what was killed and written through, or why nothing was.
declare -A FAILOVER=([shale3]=- [etcd3]=-) FAILOVER_NOTE=([shale3]="" [etcd3]="")
# failover SYSTEM KILLED PID THROUGH ADDR PUT WRITE: when a write `PUT ADDR before` (PUT prints the HTTP status)
# answers 2xx, kill -9 of PID, the leader (KILLED names it, e.g. "node 2 (leader of shard 0)"), then the time to
# the first 2xx of `PUT ADDR after` (first_ack_ms), ADDR being a surviving node (THROUGH names it, WRITE the write).
failover() {
    local sys=$1 killed=$2 pid=$3 through=$4 addr=$5 put=$6 write=$7 t0
    if [[ $("$put" "$addr" before) != 2[0-9][0-9] ]]; then
        FAILOVER_NOTE[$sys]="a ${write%% *} to $through failed before the kill"
        return
    fi
    log "kill -9 of $sys $killed, $write through $through"
    t0=$(date +%s%N)
    kill -KILL "$pid"
    FAILOVER[$sys]=$(first_ack_ms "$t0" "$put" "$addr" after)
    FAILOVER_NOTE[$sys]="$killed killed, $write through $through"
}
shale_put_status() {
    curl -s -o /dev/null --max-time "$FAILOVER_ATTEMPT_SECONDS" -w '%{http_code}' -X PUT --data-binary "$2" "http://$1/kv/$FAILOVER_KEY"
}
if ((HAVE_CLUSTER)); then
    leader="" killed=""
    for ((i = 0; i < 50; i++)); do
        leader=$(cluster_leader_of_shard0 "http://${URL[shale3]}")
        [[ -n "$leader" ]] && break
        sleep 0.1
    done
    for i in 1 2 3; do [[ "$leader" == *":${CPORT[i]}" ]] && killed=$i; done
    if [[ -n "$killed" ]]; then
        survivor=$((killed == 1 ? 2 : 1))
        failover shale3 "node $killed (leader of shard 0)" "${NODE_PID[killed]}" "node $survivor" \
            "127.0.0.1:${HPORT[survivor]}" shale_put_status "PUT /kv/$FAILOVER_KEY"
    else
        FAILOVER_NOTE[shale3]="leader of shard 0 not found in /cluster/status (got \"$leader\"): $(curl -s --max-time 5 \
            "http://${URL[shale3]}/cluster/status" | head -c 300 | tr '\n' ' ')"
    fi
    log "shale x3 failover: ${FAILOVER[shale3]} ms; ${FAILOVER_NOTE[shale3]}"
fi
# etcd_status URL: "member_id leader_id" from the member's /v3/maintenance/status.
etcd_status() {
    curl -fsS --max-time 5 -X POST -d '{}' "http://$1/v3/maintenance/status" |
        python3 -c 'import json, sys; s = json.load(sys.stdin); print(s["header"]["member_id"], s["leader"])'
}
etcd_put_status() {
    curl -s -o /dev/null --max-time "$FAILOVER_ATTEMPT_SECONDS" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        "http://$1/v3/kv/put" -d "{\"key\":\"$(printf failover | base64)\",\"value\":\"$(printf %s "$2" | base64)\"}"
}
if ((HAVE_ETCD)); then
    killed=""
    for i in 1 2 3; do
        read -r member leader <<<"$(etcd_status "${ETCD_URL[i]}" || true)"
        [[ -n "${member:-}" && "$member" == "${leader:-}" ]] && killed=$i
    done
    if [[ -n "$killed" ]]; then
        survivor=$((killed == 1 ? 2 : 1))
        failover etcd3 "member $killed (leader)" "${ETCD_PID[killed]}" "member $survivor" "${ETCD_URL[survivor]}" \
            etcd_put_status put
    else
        FAILOVER_NOTE[etcd3]="no member reported itself leader"
    fi
    log "etcd x3 failover: ${FAILOVER[etcd3]} ms; ${FAILOVER_NOTE[etcd3]}"
fi

# ---- table ----
declare -A MED MP50 MP99 MCPU
for case in "${CASES[@]}"; do
    [[ -n "${RPS[$case]:-}" ]] || continue
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
    rceil) echo "replicated ceiling (3 processes)" ;;
    etcd3) echo "etcd x3 (JSON gateway, member 1)" ;;
    shale1) echo "shale x1 immediate" ;;
    shale3) echo "shale x3 immediate (node 1)" ;;
    esac
}
loadlabel() {
    case "$1|$2" in
    rceil\|PUT) echo "PUT durable (leader + 1 of 2 followers)" ;;
    etcd3\|PUT) echo "put (POST /v3/kv/put)" ;;
    etcd3\|GET) echo "range, linearizable" ;;
    etcd3\|GET-stale) echo "range, serializable" ;;
    shale1\|PUT | shale3\|PUT) echo "PUT durable" ;;
    shale1\|GET) echo "GET cached" ;;
    shale3\|GET) echo "GET linearizable" ;;
    shale3\|GET-stale) echo "GET ?consistency=stale" ;;
    esac
}
med() { echo "${MED[$1]:-}"; }

echo "## 3-node shale, 3-member etcd, single-node shale and the replicated ceiling"
echo
echo "shale: $(describe_bin); $(etcd --version 2>/dev/null | head -n1 || echo 'etcd: -'); $(machine)"
echo "$KEYS keys, $VALUE-byte values, uniform random keys, wrk -t2; ${DURATION} s x $BENCH_RUNS runs, medians;" \
    "load average at the start of each run and at the end: $(printf '%s; ' "${LOADS[@]}")"
echo "All on one machine: each system's three processes (nodes, members, leader and followers) and the load" \
    "generator share these $(nproc) cores, and the idle systems stay up while another is measured."
echo
echo "| system | load | conns | req/s | p50 ms | p99 ms | errors | server CPU us/req |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for case in "${CASES[@]}"; do
    IFS='|' read -r sys load c <<<"$case"
    failed=""
    [[ -z "${FAILED[$case]:-}" ]] || failed=" (${FAILED[$case]} of $BENCH_RUNS runs gave no result)"
    if [[ -z "${MED[$case]:-}" ]]; then
        printf '| %s | %s | %s | - | - | - | - | no result%s |\n' "$(label "$sys")" "$(loadlabel "$sys" "$load")" "$c" \
            "$failed"
        continue
    fi
    printf '| %s | %s | %s | %.0f | %s | %s | %s%s | %s |\n' "$(label "$sys")" "$(loadlabel "$sys" "$load")" "$c" \
        "${MED[$case]}" "$(ms "${MP50[$case]}")" "$(ms "${MP99[$case]}")" "${ERR[$case]:-0}" "$failed" "${MCPU[$case]}"
done
[[ -n "$ETCD_NOTE" ]] && echo "| etcd x3 | - | - | - | - | - | - | $ETCD_NOTE |"
[[ -n "$CLUSTER_NOTE" ]] && echo "| shale x3 | - | - | - | - | - | - | $CLUSTER_NOTE |"
echo
echo "Server CPU us/req: user + system CPU time of all the system's processes over each run divided by its" \
    "requests (req/s x seconds), median of the runs; wrk's CPU is not in it."
echo
echo "Ratios (medians of this run):"
echo
echo "| ratio | -c256 | -c64 |"
echo "|---|---:|---:|"
row() { printf '| %s | %s | %s |\n' "$1" "$2" "$3"; }
row "3-node shale PUT / 3-node etcd put" "$(rat "$(med 'shale3|PUT|256')" "$(med 'etcd3|PUT|256')")" \
    "$(rat "$(med 'shale3|PUT|64')" "$(med 'etcd3|PUT|64')")"
row "3-node shale PUT / single-node shale PUT" "$(rat "$(med 'shale3|PUT|256')" "$(med 'shale1|PUT|256')")" \
    "$(rat "$(med 'shale3|PUT|64')" "$(med 'shale1|PUT|64')")"
row "3-node shale PUT / replicated ceiling PUT" "$(rat "$(med 'shale3|PUT|256')" "$(med 'rceil|PUT|256')")" \
    "$(rat "$(med 'shale3|PUT|64')" "$(med 'rceil|PUT|64')")"
row "3-node shale linearizable GET / etcd linearizable range" \
    "$(rat "$(med 'shale3|GET|256')" "$(med 'etcd3|GET|256')")" ""
row "3-node shale stale GET / single-node shale cached GET" \
    "$(rat "$(med 'shale3|GET-stale|256')" "$(med 'shale1|GET|256')")" ""
row "context: replicated ceiling PUT / 3-node etcd put" "$(rat "$(med 'rceil|PUT|256')" "$(med 'etcd3|PUT|256')")" \
    "$(rat "$(med 'rceil|PUT|64')" "$(med 'etcd3|PUT|64')")"
row "context: 3-node shale stale GET / etcd serializable range" \
    "$(rat "$(med 'shale3|GET-stale|256')" "$(med 'etcd3|GET-stale|256')")" ""
echo
echo "p99 of durable PUT at -c64: replicated ceiling $(ms "${MP99[rceil|PUT|64]:-nan}") ms," \
    "etcd x3 $(ms "${MP99[etcd3|PUT|64]:-nan}") ms, shale x1 $(ms "${MP99[shale1|PUT|64]:-nan}") ms," \
    "shale x3 $(ms "${MP99[shale3|PUT|64]:-nan}") ms."
echo
echo "From kill -9 of a leader to the first acknowledged write through a surviving node (a write started every" \
    "~20 ms, each given up after ${FAILOVER_ATTEMPT_SECONDS} s, for at most ${FAILOVER_SECONDS} s):"
if ((HAVE_CLUSTER)); then
    echo "- shale x3: ${FAILOVER[shale3]} ms (${FAILOVER_NOTE[shale3]})"
else
    echo "- shale x3: not measured (${CLUSTER_NOTE})"
fi
if ((HAVE_ETCD)); then
    echo "- etcd x3: ${FAILOVER[etcd3]} ms (${FAILOVER_NOTE[etcd3]})"
else
    echo "- etcd x3: not measured ($ETCD_NOTE)"
fi
echo
echo "Reminder: three nodes plus the load generator share $(nproc) cores here; a cluster on three machines has" \
    "three times the CPU and disks, so read the ratios measured side by side, not the absolute rates."
