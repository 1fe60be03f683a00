#!/usr/bin/env bash
# Restore a shale store from an archive made by scripts/archive.sh (.tar.gz, or .zip with --zip).
#
#   scripts/restore.sh ARCHIVE [DATA_DIR] [--force]
#
# Stop the server first. The archive is unpacked into a temporary dir, then `shale restore` verifies every
# checksum (SHA256SUMS) and the manifest before it writes anything, refuses a data dir that is not empty
# unless --force is given, and leaves a data dir the server starts from.
#
# DATA_DIR defaults to $DATA_DIR, else ./data. SHALE_BIN picks the binary (default: `shale` on PATH, else
# bin/shale of a release tarball beside this script, else ./target/release/shale).
# A .zip archive needs `unzip`; when it is missing and this runs as root on Debian/Ubuntu, it is installed
# with apt-get.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
say() { echo "restore: $*" >&2; }
die() {
    say "$*"
    exit 1
}
usage() {
    echo "usage: $0 ARCHIVE [DATA_DIR] [--force]" >&2
    exit 2
}

force=()
positional=()
for arg in "$@"; do
    case "$arg" in
    --force) force=(--force) ;;
    -h | --help) usage ;;
    -*) die "unknown option $arg" ;;
    *) positional+=("$arg") ;;
    esac
done
((${#positional[@]} >= 1 && ${#positional[@]} <= 2)) || usage
archive=${positional[0]}
data_dir=${positional[1]:-${DATA_DIR:-./data}}
[[ -f "$archive" ]] || die "$archive: no such file"

if [[ -n "${SHALE_BIN:-}" ]]; then
    shale=$SHALE_BIN
elif command -v shale >/dev/null 2>&1; then
    shale=$(command -v shale)
elif [[ -x "$script_dir/../bin/shale" ]]; then
    shale="$script_dir/../bin/shale"
elif [[ -x ./target/release/shale ]]; then
    shale=./target/release/shale
elif [[ -x "$script_dir/../target/release/shale" ]]; then
    shale="$script_dir/../target/release/shale"
else
    die "no shale binary: set SHALE_BIN, put shale on PATH, or build it (cargo build --release)"
fi

# Replacing the files of a running server would corrupt what it serves.
if [[ -d "$data_dir" ]] && command -v fuser >/dev/null 2>&1; then
    for f in "$data_dir"/manifest.json "$data_dir"/shard-*; do
        [[ -e "$f" ]] || continue
        if fuser -s "$f" 2>/dev/null; then
            die "a process holds $f open: stop the shale server before restoring into $data_dir"
        fi
    done
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/shale-restore.XXXXXX")
trap 'rm -rf "$work"' EXIT

case "$archive" in
*.zip)
    if ! command -v unzip >/dev/null 2>&1; then
        # unzip is not part of a minimal Debian; install it from the distribution's packages when we can.
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            say "unzip is not installed; installing it with apt-get"
            apt-get install -y -qq unzip >&2 || { apt-get update -qq >&2 && apt-get install -y -qq unzip >&2; } ||
                die "could not install unzip (apt-get install unzip)"
        else
            die "unzip is not installed (Debian/Ubuntu: sudo apt-get install unzip)"
        fi
    fi
    unzip -q "$archive" -d "$work" || die "$archive: cannot unpack"
    ;;
*.tar.gz | *.tgz | *.tar)
    tar -C "$work" --no-same-owner -xf "$archive" || die "$archive: cannot unpack"
    ;;
*) die "$archive: not a .tar.gz or .zip archive" ;;
esac

# The backup is the one directory of the archive that holds SHA256SUMS (or the archive's top level).
mapfile -t found < <(find "$work" -maxdepth 2 -name SHA256SUMS -type f)
((${#found[@]} == 1)) || die "$archive: expected one backup (a SHA256SUMS file), found ${#found[@]}"
from=$(dirname "${found[0]}")

say "restoring $archive into $data_dir"
"$shale" restore --from "$from" --data-dir "$data_dir" "${force[@]}"
