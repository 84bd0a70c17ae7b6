#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and the local stack.
#   pg-local.sh start DIR [PORT]   initdb (if needed) and start; prints "export PG..." lines
#   pg-local.sh stop DIR [MODE]    stop (MODE: fast | immediate | smart), keeps the data
#   pg-local.sh restart DIR [MODE] restart in place
#   pg-local.sh destroy DIR        stop immediately and remove DIR
#   pg-local.sh env DIR            print the "export PG..." lines of a started cluster
# The server listens on 127.0.0.1 only and on a Unix socket inside DIR. When run as root, the
# cluster belongs to the postgres user (initdb and pg_ctl refuse root).
set -euo pipefail

BIN=${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { sed -n '2,8p' "$0" >&2; exit 2; }

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  /usr/bin/python3 - <<'PY'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}

print_env() {
  local port; port=$(cat "$dir/port")
  echo "export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=postgres PGSOCKDIR=$dir/sock"
}

case "$cmd" in
start)
  port=${3:-${PGPORT_WANTED:-}}
  [ -n "$port" ] || port=$(free_port)
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    as_owner mkdir -p "$dir/sock"
    as_owner "$BIN/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner tee -a "$dir/data/postgresql.conf" >/dev/null <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/sock'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 128MB
log_min_messages = warning
log_line_prefix = '%m [%p] '
CONF
  fi
  echo "$port" | as_owner tee "$dir/port" >/dev/null
  as_owner "$BIN/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -o "-p $port" -w -t 60 start >/dev/null \
    || { tail -n 30 "$dir/data/server.log" >&2; exit 1; }
  print_env
  ;;
stop)
  mode=${3:-fast}
  [ -f "$dir/data/PG_VERSION" ] || exit 0
  as_owner "$BIN/pg_ctl" -D "$dir/data" -m "$mode" -w -t 60 stop >/dev/null 2>&1 || true
  ;;
restart)
  mode=${3:-fast}; port=$(cat "$dir/port")
  as_owner "$BIN/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -o "-p $port" -m "$mode" -w -t 60 restart >/dev/null
  ;;
destroy)
  if [ -f "$dir/data/PG_VERSION" ]; then
    as_owner "$BIN/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  ;;
env)
  print_env
  ;;
*)
  sed -n '2,8p' "$0" >&2; exit 2 ;;
esac
