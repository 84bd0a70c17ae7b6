#!/usr/bin/env bash
# The go-live plan's load scenarios: ops/scripts/load-test.sh SCENARIO|all [ENV] [options]
#   normal 100 msg/s for 10 min, peak 500/s for 5 min, stress 1000/s for 2 min, soak 200/s for 30 min
# ENV (default local) names ops/env/ENV.env. LOAD_STACK=own (local): a stack of its own is started
# in a temporary directory (PostgreSQL, a timestamping relay, N dispatchers, Kafka with --mirror)
# and removed afterwards; external (staging): rows go to PRODUCER_DATABASE_URL and figures come
# from HEALTH_URL's /metrics; refuse (production): exits 2.
# Options: --scale F (multiplies every duration; CI uses 0.05), --replicas N, --relay-delay-ms MS
# (per reply; 0 = instant sink), --pool N (smtp.pool_size), --mirror, --sessions N, --out DIR
# (default build/load). Writes DIR/load-report.json and DIR/load-report.html; exits 0 when every
# scenario is within the SLA (stress: without errors), 1 otherwise, 2 on bad settings.
set -uo pipefail
. "$(dirname "$0")/golive/env.sh"
[ $# -ge 1 ] || { sed -n '2,14p' "$0"; exit 2; }
case "$1" in -h|--help) sed -n '2,14p' "$0"; exit 0 ;; esac
scenario=$1; shift
env_name=local
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then env_name=$1; shift; fi
golive_load_env "$env_name" || exit 2
exec "$PY" "$GOLIVE_ROOT/ops/scripts/golive/load.py" "$scenario" "$@"
