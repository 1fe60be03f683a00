#!/usr/bin/env bash
# Archive a shale store into archive-<UTC timestamp>.tar.gz, or .zip with --zip.
#
#   scripts/archive.sh            # prints the path of the archive it wrote (.tar.gz)
#   scripts/archive.sh --zip      # the same as a .zip (needs `zip`; when it is missing and this runs as root on
#                                 # Debian/Ubuntu, it is installed with apt-get)
#
# - When a server answers at SHALE_URL, the archive is a consistent online backup taken through it
#   (`shale backup`): the server keeps serving; every shard is captured at one instant.
# - Otherwise the closed files of DATA_DIR are copied, after `shale compact` folded the shards' write-ahead logs
#   into them (after a crash the latest acknowledged writes may be only there). A redb file that a process holds
#   open is refused (checked with `fuser` when it is installed), because a copy of a live file is not a safe backup.
# Either way the archive holds one directory with manifest.json, shard-<i>.redb and SHA256SUMS, which
# scripts/restore.sh (`shale restore`) verifies before it restores.
#
# Environment:
#   SHALE_URL       server to ask (default http://127.0.0.1:4000); AUTH_TOKEN is sent as the bearer token
#   DATA_DIR        data dir to copy when no server answers (default ./data)
#   ARCHIVE_DIR     where the archive is written (default: the current dir)
#   SHALE_BIN       the shale binary (default: `shale` on PATH, else bin/shale of a release tarball beside
#                   this script, else ./target/release/shale)
#   BACKUP_STAGING  a directory the server can write to and this script can read, for the online backup
#                   (default ${TMPDIR:-/tmp}); under the systemd unit, whose /tmp is private, use
#                   /var/lib/shale-backups
#   READY_TIMEOUT   seconds to wait for a server that answers but is still warming up (default 60)
#   SHALE_ARCHIVE_FORMAT  tar (default) or zip; --zip or --tar on the command line overrides it
set -euo pipefail

format=${SHALE_ARCHIVE_FORMAT:-tar}
for arg in "$@"; do
    case "$arg" in
    --zip) format=zip ;;
    --tar) format=tar ;;
    -h | --help)
        sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
    *)
        echo "archive: unknown argument '$arg' (usage: $0 [--zip | --tar])" >&2
        exit 2
        ;;
    esac
done
case "$format" in
tar) ext=tar.gz ;;
zip) ext=zip ;;
*)
    echo "archive: unknown SHALE_ARCHIVE_FORMAT '$format' (tar or zip)" >&2
    exit 2
    ;;
esac

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SHALE_URL=${SHALE_URL:-http://127.0.0.1:4000}
SHALE_URL=${SHALE_URL%/}
DATA_DIR=${DATA_DIR:-./data}
ARCHIVE_DIR=${ARCHIVE_DIR:-.}
BACKUP_STAGING=${BACKUP_STAGING:-${TMPDIR:-/tmp}}
READY_TIMEOUT=${READY_TIMEOUT:-60}

say() { echo "archive: $*" >&2; }
die() {
    say "$*"
    exit 1
}

find_shale() {
    if [[ -n "${SHALE_BIN:-}" ]]; then
        echo "$SHALE_BIN"
    elif command -v shale >/dev/null 2>&1; then
        command -v shale
    elif [[ -x "$script_dir/../bin/shale" ]]; then
        echo "$script_dir/../bin/shale"
    elif [[ -x ./target/release/shale ]]; then
        echo ./target/release/shale
    elif [[ -x "$script_dir/../target/release/shale" ]]; then
        echo "$script_dir/../target/release/shale"
    else
        die "no shale binary: set SHALE_BIN, put shale on PATH, or build it (cargo build --release)"
    fi
}

# The HTTP status of GET $SHALE_URL/readyz, or 000 when nothing answers.
readyz_status() {
    if command -v curl >/dev/null 2>&1; then
        curl -s -o /dev/null -m 5 -w '%{http_code}' "$SHALE_URL/readyz" 2>/dev/null || true
        return
    fi
    # No curl: a plain HTTP/1.0 request over bash's /dev/tcp (http:// URLs only).
    local hostport=${SHALE_URL#http://} host port line
    if [[ "$hostport" == "$SHALE_URL" ]]; then
        say "curl is not installed and $SHALE_URL is not an http:// URL; install curl"
        echo 000
        return
    fi
    hostport=${hostport%%/*}
    host=${hostport%:*}
    port=${hostport##*:}
    [[ "$port" == "$hostport" ]] && port=80
    host=${host#[}
    host=${host%]}
    line=$(timeout 5 bash -c "exec 3<>/dev/tcp/$host/$port && printf 'GET /readyz HTTP/1.0\r\nHost: %s\r\n\r\n' '$hostport' >&3 && head -n1 <&3" 2>/dev/null || true)
    if [[ "$line" =~ ^HTTP/[0-9.]+\ ([0-9]{3}) ]]; then
        echo "${BASH_REMATCH[1]}"
    else
        echo 000
    fi
}

# Files of $1 that some process holds open (empty when none, or when fuser is missing).
open_files() {
    local f held=()
    for f in "$1"/manifest.json "$1"/shard-*; do
        [[ -e "$f" ]] || continue
        if fuser -s "$f" 2>/dev/null; then
            held+=("$f")
        fi
    done
    echo "${held[@]:-}"
}

stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$ARCHIVE_DIR"
archive_dir=$(cd "$ARCHIVE_DIR" && pwd)
archive="$archive_dir/archive-$stamp.$ext"
for i in 1 2 3 4 5 6 7 8 9; do
    [[ -e "$archive" ]] || break
    archive="$archive_dir/archive-$stamp-$i.$ext"
done
[[ -e "$archive" ]] && die "$archive already exists"

if [[ "$format" == zip ]] && ! command -v zip >/dev/null 2>&1; then
    # zip is not part of a minimal Debian; install it from the distribution's packages when we can.
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "zip is not installed; installing it with apt-get"
        apt-get install -y -qq zip >&2 || { apt-get update -qq >&2 && apt-get install -y -qq zip >&2; } ||
            die "could not install zip (apt-get install zip)"
    else
        die "zip is not installed (Debian/Ubuntu: sudo apt-get install zip)"
    fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/shale-archive.XXXXXX")
online_out=""
partial="$archive.partial"
cleanup() {
    rm -rf "$work" "$partial" || true
    if [[ -n "$online_out" ]]; then rm -rf "$online_out" || true; fi
}
trap cleanup EXIT
name="shale-backup-$stamp"

status=$(readyz_status)
if [[ "$status" != 000 ]]; then
    # A server answers: ask it for a consistent backup.
    shale=$(find_shale)
    deadline=$((SECONDS + READY_TIMEOUT))
    while [[ "$status" != 200 ]]; do
        ((SECONDS < deadline)) || die "$SHALE_URL/readyz answers $status, not 200, after ${READY_TIMEOUT}s"
        sleep 1
        status=$(readyz_status)
    done
    mkdir -p "$BACKUP_STAGING"
    staging=$(cd "$BACKUP_STAGING" && pwd)
    online_out="$staging/shale-archive-$stamp-$$"
    say "server at $SHALE_URL is up: taking an online backup into $online_out"
    "$shale" backup --url "$SHALE_URL" --out "$online_out" >&2 || die "shale backup failed"
    if [[ ! -f "$online_out/SHA256SUMS" ]]; then
        online_out=""
        die "the server wrote its backup where this script cannot see it (a container, another host, or a" \
            "private /tmp under systemd): set BACKUP_STAGING to a directory both share"
    fi
    if mv "$online_out" "$work/$name" 2>/dev/null; then
        online_out=""
    else
        cp -R "$online_out" "$work/$name"
    fi
else
    # No server: copy the closed files.
    say "no server answers at $SHALE_URL: copying the closed files of $DATA_DIR"
    [[ -f "$DATA_DIR/manifest.json" ]] || die "$DATA_DIR/manifest.json not found: not a shale data dir (set DATA_DIR)"
    if grep -q '"reshard"' "$DATA_DIR/manifest.json"; then
        die "$DATA_DIR is in the middle of a resharding: start the server once to finish it, then archive"
    fi
    shards=$(sed -n 's/.*"shards"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$DATA_DIR/manifest.json" | head -n1)
    [[ -n "$shards" ]] || die "cannot read the shard count from $DATA_DIR/manifest.json"
    if command -v fuser >/dev/null 2>&1; then
        busy=$(open_files "$DATA_DIR")
        [[ -z "$busy" ]] || die "a process holds these files open (a server not answering at $SHALE_URL?):" \
            "$busy; stop it or point SHALE_URL at it"
    else
        say "warning: fuser is not installed (Debian: apt-get install psmisc), so this script cannot check" \
            "that no server holds the files; make sure shale is stopped"
    fi
    # After a crash, acknowledged writes may still be only in the shards' write-ahead logs (shard-<i>.wal): fold
    # them into the files, which are all a backup holds (`shale compact` replays each log, then compacts).
    shale=$(find_shale)
    "$shale" compact --data-dir "$DATA_DIR" >&2 || die "shale compact --data-dir $DATA_DIR failed"
    mkdir "$work/$name"
    cp -p "$DATA_DIR/manifest.json" "$work/$name/"
    for ((i = 0; i < shards; i++)); do
        f="$DATA_DIR/shard-$i.redb"
        [[ -f "$f" ]] || die "$f is missing (the manifest lists $shards shards)"
        cp -p "$f" "$work/$name/"
    done
    if command -v fuser >/dev/null 2>&1; then
        busy=$(open_files "$DATA_DIR")
        [[ -z "$busy" ]] || die "a process opened $busy while it was copied; the copy is discarded"
    fi
    (
        cd "$work/$name"
        files=(manifest.json)
        for ((i = 0; i < shards; i++)); do files+=("shard-$i.redb"); done
        sha256sum "${files[@]}" >SHA256SUMS
    )
fi

if [[ "$format" == tar ]]; then
    tar -C "$work" -czf "$partial" "$name"
else
    (cd "$work" && zip -q -r "$partial" "$name")
fi
mv "$partial" "$archive"
say "wrote $archive"
echo "$archive"
