#!/usr/bin/env bash
# What the write-ahead log's device costs a durable PUT.
#
# Usage: scripts/bench-log-device.sh > table.md          (progress on stderr, the table on stdout)
#
# Runs scripts/bench-ab.sh with one shale binary on both sides (DURABILITY=immediate, defaults otherwise):
#   before  every file on the data dir's own disk, as users run it;
#   after   the shards' logs (shard-*.wal) moved to tmpfs (/dev/shm) through symlinks, where a write is a memory
#           copy and fdatasync returns at once; the redb files stay on the disk.
# The difference in CPU per request is what writing and fdatasyncing the log costs on this machine's disk (the
# guest's share: I/O submissions, completions, the context switches of waiting), and the "after" req/s is what
# shale would do if its log cost nothing. The "after" layout is NOT one to run: a log on tmpfs loses acknowledged
# writes on power loss.
#
# Environment: SHALE_BIN (default: a release build of this tree), BENCH_CASES (default "put-c256 put-c64"), and
# bench-ab.sh's BENCH_SECONDS, BENCH_RUNS, BENCH_KEYS.
set -euo pipefail

# shellcheck source=scripts/lib/bench.sh
. "$(dirname "$0")/lib/bench.sh"
bench_init log-device

[[ -d /dev/shm && $(stat -f -c %T /dev/shm) == tmpfs ]] || die "/dev/shm is not a tmpfs here"
build_bins shale
SHALE_BIN=$(realpath "$SHALE_BIN")
SHM=$(mktemp -d /dev/shm/shale-log-device.XXXXXX)
trap 'rm -rf "$SHM"; bench_cleanup' EXIT

# The "after" binary: lays the data dir out with a first start and a clean stop (so the manifest and every shard
# file are shale's own), moves the logs to tmpfs, leaves symlinks in their place, then runs shale as asked.
cat >"$TMP/shale-log-on-tmpfs" <<EOF
#!/usr/bin/env bash
set -euo pipefail
bin='$SHALE_BIN'
shm='$SHM'
EOF
cat >>"$TMP/shale-log-on-tmpfs" <<'EOF'
args=("$@")
dir=""
for ((i = 0; i + 1 < ${#args[@]}; i++)); do
    [[ ${args[i]} == --data-dir ]] && dir=${args[i + 1]}
done
[[ -n $dir ]] || { echo "shale-log-on-tmpfs: no --data-dir" >&2; exit 2; }
"$bin" serve --port 0 --data-dir "$dir" >"$dir.first.out" 2>&1 &
pid=$!
for ((i = 0; i < 600; i++)); do
    grep -q '^LISTENING ' "$dir.first.out" && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir.first.out" >&2; exit 1; }
    sleep 0.1
done
kill -TERM "$pid"
wait "$pid" || true
mkdir "$shm/$$"
moved=0
for f in "$dir"/shard-*.wal; do
    [[ -e $f ]] || continue
    mv "$f" "$shm/$$/"
    ln -s "$shm/$$/${f##*/}" "$f"
    moved=$((moved + 1))
done
((moved > 0)) || { echo "shale-log-on-tmpfs: no shard-*.wal in $dir (DURABILITY=eventual?)" >&2; exit 1; }
echo "shale-log-on-tmpfs: $moved logs moved to $shm/$$" >&2
exec "$bin" "$@"
EOF
chmod +x "$TMP/shale-log-on-tmpfs"

log "before: every file on $(df --output=source "${SHALE_BENCH_DIR:-${TMPDIR:-/tmp}}" | tail -n1); after: logs on tmpfs"
BEFORE_BIN=$SHALE_BIN AFTER_BIN=$TMP/shale-log-on-tmpfs BENCH_CASES=${BENCH_CASES:-put-c256 put-c64} \
    "$(dirname "$0")/bench-ab.sh" | tee "$TMP/table.md"
# The log's share: before - after, in CPU us per request (the last two columns of the table).
echo
awk -F'|' '$2 ~ /put-c/ { gsub(/ /, "", $2); printf "%s: the log on the disk costs %.1f us of CPU per durable PUT (%.0f%% of it)\n",
    $2, $8 - $9, 100 * ($8 - $9) / $8 }' "$TMP/table.md"
