#!/usr/bin/env bash
# Linearizability and durability of a three-node cluster under faults, over many rounds.
#
# Each round starts a fresh three-node cluster on loopback, runs concurrent HTTP clients on every node (reads,
# writes, If-Match compare-and-sets, counter increments on a few shared keys, unique writes on the side) while
# one fault is injected: kill -9 of the leader of the keys' shard and its restart, SIGSTOP of that leader past
# the election timeout, kill -9 of a follower, a partition that cuts the leader off and heals (when iptables is
# available and this runs as root). Every history goes through the linearizability checker
# (tests/common/linearizability.rs) and every acknowledged unique write must be on every replica afterwards.
#
#   scripts/cluster-chaos.sh [ROUNDS]      (default 10; a round is one history per fault)
#
# Prints: histories N, operations M, linearizable N, acknowledged lost 0. Exits non-zero otherwise.
# Three nodes and the clients share this machine's cores.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-${CHAOS_ROUNDS:-10}}
[[ $ROUNDS =~ ^[0-9]+$ ]] && (( ROUNDS > 0 )) || { echo "usage: $0 [ROUNDS > 0]" >&2; exit 2; }
echo "cluster chaos: $ROUNDS round(s), release build" >&2
out=$(CHAOS_ROUNDS=$ROUNDS cargo test --release --test cluster_chaos -- --nocapture 2>&1) || {
    printf '%s\n' "$out" | tail -40 >&2
    printf '%s\n' "$out" | grep -E '^histories ' || true
    exit 1
}
printf '%s\n' "$out" | grep -E 'not linearizable' >&2 || true
printf '%s\n' "$out" | grep -E '^histories '
