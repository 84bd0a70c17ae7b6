#!/usr/bin/env bash
# Kafka mirror throughput: drains BENCH_EVENTS (50,000) committed events over 50 keys into a
# real single-node broker with `outboxd run`, and in the same run times pgbench executing the
# bare claim-and-mark SQL (the least database work a mirror must do per batch) on as many
# rows. Prints both rates and their ratio (target >= 0.5). Throwaway PostgreSQL and Kafka.
# Method (docs/kafka.md): both sides start from the same table, BENCH_EVENTS published rows
# (vacuumed, analysed), into which the timed rows are inserted and committed just before. SQL: pgbench's own time (connection excluded).
# Mirror: a running, warmed-up mirror (producer id, topic, broker JIT: the published rows
# are drained by the mirror first, untimed); timed on the server clock from the commit of the rows to the moment
# a poll in a single session (every 2 ms) sees none pending.
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

# The table both sides start from: BENCH_EVENTS published rows (vacuumed, analysed) and then
# $2 events committed; prints the commit time (server clock).
fresh_rows() {
  psql -c "DELETE FROM outbox.events" -c "VACUUM outbox.events"
  insert_only History "$EVENTS" >/dev/null
  psql -c "UPDATE outbox.events SET state = 'published', published_at = now() WHERE state = 'pending'" \
       -c "VACUUM ANALYZE outbox.events"
  insert_only "$1" "$2"
}
insert_only() {
  psql -c "INSERT INTO outbox.events (aggregate_type, aggregate_id, type, payload)
           SELECT 'order', 'k' || (i % 50), '$1',
                  jsonb_build_object('seq', i, 'total', i * 10, 'note', repeat('x', 60))
             FROM generate_series(1, $2) i" \
       -c "SELECT extract(epoch FROM clock_timestamp())"
}
# Waits in one session (no process per poll) until no event is pending; prints the time.
wait_drained() {
  psql -c "SET statement_timeout = '300s'" -c "DO \$\$ BEGIN
             WHILE EXISTS (SELECT 1 FROM outbox.events WHERE state = 'pending') LOOP
               PERFORM pg_sleep(0.002);
             END LOOP; END \$\$" \
       -c "SELECT extract(epoch FROM clock_timestamp())" \
    || { echo "kafka_bench: events still pending after 300 s; outboxd log:" >&2
         tail -n 30 "$DIR/outboxd.log" >&2; exit 1; }
}

# 1. Baseline: the bare claim-and-mark SQL through pgbench, one client, until drained. "IN"
# keeps the UPDATE on the primary key; joining the CTE with FROM made the planner hash a
# sequential scan of the table, three times slower at this size.
fresh_rows OrderPaid "$EVENTS" >/dev/null
cat >"$DIR/claim_mark.sql" <<SQL
WITH c AS MATERIALIZED (
    SELECT id FROM outbox.events
     WHERE state = 'pending' AND txid < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY id LIMIT $BATCH FOR UPDATE SKIP LOCKED)
UPDATE outbox.events e SET state = 'published', published_at = now(), kafka_partition = 0,
       kafka_offset = e.id
 WHERE e.id IN (SELECT id FROM c);
SQL
tx=$(( (EVENTS + BATCH - 1) / BATCH ))
pgbench -n -c 1 -t "$tx" -f "$DIR/claim_mark.sql" "$PGDATABASE" >"$DIR/pgbench.log" 2>&1
left=$(psql -c "SELECT count(*) FROM outbox.events WHERE state = 'pending'")
[ "$left" = 0 ] || { echo "kafka_bench: pgbench left $left rows pending" >&2; exit 1; }
tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$DIR/pgbench.log")
[ -n "$tps" ] || { echo "kafka_bench: no tps in pgbench output" >&2; cat "$DIR/pgbench.log" >&2; exit 1; }
sql_rate=$(echo "$EVENTS / ($tx / $tps)" | bc -l)

# 2. The mirror: outboxd run with only the mirror busy (no messages). It starts on an empty
# outbox and first drains BENCH_EVENTS events into the same topic, untimed (producer id, topic
# creation and metadata, and a broker JVM that has just started); the cold start is printed.
export OUTBOXD_DATABASE_URL="$URL" OUTBOXD_SMTP_URL=smtp://127.0.0.1:9 OUTBOXD_SMTP_TLS=none
export OUTBOXD_HTTP_LISTEN= OUTBOXD_KAFKA_BROKERS="$KAFKA_BOOTSTRAP" OUTBOXD_KAFKA_BATCH_SIZE="$BATCH"
export OUTBOXD_KAFKA_TOPIC_PREFIX=bench. OUTBOXD_LOG_LEVEL=warn
psql -c "DELETE FROM outbox.events" -c "VACUUM outbox.events"
t0=$(now)
"$ROOT/build/outboxd" run >"$DIR/outboxd.log" 2>&1 &
OUTBOXD_PID=$!
insert_only WarmUp 1 >/dev/null
wait_drained >/dev/null
cold=$(echo "$(now) - $t0" | bc -l)
# The same table as pgbench had: BENCH_EVENTS rows published (by the mirror: its untimed
# warm-up), then the new ones.
psql -c "DELETE FROM outbox.events" -c "VACUUM outbox.events"
insert_only History "$EVENTS" >/dev/null
wait_drained >/dev/null
psql -c "VACUUM ANALYZE outbox.events"
c0=$(insert_only OrderPaid "$EVENTS")
c1=$(wait_drained)
kill -TERM "$OUTBOXD_PID"; wait "$OUTBOXD_PID" || true; OUTBOXD_PID=
span=$(psql -c "SELECT extract(epoch FROM max(published_at) - min(published_at)) FROM outbox.events
                 WHERE type = 'OrderPaid'")
mirror_rate=$(echo "$EVENTS / ($c1 - $c0)" | bc -l)
got=$(kcat -C -b "$KAFKA_BOOTSTRAP" -t bench.order -o beginning -e -q 2>/dev/null | wc -l)
printf 'kafka_bench: mirror cold start to first event published: %.2f s; then %d untimed events\n' "$cold" "$EVENTS"
printf 'kafka_bench: claim-and-mark SQL (pgbench, 1 client, batch %d): %8.0f rows/s (%.3f s)\n' "$BATCH" "$sql_rate" "$(echo "$tx / $tps" | bc -l)"
printf 'kafka_bench: mirror drain, commit to none pending:           %8.0f events/s (%.3f s; first to last mark %.3f s)\n' "$mirror_rate" "$(echo "$c1 - $c0" | bc -l)" "$span"
printf 'kafka_bench: records in the topic: %s (expected %d)\n' "$got" $(( 2 * EVENTS + 1 ))
printf 'kafka_bench: ratio mirror / SQL: %.2f (target >= 0.5)\n' "$(echo "$mirror_rate / $sql_rate" | bc -l)"
