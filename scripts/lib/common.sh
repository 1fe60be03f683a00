# shellcheck shell=bash
# Helpers shared by the bench and RESP scripts (sourced by lib/bench.sh and lib/resp.sh). Source it, do not run it.

# need CMD PACKAGE: installs the Debian PACKAGE with apt-get (through sudo when not root) when CMD is missing;
# fails when it still is.
need() {
    command -v "$1" >/dev/null && return 0
    echo "[$(date +%H:%M:%S)] installing $2 (for $1)" >&2
    local sudo=""
    if [[ $(id -u) -ne 0 ]]; then sudo=sudo; fi
    $sudo apt-get install -y -qq "$2" >/dev/null 2>&1 ||
        { $sudo apt-get update -qq >/dev/null 2>&1 && $sudo apt-get install -y -qq "$2" >/dev/null 2>&1; } ||
        return 1
    command -v "$1" >/dev/null
}

# terminate PID [SIGNAL]: sends SIGNAL (default TERM), waits up to 30 s for the process to end, then SIGKILLs it,
# and reaps it.
terminate() {
    local pid=$1 sig=${2:-TERM} i
    if kill -"$sig" "$pid" 2>/dev/null; then
        for ((i = 0; i < 300; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
