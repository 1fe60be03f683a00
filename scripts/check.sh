#!/usr/bin/env bash
# Local pre-push check: exactly what CI runs.
exec "$(dirname "$0")/../.ci/run"
