#!/usr/bin/env bash
# make run: the product on an embedded local stack. Starts a throwaway PostgreSQL and
# Postfix's smtp-sink (every mail captured as a file under .local/mail), applies the
# migrations, optionally a local Kafka broker (KAFKA=1), then runs outboxd in the
# foreground. Ctrl-C stops outboxd and everything this script started.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
LOCAL=${OUTBOXD_LOCAL_DIR:-$ROOT/.local}
PGDIR=$LOCAL/pg
MAILDIR=$LOCAL/mail
SMTP_PORT=${SMTP_PORT:-2525}
HTTP_LISTEN=${OUTBOXD_HTTP_LISTEN:-127.0.0.1:9187}
mkdir -p "$LOCAL" "$MAILDIR"

pids=()
outboxd_pid=""
cleanup() {
  trap - EXIT INT TERM
  echo "run-local: stopping" >&2
  # outboxd runs in its own session, so Ctrl-C reaches only this script: it gets exactly
  # one SIGTERM and drains (finishes in-flight mail, releases the rest) before the mail
  # sink and the database go away
  if [ -n "$outboxd_pid" ] && kill -0 "$outboxd_pid" 2>/dev/null; then
    kill -TERM "$outboxd_pid" 2>/dev/null || true
    for _ in $(seq 1 600); do kill -0 "$outboxd_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ops/scripts/pg-local.sh stop "$PGDIR" fast || true
  if [ "${KAFKA:-0}" = 1 ]; then bash ops/scripts/kafka.sh down || true; fi
}
trap cleanup EXIT INT TERM

port_file=$PGDIR/port
want_port=${PGPORT_LOCAL:-}
[ -z "$want_port" ] && [ -f "$port_file" ] && want_port=$(cat "$port_file")
eval "$(ops/scripts/pg-local.sh start "$PGDIR" $want_port)"
DBURL="postgresql://postgres@127.0.0.1:$PGPORT/postgres"

if [ "$(id -u)" -eq 0 ]; then chown nobody "$MAILDIR"; sink_user=(-u nobody); else sink_user=(); fi
setsid /usr/sbin/smtp-sink "${sink_user[@]}" -d "$MAILDIR/%Y%m%d%H%M%S." "127.0.0.1:$SMTP_PORT" 256 &
pids+=($!)

build/outboxd migrate --database-url "$DBURL"

kafka_brokers=""
if [ "${KAFKA:-0}" = 1 ]; then
  bash ops/scripts/kafka.sh up
  kafka_brokers=127.0.0.1:${KAFKA_PORT:-9092}
fi

cat <<MSG

outboxd local stack
  database   $DBURL
             psql "$DBURL"
  smtp       smtp://127.0.0.1:$SMTP_PORT  (mail captured in $MAILDIR)
  http       http://$HTTP_LISTEN/metrics  /health  /health/ready
  kafka      ${kafka_brokers:-off (KAFKA=1 to start a local broker)}

Try:
  psql "$DBURL" -c "INSERT INTO outbox.messages (recipients, subject, body_text) VALUES (ARRAY['a@example.com'], 'Hi', 'Hello')"
  psql "$DBURL" -c "SELECT * FROM outbox.message_status ORDER BY id DESC LIMIT 5"
  ls $MAILDIR

Ctrl-C stops everything.
MSG

export OUTBOXD_DATABASE_URL=$DBURL
export OUTBOXD_SMTP_URL=smtp://127.0.0.1:$SMTP_PORT
export OUTBOXD_SMTP_TLS=${OUTBOXD_SMTP_TLS:-none}
export OUTBOXD_SMTP_FROM=${OUTBOXD_SMTP_FROM:-outboxd@localhost}
export OUTBOXD_KAFKA_BROKERS=$kafka_brokers
export OUTBOXD_HTTP_LISTEN=$HTTP_LISTEN
setsid build/outboxd run &
outboxd_pid=$!
wait "$outboxd_pid" || true
