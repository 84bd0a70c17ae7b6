#!/usr/bin/env bash
# make bench: runs every benchmark under tests/bench that is present (notify_bench.sh,
# smtp_bench.py, kafka_bench.*, volume_bench.py), one after another so they do not compete for the CPUs, then
# prints the headline lines of each again as a summary. Benchmarks print figures and ratios
# against a limit measured in the same run; nothing here is a timed pass/fail test. Exits
# non-zero only when a benchmark could not run to its end.
#   BENCH_ONLY="smtp" bash tests/bench/run.sh     # run only benchmarks whose name matches
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
LOGDIR=$(mktemp -d /tmp/outboxd-bench.XXXXXX)
running=; follower=
# a benchmark cleans up after itself on SIGTERM; `timeout` passes the signal on. Both run in
# the background and are waited for, so a signal reaches this trap at once.
on_exit() {
  if [ -n "$running" ]; then kill -TERM "$running" 2>/dev/null; wait "$running"; fi
  if [ -n "$follower" ]; then kill "$follower" 2>/dev/null; wait "$follower"; fi
  rm -rf "$LOGDIR"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# name -> command line; a benchmark may be a shell script or a Python script.
benches=()
for name in notify_bench smtp_bench smtp_engines_bench kafka_bench volume_bench; do
  for f in "$HERE/$name.sh" "$HERE/$name.py"; do
    [ -f "$f" ] || continue
    if [ -n "${BENCH_ONLY:-}" ] && [[ $name != *${BENCH_ONLY}* ]]; then continue; fi
    benches+=("$f")
    break
  done
done
if [ ${#benches[@]} -eq 0 ]; then
  echo "bench: no benchmark found in $HERE"
  exit 1
fi

status=0
declare -A result
for f in "${benches[@]}"; do
  name=$(basename "$f"); name=${name%.*}
  printf '\n=== %s\n' "$name"
  start=$(date +%s)
  case $f in
    *.py) cmd=("$PY" "$f") ;;
    *)    cmd=(bash "$f") ;;
  esac
  # each benchmark bounds itself; this outer limit only stops one that hangs
  : >"$LOGDIR/$name.log"  # exists before tail opens it
  timeout -k 10 "${BENCH_TIMEOUT:-600}" "${cmd[@]}" >>"$LOGDIR/$name.log" 2>&1 &
  running=$!
  tail -n +1 -f --pid="$running" "$LOGDIR/$name.log" &
  follower=$!
  wait "$running"; rc=$?
  running=
  wait "$follower"  # tail stops by itself once the benchmark has gone
  follower=
  result[$name]="exit $rc after $(( $(date +%s) - start )) s"
  [ "$rc" -eq 0 ] || status=1
done

printf '\n=== summary\n'
for f in "${benches[@]}"; do
  name=$(basename "$f"); name=${name%.*}
  echo "$name: ${result[$name]}"
  # headline lines: ratios against targets, percentiles, memory and CPU figures
  grep -E 'target|p50|RSS|FAILED|failed' "$LOGDIR/$name.log" | sed 's/^/  /'
done
exit $status
