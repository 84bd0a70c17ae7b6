#!/usr/bin/env bash
# Rollback drill: ops/scripts/rollback-drill.sh [ENV] [--messages N] [--rate R] [--previous COMMIT]
# Builds the release in ops/PREVIOUS_RELEASE, runs the current binary on a throwaway PostgreSQL
# migrated to the current schema under traffic, swaps to the previous binary mid-traffic (as
# `kubectl rollout undo`) and rolls forward again. Exit 0 when nothing was lost or stuck, the
# previous binary was ready on the newer schema and every delivery carried its row's Message-ID;
# 1 when a check failed, 2 when the drill could not run. ENV is accepted for the go/no-go
# command: the drill always runs on its own local stack.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
case "${1:-}" in -h|--help) sed -n '2,8p' "$0"; exit 0 ;; ""|-*) ;; *) shift ;; esac
exec /usr/bin/python3 "$here/golive/rollback_drill.py" "$@"
