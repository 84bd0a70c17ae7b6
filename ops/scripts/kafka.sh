#!/usr/bin/env bash
# A real single-node Apache Kafka 4 broker (KRaft) for local runs and tests, from the Apache jars
# on Maven Central, resolved once by Maven into a cache outside the checkout.
#   kafka.sh fetch                                resolve the jars into the cache (quick when cached)
#   kafka.sh up [--dir DIR] [--port PORT] [--partitions N] [--sasl USER:PASSWORD] [--tls PEM]
#                                                 format (first time) and start; returns when the
#                                                 broker answers; prints "export KAFKA_BOOTSTRAP=..."
#                                                 --sasl adds a SASL_PLAINTEXT listener (mechanism
#                                                 PLAIN, that one user) on a second port, printed as
#                                                 KAFKA_SASL_BOOTSTRAP; DIR keeps it
#   kafka.sh down [--dir DIR] [--kill]            SIGTERM, SIGKILL after 30 s (--kill: at once)
#   kafka.sh status [--dir DIR]                   exit 0 when running, 3 when not
#   kafka.sh env [--dir DIR]                      print "export KAFKA_BOOTSTRAP=..." of DIR
#   kafka.sh destroy [--dir DIR]                  stop at once and remove DIR
# Environment:
#   KAFKA_VERSION          Kafka version (default 4.1.1)
#   KAFKA_PORT             client port when --port is not given (default 9092)
#   KAFKA_CONTROLLER_PORT  controller port for a new DIR (default: a free port); DIR keeps it
#   KAFKA_NUM_PARTITIONS   partitions of auto-created topics (default 3)
#   KAFKA_HEAP_OPTS, KAFKA_JVM_OPTS   replace the default JVM heap and tuning flags
#   KAFKA_READY_TIMEOUT    seconds to wait for the broker to answer (default 60)
#   KAFKA_STOP_TIMEOUT     seconds to wait after SIGTERM before SIGKILL (default 30)
#   KAFKA_CDS=0            do not use or write the class-data-sharing archive (see cds_archive)
#   OUTBOXD_KAFKA_CACHE    cache directory (default ${XDG_CACHE_HOME:-$HOME/.cache}/outboxd/kafka)
#   JAVA                   java binary (default $JAVA_HOME/bin/java, else java); needs Java 17+
# Exit codes: 0 ok, 1 failure, 2 usage, 3 not running (status), 69 the jars are not cached and
# Maven Central cannot be reached.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KAFKA_DIR_OPS="$ROOT/ops/kafka"
VERSION=${KAFKA_VERSION:-4.1.1}
CACHE=${OUTBOXD_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/outboxd/kafka}
LIBS="$CACHE/libs-$VERSION"
MARKER="$LIBS/.complete"
# Pinned: Maven 3.8 would otherwise pick dependency-plugin 2.8.
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.6.1

log() { echo "kafka: $*" >&2; }
die() { log "$*"; exit 1; }

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 2; }

find_java() {
  if [ -n "${JAVA:-}" ]; then echo "$JAVA"
  elif [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then echo "$JAVA_HOME/bin/java"
  else command -v java || die "java not found: install a Java 17+ runtime (ops/scripts/deps.sh)"
  fi
}

check_java() {
  local v major
  v=$("$JAVA_BIN" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1)
  major=${v%%.*}
  [ "$major" = 1 ] && major=$(echo "$v" | cut -d. -f2)
  [[ "$major" =~ ^[0-9]+$ ]] && [ "$major" -ge 17 ] \
    || die "Kafka $VERSION needs Java 17 or newer; $JAVA_BIN is '${v:-unknown}'"
  JAVA_VERSION=$v
}

# Class data sharing: the first broker run records the classes it loaded into an archive
# (written when the JVM exits after SIGTERM); later runs map it and start about twice as fast.
# The archive belongs to one Kafka version and one JVM build; a mismatch only disables it
# (-Xshare:auto). KAFKA_CDS=0 turns this off.
cds_archive() {
  echo "$CACHE/cds/kafka-$VERSION-java-$JAVA_VERSION.jsa"
}

# Called once DIR's broker has exited: keep the archive it wrote only after a clean exit, since
# a process killed while writing leaves a partial file.
cds_promote() {
  local clean=$1 pending
  [ -f "$DIR/cds-pending" ] || return 0
  pending=$(cat "$DIR/cds-pending")
  rm -f "$DIR/cds-pending"
  if [ "$clean" = 1 ] && [ -s "$pending" ]; then
    mv -f "$pending" "${pending%.tmp.*}"
  else
    rm -f "$pending"
  fi
}

# fetch: resolves kafka_2.13 and its runtime dependencies into $LIBS. A marker file written last
# says the copy is complete; a lock keeps concurrent callers from fetching twice.
fetch() {
  [ -f "$MARKER" ] && return 0
  command -v mvn >/dev/null || die "mvn not found: install maven (ops/scripts/deps.sh)"
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock 9
  if [ -f "$MARKER" ]; then exec 9>&-; return 0; fi
  local tmp="$LIBS.tmp.$$" out rc=0
  rm -rf "$tmp"
  log "resolving org.apache.kafka:kafka_2.13:$VERSION with Maven into $LIBS"
  # The Maven repository lives in the cache too, so removing the cache removes everything and a
  # second version resolves from what is already there.
  out=$(mvn -B -q -Dstyle.color=never -f "$KAFKA_DIR_OPS/pom.xml" \
      -Dmaven.repo.local="$CACHE/m2" -Dkafka.version="$VERSION" \
      "$DEP_PLUGIN:copy-dependencies" -DincludeScope=runtime -DoutputDirectory="$tmp" 2>&1) || rc=$?
  if [ "$rc" -ne 0 ]; then
    rm -rf "$tmp"
    exec 9>&-
    echo "$out" | sed 's/\x1b\[[0-9;]*m//g' | grep -v '^\[ERROR\] *$' | tail -n 12 >&2
    if echo "$out" | grep -Eqi 'could not transfer|unknown ?host|connect(ion)? (refused|timed out)|network is unreachable|no route to host|temporary failure in name resolution|resolution will not be reattempted'; then
      log "cannot reach Maven Central and Kafka $VERSION is not cached in $CACHE"
      exit 69
    fi
    die "Maven failed to resolve Kafka $VERSION"
  fi
  for jar in "kafka_2.13-$VERSION.jar" "kafka-server-$VERSION.jar" log4j-core- log4j-slf4j-impl- slf4j-api-; do
    ls "$tmp" | grep -q "^$jar" || { rm -rf "$tmp"; exec 9>&-; die "resolved jars lack $jar"; }
  done
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
  ls "$LIBS" >"$MARKER"
  exec 9>&-
  log "cached $(ls "$LIBS"/*.jar | wc -l) jars ($(du -sh "$LIBS" | cut -f1)) for Kafka $VERSION"
}

free_port() {
  /usr/bin/python3 - <<'PY'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}

port_busy() {
  /usr/bin/python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)
PY
}

# The pid of DIR's broker when it runs, else nothing. The command line is checked so that a
# reused pid is not mistaken for the broker.
running_pid() {
  local pid
  [ -f "$DIR/kafka.pid" ] || return 0
  pid=$(cat "$DIR/kafka.pid" 2>/dev/null || true)
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "kafka.Kafka $DIR/server.properties"; then
    echo "$pid"
  fi
}

print_env() {
  echo "export KAFKA_BOOTSTRAP=127.0.0.1:$(cat "$DIR/port")"
  if [ -f "$DIR/sasl-port" ]; then echo "export KAFKA_SASL_BOOTSTRAP=127.0.0.1:$(cat "$DIR/sasl-port")"; fi
}

# tls_listener FILE PORT PEM: adds an SSL listener whose key and certificate chain are the PEM
# file (an unencrypted PKCS#8 key first), for clients that verify the broker against a CA.
tls_listener() {
  local f=$1 tport=$2 pem=$3
  sed -i -e "s|^listeners=PLAINTEXT://\([^,]*\),|listeners=PLAINTEXT://\1,SSL://127.0.0.1:$tport,|" \
         -e "s|^advertised.listeners=PLAINTEXT://\([^,]*\),|advertised.listeners=PLAINTEXT://\1,SSL://127.0.0.1:$tport,|" \
         -e "s|^listener.security.protocol.map=\(.*\)|listener.security.protocol.map=\1,SSL:SSL|" \
         "$f"
  {
    echo ""
    echo "# SSL listener (kafka.sh up --tls PEM)"
    echo "listener.name.ssl.ssl.keystore.type=PEM"
    echo "listener.name.ssl.ssl.keystore.location=$pem"
  } >>"$f"
  grep -q "SSL://127.0.0.1:$tport" "$f" || die "cannot add the SSL listener to $f"
}

# sasl_listener FILE PORT USER PASSWORD: adds a SASL_PLAINTEXT listener with mechanism PLAIN
# and one user to a generated server.properties. The PLAINTEXT listener stays for the broker's
# own traffic and for tests that read topics back.
sasl_listener() {
  local f=$1 sport=$2 user=$3 pass=$4
  sed -i -e "s|^listeners=PLAINTEXT://\([^,]*\),|listeners=PLAINTEXT://\1,SASL_PLAINTEXT://127.0.0.1:$sport,|" \
         -e "s|^advertised.listeners=PLAINTEXT://\([^,]*\),|advertised.listeners=PLAINTEXT://\1,SASL_PLAINTEXT://127.0.0.1:$sport,|" \
         -e "s|^listener.security.protocol.map=\(.*\)|listener.security.protocol.map=\1,SASL_PLAINTEXT:SASL_PLAINTEXT|" \
         "$f"
  {
    echo ""
    echo "# SASL_PLAINTEXT listener (kafka.sh up --sasl): mechanism PLAIN, one user"
    echo "sasl.enabled.mechanisms=PLAIN"
    echo "listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN"
    echo "listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$user=\"$pass\";"
  } >>"$f"
  grep -q "SASL_PLAINTEXT://127.0.0.1:$sport" "$f" || die "cannot add the SASL listener to $f"
}

# Whether the broker serves metadata that lists it. The cheap TCP probe comes first: kcat
# against a closed port would sit out its whole timeout in reconnect backoff.
broker_answers() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null || return 1
  kcat -L -b "127.0.0.1:$1" -m 2 2>/dev/null | grep -q "broker 1 at "
}

up() {
  local pid port cport parts
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd -P)
  pid=$(running_pid)
  if [ -n "$pid" ]; then
    log "already running (pid $pid) on 127.0.0.1:$(cat "$DIR/port"), dir $DIR"
    print_env
    return 0
  fi
  command -v kcat >/dev/null || die "kcat not found: install kcat (ops/scripts/deps.sh)"
  JAVA_BIN=$(find_java); check_java
  fetch

  port=${OPT_PORT:-${KAFKA_PORT:-9092}}
  # The controller port is written into the metadata log by the format step, so a formatted
  # DIR keeps the one it was formatted with.
  if [ -f "$DIR/controller-port" ]; then
    cport=$(cat "$DIR/controller-port")
  else
    cport=${KAFKA_CONTROLLER_PORT:-}
    while [ -z "$cport" ] || [ "$cport" = "$port" ]; do cport=$(free_port); done
  fi
  parts=${OPT_PARTITIONS:-${KAFKA_NUM_PARTITIONS:-$(cat "$DIR/partitions" 2>/dev/null || echo 3)}}
  [[ "$port" =~ ^[0-9]+$ && "$cport" =~ ^[0-9]+$ && "$parts" =~ ^[0-9]+$ ]] || die "bad port or partitions"
  port_busy "$port" && die "127.0.0.1:$port is already in use"
  port_busy "$cport" && die "controller port 127.0.0.1:$cport is already in use"

  mkdir -p "$DIR/data"
  sed -e "s|@PORT@|$port|g" -e "s|@CONTROLLER_PORT@|$cport|g" \
      -e "s|@DATA_DIR@|$DIR/data|g" -e "s|@NUM_PARTITIONS@|$parts|g" \
      "$KAFKA_DIR_OPS/server.properties.in" >"$DIR/server.properties"
  echo "$port" >"$DIR/port"
  echo "$parts" >"$DIR/partitions"
  if [ -n "$OPT_SASL" ]; then
    [[ "$OPT_SASL" =~ ^[A-Za-z0-9_.-]+:[^\"\\]+$ ]] || die "--sasl wants USER:PASSWORD (no quote or backslash)"
    (umask 077; echo "$OPT_SASL" >"$DIR/sasl")
  fi
  if [ -n "$OPT_TLS" ]; then
    [ -r "$OPT_TLS" ] || die "--tls wants a readable PEM file (key and certificate chain)"
    echo "$OPT_TLS" >"$DIR/tls"
  fi
  if [ -f "$DIR/tls" ]; then
    local tport
    tport=$(cat "$DIR/tls-port" 2>/dev/null || true)
    while [ -z "$tport" ] || [ "$tport" = "$port" ] || [ "$tport" = "$cport" ]; do tport=$(free_port); done
    tls_listener "$DIR/server.properties" "$tport" "$(cat "$DIR/tls")"
    echo "$tport" >"$DIR/tls-port"
  fi
  if [ -f "$DIR/sasl" ]; then
    local sport cred
    sport=$(cat "$DIR/sasl-port" 2>/dev/null || true)
    while [ -z "$sport" ] || [ "$sport" = "$port" ] || [ "$sport" = "$cport" ]; do sport=$(free_port); done
    port_busy "$sport" && die "SASL port 127.0.0.1:$sport is already in use"
    cred=$(cat "$DIR/sasl")
    sasl_listener "$DIR/server.properties" "$sport" "${cred%%:*}" "${cred#*:}"
    echo "$sport" >"$DIR/sasl-port"
  fi

  local cp="$LIBS/*"
  local logcfg="-Dlog4j2.configurationFile=file:$KAFKA_DIR_OPS/log4j2.yaml"
  # Start-up time matters more than peak throughput here: C1 only, a small heap and the
  # default CDS archive (-Xshare:auto).
  local heap=${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
  local jvm=${KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true}
  local cds="" tool_cds="" archive
  if [ "${KAFKA_CDS:-1}" != 0 ]; then
    archive=$(cds_archive)
    cds_promote 0
    if [ -s "$archive" ]; then
      cds="-XX:SharedArchiveFile=$archive"
      tool_cds=$cds
    else
      mkdir -p "$CACHE/cds"
      echo "$archive.tmp.$$" >"$DIR/cds-pending"
      cds="-XX:ArchiveClassesAtExit=$archive.tmp.$$"
    fi
    # The JVM's CDS warnings (old class files it cannot share) are noise in the broker's log.
    cds="$cds -Xlog:cds*=off -Xlog:class+path=off"
    [ -n "$tool_cds" ] && tool_cds="$tool_cds -Xlog:cds*=off -Xlog:class+path=off"
  fi

  if [ ! -f "$DIR/data/meta.properties" ]; then
    local id
    # shellcheck disable=SC2086
    id=$("$JAVA_BIN" $tool_cds -Xshare:auto -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xmx128m "$logcfg" \
         -Doutboxd.kafka.loglevel=WARN -cp "$cp" kafka.tools.StorageTool random-uuid 2>>"$DIR/format.log")
    # shellcheck disable=SC2086
    "$JAVA_BIN" $tool_cds -Xshare:auto -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xmx128m "$logcfg" \
      -Doutboxd.kafka.loglevel=WARN -cp "$cp" kafka.tools.StorageTool format --standalone \
      -t "$id" -c "$DIR/server.properties" >>"$DIR/format.log" 2>&1 \
      || { tail -n 20 "$DIR/format.log" >&2; die "formatting $DIR/data failed"; }
    echo "$cport" >"$DIR/controller-port"
  fi

  [ -f "$DIR/kafka.log" ] && mv -f "$DIR/kafka.log" "$DIR/kafka.log.1"
  local start=$SECONDS
  # setsid: the broker outlives the shell that started it and no terminal signal reaches it.
  # shellcheck disable=SC2086
  setsid "$JAVA_BIN" $heap $jvm $cds "$logcfg" -cp "$cp" kafka.Kafka "$DIR/server.properties" \
    >"$DIR/kafka.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$DIR/kafka.pid"

  local limit=${KAFKA_READY_TIMEOUT:-60}
  while ! broker_answers "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 40 "$DIR/kafka.log" >&2
      rm -f "$DIR/kafka.pid"
      cds_promote 0
      die "the broker exited during start-up (log: $DIR/kafka.log)"
    fi
    if [ $((SECONDS - start)) -ge "$limit" ]; then
      tail -n 40 "$DIR/kafka.log" >&2
      stop_pid "$pid" 5 || true
      cds_promote 0
      die "the broker did not answer on 127.0.0.1:$port within ${limit}s (log: $DIR/kafka.log)"
    fi
    sleep 0.1
  done
  log "up (pid $pid) on 127.0.0.1:$port, controller 127.0.0.1:$cport, dir $DIR, $((SECONDS - start))s"
  print_env
}

# stop_pid PID SECONDS: SIGTERM, then SIGKILL when PID still runs after SECONDS (0: at once).
# Returns 0 when the process ended on SIGTERM, 1 when it needed SIGKILL.
stop_pid() {
  local pid=$1 limit=$2 i=0
  if [ "$limit" -gt 0 ]; then
    kill -TERM "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt $((limit * 10)) ]; do sleep 0.1; i=$((i + 1)); done
    kill -0 "$pid" 2>/dev/null || return 0
  fi
  if kill -0 "$pid" 2>/dev/null; then
    [ "$limit" -gt 0 ] && log "still running after ${limit}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    i=0
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  fi
  return 1
}

down() {
  local pid
  [ -d "$DIR" ] || { log "not running (no $DIR)"; return 0; }
  DIR=$(cd "$DIR" && pwd -P)
  pid=$(running_pid)
  if [ -z "$pid" ]; then
    rm -f "$DIR/kafka.pid"
    cds_promote 0
    log "not running, dir $DIR"
    return 0
  fi
  local clean=1
  if [ "${OPT_KILL:-0}" = 1 ]; then
    stop_pid "$pid" 0 || clean=0
  else
    stop_pid "$pid" "${KAFKA_STOP_TIMEOUT:-30}" || clean=0
  fi
  kill -0 "$pid" 2>/dev/null && die "pid $pid did not stop"
  rm -f "$DIR/kafka.pid"
  cds_promote "$clean"
  log "stopped (pid $pid), dir $DIR"
}

status() {
  local pid
  if [ -d "$DIR" ]; then DIR=$(cd "$DIR" && pwd -P); pid=$(running_pid); else pid=""; fi
  if [ -n "$pid" ]; then
    if broker_answers "$(cat "$DIR/port")"; then
      echo "running (pid $pid) on 127.0.0.1:$(cat "$DIR/port"), dir $DIR"
    else
      echo "running (pid $pid) on 127.0.0.1:$(cat "$DIR/port") but not answering, dir $DIR"
    fi
    return 0
  fi
  echo "not running, dir $DIR"
  if [ -f "$MARKER" ]; then echo "Kafka $VERSION cached in $LIBS"; else echo "Kafka $VERSION not cached (run: kafka.sh fetch)"; fi
  return 3
}

cmd=${1:-}
[ -n "$cmd" ] || usage
shift
DIR="$ROOT/.local/kafka"
OPT_PORT=""; OPT_PARTITIONS=""; OPT_KILL=0; OPT_SASL=""; OPT_TLS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
    --port) OPT_PORT=${2:?--port needs a value}; shift 2 ;;
    --partitions) OPT_PARTITIONS=${2:?--partitions needs a value}; shift 2 ;;
    --sasl) OPT_SASL=${2:?--sasl needs USER:PASSWORD}; shift 2 ;;
    --tls) OPT_TLS=${2:?--tls needs a PEM file}; shift 2 ;;
    --kill) OPT_KILL=1; shift ;;
    *) usage ;;
  esac
done

case "$cmd" in
  fetch) JAVA_BIN=$(find_java); check_java; fetch; log "Kafka $VERSION jars in $LIBS" ;;
  up) up ;;
  down) down ;;
  status) status ;;
  env) DIR=$(cd "$DIR" && pwd -P); [ -f "$DIR/port" ] || die "no broker in $DIR"; print_env ;;
  destroy) OPT_KILL=1; down; rm -rf "$DIR"; log "removed $DIR" ;;
  *) usage ;;
esac
