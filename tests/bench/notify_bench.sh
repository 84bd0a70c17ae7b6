#!/usr/bin/env bash
# Cost of the NOTIFY wake-up trigger for producers: pgbench single-row INSERT transactions
# against a throwaway cluster, with the trigger (a) present but no dispatcher idle, (b)
# notifying on every commit (a dispatcher idle and listening), (c) disabled (baseline).
# Prints figures only; exits non-zero only when the set-up or pgbench fails.
#   BENCH_SECONDS=3 BENCH_ROUNDS=5 BENCH_CLIENTS=4 tests/bench/notify_bench.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SECONDS_PER_RUN=${BENCH_SECONDS:-3}
ROUNDS=${BENCH_ROUNDS:-5}
CLIENTS=${BENCH_CLIENTS:-4}
DIR=$(mktemp -d /tmp/notify-bench.XXXXXX)
LISTENER=

cleanup() {
  [ -n "$LISTENER" ] && kill "$LISTENER" 2>/dev/null || true
  "$ROOT/ops/scripts/pg-local.sh" destroy "$DIR" || true
}
trap cleanup EXIT

eval "$("$ROOT/ops/scripts/pg-local.sh" start "$DIR")"
export PGOPTIONS='-c client_min_messages=warning'
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }

# Schema: outboxd migrate when the binary has it, else the files in migrate's order.
if [ -x "$ROOT/build/outboxd" ] && "$ROOT/build/outboxd" migrate \
     --database-url "postgresql://$PGUSER@$PGHOST:$PGPORT/$PGDATABASE" \
     --migrations "$ROOT/migrations" --sql "$ROOT/sql" >"$DIR/migrate.log" 2>&1; then
  echo "notify_bench: schema applied by outboxd migrate"
else
  for f in "$ROOT"/migrations/*.sql "$ROOT"/sql/*.sql; do psql -f "$f"; done
  echo "notify_bench: schema applied with psql"
fi

cat >"$DIR/insert.sql" <<'SQL'
INSERT INTO outbox.messages (recipients, subject, body_text) VALUES (ARRAY['a@example.com'], 'Hi', 'Hello');
SQL

# Runs pgbench in one mode and prints its tps (excluding connection time).
run_mode() {
  local mode=$1 out tps
  psql -c "TRUNCATE outbox.messages, outbox.events, outbox.dispatcher_idle CASCADE"
  case $mode in
    baseline) psql -c "ALTER TABLE outbox.messages DISABLE TRIGGER messages_wake" ;;
    busy)     psql -c "ALTER TABLE outbox.messages ENABLE TRIGGER messages_wake" ;;
    idle)     psql -c "ALTER TABLE outbox.messages ENABLE TRIGGER messages_wake" \
                   -c "INSERT INTO outbox.dispatcher_idle (owner, channel) VALUES ('bench', 'outbox_messages')" ;;
  esac
  psql -c "CHECKPOINT"
  if ! out=$(pgbench -n -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" -f "$DIR/insert.sql" 2>&1); then
    echo "$out" >&2
    echo "notify_bench: pgbench failed in mode $mode" >&2
    exit 1
  fi
  tps=$(sed -n 's/^tps = \([0-9.]*\).*without initial connection time.*/\1/p' <<<"$out")
  if [ -z "$tps" ] || grep -q 'number of failed transactions: [1-9]' <<<"$out"; then
    echo "$out" >&2
    echo "notify_bench: pgbench reported errors in mode $mode" >&2
    exit 1
  fi
  echo "$tps"
}

# A session that LISTENs for the whole run, so notifications are really queued and delivered.
( echo "LISTEN outbox_messages;"; sleep $(( (SECONDS_PER_RUN + 3) * 3 * ROUNDS + 30 )) ) | command psql -X -q >/dev/null &
LISTENER=$!

# Modes are interleaved in short rounds and compared within each round, so drift in the
# machine's load hits all three alike; the median of the per-round ratios is reported.
: >"$DIR/rounds"
for round in $(seq 1 "$ROUNDS"); do
  line=""
  for mode in baseline busy idle; do
    tps=$(run_mode "$mode")
    printf 'notify_bench: round %d %-8s %10.1f tps\n' "$round" "$mode" "$tps"
    line="$line $tps"
  done
  echo "$line" >>"$DIR/rounds"
done

awk -v k="$CLIENTS" '
  function median(a, n,   i, j, t) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  { n++; c += $1; a += $2; b += $3; ra[n] = $2 / $1; rb[n] = $3 / $1 }
  END {
    printf "notify_bench: %d clients, mean tps baseline=%.1f busy=%.1f idle-notify=%.1f\n", k, c / n, a / n, b / n
    printf "notify_bench: busy/baseline=%.2f (target >= 0.9) idle-notify/baseline=%.2f (medians of %d rounds)\n",
           median(ra, n), median(rb, n), n
  }' "$DIR/rounds"
