#!/usr/bin/env bash
# The go-live plan's Go/No-Go table: ops/scripts/go-no-go.sh [ENV] [options]
# Runs what exists of the plan's criteria against ENV (ops/env/ENV.env, default local): staging
# tests (make test, or --tests-report FILE), smoke tests (or --smoke-report FILE), the load
# scenarios (--scale F, or --load-report FILE), the alert rules' promtool tests, and the security
# audit, rollback drill and DR drill (ops/scripts/security-audit.sh, rollback-drill.sh,
# dr-drill.sh: "NOT AVAILABLE" while absent). Prints each criterion's measured result and the
# decision; writes it as markdown (--md FILE, default build/go-no-go-ENV-TIME.md).
# Exit: 0 GO, 3 CONDITIONAL GO (minor items named), 1 NO-GO (critical items named), 2 usage.
set -uo pipefail
. "$(dirname "$0")/golive/env.sh"
env_name=local
case "${1:-}" in -h|--help) sed -n '2,10p' "$0"; exit 0 ;; esac
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then env_name=$1; shift; fi
golive_load_env "$env_name" || exit 2
exec "$PY" "$GOLIVE_ROOT/ops/scripts/golive/gonogo.py" "$@"
