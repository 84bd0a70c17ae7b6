#!/usr/bin/env bash
# Disaster-recovery drill: ops/scripts/dr-drill.sh [ENV] [--rate R] [--before S] [--after S]
# On its own throwaway PostgreSQL with WAL archiving: a base backup, outboxd delivering under
# traffic, a named restore point, the primary's data directory destroyed, a point-in-time
# restore to the point and outboxd started on it. Prints RPO and RTO. Exit 0 when every message
# committed before the point came back and was sent, none stayed sending and every re-send
# carried its row's Message-ID; 1 when a check failed; 2 when the drill could not run. ENV is
# accepted for the go/no-go command: the drill always runs on its own local stack.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
case "${1:-}" in -h|--help) sed -n '2,8p' "$0"; exit 0 ;; ""|-*) ;; *) shift ;; esac
exec /usr/bin/python3 "$here/golive/dr_drill.py" "$@"
