#!/usr/bin/env bash
# Security audit: ops/scripts/security-audit.sh [ENV]
# ENV names ops/env/ENV.env (default local) or is a settings file. Prints findings by severity
# (CRITICAL, HIGH, MEDIUM, LOW, INFO; SKIP for a check that could not run, with the reason) and
# the bill of materials; exits 1 when a finding is critical, 2 on bad settings, else 0.
# Settings: AUDIT_MANIFESTS, AUDIT_DOCKERFILE, DISPATCHER_DATABASE_URL (+ _PASSWORD_FILE),
# PRODUCER_DATABASE_URL (+ _PASSWORD_FILE), AUDIT_SMTP_RELAY=host:port, OUTBOXD_* overrides.
set -uo pipefail
. "$(dirname "$0")/golive/env.sh"
case "${1:-}" in -h|--help) sed -n '2,7p' "$0"; exit 0 ;; esac
golive_load_env "${1:-local}" || exit 2
exec "$PY" "$GOLIVE_ROOT/ops/scripts/golive/audit.py"
