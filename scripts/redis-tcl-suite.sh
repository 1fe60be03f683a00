#!/usr/bin/env bash
# Runs Redis 7.0.15's own Tcl test suite, in external mode, against a running RESP server (shale's RESP listener,
# or a real redis-server to prove the harness).
#
# Usage: scripts/redis-tcl-suite.sh [--host H] [--port P] [--units "unit/protocol unit/type/incr ..."]
#                                   [--skiplist FILE] [--start redis|shale] [--force]
#
#   --host, --port  the server (default $RESP_HOST or 127.0.0.1, $RESP_PORT or 6380)
#   --units         the units to run, one test_helper process each (default: unit/protocol unit/type/incr
#                   unit/type/string unit/keyspace)
#   --skiplist      the skiplist (default scripts/lib/redis-tcl-skiplist.txt; /dev/null for none). One test per
#                   line, `<exact test name> # <why>` (`/regexp # <why>` for a pattern); lines starting with `#`
#                   and blank lines are comments; a why starting with `(conditional)` marks a test the unit
#                   defines only on some servers.
#   --start redis   start the installed redis-server on a free loopback port (no persistence) and use it
#   --start shale   build and start shale (SHALE_BIN to use another binary) with RESP_ALLOW_FLUSH=1 and
#                   MAX_VALUE_BYTES=8 MiB (the suite stores a 4 MB value), and use its RESP port
#   --force         run even though the server holds keys
#
# The suite's source comes from Debian's `redis` source package (the upstream tarball redis_7.0.15.orig.tar.gz,
# the version Debian bookworm ships, checked against its SHA-256), cached under .tools/ (git-ignored). Each unit
# runs as
#   tclsh tests/test_helper.tcl --host H --port P --singledb --ignore-encoding --ignore-digest
#     --tags "-needs:debug -needs:repl -needs:save -needs:config-maxmemory -needs:reset"
#     --single <unit> --clients 1 --durable --timeout T --skipfile <skiplist without comments>
# THE SUITE RUNS `FLUSHALL` AND `FUNCTION FLUSH` ON THE SERVER before every block of tests, so the script
# refuses a server that already holds keys (DBSIZE > 0) unless --force.
#
# Prints one line per unit, `unit/protocol: N passed, M failed, K skipped` (skipped = by the skiplist; tests the
# --tags exclude are counted apart), then a total line. Full logs: .tools/redis-tcl-logs/<unit>.log.
# Exit status: 0 when every unit ran to its end with no failed test, 1 otherwise, 2 when it could not run.
#
# Environment: RESP_HOST, RESP_PORT (defaults for --host/--port), REDIS_TCL_TIMEOUT (seconds per unit, 900),
# SHALE_BIN.
set -euo pipefail

# shellcheck source=scripts/lib/resp.sh
. "$(dirname "$0")/lib/resp.sh"
resp_init tcl-suite
root=$PWD

version=7.0.15
sha256=4b1dc4ee6d622a09fff9c6777191209750fb5e5a725ef78ea012d6eef4c22982
urls=(
    "https://deb.debian.org/debian/pool/main/r/redis/redis_$version.orig.tar.gz"
    "https://deb.debian.org/debian-security/pool/updates/main/r/redis/redis_$version.orig.tar.gz"
)
tools=$root/.tools
tarball=$tools/redis_$version.orig.tar.gz
src=$tools/redis-$version
logs=$tools/redis-tcl-logs
default_units="unit/protocol unit/type/incr unit/type/string unit/keyspace"
tags="-needs:debug -needs:repl -needs:save -needs:config-maxmemory -needs:reset"

host=${RESP_HOST:-127.0.0.1}
port=${RESP_PORT:-6380}
units=$default_units
skiplist=$root/scripts/lib/redis-tcl-skiplist.txt
start=""
force=0
limit=${REDIS_TCL_TIMEOUT:-900}
usage() { sed -n '5,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while (($#)); do
    case $1 in
    --host) host=${2:?}; shift 2 ;;
    --port) port=${2:?}; shift 2 ;;
    --units) units=${2:?}; shift 2 ;;
    --skiplist) skiplist=${2:?}; shift 2 ;;
    --start) start=${2:?}; shift 2 ;;
    --force) force=1; shift ;;
    -h | --help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
    esac
done
[[ -r "$skiplist" ]] || resp_die "cannot read the skiplist $skiplist"

need tclsh tcl || resp_die "tclsh is missing and apt-get install tcl failed"

# ---- the skiplist, comments removed (test_helper matches each whole line against the test name) ----
clean=$RESP_TMP/skiplist
conditional=$RESP_TMP/conditional
: >"$conditional"
awk -v file="$skiplist" -v conditional="$conditional" '
    /^[[:space:]]*(#|$)/ { next }
    {
        i = index($0, " # ")
        if (i == 0) { printf "%s:%d: no \" # why\" after the test name\n", file, NR > "/dev/stderr"; bad = 1; next }
        name = substr($0, 1, i - 1)
        sub(/[[:space:]]+$/, "", name)
        why = substr($0, i + 3)
        if (why ~ /^[[:space:]]*$/) { printf "%s:%d: empty reason\n", file, NR > "/dev/stderr"; bad = 1 }
        print name
        if (why ~ /^\(conditional\)/) print name > conditional
    }
    END { exit bad }' "$skiplist" >"$clean" || resp_die "fix the skiplist"
resp_log "skiplist $skiplist: $(wc -l <"$clean") tests"

# ---- the suite's source ----
if [[ ! -f "$src/.complete" ]]; then
    mkdir -p "$tools"
    if [[ ! -f "$tarball" ]] || ! echo "$sha256  $tarball" | sha256sum -c --status; then
        rm -f "$tarball"
        for url in "${urls[@]}"; do
            resp_log "fetching $url"
            if curl -fsSL --retry 2 --max-time 300 -o "$tarball.part" "$url" &&
                echo "$sha256  $tarball.part" | sha256sum -c --status; then
                mv "$tarball.part" "$tarball"
                break
            fi
            resp_log "failed or wrong SHA-256: $url"
            rm -f "$tarball.part"
        done
        [[ -f "$tarball" ]] || resp_die "could not fetch redis_$version.orig.tar.gz"
    fi
    rm -rf "$src"
    tar -xzf "$tarball" -C "$tools"
    [[ -f "$src/tests/test_helper.tcl" ]] || resp_die "$tarball holds no redis-$version/tests/test_helper.tcl"
    touch "$src/.complete"
fi

# ---- the server ----
case $start in
"") ;;
redis) resp_start_redis; host=$RESP_HOST; port=$RESP_PORT ;;
shale)
    resp_start_shale RESP_ALLOW_FLUSH=1 MAX_VALUE_BYTES=$((8 * 1024 * 1024))
    host=$RESP_HOST
    port=$RESP_PORT
    ;;
*) resp_die "--start takes redis or shale, not $start" ;;
esac
pong=$(resp_call "$host" "$port" PING)
[[ "$pong" == "+PONG" ]] || resp_die "no +PONG from $host:$port (got '${pong:-nothing}'); is the server running?"
keys=$(resp_call "$host" "$port" DBSIZE)
if [[ "$keys" != ":0" ]] && ((!force)); then
    resp_die "$host:$port answers DBSIZE with '$keys'; the suite runs FLUSHALL, so pass --force to run it anyway"
fi

# ---- run ----
mkdir -p "$logs"
total_ok=0 total_err=0 total_skip=0 status=0
summary=()
run_logs=()
for unit in $units; do
    [[ -f "$src/tests/$unit.tcl" ]] || resp_die "no unit $unit in the $version suite"
    log=$logs/${unit//\//_}.log
    run_logs+=("$log")
    resp_log "running $unit (log: ${log#"$root"/})"
    rc=0
    # TERM=dumb: test_helper colours its output only on xterm-like terminals.
    (cd "$src" && TERM=dumb timeout --kill-after=10 $((limit + 30)) tclsh tests/test_helper.tcl --host "$host" \
        --port "$port" --singledb --ignore-encoding --ignore-digest --tags "$tags" --single "$unit" --clients 1 \
        --durable --timeout "$limit" --skipfile "$clean") >"$log" 2>&1 || rc=$?
    ok=$(grep -c '^\[ok\]: ' "$log" || true)
    err=$(grep -c '^\[err\]: ' "$log" || true)
    skip=$(grep -c '^\[skip\]: ' "$log" || true)
    ignored=$(grep -c '^\[ignore\]: ' "$log" || true)
    note=""
    if ! grep -q "done\]: $unit " "$log"; then
        # An exception outside a test (e.g. a FLUSHALL error between blocks), a crash or a timeout: the unit
        # stopped early, so the tests after that point were never counted. Count the unit as one failure.
        note="the unit did not run to its end (exit $rc); counted as one failure"
        ((rc != 124)) || note="the unit did not run to its end (timed out); counted as one failure"
        err=$((err + 1))
    fi
    if ((err > 0)); then
        status=1
        echo "---- $unit: failures"
        # Each [err] block: the test name and file, then the assertion (up to 6 lines).
        awk '/^\[err\]: / { n = 7 } /^\[(ok|skip|ignore)\]: / { n = 0 } n > 0 { print; n-- }
             /^\[exception\]: / { x = 12 } x > 0 { print; x-- }' "$log"
        if [[ -n "$note" ]] && ! grep -q '^\[exception\]: ' "$log"; then tail -n 15 "$log"; fi
    fi
    summary+=("$unit: $ok passed, $err failed, $skip skipped")
    ((ignored == 0)) || summary+=("    ($ignored more excluded by --tags or --singledb)")
    [[ -z "$note" ]] || summary+=("    ($note)")
    total_ok=$((total_ok + ok))
    total_err=$((total_err + err))
    total_skip=$((total_skip + skip))
done

# Skiplist entries no test matched: stale names (or names of tests in a unit that stopped early). Entries marked
# "(conditional)" name tests a unit defines only on some servers, so their absence says nothing.
skipped=$(sed -n 's/^\[skip\]: //p' "${run_logs[@]}" | cat - "$conditional" | sort -u)
unused=$(comm -13 <(printf '%s\n' "$skipped") <(sort -u "$clean") || true)
# An entry that starts with `/` is a regular expression (test_helper's own rule): used when it matched a name.
unused=$(while IFS= read -r entry; do
    [[ -z "$entry" ]] && continue
    if [[ $entry == /* ]] && grep -qE -- "${entry:1}" <<<"$skipped"; then continue; fi
    printf '%s\n' "$entry"
done <<<"$unused")
echo
printf '%s\n' "${summary[@]}"
echo "total: $total_ok passed, $total_err failed, $total_skip skipped"
# Only meaningful when every unit the skiplist is written for ran.
if [[ -n "$unused" && "$units" == "$default_units" ]]; then
    echo "skiplist entries that matched no test in this run ($(wc -l <<<"$unused")):"
    while IFS= read -r name; do echo "    $name"; done <<<"$unused"
fi
exit "$status"
