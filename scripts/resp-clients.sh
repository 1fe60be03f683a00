#!/usr/bin/env bash
# Runs tests/resp_clients.py (redis-py, RESP2 and RESP3, sync and asyncio, both pipeline kinds, inline and
# D-Boutique sessions, HTTP<->RESP) against a RESP server.
#
# Usage: scripts/resp-clients.sh [--host H] [--port P] [--start redis|shale] [-- PYTEST_ARGS...]
#
#   --host, --port  the server (default $RESP_HOST or 127.0.0.1, $RESP_PORT or 6380)
#   --start redis   start the installed redis-server on a free loopback port (no persistence) and test it with
#                   TARGET=redis (the tests' shale-only expectations are skipped or inverted)
#   --start shale   build and start shale (SHALE_BIN to use another binary) with its HTTP API and RESP listener
#                   on free loopback ports and test it with TARGET=shale and SHALE_URL set
#
# Installs redis-py and pytest, pinned, from PyPI into .venv-resp/ (git-ignored). Against a server started
# elsewhere, set TARGET=shale (and SHALE_URL=http://host:port for the HTTP<->RESP tests, SHALE_TOKEN when it needs
# a token) in the environment; without them the run expects Redis's behaviour where the two differ.
# Exit status: pytest's (0 = every test passed or was skipped); 2 when the server could not be reached or started.
#
# Environment: RESP_HOST, RESP_PORT, TARGET, SHALE_URL, SHALE_TOKEN, SHALE_BIN, RESP_CLIENTS_TIMEOUT (seconds for
# the whole pytest run, default 600).
set -euo pipefail

# shellcheck source=scripts/lib/resp.sh
. "$(dirname "$0")/lib/resp.sh"
resp_init resp-clients
root=$PWD
venv=$root/.venv-resp
redis_py_version=8.1.0
pytest_version=9.2.0

host=${RESP_HOST:-127.0.0.1}
port=${RESP_PORT:-6380}
start=""
usage() { sed -n '5p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while (($#)); do
    case $1 in
    --host) host=${2:?}; shift 2 ;;
    --port) port=${2:?}; shift 2 ;;
    --start) start=${2:?}; shift 2 ;;
    --) shift; break ;;
    -h | --help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
    esac
done

if ! "$venv/bin/python" -c "import redis, pytest, sys
sys.exit(redis.__version__ != '$redis_py_version' or pytest.__version__ != '$pytest_version')" 2>/dev/null; then
    resp_log "installing redis==$redis_py_version and pytest==$pytest_version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "redis==$redis_py_version" "pytest==$pytest_version"
fi

case $start in
"") ;;
redis)
    resp_start_redis
    host=$RESP_HOST
    port=$RESP_PORT
    export TARGET=redis
    unset SHALE_URL SHALE_TOKEN
    ;;
shale)
    # shellcheck disable=SC2119  # no extra environment
    resp_start_shale
    host=$RESP_HOST
    port=$RESP_PORT
    export TARGET=shale SHALE_URL
    unset SHALE_TOKEN
    ;;
*) resp_die "--start takes redis or shale, not $start" ;;
esac
pong=$(resp_call "$host" "$port" PING)
if [[ "$pong" != "+PONG" && "$pong" != "-NOAUTH"* ]]; then
    resp_die "no +PONG from $host:$port (got '${pong:-nothing}'); is the server running?"
fi

export RESP_HOST=$host RESP_PORT=$port
target=${TARGET:-}
if [[ -z "$target" ]]; then
    target=redis
    [[ -z "${SHALE_URL:-}" ]] || target=shale
fi
resp_log "testing $host:$port as TARGET=$target${SHALE_URL:+ (HTTP $SHALE_URL)}"
status=0
PYTHONDONTWRITEBYTECODE=1 timeout --kill-after=10 "${RESP_CLIENTS_TIMEOUT:-600}" \
    "$venv/bin/pytest" -p no:cacheprovider -q -rs "$root/tests/resp_clients.py" "$@" || status=$?
[[ $status == 124 ]] && resp_log "pytest did not finish within ${RESP_CLIENTS_TIMEOUT:-600} s"
exit "$status"
