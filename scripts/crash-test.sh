#!/usr/bin/env bash
# Crash test: kill -9 shale at random moments under concurrent durable writes, restart it on the same
# data dir, and check that every acknowledged PUT, DELETE and counter increment survived.
#
#   scripts/crash-test.sh [CYCLES]          # default 20; CYCLES=200 on demand
#   PROFILE=debug scripts/crash-test.sh 5   # debug build instead of release
#   SEED=123 scripts/crash-test.sh          # repeat a run (the seed is printed)
#   DURABILITY=eventual scripts/crash-test.sh     # eventual loses nothing to kill -9 either (the kernel keeps its log)
#   DURABILITY=eventual POWER_LOSS=1 scripts/crash-test.sh 2   # negative control: the logs are deleted after each
#                                                   # kill (worse than a power loss): must report losses and exit 1
#
# The logic lives in examples/crash_writer.rs (tests/faults.rs runs 3 cycles of it under `cargo test`).
# Prints `cycles N, acknowledged M, lost 0`; exits 1 on any loss, 2 when the test itself could not run.
set -euo pipefail
cd "$(dirname "$0")/.."

cycles="${1:-${CYCLES:-20}}"
profile="${PROFILE:-release}"
case "$profile" in
  release) flag=(--release) ;;
  debug) flag=() ;;
  *) echo "PROFILE must be release or debug, got $profile" >&2; exit 2 ;;
esac

echo "building ($profile): shale and examples/crash_writer" >&2
cargo build "${flag[@]}" --quiet --bin shale --example crash_writer

target="${CARGO_TARGET_DIR:-target}/$profile"
args=(--shale "$target/shale" --cycles "$cycles" --durability "${DURABILITY:-immediate}")
if [[ -n "${SEED:-}" ]]; then
  args+=(--seed "$SEED")
fi
if [[ -n "${POWER_LOSS:-}" ]]; then
  args+=(--power-loss)
fi
if [[ -n "${WRITERS:-}" ]]; then
  args+=(--writers "$WRITERS")
fi
exec "$target/examples/crash_writer" "${args[@]}"
