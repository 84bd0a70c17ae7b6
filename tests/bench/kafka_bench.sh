#!/usr/bin/env bash
# Kafka mirror throughput: drains BENCH_EVENTS (50,000) committed events over 50 keys into a
# real single-node broker with `outboxd run`, and in the same run times pgbench executing the
# bare claim-and-mark SQL (the least database work a mirror must do per batch) on as many
# rows. Prints both rates and their ratio (target >= 0.5). Throwaway PostgreSQL and Kafka.
#   BENCH_EVENTS=50000 BENCH_BATCH=500 tests/bench/kafka_bench.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
EVENTS=${BENCH_EVENTS:-50000}
BATCH=${BENCH_BATCH:-500}
DIR=$(mktemp -d /tmp/kafka-bench.XXXXXX)
PGDIR=$(mktemp -d /tmp/kafka-bench-pg.XXXXXX)
OUTBOXD_PID=

cleanup() {
  [ -n "$OUTBOXD_PID" ] && kill "$OUTBOXD_PID" 2>/dev/null || true
  bash "$ROOT/ops/scripts/kafka.sh" destroy --dir "$DIR/kafka" >/dev/null 2>&1 || true
  "$ROOT/ops/scripts/pg-local.sh" destroy "$PGDIR" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

now() { date +%s.%N; }
psql() { command psql -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }

eval "$("$ROOT/ops/scripts/pg-local.sh" start "$PGDIR")"
export PGOPTIONS='-c client_min_messages=warning'
URL="postgresql://$PGUSER@$PGHOST:$PGPORT/$PGDATABASE"
"$ROOT/build/outboxd" migrate --database-url "$URL" >"$DIR/migrate.log" 2>&1

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
eval "$(bash "$ROOT/ops/scripts/kafka.sh" up --dir "$DIR/kafka" --port "$port" 2>"$DIR/kafka-up.log")"
echo "kafka_bench: broker $KAFKA_BOOTSTRAP, PostgreSQL $PGHOST:$PGPORT, $EVENTS events, batch $BATCH"

insert_events() {
  insert_only
  psql -c "VACUUM ANALYZE outbox.events"
}
insert_only() {
  psql -c "INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload)
           SELECT 'order', 'k' || (i % 50), 'OrderPaid',
                  jsonb_build_object('seq', i, 'total', i * 10, 'note', repeat('x', 60))
             FROM generate_series(1, $EVENTS) i"
}

# 1. Baseline: the bare claim-and-mark SQL through pgbench, one client, until drained.
insert_events
cat >"$DIR/claim_mark.sql" <<SQL
WITH c AS MATERIALIZED (
    SELECT id FROM outbox.events
     WHERE state = 'pending' AND txid < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY id LIMIT $BATCH FOR UPDATE SKIP LOCKED)
UPDATE outbox.events e SET state = 'published', published_at = now(), kafka_partition = 0,
       kafka_offset = e.id
  FROM c WHERE e.id = c.id;
SQL
tx=$(( (EVENTS + BATCH - 1) / BATCH ))
t0=$(now)
pgbench -n -c 1 -t "$tx" -f "$DIR/claim_mark.sql" "$PGDATABASE" >"$DIR/pgbench.log" 2>&1
t1=$(now)
left=$(psql -c "SELECT count(*) FROM outbox.events WHERE state = 'pending'")
[ "$left" = 0 ] || { echo "kafka_bench: pgbench left $left rows pending" >&2; exit 1; }
sql_rate=$(echo "$EVENTS / ($t1 - $t0)" | bc -l)

# 2. The mirror: outboxd run with only the mirror busy (no messages). It starts on an empty
# outbox and publishes one warm-up event (producer id, topic creation, metadata), so that the
# figure is the drain of a running mirror; the cold start is printed separately.
export OUTBOXD_DATABASE_URL="$URL" OUTBOXD_SMTP_URL=smtp://127.0.0.1:9 OUTBOXD_SMTP_TLS=none
export OUTBOXD_HTTP_LISTEN= OUTBOXD_KAFKA_BROKERS="$KAFKA_BOOTSTRAP" OUTBOXD_KAFKA_BATCH_SIZE="$BATCH"
export OUTBOXD_KAFKA_TOPIC_PREFIX=bench. OUTBOXD_LOG_LEVEL=warn
wait_drained() {
  local deadline=$(( $(date +%s) + 300 )) left
  while :; do
    left=$(psql -c "SELECT count(*) FROM outbox.events WHERE state = 'pending'")
    [ "$left" = 0 ] && return 0
    [ "$(date +%s)" -lt "$deadline" ] || { echo "kafka_bench: $left events still pending after 300 s" >&2; exit 1; }
    sleep 0.02
  done
}
t0=$(now)
"$ROOT/build/outboxd" run >"$DIR/outboxd.log" 2>&1 &
OUTBOXD_PID=$!
psql -c "INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload) VALUES ('order', 'warm-up', 'WarmUp', '{}')"
wait_drained
cold=$(echo "$(now) - $t0" | bc -l)
insert_only
t0=$(now) # the rows are committed: the mirror's clock starts
wait_drained
t1=$(now)
kill -TERM "$OUTBOXD_PID"; wait "$OUTBOXD_PID" || true; OUTBOXD_PID=
span=$(psql -c "SELECT extract(epoch FROM max(published_at) - min(published_at)) FROM outbox.events
                 WHERE type = 'OrderPaid' AND published_at > now() - interval '1 hour'
                   AND id > (SELECT max(id) FROM outbox.events WHERE type = 'WarmUp')")
mirror_rate=$(echo "$EVENTS / ($t1 - $t0)" | bc -l)
got=$(kcat -C -b "$KAFKA_BOOTSTRAP" -t bench.order -o beginning -e -q 2>/dev/null | wc -l)
printf 'kafka_bench: mirror cold start to first event published: %.2f s\n' "$cold"
printf 'kafka_bench: first to last mark of the drain: %.3f s\n' "$span"
printf 'kafka_bench: claim-and-mark SQL (pgbench, 1 client): %8.0f rows/s\n' "$sql_rate"
printf 'kafka_bench: mirror drain into Kafka (outboxd run):   %8.0f events/s (%s records in the topic, warm-up included)\n' "$mirror_rate" "$got"
printf 'kafka_bench: ratio mirror / SQL: %.2f (target >= 0.5)\n' "$(echo "$mirror_rate / $sql_rate" | bc -l)"
