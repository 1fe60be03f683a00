#!/usr/bin/env bash
# Fuzzes the HTTP API with schemathesis against the server's own /openapi.json.
#
# Installs schemathesis (and openapi-spec-validator) from PyPI into .venv/ (git-ignored), builds shale, starts it
# on a fresh temp data dir and a free loopback port with a bearer token, validates the served document as
# OpenAPI 3.1, then runs every schemathesis check with a bounded number of examples per operation and a time
# bound. The server is stopped by its PID on exit, whatever happens. Exit status: schemathesis's (0 = no failure).
#
# Environment:
#   FUZZ_EXAMPLES   examples per operation and phase (default 50)
#   FUZZ_TIMEOUT    seconds before the run is interrupted (default 900)
#   FUZZ_SEED       hypothesis seed, for a reproducible run (default: random)
#   FUZZ_PHASES     schemathesis phases (default: examples,coverage,fuzzing,stateful)
#   FUZZ_REPORT     directory for a JUnit report and a VCR cassette of every request (default: none)
#
# Not fuzzed: POST /admin/backup, whose body names a directory on the server's machine to write into
# (tests/backup.rs and tests/openapi.rs cover it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
examples=${FUZZ_EXAMPLES:-50}
limit=${FUZZ_TIMEOUT:-900}
phases=${FUZZ_PHASES:-examples,coverage,fuzzing,stateful}
venv=$root/.venv
schemathesis_version=4.32.5

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$schemathesis_version"; then
    echo "== installing schemathesis $schemathesis_version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "schemathesis==$schemathesis_version" "openapi-spec-validator==0.9.0"
fi

echo "== building shale"
cargo build --quiet --bin shale

work=$(mktemp -d "${TMPDIR:-/tmp}/shale-fuzz.XXXXXX")
pid=
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        # Graceful stop commits and closes every shard; give it 30 s, then SIGKILL.
        for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

: >"$work/stdout"
: >"$work/stderr"
token="fuzz-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
# Run from the temp dir, so that nothing the server writes can land in the work tree.
(cd "$work" && AUTH_TOKEN=$token RUST_LOG=${RUST_LOG:-warn} HTTP_WORKERS=2 RESP_PORT=off exec "$root/target/debug/shale" \
    --host 127.0.0.1 --port 0 --data-dir "$work/data" --backup-dir "$work/backups" \
    >>"$work/stdout" 2>>"$work/stderr") &
pid=$!

addr=
for _ in $(seq 300); do
    addr=$(sed -n 's/^LISTENING //p' "$work/stdout")
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || { echo "shale exited:"; cat "$work/stderr"; exit 1; }
    sleep 0.1
done
[ -n "$addr" ] || { echo "shale did not print LISTENING within 30 s"; cat "$work/stderr"; exit 1; }
base="http://$addr"
for _ in $(seq 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz")" = 200 ] && break
    sleep 0.1
done
echo "== shale $pid serving $base"

curl -fsS -H "Authorization: Bearer $token" "$base/openapi.json" -o "$work/openapi.json"
echo "== validating /openapi.json"
"$venv/bin/openapi-spec-validator" --schema 3.1 "$work/openapi.json"

# Statuses that are a correct answer to valid or invalid data, beyond schemathesis's defaults:
# - valid data may legitimately fail a precondition (412) or, on /api/cmd, a rule JSON Schema cannot state for
#   query parameters or stored data (ONLY needs keys; FILTER_BOOL needs a list): 400;
# - invalid data is also correctly rejected by 412, 413 and 414.
cat >"$work/schemathesis.toml" <<'EOF'
# Stateful sequences follow the links the document declares (created -> read/delete); the inferred ones would
# also carry request values across (a body id of `7.0` into the query `?id=7.0`), which no client does.
[phases.stateful.inference]
algorithms = []

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "412", "429", "5xx"]

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "412", "413", "414", "415", "422", "428", "429"]

[[operations]]
include-path = "/api/cmd"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "5xx"]

EOF

seed_args=()
[ -n "${FUZZ_SEED:-}" ] && seed_args=(--seed "$FUZZ_SEED")
report_args=()
if [ -n "${FUZZ_REPORT:-}" ]; then
    mkdir -p "$FUZZ_REPORT"
    report_args=(--report "junit,vcr" --report-dir "$FUZZ_REPORT")
fi

echo "== schemathesis: all checks, $examples examples per operation, phases $phases, at most ${limit}s"
status=0
# One worker: the server has the other core, and Python 3.11's `ast` module (which hypothesis uses to describe
# strategies) is not thread-safe ("AST constructor recursion depth mismatch" with several workers).
timeout --signal=INT --kill-after=30 "$limit" \
    "$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run "$work/openapi.json" \
    --url "$base" \
    --header "Authorization: Bearer $token" \
    --checks all \
    --phases "$phases" \
    --max-examples "$examples" \
    --exclude-path /admin/backup \
    --request-timeout 10 \
    --workers 1 \
    "${seed_args[@]}" "${report_args[@]}" || status=$?

if ! kill -0 "$pid" 2>/dev/null; then
    echo "== shale died during the run:"
    tail -50 "$work/stderr"
    exit 1
fi
if grep -q "panicked" "$work/stderr"; then
    echo "== shale logged a panic:"
    grep -A5 "panicked" "$work/stderr"
    status=1
fi
[ "$status" = 124 ] && echo "== interrupted after ${limit}s (FUZZ_TIMEOUT)"
exit "$status"
