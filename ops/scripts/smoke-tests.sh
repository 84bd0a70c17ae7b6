#!/usr/bin/env bash
# Smoke tests of a running outboxd: ops/scripts/smoke-tests.sh [ENV] [--json FILE]
# ENV names ops/env/ENV.env (default local: `make run`'s stack) or is a settings file. Prints one
# PASS/FAIL/SKIP line per check and exits 0 only when none failed (1 when one did, 2 on bad
# settings). Sends one real email (X-Outboxd-Smoke header, unique idempotency key) to
# SMOKE_RECIPIENT and, with the Kafka mirror on, one event; cancels the email if it is not sent
# in SMOKE_TIMEOUT seconds, so a smoke run never leaves a message pending.
set -uo pipefail
. "$(dirname "$0")/golive/env.sh"
env_name=local
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --json) args+=(--json "$2"); shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) env_name=$1; shift ;;
  esac
done
golive_load_env "$env_name" || exit 2
exec "$PY" "$GOLIVE_ROOT/ops/scripts/golive/smoke.py" "${args[@]}"
