# shellcheck shell=bash
# need CMD PACKAGE: installs the Debian PACKAGE with apt-get (through sudo when not root) when CMD is missing;
# fails when it still is. Sourced by bench-lib.sh and resp-lib.sh.
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
