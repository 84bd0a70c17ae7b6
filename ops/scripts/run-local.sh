#!/usr/bin/env bash
# make run: the product on an embedded local stack. Starts PostgreSQL and Postfix's smtp-sink
# (every mail captured as a file under .local/mail), applies the migrations, optionally a local
# Kafka broker (KAFKA=1), then runs outboxd in the foreground. The data under .local persists
# between runs; RESET=1 starts from an empty directory.
#
# Whatever ends this script stops everything it started: Ctrl-C (SIGINT), SIGTERM, a closed
# terminal (SIGHUP), its own output going to a closed pipe (make run | tee, tee killed), or
# make being killed. A watchdog in its own session covers the script dying without running
# its clean-up (SIGKILL).
#   run-local.sh                      start the stack (what `make run` calls)
#   run-local.sh --watchdog PID...    internal: stop the stack once any PID is gone
set -uo pipefail
# Writes to a pipe whose reader died must fail with EPIPE, not kill the script before the
# clean-up has stopped everything.
trap '' PIPE
cd "$(dirname "$0")/../.."
ROOT=$PWD
LOCAL=${OUTBOXD_LOCAL_DIR:-$ROOT/.local}
PGDIR=$LOCAL/pg
MAILDIR=$LOCAL/mail
KAFKADIR=$LOCAL/kafka
PIDFILE=$LOCAL/run.pids
SMTP_PORT=${SMTP_PORT:-2525}
HTTP_LISTEN=${OUTBOXD_HTTP_LISTEN:-127.0.0.1:9187}
BIN=$ROOT/build/outboxd

# Messages of the clean-up: to stderr when it can still take them, never fatal.
say() { printf 'run-local: %s\n' "$*" >&2 2>/dev/null || true; }

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# Stops what PIDFILE lists (outboxd first, so it drains while the relay and the database
# are still up), then the database and the broker. Safe to run twice and from the watchdog.
stop_stack() {
  local outboxd_pid="" sink_pid="" kafka=0 line
  if [ -f "$PIDFILE" ]; then
    while read -r line; do
      case "$line" in
        outboxd=*) outboxd_pid=${line#outboxd=} ;;
        smtp-sink=*) sink_pid=${line#smtp-sink=} ;;
        kafka=1) kafka=1 ;;
      esac
    done <"$PIDFILE"
  fi
  if alive "$outboxd_pid"; then
    # outboxd has its own session, so Ctrl-C reached only this script: it gets exactly one
    # SIGTERM and drains (finishes in-flight mail, releases the rest) for up to 60 s
    kill -TERM "$outboxd_pid" 2>/dev/null
    for _ in $(seq 1 600); do alive "$outboxd_pid" || break; sleep 0.1; done
    alive "$outboxd_pid" && kill -KILL "$outboxd_pid" 2>/dev/null
  fi
  if alive "$sink_pid"; then
    kill -TERM "$sink_pid" 2>/dev/null
    for _ in $(seq 1 50); do alive "$sink_pid" || break; sleep 0.1; done
    alive "$sink_pid" && kill -KILL "$sink_pid" 2>/dev/null
  fi
  ops/scripts/pg-local.sh stop "$PGDIR" fast >/dev/null 2>&1
  if [ "$kafka" = 1 ]; then bash ops/scripts/kafka.sh down --dir "$KAFKADIR" >/dev/null 2>&1; fi
  rm -f "$PIDFILE"
}

if [ "${1:-}" = --watchdog ]; then
  shift
  # Polls once a second; exits with the stack when any watched process is gone.
  while :; do
    for p in "$@"; do alive "$p" || { stop_stack; exit 0; }; done
    sleep 1
  done
fi

watchdog_pid=""
cleaning=0
cleanup() {
  [ "$cleaning" = 1 ] && return
  cleaning=1
  trap '' INT TERM HUP
  say "stopping"
  stop_stack
  alive "$watchdog_pid" && kill "$watchdog_pid" 2>/dev/null
  say "stopped"
}
on_signal() { cleanup; exit "$1"; }
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP

if [ "${RESET:-0}" = 1 ]; then
  ops/scripts/pg-local.sh destroy "$PGDIR"
  rm -rf "$MAILDIR" "$KAFKADIR"
  say "RESET=1: removed the local database, captured mail and Kafka data"
fi
mkdir -p "$LOCAL" "$MAILDIR"
: >"$PIDFILE"
# make's pid too: when make is killed, the stack goes with it
setsid bash "$0" --watchdog $$ "$PPID" </dev/null >/dev/null 2>&1 &
watchdog_pid=$!

port_file=$PGDIR/port
want_port=${PGPORT_LOCAL:-}
[ -z "$want_port" ] && [ -f "$port_file" ] && want_port=$(cat "$port_file")
pg_env=$(ops/scripts/pg-local.sh start "$PGDIR" $want_port) || exit 1
eval "$pg_env"
DBURL="postgresql://postgres@127.0.0.1:$PGPORT/postgres"

if [ "$(id -u)" -eq 0 ]; then chown nobody "$MAILDIR"; sink_user=(-u nobody); else sink_user=(); fi
setsid /usr/sbin/smtp-sink "${sink_user[@]}" -d "$MAILDIR/%Y%m%d%H%M%S." "127.0.0.1:$SMTP_PORT" 256 \
  </dev/null &
echo "smtp-sink=$!" >>"$PIDFILE"

"$BIN" migrate --database-url "$DBURL" || exit 1

kafka_brokers=""
kcat_hint=""
if [ "${KAFKA:-0}" = 1 ]; then
  echo "kafka=1" >>"$PIDFILE"
  kafka_env=$(bash ops/scripts/kafka.sh up --dir "$KAFKADIR") || exit 1
  eval "$kafka_env"
  kafka_brokers=$KAFKA_BOOTSTRAP
  kcat_hint="  kcat -q -C -b $kafka_brokers -t outbox.event.email -f '%k %h %s\\n' -e   # mirrored lifecycle events"
fi

http_url="http://$HTTP_LISTEN"
# The console's requeue/cancel token for this local stack, made once and kept with the data.
token_file=${OUTBOXD_HTTP_CONSOLE_TOKEN_FILE:-$LOCAL/console-token}
if [ ! -s "$token_file" ]; then
  (umask 077; od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$token_file")
fi
cat <<MSG

outboxd local stack (data in $LOCAL, kept between runs; make run RESET=1 starts empty)
  database   $DBURL
  smtp       smtp://127.0.0.1:$SMTP_PORT  (mail captured in $MAILDIR)
  console    $http_url/   (also /metrics /health /health/ready)
             token for its Requeue/Cancel buttons: $(cat "$token_file")
  kafka      ${kafka_brokers:-off (KAFKA=1 make run to start a local broker)}

In another terminal:
  export OUTBOXD_DATABASE_URL=$DBURL
  psql "\$OUTBOXD_DATABASE_URL" -c "INSERT INTO outbox.messages (recipients, subject, body_text) VALUES (ARRAY['a@example.com'], 'Hi', 'Hello')"
  $BIN status
  ls $MAILDIR
${kcat_hint:+$kcat_hint
}
Ctrl-C stops everything.
MSG

export OUTBOXD_DATABASE_URL=$DBURL
export OUTBOXD_SMTP_URL=smtp://127.0.0.1:$SMTP_PORT
export OUTBOXD_SMTP_TLS=${OUTBOXD_SMTP_TLS:-none}
export OUTBOXD_SMTP_FROM=${OUTBOXD_SMTP_FROM:-outboxd@localhost.localdomain}
export OUTBOXD_KAFKA_BROKERS=$kafka_brokers
export OUTBOXD_HTTP_LISTEN=$HTTP_LISTEN
export OUTBOXD_HTTP_CONSOLE_TOKEN_FILE=$token_file
setsid "$BIN" run </dev/null &
outboxd_pid=$!
echo "outboxd=$outboxd_pid" >>"$PIDFILE"
# wait returns early when a trapped signal arrives, so the traps run at once
wait "$outboxd_pid"
rc=$?
say "outboxd exited ($rc)"
exit 0
